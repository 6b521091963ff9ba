/*
 * receipts.h - the receipt batcher: delivery and read receipts, coalesced.
 *
 * Receipts outnumber messages (every message is delivered to, and read on,
 * each of the recipient's devices), so ferry does not forward them one by
 * one. A batcher keys pending receipt ids by (target device: the device that
 * sent the messages, with its user; peer user: who received or read them;
 * kind) and hands a key to its flush callback when it holds max_batch ids, or when
 * flush_interval has passed since its first id, whichever comes first: one
 * RECEIPT frame then carries many ids.
 *
 * Within a key an id is held once (the same message delivered to three of
 * the peer's devices is one "delivered"). A "read" for an id removes a
 * still-pending "delivered" for it, and a "delivered" for an id whose "read"
 * is pending is dropped: read implies delivered.
 *
 * The batcher holds at most max_ids ids in all; past that, the oldest key is
 * flushed early. It never drops an id: what it was given is flushed exactly
 * once (or superseded by a read).
 *
 * Tags: whoever waits for ids to go out (a device whose RECEIPT frame is
 * answered once its receipts are delivered or stored) passes a tag with
 * them; every batch that takes any of those ids (or already held one of
 * them) hands the tag back when it is flushed, once per batch.
 *
 * Threading: none. A batcher belongs to one thread (its loop's); time comes
 * from the caller in milliseconds on any monotonic clock, so tests step it.
 * The flush callback runs inside receipts_add(), receipts_tick() or
 * receipts_flush_all(), and must not call back into the batcher.
 */
#ifndef FERRY_QUEUE_RECEIPTS_H
#define FERRY_QUEUE_RECEIPTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define RECEIPT_DELIVERED 1
#define RECEIPT_READ 2

/* The most ids one batch (one RECEIPT frame) carries. */
#define RECEIPTS_MAX_BATCH 512

struct receipts;

struct receipts_opts {
	unsigned max_batch;	    /* ids per batch, 1 to RECEIPTS_MAX_BATCH */
	unsigned flush_interval_ms; /* a key waits at most this long (>= 1) */
	size_t max_ids;		    /* ids held in all; 0: 64 * max_batch */
};

/* What receipts_add() takes. */
struct receipt_add {
	int64_t target_device;	 /* the device that sent the messages (0: not named) */
	const char *target_user; /* its user: where the batch goes */
	const char *peer_user;	 /* who received or read them */
	int kind;		 /* RECEIPT_DELIVERED or RECEIPT_READ */
	const uint64_t *ids;	 /* the messages' client ids */
	size_t n;
	void *tag;     /* NULL, or handed back with every batch holding these ids */
	size_t tagged; /* out: batches that took the tag (some may be flushed already) */
};

/* A batch handed to the flush callback; valid for the call only. */
struct receipt_batch {
	int64_t target_device;
	const char *target_user;
	const char *peer_user;
	int kind; /* RECEIPT_DELIVERED or RECEIPT_READ */
	const uint64_t *ids;
	size_t n;
	void *const *tags; /* each distinct tag given with these ids, once */
	size_t ntags;
};

typedef void receipts_flush_fn(void *arg, const struct receipt_batch *b);

struct receipts_stats {
	uint64_t ids_in;     /* ids given to receipts_add() */
	uint64_t duplicates; /* of those, already pending under the same key */
	uint64_t superseded; /* pending "delivered" ids removed by a "read" */
	uint64_t ids_out;    /* ids flushed */
	uint64_t batches;    /* flushes */
	uint64_t by_count;   /* of which: the key reached max_batch */
	uint64_t by_time;    /* the key's interval passed */
	uint64_t by_memory;  /* max_ids reached: the oldest key went early */
	uint64_t pending;    /* now: ids held */
	uint64_t keys;	     /* now: keys held */
};

/* A batcher calling @fn(@arg, batch). NULL: bad options or no memory. */
struct receipts *receipts_new(const struct receipts_opts *o, receipts_flush_fn *fn, void *arg);

/* Flush everything left, then free. NULL: nothing. */
void receipts_free(struct receipts *r);

/*
 * Add @a->n ids at @now_ms (the users are 1 to QUEUE_USER_MAX bytes,
 * copied). A key that reaches max_batch is flushed before this returns
 * (several times if n is large). FERRY_EINVAL: bad kind or user (nothing
 * taken); FERRY_ENOMEM: the ids before the failing one were taken (and the
 * tag may come back with them). Calling again with the same ids is
 * harmless: ids still pending are held once.
 */
enum ferry_err receipts_add(struct receipts *r, struct receipt_add *a, uint64_t now_ms) FERRY_WUR;

/* Flush every key whose interval has passed at @now_ms. */
void receipts_tick(struct receipts *r, uint64_t now_ms);

/* When the next key falls due (ms), UINT64_MAX if none is pending. */
uint64_t receipts_next_due(const struct receipts *r);

/* Flush every key now (stopping). */
void receipts_flush_all(struct receipts *r);

void receipts_stats(const struct receipts *r, struct receipts_stats *out);

#endif
