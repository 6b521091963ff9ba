/*
 * apns.h - the APNs sender: one wake-up push = one HTTP/2 request to Apple's
 * provider API (token-based authentication, or a client certificate),
 * answered by one classified outcome.
 *
 * A struct push_apns lives on the push thread and uses that thread's
 * struct push_http (borrowed; both run on its loop). It has no thread and no
 * timer of its own: it signs the provider token (a push_jwt_cache of its
 * own, re-minted after 50 minutes, never sooner than 20 except when APNs
 * says ExpiredProviderToken), builds the request, and turns the answer into
 * a struct push_apns_result for the caller, who decides about retries and
 * token removal.
 *
 * What it does by itself, before reporting:
 *   - the first request goes alone: with token auth APNs allows one stream
 *     until it has seen a valid provider token, so later pushes wait in a
 *     queue until that first one is answered (and again after a transport
 *     error, since the next connection starts the same way);
 *   - 403 ExpiredProviderToken: the token is re-minted (forced) and the push
 *     resent once; the same answer to the resend is reported RETRY (the
 *     token cache re-mints at most once a minute, see push/jwt.h);
 *   - a transport error (push_http rc not FERRY_OK, e.g. streams lost to a
 *     GOAWAY): the push is resent once, on whatever connection libcurl has
 *     or opens.
 *
 * Payloads never carry envelope contents: background mode sends
 * {"aps":{"content-available":1}} (push type background, priority 5); alert
 * mode {"aps":{"alert":TEXT,"mutable-content":1}} with the operator's text
 * (push type alert, priority 10), so an app extension fetches and decrypts.
 * A direct push (POST /v1/push) may bring its own payload, push type and
 * priority instead; the payload is checked, then sent as is.
 *
 * Logs name a device token by its first PUSH_APNS_LOG_PREFIX characters
 * only, and never show a provider token.
 *
 * Threading: none of this is thread-safe; everything runs on the loop's
 * thread, callbacks included.
 */
#ifndef FERRY_PUSH_APNS_H
#define FERRY_PUSH_APNS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/err.h"
#include "push/http.h"

/* The provider token's ages (seconds): kept at least, re-minted after. */
#define PUSH_APNS_JWT_MIN_AGE 1200
#define PUSH_APNS_JWT_MAX_AGE 3000
/* Largest payload APNs takes for background and alert pushes. */
#define PUSH_APNS_MAX_PAYLOAD 4096
/* Largest apns-collapse-id, bytes. */
#define PUSH_APNS_MAX_COLLAPSE_ID 64
/* Caps of our own on what goes into the path and the headers. */
#define PUSH_APNS_MAX_TOKEN 200
#define PUSH_APNS_MAX_TOPIC 200
/* Characters of a device token that logs show. */
#define PUSH_APNS_LOG_PREFIX 8
/* Defaults of the back-off suggested with PUSH_APNS_RETRY (milliseconds). */
#define PUSH_APNS_BACKOFF_BASE_MS 1000
#define PUSH_APNS_BACKOFF_MAX_MS (15u * 60 * 1000)

struct push_apns;

struct push_apns_opts {
	const char *endpoint;	   /* "https://api.push.apple.com" (or sandbox, or a test's) */
	EVP_PKEY *key;		   /* the team's .p8 key, EC P-256; borrowed, must outlive */
	const char *key_id;	   /* 10 characters, the JWT's kid */
	const char *team_id;	   /* 10 characters, the JWT's iss */
	const char *default_topic; /* the bundle id, for pushes without a topic */
	/* Certificate-based authentication instead: a PEM client certificate
	 * (and its key, NULL: in the same file). With cert_file set, key,
	 * key_id and team_id are not used and no provider token is sent. */
	const char *cert_file;
	const char *cert_key;
	uint64_t backoff_base_ms; /* 0: PUSH_APNS_BACKOFF_BASE_MS */
	uint64_t backoff_max_ms;  /* 0: PUSH_APNS_BACKOFF_MAX_MS */
	/* UNIX seconds for the provider token's iat; NULL: time(). Tests step it. */
	int64_t (*clock)(void *clock_arg);
	void *clock_arg;
};

enum push_apns_mode {
	PUSH_APNS_BACKGROUND = 0, /* content-available, priority 5 */
	PUSH_APNS_ALERT,	  /* the operator's text, mutable-content, priority 10 */
};

