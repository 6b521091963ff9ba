/*
 * test_client.c - unit tests for libferry and ferry-client's helpers.
 *
 * Pure parts first: backoff, texts, final codes, the dedup window, the SEND
 * queue, argument parsing and the JSON lines. Then the library as a whole
 * against a scripted server in the same thread: a loopback listener (plain
 * or TLS, with a certificate made here) whose every step alternates with
 * ferry_client_run(), speaking frames through the real codec. No ferryd, no
 * database: what is checked is what the client does with each frame.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "client/client_int.h"
#include "client/cli_int.h"
#include "client/ferry.h"
#include "gateway/proto.h"
#include "common/log.h"
#include "common/banned.h"

/* ---- pure helpers ---- */

static void test_backoff(void **state)
{
	uint64_t rng = 1;

	assert_int_equal(fc_backoff_ms(500, 30000, 0, 500), 500);
	assert_int_equal(fc_backoff_ms(500, 30000, 0, 501), 0);
	assert_int_equal(fc_backoff_ms(500, 30000, 1, 1000), 1000);
	assert_int_equal(fc_backoff_ms(500, 30000, 6, 30000), 30000); /* 32000 capped */
	assert_int_equal(fc_backoff_ms(500, 30000, 6, 30001), 0);
	assert_int_equal(fc_backoff_ms(500, 30000, 63, 29999), 29999);
	assert_int_equal(fc_backoff_ms(500, 30000, 64, 29999), 29999);
	assert_int_equal(fc_backoff_ms(500, 30000, 1000, UINT64_MAX), UINT64_MAX % 30001);
	assert_int_equal(fc_backoff_ms(0, 30000, 5, 12345), 0);
	assert_int_equal(fc_backoff_ms(1, UINT64_MAX, 70, 77), 77);
	for (unsigned a = 0; a < 80; a++) {
		for (int i = 0; i < 200; i++) {
			uint64_t d = fc_backoff_ms(100, 10000, a, fc_rng_next(&rng));
			uint64_t win = a < 7 ? (UINT64_C(100) << a) : 10000;

			assert_true(d <= (win < 10000 ? win : 10000));
		}
	}
}

static void test_text_and_codes(void **state)
{
	char t[8];

	fc_text_copy(t, sizeof(t), (const uint8_t *)"ab\ncd\xff", 6);
	assert_string_equal(t, "ab?cd?");
	fc_text_copy(t, sizeof(t), (const uint8_t *)"0123456789", 10);
	assert_string_equal(t, "0123456");
	fc_text_copy(t, sizeof(t), NULL, 0);
	assert_string_equal(t, "");
	assert_true(fc_error_is_final(PROTO_ERR_AUTH_FAILED));
	assert_true(fc_error_is_final(PROTO_ERR_UNSUPPORTED_VERSION));
	assert_true(fc_error_is_final(PROTO_ERR_DEVICE_DELETED));
	assert_false(fc_error_is_final(PROTO_ERR_REPLACED));
	assert_false(fc_error_is_final(PROTO_ERR_SHUTTING_DOWN));
	assert_false(fc_error_is_final(99));
	assert_true(fc_nack_is_final(PROTO_NACK_UNKNOWN_RECIPIENT));
	assert_true(fc_nack_is_final(PROTO_NACK_TOO_LARGE));
	assert_true(fc_nack_is_final(PROTO_NACK_INVALID));
	assert_true(fc_nack_is_final(77));
	assert_false(fc_nack_is_final(PROTO_NACK_RETRY_LATER));
	assert_false(fc_nack_is_final(PROTO_NACK_QUEUE_FULL));
}

static void test_dedup_window(void **state)
{
	struct fc_dedup d;

	assert_int_equal(fc_dedup_init(&d, 0), FERRY_EINVAL);
	assert_int_equal(fc_dedup_init(&d, FERRY_MAX_DEDUP_WINDOW + 1), FERRY_EINVAL);
	assert_int_equal(fc_dedup_init(&d, FERRY_DEFAULT_DEDUP_WINDOW), FERRY_OK);
	assert_false(fc_dedup_seen(&d, 1, 1));
	for (uint64_t i = 0; i < FERRY_DEFAULT_DEDUP_WINDOW; i++)
		fc_dedup_add(&d, 7, 1000 + i);
	for (uint64_t i = 0; i < FERRY_DEFAULT_DEDUP_WINDOW; i++)
		assert_true(fc_dedup_seen(&d, 7, 1000 + i));
	assert_false(fc_dedup_seen(&d, 8, 1000)); /* the device is part of the key */
	fc_dedup_add(&d, 8, 1000);		  /* evicts (7, 1000), the oldest */
	assert_false(fc_dedup_seen(&d, 7, 1000));
	assert_true(fc_dedup_seen(&d, 7, 1001));
	assert_true(fc_dedup_seen(&d, 8, 1000));
	fc_dedup_release(&d);
	fc_dedup_release(&d); /* twice is harmless */
}

/* Against a plain list as the model, through many evictions in a small window. */
static void test_dedup_model(void **state)
{
	enum { CAP = 5, N = 3000 };
	uint64_t model[CAP][2], rng = 42;
	size_t n = 0, pos = 0;
	struct fc_dedup d;

	assert_int_equal(fc_dedup_init(&d, CAP), FERRY_OK);
	for (int i = 0; i < N; i++) {
		uint64_t dev = fc_rng_next(&rng) % 4, cid = fc_rng_next(&rng) % 8;
		int in_model = 0;

		for (size_t j = 0; j < n; j++)
			in_model |= model[j][0] == dev && model[j][1] == cid;
		assert_int_equal(fc_dedup_seen(&d, dev, cid), in_model);
		if (in_model)
			continue;
		fc_dedup_add(&d, dev, cid);
		model[pos][0] = dev;
		model[pos][1] = cid;
		pos = (pos + 1) % CAP;
		if (n < CAP)
			n++;
	}
	fc_dedup_release(&d);
}

static void test_sendq(void **state)
{
	struct fc_sendq q;
	struct fc_send *s;

	fc_sendq_init(&q, 3, 100);
	assert_int_equal(fc_sendq_add(&q, 1, (const uint8_t *)"aaaa", 4, 3, 0), FERRY_OK);
	assert_int_equal(fc_sendq_add(&q, 2, (const uint8_t *)"bbbb", 4, 3, 0), FERRY_OK);
	assert_int_equal(fc_sendq_add(&q, 2, (const uint8_t *)"cccc", 4, 3, 0), FERRY_EEXIST);
	assert_int_equal(fc_sendq_add(&q, 9, (const uint8_t *)"x", 93, 3, 0), FERRY_ELIMIT);
	assert_int_equal(fc_sendq_add(&q, 3, (const uint8_t *)"cccc", 4, 3, 0), FERRY_OK);
	assert_int_equal(fc_sendq_add(&q, 4, (const uint8_t *)"dddd", 4, 3, 0), FERRY_ELIMIT);
	assert_int_equal(q.count, 3);
	assert_int_equal(q.bytes, 12);

	/* In order; a waiting entry is skipped until due, not blocking the rest. */
	s = fc_sendq_ready(&q, NULL, 0);
	assert_int_equal(s->client_id, 1);
	assert_memory_equal(s->frame, "aaaa", 4);
	fc_sendq_wait(s, 1000, 50);
	s->attempts++;
	assert_int_equal(fc_sendq_next_retry(&q), 1050);
	s = fc_sendq_ready(&q, NULL, 1049);
	assert_int_equal(s->client_id, 2);
	s->state = FC_SEND_INFLIGHT;
	s = fc_sendq_ready(&q, s->next, 1049);
	assert_int_equal(s->client_id, 3);
	s->state = FC_SEND_INFLIGHT;
	assert_null(fc_sendq_ready(&q, NULL, 1049));
	assert_int_equal(fc_sendq_ready(&q, NULL, 1050)->client_id, 1);

	/* A reconnect puts in-flight entries back; waiting ones keep waiting. */
	fc_sendq_requeue(&q);
	assert_int_equal(fc_sendq_ready(&q, NULL, 0)->client_id, 2);
	assert_int_equal(fc_sendq_find(&q, 1)->state, FC_SEND_WAITING);

	s = fc_sendq_find(&q, 2); /* the middle */
	fc_sendq_unlink(&q, s);
	free(s);
	assert_null(fc_sendq_find(&q, 2));
	assert_int_equal(q.head->next->client_id, 3);
	assert_int_equal(q.tail->prev->client_id, 1);
	s = fc_sendq_find(&q, 3); /* the tail */
	fc_sendq_unlink(&q, s);
	free(s);
	assert_ptr_equal(q.head, q.tail);
	assert_int_equal(q.count, 1);
	assert_int_equal(q.bytes, 4);
	assert_int_equal(fc_sendq_add(&q, 5, (const uint8_t *)"eeee", 4, 3, 0), FERRY_OK);
	fc_sendq_release(&q);
	assert_null(q.head);
	assert_int_equal(q.count, 0);
	assert_int_equal(fc_sendq_next_retry(&q), UINT64_MAX);
}

/* ---- ferry-client's arguments and output ---- */

static enum cli_parse_result parse(struct cli_opts *o, char *err, const char *env, ...)
{
	char *argv[32] = { "ferry-client" };
	int argc = 1;
	va_list ap;

	va_start(ap, env);
	for (const char *a; (a = va_arg(ap, const char *));)
		argv[argc++] = (char *)a;
	va_end(ap);
	err[0] = '\0';
	return cli_parse(argc, argv, env, o, err, 256);
}

#define BASE "--server", "localhost:7222", "--device", "12"

static void test_cli_parse_ok(void **state)
{
	struct cli_opts o;
	char err[256];

	assert_int_equal(parse(&o, err, NULL, BASE, "--secret", "pw", "listen", NULL),
			 CLI_PARSE_OK);
	assert_string_equal(o.host, "localhost");
	assert_string_equal(o.port, "7222");
	assert_int_equal(o.device, 12);
	assert_string_equal(o.secret, "pw");
	assert_int_equal(o.cmd, CLI_LISTEN);
	assert_int_equal(o.count, 0);
	assert_int_equal(o.timeout_s, 0);
	assert_false(o.tls);

	assert_int_equal(parse(&o, err, "envpw", "listen", "--count=3", BASE, "--timeout", "9",
			       "--tls", "--ca", "/x.pem", "--server-name", "h.example", NULL),
			 CLI_PARSE_OK);
	assert_string_equal(o.secret, "envpw");
	assert_int_equal(o.count, 3);
	assert_int_equal(o.timeout_s, 9);
	assert_true(o.tls);
	assert_string_equal(o.ca, "/x.pem");
	assert_string_equal(o.server_name, "h.example");

	assert_int_equal(parse(&o, err, "envpw", "--server", "[::1]:1", "--device", "1", "--secret",
			       "flag-wins", "send", "--to", "bob", "--text", "--hi", "--ttl", "0",
			       NULL),
			 CLI_PARSE_OK);
	assert_string_equal(o.host, "::1");
	assert_string_equal(o.port, "1");
	assert_string_equal(o.secret, "flag-wins");
	assert_int_equal(o.cmd, CLI_SEND);
	assert_string_equal(o.to, "bob");
	assert_string_equal(o.text, "--hi");
	assert_null(o.file);
	assert_int_equal(o.ttl, 0);
	assert_int_equal(o.timeout_s, CLI_SEND_DEFAULT_TIMEOUT_S);

	assert_false(o.until_empty);
	assert_int_equal(parse(&o, err, NULL, BASE, "--secret", "pw", "listen", "--until-empty",
			       "--timeout", "5", NULL),
			 CLI_PARSE_OK);
	assert_true(o.until_empty);
	assert_int_equal(o.timeout_s, 5);

	assert_int_equal(parse(&o, err, NULL, "--help", NULL), CLI_PARSE_HELP);
	assert_int_equal(parse(&o, err, NULL, "send", "-h", NULL), CLI_PARSE_HELP);
	assert_int_equal(parse(&o, err, NULL, "read", "--help", NULL), CLI_PARSE_HELP);
}

