/*
 * test_jwt.c - base64url, ES256 and RS256 tokens, credential files, the
 * APNs provider-token cache.
 *
 * Tokens are checked from the outside: split on '.', each part decoded by
 * the test's own base64url decoder, header and claims parsed as JSON, and
 * the signature verified with EVP_DigestVerify (an ES256 r || s turned back
 * into DER first). When the openssl command is installed, one ES256 token is
 * also verified by it and one RS256 signature is recomputed by it (PKCS#1
 * v1.5 is deterministic, so the bytes must match).
 *
 * Keys are generated once per run; credential files go to a mkdtemp()
 * directory that is removed at the end.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "push/creds.h"
#include "push/jwt.h"
#include "common/banned.h"

#define T0 1700000000
#define SCOPE "https://www.googleapis.com/auth/firebase.messaging"
#define TOKEN_URI "https://oauth2.googleapis.com/token"
#define EMAIL "ferry@example-project.iam.gserviceaccount.com"

static char tmpdir[] = "/tmp/ferry-test-jwt.XXXXXX";
static EVP_PKEY *ec_key, *ec_key2, *rsa_key;
static char *rsa_pem; /* rsa_key as PKCS#8 PEM */

/* ---- helpers ------------------------------------------------------------- */

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Decode unpadded base64url; -1 on a bad character or length. */
static int b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
	uint32_t acc = 0;
	size_t o = 0;
	int bits = 0;

	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64val(s[i]);

		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Unused bits of the last character must be zero (canonical form). */
	if (acc != 0)
		return -1;
	*outlen = o;
	return 0;
}

struct parts {
	const char *p[3];
	size_t n[3];
	size_t signed_len; /* header "." claims */
};

static void split(const char *tok, struct parts *pt)
{
	const char *dot1 = strchr(tok, '.'), *dot2;

	assert_non_null(dot1);
	dot2 = strchr(dot1 + 1, '.');
	assert_non_null(dot2);
	assert_null(strchr(dot2 + 1, '.'));
	pt->p[0] = tok;
	pt->n[0] = (size_t)(dot1 - tok);
	pt->p[1] = dot1 + 1;
	pt->n[1] = (size_t)(dot2 - dot1 - 1);
	pt->p[2] = dot2 + 1;
	pt->n[2] = strlen(dot2 + 1);
	pt->signed_len = (size_t)(dot2 - tok);
	assert_true(pt->n[0] > 0 && pt->n[1] > 0 && pt->n[2] > 0);
}

/* Decode part @i as a JSON object. */
static json_t *part_json(const struct parts *pt, int i)
{
	unsigned char buf[1024];
	json_error_t jerr;
	size_t n;
	json_t *j;

	assert_int_equal(b64url_decode(pt->p[i], pt->n[i], buf, sizeof(buf), &n), 0);
	j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &jerr);
	assert_non_null(j);
	assert_true(json_is_object(j));
	return j;
}

static void assert_json_str(json_t *obj, const char *key, const char *want)
{
	json_t *v = json_object_get(obj, key);

	assert_non_null(v);
	assert_true(json_is_string(v));
	assert_string_equal(json_string_value(v), want);
}

static void assert_json_int(json_t *obj, const char *key, json_int_t want)
{
	json_t *v = json_object_get(obj, key);

	assert_non_null(v);
	assert_true(json_is_integer(v));
	assert_true(json_integer_value(v) == want);
}

static int verify_der(EVP_PKEY *key, const unsigned char *sig, size_t siglen, const char *tbs,
		      size_t len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	assert_non_null(md);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	ok = EVP_DigestVerify(md, sig, siglen, (const unsigned char *)tbs, len) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

/* The 64-byte r || s of @rs as a DER ECDSA-Sig-Value; *der is OPENSSL_malloc'ed. */
static int rs_to_der(const unsigned char *rs, unsigned char **der)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, 32, NULL), *s = BN_bin2bn(rs + 32, 32, NULL);
	int n;

	assert_non_null(sig);
	assert_non_null(r);
	assert_non_null(s);
	assert_int_equal(ECDSA_SIG_set0(sig, r, s), 1);
	*der = NULL;
	n = i2d_ECDSA_SIG(sig, der);
	ECDSA_SIG_free(sig);
	assert_true(n > 0);
	return n;
}

/* Verify an ES256 token's signature with @key: 1 valid, 0 not. */
static int es256_valid(EVP_PKEY *key, const char *tok)
{
	unsigned char rs[128], *der;
	struct parts pt;
	size_t n;
	int dn, ok;

	split(tok, &pt);
	if (b64url_decode(pt.p[2], pt.n[2], rs, sizeof(rs), &n) != 0 || n != 64)
		return 0;
	dn = rs_to_der(rs, &der);
	ok = verify_der(key, der, (size_t)dn, tok, pt.signed_len);
	OPENSSL_free(der);
	return ok;
}

static int rs256_valid(EVP_PKEY *key, const char *tok)
{
	unsigned char sig[1024];
	struct parts pt;
	size_t n;

	split(tok, &pt);
	if (b64url_decode(pt.p[2], pt.n[2], sig, sizeof(sig), &n) != 0)
		return 0;
	return verify_der(key, sig, n, tok, pt.signed_len);
}

