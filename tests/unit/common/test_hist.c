/*
 * test_hist.c - latency histograms: bucketing at the bounds, the overflow
 * bucket, sums across histograms, quantile estimates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/hist.h"
#include "common/banned.h"

static const uint64_t bounds[] = { 10, 100, 1000 };

static void test_buckets(void **state)
{
	struct hist h;
	struct hist_snap s;
	(void)state;

	hist_init(&h, bounds, 3);
	hist_add(&h, 0);
	hist_add(&h, 10); /* a bound is inclusive */
	hist_add(&h, 11);
	hist_add(&h, 1000);
	hist_add(&h, 5000); /* above the last bound */
	hist_snap_init(&s, bounds, 3);
	hist_snap_add(&s, &h);
	assert_int_equal(s.counts[0], 2);
	assert_int_equal(s.counts[1], 1);
	assert_int_equal(s.counts[2], 1);
	assert_int_equal(s.counts[3], 1);
	assert_int_equal(s.count, 5);
	assert_int_equal(s.sum, 6021);
	/* Two workers' histograms add up. */
	hist_snap_add(&s, &h);
	assert_int_equal(s.count, 10);
	assert_int_equal(s.counts[3], 2);
}

static void test_quantiles(void **state)
{
	struct hist h;
	struct hist_snap s;
	(void)state;

	hist_snap_init(&s, bounds, 3);
	assert_true(hist_quantile(&s, 0.5) == 0.0); /* empty */
	hist_init(&h, bounds, 3);
	for (int i = 0; i < 100; i++)
		hist_add(&h, 50); /* all in (10, 100] */
	hist_snap_add(&s, &h);
	/* Interpolated inside the bucket: the median half way from 10 to 100. */
	assert_true(hist_quantile(&s, 0.5) > 54.9 && hist_quantile(&s, 0.5) < 55.1);
	assert_true(hist_quantile(&s, 1.0) > 99.9 && hist_quantile(&s, 1.0) <= 100.0);
	hist_add(&h, 1u << 30);
	hist_snap_init(&s, bounds, 3);
	hist_snap_add(&s, &h);
	/* The overflow bucket reports the last bound. */
	assert_true(hist_quantile(&s, 1.0) == 1000.0);
	assert_true(hist_latency_us_n <= HIST_MAX_BOUNDS);
	for (size_t i = 1; i < hist_latency_us_n; i++)
		assert_true(hist_latency_us[i] > hist_latency_us[i - 1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_quantiles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
