/*
 * store_conn.c - one libpq connection of the store: non-blocking, in pipeline
 * mode, driven by the store's libuv loop.
 *
 * Design: the connection is opened with PQconnectStartParams/PQconnectPoll on
 * a uv_poll_t, then switched to non-blocking pipeline mode and every
 * statement the store uses is prepared (the "setup" segment); only then is it
 * READY. Work is sent as segments (queries + one Sync) that complete in the
 * order sent; results are matched to their segment by counting the NULL that
 * ends each query's results. Output is flushed once per loop iteration (the
 * store's prepare callback), so requests handled in one iteration share one
 * write and one round trip.
 *
 * Failure: a lost connection, a failed send, a query in flight longer than
 * STORE_QUERY_TIMEOUT_MS or a failed setup ends every segment in flight with
 * FERRY_EUNAVAIL, tells the owner (on_down) and reconnects after a backoff that
 * doubles from STORE_BACKOFF_MIN_MS to STORE_BACKOFF_MAX_MS (reset once a
 * connection is READY). Whether an unanswered COMMIT happened is unknown; the
 * owner answers "not stored" and the sender retransmits (dedup absorbs it).
 *
 * Ownership: the connection borrows its segments (the owner keeps them alive
 * until on_done). A poll handle watches one socket through a descriptor of
 * its own (a dup of libpq's), closed with the handle: libpq closes its
 * descriptor by itself when it sees the connection lost (inside
 * PQconsumeInput), and the loop must never be left watching a number that
 * another thread may already have reused. While connecting, when libpq may
 * replace the socket, the handle is made anew at each step.
 *
 * Limits: PQconnectStartParams resolves host names synchronously; use an
 * address or a socket directory where that matters.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <uv.h>

#include "common/log.h"
#include "queue/pg_int.h"
#include "queue/store_int.h"
#include "common/banned.h"

static const struct {
	const char *name;
	const char *sql;
} stmts[STMT_N] = {
	[STMT_PUT] = { "ferry_put_batch",
		       "SELECT * FROM ferry_put_batch($1::bigint[], $2::integer[], $3::bigint[], "
		       "$4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bytea, "
		       "$9::integer[], $10::bigint[], $11::integer[], $12::bigint)" },
	[STMT_FETCH] = { "ferry_fetch",
			 "SELECT seq, server_id, sender_user, sender_device, client_id, "
			 "(CASE kind WHEN 'message' THEN 1 ELSE 2 END)::bigint, "
			 "(extract(epoch FROM created) * 1000)::bigint, payload FROM envelopes "
			 "WHERE recipient_device = $1::bigint AND seq > $2::bigint "
			 "AND expires > now() ORDER BY seq LIMIT $3::bigint" },
	[STMT_DELETE] = { "ferry_delete", "SELECT ferry_delete($1::bigint, $2::bigint[])" },
	[STMT_COUNT] = { "ferry_count", "SELECT pending FROM devices WHERE id = $1::bigint" },
	[STMT_EXPIRE] = { "ferry_expire", "SELECT ferry_expire($1::integer)" },
};

static void conn_fail(struct store_conn *c, const char *what, const char *msg);
static void on_poll(uv_poll_t *h, int status, int events);

static void notice_to_log(void *arg, const char *message)
{
	size_t n = strlen(message);

	if (n && message[n - 1] == '\n')
		n--;
	log_debug("event=pg_notice message=\"%.*s\"", (int)n, message);
}

/* A poll handle and the descriptor it watches. */
struct poll_handle {
	uv_poll_t h; /* first: the handle's address is the struct's */
	int fd;	     /* a dup of libpq's socket, closed with the handle */
};

static void poll_closed(uv_handle_t *h)
{
	struct poll_handle *p = (struct poll_handle *)h;

	close(p->fd);
	free(p);
}

static void poll_release(struct store_conn *c)
{
	if (!c->poll)
		return;
	uv_poll_stop(c->poll);
	uv_close((uv_handle_t *)c->poll, poll_closed);
	c->poll = NULL;
	c->poll_events = 0;
}

