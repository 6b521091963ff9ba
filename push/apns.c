/*
 * apns.c - the APNs sender (see apns.h for the contract).
 *
 * Every push is a struct item that owns its URL, headers and body while
 * libcurl borrows them. Items are on the sender's list from
 * push_apns_send() until they are reported; an item that waits for the
 * first answer of a connection is also on the queue. The probe is the one
 * request sent alone while no valid provider token has been seen.
 *
 * Invariants: at most one probe; the queue is empty when the sender is
 * ready; a detached item (its sender freed) has item->a NULL and is freed
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
#include "push/apns.h"
#include "push/jwt.h"
#include "push/response_int.h"
#include "common/banned.h"

#define BG_PAYLOAD "{\"aps\":{\"content-available\":1}}"
/* Headers an item sends, the NULL included. */
#define N_HEADERS 9

struct item {
	struct push_http_req req;
	struct push_apns *a;	  /* NULL once detached */
	struct item *prev, *next; /* the sender's list */
	struct item *qnext;	  /* the queue */
	push_apns_done_fn done;
	void *arg;
	unsigned attempt;
	int resent_transport, resent_expired, force;
	uint64_t t0_ns;
	char *url;
	char *body;
	size_t body_len;
	char *auth; /* "authorization: bearer JWT", cleansed when freed */
	char topic_h[PUSH_APNS_MAX_TOPIC + 16];
	char type_h[32], prio_h[24], exp_h[40], collapse_h[PUSH_APNS_MAX_COLLAPSE_ID + 24];
	const char *headers[N_HEADERS];
	char tok[PUSH_APNS_LOG_PREFIX + 1]; /* the token's prefix, for logs */
};

struct push_apns {
	struct push_http *http;
	char *endpoint, *key_id, *team_id, *default_topic;
	char *cert_file, *cert_key; /* certificate-based: no provider token */
	EVP_PKEY *key;
	uint64_t backoff_base_ms, backoff_max_ms;
	int64_t (*clock)(void *);
	void *clock_arg;
	struct push_jwt_cache jwt;
	int ready;	    /* a valid provider token was seen on the current connection */
	struct item *probe; /* the request sent alone, or NULL */
	struct item *qhead, *qtail;
	struct item *items; /* every item not yet reported */
	struct push_apns_stats st;
};

const char *push_apns_outcome_name(enum push_apns_outcome o)
{
	switch (o) {
	case PUSH_APNS_OK:
		return "ok";
	case PUSH_APNS_TOKEN_INVALID:
		return "token-invalid";
	case PUSH_APNS_RETRY:
		return "retry";
	case PUSH_APNS_CONFIG:
		return "config";
	case PUSH_APNS_REJECTED:
		return "rejected";
	}
	return "?";
}

static int64_t now_s(const struct push_apns *a)
{
	return a->clock ? a->clock(a->clock_arg) : (int64_t)time(NULL);
}

/* Exponential back-off from @attempt, with jitter in [d/2, d]. */
static uint64_t backoff_ms(const struct push_apns *a, unsigned attempt)
{
	uint64_t d = a->backoff_base_ms;
	uint32_t r = 0;

	for (unsigned i = 0; i < attempt && d < a->backoff_max_ms; i++)
		d *= 2;
	if (d > a->backoff_max_ms)
		d = a->backoff_max_ms;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)rand();
	return d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
}

