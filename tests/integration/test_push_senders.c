/*
 * test_push_senders.c - the APNs and FCM senders (push/apns.c, push/fcm.c)
 * against the mock providers (tests/mock/README.md) over HTTP/2 and TLS.
 *
 * The senders run on a libuv loop of the test's own, as on the push thread,
 * with one push_http client per test. The test makes its TLS certificate
 * with the openssl tool, an EC P-256 key (the APNs .p8) and two RSA keys
 * (the service account's, and another one that the token endpoint refuses),
 * and reads what the mocks saw from their logs. No PostgreSQL.
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
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <uv.h>

#include "push/apns.h"
#include "push/creds.h"
#include "push/fcm.h"
#include "push/http.h"
#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "common/banned.h"

#define KEY_ID "ABC123DEFG"
#define TEAM_ID "TEAM123456"
#define TOPIC "com.example.app"
#define UNREG_TS "1700000000123"
#define SA_EMAIL "ferry@mock-project.iam.gserviceaccount.com"
#define PROJECT "mock-project"
#define ALERT "You have new messages"
#define N_MANY 200

struct fixture {
	char *cert, *key;
	char *client_cert, *client_key; /* certificate-based APNs auth */
	char *other_cert, *other_key;	/* a client certificate the mock does not trust */
	EVP_PKEY *ec, *rsa, *rsa_other;
	struct th_mock apns, apns_goaway, apns_certs, fcm, fcm_expired, fcm_short;
	uv_loop_t loop;
	uv_timer_t tick;
	struct push_http *http;
	int64_t lag; /* the senders' clock runs this many seconds behind */
};

static struct fixture fx;

/* ---- keys, certificates, mocks (as test_mock_push.c) ------------------------ */

/* ---- the loop ------------------------------------------------------------------- */

static unsigned n_done;

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

static int64_t lagging_clock(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL) - fx.lag;
}

static void loop_open(void)
{
	struct push_http_opts o = { .ca_file = fx.cert };
	char err[256] = "";

	assert_int_equal(uv_loop_init(&fx.loop), 0);
	assert_int_equal(uv_timer_init(&fx.loop, &fx.tick), 0);
	assert_int_equal(uv_timer_start(&fx.tick, on_tick, 20, 20), 0);
	fx.http = push_http_new(&fx.loop, &o, err, sizeof(err));
	if (!fx.http)
		fail_msg("push_http_new: %s", err);
	n_done = 0;
	fx.lag = 0;
}

static void loop_close(void)
{
	push_http_free(fx.http);
	fx.http = NULL;
	uv_close((uv_handle_t *)&fx.tick, NULL);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
}

static void run_until(unsigned n, unsigned ms)
{
	uint64_t end;

	uv_update_time(&fx.loop);
	end = uv_now(&fx.loop) + ms;
	while (n_done < n) {
		if (uv_now(&fx.loop) > end)
			fail_msg("only %u of %u pushes done after %u ms", n_done, n, ms);
		uv_run(&fx.loop, UV_RUN_ONCE);
	}
}

static void run_for(unsigned ms)
{
	uint64_t end;

	uv_update_time(&fx.loop);
	end = uv_now(&fx.loop) + ms;
	while (uv_now(&fx.loop) < end)
		uv_run(&fx.loop, UV_RUN_ONCE);
}

/* ---- APNs ----------------------------------------------------------------------- */

struct apns_got {
	unsigned done;
	struct push_apns_result res;
};

static void apns_cb(void *arg, const struct push_apns_result *res)
{
	struct apns_got *g = arg;

	g->done++;
	g->res = *res;
	n_done++;
}

static struct push_apns *apns_new(const struct th_mock *m)
{
	struct push_apns_opts o = { .endpoint = m->base,
				    .key = fx.ec,
				    .key_id = KEY_ID,
				    .team_id = TEAM_ID,
				    .default_topic = TOPIC,
				    .clock = lagging_clock };
	char err[256] = "";
	struct push_apns *a = push_apns_new(fx.http, &o, err, sizeof(err));

	if (!a)
		fail_msg("push_apns_new: %s", err);
	return a;
}

static void apns_submit(struct push_apns *a, const struct push_apns_push *p, struct apns_got *g)
{
	memset(g, 0, sizeof(*g));
	assert_int_equal(push_apns_send(a, p, apns_cb, g), FERRY_OK);
}

/* Send one background push to @token and wait for its outcome. */
static struct push_apns_result apns_one(struct push_apns *a, const char *token, unsigned attempt)
{
	struct push_apns_push p = { .token = token, .expiration = -1, .attempt = attempt };
	struct apns_got g;

	apns_submit(a, &p, &g);
	run_until(n_done + 1, 20000);
	assert_int_equal(g.done, 1);
	return g.res;
}

static void test_apns_ok(void **state)
{
	int64_t exp = (int64_t)time(NULL) + 3600;
	struct push_apns_push p = { .token = "0123abcd",
				    .collapse_id = "wake-42",
				    .expiration = exp };
	char exp_text[32];
	struct push_apns_stats st;
	struct push_apns *a;
	struct apns_got g;
	json_t *lines, *line;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	apns_submit(a, &p, &g);
	assert_int_equal(g.done, 0); /* never inside send */
	run_until(1, 20000);
	assert_int_equal(g.res.outcome, PUSH_APNS_OK);
	assert_int_equal(g.res.status, 200);
	assert_int_equal(g.res.rc, FERRY_OK);
	assert_true(strlen(g.res.apns_id) > 0);

	lines = th_mock_log_where(&fx.apns, "token", "0123abcd");
	assert_int_equal(json_array_size(lines), 1);
	line = json_array_get(lines, 0);
	snprintf(exp_text, sizeof(exp_text), "%lld", (long long)exp);
	assert_string_equal(th_json_str(line, "topic"), TOPIC);
	assert_string_equal(th_json_str(line, "push_type"), "background");
	assert_string_equal(th_json_str(line, "priority"), "5");
	assert_string_equal(th_json_str(line, "collapse_id"), "wake-42");
	assert_string_equal(th_json_str(line, "expiration"), exp_text);
	assert_string_equal(th_json_str(line, "jwt_kid"), KEY_ID);
	assert_string_equal(th_json_str(line, "payload"), "{\"aps\":{\"content-available\":1}}");
	assert_true(json_is_null(json_object_get(line, "reason")));
	json_decref(lines);

	push_apns_stats(a, &st);
	assert_int_equal(st.sent, 1);
	assert_int_equal(st.ok, 1);
	assert_int_equal(st.requests, 1);
	assert_true(st.latency_max_us > 0 && st.latency_sum_us >= st.latency_max_us);
	push_apns_free(a);
	loop_close();
}

