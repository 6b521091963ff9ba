/*
 * conn.c - one device connection: reading and decoding frames, writing,
 * TLS through memory BIOs, the handshake and its deadline, the idle timeout.
 *
 * States: HANDSHAKE (until HELLO) -> AUTH (credentials checked on the
 * threadpool) -> READY -> CLOSING. Any frame not allowed in the current state
 * closes the connection with ERROR bad_frame.
 *
 * Memory: reads land in the worker's shared buffer; a connection keeps bytes
 * of its own only while a frame is incomplete, and frees them as soon as the
 * frame is.
 *
 * Writing: the frames a connection is sent during one loop iteration (the
 * ACKs of the SENDs one read brought, the DELIVERs a mailbox batch brought)
 * are copied into a cork, and the cork is written with one system call when
 * the iteration's I/O callbacks are done (the worker's check handle), or
 * before the loop waits for I/O if a timer wrote (its prepare handle). A
 * frame too big for a cork goes out on its own, after the cork. Writes go
 * straight to the socket when it takes them (uv_try_write); only the rest is
 * queued, and a queue past [gateway] max_output closes the connection (a
 * slow reader must not grow memory). A big DELIVER frame is shared: queued,
 * it references its envelope instead of copying it. With TLS, records wait
 * in the output BIO and the cork only marks the connection for the flush.
 *
 * Closing: gw_conn_close() sends the ERROR, stops reading, fails what the
 * connection holds (route.c), shuts the socket down after the queued writes
 * and closes the handles, or closes them after a short deadline if the peer
 * does not read. The memory is freed when the last handle is closed and no
 * threadpool job refers to the connection any more.
 */
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/err.h>
#include <utlist.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "common/banned.h"

/* The one answer to a HELLO that names an unknown device or the wrong
 * secret: the two must not be told apart, by text or by time (both look
 * the device up and hash the secret, queue_device_auth()). */
#define AUTH_FAILED_TEXT "unknown device or wrong secret"

/* How long a closing connection may take to flush its last frames. */
#define CLOSE_FLUSH_MS 2000

struct wreq {
	uv_write_t req;
	struct gw_conn *c;
	struct gw_env *env; /* referenced, or NULL */
	void *owned;	    /* freed after the write, or NULL */
};

struct auth_job {
	uv_work_t req;
	struct gw_conn *c;
	struct gw_peer peer; /* where the HELLO came from */
	int64_t device_id;
	size_t secret_len;
	uint8_t secret[PROTO_MAX_SECRET];
	char user[QUEUE_USER_MAX + 1];
	int read_receipts;
	enum ferry_err rc;
};

/* ---- corks ---- */

static struct gw_cork *cork_get(struct gw_worker *w)
{
	struct gw_cork *k = w->spare;

	if (k) {
		DL_DELETE(w->spare, k);
		w->nspare--;
	} else if ((k = malloc(sizeof(*k))) != NULL) {
		k->data = NULL;
		k->cap = 0;
	} else {
		return NULL;
	}
	k->len = 0;
	return k;
}

static void cork_put(struct gw_worker *w, struct gw_cork *k)
{
	if (w->nspare >= GW_CORK_SPARE || w->stopping) {
		free(k->data);
		free(k);
		return;
	}
	DL_PREPEND(w->spare, k);
	w->nspare++;
}

/* Take @c's cork off the dirty list; the caller owns it. */
static struct gw_cork *cork_take(struct gw_conn *c)
{
	struct gw_cork *k = c->cork;

	if (k) {
		c->cork = NULL;
		DL_DELETE(c->w->dirty, k);
		c->w->ndirty--;
	}
	return k;
}

static void cork_discard(struct gw_conn *c)
{
	struct gw_cork *k = cork_take(c);

	if (k)
		cork_put(c->w, k);
}

static void conn_free(struct gw_conn *c)
{
	struct gateway *gw = c->w->gw;

	HASH_DEL(c->w->conns, c);
	/* Only when the worker stops before a handover finished. */
	while (c->waiting) {
		struct gw_msg *m = c->waiting;

		c->waiting = (struct gw_msg *)m->link.next;
		gw_env_unref(m->env);
		free(m);
	}
	free(c->handover);
	cork_discard(c);
	SSL_free(c->ssl); /* frees the BIOs too */
	buf_release(&c->in);
	if (c->counted) {
		atomic_fetch_sub(&gw->connections, 1);
		gw_stat_sub(c->w, GW_ST_CONNS, 1);
	}
	if (c->authed)
		gw_stat_sub(c->w, GW_ST_AUTHED, 1);
	free(c);
}

