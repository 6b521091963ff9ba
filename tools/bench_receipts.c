/*
 * bench_receipts.c - ferry-bench's receipts mode (--receipts P): what
 * delivered and read receipts cost ferryd per message, and how well it
 * coalesces them, under a chatty workload.
 *
 * Devices: P pairs of a sender and a reader, each device its own user, from
 * the admin API (users fb-RUN-rI and fb-RUN-sI) or --creds (the P readers
 * first, then the P senders); sender i sends to reader i's user.
 *
 * Rounds (--runs R; medians reported): each sender keeps at most W
 * (--window) SENDs unacknowledged until it has K (--count) acknowledged or
 * the round's --duration has passed. Each reader takes every DELIVER
 * (libferry acknowledges it, and ferryd makes a delivered receipt of the
 * ack) and reads it at once: ferry_client_read() naming the envelope's
 * sender user, sender device and client id. By default one RECEIPT frame
 * per message, queued from the deliver callback (the worst case). With
 * --read-batch the deliver callback collects the ids, and one RECEIPT with
 * all of them goes out when libferry reports the DELIVER_ACK that carries
 * them written (deliver_acked): the messages of one read of the socket,
 * one wake-up of the reader's loop, as an app marks read what it has just
 * shown. A reader reads only its pair's sender (one sender user and
 * device), so that is one RECEIPT per read; at most PROTO_MAX_IDS ids
 * each. Senders take every DELIVER_RECEIPT (return 0), count frames and
 * ids per kind, and time each id from its SEND while they still remember
 * it (RING). --no-reads: readers only acknowledge; against a ferryd with
 * [receipts] delivered = off that is the baseline, no receipts at all.
 *
 * A round ends once every sender is done and parked, and then settles:
 * until every RECEIPT has been answered and no DELIVER_RECEIPT has come for
 * QUIET flush intervals (--flush-ms, ferryd's [receipts] flush_interval),
 * at most SETTLE_MAX_MS. ferryd's CPU time is read at the round's start and
 * after the settling, so that the receipts of the round's last messages are
 * paid for in it; rates are over the time from the first SEND to the last
 * ACK. With --admin, GET /v1/stats before and after the round gives
 * ferryd's own receipt counters (read_in, delivered_in, batches, ids_out).
 *
 * The away phase, after the rounds (skipped with --no-reads or
 * --away-reads 0), measures ids per stored row. Each sender sends A
 * (--away-reads) more messages, which the readers take and hold unread;
 * once that has settled the senders disconnect, and the readers read the
 * held messages (one RECEIPT each, or with --read-batch one per slice) in
 * AWAY_SLICES equal slices AWAY_GAP flush intervals apart, so that each
 * pair's ids reach ferryd as several batches, which it stores (and merges
 * in storage). When every RECEIPT has been answered, the senders connect
 * again and catch up: each DELIVER_RECEIPT before QUEUE_EMPTY is one stored
 * row, and ids per stored row is their ids over their count.
 *
 * Threads: one per device, running its libferry client with a TICK_MS
 * timeout; a device's client and plain fields (a reader's batch too) belong
 * to its thread while it runs. The main thread reads the atomic counters at
 * any time, the latency samples under the device's lock, and a sender's
 * round fields once it has parked (go, done_round, parked_round, as in
 * online mode). For the away phase the main thread joins the senders'
 * threads, frees their clients, and later makes new ones.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client/ferry.h"
#include "common/log.h"
#include "tools/bench_int.h"
#include "common/banned.h"

#define RC_MAGIC 0x43524246u /* "FBRC" */
#define RC_HDR_LEN 24	     /* magic, round, pair (u32 each), pad, send time (u64) */
#define MAX_RUNS 20
#define TICK_MS 100		 /* how often a device thread looks at the run state */
#define AWAY_GAP 2		 /* away phase: flush intervals between two slices */
#define CONNECT_TIMEOUT_MS 30000 /* all devices authenticated */
#define LATE_MS 5000		 /* after a round's deadline, for SENDs in flight */
#define RING 1024		 /* a sender's latest SENDs remembered, by client id */
#define QUIET 3			 /* flush intervals without a DELIVER_RECEIPT: settled */
#define SETTLE_MAX_MS 5000	 /* the longest a round settles */
#define AWAY_SLICES 4		 /* the away phase's reads come in this many slices */
#define AWAY_MAX_MS 30000	 /* away phase: every read answered, every sender caught up */
#define READER_QUEUE 8192	 /* a reader's unanswered RECEIPTs (libferry max_queue) */
#define THREAD_STACK (256u * 1024)
#define NKIND 3 /* receipt kinds: 1 delivered, 2 read; 0 for any other */

struct rc;

struct rdev {
	struct rc *b;
	int sender;
	unsigned index; /* the pair */
	struct fb_cred cred;
	const struct rdev *peer; /* the pair's other device */
	struct ferry_client *c;
	pthread_t thread;
	int started;
	atomic_int ready; /* authenticated (this client) */
	atomic_int final; /* stopped for good */
	atomic_int quit;  /* the thread should return */
	atomic_uint disconnects;
	/* Counters, written by the device's thread, read by the main thread. */
	atomic_ullong frames[NKIND], ids[NKIND]; /* DELIVER_RECEIPTs taken */
	/* A reader's: read ids queued in RECEIPTs, RECEIPT frames queued,
	 * answers (per frame), ids that could not be queued, ids collected
	 * for the next RECEIPT (--read-batch). */
	atomic_ullong reads, receipts, read_acked, read_stored, read_nacks, read_failed;
	atomic_size_t batch_n;
	/* A sender's round: its thread writes, the main thread reads once parked. */
	uint8_t *payload;
	unsigned round; /* 1-based; 0: parked */
	uint64_t base_id;
	size_t sent, acked, inflight, nacks, lost, stored;
	uint64_t t_first, t_last;
	uint64_t *ring_id, *ring_ns; /* SEND times by client id % RING */
	atomic_uint done_round, parked_round;
	/* Latency samples (ns): the device's thread adds, the main thread
	 * reads and resets, under @lock. */
	pthread_mutex_t lock;
	struct fb_samples ack_lat, rcpt_lat[NKIND];
	/* --read-batch: the ids a reader collected for its next RECEIPT, its
	 * thread's (PROTO_MAX_IDS of them; the count published in batch_n). */
	uint64_t *batch;
	size_t nbatch;
	/* A reader's held messages (away phase): its thread's; the counts
	 * published. */
	uint64_t *held;
	size_t nheld, nread;
	atomic_size_t held_n, held_read;
	/* A sender's catch-up (away phase): its thread's until caught_up. */
	uint64_t pending;
	size_t cu_frames[NKIND], cu_ids[NKIND];
	atomic_int caught_up;
};

