/*
 * faults.c - the fault suite's shared parts (see faults.h): the daemon under
 * test, raw and libferry devices that record their history, the checker.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/faults/faults.h"
#include "common/banned.h"

#define ACK_TIMEOUT_MS 150 /* the daemon's ack_timeout */
#define LAZY_ACK_MS 400	   /* a lazy receiver holds its acks this long */
#define DRAIN_WINDOW 8	   /* small, so that catching up takes several pages */
#define SENDER_FINISH_MS 30000
#define DRAIN_TIMEOUT_MS 15000

struct fh fx;

/* ---- small things ---- */

int64_t fh_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fh_sleep_ms(int64_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int fh_rnd(unsigned *seed, int lo, int hi)
{
	return lo + rand_r(seed) % (hi - lo + 1);
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);

	if (!q)
		abort();
	return q;
}

unsigned fh_env_uint(const char *name, unsigned dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return dflt;
	n = strtoul(v, &end, 10);
	if (*end || n > 1000000)
		fail_msg("%s='%s' is not a number", name, v);
	return (unsigned)n;
}

unsigned fh_pick(unsigned shrt, unsigned lng)
{
	const char *v = getenv("FERRY_FAULTS_LONG");

	return v && *v && strcmp(v, "0") != 0 ? lng : shrt;
}

unsigned fh_seed(void)
{
	static unsigned seed;

	if (!seed) {
		seed = fh_env_uint("FERRY_FAULTS_SEED", (unsigned)time(NULL) ^ (unsigned)getpid());
		seed = seed ? seed : 1;
		printf("faults: seed=%u\n", seed);
		fflush(stdout);
	}
	return seed;
}

/* ---- the daemon ---- */

/*
 * Copy the daemon binary under test to the scratch directory and test that
 * copy: every restart then runs the same build, even if the tree is rebuilt
 * while the suite runs.
 */
static void pin_daemon(void)
{
	const char *src = getenv("FERRY_TEST_FERRYD"), *dir = getenv("FERRY_TEST_TMPDIR");
	char *path = fx.ferryd, chunk[65536];
	FILE *in, *out;
	size_t n;

	if (!src || !dir)
		fail_msg("FERRY_TEST_FERRYD or FERRY_TEST_TMPDIR is not set: run through 'make "
			 "test'");
	snprintf(path, sizeof(fx.ferryd), "%s/%d_ferryd", dir, (int)getpid());
	if (strcmp(src, path) == 0)
		return;
	in = fopen(src, "rb");
	out = fopen(path, "wb");
	if (!in || !out)
		fail_msg("cannot copy '%s' to '%s': %s", src, path, strerror(errno));
	while ((n = fread(chunk, 1, sizeof(chunk), in)) > 0)
		if (fwrite(chunk, 1, n, out) != n)
			fail_msg("cannot write '%s': %s", path, strerror(errno));
	if (ferror(in) || fclose(out) || chmod(path, 0755))
		fail_msg("cannot copy '%s' to '%s': %s", src, path, strerror(errno));
	fclose(in);
	setenv("FERRY_TEST_FERRYD", path, 1);
}

void fh_start_daemon(const char *gateway_extra, const char *extra)
{
	char *cfg, *path, *more;
	int admin = th_free_port();
	size_t len = strlen(gateway_extra) + strlen(extra) + 512;

	pin_daemon();
	more = malloc(len);
	assert_non_null(more);
	fx.conninfo = th_db_new("faults");
	fx.port = th_free_port();
	snprintf(more, len,
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = \"\"\nworkers = 2\n"
		 "ack_timeout = %d\ndrain_window = %d\n%s\n%s",
		 fx.port, ACK_TIMEOUT_MS, DRAIN_WINDOW, gateway_extra, extra);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, FH_TOKEN, more);
	path = th_write_file("faults.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		fail_msg("ferryd migrate failed");
	th_ferryd_start(&fx.d, cfg, admin);
	unlink(path);
	free(path);
	free(cfg);
	free(more);
}

void fh_kill_restart(unsigned down_ms)
{
	int st = th_ferryd_kill(&fx.d);

	if (st != 128 + SIGKILL) {
		fh_show_log(NULL, 0);
		fail_msg("ferryd had exited by itself (status %d) before it was killed", st);
	}
	if (down_ms)
		fh_sleep_ms(down_ms);
	th_ferryd_restart(&fx.d);
}