void gw_conn_free_all(struct gw_worker *w)
{
	struct gw_conn *c, *tmp;

	HASH_ITER(hh, w->conns, c, tmp)
	{
		conn_free(c);
	}
}

void gw_conn_ref(struct gw_conn *c)
{
	c->refs++;
}

void gw_conn_unref(struct gw_conn *c)
{
	if (--c->refs == 0)
		conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	gw_conn_unref(h->data);
}

static void close_handles(struct gw_conn *c)
{
	uv_handle_t *hs[] = { (uv_handle_t *)&c->tcp, (uv_handle_t *)&c->timer };

	for (size_t i = 0; i < 2; i++)
		if (!uv_is_closing(hs[i]))
			uv_close(hs[i], on_handle_closed);
}

struct gw_conn *gw_conn_find(struct gw_worker *w, uint64_t id)
{
	struct gw_conn *c;

	HASH_FIND(hh, w->conns, &id, sizeof(id), c);
	return c;
}

/* ---- writing ---- */

static void arm_timer(struct gw_conn *c);

/* Output waits in user space: the write timeout runs from now unless it
 * already runs. */
static void mark_stalled(struct gw_conn *c)
{
	if (c->stalled_at || c->state == GW_CONN_CLOSING)
		return;
	c->stalled_at = (uint32_t)uv_now(&c->w->loop) | 1u;
	arm_timer(c);
}

static void on_written(uv_write_t *req, int status)
{
	struct wreq *wr = (struct wreq *)req;
	struct gw_conn *c = wr->c;

	/* The socket took something: the timeout starts again, or stops. */
	c->stalled_at = c->tcp.write_queue_size ? (uint32_t)uv_now(&c->w->loop) | 1u : 0;

	if (wr->env)
		gw_env_unref(wr->env);
	free(wr->owned);
	free(wr);
	if (status < 0 && status != UV_ECANCELED)
		gw_conn_close(c, 0, NULL);
	else if (c->nheld)
		gw_deliver_pump(c); /* room for more stored envelopes */
}

/* Write @len bytes at @p: as much as the socket takes now, the rest queued
 * with a reference to @env, or in @owned (kept: 1), or in a copy. Returns 0
 * when @owned was not kept: the caller frees or reuses it. */
static int raw_write(struct gw_conn *c, const uint8_t *p, size_t len, struct gw_env *env,
		     void *owned)
{
	const struct ferry_config *cfg = c->w->gw->cfg;
	struct wreq *wr;
	uv_buf_t b;
	int n;

	if (uv_is_closing((uv_handle_t *)&c->tcp))
		goto drop;
	if (c->tcp.write_queue_size + len > cfg->gateway.max_output) {
		log_info("event=conn_slow_reader conn=%llu device=%lld queued=%zu",
			 (unsigned long long)c->id, (long long)c->device_id,
			 c->tcp.write_queue_size);
		gw_conn_close(c, 0, NULL);
		goto drop;
	}
	if (c->tcp.write_queue_size == 0) {
		b = uv_buf_init((char *)p, (unsigned)len);
		gw_stat(c->w, GW_ST_WRITES, 1);
		n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (n == (int)len)
			goto drop; /* all written: nothing to keep */
		if (n < 0 && n != UV_EAGAIN) {
			gw_conn_close(c, 0, NULL);
			goto drop;
		}
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
	}
	wr = malloc(sizeof(*wr) + (env || owned ? 0 : len));
	if (!wr) {
		gw_conn_close(c, 0, NULL);
		goto drop;
	}
	wr->c = c;
	wr->env = env ? gw_env_ref(env) : NULL;
	wr->owned = owned;
	if (!env && !owned) {
		memcpy(wr + 1, p, len);
		p = (const uint8_t *)(wr + 1);
	}
	b = uv_buf_init((char *)p, (unsigned)len);
	gw_stat(c->w, GW_ST_WRITES, 1); /* libuv writes it when the socket takes it */
	if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
		if (wr->env)
			gw_env_unref(wr->env);
		free(wr->owned);
		free(wr);
		gw_conn_close(c, 0, NULL);
		return 1;
	}
	if (c->tcp.write_queue_size)
		mark_stalled(c);
	return 1;
