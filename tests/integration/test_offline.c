/*
 * test_offline.c - offline delivery end to end: a running ferryd wired to its
 * offline store, real PostgreSQL, devices speaking the protocol by hand
 * (rawdev).
 *
 * What is checked, per recipient device: a SEND to it while it is offline,
 * or that it does not acknowledge in time, is answered ACK(stored) only once
 * its row committed; on connecting the
 * device gets WELCOME with the number waiting, the stored envelopes oldest
 * first within the drain window, QUEUE_EMPTY, then live traffic, and nothing
 * overtakes the backlog; DELIVER_ACKs delete the rows; an unacknowledged live
 * DELIVER comes back from the store; TTL expiry, per-device limits, dedup
 * across a restart; a database that goes away and comes back.
 *
 * Every test runs its own ferryd on a database of its own (the config can
 * differ per test, and a failure leaves nothing behind for the next test).
 * Cast: user alice with device A1 (offline unless a test says otherwise),
 * user bob with device B1, the sender. Client ids are 1, 2, 3, ... per test;
 * envelope N carries the payload "env-N".
 *
 * No timing assertions: waits are generous deadlines, and a check that
 * nothing more arrives waits SILENCE_MS, which can only make a broken server
 * pass, never a correct one fail.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "offline-test-token"
#define ACK_TIMEOUT_MS 1000
#define WINDOW 16
#define DEFAULT_TTL 3600
/* Deadline for anything the server must do. */
#define WAIT_MS 10000
/* How long "nothing more comes" is watched. */
#define SILENCE_MS 300
#define MAX_ENV 512

/* Per-test daemon settings (cmocka prestate). */
struct params {
	unsigned window;      /* [gateway] drain_window; 0: WINDOW */
	unsigned max_pending; /* [store] max_pending_per_device; 0: the default */
};

static const struct params defaults = { 0, 0 };
static const struct params small_window = { 8, 0 };
static const struct params three_max = { 0, 3 };

struct fixture {
	char *conninfo;
	char *config;
	struct th_ferryd d;
	int port, admin_port;
	unsigned window;
	PGconn *pg;
	int passed; /* the test got to its end */
	int64_t a1, b1;
	char a1s[64], b1s[64];
};

static struct fixture fx;

static void wait_ready(void);

static char *config_for(const struct params *p)
{
	char extra[1024], store_extra[128] = "";

	if (p->max_pending)
		snprintf(store_extra, sizeof(store_extra), "max_pending_per_device = %u\n",
			 p->max_pending);
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\nack_timeout = %d\n"
		 "drain_window = %u\nhandshake_timeout = 5000\n\n"
		 "[store]\nconnect_timeout = 2\ndefault_ttl = %d\nexpire_interval = 200\n%s\n"
		 /* Its raw devices do not take receipts (tests/integration/test_receipts.c). */
		 "[receipts]\ndelivered = off\n",
		 fx.port, ACK_TIMEOUT_MS, fx.window, DEFAULT_TTL, store_extra);
	return th_ferryd_config_ex(fx.conninfo, fx.admin_port, TOKEN, extra);
}

static int setup(void **state)
{
	const struct params *p = *state;
	char *path, *out;
	int status;

	memset(&fx, 0, sizeof(fx));
	fx.window = p->window ? p->window : WINDOW;
	fx.conninfo = th_db_new("offline");
	fx.port = th_free_port();
	fx.admin_port = th_free_port();
	fx.config = config_for(p);
	path = th_write_file("offline.ini", fx.config);
	status = th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, &out);
	unlink(path);
	free(path);
	if (status != 0) {
		fprintf(stderr, "ferryd migrate failed (status %d):\n%s", status, out);
		free(out);
		return -1;
	}
	free(out);
	th_ferryd_start(&fx.d, fx.config, fx.admin_port);
	wait_ready();
	th_device_create(&fx.d, TOKEN, "alice", &fx.a1, fx.a1s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.b1, fx.b1s);
	fx.pg = th_pg_connect(fx.conninfo);
	return 0;
}

