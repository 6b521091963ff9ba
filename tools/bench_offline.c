/*
 * bench_offline.c - ferry-bench's offline mode (--offline N --per-device K):
 * how fast the offline store takes envelopes for devices that are away, and
 * how fast reconnecting devices drain them.
 *
 * Devices: N recipients (one per user, never connected during the store
 * phase) and M senders (--senders, default 4), from the admin API or
 * --creds (recipients first). Each run has three phases on the same devices:
 *
 *   store   the senders, connected throughout, send N * K envelopes between
 *           them: envelope g (0-based) goes from sender g mod M to recipient
 *           g mod N, so each recipient gets exactly K. Each sender keeps at
 *           most W (--window) SENDs unacknowledged. Every answer must be ACK
 *           status 1, stored; an ACK delivered, a NACK (retried by libferry
 *           or final) or no answer by the deadline is a store error.
 *           stored_per_s: ACKs stored over first SEND to last ACK.
 *   drain   the N recipients connect at once and drain their queues: WELCOME
 *           (its pending is summed), the stored DELIVERs, acknowledged by
 *           libferry in batches (the acks of one read in one DELIVER_ACK),
 *           until QUEUE_EMPTY. libferry reports QUEUE_EMPTY only once every
 *           envelope before it was acknowledged on the socket, so a device's
 *           drain ends there. drained_per_s: this run's envelopes delivered
 *           over the time from the connects to the last QUEUE_EMPTY.
 *   verify  the recipients connect once more; WELCOME's pending must be 0 on
 *           every one (the server deleted what was acknowledged). They
 *           acknowledge nothing on this connection. Retried a few times
 *           apart, since the deletes of the last acks may still be under way.
 *
 * Drain errors: a device without QUEUE_EMPTY by the deadline, an envelope of
 * this run missing or delivered to the wrong device, envelopes left after
 * the drain. Envelopes of an earlier run (stale) are acknowledged and
 * counted, not drained.
 *
 * Senders take the DELIVER_RECEIPTs the drain makes (ferryd's delivered
 * receipts for the recipients' DELIVER_ACKs) and count them; left
 * unacknowledged, ferryd would store them after [gateway] ack_timeout, rows
 * of the senders' that are no part of the store being measured. Before the
 * devices close, the last of them are waited for (linger()).
 *
 * With --pid (ferryd) and --pg-pid (the PostgreSQL postmaster, whose
 * children are its backends and helpers), their CPU time per envelope is
 * reported for each phase, and this process's own, since the three share
 * the machine's cores.
 *
 * Threads: one per device, each running its libferry client with a short
 * timeout; a device's counters are written by its thread only. Senders are
 * sequenced as in online mode (go, done_round, parked_round); recipients'
 * threads start together at a gate, and the main thread reads their
 * counters after joining them.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/ferry.h"
#include "tools/bench_int.h"
#include "common/banned.h"

#define OFF_MAGIC 0x464f4246u /* "FBOF" */
#define OFF_HDR_LEN 24	      /* magic, run, sender, recipient (u32 each), send time (u64) */
#define MAX_RUNS 20
#define TICK_MS 5		 /* how often a device thread looks at the run state */
#define CONNECT_TIMEOUT_MS 30000 /* all devices authenticated */
#define LATE_MS 5000		 /* after a phase's deadline, for answers in flight */
#define VERIFY_TRIES 5
#define VERIFY_GAP_MS 200
#define RECEIPT_QUIET_MS 200 /* no DELIVER_RECEIPT for this long: none is coming */
#define LINGER_MS 3000	     /* the most the last receipts are waited for */

struct off;

struct dev {
	struct off *b;
	int sender;
	unsigned index;
	struct fb_cred cred;
	struct ferry_client *c;
	pthread_t thread;
	int started;
	atomic_int ready; /* authenticated (this connection) */
	atomic_int final; /* stopped for good */
	atomic_uint disconnects;
	/* A sender's run: its thread writes, the main thread reads once parked. */
	uint8_t *payload;
	unsigned round; /* 1-based; 0: parked */
	size_t share;	/* SENDs per run */
	uint64_t base_id;
	size_t sent, acked, stored, wrong, nacks, lost, inflight;
	uint64_t *send_ns;
	struct fb_samples ack_lat;
	uint64_t t_first, t_last;
	atomic_uint done_round, parked_round;
	/* A recipient's connection: its thread writes, the main thread reads
	 * after joining it. */
	int keep; /* acknowledge deliveries (drain), or leave them (verify) */
	uint64_t pending, drained_srv, t_empty;
	size_t delivered, stale, misrouted, ack_frames, ack_ids;
	atomic_int caught_up;
	/* DELIVER_RECEIPTs taken: the device's thread adds, the main thread reads. */
	atomic_ullong rcpt_frames, rcpt_ids;
};

