/*
 * test_metrics.c - GET /v1/stats and GET /metrics against a running ferryd:
 * figures that move with traffic (envelopes stored, drained, delivered
 * online; connections), and the Prometheus exposition checked by
 * Prometheus's own parser (promtool check metrics), not by a regex.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "metrics-test-token"
#define WAIT_MS 10000

static struct {
	char *conninfo;
	struct th_ferryd d;
	int port;
	int64_t a1, b1;
	char a1s[64], b1s[64];
} fx;

static int setup(void **state)
{
	char extra[256], *cfg, *path, *out;
	int admin = th_free_port(), status;

	(void)state;
	fx.conninfo = th_db_new("metrics");
	fx.port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\n\n[receipts]\ndelivered = off\n",
		 fx.port);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("metrics.ini", cfg);
	status = th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, &out);
	unlink(path);
	free(path);
	free(out);
	if (status != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, admin);
	th_ferryd_wait_ready(&fx.d, 10000);
	free(cfg);
	th_device_create(&fx.d, TOKEN, "alice", &fx.a1, fx.a1s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.b1, fx.b1s);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(fx.conninfo);
	return th_ferryd_stop(&fx.d, SIGTERM) == 0 ? 0 : -1;
}

static json_t *stats(void)
{
	struct th_response r;
	char url[128];
	json_t *j;

	snprintf(url, sizeof(url), "%s/v1/stats", fx.d.admin_url);
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	th_response_release(&r);
	return j;
}

static json_int_t at(json_t *j, const char *section, const char *key)
{
	json_t *v = json_object_get(json_object_get(j, section), key);

	if (!json_is_integer(v))
		fail_msg("stats: %s.%s is not an integer", section, key);
	return json_integer_value(v);
}

static void send_text(struct rawdev *d, uint64_t cid, const char *to)
{
	rawdev_send_text(d, cid, to, "x");
	assert_int_equal(rawdev_expect(d, PROTO_ACK, WAIT_MS)->u.ack.client_id, cid);
}

/* 10 envelopes to bob while away: stored +10; bob connects and takes them:
 * drained +10; 5 live ones: delivered_online +5 and 5 latencies. */
static void test_stats_move(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	json_t *before, *mid, *after, *lat;

	(void)state;
	before = stats();
	assert_string_equal(json_string_value(json_object_get(before, "version")), FERRY_VERSION);
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	for (uint64_t i = 1; i <= 10; i++)
		send_text(a1, i, "bob");
	mid = stats();
	assert_int_equal(at(mid, "envelopes", "accepted") - at(before, "envelopes", "accepted"),
			 10);
	assert_int_equal(at(mid, "envelopes", "stored") - at(before, "envelopes", "stored"), 10);
	assert_true(at(mid, "connections", "now") >= 1);
	assert_true(at(mid, "connections", "authenticated") >= 1);
	assert_true(at(mid, "traffic", "frames_in") >= 11);

	assert_int_equal(rawdev_login_pending(b1, fx.port, fx.b1, fx.b1s), 10);
	for (int i = 0; i < 10; i++)
		rawdev_ack(b1, rawdev_expect(b1, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id);
	assert_int_equal(rawdev_expect(b1, PROTO_QUEUE_EMPTY, WAIT_MS)->u.drained, 10);
	for (uint64_t i = 11; i <= 15; i++) {
		rawdev_send_text(a1, i, "bob", "live");
		rawdev_ack(b1, rawdev_expect(b1, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id);
		assert_int_equal(rawdev_expect(a1, PROTO_ACK, WAIT_MS)->u.ack.status,
				 PROTO_ACK_DELIVERED);
	}
	after = stats();
	assert_int_equal(at(after, "envelopes", "drained") - at(before, "envelopes", "drained"),
			 10);
	assert_int_equal(at(after, "envelopes", "delivered_online") -
				 at(before, "envelopes", "delivered_online"),
			 5);
	assert_true(at(after, "connections", "now") >= 2);
	assert_true(at(after, "connections", "peak") >= 2);
	lat = json_object_get(after, "delivery_latency_ms");
	assert_true(json_integer_value(json_object_get(lat, "count")) >= 5);
	assert_true(json_real_value(json_object_get(lat, "p99")) > 0);
	assert_true(at(after, "store", "batches") >= 1);
	json_decref(before);
	json_decref(mid);
	json_decref(after);
	rawdev_free(a1);
	rawdev_free(b1);
}

/* /metrics parses with promtool, says what /v1/stats says, and needs the token. */
static void test_metrics_promtool(void **state)
{
	struct th_response r;
	char url[128], *ctype;
	json_t *s = stats();
	char line[128];

	(void)state;
	snprintf(url, sizeof(url), "%s/metrics", fx.d.admin_url);
	th_http(&r, "GET", url, NULL, NULL);
	assert_int_equal(r.status, 401);
	th_response_release(&r);

	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	ctype = th_response_header(&r, "Content-Type");
	assert_non_null(ctype);
	assert_non_null(strstr(ctype, "text/plain; version=0.0.4"));
	free(ctype);
	snprintf(line, sizeof(line), "\nferry_envelopes_stored_total %lld\n",
		 (long long)at(s, "envelopes", "stored"));
	assert_non_null(strstr(r.body, line));
	assert_non_null(strstr(r.body, "ferry_delivery_latency_seconds_bucket{le=\"+Inf\"}"));
	assert_non_null(strstr(r.body, "ferry_store_commit_seconds_count"));
	assert_non_null(strstr(r.body, "ferry_nacks_total{reason=\"queue_full\"}"));

	th_promtool_check(r.body);
	th_response_release(&r);
	json_decref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stats_move),
		cmocka_unit_test(test_metrics_promtool),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
