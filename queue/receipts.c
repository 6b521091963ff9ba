/*
 * receipts.c - the receipt batcher (receipts.h).
 *
 * A hash of keys (target device and user, peer user, kind), each with its
 * ids (and the tags given with them) in a
 * small growable array, and a list of the keys in the order they were
 * created. Every key waits the same flush_interval, so that list is also
 * the order they fall due: receipts_tick() and receipts_next_due() look at
 * its head only. A key is freed when it is flushed; the next id for it makes
 * a new one with a new deadline.
 *
 * Ids within a key are found by a linear scan: a key holds at most
 * max_batch (<= 512) ids, and a batch is flushed when full.
 *
 * The hash of a key is computed over its meaningful bytes only (the device,
 * the kind and the two names up to their NUL), not over the 144 bytes of
 * the zero-padded struct: uthash's default hash of the whole struct was the
 * largest single cost of a delivered receipt (about 1,100 instructions per
 * lookup, two lookups per acknowledged message). Keys still compare whole.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <uthash.h>
#include <utlist.h>

#include "common/log.h"
#include "queue/queue.h"
#include "queue/receipts.h"
#include "common/banned.h"

#define FIRST_CAP 8

struct rkey {
	int64_t device;
	int32_t kind;
	char target[QUEUE_USER_MAX + 1];
	char peer[QUEUE_USER_MAX + 1];
};

struct batch {
	struct rkey k; /* zeroed whole before filling: hashed as bytes */
	UT_hash_handle hh;
	struct batch *prev, *next; /* by age */
	uint64_t due;
	size_t n, cap;
	uint64_t *ids;
	size_t ntags, tags_cap;
	void **tags;
};

struct receipts {
	struct receipts_opts o;
	receipts_flush_fn *fn;
	void *arg;
	struct batch *hash;
	struct batch *age; /* oldest first */
	struct receipts_stats st;
};

struct receipts *receipts_new(const struct receipts_opts *o, receipts_flush_fn *fn, void *arg)
{
	struct receipts *r;

	if (!o || !fn || o->max_batch < 1 || o->max_batch > RECEIPTS_MAX_BATCH ||
	    o->flush_interval_ms < 1)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->o = *o;
	if (!r->o.max_ids)
		r->o.max_ids = 64 * (size_t)o->max_batch;
	if (r->o.max_ids < r->o.max_batch)
		r->o.max_ids = r->o.max_batch;
	r->fn = fn;
	r->arg = arg;
	return r;
}

static void batch_free(struct receipts *r, struct batch *b)
{
	HASH_DEL(r->hash, b);
	DL_DELETE(r->age, b);
	r->st.pending -= b->n;
	r->st.keys--;
	free(b->ids);
	free(b->tags);
	free(b);
}

/* Hand @b to the callback and forget it. */
static void flush(struct receipts *r, struct batch *b, uint64_t *why)
{
	struct receipt_batch out = { .target_device = b->k.device,
				     .target_user = b->k.target,
				     .peer_user = b->k.peer,
				     .kind = b->k.kind,
				     .ids = b->ids,
				     .n = b->n,
				     .tags = b->tags,
				     .ntags = b->ntags };

	if (b->n) {
		r->st.batches++;
		r->st.ids_out += b->n;
		(*why)++;
		r->fn(r->arg, &out);
	}
	batch_free(r, b);
}

static int make_key(struct rkey *k, const struct receipt_add *a)
{
	size_t tlen, plen;

	if (!a->target_user || !a->peer_user)
		return -1;
	tlen = strlen(a->target_user);
	plen = strlen(a->peer_user);
	if (tlen == 0 || tlen > QUEUE_USER_MAX || plen == 0 || plen > QUEUE_USER_MAX)
		return -1;
	memset(k, 0, sizeof(*k));
	k->device = a->target_device;
	k->kind = a->kind;
	memcpy(k->target, a->target_user, tlen);
	memcpy(k->peer, a->peer_user, plen);
	return 0;
}

/* FNV-1a over the key's own bytes. */
static unsigned key_hash(const struct rkey *k)
{
	uint32_t h = 2166136261u;
	uint64_t dev = (uint64_t)k->device;

	for (int i = 0; i < 8; i++, dev >>= 8)
		h = (h ^ (uint8_t)dev) * 16777619u;
	h = (h ^ (uint8_t)k->kind) * 16777619u;
	for (const char *p = k->target; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ 0xffu) * 16777619u; /* ("ab", "c") and ("a", "bc") differ */
	for (const char *p = k->peer; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h;
}

static struct batch *find(struct receipts *r, const struct rkey *k)
{
	struct batch *b;

	HASH_FIND_BYHASHVALUE(hh, r->hash, k, sizeof(*k), key_hash(k), b);
	return b;
}

static struct batch *get(struct receipts *r, const struct rkey *k, uint64_t now_ms)
{
	struct batch *b = find(r, k);

	if (b)
		return b;
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->k = *k;
	b->due = now_ms + r->o.flush_interval_ms;
	HASH_ADD_KEYPTR_BYHASHVALUE(hh, r->hash, &b->k, sizeof(b->k), key_hash(&b->k), b);
	DL_APPEND(r->age, b);
	r->st.keys++;
	return b;
}

static ssize_t index_of(const struct batch *b, uint64_t id)
{
	for (size_t i = 0; i < b->n; i++) {
		if (b->ids[i] == id)
			return (ssize_t)i;
	}
	return -1;
}

static int append(struct receipts *r, struct batch *b, uint64_t id)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : FIRST_CAP;
		uint64_t *ids;

		if (cap > r->o.max_batch)
			cap = r->o.max_batch;
		ids = reallocarray(b->ids, cap, sizeof(*ids));
		if (!ids)
			return -1;
		b->ids = ids;
		b->cap = cap;
	}
	b->ids[b->n++] = id;
	r->st.pending++;
	return 0;
}

