/*
 * storeclient.c - the offline store's test client (storeclient.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tests/integration/storeclient.h"
#include "common/banned.h"

static void on_reply(struct mailbox *mb, struct mailbox_msg *msg, void *arg)
{
	struct sc_client *cl = arg;
	struct sc_treq *t = (struct sc_treq *)(void *)((char *)msg - offsetof(struct sc_treq, msg));

	t->order = ++cl->replies;
}

static void on_tick(uv_timer_t *t)
{
}

void sc_client_init(struct sc_client *cl)
{
	memset(cl, 0, sizeof(*cl));
	if (uv_loop_init(&cl->loop) || mailbox_init(&cl->mb, &cl->loop, on_reply, cl) ||
	    uv_timer_init(&cl->loop, &cl->tick))
		abort();
	/* Wakes uv_run now and then so that deadlines are checked. */
	uv_timer_start(&cl->tick, on_tick, 20, 20);
}

void sc_client_release(struct sc_client *cl)
{
	mailbox_close(&cl->mb, NULL);
	uv_close((uv_handle_t *)&cl->tick, NULL);
	uv_run(&cl->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&cl->loop))
		abort();
}

uint64_t sc_now_ms(void)
{
	return uv_hrtime() / 1000000;
}

/* Run @cl's loop until it has @n replies in all; 0 on timeout. */
int sc_client_wait(struct sc_client *cl, unsigned n, unsigned timeout_ms)
{
	uint64_t end = sc_now_ms() + timeout_ms;

	while (cl->replies < n && sc_now_ms() < end)
		uv_run(&cl->loop, UV_RUN_ONCE);
	return cl->replies >= n;
}

/* ---- requests ---- */

void sc_treq_init(struct sc_treq *t, struct sc_client *cl, enum queue_req_type type)
{
	memset(t, 0, sizeof(*t));
	t->req.reply = &t->msg;
	t->req.reply_to = &cl->mb;
	t->req.type = type;
	t->req.puts = t->puts;
}

void sc_put_init(struct sc_treq *t, struct sc_client *cl, uint64_t server_id, int64_t sender_device,
		 uint64_t client_id, const int64_t *rcpt, size_t n, const char *text)
{
	sc_treq_init(t, cl, QUEUE_REQ_PUT);
	t->req.server_id = server_id;
	t->req.sender_user = "bob";
	t->req.sender_device = sender_device;
	t->req.client_id = client_id;
	t->req.kind = QUEUE_KIND_MESSAGE;
	t->req.len = strlen(text);
	memcpy(t->payload, text, t->req.len);
	t->req.payload = t->payload;
	t->req.created_ms = (uint64_t)time(NULL) * 1000;
	t->req.nputs = n;
	for (size_t i = 0; i < n; i++)
		t->puts[i].recipient = rcpt[i];
}

/* Submit @t and wait for its reply; returns its rc. */
enum ferry_err sc_run_req(struct queue_store *st, struct sc_client *cl, struct sc_treq *t)
{
	unsigned before = cl->replies;

	queue_store_submit(st, &t->req);
	if (!sc_client_wait(cl, before + 1, SC_WAIT_MS))
		fail_msg("no reply from the store within %d ms", SC_WAIT_MS);
	assert_true(t->order > 0);
	return t->req.rc;
}

enum ferry_err sc_put(struct queue_store *st, struct sc_client *cl, struct sc_treq *t,
		      uint64_t server_id, int64_t sender_device, uint64_t client_id,
		      const int64_t *rcpt, size_t n, const char *text)
{
	sc_put_init(t, cl, server_id, sender_device, client_id, rcpt, n, text);
	return sc_run_req(st, cl, t);
}

/* FETCH into @t (free t->req.rows afterwards). */
enum ferry_err sc_fetch(struct queue_store *st, struct sc_client *cl, struct sc_treq *t,
			int64_t device, int64_t after, size_t limit)
{
	sc_treq_init(t, cl, QUEUE_REQ_FETCH);
	t->req.device = device;
	t->req.after_seq = after;
	t->req.limit = limit;
	return sc_run_req(st, cl, t);
}

uint64_t sc_count(struct queue_store *st, struct sc_client *cl, int64_t device)
{
	struct sc_treq t;

	sc_treq_init(&t, cl, QUEUE_REQ_COUNT);
	t.req.device = device;
	assert_int_equal(sc_run_req(st, cl, &t), FERRY_OK);
	return t.req.count;
}

uint64_t sc_del(struct queue_store *st, struct sc_client *cl, int64_t device, const uint64_t *ids,
		size_t n)
{
	struct sc_treq t;

	sc_treq_init(&t, cl, QUEUE_REQ_DELETE);
	t.req.device = device;
	t.req.ids = ids; /* borrowed until the reply: we wait for it */
	t.req.nids = n;
	assert_int_equal(sc_run_req(st, cl, &t), FERRY_OK);
	return t.req.count;
}
