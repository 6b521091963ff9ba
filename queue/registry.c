/*
 * registry.c - the device registry (devices, and per-user settings): a
 * thread-safe pool of blocking libpq connections for the control plane (the
 * admin API, and the gateway's handshake).
 *
 * Design: a fixed array of slots, each holding at most one connection, handed
 * out under a mutex; a caller that finds every slot busy waits on a condition
 * variable. Connections open lazily and are dropped when libpq reports them
 * broken, so the registry heals by itself after a PostgreSQL restart.
 * Read-only queries are retried once on a fresh connection when the old one
 * turned out to be dead; writes are not (the caller cannot know whether they
 * happened), they fail with FERRY_EUNAVAIL and the client retries.
 *
 * The hot envelope path never comes here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/log.h"
#include "queue/queue.h"
#include "queue/pg_int.h"
#include "common/banned.h"

#define REGISTRY_MAX_CONN 64
/* After a failed connect, callers fail at once for this long instead of each
 * waiting connect_timeout on a database that is down or hanging. */
#define REGISTRY_RETRY_MS 1000

struct queue_registry {
	char *conninfo;
	unsigned connect_timeout;
	unsigned nconn;
	pthread_mutex_t lock;
	pthread_cond_t freed;
	PGconn *conns[REGISTRY_MAX_CONN];
	unsigned char busy[REGISTRY_MAX_CONN];
	uint64_t down_until; /* monotonic ms; under lock */
	/* queue_depth_totals()'s last answer, and when it was read (monotonic
	 * ms; 0: never). Under totals_lock, which also lets one caller at a
	 * time read it anew. */
	pthread_mutex_t totals_lock;
	struct queue_totals totals;
	uint64_t totals_at;
};

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define DEVICE_COLUMNS                                                             \
	"id, user_id, platform, push_provider, push_token, push_app, apns_topic, " \
	"push_environment, (extract(epoch FROM created) * 1000)::bigint, "         \
	"coalesce((extract(epoch FROM push_updated) * 1000)::bigint, 0), "         \
	"coalesce((extract(epoch FROM last_seen) * 1000)::bigint, 0), pending, "   \
	"coalesce((SELECT (extract(epoch FROM e.created) * 1000)::bigint "         \
	"FROM envelopes e WHERE e.recipient_device = devices.id "                  \
	"ORDER BY e.seq LIMIT 1), 0), "                                            \
	"coalesce((extract(epoch FROM push_last) * 1000)::bigint, 0), "            \
	"push_last_provider, push_last_outcome, coalesce(push_last_status, 0), "   \
	"push_last_reason"

struct queue_registry *queue_registry_new(const char *conninfo, unsigned connect_timeout,
					  unsigned nconn)
{
	struct queue_registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return NULL;
	reg->conninfo = strdup(conninfo ? conninfo : "");
	if (!reg->conninfo) {
		free(reg);
		return NULL;
	}
	reg->connect_timeout = connect_timeout;
	reg->nconn = nconn < 1 ? 1 : nconn > REGISTRY_MAX_CONN ? REGISTRY_MAX_CONN : nconn;
	pthread_mutex_init(&reg->lock, NULL);
	pthread_mutex_init(&reg->totals_lock, NULL);
	pthread_cond_init(&reg->freed, NULL);
	return reg;
}

void queue_registry_free(struct queue_registry *reg)
{
	if (!reg)
		return;
	for (unsigned i = 0; i < reg->nconn; i++)
		PQfinish(reg->conns[i]);
	pthread_cond_destroy(&reg->freed);
	pthread_mutex_destroy(&reg->lock);
	pthread_mutex_destroy(&reg->totals_lock);
	free(reg->conninfo);
	free(reg);
}

/* Take a slot, waiting for one if all are busy, and make sure it holds a live
 * connection. Returns the slot index or -1 (database unreachable). */