enum fig {
	F_SENT,
	F_STORED,
	F_WRONG,
	F_NACKS,
	F_LOST,
	F_STORE_ERR,
	F_STORE_S,
	F_STORE_RATE,
	F_ACK_P50,
	F_ACK_P99,
	F_ACK_MAX,
	F_S_FERRYD,
	F_S_PG,
	F_S_SELF,
	F_PENDING,
	F_DRAINED,
	F_QE_DRAINED,
	F_STALE,
	F_DRAIN_S,
	F_DRAIN_RATE,
	F_DEV_P50,
	F_DEV_MAX,
	F_IDS_PER_ACK,
	F_LEFT_FIRST,
	F_LEFT,
	F_DRAIN_ERR,
	F_D_FERRYD,
	F_D_PG,
	F_D_SELF,
	NFIG,
};

static const struct {
	const char *key, *what;
	int prec;
} figs[NFIG] = {
	[F_SENT] = { "sent", "store: SENDs made", 0 },
	[F_STORED] = { "stored", "store: ACKs 'stored'", 0 },
	[F_WRONG] = { "acked_not_stored", "store: ACKs not 'stored' (errors)", 0 },
	[F_NACKS] = { "nacks", "store: NACKs (errors)", 0 },
	[F_LOST] = { "lost", "store: refused for good (errors)", 0 },
	[F_STORE_ERR] = { "store_errors", "store: errors in all", 0 },
	[F_STORE_S] = { "store_s", "store: first SEND to last ACK (s)", 3 },
	[F_STORE_RATE] = { "stored_per_s", "store: envelopes stored/s", 0 },
	[F_ACK_P50] = { "store_ack_p50_us", "store: send -> ACK p50 (us)", 0 },
	[F_ACK_P99] = { "store_ack_p99_us", "store: send -> ACK p99 (us)", 0 },
	[F_ACK_MAX] = { "store_ack_max_us", "store: send -> ACK max (us)", 0 },
	[F_S_FERRYD] = { "store_ferryd_cpu_us_per_env", "store: ferryd CPU/env (us)", 2 },
	[F_S_PG] = { "store_pg_cpu_us_per_env", "store: PostgreSQL CPU/env (us)", 2 },
	[F_S_SELF] = { "store_bench_cpu_us_per_env", "store: ferry-bench CPU/env (us)", 2 },
	[F_PENDING] = { "pending_at_welcome", "drain: WELCOME pending, summed", 0 },
	[F_DRAINED] = { "drained", "drain: envelopes delivered and acked", 0 },
	[F_QE_DRAINED] = { "queue_empty_drained", "drain: QUEUE_EMPTY counts, summed", 0 },
	[F_STALE] = { "stale", "drain: earlier runs' envelopes", 0 },
	[F_DRAIN_S] = { "drain_s", "drain: connects to last QUEUE_EMPTY (s)", 3 },
	[F_DRAIN_RATE] = { "drained_per_s", "drain: envelopes drained/s", 0 },
	[F_DEV_P50] = { "drain_device_p50_ms", "drain: one device's time p50 (ms)", 1 },
	[F_DEV_MAX] = { "drain_device_max_ms", "drain: one device's time max (ms)", 1 },
	[F_IDS_PER_ACK] = { "ids_per_deliver_ack", "drain: ids per DELIVER_ACK frame", 1 },
	[F_LEFT_FIRST] = { "left_at_first_check", "drain: WELCOME pending, first check", 0 },
	[F_LEFT] = { "left_after_drain", "drain: WELCOME pending, last check", 0 },
	[F_DRAIN_ERR] = { "drain_errors", "drain: errors in all", 0 },
	[F_D_FERRYD] = { "drain_ferryd_cpu_us_per_env", "drain: ferryd CPU/env (us)", 2 },
	[F_D_PG] = { "drain_pg_cpu_us_per_env", "drain: PostgreSQL CPU/env (us)", 2 },
	[F_D_SELF] = { "drain_bench_cpu_us_per_env", "drain: ferry-bench CPU/env (us)", 2 },
};

