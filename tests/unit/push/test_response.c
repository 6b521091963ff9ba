/*
 * test_response.c - what the push providers answer, read (push/response.c):
 * every APNs reason with its status, Google's FCM errors, the token
 * endpoint's JSON, Retry-After in both forms, header lines, and bodies that
 * are not what a provider sends, which must leave safe defaults.
 *
 * The answers are the documented ones (Apple's "Handling notification
 * responses from APNs", Firebase's FCM error codes and OAuth 2.0 for
 * service accounts); their expected outcomes are the table in push/fcm.h
 * and docs/internals/push.md.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "push/response_int.h"
#include "common/banned.h"

/* 2023-11-14T22:13:20Z, the time Retry-After dates are read against. */
#define NOW 1700000000

#define FCM_ERROR "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#define BAD_REQUEST "type.googleapis.com/google.rpc.BadRequest"

static const uint8_t *u8(const char *s)
{
	return (const uint8_t *)s;
}

static struct push_apns_response apns(long status, const char *body, const char *retry_after)
{
	struct push_apns_response r;

	push_apns_response_parse(status, u8(body), body ? strlen(body) : 0, retry_after, NOW, &r);
	return r;
}

static struct push_fcm_response fcm(long status, const char *body, const char *retry_after)
{
	struct push_fcm_response r;

	push_fcm_response_parse(status, u8(body), body ? strlen(body) : 0, retry_after, NOW, &r);
	return r;
}

/* Google's error JSON with one FcmError detail (@code NULL: none) and
 * optionally a BadRequest naming @field. */
static char *google(int http, const char *status, const char *code, const char *field)
{
	static char buf[1024];
	char fcm_d[160] = "", br_d[200] = "";

	if (code)
		snprintf(fcm_d, sizeof(fcm_d), "{\"@type\":\"%s\",\"errorCode\":\"%s\"}", FCM_ERROR,
			 code);
	if (field)
		snprintf(br_d, sizeof(br_d),
			 "%s{\"@type\":\"%s\",\"fieldViolations\":[{\"field\":\"%s\","
			 "\"description\":\"bad\"}]}",
			 code ? "," : "", BAD_REQUEST, field);
	snprintf(buf, sizeof(buf),
		 "{\"error\":{\"code\":%d,\"message\":\"m\",\"status\":\"%s\",\"details\":[%s%s]}}",
		 http, status, fcm_d, br_d);
	return buf;
}

/* ---- APNs ---- */

static const struct {
	long status;
	const char *reason;
	enum push_apns_outcome outcome;
} apns_reasons[] = {
	{ 400, "BadCollapseId", PUSH_APNS_REJECTED },
	{ 400, "BadDeviceToken", PUSH_APNS_TOKEN_INVALID },
	{ 400, "BadExpirationDate", PUSH_APNS_REJECTED },
	{ 400, "BadMessageId", PUSH_APNS_REJECTED },
	{ 400, "BadPriority", PUSH_APNS_REJECTED },
	{ 400, "BadTopic", PUSH_APNS_CONFIG },
	{ 400, "DeviceTokenNotForTopic", PUSH_APNS_TOKEN_INVALID },
	{ 400, "DuplicateHeaders", PUSH_APNS_REJECTED },
	{ 400, "IdleTimeout", PUSH_APNS_REJECTED },
	{ 400, "InvalidPushType", PUSH_APNS_REJECTED },
	{ 400, "MissingDeviceToken", PUSH_APNS_REJECTED },
	{ 400, "MissingTopic", PUSH_APNS_CONFIG },
	{ 400, "PayloadEmpty", PUSH_APNS_REJECTED },
	{ 400, "TopicDisallowed", PUSH_APNS_CONFIG },
	{ 403, "BadCertificate", PUSH_APNS_CONFIG },
	{ 403, "BadCertificateEnvironment", PUSH_APNS_CONFIG },
	{ 403, "ExpiredProviderToken", PUSH_APNS_RETRY },
	{ 403, "Forbidden", PUSH_APNS_CONFIG },
	{ 403, "InvalidProviderToken", PUSH_APNS_CONFIG },
	{ 403, "MissingProviderToken", PUSH_APNS_CONFIG },
	{ 403, "UnrelatedKeyIdInToken", PUSH_APNS_CONFIG },
	{ 403, "BadEnvironmentKeyIdInToken", PUSH_APNS_CONFIG },
	{ 404, "BadPath", PUSH_APNS_REJECTED },
	{ 405, "MethodNotAllowed", PUSH_APNS_REJECTED },
	{ 410, "ExpiredToken", PUSH_APNS_TOKEN_INVALID },
	{ 410, "Unregistered", PUSH_APNS_TOKEN_INVALID },
	{ 413, "PayloadTooLarge", PUSH_APNS_REJECTED },
	{ 429, "TooManyProviderTokenUpdates", PUSH_APNS_RETRY },
	{ 429, "TooManyRequests", PUSH_APNS_RETRY },
	{ 500, "InternalServerError", PUSH_APNS_RETRY },
	{ 503, "ServiceUnavailable", PUSH_APNS_RETRY },
	{ 503, "Shutdown", PUSH_APNS_RETRY },
};

