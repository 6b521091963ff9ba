/*
 * route.c - from SEND to ACK: recipients, fan-out, DELIVER, DELIVER_ACK.
 *
 * A SEND is checked (sizes, duplicate device ids, retransmission), given a
 * server id and turned into encoded DELIVER frames at once (one shared frame
 * for all devices, or one per named device), then queued on its connection
 * until the recipient's devices are looked up on the threadpool. Lookups run
 * one at a time per connection, so a device's SENDs keep their order.
 *
 * Fan-out: each target device that is online gets a DELIVER message on its
 * worker's mailbox (or directly, on the same worker); the recipient's
 * connection writes the shared frame and waits [gateway] ack_timeout for the
 * DELIVER_ACK. Each target reports back once to the sender's worker: ok (acked)
 * or failed (offline, timed out, connection lost).
 *
 * The invariant: the SEND is answered ACK(delivered) only when every target
 * acknowledged it. Anything less is answered NACK retry_later (there is no
 * offline store yet), so that the sender keeps the envelope and nothing is
 * ever acknowledged and then lost. At-least-once: targets that did receive it
 * drop the retransmission by (sender device, client id).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "common/banned.h"

struct lookup_job {
	uv_work_t req;
	struct gw_conn *c;
	struct gw_pending *p;
};

/* ---- shared envelopes ---- */

struct gw_env *gw_env_new(size_t len)
{
	struct gw_env *env = malloc(sizeof(*env) + len);

	if (!env)
		return NULL;
	atomic_init(&env->refs, 1);
	env->len = len;
	return env;
}

struct gw_env *gw_env_ref(struct gw_env *env)
{
	atomic_fetch_add_explicit(&env->refs, 1, memory_order_relaxed);
	return env;
}

void gw_env_unref(struct gw_env *env)
{
	if (env && atomic_fetch_sub_explicit(&env->refs, 1, memory_order_acq_rel) == 1)
		free(env);
}

/* ---- answers ---- */

static void send_ack(struct gw_conn *c, uint64_t client_id, uint64_t server_id)
{
	struct proto_frame f = { .type = PROTO_ACK };

	f.u.ack.client_id = client_id;
	f.u.ack.server_id = server_id;
	f.u.ack.status = PROTO_ACK_DELIVERED;
	gw_conn_send_frame(c, &f);
}

static void send_nack(struct gw_conn *c, uint64_t client_id, unsigned reason, const char *text)
{
	struct proto_frame f = { .type = PROTO_NACK };

	f.u.nack.client_id = client_id;
	f.u.nack.reason = reason;
	f.u.nack.text.p = (const uint8_t *)text;
	f.u.nack.text.len = strnlen(text, PROTO_MAX_TEXT);
	gw_conn_send_frame(c, &f);
}

static void pending_free(struct gw_pending *p)
{
	for (size_t i = 0; i < PROTO_MAX_TARGETS; i++)
		gw_env_unref(p->envs[i]);
	free(p);
}

/* ---- accepting a SEND ---- */

static struct gw_env *encode_deliver(struct gw_conn *c, uint64_t client_id, uint64_t server_id,
				     uint64_t now, struct proto_bytes payload)
{
	struct proto_frame f = { .type = PROTO_DELIVER };
	struct gw_env *env;
	size_t size, len;

	f.u.deliver.server_id = server_id;
	f.u.deliver.sender_user.p = (const uint8_t *)c->user;
	f.u.deliver.sender_user.len = strlen(c->user);
	f.u.deliver.sender_device = (uint64_t)c->device_id;
	f.u.deliver.client_id = client_id;
	f.u.deliver.timestamp = now;
	f.u.deliver.payload = payload;
	size = proto_encoded_size(&f);
	env = size ? gw_env_new(size) : NULL;
	if (!env)
		return NULL;
	env->server_id = server_id;
	if (proto_encode(&f, env->frame, size, &len) || len != size)
		ferry_panic("cannot encode a DELIVER of %zu bytes", payload.len);
	return env;
}

/* Sizes and device ids; returns a NACK reason or 0. */
static unsigned check_send(struct gw_conn *c, const struct proto_send *s, const char **why)
{
	size_t limit = c->w->gw->cfg->gateway.max_frame - PROTO_PAYLOAD_HEADROOM;

	if (s->ntargets == 0 && s->payload.len > limit) {
		*why = "payload over max_frame - 128 bytes";
		return PROTO_NACK_TOO_LARGE;
	}
	for (size_t i = 0; i < s->ntargets; i++) {
		if (s->targets[i].payload.len > limit) {
			*why = "payload over max_frame - 128 bytes";
			return PROTO_NACK_TOO_LARGE;
		}
		if (s->targets[i].device_id > INT64_MAX) {
			*why = "no such device";
			return PROTO_NACK_UNKNOWN_RECIPIENT;
		}
		for (size_t j = 0; j < i; j++) {
			if (s->targets[j].device_id == s->targets[i].device_id) {
				*why = "a device id appears twice";
				return PROTO_NACK_INVALID;
			}
		}
	}
	return 0;
}

