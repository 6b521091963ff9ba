/*
 * test_messages.c - POST /v1/messages, envelopes from the server itself,
 * over real HTTP against a running ferryd with its device gateway and a
 * fresh, migrated PostgreSQL database; devices speak the protocol by hand
 * (rawdev).
 *
 * One daemon serves the group: [gateway] max_frame = 4k (so a payload may
 * be 3968 bytes), ack_timeout = 300 ms, [store] max_pending_per_device = 3
 * (so that 429 is cheap to provoke), default_ttl = 1 day and expiry sweeps
 * every 200 ms. Each test registers users of its own. Two tests start a
 * daemon of their own: one without a device gateway, one whose database is
 * cut off.
 *
 * The route blocks until every target device acknowledged the envelope or it
 * was committed, so a request whose target is online runs on a thread of its
 * own (struct post) while the test reads and acknowledges the DELIVER. Only
 * the main thread calls cmocka.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

#include "gateway/proto.h"
#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "msg-test-token-41c9"
#define ACK_TIMEOUT_MS 300
#define MAX_FRAME 4096
#define MAX_PAYLOAD (MAX_FRAME - PROTO_PAYLOAD_HEADROOM)
#define MAX_PENDING 3
#define DEFAULT_TTL 86400
#define NO_TTL (-1)
#define POST_TIMEOUT_MS 30000L

/* A payload with bytes JSON and C strings would trip on. */
static const uint8_t binary_payload[] = { 0x00, 0xff, 'f', 'e',	 'r',  'r',  'y',
					  0x01, 0x80, '"', '\\', 0x00, 0x7f, 0xfe };

/* Never to appear in the daemon's log. */
#define MARKER "payload-marker-e6b1d0"

struct fixture {
	char *conninfo;
	struct th_ferryd d;
	int port;
	char url[128]; /* .../v1/messages */
	PGconn *pg;
};

static struct fixture fx;

/* ---- set-up ---- */

