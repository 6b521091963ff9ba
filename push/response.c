/*
 * response.c - the push providers' answers, read (see response_int.h).
 *
 * Every function here is pure: bytes in, a filled struct out. jansson
 * reads the bodies (it refuses NUL bytes inside strings and nests at most
 * 2048 deep); what it returns is copied into fixed buffers with snprintf,
 * which truncates, so no answer can make a string longer than its field.
 * Keys are looked up on whatever JSON value came; jansson answers NULL for
 * a lookup in a non-object, so an array, a string or a number where an
 * object was expected reads as "absent".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "push/http.h"
#include "push/response_int.h"
#include "common/banned.h"

/* Copies into the senders' results are never cut a second time. */
_Static_assert(PUSH_RESPONSE_MAX_REASON == sizeof(((struct push_apns_result *)0)->reason),
	       "APNs reason sizes differ");
_Static_assert(PUSH_RESPONSE_MAX_CODE == sizeof(((struct push_fcm_result *)0)->error_code),
	       "FCM error code sizes differ");

#define FCM_ERROR_TYPE "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#define BAD_REQUEST_TYPE "type.googleapis.com/google.rpc.BadRequest"

/* A JSON value from @body, or NULL if there is none or it does not parse. */
static json_t *load(const uint8_t *body, size_t len)
{
	if (!body || !len)
		return NULL;
	return json_loadb((const char *)body, len, 0, NULL);
}

/* Retry-After in seconds, -1 if absent or neither form RFC 9110 allows. */
static int64_t retry_after(const char *v, int64_t now)
{
	uint64_t secs;

	if (!v || !v[0] || push_http_retry_after_parse(v, now, &secs) != FERRY_OK)
		return -1;
	/* "Retry-After: 18446744073709551615" is a valid header. */
	if (secs > PUSH_RESPONSE_MAX_RETRY_AFTER)
		secs = PUSH_RESPONSE_MAX_RETRY_AFTER;
	return (int64_t)secs;
}

/* ---- APNs ---- */

static int reason_is(const struct push_apns_response *r, const char *s)
{
	return strcmp(r->reason, s) == 0;
}

/*
 * A 410's timestamp (ms), 0 if it is none we can use. Apple sends an
 * integer; a real is taken too, but only once it is known to fit: casting
 * 1e300 to an integer is undefined behaviour.
 */
static int64_t timestamp_ms(const json_t *v)
{
	double d;

	if (json_is_integer(v)) {
		json_int_t t = json_integer_value(v);

		return t > 0 && t <= PUSH_RESPONSE_MAX_TIMESTAMP_MS ? (int64_t)t : 0;
	}
	if (!json_is_real(v))
		return 0;
	d = json_real_value(v);
	return d >= 1 && d <= (double)PUSH_RESPONSE_MAX_TIMESTAMP_MS ? (int64_t)d : 0;
}

/* {"reason": "...", "timestamp": ms}: either may be missing. */
static void apns_body(const uint8_t *body, size_t len, struct push_apns_response *out)
{
	json_t *j = load(body, len), *v;

	if (!j)
		return;
	v = json_object_get(j, "reason");
	if (json_is_string(v))
		snprintf(out->reason, sizeof(out->reason), "%s", json_string_value(v));
	out->timestamp_ms = timestamp_ms(json_object_get(j, "timestamp"));
	json_decref(j);
}

static enum push_apns_outcome apns_classify(long st, const struct push_apns_response *r)
{
	if (st == 200)
		return PUSH_APNS_OK;
	/* Apple: don't retry these; the token is dead or not this app's. */
	if (st == 410 || (st == 400 && (reason_is(r, "BadDeviceToken") ||
					reason_is(r, "DeviceTokenNotForTopic"))))
		return PUSH_APNS_TOKEN_INVALID;
	if (st == 429 || st >= 500 || (st == 403 && reason_is(r, "ExpiredProviderToken")))
		return PUSH_APNS_RETRY;
	/* The key, team or topic is wrong: every push of the app fails alike. */
	if (st == 403 ||
	    (st == 400 && (reason_is(r, "BadTopic") || reason_is(r, "TopicDisallowed") ||
			   reason_is(r, "MissingTopic"))))
		return PUSH_APNS_CONFIG;
	return PUSH_APNS_REJECTED;
}

void push_apns_response_parse(long status, const uint8_t *body, size_t len,
			      const char *retry_after_v, int64_t now,
			      struct push_apns_response *out)
{
	memset(out, 0, sizeof(*out));
	apns_body(body, len, out);
	out->outcome = apns_classify(status, out);
	/* The timestamp means something only with 410 (when the token died). */
	if (status != 410)
		out->timestamp_ms = 0;
	out->retry_after_s = retry_after(retry_after_v, now);
}

/* ---- FCM ---- */

/* A BadRequest's fieldViolations: does one name another field than the token? */
static int other_field(json_t *detail)
{
	json_t *fv;
	size_t k;

	json_array_foreach(json_object_get(detail, "fieldViolations"), k, fv)
	{
		const char *field = json_string_value(json_object_get(fv, "field"));

		if (!field || strcmp(field, "message.token") != 0)
			return 1;
	}
	return 0;
}

