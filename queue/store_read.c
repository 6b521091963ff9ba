/*
 * store_read.c - FETCH, DELETE and COUNT on the reader connections, and the
 * background expiry sweep.
 *
 * Design: each read request is one query and one Sync of its own (its own
 * implicit transaction), sent at once on the reader that owns the device
 * (device id modulo the number of readers; the next reader that is up if that
 * one is down). Requests handled in one loop iteration are flushed together
 * and answered as their results arrive, many per round trip. A device's reads
 * on one connection run in submission order, so a FETCH sees the DELETEs
 * submitted before it.
 *
 * FETCH asks for binary results: integers arrive as 8 big-endian bytes and the
 * payload as it is stored, copied once into the block the caller gets. The
 * expiry sweep (ferry_expire) runs every expire_interval ms on one reader and
 * again at once while it deletes a full expire_batch.
 *
 * Ownership: a read request is the store's from submission to its reply;
 * FETCH rows are the caller's (queue_rows_free) when rc is FERRY_OK, and NULL
 * otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "queue/store_int.h"
#include "common/banned.h"

#define ID_TEXT_MAX 22
#define FETCH_COLUMNS 8

struct read_op {
	struct store_seg seg;
	struct queue_store *st;
	struct queue_req *req;
};

/* The reader that owns @device, or the next one that is up; NULL if none. */
static struct store_conn *pick_reader(struct queue_store *st, int64_t device)
{
	unsigned n = st->nconn - st->nwriters;
	unsigned first = (unsigned)((uint64_t)device % n);

	for (unsigned k = 0; k < n; k++) {
		struct store_conn *c = &st->conns[st->nwriters + (first + k) % n];

		if (store_conn_ready(c))
			return c;
	}
	return NULL;
}

