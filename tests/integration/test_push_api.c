/*
 * test_push_api.c - POST /v1/push and GET /v1/stats end to end: ferryd
 * against a throwaway PostgreSQL and the mock providers
 * (tests/mock/README.md) over HTTP/2 and TLS.
 *
 * One ferryd serves every test, with the default app's APNs credentials
 * (mock_apns, which allows only TOPIC) and FCM credentials (mock_fcm). The
 * device gateway listens, since the push service runs with it; devices are
 * registered through the admin API and never connect, and nothing is sent
 * to them but direct pushes, so the mocks see only what the tests push. Each
 * test uses tokens of its own and reads what the mocks saw from their
 * request logs; a token's text chooses the mock's answer ("0ff410..." is
 * APNs 410 Unregistered, "0ff400..." 400 BadDeviceToken, "unregistered..."
 * FCM 404 UNREGISTERED).
 *
 * test_no_push_service starts a second ferryd of its own, without the
 * device gateway and so without a push service.
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
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "common/banned.h"

#define TOKEN "push-api-test-admin-token"
#define KEY_ID TH_KEY_ID
#define TEAM_ID TH_TEAM_ID
#define TOPIC TH_TOPIC
#define TTL_S 86400 /* [push] ttl's default */

struct fixture {
	char *conninfo;
	struct th_push_keys k;
	char *sa;
	struct th_mock apns, fcm;
	struct th_ferryd d;
};

static struct fixture fx;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

/* ---- set-up ---- */

static int setup(void **state)
{
	char extra[4096], *path, *config;
	int admin = th_free_port();

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	th_push_keys_make(&fx.k);
	th_mock_apns_start(&fx.apns, &fx.k, (const char *[]){ "--topic", TOPIC, NULL });
	th_mock_fcm_start(&fx.fcm, &fx.k, NULL);
	fx.sa = th_service_account_file(fx.k.rsa, &fx.fcm, TH_PROJECT, TH_SA_EMAIL);
	fx.conninfo = th_db_new("pushapi");
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 1\n\n"
		 "[push]\nca_file = %s\n\n"
		 "[push.apns]\nendpoint = %s\nsandbox_endpoint = %s\nkey_file = %s\n"
		 "key_id = " KEY_ID "\nteam_id = " TEAM_ID "\ntopic = " TOPIC "\n\n"
		 "[push.fcm]\nendpoint = %s\nservice_account = %s\n",
		 th_free_port(), fx.k.cert, fx.apns.base, fx.apns.base, fx.k.p8, fx.fcm.base,
		 fx.sa);
	config = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("pushapi.ini", config);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, config, admin);
	unlink(path);
	free(path);
	free(config);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	(void)state;
	th_mock_stop(&fx.apns);
	th_mock_stop(&fx.fcm);
	th_push_keys_release(&fx.k);
	unlink(fx.sa);
	free(fx.sa);
	free(fx.conninfo);
	curl_global_cleanup();
	return status == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static json_t *request_at(const struct th_ferryd *d, const char *method, const char *path,
			  const char *body, long want)
{
	char url[256];
	struct th_response r;
	json_error_t jerr;
	json_t *j;

	snprintf(url, sizeof(url), "%s%s", d->admin_url, path);
	th_http(&r, method, url, TOKEN, body);
	if (r.status != want)
		fail_msg("%s %s: %ld, not %ld: %s", method, path, r.status, want, r.body);
	j = json_loads(r.body, 0, &jerr);
	if (!j)
		fail_msg("%s %s: not JSON (%s): %s", method, path, jerr.text, r.body);
	th_response_release(&r);
	return j;
}

static json_t *request_json(const char *method, const char *path, const char *body, long want)
{
	return request_at(&fx.d, method, path, body, want);
}

/* POST /v1/push with @body, expecting 200; the answer. */
static json_t *push(const char *body)
{
	return request_json("POST", "/v1/push", body, 200);
}

/* POST /v1/push to @d with @body: @status, bad_request etc., a message
 * containing @needle. */
