/*
 * test_gateway.c - online delivery over real sockets: a running ferryd, real
 * PostgreSQL, devices speaking the protocol by hand (rawdev).
 *
 * Cast: user alice with devices A1 and A2, user bob with device B1.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "gw-test-token"
#define ACK_TIMEOUT_MS 300

struct fixture {
	char *conninfo;
	struct th_ferryd d;
	int port, tls_port;
	char *ca;
	int64_t a1, a2, b1;
	char a1s[64], a2s[64], b1s[64];
	uint64_t next_client_id;
};

static struct fixture fx;

/* A self-signed certificate for "localhost", made with the openssl tool. */
static void make_cert(char **cert, char **key)
{
	char cmd[1024];

	*cert = th_write_file("cert.pem", "");
	*key = th_write_file("key.pem", "");
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost "
		 "-keyout '%s' -out '%s' 2>/dev/null",
		 *key, *cert);
	if (system(cmd) != 0)
		fail_msg("cannot make a test certificate with openssl");
}

static int setup(void **state)
{
	char *cfg, *path, *key, extra[1024];
	int admin = th_free_port();

	fx.conninfo = th_db_new("gw");
	fx.port = th_free_port();
	fx.tls_port = th_free_port();
	make_cert(&fx.ca, &key);
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = 127.0.0.1:%d\n"
		 "tls_cert = %s\ntls_key = %s\nworkers = 2\nack_timeout = %d\n"
		 "handshake_timeout = 2000\nmax_output = 64k\nmax_frame = 32k\n\n"
		 /* Its raw devices do not take receipts (tests/integration/test_receipts.c). */
		 "[receipts]\ndelivered = off\n",
		 fx.port, fx.tls_port, fx.ca, key, ACK_TIMEOUT_MS);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("gw.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, admin);
	th_ferryd_wait_ready(&fx.d, 10000); /* the store connects in the background */
	th_device_create(&fx.d, TOKEN, "alice", &fx.a1, fx.a1s);
	th_device_create(&fx.d, TOKEN, "alice", &fx.a2, fx.a2s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.b1, fx.b1s);
	fx.next_client_id = 1000;
	unlink(path);
	free(path);
	free(cfg);
	free(key);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	free(fx.conninfo);
	free(fx.ca);
	return status == 0 ? 0 : -1;
}

static uint64_t next_id(void)
{
	return ++fx.next_client_id;
}

/* ---- handshake ---- */

static void test_wrong_secret(void **state)
{
	struct rawdev *d = rawdev_new();

	rawdev_connect(d, fx.port, NULL);
	rawdev_hello(d, PROTO_VERSION, fx.a1, "not-the-secret");
	rawdev_expect_error_close(d, PROTO_ERR_AUTH_FAILED);
	rawdev_close(d);
	rawdev_connect(d, fx.port, NULL);
	rawdev_hello(d, PROTO_VERSION, 987654321, fx.a1s);
	rawdev_expect_error_close(d, PROTO_ERR_AUTH_FAILED);
	rawdev_free(d);
}

static void test_bad_version_and_order(void **state)
{
	struct rawdev *d = rawdev_new();
	struct proto_frame ping = { .type = PROTO_PING };

	rawdev_connect(d, fx.port, NULL);
	rawdev_hello(d, 99, fx.a1, fx.a1s);
	rawdev_expect_error_close(d, PROTO_ERR_UNSUPPORTED_VERSION);
	rawdev_close(d);

	rawdev_connect(d, fx.port, NULL);
	rawdev_send(d, &ping);
	rawdev_expect_error_close(d, PROTO_ERR_BAD_FRAME);
	rawdev_free(d);
}

static void test_handshake_deadline(void **state)
{
	struct rawdev *d = rawdev_new();

	rawdev_connect(d, fx.port, NULL);
	rawdev_expect_error_close(d, PROTO_ERR_TIMEOUT);
	rawdev_free(d);
}

