/*
 * bench_gen.c - ferry-bench's traffic generator: device connections driven
 * by one epoll loop and the codec (see tools/bench_gen_int.h for the rules).
 *
 * Why not libferry: libferry drives one connection per ferry_client_run()
 * call, so ferry-bench gave each device a thread; with a hundred pairs on
 * two cores the generator, not ferryd, was then the bottleneck. Here one
 * thread reads every socket that is ready in one epoll_wait(), decodes the
 * frames in place (proto_decode points into the read buffer), answers what
 * the protocol requires, lets the scenario queue its SENDs, and writes each
 * connection's queue once at the end of the turn.
 *
 * Buffers: one read buffer per gen (GEN_READ_BUF); a connection keeps bytes
 * only for a partial frame (in) or for frames its socket did not take yet
 * (out), so that 20,000 idle connections cost the generator little.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "tools/bench_gen_int.h"
#include "common/banned.h"

#define GEN_READ_BUF (256u << 10)
#define GEN_EVENTS 512
#define GEN_MAX_FRAME PROTO_DEFAULT_MAX_FRAME
#define GEN_CONNECT_TRIES 5
#define GEN_CONNECT_MS 120000

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/*
 * The first client id of a connection: microseconds since the epoch. ferryd
 * answers a SEND whose (device, client id) it has seen before as a
 * retransmission, without delivering it again, so devices reused from an
 * earlier run (--creds) must not start over at 1; no sender makes more than
 * one SEND a microsecond, so a later run always starts past an earlier one.
 */
static uint64_t realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int gen_init(struct gen *g, const char *host, const char *port, unsigned sources,
	     const struct gen_ops *ops, void *arg)
{
	unsigned long p;
	char *end;

	memset(g, 0, sizeof(*g));
	g->ep = -1;
	g->server.sin_family = AF_INET;
	if (!strcmp(host, "localhost"))
		host = "127.0.0.1";
	errno = 0;
	p = strtoul(port, &end, 10);
	if (inet_pton(AF_INET, host, &g->server.sin_addr) != 1 || errno || *end || !p ||
	    p > 65535) {
		fprintf(stderr, "ferry-bench: scenarios need an IPv4 --server, not '%s:%s'\n", host,
			port);
		return -1;
	}
	g->server.sin_port = htons((uint16_t)p);
	g->sources = sources < 1 ? 1 : sources > 254 ? 254 : sources;
	/* Only a loopback server can be reached from 127.0.0.x. */
	if ((ntohl(g->server.sin_addr.s_addr) >> 24) != 127)
		g->sources = 0;
	g->ops = ops;
	g->arg = arg;
	g->rbuf = malloc(GEN_READ_BUF);
	g->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!g->rbuf || g->ep < 0) {
		perror("ferry-bench: generator");
		gen_release(g);
		return -1;
	}
	return 0;
}

void gen_release(struct gen *g)
{
	if (g->ep >= 0)
		close(g->ep);
	g->ep = -1;
	free(g->rbuf);
	free(g->dirty);
	g->rbuf = NULL;
	g->dirty = NULL;
}

void gen_conn_init(struct gen *g, struct gen_conn *c, const struct fb_cred *cred, uint32_t index,
		   void *arg)
{
	memset(c, 0, sizeof(*c));
	c->g = g;
	c->cred = cred;
	c->arg = arg;
	c->fd = -1;
	c->index = index;
	c->next_id = realtime_us();
}

static void free_buffers(struct gen_conn *c)
{
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
	c->in_len = c->in_cap = c->out_len = c->out_off = c->out_cap = 0;
}

void gen_conn_close(struct gen_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = GEN_DOWN;
	c->want_out = 0;
	free_buffers(c);
}

/* Close @c and tell the caller. */
static void conn_lost(struct gen_conn *c, int err)
{
	uint64_t code = c->g->last_error;

	c->g->closes++;
	gen_conn_close(c);
	c->down_at = fb_now_ns();
	c->g->ops->closed(c, err, code);
}

