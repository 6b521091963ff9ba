/*
 * test_migrate.c - migrations, schema constraints and the device registry
 * against a real PostgreSQL (a throwaway cluster started by make test).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <openssl/sha.h>

#include "queue/queue.h"
#include "tests/integration/harness.h"
#include "common/banned.h"

static char err[1024];

static int count(PGconn *conn, const char *sql)
{
	PGresult *res = th_pg_exec(conn, sql);
	int n = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);

	PQclear(res);
	return n;
}

static void test_migrate_apply_and_reapply(void **state)
{
	char *conninfo = th_db_new("mig");
	int applied = -1, version = -1;
	PGconn *conn;

	assert_int_equal(queue_schema_check(conninfo, 5, &version, err, sizeof(err)),
			 FERRY_ESCHEMA);
	assert_int_equal(version, 0);
	assert_non_null(strstr(err, "ferryd migrate"));

	assert_int_equal(queue_migrate(conninfo, 5, &applied, err, sizeof(err)), FERRY_OK);
	assert_int_equal(applied, queue_schema_latest());
	assert_int_equal(queue_schema_check(conninfo, 5, &version, err, sizeof(err)), FERRY_OK);
	assert_int_equal(version, queue_schema_latest());

	/* Idempotent: a second run applies nothing and changes nothing. */
	assert_int_equal(queue_migrate(conninfo, 5, &applied, err, sizeof(err)), FERRY_OK);
	assert_int_equal(applied, 0);

	conn = th_pg_connect(conninfo);
	assert_int_equal(count(conn, "SELECT count(*) FROM schema_version"), queue_schema_latest());
	assert_int_equal(count(conn, "SELECT count(*) FROM schema_version WHERE version = 1 "
				     "AND name = '0001_init'"),
			 1);
	PQfinish(conn);
	free(conninfo);
}

static void test_migrate_refuses_newer_schema(void **state)
{
	char *conninfo = th_db_new("newer");
	char sql[128];
	int applied;
	PGconn *conn;
	char *cfg_text, *cfg_path, *out = NULL;

	assert_int_equal(queue_migrate(conninfo, 5, &applied, err, sizeof(err)), FERRY_OK);
	conn = th_pg_connect(conninfo);
	snprintf(sql, sizeof(sql), "INSERT INTO schema_version (version, name) VALUES (%d, 'x')",
		 queue_schema_latest() + 1);
	PQclear(th_pg_exec(conn, sql));
	PQfinish(conn);

	assert_int_equal(queue_migrate(conninfo, 5, &applied, err, sizeof(err)), FERRY_ESCHEMA);
	assert_non_null(strstr(err, "newer"));
	assert_int_equal(queue_schema_check(conninfo, 5, NULL, err, sizeof(err)), FERRY_ESCHEMA);

	/* The daemon refuses to start on it, with exit code 3. */
	cfg_text = th_ferryd_config(conninfo, th_free_port(), "t0ken");
	cfg_path = th_write_file("newer.ini", cfg_text);
	assert_int_equal(th_ferryd_cmd(cfg_path, (const char *[]){ "run", NULL }, &out), 3);
	assert_non_null(strstr(out, "newer than this ferryd knows"));
	free(out);
	unlink(cfg_path);
	free(cfg_path);
	free(cfg_text);
	free(conninfo);
}

static void test_migrate_cli_and_unmigrated_run(void **state)
{
	char *conninfo = th_db_new("cli");
	char *cfg_text = th_ferryd_config(conninfo, th_free_port(), "t0ken");
	char *cfg_path = th_write_file("cli.ini", cfg_text);
	char *out = NULL;

	/* run on an empty database: refuses, points at migrate. */
	assert_int_equal(th_ferryd_cmd(cfg_path, (const char *[]){ "run", NULL }, &out), 3);
	assert_non_null(strstr(out, "run 'ferryd migrate'"));
	free(out);

	assert_int_equal(th_ferryd_cmd(cfg_path, (const char *[]){ "migrate", NULL }, &out), 0);
	assert_non_null(strstr(out, "schema at version"));
	free(out);
	assert_int_equal(th_ferryd_cmd(cfg_path, (const char *[]){ "migrate", NULL }, &out), 0);
	assert_non_null(strstr(out, "0 migrations applied"));
	free(out);
	unlink(cfg_path);
	free(cfg_path);
	free(cfg_text);
	free(conninfo);
}

