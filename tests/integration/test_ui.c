/*
 * test_ui.c - GET /ui, the live dashboard, against a running ferryd: its
 * headers over plain HTTP, then the page itself in a headless Chromium
 * driven through chromedriver (tests/integration/webdriver.h).
 *
 * In the browser: the page asks for the admin token with its form, keeps
 * it in sessionStorage, shows non-zero figures once devices send (live
 * deliveries, envelopes stored for a device that is away, a drain), asks
 * no more after a reload, and asks again, saying why, when the token is
 * refused. The figures are read by element id (each has its raw value in
 * data-value), never by matching the page's text.
 *
 * Chromium and chromedriver are required: without them the browser tests
 * fail (`make test` installs them through scripts/deps.sh test). Each
 * browser test has a browser of its own, quit in its teardown; the group
 * teardown ends chromedriver and whatever browser it still has, whatever
 * happened.
 *
 * The screenshot of the dashboard goes to $FERRY_TEST_OUTDIR, or else next
 * to this test's binary (build/asan/tests/integration/test_ui-dashboard.png,
 * outside what git tracks); its path is printed.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
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
#include "tests/integration/rawdev.h"
#include "tests/integration/webdriver.h"
#include "common/banned.h"

#define TOKEN "ui-test-token-5c1e"
#define TOKEN_KEY "ferry.admin.token" /* the page's sessionStorage key */
#define WAIT_MS 10000		      /* a device's frame */
#define PAGE_WAIT_MS 20000	      /* the page polls every second */
#define POLL_MS 100		      /* between two looks at the page */
#define SHOT_NAME "test_ui-dashboard.png"

static struct {
	char *conninfo;
	struct th_ferryd d;
	int port; /* the device listener */
	int64_t alice, bob, carol;
	char alice_s[64], bob_s[64], carol_s[64];
	struct wd_driver drv;
	char outdir[PATH_MAX]; /* where the screenshot goes */
} fx;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void url_of(const char *path, char *url, size_t len)
{
	int n = snprintf(url, len, "%s%s", fx.d.admin_url, path);

	assert_true(n > 0 && (size_t)n < len);
}

/* ---- the group: one ferryd with a device listener, one chromedriver ---- */

static int group_setup(void **state)
{
	char extra[256], *cfg, *path, *out;
	int admin = th_free_port(), status;

	(void)state;
	fx.conninfo = th_db_new("ui");
	fx.port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\n\n[receipts]\ndelivered = off\n",
		 fx.port);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("ui.ini", cfg);
	status = th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, &out);
	unlink(path);
	free(path);
	free(out);
	if (status != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, admin);
	th_ferryd_wait_ready(&fx.d, 10000);
	free(cfg);
	th_device_create(&fx.d, TOKEN, "alice", &fx.alice, fx.alice_s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.bob, fx.bob_s);
	th_device_create(&fx.d, TOKEN, "carol", &fx.carol, fx.carol_s);
	/* Without a browser the browser tests fail in their own setup. */
	if (!wd_missing())
		wd_driver_start(&fx.drv);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	wd_driver_stop(&fx.drv);
	free(fx.drv.log_path);
	free(fx.conninfo);
	return th_ferryd_stop(&fx.d, SIGTERM) == 0 ? 0 : -1;
}

/* A browser of its own for each browser test, in a fresh profile. */
static int browser_setup(void **state)
{
	static struct wd_session s;
	const char *tmp = getenv("FERRY_TEST_TMPDIR");
	char profile[PATH_MAX];
	const char *missing = wd_missing();

	if (missing || fx.drv.pid <= 0) {
		fprintf(stderr, "test_ui: no browser: %s\n",
			missing ? missing : "chromedriver is not running");
		return -1;
	}
	snprintf(profile, sizeof(profile), "%s/ui-profile-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(profile)) {
		fprintf(stderr, "test_ui: mkdtemp '%s': %s\n", profile, strerror(errno));
		return -1;
	}
	wd_session_new(&s, &fx.drv, profile, 1280, 960);
	*state = &s;
	return 0;
}

static int browser_teardown(void **state)
{
	wd_session_quit(*state);
	return 0;
}

/* ---- reading the page ---- */

