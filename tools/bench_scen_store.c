/*
 * bench_scen_store.c - ferry-bench's scenarios around the offline store,
 * on the event-loop generator (tools/bench_gen.c):
 *
 *   offline N --per-device K   N recipient devices stay away while
 *        --senders devices (each --window SENDs in flight) send them N x K
 *        envelopes, every ACK "stored": stored/s and send -> ACK latency;
 *        then the N connect at once and drain to QUEUE_EMPTY: drained/s,
 *        each device checked to get what was stored for it. ferryd's CPU
 *        per envelope of each phase, and PostgreSQL's with --pg-pid.
 *   reconnect-storm N          N devices connected; --stored K envelopes
 *        stored for 100 devices that are away; then ferryd is restarted
 *        (--restart-cmd CMD, run with /bin/sh -c while the devices keep
 *        trying; without it ferryd gets SIGTERM through --pid and something
 *        else must start it again). Every device reconnects at once when it
 *        loses its connection, then every 50-100 ms while it is refused:
 *        seconds until all are back, the peak of accepts per second (per
 *        100 ms), each device's time back (p50/p99/p999); then the away
 *        devices connect and drain, and every acknowledged envelope must
 *        arrive (lost = acknowledged before the restart, never delivered).
 *   push N                     N devices away with APNs tokens; one sender
 *        sends each an envelope (stored), and ferryd wakes each with a push
 *        to the mock APNs (tests/mock): pushes/s and, with --push-log (the
 *        mock's --log file, read as it grows), ACK -> push at the mock
 *        latency; ferryd's push counters from GET /v1/stats either way.
 *
 * Payloads carry the generator's header with a sequence number in place of
 * the send time, so the drains can tell each envelope apart.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tools/bench_gen_int.h"
#include "tools/bench_int.h"
#include "common/banned.h"

#define ST_AWAY_DEVICES 100	  /* reconnect-storm: devices the stored envelopes wait for */
#define ST_TIMEOUT_MS 120000	  /* any phase */
#define ST_BUCKET_NS 100000000ull /* accepts are counted per 100 ms */
#define ST_MAX_BUCKETS 1200

/* ---- shared ---- */

/* A scenario's state: every connection's, one generator. */
struct st {
	struct fb_opts *o;
	struct gen g;
	struct gen_conn *c;
	size_t n;
	/* Sending: the connections that send, what is left to send. */
	size_t first_sender, nsenders;
	uint64_t todo, sent, acked, stored_acks, nacks, errors;
	uint32_t nrecip; /* recipients are c[0 .. nrecip) */
	uint32_t *ring;	 /* per sender: recipient index by client id */
	uint64_t *seq_ring;
	uint64_t *t_ring; /* per sender: send time by client id */
	unsigned *inflight;
	uint64_t next_seq;
	uint64_t t_first, t_last;
	uint64_t *expect;   /* per recipient: envelopes stored for it */
	uint64_t *got;	    /* per recipient: DELIVERs of ours */
	uint8_t *empty;	    /* per recipient: QUEUE_EMPTY seen */
	uint8_t *seen;	    /* by sequence number: delivered (storm) */
	uint8_t *acked_seq; /* by sequence number: ACKed (storm) */
	uint64_t dups, delivers, t_last_empty;
	struct fb_samples lat;
	uint8_t payload[GEN_HDR + 84];
	/* reconnect-storm */
	uint64_t *retry_at, *back_ns, t_kill;
	unsigned buckets[ST_MAX_BUCKETS];
	size_t back;
	/* push */
	uint64_t *ack_ns;
};

#define RING 4096

static void st_ready(struct gen_conn *c, const struct proto_welcome *w)
{
	struct st *s = c->g->arg;

	if (s->t_kill && c->index >= s->nrecip && c->welcomes >= 2) {
		uint64_t now = fb_now_ns(), b = (now - s->t_kill) / ST_BUCKET_NS;

		if (b < ST_MAX_BUCKETS)
			s->buckets[b]++;
		if (!s->back_ns[c->index]) {
			s->back_ns[c->index] = now;
			s->back++;
		}
	}
}

