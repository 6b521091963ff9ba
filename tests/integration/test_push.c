/*
 * test_push.c - wake-up pushes end to end: ferryd against a throwaway
 * PostgreSQL and the mock providers (tests/mock/README.md) over HTTP/2 and
 * TLS.
 *
 * One ferryd serves every test, with four APNs apps and one FCM app:
 *   ""      (default) APNs on `apns`, FCM on `fcm`
 *   old     APNs on `apns_old`, whose 410s date from 2023: a token
 *           registered today must survive them
 *   goaway  APNs on `apns_goaway`, which sends GOAWAY after 5 streams
 *   broken  APNs on `apns` with a key id the mock does not know
 *   certs   APNs on `apns_certs` with a client certificate instead of a key
 * Devices are registered through the admin API and never connect unless a
 * test says so; envelopes reach them through POST /v1/messages, so they are
 * stored and the device is woken. Each test uses tokens of its own, and
 * reads what the mocks saw from their request logs.
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

#include "gateway/proto.h"
#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "push-test-admin-token"
#define KEY_ID TH_KEY_ID
#define TEAM_ID TH_TEAM_ID
#define TOPIC TH_TOPIC
#define MIN_INTERVAL_S 2
#define ACK_TIMEOUT_MS 200

struct fixture {
	char *conninfo;
	struct th_push_keys k;
	char *sa;
	char *client_cert, *client_key; /* app "certs": certificate-based APNs */
	struct th_mock apns, apns_old, apns_goaway, apns_certs, fcm;
	struct th_ferryd d;
	int port;
	char *config;
};

static struct fixture fx;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

/* ---- set-up ---- */

/* The config: @broken_kid is the key id of app "broken". */
static char *make_config(const char *broken_kid)
{
	char extra[4096], *cfg;

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\nack_timeout = %d\n\n"
		 "[push]\nca_file = %s\nmin_interval = %d\nmax_attempts = 4\n\n"
		 "[push.apns]\nendpoint = %s\nsandbox_endpoint = %s\nkey_file = %s\n"
		 "key_id = " KEY_ID "\nteam_id = " TEAM_ID "\ntopic = " TOPIC "\n\n"
		 "[push.fcm]\nendpoint = %s\nservice_account = %s\n\n"
		 "[push.apns.old]\nendpoint = %s\nkey_file = %s\nkey_id = " KEY_ID "\n"
		 "team_id = " TEAM_ID "\ntopic = " TOPIC "\n\n"
		 "[push.apns.goaway]\nendpoint = %s\nkey_file = %s\nkey_id = " KEY_ID "\n"
		 "team_id = " TEAM_ID "\ntopic = " TOPIC "\n\n"
		 "[push.apns.broken]\nendpoint = %s\nkey_file = %s\nkey_id = %s\n"
		 "team_id = " TEAM_ID "\ntopic = " TOPIC "\n\n"
		 "[push.apns.certs]\nendpoint = %s\ncert_file = %s\ncert_key = %s\n"
		 "topic = " TOPIC "\n",
		 fx.port, ACK_TIMEOUT_MS, fx.k.cert, MIN_INTERVAL_S, fx.apns.base, fx.apns.base,
		 fx.k.p8, fx.fcm.base, fx.sa, fx.apns_old.base, fx.k.p8, fx.apns_goaway.base,
		 fx.k.p8, fx.apns.base, fx.k.p8, broken_kid, fx.apns_certs.base, fx.client_cert,
		 fx.client_key);
	cfg = th_ferryd_config_ex(fx.conninfo, fx.d.admin_port, TOKEN, extra);
	return cfg;
}