static void test_cli_parse_read(void **state)
{
	char many[512 * 3 + 1], err[256];
	struct cli_opts o;
	size_t len = 0;

	assert_int_equal(parse(&o, err, NULL, BASE, "--secret", "pw", "read", "--to", "alice",
			       "--ids", "5", NULL),
			 CLI_PARSE_OK);
	assert_int_equal(o.cmd, CLI_READ);
	assert_int_equal(o.device, 12); /* ours */
	assert_string_equal(o.to, "alice");
	assert_int_equal(o.to_device, 0);
	assert_int_equal(o.nids, 1);
	assert_int_equal(o.ids[0], 5);
	assert_int_equal(o.timeout_s, CLI_SEND_DEFAULT_TIMEOUT_S);

	assert_int_equal(parse(&o, err, NULL, "read", "--ids=0,18446744073709551615,7",
			       "--to-device", "3", BASE, "--secret", "pw", "--to", "a.b@c",
			       "--timeout", "4", NULL),
			 CLI_PARSE_OK);
	assert_int_equal(o.to_device, 3);
	assert_int_equal(o.nids, 3);
	assert_int_equal(o.ids[0], 0);
	assert_true(o.ids[1] == UINT64_MAX);
	assert_int_equal(o.ids[2], 7);
	assert_int_equal(o.timeout_s, 4);

	/* The most one RECEIPT carries, and one more. */
	for (int i = 0; i < 512; i++)
		len += (size_t)snprintf(many + len, sizeof(many) - len, "%s%d", i ? "," : "",
					i % 10);
	assert_int_equal(parse(&o, err, NULL, BASE, "--secret", "pw", "read", "--to", "alice",
			       "--ids", many, NULL),
			 CLI_PARSE_OK);
	assert_int_equal(o.nids, 512);
	assert_int_equal(o.ids[511], 1);
	snprintf(many + len, sizeof(many) - len, ",9");
	assert_int_equal(parse(&o, err, NULL, BASE, "--secret", "pw", "read", "--to", "alice",
			       "--ids", many, NULL),
			 CLI_PARSE_USAGE);
	assert_non_null(strstr(err, "1 to 512"));
}

/* Each line: the arguments, then a piece of the expected message. */
static void test_cli_parse_errors(void **state)
{
	static const char *const cases[][16] = {
		{ "missing command", BASE, "--secret", "s" },
		{ "more than one command", BASE, "--secret", "s", "listen", "send" },
		{ "unknown option '--bogus'", BASE, "--secret", "s", "listen", "--bogus" },
		{ "unexpected argument 'x'", BASE, "--secret", "s", "listen", "x" },
		{ "given twice", BASE, "--secret", "s", "listen", "--count", "1", "--count", "2" },
		{ "needs a value", BASE, "--secret", "s", "listen", "--count" },
		{ "takes no value", BASE, "--secret", "s", "--tls=1", "listen" },
		{ "missing --server", "--device", "1", "--secret", "s", "listen" },
		{ "--server must be", "--server", "host", "--device", "1", "--secret", "s",
		  "listen" },
		{ "--server must be", "--server", "::1:80", "--device", "1", "--secret", "s",
		  "listen" },
		{ "--server must be", "--server", "h:0", "--device", "1", "--secret", "s",
		  "listen" },
		{ "--server must be", "--server", "h:65536", "--device", "1", "--secret", "s",
		  "listen" },
		{ "--server must be", "--server", ":80", "--device", "1", "--secret", "s",
		  "listen" },
		{ "missing --device", "--server", "h:1", "--secret", "s", "listen" },
		{ "--device must be", "--server", "h:1", "--device", "0", "--secret", "s",
		  "listen" },
		{ "--device must be", "--server", "h:1", "--device", "-3", "--secret", "s",
		  "listen" },
		{ "--device must be", "--server", "h:1", "--device", "12x", "--secret", "s",
		  "listen" },
		{ "--device must be", "--server", "h:1", "--device", " 1", "--secret", "s",
		  "listen" },
		{ "missing --secret", BASE, "listen" },
		{ "need --tls", BASE, "--secret", "s", "--ca", "f", "listen" },
		{ "not valid with 'listen'", BASE, "--secret", "s", "listen", "--to", "bob" },
		{ "not valid with 'send'", BASE, "--secret", "s", "send", "--count", "1" },
		{ "not valid with 'send'", BASE, "--secret", "s", "send", "--to", "b", "--text",
		  "x", "--until-empty" },
		{ "takes no value", BASE, "--secret", "s", "listen", "--until-empty=1" },
		{ "--count must be", BASE, "--secret", "s", "listen", "--count", "0" },
		{ "--timeout must be", BASE, "--secret", "s", "listen", "--timeout", "0" },
		{ "missing --to", BASE, "--secret", "s", "send", "--text", "x" },
		{ "--to must be", BASE, "--secret", "s", "send", "--to", "a b", "--text", "x" },
		{ "exactly one of", BASE, "--secret", "s", "send", "--to", "b" },
		{ "exactly one of", BASE, "--secret", "s", "send", "--to", "b", "--text", "x",
		  "--file", "f" },
		{ "--ttl must be", BASE, "--secret", "s", "send", "--to", "b", "--text", "x",
		  "--ttl", "4294967296" },
		{ "more than one command", BASE, "--secret", "s", "send", "read" },
		{ "read: missing --to", BASE, "--secret", "s", "read", "--ids", "1" },
		{ "read: --to must be", BASE, "--secret", "s", "read", "--to", "", "--ids", "1" },
		{ "read: missing --ids", BASE, "--secret", "s", "read", "--to", "b" },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids", "" },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids", "1,,2" },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids", "1," },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids", "1, 2" },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids", "-1" },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids",
		  "18446744073709551616" },
		{ "--ids must be", BASE, "--secret", "s", "read", "--to", "b", "--ids",
		  "000000000000000000000001" },
		{ "--to-device must be", BASE, "--secret", "s", "read", "--to", "b", "--ids", "1",
		  "--to-device", "x" },
		{ "not valid with 'read'", BASE, "--secret", "s", "read", "--to", "b", "--ids", "1",
		  "--text", "x" },
		{ "not valid with 'read'", BASE, "--secret", "s", "read", "--to", "b", "--ids", "1",
		  "--count", "1" },
		{ "not valid with 'send'", BASE, "--secret", "s", "send", "--to", "b", "--text",
		  "x", "--ids", "1" },
		{ "not valid with 'listen'", BASE, "--secret", "s", "listen", "--to-device", "1" },
	};
	char *argv[16], err[256];
	struct cli_opts o;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int argc = 1;

		argv[0] = "ferry-client";
		for (int j = 1; j < 16 && cases[i][j]; j++)
			argv[argc++] = (char *)cases[i][j];
		err[0] = '\0';
		assert_int_equal(cli_parse(argc, argv, NULL, &o, err, sizeof(err)),
				 CLI_PARSE_USAGE);
		if (!strstr(err, cases[i][0]))
			fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i][0]);
	}
}

static void test_cli_secret_rules(void **state)
{
	char long_secret[PROTO_MAX_SECRET + 2], err[256];
	struct cli_opts o;

	memset(long_secret, 'k', sizeof(long_secret) - 1);
	long_secret[sizeof(long_secret) - 1] = '\0';
	assert_int_equal(parse(&o, err, long_secret, BASE, "listen", NULL), CLI_PARSE_USAGE);
	assert_non_null(strstr(err, "over 256"));
	assert_null(strstr(err, "kkkk")); /* never the secret */
	assert_int_equal(parse(&o, err, "", BASE, "listen", NULL), CLI_PARSE_USAGE);
	long_secret[PROTO_MAX_SECRET] = '\0';
	assert_int_equal(parse(&o, err, long_secret, BASE, "listen", NULL), CLI_PARSE_OK);
}

static void test_cli_numbers(void **state)
{
	uint64_t v;

	assert_int_equal(cli_parse_u64("0", 0, 5, &v), FERRY_OK);
	assert_int_equal(v, 0);
	assert_int_equal(cli_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), FERRY_OK);
	assert_true(v == UINT64_MAX);
	assert_int_equal(cli_parse_u64("18446744073709551616", 0, UINT64_MAX, &v), FERRY_EINVAL);
	assert_int_equal(cli_parse_u64("", 0, 5, &v), FERRY_EINVAL);
	assert_int_equal(cli_parse_u64("+1", 0, 5, &v), FERRY_EINVAL);
	assert_int_equal(cli_parse_u64("6", 0, 5, &v), FERRY_EINVAL);
	assert_int_equal(cli_parse_u64("1 ", 0, 5, &v), FERRY_EINVAL);
	assert_int_equal(cli_parse_u64(NULL, 0, 5, &v), FERRY_EINVAL);
}

static void test_cli_json(void **state)
{
	struct ferry_envelope env = { 7, "alice", 3, 99, 1700000000123, (const uint8_t *)"hi!", 3 };
	char *s;

	s = cli_json_envelope(&env);
	assert_string_equal(s, "{\"id\": 7, \"from_user\": \"alice\", \"from_device\": 3, "
			       "\"client_id\": 99, \"timestamp\": 1700000000123, "
			       "\"payload_b64\": \"aGkh\"}");
	free(s);
	env.payload = NULL;
	env.payload_len = 0;
	s = cli_json_envelope(&env);
	assert_non_null(strstr(s, "\"payload_b64\": \"\""));
	free(s);
	s = cli_json_ack(5, 6, PROTO_ACK_DELIVERED);
	assert_string_equal(s, "{\"ack\": {\"client_id\": 5, \"server_id\": 6, "
			       "\"status\": \"delivered\"}}");
	free(s);
	s = cli_json_ack(5, 6, PROTO_ACK_STORED);
	assert_non_null(strstr(s, "\"stored\""));
	free(s);
	s = cli_json_nack(5, "retry_later", "busy \"now\"");
	assert_string_equal(s, "{\"nack\": {\"client_id\": 5, \"reason\": \"retry_later\", "
			       "\"text\": \"busy \\\"now\\\"\"}}");
	free(s);
	s = cli_json_receipt(&(struct ferry_receipt){
		9, PROTO_RECEIPT_READ, "bob", 4, (const uint64_t[]){ 1, 2, 1732800000123456 }, 3 });
	assert_string_equal(s, "{\"receipt\": \"read\", \"from_user\": \"bob\", \"device\": 4, "
			       "\"ids\": [1, 2, 1732800000123456]}");
	free(s);
	s = cli_json_receipt(&(struct ferry_receipt){ 9, PROTO_RECEIPT_DELIVERED, "bob", 0,
						      (const uint64_t[]){ 7 }, 1 });
	assert_string_equal(s, "{\"receipt\": \"delivered\", \"from_user\": \"bob\", "
			       "\"device\": 0, \"ids\": [7]}");
	free(s);
	s = cli_json_queue_empty(3);
	assert_string_equal(s, "{\"queue_empty\": true, \"drained\": 3}");
	free(s);
	s = cli_json_listen_error("auth_failed", "no");
	assert_string_equal(s, "{\"error\": \"auth_failed\", \"text\": \"no\"}");
	free(s);
	s = cli_json_send_error("auth_failed", "no");
	assert_string_equal(s, "{\"error\": {\"code\": \"auth_failed\", \"text\": \"no\"}}");
	free(s);
}