drop:
	return 0;
}

int gw_conn_has_room(const struct gw_conn *c, size_t len)
{
	size_t queued = c->tcp.write_queue_size + (c->cork ? c->cork->len : 0);

	return queued == 0 || queued + len <= c->w->gw->cfg->gateway.max_output / 2;
}

/* Move what OpenSSL wrote into its output BIO to the socket. */
static void flush_tls(struct gw_conn *c)
{
	int pending;

	while ((pending = (int)BIO_ctrl_pending(c->wbio)) > 0) {
		uint8_t *chunk = malloc((size_t)pending);
		int n;

		if (!chunk) {
			gw_conn_close(c, 0, NULL);
			return;
		}
		n = BIO_read(c->wbio, chunk, pending);
		if (n <= 0) {
			free(chunk);
			return;
		}
		if (!raw_write(c, chunk, (size_t)n, NULL, chunk))
			free(chunk);
	}
}

/* Give @c's cork to the socket. */
static void cork_flush(struct gw_conn *c)
{
	struct gw_cork *k = cork_take(c);

	if (!k)
		return;
	if (c->ssl) {
		cork_put(c->w, k);
		flush_tls(c);
	} else if (!k->len || !raw_write(c, k->data, k->len, NULL, k->data)) {
		cork_put(c->w, k);
	} else { /* the write queue has its buffer now */
		k->data = NULL;
		k->cap = 0;
		cork_put(c->w, k);
	}
}

void gw_conn_flush_all(struct gw_worker *w)
{
	while (w->dirty)
		cork_flush(w->dirty->c);
}

void gw_conn_corks_free(struct gw_worker *w)
{
	struct gw_cork *k, *tmp;

	DL_FOREACH_SAFE(w->spare, k, tmp)
	{
		DL_DELETE(w->spare, k);
		free(k->data);
		free(k);
	}
	w->nspare = 0;
}

/* @c's cork, made and put on the dirty list if it has none; NULL when out
 * of memory (the caller writes at once instead). */
static struct gw_cork *cork_of(struct gw_conn *c)
{
	struct gw_worker *w = c->w;
	struct gw_cork *k;

	if (c->cork)
		return c->cork;
	if (!w->flush_on || w->stopping)
		return NULL; /* no check handle to flush it */
	if (w->ndirty >= GW_CORK_DIRTY)
		gw_conn_flush_all(w);
	k = cork_get(w);
	if (!k)
		return NULL;
	k->c = c;
	c->cork = k;
	DL_APPEND(w->dirty, k);
	w->ndirty++;
	return k;
}

/* Room for @need (at most GW_CORK_SIZE) bytes in @k: 0, or -1 (no memory). */
static int cork_grow(struct gw_cork *k, size_t need)
{
	size_t cap = k->cap ? k->cap : GW_CORK_FIRST;
	uint8_t *data;

	while (cap < need)
		cap *= 2;
	if (cap > GW_CORK_SIZE)
		cap = GW_CORK_SIZE;
	data = realloc(k->data, cap);
	if (!data)
		return -1;
	k->data = data;
	k->cap = cap;
	return 0;
}

void gw_conn_write(struct gw_conn *c, const void *p, size_t len, struct gw_env *env)
{
	struct gw_cork *k;

	gw_stat(c->w, GW_ST_FRAMES_OUT, 1);
	gw_stat(c->w, GW_ST_BYTES_OUT, len);
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	if (c->ssl) {
		/* A memory BIO takes everything: SSL_write does not block or
		 * split. The records go out with the cork. */
		if (SSL_write(c->ssl, p, (int)len) != (int)len) {
			ERR_clear_error();
			gw_conn_close(c, 0, NULL);
			return;
		}
		if (!cork_of(c))
			flush_tls(c);
		return;
	}
	if (len > GW_CORK_COPY_MAX) {
		cork_flush(c); /* what was written before goes first */
		raw_write(c, p, len, env, NULL);
		return;
	}
	if (c->cork && c->cork->len + len > GW_CORK_SIZE)
		cork_flush(c);
	k = cork_of(c);
	if (!k) {
		raw_write(c, p, len, env, NULL);
		return;
	}
	if (k->len + len > k->cap && cork_grow(k, k->len + len)) {
		cork_flush(c); /* what was written before goes first */
		raw_write(c, p, len, env, NULL);
		return;
	}
	memcpy(k->data + k->len, p, len);
	k->len += len;
}