int fh_run_armed(const char *fault, unsigned timeout_ms)
{
	extern char **environ;
	const char *argv[] = { getenv("FERRY_TEST_FERRYD"), "run", "-c", fx.d.config_path, NULL };
	char arm[128], **env;
	size_t n = 0;
	int st, fd;
	int64_t deadline = fh_now_ms() + timeout_ms;

	if (fx.d.pid > 0)
		fail_msg("fh_run_armed: the daemon is still running");
	snprintf(arm, sizeof(arm), "FERRY_FAULT=%s", fault);
	while (environ[n])
		n++;
	env = calloc(n + 2, sizeof(*env));
	assert_non_null(env);
	for (size_t i = 0, j = 0; i < n; i++)
		if (strncmp(environ[i], "FERRY_FAULT=", 12) != 0)
			env[j++] = environ[i];
	for (n = 0; env[n]; n++)
		;
	env[n] = arm;
	fx.d.pid = fork();
	if (fx.d.pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (fx.d.pid == 0) {
		fd = open(fx.d.log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd < 0)
			_exit(126);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
		execve(argv[0], (char *const *)argv, env);
		_exit(127);
	}
	free(env);
	while (fh_now_ms() < deadline) {
		if (waitpid(fx.d.pid, &st, WNOHANG) == fx.d.pid) {
			fx.d.pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		fh_sleep_ms(10);
	}
	th_ferryd_kill(&fx.d);
	return -1;
}

void fh_reset(void)
{
	if (fx.d.pid > 0)
		th_ferryd_stop(&fx.d, SIGTERM);
	for (int i = 0; i < FH_MAX_SENDERS; i++)
		free(fx.snd[i].env);
	for (int i = 0; i < FH_MAX_RECEIVERS; i++) {
		free(fx.rcv[i].seen);
		if (fx.rcv[i].secret[0])
			pthread_mutex_destroy(&fx.rcv[i].lock);
	}
	for (int i = 0; i < 2; i++)
		if (fx.own[i])
			fh_peer_free(fx.own[i]);
	free(fx.conninfo);
	free(fx.d.config_path);
	free(fx.d.log_path);
	{
		char keep[sizeof(fx.ferryd)];

		memcpy(keep, fx.ferryd, sizeof(keep));
		memset(&fx, 0, sizeof(fx));
		memcpy(fx.ferryd, keep, sizeof(keep));
	}
}

long fh_rss_kib(void)
{
	char path[64], *status, *at;
	long kib = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)fx.d.pid);
	status = th_read_file(path);
	at = strstr(status, "VmRSS:");
	if (at)
		kib = strtol(at + 6, NULL, 10);
	free(status);
	return kib;
}

long fh_readyz(void)
{
	char url[128];
	struct th_response r;
	long status;

	snprintf(url, sizeof(url), "%s/readyz", fx.d.admin_url);
	th_http(&r, "GET", url, NULL, NULL);
	status = r.status;
	th_response_release(&r);
	return status;
}

void fh_show_log(const uint64_t *server_ids, size_t n)
{
	char *log = th_read_file(fx.d.log_path);
	int shown = 0;

	fprintf(stderr, "---- ferryd log (%s): lines about the envelopes above, warnings ----\n",
		fx.d.log_path);
	for (char *line = log, *next; line && *line && shown < 400; line = next) {
		int hit = strstr(line, "level=warn") || strstr(line, "level=error") ||
			  strstr(line, "level=fatal") || strstr(line, "Sanitizer") ||
			  strstr(line, "ferryd:");
		char *nl = strchr(line, '\n');

		next = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		for (size_t i = 0; i < n && !hit; i++) {
			char key[48];
			const char *at = line;
			size_t klen;

			snprintf(key, sizeof(key), "server_id=%llu",
				 (unsigned long long)server_ids[i]);
			klen = strlen(key);
			while (!hit && (at = strstr(at, key)) != NULL) {
				hit = at[klen] == ' ' || at[klen] == '\0';
				at += klen;
			}
		}
		if (hit) {
			fprintf(stderr, "%s\n", line);
			shown++;
		}
	}
	fprintf(stderr, "---- end of log excerpt ----\n");
	free(log);
}

/* ---- devices ---- */

