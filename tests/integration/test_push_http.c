/*
 * test_push_http.c - the push senders' HTTP/2 client (push/http.c) against
 * a real HTTP/2 TLS server: nghttpd (from nghttp2-server) serving a scratch
 * directory with a certificate from a throwaway CA that the test makes.
 *
 * What nghttpd does that the tests rely on: GET of a file answers 200 with
 * it, of a missing one 404; with --echo-upload a POST is answered 200 with
 * its own body (whatever the path); opening a FIFO blocks the whole server,
 * so requests for one stay in flight until the server is killed. Response
 * headers of our choosing and a GOAWAY come from a small scripted server on
 * libnghttp2 in a child process (below).
 *
 * The client runs on a loop of the test's own, as on the push thread.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "push/http.h"
#include "tests/integration/harness.h"
#include "common/banned.h"

#define NGHTTPD "/usr/sbin/nghttpd"
#define WAIT_MS 20000
#define APNS_ID "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
#define OK_TEXT "hello from ferry\n"
#define MANY 200
#define BIG_LEN (200u * 1024)
#define RETRY_DATE "Wed, 21 Oct 2037 07:28:00 GMT"

struct server {
	pid_t pid;
	int port;
	char log[512];
};

static struct {
	char dir[256]; /* scratch: certificates, docroot */
	char www[300]; /* the docroot */
	char ca[300], key[300], cert[300];
	struct server main; /* for the tests that do not kill it */
	struct server h2;   /* the scripted server below */
	pid_t spawned[16];  /* every server started, killed by teardown */
	int nspawned;
	uv_loop_t loop;
	uv_timer_t tick;
} fx;

/* ---- set-up ---- */

