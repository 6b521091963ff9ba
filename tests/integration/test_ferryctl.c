/*
 * test_ferryctl.c - ferryctl, the operators' CLI, against a real ferryd with
 * its device gateway on a fresh PostgreSQL database: every command, in human
 * form (the key figures are in it) and with --json (one document, parsed),
 * bad usage (exit 2), the server's refusals (exit 1 with its message),
 * timeouts, and the token: taken from FERRY_ADMIN_TOKEN or --token, and
 * never in anything ferryctl prints (checked on every run).
 *
 * ferryctl is build/asan/ferryctl unless FERRY_TEST_CTL names another. Each
 * run has its stdout and stderr in files of their own and the environment
 * variable FERRY_ADMIN_TOKEN set or removed as the test says.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gateway/proto.h"
#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "ctl-test-token-5d1f0c"
#define APNS_TOKEN "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"
#define MAX_ARGS 24

static struct {
	char *conninfo;
	struct th_ferryd d;
	int gw_port;
} fx;

/* What one run of ferryctl did. */
struct run {
	int status;
	char *out, *err;
};

static const char *ctl_path(void)
{
	const char *p = getenv("FERRY_TEST_CTL");

	return p && *p ? p : "build/asan/ferryctl";
}

static void pause_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000 * 1000 };

	nanosleep(&t, NULL);
}

/*
 * Run ferryctl with @args (NULL-terminated), FERRY_ADMIN_TOKEN set to
 * @env_token (NULL: removed). Fails the test if the token shows up in what
 * it printed.
 */
