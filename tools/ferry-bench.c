/*
 * ferry-bench.c - a load generator for ferryd, built on libferry
 * (client/ferry.h), and the idle-connection memory benchmark.
 *
 * Online mode (the default): N receiver devices and M sender devices connect
 * to a running ferryd; sender j sends envelopes to the user of receiver
 * j mod N, each receiver user having that one device, so that every SEND can
 * be acknowledged "delivered". Each sender keeps at most W SENDs
 * unacknowledged (a closed loop: W = 1 measures latency, larger W
 * throughput) until it has K acknowledged, or the round's --duration passes.
 * The same connections run R rounds; every figure is computed per round and
 * the median of the rounds is reported. With --rate the senders are paced
 * (sender j's n-th SEND not before n / (rate / M) seconds into the round,
 * the window still capping what is in flight): a fixed offered load, for
 * latency well below saturation.
 *
 * Phases (--load NAME=CMD, up to FB_MAX_LOADS): each run is then a round
 * without load followed by one round per load, during which CMD runs
 * beside it (tools/bench_load.c; e.g. wrk on ferryd's admin API), started
 * LOAD_WARMUP_MS before the round and stopped after it. The phases
 * alternate on the same connections, so that the machine's noise falls on
 * all of them; each is reported under a label of its own (LABEL, then
 * LABEL_NAME), and each load's latencies against the round without load
 * just before it (the median over the runs of those ratios).
 *
 * --hold C: C more devices connect and authenticate before the rounds (as
 * in idle mode) and stay connected, idle, until the end: a ferryd with many
 * connections, as in production. One thread gives each a turn every
 * HOLD_ROUND_MS (libferry's PINGs go at a third of ferryd's idle timeout, 40 s
 * by default), a slice of them every HOLD_SLICE_MS: a pass over 10,000 at once
 * would keep a core busy for milliseconds, a hiccup in every latency figure.
 *
 * Timing: every payload starts with a header (round, sender, CLOCK_MONOTONIC
 * ns at ferry_client_send), so the receiver measures send -> DELIVER, and
 * the sender, by client id, send -> ACK. Envelopes/s is the round's acked
 * envelopes over the time from its first send to its last ACK. With --pid,
 * ferryd's CPU time (the sum of its threads' /proc schedstat) per acked
 * envelope, its VmRSS growth per envelope and its VmRSS/VmHWM are reported
 * too: CPU per envelope drifts far less than wall-clock rates on a shared
 * machine.
 *
 * Idle mode (--idle C --pid PID): C devices connect and authenticate, at
 * most IDLE_INFLIGHT at a time, and then stay idle; ferryd's VmRSS before,
 * with them, and after they closed gives bytes per idle connection.
 *
 * Every device takes the DELIVER_RECEIPTs ferryd sends (the receipt
 * callback returns 0) and counts them: ferryd makes a delivered receipt for
 * every envelope a receiver acknowledges, and one left unacknowledged would
 * be stored after [gateway] ack_timeout, database writes that are no part
 * of online delivery. Before closing, the devices wait for the receipts of
 * the last envelopes (linger()).
 *
 * Offline mode (--offline N --per-device K): the offline store's write and
 * drain rates; tools/bench_offline.c.
 *
 * Receipts mode (--receipts P): P sender -> reader pairs, every message read
 * at once; receipt rates, coalescing and their CPU cost;
 * tools/bench_receipts.c.
 *
 * Threads: libferry has no threads of its own, so each online device gets a
 * thread of its own calling ferry_client_run() with a short timeout; all of
 * a device's state is touched by its thread only, except through the
 * atomics and the receiver's lock below. The main thread sequences rounds:
 * it raises `go`, waits for every sender to report its round done, lowers
 * `go` and waits for every sender to park before it reads their counters.
 * Idle mode drives every client from the main thread with
 * ferry_client_run(c, 0) until it is authenticated, then leaves it alone.
 *
 * Credentials: created through the admin API with libcurl (POST
 * /v1/users/{user}/devices, fresh user names per run, a few requests in
 * parallel), or read from a file of `user device_id secret` lines
 * (receivers first, then senders; --save-creds writes one); see
 * tools/bench_util.c, which holds what the modes share.
 *
 * Output: one `key=value` line per figure on stdout (LABEL.acked_per_s=...),
 * then a human table. Exit status 0 when every envelope was acknowledged (or
 * every idle device connected), 1 on a failure, 2 on bad arguments. Bounded:
 * connecting, each round and the drain all have deadlines. Loopback only:
 * the server and the admin API must be on 127.0.0.0/8, ::1 or localhost.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <curl/curl.h>

#include "client/ferry.h"
#include "common/log.h"
#include "gateway/proto.h"
#include "tools/bench_int.h"
#include "common/banned.h"

#define HDR_MAGIC 0x4e454246u /* "FBEN" */
#define HDR_LEN 24	      /* magic, round, sender (u32 each), pad, send time (u64) */
#define MAX_ROUNDS 40
#define MAX_PEERS 20000
#define TICK_MS 5		 /* how often a device thread looks at the round state */
#define CONNECT_TIMEOUT_MS 30000 /* all devices authenticated */
#define DRAIN_MS 5000		 /* after a round's deadline, for SENDs in flight */
#define IDLE_INFLIGHT 256	 /* idle mode: connections being made at once */
#define RECEIPT_QUIET_MS 200	 /* no DELIVER_RECEIPT for this long: none is coming */
#define LINGER_MS 3000		 /* the most the last receipts are waited for */
#define LOAD_WARMUP_MS 200	 /* a --load command runs this long before its round */
#define HOLD_ROUND_MS 10000	 /* each held device gets a turn this often */
#define HOLD_SLICE_MS 20	 /* and some of them every HOLD_SLICE_MS */

struct bench;

struct peer {
	struct bench *b;
	int sender;
	unsigned index;
	struct fb_cred cred;
	struct ferry_client *c;
	pthread_t thread;
	int started;
	atomic_int ready;	 /* authenticated at least once */
	atomic_int final;	 /* stopped for good (auth_failed, ...) */
	atomic_uint disconnects; /* connections lost */
	/* A sender's round: written by its own thread, read by the main thread
	 * only once the sender has parked (parked_round). */
	const char *to_user;
	uint8_t *payload;
	unsigned round;	  /* 1-based; 0: parked */
	uint64_t base_id; /* client id of the round's first SEND */
	size_t sent, acked, inflight, lost, nacks, stored;
	uint64_t *send_ns; /* by client id - base_id */
	struct fb_samples ack_lat;
	uint64_t t_first, t_last;
	atomic_uint done_round;	  /* the round this sender finished */
	atomic_uint parked_round; /* the round after which it parked */
	/* A receiver's deliveries, per round. */
	pthread_mutex_t lock;
	struct fb_samples dlv_lat[MAX_ROUNDS];
	/* DELIVER_RECEIPTs taken (delivered receipts for a sender's messages):
	 * written by the device's thread, read by the main thread any time. */
	atomic_ullong rcpt_frames, rcpt_ids;
};

struct bench {
	struct fb_opts o;
	struct peer *peers; /* receivers first, then senders */
	size_t npeers;
	struct peer *held; /* --hold: idle devices, driven by hold_thread only */
	size_t nheld;
	pthread_t hold_thread;
	int hold_started;
	struct fb_load loads[FB_MAX_LOADS];
	uint64_t pace_ns;	 /* --rate: a sender's n-th SEND not before n * pace_ns */
	atomic_uint go;		 /* the round running (1-based), 0: none */
	atomic_int hold_quit;	 /* hold_main() stops */
	atomic_int stop_sending; /* the round's deadline passed */
	atomic_int quit;
};

