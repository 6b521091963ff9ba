/*
 * test_receipts.c - delivered and read receipts end to end: ferryd against
 * a throwaway PostgreSQL, devices speaking the protocol over real sockets.
 *
 * Coalescing by count and by time, read superseding delivered, fan-out to
 * every device of the sending user, receipts stored (and merged in
 * storage) for devices that are away and delivered on reconnect, read
 * receipts switched off, a device's RECEIPT answered only once its effect
 * is safe (kill -9 in between), and bad RECEIPTs refused.
 *
 * No timing assertions: waits are generous deadlines, and a check that
 * nothing more arrives waits SILENCE_MS, which can only make a broken server
 * pass, never a correct one fail.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "receipts-test-token"
#define WAIT_MS 10000
#define SILENCE_MS 400

/* Per-test daemon settings (cmocka prestate). */
struct params {
	unsigned max_batch;
	unsigned flush_interval; /* ms */
};

static const struct params quick = { 512, 100 };
static const struct params by_count = { 4, 100 };
static const struct params slow = { 512, 1000 };
static const struct params very_slow = { 512, 3000 };

struct fixture {
	char *conninfo;
	char *config;
	struct th_ferryd d;
	int port, admin_port;
	PGconn *pg;
	int passed;
	int64_t a1, a2, b1;
	char a1s[64], a2s[64], b1s[64];
};

static struct fixture fx;

static int setup(void **state)
{
	const struct params *p = *state;
	char extra[512], *path, *out;
	int status;

	memset(&fx, 0, sizeof(fx));
	fx.conninfo = th_db_new("receipts");
	fx.port = th_free_port();
	fx.admin_port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\nack_timeout = 1000\n\n"
		 "[store]\nconnect_timeout = 2\n\n"
		 "[receipts]\nmax_batch = %u\nflush_interval = %u\n",
		 fx.port, p->max_batch, p->flush_interval);
	fx.config = th_ferryd_config_ex(fx.conninfo, fx.admin_port, TOKEN, extra);
	path = th_write_file("receipts.ini", fx.config);
	status = th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, &out);
	unlink(path);
	free(path);
	if (status != 0) {
		fprintf(stderr, "ferryd migrate failed (status %d):\n%s", status, out);
		free(out);
		return -1;
	}
	free(out);
	th_ferryd_start(&fx.d, fx.config, fx.admin_port);
	th_ferryd_wait_ready(&fx.d, WAIT_MS);
	th_device_create(&fx.d, TOKEN, "alice", &fx.a1, fx.a1s);
	th_device_create(&fx.d, TOKEN, "alice", &fx.a2, fx.a2s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.b1, fx.b1s);
	fx.pg = th_pg_connect(fx.conninfo);
	return 0;
}

