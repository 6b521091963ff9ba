/*
 * migrate.c - applying the compiled-in schema migrations.
 *
 * Design: the schema_version table records one row per applied migration.
 * queue_migrate() holds a session advisory lock for its whole run, so that
 * two daemons started at once never apply the same migration twice; each
 * migration runs in its own transaction together with its schema_version
 * row, so a failed migration leaves nothing behind and the next run retries
 * it. Versions are dense (1, 2, 3, ...), checked at build time.
 *
 * Diagnostics: every failure names the migration and quotes PostgreSQL's
 * message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "queue/queue.h"
#include "queue/pg_int.h"
#include "queue/migrate_int.h"
#include "common/banned.h"

/* Arbitrary but fixed: "ferry" in ASCII. */
#define MIGRATE_LOCK_KEY "439788938617"

static const char create_version_table[] = "CREATE TABLE IF NOT EXISTS schema_version ("
					   " version integer PRIMARY KEY,"
					   " name text NOT NULL,"
					   " applied timestamptz NOT NULL DEFAULT now())";

int queue_schema_latest(void)
{
	return queue_migrations_count;
}

/* Run a command that returns no rows; FERRY_EDB with a message on failure. */
static enum ferry_err exec_cmd(PGconn *conn, const char *sql, const char *what, char *err,
			       size_t errlen)
{
	PGresult *res = PQexec(conn, sql);
	enum ferry_err rc = FERRY_OK;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		queue_pg_message(err, errlen, what, PQerrorMessage(conn));
		rc = PQstatus(conn) == CONNECTION_OK ? FERRY_EDB : FERRY_EUNAVAIL;
	}
	PQclear(res);
	return rc;
}

/* The database's schema version: 0 when it has none yet. */
static enum ferry_err read_version(PGconn *conn, int *version, char *err, size_t errlen)
{
	PGresult *res;
	enum ferry_err rc = FERRY_OK;

	res = PQexec(conn, "SELECT to_regclass('schema_version') IS NOT NULL");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		queue_pg_message(err, errlen, "cannot read the schema version",
				 PQerrorMessage(conn));
		PQclear(res);
		return FERRY_EDB;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
		PQclear(res);
		*version = 0;
		return FERRY_OK;
	}
	PQclear(res);
	res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_version");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		queue_pg_message(err, errlen, "cannot read the schema version",
				 PQerrorMessage(conn));
		rc = FERRY_EDB;
	} else {
		*version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	}
	PQclear(res);
	return rc;
}

static enum ferry_err apply_one(PGconn *conn, const struct queue_migration *m, char *err,
				size_t errlen)
{
	char what[160];
	char ver[16];
	const char *params[2] = { ver, m->name };
	PGresult *res;
	enum ferry_err rc;

	snprintf(what, sizeof(what), "migration %s failed", m->name);
	snprintf(ver, sizeof(ver), "%d", m->version);
	rc = exec_cmd(conn, "BEGIN", what, err, errlen);
	if (rc)
		return rc;
	rc = exec_cmd(conn, m->sql, what, err, errlen);
	if (rc)
		goto rollback;
	res = PQexecParams(conn, "INSERT INTO schema_version (version, name) VALUES ($1, $2)", 2,
			   NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		queue_pg_message(err, errlen, what, PQerrorMessage(conn));
		PQclear(res);
		rc = FERRY_EDB;
		goto rollback;
	}
	PQclear(res);
	rc = exec_cmd(conn, "COMMIT", what, err, errlen);
	if (rc)
		return rc;
	log_info("event=migration_applied version=%d name=%s", m->version, m->name);
	return FERRY_OK;

rollback:
	PQclear(PQexec(conn, "ROLLBACK"));
	return rc;
}

static enum ferry_err migrate_locked(PGconn *conn, int *applied, char *err, size_t errlen)
{
	int version;
	enum ferry_err rc;

	rc = exec_cmd(conn, create_version_table, "cannot create table schema_version", err,
		      errlen);
	if (rc)
		return rc;
	rc = read_version(conn, &version, err, errlen);
	if (rc)
		return rc;
	if (version > queue_schema_latest()) {
		snprintf(err, errlen,
			 "database schema version %d is newer than this ferryd knows (%d): "
			 "upgrade ferryd",
			 version, queue_schema_latest());
		return FERRY_ESCHEMA;
	}
	for (int i = version; i < queue_migrations_count; i++) {
		rc = apply_one(conn, &queue_migrations[i], err, errlen);
		if (rc)
			return rc;
		if (applied)
			(*applied)++;
	}
	return FERRY_OK;
}

enum ferry_err queue_migrate(const char *conninfo, unsigned connect_timeout, int *applied,
			     char *err, size_t errlen)
{
	PGconn *conn;
	enum ferry_err rc;

	if (applied)
		*applied = 0;
	conn = queue_pg_connect(conninfo, connect_timeout, err, errlen);
	if (!conn)
		return FERRY_EUNAVAIL;
	rc = exec_cmd(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
		      "cannot take the migration lock", err, errlen);
	if (rc)
		goto out;
	rc = migrate_locked(conn, applied, err, errlen);
	PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
out:
	PQfinish(conn);
	return rc;
}

enum ferry_err queue_schema_check(const char *conninfo, unsigned connect_timeout, int *version,
				  char *err, size_t errlen)
{
	PGconn *conn;
	int v = 0;
	enum ferry_err rc;

	conn = queue_pg_connect(conninfo, connect_timeout, err, errlen);
	if (!conn)
		return FERRY_EUNAVAIL;
	rc = read_version(conn, &v, err, errlen);
	PQfinish(conn);
	if (rc)
		return rc;
	if (version)
		*version = v;
	if (v < queue_schema_latest()) {
		snprintf(err, errlen,
			 "database schema version %d is older than this ferryd needs (%d): "
			 "run 'ferryd migrate'",
			 v, queue_schema_latest());
		return FERRY_ESCHEMA;
	}
	if (v > queue_schema_latest()) {
		snprintf(err, errlen,
			 "database schema version %d is newer than this ferryd knows (%d): "
			 "upgrade ferryd",
			 v, queue_schema_latest());
		return FERRY_ESCHEMA;
	}
	return FERRY_OK;
}

enum ferry_err queue_durability_check(const char *conninfo, unsigned connect_timeout, char *bad,
				      size_t badlen, char *err, size_t errlen)
{
	static const char *const settings[] = { "fsync", "synchronous_commit" };
	PGconn *conn;
	size_t n = 0;
	enum ferry_err rc = FERRY_OK;

	bad[0] = '\0';
	conn = queue_pg_connect(conninfo, connect_timeout, err, errlen);
	if (!conn)
		return FERRY_EUNAVAIL;
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]) && !rc; i++) {
		PGresult *res = PQexecParams(conn, "SELECT current_setting($1)", 1, NULL,
					     &settings[i], NULL, NULL, 0);

		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
			queue_pg_message(err, errlen, "cannot read the database's settings",
					 PQerrorMessage(conn));
			rc = FERRY_EDB;
		} else if (strcmp(PQgetvalue(res, 0, 0), "off") == 0 && n < badlen) {
			int w = snprintf(bad + n, badlen - n, "%s%s=off", n ? " " : "",
					 settings[i]);

			n += w > 0 ? (size_t)w : 0;
		}
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}
