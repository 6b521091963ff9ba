/*
 * test_mock_push.c - the mock push providers (tests/mock/README.md) against
 * libcurl over HTTP/2 and TLS, as the push module will use them: every rule,
 * every token behaviour and every kind of outage the README promises, so
 * that the push module's tests can rely on them.
 *
 * The test makes its own TLS certificate (openssl tool, as test_gateway.c),
 * an EC P-256 key pair (the APNs .p8 and its public half) and an RSA key pair
 * (the FCM service account) with OpenSSL, signs provider tokens and
 * assertions itself, and parses every error body with jansson. No PostgreSQL.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "common/banned.h"

#define KEY_ID "ABC123DEFG"
#define TEAM_ID "TEAM123456"
#define TOPIC "com.example.app"
#define UNREG_TS "1700000000123"
#define SA_EMAIL "ferry@mock-project.iam.gserviceaccount.com"
#define PROJECT "mock-project"
#define SCOPE_FCM "https://www.googleapis.com/auth/firebase.messaging"
/* URL-encoded, and escaped for the snprintf formats it is pasted into. */
#define GRANT "urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer"
#define FCM_ERROR_TYPE "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#define BAD_REQUEST_TYPE "type.googleapis.com/google.rpc.BadRequest"
#define BODY "{\"aps\":{\"alert\":\"hello\"}}"

struct fixture {
	char *cert, *key;
	EVP_PKEY *ec, *ec_other, *rsa, *rsa_other;
	struct th_mock apns, apns_goaway, fcm, fcm_short;
	/* --retry-after 120 --outage unavailable; apns_reset: --outage reset;
	 * fcm_ra: --retry-after 120 --outage unavailable --goaway-after 3 */
	struct th_mock apns_ra, apns_reset, fcm_ra;
	CURL *curl; /* reused: one connection per mock while it lasts */
};

static struct fixture fx;

/* ---- keys, certificates, tokens -------------------------------------------- */

static char *b64url(const uint8_t *p, size_t len)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = malloc(len * 4 / 3 + 4), *o = out;
	size_t i;

	assert_non_null(out);
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		*o++ = tab[v >> 18];
		*o++ = tab[(v >> 12) & 63];
		*o++ = tab[(v >> 6) & 63];
		*o++ = tab[v & 63];
	}
	if (len - i == 1) {
		*o++ = tab[p[i] >> 2];
		*o++ = tab[(p[i] & 3) << 4];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 8 | p[i + 1];

		*o++ = tab[v >> 10];
		*o++ = tab[(v >> 4) & 63];
		*o++ = tab[(v << 2) & 63];
	}
	*o = '\0';
	return out;
}

/* A compact JWS of @header and @claims (JSON texts) signed with @k: ES256
 * (64-byte r || s) for an EC key, RS256 for an RSA one. */
static char *jws(const char *header, const char *claims, EVP_PKEY *k)
{
	char *h = b64url((const uint8_t *)header, strlen(header));
	char *c = b64url((const uint8_t *)claims, strlen(claims));
	size_t input_len = strlen(h) + 1 + strlen(c), sig_len = 0;
	char *input = malloc(input_len + 1), *sig64, *out;
	uint8_t sig[512], rs[64];
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	assert_non_null(input);
	snprintf(input, input_len + 1, "%s.%s", h, c);
	sig_len = sizeof(sig);
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, (const uint8_t *)input, input_len) != 1)
		fail_msg("cannot sign a JWT");
	EVP_MD_CTX_free(md);
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) {
		const uint8_t *p = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);

		assert_non_null(es);
		BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
		ECDSA_SIG_free(es);
		sig64 = b64url(rs, sizeof(rs));
	} else {
		sig64 = b64url(sig, sig_len);
	}
	out = malloc(input_len + strlen(sig64) + 2);
	assert_non_null(out);
	snprintf(out, input_len + strlen(sig64) + 2, "%s.%s", input, sig64);
	free(h);
	free(c);
	free(input);
	free(sig64);
	return out;
}

/* An APNs provider token. */
static char *apns_jwt(EVP_PKEY *k, const char *kid, const char *iss, long iat)
{
	char header[128], claims[128];

	snprintf(header, sizeof(header), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
	snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",\"iat\":%ld}", iss, iat);
	return jws(header, claims, k);
}

static char *good_jwt(void)
{
	return apns_jwt(fx.ec, KEY_ID, TEAM_ID, (long)time(NULL));
}

/* A service-account assertion for the mock at @port. */
static char *sa_assertion(EVP_PKEY *k, const char *iss, const char *scope, const char *host,
			  int port, long iat, long exp)
{
	char claims[512];

	snprintf(claims, sizeof(claims),
		 "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":\"https://%s:%d/token\","
		 "\"iat\":%ld,\"exp\":%ld}",
		 iss, scope, host, port, iat, exp);
	return jws("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}", claims, k);
}

/* ---- the mocks ----------------------------------------------------------------- */

static json_t *last_log_line(const struct th_mock *m)
{
	json_t *all = th_mock_log(m);
	json_t *last = json_incref(json_array_get(all, json_array_size(all) - 1));

	json_decref(all);
	assert_non_null(last);
	return last;
}

/* ---- HTTP/2 requests -------------------------------------------------------------- */

struct hres {
	long status;
	char *body;
	size_t body_len;
	char *hdrs;
	size_t hdrs_len;
	json_t *json; /* the body parsed, or NULL */
};

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
	char **buf = ud;
	size_t *len = (size_t *)(buf + 1);
	char *grown = realloc(*buf, *len + size * n + 1);

	assert_non_null(grown);
	memcpy(grown + *len, p, size * n);
	*len += size * n;
	grown[*len] = '\0';
	*buf = grown;
	return size * n;
}

static void configure(CURL *c, const char *method, const char *url, struct curl_slist *hl,
		      const char *body, long body_len, struct hres *r)
{
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(c, CURLOPT_CAINFO, fx.cert);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->hdrs);
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, body_len);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
	} else {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
}

static void finish(CURL *c, struct hres *r)
{
	long version = 0;

	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &version);
	assert_int_equal(version, CURL_HTTP_VERSION_2_0);
	if (!r->body)
		r->body = strdup("");
	r->json = json_loads(r->body, 0, NULL);
}

static void hres_release(struct hres *r)
{
	free(r->body);
	free(r->hdrs);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

/* @method @url with the header lines of the NULL-terminated @hdrs and @body
 * (NULL: none; @body_len < 0: strlen) over the fixture's reused handle.
 * Returns libcurl's code; @r is filled only when it is CURLE_OK. */
static CURLcode h2_try(struct hres *r, const char *method, const char *url,
		       const char *const hdrs[], const char *body, long body_len)
{
	struct curl_slist *hl = NULL;
	CURLcode rc;

	memset(r, 0, sizeof(*r));
	for (int i = 0; hdrs && hdrs[i]; i++)
		hl = curl_slist_append(hl, hdrs[i]);
	configure(fx.curl, method, url, hl, body,
		  body && body_len < 0 ? (long)strlen(body)
		  : body_len < 0       ? 0
				       : body_len,
		  r);
	rc = curl_easy_perform(fx.curl);
	curl_slist_free_all(hl);
	if (rc == CURLE_OK)
		finish(fx.curl, r);
	else
		hres_release(r);
	return rc;
}

/* h2_try(), failing the test on a transport error. */
static void h2(struct hres *r, const char *method, const char *url, const char *const hdrs[],
	       const char *body, long body_len)
{
	CURLcode rc = h2_try(r, method, url, hdrs, body, body_len);

	if (rc != CURLE_OK)
		fail_msg("%s %s (body '%.80s'): %s", method, url, body ? body : "",
			 curl_easy_strerror(rc));
}

/* Value of response header @name (malloc'ed) or NULL. */
static char *hres_header(const struct hres *r, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = r->hdrs; p && *p;) {
		const char *eol = strstr(p, "\r\n");
		size_t len = eol ? (size_t)(eol - p) : strlen(p);

		if (len > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1;

			while (*v == ' ')
				v++;
			return strndup(v, (size_t)(p + len - v));
		}
		p = eol ? eol + 2 : p + len;
	}
	return NULL;
}

