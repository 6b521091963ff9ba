/*
 * pg.c - opening blocking libpq connections the same way everywhere.
 *
 * The connect timeout is passed as a keyword before the caller's conninfo, so
 * that a connect_timeout written in the conninfo itself still wins. Server
 * notices ("relation already exists, skipping") go to the debug log instead
 * of stderr.
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "queue/queue.h"
#include "queue/pg_int.h"
#include "common/banned.h"

static void notice_to_log(void *arg, const char *message)
{
	size_t n = strlen(message);

	if (n && message[n - 1] == '\n')
		n--;
	log_debug("event=pg_notice message=\"%.*s\"", (int)n, message);
}

void queue_pg_message(char *out, size_t outlen, const char *what, const char *msg)
{
	size_t n = 0;
	int w = snprintf(out, outlen, "%s: ", what);

	if (w < 0 || (size_t)w >= outlen)
		return;
	n = (size_t)w;
	/* libpq's messages span lines and quote with '"'; a log line must not. */
	for (; *msg && n + 1 < outlen; msg++) {
		char c = *msg;

		if (c == '\n' || c == '\t' || c == '\r') {
			if (n && out[n - 1] == ' ')
				continue;
			c = ' ';
		} else if (c == '"') {
			c = '\'';
		}
		out[n++] = c;
	}
	while (n && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

PGconn *queue_pg_connect(const char *conninfo, unsigned connect_timeout, char *err, size_t errlen)
{
	char timeout[16];
	const char *keys[] = { "connect_timeout", "dbname", NULL };
	const char *vals[] = { timeout, conninfo ? conninfo : "", NULL };
	PGconn *conn;

	snprintf(timeout, sizeof(timeout), "%u", connect_timeout);
	conn = PQconnectdbParams(keys, vals, 1);
	if (!conn) {
		snprintf(err, errlen, "cannot connect to PostgreSQL: out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		queue_pg_message(err, errlen, "cannot connect to PostgreSQL", PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, notice_to_log, NULL);
	return conn;
}