static void send_more(struct st *s, struct gen_conn *c);

static void st_frame(struct gen_conn *c, const struct proto_frame *f, uint64_t now)
{
	struct st *s = c->g->arg;
	size_t k = c->index - s->first_sender;

	switch (f->type) {
	case PROTO_DELIVER: {
		const struct proto_bytes *p = &f->u.deliver.payload;
		uint64_t seq;

		if (c->index >= s->nrecip || p->len < GEN_HDR || fb_get_u32(p->p) != GEN_MAGIC)
			return;
		s->got[c->index]++;
		s->delivers++;
		seq = fb_get_u64(p->p + 8);
		if (s->seen && seq < s->next_seq) {
			s->dups += s->seen[seq];
			s->seen[seq] = 1;
		}
		return;
	}
	case PROTO_QUEUE_EMPTY:
		if (c->index < s->nrecip && !s->empty[c->index]) {
			s->empty[c->index] = 1;
			s->t_last_empty = now;
		}
		return;
	case PROTO_ACK:
	case PROTO_NACK: {
		uint64_t id = f->type == PROTO_ACK ? f->u.ack.client_id : f->u.nack.client_id;
		size_t slot = k * RING + (id & (RING - 1));

		if (c->index < s->first_sender || !s->inflight[k])
			return;
		s->inflight[k]--;
		if (f->type == PROTO_NACK) {
			s->nacks++;
			s->todo++; /* sent again */
		} else {
			s->acked++;
			s->t_last = now;
			if (f->u.ack.status == PROTO_ACK_STORED) {
				s->stored_acks++;
				s->expect[s->ring[slot]]++;
				if (s->acked_seq)
					s->acked_seq[s->seq_ring[slot]] = 1;
			} else {
				s->errors++;
			}
			if (s->ack_ns)
				s->ack_ns[s->ring[slot]] = now;
			if (fb_samples_add(&s->lat, now - s->t_ring[slot]))
				ferry_panic("ferry-bench: out of memory for samples");
		}
		send_more(s, c);
		return;
	}
	default:
		return;
	}
}

static void st_closed(struct gen_conn *c, int err, uint64_t code)
{
	struct st *s = c->g->arg;
	uint64_t now = fb_now_ns();

	if (!s->retry_at)
		return;
	/* Lost a live connection: again at once; refused: again in 50-100 ms. */
	s->retry_at[c->index] =
		now + (c->welcomes && err == 0 && c->tries <= 1
			       ? 0
			       : 50000000ull + (uint64_t)(rand() % 50) * 1000000ull);
}

/* Queue SENDs on @c while its window has room and envelopes are left. */
static void send_more(struct st *s, struct gen_conn *c)
{
	size_t k = c->index - s->first_sender;
	uint64_t id;

	while (s->todo && s->inflight[k] < s->o->window && c->state == GEN_READY) {
		uint32_t r = (uint32_t)(s->sent % s->nrecip);
		uint64_t seq = s->next_seq;

		fb_put_u64(s->payload + 8, seq);
		if (gen_conn_send_to(c, s->c[r].cred->user, s->payload, sizeof(s->payload), &id))
			break;
		if (!s->t_first)
			s->t_first = fb_now_ns();
		s->ring[k * RING + (id & (RING - 1))] = r;
		s->seq_ring[k * RING + (id & (RING - 1))] = seq;
		s->t_ring[k * RING + (id & (RING - 1))] = fb_now_ns();
		s->next_seq++;
		s->inflight[k]++;
		s->sent++;
		s->todo--;
	}
}

/* Send @total envelopes round robin to the recipients; wait for every answer. */
static int store_phase(struct st *s, uint64_t total)
{
	uint64_t deadline = fb_now_ns() + ST_TIMEOUT_MS * 1000000ull;

	s->todo = total;
	s->t_first = 0;
	while (!fb_interrupted && fb_now_ns() < deadline) {
		unsigned busy = 0;

		for (size_t k = 0; k < s->nsenders; k++) {
			send_more(s, &s->c[s->first_sender + k]);
			busy += s->inflight[k];
		}
		if (!s->todo && !busy)
			return 0;
		gen_run(&s->g, 5);
	}
	fprintf(stderr, "ferry-bench: the store phase did not finish in time\n");
	return -1;
}

