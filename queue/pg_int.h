/*
 * pg_int.h - libpq helpers shared inside queue/ (private to queue/).
 */
#ifndef FERRY_QUEUE_PG_INT_H
#define FERRY_QUEUE_PG_INT_H

#include <stddef.h>

#include <libpq-fe.h>

/*
 * Open a blocking libpq connection to @conninfo (borrowed) with a connect
 * timeout in seconds. Server notices go to the debug log. Returns the
 * connection, or NULL with the reason in @err.
 */
PGconn *queue_pg_connect(const char *conninfo, unsigned connect_timeout, char *err, size_t errlen);

/*
 * Write "@what: @msg" to @out as one line fit for a log value: libpq's
 * newlines and tabs become single spaces and double quotes become single
 * quotes. Always NUL-terminates.
 */
void queue_pg_message(char *out, size_t outlen, const char *what, const char *msg);

#endif