struct off {
	const struct fb_opts *o;
	struct dev *recv, *send; /* o->offline recipients, o->senders senders */
	atomic_uint go;		 /* the run whose store phase is on (1-based), 0: none */
	atomic_uint run;	 /* the run in progress, for recipients' counting */
	atomic_int stop_sending;
	atomic_int quit_senders, quit_recv;
	pthread_mutex_t gate_lock;
	pthread_cond_t gate;
	int gate_open;
	double v[MAX_RUNS][NFIG];
	unsigned runs, disconnects;
};

/* ---- the cores' other users ---- */

struct cpu_mark {
	double ferryd, pg, self;
};

static void cpu_read(const struct off *b, struct cpu_mark *m)
{
	m->ferryd = b->o->pid ? fb_proc_cpu_ns(b->o->pid) : NAN;
	m->pg = b->o->pg_pid ? fb_proc_tree_cpu_ns(b->o->pg_pid) : NAN;
	m->self = fb_self_cpu_ns();
}

/* CPU per envelope in us between @a and @b, at @v[0..2]. */
static void cpu_figs(const struct cpu_mark *a, const struct cpu_mark *b, double n, double *v)
{
	v[0] = n > 0 ? (b->ferryd - a->ferryd) / 1000.0 / n : NAN;
	v[1] = n > 0 ? (b->pg - a->pg) / 1000.0 / n : NAN;
	v[2] = n > 0 ? (b->self - a->self) / 1000.0 / n : NAN;
}

/* ---- callbacks, both kinds of device ---- */

static void top_up(struct dev *d);

static void on_connected(void *arg, const struct ferry_welcome *w)
{
	struct dev *d = arg;

	if (!atomic_load(&d->ready))
		d->pending = w->pending; /* the first WELCOME of this connection's life */
	atomic_store(&d->ready, 1);
}

static void on_disconnected(void *arg, enum ferry_err why, const char *text, uint64_t retry_ms)
{
	struct dev *d = arg;

	atomic_fetch_add(&d->disconnects, 1);
	if (d->b->o->verbose)
		fprintf(stderr, "ferry-bench: device %" PRIu64 " lost its connection: %s\n",
			d->cred.device_id, text);
}

static void on_server_error(void *arg, uint64_t code, const char *text, int final)
{
	struct dev *d = arg;

	if (final) {
		atomic_store(&d->final, 1);
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": %s: %s\n", d->cred.device_id,
			proto_error_name(code), text);
	}
}

/* A DELIVER_RECEIPT (to a sender): counted and taken. */
static int on_receipt(void *arg, const struct ferry_receipt *r)
{
	struct dev *d = arg;

	atomic_fetch_add_explicit(&d->rcpt_frames, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->rcpt_ids, r->n, memory_order_relaxed);
	return 0;
}

/* ---- recipients ---- */

static int on_deliver(void *arg, const struct ferry_envelope *env)
{
	struct dev *d = arg;
	unsigned run = atomic_load(&d->b->run);

	if (env->payload_len >= OFF_HDR_LEN && fb_get_u32(env->payload) == OFF_MAGIC) {
		if (fb_get_u32(env->payload + 4) != run)
			d->stale++;
		else if (fb_get_u32(env->payload + 12) != d->index)
			d->misrouted++;
		else
			d->delivered++;
	}
	return d->keep ? 0 : 1;
}

static void on_deliver_acked(void *arg, const struct ferry_acked *acked, size_t n)
{
	struct dev *d = arg;

	d->ack_frames++;
	d->ack_ids += n;
}

static void on_queue_empty(void *arg, uint64_t drained)
{
	struct dev *d = arg;

	d->drained_srv += drained;
	if (!atomic_load(&d->caught_up)) {
		d->t_empty = fb_now_ns();
		atomic_store(&d->caught_up, 1);
	}
}

/* ---- senders ---- */

/* The SEND @client_id of this run, or -1. */
static long long send_index(const struct dev *d, uint64_t client_id)
{
	if (!d->round || client_id < d->base_id || client_id - d->base_id >= d->sent)
		return -1;
	return (long long)(client_id - d->base_id);
}

static void on_send_acked(void *arg, uint64_t client_id, uint64_t server_id, unsigned status)
{
	struct dev *d = arg;
	long long i = send_index(d, client_id);
	uint64_t now = fb_now_ns();

	if (i < 0)
		return;
	if (fb_samples_add(&d->ack_lat, now - d->send_ns[i]))
		ferry_panic("ferry-bench: out of memory for samples");
	d->acked++;
	if (status == PROTO_ACK_STORED)
		d->stored++;
	else
		d->wrong++;
	d->inflight--;
	d->t_last = now;
	top_up(d);
}