static int acquire(struct queue_registry *reg)
{
	char err[512];
	int idx = -1, down;

	pthread_mutex_lock(&reg->lock);
	while (idx < 0) {
		for (unsigned i = 0; i < reg->nconn; i++) {
			if (!reg->busy[i]) {
				idx = (int)i;
				break;
			}
		}
		if (idx < 0)
			pthread_cond_wait(&reg->freed, &reg->lock);
	}
	reg->busy[idx] = 1;
	pthread_mutex_unlock(&reg->lock);

	if (reg->conns[idx] && PQstatus(reg->conns[idx]) == CONNECTION_OK)
		return idx;
	PQfinish(reg->conns[idx]);
	reg->conns[idx] = NULL;
	pthread_mutex_lock(&reg->lock);
	down = monotonic_ms() < reg->down_until;
	pthread_mutex_unlock(&reg->lock);
	if (!down) {
		reg->conns[idx] =
			queue_pg_connect(reg->conninfo, reg->connect_timeout, err, sizeof(err));
		if (reg->conns[idx])
			return idx;
		log_warn("event=registry_connect_failed reason=\"%s\"", err);
	}
	pthread_mutex_lock(&reg->lock);
	if (!down)
		reg->down_until = monotonic_ms() + REGISTRY_RETRY_MS;
	reg->busy[idx] = 0;
	pthread_cond_signal(&reg->freed);
	pthread_mutex_unlock(&reg->lock);
	return -1;
}

static void release(struct queue_registry *reg, int idx)
{
	if (PQstatus(reg->conns[idx]) != CONNECTION_OK) {
		PQfinish(reg->conns[idx]);
		reg->conns[idx] = NULL;
	}
	pthread_mutex_lock(&reg->lock);
	reg->busy[idx] = 0;
	pthread_cond_signal(&reg->freed);
	pthread_mutex_unlock(&reg->lock);
}

/* Map a failed result to an error: constraint and data errors are the
 * caller's (EINVAL), a dead connection is EUNAVAIL, the rest EDB. */
static enum ferry_err result_error(PGconn *conn, const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (PQstatus(conn) != CONNECTION_OK)
		return FERRY_EUNAVAIL;
	if (state && strcmp(state, "23505") == 0)
		return FERRY_EEXIST;
	if (state && strcmp(state, "23503") == 0)
		return FERRY_ENOTFOUND;
	if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
		return FERRY_EINVAL;
	if (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0))
		return FERRY_EUNAVAIL;
	return FERRY_EDB;
}

/*
 * Run one statement with text parameters. On success *out holds the result
 * (PQclear it). @reads marks a statement safe to retry on a new connection.
 */
static enum ferry_err run(struct queue_registry *reg, const char *sql, int nparams,
			  const char *const *params, int reads, PGresult **out)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		PGresult *res;
		ExecStatusType st;
		enum ferry_err rc;
		int idx = acquire(reg);

		if (idx < 0)
			return FERRY_EUNAVAIL;
		res = PQexecParams(reg->conns[idx], sql, nparams, NULL, params, NULL, NULL, 0);
		st = PQresultStatus(res);
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
			release(reg, idx);
			*out = res;
			return FERRY_OK;
		}
		rc = result_error(reg->conns[idx], res);
		if (rc != FERRY_EINVAL && rc != FERRY_EEXIST && rc != FERRY_ENOTFOUND)
			log_warn("event=registry_query_failed reason=\"%s\"",
				 PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
					 ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
					 : "connection lost");
		PQclear(res);
		release(reg, idx);
		if (rc != FERRY_EUNAVAIL || !reads)
			return rc;
	}
	return FERRY_EUNAVAIL;
}

enum ferry_err queue_registry_ping(struct queue_registry *reg)
{
	PGresult *res;
	enum ferry_err rc = run(reg, "SELECT 1", 0, NULL, 1, &res);

	if (!rc)
		PQclear(res);
	return rc;
}

