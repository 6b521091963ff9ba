/*
 * sendq.c - the SENDs and RECEIPTs a client is responsible for: queued,
 * written and not answered, or NACKed and waiting for a retry. Both are
 * answered by ACK or NACK naming their client id, so one queue serves both;
 * it only sees encoded frames.
 *
 * Design: a doubly linked list in the order the application queued them, so
 * that retransmits after a reconnect go out in the original order. Each entry
 * owns its encoded frame (one allocation), built once with its client id and
 * written again unchanged on every retransmit. Counts and bytes are capped by
 * the application's limits; add fails instead of growing past them. Lookups
 * by client id walk from the head, where answers usually are (the server
 * answers roughly in order). Pure: the clock comes in as @now.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "common/banned.h"

void fc_sendq_init(struct fc_sendq *q, size_t max_count, size_t max_bytes)
{
	q->head = q->tail = NULL;
	q->count = q->bytes = 0;
	q->max_count = max_count;
	q->max_bytes = max_bytes;
}

void fc_sendq_release(struct fc_sendq *q)
{
	struct fc_send *s = q->head, *next;

	for (; s; s = next) {
		next = s->next;
		free(s);
	}
	fc_sendq_init(q, q->max_count, q->max_bytes);
}

enum ferry_err fc_sendq_add(struct fc_sendq *q, uint64_t client_id, const uint8_t *frame,
			    size_t len, size_t body_len, size_t max_payload)
{
	struct fc_send *s;

	if (q->count >= q->max_count || len > q->max_bytes || q->bytes > q->max_bytes - len)
		return FERRY_ELIMIT;
	if (fc_sendq_find(q, client_id))
		return FERRY_EEXIST;
	s = malloc(sizeof(*s) + len);
	if (!s)
		return FERRY_ENOMEM;
	*s = (struct fc_send){ .client_id = client_id,
			       .state = FC_SEND_QUEUED,
			       .body_len = body_len,
			       .max_payload = max_payload,
			       .len = len };
	memcpy(s->frame, frame, len);
	s->prev = q->tail;
	if (q->tail)
		q->tail->next = s;
	else
		q->head = s;
	q->tail = s;
	q->count++;
	q->bytes += len;
	return FERRY_OK;
}

struct fc_send *fc_sendq_find(const struct fc_sendq *q, uint64_t client_id)
{
	for (struct fc_send *s = q->head; s; s = s->next) {
		if (s->client_id == client_id)
			return s;
	}
	return NULL;
}

void fc_sendq_unlink(struct fc_sendq *q, struct fc_send *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		q->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		q->tail = s->prev;
	s->prev = s->next = NULL;
	q->count--;
	q->bytes -= s->len;
}

static int is_ready(const struct fc_send *s, uint64_t now)
{
	return s->state == FC_SEND_QUEUED || (s->state == FC_SEND_WAITING && s->retry_at <= now);
}

struct fc_send *fc_sendq_ready(const struct fc_sendq *q, struct fc_send *from, uint64_t now)
{
	for (struct fc_send *s = from ? from : q->head; s; s = s->next) {
		if (is_ready(s, now))
			return s;
	}
	return NULL;
}

void fc_sendq_requeue(struct fc_sendq *q)
{
	for (struct fc_send *s = q->head; s; s = s->next) {
		if (s->state == FC_SEND_INFLIGHT)
			s->state = FC_SEND_QUEUED;
	}
}

void fc_sendq_wait(struct fc_send *s, uint64_t now, uint64_t delay_ms)
{
	s->state = FC_SEND_WAITING;
	s->retry_at = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
}

uint64_t fc_sendq_next_retry(const struct fc_sendq *q)
{
	uint64_t t = UINT64_MAX;

	for (const struct fc_send *s = q->head; s; s = s->next) {
		if (s->state == FC_SEND_WAITING && s->retry_at < t)
			t = s->retry_at;
	}
	return t;
}