static char *dup_str(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void item_free(struct item *it)
{
	push_http_req_release(&it->req);
	if (it->auth)
		OPENSSL_clear_free(it->auth, strlen(it->auth));
	free(it->url);
	free(it->body);
	free(it);
}

static void list_unlink(struct push_apns *a, struct item *it)
{
	if (it->prev)
		it->prev->next = it->next;
	else
		a->items = it->next;
	if (it->next)
		it->next->prev = it->prev;
	it->prev = it->next = NULL;
}

static void queue_push(struct push_apns *a, struct item *it)
{
	it->qnext = NULL;
	if (a->qtail)
		a->qtail->qnext = it;
	else
		a->qhead = it;
	a->qtail = it;
}

static struct item *queue_pop(struct push_apns *a)
{
	struct item *it = a->qhead;

	if (it) {
		a->qhead = it->qnext;
		if (!a->qhead)
			a->qtail = NULL;
		it->qnext = NULL;
	}
	return it;
}

/* Report @res for @it, then free @it. */
static void report(struct push_apns *a, struct item *it, struct push_apns_result *res)
{
	uint64_t lat = (uv_hrtime() - it->t0_ns) / 1000;

	res->latency_us = lat;
	a->st.latency_sum_us += lat;
	if (lat > a->st.latency_max_us)
		a->st.latency_max_us = lat;
	switch (res->outcome) {
	case PUSH_APNS_OK:
		a->st.ok++;
		break;
	case PUSH_APNS_TOKEN_INVALID:
		a->st.token_invalid++;
		break;
	case PUSH_APNS_RETRY:
		a->st.retry++;
		break;
	case PUSH_APNS_CONFIG:
		a->st.config++;
		break;
	case PUSH_APNS_REJECTED:
		a->st.rejected++;
		break;
	}
	if (res->outcome == PUSH_APNS_OK)
		log_debug("event=apns_push_ok token_prefix=%s latency_us=%llu", it->tok,
			  (unsigned long long)lat);
	else if (res->outcome == PUSH_APNS_CONFIG)
		log_warn("event=apns_push_failed token_prefix=%s outcome=config status=%ld "
			 "reason=%s",
			 it->tok, res->status, res->reason[0] ? res->reason : "-");
	else
		log_info("event=apns_push_failed token_prefix=%s outcome=%s status=%ld reason=%s "
			 "rc=\"%s\"",
			 it->tok, push_apns_outcome_name(res->outcome), res->status,
			 res->reason[0] ? res->reason : "-", ferry_strerror(res->rc));
	list_unlink(a, it);
	it->done(it->arg, res);
	item_free(it);
}

static void report_transport(struct push_apns *a, struct item *it, enum ferry_err rc)
{
	struct push_apns_result res = { .outcome = PUSH_APNS_RETRY, .rc = rc };

	if (rc == FERRY_ECONFIG)
		res.outcome = PUSH_APNS_CONFIG;
	else
		res.retry_delay_ms = backoff_ms(a, it->attempt);
	report(a, it, &res);
}

static void on_done(struct push_http_req *r);

/* Sign (or reuse) the provider token and hand @it to the HTTP client. */
static enum ferry_err submit(struct push_apns *a, struct item *it)
{
	const char *jwt = NULL;
	enum ferry_err rc;
	size_t n;

	if (a->cert_file) {
		/* The TLS handshake authenticates: no authorization field. */
		it->req.headers = it->headers + 1;
		it->req.client_cert = a->cert_file;
		it->req.client_key = a->cert_key;
		push_http_req_release(&it->req);
		rc = push_http_submit(a->http, &it->req);
		if (rc == FERRY_OK)
			a->st.requests++;
		return rc;
	}
	rc = push_jwt_cache_get(&a->jwt, a->key, a->key_id, a->team_id, now_s(a),
				PUSH_APNS_JWT_MIN_AGE, PUSH_APNS_JWT_MAX_AGE, it->force, &jwt);
	it->force = 0;
	if (rc) {
		log_error("event=apns_jwt_failed reason=\"%s\"", ferry_strerror(rc));
		return rc == FERRY_ENOMEM ? rc : FERRY_ECONFIG;
	}
	if (it->auth)
		OPENSSL_clear_free(it->auth, strlen(it->auth));
	n = strlen(jwt) + sizeof("authorization: bearer ");
	it->auth = malloc(n);
	if (!it->auth)
		return FERRY_ENOMEM;
	snprintf(it->auth, n, "authorization: bearer %s", jwt);
	it->headers[0] = it->auth;
	push_http_req_release(&it->req);
	rc = push_http_submit(a->http, &it->req);
	if (rc == FERRY_OK)
		a->st.requests++;
	return rc;
}

/* Submit @it now, or queue it while a probe is out. */
static enum ferry_err dispatch(struct push_apns *a, struct item *it)
{
	enum ferry_err rc;

	if (!a->ready && a->probe) {
		queue_push(a, it);
		return FERRY_OK;
	}
	if (!a->ready)
		a->probe = it;
	rc = submit(a, it);
	if (rc && a->probe == it)
		a->probe = NULL;
	return rc;
}

/* After an answer: flush the queue if ready, else send the next probe. */
static void pump(struct push_apns *a)
{
	struct item *it;
	enum ferry_err rc;

	while (!a->probe && (it = queue_pop(a))) {
		if (!a->ready)
			a->probe = it;
		rc = submit(a, it);
		if (rc) {
			if (a->probe == it)
				a->probe = NULL;
			report_transport(a, it, rc);
		}
		if (!a->ready && a->probe)
			break;
	}
}

/* Resend @it from a done(); reports it if that fails. */
static void resend(struct push_apns *a, struct item *it)
{
	enum ferry_err rc = dispatch(a, it);

	if (rc)
		report_transport(a, it, rc);
}

/* The delay of a RETRY: the back-off, or Retry-After (at most an hour) if longer. */
static uint64_t retry_delay_ms(const struct push_apns *a, const struct item *it,
			       const struct push_apns_response *ans)
{
	/* Retry-After is the least wait, not the back-off: a provider saying
	 * "1" all through an outage would use up max_attempts in seconds. */
	uint64_t ms = backoff_ms(a, it->attempt);

	if (ans->retry_after_s >= 0 && (uint64_t)ans->retry_after_s * 1000 > ms)
		ms = (uint64_t)ans->retry_after_s * 1000;
	return ms;
}

static void on_done(struct push_http_req *r)
{
	struct item *it = r->arg;
	struct push_apns *a = it->a;
	struct push_apns_result res = { 0 };
	struct push_apns_response ans;

	if (!a) {
		item_free(it);
		return;
	}
	if (a->probe == it)
		a->probe = NULL;
	if (r->rc != FERRY_OK) {
		/* The next connection starts with one stream again (token auth). */
		a->ready = a->cert_file != NULL;
		if (!it->resent_transport) {
			it->resent_transport = 1;
			a->st.resent_transport++;
			log_debug("event=apns_push_resent token_prefix=%s reason=\"%s\"", it->tok,
				  r->errbuf);
			resend(a, it);
		} else {
			log_info("event=apns_push_transport_error token_prefix=%s reason=\"%s\"",
				 it->tok, r->errbuf);
			report_transport(a, it, r->rc);
		}
		pump(a);
		return;
	}
	/* A Retry-After date is the server's time: the system clock, not a->clock
	 * (which steps the provider token's iat in the tests). */
	push_apns_response_parse(r->status, (const uint8_t *)r->resp_body, r->resp_len,
				 r->retry_after, (int64_t)time(NULL), &ans);
	if (r->status != 403)
		a->ready = 1;
	if (r->status == 403 && strcmp(ans.reason, "ExpiredProviderToken") == 0 &&
	    !it->resent_expired) {
		it->resent_expired = 1;
		it->force = 1;
		a->st.resent_expired++;
		log_info("event=apns_jwt_expired action=remint");
		resend(a, it);
		pump(a);
		return;
	}
	res.outcome = ans.outcome;
	res.rc = FERRY_OK;
	res.status = r->status;
	snprintf(res.reason, sizeof(res.reason), "%s", ans.reason);
	res.timestamp_ms = ans.timestamp_ms;
	snprintf(res.apns_id, sizeof(res.apns_id), "%s", r->apns_id);
	if (res.outcome == PUSH_APNS_RETRY)
		res.retry_delay_ms = retry_delay_ms(a, it, &ans);
	report(a, it, &res);
	pump(a);
}

static int token_ok(const char *t)
{
	size_t n = t ? strlen(t) : 0;

	if (!n || n > PUSH_APNS_MAX_TOKEN)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '-'))
			return 0;
	}
	return 1;
}

