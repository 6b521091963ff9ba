/*
 * routes.c - what each admin API route does (the HTTP side is in http.c),
 * but for the push service's routes (routes_push.c) and the operators'
 * (routes_ops.c), which share the helpers exported here (admin_int.h).
 *
 * Each handler checks its path parameters and body, calls the queue registry
 * and fills in a struct admin_reply; it always fills it in, with an error
 * object when anything failed. The routes, their bodies and every error they
 * return are documented in admin/openapi.yaml: keep the two in step.
 *
 * Input rules:
 *   - a request body is a JSON object; unknown fields, duplicate keys and
 *     wrong types are refused with 400, so a typo never goes unnoticed;
 *   - a {device} is a positive decimal int64 without sign or leading zeros
 *     (in a body, also a JSON integer);
 *   - a {user} is 1-64 bytes of [A-Za-z0-9._:@+-]. There is no table of
 *     users, so a valid user id is never a 404: one without devices lists
 *     none, and has the default settings until they are written;
 *   - a payload is standard base64 (RFC 4648, padded, nothing else in it),
 *     so that every payload has one spelling; it is never quoted or logged;
 *   - a push token is never echoed back, in a message or in a reply: a
 *     device shows only a short prefix of it (token_prefix);
 *   - the one-time device secret appears only in the reply to its creation.
 *
 * Registry errors map as: FERRY_ENOTFOUND 404, FERRY_EUNAVAIL 503,
 * FERRY_EINVAL 400, anything else 500 (logged as event=admin_store_error).
 *
 * POST /v1/messages hands an envelope to the gateway (gateway_inject()),
 * which blocks this libmicrohttpd thread until every target device has
 * acknowledged it or it is committed to the offline store: the 200 means
 * what a device's ACK means. Its errors map as: FERRY_ENOTFOUND 404,
 * FERRY_ETOOBIG 413, FERRY_ELIMIT 429, FERRY_EUNAVAIL 503 with Retry-After,
 * anything else 500 (logged as event=admin_message_error). Without a device
 * gateway the route answers 503, once the request itself is valid.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "admin/admin_int.h"
#include "gateway/gateway.h"
#include "gateway/proto.h"
#include "common/log.h"
#include "queue/queue.h"
#include "common/banned.h"

#define HTTP_OK 200
#define HTTP_CREATED 201
#define HTTP_NO_CONTENT 204
#define HTTP_BAD_REQUEST 400
#define HTTP_NOT_FOUND 404
#define HTTP_TOO_LARGE 413
#define HTTP_TOO_MANY 429
#define HTTP_INTERNAL 500
#define HTTP_UNAVAILABLE 503

/* Seconds a client waits before retrying a message the store could not take. */
#define MESSAGE_RETRY_AFTER 1

/* Room for what gateway_inject() says about a failure. */
#define INJECT_ERR_MAX 256

/* Longest int64 in decimal. */
#define DEVICE_ID_DIGITS 19

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026, after a token prefix */

#define USER_RULE "1-64 bytes of [A-Za-z0-9._:@+-]"

/* ---- registry errors ---- */

void admin_reply_store_error(struct admin_reply *rep, enum ferry_err rc, const char *op, int64_t id)
{
	switch (rc) {
	case FERRY_ENOTFOUND:
		admin_reply_error(rep, HTTP_NOT_FOUND, "device '%" PRId64 "' not found", id);
		break;
	case FERRY_EUNAVAIL:
		log_warn("event=admin_store_unavailable op=\"%s\"", op);
		admin_reply_error(rep, HTTP_UNAVAILABLE, "database unavailable: try again later");
		break;
	case FERRY_EINVAL:
		admin_reply_error(rep, HTTP_BAD_REQUEST, "%s refused by the database: %s", op,
				  ferry_strerror(rc));
		break;
	default:
		log_error("event=admin_store_error op=\"%s\" device=%" PRId64 " err=\"%s\"", op, id,
			  ferry_strerror(rc));
		admin_reply_error(rep, HTTP_INTERNAL, "%s failed: %s", op, ferry_strerror(rc));
		break;
	}
}

/* ---- path parameters ---- */

