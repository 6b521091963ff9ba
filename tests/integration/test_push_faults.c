/*
 * test_push_faults.c - wake-up pushes while the providers misbehave: down
 * for half an hour, 503/429/500 bursts, Retry-After, 4xx refusals, GOAWAY
 * every few streams. ferryd against a throwaway PostgreSQL and the mock
 * providers (tests/mock/README.md) over HTTP/2 and TLS.
 *
 * What is simulated, and how. ferryd runs with FERRY_TEST_PUSH_SPEEDUP=100
 * (test builds only, push/push.c): every wait of its push service (the
 * back-off from 1 s doubling to 15 minutes, Retry-After, [push]
 * min_interval, FCM's minute after a 429) lasts a hundredth of its time,
 * while everything else keeps the real clock. So 30 simulated minutes of
 * outage are 18 s here, a Retry-After of 120 s is 1.2 s, the default
 * min_interval of 30 s is 0.3 s. The schedule is ferry's own; the
 * configuration changes nothing but [push] max_attempts (16: tries that
 * reach over at least 46 simulated minutes of failures, docs/operations.md).
 *
 * The mocks hold the outages (SIGUSR1 to SIGUSR2, th_mock_outage()) and log
 * every request with the time it was answered. The tests assert from those
 * logs what reached the providers and when, and from the admin API what
 * ferry made of it: GET /v1/devices/{id} (its token, last_push) and
 * GET /v1/stats (the push counters).
 *
 * Apps, so that each test has counters of its own:
 *   ""      APNs on apns_down (outage: refuse), FCM on fcm_down (outage:
 *           unavailable, Retry-After 1)
 *   rst     APNs on apns_rst (outage: reset)
 *   unav    APNs on apns_unav (outage: unavailable, Retry-After 1)
 *   ra      APNs on apns_ra (outage: unavailable), FCM on fcm_ra; both send
 *           Retry-After 120 with 429 and 503
 *   burst   APNs on apns, FCM on fcm
 *   reject  APNs on apns, FCM on fcm
 *   goaway  APNs on apns_goaway, FCM on fcm_goaway: GOAWAY after every 7th
 *           request of a connection
 * Devices never connect: envelopes reach them through POST /v1/messages,
 * are stored, and the device is woken.
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

#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "common/banned.h"

#define TOKEN "push-faults-admin-token"
#define SPEEDUP 100
#define MAX_ATTEMPTS 16
/* Real milliseconds of @s simulated seconds. */
#define SIM_MS(s) ((long)(s)*1000L / SPEEDUP)
/* The mocks stamp requests in whole milliseconds: two stamps may be one
 * millisecond closer than the moments they stand for. */
#define STAMP_SLACK_MS 1

struct fixture {
	char *conninfo;
	struct th_push_keys k;
	char *sa_down, *sa_ra, *sa, *sa_goaway; /* each FCM mock its own token_uri */
	struct th_mock apns_down, apns_rst, apns_unav, apns_ra, apns, apns_goaway;
	struct th_mock fcm_down, fcm_ra, fcm, fcm_goaway;
	struct th_ferryd d;
};

static struct fixture fx;

/* Sleep @ms (nothing if it is not positive). */
static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms <= 0)
		return;
	while (nanosleep(&ts, &ts))
		;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- set-up ---- */

/* Append "[push.apns.@app]" (@app "": the default) for @m to @b. */
static size_t apns_section(char *b, size_t n, const char *app, const struct th_mock *m)
{
	return (size_t)snprintf(b, n,
				"[push.apns%s%s]\nendpoint = %s\nsandbox_endpoint = %s\n"
				"key_file = %s\nkey_id = " TH_KEY_ID "\nteam_id = " TH_TEAM_ID
				"\ntopic = " TH_TOPIC "\n\n",
				*app ? "." : "", app, m->base, m->base, fx.k.p8);
}

static size_t fcm_section(char *b, size_t n, const char *app, const struct th_mock *m,
			  const char *sa)
{
	return (size_t)snprintf(b, n, "[push.fcm%s%s]\nendpoint = %s\nservice_account = %s\n\n",
				*app ? "." : "", app, m->base, sa);
}

