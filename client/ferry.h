/*
 * ferry.h - libferry, the C client library for ferry devices.
 *
 * A struct ferry_client is one device's connection to ferryd: it connects
 * (TCP, or TLS 1.2+ verifying the server's name or IP), authenticates with
 * HELLO, keeps the connection alive (PING at a third of the server's idle
 * timeout, PONG to the server's PINGs), reconnects after a lost connection
 * or a RECONNECT with exponential backoff and full jitter, and stops for good
 * only on a final ERROR (auth_failed, unsupported_version, device_deleted).
 *
 * Sending: ferry_client_send() queues a SEND, and ferry_client_read() a
 * RECEIPT (this user has read some messages), under a fresh client id from
 * one counter, in one queue, and keeps it until the server ACKs it or NACKs
 * it finally (unknown_recipient, too_large, invalid). Unacknowledged ones are
 * retransmitted, same client id, after every reconnect; retry_later and
 * queue_full NACKs are retried after a backoff. Client ids start at the
 * current time in microseconds and count up, so that they do not repeat
 * across restarts of the same device.
 *
 * Receiving: each DELIVER is handed to the deliver callback once (duplicates,
 * by sender device and client id over a bounded window, are acknowledged but
 * not shown again), each DELIVER_RECEIPT to the receipt callback (every
 * copy: applying a receipt is idempotent); the library acknowledges either
 * after the callback returns 0, batching the acknowledgements of one read
 * into one DELIVER_ACK (up to 512 ids). After WELCOME the server first sends
 * what waited in the offline store, a window of un-acknowledged envelopes
 * (receipts included) at a time, then QUEUE_EMPTY: the queue_empty callback
 * reports it once every envelope and receipt accepted before it has been
 * acknowledged, and ferry_client_caught_up() turns true.
 *
 * Threads and loop: none of its own. The application calls ferry_client_run()
 * from one thread; all callbacks run inside it. A ferry_client must not be
 * used from two threads at once; ferry_client_stop() alone may be called from
 * a signal handler. Different clients are independent (no global state).
 *
 * With TLS, OpenSSL writes to the socket with write(2): an application that
 * may see the server close first should ignore SIGPIPE.
 *
 * Errors: every function that can fail returns an enum ferry_err
 * (common/err.h); FERRY_OK is 0. A function that fails calls no callback.
 */
#ifndef FERRY_CLIENT_FERRY_H
#define FERRY_CLIENT_FERRY_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct ferry_client;

/* Defaults for the zero fields of struct ferry_config. */
#define FERRY_DEFAULT_BACKOFF_BASE_MS 500
#define FERRY_DEFAULT_BACKOFF_CAP_MS 30000
#define FERRY_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define FERRY_DEFAULT_MAX_QUEUE 1024
#define FERRY_DEFAULT_MAX_QUEUE_BYTES (16u * 1024 * 1024)
#define FERRY_DEFAULT_DEDUP_WINDOW 4096
#define FERRY_MAX_DEDUP_WINDOW (1u << 20)

/*
 * How to reach and authenticate to the server. ferry_client_new() copies
 * everything it needs: the strings and the secret may be freed afterwards.
 * A zero numeric field means its FERRY_DEFAULT_*.
 */
struct ferry_config {
	const char *host;   /* name or IP literal; required */
	const char *port;   /* port number or service name; required */
	uint64_t device_id; /* >= 1; required */
	const void *secret; /* device secret, 1-256 bytes; required */
	size_t secret_len;
	int tls;		  /* non-zero: TLS 1.2 or later */
	const char *ca_file;	  /* TLS: PEM CA bundle; NULL: the system's store */
	const char *server_name;  /* TLS: name or IP to verify (and SNI); NULL: host */
	unsigned backoff_base_ms; /* reconnect/retry delay: rand[0, min(cap, base * 2^n)] */
	unsigned backoff_cap_ms;
	unsigned connect_timeout_ms; /* from connect() to WELCOME */
	size_t max_queue;	     /* most unacknowledged SENDs and RECEIPTs held */
	size_t max_queue_bytes;	     /* most bytes of them, encoded, held */
	size_t dedup_window;	     /* (sender device, client id) pairs remembered */
	uint64_t first_client_id;    /* 0: the current time in microseconds */
};

