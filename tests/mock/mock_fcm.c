/*
 * mock_fcm.c - a local stand-in for Google's OAuth 2.0 token endpoint (the
 * service-account JWT-bearer grant) and the FCM HTTP v1 send API, for the
 * push module's tests. Rules and the device tokens that choose a behaviour
 * are listed in tests/mock/README.md; the providers' own are in
 * PUSH-CONTRACT.md section 2.
 *
 * POST /token checks, in order: grant_type, the assertion's form, header
 * (alg RS256), signature, iss, scope, aud, then iat/exp. Access tokens are
 * "ya29.mock-<n>", kept with their expiry and whether their scope grants FCM.
 *
 * POST /v1/projects/<id>/messages:send checks, in order: the access token
 * (401 UNAUTHENTICATED, no FcmError), the project and scope (403
 * PERMISSION_DENIED, no FcmError), the body as FCM validates it (400
 * INVALID_ARGUMENT with google.rpc.BadRequest fieldViolations), then the
 * device token's own behaviour.
 *
 * 429 and 503 answers carry Retry-After (--retry-after, 1 s by default), as
 * Google says they may. An outage (SIGUSR1 to SIGUSR2, see h2srv.h) refuses
 * or resets connections, the token endpoint's included; with --outage
 * unavailable every send that passes the checks is answered 503 UNAVAILABLE
 * while /token keeps answering (Google's OAuth service is another one).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "tests/mock/h2srv.h"
#include "tests/mock/jwt.h"
#include "tests/mock/mock.h"
#include "common/banned.h"

#define GRANT_JWT_BEARER "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define SCOPE_FCM "https://www.googleapis.com/auth/firebase.messaging"
#define SCOPE_CLOUD "https://www.googleapis.com/auth/cloud-platform"
#define MAX_ASSERTION_LIFE_S 3600
#define MAX_CLOCK_SKEW_S 60
#define MAX_DATA_BYTES 4096
#define MAX_TOPIC_DATA_BYTES 2048
#define MAX_TTL_S 2419200
#define FCM_ERROR_TYPE "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#define BAD_REQUEST_TYPE "type.googleapis.com/google.rpc.BadRequest"
#define ERROR_INFO_TYPE "type.googleapis.com/google.rpc.ErrorInfo"
#define TEXT_BAD_SIGNATURE "Invalid JWT Signature."
#define TEXT_TIMEFRAME                                                                     \
	"Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable " \
	"timeframe. Check your iat and exp values in the JWT claim."
#define TEXT_UNAUTHENTICATED                                                                    \
	"Request had invalid authentication credentials. Expected OAuth 2 access token, login " \
	"cookie or other valid authentication credential. See "                                 \
	"https://developers.google.com/identity/sign-in/web/devconsole-project."

struct access_token {
	struct access_token *next;
	char value[40];
	int64_t expires_ms;
	int fcm_scope;
};

struct fcm {
	EVP_PKEY *sa_key;
	const char *client_email, *project_id;
	long token_ttl;
	long retry_after;  /* seconds, on 429 and 503 */
	long goaway_after; /* 0: never */
	int port;
	FILE *log;
	struct mock_counters counters;
	struct access_token *tokens;
	long issued, sent;
};

/* One answer being built, and what the log line says of it. */
struct answer {
	int status;
	json_t *body;		/* owned */
	const char *error;	/* "invalid_grant" or a google.rpc status, for the log */
	const char *error_code; /* FcmError errorCode, for the log */
	int retry_after;	/* send Retry-After (struct fcm retry_after) */
	int www_authenticate;
	json_t *log; /* owned: the log line */
};

/* ---- Google's error format ------------------------------------------------ */

/*
 * {"error":{"code","message","status","details":[...]}}: an FcmError detail if
 * @fcm_code, a BadRequest one if @field ("" for a violation without a field),
 * an ErrorInfo one if @info_reason.
 */
