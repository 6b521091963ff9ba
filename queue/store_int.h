/*
 * store_int.h - the envelope store's private parts (queue/store*.c only).
 *
 * Files: store.c (the thread, its mailbox, dispatch, expiry, stop, stats),
 * store_conn.c (one non-blocking libpq connection in pipeline mode),
 * store_write.c (the writers: PUT batches), store_read.c (FETCH, DELETE,
 * COUNT, the expiry sweep). Everything here runs on the store thread, except
 * the counters and the ready flag, which are atomics that any thread reads.
 *
 * Connections: conns[0 .. nwriters-1] write, conns[nwriters .. nconn-1]
 * read. Writer i owns the devices whose id modulo nwriters is i
 * (store_writer_of), and only it ever writes envelopes for them.
 *
 * Requests: struct queue_req.store_private[0] holds the mailbox link while the
 * request travels to the store; store_private[1] then links it into a
 * writer's queue or batch. The store owns a request from the moment its
 * handler sees it until store_reply() posts the answer; not a byte of it is
 * touched after that. A PUT or BARRIER that concerns several writers is
 * split into parts (store_write.c): store-made requests with reply == NULL,
 * queued like the caller's own; the caller's request is answered once, after
 * its last part.
 */
#ifndef FERRY_QUEUE_STORE_INT_H
#define FERRY_QUEUE_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#include "common/hist.h"
#include "common/mailbox.h"
#include "queue/queue.h"

/* A query that has been in flight this long marks its connection dead: its
 * requests are answered FERRY_EUNAVAIL and the connection is reopened. */
#define STORE_QUERY_TIMEOUT_MS 15000
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 5000
/* How long stop waits for what is in flight. */
#define STORE_STOP_WAIT_MS 5000
#define STORE_MAX_CONNECTIONS 64
/* Payload bytes in one write batch (besides batch_max): bounds a statement. */
#define STORE_BATCH_BYTES (16u << 20)

/* ---- prepared statements (every connection has all of them) ---- */

enum store_stmt {
	STMT_PUT,
	STMT_FETCH,
	STMT_DELETE,
	STMT_COUNT,
	STMT_EXPIRE,
	STMT_N,
};

/* ---- one connection (store_conn.c) ---- */

struct store_conn;
struct store_seg;

/* Each successful result of the segment's query number @idx (0-based);
 * @res is borrowed. Failed queries are not passed: they set seg->rc. */
typedef void store_result_fn(struct store_seg *seg, unsigned idx, const PGresult *res);
/* The segment is over: after its Sync (rc: OK, or EDB if a query failed) or
 * when the connection was lost (EUNAVAIL). Called exactly once. */
typedef void store_done_fn(struct store_seg *seg, enum ferry_err rc);
typedef void store_conn_fn(struct store_conn *c);

/*
 * A segment of the pipeline: some queries and one Sync. Without BEGIN its
 * queries form one implicit transaction; an error skips the rest of it. The
 * owner embeds or allocates it and keeps it alive until on_done.
 */
struct store_seg {
	struct store_seg *next;
	store_result_fn *on_result;
	store_done_fn *on_done;
	void *arg;
	unsigned nqueries; /* sent */
	unsigned nended;   /* queries whose results are over */
	int got_result;	   /* the current query gave a result */
	enum ferry_err rc;
	uint64_t sent_ns;
};

enum store_conn_state {
	CONN_DOWN,	 /* waiting for the backoff timer */
	CONN_CONNECTING, /* PQconnectPoll */
	CONN_SETUP,	 /* pipeline on, statements being prepared */
	CONN_READY,
	CONN_CLOSED,
};

struct store_conn {
	struct queue_store *st;
	char name[24]; /* "writer", "reader1", ... for logs */
	enum store_conn_state state;
	PGconn *pg;
	uv_poll_t *poll; /* one per socket; freed in its close callback */
	int poll_fd;
	int poll_events;
	uv_timer_t timer; /* backoff, connect timeout, query timeout */
	unsigned backoff_ms;
	unsigned failures; /* consecutive failed attempts */
	uint64_t connect_ns;
	struct store_seg *head, *tail; /* in flight, oldest first */
	struct store_seg setup;
	int want_flush;
	int broken; /* a send failed: fail the connection before blocking */
	store_conn_fn *on_up, *on_down;
};

/* Set up @c (its timer on @loop) and start connecting at once. */
enum ferry_err store_conn_init(struct store_conn *c, struct queue_store *st, uv_loop_t *loop,
			       const char *name, store_conn_fn *on_up,
			       store_conn_fn *on_down) FERRY_WUR;

/* 1 when requests may be sent. */
int store_conn_ready(const struct store_conn *c);

/* Open segment @seg (zeroed by the caller but for its callbacks and arg). */
void store_seg_begin(struct store_conn *c, struct store_seg *seg);

/*
 * Add a query to the open segment: prepared statement @s, or @sql (no
 * parameters) when @s is STMT_N. Text parameters unless @formats says
 * otherwise. FERRY_EUNAVAIL if libpq refused: the connection is then failed
 * before the loop blocks, and the segment with it (on_done EUNAVAIL).
 */
