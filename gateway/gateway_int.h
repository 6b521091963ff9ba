/*
 * gateway_int.h - what the files of gateway/ share (private to gateway/).
 *
 *   gateway.c   start/stop, worker threads, listeners, the mailbox dispatch
 *   conn.c      one device connection: reads, writes, TLS, timers, handshake
 *   route.c     SEND -> recipients -> fan-out (live or store) -> ACK/NACK
 *   deliver.c   the recipient's side: catch-up from the store, live DELIVERs,
 *               DELIVER_ACK, timeouts, QUEUE_EMPTY
 *   ops.c       requests to the offline store and their answers
 *   receipt.c   delivered and read receipts: each worker's batcher, and a
 *               flushed batch's way to the devices of the user it is for
 *   presence.c  device -> (worker, connection); duplicate SENDs; last seen
 *   authfail.c  failed handshakes per address and per device
 *   tls.c       the server's TLS context
 *
 * Threads: each worker runs its own loop and owns its connections and its
 * pending SENDs outright. Across workers only mailbox messages travel; the
 * presence and duplicate tables are the only shared structures, each behind
 * its own mutex, held for a hash operation and nothing more.
 *
 * Lifetimes: a connection is freed only after its libuv handles are closed
 * and no threadpool job refers to it (refs == 0). A shared envelope
 * (struct gw_env) lives while any connection still has it queued or in
 * flight. Store requests name connections by id, never by pointer: their
 * answers may come after the connection is gone. A worker stops only when
 * every store request it made has been answered.
 *
 * Ordering (docs/internals/delivery.md): routing a target under the presence
 * lock, and a device's registration under the same lock, make every store
 * write for a device that was routed before the device registered commit
 * before its catch-up reads the store.
 */
#ifndef FERRY_GATEWAY_GATEWAY_INT_H
#define FERRY_GATEWAY_GATEWAY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uthash.h>
#include <uv.h>

#include "common/buf.h"
#include "common/hist.h"
#include "common/config.h"
#include "common/mailbox.h"
#include "gateway/gateway.h"
#include "gateway/proto.h"
#include "queue/queue.h"
#include "queue/receipts.h"

/* Bytes read from a socket at once, into the worker's shared buffer. */
#define GW_READ_CHUNK (64 * 1024)
/* SENDs of one connection waiting for their recipients to be looked up: past
 * this the connection is not read until half of them are through, so a fast
 * sender is slowed by TCP instead of refused (which would reorder its SENDs). */
#define GW_MAX_QUEUED_SENDS 1024
/* Devices one user may have that a SEND reaches. */
#define GW_MAX_USER_DEVICES 64
/* How long a delivered SEND is remembered to answer retransmissions. */
#define GW_DEDUP_TTL_MS (10 * 60 * 1000)
#define GW_DEDUP_MAX 1000000
/* Output coalescing (conn.c): frames written to a connection during one
 * loop iteration are copied into a cork of up to GW_CORK_SIZE bytes and
 * written with one system call after the iteration's I/O callbacks. Larger
 * frames go out on their own (after the cork). A cork's buffer starts at
 * GW_CORK_FIRST bytes and doubles as needed: a turn that answers hundreds
 * of handshakes touches that much per connection, not 16 KiB. At most
 * GW_CORK_DIRTY connections of a worker hold a cork at once (past that,
 * every cork is written at once), and GW_CORK_SPARE free corks are kept
 * for reuse, with their buffers. */
#define GW_CORK_SIZE (16 * 1024)
#define GW_CORK_FIRST 1024
#define GW_CORK_COPY_MAX (GW_CORK_SIZE / 2)
#define GW_CORK_DIRTY 1024
#define GW_CORK_SPARE 64
/* How often last_seen is written to PostgreSQL, in one statement. */
#define GW_SEEN_FLUSH_MS 5000
#define GW_SEEN_BATCH 1000
/* Most device ids waiting for that flush; past it, repeats are dropped
 * first, then new ids (their last_seen is written at their next event). */
#define GW_SEEN_MAX (1u << 20)

/* The directory: user -> device ids, cached so that a SEND needs no query.
 * Entries live GW_DIR_TTL_MS (devices registered through another node's
 * admin API show within that); this node's admin API invalidates at once. */
#define GW_DIR_TTL_MS 2000
#define GW_DIR_MAX 100000

enum { GW_PLAIN = 0, GW_TLS = 1 };

/* A worker's counters (struct gateway_stats): written by the worker only,
 * summed over the workers on read. The first two are gauges. */