static char *make_config(void)
{
	char extra[8192];
	size_t o = 0;

	/* The gateway runs the store and the push service (no device connects). */
	o += (size_t)snprintf(extra + o, sizeof(extra) - o,
			      "[gateway]\nlisten = 127.0.0.1:%d\n\n"
			      "[push]\nca_file = %s\nmax_attempts = %d\n\n",
			      th_free_port(), fx.k.cert, MAX_ATTEMPTS);
	o += apns_section(extra + o, sizeof(extra) - o, "", &fx.apns_down);
	o += fcm_section(extra + o, sizeof(extra) - o, "", &fx.fcm_down, fx.sa_down);
	o += apns_section(extra + o, sizeof(extra) - o, "rst", &fx.apns_rst);
	o += apns_section(extra + o, sizeof(extra) - o, "unav", &fx.apns_unav);
	o += apns_section(extra + o, sizeof(extra) - o, "ra", &fx.apns_ra);
	o += fcm_section(extra + o, sizeof(extra) - o, "ra", &fx.fcm_ra, fx.sa_ra);
	o += apns_section(extra + o, sizeof(extra) - o, "burst", &fx.apns);
	o += fcm_section(extra + o, sizeof(extra) - o, "burst", &fx.fcm, fx.sa);
	o += apns_section(extra + o, sizeof(extra) - o, "reject", &fx.apns);
	o += fcm_section(extra + o, sizeof(extra) - o, "reject", &fx.fcm, fx.sa);
	o += apns_section(extra + o, sizeof(extra) - o, "goaway", &fx.apns_goaway);
	o += fcm_section(extra + o, sizeof(extra) - o, "goaway", &fx.fcm_goaway, fx.sa_goaway);
	if (o >= sizeof(extra))
		fail_msg("the test's configuration does not fit");
	return th_ferryd_config_ex(fx.conninfo, fx.d.admin_port, TOKEN, extra);
}

static void start_mocks(void)
{
	th_mock_apns_start(&fx.apns_down, &fx.k, (const char *[]){ "--outage", "refuse", NULL });
	th_mock_apns_start(&fx.apns_rst, &fx.k, (const char *[]){ "--outage", "reset", NULL });
	th_mock_apns_start(
		&fx.apns_unav, &fx.k,
		(const char *[]){ "--outage", "unavailable", "--retry-after", "1", NULL });
	th_mock_apns_start(
		&fx.apns_ra, &fx.k,
		(const char *[]){ "--outage", "unavailable", "--retry-after", "120", NULL });
	th_mock_apns_start(&fx.apns, &fx.k, (const char *[]){ "--topic", TH_TOPIC, NULL });
	th_mock_apns_start(&fx.apns_goaway, &fx.k, (const char *[]){ "--goaway-after", "7", NULL });
	th_mock_fcm_start(&fx.fcm_down, &fx.k, (const char *[]){ "--outage", "unavailable", NULL });
	th_mock_fcm_start(&fx.fcm_ra, &fx.k, (const char *[]){ "--retry-after", "120", NULL });
	th_mock_fcm_start(&fx.fcm, &fx.k, NULL);
	th_mock_fcm_start(&fx.fcm_goaway, &fx.k, (const char *[]){ "--goaway-after", "7", NULL });
	fx.sa_down = th_service_account_file(fx.k.rsa, &fx.fcm_down, TH_PROJECT, TH_SA_EMAIL);
	fx.sa_ra = th_service_account_file(fx.k.rsa, &fx.fcm_ra, TH_PROJECT, TH_SA_EMAIL);
	fx.sa = th_service_account_file(fx.k.rsa, &fx.fcm, TH_PROJECT, TH_SA_EMAIL);
	fx.sa_goaway = th_service_account_file(fx.k.rsa, &fx.fcm_goaway, TH_PROJECT, TH_SA_EMAIL);
}