static void run_cmd(const char *fmt, ...) FERRY_PRINTF(1, 2);
static void run_cmd(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

/* A CA, and a certificate for "localhost" that it signed. */
static void make_certs(void)
{
	const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

	snprintf(fx.ca, sizeof(fx.ca), "%s/ca.pem", fx.dir);
	snprintf(fx.key, sizeof(fx.key), "%s/server.key", fx.dir);
	snprintf(fx.cert, sizeof(fx.cert), "%s/server.pem", fx.dir);
	run_cmd("cd '%s' && openssl req -x509 %s -days 1 -subj /CN=ferry-test-ca "
		"-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
		"-keyout ca.key -out ca.pem 2>/dev/null",
		fx.dir, ec);
	run_cmd("cd '%s' && openssl req -new %s -subj /CN=localhost "
		"-addext subjectAltName=DNS:localhost -keyout server.key -out server.csr "
		"2>/dev/null && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
		"-CAcreateserial -days 1 -copy_extensions copy -out server.pem 2>/dev/null",
		fx.dir, ec);
}

static void make_docroot(void)
{
	char path[700], *big;
	FILE *f;

	snprintf(fx.www, sizeof(fx.www), "%s/www", fx.dir);
	if (mkdir(fx.www, 0755))
		fail_msg("mkdir '%s': %s", fx.www, strerror(errno));
	snprintf(path, sizeof(path), "%s/ok.txt", fx.www);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(OK_TEXT, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/big.bin", fx.www);
	f = fopen(path, "w");
	assert_non_null(f);
	big = malloc(BIG_LEN);
	assert_non_null(big);
	memset(big, 'b', BIG_LEN);
	assert_int_equal(fwrite(big, 1, BIG_LEN, f), BIG_LEN);
	free(big);
	fclose(f);
	snprintf(path, sizeof(path), "%s/hang", fx.www);
	if (mkfifo(path, 0644))
		fail_msg("mkfifo '%s': %s", path, strerror(errno));
}

static int port_open(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	assert_true(fd >= 0);
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* Start nghttpd on s->port (0: a free one) and wait until it listens. */
static void server_start(struct server *s)
{
	char port[16];
	const char *argv[] = {
		NGHTTPD, "-d", fx.www, "--echo-upload", port, fx.key, fx.cert, NULL
	};

	if (!s->port)
		s->port = th_free_port();
	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(s->log, sizeof(s->log), "%s/nghttpd-%d.log", fx.dir, s->port);
	s->pid = th_spawn(argv, s->log);
	if (fx.nspawned < 16)
		fx.spawned[fx.nspawned++] = s->pid;
	for (int i = 0; i < 500; i++) {
		if (port_open(s->port))
			return;
		usleep(10000);
	}
	fail_msg("nghttpd did not listen on port %d", s->port);
}

static void server_kill(struct server *s)
{
	if (s->pid <= 0)
		return;
	for (int i = 0; i < fx.nspawned; i++)
		if (fx.spawned[i] == s->pid)
			fx.spawned[i] = 0;
	kill(s->pid, SIGKILL);
	th_wait(s->pid);
	s->pid = 0;
}

/* ---- a scripted HTTP/2 server ----
 *
 * nghttpd cannot send chosen response headers (its --trailer fields arrive
 * as trailers, which libcurl 7.88 drops) nor a GOAWAY on demand, so this
 * small one, on libnghttp2 and OpenSSL in a child process, does:
 *   /status/NNN  answers NNN with apns-id: APNS_ID; 503 adds
 *                retry-after: 120, 429 retry-after: RETRY_DATE;
 *   /goaway      the first time: GOAWAY whose last stream is the one
 *                before, as APNs does when it sheds a connection: streams
 *                below are answered, this one and later ones never are, and
 *                the connection stays until the client closes it;
 *                afterwards answered like /status/200.
 * One connection at a time, blocking I/O: enough for one client.
 */

struct h2conn {
	SSL *ssl;
	nghttp2_session *session;
	char paths[64][64]; /* by stream id / 2 % 64 */
	int32_t last_sid;   /* after our GOAWAY: the last stream it covers */
	int goaway_sent;
};

static char *stream_path(struct h2conn *c, int32_t id)
{
	return c->paths[(id / 2) % 64];
}

static ssize_t h2_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
	struct h2conn *c = arg;
	int n = SSL_write(c->ssl, data, (int)len);

	return n > 0 ? n : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int h2_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *arg)
{
	struct h2conn *c = arg;

	if (f->hd.type == NGHTTP2_HEADERS && namelen == 5 && memcmp(name, ":path", 5) == 0)
		snprintf(stream_path(c, f->hd.stream_id), 64, "%.*s", (int)valuelen, value);
	return 0;
}

static void h2_answer(struct h2conn *c, int32_t id)
{
	const char *path = stream_path(c, id);
	char status[8] = "200";
	nghttp2_nv nv[3];
	size_t n = 0;

#define NV(k, v)                                                                           \
	nv[n++] = (nghttp2_nv)                                                             \
	{                                                                                  \
		(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE \
	}
	if (id > c->last_sid)
		return;
	if (strcmp(path, "/goaway") == 0 && !c->goaway_sent) {
		c->goaway_sent = 1;
		c->last_sid = id - 2;
		nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, c->last_sid, NGHTTP2_NO_ERROR,
				      NULL, 0);
		return;
	}
	if (strncmp(path, "/status/", 8) == 0)
		snprintf(status, sizeof(status), "%.3s", path + 8);
	NV(":status", status);
	NV("apns-id", APNS_ID);
	if (strcmp(status, "503") == 0)
		NV("retry-after", "120");
	else if (strcmp(status, "429") == 0)
		NV("retry-after", RETRY_DATE);
#undef NV
	nghttp2_submit_response(c->session, id, nv, n, NULL);
}

static int h2_frame(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		h2_answer(arg, f->hd.stream_id);
	return 0;
}

static int h2_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned inlen, void *arg)
{
	return nghttp2_select_next_protocol((unsigned char **)out, outlen, in, inlen) == 1
		       ? SSL_TLSEXT_ERR_OK
		       : SSL_TLSEXT_ERR_NOACK;
}

static void h2_serve(SSL *ssl, int *goaway_sent)
{
	struct h2conn c = { .ssl = ssl, .goaway_sent = *goaway_sent, .last_sid = INT32_MAX };
	nghttp2_session_callbacks *cb;
	uint8_t buf[16384];
	int n;

	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, h2_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, h2_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2_frame);
	nghttp2_session_server_new(&c.session, cb, &c);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, NULL, 0);
	for (;;) {
		/* Until the client closes, even after a GOAWAY: closing with
		 * unread input would reset the connection under the GOAWAY. */
		if (nghttp2_session_send(c.session))
			break;
		n = SSL_read(ssl, buf, sizeof(buf));
		if (n <= 0 || nghttp2_session_mem_recv(c.session, buf, (size_t)n) < 0)
			break;
	}
	*goaway_sent = c.goaway_sent;
	nghttp2_session_del(c.session);
}

