/*
 * test_crash.c - crash safety: an envelope the server has acknowledged is
 * never lost, whatever moment ferryd is killed at.
 *
 * Senders and receivers run against ferryd and real PostgreSQL while the test
 * kills ferryd with SIGKILL again and again and starts it again on the same
 * database and ports. Then every receiver drains its offline queue and the
 * test scores what it saw:
 *
 *   lost        an envelope a sender saw ACKed (stored or delivered) that a
 *               target device never received: must be 0
 *   unexpected  a DELIVER of something never sent, to a device that was not
 *               a target, or with a wrong payload or sender: must be 0
 *   reordered   for one (sender, receiving device), a client id first seen
 *               after a larger one was first seen: must be 0
 *   dup         deliveries after the first (at-least-once): allowed, counted
 *
 * Cast: users crs0..crs3 with one sending device each; users crr0..crr3
 * receive, crr0 and crr1 with two devices each. Each sender has one SEND
 * outstanding at a time (the next client id only after the previous one got
 * ACK), so that its envelopes have a single order; it retransmits the
 * outstanding SEND with the same client id after a NACK to retry later, and
 * after every reconnection. Receivers record a DELIVER before they
 * DELIVER_ACK it. Some receiving devices go offline and come back at random
 * (the offline store), some hold their acks past the ack timeout for a while
 * (the timeout path), the others stay online (live delivery).
 *
 * Then, with ferryd left running, PostgreSQL itself is restarted under the
 * same traffic (fast and immediate shutdowns, alternately): ferryd must
 * ride through it without a restart of its own, and the same scoring
 * applies to everything sent meanwhile.
 *
 * FERRY_CRASH_CYCLES (default 5) is the number of kills and
 * FERRY_CRASH_PG_RESTARTS (default 2) the number of PostgreSQL restarts;
 * `make check-long` runs 100 and 20. FERRY_CRASH_SEED replays a run's random choices (the test
 * prints the seed it used); the timing of a run cannot be replayed. FERRY_CRASH_LOG names a file to
 * keep the daemon's log in (every run of it, appended). The figures go to stdout as one line
 * starting with "crash:"; on a failure the lost, unexpected or reordered envelopes are listed on
 * stderr with the log lines that name them and the daemon's warnings.
 *
 * The daemon binary is copied to the scratch directory first, so that every
 * restart runs the same build.
 *
 * Threads: one per device. Each owns its own records until it is joined;
 * the main thread kills and restarts the daemon, then scores. Only the main
 * thread calls cmocka.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/proto.h"
#include "tests/integration/harness.h"
#include "common/banned.h"

#define TOKEN "crash-test-token"
#define NSENDERS 4
#define NRUSERS 4
#define NRECEIVERS 6	     /* crr0 and crr1 have two devices each */
#define ACK_TIMEOUT_MS 150   /* the daemon's ack_timeout */
#define LAZY_ACK_MS 400	     /* a lazy receiver holds its acks this long */
#define DRAIN_WINDOW 8	     /* small, so that catching up takes several pages */
#define PEER_BUF (96 * 1024) /* over the daemon's max_frame (64 KiB) */
#define SENDER_FINISH_MS 30000
#define DRAIN_TIMEOUT_MS 15000
#define MAX_EXAMPLES 10

/* One envelope a sender sent (index: its client id). */
struct env_rec {
	uint8_t to;	    /* receiving user crr<to> */
	uint8_t acked;	    /* 1 once ACK came */
	uint8_t status;	    /* the ACK's status */
	uint8_t rejected;   /* a NACK that is not "retry later" */
	uint32_t tx;	    /* transmissions */
	uint64_t server_id; /* from the ACK */
};

struct sender {
	int idx;
	int64_t id;
	char user[16];
	char secret[64];
	unsigned seed;
	pthread_t thread;
	atomic_int done;
	struct env_rec *env; /* [1..last] */
	size_t cap;
	uint64_t last; /* highest client id sent */
	unsigned connects, nacks, stray_acks, delivers, bad_frames;
};

/* One DELIVER a receiving device read, in the order read. */
struct seen {
	uint64_t sender_device;
	uint64_t client_id;
	uint64_t server_id;
	int sender;   /* index, or -1: no such sender */
	int valid;    /* sender user and payload as that sender would send them */
	int in_drain; /* read by the final drain */
};

