/*
 * bench_int.h - what the files of ferry-bench (tools/ferry-bench.c, the
 * online and idle modes and the arguments; tools/bench_offline.c, the
 * offline store mode; tools/bench_receipts.c, the receipts mode;
 * tools/bench_load.c, the commands run beside online mode's phases) and
 * tools/bench_insert.c share: the options, the clock, latency samples,
 * /proc readings, device credentials and admin API reads
 * (tools/bench_util.c).
 *
 * Threads: everything here may be called from any thread; fb_get_creds()
 * starts threads of its own for the admin API and joins them before it
 * returns. fb_interrupted is set by the signal handler only.
 */
#ifndef FERRY_TOOLS_BENCH_INT_H
#define FERRY_TOOLS_BENCH_INT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gateway/proto.h"

#define FB_SECRET_MAX PROTO_MAX_SECRET
#define FB_MAX_LOADS 6 /* --load phases */

/* One device: its user, id and secret. */
struct fb_cred {
	char user[PROTO_MAX_USER + 1];
	uint64_t device_id;
	char secret[FB_SECRET_MAX + 1];
};

/* The command line (ferry-bench --help). Strings are borrowed from argv. */
struct fb_opts {
	const char *server, *admin, *token, *token_file, *creds, *save_creds, *label;
	char host[256], port[16];
	unsigned senders, receivers, window, runs, idle;
	unsigned offline;    /* offline mode: recipient devices (0: another mode) */
	size_t per_device;   /* offline mode: envelopes stored per recipient and run */
	unsigned pairs;	     /* receipts mode: sender -> reader pairs (0: another mode) */
	unsigned away_reads; /* receipts mode: reads per pair while the senders are away */
	unsigned flush_ms;   /* receipts mode: ferryd's [receipts] flush_interval */
	int no_reads;	     /* receipts mode: readers send no read receipts */
	int read_batch;	     /* receipts mode: one RECEIPT per read, not per message */
	unsigned rate;	     /* online, receipts: messages/s over all senders (0: unpaced) */
	unsigned hold;	     /* online mode: idle devices held connected throughout */
	/* online mode: --load NAME=CMD, the phases beside the one without load */
	const char *load[FB_MAX_LOADS];
	unsigned nloads;
	size_t count, size;
	double duration;
	long pid;    /* ferryd */
	long pg_pid; /* the PostgreSQL postmaster: its CPU and its children's */
	int verbose;
	/* Scenarios (tools/bench_scen.c): ferry-bench [options] SCENARIO N. */
	const char *scenario;	 /* NULL: one of the modes above */
	unsigned long n;	 /* the scenario's N (pairs, connections, users, devices) */
	unsigned devices;	 /* fanout: devices per user; receivers are grouped so */
	unsigned sources;	 /* source addresses 127.0.0.1 .. 127.0.0.S */
	double warmup;		 /* pairs, fanout: seconds before measuring */
	unsigned stored;	 /* reconnect-storm: envelopes stored before the restart */
	const char *restart_cmd; /* reconnect-storm: restarts ferryd (sh -c) */
	const char *push_log;	 /* push: the mock provider's request log */
};

/* A growable array of samples (nanoseconds). */
struct fb_samples {
	uint64_t *v;
	size_t n, cap;
};

/* Set by SIGINT or SIGTERM: every loop stops soon. */
extern volatile sig_atomic_t fb_interrupted;

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t fb_now_ns(void);

/* Sleep @ms milliseconds (less if interrupted). */
void fb_sleep_ms(unsigned ms);

/* Append @v to @s; -1 when out of memory. */
int fb_samples_add(struct fb_samples *s, uint64_t v);

/* qsort comparators. */
int fb_cmp_u64(const void *a, const void *b);
int fb_cmp_double(const void *a, const void *b);

/* Nearest-rank percentile of sorted @v, in microseconds; NAN if empty. */
double fb_pct_us(const uint64_t *v, size_t n, double pct);

/* VmRSS and VmHWM of @pid in kB; -1 if unreadable. */
int fb_proc_mem_kb(long pid, long *rss, long *hwm);

/* CPU time of every thread of @pid in ns (their schedstat run times); NAN if
 * unreadable. */
double fb_proc_cpu_ns(long pid);

/*
 * CPU time in ns of process @pid and of every process whose parent it is
 * (PostgreSQL: the postmaster and its backends and helpers); NAN if @pid is
 * unreadable. A child that exits between two readings takes its time with
 * it, so differences are a lower bound.
 */
