/*
 * handle.c - what a libferry client does with each frame from the server,
 * and the two flows that feed the write buffer in between: acknowledgements
 * of deliveries and queued SENDs and RECEIPTs.
 *
 * Frames: only WELCOME or ERROR may come before WELCOME; HELLO, SEND,
 * DELIVER_ACK and RECEIPT never come from a server. Anything else out of
 * place, and anything the codec refuses, is a protocol violation: ERROR
 * back, close, reconnect.
 *
 * Deliveries: a DELIVER reaches the application once per (sender device,
 * client id) within the dedup window; the library acknowledges every copy.
 * Acks collect in ack_pending while one DELIVER_ACK (ack_inflight) is being
 * written; when it has gone to the socket, deliver_acked reports it and the
 * pending ones go out as the next frame. So the acks of one read leave as
 * one frame, and at most two batches are held. A frame is only taken from
 * the read buffer when its answer has room (an ack slot, a PONG's bytes);
 * otherwise reading pauses until writing catches up (rx_blocked).
 *
 * Receipts: a DELIVER_RECEIPT is an envelope to acknowledge like a DELIVER,
 * through the same ack slots (so the batching, the room checks and the
 * QUEUE_EMPTY barrier below hold for it too), but it is handed to the
 * receipt callback every time it comes and never enters the dedup window:
 * applying a receipt is idempotent, and the window is keyed by the sender's
 * (device, client id), which a receipt does not have.
 *
 * Catch-up: QUEUE_EMPTY ends the stored envelopes. It is a barrier: it is
 * taken from the read buffer only when no acknowledgement is pending or
 * being written, so queue_empty runs after deliver_acked has reported every
 * envelope before it, and an application that stops there (ferry-client
 * listen --until-empty) has acknowledged everything it was given. Reading
 * pauses meanwhile, for as long as one DELIVER_ACK takes to go out; the
 * server's window of un-acknowledged envelopes is drained by these prompt,
 * batched acknowledgements.
 *
 * SENDs and RECEIPTs (one queue, one client id space, both answered by ACK
 * or NACK): the pump writes queued entries in order while the write buffer
 * has room beyond FC_WBUF_CONTROL, which stays free for control frames. An
 * entry over the server's announced limits is answered here with a final
 * too_large NACK, since writing it would get the connection closed.
 *
 * Callbacks: an entry is taken out of the queue before its callback runs and
 * nothing of the queue is held across a callback, so a callback may send,
 * cancel or stop. Decoded frames point into rbuf and are used only until the
 * next frame is decoded.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "common/log.h"
#include "common/banned.h"

/* PONG or PING: length, type, a nonce varint. */
#define CONTROL_FRAME_MAX (1 + 1 + PROTO_MAX_VARINT)

/* ---- acknowledgements ---- */

void fc_acks_report(struct ferry_client *c)
{
	size_t n = c->n_inflight;

	if (!n || c->wr_total < c->inflight_end)
		return;
	c->n_inflight = 0; /* ack_inflight is not touched again before the callback returns */
	if (c->cb.deliver_acked)
		c->cb.deliver_acked(c->arg, c->ack_inflight, n);
}

void fc_acks_flush(struct ferry_client *c)
{
	struct proto_frame f = { .type = PROTO_DELIVER_ACK };

	fc_acks_report(c);
	if (c->n_inflight || !c->n_pending || c->state != FC_READY)
		return;
	f.u.ids.count = c->n_pending;
	for (size_t i = 0; i < c->n_pending; i++)
		f.u.ids.ids[i] = c->ack_pending[i].server_id;
	if (fc_conn_queue(c, &f) != FERRY_OK)
		return; /* no room yet: after the next write */
	memcpy(c->ack_inflight, c->ack_pending, c->n_pending * sizeof(c->ack_pending[0]));
	c->n_inflight = c->n_pending;
	c->n_pending = 0;
	c->inflight_end = c->wq_total;
}

/* Whether any frame's answer fits now. */
static int can_take_frame(struct ferry_client *c)
{
	if (c->n_pending == PROTO_MAX_IDS)
		fc_acks_flush(c);
	return c->n_pending < PROTO_MAX_IDS && fc_conn_room(c, CONTROL_FRAME_MAX);
}

/* ---- SENDs ---- */

/* A SEND or RECEIPT the server would refuse by closing the connection: answer it here. */
static void reject_too_large(struct ferry_client *c, struct fc_send *s)
{
	uint64_t id = s->client_id;
	char text[FC_TEXT_MAX];

	snprintf(text, sizeof(text), "over the server's frame limit of %zu bytes", c->max_frame);
	fc_sendq_unlink(&c->sendq, s);
	free(s);
	log_info("event=client_send_too_large device=%" PRIu64 " client_id=%" PRIu64, c->device_id,
		 id);
	if (c->cb.send_nacked)
		c->cb.send_nacked(c->arg, id, PROTO_NACK_TOO_LARGE, text, 1);
}

