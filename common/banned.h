/*
 * banned.h - functions ferry does not use, made into compile errors.
 *
 * Every ferry source file includes it as its last #include, after the system
 * headers that declare these functions (git does the same). Use snprintf,
 * buf_* and the strtol family instead; `make check` verifies the include.
 */
#ifndef FERRY_COMMON_BANNED_H
#define FERRY_COMMON_BANNED_H

#define BANNED(func) sorry_##func##_is_banned_in_ferry

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef atoi
#define atoi(x) BANNED(atoi)
#undef atol
#define atol(x) BANNED(atol)
#undef gets
#define gets(x) BANNED(gets)

#endif