/* The raw value of figure @id (its data-value); NAN when it shows "–". */
static double figure(struct wd_session *s, const char *id)
{
	char css[64], eid[WD_ID_MAX], *raw, *end;
	double v = NAN;

	snprintf(css, sizeof(css), "#%s", id);
	wd_find_must(s, css, eid);
	raw = wd_attribute(s, eid, "data-value");
	if (raw && *raw) {
		v = strtod(raw, &end);
		if (*end)
			v = NAN;
	}
	free(raw);
	return v;
}

/* The text of the element @css (malloc'ed). */
static char *text_of(struct wd_session *s, const char *css)
{
	char eid[WD_ID_MAX];

	wd_find_must(s, css, eid);
	return wd_text(s, eid);
}

static int shown(struct wd_session *s, const char *css)
{
	char eid[WD_ID_MAX];

	wd_find_must(s, css, eid);
	return wd_displayed(s, eid);
}

/* 1 once the token form is gone and the counters came in. */
static int dashboard_live(struct wd_session *s)
{
	char eid[WD_ID_MAX], *version;
	int live;

	if (shown(s, "#login"))
		return 0;
	wd_find_must(s, "#f-version", eid);
	version = wd_attribute(s, eid, "data-value");
	live = version && !strcmp(version, FERRY_VERSION);
	free(version);
	return live;
}

/* 1 once the form is back with an error message. */
static int asks_again(struct wd_session *s)
{
	char *err;
	int again;

	if (!shown(s, "#login"))
		return 0;
	err = text_of(s, "#login-error");
	again = strstr(err, "401") != NULL;
	free(err);
	return again;
}

/* Wait until @ok(@s), for at most PAGE_WAIT_MS, or fail saying @what. */
static void wait_page(struct wd_session *s, int (*ok)(struct wd_session *), const char *what)
{
	long deadline = now_ms() + PAGE_WAIT_MS;

	while (!ok(s)) {
		if (now_ms() > deadline) {
			char *status = text_of(s, "#status");

			fail_msg("the dashboard did not show %s within %d ms (status: '%s')", what,
				 PAGE_WAIT_MS, status);
		}
		sleep_ms(POLL_MS);
	}
}

static void submit_token(struct wd_session *s, const char *token)
{
	char eid[WD_ID_MAX];

	wd_find_must(s, "#token", eid);
	assert_true(wd_displayed(s, eid));
	if (*token)
		wd_type(s, eid, token);
	wd_find_must(s, "#token-submit", eid);
	wd_click(s, eid);
}

/* The token the page keeps, or NULL (malloc'ed). */
static char *stored_token(struct wd_session *s)
{
	json_t *v = wd_script(s, "return sessionStorage.getItem('" TOKEN_KEY "');");
	char *t = json_is_string(v) ? strdup(json_string_value(v)) : NULL;

	assert_true(json_is_string(v) || json_is_null(v));
	json_decref(v);
	return t;
}

static void open_dashboard(struct wd_session *s)
{
	char url[128];

	url_of("/ui", url, sizeof(url));
	wd_navigate(s, url);
}

/* ---- traffic ---- */

/* POST /v1/messages to carol's device, who is away: it is stored. */
static void message_to_carol(void)
{
	struct th_response r;
	char url[128], body[128];

	url_of("/v1/messages", url, sizeof(url));
	snprintf(body, sizeof(body), "{\"to_device\":\"%lld\",\"payload_b64\":\"aGk=\"}",
		 (long long)fx.carol);
	th_http(&r, "POST", url, TOKEN, body);
	if (r.status != 200 || !strstr(r.body, "\"stored\""))
		fail_msg("POST /v1/messages: %ld %s", r.status, r.body);
	th_response_release(&r);
}