/* No CR, LF or NUL can reach a header line. */
static int header_value_ok(const char *v, size_t max)
{
	size_t n = strlen(v);

	return n > 0 && n <= max && !strpbrk(v, "\r\n");
}

/*
 * A direct push's own payload: checked (an object with an "aps" object,
 * within Apple's cap), then copied byte for byte; it is never re-serialised,
 * so what the operator wrote is what APNs gets.
 */
static enum ferry_err copy_payload(const char *payload, struct item *it)
{
	size_t n = strlen(payload);
	json_t *j;
	int ok;

	if (n == 0)
		return FERRY_EINVAL;
	if (n > PUSH_APNS_MAX_PAYLOAD)
		return FERRY_ETOOBIG;
	/* Duplicate keys are refused: APNs might read another "aps" than ours. */
	j = json_loadb(payload, n, JSON_REJECT_DUPLICATES, NULL);
	ok = json_is_object(j) && json_is_object(json_object_get(j, "aps"));
	json_decref(j);
	if (!ok)
		return FERRY_EINVAL;
	it->body = strdup(payload);
	if (!it->body)
		return FERRY_ENOMEM;
	it->body_len = n;
	return FERRY_OK;
}

static enum ferry_err build_body(const struct push_apns_push *p, struct item *it)
{
	json_t *j;