static void test_apns_alert(void **state)
{
	struct push_apns_push p = {
		.token = "alert-1", .mode = PUSH_APNS_ALERT, .alert_text = ALERT, .expiration = 0
	};
	struct push_apns_push bad = p;
	struct push_apns *a;
	struct apns_got g;
	json_t *lines, *line;
	char big[5000];

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	apns_submit(a, &p, &g);
	run_until(1, 20000);
	assert_int_equal(g.res.outcome, PUSH_APNS_OK);
	lines = th_mock_log_where(&fx.apns, "token", "alert-1");
	line = json_array_get(lines, 0);
	assert_non_null(line);
	assert_string_equal(th_json_str(line, "push_type"), "alert");
	assert_string_equal(th_json_str(line, "priority"), "10");
	assert_string_equal(th_json_str(line, "expiration"), "0");
	assert_true(json_is_null(json_object_get(line, "collapse_id")));
	assert_string_equal(th_json_str(line, "payload"),
			    "{\"aps\":{\"alert\":\"" ALERT "\",\"mutable-content\":1}}");
	json_decref(lines);

	/* Refused before anything is sent: the callback never runs. */
	bad.alert_text = NULL;
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	bad.alert_text = big;
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_ETOOBIG);
	bad = p;
	bad.token = "has/slash";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	bad = p;
	bad.collapse_id = "0123456789012345678901234567890123456789012345678901234567890123456789";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	push_apns_free(a);
	loop_close();
}

/* A JSON object with an "aps" object, exactly @size bytes (malloc'ed). */
static char *aps_payload_of(size_t size)
{
	static const char head[] = "{\"aps\":{},\"pad\":\"", tail[] = "\"}";
	size_t fixed = strlen(head) + strlen(tail);
	char *p = malloc(size + 1);

	assert_non_null(p);
	assert_true(size >= fixed);
	memcpy(p, head, strlen(head));
	memset(p + strlen(head), 'x', size - fixed);
	memcpy(p + size - strlen(tail), tail, strlen(tail) + 1);
	return p;
}

/* A direct push: the operator's payload byte for byte, push type, priority. */
static void test_apns_direct(void **state)
{
	/* Spacing and key order jansson would not keep: sent as is or not at all. */
	static const char payload[] =
		"{ \"aps\": {\"alert\": {\"title\": \"Hello\", \"body\": \"W\\u00f6rld\"}, "
		"\"sound\": \"default\", \"badge\": 3}, \"room\": \"42\" }";
	int64_t exp = (int64_t)time(NULL) + 600;
	struct push_apns_push p = { .token = "direct-1",
				    .mode = PUSH_APNS_BACKGROUND, /* push_type wins */
				    .payload = payload,
				    .push_type = "alert",
				    .priority = 10,
				    .collapse_id = "room-42",
				    .expiration = exp };
	struct push_apns_push low = { .token = "direct-2",
				      .payload = "{\"aps\":{\"alert\":\"x\"}}",
				      .push_type = "alert",
				      .priority = 1,
				      .expiration = -1 };
	struct push_apns_push bg = { .token = "direct-3",
				     .payload = "{\"aps\":{\"content-available\":1},\"k\":\"v\"}",
				     .expiration = -1 };
	char *max = aps_payload_of(PUSH_APNS_MAX_PAYLOAD);
	struct push_apns_push big = { .token = "direct-4", .payload = max, .expiration = -1 };
	char exp_text[32];
	struct apns_got g[4];
	struct push_apns *a;
	json_t *lines, *line;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	apns_submit(a, &p, &g[0]);
	run_until(1, 20000);
	apns_submit(a, &low, &g[1]);
	apns_submit(a, &bg, &g[2]);
	apns_submit(a, &big, &g[3]);
	run_until(4, 20000);
	for (int k = 0; k < 4; k++)
		assert_int_equal(g[k].res.outcome, PUSH_APNS_OK);

	lines = th_mock_log_where(&fx.apns, "token", "direct-1");
	assert_int_equal(json_array_size(lines), 1);
	line = json_array_get(lines, 0);
	snprintf(exp_text, sizeof(exp_text), "%lld", (long long)exp);
	assert_string_equal(th_json_str(line, "payload"), payload);
	assert_int_equal(json_integer_value(json_object_get(line, "payload_bytes")),
			 strlen(payload));
	assert_string_equal(th_json_str(line, "push_type"), "alert");
	assert_string_equal(th_json_str(line, "priority"), "10");
	assert_string_equal(th_json_str(line, "topic"), TOPIC);
	assert_string_equal(th_json_str(line, "collapse_id"), "room-42");
	assert_string_equal(th_json_str(line, "expiration"), exp_text);
	json_decref(lines);

	lines = th_mock_log_where(&fx.apns, "token", "direct-2");
	line = json_array_get(lines, 0);
	assert_non_null(line);
	assert_string_equal(th_json_str(line, "push_type"), "alert");
	assert_string_equal(th_json_str(line, "priority"), "1");
	assert_true(json_is_null(json_object_get(line, "expiration")));
	json_decref(lines);

	/* No push type, no priority: the mode's (background, 5). */
	lines = th_mock_log_where(&fx.apns, "token", "direct-3");
	line = json_array_get(lines, 0);
	assert_non_null(line);
	assert_string_equal(th_json_str(line, "push_type"), "background");
	assert_string_equal(th_json_str(line, "priority"), "5");
	assert_string_equal(th_json_str(line, "payload"), bg.payload);
	json_decref(lines);

	lines = th_mock_log_where(&fx.apns, "token", "direct-4");
	line = json_array_get(lines, 0);
	assert_non_null(line);
	assert_int_equal(json_integer_value(json_object_get(line, "payload_bytes")),
			 PUSH_APNS_MAX_PAYLOAD);
	json_decref(lines);
	free(max);
	push_apns_free(a);
	loop_close();
}

