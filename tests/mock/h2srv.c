/*
 * h2srv.c - the HTTP/2-over-TLS server core of the mock push providers (see
 * h2srv.h).
 *
 * OpenSSL's per-thread error queue is cleared before every SSL_* I/O call:
 * SSL_get_error() looks at it first, so an error left by an unrelated call (a
 * handler's failed signature check) would otherwise kill a healthy connection.
 *
 * Design: a list of connections polled together with the listening socket.
 * Bytes read from TLS go to nghttp2_session_mem_recv(); what nghttp2 has to
 * send is collected with nghttp2_session_mem_send() into a per-connection
 * output buffer and written with SSL_write(). A connection that fails, or
 * whose peer closed, is marked dead and freed after the loop iteration, never
 * from inside an nghttp2 callback.
 *
 * After GOAWAY the connection answers every stream up to its last-stream-id
 * (a client may resend only what is above it), ignores any stream above it
 * that arrives before the GOAWAY is out, writes what is queued, sends
 * close_notify, half-closes the socket and reads (discarding) until the peer
 * closes or DRAIN_MS pass: closing with unread input would make the kernel
 * reset the connection and could destroy the last response before the
 * client read it.
 *
 * An outage, by contrast, resets on purpose (SO_LINGER 0, no close_notify):
 * that is what a client sees when a provider's front end goes away. The
 * signal handlers only set flags; the loop applies them at the top of an
 * iteration, never inside a callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tests/mock/h2srv.h"
#include "common/banned.h"

#define READ_CHUNK 16384
#define OUT_HIGH_WATER (64 * 1024)
#define DRAIN_MS 2000
#define POLL_MS 100
#define MAX_CONNS 256

struct stream {
	struct h2srv_req req;
	char *strings[2 * H2SRV_MAX_HEADERS + 2]; /* owned copies behind req */
	size_t nstrings;
	uint8_t *body; /* H2SRV_MAX_BODY + 1 bytes */
	int handled;
	uint8_t *resp; /* response body, owned */
	size_t resp_len, resp_off;
	struct stream *prev, *next; /* the connection's open streams */
};

enum conn_state { CONN_HANDSHAKE, CONN_OPEN, CONN_DRAINING, CONN_DEAD };

struct h2srv_conn {
	struct h2srv *srv;
	struct h2srv_conn *next;
	int fd;
	SSL *ssl;
	nghttp2_session *sess;
	enum conn_state state;
	uint64_t id;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	int want_pollout;
	int goaway;
	int32_t goaway_last; /* the GOAWAY's last-stream-id */
	uint32_t max_streams;
	uint32_t nrequests;
	int64_t drain_deadline;
	struct stream *streams; /* nghttp2_session_del() closes none through callbacks */
};

