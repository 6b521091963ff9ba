/*
 * tls.c - the device port's TLS context: OpenSSL 3 with Mozilla's
 * "intermediate" configuration, and its reload on SIGHUP.
 *
 * Policy (Mozilla Server Side TLS, guideline 6.0): TLS 1.2 and 1.3 only; in
 * TLS 1.2 only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (6.0
 * dropped the DHE-RSA suites of 5.x, whose key exchange costs the server far
 * more than ECDHE's); TLS 1.3's three suites; the X25519, P-256 and P-384
 * groups (6.0 puts X25519MLKEM768 first, which needs OpenSSL 3.5); the
 * client's cipher order, not ours (every suite left is strong, and a phone
 * without AES instructions picks ChaCha20); no compression (CRIME), no
 * renegotiation (a client could make us redo the expensive half of a
 * handshake at will). Everything is set explicitly, so that neither
 * OpenSSL's defaults nor the system's openssl.cnf can widen it.
 * SSL_MODE_RELEASE_BUFFERS: an idle connection keeps no TLS buffers.
 *
 * Reload: SIGHUP builds a new context from the files (the key must match the
 * certificate, the chain must load) on the main thread; only if that works is
 * it swapped in. gw->tls is the context new connections start from, under
 * gw->tls_lock: a worker takes a reference under the lock and makes its SSL
 * from it after, so the lock is held for two pointer operations. An SSL
 * holds a reference to the context it was made from, so established
 * connections keep the old certificate and never notice; OpenSSL frees the
 * old context when the last of them closes.
 *
 * Connections drive OpenSSL through memory BIOs (conn.c): libuv moves the
 * ciphertext, OpenSSL never touches a socket.
 *
 * The key file must be accessible to its owner only, like sshd's and
 * PostgreSQL's keys: a TLS key that others can read lets them pose as the
 * server to every device. That holds at start and on every reload.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/secfile.h"
#include "gateway/gateway_int.h"
#include "common/banned.h"

#define TLS12_CIPHERS                                                \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

/* What the log says of a certificate: subject, expiry, fingerprint. */
#define ABOUT_MAX 512

struct gateway_tls {
	SSL_CTX *ctx;
	char about[ABOUT_MAX];
};

static void ssl_reason(char *err, size_t errlen, const char *what, const char *file)
{
	char reason[256];
	unsigned long e = ERR_get_error();

	/* OpenSSL's reasons name what failed ("key values mismatch",
	 * "unsupported"), never the bytes of a key. */
	ERR_error_string_n(e, reason, sizeof(reason));
	snprintf(err, errlen, "%s '%s': %s", what, file, e ? reason : "unknown error");
	ERR_clear_error();
}

/* The protocol versions, ciphers and options of every context we make. */
static int set_policy(SSL_CTX *ctx)
{
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* 112-bit keys at least: RSA under 2048 bits is refused on loading. */
	SSL_CTX_set_security_level(ctx, 2);
	return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
	       SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) == 1 &&
	       SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) == 1 &&
	       SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) == 1;
}

/* A PEM password callback that has none: an encrypted key fails to load
 * instead of making OpenSSL prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/*
 * Load the private key in @key_file into @ctx. The file must be accessible
 * to its owner only (common/secfile.h), checked on the descriptor the key
 * is then read from, so that the file checked is the file used.
 */
static int use_key_file(SSL_CTX *ctx, const char *key_file, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	char tmp[128];
	BIO *bio;
	int fd, rc = -1;

	fd = open(key_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot load TLS key '%s': %s", key_file,
			 strerror_r(errno, tmp, sizeof(tmp)));
		return -1;
	}
	if (secfile_check(fd, "TLS key", key_file, err, errlen))
		goto close_fd;
	bio = BIO_new_fd(fd, BIO_NOCLOSE);
	if (bio)
		key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (!key || SSL_CTX_use_PrivateKey(ctx, key) != 1)
		ssl_reason(err, errlen, "cannot load TLS key", key_file);
	else
		rc = 0;
	EVP_PKEY_free(key);
