/*
 * fcm.c - the FCM sender (see fcm.h for the contract).
 *
 * Every push is a struct item owning its URL, headers and body while
 * libcurl borrows them; items are on the sender's list until reported, and
 * on the wait queue while they need an access token. The token exchange is
 * a struct exchange of its own, at most one at a time. Each access token
 * gets a generation number: a 401 drops the current token only if it is the
 * one the item was sent with, so a burst of 401s makes one exchange.
 *
 * A detached item or exchange (its sender freed) has ->f NULL and is freed
 * by its done() alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "push/fcm.h"
#include "push/jwt.h"
#include "push/response_int.h"
#include "common/banned.h"

#define GRANT_FORM "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="

struct item {
	struct push_http_req req;
	struct push_fcm *f;
	struct item *prev, *next;
	struct item *qnext;
	push_fcm_done_fn done;
	void *arg;
	unsigned attempt;
	int refreshed, resent_transport;
	uint64_t gen; /* the access token's generation it was sent with */
	uint64_t t0_ns;
	char *url;
	char *body;
	char *auth; /* "authorization: Bearer TOKEN", cleansed when freed */
	const char *headers[3];
	char tok[PUSH_FCM_LOG_PREFIX + 1];
};

struct exchange {
	struct push_http_req req;
	struct push_fcm *f;
	char *body; /* the form with the assertion, cleansed when freed */
	char *url;
	const char *headers[2];
};

struct push_fcm {
	struct push_http *http;
	const struct push_service_account *sa;
	char *send_url;
	uint64_t backoff_base_ms, backoff_max_ms;
	int64_t (*clock)(void *);
	void *clock_arg;
	char *access; /* the access token, NULL if none */
	int64_t access_exp;
	uint64_t gen;
	struct exchange *exchange; /* in flight, or NULL */
	struct item *qhead, *qtail;
	struct item *items;
	struct push_fcm_stats st;
};

const char *push_fcm_outcome_name(enum push_fcm_outcome o)
{
	switch (o) {
	case PUSH_FCM_OK:
		return "ok";
	case PUSH_FCM_TOKEN_INVALID:
		return "token-invalid";
	case PUSH_FCM_RETRY:
		return "retry";
	case PUSH_FCM_CONFIG:
		return "config";
	case PUSH_FCM_REJECTED:
		return "rejected";
	}
	return "?";
}

static int64_t now_s(const struct push_fcm *f)
{
	return f->clock ? f->clock(f->clock_arg) : (int64_t)time(NULL);
}

static uint64_t backoff_ms(const struct push_fcm *f, unsigned attempt)
{
	uint64_t d = f->backoff_base_ms;
	uint32_t r = 0;

	for (unsigned i = 0; i < attempt && d < f->backoff_max_ms; i++)
		d *= 2;
	if (d > f->backoff_max_ms)
		d = f->backoff_max_ms;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)rand();
	return d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
}

static void clear_free_str(char *s)
{
	if (s)
		OPENSSL_clear_free(s, strlen(s));
}

static void item_free(struct item *it)
{
	push_http_req_release(&it->req);
	clear_free_str(it->auth);
	free(it->body);
	free(it->url);
	free(it);
}

static void exchange_free(struct exchange *x)
{
	push_http_req_release(&x->req);
	clear_free_str(x->body);
	free(x->url);
	free(x);
}

static void list_unlink(struct push_fcm *f, struct item *it)
{
	if (it->prev)
		it->prev->next = it->next;
	else
		f->items = it->next;
	if (it->next)
		it->next->prev = it->prev;
	it->prev = it->next = NULL;
}

static void queue_push(struct push_fcm *f, struct item *it)
{
	it->qnext = NULL;
	if (f->qtail)
		f->qtail->qnext = it;
	else
		f->qhead = it;
	f->qtail = it;
}

static struct item *queue_pop(struct push_fcm *f)
{
	struct item *it = f->qhead;

	if (it) {
		f->qhead = it->qnext;
		if (!f->qhead)
			f->qtail = NULL;
		it->qnext = NULL;
	}
	return it;
}

