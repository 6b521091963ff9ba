/*
 * test_cli.c - the quick start of the README, as a test: ferryd, and two
 * ferry-client processes (one listening, one sending), over TCP and TLS;
 * then offline delivery: envelopes sent to a device that is away are stored
 * (ACK "stored"), and `listen --until-empty` drains them in order and stops.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/harness.h"
#include "common/banned.h"

#define TOKEN "cli-test-token"

static struct {
	char *conninfo;
	struct th_ferryd d;
	int port, tls_port;
	char *cert, *key;
	int64_t alice, bob;
	char alice_s[64], bob_s[64];
} fx;

#define MAX_LINES 16

static void pause_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000 * 1000 };

	nanosleep(&t, NULL);
}

/* The JSON objects of @text, one a line; lines that are not JSON objects
 * (log lines on stderr) are skipped. Returns how many went into @out. */
static size_t json_lines(const char *text, json_t *out[MAX_LINES])
{
	size_t n = 0;

	for (const char *p = text; *p;) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		json_error_t jerr;

		if (len && *p == '{') {
			json_t *j = json_loadb(p, len, 0, &jerr);

			if (!j)
				fail_msg("not a JSON line: '%.*s': %s", (int)len, p, jerr.text);
			if (n == MAX_LINES)
				fail_msg("more than %d JSON lines in '%s'", MAX_LINES, text);
			out[n++] = j;
		}
		p += len + (end ? 1 : 0);
	}
	return n;
}

static void json_lines_free(json_t *j[], size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(j[i]);
}

/* Whether @j is {"queue_empty": true, "drained": @drained}. */
static int is_queue_empty(const json_t *j, json_int_t drained)
{
	return json_is_true(json_object_get(j, "queue_empty")) &&
	       json_integer_value(json_object_get(j, "drained")) == drained &&
	       json_object_size(j) == 2;
}

/* Wait until the file at @path says @needle (a listener is caught up), or fail. */
static void wait_for_output(const char *path, const char *needle)
{
	for (int i = 0; i < 200; i++) {
		char *out = th_read_file(path);
		int found = strstr(out, needle) != NULL;

		free(out);
		if (found)
			return;
		pause_ms(100);
	}
	fail_msg("no '%s' in '%s' within 20 s", needle, path);
}

static const char *client_path(void)
{
	const char *p = getenv("FERRY_TEST_CLIENT");

	return p && *p ? p : "build/asan/ferry-client";
}

static int setup(void **state)
{
	char extra[1024], cmd[1024], *cfg, *path;
	int admin = th_free_port();

	fx.conninfo = th_db_new("cli");
	fx.port = th_free_port();
	fx.tls_port = th_free_port();
	fx.cert = th_write_file("cli-cert.pem", "");
	fx.key = th_write_file("cli-key.pem", "");
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
		 "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
		 "-keyout '%s' -out '%s' 2>/dev/null",
		 fx.key, fx.cert);
	if (system(cmd) != 0)
		return -1;
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = 127.0.0.1:%d\ntls_cert = %s\n"
		 "tls_key = %s\n",
		 fx.port, fx.tls_port, fx.cert, fx.key);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("cli.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, admin);
	th_ferryd_wait_ready(&fx.d, 10000); /* the store connects in the background */
	th_device_create(&fx.d, TOKEN, "alice", &fx.alice, fx.alice_s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.bob, fx.bob_s);
	unlink(path);
	free(path);
	free(cfg);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	free(fx.conninfo);
	free(fx.cert);
	free(fx.key);
	return status ? -1 : 0;
}

/* The common start of a ferry-client command line for @device; returns the
 * number of arguments written to @argv (@dev and @server are its storage). */
static int client_argv(const char **argv, char dev[32], int64_t device, const char *secret,
		       const char *server, int tls)
{
	int n = 0;

	snprintf(dev, 32, "%lld", (long long)device);
	argv[n++] = client_path();
	argv[n++] = "--server";
	argv[n++] = server;
	argv[n++] = "--device";
	argv[n++] = dev;
	argv[n++] = "--secret";
	argv[n++] = secret;
	if (tls) {
		argv[n++] = "--tls";
		argv[n++] = "--ca";
		argv[n++] = fx.cert;
	}
	return n;
}