static char *tmp_path(const char *name)
{
	char *p = malloc(strlen(tmpdir) + strlen(name) + 2);

	assert_non_null(p);
	snprintf(p, strlen(tmpdir) + strlen(name) + 2, "%s/%s", tmpdir, name);
	return p;
}

/* Owner-only, as the loaders want credential files. */
static char *write_file(const char *name, const void *data, size_t len)
{
	char *path = tmp_path(name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

static char *write_text(const char *name, const char *text)
{
	return write_file(name, text, strlen(text));
}

static void remove_file(char *path)
{
	unlink(path);
	free(path);
}

/* @key as PEM: PKCS#8 unless @traditional; malloc'ed. */
static char *key_pem(EVP_PKEY *key, int traditional)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *copy;
	long n;

	assert_non_null(bio);
	if (traditional)
		assert_int_equal(
			PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0, NULL, NULL),
			1);
	else
		assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
	n = BIO_get_mem_data(bio, &data);
	assert_true(n > 0);
	copy = strndup(data, (size_t)n);
	assert_non_null(copy);
	BIO_free(bio);
	return copy;
}

static char *write_key(const char *name, EVP_PKEY *key, int traditional)
{
	char *pem = key_pem(key, traditional), *path;

	path = write_file(name, pem, strlen(pem));
	free(pem);
	return path;
}

static int have_openssl_cli(void)
{
	return system("command -v openssl >/dev/null 2>&1") == 0;
}

/* ---- setup --------------------------------------------------------------- */

static int group_setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	ec_key = EVP_EC_gen("P-256");
	ec_key2 = EVP_EC_gen("P-256");
	rsa_key = EVP_RSA_gen(2048);
	if (!ec_key || !ec_key2 || !rsa_key)
		return -1;
	rsa_pem = key_pem(rsa_key, 0);
	return 0;
}

static int group_teardown(void **state)
{
	EVP_PKEY_free(ec_key);
	EVP_PKEY_free(ec_key2);
	EVP_PKEY_free(rsa_key);
	free(rsa_pem);
	rmdir(tmpdir);
	return 0;
}

/* ---- base64url ----------------------------------------------------------- */

static void check_b64(const void *in, size_t len, const char *want)
{
	char out[64];

	memset(out, 'x', sizeof(out));
	assert_int_equal(push_b64url(in, len, out, sizeof(out)), strlen(want));
	assert_string_equal(out, want);
	assert_int_equal(PUSH_B64URL_LEN(len), strlen(want));
	/* Exactly enough room, and one byte less. */
	assert_int_equal(push_b64url(in, len, out, strlen(want) + 1), strlen(want));
	assert_string_equal(out, want);
	if (want[0])
		assert_int_equal(push_b64url(in, len, out, strlen(want)), 0);
}

static void test_b64url(void **state)
{
	static const unsigned char url[] = { 0xfb, 0xff, 0xbf, 0xfe };
	char out[8];

	/* RFC 4648 §10, padding removed: lengths 0 to 6. */
	check_b64("", 0, "");
	check_b64(NULL, 0, "");
	check_b64("f", 1, "Zg");
	check_b64("fo", 2, "Zm8");
	check_b64("foo", 3, "Zm9v");
	check_b64("foob", 4, "Zm9vYg");
	check_b64("fooba", 5, "Zm9vYmE");
	check_b64("foobar", 6, "Zm9vYmFy");
	/* The URL alphabet: '-' and '_' where base64 has '+' and '/'. */
	check_b64(url, 2, "-_8");
	check_b64(url, 3, "-_-_");
	check_b64(url, 4, "-_-__g");
	check_b64("\0\0\0", 3, "AAAA");
	assert_int_equal(push_b64url("f", 1, out, 0), 0);
	assert_int_equal(push_b64url("foo", 3, out, 4), 0);
	assert_string_equal(out, "");
}

/* ---- ES256 --------------------------------------------------------------- */

static void test_es256(void **state)
{
	unsigned char rs[64];
	struct parts pt;
	json_t *h, *c;
	char *tok;
	size_t n;

	assert_int_equal(push_jwt_es256(ec_key, "ABC123DEFG", "DEF123GHIJ", T0, &tok), FERRY_OK);
	split(tok, &pt);
	h = part_json(&pt, 0);
	assert_int_equal(json_object_size(h), 2);
	assert_json_str(h, "alg", "ES256");
	assert_json_str(h, "kid", "ABC123DEFG");
	c = part_json(&pt, 1);
	assert_int_equal(json_object_size(c), 2);
	assert_json_str(c, "iss", "DEF123GHIJ");
	assert_json_int(c, "iat", T0);
	json_decref(h);
	json_decref(c);
	/* Compact JSON: the header is exactly this. */
	assert_int_equal(pt.n[0],
			 PUSH_B64URL_LEN(strlen("{\"alg\":\"ES256\",\"kid\":\"ABC123DEFG\"}")));
	/* r || s, 64 bytes: 86 characters. */
	assert_int_equal(pt.n[2], 86);
	assert_int_equal(b64url_decode(pt.p[2], pt.n[2], rs, sizeof(rs), &n), 0);
	assert_int_equal(n, 64);
	assert_true(es256_valid(ec_key, tok));
	assert_false(es256_valid(ec_key2, tok));
	/* ECDSA is randomised: two tokens differ, both verify. */
	{
		char *tok2;

		assert_int_equal(push_jwt_es256(ec_key, "ABC123DEFG", "DEF123GHIJ", T0, &tok2),
				 FERRY_OK);
		assert_string_not_equal(tok, tok2);
		assert_true(es256_valid(ec_key, tok2));
		free(tok2);
	}
	free(tok);
}

