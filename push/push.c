/*
 * push.c - the push service (push.h): its thread, the app credentials, the
 * path from a wake to a push, direct pushes, and the counters.
 *
 * Threads. push_wake() and push_connected() run on gateway workers and only
 * touch the wake table under @lock. Everything else runs on the push thread:
 * the HTTP/2 client, the senders, the timer, the registry lookups' results
 * (the lookups themselves, blocking libpq calls, run on libuv's threadpool,
 * one batch at a time). Reloads and direct pushes arrive by mailbox.
 *
 * A wake's path: push_wake adds it to the table and kicks the loop; the loop
 * takes up to LOOKUP_MAX due wakes (they are BUSY now), reads the devices'
 * push registrations in one query, and hands each device with a token to its
 * app's sender. The outcome decides the entry's next state (push_int.h):
 * cooling for [push] min_interval after a push or a permanent failure,
 * waiting for a retry after a transient one, gone if the device connected.
 *
 * Credentials come as a credset: every app's keys, service account and
 * senders, plus the reloadable [push] settings. A reload builds a new one
 * on the caller's thread and swaps it in; the old one is freed when its last
 * push in flight has finished, so nothing in flight is cut short. Senders
 * are created on the push thread the first time an app needs one.
 *
 * Counters: wake counters under @lock, per-provider counters under
 * @stats_lock (their slots live as long as the service, so a reload keeps
 * them).
 *
 * Waits: every delay a wake waits (back-off, Retry-After, cool-down, lookup
 * back-off) goes through after_ms(). Test builds (FERRY_FAULTS) may divide
 * them all by FERRY_TEST_PUSH_SPEEDUP, so that a test lives through half an
 * hour of provider outage in seconds with the real back-off schedule; the
 * providers' answers and token lifetimes keep the real clock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <uv.h>

#include "common/log.h"
#include "common/mailbox.h"
#include "push/apns.h"
#include "push/creds.h"
#include "push/fcm.h"
#include "push/http.h"
#include "push/push.h"
#include "push/push_int.h"
#include "queue/queue.h"
#include "common/banned.h"

/* Due wakes read from the registry in one query. */
#define LOOKUP_MAX 500
/* Back-off of lookups while the database is away. */
#define LOOKUP_BACKOFF_MIN_MS 500
#define LOOKUP_BACKOFF_MAX_MS 30000
/* A configuration error of an app is logged at most this often. */
#define CONFIG_LOG_INTERVAL_MS 60000
/* One collapse id for every wake: a device holds at most one at the provider. */
#define WAKE_COLLAPSE_ID "ferry-wake"
/* Push outcomes are written to the devices' rows this often, in batches. */
#define OUTCOME_FLUSH_MS 1000

enum provider { PROV_APNS = 0, PROV_FCM = 1 };

static const char *const provider_names[] = { "apns", "fcm" };

struct app {
	char *name;	/* "" for the default app */
	size_t stat[2]; /* slots in ps->pstats, per provider */
	int has_apns, has_fcm;
	EVP_PKEY *apns_key;
	char *key_id, *team_id, *topic, *apns_endpoint[2]; /* production, sandbox */
	char *cert_file, *cert_key; /* certificate-based instead of the key */
	struct push_apns *apns[2];
	struct push_service_account sa;
	char *fcm_endpoint;
	struct push_fcm *fcm;
	uint64_t config_logged[2]; /* loop ms of the last configuration error log */
};

/* Credentials and reloadable settings, swapped whole on reload. */
struct credset {
	struct app *apps;
	size_t napps;
	int alert;
	char *alert_text;
	uint64_t min_interval_ms;
	unsigned max_attempts;
	unsigned ttl;
	unsigned inflight; /* pushes using it */
	int retired, freeing;
	struct credset *next; /* the retired list */
};

/* A direct push request, on the caller's stack while it waits. */
struct direct {
	const struct push_note *note;
	const struct push_target *t;
	size_t n;
	struct push_target_result *res;
	char *apns_payload; /* built by the caller */
	int background;
	size_t left;
	int done;
	int refused; /* the push thread was stopping: nothing was sent */
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

enum pmsg_type { PMSG_RELOAD, PMSG_DIRECT, PMSG_STOP };

struct pmsg {
	struct mailbox_msg link; /* first */
	enum pmsg_type type;
	struct credset *set;
	struct direct *job;
};

struct lookup {
	uv_work_t req;
	struct push_service *ps;
	struct wake *w[LOOKUP_MAX];
	int64_t ids[LOOKUP_MAX];
	size_t n;
	struct queue_device *devs;
	size_t ndevs;
	enum ferry_err rc;
};

/* One push in flight. */
struct send {
	struct push_service *ps;
	struct credset *set;
	struct app *app;
	enum provider prov;
	size_t stat;
	struct wake *w;	    /* a wake, or */
	struct direct *job; /* a direct push, result job->res[idx] */
	size_t idx;
	int64_t device; /* 0: a bare token */
	char *token;
	int64_t sent_ms; /* wall clock */
	unsigned attempt;
	uv_work_t drop; /* removing the token */
	int64_t drop_before_ms;
	enum ferry_err drop_rc;
};

/* A provider's answer, either provider. */
enum outcome_kind { O_OK, O_TOKEN, O_RETRY, O_CONFIG, O_REJECTED };

struct outcome {
	enum outcome_kind kind;
	long status;
	char reason[48];
	int64_t invalid_ms; /* APNs 410: when the token stopped being valid */
	uint64_t delay_ms;  /* O_RETRY */
	uint64_t latency_us;
};

struct push_service {
	struct queue_registry *reg;
	pthread_t thread;
	uv_loop_t loop;
	struct mailbox mbox;
	uv_async_t kick;
	uv_timer_t timer;
	uv_timer_t reap; /* frees retired credsets */
	struct push_http *http;
	struct credset *set, *retired;
	struct pmsg stop_msg;
	int stopping;	    /* the loop's view */
	atomic_int enabled; /* the credset has credentials for some app */

	struct lookup lookup;
	int lookup_busy;
	uint64_t lookup_backoff_ms;

	uint64_t speedup; /* waits are divided by it: 1 but in tests (after_ms) */

	pthread_mutex_t lock; /* the table, the wake counters, @kicked, @closed */
	struct wake_table table;
	struct push_stats wstats;
	int kicked, closed;

	pthread_mutex_t stats_lock;
	struct push_provider_stats *pstats;
	size_t npstats, pstats_cap;

