/*
 * test_faults.c - the fault suite: real senders and receivers against ferryd
 * and real PostgreSQL, one fault per test, every history scored (faults.h:
 * lost, unexpected and reordered must be 0; duplicates are counted).
 *
 * Each scenario prints one line, "faults: scenario=NAME sent=... acked=...
 * lost=0 unexpected=0 dup=N reordered=0 ...", and docs/internals/faults.md
 * says what each one proves. `make test` runs the short form; `make
 * check-faults` the long one (FERRY_FAULTS_LONG=1: 100 kills, 20
 * PostgreSQL restarts, minutes of outage). FERRY_FAULTS_SEED replays a run's
 * random choices (not its timing); FERRY_FAULTS_ONLY=NAME runs one scenario.
 *
 *   kill9           raw devices; kill -9 of ferryd at random moments
 *   crash_points    raw devices; ferryd killed by its own crash points
 *                   (before COMMIT, between COMMIT and the answer, after ACK)
 *   pg_restart      raw devices; PostgreSQL stopped (fast, immediate) and
 *                   started again under load, ferryd staying up
 *   pg_outage       libferry devices; PostgreSQL away for a long while
 *   socket_drop     raw devices; the recipient drops its socket between
 *                   DELIVER and DELIVER_ACK
 *   retransmit      raw devices; 1,000 copies of one SEND across reconnects
 *                   and a restart
 *   bogus_acks      raw devices; duplicate, late and foreign DELIVER_ACKs
 *   reorder         libferry devices; 400 queued envelopes and live traffic
 *                   across 50 reconnects per receiving device
 *   require_durable ferryd against databases with synchronous_commit off
 *
 * Receipts across kill -9 are scored in test_receipt_faults.c; the push
 * providers' faults in tests/integration/test_push*.c.
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

#include "tests/faults/faults.h"
#include "common/banned.h"

/* Users fr0..fr3 receive, fr0 and fr1 with two devices each. */
static const int mixed_users[] = { 0, 0, 1, 1, 2, 3 };

static void raw_cast(unsigned seed)
{
	fh_make_devices(4, 6, mixed_users, seed);
	/* One device of fr0 and fr2's only device stay online. */
	fx.rcv[0].always_online = 1;
	fx.rcv[4].always_online = 1;
}

static void raw_finish(const char *scenario, const char *extra)
{
	struct fh_score sc;
	unsigned undrained;

	fh_sleep_ms(300); /* traffic after the last fault too */
	fh_stop_senders();
	fh_stop_receivers();
	undrained = fh_drain_all();
	fh_report(scenario, &sc, undrained, extra);
	/* The run proved something: envelopes were acknowledged, some of them
	 * because they were stored. */
	assert_true(sc.acked > 0);
	assert_true(sc.acked_stored > 0);
}

static int not_selected(const char *name)
{
	const char *only = getenv("FERRY_FAULTS_ONLY");

	if (!only || !*only || strstr(only, name))
		return 0;
	printf("faults: scenario=%s skipped (FERRY_FAULTS_ONLY)\n", name);
	return 1;
}

/* ---- kill -9 at random moments ---- */

static void test_kill9(void **state)
{
	unsigned seed = fh_seed(), cycles = fh_env_uint("FERRY_FAULTS_KILLS", fh_pick(5, 100));
	int64_t t0 = fh_now_ms();
	char extra[128];

	if (not_selected("kill9"))
		return;
	fh_start_daemon("", "");
	raw_cast(seed);
	fh_start_threads(fh_raw_sender, fh_raw_receiver);
	for (unsigned i = 0; i < cycles; i++) {
		fh_sleep_ms(fh_rnd(&seed, 100, 600));
		fh_kill_restart(fh_rnd(&seed, 0, 1) ? (unsigned)fh_rnd(&seed, 0, 200) : 0);
	}
	snprintf(extra, sizeof(extra), "kills=%u time=%.1fs", cycles,
		 (double)(fh_now_ms() - t0) / 1000.0);
	raw_finish("kill9", extra);
}