/* Several migrators at once: the advisory lock makes them take turns. */
static void test_migrate_concurrent(void **state)
{
	char *conninfo = th_db_new("conc");
	char *cfg_text = th_ferryd_config(conninfo, th_free_port(), "t0ken");
	char *cfg_path = th_write_file("conc.ini", cfg_text);
	pid_t pids[4];
	PGconn *conn;

	for (int i = 0; i < 4; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			int applied;
			char e[512];

			_exit(queue_migrate(conninfo, 5, &applied, e, sizeof(e)) ? 1 : 0);
		}
	}
	for (int i = 0; i < 4; i++) {
		int st;

		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	conn = th_pg_connect(conninfo);
	assert_int_equal(count(conn, "SELECT count(*) FROM schema_version"), queue_schema_latest());
	PQfinish(conn);
	unlink(cfg_path);
	free(cfg_path);
	free(cfg_text);
	free(conninfo);
}

static void test_migrate_unreachable(void **state)
{
	char *cfg_path = th_write_file("down.ini", "[store]\nconninfo = \"host=/nonexistent "
						   "dbname=x\"\nconnect_timeout = 1\n");
	char *out = NULL;
	int applied;

	assert_int_equal(queue_migrate("host=/nonexistent dbname=x", 1, &applied, err, sizeof(err)),
			 FERRY_EUNAVAIL);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL"));
	assert_int_equal(th_ferryd_cmd(cfg_path, (const char *[]){ "migrate", NULL }, &out), 4);
	assert_non_null(strstr(out, "cannot connect to PostgreSQL"));
	free(out);
	unlink(cfg_path);
	free(cfg_path);
}

/* ---- schema constraints ---- */

struct schema_fixture {
	char *conninfo;
	PGconn *conn;
};

static int schema_setup(void **state)
{
	struct schema_fixture *f = calloc(1, sizeof(*f));
	int applied;

	f->conninfo = th_db_new("schema");
	if (queue_migrate(f->conninfo, 5, &applied, err, sizeof(err)))
		return -1;
	f->conn = th_pg_connect(f->conninfo);
	PQclear(th_pg_exec(f->conn, "INSERT INTO devices (user_id, secret_hash, platform) "
				    "VALUES ('alice', decode(repeat('ab', 32), 'hex'), 'ios')"));
	*state = f;
	return 0;
}

static int schema_teardown(void **state)
{
	struct schema_fixture *f = *state;

	PQfinish(f->conn);
	free(f->conninfo);
	free(f);
	return 0;
}

#define HASH "decode(repeat('ab', 32), 'hex')"
#define DEV_ID "(SELECT min(id) FROM devices WHERE user_id = 'alice')"
#define ENV_INSERT(seq, client)                                                                 \
	"INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, client_id, " \
	"kind, payload, expires) VALUES (" DEV_ID ", " #seq ", 'bob', 7, " #client              \
	", 'message', '\\x00', now() + interval '1 day')"

static void expect_state(PGconn *conn, const char *sql, const char *expected)
{
	char st[6];

	th_pg_sqlstate(conn, sql, st);
	if (strcmp(st, expected) != 0)
		fail_msg("expected SQLSTATE '%s', got '%s' for: %s", expected, st, sql);
}