static void report(struct push_fcm *f, struct item *it, struct push_fcm_result *res)
{
	uint64_t lat = (uv_hrtime() - it->t0_ns) / 1000;
	uint64_t *counter[] = { &f->st.ok, &f->st.token_invalid, &f->st.retry, &f->st.config,
				&f->st.rejected };

	res->latency_us = lat;
	f->st.latency_sum_us += lat;
	if (lat > f->st.latency_max_us)
		f->st.latency_max_us = lat;
	if ((unsigned)res->outcome < sizeof(counter) / sizeof(counter[0]))
		(*counter[res->outcome])++;
	if (res->outcome == PUSH_FCM_OK)
		log_debug("event=fcm_push_ok token_prefix=%s latency_us=%llu", it->tok,
			  (unsigned long long)lat);
	else if (res->outcome == PUSH_FCM_CONFIG)
		log_warn("event=fcm_push_failed token_prefix=%s outcome=config status=%ld error=%s "
			 "rc=\"%s\"",
			 it->tok, res->status, res->error_code[0] ? res->error_code : "-",
			 ferry_strerror(res->rc));
	else
		log_info("event=fcm_push_failed token_prefix=%s outcome=%s status=%ld error=%s "
			 "rc=\"%s\"",
			 it->tok, push_fcm_outcome_name(res->outcome), res->status,
			 res->error_code[0] ? res->error_code : "-", ferry_strerror(res->rc));
	list_unlink(f, it);
	it->done(it->arg, res);
	item_free(it);
}

static void report_simple(struct push_fcm *f, struct item *it, enum push_fcm_outcome o,
			  enum ferry_err rc, long status, const char *code)
{
	struct push_fcm_result res = {
		.outcome = o, .rc = rc, .status = status, .retry_after_s = -1
	};

	if (code)
		snprintf(res.error_code, sizeof(res.error_code), "%s", code);
	if (o == PUSH_FCM_RETRY)
		res.retry_delay_ms = backoff_ms(f, it->attempt);
	report(f, it, &res);
}

static void on_send_done(struct push_http_req *r);
static void on_exchange_done(struct push_http_req *r);

/* Post a new assertion to the token endpoint. */
static enum ferry_err exchange_start(struct push_fcm *f)
{
	struct exchange *x;
	char *jwt = NULL;
	int64_t iat = now_s(f);
	enum ferry_err rc;
	size_t n;

	rc = push_jwt_rs256(f->sa->key, f->sa->private_key_id, f->sa->client_email, PUSH_FCM_SCOPE,
			    f->sa->token_uri, iat, iat + PUSH_FCM_ASSERTION_TTL, &jwt);
	if (rc) {
		log_error("event=fcm_assertion_failed reason=\"%s\"", ferry_strerror(rc));
		return rc == FERRY_ENOMEM ? rc : FERRY_ECONFIG;
	}
	x = calloc(1, sizeof(*x));
	n = strlen(GRANT_FORM) + strlen(jwt) + 1;
	if (x) {
		x->body = malloc(n);
		x->url = strdup(f->sa->token_uri);
	}
	if (!x || !x->body || !x->url) {
		clear_free_str(jwt);
		if (x)
			exchange_free(x);
		return FERRY_ENOMEM;
	}
	snprintf(x->body, n, "%s%s", GRANT_FORM, jwt);
	clear_free_str(jwt);
	x->f = f;
	x->headers[0] = "content-type: application/x-www-form-urlencoded";
	x->headers[1] = NULL;
	x->req.url = x->url;
	x->req.method = "POST";
	x->req.headers = x->headers;
	x->req.body = x->body;
	x->req.body_len = strlen(x->body);
	x->req.done = on_exchange_done;
	x->req.arg = x;
	rc = push_http_submit(f->http, &x->req);
	if (rc) {
		exchange_free(x);
		return rc;
	}
	f->exchange = x;
	f->st.exchanges++;
	log_debug("event=fcm_token_exchange");
	return FERRY_OK;
}

/* Send @it with the current access token. */
static enum ferry_err submit(struct push_fcm *f, struct item *it)
{
	enum ferry_err rc;
	size_t n = strlen(f->access) + sizeof("authorization: Bearer ");

	clear_free_str(it->auth);
	it->auth = malloc(n);
	if (!it->auth)
		return FERRY_ENOMEM;
	snprintf(it->auth, n, "authorization: Bearer %s", f->access);
	it->headers[0] = it->auth;
	it->gen = f->gen;
	push_http_req_release(&it->req);
	rc = push_http_submit(f->http, &it->req);
	if (rc == FERRY_OK)
		f->st.requests++;
	return rc;
}

static int access_fresh(const struct push_fcm *f)
{
	return f->access && now_s(f) < f->access_exp - PUSH_FCM_TOKEN_MARGIN;
}

/* Submit @it now, or queue it for the token (starting an exchange). */
static enum ferry_err dispatch(struct push_fcm *f, struct item *it)
{
	enum ferry_err rc;

	if (access_fresh(f))
		return submit(f, it);
	if (!f->exchange) {
		rc = exchange_start(f);
		if (rc)
			return rc;
	}
	queue_push(f, it);
	return FERRY_OK;
}