/* ---- crash points ---- */

static void test_crash_points(void **state)
{
	static const struct {
		const char *name;
		int lo, hi;	/* the passage that kills */
		unsigned delay; /* ms: after ACK, time for it to reach the socket */
	} points[] = {
		{ "store_before_commit", 1, 20, 0 },
		{ "store_after_commit", 1, 20, 0 },
		{ "route_after_ack", 5, 80, 20 },
	};
	unsigned seed = fh_seed(), rounds = fh_pick(2, 10), kills = 0;
	int64_t t0 = fh_now_ms();
	char extra[160], fault[96], needle[96];

	if (not_selected("crash_points"))
		return;
	fh_start_daemon("", "");
	raw_cast(seed);
	fh_start_threads(fh_raw_sender, fh_raw_receiver);
	for (unsigned r = 0; r < rounds; r++) {
		for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
			int st, hits;

			fh_sleep_ms(fh_rnd(&seed, 100, 300));
			assert_int_equal(th_ferryd_kill(&fx.d), 128 + SIGKILL);
			snprintf(fault, sizeof(fault), "%s:%d:%u", points[i].name,
				 fh_rnd(&seed, points[i].lo, points[i].hi), points[i].delay);
			snprintf(needle, sizeof(needle), "fault point %s hit", points[i].name);
			hits = th_log_count(&fx.d, needle);
			st = fh_run_armed(fault, 30000);
			if (st != 128 + SIGKILL || th_log_count(&fx.d, needle) != hits + 1) {
				fh_show_log(NULL, 0);
				fail_msg("FERRY_FAULT=%s: ferryd ended with %d, not by its crash "
					 "point",
					 fault, st);
			}
			kills++;
			th_ferryd_restart(&fx.d);
		}
	}
	snprintf(extra, sizeof(extra), "points=3 kills=%u time=%.1fs", kills,
		 (double)(fh_now_ms() - t0) / 1000.0);
	raw_finish("crash_points", extra);
}

/* ---- PostgreSQL restarted under load ---- */

/* Run @script (sh, in the top directory) or fail the test. */
static void sh(const char *script)
{
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	char out[512];
	int st;

	snprintf(out, sizeof(out), "%s/faults-sh.log", getenv("FERRY_TEST_TMPDIR"));
	st = th_wait(th_spawn(argv, out));
	if (st != 0) {
		char *log = th_read_file(out);

		fail_msg("'%s' failed with %d: %s", script, st, log);
	}
}

static void pg_stop(const char *mode)
{
	char script[1024];

	snprintf(script, sizeof(script),
		 ". scripts/pg.sh && pg_as \"$(pg_bindir)/pg_ctl\" -D '%s' -m %s -w -t 60 stop "
		 ">/dev/null",
		 getenv("FERRY_TEST_PGDATA"), mode);
	sh(script);
}

static void pg_start(void)
{
	char script[1024];
	const char *opts = getenv("FERRY_TEST_PGOPTS");

	snprintf(script, sizeof(script), ". scripts/pg.sh && pg_start '%s' '%s' %s",
		 getenv("FERRY_TEST_PGDATA"), getenv("FERRY_TEST_PGHOST"), opts ? opts : "");
	sh(script);
}

/* ACKs(stored) of every sender that came in [from, to] (ms). */
static unsigned stored_acks_between(int64_t from, int64_t to)
{
	unsigned n = 0;

	for (int i = 0; i < fx.nsnd; i++)
		for (uint64_t c = 1; c <= fx.snd[i].last; c++)
			n += fx.snd[i].env[c].acked &&
			     fx.snd[i].env[c].status == PROTO_ACK_STORED &&
			     fx.snd[i].env[c].acked_ms >= from && fx.snd[i].env[c].acked_ms <= to;
	return n;
}