static void google_error(struct answer *an, int code, const char *status, const char *message,
			 const char *fcm_code, const char *field, const char *info_reason)
{
	json_t *details = json_array();
	json_t *err = json_pack("{si,ss,ss}", "code", code, "message", message, "status", status);

	if (fcm_code)
		json_array_append_new(details, json_pack("{ss,ss}", "@type", FCM_ERROR_TYPE,
							 "errorCode", fcm_code));
	if (field) {
		json_t *violation = json_pack("{ss}", "description", message);

		if (*field)
			json_object_set_new(violation, "field", json_string(field));
		json_array_append_new(details, json_pack("{ss,s[o]}", "@type", BAD_REQUEST_TYPE,
							 "fieldViolations", violation));
	}
	if (info_reason)
		json_array_append_new(details,
				      json_pack("{ss,ss,ss}", "@type", ERROR_INFO_TYPE, "reason",
						info_reason, "domain", "googleapis.com"));
	if (json_array_size(details))
		json_object_set_new(err, "details", details);
	else
		json_decref(details);
	json_decref(an->body);
	an->body = json_pack("{so}", "error", err);
	an->status = code;
	an->error = status;
	an->error_code = fcm_code;
}

/* A request-field problem: 400 INVALID_ARGUMENT; @fcm adds the FcmError. */
static void bad_field(struct answer *an, int fcm, const char *field, const char *message)
{
	google_error(an, 400, "INVALID_ARGUMENT", message, fcm ? "INVALID_ARGUMENT" : NULL,
		     field ? field : "", NULL);
}

static void oauth_error(struct answer *an, const char *error, const char *description)
{
	json_decref(an->body);
	an->body = json_pack("{ss,ss}", "error", error, "error_description", description);
	an->status = 400;
	an->error = error;
}

/* ---- POST /token ------------------------------------------------------------ */

static int hex_value(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* The URL-decoded value of @key in a form body, malloc'ed, or NULL. */
static char *form_value(const char *form, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = form; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char *out, *o;

		if (len <= klen || strncmp(p, key, klen) != 0 || p[klen] != '=')
			continue;
		out = o = malloc(len + 1);
		if (!out)
			return NULL;
		for (const char *q = p + klen + 1; q < p + len; q++) {
			if (*q == '+') {
				*o++ = ' ';
			} else if (*q == '%' && q + 2 < p + len + 1 && hex_value(q[1]) >= 0 &&
				   hex_value(q[2]) >= 0) {
				*o++ = (char)(hex_value(q[1]) * 16 + hex_value(q[2]));
				q += 2;
			} else {
				*o++ = *q;
			}
		}
		*o = '\0';
		return out;
	}
	return NULL;
}

