/*
 * jwt.h - what the mock push providers need of JSON Web Tokens (RFC 7519):
 * base64url, splitting a compact JWS, and verifying ES256 (APNs provider
 * tokens) and RS256 (Google service-account assertions) signatures.
 *
 * Nothing here checks claims: each mock applies its provider's rules.
 */
#ifndef FERRY_TESTS_MOCK_JWT_H
#define FERRY_TESTS_MOCK_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

/* The largest token accepted, in bytes. */
#define JWT_MAX_TOKEN 8192

struct jwt {
	json_t *header; /* owned */
	json_t *claims; /* owned */
	uint8_t *sig;	/* owned, decoded signature */
	size_t sig_len;
	char *signing_input; /* owned, "<header>.<claims>" as sent */
};

/* Decode base64url without padding (padding is rejected, as RFC 7515 asks).
 * Returns a malloc'ed buffer (NUL-terminated) and its length, or NULL. */
uint8_t *jwt_b64url_decode(const char *in, size_t len, size_t *out_len);

/* Split and decode a compact JWS; 0 on success, -1 if it is not one (both
 * halves must be JSON objects). @j is zeroed first; jwt_release() it. */
int jwt_parse(const char *token, struct jwt *j);

void jwt_release(struct jwt *j);

/* 1 if the signature is a valid ES256 one (64-byte r || s) by @pub. */
int jwt_verify_es256(const struct jwt *j, EVP_PKEY *pub);

/* 1 if the signature is a valid RS256 one (RSASSA-PKCS1-v1_5, SHA-256). */
int jwt_verify_rs256(const struct jwt *j, EVP_PKEY *pub);

/* A PEM public key (SubjectPublicKeyInfo) from @path, or NULL. */
EVP_PKEY *jwt_load_public_key(const char *path);

#endif