/* @tag comes back with @b (once): 1 if added, 0 if @b had it, -1. */
static int tag_add(struct batch *b, void *tag)
{
	for (size_t i = 0; i < b->ntags; i++) {
		if (b->tags[i] == tag)
			return 0;
	}
	if (b->ntags == b->tags_cap) {
		size_t cap = b->tags_cap ? 2 * b->tags_cap : 4;
		void **tags = reallocarray(b->tags, cap, sizeof(*tags));

		if (!tags)
			return -1;
		b->tags = tags;
		b->tags_cap = cap;
	}
	b->tags[b->ntags++] = tag;
	return 1;
}

/* A read for @ids: their pending "delivered" under the same device and
 * peer is no longer worth sending. */
static void supersede(struct receipts *r, const struct rkey *read_key, const uint64_t *ids,
		      size_t n)
{
	struct rkey k = *read_key;
	struct batch *d;

	k.kind = RECEIPT_DELIVERED;
	d = find(r, &k);
	if (!d)
		return;
	for (size_t i = 0; i < n && d->n; i++) {
		ssize_t at = index_of(d, ids[i]);

		if (at < 0)
			continue;
		d->ids[at] = d->ids[--d->n];
		r->st.pending--;
		r->st.superseded++;
	}
	if (!d->n)
		batch_free(r, d);
}

/* @b, just made for an id that could not be taken, goes again. */
static void drop_empty(struct receipts *r, struct batch *b, struct receipt_add *a, int own_tag)
{
	if (b->n)
		return;
	if (own_tag)
		a->tagged--;
	batch_free(r, b);
}

enum ferry_err receipts_add(struct receipts *r, struct receipt_add *a, uint64_t now_ms)
{
	struct batch *read = NULL, *tagged = NULL;
	int own_tag = 0; /* @tagged took the tag in this call */
	struct rkey k;

	a->tagged = 0;
	if ((a->kind != RECEIPT_DELIVERED && a->kind != RECEIPT_READ) || make_key(&k, a))
		return FERRY_EINVAL;
	if (a->kind == RECEIPT_READ) {
		supersede(r, &k, a->ids, a->n);
	} else {
		struct rkey rk = k;

		rk.kind = RECEIPT_READ;
		read = find(r, &rk);
	}
	for (size_t i = 0; i < a->n; i++) {
		struct batch *b;

		r->st.ids_in++;
		/* Delivered after its read is still pending: the read says it. */
		if (read && index_of(read, a->ids[i]) >= 0) {
			r->st.superseded++;
			continue;
		}
		b = get(r, &k, now_ms);
		if (!b)
			return FERRY_ENOMEM;
		if (a->tag && b != tagged) {
			int rc = tag_add(b, a->tag);

			if (rc < 0) {
				drop_empty(r, b, a, 0);
				return FERRY_ENOMEM;
			}
			a->tagged += (size_t)rc;
			own_tag = rc;
			tagged = b;
		}
		if (index_of(b, a->ids[i]) >= 0) {
			r->st.duplicates++;
			continue;
		}
		if (append(r, b, a->ids[i])) {
			drop_empty(r, b, a, b == tagged && own_tag);
			return FERRY_ENOMEM;
		}
		if (b->n >= r->o.max_batch) {
			flush(r, b, &r->st.by_count);
			tagged = NULL; /* the key's next batch is a new one */
		}
	}
	while (r->st.pending > r->o.max_ids && r->age)
		flush(r, r->age, &r->st.by_memory);
	return FERRY_OK;
}

void receipts_tick(struct receipts *r, uint64_t now_ms)
{
	while (r->age && r->age->due <= now_ms)
		flush(r, r->age, &r->st.by_time);
}

uint64_t receipts_next_due(const struct receipts *r)
{
	return r->age ? r->age->due : UINT64_MAX;
}

void receipts_flush_all(struct receipts *r)
{
	while (r->age)
		flush(r, r->age, &r->st.by_time);
}

void receipts_stats(const struct receipts *r, struct receipts_stats *out)
{
	*out = r->st;
}

void receipts_free(struct receipts *r)
{
	if (!r)
		return;
	receipts_flush_all(r);
	free(r);
}
