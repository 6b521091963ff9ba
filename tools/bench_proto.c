/*
 * bench_proto.c - micro-benchmark of the device protocol codec
 * (gateway/proto.h): proto_encode() and proto_decode() of the frames on the
 * delivery hot path.
 *
 * Cases: DELIVER with a 100-byte and a 4 KiB payload, SEND with a 100-byte
 * payload (one payload for all devices), DELIVER_ACK with 64 server ids. The
 * field values are realistic (server ids near 2^61, microsecond client ids,
 * millisecond timestamps), so varints have their real sizes.
 *
 * Design: each (case, operation) pair runs R times (default 5) a loop of N
 * calls (default 200,000) on one frame, timed with CLOCK_MONOTONIC around
 * the whole loop; the median of the R runs is reported, as ns per frame,
 * frames per second and MB/s of encoded frame bytes (length prefix included,
 * 10^6 bytes). The codec lives in another translation unit (no LTO), so the
 * calls cannot be optimised away; a checksum of the results is kept anyway.
 * The measured loop calls only the function under test, so that a run under
 * `valgrind --tool=callgrind --toggle-collect=proto_encode` (or
 * proto_decode) with --runs 1 counts exactly N calls: instructions per call
 * are the collected total divided by N (scripts/run-bench.sh does this).
 *
 * Output: one `key=value` line per figure (proto.CASE.OP.ns=...), then a
 * human table on stdout, unless --quiet.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/proto.h"
#include "common/banned.h"

#define DEFAULT_ITERS 200000
#define DEFAULT_RUNS 5
#define MAX_RUNS 101
#define BIG_PAYLOAD 4096
#define SMALL_PAYLOAD 100
#define ACK_IDS 64
#define SERVER_ID_BASE ((UINT64_C(1) << 61) + 12345)
#define CLIENT_ID UINT64_C(1732800000123456)
#define TIMESTAMP UINT64_C(1732800000456)

enum op { OP_ENCODE, OP_DECODE };

struct bench_case {
	const char *name;
	const char *what;
	void (*make)(struct proto_frame *f);
};

struct result {
	double ns[MAX_RUNS];
	size_t frame_bytes;
};

static uint8_t payload_bytes[BIG_PAYLOAD];
static uint64_t sink;

/* ---- the frames ---- */

static void make_deliver(struct proto_frame *f, size_t payload_len)
{
	f->type = PROTO_DELIVER;
	f->u.deliver.server_id = SERVER_ID_BASE;
	f->u.deliver.sender_user = (struct proto_bytes){ (const uint8_t *)"alice42", 7 };
	f->u.deliver.sender_device = 1234;
	f->u.deliver.client_id = CLIENT_ID;
	f->u.deliver.timestamp = TIMESTAMP;
	f->u.deliver.payload = (struct proto_bytes){ payload_bytes, payload_len };
}

static void make_deliver_small(struct proto_frame *f)
{
	make_deliver(f, SMALL_PAYLOAD);
}

static void make_deliver_big(struct proto_frame *f)
{
	make_deliver(f, BIG_PAYLOAD);
}

static void make_send(struct proto_frame *f)
{
	f->type = PROTO_SEND;
	f->u.send.client_id = CLIENT_ID;
	f->u.send.to_user = (struct proto_bytes){ (const uint8_t *)"bob42", 5 };
	f->u.send.ttl = 0;
	f->u.send.ntargets = 0;
	f->u.send.payload = (struct proto_bytes){ payload_bytes, SMALL_PAYLOAD };
}

static void make_deliver_ack(struct proto_frame *f)
{
	f->type = PROTO_DELIVER_ACK;
	f->u.ids.count = ACK_IDS;
	for (size_t i = 0; i < ACK_IDS; i++)
		f->u.ids.ids[i] = SERVER_ID_BASE + i;
}