/* ---- the library without a server ---- */

static struct ferry_config base_config(const char *port)
{
	return (struct ferry_config){
		.host = "127.0.0.1",
		.port = port,
		.device_id = 42,
		.secret = "s3cret",
		.secret_len = 6,
		.backoff_base_ms = 10,
		.backoff_cap_ms = 40,
		.connect_timeout_ms = 2000,
	};
}

static void test_new_checks(void **state)
{
	struct ferry_config cfg = base_config("1");
	struct ferry_client *c = (struct ferry_client *)&cfg;
	char err[256];

	cfg.host = "";
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, err, sizeof(err)), FERRY_EINVAL);
	assert_null(c);
	assert_non_null(strstr(err, "host"));
	cfg = base_config(NULL);
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, err, sizeof(err)), FERRY_EINVAL);
	cfg = base_config("1");
	cfg.device_id = 0;
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, err, sizeof(err)), FERRY_EINVAL);
	cfg = base_config("1");
	cfg.secret_len = PROTO_MAX_SECRET + 1;
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, NULL, 0), FERRY_EINVAL);
	cfg = base_config("1");
	cfg.ca_file = "/etc/hosts";
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, err, sizeof(err)), FERRY_EINVAL);
	cfg.tls = 1;
	cfg.ca_file = "/nonexistent/ca.pem";
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, err, sizeof(err)), FERRY_ECONFIG);
	assert_non_null(strstr(err, "'/nonexistent/ca.pem'"));
	ferry_client_free(NULL);
}

