/*
 * jwt.c - JWS parsing and signature checks for the mock push providers (see
 * jwt.h). Bounded input: tokens over JWT_MAX_TOKEN bytes are refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "tests/mock/jwt.h"
#include "common/banned.h"

static int b64url_value(char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '-')
		return 62;
	if (ch == '_')
		return 63;
	return -1;
}

uint8_t *jwt_b64url_decode(const char *in, size_t len, size_t *out_len)
{
	uint8_t *out;
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	if (len % 4 == 1)
		return NULL;
	out = malloc(len * 3 / 4 + 2);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value(in[i]);

		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	out[n] = '\0';
	*out_len = n;
	return out;
}

static json_t *decode_object(const char *in, size_t len)
{
	size_t n;
	uint8_t *raw = jwt_b64url_decode(in, len, &n);
	json_t *obj;

	if (!raw)
		return NULL;
	obj = json_loadb((const char *)raw, n, 0, NULL);
	free(raw);
	if (obj && !json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

int jwt_parse(const char *token, struct jwt *j)
{
	size_t len = strlen(token);
	const char *dot1, *dot2;

	memset(j, 0, sizeof(*j));
	if (len > JWT_MAX_TOKEN)
		return -1;
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2 || strchr(dot2 + 1, '.'))
		return -1;
	j->header = decode_object(token, (size_t)(dot1 - token));
	j->claims = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	j->sig = jwt_b64url_decode(dot2 + 1, strlen(dot2 + 1), &j->sig_len);
	j->signing_input = strndup(token, (size_t)(dot2 - token));
	if (!j->header || !j->claims || !j->sig || !j->signing_input) {
		jwt_release(j);
		return -1;
	}
	return 0;
}

void jwt_release(struct jwt *j)
{
	json_decref(j->header);
	json_decref(j->claims);
	free(j->sig);
	free(j->signing_input);
	memset(j, 0, sizeof(*j));
}

static int verify_der(const struct jwt *j, EVP_PKEY *pub, const uint8_t *sig, size_t sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	if (!md)
		return 0;
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
	     EVP_DigestVerify(md, sig, sig_len, (const uint8_t *)j->signing_input,
			      strlen(j->signing_input)) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

int jwt_verify_es256(const struct jwt *j, EVP_PKEY *pub)
{
	ECDSA_SIG *es;
	BIGNUM *r, *s;
	uint8_t *der = NULL;
	int der_len, ok;

	if (j->sig_len != 64 || EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC)
		return 0;
	es = ECDSA_SIG_new();
	r = BN_bin2bn(j->sig, 32, NULL);
	s = BN_bin2bn(j->sig + 32, 32, NULL);
	if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return 0;
	}
	der_len = i2d_ECDSA_SIG(es, &der);
	ok = der_len > 0 && verify_der(j, pub, der, (size_t)der_len);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	return ok;
}

int jwt_verify_rs256(const struct jwt *j, EVP_PKEY *pub)
{
	if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA)
		return 0;
	return verify_der(j, pub, j->sig, j->sig_len);
}

EVP_PKEY *jwt_load_public_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	if (!f)
		return NULL;
	k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}
