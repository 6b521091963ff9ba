/*
 * gateway_int.h - what the files of gateway/ share (private to gateway/).
 *
 *   gateway.c   start/stop, worker threads, listeners, the mailbox dispatch
 *   conn.c      one device connection: reads, writes, TLS, timers, handshake
 *   route.c     SEND -> fan-out -> DELIVER -> DELIVER_ACK -> ACK/NACK
 *   presence.c  device -> (worker, connection); duplicate SENDs; last seen
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
 * flight.
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
#include "common/config.h"
#include "common/mailbox.h"
#include "gateway/gateway.h"
#include "gateway/proto.h"
#include "queue/queue.h"

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
/* How often last_seen is written to PostgreSQL, in one statement. */
#define GW_SEEN_FLUSH_MS 5000
#define GW_SEEN_BATCH 1000

/* The directory: user -> device ids, cached so that a SEND needs no query.
 * Entries live GW_DIR_TTL_MS (devices registered through another node's
 * admin API show within that); this node's admin API invalidates at once. */
#define GW_DIR_TTL_MS 2000
#define GW_DIR_MAX 100000

enum { GW_PLAIN = 0, GW_TLS = 1 };

/* An encoded DELIVER frame, shared by every connection it goes to. */
struct gw_env {
	atomic_uint refs;
	uint64_t server_id;
	size_t len;
	uint8_t frame[];
};

struct gw_env *gw_env_new(size_t len);
struct gw_env *gw_env_ref(struct gw_env *env);
void gw_env_unref(struct gw_env *env);

enum gw_msg_kind {
	GW_MSG_DELIVER, /* to the recipient's worker */
	GW_MSG_RESULT,	/* to the sender's worker: one target done */
	GW_MSG_KICK,	/* close a connection with an ERROR */
	GW_MSG_STOP,	/* stop the worker */
};

struct gw_msg {
	struct mailbox_msg link; /* first */
	enum gw_msg_kind kind;
	uint64_t conn_id;
	int64_t device_id;
	struct gw_env *env; /* DELIVER: one reference, owned by the message */
	unsigned origin;    /* DELIVER: the sender's worker */
	uint64_t send_id;   /* DELIVER, RESULT */
	int ok;		    /* RESULT */
	unsigned code;	    /* KICK: proto_error_code */
};

/* A DELIVER written to a connection and not yet acknowledged. */
struct gw_inflight {
	uint64_t server_id;
	unsigned origin;
	uint64_t send_id;
	uint64_t deadline; /* uv_now() milliseconds */
	struct gw_env *env;
	struct gw_inflight *prev, *next; /* FIFO by deadline (utlist DL) */
	UT_hash_handle hh;		 /* by server_id */
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
	unsigned failed;
	struct gw_send *conn_next; /* the connection's list of its sends */
	UT_hash_handle hh;	   /* worker's table, by id */
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
	GW_CONN_AUTH,	   /* HELLO being checked */
	GW_CONN_READY,
	GW_CONN_CLOSING,
};

struct gw_conn {
	uv_tcp_t tcp;	      /* first: the handle's address is the connection's */
	uv_timer_t timer;     /* handshake deadline, then the idle timeout */
	uv_timer_t ack_timer; /* earliest DELIVER awaiting its ack */
	struct gw_worker *w;
	uint64_t id;
	enum gw_conn_state state;
	int64_t device_id;
	char user[QUEUE_USER_MAX + 1];
	uint64_t last_rx;
	struct buf in; /* a partial frame; empty (no memory) between frames */
	SSL *ssl;      /* NULL: plain TCP */
	BIO *rbio, *wbio;
	struct gw_inflight *inflight;  /* hash by server_id */
	struct gw_inflight *fifo;      /* by deadline, earliest first */
	struct gw_send *sends;	       /* this connection's SENDs in progress */
	struct gw_pending *queue_head; /* SENDs awaiting lookup, in order */
	unsigned queued;
	int lookup_busy;
	int paused;	   /* not reading: too many SENDs queued */
	int refs;	   /* handles still open + threadpool jobs */
	int counted;	   /* counts in gw->connections */
	UT_hash_handle hh; /* worker's table, by id */
};

