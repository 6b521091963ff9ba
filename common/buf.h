/*
 * buf.h - a growable byte buffer with a hard cap.
 *
 * Every buffer is created with the most it may ever hold (its cap), named at
 * the call site (MAX_ADMIN_BODY, ...). Appending past the cap fails with
 * FERRY_ETOOBIG and leaves the buffer as it was. The data is always followed by
 * a NUL byte that is not counted in len, so text can be used as a C string.
 */
#ifndef FERRY_COMMON_BUF_H
#define FERRY_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct buf {
	char *data;   /* NULL until the first append */
	size_t len;   /* bytes in use, without the trailing NUL */
	size_t alloc; /* bytes allocated */
	size_t cap;   /* most bytes len may reach */
};

/* Start an empty buffer that may grow to @cap bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t cap);

/* Free the memory; the buffer is empty and reusable with the same cap. */
void buf_release(struct buf *b);

/* Forget the contents, keep the memory. */
void buf_reset(struct buf *b);

/* Append @n bytes of @p. FERRY_ETOOBIG past the cap, FERRY_ENOMEM. */
enum ferry_err buf_append(struct buf *b, const void *p, size_t n) FERRY_WUR;

/* Append a NUL-terminated string. */
enum ferry_err buf_puts(struct buf *b, const char *s) FERRY_WUR;

/* Append formatted text. */
enum ferry_err buf_printf(struct buf *b, const char *fmt, ...) FERRY_PRINTF(2, 3) FERRY_WUR;

/* Hand the data over to the caller (free() it) and empty the buffer.
 * Returns an empty allocated string for an empty buffer, NULL on ENOMEM. */
char *buf_detach(struct buf *b);

#endif
