/*
 * http.h - the HTTP/2 client of the push senders (APNs, FCM).
 *
 * One struct push_http drives libcurl's multi interface from a libuv loop
 * that belongs to the caller (the push thread's): curl's sockets are watched
 * with uv_poll_t handles and its timeouts with one uv_timer_t. Requests are
 * HTTP/2 over TLS, multiplexed: a request waits for a stream on an existing
 * connection to its origin rather than opening a new one, and at most
 * max_host_connections connections per origin are ever open. Connections
 * stay open between requests (TCP keepalive on), so a sender that keeps
 * submitting keeps using the same one or few connections.
 *
 * Threading: nothing here is thread-safe. Every function, and every done()
 * callback, runs on the thread that runs the loop given to push_http_new().
 * Work from other threads reaches that thread through a mailbox first.
 *
 * Ownership: the caller owns struct push_http_req and everything it points
 * to (url, method, headers, body). They are borrowed from a successful
 * push_http_submit() until done() runs, and must stay valid and unchanged
 * until then. done() runs exactly once per accepted request, never inside
 * push_http_submit() itself. Before done(), the client fills the result
 * fields; resp_body is then the caller's (free it, or push_http_req_release).
 *
 * done() may submit new requests (a retry may resubmit the same one after
 * push_http_req_release), release or free its request, and call
 * push_http_cancel_all(); it must not call push_http_free().
 *
 * Results: rc FERRY_OK means an HTTP answer came, whatever its status: the
 * caller interprets status and body. Anything else is a transport failure
 * and the server's answer is unknown (the connection failed, closed or timed
 * out before the whole response arrived, or the request was cancelled):
 *   FERRY_EUNAVAIL  the origin could not be reached (resolve, connect,
 *                   timeout), or the request was cancelled or the client is
 *                   being freed;
 *   FERRY_EIO       the connection or the stream failed midway (reset,
 *                   closed, GOAWAY that curl could not retry, TLS error);
 *   FERRY_ENOMEM    out of memory.
 * errbuf then says why, and curl_code holds libcurl's CURLcode. A request
 * that a GOAWAY refused (its stream above the last-stream-id) is retried by
 * libcurl on a new connection and so never shows up as a failure.
 */
#ifndef FERRY_PUSH_HTTP_H
#define FERRY_PUSH_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <uv.h>

#include "common/err.h"

/* Defaults for the zero fields of struct push_http_opts. */
#define PUSH_HTTP_HOST_CONNECTIONS 1
#define PUSH_HTTP_MAX_STREAMS 1000
#define PUSH_HTTP_TIMEOUT_MS 30000
#define PUSH_HTTP_CONNECT_TIMEOUT_MS 10000
/* Response bytes kept per request; the rest is read and dropped. */
#define PUSH_HTTP_MAX_RESP_BODY (64u * 1024)
/* Keepalive probes on idle connections: first after, then every. */
#define PUSH_HTTP_KEEPIDLE_S 60
#define PUSH_HTTP_KEEPINTVL_S 30

struct push_http;

struct push_http_opts {
	const char *ca_file;	       /* PEM CA bundle to trust; NULL: the system's */
	unsigned max_host_connections; /* per origin; 0: PUSH_HTTP_HOST_CONNECTIONS */
	unsigned max_streams;	       /* per connection, our side; the server's SETTINGS
					  may lower it; 0: PUSH_HTTP_MAX_STREAMS */
	unsigned timeout_ms;	       /* whole request, connect included; 0: default */
	unsigned connect_timeout_ms;   /* 0: PUSH_HTTP_CONNECT_TIMEOUT_MS */
	size_t max_resp_body;	       /* 0: PUSH_HTTP_MAX_RESP_BODY */
};

struct push_http_req {
	/* Set by the caller, borrowed until done(). */
	const char *url;	    /* https://host[:port]/path */
	const char *method;	    /* "POST", "GET", ...; NULL: POST with a body, else GET */
	const char *const *headers; /* "name: value" lines, NULL-terminated; may be NULL.
				       Without a content-type line none is sent. */
	const void *body;	    /* may be NULL */
	size_t body_len;
	void (*done)(struct push_http_req *r);
	void *arg; /* for the caller; untouched */
	/* TLS client certificate (PEM file) and its key (NULL: in client_cert),
	 * for APNs certificate-based authentication; NULL: none. libcurl reuses
	 * a connection only for requests with the same certificate. */
	const char *client_cert;
	const char *client_key;

	/* Filled in before done(). */
	enum ferry_err rc;    /* see the file comment */
	int curl_code;	      /* CURLcode; 0 when rc is FERRY_OK */
	long status;	      /* HTTP status; 0 if none came */
	char *resp_body;      /* NUL-terminated, malloc'ed, the caller's; NULL if none */
	size_t resp_len;      /* bytes in resp_body, without the NUL */
	int resp_truncated;   /* the body was longer than max_resp_body */
	char retry_after[64]; /* the Retry-After header as sent, "" if absent */
	char apns_id[64];     /* the apns-id header, "" if absent */
	char errbuf[CURL_ERROR_SIZE];
	uint64_t latency_us; /* from submit to done */

	void *priv; /* the client's while the request is pending */
};

struct push_http_stats {
	uint64_t requests;	     /* accepted by push_http_submit */
	uint64_t responses;	     /* done() with FERRY_OK */
	uint64_t transport_errors;   /* done() with another rc, cancellations excluded */
	uint64_t cancelled;	     /* done() from cancel_all or free */
	uint64_t connections_opened; /* new connections the requests made */
	uint64_t in_flight;	     /* submitted, done() not yet run */
};

/*
 * A client on @loop (borrowed; it must outlive the client). @o may be NULL
 * for the defaults; it is copied, ca_file included. On failure returns NULL
 * with a message in @err.
 */
struct push_http *push_http_new(uv_loop_t *loop, const struct push_http_opts *o, char *err,
				size_t errlen);

/*
 * Start @r (borrowed until its done()). FERRY_OK: done() will run exactly
 * once, later, from the loop. Otherwise done() never runs and @r is the
 * caller's again: FERRY_EINVAL (no url or done), FERRY_EUNAVAIL (the client
 * is being freed), FERRY_ENOMEM. Resets the result fields, so resp_body must
 * have been freed or taken before a request is submitted again.
 */
enum ferry_err push_http_submit(struct push_http *h, struct push_http_req *r) FERRY_WUR;

/*
 * End every pending request now: each gets done() with FERRY_EUNAVAIL, in
 * submission order, before this returns. Requests submitted from those
 * done() calls stay pending. Connections stay open.
 */
void push_http_cancel_all(struct push_http *h);

/*
 * Cancel what is pending (done() with FERRY_EUNAVAIL), close every
 * connection and free @h. The loop's handles close asynchronously: run the
 * loop afterwards until it has no more handles (before uv_loop_close).
 * push_http_free(NULL) does nothing.
 */
void push_http_free(struct push_http *h);

/* Copy the counters into @out. */
void push_http_stats(const struct push_http *h, struct push_http_stats *out);

/* Free r->resp_body and clear it, so @r may be submitted again. */
void push_http_req_release(struct push_http_req *r);

/*
 * Parse a Retry-After value (@v: delay-seconds, or an HTTP-date as in RFC
 * 9110) into seconds from @now (UNIX seconds); a date in the past gives 0.
 * FERRY_EINVAL if @v is neither.
 */
enum ferry_err push_http_retry_after_parse(const char *v, int64_t now, uint64_t *seconds) FERRY_WUR;

#endif