static int setup(void **state)
{
	char *config, *path, speedup[16];
	int admin = th_free_port();

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	th_push_keys_make(&fx.k);
	start_mocks();
	fx.conninfo = th_db_new("pushfaults");
	fx.d.admin_port = admin;
	config = make_config();
	path = th_write_file("pushfaults.ini", config);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	snprintf(speedup, sizeof(speedup), "%d", SPEEDUP);
	setenv("FERRY_TEST_PUSH_SPEEDUP", speedup, 1);
	th_ferryd_start(&fx.d, config, admin);
	unsetenv("FERRY_TEST_PUSH_SPEEDUP");
	th_ferryd_wait_ready(&fx.d, 10000);
	/* Without the speed-up (not a test build) every wait here would be
	 * a hundred times too short: say so rather than fail obscurely. */
	if (th_log_count(&fx.d, "event=push_speedup factor=100 ") != 1) {
		char *log = th_read_file(fx.d.log_path);

		fprintf(stderr, "%.4000s\n", log);
		free(log);
		fail_msg("ferryd did not take FERRY_TEST_PUSH_SPEEDUP: built without "
			 "FERRY_FAULTS?");
	}
	unlink(path);
	free(path);
	free(config);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);
	struct th_mock *mocks[] = { &fx.apns_down, &fx.apns_rst,    &fx.apns_unav, &fx.apns_ra,
				    &fx.apns,	   &fx.apns_goaway, &fx.fcm_down,  &fx.fcm_ra,
				    &fx.fcm,	   &fx.fcm_goaway };
	char *files[] = { fx.sa_down, fx.sa_ra, fx.sa, fx.sa_goaway };

	(void)state;
	for (size_t i = 0; i < sizeof(mocks) / sizeof(mocks[0]); i++)
		th_mock_stop(mocks[i]);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		unlink(files[i]);
		free(files[i]);
	}
	th_push_keys_release(&fx.k);
	free(fx.conninfo);
	curl_global_cleanup();
	return status == 0 ? 0 : -1;
}

/* ---- the admin API ---- */

static json_t *admin(const char *method, const char *path, const char *body, long want)
{
	char url[256];
	struct th_response r;
	json_t *j;

	snprintf(url, sizeof(url), "%s%s", fx.d.admin_url, path);
	th_http(&r, method, url, TOKEN, body);
	if (r.status != want)
		fail_msg("%s %s: %ld, not %ld: %s", method, path, r.status, want, r.body);
	j = json_loads(r.body, 0, NULL);
	th_response_release(&r);
	return j;
}

/* A device with push token @token of @provider in @app ("": the default). */
static int64_t device_new(const char *provider, const char *token, const char *app)
{
	char secret[64], path[64], body[512];
	int64_t id;

	th_device_create(&fx.d, TOKEN, "faults", &id, secret);
	snprintf(path, sizeof(path), "/v1/devices/%lld/push", (long long)id);
	snprintf(body, sizeof(body), "{\"provider\":\"%s\",\"token\":\"%s\"%s%s%s}", provider,
		 token, *app ? ",\"app\":\"" : "", app, *app ? "\"" : "");
	json_decref(admin("PUT", path, body, 200));
	return id;
}

/* @n envelopes to @device, each stored (it is away), each a wake. */
static void send_to(int64_t device, int n)
{
	char body[128];

	snprintf(body, sizeof(body), "{\"to_device\":%lld,\"payload_b64\":\"aGk=\"}",
		 (long long)device);
	for (int i = 0; i < n; i++) {
		json_t *j = admin("POST", "/v1/messages", body, 200);

		assert_string_equal(json_string_value(json_object_get(j, "status")), "stored");
		json_decref(j);
	}
}

static int has_token(int64_t id)
{
	char path[64];
	json_t *j;
	int has;

	snprintf(path, sizeof(path), "/v1/devices/%lld", (long long)id);
	j = admin("GET", path, NULL, 200);
	has = json_is_object(json_object_get(j, "push"));
	json_decref(j);
	return has;
}

/* Wait (10 s at most) until device @id's last_push says @outcome, @status
 * and @reason (NULL: none); its outcomes are written about once a second. */
static void wait_last_push(int64_t id, const char *outcome, long status, const char *reason)
{
	char path[64];

	snprintf(path, sizeof(path), "/v1/devices/%lld", (long long)id);
	for (int i = 0; i < 200; i++) {
		json_t *j = admin("GET", path, NULL, 200);
		json_t *lp = json_object_get(j, "last_push");
		const char *o = json_string_value(json_object_get(lp, "outcome"));
		const char *r = json_string_value(json_object_get(lp, "reason"));
		int match = o && strcmp(o, outcome) == 0 &&
			    json_integer_value(json_object_get(lp, "status")) == status &&
			    (reason ? r && strcmp(r, reason) == 0 : !r);

		json_decref(j);
		if (match)
			return;
		sleep_ms(50);
	}
	fail_msg("device %lld: no last_push %s %ld %s", (long long)id, outcome, status,
		 reason ? reason : "");
}

/* GET /v1/stats "push" (a new reference). */
static json_t *push_stats(void)
{
	json_t *j = admin("GET", "/v1/stats", NULL, 200);
	json_t *push = json_incref(json_object_get(j, "push"));

	json_decref(j);
	assert_true(json_is_object(push));
	return push;
}

static json_int_t stat_of(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("stats: '%s' is not an integer", key);
	return json_integer_value(v);
}

