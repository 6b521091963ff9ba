/*
 * queue.h - ferry's PostgreSQL side: schema migrations and the device registry.
 *
 * The schema lives in sql/NNNN_name.sql, compiled into the binary
 * (queue/migrations.c is generated from sql/ by the build), and is applied by
 * queue_migrate(), each migration in its own transaction, recorded in the
 * schema_version table. A binary refuses to serve a database whose schema is
 * newer than the newest migration it knows.
 *
 * The device registry (devices, and per-user settings) is the synchronous
 * control-plane API used by the admin API: a small pool of blocking libpq
 * connections, safe to call from several threads at once. The hot envelope
 * path does not go through it.
 */
#ifndef FERRY_QUEUE_QUEUE_H
#define FERRY_QUEUE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---- schema ---- */

/* Newest schema version this binary knows. */
int queue_schema_latest(void);

/*
 * Apply every pending migration to the database at @conninfo. Serialised
 * across processes with an advisory lock, so two migrators never race.
 * *applied (may be NULL) gets the number applied now (0: up to date).
 * FERRY_EUNAVAIL if the database cannot be reached, FERRY_ESCHEMA if it is
 * newer than this binary, FERRY_EDB if a migration failed (rolled back).
 * Messages go to @err.
 */
enum ferry_err queue_migrate(const char *conninfo, unsigned connect_timeout, int *applied,
			     char *err, size_t errlen) FERRY_WUR;

/*
 * Check that the database schema is exactly queue_schema_latest().
 * *version (may be NULL) gets the database's version (0: none).
 * FERRY_ESCHEMA when it is older (run `ferryd migrate`) or newer.
 */
enum ferry_err queue_schema_check(const char *conninfo, unsigned connect_timeout, int *version,
				  char *err, size_t errlen) FERRY_WUR;

/*
 * Ask the database whether a COMMIT it answers survives a crash of its host:
 * `fsync` and `synchronous_commit` (as this connection sees them, per
 * database and role settings included) must not be off. @bad gets "" when
 * they are not, else the offending settings ("fsync=off
 * synchronous_commit=off"). FERRY_EUNAVAIL if the database cannot be
 * reached, FERRY_EDB if it cannot be asked; messages go to @err.
 */
enum ferry_err queue_durability_check(const char *conninfo, unsigned connect_timeout, char *bad,
				      size_t badlen, char *err, size_t errlen) FERRY_WUR;

/* ---- secrets ---- */

#define QUEUE_SECRET_BYTES 32
#define QUEUE_SECRET_LEN 43 /* base64url of 32 bytes, no padding */
#define QUEUE_SECRET_HASH_LEN 32

/* Make a new secret: 32 random bytes as base64url, NUL-terminated in @out. */
enum ferry_err queue_secret_new(char out[QUEUE_SECRET_LEN + 1]) FERRY_WUR;

/* SHA-256 of the secret text, as stored in devices.secret_hash. */
void queue_secret_hash(const char *secret, size_t len, uint8_t out[QUEUE_SECRET_HASH_LEN]);

/* ---- validation shared by the admin API and the gateway ---- */

#define QUEUE_USER_MAX 64
#define QUEUE_APP_MAX 64
#define QUEUE_TOKEN_MAX 4096
#define QUEUE_TOPIC_MAX 255

/* 1-64 bytes of [A-Za-z0-9._:@+-]. */
int queue_user_valid(const char *user);

/* "ios", "android", "desktop" or "web". */
int queue_platform_valid(const char *platform);

/* ---- device registry ---- */

struct queue_registry;

/* A device as the registry knows it. Strings are owned by the record. */
struct queue_device {
	int64_t id;
	char *user;
	char *platform;
	char *push_provider;	 /* "apns", "fcm" or NULL */
	char *push_token;	 /* NULL when none */
	char *push_app;		 /* NULL: the default app */
	char *push_topic;	 /* NULL: the app's configured topic */
	char *push_environment;	 /* "production" or "sandbox"; NULL without token */
	int64_t created_ms;	 /* Unix time in milliseconds */
	int64_t push_updated_ms; /* 0 without token */
	int64_t last_seen_ms;	 /* 0: never connected */
	/* The offline queue (devices.pending and the head envelope). */
	uint64_t pending;
	int64_t oldest_ms; /* the head envelope's creation, Unix ms; 0: none */
	/* The last push's outcome (sql/0006_push_outcome.sql); push_last_ms 0:
	 * none recorded, and the strings are NULL. */
	int64_t push_last_ms;
	char *push_last_provider;
	char *push_last_outcome;
	int push_last_status;
	char *push_last_reason; /* NULL for "ok" */
};