/* Run `ferry-client` as bob: send @text to @to; retried while the server
 * cannot make it safe (NACK retry_later). Returns the ACK line (json_decref it). */
static json_t *send_until_acked(const char *server, int tls, const char *to, const char *text)
{
	char dev[32];
	char *out_path = th_write_file("send.out", "");
	char *out = NULL;
	json_t *lines[MAX_LINES];
	size_t n;

	for (int i = 0; i < 100; i++) {
		const char *argv[16];
		int argc = client_argv(argv, dev, fx.bob, fx.bob_s, server, tls), status;

		argv[argc++] = "send";
		argv[argc++] = "--to";
		argv[argc++] = to;
		argv[argc++] = "--text";
		argv[argc++] = text;
		argv[argc] = NULL;
		status = th_wait(th_spawn(argv, out_path));
		free(out);
		out = th_read_file(out_path);
		if (status == 0)
			break;
		if (!strstr(out, "retry_later"))
			fail_msg("ferry-client send failed: %s", out);
		pause_ms(100);
	}
	n = json_lines(out, lines);
	if (n != 1 || !json_object_get(lines[0], "ack"))
		fail_msg("ferry-client send printed no ACK: '%s'", out);
	unlink(out_path);
	free(out_path);
	free(out);
	return lines[0];
}

static const char *ack_status(const json_t *ack)
{
	return json_string_value(json_object_get(json_object_get(ack, "ack"), "status"));
}

static json_int_t ack_server_id(const json_t *ack)
{
	return json_integer_value(json_object_get(json_object_get(ack, "ack"), "server_id"));
}

static void quick_start(int tls)
{
	char server[64], dev[32];
	char *listen_out = th_write_file("listen.out", "");
	char *got;
	const char *argv[16];
	json_t *lines[MAX_LINES], *line, *ack;
	pid_t listener;
	size_t nlines;
	int n;

	snprintf(server, sizeof(server), "127.0.0.1:%d", tls ? fx.tls_port : fx.port);
	n = client_argv(argv, dev, fx.alice, fx.alice_s, server, tls);
	argv[n++] = "listen";
	argv[n++] = "--count";
	argv[n++] = "1";
	argv[n++] = "--timeout";
	argv[n++] = "30";
	argv[n] = NULL;
	listener = th_spawn(argv, listen_out);
	/* Connected and caught up: what is sent now is delivered live. */
	wait_for_output(listen_out, "\"queue_empty\"");

	ack = send_until_acked(server, tls, "alice", "hello from bob");
	assert_string_equal(ack_status(ack), "delivered");

	assert_int_equal(th_wait(listener), 0);
	got = th_read_file(listen_out);
	nlines = json_lines(got, lines);
	if (nlines != 2 || !is_queue_empty(lines[0], 0))
		fail_msg("listen printed not a queue_empty line and an envelope: '%s'", got);
	line = lines[1];
	assert_string_equal(json_string_value(json_object_get(line, "from_user")), "bob");
	assert_int_equal(json_integer_value(json_object_get(line, "from_device")), fx.bob);
	/* base64 of "hello from bob" */
	assert_string_equal(json_string_value(json_object_get(line, "payload_b64")),
			    "aGVsbG8gZnJvbSBib2I=");
	assert_true(json_integer_value(json_object_get(line, "id")) == ack_server_id(ack));
	json_lines_free(lines, nlines);
	json_decref(ack);
	free(got);
	unlink(listen_out);
	free(listen_out);
}

static void test_quick_start_tcp(void **state)
{
	quick_start(0);
}

static void test_quick_start_tls(void **state)
{
	quick_start(1);
}

