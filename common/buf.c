/*
 * buf.c - capped growable buffers (see buf.h).
 *
 * Growth doubles the allocation, bounded by cap + 1 for the NUL, so a buffer
 * never allocates more than its cap allows however it is fed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/banned.h"

#define BUF_MIN_ALLOC 64

void buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->cap = cap;
}

void buf_release(struct buf *b)
{
	free(b->data);
	buf_init(b, b->cap);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

static enum ferry_err reserve(struct buf *b, size_t n)
{
	size_t need, alloc;
	char *p;

	if (n > b->cap || b->len > b->cap - n)
		return FERRY_ETOOBIG;
	need = b->len + n + 1;
	if (need <= b->alloc)
		return FERRY_OK;
	alloc = b->alloc ? b->alloc : BUF_MIN_ALLOC;
	while (alloc < need)
		alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
	if (alloc > b->cap + 1)
		alloc = b->cap + 1;
	p = realloc(b->data, alloc);
	if (!p)
		return FERRY_ENOMEM;
	b->data = p;
	b->alloc = alloc;
	return FERRY_OK;
}

enum ferry_err buf_append(struct buf *b, const void *p, size_t n)
{
	enum ferry_err rc = reserve(b, n);

	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return FERRY_OK;
}

enum ferry_err buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

enum ferry_err buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	enum ferry_err rc;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return FERRY_EINVAL;
	rc = reserve(b, (size_t)n);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return FERRY_OK;
}

char *buf_detach(struct buf *b)
{
	char *p = b->data;

	if (!p)
		p = calloc(1, 1);
	buf_init(b, b->cap);
	return p;
}
