/*
 * test_store.c - the offline envelope store (queue/store*.c) against a real
 * PostgreSQL: batching and commit, order, paging, deletes, dedup across a
 * restart, per-device limits, TTL expiry, back-pressure, an unreachable or
 * restarted database, stop; several writers: PUTs split between them,
 * order, barriers, a part that fails.
 *
 * The test is a store client like a gateway worker: replies arrive on a
 * mailbox bound to a libuv loop of the test's own (one per submitting
 * thread), run until the awaited replies are in or a deadline passes.
 */
#include <pthread.h>
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
#include <uv.h>

#include "common/mailbox.h"
#include "queue/queue.h"
#include "tests/integration/harness.h"
#include "tests/integration/storeclient.h"
#include "common/banned.h"

#define WAIT_MS SC_WAIT_MS

/* ---- fixture ---- */

struct fixture {
	char *conninfo;
	PGconn *conn;
	struct sc_client cl;
};

static struct queue_store_opts opts_for(const char *conninfo)
{
	return (struct queue_store_opts){ .conninfo = conninfo,
					  .connect_timeout = 5,
					  .connections = 3,
					  .batch_max = 500,
					  .max_pending_per_device = 10000,
					  .max_inflight_bytes = 64 << 20,
					  .default_ttl = 3600,
					  .expire_interval = 100,
					  .expire_batch = 100 };
}

static struct queue_store *start(const struct queue_store_opts *o)
{
	char err[256];
	struct queue_store *st = queue_store_start(o, err, sizeof(err));
	uint64_t end = sc_now_ms() + 10000;

	if (!st)
		fail_msg("queue_store_start: %s", err);
	while (!queue_store_ready(st) && sc_now_ms() < end)
		usleep(5000);
	assert_true(queue_store_ready(st));
	return st;
}

static int64_t device_new(PGconn *conn)
{
	PGresult *res = th_pg_exec(conn, "INSERT INTO devices (user_id, secret_hash, platform) "
					 "VALUES ('alice', decode(repeat('ab', 32), 'hex'), 'ios') "
					 "RETURNING id");
	int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

	PQclear(res);
	return id;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[512];
	int applied;

	f->conninfo = th_db_new("store");
	if (queue_migrate(f->conninfo, 5, &applied, err, sizeof(err))) {
		fprintf(stderr, "migrate: %s\n", err);
		return -1;
	}
	f->conn = th_pg_connect(f->conninfo);
	sc_client_init(&f->cl);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	sc_client_release(&f->cl);
	PQfinish(f->conn);
	free(f->conninfo);
	free(f);
	return 0;
}

/* ---- tests ---- */

/* Several devices, increasing sequences, paging, deletes. */
static void test_put_fetch_delete(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t a = device_new(f->conn), b = device_new(f->conn), c = device_new(f->conn);
	struct sc_treq t;
	uint64_t ids[2] = { 101, 103 };
	uint64_t created = (uint64_t)time(NULL) * 1000 - 877;

	assert_int_equal(sc_put(st, &f->cl, &t, 101, 7, 1, (int64_t[]){ a, b }, 2, "one"),
			 FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[0].seq, 1);
	assert_int_equal(t.puts[0].server_id, 101);
	assert_int_equal(t.puts[1].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[1].seq, 1);
	assert_int_equal(sc_put(st, &f->cl, &t, 102, 7, 2, (int64_t[]){ a, b, c }, 3, "two"),
			 FERRY_OK);
	assert_int_equal(t.puts[0].seq, 2);
	assert_int_equal(t.puts[1].seq, 2);
	assert_int_equal(t.puts[2].seq, 1);
	/* A receipt with bytes a C string could not carry. */
	sc_put_init(&t, &f->cl, 103, 8, 1, (int64_t[]){ a }, 1, "x");
	memcpy(t.payload, "\0\1\2\377", 4);
	t.req.len = 4;
	t.req.kind = QUEUE_KIND_RECEIPT;
	t.req.sender_user = "carol";
	t.req.created_ms = created;
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	assert_int_equal(t.puts[0].seq, 3);

	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 0, 2), FERRY_OK);
	assert_int_equal(t.req.nrows, 2);
	assert_int_equal(t.req.rows[0].seq, 1);
	assert_int_equal(t.req.rows[0].server_id, 101);
	assert_string_equal(t.req.rows[0].sender_user, "bob");
	assert_int_equal(t.req.rows[0].sender_device, 7);
	assert_int_equal(t.req.rows[0].client_id, 1);
	assert_int_equal(t.req.rows[0].kind, QUEUE_KIND_MESSAGE);
	assert_int_equal(t.req.rows[0].len, 3);
	assert_memory_equal(t.req.rows[0].payload, "one", 3);
	assert_int_equal(t.req.rows[1].seq, 2);
	assert_memory_equal(t.req.rows[1].payload, "two", 3);
	queue_rows_free(t.req.rows, t.req.nrows);
	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 2, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 1);
	assert_int_equal(t.req.rows[0].seq, 3);
	assert_int_equal(t.req.rows[0].kind, QUEUE_KIND_RECEIPT);
	assert_string_equal(t.req.rows[0].sender_user, "carol");
	assert_int_equal(t.req.rows[0].created_ms, created);
	assert_int_equal(t.req.rows[0].len, 4);
	assert_memory_equal(t.req.rows[0].payload, "\0\1\2\377", 4);
	queue_rows_free(t.req.rows, t.req.nrows);
	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 3, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 0);
	assert_int_equal(sc_count(st, &f->cl, a), 3);
	assert_int_equal(sc_count(st, &f->cl, c), 1);

	/* The device acknowledged the first and the third. */
	assert_int_equal(sc_del(st, &f->cl, a, ids, 2), 2);
	assert_int_equal(sc_del(st, &f->cl, a, ids, 2), 0);
	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 0, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 1);
	assert_int_equal(t.req.rows[0].server_id, 102);
	queue_rows_free(t.req.rows, t.req.nrows);
	assert_int_equal(sc_count(st, &f->cl, a), 1);
	assert_int_equal(sc_count(st, &f->cl, b), 2);
	assert_int_equal(
		th_pg_int(f->conn, "SELECT pending FROM devices WHERE id = %lld", (long long)a), 1);
	queue_store_stop(st);
}

