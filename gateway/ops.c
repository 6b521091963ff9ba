/*
 * ops.c - requests to the offline store and their answers.
 *
 * A request is a struct gw_op: the queue_req the store works on, and what
 * the answer is for (a SEND on some worker, a connection by id). The store
 * posts the op itself back to the worker that made it (GW_MSG_STORE), which
 * hands it to route.c (PUT results for a SEND) and deliver.c (catch-up,
 * deletes, PUTs a connection made). Each worker counts its unanswered
 * requests and does not close its mailbox before they are all answered.
 *
 * A PUT's payload is not copied: the op holds a reference to the shared
 * envelope and points into its encoded DELIVER frame.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "push/push.h"
#include "common/banned.h"

struct gw_env *gw_env_deliver(uint64_t server_id, const char *sender_user, size_t user_len,
			      int64_t sender_device, uint64_t client_id, uint64_t timestamp,
			      const uint8_t *payload, size_t len)
{
	struct proto_frame f;
	struct gw_env *env;
	size_t size, n;

	/* Only the member encoded is filled in: a whole struct proto_frame is
	 * 4 KiB (a DELIVER_ACK's ids), and zeroing it cost more than encoding
	 * the frame. */
	f.type = PROTO_DELIVER;
	f.u.deliver = (struct proto_deliver){
		.server_id = server_id,
		.sender_user = { (const uint8_t *)sender_user, user_len },
		.sender_device = (uint64_t)sender_device,
		.client_id = client_id,
		.timestamp = timestamp,
		.payload = { payload, len },
	};
	size = proto_encoded_size(&f);
	env = size ? gw_env_new(size) : NULL;
	if (!env)
		return NULL;
	env->server_id = server_id;
	env->ttl = 0;
	env->kind = QUEUE_KIND_MESSAGE;
	env->sender_device = sender_device;
	env->born_ns = uv_hrtime();
	env->client_id = client_id;
	env->user_len = (uint8_t)user_len; /* at most PROTO_MAX_USER */
	if (proto_encode(&f, env->frame, size, &n) || n != size)
		ferry_panic("cannot encode a DELIVER of %zu bytes", len);
	/* After the length prefix, the type, the server id and the user's
	 * length (one byte: at most 64). */
	for (n = 0; env->frame[n] & 0x80; n++)
		;
	env->user_off = (uint16_t)(n + 1 + 1 + proto_varint_size(server_id) + 1);
	return env;
}

struct gw_env *gw_env_receipt(uint64_t server_id, int kind, const char *peer_user, int64_t device,
			      const uint64_t *ids, size_t n)
{
	struct proto_frame f = { .type = PROTO_DELIVER_RECEIPT };
	struct gw_env *env;
	size_t size, used;

	f.u.receipt.id = server_id;
	f.u.receipt.kind = (uint8_t)kind;
	f.u.receipt.peer_user.p = (const uint8_t *)peer_user;
	f.u.receipt.peer_user.len = strlen(peer_user);
	f.u.receipt.device = (uint64_t)device;
	f.u.receipt.count = n;
	if (n > PROTO_MAX_IDS)
		return NULL;
	memcpy(f.u.receipt.ids, ids, n * sizeof(ids[0]));
	size = proto_encoded_size(&f);
	env = size ? gw_env_new(size) : NULL;
	if (!env)
		return NULL;
	memset(&env->server_id, 0, sizeof(*env) - offsetof(struct gw_env, server_id));
	env->len = size;
	env->server_id = server_id;
	env->kind = QUEUE_KIND_RECEIPT;
	if (proto_encode(&f, env->frame, size, &used) || used != size)
		ferry_panic("cannot encode a DELIVER_RECEIPT of %zu ids", n);
	return env;
}

static void on_store_reply(struct gw_op *op)
{
	op->msg.kind = GW_MSG_STORE;
}

struct gw_op *gw_op_new(struct gw_worker *w, enum gw_op_kind kind, uint64_t conn_id, int64_t device)
{
	struct gw_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	on_store_reply(op);
	op->kind = kind;
	op->conn_id = conn_id;
	op->origin = w->index;
	op->req.reply = &op->msg.link;
	op->req.reply_to = &w->mbox;
	op->req.device = device;
	switch (kind) {
	case GW_OP_BARRIER:
		op->req.type = QUEUE_REQ_BARRIER;
		break;
	case GW_OP_COUNT:
		op->req.type = QUEUE_REQ_COUNT;
		break;
	case GW_OP_FETCH:
		op->req.type = QUEUE_REQ_FETCH;
		break;
	case GW_OP_DELETE:
		op->req.type = QUEUE_REQ_DELETE;
		break;
	case GW_OP_PUT:
		op->req.type = QUEUE_REQ_PUT;
		break;
	}
	return op;
}

/*
 * A stored receipt: the peer user as sender user, the device whose
 * messages they are as sender device, the kind as client id, and the ids'
 * varints, which end the frame, as payload (sql/0004_receipts.sql).
 */
static void put_receipt(struct gw_op *op, const struct proto_receipt *r, const int64_t *devices,
			size_t n)
{
	size_t tail = 0;

	for (size_t i = 0; i < r->count; i++)
		tail += proto_varint_size(r->ids[i]);
	memcpy(op->sender_user, r->peer_user.p, r->peer_user.len);
	op->req.server_id = op->env->server_id;
	op->req.sender_user = op->sender_user;
	op->req.sender_device = (int64_t)r->device;
	op->req.client_id = r->kind;
	op->req.kind = QUEUE_KIND_RECEIPT;
	op->req.payload = op->env->frame + op->env->len - tail;
	op->req.len = tail;
	op->req.created_ms = gw_now_ms();
	op->req.ttl = 0;
	op->req.puts = op->puts;
	op->req.nputs = n;
	for (size_t i = 0; i < n; i++)
		op->puts[i].recipient = devices[i];
}

