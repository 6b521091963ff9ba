/*
 * bench_push.c - APNs pushes per second through ferry's sender
 * (push/apns.c on push/http.c) to the local mock APNs over one connection,
 * compared in the same run with h2load (Debian's nghttp2-client) sending the
 * same requests to the same mock. The target (docs/bench.md) is ferry at
 * half of h2load's rate or better; it is reported, never asserted.
 *
 * Set-up, once: a private temporary directory with a self-signed certificate
 * for 127.0.0.1 (the openssl tool, as the integration tests make theirs), an
 * EC P-256 provider key written as a .p8 file and read back with ferry's own
 * loader (push_apns_key_load), and its public half; then one mock_apns
 * (tests/mock/README.md) on a free port, without a request log.
 *
 * One ferry run: a fresh libuv loop with push_http (at most one connection,
 * the certificate as its CA file) and push_apns, as on the push thread. N
 * background pushes (default 100,000) to distinct tokens "bench%08x", at most
 * C in flight (default 500, the mock's stream limit once it has seen a valid
 * provider token; the sender sends the very first push alone by itself);
 * each outcome sends the next push. Timed from the first push_apns_send() to
 * the last outcome, so the connection's set-up counts, as in h2load's time.
 * Every outcome must be OK.
 *
 * One h2load run: h2load -n N -c 1 -m C -t 1 with the headers ferry sends (a
 * provider token minted by push_jwt_es256() with the same key, the same
 * topic, push type background, priority 5, expiration 0, content type JSON)
 * and the same body {"aps":{"content-available":1}}, to one device token.
 * The rate is its 2xx answers over its own run time ("finished in"), which,
 * like ferry's, includes connecting. Every request must get a 2xx, but for
 * the streams h2load sends at once before it has read the mock's first
 * SETTINGS (one stream until a valid provider token): the mock refuses
 * those, h2load counts them "errored", and they are reported apart
 * (refused_at_start). ferry's sender sends its first push alone instead.
 *
 * The two alternate R times (default 3) against the one mock, and medians
 * are reported. The mock has one thread and checks every request's ES256
 * signature, so it may be the ceiling of both sides: mock_busy (the mock's
 * CPU time over the run's wall time; near 1.0 means saturated) says whether a
 * rate measured the client or the mock, and the clients' CPU time per request
 * compares the clients whatever the ceiling.
 *
 * Output: key=value lines (push.*, medians over the runs; failures and
 * connections are totals and maxima), then a table of every run and a
 * summary line. Exit status: 0 when every run completed with every answer a
 * success (whatever the rates), 1 otherwise or on a set-up error, 2 on a
 * usage error. Children (openssl, mock_apns, h2load) are stopped by PID and
 * the temporary directory removed, also on SIGINT or SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <uv.h>

#include "common/log.h"
#include "push/apns.h"
#include "push/creds.h"
#include "push/http.h"
#include "push/jwt.h"
#include "tools/bench_int.h"
#include "common/banned.h"

#define DEFAULT_PUSHES 100000
#define DEFAULT_CONCURRENCY 500
#define DEFAULT_RUNS 3
#define MAX_RUNS 21
#define MAX_PUSHES 100000000
#define MAX_CONCURRENCY 10000
#define DEFAULT_MOCK "build/bench/mock_apns"
#define KEY_ID "BENCHKEY01"
#define TEAM_ID "BENCHTEAM1"
#define TOPIC "com.example.bench"
#define BG_PAYLOAD "{\"aps\":{\"content-available\":1}}"
#define H2LOAD_TOKEN "bench00000000"
/* A run that makes no progress for this long is given up. */
#define STALL_MS 30000
#define WATCH_MS 200
#define MOCK_START_MS 10000
/*
 * Streams of h2load's that the mock may refuse at the start: before it has
 * read the mock's SETTINGS (1 stream until a valid provider token), h2load
 * assumes nghttp2's default of 100 and sends that many at once. They end
 * "errored" without an answer; that many are not counted as failures.
 */
#define H2LOAD_EARLY_REFUSED 99
/* Bytes of h2load's output read back; its report is well under 4 KiB. */
#define MAX_H2LOAD_OUT (64 * 1024)
#define PATH_CAP 256