static void test_schema_device_constraints(void **state)
{
	struct schema_fixture *f = *state;

	/* user ids: 1-64 of [A-Za-z0-9._:@+-] */
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "('bad user', " HASH ", 'ios')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "(repeat('a', 65), " HASH ", 'ios')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "('a.b:c@d+e-f_0', " HASH ", 'web')",
		     "");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "(repeat('a', 64), " HASH ", 'web')",
		     "");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "('', " HASH ", 'ios')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "(E'carol\\n', " HASH ", 'ios')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "('caro\u00e9', " HASH ", 'ios')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "('carol', " HASH ", 'toaster')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO devices (user_id, secret_hash, platform) VALUES "
		     "('carol', '\\x00', 'ios')",
		     "23514");
	/* A push token comes whole: provider without token is refused. */
	expect_state(f->conn, "UPDATE devices SET push_provider = 'apns' WHERE user_id = 'alice'",
		     "23514");
	expect_state(f->conn,
		     "UPDATE devices SET push_provider = 'fcm', push_token = 'x', "
		     "push_environment = 'production', push_updated = now(), apns_topic = 't' "
		     "WHERE user_id = 'alice'",
		     "23514");
	expect_state(f->conn,
		     "UPDATE devices SET push_provider = 'apns', push_token = 'ab', "
		     "push_environment = 'sandbox', push_updated = now() WHERE user_id = 'alice'",
		     "");
	/* push_app: the rule of user ids, or none. */
	expect_state(f->conn, "UPDATE devices SET push_app = 'bad app' WHERE user_id = 'alice'",
		     "23514");
	expect_state(f->conn,
		     "UPDATE devices SET push_app = repeat('x', 65) WHERE user_id = 'alice'",
		     "23514");
	expect_state(f->conn,
		     "UPDATE devices SET push_app = repeat('x', 64) WHERE user_id = 'alice'", "");
	expect_state(f->conn, "UPDATE devices SET push_app = NULL WHERE user_id = 'alice'", "");
}

static void test_schema_envelope_constraints(void **state)
{
	struct schema_fixture *f = *state;

	expect_state(f->conn, ENV_INSERT(1, 100), "");
	/* Same (recipient, sender device, client id): a retransmission, refused. */
	expect_state(f->conn, ENV_INSERT(2, 100), "23505");
	/* Same (recipient, seq): refused. */
	expect_state(f->conn, ENV_INSERT(1, 101), "23505");
	expect_state(f->conn, ENV_INSERT(0, 102), "23514");
	/* Sender user ids: the rule of user ids. (Unknown recipients are the
	 * store's to refuse: no foreign key since 0003.) */
	expect_state(f->conn,
		     "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		     "client_id, kind, payload, expires) VALUES (" DEV_ID ", 3, repeat('b', 65), "
		     "7, 3, 'message', '\\x00', now() + interval '1 day')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		     "client_id, kind, payload, expires) VALUES (" DEV_ID ", 3, 'b/b', "
		     "7, 3, 'message', '\\x00', now() + interval '1 day')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		     "client_id, kind, payload, expires) VALUES (" DEV_ID ", 3, repeat('b', 64), "
		     "7, 3, 'message', '\\x00', now() + interval '1 day')",
		     "");
	expect_state(f->conn,
		     "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		     "client_id, kind, payload, expires) VALUES (" DEV_ID ", 5, 'bob', 7, 5, "
		     "'gossip', '\\x00', now() + interval '1 day')",
		     "23514");
	expect_state(f->conn,
		     "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		     "client_id, kind, payload, expires) VALUES (" DEV_ID ", 6, 'bob', 7, 6, "
		     "'message', '\\x00', now() - interval '1 second')",
		     "23514");
}

/* EXPLAIN @sql, all plan lines in one malloc'ed string. */
static char *plan_of(PGconn *conn, const char *sql)
{
	char explain[512];
	PGresult *res;
	char *plan = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&plan, &len);

	snprintf(explain, sizeof(explain), "EXPLAIN %s", sql);
	res = th_pg_exec(conn, explain);
	for (int i = 0; i < PQntuples(res); i++)
		fprintf(mem, "%s\n", PQgetvalue(res, i, 0));
	PQclear(res);
	fclose(mem);
	return plan;
}

static void expect_index(PGconn *conn, const char *sql, const char *index)
{
	char *plan = plan_of(conn, sql);
	int ok = strstr(plan, index) && !strstr(plan, "Sort");

	if (!ok)
		fprintf(stderr, "plan for %s:\n%s", sql, plan);
	free(plan);
	assert_true(ok);
}