/* Watch the connection's current socket for @events. */
static void poll_watch(struct store_conn *c, int events)
{
	int fd = PQsocket(c->pg);
	int rc;

	if (fd < 0) {
		conn_fail(c, "no socket", PQerrorMessage(c->pg));
		return;
	}
	if (c->poll && c->poll_fd != fd)
		poll_release(c);
	if (!c->poll) {
		struct poll_handle *p = malloc(sizeof(*p));

		if (!p) {
			conn_fail(c, "out of memory", "");
			return;
		}
		p->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (p->fd < 0) {
			free(p);
			conn_fail(c, "cannot poll the socket", strerror(errno));
			return;
		}
		rc = uv_poll_init(&c->st->loop, &p->h, p->fd);
		if (rc) {
			close(p->fd);
			free(p);
			conn_fail(c, "cannot poll the socket", uv_strerror(rc));
			return;
		}
		c->poll = &p->h;
		c->poll->data = c;
		c->poll_fd = fd;
		c->poll_events = 0;
	}
	if (events == c->poll_events)
		return;
	rc = uv_poll_start(c->poll, events, on_poll);
	if (rc) {
		conn_fail(c, "cannot poll the socket", uv_strerror(rc));
		return;
	}
	c->poll_events = events;
}

static void on_timer(uv_timer_t *t);

static void timer_in(struct store_conn *c, uint64_t ms, uint64_t repeat)
{
	uv_timer_start(&c->timer, on_timer, ms, repeat);
}

/* End every segment in flight with @rc. */
static void fail_segments(struct store_conn *c, enum ferry_err rc)
{
	while (c->head) {
		struct store_seg *seg = c->head;

		c->head = seg->next;
		if (!c->head)
			c->tail = NULL;
		seg->next = NULL;
		if (seg->on_done)
			seg->on_done(seg, rc);
	}
}

static void conn_fail(struct store_conn *c, const char *what, const char *msg)
{
	char reason[512];
	int was_ready = c->state == CONN_READY;

	if (c->state == CONN_DOWN || c->state == CONN_CLOSED)
		return;
	queue_pg_message(reason, sizeof(reason), what, msg ? msg : "");
	if (was_ready || c->failures == 0)
		log_warn("event=store_conn_down conn=%s reason=\"%s\"", c->name, reason);
	else
		log_debug("event=store_conn_down conn=%s reason=\"%s\"", c->name, reason);
	STAT_ADD(c->st, connect_failures, 1);
	c->failures++;
	poll_release(c);
	PQfinish(c->pg);
	c->pg = NULL;
	c->state = CONN_DOWN;
	c->broken = 0;
	c->want_flush = 0;
	if (was_ready)
		store_update_ready(c->st);
	fail_segments(c, FERRY_EUNAVAIL);
	if (was_ready && c->on_down)
		c->on_down(c);
	if (c->state == CONN_DOWN && !c->st->closing) {
		timer_in(c, c->backoff_ms, 0);
		c->backoff_ms = c->backoff_ms * 2 > STORE_BACKOFF_MAX_MS ? STORE_BACKOFF_MAX_MS
									 : c->backoff_ms * 2;
	}
}

static void setup_done(struct store_seg *seg, enum ferry_err rc)
{
	struct store_conn *c = seg->arg;

	if (rc) {
		if (rc != FERRY_EUNAVAIL)
			conn_fail(c, "cannot prepare the store's statements (schema too old?)",
				  "see the log above");
		return;
	}
	c->state = CONN_READY;
	c->failures = 0;
	c->backoff_ms = STORE_BACKOFF_MIN_MS;
	STAT_ADD(c->st, connects, 1);
	log_info("event=store_conn_up conn=%s ms=%llu", c->name,
		 (unsigned long long)((uv_hrtime() - c->connect_ns) / 1000000));
	store_update_ready(c->st);
	if (c->on_up)
		c->on_up(c);
}

/* Connected: pipeline mode, then prepare every statement. */
static void conn_setup(struct store_conn *c)
{
	PQsetNoticeProcessor(c->pg, notice_to_log, NULL);
	if (PQsetnonblocking(c->pg, 1) || !PQenterPipelineMode(c->pg)) {
		conn_fail(c, "cannot enter pipeline mode", PQerrorMessage(c->pg));
		return;
	}
	c->state = CONN_SETUP;
	memset(&c->setup, 0, sizeof(c->setup));
	c->setup.on_done = setup_done;
	c->setup.arg = c;
	store_seg_begin(c, &c->setup);
	for (int i = 0; i < STMT_N; i++) {
		if (!PQsendPrepare(c->pg, stmts[i].name, stmts[i].sql, 0, NULL)) {
			c->broken = 1;
			break;
		}
		c->setup.nqueries++;
	}
	store_seg_end(c, &c->setup);
	timer_in(c, 1000, 1000);
	poll_watch(c, UV_READABLE);
}