/* ---- devices: callbacks ---- */

static void top_up(struct peer *p);

static void on_connected(void *arg, const struct ferry_welcome *w)
{
	struct peer *p = arg;

	atomic_store(&p->ready, 1);
}

static void on_disconnected(void *arg, enum ferry_err why, const char *text, uint64_t retry_ms)
{
	struct peer *p = arg;

	atomic_fetch_add(&p->disconnects, 1);
	if (p->b->o.verbose)
		fprintf(stderr, "ferry-bench: device %" PRIu64 " lost its connection: %s\n",
			p->cred.device_id, text);
}

static void on_server_error(void *arg, uint64_t code, const char *text, int final)
{
	struct peer *p = arg;

	if (final) {
		atomic_store(&p->final, 1);
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": %s: %s\n", p->cred.device_id,
			proto_error_name(code), text);
	}
}

static int on_deliver(void *arg, const struct ferry_envelope *env)
{
	struct peer *p = arg;
	uint64_t now = fb_now_ns(), sent;
	uint32_t round;

	if (env->payload_len < HDR_LEN || fb_get_u32(env->payload) != HDR_MAGIC)
		return 0; /* not ours: acknowledged, not counted */
	round = fb_get_u32(env->payload + 4);
	sent = fb_get_u64(env->payload + 16);
	if (round < 1 || round > MAX_ROUNDS || sent > now)
		return 0;
	pthread_mutex_lock(&p->lock);
	if (fb_samples_add(&p->dlv_lat[round - 1], now - sent))
		ferry_panic("ferry-bench: out of memory for samples");
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/*
 * A DELIVER_RECEIPT: ferryd makes a delivered receipt for every envelope a
 * receiver acknowledges. Taken (return 0: acknowledged) and counted; a
 * device that left it unacknowledged would have ferryd store it after
 * [gateway] ack_timeout, database writes that are no part of online delivery.
 */
static int on_receipt(void *arg, const struct ferry_receipt *r)
{
	struct peer *p = arg;

	atomic_fetch_add_explicit(&p->rcpt_frames, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->rcpt_ids, r->n, memory_order_relaxed);
	return 0;
}

/* The SEND @client_id of this round, or -1 (an earlier round's, or unknown). */
static long long send_index(const struct peer *p, uint64_t client_id)
{
	if (!p->round || client_id < p->base_id || client_id - p->base_id >= p->sent)
		return -1;
	return (long long)(client_id - p->base_id);
}

static void on_send_acked(void *arg, uint64_t client_id, uint64_t server_id, unsigned status)
{
	struct peer *p = arg;
	long long i = send_index(p, client_id);
	uint64_t now = fb_now_ns();

	if (i < 0)
		return;
	if (fb_samples_add(&p->ack_lat, now - p->send_ns[i]))
		ferry_panic("ferry-bench: out of memory for samples");
	p->acked++;
	p->stored += status != PROTO_ACK_DELIVERED;
	p->inflight--;
	p->t_last = now;
	top_up(p);
}

static void on_send_nacked(void *arg, uint64_t client_id, uint64_t reason, const char *text,
			   int final)
{
	struct peer *p = arg;

	if (send_index(p, client_id) < 0)
		return;
	p->nacks++;
	if (p->b->o.verbose)
		fprintf(stderr, "ferry-bench: NACK %s (%s)%s\n", proto_nack_name(reason), text,
			final ? ", final" : ", retried");
	if (!final)
		return; /* libferry retries it after a backoff: still in flight */
	p->lost++;
	p->inflight--;
	top_up(p);
}

/* ---- devices: senders ---- */

/* Queue SENDs while the window has room and the round wants more. */
static void top_up(struct peer *p)
{
	const struct fb_opts *o = &p->b->o;
	uint64_t id, t;

	while (p->round && p->inflight < o->window && p->sent < o->count &&
	       !atomic_load(&p->b->stop_sending)) {
		t = fb_now_ns();
		if (p->b->pace_ns && p->sent && p->sent * p->b->pace_ns > t - p->t_first)
			break; /* --rate: not yet; a later ACK or tick sends it */
		fb_put_u32(p->payload + 4, p->round);
		fb_put_u64(p->payload + 16, t);
		if (ferry_client_send(p->c, p->to_user, 0, p->payload, o->size, &id) != FERRY_OK)
			break; /* the queue is full: the next ACK makes room */
		if (p->sent == 0) {
			p->base_id = id;
			p->t_first = t;
		}
		if (id != p->base_id + p->sent)
			ferry_panic("ferry-bench: client ids are not consecutive");
		p->send_ns[p->sent++] = t;
		p->inflight++;
	}
}

static void start_round(struct peer *p, unsigned round)
{
	p->round = round;
	p->sent = p->acked = p->inflight = p->lost = p->nacks = p->stored = 0;
	p->ack_lat.n = 0;
	p->t_first = p->t_last = 0;
	fb_put_u32(p->payload, HDR_MAGIC);
	fb_put_u32(p->payload + 8, p->index);
	fb_put_u32(p->payload + 12, 0);
	top_up(p);
}

/* What a sender does between two ferry_client_run() calls. */
static void sender_tick(struct peer *p)
{
	struct bench *b = p->b;
	unsigned go = atomic_load(&b->go);

	if (go && !p->round && atomic_load(&p->parked_round) < go) {
		start_round(p, go);
	} else if (!go && p->round) {
		atomic_store(&p->parked_round, p->round);
		p->round = 0;
	}
	if (!p->round)
		return;
	top_up(p);
	if (p->acked + p->lost == b->o.count || (atomic_load(&b->stop_sending) && p->inflight == 0))
		atomic_store(&p->done_round, p->round);
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;

	while (!atomic_load(&p->b->quit)) {
		if (p->sender)
			sender_tick(p);
		if (ferry_client_run(p->c, TICK_MS) == FERRY_EAUTH) {
			atomic_store(&p->final, 1);
			break;
		}
	}
	return NULL;
}

static int peer_client(struct peer *p, size_t dedup)
{
	const struct fb_opts *o = &p->b->o;
	struct ferry_callbacks cb = {
		.deliver = on_deliver,
		.receipt = on_receipt,
		.send_acked = on_send_acked,
		.send_nacked = on_send_nacked,
		.server_error = on_server_error,
		.connected = on_connected,
		.disconnected = on_disconnected,
	};
	struct ferry_config cfg = {
		.host = o->host,
		.port = o->port,
		.device_id = p->cred.device_id,
		.secret = p->cred.secret,
		.secret_len = strlen(p->cred.secret),
		.connect_timeout_ms = CONNECT_TIMEOUT_MS,
		.dedup_window = dedup,
		.max_queue = o->window + 1,
	};
	char err[256];

	if (ferry_client_new(&cfg, &cb, p, &p->c, err, sizeof(err)) != FERRY_OK) {
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": %s\n", p->cred.device_id, err);
		return -1;
	}
	return 0;
}

/* ---- online mode: the rounds ---- */

enum fig {
	F_SENT,
	F_ACKED,
	F_STORED,
	F_NACKS,
	F_LOST,
	F_SECONDS,
	F_RATE,
	F_MBPS,
	F_ACK_P50,
	F_ACK_P99,
	F_ACK_MAX,
	F_DLV_P50,
	F_DLV_P99,
	F_DLV_MAX,
	F_CPU,
	F_BUSY,
	F_RCPT_FRAMES,
	F_RCPT_IDS,
	F_RCPT_PER,
	NFIG,
};

