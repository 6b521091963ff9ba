/*
 * jwt.c - compact JWS tokens for APNs (ES256) and Google OAuth 2.0 (RS256).
 *
 * A token is base64url(header) "." base64url(claims) "." base64url(sig).
 * Header and claims are jansson objects dumped compact and in insertion
 * order, so strings are escaped as JSON requires whatever the configuration
 * holds. The signature covers the first two parts, as ASCII.
 *
 * ES256: OpenSSL's ECDSA gives a DER SEQUENCE { r, s }; JWS wants r and s
 * as two 32-byte big-endian numbers, left-padded (RFC 7518 §3.4). A DER
 * signature is what APNs answers with 403 InvalidProviderToken.
 *
 * The provider-token cache follows Apple's rules: tokens older than an hour
 * are refused (ExpiredProviderToken), and re-minting more often than every
 * 20 minutes is answered with 429 TooManyProviderTokenUpdates.
 *
 * Secrets: the finished token is cleansed before it is freed; nothing here
 * logs.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

#include "push/jwt.h"
#include "common/banned.h"

/* The JSON documents here are a few hundred bytes; this bounds them. */
#define JWT_MAX_PART 4096
/* r and s of a P-256 signature, each. */
#define ES256_HALF 32

static const char b64url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t push_b64url(const void *in, size_t len, char *out, size_t cap)
{
	const unsigned char *p = in;
	size_t need, i, o = 0;
	uint32_t v;

	if (!out || cap == 0)
		return 0;
	need = PUSH_B64URL_LEN(len);
	if (len > (SIZE_MAX - 4) / 4 * 3 || need >= cap) {
		out[0] = '\0';
		return 0;
	}
	for (i = 0; i + 3 <= len; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
		out[o++] = b64url_alphabet[v >> 6 & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)p[i] << 16;
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
	} else if (len - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
		out[o++] = b64url_alphabet[v >> 6 & 63];
	}
	out[o] = '\0';
	return o;
}

int push_jwt_key_is_p256(const EVP_PKEY *key)
{
	char name[80];
	size_t n = 0;
	int nid;

	if (!key || !EVP_PKEY_is_a(key, "EC"))
		return 0;
	if (EVP_PKEY_get_group_name(key, name, sizeof(name), &n) != 1 || n == 0)
		return 0;
	nid = OBJ_sn2nid(name);
	if (nid == NID_undef)
		nid = EC_curve_nist2nid(name);
	return nid == NID_X9_62_prime256v1;
}

/* A failed json_pack_ex: out of memory, or a string that is not UTF-8. */
static enum ferry_err pack_error(const json_error_t *jerr)
{
	return json_error_code(jerr) == json_error_out_of_memory ? FERRY_ENOMEM : FERRY_EINVAL;
}

/* Turn @der (an ECDSA-Sig-Value) into r || s in @rs. */
static enum ferry_err der_to_rs(const unsigned char *der, size_t len,
				unsigned char rs[2 * ES256_HALF])
{
	const unsigned char *p = der;
	const BIGNUM *r, *s;
	ECDSA_SIG *sig;
	enum ferry_err rc = FERRY_EIO;

	sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	if (!sig) {
		ERR_clear_error();
		return FERRY_EIO;
	}
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, rs, ES256_HALF) == ES256_HALF &&
	    BN_bn2binpad(s, rs + ES256_HALF, ES256_HALF) == ES256_HALF)
		rc = FERRY_OK;
	ECDSA_SIG_free(sig);
	return rc;
}

/* Sign @len bytes of @tbs with @key and SHA-256; *sig is malloc'ed. */
static enum ferry_err sign(EVP_PKEY *key, const char *tbs, size_t len, unsigned char **sig,
			   size_t *siglen)
{
	enum ferry_err rc = FERRY_EIO;
	EVP_MD_CTX *md;
	size_t n = 0;

	*sig = NULL;
	md = EVP_MD_CTX_new();
	if (!md)
		return FERRY_ENOMEM;
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, NULL, &n, (const unsigned char *)tbs, len) != 1 || n == 0)
		goto free_md;
	*sig = malloc(n);
	if (!*sig) {
		rc = FERRY_ENOMEM;
		goto free_md;
	}
	if (EVP_DigestSign(md, *sig, &n, (const unsigned char *)tbs, len) != 1) {
		free(*sig);
		*sig = NULL;
		goto free_md;
	}
	*siglen = n;
	rc = FERRY_OK;
free_md:
	EVP_MD_CTX_free(md);
	if (rc)
		ERR_clear_error();
	return rc;
}

/*
 * Dump @header and @claims (borrowed), sign them with @key and put the
 * token in *out. @es256: re-encode the signature as r || s.
 */
static enum ferry_err mint(EVP_PKEY *key, json_t *header, json_t *claims, int es256, char **out)
{
	unsigned char *sig = NULL, rs[2 * ES256_HALF];
	char *h, *c = NULL, *tok = NULL;
	size_t hl, cl, siglen = 0, cap, n;
	const unsigned char *s;
	enum ferry_err rc = FERRY_ENOMEM;