static int setup(void **state)
{
	char *path;
	int admin = th_free_port();

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	th_push_keys_make(&fx.k);
	th_mock_cert(&fx.client_cert, &fx.client_key);
	th_mock_apns_start(&fx.apns, &fx.k, (const char *[]){ "--topic", TOPIC, NULL });
	th_mock_apns_start(&fx.apns_old, &fx.k,
			   (const char *[]){ "--unregistered-ts", "1700000000123", NULL });
	th_mock_apns_start(&fx.apns_goaway, &fx.k, (const char *[]){ "--goaway-after", "5", NULL });
	th_mock_apns_start(
		&fx.apns_certs, &fx.k,
		(const char *[]){ "--topic", TOPIC, "--client-ca", fx.client_cert, NULL });
	th_mock_fcm_start(&fx.fcm, &fx.k, NULL);
	fx.sa = th_service_account_file(fx.k.rsa, &fx.fcm, TH_PROJECT, TH_SA_EMAIL);
	fx.conninfo = th_db_new("push");
	fx.port = th_free_port();
	fx.d.admin_port = admin;
	fx.config = make_config("ZZZZZZZZZZ");
	path = th_write_file("push.ini", fx.config);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, fx.config, admin);
	th_ferryd_wait_ready(&fx.d, 10000);
	unlink(path);
	free(path);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	(void)state;
	th_mock_stop(&fx.apns);
	th_mock_stop(&fx.apns_old);
	th_mock_stop(&fx.apns_goaway);
	th_mock_stop(&fx.apns_certs);
	th_mock_stop(&fx.fcm);
	th_push_keys_release(&fx.k);
	unlink(fx.client_cert);
	unlink(fx.client_key);
	unlink(fx.sa);
	free(fx.client_cert);
	free(fx.client_key);
	free(fx.sa);
	free(fx.config);
	free(fx.conninfo);
	curl_global_cleanup();
	return status == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static json_t *request_json(const char *method, const char *path, const char *body, long want)
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

/* A device of @user, with push token @token of @provider in @app (NULL:
 * the default); @token NULL: none. Its secret goes to @secret if given. */
static int64_t device_new(const char *user, const char *provider, const char *token,
			  const char *app, char *secret)
{
	char sec[64], path[64], body[512];
	int64_t id;

	th_device_create(&fx.d, TOKEN, user, &id, secret ? secret : sec);
	if (!token)
		return id;
	snprintf(path, sizeof(path), "/v1/devices/%lld/push", (long long)id);
	snprintf(body, sizeof(body), "{\"provider\":\"%s\",\"token\":\"%s\"%s%s%s}", provider,
		 token, app ? ",\"app\":\"" : "", app ? app : "", app ? "\"" : "");
	json_decref(request_json("PUT", path, body, 200));
	return id;
}

/* POST /v1/messages to @device, @n times; each is stored (the device is away). */
static void send_to(int64_t device, int n)
{
	char body[128];

	for (int i = 0; i < n; i++) {
		json_t *j;

		snprintf(body, sizeof(body), "{\"to_device\":%lld,\"payload_b64\":\"aGk=\"}",
			 (long long)device);
		j = request_json("POST", "/v1/messages", body, 200);
		assert_string_equal(json_string_value(json_object_get(j, "status")), "stored");
		json_decref(j);
	}
}

/* Requests @m got for device token @token. */
static size_t requests_for(const struct th_mock *m, const char *token)
{
	json_t *lines = th_mock_log_where(m, "token", token);
	size_t n = json_array_size(lines);

	json_decref(lines);
	return n;
}

/* Wait up to @ms for @m to have seen @n requests for @token; returns the
 * count then. */
static size_t wait_requests(const struct th_mock *m, const char *token, size_t n, long ms)
{
	size_t got = 0;

	for (long t = 0; t <= ms; t += 50) {
		got = requests_for(m, token);
		if (got >= n)
			break;
		sleep_ms(50);
	}
	return got;
}

/* The status of @token's request number @i (0: first). */
static long status_of(const struct th_mock *m, const char *token, size_t i)
{
	json_t *lines = th_mock_log_where(m, "token", token);
	long st = (long)json_integer_value(json_object_get(json_array_get(lines, i), "status"));

	json_decref(lines);
	return st;
}

/* 1 if device @id still has a push token. */
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

static void wait_token_gone(int64_t id)
{
	for (int i = 0; i < 200 && has_token(id); i++)
		sleep_ms(50);
	assert_false(has_token(id));
}

/* Device @id's last_push once its outcome is @outcome (written about once a
 * second), waiting up to 10 s; the caller releases it. */