static void push_refused_at(const struct th_ferryd *d, const char *body, long status,
			    const char *code, const char *needle)
{
	json_t *j = request_at(d, "POST", "/v1/push", body, status);
	json_t *err = json_object_get(j, "error");
	const char *msg = json_string_value(json_object_get(err, "message"));

	assert_string_equal(json_string_value(json_object_get(err, "code")), code);
	if (!msg || !strstr(msg, needle))
		fail_msg("message '%s' does not contain '%s' (body %s)", msg ? msg : "(none)",
			 needle, body);
	json_decref(j);
}

static void push_400(const char *body, const char *needle)
{
	push_refused_at(&fx.d, body, 400, "bad_request", needle);
}

/* A device of @user with push token @token of @provider (NULL: none). */
static int64_t device_new(const char *user, const char *provider, const char *token)
{
	char secret[64], path[64], body[512];
	int64_t id;

	th_device_create(&fx.d, TOKEN, user, &id, secret);
	if (!token)
		return id;
	snprintf(path, sizeof(path), "/v1/devices/%lld/push", (long long)id);
	snprintf(body, sizeof(body), "{\"provider\":\"%s\",\"token\":\"%s\"}", provider, token);
	json_decref(request_json("PUT", path, body, 200));
	return id;
}

/* 1 if device @id has a push token now. */
static int has_token(int64_t id)
{
	char path[64];
	json_t *j;
	int has;

	snprintf(path, sizeof(path), "/v1/devices/%lld", (long long)id);
	j = request_json("GET", path, NULL, 200);
	has = json_is_object(json_object_get(j, "push"));
	json_decref(j);
	return has;
}

/* The requests @m logged for device token @token, waiting up to 5 s for
 * @n of them (the reply may overtake the log line). */
static json_t *requests_for(const struct th_mock *m, const char *token, size_t n)
{
	json_t *lines = NULL;

	for (int t = 0; t < 100; t++) {
		json_decref(lines);
		lines = th_mock_log_where(m, "token", token);
		if (json_array_size(lines) >= n)
			break;
		sleep_ms(50);
	}
	return lines;
}

/* Lines in @m's log so far. */
static size_t log_lines(const struct th_mock *m)
{
	json_t *all = th_mock_log(m);
	size_t n = json_array_size(all);

	json_decref(all);
	return n;
}

static const char *str_of(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		fail_msg("'%s' is not a string", key);
	return json_string_value(v);
}

static long long int_of(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("'%s' is not an integer", key);
	return json_integer_value(v);
}

static void assert_json_text(const char *text, const char *want)
{
	json_t *got = json_loads(text, 0, NULL), *exp = json_loads(want, 0, NULL);

	assert_non_null(exp);
	if (!got || !json_equal(got, exp))
		fail_msg("got %s, want %s", text, want);
	json_decref(got);
	json_decref(exp);
}

/* Result @i of a 200 answer, checked to have exactly the members given:
 * @device (0: a token target, whose token_prefix must be @prefix),
 * @provider (NULL: none), @status, @http (0: none), @reason (NULL: none),
 * @removed. */
static void assert_result(json_t *ans, size_t i, long long device, const char *prefix,
			  const char *provider, const char *status, long http, const char *reason,
			  int removed)
{
	json_t *r = json_array_get(json_object_get(ans, "results"), i);
	size_t members = 2;
	char id[24];

	if (!r)
		fail_msg("no result %zu", i);
	if (device) {
		snprintf(id, sizeof(id), "%lld", device);
		assert_string_equal(str_of(r, "device"), id);
	} else {
		assert_string_equal(str_of(r, "token_prefix"), prefix);
	}
	assert_string_equal(str_of(r, "status"), status);
	if (provider) {
		assert_string_equal(str_of(r, "provider"), provider);
		members++;
	}
	if (http) {
		assert_int_equal(int_of(r, "http_status"), http);
		members++;
	}
	if (reason) {
		assert_string_equal(str_of(r, "reason"), reason);
		members++;
	}
	if (removed) {
		assert_true(json_is_true(json_object_get(r, "token_removed")));
		members++;
	}
	if (json_object_size(r) != members) {
		char *text = json_dumps(r, 0);

		fail_msg("result %zu has other members: %s", i, text);
	}
}