enum ferry_err store_seg_query(struct store_conn *c, struct store_seg *seg, enum store_stmt s,
			       const char *sql, int nparams, const char *const *values,
			       const int *lengths, const int *formats, int binary_result);

/* Close the segment with a Sync; it is flushed before the loop blocks. */
void store_seg_end(struct store_conn *c, struct store_seg *seg);

/* Before the loop blocks: fail a broken connection, flush pending output. */
void store_conn_prepare(struct store_conn *c);

/* Close for good: segments in flight end with EUNAVAIL, handles close. */
void store_conn_close(struct store_conn *c);

/* ---- the store (store.c) ---- */

struct store_counters {
	atomic_uint_fast64_t puts, put_stored, put_duplicate, put_full, put_gone;
	atomic_uint_fast64_t put_unavail, put_limit, put_invalid, barriers;
	atomic_uint_fast64_t batches, batch_puts, batch_envelopes, batch_largest;
	atomic_uint_fast64_t batch_failures, commit_us_total, commit_us_max, commit_us_last;
	atomic_uint_fast64_t fetches, fetched_rows, deletes, deleted_rows, counts;
	atomic_uint_fast64_t read_failures, expired_rows, expire_sweeps;
	atomic_uint_fast64_t connects, connect_failures, inflight_bytes, queued_puts;
};

#define STAT_ADD(st, field, n) \
	atomic_fetch_add_explicit(&(st)->stats.field, (n), memory_order_relaxed)
#define STAT_SET(st, field, v) atomic_store_explicit(&(st)->stats.field, (v), memory_order_relaxed)
#define STAT_GET(st, field) atomic_load_explicit(&(st)->stats.field, memory_order_relaxed)

/* One writer (store_write.c): a connection and its FIFO of PUTs. */
struct store_writer {
	struct queue_store *st;
	struct store_conn *conn;
	struct queue_req *qhead, *qtail; /* waiting for the next batch */
	size_t nqueued;
	struct queue_req *bhead, *btail; /* the batch in flight */
	size_t batch_puts, batch_envelopes;
	size_t solo; /* PUTs to send one per batch (after a batch failed) */
	int busy;
	int committed;
	enum ferry_err build_rc; /* the batch could not be built (ENOMEM, ETOOBIG) */
	int rollback_busy;
	struct store_seg seg, rollback;
};

struct queue_store {
	struct queue_store_opts opts;
	char *conninfo;
	uv_loop_t loop;
	pthread_t thread;
	struct mailbox mb;
	struct mailbox_msg stop_msg;
	uv_prepare_t prepare;
	uv_timer_t expire_timer;
	uv_timer_t stop_timer;
	/* [0 .. nwriters-1] write, the rest read. */
	struct store_conn conns[STORE_MAX_CONNECTIONS];
	unsigned nconn;
	unsigned nwriters;
	struct store_writer w[STORE_MAX_CONNECTIONS - 1];
	unsigned batches_inflight; /* writers with a batch in flight */
	size_t inflight_bytes;	   /* payload bytes of PUTs queued or being written */
	unsigned reads_inflight;
	unsigned next_reader;
	struct store_seg sweep;
	uint64_t sweep_rows;
	int sweep_busy, sweep_again;
	int stopping, closing;
	atomic_int ready;
	struct store_counters stats;
	struct hist commit_hist; /* BEGIN sent -> COMMIT answered, us */
};

/* Answer @req with @rc (post its reply); @req is the caller's again. */
void store_reply(struct queue_store *st, struct queue_req *req, enum ferry_err rc);

/* A connection came up or went down: recompute readiness. */
void store_update_ready(struct queue_store *st);

/* Something the store waits for on stop has finished. */
void store_maybe_finish(struct queue_store *st);

/* 64-bit ids travel as the bigint with the same bits. */
static inline long long store_i64(uint64_t v)
{
	return (long long)(int64_t)v;
}

/* ---- the writers (store_write.c) ---- */

/* The writer that owns @device: the same one for as long as the store runs,
 * which keeps a device's PUTs in submission order. */
static inline struct store_writer *store_writer_of(struct queue_store *st, int64_t device)
{
	return &st->w[(uint64_t)device % st->nwriters];
}

/* Set up writer @i on connection conns[i]. */
void store_writer_init(struct queue_store *st, unsigned i);

/* A PUT or BARRIER from the mailbox. */
void store_writer_submit(struct queue_store *st, struct queue_req *req);

/* Send the next batch on every writer that is idle and has something waiting. */
void store_writer_kick(struct queue_store *st);

/* Writer @w's connection went down: answer everything it has queued. */
void store_writer_down(struct store_writer *w);

/* Stop: answer what is queued (not in flight) with FERRY_EUNAVAIL. */
void store_writer_drop_queued(struct queue_store *st);

/* ---- the readers (store_read.c) ---- */

/* A FETCH, DELETE or COUNT from the mailbox. */
void store_read_submit(struct queue_store *st, struct queue_req *req);

/* Start an expiry sweep on a reader, if none runs. */
void store_sweep_start(struct queue_store *st);

#endif
