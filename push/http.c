/*
 * http.c - the push senders' HTTP/2 client: libcurl multi on the caller's
 * libuv loop.
 *
 * Design: one CURLM per client, one easy handle per request (connections
 * live in the multi handle's cache, not in easy handles, so a fresh easy
 * handle still reuses them). curl tells us which sockets to watch through
 * CURLMOPT_SOCKETFUNCTION (one uv_poll_t each, struct sock) and when to call
 * it back through CURLMOPT_TIMERFUNCTION (one uv_timer_t); events go back to
 * curl with curl_multi_socket_action, after which finished transfers are
 * collected with curl_multi_info_read and their requests answered.
 *
 * Multiplexing: CURLPIPE_MULTIPLEX on the multi handle, CURLOPT_PIPEWAIT on
 * each request: a request for an origin whose connection is being set up
 * waits for it instead of opening another, and CURLMOPT_MAX_HOST_CONNECTIONS
 * bounds the rest. Requests beyond every connection's streams wait in curl's
 * pending queue.
 *
 * Invariants: every pending request is on h->pending (submission order) and
 * attached to h->multi; finish() is the only place a request leaves both,
 * and it calls done() last, after the client has forgotten the request, so
 * that done() may do anything the header allows. A uv_poll_t's memory is
 * freed in its close callback, the client's in its timer's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "push/http.h"
#include "push/response_int.h"
#include "common/banned.h"

struct push_http {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct push_http_opts opts;
	char *ca_file;
	struct xfer *head, *tail; /* pending, oldest first */
	uint64_t next_seq;
	int closing;
	struct push_http_stats stats;
	/* Easy handles of finished requests, kept for the next ones: a new
	 * handle costs curl_easy_init, a dozen options and its buffers. */
	CURL **idle;
	size_t n_idle, idle_cap;
};

/* One pending request. */
struct xfer {
	struct push_http *h;
	struct push_http_req *r;
	struct xfer *prev, *next;
	CURL *easy;
	struct curl_slist *hdrs;
	struct buf body;
	int truncated;
	uint64_t seq; /* submission order */
	uint64_t start_ns;
};

/* One socket curl asked us to watch. */
struct sock {
	uv_poll_t poll;
	struct push_http *h;
	curl_socket_t fd;
	int events; /* what curl asked for, in UV_ flags */
};

static void check_done(struct push_http *h);

/* ---- the request list ---- */

static void list_add(struct push_http *h, struct xfer *x)
{
	x->prev = h->tail;
	x->next = NULL;
	if (h->tail)
		h->tail->next = x;
	else
		h->head = x;
	h->tail = x;
}

static void list_del(struct push_http *h, struct xfer *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		h->head = x->next;
	if (x->next)
		x->next->prev = x->prev;
	else
		h->tail = x->prev;
	x->prev = x->next = NULL;
}

/* ---- finishing a request ---- */

static enum ferry_err map_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_OK:
		return FERRY_OK;
	case CURLE_OUT_OF_MEMORY:
		return FERRY_ENOMEM;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
		return FERRY_EUNAVAIL;
	default:
		return FERRY_EIO;
	}
}

/* Keep @easy for the next request, or clean it up if the pool is full. */
static void easy_put(struct push_http *h, CURL *easy)
{
	if (h->n_idle < h->idle_cap && !h->closing)
		h->idle[h->n_idle++] = easy;
	else
		curl_easy_cleanup(easy);
}

static void xfer_free(struct xfer *x)
{
	if (x->easy) {
		if (curl_multi_remove_handle(x->h->multi, x->easy) != CURLM_OK) {
			log_warn("event=push_http_remove_failed");
			curl_easy_cleanup(x->easy);
		} else {
			easy_put(x->h, x->easy);
		}
	}
	curl_slist_free_all(x->hdrs);
	buf_release(&x->body);
	free(x);
}

/*
 * Answer @x's request with @cc (a CURLcode, or -1 for a cancellation) and
 * forget it; done() runs last.
 */
