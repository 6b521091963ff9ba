/*
 * route.c - from SEND to ACK: recipients, fan-out, results.
 *
 * A SEND is checked (sizes, duplicate device ids, retransmission), given a
 * server id and turned into encoded DELIVER frames at once (one shared frame
 * for all devices, or one per named device), then queued on its connection
 * until the recipient's devices are known (directory cache, or a lookup on
 * the threadpool). Lookups run one at a time per connection, so a device's
 * SENDs keep their order.
 *
 * Fan-out, under the presence lock: each target device that has a
 * connection gets a DELIVER message on that connection's worker (deliver.c
 * writes it, or stores it if the connection is catching up or gone); the
 * targets without one are written to the store in one PUT, submitted before
 * the lock is released. Each target reports back once: acked, stored, full,
 * gone or failed.
 *
 * The answer: ACK(delivered) when every target acknowledged it,
 * ACK(stored) when every target acknowledged it or has it committed in the
 * store, NACK queue_full when a target's queue was full, NACK retry_later
 * when a target could be neither (the store is down): the sender keeps the
 * envelope and retransmits it with the same client id. Targets that did get
 * it drop the retransmission by (sender device, client id); the store
 * recognises it by its unique key and answers with the first server id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "common/fault.h"
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

void gw_send_ack(struct gw_conn *c, uint64_t client_id, uint64_t server_id, int stored)
{
	struct proto_frame f;

	/* Not "= { .type = ... }": that zeroes the whole 4 KiB frame. */
	f.type = PROTO_ACK;
	f.u.ack = (struct proto_ack){ .client_id = client_id,
				      .server_id = server_id,
				      .status = stored ? PROTO_ACK_STORED : PROTO_ACK_DELIVERED };
	gw_conn_send_frame(c, &f);
}

void gw_send_nack(struct gw_conn *c, uint64_t client_id, unsigned reason, const char *text)
{
	struct proto_frame f;

	if (reason >= 1 && reason <= 5)
		gw_stat(c->w, GW_ST_NACK + (int)reason - 1, 1);
	f.type = PROTO_NACK;
	f.u.nack = (struct proto_nack){ .client_id = client_id,
					.reason = reason,
					.text = { (const uint8_t *)text,
						  strnlen(text, PROTO_MAX_TEXT) } };
	gw_conn_send_frame(c, &f);
}

/* Drop @p's envelopes (the ones it has: one, or one per named device). */
static void pending_release(struct gw_pending *p)
{
	size_t n = p->ntargets ? p->ntargets : 1;

	for (size_t i = 0; i < n; i++)
		gw_env_unref(p->envs[i]);
}

static void pending_free(struct gw_pending *p)
{
	pending_release(p);
	free(p);
}

/* ---- accepting a SEND ---- */