static json_t *wait_last_push(int64_t id, const char *outcome)
{
	char path[64];
	json_t *j = NULL, *lp;

	snprintf(path, sizeof(path), "/v1/devices/%lld", (long long)id);
	for (int i = 0; i < 200; i++) {
		j = request_json("GET", path, NULL, 200);
		lp = json_object_get(j, "last_push");
		if (json_is_object(lp) &&
		    strcmp(json_string_value(json_object_get(lp, "outcome")), outcome) == 0) {
			json_incref(lp);
			json_decref(j);
			assert_true(json_is_string(json_object_get(lp, "at")));
			return lp;
		}
		json_decref(j);
		sleep_ms(50);
	}
	fail_msg("device %lld: no last_push with outcome %s", (long long)id, outcome);
	return NULL;
}

static void assert_last_push(int64_t id, const char *outcome, const char *provider, long status,
			     const char *reason)
{
	json_t *lp = wait_last_push(id, outcome);

	assert_string_equal(json_string_value(json_object_get(lp, "provider")), provider);
	assert_int_equal(json_integer_value(json_object_get(lp, "status")), status);
	if (reason)
		assert_string_equal(json_string_value(json_object_get(lp, "reason")), reason);
	else
		assert_true(json_is_null(json_object_get(lp, "reason")));
	json_decref(lp);
}

/* ---- tests ---- */

/* A burst of envelopes for an away device is one push, as Apple wants it. */
static void test_burst_is_one_push(void **state)
{
	const char *tok = "aaaa0001";
	int64_t id = device_new("burst", "apns", tok, NULL, NULL);
	json_t *lines, *l;

	(void)state;
	send_to(id, 30);
	assert_int_equal(wait_requests(&fx.apns, tok, 1, 10000), 1);
	sleep_ms(MIN_INTERVAL_S * 1000 / 2);
	/* Still one: the rest of the burst waits for the interval. */
	assert_int_equal(requests_for(&fx.apns, tok), 1);
	lines = th_mock_log_where(&fx.apns, "token", tok);
	l = json_array_get(lines, 0);
	assert_int_equal(json_integer_value(json_object_get(l, "status")), 200);
	assert_string_equal(th_json_str(l, "topic"), TOPIC);
	assert_string_equal(th_json_str(l, "push_type"), "background");
	assert_string_equal(th_json_str(l, "priority"), "5");
	assert_string_equal(th_json_str(l, "collapse_id"), "ferry-wake");
	assert_string_equal(th_json_str(l, "jwt_kid"), KEY_ID);
	assert_string_equal(th_json_str(l, "payload"), "{\"aps\":{\"content-available\":1}}");
	json_decref(lines);
	/* Envelopes arrived during the interval: one more push after it, not 29. */
	assert_int_equal(wait_requests(&fx.apns, tok, 2, MIN_INTERVAL_S * 1000 + 3000), 2);
	sleep_ms(MIN_INTERVAL_S * 1000 + 500);
	assert_int_equal(requests_for(&fx.apns, tok), 2);
}

/* A live device is not woken; one that stops acknowledging is. */
static void test_live_and_suspended(void **state)
{
	const char *tok = "aaaa0002";
	char secret[64], ssecret[64];
	int64_t id = device_new("susp", "apns", tok, NULL, secret);
	int64_t sid = device_new("suspsender", NULL, NULL, NULL, ssecret);
	struct rawdev *dev = rawdev_new(), *snd = rawdev_new();
	const struct proto_frame *f;

	(void)state;
	rawdev_login(dev, fx.port, id, secret);
	rawdev_login(snd, fx.port, sid, ssecret);
	/* Acknowledged at once: delivered live, nobody is woken. */
	rawdev_send_text(snd, 1, "susp", "one");
	f = rawdev_expect(dev, PROTO_DELIVER, 5000);
	rawdev_ack(dev, f->u.deliver.server_id);
	assert_non_null(rawdev_expect(snd, PROTO_ACK, 5000));
	sleep_ms(300);
	assert_int_equal(requests_for(&fx.apns, tok), 0);
	/* Not acknowledged (an app suspended in the background): stored after
	 * the ack timeout, and the device is woken although connected. */
	rawdev_send_text(snd, 2, "susp", "two");
	assert_non_null(rawdev_expect(dev, PROTO_DELIVER, 5000));
	assert_int_equal(wait_requests(&fx.apns, tok, 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns, tok, 0), 200);
	rawdev_free(snd);
	rawdev_free(dev);
}

