/*
 * harness.h - support for integration tests: throwaway databases, a running
 * ferryd, HTTP requests.
 *
 * scripts/run-tests.sh starts one throwaway PostgreSQL cluster per `make test`
 * and exports FERRY_TEST_PGHOST (its socket directory), FERRY_TEST_PGUSER,
 * FERRY_TEST_TMPDIR (a scratch directory removed afterwards) and
 * FERRY_TEST_FERRYD (the daemon binary to test). Each test makes databases of
 * its own with th_db_new(), so tests never see each other's data.
 *
 * Every function here fails the test (cmocka fail_msg) instead of returning
 * errors, so test bodies stay short.
 */
#ifndef FERRY_TESTS_HARNESS_H
#define FERRY_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libpq-fe.h>

/* A fresh, empty database; returns its libpq conninfo (static storage per
 * call is NOT used: the string is malloc'ed, free it). */
char *th_db_new(const char *prefix);

/* Connect to a conninfo or fail the test. */
PGconn *th_pg_connect(const char *conninfo);

/* Run @sql; fail the test unless it succeeded. Returns the result (PQclear it). */
PGresult *th_pg_exec(PGconn *conn, const char *sql);

/* Run @sql and return the SQLSTATE it failed with ("" if it succeeded). */
const char *th_pg_sqlstate(PGconn *conn, const char *sql, char state[6]);

/* The one value (a bigint, -1 for NULL) of the query @fmt, formatted like
 * printf; fails the test unless it returns exactly one row. */