/* What PUT /v1/devices/{id}/push sets. NULL app, topic: defaults. */
struct queue_push_token {
	const char *provider;
	const char *token;
	const char *app;
	const char *topic;
	const char *environment;
};

/*
 * A registry with up to @nconn connections to @conninfo, opened lazily and
 * reopened after a failure (for a second after a failed connect, calls fail
 * with FERRY_EUNAVAIL at once rather than each waiting for the timeout).
 * @connect_timeout is in seconds (a connect_timeout inside @conninfo wins).
 * Returns NULL only when out of memory.
 */
struct queue_registry *queue_registry_new(const char *conninfo, unsigned connect_timeout,
					  unsigned nconn);

/* Close every connection. NULL is a no-op. No call may be in progress. */
void queue_registry_free(struct queue_registry *reg);

/* FERRY_OK if the database answers a trivial query now. */
enum ferry_err queue_registry_ping(struct queue_registry *reg) FERRY_WUR;

/*
 * Register a device for @user on @platform (both already validated).
 * Writes the new id to *id and the one-time secret to @secret; only its hash
 * is stored.
 */
enum ferry_err queue_device_create(struct queue_registry *reg, const char *user,
				   const char *platform, int64_t *id,
				   char secret[QUEUE_SECRET_LEN + 1]) FERRY_WUR;

/* Fetch a device into @out (release with queue_device_release()). */
enum ferry_err queue_device_get(struct queue_registry *reg, int64_t id,
				struct queue_device *out) FERRY_WUR;

/*
 * All devices of @user, oldest first: *out is a malloc'ed array of *n
 * records; free with queue_device_list_free(). An unknown user has none.
 */
enum ferry_err queue_device_list(struct queue_registry *reg, const char *user,
				 struct queue_device **out, size_t *n) FERRY_WUR;

/* Remove a device and its queued envelopes (ferry_device_delete(), one
 * transaction). */
enum ferry_err queue_device_delete(struct queue_registry *reg, int64_t id) FERRY_WUR;

/* Set the device's push token (fields validated by the caller). */
enum ferry_err queue_device_set_push(struct queue_registry *reg, int64_t id,
				     const struct queue_push_token *tok) FERRY_WUR;

/* Remove the device's push token. FERRY_ENOTFOUND if the device is unknown. */
enum ferry_err queue_device_clear_push(struct queue_registry *reg, int64_t id) FERRY_WUR;

/*
 * Check a device's credentials: FERRY_OK and the device's user in @user if
 * device @id exists and SHA-256(@secret) equals its stored hash (compared in
 * constant time); FERRY_EAUTH for an unknown device or a wrong secret alike.
 * *@read_receipts (may be NULL) gets the user's read_receipts setting, read
 * by the same statement (struct queue_user_settings): 1 unless the user
 * switched them off, and QUEUE_READ_RECEIPTS_DEFAULT whenever the answer is
 * not FERRY_OK.
 */
enum ferry_err queue_device_auth(struct queue_registry *reg, int64_t id, const void *secret,
				 size_t len, char user[QUEUE_USER_MAX + 1],
				 int *read_receipts) FERRY_WUR;

/*
 * The ids of @user's devices, ascending: up to @max into @ids, the number
 * written in *n. An unknown user has none.
 */
enum ferry_err queue_user_devices(struct queue_registry *reg, const char *user, int64_t *ids,
				  size_t max, size_t *n) FERRY_WUR;

/*
 * The devices among @ids (@n of them, at most QUEUE_DEVICES_GET_MAX) that
 * exist, in one statement: *out is a malloc'ed array of *nout records in
 * ascending id order; free with queue_device_list_free().
 */
#define QUEUE_DEVICES_GET_MAX 1000
enum ferry_err queue_devices_get(struct queue_registry *reg, const int64_t *ids, size_t n,
				 struct queue_device **out, size_t *nout) FERRY_WUR;

/*
 * Remove device @id's push token if it is still @token and was registered
 * before @before_ms (Unix ms): a token registered again meanwhile, or a new
 * one, stays. FERRY_OK: removed; FERRY_ENOTFOUND: nothing matched.
 */
enum ferry_err queue_device_drop_push(struct queue_registry *reg, int64_t id, const char *token,
				      int64_t before_ms) FERRY_WUR;

/* Set last_seen = now() for @n devices in one statement. */
enum ferry_err queue_devices_seen(struct queue_registry *reg, const int64_t *ids,
				  size_t n) FERRY_WUR;

