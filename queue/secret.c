/*
 * secret.c - device secrets: made from the system's CSPRNG, stored hashed.
 *
 * A secret is 32 random bytes, shown once as unpadded base64url. The database
 * keeps only its SHA-256: with 256 bits of entropy a slow password hash buys
 * nothing, and a fast one keeps device authentication cheap. Comparing a
 * presented secret is done on hashes with CRYPTO_memcmp (constant time).
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "queue/queue.h"
#include "common/banned.h"

enum ferry_err queue_secret_new(char out[QUEUE_SECRET_LEN + 1])
{
	unsigned char raw[QUEUE_SECRET_BYTES];
	unsigned char b64[4 * ((QUEUE_SECRET_BYTES + 2) / 3) + 1];
	int n;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return FERRY_EIO;
	n = EVP_EncodeBlock(b64, raw, sizeof(raw));
	while (n > 0 && b64[n - 1] == '=')
		n--;
	if (n != QUEUE_SECRET_LEN)
		return FERRY_EINVAL;
	for (int i = 0; i < n; i++) {
		if (b64[i] == '+')
			b64[i] = '-';
		else if (b64[i] == '/')
			b64[i] = '_';
	}
	memcpy(out, b64, (size_t)n);
	out[n] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(b64, sizeof(b64));
	return FERRY_OK;
}

void queue_secret_hash(const char *secret, size_t len, uint8_t out[QUEUE_SECRET_HASH_LEN])
{
	SHA256((const unsigned char *)secret, len, out);
}