/* Bad direct pushes are refused by push_apns_send(): nothing reaches APNs. */
static void test_apns_direct_refused(void **state)
{
	static const char *const not_ok[] = {
		"",
		"not json",
		"{\"aps\":{}",
		"[{\"aps\":{}}]",
		"{\"alert\":\"no aps\"}",
		"{\"aps\":\"not an object\"}",
		"{\"aps\":{}} trailing",
		"{\"aps\":{},\"aps\":{\"alert\":\"x\"}}",
		"{\"aps\":{\"alert\":\"\xff\"}}",
	};
	struct push_apns_push ok = { .token = "refused-1",
				     .mode = PUSH_APNS_ALERT,
				     .alert_text = ALERT,
				     .payload = "{\"aps\":{\"alert\":\"x\"}}",
				     .push_type = "alert",
				     .priority = 10,
				     .expiration = -1 };
	struct push_apns_push bad;
	char *over = aps_payload_of(PUSH_APNS_MAX_PAYLOAD + 1);
	struct push_apns_stats st;
	struct push_apns *a;
	struct apns_got g;
	json_t *lines;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	memset(&g, 0, sizeof(g));
	for (size_t i = 0; i < sizeof(not_ok) / sizeof(not_ok[0]); i++) {
		bad = ok;
		bad.payload = not_ok[i];
		if (push_apns_send(a, &bad, apns_cb, &g) != FERRY_EINVAL)
			fail_msg("payload '%s' was not refused with FERRY_EINVAL", not_ok[i]);
	}
	bad = ok;
	bad.payload = over;
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_ETOOBIG);
	bad = ok;
	bad.push_type = "voip";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	bad.push_type = "";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	bad.push_type = "Alert";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	for (int prio = -1; prio <= 11; prio++) {
		if (prio == 0 || prio == 1 || prio == 5 || prio == 10)
			continue;
		bad = ok;
		bad.priority = prio;
		assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	}
	/* Background takes 5 only, whether the type is given or the mode's. */
	bad = ok;
	bad.push_type = "background";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	bad.priority = 1;
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	bad = ok;
	bad.push_type = NULL;
	bad.mode = PUSH_APNS_BACKGROUND;
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	/* A bad payload is refused in alert mode without alert text too. */
	bad = ok;
	bad.alert_text = NULL;
	bad.payload = "{}";
	assert_int_equal(push_apns_send(a, &bad, apns_cb, &g), FERRY_EINVAL);
	assert_int_equal(g.done, 0);
	push_apns_stats(a, &st);
	assert_int_equal(st.sent, 0);
	assert_int_equal(st.requests, 0);

	/* The same push made right goes through; nothing else was sent. */
	bad.payload = ok.payload;
	apns_submit(a, &bad, &g);
	run_until(1, 20000);
	assert_int_equal(g.res.outcome, PUSH_APNS_OK);
	lines = th_mock_log_where(&fx.apns, "token", "refused-1");
	assert_int_equal(json_array_size(lines), 1);
	json_decref(lines);
	free(over);
	push_apns_free(a);
	loop_close();
}

static void test_apns_many(void **state)
{
	static struct apns_got g[N_MANY];
	char tokens[N_MANY][32];
	struct push_http_stats hs;
	struct push_apns_stats st;
	struct push_apns *a;
	json_t *all, *line;
	size_t i, on_conn = 0;
	json_int_t conn = -1;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	for (int k = 0; k < N_MANY; k++) {
		struct push_apns_push p = { .token = tokens[k], .expiration = -1 };

		snprintf(tokens[k], sizeof(tokens[k]), "many-%d", k);
		apns_submit(a, &p, &g[k]);
	}
	run_until(N_MANY, 60000);
	for (int k = 0; k < N_MANY; k++)
		assert_int_equal(g[k].res.outcome, PUSH_APNS_OK);
	push_apns_stats(a, &st);
	assert_int_equal(st.ok, N_MANY);
	assert_int_equal(st.requests, N_MANY); /* nothing resent */
	push_http_stats(fx.http, &hs);
	assert_int_equal(hs.connections_opened, 1);

	/* One connection; the first push went alone, the rest overlapped. */
	all = th_mock_log(&fx.apns);
	json_array_foreach(all, i, line)
	{
		const char *t = json_string_value(json_object_get(line, "token"));

		if (!t || strncmp(t, "many-", 5) != 0)
			continue;
		if (conn < 0) {
			conn = json_integer_value(json_object_get(line, "conn"));
			assert_string_equal(t, "many-0");
		}
		assert_int_equal(json_integer_value(json_object_get(line, "conn")), conn);
		on_conn++;
	}
	assert_int_equal(on_conn, N_MANY);
	json_decref(all);
	push_apns_free(a);
	loop_close();
}