static int user_param(const struct admin_req *req, struct admin_reply *rep)
{
	char q[ADMIN_QUOTE_MAX + 8];

	if (queue_user_valid(req->params[0]))
		return 1;
	admin_reply_error(rep, HTTP_BAD_REQUEST, "user '%s' is invalid: " USER_RULE,
			  admin_quote(q, sizeof(q), req->params[0]));
	return 0;
}

/* Digits only, no leading zero, 1-19 digits, positive, fits int64. */
int admin_device_id_parse(const char *s, int64_t *id)
{
	size_t i, len = strlen(s);
	long long v;

	for (i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		;
	if (len && len <= DEVICE_ID_DIGITS && i == len && s[0] != '0') {
		errno = 0;
		v = strtoll(s, NULL, 10);
		if (!errno) {
			*id = v;
			return 1;
		}
	}
	return 0;
}

int admin_device_param(const struct admin_req *req, struct admin_reply *rep, int64_t *id)
{
	const char *s = req->params[0];
	char q[ADMIN_QUOTE_MAX + 8];

	if (admin_device_id_parse(s, id))
		return 1;
	admin_reply_error(rep, HTTP_BAD_REQUEST,
			  "device id '%s' is invalid: expected a positive decimal integer",
			  admin_quote(q, sizeof(q), s));
	return 0;
}

/* ---- request bodies ---- */

const char *admin_json_type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

/*
 * jansson's message in @jerr without the " near '...'" it appends: that is up
 * to 20 bytes of the body, which may be part of a push token. Edits @jerr.
 */
static const char *parse_error_text(json_error_t *jerr)
{
	char *near = strstr(jerr->text, " near '");

	if (near)
		*near = '\0';
	return jerr->text;
}

int admin_members_known(json_t *obj, const char *const *allowed, const char *where,
			struct admin_reply *rep)
{
	char q[ADMIN_QUOTE_MAX + 8];
	const char *key;
	json_t *v;
	size_t i;

	json_object_foreach(obj, key, v)
	{
		for (i = 0; allowed[i] && strcmp(allowed[i], key); i++)
			;
		if (!allowed[i]) {
			admin_reply_error(rep, HTTP_BAD_REQUEST, "unknown field '%s%s'", where,
					  admin_quote(q, sizeof(q), key));
			return 0;
		}
	}
	return 1;
}

json_t *admin_body_object(const struct admin_req *req, const char *const *allowed,
			  struct admin_reply *rep)
{
	json_error_t jerr;
	json_t *obj;

	if (!req->body_len) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "request body is empty: expected a JSON object");
		return NULL;
	}
	obj = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!obj) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
		else
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "invalid JSON: %s at line %d column %d",
					  parse_error_text(&jerr), jerr.line, jerr.column);
		return NULL;
	}
	if (!json_is_object(obj)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "request body must be a JSON object, not %s",
				  admin_json_type_name(obj));
		json_decref(obj);
		return NULL;
	}
	if (!admin_members_known(obj, allowed, "", rep)) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

int admin_member_string(json_t *obj, const char *where, const char *key, int required,
			const char **out, struct admin_reply *rep)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if ((!v || json_is_null(v)) && !required)
		return 1;
	if (!v) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field '%s%s' is required", where, key);
		return 0;
	}
	if (!json_is_string(v)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field '%s%s' must be a string, not %s",
				  where, key, admin_json_type_name(v));
		return 0;
	}
	*out = json_string_value(v);
	return 1;
}

/* admin_member_string() of a body's top-level member. */
static int field_string(json_t *obj, const char *key, int required, const char **out,
			struct admin_reply *rep)
{
	return admin_member_string(obj, "", key, required, out, rep);
}

/* The boolean member @key of @obj into *@out (0 or 1): 400 when it is
 * missing or anything but true or false (null too). */
static int field_bool(json_t *obj, const char *key, int *out, struct admin_reply *rep)
{
	json_t *v = json_object_get(obj, key);

	if (!v) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field '%s' is required", key);
		return 0;
	}
	if (!json_is_boolean(v)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field '%s' must be a boolean, not %s",
				  key, admin_json_type_name(v));
		return 0;
	}
	*out = json_is_true(v);
	return 1;
}

/* Every byte in [@lo, 0x7e], and 1 to @max of them. */
static int ascii_range(const char *s, char lo, size_t max)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (s[i] < lo || s[i] > '~')
			return 0;
	return i >= 1 && i <= max;
}

static int app_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@+-",
			    s[i]))
			return 0;
	return i >= 1 && i <= QUEUE_APP_MAX;
}