void gw_conn_send_frame(struct gw_conn *c, const struct proto_frame *f)
{
	uint8_t out[1024];
	size_t len;

	if (proto_encode(f, out, sizeof(out), &len))
		ferry_panic("cannot encode a %s frame", proto_type_name(f->type));
	gw_conn_write(c, out, len, NULL);
}

void gw_conn_send_error(struct gw_conn *c, unsigned code, const char *text)
{
	struct proto_frame f = { .type = PROTO_ERROR };

	f.u.error.code = code;
	f.u.error.text.p = (const uint8_t *)text;
	f.u.error.text.len = strnlen(text, PROTO_MAX_TEXT);
	gw_conn_send_frame(c, &f);
}

/* ---- closing ---- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct gw_conn *c = req->data;

	free(req);
	close_handles(c);
	gw_conn_unref(c);
}

static void on_close_deadline(uv_timer_t *t)
{
	close_handles(t->data);
}

void gw_conn_peer(struct gw_conn *c, struct gw_peer *peer)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(peer, 0, sizeof(*peer));
	peer->since_ms = (int64_t)gw_now_ms();
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len))
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;

		memcpy(peer->addr, &in->sin_addr, 4);
		peer->port = ntohs(in->sin_port);
		peer->family = AF_INET;
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

		memcpy(peer->addr, &in6->sin6_addr, 16);
		peer->port = ntohs(in6->sin6_port);
		peer->family = AF_INET6;
	}
}

void gw_conn_close(struct gw_conn *c, unsigned code, const char *text)
{
	uv_shutdown_t *req;

	if (c->state == GW_CONN_CLOSING)
		return;
	if (c->state == GW_CONN_AUTH)
		gw_auth_done(c->w);
	/* First, so that a failure while sending the ERROR cannot re-enter. */
	c->state = GW_CONN_CLOSING;
	if (code && !uv_is_closing((uv_handle_t *)&c->tcp))
		gw_conn_send_error(c, code, text ? text : proto_error_name(code));
	log_debug("event=conn_closed conn=%llu device=%lld code=%s", (unsigned long long)c->id,
		  (long long)c->device_id, code ? proto_error_name(code) : "none");
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_timer_stop(&c->timer);
	gw_deliver_conn_closed(c);
	gw_route_sender_closed(c);
	/* What was written (the ERROR last) goes before the shutdown. */
	cork_flush(c);
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		ERR_clear_error();
		flush_tls(c);
	}
	if (uv_is_closing((uv_handle_t *)&c->tcp)) {
		close_handles(c);
		return;
	}
	uv_timer_start(&c->timer, on_close_deadline, CLOSE_FLUSH_MS, 0);
	req = malloc(sizeof(*req));
	if (!req) {
		close_handles(c);
		return;
	}
	req->data = c;
	gw_conn_ref(c);
	if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown)) {
		free(req);
		gw_conn_unref(c);
		close_handles(c);
	}
}

/* ---- timers ---- */

/*
 * One timer per connection (a uv_timer_t is 152 bytes: one fewer is an
 * eighth of an idle connection). It is armed for the earliest of: the
 * handshake deadline (until WELCOME) or the idle deadline (last_rx +
 * idle_timeout, checked lazily: reads do not re-arm it), the earliest live
 * DELIVER's ack deadline, and the next try of a catch-up step. Closing
 * takes it over for the flush deadline.
 */
static uint64_t idle_deadline(const struct gw_conn *c)
{
	const struct ferry_config *cfg = c->w->gw->cfg;

	if (c->state == GW_CONN_READY)
		return c->last_rx + cfg->gateway.idle_timeout;
	return c->accepted + cfg->gateway.handshake_timeout;
}

