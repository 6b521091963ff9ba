/*
 * conn.c - one connection of a libferry client, from connect() to loss.
 *
 * States (client_int.h): IDLE -> CONNECTING -> [TLS] -> HELLO -> READY, and
 * back to IDLE on any loss, or FINAL on a final ERROR. An attempt resolves
 * the name, then tries each address in turn with a non-blocking connect();
 * the whole way to WELCOME is bounded by connect_timeout. Every loss goes
 * through fc_conn_lost(), which closes, puts in-flight SENDs back in the
 * queue for retransmission, and schedules the next attempt with full-jitter
 * backoff.
 *
 * Buffers belong to the connection: the read buffer holds at most one
 * partial frame after processing and is capped at the frame limit plus
 * FC_RBUF_HEADROOM; the write buffer is a struct buf with consumed bytes at
 * its front (woff), capped per connection at wlimit (within FC_WBUF_MAX).
 * Both are freed on close; the write buffer is wiped first, as it held the
 * secret in HELLO. Functions here may call the deliver_acked and disconnected
 * callbacks (through fc_conn_lost and fc_conn_final) and so must be called
 * with nothing of the connection in use.
 */
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "client/client_int.h"
#include "common/log.h"
#include "common/banned.h"

int fc_conn_open(const struct ferry_client *c)
{
	return c->state == FC_HELLO || c->state == FC_READY;
}

static const char *server_name(const struct ferry_client *c)
{
	return c->server_name ? c->server_name : c->host;
}

void fc_conn_close(struct ferry_client *c)
{
	fc_tls_close(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->ai)
		freeaddrinfo(c->ai);
	c->ai = c->ai_next = NULL;
	free(c->rbuf);
	c->rbuf = NULL;
	c->rlen = c->rcap = 0;
	if (c->wbuf.data)
		OPENSSL_cleanse(c->wbuf.data, c->wbuf.alloc);
	buf_release(&c->wbuf);
	c->woff = 0;
	c->wlimit = 0;
	c->wq_total = c->wr_total = 0;
	c->tls_retry = 0;
	c->rx_blocked = c->rx_more = 0;
	c->n_pending = c->n_inflight = 0;
	c->caught_up = 0;
	fc_sendq_requeue(&c->sendq);
	c->state = FC_IDLE;
}

void fc_conn_lost(struct ferry_client *c, enum ferry_err why, uint64_t extra_ms, const char *fmt,
		  ...)
{
	char text[FC_LAST_ERROR_MAX];
	uint64_t delay;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* may quote c->last_error: format first */
	va_end(ap);
	fc_acks_report(c); /* a DELIVER_ACK written whole before the loss did go out */
	fc_conn_close(c);
	delay = fc_backoff_ms(c->backoff_base, c->backoff_cap, c->attempt, fc_rng_next(&c->rng));
	delay = fc_add_ms(delay, extra_ms);
	if (c->attempt < 64)
		c->attempt++;
	c->reconnect_at = fc_add_ms(fc_now_ms(), delay);
	snprintf(c->last_error, sizeof(c->last_error), "%s", text);
	log_info("event=client_disconnected device=%" PRIu64 " retry_ms=%" PRIu64 " reason=\"%s\"",
		 c->device_id, delay, c->last_error);
	if (c->cb.disconnected)
		c->cb.disconnected(c->arg, why, c->last_error, delay);
}

void fc_conn_final(struct ferry_client *c)
{
	fc_acks_report(c);
	fc_conn_close(c);
	c->state = FC_FINAL;
}

/* ---- the write buffer ---- */

int fc_conn_room(const struct ferry_client *c, size_t n)
{
	size_t used = c->wbuf.len - c->woff;

	return used <= c->wlimit && n <= c->wlimit - used;
}

/* Drop written bytes from the front, when that is worth a memmove or needed. */
static void compact(struct ferry_client *c, size_t n)
{
	struct buf *b = &c->wbuf;

	if (!c->woff)
		return;
	if (c->woff < b->len / 2 && b->len + n < b->alloc && b->len + n <= b->cap)
		return;
	memmove(b->data, b->data + c->woff, b->len - c->woff);
	b->len -= c->woff;
	b->data[b->len] = '\0';
	c->woff = 0;
}

enum ferry_err fc_conn_queue_raw(struct ferry_client *c, const uint8_t *p, size_t len)
{
	enum ferry_err rc;

	if (!fc_conn_room(c, len))
		return FERRY_ELIMIT;
	compact(c, len);
	rc = buf_append(&c->wbuf, p, len);
	if (rc)
		return rc;
	c->wq_total += len;
	return FERRY_OK;
}

enum ferry_err fc_conn_queue(struct ferry_client *c, const struct proto_frame *f)
{
	uint8_t tmp[FC_WBUF_CONTROL];
	size_t len;
	enum ferry_err rc = proto_encode(f, tmp, sizeof(tmp), &len);

