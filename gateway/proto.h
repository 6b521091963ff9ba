/*
 * proto.h - the device protocol codec (docs/protocol.md), shared by ferryd
 * and libferry.
 *
 * Pure: no I/O, no allocation. Encoding writes into the caller's buffer;
 * decoding reads one frame from the front of the caller's bytes and points
 * into them (zero-copy), so a decoded frame is valid only while those bytes
 * are. The decoder takes any bytes, whole frames, partial frames or many
 * frames at once: it reports "need more" for a partial frame and an error for
 * anything malformed, never undefined behaviour. Every field is validated at
 * decode time, so users of a decoded frame need no further checks than their
 * own rules.
 */
#ifndef FERRY_GATEWAY_PROTO_H
#define FERRY_GATEWAY_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PROTO_VERSION 1

#define PROTO_MAX_VARINT 10
#define PROTO_MAX_LENGTH_PREFIX 4
#define PROTO_DEFAULT_MAX_FRAME 65536
#define PROTO_MIN_MAX_FRAME 1024
#define PROTO_MAX_MAX_FRAME (16 * 1024 * 1024)
#define PROTO_PAYLOAD_HEADROOM 128 /* max payload = max_frame - this */
#define PROTO_MAX_SECRET 256
#define PROTO_MAX_USER 64
#define PROTO_MAX_TARGETS 32
#define PROTO_MAX_IDS 512
#define PROTO_MAX_TEXT 256

enum proto_type {
	PROTO_HELLO = 0x01,
	PROTO_WELCOME = 0x02,
	PROTO_SEND = 0x03,
	PROTO_ACK = 0x04,
	PROTO_NACK = 0x05,
	PROTO_DELIVER = 0x06,
	PROTO_DELIVER_ACK = 0x07,
	PROTO_RECEIPT = 0x08,
	PROTO_PING = 0x09,
	PROTO_PONG = 0x0a,
	PROTO_ERROR = 0x0b,
	PROTO_RECONNECT = 0x0c,
	PROTO_QUEUE_EMPTY = 0x0d,
	PROTO_DELIVER_RECEIPT = 0x0e,
};

enum proto_ack_status {
	PROTO_ACK_STORED = 1,
	PROTO_ACK_DELIVERED = 2,
};

enum proto_nack_reason {
	PROTO_NACK_UNKNOWN_RECIPIENT = 1,
	PROTO_NACK_TOO_LARGE = 2,
	PROTO_NACK_QUEUE_FULL = 3,
	PROTO_NACK_RETRY_LATER = 4,
	PROTO_NACK_INVALID = 5,
};

enum proto_receipt_kind {
	PROTO_RECEIPT_DELIVERED = 1,
	PROTO_RECEIPT_READ = 2,
};

enum proto_error_code {
	PROTO_ERR_BAD_FRAME = 1,
	PROTO_ERR_UNSUPPORTED_VERSION = 2,
	PROTO_ERR_AUTH_FAILED = 3,
	PROTO_ERR_REPLACED = 4,
	PROTO_ERR_TOO_LARGE = 5,
	PROTO_ERR_TIMEOUT = 6,
	PROTO_ERR_SHUTTING_DOWN = 7,
	PROTO_ERR_DEVICE_DELETED = 8,
	PROTO_ERR_INTERNAL = 9,
	PROTO_ERR_NOT_IMPLEMENTED = 10,
	PROTO_ERR_OVERLOADED = 11,
	PROTO_ERR_DISCONNECTED = 12,
	PROTO_ERR_RATE_LIMITED = 13,
};

/* A byte string inside a frame (borrowed; not NUL-terminated). */
struct proto_bytes {
	const uint8_t *p;
	size_t len;
};

struct proto_target {
	uint64_t device_id;
	struct proto_bytes payload;
};

struct proto_hello {
	uint64_t version;
	uint64_t device_id;
	struct proto_bytes secret;
};

struct proto_welcome {
	uint64_t server_time;
	uint64_t pending;
	uint64_t max_frame;
	uint64_t idle_timeout;
};

/* ntargets == 0: one payload for all devices (in @payload). */
struct proto_send {
	uint64_t client_id;
	struct proto_bytes to_user;
	uint64_t ttl;
	struct proto_bytes payload;
	size_t ntargets;
	struct proto_target targets[PROTO_MAX_TARGETS];
};

