/*
 * store_write.c - the writers: PUTs become batches, one commit each.
 *
 * Design: there are nwriters writers, each with its own connection and its
 * own FIFO of PUTs (and BARRIERs), in mailbox order. Writer i takes the
 * recipients whose device id modulo nwriters is i (store_writer_of), so a
 * device is only ever written by one connection. When a writer's connection
 * is idle, its waiting requests, up to batch_max recipients (at least one
 * PUT), go out as one pipeline segment:
 *
 *     BEGIN; SELECT * FROM ferry_put_batch(arrays of every PUT); COMMIT; Sync
 *
 * ferry_put_batch (sql/0002_store.sql, 0003) takes the devices' row locks in
 * id order, then stores the batch set-based: each device's row is read and
 * written once per batch, however many envelopes it gets, which keeps a
 * batch about as cheap as a plain multi-row INSERT. Results come back as one
 * row per recipient in batch order. With one batch at a time per writer, a
 * device's envelopes commit in sequence order, which is the order of
 * acceptance. Batches of different writers lock disjoint device rows and
 * insert disjoint keys (both unique keys of envelopes start with the
 * device), so they never wait for each other. The readers' transactions
 * that lock device rows take them in id order too, all in their first
 * statement (ferry_delete: one row; ferry_expire), and then touch only
 * envelopes of devices they hold: no wait among the store's transactions
 * can close a cycle.
 *
 * Parts: a PUT whose recipients belong to one writer is queued as it is. One
 * that spans writers is split: one part per writer (a store-made queue_req
 * with reply == NULL and that writer's recipients, the caller's order kept),
 * queued on each writer at once, so each part keeps its place in its
 * writer's FIFO. Each part is answered with its batch; the caller's PUT is
 * answered after its last part: FERRY_OK if every part committed (the
 * results copied back); else not stored (part_done() says which error).
 * A BARRIER gets a part on every writer that is busy or has something
 * queued; it is answered OK at once if none has.
 *
 * The invariant: the requests of a batch are answered only when its COMMIT
 * has succeeded (FERRY_OK, each recipient's result in puts[]). If the batch
 * fails in any way, every PUT of it is answered FERRY_EUNAVAIL (connection
 * lost or timed out: the COMMIT may or may not have happened; a
 * retransmission is recognised as DUPLICATE) or FERRY_EDB, and none is
 * claimed stored. After a batch failed with a database error, its PUTs are
 * not answered yet but retried one per batch, so that one bad PUT cannot make
 * its neighbours fail.
 *
 * Memory: payloads stay the caller's; the store only counts their bytes
 * (max_inflight_bytes) from acceptance to the caller's reply, once per PUT
 * however many parts it has. A split's parts live in one block, freed with
 * the caller's reply.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/fault.h"
#include "common/log.h"
#include "queue/store_int.h"
#include "common/banned.h"

/* Digits of a bigint, a sign and a comma. */
#define ID_TEXT_MAX 22

/* A PUT or BARRIER split between writers, and its parts (one block). */
struct split {
	struct queue_req *req; /* the caller's */
	unsigned left;	       /* parts not answered yet */
	unsigned committed;    /* parts answered FERRY_OK */
	enum ferry_err rc;     /* the first failure (EUNAVAIL wins), or OK */
};

struct part {
	struct queue_req sub; /* first: what a writer queues (reply == NULL) */
	struct split *split;
	size_t *idx; /* sub.puts[k] is the caller's puts[idx[k]] */
};

static struct queue_req *next_of(const struct queue_req *req)
{
	return req->store_private[1];
}

static void set_next(struct queue_req *req, struct queue_req *next)
{
	req->store_private[1] = next;
}

/* The part @req is, or NULL for a caller's request. */
static struct part *part_of(struct queue_req *req)
{
	return req->reply ? NULL : (struct part *)(void *)req;
}

static void update_queued(struct queue_store *st)
{
	size_t n = 0;

	for (unsigned i = 0; i < st->nwriters; i++)
		n += st->w[i].nqueued;
	STAT_SET(st, queued_puts, n);
}