enum {
	GW_ST_CONNS,			     /* connections open on this worker */
	GW_ST_AUTHED,			     /* of which authenticated (WELCOME sent) */
	GW_ST_ACCEPTS,			     /* connections accepted */
	GW_ST_FRAMES_IN,		     /* frames decoded */
	GW_ST_FRAMES_OUT,		     /* frames written */
	GW_ST_BYTES_IN,			     /* bytes read from sockets (TLS records included) */
	GW_ST_BYTES_OUT,		     /* frame bytes written (before TLS) */
	GW_ST_WRITES,			     /* socket writes (system calls) */
	GW_ST_ENV_ACCEPTED,		     /* SENDs accepted for routing (not retransmissions) */
	GW_ST_ENV_ONLINE,		     /* live DELIVERs acknowledged */
	GW_ST_ENV_DRAINED,		     /* stored DELIVERs acknowledged */
	GW_ST_NACK,			     /* + reason - 1: NACKs by reason (1 to 5) */
	GW_ST_RCPT_READ_IN = GW_ST_NACK + 5, /* ids from devices' RECEIPT frames */
	GW_ST_RCPT_DELIVERED,		     /* ids made from DELIVER_ACKs */
	GW_ST_RCPT_BATCHES,		     /* DELIVER_RECEIPT envelopes made */
	GW_ST_RCPT_IDS_OUT,		     /* ids in them */
	GW_ST_RCPT_OFF,	 /* RECEIPT frames of users who switched read receipts off */
	GW_ST_RCPT_LOST, /* delivered ids neither delivered nor stored */
	GW_ST_N,
};

/* An encoded DELIVER (or DELIVER_RECEIPT) frame, shared by every
 * connection it goes to. What the store needs besides the frame's own
 * fields is kept with it, and for a message what its delivered receipt
 * needs. */
struct gw_env {
	atomic_uint refs;
	uint64_t server_id;
	unsigned ttl;	       /* seconds in the store, 0: the default */
	uint8_t kind;	       /* QUEUE_KIND_MESSAGE or QUEUE_KIND_RECEIPT */
	uint8_t user_len;      /* message: its sender user, in frame[] */
	uint16_t user_off;     /* at this offset */
	int64_t sender_device; /* message: 0 if the server originated it */
	uint64_t born_ns;      /* uv_hrtime() when it was encoded */
	uint64_t client_id;    /* message */
	size_t len;
	uint8_t frame[];
};

struct gw_env *gw_env_new(size_t len);
struct gw_env *gw_env_ref(struct gw_env *env);
void gw_env_unref(struct gw_env *env);

enum gw_msg_kind {
	GW_MSG_DELIVER,	 /* to the recipient's worker */
	GW_MSG_RESULT,	 /* to the sender's worker: one target done */
	GW_MSG_KICK,	 /* close a connection with an ERROR */
	GW_MSG_STOP,	 /* stop the worker */
	GW_MSG_HANDOVER, /* to a replaced connection's worker: finish with it */
	GW_MSG_TAKEOVER, /* back to the new connection: the old one is done */
	GW_MSG_RELEASE,	 /* to a closed connection's own worker: forget it */
	GW_MSG_STORE,	 /* the store answered a request (struct gw_op) */
	GW_MSG_INJECT,	 /* to worker 0: an envelope from the server itself */
	GW_MSG_SETTINGS, /* a user's read_receipts changed (text: the user) */
	GW_MSG_DRAIN,	 /* stop listening, RECONNECT every device (code: spread ms) */
};

/* What became of one target of a SEND. */
enum gw_result {
	GW_RES_ACKED,  /* the device acknowledged it */
	GW_RES_STORED, /* committed to the store (or was there already) */
	GW_RES_GONE,   /* the device was deleted meanwhile */
	GW_RES_FULL,   /* its queue is full: not stored */
	GW_RES_FAILED, /* neither acknowledged nor stored: retry */
};

struct gw_msg {
	struct mailbox_msg link; /* first */
	enum gw_msg_kind kind;
	uint64_t conn_id;
	int64_t device_id;
	struct gw_env *env;	   /* DELIVER: one reference, owned by the message */
	unsigned origin;	   /* DELIVER: the sender's worker; HANDOVER: the new one's */
	uint64_t send_id;	   /* DELIVER, RESULT */
	enum gw_result result;	   /* RESULT */
	uint64_t server_id;	   /* RESULT: stored before under this id (0: no) */
	unsigned code;		   /* KICK: proto_error_code */
	uint64_t new_conn;	   /* HANDOVER: the connection that replaces conn_id */
	struct gw_inject_job *job; /* INJECT */
	char *text;		   /* SETTINGS: the user (owned); code: read_receipts */
};