/* One push's outcome, as queue_devices_push_outcomes() records it. */
struct queue_push_outcome {
	int64_t device;
	int64_t at_ms;	      /* when it was sent, Unix ms */
	const char *provider; /* "apns" or "fcm" */
	const char *outcome;  /* "ok", "token_invalid", "failed" or "rejected" */
	int status;	      /* HTTP status, 0: none */
	char reason[48];      /* "" for none; cut to 64 bytes in any case */
};

/* Most outcomes queue_devices_push_outcomes() writes at once. */
#define QUEUE_PUSH_OUTCOMES_MAX 1000

/*
 * Record @n push outcomes in the devices' push_last* columns, in one
 * statement; of several for one device the latest (at_ms, then position)
 * wins. Devices that no longer exist are skipped. FERRY_EINVAL when @n is
 * above QUEUE_PUSH_OUTCOMES_MAX.
 */
enum ferry_err queue_devices_push_outcomes(struct queue_registry *reg,
					   const struct queue_push_outcome *o, size_t n) FERRY_WUR;

/* A device's offline queue, as GET /v1/queues lists it. */
struct queue_depth {
	int64_t device;
	char user[QUEUE_USER_MAX + 1];
	uint64_t pending;	   /* devices.pending (sql/0002_store.sql) */
	int64_t oldest_created_ms; /* the head envelope's creation (Unix ms); 0: none */
};

/* Most devices queue_devices_deepest() lists at once. */
#define QUEUE_DEEPEST_MAX 1000

/*
 * The devices with the most envelopes waiting, deepest first (ties: lower
 * id first), at most @max (1 to QUEUE_DEEPEST_MAX) into @out; *n gets how
 * many. Devices with none waiting are left out. pending is the counter the
 * store keeps, which may include envelopes that expired since the last
 * sweep; oldest_created_ms is when the envelope at the head of the queue
 * (the next to be delivered) was created, 0 if the rows are gone by the
 * time they are read. One statement, without an index on pending (a scan
 * of devices; see the function). FERRY_EINVAL for a @max out of range.
 */
enum ferry_err queue_devices_deepest(struct queue_registry *reg, size_t max,
				     struct queue_depth *out, size_t *n) FERRY_WUR;

/* Every offline queue together. */
struct queue_totals {
	uint64_t devices;   /* devices with envelopes waiting */
	uint64_t envelopes; /* envelopes waiting, the sum of devices.pending */
	int64_t as_of_ms;   /* when the database counted them, Unix ms */
};

/*
 * The totals, read anew when the last reading is older than @max_age_ms
 * (0: always). A reading is a scan of devices (about 0.1 s per million), so
 * frequent callers (GET /v1/stats) pass an age and share one reading;
 * concurrent callers wait for the one that reads.
 */
enum ferry_err queue_depth_totals(struct queue_registry *reg, unsigned max_age_ms,
				  struct queue_totals *out) FERRY_WUR;

/* Free the strings @dev owns and zero it. NULL is a no-op. */
void queue_device_release(struct queue_device *dev);

/* Release @n records and the array itself. NULL is a no-op. */
void queue_device_list_free(struct queue_device *devs, size_t n);

/* ---- per-user settings ---- */

/*
 * A user's settings (sql/0005_user_settings.sql). There is no table of
 * users: settings are kept per user id, whether or not the user has devices,
 * and a user who never changed them has the defaults.
 */
struct queue_user_settings {
	int read_receipts; /* 1 (default): the user's read receipts are passed on */
};

#define QUEUE_READ_RECEIPTS_DEFAULT 1

/*
 * @user's settings (validated by the caller) into *@out: the defaults for a
 * user who has none stored, with devices or without. FERRY_EUNAVAIL when
 * the database cannot be reached, FERRY_EDB on another database error.
 */
enum ferry_err queue_user_settings_get(struct queue_registry *reg, const char *user,
				       struct queue_user_settings *out) FERRY_WUR;

/*
 * Store @s (borrowed) as the whole of @user's settings (validated by the
 * caller), in one statement: inserted for a user who had none, replaced
 * otherwise. FERRY_EUNAVAIL (not known to be stored: retry), FERRY_EINVAL
 * (the database refused the user id), FERRY_EDB.
 */
enum ferry_err queue_user_settings_put(struct queue_registry *reg, const char *user,
				       const struct queue_user_settings *s) FERRY_WUR;

/* ---- the envelope store ---- */

