/*
 * allocfail.c - the allocation wrappers of allocfail.h.
 *
 * The linker's --wrap=malloc turns every call to malloc() in the objects
 * linked into the test binary into a call to __wrap_malloc(), and
 * __real_malloc() into the allocator that would have been called (under
 * ASan, its interceptor, so that leaks and overflows are still caught).
 * One counter for all threads: the store answers from threads of its own.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "tests/support/allocfail.h"
#include "common/banned.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__real_reallocarray(void *p, size_t n, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_reallocarray(void *p, size_t n, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static atomic_long countdown = -1; /* < 0: not armed */
static atomic_int reached;
static atomic_long total;

void allocfail_arm(long n)
{
	atomic_store(&reached, 0);
	atomic_store(&countdown, n);
}

int allocfail_disarm(void)
{
	atomic_store(&countdown, -1);
	return atomic_load(&reached);
}

long allocfail_count(void)
{
	return atomic_load(&total);
}

/* 1: this allocation is the one to fail. */
static int fail_now(void)
{
	long c = atomic_load(&countdown);

	atomic_fetch_add(&total, 1);
	while (c >= 0) {
		if (atomic_compare_exchange_weak(&countdown, &c, c - 1)) {
			if (c != 0)
				return 0;
			atomic_store(&reached, 1);
			return 1;
		}
	}
	return 0;
}

void *__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

void *__wrap_reallocarray(void *p, size_t n, size_t size)
{
	return fail_now() ? NULL : __real_reallocarray(p, n, size);
}

char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : __real_strndup(s, n);
}
