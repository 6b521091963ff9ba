/*
 * mock_apns.c - a local stand-in for Apple's HTTP/2 provider API (APNs) with
 * token-based authentication, for the push module's tests. The rules it
 * applies, and the device tokens that choose a behaviour, are listed in
 * tests/mock/README.md; the provider's own are in PUSH-CONTRACT.md section 1.
 *
 * Checks run in this order, the first failure answers: method (405), path
 * (404, then 400 MissingDeviceToken / BadDeviceToken), provider token (403),
 * "expire<N>-" tokens (403), duplicate headers, apns-topic, apns-push-type,
 * apns-priority, apns-expiration, apns-collapse-id, apns-id (400), payload
 * size (413), payload content (400), then the device token's own behaviour.
 *
 * Each connection starts with SETTINGS_MAX_CONCURRENT_STREAMS 1 and raises
 * it to 500 once a request carried a valid provider token, as APNs does.
 *
 * Apple documents no Retry-After for APNs, so by default none is sent;
 * --retry-after S adds one to 429 and 503 answers (HTTP allows it there),
 * for testing a sender that honours it. An outage (SIGUSR1 to SIGUSR2, see
 * h2srv.h) refuses or resets connections, or with --outage unavailable
 * answers every request that passes the checks 503 ServiceUnavailable.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "tests/mock/h2srv.h"
#include "tests/mock/jwt.h"
#include "tests/mock/mock.h"
#include "common/banned.h"

#define MAX_PAYLOAD 4096
#define MAX_VOIP_PAYLOAD 5120
#define MAX_COLLAPSE_ID 64
#define MAX_TOKEN_LEN 200
#define TOKEN_MAX_AGE_S 3600
#define STREAMS_BEFORE_AUTH 1
#define STREAMS_AFTER_AUTH 500

struct apns {
	EVP_PKEY *auth_key;
	const char *key_id, *team_id, *topic;
	long goaway_after; /* 0: never */
	long retry_after;  /* seconds, on 429 and 503; 0: no Retry-After */
	int cert_auth;	   /* --client-ca: TLS checked the client's certificate */
	int have_unreg_ts;
	long unreg_ts;
	FILE *log;
	struct mock_counters counters;
};

/* What one request was and how it was answered, for the response and log. */
struct outcome {
	char token[MAX_TOKEN_LEN + 1];
	int have_token;
	char apns_id[37];
	json_t *jwt_iat; /* owned */
	char jwt_kid[64];
	int status;
	const char *reason;   /* NULL on success */
	char retry_after[24]; /* the Retry-After sent, "" if none */
};

static const char *const push_types[] = { "alert",	  "background",	  "voip",    "location",
					  "complication", "fileprovider", "mdm",     "liveactivity",
					  "pushtotalk",	  "widgets",	  "controls" };

/* The topic suffixes of the push types that need one (contract §1). */
static const char *const topic_suffixes[] = { ".voip",
					      ".complication",
					      ".pushkit.fileprovider",
					      ".location-query",
					      ".push-type.liveactivity",
					      ".voip-ptt",
					      ".push-type.widgets",
					      ".push-type.controls" };

static int is_uuid(const char *s)
{
	if (strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
			return 0;
		}
	}
	return 1;
}