static const struct {
	const char *key, *what;
	int prec; /* decimals */
} figs[NFIG] = {
	[F_SENT] = { "sent", "SENDs made", 0 },
	[F_ACKED] = { "acked", "envelopes acknowledged", 0 },
	[F_STORED] = { "stored", "ACKs 'stored', not 'delivered'", 0 },
	[F_NACKS] = { "nacks", "NACKs (retried or final)", 0 },
	[F_LOST] = { "lost", "SENDs refused for good", 0 },
	[F_SECONDS] = { "seconds", "first send to last ACK (s)", 3 },
	[F_RATE] = { "acked_per_s", "envelopes acked per second", 0 },
	[F_MBPS] = { "payload_mb_per_s", "payload MB/s (10^6 B)", 2 },
	[F_ACK_P50] = { "ack_p50_us", "send -> ACK p50 (us)", 0 },
	[F_ACK_P99] = { "ack_p99_us", "send -> ACK p99 (us)", 0 },
	[F_ACK_MAX] = { "ack_max_us", "send -> ACK max (us)", 0 },
	[F_DLV_P50] = { "deliver_p50_us", "send -> DELIVER p50 (us)", 0 },
	[F_DLV_P99] = { "deliver_p99_us", "send -> DELIVER p99 (us)", 0 },
	[F_DLV_MAX] = { "deliver_max_us", "send -> DELIVER max (us)", 0 },
	[F_CPU] = { "ferryd_cpu_us_per_env", "ferryd CPU per envelope (us)", 2 },
	[F_BUSY] = { "ferryd_busy", "ferryd CPU / wall time (cores)", 3 },
	[F_RCPT_FRAMES] = { "receipt_frames", "DELIVER_RECEIPTs taken", 0 },
	[F_RCPT_IDS] = { "receipt_ids", "delivered receipt ids in them", 0 },
	[F_RCPT_PER] = { "receipt_ids_per_frame", "receipt ids per DELIVER_RECEIPT", 1 },
};

/* Sort @s and put its p50, p99 and max at @v[0..2]. */
static void latency_figs(struct fb_samples *s, double *v)
{
	qsort(s->v, s->n, sizeof(s->v[0]), fb_cmp_u64);
	v[0] = fb_pct_us(s->v, s->n, 50);
	v[1] = fb_pct_us(s->v, s->n, 99);
	v[2] = fb_pct_us(s->v, s->n, 100);
}

/* Every sender's ACK latencies, or every receiver's DELIVER latencies of @round. */
static int gather(struct bench *b, int senders, unsigned round, struct fb_samples *all)
{
	all->n = 0;
	for (size_t i = 0; i < b->npeers; i++) {
		struct peer *p = &b->peers[i];
		struct fb_samples *s;
		int rc = 0;

		if (p->sender != senders)
			continue;
		if (!senders)
			pthread_mutex_lock(&p->lock);
		s = senders ? &p->ack_lat : &p->dlv_lat[round - 1];
		for (size_t k = 0; k < s->n && !rc; k++)
			rc = fb_samples_add(all, s->v[k]);
		if (!senders)
			pthread_mutex_unlock(&p->lock);
		if (rc)
			return -1;
	}
	return 0;
}

/* The DELIVER_RECEIPTs every device has taken so far: frames at @n[0], ids at @n[1]. */
static void receipts_taken(const struct bench *b, double *n)
{
	n[0] = n[1] = 0;
	for (size_t i = 0; i < b->npeers; i++) {
		n[0] += (double)atomic_load(&b->peers[i].rcpt_frames);
		n[1] += (double)atomic_load(&b->peers[i].rcpt_ids);
	}
}

/* The figures of @round, every sender parked; @cpu_ns: ferryd's CPU over the
 * round's @wall_ns; @rcpt: receipts taken meanwhile. */
static int round_figs(struct bench *b, unsigned round, double cpu_ns, double wall_ns,
		      const double *rcpt, double *v)
{
	uint64_t t0 = UINT64_MAX, t1 = 0;
	struct fb_samples all = { NULL, 0, 0 };
	double secs;

	for (int f = 0; f < NFIG; f++)
		v[f] = 0;
	for (size_t i = 0; i < b->npeers; i++) {
		const struct peer *p = &b->peers[i];

		if (!p->sender)
			continue;
		v[F_SENT] += (double)p->sent;
		v[F_ACKED] += (double)p->acked;
		v[F_STORED] += (double)p->stored;
		v[F_NACKS] += (double)p->nacks;
		v[F_LOST] += (double)p->lost;
		if (p->sent && p->t_first < t0)
			t0 = p->t_first;
		if (p->t_last > t1)
			t1 = p->t_last;
	}
	secs = t1 > t0 ? (double)(t1 - t0) / 1e9 : NAN;
	v[F_SECONDS] = secs;
	v[F_RATE] = v[F_ACKED] / secs;
	v[F_MBPS] = v[F_RATE] * (double)b->o.size / 1e6;
	v[F_CPU] = v[F_ACKED] > 0 ? cpu_ns / 1000.0 / v[F_ACKED] : NAN;
	v[F_BUSY] = wall_ns > 0 ? cpu_ns / wall_ns : NAN;
	v[F_RCPT_FRAMES] = rcpt[0];
	v[F_RCPT_IDS] = rcpt[1];
	v[F_RCPT_PER] = rcpt[0] > 0 ? rcpt[1] / rcpt[0] : NAN;
	if (gather(b, 1, round, &all) == 0) {
		latency_figs(&all, &v[F_ACK_P50]);
		if (gather(b, 0, round, &all) == 0) {
			latency_figs(&all, &v[F_DLV_P50]);
			free(all.v);
			return 0;
		}
	}
	free(all.v);
	return -1;
}

/* Wait until every sender has finished (or, @parked, parked after) @round, or
 * @deadline (ns) passes. */
static int wait_senders(struct bench *b, int parked, unsigned round, uint64_t deadline)
{
	for (;;) {
		size_t behind = 0;

		for (size_t i = 0; i < b->npeers; i++) {
			struct peer *p = &b->peers[i];

			if (p->sender &&
			    atomic_load(parked ? &p->parked_round : &p->done_round) < round)
				behind++;
		}
		if (!behind)
			return 0;
		if (fb_now_ns() >= deadline || fb_interrupted)
			return -1;
		fb_sleep_ms(1);
	}
}

static int run_round(struct bench *b, unsigned round, double *v)
{
	uint64_t start = fb_now_ns(), limit = (uint64_t)(b->o.duration * 1e9);
	double cpu0 = b->o.pid ? fb_proc_cpu_ns(b->o.pid) : NAN, cpu1, wall, r0[2], r1[2];
	int complete;

	receipts_taken(b, r0);
	atomic_store(&b->stop_sending, 0);
	atomic_store(&b->go, round);
	complete = wait_senders(b, 0, round, start + limit) == 0;
	if (!complete) {
		atomic_store(&b->stop_sending, 1);
		complete = wait_senders(b, 0, round, fb_now_ns() + DRAIN_MS * 1000000ull) == 0;
	}
	cpu1 = b->o.pid ? fb_proc_cpu_ns(b->o.pid) : NAN;
	wall = (double)(fb_now_ns() - start);
	atomic_store(&b->go, 0);
	if (wait_senders(b, 1, round, fb_now_ns() + 10000000000ull)) {
		fprintf(stderr, "ferry-bench: a sender did not stop\n");
		return -1;
	}
	if (!complete)
		fprintf(stderr, "ferry-bench: round %u: SENDs still unanswered after the drain\n",
			round);
	receipts_taken(b, r1);
	r1[0] -= r0[0];
	r1[1] -= r0[1];
	return round_figs(b, round, cpu1 - cpu0, wall, r1, v);
}