static struct gw_pending *make_pending(struct gw_conn *c, const struct proto_send *s,
				       uint64_t server_id)
{
	struct gw_pending *p = calloc(1, sizeof(*p));
	uint64_t now = gw_now_ms();

	if (!p)
		return NULL;
	p->client_id = s->client_id;
	p->server_id = server_id;
	memcpy(p->to_user, s->to_user.p, s->to_user.len);
	p->ntargets = s->ntargets;
	if (s->ntargets == 0) {
		p->envs[0] = encode_deliver(c, s->client_id, server_id, now, s->payload);
		if (!p->envs[0])
			goto fail;
		return p;
	}
	for (size_t i = 0; i < s->ntargets; i++) {
		p->devices[i] = (int64_t)s->targets[i].device_id;
		p->envs[i] = encode_deliver(c, s->client_id, server_id, now, s->targets[i].payload);
		if (!p->envs[i])
			goto fail;
	}
	return p;
fail:
	pending_free(p);
	return NULL;
}

static void start_lookup(struct gw_conn *c);
static void dispatch(struct gw_conn *c, struct gw_pending *p);

void gw_route_send(struct gw_conn *c, const struct proto_send *s)
{
	struct gateway *gw = c->w->gw;
	const char *why = NULL;
	struct gw_pending *p;
	uint64_t server_id, acked_id = 0;
	unsigned reason = check_send(c, s, &why);

	if (reason) {
		send_nack(c, s->client_id, reason, why);
		return;
	}
	server_id = atomic_fetch_add(&gw->next_server_id, 1);
	switch (gw_dedup_begin(gw, c->device_id, s->client_id, c->id, server_id, &acked_id)) {
	case GW_DEDUP_ACKED:
		send_ack(c, s->client_id, acked_id);
		return;
	case GW_DEDUP_IGNORE:
		return;
	case GW_DEDUP_NEW:
		break;
	}
	p = make_pending(c, s, server_id);
	if (!p) {
		gw_dedup_forget(gw, c->device_id, s->client_id, c->id);
		send_nack(c, s->client_id, PROTO_NACK_RETRY_LATER, "out of memory");
		return;
	}
	/* Nothing ahead of it and the recipients known: route it now. */
	if (!c->queue_head && gw_dir_get(gw, p->to_user, p->found, &p->nfound)) {
		dispatch(c, p);
		pending_free(p);
		return;
	}
	LL_APPEND2(c->queue_head, p, next);
	if (++c->queued >= GW_MAX_QUEUED_SENDS)
		gw_conn_pause(c);
	if (!c->lookup_busy)
		start_lookup(c);
}

/* ---- recipients ---- */

static void lookup_work(uv_work_t *req)
{
	struct lookup_job *job = req->data;
	struct gw_pending *p = job->p;

	p->rc = queue_user_devices(job->c->w->gw->reg, p->to_user, p->found, GW_MAX_USER_DEVICES,
				   &p->nfound);
}

static void dispatch(struct gw_conn *c, struct gw_pending *p);

static void lookup_done(uv_work_t *req, int status)
{
	struct lookup_job *job = req->data;
	struct gw_conn *c = job->c;
	struct gw_pending *p = job->p;

	free(job);
	LL_DELETE2(c->queue_head, p, next);
	c->queued--;
	c->lookup_busy = 0;
	if (p->rc == FERRY_OK)
		gw_dir_put(c->w->gw, p->to_user, p->found, p->nfound);
	if (c->state == GW_CONN_CLOSING)
		gw_dedup_forget(c->w->gw, c->device_id, p->client_id, c->id);
	else
		dispatch(c, p);
	pending_free(p);
	/* What queued up behind it: route in order, as long as the cache knows. */
	while (c->queue_head && c->state != GW_CONN_CLOSING &&
	       gw_dir_get(c->w->gw, c->queue_head->to_user, c->queue_head->found,
			  &c->queue_head->nfound)) {
		p = c->queue_head;
		LL_DELETE2(c->queue_head, p, next);
		c->queued--;
		dispatch(c, p);
		pending_free(p);
	}
	if (c->queue_head && c->state != GW_CONN_CLOSING)
		start_lookup(c);
	if (c->paused && c->queued <= GW_MAX_QUEUED_SENDS / 2)
		gw_conn_resume(c);
	gw_conn_unref(c);
}