/* The first ACK(stored) at or after @from, -1 if none yet. */
static int64_t first_stored_ack(int64_t from)
{
	int64_t first = -1;

	for (int i = 0; i < fx.nsnd; i++)
		for (uint64_t c = 1; c <= fx.snd[i].last; c++) {
			const struct fh_sent *e = &fx.snd[i].env[c];

			if (e->acked && e->status == PROTO_ACK_STORED && e->acked_ms >= from &&
			    (first < 0 || e->acked_ms < first))
				first = e->acked_ms;
		}
	return first;
}

static void test_pg_restart(void **state)
{
	unsigned seed = fh_seed(), n = fh_env_uint("FERRY_FAULTS_PG_RESTARTS", fh_pick(2, 20));
	unsigned during = 0;
	int64_t t0 = fh_now_ms(), worst = 0;
	pid_t pid;
	char extra[192];

	if (not_selected("pg_restart"))
		return;
	if (!getenv("FERRY_TEST_PGDATA"))
		fail_msg("FERRY_TEST_PGDATA is not set: run through 'make test'");
	fh_start_daemon("", "");
	pid = fx.d.pid;
	raw_cast(seed);
	fh_start_threads(fh_raw_sender, fh_raw_receiver);
	for (unsigned i = 0; i < n; i++) {
		int64_t down, up, back = -1;

		fh_sleep_ms(fh_rnd(&seed, 300, 800));
		pg_stop(i % 2 ? "immediate" : "fast");
		down = fh_now_ms();
		fh_sleep_ms(fh_rnd(&seed, 300, 1000));
		up = fh_now_ms();
		pg_start();
		/* No ACK(stored) while the database is away (an ACK on its way
		 * when the stop began gets 250 ms). */
		during += stored_acks_between(down + 250, up);
		while (back < 0 && fh_now_ms() < up + 15000) {
			fh_sleep_ms(20);
			back = first_stored_ack(up);
		}
		if (back < 0)
			fail_msg("no ACK(stored) within 15 s of PostgreSQL's return (restart %u)",
				 i + 1);
		worst = back - up > worst ? back - up : worst;
		if (fx.d.pid != pid || kill(pid, 0) != 0) {
			fh_show_log(NULL, 0);
			fail_msg("ferryd did not survive PostgreSQL restart %u", i + 1);
		}
	}
	snprintf(extra, sizeof(extra),
		 "pg_restarts=%u stored_acks_during_outage=%u worst_recovery_ms=%lld time=%.1fs", n,
		 during, (long long)worst, (double)(fh_now_ms() - t0) / 1000.0);
	raw_finish("pg_restart", extra);
	assert_int_equal(during, 0);
}

/* ---- PostgreSQL unreachable for a long while ---- */

