/*
 * bench_insert.c - the database's own ceiling for the offline store: plain
 * batched multi-row INSERTs of envelope rows, from one connection, into a
 * scratch database with ferry's schema.
 *
 * What it measures: R rows (--rows), each the row the store writes for one
 * envelope to one device (recipient_device, seq, server_id, sender_user,
 * sender_device, client_id, kind, a --size-byte payload, created, expires),
 * for N devices (--devices, row g to device g mod N with the next seq of
 * that device, as the store's batches interleave devices), inserted with one
 * prepared INSERT ... VALUES statement of B rows (--batch) after another,
 * each in its own transaction (autocommit), waiting for each before sending
 * the next: the store's writer also has one batch in flight and commits
 * each. Parameters are binary. created is now() and expires now() plus 30
 * days, as the store computes them. Nothing else: no device rows read,
 * locked or updated, no duplicate check, no results per row.
 *
 * The table is ferry's own envelopes table (the database is migrated by
 * `ferryd migrate`), so the rows pay for the same constraints and indexes:
 * the CHECKs, the primary key, the unique
 * (recipient, sender device, client id) key and the expires and server id
 * indexes. Before each run the table is truncated.
 *
 * Safety: the database must be a scratch one. The tool creates its own
 * devices (users bench-insert-rI) and refuses to run if any other device
 * exists, since it truncates the envelopes table.
 *
 * Output: key=value lines (LABEL.rows_per_s=..., medians of --runs runs),
 * then a small table. With --pg-pid (the postmaster), PostgreSQL's CPU time
 * per row (every process of the cluster), and always the CPU time of this
 * connection's backend per row.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tools/bench_int.h"
#include "common/banned.h"

#define MAX_RUNS 20
#define COLS 7	       /* parameters per row; kind, created, expires are literals */
#define MAX_BATCH 9000 /* 65,535 parameters per statement at most */
#define TTL_S 2592000  /* the store's default_ttl */
#define SERVER_ID_BASE (UINT64_C(1) << 61)
#define CLIENT_ID_BASE UINT64_C(1732800000000000)
#define SENDER_BASE 1000000
#define SENDERS 4

struct opts {
	const char *conninfo, *label;
	unsigned devices, runs, batch;
	size_t rows, size;
	long pg_pid;
};

struct run {
	double secs, rate, ms_per_batch, backend_us, pg_us, self_us;
};

/* One statement's parameters, rebuilt for each batch (binary, network order). */
struct params {
	char **values;
	int *lengths, *formats;
	uint8_t *ints; /* 8 bytes per bigint parameter */
	char (*users)[32];
};

static const char usage_text[] =
	"usage: bench_insert --conninfo CONNINFO --devices N --rows R --batch B\n"
	"                    [--size S] [--runs R] [--label NAME] [--pg-pid PID]\n"
	"  Plain batched INSERTs of R envelope rows for N devices, B rows a statement, into\n"
	"  the envelopes table of a scratch database migrated with `ferryd migrate`.\n"
	"  --size      payload bytes (default 100)\n"
	"  --runs      runs, each on a truncated table; medians reported (default 3)\n"
	"  --label     prefix of the key=value lines (default plain)\n"
	"  --pg-pid    the postmaster's pid: the cluster's CPU time per row\n";

static int parse_num(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || end == s || *end || *s == '-' || *out < 1 || *out > max ? -1 : 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];
		unsigned long long x = 0;
		int bad = 0;

		if (!strcmp(a, "--conninfo"))
			o->conninfo = v;
		else if (!strcmp(a, "--label"))
			o->label = v;
		else if (!strcmp(a, "--devices") && !(bad = parse_num(v, 1000000, &x)))
			o->devices = (unsigned)x;
		else if (!strcmp(a, "--rows") && !(bad = parse_num(v, 100000000, &x)))
			o->rows = (size_t)x;
		else if (!strcmp(a, "--batch") && !(bad = parse_num(v, MAX_BATCH, &x)))
			o->batch = (unsigned)x;
		else if (!strcmp(a, "--size") && !(bad = parse_num(v, 65408, &x)))
			o->size = (size_t)x;
		else if (!strcmp(a, "--runs") && !(bad = parse_num(v, MAX_RUNS, &x)))
			o->runs = (unsigned)x;
		else if (!strcmp(a, "--pg-pid") && !(bad = parse_num(v, 1u << 30, &x)))
			o->pg_pid = (long)x;
		else
			bad = 1;
		if (bad) {
			fprintf(stderr, "bench_insert: %s %s: unknown option or bad value\n", a, v);
			return -1;
		}
	}
	if (argc % 2 == 0 || !o->conninfo || !o->devices || !o->rows || !o->batch) {
		fprintf(stderr, "bench_insert: --conninfo, --devices, --rows and --batch are "
				"required\n");
		return -1;
	}
	return 0;
}