/* Connect the recipients and read until each has had QUEUE_EMPTY. */
static int drain_phase(struct st *s)
{
	uint64_t deadline = fb_now_ns() + ST_TIMEOUT_MS * 1000000ull;
	size_t ready = gen_connect_all(&s->g, s->c, s->nrecip, GEN_CONNECT_INFLIGHT);

	if (ready < s->nrecip) {
		fprintf(stderr, "ferry-bench: %zu of %u recipients connected\n", ready, s->nrecip);
		return -1;
	}
	while (!fb_interrupted && fb_now_ns() < deadline) {
		size_t empty = 0;

		for (uint32_t r = 0; r < s->nrecip; r++)
			empty += s->empty[r];
		if (empty == s->nrecip)
			return 0;
		gen_run(&s->g, 5);
	}
	fprintf(stderr, "ferry-bench: the drain did not finish in time\n");
	return -1;
}

static int st_setup(struct st *s, struct fb_opts *o, const struct fb_cred *creds, size_t n,
		    uint32_t nrecip, size_t first_sender, size_t nsenders)
{
	static const struct gen_ops ops = { st_ready, st_frame, st_closed };

	s->o = o;
	s->n = n;
	s->nrecip = nrecip;
	s->first_sender = first_sender;
	s->nsenders = nsenders;
	s->c = calloc(n, sizeof(*s->c));
	s->ring = calloc(nsenders * RING, sizeof(*s->ring));
	s->seq_ring = calloc(nsenders * RING, sizeof(*s->seq_ring));
	s->t_ring = calloc(nsenders * RING, sizeof(*s->t_ring));
	s->inflight = calloc(nsenders, sizeof(*s->inflight));
	s->expect = calloc(nrecip, sizeof(*s->expect));
	s->got = calloc(nrecip, sizeof(*s->got));
	s->empty = calloc(nrecip, 1);
	if (!s->c || !s->ring || !s->seq_ring || !s->t_ring || !s->inflight || !s->expect ||
	    !s->got || !s->empty || gen_init(&s->g, o->host, o->port, o->sources, &ops, s))
		return -1;
	for (size_t i = 0; i < n; i++)
		gen_conn_init(&s->g, &s->c[i], &creds[i], (uint32_t)i, NULL);
	fb_put_u32(s->payload, GEN_MAGIC);
	for (size_t k = GEN_HDR; k < sizeof(s->payload); k++)
		s->payload[k] = (uint8_t)(k * 131);
	return 0;
}

static void st_free(struct st *s)
{
	for (size_t i = 0; s->c && i < s->n; i++)
		gen_conn_close(&s->c[i]);
	if (s->c)
		gen_release(&s->g);
	free(s->c);
	free(s->ring);
	free(s->seq_ring);
	free(s->t_ring);
	free(s->inflight);
	free(s->expect);
	free(s->got);
	free(s->empty);
	free(s->seen);
	free(s->acked_seq);
	free(s->retry_at);
	free(s->back_ns);
	free(s->ack_ns);
	free(s->lat.v);
}

static double pct_us(struct fb_samples *v, double p)
{
	qsort(v->v, v->n, sizeof(v->v[0]), fb_cmp_u64);
	return fb_pct_us(v->v, v->n, p);
}

static double tree_cpu(long pid)
{
	return pid ? fb_proc_tree_cpu_ns(pid) : NAN;
}

/* ---- offline N --per-device K ---- */

