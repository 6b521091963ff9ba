/*
 * routes_push.c - the push service's admin routes: POST /v1/push, a
 * notification sent now to devices or to bare tokens, and GET /v1/stats.
 * The body rules are routes.c's (admin_int.h); the routes, their bodies and
 * every error they return are documented in admin/openapi.yaml.
 *
 * POST /v1/push validates the whole body first (400 naming the member:
 * "field 'tokens[2].provider' ..."), then reads the device targets' push
 * registrations from the registry (one statement per QUEUE_DEVICES_GET_MAX
 * ids) and hands every target that has a token to push_send_now(), which
 * blocks this libmicrohttpd thread until each provider has answered (at
 * most [push] timeout per try, plus the senders' own resends). A provider's
 * answer about a target is that target's result, never the request's HTTP
 * status: the 200 has one result per target, in the order of the request.
 * Errors: no push service 503 (once the request is valid); from
 * push_send_now() FERRY_EINVAL 400 (the note, e.g. an APNs payload over
 * 4096 bytes), FERRY_EUNAVAIL 503 with Retry-After, anything else 500
 * (event=admin_push_error); registry errors as in routes.c.
 *
 * A push token is never logged or returned whole: a token target's result
 * shows token_prefix, as a device does. Titles, bodies and data are never
 * logged either.
 *
 * The "push" section of GET /v1/stats (routes_stats.c) is built here,
 * admin_stats_push_json().
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin_int.h"
#include "common/log.h"
#include "push/push.h"
#include "queue/queue.h"
#include "common/banned.h"

#define HTTP_OK 200
#define HTTP_BAD_REQUEST 400
#define HTTP_INTERNAL 500
#define HTTP_UNAVAILABLE 503

/* Seconds a client waits before retrying a push the service could not take. */
#define PUSH_RETRY_AFTER 1

/* Room for what push_send_now() says about a refusal. */
#define PUSH_ERR_MAX 256

/* Longest collapse_id: APNs' apns-collapse-id limit (FCM allows more). */
#define COLLAPSE_ID_MAX 64

/* Room for a member's name in messages: "tokens[999].environment". */
#define WHERE_MAX 32

/* What became of a target before the push service saw it. */
enum target_state {
	T_SEND,	     /* has a token: pushed */
	T_NOT_FOUND, /* device targets: no such device */
	T_NO_TOKEN,  /* device targets: no push token registered */
};

/* One POST /v1/push. Strings are borrowed from the body or from @devs. */
struct direct_req {
	struct push_note note;
	char *data_json; /* malloc'ed (json_dumps), or NULL */
	int by_device;	 /* "devices", else "tokens" */
	size_t n;
	int64_t *ids;			/* by_device: the ids, in request order */
	struct push_target *t;		/* n */
	enum target_state *state;	/* n */
	struct push_target_result *res; /* n */
	struct queue_device *devs;	/* the registry's records (owned) */
	size_t ndevs;
};

static void direct_req_release(struct direct_req *dr)
{
	free(dr->data_json);
	free(dr->ids);
	free(dr->t);
	free(dr->state);
	free(dr->res);
	queue_device_list_free(dr->devs, dr->ndevs);
}

/* ---- the body ---- */

/* Printable ASCII (0x20-0x7e), 1 to @max bytes. */
static int printable(const char *s, size_t max)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (s[i] < ' ' || s[i] > '~')
			return 0;
	return i >= 1 && i <= max;
}

