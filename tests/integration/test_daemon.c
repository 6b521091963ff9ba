/*
 * test_daemon.c - ferryd as an operator meets it: commands and exit codes,
 * check-config, environment overrides, SIGHUP reload, graceful stop.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/harness.h"
#include "common/banned.h"

static void test_version_and_usage(void **state)
{
	char *out = NULL;

	assert_int_equal(th_ferryd_cmd(NULL, (const char *[]){ "version", NULL }, &out), 0);
	assert_non_null(strstr(out, "ferryd "));
	assert_non_null(strstr(out, "schema"));
	free(out);
	assert_int_equal(th_ferryd_cmd(NULL, (const char *[]){ "frobnicate", NULL }, &out), 2);
	assert_non_null(strstr(out, "unknown command 'frobnicate'"));
	assert_non_null(strstr(out, "usage:"));
	free(out);
	assert_int_equal(th_ferryd_cmd(NULL, (const char *[]){ "run", "--bogus", NULL }, &out), 2);
	assert_non_null(strstr(out, "unexpected argument '--bogus'"));
	free(out);
	assert_int_equal(th_ferryd_cmd(NULL, (const char *[]){ "help", NULL }, &out), 0);
	assert_non_null(strstr(out, "ferryd check-config"));
	free(out);
}

static void test_check_config(void **state)
{
	char *good =
		th_write_file("good.ini", "[store]\n"
					  "conninfo = \"host=/tmp dbname=x password=hunter2\"\n"
					  "[admin]\n"
					  "token = \"sup3rsecret\"\n"
					  "threads = 4\n");
	char *bad = th_write_file("bad.ini", "[admin]\n"
					     "threads = 4\n"
					     "bogus = 1\n");
	char *out = NULL;

	assert_int_equal(th_ferryd_cmd(good, (const char *[]){ "check-config", NULL }, &out), 0);
	assert_non_null(strstr(out, "threads = 4"));
	assert_null(strstr(out, "hunter2"));
	assert_null(strstr(out, "sup3rsecret"));
	assert_non_null(strstr(out, "token = ********"));
	free(out);

	/* The error names file, line and key; exit code 2. */
	assert_int_equal(th_ferryd_cmd(bad, (const char *[]){ "check-config", NULL }, &out), 2);
	assert_non_null(strstr(out, "bad.ini:3: [admin] bogus: unknown key"));
	free(out);
	assert_int_equal(th_ferryd_cmd("/nonexistent/ferry.ini",
				       (const char *[]){ "check-config", NULL }, &out),
			 2);
	assert_non_null(strstr(out, "/nonexistent/ferry.ini"));
	free(out);

	/* An empty configuration is valid. */
	assert_int_equal(th_ferryd_cmd(NULL, (const char *[]){ "check-config", NULL }, &out), 0);
	assert_non_null(strstr(out, "listen = 127.0.0.1:7280"));
	free(out);

	/* Environment overrides win over the file, and are validated too. */
	setenv("FERRY_ADMIN_THREADS", "7", 1);
	assert_int_equal(th_ferryd_cmd(good, (const char *[]){ "check-config", NULL }, &out), 0);
	assert_non_null(strstr(out, "threads = 7"));
	free(out);
	setenv("FERRY_ADMIN_THREADS", "0", 1);
	assert_int_equal(th_ferryd_cmd(good, (const char *[]){ "check-config", NULL }, &out), 2);
	assert_non_null(strstr(out, "FERRY_ADMIN_THREADS"));
	free(out);
	unsetenv("FERRY_ADMIN_THREADS");

	unlink(good);
	unlink(bad);
	free(good);
	free(bad);
}

/* No admin token: the configuration is valid, but the admin API stays off
 * (never unauthenticated), and check-config says so. */
static void test_no_admin_token_warns(void **state)
{
	char *path = th_write_file("notoken.ini", "[admin]\nlisten = 127.0.0.1:1\n");
	char *out = NULL;

	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "check-config", NULL }, &out), 0);
	assert_non_null(strstr(out, "the admin API stays off"));
	free(out);
	unlink(path);
	free(path);
}

