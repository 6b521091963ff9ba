/*
 * client_int.h - libferry's insides, shared by the files of client/ and the unit tests.
 *
 * Files, by concern:
 *   client.c  the public API: lifecycle, the poll(2) loop, send, read and cancel;
 *   conn.c    one connection: resolve, connect, TLS handshake, HELLO, the
 *             read and write buffers, loss and the reconnect schedule;
 *   handle.c  frames from the server, acknowledgement batching, the end of
 *             a catch-up (QUEUE_EMPTY), the pump that moves queued SENDs and
 *             RECEIPTs into the write buffer;
 *   sendq.c   the queue of unacknowledged SENDs and RECEIPTs (pure, no I/O);
 *   dedup.c   the window of (sender device, client id) pairs seen (pure);
 *   net.c     sockets: resolve, non-blocking connect, read and write;
 *   tls.c     OpenSSL: context, verification, handshake, read and write;
 *   util.c    clocks, the per-client random generator, backoff, texts.
 *
 * Not to be included outside client/ (but by tests/unit/client/).
 */
#ifndef FERRY_CLIENT_CLIENT_INT_H
#define FERRY_CLIENT_CLIENT_INT_H

#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "client/ferry.h"
#include "common/buf.h"
#include "gateway/proto.h"

/* Bytes read at once beyond the largest frame, so small frames batch up. */
#define FC_RBUF_HEADROOM (16 * 1024)
/* Write-buffer room kept for control frames: a full DELIVER_ACK, PONG, PING. */
#define FC_WBUF_CONTROL (8 * 1024)
/* Hard ceiling of the write buffer: two largest frames plus the control room. */
#define FC_WBUF_MAX (2 * (PROTO_MAX_MAX_FRAME + PROTO_MAX_LENGTH_PREFIX) + FC_WBUF_CONTROL)
/* Plaintext bytes per SSL_write(), so that a retry repeats a known length. */
#define FC_TLS_WRITE_CHUNK (16 * 1024)
/* Reads per wake-up before timers get a turn. */
#define FC_READS_PER_WAKE 16
/* Ping interval and dead-connection limit when WELCOME announces no idle timeout. */
#define FC_DEFAULT_PING_MS 30000
#define FC_MIN_PING_MS 100
/* Error and NACK texts: PROTO_MAX_TEXT bytes plus the NUL. */
#define FC_TEXT_MAX (PROTO_MAX_TEXT + 1)
#define FC_ERR_MAX 256
/* Why the last connection ended: room for a component's error and some context. */
#define FC_LAST_ERROR_MAX 512

/* ---- util.c ---- */

/* @a + @b, saturating: deadlines far away stay far away. */
static inline uint64_t fc_add_ms(uint64_t a, uint64_t b)
{
	return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

uint64_t fc_now_ms(void);	/* monotonic */
uint64_t fc_wallclock_us(void); /* since the Unix epoch */
uint64_t fc_rng_seed(void);
uint64_t fc_rng_next(uint64_t *state); /* splitmix64 */

/*
 * Full-jitter backoff: @rnd mapped into [0, min(@cap_ms, @base_ms * 2^@attempt)].
 * Never overflows, whatever @attempt.
 */
uint64_t fc_backoff_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t rnd);

/* Copy @len bytes of @p to @dst (@cap >= 1) as printable ASCII, NUL-terminated. */
void fc_text_copy(char *dst, size_t cap, const uint8_t *p, size_t len);

/* ERROR codes that end a client for good; NACK reasons never worth a retry. */
int fc_error_is_final(uint64_t code);
int fc_nack_is_final(uint64_t reason);

/* ---- dedup.c: a bounded set of (sender device, client id), oldest evicted ---- */

struct fc_dedup_ent {
	uint64_t device;
	uint64_t client_id;
	uint32_t next; /* next index in the same bucket, FC_DEDUP_NIL at the end */
};

#define FC_DEDUP_NIL UINT32_MAX

struct fc_dedup {
	struct fc_dedup_ent *ent; /* ring of cap entries, in insertion order */
	uint32_t *head;		  /* nbuckets bucket heads */
	size_t cap, n, pos;	  /* capacity, entries used, next ring slot */
	size_t mask;		  /* nbuckets - 1 (a power of two) */
};

/* Allocate a window of @cap (1..FERRY_MAX_DEDUP_WINDOW) pairs. */
enum ferry_err fc_dedup_init(struct fc_dedup *d, size_t cap) FERRY_WUR;
void fc_dedup_release(struct fc_dedup *d);
int fc_dedup_seen(const struct fc_dedup *d, uint64_t device, uint64_t client_id);
/* Remember a pair not seen yet, forgetting the oldest when full. */
void fc_dedup_add(struct fc_dedup *d, uint64_t device, uint64_t client_id);

/*
 * ---- sendq.c: unacknowledged SENDs and RECEIPTs (both answered by ACK/NACK
 * with their client id), in the order they were queued ----
 */