static void test_apns_token_errors(void **state)
{
	struct push_apns_push other = { .token = "fine-1", .topic = "org.other", .expiration = -1 };
	struct push_apns_result r;
	struct push_apns_stats st;
	struct push_apns *a;
	struct apns_got g;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	r = apns_one(a, "unregistered-1", 0);
	assert_int_equal(r.outcome, PUSH_APNS_TOKEN_INVALID);
	assert_int_equal(r.status, 410);
	assert_string_equal(r.reason, "Unregistered");
	assert_int_equal(r.timestamp_ms, strtoll(UNREG_TS, NULL, 10));
	r = apns_one(a, "baddevice-1", 0);
	assert_int_equal(r.outcome, PUSH_APNS_TOKEN_INVALID);
	assert_string_equal(r.reason, "BadDeviceToken");
	assert_int_equal(r.timestamp_ms, 0);
	r = apns_one(a, "nottopic-1", 0);
	assert_int_equal(r.outcome, PUSH_APNS_TOKEN_INVALID);
	assert_string_equal(r.reason, "DeviceTokenNotForTopic");
	r = apns_one(a, "busy-1", 3);
	assert_int_equal(r.outcome, PUSH_APNS_RETRY);
	assert_int_equal(r.status, 429);
	/* Back-off from attempt 3: 8 s, jittered into [4 s, 8 s]. */
	assert_in_range(r.retry_delay_ms, 4000, 8000);
	apns_submit(a, &other, &g);
	run_until(n_done + 1, 20000);
	assert_int_equal(g.res.outcome, PUSH_APNS_CONFIG);
	assert_string_equal(g.res.reason, "TopicDisallowed");
	push_apns_stats(a, &st);
	assert_int_equal(st.token_invalid, 3);
	assert_int_equal(st.retry, 1);
	assert_int_equal(st.config, 1);
	push_apns_free(a);
	loop_close();
}

static void test_apns_unavailable(void **state)
{
	struct push_apns_result r;
	struct push_apns *a;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	/* The caller retries, with the attempt number. */
	r = apns_one(a, "unavail2-a", 0);
	assert_int_equal(r.outcome, PUSH_APNS_RETRY);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.reason, "ServiceUnavailable");
	assert_in_range(r.retry_delay_ms, 500, 1000);
	r = apns_one(a, "unavail2-a", 1);
	assert_int_equal(r.outcome, PUSH_APNS_RETRY);
	assert_in_range(r.retry_delay_ms, 1000, 2000);
	r = apns_one(a, "unavail2-a", 2);
	assert_int_equal(r.outcome, PUSH_APNS_OK);
	push_apns_free(a);
	loop_close();
}

static void test_apns_expired_provider_token(void **state)
{
	struct push_apns_result r;
	struct push_apns_stats st;
	struct push_apns *a;
	json_t *lines;

	(void)state;
	loop_open();
	/* A token minted 100 s ago, old enough for a forced re-mint. */
	fx.lag = 100;
	a = apns_new(&fx.apns);
	r = apns_one(a, "warm-1", 0);
	assert_int_equal(r.outcome, PUSH_APNS_OK);
	fx.lag = 0;
	r = apns_one(a, "expire1-a", 0);
	assert_int_equal(r.outcome, PUSH_APNS_OK);
	push_apns_stats(a, &st);
	assert_int_equal(st.resent_expired, 1);
	assert_int_equal(st.requests, 3);

	lines = th_mock_log_where(&fx.apns, "token", "expire1-a");
	assert_int_equal(json_array_size(lines), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 0), "status")),
			 403);
	assert_string_equal(th_json_str(json_array_get(lines, 0), "reason"),
			    "ExpiredProviderToken");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 1), "status")),
			 200);
	assert_true(json_integer_value(json_object_get(json_array_get(lines, 1), "jwt_iat")) >=
		    json_integer_value(json_object_get(json_array_get(lines, 0), "jwt_iat")) + 90);
	json_decref(lines);
	push_apns_free(a);
	loop_close();
}

static void test_apns_goaway(void **state)
{
	struct apns_got g[20];
	char tokens[20][32];
	struct push_apns *a;
	json_t *all, *line;
	struct push_apns_stats st;
	json_int_t max_conn = 0;
	size_t i;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns_goaway);
	for (int k = 0; k < 20; k++) {
		struct push_apns_push p = { .token = tokens[k], .expiration = -1 };

		snprintf(tokens[k], sizeof(tokens[k]), "goaway-%d", k);
		apns_submit(a, &p, &g[k]);
	}
	run_until(20, 60000);
	for (int k = 0; k < 20; k++)
		assert_int_equal(g[k].res.outcome, PUSH_APNS_OK);
	/* Several connections were used. (The mock logs the requests it refused
	 * with its GOAWAY as answered, so the log has more 200s than pushes.) */
	all = th_mock_log(&fx.apns_goaway);
	json_array_foreach(all, i, line)
	{
		if (json_integer_value(json_object_get(line, "status")) == 200 &&
		    json_integer_value(json_object_get(line, "conn")) > max_conn)
			max_conn = json_integer_value(json_object_get(line, "conn"));
	}
	assert_true(max_conn >= 2);
	json_decref(all);
	push_apns_stats(a, &st);
	assert_int_equal(st.ok, 20);
	assert_true(st.resent_transport + st.requests >= 20);
	for (int k = 0; k < 20; k++) {
		json_t *l = th_mock_log_where(&fx.apns_goaway, "token", tokens[k]);

		assert_true(json_array_size(l) >= 1);
		json_decref(l);
	}
	push_apns_free(a);
	loop_close();
}

/* Pushes not answered yet are reported when the sender is freed. */
static void test_apns_free_pending(void **state)
{
	struct apns_got g[3];
	struct push_apns *a;

	(void)state;
	loop_open();
	a = apns_new(&fx.apns);
	for (int k = 0; k < 3; k++) {
		struct push_apns_push p = { .token = "pending-1", .expiration = -1 };

		apns_submit(a, &p, &g[k]);
	}
	push_apns_free(a);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(g[k].done, 1);
		assert_int_equal(g[k].res.outcome, PUSH_APNS_RETRY);
		assert_int_equal(g[k].res.rc, FERRY_EUNAVAIL);
	}
	run_for(200);
	loop_close();
}