static int setup(void **state)
{
	char *cfg, *path, extra[512];
	int admin = th_free_port();

	curl_global_init(CURL_GLOBAL_DEFAULT);
	fx.conninfo = th_db_new("msg");
	fx.port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\nack_timeout = %d\n"
		 "max_frame = %d\n\n[store]\nmax_pending_per_device = %d\ndefault_ttl = %d\n"
		 "expire_interval = 200\n",
		 fx.port, ACK_TIMEOUT_MS, MAX_FRAME, MAX_PENDING, DEFAULT_TTL);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("msg.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, admin);
	th_ferryd_wait_ready(&fx.d, 10000); /* the store connects in the background */
	snprintf(fx.url, sizeof(fx.url), "%s/v1/messages", fx.d.admin_url);
	fx.pg = th_pg_connect(fx.conninfo);
	unlink(path);
	free(path);
	free(cfg);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	PQfinish(fx.pg);
	free(fx.conninfo);
	curl_global_cleanup();
	return status == 0 ? 0 : -1;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

/* ---- request bodies ---- */

static char *b64(const void *p, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	assert_non_null(out);
	EVP_EncodeBlock((unsigned char *)out, p, (int)len);
	return out;
}

/* The JSON text of @j (taken); malloc'ed. */
static char *dump(json_t *j)
{
	char *s;

	assert_non_null(j);
	s = json_dumps(j, JSON_COMPACT);
	assert_non_null(s);
	json_decref(j);
	return s;
}

/* A message to @user (or, when NULL, to @device) with @payload, and "ttl"
 * unless @ttl is NO_TTL. Malloc'ed. */
static char *message(const char *user, int64_t device, const void *payload, size_t len,
		     long long ttl)
{
	char *enc = b64(payload, len);
	json_t *j = json_pack("{s:s}", "payload_b64", enc);

	assert_non_null(j);
	if (user)
		json_object_set_new(j, "to_user", json_string(user));
	else
		json_object_set_new(j, "to_device", json_integer(device));
	if (ttl != NO_TTL)
		json_object_set_new(j, "ttl", json_integer(ttl));
	free(enc);
	return dump(j);
}

/* ---- replies ---- */

/* The body as JSON; fails the test unless it is JSON with an application/json type. */
static json_t *body_json(long status, const char *content_type, const char *body)
{
	json_error_t jerr;
	json_t *j;

	assert_non_null(content_type);
	assert_string_equal(content_type, "application/json");
	j = json_loads(body, 0, &jerr);
	if (!j)
		fail_msg("response %ld is not JSON (%s): %s", status, jerr.text, body);
	return j;
}

/* What a 200 says. */
struct sent {
	uint64_t server_id;
	json_int_t targets;
	char status[16];
};

static void parse_sent(long status, const char *content_type, const char *body, struct sent *s)
{
	const char *id;
	json_t *j, *v;
	char *end;
	size_t i;

	if (status != 200)
		fail_msg("expected 200, got %ld: %s", status, body);
	j = body_json(status, content_type, body);
	assert_int_equal(json_object_size(j), 3);
	v = json_object_get(j, "server_id");
	if (!json_is_string(v))
		fail_msg("server_id is not a string: %s", body);
	id = json_string_value(v);
	assert_true(id[0] >= '1' && id[0] <= '9');
	for (i = 0; id[i]; i++)
		assert_true(id[i] >= '0' && id[i] <= '9');
	assert_true(i <= 20);
	s->server_id = strtoull(id, &end, 10);
	assert_true(*end == '\0');
	v = json_object_get(j, "targets");
	assert_true(json_is_integer(v));
	s->targets = json_integer_value(v);
	v = json_object_get(j, "status");
	assert_true(json_is_string(v));
	snprintf(s->status, sizeof(s->status), "%s", json_string_value(v));
	json_decref(j);
}

/* An error reply: @status, the error object with @code, a message containing @needle. */
static void assert_error(const struct th_response *r, long status, const char *code,
			 const char *needle)
{
	json_t *j, *err;
	const char *msg;

	if (r->status != status)
		fail_msg("expected status %ld, got %ld: %s", status, r->status, r->body);
	j = body_json(r->status, r->content_type, r->body);
	err = json_object_get(j, "error");
	assert_true(json_is_object(err));
	assert_int_equal(json_object_size(j), 1);
	assert_int_equal(json_object_size(err), 2);
	assert_true(json_is_string(json_object_get(err, "code")));
	assert_string_equal(json_string_value(json_object_get(err, "code")), code);
	assert_true(json_is_string(json_object_get(err, "message")));
	msg = json_string_value(json_object_get(err, "message"));
	if (needle && !strstr(msg, needle))
		fail_msg("message '%s' does not mention '%s'", msg, needle);
	json_decref(j);
}

/* POST @body to /v1/messages with the token, blocking. */
static void post(struct th_response *r, const char *body)
{
	th_http(r, "POST", fx.url, TOKEN, body);
}

static void expect_error(const char *body, long status, const char *code, const char *needle)
{
	struct th_response r;

	post(&r, body);
	assert_error(&r, status, code, needle);
	th_response_release(&r);
}

/* expect_error() for a body of message() (taken). */
static void expect_error_free(char *body, long status, const char *code, const char *needle)
{
	expect_error(body, status, code, needle);
	free(body);
}

/* POST @body (taken), expecting 200 with @targets and @status. */
static uint64_t send_ok(char *body, json_int_t targets, const char *status)
{
	struct th_response r;
	struct sent s;

	post(&r, body);
	parse_sent(r.status, r.content_type, r.body, &s);
	assert_int_equal(s.targets, targets);
	assert_string_equal(s.status, status);
	th_response_release(&r);
	free(body);
	return s.server_id;
}

/* ---- a request on a thread of its own ---- */

struct post {
	pthread_t thread;
	char *body; /* owned */
	CURLcode rc;
	char curl_err[CURL_ERROR_SIZE];
	long status;
	char *reply; /* malloc'ed, NUL-terminated */
	size_t reply_len;
	char *content_type; /* malloc'ed, may be NULL */
};

static size_t post_collect(char *p, size_t size, size_t n, void *arg)
{
	struct post *ps = arg;
	size_t len = size * n;
	char *r = realloc(ps->reply, ps->reply_len + len + 1);

	if (!r)
		return 0;
	memcpy(r + ps->reply_len, p, len);
	ps->reply_len += len;
	r[ps->reply_len] = '\0';
	ps->reply = r;
	return len;
}

static void *post_run(void *arg)
{
	struct post *ps = arg;
	struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " TOKEN);
	struct curl_slist *h2 = h ? curl_slist_append(h, "Content-Type: application/json") : NULL;
	CURL *c = curl_easy_init();
	char *ct = NULL;

	ps->rc = CURLE_OUT_OF_MEMORY;
	if (c && h2) {
		curl_easy_setopt(c, CURLOPT_URL, fx.url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h2);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, ps->body);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, post_collect);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, ps);
		curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ps->curl_err);
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, POST_TIMEOUT_MS);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		ps->rc = curl_easy_perform(c);
		if (ps->rc == CURLE_OK) {
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ps->status);
			curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
			ps->content_type = ct ? strdup(ct) : NULL;
		}
	}
	curl_easy_cleanup(c);
	curl_slist_free_all(h2 ? h2 : h);
	return NULL;
}

/* Start POSTing @body (taken). */
static struct post *post_start(char *body)
{
	struct post *ps = calloc(1, sizeof(*ps));

	assert_non_null(ps);
	ps->body = body;
	if (pthread_create(&ps->thread, NULL, post_run, ps))
		fail_msg("cannot start a thread");
	return ps;
}

/* Wait for the answer, expecting 200; frees @ps. */
static void post_finish(struct post *ps, struct sent *s)
{
	pthread_join(ps->thread, NULL);
	if (ps->rc != CURLE_OK)
		fail_msg("POST /v1/messages: %s",
			 ps->curl_err[0] ? ps->curl_err : curl_easy_strerror(ps->rc));
	th_check_response("POST", "/v1/messages", ps->status, ps->content_type, ps->reply);
	parse_sent(ps->status, ps->content_type, ps->reply ? ps->reply : "", s);
	free(ps->body);
	free(ps->reply);
	free(ps->content_type);
	free(ps);
}