static void ctl_env(struct run *r, const char *env_token, const char *const args[])
{
	const char *argv[MAX_ARGS + 2];
	char *out = th_write_file("ctl.out", ""), *err = th_write_file("ctl.err", "");
	size_t n = 0;
	pid_t pid;

	argv[n++] = ctl_path();
	for (size_t i = 0; args[i]; i++) {
		assert_true(n < MAX_ARGS);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fo = open(out, O_WRONLY | O_TRUNC), fe = open(err, O_WRONLY | O_TRUNC);

		if (fo < 0 || fe < 0)
			_exit(126);
		dup2(fo, STDOUT_FILENO);
		dup2(fe, STDERR_FILENO);
		if (env_token)
			setenv("FERRY_ADMIN_TOKEN", env_token, 1);
		else
			unsetenv("FERRY_ADMIN_TOKEN");
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	r->status = th_wait(pid);
	r->out = th_read_file(out);
	r->err = th_read_file(err);
	unlink(out);
	unlink(err);
	free(out);
	free(err);
	if (strstr(r->out, TOKEN) || strstr(r->err, TOKEN))
		fail_msg("the token was printed by '%s ...':\n%s\n%s", args[0], r->out, r->err);
}

/* With the right token in the environment and the daemon's URL. */
static void ctl(struct run *r, const char *const args[])
{
	const char *argv[MAX_ARGS + 3] = { "--url", fx.d.admin_url };
	size_t n = 2;

	for (size_t i = 0; args[i]; i++) {
		assert_true(n < MAX_ARGS);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	ctl_env(r, TOKEN, argv);
}

static void run_release(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* @r exited with @status; fails the test, showing its output, otherwise. */
static void expect_status(const struct run *r, int status)
{
	if (r->status != status)
		fail_msg("expected exit %d, got %d\nstdout: %s\nstderr: %s", status, r->status,
			 r->out, r->err);
}

static void expect_in(const char *text, const char *needle)
{
	if (!strstr(text, needle))
		fail_msg("'%s' is not in:\n%s", needle, text);
}

/* The whole of @text as one JSON document (nothing else but the final newline). */
static json_t *one_doc(const char *text)
{
	json_error_t jerr;
	json_t *j = json_loads(text, 0, &jerr);

	if (!j)
		fail_msg("not one JSON document (%s): '%s'", jerr.text, text);
	assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
	return j;
}

static const char *str_of(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		fail_msg("member '%s' is missing or not a string", key);
	return json_string_value(v);
}

/* ---- fixture ---- */

static int setup(void **state)
{
	char extra[256], *cfg, *path;
	int admin = th_free_port();

	fx.conninfo = th_db_new("ctl");
	fx.gw_port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\n\n[receipts]\ndelivered = off\n",
		 fx.gw_port);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("ctl.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, admin);
	unlink(path);
	free(path);
	free(cfg);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	free(fx.conninfo);
	return status == 0 ? 0 : -1;
}

/* add-device @user with --json: its id (malloc'ed), its secret into @secret. */
static char *add_device(const char *user, const char *platform, char secret[64])
{
	struct run r;
	json_t *j;
	char *id;

	ctl(&r, (const char *[]){ "--json", "add-device", user, "--platform", platform, NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	id = strdup(str_of(j, "device_id"));
	assert_non_null(id);
	assert_string_equal(str_of(j, "user"), user);
	assert_string_equal(str_of(j, "platform"), platform);
	snprintf(secret, 64, "%s", str_of(j, "secret"));
	json_decref(j);
	run_release(&r);
	return id;
}

/* ---- tests ---- */

static void test_usage(void **state)
{
	static const char *const bad[][8] = {
		{ NULL },
		{ "frobnicate", NULL },
		{ "stats", "extra", NULL },
		{ "devices", NULL },
		{ "devices", "a b", NULL },
		{ "device", "abc", NULL },
		{ "device", "0", NULL },
		{ "queues", "--top", "0", NULL },
		{ "queues", "--top", "1001", NULL },
		{ "stats", "--top", "3", NULL },
		{ "send", "--user", "bob", NULL },
		{ "send", "--text", "hi", NULL },
		{ "send", "--user", "bob", "--device", "1", "--text", "x", NULL },
		{ "set-push", "1", "gcm", "tok", NULL },
		{ "set-push", "1", "apns", NULL },
		{ "--timeout", "0", "stats", NULL },
		{ "--url", "ftp://127.0.0.1:1", "stats", NULL },
		{ "--json=yes", "stats", NULL },
		{ "--nope", "stats", NULL },
	};
	struct run r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ctl_env(&r, TOKEN, bad[i]);
		expect_status(&r, 2);
		expect_in(r.err, "ferryctl: ");
		expect_in(r.err, "usage: ferryctl");
		assert_string_equal(r.out, "");
		run_release(&r);
	}

	ctl_env(&r, TOKEN, (const char *[]){ "--help", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "usage: ferryctl");
	expect_in(r.out, "FERRY_ADMIN_TOKEN");
	run_release(&r);

	/* No token at all. */
	ctl_env(&r, NULL, (const char *[]){ "--url", fx.d.admin_url, "stats", NULL });
	expect_status(&r, 2);
	expect_in(r.err, "missing --token (or FERRY_ADMIN_TOKEN)");
	run_release(&r);

	/* A token in the URL is refused, and not printed. */
	ctl_env(&r, NULL,
		(const char *[]){ "--url", "http://127.0.0.1:1/?token=" TOKEN, "--token", TOKEN,
				  "stats", NULL });
	expect_status(&r, 2);
	expect_in(r.err, "--url must not have a query string");
	run_release(&r);
	ctl_env(&r, NULL,
		(const char *[]){ "--url", "http://admin:" TOKEN "@127.0.0.1:1", "stats", NULL });
	expect_status(&r, 2);
	expect_in(r.err, "must not carry credentials");
	run_release(&r);
	/* An argument that is the token is not quoted. */
	ctl(&r, (const char *[]){ "devices", "alice", TOKEN, NULL });
	expect_status(&r, 2);
	expect_in(r.err, "unexpected argument '<token>'");
	run_release(&r);
}

/* The server says no: exit 1 with its message; with --json its error document. */
static void test_refused(void **state)
{
	struct run r;
	json_t *j;

	ctl_env(&r, "wrong-token", (const char *[]){ "--url", fx.d.admin_url, "stats", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "invalid bearer token");
	expect_in(r.err, "HTTP 401");
	assert_string_equal(r.out, "");
	run_release(&r);

	ctl_env(&r, NULL,
		(const char *[]){ "--url", fx.d.admin_url, "--token", "wrong-token", "--json",
				  "queues", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "invalid bearer token");
	j = one_doc(r.out);
	assert_string_equal(str_of(json_object_get(j, "error"), "code"), "unauthorized");
	json_decref(j);
	run_release(&r);

	ctl(&r, (const char *[]){ "device", "9223372036854775807", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "device '9223372036854775807' not found");
	expect_in(r.err, "HTTP 404");
	run_release(&r);

	ctl(&r, (const char *[]){ "add-device", "someone", "--platform", "nokia", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "field 'platform' must be one of ios, android, desktop, web");
	run_release(&r);

	/* Not built yet on the server: its 404, cleanly. */
	ctl(&r, (const char *[]){ "drain", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "route '/v1/drain' not found");
	expect_in(r.err, "no drain route yet");
	assert_string_equal(r.out, "");
	run_release(&r);
	ctl(&r, (const char *[]){ "--json", "drain", NULL });
	expect_status(&r, 1);
	j = one_doc(r.out);
	assert_string_equal(str_of(json_object_get(j, "error"), "code"), "not_found");
	json_decref(j);
	run_release(&r);
}

/* Nobody there, or nobody answering in time: exit 1, quickly. */
static void test_unreachable(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	char url[64];
	time_t t0;
	struct run r;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ctl_env(&r, TOKEN, (const char *[]){ "--url", "http://127.0.0.1:1", "stats", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "no answer from the admin API");
	run_release(&r);

	/* A socket that accepts (the kernel does) and never answers. */
	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
	t0 = time(NULL);
	ctl_env(&r, TOKEN, (const char *[]){ "--url", url, "--timeout", "1", "stats", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "no answer from the admin API");
	assert_true(time(NULL) - t0 < 10);
	run_release(&r);
	close(fd);
}

/* stats: every top-level section of the JSON shows up in the human form. */
static void test_stats(void **state)
{
	struct run r, h;
	const char *key;
	json_t *j, *v;
	char line[128];

	ctl(&r, (const char *[]){ "--json", "stats", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	assert_true(json_is_object(j));
	assert_true(json_object_size(j) > 0);
	/* FERRY_ADMIN_TOKEN alone, and the token from --token alone, both work. */
	ctl_env(&h, TOKEN, (const char *[]){ "--url", fx.d.admin_url, "stats", NULL });
	expect_status(&h, 0);
	json_object_foreach(j, key, v)
	{
		snprintf(line, sizeof(line), "\n%s:", key);
		if (strncmp(h.out, line + 1, strlen(line + 1)) && !strstr(h.out, line))
			fail_msg("section '%s' is not in:\n%s", key, h.out);
	}
	json_decref(j);
	run_release(&h);
	run_release(&r);
	ctl_env(&h, NULL,
		(const char *[]){ "--url", fx.d.admin_url, "--token", TOKEN, "stats", NULL });
	expect_status(&h, 0);
	assert_true(strlen(h.out) > 0);
	run_release(&h);
	/* --token wins over the environment. */
	ctl_env(&h, "wrong-token",
		(const char *[]){ "--url", fx.d.admin_url, "--token=" TOKEN, "stats", NULL });
	expect_status(&h, 0);
	run_release(&h);
}

static void test_devices(void **state)
{
	char secret[64], other_secret[64], want[160];
	char *id = add_device("carol", "ios", secret),
	     *id2 = add_device("carol", "web", other_secret);
	struct run r;
	json_t *j, *devs;

	/* Human add-device: the id and the secret, and a word about the secret. */
	ctl(&r, (const char *[]){ "add-device", "dave", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "device_id: ");
	expect_in(r.out, "platform: desktop");
	expect_in(r.out, "secret: ");
	expect_in(r.err, "shown only once");
	run_release(&r);

	ctl(&r, (const char *[]){ "devices", "carol", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "ID");
	expect_in(r.out, "PLATFORM");
	expect_in(r.out, "LAST SEEN");
	expect_in(r.out, id);
	expect_in(r.out, id2);
	expect_in(r.out, "ios");
	expect_in(r.out, "never");
	assert_null(strstr(r.out, secret));
	run_release(&r);
	ctl(&r, (const char *[]){ "--json", "devices", "carol", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	devs = json_object_get(j, "devices");
	assert_int_equal(json_array_size(devs), 2);
	assert_string_equal(str_of(json_array_get(devs, 0), "device_id"), id);
	json_decref(j);
	run_release(&r);
	ctl(&r, (const char *[]){ "devices", "nobody-at-all", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "no devices for user 'nobody-at-all'");
	run_release(&r);

	ctl(&r, (const char *[]){ "device", id, NULL });
	expect_status(&r, 0);
	snprintf(want, sizeof(want), "device_id: %s\n", id);
	expect_in(r.out, want);
	expect_in(r.out, "user: carol\n");
	expect_in(r.out, "platform: ios\n");
	expect_in(r.out, "last_seen: -\n");
	expect_in(r.out, "push: -\n");
	run_release(&r);

	ctl(&r, (const char *[]){ "set-push", id, "apns", APNS_TOKEN, "--topic", "com.example.app",
				  "--sandbox", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "push:\n");
	expect_in(r.out, "  provider: apns\n");
	expect_in(r.out, "  environment: sandbox\n");
	expect_in(r.out, "  topic: com.example.app\n");
	expect_in(r.out, "  token_prefix: 01234567");
	assert_null(strstr(r.out, APNS_TOKEN));
	run_release(&r);
	ctl(&r, (const char *[]){ "--json", "set-push", id2, "fcm", "fcm-token:xyz-123", "--app",
				  "main", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	assert_string_equal(str_of(json_object_get(j, "push"), "provider"), "fcm");
	assert_string_equal(str_of(json_object_get(j, "push"), "app"), "main");
	json_decref(j);
	run_release(&r);
	ctl(&r, (const char *[]){ "devices", "carol", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "apns sandbox");
	expect_in(r.out, "fcm app=main");
	run_release(&r);
	/* The server's rules on push tokens: its message. */
	ctl(&r, (const char *[]){ "set-push", id, "apns", "not-hex", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "must be hexadecimal");
	run_release(&r);
	free(id);
	free(id2);
}

/* send, then queues: what was stored shows up, deepest first. */
static void test_send_and_queues(void **state)
{
	char secret[64], want[160];
	char *deep = add_device("erin", "android", secret),
	     *shallow = add_device("frank", "ios", secret);
	char *file = th_write_file("ctl-payload.bin", "payload from a file\n");
	struct run r;
	json_t *j, *qs;

	for (int i = 0; i < 3; i++) {
		ctl(&r, (const char *[]){ "send", "--device", deep, "--text", "hello erin", NULL });
		expect_status(&r, 0);
		expect_in(r.out, "status: stored\n");
		expect_in(r.out, "targets: 1\n");
		expect_in(r.out, "server_id: ");
		run_release(&r);
	}
	ctl(&r, (const char *[]){ "--json", "send", "--user", "frank", "--file", file, "--ttl",
				  "600", "--client-id", "77", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	assert_string_equal(str_of(j, "status"), "stored");
	assert_int_equal(json_integer_value(json_object_get(j, "targets")), 1);
	json_decref(j);
	run_release(&r);
	/* The same client id again is the same message: not stored twice. */
	ctl(&r, (const char *[]){ "send", "--user", "frank", "--file", file, "--client-id", "77",
				  NULL });
	expect_status(&r, 0);
	run_release(&r);
	ctl(&r, (const char *[]){ "send", "--user", "nobody-here", "--text", "x", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "HTTP 404");
	run_release(&r);
	ctl(&r, (const char *[]){ "send", "--user", "frank", "--file", "/nonexistent/x", NULL });
	expect_status(&r, 2);
	expect_in(r.err, "cannot open '/nonexistent/x'");
	run_release(&r);

	ctl(&r, (const char *[]){ "--json", "queues", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	qs = json_object_get(j, "queues");
	assert_int_equal(json_array_size(qs), 2);
	assert_string_equal(str_of(json_array_get(qs, 0), "device_id"), deep);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(qs, 0), "pending")), 3);
	assert_string_equal(str_of(json_array_get(qs, 1), "device_id"), shallow);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(qs, 1), "pending")), 1);
	json_decref(j);
	run_release(&r);

	ctl(&r, (const char *[]){ "queues", NULL });
	expect_status(&r, 0);
	expect_in(r.out, "DEVICE");
	expect_in(r.out, "PENDING");
	expect_in(r.out, "OLDEST");
	snprintf(want, sizeof(want), "%s ", deep);
	expect_in(r.out, want);
	expect_in(r.out, "erin");
	expect_in(r.out, " 3 ");
	expect_in(r.out, "frank");
	run_release(&r);

	ctl(&r, (const char *[]){ "--json", "queues", "--top", "1", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	assert_int_equal(json_array_size(json_object_get(j, "queues")), 1);
	json_decref(j);
	run_release(&r);
	unlink(file);
	free(file);
	free(deep);
	free(shallow);
}

/* disconnect: a connected device gets ERROR disconnected and comes back. */
static void test_disconnect(void **state)
{
	char secret[64], want[160], *id = add_device("gina", "desktop", secret);
	struct rawdev *dev = rawdev_new();
	struct run r;
	json_t *j;
	int i;

	ctl(&r, (const char *[]){ "disconnect", id, NULL });
	expect_status(&r, 0);
	snprintf(want, sizeof(want), "device %s: no connection to this ferryd\n", id);
	assert_string_equal(r.out, want);
	run_release(&r);

	rawdev_login(dev, fx.gw_port, strtoll(id, NULL, 10), secret);
	ctl(&r, (const char *[]){ "disconnect", id, NULL });
	expect_status(&r, 0);
	snprintf(want, sizeof(want), "device %s: disconnected\n", id);
	assert_string_equal(r.out, want);
	run_release(&r);
	rawdev_expect_error_close(dev, PROTO_ERR_DISCONNECTED);
	rawdev_close(dev);

	/* Gone from this node once its close is through. */
	for (i = 0; i < 100; i++) {
		ctl(&r, (const char *[]){ "--json", "disconnect", id, NULL });
		expect_status(&r, 0);
		j = one_doc(r.out);
		run_release(&r);
		if (json_is_false(json_object_get(j, "disconnected"))) {
			json_decref(j);
			break;
		}
		json_decref(j);
		pause_ms(50);
	}
	assert_true(i < 100);

	/* It may come back at once. */
	rawdev_login(dev, fx.gw_port, strtoll(id, NULL, 10), secret);
	ctl(&r, (const char *[]){ "--json", "disconnect", id, NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	assert_true(json_is_true(json_object_get(j, "disconnected")));
	json_decref(j);
	run_release(&r);
	rawdev_expect_error_close(dev, PROTO_ERR_DISCONNECTED);
	rawdev_free(dev);

	ctl(&r, (const char *[]){ "disconnect", "9223372036854775807", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "not found");
	run_release(&r);
	free(id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_usage),	    cmocka_unit_test(test_refused),
		cmocka_unit_test(test_unreachable), cmocka_unit_test(test_stats),
		cmocka_unit_test(test_devices),	    cmocka_unit_test(test_send_and_queues),
		cmocka_unit_test(test_disconnect),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