long long th_pg_int(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int th_free_port(void);

/* Write @text to a new file in FERRY_TEST_TMPDIR, mode 0600 (what ferryd
 * wants of key and token files); returns its malloc'ed path. */
char *th_write_file(const char *name, const char *text);

/* A running daemon. */
struct th_ferryd {
	pid_t pid;
	int admin_port;
	char admin_url[64]; /* http://127.0.0.1:PORT */
	char *config_path;
	char *log_path; /* its stderr */
};

/*
 * Run `ferryd ARGS... -c CONFIG` (argv_tail is NULL-terminated; config_path
 * may be NULL for no -c) and return its exit status. If @output is not NULL it
 * receives everything the command wrote to stdout and stderr (free it).
 */
int th_ferryd_cmd(const char *config_path, const char *const argv_tail[], char **output);

/*
 * Start `ferryd run -c FILE` with @config_text written to a file, stderr to a
 * log file. Waits until GET /healthz on @admin_port answers 200, or fails the
 * test (printing the daemon's log) after 20 s or if the daemon exits.
 */
void th_ferryd_start(struct th_ferryd *d, const char *config_text, int admin_port);

/* The same with a config file written already (the path is copied; the
 * file is removed by th_ferryd_stop()), for a test that sets its owner or
 * mode first. */
void th_ferryd_start_file(struct th_ferryd *d, const char *config_path, int admin_port);

/* A standard config for @conninfo, admin on @admin_port with @token, the
 * device listener off. Returns a malloc'ed string. */
char *th_ferryd_config(const char *conninfo, int admin_port, const char *token);

/* The same with @extra (INI text; sections may repeat) appended. */
char *th_ferryd_config_ex(const char *conninfo, int admin_port, const char *token,
			  const char *extra);

/* th_ferryd_config_ex(), written to a file, `ferryd migrate` on it, and
 * th_ferryd_start(): a daemon up on a migrated database, or the test fails. */
void th_ferryd_up(struct th_ferryd *d, const char *conninfo, int admin_port, const char *token,
		  const char *extra);

/* Register a device for @user through the admin API; *id and @secret get
 * its credentials. */
void th_device_create(const struct th_ferryd *d, const char *token, const char *user, int64_t *id,
		      char secret[64]);

/* Start @argv (argv[0] a path) with stdout and stderr to @out_path. */
pid_t th_spawn(const char *const argv[], const char *out_path);

/* Wait for @pid (at most 60 s, then it is killed and the test fails);
 * returns its exit status, or 128 + the signal that ended it. */
int th_wait(pid_t pid);

/* The whole content of a file (malloc'ed; empty if it does not exist). */
char *th_read_file(const char *path);

/* Fail the test if @needle occurs in @text, quoting the line it is on:
 * "<what> in <where>: <line>". For secrets that must not leak. */
void th_assert_lacks(const char *text, const char *needle, const char *what, const char *where);

/* How many times @needle occurs in the daemon's log so far. */
int th_log_count(const struct th_ferryd *d, const char *needle);
/* A plain TCP connection to 127.0.0.1:@port (blocking), or the test fails. */
int th_tcp_connect(int port);
/* A field of /proc/@pid/status ("VmRSS:", "Uid:") as its first number; -1
 * if there is no such field. */
long th_proc_status(pid_t pid, const char *field);
/* Descriptors @pid has open. */
int th_fd_count(pid_t pid);
/* CLOCK_MONOTONIC in milliseconds. */
long long th_now_ms(void);

/* Wait up to 10 s until @needle occurs at least @n times in the log; fails the
 * test (printing the log) otherwise. */
void th_log_wait(const struct th_ferryd *d, const char *needle, int n);

/* Send @sig, wait for exit; returns the exit status (or 128+signal). */
int th_ferryd_stop(struct th_ferryd *d, int sig);

/*
 * Kill the daemon with SIGKILL (no shutdown at all: a crash) and reap it.
 * Its config and log files stay, for th_ferryd_restart(). Returns the exit
 * status (128 + 9 when the signal ended it).
 */
int th_ferryd_kill(struct th_ferryd *d);

/*
 * Start the daemon again after th_ferryd_kill(): the same config file (same
 * database, same ports), its stderr appended to the same log. Waits for
 * /healthz like th_ferryd_start(), or fails the test.
 */
void th_ferryd_restart(struct th_ferryd *d);

/* Wait until @d's /readyz answers 200 (the store has its database, the
 * listeners are up), or fail the test after @timeout_ms. */
void th_ferryd_wait_ready(const struct th_ferryd *d, unsigned timeout_ms);

/* Fail the test unless Prometheus's own parser and linter (promtool check
 * metrics) accept @text, a text exposition. */
void th_promtool_check(const char *text);

/* An HTTP response. */
struct th_response {
	long status;
	char *body;	    /* NUL-terminated, malloc'ed */
	char *content_type; /* malloc'ed, may be NULL */
	char *headers;	    /* every response header line, raw, malloc'ed */
};

/* Value of response header @name (case-insensitive), malloc'ed; NULL if absent. */
char *th_response_header(const struct th_response *r, const char *name);

/*
 * Send @method @url with optional bearer @token (NULL: no Authorization
 * header) and optional @body (sent as application/json). Fails the test on
 * transport errors, and when admin/openapi.yaml does not describe the
 * answer (th_check_response()): every URL given here is ferryd's admin API.
 */
void th_http(struct th_response *r, const char *method, const char *url, const char *token,
	     const char *body);

/* Same, with a raw extra header line (e.g. "Authorization: Basic x"), or NULL. */
void th_http_hdr(struct th_response *r, const char *method, const char *url, const char *header,
		 const char *body);

void th_response_release(struct th_response *r);

/* admin/openapi.yaml (or the file FERRY_TEST_OPENAPI names) as JSON, read
 * on first use and kept for the process (borrowed); fails the test when it
 * cannot be read. */
struct json_t;
const struct json_t *th_openapi_doc(void);

/*
 * Fail the test unless admin/openapi.yaml (or the file FERRY_TEST_OPENAPI
 * names) documents the answer @status, @content_type (NULL: none) and
 * @body (NULL: none) to @method @path: the path as sent (a query string is
 * ignored) or a template of the document ("/v1/devices/{device}"). The
 * status must be documented for the operation, the media type for the
 * status, and a JSON body must match the schema; see
 * openapi_check_response() for the answers that come before routing. The
 * message names the JSON path and the rule that failed.
 */
void th_check_response(const char *method, const char *path, long status, const char *content_type,
		       const char *body);

#endif