/*
 * The offline store: a thread of its own with a libuv loop and libpq
 * connections in pipeline mode. Requests arrive through its mailbox from any
 * thread (queue_store_submit) and are answered by posting the caller's reply
 * message to the caller's mailbox; the request is the caller's again then.
 * PUTs that arrive while earlier ones are being written are batched: one
 * round trip and one commit for the batch. Several connections write in
 * parallel (writers), each for a fixed share of the devices (device id
 * modulo writers), one batch at a time: the envelopes of a device commit in
 * submission order, and their sequence numbers follow it. A PUT whose
 * recipients belong to several writers is written as one part per writer,
 * each committed with its writer's batch, and answered once, after its last
 * part.
 *
 * Replies (req->rc first; nothing else is meaningful unless it is FERRY_OK):
 *   PUT      OK: every part committed; puts[i].result says what became of
 *            recipient i (STORED, DUPLICATE, FULL, GONE). Only STORED and
 *            DUPLICATE mean "in the database now" (ACK(stored) material).
 *            EUNAVAIL: a writer it needs is down, stopping, a batch of
 *            one of its parts failed (maybe committed, maybe not), or one
 *            part failed while another committed (a retransmission comes
 *            back DUPLICATE for what did commit); EDB: the database refused
 *            this PUT and no part of it committed; ELIMIT:
 *            max_inflight_bytes (answered at once); EINVAL: bad fields
 *            (sender_user, sender_device < 0, kind, no recipients); ENOMEM.
 *            Not known to be stored in any case.
 *   BARRIER  OK once every PUT submitted before it has been answered (on
 *            every writer); EUNAVAIL when a writer is down.
 *   FETCH    OK: rows/nrows (NULL/0 for none), in seq order, seq > after_seq.
 *   DELETE   OK: count = rows deleted (ids not stored are ignored).
 *   COUNT    OK: count.
 * FETCH, DELETE and COUNT answer EUNAVAIL at once while no reader is up;
 * a device's reads run in submission order. Every reply is posted once.
 * An envelope expires ttl seconds after created_ms (0: the store's now).
 */

#define QUEUE_KIND_MESSAGE 1
#define QUEUE_KIND_RECEIPT 2

struct queue_store;
struct mailbox;
struct mailbox_msg;

struct queue_store_opts {
	const char *conninfo;
	unsigned connect_timeout;	 /* seconds */
	unsigned connections;		 /* 2-64: writers, and the others read */
	unsigned writers;		 /* 1 to connections - 1; 0: 2 (1 if
					  * connections is 2) */
	unsigned batch_max;		 /* recipients in one commit (>= 1) */
	unsigned max_pending_per_device; /* PUT beyond it: QUEUE_PUT_FULL; 0: none */
	size_t max_inflight_bytes;	 /* payload bytes queued or being written */
	unsigned default_ttl;		 /* seconds (>= 1) */
	unsigned expire_interval;	 /* ms between sweeps for expired envelopes */
	unsigned expire_batch;		 /* rows deleted per sweep statement */
};

enum queue_req_type {
	QUEUE_REQ_PUT,	  /* store one envelope for several devices */
	QUEUE_REQ_FETCH,  /* a device's next envelopes, in order */
	QUEUE_REQ_DELETE, /* a device acknowledged these */
	QUEUE_REQ_COUNT,  /* how many envelopes wait for a device */
	/* Answered once every PUT submitted before it has been answered, on
	 * every writer: FERRY_OK, or FERRY_EUNAVAIL if a writer is down or a
	 * batch it rode with failed. Uses no request field. */
	QUEUE_REQ_BARRIER,
};

enum queue_put_result {
	QUEUE_PUT_STORED,    /* committed now */
	QUEUE_PUT_DUPLICATE, /* (recipient, sender device, client id) was stored before */
	QUEUE_PUT_FULL,	     /* max_pending_per_device reached; nothing stored */
	QUEUE_PUT_GONE,	     /* no such device (deleted meanwhile) */
};

/* One recipient of a PUT, and what became of it. */
struct queue_put {
	int64_t recipient;
	enum queue_put_result result;
	uint64_t server_id; /* STORED: the request's; DUPLICATE: the one stored first */
	int64_t seq;	    /* STORED: its place in the device's queue */
};

/* One stored envelope, as FETCH returns it (owned by the rows array). */
struct queue_row {
	int64_t seq;
	uint64_t server_id;
	char sender_user[QUEUE_USER_MAX + 1];
	int64_t sender_device;
	uint64_t client_id;
	int kind;
	uint64_t created_ms;
	size_t len;
	uint8_t *payload;
};

struct queue_req {
	struct mailbox_msg *reply; /* posted to reply_to when done (caller's) */
	struct mailbox *reply_to;
	enum queue_req_type type;
	enum ferry_err rc; /* OK; EUNAVAIL: not done, database unreachable
			    * (retry later); ELIMIT: max_inflight_bytes; EDB; ENOMEM */