/* ---- devices ---- */

static uint64_t expect_server_deliver(struct rawdev *d, const void *payload, size_t len)
{
	const struct proto_frame *f = rawdev_expect(d, PROTO_DELIVER, 3000);

	assert_int_equal(f->u.deliver.sender_user.len, 5);
	assert_memory_equal(f->u.deliver.sender_user.p, "ferry", 5);
	assert_int_equal(f->u.deliver.sender_device, 0);
	assert_int_equal(f->u.deliver.payload.len, len);
	if (len)
		assert_memory_equal(f->u.deliver.payload.p, payload, len);
	assert_true(f->u.deliver.timestamp > 1700000000000ULL);
	return f->u.deliver.server_id;
}

/* Rows stored for @device. */
static int stored_rows(int64_t device)
{
	char sql[128];
	PGresult *res;
	int n;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
		 (long long)device);
	res = th_pg_exec(fx.pg, sql);
	n = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

/* Wait up to 10 s until @device has @n rows in the store. */
static void wait_rows(int64_t device, int n)
{
	for (int i = 0; i < 500; i++) {
		if (stored_rows(device) == n)
			return;
		sleep_ms(20);
	}
	fail_msg("device %lld has %d stored envelopes, not %d, after 10 s", (long long)device,
		 stored_rows(device), n);
}

/* ---- auth and validation ---- */

static void test_auth(void **state)
{
	struct th_response r;
	char *allow;

	/* Auth comes before anything about the body. */
	th_http(&r, "POST", fx.url, NULL, "{\"to_user\":\"x\"}");
	assert_error(&r, 401, "unauthorized", "missing Authorization header");
	th_response_release(&r);
	th_http(&r, "POST", fx.url, "not-the-token", "not json");
	assert_error(&r, 401, "unauthorized", "invalid bearer token");
	th_response_release(&r);
	th_http_hdr(&r, "POST", fx.url, "Authorization: Basic bXNnOnRlc3Q=", "{}");
	assert_error(&r, 401, "unauthorized", "scheme must be 'Bearer'");
	th_response_release(&r);

	th_http(&r, "GET", fx.url, TOKEN, NULL);
	assert_error(&r, 405, "method_not_allowed", "use POST");
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "POST");
	free(allow);
	th_response_release(&r);
}

static void test_bad_requests(void **state)
{
	static const struct {
		const char *body;
		const char *needle;
	} cases[] = {
		{ "", "request body is empty" },
		{ "[]", "must be a JSON object, not an array" },
		{ "{", "invalid JSON" },
		{ "{\"to_user\":\"u\",\"to_user\":\"v\",\"payload_b64\":\"\"}", "invalid JSON" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"\",\"extra\":1}", "unknown field 'extra'" },
		{ "{\"to\":\"u\",\"payload_b64\":\"\"}", "unknown field 'to'" },
		/* The target. */
		{ "{\"payload_b64\":\"YQ==\"}", "field 'to_user' or 'to_device' is required" },
		{ "{\"to_user\":null,\"to_device\":null,\"payload_b64\":\"YQ==\"}",
		  "field 'to_user' or 'to_device' is required" },
		{ "{\"to_user\":\"u\",\"to_device\":1,\"payload_b64\":\"YQ==\"}",
		  "'to_user' and 'to_device' exclude each other" },
		{ "{\"to_user\":\"a b\",\"payload_b64\":\"YQ==\"}",
		  "field 'to_user': user 'a b' is invalid: 1-64 bytes of [A-Za-z0-9._:@+-]" },
		{ "{\"to_user\":\"\",\"payload_b64\":\"YQ==\"}", "user '' is invalid" },
		{ "{\"to_user\":\"caf\\u00e9\",\"payload_b64\":\"YQ==\"}",
		  "user 'caf\\xC3\\xA9' is invalid" },
		{ "{\"to_user\":"
		  "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
		  "\"payload_b64\":\"YQ==\"}",
		  "is invalid: 1-64 bytes" },
		{ "{\"to_user\":5,\"payload_b64\":\"YQ==\"}",
		  "field 'to_user' must be a string, not a number" },
		{ "{\"to_device\":0,\"payload_b64\":\"YQ==\"}",
		  "field 'to_device' must be a positive integer, not 0" },
		{ "{\"to_device\":-4,\"payload_b64\":\"YQ==\"}",
		  "must be a positive integer, not -4" },
		{ "{\"to_device\":1.5,\"payload_b64\":\"YQ==\"}",
		  "must be a positive integer, not 1.5" },
		{ "{\"to_device\":true,\"payload_b64\":\"YQ==\"}",
		  "must be a positive integer, not a boolean" },
		{ "{\"to_device\":[1],\"payload_b64\":\"YQ==\"}",
		  "must be a positive integer, not an array" },
		{ "{\"to_device\":\"012\",\"payload_b64\":\"YQ==\"}",
		  "field 'to_device': device id '012' is invalid" },
		{ "{\"to_device\":\"12a\",\"payload_b64\":\"YQ==\"}",
		  "device id '12a' is invalid" },
		{ "{\"to_device\":\"-1\",\"payload_b64\":\"YQ==\"}", "device id '-1' is invalid" },
		{ "{\"to_device\":\"99999999999999999999\",\"payload_b64\":\"YQ==\"}",
		  "device id '99999999999999999999' is invalid" },
		/* The payload. */
		{ "{\"to_user\":\"u\"}", "field 'payload_b64' is required" },
		{ "{\"to_user\":\"u\",\"payload_b64\":null}",
		  "field 'payload_b64' must be a string, not null" },
		{ "{\"to_user\":\"u\",\"payload_b64\":12}",
		  "field 'payload_b64' must be a string, not a number" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ\"}",
		  "not standard base64: its length, 2, is not a multiple of 4" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YWJjZA=\"}", "its length, 7, is not" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"Y===\"}",
		  "'=' before the end at offset 1" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"====\"}",
		  "'=' before the end at offset 0" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ==YQ==\"}",
		  "'=' before the end at offset 2" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YW J\"}",
		  "a character outside A-Z a-z 0-9 + / = at offset 2" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YWJ\\n\"}", "a character outside" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YWJj-_8=\"}", "a character outside" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YWJj\\u00e9==\"}", "a character outside" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YR==\"}",
		  "nonzero bits after the last byte" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YWJ=\"}",
		  "nonzero bits after the last byte" },
		/* The time to live. */
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ==\",\"ttl\":-1}",
		  "field 'ttl' must be a whole number of seconds, 0 or more, not -1" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ==\",\"ttl\":\"60\"}",
		  "field 'ttl' must be a whole number of seconds, 0 or more, not a string" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ==\",\"ttl\":1.5}", "or more, not 1.5" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ==\",\"ttl\":true}",
		  "or more, not a boolean" },
		{ "{\"to_user\":\"u\",\"payload_b64\":\"YQ==\",\"ttl\":{}}",
		  "or more, not an object" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct th_response r;

		post(&r, cases[i].body);
		if (r.status != 400)
			fail_msg("case %zu (%s): expected 400, got %ld: %s", i, cases[i].body,
				 r.status, r.body);
		assert_error(&r, 400, "bad_request", cases[i].needle);
		th_response_release(&r);
	}
}

