/*
 * push_int.h - the push module's insides shared between its files: the
 * wake table (wake.c), used by push.c under the service's lock.
 */
#ifndef FERRY_PUSH_PUSH_INT_H
#define FERRY_PUSH_PUSH_INT_H

#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

/*
 * A wake's life:
 *   PENDING  due now, on the ready list (FIFO: the oldest is dropped first
 *            when the table is full)
 *   TIMED    due at @at (a retry after back-off), on the heap
 *   BUSY     taken: its registration is being read or its push is in
 *            flight; owned by that work, never freed by others (a cancel
 *            only marks it)
 *   COOL     pushed; until @at no other push for the device. A wake that
 *            arrives meanwhile sets @again: at @at it becomes PENDING.
 */
enum wake_state {
	WAKE_PENDING,
	WAKE_TIMED,
	WAKE_BUSY,
	WAKE_COOL,
};

struct wake {
	int64_t device;
	UT_hash_handle hh;
	struct wake *prev, *next; /* the ready list (PENDING) */
	uint64_t at;		  /* TIMED, COOL: ms on the caller's clock */
	size_t heap_idx;	  /* TIMED, COOL: place in the heap */
	unsigned attempts;	  /* tries made for the current wake */
	uint8_t state;
	uint8_t again;	   /* BUSY, COOL: woken again since the push */
	uint8_t cancelled; /* BUSY: the device connected; drop it when done */
};

struct wake_table {
	struct wake *hash;  /* every entry, by device */
	struct wake *ready; /* PENDING entries, oldest first (utlist DL) */
	struct wake **heap; /* TIMED and COOL entries, a min-heap on @at */
	size_t nheap, heap_cap;
	size_t count, max;
};

enum wake_add_result {
	WAKE_ADDED,	/* a new pending wake */
	WAKE_REPLACED,	/* added; the oldest pending wake was dropped for it */
	WAKE_COALESCED, /* the device had one already */
	WAKE_FULL,	/* not added: the table is full of pushes in flight or cooling */
	WAKE_NOMEM,
};

/* An empty table holding at most @max entries (>= 1). */
void wake_table_init(struct wake_table *t, size_t max);

/* Free every entry (none may be BUSY in anyone's hands any more). */
void wake_table_release(struct wake_table *t);

/* A wake for @device. */
enum wake_add_result wake_add(struct wake_table *t, int64_t device);

/*
 * @device connected: a PENDING, TIMED or COOL entry is removed, a BUSY one
 * marked cancelled. Returns 1 if a wake that had not been pushed yet was
 * cancelled (PENDING, TIMED, BUSY, or COOL with @again), else 0.
 */
int wake_cancel(struct wake_table *t, int64_t device);

/*
 * Take up to @max wakes due at @now: TIMED ones whose time has come and
 * COOL ones with @again become PENDING (COOL ones without are removed),
 * then the oldest PENDING ones become BUSY and go to @out. Returns how many.
 */
size_t wake_take(struct wake_table *t, uint64_t now, struct wake **out, size_t max);

/* The earliest @at on the heap, UINT64_MAX if none. */
uint64_t wake_next_at(const struct wake_table *t);

/* 1 if PENDING wakes are waiting to be taken. */
int wake_ready(const struct wake_table *t);

/*
 * Ends of a BUSY entry's work. Each removes the entry if it was cancelled.
 *   wake_cool:   pushed (or given up): COOL until @until
 *   wake_retry:  try again at @at (TIMED)
 *   wake_remove: forget it now
 */
void wake_cool(struct wake_table *t, struct wake *w, uint64_t until);
void wake_retry(struct wake_table *t, struct wake *w, uint64_t at);
void wake_remove(struct wake_table *t, struct wake *w);

/* ---- note.c ---- */

struct push_note;

/*
 * The APNs body of direct push @n: {"aps":{...}} with the alert, badge and
 * sound (or content-available when @background), and the keys of
 * n->data_json beside it. malloc'ed; NULL with a message in @err when the
 * data is not an object of strings, has an "aps" key, the text is not
 * UTF-8, or the body would exceed PUSH_APNS_MAX_PAYLOAD.
 */
char *push_note_apns_payload(const struct push_note *n, int background, char *err, size_t errlen);

#endif
