/*
 * test_proto.c - unit tests for gateway/proto.c, the device protocol codec.
 *
 * What matters: every frame type survives encode -> decode unchanged; the wire
 * format is pinned by golden bytes computed by hand from docs/protocol.md (not
 * by the encoder); the decoder says "need more" for every proper prefix of a
 * frame, refuses an oversized length before the body arrives, and refuses
 * every malformed varint, body and field with FERRY_EPROTO; the encoder
 * refuses what the decoder would refuse. Malformed frames are built by hand
 * with the small writer below, which uses only proto_varint_put() (itself
 * pinned by golden bytes).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proto.h"
#include "common/banned.h"

#define BIG 70000

static uint8_t scratch[BIG];

/* ---- helpers ---- */

static struct proto_bytes B(const char *s) {
	return (struct proto_bytes){ (const uint8_t *)s, strlen(s) };
}

static bool
bytes_eq(struct proto_bytes a, struct proto_bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool ids_eq(size_t na, const uint64_t *a, size_t nb, const uint64_t *b)
{
	return na == nb && memcmp(a, b, na * sizeof(a[0])) == 0;
}

static bool receipt_eq(const struct proto_receipt *a, const struct proto_receipt *b)
{
	return a->id == b->id && a->kind == b->kind && bytes_eq(a->peer_user, b->peer_user) &&
	       a->device == b->device && ids_eq(a->count, a->ids, b->count, b->ids);
}

static bool send_eq(const struct proto_send *a, const struct proto_send *b)
{
	if (a->client_id != b->client_id || !bytes_eq(a->to_user, b->to_user) || a->ttl != b->ttl ||
	    a->ntargets != b->ntargets)
		return false;
	if (a->ntargets == 0)
		return bytes_eq(a->payload, b->payload);
	for (size_t i = 0; i < a->ntargets; i++)
		if (a->targets[i].device_id != b->targets[i].device_id ||
		    !bytes_eq(a->targets[i].payload, b->targets[i].payload))
			return false;
	return true;
}

static bool frame_eq(const struct proto_frame *a, const struct proto_frame *b)
{
	const struct proto_deliver *da = &a->u.deliver, *db = &b->u.deliver;

	if (a->type != b->type)
		return false;
	switch (a->type) {
	case PROTO_HELLO:
		return a->u.hello.version == b->u.hello.version &&
		       a->u.hello.device_id == b->u.hello.device_id &&
		       bytes_eq(a->u.hello.secret, b->u.hello.secret);
	case PROTO_WELCOME:
		return !memcmp(&a->u.welcome, &b->u.welcome, sizeof(a->u.welcome));
	case PROTO_SEND:
		return send_eq(&a->u.send, &b->u.send);
	case PROTO_ACK:
		return a->u.ack.client_id == b->u.ack.client_id &&
		       a->u.ack.server_id == b->u.ack.server_id &&
		       a->u.ack.status == b->u.ack.status;
	case PROTO_NACK:
		return a->u.nack.client_id == b->u.nack.client_id &&
		       a->u.nack.reason == b->u.nack.reason &&
		       bytes_eq(a->u.nack.text, b->u.nack.text);
	case PROTO_DELIVER:
		return da->server_id == db->server_id &&
		       bytes_eq(da->sender_user, db->sender_user) &&
		       da->sender_device == db->sender_device && da->client_id == db->client_id &&
		       da->timestamp == db->timestamp && bytes_eq(da->payload, db->payload);
	case PROTO_DELIVER_ACK:
		return ids_eq(a->u.ids.count, a->u.ids.ids, b->u.ids.count, b->u.ids.ids);
	case PROTO_RECEIPT:
	case PROTO_DELIVER_RECEIPT:
		return receipt_eq(&a->u.receipt, &b->u.receipt);
	case PROTO_PING:
	case PROTO_PONG:
		return a->u.nonce == b->u.nonce;
	case PROTO_ERROR:
		return a->u.error.code == b->u.error.code &&
		       bytes_eq(a->u.error.text, b->u.error.text);
	case PROTO_RECONNECT:
		return a->u.reconnect_after == b->u.reconnect_after;
	case PROTO_QUEUE_EMPTY:
		return a->u.drained == b->u.drained;
	}
	return false;
}

/* Encode @f into scratch; check the size agrees with proto_encoded_size(). */
static size_t enc(const struct proto_frame *f)
{
	size_t len = 0;

	assert_int_equal(proto_encode(f, scratch, sizeof(scratch), &len), FERRY_OK);
	assert_int_equal(len, proto_encoded_size(f));
	assert_true(len > 0);
	return len;
}

/* Decode exactly one whole frame from @buf. */
static void dec1(const uint8_t *buf, size_t len, struct proto_frame *f)
{
	size_t used = 12345;

	assert_int_equal(proto_decode(buf, len, BIG, f, &used), FERRY_OK);
	assert_int_equal(used, len);
}

/* Encode, decode, compare. */
static void roundtrip(const struct proto_frame *f)
{
	static struct proto_frame g;
	size_t len = enc(f);

	memset(&g, 0xa5, sizeof(g));
	dec1(scratch, len, &g);
	assert_true(frame_eq(f, &g));
}

static enum ferry_err decode_rc(const uint8_t *buf, size_t len, size_t *used)
{
	static struct proto_frame g;

	return proto_decode(buf, len, BIG, &g, used);
}

static void assert_eproto(const uint8_t *buf, size_t len)
{
	size_t used = 99;

	assert_int_equal(decode_rc(buf, len, &used), FERRY_EPROTO);
	assert_int_equal(used, 0);
}

/* Failures name the caller's line. */
#define assert_einval(f) assert_einval_at((f), __FILE__, __LINE__)

static void assert_einval_at(const struct proto_frame *f, const char *file, int line)
{
	size_t len = 99;

	_assert_int_equal(proto_encode(f, scratch, sizeof(scratch), &len), FERRY_EINVAL, file,
			  line);
	_assert_int_equal(proto_encoded_size(f), 0, file, line);
}

/* A hand-made frame: body fields first, then wb_frame() prefixes the length. */
struct wb {
	uint8_t b[BIG];
	size_t n;
};

static struct wb wbuf, framed;

static struct wb *wb_start(uint8_t type)
{
	wbuf.n = 0;
	wbuf.b[wbuf.n++] = type;
	return &wbuf;
}

static void wb_varint(struct wb *w, uint64_t v)
{
	w->n += proto_varint_put(w->b + w->n, v);
}

static void wb_raw(struct wb *w, const void *p, size_t n)
{
	if (n)
		memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void wb_bytes(struct wb *w, const char *s)
{
	wb_varint(w, strlen(s));
	wb_raw(w, s, strlen(s));
}

static void wb_fill(struct wb *w, size_t n, uint8_t c)
{
	wb_varint(w, n);
	memset(w->b + w->n, c, n);
	w->n += n;
}

/* Length prefix + what was built: in framed.b[0..framed.n). */
static struct wb *wb_frame(const struct wb *w)
{
	framed.n = proto_varint_put(framed.b, w->n);
	wb_raw(&framed, w->b, w->n);
	return &framed;
}

static void wb_assert_eproto(const struct wb *w)
{
	const struct wb *f = wb_frame(w);

	assert_eproto(f->b, f->n);
}

static void wb_assert_ok(const struct wb *w, struct proto_frame *f)
{
	const struct wb *fr = wb_frame(w);

	dec1(fr->b, fr->n, f);
}

static uint8_t payload[BIG];

/* ---- round trips ---- */

static void test_roundtrip_simple_types(void **state)
{
	struct proto_frame f;
	uint64_t vals[] = { 0, 1, 127, 128, 300, UINT64_C(1) << 63, UINT64_MAX };

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		uint64_t v = vals[i];

		f = (struct proto_frame){ .type = PROTO_HELLO };
		f.u.hello = (struct proto_hello){ v, v | 1, B("secret") };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_WELCOME };
		f.u.welcome = (struct proto_welcome){ v, v + 1, 65536, v ^ 12345 };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_ACK };
		f.u.ack = (struct proto_ack){ v, ~v, (uint8_t)(1 + (i & 1)) };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_NACK };
		f.u.nack = (struct proto_nack){ v, PROTO_NACK_QUEUE_FULL, B(i & 1 ? "" : "full") };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_PING, .u.nonce = v };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_PONG, .u.nonce = v };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_ERROR };
		f.u.error = (struct proto_error){ v, B("went wrong") };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_RECONNECT, .u.reconnect_after = v };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_QUEUE_EMPTY, .u.drained = v };
		roundtrip(&f);
		f = (struct proto_frame){ .type = PROTO_DELIVER };
		f.u.deliver = (struct proto_deliver){ v, B("a.b_c:d@e+f-g0"),
						      v, v,
						      v, { payload, (size_t)(v % 3000) } };
		roundtrip(&f);
	}
}