static void test_malformed_frames(void **state)
{
	static const uint8_t garbage[] = { 0x05, 0x77, 1, 2, 3, 4 };	/* unknown type */
	static const uint8_t huge[] = { 0xff, 0xff, 0x7f };		/* 2 MiB frame */
	static const uint8_t bad_varint[] = { 0x03, 0x09, 0x80, 0x00 }; /* non-minimal */
	struct rawdev *d = rawdev_new();

	rawdev_login(d, fx.port, fx.a1, fx.a1s);
	rawdev_write(d, garbage, sizeof(garbage));
	rawdev_expect_error_close(d, PROTO_ERR_BAD_FRAME);
	rawdev_close(d);

	rawdev_login(d, fx.port, fx.a1, fx.a1s);
	rawdev_write(d, huge, sizeof(huge));
	rawdev_expect_error_close(d, PROTO_ERR_TOO_LARGE);
	rawdev_close(d);

	rawdev_connect(d, fx.port, NULL);
	rawdev_write(d, bad_varint, sizeof(bad_varint));
	rawdev_expect_error_close(d, PROTO_ERR_BAD_FRAME);
	rawdev_close(d);

	/* A device-only frame type coming from the device side is refused too. */
	rawdev_login(d, fx.port, fx.a1, fx.a1s);
	{
		struct proto_frame f = { .type = PROTO_WELCOME };

		rawdev_send(d, &f);
	}
	rawdev_expect_error_close(d, PROTO_ERR_BAD_FRAME);
	rawdev_free(d);
}

static void test_ping(void **state)
{
	struct rawdev *d = rawdev_new();
	struct proto_frame ping = { .type = PROTO_PING };

	rawdev_login(d, fx.port, fx.b1, fx.b1s);
	ping.u.nonce = 424242;
	rawdev_send(d, &ping);
	assert_int_equal(rawdev_expect(d, PROTO_PONG, 2000)->u.nonce, 424242);
	rawdev_free(d);
}

/* ---- delivery ---- */

/* SEND @text to one device of @user (per-device mode). */
static void send_to_device(struct rawdev *d, uint64_t cid, const char *user, int64_t device,
			   const char *text)
{
	struct proto_frame f = { .type = PROTO_SEND };

	f.u.send.client_id = cid;
	f.u.send.to_user.p = (const uint8_t *)user;
	f.u.send.to_user.len = strlen(user);
	f.u.send.ntargets = 1;
	f.u.send.targets[0].device_id = (uint64_t)device;
	f.u.send.targets[0].payload.p = (const uint8_t *)text;
	f.u.send.targets[0].payload.len = strlen(text);
	rawdev_send(d, &f);
}

static uint64_t expect_deliver(struct rawdev *d, const char *from_user, int64_t from_device,
			       uint64_t client_id, const char *payload)
{
	const struct proto_frame *f = rawdev_expect(d, PROTO_DELIVER, 3000);

	assert_int_equal(f->u.deliver.sender_user.len, strlen(from_user));
	assert_memory_equal(f->u.deliver.sender_user.p, from_user, strlen(from_user));
	assert_int_equal(f->u.deliver.sender_device, from_device);
	assert_int_equal(f->u.deliver.client_id, client_id);
	assert_int_equal(f->u.deliver.payload.len, strlen(payload));
	assert_memory_equal(f->u.deliver.payload.p, payload, strlen(payload));
	assert_true(f->u.deliver.timestamp > 1700000000000ULL);
	return f->u.deliver.server_id;
}

static void test_fan_out_and_ack(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	uint64_t cid = next_id(), s1, s2;
	const struct proto_frame *f;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);

	rawdev_send_text(b1, cid, "alice", "hello alice");
	s1 = expect_deliver(a1, "bob", fx.b1, cid, "hello alice");
	s2 = expect_deliver(a2, "bob", fx.b1, cid, "hello alice");
	assert_true(s1 == s2);
	/* Not acknowledged before every device acked. */
	rawdev_ack(a1, s1);
	rawdev_expect_silence(b1, 100);
	rawdev_ack(a2, s2);
	f = rawdev_expect(b1, PROTO_ACK, 3000);
	assert_int_equal(f->u.ack.client_id, cid);
	assert_true(f->u.ack.server_id == s1);
	assert_int_equal(f->u.ack.status, PROTO_ACK_DELIVERED);
	/* The sender's own user is not sent back to the sender. */
	rawdev_expect_silence(b1, 100);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
}

static void test_send_to_own_user(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new();
	uint64_t cid = next_id(), sid;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_send_text(a1, cid, "alice", "note to self");
	sid = expect_deliver(a2, "alice", fx.a1, cid, "note to self");
	rawdev_ack(a2, sid);
	assert_int_equal(rawdev_expect(a1, PROTO_ACK, 3000)->u.ack.client_id, cid);
	rawdev_expect_silence(a1, 100);
	rawdev_free(a1);
	rawdev_free(a2);
}

/* Log @d in and acknowledge every stored envelope until QUEUE_EMPTY;
 * returns how many there were. */