static void test_not_found(void **state)
{
	char secret[64], path[128];
	struct th_response r;
	int64_t id;

	expect_error_free(message("nobody-here", 0, "x", 1, NO_TTL), 404, "not_found",
			  "cannot send to user 'nobody-here'");
	expect_error_free(message(NULL, 987654321987LL, "x", 1, NO_TTL), 404, "not_found",
			  "cannot send to device '987654321987'");
	expect_error("{\"to_device\":\"987654321987\",\"payload_b64\":\"eA==\"}", 404, "not_found",
		     "device '987654321987'");

	/* A user whose one device was deleted has none. */
	th_device_create(&fx.d, TOKEN, "nf-gone", &id, secret);
	snprintf(path, sizeof(path), "%s/v1/devices/%lld", fx.d.admin_url, (long long)id);
	th_http(&r, "DELETE", path, TOKEN, NULL);
	assert_int_equal(r.status, 204);
	th_response_release(&r);
	expect_error_free(message("nf-gone", 0, "x", 1, NO_TTL), 404, "not_found",
			  "user 'nf-gone'");
	expect_error_free(message(NULL, id, "x", 1, NO_TTL), 404, "not_found", "device '");
}

static void test_too_large(void **state)
{
	static uint8_t big[MAX_PAYLOAD + 1];
	struct rawdev *d = rawdev_new();
	char secret[64], *body;
	uint64_t sid;
	int64_t id;

	memset(big, 0xa5, sizeof(big));
	th_device_create(&fx.d, TOKEN, "big-1", &id, secret);
	expect_error_free(message("big-1", 0, big, MAX_PAYLOAD + 1, NO_TTL), 413,
			  "payload_too_large", "payload is 3969 bytes, over the limit of 3968");
	expect_error_free(message(NULL, id, big, MAX_PAYLOAD + 100, NO_TTL), 413,
			  "payload_too_large", "[gateway] max_frame");

	/* The largest payload goes through (stored: the device is offline) and
	 * fits in a DELIVER. */
	sid = send_ok(message("big-1", 0, big, MAX_PAYLOAD, NO_TTL), 1, "stored");
	assert_int_equal(rawdev_login_pending(d, fx.port, id, secret), 1);
	assert_true(expect_server_deliver(d, big, MAX_PAYLOAD) == sid);
	rawdev_ack(d, sid);
	assert_int_equal(rawdev_expect(d, PROTO_QUEUE_EMPTY, 3000)->u.drained, 1);
	rawdev_free(d);

	/* A body over [admin] max_body (64k) is refused by the HTTP side. */
	body = malloc(70 * 1024);
	assert_non_null(body);
	memset(body, ' ', 70 * 1024 - 1);
	body[70 * 1024 - 1] = '\0';
	expect_error_free(body, 413, "payload_too_large", "[admin] max_body");
}