static void enqueue(struct store_writer *w, struct queue_req *req)
{
	set_next(req, NULL);
	if (w->qtail)
		set_next(w->qtail, req);
	else
		w->qhead = req;
	w->qtail = req;
	w->nqueued++;
}

static struct queue_req *dequeue(struct store_writer *w)
{
	struct queue_req *req = w->qhead;

	if (!req)
		return NULL;
	w->qhead = next_of(req);
	if (!w->qhead)
		w->qtail = NULL;
	set_next(req, NULL);
	w->nqueued--;
	return req;
}

/* Answer the caller's PUT or BARRIER and forget its bytes. */
static void answer(struct queue_store *st, struct queue_req *req, enum ferry_err rc)
{
	if (req->type == QUEUE_REQ_BARRIER) {
		STAT_ADD(st, barriers, 1);
		store_reply(st, req, rc);
		return;
	}
	st->inflight_bytes -= req->len;
	STAT_SET(st, inflight_bytes, st->inflight_bytes);
	STAT_ADD(st, puts, 1);
	if (rc == FERRY_OK) {
		for (size_t i = 0; i < req->nputs; i++) {
			switch (req->puts[i].result) {
			case QUEUE_PUT_STORED:
				STAT_ADD(st, put_stored, 1);
				break;
			case QUEUE_PUT_DUPLICATE:
				STAT_ADD(st, put_duplicate, 1);
				break;
			case QUEUE_PUT_FULL:
				STAT_ADD(st, put_full, 1);
				break;
			case QUEUE_PUT_GONE:
				STAT_ADD(st, put_gone, 1);
				break;
			}
		}
	} else {
		STAT_ADD(st, put_unavail, 1);
	}
	store_reply(st, req, rc);
}

/*
 * A part is over: keep its results; the last one answers the caller. A PUT
 * that committed in part is answered FERRY_EUNAVAIL, as a batch lost with
 * its COMMIT unanswered: not stored, retry; the recipients that did commit
 * answer the retransmission DUPLICATE. FERRY_EDB only when no part
 * committed and none was merely unavailable.
 */
static void part_done(struct queue_store *st, struct part *p, enum ferry_err rc)
{
	struct split *sp = p->split;

	if (rc == FERRY_OK) {
		sp->committed++;
		for (size_t k = 0; k < p->sub.nputs; k++)
			sp->req->puts[p->idx[k]] = p->sub.puts[k];
	} else if (sp->rc == FERRY_OK || rc == FERRY_EUNAVAIL) {
		sp->rc = rc;
	}
	if (--sp->left)
		return;
	if (sp->rc != FERRY_OK && sp->committed)
		sp->rc = FERRY_EUNAVAIL;
	answer(st, sp->req, sp->rc);
	free(sp);
}

/* Answer a request a writer queued: the caller's, or one part of it. */
static void finish(struct queue_store *st, struct queue_req *req, enum ferry_err rc)
{
	struct part *p = part_of(req);

	if (p)
		part_done(st, p, rc);
	else
		answer(st, req, rc);
}

/* What the schema would refuse is refused here: one bad PUT must not fail
 * the batch it would ride in. */
static int put_valid(const struct queue_req *req)
{
	if (!req->sender_user || !queue_user_valid(req->sender_user))
		return 0;
	if (req->sender_device < 0 ||
	    (req->kind != QUEUE_KIND_MESSAGE && req->kind != QUEUE_KIND_RECEIPT))
		return 0;
	if ((!req->payload && req->len) || req->len > INT_MAX / 2)
		return 0;
	return req->nputs > 0 && req->puts;
}

/*
 * One block: the split, @nparts parts, then the parts' recipients and their
 * places in the caller's puts[]. Part k goes to writer @to[k], which has
 * @count[to[k]] of @req's recipients. NULL without memory.
 */