/* ---- APNs ----------------------------------------------------------------------------- */

/* POST /3/device/@token to @m with @jwt (NULL: no authorization) and the extra
 * header lines @hdrs (NULL: apns-topic TOPIC and apns-push-type alert). */
static void apns_post_to(const struct th_mock *m, struct hres *r, const char *token,
			 const char *jwt, const char *const hdrs[], const char *body, long body_len)
{
	static const char *const std[] = { "apns-topic: " TOPIC, "apns-push-type: alert", NULL };
	const char *lines[20];
	char url[256], auth[1024];
	int n = 0;

	if (jwt) {
		snprintf(auth, sizeof(auth), "authorization: bearer %s", jwt);
		lines[n++] = auth;
	}
	for (int i = 0; (hdrs ? hdrs : std)[i] && n < 19; i++)
		lines[n++] = (hdrs ? hdrs : std)[i];
	lines[n] = NULL;
	snprintf(url, sizeof(url), "%s/3/device/%s", m->base, token);
	h2(r, "POST", url, lines, body, body_len);
}

/* POST /3/device/@token to @m with @jwt; libcurl's code (@r filled if OK). */
static CURLcode apns_post_try(const struct th_mock *m, struct hres *r, const char *token,
			      const char *jwt)
{
	char url[256], auth[1024];
	const char *hdrs[] = { auth, "apns-topic: " TOPIC, "apns-push-type: alert", NULL };

	snprintf(auth, sizeof(auth), "authorization: bearer %s", jwt);
	snprintf(url, sizeof(url), "%s/3/device/%s", m->base, token);
	return h2_try(r, "POST", url, hdrs, BODY, -1);
}

/* Send and check the status and, for an error, the reason and content type. */
static void apns_expect(const char *token, const char *jwt, const char *const hdrs[],
			const char *body, int status, const char *reason)
{
	struct hres r;

	apns_post_to(&fx.apns, &r, token, jwt, hdrs, body, -1);
	if (r.status != status)
		fail_msg("token %s: status %ld, wanted %d (body %s)", token, r.status, status,
			 r.body);
	if (reason) {
		char *ct = hres_header(&r, "content-type");

		assert_non_null(r.json);
		assert_string_equal(json_string_value(json_object_get(r.json, "reason")), reason);
		assert_non_null(ct);
		assert_string_equal(ct, "application/json");
		free(ct);
	} else {
		assert_int_equal(r.body_len, 0);
	}
	hres_release(&r);
}

static int is_uuid(const char *s)
{
	if (!s || strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-'
							    : !strchr("0123456789abcdef", s[i]))
			return 0;
	}
	return 1;
}

static void test_apns_success(void **state)
{
	const char *const with_id[] = { "apns-topic: " TOPIC, "apns-push-type: alert",
					"apns-id: 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", NULL };
	char *jwt = good_jwt(), *id;
	struct hres r;
	json_t *line;

	(void)state;
	apns_post_to(&fx.apns, &r, "0123abcd", jwt, NULL, BODY, -1);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 0);
	id = hres_header(&r, "apns-id");
	assert_true(is_uuid(id));
	free(id);
	hres_release(&r);

	apns_post_to(&fx.apns, &r, "0123abcd", jwt, with_id, BODY, -1);
	assert_int_equal(r.status, 200);
	id = hres_header(&r, "apns-id");
	assert_string_equal(id, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
	free(id);
	hres_release(&r);

	/* The log line says what the request was. */
	line = last_log_line(&fx.apns);
	assert_string_equal(json_string_value(json_object_get(line, "token")), "0123abcd");
	assert_string_equal(json_string_value(json_object_get(line, "topic")), TOPIC);
	assert_string_equal(json_string_value(json_object_get(line, "push_type")), "alert");
	assert_string_equal(json_string_value(json_object_get(line, "apns_id")),
			    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
	assert_string_equal(json_string_value(json_object_get(line, "jwt_kid")), KEY_ID);
	assert_true(json_is_integer(json_object_get(line, "jwt_iat")));
	assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
	assert_true(json_is_null(json_object_get(line, "reason")));
	assert_string_equal(json_string_value(json_object_get(line, "payload")), BODY);
	assert_true(json_integer_value(json_object_get(line, "stream")) > 0);
	assert_true(json_integer_value(json_object_get(line, "conn")) > 0);
	json_decref(line);
	free(jwt);
}

static void test_apns_provider_token(void **state)
{
	long now = (long)time(NULL);
	char *bad_sig = apns_jwt(fx.ec_other, KEY_ID, TEAM_ID, now);
	char *bad_kid = apns_jwt(fx.ec, "ZZZ999ZZZZ", TEAM_ID, now);
	char *bad_iss = apns_jwt(fx.ec, KEY_ID, "OTHERTEAM1", now);
	char *old = apns_jwt(fx.ec, KEY_ID, TEAM_ID, now - 3700);
	char *fresh_enough = apns_jwt(fx.ec, KEY_ID, TEAM_ID, now - 3500);
	char *rsa = jws("{\"alg\":\"ES256\",\"kid\":\"" KEY_ID "\"}",
			"{\"iss\":\"" TEAM_ID "\",\"iat\":1}", fx.rsa);

	(void)state;
	apns_expect("0123abcd", NULL, NULL, BODY, 403, "MissingProviderToken");
	apns_expect("0123abcd", bad_sig, NULL, BODY, 403, "InvalidProviderToken");
	apns_expect("0123abcd", bad_kid, NULL, BODY, 403, "InvalidProviderToken");
	apns_expect("0123abcd", bad_iss, NULL, BODY, 403, "InvalidProviderToken");
	apns_expect("0123abcd", rsa, NULL, BODY, 403, "InvalidProviderToken");
	apns_expect("0123abcd", "not.a.jwt", NULL, BODY, 403, "InvalidProviderToken");
	apns_expect("0123abcd", old, NULL, BODY, 403, "ExpiredProviderToken");
	apns_expect("0123abcd", fresh_enough, NULL, BODY, 200, NULL);
	free(bad_sig);
	free(bad_kid);
	free(bad_iss);
	free(old);
	free(fresh_enough);
	free(rsa);
}

static void test_apns_method_and_path(void **state)
{
	char *jwt = good_jwt(), auth[1024], url[128];
	const char *hdrs[] = { auth, "apns-topic: " TOPIC, NULL };
	struct hres r;

	(void)state;
	snprintf(auth, sizeof(auth), "authorization: bearer %s", jwt);
	snprintf(url, sizeof(url), "%s/3/device/0123abcd", fx.apns.base);
	h2(&r, "GET", url, hdrs, NULL, 0);
	assert_int_equal(r.status, 405);
	assert_string_equal(json_string_value(json_object_get(r.json, "reason")),
			    "MethodNotAllowed");
	hres_release(&r);
	snprintf(url, sizeof(url), "%s/3/other/0123abcd", fx.apns.base);
	h2(&r, "POST", url, hdrs, BODY, -1);
	assert_int_equal(r.status, 404);
	assert_string_equal(json_string_value(json_object_get(r.json, "reason")), "BadPath");
	hres_release(&r);
	apns_expect("", jwt, NULL, BODY, 400, "MissingDeviceToken");
	apns_expect("0123ABCD", jwt, NULL, BODY, 400, "BadDeviceToken");
	free(jwt);
}

static void test_apns_headers(void **state)
{
	char collapse65[128], collapse64[128];
	char *jwt = good_jwt();

	(void)state;
	memset(collapse64, 'c', sizeof(collapse64));
	memcpy(collapse64, "apns-collapse-id: ", 18);
	collapse64[18 + 64] = '\0';
	memcpy(collapse65, collapse64, 18 + 64);
	collapse65[18 + 64] = 'c';
	collapse65[18 + 65] = '\0';

	apns_expect("0123abcd", jwt, (const char *[]){ "apns-push-type: alert", NULL }, BODY, 400,
		    "MissingTopic");
	apns_expect("0123abcd", jwt, (const char *[]){ "apns-topic: com.other.app", NULL }, BODY,
		    400, "TopicDisallowed");
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC ".voip", "apns-push-type: voip", NULL },
		    BODY, 200, NULL);
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-push-type: bogus", NULL }, BODY,
		    400, "InvalidPushType");
	apns_expect("0123abcd", jwt, (const char *[]){ "apns-topic: " TOPIC, NULL }, BODY, 200,
		    NULL);
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-priority: 7", NULL }, BODY, 400,
		    "BadPriority");
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-push-type: background",
				      "apns-priority: 10", NULL },
		    BODY, 400, "BadPriority");
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-push-type: background", NULL },
		    BODY, 400, "BadPriority");
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-push-type: background",
				      "apns-priority: 5", NULL },
		    "{\"aps\":{\"content-available\":1}}", 200, NULL);
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-expiration: soon", NULL }, BODY,
		    400, "BadExpirationDate");
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-expiration: 0", NULL }, BODY, 200,
		    NULL);
	apns_expect("0123abcd", jwt, (const char *[]){ "apns-topic: " TOPIC, collapse65, NULL },
		    BODY, 400, "BadCollapseId");
	apns_expect("0123abcd", jwt, (const char *[]){ "apns-topic: " TOPIC, collapse64, NULL },
		    BODY, 200, NULL);
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC,
				      "apns-id: 0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", NULL },
		    BODY, 400, "BadMessageId");
	apns_expect("0123abcd", jwt,
		    (const char *[]){ "apns-topic: " TOPIC, "apns-id: 1234", NULL }, BODY, 400,
		    "BadMessageId");
	free(jwt);
}

