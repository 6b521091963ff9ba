/*
 * proto.c - the device protocol codec: docs/protocol.md in code.
 *
 * Decoding is two steps. First the length prefix, a varint of at most
 * PROTO_MAX_LENGTH_PREFIX bytes read straight off the caller's buffer: an
 * incomplete prefix or body means "need more" (FERRY_OK, *consumed == 0), and
 * a length over max_frame is refused (FERRY_ETOOBIG) as soon as the prefix is
 * complete, before the body is waited for, so a peer can never make its
 * connection buffer more than max_frame. A well-formed varint longer than
 * that (2^32 - 1 takes 5 bytes) says 2^28 or more: too large as well, not
 * malformed, so the peer learns why. Then the body, through a reader
 * (struct rd) bounded by the frame's end, with a sticky error flag: a read
 * past the end or of a malformed varint sets the flag, moves the reader to the
 * end and yields 0, so each per-type decoder reads its fields straight through
 * and proto_decode() checks once at the end that the flag is clear and the
 * reader stopped exactly at the frame's end (no short, no trailing bodies).
 * Counts are checked before the loops they drive. One-byte varints, by far the
 * most common, take an inlined fast path; the frame type is one switch per
 * frame, never a per-byte dispatch.
 *
 * Encoding is two steps too: body_size() checks @f against the rules the
 * decoder enforces and computes the exact size (0 if @f is invalid), then the
 * writer puts the bytes without bounds checks, the size being known to fit.
 * proto_encoded_size() and proto_encode() therefore agree by construction; the
 * writer's end is still checked against the size, as an invariant.
 *
 * Invariants:
 * - no I/O, no allocation, no global state: callable from any thread;
 * - the decoder reads only buf[0..len) and writes only *f and *consumed; byte
 *   strings in a decoded frame point into buf (borrowed, like buf itself);
 * - a byte-string length is compared with what is left as a uint64_t, so a
 *   length near 2^64 cannot wrap a size_t, on 32- or 64-bit alike;
 * - what the encoder writes, the decoder accepts back field for field (given
 *   a max_frame as large as the frame), and what the decoder accepts, the
 *   encoder writes back byte for byte: both sides use minimal varints only.
 * - field values the spec leaves open (HELLO's version, NACK reasons, ERROR
 *   codes, ids in lists) are passed through: refusing them is the caller's
 *   decision, so a newer peer's value is not a framing error.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "gateway/proto.h"
#include "common/banned.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The largest length a PROTO_MAX_LENGTH_PREFIX-byte varint holds: 2^28 - 1. */
#define MAX_LENGTH ((UINT64_C(1) << (7 * PROTO_MAX_LENGTH_PREFIX)) - 1)

/* ---- names ---- */

static const char *const type_names[] = {
	[PROTO_HELLO] = "hello",
	[PROTO_WELCOME] = "welcome",
	[PROTO_SEND] = "send",
	[PROTO_ACK] = "ack",
	[PROTO_NACK] = "nack",
	[PROTO_DELIVER] = "deliver",
	[PROTO_DELIVER_ACK] = "deliver_ack",
	[PROTO_RECEIPT] = "receipt",
	[PROTO_PING] = "ping",
	[PROTO_PONG] = "pong",
	[PROTO_ERROR] = "error",
	[PROTO_RECONNECT] = "reconnect",
	[PROTO_QUEUE_EMPTY] = "queue_empty",
	[PROTO_DELIVER_RECEIPT] = "deliver_receipt",
};

static const char *const error_names[] = {
	[PROTO_ERR_BAD_FRAME] = "bad_frame",
	[PROTO_ERR_UNSUPPORTED_VERSION] = "unsupported_version",
	[PROTO_ERR_AUTH_FAILED] = "auth_failed",
	[PROTO_ERR_REPLACED] = "replaced",
	[PROTO_ERR_TOO_LARGE] = "too_large",
	[PROTO_ERR_TIMEOUT] = "timeout",
	[PROTO_ERR_SHUTTING_DOWN] = "shutting_down",
	[PROTO_ERR_DEVICE_DELETED] = "device_deleted",
	[PROTO_ERR_INTERNAL] = "internal",
	[PROTO_ERR_NOT_IMPLEMENTED] = "not_implemented",
	[PROTO_ERR_OVERLOADED] = "overloaded",
	[PROTO_ERR_DISCONNECTED] = "disconnected",
	[PROTO_ERR_RATE_LIMITED] = "rate_limited",
};