	/* PUT: one envelope (borrowed until done) for nputs devices. */
	uint64_t server_id;
	const char *sender_user;
	int64_t sender_device;
	uint64_t client_id;
	int kind;
	const uint8_t *payload;
	size_t len;
	uint64_t created_ms;
	unsigned ttl; /* seconds, 0: default_ttl; capped at default_ttl */
	struct queue_put *puts;
	size_t nputs;

	/* FETCH (device, after_seq, limit -> rows), DELETE (device, ids ->
	 * count: how many were deleted), COUNT (device -> count: the device's
	 * pending counter; it may include envelopes that expired since the last
	 * sweep, and is 0 for an unknown device). Expired envelopes are never
	 * returned by FETCH; limit is capped at QUEUE_FETCH_MAX. */
	int64_t device;
	int64_t after_seq;
	size_t limit;
	struct queue_row *rows; /* FETCH result: free with queue_rows_free() */
	size_t nrows;
	const uint64_t *ids; /* DELETE: server ids, borrowed until done */
	size_t nids;
	uint64_t count;

	void *store_private[2]; /* the store's while it holds the request */
};

/* Start the store thread. NULL with @err on failure (bad options, no memory);
 * an unreachable database is not a failure: the store retries in the
 * background and answers FERRY_EUNAVAIL meanwhile. */
struct queue_store *queue_store_start(const struct queue_store_opts *opts, char *err,
				      size_t errlen);

/* Hand @req to the store (any thread). Its reply is always posted, exactly
 * once, even when the store is stopping (rc FERRY_EUNAVAIL then). */
void queue_store_submit(struct queue_store *st, struct queue_req *req);

/* 1 if the store's connections are up. */
int queue_store_ready(const struct queue_store *st);

/* Stop: answer what is queued with FERRY_EUNAVAIL, finish what is in
 * flight, close connections, join the thread. NULL is a no-op. */
void queue_store_stop(struct queue_store *st);

/* Free what FETCH returned (rows and their payloads are one block). NULL is
 * a no-op. */
void queue_rows_free(struct queue_row *rows, size_t n);

/* FETCH returns at most this many rows, whatever the limit asks. */
#define QUEUE_FETCH_MAX 10000

/* Counters since start (monotonic) and gauges ("now"), for stats/metrics. */
struct queue_store_stats {
	uint64_t puts;		  /* PUT requests answered, whatever the outcome */
	uint64_t put_stored;	  /* recipients: STORED (committed) */
	uint64_t put_duplicate;	  /* recipients: DUPLICATE */
	uint64_t put_full;	  /* recipients: FULL */
	uint64_t put_gone;	  /* recipients: GONE */
	uint64_t put_unavail;	  /* PUTs answered EUNAVAIL or EDB: not stored */
	uint64_t put_limit;	  /* PUTs answered ELIMIT (max_inflight_bytes) */
	uint64_t put_invalid;	  /* PUTs answered EINVAL (bad fields) */
	uint64_t barriers;	  /* BARRIER requests answered */
	uint64_t batches;	  /* write batches committed */
	uint64_t batch_puts;	  /* PUTs in committed batches (a PUT split
				   * between writers: once per part) */
	uint64_t batch_envelopes; /* recipients in committed batches */
	uint64_t batch_largest;	  /* most recipients in one committed batch */
	uint64_t batch_failures;  /* batches not committed (all their PUTs failed) */
	uint64_t commit_us_total; /* send of BEGIN to COMMIT's answer, summed */
	uint64_t commit_us_max;
	uint64_t commit_us_last;
	uint64_t fetches, fetched_rows; /* FETCH requests, rows returned */
	uint64_t deletes, deleted_rows; /* DELETE requests, rows deleted */
	uint64_t counts;		/* COUNT requests */
	uint64_t read_failures;		/* FETCH/DELETE/COUNT not answered OK */
	uint64_t expired_rows;		/* deleted by the expiry sweep */
	uint64_t expire_sweeps;		/* sweep statements run */
	uint64_t connects;		/* connections established */
	uint64_t connect_failures;	/* attempts failed, connections lost */
	uint64_t inflight_bytes;	/* now: payload bytes queued or in flight */
	uint64_t queued_puts;		/* now: PUTs (parts) waiting for a batch */
	int ready;			/* now: queue_store_ready() */
};

/* A snapshot of @st's counters (any thread; each read atomically). */
void queue_store_stats(const struct queue_store *st, struct queue_store_stats *out);
/* Add the store's commit latencies (microseconds, bounds hist_latency_us)
 * to @out. */
struct hist_snap;
void queue_store_commit_hist(const struct queue_store *st, struct hist_snap *out);

#endif