/* {"aps":{"alert":"xxx..."}} of exactly @size bytes (malloc'ed). */
static char *payload_of(size_t size)
{
	char *p = malloc(size + 1);

	assert_non_null(p);
	memset(p, 'x', size);
	memcpy(p, "{\"aps\":{\"alert\":\"", 17);
	memcpy(p + size - 3, "\"}}", 3);
	p[size] = '\0';
	return p;
}

static void test_apns_payload(void **state)
{
	char *jwt = good_jwt(), *p4096 = payload_of(4096), *p4097 = payload_of(4097),
	     *p5120 = payload_of(5120), *p5121 = payload_of(5121);
	const char *const voip[] = { "apns-topic: " TOPIC ".voip", "apns-push-type: voip", NULL };

	(void)state;
	apns_expect("0123abcd", jwt, NULL, "", 400, "PayloadEmpty");
	apns_expect("0123abcd", jwt, NULL, "not json", 400, "PayloadEmpty");
	apns_expect("0123abcd", jwt, NULL, "{\"alert\":\"no aps\"}", 400, "PayloadEmpty");
	apns_expect("0123abcd", jwt, NULL, p4096, 200, NULL);
	apns_expect("0123abcd", jwt, NULL, p4097, 413, "PayloadTooLarge");
	apns_expect("0123abcd", jwt, voip, p5120, 200, NULL);
	apns_expect("0123abcd", jwt, voip, p5121, 413, "PayloadTooLarge");
	free(jwt);
	free(p4096);
	free(p4097);
	free(p5120);
	free(p5121);
}

static void test_apns_token_behaviours(void **state)
{
	char *jwt = good_jwt();
	struct hres r;
	json_t *ts;

	(void)state;
	apns_post_to(&fx.apns, &r, "unregistered-1", jwt, NULL, BODY, -1);
	assert_int_equal(r.status, 410);
	assert_string_equal(json_string_value(json_object_get(r.json, "reason")), "Unregistered");
	ts = json_object_get(r.json, "timestamp");
	assert_true(json_is_integer(ts));
	assert_int_equal(json_integer_value(ts), strtoll(UNREG_TS, NULL, 10));
	hres_release(&r);

	apns_expect("baddevice-1", jwt, NULL, BODY, 400, "BadDeviceToken");
	apns_expect("nottopic-1", jwt, NULL, BODY, 400, "DeviceTokenNotForTopic");
	apns_expect("busy-1", jwt, NULL, BODY, 429, "TooManyRequests");

	apns_expect("unavail2-a", jwt, NULL, BODY, 503, "ServiceUnavailable");
	apns_expect("unavail2-a", jwt, NULL, BODY, 503, "ServiceUnavailable");
	apns_expect("unavail2-a", jwt, NULL, BODY, 200, NULL);
	apns_expect("unavail2-a", jwt, NULL, BODY, 200, NULL);
	/* Counted per exact token. */
	apns_expect("unavail1-b", jwt, NULL, BODY, 503, "ServiceUnavailable");
	apns_expect("unavail1-b", jwt, NULL, BODY, 200, NULL);

	apns_expect("expire1-a", jwt, NULL, BODY, 403, "ExpiredProviderToken");
	apns_expect("expire1-a", jwt, NULL, BODY, 200, NULL);
	/* After the expiry, the normal checks. */
	apns_expect("expire1-a", jwt, NULL, "", 400, "PayloadEmpty");
	free(jwt);
}

/* Sequential requests on one connection are unaffected by the one-stream
 * start; once a valid token was seen, concurrent streams share it. */