static void connect_step(struct store_conn *c)
{
	PostgresPollingStatusType ps;

	/* PQconnectPoll may close the socket and open another (the next
	 * address): the next watch makes a handle for whichever it is. */
	poll_release(c);
	ps = PQconnectPoll(c->pg);
	switch (ps) {
	case PGRES_POLLING_FAILED:
		conn_fail(c, "cannot connect to PostgreSQL", PQerrorMessage(c->pg));
		return;
	case PGRES_POLLING_OK:
		conn_setup(c);
		return;
	case PGRES_POLLING_READING:
		poll_watch(c, UV_READABLE);
		return;
	default:
		poll_watch(c, UV_WRITABLE);
		return;
	}
}

static void conn_connect(struct store_conn *c)
{
	const char *keys[] = { "application_name", "dbname", NULL };
	const char *vals[] = { "ferryd-store", c->st->conninfo, NULL };
	unsigned timeout = c->st->opts.connect_timeout ? c->st->opts.connect_timeout : 10;

	c->connect_ns = uv_hrtime();
	c->pg = PQconnectStartParams(keys, vals, 1);
	c->state = CONN_CONNECTING;
	if (!c->pg) {
		conn_fail(c, "cannot connect to PostgreSQL", "out of memory");
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		conn_fail(c, "cannot connect to PostgreSQL", PQerrorMessage(c->pg));
		return;
	}
	timer_in(c, (uint64_t)timeout * 1000, 0);
	/* As if PQconnectPoll had asked to write. */
	poll_watch(c, UV_WRITABLE);
}

static void on_timer(uv_timer_t *t)
{
	struct store_conn *c = t->data;

	switch (c->state) {
	case CONN_DOWN:
		conn_connect(c);
		break;
	case CONN_CONNECTING:
		conn_fail(c, "cannot connect to PostgreSQL", "timeout expired");
		break;
	case CONN_SETUP:
	case CONN_READY:
		if (c->head &&
		    uv_hrtime() - c->head->sent_ns > (uint64_t)STORE_QUERY_TIMEOUT_MS * 1000000)
			conn_fail(c, "query timeout", "no answer from PostgreSQL");
		break;
	case CONN_CLOSED:
		break;
	}
}

static void flush(struct store_conn *c)
{
	int r = PQflush(c->pg);

	c->want_flush = 0;
	if (r < 0) {
		conn_fail(c, "cannot send to PostgreSQL", PQerrorMessage(c->pg));
		return;
	}
	poll_watch(c, UV_READABLE | (r ? UV_WRITABLE : 0));
}

/* One result (or the NULL that ends a query's results) for the head segment. */
static void handle_result(struct store_conn *c, PGresult *res)
{
	struct store_seg *seg = c->head;
	char msg[512];

	switch (PQresultStatus(res)) {
	case PGRES_PIPELINE_SYNC:
		c->head = seg->next;
		if (!c->head)
			c->tail = NULL;
		seg->next = NULL;
		if (seg->on_done)
			seg->on_done(seg, seg->rc);
		return;
	case PGRES_TUPLES_OK:
	case PGRES_COMMAND_OK:
		seg->got_result = 1;
		if (seg->on_result && !seg->rc)
			seg->on_result(seg, seg->nended, res);
		return;
	case PGRES_PIPELINE_ABORTED:
		seg->got_result = 1;
		if (!seg->rc)
			seg->rc = FERRY_EDB;
		return;
	default:
		seg->got_result = 1;
		if (!seg->rc) {
			seg->rc = FERRY_EDB;
			/* The primary message only: the context quotes whole queries. */
			queue_pg_message(msg, sizeof(msg), "query failed",
					 PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
						 ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
						 : PQresultErrorMessage(res));
			log_warn("event=store_query_failed conn=%s query=%u sqlstate=%s "
				 "reason=\"%s\"",
				 c->name, seg->nended,
				 PQresultErrorField(res, PG_DIAG_SQLSTATE)
					 ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
					 : "none",
				 msg);
		}
		return;
	}
}