/* What WELCOME announced. */
struct ferry_welcome {
	uint64_t server_time;  /* ms since the Unix epoch */
	uint64_t pending;      /* stored envelopes waiting (0 if the store was unreachable) */
	uint64_t max_frame;    /* largest frame the server accepts */
	uint64_t idle_timeout; /* ms; 0: none announced */
};

/* One delivered envelope; every pointer is borrowed for the callback only. */
struct ferry_envelope {
	uint64_t server_id;
	const char *sender_user; /* NUL-terminated user id */
	uint64_t sender_device;	 /* 0: originated by the server */
	uint64_t client_id;	 /* the sender's id for it */
	uint64_t timestamp;	 /* ms since the Unix epoch, when the server accepted it */
	const uint8_t *payload;
	size_t payload_len;
};

/*
 * One delivered receipt (DELIVER_RECEIPT): @peer_user has received (@kind 1)
 * or read (@kind 2) the messages that this user's device @device sent under
 * the client ids @ids. @device 0: the reader named no device; then the ids
 * are those of any of this user's devices that sent messages under them.
 * Every pointer is borrowed for the callback only.
 */
struct ferry_receipt {
	uint64_t server_id;    /* what the DELIVER_ACK names */
	unsigned kind;	       /* enum proto_receipt_kind: 1 delivered, 2 read */
	const char *peer_user; /* NUL-terminated user id: the recipient of the messages */
	uint64_t device;       /* the sending device of this user; 0: not named */
	const uint64_t *ids;   /* the senders' client ids, @n of them (1-512) */
	size_t n;
};

/*
 * One acknowledged envelope or receipt, as deliver_acked reports it. An
 * envelope has @receipt_kind 0; a DELIVER_RECEIPT has its kind (1 delivered,
 * 2 read) there, and @sender_device and @client_id 0.
 */
struct ferry_acked {
	uint64_t server_id;
	uint64_t sender_device;
	uint64_t client_id;
	unsigned receipt_kind;
};

/* One recipient device and its own payload, for ferry_client_send_each(). */
struct ferry_target {
	uint64_t device_id;
	const void *payload; /* borrowed for the call */
	size_t payload_len;
};

/*
 * The application's side. Every member may be NULL. Texts are NUL-terminated,
 * printable ASCII (other bytes replaced by '?'), borrowed for the call.
 * Callbacks may call ferry_client_send*(), _read(), _cancel(), _stop() and the
 * getters, but not ferry_client_run() or ferry_client_free().
 */