static int hex_only(const char *s)
{
	for (; *s; s++)
		if (!strchr("0123456789abcdefABCDEF", *s))
			return 0;
	return 1;
}

/* provider and token; nothing of the token goes into a message. */
static int check_token(const struct queue_push_token *t, const char *where, struct admin_reply *rep)
{
	int apns = !strcmp(t->provider, "apns");

	if (!apns && strcmp(t->provider, "fcm")) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%sprovider' must be one of apns, fcm", where);
		return 0;
	}
	if (!ascii_range(t->token, '!', QUEUE_TOKEN_MAX)) {
		admin_reply_error(
			rep, HTTP_BAD_REQUEST,
			"field '%stoken' must be 1-%d bytes of printable ASCII without spaces",
			where, QUEUE_TOKEN_MAX);
		return 0;
	}
	if (apns && !hex_only(t->token)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%stoken' must be hexadecimal for provider apns", where);
		return 0;
	}
	return 1;
}

/* app, topic, environment, once provider and token are known good. */
static int check_options(struct queue_push_token *t, const char *where, struct admin_reply *rep)
{
	int apns = !strcmp(t->provider, "apns");

	if (t->app && !app_valid(t->app)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "field '%sapp' must be 1-%d bytes of %s",
				  where, QUEUE_APP_MAX, "[A-Za-z0-9._:@+-]");
		return 0;
	}
	if (t->topic && !apns) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%stopic' is only allowed for provider apns", where);
		return 0;
	}
	if (t->topic && !ascii_range(t->topic, ' ', QUEUE_TOPIC_MAX)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%stopic' must be 1-%d bytes of printable ASCII", where,
				  QUEUE_TOPIC_MAX);
		return 0;
	}
	if (!t->environment)
		t->environment = "production";
	if (strcmp(t->environment, "production") && strcmp(t->environment, "sandbox")) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%senvironment' must be one of production, sandbox",
				  where);
		return 0;
	}
	if (!apns && strcmp(t->environment, "production")) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field '%senvironment' may be 'sandbox' only for provider apns",
				  where);
		return 0;
	}
	return 1;
}

int admin_push_token_check(struct queue_push_token *t, const char *where, struct admin_reply *rep)
{
	return check_token(t, where, rep) && check_options(t, where, rep);
}

/* ---- messages ---- */

/* @v in a few words for an error message: "-3", "1.5", "a string". */
const char *admin_json_describe(const json_t *v, char *out, size_t outlen)
{
	if (json_is_integer(v))
		snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		snprintf(out, outlen, "%g", json_real_value(v));
	else
		snprintf(out, outlen, "%s", admin_json_type_name(v));
	return out;
}

/*
 * Exactly one of "to_user" (a user id) and "to_device" (a device id, as a
 * JSON integer or as the decimal string the API returns); null counts as
 * absent. Fills @inj's to_user (borrowed from @obj) or to_device.
 */
static int message_target(json_t *obj, struct gateway_inject *inj, struct admin_reply *rep)
{
	json_t *dev = json_object_get(obj, "to_device");
	char q[ADMIN_QUOTE_MAX + 8];
	const char *user;

	if (!field_string(obj, "to_user", 0, &user, rep))
		return 0;
	if (json_is_null(dev))
		dev = NULL;
	if (!user == !dev) {
		admin_reply_error(
			rep, HTTP_BAD_REQUEST, "%s",
			user ? "fields 'to_user' and 'to_device' exclude each other: give one"
			     : "field 'to_user' or 'to_device' is required");
		return 0;
	}
	if (user) {
		if (queue_user_valid(user)) {
			inj->to_user = user;
			return 1;
		}
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field 'to_user': user '%s' is invalid: " USER_RULE,
				  admin_quote(q, sizeof(q), user));
		return 0;
	}
	if (json_is_integer(dev) && json_integer_value(dev) > 0) {
		inj->to_device = (int64_t)json_integer_value(dev);
		return 1;
	}
	if (json_is_string(dev) && admin_device_id_parse(json_string_value(dev), &inj->to_device))
		return 1;
	if (json_is_string(dev))
		admin_reply_error(
			rep, HTTP_BAD_REQUEST,
			"field 'to_device': device id '%s' is invalid: expected a positive "
			"decimal integer",
			admin_quote(q, sizeof(q), json_string_value(dev)));
	else
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field 'to_device' must be a positive integer, not %s",
				  admin_json_describe(dev, q, sizeof(q)));
	return 0;
}