struct h2srv {
	int fd; /* -1 during an H2SRV_OUTAGE_REFUSE outage */
	int port;
	SSL_CTX *ctx;
	struct h2srv_opts opts;
	struct h2srv_conn *conns;
	uint64_t next_conn_id;
	int down;	  /* an outage is in force */
	unsigned outages; /* begun so far */
};

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t outage_wanted; /* SIGUSR1 sets it, SIGUSR2 clears it */

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void on_outage_signal(int sig)
{
	outage_wanted = sig == SIGUSR1;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	for (unsigned int i = 0; i < inlen; i += 1u + in[i]) {
		if (in[i] == 2 && i + 3 <= inlen && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Listen on 127.0.0.1:@port (0: a free one) and note the port; -1 with
 * errno on failure. */
static int listen_on(struct h2srv *s, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	int one = 1, e;

	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -1;
	setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_port = htons((uint16_t)port);
	if (bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(s->fd, 128) ||
	    getsockname(s->fd, (struct sockaddr *)&sa, &salen)) {
		e = errno;
		close(s->fd);
		s->fd = -1;
		errno = e;
		return -1;
	}
	s->port = ntohs(sa.sin_port);
	return 0;
}

struct h2srv *h2srv_new(const struct h2srv_opts *o, char *err, size_t errlen)
{
	struct h2srv *s = calloc(1, sizeof(*s));

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->opts = *o;
	if (!s->opts.max_streams)
		s->opts.max_streams = 100;
	s->fd = -1;
	s->ctx = SSL_CTX_new(TLS_server_method());
	if (!s->ctx)
		goto fail_ssl;
	SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(s->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(s->ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(s->ctx, o->cert_path) != 1) {
		snprintf(err, errlen, "cannot load certificate '%s'", o->cert_path);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(s->ctx, o->key_path, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(s->ctx) != 1) {
		snprintf(err, errlen, "cannot load key '%s'", o->key_path);
		goto fail;
	}
	if (o->client_ca_path) {
		if (SSL_CTX_load_verify_locations(s->ctx, o->client_ca_path, NULL) != 1) {
			snprintf(err, errlen, "cannot load client CA '%s'", o->client_ca_path);
			goto fail;
		}
		SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	SSL_CTX_set_alpn_select_cb(s->ctx, alpn_select, NULL);
	if (listen_on(s, o->port)) {
		snprintf(err, errlen, "cannot listen on 127.0.0.1:%d: %s", o->port,
			 strerror(errno));
		goto fail;
	}
	return s;

fail_ssl:
	snprintf(err, errlen, "cannot create a TLS context");
fail:
	h2srv_free(s);
	return NULL;
}

int h2srv_port(const struct h2srv *s)
{
	return s->port;
}

static void stream_free(struct stream *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->nstrings; i++)
		free(st->strings[i]);
	free(st->body);
	free(st->resp);
	free(st);
}

static void stream_unlink(struct h2srv_conn *c, struct stream *st)
{
	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
}

static void conn_free(struct h2srv_conn *c)
{
	if (c->sess)
		nghttp2_session_del(c->sess);
	while (c->streams) {
		struct stream *st = c->streams;

		stream_unlink(c, st);
		stream_free(st);
	}
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	free(c);
}

void h2srv_free(struct h2srv *s)
{
	if (!s)
		return;
	while (s->conns) {
		struct h2srv_conn *c = s->conns;

		s->conns = c->next;
		conn_free(c);
	}
	if (s->fd >= 0)
		close(s->fd);
	SSL_CTX_free(s->ctx);
	free(s);
}

const char *h2srv_req_header(const struct h2srv_req *r, const char *name)
{
	for (size_t i = 0; i < r->nhdrs; i++)
		if (strcmp(r->hdrs[i].name, name) == 0)
			return r->hdrs[i].value;
	return NULL;
}

int h2srv_down(const struct h2srv_req *r)
{
	return r->conn->srv->down;
}

size_t h2srv_req_header_count(const struct h2srv_req *r, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < r->nhdrs; i++)
		n += strcmp(r->hdrs[i].name, name) == 0;
	return n;
}

/* ---- nghttp2 callbacks ------------------------------------------------------ */

static char *stream_keep(struct stream *st, const uint8_t *p, size_t len)
{
	char *copy;

	if (st->nstrings >= sizeof(st->strings) / sizeof(st->strings[0]))
		return NULL;
	copy = malloc(len + 1);
	if (!copy)
		return NULL;
	memcpy(copy, p, len);
	copy[len] = '\0';
	st->strings[st->nstrings++] = copy;
	return copy;
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
	struct h2srv_conn *c = ud;
	struct stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* Past the GOAWAY's last-stream-id (it came in the same read, before
	 * the GOAWAY went out): ignored, as nghttp2 ignores those that come
	 * after it; the client knows from the GOAWAY that it was not processed. */
	if (c->goaway && frame->hd.stream_id > c->goaway_last)
		return 0;
	st = calloc(1, sizeof(*st));
	if (!st || !(st->body = malloc(H2SRV_MAX_BODY + 1))) {
		free(st);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	st->body[0] = '\0';
	st->req.conn = c;
	st->req.conn_id = c->id;
	st->req.stream_id = frame->hd.stream_id;
	st->req.method = "";
	st->req.path = "";
	st->req.body = st->body;
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	nghttp2_session_set_stream_user_data(sess, frame->hd.stream_id, st);
	return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
	const char *n, *v;

	(void)flags;
	(void)ud;
	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	n = stream_keep(st, name, namelen);
	v = stream_keep(st, value, valuelen);
	if (!n || !v)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (strcmp(n, ":method") == 0)
		st->req.method = v;
	else if (strcmp(n, ":path") == 0)
		st->req.path = v;
	else if (n[0] != ':' && st->req.nhdrs < H2SRV_MAX_HEADERS)
		st->req.hdrs[st->req.nhdrs++] = (struct h2srv_hdr){ n, v };
	else if (n[0] != ':')
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t stream_id,
			 const uint8_t *data, size_t len, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(sess, stream_id);
	size_t room;

	(void)flags;
	(void)ud;
	if (!st)
		return 0;
	room = H2SRV_MAX_BODY - st->req.body_len;
	if (len < room)
		room = len;
	memcpy(st->body + st->req.body_len, data, room);
	st->req.body_len += room;
	st->body[st->req.body_len] = '\0';
	st->req.body_total += len;
	return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
	struct h2srv_conn *c = ud;
	struct stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
	if (!st || st->handled)
		return 0;
	st->handled = 1;
	st->req.seq = ++c->nrequests;
	c->srv->opts.handler(&st->req, c->srv->opts.ud);
	return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t stream_id, uint32_t error_code, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(sess, stream_id);

	(void)error_code;
	if (st) {
		nghttp2_session_set_stream_user_data(sess, stream_id, NULL);
		stream_unlink(ud, st);
		stream_free(st);
	}
	return 0;
}

static ssize_t read_body(nghttp2_session *sess, int32_t stream_id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct stream *st = src->ptr;
	size_t n = st->resp_len - st->resp_off;

	(void)sess;
	(void)stream_id;
	(void)ud;
	if (n > len)
		n = len;
	memcpy(buf, st->resp + st->resp_off, n);
	st->resp_off += n;
	if (st->resp_off == st->resp_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

int h2srv_respond(struct h2srv_req *req, int status, const struct h2srv_hdr *hdrs, size_t n,
		  const void *body, size_t len)
{
	struct stream *st = (struct stream *)req; /* req is the first member */
	nghttp2_nv nv[H2SRV_MAX_HEADERS + 2];
	char status_text[8], length_text[24];
	nghttp2_data_provider prov = { .source.ptr = st, .read_callback = read_body };
	size_t k = 0;

	if (n > H2SRV_MAX_HEADERS)
		return -1;
	snprintf(status_text, sizeof(status_text), "%d", status);
	nv[k++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)status_text, 7,
				strlen(status_text), NGHTTP2_NV_FLAG_NONE };
	for (size_t i = 0; i < n; i++)
		nv[k++] = (nghttp2_nv){ (uint8_t *)hdrs[i].name, (uint8_t *)hdrs[i].value,
					strlen(hdrs[i].name), strlen(hdrs[i].value),
					NGHTTP2_NV_FLAG_NONE };
	if (body && len) {
		snprintf(length_text, sizeof(length_text), "%zu", len);
		nv[k++] = (nghttp2_nv){ (uint8_t *)"content-length", (uint8_t *)length_text, 14,
					strlen(length_text), NGHTTP2_NV_FLAG_NONE };
		st->resp = malloc(len);
		if (!st->resp)
			return -1;
		memcpy(st->resp, body, len);
		st->resp_len = len;
	}
	return nghttp2_submit_response(req->conn->sess, req->stream_id, nv, k,
				       st->resp ? &prov : NULL) == 0
		       ? 0
		       : -1;
}

void h2srv_conn_set_max_streams(struct h2srv_conn *c, uint32_t n)
{
	nghttp2_settings_entry e = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, n };

	if (c->max_streams == n)
		return;
	if (nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, &e, 1) == 0)
		c->max_streams = n;
}

void h2srv_conn_goaway(struct h2srv_conn *c, const char *debug)
{
	if (c->goaway)
		return;
	c->goaway = 1;
	c->goaway_last = nghttp2_session_get_last_proc_stream_id(c->sess);
	nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE, c->goaway_last, NGHTTP2_NO_ERROR,
			      (const uint8_t *)debug, debug ? strlen(debug) : 0);
}

/* ---- connection I/O ----------------------------------------------------------- */

static int session_start(struct h2srv_conn *c)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	nghttp2_settings_entry e = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
				     c->srv->opts.max_streams };
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	int rc;

	SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0)
		return -1;
	if (nghttp2_session_callbacks_new(&cbs))
		return -1;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	if (nghttp2_option_new(&opt)) {
		nghttp2_session_callbacks_del(cbs);
		return -1;
	}
	/* A client's RST_STREAM after each finished request is not an attack. */
	nghttp2_option_set_stream_reset_rate_limit(opt, UINT64_MAX, UINT64_MAX);
	rc = nghttp2_session_server_new2(&c->sess, cbs, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rc)
		return -1;
	c->max_streams = c->srv->opts.max_streams;
	return nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, &e, 1) ? -1 : 0;
}