static void start_lookup(struct gw_conn *c)
{
	struct lookup_job *job = calloc(1, sizeof(*job));

	if (!job)
		goto fail;
	job->req.data = job;
	job->c = c;
	job->p = c->queue_head;
	c->lookup_busy = 1;
	gw_conn_ref(c);
	if (uv_queue_work(&c->w->loop, &job->req, lookup_work, lookup_done) == 0)
		return;
	gw_conn_unref(c);
	c->lookup_busy = 0;
	free(job);
fail:
	gw_conn_close(c, PROTO_ERR_INTERNAL, "cannot route now");
}

/* ---- fan-out ---- */

static int found(const struct gw_pending *p, int64_t device)
{
	for (size_t i = 0; i < p->nfound; i++)
		if (p->found[i] == device)
			return 1;
	return 0;
}

/* Targets of @p: device ids and their envelopes. Returns the count, or -1
 * with a NACK already sent. */
static int targets(struct gw_conn *c, const struct gw_pending *p, int64_t *dev, struct gw_env **env)
{
	char why[PROTO_MAX_TEXT];
	int n = 0;

	if (p->rc) {
		send_nack(c, p->client_id, PROTO_NACK_RETRY_LATER, "cannot look up recipients now");
		return -1;
	}
	if (p->nfound == 0) {
		snprintf(why, sizeof(why), "no user '%s'", p->to_user);
		send_nack(c, p->client_id, PROTO_NACK_UNKNOWN_RECIPIENT, why);
		return -1;
	}
	if (p->ntargets == 0) {
		for (size_t i = 0; i < p->nfound; i++) {
			if (p->found[i] == c->device_id)
				continue;
			dev[n] = p->found[i];
			env[n++] = p->envs[0];
		}
		return n;
	}
	for (size_t i = 0; i < p->ntargets; i++) {
		if (!found(p, p->devices[i])) {
			snprintf(why, sizeof(why), "device %lld is not a device of user '%s'",
				 (long long)p->devices[i], p->to_user);
			send_nack(c, p->client_id, PROTO_NACK_UNKNOWN_RECIPIENT, why);
			return -1;
		}
		dev[n] = p->devices[i];
		env[n++] = p->envs[i];
	}
	return n;
}

static void finish(struct gw_worker *w, struct gw_send *s);

static void dispatch(struct gw_conn *c, struct gw_pending *p)
{
	struct gw_worker *w = c->w;
	struct gateway *gw = w->gw;
	int64_t dev[GW_MAX_USER_DEVICES];
	struct gw_env *env[GW_MAX_USER_DEVICES];
	struct gw_send *s;
	int n = targets(c, p, dev, env);

	if (n < 0) {
		gw_dedup_forget(gw, c->device_id, p->client_id, c->id);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		gw_dedup_forget(gw, c->device_id, p->client_id, c->id);
		send_nack(c, p->client_id, PROTO_NACK_RETRY_LATER, "out of memory");
		return;
	}
	s->id = ++w->next_send_id;
	s->conn = c;
	s->conn_id = c->id;
	s->device_id = c->device_id;
	s->client_id = p->client_id;
	s->server_id = p->server_id;
	/* One extra count held until the loop is done, so that results that
	 * come back synchronously cannot finish the send under our feet. */
	s->remaining = (unsigned)n + 1;
	LL_PREPEND2(c->sends, s, conn_next);
	HASH_ADD(hh, w->sends, id, sizeof(s->id), s);
	for (int i = 0; i < n; i++) {
		struct gw_msg *m;
		unsigned wk;
		uint64_t cid;

		if (!gw_presence_find(gw, dev[i], &wk, &cid) || !(m = calloc(1, sizeof(*m)))) {
			s->remaining--;
			s->failed++;
			continue;
		}
		m->kind = GW_MSG_DELIVER;
		m->conn_id = cid;
		m->device_id = dev[i];
		m->env = gw_env_ref(env[i]);
		m->origin = w->index;
		m->send_id = s->id;
		gw_post(gw, w, wk, m);
	}
	gw_route_result(w, s->id, 1);
}

static void result_to(struct gw_worker *w, unsigned origin, uint64_t send_id, int ok)
{
	struct gw_msg *m = calloc(1, sizeof(*m));

	if (!m)
		ferry_panic("out of memory reporting a delivery result");
	m->kind = GW_MSG_RESULT;
	m->send_id = send_id;
	m->ok = ok;
	gw_post(w->gw, w, origin, m);
}