/* "ttl": absent, null, or whole seconds, 0 or more (0: [store] default_ttl). */
static int message_ttl(json_t *obj, unsigned *ttl, struct admin_reply *rep)
{
	json_t *v = json_object_get(obj, "ttl");
	char what[64];

	*ttl = 0;
	if (!v || json_is_null(v))
		return 1;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		admin_reply_error(
			rep, HTTP_BAD_REQUEST,
			"field 'ttl' must be a whole number of seconds, 0 or more, not %s",
			admin_json_describe(v, what, sizeof(what)));
		return 0;
	}
	/* The gateway caps it at [store] default_ttl, as it does a SEND's. */
	*ttl = json_integer_value(v) > UINT_MAX ? UINT_MAX : (unsigned)json_integer_value(v);
	return 1;
}

/* "client_id": absent, null, or a positive integer below 2^63, as a number
 * or a decimal string (JSON numbers past 2^53 lose digits in many clients). */
static int message_client_id(json_t *obj, uint64_t *id, struct admin_reply *rep)
{
	json_t *v = json_object_get(obj, "client_id");
	int64_t n;
	char what[64];

	*id = 0;
	if (!v || json_is_null(v))
		return 1;
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*id = (uint64_t)json_integer_value(v);
		return 1;
	}
	if (json_is_string(v) && admin_device_id_parse(json_string_value(v), &n)) {
		*id = (uint64_t)n;
		return 1;
	}
	admin_reply_error(rep, HTTP_BAD_REQUEST,
			  "field 'client_id' must be a positive integer (or its decimal string), "
			  "not %s",
			  admin_json_describe(v, what, sizeof(what)));
	return 0;
}

static int base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Decode standard base64 (RFC 4648 section 4): A-Z a-z 0-9 + /, padded with
 * '=' to a multiple of 4 characters, no whitespace, and zero bits after the
 * last byte, so that a payload has exactly one spelling. @out has room for
 * @len / 4 * 3 bytes. Returns 1, or 0 with the reason in @why (which never
 * quotes the input: it may be a payload).
 */
static int base64_decode(const char *s, size_t len, uint8_t *out, size_t *outlen, char *why,
			 size_t whylen)
{
	size_t i, k, o = 0, pad = 0;

	if (len % 4) {
		snprintf(why, whylen, "its length, %zu, is not a multiple of 4", len);
		return 0;
	}
	if (len && s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	for (i = 0; i < len; i += 4) {
		size_t last_pad = i + 4 == len ? pad : 0;
		uint32_t v = 0;

		for (k = 0; k < 4; k++) {
			int d = k < 4 - last_pad ? base64_value(s[i + k]) : 0;

			if (d < 0) {
				snprintf(why, whylen, "%s at offset %zu",
					 s[i + k] == '=' ? "'=' before the end"
							 : "a character outside A-Z a-z 0-9 + / =",
					 i + k);
				return 0;
			}
			v = v << 6 | (uint32_t)d;
		}
		if (v & ((1u << (8 * last_pad)) - 1)) {
			snprintf(why, whylen, "nonzero bits after the last byte at offset %zu",
				 len - pad - 1);
			return 0;
		}
		out[o++] = (uint8_t)(v >> 16);
		if (last_pad < 2)
			out[o++] = (uint8_t)(v >> 8);
		if (last_pad < 1)
			out[o++] = (uint8_t)v;
	}
	*outlen = o;
	return 1;
}

/*
 * "payload_b64" decoded into *out (malloc'ed, the caller frees it), *len
 * bytes: 400 unless it is standard base64, 413 when it is over @max.
 */
static int message_payload(json_t *obj, size_t max, uint8_t **out, size_t *len,
			   struct admin_reply *rep)
{
	char why[96];
	const char *b64;
	uint8_t *p;
	size_t n;

	*out = NULL;
	if (!field_string(obj, "payload_b64", 1, &b64, rep))
		return 0;
	n = strlen(b64);
	p = malloc(n / 4 * 3 + 1);
	if (!p) {
		admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
		return 0;
	}
	if (!base64_decode(b64, n, p, len, why, sizeof(why))) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field 'payload_b64' is not standard base64: %s", why);
		free(p);
		return 0;
	}
	if (*len > max) {
		admin_reply_error(
			rep, HTTP_TOO_LARGE,
			"payload is %zu bytes, over the limit of %zu ([gateway] max_frame "
			"- %d)",
			*len, max, PROTO_PAYLOAD_HEADROOM);
		free(p);
		return 0;
	}
	*out = p;
	return 1;
}