/* alice sends to bob, who is online: he acknowledges, alice hears so. */
static void live_one(struct rawdev *a, struct rawdev *b, uint64_t cid)
{
	rawdev_send_text(a, cid, "bob", "live");
	rawdev_ack(b, rawdev_expect(b, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id);
	assert_int_equal(rawdev_expect(a, PROTO_ACK, WAIT_MS)->u.ack.status, PROTO_ACK_DELIVERED);
}

/* ---- tests ---- */

/* Over plain HTTP: the page as built in, its headers, no token needed for
 * it, and still needed for the data it reads. */
static void test_page_headers(void **state)
{
	struct th_response r;
	char url[128], *h, *file;

	(void)state;
	url_of("/ui", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.content_type, "text/html; charset=utf-8");
	/* Byte for byte the page in the tree (make test runs at its top). */
	file = th_read_file("admin/ui/dashboard.html");
	assert_true(strlen(file) > 1000);
	assert_string_equal(r.body, file);
	free(file);
	/* Self-contained: nothing loaded from anywhere. */
	assert_null(strstr(r.body, "http:"));
	assert_null(strstr(r.body, "https:"));
	assert_null(strstr(r.body, " src="));
	assert_null(strstr(r.body, "<link"));
	h = th_response_header(&r, "Content-Security-Policy");
	assert_non_null(h);
	assert_non_null(strstr(h, "default-src 'none'"));
	assert_non_null(strstr(h, "script-src 'unsafe-inline'"));
	assert_non_null(strstr(h, "style-src 'unsafe-inline'"));
	assert_non_null(strstr(h, "connect-src 'self'"));
	assert_non_null(strstr(h, "frame-ancestors 'none'"));
	free(h);
	h = th_response_header(&r, "X-Content-Type-Options");
	assert_non_null(h);
	assert_string_equal(h, "nosniff");
	free(h);
	h = th_response_header(&r, "X-Frame-Options");
	assert_non_null(h);
	assert_string_equal(h, "DENY");
	free(h);
	h = th_response_header(&r, "Cache-Control");
	assert_non_null(h);
	assert_string_equal(h, "no-store");
	free(h);
	th_response_release(&r);

	/* The page does not look at a token, right or wrong. */
	th_http(&r, "GET", url, "not-the-token", NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);

	th_http(&r, "HEAD", url, NULL, NULL);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.content_type, "text/html; charset=utf-8");
	assert_string_equal(r.body, "");
	h = th_response_header(&r, "Content-Security-Policy");
	assert_non_null(h);
	free(h);
	th_response_release(&r);

	th_http(&r, "POST", url, NULL, "{}");
	assert_int_equal(r.status, 405);
	h = th_response_header(&r, "Allow");
	assert_non_null(h);
	assert_string_equal(h, "GET, HEAD");
	free(h);
	th_response_release(&r);

	/* What the page reads still needs the token. */
	url_of("/v1/stats", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	assert_int_equal(r.status, 401);
	th_response_release(&r);
	th_http(&r, "GET", url, "not-the-token", NULL);
	assert_int_equal(r.status, 401);
	th_response_release(&r);
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);
}

/* What the figures must have shown, at some poll, under traffic. */
struct seen {
	int conn, accepted, online, stored, stored_total, drained_total, latency, charts, queue;
};

static int seen_all(const struct seen *w)
{
	return w->conn && w->accepted && w->online && w->stored && w->stored_total &&
	       w->drained_total && w->latency && w->charts && w->queue;
}

static void look(struct wd_session *s, struct seen *w)
{
	char eid[WD_ID_MAX], *samples;

	w->conn |= figure(s, "f-conn-now") >= 2;
	w->accepted |= figure(s, "f-rate-accepted") > 0;
	w->online |= figure(s, "f-rate-online") > 0;
	w->stored |= figure(s, "f-rate-stored") > 0;
	w->stored_total |= figure(s, "f-total-stored") >= 8;
	w->drained_total |= figure(s, "f-total-drained") >= 5;
	/* The 3 messages to the device that stays away (a reading of the
	 * totals is up to 5 s old). */
	w->queue |= figure(s, "f-queue-depth") >= 3 && figure(s, "f-queue-devices") >= 1;
	w->latency |= figure(s, "f-lat-p50") > 0 && figure(s, "f-lat-p99") > 0;
	wd_find_must(s, "#c-rates", eid);
	samples = wd_attribute(s, eid, "data-samples");
	w->charts |= samples && strtol(samples, NULL, 10) >= 3;
	free(samples);
}

static void screenshot(struct wd_session *s)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", fx.outdir, SHOT_NAME);
	wd_screenshot(s, path);
	printf("test_ui: screenshot of the dashboard: %s\n", path);
}