	if (p->payload)
		return copy_payload(p->payload, it);
	if (p->mode == PUSH_APNS_BACKGROUND) {
		it->body = strdup(BG_PAYLOAD);
		if (!it->body)
			return FERRY_ENOMEM;
		it->body_len = strlen(it->body);
		return FERRY_OK;
	}
	if (p->mode != PUSH_APNS_ALERT || !p->alert_text || !*p->alert_text)
		return FERRY_EINVAL;
	j = json_pack("{s{sssi}}", "aps", "alert", p->alert_text, "mutable-content", 1);
	if (!j)
		return FERRY_EINVAL; /* not UTF-8 */
	it->body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!it->body)
		return FERRY_ENOMEM;
	it->body_len = strlen(it->body);
	return it->body_len > PUSH_APNS_MAX_PAYLOAD ? FERRY_ETOOBIG : FERRY_OK;
}

/*
 * apns-push-type and apns-priority: the mode's unless the push says; a
 * background push takes priority 5 only (APNs answers 10 with BadPriority).
 */
static enum ferry_err type_and_priority(const struct push_apns_push *p, int *bg, int *prio)
{
	if (!p->push_type)
		*bg = p->mode == PUSH_APNS_BACKGROUND;
	else if (strcmp(p->push_type, "background") == 0)
		*bg = 1;
	else if (strcmp(p->push_type, "alert") == 0)
		*bg = 0;
	else
		return FERRY_EINVAL;
	if (p->priority == 0)
		*prio = *bg ? 5 : 10;
	else if (p->priority == 1 || p->priority == 5 || p->priority == 10)
		*prio = p->priority;
	else
		return FERRY_EINVAL;
	return *bg && *prio != 5 ? FERRY_EINVAL : FERRY_OK;
}

static enum ferry_err item_build(struct push_apns *a, const struct push_apns_push *p,
				 struct item *it)
{
	const char *topic = p->topic ? p->topic : a->default_topic;
	int bg, prio;
	size_t n;
	int h = 1;
	enum ferry_err rc;

	if (!token_ok(p->token) || !header_value_ok(topic, PUSH_APNS_MAX_TOPIC) ||
	    (p->collapse_id && !header_value_ok(p->collapse_id, PUSH_APNS_MAX_COLLAPSE_ID)))
		return FERRY_EINVAL;
	rc = type_and_priority(p, &bg, &prio);
	if (rc)
		return rc;
	rc = build_body(p, it);
	if (rc)
		return rc;
	n = strlen(a->endpoint) + strlen(p->token) + sizeof("/3/device/");
	it->url = malloc(n);
	if (!it->url)
		return FERRY_ENOMEM;
	snprintf(it->url, n, "%s/3/device/%s", a->endpoint, p->token);
	snprintf(it->topic_h, sizeof(it->topic_h), "apns-topic: %s", topic);
	snprintf(it->type_h, sizeof(it->type_h), "apns-push-type: %s", bg ? "background" : "alert");
	snprintf(it->prio_h, sizeof(it->prio_h), "apns-priority: %d", prio);
	it->headers[h++] = it->topic_h;
	it->headers[h++] = it->type_h;
	it->headers[h++] = it->prio_h;
	if (p->expiration >= 0) {
		snprintf(it->exp_h, sizeof(it->exp_h), "apns-expiration: %lld",
			 (long long)p->expiration);
		it->headers[h++] = it->exp_h;
	}
	if (p->collapse_id) {
		snprintf(it->collapse_h, sizeof(it->collapse_h), "apns-collapse-id: %s",
			 p->collapse_id);
		it->headers[h++] = it->collapse_h;
	}
	it->headers[h++] = "content-type: application/json";
	it->headers[h] = NULL;
	/* At most half of the token, so that a short one is never logged whole. */
	snprintf(it->tok, sizeof(it->tok), "%.*s", (int)(strlen(p->token) / 2), p->token);
	it->req.url = it->url;
	it->req.method = "POST";
	it->req.headers = it->headers;
	it->req.body = it->body;
	it->req.body_len = it->body_len;
	it->req.done = on_done;
	it->req.arg = it;
	return FERRY_OK;
}