/* ---- FCM ------------------------------------------------------------------------ */

struct fcm_got {
	unsigned done;
	struct push_fcm_result res;
};

static void fcm_cb(void *arg, const struct push_fcm_result *res)
{
	struct fcm_got *g = arg;

	g->done++;
	g->res = *res;
	n_done++;
}

/* A service-account file for @m signed with @k, loaded into @sa. */
static void sa_load(struct push_service_account *sa, const struct th_mock *m, EVP_PKEY *k)
{
	char *path = th_service_account_file(k, m, PROJECT, SA_EMAIL), err[256] = "";

	if (push_service_account_load(path, sa, err, sizeof(err)))
		fail_msg("push_service_account_load: %s", err);
	unlink(path);
	free(path);
}

static struct push_fcm *fcm_new(const struct th_mock *m, const struct push_service_account *sa)
{
	struct push_fcm_opts o = { .endpoint = m->base, .sa = sa, .clock = lagging_clock };
	char err[256] = "";
	struct push_fcm *f = push_fcm_new(fx.http, &o, err, sizeof(err));

	if (!f)
		fail_msg("push_fcm_new: %s", err);
	return f;
}

static struct push_fcm_result fcm_one(struct push_fcm *f, const char *token, unsigned attempt)
{
	struct push_fcm_push p = {
		.token = token, .collapse_key = "wake", .ttl_s = 3600, .attempt = attempt
	};
	struct fcm_got g = { 0 };

	assert_int_equal(push_fcm_send(f, &p, fcm_cb, &g), FERRY_OK);
	assert_int_equal(g.done, 0);
	run_until(n_done + 1, 20000);
	assert_int_equal(g.done, 1);
	return g.res;
}

static size_t count_path(const struct th_mock *m, const char *path)
{
	json_t *l = th_mock_log_where(m, "path", path);
	size_t n = json_array_size(l);

	json_decref(l);
	return n;
}