static void expect_status(const struct th_ferryd *d, const char *token, long status)
{
	char url[128];
	struct th_response r;

	snprintf(url, sizeof(url), "%s/v1/users/alice/devices", d->admin_url);
	th_http(&r, "GET", url, token, NULL);
	assert_int_equal(r.status, status);
	th_response_release(&r);
}

static void rewrite(const struct th_ferryd *d, const char *text)
{
	FILE *f = fopen(d->config_path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* SIGHUP: a good file swaps the token and the level; a bad one changes
 * nothing; keys that need a restart are named. */
static void test_sighup_reload(void **state)
{
	char *conninfo = th_db_new("hup");
	int port = th_free_port();
	char *v1 = th_ferryd_config(conninfo, port, "first-token");
	char *v2 = th_ferryd_config(conninfo, port, "second-token");
	char *path = th_write_file("hup.ini", v1);
	struct th_ferryd d;
	char *v3;

	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL), 0);
	th_ferryd_start(&d, v1, port);
	expect_status(&d, "first-token", 200);
	expect_status(&d, "second-token", 401);

	rewrite(&d, v2);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_done", 1);
	assert_int_equal(th_log_count(&d, "event=config_reloaded key=admin.token"), 1);
	expect_status(&d, "first-token", 401);
	expect_status(&d, "second-token", 200);

	/* A broken file: the old configuration stays in force. */
	rewrite(&d, "[admin]\nthreads = many\n");
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_failed", 1);
	assert_int_equal(th_log_count(&d, "event=reload_done"), 1);
	expect_status(&d, "second-token", 200);

	/* A key that needs a restart is named, the rest applies. */
	assert_true(asprintf(&v3, "%s[admin]\nthreads = 3\n", v2) > 0);
	rewrite(&d, v3);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_done", 2);
	assert_int_equal(th_log_count(&d, "event=config_needs_restart key=admin.threads"), 1);
	expect_status(&d, "second-token", 200);

	/* The token never reaches the log. */
	assert_int_equal(th_log_count(&d, "first-token"), 0);
	assert_int_equal(th_log_count(&d, "second-token"), 0);

	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	unlink(path);
	free(path);
	free(v1);
	free(v2);
	free(v3);
	free(conninfo);
}

/* SIGINT stops as cleanly as SIGTERM (exit 0, sanitizers quiet); no core dumps. */
static void test_sigint_stops(void **state)
{
	char *conninfo = th_db_new("int");
	int port = th_free_port();
	char *text = th_ferryd_config(conninfo, port, "tok");
	char *path = th_write_file("int.ini", text);
	struct th_ferryd d;

	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL), 0);
	th_ferryd_start(&d, text, port);
	/* While it runs: no core file may be written (the admin token, push
	 * credentials and envelopes are in its memory). */
	{
		char lp[64], soft[32], hard[32], *limits, *line;

		snprintf(lp, sizeof(lp), "/proc/%d/limits", (int)d.pid);
		limits = th_read_file(lp);
		line = strstr(limits, "Max core file size");
		assert_non_null(line);
		/* Both limits: a soft 0 alone (a common default) could be raised. */
		assert_int_equal(sscanf(line + 18, "%31s %31s", soft, hard), 2);
		if (strcmp(soft, "0") || strcmp(hard, "0"))
			fail_msg("core dumps not disabled: soft %s, hard %s", soft, hard);
		free(limits);
	}
	assert_int_equal(th_ferryd_stop(&d, SIGINT), 0);
	unlink(path);
	free(path);
	free(text);
	free(conninfo);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version_and_usage),    cmocka_unit_test(test_check_config),
		cmocka_unit_test(test_no_admin_token_warns), cmocka_unit_test(test_sighup_reload),
		cmocka_unit_test(test_sigint_stops),
	};

	return cmocka_run_group_tests_name("daemon", tests, NULL, NULL);
}