static void test_es256_tampered(void **state)
{
	char *tok, *bad;
	struct parts pt;
	size_t i;

	assert_int_equal(push_jwt_es256(ec_key, "KEYID", "TEAM", T0, &tok), FERRY_OK);
	split(tok, &pt);
	/* Another iat in the claims, the signature kept. */
	{
		char *other;
		struct parts po;

		assert_int_equal(push_jwt_es256(ec_key, "KEYID", "TEAM", T0 + 1, &other), FERRY_OK);
		split(other, &po);
		bad = malloc(strlen(tok) + 16);
		assert_non_null(bad);
		snprintf(bad, strlen(tok) + 16, "%.*s.%.*s.%s", (int)pt.n[0], pt.p[0], (int)po.n[1],
			 po.p[1], pt.p[2]);
		assert_false(es256_valid(ec_key, bad));
		free(bad);
		free(other);
	}
	/* One character of each part changed. */
	for (int part = 0; part < 3; part++) {
		bad = strdup(tok);
		assert_non_null(bad);
		i = (size_t)(pt.p[part] - tok) + 2;
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		assert_false(es256_valid(ec_key, bad));
		free(bad);
	}
	free(tok);
}

static void test_es256_escaping(void **state)
{
	struct parts pt;
	json_t *h, *c;
	char *tok;

	assert_int_equal(push_jwt_es256(ec_key, "k\"id\\\n", "t\u00e9am</", T0, &tok), FERRY_OK);
	split(tok, &pt);
	h = part_json(&pt, 0);
	c = part_json(&pt, 1);
	assert_json_str(h, "kid", "k\"id\\\n");
	assert_json_str(c, "iss", "t\u00e9am</");
	json_decref(h);
	json_decref(c);
	assert_true(es256_valid(ec_key, tok));
	free(tok);
}

static void test_es256_errors(void **state)
{
	EVP_PKEY *k384 = EVP_EC_gen("P-384");
	char *tok = (char *)1;

	assert_non_null(k384);
	assert_int_equal(push_jwt_es256(rsa_key, "K", "T", T0, &tok), FERRY_EINVAL);
	assert_null(tok);
	assert_int_equal(push_jwt_es256(k384, "K", "T", T0, &tok), FERRY_EINVAL);
	assert_int_equal(push_jwt_es256(NULL, "K", "T", T0, &tok), FERRY_EINVAL);
	assert_int_equal(push_jwt_es256(ec_key, NULL, "T", T0, &tok), FERRY_EINVAL);
	assert_int_equal(push_jwt_es256(ec_key, "K", NULL, T0, &tok), FERRY_EINVAL);
	assert_int_equal(push_jwt_es256(ec_key, "K\xff", "T", T0, &tok), FERRY_EINVAL);
	assert_int_equal(push_jwt_es256(ec_key, "K", "T", T0, NULL), FERRY_EINVAL);
	assert_null(tok);
	assert_true(push_jwt_key_is_p256(ec_key));
	assert_false(push_jwt_key_is_p256(k384));
	assert_false(push_jwt_key_is_p256(rsa_key));
	assert_false(push_jwt_key_is_p256(NULL));
	EVP_PKEY_free(k384);
}

/* The openssl command verifies one of our ES256 tokens. */
static void test_es256_openssl_cli(void **state)
{
	char *tok, *pub_path, *in_path, *sig_path, cmd[1024];
	unsigned char rs[64], *der;
	struct parts pt;
	BIO *bio;
	size_t n;
	int dn;

	if (!have_openssl_cli())
		skip();
	assert_int_equal(push_jwt_es256(ec_key, "KEYID", "TEAM", T0, &tok), FERRY_OK);
	split(tok, &pt);
	assert_int_equal(b64url_decode(pt.p[2], pt.n[2], rs, sizeof(rs), &n), 0);
	dn = rs_to_der(rs, &der);
	pub_path = tmp_path("es256-pub.pem");
	bio = BIO_new_file(pub_path, "w");
	assert_non_null(bio);
	assert_int_equal(PEM_write_bio_PUBKEY(bio, ec_key), 1);
	BIO_free(bio);
	in_path = write_file("es256-input", tok, pt.signed_len);
	sig_path = write_file("es256-sig.der", der, (size_t)dn);
	snprintf(cmd, sizeof(cmd),
		 "openssl dgst -sha256 -verify '%s' -signature '%s' '%s' >/dev/null", pub_path,
		 sig_path, in_path);
	assert_int_equal(system(cmd), 0);
	/* And refuses a signature over something else. */
	remove_file(in_path);
	in_path = write_file("es256-input", tok, pt.signed_len - 1);
	snprintf(cmd, sizeof(cmd),
		 "openssl dgst -sha256 -verify '%s' -signature '%s' '%s' >/dev/null 2>&1", pub_path,
		 sig_path, in_path);
	assert_int_not_equal(system(cmd), 0);
	remove_file(in_path);
	remove_file(sig_path);
	remove_file(pub_path);
	OPENSSL_free(der);
	free(tok);
}