/* The queries the store will run are served by indexes, without sorting. */
static void test_schema_indexes(void **state)
{
	struct schema_fixture *f = *state;

	PQclear(th_pg_exec(f->conn, "SET enable_seqscan = off"));
	expect_index(f->conn,
		     "SELECT seq, payload FROM envelopes WHERE recipient_device = 1 "
		     "AND seq > 10 ORDER BY seq LIMIT 100",
		     "envelopes_pkey");
	expect_index(f->conn,
		     "SELECT 1 FROM envelopes WHERE expires < now() ORDER BY expires LIMIT 10",
		     "envelopes_expires_idx");
	expect_index(f->conn, "SELECT * FROM devices WHERE user_id = 'alice' ORDER BY id",
		     "devices_user_idx");
	/* The store's DELETE: acknowledged server ids of one device. */
	expect_index(f->conn,
		     "DELETE FROM envelopes WHERE recipient_device = 1 "
		     "AND server_id = ANY ('{5,6}'::bigint[])",
		     "envelopes_server_id_idx");
	PQclear(th_pg_exec(f->conn, "RESET enable_seqscan"));
}

/* Deleting a device through the registry deletes its envelopes, and only
 * its own. */
static void test_schema_device_delete(void **state)
{
	struct schema_fixture *f = *state;
	struct queue_registry *reg = queue_registry_new(f->conninfo, 5, 1);
	char secret[QUEUE_SECRET_LEN + 1];
	int64_t dave, other;
	char sql[256];
	int before;

	assert_non_null(reg);
	assert_int_equal(queue_device_create(reg, "dave", "android", &dave, secret), FERRY_OK);
	assert_int_equal(queue_device_create(reg, "dave", "ios", &other, secret), FERRY_OK);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO envelopes (recipient_device, seq, sender_user, "
		 "sender_device, client_id, kind, payload, expires) SELECT d, g, "
		 "'bob', 7, g, 'message', '\\x01', now() + interval '1 day' FROM "
		 "unnest('{%lld,%lld}'::bigint[]) d, generate_series(1, 3) g",
		 (long long)dave, (long long)other);
	PQclear(th_pg_exec(f->conn, sql));
	before = count(f->conn, "SELECT count(*) FROM envelopes");
	assert_int_equal(queue_device_delete(reg, dave), FERRY_OK);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM envelopes WHERE recipient_device = %lld",
		 (long long)dave);
	assert_int_equal(count(f->conn, sql), 0);
	assert_int_equal(count(f->conn, "SELECT count(*) FROM envelopes"), before - 3);
	assert_int_equal(count(f->conn, "SELECT count(*) FROM envelopes WHERE recipient_device "
					"NOT IN (SELECT id FROM devices)"),
			 0);
	assert_int_equal(queue_device_delete(reg, dave), FERRY_ENOTFOUND);
	assert_int_equal(queue_device_delete(reg, other), FERRY_OK);
	queue_registry_free(reg);
}

/* 0003 found 0001's unnamed constraints in the catalog: no counted regex
 * and no foreign key are left, and each name rule is there once. */
static void test_schema_0003_constraints(void **state)
{
	struct schema_fixture *f = *state;

	assert_int_equal(count(f->conn, "SELECT count(*) FROM pg_constraint WHERE conrelid IN "
					"('devices'::regclass, 'envelopes'::regclass) AND "
					"pg_get_constraintdef(oid) LIKE '%{1,64}%'"),
			 0);
	assert_int_equal(count(f->conn, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
					"AND conrelid = 'envelopes'::regclass"),
			 0);
	assert_int_equal(count(f->conn, "SELECT count(*) FROM pg_constraint WHERE conname IN "
					"('devices_user_id_check', 'devices_push_app_check', "
					"'envelopes_sender_user_check') AND convalidated"),
			 3);
}

/* ---- registry ---- */

