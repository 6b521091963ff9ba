/*
 * secfile.c - the owner-only rule for files that hold secrets (secfile.h).
 *
 * The message ends with a command an operator can paste: the path is quoted
 * for a POSIX shell (a ' becomes '\''), and a message that would not fit in
 * the caller's buffer is cut, never left without its NUL.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/secfile.h"
#include "common/banned.h"

/* Append @path to @out (capacity @cap, *@n bytes used) quoted for sh. */
static void append_quoted(char *out, size_t cap, size_t *n, const char *path)
{
	const char *s;

	if (*n + 1 >= cap)
		return;
	out[(*n)++] = '\'';
	for (s = path; *s && *n + 5 < cap; s++) {
		if (*s == '\'') {
			memcpy(out + *n, "'\\''", 4);
			*n += 4;
		} else {
			out[(*n)++] = *s;
		}
	}
	if (*n + 1 < cap)
		out[(*n)++] = '\'';
	out[*n] = '\0';
}

enum ferry_err secfile_check(int fd, const char *what, const char *path, char *err, size_t errlen)
{
	struct stat st;
	char tmp[128];
	size_t n;
	int len;

	if (fstat(fd, &st) != 0) {
		if (err && errlen)
			snprintf(err, errlen, "cannot read %s '%s': %s", what, path,
				 strerror_r(errno, tmp, sizeof(tmp)));
		return FERRY_ECONFIG;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) == 0)
		return FERRY_OK;
	if (!err || !errlen)
		return FERRY_ECONFIG;
	len = snprintf(err, errlen,
		       "%s '%s' has group or world access (mode %04o); allow its owner only: "
		       "chmod 600 ",
		       what, path, (unsigned)(st.st_mode & 07777));
	if (len < 0 || (size_t)len >= errlen)
		return FERRY_ECONFIG;
	n = (size_t)len;
	append_quoted(err, errlen, &n, path);
	return FERRY_ECONFIG;
}