static _Noreturn void h2_main(int lfd)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int goaway_sent = 0;

	if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, fx.cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, fx.key, SSL_FILETYPE_PEM) != 1)
		_exit(3);
	SSL_CTX_set_alpn_select_cb(ctx, h2_alpn, NULL);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		SSL *ssl;

		if (fd < 0)
			continue;
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) == 1)
			h2_serve(ssl, &goaway_sent);
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	}
}

/* Start the scripted server in a child process on a free port. */
static void h2_start(struct server *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 16) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len))
		fail_msg("cannot listen: %s", strerror(errno));
	s->port = ntohs(sa.sin_port);
	s->pid = fork();
	if (s->pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (s->pid == 0)
		h2_main(lfd);
	close(lfd);
}

static void on_tick(uv_timer_t *t)
{
}

static int setup(void **state)
{
	const char *tmp = getenv("FERRY_TEST_TMPDIR");

	if (!tmp)
		fail_msg("FERRY_TEST_TMPDIR is not set");
	if (access(NGHTTPD, X_OK))
		fail_msg("%s is missing (Debian package nghttp2-server)", NGHTTPD);
	snprintf(fx.dir, sizeof(fx.dir), "%s/push_http_%d", tmp, (int)getpid());
	if (mkdir(fx.dir, 0755))
		fail_msg("mkdir '%s': %s", fx.dir, strerror(errno));
	make_certs();
	make_docroot();
	server_start(&fx.main);
	h2_start(&fx.h2);
	return 0;
}

static int teardown(void **state)
{
	server_kill(&fx.main);
	server_kill(&fx.h2);
	/* Servers of tests that failed before killing them. */
	for (int i = 0; i < fx.nspawned; i++)
		if (fx.spawned[i] > 0 && kill(fx.spawned[i], SIGKILL) == 0)
			waitpid(fx.spawned[i], NULL, 0);
	return 0;
}

/* ---- the loop and requests ---- */

struct treq {
	struct push_http_req req;
	char url[256];
	unsigned done;		    /* times done() ran */
	struct push_http *resubmit; /* done() submits the request again here */
	const char *resubmit_url;
	enum ferry_err resubmit_rc;
};

static unsigned n_done;

static void on_done(struct push_http_req *r)
{
	struct treq *t = r->arg;

	t->done++;
	n_done++;
	if (t->resubmit) {
		struct push_http *h = t->resubmit;

		t->resubmit = NULL;
		push_http_req_release(r);
		snprintf(t->url, sizeof(t->url), "%s", t->resubmit_url);
		t->resubmit_rc = push_http_submit(h, r);
	}
}

static void loop_open(void)
{
	assert_int_equal(uv_loop_init(&fx.loop), 0);
	assert_int_equal(uv_timer_init(&fx.loop, &fx.tick), 0);
	/* So that UV_RUN_ONCE comes back now and then. */
	assert_int_equal(uv_timer_start(&fx.tick, on_tick, 20, 20), 0);
}

/* Free @h, let every handle close, and check that none is left. */
static void loop_close(struct push_http *h)
{
	push_http_free(h);
	uv_close((uv_handle_t *)&fx.tick, NULL);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
}

/* Run the loop until n_done reaches @n; fail after @ms. */
static void run_until(unsigned n, unsigned ms)
{
	uint64_t end;

	uv_update_time(&fx.loop);
	end = uv_now(&fx.loop) + ms;
	while (n_done < n) {
		if (uv_now(&fx.loop) > end)
			fail_msg("only %u of %u requests done after %u ms", n_done, n, ms);
		uv_run(&fx.loop, UV_RUN_ONCE);
	}
}

/* Run the loop for @ms whatever happens. */
static void run_for(unsigned ms)
{
	uint64_t end;

	uv_update_time(&fx.loop);
	end = uv_now(&fx.loop) + ms;
	while (uv_now(&fx.loop) < end)
		uv_run(&fx.loop, UV_RUN_ONCE);
}

static struct push_http *client_new(size_t max_body)
{
	struct push_http_opts o = { .ca_file = fx.ca, .max_resp_body = max_body };
	char err[256] = "";
	struct push_http *h = push_http_new(&fx.loop, &o, err, sizeof(err));

	if (!h)
		fail_msg("push_http_new: %s", err);
	return h;
}