static void mark_dirty(struct gen_conn *c)
{
	struct gen *g = c->g;

	if (c->dirty)
		return;
	if (g->ndirty == g->dirty_cap) {
		size_t cap = g->dirty_cap ? g->dirty_cap * 2 : 1024;
		struct gen_conn **d = realloc(g->dirty, cap * sizeof(*d));

		if (!d)
			ferry_panic("ferry-bench: out of memory for the write list");
		g->dirty = d;
		g->dirty_cap = cap;
	}
	g->dirty[g->ndirty++] = c;
	c->dirty = 1;
}

/* Room for @need more bytes in @c's output; -1 past GEN_MAX_OUT. */
static int out_reserve(struct gen_conn *c, size_t need)
{
	size_t cap;
	uint8_t *p;

	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + need <= c->out_cap)
		return 0;
	if (c->out_off) { /* move what is left to the front first */
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
		if (c->out_len + need <= c->out_cap)
			return 0;
	}
	cap = c->out_cap ? c->out_cap : 512;
	while (cap < c->out_len + need)
		cap *= 2;
	if (cap > GEN_MAX_OUT)
		return -1;
	p = realloc(c->out, cap);
	if (!p)
		return -1;
	c->out = p;
	c->out_cap = cap;
	return 0;
}

int gen_conn_send(struct gen_conn *c, const struct proto_frame *f)
{
	size_t need = proto_encoded_size(f), len;

	if (c->state == GEN_DOWN || !need || out_reserve(c, need))
		return -1;
	if (proto_encode(f, c->out + c->out_len, c->out_cap - c->out_len, &len) != FERRY_OK)
		return -1;
	c->out_len += len;
	c->g->frames_out++;
	mark_dirty(c);
	return 0;
}

int gen_conn_send_to(struct gen_conn *c, const char *to_user, const uint8_t *payload, size_t len,
		     uint64_t *id)
{
	struct proto_frame f;

	f.type = PROTO_SEND;
	f.u.send.client_id = c->next_id;
	f.u.send.to_user.p = (const uint8_t *)to_user;
	f.u.send.to_user.len = strlen(to_user);
	f.u.send.ttl = 0;
	f.u.send.payload.p = payload;
	f.u.send.payload.len = len;
	f.u.send.ntargets = 0;
	if (gen_conn_send(c, &f))
		return -1;
	*id = c->next_id++;
	return 0;
}

static int set_events(struct gen_conn *c, int op, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };

	return epoll_ctl(c->g->ep, op, c->fd, &e);
}

int gen_conn_connect(struct gen_conn *c)
{
	struct gen *g = c->g;
	int one = 1, fd, rc;

	if (c->state != GEN_DOWN) {
		errno = EISCONN;
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (g->sources) {
		struct sockaddr_in src = { .sin_family = AF_INET };

		src.sin_addr.s_addr = htonl(0x7f000001u + c->index % g->sources);
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src))) {
			rc = errno;
			close(fd);
			errno = rc;
			return -1;
		}
	}
	rc = connect(fd, (struct sockaddr *)&g->server, sizeof(g->server));
	if (rc && errno != EINPROGRESS) {
		rc = errno;
		close(fd);
		errno = rc;
		return -1;
	}
	c->fd = fd;
	c->state = GEN_CONNECTING;
	if (set_events(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT)) {
		rc = errno;
		gen_conn_close(c);
		errno = rc;
		return -1;
	}
	g->connects++;
	c->tries++;
	return 0;
}

/* The socket of @c (connecting) is writable: connected, or failed. */
static void connected(struct gen_conn *c)
{
	struct proto_frame f;
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
		c->g->connect_failures++;
		c->g->last_error = 0;
		conn_lost(c, err ? err : errno);
		return;
	}
	c->state = GEN_HELLO;
	f.type = PROTO_HELLO;
	f.u.hello.version = PROTO_VERSION;
	f.u.hello.device_id = c->cred->device_id;
	f.u.hello.secret.p = (const uint8_t *)c->cred->secret;
	f.u.hello.secret.len = strlen(c->cred->secret);
	if (gen_conn_send(c, &f) || set_events(c, EPOLL_CTL_MOD, EPOLLIN)) {
		c->g->last_error = 0;
		conn_lost(c, ENOMEM);
	}
}