static void assert_counts(json_t *ans, size_t n, long long sent, long long failed)
{
	assert_int_equal(json_array_size(json_object_get(ans, "results")), n);
	assert_int_equal(int_of(ans, "sent"), sent);
	assert_int_equal(int_of(ans, "failed"), failed);
	assert_int_equal(json_object_size(ans), 3);
}

/* ---- tests ---- */

/* A device's APNs token: the alert, badge, sound and data as APNs wants them. */
static void test_apns_device(void **state)
{
	const char *tok = "aaaa0101";
	int64_t id = device_new("apnsdev", "apns", tok);
	char body[512];
	json_t *ans, *lines, *l;

	(void)state;
	snprintf(body, sizeof(body),
		 "{\"devices\":[%lld],\"title\":\"Hello\",\"body\":\"World \\u00e9\","
		 "\"badge\":5,\"sound\":\"ping.caf\",\"data\":{\"k\":\"v\",\"thread\":\"7\"},"
		 "\"collapse_id\":\"news-1\",\"expiration\":1900000000}",
		 (long long)id);
	ans = push(body);
	assert_counts(ans, 1, 1, 0);
	assert_result(ans, 0, id, NULL, "apns", "ok", 200, NULL, 0);
	json_decref(ans);
	lines = requests_for(&fx.apns, tok, 1);
	assert_int_equal(json_array_size(lines), 1);
	l = json_array_get(lines, 0);
	assert_int_equal(int_of(l, "status"), 200);
	assert_string_equal(th_json_str(l, "topic"), TOPIC);
	assert_string_equal(th_json_str(l, "push_type"), "alert");
	assert_string_equal(th_json_str(l, "priority"), "10");
	assert_string_equal(th_json_str(l, "collapse_id"), "news-1");
	assert_string_equal(th_json_str(l, "expiration"), "1900000000");
	assert_json_text(th_json_str(l, "payload"),
			 "{\"aps\":{\"alert\":{\"title\":\"Hello\",\"body\":\"World \\u00e9\"},"
			 "\"badge\":5,\"sound\":\"ping.caf\"},\"k\":\"v\",\"thread\":\"7\"}");
	json_decref(lines);
	assert_true(has_token(id));
}

/* Without a title, body, sound or badge: a background push (priority 5),
 * which expires [push] ttl from now. */
static void test_apns_background(void **state)
{
	const char *tok = "aaaa0102";
	json_t *ans, *lines, *l;
	long long exp, now;

	(void)state;
	ans = push("{\"tokens\":[{\"provider\":\"apns\",\"token\":\"aaaa0102\"}],"
		   "\"data\":{\"sync\":\"1\"}}");
	assert_counts(ans, 1, 1, 0);
	assert_result(ans, 0, 0, "aaaa\xe2\x80\xa6", "apns", "ok", 200, NULL, 0);
	json_decref(ans);
	now = (long long)time(NULL);
	lines = requests_for(&fx.apns, tok, 1);
	l = json_array_get(lines, 0);
	assert_non_null(l);
	assert_string_equal(th_json_str(l, "push_type"), "background");
	assert_string_equal(th_json_str(l, "priority"), "5");
	assert_true(json_is_null(json_object_get(l, "collapse_id")));
	exp = strtoll(th_json_str(l, "expiration"), NULL, 10);
	assert_true(exp >= now + TTL_S - 60 && exp <= now + TTL_S + 5);
	assert_json_text(th_json_str(l, "payload"),
			 "{\"aps\":{\"content-available\":1},\"sync\":\"1\"}");
	json_decref(lines);
}