enum ferry_err queue_device_create(struct queue_registry *reg, const char *user,
				   const char *platform, int64_t *id,
				   char secret[QUEUE_SECRET_LEN + 1])
{
	uint8_t hash[QUEUE_SECRET_HASH_LEN];
	char hash_hex[2 * QUEUE_SECRET_HASH_LEN + 3] = "\\x";
	const char *params[3] = { user, hash_hex, platform };
	PGresult *res;
	enum ferry_err rc;

	rc = queue_secret_new(secret);
	if (rc)
		return rc;
	queue_secret_hash(secret, QUEUE_SECRET_LEN, hash);
	for (int i = 0; i < QUEUE_SECRET_HASH_LEN; i++)
		snprintf(hash_hex + 2 + 2 * i, 3, "%02x", hash[i]);
	rc = run(reg,
		 "INSERT INTO devices (user_id, secret_hash, platform) "
		 "VALUES ($1, $2::bytea, $3) RETURNING id",
		 3, params, 0, &res);
	if (rc)
		return rc;
	*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return FERRY_OK;
}

static char *dup_or_null(const PGresult *res, int row, int col, int *failed)
{
	char *s;

	if (PQgetisnull(res, row, col))
		return NULL;
	s = strdup(PQgetvalue(res, row, col));
	if (!s)
		*failed = 1;
	return s;
}

static enum ferry_err parse_device(const PGresult *res, int row, struct queue_device *d)
{
	int failed = 0;

	memset(d, 0, sizeof(*d));
	d->id = strtoll(PQgetvalue(res, row, 0), NULL, 10);
	d->user = dup_or_null(res, row, 1, &failed);
	d->platform = dup_or_null(res, row, 2, &failed);
	d->push_provider = dup_or_null(res, row, 3, &failed);
	d->push_token = dup_or_null(res, row, 4, &failed);
	d->push_app = dup_or_null(res, row, 5, &failed);
	d->push_topic = dup_or_null(res, row, 6, &failed);
	d->push_environment = dup_or_null(res, row, 7, &failed);
	d->created_ms = strtoll(PQgetvalue(res, row, 8), NULL, 10);
	d->push_updated_ms = strtoll(PQgetvalue(res, row, 9), NULL, 10);
	d->last_seen_ms = strtoll(PQgetvalue(res, row, 10), NULL, 10);
	d->pending = strtoull(PQgetvalue(res, row, 11), NULL, 10);
	d->oldest_ms = strtoll(PQgetvalue(res, row, 12), NULL, 10);
	d->push_last_ms = strtoll(PQgetvalue(res, row, 13), NULL, 10);
	d->push_last_provider = dup_or_null(res, row, 14, &failed);
	d->push_last_outcome = dup_or_null(res, row, 15, &failed);
	d->push_last_status = (int)strtol(PQgetvalue(res, row, 16), NULL, 10);
	d->push_last_reason = dup_or_null(res, row, 17, &failed);
	if (failed) {
		queue_device_release(d);
		return FERRY_ENOMEM;
	}
	return FERRY_OK;
}

enum ferry_err queue_device_get(struct queue_registry *reg, int64_t id, struct queue_device *out)
{
	char idbuf[24];
	const char *params[1] = { idbuf };
	PGresult *res;
	enum ferry_err rc;

	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
	rc = run(reg, "SELECT " DEVICE_COLUMNS " FROM devices WHERE id = $1", 1, params, 1, &res);
	if (rc)
		return rc;
	rc = PQntuples(res) == 1 ? parse_device(res, 0, out) : FERRY_ENOTFOUND;
	PQclear(res);
	return rc;
}

/* Every row of @res (cleared here) as a malloc'ed array in *out. */
static enum ferry_err parse_devices(PGresult *res, struct queue_device **out, size_t *n)
{
	int rows = PQntuples(res);
	struct queue_device *devs = calloc(rows ? (size_t)rows : 1, sizeof(*devs));
	enum ferry_err rc;

	if (!devs) {
		PQclear(res);
		return FERRY_ENOMEM;
	}
	for (int i = 0; i < rows; i++) {
		rc = parse_device(res, i, &devs[i]);
		if (rc) {
			queue_device_list_free(devs, (size_t)i);
			PQclear(res);
			return rc;
		}
	}
	PQclear(res);
	*out = devs;
	*n = (size_t)rows;
	return FERRY_OK;
}

enum ferry_err queue_device_list(struct queue_registry *reg, const char *user,
				 struct queue_device **out, size_t *n)
{
	const char *params[1] = { user };
	PGresult *res;
	enum ferry_err rc;