/* Run @sql (no parameters); 0 if it succeeded. */
static int exec_ok(PGconn *pg, const char *sql)
{
	PGresult *res = PQexec(pg, sql);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "bench_insert: %.60s: %s", sql, PQerrorMessage(pg));
		PQclear(res);
		return -1;
	}
	PQclear(res);
	return 0;
}

/*
 * Make sure the database holds only this tool's devices, @n of them, and put
 * their ids in @ids.
 */
static int setup_devices(PGconn *pg, unsigned n, int64_t *ids)
{
	char sql[512];
	PGresult *res;
	int rc = -1;

	res = PQexec(pg, "SELECT count(*) FROM devices WHERE user_id NOT LIKE 'bench-insert-r%'");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "bench_insert: cannot read devices (is the database migrated?): %s",
			PQerrorMessage(pg));
		PQclear(res);
		return -1;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "0")) {
		fprintf(stderr, "bench_insert: the database holds other devices than this tool's: "
				"give it a scratch database\n");
		PQclear(res);
		return -1;
	}
	PQclear(res);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO devices (user_id, secret_hash, platform) "
		 "SELECT 'bench-insert-r' || i, decode(repeat('00', 32), 'hex'), 'desktop' "
		 "FROM generate_series((SELECT count(*) FROM devices) + 1, %u) i",
		 n);
	if (exec_ok(pg, sql))
		return -1;
	snprintf(sql, sizeof(sql), "SELECT id FROM devices ORDER BY id LIMIT %u", n);
	res = PQexec(pg, sql);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == (int)n) {
		for (unsigned i = 0; i < n; i++)
			ids[i] = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
		rc = 0;
	} else {
		fprintf(stderr, "bench_insert: cannot list the devices: %s", PQerrorMessage(pg));
	}
	PQclear(res);
	return rc;
}