struct gw_op *gw_op_put(struct gw_worker *w, struct gw_env *env, const int64_t *devices, size_t n,
			unsigned origin, uint64_t send_id, uint64_t conn_id)
{
	struct proto_frame f;
	struct gw_op *op;
	size_t used;

	/* The frame was encoded by us: it decodes, and its fields are valid. */
	if (proto_decode(env->frame, env->len, SIZE_MAX, &f, &used) || used != env->len ||
	    (f.type != PROTO_DELIVER && f.type != PROTO_DELIVER_RECEIPT))
		ferry_panic("a shared envelope does not hold a DELIVER");
	op = calloc(1, sizeof(*op) + n * sizeof(op->puts[0]));
	if (!op)
		return NULL;
	on_store_reply(op);
	op->kind = GW_OP_PUT;
	op->conn_id = conn_id;
	op->origin = origin;
	op->send_id = send_id;
	op->env = gw_env_ref(env);
	op->req.reply = &op->msg.link;
	op->req.reply_to = &w->mbox;
	op->req.type = QUEUE_REQ_PUT;
	if (f.type == PROTO_DELIVER_RECEIPT) {
		put_receipt(op, &f.u.receipt, devices, n);
		return op;
	}
	memcpy(op->sender_user, f.u.deliver.sender_user.p, f.u.deliver.sender_user.len);
	op->req.server_id = env->server_id;
	op->req.sender_user = op->sender_user;
	op->req.sender_device = (int64_t)f.u.deliver.sender_device;
	op->req.client_id = f.u.deliver.client_id;
	op->req.kind = QUEUE_KIND_MESSAGE;
	op->req.payload = f.u.deliver.payload.p;
	op->req.len = f.u.deliver.payload.len;
	op->req.created_ms = f.u.deliver.timestamp;
	op->req.ttl = env->ttl;
	op->req.puts = op->puts;
	op->req.nputs = n;
	for (size_t i = 0; i < n; i++)
		op->puts[i].recipient = devices[i];
	return op;
}

void gw_op_submit(struct gw_worker *w, struct gw_op *op)
{
	w->ops++;
	queue_store_submit(w->gw->store, &op->req);
}

void gw_op_free(struct gw_op *op)
{
	if (!op)
		return;
	gw_env_unref(op->env);
	queue_rows_free(op->req.rows, op->req.nrows);
	free(op->ids);
	free(op);
}

static enum gw_result put_result(const struct gw_op *op, size_t i)
{
	if (op->req.rc)
		return GW_RES_FAILED;
	switch (op->puts[i].result) {
	case QUEUE_PUT_STORED:
	case QUEUE_PUT_DUPLICATE:
		return GW_RES_STORED;
	case QUEUE_PUT_FULL:
		return GW_RES_FULL;
	case QUEUE_PUT_GONE:
		return GW_RES_GONE;
	}
	return GW_RES_FAILED;
}

/*
 * Wake the devices @op stored an envelope for, once it is in the store
 * (the push thread coalesces). Receipts never wake. A device that
 * registered a connection since the PUT was routed is being caught up by it
 * and is left alone, unless it is the one that stopped acknowledging.
 */
static void wake_stored(struct gw_worker *w, const struct gw_op *op)
{
	struct gateway *gw = w->gw;
	enum gw_wake how = (enum gw_wake)op->wake;
	unsigned wk;
	uint64_t cid;

	if (op->req.rc || op->req.kind != QUEUE_KIND_MESSAGE || !push_enabled(gw->push))
		return;
	if (how == GW_WAKE_NO && op->conn_id) {
		/* Stored for a connection that was catching up: if it closed
		 * before fetching, nobody will, unless the device is woken. */
		struct gw_conn *c = gw_conn_find(w, op->conn_id);

		if (!c || c->state == GW_CONN_CLOSING)
			how = GW_WAKE_IF_AWAY;
	}
	if (how == GW_WAKE_NO)
		return;
	if (how == GW_WAKE_IF_AWAY)
		pthread_mutex_lock(&gw->presence_lock);
	for (size_t i = 0; i < op->req.nputs; i++) {
		int64_t dev = op->puts[i].recipient;

		if (op->puts[i].result != QUEUE_PUT_STORED)
			continue;
		if (how == GW_WAKE_IF_AWAY && gw_presence_find_locked(gw, dev, &wk, &cid))
			continue;
		push_wake(gw->push, dev);
	}
	if (how == GW_WAKE_IF_AWAY)
		pthread_mutex_unlock(&gw->presence_lock);
}

void gw_op_done(struct gw_worker *w, struct gw_op *op)
{
	w->ops--;
	if (op->kind == GW_OP_PUT) {
		wake_stored(w, op);
		if (op->req.rc)
			log_debug("event=store_put_failed server_id=%llu devices=%zu reason=\"%s\"",
				  (unsigned long long)op->req.server_id, op->req.nputs,
				  ferry_strerror(op->req.rc));
		for (size_t i = 0; op->send_id && i < op->req.nputs; i++) {
			if (!op->req.rc && op->puts[i].result == QUEUE_PUT_DUPLICATE &&
			    op->puts[i].server_id != op->req.server_id)
				gw_route_result_dup(w, op->origin, op->send_id,
						    op->puts[i].server_id);
			else
				gw_route_result_to(w, op->origin, op->send_id, put_result(op, i));
		}
	}
	if (op->conn_id)
		gw_deliver_op_done(w, op); /* takes op */
	else
		gw_op_free(op);
	gw_worker_maybe_done(w);
}