struct opts {
	const char *mock, *h2load;
	size_t pushes;
	unsigned concurrency, runs;
	int ferry, h2; /* which sides run (--only) */
	int quiet;
};

/* What one run of one side measured. */
struct fig {
	int ran;
	double per_s;
	double cpu_us;	    /* client CPU time per request */
	double mock_cpu_us; /* mock CPU time per request */
	double mock_busy;   /* mock CPU time / wall time */
	uint64_t failures;
	uint64_t refused;		/* h2load: streams refused at the start */
	uint64_t connections, requests; /* ferry: push_http's counters */
	double latency_us;		/* ferry: mean push_apns_send() to outcome */
};

/* The temporary files and the mock. */
struct env {
	char dir[64];
	char cert[PATH_CAP], key[PATH_CAP], p8[PATH_CAP], pub[PATH_CAP];
	char payload[PATH_CAP], h2out[PATH_CAP];
	EVP_PKEY *apns_key;
	char *auth; /* "authorization: bearer JWT" for h2load */
	pid_t mock_pid;
	int mock_fd; /* the read end of the mock's stdout */
	int port;
	char base[64]; /* https://127.0.0.1:PORT */
};

static void on_signal(int sig)
{
	fb_interrupted = sig;
}

/* ---- child processes ---- */

/*
 * Start @argv (argv[0] looked up in PATH) with its stdout and stderr on
 * @out_fd and @err_fd (-1: ours), SIGPIPE back to its default. Returns the
 * PID, or -1 with a message on stderr.
 */