static void treq_init(struct treq *t, const struct server *s, const char *method, const char *path)
{
	static const char *const hdrs[] = { "apns-push-type: background", "apns-priority: 5",
					    NULL };

	memset(t, 0, sizeof(*t));
	snprintf(t->url, sizeof(t->url), "https://localhost:%d%s", s->port, path);
	t->req.url = t->url;
	t->req.method = method;
	t->req.headers = hdrs;
	t->req.done = on_done;
	t->req.arg = t;
}

static void submit(struct push_http *h, struct treq *t)
{
	assert_int_equal(push_http_submit(h, &t->req), FERRY_OK);
}

/* ---- tests ---- */

static void test_get_post_and_headers(void **state)
{
	static const char json[] = "{\"aps\":{\"content-available\":1}}";
	const char *const ctype[] = { "content-type: application/json", NULL };
	struct treq ok, missing, post;
	struct push_http_stats st;
	struct push_http *h;

	loop_open();
	h = client_new(0);
	n_done = 0;
	treq_init(&ok, &fx.main, "GET", "/ok.txt");
	treq_init(&missing, &fx.main, NULL, "/missing.txt");
	treq_init(&post, &fx.main, "POST", "/3/device/abcdef");
	post.req.headers = ctype;
	post.req.body = json;
	post.req.body_len = strlen(json);
	submit(h, &ok);
	submit(h, &missing);
	submit(h, &post);
	assert_int_equal(n_done, 0); /* never from inside submit */
	run_until(3, WAIT_MS);

	assert_int_equal(ok.done, 1);
	assert_int_equal(ok.req.rc, FERRY_OK);
	assert_int_equal(ok.req.status, 200);
	assert_int_equal(ok.req.resp_len, strlen(OK_TEXT));
	assert_string_equal(ok.req.resp_body, OK_TEXT);
	assert_false(ok.req.resp_truncated);
	assert_true(ok.req.latency_us > 0);
	assert_null(ok.req.priv);

	assert_int_equal(missing.req.rc, FERRY_OK); /* an answer, whatever its status */
	assert_int_equal(missing.req.status, 404);

	/* nghttpd --echo-upload answers a POST with its own body. */
	assert_int_equal(post.req.rc, FERRY_OK);
	assert_int_equal(post.req.status, 200);
	assert_int_equal(post.req.resp_len, strlen(json));
	assert_memory_equal(post.req.resp_body, json, strlen(json));

	push_http_stats(h, &st);
	assert_int_equal(st.requests, 3);
	assert_int_equal(st.responses, 3);
	assert_int_equal(st.transport_errors, 0);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(st.connections_opened, 1);

	push_http_req_release(&ok.req);
	push_http_req_release(&missing.req);
	push_http_req_release(&post.req);
	loop_close(h);
}

/* MANY requests at once share one connection; a second burst reuses it. */
static void test_multiplexed_on_one_connection(void **state)
{
	static struct treq t[MANY];
	static const char body[] = "{\"aps\":{}}";
	struct push_http_stats st;
	struct push_http *h;

	loop_open();
	h = client_new(0);
	for (int round = 0; round < 2; round++) {
		n_done = 0;
		for (int i = 0; i < MANY; i++) {
			if (i % 2) {
				treq_init(&t[i], &fx.main, "GET", "/ok.txt");
			} else {
				treq_init(&t[i], &fx.main, "POST", "/echo");
				t[i].req.body = body;
				t[i].req.body_len = strlen(body);
			}
			submit(h, &t[i]);
		}
		run_until(MANY, WAIT_MS);
		for (int i = 0; i < MANY; i++) {
			assert_int_equal(t[i].done, 1);
			if (t[i].req.rc != FERRY_OK)
				fail_msg("request %d: %s", i, t[i].req.errbuf);
			assert_int_equal(t[i].req.status, 200);
			push_http_req_release(&t[i].req);
		}
		push_http_stats(h, &st);
		assert_int_equal(st.connections_opened, 1);
	}
	assert_int_equal(st.requests, 2 * MANY);
	assert_int_equal(st.responses, 2 * MANY);
	loop_close(h);
}