static void test_apns_streams(void **state)
{
	enum { N = 8 };
	char *jwt = good_jwt(), auth[1024], url[128];
	struct curl_slist *hl = NULL;
	struct hres r[N + 1];
	CURL *e[N + 1];
	CURLM *multi = curl_multi_init();
	json_t *lines;
	long conn = -1;
	int running = 1;

	(void)state;
	snprintf(auth, sizeof(auth), "authorization: bearer %s", jwt);
	snprintf(url, sizeof(url), "%s/3/device/0123abcd", fx.apns.base);
	hl = curl_slist_append(hl, auth);
	hl = curl_slist_append(hl, "apns-topic: " TOPIC);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);

	/* One request first (the connection allows one stream), then N at once. */
	for (int i = 0; i <= N; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		e[i] = curl_easy_init();
		configure(e[i], "POST", url, hl, BODY, (long)strlen(BODY), &r[i]);
		curl_easy_setopt(e[i], CURLOPT_PIPEWAIT, 1L);
		if (i == 0) {
			curl_multi_add_handle(multi, e[i]);
			while (running) {
				curl_multi_perform(multi, &running);
				curl_multi_poll(multi, NULL, 0, 100, NULL);
			}
			curl_multi_remove_handle(multi, e[0]);
		}
	}
	for (int i = 1; i <= N; i++)
		curl_multi_add_handle(multi, e[i]);
	running = 1;
	while (running) {
		curl_multi_perform(multi, &running);
		curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	for (int i = 0; i <= N; i++) {
		finish(e[i], &r[i]);
		assert_int_equal(r[i].status, 200);
		if (i)
			curl_multi_remove_handle(multi, e[i]);
		curl_easy_cleanup(e[i]);
		hres_release(&r[i]);
	}
	curl_multi_cleanup(multi);
	curl_slist_free_all(hl);

	/* All of them on one connection: the limit was raised, not hit. */
	lines = th_mock_log(&fx.apns);
	for (size_t i = json_array_size(lines) - (N + 1); i < json_array_size(lines); i++) {
		long c =
			(long)json_integer_value(json_object_get(json_array_get(lines, i), "conn"));

		if (conn < 0)
			conn = c;
		assert_int_equal(c, conn);
	}
	json_decref(lines);
	free(jwt);
}

/* After --goaway-after N streams the mock sends GOAWAY and closes; the next
 * request succeeds on a new connection. */
static void test_apns_goaway(void **state)
{
	char *jwt = good_jwt();
	struct hres r;
	json_t *lines;

	(void)state;
	for (int i = 0; i < 5; i++) {
		apns_post_to(&fx.apns_goaway, &r, "0123abcd", jwt, NULL, BODY, -1);
		assert_int_equal(r.status, 200);
		hres_release(&r);
	}
	lines = th_mock_log(&fx.apns_goaway);
	assert_int_equal(json_array_size(lines), 5);
	for (size_t i = 0; i < 5; i++) {
		json_t *l = json_array_get(lines, i);

		assert_int_equal(json_integer_value(json_object_get(l, "conn")), 1 + (long)i / 2);
		assert_int_equal(json_integer_value(json_object_get(l, "seq")), 1 + (long)i % 2);
	}
	json_decref(lines);
	free(jwt);
}

/*
 * GOAWAY while requests are in flight on the connection: each request
 * reached the mock's handler exactly once, whatever libcurl then does with
 * those the GOAWAY refused (it retries them on a new connection, or, being
 * 7.88, sometimes gives up: the test then sends them again, as ferry's
 * senders do). Streams above the GOAWAY's last-stream-id are never handled.
 */
static void test_apns_goaway_concurrent(void **state)
{
	enum { N = 12 };
	char *jwt = good_jwt(), auth[1024], url[N][128], tok[N][24];
	struct curl_slist *hl = NULL;
	struct hres r[N];
	CURLcode rc[N];
	CURL *e[N];
	CURLM *multi = curl_multi_init();
	int running = 1;

	(void)state;
	snprintf(auth, sizeof(auth), "authorization: bearer %s", jwt);
	hl = curl_slist_append(hl, auth);
	hl = curl_slist_append(hl, "apns-topic: " TOPIC);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
	for (int i = 0; i < N; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		rc[i] = CURLE_FAILED_INIT; /* until its CURLMSG_DONE */
		snprintf(tok[i], sizeof(tok[i]), "0123cc%02d", i);
		snprintf(url[i], sizeof(url[i]), "%s/3/device/%s", fx.apns_goaway.base, tok[i]);
		e[i] = curl_easy_init();
		configure(e[i], "POST", url[i], hl, BODY, (long)strlen(BODY), &r[i]);
		curl_easy_setopt(e[i], CURLOPT_PIPEWAIT, 1L);
		curl_multi_add_handle(multi, e[i]);
	}
	while (running) {
		CURLMsg *m;
		int left;

		curl_multi_perform(multi, &running);
		while ((m = curl_multi_info_read(multi, &left)))
			for (int i = 0; i < N; i++)
				if (m->msg == CURLMSG_DONE && m->easy_handle == e[i])
					rc[i] = m->data.result;
		curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	for (int i = 0; i < N; i++) {
		json_t *lines;

		if (rc[i] == CURLE_OK)
			finish(e[i], &r[i]);
		else
			hres_release(&r[i]);
		curl_multi_remove_handle(multi, e[i]);
		curl_easy_cleanup(e[i]);
		for (int k = 0; rc[i] != CURLE_OK && k < 3; k++)
			rc[i] = apns_post_try(&fx.apns_goaway, &r[i], tok[i], jwt);
		assert_int_equal(rc[i], CURLE_OK);
		assert_int_equal(r[i].status, 200);
		hres_release(&r[i]);
		lines = th_mock_log_where(&fx.apns_goaway, "token", tok[i]);
		if (json_array_size(lines) != 1)
			fail_msg("token %s handled %zu times", tok[i], json_array_size(lines));
		json_decref(lines);
	}
	curl_multi_cleanup(multi);
	curl_slist_free_all(hl);
	free(jwt);
}

/* Counted 429s and 500s, and 4xx answers a sender must not retry; each
 * with its hexadecimal spelling. No Retry-After: Apple documents none. */
static void test_apns_transient_and_rejections(void **state)
{
	char *jwt = good_jwt(), *ra;
	int64_t before = (int64_t)time(NULL) * 1000;
	struct hres r;
	json_t *line;

	(void)state;
	apns_expect("busy2-a", jwt, NULL, BODY, 429, "TooManyRequests");
	apns_expect("busy2-a", jwt, NULL, BODY, 429, "TooManyRequests");
	apns_expect("busy2-a", jwt, NULL, BODY, 200, NULL);
	apns_expect("internal1-a", jwt, NULL, BODY, 500, "InternalServerError");
	apns_expect("internal1-a", jwt, NULL, BODY, 200, NULL);
	for (int i = 0; i < 2; i++) {
		apns_expect("badpriority-1", jwt, NULL, BODY, 400, "BadPriority");
		apns_expect("toolarge-1", jwt, NULL, BODY, 413, "PayloadTooLarge");
		apns_expect("0ffbad01", jwt, NULL, BODY, 400, "BadPriority");
		apns_expect("0ff41301", jwt, NULL, BODY, 413, "PayloadTooLarge");
		apns_expect("0ff429a1", jwt, NULL, BODY, 429, "TooManyRequests");
	}
	apns_expect("0ff4292a", jwt, NULL, BODY, 429, "TooManyRequests");
	apns_expect("0ff4292a", jwt, NULL, BODY, 429, "TooManyRequests");
	apns_expect("0ff4292a", jwt, NULL, BODY, 200, NULL);
	apns_expect("0ff5001a", jwt, NULL, BODY, 500, "InternalServerError");
	apns_expect("0ff5001a", jwt, NULL, BODY, 200, NULL);
	apns_expect("0ff5031a", jwt, NULL, BODY, 503, "ServiceUnavailable");
	apns_expect("0ff5031a", jwt, NULL, BODY, 200, NULL);

	apns_post_to(&fx.apns, &r, "busy-ra", jwt, NULL, BODY, -1);
	assert_int_equal(r.status, 429);
	ra = hres_header(&r, "retry-after");
	assert_null(ra);
	hres_release(&r);
	line = last_log_line(&fx.apns);
	assert_true(json_is_null(json_object_get(line, "retry_after")));
	/* When it was answered, on the wall clock (milliseconds). */
	assert_true(json_integer_value(json_object_get(line, "ts_ms")) >= before);
	assert_true(json_integer_value(json_object_get(line, "ts_ms")) <=
		    ((int64_t)time(NULL) + 1) * 1000);
	json_decref(line);
	free(jwt);
}

/* The status (and reason, into @reason) of POST /3/device/@token on @m;
 * the value of its Retry-After into @ra ("" if none). */
static long apns_status(const struct th_mock *m, const char *token, const char *jwt,
			char reason[64], char ra[16])
{
	struct hres r;
	char *v;
	long st;

	apns_post_to(m, &r, token, jwt, NULL, BODY, -1);
	st = r.status;
	snprintf(reason, 64, "%s",
		 r.json ? json_string_value(json_object_get(r.json, "reason")) : "");
	v = hres_header(&r, "retry-after");
	snprintf(ra, 16, "%s", v ? v : "");
	free(v);
	hres_release(&r);
	return st;
}

/* --retry-after S: on 429 and 503 answers only, and in the log. */
static void test_apns_retry_after(void **state)
{
	char *jwt = good_jwt(), reason[64], ra[16];
	json_t *line;

	(void)state;
	assert_int_equal(apns_status(&fx.apns_ra, "busy-1", jwt, reason, ra), 429);
	assert_string_equal(ra, "120");
	line = last_log_line(&fx.apns_ra);
	assert_string_equal(json_string_value(json_object_get(line, "retry_after")), "120");
	json_decref(line);
	assert_int_equal(apns_status(&fx.apns_ra, "unavail1-a", jwt, reason, ra), 503);
	assert_string_equal(ra, "120");
	assert_int_equal(apns_status(&fx.apns_ra, "internal1-a", jwt, reason, ra), 500);
	assert_string_equal(ra, "");
	assert_int_equal(apns_status(&fx.apns_ra, "baddevice-1", jwt, reason, ra), 400);
	assert_string_equal(ra, "");
	assert_int_equal(apns_status(&fx.apns_ra, "unavail1-a", jwt, reason, ra), 200);
	assert_string_equal(ra, "");
	free(jwt);
}

/* POST a push to @m; libcurl's code. */
static CURLcode apns_try(const struct th_mock *m, const char *jwt)
{
	static const char *const std[] = { "apns-topic: " TOPIC, "apns-push-type: alert", NULL };
	char url[256], auth[1024];
	const char *hdrs[] = { auth, std[0], std[1], NULL };
	struct hres r;
	CURLcode rc;

	snprintf(auth, sizeof(auth), "authorization: bearer %s", jwt);
	snprintf(url, sizeof(url), "%s/3/device/0123abcd", m->base);
	rc = h2_try(&r, "POST", url, hdrs, BODY, -1);
	hres_release(&r);
	return rc;
}

/* What a bare TCP connection to @port meets: -1 refused; 0 accepted, then
 * reset or closed; 1 accepted and kept open for 300 ms (a TLS server
 * waiting for the ClientHello). */
static int tcp_probe(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), res;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		assert_int_equal(errno, ECONNREFUSED);
		close(fd);
		return -1;
	}
	res = poll(&p, 1, 300) == 1 ? (recv(fd, &c, 1, 0) > 0) : 1;
	close(fd);
	return res;
}