/* 1 if the space-separated @scope list contains @want. */
static int scope_has(const char *scope, const char *want)
{
	size_t n = strlen(want);

	for (const char *p = scope; (p = strstr(p, want)); p += n)
		if ((p == scope || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			return 1;
	return 0;
}

static void issue_token(struct fcm *f, struct answer *an, int fcm_scope)
{
	struct access_token *t = calloc(1, sizeof(*t));

	if (!t)
		abort();
	snprintf(t->value, sizeof(t->value), "ya29.mock-%ld", ++f->issued);
	t->expires_ms = mock_now_ms() + f->token_ttl * 1000;
	t->fcm_scope = fcm_scope;
	t->next = f->tokens;
	f->tokens = t;
	an->status = 200;
	an->body = json_pack("{ss,si,ss}", "access_token", t->value, "expires_in",
			     (json_int_t)f->token_ttl, "token_type", "Bearer");
	json_object_set_new(an->log, "issued", json_string(t->value));
}

static void handle_token(struct fcm *f, const struct h2srv_req *req, struct answer *an)
{
	char *grant = form_value((const char *)req->body, "grant_type");
	char *assertion = form_value((const char *)req->body, "assertion");
	char aud_ip[96], aud_host[96];
	const char *alg, *iss, *scope, *aud;
	json_t *iat, *exp;
	struct jwt j;
	int64_t now = mock_now_s();

	memset(&j, 0, sizeof(j));
	json_object_set_new(an->log, "grant_type", mock_json_str(grant));
	if (strcmp(req->method, "POST") != 0 || !grant) {
		oauth_error(an, "invalid_request", "Missing required parameter: grant_type");
		goto out;
	}
	if (strcmp(grant, GRANT_JWT_BEARER) != 0) {
		char text[256];

		snprintf(text, sizeof(text), "Invalid grant_type: %s", grant);
		oauth_error(an, "unsupported_grant_type", text);
		goto out;
	}
	if (!assertion) {
		oauth_error(an, "invalid_request", "Missing required parameter: assertion");
		goto out;
	}
	if (jwt_parse(assertion, &j) != 0) {
		oauth_error(an, "invalid_grant", "Invalid JWT: Token must be a JWS.");
		goto out;
	}
	json_object_set(an->log, "claims", j.claims);
	json_object_set_new(an->log, "kid",
			    mock_json_str(json_string_value(json_object_get(j.header, "kid"))));
	alg = json_string_value(json_object_get(j.header, "alg"));
	iss = json_string_value(json_object_get(j.claims, "iss"));
	scope = json_string_value(json_object_get(j.claims, "scope"));
	aud = json_string_value(json_object_get(j.claims, "aud"));
	iat = json_object_get(j.claims, "iat");
	exp = json_object_get(j.claims, "exp");
	if (!alg || strcmp(alg, "RS256") != 0 || !jwt_verify_rs256(&j, f->sa_key)) {
		oauth_error(an, "invalid_grant", TEXT_BAD_SIGNATURE);
		goto out;
	}
	if (!iss || strcmp(iss, f->client_email) != 0) {
		oauth_error(an, "invalid_grant", "Invalid grant: account not found");
		goto out;
	}
	if (!scope || !*scope) {
		oauth_error(an, "invalid_scope",
			    "Invalid OAuth scope or ID token audience provided.");
		goto out;
	}
	snprintf(aud_ip, sizeof(aud_ip), "https://127.0.0.1:%d/token", f->port);
	snprintf(aud_host, sizeof(aud_host), "https://localhost:%d/token", f->port);
	if (!aud || (strcmp(aud, aud_ip) != 0 && strcmp(aud, aud_host) != 0)) {
		oauth_error(an, "invalid_grant", "Invalid JWT: Failed audience check.");
		goto out;
	}
	if (!json_is_integer(iat) || !json_is_integer(exp) ||
	    json_integer_value(exp) <= json_integer_value(iat) ||
	    json_integer_value(exp) - json_integer_value(iat) > MAX_ASSERTION_LIFE_S ||
	    json_integer_value(iat) > now + MAX_CLOCK_SKEW_S || json_integer_value(exp) < now) {
		oauth_error(an, "invalid_grant", TEXT_TIMEFRAME);
		goto out;
	}
	issue_token(f, an, scope_has(scope, SCOPE_FCM) || scope_has(scope, SCOPE_CLOUD));
out:
	jwt_release(&j);
	free(grant);
	free(assertion);
}

/* ---- POST /v1/projects/<id>/messages:send --------------------------------------- */

static const struct access_token *find_token(const struct fcm *f, const char *value)
{
	for (const struct access_token *t = f->tokens; t; t = t->next)
		if (strcmp(t->value, value) == 0)
			return t;
	return NULL;
}

/* 1 if the field names of @obj are all in the NULL-terminated @known; else
 * sets the 400 (the proto JSON parser's complaint) and returns 0. */
static int known_fields(struct answer *an, json_t *obj, const char *where,
			const char *const known[])
{
	const char *key;
	json_t *v;
	char msg[256];

	json_object_foreach(obj, key, v)
	{
		size_t i;

		for (i = 0; known[i] && strcmp(known[i], key) != 0; i++)
			;
		if (!known[i]) {
			snprintf(msg, sizeof(msg),
				 "Invalid JSON payload received. Unknown name \"%s\" at '%s': "
				 "Cannot find field.",
				 key, where);
			bad_field(an, 0, where, msg);
			return 0;
		}
	}
	return 1;
}

static json_t *get2(json_t *obj, const char *snake, const char *camel)
{
	json_t *v = json_object_get(obj, snake);

	return v ? v : json_object_get(obj, camel);
}

/* A data map: string values, no reserved keys; adds its size to *bytes. */
static int check_data(struct answer *an, json_t *data, const char *where, size_t *bytes)
{
	const char *key;
	json_t *v;
	char field[96], msg[256];
	size_t i = 0;

	if (!json_is_object(data)) {
		snprintf(msg, sizeof(msg), "Invalid value at '%s' (type.googleapis.com/%s)", where,
			 "google.protobuf.Struct");
		bad_field(an, 0, where, msg);
		return 0;
	}
	json_object_foreach(data, key, v)
	{
		if (!json_is_string(v)) {
			snprintf(field, sizeof(field), "%s[%zu].value", where, i);
			snprintf(msg, sizeof(msg), "Invalid value at '%s' (TYPE_STRING)", field);
			bad_field(an, 0, field, msg);
			return 0;
		}
		if (strcmp(key, "from") == 0 || strcmp(key, "gcm") == 0 ||
		    mock_starts_with(key, "google")) {
			snprintf(msg, sizeof(msg), "Invalid data payload key: %s", key);
			bad_field(an, 1, where, msg);
			return 0;
		}
		*bytes += strlen(key) + json_string_length(v);
		i++;
	}
	return 1;
}

/* "3600s", "3.5s": 0 and the whole seconds in *secs, or -1. */
static int parse_duration(const char *s, long *secs)
{
	const char *p = s;
	long v = 0;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > 100000000000L)
			return -1;
		v = v * 10 + (*p - '0');
	}
	if (*p == '.') {
		const char *frac = ++p;

		while (*p >= '0' && *p <= '9')
			p++;
		if (p == frac || p - frac > 9)
			return -1;
	}
	if (strcmp(p, "s") != 0)
		return -1;
	*secs = v;
	return 0;
}