static void test_registry_lifecycle(void **state)
{
	struct schema_fixture *f = *state;
	struct queue_registry *reg = queue_registry_new(f->conninfo, 5, 2);
	struct queue_push_token tok = { .provider = "apns",
					.token = "00ff",
					.topic = "com.example.app",
					.environment = "sandbox" };
	char secret[QUEUE_SECRET_LEN + 1];
	uint8_t hash[QUEUE_SECRET_HASH_LEN];
	char sql[256], hex[2 * QUEUE_SECRET_HASH_LEN + 1];
	struct queue_device dev, *list;
	size_t n;
	int64_t id;

	assert_non_null(reg);
	assert_int_equal(queue_registry_ping(reg), FERRY_OK);
	assert_int_equal(queue_device_create(reg, "erin", "desktop", &id, secret), FERRY_OK);
	assert_int_equal(strlen(secret), QUEUE_SECRET_LEN);
	assert_int_equal(strspn(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					"0123456789-_"),
			 QUEUE_SECRET_LEN);

	/* Only the SHA-256 of the secret is stored. */
	SHA256((const unsigned char *)secret, QUEUE_SECRET_LEN, hash);
	for (int i = 0; i < QUEUE_SECRET_HASH_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", hash[i]);
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM devices WHERE id = %lld AND "
		 "encode(secret_hash, 'hex') = '%s'",
		 (long long)id, hex);
	assert_int_equal(count(f->conn, sql), 1);

	assert_int_equal(queue_device_get(reg, id, &dev), FERRY_OK);
	assert_string_equal(dev.user, "erin");
	assert_string_equal(dev.platform, "desktop");
	assert_null(dev.push_token);
	assert_true(dev.created_ms > 1700000000000LL);
	queue_device_release(&dev);

	assert_int_equal(queue_device_set_push(reg, id, &tok), FERRY_OK);
	assert_int_equal(queue_device_get(reg, id, &dev), FERRY_OK);
	assert_string_equal(dev.push_provider, "apns");
	assert_string_equal(dev.push_token, "00ff");
	assert_string_equal(dev.push_topic, "com.example.app");
	assert_string_equal(dev.push_environment, "sandbox");
	assert_true(dev.push_updated_ms >= dev.created_ms);
	queue_device_release(&dev);

	assert_int_equal(queue_device_list(reg, "erin", &list, &n), FERRY_OK);
	assert_int_equal(n, 1);
	assert_true(list[0].id == id);
	queue_device_list_free(list, n);
	assert_int_equal(queue_device_list(reg, "nobody", &list, &n), FERRY_OK);
	assert_int_equal(n, 0);
	queue_device_list_free(list, n);

	assert_int_equal(queue_device_clear_push(reg, id), FERRY_OK);
	assert_int_equal(queue_device_delete(reg, id), FERRY_OK);
	assert_int_equal(queue_device_delete(reg, id), FERRY_ENOTFOUND);
	assert_int_equal(queue_device_get(reg, id, &dev), FERRY_ENOTFOUND);
	assert_int_equal(queue_device_clear_push(reg, id), FERRY_ENOTFOUND);
	assert_int_equal(queue_device_set_push(reg, id, &tok), FERRY_ENOTFOUND);
	queue_registry_free(reg);
}

/* Push outcomes: the latest per device wins, a reason off the network is
 * kept printable and quoted, a device that is gone is skipped. The queue
 * totals count devices.pending. */