void fh_make_devices(int nsnd, int nrcv, const int *rusers, unsigned seed)
{
	fx.nsnd = nsnd;
	fx.nrcv = nrcv;
	for (int i = 0; i < nsnd; i++) {
		struct fh_sender *s = &fx.snd[i];

		s->idx = i;
		s->seed = seed + 101 * (unsigned)i;
		s->window = 16;
		snprintf(s->user, sizeof(s->user), "fs%d", i);
		th_device_create(&fx.d, FH_TOKEN, s->user, &s->id, s->secret);
	}
	for (int i = 0; i < nrcv; i++) {
		struct fh_receiver *r = &fx.rcv[i];
		char user[16];

		r->idx = i;
		r->user = rusers[i];
		r->seed = seed + 1009 * (unsigned)(i + 1);
		pthread_mutex_init(&r->lock, NULL);
		snprintf(user, sizeof(user), "fr%d", r->user);
		th_device_create(&fx.d, FH_TOKEN, user, &r->id, r->secret);
	}
}

struct fh_peer *fh_peer_new(void)
{
	struct fh_peer *p = calloc(1, sizeof(*p));

	if (!p)
		abort();
	p->fd = -1;
	return p;
}

void fh_peer_free(struct fh_peer *p)
{
	fh_peer_close(p);
	free(p);
}

void fh_peer_close(struct fh_peer *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->len = p->used = 0;
}

int fh_peer_send(struct fh_peer *p, const struct proto_frame *f)
{
	uint8_t out[8192];
	size_t len, off = 0;

	if (p->fd < 0)
		return -1;
	if (proto_encode(f, out, sizeof(out), &len))
		abort(); /* the test's own frames always fit */
	while (off < len) {
		ssize_t n = send(p->fd, out + off, len - off, MSG_NOSIGNAL);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			fh_peer_close(p);
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

int fh_peer_read(struct fh_peer *p, int timeout_ms)
{
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };

	if (p->fd < 0)
		return -1;
	if (p->used) {
		memmove(p->buf, p->buf + p->used, p->len - p->used);
		p->len -= p->used;
		p->used = 0;
	}
	for (;;) {
		size_t used = 0;
		ssize_t n;

		if (p->len) {
			if (proto_decode(p->buf, p->len, FH_PEER_BUF, &p->f, &used)) {
				p->bad++;
				fh_peer_close(p);
				return -1;
			}
			if (used) {
				p->used = used;
				return 1;
			}
		}
		n = poll(&pfd, 1, timeout_ms);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fh_peer_close(p);
			return -1;
		}
		n = read(p->fd, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			fh_peer_close(p);
			return -1;
		}
		p->len += (size_t)n;
		timeout_ms = 0; /* what is buffered first; then come back */
	}
}

int fh_peer_open(struct fh_peer *p, int64_t device, const char *secret)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port) };
	struct proto_frame hello = { .type = PROTO_HELLO };
	int one = 1;
	int64_t deadline = fh_now_ms() + 3000;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->len = p->used = 0;
	p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->fd < 0)
		return -1;
	if (connect(p->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fh_peer_close(p);
		return -1;
	}
	setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	hello.u.hello.version = PROTO_VERSION;
	hello.u.hello.device_id = (uint64_t)device;
	hello.u.hello.secret.p = (const uint8_t *)secret;
	hello.u.hello.secret.len = strlen(secret);
	if (fh_peer_send(p, &hello))
		return -1;
	while (fh_now_ms() < deadline) {
		int r = fh_peer_read(p, 100);

		if (r < 0)
			return -1;
		if (r == 0)
			continue;
		if (p->f.type == PROTO_WELCOME)
			return 0;
		break; /* ERROR (a replaced connection, the store not ready...) */
	}
	fh_peer_close(p);
	return -1;
}

int fh_peer_pong(struct fh_peer *p, uint64_t nonce)
{
	struct proto_frame f = { .type = PROTO_PONG };

	f.u.nonce = nonce;
	return fh_peer_send(p, &f);
}

int fh_peer_ack(struct fh_peer *p, const uint64_t *ids, size_t n)
{
	struct proto_frame f = { .type = PROTO_DELIVER_ACK };

	f.u.ids.count = n;
	memcpy(f.u.ids.ids, ids, n * sizeof(*ids));
	return fh_peer_send(p, &f);
}

void fh_payload(char *out, size_t cap, int sender, uint64_t client_id, int to)
{
	snprintf(out, cap, "fault s%d c%llu r%d", sender, (unsigned long long)client_id, to);
}

/* The payload with @pad dots after it, in @out (cap >= 64 + pad). */
static size_t payload_padded(char *out, size_t cap, int sender, uint64_t cid, int to, unsigned pad)
{
	size_t n;

	fh_payload(out, cap, sender, cid, to);
	n = strlen(out);
	for (unsigned i = 0; i < pad && n + 1 < cap; i++)
		out[n++] = '.';
	out[n] = '\0';
	return n;
}