	/* Outcomes of pushes to devices, for their rows (sql/0006): collected
	 * in @outcomes, written from @writing by one threadpool job at a time. */
	struct outcome_batch *outcomes, *writing;
	uv_timer_t outcome_timer;
	uv_work_t outcome_req;
	enum ferry_err outcome_rc;
	uint64_t outcomes_dropped; /* the batch was full */
};

struct outcome_batch {
	size_t n;
	struct queue_push_outcome o[QUEUE_PUSH_OUTCOMES_MAX];
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_str(const char *s)
{
	return strdup(s ? s : "");
}

/*
 * The loop time @delay_ms from now, the wait shortened in tests. Now is
 * read afresh: the loop's cached time dates from before this iteration's
 * callbacks (a timer's curl_multi_socket_action may read an answer that
 * arrived after it), and a wait must not start before the answer that
 * asked for it.
 */
static uint64_t after_ms(struct push_service *ps, uint64_t delay_ms)
{
	uv_update_time(&ps->loop);
	return uv_now(&ps->loop) + delay_ms / ps->speedup;
}

#ifdef FERRY_FAULTS
/* FERRY_TEST_PUSH_SPEEDUP=N (1 to 100000): waits N times shorter. Said in
 * the log, so that a run with it is never mistaken for a real one. */
static uint64_t speedup_from_env(void)
{
	const char *v = getenv("FERRY_TEST_PUSH_SPEEDUP");
	unsigned long n;
	char *end;

	if (!v || !*v)
		return 1;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || *end || n < 1 || n > 100000) {
		log_warn("event=push_speedup_ignored value=\"%s\"", v);
		return 1;
	}
	log_warn("event=push_speedup factor=%lu reason=\"test build\"", n);
	return n;
}
#else
static uint64_t speedup_from_env(void)
{
	return 1;
}
#endif

const char *push_status_name(enum push_status st)
{
	switch (st) {
	case PUSH_ST_OK:
		return "ok";
	case PUSH_ST_TOKEN_INVALID:
		return "token_invalid";
	case PUSH_ST_FAILED:
		return "failed";
	case PUSH_ST_REJECTED:
		return "rejected";
	case PUSH_ST_NO_CREDENTIALS:
		return "no_credentials";
	}
	return "?";
}

/* ---- counters ---- */

/* The slot of (@app, @prov), made on first use. SIZE_MAX when out of memory. */
static size_t stat_slot(struct push_service *ps, const char *app, enum provider prov)
{
	size_t i;

	pthread_mutex_lock(&ps->stats_lock);
	for (i = 0; i < ps->npstats; i++) {
		if (strcmp(ps->pstats[i].app, app) == 0 &&
		    strcmp(ps->pstats[i].provider, provider_names[prov]) == 0)
			goto out;
	}
	if (ps->npstats == ps->pstats_cap) {
		size_t cap = ps->pstats_cap ? 2 * ps->pstats_cap : 8;
		struct push_provider_stats *p = reallocarray(ps->pstats, cap, sizeof(*p));

		if (!p) {
			i = SIZE_MAX;
			goto out;
		}
		ps->pstats = p;
		ps->pstats_cap = cap;
	}
	i = ps->npstats++;
	memset(&ps->pstats[i], 0, sizeof(ps->pstats[i]));
	snprintf(ps->pstats[i].app, sizeof(ps->pstats[i].app), "%s", app);
	snprintf(ps->pstats[i].provider, sizeof(ps->pstats[i].provider), "%s",
		 provider_names[prov]);
out:
	pthread_mutex_unlock(&ps->stats_lock);
	return i;
}

static void count_reason(struct push_provider_stats *st, const char *reason)
{
	size_t i;

	for (i = 0; i < st->nreasons; i++) {
		if (strcmp(st->reasons[i].reason, reason) == 0)
			break;
	}
	if (i == st->nreasons) {
		if (i == PUSH_STATS_REASONS) {
			i--; /* the last slot is "other" */
		} else {
			st->nreasons++;
			snprintf(st->reasons[i].reason, sizeof(st->reasons[i].reason), "%s",
				 i == PUSH_STATS_REASONS - 1 ? "other" : reason);
		}
	}
	st->reasons[i].count++;
}

static void count_outcome(struct push_service *ps, const struct send *s, const struct outcome *o)
{
	struct push_provider_stats *st;

	pthread_mutex_lock(&ps->stats_lock);
	st = &ps->pstats[s->stat];
	if (s->attempt == 0)
		st->sent++;
	else
		st->retries++;
	if (o->kind == O_OK) {
		st->ok++;
		size_t b = 0;

		st->latency_sum_us += o->latency_us;
		if (o->latency_us > st->latency_max_us)
			st->latency_max_us = o->latency_us;
		while (b < hist_latency_us_n && o->latency_us > hist_latency_us[b])
			b++;
		st->latency_hist[b]++;
	} else {
		st->failed++;
		count_reason(st, o->reason);
	}
	pthread_mutex_unlock(&ps->stats_lock);
}

/* ---- credentials ---- */

static void app_release(struct app *a)
{
	for (int e = 0; e < 2; e++) {
		push_apns_free(a->apns[e]);
		a->apns[e] = NULL;
	}
	push_fcm_free(a->fcm);
	a->fcm = NULL;
	EVP_PKEY_free(a->apns_key);
	push_service_account_release(&a->sa);
	free(a->name);
	free(a->key_id);
	free(a->team_id);
	free(a->topic);
	free(a->apns_endpoint[0]);
	free(a->apns_endpoint[1]);
	free(a->fcm_endpoint);
	free(a->cert_file);
	free(a->cert_key);
}

static void credset_free(struct credset *set)
{
	if (!set || set->freeing)
		return;
	/* Freeing a sender reports what it still had; those reports land in
	 * finish(), which must not free the set a second time. */
	set->freeing = 1;
	for (size_t i = 0; i < set->napps; i++)
		app_release(&set->apps[i]);
	free(set->apps);
	free(set->alert_text);
	free(set);
}

static const char *section_name(const struct app *a, const char *provider, char *buf, size_t n)
{
	if (*a->name)
		snprintf(buf, n, "[push.%s.%s]", provider, a->name);
	else
		snprintf(buf, n, "[push.%s]", provider);
	return buf;
}

static enum ferry_err app_load(struct push_service *ps, struct app *a,
			       const struct config_push_app *c, char *err, size_t errlen)
{
	char section[CONFIG_APP_MAX + 16];
	enum ferry_err rc;

	a->name = dup_str(c->name);
	a->key_id = dup_str(c->apns.key_id);
	a->team_id = dup_str(c->apns.team_id);
	a->topic = dup_str(c->apns.topic);
	a->apns_endpoint[0] = dup_str(c->apns.endpoint);
	a->apns_endpoint[1] = dup_str(c->apns.sandbox_endpoint);
	a->fcm_endpoint = dup_str(c->fcm.endpoint);
	if (!a->name || !a->key_id || !a->team_id || !a->topic || !a->apns_endpoint[0] ||
	    !a->apns_endpoint[1] || !a->fcm_endpoint)
		goto nomem;
	a->stat[PROV_APNS] = stat_slot(ps, a->name, PROV_APNS);
	a->stat[PROV_FCM] = stat_slot(ps, a->name, PROV_FCM);
	if (a->stat[PROV_APNS] == SIZE_MAX || a->stat[PROV_FCM] == SIZE_MAX)
		goto nomem;
	if (c->apns.cert_file && *c->apns.cert_file) {
		if (c->apns.key_file && *c->apns.key_file) {
			snprintf(err, errlen, "%s: key_file and cert_file exclude each other",
				 section_name(a, "apns", section, sizeof(section)));
			return FERRY_ECONFIG;
		}
		if (!*a->topic) {
			snprintf(err, errlen,
				 "%s: topic (the app's bundle id) is required with cert_file",
				 section_name(a, "apns", section, sizeof(section)));
			return FERRY_ECONFIG;
		}
		rc = push_apns_cert_check(c->apns.cert_file, c->apns.cert_key, err, errlen);
		if (rc)
			return rc;
		a->cert_file = dup_str(c->apns.cert_file);
		a->cert_key = dup_str(c->apns.cert_key);
		if (!a->cert_file || !a->cert_key)
			goto nomem;
		a->has_apns = 1;
	} else if (c->apns.key_file && *c->apns.key_file) {
		if (!*a->topic) {
			snprintf(err, errlen,
				 "%s: topic (the app's bundle id) is required with key_file",
				 section_name(a, "apns", section, sizeof(section)));
			return FERRY_ECONFIG;
		}
		rc = push_apns_key_load(c->apns.key_file, &a->apns_key, err, errlen);
		if (rc)
			return rc;
		a->has_apns = 1;
	}
	if (c->fcm.service_account && *c->fcm.service_account) {
		rc = push_service_account_load(c->fcm.service_account, &a->sa, err, errlen);
		if (rc)
			return rc;
		a->has_fcm = 1;
	}
	return FERRY_OK;
nomem:
	snprintf(err, errlen, "out of memory");
	return FERRY_ENOMEM;
}

static struct credset *credset_load(struct push_service *ps, const struct ferry_config *cfg,
				    char *err, size_t errlen)
{
	struct credset *set = calloc(1, sizeof(*set));

	if (!set ||
	    !(set->apps = calloc(cfg->npush_apps ? cfg->npush_apps : 1, sizeof(*set->apps))) ||
	    !(set->alert_text = dup_str(cfg->push.alert_text))) {
		snprintf(err, errlen, "out of memory");
		credset_free(set);
		return NULL;
	}
	set->alert = strcmp(cfg->push.mode, "alert") == 0;
	set->min_interval_ms = (uint64_t)cfg->push.min_interval * 1000;
	set->max_attempts = cfg->push.max_attempts ? cfg->push.max_attempts : 1;
	set->ttl = cfg->push.ttl;
	for (size_t i = 0; i < cfg->npush_apps; i++) {
		set->napps = i + 1;
		if (app_load(ps, &set->apps[i], &cfg->push_apps[i], err, errlen)) {
			credset_free(set);
			return NULL;
		}
	}
	return set;
}

static struct app *find_app(struct credset *set, const char *name)
{
	if (!name)
		name = "";
	for (size_t i = 0; i < set->napps; i++) {
		if (strcmp(set->apps[i].name, name) == 0)
			return &set->apps[i];
	}
	return NULL;
}

/* Free the retired sets nothing uses any more. From the reap timer: a
 * sender must not be freed from inside its own done callback. */
static void on_reap(uv_timer_t *t)
{
	struct push_service *ps = t->data;
	struct credset **pp = &ps->retired, *set;

	while ((set = *pp) != NULL) {
		if (set->inflight) {
			pp = &set->next;
			continue;
		}
		*pp = set->next;
		credset_free(set);
	}
}

/* Done with @set for one push: a retired set goes after its last one. */
static void set_release(struct push_service *ps, struct credset *set)
{
	set->inflight--;
	if (set->retired && !set->inflight && !set->freeing && !ps->stopping)
		uv_timer_start(&ps->reap, on_reap, 0, 0);
}

static int any_credentials(const struct credset *set)
{
	for (size_t i = 0; i < set->napps; i++) {
		if (set->apps[i].has_apns || set->apps[i].has_fcm)
			return 1;
	}
	return 0;
}

static void retire(struct push_service *ps, struct credset *set)
{
	if (!set)
		return;
	if (!set->inflight) {
		credset_free(set);
		return;
	}
	set->retired = 1;
	set->next = ps->retired;
	ps->retired = set;
}

static struct push_apns *apns_sender(struct push_service *ps, struct app *a, int sandbox)
{
	struct push_apns_opts o = { 0 };
	char err[256];