static void resend(struct push_fcm *f, struct item *it)
{
	enum ferry_err rc = dispatch(f, it);

	if (rc)
		report_simple(f, it, rc == FERRY_ECONFIG ? PUSH_FCM_CONFIG : PUSH_FCM_RETRY, rc, 0,
			      NULL);
}

/* The endpoint gave a token: keep it (taken from @t), then send what waited. */
static void exchange_ok(struct push_fcm *f, struct push_token_response *t)
{
	struct item *it;

	clear_free_str(f->access);
	f->access = t->access_token;
	t->access_token = NULL;
	f->access_exp = now_s(f) + t->expires_in;
	f->gen++;
	log_debug("event=fcm_token_obtained expires_in=%lld", (long long)t->expires_in);
	/* Fresh from the endpoint: used even if it expires at once. */
	while ((it = queue_pop(f))) {
		enum ferry_err src = submit(f, it);

		if (src)
			report_simple(f, it, PUSH_FCM_RETRY, src, 0, NULL);
	}
}

/* The exchange ended: send the waiting pushes, or report them all. */
static void on_exchange_done(struct push_http_req *r)
{
	struct exchange *x = r->arg;
	struct push_fcm *f = x->f;
	struct push_token_response t = { .outcome = PUSH_FCM_RETRY };
	enum ferry_err rc = r->rc;
	long status = r->status;
	struct item *it;

	if (!f) {
		exchange_free(x);
		return;
	}
	f->exchange = NULL;
	if (r->rc == FERRY_OK) {
		rc = push_token_response_parse(r->status, (const uint8_t *)r->resp_body,
					       r->resp_len, &t);
		if (rc == FERRY_OK && t.outcome == PUSH_FCM_OK) {
			exchange_free(x);
			exchange_ok(f, &t);
			push_token_response_release(&t);
			return;
		}
	}
	f->st.exchange_failures++;
	if (r->rc != FERRY_OK) {
		log_warn("event=fcm_token_unreachable reason=\"%s\"", r->errbuf);
	} else if (rc == FERRY_OK) {
		rc = FERRY_EAUTH;
		log_warn("event=fcm_token_refused status=%ld error=%s", r->status,
			 t.error[0] ? t.error : "-");
	}
	exchange_free(x);
	while ((it = queue_pop(f)))
		report_simple(f, it, t.outcome, rc, status, t.error);
	push_token_response_release(&t);
}

/* The delay of a RETRY: the back-off, or Retry-After if longer; 429 gets
 * FCM's floor. */
static uint64_t retry_delay_ms(const struct push_fcm *f, const struct item *it, long status,
			       int64_t retry_after_s)
{
	uint64_t d;

	/* Retry-After is the least wait, not the back-off (Google wants both):
	 * "1" all through an outage would use up max_attempts in seconds. */
	d = backoff_ms(f, it->attempt);
	if (retry_after_s >= 0 && (uint64_t)retry_after_s * 1000 > d)
		d = (uint64_t)retry_after_s * 1000;
	if (status == 429 && d < PUSH_FCM_QUOTA_MIN_DELAY_MS)
		d = PUSH_FCM_QUOTA_MIN_DELAY_MS;
	return d;
}

static void on_send_done(struct push_http_req *r)
{
	struct item *it = r->arg;
	struct push_fcm *f = it->f;
	struct push_fcm_result res = { .retry_after_s = -1 };
	struct push_fcm_response ans;

	if (!f) {
		item_free(it);
		return;
	}
	if (r->rc != FERRY_OK) {
		if (!it->resent_transport) {
			it->resent_transport = 1;
			f->st.resent_transport++;
			log_debug("event=fcm_push_resent token_prefix=%s reason=\"%s\"", it->tok,
				  r->errbuf);
			resend(f, it);
		} else {
			log_info("event=fcm_push_transport_error token_prefix=%s reason=\"%s\"",
				 it->tok, r->errbuf);
			report_simple(f, it, PUSH_FCM_RETRY, r->rc, 0, NULL);
		}
		return;
	}
	/* A Retry-After date is the server's time: the system clock, not f->clock. */
	push_fcm_response_parse(r->status, (const uint8_t *)r->resp_body, r->resp_len,
				r->retry_after, (int64_t)time(NULL), &ans);
	if (r->status == 401 && !ans.has_fcm_error && !it->refreshed) {
		it->refreshed = 1;
		f->st.refreshed_401++;
		log_info("event=fcm_token_rejected action=refresh");
		if (it->gen == f->gen) {
			clear_free_str(f->access);
			f->access = NULL;
		}
		resend(f, it);
		return;
	}
	res.outcome = ans.outcome;
	res.rc = FERRY_OK;
	res.status = r->status;
	snprintf(res.error_code, sizeof(res.error_code), "%s", ans.error_code);
	res.retry_after_s = ans.retry_after_s;
	if (res.outcome == PUSH_FCM_RETRY)
		res.retry_delay_ms = retry_delay_ms(f, it, r->status, ans.retry_after_s);
	report(f, it, &res);
}