int fb_scen_offline(struct fb_opts *o)
{
	struct st s;
	struct fb_fixed fx;
	struct fb_json j;
	size_t n = o->n, ns = o->senders;
	uint64_t total = (uint64_t)n * o->per_device, t0, t1;
	double c0, c1, c2, p0, p1, p2, g0, g1, g2, stored_s, drained_s, lat_ack[3];
	struct fb_cred *creds;
	uint64_t before, left;
	size_t bad = 0;
	int rc = 1;

	if (!o->per_device) {
		fprintf(stderr, "ferry-bench: offline N needs --per-device K\n");
		return 2;
	}
	memset(&s, 0, sizeof(s));
	fb_raise_nofile();
	creds = fb_get_creds(o, n + ns, n);
	if (!creds || st_setup(&s, o, creds, n + ns, (uint32_t)n, n, ns))
		goto out;
	if (gen_connect_all(&s.g, s.c + n, ns, GEN_CONNECT_INFLIGHT) < ns) {
		fprintf(stderr, "ferry-bench: the senders did not connect\n");
		goto out;
	}
	c0 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	p0 = tree_cpu(o->pg_pid);
	g0 = fb_self_cpu_ns();
	if (store_phase(&s, total))
		goto out;
	c1 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	p1 = tree_cpu(o->pg_pid);
	g1 = fb_self_cpu_ns();
	stored_s = (double)(s.t_last - s.t_first) / 1e9;
	lat_ack[0] = pct_us(&s.lat, 50);
	lat_ack[1] = fb_pct_us(s.lat.v, s.lat.n, 99);
	lat_ack[2] = fb_pct_us(s.lat.v, s.lat.n, 99.9);
	t0 = fb_now_ns();
	if (drain_phase(&s))
		goto out;
	t1 = s.t_last_empty;
	c2 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	p2 = tree_cpu(o->pg_pid);
	g2 = fb_self_cpu_ns();
	/* Once more, after ferryd has had time to delete what was acknowledged:
	 * each device must find its queue empty. */
	for (uint64_t end = fb_now_ns() + 1000000000ull; fb_now_ns() < end;)
		gen_run(&s.g, 10);
	for (uint32_t r = 0; r < s.nrecip; r++) {
		gen_conn_close(&s.c[r]);
		s.empty[r] = 0;
	}
	before = s.delivers;
	if (drain_phase(&s))
		goto out;
	left = s.delivers - before;
	s.delivers = before;
	drained_s = (double)(t1 - t0) / 1e9;
	for (uint32_t r = 0; r < s.nrecip; r++)
		bad += s.got[r] != s.expect[r];

	fb_fixed_init(&fx);
	fx.envelopes_per_s = (double)s.stored_acks / stored_s;
	fx.p50_us = lat_ack[0];
	fx.p99_us = lat_ack[1];
	fx.p999_us = lat_ack[2];
	if (o->pid) {
		long rss, hwm;

		if (!fb_proc_mem_kb(o->pid, &rss, &hwm))
			fx.ferryd_rss_bytes = (double)rss * 1024.0;
	}
	fx.cpu_us_per_envelope = (c1 - c0) / 1000.0 / (double)s.stored_acks;
	fx.gen_cpu_us_per_envelope = (g1 - g0) / 1000.0 / (double)s.stored_acks;
	fb_json_begin(&j, "offline", o->label);
	fb_json_fixed(&j, &fx);
	fb_json_num(&j, "devices", (double)n, 0);
	fb_json_num(&j, "per_device", (double)o->per_device, 0);
	fb_json_num(&j, "senders", (double)ns, 0);
	fb_json_num(&j, "window", o->window, 0);
	fb_json_num(&j, "stored", (double)s.stored_acks, 0);
	fb_json_num(&j, "stored_per_s", fx.envelopes_per_s, 0);
	fb_json_num(&j, "drained", (double)s.delivers, 0);
	fb_json_num(&j, "drained_per_s", (double)s.delivers / drained_s, 0);
	fb_json_num(&j, "store_errors", (double)(s.errors + s.nacks), 0);
	fb_json_num(&j, "drain_errors", (double)bad, 0);
	fb_json_num(&j, "left_after_drain", (double)left, 0);
	fb_json_num(&j, "store_pg_cpu_us_per_envelope", (p1 - p0) / 1000.0 / (double)s.stored_acks,
		    2);
	fb_json_num(&j, "drain_cpu_us_per_envelope", (c2 - c1) / 1000.0 / (double)s.delivers, 2);
	fb_json_num(&j, "drain_pg_cpu_us_per_envelope", (p2 - p1) / 1000.0 / (double)s.delivers, 2);
	fb_json_num(&j, "drain_gen_cpu_us_per_envelope", (g2 - g1) / 1000.0 / (double)s.delivers,
		    2);
	fb_json_end(&j);
	printf("\noffline: %zu devices away x %zu envelopes from %zu senders (window %u)\n", n,
	       o->per_device, ns, o->window);
	printf("  stored  %8" PRIu64 " in %6.2f s: %8.0f/s (ferryd %.2f us, PostgreSQL %.2f us, "
	       "generator %.2f us CPU each)\n",
	       s.stored_acks, stored_s, fx.envelopes_per_s, fx.cpu_us_per_envelope,
	       (p1 - p0) / 1000.0 / (double)s.stored_acks, fx.gen_cpu_us_per_envelope);
	printf("  drained %8" PRIu64 " in %6.2f s: %8.0f/s (ferryd %.2f us, PostgreSQL %.2f us "
	       "CPU each)\n",
	       s.delivers, drained_s, (double)s.delivers / drained_s,
	       (c2 - c1) / 1000.0 / (double)s.delivers, (p2 - p1) / 1000.0 / (double)s.delivers);
	if (s.errors || s.nacks || bad)
		printf("  ACKs not 'stored' %" PRIu64 ", NACKs %" PRIu64
		       ", devices with a wrong count %zu\n",
		       s.errors, s.nacks, bad);
	if (left)
		printf("  %" PRIu64 " envelopes came again when the devices reconnected\n", left);
	rc = s.errors || bad || left || s.stored_acks != total ? 1 : 0;
out:
	st_free(&s);
	free(creds);
	return rc;
}