static struct gw_env *encode_deliver(struct gw_conn *c, const struct proto_send *s,
				     uint64_t server_id, uint64_t now, struct proto_bytes payload)
{
	struct gw_env *env = gw_env_deliver(server_id, c->user, strlen(c->user), c->device_id,
					    s->client_id, now, payload.p, payload.len);

	if (env)
		env->ttl = s->ttl > UINT32_MAX ? UINT32_MAX : (unsigned)s->ttl;
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

/* Fill @p from @s: everything but what the lookup fills (found, nfound),
 * so that a SEND routed at once needs no zeroed 1 KiB of its own. -1: no
 * memory (@p holds no envelope then). */
static int pending_fill(struct gw_conn *c, const struct proto_send *s, uint64_t server_id,
			struct gw_pending *p)
{
	uint64_t now = gw_now_ms();
	size_t n = s->ntargets ? s->ntargets : 1;

	p->next = NULL;
	p->client_id = s->client_id;
	p->server_id = server_id;
	memcpy(p->to_user, s->to_user.p, s->to_user.len);
	p->to_user[s->to_user.len] = '\0';
	p->ntargets = s->ntargets;
	p->rc = FERRY_OK;
	for (size_t i = 0; i < n; i++) {
		struct proto_bytes payload = s->ntargets ? s->targets[i].payload : s->payload;

		if (s->ntargets)
			p->devices[i] = (int64_t)s->targets[i].device_id;
		p->envs[i] = encode_deliver(c, s, server_id, now, payload);
		if (!p->envs[i]) {
			p->ntargets = i; /* release the ones made */
			if (i)
				pending_release(p);
			return -1;
		}
	}
	return 0;
}

static void start_lookup(struct gw_conn *c);
static void dispatch(struct gw_conn *c, struct gw_pending *p);

void gw_route_send(struct gw_conn *c, const struct proto_send *s)
{
	struct gateway *gw = c->w->gw;
	const char *why = NULL;
	struct gw_pending *p, now;
	uint64_t server_id, acked_id = 0;
	unsigned reason = check_send(c, s, &why);

	if (reason) {
		gw_send_nack(c, s->client_id, reason, why);
		return;
	}
	server_id = atomic_fetch_add(&gw->next_server_id, 1);
	switch (gw_dedup_begin(gw, c->device_id, s->client_id, c->id, server_id, &acked_id)) {
	case GW_DEDUP_ACKED:
		gw_send_ack(c, s->client_id, acked_id, 1);
		return;
	case GW_DEDUP_IGNORE:
		return;
	case GW_DEDUP_NEW:
		break;
	}
	gw_stat(c->w, GW_ST_ENV_ACCEPTED, 1);
	/* Nothing ahead of it and the recipients known: route it now, from
	 * the stack. */
	if (!c->queue_head) {
		memcpy(now.to_user, s->to_user.p, s->to_user.len);
		now.to_user[s->to_user.len] = '\0';
		if (gw_dir_get(gw, now.to_user, now.found, &now.nfound)) {
			if (pending_fill(c, s, server_id, &now))
				goto no_memory;
			dispatch(c, &now);
			pending_release(&now);
			return;
		}
	}
	p = malloc(sizeof(*p));
	if (!p)
		goto no_memory;
	if (pending_fill(c, s, server_id, p)) {
		free(p);
		goto no_memory;
	}
	LL_APPEND2(c->queue_head, p, next);
	if (++c->queued >= GW_MAX_QUEUED_SENDS)
		gw_conn_pause(c);
	if (!c->lookup_busy)
		start_lookup(c);
	return;
no_memory:
	gw_dedup_forget(gw, c->device_id, s->client_id, c->id);
	gw_send_nack(c, s->client_id, PROTO_NACK_RETRY_LATER, "out of memory");
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

int gw_ids_have(const int64_t *ids, size_t n, int64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
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
		gw_send_nack(c, p->client_id, PROTO_NACK_RETRY_LATER,
			     "cannot look up recipients now");
		return -1;
	}
	if (p->nfound == 0) {
		snprintf(why, sizeof(why), "no user '%s'", p->to_user);
		gw_send_nack(c, p->client_id, PROTO_NACK_UNKNOWN_RECIPIENT, why);
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
		if (!gw_ids_have(p->found, p->nfound, p->devices[i])) {
			snprintf(why, sizeof(why), "device %lld is not a device of user '%s'",
				 (long long)p->devices[i], p->to_user);
			gw_send_nack(c, p->client_id, PROTO_NACK_UNKNOWN_RECIPIENT, why);
			return -1;
		}
		dev[n] = p->devices[i];
		env[n++] = p->envs[i];
	}
	return n;
}

static void finish(struct gw_worker *w, struct gw_send *s);

/* Post DELIVER for target @dev (connection @cid on worker @wk); under the
 * presence lock only through the mailbox. 0, or -1: not posted. */
static int post_deliver(struct gw_worker *w, struct gw_send *s, int64_t dev, struct gw_env *env,
			unsigned wk, uint64_t cid, int later)
{
	struct gw_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return -1;
	m->kind = GW_MSG_DELIVER;
	m->conn_id = cid;
	m->device_id = dev;
	m->env = gw_env_ref(env);
	m->origin = w->index;
	m->send_id = s->id;
	if (!later) {
		gw_post(w->gw, w, wk, m);
		return 0;
	}
	if (gw_post_later(w->gw, wk, m) == 0)
		return 0;
	gw_env_unref(m->env);
	free(m);
	return -1;
}

/*
 * Send @s's envelopes to @n targets. Under the presence lock: DELIVERs to
 * other workers' connections are queued on their mailboxes, and the targets
 * without a connection are submitted to the store, so that a device that
 * registers later finds them committed (its barrier comes after). DELIVERs
 * to this worker's own connections are handled after the lock is released:
 * nothing can happen to those connections in between.
 */
static void fan_out(struct gw_worker *w, struct gw_send *s, const int64_t *dev,
		    struct gw_env *const *env, int n)
{
	struct gateway *gw = w->gw;
	int64_t off[GW_MAX_USER_DEVICES];
	int local[GW_MAX_USER_DEVICES];
	uint64_t local_conn[GW_MAX_USER_DEVICES];
	unsigned fails = 0;
	int noff = 0, nlocal = 0, i, j;

	/* One extra count held until the loop is done, so that results that
	 * come back synchronously cannot finish the send under our feet. */
	s->remaining = (unsigned)n + 1;
	s->targets = (unsigned)n;
	pthread_mutex_lock(&gw->presence_lock);
	for (i = 0; i < n; i++) {
		unsigned wk;
		uint64_t cid;

		if (!gw_presence_find_locked(gw, dev[i], &wk, &cid)) {
			off[noff++] = i;
		} else if (wk == w->index) {
			local_conn[nlocal] = cid;
			local[nlocal++] = i;
		} else if (post_deliver(w, s, dev[i], env[i], wk, cid, 1)) {
			fails++;
		}
	}
	/* Offline targets: one PUT per distinct envelope (one for all devices,
	 * or one per device when each has its own payload). */
	for (i = 0; i < noff;) {
		int64_t ids[GW_MAX_USER_DEVICES];
		struct gw_env *e = env[off[i]];
		struct gw_op *op;
		size_t k = 0;

		for (j = i; j < noff && env[off[j]] == e; j++)
			ids[k++] = dev[off[j]];
		op = gw_op_put(w, e, ids, k, w->index, s->id, 0);
		if (op) {
			op->wake = GW_WAKE_IF_AWAY; /* no connection */
			gw_op_submit(w, op);
		} else
			fails += (unsigned)k;
		i = j;
	}
	pthread_mutex_unlock(&gw->presence_lock);
	for (i = 0; i < nlocal; i++)
		if (post_deliver(w, s, dev[local[i]], env[local[i]], w->index, local_conn[i], 0))
			fails++;
	for (unsigned f = 0; f < fails; f++)
		gw_route_result(w, s->id, GW_RES_FAILED, 0);
	gw_route_result(w, s->id, GW_RES_ACKED, 0); /* the extra count */
}

static struct gw_send *send_new(struct gw_worker *w)
{
	struct gw_send *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->id = ++w->next_send_id;
	HASH_ADD(hh, w->sends, id, sizeof(s->id), s);
	return s;
}

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
	s = send_new(w);
	if (!s) {
		gw_dedup_forget(gw, c->device_id, p->client_id, c->id);
		gw_send_nack(c, p->client_id, PROTO_NACK_RETRY_LATER, "out of memory");
		return;
	}
	s->conn = c;
	s->conn_id = c->id;
	s->device_id = c->device_id;
	s->client_id = p->client_id;
	s->server_id = p->server_id;
	LL_PREPEND2(c->sends, s, conn_next);
	fan_out(w, s, dev, env, n);
}