static void on_send_nacked(void *arg, uint64_t client_id, uint64_t reason, const char *text,
			   int final)
{
	struct dev *d = arg;

	if (send_index(d, client_id) < 0)
		return;
	d->nacks++;
	if (d->b->o->verbose)
		fprintf(stderr, "ferry-bench: NACK %s (%s)%s\n", proto_nack_name(reason), text,
			final ? ", final" : ", retried");
	if (!final)
		return; /* libferry sends it again after a backoff */
	d->lost++;
	d->inflight--;
	top_up(d);
}

/* Queue SENDs while the window has room and the run wants more. */
static void top_up(struct dev *d)
{
	const struct fb_opts *o = d->b->o;
	uint64_t id, t;

	while (d->round && d->inflight < o->window && d->sent < d->share &&
	       !atomic_load(&d->b->stop_sending)) {
		size_t g = d->index + d->sent * o->senders;
		unsigned r = (unsigned)(g % o->offline);

		t = fb_now_ns();
		fb_put_u32(d->payload + 4, d->round);
		fb_put_u32(d->payload + 12, r);
		fb_put_u64(d->payload + 16, t);
		if (ferry_client_send(d->c, d->b->recv[r].cred.user, 0, d->payload, o->size, &id) !=
		    FERRY_OK)
			break; /* the queue is full: the next answer makes room */
		if (d->sent == 0) {
			d->base_id = id;
			d->t_first = t;
		}
		if (id != d->base_id + d->sent)
			ferry_panic("ferry-bench: client ids are not consecutive");
		d->send_ns[d->sent++] = t;
		d->inflight++;
	}
}

static void sender_tick(struct dev *d)
{
	struct off *b = d->b;
	unsigned go = atomic_load(&b->go);

	if (go && !d->round && atomic_load(&d->parked_round) < go) {
		d->round = go;
		d->sent = d->acked = d->stored = d->wrong = d->nacks = d->lost = d->inflight = 0;
		d->ack_lat.n = 0;
		d->t_first = d->t_last = 0;
		top_up(d);
	} else if (!go && d->round) {
		atomic_store(&d->parked_round, d->round);
		d->round = 0;
	}
	if (!d->round)
		return;
	top_up(d);
	if (d->acked + d->lost == d->share || (atomic_load(&b->stop_sending) && d->inflight == 0))
		atomic_store(&d->done_round, d->round);
}

static void *sender_main(void *arg)
{
	struct dev *d = arg;

	while (!atomic_load(&d->b->quit_senders)) {
		sender_tick(d);
		if (ferry_client_run(d->c, TICK_MS) == FERRY_EAUTH) {
			atomic_store(&d->final, 1);
			break;
		}
	}
	return NULL;
}

static void *recipient_main(void *arg)
{
	struct dev *d = arg;
	struct off *b = d->b;

	pthread_mutex_lock(&b->gate_lock);
	while (!b->gate_open)
		pthread_cond_wait(&b->gate, &b->gate_lock);
	pthread_mutex_unlock(&b->gate_lock);
	while (!atomic_load(&b->quit_recv)) {
		if (ferry_client_run(d->c, TICK_MS) == FERRY_EAUTH) {
			atomic_store(&d->final, 1);
			break;
		}
	}
	return NULL;
}

/* ---- set-up ---- */

static int dev_client(struct dev *d)
{
	const struct fb_opts *o = d->b->o;
	size_t dedup = o->per_device > FERRY_DEFAULT_DEDUP_WINDOW ? o->per_device
								  : FERRY_DEFAULT_DEDUP_WINDOW;
	struct ferry_callbacks cb = {
		.connected = on_connected,
		.disconnected = on_disconnected,
		.server_error = on_server_error,
		.receipt = on_receipt,
	};
	struct ferry_config cfg = {
		.host = o->host,
		.port = o->port,
		.device_id = d->cred.device_id,
		.secret = d->cred.secret,
		.secret_len = strlen(d->cred.secret),
		.connect_timeout_ms = CONNECT_TIMEOUT_MS,
		.dedup_window = d->sender ? 16 : dedup,
		.max_queue = d->sender ? o->window + 1 : 1,
	};
	char err[256];

	if (d->sender) {
		cb.send_acked = on_send_acked;
		cb.send_nacked = on_send_nacked;
	} else {
		cb.deliver = on_deliver;
		cb.deliver_acked = on_deliver_acked;
		cb.queue_empty = on_queue_empty;
	}
	if (ferry_client_new(&cfg, &cb, d, &d->c, err, sizeof(err)) != FERRY_OK) {
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": %s\n", d->cred.device_id, err);
		return -1;
	}
	return 0;
}

