/*
 * tls.c - libferry's TLS transport on OpenSSL 3.
 *
 * Client contexts speak TLS 1.2 or later, verify the server's chain against
 * the given CA file or the system's default store, and check the certificate
 * against the name the application connects to: a DNS name (also sent as
 * SNI) or an IP literal (matched against the IP SANs, no SNI). OpenSSL runs
 * directly on the non-blocking socket; WANT_READ/WANT_WRITE go back to the
 * poll loop. SSL_write is always retried with the length that asked for the
 * retry (client.c keeps it), and the write buffer may move in between
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). A peer closing without close_notify
 * is an end of stream: frames carry their own lengths, so a truncated frame
 * is still detected. The error queue is cleared before each call, so that
 * SSL_get_error() sees only this call's errors (it is per thread).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "client/client_int.h"
#include "common/banned.h"

/* "@what: <OpenSSL's reason>", falling back on errno, then on "connection closed". */
static void ssl_reason(char *err, size_t errlen, const char *what)
{
	char reason[256];
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	else
		snprintf(reason, sizeof(reason), "%s",
			 errno ? strerror(errno) : "connection closed");
	snprintf(err, errlen, "%s: %s", what, reason);
	ERR_clear_error();
}

SSL_CTX *fc_tls_context(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		ssl_reason(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			char what[FC_ERR_MAX];

			snprintf(what, sizeof(what), "cannot load CA file '%s'", ca_file);
			ssl_reason(err, errlen, what);
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_reason(err, errlen, "cannot load the system's CA store");
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static int is_ip(const char *name)
{
	unsigned char a[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

SSL *fc_tls_new(SSL_CTX *ctx, int fd, const char *name, char *err, size_t errlen)
{
	SSL *ssl = SSL_new(ctx);
	int ok;

	if (!ssl) {
		ssl_reason(err, errlen, "cannot create a TLS connection");
		return NULL;
	}
	if (is_ip(name))
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
	else
		ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
	if (!ok || SSL_set_fd(ssl, fd) != 1) {
		ssl_reason(err, errlen, "cannot set up the TLS connection");
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

enum fc_io fc_tls_handshake(SSL *ssl, const char *name, char *err, size_t errlen)
{
	long vr;
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_connect(ssl);
	if (r == 1)
		return FC_IO_DONE;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return FC_IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return FC_IO_WANT_WRITE;
	default:
		break;
	}
	vr = SSL_get_verify_result(ssl);
	if (vr != X509_V_OK) {
		snprintf(err, errlen, "cannot verify the server's certificate for '%s': %s", name,
			 X509_verify_cert_error_string(vr));
		ERR_clear_error();
	} else {
		ssl_reason(err, errlen, "TLS handshake failed");
	}
	return FC_IO_ERROR;
}

static enum fc_io ssl_result(SSL *ssl, int r, const char *what, char *err, size_t errlen)
{
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return FC_IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return FC_IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return FC_IO_EOF;
	case SSL_ERROR_SYSCALL:
		if (!ERR_peek_error() && !errno)
			return FC_IO_EOF;
		/* fall through */
	default:
		ssl_reason(err, errlen, what);
		return FC_IO_ERROR;
	}
}

enum fc_io fc_tls_read(SSL *ssl, void *p, size_t n, size_t *got, char *err, size_t errlen)
{
	int r;

	*got = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_read(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	if (r > 0) {
		*got = (size_t)r;
		return FC_IO_DONE;
	}
	return ssl_result(ssl, r, "TLS read from the server failed", err, errlen);
}

enum fc_io fc_tls_write(SSL *ssl, const void *p, size_t n, size_t *put, char *err, size_t errlen)
{
	int r;

	*put = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_write(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	if (r > 0) {
		*put = (size_t)r;
		return FC_IO_DONE;
	}
	return ssl_result(ssl, r, "TLS write to the server failed", err, errlen);
}

void fc_tls_close(SSL *ssl)
{
	if (!ssl)
		return;
	if (SSL_is_init_finished(ssl))
		SSL_shutdown(ssl); /* best effort: close_notify if it can go now */
	ERR_clear_error();
	SSL_free(ssl);
}