/* A DELIVER written to a connection and not yet acknowledged: live (from a
 * sender, with a deadline) or stored (from the store, no deadline). */
struct gw_inflight {
	uint64_t server_id;
	int stored;
	unsigned origin;
	uint64_t send_id;
	uint64_t deadline; /* uv_now() milliseconds */
	struct gw_env *env;
	struct gw_inflight *prev, *next; /* live: FIFO by deadline (utlist DL) */
	UT_hash_handle hh;		 /* by server_id */
};

/* A request to the store and what the answer goes back to. */
enum gw_op_kind {
	GW_OP_PUT,     /* store an envelope for devices, report to a SEND */
	GW_OP_BARRIER, /* catch-up: wait for earlier writes */
	GW_OP_COUNT,   /* catch-up: WELCOME's pending */
	GW_OP_FETCH,   /* catch-up: the next page */
	GW_OP_DELETE,  /* acknowledged stored envelopes */
};

/* Whether a PUT wakes the devices it stored for. */
enum gw_wake {
	GW_WAKE_NO,	   /* a connection is catching them up */
	GW_WAKE_IF_AWAY,   /* unless a connection registered since */
	GW_WAKE_SUSPENDED, /* connected but not acknowledging: always */
};

struct gw_op {
	struct gw_msg msg; /* first: the store posts it back (GW_MSG_STORE) */
	struct queue_req req;
	enum gw_op_kind kind;
	uint64_t conn_id;   /* the connection it is for (0: none) */
	unsigned origin;    /* PUT: the SEND's worker */
	uint64_t send_id;   /* PUT: the SEND (0: none) */
	struct gw_env *env; /* PUT: the payload lives in its frame */
	char sender_user[QUEUE_USER_MAX + 1];
	uint64_t *ids; /* DELETE */
	int wake;      /* PUT: enum gw_wake, for the devices it stores for */
	struct queue_put puts[];
};

/* A SEND on its way: owned by the sender's worker. */
struct gw_send {
	uint64_t id;
	struct gw_conn *conn; /* NULL once the sender's connection closed */
	uint64_t conn_id;
	int64_t device_id;
	uint64_t client_id;
	uint64_t server_id;
	unsigned remaining;
	unsigned targets;
	unsigned failed, full, stored;
	uint64_t dup_id;	   /* the store had it under this id */
	struct gw_inject_job *job; /* an envelope from the server itself */
	struct gw_rflush *flush;   /* a batch of receipts */
	struct gw_send *conn_next; /* the connection's list of its sends */
	UT_hash_handle hh;	   /* worker's table, by id */
};

/* gateway_inject() waiting for its envelope on worker 0. */
struct gw_inject_job {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
	enum ferry_err rc;
	struct gw_env *env;
	size_t n;
	int64_t devices[GW_MAX_USER_DEVICES];
	unsigned targets, failed, full, stored;
	uint64_t dup_id; /* a target's store had it under this id */
};

/* A device's RECEIPT frame, answered once every batch that took its ids
 * has been delivered or stored (receipt.c). */
struct gw_rwait {
	uint64_t conn_id;
	uint64_t client_id;
	long refs;  /* batches that took it and are not done */
	int adding; /* in receipts_add(): refs is not complete yet */
	unsigned failed, full, unknown, stored;
};

/* A flushed batch of receipts on its way to its user's devices. */
struct gw_rflush {
	uv_work_t req; /* the devices' lookup, on a directory miss */
	struct gw_worker *w;
	struct gw_env *env; /* the DELIVER_RECEIPT */
	int64_t target_device;
	char target_user[QUEUE_USER_MAX + 1];
	size_t nids; /* in the envelope */
	size_t ntags;
	struct gw_rwait **tags;
	enum ferry_err rc;
	size_t nfound;
	int64_t found[GW_MAX_USER_DEVICES];
};

/* A SEND parsed and waiting for its recipients to be looked up. */
struct gw_pending {
	struct gw_pending *next;
	uint64_t client_id;
	uint64_t server_id;
	char to_user[PROTO_MAX_USER + 1];
	size_t ntargets;			/* 0: one env for all devices */
	int64_t devices[PROTO_MAX_TARGETS];	/* per-device mode */
	struct gw_env *envs[PROTO_MAX_TARGETS]; /* [0] only in all-devices mode */
	/* Filled by the lookup on the threadpool. */
	enum ferry_err rc;
	size_t nfound;
	int64_t found[GW_MAX_USER_DEVICES];
};

enum gw_conn_state {
	GW_CONN_HANDSHAKE, /* waiting for HELLO */
	GW_CONN_AUTH,	   /* HELLO being checked, then registering (no WELCOME yet) */
	GW_CONN_READY,	   /* WELCOME sent */
	GW_CONN_CLOSING,
};