static uint64_t drain(struct rawdev *d, int64_t id, const char *secret)
{
	uint64_t pending = rawdev_login_pending(d, fx.port, id, secret), n = 0;
	const struct proto_frame *f;

	for (;;) {
		assert_int_equal(rawdev_read(d, 5000), 1);
		f = &d->f;
		if (f->type == PROTO_QUEUE_EMPTY)
			break;
		assert_int_equal(f->type, PROTO_DELIVER);
		rawdev_ack(d, f->u.deliver.server_id);
		n++;
	}
	assert_int_equal(f->u.drained, n);
	assert_true(n >= pending);
	return n;
}

/* Wait up to 10 s for device @id's offline queue to be empty. */
static void wait_pending_zero(int64_t id)
{
	char url[128];

	snprintf(url, sizeof(url), "%s/v1/devices/%lld", fx.d.admin_url, (long long)id);
	for (int i = 0; i < 400; i++) {
		struct th_response r;
		int empty;

		th_http(&r, "GET", url, TOKEN, NULL);
		assert_int_equal(r.status, 200);
		empty = strstr(r.body, "\"pending\":0,") != NULL;
		th_response_release(&r);
		if (empty)
			return;
		usleep(25 * 1000);
	}
	fail_msg("device %lld: its queue did not empty within 10 s", (long long)id);
}

static void test_offline_target_is_stored(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	uint64_t cid = next_id(), sid;
	const struct proto_frame *f;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s); /* A2 stays offline */
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(b1, cid, "alice", "partly offline");
	sid = expect_deliver(a1, "bob", fx.b1, cid, "partly offline");
	rawdev_ack(a1, sid);
	f = rawdev_expect(b1, PROTO_ACK, 3000);
	assert_int_equal(f->u.ack.client_id, cid);
	assert_int_equal(f->u.ack.status, PROTO_ACK_STORED);
	assert_true(f->u.ack.server_id == sid);
	/* A2 gets it when it comes: pending 1, the envelope, QUEUE_EMPTY. */
	assert_int_equal(rawdev_login_pending(a2, fx.port, fx.a2, fx.a2s), 1);
	rawdev_ack(a2, expect_deliver(a2, "bob", fx.b1, cid, "partly offline"));
	assert_int_equal(rawdev_expect(a2, PROTO_QUEUE_EMPTY, 3000)->u.drained, 1);
	rawdev_close(a2);
	/* Acknowledged: gone from the store. The DELETE is written after the
	 * ack, asynchronously: a login that raced it would get the envelope
	 * again (at least once), so wait for the queue to be empty first. */
	wait_pending_zero(fx.a2);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
}

static void test_ack_timeout(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	uint64_t cid = next_id(), sid;
	const struct proto_frame *f;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(b1, cid, "alice", "ack me if you can");
	sid = expect_deliver(a1, "bob", fx.b1, cid, "ack me if you can");
	expect_deliver(a2, "bob", fx.b1, cid, "ack me if you can");
	rawdev_ack(a1, sid); /* A2 does not ack in time: the store takes it */
	f = rawdev_expect(b1, PROTO_ACK, ACK_TIMEOUT_MS + 3000);
	assert_int_equal(f->u.ack.status, PROTO_ACK_STORED);
	/* A2 catches up: the stored copy again, then QUEUE_EMPTY. */
	assert_true(expect_deliver(a2, "bob", fx.b1, cid, "ack me if you can") == sid);
	assert_int_equal(rawdev_expect(a2, PROTO_QUEUE_EMPTY, 3000)->u.drained, 1);
	rawdev_ack(a2, sid);
	rawdev_expect_silence(b1, 200);
	rawdev_close(a2);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s); /* nothing pending now */
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
}

static void test_duplicate_send(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	uint64_t cid = next_id(), sid;
	const struct proto_frame *f;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(b1, cid, "alice", "once");
	sid = expect_deliver(a1, "bob", fx.b1, cid, "once");
	rawdev_ack(a1, sid);
	rawdev_ack(a2, expect_deliver(a2, "bob", fx.b1, cid, "once"));
	assert_true(rawdev_expect(b1, PROTO_ACK, 3000)->u.ack.server_id == sid);

	/* Retransmitted, also from a new connection: same answer, no delivery. */
	rawdev_close(b1);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(b1, cid, "alice", "once");
	f = rawdev_expect(b1, PROTO_ACK, 3000);
	assert_int_equal(f->u.ack.client_id, cid);
	assert_true(f->u.ack.server_id == sid);
	rawdev_expect_silence(a1, 200);
	rawdev_expect_silence(a2, 10);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
}