static void test_roundtrip_send(void **state)
{
	static struct proto_frame f;

	f = (struct proto_frame){ .type = PROTO_SEND };
	f.u.send.client_id = 42;
	f.u.send.to_user = B("bob");
	f.u.send.ttl = 86400;
	f.u.send.payload = (struct proto_bytes){ payload, 1000 };
	roundtrip(&f);
	f.u.send.payload = (struct proto_bytes){ NULL, 0 }; /* empty payload allowed */
	roundtrip(&f);
	f.u.send.ntargets = PROTO_MAX_TARGETS;
	for (size_t i = 0; i < PROTO_MAX_TARGETS; i++) {
		f.u.send.targets[i].device_id = 1 + i * 1000003;
		f.u.send.targets[i].payload = (struct proto_bytes){ payload + i, i * 7 };
	}
	roundtrip(&f);
	f.u.send.ntargets = 1;
	roundtrip(&f);
}

static void test_roundtrip_ids(void **state)
{
	static struct proto_frame f;

	f = (struct proto_frame){ .type = PROTO_DELIVER_ACK };
	f.u.ids.count = 1;
	f.u.ids.ids[0] = 7;
	roundtrip(&f);
	f.u.ids.count = PROTO_MAX_IDS;
	for (size_t i = 0; i < PROTO_MAX_IDS; i++)
		f.u.ids.ids[i] = i * i * i * i * i * i * i;
	roundtrip(&f);
	f = (struct proto_frame){ .type = PROTO_RECEIPT };
	f.u.receipt.id = 99;
	f.u.receipt.kind = PROTO_RECEIPT_READ;
	f.u.receipt.peer_user = B("alice");
	f.u.receipt.device = 1234;
	f.u.receipt.count = PROTO_MAX_IDS;
	for (size_t i = 0; i < PROTO_MAX_IDS; i++)
		f.u.receipt.ids[i] = i * i * i * i * i * i * i;
	roundtrip(&f);
	f.type = PROTO_DELIVER_RECEIPT;
	f.u.receipt.id = UINT64_MAX;
	f.u.receipt.kind = PROTO_RECEIPT_DELIVERED;
	f.u.receipt.device = 0;
	f.u.receipt.count = 3;
	roundtrip(&f);
}

/* ---- golden bytes (computed by hand from the spec) ---- */

static void assert_golden(const struct proto_frame *f, const uint8_t *want, size_t n)
{
	static struct proto_frame g;
	size_t len = enc(f);

	assert_int_equal(len, n);
	assert_memory_equal(scratch, want, n);
	dec1(want, n, &g);
	assert_true(frame_eq(f, &g));
}

static void test_golden_hello(void **state)
{
	struct proto_frame f = { .type = PROTO_HELLO };
	/* length 11: type, version 1, device 300 = ac 02, secret "s3cr3t" */
	static const uint8_t want[] = { 0x0b, 0x01, 0x01, 0xac, 0x02, 0x06,
					's',  '3',  'c',  'r',	'3',  't' };

	f.u.hello = (struct proto_hello){ 1, 300, B("s3cr3t") };
	assert_golden(&f, want, sizeof(want));
}

static void test_golden_send(void **state)
{
	static struct proto_frame f;
	/* client 1, "bob", ttl 3600 = 90 1c, count 0, payload "hi" */
	static const uint8_t one[] = { 0x0c, 0x03, 0x01, 0x03, 'b', 'o', 'b',
				       0x90, 0x1c, 0x00, 0x02, 'h', 'i' };
	/* client 7, "bob", ttl 0, count 2: (5, "a"), (129 = 81 01, "") */
	static const uint8_t per[] = { 0x0e, 0x03, 0x07, 0x03, 'b',  'o',  'b', 0x00,
				       0x02, 0x05, 0x01, 'a',  0x81, 0x01, 0x00 };

	f = (struct proto_frame){ .type = PROTO_SEND };
	f.u.send.client_id = 1;
	f.u.send.to_user = B("bob");
	f.u.send.ttl = 3600;
	f.u.send.payload = B("hi");
	assert_golden(&f, one, sizeof(one));

	f.u.send.client_id = 7;
	f.u.send.ttl = 0;
	f.u.send.payload = (struct proto_bytes){ NULL, 0 };
	f.u.send.ntargets = 2;
	f.u.send.targets[0] = (struct proto_target){ 5, B("a") };
	f.u.send.targets[1] = (struct proto_target){ 129, B("") };
	assert_golden(&f, per, sizeof(per));
}