/* FCM token targets: data, priority normal, collapse key and ttl. */
static void test_fcm_tokens(void **state)
{
	static const char *const toks[] = { "fcm-direct-token-0001", "fcm-direct-token-0002" };
	long long exp = (long long)time(NULL) + 600;
	char body[1024];
	json_t *ans;

	(void)state;
	snprintf(body, sizeof(body),
		 "{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"%s\"},"
		 "{\"provider\":\"fcm\",\"token\":\"%s\",\"app\":null}],"
		 "\"title\":\"T\",\"body\":\"B\",\"data\":{\"a\":\"b\"},\"priority\":\"normal\","
		 "\"collapse_id\":\"grp\",\"expiration\":%lld}",
		 toks[0], toks[1], exp);
	ans = push(body);
	assert_counts(ans, 2, 2, 0);
	assert_result(ans, 0, 0, "fcm-dire\xe2\x80\xa6", "fcm", "ok", 200, NULL, 0);
	assert_result(ans, 1, 0, "fcm-dire\xe2\x80\xa6", "fcm", "ok", 200, NULL, 0);
	json_decref(ans);
	for (int i = 0; i < 2; i++) {
		json_t *lines = requests_for(&fx.fcm, toks[i], 1), *l = json_array_get(lines, 0);
		json_t *msg, *sent, *android;
		long long ttl;

		assert_int_equal(json_array_size(lines), 1);
		assert_int_equal(int_of(l, "status"), 200);
		sent = json_loads(th_json_str(l, "body"), 0, NULL);
		assert_non_null(sent);
		msg = json_object_get(sent, "message");
		assert_string_equal(str_of(msg, "token"), toks[i]);
		assert_string_equal(str_of(json_object_get(msg, "data"), "a"), "b");
		assert_int_equal(json_object_size(json_object_get(msg, "data")), 1);
		assert_string_equal(str_of(json_object_get(msg, "notification"), "title"), "T");
		assert_string_equal(str_of(json_object_get(msg, "notification"), "body"), "B");
		android = json_object_get(msg, "android");
		assert_string_equal(str_of(android, "priority"), "normal");
		assert_string_equal(str_of(android, "collapse_key"), "grp");
		ttl = strtoll(str_of(android, "ttl"), NULL, 10);
		assert_true(ttl >= 590 && ttl <= 600);
		json_decref(sent);
		json_decref(lines);
	}
	/* A notification without data carries no data (not the wake marker). */
	ans = push("{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"fcm-direct-token-0003\"}],"
		   "\"title\":\"T\"}");
	assert_counts(ans, 1, 1, 0);
	json_decref(ans);
	{
		json_t *lines = requests_for(&fx.fcm, "fcm-direct-token-0003", 1);
		json_t *sent = json_loads(th_json_str(json_array_get(lines, 0), "body"), 0, NULL);
		json_t *msg = json_object_get(sent, "message");

		assert_non_null(msg);
		assert_null(json_object_get(msg, "data"));
		assert_string_equal(str_of(json_object_get(msg, "notification"), "title"), "T");
		json_decref(sent);
		json_decref(lines);
	}
}

/* APNs 410 for a device: token_invalid, and its token is gone. */
static void test_unregistered_device(void **state)
{
	const char *tok = "0ff41001010000000000";
	int64_t id = device_new("unregdev", "apns", tok);
	char body[128];
	json_t *ans, *lines;

	(void)state;
	snprintf(body, sizeof(body), "{\"devices\":[\"%lld\"],\"title\":\"x\"}", (long long)id);
	ans = push(body);
	assert_counts(ans, 1, 0, 1);
	assert_result(ans, 0, id, NULL, "apns", "token_invalid", 410, "Unregistered", 1);
	json_decref(ans);
	assert_false(has_token(id));
	lines = requests_for(&fx.apns, tok, 1);
	assert_int_equal(json_array_size(lines), 1);
	json_decref(lines);
	/* Nothing to push to any more. */
	ans = push(body);
	assert_counts(ans, 1, 0, 1);
	assert_result(ans, 0, id, NULL, NULL, "no_token", 0, NULL, 0);
	json_decref(ans);
}

/* A bare token the provider refuses: token_invalid, and no device that has
 * the same token loses it. */
static void test_bad_bare_token(void **state)
{
	const char *tok = "0ff4000102";
	int64_t id = device_new("badbare", "apns", tok);
	json_t *ans;

	(void)state;
	ans = push("{\"tokens\":[{\"provider\":\"apns\",\"token\":\"0ff4000102\"}],"
		   "\"body\":\"x\"}");
	assert_counts(ans, 1, 0, 1);
	assert_result(ans, 0, 0, "0ff40\xe2\x80\xa6", "apns", "token_invalid", 400,
		      "BadDeviceToken", 0);
	json_decref(ans);
	assert_true(has_token(id));
}

