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
#include "common/banned.h"

#define KEY_ID "ABC123DEFG"
#define TEAM_ID "TEAM123456"
#define TOPIC "com.example.app"
#define UNREG_TS "1700000000123"
#define SA_EMAIL "ferry@mock-project.iam.gserviceaccount.com"
#define PROJECT "mock-project"
#define ALERT "You have new messages"
#define N_MANY 200

struct mock {
	pid_t pid;
	int port;
	char *log;
	char *out;
	char base[64]; /* https://127.0.0.1:PORT */
};

struct fixture {
	char *cert, *key;
	EVP_PKEY *ec, *rsa, *rsa_other;
	struct mock apns, apns_goaway, fcm, fcm_expired, fcm_short;
	uv_loop_t loop;
	uv_timer_t tick;
	struct push_http *http;
	int64_t lag; /* the senders' clock runs this many seconds behind */
};

static struct fixture fx;

/* ---- keys, certificates, mocks (as test_mock_push.c) ------------------------ */

static void make_cert(char **cert, char **key)
{
	char cmd[1024];

	*cert = th_write_file("cert.pem", "");
	*key = th_write_file("key.pem", "");
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-days 1 -subj /CN=localhost "
		 "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
		 "-keyout '%s' -out '%s' 2>/dev/null",
		 *key, *cert);
	if (system(cmd) != 0)
		fail_msg("cannot make a test certificate with openssl");
}

/* @k as PEM: its public half, or its private key (PKCS#8). malloc'ed. */
static char *key_pem(EVP_PKEY *k, int private)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *text;
	long n;

	if (!b || (private ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
			   : PEM_write_bio_PUBKEY(b, k)) != 1)
		fail_msg("cannot write a key");
	n = BIO_get_mem_data(b, &data);
	text = strndup(data, (size_t)n);
	BIO_free(b);
	return text;
}

static char *write_public_key(EVP_PKEY *k, const char *name)
{
	char *text = key_pem(k, 0), *path = th_write_file(name, text);

	free(text);
	return path;
}

static const char *mock_dir(void)
{
	const char *d = getenv("FERRY_TEST_MOCK_DIR");

	return d ? d : "build/asan/tests/mock";
}

static void mock_start(struct mock *m, const char *prog, const char *const args[])
{
	const char *argv[40];
	char path[256];
	int n = 0;

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "%s/%s", mock_dir(), prog);
	m->log = th_write_file("mock.log", "");
	m->out = th_write_file("mock.out", "");
	argv[n++] = path;
	for (int i = 0; args[i] && n < 36; i++)
		argv[n++] = args[i];
	argv[n++] = "--log";
	argv[n++] = m->log;
	argv[n] = NULL;
	m->pid = th_spawn(argv, m->out);
	for (int i = 0; i < 1000 && !m->port; i++) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		char *out = th_read_file(m->out);
		const char *p = strstr(out, "listening ");

		if (p)
			m->port = (int)strtol(p + 10, NULL, 10);
		free(out);
		if (!m->port)
			nanosleep(&pause, NULL);
	}
	if (!m->port)
		fail_msg("%s did not start: %s", prog, th_read_file(m->out));
	snprintf(m->base, sizeof(m->base), "https://127.0.0.1:%d", m->port);
}

static void mock_stop(struct mock *m)
{
	int st;

	if (!m->pid)
		return;
	kill(m->pid, SIGTERM);
	st = th_wait(m->pid);
	if (st != 0)
		fail_msg("mock exited with %d after SIGTERM", st);
	unlink(m->log);
	unlink(m->out);
	free(m->log);
	free(m->out);
	m->pid = 0;
}