static void test_dashboard_live(void **state)
{
	struct wd_session *s = *state;
	struct rawdev *a = rawdev_new(), *b = rawdev_new();
	struct seen w = { 0 };
	char *t;
	uint64_t cid = 1;
	long deadline;

	open_dashboard(s);
	assert_true(shown(s, "#login"));
	assert_true(isnan(figure(s, "f-conn-now")));
	t = text_of(s, "#f-version");
	assert_string_equal(t, "\xe2\x80\x93"); /* "–": nothing read yet */
	free(t);
	t = stored_token(s);
	assert_null(t);

	submit_token(s, TOKEN);
	wait_page(s, dashboard_live, "the counters");
	t = stored_token(s);
	assert_non_null(t);
	assert_string_equal(t, TOKEN);
	free(t);
	assert_true(figure(s, "f-uptime") >= 0);

	/* 5 envelopes stored for bob while he is away, 3 for carol. */
	rawdev_login(a, fx.port, fx.alice, fx.alice_s);
	for (int i = 0; i < 5; i++, cid++) {
		rawdev_send_text(a, cid, "bob", "away");
		assert_int_equal(rawdev_expect(a, PROTO_ACK, WAIT_MS)->u.ack.status,
				 PROTO_ACK_STORED);
	}
	for (int i = 0; i < 3; i++)
		message_to_carol();
	/* bob comes and takes them: drained. */
	assert_int_equal(rawdev_login_pending(b, fx.port, fx.bob, fx.bob_s), 5);
	for (int i = 0; i < 5; i++)
		rawdev_ack(b, rawdev_expect(b, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id);
	assert_int_equal(rawdev_expect(b, PROTO_QUEUE_EMPTY, WAIT_MS)->u.drained, 5);

	/* Then steady traffic, live to bob and stored for carol, until the
	 * page has shown every figure moving. */
	deadline = now_ms() + PAGE_WAIT_MS;
	while (!seen_all(&w)) {
		if (now_ms() > deadline)
			fail_msg("the dashboard did not show the traffic within %d ms: "
				 "connections %d, accepted/s %d, online/s %d, stored/s %d, "
				 "stored %d, drained %d, latency %d, charts %d",
				 PAGE_WAIT_MS, w.conn, w.accepted, w.online, w.stored,
				 w.stored_total, w.drained_total, w.latency, w.charts);
		live_one(a, b, cid++);
		message_to_carol();
		look(s, &w);
		sleep_ms(POLL_MS);
	}
	assert_false(shown(s, "#login"));
	screenshot(s);

	/* A reload keeps the token: no form, the counters again. */
	wd_refresh(s);
	assert_false(shown(s, "#login"));
	wait_page(s, dashboard_live, "the counters after a reload");
	assert_true(figure(s, "f-total-stored") >= 8);
	t = stored_token(s);
	assert_non_null(t);
	assert_string_equal(t, TOKEN);
	free(t);

	rawdev_free(a);
	rawdev_free(b);
}

static void test_wrong_token(void **state)
{
	struct wd_session *s = *state;
	char *t;

	open_dashboard(s);
	assert_true(shown(s, "#login"));

	/* Nothing typed: the form says so and stays. */
	submit_token(s, "");
	assert_true(shown(s, "#login"));
	t = text_of(s, "#login-error");
	assert_non_null(strstr(t, "empty"));
	free(t);

	/* A wrong one: ferryd refuses it, the form comes back saying so. */
	submit_token(s, "not-the-token");
	wait_page(s, asks_again, "the form again after a 401");
	t = stored_token(s);
	assert_null(t);
	assert_true(isnan(figure(s, "f-conn-now")));

	/* Then the right one. */
	submit_token(s, TOKEN);
	wait_page(s, dashboard_live, "the counters");
	t = stored_token(s);
	assert_non_null(t);
	assert_string_equal(t, TOKEN);
	free(t);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_headers),
		cmocka_unit_test_setup_teardown(test_dashboard_live, browser_setup,
						browser_teardown),
		cmocka_unit_test_setup_teardown(test_wrong_token, browser_setup, browser_teardown),
	};
	const char *out = getenv("FERRY_TEST_OUTDIR");
	char self[PATH_MAX];

	(void)argc;
	if (out && *out) {
		snprintf(fx.outdir, sizeof(fx.outdir), "%s", out);
	} else if (realpath(argv[0], self)) {
		snprintf(fx.outdir, sizeof(fx.outdir), "%s", dirname(self));
	} else {
		snprintf(fx.outdir, sizeof(fx.outdir), ".");
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