struct receiver {
	int idx;
	int user; /* crr<user> */
	int64_t id;
	char secret[64];
	int always_online;
	unsigned seed;
	pthread_t thread;
	struct seen *seen;
	size_t n, cap;
	unsigned connects, queue_empty, drained, lazy_phases, offline_phases, bad_frames;
};

/* A device connection that never fails the test: errors close it. */
struct peer {
	int fd;
	uint8_t buf[PEER_BUF];
	size_t len, used; /* bytes buffered; bytes of the frame last returned */
	struct proto_frame f;
	int bad; /* the server sent a malformed frame */
};

static struct {
	char *conninfo;
	char ferryd[4096]; /* the copy of the daemon under test */
	struct th_ferryd d;
	int port;
	struct sender snd[NSENDERS];
	struct receiver rcv[NRECEIVERS];
	atomic_int stop_senders, abort_senders, stop_receivers;
} fx;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int rnd(unsigned *seed, int lo, int hi)
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

/* ---- a device connection ---- */

static void peer_close(struct peer *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->len = p->used = 0;
}

static int peer_send(struct peer *p, const struct proto_frame *f)
{
	uint8_t out[1024];
	size_t len, off = 0;

	if (proto_encode(f, out, sizeof(out), &len))
		abort(); /* the test's own frames always fit */
	while (off < len) {
		ssize_t n = send(p->fd, out + off, len - off, MSG_NOSIGNAL);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			peer_close(p);
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

/*
 * Read one frame within @timeout_ms into p->f (valid until the next call).
 * 1: a frame; 0: nothing yet; -1: the connection is gone (closed).
 */
static int peer_read(struct peer *p, int timeout_ms)
{
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };

	if (p->used) {
		memmove(p->buf, p->buf + p->used, p->len - p->used);
		p->len -= p->used;
		p->used = 0;
	}
	for (;;) {
		size_t used = 0;
		ssize_t n;

		if (p->len) {
			if (proto_decode(p->buf, p->len, PEER_BUF, &p->f, &used)) {
				p->bad++;
				peer_close(p);
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
			peer_close(p);
			return -1;
		}
		n = read(p->fd, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			peer_close(p);
			return -1;
		}
		p->len += (size_t)n;
		timeout_ms = 0; /* what is buffered first; then come back */
	}
}

/* Connect, HELLO, wait for WELCOME. 0: ready; -1: closed again. */
static int peer_open(struct peer *p, int64_t device, const char *secret)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port) };
	struct proto_frame hello = { .type = PROTO_HELLO };
	int one = 1;
	int64_t deadline = now_ms() + 3000;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->len = p->used = 0;
	p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->fd < 0)
		return -1;
	if (connect(p->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		peer_close(p);
		return -1;
	}
	setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	hello.u.hello.version = PROTO_VERSION;
	hello.u.hello.device_id = (uint64_t)device;
	hello.u.hello.secret.p = (const uint8_t *)secret;
	hello.u.hello.secret.len = strlen(secret);
	if (peer_send(p, &hello))
		return -1;
	while (now_ms() < deadline) {
		int r = peer_read(p, 100);

		if (r < 0)
			return -1;
		if (r == 0)
			continue;
		if (p->f.type == PROTO_WELCOME)
			return 0;
		break; /* ERROR (a replaced connection, the store not ready...) */
	}
	peer_close(p);
	return -1;
}

static int peer_pong(struct peer *p, uint64_t nonce)
{
	struct proto_frame f = { .type = PROTO_PONG };

	f.u.nonce = nonce;
	return peer_send(p, &f);
}

static int peer_ack(struct peer *p, const uint64_t *ids, size_t n)
{
	struct proto_frame f = { .type = PROTO_DELIVER_ACK };

	f.u.ids.count = n;
	memcpy(f.u.ids.ids, ids, n * sizeof(*ids));
	return peer_send(p, &f);
}

/* ---- senders ---- */

static void payload_text(char *out, size_t cap, int sender, uint64_t client_id, int to)
{
	snprintf(out, cap, "crash s%d c%llu r%d", sender, (unsigned long long)client_id, to);
}