/* ---- RS256 --------------------------------------------------------------- */

static void test_rs256(void **state)
{
	struct parts pt;
	json_t *h, *c;
	char *tok, *tok2, *bad;

	assert_int_equal(
		push_jwt_rs256(rsa_key, "0123abcd", EMAIL, SCOPE, TOKEN_URI, T0, T0 + 3600, &tok),
		FERRY_OK);
	split(tok, &pt);
	h = part_json(&pt, 0);
	assert_int_equal(json_object_size(h), 3);
	assert_json_str(h, "alg", "RS256");
	assert_json_str(h, "typ", "JWT");
	assert_json_str(h, "kid", "0123abcd");
	c = part_json(&pt, 1);
	assert_int_equal(json_object_size(c), 5);
	assert_json_str(c, "iss", EMAIL);
	assert_json_str(c, "scope", SCOPE);
	assert_json_str(c, "aud", TOKEN_URI);
	assert_json_int(c, "iat", T0);
	assert_json_int(c, "exp", T0 + 3600);
	json_decref(h);
	json_decref(c);
	/* 2048-bit key: 256-byte signature, 342 characters. */
	assert_int_equal(pt.n[2], 342);
	assert_true(rs256_valid(rsa_key, tok));
	/* PKCS#1 v1.5 is deterministic. */
	assert_int_equal(
		push_jwt_rs256(rsa_key, "0123abcd", EMAIL, SCOPE, TOKEN_URI, T0, T0 + 3600, &tok2),
		FERRY_OK);
	assert_string_equal(tok, tok2);
	free(tok2);
	/* Tampered: one character of the claims. */
	bad = strdup(tok);
	assert_non_null(bad);
	bad[pt.p[1] - tok + 3] = bad[pt.p[1] - tok + 3] == 'A' ? 'B' : 'A';
	assert_false(rs256_valid(rsa_key, bad));
	free(bad);
	free(tok);

	/* Without a kid. */
	assert_int_equal(push_jwt_rs256(rsa_key, NULL, EMAIL, SCOPE, TOKEN_URI, T0, T0 + 60, &tok),
			 FERRY_OK);
	split(tok, &pt);
	h = part_json(&pt, 0);
	assert_int_equal(json_object_size(h), 2);
	assert_null(json_object_get(h, "kid"));
	assert_json_str(h, "alg", "RS256");
	json_decref(h);
	assert_true(rs256_valid(rsa_key, tok));
	free(tok);
}

static void test_rs256_errors(void **state)
{
	char *tok = (char *)1;

	assert_int_equal(push_jwt_rs256(ec_key, "k", EMAIL, SCOPE, TOKEN_URI, T0, T0 + 60, &tok),
			 FERRY_EINVAL);
	assert_null(tok);
	assert_int_equal(push_jwt_rs256(rsa_key, "k", NULL, SCOPE, TOKEN_URI, T0, T0 + 60, &tok),
			 FERRY_EINVAL);
	assert_int_equal(push_jwt_rs256(rsa_key, "k", EMAIL, NULL, TOKEN_URI, T0, T0 + 60, &tok),
			 FERRY_EINVAL);
	assert_int_equal(push_jwt_rs256(rsa_key, "k", EMAIL, SCOPE, NULL, T0, T0 + 60, &tok),
			 FERRY_EINVAL);
	assert_int_equal(push_jwt_rs256(rsa_key, "k", EMAIL, SCOPE, TOKEN_URI, T0, T0, &tok),
			 FERRY_EINVAL);
	assert_int_equal(push_jwt_rs256(rsa_key, "k", "\xc3(", SCOPE, TOKEN_URI, T0, T0 + 1, &tok),
			 FERRY_EINVAL);
	assert_null(tok);
}

/* The openssl command computes the same RS256 signature. */
static void test_rs256_openssl_cli(void **state)
{
	char *tok, *key_path, *in_path, *sig_path, cmd[1024], b64[512];
	unsigned char sig[512];
	struct parts pt;
	size_t n;
	FILE *f;

	if (!have_openssl_cli())
		skip();
	assert_int_equal(
		push_jwt_rs256(rsa_key, "kid", EMAIL, SCOPE, TOKEN_URI, T0, T0 + 3600, &tok),
		FERRY_OK);
	split(tok, &pt);
	key_path = write_file("rs256.pem", rsa_pem, strlen(rsa_pem));
	in_path = write_file("rs256-input", tok, pt.signed_len);
	sig_path = tmp_path("rs256-sig");
	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -sign '%s' -out '%s' '%s'", key_path,
		 sig_path, in_path);
	assert_int_equal(system(cmd), 0);
	f = fopen(sig_path, "re");
	assert_non_null(f);
	n = fread(sig, 1, sizeof(sig), f);
	fclose(f);
	assert_int_equal(n, 256);
	assert_int_equal(push_b64url(sig, n, b64, sizeof(b64)), pt.n[2]);
	assert_memory_equal(b64, pt.p[2], pt.n[2]);
	remove_file(sig_path);
	remove_file(in_path);
	remove_file(key_path);
	free(tok);
}