static void test_fcm_ok_and_reuse(void **state)
{
	struct push_service_account sa;
	struct fcm_got g[3] = { 0 };
	struct push_fcm_stats st;
	struct push_fcm *f;
	json_t *sends;
	size_t tokens_before = count_path(&fx.fcm, "/token");

	(void)state;
	loop_open();
	sa_load(&sa, &fx.fcm, fx.rsa);
	f = fcm_new(&fx.fcm, &sa);
	/* Two pushes wait for the same exchange, a third reuses its token. */
	for (int k = 0; k < 2; k++) {
		struct push_fcm_push p = { .token = k ? "reuse-b" : "reuse-a", .ttl_s = 30 };

		assert_int_equal(push_fcm_send(f, &p, fcm_cb, &g[k]), FERRY_OK);
	}
	run_until(2, 20000);
	g[2].res = fcm_one(f, "reuse-c", 0);
	for (int k = 0; k < 3; k++)
		assert_int_equal(g[k].res.outcome, PUSH_FCM_OK);
	assert_int_equal(count_path(&fx.fcm, "/token"), tokens_before + 1);
	sends = th_mock_log_where(&fx.fcm, "path", "/v1/projects/" PROJECT "/messages:send");
	assert_true(json_array_size(sends) >= 3);
	{
		size_t n = json_array_size(sends);
		const char *t = th_json_str(json_array_get(sends, n - 1), "access_token");

		assert_string_equal(th_json_str(json_array_get(sends, n - 2), "access_token"), t);
		assert_string_equal(th_json_str(json_array_get(sends, n - 3), "access_token"), t);
		assert_string_equal(th_json_str(json_array_get(sends, n - 1), "token"), "reuse-c");
	}
	json_decref(sends);
	push_fcm_stats(f, &st);
	assert_int_equal(st.exchanges, 1);
	assert_int_equal(st.ok, 3);
	assert_int_equal(st.requests, 3);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

/* A wake-up is exactly the data message it always was. */
static void test_fcm_wake_body(void **state)
{
	struct push_service_account sa;
	struct push_fcm_result r;
	struct push_fcm *f;
	json_t *lines;

	(void)state;
	loop_open();
	sa_load(&sa, &fx.fcm, fx.rsa);
	f = fcm_new(&fx.fcm, &sa);
	r = fcm_one(f, "wakebody-1", 0);
	assert_int_equal(r.outcome, PUSH_FCM_OK);
	lines = th_mock_log_where(&fx.fcm, "token", "wakebody-1");
	assert_int_equal(json_array_size(lines), 1);
	assert_string_equal(th_json_str(json_array_get(lines, 0), "body"),
			    "{\"message\":{\"token\":\"wakebody-1\",\"data\":{\"ferry\":\"wake\"},"
			    "\"android\":{\"priority\":\"high\",\"ttl\":\"3600s\","
			    "\"collapse_key\":\"wake\"}}}");
	json_decref(lines);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

/* A direct push: notification, the operator's data, priority normal. */
static void test_fcm_direct(void **state)
{
	struct push_fcm_push p = { .token = "direct-1",
				   .collapse_key = "chat",
				   .ttl_s = 60,
				   .title = "Hello",
				   .body = "W\xc3\xb6rld",
				   .data_json = "{ \"room\": \"42\", \"kind\": \"chat\" }",
				   .normal_priority = 1 };
	struct push_fcm_push title_only = {
		.token = "direct-2", .ttl_s = 0, .title = "Only a title", .data_json = "{}"
	};
	/* {"k":"xxx..."}: 8 bytes of JSON around the value. */
	char value[PUSH_FCM_MAX_PAYLOAD], *data_max;
	struct push_fcm_push max = { .token = "direct-3", .ttl_s = 60 };
	struct push_service_account sa;
	struct fcm_got g[3] = { 0 };
	struct push_fcm *f;
	json_t *lines;
	size_t len;

	(void)state;
	memset(value, 'v', PUSH_FCM_MAX_PAYLOAD - 8);
	value[PUSH_FCM_MAX_PAYLOAD - 8] = '\0';
	len = strlen(value) + 16;
	data_max = malloc(len);
	assert_non_null(data_max);
	snprintf(data_max, len, "{\"k\":\"%s\"}", value);
	assert_int_equal(strlen(data_max), PUSH_FCM_MAX_PAYLOAD);
	max.data_json = data_max;

	loop_open();
	sa_load(&sa, &fx.fcm, fx.rsa);
	f = fcm_new(&fx.fcm, &sa);
	assert_int_equal(push_fcm_send(f, &p, fcm_cb, &g[0]), FERRY_OK);
	assert_int_equal(push_fcm_send(f, &title_only, fcm_cb, &g[1]), FERRY_OK);
	assert_int_equal(push_fcm_send(f, &max, fcm_cb, &g[2]), FERRY_OK);
	run_until(3, 20000);
	for (int k = 0; k < 3; k++)
		assert_int_equal(g[k].res.outcome, PUSH_FCM_OK);

	lines = th_mock_log_where(&fx.fcm, "token", "direct-1");
	assert_int_equal(json_array_size(lines), 1);
	assert_string_equal(th_json_str(json_array_get(lines, 0), "body"),
			    "{\"message\":{\"token\":\"direct-1\","
			    "\"notification\":{\"title\":\"Hello\",\"body\":\"W\xc3\xb6rld\"},"
			    "\"data\":{\"room\":\"42\",\"kind\":\"chat\"},"
			    "\"android\":{\"priority\":\"normal\",\"ttl\":\"60s\","
			    "\"collapse_key\":\"chat\"}}}");
	json_decref(lines);
	lines = th_mock_log_where(&fx.fcm, "token", "direct-2");
	assert_int_equal(json_array_size(lines), 1);
	assert_string_equal(th_json_str(json_array_get(lines, 0), "body"),
			    "{\"message\":{\"token\":\"direct-2\","
			    "\"notification\":{\"title\":\"Only a title\"},"
			    "\"android\":{\"priority\":\"high\",\"ttl\":\"0s\"}}}");
	json_decref(lines);
	lines = th_mock_log_where(&fx.fcm, "token", "direct-3");
	assert_int_equal(json_array_size(lines), 1);
	json_decref(lines);
	free(data_max);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

/* Bad direct pushes are refused by push_fcm_send(): nothing reaches FCM. */
static void test_fcm_direct_refused(void **state)
{
	static const char *const not_ok[] = {
		"{\"n\":1}",
		"{\"room\":\"42\",\"nested\":{\"a\":\"b\"}}",
		"{\"flag\":true}",
		"{\"none\":null}",
		"{\"list\":[\"a\"]}",
		"[\"a\",\"b\"]",
		"\"just a string\"",
		"not json",
		"",
		"{\"a\":\"1\",\"a\":\"2\"}",
		"{\"from\":\"x\"}",
		"{\"gcm\":\"x\"}",
		"{\"google.c.a.e\":\"1\"}",
		"{\"a\":\"\xff\"}",
	};
	struct push_fcm_push ok = { .token = "refused-1",
				    .ttl_s = 60,
				    .title = "t",
				    .body = "b",
				    .data_json = "{\"a\":\"b\"}" };
	/* notification {"title":"t"} is 13 bytes, data {"k":"..."} 8 plus the value. */
	char value[PUSH_FCM_MAX_PAYLOAD], *data;
	struct push_fcm_push bad;
	struct push_service_account sa;
	struct push_fcm_stats st;
	struct fcm_got g = { 0 };
	struct push_fcm *f;
	json_t *lines;
	size_t len;

	(void)state;
	memset(value, 'v', PUSH_FCM_MAX_PAYLOAD - 8 - 13 + 1);
	value[PUSH_FCM_MAX_PAYLOAD - 8 - 13 + 1] = '\0';
	len = strlen(value) + 16;
	data = malloc(len);
	assert_non_null(data);
	snprintf(data, len, "{\"k\":\"%s\"}", value);

	loop_open();
	sa_load(&sa, &fx.fcm, fx.rsa);
	f = fcm_new(&fx.fcm, &sa);
	for (size_t i = 0; i < sizeof(not_ok) / sizeof(not_ok[0]); i++) {
		bad = ok;
		bad.data_json = not_ok[i];
		if (push_fcm_send(f, &bad, fcm_cb, &g) != FERRY_EINVAL)
			fail_msg("data '%s' was not refused with FERRY_EINVAL", not_ok[i]);
	}
	bad = ok;
	bad.title = "\xff\xfe";
	assert_int_equal(push_fcm_send(f, &bad, fcm_cb, &g), FERRY_EINVAL);
	bad = ok;
	bad.body = "caf\xe9";
	assert_int_equal(push_fcm_send(f, &bad, fcm_cb, &g), FERRY_EINVAL);
	/* One byte over, counting the notification with the data. */
	bad = ok;
	bad.body = NULL;
	bad.data_json = data;
	assert_int_equal(push_fcm_send(f, &bad, fcm_cb, &g), FERRY_ETOOBIG);
	assert_int_equal(g.done, 0);
	push_fcm_stats(f, &st);
	assert_int_equal(st.sent, 0);
	assert_int_equal(st.exchanges, 0);

	/* Without the title it fits, and goes. */
	bad.title = NULL;
	assert_int_equal(push_fcm_send(f, &bad, fcm_cb, &g), FERRY_OK);
	run_until(1, 20000);
	assert_int_equal(g.res.outcome, PUSH_FCM_OK);
	lines = th_mock_log_where(&fx.fcm, "token", "refused-1");
	assert_int_equal(json_array_size(lines), 1);
	json_decref(lines);
	free(data);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

/* Tokens born expired: one refresh after the 401, then the caller retries. */
static void test_fcm_expired_tokens(void **state)
{
	struct push_service_account sa;
	struct push_fcm_result r;
	struct push_fcm_stats st;
	struct push_fcm *f;

	(void)state;
	loop_open();
	sa_load(&sa, &fx.fcm_expired, fx.rsa);
	f = fcm_new(&fx.fcm_expired, &sa);
	r = fcm_one(f, "expired-1", 0);
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_int_equal(r.status, 401);
	assert_string_equal(r.error_code, "");
	push_fcm_stats(f, &st);
	assert_int_equal(st.exchanges, 2);
	assert_int_equal(st.refreshed_401, 1);
	assert_int_equal(st.requests, 2);
	assert_int_equal(count_path(&fx.fcm_expired, "/token"), 2);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

/* A cached token that FCM no longer takes: 401, refresh, resend, OK. */
static void test_fcm_refresh_after_401(void **state)
{
	struct push_service_account sa;
	struct push_fcm_result r;
	struct push_fcm_stats st;
	struct push_fcm *f;
	json_t *sends;
	size_t n;

	(void)state;
	loop_open();
	sa_load(&sa, &fx.fcm_short, fx.rsa);
	f = fcm_new(&fx.fcm_short, &sa);
	r = fcm_one(f, "short-1", 0);
	assert_int_equal(r.outcome, PUSH_FCM_OK);
	/* The 2-second token expires at the mock; the sender's clock, set back,
	 * still trusts it. */
	run_for(2300);
	fx.lag = 100;
	r = fcm_one(f, "short-2", 0);
	assert_int_equal(r.outcome, PUSH_FCM_OK);
	push_fcm_stats(f, &st);
	assert_int_equal(st.exchanges, 2);
	assert_int_equal(st.refreshed_401, 1);
	/* The mock refuses the token before reading the message: the 401 line
	 * names no device token. */
	sends = th_mock_log_where(&fx.fcm_short, "path", "/v1/projects/" PROJECT "/messages:send");
	n = json_array_size(sends);
	assert_int_equal(n, 3);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(sends, 1), "status")),
			 401);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(sends, 2), "status")),
			 200);
	assert_string_equal(th_json_str(json_array_get(sends, 2), "token"), "short-2");
	assert_int_equal(count_path(&fx.fcm_short, "/token"), 2);
	json_decref(sends);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