static int teardown(void **state)
{
	int status;

	(void)state;
	if (!fx.passed && fx.d.log_path) {
		char *log = th_read_file(fx.d.log_path);

		fprintf(stderr, "---- ferryd log (%s) ----\n%s---- end of log ----\n",
			fx.d.log_path, log);
		free(log);
	}
	status = fx.d.pid > 0 ? th_ferryd_stop(&fx.d, SIGTERM) : 0;
	if (fx.pg)
		PQfinish(fx.pg);
	free(fx.conninfo);
	free(fx.config);
	return status == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* A RECEIPT frame: @reader's user read these messages of @peer's @device. */
static void read_frame(struct proto_frame *f, uint64_t cid, int kind, const char *peer,
		       int64_t device, const uint64_t *ids, size_t n)
{
	memset(f, 0, sizeof(*f));
	f->type = PROTO_RECEIPT;
	f->u.receipt.id = cid;
	f->u.receipt.kind = (uint8_t)kind;
	f->u.receipt.peer_user.p = (const uint8_t *)peer;
	f->u.receipt.peer_user.len = strlen(peer);
	f->u.receipt.device = (uint64_t)device;
	f->u.receipt.count = n;
	memcpy(f->u.receipt.ids, ids, n * sizeof(ids[0]));
}

static void send_read(struct rawdev *d, uint64_t cid, const char *peer, int64_t device,
		      const uint64_t *ids, size_t n)
{
	static struct proto_frame f;

	read_frame(&f, cid, PROTO_RECEIPT_READ, peer, device, ids, n);
	rawdev_send(d, &f);
}

/* Append @f's encoding to @buf (for several frames in one write). */
static size_t append_frame(uint8_t *buf, size_t used, size_t cap, const struct proto_frame *f)
{
	size_t len;

	assert_int_equal(proto_encode(f, buf + used, cap - used, &len), FERRY_OK);
	return used + len;
}

static uint64_t expect_ack(struct rawdev *d, uint64_t cid, unsigned status)
{
	const struct proto_frame *f = rawdev_expect(d, PROTO_ACK, WAIT_MS);

	assert_int_equal(f->u.ack.client_id, cid);
	assert_int_equal(f->u.ack.status, status);
	return f->u.ack.server_id;
}

static void expect_nack(struct rawdev *d, uint64_t cid, unsigned reason)
{
	const struct proto_frame *f = rawdev_expect(d, PROTO_NACK, WAIT_MS);

	assert_int_equal(f->u.nack.client_id, cid);
	if (f->u.nack.reason != reason)
		fail_msg("RECEIPT %llu: expected NACK %s, got %s '%.*s'", (unsigned long long)cid,
			 proto_nack_name(reason), proto_nack_name(f->u.nack.reason),
			 (int)f->u.nack.text.len, (const char *)f->u.nack.text.p);
}

/* The next frame is a DELIVER_RECEIPT of @kind from @peer about @device's
 * messages; it is acknowledged. Its ids go to @ids (sorted by the server). */
static size_t expect_receipt(struct rawdev *d, int kind, const char *peer, int64_t device,
			     uint64_t *ids)
{
	const struct proto_receipt *r =
		&rawdev_expect(d, PROTO_DELIVER_RECEIPT, WAIT_MS)->u.receipt;
	size_t n = r->count;
	uint64_t sid = r->id;

	assert_int_equal(r->kind, kind);
	assert_int_equal(r->peer_user.len, strlen(peer));
	assert_memory_equal(r->peer_user.p, peer, r->peer_user.len);
	assert_int_equal(r->device, device);
	memcpy(ids, r->ids, n * sizeof(ids[0]));
	rawdev_ack(d, sid);
	return n;
}

static void assert_ids(const uint64_t *got, size_t n, const uint64_t *want, size_t m)
{
	assert_int_equal(n, m);
	for (size_t i = 0; i < n; i++) {
		size_t k = 0;

		while (k < m && want[k] != got[i])
			k++;
		if (k == m)
			fail_msg("unexpected id %llu", (unsigned long long)got[i]);
	}
}

/* @from sends message @cid to @to; @rcpt gets it and acknowledges it. */
static void message(struct rawdev *from, uint64_t cid, const char *to, struct rawdev *rcpt)
{
	const struct proto_frame *f;

	rawdev_send_text(from, cid, to, "hi");
	f = rawdev_expect(rcpt, PROTO_DELIVER, WAIT_MS);
	assert_int_equal(f->u.deliver.client_id, cid);
	rawdev_ack(rcpt, f->u.deliver.server_id);
	expect_ack(from, cid, PROTO_ACK_DELIVERED);
}

static void set_read_receipts(const char *user, int on)
{
	struct th_response r;
	char url[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/users/%s/settings", fx.admin_port, user);
	th_http(&r, "PUT", url, TOKEN,
		on ? "{\"read_receipts\": true}" : "{\"read_receipts\": false}");
	assert_int_equal(r.status, 200);
	th_response_release(&r);
}

/* ---- tests ---- */

/* A message acknowledged by bob: alice's devices both learn it was
 * delivered, then read; bob's RECEIPT is answered once they have it. */
static void test_delivered_then_read(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	uint64_t ids[PROTO_MAX_IDS], one = 1;

	(void)state;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	message(a1, 1, "bob", b1);
	assert_ids(ids, expect_receipt(a1, PROTO_RECEIPT_DELIVERED, "bob", fx.a1, ids), &one, 1);
	assert_ids(ids, expect_receipt(a2, PROTO_RECEIPT_DELIVERED, "bob", fx.a1, ids), &one, 1);

	send_read(b1, 100, "alice", fx.a1, &one, 1);
	assert_ids(ids, expect_receipt(a1, PROTO_RECEIPT_READ, "bob", fx.a1, ids), &one, 1);
	assert_ids(ids, expect_receipt(a2, PROTO_RECEIPT_READ, "bob", fx.a1, ids), &one, 1);
	/* Both of alice's devices acknowledged it: delivered. */
	expect_ack(b1, 100, PROTO_ACK_DELIVERED);
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_expect_silence(b1, 0);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
	fx.passed = 1;
}

/* max_batch 4: ten ids are three frames, two full ones at once. */
static void test_coalesce_by_count(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[10], got[PROTO_MAX_IDS], all[10];
	size_t n, total = 0, full = 0;
	struct th_response r;
	char url[128];

	(void)state;
	for (uint64_t i = 0; i < 10; i++)
		want[i] = i + 1;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_read(b1, 7, "alice", 0, want, 10); /* device 0: not named */
	for (int k = 0; k < 3; k++) {
		n = expect_receipt(a1, PROTO_RECEIPT_READ, "bob", 0, got);
		full += n == 4;
		memcpy(all + total, got, n * sizeof(got[0]));
		total += n;
	}
	assert_int_equal(full, 2);
	assert_ids(all, total, want, 10);
	/* alice's other device is away: stored for it. */
	expect_ack(b1, 7, PROTO_ACK_STORED);
	rawdev_expect_silence(a1, SILENCE_MS);

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/stats", fx.admin_port);
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"read_in\":10,"));
	assert_non_null(strstr(r.body, "\"batches\":3,"));
	assert_non_null(strstr(r.body, "\"ids_out\":10,"));
	th_response_release(&r);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* Three RECEIPTs within the flush interval are one frame. */
static void test_coalesce_by_time(void **state)
{
	struct rawdev *a1 = rawdev_new(), *a2 = rawdev_new(), *b1 = rawdev_new();
	static uint8_t buf[4096];
	static struct proto_frame f;
	uint64_t got[PROTO_MAX_IDS], want[3] = { 1, 2, 3 };
	size_t used = 0;

	(void)state;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(a2, fx.port, fx.a2, fx.a2s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	for (int i = 0; i < 3; i++) {
		read_frame(&f, 200 + (uint64_t)i, PROTO_RECEIPT_READ, "alice", fx.a1, &want[i], 1);
		used = append_frame(buf, used, sizeof(buf), &f);
	}
	rawdev_write(b1, buf, used); /* one write: one read on the server */
	assert_ids(got, expect_receipt(a1, PROTO_RECEIPT_READ, "bob", fx.a1, got), want, 3);
	assert_ids(got, expect_receipt(a2, PROTO_RECEIPT_READ, "bob", fx.a1, got), want, 3);
	for (int i = 0; i < 3; i++) {
		const struct proto_frame *a = rawdev_expect(b1, PROTO_ACK, WAIT_MS);

		assert_true(a->u.ack.client_id >= 200 && a->u.ack.client_id <= 202);
		assert_int_equal(a->u.ack.status, PROTO_ACK_DELIVERED);
	}
	rawdev_expect_silence(a1, SILENCE_MS);
	rawdev_free(a1);
	rawdev_free(a2);
	rawdev_free(b1);
	fx.passed = 1;
}

/* A read arriving with the DELIVER_ACK: only the read goes out. */
static void test_read_supersedes_delivered(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	static uint8_t buf[4096];
	static struct proto_frame f;
	const struct proto_frame *d;
	uint64_t got[PROTO_MAX_IDS], cid = 5, sid;
	size_t used = 0;

	(void)state;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	rawdev_send_text(a1, cid, "bob", "read me");
	d = rawdev_expect(b1, PROTO_DELIVER, WAIT_MS);
	sid = d->u.deliver.server_id;
	memset(&f, 0, sizeof(f));
	f.type = PROTO_DELIVER_ACK;
	f.u.ids.count = 1;
	f.u.ids.ids[0] = sid;
	used = append_frame(buf, used, sizeof(buf), &f);
	read_frame(&f, 300, PROTO_RECEIPT_READ, "alice", fx.a1, &cid, 1);
	used = append_frame(buf, used, sizeof(buf), &f);
	rawdev_write(b1, buf, used);
	expect_ack(a1, cid, PROTO_ACK_DELIVERED);
	assert_ids(got, expect_receipt(a1, PROTO_RECEIPT_READ, "bob", fx.a1, got), &cid, 1);
	expect_ack(b1, 300, PROTO_ACK_STORED); /* a2 is away */
	rawdev_expect_silence(a1, SILENCE_MS);
	/* a2 gets the read only, stored. */
	assert_int_equal(th_pg_int(fx.pg,
				   "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				   (long long)fx.a2),
			 1);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* Receipts for devices that are away are stored, one row per kind however
 * many batches they came in, and arrive on reconnect before QUEUE_EMPTY. */
static void test_offline_merged(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t want[3] = { 1, 2, 3 }, got[PROTO_MAX_IDS];
	int seen_delivered = 0, seen_read = 0;

	(void)state;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	for (uint64_t i = 1; i <= 3; i++) {
		rawdev_send_text(a1, i, "bob", "x");
		rawdev_ack(b1, rawdev_expect(b1, PROTO_DELIVER, WAIT_MS)->u.deliver.server_id);
		expect_ack(a1, i, PROTO_ACK_DELIVERED);
	}
	rawdev_close(a1);
	/* The delivered ones go out first (a read would supersede them). */
	sleep_ms(300);
	/* Three reads, each flushed alone (or not: merging either way). */
	for (uint64_t i = 1; i <= 3; i++) {
		send_read(b1, 400 + i, "alice", fx.a1, &want[i - 1], 1);
		expect_ack(b1, 400 + i, PROTO_ACK_STORED);
		sleep_ms(300);
	}
	for (int64_t dev = fx.a1; dev; dev = dev == fx.a1 ? fx.a2 : 0) {
		assert_int_equal(
			th_pg_int(fx.pg,
				  "SELECT count(*) FROM envelopes WHERE recipient_device = "
				  "%lld AND kind = 'receipt' AND client_id = 2",
				  (long long)dev),
			1);
		assert_int_equal(th_pg_int(fx.pg,
					   "SELECT octet_length(payload) FROM envelopes "
					   "WHERE recipient_device = %lld AND kind = 'receipt' "
					   "AND client_id = 2",
					   (long long)dev),
				 3);
		assert_int_equal(
			th_pg_int(fx.pg,
				  "SELECT count(*) FROM envelopes WHERE recipient_device = "
				  "%lld AND kind = 'receipt' AND client_id = 1",
				  (long long)dev),
			1);
	}
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 2);
	for (int k = 0; k < 2; k++) {
		const struct proto_receipt *r =
			&rawdev_expect(a1, PROTO_DELIVER_RECEIPT, WAIT_MS)->u.receipt;
		uint64_t sid = r->id;

		assert_int_equal(r->device, fx.a1);
		memcpy(got, r->ids, r->count * sizeof(got[0]));
		assert_ids(got, r->count, want, 3);
		seen_delivered += r->kind == PROTO_RECEIPT_DELIVERED;
		seen_read += r->kind == PROTO_RECEIPT_READ;
		rawdev_ack(a1, sid);
	}
	assert_int_equal(seen_delivered, 1);
	assert_int_equal(seen_read, 1);
	assert_int_equal(rawdev_expect(a1, PROTO_QUEUE_EMPTY, WAIT_MS)->u.drained, 2);
	for (int i = 0; i < 100 && th_pg_int(fx.pg,
					     "SELECT count(*) FROM envelopes WHERE "
					     "recipient_device = %lld",
					     (long long)fx.a1);
	     i++)
		sleep_ms(50);
	assert_int_equal(th_pg_int(fx.pg,
				   "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
				   (long long)fx.a1),
			 0);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* bob switches read receipts off: his RECEIPTs are answered and go
 * nowhere, also on a new connection; delivered ones still flow. */
static void test_read_receipts_off(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t got[PROTO_MAX_IDS], one = 1, two = 2;

	(void)state;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	set_read_receipts("bob", 0);
	send_read(b1, 500, "alice", fx.a1, &one, 1);
	expect_ack(b1, 500, PROTO_ACK_DELIVERED);
	rawdev_expect_silence(a1, SILENCE_MS);

	rawdev_close(b1);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_read(b1, 501, "alice", fx.a1, &one, 1);
	expect_ack(b1, 501, PROTO_ACK_DELIVERED);
	message(a1, 2, "bob", b1);
	assert_ids(got, expect_receipt(a1, PROTO_RECEIPT_DELIVERED, "bob", fx.a1, got), &two, 1);
	rawdev_expect_silence(a1, SILENCE_MS);

	set_read_receipts("bob", 1);
	send_read(b1, 502, "alice", fx.a1, &two, 1);
	assert_ids(got, expect_receipt(a1, PROTO_RECEIPT_READ, "bob", fx.a1, got), &two, 1);
	expect_ack(b1, 502, PROTO_ACK_STORED); /* a2 is away */
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* kill -9 while a RECEIPT waits in the batcher: it was not acknowledged,
 * so the device sends it again, and then it arrives. */
static void test_crash_before_flush(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	uint64_t got[PROTO_MAX_IDS], seven = 7;

	(void)state;
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_read(b1, 600, "alice", fx.a1, &seven, 1);
	rawdev_expect_silence(b1, SILENCE_MS); /* flush_interval is 3 s */
	assert_int_equal(th_ferryd_kill(&fx.d), 128 + SIGKILL);
	th_ferryd_restart(&fx.d);
	assert_int_equal(th_pg_int(fx.pg, "SELECT count(*) FROM envelopes"), 0);

	rawdev_close(b1);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	send_read(b1, 600, "alice", fx.a1, &seven, 1);
	expect_ack(b1, 600, PROTO_ACK_STORED);
	assert_int_equal(rawdev_login_pending(a1, fx.port, fx.a1, fx.a1s), 1);
	assert_ids(got, expect_receipt(a1, PROTO_RECEIPT_READ, "bob", fx.a1, got), &seven, 1);
	assert_int_equal(rawdev_expect(a1, PROTO_QUEUE_EMPTY, WAIT_MS)->u.drained, 1);
	rawdev_free(a1);
	rawdev_free(b1);
	fx.passed = 1;
}

/* Refused: a delivered receipt from a device, an unknown user, a device
 * that is not the user's. The connection stays. */
static void test_bad_receipts(void **state)
{
	struct rawdev *b1 = rawdev_new();
	static struct proto_frame f;
	uint64_t one = 1;

	(void)state;
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	read_frame(&f, 700, PROTO_RECEIPT_DELIVERED, "alice", fx.a1, &one, 1);
	rawdev_send(b1, &f);
	expect_nack(b1, 700, PROTO_NACK_INVALID);
	send_read(b1, 701, "nobody", 0, &one, 1);
	expect_nack(b1, 701, PROTO_NACK_UNKNOWN_RECIPIENT);
	send_read(b1, 702, "alice", fx.b1, &one, 1);
	expect_nack(b1, 702, PROTO_NACK_UNKNOWN_RECIPIENT);
	f.type = PROTO_PING;
	f.u.nonce = 9;
	rawdev_send(b1, &f);
	assert_int_equal(rawdev_expect(b1, PROTO_PONG, WAIT_MS)->u.nonce, 9);
	/* A DELIVER_RECEIPT is the server's to send. */
	read_frame(&f, 703, PROTO_RECEIPT_READ, "alice", fx.a1, &one, 1);
	f.type = PROTO_DELIVER_RECEIPT;
	rawdev_send(b1, &f);
	rawdev_expect_error_close(b1, PROTO_ERR_BAD_FRAME);
	rawdev_free(b1);
	fx.passed = 1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_prestate_setup_teardown(test_delivered_then_read, setup, teardown,
							 (void *)&quick),
		cmocka_unit_test_prestate_setup_teardown(test_coalesce_by_count, setup, teardown,
							 (void *)&by_count),
		cmocka_unit_test_prestate_setup_teardown(test_coalesce_by_time, setup, teardown,
							 (void *)&slow),
		cmocka_unit_test_prestate_setup_teardown(test_read_supersedes_delivered, setup,
							 teardown, (void *)&slow),
		cmocka_unit_test_prestate_setup_teardown(test_offline_merged, setup, teardown,
							 (void *)&quick),
		cmocka_unit_test_prestate_setup_teardown(test_read_receipts_off, setup, teardown,
							 (void *)&quick),
		cmocka_unit_test_prestate_setup_teardown(test_crash_before_flush, setup, teardown,
							 (void *)&very_slow),
		cmocka_unit_test_prestate_setup_teardown(test_bad_receipts, setup, teardown,
							 (void *)&quick),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
