/*
 * test_validate.c - user id and platform rules, device secrets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "queue/queue.h"
#include "common/banned.h"

static void test_user_ids(void **state)
{
	char long_id[QUEUE_USER_MAX + 2];

	assert_true(queue_user_valid("alice"));
	assert_true(queue_user_valid("a.b_c:d@e+f-g0"));
	assert_true(queue_user_valid("x"));
	assert_false(queue_user_valid(""));
	assert_false(queue_user_valid(NULL));
	assert_false(queue_user_valid("a b"));
	assert_false(queue_user_valid("a/b"));
	assert_false(queue_user_valid("é"));
	assert_false(queue_user_valid("a\nb"));
	memset(long_id, 'a', sizeof(long_id));
	long_id[QUEUE_USER_MAX] = '\0';
	assert_true(queue_user_valid(long_id));
	long_id[QUEUE_USER_MAX] = 'a';
	long_id[QUEUE_USER_MAX + 1] = '\0';
	assert_false(queue_user_valid(long_id));
}

static void test_platforms(void **state)
{
	assert_true(queue_platform_valid("ios"));
	assert_true(queue_platform_valid("android"));
	assert_true(queue_platform_valid("desktop"));
	assert_true(queue_platform_valid("web"));
	assert_false(queue_platform_valid("IOS"));
	assert_false(queue_platform_valid(""));
	assert_false(queue_platform_valid(NULL));
	assert_false(queue_platform_valid("iosx"));
}

static void test_secrets(void **state)
{
	char a[QUEUE_SECRET_LEN + 1], b[QUEUE_SECRET_LEN + 1];
	uint8_t h1[QUEUE_SECRET_HASH_LEN], h2[SHA256_DIGEST_LENGTH];

	assert_int_equal(queue_secret_new(a), FERRY_OK);
	assert_int_equal(queue_secret_new(b), FERRY_OK);
	assert_int_equal(strlen(a), QUEUE_SECRET_LEN);
	assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				   "0123456789-_"),
			 QUEUE_SECRET_LEN);
	assert_string_not_equal(a, b);
	queue_secret_hash(a, strlen(a), h1);
	SHA256((const unsigned char *)a, strlen(a), h2);
	assert_memory_equal(h1, h2, sizeof(h2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_ids),
		cmocka_unit_test(test_platforms),
		cmocka_unit_test(test_secrets),
	};

	return cmocka_run_group_tests_name("validate", tests, NULL, NULL);
}