static void conn_flush(struct h2srv_conn *c)
{
	for (;;) {
		int r;

		if (c->out_off == c->out_len) {
			c->out_off = c->out_len = 0;
			while (c->out_len < OUT_HIGH_WATER) {
				const uint8_t *data;
				ssize_t n = nghttp2_session_mem_send(c->sess, &data);

				if (n < 0) {
					c->state = CONN_DEAD;
					return;
				}
				if (n == 0)
					break;
				if (c->out_len + (size_t)n > c->out_cap) {
					size_t cap = (c->out_len + (size_t)n) * 2;
					uint8_t *p = realloc(c->out, cap);

					if (!p) {
						c->state = CONN_DEAD;
						return;
					}
					c->out = p;
					c->out_cap = cap;
				}
				memcpy(c->out + c->out_len, data, (size_t)n);
				c->out_len += (size_t)n;
			}
			if (c->out_len == 0)
				break;
		}
		ERR_clear_error(); /* SSL_get_error() reads the thread's queue */
		r = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
		if (r > 0) {
			c->out_off += (size_t)r;
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_WRITE:
			c->want_pollout = 1;
			return;
		case SSL_ERROR_WANT_READ:
			return;
		default:
			c->state = CONN_DEAD;
			return;
		}
	}
	c->want_pollout = 0;
	if (c->goaway && !nghttp2_session_want_write(c->sess) && !c->streams) {
		/* Every stream up to the GOAWAY's last-stream-id is answered (its
		 * struct stream goes when it closes) and written: close politely. */
		SSL_shutdown(c->ssl);
		shutdown(c->fd, SHUT_WR);
		c->state = CONN_DRAINING;
		c->drain_deadline = now_ms() + DRAIN_MS;
	} else if (!nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess)) {
		c->state = CONN_DEAD;
	}
}