/* A barrier is answered after the PUTs submitted before it. */
static void test_barrier(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t b = device_new(f->conn);
	struct sc_treq p, bar;

	sc_put_init(&p, &f->cl, 104, 7, 3, (int64_t[]){ b }, 1, "four");
	sc_treq_init(&bar, &f->cl, QUEUE_REQ_BARRIER);
	queue_store_submit(st, &p.req);
	queue_store_submit(st, &bar.req);
	assert_true(sc_client_wait(&f->cl, f->cl.replies + 2, WAIT_MS));
	assert_int_equal(p.req.rc, FERRY_OK);
	assert_int_equal(bar.req.rc, FERRY_OK);
	assert_true(p.order < bar.order);
	sc_treq_init(&bar, &f->cl, QUEUE_REQ_BARRIER);
	assert_int_equal(sc_run_req(st, &f->cl, &bar), FERRY_OK);
	queue_store_stop(st);
}

/* ---- several writers ---- */

/* A new device that writer @w of @writers owns (device id modulo writers). */
static int64_t device_on(PGconn *conn, unsigned writers, unsigned w)
{
	for (;;) {
		int64_t id = device_new(conn);

		if ((uint64_t)id % writers == w)
			return id;
	}
}

/* A PUT for devices of three writers, in an order that mixes them, and a
 * device twice: each recipient's result where the caller put it. */