static const char *const nack_names[] = {
	[PROTO_NACK_UNKNOWN_RECIPIENT] = "unknown_recipient",
	[PROTO_NACK_TOO_LARGE] = "too_large",
	[PROTO_NACK_QUEUE_FULL] = "queue_full",
	[PROTO_NACK_RETRY_LATER] = "retry_later",
	[PROTO_NACK_INVALID] = "invalid",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *name_of(const char *const *names, size_t n, uint64_t i)
{
	return i < n && names[i] ? names[i] : "unknown";
}

const char *proto_type_name(unsigned type)
{
	return name_of(type_names, NELEM(type_names), type);
}

const char *proto_error_name(uint64_t code)
{
	return name_of(error_names, NELEM(error_names), code);
}

const char *proto_nack_name(uint64_t reason)
{
	return name_of(nack_names, NELEM(nack_names), reason);
}

/* ---- user ids ---- */

#define BIT(c) (UINT64_C(1) << ((c)&63))
#define RANGE(lo, n) ((((UINT64_C(1) << (n)) - 1)) << ((lo)&63))

/* [A-Za-z0-9._:@+-] as a 256-bit set, indexed by byte >> 6, then byte & 63. */
static const uint64_t user_chars[4] = {
	BIT('+') | BIT('-') | BIT('.') | RANGE('0', 10) | BIT(':'),
	BIT('@') | RANGE('A', 26) | BIT('_') | RANGE('a', 26),
	0,
	0,
};

int proto_user_valid(const uint8_t *p, size_t len)
{
	uint64_t ok = 1;

	if (len < 1 || len > PROTO_MAX_USER || !p)
		return 0;
	/* No early exit: at most 64 bytes, and a branch-free body. */
	for (size_t i = 0; i < len; i++)
		ok &= user_chars[p[i] >> 6] >> (p[i] & 63);
	return (int)ok;
}

static bool user_ok(struct proto_bytes b)
{
	return proto_user_valid(b.p, b.len);
}

/* ---- varints ---- */

size_t proto_varint_size(uint64_t v)
{
	/* 7 bits per byte; v | 1 makes 0 take one byte and keeps clz defined. */
	return 1 + (size_t)(63 - __builtin_clzll(v | 1)) / 7;
}

size_t proto_varint_put(uint8_t *out, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

/* ---- decoding ---- */

/* A bounded reader with a sticky error flag (see the top of the file). */
struct rd {
	const uint8_t *p;
	const uint8_t *end;
	bool bad;
};

static uint64_t rd_fail(struct rd *r)
{
	r->bad = true;
	r->p = r->end;
	return 0;
}

/* A varint whose first byte has the high bit set, or is missing. */
static uint64_t rd_varint_slow(struct rd *r)
{
	const uint8_t *p = r->p;
	size_t avail = (size_t)(r->end - p);
	size_t n = avail < PROTO_MAX_VARINT ? avail : PROTO_MAX_VARINT;
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t b = p[i];

		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (b & 0x80)
			continue;
		/*
		 * i > 0 here, so a last byte of 0 is a non-minimal encoding;
		 * the 10th byte may only hold bit 63.
		 */
		if (b == 0 || (i == PROTO_MAX_VARINT - 1 && b > 1))
			return rd_fail(r);
		r->p = p + i + 1;
		return v;
	}
	return rd_fail(r); /* ran off the body, or 10 continuation bytes */
}

static inline uint64_t rd_varint(struct rd *r)
{
	if (LIKELY(r->p < r->end && *r->p < 0x80))
		return *r->p++;
	return rd_varint_slow(r);
}

size_t proto_varint_get(const uint8_t *p, size_t len, uint64_t *v)
{
	struct rd r = { p, p + len, false };

	*v = rd_varint(&r);
	return r.bad ? 0 : (size_t)(r.p - p);
}

static inline uint8_t rd_u8(struct rd *r)
{
	if (UNLIKELY(r->p >= r->end))
		return (uint8_t)rd_fail(r);
	return *r->p++;
}

static inline struct proto_bytes rd_bytes(struct rd *r)
{
	uint64_t n = rd_varint(r);
	struct proto_bytes b = { r->p, 0 };

	/* Compared as uint64_t: a huge n cannot wrap. */
	if (UNLIKELY(n > (uint64_t)(r->end - r->p))) {
		rd_fail(r);
		return b;
	}
	b.len = (size_t)n;
	r->p += b.len;
	return b;
}

static inline void rd_require(struct rd *r, bool cond)
{
	if (UNLIKELY(!cond))
		rd_fail(r);
}

static void dec_hello(struct rd *r, struct proto_hello *h)
{
	h->version = rd_varint(r);
	h->device_id = rd_varint(r);
	h->secret = rd_bytes(r);
	rd_require(r, h->device_id >= 1 && h->secret.len >= 1 && h->secret.len <= PROTO_MAX_SECRET);
}

static void dec_welcome(struct rd *r, struct proto_welcome *w)
{
	w->server_time = rd_varint(r);
	w->pending = rd_varint(r);
	w->max_frame = rd_varint(r);
	w->idle_timeout = rd_varint(r);
}

static void dec_send(struct rd *r, struct proto_send *s)
{
	uint64_t count;

	s->client_id = rd_varint(r);
	s->to_user = rd_bytes(r);
	s->ttl = rd_varint(r);
	count = rd_varint(r);
	if (UNLIKELY(!user_ok(s->to_user) || count > PROTO_MAX_TARGETS)) {
		rd_fail(r);
		return;
	}
	s->ntargets = (size_t)count;
	if (count == 0) {
		s->payload = rd_bytes(r);
		return;
	}
	s->payload = (struct proto_bytes){ NULL, 0 };
	for (size_t i = 0; i < s->ntargets; i++) {
		s->targets[i].device_id = rd_varint(r);
		s->targets[i].payload = rd_bytes(r);
		rd_require(r, s->targets[i].device_id >= 1);
	}
}

static void dec_ack(struct rd *r, struct proto_ack *a)
{
	a->client_id = rd_varint(r);
	a->server_id = rd_varint(r);
	a->status = rd_u8(r);
	rd_require(r, a->status == PROTO_ACK_STORED || a->status == PROTO_ACK_DELIVERED);
}

static void dec_nack(struct rd *r, struct proto_nack *n)
{
	n->client_id = rd_varint(r);
	n->reason = rd_varint(r);
	n->text = rd_bytes(r);
	rd_require(r, n->text.len <= PROTO_MAX_TEXT);
}

static void dec_deliver(struct rd *r, struct proto_deliver *d)
{
	d->server_id = rd_varint(r);
	d->sender_user = rd_bytes(r);
	d->sender_device = rd_varint(r);
	d->client_id = rd_varint(r);
	d->timestamp = rd_varint(r);
	d->payload = rd_bytes(r);
	rd_require(r, user_ok(d->sender_user));
}

/* count:varint (1 to PROTO_MAX_IDS), then count varints. */
static void dec_id_list(struct rd *r, size_t *n, uint64_t *ids)
{
	uint64_t count = rd_varint(r);

	*n = 0;
	if (UNLIKELY(count < 1 || count > PROTO_MAX_IDS)) {
		rd_fail(r);
		return;
	}
	*n = (size_t)count;
	for (size_t i = 0; i < *n; i++)
		ids[i] = rd_varint(r);
}

/* RECEIPT and DELIVER_RECEIPT. */
static void dec_receipt(struct rd *r, struct proto_receipt *m)
{
	m->id = rd_varint(r);
	m->kind = rd_u8(r);
	m->peer_user = rd_bytes(r);
	m->device = rd_varint(r);
	rd_require(r, (m->kind == PROTO_RECEIPT_DELIVERED || m->kind == PROTO_RECEIPT_READ) &&
			      user_ok(m->peer_user));
	dec_id_list(r, &m->count, m->ids);
}

static void dec_error(struct rd *r, struct proto_error *e)
{
	e->code = rd_varint(r);
	e->text = rd_bytes(r);
	rd_require(r, e->text.len <= PROTO_MAX_TEXT);
}

/*
 * The length prefix when it is not a single byte: 1 and its value and size
 * if complete, 0 if @buf ends inside it, -1 if malformed (non-minimal, or
 * not a varint), 2 if it is a well-formed varint longer than
 * PROTO_MAX_LENGTH_PREFIX bytes: a length of 2^28 or more, over any
 * max_frame, refused as too large as soon as its last byte is in (no more
 * of the frame is read, nothing is allocated for it).
 */
static int prefix_get(const uint8_t *buf, size_t len, uint64_t *v, size_t *size)
{
	size_t n = len < PROTO_MAX_VARINT ? len : PROTO_MAX_VARINT;

	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (i < PROTO_MAX_LENGTH_PREFIX)
			*v |= (uint64_t)(buf[i] & 0x7f) << (7 * i);
		if (buf[i] & 0x80) {
			if (i + 1 == PROTO_MAX_VARINT)
				return -1;
			continue;
		}
		if (i > 0 && buf[i] == 0)
			return -1;
		if (i + 1 == PROTO_MAX_VARINT && buf[i] > 1)
			return -1;
		if (i >= PROTO_MAX_LENGTH_PREFIX)
			return 2;
		*size = i + 1;
		return 1;
	}
	return 0;
}