struct gw_worker {
	struct gateway *gw;
	unsigned index;
	uv_thread_t thread;
	uv_loop_t loop;
	struct mailbox mbox;
	uv_tcp_t listeners[2];
	int listen_fd[2]; /* -1: none */
	int listening[2]; /* the handle owns listen_fd */
	int mbox_ok;
	uv_timer_t seen_timer; /* worker 0 only */
	uint8_t *rbuf;	       /* GW_READ_CHUNK, shared by this worker's reads */
	uint8_t *plain;	       /* GW_READ_CHUNK of decrypted TLS bytes */
	struct gw_conn *conns; /* by id */
	struct gw_send *sends; /* by id */
	uint64_t next_send_id;
	int stopping;
	uv_sem_t started;
	enum ferry_err start_rc;
};

struct gw_presence {
	int64_t device_id;
	unsigned worker;
	uint64_t conn_id;
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

struct gw_seen {
	int64_t device_id;
	UT_hash_handle hh;
};

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
	SSL_CTX *tls;
	unsigned nworkers;
	struct gw_worker *workers;
	uint16_t ports[2];
	atomic_int ready;
	atomic_uint connections;
	atomic_uint_fast64_t next_conn_id;
	atomic_uint_fast64_t next_server_id;

	pthread_mutex_t presence_lock;
	struct gw_presence *presence;
	struct gw_seen *seen; /* devices to flush to last_seen; same lock */

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
uint64_t gw_now_ms(void);

/* ---- conn.c ---- */

void gw_conn_accept(struct gw_worker *w, uv_stream_t *listener, int tls);
struct gw_conn *gw_conn_find(struct gw_worker *w, uint64_t id);
/* Queue bytes for the peer; @env (may be NULL) is referenced while they are
 * in flight instead of copying them. Closes the connection (overloaded) when
 * the output cap would be passed. */
void gw_conn_write(struct gw_conn *c, const void *p, size_t len, struct gw_env *env);
void gw_conn_send_frame(struct gw_conn *c, const struct proto_frame *f);
void gw_conn_send_error(struct gw_conn *c, unsigned code, const char *text);
/* Send ERROR @code (0: none) and close. Safe to call more than once. */
void gw_conn_close(struct gw_conn *c, unsigned code, const char *text);
void gw_conn_ref(struct gw_conn *c);
void gw_conn_unref(struct gw_conn *c);
void gw_conn_arm_ack_timer(struct gw_conn *c);
/* Stop and restart reading from the device (back-pressure). */
void gw_conn_pause(struct gw_conn *c);
void gw_conn_resume(struct gw_conn *c);

/* ---- route.c ---- */

void gw_route_send(struct gw_conn *c, const struct proto_send *s);
void gw_route_deliver(struct gw_worker *w, struct gw_msg *m);
void gw_route_result(struct gw_worker *w, uint64_t send_id, int ok);
void gw_route_delivered(struct gw_conn *c, const struct proto_ids *ids);
void gw_route_ack_timeout(struct gw_conn *c);
/* The connection is closing: fail what it holds, detach its sends. */
void gw_route_conn_closed(struct gw_conn *c);

/* ---- presence.c ---- */

/* Register @c as device's connection; returns the replaced one's location. */
int gw_presence_add(struct gateway *gw, int64_t device_id, unsigned worker, uint64_t conn_id,
		    unsigned *old_worker, uint64_t *old_conn);
void gw_presence_remove(struct gateway *gw, int64_t device_id, uint64_t conn_id);
int gw_presence_find(struct gateway *gw, int64_t device_id, unsigned *worker, uint64_t *conn_id);
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
void gw_dedup_acked(struct gateway *gw, int64_t device_id, uint64_t client_id);
void gw_dedup_forget(struct gateway *gw, int64_t device_id, uint64_t client_id, uint64_t conn_id);

/* ---- directory.c ---- */

/* 1 and @user's device ids in @ids/@n if the cache has a fresh entry. */
int gw_dir_get(struct gateway *gw, const char *user, int64_t *ids, size_t *n);
void gw_dir_put(struct gateway *gw, const char *user, const int64_t *ids, size_t n);
void gw_dir_forget(struct gateway *gw, const char *user);
void gw_dir_release(struct gateway *gw);

/* ---- tls.c ---- */

SSL_CTX *gw_tls_context(const char *cert_file, const char *key_file, char *err, size_t errlen);

#endif
