/*
 * rawdev.c - a hand-driven protocol peer for integration tests (rawdev.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>

#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define READ_MAX_FRAME (1024 * 1024)

void rawdev_connect(struct rawdev *d, int port, const char *ca_file)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;

	d->len = 0;
	d->ctx = NULL;
	d->ssl = NULL;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d->fd = socket(AF_INET, SOCK_STREAM, 0);
	/* Before connect(), so that the window is small from the start. */
	if (d->fd >= 0 && d->rcvbuf)
		setsockopt(d->fd, SOL_SOCKET, SO_RCVBUF, &d->rcvbuf, sizeof(d->rcvbuf));
	if (d->fd < 0 || connect(d->fd, (struct sockaddr *)&sa, sizeof(sa)))
		fail_msg("cannot connect to port %d: %s", port, strerror(errno));
	setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!ca_file)
		return;
	d->ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(d->ctx, TLS1_2_VERSION);
	if (SSL_CTX_load_verify_locations(d->ctx, ca_file, NULL) != 1)
		fail_msg("cannot load CA '%s'", ca_file);
	SSL_CTX_set_verify(d->ctx, SSL_VERIFY_PEER, NULL);
	d->ssl = SSL_new(d->ctx);
	SSL_set_fd(d->ssl, d->fd);
	SSL_set_tlsext_host_name(d->ssl, "localhost");
	SSL_set1_host(d->ssl, "localhost");
	if (SSL_connect(d->ssl) != 1) {
		char e[256];

		ERR_error_string_n(ERR_get_error(), e, sizeof(e));
		fail_msg("TLS handshake failed: %s", e);
	}
}

unsigned rawdev_local_port(const struct rawdev *d)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sa, &len), 0);
	return ntohs(sa.sin_port);
}

