/*
 * creds.c - APNs .p8 keys and Google service-account files.
 *
 * A file is read whole into one buffer of PUSH_CREDS_MAX_FILE + 1 bytes
 * allocated up front (no realloc that would leave copies of a key behind),
 * and that buffer is cleansed before it is freed. PEM is taken apart by
 * hand (PEM_read_bio_ex into OpenSSL's secure heap, then d2i of the PKCS#8
 * structure) rather than with PEM_read_bio_PrivateKey, so that the label is
 * checked first, traditional "EC/RSA PRIVATE KEY" blocks get a message of
 * their own, and an encrypted key can never make OpenSSL prompt for a
 * password on the terminal.
 *
 * OpenSSL's error queue is cleared after every failure here, so that a bad
 * key cannot confuse a later SSL_get_error() on the same thread.
 *
 * Every file that holds a private key must be accessible to its owner only
 * (common/secfile.h), checked on the descriptor that is then read. That
 * includes the certificate file of certificate-based APNs when the key is
 * in it; a certificate alone is public.
 *
 * Messages: "cannot read <what> '<path>': <why>", or "<what> '<path>':
 * [field '<name>': ]<problem>"; never quoting key material.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "push/creds.h"
#include "push/jwt.h"
#include "common/secfile.h"
#include "common/banned.h"

#define WHAT_APNS "APNs key file"
#define WHAT_SA "service-account file"

/* What a message is about: a file, maybe one field of it. */
struct subject {
	const char *what;
	const char *path;
	const char *field; /* NULL: the file as a whole */
};

static void fail(char *err, size_t errlen, const struct subject *sub, const char *fmt, ...)
	FERRY_PRINTF(4, 5);

static void fail(char *err, size_t errlen, const struct subject *sub, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || !errlen)
		return;
	if (sub->field)
		n = snprintf(err, errlen, "%s '%s': field '%s': ", sub->what, sub->path,
			     sub->field);
	else
		n = snprintf(err, errlen, "%s '%s': ", sub->what, sub->path);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static void cannot_read(char *err, size_t errlen, const struct subject *sub, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "cannot read %s '%s': %s", sub->what, sub->path, why);
}

static void nomem(char *err, size_t errlen)
{
	if (err && errlen)
		snprintf(err, errlen, "out of memory");
}

/*
 * Read all of @path into *out (malloc'ed, NUL-terminated, *len bytes). The
 * caller cleanses and frees it with OPENSSL_clear_free(*out, *len + 1).
 */