static int teardown(void **state)
{
	int status;

	/* A failed test shows what the daemon said (a failed stop shows it
	 * anyway). */
	if (!fx.passed && fx.d.log_path) {
		char *log = th_read_file(fx.d.log_path);

		fprintf(stderr, "---- ferryd log (%s) ----\n%s---- end of log ----\n",
			fx.d.log_path, log);
		free(log);
	}
	status = fx.d.pid > 0 ? th_ferryd_stop(&fx.d, SIGTERM) : 0;

	if (fx.pg)
		PQfinish(fx.pg);
	free(fx.conninfo);
	free(fx.config);
	return status == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void payload_of(uint64_t cid, char out[32])
{
	snprintf(out, 32, "env-%llu", (unsigned long long)cid);
}

/* SEND envelope @cid ("env-CID") to every device of @to, with @ttl seconds. */
static void send_env(struct rawdev *d, uint64_t cid, const char *to, uint64_t ttl)
{
	struct proto_frame f = { .type = PROTO_SEND };
	char text[32];

	payload_of(cid, text);
	f.u.send.client_id = cid;
	f.u.send.to_user.p = (const uint8_t *)to;
	f.u.send.to_user.len = strlen(to);
	f.u.send.ttl = ttl;
	f.u.send.payload.p = (const uint8_t *)text;
	f.u.send.payload.len = strlen(text);
	rawdev_send(d, &f);
}

static void ack_ids(struct rawdev *d, const uint64_t *ids, size_t n)
{
	struct proto_frame f = { .type = PROTO_DELIVER_ACK };

	assert_true(n > 0 && n <= PROTO_MAX_IDS);
	f.u.ids.count = n;
	memcpy(f.u.ids.ids, ids, n * sizeof(*ids));
	rawdev_send(d, &f);
}

/* The answer to the SEND @cid: ACK or NACK (other frames fail the test). */
static const struct proto_frame *expect_answer(struct rawdev *d, uint64_t cid)
{
	int r = rawdev_read(d, WAIT_MS);

	if (r == 0)
		fail_msg("no answer to SEND %llu within %d ms", (unsigned long long)cid, WAIT_MS);
	if (r < 0)
		fail_msg("connection closed while waiting for the answer to SEND %llu",
			 (unsigned long long)cid);
	if (d->f.type == PROTO_ACK) {
		if (d->f.u.ack.client_id != cid)
			fail_msg("expected the answer to SEND %llu, got ACK for %llu",
				 (unsigned long long)cid, (unsigned long long)d->f.u.ack.client_id);
	} else if (d->f.type == PROTO_NACK) {
		if (d->f.u.nack.client_id != cid)
			fail_msg("expected the answer to SEND %llu, got NACK for %llu",
				 (unsigned long long)cid,
				 (unsigned long long)d->f.u.nack.client_id);
	} else {
		fail_msg("expected the answer to SEND %llu, got %s", (unsigned long long)cid,
			 proto_type_name(d->f.type));
	}
	return &d->f;
}

static const char *status_name(unsigned status)
{
	return status == PROTO_ACK_STORED      ? "stored"
	       : status == PROTO_ACK_DELIVERED ? "delivered"
					       : "?";
}

/* Expect ACK @status for @cid; returns its server id. */
static uint64_t expect_ack(struct rawdev *d, uint64_t cid, unsigned status)
{
	const struct proto_frame *f = expect_answer(d, cid);

	if (f->type == PROTO_NACK)
		fail_msg("SEND %llu: expected ACK %s, got NACK %s '%.*s'", (unsigned long long)cid,
			 status_name(status), proto_nack_name(f->u.nack.reason),
			 (int)f->u.nack.text.len, (const char *)f->u.nack.text.p);
	if (f->u.ack.status != status)
		fail_msg("SEND %llu: expected ACK %s, got ACK %s", (unsigned long long)cid,
			 status_name(status), status_name(f->u.ack.status));
	return f->u.ack.server_id;
}

static void expect_nack(struct rawdev *d, uint64_t cid, unsigned reason)
{
	const struct proto_frame *f = expect_answer(d, cid);

	if (f->type == PROTO_ACK)
		fail_msg("SEND %llu: expected NACK %s, got ACK %s", (unsigned long long)cid,
			 proto_nack_name(reason), status_name(f->u.ack.status));
	if (f->u.nack.reason != reason)
		fail_msg("SEND %llu: expected NACK %s, got NACK %s '%.*s'", (unsigned long long)cid,
			 proto_nack_name(reason), proto_nack_name(f->u.nack.reason),
			 (int)f->u.nack.text.len, (const char *)f->u.nack.text.p);
}

/*
 * Answers to SENDs 1..n sent back to back: they may come in any order. A
 * NACK fails the test; status[cid] gets the ACK's status, sid[cid] its id.
 */
struct answers {
	size_t n, got;
	uint64_t sid[MAX_ENV + 1];
	unsigned status[MAX_ENV + 1];
};

static void answers_take(struct answers *a, const struct proto_frame *f)
{
	uint64_t cid;

	if (f->type == PROTO_NACK)
		fail_msg("SEND %llu: NACK %s '%.*s'", (unsigned long long)f->u.nack.client_id,
			 proto_nack_name(f->u.nack.reason), (int)f->u.nack.text.len,
			 (const char *)f->u.nack.text.p);
	if (f->type != PROTO_ACK)
		fail_msg("sender: expected ACK, got %s", proto_type_name(f->type));
	cid = f->u.ack.client_id;
	if (cid < 1 || cid > a->n)
		fail_msg("ACK for a client id never sent: %llu", (unsigned long long)cid);
	if (a->status[cid])
		fail_msg("SEND %llu answered twice", (unsigned long long)cid);
	a->status[cid] = f->u.ack.status;
	a->sid[cid] = f->u.ack.server_id;
	a->got++;
}

/* Read answers until @n SENDs in all are answered. */
static void answers_wait(struct rawdev *d, struct answers *a, size_t n)
{
	while (a->got < n) {
		int r = rawdev_read(d, WAIT_MS);

		if (r <= 0)
			fail_msg("sender: %zu of %zu SENDs answered, then %s", a->got, n,
				 r == 0 ? "nothing" : "the connection closed");
		answers_take(a, &d->f);
	}
}

/* Take whatever answers are already there. */
static void answers_poll(struct rawdev *d, struct answers *a)
{
	while (a->got < a->n && rawdev_read(d, 0) == 1)
		answers_take(a, &d->f);
}

/*
 * What one recipient saw. Envelopes must first arrive in exactly the order
 * of want[] (the order they were accepted in); a copy of one already seen
 * must carry the same server id. Every DELIVER is checked against B1's
 * fields and the "env-N" payload.
 */
struct tracker {
	const uint64_t *want;
	size_t nwant;
	size_t next; /* envelopes seen at least once */
	uint64_t sid[MAX_ENV];
	unsigned copies[MAX_ENV];
	size_t delivers; /* DELIVER frames in all */
	size_t dups;
};

static void tracker_init(struct tracker *t, const uint64_t *want, size_t n)
{
	memset(t, 0, sizeof(*t));
	assert_true(n <= MAX_ENV);
	t->want = want;
	t->nwant = n;
}

/* Check one DELIVER; returns the index in want[] of its envelope. */
static size_t tracker_deliver(struct tracker *t, const struct proto_frame *f)
{
	const struct proto_deliver *dv = &f->u.deliver;
	char text[32];
	size_t i;

	assert_int_equal(f->type, PROTO_DELIVER);
	if (dv->sender_user.len != 3 || memcmp(dv->sender_user.p, "bob", 3) != 0)
		fail_msg("DELIVER from '%.*s', expected bob", (int)dv->sender_user.len,
			 (const char *)dv->sender_user.p);
	assert_int_equal(dv->sender_device, fx.b1);
	assert_true(dv->timestamp > 1700000000000ULL);
	payload_of(dv->client_id, text);
	if (dv->payload.len != strlen(text) || memcmp(dv->payload.p, text, strlen(text)) != 0)
		fail_msg("DELIVER of client id %llu carries '%.*s', expected '%s'",
			 (unsigned long long)dv->client_id, (int)dv->payload.len,
			 (const char *)dv->payload.p, text);
	t->delivers++;
	for (i = 0; i < t->next; i++) {
		if (t->want[i] != dv->client_id)
			continue;
		if (t->sid[i] != dv->server_id)
			fail_msg("client id %llu came again with server id %llu, first with %llu",
				 (unsigned long long)dv->client_id,
				 (unsigned long long)dv->server_id, (unsigned long long)t->sid[i]);
		t->copies[i]++;
		t->dups++;
		return i;
	}
	if (t->next == t->nwant)
		fail_msg("unexpected DELIVER of client id %llu (all %zu expected already seen)",
			 (unsigned long long)dv->client_id, t->nwant);
	if (dv->client_id != t->want[t->next])
		fail_msg("out of order: got client id %llu where %llu was due (after %zu in "
			 "order)",
			 (unsigned long long)dv->client_id, (unsigned long long)t->want[t->next],
			 t->next);
	t->sid[t->next] = dv->server_id;
	t->copies[t->next] = 1;
	return t->next++;
}

static void want_range(uint64_t *want, uint64_t first, size_t n)
{
	for (size_t i = 0; i < n; i++)
		want[i] = first + i;
}

/*
 * After WELCOME: read the catch-up, acking every DELIVER at once, up to and
 * including QUEUE_EMPTY; returns its drained count. Only DELIVERs may come
 * before it, and they are checked by @t.
 */
static uint64_t drain_all(struct rawdev *d, struct tracker *t)
{
	size_t before = t->delivers;

	for (;;) {
		int r = rawdev_read(d, WAIT_MS);

		if (r <= 0)
			fail_msg("catching up: %zu DELIVERs, then %s instead of QUEUE_EMPTY",
				 t->delivers - before,
				 r == 0 ? "nothing" : "the connection closed");
		if (d->f.type == PROTO_QUEUE_EMPTY)
			return d->f.u.drained;
		if (d->f.type != PROTO_DELIVER)
			fail_msg("catching up: expected DELIVER or QUEUE_EMPTY, got %s",
				 proto_type_name(d->f.type));
		tracker_deliver(t, &d->f);
		rawdev_ack(d, d->f.u.deliver.server_id);
	}
}

/* ---- the database ---- */

static long long rows_for(int64_t device)
{
	return th_pg_int(fx.pg, "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
			 (long long)device);
}

static long long pending_of(int64_t device)
{
	return th_pg_int(fx.pg, "SELECT pending FROM devices WHERE id = %lld", (long long)device);
}

/* The server id of @device's row for B1's envelope @cid (0: no such row). */
static uint64_t stored_sid(int64_t device, uint64_t cid)
{
	return (uint64_t)th_pg_int(fx.pg,
				   "SELECT coalesce(max(server_id), 0) FROM envelopes WHERE "
				   "recipient_device = %lld AND sender_device = %lld AND "
				   "client_id = %lld",
				   (long long)device, (long long)fx.b1, (long long)cid);
}

/* Wait until @device has exactly @n rows and its pending counter says @n
 * (deletes are batched, so they land a little after the DELIVER_ACK). */
static void wait_rows(int64_t device, long long n)
{
	uint64_t end = now_ms() + WAIT_MS;
	long long rows, pending;

	for (;;) {
		rows = rows_for(device);
		pending = pending_of(device);
		if (rows == n && pending == n)
			return;
		if (now_ms() > end)
			break;
		sleep_ms(20);
	}
	fail_msg("device %lld: expected %lld stored envelopes, the database has %lld rows and "
		 "pending %lld after %d ms",
		 (long long)device, n, rows, pending, WAIT_MS);
}

/* SEND 1..n to alice (A1 offline): every one ACK(stored); sids in @a. */
static void store_n(struct rawdev *b1, struct answers *a, size_t n)
{
	memset(a, 0, sizeof(*a));
	a->n = n;
	for (uint64_t cid = 1; cid <= n; cid++)
		send_env(b1, cid, "alice", 0);
	answers_wait(b1, a, n);
	for (uint64_t cid = 1; cid <= n; cid++)
		if (a->status[cid] != PROTO_ACK_STORED)
			fail_msg("SEND %llu to an offline device: ACK %s, expected stored",
				 (unsigned long long)cid, status_name(a->status[cid]));
}

/* ---- tests ---- */

/* Offline: ACK(stored) after the commit; WELCOME counts them; they come in
 * order with the sender's server ids, then QUEUE_EMPTY, then live traffic;
 * acks delete the rows. */
static void test_stored_then_drained(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t sid[4], want[4], live;
	struct tracker t;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	for (uint64_t cid = 1; cid <= 3; cid++) {
		send_env(b1, cid, "alice", 0);
		sid[cid] = expect_ack(b1, cid, PROTO_ACK_STORED);
		/* Committed before the ACK: visible at once from another session. */
		assert_int_equal(rows_for(fx.a1), cid);
		assert_int_equal(pending_of(fx.a1), cid);
		assert_int_equal(stored_sid(fx.a1, cid), sid[cid]);
	}
	assert_true(sid[1] != sid[2] && sid[2] != sid[3] && sid[1] != sid[3]);

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 3);
	want_range(want, 1, 3);
	tracker_init(&t, want, 3);
	assert_int_equal(drain_all(a1, &t), 3);
	assert_int_equal(t.next, 3);
	assert_int_equal(t.dups, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(t.sid[i], sid[i + 1]);
	wait_rows(fx.a1, 0);

	/* Live now: delivered straight, nothing stored. */
	send_env(b1, 4, "alice", 0);
	live = rawdev_expect(a1, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id;
	assert_int_equal(a1->f.u.deliver.client_id, 4);
	rawdev_ack(a1, live);
	assert_int_equal(expect_ack(b1, 4, PROTO_ACK_DELIVERED), live);
	assert_int_equal(rows_for(fx.a1), 0);
	rawdev_expect_silence(a1, SILENCE_MS);

	/* Nothing left for the next connection. */
	rawdev_close(a1);
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* One target online and acking, one offline: ACK(stored); both online and
 * acking: ACK(delivered). */
static void test_online_and_offline_targets(void **state)
{
	struct rawdev *c1 = rawdev_new(), *c2 = rawdev_new(), *b1 = rawdev_new();
	int64_t c1_id, c2_id;
	char c1s[64], c2s[64];
	uint64_t s1, s2, want[1] = { 1 };
	struct tracker t;

	th_device_create(&fx.d, TOKEN, "carol", &c1_id, c1s);
	th_device_create(&fx.d, TOKEN, "carol", &c2_id, c2s);
	rawdev_login(c1, fx.port, c1_id, c1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);

	send_env(b1, 1, "carol", 0);
	s1 = rawdev_expect(c1, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id;
	assert_int_equal(c1->f.u.deliver.client_id, 1);
	rawdev_ack(c1, s1);
	assert_int_equal(expect_ack(b1, 1, PROTO_ACK_STORED), s1);
	assert_int_equal(rows_for(c2_id), 1);
	assert_int_equal(stored_sid(c2_id, 1), s1);
	assert_int_equal(rows_for(c1_id), 0);

	assert_int_equal(rawdev_login_pending(c2, fx.port, c2_id, c2s), 1);
	tracker_init(&t, want, 1);
	assert_int_equal(drain_all(c2, &t), 1);
	assert_int_equal(t.sid[0], s1);
	wait_rows(c2_id, 0);

	send_env(b1, 2, "carol", 0);
	s2 = rawdev_expect(c1, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id;
	rawdev_ack(c1, s2);
	assert_int_equal(rawdev_expect(c2, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id, s2);
	rawdev_ack(c2, s2);
	assert_int_equal(expect_ack(b1, 2, PROTO_ACK_DELIVERED), s2);
	assert_int_equal(rows_for(c1_id), 0);
	assert_int_equal(rows_for(c2_id), 0);
	rawdev_free(c1);
	rawdev_free(c2);
	rawdev_free(b1);
	fx.passed = 1;
}

/* drain_window 8: never more than 8 stored DELIVERs un-acked; more come as
 * they are acked; an envelope sent while the device catches up comes after
 * the whole backlog. */
static void test_drain_window(void **state)
{
	enum { N = 20, W = 8 };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[N + 1], unacked[N + 1], drained = 0;
	size_t nun = 0, before_qe = 0;
	struct answers a;
	struct tracker t;
	int sent_live = 0, qe = 0;

	assert_int_equal(fx.window, W);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	store_n(b1, &a, N);
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), N);
	want_range(want, 1, N + 1);
	tracker_init(&t, want, N + 1);

	while (!qe || t.next < N + 1) {
		int r = rawdev_read(a1, nun ? SILENCE_MS : WAIT_MS);

		if (r < 0)
			fail_msg("A1 closed after %zu DELIVERs", t.delivers);
		if (r == 0) {
			/* Quiet with some un-acked: ack the older half of the window. */
			size_t k = nun < W / 2 ? nun : W / 2;

			if (nun == 0)
				fail_msg("A1: %zu of %d envelopes, %s, then nothing for %d ms",
					 t.next, N + 1, qe ? "QUEUE_EMPTY" : "no QUEUE_EMPTY",
					 WAIT_MS);
			ack_ids(a1, unacked, k);
			memmove(unacked, unacked + k, (nun - k) * sizeof(*unacked));
			nun -= k;
			continue;
		}
		if (a1->f.type == PROTO_QUEUE_EMPTY) {
			if (qe)
				fail_msg("a second QUEUE_EMPTY");
			qe = 1;
			drained = a1->f.u.drained;
			before_qe = t.delivers;
			continue;
		}
		if (a1->f.type != PROTO_DELIVER)
			fail_msg("A1: unexpected %s", proto_type_name(a1->f.type));
		if (qe && t.next < N)
			fail_msg("DELIVER of a stored envelope after QUEUE_EMPTY");
		tracker_deliver(&t, &a1->f);
		unacked[nun++] = a1->f.u.deliver.server_id;
		if (!qe && nun > W)
			fail_msg("%zu stored DELIVERs un-acked, drain_window is %d", nun, W);
		if (nun == W && !sent_live) {
			/* A full window: nothing more until acks. Meanwhile a new
			 * envelope, which must queue behind the backlog. */
			rawdev_expect_silence(a1, SILENCE_MS);
			send_env(b1, N + 1, "alice", 0);
			sent_live = 1;
			/* Half the window acked: the next page comes, without
			 * any more acks. */
			ack_ids(a1, unacked, W / 2);
			memmove(unacked, unacked + W / 2, (nun - W / 2) * sizeof(*unacked));
			nun -= W / 2;
			if (rawdev_read(a1, WAIT_MS) != 1 || a1->f.type != PROTO_DELIVER)
				fail_msg("no DELIVER within %d ms of acking half the window",
					 WAIT_MS);
			tracker_deliver(&t, &a1->f);
			unacked[nun++] = a1->f.u.deliver.server_id;
		}
		/* Past the backlog, live DELIVERs are acked at once (their
		 * deadline is ack_timeout). */
		if (t.next > N) {
			ack_ids(a1, unacked, nun);
			nun = 0;
		}
	}
	if (nun)
		ack_ids(a1, unacked, nun);
	assert_true(sent_live);
	assert_int_equal(t.dups, 0);
	/* QUEUE_EMPTY counts what came from the store: the whole backlog, and
	 * the envelope sent meanwhile if it queued behind it in the store. */
	assert_true(before_qe >= N);
	assert_int_equal(drained, before_qe);
	for (int i = 0; i < N; i++)
		assert_int_equal(t.sid[i], a.sid[i + 1]);
	a.n = N + 1;
	answers_wait(b1, &a, N + 1);
	assert_int_equal(a.sid[N + 1], t.sid[N]);
	wait_rows(fx.a1, 0);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* Some acked, then gone: only the others come again, in order, with the
 * same server ids. */
static void test_partial_ack_then_reconnect(void **state)
{
	enum { N = 6 };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[N], want2[N / 2] = { 2, 4, 6 };
	struct answers a;
	struct tracker t;
	PGresult *res;
	uint64_t drained = 0;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	store_n(b1, &a, N);
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), N);
	want_range(want, 1, N);
	tracker_init(&t, want, N);
	for (;;) {
		int r = rawdev_read(a1, WAIT_MS);

		if (r <= 0)
			fail_msg("A1: %zu DELIVERs, then %s", t.delivers,
				 r ? "the connection closed" : "nothing");
		if (a1->f.type == PROTO_QUEUE_EMPTY) {
			drained = a1->f.u.drained;
			break;
		}
		tracker_deliver(&t, &a1->f);
		if (a1->f.u.deliver.client_id % 2)
			rawdev_ack(a1, a1->f.u.deliver.server_id);
	}
	assert_int_equal(drained, N);
	assert_int_equal(t.next, N);
	wait_rows(fx.a1, N / 2);
	res = th_pg_exec(fx.pg, "SELECT string_agg(client_id::text, ',' ORDER BY seq) FROM "
				"envelopes");
	assert_string_equal(PQgetvalue(res, 0, 0), "2,4,6");
	PQclear(res);
	rawdev_close(a1);

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), N / 2);
	tracker_init(&t, want2, N / 2);
	assert_int_equal(drain_all(a1, &t), N / 2);
	assert_int_equal(t.next, N / 2);
	for (int i = 0; i < N / 2; i++)
		assert_int_equal(t.sid[i], a.sid[want2[i]]);
	wait_rows(fx.a1, 0);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/*
 * Online but silent: after ack_timeout envelope 1 is stored (ACK stored),
 * and comes again from the store, with the same server id, in a new
 * catch-up that ends with QUEUE_EMPTY. Envelope 2, sent while 1 waits for
 * its ack, and 3, sent after 1 was stored, never overtake 1's first copy;
 * 3 comes after 1's stored copy.
 */
static void test_ack_timeout_goes_to_store(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[3] = { 1, 2, 3 }, s1;
	struct answers a = { .n = 3 };
	struct tracker t;
	size_t dup1_at = 0, qe_at = 0, three_at = 0;
	uint64_t drained = 0, end;
	int sent3 = 0, qe = 0;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	tracker_init(&t, want, 3);

	send_env(b1, 1, "alice", 0);
	tracker_deliver(&t, rawdev_expect(a1, PROTO_DELIVER, WAIT_MS));
	s1 = t.sid[0];
	send_env(b1, 2, "alice", 0);

	/* A1 acks everything but the first copy of 1; B1 sends 3 once 1 is
	 * stored. Until 1 came again, then QUEUE_EMPTY, then 3. */
	end = now_ms() + 2 * WAIT_MS;
	while (!(dup1_at && qe && three_at) || a.got < 3) {
		int r;

		if (now_ms() > end)
			fail_msg("A1: %zu DELIVERs (copy of 1: %s, QUEUE_EMPTY after it: %s, "
				 "3: %s); B1: %zu answers",
				 t.delivers, dup1_at ? "yes" : "no", qe ? "yes" : "no",
				 three_at ? "yes" : "no", a.got);
		answers_poll(b1, &a);
		if (a.status[1] && !sent3) {
			if (a.status[1] != PROTO_ACK_STORED)
				fail_msg("SEND 1, never acked by A1: ACK %s, expected stored",
					 status_name(a.status[1]));
			assert_int_equal(a.sid[1], s1);
			/* Committed (A1 has not acked a stored copy yet). */
			if (!dup1_at)
				assert_int_equal(stored_sid(fx.a1, 1), s1);
			send_env(b1, 3, "alice", 0);
			sent3 = 1;
		}
		r = rawdev_read(a1, 20);
		if (r < 0)
			fail_msg("A1 closed");
		if (r == 0)
			continue;
		if (a1->f.type == PROTO_QUEUE_EMPTY) {
			if (dup1_at && !qe) {
				qe = 1;
				qe_at = t.delivers;
				drained = a1->f.u.drained;
			}
			continue;
		}
		if (a1->f.type != PROTO_DELIVER)
			fail_msg("A1: unexpected %s", proto_type_name(a1->f.type));
		switch (want[tracker_deliver(&t, &a1->f)]) {
		case 1:
			if (!dup1_at)
				dup1_at = t.delivers;
			break;
		case 3:
			if (!three_at)
				three_at = t.delivers;
			break;
		}
		rawdev_ack(a1, a1->f.u.deliver.server_id);
	}
	/* 3 was sent after 1 committed: it queues behind 1's stored copy. */
	if (three_at < dup1_at)
		fail_msg("envelope 3 (sent after 1 was stored) came before 1's stored copy");
	/* The catch-up sent 1 again, and maybe 2 and 3 if they were stored too. */
	assert_true(drained >= 1 && drained <= 3);
	assert_true(qe_at - dup1_at + 1 >= drained);
	assert_int_equal(a.sid[2], t.sid[1]);
	assert_int_equal(a.sid[3], t.sid[2]);
	assert_int_equal(a.status[3] == PROTO_ACK_STORED || a.status[3] == PROTO_ACK_DELIVERED, 1);
	/* Every copy acked: the store ends empty (late acks of live copies that
	 * were stored meanwhile may bring one more copy first). */
	end = now_ms() + WAIT_MS;
	while (rows_for(fx.a1) != 0 || pending_of(fx.a1) != 0) {
		if (now_ms() > end)
			fail_msg("A1 acked everything, %lld rows still stored", rows_for(fx.a1));
		if (rawdev_read(a1, 20) == 1 && a1->f.type == PROTO_DELIVER) {
			tracker_deliver(&t, &a1->f);
			rawdev_ack(a1, a1->f.u.deliver.server_id);
		}
	}
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* A live DELIVER whose connection closes before the ack is stored at once
 * (well before ack_timeout would have passed, but no deadline is asserted)
 * and comes on the next connection. */
static void test_closed_before_ack(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[1] = { 1 }, s1;
	struct tracker t;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_env(b1, 1, "alice", 0);
	tracker_init(&t, want, 1);
	tracker_deliver(&t, rawdev_expect(a1, PROTO_DELIVER, WAIT_MS));
	rawdev_close(a1);
	s1 = expect_ack(b1, 1, PROTO_ACK_STORED);
	assert_int_equal(s1, t.sid[0]);
	assert_int_equal(stored_sid(fx.a1, 1), s1);

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 1);
	assert_int_equal(drain_all(a1, &t), 1);
	assert_int_equal(t.copies[0], 2);
	wait_rows(fx.a1, 0);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/*
 * The device connects while a stream of SENDs to it is being routed: a
 * third is sent before its HELLO, a third between HELLO and WELCOME, the
 * rest once it has caught up. Whatever the split turns out to be, it sees
 * each envelope once, in order, the stored ones first and QUEUE_EMPTY
 * between them and the live ones.
 */
static void test_connect_while_sending(void **state)
{
	enum { N = 90 };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	static uint64_t want[N];
	static struct answers a;
	static struct tracker t;
	uint64_t pending, drained = 0, cid = 1;
	size_t qe_at = 0;
	int qe = 0;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	memset(&a, 0, sizeof(a));
	a.n = N;
	rawdev_connect(a1, fx.port, NULL);
	for (; cid <= N / 3; cid++)
		send_env(b1, cid, "alice", 0);
	rawdev_hello(a1, PROTO_VERSION, fx.a1, fx.a1s);
	for (; cid <= 2 * N / 3; cid++)
		send_env(b1, cid, "alice", 0);
	pending = rawdev_expect(a1, PROTO_WELCOME, WAIT_MS)->u.welcome.pending;
	want_range(want, 1, N);
	tracker_init(&t, want, N);
	while (t.next < N || !qe) {
		int r = rawdev_read(a1, WAIT_MS);

		answers_poll(b1, &a);
		if (r <= 0)
			fail_msg("A1: %zu of %d envelopes%s, then %s", t.next, N,
				 qe ? " and QUEUE_EMPTY" : "",
				 r ? "the connection closed" : "nothing");
		if (a1->f.type == PROTO_QUEUE_EMPTY) {
			if (qe)
				fail_msg("a second QUEUE_EMPTY after %zu DELIVERs", t.delivers);
			qe = 1;
			qe_at = t.delivers;
			drained = a1->f.u.drained;
			/* Live from now on. */
			for (; cid <= N; cid++)
				send_env(b1, cid, "alice", 0);
			continue;
		}
		if (a1->f.type != PROTO_DELIVER)
			fail_msg("A1: unexpected %s", proto_type_name(a1->f.type));
		tracker_deliver(&t, &a1->f);
		rawdev_ack(a1, a1->f.u.deliver.server_id);
	}
	assert_int_equal(t.dups, 0);
	/* Before QUEUE_EMPTY only stored envelopes: those counted in WELCOME and
	 * any that queued behind them. */
	assert_int_equal(drained, qe_at);
	if (pending > drained || drained > 2 * N / 3)
		fail_msg("WELCOME said %llu pending, QUEUE_EMPTY %llu drained, %d sent before",
			 (unsigned long long)pending, (unsigned long long)drained, 2 * N / 3);
	answers_wait(b1, &a, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(a.sid[i + 1], t.sid[i]);
	/* Sent after QUEUE_EMPTY and acked at once: delivered, not stored. */
	for (int i = 2 * N / 3 + 1; i <= N; i++)
		if (a.status[i] != PROTO_ACK_DELIVERED)
			fail_msg("SEND %d to a live device that acked at once: ACK %s", i,
				 status_name(a.status[i]));
	wait_rows(fx.a1, 0);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* ttl 1 s: never delivered, and swept from the database; ttl 0 is
 * [store] default_ttl, and a larger ttl is capped at it. */
static void test_ttl(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[2] = { 2, 3 }, pending;
	struct tracker t;
	long long life;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_env(b1, 1, "alice", 1);
	expect_ack(b1, 1, PROTO_ACK_STORED);
	send_env(b1, 2, "alice", 0);
	expect_ack(b1, 2, PROTO_ACK_STORED);
	send_env(b1, 3, "alice", 10 * DEFAULT_TTL);
	expect_ack(b1, 3, PROTO_ACK_STORED);
	life = th_pg_int(fx.pg,
			 "SELECT round(extract(epoch FROM expires - created)) FROM envelopes "
			 "WHERE client_id = 2");
	assert_int_equal(life, DEFAULT_TTL);
	life = th_pg_int(fx.pg,
			 "SELECT round(extract(epoch FROM expires - created)) FROM envelopes "
			 "WHERE client_id = 3");
	assert_int_equal(life, DEFAULT_TTL);
	/* Envelope 1 may be swept already; if not, it lives one second. */
	life = th_pg_int(fx.pg,
			 "SELECT coalesce(round(extract(epoch FROM max(expires - created))), 1) "
			 "FROM envelopes WHERE client_id = 1");
	assert_int_equal(life, 1);

	sleep_ms(2500);
	/* Until the sweep, WELCOME may still count the expired one. */
	pending = rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s);
	if (pending != 2 && pending != 3)
		fail_msg("WELCOME pending %llu, expected 2 (or 3 before the sweep)",
			 (unsigned long long)pending);
	tracker_init(&t, want, 2);
	assert_int_equal(drain_all(a1, &t), 2);
	assert_int_equal(t.next, 2);
	/* Acked rows deleted, the expired one swept: counter and rows agree. */
	wait_rows(fx.a1, 0);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* max_pending_per_device 3: the 4th gets NACK queue_full, the 3 stored are
 * delivered, and once there is room the 4th is taken. */
static void test_queue_full(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[3] = { 1, 2, 3 }, want4[1] = { 4 }, s4;
	struct tracker t;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	for (uint64_t cid = 1; cid <= 3; cid++) {
		send_env(b1, cid, "alice", 0);
		expect_ack(b1, cid, PROTO_ACK_STORED);
	}
	send_env(b1, 4, "alice", 0);
	expect_nack(b1, 4, PROTO_NACK_QUEUE_FULL);
	assert_int_equal(rows_for(fx.a1), 3);
	assert_int_equal(pending_of(fx.a1), 3);
	assert_int_equal(stored_sid(fx.a1, 4), 0);

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 3);
	tracker_init(&t, want, 3);
	assert_int_equal(drain_all(a1, &t), 3);
	assert_int_equal(t.next, 3);
	wait_rows(fx.a1, 0);
	rawdev_close(a1);

	/* Retried (same client id) now that there is room. */
	send_env(b1, 4, "alice", 0);
	s4 = expect_ack(b1, 4, PROTO_ACK_STORED);
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 1);
	tracker_init(&t, want4, 1);
	assert_int_equal(drain_all(a1, &t), 1);
	assert_int_equal(t.sid[0], s4);
	wait_rows(fx.a1, 0);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* A retransmission after a restart is recognised by the database: the same
 * server id, delivered once. */
static void test_dedup_across_restart(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[2] = { 1, 2 }, s1, s2;
	struct tracker t;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_env(b1, 1, "alice", 0);
	s1 = expect_ack(b1, 1, PROTO_ACK_STORED);
	rawdev_close(b1);
	assert_int_equal(th_ferryd_stop(&fx.d, SIGTERM), 0);
	th_ferryd_start(&fx.d, fx.config, fx.admin_port);
	wait_ready();

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_env(b1, 1, "alice", 0);
	assert_int_equal(expect_ack(b1, 1, PROTO_ACK_STORED), s1);
	assert_int_equal(rows_for(fx.a1), 1);
	assert_int_equal(pending_of(fx.a1), 1);
	send_env(b1, 2, "alice", 0);
	s2 = expect_ack(b1, 2, PROTO_ACK_STORED);
	assert_true(s2 != s1);

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 2);
	tracker_init(&t, want, 2);
	assert_int_equal(drain_all(a1, &t), 2);
	assert_int_equal(t.dups, 0);
	assert_int_equal(t.sid[0], s1);
	assert_int_equal(t.sid[1], s2);
	wait_rows(fx.a1, 0);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* Device @id's gateway worker now, or -1 when it is not connected. */
static int worker_of(int64_t id)
{
	struct th_response r;
	char url[128];
	json_t *j, *p;
	int w = -1;

	snprintf(url, sizeof(url), "%s/v1/devices/%lld", fx.d.admin_url, (long long)id);
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	j = json_loads(r.body, 0, NULL);
	p = json_object_get(j, "presence");
	if (json_is_true(json_object_get(p, "online")))
		w = (int)json_integer_value(json_object_get(p, "worker"));
	json_decref(j);
	th_response_release(&r);
	return w;
}

/* The same after a restart when the store's answer comes through another
 * worker: the recipient is connected on the other worker and catching up
 * (it does not acknowledge, its drain window is full), so that worker
 * stores the retransmission, finds the first copy, and reports its server
 * id back to the sender's worker by mailbox. */
static void test_dedup_across_restart_two_workers(void **state)
{
	enum { N = 20 };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t s1;
	int wa = -1, wb = -1;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_env(b1, 1, "alice", 0);
	s1 = expect_ack(b1, 1, PROTO_ACK_STORED);
	for (uint64_t cid = 2; cid <= N; cid++) {
		send_env(b1, cid, "alice", 0);
		expect_ack(b1, cid, PROTO_ACK_STORED);
	}
	rawdev_close(b1);
	assert_int_equal(th_ferryd_stop(&fx.d, SIGTERM), 0);
	th_ferryd_start(&fx.d, fx.config, fx.admin_port);
	wait_ready();

	/* Alice takes her first DELIVERs and acknowledges none. */
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), N);
	for (unsigned i = 0; i < fx.window; i++)
		rawdev_expect(a1, PROTO_DELIVER, WAIT_MS);
	for (int i = 0; i < 200 && wa < 0; i++)
		wa = worker_of(fx.a1);
	assert_true(wa >= 0);
	/* Bob on the other worker (SO_REUSEPORT picks one at random). */
	for (int i = 0; i < 64; i++) {
		rawdev_login(b1, fx.port, fx.b1, fx.b1s);
		for (int k = 0; k < 200 && (wb = worker_of(fx.b1)) < 0; k++)
			;
		if (wb >= 0 && wb != wa)
			break;
		rawdev_close(b1);
		wb = -1;
		for (int k = 0; k < 200 && worker_of(fx.b1) >= 0; k++)
			;
	}
	if (wb < 0)
		fail_msg("bob never connected to the worker alice is not on");

	send_env(b1, 1, "alice", 0);
	assert_int_equal(expect_ack(b1, 1, PROTO_ACK_STORED), s1);
	assert_int_equal(rows_for(fx.a1), N);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* 300 stored; while the device works through them, acking slowly, 50 more
 * are sent: all 350 arrive once each, in order. */
static void test_order_while_draining(void **state)
{
	enum { OLD = 300, NEW = 50, N = OLD + NEW };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	static uint64_t want[N], unacked[N];
	static struct answers a;
	static struct tracker t;
	size_t nun = 0, qe_at = 0;
	uint64_t drained = 0;
	int sent_new = 0;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	store_n(b1, &a, OLD);
	assert_int_equal(rows_for(fx.a1), OLD);
	a.n = N;

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), OLD);
	want_range(want, 1, N);
	tracker_init(&t, want, N);
	while (t.next < N || !qe_at) {
		int r = rawdev_read(a1, nun ? 100 : WAIT_MS);

		answers_poll(b1, &a);
		if (r < 0)
			fail_msg("A1 closed after %zu DELIVERs", t.delivers);
		if (r == 0) {
			if (!nun)
				fail_msg("A1: %zu of %d envelopes%s, then nothing for %d ms",
					 t.next, N, qe_at ? " and QUEUE_EMPTY" : "", WAIT_MS);
			ack_ids(a1, unacked, nun);
			nun = 0;
			continue;
		}
		if (a1->f.type == PROTO_QUEUE_EMPTY) {
			if (qe_at)
				fail_msg("a second QUEUE_EMPTY after %zu DELIVERs", t.delivers);
			qe_at = t.delivers;
			drained = a1->f.u.drained;
			continue;
		}
		if (a1->f.type != PROTO_DELIVER)
			fail_msg("A1: unexpected %s", proto_type_name(a1->f.type));
		tracker_deliver(&t, &a1->f);
		unacked[nun++] = a1->f.u.deliver.server_id;
		if (t.delivers == 10 && !sent_new) {
			for (uint64_t cid = OLD + 1; cid <= N; cid++)
				send_env(b1, cid, "alice", 0);
			sent_new = 1;
		}
		/* Slowly: acks go in batches, after a pause. Once past the
		 * backlog, at once (live DELIVERs have a deadline). */
		if (t.next > OLD || qe_at) {
			ack_ids(a1, unacked, nun);
			nun = 0;
		} else if (nun >= fx.window / 2) {
			sleep_ms(10);
			ack_ids(a1, unacked, nun);
			nun = 0;
		}
	}
	if (nun)
		ack_ids(a1, unacked, nun);
	assert_int_equal(t.delivers, N);
	assert_int_equal(t.dups, 0);
	assert_true(qe_at >= OLD);
	assert_int_equal(drained, qe_at);
	answers_wait(b1, &a, N);
	for (int i = 0; i < N; i++)
		if (a.sid[i + 1] != t.sid[i])
			fail_msg("envelope %d: ACK server id %llu, DELIVER server id %llu", i + 1,
				 (unsigned long long)a.sid[i + 1], (unsigned long long)t.sid[i]);
	wait_rows(fx.a1, 0);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* ---- the database goes away ---- */

/* fx.conninfo with dbname replaced by "postgres"; *name gets the test's
 * database name. Both malloc'ed. */
static char *maintenance_conninfo(char **name)
{
	const char *p = strstr(fx.conninfo, "dbname=");
	char *admin;
	size_t prefix;

	assert_non_null(p);
	prefix = (size_t)(p - fx.conninfo);
	*name = strdup(p + strlen("dbname="));
	admin = malloc(prefix + sizeof("dbname=postgres"));
	assert_non_null(*name);
	assert_non_null(admin);
	memcpy(admin, fx.conninfo, prefix);
	memcpy(admin + prefix, "dbname=postgres", sizeof("dbname=postgres"));
	return admin;
}

static void db_allow(PGconn *admin, const char *name, int allow)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS %s", name,
		 allow ? "true" : "false");
	PQclear(th_pg_exec(admin, sql));
	if (allow)
		return;
	snprintf(sql, sizeof(sql),
		 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
		 "AND pid <> pg_backend_pid()",
		 name);
	PQclear(th_pg_exec(admin, sql));
}