/* ---- reconnect-storm N ---- */

/* Reconnect every connection of [from, to) whose time has come. */
static void storm_retry(struct st *s, size_t from, size_t to)
{
	uint64_t now = fb_now_ns();

	for (size_t i = from; i < to; i++) {
		if (s->c[i].state != GEN_DOWN || s->retry_at[i] > now)
			continue;
		if (gen_conn_connect(&s->c[i]))
			s->retry_at[i] = now + 50000000ull;
	}
}

static unsigned peak_bucket(const struct st *s)
{
	unsigned m = 0;

	for (size_t b = 0; b < ST_MAX_BUCKETS; b++)
		m = s->buckets[b] > m ? s->buckets[b] : m;
	return m;
}

/*
 * The reconnect curve into @out: devices back in all at the end of each
 * 100 ms from the first one back to the last, comma-separated ("" if none
 * came back, truncated with "..." past @cap).
 */
static void storm_curve(const struct st *s, char *out, size_t cap)
{
	size_t first = ST_MAX_BUCKETS, last = 0, len = 0;
	unsigned long sum = 0;

	out[0] = '\0';
	for (size_t b = 0; b < ST_MAX_BUCKETS; b++) {
		if (!s->buckets[b])
			continue;
		first = b < first ? b : first;
		last = b;
	}
	for (size_t b = first; b <= last && b < ST_MAX_BUCKETS; b++) {
		int n;

		sum += s->buckets[b];
		n = snprintf(out + len, cap - len, "%s%lu", b == first ? "" : ",", sum);
		if (n < 0 || (size_t)n >= cap - len) {
			snprintf(out + (cap > 4 ? cap - 4 : 0), cap > 4 ? 4 : cap, "...");
			return;
		}
		len += (size_t)n;
	}
}

