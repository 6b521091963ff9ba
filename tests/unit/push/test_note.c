/*
 * test_note.c - the APNs payload of a direct push (push/note.c): what an
 * operator's note becomes, and what is refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "push/apns.h"
#include "push/push.h"
#include "push/push_int.h"
#include "common/banned.h"

static char err[256];

static void expect(const struct push_note *n, int background, const char *want)
{
	char *got = push_note_apns_payload(n, background, err, sizeof(err));

	if (!got)
		fail_msg("refused: %s", err);
	assert_string_equal(got, want);
	free(got);
}

static void refused(const struct push_note *n, const char *needle)
{
	char *got = push_note_apns_payload(n, 0, err, sizeof(err));

	assert_null(got);
	if (!strstr(err, needle))
		fail_msg("'%s' does not say '%s'", err, needle);
}

static void test_background(void **state)
{
	struct push_note n = { .badge = -1 };
	(void)state;

	expect(&n, 1, "{\"aps\":{\"content-available\":1}}");
	n.data_json = "{\"k\":\"v\"}";
	expect(&n, 1, "{\"k\":\"v\",\"aps\":{\"content-available\":1}}");
}

static void test_alert(void **state)
{
	struct push_note n = { .title = "Hi",
			       .body = "You have mail",
			       .badge = 3,
			       .sound = "default",
			       .data_json = "{\"thread\":\"42\"}" };
	(void)state;

	expect(&n, 0,
	       "{\"thread\":\"42\",\"aps\":{\"alert\":{\"title\":\"Hi\",\"body\":\"You have "
	       "mail\"},\"badge\":3,\"sound\":\"default\"}}");
	/* A badge alone is an alert push without an alert. */
	n = (struct push_note){ .badge = 0 };
	expect(&n, 0, "{\"aps\":{\"badge\":0}}");
}

static void test_refused(void **state)
{
	struct push_note n = { .badge = -1 };
	static char big[5000];
	(void)state;

	n.data_json = "[1]";
	refused(&n, "JSON object");
	n.data_json = "{\"k\":1}";
	refused(&n, "string");
	n.data_json = "{\"aps\":\"x\"}";
	refused(&n, "reserved");
	n.data_json = "{\"k\":\"a\",\"k\":\"b\"}";
	refused(&n, "JSON object");
	n.data_json = NULL;
	n.title = "\xff\xfe";
	refused(&n, "UTF-8");
	memset(big, 'a', sizeof(big) - 1);
	n.title = big;
	refused(&n, "over 4096");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_background),
		cmocka_unit_test(test_alert),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