void fh_sent_new(struct fh_sender *s, uint64_t cid, int to)
{
	if (cid >= s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 4096;

		while (cap <= cid)
			cap *= 2;
		s->env = xrealloc(s->env, cap * sizeof(*s->env));
		memset(s->env + s->cap, 0, (cap - s->cap) * sizeof(*s->env));
		s->cap = cap;
	}
	s->env[cid].to = (uint8_t)to;
	if (cid > s->last)
		s->last = cid;
}

int fh_send_env(struct fh_sender *s, struct fh_peer *p, uint64_t cid)
{
	struct proto_frame f = { .type = PROTO_SEND };
	char to[16], text[4096];
	size_t len;

	snprintf(to, sizeof(to), "fr%d", s->env[cid].to);
	len = payload_padded(text, sizeof(text), s->idx, cid, s->env[cid].to, s->pad);
	f.u.send.client_id = cid;
	f.u.send.to_user.p = (const uint8_t *)to;
	f.u.send.to_user.len = strlen(to);
	f.u.send.payload.p = (const uint8_t *)text;
	f.u.send.payload.len = len;
	s->env[cid].tx++;
	return fh_peer_send(p, &f);
}

static void record_one(struct fh_receiver *r, uint64_t sender_device, uint64_t client_id,
		       uint64_t server_id, const char *suser, size_t suser_len,
		       const uint8_t *payload, size_t len, int in_drain)
{
	struct fh_seen *e;
	char text[64];
	size_t tl;

	pthread_mutex_lock(&r->lock);
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 4096;
		r->seen = xrealloc(r->seen, r->cap * sizeof(*r->seen));
	}
	e = &r->seen[r->n++];
	memset(e, 0, sizeof(*e));
	e->sender_device = sender_device;
	e->client_id = client_id;
	e->server_id = server_id;
	e->in_drain = in_drain;
	e->sender = -1;
	for (int i = 0; i < fx.nsnd; i++)
		if ((uint64_t)fx.snd[i].id == sender_device)
			e->sender = i;
	if (e->sender >= 0) {
		fh_payload(text, sizeof(text), e->sender, client_id, r->user);
		tl = strlen(text);
		e->valid = len >= tl && memcmp(payload, text, tl) == 0 &&
			   suser_len == strlen(fx.snd[e->sender].user) &&
			   memcmp(suser, fx.snd[e->sender].user, suser_len) == 0;
		for (size_t i = tl; i < len && e->valid; i++)
			e->valid = payload[i] == '.';
	}
	pthread_mutex_unlock(&r->lock);
}

void fh_record(struct fh_receiver *r, const struct proto_deliver *d, int in_drain)
{
	record_one(r, d->sender_device, d->client_id, d->server_id, (const char *)d->sender_user.p,
		   d->sender_user.len, d->payload.p, d->payload.len, in_drain);
}

/* ---- raw traffic ---- */

/* Handle one frame for sender @s whose outstanding client id is *cur. */
static void sender_frame(struct fh_sender *s, struct fh_peer *p, uint64_t *cur, int64_t *resend_at)
{
	const struct proto_frame *f = &p->f;

	switch (f->type) {
	case PROTO_ACK:
		if (*cur && f->u.ack.client_id == *cur) {
			s->env[*cur].acked = 1;
			s->env[*cur].status = (uint8_t)f->u.ack.status;
			s->env[*cur].server_id = f->u.ack.server_id;
			s->env[*cur].acked_ms = fh_now_ms();
			*cur = 0;
			*resend_at = 0;
		} else {
			s->stray_acks++;
		}
		break;
	case PROTO_NACK:
		if (!*cur || f->u.nack.client_id != *cur) {
			s->stray_acks++;
		} else if (f->u.nack.reason == PROTO_NACK_RETRY_LATER ||
			   f->u.nack.reason == PROTO_NACK_QUEUE_FULL) {
			s->nacks++;
			*resend_at = fh_now_ms() + fh_rnd(&s->seed, 10, 40);
		} else {
			s->env[*cur].rejected = 1;
			*cur = 0;
		}
		break;
	case PROTO_PING:
		fh_peer_pong(p, f->u.nonce);
		break;
	case PROTO_ERROR:
		fh_peer_close(p);
		break;
	case PROTO_DELIVER:
		s->delivers++; /* nobody sends to a sender */
		break;
	default:
		break;
	}
}

