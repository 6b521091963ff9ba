/*
 * deliver.c - the recipient's side: catch-up from the store, live DELIVERs,
 * DELIVER_ACKs, ack timeouts, QUEUE_EMPTY (docs/internals/delivery.md).
 *
 * A connection whose HELLO checked out registers in presence and then goes
 * through phases:
 *
 *   HANDOVER  it replaced a connection of the same device: that connection's
 *             worker first handles everything posted to it (DELIVERs that
 *             fail there are stored) and closes it, then says TAKEOVER.
 *             DELIVERs arriving meanwhile wait, and are stored after the
 *             old connection's. A connection that closes in this phase
 *             lingers until its TAKEOVER, so that its own successor waits
 *             for the same;
 *   BARRIER   a store BARRIER: every PUT submitted before it (the targets
 *             routed as offline before the device registered, under the
 *             presence lock, and what the old connection stored) commits;
 *   COUNT     WELCOME's pending, then WELCOME;
 *   CATCHUP   FETCH pages after the last sequence sent, at most
 *             [gateway] drain_window stored DELIVERs un-acked; DELIVERs that
 *             arrive meanwhile are not written but stored (PUT by this
 *             worker, in arrival order, behind the backlog). When a FETCH
 *             comes back short, started after every such PUT was answered,
 *             the connection sends QUEUE_EMPTY and goes
 *   LIVE      DELIVERs are written at once and wait [gateway] ack_timeout for
 *             their DELIVER_ACK. One that times out is stored and the
 *             connection goes back to CATCHUP, storing what arrives after
 *             it: the device saw the live copy first, the stored one comes
 *             later and is dropped as a duplicate.
 *
 * Every live DELIVER is answered to its SEND once: acked, stored, full or
 * failed (not stored: the store is down). When the connection closes, live
 * DELIVERs still waiting for their ack are stored.
 *
 * DELIVER_ACKs of stored envelopes (and of ids this connection does not know
 * about: a live envelope that was also stored after its timeout) become
 * batched store DELETEs, one in flight per connection.
 *
 * The store being unavailable never loses anything: a step that fails is
 * retried with back-off; meanwhile what arrives for the device goes to the
 * store and, failing that, back to its sender as "retry later".
 */
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "push/push.h"
#include "common/banned.h"

#define RETRY_MIN_MS 200
#define RETRY_MAX_MS 5000
/* Acknowledged ids not known to the connection kept for a DELETE at most:
 * a device acking ids at random must not grow memory. */
#define UNKNOWN_ACKS_MAX 1024

/* ---- storing for a connection ---- */

/* Store @env for @device and report to SEND @send_id on @origin; count it
 * on connection @c (NULL: none) until answered; @wake: see enum gw_wake. */
static void store_for(struct gw_worker *w, struct gw_conn *c, struct gw_env *env, int64_t device,
		      unsigned origin, uint64_t send_id, enum gw_wake wake)
{
	struct gw_op *op = gw_op_put(w, env, &device, 1, origin, send_id, c ? c->id : 0);

	if (!op) {
		gw_route_result_to(w, origin, send_id, GW_RES_FAILED);
		return;
	}
	op->wake = wake;
	if (c)
		c->puts++;
	gw_op_submit(w, op);
}

/* ---- registration ---- */

static void step_failed(struct gw_conn *c, const char *what, enum ferry_err rc);
static void start_count(struct gw_conn *c);
static void flush_deletes(struct gw_conn *c, int orphan);
static void add_acked(struct gw_conn *c, uint64_t id, int known);