/* Validation 400s come before the gateway's own 404s. */
static void test_validation_before_lookup(void **state)
{
	expect_error("{\"to_user\":\"nobody-here\",\"payload_b64\":\"@@@@\"}", 400, "bad_request",
		     "not standard base64");
	expect_error("{\"to_user\":\"nobody-here\",\"payload_b64\":\"\",\"ttl\":-5}", 400,
		     "bad_request", "field 'ttl'");
}

/* ---- delivery ---- */

/* The case: one device online, one offline. */
static void test_to_user_online_and_offline(void **state)
{
	struct rawdev *on = rawdev_new(), *off = rawdev_new();
	char s_on[64], s_off[64];
	int64_t id_on, id_off;
	struct post *ps;
	struct sent s;
	uint64_t sid;

	th_device_create(&fx.d, TOKEN, "mix", &id_on, s_on);
	th_device_create(&fx.d, TOKEN, "mix", &id_off, s_off);
	rawdev_login(on, fx.port, id_on, s_on);

	ps = post_start(message("mix", 0, binary_payload, sizeof(binary_payload), NO_TTL));
	sid = expect_server_deliver(on, binary_payload, sizeof(binary_payload));
	rawdev_ack(on, sid);
	post_finish(ps, &s);
	assert_true(s.server_id == sid);
	assert_int_equal(s.targets, 2);
	assert_string_equal(s.status, "stored");
	/* Only the offline device's copy is in the store. */
	assert_int_equal(stored_rows(id_on), 0);
	assert_int_equal(stored_rows(id_off), 1);

	/* The offline device gets it when it connects, then catches up. */
	assert_int_equal(rawdev_login_pending(off, fx.port, id_off, s_off), 1);
	assert_true(expect_server_deliver(off, binary_payload, sizeof(binary_payload)) == sid);
	rawdev_ack(off, sid);
	assert_int_equal(rawdev_expect(off, PROTO_QUEUE_EMPTY, 3000)->u.drained, 1);
	rawdev_expect_silence(on, 100);
	rawdev_expect_silence(off, 100);

	/* Acknowledged, it is deleted: the next connection finds nothing. */
	wait_rows(id_off, 0);
	rawdev_close(off);
	rawdev_login(off, fx.port, id_off, s_off);
	rawdev_free(on);
	rawdev_free(off);
}

static void test_to_user_all_online(void **state)
{
	struct rawdev *a = rawdev_new(), *b = rawdev_new();
	char sa[64], sb[64];
	int64_t ia, ib;
	struct post *ps;
	struct sent s;
	uint64_t sid;

	th_device_create(&fx.d, TOKEN, "both", &ia, sa);
	th_device_create(&fx.d, TOKEN, "both", &ib, sb);
	rawdev_login(a, fx.port, ia, sa);
	rawdev_login(b, fx.port, ib, sb);

	ps = post_start(message("both", 0, "to both", 7, 3600));
	sid = expect_server_deliver(a, "to both", 7);
	assert_true(expect_server_deliver(b, "to both", 7) == sid);
	rawdev_ack(a, sid);
	rawdev_ack(b, sid);
	post_finish(ps, &s);
	assert_true(s.server_id == sid);
	assert_int_equal(s.targets, 2);
	assert_string_equal(s.status, "delivered");
	assert_int_equal(stored_rows(ia) + stored_rows(ib), 0);

	/* Each message gets a server id of its own. */
	ps = post_start(message("both", 0, "again", 5, NO_TTL));
	sid = expect_server_deliver(a, "again", 5);
	assert_true(sid != s.server_id);
	rawdev_ack(a, sid);
	rawdev_ack(b, expect_server_deliver(b, "again", 5));
	post_finish(ps, &s);
	assert_string_equal(s.status, "delivered");
	rawdev_free(a);
	rawdev_free(b);
}

static void test_to_device(void **state)
{
	struct rawdev *d1 = rawdev_new(), *d2 = rawdev_new();
	char s1[64], s2[64], body[128];
	int64_t i1, i2;
	struct post *ps;
	struct sent s;
	uint64_t sid;

	th_device_create(&fx.d, TOKEN, "dev", &i1, s1);
	th_device_create(&fx.d, TOKEN, "dev", &i2, s2);
	rawdev_login(d1, fx.port, i1, s1);
	rawdev_login(d2, fx.port, i2, s2);

	/* Only the named device; the user's other device sees nothing. */
	ps = post_start(message(NULL, i2, "just d2", 7, NO_TTL));
	sid = expect_server_deliver(d2, "just d2", 7);
	rawdev_ack(d2, sid);
	post_finish(ps, &s);
	assert_true(s.server_id == sid);
	assert_int_equal(s.targets, 1);
	assert_string_equal(s.status, "delivered");
	rawdev_expect_silence(d1, 200);

	/* The id as the decimal string the API hands out; an empty payload. */
	snprintf(body, sizeof(body), "{\"to_device\":\"%lld\",\"payload_b64\":\"\"}",
		 (long long)i1);
	ps = post_start(strdup(body));
	sid = expect_server_deliver(d1, "", 0);
	rawdev_ack(d1, sid);
	post_finish(ps, &s);
	assert_int_equal(s.targets, 1);
	assert_string_equal(s.status, "delivered");
	rawdev_expect_silence(d2, 100);

	/* Offline: stored for that device only. */
	rawdev_close(d2);
	sid = send_ok(message(NULL, i2, "later", 5, NO_TTL), 1, "stored");
	assert_int_equal(stored_rows(i1), 0);
	assert_int_equal(stored_rows(i2), 1);
	rawdev_expect_silence(d1, 100);
	assert_int_equal(rawdev_login_pending(d2, fx.port, i2, s2), 1);
	assert_true(expect_server_deliver(d2, "later", 5) == sid);
	rawdev_ack(d2, sid);
	assert_int_equal(rawdev_expect(d2, PROTO_QUEUE_EMPTY, 3000)->u.drained, 1);
	rawdev_free(d1);
	rawdev_free(d2);
}