	rc = run(reg, "SELECT " DEVICE_COLUMNS " FROM devices WHERE user_id = $1 ORDER BY id", 1,
		 params, 1, &res);
	if (rc)
		return rc;
	return parse_devices(res, out, n);
}

/* Run a statement keyed by device id; FERRY_ENOTFOUND when it touched no row. */
static enum ferry_err run_on_device(struct queue_registry *reg, const char *sql, int nparams,
				    const char *const *params)
{
	PGresult *res;
	enum ferry_err rc = run(reg, sql, nparams, params, 0, &res);

	if (rc)
		return rc;
	rc = strcmp(PQcmdTuples(res), "0") == 0 ? FERRY_ENOTFOUND : FERRY_OK;
	PQclear(res);
	return rc;
}

/*
 * The device row and its envelopes go in one transaction, in that order
 * (sql/0003_cheaper_rows.sql): no foreign key removes the envelopes, and
 * the order is what keeps a batch storing for the device at that moment
 * from leaving rows behind.
 */
enum ferry_err queue_device_delete(struct queue_registry *reg, int64_t id)
{
	char idbuf[24];
	const char *params[1] = { idbuf };
	PGresult *res;
	enum ferry_err rc;

	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
	rc = run(reg, "SELECT ferry_device_delete($1::bigint)", 1, params, 0, &res);
	if (rc)
		return rc;
	rc = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? FERRY_OK
									    : FERRY_ENOTFOUND;
	PQclear(res);
	return rc;
}

enum ferry_err queue_device_set_push(struct queue_registry *reg, int64_t id,
				     const struct queue_push_token *tok)
{
	char idbuf[24];
	const char *params[6] = { idbuf,      tok->provider,
				  tok->token, tok->app,
				  tok->topic, tok->environment ? tok->environment : "production" };

	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
	return run_on_device(reg,
			     "UPDATE devices SET push_provider = $2, push_token = $3, "
			     "push_app = $4, apns_topic = $5, push_environment = $6, "
			     "push_updated = now() WHERE id = $1",
			     6, params);
}

enum ferry_err queue_device_clear_push(struct queue_registry *reg, int64_t id)
{
	char idbuf[24];
	const char *params[1] = { idbuf };

	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
	return run_on_device(reg,
			     "UPDATE devices SET push_provider = NULL, push_token = NULL, "
			     "push_app = NULL, apns_topic = NULL, push_environment = NULL, "
			     "push_updated = NULL WHERE id = $1",
			     1, params);
}

enum ferry_err queue_device_auth(struct queue_registry *reg, int64_t id, const void *secret,
				 size_t len, char user[QUEUE_USER_MAX + 1], int *read_receipts)
{
	static const uint8_t nobody[QUEUE_SECRET_HASH_LEN];
	uint8_t want[QUEUE_SECRET_HASH_LEN], got[QUEUE_SECRET_HASH_LEN];
	char idbuf[24];
	const char *params[1] = { idbuf };
	const uint8_t *stored = nobody;
	PGresult *res;
	enum ferry_err rc;
	int found = 0, receipts = QUEUE_READ_RECEIPTS_DEFAULT;

	if (read_receipts)
		*read_receipts = QUEUE_READ_RECEIPTS_DEFAULT;
	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
	/* One statement for the credentials and the user's settings, so the
	 * handshake costs no extra round trip. A user without a user_settings
	 * row has the defaults: true is QUEUE_READ_RECEIPTS_DEFAULT. */
	rc = run(reg,
		 "SELECT d.user_id, encode(d.secret_hash, 'hex'), coalesce(s.read_receipts, true) "
		 "FROM devices d LEFT JOIN user_settings s ON s.user_id = d.user_id "
		 "WHERE d.id = $1",
		 1, params, 1, &res);
	if (rc)
		return rc;
	if (PQntuples(res) == 1 && PQgetlength(res, 0, 1) == 2 * QUEUE_SECRET_HASH_LEN) {
		const char *hex = PQgetvalue(res, 0, 1);

		for (int i = 0; i < QUEUE_SECRET_HASH_LEN; i++) {
			unsigned v;

			sscanf(hex + 2 * i, "%2x", &v);
			want[i] = (uint8_t)v;
		}
		snprintf(user, QUEUE_USER_MAX + 1, "%s", PQgetvalue(res, 0, 0));
		receipts = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
		stored = want;
		found = 1;
	}
	PQclear(res);
	/* Hash and compare even for an unknown device, so both cost the same. */
	queue_secret_hash(secret, len, got);
	if (CRYPTO_memcmp(stored, got, QUEUE_SECRET_HASH_LEN) != 0 || !found)
		return FERRY_EAUTH;
	/* Only a device that proved who it is learns its user's settings. */
	if (read_receipts)
		*read_receipts = receipts;
	return FERRY_OK;
}