static void flush_acks(struct gen_conn *c)
{
	struct gen *g = c->g;
	struct proto_frame *f = &g->frame;

	if (!g->nack)
		return;
	f->type = PROTO_DELIVER_ACK;
	f->u.ids.count = g->nack;
	memcpy(f->u.ids.ids, g->ackids, g->nack * sizeof(g->ackids[0]));
	g->nack = 0;
	if (gen_conn_send(c, f))
		ferry_panic("ferry-bench: a DELIVER_ACK does not fit");
}

/* One decoded frame of @c. 0, or -1 when @c is to close. */
static int on_frame(struct gen_conn *c, uint64_t now)
{
	struct gen *g = c->g;
	struct proto_frame *f = &g->frame;
	struct proto_frame pong;

	g->frames_in++;
	switch (f->type) {
	case PROTO_WELCOME:
		if (c->state != GEN_HELLO)
			return -1;
		c->state = GEN_READY;
		c->welcomes++;
		g->welcomes++;
		g->ops->ready(c, &f->u.welcome);
		return 0;
	case PROTO_PING:
		pong.type = PROTO_PONG;
		pong.u.nonce = f->u.nonce;
		return gen_conn_send(c, &pong);
	case PROTO_DELIVER:
	case PROTO_DELIVER_RECEIPT: {
		uint64_t id = f->type == PROTO_DELIVER ? f->u.deliver.server_id : f->u.receipt.id;

		g->ops->frame(c, f, now);
		if (c->state == GEN_DOWN)
			return -1;
		g->ackids[g->nack++] = id;
		if (g->nack == PROTO_MAX_IDS)
			flush_acks(c);
		return 0;
	}
	case PROTO_ERROR:
		g->last_error = f->u.error.code;
		g->ops->frame(c, f, now);
		return -1;
	default:
		g->ops->frame(c, f, now);
		return 0;
	}
}

/* Decode and handle every whole frame of @p; the bytes consumed, or -1. */
static long decode_all(struct gen_conn *c, const uint8_t *p, size_t len, uint64_t now)
{
	size_t used = 0, n;

	while (used < len) {
		if (proto_decode(p + used, len - used, GEN_MAX_FRAME, &c->g->frame, &n) != FERRY_OK)
			return -1;
		if (!n)
			break;
		used += n;
		if (on_frame(c, now))
			return -1;
	}
	return (long)used;
}

/* Keep @len bytes at @p (a partial frame) in @c->in. */
static int keep_partial(struct gen_conn *c, const uint8_t *p, size_t len)
{
	if (len > c->in_cap) {
		size_t cap = c->in_cap ? c->in_cap : 256;
		uint8_t *q;

		while (cap < len)
			cap *= 2;
		q = malloc(cap);
		if (!q)
			return -1;
		free(c->in);
		c->in = q;
		c->in_cap = cap;
	}
	memmove(c->in, p, len);
	c->in_len = len;
	return 0;
}

static void readable(struct gen_conn *c, uint64_t now)
{
	struct gen *g = c->g;
	const uint8_t *p;
	size_t len;
	ssize_t n;
	long used;

	n = read(c->fd, g->rbuf, GEN_READ_BUF);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_lost(c, n < 0 ? errno : 0);
		return;
	}
	if (c->in_len) { /* a partial frame waits: append, decode from there */
		if (c->in_len + (size_t)n > c->in_cap) {
			size_t cap = c->in_cap;
			uint8_t *q;

			while (cap < c->in_len + (size_t)n)
				cap *= 2;
			q = realloc(c->in, cap);
			if (!q) {
				conn_lost(c, ENOMEM);
				return;
			}
			c->in = q;
			c->in_cap = cap;
		}
		memcpy(c->in + c->in_len, g->rbuf, (size_t)n);
		c->in_len += (size_t)n;
		p = c->in;
		len = c->in_len;
	} else {
		p = g->rbuf;
		len = (size_t)n;
	}
	g->nack = 0;
	g->last_error = 0;
	used = decode_all(c, p, len, now);
	if (used < 0 || c->state == GEN_DOWN) {
		g->nack = 0;
		if (c->state != GEN_DOWN)
			conn_lost(c, 0);
		return;
	}
	flush_acks(c);
	if ((size_t)used < len) {
		if (keep_partial(c, p + used, len - (size_t)used))
			conn_lost(c, ENOMEM);
	} else {
		c->in_len = 0;
		if (c->in_cap > 4096) { /* a big frame passed: give its room back */
			free(c->in);
			c->in = NULL;
			c->in_cap = 0;
		}
	}
}