static void result_apply(struct gw_worker *w, uint64_t send_id, enum gw_result r,
			 uint64_t server_id);

static void result_post(struct gw_worker *w, unsigned origin, uint64_t send_id, enum gw_result r,
			uint64_t server_id)
{
	struct gw_msg *m;

	if (origin == w->index) {
		result_apply(w, send_id, r, server_id);
		return;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		ferry_panic("out of memory reporting a delivery result");
	m->kind = GW_MSG_RESULT;
	m->send_id = send_id;
	m->result = r;
	m->server_id = server_id;
	gw_post(w->gw, w, origin, m);
}

void gw_route_result_to(struct gw_worker *w, unsigned origin, uint64_t send_id, enum gw_result r)
{
	result_post(w, origin, send_id, r, 0);
}

void gw_route_result_dup(struct gw_worker *w, unsigned origin, uint64_t send_id, uint64_t server_id)
{
	result_post(w, origin, send_id, GW_RES_STORED, server_id);
}

/* ---- results ---- */

static void inject_done(struct gw_send *s)
{
	struct gw_inject_job *job = s->job;

	pthread_mutex_lock(&job->lock);
	job->targets = s->targets;
	job->failed = s->failed;
	job->full = s->full;
	job->stored = s->stored;
	job->dup_id = s->dup_id;
	job->rc = s->failed ? FERRY_EUNAVAIL : s->full ? FERRY_ELIMIT : FERRY_OK;
	job->done = 1;
	pthread_cond_signal(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

static void finish(struct gw_worker *w, struct gw_send *s)
{
	struct gateway *gw = w->gw;
	char why[PROTO_MAX_TEXT];

	HASH_DEL(w->sends, s);
	if (s->job) {
		inject_done(s);
		free(s);
		return;
	}
	if (s->flush) {
		gw_receipt_sent(w, s->flush, s);
		free(s);
		return;
	}
	if (s->conn)
		LL_DELETE2(s->conn->sends, s, conn_next);
	if (s->failed) {
		gw_dedup_forget(gw, s->device_id, s->client_id, s->conn_id);
		if (s->conn) {
			snprintf(why, sizeof(why),
				 "%u device(s) did not acknowledge it and it could not be stored "
				 "now",
				 s->failed);
			gw_send_nack(s->conn, s->client_id, PROTO_NACK_RETRY_LATER, why);
		}
	} else if (s->full) {
		gw_dedup_forget(gw, s->device_id, s->client_id, s->conn_id);
		if (s->conn) {
			snprintf(why, sizeof(why), "the offline queue of %u device(s) is full",
				 s->full);
			gw_send_nack(s->conn, s->client_id, PROTO_NACK_QUEUE_FULL, why);
		}
	} else {
		uint64_t id = s->dup_id ? s->dup_id : s->server_id;

		gw_dedup_acked(gw, s->device_id, s->client_id, id);
		if (s->conn)
			gw_send_ack(s->conn, s->client_id, id, s->stored > 0);
		FAULT_POINT("route_after_ack");
	}
	free(s);
}

void gw_route_result(struct gw_worker *w, uint64_t send_id, enum gw_result r, uint64_t server_id)
{
	result_apply(w, send_id, r, server_id);
}

static void result_apply(struct gw_worker *w, uint64_t send_id, enum gw_result r,
			 uint64_t server_id)
{
	struct gw_send *s;

	HASH_FIND(hh, w->sends, &send_id, sizeof(send_id), s);
	if (!s)
		return;
	/* A retransmission the store had from before (the dedup table does not
	 * survive a restart): answer with the id the sender saw first. */
	if (server_id && !s->dup_id)
		s->dup_id = server_id;
	switch (r) {
	case GW_RES_ACKED:
	case GW_RES_GONE:
		break;
	case GW_RES_STORED:
		s->stored++;
		break;
	case GW_RES_FULL:
		s->full++;
		break;
	case GW_RES_FAILED:
		s->failed++;
		break;
	}
	if (--s->remaining == 0)
		finish(w, s);
}

void gw_route_sender_closed(struct gw_conn *c)
{
	struct gw_pending *p, *ptmp;
	struct gw_send *s, *stmp;

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

/* ---- envelopes from the server itself ---- */

void gw_route_inject(struct gw_worker *w, struct gw_inject_job *job)
{
	struct gw_env *env[GW_MAX_USER_DEVICES];
	struct gw_send *s = send_new(w);

	if (!s) {
		struct gw_send tmp = { .job = job, .failed = 1 };

		inject_done(&tmp);
		return;
	}
	s->job = job;
	s->server_id = job->env->server_id;
	for (size_t i = 0; i < job->n; i++)
		env[i] = job->env;
	fan_out(w, s, job->devices, env, (int)job->n);
}

/* ---- receipts ---- */

void gw_route_receipts(struct gw_worker *w, struct gw_rflush *fl, const int64_t *devices, size_t n)
{
	struct gw_env *env[GW_MAX_USER_DEVICES];
	struct gw_send *s = send_new(w);

	if (!s) {
		struct gw_send tmp = { .flush = fl, .failed = 1 };

		gw_receipt_sent(w, fl, &tmp);
		return;
	}
	s->flush = fl;
	s->server_id = fl->env->server_id;
	for (size_t i = 0; i < n; i++)
		env[i] = fl->env;
	fan_out(w, s, devices, env, (int)n);
}

void gw_route_release(struct gw_worker *w)
{
	struct gw_send *s, *tmp;

	HASH_ITER(hh, w->sends, s, tmp)
	{
		HASH_DEL(w->sends, s);
		if (s->job) {
			s->failed++;
			inject_done(s);
		} else if (s->flush) {
			s->failed++;
			gw_receipt_sent(w, s->flush, s);
		}
		free(s);
	}
}