/* The counters of every device, summed. */
struct tally {
	double frames[NKIND], ids[NKIND];
	double reads, receipts, read_acked, read_stored, read_nacks, read_failed, batched;
};

/* ferryd's receipt counters (GET /v1/stats, "receipts"). */
struct srv {
	double read_in, delivered_in, batches, ids_out;
};

enum fig {
	F_SENT,
	F_ACKED,
	F_STORED,
	F_NACKS,
	F_LOST,
	F_SECONDS,
	F_MSG_RATE,
	F_PAIR_RATE,
	F_READS,
	F_READ_RATE,
	F_RECEIPTS,
	F_RECEIPT_RATE,
	F_PER_RECEIPT,
	F_READ_ERR,
	F_FRAMES,
	F_FRAME_RATE,
	F_IDS,
	F_ID_RATE,
	F_DLV_FRAMES,
	F_DLV_IDS,
	F_READ_FRAMES,
	F_READ_IDS,
	F_PER_DLV,
	F_PER_READ,
	F_PER_ALL,
	F_CEILING,
	F_SRV_READ_IN,
	F_SRV_DLV_IN,
	F_SRV_BATCHES,
	F_SRV_IDS,
	F_SRV_PER,
	F_ACK_P50,
	F_ACK_P99,
	F_DLAT_P50,
	F_RLAT_P50,
	F_RLAT_P99,
	F_SETTLE_MS,
	F_CPU,
	F_SELF,
	NFIG,
};

static const struct {
	const char *key, *what;
	int prec;
} figs[NFIG] = {
	[F_SENT] = { "sent", "SENDs made", 0 },
	[F_ACKED] = { "acked", "messages acknowledged", 0 },
	[F_STORED] = { "stored", "ACKs 'stored', not 'delivered'", 0 },
	[F_NACKS] = { "nacks", "NACKs to SENDs", 0 },
	[F_LOST] = { "lost", "SENDs refused for good", 0 },
	[F_SECONDS] = { "seconds", "first SEND to last ACK (s)", 3 },
	[F_MSG_RATE] = { "msgs_per_s", "messages/s", 0 },
	[F_PAIR_RATE] = { "msgs_per_pair_per_s", "messages/s per pair", 1 },
	[F_READS] = { "reads", "read receipt ids sent (in RECEIPTs)", 0 },
	[F_READ_RATE] = { "read_ids_in_per_s", "read receipt ids in/s", 0 },
	[F_RECEIPTS] = { "receipts_in", "RECEIPT frames sent", 0 },
	[F_RECEIPT_RATE] = { "receipts_in_per_s", "RECEIPT frames in/s", 0 },
	[F_PER_RECEIPT] = { "ids_per_receipt_in", "read ids per RECEIPT frame in", 2 },
	[F_READ_ERR] = { "read_errors", "RECEIPTs refused or unanswered", 0 },
	[F_FRAMES] = { "frames", "DELIVER_RECEIPT frames taken", 0 },
	[F_FRAME_RATE] = { "frames_out_per_s", "DELIVER_RECEIPT frames out/s", 0 },
	[F_IDS] = { "ids", "receipt ids taken", 0 },
	[F_ID_RATE] = { "ids_out_per_s", "receipt ids out/s", 0 },
	[F_DLV_FRAMES] = { "delivered_frames", "delivered: frames", 0 },
	[F_DLV_IDS] = { "delivered_ids", "delivered: ids", 0 },
	[F_READ_FRAMES] = { "read_frames", "read: frames", 0 },
	[F_READ_IDS] = { "read_ids", "read: ids", 0 },
	[F_PER_DLV] = { "ids_per_frame_delivered", "ids per frame, delivered", 2 },
	[F_PER_READ] = { "ids_per_frame_read", "ids per frame, read", 2 },
	[F_PER_ALL] = { "ids_per_frame", "ids per frame, all", 2 },
	[F_CEILING] = { "ids_per_frame_expected", "expected: 1 + msgs/s per pair x flush", 2 },
	[F_SRV_READ_IN] = { "srv_read_in", "ferryd: read ids in", 0 },
	[F_SRV_DLV_IN] = { "srv_delivered_in", "ferryd: delivered ids made", 0 },
	[F_SRV_BATCHES] = { "srv_batches", "ferryd: batches", 0 },
	[F_SRV_IDS] = { "srv_ids_out", "ferryd: ids in batches", 0 },
	[F_SRV_PER] = { "srv_ids_per_batch", "ferryd: ids per batch", 2 },
	[F_ACK_P50] = { "ack_p50_us", "SEND -> ACK p50 (us)", 0 },
	[F_ACK_P99] = { "ack_p99_us", "SEND -> ACK p99 (us)", 0 },
	[F_DLAT_P50] = { "delivered_receipt_p50_ms", "SEND -> delivered receipt p50 (ms)", 1 },
	[F_RLAT_P50] = { "read_receipt_p50_ms", "SEND -> read receipt p50 (ms)", 1 },
	[F_RLAT_P99] = { "read_receipt_p99_ms", "SEND -> read receipt p99 (ms)", 1 },
	[F_SETTLE_MS] = { "settle_ms", "last ACK to settled (ms)", 0 },
	[F_CPU] = { "ferryd_cpu_us_per_msg", "ferryd CPU per message (us)", 2 },
	[F_SELF] = { "bench_cpu_us_per_msg", "ferry-bench CPU per message (us)", 2 },
};

enum away_fig {
	A_MSGS,
	A_HELD,
	A_READS,
	A_RECEIPTS,
	A_READ_STORED,
	A_ERR,
	A_SRV_BATCHES,
	A_SRV_IDS,
	A_SRV_PER,
	A_PENDING,
	A_ROWS,
	A_ROW_IDS,
	A_PER_ROW,
	A_DLV_ROWS,
	A_LATE,
	A_CATCHUP_MS,
	NAWAY,
};