static struct split *split_new(struct queue_store *st, struct queue_req *req, size_t nparts,
			       const unsigned *to, const size_t *count)
{
	size_t nputs = req->type == QUEUE_REQ_PUT ? req->nputs : 0;
	size_t size = sizeof(struct split) + nparts * sizeof(struct part);
	struct queue_put *puts;
	size_t *idx, used = 0;
	struct split *sp;
	struct part *parts;

	_Static_assert(sizeof(struct split) % _Alignof(struct part) == 0, "parts aligned");
	_Static_assert(sizeof(struct part) % _Alignof(struct queue_put) == 0, "puts aligned");
	_Static_assert(sizeof(struct queue_put) % _Alignof(size_t) == 0, "indexes aligned");
	sp = calloc(1, size + nputs * (sizeof(struct queue_put) + sizeof(size_t)));
	if (!sp)
		return NULL;
	parts = (struct part *)(void *)(sp + 1);
	puts = (struct queue_put *)(void *)(parts + nparts);
	idx = (size_t *)(void *)(puts + nputs);
	sp->req = req;
	sp->left = (unsigned)nparts;
	sp->rc = FERRY_OK;
	for (size_t k = 0; k < nparts; k++) {
		struct part *p = &parts[k];

		p->sub = *req;
		p->sub.reply = NULL;
		p->sub.reply_to = NULL;
		p->sub.store_private[0] = p->sub.store_private[1] = NULL;
		p->split = sp;
		if (req->type != QUEUE_REQ_PUT)
			continue;
		p->sub.puts = puts + used;
		p->idx = idx + used;
		p->sub.nputs = 0;
		for (size_t i = 0; i < nputs; i++) {
			if (store_writer_of(st, req->puts[i].recipient) != &st->w[to[k]])
				continue;
			p->idx[p->sub.nputs] = i;
			p->sub.puts[p->sub.nputs++] = req->puts[i];
		}
		if (p->sub.nputs != count[to[k]])
			ferry_panic("a PUT's part has %zu recipients, not %zu", p->sub.nputs,
				    count[to[k]]);
		used += p->sub.nputs;
	}
	return sp;
}

/* Queue @req on the writers listed in @to (@n of them), as it is when
 * there is one, else as parts. FERRY_ENOMEM if it cannot be split. */
static enum ferry_err queue_on(struct queue_store *st, struct queue_req *req, const unsigned *to,
			       size_t n, const size_t *count)
{
	struct split *sp;
	struct part *parts;

	if (n == 1) {
		enqueue(&st->w[to[0]], req);
		return FERRY_OK;
	}
	sp = split_new(st, req, n, to, count);
	if (!sp)
		return FERRY_ENOMEM;
	parts = (struct part *)(void *)(sp + 1);
	for (size_t k = 0; k < n; k++)
		enqueue(&st->w[to[k]], &parts[k].sub);
	return FERRY_OK;
}

static void submit_barrier(struct queue_store *st, struct queue_req *req)
{
	unsigned to[STORE_MAX_CONNECTIONS];
	size_t n = 0;

	for (unsigned i = 0; i < st->nwriters; i++)
		if (st->w[i].busy || st->w[i].qhead)
			to[n++] = i;
	if (!n) {
		/* Every earlier PUT has been answered already. */
		answer(st, req, FERRY_OK);
		return;
	}
	if (queue_on(st, req, to, n, NULL))
		answer(st, req, FERRY_ENOMEM);
}

