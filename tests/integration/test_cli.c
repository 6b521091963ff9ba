/*
 * test_cli.c - the quick start of the README, as a test: ferryd, and two
 * ferry-client processes (one listening, one sending), over TCP and TLS.
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

/* Run `ferry-client` as bob: send @text to alice; retried while alice's
 * listener is not connected yet (NACK retry_later). Returns the last output. */
static char *send_until_acked(const char *server, int tls, const char *text)
{
	char dev[32];
	char *out_path = th_write_file("send.out", "");
	char *out = NULL;

	for (int i = 0; i < 100; i++) {
		const char *argv[16];
		int n = client_argv(argv, dev, fx.bob, fx.bob_s, server, tls), status;
		struct timespec pause = { 0, 100 * 1000 * 1000 };

		argv[n++] = "send";
		argv[n++] = "--to";
		argv[n++] = "alice";
		argv[n++] = "--text";
		argv[n++] = text;
		argv[n] = NULL;
		status = th_wait(th_spawn(argv, out_path));
		free(out);
		out = th_read_file(out_path);
		if (status == 0)
			break;
		/* Only "alice is not connected yet" may be retried. */
		if (!strstr(out, "retry_later"))
			fail_msg("ferry-client send failed: %s", out);
		nanosleep(&pause, NULL);
	}
	unlink(out_path);
	free(out_path);
	return out;
}

static void quick_start(int tls)
{
	char server[64], dev[32];
	char *listen_out = th_write_file("listen.out", "");
	char *send_out, *got;
	const char *argv[16];
	json_error_t jerr;
	json_t *line, *ack;
	pid_t listener;
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

	send_out = send_until_acked(server, tls, "hello from bob");
	ack = json_loads(send_out, 0, &jerr);
	assert_non_null(ack);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(ack, "ack"), "status")),
		"delivered");

	assert_int_equal(th_wait(listener), 0);
	got = th_read_file(listen_out);
	line = json_loads(got, JSON_DISABLE_EOF_CHECK, &jerr);
	if (!line)
		fail_msg("listen printed no JSON line: '%s'", got);
	assert_string_equal(json_string_value(json_object_get(line, "from_user")), "bob");
	assert_int_equal(json_integer_value(json_object_get(line, "from_device")), fx.bob);
	/* base64 of "hello from bob" */
	assert_string_equal(json_string_value(json_object_get(line, "payload_b64")),
			    "aGVsbG8gZnJvbSBib2I=");
	assert_true(json_integer_value(json_object_get(line, "id")) ==
		    json_integer_value(json_object_get(json_object_get(ack, "ack"), "server_id")));
	json_decref(line);
	json_decref(ack);
	free(got);
	free(send_out);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quick_start_tcp),
		cmocka_unit_test(test_quick_start_tls),
		cmocka_unit_test(test_wrong_secret_exits_1),
	};

	return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