static void test_pg_outage(void **state)
{
	static const int users[] = { 0, 1 };
	unsigned seed = fh_seed(), secs = fh_env_uint("FERRY_FAULTS_OUTAGE_S", fh_pick(20, 180));
	long rss0, rss_max = 0, not_ready = 0, polls = 0;
	int64_t t0 = fh_now_ms(), down, up, ready_ms;
	pid_t pid;
	struct fh_score sc;
	unsigned undrained;
	char extra[256], asan[512], *saved;

	if (not_selected("pg_outage"))
		return;
	/* A small cap, big payloads: the cap is what bounds the memory. ASan
	 * holds freed memory back (256 MB by default), which would hide it:
	 * this daemon keeps 1 MB. */
	snprintf(asan, sizeof(asan), "%s%squarantine_size_mb=1",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
		 getenv("ASAN_OPTIONS") ? ":" : "");
	saved = getenv("ASAN_OPTIONS") ? strdup(getenv("ASAN_OPTIONS")) : NULL;
	setenv("ASAN_OPTIONS", asan, 1);
	fh_start_daemon("", "[store]\nmax_inflight_bytes = 256k\n");
	if (saved)
		setenv("ASAN_OPTIONS", saved, 1);
	else
		unsetenv("ASAN_OPTIONS");
	free(saved);
	pid = fx.d.pid;
	fh_make_devices(2, 2, users, seed);
	for (int i = 0; i < 2; i++) {
		fx.snd[i].pad = 2000;
		fx.snd[i].window = 64;
		fx.snd[i].interval = 5;
		fx.snd[i].by_server_id = 1;
	}
	/* fr0's device stays online (live delivery goes on); fr1's comes back
	 * only for the final drain (everything for it needs the store). */
	assert_int_equal(pthread_create(&fx.rcv[0].thread, NULL, fh_lf_receiver, &fx.rcv[0]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&fx.snd[i].thread, NULL, fh_lf_sender, &fx.snd[i]),
				 0);
	fh_sleep_ms(1000);
	rss0 = fh_rss_kib();
	pg_stop("fast");
	down = fh_now_ms();
	while (fh_now_ms() < down + (int64_t)secs * 1000) {
		long rss = fh_rss_kib();

		rss_max = rss > rss_max ? rss : rss_max;
		polls++;
		not_ready += fh_readyz() == 503;
		if (kill(pid, 0) != 0 || fx.d.pid != pid)
			fail_msg("ferryd did not survive the outage");
		fh_sleep_ms(500);
	}
	up = fh_now_ms();
	pg_start();
	th_ferryd_wait_ready(&fx.d, 15000);
	ready_ms = fh_now_ms() - up;
	/* The senders had everything refused meanwhile: they finish now. */
	fh_sleep_ms(1000);
	fh_stop_senders();
	atomic_store(&fx.stop_receivers, 1);
	pthread_join(fx.rcv[0].thread, NULL);
	undrained = fh_drain_all();
	snprintf(extra, sizeof(extra),
		 "outage_s=%u rss_before_kib=%ld rss_max_kib=%ld readyz_503=%ld/%ld "
		 "ready_after_ms=%lld stored_acks_during_outage=%u time=%.1fs",
		 secs, rss0, rss_max, not_ready, polls, (long long)ready_ms,
		 stored_acks_between(down + 250, up), (double)(fh_now_ms() - t0) / 1000.0);
	fh_report("pg_outage", &sc, undrained, extra);
	assert_int_equal(not_ready, polls);
	assert_int_equal(stored_acks_between(down + 250, up), 0);
	/* What matters is that it does not grow with the outage: the cap
	 * (256 KiB) plus the allocators' slack. */
	assert_true(rss_max - rss0 < 48 * 1024);
	assert_true(ready_ms < 10000);
	assert_true(sc.acked > 0 && sc.nacks > 0);
	for (int i = 0; i < 2; i++)
		for (uint64_t c = 1; c <= fx.snd[i].last; c++)
			assert_true(fx.snd[i].env[c].acked);
}

/* ---- the recipient's socket drops between DELIVER and DELIVER_ACK ---- */

/* Read until a DELIVER (answering PINGs); fail the test after @ms. */
static void expect_deliver(struct fh_peer *p, int ms)
{
	int64_t deadline = fh_now_ms() + ms;

	while (fh_now_ms() < deadline) {
		int r = fh_peer_read(p, 100);

		if (r < 0)
			fail_msg("the connection closed while a DELIVER was expected");
		if (r == 1 && p->f.type == PROTO_DELIVER)
			return;
		if (r == 1 && p->f.type == PROTO_PING)
			fh_peer_pong(p, p->f.u.nonce);
	}
	fail_msg("no DELIVER within %d ms", ms);
}

/* Read until ACK for @cid on sender @s's peer; records it. */
static void expect_ack(struct fh_sender *s, struct fh_peer *p, uint64_t cid)
{
	int64_t deadline = fh_now_ms() + 10000;

	while (fh_now_ms() < deadline) {
		int r = fh_peer_read(p, 100);

		if (r < 0)
			fail_msg("the sender's connection closed");
		if (r == 1 && p->f.type == PROTO_ACK && p->f.u.ack.client_id == cid) {
			s->env[cid].acked = 1;
			s->env[cid].status = (uint8_t)p->f.u.ack.status;
			s->env[cid].server_id = p->f.u.ack.server_id;
			s->env[cid].acked_ms = fh_now_ms();
			return;
		}
		if (r == 1 && p->f.type == PROTO_NACK)
			fail_msg("NACK %llu for client_id=%llu",
				 (unsigned long long)p->f.u.nack.reason, (unsigned long long)cid);
	}
	fail_msg("no ACK for client_id=%llu", (unsigned long long)cid);
}