/* Receipts never wake: one not acknowledged by a connected device (stored
 * after the ack timeout), one stored for a device that is away. */
static void test_receipts_never_wake(void **state)
{
	const char *tok = "aaaa00f1";
	char secret[64], rsecret[64];
	int64_t id = device_new("rcptsender", "apns", tok, NULL, secret);
	int64_t rid = device_new("rcptreader", NULL, NULL, NULL, rsecret);
	struct rawdev *dev = rawdev_new(), *rdr = rawdev_new();
	struct proto_frame f = { .type = PROTO_RECEIPT };
	const struct proto_frame *d;
	uint64_t cid = 1;

	(void)state;
	rawdev_login(dev, fx.port, id, secret);
	rawdev_login(rdr, fx.port, rid, rsecret);
	rawdev_send_text(dev, cid, "rcptreader", "one");
	d = rawdev_expect(rdr, PROTO_DELIVER, 5000);
	rawdev_ack(rdr, d->u.deliver.server_id);
	assert_int_equal(rawdev_expect(dev, PROTO_ACK, 5000)->u.ack.client_id, cid);
	/* The delivered receipt comes and is not acknowledged: stored after
	 * the ack timeout, like a suspended app's envelope, but no wake. */
	assert_int_equal(rawdev_expect(dev, PROTO_DELIVER_RECEIPT, 5000)->u.receipt.kind,
			 PROTO_RECEIPT_DELIVERED);
	sleep_ms(ACK_TIMEOUT_MS * 3);
	rawdev_close(dev);
	/* A read receipt for the device that is away: stored, no wake. */
	f.u.receipt.id = 10;
	f.u.receipt.kind = PROTO_RECEIPT_READ;
	f.u.receipt.peer_user.p = (const uint8_t *)"rcptsender";
	f.u.receipt.peer_user.len = strlen("rcptsender");
	f.u.receipt.device = (uint64_t)id;
	f.u.receipt.count = 1;
	f.u.receipt.ids[0] = cid;
	rawdev_send(rdr, &f);
	d = rawdev_expect(rdr, PROTO_ACK, 5000);
	assert_int_equal(d->u.ack.client_id, 10);
	assert_int_equal(d->u.ack.status, PROTO_ACK_STORED);
	sleep_ms(1500);
	assert_int_equal(requests_for(&fx.apns, tok), 0);
	/* Both wait for the device. */
	assert_int_equal(rawdev_login_pending(dev, fx.port, id, secret), 2);
	rawdev_free(dev);
	rawdev_free(rdr);
}

/* APNs 410 with a timestamp after the registration: the token goes. */
static void test_unregistered_removes(void **state)
{
	int64_t id = device_new("unreg", "apns", "0ff4100001", NULL, NULL);

	(void)state;
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns, "0ff4100001", 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns, "0ff4100001", 0), 410);
	wait_token_gone(id);
	/* The device says why its token went. */
	assert_last_push(id, "token_invalid", "apns", 410, "Unregistered");
}

/* A 410 dated before the token was registered: the token stays. */
static void test_fresh_registration_wins(void **state)
{
	int64_t id = device_new("fresh", "apns", "0ff4100002", "old", NULL);
	char needle[96];

	(void)state;
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns_old, "0ff4100002", 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns_old, "0ff4100002", 0), 410);
	sleep_ms(500);
	assert_true(has_token(id));
	snprintf(needle, sizeof(needle), "event=push_token_removed device=%lld ", (long long)id);
	assert_int_equal(th_log_count(&fx.d, needle), 0);
}