static void conn_read(struct store_conn *c)
{
	if (!PQconsumeInput(c->pg)) {
		conn_fail(c, "connection to PostgreSQL lost", PQerrorMessage(c->pg));
		return;
	}
	while (c->pg && c->head && !PQisBusy(c->pg)) {
		PGresult *res = PQgetResult(c->pg);

		if (!res) {
			/* The end of one query's results. */
			if (!c->head->got_result)
				break;
			c->head->got_result = 0;
			c->head->nended++;
			continue;
		}
		handle_result(c, res);
		PQclear(res);
	}
	if (c->pg && PQstatus(c->pg) == CONNECTION_BAD)
		conn_fail(c, "connection to PostgreSQL lost", PQerrorMessage(c->pg));
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct store_conn *c = h->data;

	if (c->state == CONN_CONNECTING) {
		connect_step(c);
		return;
	}
	if (status < 0) {
		/* libuv stopped the handle (POLLERR); libpq knows the reason. */
		c->poll_events = 0;
		conn_read(c);
		if (c->state != CONN_DOWN && c->state != CONN_CLOSED)
			conn_fail(c, "socket error", uv_strerror(status));
		return;
	}
	if (events & UV_WRITABLE)
		flush(c);
	if (c->pg && events & UV_READABLE)
		conn_read(c);
}

enum ferry_err store_conn_init(struct store_conn *c, struct queue_store *st, uv_loop_t *loop,
			       const char *name, store_conn_fn *on_up, store_conn_fn *on_down)
{
	memset(c, 0, sizeof(*c));
	c->st = st;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->on_up = on_up;
	c->on_down = on_down;
	c->backoff_ms = STORE_BACKOFF_MIN_MS;
	c->state = CONN_DOWN;
	if (uv_timer_init(loop, &c->timer))
		return FERRY_EIO;
	c->timer.data = c;
	timer_in(c, 0, 0);
	return FERRY_OK;
}

int store_conn_ready(const struct store_conn *c)
{
	return c->state == CONN_READY && !c->broken;
}

void store_seg_begin(struct store_conn *c, struct store_seg *seg)
{
	seg->next = NULL;
	seg->nqueries = 0;
	seg->nended = 0;
	seg->got_result = 0;
	seg->rc = FERRY_OK;
	seg->sent_ns = uv_hrtime();
	if (c->tail)
		c->tail->next = seg;
	else
		c->head = seg;
	c->tail = seg;
}

enum ferry_err store_seg_query(struct store_conn *c, struct store_seg *seg, enum store_stmt s,
			       const char *sql, int nparams, const char *const *values,
			       const int *lengths, const int *formats, int binary_result)
{
	int ok;

	if (c->broken || !c->pg)
		return FERRY_EUNAVAIL;
	if (s == STMT_N)
		ok = PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, binary_result);
	else
		ok = PQsendQueryPrepared(c->pg, stmts[s].name, nparams, values, lengths, formats,
					 binary_result);
	if (!ok) {
		log_warn("event=store_send_failed conn=%s reason=\"%s\"", c->name,
			 PQerrorMessage(c->pg));
		c->broken = 1;
		return FERRY_EUNAVAIL;
	}
	seg->nqueries++;
	return FERRY_OK;
}

void store_seg_end(struct store_conn *c, struct store_seg *seg)
{
	if (c->broken || !c->pg)
		return;
	if (!PQpipelineSync(c->pg)) {
		c->broken = 1;
		return;
	}
	c->want_flush = 1;
}

void store_conn_prepare(struct store_conn *c)
{
	if (c->broken) {
		conn_fail(c, "cannot send to PostgreSQL", c->pg ? PQerrorMessage(c->pg) : "");
		return;
	}
	if (c->want_flush && c->pg)
		flush(c);
}

void store_conn_close(struct store_conn *c)
{
	c->state = CONN_CLOSED;
	uv_timer_stop(&c->timer);
	poll_release(c);
	PQfinish(c->pg);
	c->pg = NULL;
	fail_segments(c, FERRY_EUNAVAIL);
	uv_close((uv_handle_t *)&c->timer, NULL);
}