void *fh_raw_sender(void *arg)
{
	struct fh_sender *s = arg;
	struct fh_peer *p = fh_peer_new();
	uint64_t cur = 0;   /* the outstanding client id; 0: none */
	int64_t resend = 0; /* when to (re)transmit it; 0: it is on the wire */

	while (!atomic_load(&fx.abort_senders) && (cur || !atomic_load(&fx.stop_senders))) {
		int r;

		if (p->fd < 0) {
			if (fh_peer_open(p, s->id, s->secret)) {
				fh_sleep_ms(fh_rnd(&s->seed, 5, 25));
				continue;
			}
			s->connects++;
			if (cur)
				resend = fh_now_ms(); /* retransmit what was not answered */
		}
		if (!cur) {
			cur = s->last + 1;
			fh_sent_new(s, cur, fx.rcv[fh_rnd(&s->seed, 0, fx.nrcv - 1)].user);
			resend = fh_now_ms();
		}
		if (resend && fh_now_ms() >= resend) {
			resend = 0;
			if (fh_send_env(s, p, cur))
				continue;
		}
		r = fh_peer_read(p, resend ? (int)(resend > fh_now_ms() ? resend - fh_now_ms() : 0)
					   : 50);
		if (r == 1)
			sender_frame(s, p, &cur, &resend);
	}
	s->bad_frames += (unsigned)p->bad;
	fh_peer_free(p);
	atomic_store(&s->done, 1);
	return NULL;
}

/* Start an online or offline phase of @r at @now. */
static void next_phase(struct fh_receiver *r, struct fh_peer *p, int *online, int *lazy,
		       int64_t now, int64_t *end)
{
	if (!r->always_online)
		*online = !*online || fh_rnd(&r->seed, 0, 3) == 0;
	if (*online) {
		*lazy = fh_rnd(&r->seed, 0, 3) == 0;
		r->lazy_phases += (unsigned)*lazy;
		*end = now + fh_rnd(&r->seed, 300, 1500);
	} else {
		/* Gone without a word: what was delivered and not acked is stored. */
		fh_peer_close(p);
		r->offline_phases++;
		*end = now + fh_rnd(&r->seed, 100, 800);
	}
}

void *fh_raw_receiver(void *arg)
{
	struct fh_receiver *r = arg;
	struct fh_peer *p = fh_peer_new();
	uint64_t held[PROTO_MAX_IDS]; /* acks a lazy receiver has not sent yet */
	size_t nheld = 0;
	int64_t flush_at = 0, end = fh_now_ms() + fh_rnd(&r->seed, 300, 1500);
	int online = 1, lazy = 0;

	while (!atomic_load(&fx.stop_receivers)) {
		int64_t now = fh_now_ms();
		int rc;

		if (now >= end)
			next_phase(r, p, &online, &lazy, now, &end);
		if (!online) {
			nheld = 0;
			fh_sleep_ms(10);
			continue;
		}
		if (p->fd < 0) {
			nheld = 0;
			if (fh_peer_open(p, r->id, r->secret)) {
				fh_sleep_ms(fh_rnd(&r->seed, 5, 25));
				continue;
			}
			r->connects++;
		}
		if (nheld && (now >= flush_at || nheld == PROTO_MAX_IDS)) {
			fh_peer_ack(p, held, nheld);
			nheld = 0;
			continue;
		}
		rc = fh_peer_read(p, 20);
		if (rc < 1)
			continue;
		switch (p->f.type) {
		case PROTO_DELIVER:
			fh_record(r, &p->f.u.deliver, 0);
			if (!lazy) {
				fh_peer_ack(p, &p->f.u.deliver.server_id, 1);
				break;
			}
			if (!nheld)
				flush_at = now + LAZY_ACK_MS;
			held[nheld++] = p->f.u.deliver.server_id;
			break;
		case PROTO_QUEUE_EMPTY:
			r->queue_empty++;
			r->drained += (unsigned)p->f.u.drained;
			break;
		case PROTO_PING:
			fh_peer_pong(p, p->f.u.nonce);
			break;
		case PROTO_ERROR:
			fh_peer_close(p);
			break;
		default:
			break;
		}
	}
	r->bad_frames += (unsigned)p->bad;
	fh_peer_free(p);
	return NULL;
}

