/*
 * test_wake.c - the wake table: coalescing, cancelling, cool-downs,
 * retries, the bound, and the heap's order under many timed entries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "push/push_int.h"
#include "common/banned.h"

static struct wake *take_one(struct wake_table *t, uint64_t now)
{
	struct wake *w[4];
	size_t n = wake_take(t, now, w, 4);

	assert_int_equal(n, 1);
	return w[0];
}

static void test_coalesce(void **state)
{
	struct wake_table t;
	struct wake *w[8];
	(void)state;

	wake_table_init(&t, 10);
	assert_int_equal(wake_add(&t, 7), WAKE_ADDED);
	for (int i = 0; i < 99; i++)
		assert_int_equal(wake_add(&t, 7), WAKE_COALESCED);
	assert_int_equal(t.count, 1);
	assert_int_equal(wake_take(&t, 0, w, 8), 1);
	assert_int_equal(w[0]->device, 7);
	assert_int_equal(w[0]->state, WAKE_BUSY);
	/* While the push is in flight, a wake is remembered, not pushed. */
	assert_int_equal(wake_add(&t, 7), WAKE_COALESCED);
	assert_int_equal(wake_take(&t, 0, w, 8), 0);
	wake_cool(&t, w[0], 30000);
	assert_int_equal(wake_next_at(&t), 30000);
	assert_int_equal(wake_take(&t, 29999, w, 8), 0);
	/* The cool-down is over and the device was woken meanwhile: again. */
	assert_int_equal(wake_take(&t, 30000, w, 8), 1);
	assert_int_equal(w[0]->device, 7);
	assert_int_equal(w[0]->attempts, 0);
	wake_cool(&t, w[0], 60000);
	/* Not woken during this cool-down: the entry goes. */
	assert_int_equal(wake_take(&t, 60000, w, 8), 0);
	assert_int_equal(t.count, 0);
	assert_int_equal(wake_next_at(&t), UINT64_MAX);
	wake_table_release(&t);
}

static void test_cancel(void **state)
{
	struct wake_table t;
	struct wake *w;
	(void)state;

	wake_table_init(&t, 10);
	assert_int_equal(wake_cancel(&t, 1), 0);
	wake_add(&t, 1);
	assert_int_equal(wake_cancel(&t, 1), 1);
	assert_int_equal(t.count, 0);
	assert_false(wake_ready(&t));

	/* Busy: marked, and gone when its work ends. */
	wake_add(&t, 2);
	w = take_one(&t, 0);
	assert_int_equal(wake_cancel(&t, 2), 1);
	assert_int_equal(t.count, 1);
	wake_cool(&t, w, 1000);
	assert_int_equal(t.count, 0);

	/* Busy, cancelled, then away again before the push ended: the new
	 * wake survives and pushes after the cool-down. */
	wake_add(&t, 4);
	w = take_one(&t, 0);
	assert_int_equal(wake_cancel(&t, 4), 1);
	assert_int_equal(wake_cancel(&t, 4), 0); /* counted once */
	assert_int_equal(wake_add(&t, 4), WAKE_COALESCED);
	wake_cool(&t, w, 1000);
	assert_int_equal(t.count, 1);
	w = take_one(&t, 1000);
	assert_int_equal(w->device, 4);
	wake_remove(&t, w);

	/* Cooling: removed; a new absence may push at once. */
	wake_add(&t, 3);
	w = take_one(&t, 0);
	wake_cool(&t, w, 1000);
	assert_int_equal(wake_cancel(&t, 3), 0);
	assert_int_equal(t.count, 0);
	assert_int_equal(wake_add(&t, 3), WAKE_ADDED);
	assert_true(wake_ready(&t));

	/* Waiting for a retry: removed. */
	w = take_one(&t, 0);
	wake_retry(&t, w, 500);
	assert_int_equal(wake_cancel(&t, 3), 1);
	assert_int_equal(wake_next_at(&t), UINT64_MAX);
	wake_table_release(&t);
}

static void test_retry(void **state)
{
	struct wake_table t;
	struct wake *w;
	(void)state;

	wake_table_init(&t, 10);
	wake_add(&t, 5);
	w = take_one(&t, 0);
	w->attempts = 1;
	wake_retry(&t, w, 2000);
	assert_int_equal(wake_add(&t, 5), WAKE_COALESCED);
	assert_false(wake_ready(&t));
	w = take_one(&t, 2000);
	assert_int_equal(w->attempts, 1); /* a retry keeps its count */
	wake_remove(&t, w);
	assert_int_equal(t.count, 0);
	wake_table_release(&t);
}

static void test_bound(void **state)
{
	struct wake_table t;
	struct wake *w[4];
	(void)state;

	wake_table_init(&t, 3);
	assert_int_equal(wake_add(&t, 1), WAKE_ADDED);
	assert_int_equal(wake_add(&t, 2), WAKE_ADDED);
	assert_int_equal(wake_add(&t, 3), WAKE_ADDED);
	/* Full: the oldest pending wake makes room. */
	assert_int_equal(wake_add(&t, 4), WAKE_REPLACED);
	assert_int_equal(t.count, 3);
	assert_int_equal(wake_take(&t, 0, w, 4), 3);
	assert_int_equal(w[0]->device, 2);
	assert_int_equal(w[1]->device, 3);
	assert_int_equal(w[2]->device, 4);
	/* Full of pushes in flight: a new wake is refused. */
	assert_int_equal(wake_add(&t, 5), WAKE_FULL);
	for (int i = 0; i < 3; i++)
		wake_cool(&t, w[i], 100);
	assert_int_equal(wake_add(&t, 5), WAKE_FULL);
	wake_take(&t, 100, w, 4); /* cool-downs over: room again */
	assert_int_equal(wake_add(&t, 5), WAKE_ADDED);
	wake_table_release(&t);
}

/* Many timed entries come out in time order, whatever order they went in. */
static void test_heap_order(void **state)
{
	enum { N = 2000 };
	struct wake_table t;
	struct wake **w = calloc(N, sizeof(*w));
	uint64_t last = 0;
	size_t n, seen = 0;
	(void)state;

	assert_non_null(w);
	wake_table_init(&t, N);
	for (int i = 0; i < N; i++)
		wake_add(&t, i + 1);
	assert_int_equal(wake_take(&t, 0, w, N), N);
	srand(42);
	for (int i = 0; i < N; i++) {
		w[i]->again = 1;
		wake_cool(&t, w[i], 1 + (uint64_t)(rand() % 100000));
	}
	/* Cancel a few from the middle of the heap. */
	for (int i = 0; i < N; i += 7)
		wake_cancel(&t, i + 1);
	while (t.nheap) {
		uint64_t at = wake_next_at(&t);

		assert_true(at >= last);
		last = at;
		n = wake_take(&t, at, w, N);
		for (size_t i = 0; i < n; i++)
			wake_remove(&t, w[i]);
		seen += n;
	}
	assert_int_equal(seen, N - (N + 6) / 7);
	assert_int_equal(t.count, 0);
	wake_table_release(&t);
	free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_coalesce),   cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_retry),	   cmocka_unit_test(test_bound),
		cmocka_unit_test(test_heap_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