/* Decode the body between r->p and r->end as a frame of @type. */
static bool dec_body(struct rd *r, uint8_t type, struct proto_frame *f)
{
	switch (type) {
	case PROTO_HELLO:
		dec_hello(r, &f->u.hello);
		break;
	case PROTO_WELCOME:
		dec_welcome(r, &f->u.welcome);
		break;
	case PROTO_SEND:
		dec_send(r, &f->u.send);
		break;
	case PROTO_ACK:
		dec_ack(r, &f->u.ack);
		break;
	case PROTO_NACK:
		dec_nack(r, &f->u.nack);
		break;
	case PROTO_DELIVER:
		dec_deliver(r, &f->u.deliver);
		break;
	case PROTO_DELIVER_ACK:
		dec_id_list(r, &f->u.ids.count, f->u.ids.ids);
		break;
	case PROTO_RECEIPT:
	case PROTO_DELIVER_RECEIPT:
		dec_receipt(r, &f->u.receipt);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		f->u.nonce = rd_varint(r);
		break;
	case PROTO_ERROR:
		dec_error(r, &f->u.error);
		break;
	case PROTO_RECONNECT:
		f->u.reconnect_after = rd_varint(r);
		break;
	case PROTO_QUEUE_EMPTY:
		f->u.drained = rd_varint(r);
		break;
	default:
		return false;
	}
	f->type = (enum proto_type)type;
	return !r->bad && r->p == r->end;
}