/* Start a thread per device; wait until all are authenticated. */
static int connect_all(struct bench *b)
{
	uint64_t deadline = fb_now_ns() + CONNECT_TIMEOUT_MS * 1000000ull;

	for (size_t i = 0; i < b->npeers; i++) {
		if (pthread_create(&b->peers[i].thread, NULL, peer_main, &b->peers[i])) {
			fprintf(stderr, "ferry-bench: cannot start a thread\n");
			return -1;
		}
		b->peers[i].started = 1;
	}
	for (;;) {
		size_t ready = 0, final = 0;

		for (size_t i = 0; i < b->npeers; i++) {
			ready += atomic_load(&b->peers[i].ready) != 0;
			final += atomic_load(&b->peers[i].final) != 0;
		}
		if (final) {
			fprintf(stderr, "ferry-bench: %zu device(s) were refused\n", final);
			return -1;
		}
		if (ready == b->npeers)
			return 0;
		if (fb_now_ns() >= deadline || fb_interrupted) {
			fprintf(stderr, "ferry-bench: %zu of %zu devices connected in time\n",
				ready, b->npeers);
			return -1;
		}
		fb_sleep_ms(2);
	}
}

/* ---- online mode: set-up and report ---- */

static int setup_peers(struct bench *b, struct fb_cred *creds)
{
	const struct fb_opts *o = &b->o;

	b->npeers = (size_t)o->receivers + o->senders;
	b->peers = calloc(b->npeers, sizeof(*b->peers));
	if (!b->peers)
		return -1;
	for (size_t i = 0; i < b->npeers; i++) {
		struct peer *p = &b->peers[i];

		p->b = b;
		p->sender = i >= o->receivers;
		p->index = (unsigned)(p->sender ? i - o->receivers : i);
		p->cred = creds[i];
		pthread_mutex_init(&p->lock, NULL);
		if (p->sender) {
			p->to_user = b->peers[p->index % o->receivers].cred.user;
			p->payload = calloc(1, o->size);
			p->send_ns = calloc(o->count, sizeof(uint64_t));
			if (!p->payload || !p->send_ns)
				return -1;
			for (size_t k = HDR_LEN; k < o->size; k++)
				p->payload[k] = (uint8_t)(k * 131 + p->index);
		}
		if (peer_client(p, p->sender ? 16 : FERRY_DEFAULT_DEDUP_WINDOW))
			return -1;
	}
	return 0;
}

static void teardown(struct bench *b)
{
	atomic_store(&b->quit, 1);
	atomic_store(&b->hold_quit, 1);
	for (unsigned k = 0; k < b->o.nloads; k++)
		fb_load_stop(&b->loads[k]);
	if (b->hold_started)
		pthread_join(b->hold_thread, NULL);
	for (size_t i = 0; b->held && i < b->nheld; i++) {
		ferry_client_free(b->held[i].c);
		pthread_mutex_destroy(&b->held[i].lock);
	}
	free(b->held);
	for (size_t i = 0; b->peers && i < b->npeers; i++) {
		struct peer *p = &b->peers[i];

		if (p->started)
			pthread_join(p->thread, NULL);
		ferry_client_free(p->c);
		free(p->payload);
		free(p->send_ns);
		free(p->ack_lat.v);
		for (int r = 0; r < MAX_ROUNDS; r++)
			free(p->dlv_lat[r].v);
		pthread_mutex_destroy(&p->lock);
	}
	free(b->peers);
}

/* ---- online mode: held devices ---- */

static size_t idle_connect(struct peer *peers, size_t n);
static size_t idle_still_ready(struct peer *peers, size_t n);

/* Give every held device a turn (PINGs, PONGs) every HOLD_ROUND_MS, a slice
 * every HOLD_SLICE_MS, until hold_quit. */
static void *hold_main(void *arg)
{
	struct bench *b = arg;
	size_t slices = HOLD_ROUND_MS / HOLD_SLICE_MS, per = (b->nheld + slices - 1) / slices;
	size_t next = 0;

	while (!atomic_load(&b->hold_quit)) {
		for (size_t k = 0; k < per; k++, next = (next + 1) % b->nheld) {
			if (ferry_client_run(b->held[next].c, 0) == FERRY_EAUTH)
				atomic_store(&b->held[next].final, 1);
		}
		fb_sleep_ms(HOLD_SLICE_MS);
	}
	return NULL;
}

/* Connect the --hold devices (@creds) from this thread, then hand them to
 * hold_main(); 0, or -1 with a message. */
static int hold_connect(struct bench *b, const struct fb_cred *creds)
{
	uint64_t t0 = fb_now_ns();
	size_t ready;

	b->nheld = b->o.hold;
	b->held = calloc(b->nheld, sizeof(*b->held));
	if (!b->held)
		return -1;
	for (size_t i = 0; i < b->nheld; i++) {
		b->held[i].b = b;
		b->held[i].cred = creds[i];
		pthread_mutex_init(&b->held[i].lock, NULL);
		if (peer_client(&b->held[i], 16))
			return -1;
	}
	ready = idle_connect(b->held, b->nheld);
	if (ready < b->nheld) {
		fprintf(stderr, "ferry-bench: %zu of %zu held devices connected\n", ready,
			b->nheld);
		return -1;
	}
	printf("%s.held=%zu\n%s.held_connect_s=%.2f\n", b->o.label, ready, b->o.label,
	       (double)(fb_now_ns() - t0) / 1e9);
	if (pthread_create(&b->hold_thread, NULL, hold_main, b)) {
		fprintf(stderr, "ferry-bench: cannot start a thread\n");
		return -1;
	}
	b->hold_started = 1;
	return 0;
}

/* Stop hold_main() and count the held devices still authenticated. */
static size_t hold_stop(struct bench *b)
{
	if (!b->hold_started)
		return 0;
	atomic_store(&b->hold_quit, 1);
	pthread_join(b->hold_thread, NULL);
	b->hold_started = 0;
	return idle_still_ready(b->held, b->nheld);
}

/* ---- online mode: rounds, phases and report ---- */

/* What the rounds of one phase (all of them without --load) measured. */
struct online_run {
	double v[MAX_ROUNDS][NFIG]; /* by run */
	unsigned runs, disconnects;
	double acked;	   /* over every round */
	long rss0_kb;	   /* ferryd's VmRSS before the first round; -1: unknown */
	double unanswered; /* refused for good, or no answer by a drain's end */
};

/* Median, minimum and maximum of each figure over the rounds. */
static void summarise(const struct online_run *res, double *med, double *lo, double *hi)
{
	double col[MAX_ROUNDS];
	unsigned n = res->runs;

	for (int f = 0; f < NFIG; f++) {
		for (unsigned r = 0; r < n; r++)
			col[r] = res->v[r][f];
		qsort(col, n, sizeof(col[0]), fb_cmp_double);
		med[f] = col[n / 2];
		lo[f] = col[0];
		hi[f] = col[n - 1];
	}
}

static void print_online_keys(const struct bench *b, const char *l, const struct online_run *res,
			      const double *med)
{
	const struct fb_opts *o = &b->o;
	long rss, hwm;

	printf("%s.senders=%u\n%s.receivers=%u\n%s.size=%zu\n%s.window=%u\n%s.count=%zu\n"
	       "%s.runs=%u\n",
	       l, o->senders, l, o->receivers, l, o->size, l, o->window, l, o->count, l, res->runs);
	if (o->rate)
		printf("%s.rate=%u\n", l, o->rate);
	for (int f = 0; f < NFIG; f++) {
		if (!isnan(med[f]))
			printf("%s.%s=%.*f\n", l, figs[f].key, figs[f].prec, med[f]);
	}
	printf("%s.disconnects=%u\n", l, res->disconnects);
	if (!o->pid || fb_proc_mem_kb(o->pid, &rss, &hwm))
		return;
	printf("%s.ferryd_rss_kb=%ld\n%s.ferryd_hwm_kb=%ld\n", l, rss, l, hwm);
	if (res->rss0_kb >= 0 && res->acked > 0)
		printf("%s.ferryd_rss_growth_kb=%ld\n%s.ferryd_rss_bytes_per_env=%.1f\n", l,
		       rss - res->rss0_kb, l, (double)(rss - res->rss0_kb) * 1024.0 / res->acked);
}