struct ferry_callbacks {
	/*
	 * A new envelope. Return 0 once the application has it safe: the library
	 * then acknowledges it and will drop later copies. Any other value
	 * leaves it unacknowledged (the server delivers it again on a later
	 * connection) and forgets it. NULL: every envelope is left so.
	 */
	int (*deliver)(void *arg, const struct ferry_envelope *env);
	/*
	 * A DELIVER_ACK carrying these envelopes was handed to the socket.
	 * Duplicates the library acknowledged on its own are included, and so
	 * are the receipts the receipt callback accepted (receipt_kind non-zero),
	 * in the order they arrived among the envelopes.
	 */
	void (*deliver_acked)(void *arg, const struct ferry_acked *acked, size_t n);
	/*
	 * The server took over the SEND or RECEIPT @client_id (it is no longer
	 * queued here). @status (enum proto_ack_status): 1 stored, some target
	 * device has it in the offline store and gets it when it connects; 2
	 * delivered, every target device acknowledged it. For a RECEIPT
	 * @server_id is 0 and the targets are the devices of its peer user.
	 */
	void (*send_acked)(void *arg, uint64_t client_id, uint64_t server_id, unsigned status);
	/*
	 * The server (or the library, for a frame over the server's limits:
	 * too_large) refused the SEND or RECEIPT @client_id. @reason is a NACK
	 * reason (gateway/proto.h, proto_nack_name()). @final (unknown_recipient,
	 * too_large, invalid, and reasons this library does not know): it is
	 * dropped. Otherwise (queue_full: a target's offline queue is full;
	 * retry_later) it stays queued and is sent again, same client id, after a
	 * backoff that grows with each such NACK, unless cancelled here.
	 */
	void (*send_nacked)(void *arg, uint64_t client_id, uint64_t reason, const char *text,
			    int final);
	/*
	 * The server sent ERROR @code (proto_error_name()). @final: the client
	 * stops for good and ferry_client_run() returns FERRY_EAUTH. Except for
	 * not_implemented, the connection is closed and (unless final) made again.
	 */
	void (*server_error)(void *arg, uint64_t code, const char *text, int final);
	/* The server sent WELCOME: the client is authenticated. */
	void (*connected)(void *arg, const struct ferry_welcome *w);
	/*
	 * A connection or an attempt ended (@why: FERRY_EIO network, timeout or
	 * closed by the server; FERRY_EPROTO the server broke the protocol;
	 * FERRY_ENOMEM); the next attempt starts in @retry_ms. Not called after
	 * a final ERROR.
	 */
	void (*disconnected)(void *arg, enum ferry_err why, const char *text, uint64_t retry_ms);
	/*
	 * A delivered receipt (struct ferry_receipt). It comes to every device
	 * of this user, also for messages another of them sent, and the same id
	 * may be reported again (the server coalesces and retransmits receipts;
	 * the library does not deduplicate them): applying one must be
	 * idempotent. Return 0 once the application has applied it: the library
	 * then acknowledges it, in the same DELIVER_ACKs as envelopes. Any other
	 * value leaves it unacknowledged (the server sends it again on a later
	 * connection). NULL: every receipt is left so (a device that sends
	 * messages but has no use for receipts should still take them).
	 */
	int (*receipt)(void *arg, const struct ferry_receipt *r);
	/*
	 * The server sent QUEUE_EMPTY: every envelope stored for this device has
	 * been sent, and what follows is live. @drained is the server's count of
	 * stored envelopes sent since WELCOME or the previous QUEUE_EMPTY
	 * (duplicates the library dropped included). Called only once
	 * deliver_acked has reported every envelope and receipt the application
	 * accepted before it, so an application that stops here has
	 * acknowledged all it was given. Each connection starts with one
	 * (@drained 0 when nothing waited); a connection may go back to catching
	 * up (a DELIVER not acknowledged in time was stored) and ends that with
	 * another.
	 */
	void (*queue_empty)(void *arg, uint64_t drained);
};

/*
 * Create a client; it connects on the first ferry_client_run(). Copies @cfg
 * and *@cb; @arg is passed to every callback (borrowed). On success *@out
 * owns the new client (ferry_client_free() it).
 *   FERRY_EINVAL  a required field is missing or out of range
 *   FERRY_ECONFIG the TLS set-up failed (CA file unreadable, ...)
 *   FERRY_ENOMEM
 * On failure @err (if not NULL) gets a one-line reason, never the secret.
 */
enum ferry_err ferry_client_new(const struct ferry_config *cfg, const struct ferry_callbacks *cb,
				void *arg, struct ferry_client **out, char *err,
				size_t errlen) FERRY_WUR;

/*
 * Close the connection and free @c with every queued SEND and RECEIPT
 * (unacknowledged ones are lost to this process: the server never took
 * them). The secret is wiped. NULL is a no-op. Not from a callback.
 */
void ferry_client_free(struct ferry_client *c);

/*
 * Do I/O and timers for up to @timeout_ms (-1: no limit, 0: only what is
 * ready now), calling the callbacks. Returns early after ferry_client_stop().
 *   FERRY_OK      the time passed, or stop was asked
 *   FERRY_EAUTH   a final ERROR ended the client (now or before); it will not
 *                 connect again
 *   FERRY_EINVAL  called from a callback
 *   FERRY_EIO     poll(2) failed
 *   FERRY_ENOMEM
 * Connection failures are not errors here: they are reported through
 * disconnected() and retried.
 */