static void test_per_device_payloads(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	struct proto_frame f = { .type = PROTO_SEND };
	uint64_t cid = next_id();
	const struct proto_frame *r;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	f.u.send.client_id = cid;
	f.u.send.to_user.p = (const uint8_t *)"alice";
	f.u.send.to_user.len = 5;
	f.u.send.ntargets = 2;
	f.u.send.targets[0].device_id = (uint64_t)fx.a1;
	f.u.send.targets[0].payload.p = (const uint8_t *)"for a1";
	f.u.send.targets[0].payload.len = 6;
	f.u.send.targets[1].device_id = (uint64_t)fx.a2;
	f.u.send.targets[1].payload.p = (const uint8_t *)"for a2";
	f.u.send.targets[1].payload.len = 6;
	rawdev_send(b1, &f);
	rawdev_ack(a1, expect_deliver(a1, "bob", fx.b1, cid, "for a1"));
	rawdev_ack(a2, expect_deliver(a2, "bob", fx.b1, cid, "for a2"));
	assert_int_equal(rawdev_expect(b1, PROTO_ACK, 3000)->u.ack.client_id, cid);

	/* A device of another user. */
	f.u.send.client_id = next_id();
	f.u.send.targets[1].device_id = (uint64_t)fx.b1;
	rawdev_send(b1, &f);
	r = rawdev_expect(b1, PROTO_NACK, 3000);
	assert_int_equal(r->u.nack.reason, PROTO_NACK_UNKNOWN_RECIPIENT);

	/* The same device twice. */
	f.u.send.client_id = next_id();
	f.u.send.targets[1].device_id = (uint64_t)fx.a1;
	rawdev_send(b1, &f);
	r = rawdev_expect(b1, PROTO_NACK, 3000);
	assert_int_equal(r->u.nack.reason, PROTO_NACK_INVALID);
	rawdev_expect_silence(a1, 100);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
}

static void test_unknown_user_and_too_large(void **state)
{
	struct rawdev *b1 = rawdev_new();
	static char big[40 * 1024];
	struct proto_frame f = { .type = PROTO_SEND };
	const struct proto_frame *r;

	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(b1, next_id(), "nobody-here", "hello?");
	r = rawdev_expect(b1, PROTO_NACK, 3000);
	assert_int_equal(r->u.nack.reason, PROTO_NACK_UNKNOWN_RECIPIENT);

	/* max_frame is 32k: a payload over max_frame - 128 is refused, in a
	 * frame the server still accepts (the frame itself is under 32k + 128). */
	memset(big, 'x', sizeof(big));
	f.u.send.client_id = next_id();
	f.u.send.to_user.p = (const uint8_t *)"alice";
	f.u.send.to_user.len = 5;
	f.u.send.payload.p = (const uint8_t *)big;
	f.u.send.payload.len = 32 * 1024 - 100;
	rawdev_send(b1, &f);
	r = rawdev_expect(b1, PROTO_NACK, 3000);
	assert_int_equal(r->u.nack.reason, PROTO_NACK_TOO_LARGE);

	/* A frame over max_frame closes the connection. */
	f.u.send.payload.len = sizeof(big);
	rawdev_send(b1, &f);
	rawdev_expect_error_close(b1, PROTO_ERR_TOO_LARGE);
	rawdev_free(b1);
}

static void test_replaced_connection(void **state)
{
	struct rawdev *old = rawdev_new(), *new = rawdev_new(), *b1 = rawdev_new();
	uint64_t cid = next_id();

	rawdev_login(old, fx.port, fx.a1, fx.a1s);
	rawdev_login(new, fx.port, fx.a1, fx.a1s);
	rawdev_expect_error_close(old, PROTO_ERR_REPLACED);
	/* Deliveries go to the new connection. */
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_to_device(b1, cid, "alice", fx.a1, "new one");
	rawdev_ack(new, expect_deliver(new, "bob", fx.b1, cid, "new one"));
	assert_int_equal(rawdev_expect(b1, PROTO_ACK, 3000)->u.ack.client_id, cid);
	rawdev_free(old);
	rawdev_free(new);
	rawdev_free(b1);
}

static void test_slow_reader_cut_off(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	static char payload[30 * 1024];
	int before = th_log_count(&fx.d, "event=conn_slow_reader");

	/* Small receive windows: the output fills within the ack timeout even
	 * when ferryd runs slowly (a sanitizer, a loaded machine). */
	a1->rcvbuf = a2->rcvbuf = 4096;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	memset(payload, 'z', sizeof(payload));
	payload[sizeof(payload) - 1] = '\0';
	/* A1 and A2 read nothing; socket buffers fill, then max_output (64k). */
	for (int i = 0; i < 400 && th_log_count(&fx.d, "event=conn_slow_reader") < before + 1;
	     i++) {
		rawdev_send_text(b1, next_id(), "alice", payload);
		/* Drain B1's answers so that B1 itself is not the slow one. */
		while (rawdev_read(b1, 0) == 1)
			;
	}
	th_log_wait(&fx.d, "event=conn_slow_reader", before + 1);
	/* Nothing acknowledged to B1 was lost: whatever A1 and A2 did not
	 * acknowledge is in the store. */
	rawdev_free(a1);
	rawdev_free(a2);
	a1 = rawdev_new();
	a2 = rawdev_new();
	while (rawdev_read(b1, 500) == 1)
		;
	drain(a1, fx.a1, fx.a1s);
	drain(a2, fx.a2, fx.a2s);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
}