static int check_android(struct answer *an, json_t *android, size_t *bytes)
{
	static const char *const known[] = { "collapse_key",
					     "collapseKey",
					     "priority",
					     "ttl",
					     "restricted_package_name",
					     "restrictedPackageName",
					     "data",
					     "notification",
					     "fcm_options",
					     "fcmOptions",
					     "direct_boot_ok",
					     "directBootOk",
					     NULL };
	json_t *prio, *ttl, *data, *collapse;
	char msg[256];
	long secs;

	if (!json_is_object(android)) {
		bad_field(an, 0, "message.android",
			  "Invalid value at 'message.android' "
			  "(type.googleapis.com/google.firebase.fcm.v1.AndroidConfig)");
		return 0;
	}
	if (!known_fields(an, android, "message.android", known))
		return 0;
	collapse = get2(android, "collapse_key", "collapseKey");
	if (collapse && !json_is_string(collapse)) {
		bad_field(an, 0, "message.android.collapse_key",
			  "Invalid value at 'message.android.collapse_key' (TYPE_STRING)");
		return 0;
	}
	prio = json_object_get(android, "priority");
	if (prio &&
	    (!json_is_string(prio) || (strcasecmp(json_string_value(prio), "high") != 0 &&
				       strcasecmp(json_string_value(prio), "normal") != 0))) {
		snprintf(msg, sizeof(msg),
			 "Invalid value at 'message.android.priority' "
			 "(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
			 "\"%s\"",
			 json_is_string(prio) ? json_string_value(prio) : "");
		bad_field(an, 0, "message.android.priority", msg);
		return 0;
	}
	ttl = json_object_get(android, "ttl");
	if (ttl && (!json_is_string(ttl) || parse_duration(json_string_value(ttl), &secs))) {
		snprintf(msg, sizeof(msg),
			 "Invalid value at 'message.android.ttl' "
			 "(type.googleapis.com/google.protobuf.Duration), \"%s\"",
			 json_is_string(ttl) ? json_string_value(ttl) : "");
		bad_field(an, 0, "message.android.ttl", msg);
		return 0;
	}
	if (ttl && secs > MAX_TTL_S) {
		bad_field(an, 1, "message.android.ttl",
			  "The TTL is longer than the maximum of 2419200s (4 weeks).");
		return 0;
	}
	data = json_object_get(android, "data");
	return !data || check_data(an, data, "message.android.data", bytes);
}