static int setup(struct off *b, const struct fb_cred *creds)
{
	const struct fb_opts *o = b->o;
	size_t total = (size_t)o->offline * o->per_device;

	b->recv = calloc(o->offline, sizeof(*b->recv));
	b->send = calloc(o->senders, sizeof(*b->send));
	if (!b->recv || !b->send)
		return -1;
	for (unsigned i = 0; i < o->offline; i++) {
		b->recv[i].b = b;
		b->recv[i].index = i;
		b->recv[i].cred = creds[i];
	}
	for (unsigned j = 0; j < o->senders; j++) {
		struct dev *d = &b->send[j];

		d->b = b;
		d->sender = 1;
		d->index = j;
		d->cred = creds[o->offline + j];
		d->share = j < total ? (total - j + o->senders - 1) / o->senders : 0;
		d->payload = calloc(1, o->size);
		d->send_ns = calloc(d->share ? d->share : 1, sizeof(uint64_t));
		if (!d->payload || !d->send_ns)
			return -1;
		fb_put_u32(d->payload, OFF_MAGIC);
		fb_put_u32(d->payload + 8, j);
		for (size_t k = OFF_HDR_LEN; k < o->size; k++)
			d->payload[k] = (uint8_t)(k * 131 + j);
		if (dev_client(d))
			return -1;
	}
	return 0;
}

/* Start the senders' threads; wait until all are authenticated. */
static int senders_connect(struct off *b)
{
	uint64_t deadline = fb_now_ns() + CONNECT_TIMEOUT_MS * 1000000ull;
	unsigned n = b->o->senders;

	for (unsigned j = 0; j < n; j++) {
		if (pthread_create(&b->send[j].thread, NULL, sender_main, &b->send[j])) {
			fprintf(stderr, "ferry-bench: cannot start a thread\n");
			return -1;
		}
		b->send[j].started = 1;
	}
	for (;;) {
		unsigned ready = 0, final = 0;

		for (unsigned j = 0; j < n; j++) {
			ready += atomic_load(&b->send[j].ready) != 0;
			final += atomic_load(&b->send[j].final) != 0;
		}
		if (final) {
			fprintf(stderr, "ferry-bench: %u sender(s) were refused\n", final);
			return -1;
		}
		if (ready == n)
			return 0;
		if (fb_now_ns() >= deadline || fb_interrupted) {
			fprintf(stderr, "ferry-bench: %u of %u senders connected in time\n", ready,
				n);
			return -1;
		}
		fb_sleep_ms(2);
	}
}

static void teardown(struct off *b)
{
	atomic_store(&b->quit_senders, 1);
	for (unsigned j = 0; b->send && j < b->o->senders; j++) {
		struct dev *d = &b->send[j];

		if (d->started)
			pthread_join(d->thread, NULL);
		ferry_client_free(d->c);
		free(d->payload);
		free(d->send_ns);
		free(d->ack_lat.v);
	}
	free(b->send);
	free(b->recv);
}

/* ---- the store phase ---- */

static int wait_senders(struct off *b, int parked, unsigned round, uint64_t deadline)
{
	for (;;) {
		unsigned behind = 0;

		for (unsigned j = 0; j < b->o->senders; j++) {
			struct dev *d = &b->send[j];

			if (atomic_load(parked ? &d->parked_round : &d->done_round) < round)
				behind++;
		}
		if (!behind)
			return 0;
		if (fb_now_ns() >= deadline || fb_interrupted)
			return -1;
		fb_sleep_ms(1);
	}
}