/* A topic the provider does not allow is rejected; an app without
 * credentials is not pushed at all. */
static void test_rejected_and_no_credentials(void **state)
{
	size_t before = log_lines(&fx.apns);
	json_t *ans, *lines;

	(void)state;
	ans = push("{\"tokens\":[{\"provider\":\"apns\",\"token\":\"aaaa0501aaaa0501\","
		   "\"topic\":\"com.example.other\"},{\"provider\":\"apns\","
		   "\"token\":\"aaaa0502aaaa0502\",\"app\":\"nope\"}],\"title\":\"r\"}");
	assert_counts(ans, 2, 0, 2);
	assert_result(ans, 0, 0, "aaaa0501\xe2\x80\xa6", "apns", "rejected", 400, "TopicDisallowed",
		      0);
	assert_result(ans, 1, 0, "aaaa0502\xe2\x80\xa6", "apns", "no_credentials", 0,
		      "no credentials for apns in app 'nope'", 0);
	json_decref(ans);
	lines = requests_for(&fx.apns, "aaaa0501aaaa0501", 1);
	assert_string_equal(th_json_str(json_array_get(lines, 0), "topic"), "com.example.other");
	json_decref(lines);
	assert_int_equal(log_lines(&fx.apns), before + 1);
}

/* Devices of every kind in one request: results in the request's order. */
static void test_mixed_order(void **state)
{
	int64_t ok = device_new("mixok", "apns", "aaaa0301aaaa0301aaaa");
	int64_t none = device_new("mixnone", NULL, NULL);
	int64_t unreg = device_new("mixunreg", "fcm", "unregistered-api-3");
	int64_t fcm = device_new("mixfcm", "fcm", "fcm-mixed-token-0003");
	long long missing = 999999999999LL;
	char body[256];
	json_t *ans, *lines;

	(void)state;
	snprintf(body, sizeof(body), "{\"devices\":[%lld,%lld,%lld,%lld,%lld,%lld],\"body\":\"m\"}",
		 (long long)ok, missing, (long long)none, (long long)unreg, (long long)fcm,
		 (long long)ok);
	ans = push(body);
	assert_counts(ans, 6, 3, 3);
	assert_result(ans, 0, ok, NULL, "apns", "ok", 200, NULL, 0);
	assert_result(ans, 1, missing, NULL, NULL, "not_found", 0, NULL, 0);
	assert_result(ans, 2, none, NULL, NULL, "no_token", 0, NULL, 0);
	assert_result(ans, 3, unreg, NULL, "fcm", "token_invalid", 404, "UNREGISTERED", 1);
	assert_result(ans, 4, fcm, NULL, "fcm", "ok", 200, NULL, 0);
	assert_result(ans, 5, ok, NULL, "apns", "ok", 200, NULL, 0);
	json_decref(ans);
	assert_true(has_token(ok));
	assert_false(has_token(unreg));
	assert_true(has_token(fcm));
	/* A duplicate is pushed twice. */
	lines = requests_for(&fx.apns, "aaaa0301aaaa0301aaaa", 2);
	assert_int_equal(json_array_size(lines), 2);
	json_decref(lines);
}