void fh_start_threads(void *(*snd)(void *), void *(*rcv)(void *))
{
	for (int i = 0; rcv && i < fx.nrcv; i++)
		assert_int_equal(pthread_create(&fx.rcv[i].thread, NULL, rcv, &fx.rcv[i]), 0);
	for (int i = 0; snd && i < fx.nsnd; i++)
		assert_int_equal(pthread_create(&fx.snd[i].thread, NULL, snd, &fx.snd[i]), 0);
}

void fh_stop_senders(void)
{
	int64_t deadline = fh_now_ms() + SENDER_FINISH_MS;
	int all;

	atomic_store(&fx.stop_senders, 1);
	do {
		all = 1;
		for (int i = 0; i < fx.nsnd; i++)
			all &= atomic_load(&fx.snd[i].done);
		if (!all)
			fh_sleep_ms(20);
	} while (!all && fh_now_ms() < deadline);
	if (!all)
		fprintf(stderr, "faults: a sender's last SEND was not answered within %d s\n",
			SENDER_FINISH_MS / 1000);
	atomic_store(&fx.abort_senders, 1);
	for (int i = 0; i < fx.nsnd; i++)
		pthread_join(fx.snd[i].thread, NULL);
}

void fh_stop_receivers(void)
{
	atomic_store(&fx.stop_receivers, 1);
	for (int i = 0; i < fx.nrcv; i++)
		pthread_join(fx.rcv[i].thread, NULL);
}

int fh_drain(struct fh_receiver *r)
{
	struct fh_peer *p = fh_peer_new();
	int64_t deadline = fh_now_ms() + DRAIN_TIMEOUT_MS;
	int rc = -1;

	while (rc && fh_now_ms() < deadline) {
		if (p->fd < 0 && fh_peer_open(p, r->id, r->secret)) {
			fh_sleep_ms(50);
			continue;
		}
		if (fh_peer_read(p, 200) < 1)
			continue;
		switch (p->f.type) {
		case PROTO_DELIVER:
			fh_record(r, &p->f.u.deliver, 1);
			fh_peer_ack(p, &p->f.u.deliver.server_id, 1);
			break;
		case PROTO_DELIVER_RECEIPT:
			fh_peer_ack(p, &p->f.u.receipt.id, 1);
			break;
		case PROTO_QUEUE_EMPTY:
			r->drained += (unsigned)p->f.u.drained;
			rc = 0;
			break;
		case PROTO_PING:
			fh_peer_pong(p, p->f.u.nonce);
			break;
		default:
			break;
		}
	}
	r->bad_frames += (unsigned)p->bad;
	fh_peer_free(p);
	return rc;
}

unsigned fh_drain_all(void)
{
	unsigned undrained = 0;

	if (fx.d.pid <= 0)
		th_ferryd_restart(&fx.d);
	for (int i = 0; i < fx.nrcv; i++)
		undrained += fh_drain(&fx.rcv[i]) != 0;
	return undrained;
}

/* ---- libferry devices ---- */

static void lf_send_acked(void *arg, uint64_t cid, uint64_t server_id, unsigned status)
{
	struct fh_sender *s = arg;

	if (cid < 1 || cid > s->last) {
		s->stray_acks++;
		return;
	}
	s->env[cid].acked = 1;
	s->env[cid].status = (uint8_t)status;
	s->env[cid].server_id = server_id;
	s->env[cid].acked_ms = fh_now_ms();
}

static void lf_send_nacked(void *arg, uint64_t cid, uint64_t reason, const char *text, int final)
{
	struct fh_sender *s = arg;

	if (cid < 1 || cid > s->last)
		s->stray_acks++;
	else if (final)
		s->env[cid].rejected = 1;
	else
		s->nacks++;
}

static void lf_sender_connected(void *arg, const struct ferry_welcome *w)
{
	((struct fh_sender *)arg)->connects++;
}

static void lf_receiver_connected(void *arg, const struct ferry_welcome *w)
{
	((struct fh_receiver *)arg)->connects++;
}

static int lf_deliver(void *arg, const struct ferry_envelope *env)
{
	struct fh_receiver *r = arg;

	record_one(r, env->sender_device, env->client_id, env->server_id, env->sender_user,
		   strlen(env->sender_user), env->payload, env->payload_len, 0);
	return 0;
}

static int lf_receipt(void *arg, const struct ferry_receipt *rc)
{
	return 0;
}

static void lf_queue_empty(void *arg, uint64_t drained)
{
	struct fh_receiver *r = arg;

	r->queue_empty++;
	r->drained += (unsigned)drained;
}