/* Retry-After (seconds or a date) and apns-id are captured from headers. */
static void test_response_headers(void **state)
{
	struct treq ok, busy, slow;
	struct push_http *h;
	uint64_t secs;

	loop_open();
	h = client_new(0);
	n_done = 0;
	treq_init(&ok, &fx.h2, "POST", "/status/200");
	treq_init(&busy, &fx.h2, "POST", "/status/503");
	treq_init(&slow, &fx.h2, "POST", "/status/429");
	submit(h, &ok);
	submit(h, &busy);
	submit(h, &slow);
	run_until(3, WAIT_MS);
	assert_int_equal(ok.req.rc, FERRY_OK);
	assert_int_equal(ok.req.status, 200);
	assert_string_equal(ok.req.apns_id, APNS_ID);
	assert_string_equal(ok.req.retry_after, "");
	assert_null(ok.req.resp_body);
	assert_int_equal(busy.req.status, 503);
	assert_string_equal(busy.req.retry_after, "120");
	assert_int_equal(push_http_retry_after_parse(busy.req.retry_after, 0, &secs), FERRY_OK);
	assert_int_equal(secs, 120);
	assert_int_equal(slow.req.status, 429);
	assert_string_equal(slow.req.retry_after, RETRY_DATE);
	assert_int_equal(push_http_retry_after_parse(slow.req.retry_after, 2139722880 - 10, &secs),
			 FERRY_OK);
	assert_int_equal(secs, 10);
	loop_close(h);
}

/*
 * A GOAWAY in the middle of a burst: what was answered before it stands,
 * streams above its last-stream-id are retried by libcurl on a new
 * connection (so they succeed), and later requests use that connection.
 */
static void test_goaway_mid_flight(void **state)
{
	static struct treq t[21];
	struct push_http_stats st;
	struct push_http *h;

	loop_open();
	h = client_new(0);
	n_done = 0;
	treq_init(&t[0], &fx.h2, "POST", "/status/200");
	submit(h, &t[0]);
	run_until(1, WAIT_MS); /* the connection is up */
	n_done = 0;
	for (int i = 0; i < 21; i++) {
		/* GET: each request is one HEADERS frame, so the server has all
		 * streams below the GOAWAY one complete when it sends it. */
		treq_init(&t[i], &fx.h2, "GET", i == 10 ? "/goaway" : "/status/200");
		submit(h, &t[i]);
	}
	run_until(21, WAIT_MS);
	for (int i = 0; i < 21; i++) {
		assert_int_equal(t[i].done, 1);
		if (t[i].req.rc != FERRY_OK || t[i].req.status != 200)
			fail_msg("request %d: rc %d status %ld %s", i, (int)t[i].req.rc,
				 t[i].req.status, t[i].req.errbuf);
	}
	push_http_stats(h, &st);
	assert_int_equal(st.connections_opened, 2);
	n_done = 0;
	for (int i = 0; i < 21; i++) {
		treq_init(&t[i], &fx.h2, "POST", "/status/200");
		submit(h, &t[i]);
	}
	run_until(21, WAIT_MS);
	for (int i = 0; i < 21; i++)
		assert_int_equal(t[i].req.status, 200);
	push_http_stats(h, &st);
	assert_int_equal(st.connections_opened, 2);
	assert_int_equal(st.responses, 43);
	assert_int_equal(st.transport_errors, 0);
	loop_close(h);
}

/* Response bodies are capped; the status still arrives. */
static void test_body_cap(void **state)
{
	struct treq small, big, echo;
	struct push_http *h;
	char *payload = malloc(BIG_LEN);

	assert_non_null(payload);
	memset(payload, 'p', BIG_LEN);
	loop_open();
	h = client_new(1000);
	n_done = 0;
	treq_init(&small, &fx.main, "GET", "/ok.txt");
	treq_init(&big, &fx.main, "GET", "/big.bin");
	treq_init(&echo, &fx.main, "POST", "/echo");
	echo.req.body = payload;
	echo.req.body_len = BIG_LEN;
	submit(h, &small);
	submit(h, &big);
	submit(h, &echo);
	run_until(3, WAIT_MS);
	assert_int_equal(small.req.status, 200);
	assert_false(small.req.resp_truncated);
	assert_int_equal(big.req.rc, FERRY_OK);
	assert_int_equal(big.req.status, 200);
	assert_int_equal(big.req.resp_len, 1000);
	assert_true(big.req.resp_truncated);
	assert_int_equal(big.req.resp_body[1000], '\0');
	assert_int_equal(echo.req.rc, FERRY_OK);
	assert_int_equal(echo.req.resp_len, 1000);
	assert_true(echo.req.resp_truncated);
	assert_int_equal(echo.req.resp_body[999], 'p');
	push_http_req_release(&small.req);
	push_http_req_release(&big.req);
	push_http_req_release(&echo.req);
	loop_close(h);

	/* The default cap. */
	loop_open();
	h = client_new(0);
	n_done = 0;
	treq_init(&big, &fx.main, "GET", "/big.bin");
	submit(h, &big);
	run_until(1, WAIT_MS);
	assert_int_equal(big.req.resp_len, PUSH_HTTP_MAX_RESP_BODY);
	assert_true(big.req.resp_truncated);
	push_http_req_release(&big.req);
	loop_close(h);
	free(payload);
}

