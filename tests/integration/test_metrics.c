/*
 * test_metrics.c - GET /v1/stats and GET /metrics against a running ferryd:
 * figures that move with traffic (envelopes stored, drained, delivered
 * online; connections), the Prometheus exposition checked by Prometheus's
 * own parser (promtool check metrics), not by a regex; and draining.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static long request(const char *method, const char *path, const char *body, json_t **out)
{
	struct th_response r;
	char url[128];
	long status;

	snprintf(url, sizeof(url), "%s%s", fx.d.admin_url, path);
	th_http(&r, method, url, TOKEN, body);
	status = r.status;
	if (out)
		*out = json_loads(r.body, 0, NULL);
	th_response_release(&r);
	return status;
}

/* 20 SENDs in one write to a device that is away: their ACKs come back from
 * the store's commit in one loop iteration, and go out together, not in a
 * write(2) each (traffic.writes counts the socket writes). */
static void test_writes_coalesced(void **state)
{
	struct rawdev *a = rawdev_new();
	static uint8_t out[64 * 1024];
	json_t *before, *after;
	json_int_t frames, writes;
	size_t len = 0, n;
	char to[] = "dora", secret[64];
	int64_t dora;

	(void)state;
	th_device_create(&fx.d, TOKEN, to, &dora, secret); /* away throughout */
	rawdev_login(a, fx.port, fx.a1, fx.a1s);
	before = stats();
	for (uint64_t i = 0; i < 20; i++) {
		struct proto_frame f = { .type = PROTO_SEND };

		f.u.send.client_id = 5000 + i;
		f.u.send.to_user.p = (const uint8_t *)to;
		f.u.send.to_user.len = strlen(to);
		f.u.send.payload.p = (const uint8_t *)"x";
		f.u.send.payload.len = 1;
		assert_int_equal(proto_encode(&f, out + len, sizeof(out) - len, &n), FERRY_OK);
		len += n;
	}
	rawdev_write(a, out, len);
	for (uint64_t i = 0; i < 20; i++)
		assert_int_equal(rawdev_expect(a, PROTO_ACK, WAIT_MS)->u.ack.client_id, 5000 + i);
	after = stats();
	frames = at(after, "traffic", "frames_out") - at(before, "traffic", "frames_out");
	writes = at(after, "traffic", "writes") - at(before, "traffic", "writes");
	/* The ACKs, and nothing else on this daemon meanwhile. */
	assert_int_equal(frames, 20);
	if (writes > frames / 2)
		fail_msg("%lld frames in %lld writes: not coalesced", (long long)frames,
			 (long long)writes);
	json_decref(before);
	json_decref(after);
	rawdev_free(a);
}

static json_t *device(int64_t id)
{
	char path[64];
	json_t *j = NULL;

	snprintf(path, sizeof(path), "/v1/devices/%lld", (long long)id);
	assert_int_equal(request("GET", path, NULL, &j), 200);
	assert_non_null(j);
	return j;
}

static json_t *sub(json_t *j, const char *a, const char *b)
{
	return json_object_get(json_object_get(j, a), b);
}

/* GET /v1/devices/{device}: its queue moves with what is stored and
 * drained, its presence with its connection; /v1/queues and /v1/stats
 * count every queue together. */