/* BadDeviceToken and FCM UNREGISTERED remove; a 503 never does. */
static void test_token_errors(void **state)
{
	int64_t bad = device_new("bad", "apns", "0ff4000001", NULL, NULL);
	int64_t unreg = device_new("fcmunreg", "fcm", "unregistered-fcm-1", NULL, NULL);
	int64_t busy = device_new("busy", "apns", "0ff50390001", NULL, NULL);

	(void)state;
	send_to(bad, 1);
	send_to(unreg, 1);
	send_to(busy, 1);
	wait_token_gone(bad);
	wait_token_gone(unreg);
	assert_int_equal(wait_requests(&fx.apns, "0ff50390001", 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns, "0ff50390001", 0), 503);
	assert_true(has_token(busy));
	assert_last_push(bad, "token_invalid", "apns", 400, "BadDeviceToken");
	json_decref(wait_last_push(unreg, "token_invalid"));
	assert_last_push(busy, "failed", "apns", 503, "ServiceUnavailable");
}

/* 503 twice, then 200: retried with back-off until it goes through. */
static void test_unavailable_retried(void **state)
{
	const char *tok = "0ff50320002";
	int64_t id = device_new("retry", "apns", tok, NULL, NULL);

	(void)state;
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns, tok, 3, 15000), 3);
	assert_int_equal(status_of(&fx.apns, tok, 0), 503);
	assert_int_equal(status_of(&fx.apns, tok, 1), 503);
	assert_int_equal(status_of(&fx.apns, tok, 2), 200);
	assert_true(has_token(id));
	assert_last_push(id, "ok", "apns", 200, NULL);
}

/* ExpiredProviderToken: a new JWT, and the push goes. */
static void test_expired_provider_token(void **state)
{
	const char *tok = "0ff40310001";
	int64_t id = device_new("expired", "apns", tok, NULL, NULL);

	(void)state;
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns, tok, 2, 10000), 2);
	assert_int_equal(status_of(&fx.apns, tok, 0), 403);
	assert_int_equal(status_of(&fx.apns, tok, 1), 200);
}

/* GOAWAY after every 5 streams: 20 wakes at once, none lost. */
static void test_goaway_loses_nothing(void **state)
{
	enum { N = 20 };
	int64_t ids[N];
	char tok[N][32];
	json_t *all, *l;
	size_t i;
	long maxconn = 0;

	(void)state;
	for (int k = 0; k < N; k++) {
		snprintf(tok[k], sizeof(tok[k]), "cccc%04d", k);
		ids[k] = device_new("goaway", "apns", tok[k], "goaway", NULL);
	}
	for (int k = 0; k < N; k++)
		send_to(ids[k], 1);
	for (int k = 0; k < N; k++) {
		assert_true(wait_requests(&fx.apns_goaway, tok[k], 1, 15000) >= 1);
		json_t *lines = th_mock_log_where(&fx.apns_goaway, "token", tok[k]);
		int ok = 0;

		json_array_foreach(lines, i, l)
		{
			if (json_integer_value(json_object_get(l, "status")) == 200)
				ok = 1;
		}
		json_decref(lines);
		if (!ok)
			fail_msg("no 200 for %s", tok[k]);
	}
	all = th_mock_log(&fx.apns_goaway);
	json_array_foreach(all, i, l)
	{
		long c = (long)json_integer_value(json_object_get(l, "conn"));

		if (c > maxconn)
			maxconn = c;
	}
	json_decref(all);
	assert_true(maxconn >= 2);
}

/* FCM: one OAuth exchange for several pushes; QUOTA_EXCEEDED waits. */
static void test_fcm(void **state)
{
	int64_t a = device_new("fcm1", "fcm", "fcm-ok-0001", NULL, NULL);
	int64_t b = device_new("fcm2", "fcm", "fcm-ok-0002", NULL, NULL);
	int64_t q = device_new("fcmq", "fcm", "quota1-0001", NULL, NULL);
	json_t *lines, *body;
	size_t tokens;

	(void)state;
	send_to(a, 1);
	assert_int_equal(wait_requests(&fx.fcm, "fcm-ok-0001", 1, 10000), 1);
	send_to(b, 1);
	assert_int_equal(wait_requests(&fx.fcm, "fcm-ok-0002", 1, 10000), 1);
	assert_int_equal(status_of(&fx.fcm, "fcm-ok-0002", 0), 200);
	lines = th_mock_log_where(&fx.fcm, "token", "fcm-ok-0001");
	body = json_loads(th_json_str(json_array_get(lines, 0), "body"), 0, NULL);
	assert_non_null(body);
	assert_string_equal(
		json_string_value(json_object_get(
			json_object_get(json_object_get(body, "message"), "data"), "ferry")),
		"wake");
	json_decref(body);
	json_decref(lines);
	lines = th_mock_log_where(&fx.fcm, "path", "/token");
	tokens = json_array_size(lines);
	json_decref(lines);
	assert_int_equal(tokens, 1);

	/* 429: FCM wants at least a minute before the next try. */
	send_to(q, 1);
	assert_int_equal(wait_requests(&fx.fcm, "quota1-0001", 1, 10000), 1);
	assert_int_equal(status_of(&fx.fcm, "quota1-0001", 0), 429);
	sleep_ms(2500);
	assert_int_equal(requests_for(&fx.fcm, "quota1-0001"), 1);
	assert_true(has_token(q));
}