static void new_uuid(char out[37])
{
	uint8_t b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		abort();
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

static int is_digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static int topic_allowed(const struct apns *a, const char *topic)
{
	size_t n = strlen(a->topic);

	if (strncmp(topic, a->topic, n) != 0)
		return 0;
	if (topic[n] == '\0')
		return 1;
	for (size_t i = 0; i < sizeof(topic_suffixes) / sizeof(topic_suffixes[0]); i++)
		if (strcmp(topic + n, topic_suffixes[i]) == 0)
			return 1;
	return 0;
}

/* The provider token: NULL if valid, else the 403 reason. */
static const char *check_provider_token(struct apns *a, const struct h2srv_req *req,
					struct outcome *o)
{
	const char *h = h2srv_req_header(req, "authorization");
	const char *reason = "InvalidProviderToken";
	const char *alg, *kid, *iss;
	json_t *iat;
	struct jwt j;

	if (!h && a->cert_auth)
		return NULL; /* certificate-based: the TLS handshake authenticated it */
	if (!h)
		return "MissingProviderToken";
	if (strncasecmp(h, "bearer ", 7) != 0 || jwt_parse(h + 7, &j) != 0)
		return reason;
	alg = json_string_value(json_object_get(j.header, "alg"));
	kid = json_string_value(json_object_get(j.header, "kid"));
	iss = json_string_value(json_object_get(j.claims, "iss"));
	iat = json_object_get(j.claims, "iat");
	if (kid)
		snprintf(o->jwt_kid, sizeof(o->jwt_kid), "%s", kid);
	if (iat)
		o->jwt_iat = json_incref(iat);
	if (!alg || strcmp(alg, "ES256") != 0 || !kid || strcmp(kid, a->key_id) != 0 || !iss ||
	    strcmp(iss, a->team_id) != 0 || !json_is_integer(iat) ||
	    !jwt_verify_es256(&j, a->auth_key))
		goto out;
	if (mock_now_s() - json_integer_value(iat) > TOKEN_MAX_AGE_S)
		reason = "ExpiredProviderToken";
	else
		reason = NULL;
out:
	jwt_release(&j);
	return reason;
}

/* The apns-* header fields: NULL if acceptable, else the 400 reason. */
static const char *check_headers(struct apns *a, const struct h2srv_req *req)
{
	static const char *const once[] = { "authorization", "apns-topic",	"apns-push-type",
					    "apns-priority", "apns-expiration", "apns-collapse-id",
					    "apns-id" };
	const char *topic = h2srv_req_header(req, "apns-topic");
	const char *type = h2srv_req_header(req, "apns-push-type");
	const char *prio = h2srv_req_header(req, "apns-priority");
	const char *exp = h2srv_req_header(req, "apns-expiration");
	const char *collapse = h2srv_req_header(req, "apns-collapse-id");
	const char *id = h2srv_req_header(req, "apns-id");

	for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++)
		if (h2srv_req_header_count(req, once[i]) > 1)
			return "DuplicateHeaders";
	if (!topic || !*topic)
		return "MissingTopic";
	if (a->topic && !topic_allowed(a, topic))
		return "TopicDisallowed";
	if (type) {
		size_t i, n = sizeof(push_types) / sizeof(push_types[0]);

		for (i = 0; i < n && strcmp(type, push_types[i]) != 0; i++)
			;
		if (i == n)
			return "InvalidPushType";
	}
	if (prio && strcmp(prio, "1") != 0 && strcmp(prio, "5") != 0 && strcmp(prio, "10") != 0)
		return "BadPriority";
	/* Background pushes must say 5; absent means 10. */
	if (type && strcmp(type, "background") == 0 && (!prio || strcmp(prio, "5") != 0))
		return "BadPriority";
	if (exp && !is_digits(exp))
		return "BadExpirationDate";
	if (collapse && strlen(collapse) > MAX_COLLAPSE_ID)
		return "BadCollapseId";
	if (id && !is_uuid(id))
		return "BadMessageId";
	return NULL;
}

/* The body: 0 if acceptable, else sets the status and reason. */
static int check_payload(const struct h2srv_req *req, struct outcome *o)
{
	const char *type = h2srv_req_header(req, "apns-push-type");
	size_t max = type && strcmp(type, "voip") == 0 ? MAX_VOIP_PAYLOAD : MAX_PAYLOAD;
	json_t *root;
	int ok;

	if (req->body_total > max) {
		o->status = 413;
		o->reason = "PayloadTooLarge";
		return -1;
	}
	root = req->body_total ? json_loadb((const char *)req->body, req->body_len, 0, NULL) : NULL;
	ok = json_is_object(root) && json_is_object(json_object_get(root, "aps"));
	json_decref(root);
	if (!ok) {
		/* Apple documents no reason for a malformed payload; PayloadEmpty is the
		 * closest documented one, and equally "fix the request". */
		o->status = 400;
		o->reason = "PayloadEmpty";
		return -1;
	}
	return 0;
}