static void test_golden_deliver(void **state)
{
	struct proto_frame f = { .type = PROTO_DELIVER };
	/*
	 * server id 2^61: eight 80s then 20 (bit 61 = 7 * 8 + 5); "alice42";
	 * device 1234 = d2 09; client 100000 = a0 8d 06;
	 * timestamp 1700000000000 = 80 d0 95 ff bc 31; payload "x". Length 31.
	 */
	static const uint8_t want[] = { 0x1f, 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
					0x80, 0x80, 0x20, 0x07, 'a',  'l',  'i',  'c',
					'e',  '4',  '2',  0xd2, 0x09, 0xa0, 0x8d, 0x06,
					0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, 0x01, 'x' };

	f.u.deliver = (struct proto_deliver){ UINT64_C(1) << 61,       B("alice42"), 1234, 100000,
					      UINT64_C(1700000000000), B("x") };
	assert_golden(&f, want, sizeof(want));
}

static void test_golden_deliver_ack(void **state)
{
	static struct proto_frame f;
	static const uint8_t want[] = { 0x06, 0x07, 0x03, 0x01, 0xac, 0x02, 0x00 };

	f = (struct proto_frame){ .type = PROTO_DELIVER_ACK };
	f.u.ids.count = 3;
	f.u.ids.ids[0] = 1;
	f.u.ids.ids[1] = 300;
	f.u.ids.ids[2] = 0;
	assert_golden(&f, want, sizeof(want));
}

static void test_golden_receipts(void **state)
{
	struct proto_frame f = { .type = PROTO_RECEIPT };
	/* 13 bytes: type, client id 300, kind read, "bob", device 5, 2 ids: 1, 128 */
	static const uint8_t rcpt[] = { 0x0d, 0x08, 0xac, 0x02, 0x02, 0x03, 'b',
					'o',  'b',  0x05, 0x02, 0x01, 0x80, 0x01 };
	/* 8 bytes: type, server id 7, kind delivered, "b", device 0, 1 id: 127 */
	static const uint8_t drcpt[] = { 0x08, 0x0e, 0x07, 0x01, 0x01, 'b', 0x00, 0x01, 0x7f };
	(void)state;

	f.u.receipt.id = 300;
	f.u.receipt.kind = PROTO_RECEIPT_READ;
	f.u.receipt.peer_user = B("bob");
	f.u.receipt.device = 5;
	f.u.receipt.count = 2;
	f.u.receipt.ids[0] = 1;
	f.u.receipt.ids[1] = 128;
	assert_golden(&f, rcpt, sizeof(rcpt));
	f = (struct proto_frame){ .type = PROTO_DELIVER_RECEIPT };
	f.u.receipt.id = 7;
	f.u.receipt.kind = PROTO_RECEIPT_DELIVERED;
	f.u.receipt.peer_user = B("b");
	f.u.receipt.device = 0;
	f.u.receipt.count = 1;
	f.u.receipt.ids[0] = 127;
	assert_golden(&f, drcpt, sizeof(drcpt));
}

static void test_golden_small_frames(void **state)
{
	struct proto_frame f = { .type = PROTO_ACK };
	static const uint8_t ack[] = { 0x05, 0x04, 0x09, 0x80, 0x01, 0x02 };
	static const uint8_t ping[] = { 0x02, 0x09, 0x00 };
	static const uint8_t nack[] = { 0x05, 0x05, 0x01, 0x04, 0x01, '!' };

	f.u.ack = (struct proto_ack){ 9, 128, PROTO_ACK_DELIVERED };
	assert_golden(&f, ack, sizeof(ack));
	f = (struct proto_frame){ .type = PROTO_PING, .u.nonce = 0 };
	assert_golden(&f, ping, sizeof(ping));
	f = (struct proto_frame){ .type = PROTO_NACK };
	f.u.nack = (struct proto_nack){ 1, PROTO_NACK_RETRY_LATER, B("!") };
	assert_golden(&f, nack, sizeof(nack));
}

/* ---- varints ---- */

static void check_varint(uint64_t v, const uint8_t *want, size_t n)
{
	uint8_t out[PROTO_MAX_VARINT + 1];
	struct proto_frame f;
	struct wb *w;

	memset(out, 0xee, sizeof(out));
	assert_int_equal(proto_varint_size(v), n);
	assert_int_equal(proto_varint_put(out, v), n);
	assert_memory_equal(out, want, n);
	assert_int_equal(out[n], 0xee);
	/* and the decoder reads it back, as a PING's nonce */
	w = wb_start(PROTO_PING);
	wb_raw(w, want, n);
	wb_assert_ok(w, &f);
	assert_int_equal(f.type, PROTO_PING);
	assert_true(f.u.nonce == v);
}

static void test_varint_values(void **state)
{
	static const uint8_t
		v0[] = { 0x00 },
		v127[] = { 0x7f }, v128[] = { 0x80, 0x01 }, v16383[] = { 0xff, 0x7f },
		v16384[] = { 0x80, 0x80, 0x01 },
		v2_63[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 },
		vmax[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 },
		v2_63m1[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f };

	check_varint(0, v0, sizeof(v0));
	check_varint(127, v127, sizeof(v127));
	check_varint(128, v128, sizeof(v128));
	check_varint(16383, v16383, sizeof(v16383));
	check_varint(16384, v16384, sizeof(v16384));
	check_varint(UINT64_C(1) << 63, v2_63, sizeof(v2_63));
	check_varint((UINT64_C(1) << 63) - 1, v2_63m1, sizeof(v2_63m1));
	check_varint(UINT64_MAX, vmax, sizeof(vmax));
	for (unsigned bits = 1; bits <= 64; bits++) {
		uint64_t v = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;

		assert_int_equal(proto_varint_size(v), (bits + 6) / 7);
		assert_int_equal(proto_varint_size(v + (bits < 64)), (bits + (bits < 64) + 6) / 7);
	}
}