	if (a->apns[sandbox])
		return a->apns[sandbox];
	o.endpoint = a->apns_endpoint[sandbox];
	o.key = a->apns_key;
	o.key_id = a->key_id;
	o.team_id = a->team_id;
	o.default_topic = a->topic;
	o.cert_file = a->cert_file;
	o.cert_key = a->cert_key;
	a->apns[sandbox] = push_apns_new(ps->http, &o, err, sizeof(err));
	if (!a->apns[sandbox])
		log_error("event=push_sender_failed provider=apns app=\"%s\" reason=\"%s\"",
			  a->name, err);
	return a->apns[sandbox];
}

static struct push_fcm *fcm_sender(struct push_service *ps, struct app *a)
{
	struct push_fcm_opts o = { 0 };
	char err[256];

	if (a->fcm)
		return a->fcm;
	o.endpoint = a->fcm_endpoint;
	o.sa = &a->sa;
	a->fcm = push_fcm_new(ps->http, &o, err, sizeof(err));
	if (!a->fcm)
		log_error("event=push_sender_failed provider=fcm app=\"%s\" reason=\"%s\"", a->name,
			  err);
	return a->fcm;
}

/* ---- outcomes ---- */

static void reason_of(struct outcome *o, enum ferry_err rc, const char *text)
{
	if (text && *text)
		snprintf(o->reason, sizeof(o->reason), "%s", text);
	else if (rc)
		snprintf(o->reason, sizeof(o->reason), "transport");
	else
		snprintf(o->reason, sizeof(o->reason), "HTTP %ld", o->status);
}

static void finish(struct send *s, const struct outcome *o);

static void on_apns(void *arg, const struct push_apns_result *r)
{
	static const enum outcome_kind kinds[] = {
		[PUSH_APNS_OK] = O_OK,
		[PUSH_APNS_TOKEN_INVALID] = O_TOKEN,
		[PUSH_APNS_RETRY] = O_RETRY,
		[PUSH_APNS_CONFIG] = O_CONFIG,
		[PUSH_APNS_REJECTED] = O_REJECTED,
	};
	struct outcome o = { .kind = kinds[r->outcome],
			     .status = r->status,
			     .invalid_ms = r->timestamp_ms,
			     .delay_ms = r->retry_delay_ms,
			     .latency_us = r->latency_us };

	reason_of(&o, r->rc, r->reason);
	finish(arg, &o);
}

static void on_fcm(void *arg, const struct push_fcm_result *r)
{
	static const enum outcome_kind kinds[] = {
		[PUSH_FCM_OK] = O_OK,
		[PUSH_FCM_TOKEN_INVALID] = O_TOKEN,
		[PUSH_FCM_RETRY] = O_RETRY,
		[PUSH_FCM_CONFIG] = O_CONFIG,
		[PUSH_FCM_REJECTED] = O_REJECTED,
	};
	struct outcome o = { .kind = kinds[r->outcome],
			     .status = r->status,
			     .delay_ms = r->retry_delay_ms,
			     .latency_us = r->latency_us };

	reason_of(&o, r->rc, r->error_code);
	finish(arg, &o);
}

static void send_free(struct send *s)
{
	free(s->token);
	free(s);
}

static void direct_left(struct direct *job)
{
	pthread_mutex_lock(&job->lock);
	if (--job->left == 0) {
		job->done = 1;
		pthread_cond_signal(&job->cond);
	}
	pthread_mutex_unlock(&job->lock);
}

static void drop_work(uv_work_t *req)
{
	struct send *s = req->data;

	s->drop_rc = queue_device_drop_push(s->ps->reg, s->device, s->token, s->drop_before_ms);
}

static void drop_done(uv_work_t *req, int status)
{
	struct send *s = req->data;
	struct push_service *ps = s->ps;

	(void)status;
	if (s->drop_rc == FERRY_OK) {
		pthread_mutex_lock(&ps->stats_lock);
		ps->pstats[s->stat].tokens_removed++;
		pthread_mutex_unlock(&ps->stats_lock);
		log_info("event=push_token_removed device=%lld provider=%s", (long long)s->device,
			 provider_names[s->prov]);
	} else if (s->drop_rc != FERRY_ENOTFOUND) {
		log_warn("event=push_token_remove_failed device=%lld reason=\"%s\"",
			 (long long)s->device, ferry_strerror(s->drop_rc));
	}
	if (s->job) {
		s->job->res[s->idx].token_removed = s->drop_rc == FERRY_OK;
		direct_left(s->job);
	}
	send_free(s);
}

/* Remove the token @s used, unless it was registered again meanwhile.
 * Takes @s. */
static void drop_token(struct send *s, const struct outcome *o)
{
	/* A 410 says since when the token is invalid; other refusals are
	 * about the token as it was when sent. */
	s->drop_before_ms = o->invalid_ms > 0 ? o->invalid_ms : s->sent_ms;
	s->drop.data = s;
	if (uv_queue_work(&s->ps->loop, &s->drop, drop_work, drop_done) == 0)
		return;
	s->drop_rc = FERRY_ENOMEM;
	drop_done(&s->drop, 0);
}

static void log_config_error(struct push_service *ps, struct send *s, const struct outcome *o)
{
	uint64_t now = uv_now(&ps->loop);

	if (s->app && s->app->config_logged[s->prov] &&
	    now - s->app->config_logged[s->prov] < CONFIG_LOG_INTERVAL_MS)
		return;
	if (s->app)
		s->app->config_logged[s->prov] = now ? now : 1;
	log_error("event=push_config_error provider=%s app=\"%s\" status=%ld reason=\"%s\" "
		  "action=\"check the app's credentials\"",
		  provider_names[s->prov], s->app ? s->app->name : "", o->status, o->reason);
}

static void arm_timer(struct push_service *ps);

static void wake_finish(struct push_service *ps, struct send *s, const struct outcome *o)
{
	uint64_t cool = after_ms(ps, s->set->min_interval_ms);

	pthread_mutex_lock(&ps->lock);
	if (ps->stopping) {
		wake_remove(&ps->table, s->w);
	} else if (o->kind == O_RETRY && s->attempt + 1 < s->set->max_attempts) {
		s->w->attempts = s->attempt + 1;
		wake_retry(&ps->table, s->w, after_ms(ps, o->delay_ms));
	} else {
		if (o->kind == O_RETRY)
			ps->wstats.wakes_gave_up++;
		wake_cool(&ps->table, s->w, cool);
	}
	pthread_mutex_unlock(&ps->lock);
	arm_timer(ps);
}

static enum push_status status_of(enum outcome_kind kind)
{
	static const enum push_status st[] = {
		[O_OK] = PUSH_ST_OK,
		[O_TOKEN] = PUSH_ST_TOKEN_INVALID,
		[O_RETRY] = PUSH_ST_FAILED,
		[O_CONFIG] = PUSH_ST_REJECTED,
		[O_REJECTED] = PUSH_ST_REJECTED,
	};

