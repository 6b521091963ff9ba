/*
 * store.c - the offline envelope store: its thread, its mailbox, dispatch,
 * the expiry timer, stop and the counters.
 *
 * Design: one thread runs one libuv loop. Requests arrive through the store's
 * mailbox from any thread and go to the writers (PUT, BARRIER: store_write.c)
 * or to a reader (FETCH, DELETE, COUNT: store_read.c). conns[0 .. writers-1]
 * write, a device's PUTs always on the same writer; the others read, a
 * device's reads always on the same reader while it is up, so they run in
 * the order they were submitted. Work produced while handling
 * events is sent and flushed from the loop's prepare callback, just before the
 * loop blocks: whatever arrived in one iteration shares one write and one
 * round trip, and PUTs that arrived while a writer's batch was in flight
 * become its next batch.
 *
 * Invariants: every request gets exactly one reply, posted from this thread
 * (or from queue_store_submit's caller once the mailbox is closed). A PUT is
 * answered FERRY_OK only after the COMMITs of all its parts succeeded. While
 * a needed connection is down, requests are answered FERRY_EUNAVAIL at once;
 * the store is ready while every writer and at least one reader are up.
 *
 * Stop: queued requests are answered FERRY_EUNAVAIL and the mailbox closes;
 * what is in flight may finish for STORE_STOP_WAIT_MS; then the connections
 * close (anything still in flight: FERRY_EUNAVAIL) and the thread ends.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "queue/store_int.h"
#include "common/banned.h"

_Static_assert(sizeof(struct mailbox_msg) <= sizeof(((struct queue_req *)0)->store_private[0]),
	       "a mailbox link fits in store_private[0]");

static struct mailbox_msg *req_msg(struct queue_req *req)
{
	return (struct mailbox_msg *)(void *)&req->store_private[0];
}

static struct queue_req *msg_req(struct mailbox_msg *msg)
{
	return (struct queue_req *)(void *)((char *)msg -
					    offsetof(struct queue_req, store_private));
}

void store_reply(struct queue_store *st, struct queue_req *req, enum ferry_err rc)
{
	req->rc = rc;
	req->store_private[0] = NULL;
	req->store_private[1] = NULL;
	if (mailbox_post(req->reply_to, req->reply))
		log_warn("event=store_reply_lost type=%d reason=\"reply mailbox closed\"",
			 (int)req->type);
}

void store_update_ready(struct queue_store *st)
{
	int readers = 0, writers = 1;

	for (unsigned i = 0; i < st->nwriters; i++)
		writers &= store_conn_ready(&st->conns[i]);
	for (unsigned i = st->nwriters; i < st->nconn; i++)
		readers |= store_conn_ready(&st->conns[i]);
	atomic_store(&st->ready, !st->closing && writers && readers);
}

/* ---- stop ---- */

static void close_all(struct queue_store *st)
{
	if (st->closing)
		return;
	st->closing = 1;
	atomic_store(&st->ready, 0);
	uv_timer_stop(&st->stop_timer);
	uv_close((uv_handle_t *)&st->stop_timer, NULL);
	uv_close((uv_handle_t *)&st->expire_timer, NULL);
	uv_close((uv_handle_t *)&st->prepare, NULL);
	for (unsigned i = 0; i < st->nconn; i++)
		store_conn_close(&st->conns[i]);
}

void store_maybe_finish(struct queue_store *st)
{
	if (st->stopping && !st->closing && !st->batches_inflight && !st->reads_inflight &&
	    !st->sweep_busy)
		close_all(st);
}

static void on_stop_timeout(uv_timer_t *t)
{
	struct queue_store *st = t->data;

	log_warn("event=store_stop_timeout batches_in_flight=%u reads_in_flight=%u",
		 st->batches_inflight, st->reads_inflight);
	close_all(st);
}

static void begin_stop(struct queue_store *st)
{
	st->stopping = 1;
	store_writer_drop_queued(st);
	/* Whatever is still in the mailbox is answered by on_request. */
	mailbox_close(&st->mb, NULL);
	uv_timer_stop(&st->expire_timer);
	uv_timer_start(&st->stop_timer, on_stop_timeout, STORE_STOP_WAIT_MS, 0);
	store_maybe_finish(st);
}

/* ---- requests ---- */