static void test_send_checks(void **state)
{
	struct ferry_config cfg = base_config("1");
	struct ferry_target t[PROTO_MAX_TARGETS + 1];
	struct ferry_client *c;
	uint64_t before = fc_wallclock_us(), id1 = 0, id2 = 0;

	cfg.max_queue = 3;
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, NULL, 0), FERRY_OK);
	assert_int_equal(ferry_client_send(c, "bob", 0, "x", 1, &id1), FERRY_OK);
	assert_true(id1 >= before && id1 <= fc_wallclock_us()); /* seeded from the clock */
	assert_int_equal(ferry_client_send(c, "bob", 0, NULL, 0, &id2), FERRY_OK);
	assert_true(id2 == id1 + 1);
	assert_int_equal(ferry_client_send(c, "b b", 0, "x", 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_send(c, NULL, 0, "x", 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_send(c, "bob", 0, NULL, 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_send(c, "bob", 0, "x", PROTO_MAX_MAX_FRAME, NULL),
			 FERRY_ETOOBIG);
	for (size_t i = 0; i <= PROTO_MAX_TARGETS; i++)
		t[i] = (struct ferry_target){ i + 1, "p", 1 };
	assert_int_equal(ferry_client_send_each(c, "bob", 0, t, 0, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_send_each(c, "bob", 0, t, PROTO_MAX_TARGETS + 1, NULL),
			 FERRY_EINVAL);
	t[1].device_id = 1; /* a duplicate */
	assert_int_equal(ferry_client_send_each(c, "bob", 0, t, 2, NULL), FERRY_EINVAL);
	t[1].device_id = 0;
	assert_int_equal(ferry_client_send_each(c, "bob", 0, t, 2, NULL), FERRY_EINVAL);
	t[1].device_id = 2;
	assert_int_equal(ferry_client_send_each(c, "bob", 0, t, PROTO_MAX_TARGETS, &id2), FERRY_OK);
	assert_true(id2 == id1 + 2); /* failed calls used no id */
	assert_int_equal(ferry_client_send(c, "bob", 0, "x", 1, NULL), FERRY_ELIMIT);
	assert_int_equal(ferry_client_queued(c), 3);
	assert_int_equal(ferry_client_cancel(c, id1), FERRY_OK);
	assert_int_equal(ferry_client_cancel(c, id1), FERRY_ENOTFOUND);
	assert_int_equal(ferry_client_queued(c), 2);
	assert_false(ferry_client_ready(c));
	ferry_client_free(c);

	cfg.first_client_id = 1000;
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, NULL, 0), FERRY_OK);
	assert_int_equal(ferry_client_send(c, "bob", 0, "x", 1, &id1), FERRY_OK);
	assert_int_equal(id1, 1000);
	ferry_client_free(c);
}

/* Read receipts: checked like SENDs, and their client ids come from the same counter. */
static void test_read_checks(void **state)
{
	struct ferry_config cfg = base_config("1");
	static uint64_t ids[PROTO_MAX_IDS + 1];
	struct ferry_client *c;
	uint64_t id1, id2, id3;

	for (size_t i = 0; i <= PROTO_MAX_IDS; i++)
		ids[i] = i;
	cfg.first_client_id = 500;
	cfg.max_queue = 3;
	assert_int_equal(ferry_client_new(&cfg, NULL, NULL, &c, NULL, 0), FERRY_OK);
	assert_int_equal(ferry_client_send(c, "bob", 0, "x", 1, &id1), FERRY_OK);
	assert_int_equal(ferry_client_read(c, "bob", 0, ids, 1, &id2), FERRY_OK);
	assert_int_equal(id1, 500);
	assert_int_equal(id2, 501);
	assert_int_equal(ferry_client_read(c, "b b", 0, ids, 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_read(c, "", 0, ids, 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_read(c, NULL, 0, ids, 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_read(c, "bob", 0, NULL, 1, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_read(c, "bob", 0, ids, 0, NULL), FERRY_EINVAL);
	assert_int_equal(ferry_client_read(c, "bob", 0, ids, PROTO_MAX_IDS + 1, NULL),
			 FERRY_EINVAL);
	assert_int_equal(ferry_client_read(c, "bob", 9, ids, PROTO_MAX_IDS, &id3), FERRY_OK);
	assert_int_equal(id3, 502); /* failed calls used no id */
	assert_int_equal(ferry_client_queued(c), 3);
	assert_int_equal(ferry_client_read(c, "bob", 0, ids, 1, NULL), FERRY_ELIMIT);
	assert_int_equal(ferry_client_cancel(c, id2), FERRY_OK);
	assert_int_equal(ferry_client_cancel(c, id2), FERRY_ENOTFOUND);
	assert_int_equal(ferry_client_send(c, "bob", 0, "x", 1, &id1), FERRY_OK);
	assert_int_equal(id1, 503);
	ferry_client_free(c); /* frees the queued RECEIPT too */
}

/* ---- a scripted server ---- */

struct srv {
	int lfd, fd;
	char port[8];
	SSL_CTX *ctx; /* TLS when set */
	SSL *ssl;
	int eof;
	uint8_t buf[4 * 1024 * 1024];
	size_t len, used;
	struct proto_frame f;
};

/* What the callbacks saw. */
struct rec {
	struct ferry_client *c;
	int connected, disconnected, acked, nacked, errors, delivered, ack_calls;
	uint64_t ack_id, ack_server_id, nack_id, nack_reason, err_code;
	unsigned ack_status;
	int nack_final, err_final, refuse, stop_after_deliver;
	char nack_text[FC_TEXT_MAX], disc_text[FC_LAST_ERROR_MAX], user[PROTO_MAX_USER + 1];
	enum ferry_err disc_why;
	uint64_t delivered_ids[1024];
	size_t payload_len;
	uint8_t payload[600 * 1024];
	struct ferry_acked acked_list[1024];
	size_t nacked_list;
	uint64_t retry_ms;
	/* catch-up */
	uint64_t pending;
	int queue_empties, caught_up_in_cb, stop_at_queue_empty;
	uint64_t drained;
	char events[64]; /* D deliver, R receipt, A deliver_acked, Q queue_empty, in order */
	size_t nevents;
	/* delivered receipts: how many calls, the last one's fields */
	int receipts, refuse_receipts;
	uint64_t rcpt_server_id, rcpt_device, rcpt_ids[PROTO_MAX_IDS];
	unsigned rcpt_kind;
	size_t rcpt_n;
	char rcpt_user[PROTO_MAX_USER + 1];
};

static void rec_event(struct rec *r, char e)
{
	if (r->nevents < sizeof(r->events) - 1)
		r->events[r->nevents++] = e;
}

static uint64_t now_ms(void)
{
	return fc_now_ms();
}

static enum ferry_err pump(struct ferry_client *c, int ms)
{
	enum ferry_err rc = ferry_client_run(c, ms);

	assert_true(rc == FERRY_OK || rc == FERRY_EAUTH);
	return rc;
}

#define WAIT_FOR(c, cond, ms)                                        \
	do {                                                         \
		uint64_t end_ = now_ms() + (ms);                     \
		while (!(cond) && now_ms() < end_)                   \
			pump((c), 5);                                \
		if (!(cond))                                         \
			fail_msg("timed out waiting for %s", #cond); \
	} while (0)

static struct srv *srv_new(SSL_CTX *ctx)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	struct srv *s = calloc(1, sizeof(*s));
	int one = 1;

	assert_non_null(s);
	s->fd = -1;
	s->ctx = ctx;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(s->lfd >= 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &len), 0);
	snprintf(s->port, sizeof(s->port), "%u", ntohs(sa.sin_port));
	return s;
}

static void srv_drop(struct srv *s)
{
	if (s->ssl)
		SSL_free(s->ssl);
	s->ssl = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->len = s->used = 0;
	s->eof = 0;
}

static void srv_free(struct srv *s)
{
	srv_drop(s);
	close(s->lfd);
	free(s);
}

/* Accept a connection within @ms (and its TLS handshake): 1, or 0 if none came or TLS failed. */
static int srv_try_accept(struct srv *s, struct ferry_client *c, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;

	srv_drop(s);
	while ((s->fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK)) < 0) {
		if (now_ms() >= end)
			return 0;
		pump(c, 5);
	}
	if (!s->ctx)
		return 1;
	s->ssl = SSL_new(s->ctx);
	SSL_set_fd(s->ssl, s->fd);
	for (;;) {
		int r = SSL_accept(s->ssl), e = SSL_get_error(s->ssl, r);

		if (r == 1)
			return 1;
		if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now_ms() >= end) {
			ERR_clear_error();
			srv_drop(s);
			return 0;
		}
		pump(c, 5);
	}
}

static void srv_accept(struct srv *s, struct ferry_client *c)
{
	if (!srv_try_accept(s, c, 3000))
		fail_msg("the client did not connect");
}

/* Read what is there: 1 got bytes, 0 nothing now, -1 end of stream. */
static int srv_read_some(struct srv *s)
{
	size_t room = sizeof(s->buf) - s->len;
	ssize_t n;

	if (s->ssl) {
		n = SSL_read(s->ssl, s->buf + s->len, (int)room);
		if (n <= 0) {
			int e = SSL_get_error(s->ssl, (int)n);

			ERR_clear_error();
			return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
		}
	} else {
		n = recv(s->fd, s->buf + s->len, room, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -1;
	}
	s->len += (size_t)n;
	return 1;
}

/* The next frame from the client within @ms, NULL if none (s->eof if it closed). */
static const struct proto_frame *srv_frame(struct srv *s, struct ferry_client *c, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;
	size_t used;

	memmove(s->buf, s->buf + s->used, s->len - s->used);
	s->len -= s->used;
	s->used = 0;
	for (;;) {
		assert_int_equal(proto_decode(s->buf, s->len, PROTO_MAX_MAX_FRAME, &s->f, &used),
				 FERRY_OK);
		if (used) {
			s->used = used;
			return &s->f;
		}
		if (s->eof || now_ms() >= end)
			return NULL;
		pump(c, 5);
		while (!s->eof) {
			int r = srv_read_some(s);

			if (r < 0)
				s->eof = 1;
			if (r <= 0)
				break;
		}
	}
}

static const struct proto_frame *srv_expect(struct srv *s, struct ferry_client *c,
					    enum proto_type type)
{
	const struct proto_frame *f = srv_frame(s, c, 3000);

	if (!f)
		fail_msg("expected %s, got nothing", proto_type_name(type));
	if (f->type != type)
		fail_msg("expected %s, got %s", proto_type_name(type), proto_type_name(f->type));
	return f;
}

static void srv_write(struct srv *s, struct ferry_client *c, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n;

		if (s->ssl) {
			n = SSL_write(s->ssl, p, (int)len);
			if (n <= 0)
				ERR_clear_error();
		} else {
			n = send(s->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		}
		if (n <= 0) {
			pump(c, 5); /* let the client read */
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
}

static void srv_send(struct srv *s, struct ferry_client *c, const struct proto_frame *f)
{
	size_t cap = proto_encoded_size(f), len;
	uint8_t *out = malloc(cap);

	assert_non_null(out);
	assert_int_equal(proto_encode(f, out, cap, &len), FERRY_OK);
	srv_write(s, c, out, len);
	free(out);
}

static void srv_welcome_pending(struct srv *s, struct ferry_client *c, uint64_t max_frame,
				uint64_t idle, uint64_t pending)
{
	struct proto_frame w = { .type = PROTO_WELCOME };

	w.u.welcome = (struct proto_welcome){ 1700000000000, pending, max_frame, idle };
	srv_send(s, c, &w);
}

static void srv_welcome(struct srv *s, struct ferry_client *c, uint64_t max_frame, uint64_t idle)
{
	srv_welcome_pending(s, c, max_frame, idle, 0);
}

/* Accept, check HELLO, answer WELCOME, wait for the connected callback. */
static void srv_login(struct srv *s, struct rec *r, uint64_t max_frame, uint64_t idle)
{
	const struct proto_frame *f;
	int before = r->connected;

	srv_accept(s, r->c);
	f = srv_expect(s, r->c, PROTO_HELLO);
	assert_int_equal(f->u.hello.version, 1);
	assert_int_equal(f->u.hello.device_id, 42);
	assert_int_equal(f->u.hello.secret.len, 6);
	assert_memory_equal(f->u.hello.secret.p, "s3cret", 6);
	srv_welcome(s, r->c, max_frame, idle);
	WAIT_FOR(r->c, r->connected > before, 3000);
	assert_true(ferry_client_ready(r->c));
}

/* ---- callbacks that record ---- */

static int cb_deliver(void *arg, const struct ferry_envelope *env)
{
	struct rec *r = arg;

	if (r->refuse)
		return 1;
	assert_true(r->delivered < 1024);
	r->delivered_ids[r->delivered++] = env->server_id;
	rec_event(r, 'D');
	snprintf(r->user, sizeof(r->user), "%s", env->sender_user);
	assert_true(env->payload_len <= sizeof(r->payload));
	if (env->payload_len)
		memcpy(r->payload, env->payload, env->payload_len);
	r->payload_len = env->payload_len;
	if (r->stop_after_deliver)
		ferry_client_stop(r->c);
	return 0;
}

static int cb_receipt(void *arg, const struct ferry_receipt *rc)
{
	struct rec *r = arg;

	r->receipts++;
	if (r->refuse_receipts)
		return 1;
	rec_event(r, 'R');
	r->rcpt_server_id = rc->server_id;
	r->rcpt_kind = rc->kind;
	r->rcpt_device = rc->device;
	snprintf(r->rcpt_user, sizeof(r->rcpt_user), "%s", rc->peer_user);
	assert_true(rc->n >= 1 && rc->n <= PROTO_MAX_IDS);
	memcpy(r->rcpt_ids, rc->ids, rc->n * sizeof(rc->ids[0]));
	r->rcpt_n = rc->n;
	return 0;
}

static void cb_deliver_acked(void *arg, const struct ferry_acked *a, size_t n)
{
	struct rec *r = arg;

	r->ack_calls++;
	rec_event(r, 'A');
	for (size_t i = 0; i < n && r->nacked_list < 1024; i++)
		r->acked_list[r->nacked_list++] = a[i];
}

static void cb_send_acked(void *arg, uint64_t client_id, uint64_t server_id, unsigned status)
{
	struct rec *r = arg;

	r->acked++;
	r->ack_id = client_id;
	r->ack_server_id = server_id;
	r->ack_status = status;
}

static void cb_send_nacked(void *arg, uint64_t client_id, uint64_t reason, const char *text,
			   int final)
{
	struct rec *r = arg;

	r->nacked++;
	r->nack_id = client_id;
	r->nack_reason = reason;
	r->nack_final = final;
	snprintf(r->nack_text, sizeof(r->nack_text), "%s", text);
}

static void cb_server_error(void *arg, uint64_t code, const char *text, int final)
{
	struct rec *r = arg;

	r->errors++;
	r->err_code = code;
	r->err_final = final;
}

static void cb_connected(void *arg, const struct ferry_welcome *w)
{
	struct rec *r = arg;

	assert_int_equal(w->server_time, 1700000000000);
	r->pending = w->pending;
	r->connected++;
}

static void cb_queue_empty(void *arg, uint64_t drained)
{
	struct rec *r = arg;

	r->queue_empties++;
	r->drained = drained;
	r->caught_up_in_cb = ferry_client_caught_up(r->c);
	rec_event(r, 'Q');
	if (r->stop_at_queue_empty)
		ferry_client_stop(r->c);
}

static void cb_disconnected(void *arg, enum ferry_err why, const char *text, uint64_t retry_ms)
{
	struct rec *r = arg;

	r->disconnected++;
	r->disc_why = why;
	r->retry_ms = retry_ms;
	snprintf(r->disc_text, sizeof(r->disc_text), "%s", text);
}

static const struct ferry_callbacks recording = {
	.deliver = cb_deliver,
	.deliver_acked = cb_deliver_acked,
	.send_acked = cb_send_acked,
	.send_nacked = cb_send_nacked,
	.server_error = cb_server_error,
	.connected = cb_connected,
	.disconnected = cb_disconnected,
	.queue_empty = cb_queue_empty,
	.receipt = cb_receipt,
};

struct fixture {
	struct srv *s;
	struct rec r;
};

static struct fixture *fixture_tls(SSL_CTX *sctx, const char *ca, const char *name)
{
	struct fixture *x = calloc(1, sizeof(*x));
	struct ferry_config cfg;
	char err[256];

	assert_non_null(x);
	x->s = srv_new(sctx);
	cfg = base_config(x->s->port);
	cfg.tls = sctx != NULL;
	cfg.ca_file = ca;
	cfg.server_name = name;
	if (ferry_client_new(&cfg, &recording, &x->r, &x->r.c, err, sizeof(err)))
		fail_msg("ferry_client_new: %s", err);
	return x;
}

static int setup(void **state)
{
	*state = fixture_tls(NULL, NULL, NULL);
	return 0;
}

static int teardown(void **state)
{
	struct fixture *x = *state;

	ferry_client_free(x->r.c);
	srv_free(x->s);
	free(x);
	return 0;
}

static struct proto_frame deliver_frame(uint64_t server_id, uint64_t dev, uint64_t cid,
					const void *payload, size_t len)
{
	struct proto_frame f = { .type = PROTO_DELIVER };

	f.u.deliver = (struct proto_deliver){ server_id,     { (const uint8_t *)"alice", 5 },
					      dev,	     cid,
					      1700000000001, { payload, len } };
	return f;
}

static void answer_ack(struct srv *s, struct ferry_client *c, uint64_t client_id, uint64_t sid)
{
	struct proto_frame a = { .type = PROTO_ACK };

	a.u.ack = (struct proto_ack){ client_id, sid, PROTO_ACK_DELIVERED };
	srv_send(s, c, &a);
}

/* ---- the library against the scripted server ---- */

static void test_login_send_ack(void **state)
{
	struct fixture *x = *state;
	const struct proto_frame *f;
	uint64_t id;

	assert_int_equal(ferry_client_send(x->r.c, "bob", 60, "hello", 5, &id), FERRY_OK);
	srv_login(x->s, &x->r, 65536, 0);
	f = srv_expect(x->s, x->r.c, PROTO_SEND); /* queued before the connection */
	assert_true(f->u.send.client_id == id);
	assert_int_equal(f->u.send.to_user.len, 3);
	assert_memory_equal(f->u.send.to_user.p, "bob", 3);
	assert_int_equal(f->u.send.ttl, 60);
	assert_int_equal(f->u.send.ntargets, 0);
	assert_memory_equal(f->u.send.payload.p, "hello", 5);
	answer_ack(x->s, x->r.c, id, 555);
	WAIT_FOR(x->r.c, x->r.acked == 1, 2000);
	assert_true(x->r.ack_id == id);
	assert_int_equal(x->r.ack_server_id, 555);
	assert_int_equal(x->r.ack_status, PROTO_ACK_DELIVERED);
	assert_int_equal(ferry_client_queued(x->r.c), 0);
}

static void test_send_each_frame(void **state)
{
	struct fixture *x = *state;
	struct ferry_target t[2] = { { 5, "five", 4 }, { 6, NULL, 0 } };
	const struct proto_frame *f;
	uint64_t id;

	srv_login(x->s, &x->r, 65536, 0);
	assert_int_equal(ferry_client_send_each(x->r.c, "bob", 0, t, 2, &id), FERRY_OK);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_int_equal(f->u.send.ntargets, 2);
	assert_int_equal(f->u.send.targets[0].device_id, 5);
	assert_memory_equal(f->u.send.targets[0].payload.p, "five", 4);
	assert_int_equal(f->u.send.targets[1].device_id, 6);
	assert_int_equal(f->u.send.targets[1].payload.len, 0);
}

/* The invariant's client half: an unacknowledged SEND goes again, same id, same bytes. */
static void test_retransmit_after_reconnect(void **state)
{
	struct fixture *x = *state;
	const struct proto_frame *f;
	uint64_t id, id2;

	srv_login(x->s, &x->r, 65536, 0);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, "one", 3, &id), FERRY_OK);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, "two", 3, &id2), FERRY_OK);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == id);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == id2);
	answer_ack(x->s, x->r.c, id2, 9); /* the second only */
	WAIT_FOR(x->r.c, x->r.acked == 1, 2000);
	srv_drop(x->s); /* the first is lost with the connection */
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_int_equal(x->r.disc_why, FERRY_EIO);
	assert_false(ferry_client_ready(x->r.c));
	assert_true(x->r.retry_ms <= 10);
	srv_login(x->s, &x->r, 65536, 0);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == id);
	assert_memory_equal(f->u.send.payload.p, "one", 3);
	answer_ack(x->s, x->r.c, id, 10);
	WAIT_FOR(x->r.c, x->r.acked == 2, 2000);
	assert_true(x->r.ack_id == id);
	assert_null(srv_frame(x->s, x->r.c, 100)); /* and nothing else */
	assert_int_equal(ferry_client_queued(x->r.c), 0);
}

