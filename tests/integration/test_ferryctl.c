/*
 * test_ferryctl.c - ferryctl, the operators' CLI, against a real ferryd with
 * its device gateway on a fresh PostgreSQL database: every command, in human
 * form (the key figures are in it) and with --json (one document, parsed),
 * bad usage (exit 2), the server's refusals (exit 1 with its message),
 * timeouts, and the token: taken from FERRY_ADMIN_TOKEN or --token, and
 * never in anything ferryctl prints (checked on every run). drain, which
 * cannot be undone, runs against a ferryd of its own, and against a
 * one-answer HTTP server standing in for a ferryd without the drain route.
 *
 * ferryctl is build/asan/ferryctl unless FERRY_TEST_CTL names another. Each
 * run has its stdout and stderr in files of their own and the environment
 * variable FERRY_ADMIN_TOKEN set or removed as the test says.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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
	/* test_drain's own ferryd (pid 0 when not running) */
	char *drain_conninfo;
	struct th_ferryd drain;
} fx;

/* What one run of ferryctl did. */
struct run {
	int status;
	char *out, *err;
};

/* A run of ferryctl that was started and not yet waited for. */
struct bg {
	pid_t pid;
	char *out, *err; /* the files its stdout and stderr go to */
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
 * Start ferryctl with @args (NULL-terminated), FERRY_ADMIN_TOKEN set to
 * @env_token (NULL: removed); ctl_reap() waits for it.
 */
static void ctl_spawn(struct bg *b, const char *env_token, const char *const args[])
{
	static unsigned runs;
	const char *argv[MAX_ARGS + 2];
	char name[32], *out, *err;
	size_t n = 0;
	pid_t pid;

	snprintf(name, sizeof(name), "ctl-%u.out", runs);
	out = th_write_file(name, "");
	snprintf(name, sizeof(name), "ctl-%u.err", runs++);
	err = th_write_file(name, "");

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
		/* Nothing else of the test's: a device socket kept open here stays connected. */
		for (int fd = STDERR_FILENO + 1; fd < 1024; fd++)
			close(fd);
		if (env_token)
			setenv("FERRY_ADMIN_TOKEN", env_token, 1);
		else
			unsetenv("FERRY_ADMIN_TOKEN");
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	b->pid = pid;
	b->out = out;
	b->err = err;
}

/* Wait for @b and fill in @r. Fails the test if the token shows up in what it printed. */
static void ctl_reap(struct bg *b, struct run *r)
{
	r->status = th_wait(b->pid);
	r->out = th_read_file(b->out);
	r->err = th_read_file(b->err);
	unlink(b->out);
	unlink(b->err);
	free(b->out);
	free(b->err);
	if (strstr(r->out, TOKEN) || strstr(r->err, TOKEN))
		fail_msg("the token was printed by ferryctl:\n%s\n%s", r->out, r->err);
}

/* Run ferryctl and wait for it (ctl_spawn() and ctl_reap()). */
static void ctl_env(struct run *r, const char *env_token, const char *const args[])
{
	struct bg b;

	ctl_spawn(&b, env_token, args);
	ctl_reap(&b, r);
}

/* Start ferryctl with the right token in the environment and --url @url. */
static void ctl_spawn_at(struct bg *b, const char *url, const char *const args[])
{
	const char *argv[MAX_ARGS + 3] = { "--url", url };
	size_t n = 2;

	for (size_t i = 0; args[i]; i++) {
		assert_true(n < MAX_ARGS);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	ctl_spawn(b, TOKEN, argv);
}

static void ctl_at(struct run *r, const char *url, const char *const args[])
{
	struct bg b;

	ctl_spawn_at(&b, url, args);
	ctl_reap(&b, r);
}

/* With the right token in the environment and the daemon's URL. */
static void ctl(struct run *r, const char *const args[])
{
	ctl_at(r, fx.d.admin_url, args);
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

static void expect_end(const char *text, const char *end)
{
	size_t n = strlen(text), m = strlen(end);

	if (n < m || strcmp(text + n - m, end))
		fail_msg("'%s' does not end in '%s'", text, end);
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

/* Migrate @conninfo and start @d on it, its device gateway on @gw_port: 0, or -1. */
static int start_ferryd(struct th_ferryd *d, const char *conninfo, int gw_port)
{
	char extra[256], *cfg, *path;
	int admin = th_free_port(), rc;

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\n\n[receipts]\ndelivered = off\n",
		 gw_port);
	cfg = th_ferryd_config_ex(conninfo, admin, TOKEN, extra);
	path = th_write_file("ctl.ini", cfg);
	rc = th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) ? -1 : 0;
	unlink(path);
	free(path);
	if (!rc)
		th_ferryd_start(d, cfg, admin);
	free(cfg);
	return rc;
}

static int setup(void **state)
{
	fx.conninfo = th_db_new("ctl");
	fx.gw_port = th_free_port();
	return start_ferryd(&fx.d, fx.conninfo, fx.gw_port);
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	if (fx.drain.pid > 0)
		th_ferryd_stop(&fx.drain, SIGTERM);
	free(fx.conninfo);
	free(fx.drain_conninfo);
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
		{ "drain", "--spread", "600001", NULL },
		{ "drain", "--spread", "-1", NULL },
		{ "drain", "--spread", "1s", NULL },
		{ "drain", "--spread", NULL },
		{ "drain", "--wait", "0", NULL },
		{ "drain", "--wait", "86401", NULL },
		{ "drain", "--wait=", NULL },
		{ "drain", "--wait", "ten", NULL },
		{ "drain", "now", NULL },
		{ "stats", "--wait", "5", NULL },
		{ "queues", "--spread", "0", NULL },
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
	expect_in(r.out, "drain [--spread MS] [--wait SEC]");
	run_release(&r);

	/* What is wrong with a drain option, said. */
	ctl(&r, (const char *[]){ "drain", "--spread", "600001", NULL });
	expect_status(&r, 2);
	expect_in(r.err, "--spread must be milliseconds, 0 to 600000: '600001'");
	run_release(&r);
	ctl(&r, (const char *[]){ "drain", "--wait=0", NULL });
	expect_status(&r, 2);
	expect_in(r.err, "--wait must be seconds, 1 to 86400: '0'");
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
	assert_true(json_integer_value(json_object_get(json_object_get(j, "total"), "envelopes")) >=
		    4);
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
	expect_in(r.out, " envelopes waiting for ");
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

/* ---- drain ---- */

/* Wait up to 10 s until @b's stdout has @needle in it. */
static void wait_output(const struct bg *b, const char *needle)
{
	char *out = NULL;

	for (int i = 0; i < 200; i++) {
		free(out);
		out = th_read_file(b->out);
		if (strstr(out, needle))
			break;
		pause_ms(50);
	}
	if (!strstr(out, needle))
		fail_msg("'%s' is not in ferryctl's output:\n%s", needle, out);
	free(out);
}

/*
 * drain on a ferryd of its own (there is no way back): two devices get
 * RECONNECT at once (--spread 0); while one stays, drain is not done within
 * --wait (exit 1, the last state); once it leaves, drain is done (exit 0).
 */
static void test_drain(void **state)
{
	struct rawdev *a = rawdev_new(), *b = rawdev_new();
	char secret_a[64], secret_b[64];
	int gw = th_free_port();
	int64_t id_a, id_b;
	struct bg waiting;
	struct run r;
	json_t *j;

	fx.drain_conninfo = th_db_new("ctldrain");
	assert_int_equal(start_ferryd(&fx.drain, fx.drain_conninfo, gw), 0);
	th_device_create(&fx.drain, TOKEN, "ivan", &id_a, secret_a);
	th_device_create(&fx.drain, TOKEN, "ivan", &id_b, secret_b);
	rawdev_login(a, gw, id_a, secret_a);
	rawdev_login(b, gw, id_b, secret_b);

	ctl_spawn_at(&waiting, fx.drain.admin_url,
		     (const char *[]){ "drain", "--spread", "0", "--wait", "20", NULL });
	assert_int_equal(rawdev_expect(a, PROTO_RECONNECT, 10000)->u.reconnect_after, 0);
	assert_int_equal(rawdev_expect(b, PROTO_RECONNECT, 10000)->u.reconnect_after, 0);
	rawdev_close(a);
	wait_output(&waiting, "draining: 1 connection left\n");

	/* Meanwhile: asked again, the same drain; b stays, so not done in time. */
	ctl_at(&r, fx.drain.admin_url, (const char *[]){ "drain", "--wait", "1", NULL });
	expect_status(&r, 1);
	assert_string_equal(r.out, "draining: 1 connection left\n");
	expect_in(r.err, "ferryctl: drain: not done after 1 s: 1 connection left, 0 store "
			 "writes waiting");
	run_release(&r);
	ctl_at(&r, fx.drain.admin_url, (const char *[]){ "--json", "drain", "--wait=1", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "not done after 1 s");
	j = one_doc(r.out); /* the last state only, not the POST's answer too */
	assert_true(json_is_true(json_object_get(j, "draining")));
	assert_true(json_is_false(json_object_get(j, "done")));
	assert_int_equal(json_integer_value(json_object_get(j, "connections")), 1);
	json_decref(j);
	run_release(&r);
	rawdev_expect_silence(b, 200); /* no second RECONNECT */

	/* The last device leaves: done. */
	rawdev_close(b);
	ctl_reap(&waiting, &r);
	expect_status(&r, 0);
	expect_in(r.out, "draining: 1 connection left\n");
	expect_end(r.out, "drained: 0 connections left\n");
	assert_string_equal(r.err, "");
	run_release(&r);

	/* Drained already: done at once; --json prints GET /v1/drain's answer. */
	ctl_at(&r, fx.drain.admin_url, (const char *[]){ "--json", "drain", NULL });
	expect_status(&r, 0);
	j = one_doc(r.out);
	assert_true(json_is_true(json_object_get(j, "draining")));
	assert_true(json_is_true(json_object_get(j, "done")));
	assert_int_equal(json_integer_value(json_object_get(j, "connections")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "queued_puts")), 0);
	json_decref(j);
	run_release(&r);
	ctl_at(&r, fx.drain.admin_url, (const char *[]){ "drain", NULL });
	expect_status(&r, 0);
	assert_string_equal(r.out, "drained: 0 connections left\n");
	run_release(&r);

	/* A refusal is reported as for any command. */
	ctl_env(&r, "wrong-token",
		(const char *[]){ "--url", fx.drain.admin_url, "drain", "--wait", "1", NULL });
	expect_status(&r, 1);
	expect_in(r.err, "invalid bearer token");
	run_release(&r);

	assert_int_equal(th_ferryd_stop(&fx.drain, SIGTERM), 0);
	rawdev_free(a);
	rawdev_free(b);
}

/*
 * Accept one connection on @fd, read one request (head and Content-Length
 * body) and answer it with @status and the JSON @body; returns the request
 * (malloc'ed).
 */
static char *answer_once(int fd, const char *status, const char *body)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t cap = 16384, len = 0, want = 0;
	char *req = calloc(1, cap), head[256], *end, *cl;
	int c;

	assert_non_null(req);
	assert_int_equal(poll(&p, 1, 10000), 1);
	c = accept(fd, NULL, NULL);
	assert_true(c >= 0);
	for (;;) {
		ssize_t n;

		end = strstr(req, "\r\n\r\n");
		if (end) {
			cl = strcasestr(req, "\r\nContent-Length:");
			want = (size_t)(end + 4 - req) +
			       (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
			if (len >= want)
				break;
		}
		assert_true(len + 1 < cap);
		p = (struct pollfd){ .fd = c, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 10000), 1);
		n = read(c, req + len, cap - 1 - len);
		assert_true(n > 0);
		len += (size_t)n;
		req[len] = '\0';
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n",
		 status, strlen(body));
	assert_int_equal(write(c, head, strlen(head)), (ssize_t)strlen(head));
	assert_int_equal(write(c, body, strlen(body)), (ssize_t)strlen(body));
	close(c);
	return req;
}

/* A ferryd older than the drain route: its 404, and a word on what it means. */
static void test_drain_no_route(void **state)
{
	static const char not_found[] =
		"{\"error\":{\"code\":\"not_found\",\"message\":\"route '/v1/drain' not found\"}}";
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char url[64], *req;
	struct bg b;
	struct run r;
	json_t *j;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));