/* Member @key of @obj, NULL when absent or null (null counts as absent). */
static json_t *member(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

/* "devices" or "tokens", exactly one, an array of 1 to PUSH_DIRECT_MAX. */
static json_t *targets_array(json_t *obj, struct direct_req *dr, struct admin_reply *rep)
{
	json_t *devices = member(obj, "devices"), *tokens = member(obj, "tokens");
	const char *name = devices ? "devices" : "tokens";
	json_t *arr = devices ? devices : tokens;

	if (!devices == !tokens) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "%s",
				  devices ? "fields 'devices' and 'tokens' exclude each other: "
					    "give one"
					  : "field 'devices' or 'tokens' is required");
		return NULL;
	}
	if (!json_is_array(arr)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field '%s' must be an array, not %s",
				  name, admin_json_type_name(arr));
		return NULL;
	}
	if (json_array_size(arr) < 1 || json_array_size(arr) > PUSH_DIRECT_MAX) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%s' must list 1 to %d targets, not %zu", name,
				  PUSH_DIRECT_MAX, json_array_size(arr));
		return NULL;
	}
	dr->by_device = devices != NULL;
	dr->n = json_array_size(arr);
	return arr;
}

/* Each device id: a positive JSON integer or its decimal string. */
static int parse_devices(json_t *arr, struct direct_req *dr, struct admin_reply *rep)
{
	char q[ADMIN_QUOTE_MAX + 8];
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
	{
		if (json_is_integer(v) && json_integer_value(v) > 0) {
			dr->ids[i] = (int64_t)json_integer_value(v);
			continue;
		}
		if (json_is_string(v) && admin_device_id_parse(json_string_value(v), &dr->ids[i]))
			continue;
		if (json_is_string(v))
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "field 'devices[%zu]': device id '%s' is invalid: "
					  "expected a positive decimal integer",
					  i, admin_quote(q, sizeof(q), json_string_value(v)));
		else
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "field 'devices[%zu]' must be a positive integer, not %s",
					  i, admin_json_describe(v, q, sizeof(q)));
		return 0;
	}
	return 1;
}

/* Each token target: an object as PUT /v1/devices/{id}/push takes it. */
static int parse_tokens(json_t *arr, struct direct_req *dr, struct admin_reply *rep)
{
	static const char *const fields[] = {
		"provider", "token", "app", "topic", "environment", NULL,
	};
	char where[WHERE_MAX];
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
	{
		struct queue_push_token t = { 0 };

		snprintf(where, sizeof(where), "tokens[%zu].", i);
		if (!json_is_object(v)) {
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "field 'tokens[%zu]' must be an object, not %s", i,
					  admin_json_type_name(v));
			return 0;
		}
		if (!admin_members_known(v, fields, where, rep) ||
		    !admin_member_string(v, where, "provider", 1, &t.provider, rep) ||
		    !admin_member_string(v, where, "token", 1, &t.token, rep) ||
		    !admin_member_string(v, where, "app", 0, &t.app, rep) ||
		    !admin_member_string(v, where, "topic", 0, &t.topic, rep) ||
		    !admin_member_string(v, where, "environment", 0, &t.environment, rep) ||
		    !admin_push_token_check(&t, where, rep))
			return 0;
		dr->t[i].provider = t.provider;
		dr->t[i].token = t.token;
		dr->t[i].app = t.app;
		dr->t[i].topic = t.topic;
		dr->t[i].environment = t.environment;
	}
	return 1;
}

/* "badge": absent, null, or 0 to INT_MAX; none is -1. */
static int parse_badge(json_t *obj, int *badge, struct admin_reply *rep)
{
	json_t *v = member(obj, "badge");
	char what[64];

	*badge = -1;
	if (!v)
		return 1;
	if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= INT_MAX) {
		*badge = (int)json_integer_value(v);
		return 1;
	}
	admin_reply_error(rep, HTTP_BAD_REQUEST,
			  "field 'badge' must be an integer from 0 to %d, not %s", INT_MAX,
			  admin_json_describe(v, what, sizeof(what)));
	return 0;
}

/* "data": absent, null, or an object of strings without "aps", as its
 * compact JSON text in *out (malloc'ed; NULL for none). */
