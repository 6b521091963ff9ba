/*
 * test_presence.c - the gateway's shared tables: presence (one connection per
 * device, replacement, removal only by the owner) and the duplicate-SEND table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gateway_int.h"
#include "common/banned.h"

static struct gateway gw;

static int setup(void **state)
{
	memset(&gw, 0, sizeof(gw));
	pthread_mutex_init(&gw.presence_lock, NULL);
	pthread_mutex_init(&gw.dedup_lock, NULL);
	return 0;
}

static int teardown(void **state)
{
	gw_presence_release(&gw);
	pthread_mutex_destroy(&gw.presence_lock);
	pthread_mutex_destroy(&gw.dedup_lock);
	return 0;
}

static void test_presence_replace_and_remove(void **state)
{
	unsigned worker, old_worker = 99;
	uint64_t conn, old_conn = 99;
	struct gw_peer p1 = {
		.since_ms = 1000, .addr = { 192, 0, 2, 1 }, .port = 5000, .family = AF_INET
	};
	struct gw_peer p2 = { .since_ms = 2000,
			      .addr = { 0x20, 0x01, 0x0d, 0xb8 },
			      .port = 6000,
			      .family = AF_INET6 };
	struct gw_peer got;

	assert_false(gw_presence_find(&gw, 7, &worker, &conn));
	assert_false(gw_presence_peer(&gw, 7, &worker, &got));
	assert_int_equal(gw_presence_add_locked(&gw, 7, 1, 100, &p1, &old_worker, &old_conn), 0);
	assert_true(gw_presence_find(&gw, 7, &worker, &conn));
	assert_int_equal(worker, 1);
	assert_int_equal(conn, 100);
	assert_true(gw_presence_peer(&gw, 7, &worker, &got));
	assert_int_equal(got.since_ms, 1000);
	assert_int_equal(got.port, 5000);
	assert_memory_equal(got.addr, p1.addr, 16);

	/* A second connection replaces the first and is told where it was;
	 * the entry then describes the new one. */
	assert_int_equal(gw_presence_add_locked(&gw, 7, 0, 200, &p2, &old_worker, &old_conn), 1);
	assert_int_equal(old_worker, 1);
	assert_int_equal(old_conn, 100);
	assert_true(gw_presence_peer(&gw, 7, &worker, &got));
	assert_int_equal(worker, 0);
	assert_int_equal(got.since_ms, 2000);
	assert_int_equal(got.family, AF_INET6);
	assert_int_equal(got.port, 6000);

	/* The replaced connection closing does not remove its successor. */
	gw_presence_remove_locked(&gw, 7, 100);
	assert_true(gw_presence_find(&gw, 7, &worker, &conn));
	assert_int_equal(conn, 200);
	gw_presence_remove_locked(&gw, 7, 200);
	assert_false(gw_presence_find(&gw, 7, &worker, &conn));
}

static void test_seen_batches(void **state)
{
	int64_t ids[8];
	size_t n;

	/* No device seen yet: no array either, and nothing to take. */
	assert_int_equal(gw_presence_take_seen(&gw, ids, 8), 0);
	gw_presence_seen(&gw, 1);
	gw_presence_seen(&gw, 2);
	gw_presence_seen(&gw, 1); /* once per flush */
	n = gw_presence_take_seen(&gw, ids, 8);
	assert_int_equal(n, 2);
	assert_true((ids[0] == 1 && ids[1] == 2) || (ids[0] == 2 && ids[1] == 1));
	assert_int_equal(gw_presence_take_seen(&gw, ids, 8), 0);
	for (int64_t i = 1; i <= 5; i++)
		gw_presence_seen(&gw, i);
	assert_int_equal(gw_presence_take_seen(&gw, ids, 3), 3);
	assert_int_equal(gw_presence_take_seen(&gw, ids, 8), 2);
}

static void test_dedup_verdicts(void **state)
{
	uint64_t acked = 0;

	assert_int_equal(gw_dedup_begin(&gw, 5, 42, 1000, 9001, &acked), GW_DEDUP_NEW);
	/* The same SEND again on the same connection while in progress: ignored. */
	assert_int_equal(gw_dedup_begin(&gw, 5, 42, 1000, 9002, &acked), GW_DEDUP_IGNORE);
	/* Another device's client id 42 is another SEND. */
	assert_int_equal(gw_dedup_begin(&gw, 6, 42, 1001, 9003, &acked), GW_DEDUP_NEW);
	/* From a newer connection of the device: taken over, processed anew. */
	assert_int_equal(gw_dedup_begin(&gw, 5, 42, 2000, 9004, &acked), GW_DEDUP_NEW);
	/* The old connection's failure does not forget the newer attempt... */
	gw_dedup_forget(&gw, 5, 42, 1000);
	assert_int_equal(gw_dedup_begin(&gw, 5, 42, 2000, 9005, &acked), GW_DEDUP_IGNORE);
	/* ...its success is remembered, with the server id of the newer one. */
	gw_dedup_acked(&gw, 5, 42, 9004);
	assert_int_equal(gw_dedup_begin(&gw, 5, 42, 3000, 9006, &acked), GW_DEDUP_ACKED);
	assert_int_equal(acked, 9004);
	/* A retransmission the store had from before a restart was ACKed with
	 * the store's first id: later copies get that one, not the new one. */
	assert_int_equal(gw_dedup_begin(&gw, 7, 1, 4000, 9100, &acked), GW_DEDUP_NEW);
	gw_dedup_acked(&gw, 7, 1, 8800);
	assert_int_equal(gw_dedup_begin(&gw, 7, 1, 4001, 9101, &acked), GW_DEDUP_ACKED);
	assert_int_equal(acked, 8800);
	/* An acknowledged SEND is not forgotten by a late failure report. */
	gw_dedup_forget(&gw, 5, 42, 2000);
	assert_int_equal(gw_dedup_begin(&gw, 5, 42, 3000, 9007, &acked), GW_DEDUP_ACKED);

	/* A NACKed SEND is forgotten, so its retransmission is processed anew. */
	gw_dedup_forget(&gw, 6, 42, 1001);
	assert_int_equal(gw_dedup_begin(&gw, 6, 42, 1001, 9008, &acked), GW_DEDUP_NEW);
}

/* The gateway's clock, for the dedup table's ages. */
uint64_t gw_now_ms(void)
{
	return 1000000;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_presence_replace_and_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seen_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dedup_verdicts, setup, teardown),
	};

	return cmocka_run_group_tests_name("presence", tests, NULL, NULL);
}
