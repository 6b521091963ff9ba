/*
 * creds.h - the push providers' credentials, read from files.
 *
 * APNs token auth uses a .p8 key from Apple's developer portal: an
 * unencrypted PKCS#8 PEM EC key on P-256. FCM uses a Google service-account
 * JSON file, whose private_key is a PKCS#8 PEM RSA key. Both are read once
 * (at start and on SIGHUP), validated completely, and turned into EVP_PKEYs.
 *
 * Errors are FERRY_ECONFIG (or FERRY_ENOMEM) with a one-line message in
 * @err that names the file and what is wrong with it, e.g.
 *   service-account file 'fcm.json': field 'client_email' is missing
 * A message never contains key material: invalid JSON is reported by line
 * and column only, since the parser's own text may quote the input.
 *
 * Secrets: a file that holds a private key must give its group and others
 * no access at all (common/secfile.h); a loader refuses it otherwise, with
 * a message that says which chmod fixes it. Every buffer that held
 * private-key text is cleansed before it is freed. (The JSON parser's own scratch memory is freed
 * by jansson without cleansing; it cannot be reached from here.) Nothing here logs.
 */
#ifndef FERRY_PUSH_CREDS_H
#define FERRY_PUSH_CREDS_H

#include <stddef.h>

#include <openssl/evp.h>

#include "common/err.h"

/* Largest credential file read; real ones are well under 4 KiB. */
#define PUSH_CREDS_MAX_FILE (64 * 1024)
/* Smallest RSA modulus accepted for a service account, in bits. */
#define PUSH_CREDS_MIN_RSA_BITS 2048

/*
 * Load the APNs key in @path: PEM "PRIVATE KEY" (PKCS#8, unencrypted), EC
 * on P-256. On success *out is the caller's (EVP_PKEY_free). Returns
 * FERRY_ECONFIG with a message naming @path when the file cannot be read,
 * is larger than PUSH_CREDS_MAX_FILE, has group or world access, holds no
 * PKCS#8 PEM key, or the key is not EC P-256; FERRY_ENOMEM. *out is NULL on
 * failure.
 */
enum ferry_err push_apns_key_load(const char *path, EVP_PKEY **out, char *err,
				  size_t errlen) FERRY_WUR;

/*
 * Check an APNs client certificate for certificate-based authentication:
 * @cert_path holds a PEM certificate, and its private key is in @key_path
 * (NULL or "": in @cert_path too), unencrypted, owner-only, and matches it.
 * Nothing is kept: libcurl reads the files for each new connection, so the
 * mode is checked here, at start and on SIGHUP, not on every read.
 * FERRY_ECONFIG with a message naming the file; FERRY_ENOMEM.
 */
enum ferry_err push_apns_cert_check(const char *cert_path, const char *key_path, char *err,
				    size_t errlen) FERRY_WUR;

/* A Google service account; all strings malloc'ed, owned by the struct. */
struct push_service_account {
	char *project_id;
	char *private_key_id; /* the JWT header's kid */
	char *client_email;   /* the assertion's iss */
	char *token_uri;      /* the assertion's aud, and where to post it */
	EVP_PKEY *key;	      /* RSA, at least PUSH_CREDS_MIN_RSA_BITS */
};

/*
 * Load the service-account JSON file @path into @out (overwritten; release
 * it with push_service_account_release()). Required: "type" equal to
 * "service_account"; non-empty strings "project_id", "private_key_id",
 * "private_key" (PEM PKCS#8 RSA), "client_email", "token_uri". Other members
 * are ignored. Returns FERRY_ECONFIG with a message naming @path and the
 * field at fault (or the file's mode, if its group or others have access),
 * FERRY_ENOMEM; on failure @out is zeroed.
 */
enum ferry_err push_service_account_load(const char *path, struct push_service_account *out,
					 char *err, size_t errlen) FERRY_WUR;

/* Free what @sa holds and zero it; a zeroed struct is fine, NULL too. */
void push_service_account_release(struct push_service_account *sa);

#endif