static void nonce_eproto(const uint8_t *v, size_t n)
{
	struct wb *w = wb_start(PROTO_PING);

	wb_raw(w, v, n);
	wb_assert_eproto(w);
}

static void test_varint_malformed(void **state)
{
	static const uint8_t
		nm0[] = { 0x80, 0x00 },
		nm1[] = { 0xff, 0x00 }, nm2[] = { 0x81, 0x80, 0x00 },
		eleven[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 },
		tenth2[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02 },
		tenth7f[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f },
		tenth0[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 },
		unterminated[] = { 0x80, 0x80, 0x80 };

	nonce_eproto(nm0, sizeof(nm0));
	nonce_eproto(nm1, sizeof(nm1));
	nonce_eproto(nm2, sizeof(nm2));
	nonce_eproto(eleven, sizeof(eleven));
	nonce_eproto(tenth2, sizeof(tenth2));
	nonce_eproto(tenth7f, sizeof(tenth7f));
	nonce_eproto(tenth0, sizeof(tenth0));
	nonce_eproto(unterminated, sizeof(unterminated)); /* runs off the frame's end */
	nonce_eproto(NULL, 0);				  /* missing */
}

static void test_length_prefix(void **state)
{
	/* non-minimal prefixes (2 = 82 00), a 5-byte prefix, a zero length */
	static const uint8_t nm[] = { 0x82, 0x00, 0x09, 0x00 },
			     five[] = { 0x81, 0x80, 0x80, 0x80, 0x00, 0x09, 0x00 },
			     five2[] = { 0x80, 0x80, 0x80, 0x80, 0x01 }, zero[] = { 0x00, 0x09 },
			     u32max[] = { 0xff, 0xff, 0xff, 0xff, 0x0f },
			     eleven[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					  0xff, 0xff, 0xff, 0xff, 0x01 },
			     ok[] = { 0x82, 0x00 };
	static uint8_t big[4 + BIG];
	size_t used = 9;
	struct proto_frame f;

	assert_eproto(nm, sizeof(nm));
	assert_eproto(five, sizeof(five));
	/* A minimal 5-byte length (2^28, 2^32 - 1) is too large, not malformed,
	 * and known to be before any of the body. */
	assert_int_equal(decode_rc(five2, sizeof(five2), &used), FERRY_ETOOBIG);
	assert_int_equal(decode_rc(u32max, sizeof(u32max), &used), FERRY_ETOOBIG);
	assert_int_equal(decode_rc(u32max, 4, &used), FERRY_OK);
	assert_int_equal(used, 0);
	assert_eproto(eleven, sizeof(eleven));
	assert_eproto(zero, sizeof(zero));
	/* a lone 82 is not known to be bad until its next byte comes */
	assert_int_equal(decode_rc(ok, 1, &used), FERRY_OK);
	assert_int_equal(used, 0);
	assert_eproto(ok, 2);
	/*
	 * A 3-byte prefix (65537 = 81 80 04) under a max_frame that allows it:
	 * a PING whose nonce is followed by zeros, then one whose nonce has
	 * thousands of continuation bytes.
	 */
	big[0] = 0x81;
	big[1] = 0x80;
	big[2] = 0x04;
	big[3] = PROTO_PING;
	assert_int_equal(proto_decode(big, 3 + 65537, 65537, &f, &used), FERRY_EPROTO);
	big[4] = 0x80;
	memset(big + 5, 0x80, 65530);
	assert_int_equal(proto_decode(big, 3 + 65537, 65537, &f, &used), FERRY_EPROTO);
	/* no input at all */
	assert_int_equal(proto_decode(NULL, 0, BIG, &f, &used), FERRY_OK);
	assert_int_equal(used, 0);
}

/* ---- streams ---- */

static void test_every_prefix_needs_more(void **state)
{
	static struct proto_frame f, g;
	static uint8_t copy[BIG];
	size_t len, used;

	f = (struct proto_frame){ .type = PROTO_DELIVER };
	f.u.deliver = (struct proto_deliver){ 99, B("carol"), 3, 4, 5, { payload, 300 } };
	len = enc(&f);
	assert_true(scratch[0] & 0x80); /* a 2-byte length prefix */
	for (size_t n = 0; n < len; n++) {
		/* a copy of exactly n bytes, so ASan sees any read past them */
		uint8_t *p = copy + sizeof(copy) - n;

		memcpy(p, scratch, n);
		used = 77;
		assert_int_equal(proto_decode(p, n, BIG, &g, &used), FERRY_OK);
		assert_int_equal(used, 0);
	}
	dec1(scratch, len, &g);
	assert_true(frame_eq(&f, &g));
}

static void test_many_frames_in_one_buffer(void **state)
{
	static struct proto_frame fs[6], g;
	static uint8_t stream[BIG];
	size_t off = 0, n = sizeof(fs) / sizeof(fs[0]), used;

	fs[0] = (struct proto_frame){ .type = PROTO_PING, .u.nonce = 1 };
	fs[1] = (struct proto_frame){ .type = PROTO_HELLO };
	fs[1].u.hello = (struct proto_hello){ 1, 5, B("k") };
	fs[2] = (struct proto_frame){ .type = PROTO_DELIVER };
	fs[2].u.deliver = (struct proto_deliver){ 1, B("u"), 2, 3, 4, { payload, 5000 } };
	fs[3] = (struct proto_frame){ .type = PROTO_RECONNECT, .u.reconnect_after = 1500 };
	fs[4] = (struct proto_frame){ .type = PROTO_DELIVER_ACK };
	fs[4].u.ids.count = 2;
	fs[4].u.ids.ids[1] = 1ull << 40;
	fs[5] = (struct proto_frame){ .type = PROTO_PONG, .u.nonce = 2 };
	for (size_t i = 0; i < n; i++) {
		size_t len;

		assert_int_equal(proto_encode(&fs[i], stream + off, sizeof(stream) - off, &len),
				 FERRY_OK);
		off += len;
	}
	stream[off] = 0x05; /* the start of a 7th frame */
	for (size_t i = 0, pos = 0; i <= n; i++) {
		assert_int_equal(proto_decode(stream + pos, off + 1 - pos, BIG, &g, &used),
				 FERRY_OK);
		if (i == n) {
			assert_int_equal(used, 0); /* the partial one */
			break;
		}
		assert_true(used > 0);
		assert_true(frame_eq(&fs[i], &g));
		pos += used;
	}
}