/* Prepare "ins_@rows": an INSERT of @rows rows. */
static int prepare(PGconn *pg, unsigned rows)
{
	static const char head[] = "INSERT INTO envelopes (recipient_device, seq, server_id, "
				   "sender_user, sender_device, client_id, kind, payload, "
				   "created, expires) VALUES ";
	size_t cap = sizeof(head) + (size_t)rows * 200, len;
	char name[32], *sql = malloc(cap);
	PGresult *res;
	int rc;

	if (!sql)
		return -1;
	len = (size_t)snprintf(sql, cap, "%s", head);
	for (unsigned r = 0; r < rows; r++) {
		unsigned p = r * COLS;

		len += (size_t)snprintf(sql + len, cap - len,
					"%s($%u::bigint, $%u::bigint, $%u::bigint, $%u::text, "
					"$%u::bigint, $%u::bigint, 'message', $%u::bytea, now(), "
					"now() + interval '%u seconds')",
					r ? ", " : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6,
					p + 7, TTL_S);
	}
	snprintf(name, sizeof(name), "ins_%u", rows);
	res = PQprepare(pg, name, sql, 0, NULL);
	rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
	if (rc)
		fprintf(stderr, "bench_insert: prepare: %s", PQerrorMessage(pg));
	PQclear(res);
	free(sql);
	return rc;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static int params_init(struct params *pp, unsigned batch)
{
	size_t n = (size_t)batch * COLS;

	pp->values = calloc(n, sizeof(*pp->values));
	pp->lengths = calloc(n, sizeof(*pp->lengths));
	pp->formats = calloc(n, sizeof(*pp->formats));
	pp->ints = calloc(n, 8);
	pp->users = calloc(SENDERS, sizeof(*pp->users));
	if (!pp->values || !pp->lengths || !pp->formats || !pp->ints || !pp->users)
		return -1;
	for (size_t i = 0; i < n; i++)
		pp->formats[i] = 1;
	for (unsigned s = 0; s < SENDERS; s++)
		snprintf(pp->users[s], sizeof(pp->users[s]), "bench-insert-s%u", s);
	return 0;
}

static void params_release(struct params *pp)
{
	free(pp->values);
	free(pp->lengths);
	free(pp->formats);
	free(pp->ints);
	free(pp->users);
}

/* The parameters of rows @first..@first+@n-1 of run @run. */
static void fill(struct params *pp, const struct opts *o, const int64_t *ids, uint8_t *payload,
		 unsigned run, size_t first, unsigned n)
{
	for (unsigned r = 0; r < n; r++) {
		size_t g = first + r;
		unsigned s = (unsigned)(g % SENDERS);
		uint64_t ints[6] = {
			(uint64_t)ids[g % o->devices],
			g / o->devices + 1,
			SERVER_ID_BASE + (uint64_t)run * o->rows + g,
			0,
			SENDER_BASE + s,
			CLIENT_ID_BASE + g,
		};
		size_t p = (size_t)r * COLS;

		for (int c = 0; c < 6; c++) {
			if (c == 3) {
				pp->values[p + 3] = pp->users[s];
				pp->lengths[p + 3] = (int)strlen(pp->users[s]);
				continue;
			}
			put_be64(pp->ints + (p + c) * 8, ints[c]);
			pp->values[p + c] = (char *)pp->ints + (p + c) * 8;
			pp->lengths[p + c] = 8;
		}
		pp->values[p + 6] = (char *)payload;
		pp->lengths[p + 6] = (int)o->size;
	}
}

static int one_run(PGconn *pg, const struct opts *o, const int64_t *ids, struct params *pp,
		   uint8_t *payload, unsigned run, struct run *out)
{
	int backend = PQbackendPID(pg);
	double b0, b1, p0 = NAN, p1 = NAN, s0, s1;
	size_t batches = 0;
	uint64_t t0, t1;

	if (exec_ok(pg, "TRUNCATE envelopes"))
		return -1;
	b0 = fb_proc_cpu_ns(backend);
	if (o->pg_pid)
		p0 = fb_proc_tree_cpu_ns(o->pg_pid);
	s0 = fb_self_cpu_ns();
	t0 = fb_now_ns();
	for (size_t g = 0; g < o->rows && !fb_interrupted; g += o->batch) {
		unsigned n = o->rows - g < o->batch ? (unsigned)(o->rows - g) : o->batch;
		char name[32];
		PGresult *res;

		fill(pp, o, ids, payload, run, g, n);
		snprintf(name, sizeof(name), "ins_%u", n);
		res = PQexecPrepared(pg, name, (int)n * COLS, (const char *const *)pp->values,
				     pp->lengths, pp->formats, 0);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			fprintf(stderr, "bench_insert: INSERT: %s", PQerrorMessage(pg));
			PQclear(res);
			return -1;
		}
		PQclear(res);
		batches++;
	}
	t1 = fb_now_ns();
	s1 = fb_self_cpu_ns();
	b1 = fb_proc_cpu_ns(backend);
	if (o->pg_pid)
		p1 = fb_proc_tree_cpu_ns(o->pg_pid);
	if (fb_interrupted)
		return -1;
	out->secs = (double)(t1 - t0) / 1e9;
	out->rate = (double)o->rows / out->secs;
	out->ms_per_batch = out->secs * 1000.0 / (double)batches;
	out->backend_us = (b1 - b0) / 1000.0 / (double)o->rows;
	out->pg_us = (p1 - p0) / 1000.0 / (double)o->rows;
	out->self_us = (s1 - s0) / 1000.0 / (double)o->rows;
	return 0;
}

