/*
 * test_backpressure.c - a slow consumer against ferryd and real PostgreSQL.
 *
 * A device with 10,000 envelopes (4 KiB each, 40 MiB) waiting in the store
 * connects with a tiny receive window and then reads nothing, while it
 * keeps sending PINGs so that the idle timeout never closes it. ferryd must
 * not page its whole backlog into memory: it sends one drain window (1,024
 * envelopes, 4 MiB: more than the kernel's socket buffers hold, so some of
 * it waits in ferryd) and waits for acknowledgements (its resident set grows
 * by far less than the backlog), and once its output
 * has waited write_timeout without the device taking any of it, the
 * connection is closed. Nothing is lost: connecting again as a normal
 * device, every one of the 10,000 envelopes comes, each once, in order.
 *
 * Admission: a worker with [gateway] max_handshakes HELLOs being checked
 * accepts no more connections until some are through; the others wait in
 * the listen backlog and are taken, in turn, as places free up. Silent
 * connections are not counted.
 */
#include <poll.h>
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
#include <jansson.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "backpressure-test-token"
#define BACKLOG 10000
#define PAYLOAD 4096
#define WINDOW 1024
#define WRITE_TIMEOUT_MS 2000
#define BATCH 100

static struct {
	char *conninfo;
	struct th_ferryd d;
	int port, admin_port;
	int64_t slow, sender;
	char slow_s[64], sender_s[64];
} fx;

static int setup(void **state)
{
	char *saved, extra[512], asan[512];

	fx.conninfo = th_db_new("backpressure");
	fx.port = th_free_port();
	fx.admin_port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = \"\"\nworkers = 2\n"
		 "drain_window = %d\nwrite_timeout = %d\nidle_timeout = 60000\n"
		 "max_output = 16m\n\n"
		 "[receipts]\ndelivered = off\n",
		 fx.port, WINDOW, WRITE_TIMEOUT_MS);
	/* ASan holds freed memory back (256 MB by default), which would look
	 * like growth: this daemon keeps 1 MB. */
	saved = getenv("ASAN_OPTIONS") ? strdup(getenv("ASAN_OPTIONS")) : NULL;
	snprintf(asan, sizeof(asan), "%s%squarantine_size_mb=1", saved ? saved : "",
		 saved ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	th_ferryd_up(&fx.d, fx.conninfo, fx.admin_port, TOKEN, extra);
	if (saved)
		setenv("ASAN_OPTIONS", saved, 1);
	else
		unsetenv("ASAN_OPTIONS");
	free(saved);
	th_device_create(&fx.d, TOKEN, "sloth", &fx.slow, fx.slow_s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.sender, fx.sender_s);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	free(fx.conninfo);
	return status == 0 ? 0 : -1;
}

/* Store BACKLOG envelopes for the away device "sloth": client id N carries
 * "N:" and then N's last digit over and over, PAYLOAD bytes in all. */
static void fill_backlog(void)
{
	static uint8_t frames[BATCH * (PAYLOAD + 64)];
	static char text[PAYLOAD];
	struct rawdev *b = rawdev_new();

	rawdev_login(b, fx.port, fx.sender, fx.sender_s);
	for (uint64_t cid = 1; cid <= BACKLOG;) {
		size_t len = 0, n;
		int acks = 0, batch = 0;

		for (; batch < BATCH && cid <= BACKLOG; batch++, cid++) {
			struct proto_frame s = { .type = PROTO_SEND };
			int k = snprintf(text, sizeof(text), "%llu:", (unsigned long long)cid);

			memset(text + k, '0' + (int)(cid % 10), PAYLOAD - (size_t)k);
			s.u.send.client_id = cid;
			s.u.send.to_user.p = (const uint8_t *)"sloth";
			s.u.send.to_user.len = 5;
			s.u.send.payload.p = (const uint8_t *)text;
			s.u.send.payload.len = PAYLOAD;
			assert_int_equal(proto_encode(&s, frames + len, sizeof(frames) - len, &n),
					 FERRY_OK);
			len += n;
		}
		rawdev_write(b, frames, len);
		while (acks < batch) {
			const struct proto_frame *f = rawdev_expect(b, PROTO_ACK, 10000);

			assert_int_equal(f->u.ack.status, PROTO_ACK_STORED);
			acks++;
		}
	}
	rawdev_free(b);
}

/* What the slow device's socket still holds after the server closed it:
 * the number of whole DELIVERs in it. */
static int count_buffered_delivers(struct rawdev *d)
{
	int n = 0, r;

	while ((r = rawdev_read(d, 2000)) == 1)
		n += d->f.type == PROTO_DELIVER;
	return n;
}