static void report_online(const struct bench *b, const char *l, const struct online_run *res)
{
	const struct fb_opts *o = &b->o;
	double med[NFIG], lo[NFIG], hi[NFIG];

	summarise(res, med, lo, hi);
	print_online_keys(b, l, res, med);
	printf("\n%s: %u sender(s) -> %u receiver(s), %zu-byte payloads, window %u, "
	       "%zu per sender, median of %u run(s)\n",
	       l, o->senders, o->receivers, o->size, o->window, o->count, res->runs);
	if (o->rate || o->hold)
		printf("  paced to %u envelopes/s in all (0: unpaced); %u idle devices held\n",
		       o->rate, o->hold);
	printf("  %-32s %12s %12s %12s\n", "figure", "median", "min", "max");
	for (int f = 0; f < NFIG; f++) {
		char a[32], c[32], d[32];

		if (isnan(med[f]))
			continue;
		snprintf(a, sizeof(a), "%.*f", figs[f].prec, med[f]);
		snprintf(c, sizeof(c), "%.*f", figs[f].prec, lo[f]);
		snprintf(d, sizeof(d), "%.*f", figs[f].prec, hi[f]);
		printf("  %-32s %12s %12s %12s\n", figs[f].what, a, c, d);
	}
	fflush(stdout);
}

/* The label of phase @k: LABEL without load, LABEL_NAME with load k. */
static void phase_label(const struct bench *b, unsigned k, char *out, size_t cap)
{
	if (k)
		snprintf(out, cap, "%s_%s", b->o.label, b->loads[k - 1].name);
	else
		snprintf(out, cap, "%s", b->o.label);
}

/*
 * The median over the runs of figure @f of load phase @k over the phase
 * without load of the same run (NAN if none): each load against the round
 * just before it, so that drift over the invocation cancels out.
 */
static double vs_base(const struct online_run *res, unsigned k, int f)
{
	double r[MAX_ROUNDS];
	unsigned n = 0;

	for (unsigned i = 0; i < res[k].runs && i < res[0].runs; i++) {
		if (res[0].v[i][f] > 0 && !isnan(res[k].v[i][f]))
			r[n++] = res[k].v[i][f] / res[0].v[i][f];
	}
	if (!n)
		return NAN;
	qsort(r, n, sizeof(r[0]), fb_cmp_double);
	return r[n / 2];
}

/* With --load: each load's latencies against the phase without it, keys and a table. */
static void report_phases(const struct bench *b, const struct online_run *res)
{
	static const int cmp[] = { F_DLV_P50, F_DLV_P99, F_ACK_P50, F_ACK_P99, F_BUSY };
	unsigned nph = b->o.nloads + 1;
	char l[64];

	for (unsigned k = 1; k < nph; k++) {
		phase_label(b, k, l, sizeof(l));
		for (size_t i = 0; i < sizeof(cmp) / sizeof(cmp[0]); i++) {
			double x = vs_base(res, k, cmp[i]);

			if (!isnan(x))
				printf("%s.%s_vs_base=%.3f\n", l, figs[cmp[i]].key, x);
		}
	}
	printf("\n%s: %u phases alternated over %u run(s); medians, and the median of each "
	       "run's ratio to the phase without load\n",
	       b->o.label, nph, b->o.runs);
	printf("  %-20s %18s %18s %8s %10s %10s\n", "phase", "DELIVER p50/p99 us", "ACK p50/p99 us",
	       "cores", "p99 ratio", "acked/s");
	for (unsigned k = 0; k < nph; k++) {
		double med[NFIG], lo[NFIG], hi[NFIG];
		char d[40], a[40], x[16];

		if (!res[k].runs)
			continue;
		summarise(&res[k], med, lo, hi);
		phase_label(b, k, l, sizeof(l));
		snprintf(d, sizeof(d), "%.0f / %.0f", med[F_DLV_P50], med[F_DLV_P99]);
		snprintf(a, sizeof(a), "%.0f / %.0f", med[F_ACK_P50], med[F_ACK_P99]);
		snprintf(x, sizeof(x), "%.3f", k ? vs_base(res, k, F_DLV_P99) : 1.0);
		printf("  %-20s %18s %18s %8.3f %10s %10.0f\n", l, d, a, med[F_BUSY], x,
		       med[F_RATE]);
	}
	fflush(stdout);
}

/* The devices' lost connections so far. */
static unsigned disconnects(const struct bench *b)
{
	unsigned n = 0;

	for (size_t i = 0; i < b->npeers; i++)
		n += atomic_load(&b->peers[i].disconnects);
	return n;
}

/*
 * Phase @k (0: without load) of run @run: with a load, its command starts
 * LOAD_WARMUP_MS before the round and is stopped after it. -1: stop.
 */
static int run_phase(struct bench *b, unsigned run, unsigned k, struct online_run *res)
{
	struct fb_load *l = k ? &b->loads[k - 1] : NULL;
	unsigned round = (run - 1) * (b->o.nloads + 1) + k + 1, d0 = disconnects(b);
	double *v = res->v[run - 1];
	int rc;

	if (l) {
		if (fb_load_start(l, run))
			return -1;
		fb_sleep_ms(LOAD_WARMUP_MS);
		if (!fb_load_running(l)) {
			fprintf(stderr, "ferry-bench: load '%s' stopped before its round\n",
				l->name);
			return -1;
		}
	}
	rc = run_round(b, round, v);
	if (l && fb_load_stop(l))
		rc = -1;
	if (rc)
		return -1;
	res->disconnects += disconnects(b) - d0;
	res->unanswered += v[F_SENT] - v[F_ACKED];
	res->acked += v[F_ACKED];
	res->runs = run;
	return 0;
}

/* The runs, each of its phases in turn, on connected devices. */
static void run_rounds(struct bench *b, struct online_run *res)
{
	long hwm;

	for (unsigned k = 0; k <= b->o.nloads; k++)
		res[k].rss0_kb = -1;
	if (b->o.pid && !b->o.nloads)
		fb_proc_mem_kb(b->o.pid, &res[0].rss0_kb, &hwm);
	for (size_t i = 0; i < b->npeers; i++)
		atomic_store(&b->peers[i].disconnects, 0);
	for (unsigned r = 1; r <= b->o.runs && !fb_interrupted; r++) {
		for (unsigned k = 0; k <= b->o.nloads; k++) {
			if (run_phase(b, r, k, &res[k]))
				return;
		}
	}
}

/*
 * Before the devices close: wait until no DELIVER_RECEIPT has come for
 * RECEIPT_QUIET_MS (at most LINGER_MS), so that the delivered receipts of the
 * last envelopes, which ferryd flushes up to [receipts] flush_interval after
 * their DELIVER_ACKs, are taken rather than stored for devices gone away.
 */
static void linger(const struct bench *b)
{
	uint64_t start = fb_now_ns(), quiet = start;
	double last[2], now[2];

	receipts_taken(b, last);
	while (!fb_interrupted && fb_now_ns() - start < LINGER_MS * 1000000ull &&
	       fb_now_ns() - quiet < RECEIPT_QUIET_MS * 1000000ull) {
		fb_sleep_ms(10);
		receipts_taken(b, now);
		if (now[0] != last[0]) {
			last[0] = now[0];
			quiet = fb_now_ns();
		}
	}
}