/* Counter @key of @app's pushes to @provider (0 before its first push). */
static json_int_t prov_stat(json_t *push, const char *app, const char *provider, const char *key)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(push, "providers"), i, p)
	{
		if (strcmp(th_json_str(p, "app"), app) == 0 &&
		    strcmp(th_json_str(p, "provider"), provider) == 0)
			return stat_of(p, key);
	}
	return 0;
}

/* How many of @app's failed pushes to @provider said @reason. */
static json_int_t reason_count(json_t *push, const char *app, const char *provider,
			       const char *reason)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(push, "providers"), i, p)
	{
		if (strcmp(th_json_str(p, "app"), app) == 0 &&
		    strcmp(th_json_str(p, "provider"), provider) == 0)
			return json_integer_value(
				json_object_get(json_object_get(p, "failed_by_reason"), reason));
	}
	return 0;
}

/* ---- the mocks' logs ---- */

static size_t count_for(const struct th_mock *m, const char *token)
{
	json_t *lines = th_mock_log_where(m, "token", token);
	size_t n = json_array_size(lines);

	json_decref(lines);
	return n;
}

/* Fail unless @token had exactly @n requests; the message shows them. */
static void assert_requests(const struct th_mock *m, const char *token, size_t n)
{
	json_t *lines = th_mock_log_where(m, "token", token);
	char *text;

	if (json_array_size(lines) == n) {
		json_decref(lines);
		return;
	}
	text = json_dumps(lines, JSON_COMPACT);
	fail_msg("token %s: %zu requests, not %zu: %.3000s", token, json_array_size(lines), n,
		 text ? text : "");
}

/* Requests for @token that were answered @status. */
static size_t status_count(const struct th_mock *m, const char *token, long status)
{
	json_t *lines = th_mock_log_where(m, "token", token), *l;
	size_t i, n = 0;

	json_array_foreach(lines, i, l)
	{
		n += json_integer_value(json_object_get(l, "status")) == status;
	}
	json_decref(lines);
	return n;
}

/* Wait up to @ms for @n requests for @token answered @status; fails then. */
static void wait_status(const struct th_mock *m, const char *token, long status, size_t n, long ms)
{
	for (long end = now_ms() + ms; status_count(m, token, status) < n;) {
		if (now_ms() > end)
			fail_msg("token %s: %zu answers %ld, not %zu, after %ld ms", token,
				 status_count(m, token, status), status, n, ms);
		sleep_ms(50);
	}
}

static long ts_of(json_t *line)
{
	json_t *v = json_object_get(line, "ts_ms");

	if (!json_is_integer(v))
		fail_msg("log line without ts_ms");
	return (long)json_integer_value(v);
}

/* Every request for @token came at least @min_ms after the one before. */
static void assert_spaced(const struct th_mock *m, const char *token, long min_ms)
{
	json_t *lines = th_mock_log_where(m, "token", token);

	for (size_t i = 1; i < json_array_size(lines); i++) {
		long gap = ts_of(json_array_get(lines, i)) - ts_of(json_array_get(lines, i - 1));

		if (gap + STAMP_SLACK_MS < min_ms)
			fail_msg("token %s: request %zu came %ld ms after the one before, "
				 "not %ld",
				 token, i + 1, gap, min_ms);
	}
	json_decref(lines);
}

/* The statuses of @token's requests, in order, are @want[0..n). */
static void assert_statuses(const struct th_mock *m, const char *token, const long *want, size_t n)
{
	json_t *lines = th_mock_log_where(m, "token", token);

	if (json_array_size(lines) != n)
		fail_msg("token %s: %zu requests, not %zu", token, json_array_size(lines), n);
	for (size_t i = 0; i < n; i++) {
		long st = (long)json_integer_value(
			json_object_get(json_array_get(lines, i), "status"));

		if (st != want[i])
			fail_msg("token %s: request %zu answered %ld, not %ld", token, i + 1, st,
				 want[i]);
	}
	json_decref(lines);
}

/* ---- tests ---- */

/* The providers an outage takes away, and how (see the file comment). */
struct down {
	struct th_mock *m;
	const char *provider, *app, *prefix; /* tokens: prefix then 2 digits */
};

enum { OUTAGE_DEVICES = 5, OUTAGE_ROUNDS = 3, OUTAGE_ENVELOPES = 2 };

/* After the outage: @token had one 200, its last request, and before it
 * only 503s (nothing reached a provider that refused or reset), never two
 * sooner than Retry-After 1 apart; the device kept its token. */