static const struct {
	const char *key, *what;
	int prec;
} away_figs[NAWAY] = {
	[A_MSGS] = { "away_msgs", "messages sent to hold", 0 },
	[A_HELD] = { "away_held", "messages held unread", 0 },
	[A_READS] = { "away_reads", "read ids while the senders were away", 0 },
	[A_RECEIPTS] = { "away_receipts", "  in RECEIPT frames", 0 },
	[A_READ_STORED] = { "away_reads_stored", "  of them ACKed 'stored'", 0 },
	[A_ERR] = { "away_errors", "SENDs, RECEIPTs refused or unanswered", 0 },
	[A_SRV_BATCHES] = { "away_srv_batches", "ferryd: batches meanwhile", 0 },
	[A_SRV_IDS] = { "away_srv_ids_out", "ferryd: ids in them", 0 },
	[A_SRV_PER] = { "away_srv_ids_per_batch", "ferryd: ids per batch", 2 },
	[A_PENDING] = { "away_pending_at_welcome", "senders' WELCOME pending, summed", 0 },
	[A_ROWS] = { "stored_rows", "stored read receipts (catch-up frames)", 0 },
	[A_ROW_IDS] = { "stored_row_ids", "ids in them", 0 },
	[A_PER_ROW] = { "ids_per_stored_row", "ids per stored row", 2 },
	[A_DLV_ROWS] = { "stored_delivered_rows", "stored delivered receipts", 0 },
	[A_LATE] = { "away_not_caught_up", "senders without QUEUE_EMPTY in time", 0 },
	[A_CATCHUP_MS] = { "away_catchup_ms", "reconnect to last QUEUE_EMPTY (ms)", 0 },
};

struct rc {
	const struct fb_opts *o;
	struct rdev *dev; /* 2P: the readers [0, P), then the senders [P, 2P) */
	size_t n;
	atomic_uint go; /* the round running (1-based), 0: none */
	atomic_int stop_sending;
	atomic_int hold;     /* readers hold messages unread (away phase) */
	atomic_uint slice;   /* away phase: the slices of held messages to read */
	atomic_int tick_ms;  /* the devices' ferry_client_run() timeout */
	size_t round_count;  /* SENDs per sender this round; set before go */
	uint64_t pace_ns;    /* --rate: a sender's n-th SEND not before n * pace_ns */
	unsigned round_wind; /* the window this round; set before go */
	double v[MAX_RUNS][NFIG];
	double away[NAWAY];
	unsigned runs, disconnects;
	int away_run;
};

/* ---- callbacks, every device ---- */

static void top_up(struct rdev *d);

static void on_connected(void *arg, const struct ferry_welcome *w)
{
	struct rdev *d = arg;

	if (!atomic_load(&d->ready))
		d->pending = w->pending;
	atomic_store(&d->ready, 1);
}

static void on_disconnected(void *arg, enum ferry_err why, const char *text, uint64_t retry_ms)
{
	struct rdev *d = arg;

	atomic_fetch_add(&d->disconnects, 1);
	if (d->b->o->verbose)
		fprintf(stderr, "ferry-bench: device %" PRIu64 " lost its connection: %s\n",
			d->cred.device_id, text);
}

static void on_server_error(void *arg, uint64_t code, const char *text, int final)
{
	struct rdev *d = arg;

	if (final) {
		atomic_store(&d->final, 1);
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": %s: %s\n", d->cred.device_id,
			proto_error_name(code), text);
	}
}

static void add_sample(struct fb_samples *s, uint64_t v)
{
	if (fb_samples_add(s, v))
		ferry_panic("ferry-bench: out of memory for samples");
}

