/*
 * client.c - libferry's public API (ferry.h): create and free a client, run
 * its event loop, queue and cancel SENDs and RECEIPTs.
 *
 * The loop is the application's: ferry_client_run() alternates one step of
 * work that needs no waiting (timers, frames left in the read buffer, acks,
 * the SEND pump, writing) with one poll(2) on the connection's socket,
 * bounded by the next timer and the caller's deadline. The socket is
 * non-blocking, so no step ever waits inside a system call but poll itself
 * (getaddrinfo excepted, see net.c); ferry_client_stop() sets a flag the loop
 * checks between steps, and a signal interrupting poll ends the wait at once.
 *
 * Ownership: the client owns copies of its configuration (the secret wiped on
 * free), its connection, its send queue (SENDs and RECEIPTs) and dedup
 * window. The application's buffers are borrowed for the duration of a call
 * only. No global state.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client/client_int.h"
#include "common/log.h"
#include "common/banned.h"

/* A payload any server could take: the largest max_frame less the headroom. */
#define MAX_ANY_PAYLOAD (PROTO_MAX_MAX_FRAME - PROTO_PAYLOAD_HEADROOM)

static enum ferry_err check_config(const struct ferry_config *cfg, char *err, size_t errlen)
{
	const char *what = NULL;

	if (!cfg->host || !*cfg->host)
		what = "the server's host is missing";
	else if (!cfg->port || !*cfg->port)
		what = "the server's port is missing";
	else if (cfg->device_id < 1)
		what = "the device id must be at least 1";
	else if (!cfg->secret || cfg->secret_len < 1 || cfg->secret_len > PROTO_MAX_SECRET)
		what = "the device secret must be 1 to 256 bytes";
	else if (cfg->dedup_window > FERRY_MAX_DEDUP_WINDOW)
		what = "the dedup window is over its maximum";
	else if (!cfg->tls && (cfg->ca_file || cfg->server_name))
		what = "a CA file or server name needs TLS";
	if (!what)
		return FERRY_OK;
	snprintf(err, errlen, "%s", what);
	return FERRY_EINVAL;
}

static char *dup_or_null(const char *s, int *failed)
{
	char *p;

	if (!s)
		return NULL;
	p = strdup(s);
	if (!p)
		*failed = 1;
	return p;
}

static void set_limits(struct ferry_client *c, const struct ferry_config *cfg)
{
	c->backoff_base =
		cfg->backoff_base_ms ? cfg->backoff_base_ms : FERRY_DEFAULT_BACKOFF_BASE_MS;
	c->backoff_cap = cfg->backoff_cap_ms ? cfg->backoff_cap_ms : FERRY_DEFAULT_BACKOFF_CAP_MS;
	c->connect_timeout = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
						     : FERRY_DEFAULT_CONNECT_TIMEOUT_MS;
	fc_sendq_init(&c->sendq, cfg->max_queue ? cfg->max_queue : FERRY_DEFAULT_MAX_QUEUE,
		      cfg->max_queue_bytes ? cfg->max_queue_bytes : FERRY_DEFAULT_MAX_QUEUE_BYTES);
	c->next_client_id = cfg->first_client_id ? cfg->first_client_id : fc_wallclock_us();
}

enum ferry_err ferry_client_new(const struct ferry_config *cfg, const struct ferry_callbacks *cb,
				void *arg, struct ferry_client **out, char *err, size_t errlen)
{
	char dummy[FC_ERR_MAX];
	struct ferry_client *c;
	enum ferry_err rc;
	int failed = 0;

	if (!err) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	*out = NULL;
	rc = check_config(cfg, err, errlen);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->fd = -1;
	c->state = FC_IDLE;
	buf_init(&c->wbuf, FC_WBUF_MAX);
	c->host = dup_or_null(cfg->host, &failed);
	c->port = dup_or_null(cfg->port, &failed);
	c->server_name = dup_or_null(cfg->server_name, &failed);
	c->device_id = cfg->device_id;
	memcpy(c->secret, cfg->secret, cfg->secret_len);
	c->secret_len = cfg->secret_len;
	if (cb)
		c->cb = *cb;
	c->arg = arg;
	c->rng = fc_rng_seed();
	set_limits(c, cfg);
	if (failed)
		goto nomem;
	rc = fc_dedup_init(&c->dedup,
			   cfg->dedup_window ? cfg->dedup_window : FERRY_DEFAULT_DEDUP_WINDOW);
	if (rc)
		goto nomem;
	if (cfg->tls) {
		c->tls = fc_tls_context(cfg->ca_file, err, errlen);
		if (!c->tls) {
			ferry_client_free(c);
			return FERRY_ECONFIG;
		}
	}
	*out = c;
	return FERRY_OK;
nomem:
	ferry_client_free(c);
	snprintf(err, errlen, "out of memory");
	return FERRY_ENOMEM;
}