static void test_socket_drop(void **state)
{
	static const int users[] = { 0 };
	unsigned rounds = fh_pick(20, 200), redelivered = 0;
	struct fh_peer *sp = fx.own[0] = fh_peer_new(), *rp = fx.own[1] = fh_peer_new();
	struct fh_sender *s = &fx.snd[0];
	struct fh_receiver *r = &fx.rcv[0];
	struct fh_score sc;
	char extra[128];

	if (not_selected("socket_drop"))
		return;
	fh_start_daemon("", "");
	fh_make_devices(1, 1, users, fh_seed());
	assert_int_equal(fh_peer_open(sp, s->id, s->secret), 0);
	for (uint64_t cid = 1; cid <= rounds; cid++) {
		uint64_t first_cid;

		assert_int_equal(fh_peer_open(rp, r->id, r->secret), 0);
		fh_sent_new(s, cid, 0);
		assert_int_equal(fh_send_env(s, sp, cid), 0);
		expect_deliver(rp, 5000);
		fh_record(r, &rp->f.u.deliver, 0);
		first_cid = rp->f.u.deliver.client_id;
		/* Gone before DELIVER_ACK: the server stores it, then ACKs. */
		fh_peer_close(rp);
		expect_ack(s, sp, cid);
		assert_int_equal(fh_peer_open(rp, r->id, r->secret), 0);
		expect_deliver(rp, 5000);
		fh_record(r, &rp->f.u.deliver, 0);
		redelivered += rp->f.u.deliver.client_id == first_cid;
		fh_peer_ack(rp, &rp->f.u.deliver.server_id, 1);
		fh_peer_close(rp);
	}
	fh_peer_close(sp);
	snprintf(extra, sizeof(extra), "rounds=%u redelivered_on_reconnect=%u", rounds,
		 redelivered);
	fh_report("socket_drop", &sc, fh_drain_all(), extra);
	assert_int_equal(redelivered, rounds);
	assert_int_equal(sc.delivered, rounds);
	assert_int_equal(sc.acked_stored, rounds);
}

/* ---- one SEND retransmitted 1,000 times ---- */

static void test_retransmit(void **state)
{
	static const int users[] = { 0 };
	unsigned copies = 1000, every = 20, reconnects = 0, same = 0;
	struct fh_peer *sp = fx.own[0] = fh_peer_new();
	struct fh_sender *s = &fx.snd[0];
	struct fh_score sc;
	uint64_t first = 0;
	PGconn *pg;
	long long rows;
	char extra[192];

	if (not_selected("retransmit"))
		return;
	fh_start_daemon("", "");
	fh_make_devices(1, 1, users, fh_seed());
	fh_sent_new(s, 1, 0);
	for (unsigned i = 0; i < copies; i++) {
		if (i == copies / 2) {
			/* The dedup table does not survive this: the store answers. */
			fh_peer_close(sp);
			fh_kill_restart(0);
		}
		if (sp->fd < 0 || i % every == 0) {
			fh_peer_close(sp);
			assert_int_equal(fh_peer_open(sp, s->id, s->secret), 0);
			reconnects++;
		}
		assert_int_equal(fh_send_env(s, sp, 1), 0);
		expect_ack(s, sp, 1);
		if (!first)
			first = s->env[1].server_id;
		if (s->env[1].server_id != first && same + 5 > i)
			fprintf(stderr, "retransmit: copy %u ACK server_id=%llu, the first %llu\n",
				i, (unsigned long long)s->env[1].server_id,
				(unsigned long long)first);
		same += s->env[1].server_id == first;
	}
	fh_peer_close(sp);
	pg = th_pg_connect(fx.conninfo);
	rows = th_pg_int(pg, "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
			 (long long)fx.rcv[0].id);
	PQfinish(pg);
	snprintf(extra, sizeof(extra),
		 "copies=%u reconnects=%u restarts=1 same_server_id=%u stored_rows=%lld", copies,
		 reconnects, same, rows);
	fh_report("retransmit", &sc, fh_drain_all(), extra);
	assert_int_equal(same, copies);
	assert_int_equal(rows, 1);
	assert_int_equal(sc.delivered, 1);
	assert_int_equal(sc.dup, 0);
}