/* A DELIVER_RECEIPT (to a sender): counted, timed per id, taken. */
static int on_receipt(void *arg, const struct ferry_receipt *r)
{
	struct rdev *d = arg;
	unsigned k = r->kind < NKIND ? r->kind : 0;
	uint64_t now = fb_now_ns();

	atomic_fetch_add_explicit(&d->frames[k], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->ids[k], r->n, memory_order_relaxed);
	if (!atomic_load(&d->caught_up)) {
		d->cu_frames[k]++;
		d->cu_ids[k] += r->n;
	}
	if (!d->ring_id || !k)
		return 0;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < r->n; i++) {
		size_t slot = r->ids[i] % RING;

		if (d->ring_id[slot] == r->ids[i] && d->ring_ns[slot] <= now)
			add_sample(&d->rcpt_lat[k], now - d->ring_ns[slot]);
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static void on_queue_empty(void *arg, uint64_t drained)
{
	struct rdev *d = arg;

	atomic_store(&d->caught_up, 1);
}

/* ---- readers ---- */

/*
 * Queue one read receipt for the @n (1 to PROTO_MAX_IDS) messages @ids of
 * the pair's sender (borrowed): named as the protocol asks, the DELIVERs'
 * sender user, sender device and client ids (on_deliver checked that they
 * came from the pair's sender). 0, or -1 when libferry's queue is full (try
 * again later); any other refusal counts the ids as failed.
 */
static int read_ids(struct rdev *d, const uint64_t *ids, size_t n)
{
	enum ferry_err rc =
		ferry_client_read(d->c, d->peer->cred.user, d->peer->cred.device_id, ids, n, NULL);

	if (rc == FERRY_ELIMIT)
		return -1;
	if (rc == FERRY_OK) {
		atomic_fetch_add_explicit(&d->reads, n, memory_order_relaxed);
		atomic_fetch_add_explicit(&d->receipts, 1, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&d->read_failed, n, memory_order_relaxed);
	}
	return 0;
}

/* --read-batch: send the collected ids as one RECEIPT; kept if libferry's
 * queue is full (the next read or tick tries again). */
static void read_flush(struct rdev *d)
{
	if (!d->nbatch || read_ids(d, d->batch, d->nbatch))
		return;
	d->nbatch = 0;
	atomic_store(&d->batch_n, 0);
}

static int on_deliver(void *arg, const struct ferry_envelope *env)
{
	struct rdev *d = arg;
	uint64_t id = env->client_id;

	if (env->payload_len < RC_HDR_LEN || fb_get_u32(env->payload) != RC_MAGIC ||
	    env->sender_device != d->peer->cred.device_id)
		return 0; /* not this run's pair: acknowledged, not read */
	if (atomic_load(&d->b->hold) && d->nheld < d->b->o->away_reads) {
		d->held[d->nheld++] = id;
		atomic_store(&d->held_n, d->nheld);
		return 0;
	}
	if (d->b->o->no_reads)
		return 0;
	if (!d->batch) {
		if (read_ids(d, &id, 1))
			atomic_fetch_add_explicit(&d->read_failed, 1, memory_order_relaxed);
		return 0;
	}
	if (d->nbatch == PROTO_MAX_IDS)
		read_flush(d); /* a read of more than PROTO_MAX_IDS: these go now */
	if (d->nbatch == PROTO_MAX_IDS) {
		atomic_fetch_add_explicit(&d->read_failed, 1, memory_order_relaxed);
		return 0;
	}
	d->batch[d->nbatch++] = id;
	atomic_store(&d->batch_n, d->nbatch);
	return 0;
}

/* --read-batch: the DELIVER_ACK of one read has been written; so the
 * messages it acknowledges have been shown: one RECEIPT for them. */
static void on_deliver_acked(void *arg, const struct ferry_acked *acked, size_t n)
{
	struct rdev *d = arg;

	if (d->batch)
		read_flush(d);
}

/* Away phase: read the held messages of the slices opened so far, one
 * RECEIPT each, or with --read-batch one for what a slice opened. */
static void reader_tick(struct rdev *d)
{
	size_t want = d->nheld * atomic_load(&d->b->slice) / AWAY_SLICES;
	size_t max = d->batch ? PROTO_MAX_IDS : 1;

	while (d->nread < want) {
		size_t n = want - d->nread < max ? want - d->nread : max;

		if (read_ids(d, &d->held[d->nread], n))
			break;
		d->nread += n;
	}
	atomic_store(&d->held_read, d->nread);
}

/* ---- senders (and the answers to readers' RECEIPTs) ---- */

static void on_send_acked(void *arg, uint64_t client_id, uint64_t server_id, unsigned status)
{
	struct rdev *d = arg;
	uint64_t now = fb_now_ns();
	size_t slot = client_id % RING;

	if (!d->sender) {
		atomic_fetch_add_explicit(&d->read_acked, 1, memory_order_relaxed);
		if (status == PROTO_ACK_STORED)
			atomic_fetch_add_explicit(&d->read_stored, 1, memory_order_relaxed);
		return;
	}
	if (!d->round || client_id < d->base_id || client_id - d->base_id >= d->sent)
		return; /* an earlier round's */
	if (d->ring_id[slot] == client_id) {
		pthread_mutex_lock(&d->lock);
		add_sample(&d->ack_lat, now - d->ring_ns[slot]);
		pthread_mutex_unlock(&d->lock);
	}
	d->acked++;
	d->stored += status != PROTO_ACK_DELIVERED;
	d->inflight--;
	d->t_last = now;
	top_up(d);
}

static void on_send_nacked(void *arg, uint64_t client_id, uint64_t reason, const char *text,
			   int final)
{
	struct rdev *d = arg;

	if (d->b->o->verbose)
		fprintf(stderr, "ferry-bench: NACK %s (%s) to a %s%s\n", proto_nack_name(reason),
			text, d->sender ? "SEND" : "RECEIPT", final ? ", final" : ", retried");
	if (!d->sender) {
		if (final)
			atomic_fetch_add_explicit(&d->read_nacks, 1, memory_order_relaxed);
		return;
	}
	if (!d->round || client_id < d->base_id || client_id - d->base_id >= d->sent)
		return;
	d->nacks++;
	if (!final)
		return; /* libferry sends it again after a backoff */
	d->lost++;
	d->inflight--;
	top_up(d);
}

/* Queue SENDs while the window has room and the round wants more. */
static void top_up(struct rdev *d)
{
	struct rc *b = d->b;
	uint64_t id, t;

	while (d->round && d->inflight < b->round_wind && d->sent < b->round_count &&
	       !atomic_load(&b->stop_sending)) {
		t = fb_now_ns();
		if (b->pace_ns && d->sent && d->sent * b->pace_ns > t - d->t_first)
			break; /* --rate: not yet; a later ACK or tick sends it */
		fb_put_u32(d->payload + 4, d->round);
		fb_put_u64(d->payload + 16, t);
		if (ferry_client_send(d->c, d->peer->cred.user, 0, d->payload, b->o->size, &id) !=
		    FERRY_OK)
			break; /* the queue is full: the next ACK makes room */
		if (d->sent == 0) {
			d->base_id = id;
			d->t_first = t;
		}
		if (id != d->base_id + d->sent)
			ferry_panic("ferry-bench: client ids are not consecutive");
		d->ring_id[id % RING] = id;
		d->ring_ns[id % RING] = t;
		d->sent++;
		d->inflight++;
	}
}

static void sender_tick(struct rdev *d)
{
	struct rc *b = d->b;
	unsigned go = atomic_load(&b->go);

	if (go && !d->round && atomic_load(&d->parked_round) < go) {
		d->round = go;
		d->sent = d->acked = d->inflight = d->nacks = d->lost = d->stored = 0;
		d->t_first = d->t_last = 0;
		top_up(d);
	} else if (!go && d->round) {
		atomic_store(&d->parked_round, d->round);
		d->round = 0;
	}
	if (!d->round)
		return;
	top_up(d);
	if (d->acked + d->lost == b->round_count ||
	    (atomic_load(&b->stop_sending) && d->inflight == 0))
		atomic_store(&d->done_round, d->round);
}

static void *dev_main(void *arg)
{
	struct rdev *d = arg;

	while (!atomic_load(&d->quit)) {
		if (d->sender)
			sender_tick(d);
		else if (d->held)
			reader_tick(d);
		if (ferry_client_run(d->c, atomic_load(&d->b->tick_ms)) == FERRY_EAUTH) {
			atomic_store(&d->final, 1);
			break;
		}
		/* Ids whose DELIVER_ACK never went out (a lost connection), or
		 * that found libferry's queue full. */
		if (d->batch)
			read_flush(d);
	}
	return NULL;
}

/* ---- set-up ---- */

static int dev_client(struct rdev *d)
{
	const struct fb_opts *o = d->b->o;
	struct ferry_callbacks cb = {
		.deliver = on_deliver,
		.deliver_acked = on_deliver_acked,
		.receipt = on_receipt,
		.send_acked = on_send_acked,
		.send_nacked = on_send_nacked,
		.server_error = on_server_error,
		.connected = on_connected,
		.disconnected = on_disconnected,
		.queue_empty = on_queue_empty,
	};
	struct ferry_config cfg = {
		.host = o->host,
		.port = o->port,
		.device_id = d->cred.device_id,
		.secret = d->cred.secret,
		.secret_len = strlen(d->cred.secret),
		.connect_timeout_ms = CONNECT_TIMEOUT_MS,
		.dedup_window = d->sender ? 16 : FERRY_DEFAULT_DEDUP_WINDOW,
		.max_queue = d->sender ? o->window + 1 : READER_QUEUE,
	};
	char err[256];

	if (ferry_client_new(&cfg, &cb, d, &d->c, err, sizeof(err)) != FERRY_OK) {
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": %s\n", d->cred.device_id, err);
		return -1;
	}
	return 0;
}