/* Invalid requests: 400 naming the member, and nothing reaches a provider. */
static void test_validation(void **state)
{
	size_t apns = log_lines(&fx.apns), fcm = log_lines(&fx.fcm);
	char *many, *big;
	size_t o;

	(void)state;
	push_400("{}", "field 'devices' or 'tokens' is required");
	push_400("{\"devices\":null,\"tokens\":null}", "field 'devices' or 'tokens' is required");
	push_400("{\"devices\":[]}", "field 'devices' must list 1 to 1000 targets, not 0");
	push_400("{\"devices\":[1],\"tokens\":[{\"provider\":\"fcm\",\"token\":\"x\"}]}",
		 "fields 'devices' and 'tokens' exclude each other");
	push_400("{\"devices\":{\"a\":1}}", "field 'devices' must be an array, not an object");
	push_400("{\"devices\":[1,0]}", "field 'devices[1]' must be a positive integer, not 0");
	push_400("{\"devices\":[1,2,-3]}", "field 'devices[2]' must be a positive integer, not -3");
	push_400("{\"devices\":[\"012\"]}",
		 "field 'devices[0]': device id '012' is invalid: expected a positive decimal "
		 "integer");
	push_400("{\"devices\":[1.5]}", "field 'devices[0]' must be a positive integer, not 1.5");
	push_400("{\"tokens\":[{\"provider\":\"xmpp\",\"token\":\"ab\"}]}",
		 "field 'tokens[0].provider' must be one of apns, fcm");
	push_400("{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"a\"},{\"token\":\"ab\"}]}",
		 "field 'tokens[1].provider' is required");
	push_400("{\"tokens\":[{\"provider\":\"apns\",\"token\":\"zz-not-hex\"}]}",
		 "field 'tokens[0].token' must be hexadecimal for provider apns");
	push_400("{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"a b\"}]}",
		 "field 'tokens[0].token' must be 1-4096 bytes of printable ASCII without spaces");
	push_400("{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"ab\",\"topic\":\"t\"}]}",
		 "field 'tokens[0].topic' is only allowed for provider apns");
	push_400("{\"tokens\":[{\"provider\":\"apns\",\"token\":\"ab\",\"environment\":\"dev\"}]}",
		 "field 'tokens[0].environment' must be one of production, sandbox");
	push_400("{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"ab\",\"colour\":\"red\"}]}",
		 "unknown field 'tokens[0].colour'");
	push_400("{\"tokens\":[\"ab\"]}", "field 'tokens[0]' must be an object, not a string");
	push_400("{\"devices\":[1],\"data\":{\"k\":1}}",
		 "field 'data.k' must be a string, not a number");
	push_400("{\"devices\":[1],\"data\":[\"k\"]}",
		 "field 'data' must be an object, not an array");
	push_400("{\"devices\":[1],\"data\":{\"aps\":\"x\"}}",
		 "field 'data' must not have the key 'aps'");
	push_400("{\"devices\":[1],\"priority\":\"urgent\"}",
		 "field 'priority' must be one of high, normal");
	push_400("{\"devices\":[1],\"badge\":-1}",
		 "field 'badge' must be an integer from 0 to 2147483647, not -1");
	push_400("{\"devices\":[1],\"badge\":2147483648}",
		 "field 'badge' must be an integer from 0 to 2147483647, not 2147483648");
	push_400("{\"devices\":[1],\"title\":7}", "field 'title' must be a string, not a number");
	push_400("{\"devices\":[1],\"expiration\":-5}",
		 "field 'expiration' must be a UNIX time in seconds, 0 or more, not -5");
	push_400("{\"devices\":[1],\"collapse_id\":"
		 "\"0123456789012345678901234567890123456789012345678901234567890123X\"}",
		 "field 'collapse_id' must be 1-64 bytes of printable ASCII");
	push_400("{\"devices\":[1],\"to_user\":\"bob\"}", "unknown field 'to_user'");
	push_400("[1]", "request body must be a JSON object, not an array");
	/* 1,001 targets. */
	many = malloc(16 + 1001 * 8);
	assert_non_null(many);
	o = (size_t)snprintf(many, 16, "{\"devices\":[");
	for (int i = 1; i <= 1001; i++)
		o += (size_t)snprintf(many + o, 8, "%d%s", i, i < 1001 ? "," : "]}");
	push_400(many, "field 'devices' must list 1 to 1000 targets, not 1001");
	free(many);
	/* The push service refuses the note: an APNs payload over 4 KiB. */
	big = malloc(5000);
	assert_non_null(big);
	o = (size_t)snprintf(big, 5000,
			     "{\"tokens\":[{\"provider\":\"fcm\",\"token\":\"ab\"}],"
			     "\"title\":\"");
	memset(big + o, 'x', 4200);
	snprintf(big + o + 4200, 5000 - o - 4200, "\"}");
	push_400(big, "cannot send the notification: the APNs payload would be");
	free(big);
	sleep_ms(200);
	assert_int_equal(log_lines(&fx.apns), apns);
	assert_int_equal(log_lines(&fx.fcm), fcm);
}