static void test_split_results(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t d[4];
	struct sc_treq t;

	o.connections = 4;
	o.writers = 3;
	st = start(&o);
	d[0] = device_on(f->conn, 3, 2);
	d[1] = device_on(f->conn, 3, 0);
	d[2] = device_on(f->conn, 3, 2);
	d[3] = device_on(f->conn, 3, 1);
	assert_int_equal(sc_put(st, &f->cl, &t, 50, 7, 1, (int64_t[]){ d[2], d[0] }, 2, "a"),
			 FERRY_OK);
	assert_int_equal(
		sc_put(st, &f->cl, &t, 51, 7, 2, (int64_t[]){ d[0], d[1], d[2], d[3] }, 4, "b"),
		FERRY_OK);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(t.puts[i].recipient, d[i]);
		assert_int_equal(t.puts[i].result, QUEUE_PUT_STORED);
		assert_int_equal(t.puts[i].server_id, 51);
		assert_int_equal(t.puts[i].seq, i == 0 || i == 2 ? 2 : 1);
	}
	/* A device twice, between devices of other writers; an unknown one. */
	assert_int_equal(sc_put(st, &f->cl, &t, 52, 7, 3,
				(int64_t[]){ d[3], d[0], 987654321, d[0] }, 4, "c"),
			 FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[0].seq, 2);
	assert_int_equal(t.puts[1].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[1].seq, 3);
	assert_int_equal(t.puts[2].result, QUEUE_PUT_GONE);
	assert_int_equal(t.puts[3].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(t.puts[3].server_id, 52);
	assert_int_equal(t.puts[3].seq, 3);
	assert_int_equal(t.puts[3].recipient, d[0]);
	assert_int_equal(sc_fetch(st, &f->cl, &t, d[0], 0, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(t.req.rows[i].server_id, 50 + i);
	queue_rows_free(t.req.rows, t.req.nrows);
	assert_int_equal(sc_count(st, &f->cl, d[1]), 1);
	assert_int_equal(sc_count(st, &f->cl, d[2]), 2);
	assert_int_equal(sc_count(st, &f->cl, d[3]), 2);
	queue_store_stop(st);
}

/* A barrier after PUTs on every writer (split ones among them) is answered
 * after all of them; PUTs after it are not waited for. */
static void test_barrier_writers(void **state)
{
	enum { N = 600 };
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	static struct sc_treq p[N + 1], bar;
	unsigned base = f->cl.replies;
	int64_t d[3];

	o.connections = 4;
	o.writers = 3;
	o.batch_max = 20;
	st = start(&o);
	for (unsigned w = 0; w < 3; w++)
		d[w] = device_on(f->conn, 3, w);
	for (int i = 0; i < N; i++) {
		/* Alone on each writer in turn, or on all three. */
		if (i % 4 == 3)
			sc_put_init(&p[i], &f->cl, (uint64_t)i + 1, 7, (uint64_t)i + 1, d, 3, "b");
		else
			sc_put_init(&p[i], &f->cl, (uint64_t)i + 1, 7, (uint64_t)i + 1, &d[i % 4],
				    1, "b");
		queue_store_submit(st, &p[i].req);
	}
	sc_treq_init(&bar, &f->cl, QUEUE_REQ_BARRIER);
	queue_store_submit(st, &bar.req);
	sc_put_init(&p[N], &f->cl, N + 1, 7, N + 1, d, 3, "after");
	queue_store_submit(st, &p[N].req);
	assert_true(sc_client_wait(&f->cl, base + N + 2, WAIT_MS));
	assert_int_equal(bar.req.rc, FERRY_OK);
	for (int i = 0; i <= N; i++) {
		assert_int_equal(p[i].req.rc, FERRY_OK);
		if (i < N)
			assert_true(p[i].order < bar.order);
	}
	for (unsigned w = 0; w < 3; w++)
		assert_int_equal(p[N].puts[w].seq, (int64_t)sc_count(st, &f->cl, d[w]));
	/* Nothing in flight: answered at once. */
	sc_treq_init(&bar, &f->cl, QUEUE_REQ_BARRIER);
	assert_int_equal(sc_run_req(st, &f->cl, &bar), FERRY_OK);
	queue_store_stop(st);
}

/*
 * One writer's part fails while the other's commits: the PUT is not OK
 * (EUNAVAIL: retry), and its retransmission is DUPLICATE where it committed.
 * A PUT that every writer refuses is EDB.
 */
static void test_part_fails(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	struct queue_store_stats s;
	int64_t a, x;
	struct sc_treq t;

	o.writers = 2;
	st = start(&o);
	a = device_on(f->conn, 2, 0);
	x = device_on(f->conn, 2, 1);
	/* A row written by hand takes x's next sequence number: x's batch fails. */
	PQclear(th_pg_exec(f->conn, "INSERT INTO envelopes (recipient_device, seq, server_id, "
				    "sender_user, sender_device, client_id, kind, payload, "
				    "created, expires) SELECT max(id), 1, 999, 'bob', 8, 1, "
				    "'message', '\\x00', now(), now() + interval '1 hour' FROM "
				    "devices"));
	assert_int_equal(sc_put(st, &f->cl, &t, 60, 7, 60, (int64_t[]){ x, a }, 2, "p"),
			 FERRY_EUNAVAIL);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				   (long long)a),
			 1);
	queue_store_stats(st, &s);
	assert_int_equal(s.put_unavail, 1);
	assert_int_equal(s.put_stored, 0);
	assert_true(s.batch_failures >= 1);
	assert_int_equal(s.inflight_bytes, 0);

	/* The retransmission, once x can take it. */
	PQclear(th_pg_exec(f->conn, "DELETE FROM envelopes WHERE server_id = 999"));
	assert_int_equal(sc_put(st, &f->cl, &t, 61, 7, 60, (int64_t[]){ x, a }, 2, "p"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[0].server_id, 61);
	assert_int_equal(t.puts[0].seq, 1);
	assert_int_equal(t.puts[1].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(t.puts[1].server_id, 60);
	assert_int_equal(t.puts[1].seq, 1);

	/* Refused by both writers: nothing committed, EDB. */
	sc_put_init(&t, &f->cl, 62, 7, 62, (int64_t[]){ a, x }, 2, "p");
	t.req.created_ms = 1ULL << 62;
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_EDB);
	assert_int_equal(th_pg_int(f->conn, "SELECT count(*) FROM envelopes"), 2);
	/* Both writers go on. */
	assert_int_equal(sc_put(st, &f->cl, &t, 63, 7, 63, (int64_t[]){ a, x }, 2, "p"), FERRY_OK);
	assert_int_equal(t.puts[0].seq, 2);
	assert_int_equal(t.puts[1].seq, 2);
	queue_store_stats(st, &s);
	assert_int_equal(s.puts, 4);
	assert_int_equal(s.put_unavail, 2);
	assert_int_equal(s.inflight_bytes, 0);
	queue_store_stop(st);
}

/* A retransmission is recognised, also by a new store (a restart). */
static void test_duplicate_restart(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t a = device_new(f->conn), b = device_new(f->conn);
	struct sc_treq t;

	assert_int_equal(sc_put(st, &f->cl, &t, 1000, 7, 55, (int64_t[]){ a }, 1, "m"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(sc_put(st, &f->cl, &t, 1001, 7, 55, (int64_t[]){ a }, 1, "m"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(t.puts[0].server_id, 1000);
	assert_int_equal(t.puts[0].seq, 1);
	/* Same client id from another sender device: a different envelope. */
	assert_int_equal(sc_put(st, &f->cl, &t, 1002, 8, 55, (int64_t[]){ a }, 1, "m"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[0].seq, 2);
	queue_store_stop(st);

	st = start(&o);
	assert_int_equal(sc_put(st, &f->cl, &t, 1003, 7, 55, (int64_t[]){ a, b }, 2, "m"),
			 FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(t.puts[0].server_id, 1000);
	assert_int_equal(t.puts[1].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[1].server_id, 1003);
	/* Duplicates took no sequence number and count no envelope. */
	assert_int_equal(sc_put(st, &f->cl, &t, 1004, 7, 56, (int64_t[]){ a }, 1, "m"), FERRY_OK);
	assert_int_equal(t.puts[0].seq, 3);
	assert_int_equal(sc_count(st, &f->cl, a), 3);
	/* Ids with the top bit set survive the trip through bigint. */
	assert_int_equal(
		sc_put(st, &f->cl, &t, UINT64_MAX - 1, 7, UINT64_MAX, (int64_t[]){ b }, 1, "m"),
		FERRY_OK);
	assert_int_equal(sc_put(st, &f->cl, &t, 5, 7, UINT64_MAX, (int64_t[]){ b }, 1, "m"),
			 FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_DUPLICATE);
	assert_true(t.puts[0].server_id == UINT64_MAX - 1);
	assert_int_equal(sc_fetch(st, &f->cl, &t, b, 1, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 1);
	assert_true(t.req.rows[0].server_id == UINT64_MAX - 1);
	assert_true(t.req.rows[0].client_id == UINT64_MAX);
	queue_rows_free(t.req.rows, t.req.nrows);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				   (long long)a),
			 3);
	queue_store_stop(st);
}

/* max_pending_per_device: FULL, nothing dropped, no sequence gap. */
static void test_full(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t a = device_new(f->conn), b = device_new(f->conn);
	struct sc_treq t;
	uint64_t first = 1;

	o.max_pending_per_device = 3;
	st = start(&o);
	for (uint64_t i = 1; i <= 3; i++) {
		assert_int_equal(sc_put(st, &f->cl, &t, i, 7, i, (int64_t[]){ a }, 1, "p"),
				 FERRY_OK);
		assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	}
	assert_int_equal(sc_put(st, &f->cl, &t, 4, 7, 4, (int64_t[]){ a, b }, 2, "p"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_FULL);
	assert_int_equal(t.puts[1].result, QUEUE_PUT_STORED);
	/* A retransmission of a stored one is still DUPLICATE, not FULL. */
	assert_int_equal(sc_put(st, &f->cl, &t, 9, 7, 2, (int64_t[]){ a }, 1, "p"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(t.puts[0].server_id, 2);

	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 0, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(t.req.rows[i].server_id, i + 1);
	queue_rows_free(t.req.rows, t.req.nrows);

	assert_int_equal(sc_del(st, &f->cl, a, &first, 1), 1);
	assert_int_equal(sc_put(st, &f->cl, &t, 5, 7, 5, (int64_t[]){ a }, 1, "p"), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[0].seq, 4);
	assert_int_equal(
		th_pg_int(f->conn, "SELECT pending FROM devices WHERE id = %lld", (long long)a), 3);
	queue_store_stop(st);
}

/* A receipt PUT for @rcpt: peer @peer read (kind 2) or received (1) the
 * messages of sending device @dev whose client ids are @ids (one byte each). */
static void receipt_init(struct sc_treq *t, struct sc_client *cl, uint64_t server_id,
			 const char *peer, int64_t dev, int kind, int64_t rcpt, const char *ids,
			 size_t len)
{
	sc_put_init(t, cl, server_id, dev, (uint64_t)kind, &rcpt, 1, "");
	t->req.sender_user = peer;
	t->req.kind = QUEUE_KIND_RECEIPT;
	memcpy(t->payload, ids, len);
	t->req.len = len;
}

/* Receipts coalesce in storage: one row per (device, peer, sending device,
 * kind) while it fits, moved to the end with the newest server id. */
static void test_receipts_merge(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t a = device_new(f->conn);
	static struct sc_treq p[4];
	struct sc_treq t;
	static char big[510];
	uint64_t id;
	unsigned base;

	st = start(&o);
	assert_int_equal(sc_put(st, &f->cl, &t, 1, 7, 1, (int64_t[]){ a }, 1, "m1"), FERRY_OK);
	receipt_init(&t, &f->cl, 100, "carol", 7, 2, a, "\x01\x02", 2);
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(t.puts[0].seq, 2);
	/* One batch: a message, a receipt merged into the row above, a receipt
	 * of the other kind (a row of its own), another peer's (also). */
	base = f->cl.replies;
	sc_put_init(&p[0], &f->cl, 2, 7, 2, (int64_t[]){ a }, 1, "m2");
	receipt_init(&p[1], &f->cl, 101, "carol", 7, 2, a, "\x03", 1);
	receipt_init(&p[2], &f->cl, 102, "carol", 7, 1, a, "\x05", 1);
	receipt_init(&p[3], &f->cl, 103, "dave", 7, 2, a, "\x01", 1);
	for (int i = 0; i < 4; i++)
		queue_store_submit(st, &p[i].req);
	assert_true(sc_client_wait(&f->cl, base + 4, WAIT_MS));
	for (int i = 0; i < 4; i++) {
		assert_int_equal(p[i].req.rc, FERRY_OK);
		assert_int_equal(p[i].puts[0].result, QUEUE_PUT_STORED);
		assert_int_equal(p[i].puts[0].server_id, 2 + (i ? 99u + (unsigned)i - 1 : 0));
	}
	/* The message keeps its place; the merged receipt moves to the end. */
	assert_int_equal(p[0].puts[0].seq, 3);
	assert_int_equal(p[1].puts[0].seq, 4);
	assert_int_equal(p[2].puts[0].seq, 5);
	assert_int_equal(p[3].puts[0].seq, 6);
	assert_int_equal(sc_count(st, &f->cl, a), 5);

	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 0, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 5);
	assert_int_equal(t.req.rows[0].kind, QUEUE_KIND_MESSAGE);
	assert_int_equal(t.req.rows[1].kind, QUEUE_KIND_MESSAGE);
	assert_int_equal(t.req.rows[2].kind, QUEUE_KIND_RECEIPT);
	assert_int_equal(t.req.rows[2].seq, 4);
	assert_int_equal(t.req.rows[2].server_id, 101);
	assert_string_equal(t.req.rows[2].sender_user, "carol");
	assert_int_equal(t.req.rows[2].sender_device, 7);
	assert_int_equal(t.req.rows[2].client_id, 2);
	assert_int_equal(t.req.rows[2].len, 3);
	assert_memory_equal(t.req.rows[2].payload, "\x01\x02\x03", 3);
	assert_int_equal(t.req.rows[3].client_id, 1);
	assert_string_equal(t.req.rows[4].sender_user, "dave");
	queue_rows_free(t.req.rows, t.req.nrows);

	/* The late ack of the row's first server id deletes nothing. */
	id = 100;
	assert_int_equal(sc_del(st, &f->cl, a, &id, 1), 0);
	id = 101;
	assert_int_equal(sc_del(st, &f->cl, a, &id, 1), 1);
	assert_int_equal(sc_count(st, &f->cl, a), 4);

	/* Past 512 bytes of ids a new row starts. */
	memset(big, 0x7f, sizeof(big));
	receipt_init(&t, &f->cl, 200, "erin", 7, 2, a, big, sizeof(big));
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	receipt_init(&t, &f->cl, 201, "erin", 7, 2, a, "\x01\x02\x03", 3);
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
	receipt_init(&t, &f->cl, 202, "erin", 7, 2, a, "\x04\x05", 2);
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	assert_int_equal(
		th_pg_int(f->conn,
			  "SELECT count(*) * 1000 + max(octet_length(payload)) FROM envelopes "
			  "WHERE recipient_device = %lld AND sender_user = 'erin'",
			  (long long)a),
		2510);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT octet_length(payload) FROM envelopes "
				   "WHERE recipient_device = %lld AND server_id = 202",
				   (long long)a),
			 5);
	/* A receipt for an unknown device is GONE. */
	receipt_init(&t, &f->cl, 300, "erin", 7, 2, 987654321, "\x01", 1);
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_GONE);
	assert_int_equal(
		th_pg_int(f->conn, "SELECT pending FROM devices WHERE id = %lld", (long long)a), 6);
	queue_store_stop(st);
}

/* A deleted or unknown device: GONE, the others still stored. */
static void test_gone(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t a = device_new(f->conn), b = device_new(f->conn);
	char sql[128];
	struct sc_treq t;

	snprintf(sql, sizeof(sql), "DELETE FROM devices WHERE id = %lld", (long long)a);
	PQclear(th_pg_exec(f->conn, sql));
	assert_int_equal(sc_put(st, &f->cl, &t, 1, 7, 1, (int64_t[]){ a, 987654321, b }, 3, "g"),
			 FERRY_OK);
	assert_int_equal(t.puts[0].result, QUEUE_PUT_GONE);
	assert_int_equal(t.puts[1].result, QUEUE_PUT_GONE);
	assert_int_equal(t.puts[2].result, QUEUE_PUT_STORED);
	assert_int_equal(sc_count(st, &f->cl, a), 0);
	assert_int_equal(sc_del(st, &f->cl, a, (uint64_t[]){ 1 }, 1), 0);
	queue_store_stop(st);
}

/*
 * Devices deleted through the registry while batches store envelopes for
 * them: each device's answers are STORED, then GONE for good, and none of
 * its envelopes is left (sql/0003_cheaper_rows.sql: no foreign key, the
 * deletion removes them itself).
 */
static void test_delete_while_storing(void **state)
{
	enum { N = 1500, DOOMED = SC_MAX_RCPT - 1 };
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	struct queue_registry *reg = queue_registry_new(f->conninfo, 5, 1);
	struct sc_treq *t = calloc(N, sizeof(*t));
	int64_t rcpt[SC_MAX_RCPT];
	unsigned base = f->cl.replies;

	assert_non_null(reg);
	assert_non_null(t);
	for (int d = 0; d < SC_MAX_RCPT; d++)
		rcpt[d] = device_new(f->conn);
	for (int i = 0; i < N; i++) {
		sc_put_init(&t[i], &f->cl, (uint64_t)i + 1, 9, (uint64_t)i + 1, rcpt, SC_MAX_RCPT,
			    "x");
		queue_store_submit(st, &t[i].req);
		/* The doomed devices go one after another, batches in flight. */
		if (i % 400 == 399 && i / 400 < DOOMED)
			assert_int_equal(queue_device_delete(reg, rcpt[i / 400]), FERRY_OK);
		if (i % 100 == 99)
			assert_true(sc_client_wait(&f->cl, base + (unsigned)i + 1 - 50, WAIT_MS));
	}
	assert_true(sc_client_wait(&f->cl, base + N, 60000));
	for (int d = 0; d < DOOMED; d++) {
		int gone = 0;

		for (int i = 0; i < N; i++) {
			assert_int_equal(t[i].req.rc, FERRY_OK);
			if (t[i].puts[d].result == QUEUE_PUT_GONE)
				gone = 1;
			else
				assert_true(!gone && t[i].puts[d].result == QUEUE_PUT_STORED);
		}
		assert_true(gone);
		assert_int_equal(
			th_pg_int(f->conn,
				  "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				  (long long)rcpt[d]),
			0);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(t[i].puts[DOOMED].result, QUEUE_PUT_STORED);
	assert_int_equal(th_pg_int(f->conn, "SELECT count(*) FROM envelopes"), N);
	assert_int_equal(th_pg_int(f->conn, "SELECT pending FROM devices WHERE id = %lld",
				   (long long)rcpt[DOOMED]),
			 N);
	free(t);
	queue_registry_free(reg);
	queue_store_stop(st);
}

/* TTL: an expired envelope is never fetched; the sweep deletes and counts it. */
static void test_ttl(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t a = device_new(f->conn);
	struct queue_store_stats s;
	struct sc_treq t;
	uint64_t end;

	sc_put_init(&t, &f->cl, 1, 7, 1, (int64_t[]){ a }, 1, "short");
	t.req.created_ms = 0;
	t.req.ttl = 1;
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	sc_put_init(&t, &f->cl, 2, 7, 2, (int64_t[]){ a }, 1, "long");
	t.req.ttl = 1000000; /* capped at default_ttl */
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_OK);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT extract(epoch FROM expires - created)::bigint FROM "
				   "envelopes WHERE server_id = 2"),
			 3600);
	usleep(2100 * 1000);
	assert_int_equal(sc_fetch(st, &f->cl, &t, a, 0, 10), FERRY_OK);
	assert_int_equal(t.req.nrows, 1);
	assert_int_equal(t.req.rows[0].server_id, 2);
	queue_rows_free(t.req.rows, t.req.nrows);

	end = sc_now_ms() + 5000;
	do {
		usleep(20000);
		queue_store_stats(st, &s);
	} while (s.expired_rows < 1 && sc_now_ms() < end);
	assert_int_equal(s.expired_rows, 1);
	assert_true(s.expire_sweeps >= 1);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				   (long long)a),
			 1);
	assert_int_equal(sc_count(st, &f->cl, a), 1);
	queue_store_stop(st);
}

/* The sweep deletes in bounded batches and goes on while a batch was full. */
static void test_expire_batches(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t a = device_new(f->conn), b = device_new(f->conn);
	struct queue_store_stats s;
	uint64_t end;

	/* 250 rows already expired, 5 not, as if written long ago. */
	PQclear(th_pg_exec(f->conn, "INSERT INTO envelopes (recipient_device, seq, server_id, "
				    "sender_user, sender_device, client_id, kind, payload, "
				    "created, expires) SELECT CASE WHEN g % 2 = 0 THEN "
				    "(SELECT min(id) FROM devices) ELSE (SELECT max(id) FROM "
				    "devices) END, g, g, 'bob', 7, g, 'message', '\\x00', "
				    "now() - interval '1 hour', now() - interval '1 minute' + "
				    "CASE WHEN g > 250 THEN interval '1 day' ELSE interval '0' "
				    "END FROM generate_series(1, 255) g"));
	PQclear(th_pg_exec(f->conn, "UPDATE devices SET pending = (SELECT count(*) FROM "
				    "envelopes WHERE recipient_device = devices.id)"));
	o.expire_batch = 100;
	o.expire_interval = 50;
	st = start(&o);
	end = sc_now_ms() + 5000;
	do {
		usleep(20000);
		queue_store_stats(st, &s);
	} while (s.expired_rows < 250 && sc_now_ms() < end);
	assert_int_equal(s.expired_rows, 250);
	assert_true(s.expire_sweeps >= 3);
	assert_int_equal(th_pg_int(f->conn, "SELECT count(*) FROM envelopes"), 5);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT sum(pending) FROM devices WHERE id IN "
				   "(%lld, %lld)",
				   (long long)a, (long long)b),
			 5);
	queue_store_stop(st);
}

