/*
 * test_store_allocfail.c - the offline store when memory runs out.
 *
 * Each allocation ferry's code makes (tests/support/allocfail.h: malloc,
 * calloc, realloc, reallocarray, strdup, strndup; not those inside libpq or
 * libuv) fails in turn, first while the store starts and connects, then
 * under each kind of request: PUT to two devices, FETCH of rows, DELETE,
 * COUNT, BARRIER. After every failure the store must still be whole: the
 * request was answered (OK, or an error it documents), nothing hangs, the
 * next request without a failure succeeds, and what a PUT reported as not
 * stored can be sent again and is stored exactly once. LeakSanitizer checks
 * at exit that no failure leaked.
 *
 * The failures land in whatever allocation comes next on any thread (the
 * store's writers and readers, its expiry sweeps): that is the point.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "queue/queue.h"
#include "tests/integration/harness.h"
#include "tests/integration/storeclient.h"
#include "tests/support/allocfail.h"
#include "common/banned.h"

/* Enough to cover every allocation one request makes, many times over. */
#define MAX_STEPS 400

static struct {
	char *conninfo;
	PGconn *conn;
	struct sc_client cl;
	int64_t a, b;
	uint64_t next_id;
	unsigned failures;
} fx;

static struct queue_store_opts opts(void)
{
	return (struct queue_store_opts){ .conninfo = fx.conninfo,
					  .connect_timeout = 5,
					  .connections = 3,
					  .batch_max = 500,
					  .max_pending_per_device = 100000,
					  .max_inflight_bytes = 64 << 20,
					  .default_ttl = 3600,
					  .expire_interval = 100,
					  .expire_batch = 100 };
}

static int64_t device_new(void)
{
	PGresult *res =
		th_pg_exec(fx.conn, "INSERT INTO devices (user_id, secret_hash, platform) "
				    "VALUES ('alice', decode(repeat('ab', 32), 'hex'), 'ios') "
				    "RETURNING id");
	int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

	PQclear(res);
	return id;
}

static int wait_ready(struct queue_store *st, unsigned ms)
{
	uint64_t end = sc_now_ms() + ms;

	while (!queue_store_ready(st) && sc_now_ms() < end)
		usleep(5000);
	return queue_store_ready(st);
}

static int setup(void **state)
{
	char err[512];
	int applied;

	fx.conninfo = th_db_new("allocfail");
	if (queue_migrate(fx.conninfo, 5, &applied, err, sizeof(err))) {
		fprintf(stderr, "migrate: %s\n", err);
		return -1;
	}
	fx.conn = th_pg_connect(fx.conninfo);
	sc_client_init(&fx.cl);
	fx.a = device_new();
	fx.b = device_new();
	fx.next_id = 1;
	return 0;
}

static int teardown(void **state)
{
	sc_client_release(&fx.cl);
	PQfinish(fx.conn);
	free(fx.conninfo);
	return 0;
}

/* Starting: each allocation of queue_store_start() and of the store's
 * connecting fails in turn. Start refuses with a reason, or the store
 * comes up (retrying what failed) and serves. */
static void test_start(void **state)
{
	struct queue_store_opts o = opts();
	unsigned refused = 0, n;
	char err[256];

	for (n = 0; n < MAX_STEPS; n++) {
		struct queue_store *st;
		int reached;

		err[0] = '\0';
		allocfail_arm(n);
		st = queue_store_start(&o, err, sizeof(err));
		if (st)
			wait_ready(st, 2000);
		reached = allocfail_disarm();
		if (!st) {
			assert_true(reached);
			assert_true(err[0] != '\0');
			refused++;
			continue;
		}
		if (!wait_ready(st, 10000))
			fail_msg("the store never became ready after allocation %u failed", n);
		assert_int_equal(sc_count(st, &fx.cl, fx.a), 0);
		queue_store_stop(st);
		if (!reached)
			break;
		fx.failures++;
	}
	assert_true(n < MAX_STEPS);
	assert_true(refused > 0);
	print_message("start: %u allocations failed in turn, %u refused with a reason\n", n,
		      refused);
}

/* What a request answers when an allocation fails under it. */
static void assert_documented(enum ferry_err rc)
{
	if (rc != FERRY_OK && rc != FERRY_ENOMEM && rc != FERRY_EUNAVAIL && rc != FERRY_EDB)
		fail_msg("a request answered %s", ferry_strerror(rc));
}

/* A PUT to A and B with each allocation failing in turn; then the same PUT
 * again: stored now, or recognised as stored before, for both devices. */
