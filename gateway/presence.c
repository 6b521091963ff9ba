/*
 * presence.c - who is connected where, which SENDs were seen, who was seen.
 *
 * Presence: device id -> (worker, connection id). A device has at most one
 * connection; registering a second returns the first so that the caller can
 * hand over from it ("replaced"). Removal only removes the entry if it still
 * names the closing connection, so a replaced connection cannot remove its
 * successor. The lock is the caller's (deliver.c, route.c): what they do
 * under it is part of the ordering argument.
 *
 * Duplicates: (sending device, client id) -> in progress on a connection, or
 * acknowledged with a server id. Entries of acknowledged SENDs are kept for
 * GW_DEDUP_TTL_MS (and at most GW_DEDUP_MAX of them), oldest evicted first;
 * a SEND that was answered with a NACK, or whose connection closed before it
 * was answered, is forgotten so that its retransmission is processed anew.
 *
 * Last seen: device ids touched since the last flush, written in batches:
 * an array of ids (8 bytes each, not a hash entry of 80), appended to with
 * repeats and made unique when the flush takes them.
 *
 * Each table has its own mutex, held only for one hash operation.
 */
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "gateway/gateway_int.h"
#include "common/banned.h"

int gw_presence_add_locked(struct gateway *gw, int64_t device_id, unsigned worker, uint64_t conn_id,
			   const struct gw_peer *peer, unsigned *old_worker, uint64_t *old_conn)
{
	struct gw_presence *p;
	int replaced = 0;

	HASH_FIND(hh, gw->presence, &device_id, sizeof(device_id), p);
	if (p) {
		*old_worker = p->worker;
		*old_conn = p->conn_id;
		replaced = 1;
	} else {
		p = calloc(1, sizeof(*p));
		if (!p)
			return -1;
		p->device_id = device_id;
		HASH_ADD(hh, gw->presence, device_id, sizeof(p->device_id), p);
	}
	p->worker = worker;
	p->conn_id = conn_id;
	p->peer = *peer;
	return replaced;
}

void gw_presence_remove_locked(struct gateway *gw, int64_t device_id, uint64_t conn_id)
{
	struct gw_presence *p;

	HASH_FIND(hh, gw->presence, &device_id, sizeof(device_id), p);
	if (p && p->conn_id == conn_id) {
		HASH_DEL(gw->presence, p);
		free(p);
	}
}

int gw_presence_find_locked(struct gateway *gw, int64_t device_id, unsigned *worker,
			    uint64_t *conn_id)
{
	struct gw_presence *p;

	HASH_FIND(hh, gw->presence, &device_id, sizeof(device_id), p);
	if (p) {
		*worker = p->worker;
		*conn_id = p->conn_id;
	}
	return p != NULL;
}

int gw_presence_find(struct gateway *gw, int64_t device_id, unsigned *worker, uint64_t *conn_id)
{
	int found;

	pthread_mutex_lock(&gw->presence_lock);
	found = gw_presence_find_locked(gw, device_id, worker, conn_id);
	pthread_mutex_unlock(&gw->presence_lock);
	return found;
}

int gw_presence_peer(struct gateway *gw, int64_t device_id, unsigned *worker, struct gw_peer *peer)
{
	struct gw_presence *p;

	pthread_mutex_lock(&gw->presence_lock);
	HASH_FIND(hh, gw->presence, &device_id, sizeof(device_id), p);
	if (p) {
		*worker = p->worker;
		*peer = p->peer;
	}
	pthread_mutex_unlock(&gw->presence_lock);
	return p != NULL;
}

static int id_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Sort the waiting ids and drop repeats (under the lock). */
static void seen_compact(struct gateway *gw)
{
	size_t k = 0;

	if (gw->nseen < 2)
		return;
	qsort(gw->seen, gw->nseen, sizeof(gw->seen[0]), id_cmp);
	for (size_t i = 1; i < gw->nseen; i++)
		if (gw->seen[i] != gw->seen[k])
			gw->seen[++k] = gw->seen[i];
	gw->nseen = k + 1;
}

void gw_presence_seen(struct gateway *gw, int64_t device_id)
{
	pthread_mutex_lock(&gw->presence_lock);
	if (gw->nseen == gw->seen_cap && gw->seen_cap >= GW_SEEN_MAX)
		seen_compact(gw);
	if (gw->nseen == gw->seen_cap && gw->seen_cap < GW_SEEN_MAX) {
		size_t cap = gw->seen_cap ? 2 * gw->seen_cap : 1024;
		int64_t *p = reallocarray(gw->seen, cap, sizeof(*p));

		if (p) {
			gw->seen = p;
			gw->seen_cap = cap;
		}
	}
	if (gw->nseen < gw->seen_cap)
		gw->seen[gw->nseen++] = device_id;
	pthread_mutex_unlock(&gw->presence_lock);
}