/* A burst bigger than the write buffer goes out whole and in order. */
static void test_send_burst_in_order(void **state)
{
	enum { N = 1000, SIZE = 1000 };
	struct fixture *x = *state;
	static uint8_t payload[SIZE];
	const struct proto_frame *f;
	uint64_t first = 0, id;

	srv_login(x->s, &x->r, 65536, 0);
	for (int i = 0; i < N; i++) {
		memset(payload, i & 0xff, sizeof(payload));
		assert_int_equal(ferry_client_send(x->r.c, "bob", 0, payload, SIZE, &id), FERRY_OK);
		if (i == 0)
			first = id;
	}
	for (int i = 0; i < N; i++) {
		f = srv_expect(x->s, x->r.c, PROTO_SEND);
		assert_true(f->u.send.client_id == first + (uint64_t)i);
		assert_int_equal(f->u.send.payload.len, SIZE);
		assert_int_equal(f->u.send.payload.p[SIZE - 1], i & 0xff);
		answer_ack(x->s, x->r.c, f->u.send.client_id, (uint64_t)i + 1);
	}
	WAIT_FOR(x->r.c, x->r.acked == N, 3000);
	assert_int_equal(ferry_client_queued(x->r.c), 0);
}

static void test_nack_retry_then_final(void **state)
{
	struct fixture *x = *state;
	struct proto_frame n = { .type = PROTO_NACK };
	const struct proto_frame *f;
	uint64_t id;

	srv_login(x->s, &x->r, 65536, 0);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, "x", 1, &id), FERRY_OK);
	srv_expect(x->s, x->r.c, PROTO_SEND);
	n.u.nack =
		(struct proto_nack){ id, PROTO_NACK_RETRY_LATER, { (const uint8_t *)"db\n", 3 } };
	srv_send(x->s, x->r.c, &n);
	WAIT_FOR(x->r.c, x->r.nacked == 1, 2000);
	assert_false(x->r.nack_final);
	assert_string_equal(x->r.nack_text, "db?");
	f = srv_expect(x->s, x->r.c, PROTO_SEND); /* after the backoff, same id */
	assert_true(f->u.send.client_id == id);
	n.u.nack = (struct proto_nack){ id, PROTO_NACK_UNKNOWN_RECIPIENT, { NULL, 0 } };
	srv_send(x->s, x->r.c, &n);
	WAIT_FOR(x->r.c, x->r.nacked == 2, 2000);
	assert_true(x->r.nack_final);
	assert_int_equal(x->r.nack_reason, PROTO_NACK_UNKNOWN_RECIPIENT);
	assert_int_equal(ferry_client_queued(x->r.c), 0);
	assert_null(srv_frame(x->s, x->r.c, 100));
}

/* Duplicates are acknowledged but shown once; one read's acks go in one frame. */
static void test_deliver_dedup_and_batch(void **state)
{
	struct fixture *x = *state;
	uint8_t bytes[1024];
	size_t len = 0, n;
	const struct proto_frame *f;
	struct proto_frame d[3] = {
		deliver_frame(1, 7, 100, "a", 1),
		deliver_frame(2, 7, 100, "a", 1), /* the same envelope again */
		deliver_frame(3, 8, 100, "b", 1), /* another sender, same client id */
	};

	srv_login(x->s, &x->r, 65536, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(proto_encode(&d[i], bytes + len, sizeof(bytes) - len, &n),
				 FERRY_OK);
		len += n;
	}
	srv_write(x->s, x->r.c, bytes, len);
	f = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(f->u.ids.count, 3);
	assert_int_equal(f->u.ids.ids[0], 1);
	assert_int_equal(f->u.ids.ids[1], 2);
	assert_int_equal(f->u.ids.ids[2], 3);
	assert_int_equal(x->r.delivered, 2);
	assert_int_equal(x->r.delivered_ids[0], 1);
	assert_int_equal(x->r.delivered_ids[1], 3);
	assert_string_equal(x->r.user, "alice");
	WAIT_FOR(x->r.c, x->r.nacked_list == 3, 2000);
	assert_int_equal(x->r.ack_calls, 1);
	assert_int_equal(x->r.acked_list[1].server_id, 2);
	assert_int_equal(x->r.acked_list[1].sender_device, 7);
	assert_int_equal(x->r.acked_list[1].client_id, 100);

	/* Still a duplicate on a later connection. */
	srv_drop(x->s);
	srv_login(x->s, &x->r, 65536, 0);
	d[0].u.deliver.server_id = 4;
	srv_send(x->s, x->r.c, &d[0]);
	f = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(f->u.ids.count, 1);
	assert_int_equal(f->u.ids.ids[0], 4);
	assert_int_equal(x->r.delivered, 2);
}

/* More than one DELIVER_ACK's worth in one go: every id acknowledged once. */
static void test_deliver_many(void **state)
{
	enum { N = 1000 }; /* two DELIVER_ACKs' worth at least */
	struct fixture *x = *state;
	static uint8_t bytes[N * 32];
	static int seen[N + 1];
	size_t len = 0, n, got = 0;
	const struct proto_frame *f;

	memset(seen, 0, sizeof(seen));
	srv_login(x->s, &x->r, 65536, 0);
	for (uint64_t i = 1; i <= N; i++) {
		struct proto_frame d = deliver_frame(i, 9, i, "", 0);

		assert_int_equal(proto_encode(&d, bytes + len, sizeof(bytes) - len, &n), FERRY_OK);
		len += n;
	}
	srv_write(x->s, x->r.c, bytes, len);
	while (got < N) {
		f = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
		assert_true(f->u.ids.count >= 1 && f->u.ids.count <= PROTO_MAX_IDS);
		for (size_t i = 0; i < f->u.ids.count; i++) {
			assert_true(f->u.ids.ids[i] >= 1 && f->u.ids.ids[i] <= N);
			assert_false(seen[f->u.ids.ids[i]]);
			seen[f->u.ids.ids[i]] = 1;
		}
		got += f->u.ids.count;
	}
	assert_int_equal(x->r.delivered, N);
	WAIT_FOR(x->r.c, x->r.nacked_list == N, 2000);
	assert_true(x->r.ack_calls >= 2);
}

static void test_deliver_refused_and_stop(void **state)
{
	struct fixture *x = *state;
	struct proto_frame d1 = deliver_frame(1, 7, 1, "a", 1), d2 = deliver_frame(2, 7, 2, "b", 1);
	struct proto_frame ping = { .type = PROTO_PING, .u.nonce = 5 };
	const struct proto_frame *f;

	srv_login(x->s, &x->r, 65536, 0);
	x->r.refuse = 1;
	srv_send(x->s, x->r.c, &d1);
	srv_send(x->s, x->r.c, &ping);
	f = srv_expect(x->s, x->r.c, PROTO_PONG); /* no DELIVER_ACK before it */
	assert_int_equal(f->u.nonce, 5);
	assert_int_equal(x->r.delivered, 0);

	/* A stop from the callback: the next envelope waits for the next run. */
	x->r.refuse = 0;
	x->r.stop_after_deliver = 1;
	srv_send(x->s, x->r.c, &d1);
	srv_send(x->s, x->r.c, &d2);
	usleep(50 * 1000);
	assert_int_equal(ferry_client_run(x->r.c, 1000), FERRY_OK);
	assert_int_equal(x->r.delivered, 1);
	x->r.stop_after_deliver = 0;
	WAIT_FOR(x->r.c, x->r.delivered == 2, 2000);
}

/* @n frames in one write, so that the client reads them together. */
static void srv_send_all(struct srv *s, struct ferry_client *c, const struct proto_frame *f,
			 size_t n)
{
	static uint8_t bytes[256 * 1024];
	size_t len = 0, used;

	for (size_t i = 0; i < n; i++) {
		assert_int_equal(proto_encode(&f[i], bytes + len, sizeof(bytes) - len, &used),
				 FERRY_OK);
		len += used;
	}
	srv_write(s, c, bytes, len);
}

static struct proto_frame queue_empty_frame(uint64_t drained)
{
	return (struct proto_frame){ .type = PROTO_QUEUE_EMPTY, .u.drained = drained };
}

/*
 * A catch-up: stored envelopes, QUEUE_EMPTY, a live one, all in one read.
 * queue_empty comes after the acknowledgement of everything before it, never
 * between a DELIVER and its DELIVER_ACK.
 */
static void test_queue_empty_after_acks(void **state)
{
	struct fixture *x = *state;
	struct proto_frame f[5] = {
		deliver_frame(1, 7, 101, "a", 1), deliver_frame(2, 7, 102, "b", 1),
		deliver_frame(3, 7, 103, "c", 1), queue_empty_frame(3),
		deliver_frame(4, 7, 104, "d", 1), /* live */
	};
	const struct proto_frame *g;

	srv_accept(x->s, x->r.c);
	srv_expect(x->s, x->r.c, PROTO_HELLO);
	srv_welcome_pending(x->s, x->r.c, 65536, 0, 3);
	WAIT_FOR(x->r.c, x->r.connected == 1, 2000);
	assert_int_equal(x->r.pending, 3);
	assert_true(ferry_client_ready(x->r.c));
	assert_false(ferry_client_caught_up(x->r.c));

	srv_send_all(x->s, x->r.c, f, 5);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 3); /* the stored three in one frame */
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(g->u.ids.ids[i], i + 1);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 1);
	assert_int_equal(g->u.ids.ids[0], 4);
	WAIT_FOR(x->r.c, x->r.nacked_list == 4, 2000);
	assert_int_equal(x->r.queue_empties, 1);
	assert_int_equal(x->r.drained, 3);
	assert_true(x->r.caught_up_in_cb);
	assert_true(ferry_client_caught_up(x->r.c));
	assert_string_equal(x->r.events, "DDDAQDA");

	/* Back to catching up on the same connection: a second QUEUE_EMPTY. */
	f[0] = deliver_frame(5, 7, 105, "e", 1);
	f[1] = queue_empty_frame(1);
	srv_send_all(x->s, x->r.c, f, 2);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.ids[0], 5);
	WAIT_FOR(x->r.c, x->r.queue_empties == 2, 2000);
	assert_int_equal(x->r.drained, 1);
	assert_string_equal(x->r.events, "DDDAQDADAQ");

	/* A new connection has not caught up until its own QUEUE_EMPTY. */
	srv_drop(x->s);
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_false(ferry_client_caught_up(x->r.c));
	srv_login(x->s, &x->r, 65536, 0);
	assert_false(ferry_client_caught_up(x->r.c));
	f[0] = queue_empty_frame(0);
	srv_send_all(x->s, x->r.c, f, 1);
	WAIT_FOR(x->r.c, x->r.queue_empties == 3, 2000);
	assert_int_equal(x->r.drained, 0);
	assert_true(ferry_client_caught_up(x->r.c));
	assert_null(srv_frame(x->s, x->r.c, 100)); /* nothing to acknowledge */
}