static void assert_one_wake_after(const struct th_mock *m, const char *token, int64_t id)
{
	json_t *lines = th_mock_log_where(m, "token", token);
	size_t n = json_array_size(lines);

	assert_int_equal(status_count(m, token, 200), 1);
	assert_int_equal(status_count(m, token, 503), n - 1);
	assert_int_equal(
		json_integer_value(json_object_get(json_array_get(lines, n - 1), "status")), 200);
	json_decref(lines);
	assert_spaced(m, token, SIM_MS(1));
	assert_true(has_token(id));
	wait_last_push(id, "ok", 200, NULL);
}

/* Between @before and @after: no wake given up, no token removed, one push
 * through per device, and the failures counted under the outage's reason. */
static void assert_outage_counters(json_t *before, json_t *after, const struct down *down,
				   size_t ng)
{
	assert_int_equal(stat_of(after, "wakes_gave_up"), stat_of(before, "wakes_gave_up"));
	for (size_t g = 0; g < ng; g++) {
		assert_int_equal(
			prov_stat(after, down[g].app, down[g].provider, "tokens_removed"),
			prov_stat(before, down[g].app, down[g].provider, "tokens_removed"));
		assert_int_equal(prov_stat(after, down[g].app, down[g].provider, "ok"),
				 prov_stat(before, down[g].app, down[g].provider, "ok") +
					 OUTAGE_DEVICES);
	}
	assert_true(reason_count(after, "", "apns", "transport") > 0);
	assert_true(reason_count(after, "rst", "apns", "transport") > 0);
	assert_true(reason_count(after, "unav", "apns", "ServiceUnavailable") > 0);
	assert_true(reason_count(after, "", "fcm", "UNAVAILABLE") > 0);
}

/*
 * Every provider down for 30 simulated minutes (18 s) at once, each its
 * own way: APNs refusing connections, resetting them, answering 503 with
 * Retry-After 1; FCM answering 503 with Retry-After 1. Envelopes keep
 * coming for the devices at the start, a third and two thirds into it.
 * Then the providers come back: each device gets exactly one wake (not one
 * per envelope, not one per retry), keeps its token, and ferry gave up on
 * none; while a provider answers 503, ferry's tries never come sooner than
 * its Retry-After.
 */
static void test_outage_one_wake_per_device(void **state)
{
	const struct down down[] = {
		{ &fx.apns_down, "apns", "", "aaaa01" },
		{ &fx.apns_rst, "apns", "rst", "aaaa02" },
		{ &fx.apns_unav, "apns", "unav", "aaaa03" },
		{ &fx.fcm_down, "fcm", "", "fcm-outage-" },
	};
	enum { G = sizeof(down) / sizeof(down[0]), N = OUTAGE_DEVICES };
	char tok[G][N][32];
	int64_t ids[G][N];
	json_t *before = push_stats(), *after;
	long start;

	(void)state;
	for (size_t g = 0; g < G; g++) {
		for (int k = 0; k < N; k++) {
			snprintf(tok[g][k], sizeof(tok[g][k]), "%s%02d", down[g].prefix, k);
			ids[g][k] = device_new(down[g].provider, tok[g][k], down[g].app);
		}
		th_mock_outage(down[g].m, 1);
	}
	start = now_ms();
	for (int round = 0; round < OUTAGE_ROUNDS; round++) {
		for (size_t g = 0; g < G; g++)
			for (int k = 0; k < N; k++)
				send_to(ids[g][k], OUTAGE_ENVELOPES);
		sleep_ms(start + SIM_MS(30 * 60) * (round + 1) / OUTAGE_ROUNDS - now_ms());
	}
	for (size_t g = 0; g < G; g++) {
		for (int k = 0; k < N; k++) {
			assert_int_equal(status_count(down[g].m, tok[g][k], 200), 0);
			assert_true(has_token(ids[g][k]));
		}
		th_mock_outage(down[g].m, 0);
	}
	/* The next try is at most 15 simulated minutes away (the back-off's
	 * cap), then ten min_intervals for a second wake that must not come. */
	for (size_t g = 0; g < G; g++)
		for (int k = 0; k < N; k++)
			wait_status(down[g].m, tok[g][k], 200, 1, SIM_MS(15 * 60) + 10000);
	sleep_ms(SIM_MS(10 * 30));
	for (size_t g = 0; g < G; g++)
		for (int k = 0; k < N; k++)
			assert_one_wake_after(down[g].m, tok[g][k], ids[g][k]);
	/* The answered 503s: ferry kept trying through the outage. */
	assert_true(count_for(&fx.apns_unav, tok[2][0]) >= 5);
	assert_true(count_for(&fx.fcm_down, tok[3][0]) >= 5);
	after = push_stats();
	assert_true(stat_of(after, "wakes_coalesced") - stat_of(before, "wakes_coalesced") >=
		    G * N * (OUTAGE_ROUNDS * OUTAGE_ENVELOPES - 1));
	assert_outage_counters(before, after, down, G);
	json_decref(before);
	json_decref(after);
}