/* Nothing listens: a transport error, no status. */
static void test_connection_refused(void **state)
{
	struct server none = { .port = th_free_port() };
	struct push_http_stats st;
	struct treq t;
	struct push_http *h;

	loop_open();
	h = client_new(0);
	n_done = 0;
	treq_init(&t, &none, "GET", "/ok.txt");
	submit(h, &t);
	run_until(1, WAIT_MS);
	assert_int_equal(t.req.rc, FERRY_EUNAVAIL);
	assert_int_not_equal(t.req.curl_code, 0);
	assert_int_equal(t.req.status, 0);
	assert_true(t.req.errbuf[0] != '\0');
	assert_null(t.req.resp_body);
	push_http_stats(h, &st);
	assert_int_equal(st.transport_errors, 1);
	assert_int_equal(st.responses, 0);
	loop_close(h);
}

/*
 * The server dies with requests in flight: each comes back with a transport
 * error; resubmitted from done() after the server is back on the same port,
 * they succeed over a new connection.
 */
static void test_server_killed_mid_flight(void **state)
{
	static struct treq t[20];
	struct server s = { 0 };
	struct push_http_stats st;
	struct push_http *h;
	char again[256];

	server_start(&s);
	loop_open();
	h = client_new(0);
	n_done = 0;
	for (int i = 0; i < 20; i++) {
		treq_init(&t[i], &s, "GET", "/hang");
		submit(h, &t[i]);
	}
	run_for(500);
	assert_int_equal(n_done, 0);
	push_http_stats(h, &st);
	assert_int_equal(st.in_flight, 20);

	server_kill(&s);
	run_until(20, WAIT_MS);
	push_http_stats(h, &st);
	assert_int_equal(st.transport_errors, 20);
	assert_int_equal(st.in_flight, 0);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(t[i].done, 1);
		if (t[i].req.rc != FERRY_EIO && t[i].req.rc != FERRY_EUNAVAIL)
			fail_msg("request %d: rc %d", i, (int)t[i].req.rc);
		assert_int_equal(t[i].req.status, 0);
		assert_true(t[i].req.errbuf[0] != '\0');
	}

	/* Back on the same port; the callers resubmit. */
	server_start(&s);
	snprintf(again, sizeof(again), "https://localhost:%d/ok.txt", s.port);
	n_done = 0;
	for (int i = 0; i < 20; i++) {
		push_http_req_release(&t[i].req);
		snprintf(t[i].url, sizeof(t[i].url), "%s", again);
		t[i].done = 0;
		submit(h, &t[i]);
	}
	run_until(20, WAIT_MS);
	for (int i = 0; i < 20; i++) {
		if (t[i].req.rc != FERRY_OK)
			fail_msg("request %d after restart: %s", i, t[i].req.errbuf);
		assert_int_equal(t[i].req.status, 200);
		push_http_req_release(&t[i].req);
	}
	push_http_stats(h, &st);
	assert_int_equal(st.connections_opened, 2);
	assert_int_equal(st.responses, 20);
	loop_close(h);
	server_kill(&s);
}

/*
 * cancel_all answers every pending request at once, those never sent and
 * those in flight; a request resubmitted from its done() stays pending, and
 * push_http_free ends it; nothing leaks (ASan) and no handle is left.
 */
