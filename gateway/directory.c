/*
 * directory.c - which devices a user has, cached for routing.
 *
 * Routing a SEND needs the ids of every device of the recipient user. The
 * answer comes from PostgreSQL the first time and is kept for GW_DIR_TTL_MS;
 * the admin API of this node forgets a user's entry when it registers or
 * deletes one of the user's devices, so a new device is a target at once. A
 * deleted device that is still listed is offline by presence, which is how
 * it is treated anyway.
 *
 * One mutex, held for one hash operation. Past GW_DIR_MAX entries the cache
 * is emptied whole: simple, and rare enough not to matter.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway_int.h"
#include "common/banned.h"

int gw_dir_get(struct gateway *gw, const char *user, int64_t *ids, size_t *n)
{
	struct gw_dir *d;
	uint64_t now = gw_now_ms();
	int hit = 0;

	pthread_mutex_lock(&gw->dir_lock);
	HASH_FIND_STR(gw->dir, user, d);
	if (d && now - d->fetched_ms < GW_DIR_TTL_MS) {
		memcpy(ids, d->ids, d->n * sizeof(ids[0]));
		*n = d->n;
		hit = 1;
	}
	pthread_mutex_unlock(&gw->dir_lock);
	return hit;
}

void gw_dir_put(struct gateway *gw, const char *user, const int64_t *ids, size_t n)
{
	struct gw_dir *d;

	if (n > GW_MAX_USER_DEVICES)
		return;
	pthread_mutex_lock(&gw->dir_lock);
	if (gw->dir_count >= GW_DIR_MAX)
		gw_dir_release(gw);
	HASH_FIND_STR(gw->dir, user, d);
	if (!d && (d = calloc(1, sizeof(*d))) != NULL) {
		memcpy(d->user, user, strnlen(user, QUEUE_USER_MAX));
		HASH_ADD_STR(gw->dir, user, d);
		gw->dir_count++;
	}
	if (d) {
		memcpy(d->ids, ids, n * sizeof(ids[0]));
		d->n = n;
		d->fetched_ms = gw_now_ms();
	}
	pthread_mutex_unlock(&gw->dir_lock);
}

void gw_dir_forget(struct gateway *gw, const char *user)
{
	struct gw_dir *d;

	pthread_mutex_lock(&gw->dir_lock);
	HASH_FIND_STR(gw->dir, user, d);
	if (d) {
		HASH_DEL(gw->dir, d);
		gw->dir_count--;
		free(d);
	}
	pthread_mutex_unlock(&gw->dir_lock);
}

/* Empty the cache; the caller holds dir_lock, or no other thread runs. */
void gw_dir_release(struct gateway *gw)
{
	struct gw_dir *d, *tmp;

	HASH_ITER(hh, gw->dir, d, tmp)
	{
		HASH_DEL(gw->dir, d);
		free(d);
	}
	gw->dir_count = 0;
}