/* Where a registered connection is with the store (deliver.c). */
enum gw_phase {
	GW_PH_NONE,	/* not registered */
	GW_PH_HANDOVER, /* waiting for the connection it replaced to finish */
	GW_PH_BARRIER,	/* waiting for writes routed before it registered */
	GW_PH_COUNT,	/* asking for WELCOME's pending */
	GW_PH_CATCHUP,	/* sending stored envelopes; live ones go to the store */
	GW_PH_LIVE,	/* caught up: live envelopes are written at once */
};

/* Frames written during this loop iteration, not yet given to the socket
 * (conn.c). For a TLS connection it holds nothing: the records wait in the
 * output BIO and the cork only marks the connection for the flush. */
struct gw_cork {
	struct gw_conn *c;
	struct gw_cork *prev, *next; /* the worker's dirty list, or spare list */
	size_t len, cap;
	uint8_t *data; /* cap bytes (NULL: none yet) */
};

struct gw_conn {
	uv_tcp_t tcp; /* first: the handle's address is the connection's */
	/* One timer for every deadline (conn.c): the handshake's, then the
	 * idle timeout; the earliest DELIVER awaiting its ack; a catch-up step
	 * to retry; once closing, the flush deadline. */
	uv_timer_t timer;
	struct gw_worker *w;
	uint64_t id;
	uint64_t accepted; /* uv_now() at accept: the handshake deadline's start */
	enum gw_conn_state state;
	int64_t device_id;
	char user[QUEUE_USER_MAX + 1];
	int read_receipts; /* the user sends read receipts */
	uint64_t last_rx;
	/* Frames that cost work without carrying envelopes (conn.c): a token
	 * bucket in thousandths of a frame, last filled at uv_now() (low 32
	 * bits: a connection is never silent for 49 days). */
	uint32_t bucket;
	uint32_t bucket_at;
	/* Live DELIVERs whose ack deadline passed (deliver.c): their acks may
	 * still come, late, and are not counted in the bucket. */
	uint32_t late_acks;
	/* uv_now() (low 32 bits, never 0) since when output has waited in
	 * user space without the socket taking any; 0: none waits. */
	uint32_t stalled_at;
	struct buf in;	      /* a partial frame; empty (no memory) between frames */
	struct gw_cork *cork; /* output of this iteration, or NULL */
	SSL *ssl;	      /* NULL: plain TCP */
	BIO *rbio, *wbio;
	struct gw_inflight *inflight; /* hash by server_id */
	struct gw_inflight *fifo;     /* live ones by deadline, earliest first */
	/* The store (deliver.c). */
	enum gw_phase phase;
	int64_t last_seq;	 /* highest stored seq sent on this connection */
	uint64_t drained;	 /* stored envelopes sent since the last QUEUE_EMPTY */
	unsigned stored_unacked; /* stored DELIVERs in flight */
	unsigned puts;		 /* PUTs this connection made, unanswered */
	int fetching;		 /* a FETCH (or BARRIER, COUNT) unanswered */
	int exhausted;		 /* the last FETCH came back short */
	int refetch;		 /* something was stored since the FETCH began */
	unsigned retry_ms;	 /* back-off while the store is unavailable */
	uint64_t retry_at;	 /* uv_now() to try the catch-up again; 0: no */
	struct gw_env **held;	 /* fetched, waiting for room in the output */
	size_t nheld, held_next;
	/* HANDOVER: DELIVERs that arrived meanwhile (stored after the old
	 * connection's), and a HANDOVER for this one that waits for it. */
	struct gw_msg *waiting, *waiting_tail;
	struct gw_msg *handover;
	uint64_t *acked; /* stored ids acknowledged, to DELETE */
	size_t nacked, acked_cap;
	int deleting;		       /* a DELETE unanswered */
	struct gw_send *sends;	       /* this connection's SENDs in progress */
	struct gw_pending *queue_head; /* SENDs awaiting lookup, in order */
	unsigned queued;
	int lookup_busy;
	int paused;	   /* not reading: too many SENDs queued */
	int refs;	   /* handles still open + threadpool jobs */
	int counted;	   /* counts in gw->connections */
	int authed;	   /* counts in GW_ST_AUTHED */
	UT_hash_handle hh; /* worker's table, by id */
};

#define GW_SPARES 2

