/*
 * tls.c - the device port's TLS context: OpenSSL 3 with Mozilla's
 * "intermediate" configuration.
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
 * Connections drive OpenSSL through memory BIOs (conn.c): libuv moves the
 * ciphertext, OpenSSL never touches a socket.
 */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gateway/gateway_int.h"
#include "common/banned.h"

#define TLS12_CIPHERS                                                \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

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
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_reason(err, errlen, "cannot load TLS key", key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_reason(err, errlen, "TLS key does not match the certificate", key_file);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}