/* Every reason Apple documents, with its status. */
static void test_apns_reasons(void **state)
{
	(void)state;

	for (size_t i = 0; i < sizeof(apns_reasons) / sizeof(apns_reasons[0]); i++) {
		char body[128];
		struct push_apns_response r;

		snprintf(body, sizeof(body), "{\"reason\":\"%s\"}", apns_reasons[i].reason);
		r = apns(apns_reasons[i].status, body, "");
		if (r.outcome != apns_reasons[i].outcome)
			fail_msg("%ld %s: %s, not %s", apns_reasons[i].status,
				 apns_reasons[i].reason, push_apns_outcome_name(r.outcome),
				 push_apns_outcome_name(apns_reasons[i].outcome));
		assert_string_equal(r.reason, apns_reasons[i].reason);
		assert_int_equal(r.timestamp_ms, 0);
		assert_int_equal(r.retry_after_s, -1);
	}
}

static void test_apns_ok(void **state)
{
	struct push_apns_response r = apns(200, NULL, "");
	(void)state;

	assert_int_equal(r.outcome, PUSH_APNS_OK);
	assert_string_equal(r.reason, "");
	assert_int_equal(r.timestamp_ms, 0);
	assert_int_equal(r.retry_after_s, -1);
	/* Without a body the status alone decides. */
	assert_int_equal(apns(410, NULL, NULL).outcome, PUSH_APNS_TOKEN_INVALID);
	assert_int_equal(apns(400, "", NULL).outcome, PUSH_APNS_REJECTED);
	assert_int_equal(apns(403, NULL, NULL).outcome, PUSH_APNS_CONFIG);
	assert_int_equal(apns(502, NULL, NULL).outcome, PUSH_APNS_RETRY);
	assert_int_equal(apns(0, NULL, NULL).outcome, PUSH_APNS_REJECTED);
}

/* 410's timestamp is kept (ms); any other status drops it. */
static void test_apns_timestamp(void **state)
{
	struct push_apns_response r;
	(void)state;

	r = apns(410, "{\"reason\":\"Unregistered\",\"timestamp\":1700000000123}", "");
	assert_int_equal(r.outcome, PUSH_APNS_TOKEN_INVALID);
	assert_string_equal(r.reason, "Unregistered");
	assert_int_equal(r.timestamp_ms, 1700000000123LL);
	r = apns(410, "{\"reason\":\"ExpiredToken\",\"timestamp\":1.7e12}", "");
	assert_int_equal(r.timestamp_ms, 1700000000000LL);
	r = apns(400, "{\"reason\":\"BadDeviceToken\",\"timestamp\":1700000000123}", "");
	assert_int_equal(r.outcome, PUSH_APNS_TOKEN_INVALID);
	assert_int_equal(r.timestamp_ms, 0);
	r = apns(410, "{\"reason\":\"Unregistered\",\"timestamp\":\"1700000000123\"}", "");
	assert_int_equal(r.timestamp_ms, 0);
}

/* Timestamps no int64_t or PostgreSQL takes read as none (the push's own
 * time is used then); 1e300 used to be cast to an integer as it came. */
static void test_apns_timestamp_range(void **state)
{
	(void)state;

	assert_int_equal(apns(410, "{\"timestamp\":1e300}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"timestamp\":-1e300}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"timestamp\":9.3e18}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"timestamp\":9223372036854775807}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"timestamp\":-5}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"timestamp\":0.5}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"timestamp\":253402300799999}", "").timestamp_ms,
			 PUSH_RESPONSE_MAX_TIMESTAMP_MS);
	assert_int_equal(apns(410, "{\"timestamp\":253402300800000}", "").timestamp_ms, 0);
	assert_int_equal(apns(410, "{\"reason\":\"Unregistered\",\"timestamp\":1e300}", "").outcome,
			 PUSH_APNS_TOKEN_INVALID);
}