static void conn_read(struct h2srv_conn *c)
{
	uint8_t buf[READ_CHUNK];

	for (;;) {
		int r;

		ERR_clear_error(); /* SSL_get_error() reads the thread's queue */
		r = SSL_read(c->ssl, buf, sizeof(buf));

		if (r > 0) {
			if (nghttp2_session_mem_recv(c->sess, buf, (size_t)r) < 0) {
				c->state = CONN_DEAD;
				return;
			}
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			return;
		case SSL_ERROR_WANT_WRITE:
			c->want_pollout = 1;
			return;
		default:
			c->state = CONN_DEAD;
			return;
		}
	}
}

static void conn_handshake(struct h2srv_conn *c)
{
	int r;

	ERR_clear_error(); /* SSL_get_error() reads the thread's queue */
	r = SSL_accept(c->ssl);

	if (r == 1) {
		c->want_pollout = 0;
		if (session_start(c)) {
			c->state = CONN_DEAD;
			return;
		}
		c->state = CONN_OPEN;
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->want_pollout = 0;
		break;
	case SSL_ERROR_WANT_WRITE:
		c->want_pollout = 1;
		break;
	default:
		ERR_clear_error();
		c->state = CONN_DEAD;
	}
}

static void conn_drain(struct h2srv_conn *c)
{
	char buf[READ_CHUNK];

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		c->state = CONN_DEAD;
		return;
	}
}

static void conn_io(struct h2srv_conn *c)
{
	switch (c->state) {
	case CONN_HANDSHAKE:
		/* Once open, read at once: data may already be buffered in TLS. */
		conn_handshake(c);
		if (c->state != CONN_OPEN)
			return;
		/* fall through */
	case CONN_OPEN:
		conn_read(c);
		if (c->state == CONN_OPEN)
			conn_flush(c);
		return;
	case CONN_DRAINING:
		conn_drain(c);
		return;
	case CONN_DEAD:
		return;
	}
}