static const struct bench_case cases[] = {
	{ "deliver100", "DELIVER, 100-byte payload", make_deliver_small },
	{ "deliver4k", "DELIVER, 4 KiB payload", make_deliver_big },
	{ "send100", "SEND, 100-byte payload", make_send },
	{ "deliver_ack64", "DELIVER_ACK, 64 ids", make_deliver_ack },
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* ---- timing ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* N calls of proto_encode() and nothing else; ns per call. */
static double loop_encode(const struct proto_frame *f, uint8_t *out, size_t cap, size_t iters)
{
	uint64_t t0, acc = 0;
	size_t len = 0;

	t0 = now_ns();
	for (size_t i = 0; i < iters; i++) {
		if (proto_encode(f, out, cap, &len) != FERRY_OK)
			abort();
		acc += len;
	}
	sink += acc + out[len / 2];
	return (double)(now_ns() - t0) / (double)iters;
}

/* N calls of proto_decode() and nothing else; ns per call. */
static double loop_decode(const uint8_t *in, size_t len, struct proto_frame *f, size_t iters)
{
	uint64_t t0, acc = 0;
	size_t used = 0;

	t0 = now_ns();
	for (size_t i = 0; i < iters; i++) {
		if (proto_decode(in, len, PROTO_MAX_MAX_FRAME, f, &used) != FERRY_OK)
			abort();
		acc += used;
	}
	if (used != len)
		abort();
	sink += acc + (uint64_t)f->type;
	return (double)(now_ns() - t0) / (double)iters;
}

/* Run one case and operation @runs times; fills @res. */
static void run_case(const struct bench_case *bc, enum op op, size_t iters, size_t runs,
		     struct result *res)
{
	static struct proto_frame f, g; /* large (ids[512]): not on the stack */
	static uint8_t frame[BIG_PAYLOAD + 1024];
	size_t len;

	memset(&f, 0, sizeof(f));
	bc->make(&f);
	/* Outside the loops, only the other function is called (the decode
	 * case's input is encoded here; the encode case takes its size from
	 * proto_encoded_size), so a callgrind count of the function under test
	 * sees exactly runs * N calls. */
	if (op == OP_DECODE && proto_encode(&f, frame, sizeof(frame), &len) != FERRY_OK)
		abort();
	if (op == OP_ENCODE)
		len = proto_encoded_size(&f);
	res->frame_bytes = len;
	for (size_t r = 0; r < runs; r++) {
		if (op == OP_ENCODE)
			res->ns[r] = loop_encode(&f, frame, sizeof(frame), iters);
		else
			res->ns[r] = loop_decode(frame, len, &g, iters);
	}
	qsort(res->ns, runs, sizeof(res->ns[0]), cmp_double);
}

/* ---- output ---- */

static const char *op_name(enum op op)
{
	return op == OP_ENCODE ? "encode" : "decode";
}

static void print_keys(const struct bench_case *bc, enum op op, const struct result *res,
		       size_t runs)
{
	double med = res->ns[runs / 2], fps = 1e9 / med;
	const char *o = op_name(op);

	printf("proto.%s.%s.bytes=%zu\n", bc->name, o, res->frame_bytes);
	printf("proto.%s.%s.ns=%.1f\n", bc->name, o, med);
	printf("proto.%s.%s.frames_per_s=%.0f\n", bc->name, o, fps);
	printf("proto.%s.%s.mb_per_s=%.1f\n", bc->name, o, fps * (double)res->frame_bytes / 1e6);
}

static void print_row(const struct bench_case *bc, enum op op, const struct result *res,
		      size_t runs)
{
	double med = res->ns[runs / 2], fps = 1e9 / med;

	printf("%-28s %-6s %6zu %9.1f %9.1f %9.1f %12.0f %9.1f\n", bc->what, op_name(op),
	       res->frame_bytes, med, res->ns[0], res->ns[runs - 1], fps,
	       fps * (double)res->frame_bytes / 1e6);
}

/* ---- arguments ---- */

static void usage(FILE *to)
{
	fprintf(to,
		"usage: bench_proto [--iters N] [--runs R] [--case NAME] [--op encode|decode]"
		" [--quiet]\n"
		"  N calls per run (default %d), R runs (1-%d, default %d); the median run"
		" is reported.\n"
		"  cases: deliver100 deliver4k send100 deliver_ack64\n",
		DEFAULT_ITERS, MAX_RUNS, DEFAULT_RUNS);
}

static int parse_size(const char *s, size_t min, size_t max, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return -1;
	*out = (size_t)v;
	return 0;
}

struct opts {
	size_t iters, runs;
	const char *only_case;
	int only_op; /* -1: both */
	int quiet;
};

static int parse_args(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		}
		if (!v)
			return -1;
		i++;
		if (!strcmp(a, "--iters") && !parse_size(v, 1, 1000000000, &o->iters))
			continue;
		if (!strcmp(a, "--runs") && !parse_size(v, 1, MAX_RUNS, &o->runs))
			continue;
		if (!strcmp(a, "--case")) {
			o->only_case = v;
			continue;
		}
		if (!strcmp(a, "--op") && (!strcmp(v, "encode") || !strcmp(v, "decode"))) {
			o->only_op = !strcmp(v, "encode") ? OP_ENCODE : OP_DECODE;
			continue;
		}
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { DEFAULT_ITERS, DEFAULT_RUNS, NULL, -1, 0 };
	static struct result res[NCASES][2];
	int ran = 0;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof(payload_bytes); i++)
		payload_bytes[i] = (uint8_t)(i * 131 + 7);
	printf("proto.iters=%zu\nproto.runs=%zu\n", o.iters, o.runs);
	for (size_t c = 0; c < NCASES; c++) {
		if (o.only_case && strcmp(o.only_case, cases[c].name))
			continue;
		for (int op = OP_ENCODE; op <= OP_DECODE; op++) {
			if (o.only_op >= 0 && o.only_op != op)
				continue;
			run_case(&cases[c], (enum op)op, o.iters, o.runs, &res[c][op]);
			print_keys(&cases[c], (enum op)op, &res[c][op], o.runs);
			ran++;
		}
	}
	if (!ran) {
		fprintf(stderr, "bench_proto: no case named '%s'\n", o.only_case);
		return 2;
	}
	if (o.quiet)
		return sink == 42; /* never: keeps the sink alive */
	printf("\n%-28s %-6s %6s %9s %9s %9s %12s %9s\n", "frame", "op", "bytes", "ns(med)",
	       "ns(min)", "ns(max)", "frames/s", "MB/s");
	for (size_t c = 0; c < NCASES; c++) {
		for (int op = OP_ENCODE; op <= OP_DECODE; op++) {
			if ((o.only_case && strcmp(o.only_case, cases[c].name)) ||
			    (o.only_op >= 0 && o.only_op != op))
				continue;
			print_row(&cases[c], (enum op)op, &res[c][op], o.runs);
		}
	}
	return sink == 42;
}