static void reply_inject_error(struct admin_reply *rep, enum ferry_err rc,
			       const struct gateway_inject *inj, const char *err)
{
	const char *why = err[0] ? err : ferry_strerror(rc);
	char target[PROTO_MAX_USER + 32];

	if (inj->to_user)
		snprintf(target, sizeof(target), "user '%s'", inj->to_user);
	else
		snprintf(target, sizeof(target), "device '%" PRId64 "'", inj->to_device);
	switch (rc) {
	case FERRY_ENOTFOUND:
		admin_reply_error(rep, HTTP_NOT_FOUND, "cannot send to %s: %s", target, why);
		break;
	case FERRY_ETOOBIG:
		admin_reply_error(rep, HTTP_TOO_LARGE, "cannot send to %s: %s", target, why);
		break;
	case FERRY_ELIMIT:
		admin_reply_error(rep, HTTP_TOO_MANY, "cannot send to %s: %s", target, why);
		break;
	case FERRY_EUNAVAIL:
		log_warn("event=admin_message_unavailable to=\"%s\" err=\"%s\"", target,
			 ferry_strerror(rc));
		admin_reply_error(rep, HTTP_UNAVAILABLE, "cannot send to %s: %s: try again later",
				  target, why);
		if (rep->status == HTTP_UNAVAILABLE)
			rep->retry_after = MESSAGE_RETRY_AFTER;
		break;
	default:
		log_error("event=admin_message_error to=\"%s\" err=\"%s\"", target,
			  ferry_strerror(rc));
		admin_reply_error(rep, HTTP_INTERNAL, "cannot send to %s: %s", target, why);
		break;
	}
}

/* ---- replies ---- */

void admin_format_time(int64_t ms, char out[ADMIN_TIME_LEN])
{
	time_t secs = (time_t)(ms / 1000);
	int frac = (int)(ms % 1000);
	struct tm tm;
	size_t n;

	if (frac < 0) {
		frac += 1000;
		secs--;
	}
	if (!gmtime_r(&secs, &tm)) {
		snprintf(out, ADMIN_TIME_LEN, "1970-01-01T00:00:00.000Z");
		return;
	}
	n = strftime(out, ADMIN_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, ADMIN_TIME_LEN - n, ".%03dZ", frac);
}

void admin_token_prefix(const char *token, char out[ADMIN_TOKEN_PREFIX_SIZE])
{
	size_t n = strlen(token) / 2;

	if (n > ADMIN_TOKEN_PREFIX_MAX)
		n = ADMIN_TOKEN_PREFIX_MAX;
	snprintf(out, ADMIN_TOKEN_PREFIX_SIZE, "%.*s" ELLIPSIS, (int)n, token);
}