/* The push section's provider object of @provider for the default app. */
static json_t *provider_stats(json_t *stats, const char *provider)
{
	json_t *ps = json_object_get(json_object_get(stats, "push"), "providers"), *p;
	size_t i;

	json_array_foreach(ps, i, p)
	{
		if (!strcmp(str_of(p, "app"), "") && !strcmp(str_of(p, "provider"), provider))
			return p;
	}
	fail_msg("no stats for provider %s", provider);
	return NULL;
}

static long long reason_count(json_t *prov, const char *reason)
{
	json_t *v = json_object_get(json_object_get(prov, "failed_by_reason"), reason);

	return v ? json_integer_value(v) : 0;
}

/* Counter @key of provider @prov grew by @delta from @a to @b. */
static void assert_grew(json_t *a, json_t *b, const char *prov, const char *key, long long delta)
{
	long long before = int_of(provider_stats(a, prov), key);
	long long after = int_of(provider_stats(b, prov), key);

	if (after - before != delta)
		fail_msg("%s %s: %lld -> %lld, not +%lld", prov, key, before, after, delta);
}

/* GET /v1/stats: the direct pushes counted per provider and reason. */
static void test_stats(void **state)
{
	static const char *const wake_keys[] = {
		"wakes",	 "wakes_coalesced", "wakes_cancelled",
		"wakes_dropped", "wakes_no_token",  "wakes_no_credentials",
		"wakes_gave_up", "lookups",	    "lookup_failures",
		"direct",	 "pending",
	};
	int64_t gone = device_new("statsgone", "apns", "0ff4100405");
	json_t *a, *b, *ans, *p;
	struct th_response r;
	char body[128], url[128];

	(void)state;
	a = request_json("GET", "/v1/stats", NULL, 200);
	assert_int_equal(json_object_size(a), 10);
	assert_true(json_is_object(json_object_get(a, "receipts")));
	ans = push("{\"tokens\":[{\"provider\":\"apns\",\"token\":\"aaaa0401\"},"
		   "{\"provider\":\"apns\",\"token\":\"0ff4100402\"},"
		   "{\"provider\":\"apns\",\"token\":\"0ff4000403\"},"
		   "{\"provider\":\"fcm\",\"token\":\"fcm-stats-token-04\"},"
		   "{\"provider\":\"fcm\",\"token\":\"unregistered-stats-4\"}],\"title\":\"s\"}");
	assert_counts(ans, 5, 2, 3);
	json_decref(ans);
	snprintf(body, sizeof(body), "{\"devices\":[%lld],\"title\":\"s\"}", (long long)gone);
	ans = push(body);
	assert_result(ans, 0, gone, NULL, "apns", "token_invalid", 410, "Unregistered", 1);
	json_decref(ans);
	b = request_json("GET", "/v1/stats", NULL, 200);
	for (size_t i = 0; i < sizeof(wake_keys) / sizeof(wake_keys[0]); i++)
		(void)int_of(json_object_get(b, "push"), wake_keys[i]);
	assert_int_equal(json_object_size(json_object_get(b, "push")), 12);
	assert_int_equal(int_of(json_object_get(b, "push"), "direct") -
				 int_of(json_object_get(a, "push"), "direct"),
			 6);
	assert_int_equal(int_of(json_object_get(b, "push"), "wakes"), 0);
	assert_grew(a, b, "apns", "sent", 4);
	assert_grew(a, b, "apns", "ok", 1);
	assert_grew(a, b, "apns", "failed", 3);
	assert_grew(a, b, "apns", "retries", 0);
	assert_grew(a, b, "apns", "tokens_removed", 1);
	assert_grew(a, b, "fcm", "sent", 2);
	assert_grew(a, b, "fcm", "ok", 1);
	assert_grew(a, b, "fcm", "failed", 1);
	assert_grew(a, b, "fcm", "tokens_removed", 0);
	assert_int_equal(reason_count(provider_stats(b, "apns"), "Unregistered") -
				 reason_count(provider_stats(a, "apns"), "Unregistered"),
			 2);
	assert_int_equal(reason_count(provider_stats(b, "apns"), "BadDeviceToken") -
				 reason_count(provider_stats(a, "apns"), "BadDeviceToken"),
			 1);
	assert_int_equal(reason_count(provider_stats(b, "fcm"), "UNREGISTERED") -
				 reason_count(provider_stats(a, "fcm"), "UNREGISTERED"),
			 1);
	p = provider_stats(b, "apns");
	assert_int_equal(json_object_size(p), 10);
	assert_true(json_is_real(json_object_get(p, "latency_avg_ms")));
	assert_true(json_real_value(json_object_get(p, "latency_avg_ms")) > 0.0);
	assert_true(json_real_value(json_object_get(p, "latency_max_ms")) >=
		    json_real_value(json_object_get(p, "latency_avg_ms")));
	json_decref(a);
	json_decref(b);
	/* The same in Prometheus's form, push latencies as histograms. */
	snprintf(url, sizeof(url), "%s/metrics", fx.d.admin_url);
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "ferry_push_latency_seconds_bucket{app=\"\",provider="
				       "\"apns\",le=\"+Inf\"}"));
	assert_non_null(strstr(r.body, "ferry_push_sent_total{app=\"\",provider=\"fcm\"}"));
	th_promtool_check(r.body);
	th_response_release(&r);
}