/* An app with a client certificate instead of a key: no provider token. */
static void test_certificate_app(void **state)
{
	const char *tok = "eeee0001";
	int64_t id = device_new("certs", "apns", tok, "certs", NULL);
	json_t *lines;

	(void)state;
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns_certs, tok, 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns_certs, tok, 0), 200);
	lines = th_mock_log_where(&fx.apns_certs, "token", tok);
	assert_true(json_is_null(json_object_get(json_array_get(lines, 0), "jwt_kid")));
	json_decref(lines);
}

/* No token, no credentials: nothing is sent, and it is counted. */
static void test_nothing_to_send(void **state)
{
	int64_t none = device_new("notoken", NULL, NULL, NULL, NULL);
	int64_t nocred = device_new("nocred", "fcm", "fcm-nocred-0001", "old", NULL);

	(void)state;
	send_to(none, 1);
	send_to(nocred, 1);
	sleep_ms(500);
	assert_int_equal(requests_for(&fx.fcm, "fcm-nocred-0001"), 0);
	assert_true(has_token(nocred));
}

/*
 * One app with a wrong key id fails (InvalidProviderToken, logged) while
 * the others push; SIGHUP with the right key id fixes it, and a device's
 * connection stays up through the reload.
 */
static void test_broken_app_and_reload(void **state)
{
	const char *tok = "dddd0001";
	int64_t id = device_new("broken", "apns", tok, "broken", NULL);
	int64_t ok = device_new("fine", "apns", "dddd0002", NULL, NULL);
	char secret[64];
	int64_t live = device_new("stays", NULL, NULL, NULL, secret);
	struct rawdev *dev = rawdev_new();
	char *path;

	(void)state;
	rawdev_login(dev, fx.port, live, secret);
	send_to(id, 1);
	send_to(ok, 1);
	assert_int_equal(wait_requests(&fx.apns, tok, 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns, tok, 0), 403);
	assert_int_equal(wait_requests(&fx.apns, "dddd0002", 1, 10000), 1);
	assert_int_equal(status_of(&fx.apns, "dddd0002", 0), 200);
	th_log_wait(&fx.d, "event=push_config_error provider=apns app=\"broken\"", 1);
	assert_true(has_token(id));

	/* Fix the key id and reload. */
	free(fx.config);
	fx.config = make_config(KEY_ID);
	path = fx.d.config_path;
	{
		FILE *f = fopen(path, "w");

		assert_non_null(f);
		fputs(fx.config, f);
		fclose(f);
	}
	kill(fx.d.pid, SIGHUP);
	th_log_wait(&fx.d, "event=push_reloaded", 1);
	sleep_ms(MIN_INTERVAL_S * 1000 + 200);
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns, tok, 2, 10000), 2);
	assert_int_equal(status_of(&fx.apns, tok, 1), 200);
	/* The device connection survived the reload. */
	rawdev_send_text(dev, 1, "stays", "ping");
	assert_non_null(rawdev_expect(dev, PROTO_ACK, 5000));
	rawdev_free(dev);
}

/* The counters of GET /v1/stats (a new reference). */
static json_t *push_stats(void)
{
	json_t *j = request_json("GET", "/v1/stats", NULL, 200);
	json_t *push = json_incref(json_object_get(j, "push"));

	json_decref(j);
	assert_true(json_is_object(push));
	return push;
}