void store_writer_submit(struct queue_store *st, struct queue_req *req)
{
	unsigned to[STORE_MAX_CONNECTIONS];
	size_t count[STORE_MAX_CONNECTIONS] = { 0 };
	size_t n = 0;
	int down = 0;

	if (req->type == QUEUE_REQ_PUT && req->puts) {
		for (size_t i = 0; i < req->nputs; i++) {
			struct store_writer *w = store_writer_of(st, req->puts[i].recipient);
			unsigned wi = (unsigned)(w - st->w);

			if (!count[wi]++)
				to[n++] = wi;
			down |= !store_conn_ready(w->conn);
		}
	} else {
		for (unsigned i = 0; i < st->nwriters; i++)
			down |= !store_conn_ready(st->w[i].conn);
	}
	if (down) {
		if (req->type == QUEUE_REQ_PUT) {
			STAT_ADD(st, puts, 1);
			STAT_ADD(st, put_unavail, 1);
		} else {
			STAT_ADD(st, barriers, 1);
		}
		store_reply(st, req, FERRY_EUNAVAIL);
		return;
	}
	if (req->type == QUEUE_REQ_BARRIER) {
		submit_barrier(st, req);
		return;
	}
	if (!put_valid(req)) {
		STAT_ADD(st, puts, 1);
		STAT_ADD(st, put_invalid, 1);
		store_reply(st, req, FERRY_EINVAL);
		return;
	}
	if (req->len > st->opts.max_inflight_bytes ||
	    st->inflight_bytes > st->opts.max_inflight_bytes - req->len) {
		STAT_ADD(st, puts, 1);
		STAT_ADD(st, put_limit, 1);
		store_reply(st, req, FERRY_ELIMIT);
		return;
	}
	st->inflight_bytes += req->len;
	STAT_SET(st, inflight_bytes, st->inflight_bytes);
	for (size_t i = 0; i < req->nputs; i++) {
		req->puts[i].result = QUEUE_PUT_GONE;
		req->puts[i].server_id = 0;
		req->puts[i].seq = 0;
	}
	if (queue_on(st, req, to, n, count))
		answer(st, req, FERRY_ENOMEM);
	update_queued(st);
}

/* ---- results ---- */

static enum queue_put_result parse_result(const char *s, int *ok)
{
	if (strcmp(s, "stored") == 0)
		return QUEUE_PUT_STORED;
	if (strcmp(s, "duplicate") == 0)
		return QUEUE_PUT_DUPLICATE;
	if (strcmp(s, "full") == 0)
		return QUEUE_PUT_FULL;
	if (strcmp(s, "gone") == 0)
		return QUEUE_PUT_GONE;
	*ok = 0;
	return QUEUE_PUT_GONE;
}

/* ferry_put_batch's rows: one per recipient of each PUT, in batch order. */
static int batch_rows(struct store_writer *w, const PGresult *res)
{
	int row = 0, put = 0, ok = 1;

	if ((size_t)PQntuples(res) != w->batch_envelopes || PQnfields(res) != 5)
		return 0;
	for (struct queue_req *req = w->bhead; req; req = next_of(req)) {
		if (req->type != QUEUE_REQ_PUT)
			continue;
		put++;
		for (size_t i = 0; i < req->nputs; i++, row++) {
			struct queue_put *p = &req->puts[i];

			if (strtol(PQgetvalue(res, row, 0), NULL, 10) != put ||
			    strtoll(PQgetvalue(res, row, 1), NULL, 10) != p->recipient)
				return 0;
			p->result = parse_result(PQgetvalue(res, row, 2), &ok);
			p->server_id =
				PQgetisnull(res, row, 3)
					? 0
					: (uint64_t)strtoll(PQgetvalue(res, row, 3), NULL, 10);
			p->seq = PQgetisnull(res, row, 4)
					 ? 0
					 : strtoll(PQgetvalue(res, row, 4), NULL, 10);
		}
	}
	return ok;
}

/* Queries of a batch: BEGIN, ferry_put_batch, COMMIT. */
enum { Q_BEGIN, Q_PUT, Q_COMMIT, Q_N };

static void on_batch_result(struct store_seg *seg, unsigned idx, const PGresult *res)
{
	struct store_writer *w = seg->arg;

	if (idx == Q_COMMIT) {
		/* COMMIT of a failed transaction answers ROLLBACK. */
		w->committed =
			seg->nqueries == Q_N && strcmp(PQcmdStatus((PGresult *)res), "COMMIT") == 0;
	} else if (idx == Q_PUT && !batch_rows(w, res)) {
		log_error("event=store_put_rows_mismatch conn=%s rows=%d envelopes=%zu",
			  w->conn->name, PQntuples(res), w->batch_envelopes);
		seg->rc = FERRY_EDB;
	}
}

static void rollback_done(struct store_seg *seg, enum ferry_err rc)
{
	struct store_writer *w = seg->arg;

	w->rollback_busy = 0;
}