void ferry_client_free(struct ferry_client *c)
{
	if (!c)
		return;
	fc_conn_close(c);
	fc_sendq_release(&c->sendq);
	fc_dedup_release(&c->dedup);
	SSL_CTX_free(c->tls);
	OPENSSL_cleanse(c->secret, sizeof(c->secret));
	free(c->host);
	free(c->port);
	free(c->server_name);
	free(c);
}

/* ---- the loop ---- */

/* Everything that can progress without waiting. */
static void step(struct ferry_client *c)
{
	fc_timers(c, fc_now_ms());
	if (c->state != FC_READY && c->state != FC_HELLO)
		return;
	if (c->rlen && !c->stop)
		fc_handle_frames(c);
	fc_acks_flush(c);
	fc_sends_pump(c, fc_now_ms());
	fc_conn_write(c);
}

static short poll_events(const struct ferry_client *c)
{
	short ev = 0;

	switch (c->state) {
	case FC_CONNECTING:
		return POLLOUT;
	case FC_TLS:
		return c->hs_want;
	case FC_HELLO:
	case FC_READY:
		if (!c->rx_blocked)
			ev |= c->rd_want;
		if (c->woff < c->wbuf.len)
			ev |= c->wr_want;
		return ev;
	default:
		return 0;
	}
}

static void on_io(struct ferry_client *c)
{
	switch (c->state) {
	case FC_CONNECTING:
		fc_conn_on_connect(c);
		return;
	case FC_TLS:
		fc_conn_tls_step(c);
		return;
	case FC_HELLO:
	case FC_READY:
		break;
	default:
		return;
	}
	fc_conn_write(c);
	if (fc_conn_open(c) && !c->stop)
		fc_handle_frames(c); /* what waited for write room */
	if (fc_conn_open(c) && !c->stop && !c->rx_blocked)
		fc_conn_read(c);
	fc_acks_flush(c);
	fc_sends_pump(c, fc_now_ms());
	fc_conn_write(c);
}

static enum ferry_err wait_once(struct ferry_client *c, uint64_t end)
{
	struct pollfd p = { .fd = c->fd, .events = poll_events(c) };
	uint64_t now = fc_now_ms(), until = fc_next_timer(c);
	int wait, n;

	if (end < until)
		until = end;
	wait = until <= now ? 0 : until - now > INT_MAX ? INT_MAX : (int)(until - now);
	if (c->rx_more && !c->rx_blocked)
		wait = 0;
	n = poll(&p, c->fd >= 0 ? 1 : 0, wait);
	if (n < 0) {
		if (errno == EINTR)
			return FERRY_OK;
		log_error("event=client_poll_failed errno=%d", errno);
		return FERRY_EIO;
	}
	c->rx_more = 0;
	if (n > 0)
		on_io(c);
	return FERRY_OK;
}

enum ferry_err ferry_client_run(struct ferry_client *c, int timeout_ms)
{
	uint64_t end = timeout_ms < 0 ? UINT64_MAX : fc_add_ms(fc_now_ms(), (uint64_t)timeout_ms);
	enum ferry_err rc = FERRY_OK;
	int waited = 0;

	if (c->in_run)
		return FERRY_EINVAL;
	c->in_run = 1;
	for (;;) {
		if (c->state != FC_FINAL && !c->stop)
			step(c);
		if (c->state == FC_FINAL) {
			rc = FERRY_EAUTH;
			break;
		}
		if (c->stop) {
			c->stop = 0;
			break;
		}
		if (waited && fc_now_ms() >= end)
			break;
		rc = wait_once(c, end);
		if (rc)
			break;
		waited = 1;
	}
	c->in_run = 0;
	return rc;
}

void ferry_client_stop(struct ferry_client *c)
{
	c->stop = 1;
}

/* ---- sending ---- */

/* Length field of an encoded frame of @len bytes (their sizes determine each other). */
static size_t body_len(size_t len)
{
	for (size_t k = 1; k <= PROTO_MAX_LENGTH_PREFIX && k < len; k++) {
		if (proto_varint_size(len - k) == k)
			return len - k;
	}
	return len;
}

/*
 * Encode @f (a SEND or a RECEIPT, its type set) under the next client id and
 * queue it. Both share the counter and the queue: the server answers either
 * with ACK or NACK naming the client id.
 */