static void test_oversized_before_body(void **state)
{
	static const uint8_t over[] = { 0x81, 0x08 }; /* 1025 */
	static const uint8_t huge[] = { 0xff, 0xff, 0xff, 0x7f };
	static const uint8_t exact[] = { 0x80, 0x08, PROTO_PING }; /* 1024 */
	struct proto_frame f;
	size_t used = 5;

	assert_int_equal(proto_decode(over, sizeof(over), 1024, &f, &used), FERRY_ETOOBIG);
	assert_int_equal(used, 0);
	assert_int_equal(proto_decode(huge, sizeof(huge), PROTO_MAX_MAX_FRAME, &f, &used),
			 FERRY_ETOOBIG);
	assert_int_equal(proto_decode(exact, sizeof(exact), 1024, &f, &used), FERRY_OK);
	assert_int_equal(used, 0); /* at the limit: wait for the body */
	assert_int_equal(proto_decode(exact, sizeof(exact), 1023, &f, &used), FERRY_ETOOBIG);
	/* a one-byte length over a tiny max_frame */
	assert_int_equal(proto_decode((const uint8_t *)"\x02\x09\x00", 3, 1, &f, &used),
			 FERRY_ETOOBIG);
	assert_int_equal(proto_decode((const uint8_t *)"\x02\x09\x00", 3, 2, &f, &used), FERRY_OK);
	assert_int_equal(used, 3);
}

/* ---- malformed bodies ---- */

static void test_unknown_types(void **state)
{
	static const uint8_t types[] = { 0x00, 0x0e, 0x0f, 0x7f, 0x80, 0xff };

	for (size_t i = 0; i < sizeof(types); i++) {
		struct wb *w = wb_start(types[i]);

		wb_varint(w, 0);
		wb_assert_eproto(w);
		wb_assert_eproto(wb_start(types[i]));
	}
}

static void test_short_and_trailing(void **state)
{
	struct proto_frame f;
	struct wb *w;

	/* every frame type with an empty body is too short */
	for (uint8_t t = PROTO_HELLO; t <= PROTO_QUEUE_EMPTY; t++)
		wb_assert_eproto(wb_start(t));
	/* a PING with a trailing byte */
	w = wb_start(PROTO_PING);
	wb_varint(w, 5);
	wb_assert_ok(w, &f);
	wb_varint(w, 0);
	wb_assert_eproto(w);
	/* a HELLO cut inside its secret, then one with a byte after it */
	w = wb_start(PROTO_HELLO);
	wb_varint(w, 1);
	wb_varint(w, 1);
	wb_bytes(w, "abc");
	wb_assert_ok(w, &f);
	w->n--;
	wb_assert_eproto(w);
	w->n += 2;
	wb_assert_eproto(w);
	/* a WELCOME missing its last field */
	w = wb_start(PROTO_WELCOME);
	wb_varint(w, 1);
	wb_varint(w, 2);
	wb_varint(w, 3);
	wb_assert_eproto(w);
	/* an ACK without its status byte */
	w = wb_start(PROTO_ACK);
	wb_varint(w, 1);
	wb_varint(w, 2);
	wb_assert_eproto(w);
	/* a DELIVER_ACK announcing 3 ids, holding 2 */
	w = wb_start(PROTO_DELIVER_ACK);
	wb_varint(w, 3);
	wb_varint(w, 10);
	wb_varint(w, 11);
	wb_assert_eproto(w);
	/* a SEND announcing 2 targets, holding 1 */
	w = wb_start(PROTO_SEND);
	wb_varint(w, 1);
	wb_bytes(w, "bob");
	wb_varint(w, 0);
	wb_varint(w, 2);
	wb_varint(w, 5);
	wb_bytes(w, "x");
	wb_assert_eproto(w);
}

/* A NACK whose text length is @n but holds 3 bytes. */
static void nack_text_len(uint64_t n)
{
	struct wb *w = wb_start(PROTO_NACK);

	wb_varint(w, 1);
	wb_varint(w, 1);
	wb_varint(w, n);
	wb_raw(w, "abc", 3);
	wb_assert_eproto(w);
}

static void test_byte_lengths(void **state)
{
	/* over what is left, including values that would wrap a size_t or pointer */
	nack_text_len(4);
	nack_text_len(2); /* under: trailing bytes */
	nack_text_len(UINT32_MAX);
	nack_text_len((uint64_t)UINT32_MAX + 1);
	nack_text_len(UINT64_MAX);
	nack_text_len(UINT64_MAX - 1);
	nack_text_len(UINT64_MAX - 2);
	nack_text_len(UINT64_C(1) << 63);
	nack_text_len((uint64_t)SIZE_MAX - (uintptr_t)framed.b);
	nack_text_len((uint64_t)(SIZE_MAX - 1 - (uintptr_t)framed.b));
}

/* ---- field rules ---- */

static struct wb *hello(uint64_t device, size_t secret_len)
{
	struct wb *w = wb_start(PROTO_HELLO);

	wb_varint(w, 1);
	wb_varint(w, device);
	wb_fill(w, secret_len, 's');
	return w;
}

static void test_hello_rules(void **state)
{
	struct proto_frame f;

	wb_assert_ok(hello(1, 1), &f);
	wb_assert_ok(hello(UINT64_MAX, PROTO_MAX_SECRET), &f);
	assert_int_equal(f.u.hello.secret.len, PROTO_MAX_SECRET);
	wb_assert_eproto(hello(0, 10));
	wb_assert_eproto(hello(1, 0));
	wb_assert_eproto(hello(1, PROTO_MAX_SECRET + 1));
	/* any version decodes: refusing it is the server's answer */
	wb_start(PROTO_HELLO);
	wb_varint(&wbuf, 7);
	wb_varint(&wbuf, 1);
	wb_bytes(&wbuf, "x");
	wb_assert_ok(&wbuf, &f);
	assert_int_equal(f.u.hello.version, 7);
}

static struct wb *send_hdr(const char *user, uint64_t count)
{
	struct wb *w = wb_start(PROTO_SEND);

	wb_varint(w, 1);
	wb_bytes(w, user);
	wb_varint(w, 60);
	wb_varint(w, count);
	return w;
}