enum ferry_err proto_decode(const uint8_t *buf, size_t len, size_t max_frame, struct proto_frame *f,
			    size_t *consumed)
{
	uint64_t flen;
	size_t n;
	struct rd r;

	*consumed = 0;
	if (LIKELY(len > 0 && buf[0] < 0x80)) {
		flen = buf[0];
		n = 1;
	} else {
		int rc = prefix_get(buf, len, &flen, &n);

		if (rc == 2)
			return FERRY_ETOOBIG;
		if (rc <= 0)
			return rc < 0 ? FERRY_EPROTO : FERRY_OK;
	}
	if (UNLIKELY(flen == 0))
		return FERRY_EPROTO;
	if (UNLIKELY(flen > max_frame))
		return FERRY_ETOOBIG;
	if (flen > len - n)
		return FERRY_OK; /* need more */
	r = (struct rd){ buf + n + 1, buf + n + flen, false };
	if (UNLIKELY(!dec_body(&r, buf[n], f)))
		return FERRY_EPROTO;
	*consumed = n + (size_t)flen;
	return FERRY_OK;
}

/* ---- encoding ---- */

/* A size being summed, with a sticky "invalid" flag; cannot overflow (below). */
struct sz {
	uint64_t n;
	bool bad;
};

static inline void sz_varint(struct sz *s, uint64_t v)
{
	s->n += proto_varint_size(v);
}

/*
 * Each string is capped at MAX_LENGTH and there are at most
 * 1 + PROTO_MAX_TARGETS of them, so the sum stays far below 2^64.
 */
static inline void sz_bytes(struct sz *s, struct proto_bytes b)
{
	if (b.len > MAX_LENGTH || (!b.p && b.len)) {
		s->bad = true;
		return;
	}
	s->n += proto_varint_size(b.len) + b.len;
}

static inline void sz_require(struct sz *s, bool cond)
{
	if (!cond)
		s->bad = true;
}

static void size_send(struct sz *s, const struct proto_send *m)
{
	sz_varint(s, m->client_id);
	sz_bytes(s, m->to_user);
	sz_require(s, user_ok(m->to_user) && m->ntargets <= PROTO_MAX_TARGETS);
	sz_varint(s, m->ttl);
	if (s->bad)
		return;
	sz_varint(s, m->ntargets);
	if (m->ntargets == 0)
		sz_bytes(s, m->payload);
	for (size_t i = 0; i < m->ntargets; i++) {
		sz_varint(s, m->targets[i].device_id);
		sz_bytes(s, m->targets[i].payload);
		sz_require(s, m->targets[i].device_id >= 1);
	}
}