/* A device registered while its user's devices are cached is a target of
 * the very next SEND. */
static void test_new_device_is_a_target_at_once(void **state)
{
	struct rawdev *d1 = rawdev_new(), *d2 = rawdev_new(), *b1 = rawdev_new();
	char s1[64], s2[64];
	int64_t id1, id2;
	uint64_t cid = next_id(), sid;

	th_device_create(&fx.d, TOKEN, "dave", &id1, s1);
	rawdev_login(d1, fx.port, id1, s1);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(b1, cid, "dave", "one");
	rawdev_ack(d1, expect_deliver(d1, "bob", fx.b1, cid, "one"));
	assert_int_equal(rawdev_expect(b1, PROTO_ACK, 3000)->u.ack.client_id, cid);

	th_device_create(&fx.d, TOKEN, "dave", &id2, s2);
	rawdev_login(d2, fx.port, id2, s2);
	cid = next_id();
	rawdev_send_text(b1, cid, "dave", "two");
	sid = expect_deliver(d1, "bob", fx.b1, cid, "two");
	rawdev_ack(d1, sid);
	rawdev_ack(d2, expect_deliver(d2, "bob", fx.b1, cid, "two"));
	assert_int_equal(rawdev_expect(b1, PROTO_ACK, 3000)->u.ack.client_id, cid);
	rawdev_free(d1);
	rawdev_free(d2);
	rawdev_free(b1);
}

static void test_deleted_device_is_closed(void **state)
{
	struct rawdev *d = rawdev_new();
	struct th_response r;
	char url[256], secret[64];
	int64_t id;

	th_device_create(&fx.d, TOKEN, "carol", &id, secret);
	rawdev_login(d, fx.port, id, secret);
	snprintf(url, sizeof(url), "%s/v1/devices/%lld", fx.d.admin_url, (long long)id);
	th_http(&r, "DELETE", url, TOKEN, NULL);
	assert_int_equal(r.status, 204);
	th_response_release(&r);
	rawdev_expect_error_close(d, PROTO_ERR_DEVICE_DELETED);
	rawdev_close(d);
	rawdev_connect(d, fx.port, NULL);
	rawdev_hello(d, PROTO_VERSION, id, secret);
	rawdev_expect_error_close(d, PROTO_ERR_AUTH_FAILED);
	rawdev_free(d);
}

static void test_tls(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t cid = next_id();

	rawdev_connect(a1, fx.tls_port, fx.ca);
	rawdev_hello(a1, PROTO_VERSION, fx.a1, fx.a1s);
	rawdev_expect(a1, PROTO_WELCOME, 3000);
	rawdev_expect(a1, PROTO_QUEUE_EMPTY, 3000);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_to_device(b1, cid, "alice", fx.a1, "over tls");
	rawdev_ack(a1, expect_deliver(a1, "bob", fx.b1, cid, "over tls"));
	assert_int_equal(rawdev_expect(b1, PROTO_ACK, 3000)->u.ack.client_id, cid);
	rawdev_free(a1);
	rawdev_free(b1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wrong_secret),
		cmocka_unit_test(test_bad_version_and_order),
		cmocka_unit_test(test_handshake_deadline),
		cmocka_unit_test(test_malformed_frames),
		cmocka_unit_test(test_ping),
		cmocka_unit_test(test_fan_out_and_ack),
		cmocka_unit_test(test_send_to_own_user),
		cmocka_unit_test(test_offline_target_is_stored),
		cmocka_unit_test(test_ack_timeout),
		cmocka_unit_test(test_duplicate_send),
		cmocka_unit_test(test_per_device_payloads),
		cmocka_unit_test(test_unknown_user_and_too_large),
		cmocka_unit_test(test_replaced_connection),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_slow_reader_cut_off),
		cmocka_unit_test(test_new_device_is_a_target_at_once),
		cmocka_unit_test(test_deleted_device_is_closed),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("gateway", tests, setup, teardown);
}
