/*
 * wake.c - the wake table: which devices want a push, which have one in
 * flight, which must wait (push_int.h).
 *
 * A hash by device for coalescing and cancelling, a FIFO of the wakes due
 * now, and a binary min-heap of the ones due later (retries after back-off,
 * cool-downs), so a timer needs only the heap's top and a table of 100,000
 * cooling devices costs O(log n) per event. The table is bounded: when it
 * is full, a new wake pushes the oldest due one out; if none is due (every
 * entry in flight or cooling), the new wake is refused. The caller counts
 * both. No locking here: push.c holds its lock around every call.
 */
#include <stdlib.h>

#include <utlist.h>

#include "common/log.h"
#include "push/push_int.h"
#include "common/banned.h"

#define HEAP_MIN_CAP 64

void wake_table_init(struct wake_table *t, size_t max)
{
	*t = (struct wake_table){ .max = max ? max : 1 };
}

void wake_table_release(struct wake_table *t)
{
	struct wake *w, *tmp;

	HASH_ITER(hh, t->hash, w, tmp)
	{
		HASH_DEL(t->hash, w);
		free(w);
	}
	free(t->heap);
	*t = (struct wake_table){ .max = t->max };
}

/* ---- heap ---- */

static void heap_set(struct wake_table *t, size_t i, struct wake *w)
{
	t->heap[i] = w;
	w->heap_idx = i;
}

static void heap_up(struct wake_table *t, size_t i)
{
	struct wake *w = t->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (t->heap[parent]->at <= w->at)
			break;
		heap_set(t, i, t->heap[parent]);
		i = parent;
	}
	heap_set(t, i, w);
}

static void heap_down(struct wake_table *t, size_t i)
{
	struct wake *w = t->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= t->nheap)
			break;
		if (c + 1 < t->nheap && t->heap[c + 1]->at < t->heap[c]->at)
			c++;
		if (w->at <= t->heap[c]->at)
			break;
		heap_set(t, i, t->heap[c]);
		i = c;
	}
	heap_set(t, i, w);
}

/* The heap never holds more than the table: growing it fails only when the
 * entry itself could not have been allocated either. */
static int heap_push(struct wake_table *t, struct wake *w)
{
	if (t->nheap == t->heap_cap) {
		size_t cap = t->heap_cap ? 2 * t->heap_cap : HEAP_MIN_CAP;
		struct wake **h = reallocarray(t->heap, cap, sizeof(*h));

		if (!h)
			return -1;
		t->heap = h;
		t->heap_cap = cap;
	}
	t->heap[t->nheap++] = w;
	heap_up(t, t->nheap - 1);
	return 0;
}

static void heap_del(struct wake_table *t, struct wake *w)
{
	size_t i = w->heap_idx;
	struct wake *last = t->heap[--t->nheap];

	if (t->heap[i] != w)
		ferry_panic("wake heap: entry of device %lld not at its index",
			    (long long)w->device);
	if (last == w)
		return;
	heap_set(t, i, last);
	if (i > 0 && t->heap[(i - 1) / 2]->at > last->at)
		heap_up(t, i);
	else
		heap_down(t, i);
}

/* ---- entries ---- */

static void unlink_entry(struct wake_table *t, struct wake *w)
{
	if (w->state == WAKE_PENDING)
		DL_DELETE(t->ready, w);
	else if (w->state == WAKE_TIMED || w->state == WAKE_COOL)
		heap_del(t, w);
}

static void drop(struct wake_table *t, struct wake *w)
{
	unlink_entry(t, w);
	HASH_DEL(t->hash, w);
	t->count--;
	free(w);
}

static void make_pending(struct wake_table *t, struct wake *w)
{
	w->state = WAKE_PENDING;
	w->again = 0;
	DL_APPEND(t->ready, w);
}

enum wake_add_result wake_add(struct wake_table *t, int64_t device)
{
	enum wake_add_result res = WAKE_ADDED;
	struct wake *w;

	HASH_FIND(hh, t->hash, &device, sizeof(device), w);
	if (w) {
		/* Cancelled while busy, then away again: the entry must stay,
		 * and push once its cool-down is over. */
		if (w->state == WAKE_BUSY && w->cancelled)
			w->cancelled = 0;
		if (w->state == WAKE_BUSY || w->state == WAKE_COOL)
			w->again = 1;
		return WAKE_COALESCED;
	}
	if (t->count >= t->max) {
		if (!t->ready)
			return WAKE_FULL;
		drop(t, t->ready);
		res = WAKE_REPLACED;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return WAKE_NOMEM;
	w->device = device;
	HASH_ADD(hh, t->hash, device, sizeof(w->device), w);
	t->count++;
	make_pending(t, w);
	return res;
}

int wake_cancel(struct wake_table *t, int64_t device)
{
	struct wake *w;
	int unsent;

	HASH_FIND(hh, t->hash, &device, sizeof(device), w);
	if (!w)
		return 0;
	if (w->state == WAKE_BUSY) {
		int first = !w->cancelled;

		w->cancelled = 1;
		w->again = 0;
		return first;
	}
	unsent = w->state != WAKE_COOL || w->again;
	drop(t, w);
	return unsent;
}

size_t wake_take(struct wake_table *t, uint64_t now, struct wake **out, size_t max)
{
	size_t n = 0;

	while (t->nheap && t->heap[0]->at <= now) {
		struct wake *w = t->heap[0];

		heap_del(t, w);
		if (w->state == WAKE_COOL && !w->again) {
			HASH_DEL(t->hash, w);
			t->count--;
			free(w);
			continue;
		}
		if (w->state == WAKE_COOL)
			w->attempts = 0; /* a new wake, not a retry */
		make_pending(t, w);
	}
	while (n < max && t->ready) {
		struct wake *w = t->ready;

		DL_DELETE(t->ready, w);
		w->state = WAKE_BUSY;
		w->cancelled = 0;
		out[n++] = w;
	}
	return n;
}

uint64_t wake_next_at(const struct wake_table *t)
{
	return t->nheap ? t->heap[0]->at : UINT64_MAX;
}

int wake_ready(const struct wake_table *t)
{
	return t->ready != NULL;
}

static int busy_end(struct wake_table *t, struct wake *w)
{
	if (w->state != WAKE_BUSY)
		ferry_panic("wake of device %lld ended while not busy", (long long)w->device);
	if (!w->cancelled)
		return 0;
	drop(t, w);
	return 1;
}

static void to_heap(struct wake_table *t, struct wake *w, enum wake_state st, uint64_t at)
{
	w->state = (uint8_t)st;
	w->at = at;
	if (heap_push(t, w)) {
		/* Out of memory: forget the wake rather than lose track of it. */
		w->state = WAKE_BUSY;
		w->cancelled = 1;
		busy_end(t, w);
	}
}

void wake_cool(struct wake_table *t, struct wake *w, uint64_t until)
{
	if (!busy_end(t, w))
		to_heap(t, w, WAKE_COOL, until);
}

void wake_retry(struct wake_table *t, struct wake *w, uint64_t at)
{
	if (!busy_end(t, w))
		to_heap(t, w, WAKE_TIMED, at);
}

void wake_remove(struct wake_table *t, struct wake *w)
{
	if (w->state != WAKE_BUSY)
		ferry_panic("wake of device %lld removed while not busy", (long long)w->device);
	w->cancelled = 1;
	busy_end(t, w);
}
