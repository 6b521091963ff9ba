/*
 * fcm.h - the FCM sender: one wake-up push = one FCM HTTP v1 request
 * (projects.messages.send), answered by one classified outcome.
 *
 * A struct push_fcm lives on the push thread and uses that thread's struct
 * push_http (borrowed); it has no thread and no timer of its own. It keeps
 * the OAuth 2.0 access token of one service account: an RS256 assertion
 * (scope firebase.messaging, aud = token_uri, one hour) posted to the
 * account's token_uri, the answer cached until PUSH_FCM_TOKEN_MARGIN seconds
 * before its expires_in. One exchange is in flight at a time; pushes that
 * need a token wait for it. A send answered 401 without an FcmError detail
 * (the access token itself was refused) refreshes the token and is resent
 * once; a transport error is resent once too.
 *
 * A wake-up is a data message {"ferry":"wake"} with android priority high,
 * the caller's collapse key and ttl: never envelope contents. A direct push
 * (POST /v1/push) may add a notification (title, body), its own data and
 * priority normal.
 *
 * Errors are read from Google's JSON (error.details[], the FcmError
 * errorCode and BadRequest fieldViolations) keyed on HTTP status and
 * errorCode, never on message text:
 *   200                                          OK
 *   404 UNREGISTERED; 403 SENDER_ID_MISMATCH;
 *   400 INVALID_ARGUMENT naming no field but the token  TOKEN_INVALID
 *   429 (any)                                    RETRY, at least
 *                                                PUSH_FCM_QUOTA_MIN_DELAY_MS
 *   500, 503, other 5xx, transport errors        RETRY (the back-off, or
 *                                                Retry-After if longer)
 *   401 after the one refresh                    RETRY
 *   401 with an FcmError (THIRD_PARTY_AUTH_ERROR), 403 without FcmError,
 *   token endpoint refusals (invalid_grant...)   CONFIG
 *   other 4xx                                    REJECTED
 * FCM's 429 rule (an initial delay of at least a minute) is applied here:
 * retry_delay_ms is the largest of Retry-After, the back-off, and
 * PUSH_FCM_QUOTA_MIN_DELAY_MS; the caller need not add anything.
 *
 * Logs name a device token by its first PUSH_FCM_LOG_PREFIX characters
 * only, and never show the assertion or the access token.
 *
 * Threading: none; everything runs on the loop's thread, callbacks included.
 */
#ifndef FERRY_PUSH_FCM_H
#define FERRY_PUSH_FCM_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "push/creds.h"
#include "push/http.h"

#define PUSH_FCM_ENDPOINT "https://fcm.googleapis.com"
#define PUSH_FCM_SCOPE "https://www.googleapis.com/auth/firebase.messaging"
/* The assertion's lifetime, seconds (Google's maximum). */
#define PUSH_FCM_ASSERTION_TTL 3600
/* An access token is replaced this many seconds before it expires. */
#define PUSH_FCM_TOKEN_MARGIN 60
/* Caps on a push: token bytes, collapse key bytes, ttl seconds. */
#define PUSH_FCM_MAX_TOKEN 4096
#define PUSH_FCM_MAX_COLLAPSE_KEY 256
#define PUSH_FCM_MAX_TTL 2419200u
#define PUSH_FCM_LOG_PREFIX 8
/*
 * Google caps a message's payload at 4096 bytes (data and notification;
 * 2048 for topic messages, which ferry does not send). Counted here as the
 * compact JSON of message.notification plus that of message.data: more
 * than Google counts (keys and values), so a push within this cap is
 * within Google's.
 */
#define PUSH_FCM_MAX_PAYLOAD 4096
/* Back-off defaults (milliseconds); 429's floor. */
#define PUSH_FCM_BACKOFF_BASE_MS 1000
#define PUSH_FCM_BACKOFF_MAX_MS (15u * 60 * 1000)
#define PUSH_FCM_QUOTA_MIN_DELAY_MS 60000

struct push_fcm;

struct push_fcm_opts {
	const char *endpoint;		       /* NULL: PUSH_FCM_ENDPOINT */
	const struct push_service_account *sa; /* loaded; borrowed, must outlive the sender */
	uint64_t backoff_base_ms;	       /* 0: PUSH_FCM_BACKOFF_BASE_MS */
	uint64_t backoff_max_ms;	       /* 0: PUSH_FCM_BACKOFF_MAX_MS */
	/* UNIX seconds for the assertion and the token's expiry; NULL: time(). */
	int64_t (*clock)(void *clock_arg);
	void *clock_arg;
};