static int setup(struct rc *b, const struct fb_cred *creds)
{
	const struct fb_opts *o = b->o;
	unsigned p = o->pairs;

	b->n = 2 * (size_t)p;
	b->dev = calloc(b->n, sizeof(*b->dev));
	if (!b->dev)
		return -1;
	for (size_t i = 0; i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		d->b = b;
		d->sender = i >= p;
		d->index = (unsigned)(d->sender ? i - p : i);
		d->cred = creds[i];
		d->peer = &b->dev[d->sender ? d->index : d->index + p];
		pthread_mutex_init(&d->lock, NULL);
	}
	for (size_t i = 0; i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		if (d->sender) {
			d->payload = calloc(1, o->size);
			d->ring_id = calloc(RING, sizeof(uint64_t));
			d->ring_ns = calloc(RING, sizeof(uint64_t));
			if (!d->payload || !d->ring_id || !d->ring_ns)
				return -1;
			fb_put_u32(d->payload, RC_MAGIC);
			fb_put_u32(d->payload + 8, d->index);
			for (size_t k = RC_HDR_LEN; k < o->size; k++)
				d->payload[k] = (uint8_t)(k * 131 + d->index);
		} else if (!o->no_reads) {
			if (o->away_reads)
				d->held = calloc(o->away_reads, sizeof(uint64_t));
			if (o->read_batch)
				d->batch = calloc(PROTO_MAX_IDS, sizeof(uint64_t));
			if ((o->away_reads && !d->held) || (o->read_batch && !d->batch))
				return -1;
		}
		if (dev_client(d))
			return -1;
	}
	return 0;
}

/* Start the threads of devices [@from, @to); 0, or -1 if one cannot start. */
static int start_threads(struct rc *b, size_t from, size_t to)
{
	pthread_attr_t attr;
	int rc = 0;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	for (size_t i = from; i < to && rc == 0; i++) {
		struct rdev *d = &b->dev[i];

		atomic_store(&d->quit, 0);
		if (pthread_create(&d->thread, &attr, dev_main, d)) {
			fprintf(stderr, "ferry-bench: cannot start a thread\n");
			rc = -1;
		} else {
			d->started = 1;
		}
	}
	pthread_attr_destroy(&attr);
	return rc;
}

/* Stop and join the threads of devices [@from, @to); free their clients. */
static void stop_threads(struct rc *b, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		atomic_store(&b->dev[i].quit, 1);
	for (size_t i = from; i < to; i++) {
		struct rdev *d = &b->dev[i];

		if (d->started)
			pthread_join(d->thread, NULL);
		d->started = 0;
		b->disconnects += atomic_exchange(&d->disconnects, 0);
		ferry_client_free(d->c);
		d->c = NULL;
	}
}

/* Wait until devices [@from, @to) are authenticated (or, @caught_up, have
 * had QUEUE_EMPTY); -1 on a refusal, the deadline or an interruption. */
static int wait_devices(struct rc *b, size_t from, size_t to, int caught_up, uint64_t deadline)
{
	for (;;) {
		size_t ok = 0, final = 0;

		for (size_t i = from; i < to; i++) {
			ok += atomic_load(caught_up ? &b->dev[i].caught_up : &b->dev[i].ready) != 0;
			final += atomic_load(&b->dev[i].final) != 0;
		}
		if (final) {
			fprintf(stderr, "ferry-bench: %zu device(s) were refused\n", final);
			return -1;
		}
		if (ok == to - from)
			return 0;
		if (fb_now_ns() >= deadline || fb_interrupted) {
			fprintf(stderr, "ferry-bench: %zu of %zu devices %s in time\n", ok,
				to - from, caught_up ? "caught up" : "connected");
			return -1;
		}
		fb_sleep_ms(2);
	}
}

static void teardown(struct rc *b)
{
	stop_threads(b, 0, b->dev ? b->n : 0);
	for (size_t i = 0; b->dev && i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		free(d->payload);
		free(d->ring_id);
		free(d->ring_ns);
		free(d->held);
		free(d->batch);
		free(d->ack_lat.v);
		for (int k = 0; k < NKIND; k++)
			free(d->rcpt_lat[k].v);
		pthread_mutex_destroy(&d->lock);
	}
	free(b->dev);
}

/* ---- measuring ---- */

static void tally(const struct rc *b, struct tally *t)
{
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		for (int k = 0; k < NKIND; k++) {
			t->frames[k] += (double)atomic_load(&d->frames[k]);
			t->ids[k] += (double)atomic_load(&d->ids[k]);
		}
		t->reads += (double)atomic_load(&d->reads);
		t->receipts += (double)atomic_load(&d->receipts);
		t->batched += (double)atomic_load(&d->batch_n);
		t->read_acked += (double)atomic_load(&d->read_acked);
		t->read_stored += (double)atomic_load(&d->read_stored);
		t->read_nacks += (double)atomic_load(&d->read_nacks);
		t->read_failed += (double)atomic_load(&d->read_failed);
	}
}

/* RECEIPTs queued and not yet answered finally, and ids collected for one
 * not yet queued. */
static double reads_open(const struct tally *t)
{
	return t->receipts - t->read_acked - t->read_nacks + t->batched;
}

static double all_frames(const struct tally *t)
{
	return t->frames[0] + t->frames[1] + t->frames[2];
}

/* ferryd's receipt counters; -1 without --admin, or if they cannot be read. */
static int srv_read(const struct rc *b, struct srv *s)
{
	char *body;
	json_t *root, *r;
	int rc = -1;

	if (!b->o->admin || fb_admin_get(b->o, "/v1/stats", &body))
		return -1;
	root = json_loads(body, 0, NULL);
	r = json_object_get(root, "receipts");
	if (json_is_object(r)) {
		s->read_in = (double)json_integer_value(json_object_get(r, "read_in"));
		s->delivered_in = (double)json_integer_value(json_object_get(r, "delivered_in"));
		s->batches = (double)json_integer_value(json_object_get(r, "batches"));
		s->ids_out = (double)json_integer_value(json_object_get(r, "ids_out"));
		rc = 0;
	}
	json_decref(root);
	free(body);
	return rc;
}