/* The FcmError errorCode and the BadRequest field violations in error.details[]. */
static void google_error(json_t *j, struct push_fcm_response *out)
{
	json_t *details = json_object_get(json_object_get(j, "error"), "details"), *d;
	size_t i;

	json_array_foreach(details, i, d)
	{
		const char *type = json_string_value(json_object_get(d, "@type"));

		if (!type)
			continue;
		if (strcmp(type, FCM_ERROR_TYPE) == 0) {
			const char *c = json_string_value(json_object_get(d, "errorCode"));

			/* The last FcmError wins, as it always has. */
			out->has_fcm_error = 1;
			snprintf(out->error_code, sizeof(out->error_code), "%s", c ? c : "");
		} else if (strcmp(type, BAD_REQUEST_TYPE) == 0 && other_field(d)) {
			out->other_field = 1;
		}
	}
}

/* Keyed on status and errorCode, never on Google's message text. */
static enum push_fcm_outcome fcm_classify(long st, const struct push_fcm_response *r)
{
	const char *c = r->error_code;

	if (st == 200)
		return PUSH_FCM_OK;
	/* INVALID_ARGUMENT is about the token only if no other field is named. */
	if ((st == 404 && strcmp(c, "UNREGISTERED") == 0) ||
	    (st == 403 && strcmp(c, "SENDER_ID_MISMATCH") == 0) ||
	    (st == 400 && strcmp(c, "INVALID_ARGUMENT") == 0 && !r->other_field))
		return PUSH_FCM_TOKEN_INVALID;
	/* 401 without an FcmError is the access token, not the app's setup. */
	if (st == 429 || st >= 500 || (st == 401 && !r->has_fcm_error))
		return PUSH_FCM_RETRY;
	if (st == 401 || st == 403)
		return PUSH_FCM_CONFIG;
	return PUSH_FCM_REJECTED;
}

void push_fcm_response_parse(long status, const uint8_t *body, size_t len,
			     const char *retry_after_v, int64_t now, struct push_fcm_response *out)
{
	memset(out, 0, sizeof(*out));
	if (status != 200) {
		json_t *j = load(body, len);

		google_error(j, out);
		json_decref(j);
	}
	out->outcome = fcm_classify(status, out);
	out->retry_after_s = retry_after(retry_after_v, now);
}

/* ---- the OAuth 2.0 token endpoint ---- */

/* expires_in, within 0..PUSH_RESPONSE_MAX_EXPIRES_IN; 0 if not an integer. */
static int64_t expires_in(const json_t *v)
{
	json_int_t e = json_is_integer(v) ? json_integer_value(v) : 0;

	if (e < 0)
		return 0;
	return e > PUSH_RESPONSE_MAX_EXPIRES_IN ? PUSH_RESPONSE_MAX_EXPIRES_IN : (int64_t)e;
}

enum ferry_err push_token_response_parse(long status, const uint8_t *body, size_t len,
					 struct push_token_response *out)
{
	json_t *j = load(body, len), *v;
	enum ferry_err rc = FERRY_OK;

	memset(out, 0, sizeof(*out));
	v = json_object_get(j, "access_token");
	if (status == 200 && json_is_string(v) && json_string_length(v)) {
		out->outcome = PUSH_FCM_OK;
		out->access_token = strdup(json_string_value(v));
		out->expires_in = expires_in(json_object_get(j, "expires_in"));
		if (!out->access_token) {
			out->outcome = PUSH_FCM_RETRY;
			out->expires_in = 0;
			rc = FERRY_ENOMEM;
		}
	} else {
		v = json_object_get(j, "error");
		if (json_is_string(v))
			snprintf(out->error, sizeof(out->error), "%s", json_string_value(v));
		/* 429 and 5xx are the endpoint's trouble; anything else is ours. */
		out->outcome = status == 429 || status >= 500 ? PUSH_FCM_RETRY : PUSH_FCM_CONFIG;
	}
	json_decref(j);
	return rc;
}

void push_token_response_release(struct push_token_response *r)
{
	if (r->access_token)
		OPENSSL_clear_free(r->access_token, strlen(r->access_token));
	r->access_token = NULL;
}

/* ---- header lines ---- */

int push_http_header_value(const char *p, size_t len, const char *name, char *dst, size_t dstlen)
{
	size_t nlen = strlen(name), end;

	if (len <= nlen || p[nlen] != ':' || strncasecmp(p, name, nlen) != 0)
		return 0;
	p += nlen + 1;
	len -= nlen + 1;
	while (len && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	end = len;
	while (end && (p[end - 1] == '\r' || p[end - 1] == '\n' || p[end - 1] == ' ' ||
		       p[end - 1] == '\t'))
		end--;
	if (!dstlen)
		return 1;
	if (end >= dstlen)
		end = dstlen - 1;
	memcpy(dst, p, end);
	dst[end] = '\0';
	return 1;
}