/* ---- duplicate, late, unknown and foreign DELIVER_ACKs ---- */

/* Read DELIVERs into @r's records until QUEUE_EMPTY; their server ids to @ids. */
static size_t read_backlog(struct fh_receiver *r, struct fh_peer *p, uint64_t *ids, size_t cap)
{
	size_t n = 0;
	int64_t deadline = fh_now_ms() + 10000;

	while (fh_now_ms() < deadline) {
		int rc = fh_peer_read(p, 100);

		if (rc < 0)
			fail_msg("the receiver's connection closed");
		if (rc < 1)
			continue;
		if (p->f.type == PROTO_QUEUE_EMPTY)
			return n;
		if (p->f.type == PROTO_DELIVER) {
			fh_record(r, &p->f.u.deliver, 0);
			if (n < cap)
				ids[n++] = p->f.u.deliver.server_id;
		}
	}
	fail_msg("no QUEUE_EMPTY within 10 s");
	return n;
}

static void test_bogus_acks(void **state)
{
	static const int users[] = { 0, 1 };
	enum { N = 6 }; /* under the drain window: one page, then QUEUE_EMPTY */
	struct fh_peer *sp = fx.own[0] = fh_peer_new(), *rp = fx.own[1] = fh_peer_new();
	struct fh_sender *s = &fx.snd[0];
	uint64_t mine[N], theirs[N], bogus[3 * N], again[N];
	size_t nmine, nagain, nb = 0;
	struct fh_score sc;
	PGconn *pg;
	long long other_rows, my_rows;
	char extra[192];

	if (not_selected("bogus_acks"))
		return;
	fh_start_daemon("", "");
	fh_make_devices(1, 2, users, fh_seed());
	/* N envelopes for each receiving user, both offline: all stored. */
	assert_int_equal(fh_peer_open(sp, s->id, s->secret), 0);
	for (uint64_t cid = 1; cid <= 2 * N; cid++) {
		fh_sent_new(s, cid, cid <= N ? 0 : 1);
		assert_int_equal(fh_send_env(s, sp, cid), 0);
		expect_ack(s, sp, cid);
		if (cid > N)
			theirs[cid - N - 1] = s->env[cid].server_id;
	}
	assert_int_equal(fh_peer_open(rp, fx.rcv[0].id, fx.rcv[0].secret), 0);
	nmine = read_backlog(&fx.rcv[0], rp, mine, N);
	assert_int_equal(nmine, N);
	/* The other device's ids, ids nobody has, and the first half of ours
	 * twice over: only ours may go, and only those. */
	for (int i = 0; i < N; i++)
		bogus[nb++] = theirs[i];
	bogus[nb++] = mine[N - 1] + 1000000;
	bogus[nb++] = UINT64_MAX;
	bogus[nb++] = 1;
	assert_int_equal(fh_peer_ack(rp, bogus, nb), 0);
	assert_int_equal(fh_peer_ack(rp, mine, N / 2), 0);
	assert_int_equal(fh_peer_ack(rp, mine, N / 2), 0);
	assert_int_equal(fh_peer_ack(rp, mine, 1), 0);
	fh_sleep_ms(500); /* the DELETE batches */
	fh_peer_close(rp);
	/* Reconnected: the second half again (the first half may come again
	 * too, at least once being the rule), and late acks of the first half
	 * and of the other device's ids. */
	assert_int_equal(fh_peer_open(rp, fx.rcv[0].id, fx.rcv[0].secret), 0);
	nagain = read_backlog(&fx.rcv[0], rp, again, N);
	assert_int_equal(fh_peer_ack(rp, mine, N / 2), 0);
	assert_int_equal(fh_peer_ack(rp, theirs, N), 0);
	fh_sleep_ms(500);
	pg = th_pg_connect(fx.conninfo);
	other_rows = th_pg_int(pg, "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
			       (long long)fx.rcv[1].id);
	my_rows = th_pg_int(pg, "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
			    (long long)fx.rcv[0].id);
	PQfinish(pg);
	fh_peer_close(rp);
	fh_peer_close(sp);
	snprintf(extra, sizeof(extra),
		 "bogus_acks=%zu duplicate_acks=%d late_acks=%d redelivered=%zu "
		 "other_device_rows=%lld/%d own_rows_left=%lld",
		 nb + N, N / 2 + 1, N / 2 + N, nagain, other_rows, N, my_rows);
	fh_report("bogus_acks", &sc, fh_drain_all(), extra);
	assert_int_equal(other_rows, N);
	assert_true(nagain >= N / 2);
	assert_int_equal(sc.delivered, 2 * N);
}