/*
 * Stopping in queue_empty (ferry-client listen --until-empty): everything
 * before it is acknowledged, nothing after it is handed out or acknowledged
 * until the next run.
 */
static void test_queue_empty_stop(void **state)
{
	struct fixture *x = *state;
	struct proto_frame f[4] = {
		deliver_frame(1, 7, 201, "a", 1),
		deliver_frame(2, 7, 202, "b", 1),
		queue_empty_frame(2),
		deliver_frame(3, 7, 203, "c", 1),
	};
	const struct proto_frame *g;
	uint64_t end;

	srv_login(x->s, &x->r, 65536, 0);
	x->r.stop_at_queue_empty = 1;
	srv_send_all(x->s, x->r.c, f, 4);
	end = now_ms() + 3000;
	while (!x->r.queue_empties && now_ms() < end)
		assert_int_equal(ferry_client_run(x->r.c, 50), FERRY_OK);
	assert_int_equal(x->r.queue_empties, 1);
	assert_int_equal(x->r.delivered, 2);
	assert_int_equal(x->r.nacked_list, 2); /* both reported acknowledged before it */
	assert_string_equal(x->r.events, "DDAQ");
	x->r.stop_at_queue_empty = 0;
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 2);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK); /* the live one, now */
	assert_int_equal(g->u.ids.ids[0], 3);
	assert_int_equal(x->r.delivered, 3);
}

/* Refused envelopes are not acknowledged; QUEUE_EMPTY does not wait for them. */
static void test_queue_empty_refused(void **state)
{
	struct fixture *x = *state;
	struct proto_frame f[2] = { deliver_frame(1, 7, 301, "a", 1), queue_empty_frame(1) };
	const struct proto_frame *g;

	srv_login(x->s, &x->r, 65536, 0);
	x->r.refuse = 1;
	srv_send_all(x->s, x->r.c, f, 2);
	WAIT_FOR(x->r.c, x->r.queue_empties == 1, 2000);
	assert_int_equal(x->r.delivered, 0);
	assert_null(srv_frame(x->s, x->r.c, 100)); /* no DELIVER_ACK */

	/* Before WELCOME it breaks the protocol. */
	srv_drop(x->s);
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	srv_accept(x->s, x->r.c);
	srv_expect(x->s, x->r.c, PROTO_HELLO);
	f[0] = queue_empty_frame(0);
	srv_send_all(x->s, x->r.c, f, 1);
	g = srv_expect(x->s, x->r.c, PROTO_ERROR);
	assert_int_equal(g->u.error.code, PROTO_ERR_BAD_FRAME);
	WAIT_FOR(x->r.c, x->r.disconnected == 2, 2000);
	assert_int_equal(x->r.disc_why, FERRY_EPROTO);
	assert_int_equal(x->r.queue_empties, 1);
}

/*
 * A server that drains an offline queue a window at a time and sends more
 * only when acknowledged: each window comes back as one DELIVER_ACK naming
 * all of it, not one frame per envelope.
 */
static void test_drain_window(void **state)
{
	enum { WINDOW = 64, WINDOWS = 15, N = WINDOW * WINDOWS };
	struct fixture *x = *state;
	struct proto_frame f[WINDOW];
	const struct proto_frame *g;
	uint64_t t0;

	srv_accept(x->s, x->r.c);
	srv_expect(x->s, x->r.c, PROTO_HELLO);
	srv_welcome_pending(x->s, x->r.c, 65536, 0, N);
	WAIT_FOR(x->r.c, x->r.connected == 1, 2000);
	t0 = now_ms();
	for (uint64_t w = 0; w < WINDOWS; w++) {
		for (uint64_t i = 0; i < WINDOW; i++) {
			uint64_t id = w * WINDOW + i + 1;

			f[i] = deliver_frame(id, 9, 1000 + id, "p", 1);
		}
		srv_send_all(x->s, x->r.c, f, WINDOW);
		g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
		assert_int_equal(g->u.ids.count, WINDOW);
		for (uint64_t i = 0; i < WINDOW; i++)
			assert_int_equal(g->u.ids.ids[i], w * WINDOW + i + 1);
	}
	f[0] = queue_empty_frame(N);
	srv_send_all(x->s, x->r.c, f, 1);
	WAIT_FOR(x->r.c, x->r.queue_empties == 1, 2000);
	assert_int_equal(x->r.drained, N);
	assert_int_equal(x->r.delivered, N);
	assert_int_equal(x->r.nacked_list, N);
	assert_true(now_ms() - t0 < 5000);
}

/*
 * queue_full and retry_later keep the SEND: it goes again with the same
 * client id and bytes after a backoff, across a reconnect too; an ACK
 * "stored" is reported as such.
 */
static void test_nack_queue_full_kept(void **state)
{
	struct fixture *x = *state;
	struct proto_frame n = { .type = PROTO_NACK }, a = { .type = PROTO_ACK };
	const struct proto_frame *f;
	uint64_t id;

	srv_login(x->s, &x->r, 65536, 0);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 3600, "keep me", 7, &id), FERRY_OK);
	srv_expect(x->s, x->r.c, PROTO_SEND);
	n.u.nack = (struct proto_nack){ id, PROTO_NACK_QUEUE_FULL, { (const uint8_t *)"full", 4 } };
	srv_send(x->s, x->r.c, &n);
	WAIT_FOR(x->r.c, x->r.nacked == 1, 2000);
	assert_false(x->r.nack_final);
	assert_int_equal(x->r.nack_reason, PROTO_NACK_QUEUE_FULL);
	assert_int_equal(ferry_client_queued(x->r.c), 1);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == id);
	assert_int_equal(f->u.send.ttl, 3600);
	assert_memory_equal(f->u.send.payload.p, "keep me", 7);

	/* NACKed again, and the connection is lost during the backoff: still kept. */
	n.u.nack = (struct proto_nack){ id, PROTO_NACK_RETRY_LATER, { NULL, 0 } };
	srv_send(x->s, x->r.c, &n);
	WAIT_FOR(x->r.c, x->r.nacked == 2, 2000);
	srv_drop(x->s);
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_int_equal(ferry_client_queued(x->r.c), 1);
	srv_login(x->s, &x->r, 65536, 0);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == id);
	assert_memory_equal(f->u.send.payload.p, "keep me", 7);

	a.u.ack = (struct proto_ack){ id, 77, PROTO_ACK_STORED };
	srv_send(x->s, x->r.c, &a);
	WAIT_FOR(x->r.c, x->r.acked == 1, 2000);
	assert_int_equal(x->r.ack_status, PROTO_ACK_STORED);
	assert_int_equal(x->r.ack_server_id, 77);
	assert_int_equal(ferry_client_queued(x->r.c), 0);
	assert_null(srv_frame(x->s, x->r.c, 100));
}

/* A DELIVER_RECEIPT frame from the server. */
static struct proto_frame receipt_frame(uint64_t server_id, uint8_t kind, const char *peer,
					uint64_t device, const uint64_t *ids, size_t n)
{
	struct proto_frame f = { .type = PROTO_DELIVER_RECEIPT };

	f.u.receipt.id = server_id;
	f.u.receipt.kind = kind;
	f.u.receipt.peer_user = (struct proto_bytes){ (const uint8_t *)peer, strlen(peer) };
	f.u.receipt.device = device;
	f.u.receipt.count = n;
	memcpy(f.u.receipt.ids, ids, n * sizeof(ids[0]));
	return f;
}

static void expect_receipt_frame(const struct proto_frame *f, uint64_t id, const char *peer,
				 uint64_t device, const uint64_t *ids, size_t n)
{
	assert_true(f->u.receipt.id == id);
	assert_int_equal(f->u.receipt.kind, PROTO_RECEIPT_READ);
	assert_int_equal(f->u.receipt.peer_user.len, strlen(peer));
	assert_memory_equal(f->u.receipt.peer_user.p, peer, strlen(peer));
	assert_int_equal(f->u.receipt.device, device);
	assert_int_equal(f->u.receipt.count, n);
	assert_memory_equal(f->u.receipt.ids, ids, n * sizeof(ids[0]));
}

/*
 * ferry_client_read(): a RECEIPT (kind read) in the SEND queue, in order with
 * SENDs; its ACK (server_id 0) reaches send_acked, a retryable NACK keeps it
 * (sent again, same id and bytes), a final one drops it.
 */
static void test_read_receipt_ack_nack(void **state)
{
	struct fixture *x = *state;
	static const uint64_t ids[3] = { 5, 6, UINT64_MAX };
	static uint64_t many[PROTO_MAX_IDS];
	struct proto_frame n = { .type = PROTO_NACK }, a = { .type = PROTO_ACK };
	const struct proto_frame *f;
	uint64_t sid, rid, rid2;

	for (size_t i = 0; i < PROTO_MAX_IDS; i++)
		many[i] = UINT64_C(1732800000000000) + i;
	srv_login(x->s, &x->r, 65536, 0);
	assert_int_equal(ferry_client_send(x->r.c, "alice", 0, "hi", 2, &sid), FERRY_OK);
	assert_int_equal(ferry_client_read(x->r.c, "alice", 3, ids, 3, &rid), FERRY_OK);
	assert_true(rid == sid + 1);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == sid);
	f = srv_expect(x->s, x->r.c, PROTO_RECEIPT);
	expect_receipt_frame(f, rid, "alice", 3, ids, 3);

	a.u.ack = (struct proto_ack){ rid, 0, PROTO_ACK_STORED };
	srv_send(x->s, x->r.c, &a);
	WAIT_FOR(x->r.c, x->r.acked == 1, 2000);
	assert_true(x->r.ack_id == rid);
	assert_int_equal(x->r.ack_server_id, 0);
	assert_int_equal(x->r.ack_status, PROTO_ACK_STORED);
	assert_int_equal(ferry_client_queued(x->r.c), 1); /* the SEND, unanswered */

	assert_int_equal(ferry_client_read(x->r.c, "carol", 0, many, PROTO_MAX_IDS, &rid2),
			 FERRY_OK);
	f = srv_expect(x->s, x->r.c, PROTO_RECEIPT);
	expect_receipt_frame(f, rid2, "carol", 0, many, PROTO_MAX_IDS);
	n.u.nack = (struct proto_nack){ rid2, PROTO_NACK_RETRY_LATER, { NULL, 0 } };
	srv_send(x->s, x->r.c, &n);
	WAIT_FOR(x->r.c, x->r.nacked == 1, 2000);
	assert_true(x->r.nack_id == rid2);
	assert_false(x->r.nack_final);
	f = srv_expect(x->s, x->r.c, PROTO_RECEIPT); /* after the backoff */
	expect_receipt_frame(f, rid2, "carol", 0, many, PROTO_MAX_IDS);
	n.u.nack = (struct proto_nack){ rid2,
					PROTO_NACK_UNKNOWN_RECIPIENT,
					{ (const uint8_t *)"no carol", 8 } };
	srv_send(x->s, x->r.c, &n);
	WAIT_FOR(x->r.c, x->r.nacked == 2, 2000);
	assert_true(x->r.nack_final);
	assert_int_equal(x->r.nack_reason, PROTO_NACK_UNKNOWN_RECIPIENT);
	assert_string_equal(x->r.nack_text, "no carol");
	assert_int_equal(ferry_client_queued(x->r.c), 1);
	answer_ack(x->s, x->r.c, sid, 8);
	WAIT_FOR(x->r.c, x->r.acked == 2, 2000);
	assert_int_equal(ferry_client_queued(x->r.c), 0);
	assert_null(srv_frame(x->s, x->r.c, 100));
}