size_t gw_presence_take_seen(struct gateway *gw, int64_t *ids, size_t max)
{
	size_t n;

	pthread_mutex_lock(&gw->presence_lock);
	seen_compact(gw);
	n = gw->nseen < max ? gw->nseen : max;
	/* Before the first device, or after a storm, there is no array at all:
	 * even a copy of nothing from NULL is undefined. */
	if (n) {
		memcpy(ids, gw->seen, n * sizeof(*ids));
		memmove(gw->seen, gw->seen + n, (gw->nseen - n) * sizeof(*ids));
		gw->nseen -= n;
	}
	if (gw->nseen == 0 && gw->seen_cap > 1024) {
		/* A storm's worth of ids is not kept for the next one. */
		free(gw->seen);
		gw->seen = NULL;
		gw->seen_cap = 0;
	}
	pthread_mutex_unlock(&gw->presence_lock);
	return n;
}

void gw_presence_release(struct gateway *gw)
{
	struct gw_presence *p, *ptmp;
	struct gw_dedup *d, *dtmp;

	HASH_ITER(hh, gw->presence, p, ptmp)
	{
		HASH_DEL(gw->presence, p);
		free(p);
	}
	free(gw->seen);
	gw->seen = NULL;
	gw->nseen = gw->seen_cap = 0;
	HASH_ITER(hh, gw->dedup, d, dtmp)
	{
		HASH_DEL(gw->dedup, d);
		free(d);
	}
	gw->dedup_oldest = gw->dedup_newest = NULL;
	gw->dedup_count = 0;
}

/* ---- duplicate SENDs ---- */

static void dedup_unlink(struct gateway *gw, struct gw_dedup *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		gw->dedup_oldest = d->next;
	if (d->next)
		d->next->prev = d->prev;
	else
		gw->dedup_newest = d->prev;
	HASH_DEL(gw->dedup, d);
	gw->dedup_count--;
	free(d);
}

/* Drop acknowledged entries past their time, and the oldest past the cap.
 * Entries in progress stay: their connection will settle them. */
static void dedup_expire(struct gateway *gw, uint64_t now)
{
	struct gw_dedup *d = gw->dedup_oldest, *next;

	for (; d; d = next) {
		next = d->next;
		if (d->created_ms + GW_DEDUP_TTL_MS > now && gw->dedup_count < GW_DEDUP_MAX)
			break;
		if (d->acked || gw->dedup_count >= GW_DEDUP_MAX)
			dedup_unlink(gw, d);
	}
}

enum gw_dedup_verdict gw_dedup_begin(struct gateway *gw, int64_t device_id, uint64_t client_id,
				     uint64_t conn_id, uint64_t server_id, uint64_t *acked_id)
{
	struct gw_dedup_key key;
	struct gw_dedup *d;
	enum gw_dedup_verdict v = GW_DEDUP_NEW;
	uint64_t now = gw_now_ms();

	memset(&key, 0, sizeof(key));
	key.device_id = device_id;
	key.client_id = client_id;
	pthread_mutex_lock(&gw->dedup_lock);
	dedup_expire(gw, now);
	HASH_FIND(hh, gw->dedup, &key, sizeof(key), d);
	if (d && d->acked) {
		*acked_id = d->server_id;
		v = GW_DEDUP_ACKED;
	} else if (d && d->conn_id == conn_id) {
		v = GW_DEDUP_IGNORE;
	} else if (d) {
		/* In progress on an older connection of the device: take over. */
		d->conn_id = conn_id;
		d->server_id = server_id;
	} else {
		d = calloc(1, sizeof(*d));
		if (d) {
			d->key = key;
			d->conn_id = conn_id;
			d->server_id = server_id;
			d->created_ms = now;
			d->prev = gw->dedup_newest;
			if (gw->dedup_newest)
				gw->dedup_newest->next = d;
			else
				gw->dedup_oldest = d;
			gw->dedup_newest = d;
			HASH_ADD(hh, gw->dedup, key, sizeof(d->key), d);
			gw->dedup_count++;
		}
	}
	pthread_mutex_unlock(&gw->dedup_lock);
	return v;
}

static struct gw_dedup *dedup_find(struct gateway *gw, int64_t device_id, uint64_t client_id)
{
	struct gw_dedup_key key;
	struct gw_dedup *d;

	memset(&key, 0, sizeof(key));
	key.device_id = device_id;
	key.client_id = client_id;
	HASH_FIND(hh, gw->dedup, &key, sizeof(key), d);
	return d;
}

void gw_dedup_acked(struct gateway *gw, int64_t device_id, uint64_t client_id, uint64_t server_id)
{
	struct gw_dedup *d;

	pthread_mutex_lock(&gw->dedup_lock);
	d = dedup_find(gw, device_id, client_id);
	if (d) {
		d->acked = 1;
		d->server_id = server_id;
	}
	pthread_mutex_unlock(&gw->dedup_lock);
}

void gw_dedup_forget(struct gateway *gw, int64_t device_id, uint64_t client_id, uint64_t conn_id)
{
	struct gw_dedup *d;

	pthread_mutex_lock(&gw->dedup_lock);
	d = dedup_find(gw, device_id, client_id);
	if (d && !d->acked && d->conn_id == conn_id)
		dedup_unlink(gw, d);
	pthread_mutex_unlock(&gw->dedup_lock);
}
