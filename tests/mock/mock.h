/*
 * mock.h - small helpers shared by the mock push providers: per-token
 * counters, token prefixes that choose a behaviour, the JSON request log,
 * number and option parsing, clocks.
 */
#ifndef FERRY_TESTS_MOCK_MOCK_H
#define FERRY_TESTS_MOCK_MOCK_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "tests/mock/h2srv.h"

/* How many requests each exact device token has had (a list: tests use few). */
struct mock_counters {
	struct mock_counter *head;
};

/* Count one more request for @token; returns the new count (1 for the first). */
long mock_count(struct mock_counters *mc, const char *token);

void mock_counters_release(struct mock_counters *mc);

/* 1 if @token is @prefix, then decimal digits, then '-' (e.g. "unavail2-x"),
 * with the number in *n; 0 otherwise. */
int mock_prefix_n(const char *token, const char *prefix, long *n);

/* 1 if @s starts with @prefix. */
int mock_starts_with(const char *s, const char *prefix);

/* A whole decimal number (optional leading '-'), 0 on success, -1 if not. */
int mock_parse_long(const char *s, long *out);

/* --outage's argument: "refuse", "reset" or "unavailable" (answered by
 * the mock, H2SRV_OUTAGE_ANSWER). 0 on success, -1 if none of them. */
int mock_parse_outage(const char *s, enum h2srv_outage *out);

/* Wall-clock time in seconds / milliseconds since the Epoch. */
int64_t mock_now_s(void);
int64_t mock_now_ms(void);

/* Append @line (taken: decref'ed here) to @log as one compact JSON line and
 * flush; @log may be NULL (then the line is dropped). */
void mock_log(FILE *log, json_t *line);

/* A JSON string or null for a C string that may be NULL. */
json_t *mock_json_str(const char *s);

/* Print "listening <port>" on stdout and flush it. */
void mock_announce(int port);

#endif