enum fc_send_state {
	FC_SEND_QUEUED,	  /* to be written on the current or next connection */
	FC_SEND_INFLIGHT, /* written on this connection, waiting for ACK/NACK */
	FC_SEND_WAITING,  /* NACKed retry_later/queue_full, due at retry_at */
};

struct fc_send {
	struct fc_send *prev, *next;
	uint64_t client_id;
	enum fc_send_state state;
	unsigned attempts;  /* retryable NACKs so far */
	uint64_t retry_at;  /* WAITING: monotonic ms */
	size_t body_len;    /* the frame's length field: type + body */
	size_t max_payload; /* its largest payload */
	size_t len;	    /* bytes in frame */
	uint8_t frame[];    /* the encoded SEND or RECEIPT, length prefix included */
};

struct fc_sendq {
	struct fc_send *head, *tail;
	size_t count, bytes;
	size_t max_count, max_bytes;
};

void fc_sendq_init(struct fc_sendq *q, size_t max_count, size_t max_bytes);
/* Free every entry. */
void fc_sendq_release(struct fc_sendq *q);
/*
 * Append a copy of @frame (@len bytes) as QUEUED. FERRY_ELIMIT over a cap,
 * FERRY_EEXIST if @client_id is queued already, FERRY_ENOMEM.
 */
enum ferry_err fc_sendq_add(struct fc_sendq *q, uint64_t client_id, const uint8_t *frame,
			    size_t len, size_t body_len, size_t max_payload) FERRY_WUR;
struct fc_send *fc_sendq_find(const struct fc_sendq *q, uint64_t client_id);
/* Take @s out of the queue; the caller owns it then (free()). */
void fc_sendq_unlink(struct fc_sendq *q, struct fc_send *s);
/* The first entry from @from (NULL: the head) that may be written at @now. */
struct fc_send *fc_sendq_ready(const struct fc_sendq *q, struct fc_send *from, uint64_t now);
/* A connection ended: what was in flight is queued again. */
void fc_sendq_requeue(struct fc_sendq *q);
/* Park @s until @now + @delay_ms. */
void fc_sendq_wait(struct fc_send *s, uint64_t now, uint64_t delay_ms);
/* The earliest retry_at of a WAITING entry, UINT64_MAX if none. */
uint64_t fc_sendq_next_retry(const struct fc_sendq *q);

/* ---- net.c and tls.c: non-blocking transport ---- */

enum fc_io {
	FC_IO_DONE,	  /* *n bytes moved (> 0), or the step finished */
	FC_IO_WANT_READ,  /* wait for POLLIN */
	FC_IO_WANT_WRITE, /* wait for POLLOUT */
	FC_IO_EOF,	  /* the peer closed */
	FC_IO_ERROR,	  /* failed; the text is in err */
};

/* getaddrinfo() for a stream socket; *@out to freeaddrinfo(). */
enum ferry_err fc_net_resolve(const char *host, const char *port, struct addrinfo **out, char *err,
			      size_t errlen) FERRY_WUR;
/* Open a non-blocking socket to @ai and start connecting: FC_IO_DONE (connected),
 * FC_IO_WANT_WRITE (in progress) or FC_IO_ERROR; *@fd is -1 after an error. */
enum fc_io fc_net_connect(const struct addrinfo *ai, int *fd, char *err, size_t errlen);
/* Result of a connect() that was in progress. */
enum fc_io fc_net_connect_result(int fd, char *err, size_t errlen);
void fc_net_addr_text(const struct addrinfo *ai, char *out, size_t cap);
enum fc_io fc_net_read(int fd, void *p, size_t n, size_t *got, char *err, size_t errlen);
enum fc_io fc_net_write(int fd, const void *p, size_t n, size_t *put, char *err, size_t errlen);

/* A client context: TLS 1.2+, peer verification against @ca_file or the system store. */
SSL_CTX *fc_tls_context(const char *ca_file, char *err, size_t errlen);
/* A connection on @fd verifying @name (a DNS name or an IP literal). */
SSL *fc_tls_new(SSL_CTX *ctx, int fd, const char *name, char *err, size_t errlen);
enum fc_io fc_tls_handshake(SSL *ssl, const char *name, char *err, size_t errlen);
enum fc_io fc_tls_read(SSL *ssl, void *p, size_t n, size_t *got, char *err, size_t errlen);
enum fc_io fc_tls_write(SSL *ssl, const void *p, size_t n, size_t *put, char *err, size_t errlen);
/* Send close_notify if it can go at once, then free @ssl. NULL is a no-op. */
void fc_tls_close(SSL *ssl);

/* ---- the client ---- */

enum fc_state {
	FC_IDLE,       /* no connection; the next attempt at reconnect_at */
	FC_CONNECTING, /* TCP connect() in progress */
	FC_TLS,	       /* TLS handshake */
	FC_HELLO,      /* HELLO written, waiting for WELCOME */
	FC_READY,      /* authenticated */
	FC_FINAL,      /* a final ERROR: never again */
};