/* ---- APNs key files ------------------------------------------------------ */

static void expect_apns_error(const char *path, const char *want)
{
	EVP_PKEY *key = (EVP_PKEY *)1;
	char err[512];

	err[0] = '\0';
	assert_int_equal(push_apns_key_load(path, &key, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(key);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	/* It names the file, and quotes no key. */
	assert_non_null(strstr(err, path));
	assert_null(strstr(err, "MIG"));
	assert_null(strstr(err, "MII"));
	assert_null(strstr(err, "BEGIN"));
}

static void test_apns_key_load(void **state)
{
	EVP_PKEY *key = NULL, *k384, *k256k1;
	char err[512], *path, *tok;

	path = write_key("AuthKey_GOOD.p8", ec_key, 0);
	assert_int_equal(push_apns_key_load(path, &key, err, sizeof(err)), FERRY_OK);
	assert_non_null(key);
	assert_int_equal(EVP_PKEY_eq(key, ec_key), 1);
	assert_true(push_jwt_key_is_p256(key));
	/* What it loaded signs tokens the generated public key accepts. */
	assert_int_equal(push_jwt_es256(key, "KEYID", "TEAM", T0, &tok), FERRY_OK);
	assert_true(es256_valid(ec_key, tok));
	free(tok);
	EVP_PKEY_free(key);
	remove_file(path);

	/* Apple's files come with CRLF line ends and text around the block. */
	{
		char *pem = key_pem(ec_key, 0), text[2048];
		size_t o = 0;

		o += (size_t)snprintf(text, sizeof(text), "downloaded key\r\n");
		for (const char *p = pem; *p && o + 2 < sizeof(text); p++) {
			if (*p == '\n')
				text[o++] = '\r';
			text[o++] = *p;
		}
		path = write_file("AuthKey_CRLF.p8", text, o);
		free(pem);
		key = NULL;
		assert_int_equal(push_apns_key_load(path, &key, err, sizeof(err)), FERRY_OK);
		assert_int_equal(EVP_PKEY_eq(key, ec_key), 1);
		EVP_PKEY_free(key);
		remove_file(path);
	}

	path = write_key("AuthKey_RSA.p8", rsa_key, 0);
	expect_apns_error(path, "the key is RSA, APNs needs EC P-256");
	remove_file(path);

	k384 = EVP_EC_gen("P-384");
	assert_non_null(k384);
	path = write_key("AuthKey_384.p8", k384, 0);
	expect_apns_error(path, "curve secp384r1, APNs needs P-256");
	remove_file(path);
	EVP_PKEY_free(k384);

	k256k1 = EVP_EC_gen("secp256k1");
	assert_non_null(k256k1);
	path = write_key("AuthKey_256k1.p8", k256k1, 0);
	expect_apns_error(path, "curve secp256k1, APNs needs P-256");
	remove_file(path);
	EVP_PKEY_free(k256k1);

	path = write_key("AuthKey_SEC1.p8", ec_key, 1);
	expect_apns_error(path, "'EC PRIVATE KEY' is not PKCS#8");
	remove_file(path);

	path = write_file("AuthKey_GARBAGE.p8", "garbage\n\x01\x02", 10);
	expect_apns_error(path, "no PEM private key found");
	remove_file(path);

	path = write_file("AuthKey_EMPTY.p8", "", 0);
	expect_apns_error(path, "no PEM private key found");
	remove_file(path);

	/* A PRIVATE KEY block whose content is not PKCS#8. */
	{
		static const char bogus[] = "-----BEGIN PRIVATE KEY-----\n"
					    "TUlHSEFMTE9XT1JMRAo=\n"
					    "-----END PRIVATE KEY-----\n";

		path = write_file("AuthKey_BOGUS.p8", bogus, sizeof(bogus) - 1);
		expect_apns_error(path, "the PRIVATE KEY block is not a valid PKCS#8 key");
		remove_file(path);
	}

	/* An encrypted PKCS#8 key is refused without asking for a password. */
	{
		BIO *bio;

		path = tmp_path("AuthKey_ENC.p8");
		bio = BIO_new_file(path, "w");
		assert_non_null(bio);
		assert_int_equal(PEM_write_bio_PKCS8PrivateKey(bio, ec_key, EVP_aes_256_cbc(),
							       "pass", 4, NULL, NULL),
				 1);
		BIO_free(bio);
		assert_int_equal(chmod(path, 0600), 0);
		expect_apns_error(path, "the key is encrypted");
		remove_file(path);
	}

	path = tmp_path("AuthKey_NONE.p8");
	expect_apns_error(path, "cannot read APNs key file '");
	expect_apns_error(path, "No such file or directory");
	free(path);

	expect_apns_error(tmpdir, "not a regular file");

	/* Over the size cap. */
	{
		size_t big = PUSH_CREDS_MAX_FILE + 1;
		char *data = malloc(big);

		assert_non_null(data);
		memset(data, '\n', big);
		path = write_file("AuthKey_BIG.p8", data, big);
		expect_apns_error(path, "larger than 65536 bytes");
		remove_file(path);
		free(data);
	}
}

/* ---- service-account files ----------------------------------------------- */

static json_t *sa_json(void)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account",
			      "project_id", "ferry-test", "private_key_id", "0123456789abcdef",
			      "private_key", rsa_pem, "client_email", EMAIL, "client_id", "1234",
			      "auth_uri", "https://accounts.google.com/o/oauth2/auth", "token_uri",
			      TOKEN_URI);

	assert_non_null(j);
	return j;
}