static size_t log_lines(const struct th_mock *m)
{
	json_t *all = th_mock_log(m);
	size_t n = json_array_size(all);

	json_decref(all);
	return n;
}

/*
 * An outage of each kind (SIGUSR1 to SIGUSR2): refused connections, reset
 * ones, answers 503 to valid requests; afterwards the same port answers as
 * before. Refused and reset requests leave no log line.
 */
static void test_apns_outages(void **state)
{
	char *jwt = good_jwt(), reason[64], ra[16];
	size_t lines;
	CURLcode rc;

	(void)state;
	assert_int_equal(apns_try(&fx.apns, jwt), CURLE_OK);
	lines = log_lines(&fx.apns);
	assert_int_equal(tcp_probe(fx.apns.port), 1);
	th_mock_outage(&fx.apns, 1);
	assert_int_equal(apns_try(&fx.apns, jwt), CURLE_COULDNT_CONNECT);
	assert_int_equal(tcp_probe(fx.apns.port), -1);
	th_mock_outage(&fx.apns, 0);
	assert_int_equal(tcp_probe(fx.apns.port), 1);
	assert_int_equal(apns_status(&fx.apns, "0123abcd", jwt, reason, ra), 200);
	assert_int_equal(log_lines(&fx.apns), lines + 1);

	assert_int_equal(apns_try(&fx.apns_reset, jwt), CURLE_OK);
	lines = log_lines(&fx.apns_reset);
	th_mock_outage(&fx.apns_reset, 1);
	rc = apns_try(&fx.apns_reset, jwt);
	if (rc == CURLE_OK)
		fail_msg("answered during a reset outage");
	/* Accepted, then reset: libcurl may call that either way. */
	assert_int_equal(tcp_probe(fx.apns_reset.port), 0);
	th_mock_outage(&fx.apns_reset, 0);
	assert_int_equal(tcp_probe(fx.apns_reset.port), 1);
	assert_int_equal(apns_try(&fx.apns_reset, jwt), CURLE_OK);
	assert_int_equal(log_lines(&fx.apns_reset), lines + 1);

	th_mock_outage(&fx.apns_ra, 1);
	assert_int_equal(apns_status(&fx.apns_ra, "0123abcd", jwt, reason, ra), 503);
	assert_string_equal(reason, "ServiceUnavailable");
	assert_string_equal(ra, "120");
	/* The checks still come first. */
	assert_int_equal(apns_status(&fx.apns_ra, "0123abcd", NULL, reason, ra), 403);
	assert_string_equal(reason, "MissingProviderToken");
	th_mock_outage(&fx.apns_ra, 0);
	assert_int_equal(apns_status(&fx.apns_ra, "0123abcd", jwt, reason, ra), 200);
	free(jwt);
}

/* ---- FCM -------------------------------------------------------------------------------- */

/* POST /token with a form body. */
static void fcm_token(const struct th_mock *m, struct hres *r, const char *form)
{
	char url[128];
	const char *const hdrs[] = { "content-type: application/x-www-form-urlencoded", NULL };

	snprintf(url, sizeof(url), "%s/token", m->base);
	h2(r, "POST", url, hdrs, form, -1);
}