void fc_sends_pump(struct ferry_client *c, uint64_t now)
{
	struct fc_send *s;

	if (c->state != FC_READY)
		return;
	s = fc_sendq_ready(&c->sendq, NULL, now);
	while (s && c->state == FC_READY) {
		if (s->body_len > c->max_frame ||
		    s->max_payload > c->max_frame - PROTO_PAYLOAD_HEADROOM) {
			reject_too_large(c, s);
			s = fc_sendq_ready(&c->sendq, NULL,
					   now); /* the callback may have changed it */
			continue;
		}
		if (!fc_conn_room(c, s->len + FC_WBUF_CONTROL) ||
		    fc_conn_queue_raw(c, s->frame, s->len) != FERRY_OK)
			break;
		s->state = FC_SEND_INFLIGHT;
		log_debug("event=client_send device=%" PRIu64 " client_id=%" PRIu64 " bytes=%zu",
			  c->device_id, s->client_id, s->len);
		s = fc_sendq_ready(&c->sendq, s->next, now);
	}
}

/* ---- frames ---- */

static void on_welcome(struct ferry_client *c, const struct proto_welcome *w)
{
	struct ferry_welcome pub = { w->server_time, w->pending, w->max_frame, w->idle_timeout };
	size_t accept =
		w->max_frame > PROTO_DEFAULT_MAX_FRAME ? w->max_frame : PROTO_DEFAULT_MAX_FRAME;
	size_t need = accept + PROTO_MAX_LENGTH_PREFIX + FC_RBUF_HEADROOM;
	uint64_t now = fc_now_ms();

	if (w->max_frame < PROTO_MIN_MAX_FRAME || w->max_frame > PROTO_MAX_MAX_FRAME) {
		fc_conn_violation(c, PROTO_ERR_BAD_FRAME,
				  "WELCOME's max_frame %" PRIu64 " is out of range", w->max_frame);
		return;
	}
	if (need > c->rcap) {
		uint8_t *p = realloc(c->rbuf, need);

		if (!p) {
			fc_conn_lost(c, FERRY_ENOMEM, 0, "out of memory for the read buffer");
			return;
		}
		c->rbuf = p;
		c->rcap = need;
	}
	c->max_frame = (size_t)w->max_frame;
	c->wlimit = 2 * (c->max_frame + PROTO_MAX_LENGTH_PREFIX) + FC_WBUF_CONTROL;
	c->ping_ms = w->idle_timeout ? w->idle_timeout / 3 : FC_DEFAULT_PING_MS;
	if (c->ping_ms < FC_MIN_PING_MS)
		c->ping_ms = FC_MIN_PING_MS;
	c->dead_ms = w->idle_timeout ? w->idle_timeout : 3 * FC_DEFAULT_PING_MS;
	if (c->dead_ms < 2 * c->ping_ms)
		c->dead_ms = 2 * c->ping_ms;
	c->next_ping = fc_add_ms(now, c->ping_ms);
	c->last_rx = now;
	c->state = FC_READY;
	c->caught_up = 0;
	c->attempt = 0;
	c->last_error[0] = '\0';
	log_info("event=client_connected device=%" PRIu64 " pending=%" PRIu64 " max_frame=%zu"
		 " idle_ms=%" PRIu64,
		 c->device_id, w->pending, c->max_frame, w->idle_timeout);
	if (c->cb.connected)
		c->cb.connected(c->arg, &pub);
}

static void on_ack(struct ferry_client *c, const struct proto_ack *a)
{
	struct fc_send *s = fc_sendq_find(&c->sendq, a->client_id);

	if (!s) {
		log_debug("event=client_ack_unknown device=%" PRIu64 " client_id=%" PRIu64,
			  c->device_id, a->client_id);
		return;
	}
	fc_sendq_unlink(&c->sendq, s);
	free(s);
	if (c->cb.send_acked)
		c->cb.send_acked(c->arg, a->client_id, a->server_id, a->status);
}