	if (rc == FERRY_OK)
		rc = fc_conn_queue_raw(c, tmp, len);
	if (f->type == PROTO_HELLO)
		OPENSSL_cleanse(tmp, sizeof(tmp)); /* it held the secret */
	return rc;
}

/* Write until done or the socket would block; the result of the last step. */
static enum fc_io write_some(struct ferry_client *c, char *err, size_t errlen)
{
	while (c->woff < c->wbuf.len) {
		const uint8_t *p = (const uint8_t *)c->wbuf.data + c->woff;
		size_t n = c->wbuf.len - c->woff, put = 0;
		enum fc_io r;

		if (c->ssl) {
			if (c->tls_retry)
				n = c->tls_retry; /* OpenSSL wants the same length again */
			else if (n > FC_TLS_WRITE_CHUNK)
				n = FC_TLS_WRITE_CHUNK;
			r = fc_tls_write(c->ssl, p, n, &put, err, errlen);
			c->tls_retry = r == FC_IO_WANT_READ || r == FC_IO_WANT_WRITE ? n : 0;
		} else {
			r = fc_net_write(c->fd, p, n, &put, err, errlen);
		}
		if (r != FC_IO_DONE)
			return r;
		c->woff += put;
		c->wr_total += put;
	}
	if (c->state == FC_HELLO && c->wbuf.data)
		OPENSSL_cleanse(c->wbuf.data, c->wbuf.len); /* HELLO, with the secret, is out */
	c->woff = 0;
	buf_reset(&c->wbuf);
	return FC_IO_DONE;
}

void fc_conn_write(struct ferry_client *c)
{
	char err[FC_ERR_MAX];
	enum fc_io r;

	if (!fc_conn_open(c))
		return;
	r = write_some(c, err, sizeof(err));
	switch (r) {
	case FC_IO_DONE:
	case FC_IO_WANT_WRITE:
		c->wr_want = POLLOUT;
		break;
	case FC_IO_WANT_READ:
		c->wr_want = POLLIN;
		break;
	case FC_IO_EOF:
		fc_conn_lost(c, FERRY_EIO, 0, "the server closed the connection");
		return;
	case FC_IO_ERROR:
		fc_conn_lost(c, FERRY_EIO, 0, "%s", err);
		return;
	}
	fc_acks_flush(c);
}

void fc_conn_violation(struct ferry_client *c, uint64_t code, const char *fmt, ...)
{
	char text[FC_ERR_MAX], err[FC_ERR_MAX];
	struct proto_frame f = { .type = PROTO_ERROR };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	f.u.error.code = code;
	f.u.error.text = (struct proto_bytes){ (const uint8_t *)text, strlen(text) };
	if (f.u.error.text.len > PROTO_MAX_TEXT)
		f.u.error.text.len = PROTO_MAX_TEXT;
	if (fc_conn_queue(c, &f) == FERRY_OK)
		(void)write_some(c, err, sizeof(err)); /* best effort: closing anyway */
	log_warn("event=client_protocol_error device=%" PRIu64 " reason=\"%s\"", c->device_id,
		 text);
	fc_conn_lost(c, FERRY_EPROTO, 0, "protocol error from the server: %s", text);
}

/* ---- reading ---- */

static enum fc_io read_some(struct ferry_client *c, size_t *got, char *err, size_t errlen)
{
	uint8_t *p = c->rbuf + c->rlen;
	size_t n = c->rcap - c->rlen;

	if (c->ssl)
		return fc_tls_read(c->ssl, p, n, got, err, errlen);
	return fc_net_read(c->fd, p, n, got, err, errlen);
}

void fc_conn_read(struct ferry_client *c)
{
	char err[FC_ERR_MAX];
	size_t got;
	int i;

	for (i = 0; i < FC_READS_PER_WAKE; i++) {
		enum fc_io r;

		if (c->rlen == c->rcap) {
			fc_handle_frames(c);
			if (!fc_conn_open(c) || c->rx_blocked || c->stop || c->rlen == c->rcap)
				return;
		}
		r = read_some(c, &got, err, sizeof(err));
		if (r == FC_IO_DONE) {
			c->rlen += got;
			c->last_rx = fc_now_ms();
			continue;
		}
		if (r == FC_IO_WANT_READ || r == FC_IO_WANT_WRITE) {
			c->rd_want = r == FC_IO_WANT_READ ? POLLIN : POLLOUT;
			break;
		}
		/* Frames before the end may explain it (an ERROR): handle them first. */
		fc_handle_frames(c);
		if (fc_conn_open(c) && r == FC_IO_EOF)
			fc_conn_lost(c, FERRY_EIO, 0, "the server closed the connection");
		else if (fc_conn_open(c))
			fc_conn_lost(c, FERRY_EIO, 0, "%s", err);
		return;
	}
	c->rx_more = i == FC_READS_PER_WAKE;
	fc_handle_frames(c);
}