static long readyz(void)
{
	struct th_response r;
	char url[128];
	long status;

	snprintf(url, sizeof(url), "%s/readyz", fx.d.admin_url);
	th_http(&r, "GET", url, NULL, NULL);
	status = r.status;
	th_response_release(&r);
	return status;
}

/* Poll /readyz until it answers 200 (@want_ready) or anything else. */
static void wait_readyz(int want_ready, unsigned timeout_ms)
{
	uint64_t end = now_ms() + timeout_ms;
	long status;

	while (((status = readyz()) == 200) != want_ready) {
		if (now_ms() > end)
			fail_msg("/readyz still %ld after %u ms, expected %s", status, timeout_ms,
				 want_ready ? "200" : "not ready");
		sleep_ms(50);
	}
}

/* ferryd ready, its store connected: a SEND to an offline device can be
 * stored. */
static void wait_ready(void)
{
	wait_readyz(1, WAIT_MS);
}

static void assert_running(void)
{
	int st;

	if (waitpid(fx.d.pid, &st, WNOHANG) == fx.d.pid) {
		fx.d.pid = 0;
		fail_msg("ferryd exited (status %d)", st);
	}
}

/*
 * The test's database refuses connections and its sessions are ended (the
 * cluster is shared, so only this database goes away): ferryd stays up,
 * SENDs that need the store get NACK retry_later, /readyz is not ready.
 * Back: ready again without a restart, SENDs stored, and what was stored
 * before is all delivered.
 */
