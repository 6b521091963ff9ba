/*
 * test_buf.c - unit tests for common/buf.c, the capped growable buffer.
 *
 * What matters: the cap is never exceeded however the buffer is fed, a failed
 * append (FERRY_ETOOBIG) leaves contents, length and memory as they were, and
 * the data is always NUL-terminated.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/banned.h"

static void test_init_is_empty(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 16);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	assert_int_equal(b.cap, 16);
	buf_release(&b);
	buf_reset(&b); /* on a buffer without memory */
	assert_null(b.data);
}

static void test_append_terminates(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(buf_append(&b, "abc", 3), FERRY_OK);
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "abc");
	assert_int_equal(buf_puts(&b, "def"), FERRY_OK);
	assert_int_equal(b.len, 6);
	assert_string_equal(b.data, "abcdef");
	/* Zero bytes is a valid append and keeps the terminator. */
	assert_int_equal(buf_append(&b, NULL, 0), FERRY_OK);
	assert_int_equal(b.len, 6);
	assert_int_equal(b.data[6], '\0');
	/* Binary data with a NUL inside: len counts it, a NUL still follows. */
	assert_int_equal(buf_append(&b, "x\0y", 3), FERRY_OK);
	assert_int_equal(b.len, 9);
	assert_memory_equal(b.data, "abcdefx\0y", 10);
	buf_release(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 64);
}

static void test_cap_exact(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_int_equal(buf_append(&b, "12345678", 8), FERRY_OK);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "12345678");
	assert_true(b.alloc <= b.cap + 1);
	assert_int_equal(buf_append(&b, "9", 1), FERRY_ETOOBIG);
	assert_int_equal(buf_append(&b, "", 0), FERRY_OK);
	buf_release(&b);
}

static void test_too_big_leaves_buffer(void **state)
{
	struct buf b;
	char *data;
	size_t alloc;

	(void)state;
	buf_init(&b, 10);
	assert_int_equal(buf_puts(&b, "hello"), FERRY_OK);
	data = b.data;
	alloc = b.alloc;
	assert_int_equal(buf_puts(&b, "world!"), FERRY_ETOOBIG);
	assert_int_equal(b.len, 5);
	assert_ptr_equal(b.data, data);
	assert_int_equal(b.alloc, alloc);
	assert_string_equal(b.data, "hello");
	assert_int_equal(buf_printf(&b, "%s", "123456"), FERRY_ETOOBIG);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "hello");
	/* A huge length must not wrap around the cap check. */
	assert_int_equal(buf_append(&b, "x", SIZE_MAX), FERRY_ETOOBIG);
	assert_int_equal(buf_append(&b, "x", SIZE_MAX - 2), FERRY_ETOOBIG);
	assert_int_equal(b.len, 5);
	/* What fits still fits. */
	assert_int_equal(buf_puts(&b, "world"), FERRY_OK);
	assert_string_equal(b.data, "helloworld");
	buf_release(&b);
}

static void test_zero_cap(void **state)
{
	struct buf b;
	char *s;

	(void)state;
	buf_init(&b, 0);
	assert_int_equal(buf_append(&b, "a", 1), FERRY_ETOOBIG);
	assert_int_equal(buf_append(&b, "", 0), FERRY_OK);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	s = buf_detach(&b);
	assert_string_equal(s, "");
	free(s);
}

static void test_growth_stays_under_cap(void **state)
{
	const size_t cap = 1000;
	struct buf b;

	(void)state;
	buf_init(&b, cap);
	for (size_t i = 0; i < cap; i++) {
		assert_int_equal(buf_append(&b, "z", 1), FERRY_OK);
		assert_true(b.alloc <= cap + 1);
		assert_int_equal(b.data[b.len], '\0');
	}
	assert_int_equal(b.len, cap);
	assert_int_equal(buf_append(&b, "z", 1), FERRY_ETOOBIG);
	assert_int_equal(b.len, cap);
	buf_release(&b);
}

static void test_printf(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 256);
	assert_int_equal(buf_printf(&b, "n=%d", 42), FERRY_OK);
	assert_int_equal(buf_printf(&b, " s=%s u=%zu", "x", (size_t)7), FERRY_OK);
	assert_string_equal(b.data, "n=42 s=x u=7");
	assert_int_equal(b.len, strlen("n=42 s=x u=7"));
	/* Longer than the first allocation: it grows. */
	assert_int_equal(buf_printf(&b, "%100s", "|"), FERRY_OK);
	assert_int_equal(b.len, strlen("n=42 s=x u=7") + 100);
	assert_int_equal(b.data[b.len - 1], '|');
	assert_int_equal(b.data[b.len], '\0');
	/* Empty output is fine. */
	assert_int_equal(buf_printf(&b, "%s", ""), FERRY_OK);
	assert_int_equal(b.len, strlen("n=42 s=x u=7") + 100);
	buf_release(&b);

	/* Exactly up to the cap. */
	buf_init(&b, 4);
	assert_int_equal(buf_printf(&b, "%04d", 7), FERRY_OK);
	assert_string_equal(b.data, "0007");
	assert_int_equal(buf_printf(&b, "%d", 1), FERRY_ETOOBIG);
	assert_string_equal(b.data, "0007");
	buf_release(&b);
}

static void test_reset_keeps_memory(void **state)
{
	struct buf b;
	char *data;

	(void)state;
	buf_init(&b, 32);
	assert_int_equal(buf_puts(&b, "some text"), FERRY_OK);
	data = b.data;
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_ptr_equal(b.data, data);
	assert_string_equal(b.data, "");
	assert_int_equal(buf_puts(&b, "again"), FERRY_OK);
	assert_string_equal(b.data, "again");
	buf_release(&b);
}

static void test_detach(void **state)
{
	struct buf b;
	char *s;

	(void)state;
	buf_init(&b, 32);
	assert_int_equal(buf_puts(&b, "taken"), FERRY_OK);
	s = buf_detach(&b);
	assert_string_equal(s, "taken");
	/* The buffer is empty again, with the same cap, and usable. */
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	assert_int_equal(b.cap, 32);
	free(s);

	/* Detaching a buffer that never allocated gives an empty string. */
	s = buf_detach(&b);
	assert_non_null(s);
	assert_string_equal(s, "");
	free(s);

	assert_int_equal(buf_puts(&b, "more"), FERRY_OK);
	s = buf_detach(&b);
	assert_string_equal(s, "more");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_is_empty), cmocka_unit_test(test_append_terminates),
		cmocka_unit_test(test_cap_exact),     cmocka_unit_test(test_too_big_leaves_buffer),
		cmocka_unit_test(test_zero_cap),      cmocka_unit_test(test_growth_stays_under_cap),
		cmocka_unit_test(test_printf),	      cmocka_unit_test(test_reset_keeps_memory),
		cmocka_unit_test(test_detach),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