static char *write_json(const char *name, json_t *j)
{
	char *text = json_dumps(j, JSON_INDENT(2)), *path;

	assert_non_null(text);
	path = write_file(name, text, strlen(text));
	free(text);
	json_decref(j);
	return path;
}

static void expect_sa_error(const char *path, const char *want)
{
	struct push_service_account sa;
	char err[512];

	memset(&sa, 0x5a, sizeof(sa));
	err[0] = '\0';
	assert_int_equal(push_service_account_load(path, &sa, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(sa.project_id);
	assert_null(sa.private_key_id);
	assert_null(sa.client_email);
	assert_null(sa.token_uri);
	assert_null(sa.key);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	assert_non_null(strstr(err, path));
	assert_null(strstr(err, "MIG"));
	assert_null(strstr(err, "MII"));
	assert_null(strstr(err, "BEGIN"));
	push_service_account_release(&sa);
}

static void test_sa_good(void **state)
{
	struct push_service_account sa;
	char err[512], *path, *tok;

	path = write_json("sa-good.json", sa_json());
	assert_int_equal(push_service_account_load(path, &sa, err, sizeof(err)), FERRY_OK);
	assert_string_equal(sa.project_id, "ferry-test");
	assert_string_equal(sa.private_key_id, "0123456789abcdef");
	assert_string_equal(sa.client_email, EMAIL);
	assert_string_equal(sa.token_uri, TOKEN_URI);
	assert_non_null(sa.key);
	assert_int_equal(EVP_PKEY_eq(sa.key, rsa_key), 1);
	assert_int_equal(push_jwt_rs256(sa.key, sa.private_key_id, sa.client_email, SCOPE,
					sa.token_uri, T0, T0 + 3600, &tok),
			 FERRY_OK);
	assert_true(rs256_valid(rsa_key, tok));
	free(tok);
	push_service_account_release(&sa);
	assert_null(sa.key);
	push_service_account_release(&sa);
	push_service_account_release(NULL);
	remove_file(path);
}

static void test_sa_missing_fields(void **state)
{
	static const char *const required[] = { "type",	       "project_id",   "private_key_id",
						"private_key", "client_email", "token_uri" };
	char want[128], name[64], *path;
	json_t *j;

	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		j = sa_json();
		assert_int_equal(json_object_del(j, required[i]), 0);
		snprintf(name, sizeof(name), "sa-no-%s.json", required[i]);
		path = write_json(name, j);
		snprintf(want, sizeof(want), "service-account file '%s': field '%s': missing", path,
			 required[i]);
		expect_sa_error(path, want);
		remove_file(path);

		/* Present but empty, or not a string. */
		j = sa_json();
		assert_int_equal(json_object_set_new(j, required[i], json_string("")), 0);
		path = write_json(name, j);
		snprintf(want, sizeof(want), "field '%s': empty", required[i]);
		expect_sa_error(path, want);
		remove_file(path);

		j = sa_json();
		assert_int_equal(json_object_set_new(j, required[i], json_integer(7)), 0);
		path = write_json(name, j);
		snprintf(want, sizeof(want), "field '%s': not a string", required[i]);
		expect_sa_error(path, want);
		remove_file(path);
	}
}

static void test_sa_bad(void **state)
{
	EVP_PKEY *small;
	char *path, *pem;
	json_t *j;

	j = sa_json();
	assert_int_equal(json_object_set_new(j, "type", json_string("authorized_user")), 0);
	path = write_json("sa-type.json", j);
	expect_sa_error(path, "field 'type': is 'authorized_user', expected 'service_account'");
	remove_file(path);

	j = sa_json();
	assert_int_equal(json_object_set_new(j, "private_key", json_string("not a key")), 0);
	path = write_json("sa-garbage-key.json", j);
	expect_sa_error(path, "field 'private_key': no PEM private key found");
	remove_file(path);

	/* An EC key where an RSA key belongs. */
	pem = key_pem(ec_key, 0);
	j = sa_json();
	assert_int_equal(json_object_set_new(j, "private_key", json_string(pem)), 0);
	free(pem);
	path = write_json("sa-ec-key.json", j);
	expect_sa_error(path, "field 'private_key': the key is EC, not RSA");
	remove_file(path);

	/* A traditional RSA PRIVATE KEY block. */
	pem = key_pem(rsa_key, 1);
	j = sa_json();
	assert_int_equal(json_object_set_new(j, "private_key", json_string(pem)), 0);
	free(pem);
	path = write_json("sa-trad-key.json", j);
	expect_sa_error(path, "field 'private_key': 'RSA PRIVATE KEY' is not PKCS#8");
	remove_file(path);

	small = EVP_RSA_gen(1024);
	assert_non_null(small);
	pem = key_pem(small, 0);
	EVP_PKEY_free(small);
	j = sa_json();
	assert_int_equal(json_object_set_new(j, "private_key", json_string(pem)), 0);
	free(pem);
	path = write_json("sa-small-key.json", j);
	expect_sa_error(path, "the RSA key has 1024 bits, at least 2048 are needed");
	remove_file(path);

	/* \u0000 is refused by the parser already. */
	j = sa_json();
	assert_int_equal(json_object_set_new(j, "client_email", json_stringn("a\0b", 3)), 0);
	path = write_json("sa-nul.json", j);
	expect_sa_error(path, "not valid JSON");
	remove_file(path);

	path = write_text("sa-not-json.json", "not json at all");
	expect_sa_error(path, "not valid JSON (line 1, column");
	remove_file(path);

	path = write_text("sa-array.json", "[1, 2]");
	expect_sa_error(path, "not a JSON object");
	remove_file(path);

	path = write_text("sa-dup.json", "{\"type\":\"service_account\",\"type\":\"x\"}");
	expect_sa_error(path, "not valid JSON");
	remove_file(path);

	/* The key's PEM with raw newlines inside the JSON string (a hand-edited
	 * file): the parser stops inside the key; the message must not quote it. */
	{
		char text[4096];
		int n = snprintf(text, sizeof(text),
				 "{\"type\": \"service_account\", \"private_key\": \"%s\"}",
				 rsa_pem);

		assert_true(n > 0 && (size_t)n < sizeof(text));
		path = write_file("sa-raw-newlines.json", text, (size_t)n);
		expect_sa_error(path, "not valid JSON (line ");
		remove_file(path);
	}

	path = tmp_path("sa-missing.json");
	expect_sa_error(path, "cannot read service-account file '");
	free(path);
}

/*
 * A credential file its group or others may read or write is refused, with
 * the chmod that fixes it; owner read-write and read-only are fine. The
 * mode is what counts, not whether this process could read the file.
 */
static void test_key_file_modes(void **state)
{
	static const mode_t refused[] = { 0640, 0604, 0620, 0602, 0644, 0660, 0610, 0601 };
	static const mode_t accepted[] = { 0600, 0400 };
	char *pem = key_pem(ec_key, 0), *sa_text, want[700], err[512];
	char *p8 = write_file("AuthKey_MODE.p8", pem, strlen(pem));
	json_t *j = sa_json();
	struct push_service_account sa;
	EVP_PKEY *key = NULL;
	char *sa_path;

	sa_text = json_dumps(j, 0);
	json_decref(j);
	sa_path = write_file("sa-mode.json", sa_text, strlen(sa_text));
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		assert_int_equal(chmod(p8, refused[i]), 0);
		assert_int_equal(chmod(sa_path, refused[i]), 0);
		snprintf(want, sizeof(want),
			 "APNs key file '%s' has group or world access (mode %04o); allow its "
			 "owner only: chmod 600 '%s'",
			 p8, (unsigned)refused[i], p8);
		err[0] = '\0';
		assert_int_equal(push_apns_key_load(p8, &key, err, sizeof(err)), FERRY_ECONFIG);
		assert_null(key);
		assert_string_equal(err, want);
		snprintf(want, sizeof(want), "service-account file '%s' has group or world access",
			 sa_path);
		expect_sa_error(sa_path, want);
	}
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		assert_int_equal(chmod(p8, accepted[i]), 0);
		assert_int_equal(chmod(sa_path, accepted[i]), 0);
		assert_int_equal(push_apns_key_load(p8, &key, err, sizeof(err)), FERRY_OK);
		assert_int_equal(EVP_PKEY_eq(key, ec_key), 1);
		EVP_PKEY_free(key);
		key = NULL;
		assert_int_equal(push_service_account_load(sa_path, &sa, err, sizeof(err)),
				 FERRY_OK);
		push_service_account_release(&sa);
	}
	remove_file(p8);
	remove_file(sa_path);

	/* The fix is quoted for a shell, whatever the name. */
	p8 = write_file("it's.p8", pem, strlen(pem));
	assert_int_equal(chmod(p8, 0644), 0);
	snprintf(want, sizeof(want), "chmod 600 '%s/it'\\''s.p8'", tmpdir);
	assert_int_equal(push_apns_key_load(p8, &key, err, sizeof(err)), FERRY_ECONFIG);
	if (!strstr(err, want))
		fail_msg("error '%s' does not end in \"%s\"", err, want);
	remove_file(p8);
	free(sa_text);
	free(pem);
}