/*
 * The word a token stands for: itself, or for a hexadecimal token (what
 * ferry's admin API accepts for APNs) "0ff" then a code: 410 unregistered,
 * 400 baddevice, 401 nottopic, 429 busy, 429N busy<N>-, 503N unavail<N>-,
 * 500N internal<N>-, 403N expire<N>-, 413 toolarge, bad badpriority (N one
 * decimal digit). Counting stays by the exact token.
 */
static const char *token_word(const char *tok, char *buf, size_t n)
{
	enum { NO_N, N_REQUIRED, N_OPTIONAL };
	static const struct {
		const char *code, *word;
		int count;
	} codes[] = {
		{ "410", "unregistered", NO_N },  { "400", "baddevice", NO_N },
		{ "401", "nottopic", NO_N },	  { "429", "busy", N_OPTIONAL },
		{ "503", "unavail", N_REQUIRED }, { "500", "internal", N_REQUIRED },
		{ "403", "expire", N_REQUIRED },  { "413", "toolarge", NO_N },
		{ "bad", "badpriority", NO_N },
	};

	if (strncmp(tok, "0ff", 3) != 0 || strspn(tok, "0123456789abcdef") != strlen(tok))
		return tok;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		int digit;

		if (strncmp(tok + 3, codes[i].code, 3) != 0)
			continue;
		digit = tok[6] >= '0' && tok[6] <= '9';
		if (codes[i].count == N_REQUIRED && !digit)
			return tok;
		if (codes[i].count != NO_N && digit)
			snprintf(buf, n, "%s%c-", codes[i].word, tok[6]);
		else
			snprintf(buf, n, "%s", codes[i].word);
		return buf;
	}
	return tok;
}

/* 1 if @word is @prefix<N>- and this is one of @token's first N requests. */
static int first_n(struct apns *a, const char *word, const char *prefix, const char *token)
{
	long n;

	return mock_prefix_n(word, prefix, &n) && mock_count(&a->counters, token) <= n;
}

/*
 * The behaviour the device token's text chooses (after every other check),
 * or during an outage of kind unavailable, 503 whatever the token.
 */
static void token_behaviour(struct apns *a, const struct h2srv_req *req, struct outcome *o)
{
	char buf[32];
	const char *word = token_word(o->token, buf, sizeof(buf));
	long n;

	o->status = 200;
	if (h2srv_down(req)) {
		o->status = 503;
		o->reason = "ServiceUnavailable";
	} else if (mock_starts_with(word, "unregistered")) {
		o->status = 410;
		o->reason = "Unregistered";
	} else if (mock_starts_with(word, "baddevice")) {
		o->status = 400;
		o->reason = "BadDeviceToken";
	} else if (mock_starts_with(word, "nottopic")) {
		o->status = 400;
		o->reason = "DeviceTokenNotForTopic";
	} else if (mock_prefix_n(word, "busy", &n) ? first_n(a, word, "busy", o->token)
						   : mock_starts_with(word, "busy")) {
		o->status = 429;
		o->reason = "TooManyRequests";
	} else if (first_n(a, word, "unavail", o->token)) {
		o->status = 503;
		o->reason = "ServiceUnavailable";
	} else if (first_n(a, word, "internal", o->token)) {
		o->status = 500;
		o->reason = "InternalServerError";
	} else if (mock_starts_with(word, "badpriority")) {
		o->status = 400;
		o->reason = "BadPriority";
	} else if (mock_starts_with(word, "toolarge")) {
		o->status = 413;
		o->reason = "PayloadTooLarge";
	}
}