static void test_send_rules(void **state)
{
	static struct proto_frame f;
	char u64[PROTO_MAX_USER + 2];
	struct wb *w;

	memset(u64, 'u', sizeof(u64));
	u64[PROTO_MAX_USER] = '\0';
	w = send_hdr(u64, 0);
	wb_bytes(w, "");
	wb_assert_ok(w, &f);
	u64[PROTO_MAX_USER] = 'u';
	u64[PROTO_MAX_USER + 1] = '\0';
	w = send_hdr(u64, 0);
	wb_bytes(w, "");
	wb_assert_eproto(w);
	w = send_hdr("", 0);
	wb_bytes(w, "");
	wb_assert_eproto(w);
	w = send_hdr("a b", 0);
	wb_bytes(w, "");
	wb_assert_eproto(w);
	/* 32 targets, duplicates included (the gateway's business), then 33 */
	w = send_hdr("bob", PROTO_MAX_TARGETS);
	for (int i = 0; i < PROTO_MAX_TARGETS; i++) {
		wb_varint(w, 5);
		wb_bytes(w, "p");
	}
	wb_assert_ok(w, &f);
	assert_int_equal(f.u.send.ntargets, PROTO_MAX_TARGETS);
	assert_int_equal(f.u.send.targets[31].device_id, 5);
	w = send_hdr("bob", PROTO_MAX_TARGETS + 1);
	for (int i = 0; i < PROTO_MAX_TARGETS + 1; i++) {
		wb_varint(w, 5 + i);
		wb_bytes(w, "p");
	}
	wb_assert_eproto(w);
	w = send_hdr("bob", 2);
	wb_varint(w, 5);
	wb_bytes(w, "p");
	wb_varint(w, 0);
	wb_bytes(w, "p");
	wb_assert_eproto(w);
	w = send_hdr("bob", UINT64_MAX);
	wb_assert_eproto(w);
}

static void test_deliver_and_ack_rules(void **state)
{
	struct proto_frame f;
	static const char *const users[] = { "", "a b", "a/b", "é", "a\x01" };

	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		struct wb *w = wb_start(PROTO_DELIVER);

		wb_varint(w, 1);
		wb_bytes(w, users[i]);
		wb_varint(w, 0);
		wb_varint(w, 0);
		wb_varint(w, 0);
		wb_bytes(w, "");
		wb_assert_eproto(w);
	}
	for (unsigned st = 0; st < 256; st++) {
		struct wb *w = wb_start(PROTO_ACK);
		uint8_t s = (uint8_t)st;

		wb_varint(w, 1);
		wb_varint(w, 2);
		wb_raw(w, &s, 1);
		if (st == PROTO_ACK_STORED || st == PROTO_ACK_DELIVERED) {
			wb_assert_ok(w, &f);
			assert_int_equal(f.u.ack.status, st);
		} else {
			wb_assert_eproto(w);
		}
	}
}

static struct wb *ids_frame(uint8_t type, uint8_t kind, const char *peer, uint64_t count,
			    size_t present)
{
	struct wb *w = wb_start(type);

	if (type == PROTO_RECEIPT || type == PROTO_DELIVER_RECEIPT) {
		wb_varint(w, 42); /* client id, server id */
		wb_raw(w, &kind, 1);
		wb_bytes(w, peer);
		wb_varint(w, 9); /* device */
	}
	wb_varint(w, count);
	for (size_t i = 0; i < present; i++)
		wb_varint(w, i * 1000);
	return w;
}

static void test_ids_rules(void **state)
{
	static struct proto_frame f;

	wb_assert_ok(ids_frame(PROTO_DELIVER_ACK, 0, NULL, 1, 1), &f);
	wb_assert_ok(ids_frame(PROTO_DELIVER_ACK, 0, NULL, PROTO_MAX_IDS, PROTO_MAX_IDS), &f);
	assert_int_equal(f.u.ids.count, PROTO_MAX_IDS);
	assert_int_equal(f.u.ids.ids[511], 511000);
	wb_assert_eproto(ids_frame(PROTO_DELIVER_ACK, 0, NULL, 0, 0));
	wb_assert_eproto(
		ids_frame(PROTO_DELIVER_ACK, 0, NULL, PROTO_MAX_IDS + 1, PROTO_MAX_IDS + 1));
	wb_assert_eproto(ids_frame(PROTO_DELIVER_ACK, 0, NULL, UINT64_MAX, 3));

	for (uint8_t type = PROTO_RECEIPT; type;
	     type = type == PROTO_RECEIPT ? PROTO_DELIVER_RECEIPT : 0) {
		wb_assert_ok(ids_frame(type, 1, "bob", 1, 1), &f);
		assert_int_equal(f.u.receipt.kind, PROTO_RECEIPT_DELIVERED);
		assert_int_equal(f.u.receipt.id, 42);
		assert_int_equal(f.u.receipt.device, 9);
		wb_assert_ok(ids_frame(type, 2, "bob", PROTO_MAX_IDS, PROTO_MAX_IDS), &f);
		assert_int_equal(f.u.receipt.kind, PROTO_RECEIPT_READ);
		assert_int_equal(f.u.receipt.count, PROTO_MAX_IDS);
		assert_int_equal(f.u.receipt.ids[511], 511000);
		assert_true(bytes_eq(f.u.receipt.peer_user, B("bob")));
		wb_assert_eproto(ids_frame(type, 0, "bob", 1, 1));
		wb_assert_eproto(ids_frame(type, 3, "bob", 1, 1));
		wb_assert_eproto(ids_frame(type, 1, "", 1, 1));
		wb_assert_eproto(ids_frame(type, 1, "b!b", 1, 1));
		wb_assert_eproto(ids_frame(type, 1, "bob", 0, 0));
		wb_assert_eproto(ids_frame(type, 1, "bob", PROTO_MAX_IDS + 1, PROTO_MAX_IDS + 1));
		wb_assert_eproto(ids_frame(type, 1, "bob", 2, 1)); /* cut short */
	}
}

static struct wb *text_frame(uint8_t type, size_t len)
{
	struct wb *w = wb_start(type);

	if (type == PROTO_NACK)
		wb_varint(w, 1);
	wb_varint(w, 77); /* reason or code: unknown values pass */
	wb_fill(w, len, 't');
	return w;
}