/* ---- the provider-token cache -------------------------------------------- */

static int64_t token_iat(const char *tok)
{
	struct parts pt;
	json_int_t iat;
	json_t *c;

	split(tok, &pt);
	c = part_json(&pt, 1);
	iat = json_integer_value(json_object_get(c, "iat"));
	json_decref(c);
	return (int64_t)iat;
}

#define GET(now, force, out) \
	push_jwt_cache_get(&c, ec_key, "KEYID", "TEAM", (now), 1200, 3000, (force), (out))

static void test_cache(void **state)
{
	struct push_jwt_cache c = { 0 };
	const char *a, *b;
	char *first;

	assert_int_equal(GET(T0, 0, &a), FERRY_OK);
	assert_non_null(a);
	assert_true(es256_valid(ec_key, a));
	assert_int_equal(token_iat(a), T0);
	first = strdup(a);
	assert_non_null(first);

	/* Reused while younger than max_age. */
	assert_int_equal(GET(T0 + 1, 0, &b), FERRY_OK);
	assert_ptr_equal(a, b);
	assert_int_equal(GET(T0 + 1199, 0, &b), FERRY_OK);
	assert_string_equal(b, first);
	assert_int_equal(GET(T0 + 2999, 0, &b), FERRY_OK);
	assert_string_equal(b, first);

	/* Renewed at max_age. */
	assert_int_equal(GET(T0 + 3000, 0, &b), FERRY_OK);
	assert_string_not_equal(b, first);
	assert_int_equal(token_iat(b), T0 + 3000);
	assert_true(es256_valid(ec_key, b));
	assert_int_equal(c.iat, T0 + 3000);
	free(first);
	push_jwt_cache_release(&c);
	assert_null(c.jwt);
	push_jwt_cache_release(&c);
	push_jwt_cache_release(NULL);
}