	return st[kind];
}

static void direct_finish(struct send *s, const struct outcome *o)
{
	struct push_target_result *r = &s->job->res[s->idx];

	r->status = status_of(o->kind);
	r->http_status = o->status;
	r->latency_us = o->latency_us;
	if (o->kind != O_OK)
		snprintf(r->reason, sizeof(r->reason), "%s", o->reason);
}

/* ---- outcomes in the devices' rows ---- */

static void outcomes_flush(struct push_service *ps);
static void outcome_timer_cb(uv_timer_t *t);

static void outcome_work(uv_work_t *req)
{
	struct push_service *ps = req->data;

	ps->outcome_rc = queue_devices_push_outcomes(ps->reg, ps->writing->o, ps->writing->n);
}

static void outcome_done(uv_work_t *req, int status)
{
	struct push_service *ps = req->data;

	(void)status;
	if (ps->outcome_rc)
		log_warn("event=push_outcomes_not_written outcomes=%zu reason=\"%s\"",
			 ps->writing->n, ferry_strerror(ps->outcome_rc));
	ps->writing->n = 0;
	ps->outcome_req.data = NULL; /* idle */
	if (ps->outcomes->n == 0)
		return;
	if (ps->stopping)
		outcomes_flush(ps);
	else if (!uv_is_active((uv_handle_t *)&ps->outcome_timer))
		uv_timer_start(&ps->outcome_timer, outcome_timer_cb, OUTCOME_FLUSH_MS, 0);
}

/* Write what was collected, unless a write is under way (its end comes
 * back here). */
static void outcomes_flush(struct push_service *ps)
{
	struct outcome_batch *b;

	if (ps->outcome_req.data || ps->outcomes->n == 0)
		return;
	b = ps->writing;
	ps->writing = ps->outcomes;
	ps->outcomes = b;
	ps->outcome_req.data = ps;
	if (uv_queue_work(&ps->loop, &ps->outcome_req, outcome_work, outcome_done)) {
		ps->outcome_rc = FERRY_ENOMEM;
		outcome_done(&ps->outcome_req, 0);
	}
}

static void outcome_timer_cb(uv_timer_t *t)
{
	outcomes_flush(t->data);
}

/* Keep @o, the outcome of a push to a registered device, for its row. */
static void outcome_keep(struct push_service *ps, const struct send *s, const struct outcome *o)
{
	struct queue_push_outcome *r;

	if (ps->outcomes->n == QUEUE_PUSH_OUTCOMES_MAX) {
		if (ps->outcomes_dropped++ % 1000 == 0)
			log_warn("event=push_outcomes_dropped total=%llu",
				 (unsigned long long)ps->outcomes_dropped);
		return;
	}
	r = &ps->outcomes->o[ps->outcomes->n++];
	r->device = s->device;
	r->at_ms = s->sent_ms;
	r->provider = provider_names[s->prov];
	r->outcome = push_status_name(status_of(o->kind));
	r->status = (int)o->status;
	if (o->kind == O_OK)
		r->reason[0] = '\0';
	else
		snprintf(r->reason, sizeof(r->reason), "%s", o->reason);
	if (ps->stopping)
		outcomes_flush(ps);
	else if (!uv_is_active((uv_handle_t *)&ps->outcome_timer))
		uv_timer_start(&ps->outcome_timer, outcome_timer_cb, OUTCOME_FLUSH_MS, 0);
}

/* A push of @s is over with @o. Takes @s. */
static void finish(struct send *s, const struct outcome *o)
{
	struct push_service *ps = s->ps;
	int dropping = o->kind == O_TOKEN && s->device > 0 && !ps->stopping;

	count_outcome(ps, s, o);
	if (s->device > 0)
		outcome_keep(ps, s, o);
	if (o->kind == O_CONFIG)
		log_config_error(ps, s, o);
	else if (o->kind != O_OK)
		log_debug("event=push_failed provider=%s device=%lld attempt=%u status=%ld "
			  "reason=\"%s\"",
			  provider_names[s->prov], (long long)s->device, s->attempt + 1, o->status,
			  o->reason);
	if (s->w)
		wake_finish(ps, s, o);
	if (s->job)
		direct_finish(s, o);
	if (s->set) {
		set_release(ps, s->set);
		s->set = NULL;
		s->app = NULL;
	}
	if (dropping) {
		drop_token(s, o);
		return;
	}
	if (s->job)
		direct_left(s->job);
	send_free(s);
}

/* ---- sending ---- */

static struct send *send_new(struct push_service *ps, struct app *app, enum provider prov,
			     const char *token)
{
	struct send *s = calloc(1, sizeof(*s));

	if (!s || !(s->token = strdup(token))) {
		free(s);
		return NULL;
	}
	s->ps = ps;
	s->set = ps->set;
	s->set->inflight++;
	s->app = app;
	s->prov = prov;
	s->stat = app->stat[prov];
	s->sent_ms = wall_ms();
	return s;
}

/* A push the sender refused before sending: an outcome of its own. */
static void refused(struct send *s, enum ferry_err rc)
{
	struct outcome o = { .kind = O_REJECTED, .delay_ms = 1000 };

	if (rc == FERRY_ENOMEM || rc == FERRY_EUNAVAIL)
		o.kind = O_RETRY;
	else if (rc == FERRY_ECONFIG)
		o.kind = O_CONFIG;
	snprintf(o.reason, sizeof(o.reason), "%s", ferry_strerror(rc));
	finish(s, &o);
}

static int64_t expiration_of(const struct credset *set, int64_t explicit_s)
{
	if (explicit_s)
		return explicit_s;
	return set->ttl ? time(NULL) + set->ttl : 0;
}

/* Send @s (a wake when @job is NULL) to APNs. */
static void send_apns(struct push_service *ps, struct send *s, const char *topic,
		      const char *environment)
{
	int sandbox = environment && strcmp(environment, "sandbox") == 0;
	struct push_apns *a = apns_sender(ps, s->app, sandbox);
	struct push_apns_push p = { .token = s->token, .topic = topic, .attempt = s->attempt };
	struct direct *job = s->job;
	enum ferry_err rc;

	if (!a) {
		refused(s, FERRY_ECONFIG);
		return;
	}
	if (job) {
		const struct push_note *n = job->note;

		p.payload = job->apns_payload;
		p.push_type = job->background ? "background" : "alert";
		p.priority = job->background || n->normal_priority ? 5 : 10;
		p.expiration = expiration_of(s->set, n->expiration);
		p.collapse_id = n->collapse_id;
	} else {
		p.mode = s->set->alert ? PUSH_APNS_ALERT : PUSH_APNS_BACKGROUND;
		p.alert_text = s->set->alert_text;
		p.expiration = expiration_of(s->set, 0);
		p.collapse_id = WAKE_COLLAPSE_ID;
	}
	rc = push_apns_send(a, &p, on_apns, s);
	if (rc)
		refused(s, rc);
}

static void send_fcm(struct push_service *ps, struct send *s)
{
	struct push_fcm *f = fcm_sender(ps, s->app);
	struct push_fcm_push p = { .token = s->token, .attempt = s->attempt };
	struct direct *job = s->job;
	enum ferry_err rc;

	if (!f) {
		refused(s, FERRY_ECONFIG);
		return;
	}
	if (job) {
		const struct push_note *n = job->note;
		int64_t exp = expiration_of(s->set, n->expiration), now = time(NULL);

		p.title = n->title;
		p.body = n->body;
		p.data_json = n->data_json ? n->data_json : "{}"; /* NULL would be a wake */
		p.normal_priority = n->normal_priority;
		p.collapse_key = n->collapse_id;
		p.ttl_s = exp > now ? (uint32_t)(exp - now > PUSH_FCM_MAX_TTL ? PUSH_FCM_MAX_TTL
									      : exp - now)
				    : 0;
	} else {
		p.collapse_key = WAKE_COLLAPSE_ID;
		p.ttl_s = s->set->ttl;
	}
	rc = push_fcm_send(f, &p, on_fcm, s);
	if (rc)
		refused(s, rc);
}

/* The app and provider of a registration; NULL if it has no credentials. */
static struct app *app_for(struct push_service *ps, const char *app_name, const char *provider,
			   enum provider *prov)
{
	struct app *app = find_app(ps->set, app_name);

