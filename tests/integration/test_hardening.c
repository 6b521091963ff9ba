/*
 * test_hardening.c - hostile peers over real sockets: oversized length
 * prefixes, silent and half-open connections on both ports, frame floods,
 * failed handshakes, descriptor exhaustion, TLS versions, ciphers and
 * certificate reloads, the admin API's limits, secrets in logs, core dumps
 * and the privilege drop.
 *
 * One ferryd serves most tests (plain and TLS listeners, small limits so
 * that the tests are quick); the tests that need a daemon of their own
 * (a lowered descriptor limit, another user) start one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "hardening-test-token"
#define MAX_FRAME (16 * 1024 * 1024)
#define HANDSHAKE_MS 1500
#define ADMIN_TIMEOUT_S 1
#define FRAMES_PER_S 50
#define FRAMES_BURST 100
#define FAILS_PER_ADDR 30
#define FAILS_PER_DEVICE 5
#define FAIL_WINDOW_S 2

struct fixture {
	char *conninfo;
	struct th_ferryd d;
	int port, tls_port, admin_port;
	char *cert, *key;
	int64_t a1, b1;
	char a1s[64], b1s[64];
	uint64_t next_client_id;
};

static struct fixture fx;

#define EC_KEY_ARGS "ec -pkeyopt ec_paramgen_curve:P-256"
#define RSA_KEY_ARGS "rsa:2048"

/* A self-signed certificate for "localhost" with subject CN=@cn and a new
 * key (@newkey: openssl req -newkey's argument) into @cert and @key
 * (paths); the key file is made 0600, as ferryd expects of a key. */
static void make_cert_kind(const char *cert, const char *key, const char *cn, const char *newkey)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey %s -nodes "
		 "-days 1 -subj /CN=%s -addext subjectAltName=DNS:localhost "
		 "-keyout '%s' -out '%s' 2>/dev/null",
		 newkey, cn, key, cert);
	if (system(cmd) != 0)
		fail_msg("cannot make a test certificate with openssl");
	if (chmod(key, 0600))
		fail_msg("chmod '%s': %s", key, strerror(errno));
}

static void make_cert_at(const char *cert, const char *key, const char *cn)
{
	make_cert_kind(cert, key, cn, EC_KEY_ARGS);
}

static int setup(void **state)
{
	char *cfg, *path, extra[1024];

	fx.conninfo = th_db_new("hard");
	fx.port = th_free_port();
	fx.tls_port = th_free_port();
	fx.admin_port = th_free_port();
	fx.cert = th_write_file("cert.pem", "");
	fx.key = th_write_file("key.pem", "");
	make_cert_at(fx.cert, fx.key, "first");
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = 127.0.0.1:%d\n"
		 "tls_cert = %s\ntls_key = %s\nworkers = 2\n"
		 "handshake_timeout = %d\nmax_frame = 16m\n"
		 "max_frames_per_s = %d\nframes_burst = %d\n"
		 "auth_failures_per_addr = %d\nauth_failures_per_device = %d\n"
		 "auth_failure_window = %d\n\n"
		 "[admin]\nrequest_timeout = %d\n\n"
		 "[receipts]\ndelivered = off\n",
		 fx.port, fx.tls_port, fx.cert, fx.key, HANDSHAKE_MS, FRAMES_PER_S, FRAMES_BURST,
		 FAILS_PER_ADDR, FAILS_PER_DEVICE, FAIL_WINDOW_S, ADMIN_TIMEOUT_S);
	cfg = th_ferryd_config_ex(fx.conninfo, fx.admin_port, TOKEN, extra);
	path = th_write_file("hard.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	th_ferryd_start(&fx.d, cfg, fx.admin_port);
	th_device_create(&fx.d, TOKEN, "alice", &fx.a1, fx.a1s);
	th_device_create(&fx.d, TOKEN, "bob", &fx.b1, fx.b1s);
	fx.next_client_id = 1000;
	unlink(path);
	free(path);
	free(cfg);
	return 0;
}

static int teardown(void **state)
{
	int status = th_ferryd_stop(&fx.d, SIGTERM);

	free(fx.conninfo);
	free(fx.cert);
	free(fx.key);
	return status == 0 ? 0 : -1;
}

/* ---- helpers ---- */

/* utime + stime of @pid, in clock ticks. */
static long long proc_cpu_ticks(pid_t pid)
{
	char path[64], buf[4096], *p;
	unsigned long long ut = 0, st = 0;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the command may hold spaces */
	assert_non_null(p);
	/* after ") ": state(3) ... utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		fail_msg("cannot read %s", path);
	return (long long)(ut + st);
}

/*
 * Read from @fd until it is closed or @timeout_ms passes: returns the ms it
 * took to be closed (-1: still open); the first frame read is decoded into
 * *err_code if it is an ERROR (else *err_code is 0).
 */
static long long wait_closed(int fd, int timeout_ms, unsigned *err_code)
{
	uint8_t buf[4096];
	size_t len = 0;
	long long start = th_now_ms();

	*err_code = 0;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		long long left = timeout_ms - (th_now_ms() - start);
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return -1;
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n <= 0)
			return th_now_ms() - start;
		len += (size_t)n;
		if (!*err_code) {
			struct proto_frame f;
			size_t used;

			if (proto_decode(buf, len, 1 << 20, &f, &used) == FERRY_OK && used &&
			    f.type == PROTO_ERROR)
				*err_code = (unsigned)f.u.error.code;
		}
		if (len == sizeof(buf))
			len = 0;
	}
}

/* ---- 1. oversized length prefixes ---- */

#define PREFIX_CONNS 100

/*
 * A length prefix alone, over max_frame (max + 1 in 4 bytes) or over what 4
 * bytes may say (2^32 - 1 in 5): ERROR too_large at once, before any body,
 * and the daemon's memory stays where it was.
 */