close_fd:
	close(fd);
	return rc;
}

SSL_CTX *gw_tls_context(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	if (!set_policy(ctx)) {
		snprintf(err, errlen, "cannot set the TLS versions and ciphers");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ssl_reason(err, errlen, "cannot load TLS certificate", cert_file);
		goto fail;
	}
	if (use_key_file(ctx, key_file, err, errlen))
		goto fail;
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_reason(err, errlen, "TLS key does not match the certificate", key_file);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* "subject=\"CN=x\" not_after=2026-01-31T12:00:00Z sha256=AB01..." for @ctx's
 * certificate. RFC 2253 escaping keeps quotes and control characters of a
 * subject out of the log line. */
static void describe(SSL_CTX *ctx, char *out, size_t n)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	unsigned char md[EVP_MAX_MD_SIZE];
	char subject[256] = "?", expiry[32] = "?", hex[2 * EVP_MAX_MD_SIZE + 1] = "";
	unsigned mdlen = 0;
	BIO *b = BIO_new(BIO_s_mem());
	struct tm tm;

	if (b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
		int len = BIO_read(b, subject, (int)sizeof(subject) - 1);

		subject[len > 0 ? len : 0] = '\0';
	}
	BIO_free(b);
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
		strftime(expiry, sizeof(expiry), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
		for (unsigned i = 0; i < mdlen; i++)
			snprintf(hex + 2 * i, 3, "%02X", md[i]);
	snprintf(out, n, "subject=\"%s\" not_after=%s sha256=%s", subject, expiry, hex);
	ERR_clear_error();
}

void gw_tls_log_loaded(SSL_CTX *ctx)
{
	char about[ABOUT_MAX];

	describe(ctx, about, sizeof(about));
	log_info("event=tls_certificate %s", about);
}

SSL *gw_tls_new_ssl(struct gateway *gw)
{
	SSL_CTX *ctx;
	SSL *ssl;

	pthread_mutex_lock(&gw->tls_lock);
	ctx = gw->tls;
	if (ctx && SSL_CTX_up_ref(ctx) != 1)
		ctx = NULL;
	pthread_mutex_unlock(&gw->tls_lock);
	if (!ctx)
		return NULL;
	ssl = SSL_new(ctx); /* holds a reference of its own */
	SSL_CTX_free(ctx);
	return ssl;
}

enum ferry_err gateway_tls_load(const struct gateway *gw, const struct ferry_config *cfg,
				struct gateway_tls **out, char *err, size_t errlen)
{
	struct gateway_tls *tls;

	*out = NULL;
	/* gw->tls changes on this thread only (gateway_tls_swap()): no lock. A
	 * gateway that started without TLS has no listener to serve it on. */
	if (!gw || !gw->tls || !*cfg->gateway.tls_cert || !*cfg->gateway.tls_key)
		return FERRY_OK;
	tls = calloc(1, sizeof(*tls));
	if (!tls) {
		snprintf(err, errlen, "cannot load the TLS certificate: out of memory");
		return FERRY_ENOMEM;
	}
	tls->ctx = gw_tls_context(cfg->gateway.tls_cert, cfg->gateway.tls_key, err, errlen);
	if (!tls->ctx) {
		free(tls);
		return FERRY_ECONFIG;
	}
	describe(tls->ctx, tls->about, sizeof(tls->about));
	*out = tls;
	return FERRY_OK;
}

void gateway_tls_swap(struct gateway *gw, struct gateway_tls *tls)
{
	SSL_CTX *old;

	if (!tls)
		return;
	pthread_mutex_lock(&gw->tls_lock);
	old = gw->tls;
	gw->tls = tls->ctx;
	pthread_mutex_unlock(&gw->tls_lock);
	/* Our reference only: connections made from it hold theirs. */
	SSL_CTX_free(old);
	log_info("event=tls_reloaded %s", tls->about);
	free(tls);
}

void gateway_tls_free(struct gateway_tls *tls)
{
	if (!tls)
		return;
	SSL_CTX_free(tls->ctx);
	free(tls);
}