static void test_device_detail(void **state)
{
	struct rawdev *a = rawdev_new(), *c = rawdev_new();
	char csecret[64], remote[32];
	json_t *j, *q;
	int64_t cid;
	int online = 1;

	(void)state;
	th_device_create(&fx.d, TOKEN, "carol", &cid, csecret);
	j = device(cid);
	assert_false(json_is_true(sub(j, "presence", "online")));
	assert_null(sub(j, "presence", "remote"));
	assert_int_equal(json_integer_value(sub(j, "queue", "pending")), 0);
	assert_true(json_is_null(sub(j, "queue", "oldest_created")));
	assert_true(json_is_null(json_object_get(j, "last_push")));
	json_decref(j);

	/* Three envelopes while carol is away. */
	rawdev_login(a, fx.port, fx.a1, fx.a1s);
	for (uint64_t i = 1; i <= 3; i++)
		send_text(a, 100 + i, "carol");
	j = device(cid);
	assert_int_equal(json_integer_value(sub(j, "queue", "pending")), 3);
	assert_true(json_is_string(sub(j, "queue", "oldest_created")));
	assert_true(json_real_value(sub(j, "queue", "oldest_age_s")) >= 0.0);
	assert_false(json_is_true(sub(j, "presence", "online")));
	json_decref(j);
	assert_int_equal(request("GET", "/v1/queues?top=1000", NULL, &q), 200);
	assert_true(json_integer_value(sub(q, "total", "envelopes")) >= 3);
	assert_true(json_integer_value(sub(q, "total", "devices")) >= 1);
	assert_true(json_is_string(sub(q, "total", "as_of")));
	json_decref(q);
	/* /v1/stats shares a reading of at most a few seconds ago. */
	q = stats();
	assert_true(json_is_integer(sub(q, "queues", "envelopes")));
	assert_true(json_is_integer(sub(q, "queues", "devices")));
	json_decref(q);

	/* Carol connects: online, from where, on which worker; she takes
	 * them and her queue empties (the deletes are asynchronous). */
	assert_int_equal(rawdev_login_pending(c, fx.port, cid, csecret), 3);
	for (int i = 0; i < 3; i++)
		rawdev_ack(c, rawdev_expect(c, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id);
	assert_int_equal(rawdev_expect(c, PROTO_QUEUE_EMPTY, WAIT_MS)->u.drained, 3);
	for (int i = 0; i < 200; i++) {
		j = device(cid);
		if (json_integer_value(sub(j, "queue", "pending")) == 0)
			break;
		json_decref(j);
		j = NULL;
		usleep(25 * 1000);
	}
	assert_non_null(j);
	assert_true(json_is_null(sub(j, "queue", "oldest_created")));
	assert_true(json_is_true(sub(j, "presence", "online")));
	assert_true(json_integer_value(sub(j, "presence", "worker")) < 2);
	assert_true(json_is_string(sub(j, "presence", "connected_since")));
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", rawdev_local_port(c));
	assert_string_equal(json_string_value(sub(j, "presence", "remote")), remote);
	json_decref(j);

	/* last_seen is written in batches, every few seconds. */
	for (int i = 0; i < 400; i++) {
		int seen;

		j = device(cid);
		seen = json_is_string(json_object_get(j, "last_seen"));
		json_decref(j);
		if (seen)
			break;
		assert_true(i < 399);
		usleep(25 * 1000);
	}

	/* Gone again: the entry leaves with the connection. */
	rawdev_close(c);
	for (int i = 0; i < 200 && online; i++) {
		j = device(cid);
		online = json_is_true(sub(j, "presence", "online"));
		json_decref(j);
		if (online)
			usleep(25 * 1000);
	}
	assert_false(online);
	rawdev_free(a);
	rawdev_free(c);
}

/* Last (a drain cannot be undone): the device is told to go, /readyz says
 * draining, no new device gets in, and the drain is done once it left. */
static void test_drain(void **state)
{
	struct rawdev *b1 = rawdev_new();
	json_t *j = NULL;
	int done = 0;

	(void)state;
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	assert_int_equal(request("POST", "/v1/drain", "{\"spread_ms\": -1}", NULL), 400);
	assert_int_equal(request("POST", "/v1/drain", "{\"spread\": 5}", NULL), 400);
	assert_int_equal(request("GET", "/v1/drain", NULL, &j), 200);
	assert_false(json_is_true(json_object_get(j, "draining")));
	json_decref(j);

	assert_int_equal(request("POST", "/v1/drain", "{\"spread_ms\": 0}", &j), 202);
	assert_true(json_is_true(json_object_get(j, "draining")));
	assert_true(json_integer_value(json_object_get(j, "connections")) >= 1);
	json_decref(j);
	assert_int_equal(rawdev_expect(b1, PROTO_RECONNECT, WAIT_MS)->u.reconnect_after, 0);
	assert_int_equal(request("GET", "/readyz", NULL, &j), 503);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(j, "checks"), "listeners")),
		"draining");
	json_decref(j);
	/* Again: nothing restarts, the state is the same. */
	assert_int_equal(request("POST", "/v1/drain", NULL, NULL), 202);
	assert_int_equal(request("GET", "/v1/drain", NULL, &j), 200);
	assert_false(json_is_true(json_object_get(j, "done")));
	json_decref(j);

	rawdev_close(b1);
	for (int i = 0; i < 200 && !done; i++) {
		assert_int_equal(request("GET", "/v1/drain", NULL, &j), 200);
		done = json_is_true(json_object_get(j, "done"));
		json_decref(j);
		if (!done)
			usleep(50 * 1000);
	}
	assert_true(done);
	/* The listeners are closed: a device cannot connect. */
	{
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_port = htons((uint16_t)fx.port) };
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_true(fd >= 0);
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), -1);
		assert_int_equal(errno, ECONNREFUSED);
		close(fd);
	}
	rawdev_free(b1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stats_move),    cmocka_unit_test(test_metrics_promtool),
		cmocka_unit_test(test_device_detail), cmocka_unit_test(test_writes_coalesced),
		cmocka_unit_test(test_drain),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
