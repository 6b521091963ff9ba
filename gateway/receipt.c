/*
 * receipt.c - delivered and read receipts, from where they arise to the
 * devices of the user whose messages they are about.
 *
 * Each worker has its own batcher (queue/receipts.c), so adding a receipt
 * takes no lock; the ids of one key that arise on two workers go out in two
 * batches, which costs coalescing, not correctness. Two sources:
 *
 *   - A DELIVER_ACK for a message (live or stored) on this worker: the
 *     message's sender device learns that the acknowledging device's user
 *     has it (kind delivered). Not for envelopes the server originated, nor
 *     for a user's messages to itself.
 *   - A device's RECEIPT frame (kind read), unless its user switched read
 *     receipts off (then it is answered ACK at once, and nothing is sent).
 *
 * The batcher flushes a key after [receipts] flush_interval or at
 * [receipts] max_batch ids; a flushed batch becomes one DELIVER_RECEIPT
 * envelope with a server id of its own, routed like a SEND (route.c) to
 * every device of the target user: written to those with a connection,
 * stored (kind receipt, merged in storage per key) for the others. Stored
 * receipts never wake a device (ops.c wakes for messages only).
 *
 * A RECEIPT frame is answered (ACK or NACK, by its client id) only when
 * every batch that took its ids has been delivered or committed: the
 * batcher hands the frame's struct gw_rwait back with each such batch. A
 * kill -9 before that loses nothing the device was told is safe: it sends
 * the RECEIPT again. Delivered receipts have nobody waiting; one that is
 * being coalesced when the process dies is lost (counted as lost when it
 * could be neither delivered nor stored).
 *
 * Everything here runs on the worker's own loop: the batcher, its timer,
 * the waiting RECEIPTs and the batches in flight belong to that worker.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "common/banned.h"

/* ---- waiting RECEIPT frames ---- */

static void answer(struct gw_worker *w, struct gw_rwait *t)
{
	struct gw_conn *c = gw_conn_find(w, t->conn_id);

	if (!c || c->state == GW_CONN_CLOSING) {
		/* The device sends it again on its next connection. */
	} else if (t->failed) {
		gw_send_nack(c, t->client_id, PROTO_NACK_RETRY_LATER,
			     "the receipt could be neither delivered nor stored now");
	} else if (t->unknown) {
		gw_send_nack(c, t->client_id, PROTO_NACK_UNKNOWN_RECIPIENT,
			     "no such user, or the device is not theirs");
	} else if (t->full) {
		gw_send_nack(c, t->client_id, PROTO_NACK_QUEUE_FULL,
			     "the offline queue of a device of the user is full");
	} else {
		gw_send_ack(c, t->client_id, 0, t->stored > 0);
	}
	free(t);
}

/* One batch holding @t is done. */
static void release(struct gw_worker *w, struct gw_rwait *t)
{
	if (--t->refs == 0 && !t->adding)
		answer(w, t);
}

/* ---- flushing ---- */

static void flush_free(struct gw_rflush *fl)
{
	gw_env_unref(fl->env);
	free(fl->tags);
	free(fl);
}

/* @fl is done: its waiting RECEIPTs learn how it went. */
static void flush_done(struct gw_worker *w, struct gw_rflush *fl, int failed, int unknown, int full,
		       int stored)
{
	for (size_t i = 0; i < fl->ntags; i++) {
		struct gw_rwait *t = fl->tags[i];

		t->failed += (unsigned)failed;
		t->unknown += (unsigned)unknown;
		t->full += (unsigned)full;
		t->stored += (unsigned)stored;
		release(w, t);
	}
	flush_free(fl);
}

void gw_receipt_sent(struct gw_worker *w, struct gw_rflush *fl, const struct gw_send *s)
{
	/* Read receipts have waiters, told to send them again; delivered
	 * ones have nobody to ask. */
	if ((s->failed || s->full) && fl->ntags == 0) {
		gw_stat(w, GW_ST_RCPT_LOST, fl->nids);
		log_warn("event=receipts_lost user=%s device=%lld ids=%zu failed=%u full=%u",
			 fl->target_user, (long long)fl->target_device, fl->nids, s->failed,
			 s->full);
	}
	flush_done(w, fl, s->failed > 0, 0, s->full > 0, s->stored > 0);
}