/* The message as FCM validates it; 1 if it passes. *token gets the target
 * token (borrowed from @root) if the message has one. */
static int check_message(struct answer *an, json_t *root, const char **token)
{
	static const char *const top[] = { "message", "validate_only", "validateOnly", NULL };
	static const char *const known[] = { "name",	"data",	 "notification", "android",
					     "webpush", "apns",	 "fcm_options",	 "fcmOptions",
					     "token",	"topic", "condition",	 NULL };
	static const char *const targets[] = { "token", "topic", "condition" };
	json_t *msg, *vo, *data, *android, *apns;
	size_t bytes = 0;
	int ntargets = 0;

	if (!json_is_object(root)) {
		bad_field(an, 0, NULL, "Invalid JSON payload received.");
		return 0;
	}
	if (!known_fields(an, root, "", top))
		return 0;
	vo = get2(root, "validate_only", "validateOnly");
	if (vo && !json_is_boolean(vo)) {
		bad_field(an, 0, "validate_only", "Invalid value at 'validate_only' (TYPE_BOOL)");
		return 0;
	}
	msg = json_object_get(root, "message");
	if (!json_is_object(msg)) {
		bad_field(an, 1, "message", "Request contains an invalid argument.");
		return 0;
	}
	if (!known_fields(an, msg, "message", known))
		return 0;
	for (size_t i = 0; i < 3; i++) {
		json_t *t = json_object_get(msg, targets[i]);
		char m[128];

		if (!t || json_is_null(t))
			continue;
		if (!json_is_string(t)) {
			snprintf(m, sizeof(m), "Invalid value at 'message.%s' (TYPE_STRING)",
				 targets[i]);
			bad_field(an, 0, "message", m);
			return 0;
		}
		if (ntargets++) {
			snprintf(m, sizeof(m),
				 "Invalid JSON payload received. Oneof field 'target' is already "
				 "set. Cannot set '%s'",
				 targets[i]);
			bad_field(an, 0, "message", m);
			return 0;
		}
	}
	if (ntargets == 0) {
		bad_field(an, 1, "message", "Recipient of the message is not set.");
		return 0;
	}
	data = json_object_get(msg, "data");
	if (data && !check_data(an, data, "message.data", &bytes))
		return 0;
	android = json_object_get(msg, "android");
	if (android && !check_android(an, android, &bytes))
		return 0;
	apns = json_object_get(msg, "apns");
	if (apns && !json_is_object(apns)) {
		bad_field(an, 0, "message.apns",
			  "Invalid value at 'message.apns' "
			  "(type.googleapis.com/google.firebase.fcm.v1.ApnsConfig)");
		return 0;
	}
	if (bytes > (json_object_get(msg, "topic") ? MAX_TOPIC_DATA_BYTES : MAX_DATA_BYTES)) {
		bad_field(an, 1, "message", "Message is too big");
		return 0;
	}
	*token = json_string_value(json_object_get(msg, "token"));
	return 1;
}