/* Retry-After as delay-seconds and as an HTTP-date, read against NOW. */
static void test_retry_after(void **state)
{
	(void)state;

	assert_int_equal(apns(429, "{\"reason\":\"TooManyRequests\"}", "120").retry_after_s, 120);
	assert_int_equal(apns(503, NULL, "0").retry_after_s, 0);
	/* NOW + 90 s, in the three date forms RFC 9110 lets a recipient read. */
	assert_int_equal(apns(503, NULL, "Tue, 14 Nov 2023 22:14:50 GMT").retry_after_s, 90);
	assert_int_equal(apns(503, NULL, "Tuesday, 14-Nov-23 22:14:50 GMT").retry_after_s, 90);
	assert_int_equal(apns(503, NULL, "Tue Nov 14 22:14:50 2023").retry_after_s, 90);
	/* A date gone by: now. */
	assert_int_equal(apns(503, NULL, "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s, 0);
	assert_int_equal(fcm(503, NULL, "Tue, 14 Nov 2023 22:14:50 GMT").retry_after_s, 90);
	/* Absent or unreadable: -1, and the sender's back-off applies. */
	assert_int_equal(apns(503, NULL, NULL).retry_after_s, -1);
	assert_int_equal(apns(503, NULL, "").retry_after_s, -1);
	assert_int_equal(apns(503, NULL, "soon").retry_after_s, -1);
	assert_int_equal(apns(503, NULL, "12x").retry_after_s, -1);
	assert_int_equal(apns(503, NULL, "-5").retry_after_s, -1);
	assert_int_equal(fcm(503, NULL, "99999999999999999999999").retry_after_s, -1);
	/* Read with any status: whether it matters is the outcome's business. */
	assert_int_equal(fcm(400, NULL, "7").retry_after_s, 7);
}

/*
 * Longer than an hour is an hour. 9414439059158786955 (found by the fuzzer)
 * fits a uint64_t but not an int64_t, and came out negative; larger ones
 * overflowed the delay in milliseconds.
 */
static void test_retry_after_cap(void **state)
{
	(void)state;

	assert_int_equal(apns(503, NULL, "3600").retry_after_s, 3600);
	assert_int_equal(apns(503, NULL, "3601").retry_after_s, PUSH_RESPONSE_MAX_RETRY_AFTER);
	assert_int_equal(apns(503, NULL, "9414439059158786955").retry_after_s,
			 PUSH_RESPONSE_MAX_RETRY_AFTER);
	assert_int_equal(fcm(429, NULL, "18446744073709551615").retry_after_s,
			 PUSH_RESPONSE_MAX_RETRY_AFTER);
	assert_int_equal(fcm(503, NULL, "Fri, 31 Dec 9999 23:59:59 GMT").retry_after_s,
			 PUSH_RESPONSE_MAX_RETRY_AFTER);
}

/* Bodies no provider sends: the reason stays "", the status decides. */
static void test_apns_garbage(void **state)
{
	static const char nul_inside[] = "{\"reason\":\"BadDeviceToken\"}\0{\"reason\":\"x\"}";
	static const char nul_escaped[] = "{\"reason\":\"BadDevice\\u0000Token\"}";
	static const char *const bodies[] = {
		"BadDeviceToken",     "<html>400 Bad Request</html>",	   "[\"BadDeviceToken\"]",
		"\"BadDeviceToken\"", "{\"reason\":[\"BadDeviceToken\"]}", "{\"reason\":42}",
		"{\"reason\":null}",  "{\"reason\":\"BadDeviceToken\"",	   nul_escaped,
	};
	struct push_apns_response r;
	char *deep;
	size_t depth = 100000;
	(void)state;

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		r = apns(400, bodies[i], "");
		assert_int_equal(r.outcome, PUSH_APNS_REJECTED);
		assert_string_equal(r.reason, "");
	}
	/* A NUL byte and more after the object: not one JSON text. */
	push_apns_response_parse(400, u8(nul_inside), sizeof(nul_inside) - 1, "", NOW, &r);
	assert_int_equal(r.outcome, PUSH_APNS_REJECTED);
	assert_string_equal(r.reason, "");
	/* Nested far deeper than any parser should follow. */
	deep = malloc(2 * depth + 1);
	assert_non_null(deep);
	memset(deep, '[', depth);
	memset(deep + depth, ']', depth);
	deep[2 * depth] = '\0';
	r = apns(410, deep, "");
	assert_int_equal(r.outcome, PUSH_APNS_TOKEN_INVALID);
	assert_string_equal(r.reason, "");
	free(deep);
}

/* A reason longer than the field is cut to it, NUL included. */
static void test_apns_reason_truncated(void **state)
{
	size_t n = 100000;
	char *body = malloc(n + 32);
	struct push_apns_response r;
	(void)state;

	assert_non_null(body);
	memcpy(body, "{\"reason\":\"", 11);
	memset(body + 11, 'R', n);
	memcpy(body + 11 + n, "\"}", 3);
	r = apns(400, body, "");
	assert_int_equal(strlen(r.reason), sizeof(r.reason) - 1);
	assert_int_equal(strspn(r.reason, "R"), sizeof(r.reason) - 1);
	assert_int_equal(r.outcome, PUSH_APNS_REJECTED);
	/* A known reason with more after it is another reason. */
	r = apns(400, "{\"reason\":\"BadDeviceTokenX\"}", "");
	assert_int_equal(r.outcome, PUSH_APNS_REJECTED);
	free(body);
}

/* ---- FCM ---- */

static void expect_fcm(long status, const char *body, enum push_fcm_outcome want, const char *code,
		       int has_fcm)
{
	struct push_fcm_response r = fcm(status, body, "");

	if (r.outcome != want)
		fail_msg("%ld %s: %s, not %s", status, body ? body : "(none)",
			 push_fcm_outcome_name(r.outcome), push_fcm_outcome_name(want));
	assert_string_equal(r.error_code, code);
	assert_int_equal(r.has_fcm_error, has_fcm);
	assert_int_equal(r.retry_after_s, -1);
}

static void test_fcm_documented(void **state)
{
	(void)state;

	expect_fcm(200, "{\"name\":\"projects/p/messages/0:1\"}", PUSH_FCM_OK, "", 0);
	expect_fcm(404, google(404, "NOT_FOUND", "UNREGISTERED", NULL), PUSH_FCM_TOKEN_INVALID,
		   "UNREGISTERED", 1);
	expect_fcm(403, google(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", NULL),
		   PUSH_FCM_TOKEN_INVALID, "SENDER_ID_MISMATCH", 1);
	expect_fcm(429, google(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", NULL), PUSH_FCM_RETRY,
		   "QUOTA_EXCEEDED", 1);
	expect_fcm(503, google(503, "UNAVAILABLE", "UNAVAILABLE", NULL), PUSH_FCM_RETRY,
		   "UNAVAILABLE", 1);
	expect_fcm(500, google(500, "INTERNAL", "INTERNAL", NULL), PUSH_FCM_RETRY, "INTERNAL", 1);
	expect_fcm(502, "<html>Bad Gateway</html>", PUSH_FCM_RETRY, "", 0);
	/* 401 with an FcmError: the APNs or web-push key in Firebase. */
	expect_fcm(401, google(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", NULL),
		   PUSH_FCM_CONFIG, "THIRD_PARTY_AUTH_ERROR", 1);
	/* 401 without: our access token, which the sender refreshes. */
	expect_fcm(401, google(401, "UNAUTHENTICATED", NULL, NULL), PUSH_FCM_RETRY, "", 0);
	expect_fcm(401, NULL, PUSH_FCM_RETRY, "", 0);
	/* 403 without: IAM, scope, project. */
	expect_fcm(403, google(403, "PERMISSION_DENIED", NULL, NULL), PUSH_FCM_CONFIG, "", 0);
	/* Project quota: RESOURCE_EXHAUSTED with an ErrorInfo and no FcmError. */
	expect_fcm(429,
		   "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{"
		   "\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":"
		   "\"RATE_LIMIT_EXCEEDED\"}]}}",
		   PUSH_FCM_RETRY, "", 0);
	expect_fcm(404, google(404, "NOT_FOUND", NULL, NULL), PUSH_FCM_REJECTED, "", 0);
	expect_fcm(413, google(413, "INVALID_ARGUMENT", "INVALID_ARGUMENT", NULL),
		   PUSH_FCM_REJECTED, "INVALID_ARGUMENT", 1);
	/* A 200 is success whatever its body says. */
	expect_fcm(200, google(404, "NOT_FOUND", "UNREGISTERED", NULL), PUSH_FCM_OK, "", 0);
}

/* INVALID_ARGUMENT drops the token only if no other field is to blame. */
static void test_fcm_invalid_argument(void **state)
{
	struct push_fcm_response r;
	(void)state;

	expect_fcm(400, google(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", NULL),
		   PUSH_FCM_TOKEN_INVALID, "INVALID_ARGUMENT", 1);
	r = fcm(400, google(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token"), "");
	assert_int_equal(r.outcome, PUSH_FCM_TOKEN_INVALID);
	assert_int_equal(r.other_field, 0);
	r = fcm(400, google(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl"),
		"");
	assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
	assert_int_equal(r.other_field, 1);
	assert_string_equal(r.error_code, "INVALID_ARGUMENT");
	/* The BadRequest first, the FcmError after: the same. */
	r = fcm(400,
		"{\"error\":{\"details\":[{\"@type\":\"" BAD_REQUEST "\",\"fieldViolations\":[{"
		"\"field\":\"message.data\"}]},{\"@type\":\"" FCM_ERROR "\",\"errorCode\":"
		"\"INVALID_ARGUMENT\"}]}}",
		"");
	assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
	/* A violation without a field name could be anything. */
	r = fcm(400,
		"{\"error\":{\"details\":[{\"@type\":\"" FCM_ERROR "\",\"errorCode\":"
		"\"INVALID_ARGUMENT\"},{\"@type\":\"" BAD_REQUEST "\",\"fieldViolations\":[{}]}]}}",
		"");
	assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
}

static void test_fcm_retry_after(void **state)
{
	struct push_fcm_response r;
	(void)state;

	r = fcm(429, google(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", NULL), "30");
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_int_equal(r.retry_after_s, 30);
	r = fcm(503, google(503, "UNAVAILABLE", "UNAVAILABLE", NULL),
		"Tue, 14 Nov 2023 22:15:20 GMT");
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_int_equal(r.retry_after_s, 120);
}

/* Bodies that are not Google's error JSON: no code, the status decides. */
static void test_fcm_garbage(void **state)
{
	static const char nul_inside[] = "{\"error\":{}}\0garbage";
	static const char *const bodies[] = {
		"not json",
		"[{\"error\":{\"details\":[]}}]",
		"{\"error\":\"UNREGISTERED\"}",
		"{\"error\":{\"details\":{\"@type\":\"" FCM_ERROR
		"\",\"errorCode\":\"UNREGISTERED\"}}}",
		"{\"error\":{\"details\":[42,null,\"x\",[],{\"@type\":7}]}}",
		"{\"error\":{\"details\":[{\"@type\":\"" FCM_ERROR "\",\"errorCode\":5}]}}",
		"{\"error\":{\"details\":[{\"@type\":\"" FCM_ERROR
		"\",\"errorCode\":\"UNREG\\u0000\"}]}}",
	};
	struct push_fcm_response r;
	char *deep;
	size_t depth = 100000;
	(void)state;

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		r = fcm(404, bodies[i], "");
		assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
		assert_string_equal(r.error_code, "");
	}
	/* An FcmError whose errorCode is not a string: has one, but no code. */
	r = fcm(401, bodies[5], "");
	assert_int_equal(r.has_fcm_error, 1);
	assert_int_equal(r.outcome, PUSH_FCM_CONFIG);
	push_fcm_response_parse(404, u8(nul_inside), sizeof(nul_inside) - 1, "", NOW, &r);
	assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
	deep = malloc(6 * depth + 1);
	assert_non_null(deep);
	for (size_t i = 0; i < depth; i++)
		memcpy(deep + 5 * i, "{\"a\":", 5);
	memset(deep + 5 * depth, '}', depth);
	deep[6 * depth] = '\0';
	r = fcm(503, deep, "");
	assert_int_equal(r.outcome, PUSH_FCM_RETRY);
	assert_string_equal(r.error_code, "");
	free(deep);
}

static void test_fcm_code_truncated(void **state)
{
	char body[512], code[300];
	struct push_fcm_response r;
	(void)state;

	memset(code, 'C', sizeof(code) - 1);
	code[sizeof(code) - 1] = '\0';
	snprintf(body, sizeof(body),
		 "{\"error\":{\"details\":[{\"@type\":\"%s\",\"errorCode\":\"%s\"}]}}", FCM_ERROR,
		 code);
	r = fcm(404, body, "");
	assert_int_equal(strlen(r.error_code), sizeof(r.error_code) - 1);
	assert_int_equal(strspn(r.error_code, "C"), sizeof(r.error_code) - 1);
	assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
	/* UNREGISTERED with more after it is not UNREGISTERED. */
	r = fcm(404, google(404, "NOT_FOUND", "UNREGISTEREDX", NULL), "");
	assert_int_equal(r.outcome, PUSH_FCM_REJECTED);
}

/* ---- the token endpoint ---- */

static struct push_token_response token(long status, const char *body)
{
	struct push_token_response t;

	assert_int_equal(push_token_response_parse(status, u8(body), body ? strlen(body) : 0, &t),
			 FERRY_OK);
	return t;
}

static void test_token_good(void **state)
{
	struct push_token_response t;
	(void)state;

	t = token(200, "{\"access_token\":\"ya29.c.abc\",\"expires_in\":3599,\"token_type\":"
		       "\"Bearer\"}");
	assert_int_equal(t.outcome, PUSH_FCM_OK);
	assert_string_equal(t.access_token, "ya29.c.abc");
	assert_int_equal(t.expires_in, 3599);
	assert_string_equal(t.error, "");
	push_token_response_release(&t);
	assert_null(t.access_token);
	push_token_response_release(&t);
}

static void test_token_refused(void **state)
{
	struct push_token_response t;
	(void)state;

	/* 200 without a token is no answer we can use: configuration. */
	t = token(200, "{\"expires_in\":3599,\"token_type\":\"Bearer\"}");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	assert_null(t.access_token);
	t = token(200, "{\"access_token\":\"\",\"expires_in\":3599}");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	assert_null(t.access_token);
	t = token(200, "{\"access_token\":42}");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	t = token(200, "[{\"access_token\":\"ya29\"}]");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	t = token(200, NULL);
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	/* A token with another status is not taken. */
	t = token(201, "{\"access_token\":\"ya29\"}");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	assert_null(t.access_token);
	t = token(400, "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT "
		       "Signature.\"}");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	assert_string_equal(t.error, "invalid_grant");
	t = token(401, "{\"error\":\"invalid_client\"}");
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
	assert_string_equal(t.error, "invalid_client");
	t = token(400, "{\"error\":{\"code\":400}}");
	assert_string_equal(t.error, "");
	/* The endpoint's own trouble: try again later. */
	t = token(503, "Service Unavailable");
	assert_int_equal(t.outcome, PUSH_FCM_RETRY);
	assert_string_equal(t.error, "");
	t = token(429, "{\"error\":\"rate_limit_exceeded\"}");
	assert_int_equal(t.outcome, PUSH_FCM_RETRY);
	assert_string_equal(t.error, "rate_limit_exceeded");
}

static void test_token_expires_in(void **state)
{
	static const struct {
		const char *v;
		int64_t want;
	} cases[] = {
		{ "\"3599\"", 0 },
		{ "3599.5", 0 },
		{ "null", 0 },
		{ "-5", 0 },
		{ "0", 0 },
		{ "60", 60 },
		/* now + expires_in must not overflow: at most a day. */
		{ "86401", PUSH_RESPONSE_MAX_EXPIRES_IN },
		{ "9223372036854775807", PUSH_RESPONSE_MAX_EXPIRES_IN },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[128];
		struct push_token_response t;

		snprintf(body, sizeof(body), "{\"access_token\":\"ya29\",\"expires_in\":%s}",
			 cases[i].v);
		t = token(200, body);
		assert_int_equal(t.outcome, PUSH_FCM_OK);
		assert_string_equal(t.access_token, "ya29");
		if (t.expires_in != cases[i].want)
			fail_msg("expires_in %s: %lld", cases[i].v, (long long)t.expires_in);
		push_token_response_release(&t);
	}
	/* No expires_in at all: a token used once, then asked for again. */
	{
		struct push_token_response t = token(200, "{\"access_token\":\"ya29\"}");

		assert_int_equal(t.outcome, PUSH_FCM_OK);
		assert_int_equal(t.expires_in, 0);
		push_token_response_release(&t);
	}
}

static void test_token_error_truncated(void **state)
{
	char body[400], err[300];
	struct push_token_response t;
	(void)state;

	memset(err, 'e', sizeof(err) - 1);
	err[sizeof(err) - 1] = '\0';
	snprintf(body, sizeof(body), "{\"error\":\"%s\"}", err);
	t = token(400, body);
	assert_int_equal(strlen(t.error), sizeof(t.error) - 1);
	assert_int_equal(t.outcome, PUSH_FCM_CONFIG);
}

/* ---- header lines ---- */

static int header(const char *line, const char *name, char *dst, size_t cap)
{
	return push_http_header_value(line, strlen(line), name, dst, cap);
}

static void test_header_value(void **state)
{
	char v[64];
	(void)state;

	assert_int_equal(header("retry-after: 120\r\n", "retry-after", v, sizeof(v)), 1);
	assert_string_equal(v, "120");
	assert_int_equal(header("Retry-After:\t 120 \t\r\n", "retry-after", v, sizeof(v)), 1);
	assert_string_equal(v, "120");
	assert_int_equal(header("RETRY-AFTER: Wed, 21 Oct 2015 07:28:00 GMT\r\n", "retry-after", v,
				sizeof(v)),
			 1);
	assert_string_equal(v, "Wed, 21 Oct 2015 07:28:00 GMT");
	assert_int_equal(header("apns-id: eabeae54-14a8-11e5-b60b-1697f925ec7b\r\n", "apns-id", v,
				sizeof(v)),
			 1);
	assert_string_equal(v, "eabeae54-14a8-11e5-b60b-1697f925ec7b");
	assert_int_equal(header("retry-after:\r\n", "retry-after", v, sizeof(v)), 1);
	assert_string_equal(v, "");
	/* Other headers leave @dst as it was. */
	snprintf(v, sizeof(v), "kept");
	assert_int_equal(header("apns-id: x\r\n", "retry-after", v, sizeof(v)), 0);
	assert_int_equal(header("retry-after-ms: 5\r\n", "retry-after", v, sizeof(v)), 0);
	assert_int_equal(header("retry-afte: 5\r\n", "retry-after", v, sizeof(v)), 0);
	assert_int_equal(header("retry-after", "retry-after", v, sizeof(v)), 0);
	assert_int_equal(header("HTTP/2 503 \r\n", "retry-after", v, sizeof(v)), 0);
	assert_int_equal(header("", "retry-after", v, sizeof(v)), 0);
	assert_string_equal(v, "kept");
}

/* Values longer than the field are cut, never written past it. */
static void test_header_truncated(void **state)
{
	char line[300], small[9];
	(void)state;

	snprintf(line, sizeof(line), "apns-id: %0200d\r\n", 7);
	memset(small, 'x', sizeof(small));
	assert_int_equal(header(line, "apns-id", small, sizeof(small) - 1), 1);
	assert_int_equal(strlen(small), 7);
	assert_string_equal(small, "0000000");
	assert_int_equal(small[sizeof(small) - 1], 'x');
	assert_int_equal(header(line, "apns-id", small, 1), 1);
	assert_string_equal(small, "");
	assert_int_equal(header(line, "apns-id", NULL, 0), 1);
	/* A NUL inside a value ends it as a C string, and no more. */
	assert_int_equal(
		push_http_header_value("apns-id: ab\0cd\r\n", 16, "apns-id", small, sizeof(small)),
		1);
	assert_string_equal(small, "ab");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apns_reasons),
		cmocka_unit_test(test_apns_ok),
		cmocka_unit_test(test_apns_timestamp),
		cmocka_unit_test(test_apns_timestamp_range),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_retry_after_cap),
		cmocka_unit_test(test_apns_garbage),
		cmocka_unit_test(test_apns_reason_truncated),
		cmocka_unit_test(test_fcm_documented),
		cmocka_unit_test(test_fcm_invalid_argument),
		cmocka_unit_test(test_fcm_retry_after),
		cmocka_unit_test(test_fcm_garbage),
		cmocka_unit_test(test_fcm_code_truncated),
		cmocka_unit_test(test_token_good),
		cmocka_unit_test(test_token_refused),
		cmocka_unit_test(test_token_expires_in),
		cmocka_unit_test(test_token_error_truncated),
		cmocka_unit_test(test_header_value),
		cmocka_unit_test(test_header_truncated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