/* The target user's devices are known: send the batch to all of them. */
static void dispatch(struct gw_worker *w, struct gw_rflush *fl)
{
	if (fl->rc) {
		flush_done(w, fl, 1, 0, 0, 0);
		return;
	}
	if (fl->nfound == 0 ||
	    (fl->target_device && !gw_ids_have(fl->found, fl->nfound, fl->target_device))) {
		log_debug("event=receipts_unknown_target user=%s device=%lld", fl->target_user,
			  (long long)fl->target_device);
		flush_done(w, fl, 0, 1, 0, 0);
		return;
	}
	gw_route_receipts(w, fl, fl->found, fl->nfound);
}

static void lookup_work(uv_work_t *req)
{
	struct gw_rflush *fl = req->data;

	fl->rc = queue_user_devices(fl->w->gw->reg, fl->target_user, fl->found, GW_MAX_USER_DEVICES,
				    &fl->nfound);
}

static void lookup_done(uv_work_t *req, int status)
{
	struct gw_rflush *fl = req->data;
	struct gw_worker *w = fl->w;

	(void)status;
	if (fl->rc == FERRY_OK)
		gw_dir_put(w->gw, fl->target_user, fl->found, fl->nfound);
	dispatch(w, fl);
	w->ops--;
	gw_worker_maybe_done(w);
}

/* The batcher's callback: @b becomes one DELIVER_RECEIPT on its way. */
static void on_flush(void *arg, const struct receipt_batch *b)
{
	struct gw_worker *w = arg;
	struct gateway *gw = w->gw;
	struct gw_rflush *fl = calloc(1, sizeof(*fl));

	gw_stat(w, GW_ST_RCPT_BATCHES, 1);
	gw_stat(w, GW_ST_RCPT_IDS_OUT, b->n);
	if (fl) {
		fl->w = w;
		fl->ntags = b->ntags;
		fl->tags = b->ntags ? calloc(b->ntags, sizeof(*fl->tags)) : NULL;
		fl->env = gw_env_receipt(atomic_fetch_add(&gw->next_server_id, 1), b->kind,
					 b->peer_user, b->target_device, b->ids, b->n);
	}
	if (!fl || !fl->env || (b->ntags && !fl->tags)) {
		/* Nobody is told they are safe: the waiting RECEIPTs are NACKed
		 * (their devices send them again); delivered ones are lost. */
		for (size_t i = 0; i < b->ntags; i++) {
			((struct gw_rwait *)b->tags[i])->failed++;
			release(w, b->tags[i]);
		}
		if (b->kind == RECEIPT_DELIVERED)
			gw_stat(w, GW_ST_RCPT_LOST, b->n);
		if (fl)
			flush_free(fl);
		return;
	}
	for (size_t i = 0; i < b->ntags; i++)
		fl->tags[i] = b->tags[i];
	fl->target_device = b->target_device;
	fl->nids = b->n;
	snprintf(fl->target_user, sizeof(fl->target_user), "%s", b->target_user);
	if (gw_dir_get(gw, fl->target_user, fl->found, &fl->nfound)) {
		dispatch(w, fl);
		return;
	}
	fl->req.data = fl;
	w->ops++;
	if (uv_queue_work(&w->loop, &fl->req, lookup_work, lookup_done)) {
		w->ops--;
		fl->rc = FERRY_EIO;
		dispatch(w, fl);
	}
}

/* ---- the batcher's timer ---- */

static void on_timer(uv_timer_t *t);

/* Make the timer fire when the batcher's next key falls due (if that is
 * sooner than it is set for). */