struct gw_worker {
	struct gateway *gw;
	unsigned index;
	uv_thread_t thread;
	uv_loop_t loop;
	struct mailbox mbox;
	uv_poll_t listeners[2];	 /* gateway.c accepts itself */
	int listen_fd[2];	 /* -1: none */
	int listening[2];	 /* the handle's close callback closes listen_fd */
	uv_timer_t accept_timer; /* accepting again after EMFILE */
	int accept_timer_on;	 /* initialised, not yet closed */
	int mbox_ok;
	/* Admission (gateway.c): HELLOs being checked on this worker;
	 * accepting stops at [gateway] max_handshakes (hs_paused) and while out
	 * of descriptors (emfile_paused). */
	unsigned authing;
	int hs_paused, emfile_paused;
	uint64_t hs_logged_at;	   /* uv_now() of the last event=accept_paused */
	uint64_t accept_logged_at; /* uv_now() of the last event=accept_failed */
	uint64_t accept_failures;  /* since then */
	uv_timer_t seen_timer;	   /* worker 0 only */
	struct receipts *receipts; /* this worker's receipt batcher */
	int delivered_receipts;	   /* [receipts] delivered = on */
	uv_timer_t receipt_timer;  /* its next flush */
	uint64_t receipt_due;	   /* when the timer fires (UINT64_MAX: idle) */
	/* Counters (GW_ST_*): written by this worker only, summed on read. */
	atomic_uint_fast64_t st[GW_ST_N];
	struct hist delivery; /* live DELIVER written -> acknowledged, us */
	/* The corks go out after each iteration's I/O callbacks (check) and
	 * before it waits for I/O (prepare: what timers wrote). */
	uv_check_t flush_check;
	uv_prepare_t flush_prepare;
	int flush_on;	       /* both initialised (closed when stopping) */
	struct gw_cork *dirty; /* connections with output this iteration */
	unsigned ndirty;
	struct gw_cork *spare; /* free corks for reuse */
	unsigned nspare;
	uint8_t *rbuf;	       /* GW_READ_CHUNK, shared by this worker's reads */
	uint8_t *plain;	       /* GW_READ_CHUNK of decrypted TLS bytes */
	struct gw_conn *conns; /* by id */
	struct gw_send *sends; /* by id */
	uint64_t next_send_id;
	unsigned ops; /* store requests unanswered */
	int stopping;
	uv_sem_t started;
	enum ferry_err start_rc;
};

/* Only the worker's own thread writes its counters: a relaxed load and
 * store, no locked instruction; readers see each value whole. */