static void test_slow_consumer(void **state)
{
	struct rawdev *d = rawdev_new();
	struct proto_frame ping = { .type = PROTO_PING };
	long rss0, rss_max = 0;
	long long t0, closed_at = 0;
	uint64_t expect = 1, pending;
	int buffered, before = th_log_count(&fx.d, "event=conn_write_timeout");

	fill_backlog();
	rss0 = th_proc_status(fx.d.pid, "VmRSS:");

	/* Connect, read WELCOME, then nothing more: a 4 KiB receive window
	 * fills at once. PING twice a second, without reading the PONGs. */
	d->rcvbuf = 4096;
	pending = rawdev_login_pending(d, fx.port, fx.slow, fx.slow_s);
	assert_int_equal(pending, BACKLOG);
	t0 = th_now_ms();
	for (int i = 0; th_now_ms() - t0 < 4 * WRITE_TIMEOUT_MS; i++) {
		long rss = th_proc_status(fx.d.pid, "VmRSS:");

		if (rss > rss_max)
			rss_max = rss;
		if (!closed_at && th_log_count(&fx.d, "event=conn_write_timeout") > before)
			closed_at = th_now_ms();
		if (closed_at)
			break;
		ping.u.nonce = (uint64_t)i + 1;
		if (i % 2 == 0)
			rawdev_send(d, &ping);
		usleep(250 * 1000);
	}
	/* Closed for not reading, although it was never idle. */
	if (!closed_at)
		fail_msg("a device that read nothing for %d ms was not closed",
			 4 * WRITE_TIMEOUT_MS);
	assert_true(closed_at - t0 >= WRITE_TIMEOUT_MS - 250);
	/* The backlog stayed in the store: the daemon grew by much less than
	 * the 40 MiB of it (a window is 4 MiB). */
	printf("slow consumer: rss %ld KiB before, %ld KiB at most while stalled\n", rss0, rss_max);
	if (rss_max - rss0 > 16 * 1024)
		fail_msg("ferryd grew by %ld KiB for a device that read nothing", rss_max - rss0);
	/* It sent a drain window, not the backlog. */
	buffered = count_buffered_delivers(d);
	assert_true(buffered <= WINDOW);
	rawdev_free(d);

	/* Nothing lost: a normal device now gets all of it, in order. */
	d = rawdev_new();
	assert_int_equal(rawdev_login_pending(d, fx.port, fx.slow, fx.slow_s), BACKLOG);
	for (;;) {
		const struct proto_frame *f;

		assert_int_equal(rawdev_read(d, 10000), 1);
		f = &d->f;
		if (f->type == PROTO_QUEUE_EMPTY)
			break;
		assert_int_equal(f->type, PROTO_DELIVER);
		assert_int_equal(f->u.deliver.client_id, expect);
		assert_int_equal(f->u.deliver.payload.len, PAYLOAD);
		rawdev_ack(d, f->u.deliver.server_id);
		expect++;
	}
	assert_int_equal(expect - 1, BACKLOG);
	rawdev_free(d);
}

/* ---- admission ---- */

#define ADMIT 4
#define CHECKED 10
#define SILENT 10

/* connections.now of @d's /v1/stats. */
static long connections_now(const struct th_ferryd *d)
{
	struct th_response r;
	char url[128];
	json_t *j;
	long n;

	snprintf(url, sizeof(url), "%s/v1/stats", d->admin_url);
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_int_equal(r.status, 200);
	j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	n = (long)json_integer_value(json_object_get(json_object_get(j, "connections"), "now"));
	json_decref(j);
	th_response_release(&r);
	return n;
}

/*
 * One worker that checks 4 HELLOs at a time. Connections that say nothing
 * are not counted: 10 of them are all accepted, and a device still gets in.
 * Then the check is held up (a test transaction locks user_settings, which
 * the check reads): 4 HELLOs wait in it, the worker stops accepting (the
 * log says so once), and 6 more connections stay in the kernel's backlog.
 * Once the lock goes, every one of the 10 is welcomed in its turn.
 */
static void test_handshake_admission(void **state)
{
	struct th_ferryd d;
	int port = th_free_port(), admin = th_free_port(), silent[SILENT];
	struct rawdev *dev[CHECKED], *first = rawdev_new();
	int64_t ids[CHECKED];
	char secrets[CHECKED][64], extra[256], user[24];
	PGconn *pg = th_pg_connect(fx.conninfo);

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = \"\"\nworkers = 1\n"
		 "max_handshakes = %d\nhandshake_timeout = 30000\n",
		 port, ADMIT);
	th_ferryd_up(&d, fx.conninfo, admin, TOKEN, extra);
	for (int i = 0; i < CHECKED; i++) {
		snprintf(user, sizeof(user), "storm%d", i);
		th_device_create(&d, TOKEN, user, &ids[i], secrets[i]);
		dev[i] = rawdev_new();
	}
	/* Silent connections take no place. */
	for (int i = 0; i < SILENT; i++)
		silent[i] = th_tcp_connect(port);
	rawdev_login(first, port, fx.slow, fx.slow_s);
	assert_int_equal(connections_now(&d), SILENT + 1);
	assert_int_equal(th_log_count(&d, "event=accept_paused"), 0);

	/* Checks held up: 4 HELLOs in them, then nothing more is accepted. */
	PQclear(th_pg_exec(pg, "BEGIN"));
	PQclear(th_pg_exec(pg, "LOCK TABLE user_settings IN ACCESS EXCLUSIVE MODE"));
	for (int i = 0; i < ADMIT; i++) {
		rawdev_connect(dev[i], port, NULL);
		rawdev_hello(dev[i], PROTO_VERSION, ids[i], secrets[i]);
	}
	th_log_wait(&d, "event=accept_paused", 1);
	for (int i = ADMIT; i < CHECKED; i++) {
		rawdev_connect(dev[i], port, NULL);
		rawdev_hello(dev[i], PROTO_VERSION, ids[i], secrets[i]);
	}
	usleep(500 * 1000);
	assert_int_equal(connections_now(&d), SILENT + 1 + ADMIT);

	/* The lock goes: all ten are welcomed. */
	PQclear(th_pg_exec(pg, "ROLLBACK"));
	for (int i = 0; i < CHECKED; i++) {
		rawdev_expect(dev[i], PROTO_WELCOME, 10000);
		rawdev_free(dev[i]);
	}
	for (int i = 0; i < SILENT; i++)
		close(silent[i]);
	rawdev_free(first);
	PQfinish(pg);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slow_consumer),
		cmocka_unit_test(test_handshake_admission),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