static int send_env(struct sender *s, struct peer *p, uint64_t cid)
{
	struct proto_frame f = { .type = PROTO_SEND };
	char to[16], text[64];

	snprintf(to, sizeof(to), "crr%d", s->env[cid].to);
	payload_text(text, sizeof(text), s->idx, cid, s->env[cid].to);
	f.u.send.client_id = cid;
	f.u.send.to_user.p = (const uint8_t *)to;
	f.u.send.to_user.len = strlen(to);
	f.u.send.payload.p = (const uint8_t *)text;
	f.u.send.payload.len = strlen(text);
	s->env[cid].tx++;
	return peer_send(p, &f);
}

/* Handle one frame for sender @s whose outstanding client id is *cur. */
static void sender_frame(struct sender *s, struct peer *p, uint64_t *cur, int64_t *resend_at)
{
	const struct proto_frame *f = &p->f;

	switch (f->type) {
	case PROTO_ACK:
		if (*cur && f->u.ack.client_id == *cur) {
			s->env[*cur].acked = 1;
			s->env[*cur].status = f->u.ack.status;
			s->env[*cur].server_id = f->u.ack.server_id;
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
			*resend_at = now_ms() + rnd(&s->seed, 10, 40);
		} else {
			s->env[*cur].rejected = 1;
			*cur = 0;
		}
		break;
	case PROTO_PING:
		peer_pong(p, f->u.nonce);
		break;
	case PROTO_ERROR:
		peer_close(p);
		break;
	case PROTO_DELIVER:
		s->delivers++; /* nobody sends to a sender */
		break;
	default:
		break;
	}
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct peer *p = calloc(1, sizeof(*p));
	uint64_t cur = 0;   /* the outstanding client id; 0: none */
	int64_t resend = 0; /* when to (re)transmit it; 0: it is on the wire */

	if (!p)
		abort();
	p->fd = -1;
	while (!atomic_load(&fx.abort_senders) && (cur || !atomic_load(&fx.stop_senders))) {
		int r;

		if (p->fd < 0) {
			if (peer_open(p, s->id, s->secret)) {
				sleep_ms(rnd(&s->seed, 5, 25));
				continue;
			}
			s->connects++;
			if (cur)
				resend = now_ms(); /* retransmit what was not answered */
		}
		if (!cur) {
			cur = ++s->last;
			if (cur >= s->cap) {
				s->cap = s->cap ? 2 * s->cap : 4096;
				s->env = xrealloc(s->env, s->cap * sizeof(*s->env));
				memset(s->env + cur, 0, (s->cap - cur) * sizeof(*s->env));
			}
			s->env[cur].to = (uint8_t)rnd(&s->seed, 0, NRUSERS - 1);
			resend = now_ms();
		}
		if (resend && now_ms() >= resend) {
			resend = 0;
			if (send_env(s, p, cur))
				continue;
		}
		r = peer_read(p, resend ? (int)(resend > now_ms() ? resend - now_ms() : 0) : 50);
		if (r == 1)
			sender_frame(s, p, &cur, &resend);
	}
	s->bad_frames += (unsigned)p->bad;
	peer_close(p);
	free(p);
	atomic_store(&s->done, 1);
	return NULL;
}

/* ---- receivers ---- */

static void record(struct receiver *r, const struct proto_deliver *d, int in_drain)
{
	struct seen *e;
	char text[64];

	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 4096;
		r->seen = xrealloc(r->seen, r->cap * sizeof(*r->seen));
	}
	e = &r->seen[r->n++];
	memset(e, 0, sizeof(*e));
	e->sender_device = d->sender_device;
	e->client_id = d->client_id;
	e->server_id = d->server_id;
	e->in_drain = in_drain;
	e->sender = -1;
	for (int i = 0; i < NSENDERS; i++)
		if ((uint64_t)fx.snd[i].id == d->sender_device)
			e->sender = i;
	if (e->sender < 0)
		return;
	payload_text(text, sizeof(text), e->sender, d->client_id, r->user);
	e->valid = d->payload.len == strlen(text) &&
		   memcmp(d->payload.p, text, d->payload.len) == 0 &&
		   d->sender_user.len == strlen(fx.snd[e->sender].user) &&
		   memcmp(d->sender_user.p, fx.snd[e->sender].user, d->sender_user.len) == 0;
}