enum ferry_err queue_user_devices(struct queue_registry *reg, const char *user, int64_t *ids,
				  size_t max, size_t *n)
{
	const char *params[1] = { user };
	PGresult *res;
	enum ferry_err rc;
	size_t rows;

	rc = run(reg, "SELECT id FROM devices WHERE user_id = $1 ORDER BY id", 1, params, 1, &res);
	if (rc)
		return rc;
	rows = (size_t)PQntuples(res);
	if (rows > max)
		rows = max;
	for (size_t i = 0; i < rows; i++)
		ids[i] = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
	*n = rows;
	PQclear(res);
	return FERRY_OK;
}

/* "{1,2,3}": a bigint[] parameter for @n ids, in @arr (released on failure). */
static enum ferry_err id_array(struct buf *arr, const int64_t *ids, size_t n)
{
	enum ferry_err rc;

	buf_init(arr, 24 * n + 2);
	rc = buf_puts(arr, "{");
	for (size_t i = 0; i < n && !rc; i++)
		rc = buf_printf(arr, "%s%lld", i ? "," : "", (long long)ids[i]);
	if (!rc)
		rc = buf_puts(arr, "}");
	if (rc)
		buf_release(arr);
	return rc;
}

enum ferry_err queue_devices_get(struct queue_registry *reg, const int64_t *ids, size_t n,
				 struct queue_device **out, size_t *nout)
{
	const char *params[1];
	struct buf arr;
	PGresult *res;
	enum ferry_err rc;

	*out = NULL;
	*nout = 0;
	if (n == 0)
		return FERRY_OK;
	if (n > QUEUE_DEVICES_GET_MAX)
		return FERRY_EINVAL;
	rc = id_array(&arr, ids, n);
	if (rc)
		return rc;
	params[0] = arr.data;
	rc = run(reg,
		 "SELECT " DEVICE_COLUMNS " FROM devices WHERE id = ANY($1::bigint[]) ORDER BY id",
		 1, params, 1, &res);
	buf_release(&arr);
	if (rc)
		return rc;
	return parse_devices(res, out, nout);
}

enum ferry_err queue_device_drop_push(struct queue_registry *reg, int64_t id, const char *token,
				      int64_t before_ms)
{
	char idbuf[24], msbuf[24];
	const char *params[3] = { idbuf, token, msbuf };

	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
	snprintf(msbuf, sizeof(msbuf), "%lld", (long long)before_ms);
	return run_on_device(reg,
			     "UPDATE devices SET push_provider = NULL, push_token = NULL, "
			     "push_app = NULL, apns_topic = NULL, push_environment = NULL, "
			     "push_updated = NULL WHERE id = $1 AND push_token = $2 AND "
			     "push_updated < to_timestamp($3::bigint / 1000.0)",
			     3, params);
}

enum ferry_err queue_devices_seen(struct queue_registry *reg, const int64_t *ids, size_t n)
{
	struct buf arr;
	const char *params[1];
	PGresult *res;
	enum ferry_err rc;

