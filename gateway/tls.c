/*
 * tls.c - the server's TLS context: OpenSSL 3, TLS 1.2 and later only,
 * forward-secret AEAD ciphers, no compression or renegotiation, and
 * SSL_MODE_RELEASE_BUFFERS so that an idle connection keeps no TLS buffers.
 *
 * Connections drive OpenSSL through memory BIOs (conn.c): libuv moves the
 * ciphertext, OpenSSL never touches a socket.
 */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gateway/gateway_int.h"
#include "common/banned.h"

static void ssl_reason(char *err, size_t errlen, const char *what, const char *file)
{
	char reason[256];
	unsigned long e = ERR_get_error();

	ERR_error_string_n(e, reason, sizeof(reason));
	snprintf(err, errlen, "%s '%s': %s", what, file, e ? reason : "unknown error");
	ERR_clear_error();
}

SSL_CTX *gw_tls_context(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20")) {
		snprintf(err, errlen, "cannot set the TLS 1.2 cipher list");
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