static void test_cache_force(void **state)
{
	struct push_jwt_cache c = { 0 };
	const char *jwt;
	int64_t t = T0;

	assert_int_equal(GET(t, 1, &jwt), FERRY_OK); /* the first mint, forced or not */
	assert_int_equal(token_iat(jwt), t);

	/* Forced within a minute of the last mint: kept. */
	assert_int_equal(GET(t + 59, 1, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t);
	/* A minute old: a forced get re-mints, though younger than min_age. */
	assert_int_equal(GET(t + 60, 1, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 60);
	assert_int_equal(c.last_force, t + 60);
	/* Not again within the minute... */
	assert_int_equal(GET(t + 61, 1, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 60);
	assert_int_equal(GET(t + 119, 1, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 60);
	/* ...then once more. */
	assert_int_equal(GET(t + 120, 1, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 120);
	/* Unforced gets keep it until max_age. */
	assert_int_equal(GET(t + 120 + 2999, 0, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 120);
	assert_int_equal(GET(t + 120 + 3000, 0, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 3120);

	/* The clock stepped back: a token from the future is replaced. */
	assert_int_equal(GET(t + 1000, 0, &jwt), FERRY_OK);
	assert_int_equal(token_iat(jwt), t + 1000);
	push_jwt_cache_release(&c);
}

static void test_cache_limits(void **state)
{
	struct push_jwt_cache c = { 0 };
	const char *jwt = "x";
	char *before;

	/* max_age below min_age: min_age still holds. */
	assert_int_equal(push_jwt_cache_get(&c, ec_key, "K", "T", T0, 1200, 600, 0, &jwt),
			 FERRY_OK);
	assert_int_equal(push_jwt_cache_get(&c, ec_key, "K", "T", T0 + 601, 1200, 600, 0, &jwt),
			 FERRY_OK);
	assert_int_equal(token_iat(jwt), T0);
	assert_int_equal(push_jwt_cache_get(&c, ec_key, "K", "T", T0 + 1200, 1200, 600, 0, &jwt),
			 FERRY_OK);
	assert_int_equal(token_iat(jwt), T0 + 1200);

	/* A failed re-mint keeps the old token in the cache. */
	before = strdup(c.jwt);
	assert_non_null(before);
	assert_int_equal(push_jwt_cache_get(&c, rsa_key, "K", "T", T0 + 9999, 1200, 3000, 0, &jwt),
			 FERRY_EINVAL);
	assert_null(jwt);
	assert_string_equal(c.jwt, before);
	assert_int_equal(c.iat, T0 + 1200);
	free(before);

	assert_int_equal(push_jwt_cache_get(&c, ec_key, "K", "T", T0, -1, 3000, 0, &jwt),
			 FERRY_EINVAL);
	assert_int_equal(push_jwt_cache_get(&c, ec_key, "K", "T", T0, 1200, 0, 0, &jwt),
			 FERRY_EINVAL);
	assert_int_equal(push_jwt_cache_get(NULL, ec_key, "K", "T", T0, 1200, 3000, 0, &jwt),
			 FERRY_EINVAL);
	push_jwt_cache_release(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64url),
		cmocka_unit_test(test_es256),
		cmocka_unit_test(test_es256_tampered),
		cmocka_unit_test(test_es256_escaping),
		cmocka_unit_test(test_es256_errors),
		cmocka_unit_test(test_es256_openssl_cli),
		cmocka_unit_test(test_rs256),
		cmocka_unit_test(test_rs256_errors),
		cmocka_unit_test(test_rs256_openssl_cli),
		cmocka_unit_test(test_apns_key_load),
		cmocka_unit_test(test_key_file_modes),
		cmocka_unit_test(test_sa_good),
		cmocka_unit_test(test_sa_missing_fields),
		cmocka_unit_test(test_sa_bad),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_cache_force),
		cmocka_unit_test(test_cache_limits),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