/* An unanswered RECEIPT goes again after a reconnect, same client id, same bytes. */
static void test_read_receipt_retransmit(void **state)
{
	struct fixture *x = *state;
	static const uint64_t ids[2] = { 77, 78 };
	const struct proto_frame *f;
	uint64_t rid;

	/* Queued before any connection. */
	assert_int_equal(ferry_client_read(x->r.c, "alice", 4, ids, 2, &rid), FERRY_OK);
	srv_login(x->s, &x->r, 65536, 0);
	f = srv_expect(x->s, x->r.c, PROTO_RECEIPT);
	expect_receipt_frame(f, rid, "alice", 4, ids, 2);
	srv_drop(x->s); /* lost with the connection, unanswered */
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_int_equal(ferry_client_queued(x->r.c), 1);
	srv_login(x->s, &x->r, 65536, 0);
	f = srv_expect(x->s, x->r.c, PROTO_RECEIPT);
	expect_receipt_frame(f, rid, "alice", 4, ids, 2);
	answer_ack(x->s, x->r.c, rid, 0);
	WAIT_FOR(x->r.c, x->r.acked == 1, 2000);
	assert_true(x->r.ack_id == rid);
	assert_int_equal(x->r.ack_status, PROTO_ACK_DELIVERED);
	assert_int_equal(ferry_client_queued(x->r.c), 0);

	/* Answered: not sent again on the next connection. */
	srv_drop(x->s);
	WAIT_FOR(x->r.c, x->r.disconnected == 2, 2000);
	srv_login(x->s, &x->r, 65536, 0);
	assert_null(srv_frame(x->s, x->r.c, 100));
}

/*
 * DELIVER_RECEIPT: handed to the receipt callback with every field and
 * acknowledged in the same DELIVER_ACK as the envelopes around it;
 * deliver_acked reports it with its kind. Every copy is handed over (no
 * dedup), and receipts leave the envelopes' dedup window alone.
 */
static void test_deliver_receipt(void **state)
{
	struct fixture *x = *state;
	static const uint64_t ids[3] = { 100, 101, UINT64_MAX };
	static uint64_t many[PROTO_MAX_IDS];
	struct proto_frame f[3];
	const struct proto_frame *g;

	srv_login(x->s, &x->r, 65536, 0);
	f[0] = deliver_frame(1, 7, 100, "a", 1);
	f[1] = receipt_frame(50, PROTO_RECEIPT_DELIVERED, "bob", 42, ids, 3);
	f[2] = deliver_frame(2, 42, 100, "b", 1); /* a sender device and id the receipt named */
	srv_send_all(x->s, x->r.c, f, 3);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 3);
	assert_int_equal(g->u.ids.ids[0], 1);
	assert_int_equal(g->u.ids.ids[1], 50);
	assert_int_equal(g->u.ids.ids[2], 2);
	assert_int_equal(x->r.receipts, 1);
	assert_int_equal(x->r.rcpt_server_id, 50);
	assert_int_equal(x->r.rcpt_kind, PROTO_RECEIPT_DELIVERED);
	assert_string_equal(x->r.rcpt_user, "bob");
	assert_int_equal(x->r.rcpt_device, 42);
	assert_int_equal(x->r.rcpt_n, 3);
	assert_memory_equal(x->r.rcpt_ids, ids, sizeof(ids));
	assert_int_equal(x->r.delivered, 2); /* the second envelope is no duplicate */
	WAIT_FOR(x->r.c, x->r.nacked_list == 3, 2000);
	assert_int_equal(x->r.ack_calls, 1);
	assert_int_equal(x->r.acked_list[0].receipt_kind, 0);
	assert_int_equal(x->r.acked_list[1].server_id, 50);
	assert_int_equal(x->r.acked_list[1].receipt_kind, PROTO_RECEIPT_DELIVERED);
	assert_int_equal(x->r.acked_list[1].sender_device, 0);
	assert_int_equal(x->r.acked_list[1].client_id, 0);
	assert_int_equal(x->r.acked_list[2].receipt_kind, 0);
	assert_int_equal(x->r.acked_list[2].sender_device, 42);
	assert_string_equal(x->r.events, "DRDA");

	/* The same receipt again: handed over and acknowledged again. */
	srv_send_all(x->s, x->r.c, f + 1, 1);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 1);
	assert_int_equal(g->u.ids.ids[0], 50);
	assert_int_equal(x->r.receipts, 2);

	/* A full read receipt naming no device. */
	for (size_t i = 0; i < PROTO_MAX_IDS; i++)
		many[i] = i * 1000;
	f[0] = receipt_frame(51, PROTO_RECEIPT_READ, "carol.x@y", 0, many, PROTO_MAX_IDS);
	srv_send_all(x->s, x->r.c, f, 1);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.ids[0], 51);
	assert_int_equal(x->r.rcpt_kind, PROTO_RECEIPT_READ);
	assert_string_equal(x->r.rcpt_user, "carol.x@y");
	assert_int_equal(x->r.rcpt_device, 0);
	assert_int_equal(x->r.rcpt_n, PROTO_MAX_IDS);
	assert_memory_equal(x->r.rcpt_ids, many, sizeof(many));
	WAIT_FOR(x->r.c, x->r.nacked_list == 5, 2000);
	assert_int_equal(x->r.acked_list[4].receipt_kind, PROTO_RECEIPT_READ);
}

/* A receipt the callback refuses, or with no callback, is not acknowledged. */
static void test_deliver_receipt_refused(void **state)
{
	struct fixture *x = *state;
	static const uint64_t ids[1] = { 9 };
	struct proto_frame f[2];
	const struct proto_frame *g;

	srv_login(x->s, &x->r, 65536, 0);
	x->r.refuse_receipts = 1;
	f[0] = receipt_frame(60, PROTO_RECEIPT_READ, "bob", 1, ids, 1);
	f[1] = (struct proto_frame){ .type = PROTO_PING, .u.nonce = 6 };
	srv_send_all(x->s, x->r.c, f, 2);
	g = srv_expect(x->s, x->r.c, PROTO_PONG); /* no DELIVER_ACK before it */
	assert_int_equal(g->u.nonce, 6);
	assert_int_equal(x->r.receipts, 1);

	x->r.refuse_receipts = 0;
	x->r.c->cb.receipt = NULL;
	f[1].u.nonce = 7;
	srv_send_all(x->s, x->r.c, f, 2);
	g = srv_expect(x->s, x->r.c, PROTO_PONG);
	assert_int_equal(g->u.nonce, 7);
	assert_int_equal(x->r.receipts, 1); /* not called */
	assert_null(srv_frame(x->s, x->r.c, 100));
	assert_int_equal(x->r.nacked_list, 0);

	/* Accepted on a later connection (the server sends it again). */
	x->r.c->cb.receipt = cb_receipt;
	srv_drop(x->s);
	srv_login(x->s, &x->r, 65536, 0);
	srv_send_all(x->s, x->r.c, f, 1);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.ids[0], 60);
	assert_int_equal(x->r.receipts, 2);
}

/* A stored receipt is acknowledged, and reported, before QUEUE_EMPTY is. */
static void test_deliver_receipt_queue_empty(void **state)
{
	struct fixture *x = *state;
	static const uint64_t ids[2] = { 1, 2 };
	struct proto_frame f[4] = {
		deliver_frame(1, 7, 401, "a", 1),
		receipt_frame(2, PROTO_RECEIPT_READ, "bob", 42, ids, 2), queue_empty_frame(2),
		receipt_frame(3, PROTO_RECEIPT_DELIVERED, "bob", 42, ids, 1), /* live */
	};
	const struct proto_frame *g;

	srv_login(x->s, &x->r, 65536, 0);
	x->r.stop_at_queue_empty = 1;
	srv_send_all(x->s, x->r.c, f, 4);
	WAIT_FOR(x->r.c, x->r.queue_empties == 1, 2000);
	assert_string_equal(x->r.events, "DRAQ");
	assert_int_equal(x->r.nacked_list, 2);
	assert_int_equal(x->r.acked_list[1].receipt_kind, PROTO_RECEIPT_READ);
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 2);
	x->r.stop_at_queue_empty = 0;
	g = srv_expect(x->s, x->r.c, PROTO_DELIVER_ACK);
	assert_int_equal(g->u.ids.count, 1);
	assert_int_equal(g->u.ids.ids[0], 3);
	assert_int_equal(x->r.receipts, 2);
}

static void test_ping_pong_and_dead(void **state)
{
	struct fixture *x = *state;
	struct proto_frame ping = { .type = PROTO_PING, .u.nonce = 77 };
	const struct proto_frame *f;
	uint64_t t0;

	srv_login(x->s, &x->r, 65536, 600); /* the client pings every 200 ms */
	srv_send(x->s, x->r.c, &ping);
	f = srv_expect(x->s, x->r.c, PROTO_PONG);
	assert_int_equal(f->u.nonce, 77);
	t0 = now_ms();
	f = srv_expect(x->s, x->r.c, PROTO_PING);
	assert_true(now_ms() - t0 < 500);
	/* Nothing comes back: after idle_timeout of silence the client gives up. */
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_non_null(strstr(x->r.disc_text, "nothing from the server"));
	srv_login(x->s, &x->r, 65536, 0);
}

static void test_auth_failed_is_final(void **state)
{
	struct fixture *x = *state;
	struct proto_frame e = { .type = PROTO_ERROR };

	srv_accept(x->s, x->r.c);
	srv_expect(x->s, x->r.c, PROTO_HELLO);
	e.u.error = (struct proto_error){ PROTO_ERR_AUTH_FAILED, { (const uint8_t *)"nope", 4 } };
	srv_send(x->s, x->r.c, &e);
	srv_drop(x->s);
	WAIT_FOR(x->r.c, x->r.errors == 1, 2000);
	assert_true(x->r.err_final);
	assert_int_equal(x->r.err_code, PROTO_ERR_AUTH_FAILED);
	assert_int_equal(ferry_client_run(x->r.c, 10), FERRY_EAUTH);
	assert_int_equal(x->r.disconnected, 0);
	assert_non_null(strstr(ferry_client_last_error(x->r.c), "auth_failed"));
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, "x", 1, NULL), FERRY_EAUTH);
	assert_int_equal(ferry_client_read(x->r.c, "bob", 0, (const uint64_t[]){ 1 }, 1, NULL),
			 FERRY_EAUTH);
	assert_false(srv_try_accept(x->s, x->r.c, 200)); /* it never comes back */
}