	if (n == 0)
		return FERRY_OK;
	rc = id_array(&arr, ids, n);
	if (rc)
		return rc;
	params[0] = arr.data;
	/* Rows locked in id order, as the store's writers lock them: two
	 * transactions that lock devices in the same order cannot deadlock. */
	rc = run(reg,
		 "WITH l AS (SELECT id FROM devices WHERE id = ANY($1::bigint[]) ORDER BY id "
		 "FOR NO KEY UPDATE) "
		 "UPDATE devices d SET last_seen = now() FROM l WHERE d.id = l.id",
		 1, params, 0, &res);
	buf_release(&arr);
	if (!rc)
		PQclear(res);
	return rc;
}

/* @s as an element of a text[] literal: quoted, with printable ASCII only
 * (a provider's reason comes off the network), at most 64 bytes. */
static enum ferry_err text_elem(struct buf *arr, const char *s)
{
	enum ferry_err rc = buf_puts(arr, "\"");

	for (size_t i = 0; s[i] && i < 64 && !rc; i++) {
		char c = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';

		rc = (c == '"' || c == '\\') ? buf_printf(arr, "\\%c", c)
					     : buf_printf(arr, "%c", c);
	}
	return rc ? rc : buf_puts(arr, "\"");
}

enum ferry_err queue_devices_push_outcomes(struct queue_registry *reg,
					   const struct queue_push_outcome *o, size_t n)
{
	struct buf a[6];
	const char *params[6];
	PGresult *res;
	enum ferry_err rc = FERRY_OK;

	if (n == 0)
		return FERRY_OK;
	if (n > QUEUE_PUSH_OUTCOMES_MAX)
		return FERRY_EINVAL;
	for (int k = 0; k < 6; k++)
		buf_init(&a[k], 160 * n + 2); /* a quoted, escaped element at most */
	for (size_t i = 0; i < n && !rc; i++) {
		const char *sep = i ? "," : "{";

		rc = buf_printf(&a[0], "%s%lld", sep, (long long)o[i].device);
		if (!rc)
			rc = buf_printf(&a[1], "%s%lld", sep, (long long)o[i].at_ms);
		if (!rc)
			rc = buf_puts(&a[2], sep);
		if (!rc)
			rc = text_elem(&a[2], o[i].provider);
		if (!rc)
			rc = buf_puts(&a[3], sep);
		if (!rc)
			rc = text_elem(&a[3], o[i].outcome);
		if (!rc)
			rc = buf_printf(&a[4], "%s%d", sep,
					o[i].status >= 0 && o[i].status <= 999 ? o[i].status : 0);
		if (!rc)
			rc = buf_puts(&a[5], sep);
		if (!rc)
			rc = o[i].reason[0] ? text_elem(&a[5], o[i].reason)
					    : buf_puts(&a[5], "NULL");
	}
	for (int k = 0; k < 6 && !rc; k++)
		rc = buf_puts(&a[k], "}");
	if (rc)
		goto out;
	for (int k = 0; k < 6; k++)
		params[k] = a[k].data;
	/* The latest outcome per device; rows locked in id order, as the
	 * store's writers lock them. */
	rc = run(reg,
		 "WITH o AS (SELECT DISTINCT ON (u.dev) u.* FROM unnest($1::bigint[], "
		 "$2::bigint[], $3::text[], $4::text[], $5::smallint[], $6::text[]) "
		 "WITH ORDINALITY AS u(dev, at, prov, outcome, status, reason, i) "
		 "ORDER BY u.dev, u.at DESC, u.i DESC), "
		 "l AS (SELECT id FROM devices WHERE id IN (SELECT dev FROM o) ORDER BY id "
		 "FOR NO KEY UPDATE) "
		 "UPDATE devices d SET push_last = timestamptz 'epoch' + o.at * interval "
		 "'1 millisecond', push_last_provider = o.prov, push_last_outcome = o.outcome, "
		 "push_last_status = o.status, push_last_reason = o.reason "
		 "FROM l JOIN o ON o.dev = l.id WHERE d.id = l.id",
		 6, params, 0, &res);
	if (!rc)
		PQclear(res);
out:
	for (int k = 0; k < 6; k++)
		buf_release(&a[k]);
	return rc;
}