static void size_id_list(struct sz *s, size_t n, const uint64_t *ids)
{
	sz_require(s, n >= 1 && n <= PROTO_MAX_IDS);
	if (s->bad)
		return;
	sz_varint(s, n);
	for (size_t i = 0; i < n; i++)
		sz_varint(s, ids[i]);
}

static void size_receipt(struct sz *s, const struct proto_receipt *m)
{
	sz_varint(s, m->id);
	s->n += 1;
	sz_bytes(s, m->peer_user);
	sz_varint(s, m->device);
	sz_require(s, (m->kind == PROTO_RECEIPT_DELIVERED || m->kind == PROTO_RECEIPT_READ) &&
			      user_ok(m->peer_user));
	size_id_list(s, m->count, m->ids);
}

/* Size of type + body (the frame's length field), 0 if @f is invalid. */
static size_t body_size(const struct proto_frame *f)
{
	struct sz s = { 1, false }; /* the type byte */
	const struct proto_hello *h = &f->u.hello;
	const struct proto_welcome *w = &f->u.welcome;
	const struct proto_deliver *d = &f->u.deliver;

	switch (f->type) {
	case PROTO_HELLO:
		sz_varint(&s, h->version);
		sz_varint(&s, h->device_id);
		sz_bytes(&s, h->secret);
		sz_require(&s, h->device_id >= 1 && h->secret.len >= 1 &&
				       h->secret.len <= PROTO_MAX_SECRET);
		break;
	case PROTO_WELCOME:
		sz_varint(&s, w->server_time);
		sz_varint(&s, w->pending);
		sz_varint(&s, w->max_frame);
		sz_varint(&s, w->idle_timeout);
		break;
	case PROTO_SEND:
		size_send(&s, &f->u.send);
		break;
	case PROTO_ACK:
		sz_varint(&s, f->u.ack.client_id);
		sz_varint(&s, f->u.ack.server_id);
		s.n += 1;
		sz_require(&s, f->u.ack.status == PROTO_ACK_STORED ||
				       f->u.ack.status == PROTO_ACK_DELIVERED);
		break;
	case PROTO_NACK:
		sz_varint(&s, f->u.nack.client_id);
		sz_varint(&s, f->u.nack.reason);
		sz_bytes(&s, f->u.nack.text);
		sz_require(&s, f->u.nack.text.len <= PROTO_MAX_TEXT);
		break;
	case PROTO_DELIVER:
		sz_varint(&s, d->server_id);
		sz_bytes(&s, d->sender_user);
		sz_varint(&s, d->sender_device);
		sz_varint(&s, d->client_id);
		sz_varint(&s, d->timestamp);
		sz_bytes(&s, d->payload);
		sz_require(&s, user_ok(d->sender_user));
		break;
	case PROTO_DELIVER_ACK:
		size_id_list(&s, f->u.ids.count, f->u.ids.ids);
		break;
	case PROTO_RECEIPT:
	case PROTO_DELIVER_RECEIPT:
		size_receipt(&s, &f->u.receipt);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		sz_varint(&s, f->u.nonce);
		break;
	case PROTO_ERROR:
		sz_varint(&s, f->u.error.code);
		sz_bytes(&s, f->u.error.text);
		sz_require(&s, f->u.error.text.len <= PROTO_MAX_TEXT);
		break;
	case PROTO_RECONNECT:
		sz_varint(&s, f->u.reconnect_after);
		break;
	case PROTO_QUEUE_EMPTY:
		sz_varint(&s, f->u.drained);
		break;
	default:
		return 0;
	}
	/* A length the 4-byte prefix cannot carry: no decoder would take it. */
	if (s.bad || s.n > MAX_LENGTH)
		return 0;
	return (size_t)s.n;
}

size_t proto_encoded_size(const struct proto_frame *f)
{
	size_t body = body_size(f);

	return body ? proto_varint_size(body) + body : 0;
}

static inline uint8_t *put_varint(uint8_t *w, uint64_t v)
{
	return w + proto_varint_put(w, v);
}