static int parse_data(json_t *obj, char **out, struct admin_reply *rep)
{
	json_t *data = member(obj, "data"), *v;
	char q[ADMIN_QUOTE_MAX + 8];
	const char *key;

	*out = NULL;
	if (!data)
		return 1;
	if (!json_is_object(data)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field 'data' must be an object, not %s",
				  admin_json_type_name(data));
		return 0;
	}
	json_object_foreach(data, key, v)
	{
		if (!strcmp(key, "aps")) {
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "field 'data' must not have the key 'aps': APNs "
					  "reserves it");
			return 0;
		}
		if (!json_is_string(v)) {
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "field 'data.%s' must be a string, not %s",
					  admin_quote(q, sizeof(q), key), admin_json_type_name(v));
			return 0;
		}
	}
	*out = json_dumps(data, JSON_COMPACT);
	if (!*out) {
		admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
		return 0;
	}
	return 1;
}

/* "priority": absent, null, "high" or "normal". */
static int parse_priority(json_t *obj, int *normal, struct admin_reply *rep)
{
	const char *s;

	*normal = 0;
	if (!admin_member_string(obj, "", "priority", 0, &s, rep))
		return 0;
	if (!s || !strcmp(s, "high"))
		return 1;
	if (!strcmp(s, "normal")) {
		*normal = 1;
		return 1;
	}
	admin_reply_error(rep, HTTP_BAD_REQUEST, "field 'priority' must be one of high, normal");
	return 0;
}

/* "expiration": absent, null, or UNIX seconds, 0 or more (0: [push] ttl). */
static int parse_expiration(json_t *obj, int64_t *exp, struct admin_reply *rep)
{
	json_t *v = member(obj, "expiration");
	char what[64];

	*exp = 0;
	if (!v)
		return 1;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*exp = (int64_t)json_integer_value(v);
		return 1;
	}
	admin_reply_error(rep, HTTP_BAD_REQUEST,
			  "field 'expiration' must be a UNIX time in seconds, 0 or more, not %s",
			  admin_json_describe(v, what, sizeof(what)));
	return 0;
}

/* What the notification says: everything but the targets. */
static int parse_note(json_t *obj, struct direct_req *dr, struct admin_reply *rep)
{
	struct push_note *n = &dr->note;

	if (!admin_member_string(obj, "", "title", 0, &n->title, rep) ||
	    !admin_member_string(obj, "", "body", 0, &n->body, rep) ||
	    !admin_member_string(obj, "", "sound", 0, &n->sound, rep) ||
	    !admin_member_string(obj, "", "collapse_id", 0, &n->collapse_id, rep) ||
	    !parse_badge(obj, &n->badge, rep) || !parse_priority(obj, &n->normal_priority, rep) ||
	    !parse_expiration(obj, &n->expiration, rep) || !parse_data(obj, &dr->data_json, rep))
		return 0;
	if (n->collapse_id && !printable(n->collapse_id, COLLAPSE_ID_MAX)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field 'collapse_id' must be 1-%d bytes of printable ASCII",
				  COLLAPSE_ID_MAX);
		return 0;
	}
	n->data_json = dr->data_json;
	return 1;
}

/* The whole body into @dr (whose arrays it allocates). */
static int parse_body(json_t *obj, struct direct_req *dr, struct admin_reply *rep)
{
	json_t *arr = targets_array(obj, dr, rep);

	if (!arr)
		return 0;
	dr->t = calloc(dr->n, sizeof(*dr->t));
	dr->state = calloc(dr->n, sizeof(*dr->state));
	dr->res = calloc(dr->n, sizeof(*dr->res));
	dr->ids = dr->by_device ? calloc(dr->n, sizeof(*dr->ids)) : NULL;
	if (!dr->t || !dr->state || !dr->res || (dr->by_device && !dr->ids)) {
		admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
		return 0;
	}
	if (dr->by_device ? !parse_devices(arr, dr, rep) : !parse_tokens(arr, dr, rep))
		return 0;
	return parse_note(obj, dr, rep);
}

/* ---- device targets ---- */