/* Report every phase; 0 when each ran every run with every SEND answered. */
static int report_runs(struct bench *b, const struct online_run *res)
{
	int rc = 0;
	char l[64];

	for (unsigned k = 0; k <= b->o.nloads; k++) {
		phase_label(b, k, l, sizeof(l));
		if (res[k].runs)
			report_online(b, l, &res[k]);
		if (res[k].runs != b->o.runs || res[k].unanswered != 0)
			rc = -1;
	}
	if (b->o.nloads && res[0].runs)
		report_phases(b, res);
	return rc;
}

static int run_online(struct bench *b)
{
	const struct fb_opts *o = &b->o;
	static struct online_run res[1 + FB_MAX_LOADS];
	size_t pairs = (size_t)o->receivers + o->senders;
	struct fb_cred *creds;
	int rc = -1;

	for (unsigned k = 0; k < o->nloads; k++) {
		if (fb_load_parse(o->load[k], &b->loads[k]))
			return 2; /* check_args() has seen it */
	}
	b->pace_ns = o->rate ? (uint64_t)(1e9 * o->senders / o->rate) : 0;
	if (o->hold)
		fb_raise_nofile();
	creds = fb_get_creds(o, pairs + o->hold, o->receivers);
	if (!creds)
		return 1;
	if ((!o->hold || hold_connect(b, creds + pairs) == 0) && setup_peers(b, creds) == 0 &&
	    connect_all(b) == 0) {
		run_rounds(b, res);
		linger(b);
		rc = report_runs(b, res);
		if (o->hold) {
			size_t still = hold_stop(b);

			printf("%s.held_at_end=%zu\n", o->label, still);
			if (still != b->nheld) {
				fprintf(stderr, "ferry-bench: %zu of %zu held devices lost\n",
					b->nheld - still, b->nheld);
				rc = -1;
			}
		}
	}
	teardown(b);
	free(creds);
	return rc ? 1 : 0;
}

/* ---- idle mode ---- */

/*
 * Bring every device up from the main thread, at most IDLE_INFLIGHT being
 * made at once; returns how many are authenticated.
 */
static size_t idle_connect(struct peer *peers, size_t n)
{
	uint64_t deadline = fb_now_ns() + 60 * 1000000000ull;
	size_t started = 0, ready = 0, npend = 0, *pend = calloc(n, sizeof(*pend));

	if (!pend)
		return 0;
	while (ready < n && fb_now_ns() < deadline && !fb_interrupted) {
		size_t keep = 0, before = ready;

		while (started < n && npend < IDLE_INFLIGHT)
			pend[npend++] = started++;
		for (size_t k = 0; k < npend; k++) {
			struct peer *p = &peers[pend[k]];

			if (ferry_client_run(p->c, 0) == FERRY_EAUTH || atomic_load(&p->final)) {
				free(pend);
				return ready;
			}
			if (atomic_load(&p->ready))
				ready++;
			else
				pend[keep++] = pend[k];
		}
		npend = keep;
		if (ready == before)
			fb_sleep_ms(1);
	}
	free(pend);
	return ready;
}

/* Give each ready device a turn; counts those still authenticated. */
static size_t idle_still_ready(struct peer *peers, size_t n)
{
	size_t ready = 0;

	for (size_t i = 0; i < n; i++) {
		if (ferry_client_run(peers[i].c, 0) == FERRY_OK && ferry_client_ready(peers[i].c))
			ready++;
	}
	return ready;
}

static void report_idle(const struct bench *b, size_t conns, const long kb[3][2], double secs)
{
	const char *l = b->o.label;
	double per = conns ? (double)(kb[1][0] - kb[0][0]) * 1024.0 / (double)conns : NAN;

	printf("%s.connections=%zu\n%s.connect_s=%.2f\n%s.connects_per_s=%.0f\n", l, conns, l, secs,
	       l, (double)conns / secs);
	printf("%s.rss_before_kb=%ld\n%s.rss_idle_kb=%ld\n%s.hwm_idle_kb=%ld\n"
	       "%s.rss_closed_kb=%ld\n%s.bytes_per_conn=%.0f\n",
	       l, kb[0][0], l, kb[1][0], l, kb[1][1], l, kb[2][0], l, per);
	printf("\n%s: %zu idle authenticated connections to ferryd (pid %ld)\n", l, conns,
	       b->o.pid);
	printf("  %-36s %12ld kB\n", "ferryd VmRSS before", kb[0][0]);
	printf("  %-36s %12ld kB\n", "ferryd VmRSS with them", kb[1][0]);
	printf("  %-36s %12ld kB\n", "ferryd VmHWM with them", kb[1][1]);
	printf("  %-36s %12ld kB\n", "ferryd VmRSS after they closed", kb[2][0]);
	printf("  %-36s %12.0f B\n", "bytes per idle connection", per);
	printf("  %-36s %12.2f s (%.0f/s)\n", "time to connect them all", secs,
	       (double)conns / secs);
	fflush(stdout);
}

static int run_idle(struct bench *b)
{
	const struct fb_opts *o = &b->o;
	struct fb_cred *creds;
	long kb[3][2];
	size_t conns = 0;
	uint64_t t0;
	int rc = 1;

	fb_raise_nofile();
	creds = fb_get_creds(o, o->idle, 0);
	if (!creds)
		return 1;
	b->npeers = o->idle;
	b->peers = calloc(b->npeers, sizeof(*b->peers));
	for (size_t i = 0; b->peers && i < b->npeers; i++) {
		b->peers[i].b = b;
		b->peers[i].cred = creds[i];
		pthread_mutex_init(&b->peers[i].lock, NULL);
		if (peer_client(&b->peers[i], 16))
			goto out;
	}
	if (!b->peers || fb_proc_mem_kb(o->pid, &kb[0][0], &kb[0][1])) {
		fprintf(stderr, "ferry-bench: cannot read /proc/%ld/status\n", o->pid);
		goto out;
	}
	t0 = fb_now_ns();
	conns = idle_connect(b->peers, b->npeers);
	t0 = fb_now_ns() - t0;
	fb_sleep_ms(1000); /* let ferryd finish what connecting started */
	conns = idle_still_ready(b->peers, b->npeers);
	fb_proc_mem_kb(o->pid, &kb[1][0], &kb[1][1]);
	for (size_t i = 0; i < b->npeers; i++) {
		ferry_client_free(b->peers[i].c);
		b->peers[i].c = NULL;
	}
	fb_sleep_ms(1500); /* ferryd notices the closes and frees them */
	fb_proc_mem_kb(o->pid, &kb[2][0], &kb[2][1]);
	report_idle(b, conns, (const long(*)[2])kb, (double)t0 / 1e9);
	rc = conns == o->idle ? 0 : 1;
	if (rc)
		fprintf(stderr, "ferry-bench: %zu of %u idle devices connected\n", conns, o->idle);
out:
	teardown(b);
	free(creds);
	return rc;
}

/* ---- arguments ---- */