/* After a failed batch the transaction may still be open (aborted). */
static void send_rollback(struct store_writer *w)
{
	struct store_conn *c = w->conn;
	struct store_seg *seg = &w->rollback;

	if (!store_conn_ready(c) || w->rollback_busy)
		return;
	memset(seg, 0, sizeof(*seg));
	seg->on_done = rollback_done;
	seg->arg = w;
	w->rollback_busy = 1;
	store_seg_begin(c, seg);
	if (store_seg_query(c, seg, STMT_N, "ROLLBACK", 0, NULL, NULL, NULL, 0))
		return;
	store_seg_end(c, seg);
}

static void record_commit(struct store_writer *w, struct store_seg *seg)
{
	struct queue_store *st = w->st;
	uint64_t us = (uv_hrtime() - seg->sent_ns) / 1000;

	STAT_ADD(st, batches, 1);
	STAT_ADD(st, batch_puts, w->batch_puts);
	STAT_ADD(st, batch_envelopes, w->batch_envelopes);
	if (w->batch_envelopes > STAT_GET(st, batch_largest))
		STAT_SET(st, batch_largest, w->batch_envelopes);
	STAT_ADD(st, commit_us_total, us);
	hist_add(&st->commit_hist, us);
	STAT_SET(st, commit_us_last, us);
	if (us > STAT_GET(st, commit_us_max))
		STAT_SET(st, commit_us_max, us);
}

/* A failed batch with a database error: its PUTs go back to the head of the
 * queue, to be sent one per batch. */
static void requeue_solo(struct store_writer *w)
{
	if (w->btail) {
		set_next(w->btail, w->qhead);
		if (!w->qhead)
			w->qtail = w->btail;
		w->qhead = w->bhead;
	}
	for (struct queue_req *r = w->bhead; r; r = r == w->btail ? NULL : next_of(r))
		w->nqueued++;
	w->solo = w->batch_puts;
	w->bhead = w->btail = NULL;
	update_queued(w->st);
}

static void on_batch_done(struct store_seg *seg, enum ferry_err rc)
{
	struct store_writer *w = seg->arg;
	struct queue_store *st = w->st;
	int ok = w->committed;
	struct queue_req *req;

	w->busy = 0;
	st->batches_inflight--;
	if (ok) {
		FAULT_POINT("store_after_commit");
		record_commit(w, seg);
	} else {
		/* A batch that could not be built says why; one the database
		 * refused says so. */
		rc = rc ? rc : w->build_rc ? w->build_rc : FERRY_EDB;
		STAT_ADD(st, batch_failures, 1);
		log_warn("event=store_batch_failed conn=%s puts=%zu envelopes=%zu error=%s",
			 w->conn->name, w->batch_puts, w->batch_envelopes, ferry_strerror(rc));
		send_rollback(w);
		if (rc == FERRY_EDB && w->batch_puts > 1 && !st->stopping) {
			requeue_solo(w);
			store_maybe_finish(st);
			return;
		}
	}
	while ((req = w->bhead)) {
		w->bhead = next_of(req);
		set_next(req, NULL);
		finish(st, req, ok ? FERRY_OK : rc);
	}
	w->btail = NULL;
	store_maybe_finish(st);
}

/* ---- sending ---- */

/* Move the next batch from the queue to bhead..btail: up to batch_max
 * recipients and STORE_BATCH_BYTES of payload, at least one PUT. */
static void take_batch(struct store_writer *w)
{
	size_t max = w->solo ? 1 : w->st->opts.batch_max, bytes = 0;
	struct queue_req *req;

	w->batch_puts = w->batch_envelopes = 0;
	while ((req = w->qhead)) {
		if (req->type == QUEUE_REQ_PUT) {
			if (w->batch_puts && (w->batch_envelopes + req->nputs > max ||
					      bytes + req->len > STORE_BATCH_BYTES))
				break;
			w->batch_puts++;
			w->batch_envelopes += req->nputs;
			bytes += req->len;
		}
		dequeue(w);
		if (w->btail)
			set_next(w->btail, req);
		else
			w->bhead = req;
		w->btail = req;
	}
	if (w->solo)
		w->solo--;
	update_queued(w->st);
}