static void test_text_rules(void **state)
{
	struct proto_frame f;

	wb_assert_ok(text_frame(PROTO_NACK, 0), &f);
	wb_assert_ok(text_frame(PROTO_NACK, PROTO_MAX_TEXT), &f);
	assert_int_equal(f.u.nack.reason, 77);
	wb_assert_eproto(text_frame(PROTO_NACK, PROTO_MAX_TEXT + 1));
	wb_assert_ok(text_frame(PROTO_ERROR, PROTO_MAX_TEXT), &f);
	assert_int_equal(f.u.error.code, 77);
	assert_int_equal(f.u.error.text.len, PROTO_MAX_TEXT);
	wb_assert_eproto(text_frame(PROTO_ERROR, PROTO_MAX_TEXT + 1));
}

/* ---- encoder ---- */

static void test_encoder_refusals(void **state)
{
	static struct proto_frame f;
	static char secret[PROTO_MAX_SECRET + 2];

	memset(secret, 's', PROTO_MAX_SECRET + 1); /* one over */
	f = (struct proto_frame){ .type = 0 };
	assert_einval(&f);
	f.type = 0x0e;
	assert_einval(&f);

	f = (struct proto_frame){ .type = PROTO_HELLO };
	f.u.hello = (struct proto_hello){ 1, 0, B("x") };
	assert_einval(&f);
	f.u.hello = (struct proto_hello){ 1, 1, B("") };
	assert_einval(&f);
	f.u.hello = (struct proto_hello){ 1, 1, B(secret) };
	assert_einval(&f);
	f.u.hello.secret.len--;
	roundtrip(&f);
	f.u.hello.secret = (struct proto_bytes){ NULL, 3 };
	assert_einval(&f);

	f = (struct proto_frame){ .type = PROTO_SEND };
	f.u.send.to_user = B("bad user");
	assert_einval(&f);
	f.u.send.to_user = B("bob");
	f.u.send.ntargets = PROTO_MAX_TARGETS + 1;
	for (size_t i = 0; i < PROTO_MAX_TARGETS; i++)
		f.u.send.targets[i].device_id = 1;
	assert_einval(&f);
	f.u.send.ntargets = 2;
	f.u.send.targets[1].device_id = 0;
	assert_einval(&f);
	f.u.send.targets[1].device_id = 1; /* a duplicate: encodes */
	roundtrip(&f);
	f.u.send.ntargets = 0;
	f.u.send.payload = (struct proto_bytes){ payload, SIZE_MAX };
	assert_einval(&f);
	f.u.send.payload = (struct proto_bytes){ payload, (size_t)1 << 28 };
	assert_einval(&f); /* over what a 4-byte length prefix can say */
	f.u.send.ntargets = 2;
	f.u.send.targets[0].payload = (struct proto_bytes){ payload, (size_t)1 << 27 };
	f.u.send.targets[1].payload = (struct proto_bytes){ payload, (size_t)1 << 27 };
	assert_einval(&f); /* each fits, the sum does not */

	f = (struct proto_frame){ .type = PROTO_ACK };
	f.u.ack.status = 3;
	assert_einval(&f);
	f = (struct proto_frame){ .type = PROTO_NACK };
	f.u.nack.text = (struct proto_bytes){ payload, PROTO_MAX_TEXT + 1 };
	assert_einval(&f);
	f = (struct proto_frame){ .type = PROTO_ERROR };
	f.u.error.text = (struct proto_bytes){ payload, PROTO_MAX_TEXT + 1 };
	assert_einval(&f);
	f = (struct proto_frame){ .type = PROTO_DELIVER };
	f.u.deliver.sender_user = B("");
	assert_einval(&f);
	f = (struct proto_frame){ .type = PROTO_DELIVER_ACK };
	assert_einval(&f); /* count 0 */
	f.u.ids.count = PROTO_MAX_IDS + 1;
	assert_einval(&f);
	f = (struct proto_frame){ .type = PROTO_RECEIPT };
	f.u.receipt.count = 1;
	f.u.receipt.peer_user = B("bob");
	assert_einval(&f); /* kind 0 */
	f.u.receipt.kind = PROTO_RECEIPT_READ;
	f.u.receipt.peer_user = B("b b");
	assert_einval(&f);
	f.u.receipt.peer_user = B("bob");
	f.u.receipt.count = 0;
	assert_einval(&f);
	f.type = PROTO_DELIVER_RECEIPT;
	f.u.receipt.count = PROTO_MAX_IDS + 1;
	assert_einval(&f);
}

static void test_encoder_capacity(void **state)
{
	struct proto_frame f = { .type = PROTO_HELLO };
	uint8_t out[64];
	size_t len = 0, need;

	f.u.hello = (struct proto_hello){ 1, 300, B("s3cr3t") };
	need = proto_encoded_size(&f);
	assert_int_equal(need, 12);
	for (size_t cap = 0; cap < need; cap++) {
		assert_int_equal(proto_encode(&f, out, cap, &len), FERRY_ETOOBIG);
		assert_int_equal(len, need); /* says what it needs */
	}
	assert_int_equal(proto_encode(&f, out, need, &len), FERRY_OK);
	assert_int_equal(len, need);
}

/* ---- sizes the spec states ---- */

static size_t deliver_overhead(uint64_t server_id, size_t plen)
{
	struct proto_frame f = { .type = PROTO_DELIVER };

	f.u.deliver = (struct proto_deliver){
		server_id, B("alice42"), 1234, 100000, UINT64_C(1764342349123), { payload, plen }
	};
	return proto_encoded_size(&f) - plen;
}

/*
 * docs/protocol.md, Overhead: 1 + 9 + 8 + 2 + 3 + 6 + 2 + 2 = 33 bytes. The
 * 2-byte payload length needs a payload of 128 bytes or more, and the 2-byte
 * frame length a payload of at most 16384 - 1 - 31 = 16352 bytes, slightly
 * under the doc's "under 16 KiB".
 */
static void test_deliver_overhead(void **state)
{
	uint64_t near61[] = { (UINT64_C(1) << 61) - 1000, UINT64_C(1) << 61,
			      (UINT64_C(1) << 61) + 1000, UINT64_C(1) << 56 };

	for (size_t i = 0; i < sizeof(near61) / sizeof(near61[0]); i++) {
		assert_int_equal(deliver_overhead(near61[i], 1000), 33);
		assert_int_equal(deliver_overhead(near61[i], 128), 33);
		assert_int_equal(deliver_overhead(near61[i], 16352), 33);
		assert_int_equal(deliver_overhead(near61[i], 127), 32);
		assert_int_equal(deliver_overhead(near61[i], 16353), 34);
		assert_int_equal(deliver_overhead(near61[i], 16383), 34);
	}
}