static void start_barrier(struct gw_conn *c)
{
	struct gw_op *op = gw_op_new(c->w, GW_OP_BARRIER, c->id, c->device_id);

	if (!op) {
		gw_conn_close(c, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	c->phase = GW_PH_BARRIER;
	c->fetching = 1;
	gw_op_submit(c->w, op);
}

void gw_deliver_register(struct gw_conn *c)
{
	struct gw_worker *w = c->w;
	struct gateway *gw = w->gw;
	struct gw_op *op = gw_op_new(w, GW_OP_BARRIER, c->id, c->device_id);
	struct gw_msg *m = calloc(1, sizeof(*m));
	unsigned old_worker = 0;
	uint64_t old_conn = 0;
	struct gw_peer peer;
	int r = -1;

	gw_conn_peer(c, &peer);
	if (op && m) {
		pthread_mutex_lock(&gw->presence_lock);
		r = gw_presence_add_locked(gw, c->device_id, w->index, c->id, &peer, &old_worker,
					   &old_conn);
		if (r == 1) {
			m->kind = GW_MSG_HANDOVER;
			m->conn_id = old_conn;
			m->device_id = c->device_id;
			m->origin = w->index;
			m->new_conn = c->id;
			if (gw_post_later(gw, old_worker, m) == 0) {
				m = NULL;
				c->phase = GW_PH_HANDOVER;
			}
		}
		if (r >= 0 && c->phase != GW_PH_HANDOVER) {
			c->phase = GW_PH_BARRIER;
			c->fetching = 1;
			gw_op_submit(w, op);
			op = NULL;
		}
		pthread_mutex_unlock(&gw->presence_lock);
	}
	free(m);
	gw_op_free(op);
	if (r < 0) {
		gw_conn_close(c, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	gw_presence_seen(gw, c->device_id);
	push_connected(gw->push, c->device_id);
	log_debug("event=conn_registered conn=%llu device=%lld replaced=%llu",
		  (unsigned long long)c->id, (long long)c->device_id,
		  (unsigned long long)(r == 1 ? old_conn : 0));
}

static void pass_on(struct gw_worker *w, struct gw_msg *m)
{
	m->kind = GW_MSG_TAKEOVER;
	m->conn_id = m->new_conn;
	gw_post(w->gw, w, m->origin, m);
}

void gw_deliver_handover(struct gw_worker *w, struct gw_msg *m)
{
	struct gw_conn *c = gw_conn_find(w, m->conn_id);

	/* Everything posted here for the old connection before the new one
	 * registered has been handled by now (one mailbox, in order). */
	if (c && c->device_id == m->device_id && c->phase == GW_PH_HANDOVER) {
		/* It waits for its own predecessor: its successor waits too. */
		c->handover = m;
		gw_conn_close(c, PROTO_ERR_REPLACED, NULL);
		return;
	}
	if (c && c->device_id == m->device_id)
		gw_conn_close(c, PROTO_ERR_REPLACED, NULL);
	pass_on(w, m);
}

static void release_presence(struct gw_conn *c);

/* Store the DELIVERs that waited for the handover, in arrival order. */
static void store_waiting(struct gw_conn *c, int tracked)
{
	struct gw_msg *m;

	while ((m = c->waiting) != NULL) {
		c->waiting = (struct gw_msg *)m->link.next;
		/* Not tracked: the connection is closing, nobody will fetch
		 * these unless the device is woken (a successor, if any, is in
		 * presence and makes the wake skip). */
		store_for(c->w, tracked ? c : NULL, m->env, m->device_id, m->origin, m->send_id,
			  tracked ? GW_WAKE_NO : GW_WAKE_IF_AWAY);
		gw_env_unref(m->env);
		free(m);
	}
	c->waiting_tail = NULL;
}

void gw_deliver_takeover(struct gw_worker *w, uint64_t conn_id)
{
	struct gw_conn *c = gw_conn_find(w, conn_id);

	if (!c || c->phase != GW_PH_HANDOVER)
		return;
	if (c->state != GW_CONN_CLOSING) {
		store_waiting(c, 1);
		start_barrier(c);
		return;
	}
	/* It closed while waiting: finish the close now. */
	store_waiting(c, 0);
	c->phase = GW_PH_NONE;
	if (c->handover) {
		pass_on(w, c->handover);
		c->handover = NULL;
	} else {
		release_presence(c);
	}
	gw_conn_unref(c);
}

void gw_deliver_release(struct gw_worker *w, int64_t device_id, uint64_t conn_id)
{
	pthread_mutex_lock(&w->gw->presence_lock);
	gw_presence_remove_locked(w->gw, device_id, conn_id);
	pthread_mutex_unlock(&w->gw->presence_lock);
}

/* ---- catch-up ---- */

static void retry(struct gw_conn *c)
{
	if (c->state == GW_CONN_CLOSING || c->fetching)
		return;
	switch (c->phase) {
	case GW_PH_BARRIER:
		start_barrier(c);
		break;
	case GW_PH_COUNT:
		start_count(c);
		break;
	case GW_PH_CATCHUP:
		gw_deliver_pump(c);
		break;
	default:
		break;
	}
}

/* A store step failed: WELCOME anyway (the device may send meanwhile), try
 * again later. What arrives for the device meanwhile goes to the store. */
static void step_failed(struct gw_conn *c, const char *what, enum ferry_err rc)
{
	if (c->retry_ms == 0)
		log_warn("event=catchup_delayed conn=%llu device=%lld step=%s reason=\"%s\"",
			 (unsigned long long)c->id, (long long)c->device_id, what,
			 ferry_strerror(rc));
	if (c->state == GW_CONN_AUTH)
		gw_conn_welcome(c, 0);
	c->retry_ms = c->retry_ms ? c->retry_ms * 2 : RETRY_MIN_MS;
	if (c->retry_ms > RETRY_MAX_MS)
		c->retry_ms = RETRY_MAX_MS;
	c->retry_at = uv_now(&c->w->loop) + c->retry_ms;
	gw_conn_arm_ack_timer(c);
}

static void start_count(struct gw_conn *c)
{
	struct gw_op *op = gw_op_new(c->w, GW_OP_COUNT, c->id, c->device_id);

	if (!op) {
		gw_conn_close(c, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	c->phase = GW_PH_COUNT;
	c->fetching = 1;
	gw_op_submit(c->w, op);
}

static void start_fetch(struct gw_conn *c, size_t limit)
{
	struct gw_op *op = gw_op_new(c->w, GW_OP_FETCH, c->id, c->device_id);

	if (!op) {
		step_failed(c, "fetch", FERRY_ENOMEM);
		return;
	}
	op->req.after_seq = c->last_seq;
	op->req.limit = limit;
	c->fetching = 1;
	c->refetch = 0;
	gw_op_submit(c->w, op);
}

static void held_free(struct gw_conn *c)
{
	for (size_t i = c->held_next; i < c->nheld; i++)
		gw_env_unref(c->held[i]);
	free(c->held);
	c->held = NULL;
	c->nheld = c->held_next = 0;
}

/* Write fetched envelopes while the output has room. */
static void write_held(struct gw_conn *c)
{
	while (c->held_next < c->nheld && c->state == GW_CONN_READY) {
		struct gw_env *env = c->held[c->held_next];
		struct gw_inflight *in;

		if (!gw_conn_has_room(c, env->len))
			return;
		c->held_next++;
		HASH_FIND(hh, c->inflight, &env->server_id, sizeof(uint64_t), in);
		if (in) { /* its live copy is in flight: that one is enough */
			gw_env_unref(env);
			continue;
		}
		in = calloc(1, sizeof(*in));
		if (!in) {
			gw_env_unref(env);
			gw_conn_close(c, PROTO_ERR_INTERNAL, "out of memory");
			return;
		}
		in->server_id = env->server_id;
		in->stored = 1;
		in->env = env;
		HASH_ADD(hh, c->inflight, server_id, sizeof(in->server_id), in);
		c->stored_unacked++;
		c->drained++;
		gw_conn_write(c, env->frame, env->len, env);
	}
	if (c->held_next == c->nheld)
		held_free(c);
}

void gw_deliver_pump(struct gw_conn *c)
{
	unsigned window = c->w->gw->cfg->gateway.drain_window;
	struct proto_frame f; /* not zeroed whole: it is 4 KiB, and rarely sent */

	if (c->state != GW_CONN_READY || c->phase != GW_PH_CATCHUP)
		return;
	if (c->nheld) {
		write_held(c);
		if (c->nheld)
			return; /* the output is full: on_written pumps again */
	}
	if (c->fetching || c->retry_at)
		return;
	if (!c->exhausted || c->refetch) {
		if (c->stored_unacked <= window / 2)
			start_fetch(c, window - c->stored_unacked);
		return;
	}
	if (c->puts)
		return; /* their answers pump again */
	f.type = PROTO_QUEUE_EMPTY;
	f.u.drained = c->drained;
	gw_conn_send_frame(c, &f);
	log_debug("event=caught_up conn=%llu device=%lld drained=%llu", (unsigned long long)c->id,
		  (long long)c->device_id, (unsigned long long)c->drained);
	c->drained = 0;
	c->phase = GW_PH_LIVE;
}

/* Back to catching up: something for this device went to the store. */
static void catch_up(struct gw_conn *c)
{
	c->refetch = 1;
	if (c->phase == GW_PH_LIVE) {
		c->phase = GW_PH_CATCHUP;
		c->exhausted = 0;
	}
	gw_deliver_pump(c);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* A stored receipt row (sql/0004_receipts.sql) as a DELIVER_RECEIPT: its
 * ids once each. NULL if it holds none (rows written by hand) or no memory. */
static struct gw_env *receipt_env(const struct queue_row *r)
{
	uint64_t ids[PROTO_MAX_IDS];
	size_t n = 0, k = 0;

	for (size_t at = 0, used; at < r->len && n < PROTO_MAX_IDS; at += used) {
		used = proto_varint_get(r->payload + at, r->len - at, &ids[n]);
		if (!used)
			break;
		n++;
	}
	if (!n || (r->client_id != PROTO_RECEIPT_DELIVERED && r->client_id != PROTO_RECEIPT_READ))
		return NULL;
	qsort(ids, n, sizeof(ids[0]), cmp_u64);
	for (size_t i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[k - 1])
			ids[k++] = ids[i];
	return gw_env_receipt(r->server_id, (int)r->client_id, r->sender_user, r->sender_device,
			      ids, k);
}

static void fetched(struct gw_conn *c, struct gw_op *op)
{
	struct queue_row *rows = op->req.rows;
	size_t n = op->req.nrows;

	c->exhausted = n < op->req.limit;
	c->held = n ? calloc(n, sizeof(*c->held)) : NULL;
	if (n && !c->held) {
		step_failed(c, "fetch", FERRY_ENOMEM);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct queue_row *r = &rows[i];
		struct gw_env *env;

		if (r->seq <= c->last_seq)
			continue;
		c->last_seq = r->seq;
		if (r->kind == QUEUE_KIND_RECEIPT) {
			env = receipt_env(r);
			if (!env) { /* nothing in it to deliver: acknowledged */
				add_acked(c, r->server_id, 1);
				continue;
			}
			c->held[c->nheld++] = env;
			continue;
		}
		env = gw_env_deliver(r->server_id, r->sender_user, strlen(r->sender_user),
				     r->sender_device, r->client_id, r->created_ms, r->payload,
				     r->len);
		if (!env) {
			/* Too large for this server's max_frame now (lowered since
			 * it was stored): it stays in the store. */
			log_warn("event=stored_envelope_skipped device=%lld server_id=%llu "
				 "bytes=%zu",
				 (long long)c->device_id, (unsigned long long)r->server_id, r->len);
			continue;
		}
		c->held[c->nheld++] = env;
	}
	if (!c->nheld)
		held_free(c);
}

void gw_deliver_op_done(struct gw_worker *w, struct gw_op *op)
{
	struct gw_conn *c = gw_conn_find(w, op->conn_id);
	enum ferry_err rc = op->req.rc;

	if (!c || c->state == GW_CONN_CLOSING) {
		gw_op_free(op);
		return;
	}
	switch (op->kind) {
	case GW_OP_PUT:
		c->puts--;
		if (c->phase == GW_PH_CATCHUP)
			c->refetch = 1;
		gw_deliver_pump(c);
		break;
	case GW_OP_DELETE:
		c->deleting = 0;
		if (rc)
			log_info("event=delete_failed conn=%llu device=%lld ids=%zu reason=\"%s\"",
				 (unsigned long long)c->id, (long long)c->device_id, op->req.nids,
				 ferry_strerror(rc));
		flush_deletes(c, 0); /* what was acknowledged meanwhile */
		break;
	case GW_OP_BARRIER:
		c->fetching = 0;
		if (rc)
			step_failed(c, "barrier", rc);
		else
			start_count(c);
		break;
	case GW_OP_COUNT:
		c->fetching = 0;
		if (rc) {
			step_failed(c, "count", rc);
			break;
		}
		c->retry_ms = 0;
		if (c->state == GW_CONN_AUTH)
			gw_conn_welcome(c, op->req.count);
		c->phase = GW_PH_CATCHUP;
		c->exhausted = 0;
		gw_deliver_pump(c);
		break;
	case GW_OP_FETCH:
		c->fetching = 0;
		if (rc) {
			/* Not read: whatever the last good FETCH said, there may be
			 * more now (what was stored meanwhile). */
			c->refetch = 1;
			step_failed(c, "fetch", rc);
			break;
		}
		c->retry_ms = 0;
		fetched(c, op);
		gw_deliver_pump(c);
		break;
	}
	gw_op_free(op);
}

/* ---- deletes ---- */

static void add_acked(struct gw_conn *c, uint64_t id, int known)
{
	uint64_t *n;

	if (!known && c->nacked >= UNKNOWN_ACKS_MAX)
		return;
	if (c->nacked == c->acked_cap) {
		size_t cap = c->acked_cap ? c->acked_cap * 2 : 64;

		n = realloc(c->acked, cap * sizeof(*n));
		if (!n)
			return; /* not deleted now: delivered again later */
		c->acked = n;
		c->acked_cap = cap;
	}
	c->acked[c->nacked++] = id;
}

/* Submit the acknowledged ids as one DELETE; answered to the connection
 * unless @orphan (it is closing). */
static void flush_deletes(struct gw_conn *c, int orphan)
{
	struct gw_op *op;

	if (!c->nacked || (c->deleting && !orphan))
		return;
	op = gw_op_new(c->w, GW_OP_DELETE, orphan ? 0 : c->id, c->device_id);
	if (!op)
		return;
	op->ids = c->acked;
	op->req.ids = op->ids;
	op->req.nids = c->nacked;
	c->acked = NULL;
	c->nacked = c->acked_cap = 0;
	if (!orphan)
		c->deleting = 1;
	gw_op_submit(c->w, op);
}

/* ---- live envelopes ---- */

void gw_deliver_msg(struct gw_worker *w, struct gw_msg *m)
{
	struct gw_conn *c = gw_conn_find(w, m->conn_id);
	struct gw_inflight *in = NULL;
	int first;

	if (c && c->phase == GW_PH_HANDOVER && c->device_id == m->device_id) {
		m->link.next = NULL;
		if (c->waiting_tail)
			c->waiting_tail->link.next = &m->link;
		else
			c->waiting = m;
		c->waiting_tail = m;
		return;
	}
	if (!c || c->state == GW_CONN_CLOSING || c->device_id != m->device_id) {
		/* Gone (or replaced): its successor waits for this to be stored. */
		store_for(w, NULL, m->env, m->device_id, m->origin, m->send_id, GW_WAKE_IF_AWAY);
		goto done;
	}
	if (c->phase != GW_PH_LIVE) {
		store_for(w, c, m->env, m->device_id, m->origin, m->send_id, GW_WAKE_NO);
		goto done;
	}
	HASH_FIND(hh, c->inflight, &m->env->server_id, sizeof(uint64_t), in);
	if (in || !(in = calloc(1, sizeof(*in)))) {
		gw_route_result_to(w, m->origin, m->send_id, GW_RES_FAILED);
		goto done;
	}
	in->server_id = m->env->server_id;
	in->origin = m->origin;
	in->send_id = m->send_id;
	in->deadline = uv_now(&w->loop) + w->gw->cfg->gateway.ack_timeout;
	in->env = m->env; /* the message's reference */
	m->env = NULL;
	first = c->fifo == NULL;
	HASH_ADD(hh, c->inflight, server_id, sizeof(in->server_id), in);
	DL_APPEND(c->fifo, in);
	if (first)
		gw_conn_arm_ack_timer(c);
	gw_conn_write(c, in->env->frame, in->env->len, in->env);
done:
	gw_env_unref(m->env);
	free(m);
}

static void inflight_free(struct gw_conn *c, struct gw_inflight *in)
{
	HASH_DEL(c->inflight, in);
	if (!in->stored)
		DL_DELETE(c->fifo, in);
	else
		c->stored_unacked--;
	gw_env_unref(in->env);
	free(in);
}

/* Counted, and the sender learns it was delivered. */
static void acked_message(struct gw_conn *c, const struct gw_inflight *in)
{
	if (in->stored) {
		gw_stat(c->w, GW_ST_ENV_DRAINED, 1);
	} else {
		gw_stat(c->w, GW_ST_ENV_ONLINE, 1);
		hist_add(&c->w->delivery, (uv_hrtime() - in->env->born_ns) / 1000);
	}
	gw_receipt_delivered(c, in->env);
}

size_t gw_deliver_acked(struct gw_conn *c, const struct proto_ids *ids)
{
	struct gw_inflight *in;
	size_t unknown = 0;
	int head = 0;

	for (size_t i = 0; i < ids->count; i++) {
		HASH_FIND(hh, c->inflight, &ids->ids[i], sizeof(uint64_t), in);
		if (!in) {
			add_acked(c, ids->ids[i], 0);
			if (c->late_acks)
				c->late_acks--;
			else
				unknown++;
			continue;
		}
		if (in->stored) {
			add_acked(c, in->server_id, 1);
		} else {
			head |= in == c->fifo;
			gw_route_result_to(c->w, in->origin, in->send_id, GW_RES_ACKED);
		}
		if (in->env->kind == QUEUE_KIND_MESSAGE)
			acked_message(c, in);
		inflight_free(c, in);
	}
	if (head)
		gw_conn_arm_ack_timer(c);
	flush_deletes(c, 0);
	gw_deliver_pump(c);
	return unknown;
}

void gw_deliver_ack_timeout(struct gw_conn *c)
{
	uint64_t now = uv_now(&c->w->loop);
	int fired = 0;

	while (c->fifo && c->fifo->deadline <= now) {
		struct gw_inflight *in = c->fifo;

		log_debug("event=ack_timeout conn=%llu device=%lld server_id=%llu",
			  (unsigned long long)c->id, (long long)c->device_id,
			  (unsigned long long)in->server_id);
		/* Connected but not acknowledging (an app suspended in the
		 * background): wake it once this is stored. */
		store_for(c->w, c, in->env, c->device_id, in->origin, in->send_id,
			  GW_WAKE_SUSPENDED);
		inflight_free(c, in);
		if (c->late_acks < UINT32_MAX)
			c->late_acks++;
		fired = 1;
	}
	if (c->retry_at && c->retry_at <= now) {
		c->retry_at = 0;
		retry(c);
	}
	gw_conn_arm_ack_timer(c);
	if (fired)
		catch_up(c);
}

void gw_deliver_conn_closed(struct gw_conn *c)
{
	struct gw_inflight *in, *tmp;

	/* Live envelopes the device did not acknowledge: to the store, in the
	 * order they were written. */
	while (c->fifo) {
		in = c->fifo;
		store_for(c->w, NULL, in->env, c->device_id, in->origin, in->send_id,
			  GW_WAKE_IF_AWAY);
		inflight_free(c, in);
	}
	HASH_ITER(hh, c->inflight, in, tmp)
	{
		inflight_free(c, in); /* stored: still in the store */
	}
	held_free(c);
	flush_deletes(c, 1);
	free(c->acked);
	c->acked = NULL;
	c->nacked = c->acked_cap = 0;
	if (c->phase == GW_PH_HANDOVER) {
		gw_conn_ref(c); /* until TAKEOVER */
		return;
	}
	if (c->phase == GW_PH_NONE)
		return;
	release_presence(c);
}

/* The presence entry stays until this worker has handled what was posted
 * to the connection before now (RELEASE comes after it). */
static void release_presence(struct gw_conn *c)
{
	struct gateway *gw = c->w->gw;
	int ours;

	pthread_mutex_lock(&gw->presence_lock);
	{
		unsigned wk;
		uint64_t cid;

		ours = gw_presence_find_locked(gw, c->device_id, &wk, &cid) && cid == c->id;
		if (ours) {
			struct gw_msg *m = calloc(1, sizeof(*m));

			if (m) {
				m->kind = GW_MSG_RELEASE;
				m->device_id = c->device_id;
				m->conn_id = c->id;
			}
			if (!m || gw_post_later(gw, c->w->index, m)) {
				free(m);
				gw_presence_remove_locked(gw, c->device_id, c->id);
			}
		}
	}
	pthread_mutex_unlock(&gw->presence_lock);
	gw_presence_seen(gw, c->device_id);
}