static const char usage_text[] =
	"usage: ferry-bench --server HOST:PORT (--admin URL (--token T | --token-file F) |\n"
	"                   --creds FILE) [options] SCENARIO N [options]\n"
	"scenarios (one JSON line and a summary each; docs/performance.md):\n"
	"  idle N                 N authenticated idle connections (--pid required): ferryd's\n"
	"                         RSS before and with them, bytes per connection, kernel\n"
	"                         slab memory per socket\n"
	"  pairs P                P sender -> recipient pairs, each sender with --window W\n"
	"                         SENDs un-acknowledged (or --rate R in all), --payload B,\n"
	"                         --warmup S (default 1), then --duration S measured\n"
	"  fanout U --devices D   one sender's messages to U users of D devices each\n"
	"  offline N --per-device K   N x K envelopes stored for N devices away (--senders,\n"
	"                         --window), then drained: stored/s, drained/s\n"
	"  reconnect-storm N      N devices, --stored K envelopes for 100 away devices, then\n"
	"                         ferryd restarted by --restart-cmd CMD (sh -c), or SIGTERM to\n"
	"                         --pid: time until all are back, peak accepts/s, lost\n"
	"  push N                 N devices away with APNs tokens, one envelope each: pushes/s;\n"
	"                         with --push-log FILE (the mock's --log), ACK -> push latency\n"
	"  --sources S            spread sockets over 127.0.0.1 .. 127.0.0.S (default 4)\n"
	"  --pid PID              ferryd's: its CPU per envelope and its RSS\n"
	"older modes (key=value lines; scripts/run-bench.sh uses them for exact counts):\n"
	"       ferry-bench --server HOST:PORT ... [options] (online mode)\n"
	"       ferry-bench --idle C --pid PID --server HOST:PORT ... \n"
	"       ferry-bench --offline N --per-device K --server HOST:PORT ... [options]\n"
	"       ferry-bench --receipts P --server HOST:PORT ... [options]\n"
	"       ferry-bench --free-port\n"
	"options (online mode):\n"
	"  --senders M      sender devices (default 4)\n"
	"  --receivers N    receiver devices, one per user (default: M); sender j sends to\n"
	"                   receiver j mod N\n"
	"  --count K        envelopes per sender per run (default 5000)\n"
	"  --size S         payload bytes, 24 to 65408 (default 100)\n"
	"  --window W       unacknowledged SENDs per sender, 1 to 1024 (default 32)\n"
	"  --runs R         runs on the same connections, 1 to 40; medians reported (default 5)\n"
	"  --duration SEC   a run stops sending after SEC seconds (default 30)\n"
	"  --rate N         envelopes/s over all senders, each paced to N / M, the window\n"
	"                   still capping what is in flight (default: unpaced)\n"
	"  --hold C         C more devices connect first and stay idle throughout\n"
	"  --load NAME=CMD  a phase with /bin/sh -c CMD running beside it (e.g. wrk; up to\n"
	"                   6): each run is a round without load, then one per --load, on\n"
	"                   the same connections; CMD gets FERRY_BENCH_PHASE=NAME and\n"
	"                   FERRY_BENCH_RUN=N and is stopped with SIGINT after its round\n"
	"  --pid PID        ferryd's pid: its CPU time per envelope, VmRSS and VmHWM\n"
	"  --pg-pid PID     the PostgreSQL postmaster's pid: its and its children's CPU time\n"
	"                   per envelope (offline mode)\n"
	"  --label NAME     prefix of the key=value lines (default: the mode's name)\n"
	"  --save-creds F   write the devices used as 'user device_id secret' lines\n"
	"  --verbose        connection losses, NACKs and libferry's debug log on stderr\n"
	"idle mode: C devices connect, authenticate and stay idle; ferryd's VmRSS before,\n"
	"  with them and after gives bytes per idle connection (--pid required).\n"
	"offline mode: N recipient devices stay away while --senders devices send them\n"
	"  N x K envelopes (--window, --size apply; each ACK must say stored), then the N\n"
	"  connect and drain their queues to QUEUE_EMPTY, then connect once more to check\n"
	"  that nothing is left; --runs times. Envelopes stored/s and drained/s.\n"
	"receipts mode: P senders each send to a reader of their own (--window, --count,\n"
	"  --duration, --size, --runs apply); every reader acknowledges each DELIVER and\n"
	"  sends a read receipt for it at once; senders take the DELIVER_RECEIPTs. Messages/s,\n"
	"  receipt ids in/s, DELIVER_RECEIPT frames and ids out/s, ids per frame; with --admin\n"
	"  ferryd's receipt counters. Then an away phase: ids per stored row.\n"
	"  --no-reads       readers only acknowledge (the baseline; no away phase)\n"
	"  --read-batch     a reader sends one RECEIPT for the messages of one read of its\n"
	"                   socket (those one DELIVER_ACK acknowledges), not one per message\n"
	"  --rate N         messages/s over all pairs, each sender paced to N / P\n"
	"                   (default: unpaced, the window alone limits)\n"
	"  --away-reads A   away phase: messages each reader reads while its sender is away,\n"
	"                   0 to 4096; 0 skips the phase (default 32)\n"
	"  --flush-ms MS    ferryd's [receipts] flush_interval: paces the away phase and\n"
	"                   the settling after each run (default 50)\n"
	"--free-port prints a TCP port on 127.0.0.1 that is free now, and exits.\n";

static int parse_uint(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || end == s || *end || *s == '-' || *out < min || *out > max ? -1 : 0;
}

static int split_server(struct fb_opts *o)
{
	const char *s = o->server, *colon, *h = s;
	size_t hl;

	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
	}
	if (!hl || hl >= sizeof(o->host) || !colon[1] || strlen(colon + 1) >= sizeof(o->port))
		return -1;
	memcpy(o->host, h, hl);
	o->host[hl] = '\0';
	memcpy(o->port, colon + 1, strlen(colon + 1) + 1);
	return 0;
}

/* One option with a number; 1 if @name is not one of them, -1 if out of range. */
static int number_opt(struct fb_opts *o, const char *name, const char *v)
{
	enum { U, Z, L, D }; /* the field: unsigned, size_t, long, double */
	static const struct {
		const char *name;
		unsigned long long min, max;
		int type;
		size_t off;
	} nums[] = {
		{ "--senders", 1, 1000, U, offsetof(struct fb_opts, senders) },
		{ "--receivers", 1, 1000, U, offsetof(struct fb_opts, receivers) },
		{ "--count", 1, 100000000, Z, offsetof(struct fb_opts, count) },
		{ "--size", HDR_LEN, PROTO_DEFAULT_MAX_FRAME - PROTO_PAYLOAD_HEADROOM, Z,
		  offsetof(struct fb_opts, size) },
		{ "--window", 1, 1024, U, offsetof(struct fb_opts, window) },
		{ "--runs", 1, MAX_ROUNDS, U, offsetof(struct fb_opts, runs) },
		{ "--duration", 1, 3600, D, offsetof(struct fb_opts, duration) },
		{ "--pid", 1, 1u << 30, L, offsetof(struct fb_opts, pid) },
		{ "--idle", 1, MAX_PEERS, U, offsetof(struct fb_opts, idle) },
		{ "--offline", 1, MAX_PEERS, U, offsetof(struct fb_opts, offline) },
		{ "--per-device", 1, 1000000, Z, offsetof(struct fb_opts, per_device) },
		{ "--pg-pid", 1, 1u << 30, L, offsetof(struct fb_opts, pg_pid) },
		{ "--receipts", 1, MAX_PEERS / 2, U, offsetof(struct fb_opts, pairs) },
		{ "--away-reads", 0, 4096, U, offsetof(struct fb_opts, away_reads) },
		{ "--flush-ms", 1, 10000, U, offsetof(struct fb_opts, flush_ms) },
		{ "--rate", 1, 10000000, U, offsetof(struct fb_opts, rate) },
		{ "--hold", 1, MAX_PEERS, U, offsetof(struct fb_opts, hold) },
		{ "--payload", HDR_LEN / 2, PROTO_DEFAULT_MAX_FRAME - PROTO_PAYLOAD_HEADROOM, Z,
		  offsetof(struct fb_opts, size) },
		{ "--devices", 1, PROTO_MAX_TARGETS, U, offsetof(struct fb_opts, devices) },
		{ "--sources", 1, 254, U, offsetof(struct fb_opts, sources) },
		{ "--warmup", 0, 600, D, offsetof(struct fb_opts, warmup) },
		{ "--stored", 0, 10000000, U, offsetof(struct fb_opts, stored) },
	};
	unsigned long long x;
	char *field;
	size_t i;

	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		if (!strcmp(name, nums[i].name))
			break;
	if (i == sizeof(nums) / sizeof(nums[0]))
		return 1;
	field = (char *)o + nums[i].off;
	if (nums[i].type == D) { /* seconds: decimals allowed */
		char *end;
		double d;

		errno = 0;
		d = strtod(v, &end);
		if (errno || end == v || *end || !(d >= (double)nums[i].min) ||
		    d > (double)nums[i].max)
			return -1;
		*(double *)(void *)field = d;
		return 0;
	}
	if (parse_uint(v, nums[i].min, nums[i].max, &x))
		return -1;
	switch (nums[i].type) {
	case U:
		*(unsigned *)(void *)field = (unsigned)x;
		break;
	case Z:
		*(size_t *)(void *)field = (size_t)x;
		break;
	case L:
		*(long *)(void *)field = (long)x;
		break;
	default:
		break;
	}
	return 0;
}