double fb_proc_tree_cpu_ns(long pid);

/* CPU time of this process (user and system), in ns. */
double fb_self_cpu_ns(void);

/*
 * @n credentials: from o->creds, or fresh devices made through the admin API
 * (users fb-RUN-rI for the first @nrecv, fb-RUN-sI for the rest; with
 * o->devices > 1 the receivers go o->devices to a user); written to
 * o->save_creds if set. A calloc'ed array (the caller frees it), or NULL
 * with a message on stderr.
 */
struct fb_cred *fb_get_creds(const struct fb_opts *o, size_t n, size_t nrecv);

/* Raise the soft limit on open files to the hard one. */
void fb_raise_nofile(void);

/*
 * GET @path (e.g. "/v1/stats") from the admin API (o->admin, with the token
 * of --token or --token-file). 0 and *@body a malloc'ed NUL-terminated body
 * (the caller frees it) on HTTP 200; -1 with a message on stderr otherwise,
 * or without one when there is no admin URL or token.
 */
int fb_admin_get(const struct fb_opts *o, const char *path, char **body);

/*
 * One JSON object on one line (a scenario's result), built in place:
 * fb_json_begin(), members, fb_json_end() prints it to stdout. A NAN number
 * is written null. Keys and strings are the program's own (no escaping
 * beyond quotes and backslashes).
 */
struct fb_json {
	char buf[4096];
	size_t len;
};

void fb_json_begin(struct fb_json *j, const char *scenario, const char *label);
void fb_json_num(struct fb_json *j, const char *key, double v, int prec);
void fb_json_str(struct fb_json *j, const char *key, const char *v);
void fb_json_end(struct fb_json *j);

/* The members every scenario's line has, in this order (NAN: null). */
struct fb_fixed {
	double envelopes_per_s, p50_us, p99_us, p999_us;
	double ferryd_rss_bytes, bytes_per_connection;
	double cpu_us_per_envelope;	/* ferryd's */
	double gen_cpu_us_per_envelope; /* ferry-bench's own */
};

void fb_fixed_init(struct fb_fixed *f);
void fb_json_fixed(struct fb_json *j, const struct fb_fixed *f);

/* ferry-bench [options] SCENARIO N ...: the exit status (tools/bench_scen.c). */
int fb_run_scenario(struct fb_opts *o);

/* The scenarios of tools/bench_scen_store.c: offline, reconnect-storm, push. */
int fb_scen_offline(struct fb_opts *o);
int fb_scen_storm(struct fb_opts *o);
int fb_scen_push(struct fb_opts *o);

/*
 * PUT a push token for device @id (provider "apns", token @token) through
 * the admin API; 0, or -1 with a message on stderr.
 */
int fb_admin_put_push(const struct fb_opts *o, uint64_t id, const char *token);

/* The offline store mode (tools/bench_offline.c): the exit status. */
int fb_run_offline(const struct fb_opts *o);

/* The receipts mode (tools/bench_receipts.c): the exit status. */
int fb_run_receipts(const struct fb_opts *o);

/*
 * A command run beside a phase of online mode (--load NAME=CMD; see
 * tools/bench_load.c): /bin/sh -c CMD in a process group of its own, with
 * FERRY_BENCH_PHASE=NAME and FERRY_BENCH_RUN=N in its environment.
 */
struct fb_load {
	char name[32];
	const char *cmd; /* borrowed from argv */
	int pid;	 /* 0: not running */
};

/* Split @arg ("NAME=CMD", NAME of [a-z0-9_], 1-31 characters) into @l; -1 if bad. */
int fb_load_parse(const char *arg, struct fb_load *l);

/* Start @l for run @run; 0, or -1 with a message on stderr. */
int fb_load_start(struct fb_load *l, unsigned run);

/* 1 while @l runs; 0 once it has exited (reaped, with a message on stderr). */
int fb_load_running(struct fb_load *l);

/*
 * Stop @l: SIGINT to its process group (wrk then prints its report), and
 * SIGKILL if it has not exited within a few seconds. 0 when it ended with
 * status 0 or by that SIGINT; -1 otherwise (message on stderr). A no-op
 * returning 0 when it is not running.
 */
int fb_load_stop(struct fb_load *l);

/* Unaligned host-order integers in payload headers. */
static inline void fb_put_u32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static inline void fb_put_u64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

static inline uint32_t fb_get_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint64_t fb_get_u64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

#endif