static void test_registry_push_outcomes(void **state)
{
	struct schema_fixture *f = *state;
	struct queue_registry *reg = queue_registry_new(f->conninfo, 5, 1);
	struct queue_push_outcome o[4] = {
		{ .device = 0,
		  .at_ms = 1764000000000LL,
		  .provider = "apns",
		  .outcome = "failed",
		  .status = 503,
		  .reason = "ServiceUnavailable" },
		{ .device = 0,
		  .at_ms = 1764000001000LL,
		  .provider = "apns",
		  .outcome = "token_invalid",
		  .status = 410,
		  .reason = "Un\"reg,is}te\\red\x01\xff" },
		{ .device = 0,
		  .at_ms = 1764000000500LL,
		  .provider = "fcm",
		  .outcome = "ok",
		  .status = 200 },
		{ .device = 999999999,
		  .at_ms = 1764000000000LL,
		  .provider = "fcm",
		  .outcome = "ok",
		  .status = 200 },
	};
	struct queue_totals t0, t1;
	struct queue_device dev;
	char secret[QUEUE_SECRET_LEN + 1];
	int64_t id, id2;

	assert_int_equal(queue_device_create(reg, "olga", "ios", &id, secret), FERRY_OK);
	assert_int_equal(queue_device_create(reg, "olga", "ios", &id2, secret), FERRY_OK);
	assert_int_equal(queue_device_get(reg, id, &dev), FERRY_OK);
	assert_int_equal(dev.push_last_ms, 0);
	assert_null(dev.push_last_outcome);
	assert_int_equal(dev.pending, 0);
	assert_int_equal(dev.oldest_ms, 0);
	queue_device_release(&dev);

	o[0].device = o[1].device = id;
	o[2].device = id2;
	assert_int_equal(queue_devices_push_outcomes(reg, o, 4), FERRY_OK);
	assert_int_equal(queue_device_get(reg, id, &dev), FERRY_OK);
	assert_int_equal(dev.push_last_ms, 1764000001000LL);
	assert_string_equal(dev.push_last_provider, "apns");
	assert_string_equal(dev.push_last_outcome, "token_invalid");
	assert_int_equal(dev.push_last_status, 410);
	assert_string_equal(dev.push_last_reason, "Un\"reg,is}te\\red??");
	queue_device_release(&dev);
	assert_int_equal(queue_device_get(reg, id2, &dev), FERRY_OK);
	assert_string_equal(dev.push_last_outcome, "ok");
	assert_null(dev.push_last_reason);
	queue_device_release(&dev);
	assert_int_equal(queue_devices_push_outcomes(reg, o, QUEUE_PUSH_OUTCOMES_MAX + 1),
			 FERRY_EINVAL);

	/* Totals: cached for the age asked, read anew with 0. */
	assert_int_equal(queue_depth_totals(reg, 0, &t0), FERRY_OK);
	assert_true(t0.as_of_ms > 1700000000000LL);
	{
		char sql[128];

		snprintf(sql, sizeof(sql), "UPDATE devices SET pending = 7 WHERE id = %lld",
			 (long long)id);
		PQclear(th_pg_exec(f->conn, sql));
	}
	assert_int_equal(queue_depth_totals(reg, 60000, &t1), FERRY_OK);
	assert_int_equal(t1.envelopes, t0.envelopes);
	assert_int_equal(queue_depth_totals(reg, 0, &t1), FERRY_OK);
	assert_int_equal(t1.envelopes, t0.envelopes + 7);
	assert_int_equal(t1.devices, t0.devices + 1);
	assert_int_equal(queue_device_get(reg, id, &dev), FERRY_OK);
	assert_int_equal(dev.pending, 7);
	queue_device_release(&dev);
	PQclear(th_pg_exec(f->conn, "UPDATE devices SET pending = 0"));
	queue_registry_free(reg);
}

static void test_registry_unreachable(void **state)
{
	struct queue_registry *reg = queue_registry_new("host=/nonexistent dbname=x", 1, 1);
	struct queue_device dev;
	char secret[QUEUE_SECRET_LEN + 1];
	int64_t id;

	assert_int_equal(queue_registry_ping(reg), FERRY_EUNAVAIL);
	assert_int_equal(queue_device_get(reg, 1, &dev), FERRY_EUNAVAIL);
	assert_int_equal(queue_device_create(reg, "x", "ios", &id, secret), FERRY_EUNAVAIL);
	queue_registry_free(reg);
}

int main(void)
{
	const struct CMUnitTest migrate_tests[] = {
		cmocka_unit_test(test_migrate_apply_and_reapply),
		cmocka_unit_test(test_migrate_refuses_newer_schema),
		cmocka_unit_test(test_migrate_cli_and_unmigrated_run),
		cmocka_unit_test(test_migrate_concurrent),
		cmocka_unit_test(test_migrate_unreachable),
		cmocka_unit_test(test_registry_unreachable),
	};
	const struct CMUnitTest schema_tests[] = {
		cmocka_unit_test(test_schema_device_constraints),
		cmocka_unit_test(test_schema_envelope_constraints),
		cmocka_unit_test(test_schema_indexes),
		cmocka_unit_test(test_schema_device_delete),
		cmocka_unit_test(test_schema_0003_constraints),
		cmocka_unit_test(test_registry_lifecycle),
		cmocka_unit_test(test_registry_push_outcomes),
	};
	int failed = cmocka_run_group_tests_name("migrate", migrate_tests, NULL, NULL);

	failed +=
		cmocka_run_group_tests_name("schema", schema_tests, schema_setup, schema_teardown);
	return failed ? 1 : 0;
}