static char *fcm_access_token(const struct th_mock *m, const char *scope)
{
	long now = (long)time(NULL);
	char *a = sa_assertion(fx.rsa, SA_EMAIL, scope, "127.0.0.1", m->port, now, now + 3600);
	char form[4096];
	struct hres r;
	char *tok;

	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", a);
	fcm_token(m, &r, form);
	assert_int_equal(r.status, 200);
	tok = strdup(json_string_value(json_object_get(r.json, "access_token")));
	hres_release(&r);
	free(a);
	return tok;
}

static void oauth_expect(const char *form, const char *error, const char *description_start)
{
	struct hres r;
	const char *d;

	fcm_token(&fx.fcm, &r, form);
	assert_int_equal(r.status, 400);
	assert_non_null(r.json);
	assert_string_equal(json_string_value(json_object_get(r.json, "error")), error);
	d = json_string_value(json_object_get(r.json, "error_description"));
	assert_non_null(d);
	if (strncmp(d, description_start, strlen(description_start)) != 0)
		fail_msg("error_description '%s', wanted '%s...'", d, description_start);
	hres_release(&r);
}

static void test_fcm_token_endpoint(void **state)
{
	long now = (long)time(NULL);
	char *good = sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port, now,
				  now + 3600);
	char *host =
		sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "localhost", fx.fcm.port, now, now + 600);
	char *bad_sig = sa_assertion(fx.rsa_other, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port,
				     now, now + 3600);
	char *too_long = sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port, now,
				      now + 3601);
	char *past = sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port, now - 7200,
				  now - 3600);
	char *future = sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port,
				    now + 600, now + 1200);
	char *bad_aud = sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port + 1, now,
				     now + 3600);
	char *bad_iss = sa_assertion(fx.rsa, "other@x.iam.gserviceaccount.com", SCOPE_FCM,
				     "127.0.0.1", fx.fcm.port, now, now + 3600);
	char form[4096];
	struct hres r;
	json_t *line, *claims;

	(void)state;
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", good);
	fcm_token(&fx.fcm, &r, form);
	assert_int_equal(r.status, 200);
	assert_true(strncmp(json_string_value(json_object_get(r.json, "access_token")),
			    "ya29.mock-", 10) == 0);
	assert_int_equal(json_integer_value(json_object_get(r.json, "expires_in")), 3600);
	assert_string_equal(json_string_value(json_object_get(r.json, "token_type")), "Bearer");
	hres_release(&r);
	line = last_log_line(&fx.fcm);
	claims = json_object_get(line, "claims");
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), SA_EMAIL);
	assert_string_equal(json_string_value(json_object_get(claims, "scope")), SCOPE_FCM);
	assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
	json_decref(line);

	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", host);
	fcm_token(&fx.fcm, &r, form);
	assert_int_equal(r.status, 200);
	hres_release(&r);

	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", bad_sig);
	oauth_expect(form, "invalid_grant", "Invalid JWT Signature.");
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", too_long);
	oauth_expect(form, "invalid_grant",
		     "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
		     "reasonable timeframe");
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", past);
	oauth_expect(form, "invalid_grant", "Invalid JWT: Token must be a short-lived token");
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", future);
	oauth_expect(form, "invalid_grant", "Invalid JWT: Token must be a short-lived token");
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", bad_aud);
	oauth_expect(form, "invalid_grant", "Invalid JWT");
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", bad_iss);
	oauth_expect(form, "invalid_grant", "Invalid grant");
	snprintf(form, sizeof(form), "grant_type=client_credentials&assertion=%s", good);
	oauth_expect(form, "unsupported_grant_type", "Invalid grant_type");
	free(good);
	free(host);
	free(bad_sig);
	free(too_long);
	free(past);
	free(future);
	free(bad_aud);
	free(bad_iss);
}

/* POST a send to @m's project @project with @access (NULL: no header). */
static void fcm_send_to(const struct th_mock *m, struct hres *r, const char *project,
			const char *access, const char *body)
{
	char url[256], auth[256];
	const char *hdrs[3] = { "content-type: application/json", NULL, NULL };

	if (access) {
		snprintf(auth, sizeof(auth), "authorization: Bearer %s", access);
		hdrs[1] = auth;
	}
	snprintf(url, sizeof(url), "%s/v1/projects/%s/messages:send", m->base, project);
	h2(r, "POST", url, hdrs, body, -1);
}

/* The body is Google's error: code, message, status; an FcmError detail with
 * @fcm_code (NULL: none at all); a BadRequest with field violations if
 * @bad_request. */
static void check_google_error(const struct hres *r, int code, const char *status,
			       const char *fcm_code, int bad_request)
{
	json_t *err = json_object_get(r->json, "error"), *details, *d;
	const char *fcm_seen = NULL;
	int violations = 0;
	size_t i;

	if (r->status != code)
		fail_msg("status %ld, wanted %d: %s", r->status, code, r->body);
	assert_true(json_is_object(err));
	assert_int_equal(json_integer_value(json_object_get(err, "code")), code);
	assert_string_equal(json_string_value(json_object_get(err, "status")), status);
	assert_true(json_string_length(json_object_get(err, "message")) > 0);
	details = json_object_get(err, "details");
	json_array_foreach(details, i, d)
	{
		const char *type = json_string_value(json_object_get(d, "@type"));

		assert_non_null(type);
		if (strcmp(type, FCM_ERROR_TYPE) == 0)
			fcm_seen = json_string_value(json_object_get(d, "errorCode"));
		if (strcmp(type, BAD_REQUEST_TYPE) == 0)
			violations += (int)json_array_size(json_object_get(d, "fieldViolations"));
	}
	if (fcm_code) {
		assert_non_null(fcm_seen);
		assert_string_equal(fcm_seen, fcm_code);
	} else {
		assert_null(fcm_seen);
	}
	if (bad_request)
		assert_true(violations > 0);
}

static char *send_body(const char *token, const char *extra)
{
	char *b = malloc(8192);

	assert_non_null(b);
	snprintf(b, 8192, "{\"message\":{\"token\":\"%s\",\"data\":{\"k\":\"v\"}%s}}", token,
		 extra ? extra : "");
	return b;
}

static void fcm_ok(const char *access, const char *token)
{
	char *body = send_body(token, NULL);
	struct hres r;
	const char *name;

	fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
	if (r.status != 200)
		fail_msg("token %s: status %ld: %s", token, r.status, r.body);
	name = json_string_value(json_object_get(r.json, "name"));
	assert_non_null(name);
	assert_true(strncmp(name, "projects/" PROJECT "/messages/", 27) == 0);
	hres_release(&r);
	free(body);
}