static int store_phase(struct off *b, unsigned round, double *v)
{
	const struct fb_opts *o = b->o;
	uint64_t start = fb_now_ns(), t0 = UINT64_MAX, t1 = 0;
	struct fb_samples all = { NULL, 0, 0 };
	struct cpu_mark c0, c1;
	int complete;

	cpu_read(b, &c0);
	atomic_store(&b->stop_sending, 0);
	atomic_store(&b->go, round);
	complete = wait_senders(b, 0, round, start + (uint64_t)(o->duration * 1e9)) == 0;
	if (!complete) {
		atomic_store(&b->stop_sending, 1);
		complete = wait_senders(b, 0, round, fb_now_ns() + LATE_MS * 1000000ull) == 0;
	}
	cpu_read(b, &c1);
	atomic_store(&b->go, 0);
	if (wait_senders(b, 1, round, fb_now_ns() + 10000000000ull)) {
		fprintf(stderr, "ferry-bench: a sender did not stop\n");
		return -1;
	}
	for (unsigned j = 0; j < o->senders; j++) {
		const struct dev *d = &b->send[j];

		v[F_SENT] += (double)d->sent;
		v[F_STORED] += (double)d->stored;
		v[F_WRONG] += (double)d->wrong;
		v[F_NACKS] += (double)d->nacks;
		v[F_LOST] += (double)d->lost;
		/* what was not sent or not answered at all */
		v[F_STORE_ERR] += (double)(d->share - d->acked - d->lost);
		if (d->sent && d->t_first < t0)
			t0 = d->t_first;
		if (d->t_last > t1)
			t1 = d->t_last;
		for (size_t k = 0; k < d->ack_lat.n; k++)
			if (fb_samples_add(&all, d->ack_lat.v[k]))
				return -1;
	}
	v[F_STORE_ERR] += v[F_WRONG] + v[F_NACKS] + v[F_LOST];
	v[F_STORE_S] = t1 > t0 ? (double)(t1 - t0) / 1e9 : NAN;
	v[F_STORE_RATE] = v[F_STORED] / v[F_STORE_S];
	qsort(all.v, all.n, sizeof(all.v[0]), fb_cmp_u64);
	v[F_ACK_P50] = fb_pct_us(all.v, all.n, 50);
	v[F_ACK_P99] = fb_pct_us(all.v, all.n, 99);
	v[F_ACK_MAX] = fb_pct_us(all.v, all.n, 100);
	free(all.v);
	cpu_figs(&c0, &c1, v[F_STORED], &v[F_S_FERRYD]);
	if (!complete)
		fprintf(stderr, "ferry-bench: run %u: SENDs still unanswered at the deadline\n",
			round);
	return 0;
}

/* ---- the drain and verify phases ---- */

/*
 * Connect every recipient at once (@keep: acknowledging what comes) and run
 * them until @done says so or @deadline (ns) passes; *@t0 gets the moment
 * the gate opened. Returns 0, or -1 if a device was refused or threads
 * could not start. The clients are freed and the threads joined; the
 * devices' counters stay for the caller.
 */
static int recipients_pass(struct off *b, int keep, int (*done)(struct off *b), uint64_t *t0,
			   uint64_t deadline_ms, struct cpu_mark *c1)
{
	unsigned n = b->o->offline, started = 0;
	uint64_t deadline;
	int rc = 0;

	atomic_store(&b->quit_recv, 0);
	b->gate_open = 0;
	for (unsigned i = 0; i < n; i++) {
		struct dev *d = &b->recv[i];

		d->keep = keep;
		d->pending = d->drained_srv = d->t_empty = 0;
		d->delivered = d->stale = d->misrouted = d->ack_frames = d->ack_ids = 0;
		atomic_store(&d->ready, 0);
		atomic_store(&d->final, 0);
		atomic_store(&d->caught_up, 0);
		if (dev_client(d)) {
			rc = -1;
			break;
		}
		if (pthread_create(&d->thread, NULL, recipient_main, d)) {
			fprintf(stderr, "ferry-bench: cannot start a thread\n");
			ferry_client_free(d->c);
			d->c = NULL;
			rc = -1;
			break;
		}
		started++;
	}
	pthread_mutex_lock(&b->gate_lock);
	*t0 = fb_now_ns();
	b->gate_open = 1;
	pthread_cond_broadcast(&b->gate);
	pthread_mutex_unlock(&b->gate_lock);
	deadline = *t0 + deadline_ms * 1000000ull;
	while (rc == 0 && !done(b) && !fb_interrupted) {
		unsigned final = 0;

		for (unsigned i = 0; i < n; i++)
			final += atomic_load(&b->recv[i].final) != 0;
		if (final) {
			fprintf(stderr, "ferry-bench: %u recipient(s) were refused\n", final);
			rc = -1;
		}
		if (fb_now_ns() >= deadline)
			break;
		fb_sleep_ms(1);
	}
	if (c1)
		cpu_read(b, c1);
	atomic_store(&b->quit_recv, 1);
	for (unsigned i = 0; i < started; i++) {
		struct dev *d = &b->recv[i];

		pthread_join(d->thread, NULL);
		b->disconnects += atomic_load(&d->disconnects);
		atomic_store(&d->disconnects, 0);
		ferry_client_free(d->c);
		d->c = NULL;
	}
	return rc;
}