enum ferry_err ferry_client_run(struct ferry_client *c, int timeout_ms) FERRY_WUR;

/*
 * Make the current ferry_client_run() return soon (or the next one at once);
 * no further envelope is handed out after it. Async-signal-safe: it only sets
 * a flag (a signal interrupting poll(2) makes run notice at once).
 */
void ferry_client_stop(struct ferry_client *c);

/*
 * Queue a SEND of one payload to every device of @to_user but this one. It
 * goes out when the client is (or next is) authenticated. *@client_id (if
 * not NULL) gets the id the ACK or NACK will carry. @payload is copied.
 *   FERRY_EINVAL  @to_user is not a valid user id
 *   FERRY_ETOOBIG the payload can never fit a frame
 *   FERRY_ELIMIT  max_queue or max_queue_bytes reached: retry after ACKs
 *   FERRY_EAUTH   the client has stopped for good
 *   FERRY_ENOMEM
 */
enum ferry_err ferry_client_send(struct ferry_client *c, const char *to_user, uint32_t ttl,
				 const void *payload, size_t len, uint64_t *client_id) FERRY_WUR;

/*
 * Like ferry_client_send() with one payload per device: @n (1-32) targets
 * with distinct device ids (>= 1), each a device of @to_user. FERRY_EINVAL
 * for a bad count, device id or user id.
 */
enum ferry_err ferry_client_send_each(struct ferry_client *c, const char *to_user, uint32_t ttl,
				      const struct ferry_target *targets, size_t n,
				      uint64_t *client_id) FERRY_WUR;

/*
 * Queue a read receipt (RECEIPT, kind read): this user has read the messages
 * that @peer_user's device @peer_device sent under the client ids @ids (@n of
 * them, 1-512; copied), i.e. the sender_user, sender_device and client_id of
 * envelopes deliver handed over. @peer_device 0 names no device: each device
 * of @peer_user applies it to its own messages with those client ids. It is
 * queued like a SEND, under a client id from the same counter (*@client_id,
 * if not NULL): written when authenticated, retransmitted with that id after
 * every reconnect until the server answers, retried after retry_later and
 * queue_full, reported by send_acked (server_id 0) or send_nacked, and
 * ferry_client_cancel() forgets it. One bigger than the server's max_frame
 * (hundreds of large ids and a max_frame near its minimum) gets a final
 * too_large NACK from the library. A receipt that reaches the server twice
 * is harmless.
 *   FERRY_EINVAL  @peer_user is not a valid user id, @ids is NULL or @n is
 *                 not 1-512
 *   FERRY_ELIMIT  max_queue or max_queue_bytes reached: retry after ACKs
 *   FERRY_EAUTH   the client has stopped for good
 *   FERRY_ENOMEM
 */
enum ferry_err ferry_client_read(struct ferry_client *c, const char *peer_user,
				 uint64_t peer_device, const uint64_t *ids, size_t n,
				 uint64_t *client_id) FERRY_WUR;

/*
 * Forget the queued SEND or RECEIPT @client_id: it is not retransmitted and
 * no callback reports it. One already written may still reach the server and
 * be delivered. FERRY_ENOTFOUND if it is not queued (answered or unknown).
 */
enum ferry_err ferry_client_cancel(struct ferry_client *c, uint64_t client_id);

/* SENDs and RECEIPTs queued and not yet answered finally. */
size_t ferry_client_queued(const struct ferry_client *c);

/* Non-zero while authenticated (between WELCOME and the connection's end). */
int ferry_client_ready(const struct ferry_client *c);

/*
 * Non-zero once this connection's catch-up has finished: authenticated, and
 * QUEUE_EMPTY arrived (and was reported) since WELCOME. Zero again when the
 * connection ends. The server does not announce a return to catching up, so
 * it stays non-zero then until the connection ends; the next queue_empty
 * reports the end of that catch-up.
 */
int ferry_client_caught_up(const struct ferry_client *c);

/* The reason the last connection or attempt ended ("" if none); borrowed. */
const char *ferry_client_last_error(const struct ferry_client *c);

#endif