/* An online device that does not acknowledge in time: the envelope is stored. */
static void test_unacknowledged_is_stored(void **state)
{
	struct rawdev *d = rawdev_new();
	char secret[64];
	struct post *ps;
	struct sent s;
	uint64_t sid;
	int64_t id;

	th_device_create(&fx.d, TOKEN, "slow", &id, secret);
	rawdev_login(d, fx.port, id, secret);
	ps = post_start(message("slow", 0, "ack me", 6, NO_TTL));
	sid = expect_server_deliver(d, "ack me", 6);
	post_finish(ps, &s); /* no ack: returns after ack_timeout, once committed */
	assert_true(s.server_id == sid);
	assert_int_equal(s.targets, 1);
	assert_string_equal(s.status, "stored");
	assert_int_equal(stored_rows(id), 1);

	/* It is not lost: the next connection gets it again. */
	rawdev_close(d);
	assert_int_equal(rawdev_login_pending(d, fx.port, id, secret), 1);
	assert_true(expect_server_deliver(d, "ack me", 6) == sid);
	rawdev_ack(d, sid);
	assert_int_equal(rawdev_expect(d, PROTO_QUEUE_EMPTY, 3000)->u.drained, 1);
	wait_rows(id, 0);
	rawdev_free(d);
}

/* Seconds between created and expires of @device's envelopes, oldest first. */
static void stored_ttls(int64_t device, double *ttls, int n)
{
	char sql[192];
	PGresult *res;

	snprintf(sql, sizeof(sql),
		 "SELECT extract(epoch FROM expires - created) FROM envelopes "
		 "WHERE recipient_device = %lld ORDER BY seq",
		 (long long)device);
	res = th_pg_exec(fx.pg, sql);
	assert_int_equal(PQntuples(res), n);
	for (int i = 0; i < n; i++)
		ttls[i] = strtod(PQgetvalue(res, i, 0), NULL);
	PQclear(res);
}

static void assert_ttl(double got, double want)
{
	/* created is the commit's time, expires counts from acceptance. */
	if (got < want - 5 || got > want + 1)
		fail_msg("stored with a time to live of %.3f s, expected %.0f s", got, want);
}

static void test_ttl(void **state)
{
	struct rawdev *d = rawdev_new();
	char s1[64], s2[64], s3[64];
	int64_t i1, i2, i3;
	double ttls[MAX_PENDING];

	th_device_create(&fx.d, TOKEN, "ttl-1", &i1, s1);
	th_device_create(&fx.d, TOKEN, "ttl-2", &i2, s2);
	th_device_create(&fx.d, TOKEN, "ttl-3", &i3, s3);

	/* Given, absent, 0 (the default), over the default (capped at it). */
	send_ok(message("ttl-1", 0, "a", 1, 60), 1, "stored");
	send_ok(message("ttl-1", 0, "b", 1, NO_TTL), 1, "stored");
	send_ok(message("ttl-1", 0, "c", 1, 0), 1, "stored");
	send_ok(message(NULL, i2, "d", 1, 1000000000000LL), 1, "stored");
	send_ok(strdup("{\"to_user\":\"ttl-2\",\"payload_b64\":\"ZQ==\",\"ttl\":null}"), 1,
		"stored");
	stored_ttls(i1, ttls, 3);
	assert_ttl(ttls[0], 60);
	assert_ttl(ttls[1], DEFAULT_TTL);
	assert_ttl(ttls[2], DEFAULT_TTL);
	stored_ttls(i2, ttls, 2);
	assert_ttl(ttls[0], DEFAULT_TTL);
	assert_ttl(ttls[1], DEFAULT_TTL);

	/* An envelope past its time to live is deleted, never delivered. */
	send_ok(message("ttl-3", 0, "short-lived", 11, 1), 1, "stored");
	assert_int_equal(stored_rows(i3), 1);
	wait_rows(i3, 0);
	rawdev_login(d, fx.port, i3, s3);
	rawdev_expect_silence(d, 300);
	rawdev_free(d);
}