/* The text arrays and the payload bytes of ferry_put_batch's parameters. */
enum {
	A_RCPT,
	A_RPUT,
	A_SID,
	A_SUSER,
	A_SDEV,
	A_CID,
	A_KIND,
	A_PAYLOADS,
	A_LEN,
	A_CREATED,
	A_TTL,
	A_N,
};

/* Add one element to array literal @b (which starts with "{"). */
static enum ferry_err add_int(struct buf *b, long long v)
{
	return buf_printf(b, "%s%lld", b->len > 1 ? "," : "", v);
}

static enum ferry_err add_put(struct buf *a, const struct queue_store *st,
			      const struct queue_req *req, int put)
{
	unsigned ttl =
		req->ttl && req->ttl < st->opts.default_ttl ? req->ttl : st->opts.default_ttl;
	enum ferry_err rc = FERRY_OK;

	for (size_t i = 0; i < req->nputs && !rc; i++) {
		rc = add_int(&a[A_RCPT], req->puts[i].recipient);
		rc = rc ? rc : add_int(&a[A_RPUT], put);
	}
	rc = rc ? rc : add_int(&a[A_SID], store_i64(req->server_id));
	/* User names are [A-Za-z0-9._:@+-]: quoted, "NULL" stays a name. */
	rc = rc ? rc
		: buf_printf(&a[A_SUSER], "%s\"%s\"", a[A_SUSER].len > 1 ? "," : "",
			     req->sender_user);
	rc = rc ? rc : add_int(&a[A_SDEV], req->sender_device);
	rc = rc ? rc : add_int(&a[A_CID], store_i64(req->client_id));
	rc = rc ? rc
		: buf_printf(&a[A_KIND], "%s%s", a[A_KIND].len > 1 ? "," : "",
			     req->kind == QUEUE_KIND_RECEIPT ? "receipt" : "message");
	rc = rc ? rc : req->len ? buf_append(&a[A_PAYLOADS], req->payload, req->len) : FERRY_OK;
	rc = rc ? rc : add_int(&a[A_LEN], (long long)req->len);
	rc = rc ? rc : add_int(&a[A_CREATED], store_i64(req->created_ms));
	return rc ? rc : add_int(&a[A_TTL], ttl);
}

static void init_arrays(struct buf *a, const struct store_writer *w, size_t payload_bytes)
{
	size_t m = w->batch_envelopes, n = w->batch_puts;

	buf_init(&a[A_RCPT], m * ID_TEXT_MAX + 3);
	buf_init(&a[A_RPUT], m * ID_TEXT_MAX + 3);
	buf_init(&a[A_SID], n * ID_TEXT_MAX + 3);
	buf_init(&a[A_SUSER], n * (QUEUE_USER_MAX + 3) + 3);
	buf_init(&a[A_SDEV], n * ID_TEXT_MAX + 3);
	buf_init(&a[A_CID], n * ID_TEXT_MAX + 3);
	buf_init(&a[A_KIND], n * 9 + 3);
	buf_init(&a[A_PAYLOADS], payload_bytes + 1);
	buf_init(&a[A_LEN], n * ID_TEXT_MAX + 3);
	buf_init(&a[A_CREATED], n * ID_TEXT_MAX + 3);
	buf_init(&a[A_TTL], n * ID_TEXT_MAX + 3);
}

/* BEGIN; SELECT * FROM ferry_put_batch(...); COMMIT. */
static enum ferry_err send_batch(struct store_writer *w, struct store_conn *c)
{
	struct queue_store *st = w->st;
	struct buf a[A_N];
	char maxp[ID_TEXT_MAX];
	const char *vals[A_N + 1];
	int lens[A_N + 1] = { 0 }, fmts[A_N + 1] = { 0 };
	size_t bytes = 0;
	int put = 0;
	enum ferry_err rc = FERRY_OK;