/* When the write timeout of output that waits without progress runs out;
 * UINT64_MAX: none waits. */
static uint64_t write_deadline(const struct gw_conn *c, uint64_t now)
{
	uint32_t waited = (uint32_t)now - c->stalled_at;
	unsigned timeout = c->w->gw->cfg->gateway.write_timeout;

	if (!c->stalled_at)
		return UINT64_MAX;
	return waited >= timeout ? now : now + (timeout - waited);
}

static void on_timer(uv_timer_t *t);

static void arm_timer(struct gw_conn *c)
{
	uint64_t now = uv_now(&c->w->loop), at = idle_deadline(c);

	if (write_deadline(c, now) < at)
		at = write_deadline(c, now);

	if (c->state == GW_CONN_CLOSING)
		return; /* the flush deadline's */
	if (c->fifo && c->fifo->deadline < at)
		at = c->fifo->deadline;
	if (c->retry_at && c->retry_at < at)
		at = c->retry_at;
	uv_timer_start(&c->timer, on_timer, at > now ? at - now : 0, 0);
}

/* The handshake or idle deadline passed. */
static void idle_expired(struct gw_conn *c)
{
	if (c->state == GW_CONN_AUTH && c->phase != GW_PH_NONE) {
		/* Registered, the store slow to answer: WELCOME now (pending
		 * unknown); stored envelopes follow when it answers. */
		gw_conn_welcome(c, 0);
		return;
	}
	if (c->state != GW_CONN_READY) {
		gw_conn_close(c, PROTO_ERR_TIMEOUT, "handshake not completed in time");
		return;
	}
	gw_conn_close(c, PROTO_ERR_TIMEOUT, "idle for too long");
}

static void on_timer(uv_timer_t *t)
{
	struct gw_conn *c = t->data;
	uint64_t now = uv_now(&c->w->loop);

	if (c->state == GW_CONN_CLOSING)
		return;
	if ((c->fifo && c->fifo->deadline <= now) || (c->retry_at && c->retry_at <= now)) {
		gw_deliver_ack_timeout(c);
		if (c->state == GW_CONN_CLOSING)
			return;
	}
	if (idle_deadline(c) <= now) {
		idle_expired(c);
		if (c->state == GW_CONN_CLOSING)
			return;
	}
	if (write_deadline(c, now) <= now) {
		/* No ERROR: it would wait behind what is not read either. */
		log_info("event=conn_write_timeout conn=%llu device=%lld queued=%zu",
			 (unsigned long long)c->id, (long long)c->device_id,
			 c->tcp.write_queue_size);
		gw_conn_close(c, 0, NULL);
		return;
	}
	arm_timer(c);
}

void gw_conn_arm_ack_timer(struct gw_conn *c)
{
	arm_timer(c);
}

/* ---- the handshake ---- */

static void auth_work(uv_work_t *req)
{
	struct auth_job *job = req->data;
	struct gateway *gw = job->c->w->gw;

	job->rc = queue_device_auth(gw->reg, job->device_id, job->secret, job->secret_len,
				    job->user, &job->read_receipts);
}

void gw_conn_reconnect(struct gw_conn *c, uint64_t after_ms)
{
	struct proto_frame f = { .type = PROTO_RECONNECT };

	f.u.reconnect_after = after_ms;
	gw_conn_send_frame(c, &f);
}

void gw_conn_welcome(struct gw_conn *c, uint64_t pending)
{
	const struct ferry_config *cfg = c->w->gw->cfg;
	struct proto_frame f = { .type = PROTO_WELCOME };

	if (c->state == GW_CONN_AUTH)
		gw_auth_done(c->w);
	c->state = GW_CONN_READY;
	if (!c->authed) {
		c->authed = 1;
		gw_stat(c->w, GW_ST_AUTHED, 1);
	}
	f.u.welcome.server_time = gw_now_ms();
	f.u.welcome.pending = pending;
	f.u.welcome.max_frame = cfg->gateway.max_frame;
	f.u.welcome.idle_timeout = cfg->gateway.idle_timeout;
	gw_conn_send_frame(c, &f);
	/* Registered while the node drains: off it goes, too. */
	if (atomic_load_explicit(&c->w->gw->draining, memory_order_relaxed))
		gw_conn_reconnect(c,
				  (uint64_t)rand() % (atomic_load(&c->w->gw->drain_spread) + 1u));
	c->last_rx = uv_now(&c->w->loop);
	arm_timer(c);
	log_debug("event=conn_ready conn=%llu device=%lld user=%s pending=%llu",
		  (unsigned long long)c->id, (long long)c->device_id, c->user,
		  (unsigned long long)pending);
}