static void finish(struct xfer *x, int cc)
{
	struct push_http *h = x->h;
	struct push_http_req *r = x->r;
	long status = 0, connects = 0;

	if (cc >= 0) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
		h->stats.connections_opened += (uint64_t)connects;
	}
	r->status = status;
	r->latency_us = (uv_hrtime() - x->start_ns) / 1000;
	r->resp_truncated = x->truncated;
	r->resp_len = x->body.len;
	r->resp_body = NULL;
	if (x->body.len) {
		r->resp_body = buf_detach(&x->body);
		if (!r->resp_body) {
			r->resp_len = 0;
			if (cc == CURLE_OK)
				cc = CURLE_OUT_OF_MEMORY;
		}
	}
	if (cc < 0) {
		r->rc = FERRY_EUNAVAIL;
		r->curl_code = 0;
		snprintf(r->errbuf, sizeof(r->errbuf), "request cancelled");
		h->stats.cancelled++;
	} else {
		r->rc = map_curl((CURLcode)cc);
		r->curl_code = cc;
		if (cc == CURLE_OK) {
			r->errbuf[0] = '\0';
			h->stats.responses++;
		} else {
			if (!r->errbuf[0])
				snprintf(r->errbuf, sizeof(r->errbuf), "%s",
					 curl_easy_strerror((CURLcode)cc));
			h->stats.transport_errors++;
			log_debug("event=push_http_transport_error curl_code=%d reason=\"%s\"", cc,
				  r->errbuf);
		}
	}
	list_del(h, x);
	h->stats.in_flight--;
	r->priv = NULL;
	xfer_free(x);
	r->done(r);
}

/* Answer every request curl has finished. */
static void check_done(struct push_http *h)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(h->multi, &left))) {
		struct xfer *x = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (!x)
			ferry_panic("push_http: a finished transfer without its request");
		finish(x, (int)m->data.result);
	}
}

/* ---- curl's sockets and timer on the loop ---- */

static void on_sock_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = p->data;
	struct push_http *h = s->h;
	int flags = 0, running;

	/*
	 * libuv reports a socket error (POLLERR) as a status and stops watching.
	 * Let curl read and write instead: it then finds what is still buffered
	 * (a GOAWAY, answers) before the error itself, which CURL_CSELECT_ERR
	 * would skip. Watch again, unless curl drops the socket meanwhile.
	 */
	if (status < 0) {
		uv_poll_start(p, s->events, on_poll);
		events = UV_READABLE | UV_WRITABLE;
	}
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	/* @s may be closed and freed by the socket callback inside. */
	curl_multi_socket_action(h->multi, s->fd, flags, &running);
	check_done(h);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct push_http *h = userp;
	struct sock *s = socketp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, on_sock_closed);
			curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->h = h;
		s->fd = fd;
		if (uv_poll_init_socket(h->loop, &s->poll, fd)) {
			free(s);
			log_warn("event=push_http_poll_failed fd=%d", (int)fd);
			return -1;
		}
		s->poll.data = s;
		curl_multi_assign(h->multi, fd, s);
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= UV_READABLE;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= UV_WRITABLE;
	s->events = events;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static void on_timer(uv_timer_t *t)
{
	struct push_http *h = t->data;
	int running;

	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(h);
}

/* curl must not be called back from inside this: a 0 ms timer does it. */
static int on_timeout(CURLM *multi, long timeout_ms, void *userp)
{
	struct push_http *h = userp;

	if (timeout_ms < 0)
		uv_timer_stop(&h->timer);
	else
		uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- per-request callbacks ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n, room;

	room = x->body.cap - x->body.len;
	if (len > room)
		x->truncated = 1;
	if (len && room && buf_append(&x->body, p, len < room ? len : room))
		return CURL_WRITEFUNC_ERROR;
	return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	struct push_http_req *r = x->r;
	size_t len = size * n;

	/* A new status line (an interim answer, a retry): forget the last. */
	if (len > 5 && memcmp(p, "HTTP/", 5) == 0) {
		r->retry_after[0] = '\0';
		r->apns_id[0] = '\0';
		return len;
	}
	if (!push_http_header_value(p, len, "retry-after", r->retry_after, sizeof(r->retry_after)))
		push_http_header_value(p, len, "apns-id", r->apns_id, sizeof(r->apns_id));
	return len;
}

/* ---- submitting ---- */

static enum ferry_err add_headers(struct xfer *x, const char *const *headers)
{
	int has_type = 0;
	struct curl_slist *l;