/* A push answered @first with Retry-After 120, then 200. */
struct ra_case {
	struct th_mock *m;
	const char *provider, *token;
	long first;
};

/*
 * Retry-After 120 (1.2 s here) on a 429 or a 503, from either provider:
 * the next request for that token comes no sooner, and goes through. Then
 * APNs answering 503 with Retry-After 120 to everything for 10 simulated
 * minutes: no two tries for a token closer than that, one wake each after.
 */
static void test_retry_after_honoured(void **state)
{
	const struct ra_case c[] = {
		{ &fx.apns_ra, "apns", "0ff5031a01", 503 },
		{ &fx.apns_ra, "apns", "0ff4291a01", 429 },
		{ &fx.fcm_ra, "fcm", "unavail1-ra-01", 503 },
		{ &fx.fcm_ra, "fcm", "quota1-ra-01", 429 },
	};
	enum { NC = sizeof(c) / sizeof(c[0]), N = 4 };
	int64_t ids[NC], down[N];
	char tok[N][32];

	(void)state;
	for (size_t i = 0; i < NC; i++)
		ids[i] = device_new(c[i].provider, c[i].token, "ra");
	for (size_t i = 0; i < NC; i++)
		send_to(ids[i], 1);
	for (size_t i = 0; i < NC; i++) {
		const long want[] = { c[i].first, 200 };
		json_t *lines;

		wait_status(c[i].m, c[i].token, 200, 1, 20000);
		assert_statuses(c[i].m, c[i].token, want, 2);
		lines = th_mock_log_where(c[i].m, "token", c[i].token);
		assert_string_equal(th_json_str(json_array_get(lines, 0), "retry_after"), "120");
		json_decref(lines);
		assert_spaced(c[i].m, c[i].token, SIM_MS(120));
		assert_true(has_token(ids[i]));
	}

	for (int k = 0; k < N; k++) {
		snprintf(tok[k], sizeof(tok[k]), "bbbb01%02d", k);
		down[k] = device_new("apns", tok[k], "ra");
	}
	th_mock_outage(&fx.apns_ra, 1);
	for (int k = 0; k < N; k++)
		send_to(down[k], 1);
	sleep_ms(SIM_MS(10 * 60));
	th_mock_outage(&fx.apns_ra, 0);
	for (int k = 0; k < N; k++) {
		wait_status(&fx.apns_ra, tok[k], 200, 1, 20000);
		assert_true(status_count(&fx.apns_ra, tok[k], 503) >= 3);
		assert_int_equal(status_count(&fx.apns_ra, tok[k], 503) + 1,
				 count_for(&fx.apns_ra, tok[k]));
		assert_spaced(&fx.apns_ra, tok[k], SIM_MS(120));
		assert_true(has_token(down[k]));
	}
}

/* A token that fails @fails times with @status, then goes through. */
struct burst {
	struct th_mock *m;
	const char *provider, *prefix, *reason;
	long status;
	int fails;
	long min_gap_ms; /* between tries: FCM's minute after a 429 */
};

enum { BURST_DEVICES = 4 };

/* Wait for each of @b's tokens to go through, then check what they met. */
static void check_burst(const struct burst *b, char tok[][32], const int64_t *ids)
{
	long want[8];

	for (int i = 0; i < b->fails; i++)
		want[i] = b->status;
	want[b->fails] = 200;
	for (int k = 0; k < BURST_DEVICES; k++) {
		wait_status(b->m, tok[k], 200, 1, 30000);
		assert_statuses(b->m, tok[k], want, (size_t)b->fails + 1);
		assert_spaced(b->m, tok[k], b->min_gap_ms);
		assert_true(has_token(ids[k]));
		wait_last_push(ids[k], "ok", 200, NULL);
	}
}

/*
 * 503, 429 and 500 bursts from both providers, for many devices at once:
 * each token is tried again until it goes through, once per failure (the
 * counters say exactly that), FCM's 429s a simulated minute apart, and no
 * token is removed.
 */
