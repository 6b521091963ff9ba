/*
 * allocfail.h - make ferry's own allocations fail, one at a time, in tests.
 *
 * A test binary linked with ALLOCFAIL_LDFLAGS (the Makefile's: the linker's
 * --wrap for malloc, calloc, realloc, reallocarray, strdup and strndup)
 * sends every allocation that ferry's code (and the test's) makes through
 * allocfail.c. Allocations inside shared libraries (libpq, libuv, OpenSSL,
 * libc itself) are not affected: what is tested is that ferry's code copes
 * with NULL from the allocator, wherever it asks.
 *
 * The usual loop: for n = 0, 1, 2, ...: allocfail_arm(n), run the operation,
 * allocfail_disarm(); the operation must fail cleanly (an error, no crash,
 * no leak: LeakSanitizer checks at exit) or succeed; once a run ends with
 * the failure never reached, every allocation the operation makes has failed
 * once and the loop ends.
 */
#ifndef FERRY_TESTS_ALLOCFAIL_H
#define FERRY_TESTS_ALLOCFAIL_H

/* The allocation after @n more succeed fails (only that one); any thread. */
void allocfail_arm(long n);
/* Stop failing. Returns 1 if the armed allocation was reached (and failed). */
int allocfail_disarm(void);
/* Allocations made through the wrappers since the start. */
long allocfail_count(void);

#endif