static void auth_done(uv_work_t *req, int status)
{
	struct auth_job *job = req->data;
	struct gw_conn *c = job->c;

	if (c->state != GW_CONN_AUTH) {
		/* closed meanwhile */
	} else if (job->rc == FERRY_EAUTH) {
		log_info("event=auth_failed conn=%llu device=%lld", (unsigned long long)c->id,
			 (long long)job->device_id);
		gw_authfail_record(c->w->gw, &job->peer, job->device_id);
		gw_conn_close(c, PROTO_ERR_AUTH_FAILED, AUTH_FAILED_TEXT);
	} else if (job->rc) {
		log_warn("event=auth_unavailable conn=%llu reason=\"%s\"",
			 (unsigned long long)c->id, ferry_strerror(job->rc));
		gw_conn_close(c, PROTO_ERR_INTERNAL, "cannot check credentials now; retry later");
	} else {
		c->device_id = job->device_id;
		memcpy(c->user, job->user, sizeof(c->user));
		c->read_receipts = job->read_receipts;
		/* WELCOME follows once the store said how much is pending. */
		gw_deliver_register(c);
	}
	OPENSSL_cleanse(job->secret, sizeof(job->secret));
	free(job);
	gw_conn_unref(c);
}

static void start_auth(struct gw_conn *c, const struct proto_hello *h)
{
	struct auth_job *job;

	if (h->version != PROTO_VERSION) {
		gw_conn_close(c, PROTO_ERR_UNSUPPORTED_VERSION, "this server speaks version 1");
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		gw_conn_close(c, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	/* An id no device can have is looked up as 0, which none has: the
	 * answer, and the time it takes, are those of any unknown device. */
	job->device_id = h->device_id > INT64_MAX ? 0 : (int64_t)h->device_id;
	gw_conn_peer(c, &job->peer);
	if (gw_authfail_blocked(c->w->gw, &job->peer, job->device_id)) {
		log_info("event=auth_rate_limited conn=%llu device=%lld", (unsigned long long)c->id,
			 (long long)job->device_id);
		free(job);
		gw_conn_close(c, PROTO_ERR_RATE_LIMITED, "too many failed handshakes; retry later");
		return;
	}
	job->req.data = job;
	job->c = c;
	job->secret_len = h->secret.len;
	memcpy(job->secret, h->secret.p, h->secret.len);
	c->state = GW_CONN_AUTH;
	gw_auth_begin(c->w);
	gw_conn_ref(c);
	if (uv_queue_work(&c->w->loop, &job->req, auth_work, auth_done)) {
		free(job);
		gw_conn_unref(c);
		gw_conn_close(c, PROTO_ERR_INTERNAL, "cannot check credentials now");
	}
}

/* ---- frames ---- */

/*
 * Frames that cost work without carrying an envelope (PING, PONG, a
 * DELIVER_ACK naming ids not in flight, which become DELETEs) take one
 * token each from the connection's bucket: [gateway] frames_burst of them,
 * refilled at max_frames_per_s. SEND and RECEIPT are not counted: they are
 * paced by the store (GW_MAX_QUEUED_SENDS, NACK retry_later), and a fast
 * sender must not be cut off. Returns 0, or -1 when the bucket is empty and
 * the connection was closed (ERROR rate_limited).
 */
static int take_token(struct gw_conn *c)
{
	const struct ferry_config *cfg = c->w->gw->cfg;
	uint64_t cap = (uint64_t)cfg->gateway.frames_burst * 1000;
	uint32_t now = (uint32_t)uv_now(&c->w->loop);
	uint64_t level = c->bucket +
			 (uint64_t)(uint32_t)(now - c->bucket_at) * cfg->gateway.max_frames_per_s;

	c->bucket_at = now;
	if (level > cap)
		level = cap;
	if (level < 1000) {
		log_info("event=conn_rate_limited conn=%llu device=%lld", (unsigned long long)c->id,
			 (long long)c->device_id);
		gw_conn_close(c, PROTO_ERR_RATE_LIMITED, "too many frames; slow down");
		return -1;
	}
	c->bucket = (uint32_t)(level - 1000);
	return 0;
}

static void handle_ready(struct gw_conn *c, const struct proto_frame *f)
{
	/* Filled in only for a PING: "= { .type = ... }" would zero its 4 KiB
	 * for every frame. */
	struct proto_frame pong;

	switch (f->type) {
	case PROTO_SEND:
		gw_route_send(c, &f->u.send);
		break;
	case PROTO_DELIVER_ACK:
		if (gw_deliver_acked(c, &f->u.ids))
			take_token(c);
		break;
	case PROTO_RECEIPT:
		gw_receipt_read(c, &f->u.receipt);
		break;
	case PROTO_PING:
		if (take_token(c))
			break;
		pong.type = PROTO_PONG;
		pong.u.nonce = f->u.nonce;
		gw_conn_send_frame(c, &pong);
		break;
	case PROTO_PONG:
		take_token(c);
		break;
	case PROTO_ERROR:
		log_info("event=conn_peer_error conn=%llu device=%lld code=%s",
			 (unsigned long long)c->id, (long long)c->device_id,
			 proto_error_name(f->u.error.code));
		gw_conn_close(c, 0, NULL);
		break;
	default:
		gw_conn_close(c, PROTO_ERR_BAD_FRAME, "frame not allowed from a device");
	}
}

static void handle_frame(struct gw_conn *c, const struct proto_frame *f)
{
	switch (c->state) {
	case GW_CONN_HANDSHAKE:
		if (f->type == PROTO_HELLO)
			start_auth(c, &f->u.hello);
		else
			gw_conn_close(c, PROTO_ERR_BAD_FRAME, "the first frame must be HELLO");
		break;
	case GW_CONN_AUTH:
		gw_conn_close(c, PROTO_ERR_BAD_FRAME, "wait for WELCOME before sending");
		break;
	case GW_CONN_READY:
		handle_ready(c, f);
		break;
	case GW_CONN_CLOSING:
		break;
	}
}

/* Decode and handle every whole frame in @p; returns the bytes used. */
static size_t decode_all(struct gw_conn *c, const uint8_t *p, size_t len)
{
	size_t max = c->w->gw->cfg->gateway.max_frame;
	struct proto_frame f;
	size_t off = 0, used;
	enum ferry_err rc;

	while (off < len && c->state != GW_CONN_CLOSING) {
		rc = proto_decode(p + off, len - off, max, &f, &used);
		if (rc == FERRY_ETOOBIG) {
			gw_conn_close(c, PROTO_ERR_TOO_LARGE, "frame over max_frame");
			return len;
		}
		if (rc) {
			gw_conn_close(c, PROTO_ERR_BAD_FRAME, "malformed frame");
			return len;
		}
		if (used == 0)
			break;
		gw_stat(c->w, GW_ST_FRAMES_IN, 1);
		handle_frame(c, &f);
		off += used;
	}
	return c->state == GW_CONN_CLOSING ? len : off;
}

/* Feed plaintext bytes: complete a partial frame first, then decode in place. */
static void consume(struct gw_conn *c, const uint8_t *p, size_t len)
{
	size_t used;

	if (c->in.len) {
		if (buf_append(&c->in, p, len)) {
			gw_conn_close(c, PROTO_ERR_TOO_LARGE, "frame over max_frame");
			return;
		}
		used = decode_all(c, (const uint8_t *)c->in.data, c->in.len);
		if (c->state == GW_CONN_CLOSING || used == c->in.len) {
			buf_release(&c->in);
			return;
		}
		memmove(c->in.data, c->in.data + used, c->in.len - used);
		c->in.len -= used;
		return;
	}
	used = decode_all(c, p, len);
	if (used < len && buf_append(&c->in, p + used, len - used))
		gw_conn_close(c, PROTO_ERR_TOO_LARGE, "frame over max_frame");
}

static void read_tls(struct gw_conn *c, const uint8_t *p, size_t len)
{
	int n, e;

	if (BIO_write(c->rbio, p, (int)len) != (int)len) {
		gw_conn_close(c, 0, NULL);
		return;
	}
	while (c->state != GW_CONN_CLOSING) {
		n = SSL_read(c->ssl, c->w->plain, GW_READ_CHUNK);
		if (n > 0) {
			consume(c, c->w->plain, (size_t)n);
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		ERR_clear_error();
		if (e != SSL_ERROR_WANT_READ) {
			gw_conn_close(c, 0, NULL);
			return;
		}
		break;
	}
	flush_tls(c); /* handshake records, alerts */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct gw_conn *c = h->data;

	*b = uv_buf_init((char *)c->w->rbuf, GW_READ_CHUNK);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct gw_conn *c = s->data;

	if (nread < 0) {
		gw_conn_close(c, 0, NULL);
		return;
	}
	if (nread == 0)
		return;
	c->last_rx = uv_now(&c->w->loop);
	gw_stat(c->w, GW_ST_BYTES_IN, (uint64_t)nread);
	if (c->ssl)
		read_tls(c, (const uint8_t *)b->base, (size_t)nread);
	else
		consume(c, (const uint8_t *)b->base, (size_t)nread);
}

/* ---- back-pressure ---- */

void gw_conn_pause(struct gw_conn *c)
{
	if (c->paused || c->state == GW_CONN_CLOSING)
		return;
	c->paused = 1;
	uv_read_stop((uv_stream_t *)&c->tcp);
}

void gw_conn_resume(struct gw_conn *c)
{
	if (!c->paused || c->state == GW_CONN_CLOSING)
		return;
	c->paused = 0;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
		gw_conn_close(c, 0, NULL);
}

/* ---- accepting ---- */

static int setup_tls(struct gw_conn *c)
{
	c->ssl = gw_tls_new_ssl(c->w->gw);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		return -1;
	}
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_accept_state(c->ssl);
	return 0;
}

void gw_conn_accept(struct gw_worker *w, int fd, int tls)
{
	struct gateway *gw = w->gw;
	const struct ferry_config *cfg = gw->cfg;
	struct gw_conn *c = calloc(1, sizeof(*c));
	unsigned n;

	if (!c) {
		close(fd);
		return;
	}
	c->w = w;
	c->id = atomic_fetch_add(&gw->next_conn_id, 1) + 1;
	c->refs = 2;
	c->tcp.data = c->timer.data = c;
	/* Room for the largest frame, its length prefix and one more read. */
	buf_init(&c->in, cfg->gateway.max_frame + PROTO_MAX_LENGTH_PREFIX + GW_READ_CHUNK);
	uv_tcp_init(&w->loop, &c->tcp);
	uv_timer_init(&w->loop, &c->timer);
	HASH_ADD(hh, w->conns, id, sizeof(c->id), c);
	if (uv_tcp_open(&c->tcp, fd)) {
		close(fd);
		c->state = GW_CONN_CLOSING;
		close_handles(c);
		return;
	}
	c->state = GW_CONN_HANDSHAKE;
	n = atomic_fetch_add(&gw->connections, 1) + 1;
	c->counted = 1;
	gw_stat(w, GW_ST_CONNS, 1);
	gw_stat(w, GW_ST_ACCEPTS, 1);
	for (unsigned peak = atomic_load(&gw->peak_connections); n > peak;)
		if (atomic_compare_exchange_weak(&gw->peak_connections, &peak, n))
			break;
	c->accepted = c->last_rx = uv_now(&w->loop);
	c->bucket_at = (uint32_t)c->accepted;
	c->bucket = cfg->gateway.frames_burst * 1000u;
	if (tls && setup_tls(c)) {
		gw_conn_close(c, 0, NULL);
		return;
	}
	if (n > cfg->gateway.max_connections) {
		gw_conn_close(c, PROTO_ERR_OVERLOADED, "too many connections");
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_tcp_keepalive(&c->tcp, 1, 60);
	arm_timer(c);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
		gw_conn_close(c, 0, NULL);
}