/* FCM refuses these data keys (reserved for its own use). */
static int data_key_reserved(const char *key)
{
	return strcmp(key, "from") == 0 || strcmp(key, "gcm") == 0 ||
	       strncmp(key, "google", strlen("google")) == 0;
}

/*
 * message.data into *@out (new reference): {"ferry":"wake"} for a wake-up,
 * else the caller's object, every value a string and no reserved key.
 */
static enum ferry_err build_data(const char *data_json, json_t **out)
{
	const char *key;
	json_t *j, *v;

	*out = NULL;
	if (!data_json) {
		*out = json_pack("{ss}", "ferry", "wake");
		return *out ? FERRY_OK : FERRY_ENOMEM;
	}
	/* Duplicate keys are refused: which one would the operator mean? */
	j = json_loads(data_json, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j))
		goto invalid;
	json_object_foreach(j, key, v)
	{
		if (!json_is_string(v) || data_key_reserved(key))
			goto invalid;
	}
	*out = j;
	return FERRY_OK;
invalid:
	json_decref(j);
	return FERRY_EINVAL;
}

/* message.notification into *@out (new reference), or NULL if neither a
 * title nor a body is set. */
static enum ferry_err build_notification(const struct push_fcm_push *p, json_t **out)
{
	*out = NULL;
	if (!p->title && !p->body)
		return FERRY_OK;
	*out = json_object();
	if (!*out)
		return FERRY_ENOMEM;
	/* json_string() refuses what is not UTF-8. */
	if ((p->title && json_object_set_new(*out, "title", json_string(p->title))) ||
	    (p->body && json_object_set_new(*out, "body", json_string(p->body)))) {
		json_decref(*out);
		*out = NULL;
		return FERRY_EINVAL;
	}
	return FERRY_OK;
}

/* The compact JSON size of @j (0 for NULL), for PUSH_FCM_MAX_PAYLOAD. */
static size_t json_size(const json_t *j)
{
	return j ? json_dumpb(j, NULL, 0, JSON_COMPACT) : 0;
}

/* message.android into *@out (new reference). */
static enum ferry_err build_android(const struct push_fcm_push *p, json_t **out)
{
	char ttl[24];

	snprintf(ttl, sizeof(ttl), "%us", (unsigned)p->ttl_s);
	*out = json_pack("{ssss}", "priority", p->normal_priority ? "normal" : "high", "ttl", ttl);
	if (!*out)
		return FERRY_ENOMEM;
	if (p->collapse_key &&
	    json_object_set_new(*out, "collapse_key", json_string(p->collapse_key))) {
		json_decref(*out);
		*out = NULL;
		return FERRY_EINVAL; /* not UTF-8 */
	}
	return FERRY_OK;
}

/*
 * The request body: {"message":{"token", ["notification",] "data",
 * "android"}}. Keys keep this order, so a wake-up's bytes are what they
 * were before direct pushes.
 */
static enum ferry_err build_body(const struct push_fcm_push *p, char **body)
{
	json_t *notification = NULL, *data = NULL, *android = NULL, *msg = NULL;
	enum ferry_err rc;

	rc = build_notification(p, &notification);
	if (!rc)
		rc = build_data(p->data_json, &data);
	if (rc)
		goto out;
	if (json_size(notification) + json_size(data) > PUSH_FCM_MAX_PAYLOAD) {
		rc = FERRY_ETOOBIG;
		goto out;
	}
	rc = build_android(p, &android);
	if (rc)
		goto out;
	/* A failure here is a token that is not UTF-8 (or no memory). */
	if (json_object_size(data) == 0) {
		json_decref(data); /* "{}": a notification without data */
		data = NULL;
	}
	msg = json_pack("{s{sssO*sO*sO}}", "message", "token", p->token, "notification",
			notification, "data", data, "android", android);
	if (!msg) {
		rc = FERRY_EINVAL;
		goto out;
	}
	*body = json_dumps(msg, JSON_COMPACT);
	rc = *body ? FERRY_OK : FERRY_ENOMEM;
out:
	json_decref(msg);
	json_decref(android);
	json_decref(data);
	json_decref(notification);
	return rc;
}