void rawdev_close(struct rawdev *d)
{
	if (d->ssl) {
		SSL_free(d->ssl);
		SSL_CTX_free(d->ctx);
		d->ssl = NULL;
		d->ctx = NULL;
	}
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

void rawdev_write(struct rawdev *d, const void *p, size_t len)
{
	const uint8_t *b = p;

	while (len) {
		ssize_t n = d->ssl ? SSL_write(d->ssl, b, (int)len) : write(d->fd, b, len);

		if (n <= 0)
			fail_msg("write to server failed: %s", strerror(errno));
		b += n;
		len -= (size_t)n;
	}
}

void rawdev_send(struct rawdev *d, const struct proto_frame *f)
{
	static uint8_t out[256 * 1024];
	size_t len;

	if (proto_encode(f, out, sizeof(out), &len))
		fail_msg("cannot encode a %s frame", proto_type_name(f->type));
	rawdev_write(d, out, len);
}

void rawdev_hello(struct rawdev *d, uint64_t version, int64_t device, const char *secret)
{
	struct proto_frame f = { .type = PROTO_HELLO };

	f.u.hello.version = version;
	f.u.hello.device_id = (uint64_t)device;
	f.u.hello.secret.p = (const uint8_t *)secret;
	f.u.hello.secret.len = strlen(secret);
	rawdev_send(d, &f);
}

struct rawdev *rawdev_new(void)
{
	struct rawdev *d = calloc(1, sizeof(*d));

	assert_non_null(d);
	d->fd = -1;
	return d;
}

void rawdev_free(struct rawdev *d)
{
	rawdev_close(d);
	free(d);
}

uint64_t rawdev_login_pending(struct rawdev *d, int port, int64_t device, const char *secret)
{
	rawdev_connect(d, port, NULL);
	rawdev_hello(d, PROTO_VERSION, device, secret);
	return rawdev_expect(d, PROTO_WELCOME, 5000)->u.welcome.pending;
}

void rawdev_login(struct rawdev *d, int port, int64_t device, const char *secret)
{
	uint64_t pending = rawdev_login_pending(d, port, device, secret);

	if (pending)
		fail_msg("device %lld has %llu envelopes pending", (long long)device,
			 (unsigned long long)pending);
	assert_int_equal(rawdev_expect(d, PROTO_QUEUE_EMPTY, 5000)->u.drained, 0);
}

void rawdev_send_text(struct rawdev *d, uint64_t client_id, const char *to, const char *text)
{
	struct proto_frame f = { .type = PROTO_SEND };

	f.u.send.client_id = client_id;
	f.u.send.to_user.p = (const uint8_t *)to;
	f.u.send.to_user.len = strlen(to);
	f.u.send.payload.p = (const uint8_t *)text;
	f.u.send.payload.len = strlen(text);
	rawdev_send(d, &f);
}

void rawdev_ack(struct rawdev *d, uint64_t server_id)
{
	struct proto_frame f = { .type = PROTO_DELIVER_ACK };

	f.u.ids.count = 1;
	f.u.ids.ids[0] = server_id;
	rawdev_send(d, &f);
}

/* Try to decode a frame from what is buffered. */
static int take_frame(struct rawdev *d)
{
	size_t used;
	enum ferry_err rc;

	if (d->len == 0)
		return 0;
	rc = proto_decode(d->buf, d->len, READ_MAX_FRAME, &d->f, &used);
	if (rc)
		fail_msg("server sent a malformed frame (%s)", ferry_strerror(rc));
	if (used == 0)
		return 0;
	/* Keep the frame's bytes stable while the buffer moves on. */
	memcpy(d->frame_copy, d->buf, used);
	rc = proto_decode(d->frame_copy, used, READ_MAX_FRAME, &d->f, &used);
	assert_int_equal(rc, FERRY_OK);
	memmove(d->buf, d->buf + used, d->len - used);
	d->len -= used;
	return 1;
}

int rawdev_read(struct rawdev *d, int timeout_ms)
{
	struct pollfd pfd = { .fd = d->fd, .events = POLLIN };

	for (;;) {
		ssize_t n;

		if (take_frame(d))
			return 1;
		if (!d->ssl || SSL_pending(d->ssl) == 0) {
			int r = poll(&pfd, 1, timeout_ms);

			if (r == 0)
				return 0;
			if (r < 0)
				fail_msg("poll: %s", strerror(errno));
		}
		if (d->len == sizeof(d->buf))
			fail_msg("frame larger than the test's buffer");
		n = d->ssl ? SSL_read(d->ssl, d->buf + d->len, (int)(sizeof(d->buf) - d->len))
			   : read(d->fd, d->buf + d->len, sizeof(d->buf) - d->len);
		if (n <= 0) {
			ERR_clear_error();
			return -1;
		}
		d->len += (size_t)n;
	}
}

const struct proto_frame *rawdev_expect(struct rawdev *d, enum proto_type type, int timeout_ms)
{
	int r = rawdev_read(d, timeout_ms);

	if (r == 0)
		fail_msg("expected %s, got nothing within %d ms", proto_type_name(type),
			 timeout_ms);
	if (r < 0)
		fail_msg("expected %s, the server closed the connection", proto_type_name(type));
	if (d->f.type != type) {
		if (d->f.type == PROTO_ERROR)
			fail_msg("expected %s, got ERROR %s '%.*s'", proto_type_name(type),
				 proto_error_name(d->f.u.error.code), (int)d->f.u.error.text.len,
				 (const char *)d->f.u.error.text.p);
		if (d->f.type == PROTO_NACK)
			fail_msg("expected %s, got NACK %s '%.*s'", proto_type_name(type),
				 proto_nack_name(d->f.u.nack.reason), (int)d->f.u.nack.text.len,
				 (const char *)d->f.u.nack.text.p);
		fail_msg("expected %s, got %s", proto_type_name(type), proto_type_name(d->f.type));
	}
	return &d->f;
}

void rawdev_expect_error_close(struct rawdev *d, unsigned code)
{
	const struct proto_frame *f = rawdev_expect(d, PROTO_ERROR, 5000);

	if (f->u.error.code != code)
		fail_msg("expected ERROR %s, got ERROR %s '%.*s'", proto_error_name(code),
			 proto_error_name(f->u.error.code), (int)f->u.error.text.len,
			 (const char *)f->u.error.text.p);
	if (rawdev_read(d, 5000) != -1)
		fail_msg("expected the connection closed after ERROR %s", proto_error_name(code));
}

void rawdev_expect_silence(struct rawdev *d, int timeout_ms)
{
	int r = rawdev_read(d, timeout_ms);

	if (r == 1)
		fail_msg("expected silence, got %s", proto_type_name(d->f.type));
	if (r < 0)
		fail_msg("expected silence, the server closed the connection");
}