	for (size_t i = 0; headers && headers[i]; i++) {
		if (strncasecmp(headers[i], "content-type:", 13) == 0)
			has_type = 1;
		l = curl_slist_append(x->hdrs, headers[i]);
		if (!l)
			return FERRY_ENOMEM;
		x->hdrs = l;
	}
	/* Otherwise curl would send its form content type with a body. */
	if (!has_type) {
		l = curl_slist_append(x->hdrs, "Content-Type:");
		if (!l)
			return FERRY_ENOMEM;
		x->hdrs = l;
	}
	return FERRY_OK;
}

#define SET(opt, val)                                                    \
	do {                                                             \
		if (curl_easy_setopt(x->easy, (opt), (val)) != CURLE_OK) \
			return FERRY_EINVAL;                             \
	} while (0)

/* What every request of @h sets alike: once per easy handle. */
static enum ferry_err setup_easy_once(struct push_http *h, struct xfer *x)
{
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	SET(CURLOPT_PIPEWAIT, 1L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_TCP_KEEPIDLE, (long)PUSH_HTTP_KEEPIDLE_S);
	SET(CURLOPT_TCP_KEEPINTVL, (long)PUSH_HTTP_KEEPINTVL_S);
	SET(CURLOPT_TIMEOUT_MS, (long)h->opts.timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)h->opts.connect_timeout_ms);
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	if (h->ca_file)
		SET(CURLOPT_CAINFO, h->ca_file);
	return FERRY_OK;
}

static enum ferry_err setup_easy(struct push_http *h, struct xfer *x)
{
	struct push_http_req *r = x->r;
	const char *method = r->method;

	if (!method)
		method = r->body ? "POST" : "GET";
	if (h->n_idle) {
		x->easy = h->idle[--h->n_idle];
	} else {
		x->easy = curl_easy_init();
		if (!x->easy)
			return FERRY_ENOMEM;
		if (setup_easy_once(h, x))
			return FERRY_EINVAL;
	}
	if (add_headers(x, r->headers))
		return FERRY_ENOMEM;
	SET(CURLOPT_URL, r->url);
	SET(CURLOPT_PRIVATE, (char *)x);
	SET(CURLOPT_ERRORBUFFER, r->errbuf);
	/* Per request, and reset when absent: the handle may be a reused one. */
	SET(CURLOPT_SSLCERT, r->client_cert);
	SET(CURLOPT_SSLKEY, r->client_key);
	SET(CURLOPT_HTTPHEADER, x->hdrs);
	SET(CURLOPT_WRITEDATA, x);
	SET(CURLOPT_HEADERDATA, x);
	SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
	if (strcmp(method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		if (strcmp(method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, method);
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
		SET(CURLOPT_POSTFIELDS, r->body ? r->body : "");
	}
	return FERRY_OK;
}

#undef SET

enum ferry_err push_http_submit(struct push_http *h, struct push_http_req *r)
{
	struct xfer *x;
	enum ferry_err rc;

	if (!r->url || !r->done)
		return FERRY_EINVAL;
	if (h->closing)
		return FERRY_EUNAVAIL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return FERRY_ENOMEM;
	x->h = h;
	x->r = r;
	buf_init(&x->body, h->opts.max_resp_body);
	r->rc = FERRY_OK;
	r->curl_code = 0;
	r->status = 0;
	r->resp_body = NULL;
	r->resp_len = 0;
	r->resp_truncated = 0;
	r->retry_after[0] = '\0';
	r->apns_id[0] = '\0';
	r->errbuf[0] = '\0';
	r->latency_us = 0;
	rc = setup_easy(h, x);
	if (rc)
		goto free_xfer;
	if (curl_multi_add_handle(h->multi, x->easy) != CURLM_OK) {
		rc = FERRY_ENOMEM;
		goto free_xfer;
	}
	x->start_ns = uv_hrtime();
	x->seq = h->next_seq++;
	r->priv = x;
	list_add(h, x);
	h->stats.requests++;
	h->stats.in_flight++;
	return FERRY_OK;

free_xfer:
	curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->hdrs);
	free(x);
	return rc;
}

/* ---- cancel, life cycle ---- */

void push_http_cancel_all(struct push_http *h)
{
	uint64_t last;

	/* Only what was pending on entry: done() may submit more (a later
	 * seq) or cancel the rest itself. */
	if (!h->tail)
		return;
	last = h->tail->seq;
	while (h->head && h->head->seq <= last)
		finish(h->head, -1);
}

struct push_http *push_http_new(uv_loop_t *loop, const struct push_http_opts *o, char *err,
				size_t errlen)
{
	struct push_http *h;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "cannot initialise libcurl");
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "out of memory");
		goto global_cleanup;
	}
	h->loop = loop;
	if (o)
		h->opts = *o;
	h->opts.ca_file = NULL;
	if (!h->opts.max_host_connections)
		h->opts.max_host_connections = PUSH_HTTP_HOST_CONNECTIONS;
	if (!h->opts.max_streams)
		h->opts.max_streams = PUSH_HTTP_MAX_STREAMS;
	if (!h->opts.timeout_ms)
		h->opts.timeout_ms = PUSH_HTTP_TIMEOUT_MS;
	if (!h->opts.connect_timeout_ms)
		h->opts.connect_timeout_ms = PUSH_HTTP_CONNECT_TIMEOUT_MS;
	if (!h->opts.max_resp_body)
		h->opts.max_resp_body = PUSH_HTTP_MAX_RESP_BODY;
	h->idle_cap = (size_t)h->opts.max_streams * h->opts.max_host_connections;
	h->idle = calloc(h->idle_cap, sizeof(*h->idle));
	if (!h->idle) {
		snprintf(err, errlen, "out of memory");
		goto free_h;
	}
	if (o && o->ca_file) {
		h->ca_file = strdup(o->ca_file);
		if (!h->ca_file) {
			snprintf(err, errlen, "out of memory");
			goto free_h;
		}
	}
	h->multi = curl_multi_init();
	if (!h->multi) {
		snprintf(err, errlen, "cannot create a libcurl multi handle");
		goto free_ca;
	}
	if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket) ||
	    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) ||
	    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timeout) ||
	    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) ||
	    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) ||
	    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
			      (long)h->opts.max_host_connections) ||
	    curl_multi_setopt(h->multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
			      (long)h->opts.max_streams)) {
		snprintf(err, errlen, "libcurl refused a multi option (HTTP/2 support missing?)");
		goto cleanup_multi;
	}
	if (uv_timer_init(loop, &h->timer)) {
		snprintf(err, errlen, "cannot create a libuv timer");
		goto cleanup_multi;
	}
	h->timer.data = h;
	return h;

