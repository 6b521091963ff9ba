/*
 * fuzz_proto.c - libFuzzer harness for the device protocol codec.
 *
 * The input is a byte stream as a connection would deliver it: frames are
 * decoded one after another until an error or a partial frame. Each decoded
 * frame is then checked differentially against the encoder:
 * - re-encoding it succeeds and gives back exactly the bytes it came from
 *   (the wire format is canonical: minimal varints only, so one frame has one
 *   encoding), with proto_encoded_size() agreeing;
 *   decoding the re-encoded bytes gives an equal frame;
 * - every frame minus its last byte is "need more", never an error.
 * Any mismatch abort()s. The sanitizers catch reads outside the input.
 *
 * Seeds: tests/fuzz/corpus/proto/, one or more frames per file.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proto.h"
#include "common/banned.h"

#define MAX_FRAME PROTO_DEFAULT_MAX_FRAME

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool bytes_eq(struct proto_bytes a, struct proto_bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
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

static bool ids_eq(size_t na, const uint64_t *a, size_t nb, const uint64_t *b)
{
	return na == nb && memcmp(a, b, na * sizeof(a[0])) == 0;
}

static bool receipt_eq(const struct proto_receipt *a, const struct proto_receipt *b)
{
	return a->id == b->id && a->kind == b->kind && bytes_eq(a->peer_user, b->peer_user) &&
	       a->device == b->device && ids_eq(a->count, a->ids, b->count, b->ids);
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

/* The checks on one frame @f, decoded from @in[0..n). */
static void check_frame(const struct proto_frame *f, const uint8_t *in, size_t n)
{
	static uint8_t out[MAX_FRAME + PROTO_MAX_LENGTH_PREFIX];
	static struct proto_frame g;
	size_t len, used;

	if (proto_encode(f, out, sizeof(out), &len) != FERRY_OK)
		abort(); /* the decoder accepted what the encoder refuses */
	if (len != n || proto_encoded_size(f) != n || memcmp(out, in, n) != 0)
		abort(); /* not canonical, or size and encoding disagree */
	if (proto_decode(out, len, MAX_FRAME, &g, &used) != FERRY_OK || used != len)
		abort();
	if (!frame_eq(f, &g))
		abort();
	if (proto_decode(in, n - 1, MAX_FRAME, &g, &used) != FERRY_OK || used != 0)
		abort(); /* a frame short of one byte must be "need more" */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct proto_frame f;
	size_t off = 0, used;

	while (off < size) {
		enum ferry_err rc = proto_decode(data + off, size - off, MAX_FRAME, &f, &used);

		if (rc != FERRY_OK) {
			if ((rc != FERRY_EPROTO && rc != FERRY_ETOOBIG) || used != 0)
				abort();
			break;
		}
		if (used == 0)
			break; /* partial: a connection would read more */
		if (used > size - off)
			abort();
		check_frame(&f, data + off, used);
		off += used;
	}
	return 0;
}
