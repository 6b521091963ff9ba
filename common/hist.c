/*
 * hist.c - latency histograms (hist.h).
 */
#include "common/hist.h"
#include "common/banned.h"

const uint64_t hist_latency_us[] = {
	100,	250,	500,	1000,	 2500,	  5000,	   10000,    25000,    50000,
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};
const size_t hist_latency_us_n = sizeof(hist_latency_us) / sizeof(hist_latency_us[0]);

_Static_assert(sizeof(hist_latency_us) / sizeof(hist_latency_us[0]) <= HIST_MAX_BOUNDS,
	       "too many latency buckets");

void hist_init(struct hist *h, const uint64_t *bounds, size_t n)
{
	h->bounds = bounds;
	h->n = n < HIST_MAX_BOUNDS ? n : HIST_MAX_BOUNDS;
	for (size_t i = 0; i <= HIST_MAX_BOUNDS; i++)
		atomic_init(&h->counts[i], 0);
	atomic_init(&h->sum, 0);
}

void hist_add(struct hist *h, uint64_t v)
{
	size_t i = 0;

	while (i < h->n && v > h->bounds[i])
		i++;
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

void hist_snap_init(struct hist_snap *s, const uint64_t *bounds, size_t n)
{
	*s = (struct hist_snap){ .bounds = bounds, .n = n < HIST_MAX_BOUNDS ? n : HIST_MAX_BOUNDS };
}

void hist_snap_add(struct hist_snap *s, const struct hist *h)
{
	for (size_t i = 0; i <= s->n; i++) {
		uint64_t c = atomic_load_explicit(&h->counts[i], memory_order_relaxed);

		s->counts[i] += c;
		s->count += c;
	}
	s->sum += atomic_load_explicit(&h->sum, memory_order_relaxed);
}

double hist_quantile(const struct hist_snap *s, double q)
{
	double rank, below = 0;

	if (!s->count || s->n == 0)
		return 0;
	rank = q * (double)s->count;
	for (size_t i = 0; i <= s->n; i++) {
		double lo = i ? (double)s->bounds[i - 1] : 0;
		double hi = i < s->n ? (double)s->bounds[i] : (double)s->bounds[s->n - 1];

		if (s->counts[i] && below + (double)s->counts[i] >= rank)
			return lo + (hi - lo) * ((rank - below) / (double)s->counts[i]);
		below += (double)s->counts[i];
	}
	return (double)s->bounds[s->n - 1];
}