	if (!provider)
		return NULL;
	if (strcmp(provider, "apns") == 0)
		*prov = PROV_APNS;
	else if (strcmp(provider, "fcm") == 0)
		*prov = PROV_FCM;
	else
		return NULL;
	if (!app || (*prov == PROV_APNS ? !app->has_apns : !app->has_fcm))
		return NULL;
	return app;
}

/* Push for wake @w (BUSY) to the device registered as @d. */
static void send_wake(struct push_service *ps, struct wake *w, const struct queue_device *d)
{
	enum provider prov = PROV_APNS;
	struct app *app = app_for(ps, d->push_app, d->push_provider, &prov);
	struct send *s;

	if (!app) {
		pthread_mutex_lock(&ps->lock);
		ps->wstats.wakes_no_credentials++;
		wake_cool(&ps->table, w, after_ms(ps, ps->set->min_interval_ms));
		pthread_mutex_unlock(&ps->lock);
		log_debug("event=push_no_credentials device=%lld provider=%s app=\"%s\"",
			  (long long)d->id, d->push_provider, d->push_app ? d->push_app : "");
		return;
	}
	s = send_new(ps, app, prov, d->push_token);
	if (!s) {
		pthread_mutex_lock(&ps->lock);
		wake_retry(&ps->table, w, after_ms(ps, LOOKUP_BACKOFF_MIN_MS));
		pthread_mutex_unlock(&ps->lock);
		return;
	}
	s->w = w;
	s->device = d->id;
	s->attempt = w->attempts;
	if (prov == PROV_APNS)
		send_apns(ps, s, d->push_topic, d->push_environment);
	else
		send_fcm(ps, s);
}

/* ---- the loop: lookups, timer, kick ---- */

static void dispatch(struct push_service *ps);

static void lookup_work(uv_work_t *req)
{
	struct lookup *lk = req->data;

	lk->rc = queue_devices_get(lk->ps->reg, lk->ids, lk->n, &lk->devs, &lk->ndevs);
}

static const struct queue_device *find_dev(const struct lookup *lk, int64_t id)
{
	size_t lo = 0, hi = lk->ndevs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (lk->devs[mid].id == id)
			return &lk->devs[mid];
		if (lk->devs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void lookup_done(uv_work_t *req, int status)
{
	struct lookup *lk = req->data;
	struct push_service *ps = lk->ps;

	(void)status;
	pthread_mutex_lock(&ps->lock);
	ps->wstats.lookups++;
	if (lk->rc)
		ps->wstats.lookup_failures++;
	pthread_mutex_unlock(&ps->lock);
	if (lk->rc) {
		ps->lookup_backoff_ms =
			ps->lookup_backoff_ms ? 2 * ps->lookup_backoff_ms : LOOKUP_BACKOFF_MIN_MS;
		if (ps->lookup_backoff_ms > LOOKUP_BACKOFF_MAX_MS)
			ps->lookup_backoff_ms = LOOKUP_BACKOFF_MAX_MS;
		log_warn("event=push_lookup_failed wakes=%zu reason=\"%s\" retry_ms=%llu", lk->n,
			 ferry_strerror(lk->rc), (unsigned long long)ps->lookup_backoff_ms);
	} else {
		ps->lookup_backoff_ms = 0;
	}
	for (size_t i = 0; i < lk->n; i++) {
		struct wake *w = lk->w[i];
		const struct queue_device *d = lk->rc ? NULL : find_dev(lk, w->device);
		int skip = 1;

		pthread_mutex_lock(&ps->lock);
		if (w->cancelled || ps->stopping) {
			wake_remove(&ps->table, w);
		} else if (lk->rc) {
			wake_retry(&ps->table, w, after_ms(ps, ps->lookup_backoff_ms));
		} else if (!d || !d->push_token) {
			ps->wstats.wakes_no_token++;
			wake_remove(&ps->table, w);
		} else {
			skip = 0;
		}
		pthread_mutex_unlock(&ps->lock);
		if (!skip)
			send_wake(ps, w, d);
	}
	queue_device_list_free(lk->devs, lk->ndevs);
	lk->devs = NULL;
	lk->ndevs = 0;
	ps->lookup_busy = 0;
	dispatch(ps);
}

static void on_timer(uv_timer_t *t)
{
	dispatch(t->data);
}

static void arm_timer(struct push_service *ps)
{
	uint64_t next, now;

	if (ps->stopping)
		return;
	pthread_mutex_lock(&ps->lock);
	next = wake_next_at(&ps->table);
	pthread_mutex_unlock(&ps->lock);
	if (next == UINT64_MAX) {
		uv_timer_stop(&ps->timer);
		return;
	}
	now = uv_now(&ps->loop);
	uv_timer_start(&ps->timer, on_timer, next > now ? next - now : 0, 0);
}

/* Take the wakes that are due and read their registrations. */
static void dispatch(struct push_service *ps)
{
	struct lookup *lk = &ps->lookup;
	uint64_t now;

	if (ps->lookup_busy || ps->stopping)
		return;
	uv_update_time(&ps->loop);
	now = uv_now(&ps->loop);
	pthread_mutex_lock(&ps->lock);
	lk->n = wake_take(&ps->table, now, lk->w, LOOKUP_MAX);
	for (size_t i = 0; i < lk->n; i++)
		lk->ids[i] = lk->w[i]->device;
	ps->kicked = 0;
	pthread_mutex_unlock(&ps->lock);
	arm_timer(ps);
	if (!lk->n)
		return;
	/* The query wants ascending ids; the answers are matched by id. */
	ps->lookup_busy = 1;
	lk->ps = ps;
	lk->req.data = lk;
	if (uv_queue_work(&ps->loop, &lk->req, lookup_work, lookup_done)) {
		lk->rc = FERRY_ENOMEM;
		lookup_done(&lk->req, 0);
	}
}

static void on_kick(uv_async_t *a)
{
	dispatch(a->data);
}

/* ---- direct pushes (the loop's side) ---- */

static void direct_one(struct push_service *ps, struct direct *job, size_t i)
{
	const struct push_target *t = &job->t[i];
	struct push_target_result *r = &job->res[i];
	enum provider prov = PROV_APNS;
	struct app *app = app_for(ps, t->app, t->provider, &prov);
	struct send *s;

	if (!app) {
		r->status = PUSH_ST_NO_CREDENTIALS;
		snprintf(r->reason, sizeof(r->reason), "no credentials for %s in app '%s'",
			 t->provider, t->app ? t->app : "");
		direct_left(job);
		return;
	}
	s = send_new(ps, app, prov, t->token);
	if (!s) {
		r->status = PUSH_ST_FAILED;
		snprintf(r->reason, sizeof(r->reason), "out of memory");
		direct_left(job);
		return;
	}
	s->job = job;
	s->idx = i;
	s->device = t->device;
	if (prov == PROV_APNS)
		send_apns(ps, s, t->topic, t->environment);
	else
		send_fcm(ps, s);
}

static void direct_fail_all(struct direct *job, const char *why)
{
	job->refused = 1;
	for (size_t i = 0; i < job->n; i++) {
		job->res[i].status = PUSH_ST_FAILED;
		snprintf(job->res[i].reason, sizeof(job->res[i].reason), "%s", why);
	}
	pthread_mutex_lock(&job->lock);
	job->left = 0;
	job->done = 1;
	pthread_cond_signal(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

/* ---- mailbox, start, stop ---- */

static void close_handles(struct push_service *ps)
{
	uv_timer_stop(&ps->timer);
	uv_close((uv_handle_t *)&ps->timer, NULL);
	uv_timer_stop(&ps->reap);
	uv_close((uv_handle_t *)&ps->reap, NULL);
	uv_timer_stop(&ps->outcome_timer);
	uv_close((uv_handle_t *)&ps->outcome_timer, NULL);
	uv_close((uv_handle_t *)&ps->kick, NULL);
}

static void begin_stop(struct push_service *ps)
{
	struct credset *set;

	ps->stopping = 1;
	pthread_mutex_lock(&ps->lock);
	ps->closed = 1;
	pthread_mutex_unlock(&ps->lock);
	/* What is still queued is answered by on_msg, now stopping. */
	mailbox_close(&ps->mbox, NULL);
	close_handles(ps);
	/* Freeing the senders reports what they had in flight. */
	credset_free(ps->set);
	ps->set = NULL;
	while ((set = ps->retired) != NULL) {
		ps->retired = set->next;
		credset_free(set);
	}
	push_http_free(ps->http);
	ps->http = NULL;
	/* The last outcomes, including those the senders just reported; the
	 * loop runs until the write is over. */
	outcomes_flush(ps);
}

static void on_msg(struct mailbox *mb, struct mailbox_msg *m, void *arg)
{
	struct push_service *ps = arg;
	struct pmsg *msg = (struct pmsg *)m;

	(void)mb;
	switch (msg->type) {
	case PMSG_STOP:
		if (!ps->stopping)
			begin_stop(ps);
		return; /* the service's own message */
	case PMSG_RELOAD:
		if (ps->stopping) {
			credset_free(msg->set);
		} else {
			retire(ps, ps->set);
			ps->set = msg->set;
			atomic_store(&ps->enabled, any_credentials(ps->set));
			log_info("event=push_reloaded apps=%zu", ps->set->napps);
		}
		break;
	case PMSG_DIRECT:
		if (ps->stopping) {
			direct_fail_all(msg->job, "shutting down");
			break;
		}
		for (size_t i = 0, n = msg->job->n; i < n; i++)
			direct_one(ps, msg->job, i);
		break;
	}
	free(msg);
}

static void *push_main(void *arg)
{
	struct push_service *ps = arg;

	uv_run(&ps->loop, UV_RUN_DEFAULT);
	return NULL;
}

static void service_free(struct push_service *ps)
{
	wake_table_release(&ps->table);
	pthread_mutex_destroy(&ps->lock);
	pthread_mutex_destroy(&ps->stats_lock);
	free(ps->pstats);
	free(ps->outcomes);
	free(ps->writing);
	free(ps);
}

static void log_apps(const struct credset *set)
{
	for (size_t i = 0; i < set->napps; i++) {
		const struct app *a = &set->apps[i];

		if (a->has_apns || a->has_fcm)
			log_info("event=push_app app=\"%s\" apns=%s fcm=%s", a->name,
				 a->has_apns ? "yes" : "no", a->has_fcm ? "yes" : "no");
	}
}

enum ferry_err push_start(const struct ferry_config *cfg, struct queue_registry *reg,
			  struct push_service **out, char *err, size_t errlen)
{
	int mbox_ok = 0;
	struct push_http_opts ho = { 0 };
	struct push_service *ps = calloc(1, sizeof(*ps));

	*out = NULL;
	if (!ps) {
		snprintf(err, errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	ps->reg = reg;
	ps->speedup = speedup_from_env();
	ps->outcomes = calloc(1, sizeof(*ps->outcomes));
	ps->writing = calloc(1, sizeof(*ps->writing));
	pthread_mutex_init(&ps->lock, NULL);
	pthread_mutex_init(&ps->stats_lock, NULL);
	wake_table_init(&ps->table, cfg->push.max_pending);
	ps->stop_msg.type = PMSG_STOP;
	if (!ps->outcomes || !ps->writing) {
		snprintf(err, errlen, "out of memory");
		service_free(ps);
		return FERRY_ENOMEM;
	}
	ps->set = credset_load(ps, cfg, err, errlen);
	if (!ps->set) {
		service_free(ps);
		return FERRY_ECONFIG;
	}
	if (uv_loop_init(&ps->loop)) {
		snprintf(err, errlen, "cannot start the push thread: no event loop");
		goto fail_set;
	}
	ho.ca_file = *cfg->push.ca_file ? cfg->push.ca_file : NULL;
	ho.max_host_connections = cfg->push.connections;
	ho.timeout_ms = cfg->push.timeout;
	ps->http = push_http_new(&ps->loop, &ho, err, errlen);
	if (ps->http && mailbox_init(&ps->mbox, &ps->loop, on_msg, ps) == FERRY_OK)
		mbox_ok = 1;
	if (!ps->http || !mbox_ok || uv_async_init(&ps->loop, &ps->kick, on_kick) ||
	    uv_timer_init(&ps->loop, &ps->timer) || uv_timer_init(&ps->loop, &ps->reap) ||
	    uv_timer_init(&ps->loop, &ps->outcome_timer)) {
		if (ps->http)
			snprintf(err, errlen, "cannot start the push thread: no loop handles");
		goto fail_loop;
	}
	ps->kick.data = ps->timer.data = ps->reap.data = ps->outcome_timer.data = ps;
	if (pthread_create(&ps->thread, NULL, push_main, ps)) {
		snprintf(err, errlen, "cannot start the push thread");
		goto fail_loop;
	}
	atomic_store(&ps->enabled, any_credentials(ps->set));
	log_apps(ps->set);
	log_info("event=push_started mode=%s min_interval=%u max_pending=%u max_attempts=%u",
		 cfg->push.mode, cfg->push.min_interval, cfg->push.max_pending,
		 cfg->push.max_attempts);
	*out = ps;
	return FERRY_OK;

fail_loop:
	/* Unwind on this thread: the loop closes what was opened. */
	if (mbox_ok)
		mailbox_close(&ps->mbox, NULL);
	if (uv_is_active((uv_handle_t *)&ps->kick) || ps->kick.loop)
		uv_close((uv_handle_t *)&ps->kick, NULL);
	if (ps->timer.loop)
		uv_close((uv_handle_t *)&ps->timer, NULL);
	if (ps->reap.loop)
		uv_close((uv_handle_t *)&ps->reap, NULL);
	if (ps->outcome_timer.loop)
		uv_close((uv_handle_t *)&ps->outcome_timer, NULL);
	push_http_free(ps->http);
	uv_run(&ps->loop, UV_RUN_DEFAULT);
	uv_loop_close(&ps->loop);
fail_set:
	credset_free(ps->set);
	service_free(ps);
	return FERRY_ECONFIG;
}

void push_stop(struct push_service *ps)
{
	if (!ps)
		return;
	pthread_mutex_lock(&ps->lock);
	ps->closed = 1;
	pthread_mutex_unlock(&ps->lock);
	if (mailbox_post(&ps->mbox, &ps->stop_msg.link))
		log_warn("event=push_stop reason=\"mailbox already closed\"");
	pthread_join(ps->thread, NULL);
	if (uv_loop_close(&ps->loop))
		log_warn("event=push_stop reason=\"handles left open\"");
	log_info("event=push_stopped wakes=%llu", (unsigned long long)ps->wstats.wakes);
	service_free(ps);
}

enum ferry_err push_reload(struct push_service *ps, const struct ferry_config *cfg, char *err,
			   size_t errlen)
{
	struct pmsg *msg = calloc(1, sizeof(*msg));

	if (!msg) {
		snprintf(err, errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	msg->type = PMSG_RELOAD;
	msg->set = credset_load(ps, cfg, err, errlen);
	if (!msg->set) {
		free(msg);
		return FERRY_ECONFIG;
	}
	if (mailbox_post(&ps->mbox, &msg->link)) {
		credset_free(msg->set);
		free(msg);
		snprintf(err, errlen, "the push thread is stopping");
		return FERRY_EUNAVAIL;
	}
	return FERRY_OK;
}

/* ---- the wake table's producers ---- */

void push_wake(struct push_service *ps, int64_t device)
{
	enum wake_add_result r;
	int kick = 0;

	if (!ps)
		return;
	pthread_mutex_lock(&ps->lock);
	if (ps->closed) {
		pthread_mutex_unlock(&ps->lock);
		return;
	}
	ps->wstats.wakes++;
	r = wake_add(&ps->table, device);
	switch (r) {
	case WAKE_REPLACED:
		ps->wstats.wakes_dropped++;
		/* fall through */
	case WAKE_ADDED:
		kick = !ps->kicked;
		ps->kicked = 1;
		break;
	case WAKE_COALESCED:
		ps->wstats.wakes_coalesced++;
		break;
	case WAKE_FULL:
	case WAKE_NOMEM:
		ps->wstats.wakes_dropped++;
		break;
	}
	/* Under the lock: begin_stop closes the handle only after setting
	 * @closed under it. */
	if (kick)
		uv_async_send(&ps->kick);
	pthread_mutex_unlock(&ps->lock);
}

int push_enabled(const struct push_service *ps)
{
	return ps && atomic_load(&ps->enabled);
}

void push_connected(struct push_service *ps, int64_t device)
{
	if (!ps)
		return;
	pthread_mutex_lock(&ps->lock);
	if (!ps->closed && wake_cancel(&ps->table, device))
		ps->wstats.wakes_cancelled++;
	pthread_mutex_unlock(&ps->lock);
}

/* ---- direct pushes (the caller's side) ---- */

enum ferry_err push_send_now(struct push_service *ps, const struct push_note *note,
			     const struct push_target *t, size_t n, struct push_target_result *res,
			     char *err, size_t errlen)
{
	struct direct job = { .note = note, .t = t, .n = n, .res = res, .left = n };
	struct pmsg *msg;

	if (n == 0 || n > PUSH_DIRECT_MAX) {
		snprintf(err, errlen, "between 1 and %d targets", PUSH_DIRECT_MAX);
		return FERRY_EINVAL;
	}
	job.background = !note->title && !note->body && !note->sound && note->badge < 0;
	job.apns_payload = push_note_apns_payload(note, job.background, err, errlen);
	if (!job.apns_payload)
		return FERRY_EINVAL;
	memset(res, 0, n * sizeof(*res));
	msg = calloc(1, sizeof(*msg));
	if (!msg) {
		free(job.apns_payload);
		snprintf(err, errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	msg->type = PMSG_DIRECT;
	msg->job = &job;
	pthread_mutex_init(&job.lock, NULL);
	pthread_cond_init(&job.cond, NULL);
	if (mailbox_post(&ps->mbox, &msg->link)) {
		free(msg);
		job.refused = 1;
		job.done = 1;
	}
	pthread_mutex_lock(&job.lock);
	while (!job.done)
		pthread_cond_wait(&job.cond, &job.lock);
	pthread_mutex_unlock(&job.lock);
	pthread_cond_destroy(&job.cond);
	pthread_mutex_destroy(&job.lock);
	free(job.apns_payload);
	if (job.refused) {
		snprintf(err, errlen, "the push thread is stopping");
		return FERRY_EUNAVAIL;
	}
	pthread_mutex_lock(&ps->lock);
	ps->wstats.direct += n;
	pthread_mutex_unlock(&ps->lock);
	return FERRY_OK;
}

/* ---- stats ---- */

enum ferry_err push_stats_get(struct push_service *ps, struct push_stats *out)
{
	enum ferry_err rc = FERRY_OK;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&ps->lock);
	*out = ps->wstats;
	out->pending = ps->table.count;
	pthread_mutex_unlock(&ps->lock);
	out->providers = NULL;
	out->nproviders = 0;
	pthread_mutex_lock(&ps->stats_lock);
	if (ps->npstats) {
		out->providers = calloc(ps->npstats, sizeof(*out->providers));
		if (out->providers) {
			memcpy(out->providers, ps->pstats, ps->npstats * sizeof(*out->providers));
			out->nproviders = ps->npstats;
		} else {
			rc = FERRY_ENOMEM;
		}
	}
	pthread_mutex_unlock(&ps->stats_lock);
	return rc;
}

void push_stats_release(struct push_stats *st)
{
	if (!st)
		return;
	free(st->providers);
	st->providers = NULL;
	st->nproviders = 0;
}