struct ferry_client {
	/* configuration, owned copies */
	char *host, *port, *server_name;
	uint64_t device_id;
	uint8_t secret[PROTO_MAX_SECRET];
	size_t secret_len;
	SSL_CTX *tls; /* NULL: plain TCP */
	uint64_t backoff_base, backoff_cap, connect_timeout;
	struct ferry_callbacks cb;
	void *arg;

	/* the connection */
	enum fc_state state;
	int fd;
	SSL *ssl;
	struct addrinfo *ai, *ai_next;	       /* addresses of this attempt, the one being tried */
	uint64_t deadline;		       /* connect to WELCOME, monotonic ms */
	uint64_t reconnect_at;		       /* FC_IDLE */
	unsigned attempt;		       /* failed attempts since the last WELCOME */
	short hs_want;			       /* TLS handshake: POLLIN or POLLOUT */
	short rd_want, wr_want;		       /* what the last read/write waits for */
	size_t tls_retry;		       /* length an SSL_write must be retried with */
	char attempt_error[FC_LAST_ERROR_MAX]; /* the latest failure within this attempt */
	char last_error[FC_LAST_ERROR_MAX];    /* why the last connection or attempt ended */

	/* the session, from WELCOME */
	size_t max_frame;
	uint64_t ping_ms, dead_ms, next_ping, last_rx, ping_nonce;
	int caught_up; /* QUEUE_EMPTY reported since WELCOME */

	/* buffers: rbuf holds at most one partial frame after processing */
	uint8_t *rbuf;
	size_t rlen, rcap;
	struct buf wbuf; /* capped at FC_WBUF_MAX; wlimit is this connection's cap */
	size_t woff, wlimit;
	uint64_t wq_total, wr_total; /* bytes queued into and written from wbuf */
	int rx_blocked;		     /* processing waits for write room or, at QUEUE_EMPTY, acks */
	int rx_more;		     /* reading stopped with data likely left */

	/* acknowledgements: pending collects, inflight is encoded and being written */
	struct ferry_acked ack_pending[PROTO_MAX_IDS];
	struct ferry_acked ack_inflight[PROTO_MAX_IDS];
	size_t n_pending, n_inflight;
	uint64_t inflight_end; /* wq_total at the end of the inflight DELIVER_ACK */

	struct fc_sendq sendq;
	struct fc_dedup dedup;
	uint64_t next_client_id;
	uint64_t rng;

	volatile sig_atomic_t stop;
	int in_run;
};

/* conn.c */
void fc_conn_start(struct ferry_client *c);
void fc_conn_on_connect(struct ferry_client *c); /* connect() finished or failed */
void fc_conn_tls_step(struct ferry_client *c);
/* Close the connection, if any, and drop per-connection state. */
void fc_conn_close(struct ferry_client *c);
/* The connection or attempt ended: close, schedule the next one (@extra_ms later). */
void fc_conn_lost(struct ferry_client *c, enum ferry_err why, uint64_t extra_ms, const char *fmt,
		  ...) FERRY_PRINTF(4, 5);
/* A final ERROR: close, never again. */
void fc_conn_final(struct ferry_client *c);
/* A frame the server broke: tell it (ERROR @code, best effort) and drop the connection. */
void fc_conn_violation(struct ferry_client *c, uint64_t code, const char *fmt, ...)
	FERRY_PRINTF(3, 4);
/* Write what wbuf holds until the socket would block. */
void fc_conn_write(struct ferry_client *c);
/* Read and process until the socket would block (or a bound). */
void fc_conn_read(struct ferry_client *c);
/* Room in wbuf (within wlimit) for @n more bytes. */
int fc_conn_room(const struct ferry_client *c, size_t n);
/* Encode @f into wbuf. FERRY_ELIMIT without room, FERRY_EINVAL if @f is invalid. */
enum ferry_err fc_conn_queue(struct ferry_client *c, const struct proto_frame *f) FERRY_WUR;
/* Append @len raw bytes (an encoded frame) to wbuf; the caller checked the room. */
enum ferry_err fc_conn_queue_raw(struct ferry_client *c, const uint8_t *p, size_t len) FERRY_WUR;
int fc_conn_open(const struct ferry_client *c); /* HELLO or READY */

/* handle.c */
/* Decode and handle the frames in rbuf until it holds no whole frame or must wait. */
void fc_handle_frames(struct ferry_client *c);
/* Encode pending acks when no DELIVER_ACK is being written; report written ones. */
void fc_acks_flush(struct ferry_client *c);
/* Report the DELIVER_ACK being written if it has gone to the socket whole. */
void fc_acks_report(struct ferry_client *c);
/* Move the SENDs and RECEIPTs that may go into wbuf while there is room. */
void fc_sends_pump(struct ferry_client *c, uint64_t now);
/* Periodic work: ping, dead connection, handshake deadline, reconnect. */
void fc_timers(struct ferry_client *c, uint64_t now);
/* When fc_timers() next has something to do, UINT64_MAX if never. */
uint64_t fc_next_timer(const struct ferry_client *c);

#endif
