/*
 * h2srv.h - the small HTTP/2-over-TLS server core shared by the mock push
 * providers (mock_apns, mock_fcm).
 *
 * One thread, one poll() loop, non-blocking sockets, OpenSSL for TLS (ALPN
 * "h2" only: a client that does not offer it fails the handshake, as with
 * APNs) and libnghttp2 for the framing. A request is handed to the handler
 * once it is complete (END_STREAM), with its headers and body; the handler
 * answers it at once with h2srv_respond(). The loop runs until SIGTERM or
 * SIGINT, then frees everything and returns.
 *
 * Outages: SIGUSR1 begins one, SIGUSR2 ends it, so that a test can take a
 * provider away for as long as it likes. What an outage does is chosen at
 * start (struct h2srv_opts outage). Once the loop has applied the change it
 * prints "down N" or "up N" on stdout (N counts outages from 1) and
 * flushes, so the test knows the outage is in force before it goes on.
 *
 * RST_STREAM frames from clients are never counted as abuse: libcurl 7.88.1
 * sends one after every finished request, so the nghttp2 reset rate limit is
 * lifted.
 *
 * Ownership: a request and everything it points to belong to the server and
 * live until its stream closes; handlers borrow them and must not keep them.
 */
#ifndef FERRY_TESTS_MOCK_H2SRV_H
#define FERRY_TESTS_MOCK_H2SRV_H

#include <stddef.h>
#include <stdint.h>

/* The largest request body kept; longer bodies are counted, not stored. */
#define H2SRV_MAX_BODY (64 * 1024)
/* The most header fields kept per request; more fail the stream. */
#define H2SRV_MAX_HEADERS 64

struct h2srv;
struct h2srv_conn;

struct h2srv_hdr {
	const char *name; /* lowercase */
	const char *value;
};

struct h2srv_req {
	struct h2srv_conn *conn;
	uint64_t conn_id; /* 1 for the first connection the server accepted */
	int32_t stream_id;
	uint32_t seq;	    /* 1 for the first request completed on this connection */
	const char *method; /* "" if absent */
	const char *path;   /* "" if absent */
	struct h2srv_hdr hdrs[H2SRV_MAX_HEADERS]; /* regular fields, no pseudo-headers */
	size_t nhdrs;
	const uint8_t *body; /* NUL-terminated for convenience; body_len bytes kept */
	size_t body_len;
	size_t body_total; /* bytes received, body_len + what went over H2SRV_MAX_BODY */
};

/* What an outage does (SIGUSR1 to SIGUSR2). */
enum h2srv_outage {
	H2SRV_OUTAGE_REFUSE = 0, /* the listening socket closes (connections are refused)
				    and open connections are reset; at the end the same
				    port is listened on again */
	H2SRV_OUTAGE_RESET,	 /* open connections are reset; new ones are accepted
				    and reset at once, before TLS */
	H2SRV_OUTAGE_ANSWER,	 /* connections stay; the handler answers as the provider
				    does when it is overloaded (see h2srv_down()) */
};

/* Called once per complete request; must answer with h2srv_respond(). */
typedef void (*h2srv_handler)(struct h2srv_req *req, void *ud);

struct h2srv_opts {
	int port; /* 0: pick a free one */
	const char *cert_path;
	const char *key_path;
	const char *client_ca_path; /* require a client certificate it signed; NULL: none */
	uint32_t max_streams;	    /* initial SETTINGS_MAX_CONCURRENT_STREAMS; 0: 100 */
	enum h2srv_outage outage;   /* what SIGUSR1 does */
	h2srv_handler handler;
	void *ud;
};

/*
 * Listen on 127.0.0.1 with the certificate and key of @o. Returns NULL and
 * writes a message to @err on failure.
 */
struct h2srv *h2srv_new(const struct h2srv_opts *o, char *err, size_t errlen);

/* The port listened on. */
int h2srv_port(const struct h2srv *s);

/* Serve until SIGTERM or SIGINT (the handlers are installed here, with those
 * of SIGUSR1 and SIGUSR2). Returns 0, or -1 if poll() failed or the port
 * could not be listened on again after an outage. */
int h2srv_run(struct h2srv *s);

/* Close every connection and free @s; NULL is a no-op. */
void h2srv_free(struct h2srv *s);

/* The first value of header @name (lowercase), or NULL. */
const char *h2srv_req_header(const struct h2srv_req *r, const char *name);

/* 1 while an outage is in force: an H2SRV_OUTAGE_ANSWER handler then answers
 * as its provider does when it is unavailable. */
int h2srv_down(const struct h2srv_req *r);

/* How many fields named @name the request carries. */
size_t h2srv_req_header_count(const struct h2srv_req *r, const char *name);

/*
 * Answer @req with @status, @n extra header fields (copied) and @body (@len
 * bytes, copied; NULL for none). Returns 0, or -1 if nghttp2 refused.
 */
int h2srv_respond(struct h2srv_req *req, int status, const struct h2srv_hdr *hdrs, size_t n,
		  const void *body, size_t len);

/* Send a SETTINGS frame with a new MAX_CONCURRENT_STREAMS for @c (once a
 * value is in force, sending it again does nothing). */
void h2srv_conn_set_max_streams(struct h2srv_conn *c, uint32_t n);

/*
 * Send GOAWAY (NO_ERROR, last stream id = the last one begun, @debug as its
 * opaque data) and close the connection once every stream up to it has been
 * answered and written; streams the client opens afterwards are ignored,
 * never handled.
 */
void h2srv_conn_goaway(struct h2srv_conn *c, const char *debug);

#endif
