/*
 * push.h - the push service: the thread that wakes devices through APNs and
 * FCM, and sends operators' direct pushes.
 *
 * One thread with its own libuv loop owns the HTTP/2 client (push/http.h)
 * and, per configured app, an APNs sender per environment and an FCM
 * sender (push/apns.h, push/fcm.h). Other threads reach it in two ways:
 *
 *   - the wake table, a bounded, coalescing mailbox: push_wake() and
 *     push_connected() take its mutex for a hash lookup and return; they
 *     never block on I/O and never allocate more than one small entry;
 *   - its mailbox, for reloads, direct pushes and stop.
 *
 * A wake becomes at most one push per device per [push] min_interval while
 * the device stays away: a burst of envelopes is one push; a wake that
 * arrives while a push for the device is in flight or cooling down is
 * remembered and sent when the interval is over, if the device has not
 * connected by then. The device's push registration is read from the
 * registry (one query per batch of due wakes) just before the push, so a
 * token changed through the admin API is always the one used.
 *
 * Provider answers (see docs/internals/push.md): a permanent token error
 * removes the token from the device, conditionally (queue_device_drop_push:
 * only if it is still that token and was registered before the provider
 * said it became invalid); transient errors are retried with back-off, at
 * most [push] max_attempts tries in all; configuration errors are counted
 * and logged, never retried. A transient error never removes a token.
 *
 * Ownership: push_start() copies what it needs from the configuration; the
 * registry is borrowed and must outlive the service.
 */
#ifndef FERRY_PUSH_PUSH_H
#define FERRY_PUSH_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include "common/hist.h"
#include "common/config.h"
#include "common/err.h"

struct push_service;
struct queue_registry;

/*
 * Load every app's credentials ([push.apns*] key files, [push.fcm*]
 * service accounts) and start the push thread. FERRY_ECONFIG with a message
 * naming the file when a credential cannot be loaded; FERRY_ENOMEM. An app
 * without credentials is fine: its devices are not woken (counted).
 */
enum ferry_err push_start(const struct ferry_config *cfg, struct queue_registry *reg,
			  struct push_service **out, char *err, size_t errlen) FERRY_WUR;

/*
 * Envelopes of kind message were committed to the store for @device, which
 * is not live: wake it (coalesced). Any thread; @ps NULL does nothing.
 */
void push_wake(struct push_service *ps, int64_t device);

/* 1 if some app has credentials, so that push_wake() can lead to a push
 * (it changes on reload). Any thread; NULL: 0. */
int push_enabled(const struct push_service *ps);

/* @device registered a connection: cancel its pending wake and end its
 * cool-down (a later absence starts afresh). Any thread; NULL: nothing. */
void push_connected(struct push_service *ps, int64_t device);

/*
 * Load the credentials and the [push] settings of @cfg and hand them to the
 * push thread, which uses them for every push from then on; pushes in
 * flight finish with the old ones, and the HTTP/2 connections stay.
 * Settings that need a restart ([push] max_pending, connections, timeout)
 * keep their old values. On failure (FERRY_ECONFIG, a message in @err)
 * nothing changes.
 */
enum ferry_err push_reload(struct push_service *ps, const struct ferry_config *cfg, char *err,
			   size_t errlen) FERRY_WUR;

/* Stop the thread: pushes in flight are cancelled, pending wakes dropped
 * (the envelopes stay in the store). Whoever calls push_wake() or
 * push_connected() must have stopped first (ferryd stops the gateway
 * before). NULL does nothing. */
void push_stop(struct push_service *ps);

/* ---- direct pushes ---- */

#define PUSH_DIRECT_MAX 1000

/* Where one direct push goes. Strings borrowed for the call. */
struct push_target {
	int64_t device;	      /* the device it came from, 0: a bare token */
	const char *provider; /* "apns" or "fcm" */
	const char *token;
	const char *app;	 /* NULL: the default app */
	const char *topic;	 /* APNs: NULL for the app's topic */
	const char *environment; /* APNs: "production" (NULL) or "sandbox" */
};