static void test_transient_bursts_keep_tokens(void **state)
{
	const struct burst b[] = {
		{ &fx.apns, "apns", "0ff5033b", "ServiceUnavailable", 503, 3, 0 },
		{ &fx.apns, "apns", "0ff4293b", "TooManyRequests", 429, 3, 0 },
		{ &fx.apns, "apns", "0ff5002b", "InternalServerError", 500, 2, 0 },
		{ &fx.fcm, "fcm", "unavail3-b", "UNAVAILABLE", 503, 3, 0 },
		{ &fx.fcm, "fcm", "quota2-b", "QUOTA_EXCEEDED", 429, 2, SIM_MS(60) },
		{ &fx.fcm, "fcm", "internal3-b", "INTERNAL", 500, 3, 0 },
	};
	enum { NB = sizeof(b) / sizeof(b[0]), N = BURST_DEVICES };
	char tok[NB][N][32];
	int64_t ids[NB][N];
	json_t *before = push_stats(), *after;
	json_int_t fails[2] = { 0, 0 };

	(void)state;
	for (size_t i = 0; i < NB; i++) {
		for (int k = 0; k < N; k++) {
			snprintf(tok[i][k], sizeof(tok[i][k]), "%s%02d", b[i].prefix, k);
			ids[i][k] = device_new(b[i].provider, tok[i][k], "burst");
		}
	}
	for (int k = 0; k < N; k++)
		for (size_t i = 0; i < NB; i++)
			send_to(ids[i][k], 1);
	for (size_t i = 0; i < NB; i++)
		check_burst(&b[i], tok[i], ids[i]);
	/* Nothing more comes: each was one wake, now over. */
	sleep_ms(SIM_MS(10 * 30));
	after = push_stats();
	for (size_t i = 0; i < NB; i++) {
		int f = strcmp(b[i].provider, "fcm") == 0;

		for (int k = 0; k < N; k++)
			assert_requests(b[i].m, tok[i][k], (size_t)b[i].fails + 1);
		fails[f] += N * b[i].fails;
		assert_int_equal(reason_count(after, "burst", b[i].provider, b[i].reason) -
					 reason_count(before, "burst", b[i].provider, b[i].reason),
				 N * b[i].fails);
	}
	for (int f = 0; f < 2; f++) {
		const char *p = f ? "fcm" : "apns";

		assert_int_equal(prov_stat(after, "burst", p, "sent"), 3 * N);
		assert_int_equal(prov_stat(after, "burst", p, "ok"), 3 * N);
		assert_int_equal(prov_stat(after, "burst", p, "retries"), fails[f]);
		assert_int_equal(prov_stat(after, "burst", p, "failed"), fails[f]);
		assert_int_equal(prov_stat(after, "burst", p, "tokens_removed"), 0);
	}
	assert_int_equal(stat_of(after, "wakes_gave_up"), stat_of(before, "wakes_gave_up"));
	json_decref(before);
	json_decref(after);
}

/* A request the provider refuses whatever the device: @status @reason. */
struct refusal {
	struct th_mock *m;
	const char *provider, *prefix, *reason;
	long status;
};

/*
 * 400 BadPriority, 413 PayloadTooLarge, FCM's 400 about the message: the
 * request is wrong, so it is never sent again (one request each, over time
 * enough for several back-off tries), and the token stays.
 */
static void test_refusals_never_retried(void **state)
{
	const struct refusal r[] = {
		{ &fx.apns, "apns", "0ffbad", "BadPriority", 400 },
		{ &fx.apns, "apns", "0ff413", "PayloadTooLarge", 413 },
		{ &fx.fcm, "fcm", "toobig-", "INVALID_ARGUMENT", 400 },
	};
	enum { NR = sizeof(r) / sizeof(r[0]), N = 3 };
	char tok[NR][N][32];
	int64_t ids[NR][N];
	json_t *before = push_stats(), *after;

	(void)state;
	for (size_t i = 0; i < NR; i++) {
		for (int k = 0; k < N; k++) {
			snprintf(tok[i][k], sizeof(tok[i][k]), "%s%02d", r[i].prefix, k);
			ids[i][k] = device_new(r[i].provider, tok[i][k], "reject");
			send_to(ids[i][k], 1);
		}
	}
	for (size_t i = 0; i < NR; i++)
		for (int k = 0; k < N; k++)
			wait_status(r[i].m, tok[i][k], r[i].status, 1, 10000);
	/* A retry would come within a simulated second, eight within 255. */
	sleep_ms(SIM_MS(300));
	after = push_stats();
	for (size_t i = 0; i < NR; i++) {
		for (int k = 0; k < N; k++) {
			assert_requests(r[i].m, tok[i][k], 1);
			assert_true(has_token(ids[i][k]));
			wait_last_push(ids[i][k], "rejected", r[i].status, r[i].reason);
		}
		assert_int_equal(reason_count(after, "reject", r[i].provider, r[i].reason), N);
	}
	assert_int_equal(prov_stat(after, "reject", "apns", "retries"), 0);
	assert_int_equal(prov_stat(after, "reject", "fcm", "retries"), 0);
	assert_int_equal(prov_stat(after, "reject", "apns", "tokens_removed"), 0);
	assert_int_equal(prov_stat(after, "reject", "fcm", "tokens_removed"), 0);
	assert_int_equal(stat_of(after, "wakes_gave_up"), stat_of(before, "wakes_gave_up"));
	json_decref(before);
	json_decref(after);
}