static uint64_t be64(const char *p)
{
	const unsigned char *b = (const unsigned char *)p;
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

/* Copy the rows of a FETCH result into one block: the rows, then payloads. */
static int fetch_rows(struct queue_req *req, const PGresult *res)
{
	int n = PQntuples(res);
	size_t total = (size_t)n * sizeof(struct queue_row);
	struct queue_row *rows;
	uint8_t *data;

	if (PQnfields(res) != FETCH_COLUMNS)
		return 0;
	for (int i = 0; i < n; i++) {
		for (int col = 0; col < FETCH_COLUMNS; col++)
			if (PQgetisnull(res, i, col) ||
			    (col != 2 && col != 7 && PQgetlength(res, i, col) != 8))
				return 0;
		if (PQgetlength(res, i, 2) > QUEUE_USER_MAX)
			return 0;
		total += (size_t)PQgetlength(res, i, 7);
	}
	if (!n)
		return 1;
	rows = malloc(total);
	if (!rows)
		return -1;
	data = (uint8_t *)(rows + n);
	for (int i = 0; i < n; i++) {
		struct queue_row *r = &rows[i];
		int ulen = PQgetlength(res, i, 2);

		r->seq = (int64_t)be64(PQgetvalue(res, i, 0));
		r->server_id = be64(PQgetvalue(res, i, 1));
		memcpy(r->sender_user, PQgetvalue(res, i, 2), (size_t)ulen);
		r->sender_user[ulen] = '\0';
		r->sender_device = (int64_t)be64(PQgetvalue(res, i, 3));
		r->client_id = be64(PQgetvalue(res, i, 4));
		r->kind = (int)be64(PQgetvalue(res, i, 5));
		r->created_ms = be64(PQgetvalue(res, i, 6));
		r->len = (size_t)PQgetlength(res, i, 7);
		r->payload = data;
		if (r->len)
			memcpy(data, PQgetvalue(res, i, 7), r->len);
		data += r->len;
	}
	req->rows = rows;
	req->nrows = (size_t)n;
	return 1;
}

static void on_read_result(struct store_seg *seg, unsigned idx, const PGresult *res)
{
	struct read_op *op = (struct read_op *)seg;
	struct queue_req *req = op->req;
	int ok = 1;

	switch (req->type) {
	case QUEUE_REQ_FETCH:
		ok = fetch_rows(req, res);
		if (ok < 0) {
			seg->rc = FERRY_ENOMEM;
			return;
		}
		break;
	case QUEUE_REQ_DELETE:
	case QUEUE_REQ_COUNT:
		if (PQntuples(res) > 1 || PQnfields(res) != 1)
			ok = 0;
		else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
			req->count = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		break;
	default:
		ok = 0;
	}
	if (!ok) {
		log_error("event=store_read_bad_result type=%d", (int)req->type);
		seg->rc = FERRY_EDB;
	}
}

static void on_read_done(struct store_seg *seg, enum ferry_err rc)
{
	struct read_op *op = (struct read_op *)seg;
	struct queue_store *st = op->st;
	struct queue_req *req = op->req;

	free(op);
	st->reads_inflight--;
	if (rc) {
		STAT_ADD(st, read_failures, 1);
		if (req->type == QUEUE_REQ_FETCH) {
			queue_rows_free(req->rows, req->nrows);
			req->rows = NULL;
			req->nrows = 0;
		}
	} else if (req->type == QUEUE_REQ_FETCH) {
		STAT_ADD(st, fetched_rows, req->nrows);
	} else if (req->type == QUEUE_REQ_DELETE) {
		STAT_ADD(st, deleted_rows, req->count);
	}
	store_reply(st, req, rc);
	store_maybe_finish(st);
}

static enum ferry_err send_delete(struct store_conn *c, struct store_seg *seg,
				  const struct queue_req *req, const char *dev)
{
	struct buf ids;
	enum ferry_err rc;

	buf_init(&ids, req->nids * ID_TEXT_MAX + 3);
	rc = buf_puts(&ids, "{");
	for (size_t i = 0; i < req->nids && !rc; i++)
		rc = buf_printf(&ids, "%s%lld", i ? "," : "", store_i64(req->ids[i]));
	rc = rc ? rc : buf_puts(&ids, "}");
	if (!rc) {
		const char *vals[2] = { dev, ids.data };

		rc = store_seg_query(c, seg, STMT_DELETE, NULL, 2, vals, NULL, NULL, 0);
	}
	buf_release(&ids);
	return rc;
}

static enum ferry_err send_read(struct store_conn *c, struct read_op *op)
{
	struct queue_req *req = op->req;
	char dev[ID_TEXT_MAX], after[ID_TEXT_MAX], limit[ID_TEXT_MAX];
	const char *vals[3] = { dev, after, limit };
	size_t lim = req->limit < QUEUE_FETCH_MAX ? req->limit : QUEUE_FETCH_MAX;

	snprintf(dev, sizeof(dev), "%lld", (long long)req->device);
	switch (req->type) {
	case QUEUE_REQ_FETCH:
		snprintf(after, sizeof(after), "%lld", (long long)req->after_seq);
		snprintf(limit, sizeof(limit), "%zu", lim);
		return store_seg_query(c, &op->seg, STMT_FETCH, NULL, 3, vals, NULL, NULL, 1);
	case QUEUE_REQ_DELETE:
		return send_delete(c, &op->seg, req, dev);
	default:
		return store_seg_query(c, &op->seg, STMT_COUNT, NULL, 1, vals, NULL, NULL, 0);
	}
}

/* Requests that need no query. Returns 1 if @req was answered. */
static int answer_trivially(struct queue_store *st, struct queue_req *req)
{
	if (req->type == QUEUE_REQ_FETCH && req->limit == 0) {
		store_reply(st, req, FERRY_OK);
		return 1;
	}
	if (req->type == QUEUE_REQ_DELETE && (req->nids == 0 || !req->ids)) {
		store_reply(st, req, req->nids ? FERRY_EINVAL : FERRY_OK);
		return 1;
	}
	return 0;
}

void store_read_submit(struct queue_store *st, struct queue_req *req)
{
	struct store_conn *c;
	struct read_op *op;
	enum ferry_err rc;

	req->rows = NULL;
	req->nrows = 0;
	req->count = 0;
	if (req->type == QUEUE_REQ_FETCH)
		STAT_ADD(st, fetches, 1);
	else if (req->type == QUEUE_REQ_DELETE)
		STAT_ADD(st, deletes, 1);
	else
		STAT_ADD(st, counts, 1);
	if (answer_trivially(st, req))
		return;
	c = pick_reader(st, req->device);
	if (!c) {
		STAT_ADD(st, read_failures, 1);
		store_reply(st, req, FERRY_EUNAVAIL);
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		STAT_ADD(st, read_failures, 1);
		store_reply(st, req, FERRY_ENOMEM);
		return;
	}
	op->st = st;
	op->req = req;
	op->seg.on_result = on_read_result;
	op->seg.on_done = on_read_done;
	op->seg.arg = op;
	st->reads_inflight++;
	store_seg_begin(c, &op->seg);
	rc = send_read(c, op);
	if (rc && rc != FERRY_EUNAVAIL)
		/* Not sent (no memory for the ids): the empty segment fails it. */
		op->seg.rc = rc;
	store_seg_end(c, &op->seg);
}

/* ---- expiry ---- */

static void on_sweep_result(struct store_seg *seg, unsigned idx, const PGresult *res)
{
	struct queue_store *st = seg->arg;

	if (PQntuples(res) == 1 && PQnfields(res) == 1)
		st->sweep_rows = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
}

static void on_sweep_done(struct store_seg *seg, enum ferry_err rc)
{
	struct queue_store *st = seg->arg;

	st->sweep_busy = 0;
	if (!rc) {
		STAT_ADD(st, expire_sweeps, 1);
		STAT_ADD(st, expired_rows, st->sweep_rows);
		if (st->sweep_rows)
			log_info("event=store_expired rows=%llu",
				 (unsigned long long)st->sweep_rows);
		/* A full sweep: there may be more; go on before the loop blocks. */
		if (st->sweep_rows >= st->opts.expire_batch)
			st->sweep_again = 1;
	}
	store_maybe_finish(st);
}

void store_sweep_start(struct queue_store *st)
{
	struct store_conn *c;
	char max[16];
	const char *vals[1] = { max };

	if (st->sweep_busy || st->stopping)
		return;
	c = pick_reader(st, (int64_t)(st->nconn - st->nwriters) - 1);
	if (!c)
		return;
	snprintf(max, sizeof(max), "%u", st->opts.expire_batch);
	memset(&st->sweep, 0, sizeof(st->sweep));
	st->sweep.on_result = on_sweep_result;
	st->sweep.on_done = on_sweep_done;
	st->sweep.arg = st;
	st->sweep_rows = 0;
	st->sweep_busy = 1;
	store_seg_begin(c, &st->sweep);
	if (store_seg_query(c, &st->sweep, STMT_EXPIRE, NULL, 1, vals, NULL, NULL, 0))
		return;
	store_seg_end(c, &st->sweep);
}