static void test_fcm_token_errors(void **state)
{
	struct push_service_account sa;
	struct push_fcm_result r;
	struct push_fcm *f;

	(void)state;
	loop_open();
	sa_load(&sa, &fx.fcm, fx.rsa);
	f = fcm_new(&fx.fcm, &sa);
	r = fcm_one(f, "unregistered-1", 0);
	assert_int_equal(r.outcome, PUSH_FCM_TOKEN_INVALID);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.error_code, "UNREGISTERED");
	r = fcm_one(f, "invalid-1", 0);
	assert_int_equal(r.outcome, PUSH_FCM_TOKEN_INVALID);
	assert_int_equal(r.status, 400);
	assert_string_equal(r.error_code, "INVALID_ARGUMENT");
	r = fcm_one(f, "mismatch-1", 0);
	assert_int_equal(r.outcome, PUSH_FCM_TOKEN_INVALID);
	assert_int_equal(r.status, 403);
	assert_string_equal(r.error_code, "SENDER_ID_MISMATCH");

	/* 429: Retry-After says 1 s, FCM's floor of a minute applies here. */
	r = fcm_one(f, "quota1-a", 0);
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_int_equal(r.status, 429);
	assert_string_equal(r.error_code, "QUOTA_EXCEEDED");
	assert_int_equal(r.retry_after_s, 1);
	assert_true(r.retry_delay_ms >= 1000);
	assert_true(r.retry_delay_ms >= PUSH_FCM_QUOTA_MIN_DELAY_MS);
	r = fcm_one(f, "quota1-a", 1);
	assert_int_equal(r.outcome, PUSH_FCM_OK);

	r = fcm_one(f, "unavail1-a", 0);
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.retry_delay_ms, 1000);
	/* Retry-After 1 does not cut a longer back-off short (attempt 3: 8 s). */
	r = fcm_one(f, "unavail1-b", 3);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.retry_after_s, 1);
	assert_in_range(r.retry_delay_ms, 4000, 8000);
	r = fcm_one(f, "internal1-a", 2);
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_int_equal(r.status, 500);
	assert_in_range(r.retry_delay_ms, 2000, 4000);
	r = fcm_one(f, "unavail1-a", 1);
	assert_int_equal(r.outcome, PUSH_FCM_OK);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

static void test_fcm_bad_key(void **state)
{
	struct push_service_account sa;
	struct fcm_got g[2] = { 0 };
	struct push_fcm_stats st;
	struct push_fcm *f;

	(void)state;
	loop_open();
	sa_load(&sa, &fx.fcm, fx.rsa_other);
	f = fcm_new(&fx.fcm, &sa);
	for (int k = 0; k < 2; k++) {
		struct push_fcm_push p = { .token = "badkey-1", .ttl_s = 60 };

		assert_int_equal(push_fcm_send(f, &p, fcm_cb, &g[k]), FERRY_OK);
	}
	run_until(2, 20000);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(g[k].res.outcome, PUSH_FCM_CONFIG);
		assert_int_equal(g[k].res.rc, FERRY_EAUTH);
		assert_int_equal(g[k].res.status, 400);
		assert_string_equal(g[k].res.error_code, "invalid_grant");
	}
	push_fcm_stats(f, &st);
	assert_int_equal(st.exchanges, 1);
	assert_int_equal(st.exchange_failures, 1);
	assert_int_equal(st.requests, 0);
	push_fcm_free(f);
	push_service_account_release(&sa);
	loop_close();
}

/* ---- fixture -------------------------------------------------------------------- */