static json_t *push_json(const struct queue_device *d)
{
	char prefix[ADMIN_TOKEN_PREFIX_SIZE], updated[ADMIN_TIME_LEN];

	admin_token_prefix(d->push_token, prefix);
	admin_format_time(d->push_updated_ms, updated);
	return json_pack("{s:s?,s:s,s:s?,s:s?,s:s?,s:s}", "provider", d->push_provider,
			 "token_prefix", prefix, "app", d->push_app, "topic", d->push_topic,
			 "environment", d->push_environment, "updated", updated);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The device's connection to this node. */
static json_t *presence_json(const struct admin_req *req, int64_t id)
{
	char since[ADMIN_TIME_LEN];
	struct gateway_presence p;

	if (!gateway_device_presence(req->gw, id, &p))
		return json_pack("{s:b}", "online", 0);
	admin_format_time(p.since_ms, since);
	return json_pack("{s:b,s:i,s:s,s:s?}", "online", 1, "worker", (int)p.worker,
			 "connected_since", since, "remote", *p.remote ? p.remote : NULL);
}

/* Its offline queue: devices.pending and the head envelope's age. */
static json_t *queue_json(const struct queue_device *d, int64_t now)
{
	char oldest[ADMIN_TIME_LEN];
	int64_t age = d->oldest_ms && now > d->oldest_ms ? now - d->oldest_ms : 0;

	if (d->oldest_ms)
		admin_format_time(d->oldest_ms, oldest);
	return json_pack("{s:I,s:s?,s:f}", "pending",
			 (json_int_t)(d->pending > INT64_MAX ? INT64_MAX : d->pending),
			 "oldest_created", d->oldest_ms ? oldest : NULL, "oldest_age_s",
			 (double)age / 1000.0);
}

/* What happened to its last push (sql/0006_push_outcome.sql). */
static json_t *last_push_json(const struct queue_device *d)
{
	char at[ADMIN_TIME_LEN];

	if (!d->push_last_ms || !d->push_last_provider || !d->push_last_outcome)
		return json_null();
	admin_format_time(d->push_last_ms, at);
	return json_pack("{s:s,s:s,s:s,s:i,s:s?}", "at", at, "provider", d->push_last_provider,
			 "outcome", d->push_last_outcome, "status", d->push_last_status, "reason",
			 d->push_last_reason);
}

static json_t *device_json(const struct admin_req *req, const struct queue_device *d, int64_t now)
{
	char id[24], created[ADMIN_TIME_LEN], seen[ADMIN_TIME_LEN];
	json_t *push = d->push_token ? push_json(d) : json_null();
	json_t *presence = presence_json(req, d->id);
	json_t *queue = queue_json(d, now);
	json_t *last_push = last_push_json(d);

	snprintf(id, sizeof(id), "%" PRId64, d->id);
	admin_format_time(d->created_ms, created);
	if (d->last_seen_ms)
		admin_format_time(d->last_seen_ms, seen);
	if (!push || !presence || !queue || !last_push) {
		json_decref(push);
		json_decref(presence);
		json_decref(queue);
		json_decref(last_push);
		return NULL;
	}
	/* "o" steals each reference, also when packing fails. */
	return json_pack("{s:s,s:s,s:s,s:s,s:s?,s:o,s:o,s:o,s:o}", "device_id", id, "user", d->user,
			 "platform", d->platform, "created", created, "last_seen",
			 d->last_seen_ms ? seen : NULL, "presence", presence, "queue", queue,
			 "push", push, "last_push", last_push);
}

/* Reply 200 with device @id as it is now. */
static void reply_device(const struct admin_req *req, struct admin_reply *rep, int64_t id,
			 const char *op)
{
	struct queue_device dev;
	enum ferry_err rc;

	memset(&dev, 0, sizeof(dev));
	rc = queue_device_get(req->reg, id, &dev);
	if (rc) {
		admin_reply_store_error(rep, rc, op, id);
		return;
	}
	admin_reply_json(rep, HTTP_OK, device_json(req, &dev, now_ms()));
	if (rep->status == HTTP_INTERNAL)
		log_error("event=admin_reply_failed op=\"%s\" device=%" PRId64, op, id);
	queue_device_release(&dev);
}

/* ---- the routes ---- */

void admin_route_healthz(const struct admin_req *req, struct admin_reply *rep)
{
	admin_reply_json(rep, HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

void admin_route_readyz(const struct admin_req *req, struct admin_reply *rep)
{
	enum ferry_err rc = queue_registry_ping(req->reg);
	/* Without a device gateway configured there are no listeners to wait
	 * for, and no offline store. */
	int listeners = !req->gw || gateway_ready(req->gw);
	int draining = gateway_draining(req->gw);
	int store = !req->gw || gateway_store_ready(req->gw);
	int ready = !rc && listeners && store;

	if (rc)
		log_warn("event=admin_not_ready database=\"%s\"", ferry_strerror(rc));
	admin_reply_json(rep, ready ? HTTP_OK : HTTP_UNAVAILABLE,
			 json_pack("{s:s,s:{s:s,s:s,s:s}}", "status", ready ? "ready" : "not ready",
				   "checks", "database", rc ? "unavailable" : "ok", "listeners",
				   listeners  ? "ok"
				   : draining ? "draining"
					      : "down",
				   "store", store ? "ok" : "unavailable"));
}

void admin_route_devices_create(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const fields[] = { "platform", NULL };
	char secret[QUEUE_SECRET_LEN + 1], id_text[24];
	const char *platform;
	enum ferry_err rc;
	json_t *obj;
	int64_t id;

	if (!user_param(req, rep) || !(obj = admin_body_object(req, fields, rep)))
		return;
	if (!field_string(obj, "platform", 1, &platform, rep))
		goto out;
	if (!queue_platform_valid(platform)) {
		admin_reply_error(rep, HTTP_BAD_REQUEST,
				  "field 'platform' must be one of ios, android, desktop, web");
		goto out;
	}
	rc = queue_device_create(req->reg, req->params[0], platform, &id, secret);
	if (rc) {
		admin_reply_store_error(rep, rc, "device creation", 0);
		goto out;
	}
	/* The new device is a target of the user's next SEND. */
	gateway_user_changed(req->gw, req->params[0]);
	snprintf(id_text, sizeof(id_text), "%" PRId64, id);
	admin_reply_json(rep, HTTP_CREATED,
			 json_pack("{s:s,s:s,s:s,s:s}", "device_id", id_text, "user",
				   req->params[0], "platform", platform, "secret", secret));
	explicit_bzero(secret, sizeof(secret));
	if (rep->status == HTTP_CREATED)
		snprintf(rep->location, sizeof(rep->location), "/v1/devices/%s", id_text);
	log_info("event=admin_device_created device=%s user=%s platform=%s", id_text,
		 req->params[0], platform);
out:
	json_decref(obj);
}

void admin_route_devices_list(const struct admin_req *req, struct admin_reply *rep)
{
	struct queue_device *devs = NULL;
	json_t *arr, *dev;
	enum ferry_err rc;
	size_t i, n = 0;
	int64_t now;

	if (!user_param(req, rep))
		return;
	rc = queue_device_list(req->reg, req->params[0], &devs, &n);
	if (rc) {
		admin_reply_store_error(rep, rc, "device listing", 0);
		return;
	}
	arr = json_array();
	now = now_ms();
	for (i = 0; arr && i < n; i++) {
		dev = device_json(req, &devs[i], now);
		if (json_array_append_new(arr, dev)) {
			json_decref(arr);
			arr = NULL;
		}
	}
	queue_device_list_free(devs, n);
	admin_reply_json(rep, HTTP_OK,
			 arr ? json_pack("{s:s,s:o}", "user", req->params[0], "devices", arr)
			     : NULL);
}

static json_t *settings_json(const struct queue_user_settings *s)
{
	return json_pack("{s:b}", "read_receipts", s->read_receipts);
}

void admin_route_user_settings_get(const struct admin_req *req, struct admin_reply *rep)
{
	struct queue_user_settings s;
	enum ferry_err rc;

	if (!user_param(req, rep))
		return;
	rc = queue_user_settings_get(req->reg, req->params[0], &s);
	if (rc) {
		admin_reply_store_error(rep, rc, "settings lookup", 0);
		return;
	}
	admin_reply_json(rep, HTTP_OK, settings_json(&s));
}

/* A whole replace: the body names every setting. */
void admin_route_user_settings_put(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const fields[] = { "read_receipts", NULL };
	struct queue_user_settings s = { 0 };
	enum ferry_err rc;
	json_t *obj;

	if (!user_param(req, rep) || !(obj = admin_body_object(req, fields, rep)))
		return;
	if (!field_bool(obj, "read_receipts", &s.read_receipts, rep))
		goto out;
	rc = queue_user_settings_put(req->reg, req->params[0], &s);
	if (rc) {
		admin_reply_store_error(rep, rc, "settings update", 0);
		goto out;
	}
	/* The user's connections to this node follow at once; new ones read
	 * the settings with their credentials. */
	gateway_user_settings_changed(req->gw, req->params[0], s.read_receipts);
	log_info("event=admin_user_settings_set user=%s read_receipts=%s", req->params[0],
		 s.read_receipts ? "true" : "false");
	admin_reply_json(rep, HTTP_OK, settings_json(&s));
	/* The settings are stored all the same; only this answer is lost. */
	if (rep->status == HTTP_INTERNAL)
		log_error("event=admin_reply_failed op=\"settings update\" user=%s",
			  req->params[0]);
out:
	json_decref(obj);
}

void admin_route_device_get(const struct admin_req *req, struct admin_reply *rep)
{
	int64_t id;

	if (admin_device_param(req, rep, &id))
		reply_device(req, rep, id, "device lookup");
}

void admin_route_device_delete(const struct admin_req *req, struct admin_reply *rep)
{
	enum ferry_err rc;
	int64_t id;

	if (!admin_device_param(req, rep, &id))
		return;
	rc = queue_device_delete(req->reg, id);
	if (rc) {
		admin_reply_store_error(rep, rc, "device deletion", id);
		return;
	}
	/* A connection of a deleted device must not live on. */
	gateway_device_deleted(req->gw, id);
	log_info("event=admin_device_deleted device=%" PRId64, id);
	admin_reply_empty(rep, HTTP_NO_CONTENT);
}

void admin_route_push_set(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const fields[] = {
		"provider", "token", "app", "topic", "environment", NULL,
	};
	struct queue_push_token t = { 0 };
	enum ferry_err rc;
	json_t *obj;
	int64_t id;

	if (!admin_device_param(req, rep, &id) || !(obj = admin_body_object(req, fields, rep)))
		return;
	if (!field_string(obj, "provider", 1, &t.provider, rep) ||
	    !field_string(obj, "token", 1, &t.token, rep) ||
	    !field_string(obj, "app", 0, &t.app, rep) ||
	    !field_string(obj, "topic", 0, &t.topic, rep) ||
	    !field_string(obj, "environment", 0, &t.environment, rep) ||
	    !admin_push_token_check(&t, "", rep))
		goto out;
	rc = queue_device_set_push(req->reg, id, &t);
	if (rc) {
		admin_reply_store_error(rep, rc, "push token update", id);
		goto out;
	}
	log_info("event=admin_push_set device=%" PRId64 " provider=%s environment=%s", id,
		 t.provider, t.environment);
	reply_device(req, rep, id, "push token update");
out:
	json_decref(obj);
}

void admin_route_push_clear(const struct admin_req *req, struct admin_reply *rep)
{
	enum ferry_err rc;
	int64_t id;

	if (!admin_device_param(req, rep, &id))
		return;
	rc = queue_device_clear_push(req->reg, id);
	if (rc) {
		admin_reply_store_error(rep, rc, "push token removal", id);
		return;
	}
	log_info("event=admin_push_cleared device=%" PRId64, id);
	admin_reply_empty(rep, HTTP_NO_CONTENT);
}

void admin_route_message_send(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const fields[] = { "to_user", "to_device", "payload_b64",
					      "ttl",	 "client_id", NULL };
	struct gateway_inject inj = { 0 };
	char err[INJECT_ERR_MAX] = "", id[24];
	uint8_t *payload = NULL;
	const char *status;
	enum ferry_err rc;
	json_t *obj;

	if (!(obj = admin_body_object(req, fields, rep)))
		return;
	if (!message_target(obj, &inj, rep) || !message_ttl(obj, &inj.ttl, rep) ||
	    !message_client_id(obj, &inj.client_id, rep) ||
	    !message_payload(obj, req->max_payload, &payload, &inj.len, rep))
		goto out;
	if (!req->gw) {
		admin_reply_error(rep, HTTP_UNAVAILABLE,
				  "cannot send messages: this ferryd runs without a device gateway "
				  "([gateway] listen and tls_cert are empty)");
		goto out;
	}
	inj.payload = payload;
	rc = gateway_inject(req->gw, &inj, err, sizeof(err));
	if (rc) {
		reply_inject_error(rep, rc, &inj, err);
		goto out;
	}
	status = inj.delivered ? "delivered" : "stored";
	snprintf(id, sizeof(id), "%" PRIu64, inj.server_id);
	log_info("event=admin_message_sent server_id=%s to_user=%s to_device=%" PRId64
		 " targets=%u status=%s bytes=%zu ttl=%u",
		 id, inj.to_user ? inj.to_user : "-", inj.to_device, inj.targets, status, inj.len,
		 inj.ttl);
	admin_reply_json(rep, HTTP_OK,
			 json_pack("{s:s,s:I,s:s}", "server_id", id, "targets",
				   (json_int_t)inj.targets, "status", status));
	/* The message is out all the same; only this answer is lost. */
	if (rep->status == HTTP_INTERNAL)
		log_error("event=admin_reply_failed op=\"message\" server_id=%s", id);
out:
	free(payload);
	json_decref(obj);
}
