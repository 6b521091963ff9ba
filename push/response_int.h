/*
 * response_int.h - what the push providers answer, read by pure functions
 * (push/ files and the tests only).
 *
 * Everything APNs, FCM and Google's token endpoint send back passes through
 * here: the JSON bodies, the status codes, the Retry-After and apns-id
 * header lines. The functions take bytes (and the status, the Retry-After
 * text and the time) and fill a result struct: no sockets, no loop, no
 * sender state, no globals. So they can be unit-tested case by case and
 * fuzzed (tests/fuzz/fuzz_push_response.c), and the senders (apns.c,
 * fcm.c, http.c) only act on what they say.
 *
 * What stays with the senders: the back-off (it needs the attempt count
 * and the sender's base and maximum), resending, the provider and access
 * tokens. A classifier gives the outcome and the Retry-After in seconds
 * (-1 if none); the sender turns that into a delay.
 *
 * Untrusted input never gets further than a capped copy: strings are
 * truncated to their buffers, bodies that are not the expected JSON leave
 * the defaults (no reason, no error code), and numbers are kept within
 * ranges that the senders' arithmetic and the database can take (the
 * PUSH_RESPONSE_MAX_* below).
 */
#ifndef FERRY_PUSH_RESPONSE_INT_H
#define FERRY_PUSH_RESPONSE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "push/apns.h"
#include "push/fcm.h"

/* Bytes kept of APNs' reason, of FCM's errorCode and of the OAuth error,
 * NUL included: the sizes of the public result fields. */
#define PUSH_RESPONSE_MAX_REASON 64
#define PUSH_RESPONSE_MAX_CODE 48
/*
 * A longer Retry-After (seconds) is taken as this one. A server may ask
 * for a long pause, but a wake that waits holds its place in the wake
 * table, and a number of any size must still fit the senders' delays in
 * milliseconds (uint64_t) and retry_after_s (int64_t).
 */
#define PUSH_RESPONSE_MAX_RETRY_AFTER 3600
/*
 * 9999-12-31T23:59:59.999Z. A later 410 timestamp (ms) is taken as none,
 * and the push's own time is used: it is no date Apple means, and past
 * the year 294276 PostgreSQL refuses it, so the token would never go.
 */
#define PUSH_RESPONSE_MAX_TIMESTAMP_MS 253402300799999LL

/* A longer expires_in (seconds) is taken as this one: an access token is
 * asked for again at least once a day, and now + expires_in cannot
 * overflow. */
#define PUSH_RESPONSE_MAX_EXPIRES_IN 86400

/* An APNs answer. */
struct push_apns_response {
	enum push_apns_outcome outcome;
	char reason[PUSH_RESPONSE_MAX_REASON]; /* "reason", "" if none */
	int64_t timestamp_ms;  /* 410's "timestamp", in 1..PUSH_RESPONSE_MAX_TIMESTAMP_MS;
				  else 0 */
	int64_t retry_after_s; /* the Retry-After, at most PUSH_RESPONSE_MAX_RETRY_AFTER;
				  -1 if none or unreadable */
};

/*
 * Read the answer to an APNs push: HTTP @status, the body (@body, @len
 * bytes; may be NULL), @retry_after the Retry-After header's value ("" or
 * NULL if none), @now in UNIX seconds (for a date in Retry-After). Always
 * fills @out:
 *   200                                                  OK
 *   410; 400 BadDeviceToken, DeviceTokenNotForTopic      TOKEN_INVALID
 *   429, 5xx, 403 ExpiredProviderToken                   RETRY
 *   other 403; 400 BadTopic, TopicDisallowed, MissingTopic  CONFIG
 *   anything else                                        REJECTED
 * The body is read whatever the status; one that is not a JSON object
 * leaves reason "" (which then classifies by status alone).
 */
void push_apns_response_parse(long status, const uint8_t *body, size_t len, const char *retry_after,
			      int64_t now, struct push_apns_response *out);

/* An FCM send's answer. */
struct push_fcm_response {
	enum push_fcm_outcome outcome;
	char error_code[PUSH_RESPONSE_MAX_CODE]; /* the FcmError errorCode, "" if none */
	int has_fcm_error;			 /* details[] had an FcmError */
	int other_field;       /* a BadRequest names a field other than message.token */
	int64_t retry_after_s; /* as in struct push_apns_response */
};

/*
 * Read the answer to an FCM send (arguments as push_apns_response_parse).
 * Google's error JSON is read only when @status is not 200; the table in
 * push/fcm.h says what each answer becomes. A 401 without an FcmError is
 * RETRY here: whether the access token is refreshed first is the sender's
 * business (has_fcm_error says).
 */
void push_fcm_response_parse(long status, const uint8_t *body, size_t len, const char *retry_after,
			     int64_t now, struct push_fcm_response *out);

/* The OAuth 2.0 token endpoint's answer. */
struct push_token_response {
	enum push_fcm_outcome outcome; /* OK with a token; RETRY (429, 5xx) or CONFIG */
	char *access_token;	       /* OK: malloc'ed, NUL-terminated; else NULL */
	int64_t expires_in;	       /* OK: seconds, 0..PUSH_RESPONSE_MAX_EXPIRES_IN; 0 if absent,
					  not an integer or negative */
	char error[PUSH_RESPONSE_MAX_CODE]; /* "error", "" if none */
};

/*
 * Read the token endpoint's answer: OK only for 200 with a non-empty
 * string access_token. Returns FERRY_ENOMEM (with @out's outcome RETRY and
 * no token) if the token cannot be copied, else FERRY_OK. @out must be
 * released with push_token_response_release() either way.
 */
enum ferry_err push_token_response_parse(long status, const uint8_t *body, size_t len,
					 struct push_token_response *out) FERRY_WUR;

/* Cleanse and free the access token; @r may be released twice. */
void push_token_response_release(struct push_token_response *r);

/*
 * If the header line @p (@len bytes, as libcurl hands it: "Name: value\r\n",
 * not NUL-terminated) is header @name (case-insensitive), copy its value
 * without surrounding blanks and line end into @dst, truncated to
 * @dstlen - 1 bytes and NUL-terminated, and return 1; else 0 and @dst is
 * untouched. @dstlen 0 copies nothing.
 */
int push_http_header_value(const char *p, size_t len, const char *name, char *dst, size_t dstlen);

#endif