static void arm(struct gw_worker *w)
{
	uint64_t due = receipts_next_due(w->receipts), now;

	if (due >= w->receipt_due || w->stopping)
		return;
	now = uv_now(&w->loop);
	w->receipt_due = due;
	uv_timer_start(&w->receipt_timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
	struct gw_worker *w = t->data;

	w->receipt_due = UINT64_MAX;
	receipts_tick(w->receipts, uv_now(&w->loop));
	arm(w);
}

enum ferry_err gw_receipts_init(struct gw_worker *w)
{
	const struct ferry_config *cfg = w->gw->cfg;
	struct receipts_opts o = { cfg->receipts.max_batch, cfg->receipts.flush_interval, 0 };

	w->delivered_receipts = strcmp(cfg->receipts.delivered, "on") == 0;
	w->receipts = receipts_new(&o, on_flush, w);
	if (!w->receipts)
		return FERRY_ENOMEM;
	uv_timer_init(&w->loop, &w->receipt_timer);
	w->receipt_timer.data = w;
	w->receipt_due = UINT64_MAX;
	return FERRY_OK;
}

static void on_closed_noop(uv_handle_t *h)
{
	(void)h;
}

void gw_receipts_stop(struct gw_worker *w)
{
	if (!w->receipts)
		return;
	/* Out now, while the store still takes them. */
	receipts_flush_all(w->receipts);
	if (!uv_is_closing((uv_handle_t *)&w->receipt_timer))
		uv_close((uv_handle_t *)&w->receipt_timer, on_closed_noop);
}

void gw_receipts_free(struct gw_worker *w)
{
	receipts_free(w->receipts); /* empty: flushed when stopping */
	w->receipts = NULL;
}

/* ---- sources ---- */

void gw_receipt_delivered(struct gw_conn *c, const struct gw_env *env)
{
	struct gw_worker *w = c->w;
	char target[QUEUE_USER_MAX + 1];
	struct receipt_add a = { 0 };

	if (!env->sender_device || !w->delivered_receipts || !w->receipts || w->stopping)
		return;
	if (env->user_len == strlen(c->user) &&
	    memcmp(env->frame + env->user_off, c->user, env->user_len) == 0)
		return; /* one's own message, on another device of one's own */
	memcpy(target, env->frame + env->user_off, env->user_len);
	target[env->user_len] = '\0';
	a.target_device = env->sender_device;
	a.target_user = target;
	a.peer_user = c->user;
	a.kind = RECEIPT_DELIVERED;
	a.ids = &env->client_id;
	a.n = 1;
	gw_stat(w, GW_ST_RCPT_DELIVERED, 1);
	if (receipts_add(w->receipts, &a, uv_now(&w->loop)) != FERRY_OK)
		gw_stat(w, GW_ST_RCPT_LOST, 1);
	arm(w);
}

void gw_receipt_read(struct gw_conn *c, const struct proto_receipt *r)
{
	struct gw_worker *w = c->w;
	char peer[PROTO_MAX_USER + 1];
	struct receipt_add a = { 0 };
	struct gw_rwait *t;

	if (r->kind != PROTO_RECEIPT_READ) {
		gw_send_nack(
			c, r->id, PROTO_NACK_INVALID,
			"devices send read receipts (kind 2); delivered ones are the server's");
		return;
	}
	if (r->device > INT64_MAX) {
		gw_send_nack(c, r->id, PROTO_NACK_UNKNOWN_RECIPIENT, "no such device");
		return;
	}
	if (w->stopping) {
		gw_send_nack(c, r->id, PROTO_NACK_RETRY_LATER, "the server is stopping");
		return;
	}
	if (!c->read_receipts) {
		gw_stat(w, GW_ST_RCPT_OFF, 1);
		gw_send_ack(c, r->id, 0, 0);
		return;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		gw_send_nack(c, r->id, PROTO_NACK_RETRY_LATER, "out of memory");
		return;
	}
	t->conn_id = c->id;
	t->client_id = r->id;
	/* Batches may be done before receipts_add() returns and says how
	 * many took it: refs may go below 0 meanwhile. */
	t->adding = 1;
	memcpy(peer, r->peer_user.p, r->peer_user.len);
	peer[r->peer_user.len] = '\0';
	a.target_device = (int64_t)r->device;
	a.target_user = peer;
	a.peer_user = c->user;
	a.kind = RECEIPT_READ;
	a.ids = r->ids;
	a.n = r->count;
	a.tag = t;
	gw_stat(w, GW_ST_RCPT_READ_IN, r->count);
	if (receipts_add(w->receipts, &a, uv_now(&w->loop)) != FERRY_OK)
		t->failed++;
	t->adding = 0;
	t->refs += (long)a.tagged;
	if (t->refs == 0)
		answer(w, t);
	arm(w);
}

void gw_receipt_settings(struct gw_worker *w, const char *user, int on)
{
	struct gw_conn *c, *tmp;

	HASH_ITER(hh, w->conns, c, tmp)
	{
		if (strcmp(c->user, user) == 0)
			c->read_receipts = on;
	}
}