static void test_cancel_all_and_free_in_flight(void **state)
{
	static struct treq t[50];
	struct server s = { 0 };
	struct push_http_stats st;
	struct push_http *h;
	char hang[256];

	server_start(&s);
	snprintf(hang, sizeof(hang), "https://localhost:%d/hang", s.port);
	loop_open();
	h = client_new(0);

	/* Not even started: the loop has not run. */
	n_done = 0;
	for (int i = 0; i < 10; i++) {
		treq_init(&t[i], &fx.main, "GET", "/ok.txt");
		submit(h, &t[i]);
	}
	push_http_cancel_all(h);
	assert_int_equal(n_done, 10);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(t[i].done, 1);
		assert_int_equal(t[i].req.rc, FERRY_EUNAVAIL);
		assert_null(t[i].req.priv);
	}

	/* In flight on a connection (the server hangs). */
	n_done = 0;
	for (int i = 0; i < 50; i++) {
		treq_init(&t[i], &s, "GET", "/hang");
		submit(h, &t[i]);
	}
	t[0].resubmit = h;
	t[0].resubmit_url = hang;
	run_for(500);
	assert_int_equal(n_done, 0);
	push_http_cancel_all(h);
	assert_int_equal(n_done, 50);
	for (int i = 0; i < 50; i++)
		assert_int_equal(t[i].done, 1);
	/* t[0] is pending again (its results were reset by the submit). */
	for (int i = 1; i < 50; i++)
		assert_int_equal(t[i].req.rc, FERRY_EUNAVAIL);
	assert_int_equal(t[0].resubmit_rc, FERRY_OK);
	assert_non_null(t[0].req.priv);
	push_http_stats(h, &st);
	assert_int_equal(st.cancelled, 60);
	assert_int_equal(st.in_flight, 1);

	/* More in flight, then free: all get done() first; a resubmission from
	 * done() is refused. */
	for (int i = 1; i < 50; i++) {
		treq_init(&t[i], &s, "GET", "/hang");
		submit(h, &t[i]);
	}
	t[1].resubmit = h;
	t[1].resubmit_url = hang;
	run_for(300);
	assert_int_equal(n_done, 50);
	loop_close(h);
	assert_int_equal(n_done, 100);
	assert_int_equal(t[0].done, 2);
	assert_int_equal(t[0].req.rc, FERRY_EUNAVAIL);
	assert_int_equal(t[1].resubmit_rc, FERRY_EUNAVAIL);
	for (int i = 1; i < 50; i++)
		assert_int_equal(t[i].done, 1);
	server_kill(&s);
}

static void test_submit_refused(void **state)
{
	struct treq t;
	struct push_http *h;

	loop_open();
	h = client_new(0);
	treq_init(&t, &fx.main, "GET", "/ok.txt");
	t.req.url = NULL;
	assert_int_equal(push_http_submit(h, &t.req), FERRY_EINVAL);
	treq_init(&t, &fx.main, "GET", "/ok.txt");
	t.req.done = NULL;
	assert_int_equal(push_http_submit(h, &t.req), FERRY_EINVAL);
	assert_int_equal(t.done, 0);
	loop_close(h);
}

static void test_retry_after_parse(void **state)
{
	/* Wed, 21 Oct 2015 07:28:00 GMT */
	const int64_t date = 1445412480;
	uint64_t s = 99;

	assert_int_equal(push_http_retry_after_parse("120", 0, &s), FERRY_OK);
	assert_int_equal(s, 120);
	assert_int_equal(push_http_retry_after_parse(" 0 ", 0, &s), FERRY_OK);
	assert_int_equal(s, 0);
	assert_int_equal(
		push_http_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", date - 30, &s),
		FERRY_OK);
	assert_int_equal(s, 30);
	assert_int_equal(
		push_http_retry_after_parse("Wednesday, 21-Oct-15 07:28:00 GMT", date - 5, &s),
		FERRY_OK);
	assert_int_equal(s, 5);
	assert_int_equal(
		push_http_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", date + 60, &s),
		FERRY_OK);
	assert_int_equal(s, 0);
	assert_int_equal(push_http_retry_after_parse("", 0, &s), FERRY_EINVAL);
	assert_int_equal(push_http_retry_after_parse("12x", 0, &s), FERRY_EINVAL);
	assert_int_equal(push_http_retry_after_parse("soon", 0, &s), FERRY_EINVAL);
	assert_int_equal(push_http_retry_after_parse("-5", 0, &s), FERRY_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_after_parse),
		cmocka_unit_test(test_submit_refused),
		cmocka_unit_test(test_get_post_and_headers),
		cmocka_unit_test(test_multiplexed_on_one_connection),
		cmocka_unit_test(test_response_headers),
		cmocka_unit_test(test_goaway_mid_flight),
		cmocka_unit_test(test_body_cap),
		cmocka_unit_test(test_connection_refused),
		cmocka_unit_test(test_server_killed_mid_flight),
		cmocka_unit_test(test_cancel_all_and_free_in_flight),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("push_http", tests, setup, teardown);
}