static void test_error_replaced_reconnects(void **state)
{
	struct fixture *x = *state;
	struct proto_frame e = { .type = PROTO_ERROR };

	srv_login(x->s, &x->r, 65536, 0);
	e.u.error = (struct proto_error){ PROTO_ERR_NOT_IMPLEMENTED, { NULL, 0 } };
	srv_send(x->s, x->r.c, &e);
	WAIT_FOR(x->r.c, x->r.errors == 1, 2000);
	assert_true(ferry_client_ready(x->r.c)); /* not_implemented keeps the connection */
	e.u.error = (struct proto_error){ PROTO_ERR_REPLACED, { NULL, 0 } };
	srv_send(x->s, x->r.c, &e);
	WAIT_FOR(x->r.c, x->r.errors == 2, 2000);
	assert_false(x->r.err_final);
	assert_int_equal(x->r.disconnected, 1);
	srv_login(x->s, &x->r, 65536, 0);
}

static void test_reconnect_frame(void **state)
{
	struct fixture *x = *state;
	struct proto_frame rc = { .type = PROTO_RECONNECT, .u.reconnect_after = 300 };
	uint64_t t0;

	srv_login(x->s, &x->r, 65536, 0);
	t0 = now_ms();
	srv_send(x->s, x->r.c, &rc);
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_true(x->r.retry_ms >= 300 && x->r.retry_ms <= 310);
	srv_login(x->s, &x->r, 65536, 0);
	assert_true(now_ms() - t0 >= 300);
}

static void test_protocol_violations(void **state)
{
	struct fixture *x = *state;
	static const uint8_t garbage[] = { 0x02, 0x63, 0x00 }; /* unknown type 0x63 */
	struct proto_frame hello = { .type = PROTO_HELLO };
	const struct proto_frame *f;

	srv_login(x->s, &x->r, 65536, 0);
	srv_write(x->s, x->r.c, garbage, sizeof(garbage));
	f = srv_expect(x->s, x->r.c, PROTO_ERROR);
	assert_int_equal(f->u.error.code, PROTO_ERR_BAD_FRAME);
	WAIT_FOR(x->r.c, x->r.disconnected == 1, 2000);
	assert_int_equal(x->r.disc_why, FERRY_EPROTO);

	/* A frame in the wrong direction. */
	srv_login(x->s, &x->r, 65536, 0);
	hello.u.hello = (struct proto_hello){ 1, 1, { (const uint8_t *)"x", 1 } };
	srv_send(x->s, x->r.c, &hello);
	f = srv_expect(x->s, x->r.c, PROTO_ERROR);
	assert_int_equal(f->u.error.code, PROTO_ERR_BAD_FRAME);
	WAIT_FOR(x->r.c, x->r.disconnected == 2, 2000);

	/* A RECEIPT goes from devices to the server only. */
	srv_login(x->s, &x->r, 65536, 0);
	srv_send(x->s, x->r.c,
		 &(struct proto_frame){ .type = PROTO_RECEIPT,
					.u.receipt = { 1,
						       PROTO_RECEIPT_READ,
						       { (const uint8_t *)"bob", 3 },
						       0,
						       1,
						       { 5 } } });
	f = srv_expect(x->s, x->r.c, PROTO_ERROR);
	assert_int_equal(f->u.error.code, PROTO_ERR_BAD_FRAME);
	WAIT_FOR(x->r.c, x->r.disconnected == 3, 2000);
	assert_int_equal(x->r.receipts, 0);

	/* Anything but WELCOME or ERROR before WELCOME. */
	srv_accept(x->s, x->r.c);
	srv_expect(x->s, x->r.c, PROTO_HELLO);
	srv_send(x->s, x->r.c, &(struct proto_frame){ .type = PROTO_PONG, .u.nonce = 1 });
	f = srv_expect(x->s, x->r.c, PROTO_ERROR);
	WAIT_FOR(x->r.c, x->r.disconnected == 4, 2000);

	/* A WELCOME with an impossible max_frame. */
	srv_accept(x->s, x->r.c);
	srv_expect(x->s, x->r.c, PROTO_HELLO);
	srv_welcome(x->s, x->r.c, 10, 0);
	f = srv_expect(x->s, x->r.c, PROTO_ERROR);
	WAIT_FOR(x->r.c, x->r.disconnected == 5, 2000);
	assert_int_equal(x->r.connected, 3);
}

/* Over the server's limits: answered locally, never written (it would close us). */
static void test_too_large_for_server(void **state)
{
	struct fixture *x = *state;
	static uint8_t big[2000];
	const struct proto_frame *f;
	uint64_t id, small;

	srv_login(x->s, &x->r, 1024, 0);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, big, sizeof(big), &id), FERRY_OK);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, big, 1024 - 127, NULL), FERRY_OK);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, big, 10, &small), FERRY_OK);
	WAIT_FOR(x->r.c, x->r.nacked == 2, 2000);
	assert_true(x->r.nack_final);
	assert_int_equal(x->r.nack_reason, PROTO_NACK_TOO_LARGE);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_true(f->u.send.client_id == small);
}

/* Frames bigger than the defaults both ways once WELCOME allows them. */
static void test_large_frames(void **state)
{
	struct fixture *x = *state;
	enum { BIG = 500 * 1024 };
	uint8_t *p = malloc(BIG);
	const struct proto_frame *f;
	struct proto_frame d;
	uint64_t id;

	assert_non_null(p);
	for (size_t i = 0; i < BIG; i++)
		p[i] = (uint8_t)(i * 7);
	srv_login(x->s, &x->r, 1024 * 1024, 0);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, p, BIG, &id), FERRY_OK);
	assert_int_equal(ferry_client_send(x->r.c, "bob", 0, p, BIG, NULL), FERRY_OK);
	f = srv_expect(x->s, x->r.c, PROTO_SEND);
	assert_int_equal(f->u.send.payload.len, BIG);
	assert_memory_equal(f->u.send.payload.p, p, BIG);
	srv_expect(x->s, x->r.c, PROTO_SEND);
	d = deliver_frame(1, 3, 4, p, BIG);
	srv_send(x->s, x->r.c, &d);
	WAIT_FOR(x->r.c, x->r.delivered == 1, 3000);
	assert_int_equal(x->r.payload_len, BIG);
	assert_memory_equal(x->r.payload, p, BIG);
	free(p);
}

static void test_connect_timeout_and_refused(void **state)
{
	struct fixture *x = *state;
	struct ferry_config cfg = base_config("1");
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t salen = sizeof(sa);
	struct ferry_client *c;
	struct rec *r = calloc(1, sizeof(*r));
	char port[8];

	/* Accepted but never welcomed. */
	cfg.port = x->s->port;
	cfg.connect_timeout_ms = 200;
	assert_int_equal(ferry_client_new(&cfg, &recording, r, &c, NULL, 0), FERRY_OK);
	r->c = c;
	srv_accept(x->s, c);
	WAIT_FOR(c, r->disconnected == 1, 2000);
	assert_non_null(strstr(r->disc_text, "no WELCOME"));
	ferry_client_free(c);

	/* Nobody listening: a port bound (so that no one else takes it) without listen(). */
	srv_drop(x->s);
	close(x->s->lfd);
	x->s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(x->s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(x->s->lfd, (struct sockaddr *)&sa, &salen), 0);
	snprintf(port, sizeof(port), "%u", ntohs(sa.sin_port));
	cfg.port = port;
	memset(r, 0, sizeof(*r));
	assert_int_equal(ferry_client_new(&cfg, &recording, r, &c, NULL, 0), FERRY_OK);
	r->c = c;
	WAIT_FOR(c, r->disconnected >= 1, 2000);
	assert_non_null(strstr(r->disc_text, "Connection refused"));
	assert_non_null(strstr(ferry_client_last_error(c), "Connection refused"));
	ferry_client_free(c);
	free(r);
}

static void test_run_bounds(void **state)
{
	struct fixture *x = *state;
	uint64_t t0 = now_ms();

	assert_int_equal(ferry_client_run(x->r.c, 0), FERRY_OK);
	assert_true(now_ms() - t0 < 100);
	t0 = now_ms();
	assert_int_equal(ferry_client_run(x->r.c, 120), FERRY_OK);
	assert_true(now_ms() - t0 >= 120);
	ferry_client_stop(x->r.c); /* before run: the next run returns at once */
	t0 = now_ms();
	assert_int_equal(ferry_client_run(x->r.c, -1), FERRY_OK);
	assert_true(now_ms() - t0 < 100);
}

/* ---- TLS ---- */

struct tls_env {
	SSL_CTX *sctx;
	char ca_path[64];
};

/* A self-signed certificate for DNS:localhost and IP:127.0.0.1. */
static void make_cert(struct tls_env *t)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	FILE *f;
	int fd;

	assert_non_null(key);
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	snprintf(t->ca_path, sizeof(t->ca_path), "/tmp/ferry-test-ca-XXXXXX");
	fd = mkstemp(t->ca_path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
	t->sctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_set_min_proto_version(t->sctx, TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_use_certificate(t->sctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(t->sctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
}

static void test_tls(void **state)
{
	static const char *const names[] = { NULL, "localhost" }; /* by IP, by name */
	struct tls_env t;
	struct fixture *x;
	const struct proto_frame *f;
	uint64_t id;

	make_cert(&t);
	for (int i = 0; i < 2; i++) {
		x = fixture_tls(t.sctx, t.ca_path, names[i]);
		srv_login(x->s, &x->r, 65536, 0);
		assert_int_equal(ferry_client_send(x->r.c, "bob", 0, "over tls", 8, &id), FERRY_OK);
		f = srv_expect(x->s, x->r.c, PROTO_SEND);
		assert_memory_equal(f->u.send.payload.p, "over tls", 8);
		answer_ack(x->s, x->r.c, id, 1);
		WAIT_FOR(x->r.c, x->r.acked == 1, 2000);
		*state = x;
		teardown(state);
	}

	/* The certificate is not for that name: no connection, a clear reason. */
	x = fixture_tls(t.sctx, t.ca_path, "other.example");
	assert_false(srv_try_accept(x->s, x->r.c, 1000));
	WAIT_FOR(x->r.c, x->r.disconnected >= 1, 2000);
	assert_non_null(strstr(x->r.disc_text, "cannot verify the server's certificate"));
	assert_int_equal(x->r.connected, 0);
	*state = x;
	teardown(state);
	*state = NULL;
	SSL_CTX_free(t.sctx);
	unlink(t.ca_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_text_and_codes),
		cmocka_unit_test(test_dedup_window),
		cmocka_unit_test(test_dedup_model),
		cmocka_unit_test(test_sendq),
		cmocka_unit_test(test_cli_parse_ok),
		cmocka_unit_test(test_cli_parse_errors),
		cmocka_unit_test(test_cli_parse_read),
		cmocka_unit_test(test_cli_secret_rules),
		cmocka_unit_test(test_cli_numbers),
		cmocka_unit_test(test_cli_json),
		cmocka_unit_test(test_new_checks),
		cmocka_unit_test(test_send_checks),
		cmocka_unit_test(test_read_checks),
		cmocka_unit_test_setup_teardown(test_login_send_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_each_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retransmit_after_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_burst_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nack_retry_then_final, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_dedup_and_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_refused_and_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_empty_after_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_empty_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_empty_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nack_queue_full_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_receipt_ack_nack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_receipt_retransmit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_receipt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_receipt_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_receipt_queue_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_pong_and_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_failed_is_final, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_replaced_reconnects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_protocol_violations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_for_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_timeout_and_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_bounds, setup, teardown),
		cmocka_unit_test(test_tls),
	};

	log_set_level(LOG_LEVEL_WARN);
	return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