static void test_fcm_send_auth(void **state)
{
	char *access = fcm_access_token(&fx.fcm, SCOPE_FCM);
	char *cloud = fcm_access_token(&fx.fcm, "https://www.googleapis.com/auth/cloud-platform");
	char *narrow = fcm_access_token(&fx.fcm, "https://www.googleapis.com/auth/userinfo.email");
	char *expired = fcm_access_token(&fx.fcm_short, SCOPE_FCM);
	char *body = send_body("device-1", NULL), *www;
	struct hres r;
	json_t *line;

	(void)state;
	fcm_ok(access, "device-1");
	fcm_ok(cloud, "device-1");
	line = last_log_line(&fx.fcm);
	assert_string_equal(json_string_value(json_object_get(line, "access_token")), cloud);
	assert_string_equal(json_string_value(json_object_get(line, "token")), "device-1");
	assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
	json_decref(line);

	fcm_send_to(&fx.fcm, &r, PROJECT, NULL, body);
	check_google_error(&r, 401, "UNAUTHENTICATED", NULL, 0);
	www = hres_header(&r, "www-authenticate");
	assert_non_null(www);
	assert_true(strncmp(www, "Bearer", 6) == 0);
	free(www);
	hres_release(&r);
	fcm_send_to(&fx.fcm, &r, PROJECT, "ya29.forged", body);
	check_google_error(&r, 401, "UNAUTHENTICATED", NULL, 0);
	hres_release(&r);
	/* --token-ttl 0: the token is expired as soon as it is issued. */
	fcm_send_to(&fx.fcm_short, &r, PROJECT, expired, body);
	check_google_error(&r, 401, "UNAUTHENTICATED", NULL, 0);
	hres_release(&r);

	fcm_send_to(&fx.fcm, &r, "other-project", access, body);
	check_google_error(&r, 403, "PERMISSION_DENIED", NULL, 0);
	hres_release(&r);
	fcm_send_to(&fx.fcm, &r, PROJECT, narrow, body);
	check_google_error(&r, 403, "PERMISSION_DENIED", NULL, 0);
	hres_release(&r);
	free(access);
	free(cloud);
	free(narrow);
	free(expired);
	free(body);
}

static void fcm_invalid(const char *access, const char *body, int with_fcm_error)
{
	struct hres r;

	fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
	check_google_error(&r, 400, "INVALID_ARGUMENT", with_fcm_error ? "INVALID_ARGUMENT" : NULL,
			   1);
	hres_release(&r);
}

static void test_fcm_validation(void **state)
{
	static const char prefix[] = "{\"message\":{\"token\":\"a\",\"data\":{\"k\":\"";
	char *access = fcm_access_token(&fx.fcm, SCOPE_FCM);
	char big[6000], *body;
	struct hres r;

	(void)state;
	fcm_invalid(access, "not json", 0);
	fcm_invalid(access, "{\"message\":{\"data\":{\"k\":\"v\"}}}", 1);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"topic\":\"news\"}}", 0);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"data\":{\"k\":1}}}", 0);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"data\":{\"from\":\"x\"}}}", 1);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"data\":{\"gcm\":\"x\"}}}", 1);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"data\":{\"google.x\":\"x\"}}}", 1);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"bogus\":1}}", 0);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\"},\"validate_only\":\"yes\"}", 0);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"android\":{\"priority\":\"urgent\"}}}",
		    0);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"android\":{\"ttl\":\"3600\"}}}", 0);
	fcm_invalid(access, "{\"message\":{\"token\":\"a\",\"android\":{\"ttl\":\"2419201s\"}}}",
		    1);
	memset(big, 'v', sizeof(big));
	memcpy(big, prefix, strlen(prefix));
	memcpy(big + strlen(prefix) + 4096, "\"}}}", 5);
	fcm_invalid(access, big, 1);

	/* Just inside the limits: 1 + 4095 bytes of data. */
	memcpy(big + strlen(prefix) + 4095, "\"}}}", 5);
	fcm_send_to(&fx.fcm, &r, PROJECT, access, big);
	assert_int_equal(r.status, 200);
	hres_release(&r);
	body = send_body("device-2", ",\"android\":{\"priority\":\"high\",\"collapse_key\":\"c\","
				     "\"ttl\":\"2419200s\"}");
	fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
	assert_int_equal(r.status, 200);
	hres_release(&r);
	free(body);
	body = send_body("device-2", ",\"android\":{\"priority\":\"normal\",\"ttl\":\"3.5s\"}");
	fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
	assert_int_equal(r.status, 200);
	hres_release(&r);
	free(body);
	fcm_send_to(&fx.fcm, &r, PROJECT, access,
		    "{\"message\":{\"token\":\"device-3\"},\"validate_only\":true}");
	assert_int_equal(r.status, 200);
	assert_string_equal(json_string_value(json_object_get(r.json, "name")),
			    "projects/" PROJECT "/messages/fake_message_id");
	hres_release(&r);
	free(access);
}

static void fcm_error_expect(const char *access, const char *token, int code, const char *status,
			     const char *fcm_code, int retry_after)
{
	char *body = send_body(token, NULL), *ra;
	struct hres r;

	fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
	check_google_error(&r, code, status, fcm_code, 0);
	ra = hres_header(&r, "retry-after");
	if (retry_after) {
		assert_non_null(ra);
		assert_string_equal(ra, "1");
	} else {
		assert_null(ra);
	}
	free(ra);
	hres_release(&r);
	free(body);
}