static json_int_t stat_of(json_t *push, const char *key)
{
	json_t *v = json_object_get(push, key);

	if (!json_is_integer(v))
		fail_msg("stats: '%s' is not an integer", key);
	return json_integer_value(v);
}

/* The stats of @app's pushes to @provider. */
static json_t *provider_stats(json_t *push, const char *app, const char *provider)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(push, "providers"), i, p)
	{
		if (strcmp(th_json_str(p, "app"), app) == 0 &&
		    strcmp(th_json_str(p, "provider"), provider) == 0)
			return p;
	}
	fail_msg("stats: no provider %s for app '%s'", provider, app);
	return NULL;
}

/* A token that keeps failing is tried [push] max_attempts (4) times. */
static void test_gives_up(void **state)
{
	const char *tok = "0ff50390002";
	int64_t id = device_new("givesup", "apns", tok, NULL, NULL);
	json_int_t before, after = 0;
	json_t *push = push_stats();

	(void)state;
	before = stat_of(push, "wakes_gave_up");
	json_decref(push);
	send_to(id, 1);
	assert_int_equal(wait_requests(&fx.apns, tok, 4, 30000), 4);
	for (int i = 0; i < 100 && after <= before; i++) {
		push = push_stats();
		after = stat_of(push, "wakes_gave_up");
		json_decref(push);
		sleep_ms(50);
	}
	assert_int_equal(after, before + 1);
	assert_true(has_token(id));
	/* No fifth try while the device stays in its cool-down. */
	sleep_ms(1000);
	assert_int_equal(requests_for(&fx.apns, tok), 4);
}

/* What the tests above did shows in the counters. */
static void test_stats(void **state)
{
	json_t *push = push_stats(), *p, *reasons;

	(void)state;
	assert_true(stat_of(push, "wakes") >= 40);
	assert_true(stat_of(push, "wakes_coalesced") >= 29); /* the burst */
	assert_true(stat_of(push, "wakes_no_token") >= 1);
	assert_true(stat_of(push, "wakes_no_credentials") >= 1);
	assert_true(stat_of(push, "lookups") >= 1);
	assert_int_equal(stat_of(push, "lookup_failures"), 0);
	p = provider_stats(push, "", "apns");
	assert_true(stat_of(p, "ok") >= 5);
	assert_true(stat_of(p, "tokens_removed") >= 2); /* 410, BadDeviceToken */
	reasons = json_object_get(p, "failed_by_reason");
	assert_true(json_integer_value(json_object_get(reasons, "Unregistered")) >= 1);
	assert_true(json_integer_value(json_object_get(reasons, "BadDeviceToken")) >= 1);
	assert_true(json_integer_value(json_object_get(reasons, "ServiceUnavailable")) >= 2);
	p = provider_stats(push, "", "fcm");
	assert_true(stat_of(p, "tokens_removed") >= 1); /* UNREGISTERED */
	reasons = json_object_get(p, "failed_by_reason");
	assert_true(json_integer_value(json_object_get(reasons, "QUOTA_EXCEEDED")) >= 1);
	p = provider_stats(push, "broken", "apns");
	reasons = json_object_get(p, "failed_by_reason");
	assert_true(json_integer_value(json_object_get(reasons, "InvalidProviderToken")) >= 1);
	p = provider_stats(push, "old", "apns");
	assert_int_equal(stat_of(p, "tokens_removed"), 0);
	json_decref(push);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_is_one_push),
		cmocka_unit_test(test_live_and_suspended),
		cmocka_unit_test(test_receipts_never_wake),
		cmocka_unit_test(test_unregistered_removes),
		cmocka_unit_test(test_fresh_registration_wins),
		cmocka_unit_test(test_token_errors),
		cmocka_unit_test(test_unavailable_retried),
		cmocka_unit_test(test_expired_provider_token),
		cmocka_unit_test(test_goaway_loses_nothing),
		cmocka_unit_test(test_fcm),
		cmocka_unit_test(test_certificate_app),
		cmocka_unit_test(test_nothing_to_send),
		cmocka_unit_test(test_broken_app_and_reload),
		cmocka_unit_test(test_gives_up),
		cmocka_unit_test(test_stats),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
