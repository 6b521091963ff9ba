/*
 * jwt.h - the signed tokens of the push providers.
 *
 * APNs token auth wants a provider token: a JWS signed with ES256 by the
 * team's .p8 key, re-minted every 20 to 60 minutes. FCM wants an OAuth 2.0
 * access token, obtained by posting a JWT assertion signed with RS256 by the
 * service account's key. Both are compact JWS: base64url(header) "."
 * base64url(claims) "." base64url(signature), without padding. Header and
 * claims are built with jansson, so every string is escaped as JSON wants.
 *
 * Secrets: a token is a credential. Never log one (log its iat, or a short
 * hash, if anything); free it with OPENSSL_clear_free when done.
 *
 * Threading: the functions are reentrant; a struct push_jwt_cache belongs to
 * one thread (the push thread's).
 */
#ifndef FERRY_PUSH_JWT_H
#define FERRY_PUSH_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/err.h"

/* Forced re-mints of a provider token are at least this many seconds apart. */
#define PUSH_JWT_FORCE_INTERVAL 60

/* Bytes push_b64url() writes for @n input bytes, without the NUL. */
#define PUSH_B64URL_LEN(n) ((n) / 3 * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/*
 * Whether @key (borrowed) can sign ES256: an EC key on the named curve
 * P-256 (prime256v1). 1 if so, else 0.
 */
int push_jwt_key_is_p256(const EVP_PKEY *key);

/*
 * Encode @len bytes of @in as base64url without padding (RFC 4648 §5) into
 * @out, NUL-terminated. Returns the length written without the NUL, or 0 if
 * @cap is too small (PUSH_B64URL_LEN(len) + 1 is enough); an empty input
 * gives "" and returns 0 too. @in may be NULL when @len is 0.
 */
size_t push_b64url(const void *in, size_t len, char *out, size_t cap);

/*
 * Mint an APNs provider token: header {"alg":"ES256","kid":@key_id}, claims
 * {"iss":@team_id,"iat":@iat}, signed with @key (EC P-256, borrowed), the
 * signature encoded as JWS wants it: r || s, 32 bytes each (RFC 7518 §3.4),
 * not DER. On success *out is a malloc'ed NUL-terminated string, the
 * caller's. Returns FERRY_EINVAL for a NULL argument, a key that is not EC
 * P-256, or a string that is not UTF-8; FERRY_ENOMEM; FERRY_EIO if OpenSSL
 * fails to sign. *out is NULL on failure.
 */
enum ferry_err push_jwt_es256(EVP_PKEY *key, const char *key_id, const char *team_id, int64_t iat,
			      char **out) FERRY_WUR;

/*
 * Mint a Google OAuth 2.0 assertion: header {"alg":"RS256","typ":"JWT",
 * "kid":@key_id} (no kid if @key_id is NULL), claims {"iss":@iss,"scope":
 * @scope,"aud":@aud,"iat":@iat,"exp":@exp}, signed RSASSA-PKCS1-v1_5 with
 * SHA-256 by @key (RSA, borrowed). *out as for push_jwt_es256(). Returns
 * FERRY_EINVAL for a NULL argument (but @key_id), a key that is not RSA,
 * @exp not after @iat, or a string that is not UTF-8; FERRY_ENOMEM;
 * FERRY_EIO if OpenSSL fails to sign.
 */
enum ferry_err push_jwt_rs256(EVP_PKEY *key, const char *key_id, const char *iss, const char *scope,
			      const char *aud, int64_t iat, int64_t exp, char **out) FERRY_WUR;

/*
 * The provider token of one APNs key, re-minted as Apple wants: not more
 * often than every 20 minutes, and before it is an hour old. Zero it to
 * initialise ({ 0 }); push_jwt_cache_release() frees it. Not thread-safe:
 * one per push thread.
 *
 *   jwt         the current token (malloc'ed), NULL before the first get
 *   iat         its iat, seconds since the Epoch
 *   last_force  when a forced get last re-minted, 0 never
 */
struct push_jwt_cache {
	char *jwt;
	int64_t iat;
	int64_t last_force;
};

/*
 * Set *@jwt to the cached provider token, minting a new one (iat = @now)
 * when there is none yet, when the current one is at least
 * max(@min_age, @max_age) seconds old, or when @now lies before its iat
 * (the clock was stepped back). With @force (after a 403
 * ExpiredProviderToken) it is re-minted even if younger than @min_age, but
 * only if it is at least PUSH_JWT_FORCE_INTERVAL seconds old and no forced
 * re-mint happened in the last PUSH_JWT_FORCE_INTERVAL seconds; otherwise
 * the current token is returned.
 *
 * *@jwt is borrowed from the cache until the next get or the release.
 * @key, @key_id and @team_id are borrowed for the call, as for
 * push_jwt_es256(). Returns FERRY_EINVAL for a negative @min_age or a
 * @max_age below 1, or what push_jwt_es256() returns; on failure *@jwt is
 * NULL and the cache keeps its previous token.
 */
enum ferry_err push_jwt_cache_get(struct push_jwt_cache *c, EVP_PKEY *key, const char *key_id,
				  const char *team_id, int64_t now, int64_t min_age,
				  int64_t max_age, int force, const char **jwt) FERRY_WUR;

/* Free the cached token (its memory cleansed); the cache is empty again. */
void push_jwt_cache_release(struct push_jwt_cache *c);

#endif
