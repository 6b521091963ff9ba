/*
 * bench_gen_int.h - ferry-bench's traffic generator (tools/bench_gen.c):
 * many device connections driven by one thread through one epoll loop and
 * the protocol codec (gateway/proto.h), without libferry and without a
 * thread per device, so that the generator is not what limits a benchmark.
 *
 * A struct gen is one loop; its connections (struct gen_conn) live in the
 * caller's memory and are handed to it with gen_conn_init(). The generator
 * does the protocol's chores itself: HELLO after connecting, PONG for every
 * PING, and a DELIVER_ACK for every DELIVER and DELIVER_RECEIPT, one frame
 * per read of a socket ("ack after delivery": the envelope has been read
 * and counted before it is acknowledged). Everything else goes to the
 * caller's callbacks. Writes are queued per connection and written once per
 * loop turn (gen_run()), one write() per connection.
 *
 * Source addresses: every connection binds 127.0.0.(1 + index mod sources)
 * before connecting (with IP_BIND_ADDRESS_NO_PORT, so that the port is
 * chosen at connect time for the whole 4-tuple): a process may hold some
 * 20,000 sockets here, and spreading them over source addresses keeps the
 * ephemeral ports from running out when several processes together hold
 * many more.
 *
 * Threads: a gen and its connections belong to the thread that calls
 * gen_run(); several gens may run in several threads. Callbacks run inside
 * gen_run() and may send on any connection of the same gen, but must not
 * connect or close one: a closed connection's events may still be pending
 * in the same turn. Reconnect from the caller's loop instead.
 */
#ifndef FERRY_TOOLS_BENCH_GEN_INT_H
#define FERRY_TOOLS_BENCH_GEN_INT_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/proto.h"
#include "tools/bench_int.h"

#define GEN_MAX_OUT (8u << 20)	 /* queued bytes per connection at most */
#define GEN_CONNECT_INFLIGHT 512 /* handshakes at once, by default */

/* The scenarios' payload header: magic, sender index (u32), then a u64 (the
 * SEND's CLOCK_MONOTONIC ns, or a sequence number). */
#define GEN_MAGIC 0x53424546u /* "FEBS" */
#define GEN_HDR 16

enum gen_state {
	GEN_DOWN,	/* not connected */
	GEN_CONNECTING, /* connect() in progress */
	GEN_HELLO,	/* HELLO sent, waiting for WELCOME */
	GEN_READY,	/* authenticated */
};

struct gen;

struct gen_conn {
	struct gen *g;
	const struct fb_cred *cred; /* borrowed */
	void *arg;		    /* the caller's */
	int fd;
	uint8_t state; /* enum gen_state */
	uint8_t dirty; /* on the gen's list of connections to write */
	uint8_t want_out;
	uint32_t index;
	uint64_t next_id;  /* the next client id of a SEND */
	uint64_t welcomes; /* WELCOMEs received over the connection's life */
	uint64_t down_at;  /* fb_now_ns() when it was last closed */
	unsigned tries;	   /* connects started (the caller may reset it) */
	uint8_t *in;	   /* a partial frame kept between reads */
	size_t in_len, in_cap;
	uint8_t *out; /* frames not yet written */
	size_t out_len, out_off, out_cap;
};

struct gen_ops {
	/* WELCOME: the connection is authenticated. */
	void (*ready)(struct gen_conn *c, const struct proto_welcome *w);
	/* Any other frame but PING (answered) and WELCOME; @now: fb_now_ns()
	 * of the read that brought it. DELIVERs and DELIVER_RECEIPTs are
	 * acknowledged after this returns. */
	void (*frame)(struct gen_conn *c, const struct proto_frame *f, uint64_t now);
	/* The connection is closed: @err an errno (0: closed by the server),
	 * @code the ERROR frame's code if one came first (else 0). */
	void (*closed)(struct gen_conn *c, int err, uint64_t code);
};

struct gen {
	int ep;
	struct sockaddr_in server;
	unsigned sources;
	const struct gen_ops *ops;
	void *arg; /* the caller's */
	struct gen_conn **dirty;
	size_t ndirty, dirty_cap;
	uint8_t *rbuf;
	struct proto_frame frame; /* the decoded frame (large: not on the stack) */
	uint64_t ackids[PROTO_MAX_IDS];
	size_t nack;
	uint64_t last_error; /* the last ERROR frame's code, per connection while it reads */
	/* Counters, for reports. */
	uint64_t connects, connect_failures, welcomes, closes, frames_in, frames_out;
};

/*
 * Set up @g to connect to @host:@port (an IPv4 address or "localhost")
 * from @sources source addresses (1 to 254). 0, or -1 with a message on
 * stderr. @ops and @arg are borrowed.
 */
int gen_init(struct gen *g, const char *host, const char *port, unsigned sources,
	     const struct gen_ops *ops, void *arg);

/* Free what @g holds; the caller closes its connections (gen_conn_close)
 * first. */
void gen_release(struct gen *g);

/* Make @c a connection of @g for device @cred (borrowed), down. */
void gen_conn_init(struct gen *g, struct gen_conn *c, const struct fb_cred *cred, uint32_t index,
		   void *arg);

/* Start connecting @c (down). 0, or -1 with errno set (nothing started). */
int gen_conn_connect(struct gen_conn *c);

/* Close @c's socket at once and free its buffers; no callback. */
void gen_conn_close(struct gen_conn *c);

/* Queue @f on @c (not down). 0, or -1 when it does not encode or the
 * connection's queue is over GEN_MAX_OUT. */
int gen_conn_send(struct gen_conn *c, const struct proto_frame *f);

/*
 * Queue a SEND of @payload (@len bytes) to every device of @to_user on @c,
 * with the connection's next client id (returned in *@id). 0 or -1 as
 * gen_conn_send().
 */
int gen_conn_send_to(struct gen_conn *c, const char *to_user, const uint8_t *payload, size_t len,
		     uint64_t *id);

/* One turn: wait up to @timeout_ms for events, handle them, write what was
 * queued. The number of events handled, or -1 on an epoll error. */
int gen_run(struct gen *g, int timeout_ms);

/*
 * Connect the @n connections at @c (down) of @g, at most @inflight
 * handshakes at once, each tried up to 5 times (100 ms after it failed).
 * The number authenticated once all are, or after two minutes.
 */
size_t gen_connect_all(struct gen *g, struct gen_conn *c, size_t n, size_t inflight);

/* Write what is queued now (gen_run() does it at the end of each turn). */
void gen_flush(struct gen *g);

#endif