static void test_database_outage(void **state)
{
	enum { BEFORE = 3 };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[BEFORE + 1], cid = BEFORE + 1, end;
	struct answers a;
	struct tracker t;
	PGconn *admin;
	char *admin_info, *name;
	const struct proto_frame *f;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	store_n(b1, &a, BEFORE);
	assert_int_equal(readyz(), 200);

	admin_info = maintenance_conninfo(&name);
	admin = th_pg_connect(admin_info);
	PQfinish(fx.pg);
	fx.pg = NULL;
	db_allow(admin, name, 0);

	wait_readyz(0, WAIT_MS);
	/* A few tries over a while: never ACK, always retry_later. */
	for (int i = 0; i < 5; i++) {
		send_env(b1, cid, "alice", 0);
		expect_nack(b1, cid, PROTO_NACK_RETRY_LATER);
		assert_running();
		sleep_ms(200);
	}
	assert_true(readyz() != 200);
	assert_running();

	db_allow(admin, name, 1);
	wait_readyz(1, WAIT_MS + 2000);
	/* The same SEND again, as a sender retries: now stored. */
	end = now_ms() + WAIT_MS;
	for (;;) {
		send_env(b1, cid, "alice", 0);
		f = expect_answer(b1, cid);
		if (f->type == PROTO_ACK)
			break;
		if (f->u.nack.reason != PROTO_NACK_RETRY_LATER)
			fail_msg("SEND after the database came back: NACK %s",
				 proto_nack_name(f->u.nack.reason));
		if (now_ms() > end)
			fail_msg("SENDs still NACK retry_later %d ms after /readyz said ready",
				 WAIT_MS);
		sleep_ms(200);
	}
	assert_int_equal(f->u.ack.status, PROTO_ACK_STORED);
	assert_running();

	fx.pg = th_pg_connect(fx.conninfo);
	assert_int_equal(rows_for(fx.a1), BEFORE + 1);
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), BEFORE + 1);
	want_range(want, 1, BEFORE + 1);
	tracker_init(&t, want, BEFORE + 1);
	assert_int_equal(drain_all(a1, &t), BEFORE + 1);
	for (int i = 0; i < BEFORE; i++)
		assert_int_equal(t.sid[i], a.sid[i + 1]);
	wait_rows(fx.a1, 0);
	PQfinish(admin);
	free(admin_info);
	free(name);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/*
 * The store loses PostgreSQL while the registry keeps its connection: a
 * device still authenticates, gets WELCOME with pending 0 (the store cannot
 * say), and its stored envelopes once the store is back, in order, then
 * QUEUE_EMPTY: the catch-up retried by itself.
 */
