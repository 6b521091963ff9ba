/*
 * test_codec_allocfail.c - the device codec when memory runs out.
 *
 * The codec (gateway/proto.c) is documented to allocate nothing: decoding
 * points into the caller's bytes, encoding writes into the caller's buffer.
 * The first test holds it to that with every allocation failing: a stream
 * of every frame type encodes and decodes unchanged, and not one allocation
 * is asked for. What does allocate is the reassembly of frames split across
 * reads (a struct buf, as gateway/conn.c keeps per connection): the second
 * test makes each of its allocations fail in turn, at every split point,
 * and each run must either decode every frame or stop with FERRY_ENOMEM,
 * leave the buffer releasable, and leak nothing (LeakSanitizer, at exit).
 *
 * Linked with the allocation wrappers (tests/support/allocfail.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "gateway/proto.h"
#include "tests/support/allocfail.h"
#include "common/banned.h"

#define MAX_FRAME 65536

static uint8_t stream[1 << 16];
static size_t stream_len;
static unsigned nframes;
static uint8_t types[32];

static const uint8_t payload[300] = { 1, 2, 3 };

/* One frame of each kind a device or the server sends, one after another. */
static void build_stream(void)
{
	static const uint64_t ids[3] = { 7, 8, 9 };
	struct proto_frame f[12];
	unsigned n = 0;
	size_t used;

	memset(f, 0, sizeof(f));
	f[n].type = PROTO_HELLO;
	f[n].u.hello.version = 1;
	f[n].u.hello.device_id = 42;
	f[n].u.hello.secret.p = payload;
	f[n++].u.hello.secret.len = 32;
	f[n].type = PROTO_WELCOME;
	f[n].u.welcome.server_time = 1700000000000ull;
	f[n++].u.welcome.max_frame = MAX_FRAME;
	f[n].type = PROTO_SEND;
	f[n].u.send.client_id = 5;
	f[n].u.send.to_user.p = (const uint8_t *)"alice";
	f[n].u.send.to_user.len = 5;
	f[n].u.send.payload.p = payload;
	f[n++].u.send.payload.len = sizeof(payload);
	f[n].type = PROTO_ACK;
	f[n].u.ack.client_id = 5;
	f[n].u.ack.server_id = 99;
	f[n++].u.ack.status = PROTO_ACK_STORED;
	f[n].type = PROTO_DELIVER;
	f[n].u.deliver.server_id = 99;
	f[n].u.deliver.sender_user.p = (const uint8_t *)"bob";
	f[n].u.deliver.sender_user.len = 3;
	f[n].u.deliver.sender_device = 3;
	f[n].u.deliver.client_id = 5;
	f[n].u.deliver.payload.p = payload;
	f[n++].u.deliver.payload.len = sizeof(payload);
	f[n].type = PROTO_DELIVER_ACK;
	f[n].u.ids.count = 3;
	memcpy(f[n++].u.ids.ids, ids, sizeof(ids));
	f[n].type = PROTO_PING;
	f[n++].u.nonce = 77;
	f[n].type = PROTO_PONG;
	f[n++].u.nonce = 77;
	f[n].type = PROTO_QUEUE_EMPTY;
	f[n++].u.drained = 3;
	f[n].type = PROTO_RECONNECT;
	f[n++].u.reconnect_after = 1500;
	f[n].type = PROTO_ERROR;
	f[n].u.error.code = PROTO_ERR_TIMEOUT;
	f[n].u.error.text.p = (const uint8_t *)"idle";
	f[n++].u.error.text.len = 4;
	stream_len = 0;
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(proto_encode(&f[i], stream + stream_len,
					      sizeof(stream) - stream_len, &used),
				 FERRY_OK);
		types[i] = (uint8_t)f[i].type;
		stream_len += used;
	}
	nframes = n;
}

/* Decode every whole frame at @p; their types must follow types[*seen].
 * Returns the bytes used. */
static size_t decode_all(const uint8_t *p, size_t len, unsigned *seen)
{
	size_t off = 0, used;
	struct proto_frame f;

	for (;;) {
		assert_int_equal(proto_decode(p + off, len - off, MAX_FRAME, &f, &used), FERRY_OK);
		if (!used)
			return off;
		assert_true(*seen < nframes);
		assert_int_equal(f.type, types[(*seen)++]);
		off += used;
	}
}

static void test_codec_allocates_nothing(void **state)
{
	long before;
	unsigned seen = 0;

	build_stream();
	before = allocfail_count();
	/* Armed at 0: the first allocation asked for would fail. */
	allocfail_arm(0);
	build_stream();
	assert_int_equal(decode_all(stream, stream_len, &seen), stream_len);
	assert_int_equal(seen, nframes);
	assert_false(allocfail_disarm());
	assert_int_equal(allocfail_count(), before);
}

/*
 * The stream read in reads of @chunk bytes, reassembled as gateway/conn.c
 * does: whole frames decoded in place, a partial one kept in @in until the
 * rest comes. FERRY_OK once every frame came, FERRY_ENOMEM if keeping a
 * partial frame failed (the connection would be closed).
 */
static enum ferry_err reassemble(size_t chunk, unsigned *seen)
{
	struct buf in;
	enum ferry_err rc = FERRY_OK;

	buf_init(&in, MAX_FRAME + 16);
	*seen = 0;
	for (size_t off = 0; off < stream_len && !rc; off += chunk) {
		size_t len = stream_len - off < chunk ? stream_len - off : chunk, used;
		const uint8_t *p = stream + off;

		if (in.len) {
			rc = buf_append(&in, p, len);
			if (rc)
				break;
			used = decode_all((const uint8_t *)in.data, in.len, seen);
			memmove(in.data, in.data + used, in.len - used);
			in.len -= used;
			if (!in.len)
				buf_release(&in);
			continue;
		}
		used = decode_all(p, len, seen);
		if (used < len)
			rc = buf_append(&in, p + used, len - used);
	}
	buf_release(&in);
	return rc;
}

static void test_reassembly_each_allocation_fails(void **state)
{
	static const size_t chunks[] = { 1, 2, 3, 7, 64, 301, 4096 };
	unsigned seen, runs = 0, failed = 0;

	build_stream();
	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		for (long n = 0;; n++) {
			enum ferry_err rc;

			allocfail_arm(n);
			rc = reassemble(chunks[k], &seen);
			runs++;
			if (!allocfail_disarm()) {
				/* Every allocation of this shape has failed once. */
				assert_int_equal(rc, FERRY_OK);
				assert_int_equal(seen, nframes);
				break;
			}
			failed++;
			assert_int_equal(rc, FERRY_ENOMEM);
			assert_true(seen < nframes);
		}
	}
	/* Reassembly allocates: the test made it fail, many times. */
	assert_true(failed > 10);
	print_message("reassembly: %u runs, %u with a failed allocation\n", runs, failed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_allocates_nothing),
		cmocka_unit_test(test_reassembly_each_allocation_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
