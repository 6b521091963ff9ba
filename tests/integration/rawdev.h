/*
 * rawdev.h - a device speaking the protocol by hand, for integration tests.
 *
 * Unlike libferry it does nothing on its own: no acks, no pings, no retries,
 * so tests can send exactly the frames (or bytes) they mean and see exactly
 * what the server answers. Blocking sockets with timeouts; optional TLS.
 * Every failure fails the test, except where a function says otherwise.
 */
#ifndef FERRY_TESTS_RAWDEV_H
#define FERRY_TESTS_RAWDEV_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "gateway/proto.h"

struct rawdev {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	uint8_t buf[256 * 1024];
	size_t len;			/* bytes in buf */
	struct proto_frame f;		/* the last frame read */
	uint8_t frame_copy[256 * 1024]; /* f points into this */
	int rcvbuf;			/* SO_RCVBUF set before connecting; 0: default */
};

/* A device on the heap (it holds two frame buffers: too big for a stack),
 * not connected; rawdev_free() closes and frees it. */
struct rawdev *rawdev_new(void);
void rawdev_free(struct rawdev *d);

/* Connect to 127.0.0.1:@port; with @ca_file (not NULL) over TLS, verifying
 * the certificate against it (name "localhost"). */
void rawdev_connect(struct rawdev *d, int port, const char *ca_file);

/* Connect, HELLO, expect WELCOME with nothing pending and QUEUE_EMPTY: the
 * device is live. */
void rawdev_login(struct rawdev *d, int port, int64_t device, const char *secret);

/* Connect, HELLO, expect WELCOME; returns its pending count. What follows
 * (stored DELIVERs, QUEUE_EMPTY) is the test's to read. */
uint64_t rawdev_login_pending(struct rawdev *d, int port, int64_t device, const char *secret);

void rawdev_close(struct rawdev *d);
/* The connection's own port (as the server sees it as the peer's). */
unsigned rawdev_local_port(const struct rawdev *d);

void rawdev_write(struct rawdev *d, const void *p, size_t len);
void rawdev_send(struct rawdev *d, const struct proto_frame *f);
void rawdev_hello(struct rawdev *d, uint64_t version, int64_t device, const char *secret);

/* Send SEND with one payload for all of @to's devices. */
void rawdev_send_text(struct rawdev *d, uint64_t client_id, const char *to, const char *text);

/*
 * Read one frame within @timeout_ms. Returns 1 and fills d->f, 0 on timeout,
 * -1 when the server closed the connection.
 */
int rawdev_read(struct rawdev *d, int timeout_ms);

/* Read one frame of @type (fails the test on anything else, timeout, EOF). */
const struct proto_frame *rawdev_expect(struct rawdev *d, enum proto_type type, int timeout_ms);

/* Expect ERROR @code and then the connection closed. */
void rawdev_expect_error_close(struct rawdev *d, unsigned code);

/* Expect no frame at all within @timeout_ms. */
void rawdev_expect_silence(struct rawdev *d, int timeout_ms);

void rawdev_ack(struct rawdev *d, uint64_t server_id);

#endif