static inline void gw_stat(struct gw_worker *w, int which, uint64_t n)
{
	atomic_store_explicit(&w->st[which],
			      atomic_load_explicit(&w->st[which], memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void gw_stat_sub(struct gw_worker *w, int which, uint64_t n)
{
	gw_stat(w, which, -n);
}

/* A device's connection. The entry outlives the connection until its
 * worker has handled everything posted to it before the close (RELEASE), so
 * that a successor waits for that (HANDOVER). */
/* Where a connection comes from, for GET /v1/devices/{device}: 32 bytes
 * rather than a sockaddr_storage's 128 in every presence entry. */
struct gw_peer {
	int64_t since_ms; /* registered (authenticated), Unix ms */
	uint8_t addr[16]; /* IPv4 in the first 4 bytes */
	uint16_t port;
	uint8_t family; /* AF_INET, AF_INET6; 0: unknown */
};

struct gw_presence {
	int64_t device_id;
	uint64_t conn_id;
	unsigned worker;
	struct gw_peer peer;
	UT_hash_handle hh;
};

struct gw_dedup_key {
	int64_t device_id;
	uint64_t client_id;
};

struct gw_dedup {
	struct gw_dedup_key key;
	int acked;
	uint64_t conn_id;
	uint64_t server_id;
	uint64_t created_ms;
	struct gw_dedup *prev, *next; /* age order */
	UT_hash_handle hh;
};

/* Failed handshakes of one device, or from one address (authfail.c). */
struct gw_authfail_key {
	uint8_t kind;	  /* a device, or an address */
	uint8_t addr[16]; /* the device id, an IPv4 address, an IPv6 /64 */
};

struct gw_authfail {
	struct gw_authfail_key key;
	uint32_t count;			 /* failures in the window */
	uint64_t since_ms;		 /* the window's start, gw_now_ms() */
	struct gw_authfail *prev, *next; /* by since_ms (utlist DL) */
	UT_hash_handle hh;
};

/* Most addresses and devices whose failed handshakes are counted at once. */
#define GW_AUTHFAIL_MAX 100000

struct gw_dir {
	char user[QUEUE_USER_MAX + 1];
	uint64_t fetched_ms;
	size_t n;
	int64_t ids[GW_MAX_USER_DEVICES];
	UT_hash_handle hh;
};

struct gateway {
	const struct ferry_config *cfg;
	struct queue_registry *reg;
	struct queue_store *store;
	struct push_service *push; /* NULL: no wake-ups */
	/* The context new TLS connections start from (NULL: no TLS), under
	 * tls_lock: SIGHUP swaps it (tls.c). */
	pthread_mutex_t tls_lock;
	SSL_CTX *tls;
	unsigned nworkers;
	struct gw_worker *workers;
	uint16_t ports[2];
	atomic_int ready;
	atomic_uint connections;
	atomic_int draining;	  /* gateway_drain() was called */
	atomic_uint drain_spread; /* its spread, ms */
	atomic_uint peak_connections;
	uint64_t started_ms;	    /* gw_now_ms() at start */
	atomic_uint listeners_open; /* listening sockets not yet closed */
	atomic_uint_fast64_t next_conn_id;
	atomic_uint_fast64_t next_server_id;

	/* Accepting takes it shared; a worker shedding connections with a
	 * spare descriptor takes it alone (gateway.c). */
	pthread_rwlock_t accept_lock;
	/* Descriptors kept open (on /dev/null) so that a worker out of them
	 * can shed connections; -1: lost to another thread, opened again when
	 * one is free. Any worker may use any of them; under accept_lock. */
	int spare_fd[GW_SPARES];

	pthread_mutex_t authfail_lock;
	struct gw_authfail *authfail;	     /* by key */
	struct gw_authfail *authfail_oldest; /* by window start */

	pthread_mutex_t presence_lock;
	struct gw_presence *presence;
	/* Devices to flush to last_seen, same lock: appended as they come
	 * (8 bytes each, repeats allowed), sorted and made unique when taken. */
	int64_t *seen;
	size_t nseen, seen_cap;

	pthread_mutex_t dir_lock;
	struct gw_dir *dir;
	size_t dir_count;

	pthread_mutex_t dedup_lock;
	struct gw_dedup *dedup;
	struct gw_dedup *dedup_oldest, *dedup_newest;
	size_t dedup_count;
};

/* ---- gateway.c ---- */

/* Hand @m to worker @index (directly when it is the calling worker @self). */
void gw_post(struct gateway *gw, struct gw_worker *self, unsigned index, struct gw_msg *m);
/* Queue @m on worker @index's mailbox, never handling it directly (safe
 * under the presence lock). 0, or -1 if that worker is stopping (the caller
 * keeps @m). */
int gw_post_later(struct gateway *gw, unsigned index, struct gw_msg *m);
uint64_t gw_now_ms(void);
/* A worker that is stopping closes its mailbox once its store requests are
 * answered. */
void gw_worker_maybe_done(struct gw_worker *w);

/* ---- conn.c ---- */

/* A connection was accepted on socket @fd (taken: closed on failure). */
void gw_conn_accept(struct gw_worker *w, int fd, int tls);
/* A HELLO of a connection of @w is being checked (state AUTH); its check
 * and registration are over (WELCOME, or closed before it). */
void gw_auth_begin(struct gw_worker *w);
void gw_auth_done(struct gw_worker *w);
struct gw_conn *gw_conn_find(struct gw_worker *w, uint64_t id);
/* Queue bytes for the peer; @env (may be NULL) is referenced while they are
 * in flight instead of copying them. Closes the connection (overloaded) when
 * the output cap would be passed. */
void gw_conn_write(struct gw_conn *c, const void *p, size_t len, struct gw_env *env);
void gw_conn_send_frame(struct gw_conn *c, const struct proto_frame *f);
void gw_conn_send_error(struct gw_conn *c, unsigned code, const char *text);
/* Send ERROR @code (0: none) and close. Safe to call more than once. */
void gw_conn_close(struct gw_conn *c, unsigned code, const char *text);
/* Write every cork of @w now; what the flush check calls. */
void gw_conn_flush_all(struct gw_worker *w);
/* Free @w's spare corks (the worker has stopped). */
void gw_conn_corks_free(struct gw_worker *w);
/* Where @c comes from, and now as the time it registered. */
void gw_conn_peer(struct gw_conn *c, struct gw_peer *peer);
void gw_conn_ref(struct gw_conn *c);
void gw_conn_unref(struct gw_conn *c);
/* A deadline of deliver.c (ack, retry_at) changed: re-arm the timer. */
void gw_conn_arm_ack_timer(struct gw_conn *c);
/* The worker's loop is done: free connections still held. */
void gw_conn_free_all(struct gw_worker *w);
/* Send WELCOME with @pending and start the idle timer: frames are welcome. */
void gw_conn_welcome(struct gw_conn *c, uint64_t pending);
/* Send RECONNECT: the device should connect again (elsewhere) after @after_ms. */
void gw_conn_reconnect(struct gw_conn *c, uint64_t after_ms);
/* 1 if @len more bytes fit in the output without nearing max_output. */
int gw_conn_has_room(const struct gw_conn *c, size_t len);
/* Stop and restart reading from the device (back-pressure). */
void gw_conn_pause(struct gw_conn *c);
void gw_conn_resume(struct gw_conn *c);

/* ---- route.c ---- */

void gw_route_send(struct gw_conn *c, const struct proto_send *s);
/* 1 if @id is one of the @n device ids at @ids. */
int gw_ids_have(const int64_t *ids, size_t n, int64_t id);
void gw_send_ack(struct gw_conn *c, uint64_t client_id, uint64_t server_id, int stored);
void gw_send_nack(struct gw_conn *c, uint64_t client_id, unsigned reason, const char *text);
/* A target's result for SEND @send_id of this worker; @server_id non-zero:
 * the store had the envelope already under that id (GW_MSG_RESULT carries
 * it from other workers). */
void gw_route_result(struct gw_worker *w, uint64_t send_id, enum gw_result r, uint64_t server_id);
/* The same, for a target the store already had under @server_id (a
 * retransmission after a restart): the ACK names that id. */
void gw_route_result_dup(struct gw_worker *w, unsigned origin, uint64_t send_id,
			 uint64_t server_id);
/* Report @r for target of SEND @send_id on worker @origin. */
void gw_route_result_to(struct gw_worker *w, unsigned origin, uint64_t send_id, enum gw_result r);
/* The sender's connection is closing: detach its sends, drop queued ones. */
void gw_route_sender_closed(struct gw_conn *c);
void gw_route_inject(struct gw_worker *w, struct gw_inject_job *job);
/* Send @fl's envelope to @n devices like a SEND; gw_receipt_sent() at the end. */
void gw_route_receipts(struct gw_worker *w, struct gw_rflush *fl, const int64_t *devices, size_t n);
/* The worker is gone: settle what is left of its sends. */
void gw_route_release(struct gw_worker *w);

/* ---- deliver.c ---- */

/* HELLO checked: register the device and start its catch-up. */
void gw_deliver_register(struct gw_conn *c);
void gw_deliver_msg(struct gw_worker *w, struct gw_msg *m); /* DELIVER, takes m */
void gw_deliver_handover(struct gw_worker *w, struct gw_msg *m);
void gw_deliver_takeover(struct gw_worker *w, uint64_t conn_id);
void gw_deliver_release(struct gw_worker *w, int64_t device_id, uint64_t conn_id);
/* Returns how many of the ids matched nothing in flight on @c and were not
 * late acks of DELIVERs whose deadline passed. */
size_t gw_deliver_acked(struct gw_conn *c, const struct proto_ids *ids);
/* The connection's timer: ack deadlines passed, catch-up steps to retry. */
void gw_deliver_ack_timeout(struct gw_conn *c);
/* There may be room in the output again. */
void gw_deliver_pump(struct gw_conn *c);
/* The connection is closing: store what it holds, free the rest. */
void gw_deliver_conn_closed(struct gw_conn *c);
/* Store answers for deliver.c's requests. */
void gw_deliver_op_done(struct gw_worker *w, struct gw_op *op);

/* ---- ops.c ---- */

/* A PUT of @env for @n devices, answered to SEND @send_id on worker
 * @origin (send_id 0: nobody) and to connection @conn_id (0: none). Submit
 * it with gw_op_submit(). NULL: no memory. */
struct gw_op *gw_op_put(struct gw_worker *w, struct gw_env *env, const int64_t *devices, size_t n,
			unsigned origin, uint64_t send_id, uint64_t conn_id);
struct gw_op *gw_op_new(struct gw_worker *w, enum gw_op_kind kind, uint64_t conn_id,
			int64_t device);
void gw_op_submit(struct gw_worker *w, struct gw_op *op);
/* A store answer arrived on @w (GW_MSG_STORE). */
void gw_op_done(struct gw_worker *w, struct gw_op *op);
void gw_op_free(struct gw_op *op);
/* Encode a DELIVER into a new shared envelope. NULL: too large, no memory. */
struct gw_env *gw_env_deliver(uint64_t server_id, const char *sender_user, size_t user_len,
			      int64_t sender_device, uint64_t client_id, uint64_t timestamp,
			      const uint8_t *payload, size_t len);

/* ---- receipt.c ---- */

/* The worker's batcher and its timer; FERRY_ENOMEM. */
enum ferry_err gw_receipts_init(struct gw_worker *w);
/* Stopping: flush what the batcher holds, close the timer. */
void gw_receipts_stop(struct gw_worker *w);
void gw_receipts_free(struct gw_worker *w);
/* Device @c acknowledged the message @env: its sender learns it was delivered. */
void gw_receipt_delivered(struct gw_conn *c, const struct gw_env *env);
/* A device's RECEIPT frame. */
void gw_receipt_read(struct gw_conn *c, const struct proto_receipt *r);
/* A batch's fan-out is done (route.c): answer the RECEIPTs waiting for it. */
void gw_receipt_sent(struct gw_worker *w, struct gw_rflush *fl, const struct gw_send *s);
/* SETTINGS: @user's connections on this worker send read receipts or not. */
void gw_receipt_settings(struct gw_worker *w, const char *user, int on);
/* Encode a DELIVER_RECEIPT into a new shared envelope (NULL: no memory).
 * @ids: @n (1 to PROTO_MAX_IDS) client ids. */
struct gw_env *gw_env_receipt(uint64_t server_id, int kind, const char *peer_user, int64_t device,
			      const uint64_t *ids, size_t n);

/* ---- presence.c ---- */

/* The *_locked functions expect gw->presence_lock held by the caller. */
/* Register @c as device's connection; returns 1 and the replaced one's
 * location, 0, or -1 (no memory). */
int gw_presence_add_locked(struct gateway *gw, int64_t device_id, unsigned worker, uint64_t conn_id,
			   const struct gw_peer *peer, unsigned *old_worker, uint64_t *old_conn);
/* Remove the entry if it still names @conn_id. */
void gw_presence_remove_locked(struct gateway *gw, int64_t device_id, uint64_t conn_id);
int gw_presence_find_locked(struct gateway *gw, int64_t device_id, unsigned *worker,
			    uint64_t *conn_id);
int gw_presence_find(struct gateway *gw, int64_t device_id, unsigned *worker, uint64_t *conn_id);
/* Device @device_id's entry: 1 and its worker and peer, or 0. */
int gw_presence_peer(struct gateway *gw, int64_t device_id, unsigned *worker, struct gw_peer *peer);
void gw_presence_seen(struct gateway *gw, int64_t device_id);
/* Take up to @max devices to flush to last_seen. */
size_t gw_presence_take_seen(struct gateway *gw, int64_t *ids, size_t max);
void gw_presence_release(struct gateway *gw);

enum gw_dedup_verdict {
	GW_DEDUP_NEW,	 /* go ahead; *server_id is the caller's to fill */
	GW_DEDUP_IGNORE, /* same SEND in progress on this connection */
	GW_DEDUP_ACKED,	 /* answer ACK with *server_id again */
};
enum gw_dedup_verdict gw_dedup_begin(struct gateway *gw, int64_t device_id, uint64_t client_id,
				     uint64_t conn_id, uint64_t server_id, uint64_t *acked_id);
/* The SEND was ACKed with @server_id (the store's first one for a
 * retransmission it had): later copies get that one again. */
void gw_dedup_acked(struct gateway *gw, int64_t device_id, uint64_t client_id, uint64_t server_id);
void gw_dedup_forget(struct gateway *gw, int64_t device_id, uint64_t client_id, uint64_t conn_id);

/* ---- directory.c ---- */

/* 1 and @user's device ids in @ids/@n if the cache has a fresh entry. */
int gw_dir_get(struct gateway *gw, const char *user, int64_t *ids, size_t *n);
void gw_dir_put(struct gateway *gw, const char *user, const int64_t *ids, size_t n);
void gw_dir_forget(struct gateway *gw, const char *user);
void gw_dir_release(struct gateway *gw);

/* ---- authfail.c ---- */

/* 1 if handshakes of @device, or from @peer's address, have failed too often
 * in the current window: refuse this one without checking it. */
int gw_authfail_blocked(struct gateway *gw, const struct gw_peer *peer, int64_t device);
/* A handshake of @device from @peer failed (unknown device or wrong secret). */
void gw_authfail_record(struct gateway *gw, const struct gw_peer *peer, int64_t device);
void gw_authfail_release(struct gateway *gw);

/* ---- tls.c ---- */

/* A new server context with ferry's TLS policy, @cert_file's chain and
 * @key_file's key (PEM, unencrypted, accessible to its owner only), checked
 * to match; NULL and @err, naming the file, on failure. */
SSL_CTX *gw_tls_context(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Log which certificate @ctx serves (subject, expiry, fingerprint). */
void gw_tls_log_loaded(SSL_CTX *ctx);
/* An SSL for a new connection, from the context in force now; NULL: no
 * memory. Any worker may call it. */
SSL *gw_tls_new_ssl(struct gateway *gw);

#endif