struct ferry_client *fh_lf_new(struct fh_sender *s, struct fh_receiver *r)
{
	char port[16], err[256];
	struct ferry_config cfg = { .host = "127.0.0.1", .port = port };
	struct ferry_callbacks cb = { 0 };
	struct ferry_client *c = NULL;

	snprintf(port, sizeof(port), "%d", fx.port);
	cfg.backoff_base_ms = 20;
	cfg.backoff_cap_ms = 500;
	cfg.connect_timeout_ms = 3000;
	if (s) {
		cfg.device_id = (uint64_t)s->id;
		cfg.secret = s->secret;
		cfg.secret_len = strlen(s->secret);
		cfg.first_client_id = s->last + 1;
		cb.send_acked = lf_send_acked;
		cb.send_nacked = lf_send_nacked;
		cb.connected = lf_sender_connected;
		cb.receipt = lf_receipt;
	} else {
		cfg.device_id = (uint64_t)r->id;
		cfg.secret = r->secret;
		cfg.secret_len = strlen(r->secret);
		cb.deliver = lf_deliver;
		cb.receipt = lf_receipt;
		cb.queue_empty = lf_queue_empty;
		cb.connected = lf_receiver_connected;
	}
	if (ferry_client_new(&cfg, &cb, s ? (void *)s : (void *)r, &c, err, sizeof(err)))
		abort(); /* the test's own configuration is valid */
	return c;
}

/* Queue the next SEND of libferry sender @s to a random receiving user. */
static int lf_send_next(struct fh_sender *s, struct ferry_client *c)
{
	char to[16], text[4096];
	uint64_t cid = s->last + 1, got = 0;
	int user = fx.rcv[fh_rnd(&s->seed, 0, fx.nrcv - 1)].user;
	size_t len = payload_padded(text, sizeof(text), s->idx, cid, user, s->pad);

	snprintf(to, sizeof(to), "fr%d", user);
	if (ferry_client_send(c, to, 0, text, len, &got))
		return -1;
	if (got != cid)
		abort(); /* client ids are the records' index */
	fh_sent_new(s, cid, user);
	s->env[cid].tx = 1;
	return 0;
}

void *fh_lf_sender(void *arg)
{
	struct fh_sender *s = arg;
	struct ferry_client *c = fh_lf_new(s, NULL);
	int64_t next = 0;

	while (!atomic_load(&fx.abort_senders)) {
		int more = !atomic_load(&fx.stop_senders) && (!s->limit || s->last < s->limit);

		if (!more && ferry_client_queued(c) == 0)
			break;
		while (more && ferry_client_queued(c) < s->window && fh_now_ms() >= next) {
			if (lf_send_next(s, c))
				break;
			next = s->interval ? fh_now_ms() + s->interval : 0;
			more = !s->limit || s->last < s->limit;
		}
		if (ferry_client_run(c, 10))
			break;
	}
	ferry_client_free(c);
	atomic_store(&s->done, 1);
	return NULL;
}

void *fh_lf_receiver(void *arg)
{
	struct fh_receiver *r = arg;
	struct ferry_client *c = fh_lf_new(NULL, r);

	while (!atomic_load(&fx.stop_receivers))
		if (ferry_client_run(c, 20))
			break;
	ferry_client_free(c);
	return NULL;
}

/* ---- scoring ---- */