static int device_cmp(const void *a, const void *b)
{
	const struct queue_device *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

/* Append what queue_devices_get() returned (@devs, @n; the array is freed,
 * the records move) to dr->devs. */
static int keep_devices(struct direct_req *dr, struct queue_device *devs, size_t n)
{
	struct queue_device *all;

	if (!n) {
		free(devs);
		return 1;
	}
	all = reallocarray(dr->devs, dr->ndevs + n, sizeof(*all));
	if (!all) {
		queue_device_list_free(devs, n);
		return 0;
	}
	memcpy(all + dr->ndevs, devs, n * sizeof(*all));
	free(devs);
	dr->devs = all;
	dr->ndevs += n;
	return 1;
}

/* Read the devices' registrations and make them targets, or not_found /
 * no_token. */
static int lookup_devices(const struct admin_req *req, struct direct_req *dr,
			  struct admin_reply *rep)
{
	struct queue_device key, *d;
	size_t i, off, chunk, nd;
	enum ferry_err rc;

	for (off = 0; off < dr->n; off += chunk) {
		struct queue_device *devs = NULL;

		chunk = dr->n - off < QUEUE_DEVICES_GET_MAX ? dr->n - off : QUEUE_DEVICES_GET_MAX;
		nd = 0;
		rc = queue_devices_get(req->reg, dr->ids + off, chunk, &devs, &nd);
		if (rc) {
			admin_reply_store_error(rep, rc, "device lookup", 0);
			return 0;
		}
		if (!keep_devices(dr, devs, nd)) {
			admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
			return 0;
		}
	}
	/* qsort and bsearch take no NULL array, even an empty one. */
	if (dr->ndevs)
		qsort(dr->devs, dr->ndevs, sizeof(*dr->devs), device_cmp);
	for (i = 0; i < dr->n; i++) {
		key.id = dr->ids[i];
		d = dr->ndevs ? bsearch(&key, dr->devs, dr->ndevs, sizeof(*dr->devs), device_cmp)
			      : NULL;
		if (!d) {
			dr->state[i] = T_NOT_FOUND;
			continue;
		}
		if (!d->push_token || !d->push_provider) {
			dr->state[i] = T_NO_TOKEN;
			continue;
		}
		dr->t[i].device = d->id;
		dr->t[i].provider = d->push_provider;
		dr->t[i].token = d->push_token;
		dr->t[i].app = d->push_app;
		dr->t[i].topic = d->push_topic;
		dr->t[i].environment = d->push_environment;
	}
	return 1;
}

/* ---- sending ---- */

static void reply_push_error(struct admin_reply *rep, enum ferry_err rc, const char *err)
{
	const char *why = err[0] ? err : ferry_strerror(rc);

	switch (rc) {
	case FERRY_EINVAL:
		admin_reply_error(rep, HTTP_BAD_REQUEST, "cannot send the notification: %s", why);
		break;
	case FERRY_EUNAVAIL:
		log_warn("event=admin_push_unavailable err=\"%s\"", ferry_strerror(rc));
		admin_reply_error(rep, HTTP_UNAVAILABLE,
				  "cannot send the notification: %s: try again later", why);
		if (rep->status == HTTP_UNAVAILABLE)
			rep->retry_after = PUSH_RETRY_AFTER;
		break;
	default:
		log_error("event=admin_push_error err=\"%s\"", ferry_strerror(rc));
		admin_reply_error(rep, HTTP_INTERNAL, "cannot send the notification: %s", why);
		break;
	}
}

/* Push the targets that have a token (T_SEND, packed: device targets may
 * be out); their results into dr->res. */
static int send_targets(const struct admin_req *req, struct direct_req *dr, struct admin_reply *rep)
{
	struct push_target *t;
	struct push_target_result *res;
	char err[PUSH_ERR_MAX] = "";
	size_t i, m = 0;
	enum ferry_err rc;

	for (i = 0; i < dr->n; i++)
		m += dr->state[i] == T_SEND;
	if (!m)
		return 1;
	t = calloc(m, sizeof(*t));
	res = calloc(m, sizeof(*res));
	if (!t || !res) {
		free(t);
		free(res);
		admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
		return 0;
	}
	for (i = 0, m = 0; i < dr->n; i++)
		if (dr->state[i] == T_SEND)
			t[m++] = dr->t[i];
	rc = push_send_now(req->push, &dr->note, t, m, res, err, sizeof(err));
	for (i = 0, m = 0; !rc && i < dr->n; i++)
		if (dr->state[i] == T_SEND)
			dr->res[i] = res[m++];
	free(t);
	free(res);
	if (rc)
		reply_push_error(rep, rc, err);
	return !rc;
}

/* ---- answers ---- */

/*
 * A provider's reason as ASCII, bytes outside 0x20-0x7e as '?', into @out:
 * a reason cut short by the push service may end in half a UTF-8 sequence,
 * which JSON cannot carry.
 */
static const char *ascii_copy(const char *in, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < outlen; i++)
		out[i] = in[i] >= ' ' && in[i] <= '~' ? in[i] : '?';
	out[i] = '\0';
	return out;
}