/* 503 UNAVAILABLE with Retry-After: an overloaded FCM. */
static void unavailable(struct answer *an)
{
	google_error(an, 503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE",
		     NULL, NULL);
	an->retry_after = 1;
}

/* The behaviour the device token's text chooses; 1 if it answered. */
static int token_behaviour(struct fcm *f, const char *token, struct answer *an)
{
	long n;

	if (mock_starts_with(token, "unregistered")) {
		google_error(an, 404, "NOT_FOUND", "Requested entity was not found.",
			     "UNREGISTERED", NULL, NULL);
	} else if (mock_starts_with(token, "invalid")) {
		google_error(an, 400, "INVALID_ARGUMENT",
			     "The registration token is not a valid FCM registration token",
			     "INVALID_ARGUMENT", NULL, NULL);
	} else if (mock_starts_with(token, "mismatch")) {
		google_error(an, 403, "PERMISSION_DENIED", "SenderId mismatch",
			     "SENDER_ID_MISMATCH", NULL, NULL);
	} else if (mock_prefix_n(token, "quota", &n) && mock_count(&f->counters, token) <= n) {
		google_error(an, 429, "RESOURCE_EXHAUSTED",
			     "Quota exceeded for quota metric 'Send requests'.", "QUOTA_EXCEEDED",
			     NULL, NULL);
		an->retry_after = 1;
	} else if (mock_prefix_n(token, "unavail", &n) && mock_count(&f->counters, token) <= n) {
		unavailable(an);
	} else if (mock_prefix_n(token, "internal", &n) && mock_count(&f->counters, token) <= n) {
		google_error(an, 500, "INTERNAL", "Internal error encountered.", "INTERNAL", NULL,
			     NULL);
	} else if (mock_starts_with(token, "toobig")) {
		/* What a message over the size limit gets: the field is the message. */
		bad_field(an, 1, "message", "Message is too big");
	} else {
		return 0;
	}
	return 1;
}

static void handle_send(struct fcm *f, const struct h2srv_req *req, const char *project,
			size_t project_len, struct answer *an)
{
	const char *auth = h2srv_req_header(req, "authorization");
	const struct access_token *t = NULL;
	const char *token = NULL;
	char msg[256], name[160];
	json_t *root;

	/* What the sender sent, whatever the answer (tests compare the bytes). */
	json_object_set_new(an->log, "body", mock_json_str((const char *)req->body));
	if (auth && strncasecmp(auth, "bearer ", 7) == 0) {
		json_object_set_new(an->log, "access_token", json_string(auth + 7));
		t = find_token(f, auth + 7);
	}
	if (!t || t->expires_ms <= mock_now_ms()) {
		google_error(an, 401, "UNAUTHENTICATED", TEXT_UNAUTHENTICATED, NULL, NULL,
			     !auth ? "CREDENTIALS_MISSING"
			     : t   ? "ACCESS_TOKEN_EXPIRED"
				   : "ACCESS_TOKEN_TYPE_UNSUPPORTED");
		an->www_authenticate = 1;
		return;
	}
	if (project_len != strlen(f->project_id) ||
	    strncmp(project, f->project_id, project_len) != 0) {
		snprintf(msg, sizeof(msg),
			 "Permission 'cloudmessaging.messages.create' denied on resource "
			 "'//cloudresourcemanager.googleapis.com/projects/%.*s' (or it may not "
			 "exist).",
			 (int)project_len, project);
		google_error(an, 403, "PERMISSION_DENIED", msg, NULL, NULL,
			     "IAM_PERMISSION_DENIED");
		return;
	}
	if (!t->fcm_scope) {
		google_error(an, 403, "PERMISSION_DENIED",
			     "Request had insufficient authentication scopes.", NULL, NULL,
			     "ACCESS_TOKEN_SCOPE_INSUFFICIENT");
		return;
	}
	root = json_loadb((const char *)req->body, req->body_len, 0, NULL);
	if (!root) {
		bad_field(an, 0, NULL, "Invalid JSON payload received.");
		return;
	}
	if (check_message(an, root, &token)) {
		json_t *vo = get2(root, "validate_only", "validateOnly");
		json_t *m = json_object_get(root, "message");

		json_object_set_new(an->log, "token", mock_json_str(token));
		json_object_set_new(an->log, "topic",
				    mock_json_str(json_string_value(json_object_get(m, "topic"))));
		json_object_set_new(an->log, "validate_only", json_boolean(json_is_true(vo)));
		if (h2srv_down(req)) {
			unavailable(an);
		} else if (!token || !token_behaviour(f, token, an)) {
			if (json_is_true(vo))
				snprintf(name, sizeof(name), "projects/%s/messages/fake_message_id",
					 f->project_id);
			else
				snprintf(name, sizeof(name), "projects/%s/messages/%ld",
					 f->project_id, ++f->sent);
			an->status = 200;
			an->body = json_pack("{ss}", "name", name);
			json_object_set_new(an->log, "name", json_string(name));
		}
	}
	json_decref(root);
}