int fb_scen_storm(struct fb_opts *o)
{
	static char curve[8192];
	struct st s;
	struct fb_load restart = { .name = "restart", .cmd = o->restart_cmd, .pid = 0 };
	struct fb_fixed fx;
	struct fb_json j;
	size_t n = o->n, away = n < ST_AWAY_DEVICES ? n : ST_AWAY_DEVICES, total;
	uint64_t k = o->stored, deadline, t_all = 0, t_first = UINT64_MAX, lost = 0;
	struct fb_cred *creds;
	struct fb_samples back = { NULL, 0, 0 };
	int rc = 1;

	if (!o->restart_cmd && !o->pid) {
		fprintf(stderr, "ferry-bench: reconnect-storm needs --restart-cmd CMD or --pid\n");
		return 2;
	}
	memset(&s, 0, sizeof(s));
	total = away + 1 + n;
	fb_raise_nofile();
	creds = fb_get_creds(o, total, away);
	if (!creds || st_setup(&s, o, creds, total, (uint32_t)away, away, 1))
		goto out;
	s.seen = calloc(k + 1, 1);
	s.acked_seq = calloc(k + 1, 1);
	s.retry_at = calloc(total, sizeof(*s.retry_at));
	s.back_ns = calloc(total, sizeof(*s.back_ns));
	if (!s.seen || !s.acked_seq || !s.retry_at || !s.back_ns)
		goto out;
	if (gen_connect_all(&s.g, s.c + away, n + 1, GEN_CONNECT_INFLIGHT) < n + 1) {
		fprintf(stderr, "ferry-bench: not every device connected\n");
		goto out;
	}
	if (k && store_phase(&s, k))
		goto out;
	printf("reconnect-storm: %zu devices connected, %" PRIu64
	       " envelopes stored for %zu away; restarting ferryd\n",
	       n + 1, s.stored_acks, away);
	fflush(stdout);
	s.t_kill = fb_now_ns();
	if (o->restart_cmd) {
		if (fb_load_start(&restart, 1))
			goto out;
	} else if (kill((pid_t)o->pid, SIGTERM)) {
		fprintf(stderr, "ferry-bench: cannot signal ferryd (pid %ld): %s\n", o->pid,
			strerror(errno));
		goto out;
	}
	deadline = s.t_kill + ST_TIMEOUT_MS * 1000000ull;
	while (!fb_interrupted && fb_now_ns() < deadline && s.back < n + 1) {
		storm_retry(&s, away, total);
		gen_run(&s.g, 1);
		if (restart.pid)
			fb_load_running(&restart);
	}
	for (size_t i = away; i < total; i++) {
		if (!s.back_ns[i])
			continue;
		t_first = s.back_ns[i] < t_first ? s.back_ns[i] : t_first;
		t_all = s.back_ns[i] > t_all ? s.back_ns[i] : t_all;
		if (fb_samples_add(&back, s.back_ns[i] - s.t_kill))
			goto out;
	}
	while (restart.pid && fb_load_running(&restart) && fb_now_ns() < deadline)
		fb_sleep_ms(10);
	if (drain_phase(&s) == 0) {
		for (uint64_t q = 0; q < s.next_seq; q++)
			lost += s.acked_seq[q] && !s.seen[q];
	} else {
		lost = s.stored_acks;
	}

	fb_fixed_init(&fx);
	fx.p50_us = pct_us(&back, 50);
	fx.p99_us = fb_pct_us(back.v, back.n, 99);
	fx.p999_us = fb_pct_us(back.v, back.n, 99.9);
	fx.ferryd_rss_bytes = NAN;
	fb_json_begin(&j, "reconnect-storm", o->label);
	fb_json_fixed(&j, &fx);
	fb_json_num(&j, "devices", (double)(n + 1), 0);
	fb_json_num(&j, "back", (double)s.back, 0);
	fb_json_num(&j, "first_back_s", s.back ? (double)(t_first - s.t_kill) / 1e9 : NAN, 3);
	fb_json_num(&j, "all_back_s",
		    s.back == n + 1 ? (double)(t_all - s.t_kill) / 1e9 : (double)NAN, 3);
	fb_json_num(&j, "storm_s", s.back == n + 1 ? (double)(t_all - t_first) / 1e9 : NAN, 3);
	fb_json_num(&j, "peak_accepts_per_s", (double)peak_bucket(&s) * 1e9 / ST_BUCKET_NS, 0);
	fb_json_num(&j, "stored_before", (double)s.stored_acks, 0);
	fb_json_num(&j, "delivered_after", (double)s.delivers, 0);
	fb_json_num(&j, "duplicates", (double)s.dups, 0);
	fb_json_num(&j, "lost", (double)lost, 0);
	storm_curve(&s, curve, sizeof(curve));
	fb_json_str(&j, "curve_back_per_100ms", curve);
	fb_json_end(&j);
	printf("\nreconnect-storm: %zu of %zu devices back after the restart\n", s.back, n + 1);
	printf("  first back %.3f s, all back %.3f s after the restart began (the storm: %.3f s)\n",
	       s.back ? (double)(t_first - s.t_kill) / 1e9 : NAN,
	       s.back == n + 1 ? (double)(t_all - s.t_kill) / 1e9 : NAN,
	       s.back == n + 1 ? (double)(t_all - t_first) / 1e9 : NAN);
	printf("  peak accepts: %.0f/s (per 100 ms); per device p50 / p99 %.0f / %.0f ms\n",
	       (double)peak_bucket(&s) * 1e9 / ST_BUCKET_NS, fx.p50_us / 1000, fx.p99_us / 1000);
	printf("  stored before: %" PRIu64 ", delivered after: %" PRIu64 " (%" PRIu64
	       " duplicates), lost: %" PRIu64 "\n",
	       s.stored_acks, s.delivers, s.dups, lost);
	printf("  devices back, in all, every 100 ms from the first: %s\n", curve);
	rc = s.back == n + 1 && !lost && s.stored_acks == k ? 0 : 1;
out:
	if (restart.pid)
		fb_load_stop(&restart);
	free(back.v);
	st_free(&s);
	free(creds);
	return rc;
}