/* Within one batch: repeats, a device twice in one PUT, FULL, GONE. */
static void test_batch_semantics(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t a = device_new(f->conn), b = device_new(f->conn);
	static struct sc_treq p[7];
	unsigned base = f->cl.replies;

	o.max_pending_per_device = 3;
	st = start(&o);
	sc_put_init(&p[0], &f->cl, 10, 7, 1, (int64_t[]){ a }, 1, "p0");
	sc_put_init(&p[1], &f->cl, 11, 7, 1, (int64_t[]){ a }, 1, "p1");
	sc_put_init(&p[2], &f->cl, 12, 7, 2, (int64_t[]){ a, a }, 2, "p2");
	sc_put_init(&p[3], &f->cl, 13, 7, 3, (int64_t[]){ a, 987654321 }, 2, "p3");
	sc_put_init(&p[4], &f->cl, 14, 7, 4, (int64_t[]){ a }, 1, "p4");
	sc_put_init(&p[5], &f->cl, 15, 7, 4, (int64_t[]){ b, a }, 2, "p5");
	sc_put_init(&p[6], &f->cl, 16, 7, 4, (int64_t[]){ a }, 1, "p6");
	for (int i = 0; i < 7; i++)
		queue_store_submit(st, &p[i].req);
	assert_true(sc_client_wait(&f->cl, base + 7, WAIT_MS));
	for (int i = 0; i < 7; i++)
		assert_int_equal(p[i].req.rc, FERRY_OK);
	assert_int_equal(p[0].puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(p[0].puts[0].seq, 1);
	assert_int_equal(p[1].puts[0].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(p[1].puts[0].server_id, 10);
	assert_int_equal(p[1].puts[0].seq, 1);
	assert_int_equal(p[2].puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(p[2].puts[0].seq, 2);
	assert_int_equal(p[2].puts[1].result, QUEUE_PUT_DUPLICATE);
	assert_int_equal(p[2].puts[1].server_id, 12);
	assert_int_equal(p[3].puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(p[3].puts[0].seq, 3);
	assert_int_equal(p[3].puts[1].result, QUEUE_PUT_GONE);
	assert_int_equal(p[4].puts[0].result, QUEUE_PUT_FULL);
	assert_int_equal(p[5].puts[0].result, QUEUE_PUT_STORED);
	assert_int_equal(p[5].puts[0].seq, 1);
	assert_int_equal(p[5].puts[1].result, QUEUE_PUT_FULL);
	/* The same (sender device, client id) as p5: b has it, a was full. */
	assert_int_equal(p[6].puts[0].result, QUEUE_PUT_FULL);
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT next_seq * 100 + pending FROM devices "
				   "WHERE id = %lld",
				   (long long)a),
			 403);
	assert_int_equal(sc_count(st, &f->cl, b), 1);
	queue_store_stop(st);
}

/* PUTs on the writer while a reader drains and deletes the same devices:
 * no deadlock, no failure, every envelope once and in order, counters
 * consistent afterwards. */
struct drain_sender {
	struct queue_store *st;
	const int64_t *devs;
	struct sc_treq *reqs;
	int n, ok;
};

static void *drain_sender_main(void *arg)
{
	struct drain_sender *s = arg;
	struct sc_client cl;

	sc_client_init(&cl);
	for (int i = 0; i < s->n; i++) {
		int64_t rcpt[2] = { s->devs[i % 4], s->devs[(i + 1) % 4] };

		sc_put_init(&s->reqs[i], &cl, (uint64_t)i + 1, 9, (uint64_t)i + 1, rcpt, 2, "d");
		queue_store_submit(s->st, &s->reqs[i].req);
		if (i % 100 == 99)
			sc_client_wait(&cl, (unsigned)i + 1 - 50, WAIT_MS);
	}
	s->ok = sc_client_wait(&cl, (unsigned)s->n, 60000);
	for (int i = 0; i < s->n && s->ok; i++)
		s->ok = s->reqs[i].req.rc == FERRY_OK &&
			s->reqs[i].puts[0].result == QUEUE_PUT_STORED &&
			s->reqs[i].puts[1].result == QUEUE_PUT_STORED;
	sc_client_release(&cl);
	return NULL;
}

/* One FETCH of device @d after *last, then DELETE of what came; returns
 * how many rows came. */
static size_t drain_once(struct queue_store *st, struct sc_client *cl, int64_t d, int64_t *last)
{
	struct sc_treq t;
	uint64_t ids[100];
	size_t n;

	assert_int_equal(sc_fetch(st, cl, &t, d, *last, 100), FERRY_OK);
	n = t.req.nrows;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(t.req.rows[i].seq, *last + 1);
		*last = t.req.rows[i].seq;
		ids[i] = t.req.rows[i].server_id;
	}
	queue_rows_free(t.req.rows, t.req.nrows);
	if (n)
		assert_int_equal(sc_del(st, cl, d, ids, n), n);
	return n;
}

static void test_put_while_draining(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t devs[4], last[4] = { 0 };
	struct drain_sender s;
	struct queue_store_stats stats;
	pthread_t th;
	size_t got = 0;
	uint64_t end;

	o.expire_interval = 10;
	st = start(&o);
	for (int d = 0; d < 4; d++)
		devs[d] = device_new(f->conn);
	s = (struct drain_sender){ .st = st, .devs = devs, .n = 3000 };
	s.reqs = calloc((size_t)s.n, sizeof(struct sc_treq));
	assert_non_null(s.reqs);
	assert_int_equal(pthread_create(&th, NULL, drain_sender_main, &s), 0);
	end = sc_now_ms() + 60000;
	while (got < (size_t)s.n * 2 && sc_now_ms() < end)
		for (int d = 0; d < 4; d++)
			got += drain_once(st, &f->cl, devs[d], &last[d]);
	pthread_join(th, NULL);
	assert_true(s.ok);
	assert_int_equal(got, s.n * 2);
	assert_int_equal(th_pg_int(f->conn, "SELECT count(*) FROM envelopes"), 0);
	assert_int_equal(th_pg_int(f->conn, "SELECT sum(pending) FROM devices"), 0);
	for (int d = 0; d < 4; d++)
		assert_int_equal(last[d], s.n / 2);
	queue_store_stats(st, &stats);
	assert_int_equal(stats.batch_failures, 0);
	assert_int_equal(stats.read_failures, 0);
	free(s.reqs);
	queue_store_stop(st);
}

/* ---- many PUTs from several threads ---- */

#define THREADS 4
#define PER_THREAD 2500
#define NDEV 4

struct sender {
	pthread_t thread;
	int idx;
	struct queue_store *st;
	const int64_t *devs;
	struct sc_treq *reqs;
	int ok; /* every reply OK and STORED */
	char why[160];
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct sc_client cl;

	sc_client_init(&cl);
	for (int i = 0; i < PER_THREAD; i++) {
		int64_t rcpt[2] = { s->devs[i % NDEV], s->devs[(i + 1 + s->idx) % NDEV] };
		uint64_t id = (uint64_t)s->idx * 1000000 + (uint64_t)i + 1;

		sc_put_init(&s->reqs[i], &cl, id, 100 + s->idx, id, rcpt,
			    rcpt[0] == rcpt[1] ? 1 : 2,
			    "0123456789012345678901234567890123456789012345678901234567890123456789"
			    "012345678901234567890123456789");
		queue_store_submit(s->st, &s->reqs[i].req);
	}
	s->ok = sc_client_wait(&cl, PER_THREAD, 60000);
	if (!s->ok)
		snprintf(s->why, sizeof(s->why), "thread %d: %u of %d replies", s->idx, cl.replies,
			 PER_THREAD);
	for (int i = 0; i < PER_THREAD && s->ok; i++) {
		struct sc_treq *t = &s->reqs[i];

		for (size_t k = 0; k < t->req.nputs && s->ok; k++)
			if (t->req.rc != FERRY_OK || t->puts[k].result != QUEUE_PUT_STORED) {
				s->ok = 0;
				snprintf(s->why, sizeof(s->why),
					 "thread %d put %d: rc %d result %d", s->idx, i,
					 (int)t->req.rc, (int)t->puts[k].result);
			}
	}
	sc_client_release(&cl);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Per sender and device, the sequence grows in submission order. */
static void check_order(const struct sender *s, const int64_t *devs)
{
	for (int d = 0; d < NDEV; d++) {
		int64_t last = 0;

		for (int i = 0; i < PER_THREAD; i++)
			for (size_t k = 0; k < s->reqs[i].req.nputs; k++)
				if (s->reqs[i].puts[k].recipient == devs[d]) {
					assert_true(s->reqs[i].puts[k].seq > last);
					last = s->reqs[i].puts[k].seq;
				}
	}
}

/* Across senders, a device's sequence numbers are 1..n without a gap. */
static void check_dense(const struct sender *senders, const int64_t *devs)
{
	static int64_t seqs[THREADS * PER_THREAD * 2];

	for (int d = 0; d < NDEV; d++) {
		size_t n = 0;

		for (int s = 0; s < THREADS; s++)
			for (int i = 0; i < PER_THREAD; i++)
				for (size_t k = 0; k < senders[s].reqs[i].req.nputs; k++)
					if (senders[s].reqs[i].puts[k].recipient == devs[d])
						seqs[n++] = senders[s].reqs[i].puts[k].seq;
		qsort(seqs, n, sizeof(seqs[0]), cmp_i64);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(seqs[i], (int64_t)i + 1);
	}
}

/* How many writers' parts @req becomes (device id modulo @writers). */
static size_t parts_of(const struct queue_req *req, unsigned writers)
{
	size_t n = 0;

	for (size_t i = 0; i < req->nputs; i++) {
		size_t k = 0;

		while (k < i && (uint64_t)req->puts[k].recipient % writers !=
					(uint64_t)req->puts[i].recipient % writers)
			k++;
		n += k == i;
	}
	return n;
}

/* Senders on threads, each PUT for two devices (on two writers, mostly). */
static void concurrent_puts(struct fixture *f, unsigned connections, unsigned writers)
{
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	struct sender senders[THREADS];
	int64_t devs[NDEV];
	struct queue_store_stats s;
	uint64_t t0, ms, envelopes = 0, parts = 0;

	o.batch_max = 1000;
	o.connections = connections;
	o.writers = writers;
	st = start(&o);
	for (int d = 0; d < NDEV; d++)
		devs[d] = device_new(f->conn);
	t0 = sc_now_ms();
	for (int i = 0; i < THREADS; i++) {
		senders[i] = (struct sender){ .idx = i, .st = st, .devs = devs };
		senders[i].reqs = calloc(PER_THREAD, sizeof(struct sc_treq));
		assert_non_null(senders[i].reqs);
		assert_int_equal(pthread_create(&senders[i].thread, NULL, sender_main, &senders[i]),
				 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(senders[i].thread, NULL);
	ms = sc_now_ms() - t0;
	for (int i = 0; i < THREADS; i++)
		if (!senders[i].ok)
			fail_msg("%s", senders[i].why);
	for (int i = 0; i < THREADS; i++) {
		check_order(&senders[i], devs);
		for (int k = 0; k < PER_THREAD; k++) {
			envelopes += senders[i].reqs[k].req.nputs;
			parts += parts_of(&senders[i].reqs[k].req, writers);
		}
	}
	check_dense(senders, devs);
	queue_store_stats(st, &s);
	assert_int_equal(s.puts, THREADS * PER_THREAD);
	assert_int_equal(s.batch_puts, parts);
	if (writers > 1)
		assert_true(parts > THREADS * PER_THREAD);
	assert_int_equal(s.put_stored, envelopes);
	assert_true(s.batches < THREADS * PER_THREAD);
	assert_int_equal(s.inflight_bytes, 0);
	assert_int_equal(th_pg_int(f->conn, "SELECT count(*) FROM envelopes"),
			 (long long)envelopes);
	fprintf(stderr,
		"store, %u writers: %d puts (%llu envelopes) in %llu ms: %.0f puts/s, %.0f "
		"envelopes/s; %llu batches (%.1f puts, largest %llu envelopes), commit avg %.2f "
		"ms max %.2f ms\n",
		writers, THREADS * PER_THREAD, (unsigned long long)envelopes,
		(unsigned long long)ms, THREADS * PER_THREAD * 1000.0 / (double)(ms ? ms : 1),
		(double)envelopes * 1000.0 / (double)(ms ? ms : 1), (unsigned long long)s.batches,
		(double)s.batch_puts / (double)s.batches, (unsigned long long)s.batch_largest,
		(double)s.commit_us_total / (double)s.batches / 1000.0,
		(double)s.commit_us_max / 1000.0);
	for (int i = 0; i < THREADS; i++)
		free(senders[i].reqs);
	queue_store_stop(st);
}

static void test_concurrent_puts(void **state)
{
	struct fixture *f = *state;

	/* One writer; the default (two writers of three connections); three. */
	concurrent_puts(f, 3, 1);
	PQclear(th_pg_exec(f->conn, "DELETE FROM envelopes"));
	PQclear(th_pg_exec(f->conn, "DELETE FROM devices"));
	concurrent_puts(f, 3, 2);
	PQclear(th_pg_exec(f->conn, "DELETE FROM envelopes"));
	PQclear(th_pg_exec(f->conn, "DELETE FROM devices"));
	concurrent_puts(f, 4, 3);
}

/* ---- failures ---- */

/* No database: not ready, every request answered EUNAVAIL at once. */
static void test_unreachable(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for("host=/nonexistent dbname=x");
	char err[256];
	struct queue_store *st;
	struct sc_treq t;
	uint64_t t0;

	o.connect_timeout = 1;
	st = queue_store_start(&o, err, sizeof(err));
	assert_non_null(st);
	usleep(300 * 1000);
	assert_int_equal(queue_store_ready(st), 0);
	t0 = sc_now_ms();
	assert_int_equal(sc_put(st, &f->cl, &t, 1, 7, 1, (int64_t[]){ 1 }, 1, "x"), FERRY_EUNAVAIL);
	assert_int_equal(sc_fetch(st, &f->cl, &t, 1, 0, 10), FERRY_EUNAVAIL);
	assert_null(t.req.rows);
	sc_treq_init(&t, &f->cl, QUEUE_REQ_COUNT);
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_EUNAVAIL);
	sc_treq_init(&t, &f->cl, QUEUE_REQ_BARRIER);
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_EUNAVAIL);
	assert_true(sc_now_ms() - t0 < 1000);
	queue_store_stop(st);

	/* Bad options are refused with a reason. */
	o.connections = 1;
	assert_null(queue_store_start(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "connections"));
	o.connections = 3;
	o.writers = 3;
	assert_null(queue_store_start(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "writers"));
}

/* The database drops the store's connections: it reconnects by itself. */
static void test_reconnect(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t a = device_new(f->conn);
	struct queue_store_stats s;
	struct sc_treq t;
	uint64_t end, id = 1;
	enum ferry_err rc;

	assert_int_equal(sc_put(st, &f->cl, &t, id, 7, id, (int64_t[]){ a }, 1, "r"), FERRY_OK);
	id++;
	PQclear(th_pg_exec(f->conn,
			   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
			   "application_name = 'ferryd-store' AND datname = current_database()"));
	end = sc_now_ms() + 10000;
	do {
		rc = sc_put(st, &f->cl, &t, id, 7, id, (int64_t[]){ a }, 1, "r");
		if (rc == FERRY_OK) {
			assert_int_equal(t.puts[0].result, QUEUE_PUT_STORED);
		} else {
			assert_int_equal(rc, FERRY_EUNAVAIL);
			usleep(20000);
		}
		id++;
	} while (rc != FERRY_OK && sc_now_ms() < end);
	assert_int_equal(rc, FERRY_OK);
	/* Every connection comes back: three at start, three again. */
	end = sc_now_ms() + 10000;
	do {
		usleep(10000);
		queue_store_stats(st, &s);
	} while (s.connects < 6 && sc_now_ms() < end);
	assert_true(s.connects >= 6);
	assert_true(queue_store_ready(st));
	assert_int_equal(sc_count(st, &f->cl, a), 2);
	assert_true(s.connect_failures >= 3);
	queue_store_stop(st);
}

/* max_inflight_bytes: over it, ELIMIT at once; nothing else is lost. */
static void test_inflight_limit(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t a = device_new(f->conn);
	static struct sc_treq many[50];
	struct queue_store_stats s;
	struct sc_treq t;
	unsigned stored = 0, limited = 0, base;

	o.max_inflight_bytes = 100;
	st = start(&o);
	sc_put_init(&t, &f->cl, 1, 7, 1, (int64_t[]){ a }, 1, "x");
	t.req.len = 101;
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_ELIMIT);

	base = f->cl.replies;
	for (int i = 0; i < 50; i++) {
		sc_put_init(&many[i], &f->cl, 10 + i, 7, 10 + i, (int64_t[]){ a }, 1, "y");
		many[i].req.len = 60;
		queue_store_submit(st, &many[i].req);
	}
	assert_true(sc_client_wait(&f->cl, base + 50, WAIT_MS));
	for (int i = 0; i < 50; i++) {
		if (many[i].req.rc == FERRY_OK && many[i].puts[0].result == QUEUE_PUT_STORED)
			stored++;
		else if (many[i].req.rc == FERRY_ELIMIT)
			limited++;
	}
	assert_int_equal(stored + limited, 50);
	assert_true(stored >= 1);
	assert_true(limited >= 1);
	assert_int_equal(sc_count(st, &f->cl, a), stored);
	queue_store_stats(st, &s);
	assert_int_equal(s.put_limit, limited + 1);
	assert_int_equal(s.inflight_bytes, 0);
	queue_store_stop(st);
}

/* Invalid PUTs are refused alone; a PUT the database rejects fails alone. */
static void test_invalid_and_isolation(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st = start(&o);
	int64_t a = device_new(f->conn);
	static struct sc_treq many[11];
	struct sc_treq t;
	unsigned base;

	sc_put_init(&t, &f->cl, 1, 7, 1, (int64_t[]){ a }, 1, "x");
	t.req.sender_user = "not valid";
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_EINVAL);
	sc_put_init(&t, &f->cl, 1, 7, 1, (int64_t[]){ a }, 1, "x");
	t.req.kind = 3;
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_EINVAL);
	sc_put_init(&t, &f->cl, 1, 7, 1, (int64_t[]){ a }, 0, "x");
	assert_int_equal(sc_run_req(st, &f->cl, &t), FERRY_EINVAL);

	/* The 6th has a creation time PostgreSQL cannot represent: its batch
	 * fails, its neighbours are retried alone and stored. */
	base = f->cl.replies;
	for (int i = 0; i < 11; i++) {
		sc_put_init(&many[i], &f->cl, 100 + i, 7, 100 + i, (int64_t[]){ a }, 1, "z");
		if (i == 5)
			many[i].req.created_ms = 1ULL << 62;
		queue_store_submit(st, &many[i].req);
	}
	assert_true(sc_client_wait(&f->cl, base + 11, WAIT_MS));
	for (int i = 0; i < 11; i++) {
		if (i == 5) {
			assert_int_equal(many[i].req.rc, FERRY_EDB);
			continue;
		}
		assert_int_equal(many[i].req.rc, FERRY_OK);
		assert_int_equal(many[i].puts[0].result, QUEUE_PUT_STORED);
	}
	assert_int_equal(sc_count(st, &f->cl, a), 10);
	/* The writer goes on normally. */
	assert_int_equal(sc_put(st, &f->cl, &t, 200, 7, 200, (int64_t[]){ a }, 1, "x"), FERRY_OK);
	assert_int_equal(t.puts[0].seq, 11);
	queue_store_stop(st);
}