static void handle(struct h2srv_req *req, void *ud)
{
	struct fcm *f = ud;
	struct answer an;
	struct h2srv_hdr hdrs[3];
	size_t nh = 0;
	char *text, ra[24];
	const char *p = req->path;
	static const char prefix[] = "/v1/projects/", suffix[] = "/messages:send";
	size_t plen = strlen(p);

	memset(&an, 0, sizeof(an));
	an.log = json_object();
	json_object_set_new(an.log, "method", json_string(req->method));
	json_object_set_new(an.log, "path", mock_json_str(p));
	if (strcmp(p, "/token") == 0) {
		handle_token(f, req, &an);
	} else if (strcmp(req->method, "POST") == 0 && mock_starts_with(p, prefix) &&
		   plen > strlen(prefix) + strlen(suffix) &&
		   strcmp(p + plen - strlen(suffix), suffix) == 0 &&
		   !memchr(p + strlen(prefix), '/', plen - strlen(prefix) - strlen(suffix))) {
		handle_send(f, req, p + strlen(prefix), plen - strlen(prefix) - strlen(suffix),
			    &an);
	} else {
		google_error(&an, 404, "NOT_FOUND",
			     "The requested URL was not found on this server.", NULL, NULL, NULL);
	}

	hdrs[nh++] = (struct h2srv_hdr){ "content-type", "application/json; charset=UTF-8" };
	snprintf(ra, sizeof(ra), "%ld", f->retry_after);
	if (an.retry_after)
		hdrs[nh++] = (struct h2srv_hdr){ "retry-after", ra };
	if (an.www_authenticate)
		hdrs[nh++] = (struct h2srv_hdr){ "www-authenticate",
						 "Bearer realm=\"https://accounts.google.com/\", "
						 "error=\"invalid_token\"" };
	text = json_dumps(an.body, JSON_COMPACT);
	h2srv_respond(req, an.status, hdrs, nh, text, text ? strlen(text) : 0);
	free(text);

	json_object_set_new(an.log, "status", json_integer(an.status));
	json_object_set_new(an.log, "error", mock_json_str(an.error));
	json_object_set_new(an.log, "error_code", mock_json_str(an.error_code));
	json_object_set_new(an.log, "stream", json_integer(req->stream_id));
	json_object_set_new(an.log, "conn", json_integer((json_int_t)req->conn_id));
	json_object_set_new(an.log, "seq", json_integer(req->seq));
	json_object_set_new(an.log, "retry_after", mock_json_str(an.retry_after ? ra : NULL));
	json_object_set_new(an.log, "ts_ms", json_integer(mock_now_ms()));
	mock_log(f->log, an.log);
	json_decref(an.body);
	if (f->goaway_after > 0 && req->seq == (uint32_t)f->goaway_after)
		h2srv_conn_goaway(req->conn, NULL);
}