static int all_caught_up(struct off *b)
{
	for (unsigned i = 0; i < b->o->offline; i++)
		if (!atomic_load(&b->recv[i].caught_up))
			return 0;
	return 1;
}

static int all_ready(struct off *b)
{
	for (unsigned i = 0; i < b->o->offline; i++)
		if (!atomic_load(&b->recv[i].ready))
			return 0;
	return 1;
}

static int drain_phase(struct off *b, unsigned round, double *v)
{
	unsigned n = b->o->offline, late = 0;
	struct fb_samples per = { NULL, 0, 0 };
	double frames = 0, ids = 0, misrouted = 0;
	struct cpu_mark c0, c1;
	uint64_t t0, t1 = 0;

	atomic_store(&b->run, round);
	cpu_read(b, &c0);
	if (recipients_pass(b, 1, all_caught_up, &t0, (uint64_t)(b->o->duration * 1000) + LATE_MS,
			    &c1))
		return -1;
	for (unsigned i = 0; i < n; i++) {
		const struct dev *d = &b->recv[i];

		v[F_PENDING] += (double)d->pending;
		v[F_DRAINED] += (double)d->delivered;
		v[F_QE_DRAINED] += (double)d->drained_srv;
		v[F_STALE] += (double)d->stale;
		misrouted += (double)d->misrouted;
		frames += (double)d->ack_frames;
		ids += (double)d->ack_ids;
		if (!atomic_load(&d->caught_up)) {
			late++;
			continue;
		}
		if (d->t_empty > t1)
			t1 = d->t_empty;
		if (fb_samples_add(&per, d->t_empty - t0))
			return -1;
	}
	v[F_DRAIN_S] = t1 > t0 ? (double)(t1 - t0) / 1e9 : NAN;
	v[F_DRAIN_RATE] = v[F_DRAINED] / v[F_DRAIN_S];
	qsort(per.v, per.n, sizeof(per.v[0]), fb_cmp_u64);
	v[F_DEV_P50] = fb_pct_us(per.v, per.n, 50) / 1000.0;
	v[F_DEV_MAX] = fb_pct_us(per.v, per.n, 100) / 1000.0;
	free(per.v);
	v[F_IDS_PER_ACK] = frames > 0 ? ids / frames : NAN;
	cpu_figs(&c0, &c1, v[F_DRAINED], &v[F_D_FERRYD]);
	v[F_DRAIN_ERR] = fabs(v[F_STORED] - v[F_DRAINED]) + misrouted + late;
	if (late)
		fprintf(stderr, "ferry-bench: run %u: %u recipient(s) had no QUEUE_EMPTY in time\n",
			round, late);
	if (misrouted)
		fprintf(stderr, "ferry-bench: run %u: %.0f envelope(s) reached the wrong device\n",
			round, misrouted);
	if (v[F_DRAINED] != v[F_STORED])
		fprintf(stderr, "ferry-bench: run %u: %.0f stored, %.0f drained\n", round,
			v[F_STORED], v[F_DRAINED]);
	return 0;
}

/* WELCOME pending on a fresh connection of every recipient; retried while
 * it is not 0 everywhere (the deletes of the last acks may be under way). */
static int verify_phase(struct off *b, unsigned round, double *v)
{
	double left = 0;
	uint64_t t0;

	for (int t = 0; t < VERIFY_TRIES; t++) {
		if (t)
			fb_sleep_ms(VERIFY_GAP_MS);
		if (recipients_pass(b, 0, all_ready, &t0, CONNECT_TIMEOUT_MS, NULL))
			return -1;
		left = 0;
		for (unsigned i = 0; i < b->o->offline; i++) {
			left += (double)b->recv[i].pending;
			if (!atomic_load(&b->recv[i].ready))
				left = INFINITY;
		}
		if (t == 0)
			v[F_LEFT_FIRST] = left;
		if (left == 0)
			break;
		if (b->o->verbose)
			fprintf(stderr,
				"ferry-bench: run %u: %.0f envelope(s) pending after the drain\n",
				round, left);
	}
	v[F_LEFT] = left;
	v[F_DRAIN_ERR] += left;
	if (left)
		fprintf(stderr,
			"ferry-bench: run %u: %.0f envelope(s) still pending after the drain\n",
			round, left);
	return 0;
}

/* DELIVER_RECEIPT frames (@ids 0) or ids the senders have taken so far. */
static double receipts_taken(const struct off *b, int ids)
{
	double n = 0;

	for (unsigned j = 0; j < b->o->senders; j++)
		n += (double)atomic_load(ids ? &b->send[j].rcpt_ids : &b->send[j].rcpt_frames);
	return n;
}