	h = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!h)
		goto done;
	c = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!c)
		goto done;
	hl = strlen(h);
	cl = strlen(c);
	if (hl > JWT_MAX_PART || cl > JWT_MAX_PART) {
		rc = FERRY_ETOOBIG;
		goto done;
	}
	/* The signature part is at most EVP_PKEY_get_size() bytes before encoding. */
	cap = PUSH_B64URL_LEN(hl) + 1 + PUSH_B64URL_LEN(cl) + 1 +
	      PUSH_B64URL_LEN((size_t)EVP_PKEY_get_size(key) + 2 * ES256_HALF) + 1;
	tok = malloc(cap);
	if (!tok)
		goto done;
	n = push_b64url(h, hl, tok, cap);
	tok[n++] = '.';
	n += push_b64url(c, cl, tok + n, cap - n);
	rc = sign(key, tok, n, &sig, &siglen);
	if (rc)
		goto done;
	s = sig;
	if (es256) {
		rc = der_to_rs(sig, siglen, rs);
		if (rc)
			goto done;
		s = rs;
		siglen = sizeof(rs);
	}
	tok[n++] = '.';
	if (push_b64url(s, siglen, tok + n, cap - n) != PUSH_B64URL_LEN(siglen)) {
		rc = FERRY_EIO;
		goto done;
	}
	*out = tok;
	tok = NULL;
	rc = FERRY_OK;
done:
	free(tok);
	free(sig);
	free(c);
	free(h);
	return rc;
}

enum ferry_err push_jwt_es256(EVP_PKEY *key, const char *key_id, const char *team_id, int64_t iat,
			      char **out)
{
	json_t *header = NULL, *claims = NULL;
	json_error_t jerr;
	enum ferry_err rc;

	if (!out)
		return FERRY_EINVAL;
	*out = NULL;
	if (!key || !key_id || !team_id || !push_jwt_key_is_p256(key))
		return FERRY_EINVAL;
	header = json_pack_ex(&jerr, 0, "{s:s, s:s}", "alg", "ES256", "kid", key_id);
	if (!header)
		return pack_error(&jerr);
	claims = json_pack_ex(&jerr, 0, "{s:s, s:I}", "iss", team_id, "iat", (json_int_t)iat);
	if (!claims) {
		rc = pack_error(&jerr);
		goto free_header;
	}
	rc = mint(key, header, claims, 1, out);
	json_decref(claims);
free_header:
	json_decref(header);
	return rc;
}

enum ferry_err push_jwt_rs256(EVP_PKEY *key, const char *key_id, const char *iss, const char *scope,
			      const char *aud, int64_t iat, int64_t exp, char **out)
{
	json_t *header = NULL, *claims = NULL;
	json_error_t jerr;
	enum ferry_err rc;

	if (!out)
		return FERRY_EINVAL;
	*out = NULL;
	if (!key || !iss || !scope || !aud || exp <= iat || !EVP_PKEY_is_a(key, "RSA"))
		return FERRY_EINVAL;
	/* s* leaves the kid member out when key_id is NULL. */
	header = json_pack_ex(&jerr, 0, "{s:s, s:s, s:s*}", "alg", "RS256", "typ", "JWT", "kid",
			      key_id);
	if (!header)
		return pack_error(&jerr);
	claims = json_pack_ex(&jerr, 0, "{s:s, s:s, s:s, s:I, s:I}", "iss", iss, "scope", scope,
			      "aud", aud, "iat", (json_int_t)iat, "exp", (json_int_t)exp);
	if (!claims) {
		rc = pack_error(&jerr);
		goto free_header;
	}
	rc = mint(key, header, claims, 0, out);
	json_decref(claims);
free_header:
	json_decref(header);
	return rc;
}

static void clear_free_str(char *s)
{
	if (s)
		OPENSSL_clear_free(s, strlen(s));
}

enum ferry_err push_jwt_cache_get(struct push_jwt_cache *c, EVP_PKEY *key, const char *key_id,
				  const char *team_id, int64_t now, int64_t min_age,
				  int64_t max_age, int force, const char **jwt)
{
	int64_t age, renew_at = max_age > min_age ? max_age : min_age;
	int renew = 0, forced = 0;
	enum ferry_err rc;
	char *tok;

	if (!jwt)
		return FERRY_EINVAL;
	*jwt = NULL;
	if (!c || min_age < 0 || max_age < 1)
		return FERRY_EINVAL;
	if (!c->jwt) {
		renew = 1;
	} else {
		age = now - c->iat;
		if (age < 0 || age >= renew_at)
			renew = 1;
		else if (force && age >= PUSH_JWT_FORCE_INTERVAL &&
			 now - c->last_force >= PUSH_JWT_FORCE_INTERVAL)
			renew = forced = 1;
	}
	if (renew) {
		rc = push_jwt_es256(key, key_id, team_id, now, &tok);
		if (rc)
			return rc;
		clear_free_str(c->jwt);
		c->jwt = tok;
		c->iat = now;
		if (forced)
			c->last_force = now;
	}
	*jwt = c->jwt;
	return FERRY_OK;
}

void push_jwt_cache_release(struct push_jwt_cache *c)
{
	if (!c)
		return;
	clear_free_str(c->jwt);
	c->jwt = NULL;
	c->iat = 0;
	c->last_force = 0;
}
