/*
 * queue.h - ferry's PostgreSQL side: schema migrations and the device registry.
 *
 * The schema lives in sql/NNNN_name.sql, compiled into the binary
 * (queue/migrations.c is generated from sql/ by the build), and is applied by
 * queue_migrate(), each migration in its own transaction, recorded in the
 * schema_version table. A binary refuses to serve a database whose schema is
 * newer than the newest migration it knows.
 *
 * The device registry is the synchronous control-plane API used by the admin
 * API: a small pool of blocking libpq connections, safe to call from several
 * threads at once. The hot envelope path does not go through it.
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

/* Remove a device and, through the schema, its queued envelopes. */
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
 */
enum ferry_err queue_device_auth(struct queue_registry *reg, int64_t id, const void *secret,
				 size_t len, char user[QUEUE_USER_MAX + 1]) FERRY_WUR;

/*
 * The ids of @user's devices, ascending: up to @max into @ids, the number
 * written in *n. An unknown user has none.
 */
enum ferry_err queue_user_devices(struct queue_registry *reg, const char *user, int64_t *ids,
				  size_t max, size_t *n) FERRY_WUR;

/* Set last_seen = now() for @n devices in one statement. */
enum ferry_err queue_devices_seen(struct queue_registry *reg, const int64_t *ids,
				  size_t n) FERRY_WUR;

/* Free the strings @dev owns and zero it. NULL is a no-op. */
void queue_device_release(struct queue_device *dev);

/* Release @n records and the array itself. NULL is a no-op. */
void queue_device_list_free(struct queue_device *devs, size_t n);

#endif