static enum ferry_err item_build(struct push_fcm *f, const struct push_fcm_push *p, struct item *it)
{
	enum ferry_err rc;

	if (!p->token || !*p->token || strlen(p->token) > PUSH_FCM_MAX_TOKEN ||
	    p->ttl_s > PUSH_FCM_MAX_TTL ||
	    (p->collapse_key && strlen(p->collapse_key) > PUSH_FCM_MAX_COLLAPSE_KEY))
		return FERRY_EINVAL;
	rc = build_body(p, &it->body);
	if (rc)
		return rc;
	/* At most half of the token, so that a short one is never logged whole. */
	snprintf(it->tok, sizeof(it->tok), "%.*s", (int)(strlen(p->token) / 2), p->token);
	it->url = strdup(f->send_url);
	if (!it->url)
		return FERRY_ENOMEM;
	it->headers[1] = "content-type: application/json";
	it->headers[2] = NULL;
	it->req.url = it->url;
	it->req.method = "POST";
	it->req.headers = it->headers;
	it->req.body = it->body;
	it->req.body_len = strlen(it->body);
	it->req.done = on_send_done;
	it->req.arg = it;
	return FERRY_OK;
}

enum ferry_err push_fcm_send(struct push_fcm *f, const struct push_fcm_push *p,
			     push_fcm_done_fn done, void *arg)
{
	struct item *it;
	enum ferry_err rc;

	if (!f || !p || !done)
		return FERRY_EINVAL;
	it = calloc(1, sizeof(*it));
	if (!it)
		return FERRY_ENOMEM;
	rc = item_build(f, p, it);
	if (rc) {
		item_free(it);
		return rc;
	}
	it->f = f;
	it->done = done;
	it->arg = arg;
	it->attempt = p->attempt;
	it->t0_ns = uv_hrtime();
	rc = dispatch(f, it);
	if (rc) {
		item_free(it);
		return rc;
	}
	it->next = f->items;
	if (f->items)
		f->items->prev = it;
	f->items = it;
	f->st.sent++;
	return FERRY_OK;
}

struct push_fcm *push_fcm_new(struct push_http *http, const struct push_fcm_opts *o, char *err,
			      size_t errlen)
{
	const char *ep = o && o->endpoint ? o->endpoint : PUSH_FCM_ENDPOINT;
	struct push_fcm *f;
	size_t n, len = strlen(ep);

	if (!http || !o || !o->sa || !o->sa->key || !o->sa->project_id || !o->sa->token_uri ||
	    !o->sa->client_email) {
		snprintf(err, errlen, "fcm: a loaded service account is required");
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		goto nomem;
	while (len && ep[len - 1] == '/')
		len--;
	n = len + strlen(o->sa->project_id) + sizeof("/v1/projects//messages:send");
	f->send_url = malloc(n);
	if (!f->send_url)
		goto nomem;
	snprintf(f->send_url, n, "%.*s/v1/projects/%s/messages:send", (int)len, ep,
		 o->sa->project_id);
	f->http = http;
	f->sa = o->sa;
	f->backoff_base_ms = o->backoff_base_ms ? o->backoff_base_ms : PUSH_FCM_BACKOFF_BASE_MS;
	f->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : PUSH_FCM_BACKOFF_MAX_MS;
	if (f->backoff_max_ms < f->backoff_base_ms)
		f->backoff_max_ms = f->backoff_base_ms;
	f->clock = o->clock;
	f->clock_arg = o->clock_arg;
	return f;
nomem:
	snprintf(err, errlen, "fcm: out of memory");
	push_fcm_free(f);
	return NULL;
}

void push_fcm_free(struct push_fcm *f)
{
	struct item *it;

	if (!f)
		return;
	while ((it = queue_pop(f)))
		report_simple(f, it, PUSH_FCM_RETRY, FERRY_EUNAVAIL, 0, NULL);
	while ((it = f->items)) {
		struct push_fcm_result res = { .outcome = PUSH_FCM_RETRY,
					       .rc = FERRY_EUNAVAIL,
					       .retry_after_s = -1 };

		res.retry_delay_ms = backoff_ms(f, it->attempt);
		f->st.retry++;
		list_unlink(f, it);
		it->f = NULL;
		it->done(it->arg, &res);
	}
	if (f->exchange)
		f->exchange->f = NULL;
	clear_free_str(f->access);
	free(f->send_url);
	free(f);
}

void push_fcm_stats(const struct push_fcm *f, struct push_fcm_stats *out)
{
	*out = f->st;
}