static int string_opt(struct fb_opts *o, const char *name, const char *v)
{
	static const char *const names[] = { "--server",     "--admin",	      "--token",
					     "--token-file", "--creds",	      "--save-creds",
					     "--label",	     "--restart-cmd", "--push-log" };
	const char **dst[] = { &o->server,     &o->admin,	&o->token,
			       &o->token_file, &o->creds,	&o->save_creds,
			       &o->label,      &o->restart_cmd, &o->push_log };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(name, names[i])) {
			*dst[i] = v;
			return 0;
		}
	}
	return 1;
}

/* SCENARIO, then its N: 0, or -1 with a message. */
static int positional(struct fb_opts *o, const char *a)
{
	unsigned long long n;

	if (!o->scenario) {
		o->scenario = a;
		return 0;
	}
	if (!o->n && parse_uint(a, 1, 10000000, &n) == 0) {
		o->n = (unsigned long)n;
		return 0;
	}
	fprintf(stderr, "ferry-bench: %s: unexpected argument\n", a);
	return -1;
}

/* 0 ok, -1 bad usage (message printed). */
static int parse_args(int argc, char **argv, struct fb_opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int rc;

		if (!strcmp(a, "--verbose")) {
			o->verbose = 1;
			continue;
		}
		if (!strcmp(a, "--no-reads")) {
			o->no_reads = 1;
			continue;
		}
		if (!strcmp(a, "--read-batch")) {
			o->read_batch = 1;
			continue;
		}
		if (a[0] != '-' && positional(o, a))
			return -1;
		if (a[0] != '-')
			continue;
		if (!v) {
			fprintf(stderr, "ferry-bench: %s: unknown option or missing value\n", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--load")) {
			if (o->nloads == FB_MAX_LOADS) {
				fprintf(stderr, "ferry-bench: at most %d --load\n", FB_MAX_LOADS);
				return -1;
			}
			o->load[o->nloads++] = v;
			continue;
		}
		rc = number_opt(o, a, v);
		if (rc > 0)
			rc = string_opt(o, a, v);
		if (rc) {
			fprintf(stderr, "ferry-bench: %s %s: %s\n", a, v,
				rc > 0 ? "unknown option" : "out of range");
			return -1;
		}
	}
	return 0;
}

static int loopback_host(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (!strcmp(host, "localhost"))
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The host of http://HOST[:PORT][/...] or http://[V6][:PORT]... is a loopback one. */
static int loopback_url(const char *url)
{
	char host[256];
	const char *h, *end;

	if (strncmp(url, "http://", 7))
		return 0;
	h = url + 7;
	if (*h == '[') {
		h++;
		end = strchr(h, ']');
	} else {
		end = h + strcspn(h, ":/");
	}
	if (!end || end == h || (size_t)(end - h) >= sizeof(host))
		return 0;
	memcpy(host, h, (size_t)(end - h));
	host[end - h] = '\0';
	return loopback_host(host);
}

static int check_args(struct fb_opts *o)
{
	const char *why = NULL;

	if (!o->server || split_server(o))
		why = "--server HOST:PORT is required";
	else if (!o->creds && (!o->admin || (!o->token && !o->token_file)))
		why = "give --creds FILE, or --admin URL with --token or --token-file";
	else if (o->idle && !o->pid)
		why = "--idle needs --pid (ferryd's)";
	else if (o->scenario && (o->idle || o->offline || o->pairs || o->hold || o->nloads))
		why = "a scenario takes none of --idle, --offline, --receipts, --hold, --load";
	else if (!!o->idle + !!o->offline + !!o->pairs > 1)
		why = "--idle, --offline and --receipts are three modes: one at a time";
	else if (!o->scenario && !o->offline != !o->per_device)
		why = "--offline N and --per-device K go together";
	else if (!loopback_host(o->host) || (o->admin && !loopback_url(o->admin)))
		why = "loopback only: --server and --admin must be on 127.0.0.0/8, ::1 or "
		      "localhost";
	else if ((o->hold || o->nloads) && (o->idle || o->offline || o->pairs))
		why = "--hold and --load are for online mode";
	else if (o->runs * (o->nloads + 1) > MAX_ROUNDS)
		why = "--runs x (1 + the number of --load) must be at most 40";
	for (unsigned k = 0; !why && k < o->nloads; k++) {
		struct fb_load l;

		if (fb_load_parse(o->load[k], &l))
			why = "--load takes NAME=COMMAND, NAME of 1-31 [a-z0-9_]";
	}
	if (why) {
		fprintf(stderr, "ferry-bench: %s\n", why);
		return -1;
	}
	if (!o->receivers)
		o->receivers = o->senders;
	if (o->label || o->scenario)
		return 0;
	if (o->idle)
		o->label = "idle";
	else if (o->offline)
		o->label = "offline";
	else
		o->label = o->pairs ? "receipts" : "online";
	return 0;
}

/* Bind 127.0.0.1:0 and print the port the kernel chose. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		perror("ferry-bench: free port");
		if (fd >= 0)
			close(fd);
		return 1;
	}
	printf("%u\n", ntohs(a.sin_port));
	close(fd);
	return 0;
}

static void on_signal(int sig)
{
	fb_interrupted = sig;
}

int main(int argc, char **argv)
{
	static struct bench b;
	struct sigaction sa = { .sa_handler = on_signal };
	int rc;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "--free-port"))
		return free_port();
	b.o = (struct fb_opts){ .senders = 4,
				.count = 5000,
				.size = 100,
				.window = 32,
				.runs = 5,
				.duration = 30,
				.away_reads = 32,
				.flush_ms = 50,
				.sources = 4,
				.warmup = 1,
				.stored = 1000 };
	if (parse_args(argc, argv, &b.o) || check_args(&b.o)) {
		fputs(usage_text, stderr);
		return 2;
	}
	log_set_level(b.o.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "ferry-bench: cannot initialise libcurl\n");
		return 1;
	}
	if (b.o.scenario)
		rc = fb_run_scenario(&b.o);
	else if (b.o.idle)
		rc = run_idle(&b);
	else if (b.o.offline)
		rc = fb_run_offline(&b.o);
	else if (b.o.pairs)
		rc = fb_run_receipts(&b.o);
	else
		rc = run_online(&b);
	curl_global_cleanup();
	if (fb_interrupted) {
		/* Die of the signal, so that a calling shell stops too. */
		signal((int)fb_interrupted, SIG_DFL);
		raise((int)fb_interrupted);
	}
	return rc;
}