enum ferry_err push_apns_send(struct push_apns *a, const struct push_apns_push *p,
			      push_apns_done_fn done, void *arg)
{
	struct item *it;
	enum ferry_err rc;

	if (!a || !p || !done)
		return FERRY_EINVAL;
	it = calloc(1, sizeof(*it));
	if (!it)
		return FERRY_ENOMEM;
	rc = item_build(a, p, it);
	if (rc) {
		item_free(it);
		return rc;
	}
	it->a = a;
	it->done = done;
	it->arg = arg;
	it->attempt = p->attempt;
	it->t0_ns = uv_hrtime();
	rc = dispatch(a, it);
	if (rc) {
		item_free(it);
		return rc;
	}
	it->next = a->items;
	if (a->items)
		a->items->prev = it;
	a->items = it;
	a->st.sent++;
	return FERRY_OK;
}

struct push_apns *push_apns_new(struct push_http *http, const struct push_apns_opts *o, char *err,
				size_t errlen)
{
	struct push_apns *a;

	int certs = o && o->cert_file && *o->cert_file;

	if (!http || !o || !o->endpoint || !*o->endpoint || !o->default_topic ||
	    !*o->default_topic ||
	    (!certs && (!o->key_id || !*o->key_id || !o->team_id || !*o->team_id))) {
		snprintf(err, errlen,
			 "apns: endpoint, topic, and a key id and team id or a certificate are "
			 "required");
		return NULL;
	}
	if (!certs && (!o->key || !push_jwt_key_is_p256(o->key))) {
		snprintf(err, errlen, "apns: the provider key is not an EC P-256 key");
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		goto nomem;
	a->http = http;
	a->key = o->key;
	a->endpoint = dup_str(o->endpoint);
	a->key_id = dup_str(o->key_id ? o->key_id : "");
	a->team_id = dup_str(o->team_id ? o->team_id : "");
	a->default_topic = dup_str(o->default_topic);
	if (!a->endpoint || !a->key_id || !a->team_id || !a->default_topic)
		goto nomem;
	if (certs) {
		a->cert_file = dup_str(o->cert_file);
		a->cert_key = o->cert_key && *o->cert_key ? dup_str(o->cert_key) : NULL;
		if (!a->cert_file || (o->cert_key && *o->cert_key && !a->cert_key))
			goto nomem;
		a->ready = 1; /* no provider token to prove first */
	}
	/* No trailing slash: paths are appended. */
	for (size_t n = strlen(a->endpoint); n && a->endpoint[n - 1] == '/'; n--)
		a->endpoint[n - 1] = '\0';
	a->backoff_base_ms = o->backoff_base_ms ? o->backoff_base_ms : PUSH_APNS_BACKOFF_BASE_MS;
	a->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : PUSH_APNS_BACKOFF_MAX_MS;
	if (a->backoff_max_ms < a->backoff_base_ms)
		a->backoff_max_ms = a->backoff_base_ms;
	a->clock = o->clock;
	a->clock_arg = o->clock_arg;
	return a;
nomem:
	snprintf(err, errlen, "apns: out of memory");
	push_apns_free(a);
	return NULL;
}

void push_apns_free(struct push_apns *a)
{
	struct item *it;

	if (!a)
		return;
	/* Queued items are ours alone: report and free them. */
	a->probe = NULL;
	while ((it = queue_pop(a)))
		report_transport(a, it, FERRY_EUNAVAIL);
	/* The rest is in flight: report, then leave it to its done(). */
	while ((it = a->items)) {
		struct push_apns_result res = { .outcome = PUSH_APNS_RETRY, .rc = FERRY_EUNAVAIL };

		res.retry_delay_ms = backoff_ms(a, it->attempt);
		a->st.retry++;
		list_unlink(a, it);
		it->a = NULL;
		it->done(it->arg, &res);
	}
	push_jwt_cache_release(&a->jwt);
	free(a->endpoint);
	free(a->key_id);
	free(a->team_id);
	free(a->default_topic);
	free(a->cert_file);
	free(a->cert_key);
	free(a);
}

void push_apns_stats(const struct push_apns *a, struct push_apns_stats *out)
{
	*out = a->st;
}