/* One push; every pointer is borrowed for the push_fcm_send() call only. */
struct push_fcm_push {
	const char *token;	  /* FCM registration token */
	const char *collapse_key; /* NULL: none */
	uint32_t ttl_s;		  /* android.ttl, at most PUSH_FCM_MAX_TTL */
	unsigned attempt;	  /* 0 for a first try...: the back-off */
	/* Direct pushes (POST /v1/push) set these; wake-ups leave them 0. */
	const char *title, *body; /* a notification block when either is set */
	const char *data_json;	  /* "data": a JSON object whose values are all strings;
				     NULL: {"ferry":"wake"}; "{}": no data */
	int normal_priority;	  /* android priority "normal" instead of "high" */
};

enum push_fcm_outcome {
	PUSH_FCM_OK = 0,
	PUSH_FCM_TOKEN_INVALID, /* remove the token */
	PUSH_FCM_RETRY,		/* try again after retry_delay_ms */
	PUSH_FCM_CONFIG,	/* credentials or project wrong: don't retry, alert */
	PUSH_FCM_REJECTED,	/* the request was wrong: don't retry */
};

struct push_fcm_result {
	enum push_fcm_outcome outcome;
	enum ferry_err rc;	 /* FERRY_OK if FCM answered; FERRY_EAUTH if the token
				    endpoint refused; else the transport error */
	long status;		 /* HTTP status of the send (or of the token endpoint) */
	char error_code[48];	 /* FcmError errorCode, or the OAuth error; "" if none */
	int64_t retry_after_s;	 /* the Retry-After answered (at most an hour), -1 if
				    none */
	uint64_t retry_delay_ms; /* PUSH_FCM_RETRY: the suggested delay */
	uint64_t latency_us;	 /* push_fcm_send() to this report */
};

/* As push_apns_done_fn: once per accepted push, from the loop. */
typedef void (*push_fcm_done_fn)(void *arg, const struct push_fcm_result *res);

struct push_fcm_stats {
	uint64_t sent;	   /* pushes accepted */
	uint64_t requests; /* send requests submitted, resends included */
	uint64_t ok, token_invalid, retry, config, rejected;
	uint64_t exchanges;	    /* token exchanges started */
	uint64_t exchange_failures; /* of which failed */
	uint64_t refreshed_401;	    /* resends after a 401 */
	uint64_t resent_transport;  /* resends after a transport error */
	uint64_t latency_sum_us, latency_max_us;
};

/*
 * A sender on @http (borrowed) for @o->sa. @o is copied (the account is
 * borrowed). Returns NULL with a message in @err when the account or an
 * option is missing.
 */
struct push_fcm *push_fcm_new(struct push_http *http, const struct push_fcm_opts *o, char *err,
			      size_t errlen);

/*
 * Send @p; @done(@arg, result) runs exactly once, later, from the loop.
 * FERRY_OK: accepted. Otherwise @done never runs: FERRY_EINVAL (no token,
 * a token or collapse key over its cap or not UTF-8, ttl over the cap),
 * FERRY_ECONFIG (the assertion cannot be signed), FERRY_EUNAVAIL (the
 * HTTP client is being freed), FERRY_ENOMEM.
 *
 * A direct push's fields are checked before anything is sent:
 *   - title, body (each NULL: left out; "" is sent as ""): FERRY_EINVAL if
 *     not UTF-8;
 *   - data_json (becomes message.data): FERRY_EINVAL if not JSON (duplicate
 *     keys included), not an object, a value not a string, or a key FCM
 *     reserves ("from", "gcm", "google...");
 *   - FERRY_ETOOBIG if notification and data exceed PUSH_FCM_MAX_PAYLOAD
 *     (counted as said there).
 */
enum ferry_err push_fcm_send(struct push_fcm *f, const struct push_fcm_push *p,
			     push_fcm_done_fn done, void *arg) FERRY_WUR;

/* As push_apns_free(): what is not reported yet is reported RETRY with rc
 * FERRY_EUNAVAIL now; requests in flight are detached. NULL: nothing. */
void push_fcm_free(struct push_fcm *f);

void push_fcm_stats(const struct push_fcm *f, struct push_fcm_stats *out);

/* "ok", "token-invalid", "retry", "config", "rejected". */
const char *push_fcm_outcome_name(enum push_fcm_outcome o);

#endif