/*
 * No index on devices.pending, on purpose: the store updates it with every
 * batch and every acknowledgement, and an indexed column makes each of those
 * updates a non-HOT one with an index entry of its own, on the hot path, for
 * the sake of an operator's occasional look. Without it this is a scan of
 * devices with a top-N sort (about 0.1 s per million devices), and one
 * primary-key probe per listed device for the head of its queue.
 */
enum ferry_err queue_depth_totals(struct queue_registry *reg, unsigned max_age_ms,
				  struct queue_totals *out)
{
	uint64_t now = monotonic_ms();
	enum ferry_err rc = FERRY_OK;
	PGresult *res;

	pthread_mutex_lock(&reg->totals_lock);
	if (!max_age_ms || !reg->totals_at || now - reg->totals_at > max_age_ms) {
		rc = run(reg,
			 "SELECT count(*) FILTER (WHERE pending > 0), coalesce(sum(pending), 0), "
			 "(extract(epoch FROM now()) * 1000)::bigint FROM devices",
			 0, NULL, 1, &res);
		if (!rc) {
			reg->totals.devices = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
			reg->totals.envelopes = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
			reg->totals.as_of_ms = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
			reg->totals_at = monotonic_ms();
			PQclear(res);
		}
	}
	if (!rc)
		*out = reg->totals;
	pthread_mutex_unlock(&reg->totals_lock);
	return rc;
}

enum ferry_err queue_devices_deepest(struct queue_registry *reg, size_t max,
				     struct queue_depth *out, size_t *n)
{
	char maxbuf[24];
	const char *params[1] = { maxbuf };
	PGresult *res;
	enum ferry_err rc;
	int rows;

	*n = 0;
	if (max < 1 || max > QUEUE_DEEPEST_MAX)
		return FERRY_EINVAL;
	snprintf(maxbuf, sizeof(maxbuf), "%zu", max);
	rc = run(reg,
		 "SELECT d.id, d.user_id, d.pending, "
		 "coalesce((SELECT (extract(epoch FROM e.created) * 1000)::bigint FROM envelopes e "
		 "WHERE e.recipient_device = d.id ORDER BY e.seq LIMIT 1), 0) "
		 "FROM devices d WHERE d.pending > 0 ORDER BY d.pending DESC, d.id LIMIT $1",
		 1, params, 1, &res);
	if (rc)
		return rc;
	rows = PQntuples(res);
	for (int i = 0; i < rows && (size_t)i < max; i++) {
		struct queue_depth *q = &out[i];

		q->device = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		snprintf(q->user, sizeof(q->user), "%s", PQgetvalue(res, i, 1));
		q->pending = strtoull(PQgetvalue(res, i, 2), NULL, 10);
		q->oldest_created_ms = strtoll(PQgetvalue(res, i, 3), NULL, 10);
		(*n)++;
	}
	PQclear(res);
	return FERRY_OK;
}

/* ---- per-user settings ---- */

enum ferry_err queue_user_settings_get(struct queue_registry *reg, const char *user,
				       struct queue_user_settings *out)
{
	const char *params[1] = { user };
	PGresult *res;
	enum ferry_err rc;

	out->read_receipts = QUEUE_READ_RECEIPTS_DEFAULT;
	rc = run(reg, "SELECT read_receipts FROM user_settings WHERE user_id = $1", 1, params, 1,
		 &res);
	if (rc)
		return rc;
	if (PQntuples(res) == 1)
		out->read_receipts = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return FERRY_OK;
}

/* A whole replace: every setting is written, as PUT /v1/users/{user}/settings
 * gives them all. Retried by the client, not here (a write). */
enum ferry_err queue_user_settings_put(struct queue_registry *reg, const char *user,
				       const struct queue_user_settings *s)
{
	const char *params[2] = { user, s->read_receipts ? "true" : "false" };
	PGresult *res;
	enum ferry_err rc;

	rc = run(reg,
		 "INSERT INTO user_settings (user_id, read_receipts) VALUES ($1, $2::boolean) "
		 "ON CONFLICT (user_id) DO UPDATE SET read_receipts = excluded.read_receipts, "
		 "updated = now()",
		 2, params, 0, &res);
	if (!rc)
		PQclear(res);
	return rc;
}
