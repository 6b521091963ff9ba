/*
 * authfail.c - failed handshakes, counted per source address and per
 * device, so that guessing secrets (or making the database check them)
 * costs the guesser time instead of costing the server work.
 *
 * Fixed windows of [gateway] auth_failure_window seconds. An address (an
 * IPv4 address, or the /64 of an IPv6 one: one host has a whole /64) with
 * auth_failures_per_addr failures in its current window, or a device with
 * auth_failures_per_device, is refused at HELLO without a lookup (ERROR
 * rate_limited) until the window ends; 0 turns a limit off. A successful
 * handshake does not reset anything: a guesser with one good device must
 * not get to guess another's secret for free.
 *
 * Memory: one table behind its own lock, held for a hash operation, and a
 * list of the entries by the start of their window, oldest first. Expired
 * entries are dropped from the front as new ones come; past GW_AUTHFAIL_MAX
 * entries the oldest goes too, so a flood from many addresses costs bounded
 * memory (and, at worst, forgets the oldest counts early).
 */
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <utlist.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "common/banned.h"

enum { KEY_DEVICE = 1, KEY_ADDR = 2 };

static void make_key(struct gw_authfail_key *k, int kind, const struct gw_peer *peer,
		     int64_t device)
{
	memset(k, 0, sizeof(*k));
	k->kind = (uint8_t)kind;
	if (kind == KEY_DEVICE)
		memcpy(k->addr, &device, sizeof(device));
	else if (peer->family == AF_INET)
		memcpy(k->addr, peer->addr, 4);
	else
		memcpy(k->addr, peer->addr, 8); /* the /64 */
}

/* Drop entries whose window ended, and the oldest past the cap. Locked. */
static void prune(struct gateway *gw, uint64_t now, uint64_t window)
{
	struct gw_authfail *e;

	while ((e = gw->authfail_oldest) != NULL &&
	       (now - e->since_ms >= window || HASH_COUNT(gw->authfail) > GW_AUTHFAIL_MAX)) {
		HASH_DEL(gw->authfail, e);
		DL_DELETE(gw->authfail_oldest, e);
		free(e);
	}
}

/* The count of @k in its current window (0: none). Locked. */
static uint32_t count_of(struct gateway *gw, const struct gw_authfail_key *k, uint64_t now,
			 uint64_t window)
{
	struct gw_authfail *e;

	HASH_FIND(hh, gw->authfail, k, sizeof(*k), e);
	return e && now - e->since_ms < window ? e->count : 0;
}

int gw_authfail_blocked(struct gateway *gw, const struct gw_peer *peer, int64_t device)
{
	const struct ferry_config *cfg = gw->cfg;
	uint64_t now = gw_now_ms(), window = cfg->gateway.auth_failure_window * 1000ULL;
	unsigned per_addr = cfg->gateway.auth_failures_per_addr;
	unsigned per_device = cfg->gateway.auth_failures_per_device;
	struct gw_authfail_key k;
	int blocked = 0;

	if (!per_addr && !per_device)
		return 0;
	pthread_mutex_lock(&gw->authfail_lock);
	if (per_device) {
		make_key(&k, KEY_DEVICE, peer, device);
		blocked = count_of(gw, &k, now, window) >= per_device;
	}
	if (!blocked && per_addr && peer->family) {
		make_key(&k, KEY_ADDR, peer, device);
		blocked = count_of(gw, &k, now, window) >= per_addr;
	}
	pthread_mutex_unlock(&gw->authfail_lock);
	return blocked;
}

/* Count one failure of @k. Locked. */
static void bump(struct gateway *gw, const struct gw_authfail_key *k, uint64_t now, uint64_t window)
{
	struct gw_authfail *e;

	HASH_FIND(hh, gw->authfail, k, sizeof(*k), e);
	if (e && now - e->since_ms < window) {
		if (e->count < UINT32_MAX)
			e->count++;
		return;
	}
	if (e) { /* a new window: to the back of the list */
		DL_DELETE(gw->authfail_oldest, e);
	} else {
		e = calloc(1, sizeof(*e));
		if (!e)
			return; /* not counted: the limit is a defence, not a promise */
		e->key = *k;
		HASH_ADD(hh, gw->authfail, key, sizeof(e->key), e);
	}
	e->count = 1;
	e->since_ms = now;
	DL_APPEND(gw->authfail_oldest, e);
}

void gw_authfail_record(struct gateway *gw, const struct gw_peer *peer, int64_t device)
{
	const struct ferry_config *cfg = gw->cfg;
	uint64_t now = gw_now_ms(), window = cfg->gateway.auth_failure_window * 1000ULL;
	struct gw_authfail_key k;

	if (!cfg->gateway.auth_failures_per_addr && !cfg->gateway.auth_failures_per_device)
		return;
	pthread_mutex_lock(&gw->authfail_lock);
	prune(gw, now, window);
	if (cfg->gateway.auth_failures_per_device) {
		make_key(&k, KEY_DEVICE, peer, device);
		bump(gw, &k, now, window);
	}
	if (cfg->gateway.auth_failures_per_addr && peer->family) {
		make_key(&k, KEY_ADDR, peer, device);
		bump(gw, &k, now, window);
	}
	pthread_mutex_unlock(&gw->authfail_lock);
}

void gw_authfail_release(struct gateway *gw)
{
	struct gw_authfail *e, *tmp;

	HASH_ITER(hh, gw->authfail, e, tmp)
	{
		HASH_DEL(gw->authfail, e);
		free(e);
	}
	gw->authfail_oldest = NULL;
}
