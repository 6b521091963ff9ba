/*
 * storeclient.h - a client of the offline store (queue/queue.h) for tests:
 * requests submitted as a gateway worker would, replies received on a
 * mailbox bound to a libuv loop of the test's own (one per submitting
 * thread), run until the awaited replies are in or a deadline passes.
 */
#ifndef FERRY_TESTS_STORECLIENT_H
#define FERRY_TESTS_STORECLIENT_H

#include <stdint.h>

#include <uv.h>

#include "common/mailbox.h"
#include "queue/queue.h"

#define SC_MAX_RCPT 4
#define SC_WAIT_MS 20000

struct sc_client {
	uv_loop_t loop;
	struct mailbox mb;
	uv_timer_t tick;
	unsigned replies;
};

struct sc_treq {
	struct queue_req req;
	struct mailbox_msg msg;
	struct queue_put puts[SC_MAX_RCPT];
	unsigned order; /* 0: not answered yet; else the reply's rank */
	uint8_t payload[600];
};

void sc_client_init(struct sc_client *cl);
void sc_client_release(struct sc_client *cl);
uint64_t sc_now_ms(void);
/* Run @cl's loop until it has @n replies in all; 0 on timeout. */
int sc_client_wait(struct sc_client *cl, unsigned n, unsigned timeout_ms);

void sc_treq_init(struct sc_treq *t, struct sc_client *cl, enum queue_req_type type);
/* A PUT from user "bob" of @text to the @n devices @rcpt. */
void sc_put_init(struct sc_treq *t, struct sc_client *cl, uint64_t server_id, int64_t sender_device,
		 uint64_t client_id, const int64_t *rcpt, size_t n, const char *text);
/* Submit @t and wait for its reply (fails the test after SC_WAIT_MS); its rc. */
enum ferry_err sc_run_req(struct queue_store *st, struct sc_client *cl, struct sc_treq *t);
enum ferry_err sc_put(struct queue_store *st, struct sc_client *cl, struct sc_treq *t,
		      uint64_t server_id, int64_t sender_device, uint64_t client_id,
		      const int64_t *rcpt, size_t n, const char *text);
/* FETCH into @t (free t->req.rows afterwards). */
enum ferry_err sc_fetch(struct queue_store *st, struct sc_client *cl, struct sc_treq *t,
			int64_t device, int64_t after, size_t limit);
/* COUNT and DELETE; they must succeed. */
uint64_t sc_count(struct queue_store *st, struct sc_client *cl, int64_t device);
uint64_t sc_del(struct queue_store *st, struct sc_client *cl, int64_t device, const uint64_t *ids,
		size_t n);

#endif