/* ---- push N ---- */

/* The push counters of GET /v1/stats, summed over the providers: ok at
 * @v[0], failed at @v[1], sent at @v[2], latency_avg_ms of the first at @v[3]. */
static int push_stats(const struct fb_opts *o, double *v)
{
	json_t *root, *prov, *p;
	char *body;
	size_t i;

	v[0] = v[1] = v[2] = v[3] = NAN;
	if (fb_admin_get(o, "/v1/stats", &body))
		return -1;
	root = json_loads(body, 0, NULL);
	free(body);
	prov = json_object_get(json_object_get(root, "push"), "providers");
	if (!json_is_array(prov)) {
		json_decref(root);
		return -1;
	}
	v[0] = v[1] = v[2] = 0;
	json_array_foreach(prov, i, p)
	{
		v[0] += (double)json_integer_value(json_object_get(p, "ok"));
		v[1] += (double)json_integer_value(json_object_get(p, "failed"));
		v[2] += (double)json_integer_value(json_object_get(p, "sent"));
		if (i == 0)
			v[3] = json_real_value(json_object_get(p, "latency_avg_ms"));
	}
	json_decref(root);
	return 0;
}

/* Read what the mock appended to @f; mark the tokens of this run (@prefix)
 * answered 200. The number newly seen. */
static size_t tail_log(FILE *f, const char *prefix, struct st *s, uint64_t *seen_ns, size_t n)
{
	char line[4096], key[96];
	size_t got = 0, kl;

	snprintf(key, sizeof(key), "\"token\":\"%s", prefix);
	kl = strlen(key);
	clearerr(f);
	while (fgets(line, sizeof(line), f)) {
		const char *t = strstr(line, key);
		char hex[9];
		unsigned long idx;
		char *end;

		if (!t || !strstr(line, "\"status\":200") || strlen(t + kl) < 8)
			continue;
		memcpy(hex, t + kl, 8);
		hex[8] = '\0';
		idx = strtoul(hex, &end, 16);
		if (*end)
			continue;
		if (idx < n && !seen_ns[idx]) {
			seen_ns[idx] = fb_now_ns();
			got++;
		}
	}
	return got;
}