/* What it says. Everything optional; nothing set is a silent background push. */
struct push_note {
	const char *title, *body; /* the alert */
	const char *sound;	  /* APNs aps.sound */
	int badge;		  /* APNs aps.badge; < 0: none */
	const char *data_json;	  /* a JSON object of string values: APNs top-level keys,
				     FCM data; NULL: none */
	int normal_priority;	  /* 1: APNs 5 / FCM normal; 0: 10 / high (background: 5) */
	const char *collapse_id;  /* apns-collapse-id, FCM collapse_key */
	int64_t expiration;	  /* UNIX seconds; 0: now + [push] ttl */
};

enum push_status {
	PUSH_ST_OK = 0,
	PUSH_ST_TOKEN_INVALID,	/* the provider refused the token (device: removed) */
	PUSH_ST_FAILED,		/* transient: may be tried again later */
	PUSH_ST_REJECTED,	/* the provider refused the request, or it is invalid */
	PUSH_ST_NO_CREDENTIALS, /* the app has no credentials for the provider */
};

struct push_target_result {
	enum push_status status;
	long http_status;  /* the provider's, 0 if none */
	char reason[64];   /* the provider's reason or error code, or ours */
	int token_removed; /* device targets: the token was removed */
	uint64_t latency_us;
};

/*
 * Send @note to @n targets (at most PUSH_DIRECT_MAX) now, once each (the
 * senders' own resends aside), and wait for every answer: the caller's
 * thread blocks (not a gateway worker, not the push thread). res[i] is the
 * result for t[i]. FERRY_OK when every target has its result (whatever it
 * is); FERRY_EINVAL (bad note, no targets, too many: nothing sent; @err
 * says why), FERRY_EUNAVAIL (stopping), FERRY_ENOMEM.
 */
enum ferry_err push_send_now(struct push_service *ps, const struct push_note *note,
			     const struct push_target *t, size_t n, struct push_target_result *res,
			     char *err, size_t errlen) FERRY_WUR;

const char *push_status_name(enum push_status st);

/* ---- stats ---- */

#define PUSH_STATS_REASONS 16

/* One app's pushes to one provider, since start. */
struct push_provider_stats {
	char app[CONFIG_APP_MAX + 1]; /* "" for the default app */
	char provider[8];	      /* "apns", "fcm" */
	uint64_t sent;		      /* pushes handed to the provider (first tries) */
	uint64_t ok;
	uint64_t failed;			 /* outcomes other than ok, per try */
	uint64_t retries;			 /* tries after the first */
	uint64_t tokens_removed;		 /* tokens removed from devices */
	uint64_t latency_sum_us, latency_max_us; /* over ok outcomes */
	/* Ok outcomes by latency: bucket i up to hist_latency_us[i], the
	 * last one above them all. */
	uint64_t latency_hist[HIST_MAX_BOUNDS + 1];
	size_t nreasons;
	struct {
		char reason[48]; /* "Unregistered", "QUOTA_EXCEEDED", "transport"... */
		uint64_t count;
	} reasons[PUSH_STATS_REASONS]; /* the first ones seen; later ones: "other" */
};

struct push_stats {
	uint64_t wakes;			   /* push_wake() calls */
	uint64_t wakes_coalesced;	   /* folded into a pending or recent push */
	uint64_t wakes_cancelled;	   /* the device connected first */
	uint64_t wakes_dropped;		   /* the table was full */
	uint64_t wakes_no_token;	   /* the device had no push token (or is gone) */
	uint64_t wakes_no_credentials;	   /* its app has no credentials for its provider */
	uint64_t wakes_gave_up;		   /* max_attempts tries failed */
	uint64_t lookups, lookup_failures; /* registry reads of due wakes */
	uint64_t direct;		   /* direct push targets */
	uint64_t pending;		   /* now: entries in the wake table */
	size_t nproviders;
	struct push_provider_stats *providers; /* malloc'ed: push_stats_release() */
};

/* A snapshot of the counters (any thread). FERRY_ENOMEM. */
enum ferry_err push_stats_get(struct push_service *ps, struct push_stats *out) FERRY_WUR;
void push_stats_release(struct push_stats *st);

#endif