/* Encode @f into @out, decode it back under @max_frame: the frame must fit. */
static void assert_fits(const struct proto_frame *f, uint8_t *out, size_t cap, size_t max_frame)
{
	static struct proto_frame g;
	size_t len = 0, used = 0;

	assert_int_equal(proto_encode(f, out, cap, &len), FERRY_OK);
	assert_int_equal(proto_decode(out, len, max_frame, &g, &used), FERRY_OK);
	assert_int_equal(used, len);
	assert_true(frame_eq(f, &g));
}

/*
 * A payload of max_frame - 128 bytes fits in a DELIVER and in a SEND with the
 * widest fields (the spec's headroom), for the smallest, default and largest
 * max_frame.
 */
static void test_payload_headroom(void **state)
{
	static uint8_t src[PROTO_MAX_MAX_FRAME], out[PROTO_MAX_MAX_FRAME + 16];
	static struct proto_frame f;
	char user[PROTO_MAX_USER + 1];
	size_t mfs[] = { PROTO_MIN_MAX_FRAME, PROTO_DEFAULT_MAX_FRAME, PROTO_MAX_MAX_FRAME };

	memset(user, 'z', PROTO_MAX_USER);
	user[PROTO_MAX_USER] = '\0';
	for (size_t i = 0; i < sizeof(mfs) / sizeof(mfs[0]); i++) {
		struct proto_bytes pl = { src, mfs[i] - PROTO_PAYLOAD_HEADROOM };

		f = (struct proto_frame){ .type = PROTO_DELIVER };
		f.u.deliver = (struct proto_deliver){ UINT64_MAX, B(user),    UINT64_MAX,
						      UINT64_MAX, UINT64_MAX, pl };
		assert_fits(&f, out, sizeof(out), mfs[i]);
		f = (struct proto_frame){ .type = PROTO_SEND };
		f.u.send.client_id = UINT64_MAX;
		f.u.send.to_user = B(user);
		f.u.send.ttl = UINT64_MAX;
		f.u.send.payload = pl;
		assert_fits(&f, out, sizeof(out), mfs[i]);
		f.u.send.ntargets = 1;
		f.u.send.targets[0] = (struct proto_target){ UINT64_MAX, pl };
		assert_fits(&f, out, sizeof(out), mfs[i]);
	}
}

/* ---- names and user ids ---- */

static void test_names(void **state)
{
	static const char *const types[] = { "unknown", "hello",   "welcome",	  "send",    "ack",
					     "nack",	"deliver", "deliver_ack", "receipt", "ping",
					     "pong",	"error",   "reconnect" };
	static const char *const errs[] = {
		"unknown",	"bad_frame",	   "unsupported_version",
		"auth_failed",	"replaced",	   "too_large",
		"timeout",	"shutting_down",   "device_deleted",
		"internal",	"not_implemented", "overloaded",
		"disconnected", "rate_limited"
	};
	static const char *const nacks[] = { "unknown",	   "unknown_recipient", "too_large",
					     "queue_full", "retry_later",	"invalid" };

	for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		assert_string_equal(proto_type_name(i), types[i]);
	for (unsigned i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
		assert_string_equal(proto_error_name(i), errs[i]);
	for (unsigned i = 0; i < sizeof(nacks) / sizeof(nacks[0]); i++)
		assert_string_equal(proto_nack_name(i), nacks[i]);
	assert_string_equal(proto_type_name(14), "deliver_receipt");
	assert_string_equal(proto_type_name(15), "unknown");
	assert_string_equal(proto_type_name(0xffffffffu), "unknown");
	assert_string_equal(proto_error_name(14), "unknown");
	assert_string_equal(proto_error_name(UINT64_MAX), "unknown");
	assert_string_equal(proto_nack_name(6), "unknown");
	assert_string_equal(proto_nack_name(UINT64_C(1) << 32), "unknown");
}

static void test_user_valid(void **state)
{
	static const char allowed[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				      "0123456789._:@+-";
	uint8_t u[PROTO_MAX_USER + 1];

	for (unsigned c = 0; c < 256; c++) {
		uint8_t b = (uint8_t)c;
		int want = c != 0 && memchr(allowed, c, sizeof(allowed) - 1) != NULL;

		assert_int_equal(proto_user_valid(&b, 1), want);
	}
	memset(u, 'a', sizeof(u));
	assert_true(proto_user_valid(u, PROTO_MAX_USER));
	assert_false(proto_user_valid(u, PROTO_MAX_USER + 1));
	assert_false(proto_user_valid(u, 0));
	assert_false(proto_user_valid(NULL, 0));
	assert_false(proto_user_valid(NULL, 3));
	u[PROTO_MAX_USER - 1] = ' ';
	assert_false(proto_user_valid(u, PROTO_MAX_USER));
	u[PROTO_MAX_USER - 1] = 0x80 | 'a';
	assert_false(proto_user_valid(u, PROTO_MAX_USER));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_simple_types),
		cmocka_unit_test(test_roundtrip_send),
		cmocka_unit_test(test_roundtrip_ids),
		cmocka_unit_test(test_golden_hello),
		cmocka_unit_test(test_golden_receipts),
		cmocka_unit_test(test_golden_send),
		cmocka_unit_test(test_golden_deliver),
		cmocka_unit_test(test_golden_deliver_ack),
		cmocka_unit_test(test_golden_small_frames),
		cmocka_unit_test(test_varint_values),
		cmocka_unit_test(test_varint_malformed),
		cmocka_unit_test(test_length_prefix),
		cmocka_unit_test(test_every_prefix_needs_more),
		cmocka_unit_test(test_many_frames_in_one_buffer),
		cmocka_unit_test(test_oversized_before_body),
		cmocka_unit_test(test_unknown_types),
		cmocka_unit_test(test_short_and_trailing),
		cmocka_unit_test(test_byte_lengths),
		cmocka_unit_test(test_hello_rules),
		cmocka_unit_test(test_send_rules),
		cmocka_unit_test(test_deliver_and_ack_rules),
		cmocka_unit_test(test_ids_rules),
		cmocka_unit_test(test_text_rules),
		cmocka_unit_test(test_encoder_refusals),
		cmocka_unit_test(test_encoder_capacity),
		cmocka_unit_test(test_deliver_overhead),
		cmocka_unit_test(test_payload_headroom),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_user_valid),
	};

	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