/* A retry with the same client_id is the same message: stored once (the
 * same server id), and an online device sees the same (sender device 0,
 * client id) twice, which it drops as a duplicate. */
static void test_client_id_retry(void **state)
{
	struct rawdev *d = rawdev_new();
	const struct proto_frame *f;
	char s1[64], s2[64];
	int64_t i1, i2;
	uint64_t a, b, c;

	th_device_create(&fx.d, TOKEN, "retry-off", &i1, s1);
	th_device_create(&fx.d, TOKEN, "retry-on", &i2, s2);
	a = send_ok(strdup("{\"to_user\":\"retry-off\",\"payload_b64\":\"YQ==\","
			   "\"client_id\":\"9007199254740993\"}"),
		    1, "stored");
	b = send_ok(strdup("{\"to_user\":\"retry-off\",\"payload_b64\":\"YQ==\","
			   "\"client_id\":\"9007199254740993\"}"),
		    1, "stored");
	assert_true(a == b);
	assert_int_equal(stored_rows(i1), 1);
	c = send_ok(strdup("{\"to_user\":\"retry-off\",\"payload_b64\":\"YQ==\","
			   "\"client_id\":7}"),
		    1, "stored");
	assert_true(c != a);
	assert_int_equal(stored_rows(i1), 2);

	/* Online: both tries reach the device with the same client id. */
	rawdev_login(d, fx.port, i2, s2);
	for (int i = 0; i < 2; i++) {
		struct post *ps = post_start(strdup("{\"to_user\":\"retry-on\","
						    "\"payload_b64\":\"Yg==\",\"client_id\":42}"));
		struct sent s;

		f = rawdev_expect(d, PROTO_DELIVER, 3000);
		assert_int_equal(f->u.deliver.sender_device, 0);
		assert_int_equal(f->u.deliver.client_id, 42);
		rawdev_ack(d, f->u.deliver.server_id);
		post_finish(ps, &s);
		assert_string_equal(s.status, "delivered");
	}
	expect_error("{\"to_user\":\"retry-on\",\"payload_b64\":\"Yg==\",\"client_id\":0}", 400,
		     "bad_request", "client_id");
	expect_error("{\"to_user\":\"retry-on\",\"payload_b64\":\"Yg==\",\"client_id\":\"x\"}", 400,
		     "bad_request", "client_id");
	rawdev_free(d);
}

static void test_queue_full(void **state)
{
	struct rawdev *d = rawdev_new();
	uint64_t sids[MAX_PENDING];
	char secret[64], text[16];
	struct post *ps;
	struct sent s;
	int64_t id;
	int i;

	th_device_create(&fx.d, TOKEN, "full", &id, secret);
	for (i = 0; i < MAX_PENDING; i++) {
		snprintf(text, sizeof(text), "m%d", i);
		sids[i] = send_ok(message("full", 0, text, strlen(text), NO_TTL), 1, "stored");
	}
	expect_error_free(message("full", 0, "one more", 8, NO_TTL), 429, "queue_full",
			  "cannot send to user 'full'");
	expect_error_free(message(NULL, id, "one more", 8, NO_TTL), 429, "queue_full",
			  "cannot send to device '");
	assert_int_equal(stored_rows(id), MAX_PENDING);

	/* What was accepted comes in acceptance order; then there is room again. */
	assert_int_equal(rawdev_login_pending(d, fx.port, id, secret), MAX_PENDING);
	for (i = 0; i < MAX_PENDING; i++) {
		snprintf(text, sizeof(text), "m%d", i);
		assert_true(expect_server_deliver(d, text, strlen(text)) == sids[i]);
		rawdev_ack(d, sids[i]);
	}
	assert_int_equal(rawdev_expect(d, PROTO_QUEUE_EMPTY, 3000)->u.drained, MAX_PENDING);
	wait_rows(id, 0);
	ps = post_start(message("full", 0, "room", 4, NO_TTL));
	rawdev_ack(d, expect_server_deliver(d, "room", 4));
	post_finish(ps, &s);
	assert_string_equal(s.status, "delivered");
	rawdev_free(d);
}

/* ---- without a gateway, without a database ---- */

static void test_without_gateway(void **state)
{
	struct th_ferryd d;
	struct th_response r;
	char *cfg, url[128], *retry;
	int admin = th_free_port();

	cfg = th_ferryd_config(fx.conninfo, admin, TOKEN); /* [gateway] listen = "" */
	th_ferryd_start(&d, cfg, admin);
	snprintf(url, sizeof(url), "%s/v1/messages", d.admin_url);
	th_http(&r, "POST", url, TOKEN, "{\"to_user\":\"mix\",\"payload_b64\":\"eA==\"}");
	assert_error(&r, 503, "unavailable", "without a device gateway");
	retry = th_response_header(&r, "Retry-After");
	assert_null(retry); /* retrying does not help */
	th_response_release(&r);
	/* The request is still checked first. */
	th_http(&r, "POST", url, TOKEN, "{\"to_user\":\"mix\"}");
	assert_error(&r, 400, "bad_request", "field 'payload_b64' is required");
	th_response_release(&r);
	th_http(&r, "POST", url, NULL, "{}");
	assert_error(&r, 401, "unauthorized", NULL);
	th_response_release(&r);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	free(cfg);
}