static void test_wrong_secret_exits_1(void **state)
{
	char server[64], dev[32];
	char *out_path = th_write_file("bad.out", "");
	char *out;

	snprintf(server, sizeof(server), "127.0.0.1:%d", fx.port);
	snprintf(dev, sizeof(dev), "%lld", (long long)fx.alice);
	assert_int_equal(th_wait(th_spawn((const char *[]){ client_path(), "--server", server,
							    "--device", dev, "--secret", "nope",
							    "listen", "--timeout", "10", NULL },
					  out_path)),
			 1);
	out = th_read_file(out_path);
	assert_non_null(strstr(out, "auth_failed"));
	assert_null(strstr(out, "nope"));
	free(out);
	unlink(out_path);
	free(out_path);
}

/* `listen --until-empty` as @device; its output (free it), exit status 0 checked. */
static char *listen_until_empty(int64_t device, const char *secret, const char *server)
{
	char dev[32];
	char *out_path = th_write_file("drain.out", ""), *out;
	const char *argv[16];
	int n = client_argv(argv, dev, device, secret, server, 0), status;

	argv[n++] = "listen";
	argv[n++] = "--until-empty";
	argv[n++] = "--timeout";
	argv[n++] = "30";
	argv[n] = NULL;
	status = th_wait(th_spawn(argv, out_path));
	out = th_read_file(out_path);
	if (status != 0)
		fail_msg("listen --until-empty exited %d: '%s'", status, out);
	unlink(out_path);
	free(out_path);
	return out;
}

/*
 * The offline store through the CLI: three envelopes to a device that is not
 * connected are ACKed "stored"; `listen --until-empty` then prints them in
 * the order they were sent, a queue_empty line with drained 3, and exits 0.
 * Its acknowledgements reach the server: a later drain finds nothing.
 */
static void test_offline_until_empty(void **state)
{
	static const char *const texts[3] = { "first", "second", "third" };
	static const char *const b64[3] = { "Zmlyc3Q=", "c2Vjb25k", "dGhpcmQ=" };
	char server[64], carol_s[64];
	json_t *acks[3], *lines[MAX_LINES];
	json_int_t prev_client_id = 0;
	int64_t carol;
	size_t n;
	char *out;
	int clean = 0;

	snprintf(server, sizeof(server), "127.0.0.1:%d", fx.port);
	th_device_create(&fx.d, TOKEN, "carol", &carol, carol_s);
	for (int i = 0; i < 3; i++) {
		acks[i] = send_until_acked(server, 0, "carol", texts[i]);
		assert_string_equal(ack_status(acks[i]), "stored");
	}

	out = listen_until_empty(carol, carol_s, server);
	n = json_lines(out, lines);
	if (n != 4)
		fail_msg("expected three envelopes and queue_empty, got '%s'", out);
	for (int i = 0; i < 3; i++) {
		const json_t *l = lines[i];
		json_int_t cid = json_integer_value(json_object_get(l, "client_id"));

		if (!json_object_get(l, "payload_b64"))
			fail_msg("line %d is not an envelope: '%s'", i + 1, out);
		assert_string_equal(json_string_value(json_object_get(l, "payload_b64")), b64[i]);
		assert_string_equal(json_string_value(json_object_get(l, "from_user")), "bob");
		assert_int_equal(json_integer_value(json_object_get(l, "from_device")), fx.bob);
		assert_true(json_integer_value(json_object_get(l, "id")) == ack_server_id(acks[i]));
		assert_true(cid > prev_client_id);
		prev_client_id = cid;
	}
	if (!is_queue_empty(lines[3], 3))
		fail_msg("the last line is not {\"queue_empty\": true, \"drained\": 3}: '%s'", out);
	json_lines_free(lines, n);
	free(out);

	/*
	 * Delivery is at-least-once, so a drain right after may still see a copy
	 * whose acknowledgement the server is applying; within a few tries the
	 * queue must be empty.
	 */
	for (int i = 0; i < 20 && !clean; i++) {
		out = listen_until_empty(carol, carol_s, server);
		n = json_lines(out, lines);
		clean = n == 1 && is_queue_empty(lines[0], 0);
		json_lines_free(lines, n);
		free(out);
		if (!clean)
			pause_ms(250);
	}
	assert_true(clean);
	for (int i = 0; i < 3; i++)
		json_decref(acks[i]);
}

/* One run of ferry-client as @device with @args (NULL-terminated); its
 * output (free it); the exit status must be 0. */