static enum ferry_err queue_frame(struct ferry_client *c, struct proto_frame *f, size_t max_payload,
				  uint64_t *client_id)
{
	uint64_t id = c->next_client_id;
	size_t size, len;
	uint8_t *frame;
	enum ferry_err rc;

	if (c->state == FC_FINAL)
		return FERRY_EAUTH;
	if (f->type == PROTO_SEND)
		f->u.send.client_id = id;
	else
		f->u.receipt.id = id;
	size = proto_encoded_size(f);
	if (!size)
		return FERRY_EINVAL;
	if (body_len(size) > PROTO_MAX_MAX_FRAME)
		return FERRY_ETOOBIG;
	frame = malloc(size);
	if (!frame)
		return FERRY_ENOMEM;
	rc = proto_encode(f, frame, size, &len);
	if (rc == FERRY_OK)
		rc = fc_sendq_add(&c->sendq, id, frame, len, body_len(len), max_payload);
	free(frame);
	if (rc)
		return rc;
	c->next_client_id++;
	if (client_id)
		*client_id = id;
	log_debug("event=client_queued device=%" PRIu64 " type=%s client_id=%" PRIu64 " bytes=%zu",
		  c->device_id, proto_type_name(f->type), id, len);
	return FERRY_OK;
}

static int user_ok(const char *user)
{
	return user && proto_user_valid((const uint8_t *)user, strlen(user));
}

enum ferry_err ferry_client_send(struct ferry_client *c, const char *to_user, uint32_t ttl,
				 const void *payload, size_t len, uint64_t *client_id)
{
	struct proto_frame f = { .type = PROTO_SEND };

	if (!user_ok(to_user) || (!payload && len))
		return FERRY_EINVAL;
	if (len > MAX_ANY_PAYLOAD)
		return FERRY_ETOOBIG;
	f.u.send.to_user = (struct proto_bytes){ (const uint8_t *)to_user, strlen(to_user) };
	f.u.send.ttl = ttl;
	f.u.send.ntargets = 0;
	f.u.send.payload = (struct proto_bytes){ len ? payload : (const uint8_t *)"", len };
	return queue_frame(c, &f, len, client_id);
}

enum ferry_err ferry_client_send_each(struct ferry_client *c, const char *to_user, uint32_t ttl,
				      const struct ferry_target *targets, size_t n,
				      uint64_t *client_id)
{
	struct proto_frame f = { .type = PROTO_SEND };
	size_t max_payload = 0, total = 0;

	if (!user_ok(to_user) || !targets || n < 1 || n > PROTO_MAX_TARGETS)
		return FERRY_EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct ferry_target *t = &targets[i];

		if (t->device_id < 1 || (!t->payload && t->payload_len))
			return FERRY_EINVAL;
		for (size_t j = 0; j < i; j++) {
			if (targets[j].device_id == t->device_id)
				return FERRY_EINVAL;
		}
		if (t->payload_len > MAX_ANY_PAYLOAD || t->payload_len > MAX_ANY_PAYLOAD - total)
			return FERRY_ETOOBIG;
		total += t->payload_len;
		if (t->payload_len > max_payload)
			max_payload = t->payload_len;
		f.u.send.targets[i].device_id = t->device_id;
		f.u.send.targets[i].payload =
			(struct proto_bytes){ t->payload_len ? t->payload : (const uint8_t *)"",
					      t->payload_len };
	}
	f.u.send.to_user = (struct proto_bytes){ (const uint8_t *)to_user, strlen(to_user) };
	f.u.send.ttl = ttl;
	f.u.send.ntargets = n;
	return queue_frame(c, &f, max_payload, client_id);
}

enum ferry_err ferry_client_read(struct ferry_client *c, const char *peer_user,
				 uint64_t peer_device, const uint64_t *ids, size_t n,
				 uint64_t *client_id)
{
	struct proto_frame f = { .type = PROTO_RECEIPT };

	if (!user_ok(peer_user) || !ids || n < 1 || n > PROTO_MAX_IDS)
		return FERRY_EINVAL;
	f.u.receipt.kind = PROTO_RECEIPT_READ;
	f.u.receipt.peer_user =
		(struct proto_bytes){ (const uint8_t *)peer_user, strlen(peer_user) };
	f.u.receipt.device = peer_device;
	f.u.receipt.count = n;
	memcpy(f.u.receipt.ids, ids, n * sizeof(ids[0]));
	return queue_frame(c, &f, 0, client_id);
}

enum ferry_err ferry_client_cancel(struct ferry_client *c, uint64_t client_id)
{
	struct fc_send *s = fc_sendq_find(&c->sendq, client_id);

	if (!s)
		return FERRY_ENOTFOUND;
	fc_sendq_unlink(&c->sendq, s);
	free(s);
	return FERRY_OK;
}

/* ---- getters ---- */

size_t ferry_client_queued(const struct ferry_client *c)
{
	return c->sendq.count;
}

int ferry_client_ready(const struct ferry_client *c)
{
	return c->state == FC_READY;
}

int ferry_client_caught_up(const struct ferry_client *c)
{
	return c->state == FC_READY && c->caught_up;
}

const char *ferry_client_last_error(const struct ferry_client *c)
{
	return c->last_error;
}