static inline uint8_t *put_bytes(uint8_t *w, struct proto_bytes b)
{
	w = put_varint(w, b.len);
	if (b.len) /* b.p may be NULL when empty; memcpy(NULL) is undefined */
		memcpy(w, b.p, b.len);
	return w + b.len;
}

static uint8_t *put_send(uint8_t *w, const struct proto_send *m)
{
	w = put_varint(w, m->client_id);
	w = put_bytes(w, m->to_user);
	w = put_varint(w, m->ttl);
	w = put_varint(w, m->ntargets);
	if (m->ntargets == 0)
		return put_bytes(w, m->payload);
	for (size_t i = 0; i < m->ntargets; i++) {
		w = put_varint(w, m->targets[i].device_id);
		w = put_bytes(w, m->targets[i].payload);
	}
	return w;
}

static uint8_t *put_id_list(uint8_t *w, size_t n, const uint64_t *ids)
{
	w = put_varint(w, n);
	for (size_t i = 0; i < n; i++)
		w = put_varint(w, ids[i]);
	return w;
}

static uint8_t *put_receipt(uint8_t *w, const struct proto_receipt *m)
{
	w = put_varint(w, m->id);
	*w++ = m->kind;
	w = put_bytes(w, m->peer_user);
	w = put_varint(w, m->device);
	return put_id_list(w, m->count, m->ids);
}

/* Write @f's body at @w (validated and sized by body_size()); returns the end. */
static uint8_t *put_body(uint8_t *w, const struct proto_frame *f)
{
	const struct proto_welcome *wm = &f->u.welcome;
	const struct proto_deliver *d = &f->u.deliver;

	switch (f->type) {
	case PROTO_HELLO:
		w = put_varint(w, f->u.hello.version);
		w = put_varint(w, f->u.hello.device_id);
		return put_bytes(w, f->u.hello.secret);
	case PROTO_WELCOME:
		w = put_varint(w, wm->server_time);
		w = put_varint(w, wm->pending);
		w = put_varint(w, wm->max_frame);
		return put_varint(w, wm->idle_timeout);
	case PROTO_SEND:
		return put_send(w, &f->u.send);
	case PROTO_ACK:
		w = put_varint(w, f->u.ack.client_id);
		w = put_varint(w, f->u.ack.server_id);
		*w++ = f->u.ack.status;
		return w;
	case PROTO_NACK:
		w = put_varint(w, f->u.nack.client_id);
		w = put_varint(w, f->u.nack.reason);
		return put_bytes(w, f->u.nack.text);
	case PROTO_DELIVER:
		w = put_varint(w, d->server_id);
		w = put_bytes(w, d->sender_user);
		w = put_varint(w, d->sender_device);
		w = put_varint(w, d->client_id);
		w = put_varint(w, d->timestamp);
		return put_bytes(w, d->payload);
	case PROTO_DELIVER_ACK:
		return put_id_list(w, f->u.ids.count, f->u.ids.ids);
	case PROTO_RECEIPT:
	case PROTO_DELIVER_RECEIPT:
		return put_receipt(w, &f->u.receipt);
	case PROTO_PING:
	case PROTO_PONG:
		return put_varint(w, f->u.nonce);
	case PROTO_ERROR:
		w = put_varint(w, f->u.error.code);
		return put_bytes(w, f->u.error.text);
	case PROTO_RECONNECT:
		return put_varint(w, f->u.reconnect_after);
	case PROTO_QUEUE_EMPTY:
		return put_varint(w, f->u.drained);
	}
	ferry_panic("proto: put_body on unvalidated frame type %u", (unsigned)f->type);
}

/*
 * *len is 0 for an invalid frame, and the size needed for one that does not
 * fit in @cap.
 */
enum ferry_err proto_encode(const struct proto_frame *f, uint8_t *out, size_t cap, size_t *len)
{
	size_t body = body_size(f);
	size_t total;
	uint8_t *w;

	*len = 0;
	if (!body)
		return FERRY_EINVAL;
	total = proto_varint_size(body) + body;
	*len = total;
	if (total > cap)
		return FERRY_ETOOBIG;
	w = put_varint(out, body);
	*w++ = (uint8_t)f->type;
	w = put_body(w, f);
	if ((size_t)(w - out) != total)
		ferry_panic("proto: encoded %zu bytes of a %zu-byte %s frame", (size_t)(w - out),
			    total, proto_type_name(f->type));
	return FERRY_OK;
}