static char *client_run(int64_t device, const char *secret, const char *server,
			const char *const *args)
{
	char dev[32];
	char *out_path = th_write_file("run.out", ""), *out;
	const char *argv[24];
	int n = client_argv(argv, dev, device, secret, server, 0), status;

	while (*args)
		argv[n++] = *args++;
	argv[n] = NULL;
	status = th_wait(th_spawn(argv, out_path));
	out = th_read_file(out_path);
	if (status != 0)
		fail_msg("ferry-client %s exited %d: '%s'", argv[7], status, out);
	unlink(out_path);
	free(out_path);
	return out;
}

/* 1 if @l is a receipt line of @kind from @from naming @device and only @id. */
static int is_receipt(const json_t *l, const char *kind, const char *from, int64_t device,
		      json_int_t id)
{
	const json_t *ids = json_object_get(l, "ids");

	return json_is_string(json_object_get(l, "receipt")) &&
	       strcmp(json_string_value(json_object_get(l, "receipt")), kind) == 0 &&
	       strcmp(json_string_value(json_object_get(l, "from_user")), from) == 0 &&
	       json_integer_value(json_object_get(l, "device")) == device &&
	       json_array_size(ids) == 1 && json_integer_value(json_array_get(ids, 0)) == id;
}

/*
 * Receipts through the CLI: bob's message is taken by erin's `listen`
 * (delivered), erin sends `read` for it; bob was away, and his `listen
 * --until-empty` prints both receipts.
 */
static void test_receipts(void **state)
{
	char server[64], erin_s[64], ids[32], bobdev[32];
	json_t *lines[MAX_LINES], *ack;
	json_int_t cid;
	int64_t erin;
	size_t n;
	char *out;
	int delivered = 0, read = 0;

	(void)state;
	snprintf(server, sizeof(server), "127.0.0.1:%d", fx.port);
	th_device_create(&fx.d, TOKEN, "erin", &erin, erin_s);
	ack = send_until_acked(server, 0, "erin", "read me");
	assert_string_equal(ack_status(ack), "stored");
	json_decref(ack);
	out = listen_until_empty(erin, erin_s, server);
	n = json_lines(out, lines);
	if (n != 2 || !json_object_get(lines[0], "client_id"))
		fail_msg("expected an envelope and queue_empty, got '%s'", out);
	cid = json_integer_value(json_object_get(lines[0], "client_id"));
	json_lines_free(lines, n);
	free(out);

	snprintf(ids, sizeof(ids), "%lld", (long long)cid);
	snprintf(bobdev, sizeof(bobdev), "%lld", (long long)fx.bob);
	out = client_run(erin, erin_s, server,
			 (const char *[]){ "read", "--to", "bob", "--to-device", bobdev, "--ids",
					   ids, "--timeout", "30", NULL });
	n = json_lines(out, lines);
	if (n != 1 || strcmp(ack_status(lines[0]) ? ack_status(lines[0]) : "", "stored") != 0)
		fail_msg("read printed no ACK stored: '%s'", out);
	json_lines_free(lines, n);
	free(out);

	/* The delivered receipt is made when erin's listen acknowledges. */
	out = listen_until_empty(fx.bob, fx.bob_s, server);
	n = json_lines(out, lines);
	for (size_t i = 0; i < n; i++) {
		delivered += is_receipt(lines[i], "delivered", "erin", fx.bob, cid);
		read += is_receipt(lines[i], "read", "erin", fx.bob, cid);
	}
	/* A read that comes while its delivered is still being coalesced
	 * supersedes it: the delivered one may not come. */
	if (delivered > 1 || read != 1 || !is_queue_empty(lines[n - 1], (json_int_t)n - 1))
		fail_msg("expected erin's read receipt, got '%s'", out);
	json_lines_free(lines, n);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quick_start_tcp),
		cmocka_unit_test(test_quick_start_tls),
		cmocka_unit_test(test_wrong_secret_exits_1),
		cmocka_unit_test(test_offline_until_empty),
		cmocka_unit_test(test_receipts),
	};

	return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