static pid_t spawn(char *const argv[], int out_fd, int err_fd)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t dflt;
	pid_t pid = -1;
	int rc;

	if (posix_spawn_file_actions_init(&fa))
		return -1;
	if (posix_spawnattr_init(&at)) {
		posix_spawn_file_actions_destroy(&fa);
		return -1;
	}
	sigemptyset(&dflt);
	sigaddset(&dflt, SIGPIPE);
	posix_spawnattr_setsigdefault(&at, &dflt);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF);
	if (out_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
	if (err_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
	rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
	if (rc) {
		fprintf(stderr, "bench_push: cannot start '%s': %s\n", argv[0], strerror(rc));
		pid = -1;
	}
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

/*
 * Wait for @pid; its wait status in *@status and its resource usage in
 * *@ru. On SIGINT or SIGTERM it is sent SIGTERM first. -1 if it cannot be
 * waited for.
 */
static int wait_child(pid_t pid, int *status, struct rusage *ru)
{
	int killed = 0;

	for (;;) {
		if (wait4(pid, status, 0, ru) == pid)
			return 0;
		if (errno != EINTR)
			return -1;
		if (fb_interrupted && !killed) {
			kill(pid, SIGTERM);
			killed = 1;
		}
	}
}

/* Run @argv to its end, its output thrown away; 0 if it exited 0. */
static int run_quiet(char *const argv[])
{
	struct rusage ru;
	int null_fd, status = -1;
	pid_t pid;

	null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null_fd < 0)
		return -1;
	pid = spawn(argv, null_fd, null_fd);
	close(null_fd);
	if (pid < 0 || wait_child(pid, &status, &ru))
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- set-up: files, keys, the mock ---- */

static int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int rc;

	if (!f) {
		fprintf(stderr, "bench_push: cannot write '%s': %s\n", path, strerror(errno));
		return -1;
	}
	rc = fputs(text, f) < 0 ? -1 : 0;
	if (fclose(f))
		rc = -1;
	return rc;
}

/* An EC P-256 key as Apple's .p8 (PKCS#8 PEM) and its public half (PEM). */
static int make_provider_key(struct env *e)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	FILE *priv = NULL, *pub = NULL;
	int rc = -1, fd;

	if (!k)
		goto out;
	/* Owner-only: ferry's loader refuses a key file others can read. */
	fd = open(e->p8, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	priv = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!priv && fd >= 0)
		close(fd);
	pub = fopen(e->pub, "w");
	if (!priv || !pub || PEM_write_PrivateKey(priv, k, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_PUBKEY(pub, k) != 1)
		goto out;
	rc = 0;
out:
	if (priv && fclose(priv))
		rc = -1;
	if (pub && fclose(pub))
		rc = -1;
	EVP_PKEY_free(k);
	if (rc)
		fprintf(stderr, "bench_push: cannot make the provider key '%s'\n", e->p8);
	return rc;
}

static int make_cert(const struct env *e)
{
	char keyout[PATH_CAP + 16], out[PATH_CAP + 16];
	char *argv[] = { "openssl",
			 "req",
			 "-x509",
			 "-newkey",
			 "ec",
			 "-pkeyopt",
			 "ec_paramgen_curve:P-256",
			 "-nodes",
			 "-days",
			 "1",
			 "-subj",
			 "/CN=localhost",
			 "-addext",
			 "subjectAltName=DNS:localhost,IP:127.0.0.1",
			 "-keyout",
			 keyout,
			 "-out",
			 out,
			 NULL };

	snprintf(keyout, sizeof(keyout), "%s", e->key);
	snprintf(out, sizeof(out), "%s", e->cert);
	if (run_quiet(argv)) {
		fprintf(stderr, "bench_push: cannot make a certificate with the openssl tool\n");
		return -1;
	}
	return 0;
}

/* Read "listening <port>" from the mock's stdout. */
static int read_port(struct env *e)
{
	char buf[256];
	size_t len = 0;
	uint64_t end = fb_now_ns() + (uint64_t)MOCK_START_MS * 1000000;

	while (!fb_interrupted && fb_now_ns() < end && len < sizeof(buf) - 1) {
		struct pollfd p = { .fd = e->mock_fd, .events = POLLIN };
		const char *nl;
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(e->mock_fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		nl = strchr(buf, '\n');
		if (nl && !strncmp(buf, "listening ", 10)) {
			e->port = (int)strtol(buf + 10, NULL, 10);
			return e->port > 0 ? 0 : -1;
		}
	}
	return -1;
}

static int start_mock(struct env *e, const struct opts *o)
{
	char mock[PATH_CAP];
	char *argv[] = { mock,	  "--port",	"0",	"--cert",   e->cert, "--key",
			 e->key,  "--auth-key", e->pub, "--key-id", KEY_ID,  "--team-id",
			 TEAM_ID, "--topic",	TOPIC,	NULL };
	int fds[2];

	snprintf(mock, sizeof(mock), "%s", o->mock);
	if (access(mock, X_OK)) {
		fprintf(stderr, "bench_push: cannot run the mock '%s': %s\n", mock,
			strerror(errno));
		return -1;
	}
	if (pipe2(fds, O_CLOEXEC))
		return -1;
	e->mock_pid = spawn(argv, fds[1], -1);
	close(fds[1]);
	e->mock_fd = fds[0];
	if (e->mock_pid < 0)
		return -1;
	if (read_port(e)) {
		fprintf(stderr, "bench_push: the mock '%s' did not say 'listening <port>'\n", mock);
		return -1;
	}
	snprintf(e->base, sizeof(e->base), "https://127.0.0.1:%d", e->port);
	return 0;
}

/* The provider token h2load sends, minted as push_apns mints its own. */
static int make_auth(struct env *e)
{
	char *jwt = NULL;
	size_t n;

	if (push_jwt_es256(e->apns_key, KEY_ID, TEAM_ID, (int64_t)time(NULL), &jwt) != FERRY_OK)
		return -1;
	n = strlen(jwt) + sizeof("authorization: bearer ");
	e->auth = malloc(n);
	if (e->auth)
		snprintf(e->auth, n, "authorization: bearer %s", jwt);
	OPENSSL_clear_free(jwt, strlen(jwt));
	return e->auth ? 0 : -1;
}

static int env_setup(struct env *e, const struct opts *o)
{
	char err[256];

	snprintf(e->dir, sizeof(e->dir), "/tmp/bench_push.XXXXXX");
	if (!mkdtemp(e->dir)) {
		fprintf(stderr, "bench_push: cannot make a temporary directory: %s\n",
			strerror(errno));
		e->dir[0] = '\0';
		return -1;
	}
	snprintf(e->cert, sizeof(e->cert), "%s/cert.pem", e->dir);
	snprintf(e->key, sizeof(e->key), "%s/key.pem", e->dir);
	snprintf(e->p8, sizeof(e->p8), "%s/AuthKey_%s.p8", e->dir, KEY_ID);
	snprintf(e->pub, sizeof(e->pub), "%s/authkey.pub", e->dir);
	snprintf(e->payload, sizeof(e->payload), "%s/payload.json", e->dir);
	snprintf(e->h2out, sizeof(e->h2out), "%s/h2load.out", e->dir);
	if (make_cert(e) || make_provider_key(e) || write_text(e->payload, BG_PAYLOAD))
		return -1;
	if (push_apns_key_load(e->p8, &e->apns_key, err, sizeof(err)) != FERRY_OK) {
		fprintf(stderr, "bench_push: %s\n", err);
		return -1;
	}
	if (make_auth(e))
		return -1;
	return start_mock(e, o);
}

/* Stop the mock (SIGTERM, by PID), remove the files; idempotent. */
static void env_teardown(struct env *e)
{
	const char *files[] = { e->cert, e->key, e->p8, e->pub, e->payload, e->h2out };
	struct rusage ru;
	int status;

	if (e->mock_pid > 0) {
		kill(e->mock_pid, SIGTERM);
		if (wait_child(e->mock_pid, &status, &ru) == 0 &&
		    !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			fprintf(stderr, "bench_push: the mock exited with status %d\n", status);
		e->mock_pid = 0;
	}
	if (e->mock_fd >= 0)
		close(e->mock_fd);
	e->mock_fd = -1;
	if (e->auth)
		OPENSSL_clear_free(e->auth, strlen(e->auth));
	e->auth = NULL;
	EVP_PKEY_free(e->apns_key);
	e->apns_key = NULL;
	if (!e->dir[0])
		return;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	rmdir(e->dir);
	e->dir[0] = '\0';
}

/* ---- ferry's side ---- */

struct ferry_run {
	const struct opts *o;
	uv_loop_t loop;
	uv_timer_t watch;
	struct push_http *http;
	struct push_apns *apns;
	size_t sent, done, failed;
	uint64_t progress_ns; /* when the last outcome came */
	int stop, closing;
	char first_failure[200];
};

/* Count a failed push; the first one's @what (outcome or error) and @status are kept. */
static void note_failure(struct ferry_run *fr, const char *what, long status, const char *reason)
{
	fr->failed++;
	if (!fr->first_failure[0])
		snprintf(fr->first_failure, sizeof(fr->first_failure),
			 "%s, status %ld, reason '%s'", what, status, reason);
}

static void on_push_done(void *arg, const struct push_apns_result *res);

/* Send push number fr->sent; a refused send counts as a failed outcome. */
static void send_next(struct ferry_run *fr)
{
	char token[32];
	struct push_apns_push p = { .token = token, .mode = PUSH_APNS_BACKGROUND, .expiration = 0 };
	enum ferry_err rc;

	snprintf(token, sizeof(token), "bench%08x", (unsigned)fr->sent);
	fr->sent++;
	rc = push_apns_send(fr->apns, &p, on_push_done, fr);
	if (rc) {
		note_failure(fr, "push_apns_send refused it", 0, ferry_strerror(rc));
		fr->done++;
	}
}

static void on_push_done(void *arg, const struct push_apns_result *res)
{
	struct ferry_run *fr = arg;

	fr->done++;
	fr->progress_ns = fb_now_ns();
	if (res->outcome != PUSH_APNS_OK)
		note_failure(fr, push_apns_outcome_name(res->outcome), res->status,
			     res->reason[0] ? res->reason : ferry_strerror(res->rc));
	if (!fr->closing && !fr->stop && fr->sent < fr->o->pushes)
		send_next(fr);
}

/* Gives the run up when interrupted or stalled. */
static void on_watch(uv_timer_t *t)
{
	struct ferry_run *fr = t->data;

	if (fb_interrupted || fb_now_ns() - fr->progress_ns > (uint64_t)STALL_MS * 1000000)
		fr->stop = 1;
}

static int ferry_open(struct ferry_run *fr, const struct env *e)
{
	struct push_http_opts ho = { .ca_file = e->cert, .max_host_connections = 1 };
	struct push_apns_opts ao = { .endpoint = e->base,
				     .key = e->apns_key,
				     .key_id = KEY_ID,
				     .team_id = TEAM_ID,
				     .default_topic = TOPIC };
	char err[256] = "";

	if (uv_loop_init(&fr->loop))
		return -1;
	if (uv_timer_init(&fr->loop, &fr->watch))
		goto close_loop;
	fr->watch.data = fr;
	fr->http = push_http_new(&fr->loop, &ho, err, sizeof(err));
	if (!fr->http)
		goto close_watch;
	fr->apns = push_apns_new(fr->http, &ao, err, sizeof(err));
	if (!fr->apns)
		goto free_http;
	return 0;

free_http:
	push_http_free(fr->http);
close_watch:
	uv_close((uv_handle_t *)&fr->watch, NULL);
	uv_run(&fr->loop, UV_RUN_DEFAULT);
close_loop:
	if (uv_loop_close(&fr->loop))
		fprintf(stderr, "bench_push: a libuv handle was left open\n");
	fprintf(stderr, "bench_push: cannot set up ferry's sender: %s\n", err);
	return -1;
}

/* Free the sender (pushes still out are reported RETRY), the client, the loop. */
static void ferry_close(struct ferry_run *fr)
{
	fr->closing = 1;
	push_apns_free(fr->apns);
	push_http_free(fr->http);
	uv_close((uv_handle_t *)&fr->watch, NULL);
	uv_run(&fr->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&fr->loop))
		fprintf(stderr, "bench_push: a libuv handle was left open\n");
}

static int ferry_run(const struct env *e, const struct opts *o, struct fig *f)
{
	struct ferry_run fr = { .o = o };
	struct push_http_stats hs;
	struct push_apns_stats as;
	double cpu0, mock0, mock, wall;
	uint64_t t0;

	if (ferry_open(&fr, e))
		return -1;
	uv_timer_start(&fr.watch, on_watch, WATCH_MS, WATCH_MS);
	mock0 = fb_proc_cpu_ns(e->mock_pid);
	cpu0 = fb_self_cpu_ns();
	t0 = fb_now_ns();
	fr.progress_ns = t0;
	while (fr.sent < o->pushes && fr.sent < o->concurrency)
		send_next(&fr);
	while (fr.done < o->pushes && !fr.stop)
		uv_run(&fr.loop, UV_RUN_ONCE);
	wall = (double)(fb_now_ns() - t0);
	f->cpu_us = (fb_self_cpu_ns() - cpu0) / 1e3 / (double)o->pushes;
	mock = fb_proc_cpu_ns(e->mock_pid) - mock0;
	f->mock_cpu_us = mock / 1e3 / (double)o->pushes;
	f->mock_busy = mock / wall;
	f->per_s = (double)fr.done * 1e9 / wall;
	push_http_stats(fr.http, &hs);
	push_apns_stats(fr.apns, &as);
	f->connections = hs.connections_opened;
	f->requests = hs.requests;
	f->latency_us = as.ok ? (double)as.latency_sum_us / (double)as.ok : NAN;
	ferry_close(&fr);
	f->failures = fr.failed + (o->pushes - fr.done);
	if (fr.stop)
		fprintf(stderr, "bench_push: ferry: %s after %zu of %zu outcomes\n",
			fb_interrupted ? "interrupted" : "no progress", fr.done, o->pushes);
	if (fr.first_failure[0])
		fprintf(stderr, "bench_push: ferry: %zu failed, the first: %s\n", fr.failed,
			fr.first_failure);
	f->ran = 1;
	return fr.stop ? -1 : 0;
}

/* ---- h2load's side ---- */

/*
 * A number on the line of @out that starts with @key: the one just before
 * @unit (" 2xx", " req/s"), or with @unit NULL the one right after @key.
 * NAN if there is none.
 */
static double h2load_number(const char *out, const char *key, const char *unit)
{
	const char *p = strstr(out, key), *eol;
	char *end;
	double v;

	if (!p)
		return NAN;
	eol = strchr(p, '\n');
	if (unit) {
		p = strstr(p, unit);
		if (!p || (eol && p > eol))
			return NAN;
		while (p > out && p[-1] == ' ')
			p--;
		while (p > out && ((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.'))
			p--;
	} else {
		p += strlen(key);
	}
	v = strtod(p, &end);
	return end == p ? NAN : v;
}

/* h2load's "finished in 7.34s" (or ms, us) in seconds; NAN if absent. */
static double h2load_secs(const char *out)
{
	static const struct {
		const char *unit;
		double scale;
	} units[] = { { "ms", 1e-3 }, { "us", 1e-6 }, { "s", 1 } };
	const char *p = strstr(out, "finished in ");
	char *end;
	double v;

	if (!p)
		return NAN;
	v = strtod(p + strlen("finished in "), &end);
	for (size_t i = 0; end != p && i < sizeof(units) / sizeof(units[0]); i++)
		if (!strncmp(end, units[i].unit, strlen(units[i].unit)))
			return v * units[i].scale;
	return NAN;
}

static char *read_file_capped(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text;
	size_t n;

	if (!f)
		return NULL;
	text = malloc(MAX_H2LOAD_OUT + 1);
	n = text ? fread(text, 1, MAX_H2LOAD_OUT, f) : 0;
	fclose(f);
	if (text)
		text[n] = '\0';
	return text;
}

/*
 * Parse h2load's report into @f: the rate is 2xx answers per second of its
 * run; every request without one is a failure, but for the streams refused
 * at the start (H2LOAD_EARLY_REFUSED). -1 if the report is not there.
 */
static int h2load_parse(const char *out, const struct opts *o, struct fig *f)
{
	double secs = h2load_secs(out);
	double ok = h2load_number(out, "status codes:", " 2xx");
	double errored = h2load_number(out, "requests:", " errored");
	uint64_t excused;

	if (isnan(secs) || secs <= 0 || isnan(ok) || isnan(errored))
		return -1;
	f->per_s = ok / secs;
	f->refused = (uint64_t)errored;
	excused = f->refused < H2LOAD_EARLY_REFUSED ? f->refused : H2LOAD_EARLY_REFUSED;
	f->failures =
		ok + (double)excused >= (double)o->pushes ? 0 : o->pushes - (uint64_t)ok - excused;
	return 0;
}

static int h2load_run(const struct env *e, const struct opts *o, struct fig *f)
{
	char h2load[PATH_CAP], n[24], c[24], payload[PATH_CAP], url[128];
	char *argv[] = { h2load,
			 "-n",
			 n,
			 "-c",
			 "1",
			 "-m",
			 c,
			 "-t",
			 "1",
			 "-d",
			 payload,
			 "-H",
			 e->auth,
			 "-H",
			 "apns-topic: " TOPIC,
			 "-H",
			 "apns-push-type: background",
			 "-H",
			 "apns-priority: 5",
			 "-H",
			 "apns-expiration: 0",
			 "-H",
			 "content-type: application/json",
			 url,
			 NULL };
	double mock0, mock, wall;
	struct rusage ru;
	int out_fd, status = -1, rc = -1;
	char *out = NULL;
	uint64_t t0;
	pid_t pid;

	snprintf(h2load, sizeof(h2load), "%s", o->h2load);
	snprintf(n, sizeof(n), "%zu", o->pushes);
	snprintf(c, sizeof(c), "%u", o->concurrency);
	snprintf(payload, sizeof(payload), "%s", e->payload);
	snprintf(url, sizeof(url), "%s/3/device/%s", e->base, H2LOAD_TOKEN);
	out_fd = open(e->h2out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out_fd < 0)
		return -1;
	mock0 = fb_proc_cpu_ns(e->mock_pid);
	t0 = fb_now_ns();
	pid = spawn(argv, out_fd, out_fd);
	close(out_fd);
	if (pid < 0 || wait_child(pid, &status, &ru))
		return -1;
	wall = (double)(fb_now_ns() - t0);
	mock = fb_proc_cpu_ns(e->mock_pid) - mock0;
	f->mock_cpu_us = mock / 1e3 / (double)o->pushes;
	f->mock_busy = mock / wall;
	f->cpu_us = ((double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
		     (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec)) /
		    (double)o->pushes;
	f->latency_us = NAN;
	if (fb_interrupted)
		return -1; /* killed: nothing to report */
	out = read_file_capped(e->h2out);
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		fprintf(stderr, "bench_push: h2load exited with status %d\n", status);
	else if (!out || h2load_parse(out, o, f))
		fprintf(stderr, "bench_push: h2load's report has no rate or status codes\n");
	else
		rc = 0;
	if (rc || f->failures)
		fprintf(stderr, "---- h2load's output ----\n%s\n", out ? out : "(none)");
	f->ran = !rc;
	free(out);
	return rc;
}

/* ---- figures ---- */

/* The median of @n values taken from each run's struct fig at @off. */
static double median(const struct fig *runs, unsigned n, size_t off)
{
	double v[MAX_RUNS];
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		double x;

		memcpy(&x, (const char *)&runs[i] + off, sizeof(x));
		if (runs[i].ran && !isnan(x))
			v[k++] = x;
	}
	if (!k)
		return NAN;
	qsort(v, k, sizeof(v[0]), fb_cmp_double);
	return v[k / 2];
}

#define MEDIAN(runs, n, field) median((runs), (n), offsetof(struct fig, field))

static void print_side(const char *side, const struct fig *runs, unsigned n, int ferry)
{
	uint64_t failures = 0, refused = 0, conns = 0, reqs = 0;

	for (unsigned i = 0; i < n; i++) {
		failures += runs[i].failures;
		refused += runs[i].refused;
		if (runs[i].connections > conns)
			conns = runs[i].connections;
		if (runs[i].requests > reqs)
			reqs = runs[i].requests;
	}
	printf("push.%s_per_s=%.0f\n", side, MEDIAN(runs, n, per_s));
	printf("push.%s_cpu_us_per_req=%.2f\n", side, MEDIAN(runs, n, cpu_us));
	printf("push.%s_mock_cpu_us_per_req=%.2f\n", side, MEDIAN(runs, n, mock_cpu_us));
	printf("push.%s_mock_busy=%.2f\n", side, MEDIAN(runs, n, mock_busy));
	printf("push.%s_failures=%" PRIu64 "\n", side, failures);
	if (!ferry) {
		printf("push.%s_refused_at_start=%" PRIu64 "\n", side, refused);
		return;
	}
	if (!isnan(MEDIAN(runs, n, latency_us)))
		printf("push.%s_latency_mean_us=%.0f\n", side, MEDIAN(runs, n, latency_us));
	printf("push.%s_connections=%" PRIu64 "\n", side, conns);
	printf("push.%s_http_requests=%" PRIu64 "\n", side, reqs);
}

static void print_row(unsigned run, const char *side, const struct fig *f)
{
	if (!f->ran)
		return;
	printf("%3u  %-6s %10.0f %9.2f %12.2f %9.2f %8" PRIu64 "\n", run, side, f->per_s, f->cpu_us,
	       f->mock_cpu_us, f->mock_busy, f->failures);
}

static void print_results(const struct opts *o, const struct fig *fe, const struct fig *h2)
{
	double fr = MEDIAN(fe, o->runs, per_s), hr = MEDIAN(h2, o->runs, per_s);
	double fc = MEDIAN(fe, o->runs, cpu_us), hc = MEDIAN(h2, o->runs, cpu_us);
	uint64_t conns = 0;

	printf("push.pushes=%zu\npush.concurrency=%u\npush.runs=%u\n", o->pushes, o->concurrency,
	       o->runs);
	if (o->ferry)
		print_side("ferry", fe, o->runs, 1);
	if (o->h2)
		print_side("h2load", h2, o->runs, 0);
	if (o->ferry && o->h2) {
		printf("push.ratio=%.3f\n", fr / hr);
		printf("push.cpu_ratio=%.3f\n", fc / hc);
	}
	if (o->quiet)
		return;
	printf("\n%3s  %-6s %10s %9s %12s %9s %8s\n", "run", "side", "req/s", "cpu_us",
	       "mock_cpu_us", "mock_busy", "failures");
	for (unsigned i = 0; i < o->runs; i++) {
		print_row(i + 1, "ferry", &fe[i]);
		print_row(i + 1, "h2load", &h2[i]);
		if (fe[i].connections > conns)
			conns = fe[i].connections;
	}
	if (!o->ferry || !o->h2)
		return;
	printf("\npush: ferry %.0f pushes/s (median of %u), h2load %.0f req/s, ratio %.2f "
	       "(target >= 0.5), connections %" PRIu64 "\n",
	       fr, o->runs, hr, fr / hr, conns);
	printf("push: CPU per request: ferry %.1f us, h2load %.1f us; mock busy %.2f / %.2f "
	       "(near 1: the mock set the rate)\n",
	       fc, hc, MEDIAN(fe, o->runs, mock_busy), MEDIAN(h2, o->runs, mock_busy));
}

/* ---- arguments ---- */

static void usage(FILE *to)
{
	fprintf(to,
		"usage: bench_push [--mock PATH] [--h2load PATH] [--pushes N] [--concurrency C]\n"
		"                  [--runs R] [--only ferry|h2load] [--quiet]\n"
		"  PATH of mock_apns (default %s), of h2load (default: h2load in PATH);\n"
		"  N pushes per run (default %d), C in flight (default %d), R runs of each\n"
		"  side, alternating (1-%d, default %d); medians are reported.\n",
		DEFAULT_MOCK, DEFAULT_PUSHES, DEFAULT_CONCURRENCY, MAX_RUNS, DEFAULT_RUNS);
}

static int parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return -1;
	*out = (unsigned long)v;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	unsigned long v;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		}
		if (!val)
			return -1;
		i++;
		if (!strcmp(a, "--mock")) {
			o->mock = val;
		} else if (!strcmp(a, "--h2load")) {
			o->h2load = val;
		} else if (!strcmp(a, "--pushes") && !parse_ulong(val, 1, MAX_PUSHES, &v)) {
			o->pushes = v;
		} else if (!strcmp(a, "--concurrency") &&
			   !parse_ulong(val, 1, MAX_CONCURRENCY, &v)) {
			o->concurrency = (unsigned)v;
		} else if (!strcmp(a, "--runs") && !parse_ulong(val, 1, MAX_RUNS, &v)) {
			o->runs = (unsigned)v;
		} else if (!strcmp(a, "--only") && !strcmp(val, "ferry")) {
			o->h2 = 0;
		} else if (!strcmp(a, "--only") && !strcmp(val, "h2load")) {
			o->ferry = 0;
		} else {
			return -1;
		}
	}
	return 0;
}

/* Whether h2load can be started (a path, or a name found in PATH). */
static int have_h2load(const char *h2load)
{
	char *argv[] = { (char *)h2load, "--version", NULL };

	return run_quiet(argv) == 0;
}

/* Alternate the sides @o->runs times; the number of runs that failed. */
static int run_all(const struct env *e, const struct opts *o, struct fig *fe, struct fig *h2)
{
	int bad = 0;

	for (unsigned i = 0; i < o->runs && !fb_interrupted; i++) {
		if (o->ferry && (ferry_run(e, o, &fe[i]) || fe[i].failures))
			bad++;
		if (o->h2 && !fb_interrupted && (h2load_run(e, o, &h2[i]) || h2[i].failures))
			bad++;
	}
	return bad;
}

int main(int argc, char **argv)
{
	struct opts o = { .mock = DEFAULT_MOCK,
			  .h2load = "h2load",
			  .pushes = DEFAULT_PUSHES,
			  .concurrency = DEFAULT_CONCURRENCY,
			  .runs = DEFAULT_RUNS,
			  .ferry = 1,
			  .h2 = 1 };
	static struct fig fe[MAX_RUNS], h2[MAX_RUNS];
	struct sigaction sa = { .sa_handler = on_signal };
	struct env e = { .mock_fd = -1 };
	int bad, rc = 1;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	log_set_level(LOG_LEVEL_ERROR);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (o.h2 && !have_h2load(o.h2load)) {
		fprintf(stderr,
			"bench_push: '%s' cannot be run (Debian: nghttp2-client); "
			"ferry's side only\n",
			o.h2load);
		o.h2 = 0;
	}
	if (!o.ferry && !o.h2)
		return 1;
	if (env_setup(&e, &o))
		goto out;
	bad = run_all(&e, &o, fe, h2);
	if (!fb_interrupted) {
		print_results(&o, fe, h2);
		rc = bad ? 1 : 0;
	}
out:
	env_teardown(&e);
	if (fb_interrupted) {
		/* Die of the signal, so that a calling shell stops too. */
		signal((int)fb_interrupted, SIG_DFL);
		raise((int)fb_interrupted);
	}
	return rc;
}