int fb_scen_push(struct fb_opts *o)
{
	struct st s;
	struct fb_fixed fx;
	struct fb_json j;
	size_t n = o->n, seen = 0;
	uint64_t *seen_ns = NULL, t_last = 0, deadline;
	double st0[4], st1[4], c0, c1;
	char prefix[40], token[64];
	struct fb_cred *creds;
	struct fb_samples lat = { NULL, 0, 0 };
	FILE *log = NULL;
	int rc = 1;

	memset(&s, 0, sizeof(s));
	/* APNs tokens are hexadecimal: this run's 8 digits, then the device's. */
	snprintf(prefix, sizeof(prefix), "fb%08x",
		 (unsigned)(fb_now_ns() / 1000) ^ ((unsigned)getpid() << 12));
	creds = fb_get_creds(o, n + 1, n);
	seen_ns = calloc(n, sizeof(*seen_ns));
	if (!creds || !seen_ns || st_setup(&s, o, creds, n + 1, (uint32_t)n, n, 1))
		goto out;
	s.ack_ns = calloc(n, sizeof(*s.ack_ns));
	if (!s.ack_ns)
		goto out;
	for (size_t i = 0; i < n; i++) {
		snprintf(token, sizeof(token), "%s%08zx", prefix, i);
		if (fb_admin_put_push(o, creds[i].device_id, token))
			goto out;
	}
	if (o->push_log) {
		log = fopen(o->push_log, "r");
		if (!log || fseek(log, 0, SEEK_END)) {
			fprintf(stderr, "ferry-bench: %s: %s\n", o->push_log, strerror(errno));
			goto out;
		}
	}
	if (gen_connect_all(&s.g, s.c + n, 1, 1) < 1)
		goto out;
	push_stats(o, st0);
	c0 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	if (store_phase(&s, n))
		goto out;
	deadline = fb_now_ns() + 60000000000ull;
	while (!fb_interrupted && fb_now_ns() < deadline && seen < n) {
		if (log) {
			size_t got = tail_log(log, prefix, &s, seen_ns, n);

			if (got) {
				seen += got;
				t_last = fb_now_ns();
			}
			gen_run(&s.g, 1);
		} else {
			gen_run(&s.g, 50);
			if (push_stats(o, st1) == 0 && st1[0] + st1[1] - st0[0] - st0[1] >= n) {
				seen = n;
				t_last = fb_now_ns();
			}
		}
	}
	c1 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	push_stats(o, st1);
	for (size_t i = 0; log && i < n; i++) {
		if (seen_ns[i] && s.ack_ns[i] && seen_ns[i] >= s.ack_ns[i] &&
		    fb_samples_add(&lat, seen_ns[i] - s.ack_ns[i]))
			goto out;
	}

	fb_fixed_init(&fx);
	fx.envelopes_per_s =
		t_last > s.t_first ? (double)seen / ((double)(t_last - s.t_first) / 1e9) : NAN;
	fx.p50_us = pct_us(&lat, 50);
	fx.p99_us = fb_pct_us(lat.v, lat.n, 99);
	fx.p999_us = fb_pct_us(lat.v, lat.n, 99.9);
	fx.cpu_us_per_envelope = seen ? (c1 - c0) / 1000.0 / (double)seen : NAN;
	fb_json_begin(&j, "push", o->label);
	fb_json_fixed(&j, &fx);
	fb_json_num(&j, "devices", (double)n, 0);
	fb_json_num(&j, "pushes", (double)seen, 0);
	fb_json_num(&j, "pushes_per_s", fx.envelopes_per_s, 0);
	fb_json_num(&j, "stored", (double)s.stored_acks, 0);
	fb_json_num(&j, "push_ok", st1[0] - st0[0], 0);
	fb_json_num(&j, "push_failed", st1[1] - st0[1], 0);
	fb_json_num(&j, "provider_latency_avg_ms", st1[3], 2);
	fb_json_end(&j);
	printf("\npush: %zu devices away with APNs tokens, one envelope each\n", n);
	printf("  pushes seen %zu of %zu, %.0f/s (first SEND to last push)\n", seen, n,
	       fx.envelopes_per_s);
	printf("  ACK -> push at the mock p50 / p99: %.1f / %.1f ms%s\n", fx.p50_us / 1000,
	       fx.p99_us / 1000, log ? "" : " (no --push-log)");
	printf("  ferryd: %.0f ok, %.0f failed; provider latency %.2f ms on average; %.1f us CPU "
	       "per push\n",
	       st1[0] - st0[0], st1[1] - st0[1], st1[3], fx.cpu_us_per_envelope);
	rc = seen == n ? 0 : 1;
out:
	if (log)
		fclose(log);
	free(lat.v);
	free(seen_ns);
	st_free(&s);
	free(creds);
	return rc;
}