/* Start an online or offline phase of @r at @now. */
static void next_phase(struct receiver *r, struct peer *p, int *online, int *lazy, int64_t now,
		       int64_t *end)
{
	if (!r->always_online)
		*online = !*online || rnd(&r->seed, 0, 3) == 0;
	if (*online) {
		*lazy = rnd(&r->seed, 0, 3) == 0;
		r->lazy_phases += (unsigned)*lazy;
		*end = now + rnd(&r->seed, 300, 1500);
	} else {
		/* Gone without a word: what was delivered and not acked is stored. */
		peer_close(p);
		r->offline_phases++;
		*end = now + rnd(&r->seed, 100, 800);
	}
}

static void *receiver_main(void *arg)
{
	struct receiver *r = arg;
	struct peer *p = calloc(1, sizeof(*p));
	uint64_t held[PROTO_MAX_IDS]; /* acks a lazy receiver has not sent yet */
	size_t nheld = 0;
	int64_t flush_at = 0, end = now_ms() + rnd(&r->seed, 300, 1500);
	int online = 1, lazy = 0;

	if (!p)
		abort();
	p->fd = -1;
	while (!atomic_load(&fx.stop_receivers)) {
		int64_t now = now_ms();
		int rc;

		if (now >= end)
			next_phase(r, p, &online, &lazy, now, &end);
		if (!online) {
			nheld = 0;
			sleep_ms(10);
			continue;
		}
		if (p->fd < 0) {
			nheld = 0;
			if (peer_open(p, r->id, r->secret)) {
				sleep_ms(rnd(&r->seed, 5, 25));
				continue;
			}
			r->connects++;
		}
		if (nheld && (now >= flush_at || nheld == PROTO_MAX_IDS)) {
			peer_ack(p, held, nheld);
			nheld = 0;
			continue;
		}
		rc = peer_read(p, 20);
		if (rc < 1)
			continue;
		switch (p->f.type) {
		case PROTO_DELIVER:
			record(r, &p->f.u.deliver, 0);
			if (!lazy) {
				peer_ack(p, &p->f.u.deliver.server_id, 1);
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
			peer_pong(p, p->f.u.nonce);
			break;
		case PROTO_ERROR:
			peer_close(p);
			break;
		default:
			break;
		}
	}
	r->bad_frames += (unsigned)p->bad;
	peer_close(p);
	free(p);
	return NULL;
}

/*
 * Connect @r once more and read until QUEUE_EMPTY, acking everything.
 * Returns 0 when the device caught up, -1 if it could not within the time.
 */
static int drain(struct receiver *r)
{
	struct peer *p = calloc(1, sizeof(*p));
	int64_t deadline = now_ms() + DRAIN_TIMEOUT_MS;
	int rc = -1;

	if (!p)
		abort();
	p->fd = -1;
	while (rc && now_ms() < deadline) {
		if (p->fd < 0 && peer_open(p, r->id, r->secret)) {
			sleep_ms(50);
			continue;
		}
		if (peer_read(p, 200) < 1)
			continue;
		switch (p->f.type) {
		case PROTO_DELIVER:
			record(r, &p->f.u.deliver, 1);
			peer_ack(p, &p->f.u.deliver.server_id, 1);
			break;
		case PROTO_QUEUE_EMPTY:
			r->drained += (unsigned)p->f.u.drained;
			rc = 0;
			break;
		case PROTO_PING:
			peer_pong(p, p->f.u.nonce);
			break;
		default:
			break;
		}
	}
	r->bad_frames += (unsigned)p->bad;
	peer_close(p);
	free(p);
	return rc;
}

/* ---- the daemon ---- */

/*
 * Copy the daemon binary under test to the scratch directory and test that
 * copy: every restart then runs the same build, even if the tree is rebuilt
 * while the test runs.
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

static void start_daemon(void)
{
	char *cfg, *path, extra[512];
	int admin = th_free_port();

	fx.conninfo = th_db_new("crash");
	fx.port = th_free_port();
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = \"\"\nworkers = 2\n"
		 "ack_timeout = %d\ndrain_window = %d\n",
		 fx.port, ACK_TIMEOUT_MS, DRAIN_WINDOW);
	cfg = th_ferryd_config_ex(fx.conninfo, admin, TOKEN, extra);
	path = th_write_file("crash.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		fail_msg("ferryd migrate failed");
	th_ferryd_start(&fx.d, cfg, admin);
	unlink(path);
	free(path);
	free(cfg);
}

/* Print the daemon's log lines that name @server_id, and its warnings. */
static void show_log(const uint64_t *server_ids, size_t n)
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

/* Copy the daemon's log (every run of it) to @path, which outlives the
 * test's scratch directory. */
static void keep_log(const char *path)
{
	char *log = th_read_file(fx.d.log_path);
	FILE *f = fopen(path, "w");

	if (!f || fputs(log, f) < 0 || fclose(f))
		fprintf(stderr, "crash: cannot write the log to '%s': %s\n", path, strerror(errno));
	else
		printf("crash: ferryd log kept in %s\n", path);
	free(log);
}

/* ---- scoring ---- */

struct score {
	uint64_t sent, acked, acked_stored, tx, delivered, dup, lost, unexpected, reordered;
	uint64_t drain_delivered;
	uint64_t lost_ids[MAX_EXAMPLES];
	size_t nlost_ids;
};

static void score_receiver(struct score *sc, const struct receiver *r, uint16_t *count[NSENDERS])
{
	uint64_t first_max[NSENDERS] = { 0 };
	unsigned bad_shown = 0, order_shown = 0;

	for (int s = 0; s < NSENDERS; s++)
		memset(count[s], 0, (fx.snd[s].last + 1) * sizeof(uint16_t));
	for (size_t i = 0; i < r->n; i++) {
		const struct seen *e = &r->seen[i];
		const struct sender *s = e->sender >= 0 ? &fx.snd[e->sender] : NULL;

		if (!s || !e->valid || e->client_id < 1 || e->client_id > s->last ||
		    !s->env[e->client_id].tx || s->env[e->client_id].to != r->user) {
			sc->unexpected++;
			if (bad_shown++ < MAX_EXAMPLES)
				fprintf(stderr,
					"unexpected: device %lld got server_id=%llu from device "
					"%llu "
					"client_id=%llu (sender known=%d, payload ok=%d)\n",
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
		if (e->client_id < first_max[e->sender]) {
			sc->reordered++;
			if (order_shown++ < MAX_EXAMPLES)
				fprintf(stderr,
					"reordered: device %lld got %s client_id=%llu "
					"(server_id=%llu) "
					"first after client_id=%llu\n",
					(long long)r->id, s->user, (unsigned long long)e->client_id,
					(unsigned long long)e->server_id,
					(unsigned long long)first_max[e->sender]);
		} else {
			first_max[e->sender] = e->client_id;
		}
	}
	for (int si = 0; si < NSENDERS; si++) {
		const struct sender *s = &fx.snd[si];

		for (uint64_t c = 1; c <= s->last; c++) {
			if (!s->env[c].acked || s->env[c].to != r->user || count[si][c])
				continue;
			sc->lost++;
			if (sc->nlost_ids < MAX_EXAMPLES) {
				sc->lost_ids[sc->nlost_ids++] = s->env[c].server_id;
				fprintf(stderr,
					"lost: %s (device %lld) client_id=%llu server_id=%llu ACK "
					"%s, "
					"never delivered to device %lld of crr%d\n",
					s->user, (long long)s->id, (unsigned long long)c,
					(unsigned long long)s->env[c].server_id,
					s->env[c].status == PROTO_ACK_DELIVERED ? "delivered"
										: "stored",
					(long long)r->id, r->user);
			}
		}
	}
}

static void score(struct score *sc)
{
	uint16_t *count[NSENDERS];

	memset(sc, 0, sizeof(*sc));
	for (int si = 0; si < NSENDERS; si++) {
		const struct sender *s = &fx.snd[si];

		count[si] = calloc(s->last + 1, sizeof(uint16_t));
		assert_non_null(count[si]);
		for (uint64_t c = 1; c <= s->last; c++) {
			sc->sent += s->env[c].tx > 0;
			sc->tx += s->env[c].tx;
			sc->acked += s->env[c].acked;
			sc->acked_stored += s->env[c].acked && s->env[c].status == PROTO_ACK_STORED;
		}
	}
	for (int ri = 0; ri < NRECEIVERS; ri++)
		score_receiver(sc, &fx.rcv[ri], count);
	for (int si = 0; si < NSENDERS; si++)
		free(count[si]);
}

/* ---- the test ---- */

static unsigned env_uint(const char *name, unsigned dflt)
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

static void make_devices(unsigned seed)
{
	static const int rusers[NRECEIVERS] = { 0, 0, 1, 1, 2, 3 };

	for (int i = 0; i < NSENDERS; i++) {
		struct sender *s = &fx.snd[i];

		s->idx = i;
		s->seed = seed + 101 * (unsigned)i;
		snprintf(s->user, sizeof(s->user), "crs%d", i);
		th_device_create(&fx.d, TOKEN, s->user, &s->id, s->secret);
	}
	for (int i = 0; i < NRECEIVERS; i++) {
		struct receiver *r = &fx.rcv[i];
		char user[16];

		r->idx = i;
		r->user = rusers[i];
		r->seed = seed + 1009 * (unsigned)(i + 1);
		/* One device of crr0 and crr2's only device stay online. */
		r->always_online = i == 0 || i == 4;
		snprintf(user, sizeof(user), "crr%d", r->user);
		th_device_create(&fx.d, TOKEN, user, &r->id, r->secret);
	}
}

/* Kill the daemon @cycles times at random moments of traffic. */
static unsigned kill_loop(unsigned cycles, unsigned *seed)
{
	unsigned kills = 0;

	for (unsigned i = 0; i < cycles; i++) {
		int st;

		sleep_ms(rnd(seed, 100, 600));
		st = th_ferryd_kill(&fx.d);
		if (st != 128 + SIGKILL) {
			show_log(NULL, 0);
			fail_msg("ferryd had exited by itself (status %d) before kill %u", st,
				 i + 1);
		}
		kills++;
		if (rnd(seed, 0, 1))
			sleep_ms(rnd(seed, 0, 200)); /* down for a while */
		th_ferryd_restart(&fx.d);
	}
	return kills;
}

/* Restart the test cluster (FERRY_TEST_PGDATA) @n times under traffic,
 * ferryd staying up. Returns how many restarts were done. */
static unsigned pg_restart_loop(unsigned n, unsigned *seed)
{
	const char *data = getenv("FERRY_TEST_PGDATA");
	char script[512], out[512];
	pid_t ferryd = fx.d.pid;

	if (!data || n == 0)
		return 0;
	snprintf(out, sizeof(out), "%s/crash-pg-restart.log", getenv("FERRY_TEST_TMPDIR"));
	for (unsigned i = 0; i < n; i++) {
		const char *mode = i % 2 ? "immediate" : "fast";
		const char *argv[] = { "/bin/sh", "-c", script, NULL };
		int st;

		sleep_ms(rnd(seed, 200, 600));
		/* pg_ctl restart keeps the options the cluster was started with. */
		snprintf(script, sizeof(script),
			 ". scripts/pg.sh && pg_as \"$(pg_bindir)/pg_ctl\" -D '%s' -l "
			 "'%s/server.log' "
			 "-m %s -w -t 60 restart >/dev/null",
			 data, data, mode);
		st = th_wait(th_spawn(argv, out));
		if (st != 0) {
			char *log = th_read_file(out);

			fail_msg("restarting PostgreSQL (%s) failed with %d: %s", mode, st, log);
		}
		if (fx.d.pid != ferryd || kill(ferryd, 0) != 0) {
			show_log(NULL, 0);
			fail_msg("ferryd did not survive PostgreSQL restart %u (%s)", i + 1, mode);
		}
	}
	return n;
}

static void stop_senders(void)
{
	int64_t deadline = now_ms() + SENDER_FINISH_MS;
	int all;

	atomic_store(&fx.stop_senders, 1);
	do {
		all = 1;
		for (int i = 0; i < NSENDERS; i++)
			all &= atomic_load(&fx.snd[i].done);
		if (!all)
			sleep_ms(20);
	} while (!all && now_ms() < deadline);
	if (!all)
		fprintf(stderr, "crash: a sender's last SEND was not answered within %d s\n",
			SENDER_FINISH_MS / 1000);
	atomic_store(&fx.abort_senders, 1);
	for (int i = 0; i < NSENDERS; i++)
		pthread_join(fx.snd[i].thread, NULL);
}

static void test_crash(void **state)
{
	unsigned cycles = env_uint("FERRY_CRASH_CYCLES", 5);
	unsigned pg_restarts = env_uint("FERRY_CRASH_PG_RESTARTS", 2);
	unsigned seed = env_uint("FERRY_CRASH_SEED", (unsigned)time(NULL) ^ (unsigned)getpid());
	unsigned kill_seed = seed, kills, nacks = 0, stray = 0, sdeliv = 0, bad = 0, qe = 0;
	unsigned drained = 0, undrained = 0, lazy = 0, offline = 0;
	int64_t t0 = now_ms();
	struct score sc;

	printf("crash: seed=%u cycles=%u\n", seed, cycles);
	fflush(stdout);
	pin_daemon();
	start_daemon();
	make_devices(seed);
	for (int i = 0; i < NRECEIVERS; i++)
		assert_int_equal(pthread_create(&fx.rcv[i].thread, NULL, receiver_main, &fx.rcv[i]),
				 0);
	for (int i = 0; i < NSENDERS; i++)
		assert_int_equal(pthread_create(&fx.snd[i].thread, NULL, sender_main, &fx.snd[i]),
				 0);

	kills = kill_loop(cycles, &kill_seed);
	pg_restarts = pg_restart_loop(pg_restarts, &kill_seed);
	sleep_ms(300); /* traffic after the last restart too */
	stop_senders();
	atomic_store(&fx.stop_receivers, 1);
	for (int i = 0; i < NRECEIVERS; i++)
		pthread_join(fx.rcv[i].thread, NULL);
	if (fx.d.pid <= 0)
		th_ferryd_restart(&fx.d);
	for (int i = 0; i < NRECEIVERS; i++)
		undrained += drain(&fx.rcv[i]) != 0;

	score(&sc);
	for (int i = 0; i < NSENDERS; i++) {
		nacks += fx.snd[i].nacks;
		stray += fx.snd[i].stray_acks;
		sdeliv += fx.snd[i].delivers;
		bad += fx.snd[i].bad_frames;
	}
	for (int i = 0; i < NRECEIVERS; i++) {
		qe += fx.rcv[i].queue_empty;
		drained += fx.rcv[i].drained;
		lazy += fx.rcv[i].lazy_phases;
		offline += fx.rcv[i].offline_phases;
		bad += fx.rcv[i].bad_frames;
	}
	printf("crash: cycles=%u kills=%u pg_restarts=%u sent=%llu acked=%llu acked_stored=%llu "
	       "transmissions=%llu nack_retry=%u delivered=%llu dup=%llu from_store=%u "
	       "lost=%llu unexpected=%llu reordered=%llu time=%.1fs\n",
	       cycles, kills, pg_restarts, (unsigned long long)sc.sent,
	       (unsigned long long)sc.acked, (unsigned long long)sc.acked_stored,
	       (unsigned long long)sc.tx, nacks, (unsigned long long)sc.delivered,
	       (unsigned long long)sc.dup, drained, (unsigned long long)sc.lost,
	       (unsigned long long)sc.unexpected + sdeliv, (unsigned long long)sc.reordered,
	       (double)(now_ms() - t0) / 1000.0);
	printf("crash: receivers: offline_phases=%u lazy_phases=%u queue_empty=%u "
	       "final_drain_delivered=%llu stray_answers=%u bad_frames=%u\n",
	       offline, lazy, qe, (unsigned long long)sc.drain_delivered, stray, bad);
	fflush(stdout);

	if (sc.lost || sc.unexpected || sdeliv || sc.reordered || undrained || stray || bad)
		show_log(sc.lost_ids, sc.nlost_ids);
	if (getenv("FERRY_CRASH_LOG"))
		keep_log(getenv("FERRY_CRASH_LOG"));
	assert_int_equal(sc.lost, 0);
	assert_int_equal(sc.unexpected + sdeliv, 0);
	assert_int_equal(sc.reordered, 0);
	assert_int_equal(undrained, 0);
	assert_int_equal(stray, 0);
	assert_int_equal(bad, 0);
	/* The run proved something: envelopes were acknowledged, some of them
	 * because they were stored, and stored ones were delivered later. */
	assert_true(sc.acked > 0);
	assert_true(sc.acked_stored > 0);
	assert_true(drained > 0);
}

static int teardown(void **state)
{
	int status = fx.d.pid > 0 ? th_ferryd_stop(&fx.d, SIGTERM) : 0;

	for (int i = 0; i < NSENDERS; i++)
		free(fx.snd[i].env);
	for (int i = 0; i < NRECEIVERS; i++)
		free(fx.rcv[i].seen);
	free(fx.conninfo);
	if (*fx.ferryd)
		unlink(fx.ferryd);
	return status == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_crash, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
