/*
 * test_receipts.c - the receipt batcher: coalescing by count and by time,
 * read superseding delivered, the memory bound, nothing lost.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue/receipts.h"
#include "common/banned.h"

#define MAX_FLUSHES 4096

struct flushed {
	int64_t device;
	char target[80];
	char peer[80];
	size_t ntags;
	void *tags[8];
	int kind;
	size_t n;
	uint64_t ids[RECEIPTS_MAX_BATCH];
};

static struct flushed got[MAX_FLUSHES];
static size_t ngot;

static void on_flush(void *arg, const struct receipt_batch *b)
{
	struct flushed *f = &got[ngot++];

	(void)arg;
	assert_true(ngot <= MAX_FLUSHES);
	f->device = b->target_device;
	snprintf(f->target, sizeof(f->target), "%s", b->target_user);
	snprintf(f->peer, sizeof(f->peer), "%s", b->peer_user);
	assert_true(b->ntags <= 8);
	f->ntags = b->ntags;
	for (size_t i = 0; i < b->ntags; i++)
		f->tags[i] = b->tags[i];
	f->kind = b->kind;
	f->n = b->n;
	memcpy(f->ids, b->ids, b->n * sizeof(b->ids[0]));
}

static struct receipts *batcher(unsigned max_batch, unsigned interval, size_t max_ids)
{
	struct receipts_opts o = { max_batch, interval, max_ids };
	struct receipts *r = receipts_new(&o, on_flush, NULL);

	assert_non_null(r);
	ngot = 0;
	return r;
}

/* The tests' receipts all go to user "t". */
static enum ferry_err add(struct receipts *r, int64_t device, const char *peer, int kind,
			  const uint64_t *ids, size_t n, uint64_t now_ms)
{
	struct receipt_add a = { device, "t", peer, kind, ids, n, NULL, 0 };

	return receipts_add(r, &a, now_ms);
}

static int has(const struct flushed *f, uint64_t id)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->ids[i] == id)
			return 1;
	return 0;
}

static void test_by_count(void **state)
{
	struct receipts *r = batcher(4, 50, 0);
	uint64_t ids[10] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
	(void)state;

	assert_int_equal(add(r, 7, "alice", RECEIPT_DELIVERED, ids, 3, 0), FERRY_OK);
	assert_int_equal(ngot, 0);
	assert_int_equal(add(r, 7, "alice", RECEIPT_DELIVERED, ids + 3, 7, 1), FERRY_OK);
	/* 10 ids, 4 a batch: two full batches now, 2 ids wait. */
	assert_int_equal(ngot, 2);
	assert_int_equal(got[0].n, 4);
	assert_int_equal(got[0].device, 7);
	assert_string_equal(got[0].peer, "alice");
	assert_int_equal(got[0].kind, RECEIPT_DELIVERED);
	assert_int_equal(got[1].n, 4);
	assert_true(has(&got[1], 8));
	receipts_free(r); /* flushes the rest */
	assert_int_equal(ngot, 3);
	assert_int_equal(got[2].n, 2);
	assert_true(has(&got[2], 9) && has(&got[2], 10));
}

static void test_by_time(void **state)
{
	struct receipts *r = batcher(100, 50, 0);
	uint64_t a = 1, b = 2, c = 3;
	struct receipts_stats st;
	(void)state;

	assert_int_equal(add(r, 1, "bob", RECEIPT_READ, &a, 1, 1000), FERRY_OK);
	assert_int_equal(add(r, 2, "bob", RECEIPT_READ, &b, 1, 1010), FERRY_OK);
	assert_int_equal(add(r, 1, "bob", RECEIPT_READ, &c, 1, 1040), FERRY_OK);
	assert_int_equal(receipts_next_due(r), 1050);
	receipts_tick(r, 1049);
	assert_int_equal(ngot, 0);
	receipts_tick(r, 1050);
	/* The first key went with both its ids; the second is not due yet. */
	assert_int_equal(ngot, 1);
	assert_int_equal(got[0].device, 1);
	assert_int_equal(got[0].n, 2);
	assert_int_equal(receipts_next_due(r), 1060);
	receipts_tick(r, 1060);
	assert_int_equal(ngot, 2);
	assert_int_equal(receipts_next_due(r), UINT64_MAX);
	receipts_stats(r, &st);
	assert_int_equal(st.by_time, 2);
	assert_int_equal(st.ids_out, 3);
	assert_int_equal(st.pending, 0);
	assert_int_equal(st.keys, 0);
	receipts_free(r);
}

static void test_dedup_and_keys(void **state)
{
	struct receipts *r = batcher(100, 50, 0);
	uint64_t ids[3] = { 5, 5, 6 };
	struct receipts_stats st;
	(void)state;

	/* The same message delivered to three of the peer's devices: once. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(add(r, 9, "carol", RECEIPT_DELIVERED, ids, 3, 0), FERRY_OK);
	/* Other peer, other device: other keys. */
	assert_int_equal(add(r, 9, "dave", RECEIPT_DELIVERED, ids, 1, 0), FERRY_OK);
	assert_int_equal(add(r, 10, "carol", RECEIPT_DELIVERED, ids, 1, 0), FERRY_OK);
	receipts_stats(r, &st);
	assert_int_equal(st.keys, 3);
	assert_int_equal(st.pending, 4);
	assert_int_equal(st.duplicates, 7);
	receipts_flush_all(r);
	assert_int_equal(ngot, 3);
	assert_int_equal(got[0].n, 2);
	assert_int_equal(add(r, 9, "", RECEIPT_READ, ids, 1, 0), FERRY_EINVAL);
	assert_int_equal(add(r, 9, "x", 3, ids, 1, 0), FERRY_EINVAL);
	receipts_free(r);
}