/* ---- order across many reconnects ---- */

/* A receiving device that connects, reads for a while and drops, @cycles
 * times (libferry, a new client each time, as an app restarted). */
static unsigned reconnect_cycles = 50;

static void *flaky_receiver(void *arg)
{
	struct fh_receiver *r = arg;

	for (unsigned i = 0; i < reconnect_cycles; i++) {
		struct ferry_client *c = fh_lf_new(NULL, r);
		int64_t end = fh_now_ms() + fh_rnd(&r->seed, 30, 300);

		while (fh_now_ms() < end)
			if (ferry_client_run(c, 10))
				break;
		ferry_client_free(c);
		fh_sleep_ms(fh_rnd(&r->seed, 0, 50));
	}
	return NULL;
}

static int all_acked(void)
{
	for (int i = 0; i < fx.nsnd; i++)
		for (uint64_t c = 1; c <= fx.snd[i].last; c++)
			if (!fx.snd[i].env[c].acked)
				return 0;
	return 1;
}

static void test_reorder(void **state)
{
	static const int users[] = { 0, 0 };
	unsigned seed = fh_seed(), queued = 400;
	int64_t t0 = fh_now_ms(), deadline;
	struct fh_score sc;
	char extra[160];

	if (not_selected("reorder"))
		return;
	reconnect_cycles = fh_pick(50, 200);
	fh_start_daemon("", "");
	fh_make_devices(2, 2, users, seed);
	/* 400 queued while fr0's two devices are away... */
	for (int i = 0; i < 2; i++) {
		fx.snd[i].limit = queued / 2;
		fx.snd[i].window = 32;
		assert_int_equal(pthread_create(&fx.snd[i].thread, NULL, fh_lf_sender, &fx.snd[i]),
				 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(fx.snd[i].thread, NULL);
	assert_true(all_acked());
	/* ...then live traffic while each device reconnects again and again. */
	for (int i = 0; i < 2; i++) {
		fx.snd[i].limit = 0;
		fx.snd[i].interval = 10;
		fx.snd[i].window = 8;
		atomic_store(&fx.snd[i].done, 0);
		assert_int_equal(pthread_create(&fx.snd[i].thread, NULL, fh_lf_sender, &fx.snd[i]),
				 0);
	}
	fh_start_threads(NULL, flaky_receiver);
	for (int i = 0; i < fx.nrcv; i++)
		pthread_join(fx.rcv[i].thread, NULL);
	fh_stop_senders();
	deadline = fh_now_ms() + 5000;
	while (!all_acked() && fh_now_ms() < deadline)
		fh_sleep_ms(20);
	snprintf(extra, sizeof(extra), "queued=%u reconnects=%u connects=%u+%u time=%.1fs", queued,
		 reconnect_cycles, fx.rcv[0].connects, fx.rcv[1].connects,
		 (double)(fh_now_ms() - t0) / 1000.0);
	fh_report("reorder", &sc, fh_drain_all(), extra);
	assert_true(sc.sent > queued);
}

/* ---- a database whose commits are not durable ---- */

/* The harness's config with require_durable = @mode instead of off. */
static char *durable_config(const char *conninfo, int admin, const char *mode)
{
	char *cfg = th_ferryd_config(conninfo, admin, FH_TOKEN), *at, *out;
	const char *key = "require_durable = off";
	size_t len = strlen(cfg) + 16;

	at = strstr(cfg, key);
	assert_non_null(at);
	out = malloc(len);
	assert_non_null(out);
	snprintf(out, len, "%.*srequire_durable = %s%s", (int)(at - cfg), cfg, mode,
		 at + strlen(key));
	free(cfg);
	return out;
}

static void test_require_durable(void **state)
{
	char *conninfo, *cfg, *path, *out = NULL, extra[256], db[128];
	int admin = th_free_port(), st_on, st_plain;
	PGconn *pg;
	PGresult *res;
	struct th_ferryd d;
	int warned;

	if (not_selected("require_durable"))
		return;
	conninfo = th_db_new("nodurable");
	pg = th_pg_connect(conninfo);
	res = th_pg_exec(pg, "SELECT current_database()");
	snprintf(db, sizeof(db), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	snprintf(extra, sizeof(extra), "ALTER DATABASE \"%s\" SET synchronous_commit = off", db);
	PQclear(th_pg_exec(pg, extra));
	PQfinish(pg);

	/* on: refused, naming the setting; exit code 5. */
	cfg = durable_config(conninfo, admin, "on");
	path = th_write_file("durable.ini", cfg);
	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL), 0);
	st_on = th_ferryd_cmd(path, (const char *[]){ "run", NULL }, &out);
	assert_int_equal(st_on, 5);
	assert_non_null(strstr(out, "synchronous_commit=off"));
	assert_non_null(strstr(out, "require_durable"));
	free(out);
	free(cfg);
	unlink(path);
	free(path);

	/* warn: it runs, and says so. */
	cfg = durable_config(conninfo, admin, "warn");
	th_ferryd_start(&d, cfg, admin);
	warned = th_log_count(&d, "event=store_not_durable");
	assert_true(th_log_count(&d, "synchronous_commit=off") >= 1);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	free(cfg);
	assert_int_equal(warned, 1);

	/* A database of the test cluster without the per-database setting is
	 * refused for fsync alone (the cluster runs with fsync = off). */
	free(conninfo);
	conninfo = th_db_new("fsyncoff");
	cfg = durable_config(conninfo, admin, "on");
	path = th_write_file("durable2.ini", cfg);
	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL), 0);
	st_plain = th_ferryd_cmd(path, (const char *[]){ "run", NULL }, &out);
	printf("faults: scenario=require_durable refused_synchronous_commit_off=%d "
	       "warned=%d refused_fsync_off=%d\n",
	       st_on == 5, warned, st_plain == 5);
	if (strstr(out, "fsync=off")) {
		assert_int_equal(st_plain, 5);
		assert_null(strstr(out, "synchronous_commit"));
	}
	free(out);
	free(cfg);
	unlink(path);
	free(path);
	free(conninfo);
}

static int teardown(void **state)
{
	fh_reset();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_require_durable, teardown),
		cmocka_unit_test_teardown(test_socket_drop, teardown),
		cmocka_unit_test_teardown(test_bogus_acks, teardown),
		cmocka_unit_test_teardown(test_retransmit, teardown),
		cmocka_unit_test_teardown(test_reorder, teardown),
		cmocka_unit_test_teardown(test_kill9, teardown),
		cmocka_unit_test_teardown(test_crash_points, teardown),
		cmocka_unit_test_teardown(test_pg_restart, teardown),
		cmocka_unit_test_teardown(test_pg_outage, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