/* A ferryd without the device gateway has no push service: 503 once the
 * request is valid, and stats say null. */
static void test_no_push_service(void **state)
{
	struct th_ferryd d = { 0 };
	int admin = th_free_port();
	char *config = th_ferryd_config(fx.conninfo, admin, TOKEN);
	struct th_response r;
	char url[256], *retry;
	json_t *j;

	(void)state;
	th_ferryd_start(&d, config, admin);
	free(config);
	push_refused_at(&d, "{\"devices\":[1],\"priority\":\"x\"}", 400, "bad_request",
			"field 'priority'");
	push_refused_at(&d, "{\"devices\":[1]}", 503, "unavailable", "push service is not running");
	snprintf(url, sizeof(url), "%s/v1/push", d.admin_url);
	th_http(&r, "POST", url, TOKEN, "{\"devices\":[1]}");
	retry = th_response_header(&r, "Retry-After");
	assert_null(retry);
	th_response_release(&r);
	j = request_at(&d, "GET", "/v1/stats", NULL, 200);
	assert_int_equal(json_object_size(j), 10);
	assert_true(json_is_null(json_object_get(j, "push")));
	assert_non_null(json_object_get(j, "receipts"));
	json_decref(j);
	/* GET only; POST /v1/stats and GET /v1/push are 405. */
	json_decref(request_at(&d, "POST", "/v1/stats", "{}", 405));
	json_decref(request_at(&d, "GET", "/v1/push", NULL, 405));
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
}

/* No token ever reaches the log whole (test_secrets checks a full run,
 * for every kind of secret). */
static void test_no_token_in_log(void **state)
{
	static const char *const toks[] = { "fcm-direct-token-0001", "unregistered-api-3",
					    "fcm-mixed-token-0003", "aaaa0301aaaa0301aaaa",
					    "0ff41001010000000000" };
	char *log = th_read_file(fx.d.log_path);

	(void)state;
	for (size_t i = 0; i < sizeof(toks) / sizeof(toks[0]); i++)
		th_assert_lacks(log, toks[i], toks[i], "the log");
	free(log);
	assert_true(th_log_count(&fx.d, "event=admin_push_sent") >= 6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apns_device),
		cmocka_unit_test(test_apns_background),
		cmocka_unit_test(test_fcm_tokens),
		cmocka_unit_test(test_unregistered_device),
		cmocka_unit_test(test_bad_bare_token),
		cmocka_unit_test(test_rejected_and_no_credentials),
		cmocka_unit_test(test_mixed_order),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_no_push_service),
		cmocka_unit_test(test_no_token_in_log),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