	ctl_spawn_at(&b, url, (const char *[]){ "drain", "--spread", "250", NULL });
	req = answer_once(fd, "404 Not Found", not_found);
	ctl_reap(&b, &r);
	expect_status(&r, 1);
	assert_true(!strncmp(req, "POST /v1/drain HTTP/1.1\r\n", 25));
	expect_in(req, "\r\n\r\n{\"spread_ms\":250}");
	expect_in(r.err, "route '/v1/drain' not found (HTTP 404 not_found)");
	expect_in(r.err, "the server has no drain route");
	assert_string_equal(r.out, "");
	free(req);
	run_release(&r);

	ctl_spawn_at(&b, url, (const char *[]){ "--json", "drain", NULL });
	req = answer_once(fd, "404 Not Found", not_found);
	ctl_reap(&b, &r);
	expect_status(&r, 1);
	expect_in(req, "Content-Length: 0\r\n"); /* no --spread: the server's default */
	expect_in(r.err, "the server has no drain route");
	j = one_doc(r.out);
	assert_string_equal(str_of(json_object_get(j, "error"), "code"), "not_found");
	json_decref(j);
	free(req);
	run_release(&r);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_usage),	       cmocka_unit_test(test_refused),
		cmocka_unit_test(test_unreachable),    cmocka_unit_test(test_stats),
		cmocka_unit_test(test_devices),	       cmocka_unit_test(test_send_and_queues),
		cmocka_unit_test(test_disconnect),     cmocka_unit_test(test_drain),
		cmocka_unit_test(test_drain_no_route),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