/* One push; every pointer is borrowed for the push_apns_send() call only. */
struct push_apns_push {
	const char *token; /* device token, [A-Za-z0-9-], at most PUSH_APNS_MAX_TOKEN */
	const char *topic; /* NULL: the default topic */
	enum push_apns_mode mode;
	const char *alert_text;	 /* alert mode: the text shown (required) */
	int64_t expiration;	 /* apns-expiration, UNIX seconds; 0: "try once"; < 0: none */
	const char *collapse_id; /* NULL: none; at most PUSH_APNS_MAX_COLLAPSE_ID bytes */
	unsigned attempt;	 /* 0 for a first try, 1 for the first retry...: the back-off */
	/* Direct pushes (POST /v1/push) set these; wake-ups leave them 0. */
	const char *payload;   /* the JSON body as is: an object with an "aps" object, at most
				  PUSH_APNS_MAX_PAYLOAD bytes; NULL: built from the mode */
	const char *push_type; /* apns-push-type "alert" or "background"; NULL: from the mode */
	int priority;	       /* apns-priority 1, 5 or 10; 0: from the mode (5 background,
				  10 alert); background takes 5 only */
};

enum push_apns_outcome {
	PUSH_APNS_OK = 0,
	PUSH_APNS_TOKEN_INVALID, /* remove the token (410: only if registered before timestamp_ms)
				  */
	PUSH_APNS_RETRY,	 /* try again after retry_delay_ms */
	PUSH_APNS_CONFIG,	 /* key, team, topic or key id wrong: don't retry, alert */
	PUSH_APNS_REJECTED,	 /* the request was wrong: don't retry */
};

struct push_apns_result {
	enum push_apns_outcome outcome;
	enum ferry_err rc;	 /* FERRY_OK if APNs answered, else the transport error */
	long status;		 /* HTTP status, 0 if none */
	char reason[64];	 /* APNs' reason string, "" if none */
	int64_t timestamp_ms;	 /* 410: when the token stopped being valid; else 0 */
	uint64_t retry_delay_ms; /* PUSH_APNS_RETRY: back-off with jitter, or Retry-After (at
				    most an hour) if longer */
	char apns_id[64];	 /* the apns-id answered, "" if none */
	uint64_t latency_us;	 /* push_apns_send() to this report */
};

/*
 * Called once per accepted push, from the loop, never inside
 * push_apns_send(); @res is valid for the call only. It may send new pushes
 * (retries included) but must not free the sender.
 */
typedef void (*push_apns_done_fn)(void *arg, const struct push_apns_result *res);

struct push_apns_stats {
	uint64_t sent;	   /* pushes accepted */
	uint64_t requests; /* HTTP requests submitted, resends included */
	uint64_t ok, token_invalid, retry, config, rejected; /* outcomes reported */
	uint64_t resent_transport;		 /* internal resends after a transport error */
	uint64_t resent_expired;		 /* internal resends after ExpiredProviderToken */
	uint64_t latency_sum_us, latency_max_us; /* over the outcomes reported */
};

/*
 * A sender on @http (borrowed; it must outlive the sender's requests, see
 * push_apns_free). @o is copied, strings included; the key is borrowed.
 * Returns NULL with a message in @err when an option is missing or wrong
 * (no endpoint, key not EC P-256, no key id or team id, no default topic).
 */
struct push_apns *push_apns_new(struct push_http *http, const struct push_apns_opts *o, char *err,
				size_t errlen);

/*
 * Send @p; @done(@arg, result) runs exactly once, later, from the loop.
 * FERRY_OK: accepted. Otherwise @done never runs: FERRY_EINVAL (a bad or
 * missing token, topic, alert text, collapse id), FERRY_ETOOBIG (payload over
 * PUSH_APNS_MAX_PAYLOAD), FERRY_ECONFIG (the provider token cannot be
 * signed), FERRY_EUNAVAIL (the HTTP client is being freed), FERRY_ENOMEM.
 *
 * A direct push's fields are checked before anything is sent:
 *   - payload (sent byte for byte instead of the mode's, which makes
 *     alert_text unused): FERRY_ETOOBIG over PUSH_APNS_MAX_PAYLOAD bytes;
 *     FERRY_EINVAL if empty, not JSON (duplicate keys included), not an
 *     object, or without an "aps" object;
 *   - push_type: FERRY_EINVAL unless NULL, "alert" or "background";
 *   - priority: FERRY_EINVAL unless 0, 1, 5 or 10, or if it is 1 or 10
 *     while the push type (push_type, else the mode's) is background.
 */
enum ferry_err push_apns_send(struct push_apns *a, const struct push_apns_push *p,
			      push_apns_done_fn done, void *arg) FERRY_WUR;

/*
 * Free @a. Every push not yet reported is reported now, PUSH_APNS_RETRY with
 * rc FERRY_EUNAVAIL, before this returns. Requests still in flight at the
 * HTTP client are detached: their memory goes when the client ends them
 * (an answer, push_http_cancel_all, push_http_free). push_apns_free(NULL)
 * does nothing. Not from a done callback.
 */
void push_apns_free(struct push_apns *a);

/* Copy the counters into @out. */
void push_apns_stats(const struct push_apns *a, struct push_apns_stats *out);

/* "ok", "token-invalid", "retry", "config", "rejected". */
const char *push_apns_outcome_name(enum push_apns_outcome o);

#endif