static void on_request(struct mailbox *mb, struct mailbox_msg *msg, void *arg)
{
	struct queue_store *st = arg;
	struct queue_req *req;

	if (msg == &st->stop_msg) {
		if (!st->stopping)
			begin_stop(st);
		return;
	}
	req = msg_req(msg);
	if (st->stopping) {
		if (req->type == QUEUE_REQ_PUT) {
			STAT_ADD(st, puts, 1);
			STAT_ADD(st, put_unavail, 1);
		}
		store_reply(st, req, FERRY_EUNAVAIL);
		return;
	}
	switch (req->type) {
	case QUEUE_REQ_PUT:
	case QUEUE_REQ_BARRIER:
		store_writer_submit(st, req);
		return;
	case QUEUE_REQ_FETCH:
	case QUEUE_REQ_DELETE:
	case QUEUE_REQ_COUNT:
		store_read_submit(st, req);
		return;
	}
	store_reply(st, req, FERRY_EINVAL);
}

/* Before the loop blocks: send what handling events produced, flush. */
static void on_prepare(uv_prepare_t *h)
{
	struct queue_store *st = h->data;

	for (unsigned i = 0; i < st->nconn && !st->closing; i++)
		store_conn_prepare(&st->conns[i]);
	if (st->closing)
		return;
	store_writer_kick(st);
	if (st->sweep_again && !st->stopping) {
		st->sweep_again = 0;
		store_sweep_start(st);
	}
	for (unsigned i = 0; i < st->nconn && !st->closing; i++)
		store_conn_prepare(&st->conns[i]);
}

static void on_expire_timer(uv_timer_t *t)
{
	store_sweep_start(t->data);
}

static void writer_down(struct store_conn *c)
{
	store_writer_down(&c->st->w[c - c->st->conns]);
}

/* ---- lifecycle ---- */

/* How many of the connections write: writers, or by default 2 (keeping
 * one reader). */
static unsigned writers_of(const struct queue_store_opts *o)
{
	if (o->writers)
		return o->writers;
	return o->connections > 2 ? 2 : 1;
}

static const char *check_opts(const struct queue_store_opts *o)
{
	if (!o->conninfo)
		return "[store] conninfo is not set";
	if (o->connections < 2 || o->connections > STORE_MAX_CONNECTIONS)
		return "[store] connections must be between 2 and 64";
	if (writers_of(o) >= o->connections)
		return "[store] writers must be less than connections (at least one reads)";
	if (!o->batch_max)
		return "[store] batch_max must be at least 1";
	if (!o->max_inflight_bytes)
		return "[store] max_inflight_bytes must be at least 1";
	if (!o->default_ttl)
		return "[store] default_ttl must be at least 1";
	if (!o->expire_interval || !o->expire_batch)
		return "[store] expire_interval and expire_batch must be at least 1";
	return NULL;
}

static void *store_main(void *arg)
{
	struct queue_store *st = arg;

	uv_run(&st->loop, UV_RUN_DEFAULT);
	return NULL;
}

/* Initialise the loop's handles; on failure the loop is left for the caller
 * to run (closing what was opened) and close. */
static enum ferry_err start_handles(struct queue_store *st)
{
	char name[24];

	if (uv_prepare_init(&st->loop, &st->prepare) || uv_timer_init(&st->loop, &st->stop_timer) ||
	    uv_timer_init(&st->loop, &st->expire_timer))
		return FERRY_EIO;
	st->prepare.data = st->stop_timer.data = st->expire_timer.data = st;
	uv_prepare_start(&st->prepare, on_prepare);
	uv_timer_start(&st->expire_timer, on_expire_timer, st->opts.expire_interval,
		       st->opts.expire_interval);
	for (unsigned i = 0; i < st->opts.connections; i++) {
		int writes = i < st->nwriters;

		if (writes) {
			store_writer_init(st, i);
			snprintf(name, sizeof(name), "writer%u", i + 1);
		} else {
			snprintf(name, sizeof(name), "reader%u", i - st->nwriters + 1);
		}
		if (store_conn_init(&st->conns[i], st, &st->loop, name, NULL,
				    writes ? writer_down : NULL))
			return FERRY_EIO;
		st->nconn = i + 1;
	}
	return FERRY_OK;
}

static void store_free(struct queue_store *st)
{
	free(st->conninfo);
	free(st);
}

struct queue_store *queue_store_start(const struct queue_store_opts *opts, char *err, size_t errlen)
{
	const char *bad = check_opts(opts);
	struct queue_store *st;