static void test_oversized_prefix(void **state)
{
	static const uint8_t u32max[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
	uint8_t over[PROTO_MAX_VARINT];
	size_t over_len = proto_varint_put(over, MAX_FRAME + 1);
	int fds[PREFIX_CONNS];
	long rss_before, rss_after;

	assert_int_equal(over_len, 4);
	/* A first round warms the daemon up (threads, pools, buffers). */
	for (int round = 0; round < 2; round++) {
		rss_before = th_proc_status(fx.d.pid, "VmRSS:");
		for (int i = 0; i < PREFIX_CONNS; i++)
			fds[i] = th_tcp_connect(fx.port);
		for (int i = 0; i < PREFIX_CONNS; i++) {
			const uint8_t *p = i % 2 ? u32max : over;
			size_t n = i % 2 ? sizeof(u32max) : over_len;

			if (write(fds[i], p, n) != (ssize_t)n)
				fail_msg("write: %s", strerror(errno));
		}
		for (int i = 0; i < PREFIX_CONNS; i++) {
			unsigned code;
			long long ms = wait_closed(fds[i], 3000, &code);

			if (ms < 0)
				fail_msg("connection %d not closed after an oversized prefix", i);
			assert_int_equal(code, PROTO_ERR_TOO_LARGE);
			/* "at once": well within the handshake deadline */
			assert_true(ms < HANDSHAKE_MS);
		}
		rss_after = th_proc_status(fx.d.pid, "VmRSS:");
		for (int i = 0; i < PREFIX_CONNS; i++)
			close(fds[i]);
	}
	/* 100 connections that each set max_frame (16 MiB) aside would be
	 * gigabytes; a few MiB is noise (the sanitizer's own bookkeeping). */
	if (rss_after - rss_before > 4096)
		fail_msg("ferryd's RSS grew from %ld to %ld KiB", rss_before, rss_after);
}

/* ---- 2. silent and half-open connections ---- */

enum { SL_SILENT, SL_PARTIAL, SL_TRICKLE };

struct slow {
	const char *what;
	int port;
	int kind;
	const char *bytes; /* SL_PARTIAL: sent once; SL_TRICKLE: one byte at a time */
	size_t len;
	int limit_ms; /* closed within this */
	int fd;
	size_t sent;
	long long closed_ms; /* -1: still open */
};

#define SLOW(w, p, k, b, l, lim)                                                                   \
	{                                                                                          \
		.what = (w), .port = (p), .kind = (k), .bytes = (b), .len = (l), .limit_ms = (lim) \
	}

/* Connect every @n peers, feed them as their kind says, and wait until
 * each is closed or past its limit. */
static void run_slow(struct slow *s, size_t n)
{
	long long start = th_now_ms(), last_trickle = 0;
	size_t open = n;
	int longest = 0;

	for (size_t i = 0; i < n; i++) {
		s[i].fd = th_tcp_connect(s[i].port);
		s[i].sent = 0;
		s[i].closed_ms = -1;
		if (s[i].limit_ms > longest)
			longest = s[i].limit_ms;
		if (s[i].kind == SL_PARTIAL && write(s[i].fd, s[i].bytes, s[i].len) < 0)
			fail_msg("%s: write: %s", s[i].what, strerror(errno));
	}
	while (open && th_now_ms() - start < longest + 1000) {
		struct pollfd pfd[16];

		assert_true(n <= 16);
		if (th_now_ms() - last_trickle >= 200) {
			last_trickle = th_now_ms();
			for (size_t i = 0; i < n; i++)
				if (s[i].kind == SL_TRICKLE && s[i].closed_ms < 0 &&
				    s[i].sent < s[i].len &&
				    write(s[i].fd, s[i].bytes + s[i].sent, 1) == 1)
					s[i].sent++;
		}
		for (size_t i = 0; i < n; i++) {
			pfd[i].fd = s[i].closed_ms < 0 ? s[i].fd : -1;
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		poll(pfd, n, 50);
		for (size_t i = 0; i < n; i++) {
			char buf[4096];

			if (s[i].closed_ms >= 0 || !pfd[i].revents)
				continue;
			if (read(s[i].fd, buf, sizeof(buf)) <= 0) {
				s[i].closed_ms = th_now_ms() - start;
				open--;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		close(s[i].fd);
		if (s[i].closed_ms < 0 || s[i].closed_ms > s[i].limit_ms)
			fail_msg("%s: closed after %lld ms (limit %d ms; -1: still open)",
				 s[i].what, s[i].closed_ms, s[i].limit_ms);
	}
}

/*
 * Silent connections, half-sent HELLOs, ClientHellos and headers, and a
 * HELLO trickled a byte at a time, on the device ports (plain and TLS) and
 * the admin port: all closed within the handshake deadline or [admin]
 * request_timeout, while a device and the admin API carry on.
 */
static void test_slowloris(void **state)
{
	static const char hello_part[] = { 0x20, PROTO_HELLO, 0x01 };
	static const char tls_part[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00 };
	static const char http_part[] = "GET /v1/stats HTTP/1.1\r\nHost: localhost\r\n";
	/* 32 bytes of HELLO, a byte every 200 ms: 6.4 s if the deadline let it. */
	static const char hello_trickle[] = { 0x20, PROTO_HELLO, 0x01, 0x05, 0x1c, 'a', 'a', 'a',
					      'a',  'a',	 'a',  'a',  'a',  'a', 'a', 'a',
					      'a',  'a',	 'a',  'a',  'a',  'a', 'a', 'a',
					      'a',  'a',	 'a',  'a',  'a',  'a', 'a', 'a' };
	int dev_ms = HANDSHAKE_MS + 700, admin_ms = ADMIN_TIMEOUT_S * 1000 + 1500;
	struct slow s[] = {
		SLOW("device: silent", fx.port, SL_SILENT, NULL, 0, dev_ms),
		SLOW("device: half a HELLO", fx.port, SL_PARTIAL, hello_part, sizeof(hello_part),
		     dev_ms),
		SLOW("device: trickled HELLO", fx.port, SL_TRICKLE, hello_trickle,
		     sizeof(hello_trickle), dev_ms),
		SLOW("tls: silent", fx.tls_port, SL_SILENT, NULL, 0, dev_ms),
		SLOW("tls: half a ClientHello", fx.tls_port, SL_PARTIAL, tls_part, sizeof(tls_part),
		     dev_ms),
		SLOW("admin: silent", fx.admin_port, SL_SILENT, NULL, 0, admin_ms),
		SLOW("admin: half a header", fx.admin_port, SL_PARTIAL, http_part,
		     sizeof(http_part) - 1, admin_ms),
	};

	struct rawdev *a1 = rawdev_new();
	struct proto_frame ping = { .type = PROTO_PING };
	struct th_response r;

	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	run_slow(s, sizeof(s) / sizeof(s[0]));
	/* Legitimate traffic is unaffected. */
	ping.u.nonce = 77;
	rawdev_send(a1, &ping);
	assert_int_equal(rawdev_expect(a1, PROTO_PONG, 2000)->u.nonce, 77);
	{
		char url[128];

		snprintf(url, sizeof(url), "%s/v1/stats", fx.d.admin_url);
		th_http(&r, "GET", url, TOKEN, NULL);
		assert_int_equal(r.status, 200);
		th_response_release(&r);
	}
	rawdev_free(a1);
}

/* ---- 3. frame floods ---- */

/*
 * Send @f again and again, 50 at a time, reading what comes back between
 * the rounds, until the server closes the connection. Returns the frames it
 * answered (not ERROR); *code gets the ERROR's code (0: none).
 */
static int flood(struct rawdev *d, const struct proto_frame *f, unsigned *code)
{
	static uint8_t chunk[50 * 64];
	size_t one, len = 0;
	int answers = 0;

	assert_int_equal(proto_encode(f, chunk, sizeof(chunk), &one), FERRY_OK);
	for (int i = 1; i < 50; i++)
		memcpy(chunk + i * one, chunk, one);
	len = 50 * one;
	*code = 0;
	for (int round = 0; round < 100; round++) {
		int r;

		if (write(d->fd, chunk, len) != (ssize_t)len)
			break; /* closed meanwhile */
		while ((r = rawdev_read(d, round < 10 ? 100 : 20)) == 1) {
			if (d->f.type == PROTO_ERROR) {
				*code = (unsigned)d->f.u.error.code;
				break;
			}
			answers++;
		}
		if (*code || r < 0)
			break;
	}
	while (!*code && rawdev_read(d, 2000) == 1)
		if (d->f.type == PROTO_ERROR)
			*code = (unsigned)d->f.u.error.code;
	return answers;
}

/*
 * PINGs, PONGs and DELIVER_ACKs of ids never sent, as fast as the socket
 * takes them: the connection is closed with ERROR rate_limited after about
 * frames_burst of them. A device acknowledging every DELIVER on its own,
 * and a sender sending many SENDs at once, are not limited.
 */
static void test_frame_flood(void **state)
{
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	struct proto_frame f = { .type = PROTO_PING };
	static uint8_t sends[400 * 64];
	size_t len = 0, n;
	unsigned code;
	int answers, acks = 0, delivers = 0;

	/* PING: answered up to the burst, then cut off. */
	f.u.nonce = 5;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	answers = flood(a1, &f, &code);
	assert_int_equal(code, PROTO_ERR_RATE_LIMITED);
	assert_true(answers >= FRAMES_BURST - 10 && answers <= FRAMES_BURST + 50);
	rawdev_close(a1);
	/* PONG nobody asked for. */
	f.type = PROTO_PONG;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	flood(a1, &f, &code);
	assert_int_equal(code, PROTO_ERR_RATE_LIMITED);
	rawdev_close(a1);
	/* DELIVER_ACKs of ids this connection was never sent. */
	f.type = PROTO_DELIVER_ACK;
	f.u.ids.count = 1;
	f.u.ids.ids[0] = 123456789;
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	flood(a1, &f, &code);
	assert_int_equal(code, PROTO_ERR_RATE_LIMITED);
	rawdev_close(a1);

	/* 400 SENDs in one write, each DELIVER acknowledged in a frame of its
	 * own: four times the burst, nothing limited. */
	rawdev_login(a1, fx.port, fx.a1, fx.a1s);
	rawdev_login(b1, fx.port, fx.b1, fx.b1s);
	for (int i = 0; i < 400; i++) {
		struct proto_frame s = { .type = PROTO_SEND };

		s.u.send.client_id = ++fx.next_client_id;
		s.u.send.to_user.p = (const uint8_t *)"alice";
		s.u.send.to_user.len = 5;
		s.u.send.payload.p = (const uint8_t *)"flood";
		s.u.send.payload.len = 5;
		assert_int_equal(proto_encode(&s, sends + len, sizeof(sends) - len, &n), FERRY_OK);
		len += n;
	}
	rawdev_write(b1, sends, len);
	while (acks < 400) {
		int progress = 0;

		while (rawdev_read(a1, 0) == 1) {
			if (a1->f.type == PROTO_ERROR)
				fail_msg("receiver got ERROR %s",
					 proto_error_name(a1->f.u.error.code));
			if (a1->f.type == PROTO_DELIVER) {
				rawdev_ack(a1, a1->f.u.deliver.server_id);
				delivers++;
				progress = 1;
			}
		}
		while (rawdev_read(b1, 0) == 1) {
			if (b1->f.type != PROTO_ACK)
				fail_msg("sender got %s", proto_type_name(b1->f.type));
			acks++;
			progress = 1;
		}
		if (!progress && rawdev_read(b1, 3000) == 1) {
			if (b1->f.type != PROTO_ACK)
				fail_msg("sender got %s", proto_type_name(b1->f.type));
			acks++;
		} else if (!progress && rawdev_read(a1, 0) == 0 && rawdev_read(b1, 0) == 0) {
			fail_msg("stalled after %d ACKs, %d DELIVERs", acks, delivers);
		}
	}
	/* Both still connected: a PING is answered. */
	f.type = PROTO_PING;
	f.u.nonce = 9;
	rawdev_send(a1, &f);
	/* DELIVERs still on their way, and the QUEUE_EMPTY that follows the
	 * stored ones, may come before the PONG. */
	while (rawdev_read(a1, 3000) == 1 &&
	       (a1->f.type == PROTO_DELIVER || a1->f.type == PROTO_QUEUE_EMPTY))
		if (a1->f.type == PROTO_DELIVER)
			rawdev_ack(a1, a1->f.u.deliver.server_id);
	assert_int_equal(a1->f.type, PROTO_PONG);
	rawdev_send(b1, &f);
	assert_int_equal(rawdev_expect(b1, PROTO_PONG, 3000)->u.nonce, 9);
	rawdev_free(a1);
	rawdev_free(b1);
}

/* ---- 4. out of descriptors ---- */

#define EMFILE_CONNS 300

/*
 * A daemon whose open-file limit is a little above what it uses, and many
 * more connections than that: those it cannot take are closed at once, it
 * does not spin (CPU over a second stays low), the device already connected
 * carries on, the log says so once rather than once per connection, and
 * once the flood is gone new devices connect again.
 */
static void test_out_of_descriptors(void **state)
{
	struct th_ferryd d;
	int port = th_free_port(), admin = th_free_port(), fds[EMFILE_CONNS], shed = 0;
	struct rawdev *a1 = rawdev_new(), *b1 = rawdev_new();
	struct proto_frame ping = { .type = PROTO_PING };
	struct rlimit rl;
	char extra[256], *cfg, es[64];
	long long t0, t1;
	int64_t e1;
	int used;

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\nhandshake_timeout = 60000\n",
		 port);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	th_ferryd_start(&d, cfg, admin);
	free(cfg);
	/* A device of its own: earlier tests may have left A1 envelopes. */
	th_device_create(&fx.d, TOKEN, "erin", &e1, es);
	rawdev_login(a1, port, e1, es);
	used = th_fd_count(d.pid);
	rl.rlim_cur = rl.rlim_max = (rlim_t)used + 20;
	if (prlimit(d.pid, RLIMIT_NOFILE, &rl, NULL))
		fail_msg("prlimit: %s", strerror(errno));
	for (int i = 0; i < EMFILE_CONNS; i++)
		fds[i] = th_tcp_connect(port);
	sleep(1);
	t0 = proc_cpu_ticks(d.pid);
	sleep(1);
	t1 = proc_cpu_ticks(d.pid);
	/* A loop spinning on a readable listener takes a whole core (100
	 * ticks a second); an idle one next to nothing. */
	if (t1 - t0 > 25)
		fail_msg("ferryd used %lld ticks in a second out of descriptors", t1 - t0);
	for (int i = 0; i < EMFILE_CONNS; i++) {
		struct pollfd pfd = { .fd = fds[i], .events = POLLIN };
		char c;

		if (poll(&pfd, 1, 0) == 1 && read(fds[i], &c, 1) <= 0)
			shed++;
	}
	/* All but the few it took (up to its limit) were closed at once. */
	if (shed < EMFILE_CONNS - 40)
		fail_msg("only %d of %d connections were closed", shed, EMFILE_CONNS);
	/* The device connected before carries on. */
	ping.u.nonce = 31;
	rawdev_send(a1, &ping);
	assert_int_equal(rawdev_expect(a1, PROTO_PONG, 3000)->u.nonce, 31);
	/* Said in the log, but not once per connection. */
	th_log_wait(&d, "event=accept_failed", 1);
	assert_true(th_log_count(&d, "event=accept_failed") <= 4);
	for (int i = 0; i < EMFILE_CONNS; i++)
		close(fds[i]);
	sleep(1);
	rawdev_login(b1, port, fx.b1, fx.b1s);
	rawdev_free(a1);
	rawdev_free(b1);
	rl.rlim_cur = rl.rlim_max = 20000;
	prlimit(d.pid, RLIMIT_NOFILE, &rl, NULL);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
}

/* ---- 5. failed handshakes ---- */

/* HELLO as @device with @secret; the ERROR's code and text in @text (and
 * the ms it took), or 0 for WELCOME. */
static unsigned hello_result(int64_t device, const char *secret, char text[300], long long *ms)
{
	struct rawdev *d = rawdev_new();
	long long t0;
	unsigned code = 0;

	rawdev_connect(d, fx.port, NULL);
	t0 = th_now_ms();
	rawdev_hello(d, PROTO_VERSION, device, secret);
	if (rawdev_read(d, 5000) != 1)
		fail_msg("no answer to HELLO");
	if (ms)
		*ms = th_now_ms() - t0;
	if (d->f.type == PROTO_ERROR) {
		code = (unsigned)d->f.u.error.code;
		snprintf(text, 300, "%.*s", (int)d->f.u.error.text.len,
			 (const char *)d->f.u.error.text.p);
	} else if (d->f.type != PROTO_WELCOME) {
		fail_msg("HELLO answered %s", proto_type_name(d->f.type));
	}
	rawdev_free(d);
	return code;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

/*
 * An unknown device and a wrong secret: the same ERROR, text and all, in
 * about the same time. Too many failures for one device, then from one
 * address, and HELLOs are refused unchecked (rate_limited) until the window
 * ends, when they work again.
 */
static void test_auth_failures(void **state)
{
	long long wrong_ms[FAILS_PER_DEVICE], unknown_ms[FAILS_PER_DEVICE], hi, lo;
	char text[300], first[300];
	int failures = 0;

	/* Uniform answers: FAILS_PER_DEVICE wrong secrets for A1, as many
	 * unknown devices, and an id no device can have. */
	for (int i = 0; i < FAILS_PER_DEVICE; i++) {
		assert_int_equal(hello_result(fx.a1, "wrong-secret-wrong-secret-wrong-secre", text,
					      &wrong_ms[i]),
				 PROTO_ERR_AUTH_FAILED);
		if (i == 0)
			snprintf(first, sizeof(first), "%s", text);
		assert_string_equal(text, first);
		assert_int_equal(hello_result(900000 + i, fx.a1s, text, &unknown_ms[i]),
				 PROTO_ERR_AUTH_FAILED);
		assert_string_equal(text, first);
		failures += 2;
	}
	assert_int_equal(hello_result((int64_t)INT64_MAX, fx.a1s, text, NULL),
			 PROTO_ERR_AUTH_FAILED);
	assert_string_equal(text, first);
	failures++;
	qsort(wrong_ms, FAILS_PER_DEVICE, sizeof(long long), cmp_ll);
	qsort(unknown_ms, FAILS_PER_DEVICE, sizeof(long long), cmp_ll);
	hi = wrong_ms[FAILS_PER_DEVICE / 2];
	lo = unknown_ms[FAILS_PER_DEVICE / 2];
	if (lo > hi) {
		long long t = lo;

		lo = hi;
		hi = t;
	}
	/* The same work: medians within a loose factor (a shared machine). */
	if (hi > 3 * lo + 20)
		fail_msg("median answers: wrong secret %lld ms, unknown device %lld ms",
			 wrong_ms[FAILS_PER_DEVICE / 2], unknown_ms[FAILS_PER_DEVICE / 2]);

	/* A1 had its FAILS_PER_DEVICE: refused even with its secret. B1 not. */
	assert_int_equal(hello_result(fx.a1, fx.a1s, text, NULL), PROTO_ERR_RATE_LIMITED);
	assert_int_equal(hello_result(fx.b1, fx.b1s, text, NULL), 0);
	sleep(FAIL_WINDOW_S);
	usleep(300 * 1000);
	assert_int_equal(hello_result(fx.a1, fx.a1s, text, NULL), 0);

	/* The address: FAILS_PER_ADDR failures, each for a device of its own. */
	for (int i = 0; i < FAILS_PER_ADDR; i++)
		assert_int_equal(hello_result(800000 + i, fx.a1s, text, NULL),
				 PROTO_ERR_AUTH_FAILED);
	assert_int_equal(hello_result(fx.b1, fx.b1s, text, NULL), PROTO_ERR_RATE_LIMITED);
	sleep(FAIL_WINDOW_S);
	usleep(300 * 1000);
	assert_int_equal(hello_result(fx.b1, fx.b1s, text, NULL), 0);
	assert_true(failures > FAILS_PER_DEVICE);
}

/* ---- 6. TLS: versions, ciphers, certificate reloads ---- */

/* What one handshake showed. */
struct hs {
	int ok;		  /* the handshake completed */
	int hello_sent;	  /* a ClientHello went out */
	int alert;	  /* the first alert the server sent (its description), -1: none */
	int version;	  /* negotiated, when ok */
	char vname[16];	  /* its name, "TLSv1.3" */
	char cipher[64];  /* negotiated, when ok */
	char subject[64]; /* of the server's certificate, "/CN=first", when ok */
};

/* Records as they pass: the ClientHello we send, the alerts we get. */
static void on_tls_msg(int write_p, int version, int content_type, const void *buf, size_t len,
		       SSL *ssl, void *arg)
{
	struct hs *h = arg;
	const unsigned char *p = buf;

	if (write_p && content_type == SSL3_RT_HANDSHAKE && len && p[0] == SSL3_MT_CLIENT_HELLO)
		h->hello_sent = 1;
	if (!write_p && content_type == SSL3_RT_ALERT && len == 2 && h->alert < 0)
		h->alert = p[1];
}

/* A client at security level 0, offering versions @min to @max, the TLS 1.2
 * ciphers @ciphers and the TLS 1.3 suites @suites (NULL: OpenSSL's own), so
 * that whatever is refused is refused by the server. The certificate is not
 * verified here: the handshakes that rely on it go through rawdev. */
static SSL *tls_client(int fd, int min, int max, const char *ciphers, const char *suites,
		       struct hs *h)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;

	assert_non_null(ctx);
	SSL_CTX_set_security_level(ctx, 0);
	assert_int_equal(SSL_CTX_set_min_proto_version(ctx, min), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max), 1);
	if (ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
		fail_msg("this OpenSSL does not know the ciphers '%s'", ciphers);
	if (suites && SSL_CTX_set_ciphersuites(ctx, suites) != 1)
		fail_msg("this OpenSSL does not know the suites '%s'", suites);
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds it */
	assert_non_null(ssl);
	memset(h, 0, sizeof(*h));
	h->alert = -1;
	SSL_set_msg_callback(ssl, on_tls_msg);
	SSL_set_msg_callback_arg(ssl, h);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	return ssl;
}

/* Handshake with @ssl; what it showed into @h. */
static void tls_handshake(SSL *ssl, struct hs *h)
{
	h->ok = SSL_connect(ssl) == 1;
	if (h->ok) {
		X509 *x = SSL_get1_peer_certificate(ssl);

		assert_non_null(x);
		X509_NAME_oneline(X509_get_subject_name(x), h->subject, sizeof(h->subject));
		X509_free(x);
		h->version = SSL_version(ssl);
		snprintf(h->vname, sizeof(h->vname), "%s", SSL_get_version(ssl));
		snprintf(h->cipher, sizeof(h->cipher), "%s", SSL_get_cipher_name(ssl));
	}
	ERR_clear_error();
}

/* A connection to the TLS port that gives up on a silent server. */
static int tls_connect_fd(void)
{
	struct timeval tv = { 5, 0 };
	int fd = th_tcp_connect(fx.tls_port);

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* One handshake with the TLS port (see tls_client()). */
static void tls_try(int min, int max, const char *ciphers, const char *suites, struct hs *h)
{
	int fd = tls_connect_fd();
	SSL *ssl = tls_client(fd, min, max, ciphers, suites, h);

	tls_handshake(ssl, h);
	SSL_free(ssl);
	close(fd);
}

/* The server saw our ClientHello and refused it with alert @alert. */
static void expect_refused(const struct hs *h, int alert, const char *what)
{
	if (h->ok)
		fail_msg("%s: accepted (%s, %s)", what, h->vname, h->cipher);
	if (!h->hello_sent)
		fail_msg("%s: the client sent no ClientHello: refused on our side", what);
	if (h->alert != alert)
		fail_msg("%s: server alert %d, expected %d", what, h->alert, alert);
}

static void expect_accepted(const struct hs *h, int version, const char *cipher, const char *what)
{
	if (!h->ok)
		fail_msg("%s: refused (server alert %d)", what, h->alert);
	assert_int_equal(h->version, version);
	assert_string_equal(h->cipher, cipher);
}

/* Offered alone in TLS 1.2, each is refused whatever the certificate: CBC
 * and SHA-1, RSA key exchange (no forward secrecy), DHE (not in Mozilla's
 * intermediate since guideline 6.0), CCM, ARIA, Camellia. (3DES cannot be
 * offered: Debian builds OpenSSL without its suites.) */
static const char *const weak_tls12[] = {
	"ECDHE-ECDSA-AES128-SHA",
	"ECDHE-ECDSA-AES256-SHA384",
	"ECDHE-RSA-AES128-SHA",
	"ECDHE-RSA-AES256-SHA384",
	"AES128-SHA",
	"AES256-GCM-SHA384",
	"DHE-RSA-AES128-GCM-SHA256",
	"DHE-RSA-CHACHA20-POLY1305",
	"ECDHE-ECDSA-AES128-CCM",
	"ECDHE-ECDSA-ARIA128-GCM-SHA256",
	"ECDHE-RSA-CAMELLIA128-SHA256",
};

/* Mozilla's intermediate TLS 1.2 ciphers for an ECDSA and an RSA key; the
 * ChaCha20 one last. */
static const char *const good_ecdsa[] = { "ECDHE-ECDSA-AES128-GCM-SHA256",
					  "ECDHE-ECDSA-AES256-GCM-SHA384",
					  "ECDHE-ECDSA-CHACHA20-POLY1305" };
static const char *const good_rsa[] = { "ECDHE-RSA-AES128-GCM-SHA256",
					"ECDHE-RSA-AES256-GCM-SHA384",
					"ECDHE-RSA-CHACHA20-POLY1305" };

static const char *const tls13_suites[] = { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
					    "TLS_CHACHA20_POLY1305_SHA256" };

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* TLS 1.0 and 1.1 are refused by the server: alert protocol_version, after
 * our ClientHello went out. */
static void check_old_versions(void)
{
	struct hs h;

	tls_try(TLS1_VERSION, TLS1_VERSION, "ALL:@SECLEVEL=0", NULL, &h);
	expect_refused(&h, SSL_AD_PROTOCOL_VERSION, "TLS 1.0");
	tls_try(TLS1_1_VERSION, TLS1_1_VERSION, "ALL:@SECLEVEL=0", NULL, &h);
	expect_refused(&h, SSL_AD_PROTOCOL_VERSION, "TLS 1.1");
	tls_try(TLS1_VERSION, TLS1_1_VERSION, "ALL:@SECLEVEL=0", NULL, &h);
	expect_refused(&h, SSL_AD_PROTOCOL_VERSION, "TLS 1.0 to 1.1");
	/* A client that offers 1.0 to 1.3 gets the newest. */
	tls_try(TLS1_VERSION, TLS1_3_VERSION, "ALL:@SECLEVEL=0", NULL, &h);
	if (!h.ok || h.version != TLS1_3_VERSION)
		fail_msg("TLS 1.0 to 1.3 offered: %s", h.ok ? h.vname : "refused");
}

/*
 * What the TLS port takes with the certificate it serves now, whose key is
 * ECDSA (@ecdsa 1) or RSA: the old versions refused; in TLS 1.2 each
 * intermediate cipher for the key taken, each weak one refused (alert
 * handshake_failure); TLS 1.3 with each of its three suites, not with CCM;
 * and the client's order wins, in both versions.
 */
static void check_tls_policy(int ecdsa)
{
	const char *const *good = ecdsa ? good_ecdsa : good_rsa;
	char chacha_first[128];
	struct hs h;

	check_old_versions();
	for (size_t i = 0; i < N_OF(good_ecdsa); i++) {
		tls_try(TLS1_2_VERSION, TLS1_2_VERSION, good[i], NULL, &h);
		expect_accepted(&h, TLS1_2_VERSION, good[i], good[i]);
	}
	for (size_t i = 0; i < N_OF(weak_tls12); i++) {
		tls_try(TLS1_2_VERSION, TLS1_2_VERSION, weak_tls12[i], NULL, &h);
		expect_refused(&h, SSL_AD_HANDSHAKE_FAILURE, weak_tls12[i]);
	}
	/* Server preference off: the client's first choice, not our list's. */
	snprintf(chacha_first, sizeof(chacha_first), "%s:%s", good[2], good[0]);
	tls_try(TLS1_2_VERSION, TLS1_2_VERSION, chacha_first, NULL, &h);
	expect_accepted(&h, TLS1_2_VERSION, good[2], "TLS 1.2, ChaCha20 first");

	for (size_t i = 0; i < N_OF(tls13_suites); i++) {
		tls_try(TLS1_3_VERSION, TLS1_3_VERSION, NULL, tls13_suites[i], &h);
		expect_accepted(&h, TLS1_3_VERSION, tls13_suites[i], tls13_suites[i]);
	}
	tls_try(TLS1_3_VERSION, TLS1_3_VERSION, NULL, "TLS_AES_128_CCM_SHA256", &h);
	expect_refused(&h, SSL_AD_HANDSHAKE_FAILURE, "TLS 1.3, AES-CCM");
	tls_try(TLS1_3_VERSION, TLS1_3_VERSION, NULL,
		"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", &h);
	expect_accepted(&h, TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256",
			"TLS 1.3, ChaCha20 first");
}

/* The TLS port as the fixture started it (an ECDSA certificate). */
static void test_tls_policy(void **state)
{
	check_tls_policy(1);
}

/* A client's renegotiation is answered with alert no_renegotiation. */
static void test_tls_no_renegotiation(void **state)
{
	int fd = tls_connect_fd();
	struct hs h;
	SSL *ssl = tls_client(fd, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL, &h);

	tls_handshake(ssl, &h);
	if (!h.ok)
		fail_msg("TLS 1.2 refused (server alert %d)", h.alert);
	h.hello_sent = 0;
	assert_int_equal(SSL_renegotiate(ssl), 1);
	if (SSL_do_handshake(ssl) == 1)
		fail_msg("the server renegotiated");
	assert_true(h.hello_sent);
	assert_int_equal(h.alert, SSL_AD_NO_RENEGOTIATION);
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
}

/* The subject of the certificate a new handshake gets now. */
static void expect_subject(const char *want)
{
	struct hs h;

	tls_try(TLS1_2_VERSION, TLS1_3_VERSION, NULL, NULL, &h);
	if (!h.ok)
		fail_msg("TLS handshake refused (server alert %d)", h.alert);
	assert_string_equal(h.subject, want);
}

/* Connect over TLS, checking the certificate against @ca, and log in. */
static void tls_login(struct rawdev *d, const char *ca, int64_t id, const char *secret)
{
	rawdev_connect(d, fx.tls_port, ca);
	rawdev_hello(d, PROTO_VERSION, id, secret);
	assert_int_equal(rawdev_expect(d, PROTO_WELCOME, 5000)->u.welcome.pending, 0);
	rawdev_expect(d, PROTO_QUEUE_EMPTY, 5000);
}

/* @from sends @text to @to_user, whose one device @to gets it and
 * acknowledges it; @from gets ACK(delivered). Then @to answers a PING. */
static void round_trip(struct rawdev *from, const char *to_user, struct rawdev *to,
		       const char *text)
{
	uint64_t cid = ++fx.next_client_id;
	struct proto_frame ping = { .type = PROTO_PING };
	const struct proto_frame *f;

	rawdev_send_text(from, cid, to_user, text);
	f = rawdev_expect(to, PROTO_DELIVER, 5000);
	assert_int_equal(f->u.deliver.client_id, cid);
	assert_int_equal(f->u.deliver.payload.len, strlen(text));
	assert_memory_equal(f->u.deliver.payload.p, text, strlen(text));
	rawdev_ack(to, f->u.deliver.server_id);
	f = rawdev_expect(from, PROTO_ACK, 5000);
	assert_int_equal(f->u.ack.client_id, cid);
	assert_int_equal(f->u.ack.status, PROTO_ACK_DELIVERED);
	ping.u.nonce = cid;
	rawdev_send(to, &ping);
	assert_int_equal(rawdev_expect(to, PROTO_PONG, 5000)->u.nonce, cid);
}

/* Write @text to @path the way a renewal should: a new file of mode @mode
 * renamed over the old one, so that ferryd never reads half a file. */
static void replace_file(const char *path, const char *text, mode_t mode)
{
	char tmp[4096];
	size_t len = strlen(text);
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fchmod(fd, mode) || close(fd))
		fail_msg("cannot write '%s': %s", tmp, strerror(errno));
	if (rename(tmp, path))
		fail_msg("cannot rename '%s': %s", tmp, strerror(errno));
}

/* Send SIGHUP to the fixture's daemon and wait until the log has @event
 * once more. */
static void sighup_wait(const char *event)
{
	int n = th_log_count(&fx.d, event);

	kill(fx.d.pid, SIGHUP);
	th_log_wait(&fx.d, event, n + 1);
}

/* Fail if the log holds the first base64 line of @pem (key material). */
static void expect_not_logged(const char *pem)
{
	const char *p = strchr(pem, '\n');
	char line[65];

	assert_non_null(p);
	snprintf(line, sizeof(line), "%.*s", (int)strcspn(p + 1, "\n"), p + 1);
	assert_true(strlen(line) >= 16);
	if (th_log_count(&fx.d, line))
		fail_msg("the log holds key material");
}

/* A renewed certificate: a new key (RSA, where the first one is ECDSA) and
 * subject, the same paths. */
static void renew_to_second(void)
{
	char *cert = th_write_file("second.pem", ""), *key = th_write_file("second.key", "");
	char *text;

	make_cert_kind(cert, key, "second", RSA_KEY_ARGS);
	text = th_read_file(cert);
	replace_file(fx.cert, text, 0644);
	free(text);
	text = th_read_file(key);
	replace_file(fx.key, text, 0600);
	sighup_wait("event=tls_reloaded");
	assert_int_equal(th_log_count(&fx.d, "event=tls_reloaded subject=\"CN=second\""), 1);
	expect_not_logged(text);
	free(text);
	unlink(cert);
	unlink(key);
	free(cert);
	free(key);
}

/* Broken files: a garbage key, then a good key that is not the
 * certificate's. Each reload fails, says why, and changes nothing. */
static void reload_broken(const char *first_key)
{
	char *cert = th_write_file("third.pem", ""), *key = th_write_file("third.key", "");
	char *text, want[4200];
	int done = th_log_count(&fx.d, "event=reload_done");

	replace_file(fx.key,
		     "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZS1rZXktbWF0ZXJpYWw=\n"
		     "-----END PRIVATE KEY-----\n",
		     0600);
	sighup_wait("event=reload_failed");
	snprintf(want, sizeof(want), "cannot load TLS key '%s'", fx.key);
	assert_int_equal(th_log_count(&fx.d, want), 1);
	assert_int_equal(th_log_count(&fx.d, "Z2FyYmFnZS1rZXktbWF0ZXJpYWw"), 0);
	expect_subject("/CN=second");

	make_cert_kind(cert, key, "third", EC_KEY_ARGS);
	text = th_read_file(cert);
	replace_file(fx.cert, text, 0644);
	free(text);
	replace_file(fx.key, first_key, 0600);
	sighup_wait("event=reload_failed");
	assert_int_equal(th_log_count(&fx.d, "key values mismatch"), 1);
	expect_subject("/CN=second");
	assert_int_equal(th_log_count(&fx.d, "event=reload_done"), done);
	unlink(cert);
	unlink(key);
	free(cert);
	free(key);
}

/*
 * SIGHUP with renewed files at the same paths: a device connected before
 * carries on, new handshakes get the new certificate, with the same policy.
 * Broken files keep the last good certificate, and the log says why without
 * key material. Last, the first certificate again: the devices connected on
 * either carry on.
 */
static void test_tls_reload(void **state)
{
	struct rawdev *carol = rawdev_new(), *dave = rawdev_new();
	char *first_cert = th_read_file(fx.cert), *first_key = th_read_file(fx.key);
	char cs[64], ds[64];
	int64_t c, d;

	th_device_create(&fx.d, TOKEN, "carol", &c, cs);
	th_device_create(&fx.d, TOKEN, "dave", &d, ds);
	expect_subject("/CN=first");
	tls_login(carol, fx.cert, c, cs);

	renew_to_second();
	expect_subject("/CN=second");
	/* Checked against the new certificate alone. */
	tls_login(dave, fx.cert, d, ds);
	round_trip(dave, "carol", carol, "after the reload");
	round_trip(carol, "dave", dave, "from before the reload");
	check_tls_policy(0);

	reload_broken(first_key);
	round_trip(dave, "carol", carol, "after a failed reload");
	expect_not_logged(first_key);

	replace_file(fx.cert, first_cert, 0644);
	replace_file(fx.key, first_key, 0600);
	sighup_wait("event=tls_reloaded");
	expect_subject("/CN=first");
	round_trip(carol, "dave", dave, "both carry on");
	round_trip(dave, "carol", carol, "both carry on");
	rawdev_free(carol);
	rawdev_free(dave);
	free(first_cert);
	free(first_key);
}

/* Handshakes in a loop until told to stop (a thread of its own). */
struct hammer {
	atomic_int stop;
	int ok, failed;
};

static void *hammer_main(void *arg)
{
	struct hammer *hm = arg;

	while (!atomic_load(&hm->stop)) {
		struct hs h;

		tls_try(TLS1_2_VERSION, TLS1_3_VERSION, NULL, NULL, &h);
		if (h.ok && strcmp(h.subject, "/CN=first") == 0)
			hm->ok++;
		else
			hm->failed++;
	}
	return NULL;
}

/*
 * Reloads while workers make SSLs from the context for new connections:
 * every handshake completes, with the certificate of the files. (The swap
 * against the workers is what the ThreadSanitizer run of this test looks
 * at; a context freed under a worker crashes the ASan build.)
 */
static void test_tls_reload_under_load(void **state)
{
	struct hammer hm = { .ok = 0 };
	pthread_t t;

	atomic_init(&hm.stop, 0);
	assert_int_equal(pthread_create(&t, NULL, hammer_main, &hm), 0);
	for (int i = 0; i < 10; i++)
		sighup_wait("event=tls_reloaded");
	atomic_store(&hm.stop, 1);
	pthread_join(t, NULL);
	if (hm.failed || !hm.ok)
		fail_msg("%d handshakes failed, %d completed", hm.failed, hm.ok);
	print_message("%d handshakes during 10 reloads\n", hm.ok);
}

/* @cfg without its line that starts with @key (malloc'ed). */
static char *without_line(const char *cfg, const char *key)
{
	const char *p = strstr(cfg, key);
	const char *end;
	char *out;

	assert_non_null(p);
	end = p + strcspn(p, "\n") + 1;
	out = malloc(strlen(cfg) + 1);
	assert_non_null(out);
	memcpy(out, cfg, (size_t)(p - cfg));
	memcpy(out + (p - cfg), end, strlen(end) + 1);
	return out;
}

static void write_config(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(text, f) < 0 || fclose(f))
		fail_msg("cannot write '%s': %s", path, strerror(errno));
}

/* Nothing listens on 127.0.0.1:@port. */
static void expect_port_closed(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno != ECONNREFUSED)
		fail_msg("port %d: connected, or %s", port, strerror(errno));
	close(fd);
}

/*
 * Turning TLS on or off opens or closes a listener: a restart. A SIGHUP that
 * takes tls_cert and tls_key away reloads the rest and says so, and the TLS
 * port keeps serving its certificate; a daemon that started without TLS
 * does not open the TLS port on a SIGHUP that adds them.
 */
static void test_tls_on_off_needs_restart(void **state)
{
	char *cfg = th_read_file(fx.d.config_path), *a, *b, extra[512];
	int port = th_free_port(), tls_port = th_free_port(), admin = th_free_port();
	int tls_reloads = th_log_count(&fx.d, "event=tls_reloaded");
	struct th_ferryd d;

	a = without_line(cfg, "tls_cert = ");
	b = without_line(a, "tls_key = ");
	write_config(fx.d.config_path, b);
	sighup_wait("event=reload_done");
	assert_int_equal(
		th_log_count(&fx.d, "event=config_needs_restart key=gateway.tls_cert reason="), 1);
	assert_int_equal(
		th_log_count(&fx.d, "event=config_needs_restart key=gateway.tls_key reason="), 1);
	assert_int_equal(th_log_count(&fx.d, "event=tls_reloaded"), tls_reloads);
	expect_subject("/CN=first");
	write_config(fx.d.config_path, cfg);
	sighup_wait("event=tls_reloaded");
	free(a);
	free(b);
	free(cfg);

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = 127.0.0.1:%d\nworkers = 1\n", port,
		 tls_port);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	th_ferryd_start(&d, cfg, admin);
	free(cfg);
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = 127.0.0.1:%d\nworkers = 1\n"
		 "tls_cert = %s\ntls_key = %s\n",
		 port, tls_port, fx.cert, fx.key);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	write_config(d.config_path, cfg);
	free(cfg);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_done", 1);
	assert_int_equal(
		th_log_count(&d, "event=config_needs_restart key=gateway.tls_cert reason="), 1);
	assert_int_equal(th_log_count(&d, "event=tls_reloaded"), 0);
	expect_port_closed(tls_port);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oversized_prefix),
		cmocka_unit_test(test_slowloris),
		cmocka_unit_test(test_frame_flood),
		cmocka_unit_test(test_out_of_descriptors),
		cmocka_unit_test(test_auth_failures),
		cmocka_unit_test(test_tls_policy),
		cmocka_unit_test(test_tls_no_renegotiation),
		cmocka_unit_test(test_tls_reload),
		cmocka_unit_test(test_tls_reload_under_load),
		cmocka_unit_test(test_tls_on_off_needs_restart),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("hardening", tests, setup, teardown);
}