static void usage(void)
{
	fprintf(stderr, "usage: mock_fcm --port P --cert PEM --key PEM --sa-pubkey PUB.pem\n"
			"                --client-email E --project-id PID [--token-ttl S]\n"
			"                [--retry-after S] [--goaway-after N]\n"
			"                [--outage refuse|reset|unavailable] [--log FILE]\n");
}

/* The command line into @f, @so and the paths; -1 on a usage error. */
static int parse_args(int argc, char **argv, struct fcm *f, struct h2srv_opts *so,
		      const char **sa_path, const char **log_path)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "sa-pubkey", required_argument, NULL, 's' },
		{ "client-email", required_argument, NULL, 'e' },
		{ "project-id", required_argument, NULL, 'P' },
		{ "token-ttl", required_argument, NULL, 't' },
		{ "log", required_argument, NULL, 'l' },
		{ "retry-after", required_argument, NULL, 'r' },
		{ "goaway-after", required_argument, NULL, 'g' },
		{ "outage", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	long port = -1;
	int opt;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (mock_parse_long(optarg, &port) || port < 0 || port > 65535)
				return -1;
			break;
		case 'c':
			so->cert_path = optarg;
			break;
		case 'k':
			so->key_path = optarg;
			break;
		case 's':
			*sa_path = optarg;
			break;
		case 'e':
			f->client_email = optarg;
			break;
		case 'P':
			f->project_id = optarg;
			break;
		case 't':
			if (mock_parse_long(optarg, &f->token_ttl) || f->token_ttl < 0)
				return -1;
			break;
		case 'l':
			*log_path = optarg;
			break;
		case 'r':
			if (mock_parse_long(optarg, &f->retry_after) || f->retry_after < 0)
				return -1;
			break;
		case 'g':
			if (mock_parse_long(optarg, &f->goaway_after) || f->goaway_after < 0)
				return -1;
			break;
		case 'o':
			if (mock_parse_outage(optarg, &so->outage))
				return -1;
			break;
		default:
			return -1;
		}
	}
	so->port = (int)port;
	if (optind != argc || port < 0 || !so->cert_path || !so->key_path || !*sa_path ||
	    !f->client_email || !f->project_id)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct h2srv_opts so = { .max_streams = 100, .handler = handle };
	const char *sa_path = NULL, *log_path = NULL;
	struct fcm f;
	struct h2srv *srv;
	char err[256];
	int rc = 1;

	memset(&f, 0, sizeof(f));
	f.token_ttl = 3600;
	f.retry_after = 1;
	if (parse_args(argc, argv, &f, &so, &sa_path, &log_path)) {
		usage();
		return 2;
	}
	so.ud = &f;

	f.sa_key = jwt_load_public_key(sa_path);
	if (!f.sa_key) {
		fprintf(stderr, "mock_fcm: cannot read public key '%s'\n", sa_path);
		return 1;
	}
	if (log_path && !(f.log = fopen(log_path, "a"))) {
		fprintf(stderr, "mock_fcm: cannot open log '%s'\n", log_path);
		goto out_key;
	}
	srv = h2srv_new(&so, err, sizeof(err));
	if (!srv) {
		fprintf(stderr, "mock_fcm: %s\n", err);
		goto out_log;
	}
	f.port = h2srv_port(srv);
	mock_announce(f.port);
	rc = h2srv_run(srv) ? 1 : 0;
	h2srv_free(srv);
out_log:
	if (f.log)
		fclose(f.log);
out_key:
	EVP_PKEY_free(f.sa_key);
	mock_counters_release(&f.counters);
	while (f.tokens) {
		struct access_token *t = f.tokens;

		f.tokens = t->next;
		free(t);
	}
	return rc;
}