	if (bad) {
		snprintf(err, errlen, "%s", bad);
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (!st || !(st->conninfo = strdup(opts->conninfo))) {
		free(st);
		snprintf(err, errlen, "cannot start the store: out of memory");
		return NULL;
	}
	st->opts = *opts;
	hist_init(&st->commit_hist, hist_latency_us, hist_latency_us_n);
	st->opts.conninfo = st->conninfo;
	st->opts.writers = st->nwriters = writers_of(opts);
	if (uv_loop_init(&st->loop)) {
		snprintf(err, errlen, "cannot start the store: no event loop");
		store_free(st);
		return NULL;
	}
	if (mailbox_init(&st->mb, &st->loop, on_request, st)) {
		uv_loop_close(&st->loop);
		snprintf(err, errlen, "cannot start the store: no mailbox");
		store_free(st);
		return NULL;
	}
	if (start_handles(st) || pthread_create(&st->thread, NULL, store_main, st)) {
		/* Unwind on this thread: the stop path closes every handle. */
		snprintf(err, errlen, "cannot start the store thread");
		st->stopping = 1;
		mailbox_close(&st->mb, NULL);
		close_all(st);
		uv_run(&st->loop, UV_RUN_DEFAULT);
		uv_loop_close(&st->loop);
		store_free(st);
		return NULL;
	}
	log_info("event=store_started connections=%u writers=%u batch_max=%u max_pending=%u "
		 "max_inflight_bytes=%zu default_ttl=%u",
		 opts->connections, st->nwriters, opts->batch_max, opts->max_pending_per_device,
		 opts->max_inflight_bytes, opts->default_ttl);
	return st;
}

void queue_store_submit(struct queue_store *st, struct queue_req *req)
{
	if (!mailbox_post(&st->mb, req_msg(req)))
		return;
	/* The store is stopping: answer here, on the caller's thread. */
	req->rc = FERRY_EUNAVAIL;
	if (mailbox_post(req->reply_to, req->reply))
		log_warn("event=store_reply_lost type=%d reason=\"reply mailbox closed\"",
			 (int)req->type);
}

int queue_store_ready(const struct queue_store *st)
{
	return atomic_load(&st->ready);
}

void queue_store_stop(struct queue_store *st)
{
	if (!st)
		return;
	if (mailbox_post(&st->mb, &st->stop_msg))
		log_warn("event=store_stop reason=\"mailbox already closed\"");
	pthread_join(st->thread, NULL);
	if (uv_loop_close(&st->loop))
		log_warn("event=store_stop reason=\"handles left open\"");
	log_info("event=store_stopped puts=%llu batches=%llu",
		 (unsigned long long)STAT_GET(st, puts), (unsigned long long)STAT_GET(st, batches));
	store_free(st);
}

void queue_rows_free(struct queue_row *rows, size_t n)
{
	free(rows);
}

void queue_store_commit_hist(const struct queue_store *st, struct hist_snap *out)
{
	hist_snap_add(out, &st->commit_hist);
}

void queue_store_stats(const struct queue_store *st, struct queue_store_stats *out)
{
	/* The counters are atomics; the cast only drops const for the loads. */
	struct queue_store *s = (struct queue_store *)st;

	memset(out, 0, sizeof(*out));
	out->puts = STAT_GET(s, puts);
	out->put_stored = STAT_GET(s, put_stored);
	out->put_duplicate = STAT_GET(s, put_duplicate);
	out->put_full = STAT_GET(s, put_full);
	out->put_gone = STAT_GET(s, put_gone);
	out->put_unavail = STAT_GET(s, put_unavail);
	out->put_limit = STAT_GET(s, put_limit);
	out->put_invalid = STAT_GET(s, put_invalid);
	out->barriers = STAT_GET(s, barriers);
	out->batches = STAT_GET(s, batches);
	out->batch_puts = STAT_GET(s, batch_puts);
	out->batch_envelopes = STAT_GET(s, batch_envelopes);
	out->batch_largest = STAT_GET(s, batch_largest);
	out->batch_failures = STAT_GET(s, batch_failures);
	out->commit_us_total = STAT_GET(s, commit_us_total);
	out->commit_us_max = STAT_GET(s, commit_us_max);
	out->commit_us_last = STAT_GET(s, commit_us_last);
	out->fetches = STAT_GET(s, fetches);
	out->fetched_rows = STAT_GET(s, fetched_rows);
	out->deletes = STAT_GET(s, deletes);
	out->deleted_rows = STAT_GET(s, deleted_rows);
	out->counts = STAT_GET(s, counts);
	out->read_failures = STAT_GET(s, read_failures);
	out->expired_rows = STAT_GET(s, expired_rows);
	out->expire_sweeps = STAT_GET(s, expire_sweeps);
	out->connects = STAT_GET(s, connects);
	out->connect_failures = STAT_GET(s, connect_failures);
	out->inflight_bytes = STAT_GET(s, inflight_bytes);
	out->queued_puts = STAT_GET(s, queued_puts);
	out->ready = atomic_load(&s->ready);
}