/* ---- connecting ---- */

static void send_hello(struct ferry_client *c)
{
	struct proto_frame f = { .type = PROTO_HELLO };

	c->rcap = PROTO_DEFAULT_MAX_FRAME + PROTO_MAX_LENGTH_PREFIX + FC_RBUF_HEADROOM;
	c->rbuf = malloc(c->rcap);
	if (!c->rbuf) {
		fc_conn_lost(c, FERRY_ENOMEM, 0, "out of memory for the read buffer");
		return;
	}
	c->rlen = 0;
	c->max_frame = PROTO_DEFAULT_MAX_FRAME;
	c->wlimit = FC_WBUF_CONTROL;
	f.u.hello.version = PROTO_VERSION;
	f.u.hello.device_id = c->device_id;
	f.u.hello.secret = (struct proto_bytes){ c->secret, c->secret_len };
	if (fc_conn_queue(c, &f) != FERRY_OK) {
		fc_conn_lost(c, FERRY_ENOMEM, 0, "cannot queue HELLO");
		return;
	}
	c->state = FC_HELLO;
	c->rd_want = POLLIN;
	c->wr_want = POLLOUT;
	c->last_rx = fc_now_ms();
	log_debug("event=client_hello device=%" PRIu64, c->device_id);
	fc_conn_write(c);
}

static void transport_up(struct ferry_client *c)
{
	char err[FC_ERR_MAX];

	freeaddrinfo(c->ai);
	c->ai = c->ai_next = NULL;
	if (!c->tls) {
		send_hello(c);
		return;
	}
	c->ssl = fc_tls_new(c->tls, c->fd, server_name(c), err, sizeof(err));
	if (!c->ssl) {
		fc_conn_lost(c, FERRY_EIO, 0, "%s", err);
		return;
	}
	c->state = FC_TLS;
	fc_conn_tls_step(c);
}

/* Try the addresses from c->ai_next on; c->attempt_error holds the previous failure. */
static void try_next(struct ferry_client *c)
{
	for (; c->ai_next; c->ai_next = c->ai_next->ai_next) {
		enum fc_io r = fc_net_connect(c->ai_next, &c->fd, c->attempt_error,
					      sizeof(c->attempt_error));

		if (r == FC_IO_WANT_WRITE) {
			c->state = FC_CONNECTING;
			return;
		}
		if (r == FC_IO_DONE) {
			transport_up(c);
			return;
		}
	}
	fc_conn_lost(c, FERRY_EIO, 0, "%s", c->attempt_error);
}

void fc_conn_start(struct ferry_client *c)
{
	char err[FC_ERR_MAX];

	c->deadline = fc_add_ms(fc_now_ms(), c->connect_timeout);
	log_debug("event=client_connecting device=%" PRIu64 " server=%s:%s attempt=%u",
		  c->device_id, c->host, c->port, c->attempt);
	if (fc_net_resolve(c->host, c->port, &c->ai, err, sizeof(err))) {
		fc_conn_lost(c, FERRY_EIO, 0, "%s", err);
		return;
	}
	c->ai_next = c->ai;
	snprintf(c->attempt_error, sizeof(c->attempt_error), "cannot connect to '%s:%s'", c->host,
		 c->port);
	try_next(c);
}

void fc_conn_on_connect(struct ferry_client *c)
{
	char err[FC_ERR_MAX], addr[64];
	enum fc_io r = fc_net_connect_result(c->fd, err, sizeof(err));

	if (r == FC_IO_WANT_WRITE)
		return;
	if (r == FC_IO_DONE) {
		transport_up(c);
		return;
	}
	fc_net_addr_text(c->ai_next, addr, sizeof(addr));
	snprintf(c->attempt_error, sizeof(c->attempt_error), "cannot connect to %s: %s", addr, err);
	close(c->fd);
	c->fd = -1;
	c->ai_next = c->ai_next->ai_next;
	try_next(c);
}

void fc_conn_tls_step(struct ferry_client *c)
{
	char err[FC_ERR_MAX] = "";

	switch (fc_tls_handshake(c->ssl, server_name(c), err, sizeof(err))) {
	case FC_IO_DONE:
		log_debug("event=client_tls_up device=%" PRIu64 " version=%s", c->device_id,
			  SSL_get_version(c->ssl));
		send_hello(c);
		break;
	case FC_IO_WANT_READ:
		c->hs_want = POLLIN;
		break;
	case FC_IO_WANT_WRITE:
		c->hs_want = POLLOUT;
		break;
	case FC_IO_EOF:
	case FC_IO_ERROR:
		fc_conn_lost(c, FERRY_EIO, 0, "TLS with '%s:%s': %s", c->host, c->port, err);
		break;
	}
}