	for (struct queue_req *r = w->bhead; r; r = next_of(r))
		bytes += r->type == QUEUE_REQ_PUT ? r->len : 0;
	init_arrays(a, w, bytes);
	for (int i = 0; i < A_N && !rc; i++)
		rc = i == A_PAYLOADS ? FERRY_OK : buf_puts(&a[i], "{");
	for (struct queue_req *r = w->bhead; r && !rc; r = next_of(r))
		if (r->type == QUEUE_REQ_PUT)
			rc = add_put(a, st, r, ++put);
	for (int i = 0; i < A_N && !rc; i++)
		rc = i == A_PAYLOADS ? FERRY_OK : buf_puts(&a[i], "}");
	snprintf(maxp, sizeof(maxp), "%llu",
		 st->opts.max_pending_per_device
			 ? (unsigned long long)st->opts.max_pending_per_device
			 : (unsigned long long)LLONG_MAX);
	for (int i = 0; i < A_N; i++)
		vals[i] = a[i].data ? a[i].data : "";
	vals[A_N] = maxp;
	lens[A_PAYLOADS] = (int)a[A_PAYLOADS].len;
	fmts[A_PAYLOADS] = 1;
	rc = rc ? rc : store_seg_query(c, &w->seg, STMT_N, "BEGIN", 0, NULL, NULL, NULL, 0);
	rc = rc ? rc : store_seg_query(c, &w->seg, STMT_PUT, NULL, A_N + 1, vals, lens, fmts, 0);
	FAULT_POINT("store_before_commit");
	rc = rc ? rc : store_seg_query(c, &w->seg, STMT_N, "COMMIT", 0, NULL, NULL, NULL, 0);
	for (int i = 0; i < A_N; i++)
		buf_release(&a[i]);
	return rc;
}

/* Send writer @w's next batch if it is idle and something waits. */
static void kick_one(struct store_writer *w)
{
	struct queue_store *st = w->st;
	struct store_conn *c = w->conn;
	enum ferry_err rc;

	if (w->busy || !w->qhead || !store_conn_ready(c))
		return;
	/* Barriers at the head: everything before them has been answered. */
	while (w->qhead && w->qhead->type == QUEUE_REQ_BARRIER)
		finish(st, dequeue(w), FERRY_OK);
	if (!w->qhead) {
		update_queued(st);
		return;
	}
	take_batch(w);
	memset(&w->seg, 0, sizeof(w->seg));
	w->seg.on_result = on_batch_result;
	w->seg.on_done = on_batch_done;
	w->seg.arg = w;
	w->busy = 1;
	st->batches_inflight++;
	w->committed = 0;
	w->build_rc = FERRY_OK;
	store_seg_begin(c, &w->seg);
	rc = send_batch(w, c);
	if (rc == FERRY_ENOMEM || rc == FERRY_ETOOBIG) {
		/* Nothing was sent for it: end the segment empty, fail its PUTs. */
		log_error("event=store_batch_build_failed conn=%s error=%s", c->name,
			  ferry_strerror(rc));
		w->seg.on_result = NULL;
		w->committed = 0;
		w->build_rc = rc;
	}
	store_seg_end(c, &w->seg);
}

void store_writer_kick(struct queue_store *st)
{
	for (unsigned i = 0; i < st->nwriters && !st->closing; i++)
		kick_one(&st->w[i]);
}

void store_writer_init(struct queue_store *st, unsigned i)
{
	struct store_writer *w = &st->w[i];

	memset(w, 0, sizeof(*w));
	w->st = st;
	w->conn = &st->conns[i];
}

void store_writer_down(struct store_writer *w)
{
	struct queue_req *req;

	/* The batch in flight, if any, was answered by its segment. */
	while ((req = dequeue(w)))
		finish(w->st, req, FERRY_EUNAVAIL);
	w->solo = 0;
	update_queued(w->st);
}

void store_writer_drop_queued(struct queue_store *st)
{
	for (unsigned i = 0; i < st->nwriters; i++)
		store_writer_down(&st->w[i]);
}
