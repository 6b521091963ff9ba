/*
 * mailbox.h - a multi-producer, single-consumer queue bound to a libuv loop.
 *
 * The only way threads talk to each other in ferry: a producer on any thread
 * posts a message (mailbox_post), and the consumer's loop runs the handler
 * for every queued message, in posting order, on its own thread. Posting
 * takes a short mutex and wakes the loop with uv_async_send, which coalesces
 * wake-ups, so a burst of messages costs one wake-up.
 *
 * Ownership: a posted message belongs to the mailbox until the handler runs;
 * the handler then owns it (usually frees it). Messages embed struct
 * mailbox_msg as their first member or anywhere (container_of).
 */
#ifndef FERRY_COMMON_MAILBOX_H
#define FERRY_COMMON_MAILBOX_H

#include <pthread.h>

#include <uv.h>

#include "common/err.h"

struct mailbox_msg {
	struct mailbox_msg *next;
};

struct mailbox;
typedef void mailbox_handler(struct mailbox *mb, struct mailbox_msg *msg, void *arg);

struct mailbox {
	uv_async_t async;
	pthread_mutex_t lock;
	struct mailbox_msg *head, *tail;
	mailbox_handler *handler;
	void *arg;
	int closed;
};

/* Bind @mb to @loop (call on the loop's thread before any post). */
enum ferry_err mailbox_init(struct mailbox *mb, uv_loop_t *loop, mailbox_handler *handler,
			    void *arg) FERRY_WUR;

/*
 * Queue @msg and wake the consumer. Safe from any thread. Returns
 * FERRY_EUNAVAIL (and keeps nothing) once the mailbox is closed: the caller
 * still owns @msg then.
 */
enum ferry_err mailbox_post(struct mailbox *mb, struct mailbox_msg *msg) FERRY_WUR;

/*
 * Refuse further posts, run the handler for what is still queued, and close
 * the async handle (on the consumer's thread). @close_cb runs when the handle
 * is closed (may be NULL).
 */
void mailbox_close(struct mailbox *mb, uv_close_cb close_cb);

#endif