struct proto_ack {
	uint64_t client_id;
	uint64_t server_id;
	uint8_t status; /* enum proto_ack_status */
};

struct proto_nack {
	uint64_t client_id;
	uint64_t reason; /* enum proto_nack_reason */
	struct proto_bytes text;
};

struct proto_deliver {
	uint64_t server_id;
	struct proto_bytes sender_user;
	uint64_t sender_device;
	uint64_t client_id;
	uint64_t timestamp;
	struct proto_bytes payload;
};

/* DELIVER_ACK: server ids. */
struct proto_ids {
	size_t count;
	uint64_t ids[PROTO_MAX_IDS];
};

/*
 * RECEIPT (device -> server: "my user has read these messages that
 * peer_user's device sent"; id is the device's client id for it) and
 * DELIVER_RECEIPT (server -> device: "peer_user has received/read these
 * messages that your user's device sent"; id is the server id the device
 * acknowledges). The same layout both ways; ids are the senders' client ids.
 */
struct proto_receipt {
	uint64_t id;
	uint8_t kind; /* enum proto_receipt_kind */
	struct proto_bytes peer_user;
	uint64_t device; /* the device that sent the messages; 0: not named */
	size_t count;
	uint64_t ids[PROTO_MAX_IDS];
};

struct proto_error {
	uint64_t code; /* enum proto_error_code */
	struct proto_bytes text;
};

struct proto_frame {
	enum proto_type type;
	union {
		struct proto_hello hello;
		struct proto_welcome welcome;
		struct proto_send send;
		struct proto_ack ack;
		struct proto_nack nack;
		struct proto_deliver deliver;
		struct proto_ids ids;	      /* DELIVER_ACK */
		struct proto_receipt receipt; /* RECEIPT, DELIVER_RECEIPT */
		uint64_t nonce;		      /* PING, PONG */
		struct proto_error error;
		uint64_t reconnect_after; /* RECONNECT, milliseconds */
		uint64_t drained;	  /* QUEUE_EMPTY: stored envelopes sent in this catch-up */
	} u;
};

/*
 * Decode the frame at the front of @buf.
 *   FERRY_OK, *consumed > 0:  one frame decoded into @f (pointing into @buf)
 *   FERRY_OK, *consumed == 0: @buf holds only part of a frame; read more
 *   FERRY_ETOOBIG:            the frame's length is over @max_frame, or
 *                             needs more than PROTO_MAX_LENGTH_PREFIX bytes
 *                             (known as soon as the prefix is in)
 *   FERRY_EPROTO:             malformed (see docs/protocol.md)
 * After an error the stream cannot be resynchronised: close it.
 */
enum ferry_err proto_decode(const uint8_t *buf, size_t len, size_t max_frame, struct proto_frame *f,
			    size_t *consumed) FERRY_WUR;

/*
 * Encode @f into @out (capacity @cap). *len gets the frame's size, length
 * prefix included. FERRY_ETOOBIG if it does not fit in @cap (nothing useful
 * is in @out then), FERRY_EINVAL if @f breaks a rule the decoder would
 * refuse (a count over its maximum, an invalid user id, an unknown type...).
 */
enum ferry_err proto_encode(const struct proto_frame *f, uint8_t *out, size_t cap,
			    size_t *len) FERRY_WUR;

/* Bytes proto_encode() would write for @f (0 if @f is invalid). */
size_t proto_encoded_size(const struct proto_frame *f);

/* Varint helpers (exposed for tests and for the client). */
size_t proto_varint_size(uint64_t v);
size_t proto_varint_put(uint8_t *out, uint64_t v); /* needs PROTO_MAX_VARINT bytes */
/* Read the varint at @p (at most @len bytes) into *v: its size, 0 if it
 * is malformed or cut short. */
size_t proto_varint_get(const uint8_t *p, size_t len, uint64_t *v);

/* Name of a frame type, error code or NACK reason, for logs and tools. */
const char *proto_type_name(unsigned type);
const char *proto_error_name(uint64_t code);
const char *proto_nack_name(uint64_t reason);

/* A user id as the protocol allows it: 1-64 bytes of [A-Za-z0-9._:@+-]. */
int proto_user_valid(const uint8_t *p, size_t len);

#endif