static json_t *result_json(const struct direct_req *dr, size_t i)
{
	const struct push_target_result *r = &dr->res[i];
	char id[24], prefix[ADMIN_TOKEN_PREFIX_SIZE], reason[sizeof(r->reason)];
	json_t *j;

	if (dr->by_device) {
		snprintf(id, sizeof(id), "%" PRId64, dr->ids[i]);
		j = json_pack("{s:s}", "device", id);
	} else {
		admin_token_prefix(dr->t[i].token, prefix);
		j = json_pack("{s:s}", "token_prefix", prefix);
	}
	if (!j)
		return NULL;
	if (dr->state[i] != T_SEND) {
		if (json_object_set_new(
			    j, "status",
			    json_string(dr->state[i] == T_NOT_FOUND ? "not_found" : "no_token")))
			goto fail;
		return j;
	}
	if (json_object_set_new(j, "provider", json_string(dr->t[i].provider)) ||
	    json_object_set_new(j, "status", json_string(push_status_name(r->status))) ||
	    (r->http_status &&
	     json_object_set_new(j, "http_status", json_integer((json_int_t)r->http_status))) ||
	    (r->reason[0] &&
	     json_object_set_new(j, "reason",
				 json_string(ascii_copy(r->reason, reason, sizeof(reason))))) ||
	    (r->token_removed && json_object_set_new(j, "token_removed", json_true())))
		goto fail;
	return j;
fail:
	json_decref(j);
	return NULL;
}

/* The 200 answer; counts what went well into *ok. */
static json_t *results_json(const struct direct_req *dr, size_t *ok)
{
	json_t *arr = json_array();
	size_t i;

	*ok = 0;
	for (i = 0; arr && i < dr->n; i++) {
		*ok += dr->state[i] == T_SEND && dr->res[i].status == PUSH_ST_OK;
		if (json_array_append_new(arr, result_json(dr, i))) {
			json_decref(arr);
			arr = NULL;
		}
	}
	if (!arr)
		return NULL;
	return json_pack("{s:o,s:I,s:I}", "results", arr, "sent", (json_int_t)*ok, "failed",
			 (json_int_t)(dr->n - *ok));
}

