/*
 * hist.h - latency histograms with fixed buckets, cheap to add to from one
 * thread while others read them.
 *
 * A histogram counts values (microseconds, or any unit) into buckets whose
 * upper bounds are fixed at init, plus one for everything larger, and keeps
 * their sum. Adding is two relaxed atomic increments and a short scan of
 * the bounds; a hot path gives each thread a histogram of its own, and the
 * reader sums them into a snapshot (hist_snap_add), from which quantiles are
 * estimated and the Prometheus form is written (cumulative buckets, _sum,
 * _count).
 */
#ifndef FERRY_COMMON_HIST_H
#define FERRY_COMMON_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_MAX_BOUNDS 20

struct hist {
	const uint64_t *bounds; /* ascending upper bounds (inclusive), borrowed */
	size_t n;		/* at most HIST_MAX_BOUNDS */
	atomic_uint_fast64_t counts[HIST_MAX_BOUNDS + 1]; /* [n]: above the last bound */
	atomic_uint_fast64_t sum;
};

/* A copy of one or more histograms with the same bounds. */
struct hist_snap {
	const uint64_t *bounds;
	size_t n;
	uint64_t counts[HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative */
	uint64_t count, sum;
};

/* @bounds (@n of them, ascending) must outlive @h. */
void hist_init(struct hist *h, const uint64_t *bounds, size_t n);
void hist_add(struct hist *h, uint64_t v);

void hist_snap_init(struct hist_snap *s, const uint64_t *bounds, size_t n);
/* Add @h (which has @s's bounds) to @s. */
void hist_snap_add(struct hist_snap *s, const struct hist *h);
/* The @q quantile (0 to 1), interpolated inside its bucket; 0 when empty.
 * Values above the last bound count as the last bound. */
double hist_quantile(const struct hist_snap *s, double q);

/* Bounds in microseconds: 100 us to 60 s, for latencies of delivery,
 * commits and pushes. */
extern const uint64_t hist_latency_us[];
extern const size_t hist_latency_us_n;

#endif