/* Write what @c has queued; 0, or -1 if it was closed. */
static int write_out(struct gen_conn *c)
{
	size_t left = c->out_len - c->out_off;
	ssize_t n;

	while (left) {
		n = write(c->fd, c->out + c->out_off, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			c->g->last_error = 0;
			conn_lost(c, errno);
			return -1;
		}
		c->out_off += (size_t)n;
		left -= (size_t)n;
	}
	if (!left) {
		c->out_off = c->out_len = 0;
		if (c->out_cap > 65536) {
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	}
	if (!!left != c->want_out && c->state != GEN_CONNECTING) {
		c->want_out = !!left;
		set_events(c, EPOLL_CTL_MOD, left ? EPOLLIN | EPOLLOUT : EPOLLIN);
	}
	return 0;
}

void gen_flush(struct gen *g)
{
	for (size_t i = 0; i < g->ndirty; i++) {
		struct gen_conn *c = g->dirty[i];

		c->dirty = 0;
		if (c->state != GEN_DOWN && c->state != GEN_CONNECTING && c->out_len > c->out_off)
			write_out(c);
	}
	g->ndirty = 0;
}

int gen_run(struct gen *g, int timeout_ms)
{
	struct epoll_event ev[GEN_EVENTS];
	uint64_t now;
	int n;

	n = epoll_wait(g->ep, ev, GEN_EVENTS, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -1;
	now = fb_now_ns();
	for (int i = 0; i < n; i++) {
		struct gen_conn *c = ev[i].data.ptr;

		if (c->state == GEN_DOWN)
			continue; /* closed earlier in this turn */
		if (c->state == GEN_CONNECTING) {
			if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
				connected(c);
			continue;
		}
		if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			readable(c, now);
		if (c->state != GEN_DOWN && (ev[i].events & EPOLLOUT))
			write_out(c);
	}
	gen_flush(g);
	return n;
}

size_t gen_connect_all(struct gen *g, struct gen_conn *c, size_t n, size_t inflight)
{
	uint64_t deadline = fb_now_ns() + GEN_CONNECT_MS * 1000000ull;
	size_t ready = 0;

	for (size_t i = 0; i < n; i++)
		c[i].tries = 0;
	while (!fb_interrupted && fb_now_ns() < deadline) {
		size_t busy = 0, failed = 0;
		uint64_t now = fb_now_ns();

		ready = 0;
		for (size_t i = 0; i < n; i++) {
			ready += c[i].state == GEN_READY;
			busy += c[i].state == GEN_CONNECTING || c[i].state == GEN_HELLO;
		}
		for (size_t i = 0; i < n && busy < inflight; i++) {
			if (c[i].state != GEN_DOWN)
				continue;
			if (c[i].tries >= GEN_CONNECT_TRIES) {
				failed++;
				continue;
			}
			if (c[i].tries && now - c[i].down_at < 100000000ull)
				continue;
			if (gen_conn_connect(&c[i]) == 0) {
				busy++;
			} else {
				c[i].down_at = now;
				c[i].tries++;
			}
		}
		if (ready == n || (!busy && ready + failed == n))
			break;
		if (gen_run(g, 1) < 0)
			break;
	}
	return ready;
}