static unsigned puts_each_failing(struct queue_store *st)
{
	unsigned n;

	for (n = 0; n < MAX_STEPS; n++) {
		uint64_t id = fx.next_id++;
		struct sc_treq t;
		enum ferry_err rc;
		int reached;

		allocfail_arm(n);
		rc = sc_put(st, &fx.cl, &t, id, 7, id, (int64_t[]){ fx.a, fx.b }, 2, "allocfail");
		reached = allocfail_disarm();
		assert_documented(rc);
		do {
			rc = sc_put(st, &fx.cl, &t, id, 7, id, (int64_t[]){ fx.a, fx.b }, 2,
				    "allocfail");
		} while (rc == FERRY_EUNAVAIL && (usleep(20000), 1));
		assert_int_equal(rc, FERRY_OK);
		for (int i = 0; i < 2; i++) {
			assert_true(t.puts[i].result == QUEUE_PUT_STORED ||
				    t.puts[i].result == QUEUE_PUT_DUPLICATE);
			assert_int_equal(t.puts[i].server_id, id);
		}
		if (!reached)
			break;
		fx.failures++;
	}
	assert_true(n < MAX_STEPS);
	return n + 1;
}

/* @type (FETCH, COUNT, BARRIER: read-only here) with each allocation failing
 * in turn; the same request afterwards succeeds. */
static unsigned reads_each_failing(struct queue_store *st, enum queue_req_type type,
				   uint64_t expect)
{
	unsigned n;

	for (n = 0; n < MAX_STEPS; n++) {
		struct sc_treq t;
		enum ferry_err rc;
		int reached;

		sc_treq_init(&t, &fx.cl, type);
		t.req.device = fx.a;
		t.req.limit = QUEUE_FETCH_MAX;
		allocfail_arm(n);
		rc = sc_run_req(st, &fx.cl, &t);
		reached = allocfail_disarm();
		assert_documented(rc);
		queue_rows_free(t.req.rows, t.req.nrows);
		if (rc == FERRY_OK && type == QUEUE_REQ_FETCH)
			assert_int_equal(t.req.nrows,
					 expect < QUEUE_FETCH_MAX ? expect : QUEUE_FETCH_MAX);
		if (rc == FERRY_OK && type == QUEUE_REQ_COUNT)
			assert_int_equal(t.req.count, expect);
		if (!reached)
			break;
		fx.failures++;
	}
	assert_true(n < MAX_STEPS);
	return n + 1;
}

static void test_requests(void **state)
{
	struct queue_store_opts o = opts();
	struct queue_store *st = queue_store_start(&o, (char[256]){ 0 }, 256);
	unsigned steps_put, steps_fetch, steps_count, steps_barrier, steps_del = 0;
	uint64_t stored, ids[8];
	struct sc_treq t;

	assert_non_null(st);
	assert_true(wait_ready(st, 10000));
	steps_put = puts_each_failing(st);
	/* Every PUT is there exactly once, for each device. */
	stored = fx.next_id - 1;
	assert_int_equal(sc_count(st, &fx.cl, fx.a), stored);
	assert_int_equal(sc_count(st, &fx.cl, fx.b), stored);
	assert_int_equal(th_pg_int(fx.conn, "SELECT count(*) FROM envelopes"), 2 * stored);
	steps_fetch = reads_each_failing(st, QUEUE_REQ_FETCH, stored);
	steps_count = reads_each_failing(st, QUEUE_REQ_COUNT, stored);
	steps_barrier = reads_each_failing(st, QUEUE_REQ_BARRIER, 0);

	/* DELETE of 8 ids at a time, each allocation failing in turn; what a
	 * failed DELETE did not delete, the next one does. */
	for (unsigned n = 0; n < MAX_STEPS && stored >= 8; n++, steps_del++) {
		enum ferry_err rc;
		int reached;

		for (int i = 0; i < 8; i++)
			ids[i] = stored - (uint64_t)i;
		sc_treq_init(&t, &fx.cl, QUEUE_REQ_DELETE);
		t.req.device = fx.a;
		t.req.ids = ids;
		t.req.nids = 8;
		allocfail_arm(n);
		rc = sc_run_req(st, &fx.cl, &t);
		reached = allocfail_disarm();
		assert_documented(rc);
		sc_del(st, &fx.cl, fx.a, ids, 8);
		stored -= 8;
		assert_int_equal(sc_count(st, &fx.cl, fx.a), stored);
		if (!reached)
			break;
		fx.failures++;
	}
	/* B's rows were never touched. */
	assert_int_equal(sc_count(st, &fx.cl, fx.b), fx.next_id - 1);
	queue_store_stop(st);
	print_message("requests: %u allocations failed in all; put %u, fetch %u, count %u, "
		      "barrier %u, delete %u steps\n",
		      fx.failures, steps_put, steps_fetch, steps_count, steps_barrier, steps_del);
	assert_true(fx.failures > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start),
		cmocka_unit_test(test_requests),
	};

	return cmocka_run_group_tests_name("store_allocfail", tests, setup, teardown);
}
