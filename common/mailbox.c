/*
 * mailbox.c - MPSC queues between threads (see mailbox.h).
 *
 * The consumer takes the whole list under the lock and runs the handlers
 * without it, so producers never wait for a handler.
 */
#include <stddef.h>

#include "common/mailbox.h"
#include "common/banned.h"

static void drain(struct mailbox *mb)
{
	struct mailbox_msg *msg, *next;

	pthread_mutex_lock(&mb->lock);
	msg = mb->head;
	mb->head = mb->tail = NULL;
	pthread_mutex_unlock(&mb->lock);
	for (; msg; msg = next) {
		next = msg->next;
		msg->next = NULL;
		mb->handler(mb, msg, mb->arg);
	}
}

static void on_async(uv_async_t *h)
{
	drain(h->data);
}

enum ferry_err mailbox_init(struct mailbox *mb, uv_loop_t *loop, mailbox_handler *handler,
			    void *arg)
{
	mb->head = mb->tail = NULL;
	mb->handler = handler;
	mb->arg = arg;
	mb->closed = 0;
	if (pthread_mutex_init(&mb->lock, NULL))
		return FERRY_ENOMEM;
	if (uv_async_init(loop, &mb->async, on_async)) {
		pthread_mutex_destroy(&mb->lock);
		return FERRY_EIO;
	}
	mb->async.data = mb;
	return FERRY_OK;
}

enum ferry_err mailbox_post(struct mailbox *mb, struct mailbox_msg *msg)
{
	msg->next = NULL;
	pthread_mutex_lock(&mb->lock);
	if (mb->closed) {
		pthread_mutex_unlock(&mb->lock);
		return FERRY_EUNAVAIL;
	}
	if (mb->tail)
		mb->tail->next = msg;
	else
		mb->head = msg;
	mb->tail = msg;
	/* Under the lock, so that mailbox_close cannot close the handle in between. */
	uv_async_send(&mb->async);
	pthread_mutex_unlock(&mb->lock);
	return FERRY_OK;
}

void mailbox_close(struct mailbox *mb, uv_close_cb close_cb)
{
	pthread_mutex_lock(&mb->lock);
	mb->closed = 1;
	pthread_mutex_unlock(&mb->lock);
	drain(mb);
	uv_close((uv_handle_t *)&mb->async, close_cb);
}