static double median_of(const struct run *runs, unsigned n, size_t off, double *lo, double *hi)
{
	double col[MAX_RUNS];

	for (unsigned r = 0; r < n; r++)
		memcpy(&col[r], (const char *)&runs[r] + off, sizeof(double));
	qsort(col, n, sizeof(col[0]), fb_cmp_double);
	*lo = col[0];
	*hi = col[n - 1];
	return col[n / 2];
}

static void report(const struct opts *o, const struct run *runs, unsigned n)
{
	static const struct {
		const char *key, *what;
		size_t off;
		int prec;
	} f[] = {
		{ "rows_per_s", "rows inserted/s", offsetof(struct run, rate), 0 },
		{ "seconds", "first INSERT to last answer (s)", offsetof(struct run, secs), 3 },
		{ "ms_per_batch", "one batch, round trip and commit (ms)",
		  offsetof(struct run, ms_per_batch), 3 },
		{ "backend_cpu_us_per_row", "its backend's CPU/row (us)",
		  offsetof(struct run, backend_us), 2 },
		{ "pg_cpu_us_per_row", "PostgreSQL CPU/row (us)", offsetof(struct run, pg_us), 2 },
		{ "bench_cpu_us_per_row", "bench_insert CPU/row (us)",
		  offsetof(struct run, self_us), 2 },
	};
	const char *l = o->label;
	double med[sizeof(f) / sizeof(f[0])], lo[sizeof(f) / sizeof(f[0])],
		hi[sizeof(f) / sizeof(f[0])];

	printf("%s.rows=%zu\n%s.devices=%u\n%s.batch=%u\n%s.size=%zu\n%s.runs=%u\n", l, o->rows, l,
	       o->devices, l, o->batch, l, o->size, l, n);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		med[i] = median_of(runs, n, f[i].off, &lo[i], &hi[i]);
		if (!isnan(med[i]))
			printf("%s.%s=%.*f\n", l, f[i].key, f[i].prec, med[i]);
	}
	printf("\n%s: plain INSERT of %zu envelope rows (%zu-byte payloads) for %u devices, "
	       "%u rows a statement, one connection, median of %u run(s)\n",
	       l, o->rows, o->size, o->devices, o->batch, n);
	printf("  %-40s %12s %12s %12s\n", "figure", "median", "min", "max");
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (isnan(med[i]))
			continue;
		printf("  %-40s %12.*f %12.*f %12.*f\n", f[i].what, f[i].prec, med[i], f[i].prec,
		       lo[i], f[i].prec, hi[i]);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct opts o = { .label = "plain", .runs = 3, .size = 100 };
	struct run runs[MAX_RUNS];
	struct params pp = { 0 };
	int64_t *ids = NULL;
	uint8_t *payload = NULL;
	unsigned done = 0;
	PGconn *pg = NULL;
	int rc = 1;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (parse_args(argc, argv, &o)) {
		fputs(usage_text, stderr);
		return 2;
	}
	pg = PQconnectdb(o.conninfo);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "bench_insert: cannot connect: %s", PQerrorMessage(pg));
		goto out;
	}
	ids = calloc(o.devices, sizeof(*ids));
	payload = malloc(o.size);
	if (!ids || !payload || params_init(&pp, o.batch))
		goto out;
	for (size_t k = 0; k < o.size; k++)
		payload[k] = (uint8_t)(k * 131 + 7);
	if (setup_devices(pg, o.devices, ids) || prepare(pg, o.batch) ||
	    (o.rows % o.batch && prepare(pg, (unsigned)(o.rows % o.batch))))
		goto out;
	for (unsigned r = 0; r < o.runs; r++) {
		if (one_run(pg, &o, ids, &pp, payload, r, &runs[r]))
			break;
		done++;
	}
	if (done) {
		report(&o, runs, done);
		exec_ok(pg, "TRUNCATE envelopes");
	}
	rc = done == o.runs ? 0 : 1;
out:
	params_release(&pp);
	free(payload);
	free(ids);
	PQfinish(pg);
	return rc;
}