/* Turn connections to the database of @conninfo on or off (as the cluster's owner). */
static void database_allow(PGconn *owner, const char *conninfo, int allow)
{
	const char *name = strstr(conninfo, "dbname=");
	char sql[256];

	assert_non_null(name);
	name += strlen("dbname=");
	snprintf(sql, sizeof(sql), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS %s", name,
		 allow ? "true" : "false");
	PQclear(th_pg_exec(owner, sql));
	if (allow)
		return;
	snprintf(sql, sizeof(sql),
		 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
		 "AND pid <> pg_backend_pid()",
		 name);
	PQclear(th_pg_exec(owner, sql));
}

/* The store cannot take a message: 503 with Retry-After, then it can again. */
static void test_store_unavailable(void **state)
{
	char *conninfo = th_db_new("msgdown"), *cfg, *path, *owner_info, *retry = NULL;
	char extra[256], url[128], secret[64];
	int admin = th_free_port(), port = th_free_port(), i;
	struct th_response r;
	struct th_ferryd d;
	PGconn *owner;
	int64_t id;

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 1\n\n[store]\nconnect_timeout = 1\n",
		 port);
	cfg = th_ferryd_config_ex(conninfo, admin, TOKEN, extra);
	path = th_write_file("msgdown.ini", cfg);
	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL), 0);
	th_ferryd_start(&d, cfg, admin);
	/* The store connects in the background: before it has, a message can
	 * be neither delivered nor stored (503), which is not this test. */
	th_ferryd_wait_ready(&d, 10000);
	snprintf(url, sizeof(url), "%s/v1/messages", d.admin_url);
	th_device_create(&d, TOKEN, "down", &id, secret);
	th_http(&r, "POST", url, TOKEN, "{\"to_user\":\"down\",\"payload_b64\":\"eA==\"}");
	if (r.status != 200)
		fail_msg("expected 200 before the database went away, got %ld: %s", r.status,
			 r.body);
	th_response_release(&r);

	/* The database goes away: nothing can be stored, nothing is acknowledged. */
	if (asprintf(&owner_info, "host=%s user=%s dbname=postgres", getenv("FERRY_TEST_PGHOST"),
		     getenv("FERRY_TEST_PGUSER")) < 0)
		fail_msg("out of memory");
	owner = th_pg_connect(owner_info);
	database_allow(owner, conninfo, 0);
	for (i = 0; i < 20; i++) {
		th_http(&r, "POST", url, TOKEN, "{\"to_user\":\"down\",\"payload_b64\":\"eQ==\"}");
		if (r.status == 503)
			break;
		if (r.status == 200)
			fail_msg("a message was accepted while the database was unreachable");
		th_response_release(&r);
		sleep_ms(250);
	}
	if (i == 20)
		fail_msg("no 503 within 5 s of losing the database");
	assert_error(&r, 503, "unavailable", "try again later");
	retry = th_response_header(&r, "Retry-After");
	assert_non_null(retry);
	assert_string_equal(retry, "1");
	free(retry);
	th_response_release(&r);

	/* Back: accepted again (the store reconnects on its own). */
	database_allow(owner, conninfo, 1);
	for (i = 0; i < 80; i++) {
		th_http(&r, "POST", url, TOKEN, "{\"to_user\":\"down\",\"payload_b64\":\"eg==\"}");
		if (r.status == 200)
			break;
		th_response_release(&r);
		sleep_ms(250);
	}
	if (i == 80)
		fail_msg("messages still refused 20 s after the database came back");
	th_response_release(&r);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	PQfinish(owner);
	unlink(path);
	free(path);
	free(owner_info);
	free(cfg);
	free(conninfo);
}

/* ---- logs ---- */

static void test_log_has_no_payload(void **state)
{
	char *enc = b64(MARKER, strlen(MARKER)), *log;

	send_ok(message("log-user", 0, MARKER, strlen(MARKER), NO_TTL), 1, "stored");
	th_log_wait(&fx.d, "event=admin_message_sent", 1);
	log = th_read_file(fx.d.log_path);
	assert_null(strstr(log, MARKER));
	assert_null(strstr(log, enc));
	free(log);
	free(enc);
}

static int log_user_setup(void **state)
{
	char secret[64];
	int64_t id;

	th_device_create(&fx.d, TOKEN, "log-user", &id, secret);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_validation_before_lookup),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_to_user_online_and_offline),
		cmocka_unit_test(test_to_user_all_online),
		cmocka_unit_test(test_to_device),
		cmocka_unit_test(test_unacknowledged_is_stored),
		cmocka_unit_test(test_ttl),
		cmocka_unit_test(test_client_id_retry),
		cmocka_unit_test(test_queue_full),
		cmocka_unit_test(test_without_gateway),
		cmocka_unit_test(test_store_unavailable),
		cmocka_unit_test_setup(test_log_has_no_payload, log_user_setup),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("messages", tests, setup, teardown);
}