static void on_nack(struct ferry_client *c, const struct proto_nack *n)
{
	struct fc_send *s = fc_sendq_find(&c->sendq, n->client_id);
	int final = fc_nack_is_final(n->reason);
	char text[FC_TEXT_MAX];

	if (!s) {
		log_debug("event=client_nack_unknown device=%" PRIu64 " client_id=%" PRIu64,
			  c->device_id, n->client_id);
		return;
	}
	fc_text_copy(text, sizeof(text), n->text.p, n->text.len);
	log_info("event=client_nack device=%" PRIu64 " client_id=%" PRIu64 " reason=%s final=%d",
		 c->device_id, n->client_id, proto_nack_name(n->reason), final);
	if (final) {
		fc_sendq_unlink(&c->sendq, s);
		free(s);
	} else {
		fc_sendq_wait(s, fc_now_ms(),
			      fc_backoff_ms(c->backoff_base, c->backoff_cap, s->attempts,
					    fc_rng_next(&c->rng)));
		if (s->attempts < 64)
			s->attempts++;
	}
	if (c->cb.send_nacked)
		c->cb.send_nacked(c->arg, n->client_id, n->reason, text, final);
}

static void on_deliver(struct ferry_client *c, const struct proto_deliver *d)
{
	char user[PROTO_MAX_USER + 1];
	struct ferry_envelope env;

	if (!fc_dedup_seen(&c->dedup, d->sender_device, d->client_id)) {
		fc_text_copy(user, sizeof(user), d->sender_user.p, d->sender_user.len);
		env = (struct ferry_envelope){ d->server_id,  user,	    d->sender_device,
					       d->client_id,  d->timestamp, d->payload.p,
					       d->payload.len };
		if (!c->cb.deliver || c->cb.deliver(c->arg, &env) != 0)
			return; /* not safe with the application: the server keeps it */
		fc_dedup_add(&c->dedup, d->sender_device, d->client_id);
	} else {
		log_debug("event=client_duplicate device=%" PRIu64 " server_id=%" PRIu64,
			  c->device_id, d->server_id);
	}
	c->ack_pending[c->n_pending++] =
		(struct ferry_acked){ d->server_id, d->sender_device, d->client_id, 0 };
}

static void on_deliver_receipt(struct ferry_client *c, const struct proto_receipt *m)
{
	char peer[PROTO_MAX_USER + 1];
	struct ferry_receipt r;

	fc_text_copy(peer, sizeof(peer), m->peer_user.p, m->peer_user.len);
	r = (struct ferry_receipt){ m->id, m->kind, peer, m->device, m->ids, m->count };
	if (!c->cb.receipt || c->cb.receipt(c->arg, &r) != 0)
		return; /* not applied: the server keeps it */
	c->ack_pending[c->n_pending++] =
		(struct ferry_acked){ .server_id = m->id, .receipt_kind = m->kind };
}

static void on_queue_empty(struct ferry_client *c, uint64_t drained)
{
	c->caught_up = 1;
	log_info("event=client_caught_up device=%" PRIu64 " drained=%" PRIu64, c->device_id,
		 drained);
	if (c->cb.queue_empty)
		c->cb.queue_empty(c->arg, drained);
}

static void on_error(struct ferry_client *c, const struct proto_error *e)
{
	char text[FC_TEXT_MAX];
	int final = fc_error_is_final(e->code);
	const char *name = proto_error_name(e->code);

	fc_text_copy(text, sizeof(text), e->text.p, e->text.len);
	log_info("event=client_server_error device=%" PRIu64 " code=%s final=%d text=\"%s\"",
		 c->device_id, name, final, text);
	if (e->code == PROTO_ERR_NOT_IMPLEMENTED) {
		if (c->cb.server_error)
			c->cb.server_error(c->arg, e->code, text, 0);
		return;
	}
	if (final) {
		fc_conn_final(c);
		snprintf(c->last_error, sizeof(c->last_error), "the server refused: %s: %s", name,
			 text);
	} else {
		fc_conn_lost(c, FERRY_EIO, 0, "the server closed the connection: %s: %s", name,
			     text);
	}
	if (c->cb.server_error)
		c->cb.server_error(c->arg, e->code, text, final);
}

static void on_ping(struct ferry_client *c, uint64_t nonce)
{
	struct proto_frame f = { .type = PROTO_PONG, .u.nonce = nonce };

	if (fc_conn_queue(c, &f) != FERRY_OK) /* can_take_frame() made room */
		ferry_panic("client: no room for PONG");
}