/* The highest connection number in @m's log. */
static long connections_used(const struct th_mock *m)
{
	json_t *all = th_mock_log(m), *l;
	long maxconn = 0;
	size_t i;

	json_array_foreach(all, i, l)
	{
		long c = (long)json_integer_value(json_object_get(l, "conn"));

		if (c > maxconn)
			maxconn = c;
	}
	json_decref(all);
	return maxconn;
}

enum { GOAWAY_APNS = 120, GOAWAY_FCM = 60, GOAWAY_AFTER = 7 };

/*
 * A burst of wakes for many devices while both providers close every
 * connection with GOAWAY after its 7th request: every device is woken
 * exactly once (nothing lost, nothing answered twice), over many
 * connections.
 */
static void test_goaway_burst_each_woken_once(void **state)
{
	static char atok[GOAWAY_APNS][32], ftok[GOAWAY_FCM][32];
	int64_t aid[GOAWAY_APNS], fid[GOAWAY_FCM];
	json_t *after;

	(void)state;
	for (int k = 0; k < GOAWAY_APNS; k++) {
		snprintf(atok[k], sizeof(atok[k]), "cccc%04d", k);
		aid[k] = device_new("apns", atok[k], "goaway");
	}
	for (int k = 0; k < GOAWAY_FCM; k++) {
		snprintf(ftok[k], sizeof(ftok[k]), "fcm-goaway-%04d", k);
		fid[k] = device_new("fcm", ftok[k], "goaway");
	}
	for (int k = 0; k < GOAWAY_APNS; k++) {
		send_to(aid[k], 1);
		if (k < GOAWAY_FCM)
			send_to(fid[k], 1);
	}
	for (int k = 0; k < GOAWAY_APNS; k++)
		wait_status(&fx.apns_goaway, atok[k], 200, 1, 30000);
	for (int k = 0; k < GOAWAY_FCM; k++)
		wait_status(&fx.fcm_goaway, ftok[k], 200, 1, 30000);
	sleep_ms(SIM_MS(10 * 30));
	for (int k = 0; k < GOAWAY_APNS; k++)
		assert_requests(&fx.apns_goaway, atok[k], 1);
	for (int k = 0; k < GOAWAY_FCM; k++)
		assert_requests(&fx.fcm_goaway, ftok[k], 1);
	/* GOAWAY came again and again (about every 7 requests: those begun
	 * before it are answered too). */
	assert_true(connections_used(&fx.apns_goaway) >= 4);
	assert_true(connections_used(&fx.fcm_goaway) >= 3);
	after = push_stats();
	assert_int_equal(prov_stat(after, "goaway", "apns", "sent"), GOAWAY_APNS);
	assert_int_equal(prov_stat(after, "goaway", "apns", "ok"), GOAWAY_APNS);
	assert_int_equal(prov_stat(after, "goaway", "fcm", "sent"), GOAWAY_FCM);
	assert_int_equal(prov_stat(after, "goaway", "fcm", "ok"), GOAWAY_FCM);
	assert_int_equal(prov_stat(after, "goaway", "apns", "tokens_removed"), 0);
	assert_int_equal(prov_stat(after, "goaway", "fcm", "tokens_removed"), 0);
	json_decref(after);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outage_one_wake_per_device),
		cmocka_unit_test(test_retry_after_honoured),
		cmocka_unit_test(test_transient_bursts_keep_tokens),
		cmocka_unit_test(test_refusals_never_retried),
		cmocka_unit_test(test_goaway_burst_each_woken_once),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