/* The log lines of @m, parsed (a JSON array; decref it). */
static json_t *mock_log_lines(const struct mock *m)
{
	char *text = th_read_file(m->log), *line = text;
	json_t *all = json_array();

	while (line && *line) {
		char *nl = strchr(line, '\n');
		json_t *j;

		if (nl)
			*nl = '\0';
		j = json_loads(line, 0, NULL);
		if (!j)
			fail_msg("log line is not JSON: %s", line);
		json_array_append_new(all, j);
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	return all;
}

/* The lines of @m's log whose @field is the string @value (a new array). */
static json_t *log_where(const struct mock *m, const char *field, const char *value)
{
	json_t *all = mock_log_lines(m), *out = json_array(), *line;
	size_t i;

	json_array_foreach(all, i, line)
	{
		const char *v = json_string_value(json_object_get(line, field));

		if (v && strcmp(v, value) == 0)
			json_array_append(out, line);
	}
	json_decref(all);
	return out;
}

static const char *str(json_t *line, const char *field)
{
	const char *v = json_string_value(json_object_get(line, field));

	if (!v)
		fail_msg("log field '%s' is not a string", field);
	return v;
}

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

static struct push_apns *apns_new(const struct mock *m)
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

	lines = log_where(&fx.apns, "token", "0123abcd");
	assert_int_equal(json_array_size(lines), 1);
	line = json_array_get(lines, 0);
	snprintf(exp_text, sizeof(exp_text), "%lld", (long long)exp);
	assert_string_equal(str(line, "topic"), TOPIC);
	assert_string_equal(str(line, "push_type"), "background");
	assert_string_equal(str(line, "priority"), "5");
	assert_string_equal(str(line, "collapse_id"), "wake-42");
	assert_string_equal(str(line, "expiration"), exp_text);
	assert_string_equal(str(line, "jwt_kid"), KEY_ID);
	assert_string_equal(str(line, "payload"), "{\"aps\":{\"content-available\":1}}");
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
	lines = log_where(&fx.apns, "token", "alert-1");
	line = json_array_get(lines, 0);
	assert_non_null(line);
	assert_string_equal(str(line, "push_type"), "alert");
	assert_string_equal(str(line, "priority"), "10");
	assert_string_equal(str(line, "expiration"), "0");
	assert_true(json_is_null(json_object_get(line, "collapse_id")));
	assert_string_equal(str(line, "payload"),
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
	all = mock_log_lines(&fx.apns);
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

	lines = log_where(&fx.apns, "token", "expire1-a");
	assert_int_equal(json_array_size(lines), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 0), "status")),
			 403);
	assert_string_equal(str(json_array_get(lines, 0), "reason"), "ExpiredProviderToken");
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
	all = mock_log_lines(&fx.apns_goaway);
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
		json_t *l = log_where(&fx.apns_goaway, "token", tokens[k]);

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
static void sa_load(struct push_service_account *sa, const struct mock *m, EVP_PKEY *k)
{
	char *pem = key_pem(k, 1), *text, *path, uri[128], err[256] = "";
	json_t *j;

	snprintf(uri, sizeof(uri), "%s/token", m->base);
	j = json_pack("{ss,ss,ss,ss,ss,ss}", "type", "service_account", "project_id", PROJECT,
		      "private_key_id", "k1", "private_key", pem, "client_email", SA_EMAIL,
		      "token_uri", uri);
	text = json_dumps(j, 0);
	path = th_write_file("sa.json", text);
	if (push_service_account_load(path, sa, err, sizeof(err)))
		fail_msg("push_service_account_load: %s", err);
	unlink(path);
	free(path);
	free(text);
	free(pem);
	json_decref(j);
}

static struct push_fcm *fcm_new(const struct mock *m, const struct push_service_account *sa)
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

static size_t count_path(const struct mock *m, const char *path)
{
	json_t *l = log_where(m, "path", path);
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
	sends = log_where(&fx.fcm, "path", "/v1/projects/" PROJECT "/messages:send");
	assert_true(json_array_size(sends) >= 3);
	{
		size_t n = json_array_size(sends);
		const char *t = str(json_array_get(sends, n - 1), "access_token");

		assert_string_equal(str(json_array_get(sends, n - 2), "access_token"), t);
		assert_string_equal(str(json_array_get(sends, n - 3), "access_token"), t);
		assert_string_equal(str(json_array_get(sends, n - 1), "token"), "reuse-c");
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
	sends = log_where(&fx.fcm_short, "path", "/v1/projects/" PROJECT "/messages:send");
	n = json_array_size(sends);
	assert_int_equal(n, 3);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(sends, 1), "status")),
			 401);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(sends, 2), "status")),
			 200);
	assert_string_equal(str(json_array_get(sends, 2), "token"), "short-2");
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
	make_cert(&fx.cert, &fx.key);
	fx.ec = EVP_EC_gen("P-256");
	fx.rsa = EVP_RSA_gen(2048);
	fx.rsa_other = EVP_RSA_gen(2048);
	if (!fx.ec || !fx.rsa || !fx.rsa_other)
		fail_msg("cannot generate keys");
	ec_pub = write_public_key(fx.ec, "authkey.pub");
	rsa_pub = write_public_key(fx.rsa, "sa.pub");
	mock_start(&fx.apns, "mock_apns",
		   (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
				     "--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id", TEAM_ID,
				     "--topic", TOPIC, "--unregistered-ts", UNREG_TS, NULL });
	mock_start(&fx.apns_goaway, "mock_apns",
		   (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
				     "--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id", TEAM_ID,
				     "--goaway-after", "5", NULL });
	mock_start(&fx.fcm, "mock_fcm",
		   (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
				     "--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
				     "--project-id", PROJECT, NULL });
	mock_start(&fx.fcm_expired, "mock_fcm",
		   (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
				     "--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
				     "--project-id", PROJECT, "--token-ttl", "0", NULL });
	mock_start(&fx.fcm_short, "mock_fcm",
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
	mock_stop(&fx.apns);
	mock_stop(&fx.apns_goaway);
	mock_stop(&fx.fcm);
	mock_stop(&fx.fcm_expired);
	mock_stop(&fx.fcm_short);
	EVP_PKEY_free(fx.ec);
	EVP_PKEY_free(fx.rsa);
	EVP_PKEY_free(fx.rsa_other);
	unlink(fx.cert);
	unlink(fx.key);
	free(fx.cert);
	free(fx.key);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apns_ok),
		cmocka_unit_test(test_apns_alert),
		cmocka_unit_test(test_apns_many),
		cmocka_unit_test(test_apns_token_errors),
		cmocka_unit_test(test_apns_unavailable),
		cmocka_unit_test(test_apns_expired_provider_token),
		cmocka_unit_test(test_apns_goaway),
		cmocka_unit_test(test_apns_free_pending),
		cmocka_unit_test(test_fcm_ok_and_reuse),
		cmocka_unit_test(test_fcm_expired_tokens),
		cmocka_unit_test(test_fcm_refresh_after_401),
		cmocka_unit_test(test_fcm_token_errors),
		cmocka_unit_test(test_fcm_bad_key),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests_name("push_senders", tests, setup, teardown);
}