static void on_ready_frame(struct ferry_client *c, const struct proto_frame *f)
{
	switch (f->type) {
	case PROTO_ACK:
		on_ack(c, &f->u.ack);
		break;
	case PROTO_NACK:
		on_nack(c, &f->u.nack);
		break;
	case PROTO_DELIVER:
		on_deliver(c, &f->u.deliver);
		break;
	case PROTO_DELIVER_RECEIPT:
		on_deliver_receipt(c, &f->u.receipt);
		break;
	case PROTO_PING:
		on_ping(c, f->u.nonce);
		break;
	case PROTO_PONG:
		break; /* reading it was the point */
	case PROTO_QUEUE_EMPTY:
		on_queue_empty(c, f->u.drained);
		break;
	case PROTO_RECONNECT:
		fc_conn_lost(c, FERRY_EIO, f->u.reconnect_after,
			     "the server asked to reconnect after %" PRIu64 " ms",
			     f->u.reconnect_after);
		break;
	default:
		fc_conn_violation(c, PROTO_ERR_BAD_FRAME, "unexpected %s frame",
				  proto_type_name(f->type));
		break;
	}
}

static void on_frame(struct ferry_client *c, const struct proto_frame *f)
{
	log_debug("event=client_frame device=%" PRIu64 " type=%s", c->device_id,
		  proto_type_name(f->type));
	if (f->type == PROTO_ERROR)
		on_error(c, &f->u.error);
	else if (f->type == PROTO_WELCOME && c->state == FC_HELLO)
		on_welcome(c, &f->u.welcome);
	else if (c->state == FC_READY && f->type != PROTO_WELCOME)
		on_ready_frame(c, f);
	else
		fc_conn_violation(c, PROTO_ERR_BAD_FRAME, "unexpected %s frame %s WELCOME",
				  proto_type_name(f->type),
				  c->state == FC_READY ? "after" : "before");
}

void fc_handle_frames(struct ferry_client *c)
{
	struct proto_frame f;
	size_t off = 0, used, max;
	enum ferry_err rc;

	c->rx_blocked = 0;
	while (fc_conn_open(c) && off < c->rlen && !c->stop) {
		if (!can_take_frame(c)) {
			c->rx_blocked = 1;
			break;
		}
		max = c->max_frame > PROTO_DEFAULT_MAX_FRAME ? c->max_frame
							     : PROTO_DEFAULT_MAX_FRAME;
		rc = proto_decode(c->rbuf + off, c->rlen - off, max, &f, &used);
		if (rc == FERRY_ETOOBIG) {
			fc_conn_violation(c, PROTO_ERR_TOO_LARGE, "frame over %zu bytes", max);
			return;
		}
		if (rc) {
			fc_conn_violation(c, PROTO_ERR_BAD_FRAME, "malformed frame");
			return;
		}
		if (!used)
			break;
		if (f.type == PROTO_QUEUE_EMPTY && c->state == FC_READY &&
		    (c->n_pending || c->n_inflight)) {
			c->rx_blocked = 1; /* after the acks of what came before it */
			break;
		}
		off += used;
		on_frame(c, &f); /* may close the connection, which frees rbuf */
	}
	if (!fc_conn_open(c) || !off)
		return;
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

/* ---- timers ---- */

void fc_timers(struct ferry_client *c, uint64_t now)
{
	struct proto_frame f = { .type = PROTO_PING };

	switch (c->state) {
	case FC_IDLE:
		if (now >= c->reconnect_at)
			fc_conn_start(c);
		break;
	case FC_CONNECTING:
	case FC_TLS:
	case FC_HELLO:
		if (now >= c->deadline)
			fc_conn_lost(c, FERRY_EIO, 0,
				     "no WELCOME from '%s:%s' within %" PRIu64 " ms", c->host,
				     c->port, c->connect_timeout);
		break;
	case FC_READY:
		if (now > c->last_rx && now - c->last_rx >= c->dead_ms) {
			fc_conn_lost(c, FERRY_EIO, 0, "nothing from the server for %" PRIu64 " ms",
				     now - c->last_rx);
			break;
		}
		if (now >= c->next_ping) {
			f.u.nonce = ++c->ping_nonce;
			if (fc_conn_queue(c, &f) != FERRY_OK)
				log_debug("event=client_ping_skipped device=%" PRIu64,
					  c->device_id);
			c->next_ping = fc_add_ms(now, c->ping_ms);
		}
		fc_sends_pump(c, now);
		break;
	case FC_FINAL:
		break;
	}
}

uint64_t fc_next_timer(const struct ferry_client *c)
{
	uint64_t t;

	switch (c->state) {
	case FC_IDLE:
		return c->reconnect_at;
	case FC_CONNECTING:
	case FC_TLS:
	case FC_HELLO:
		return c->deadline;
	case FC_READY:
		t = fc_add_ms(c->last_rx, c->dead_ms);
		if (c->next_ping < t)
			t = c->next_ping;
		if (fc_sendq_next_retry(&c->sendq) < t)
			t = fc_sendq_next_retry(&c->sendq);
		return t;
	case FC_FINAL:
		break;
	}
	return UINT64_MAX;
}