void gw_route_deliver(struct gw_worker *w, struct gw_msg *m)
{
	struct gw_conn *c = gw_conn_find(w, m->conn_id);
	struct gw_inflight *in = NULL;
	int first;

	if (!c || c->state != GW_CONN_READY || c->device_id != m->device_id)
		goto fail; /* gone, or replaced by now */
	HASH_FIND(hh, c->inflight, &m->env->server_id, sizeof(uint64_t), in);
	if (in || !(in = calloc(1, sizeof(*in))))
		goto fail; /* already waiting for this envelope, or no memory */
	in->server_id = m->env->server_id;
	in->origin = m->origin;
	in->send_id = m->send_id;
	in->deadline = uv_now(&w->loop) + w->gw->cfg->gateway.ack_timeout;
	in->env = m->env; /* the message's reference */
	first = c->fifo == NULL;
	HASH_ADD(hh, c->inflight, server_id, sizeof(in->server_id), in);
	DL_APPEND(c->fifo, in);
	free(m);
	if (first)
		gw_conn_arm_ack_timer(c);
	gw_conn_write(c, in->env->frame, in->env->len, in->env);
	return;
fail:
	result_to(w, m->origin, m->send_id, 0);
	gw_env_unref(m->env);
	free(m);
}

/* ---- results ---- */

static void finish(struct gw_worker *w, struct gw_send *s)
{
	struct gateway *gw = w->gw;
	char why[PROTO_MAX_TEXT];

	HASH_DEL(w->sends, s);
	if (s->conn)
		LL_DELETE2(s->conn->sends, s, conn_next);
	if (s->failed) {
		gw_dedup_forget(gw, s->device_id, s->client_id, s->conn_id);
		if (s->conn) {
			snprintf(why, sizeof(why),
				 "%u device(s) offline or did not acknowledge in time; not stored",
				 s->failed);
			send_nack(s->conn, s->client_id, PROTO_NACK_RETRY_LATER, why);
		}
	} else {
		gw_dedup_acked(gw, s->device_id, s->client_id);
		if (s->conn)
			send_ack(s->conn, s->client_id, s->server_id);
	}
	free(s);
}

void gw_route_result(struct gw_worker *w, uint64_t send_id, int ok)
{
	struct gw_send *s;

	HASH_FIND(hh, w->sends, &send_id, sizeof(send_id), s);
	if (!s)
		return;
	if (!ok)
		s->failed++;
	if (--s->remaining == 0)
		finish(w, s);
}

static void inflight_done(struct gw_conn *c, struct gw_inflight *in, int ok)
{
	HASH_DEL(c->inflight, in);
	DL_DELETE(c->fifo, in);
	result_to(c->w, in->origin, in->send_id, ok);
	gw_env_unref(in->env);
	free(in);
}

void gw_route_delivered(struct gw_conn *c, const struct proto_ids *ids)
{
	struct gw_inflight *in;
	int head = 0;

	for (size_t i = 0; i < ids->count; i++) {
		HASH_FIND(hh, c->inflight, &ids->ids[i], sizeof(uint64_t), in);
		if (!in)
			continue; /* not ours, or too late: ignored */
		head |= in == c->fifo;
		inflight_done(c, in, 1);
	}
	if (head)
		gw_conn_arm_ack_timer(c);
}

void gw_route_ack_timeout(struct gw_conn *c)
{
	uint64_t now = uv_now(&c->w->loop);

	while (c->fifo && c->fifo->deadline <= now) {
		log_debug("event=ack_timeout conn=%llu device=%lld server_id=%llu",
			  (unsigned long long)c->id, (long long)c->device_id,
			  (unsigned long long)c->fifo->server_id);
		inflight_done(c, c->fifo, 0);
	}
	gw_conn_arm_ack_timer(c);
}

void gw_route_conn_closed(struct gw_conn *c)
{
	struct gw_pending *p, *ptmp;
	struct gw_send *s, *stmp;

	while (c->fifo)
		inflight_done(c, c->fifo, 0);
	LL_FOREACH_SAFE2(c->sends, s, stmp, conn_next)
	{
		s->conn = NULL;
	}
	c->sends = NULL;
	/* Queued SENDs never reached anyone: forget them, the sender retransmits.
	 * The one being looked up is dropped when its lookup returns. */
	LL_FOREACH_SAFE2(c->queue_head, p, ptmp, next)
	{
		if (c->lookup_busy && p == c->queue_head)
			continue;
		LL_DELETE2(c->queue_head, p, next);
		c->queued--;
		gw_dedup_forget(c->w->gw, c->device_id, p->client_id, c->id);
		pending_free(p);
	}
}