static void score_receiver(struct fh_score *sc, const struct fh_receiver *r,
			   uint16_t *count[FH_MAX_SENDERS])
{
	uint64_t first_max[FH_MAX_SENDERS] = { 0 };
	unsigned bad_shown = 0, order_shown = 0;

	for (int s = 0; s < fx.nsnd; s++)
		memset(count[s], 0, (fx.snd[s].last + 1) * sizeof(uint16_t));
	for (size_t i = 0; i < r->n; i++) {
		const struct fh_seen *e = &r->seen[i];
		const struct fh_sender *s = e->sender >= 0 ? &fx.snd[e->sender] : NULL;
		uint64_t key;

		if (!s || !e->valid || e->client_id < 1 || e->client_id > s->last ||
		    !s->env[e->client_id].tx || s->env[e->client_id].to != r->user) {
			sc->unexpected++;
			if (bad_shown++ < FH_MAX_EXAMPLES)
				fprintf(stderr,
					"unexpected: device %lld got server_id=%llu from device "
					"%llu client_id=%llu (sender known=%d, payload ok=%d)\n",
					(long long)r->id, (unsigned long long)e->server_id,
					(unsigned long long)e->sender_device,
					(unsigned long long)e->client_id, s != NULL, e->valid);
			continue;
		}
		if (count[e->sender][e->client_id]++) {
			sc->dup++;
			continue;
		}
		sc->delivered++;
		sc->drain_delivered += (uint64_t)e->in_drain;
		key = s->by_server_id ? s->env[e->client_id].server_id : e->client_id;
		if (!key)
			continue;
		if (key < first_max[e->sender]) {
			sc->reordered++;
			if (order_shown++ < FH_MAX_EXAMPLES)
				fprintf(stderr,
					"reordered: device %lld got %s client_id=%llu "
					"(server_id=%llu) first after client_id=%llu\n",
					(long long)r->id, s->user, (unsigned long long)e->client_id,
					(unsigned long long)e->server_id,
					(unsigned long long)first_max[e->sender]);
		} else {
			first_max[e->sender] = key;
		}
	}
	for (int si = 0; si < fx.nsnd; si++) {
		const struct fh_sender *s = &fx.snd[si];

		for (uint64_t c = 1; c <= s->last; c++) {
			if (!s->env[c].acked || s->env[c].to != r->user || count[si][c])
				continue;
			sc->lost++;
			if (sc->nlost_ids < FH_MAX_EXAMPLES) {
				sc->lost_ids[sc->nlost_ids++] = s->env[c].server_id;
				fprintf(stderr,
					"lost: %s (device %lld) client_id=%llu server_id=%llu ACK "
					"%s, never delivered to device %lld of fr%d\n",
					s->user, (long long)s->id, (unsigned long long)c,
					(unsigned long long)s->env[c].server_id,
					s->env[c].status == PROTO_ACK_DELIVERED ? "delivered"
										: "stored",
					(long long)r->id, r->user);
			}
		}
	}
}

void fh_score(struct fh_score *sc)
{
	uint16_t *count[FH_MAX_SENDERS];

	memset(sc, 0, sizeof(*sc));
	for (int si = 0; si < fx.nsnd; si++) {
		const struct fh_sender *s = &fx.snd[si];

		count[si] = calloc(s->last + 1, sizeof(uint16_t));
		assert_non_null(count[si]);
		for (uint64_t c = 1; c <= s->last; c++) {
			sc->sent += s->env[c].tx > 0;
			sc->tx += s->env[c].tx;
			sc->acked += s->env[c].acked;
			sc->acked_stored += s->env[c].acked && s->env[c].status == PROTO_ACK_STORED;
		}
		sc->nacks += s->nacks;
		sc->stray += s->stray_acks;
		sc->unexpected += s->delivers;
		sc->bad += s->bad_frames;
	}
	for (int ri = 0; ri < fx.nrcv; ri++) {
		score_receiver(sc, &fx.rcv[ri], count);
		sc->bad += fx.rcv[ri].bad_frames;
	}
	for (int si = 0; si < fx.nsnd; si++)
		free(count[si]);
}

void fh_report(const char *scenario, struct fh_score *sc, unsigned undrained, const char *extra)
{
	fh_score(sc);
	sc->undrained = undrained;
	printf("faults: scenario=%s sent=%llu acked=%llu acked_stored=%llu transmissions=%llu "
	       "nack_retry=%u delivered=%llu lost=%llu unexpected=%llu dup=%llu reordered=%llu "
	       "%s\n",
	       scenario, (unsigned long long)sc->sent, (unsigned long long)sc->acked,
	       (unsigned long long)sc->acked_stored, (unsigned long long)sc->tx, sc->nacks,
	       (unsigned long long)sc->delivered, (unsigned long long)sc->lost,
	       (unsigned long long)sc->unexpected, (unsigned long long)sc->dup,
	       (unsigned long long)sc->reordered, extra ? extra : "");
	fflush(stdout);
	if (sc->lost || sc->unexpected || sc->reordered || undrained || sc->stray || sc->bad)
		fh_show_log(sc->lost_ids, sc->nlost_ids);
	if (sc->stray || sc->bad || undrained)
		fprintf(stderr, "faults: stray_answers=%u bad_frames=%u undrained=%u\n", sc->stray,
			sc->bad, undrained);
	assert_int_equal(sc->lost, 0);
	assert_int_equal(sc->unexpected, 0);
	assert_int_equal(sc->reordered, 0);
	assert_int_equal(undrained, 0);
	assert_int_equal(sc->stray, 0);
	assert_int_equal(sc->bad, 0);
}