static int wait_senders(struct rc *b, int parked, unsigned round, uint64_t deadline)
{
	for (;;) {
		size_t behind = 0;

		for (size_t i = b->o->pairs; i < b->n; i++) {
			struct rdev *d = &b->dev[i];

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

/*
 * Run one round of @count SENDs per sender, window @window, --duration at
 * most, and (@paced) no faster than --rate: 0 when every sender finished
 * and parked (SENDs may still be unanswered: the caller counts), -1 when a
 * sender would not stop.
 */
static int send_round(struct rc *b, unsigned round, size_t count, unsigned window, int paced)
{
	uint64_t start = fb_now_ns(), limit = (uint64_t)(b->o->duration * 1e9);
	int complete;

	b->round_count = count;
	b->round_wind = window;
	b->pace_ns = paced && b->o->rate ? (uint64_t)(1e9 * b->o->pairs / b->o->rate) : 0;
	atomic_store(&b->stop_sending, 0);
	atomic_store(&b->go, round);
	complete = wait_senders(b, 0, round, start + limit) == 0;
	if (!complete) {
		atomic_store(&b->stop_sending, 1);
		complete = wait_senders(b, 0, round, fb_now_ns() + LATE_MS * 1000000ull) == 0;
	}
	atomic_store(&b->go, 0);
	if (wait_senders(b, 1, round, fb_now_ns() + 10000000000ull)) {
		fprintf(stderr, "ferry-bench: a sender did not stop\n");
		return -1;
	}
	if (!complete)
		fprintf(stderr, "ferry-bench: round %u: SENDs still unanswered after the drain\n",
			round);
	return 0;
}

/*
 * Wait until every RECEIPT has been answered and no DELIVER_RECEIPT has come
 * for QUIET flush intervals; 0, or -1 at SETTLE_MAX_MS.
 */
static int settle(const struct rc *b)
{
	uint64_t start = fb_now_ns(), quiet_at = start;
	uint64_t quiet = (uint64_t)QUIET * b->o->flush_ms * 1000000ull;
	struct tally t;
	double last;

	tally(b, &t);
	last = all_frames(&t);
	for (;;) {
		uint64_t now;

		fb_sleep_ms(5);
		now = fb_now_ns();
		tally(b, &t);
		if (all_frames(&t) != last) {
			last = all_frames(&t);
			quiet_at = now;
		}
		if (reads_open(&t) == 0 && now - quiet_at >= quiet)
			return 0;
		if (now - start >= SETTLE_MAX_MS * 1000000ull || fb_interrupted)
			return -1;
	}
}

/* Every sender's ACK latencies, or receipt latencies of @kind (@kind 0: ACK). */
static int gather(struct rc *b, int kind, struct fb_samples *all)
{
	all->n = 0;
	for (size_t i = b->o->pairs; i < b->n; i++) {
		struct rdev *d = &b->dev[i];
		struct fb_samples *s = kind ? &d->rcpt_lat[kind] : &d->ack_lat;
		int rc = 0;

		pthread_mutex_lock(&d->lock);
		for (size_t k = 0; k < s->n && !rc; k++)
			rc = fb_samples_add(all, s->v[k]);
		pthread_mutex_unlock(&d->lock);
		if (rc)
			return -1;
	}
	qsort(all->v, all->n, sizeof(all->v[0]), fb_cmp_u64);
	return 0;
}

static void reset_samples(struct rc *b)
{
	for (size_t i = 0; i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		pthread_mutex_lock(&d->lock);
		d->ack_lat.n = 0;
		for (int k = 0; k < NKIND; k++)
			d->rcpt_lat[k].n = 0;
		pthread_mutex_unlock(&d->lock);
	}
}

/* The senders' figures of the round just parked. */
static void sender_figs(const struct rc *b, double *v)
{
	uint64_t t0 = UINT64_MAX, t1 = 0;

	for (size_t i = b->o->pairs; i < b->n; i++) {
		const struct rdev *d = &b->dev[i];

		v[F_SENT] += (double)d->sent;
		v[F_ACKED] += (double)d->acked;
		v[F_STORED] += (double)d->stored;
		v[F_NACKS] += (double)d->nacks;
		v[F_LOST] += (double)d->lost;
		if (d->sent && d->t_first < t0)
			t0 = d->t_first;
		if (d->t_last > t1)
			t1 = d->t_last;
	}
	v[F_SECONDS] = t1 > t0 ? (double)(t1 - t0) / 1e9 : NAN;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : NAN;
}

/* Receipt and server figures from the counters' differences @t, @s. */
static void receipt_figs(const struct rc *b, const struct tally *t, const struct srv *s, double *v)
{
	double secs = v[F_SECONDS], ceil;

	v[F_MSG_RATE] = ratio(v[F_ACKED], secs);
	v[F_PAIR_RATE] = v[F_MSG_RATE] / b->o->pairs;
	v[F_READS] = t->reads;
	v[F_READ_RATE] = ratio(t->reads, secs);
	v[F_RECEIPTS] = t->receipts;
	v[F_RECEIPT_RATE] = ratio(t->receipts, secs);
	v[F_PER_RECEIPT] = ratio(t->reads, t->receipts);
	v[F_READ_ERR] = t->read_failed + t->read_nacks + reads_open(t);
	v[F_FRAMES] = all_frames(t);
	v[F_IDS] = t->ids[0] + t->ids[1] + t->ids[2];
	v[F_FRAME_RATE] = ratio(v[F_FRAMES], secs);
	v[F_ID_RATE] = ratio(v[F_IDS], secs);
	v[F_DLV_FRAMES] = t->frames[PROTO_RECEIPT_DELIVERED];
	v[F_DLV_IDS] = t->ids[PROTO_RECEIPT_DELIVERED];
	v[F_READ_FRAMES] = t->frames[PROTO_RECEIPT_READ];
	v[F_READ_IDS] = t->ids[PROTO_RECEIPT_READ];
	v[F_PER_DLV] = ratio(v[F_DLV_IDS], v[F_DLV_FRAMES]);
	v[F_PER_READ] = ratio(v[F_READ_IDS], v[F_READ_FRAMES]);
	v[F_PER_ALL] = ratio(v[F_IDS], v[F_FRAMES]);
	ceil = 1 + v[F_PAIR_RATE] * b->o->flush_ms / 1000.0;
	v[F_CEILING] = !v[F_FRAMES] ? NAN : ceil > PROTO_MAX_IDS ? PROTO_MAX_IDS : ceil;
	if (s) {
		v[F_SRV_READ_IN] = s->read_in;
		v[F_SRV_DLV_IN] = s->delivered_in;
		v[F_SRV_BATCHES] = s->batches;
		v[F_SRV_IDS] = s->ids_out;
		v[F_SRV_PER] = ratio(s->ids_out, s->batches);
	} else {
		for (int f = F_SRV_READ_IN; f <= F_SRV_PER; f++)
			v[f] = NAN;
	}
}

static void latency_figs(struct rc *b, double *v)
{
	struct fb_samples all = { NULL, 0, 0 };

	if (gather(b, 0, &all) == 0) {
		v[F_ACK_P50] = fb_pct_us(all.v, all.n, 50);
		v[F_ACK_P99] = fb_pct_us(all.v, all.n, 99);
	}
	if (gather(b, PROTO_RECEIPT_DELIVERED, &all) == 0)
		v[F_DLAT_P50] = fb_pct_us(all.v, all.n, 50) / 1000.0;
	if (gather(b, PROTO_RECEIPT_READ, &all) == 0) {
		v[F_RLAT_P50] = fb_pct_us(all.v, all.n, 50) / 1000.0;
		v[F_RLAT_P99] = fb_pct_us(all.v, all.n, 99) / 1000.0;
	}
	free(all.v);
}

static void srv_diff(const struct srv *a, struct srv *b)
{
	b->read_in -= a->read_in;
	b->delivered_in -= a->delivered_in;
	b->batches -= a->batches;
	b->ids_out -= a->ids_out;
}

static void tally_diff(const struct tally *a, struct tally *b)
{
	for (int k = 0; k < NKIND; k++) {
		b->frames[k] -= a->frames[k];
		b->ids[k] -= a->ids[k];
	}
	b->reads -= a->reads;
	b->receipts -= a->receipts;
	b->read_acked -= a->read_acked;
	b->read_stored -= a->read_stored;
	b->read_nacks -= a->read_nacks;
	b->read_failed -= a->read_failed;
}

static int run_round(struct rc *b, unsigned round, double *v)
{
	const struct fb_opts *o = b->o;
	struct tally t0, t1;
	struct srv s0, s1;
	int have_srv = srv_read(b, &s0) == 0;
	double cpu0, cpu1, self0, self1;
	uint64_t parked;

	for (int f = 0; f < NFIG; f++)
		v[f] = 0;
	reset_samples(b);
	tally(b, &t0);
	cpu0 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	self0 = fb_self_cpu_ns();
	if (send_round(b, round, o->count, o->window, 1))
		return -1;
	parked = fb_now_ns();
	if (settle(b))
		fprintf(stderr, "ferry-bench: round %u: receipts still coming after %u ms\n", round,
			SETTLE_MAX_MS);
	v[F_SETTLE_MS] = (double)(fb_now_ns() - parked) / 1e6;
	cpu1 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	self1 = fb_self_cpu_ns();
	tally(b, &t1);
	tally_diff(&t0, &t1);
	have_srv = have_srv && srv_read(b, &s1) == 0;
	if (have_srv)
		srv_diff(&s0, &s1);
	sender_figs(b, v);
	receipt_figs(b, &t1, have_srv ? &s1 : NULL, v);
	latency_figs(b, v);
	v[F_CPU] = ratio((cpu1 - cpu0) / 1000.0, v[F_ACKED]);
	v[F_SELF] = ratio((self1 - self0) / 1000.0, v[F_ACKED]);
	return 0;
}

/* ---- the away phase: ids per stored row ---- */

/* Every reader has read what it holds, and every RECEIPT is answered. */
static int away_reads_done(const struct rc *b)
{
	struct tally t;

	for (size_t i = 0; i < b->o->pairs; i++)
		if (atomic_load(&b->dev[i].held_read) < atomic_load(&b->dev[i].held_n))
			return 0;
	tally(b, &t);
	return reads_open(&t) == 0;
}

/* The hold round: A more messages a sender, which the readers take and hold
 * unread (round @round). */
static int away_hold(struct rc *b, unsigned round, double *a)
{
	const struct fb_opts *o = b->o;
	unsigned window = o->window < o->away_reads ? o->window : o->away_reads;
	double sent = 0, acked = 0;

	atomic_store(&b->hold, 1);
	if (send_round(b, round, o->away_reads, window, 0))
		return -1;
	if (settle(b))
		fprintf(stderr, "ferry-bench: away phase: receipts still coming\n");
	atomic_store(&b->hold, 0);
	for (size_t i = 0; i < b->n; i++) {
		sent += (double)b->dev[i].sent;
		acked += (double)b->dev[i].acked;
		a[A_HELD] += (double)atomic_load(&b->dev[i].held_n);
	}
	a[A_MSGS] = sent;
	a[A_ERR] += sent - acked;
	return 0;
}

/* The senders are away: the readers read what they hold, in slices. */
static void away_read(struct rc *b, double *a)
{
	const struct fb_opts *o = b->o;
	struct tally t0, t1;
	struct srv s0, s1;
	int have_srv;

	atomic_store(&b->tick_ms, (int)(o->flush_ms / 2 ? o->flush_ms / 2 : 1));
	fb_sleep_ms(TICK_MS + QUIET * o->flush_ms); /* ferryd has seen them go */
	have_srv = srv_read(b, &s0) == 0;
	tally(b, &t0);
	for (unsigned s = 1; s <= AWAY_SLICES && !fb_interrupted; s++) {
		atomic_store(&b->slice, s);
		fb_sleep_ms(AWAY_GAP * o->flush_ms);
	}
	for (uint64_t end = fb_now_ns() + AWAY_MAX_MS * 1000000ull;
	     !away_reads_done(b) && fb_now_ns() < end && !fb_interrupted;)
		fb_sleep_ms(5);
	fb_sleep_ms(QUIET * o->flush_ms); /* the last batches reach the store */
	atomic_store(&b->tick_ms, TICK_MS);
	tally(b, &t1);
	tally_diff(&t0, &t1);
	a[A_READS] = t1.reads;
	a[A_RECEIPTS] = t1.receipts;
	a[A_READ_STORED] = t1.read_stored;
	a[A_ERR] += t1.read_failed + t1.read_nacks + reads_open(&t1) + a[A_HELD] - t1.reads;
	if (have_srv && srv_read(b, &s1) == 0) {
		srv_diff(&s0, &s1);
		a[A_SRV_BATCHES] = s1.batches;
		a[A_SRV_IDS] = s1.ids_out;
		a[A_SRV_PER] = ratio(s1.ids_out, s1.batches);
	} else {
		a[A_SRV_BATCHES] = a[A_SRV_IDS] = a[A_SRV_PER] = NAN;
	}
}

/* The senders come back and catch up: what came before QUEUE_EMPTY was stored. */
static int away_back(struct rc *b, double *a)
{
	size_t p = b->o->pairs;
	uint64_t t_back;

	for (size_t i = p; i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		d->pending = 0;
		memset(d->cu_frames, 0, sizeof(d->cu_frames));
		memset(d->cu_ids, 0, sizeof(d->cu_ids));
		atomic_store(&d->ready, 0);
		atomic_store(&d->caught_up, 0);
		if (dev_client(d))
			return -1;
	}
	t_back = fb_now_ns();
	if (start_threads(b, p, b->n))
		return -1;
	if (wait_devices(b, p, b->n, 1, fb_now_ns() + AWAY_MAX_MS * 1000000ull))
		fprintf(stderr, "ferry-bench: away phase: senders did not catch up in time\n");
	a[A_CATCHUP_MS] = (double)(fb_now_ns() - t_back) / 1e6;
	for (size_t i = p; i < b->n; i++) {
		struct rdev *d = &b->dev[i];

		if (!atomic_load(&d->caught_up)) {
			a[A_LATE]++;
			continue;
		}
		/* Complete once caught up: the thread writes them no more. */
		a[A_PENDING] += (double)d->pending;
		a[A_ROWS] += (double)d->cu_frames[PROTO_RECEIPT_READ];
		a[A_ROW_IDS] += (double)d->cu_ids[PROTO_RECEIPT_READ];
		a[A_DLV_ROWS] += (double)d->cu_frames[PROTO_RECEIPT_DELIVERED];
	}
	a[A_PER_ROW] = ratio(a[A_ROW_IDS], a[A_ROWS]);
	if (a[A_ROW_IDS] < a[A_READS])
		fprintf(stderr, "ferry-bench: away phase: %.0f ids read, %.0f came back stored\n",
			a[A_READS], a[A_ROW_IDS]);
	return 0;
}

static int away_phase(struct rc *b, double *a)
{
	if (away_hold(b, b->runs + 1, a))
		return -1;
	stop_threads(b, b->o->pairs, b->n); /* the senders go away */
	away_read(b, a);
	return away_back(b, a);
}

/* ---- report ---- */

static void print_row(const char *what, int prec, double med, const double *lo, const double *hi)
{
	char a[32], c[32], d[32];

	snprintf(a, sizeof(a), "%.*f", prec, med);
	if (!lo) {
		printf("  %-40s %12s\n", what, a);
		return;
	}
	snprintf(c, sizeof(c), "%.*f", prec, *lo);
	snprintf(d, sizeof(d), "%.*f", prec, *hi);
	printf("  %-40s %12s %12s %12s\n", what, a, c, d);
}

static void report(const struct rc *b)
{
	const struct fb_opts *o = b->o;
	const char *l = o->label;
	const char *reads = o->no_reads ? "off" : o->read_batch ? "batch" : "each";
	const char *how = o->no_reads	  ? "off"
			  : o->read_batch ? "one RECEIPT per read"
					  : "one RECEIPT per message";
	double med[NFIG], lo[NFIG], hi[NFIG], col[MAX_RUNS];

	for (int f = 0; f < NFIG; f++) {
		unsigned n = 0;

		for (unsigned r = 0; r < b->runs; r++)
			if (!isnan(b->v[r][f]))
				col[n++] = b->v[r][f];
		if (!n) {
			med[f] = lo[f] = hi[f] = NAN;
			continue;
		}
		qsort(col, n, sizeof(col[0]), fb_cmp_double);
		med[f] = col[n / 2];
		lo[f] = col[0];
		hi[f] = col[n - 1];
	}
	printf("%s.pairs=%u\n%s.window=%u\n%s.size=%zu\n%s.read_receipts=%s\n%s.flush_ms=%u\n"
	       "%s.runs=%u\n",
	       l, o->pairs, l, o->window, l, o->size, l, reads, l, o->flush_ms, l, b->runs);
	for (int f = 0; f < NFIG; f++)
		if (!isnan(med[f]))
			printf("%s.%s=%.*f\n", l, figs[f].key, figs[f].prec, med[f]);
	for (int f = 0; b->away_run && f < NAWAY; f++)
		if (!isnan(b->away[f]))
			printf("%s.%s=%.*f\n", l, away_figs[f].key, away_figs[f].prec, b->away[f]);
	printf("%s.disconnects=%u\n", l, b->disconnects);
	if (o->rate)
		printf("%s.rate=%u\n", l, o->rate);
	printf("\n%s: %u pairs (sender -> reader), %zu-byte payloads, window %u, read "
	       "receipts %s, median of %u run(s)\n",
	       l, o->pairs, o->size, o->window, how, b->runs);
	printf("  %-40s %12s %12s %12s\n", "figure", "median", "min", "max");
	for (int f = 0; f < NFIG; f++)
		if (!isnan(med[f]))
			print_row(figs[f].what, figs[f].prec, med[f], &lo[f], &hi[f]);
	if (b->away_run) {
		printf("  away phase: %u read receipts per pair while the senders are away, in "
		       "%u slices %u ms apart\n",
		       o->away_reads, AWAY_SLICES, AWAY_GAP * o->flush_ms);
		for (int f = 0; f < NAWAY; f++)
			if (!isnan(b->away[f]))
				print_row(away_figs[f].what, away_figs[f].prec, b->away[f], NULL,
					  NULL);
	}
	fflush(stdout);
}

/* Errors over every round and the away phase. */
static double errors(const struct rc *b)
{
	double e = 0;

	for (unsigned r = 0; r < b->runs; r++)
		e += b->v[r][F_SENT] - b->v[r][F_ACKED] + b->v[r][F_READ_ERR];
	if (b->away_run)
		e += b->away[A_ERR] + b->away[A_LATE];
	return e;
}

int fb_run_receipts(const struct fb_opts *o)
{
	static struct rc b;
	struct fb_cred *creds;
	double errs;
	int rc = 1;

	if (o->runs > MAX_RUNS)
		return 2;
	b.o = o;
	atomic_store(&b.tick_ms, TICK_MS);
	fb_raise_nofile();
	creds = fb_get_creds(o, 2 * (size_t)o->pairs, o->pairs);
	if (!creds)
		return 1;
	if (setup(&b, creds) == 0 && start_threads(&b, 0, b.n) == 0 &&
	    wait_devices(&b, 0, b.n, 0, fb_now_ns() + CONNECT_TIMEOUT_MS * 1000000ull) == 0) {
		for (unsigned r = 1; r <= o->runs && !fb_interrupted; r++) {
			if (run_round(&b, r, b.v[r - 1]))
				break;
			b.runs = r;
		}
		if (b.runs == o->runs && !o->no_reads && o->away_reads && !fb_interrupted)
			b.away_run = away_phase(&b, b.away) == 0;
		if (b.runs)
			report(&b);
		errs = errors(&b);
		rc = b.runs == o->runs && errs == 0 ? 0 : 1;
		if (errs)
			fprintf(stderr,
				"ferry-bench: %.0f error(s): unanswered SENDs, read_errors, "
				"away_errors or away_not_caught_up\n",
				errs);
	}
	teardown(&b);
	free(creds);
	return rc;
}