static enum ferry_err read_secret_file(const struct subject *sub, char **out, size_t *len,
				       char *err, size_t errlen)
{
	enum ferry_err rc = FERRY_ECONFIG;
	char tmp[128], *data = NULL;
	size_t have = 0;
	struct stat st;
	ssize_t n = 0;
	int fd;

	*out = NULL;
	fd = open(sub->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cannot_read(err, errlen, sub, strerror_r(errno, tmp, sizeof(tmp)));
		return FERRY_ECONFIG;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		cannot_read(err, errlen, sub, "not a regular file");
		goto close_fd;
	}
	if (secfile_check(fd, sub->what, sub->path, err, errlen))
		goto close_fd;
	if (st.st_size > PUSH_CREDS_MAX_FILE) {
		fail(err, errlen, sub, "larger than %d bytes", PUSH_CREDS_MAX_FILE);
		goto close_fd;
	}
	data = malloc(PUSH_CREDS_MAX_FILE + 1);
	if (!data) {
		nomem(err, errlen);
		rc = FERRY_ENOMEM;
		goto close_fd;
	}
	/* Up to one byte past the cap, to notice a file that grew meanwhile. */
	while (have <= PUSH_CREDS_MAX_FILE) {
		n = read(fd, data + have, PUSH_CREDS_MAX_FILE + 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	if (n < 0)
		cannot_read(err, errlen, sub, strerror_r(errno, tmp, sizeof(tmp)));
	else if (have > PUSH_CREDS_MAX_FILE)
		fail(err, errlen, sub, "larger than %d bytes", PUSH_CREDS_MAX_FILE);
	else
		rc = FERRY_OK;
	if (rc) {
		OPENSSL_clear_free(data, PUSH_CREDS_MAX_FILE + 1);
		goto close_fd;
	}
	data[have] = '\0';
	*out = data;
	*len = have;
close_fd:
	close(fd);
	return rc;
}

/* Decode the PKCS#8 DER of a "PRIVATE KEY" block. */
static EVP_PKEY *pkcs8_decode(const unsigned char *der, long len)
{
	const unsigned char *p = der;
	PKCS8_PRIV_KEY_INFO *p8;
	EVP_PKEY *key;

	p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, len);
	if (!p8)
		return NULL;
	key = EVP_PKCS82PKEY(p8);
	/* Frees and cleanses the key octets it held. */
	PKCS8_PRIV_KEY_INFO_free(p8);
	return key;
}

/*
 * Parse the first PEM block of @len bytes at @pem as an unencrypted PKCS#8
 * private key into *out. FERRY_ECONFIG (message in @err) or FERRY_ENOMEM.
 */
static enum ferry_err pem_pkcs8_key(const char *pem, size_t len, const struct subject *sub,
				    EVP_PKEY **out, char *err, size_t errlen)
{
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	enum ferry_err rc = FERRY_ECONFIG;
	long derlen = 0;
	BIO *bio;

	*out = NULL;
	if (len > PUSH_CREDS_MAX_FILE) {
		fail(err, errlen, sub, "larger than %d bytes", PUSH_CREDS_MAX_FILE);
		return FERRY_ECONFIG;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio) {
		nomem(err, errlen);
		return FERRY_ENOMEM;
	}
	if (PEM_read_bio_ex(bio, &name, &header, &der, &derlen, PEM_FLAG_SECURE) != 1) {
		fail(err, errlen, sub, "no PEM private key found");
		goto free_bio;
	}
	if (strcmp(name, PEM_STRING_PKCS8INF) == 0) {
		*out = pkcs8_decode(der, derlen);
		if (*out)
			rc = FERRY_OK;
		else
			fail(err, errlen, sub, "the PRIVATE KEY block is not a valid PKCS#8 key");
	} else if (strcmp(name, PEM_STRING_PKCS8) == 0) {
		fail(err, errlen, sub, "the key is encrypted; an unencrypted PKCS#8 key is needed");
	} else if (strcmp(name, PEM_STRING_ECPRIVATEKEY) == 0 ||
		   strcmp(name, PEM_STRING_RSA) == 0) {
		fail(err, errlen, sub,
		     "'%s' is not PKCS#8; convert it with 'openssl pkcs8 -topk8 -nocrypt'", name);
	} else {
		fail(err, errlen, sub, "found a '%.40s' PEM block, not a PRIVATE KEY", name);
	}
	OPENSSL_secure_clear_free(der, (size_t)derlen);
	OPENSSL_secure_free(header);
	OPENSSL_secure_free(name);
free_bio:
	BIO_free(bio);
	if (rc)
		ERR_clear_error();
	return rc;
}

enum ferry_err push_apns_key_load(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	struct subject sub = { WHAT_APNS, path, NULL };
	enum ferry_err rc;
	EVP_PKEY *key;
	char curve[80];
	size_t len, n;
	char *text;

	if (!out)
		return FERRY_EINVAL;
	*out = NULL;
	if (!path)
		return FERRY_EINVAL;
	rc = read_secret_file(&sub, &text, &len, err, errlen);
	if (rc)
		return rc;
	rc = pem_pkcs8_key(text, len, &sub, &key, err, errlen);
	OPENSSL_clear_free(text, PUSH_CREDS_MAX_FILE + 1);
	if (rc)
		return rc;
	if (!push_jwt_key_is_p256(key)) {
		if (!EVP_PKEY_is_a(key, "EC"))
			fail(err, errlen, &sub, "the key is %s, APNs needs EC P-256",
			     EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "?");
		else if (EVP_PKEY_get_group_name(key, curve, sizeof(curve), &n) == 1)
			fail(err, errlen, &sub, "the EC key is on curve %s, APNs needs P-256",
			     curve);
		else
			fail(err, errlen, &sub,
			     "the EC key is not on a named curve, APNs needs P-256");
		EVP_PKEY_free(key);
		ERR_clear_error();
		return FERRY_ECONFIG;
	}
	*out = key;
	return FERRY_OK;
}

/*
 * Find the string member @sub->field of @root; it must be non-empty. It
 * holds no NUL: without JSON_ALLOW_NUL the parser refuses \u0000. *val and
 * *len borrow from @root.
 */
static enum ferry_err member_str(json_t *root, const struct subject *sub, const char **val,
				 size_t *len, char *err, size_t errlen)
{
	json_t *v = json_object_get(root, sub->field);

	if (!v) {
		fail(err, errlen, sub, "missing");
		return FERRY_ECONFIG;
	}
	if (!json_is_string(v)) {
		fail(err, errlen, sub, "not a string");
		return FERRY_ECONFIG;
	}
	*val = json_string_value(v);
	*len = json_string_length(v);
	if (*len == 0) {
		fail(err, errlen, sub, "empty");
		return FERRY_ECONFIG;
	}
	return FERRY_OK;
}

/* Copy the string member @field of @root into *dst. */
static enum ferry_err member_dup(json_t *root, const struct subject *file, const char *field,
				 char **dst, char *err, size_t errlen)
{
	struct subject sub = { file->what, file->path, field };
	const char *val;
	enum ferry_err rc;
	size_t len;

	rc = member_str(root, &sub, &val, &len, err, errlen);
	if (rc)
		return rc;
	*dst = strdup(val);
	if (!*dst) {
		nomem(err, errlen);
		return FERRY_ENOMEM;
	}
	return FERRY_OK;
}

static int printable(const char *s)
{
	for (; *s; s++) {
		if (*s < 0x20 || *s > 0x7e)
			return 0;
	}
	return 1;
}

/* Cleanse the PEM text of "private_key" in the parsed document, if any. */
static void scrub_private_key(json_t *root)
{
	json_t *v = json_object_get(root, "private_key");

	if (json_is_string(v))
		OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

/* Check "type" and turn "private_key" into sa->key. */
static enum ferry_err sa_type_and_key(json_t *root, const struct subject *file,
				      struct push_service_account *sa, char *err, size_t errlen)
{
	struct subject sub = { file->what, file->path, "type" };
	enum ferry_err rc;
	const char *val;
	size_t len;
	int bits;

	rc = member_str(root, &sub, &val, &len, err, errlen);
	if (rc)
		return rc;
	if (strcmp(val, "service_account") != 0) {
		if (len <= 40 && printable(val))
			fail(err, errlen, &sub, "is '%s', expected 'service_account'", val);
		else
			fail(err, errlen, &sub, "is not 'service_account'");
		return FERRY_ECONFIG;
	}
	sub.field = "private_key";
	rc = member_str(root, &sub, &val, &len, err, errlen);
	if (rc)
		return rc;
	rc = pem_pkcs8_key(val, len, &sub, &sa->key, err, errlen);
	if (rc)
		return rc;
	if (!EVP_PKEY_is_a(sa->key, "RSA")) {
		fail(err, errlen, &sub, "the key is %s, not RSA",
		     EVP_PKEY_get0_type_name(sa->key) ? EVP_PKEY_get0_type_name(sa->key) : "?");
		return FERRY_ECONFIG;
	}
	bits = EVP_PKEY_get_bits(sa->key);
	if (bits < PUSH_CREDS_MIN_RSA_BITS) {
		fail(err, errlen, &sub, "the RSA key has %d bits, at least %d are needed", bits,
		     PUSH_CREDS_MIN_RSA_BITS);
		return FERRY_ECONFIG;
	}
	return FERRY_OK;
}

enum ferry_err push_service_account_load(const char *path, struct push_service_account *out,
					 char *err, size_t errlen)
{
	struct subject file = { WHAT_SA, path, NULL };
	enum ferry_err rc;
	json_error_t jerr;
	json_t *root;
	size_t len;
	char *text;

	if (!out)
		return FERRY_EINVAL;
	memset(out, 0, sizeof(*out));
	if (!path)
		return FERRY_EINVAL;
	rc = read_secret_file(&file, &text, &len, err, errlen);
	if (rc)
		return rc;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	OPENSSL_clear_free(text, PUSH_CREDS_MAX_FILE + 1);
	if (!root) {
		/* jerr.text may quote the input, which may be the key: position only. */
		if (json_error_code(&jerr) == json_error_out_of_memory) {
			nomem(err, errlen);
			return FERRY_ENOMEM;
		}
		fail(err, errlen, &file, "not valid JSON (line %d, column %d)", jerr.line,
		     jerr.column);
		return FERRY_ECONFIG;
	}
	if (!json_is_object(root)) {
		fail(err, errlen, &file, "not a JSON object");
		rc = FERRY_ECONFIG;
		goto free_root;
	}
	rc = sa_type_and_key(root, &file, out, err, errlen);
	if (!rc)
		rc = member_dup(root, &file, "project_id", &out->project_id, err, errlen);
	if (!rc)
		rc = member_dup(root, &file, "private_key_id", &out->private_key_id, err, errlen);
	if (!rc)
		rc = member_dup(root, &file, "client_email", &out->client_email, err, errlen);
	if (!rc)
		rc = member_dup(root, &file, "token_uri", &out->token_uri, err, errlen);
free_root:
	scrub_private_key(root);
	json_decref(root);
	if (rc)
		push_service_account_release(out);
	return rc;
}

void push_service_account_release(struct push_service_account *sa)
{
	if (!sa)
		return;
	free(sa->project_id);
	free(sa->private_key_id);
	free(sa->client_email);
	free(sa->token_uri);
	EVP_PKEY_free(sa->key);
	memset(sa, 0, sizeof(*sa));
}

/* A PEM password callback that has none: encrypted keys fail to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

enum ferry_err push_apns_cert_check(const char *cert_path, const char *key_path, char *err,
				    size_t errlen)
{
	char tmp[128];
	const char *kpath = key_path && *key_path ? key_path : cert_path;
	enum ferry_err rc = FERRY_ECONFIG;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	FILE *f;

	f = fopen(cert_path, "re");
	if (!f) {
		snprintf(err, errlen, "cannot read APNs certificate '%s': %s", cert_path,
			 strerror_r(errno, tmp, sizeof(tmp)));
		return FERRY_ECONFIG;
	}
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!cert) {
		snprintf(err, errlen, "APNs certificate '%s' holds no PEM certificate", cert_path);
		goto out;
	}
	f = fopen(kpath, "re");
	if (!f) {
		snprintf(err, errlen, "cannot read APNs certificate key '%s': %s", kpath,
			 strerror_r(errno, tmp, sizeof(tmp)));
		goto out;
	}
	if (secfile_check(fileno(f),
			  kpath == cert_path ? "APNs certificate (and key)"
					     : "APNs certificate key",
			  kpath, err, errlen)) {
		fclose(f);
		goto out;
	}
	/* No passphrase callback: an encrypted key fails here, not later. */
	key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	if (!key) {
		snprintf(err, errlen, "'%s' holds no unencrypted PEM private key", kpath);
		goto out;
	}
	if (X509_check_private_key(cert, key) != 1) {
		snprintf(err, errlen, "the key in '%s' does not match the certificate '%s'", kpath,
			 cert_path);
		goto out;
	}
	rc = FERRY_OK;
out:
	ERR_clear_error();
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}