void admin_route_push_send(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const fields[] = {
		"devices", "tokens",   "title",	      "body",	    "sound", "badge",
		"data",	   "priority", "collapse_id", "expiration", NULL,
	};
	struct direct_req dr = { 0 };
	size_t i, ok = 0, not_found = 0, no_token = 0;
	json_t *obj;

	if (!(obj = admin_body_object(req, fields, rep)))
		return;
	if (!parse_body(obj, &dr, rep))
		goto out;
	if (!req->push) {
		admin_reply_error(rep, HTTP_UNAVAILABLE,
				  "cannot send pushes: the push service is not running (it runs "
				  "with the device gateway: [gateway] listen or tls_cert)");
		goto out;
	}
	if (dr.by_device && !lookup_devices(req, &dr, rep))
		goto out;
	if (!send_targets(req, &dr, rep))
		goto out;
	admin_reply_json(rep, HTTP_OK, results_json(&dr, &ok));
	for (i = 0; i < dr.n; i++) {
		not_found += dr.state[i] == T_NOT_FOUND;
		no_token += dr.state[i] == T_NO_TOKEN;
	}
	log_info("event=admin_push_sent by=%s targets=%zu ok=%zu failed=%zu not_found=%zu "
		 "no_token=%zu",
		 dr.by_device ? "devices" : "tokens", dr.n, ok, dr.n - ok, not_found, no_token);
	/* The pushes are out all the same; only this answer is lost. */
	if (rep->status == HTTP_INTERNAL)
		log_error("event=admin_reply_failed op=\"push\" targets=%zu", dr.n);
out:
	direct_req_release(&dr);
	json_decref(obj);
}

/* ---- GET /v1/stats ---- */

static json_t *reasons_json(const struct push_provider_stats *p)
{
	json_t *j = json_object();

	char reason[sizeof(p->reasons[0].reason)];
	size_t i;

	for (i = 0; j && i < p->nreasons && i < PUSH_STATS_REASONS; i++) {
		/* Two reasons alike but for their non-ASCII bytes add up. */
		json_t *same = json_object_get(
			j, ascii_copy(p->reasons[i].reason, reason, sizeof(reason)));
		json_int_t n = (json_int_t)p->reasons[i].count + json_integer_value(same);

		if (json_object_set_new(j, reason, json_integer(n))) {
			json_decref(j);
			j = NULL;
		}
	}
	return j;
}

static json_t *provider_json(const struct push_provider_stats *p)
{
	json_t *reasons = reasons_json(p);
	double avg = p->ok ? (double)p->latency_sum_us / (double)p->ok / 1000.0 : 0.0;

	if (!reasons)
		return NULL;
	return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:o}", "app", p->app, "provider",
			 p->provider, "sent", (json_int_t)p->sent, "ok", (json_int_t)p->ok,
			 "failed", (json_int_t)p->failed, "retries", (json_int_t)p->retries,
			 "tokens_removed", (json_int_t)p->tokens_removed, "latency_avg_ms", avg,
			 "latency_max_ms", (double)p->latency_max_us / 1000.0, "failed_by_reason",
			 reasons);
}

/* The "push" section: null without a push service; NULL when out of memory. */
json_t *admin_stats_push_json(struct push_service *ps)
{
	struct push_stats st;
	json_t *providers, *j;
	size_t i;

	if (!ps)
		return json_null();
	if (push_stats_get(ps, &st)) {
		log_error("event=admin_stats_error section=push err=\"%s\"",
			  ferry_strerror(FERRY_ENOMEM));
		return NULL;
	}
	providers = json_array();
	for (i = 0; providers && i < st.nproviders; i++) {
		if (json_array_append_new(providers, provider_json(&st.providers[i]))) {
			json_decref(providers);
			providers = NULL;
		}
	}
	j = providers ? json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "wakes",
				  (json_int_t)st.wakes, "wakes_coalesced",
				  (json_int_t)st.wakes_coalesced, "wakes_cancelled",
				  (json_int_t)st.wakes_cancelled, "wakes_dropped",
				  (json_int_t)st.wakes_dropped, "wakes_no_token",
				  (json_int_t)st.wakes_no_token, "wakes_no_credentials",
				  (json_int_t)st.wakes_no_credentials, "wakes_gave_up",
				  (json_int_t)st.wakes_gave_up, "lookups", (json_int_t)st.lookups,
				  "lookup_failures", (json_int_t)st.lookup_failures, "direct",
				  (json_int_t)st.direct, "pending", (json_int_t)st.pending,
				  "providers", providers)
		      : NULL;
	push_stats_release(&st);
	return j;
}