/* Before the senders close: until no DELIVER_RECEIPT has come for
 * RECEIPT_QUIET_MS (at most LINGER_MS), so that the last are taken. */
static void linger(const struct off *b)
{
	uint64_t start = fb_now_ns(), quiet = start;
	double last = receipts_taken(b, 0), now;

	while (!fb_interrupted && fb_now_ns() - start < LINGER_MS * 1000000ull &&
	       fb_now_ns() - quiet < RECEIPT_QUIET_MS * 1000000ull) {
		fb_sleep_ms(10);
		now = receipts_taken(b, 0);
		if (now != last) {
			last = now;
			quiet = fb_now_ns();
		}
	}
}

/* ---- report ---- */

static void report(const struct off *b)
{
	const struct fb_opts *o = b->o;
	const char *l = o->label;
	double med[NFIG], lo[NFIG], hi[NFIG], col[MAX_RUNS];
	long rss, hwm;

	for (int f = 0; f < NFIG; f++) {
		for (unsigned r = 0; r < b->runs; r++)
			col[r] = b->v[r][f];
		qsort(col, b->runs, sizeof(col[0]), fb_cmp_double);
		med[f] = col[b->runs / 2];
		lo[f] = col[0];
		hi[f] = col[b->runs - 1];
	}
	printf("%s.recipients=%u\n%s.senders=%u\n%s.per_device=%zu\n%s.size=%zu\n"
	       "%s.window=%u\n%s.runs=%u\n",
	       l, o->offline, l, o->senders, l, o->per_device, l, o->size, l, o->window, l,
	       b->runs);
	for (int f = 0; f < NFIG; f++)
		if (!isnan(med[f]))
			printf("%s.%s=%.*f\n", l, figs[f].key, figs[f].prec, med[f]);
	printf("%s.disconnects=%u\n", l, b->disconnects);
	printf("%s.receipt_frames=%.0f\n%s.receipt_ids=%.0f\n", l, receipts_taken(b, 0), l,
	       receipts_taken(b, 1));
	if (o->pid && fb_proc_mem_kb(o->pid, &rss, &hwm) == 0)
		printf("%s.ferryd_rss_kb=%ld\n%s.ferryd_hwm_kb=%ld\n", l, rss, l, hwm);
	printf("\n%s: %u sender(s) -> %u offline recipient(s) x %zu envelopes, %zu-byte "
	       "payloads, window %u, median of %u run(s)\n",
	       l, o->senders, o->offline, o->per_device, o->size, o->window, b->runs);
	printf("  %-40s %12s %12s %12s\n", "figure", "median", "min", "max");
	for (int f = 0; f < NFIG; f++) {
		char a[32], c[32], d[32];

		if (isnan(med[f]))
			continue;
		snprintf(a, sizeof(a), "%.*f", figs[f].prec, med[f]);
		snprintf(c, sizeof(c), "%.*f", figs[f].prec, lo[f]);
		snprintf(d, sizeof(d), "%.*f", figs[f].prec, hi[f]);
		printf("  %-40s %12s %12s %12s\n", figs[f].what, a, c, d);
	}
	fflush(stdout);
}

int fb_run_offline(const struct fb_opts *o)
{
	static struct off b;
	struct fb_cred *creds;
	double errors = 0;
	int rc = 1;

	if (o->runs > MAX_RUNS)
		return 2;
	b.o = o;
	pthread_mutex_init(&b.gate_lock, NULL);
	pthread_cond_init(&b.gate, NULL);
	fb_raise_nofile();
	creds = fb_get_creds(o, (size_t)o->offline + o->senders, o->offline);
	if (!creds)
		return 1;
	if (setup(&b, creds) == 0 && senders_connect(&b) == 0) {
		for (unsigned r = 1; r <= o->runs && !fb_interrupted; r++) {
			double *v = b.v[r - 1];

			if (store_phase(&b, r, v) || drain_phase(&b, r, v) ||
			    verify_phase(&b, r, v))
				break;
			errors += v[F_STORE_ERR] + v[F_DRAIN_ERR];
			b.runs = r;
		}
		linger(&b);
		if (b.runs)
			report(&b);
		rc = b.runs == o->runs && errors == 0 ? 0 : 1;
		if (errors)
			fprintf(stderr,
				"ferry-bench: %.0f error(s): see store_errors, drain_errors\n",
				errors);
	}
	teardown(&b);
	free(creds);
	return rc;
}