static int setup(void **state)
{
	char *ec_pub, *rsa_pub;

	(void)state;
	th_mock_cert(&fx.cert, &fx.key);
	fx.ec = EVP_EC_gen("P-256");
	fx.rsa = EVP_RSA_gen(2048);
	fx.rsa_other = EVP_RSA_gen(2048);
	if (!fx.ec || !fx.rsa || !fx.rsa_other)
		fail_msg("cannot generate keys");
	ec_pub = th_key_file(fx.ec, "authkey.pub", 0);
	rsa_pub = th_key_file(fx.rsa, "sa.pub", 0);
	th_mock_start(&fx.apns, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--topic", TOPIC, "--unregistered-ts", UNREG_TS,
					NULL });
	th_mock_start(&fx.apns_goaway, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--goaway-after", "5", NULL });
	th_mock_start(&fx.fcm, "mock_fcm",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
					"--project-id", PROJECT, NULL });
	th_mock_start(&fx.fcm_expired, "mock_fcm",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
					"--project-id", PROJECT, "--token-ttl", "0", NULL });
	th_mock_cert(&fx.client_cert, &fx.client_key);
	th_mock_cert(&fx.other_cert, &fx.other_key);
	th_mock_start(&fx.apns_certs, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--topic", TOPIC, "--client-ca", fx.client_cert,
					NULL });
	th_mock_start(&fx.fcm_short, "mock_fcm",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
					"--project-id", PROJECT, "--token-ttl", "2", NULL });
	unlink(ec_pub);
	unlink(rsa_pub);
	free(ec_pub);
	free(rsa_pub);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	th_mock_stop(&fx.apns);
	th_mock_stop(&fx.apns_goaway);
	th_mock_stop(&fx.fcm);
	th_mock_stop(&fx.fcm_expired);
	th_mock_stop(&fx.fcm_short);
	th_mock_stop(&fx.apns_certs);
	unlink(fx.client_cert);
	unlink(fx.client_key);
	unlink(fx.other_cert);
	unlink(fx.other_key);
	free(fx.client_cert);
	free(fx.client_key);
	free(fx.other_cert);
	free(fx.other_key);
	EVP_PKEY_free(fx.ec);
	EVP_PKEY_free(fx.rsa);
	EVP_PKEY_free(fx.rsa_other);
	unlink(fx.cert);
	unlink(fx.key);
	free(fx.cert);
	free(fx.key);
	return 0;
}

/*
 * Certificate-based authentication: no provider token, the TLS handshake
 * proves who sends, and every stream is open from the first request. A
 * certificate the server does not trust fails the connection (RETRY).
 */
static void test_apns_certificate(void **state)
{
	struct push_apns_opts o = { .endpoint = fx.apns_certs.base,
				    .default_topic = TOPIC,
				    .cert_file = fx.client_cert,
				    .cert_key = fx.client_key };
	struct push_apns_push p = { .token = "cafe0001", .expiration = -1 };
	struct apns_got g[3];
	char err[256] = "";
	struct push_apns *a;
	json_t *lines, *line;

	(void)state;
	assert_int_equal(push_apns_cert_check(fx.client_cert, fx.client_key, err, sizeof(err)),
			 FERRY_OK);
	assert_int_equal(push_apns_cert_check(fx.client_cert, fx.other_key, err, sizeof(err)),
			 FERRY_ECONFIG);
	assert_non_null(strstr(err, "does not match"));
	loop_open();
	a = push_apns_new(fx.http, &o, err, sizeof(err));
	if (!a)
		fail_msg("push_apns_new: %s", err);
	for (int k = 0; k < 2; k++) {
		p.token = k ? "cafe0002" : "cafe0001";
		apns_submit(a, &p, &g[k]);
	}
	run_until(2, 20000);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(g[k].res.outcome, PUSH_APNS_OK);
		assert_int_equal(g[k].res.status, 200);
	}
	lines = th_mock_log_where(&fx.apns_certs, "token", "cafe0002");
	assert_int_equal(json_array_size(lines), 1);
	line = json_array_get(lines, 0);
	assert_true(json_is_null(json_object_get(line, "jwt_kid")));
	assert_string_equal(th_json_str(line, "topic"), TOPIC);
	json_decref(lines);
	push_apns_free(a);

	/* An untrusted certificate: the handshake fails, a transient error. */
	o.cert_file = fx.other_cert;
	o.cert_key = fx.other_key;
	a = push_apns_new(fx.http, &o, err, sizeof(err));
	assert_non_null(a);
	p.token = "cafe0003";
	apns_submit(a, &p, &g[2]);
	run_until(3, 20000);
	assert_int_equal(g[2].res.outcome, PUSH_APNS_RETRY);
	assert_int_not_equal(g[2].res.rc, FERRY_OK);
	assert_int_equal(g[2].res.status, 0);
	push_apns_free(a);
	loop_close();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apns_ok),
		cmocka_unit_test(test_apns_alert),
		cmocka_unit_test(test_apns_direct),
		cmocka_unit_test(test_apns_direct_refused),
		cmocka_unit_test(test_apns_many),
		cmocka_unit_test(test_apns_token_errors),
		cmocka_unit_test(test_apns_unavailable),
		cmocka_unit_test(test_apns_expired_provider_token),
		cmocka_unit_test(test_apns_goaway),
		cmocka_unit_test(test_apns_free_pending),
		cmocka_unit_test(test_apns_certificate),
		cmocka_unit_test(test_fcm_ok_and_reuse),
		cmocka_unit_test(test_fcm_wake_body),
		cmocka_unit_test(test_fcm_direct),
		cmocka_unit_test(test_fcm_direct_refused),
		cmocka_unit_test(test_fcm_expired_tokens),
		cmocka_unit_test(test_fcm_refresh_after_401),
		cmocka_unit_test(test_fcm_token_errors),
		cmocka_unit_test(test_fcm_bad_key),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests_name("push_senders", tests, setup, teardown);
}