static void test_fcm_token_behaviours(void **state)
{
	char *access = fcm_access_token(&fx.fcm, SCOPE_FCM);
	char *body = send_body("unregistered-1", NULL);
	struct hres r;
	json_t *line;

	(void)state;
	fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
	check_google_error(&r, 404, "NOT_FOUND", "UNREGISTERED", 0);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
		"Requested entity was not found.");
	hres_release(&r);
	line = last_log_line(&fx.fcm);
	assert_string_equal(json_string_value(json_object_get(line, "error_code")), "UNREGISTERED");
	json_decref(line);
	fcm_send_to(&fx.fcm, &r, PROJECT, access, "{\"message\":{\"token\":\"invalid-1\"}}");
	check_google_error(&r, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", 0);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
		"The registration token is not a valid FCM registration token");
	hres_release(&r);
	fcm_error_expect(access, "mismatch-1", 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", 0);

	fcm_error_expect(access, "quota1-a", 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", 1);
	fcm_ok(access, "quota1-a");
	fcm_error_expect(access, "unavail2-a", 503, "UNAVAILABLE", "UNAVAILABLE", 1);
	fcm_error_expect(access, "unavail2-a", 503, "UNAVAILABLE", "UNAVAILABLE", 1);
	fcm_ok(access, "unavail2-a");
	fcm_error_expect(access, "internal1-a", 500, "INTERNAL", "INTERNAL", 0);
	fcm_ok(access, "internal1-a");
	free(body);
	free(access);
}

/* A message FCM finds too big: 400 about the message, not the token. */
static void test_fcm_rejection(void **state)
{
	char *access = fcm_access_token(&fx.fcm, SCOPE_FCM);
	char *body = send_body("toobig-1", NULL);
	json_t *v;
	struct hres r;

	(void)state;
	for (int i = 0; i < 2; i++) {
		fcm_send_to(&fx.fcm, &r, PROJECT, access, body);
		check_google_error(&r, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", 1);
		v = json_object_get(json_object_get(r.json, "error"), "details");
		for (size_t k = 0; k < json_array_size(v); k++) {
			json_t *fv = json_object_get(json_array_get(v, k), "fieldViolations");

			if (fv)
				assert_string_equal(json_string_value(json_object_get(
							    json_array_get(fv, 0), "field")),
						    "message");
		}
		hres_release(&r);
	}
	free(body);
	free(access);
}

/* The status of a send of a message to @token on @m; Retry-After into @ra. */
static long fcm_status(const struct th_mock *m, const char *access, const char *token, char ra[16])
{
	char *body = send_body(token, NULL), *v;
	struct hres r;
	long st;

	fcm_send_to(m, &r, PROJECT, access, body);
	st = r.status;
	v = hres_header(&r, "retry-after");
	snprintf(ra, 16, "%s", v ? v : "");
	free(v);
	hres_release(&r);
	free(body);
	return st;
}

/*
 * --retry-after 120 on 429 and 503; an outage of kind unavailable answers
 * sends 503 while /token keeps working; --goaway-after 3 closes each
 * connection after its third request.
 */
static void test_fcm_retry_after_outage_goaway(void **state)
{
	char *access = fcm_access_token(&fx.fcm_ra, SCOPE_FCM), *again, ra[16];
	json_t *all, *line;
	long maxconn = 0;
	size_t i;

	(void)state;
	assert_int_equal(fcm_status(&fx.fcm_ra, access, "quota1-a", ra), 429);
	assert_string_equal(ra, "120");
	line = last_log_line(&fx.fcm_ra);
	assert_string_equal(json_string_value(json_object_get(line, "retry_after")), "120");
	assert_true(json_is_integer(json_object_get(line, "ts_ms")));
	json_decref(line);
	assert_int_equal(fcm_status(&fx.fcm_ra, access, "unavail1-a", ra), 503);
	assert_string_equal(ra, "120");
	assert_int_equal(fcm_status(&fx.fcm_ra, access, "internal1-a", ra), 500);
	assert_string_equal(ra, "");
	assert_int_equal(fcm_status(&fx.fcm_ra, access, "quota1-a", ra), 200);

	th_mock_outage(&fx.fcm_ra, 1);
	assert_int_equal(fcm_status(&fx.fcm_ra, access, "device-1", ra), 503);
	assert_string_equal(ra, "120");
	line = last_log_line(&fx.fcm_ra);
	assert_string_equal(json_string_value(json_object_get(line, "error_code")), "UNAVAILABLE");
	json_decref(line);
	again = fcm_access_token(&fx.fcm_ra, SCOPE_FCM);
	th_mock_outage(&fx.fcm_ra, 0);
	assert_int_equal(fcm_status(&fx.fcm_ra, again, "device-1", ra), 200);

	all = th_mock_log(&fx.fcm_ra);
	json_array_foreach(all, i, line)
	{
		long c = (long)json_integer_value(json_object_get(line, "conn"));

		assert_true(json_integer_value(json_object_get(line, "seq")) <= 3);
		if (c > maxconn)
			maxconn = c;
	}
	assert_true(maxconn >= (long)(json_array_size(all) + 2) / 3);
	json_decref(all);
	free(again);
	free(access);
}

/* An outage of kind refuse takes the token endpoint away too. */
static void test_fcm_outage_refuse(void **state)
{
	long now = (long)time(NULL);
	char *a = sa_assertion(fx.rsa, SA_EMAIL, SCOPE_FCM, "127.0.0.1", fx.fcm.port, now,
			       now + 3600);
	char form[4096], url[128], *access;
	const char *const hdrs[] = { "content-type: application/x-www-form-urlencoded", NULL };
	struct hres r;

	(void)state;
	snprintf(form, sizeof(form), "grant_type=" GRANT "&assertion=%s", a);
	snprintf(url, sizeof(url), "%s/token", fx.fcm.base);
	th_mock_outage(&fx.fcm, 1);
	assert_int_equal(h2_try(&r, "POST", url, hdrs, form, -1), CURLE_COULDNT_CONNECT);
	th_mock_outage(&fx.fcm, 0);
	access = fcm_access_token(&fx.fcm, SCOPE_FCM);
	fcm_ok(access, "device-1");
	free(access);
	free(a);
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int setup(void **state)
{
	char *ec_pub, *rsa_pub;

	(void)state;
	th_mock_cert(&fx.cert, &fx.key);
	fx.ec = EVP_EC_gen("P-256");
	fx.ec_other = EVP_EC_gen("P-256");
	fx.rsa = EVP_RSA_gen(2048);
	fx.rsa_other = EVP_RSA_gen(2048);
	if (!fx.ec || !fx.ec_other || !fx.rsa || !fx.rsa_other)
		fail_msg("cannot generate keys");
	ec_pub = th_key_file(fx.ec, "authkey.pub", 0);
	rsa_pub = th_key_file(fx.rsa, "sa.pub", 0);
	th_mock_start(&fx.apns, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--topic", TOPIC, "--unregistered-ts", UNREG_TS,
					NULL });
	th_mock_start(&fx.apns_goaway, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--goaway-after", "2", NULL });
	th_mock_start(&fx.fcm, "mock_fcm",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
					"--project-id", PROJECT, NULL });
	th_mock_start(&fx.apns_ra, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--retry-after", "120", "--outage", "unavailable",
					NULL });
	th_mock_start(&fx.apns_reset, "mock_apns",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--auth-key", ec_pub, "--key-id", KEY_ID, "--team-id",
					TEAM_ID, "--outage", "reset", NULL });
	th_mock_start(&fx.fcm_ra, "mock_fcm",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
					"--project-id", PROJECT, "--retry-after", "120", "--outage",
					"unavailable", "--goaway-after", "3", NULL });
	th_mock_start(&fx.fcm_short, "mock_fcm",
		      (const char *[]){ "--port", "0", "--cert", fx.cert, "--key", fx.key,
					"--sa-pubkey", rsa_pub, "--client-email", SA_EMAIL,
					"--project-id", PROJECT, "--token-ttl", "0", NULL });
	fx.curl = curl_easy_init();
	assert_non_null(fx.curl);
	unlink(ec_pub);
	unlink(rsa_pub);
	free(ec_pub);
	free(rsa_pub);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	curl_easy_cleanup(fx.curl);
	th_mock_stop(&fx.apns);
	th_mock_stop(&fx.apns_goaway);
	th_mock_stop(&fx.fcm);
	th_mock_stop(&fx.fcm_short);
	th_mock_stop(&fx.apns_ra);
	th_mock_stop(&fx.apns_reset);
	th_mock_stop(&fx.fcm_ra);
	EVP_PKEY_free(fx.ec);
	EVP_PKEY_free(fx.ec_other);
	EVP_PKEY_free(fx.rsa);
	EVP_PKEY_free(fx.rsa_other);
	unlink(fx.cert);
	unlink(fx.key);
	free(fx.cert);
	free(fx.key);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apns_success),
		cmocka_unit_test(test_apns_provider_token),
		cmocka_unit_test(test_apns_method_and_path),
		cmocka_unit_test(test_apns_headers),
		cmocka_unit_test(test_apns_payload),
		cmocka_unit_test(test_apns_token_behaviours),
		cmocka_unit_test(test_apns_streams),
		cmocka_unit_test(test_apns_goaway),
		cmocka_unit_test(test_apns_goaway_concurrent),
		cmocka_unit_test(test_apns_transient_and_rejections),
		cmocka_unit_test(test_apns_retry_after),
		cmocka_unit_test(test_apns_outages),
		cmocka_unit_test(test_fcm_token_endpoint),
		cmocka_unit_test(test_fcm_send_auth),
		cmocka_unit_test(test_fcm_validation),
		cmocka_unit_test(test_fcm_token_behaviours),
		cmocka_unit_test(test_fcm_rejection),
		cmocka_unit_test(test_fcm_retry_after_outage_goaway),
		cmocka_unit_test(test_fcm_outage_refuse),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests_name("mock_push", tests, setup, teardown);
}
