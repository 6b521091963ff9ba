/*
 * dedup.c - the window of envelopes a client has seen, by (sender device,
 * client id), so that an application sees each envelope once although
 * delivery is at-least-once.
 *
 * Design: a ring of cap entries in insertion order (the oldest is overwritten
 * when full) plus a chained hash table over it, with twice as many buckets as
 * entries so that chains stay short. Chains link ring indices, so the whole
 * window is two allocations made once, and lookups, inserts and evictions are
 * O(1) on average. Pure: no I/O, no clock.
 */
#include <stdint.h>
#include <stdlib.h>

#include "client/client_int.h"
#include "common/banned.h"

static size_t bucket(const struct fc_dedup *d, uint64_t device, uint64_t client_id)
{
	uint64_t z = device * UINT64_C(0x9e3779b97f4a7c15) ^ client_id;

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return (size_t)(z ^ (z >> 31)) & d->mask;
}

enum ferry_err fc_dedup_init(struct fc_dedup *d, size_t cap)
{
	size_t nbuckets = 1;

	d->ent = NULL;
	d->head = NULL;
	d->cap = d->n = d->pos = d->mask = 0;
	if (cap < 1 || cap > FERRY_MAX_DEDUP_WINDOW)
		return FERRY_EINVAL;
	while (nbuckets < 2 * cap)
		nbuckets *= 2;
	d->ent = calloc(cap, sizeof(*d->ent));
	d->head = malloc(nbuckets * sizeof(*d->head));
	if (!d->ent || !d->head) {
		fc_dedup_release(d);
		return FERRY_ENOMEM;
	}
	for (size_t i = 0; i < nbuckets; i++)
		d->head[i] = FC_DEDUP_NIL;
	d->cap = cap;
	d->mask = nbuckets - 1;
	return FERRY_OK;
}

void fc_dedup_release(struct fc_dedup *d)
{
	free(d->ent);
	free(d->head);
	d->ent = NULL;
	d->head = NULL;
	d->cap = d->n = d->pos = d->mask = 0;
}

int fc_dedup_seen(const struct fc_dedup *d, uint64_t device, uint64_t client_id)
{
	if (!d->cap)
		return 0;
	for (uint32_t i = d->head[bucket(d, device, client_id)]; i != FC_DEDUP_NIL;
	     i = d->ent[i].next) {
		if (d->ent[i].device == device && d->ent[i].client_id == client_id)
			return 1;
	}
	return 0;
}

/* Take the oldest entry, in ring slot d->pos, out of its chain. */
static void evict(struct fc_dedup *d)
{
	const struct fc_dedup_ent *old = &d->ent[d->pos];
	uint32_t *link = &d->head[bucket(d, old->device, old->client_id)];

	while (*link != (uint32_t)d->pos) {
		if (*link == FC_DEDUP_NIL)
			ferry_panic("dedup: entry %zu missing from its chain", d->pos);
		link = &d->ent[*link].next;
	}
	*link = old->next;
}

void fc_dedup_add(struct fc_dedup *d, uint64_t device, uint64_t client_id)
{
	size_t b;

	if (!d->cap)
		return;
	if (d->n == d->cap)
		evict(d);
	else
		d->n++;
	b = bucket(d, device, client_id);
	d->ent[d->pos] = (struct fc_dedup_ent){ device, client_id, d->head[b] };
	d->head[b] = (uint32_t)d->pos;
	d->pos = (d->pos + 1) % d->cap;
}