cleanup_multi:
	curl_multi_cleanup(h->multi);
free_ca:
	free(h->ca_file);
free_h:
	free(h->idle);
	free(h);
global_cleanup:
	curl_global_cleanup();
	return NULL;
}

static void on_timer_closed(uv_handle_t *handle)
{
	struct push_http *h = handle->data;

	free(h->ca_file);
	free(h);
	curl_global_cleanup();
}

void push_http_free(struct push_http *h)
{
	if (!h)
		return;
	h->closing = 1;
	push_http_cancel_all(h);
	/* Requests submitted from those done() calls were refused (closing). */
	if (h->head)
		ferry_panic("push_http_free: requests left after cancelling");
	/* Closes the connections; their sockets' polls close through on_socket. */
	while (h->n_idle)
		curl_easy_cleanup(h->idle[--h->n_idle]);
	free(h->idle);
	h->idle = NULL;
	curl_multi_cleanup(h->multi);
	h->multi = NULL;
	uv_timer_stop(&h->timer);
	uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

void push_http_stats(const struct push_http *h, struct push_http_stats *out)
{
	*out = h->stats;
}

void push_http_req_release(struct push_http_req *r)
{
	free(r->resp_body);
	r->resp_body = NULL;
	r->resp_len = 0;
}

enum ferry_err push_http_retry_after_parse(const char *v, int64_t now, uint64_t *seconds)
{
	char *end;
	unsigned long long n;
	time_t t;

	while (*v == ' ' || *v == '\t')
		v++;
	if (*v >= '0' && *v <= '9') {
		errno = 0;
		n = strtoull(v, &end, 10);
		while (*end == ' ' || *end == '\t')
			end++;
		if (errno || *end)
			return FERRY_EINVAL;
		*seconds = n;
		return FERRY_OK;
	}
	if (!*v)
		return FERRY_EINVAL;
	t = curl_getdate(v, NULL);
	if (t == (time_t)-1)
		return FERRY_EINVAL;
	*seconds = (int64_t)t > now ? (uint64_t)((int64_t)t - now) : 0;
	return FERRY_OK;
}
