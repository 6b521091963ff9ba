/*
 * log.h - leveled key=value logging to stderr.
 *
 * One line per event: `ts=<UTC ISO 8601 ms> level=<lvl> event=<name> k=v ...`.
 * The macros test the threshold before the arguments are evaluated or
 * formatted, so a debug line costs one relaxed atomic load when it is off.
 * Never log a secret, a full push token, a JWT or a payload.
 *
 * Thread-safe: each line is written with one write(2).
 */
#ifndef FERRY_COMMON_LOG_H
#define FERRY_COMMON_LOG_H

#include <stdatomic.h>

#include "common/err.h"

enum log_level {
	LOG_LEVEL_DEBUG = 0,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
	LOG_LEVEL_FATAL,
};

/* Lowest level written; set with log_set_level(), read by the macros. */
extern atomic_int log_threshold;

void log_set_level(enum log_level level);

/* Write one line at @level unconditionally; prefer the macros. */
void log_write(enum log_level level, const char *fmt, ...) FERRY_PRINTF(2, 3);

/* Parse "debug", "info", "warn", "error"; FERRY_EINVAL for anything else. */
enum ferry_err log_level_parse(const char *name, enum log_level *out) FERRY_WUR;

/* Name of @level, as log_level_parse() accepts it. */
const char *log_level_name(enum log_level level);

#define LOG_AT(lvl, ...)                                                                      \
	do {                                                                                  \
		if ((int)(lvl) >= atomic_load_explicit(&log_threshold, memory_order_relaxed)) \
			log_write((lvl), __VA_ARGS__);                                        \
	} while (0)

#define log_debug(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