static void test_store_down_while_connecting(void **state)
{
	enum { BEFORE = 3 };
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[BEFORE];
	struct answers a;
	struct tracker t;
	PGconn *admin;
	char *admin_info, *name, sql[256];

	rawdev_login(b1, fx.port, fx.b1, fx.b1s); /* the registry's connection is up */
	store_n(b1, &a, BEFORE);
	admin_info = maintenance_conninfo(&name);
	admin = th_pg_connect(admin_info);
	PQclear(th_pg_exec(admin, "SELECT 1"));
	snprintf(sql, sizeof(sql), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS false", name);
	PQclear(th_pg_exec(admin, sql));
	snprintf(sql, sizeof(sql),
		 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
		 "AND application_name = 'ferryd-store'",
		 name);
	PQclear(th_pg_exec(admin, sql));
	wait_readyz(0, WAIT_MS);

	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 0);
	rawdev_expect_silence(a1, 300);
	db_allow(admin, name, 1);
	want_range(want, 1, BEFORE);
	tracker_init(&t, want, BEFORE);
	assert_int_equal(drain_all(a1, &t), BEFORE);
	for (int i = 0; i < BEFORE; i++)
		assert_int_equal(t.sid[i], a.sid[i + 1]);
	wait_rows(fx.a1, 0);
	assert_running();
	PQfinish(admin);
	free(admin_info);
	free(name);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

#define OFFLINE_TEST(fn, params) \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&(params))

int main(void)
{
	const struct CMUnitTest tests[] = {
		OFFLINE_TEST(test_stored_then_drained, defaults),
		OFFLINE_TEST(test_online_and_offline_targets, defaults),
		OFFLINE_TEST(test_drain_window, small_window),
		OFFLINE_TEST(test_partial_ack_then_reconnect, defaults),
		OFFLINE_TEST(test_ack_timeout_goes_to_store, defaults),
		OFFLINE_TEST(test_closed_before_ack, defaults),
		OFFLINE_TEST(test_ttl, defaults),
		OFFLINE_TEST(test_queue_full, three_max),
		OFFLINE_TEST(test_dedup_across_restart, defaults),
		OFFLINE_TEST(test_dedup_across_restart_two_workers, small_window),
		OFFLINE_TEST(test_order_while_draining, defaults),
		OFFLINE_TEST(test_connect_while_sending, defaults),
		OFFLINE_TEST(test_database_outage, defaults),
		OFFLINE_TEST(test_store_down_while_connecting, defaults),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("offline", tests, NULL, NULL);
}