/* Free the connections that are dead or done draining. */
static void reap(struct h2srv *s)
{
	int64_t now = now_ms();

	for (struct h2srv_conn **pp = &s->conns; *pp;) {
		struct h2srv_conn *c = *pp;

		if (c->state == CONN_DRAINING && now >= c->drain_deadline)
			c->state = CONN_DEAD;
		if (c->state == CONN_DEAD) {
			*pp = c->next;
			conn_free(c);
		} else {
			pp = &c->next;
		}
	}
}

/* Make the close of @fd a TCP reset rather than a FIN: what a client sees
 * when the server behind the address has gone. */
static void linger_zero(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/*
 * Begin or end an outage as the signals asked. Beginning: every open
 * connection is reset (no GOAWAY, no close_notify), and for
 * H2SRV_OUTAGE_REFUSE the listening socket closes; H2SRV_OUTAGE_ANSWER
 * touches no connection. Ending: listen on the same port again. Then
 * "down N" / "up N" on stdout. -1 if the port cannot be had again.
 */
static int outage_apply(struct h2srv *s)
{
	int want = outage_wanted;

	if (want == s->down)
		return 0;
	if (want && s->opts.outage != H2SRV_OUTAGE_ANSWER) {
		for (struct h2srv_conn *c = s->conns; c; c = c->next) {
			linger_zero(c->fd);
			c->state = CONN_DEAD;
		}
		reap(s); /* closed now, hence reset */
	}
	if (want && s->opts.outage == H2SRV_OUTAGE_REFUSE) {
		close(s->fd); /* connections still in the backlog are reset too */
		s->fd = -1;
	}
	if (!want && s->fd < 0 && listen_on(s, s->port)) {
		fprintf(stderr, "h2srv: cannot listen on 127.0.0.1:%d again: %s\n", s->port,
			strerror(errno));
		return -1;
	}
	s->down = want;
	s->outages += (unsigned)want;
	printf("%s %u\n", want ? "down" : "up", s->outages);
	fflush(stdout);
	return 0;
}

static void accept_all(struct h2srv *s)
{
	for (;;) {
		int one = 1, n = 0;
		int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct h2srv_conn *c;

		if (fd < 0)
			return;
		if (s->down && s->opts.outage == H2SRV_OUTAGE_RESET) {
			linger_zero(fd);
			close(fd);
			continue;
		}
		for (c = s->conns; c; c = c->next)
			n++;
		c = n < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c || !(c->ssl = SSL_new(s->ctx))) {
			free(c);
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		SSL_set_fd(c->ssl, fd);
		c->fd = fd;
		c->srv = s;
		c->id = ++s->next_conn_id;
		c->state = CONN_HANDSHAKE;
		c->next = s->conns;
		s->conns = c;
		conn_io(c);
	}
}

int h2srv_run(struct h2srv *s)
{
	struct sigaction sa;
	struct pollfd fds[MAX_CONNS + 1];
	struct h2srv_conn *polled[MAX_CONNS + 1];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_outage_signal;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	while (!stop_requested) {
		size_t n = 1;

		if (outage_apply(s))
			return -1;
		/* poll() skips a negative descriptor: no listener while refusing. */
		fds[0] = (struct pollfd){ .fd = s->fd, .events = POLLIN };
		for (struct h2srv_conn *c = s->conns; c && n <= MAX_CONNS; c = c->next) {
			short ev = POLLIN;

			if (c->state != CONN_DRAINING &&
			    (c->want_pollout || c->out_off < c->out_len))
				ev |= POLLOUT;
			polled[n] = c;
			fds[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
		}
		if (poll(fds, n, POLL_MS) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (size_t i = 1; i < n; i++)
			if (fds[i].revents)
				conn_io(polled[i]);
		if (fds[0].revents & POLLIN)
			accept_all(s);

		/* Free the dead after the iteration, never inside a callback. */
		reap(s);
	}
	return 0;
}