static void test_read_supersedes_delivered(void **state)
{
	struct receipts *r = batcher(100, 50, 0);
	uint64_t d[3] = { 1, 2, 3 }, rd[2] = { 2, 4 };
	struct receipts_stats st;
	(void)state;

	assert_int_equal(add(r, 1, "eve", RECEIPT_DELIVERED, d, 3, 0), FERRY_OK);
	assert_int_equal(add(r, 1, "eve", RECEIPT_READ, rd, 2, 5), FERRY_OK);
	/* Delivered after read: nothing new to say. */
	assert_int_equal(add(r, 1, "eve", RECEIPT_DELIVERED, rd, 1, 6), FERRY_OK);
	receipts_flush_all(r);
	assert_int_equal(ngot, 2);
	assert_int_equal(got[0].kind, RECEIPT_DELIVERED);
	assert_int_equal(got[0].n, 2);
	assert_true(has(&got[0], 1) && has(&got[0], 3) && !has(&got[0], 2));
	assert_int_equal(got[1].kind, RECEIPT_READ);
	assert_int_equal(got[1].n, 2);
	receipts_stats(r, &st);
	assert_int_equal(st.superseded, 2);

	/* Every delivered read: the delivered key goes entirely. */
	ngot = 0;
	assert_int_equal(add(r, 2, "eve", RECEIPT_DELIVERED, d, 1, 10), FERRY_OK);
	assert_int_equal(add(r, 2, "eve", RECEIPT_READ, d, 1, 11), FERRY_OK);
	receipts_tick(r, 100);
	assert_int_equal(ngot, 1);
	assert_int_equal(got[0].kind, RECEIPT_READ);
	receipts_free(r);
}

/* Past max_ids the oldest key goes early; nothing is ever dropped. */
static void test_memory_bound_loses_nothing(void **state)
{
	struct receipts *r = batcher(64, 50, 200);
	struct receipts_stats st;
	uint64_t sum_in = 0, sum_out = 0;
	(void)state;

	for (uint64_t i = 1; i <= 3000; i++) {
		char peer[16] = "p";

		peer[1] = (char)('a' + i % 20);
		assert_int_equal(add(r, (int64_t)(i % 7), peer, RECEIPT_DELIVERED, &i, 1, i / 10),
				 FERRY_OK);
		sum_in += i;
		receipts_stats(r, &st);
		assert_true(st.pending <= 200);
	}
	receipts_free(r);
	for (size_t f = 0; f < ngot; f++)
		for (size_t k = 0; k < got[f].n; k++)
			sum_out += got[f].ids[k];
	assert_int_equal(sum_out, sum_in);
}

/* A waiter's tag comes back once with every batch that holds its ids,
 * and receipts_add() says how many that is. */
static void test_tags(void **state)
{
	struct receipts *r = batcher(4, 50, 0);
	int w1, w2;
	uint64_t ids[6] = { 1, 2, 3, 4, 5, 6 };
	struct receipt_add a = { 5, "alice", "bob", RECEIPT_READ, ids, 6, &w1, 0 };
	struct receipt_add b = { 5, "alice", "bob", RECEIPT_READ, ids + 5, 1, &w2, 0 };
	(void)state;

	/* 6 ids, 4 per batch: one batch flushed at once, one pending; both tagged. */
	assert_int_equal(receipts_add(r, &a, 0), FERRY_OK);
	assert_int_equal(a.tagged, 2);
	assert_int_equal(ngot, 1);
	assert_int_equal(got[0].ntags, 1);
	assert_ptr_equal(got[0].tags[0], &w1);
	assert_string_equal(got[0].target, "alice");
	/* Id 6 is pending already: the second waiter still waits for that batch. */
	assert_int_equal(receipts_add(r, &b, 1), FERRY_OK);
	assert_int_equal(b.tagged, 1);
	receipts_tick(r, 50);
	assert_int_equal(ngot, 2);
	assert_int_equal(got[1].n, 2);
	assert_int_equal(got[1].ntags, 2);
	assert_ptr_equal(got[1].tags[0], &w1);
	assert_ptr_equal(got[1].tags[1], &w2);
	/* The same device and peer for another target user is another key. */
	a.target_user = "carol";
	a.n = 1;
	assert_int_equal(receipts_add(r, &a, 60), FERRY_OK);
	a.target_user = "alice";
	assert_int_equal(receipts_add(r, &a, 60), FERRY_OK);
	receipts_free(r);
	assert_int_equal(ngot, 4);
	assert_string_equal(got[2].target, "carol");
	assert_string_equal(got[3].target, "alice");
	a.target_user = "";
	r = batcher(4, 50, 0);
	assert_int_equal(receipts_add(r, &a, 0), FERRY_EINVAL);
	receipts_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_by_count),
		cmocka_unit_test(test_by_time),
		cmocka_unit_test(test_dedup_and_keys),
		cmocka_unit_test(test_read_supersedes_delivered),
		cmocka_unit_test(test_memory_bound_loses_nothing),
		cmocka_unit_test(test_tags),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