static void check(struct apns *a, struct h2srv_req *req, struct outcome *o)
{
	const char *tok;
	char buf[32];
	long n;

	o->status = 400;
	if (strcmp(req->method, "POST") != 0) {
		o->status = 405;
		o->reason = "MethodNotAllowed";
		return;
	}
	if (!mock_starts_with(req->path, "/3/device/")) {
		o->status = 404;
		o->reason = "BadPath";
		return;
	}
	tok = req->path + strlen("/3/device/");
	if (!*tok) {
		o->reason = "MissingDeviceToken";
		return;
	}
	if (strlen(tok) > MAX_TOKEN_LEN ||
	    strspn(tok, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(tok)) {
		o->reason = "BadDeviceToken";
		return;
	}
	snprintf(o->token, sizeof(o->token), "%s", tok);
	o->have_token = 1;

	o->reason = check_provider_token(a, req, o);
	if (o->reason) {
		o->status = 403;
		return;
	}
	/* A valid provider token lifts the one-stream limit of the connection. */
	h2srv_conn_set_max_streams(req->conn, STREAMS_AFTER_AUTH);
	if (mock_prefix_n(token_word(o->token, buf, sizeof(buf)), "expire", &n) &&
	    mock_count(&a->counters, o->token) <= n) {
		o->status = 403;
		o->reason = "ExpiredProviderToken";
		return;
	}
	o->reason = check_headers(a, req);
	if (o->reason)
		return;
	if (check_payload(req, o))
		return;
	token_behaviour(a, req, o);
}

static void respond(struct apns *a, struct h2srv_req *req, struct outcome *o)
{
	struct h2srv_hdr hdrs[3] = { { "apns-id", o->apns_id },
				     { "content-type", "application/json" },
				     { "retry-after", o->retry_after } };
	size_t nh = 2;
	json_t *body;
	char *text = NULL;

	if (!o->reason) {
		h2srv_respond(req, o->status, hdrs, 1, NULL, 0);
		return;
	}
	if (a->retry_after > 0 && (o->status == 429 || o->status == 503)) {
		snprintf(o->retry_after, sizeof(o->retry_after), "%ld", a->retry_after);
		nh++;
	}
	body = json_pack("{ss}", "reason", o->reason);
	if (o->status == 410)
		json_object_set_new(body, "timestamp",
				    json_integer(a->have_unreg_ts ? a->unreg_ts : mock_now_ms()));
	text = json_dumps(body, JSON_COMPACT);
	h2srv_respond(req, o->status, hdrs, nh, text, text ? strlen(text) : 0);
	free(text);
	json_decref(body);
}

static void log_request(struct apns *a, const struct h2srv_req *req, struct outcome *o)
{
	json_t *line = json_object();

	json_object_set_new(line, "method", json_string(req->method));
	json_object_set_new(line, "path", mock_json_str(req->path));
	json_object_set_new(line, "token", mock_json_str(o->have_token ? o->token : NULL));
	json_object_set_new(line, "topic", mock_json_str(h2srv_req_header(req, "apns-topic")));
	json_object_set_new(line, "push_type",
			    mock_json_str(h2srv_req_header(req, "apns-push-type")));
	json_object_set_new(line, "priority",
			    mock_json_str(h2srv_req_header(req, "apns-priority")));
	json_object_set_new(line, "expiration",
			    mock_json_str(h2srv_req_header(req, "apns-expiration")));
	json_object_set_new(line, "collapse_id",
			    mock_json_str(h2srv_req_header(req, "apns-collapse-id")));
	json_object_set_new(line, "apns_id", json_string(o->apns_id));
	json_object_set_new(line, "jwt_iat", o->jwt_iat ? json_incref(o->jwt_iat) : json_null());
	json_object_set_new(line, "jwt_kid", mock_json_str(o->jwt_kid[0] ? o->jwt_kid : NULL));
	json_object_set_new(line, "status", json_integer(o->status));
	json_object_set_new(line, "reason", mock_json_str(o->reason));
	json_object_set_new(line, "payload", mock_json_str((const char *)req->body));
	json_object_set_new(line, "payload_bytes", json_integer((json_int_t)req->body_total));
	json_object_set_new(line, "stream", json_integer(req->stream_id));
	json_object_set_new(line, "conn", json_integer((json_int_t)req->conn_id));
	json_object_set_new(line, "seq", json_integer(req->seq));
	json_object_set_new(line, "retry_after",
			    mock_json_str(o->retry_after[0] ? o->retry_after : NULL));
	json_object_set_new(line, "ts_ms", json_integer(mock_now_ms()));
	mock_log(a->log, line);
}

static void handle(struct h2srv_req *req, void *ud)
{
	struct apns *a = ud;
	struct outcome o;
	const char *id = h2srv_req_header(req, "apns-id");

	memset(&o, 0, sizeof(o));
	if (id && is_uuid(id))
		snprintf(o.apns_id, sizeof(o.apns_id), "%s", id);
	else
		new_uuid(o.apns_id);
	check(a, req, &o);
	respond(a, req, &o);
	log_request(a, req, &o);
	json_decref(o.jwt_iat);
	if (a->goaway_after > 0 && req->seq == (uint32_t)a->goaway_after)
		h2srv_conn_goaway(req->conn, "{\"reason\":\"Shutdown\"}");
}

static void usage(void)
{
	fprintf(stderr,
		"usage: mock_apns --port P --cert PEM --key PEM --auth-key PUB.pem --key-id KID\n"
		"                 --team-id TEAM [--topic T] [--goaway-after N]\n"
		"                 [--unregistered-ts MS] [--client-ca PEM] [--retry-after S]\n"
		"                 [--outage refuse|reset|unavailable] [--log FILE]\n");
}

/* The command line into @a, @so and the paths; -1 on a usage error. */
static int parse_args(int argc, char **argv, struct apns *a, struct h2srv_opts *so,
		      const char **auth_path, const char **log_path)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "auth-key", required_argument, NULL, 'a' },
		{ "key-id", required_argument, NULL, 'i' },
		{ "team-id", required_argument, NULL, 't' },
		{ "topic", required_argument, NULL, 'T' },
		{ "goaway-after", required_argument, NULL, 'g' },
		{ "unregistered-ts", required_argument, NULL, 'u' },
		{ "log", required_argument, NULL, 'l' },
		{ "client-ca", required_argument, NULL, 'C' },
		{ "retry-after", required_argument, NULL, 'r' },
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
		case 'a':
			*auth_path = optarg;
			break;
		case 'i':
			a->key_id = optarg;
			break;
		case 't':
			a->team_id = optarg;
			break;
		case 'T':
			a->topic = optarg;
			break;
		case 'g':
			if (mock_parse_long(optarg, &a->goaway_after) || a->goaway_after < 0)
				return -1;
			break;
		case 'u':
			if (mock_parse_long(optarg, &a->unreg_ts))
				return -1;
			a->have_unreg_ts = 1;
			break;
		case 'l':
			*log_path = optarg;
			break;
		case 'C':
			so->client_ca_path = optarg;
			a->cert_auth = 1;
			break;
		case 'r':
			if (mock_parse_long(optarg, &a->retry_after) || a->retry_after < 0)
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
	if (optind != argc || port < 0 || !so->cert_path || !so->key_path || !*auth_path ||
	    !a->key_id || !a->team_id)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct h2srv_opts so = { .max_streams = STREAMS_BEFORE_AUTH, .handler = handle };
	const char *auth_path = NULL, *log_path = NULL;
	struct apns a;
	struct h2srv *srv;
	char err[256];
	int rc = 1;

	memset(&a, 0, sizeof(a));
	if (parse_args(argc, argv, &a, &so, &auth_path, &log_path)) {
		usage();
		return 2;
	}
	so.ud = &a;

	a.auth_key = jwt_load_public_key(auth_path);
	if (!a.auth_key) {
		fprintf(stderr, "mock_apns: cannot read public key '%s'\n", auth_path);
		return 1;
	}
	if (log_path && !(a.log = fopen(log_path, "a"))) {
		fprintf(stderr, "mock_apns: cannot open log '%s'\n", log_path);
		goto out_key;
	}
	srv = h2srv_new(&so, err, sizeof(err));
	if (!srv) {
		fprintf(stderr, "mock_apns: %s\n", err);
		goto out_log;
	}
	mock_announce(h2srv_port(srv));
	rc = h2srv_run(srv) ? 1 : 0;
	h2srv_free(srv);
out_log:
	if (a.log)
		fclose(a.log);
out_key:
	EVP_PKEY_free(a.auth_key);
	mock_counters_release(&a.counters);
	return rc;
}