/* Stop: every request is answered once; what was answered OK is stored. */
static void test_stop_answers_everything(void **state)
{
	struct fixture *f = *state;
	struct queue_store_opts o = opts_for(f->conninfo);
	struct queue_store *st;
	int64_t a = device_new(f->conn);
	static struct sc_treq many[1000];
	unsigned base = f->cl.replies, ok = 0;

	o.batch_max = 50;
	st = start(&o);
	for (int i = 0; i < 1000; i++) {
		sc_put_init(&many[i], &f->cl, 1 + i, 7, 1 + i, (int64_t[]){ a }, 1, "s");
		queue_store_submit(st, &many[i].req);
	}
	queue_store_stop(st);
	assert_true(sc_client_wait(&f->cl, base + 1000, WAIT_MS));
	/* No reply twice: the loop drained everything, nothing more arrives. */
	uv_run(&f->cl.loop, UV_RUN_NOWAIT);
	assert_int_equal(f->cl.replies, base + 1000);
	for (int i = 0; i < 1000; i++) {
		assert_true(many[i].req.rc == FERRY_OK || many[i].req.rc == FERRY_EUNAVAIL);
		ok += many[i].req.rc == FERRY_OK;
	}
	assert_int_equal(th_pg_int(f->conn,
				   "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				   (long long)a),
			 ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_fetch_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_barrier, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_results, setup, teardown),
		cmocka_unit_test_setup_teardown(test_barrier_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_part_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receipts_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_while_storing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_puts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_put_while_draining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_and_isolation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_answers_everything, setup, teardown),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL) ? 1 : 0;
}
