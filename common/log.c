/*
 * log.c - the logger behind log.h.
 *
 * Formats into a stack buffer and writes the whole line with one write(2) so
 * that lines from several threads never interleave. Lines longer than the
 * buffer are cut and end in "...".
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/banned.h"

#define LOG_LINE_MAX 2048

atomic_int log_threshold = LOG_LEVEL_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error", "fatal" };

void log_set_level(enum log_level level)
{
	atomic_store_explicit(&log_threshold, (int)level, memory_order_relaxed);
}

const char *log_level_name(enum log_level level)
{
	if ((unsigned)level > LOG_LEVEL_FATAL)
		return "unknown";
	return level_names[level];
}

enum ferry_err log_level_parse(const char *name, enum log_level *out)
{
	for (int i = LOG_LEVEL_DEBUG; i < LOG_LEVEL_FATAL; i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return FERRY_OK;
		}
	}
	return FERRY_EINVAL;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int w;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	w = snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s ", ts.tv_nsec / 1000000L,
		     log_level_name(level));
	n += (size_t)w;

	va_start(ap, fmt);
	w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (w < 0)
		w = 0;
	if ((size_t)w >= sizeof(line) - n - 1) {
		n = sizeof(line) - 5;
		memcpy(line + n, "...", 3);
		n += 3;
	} else {
		n += (size_t)w;
	}
	line[n++] = '\n';
	/* Nothing useful to do when stderr is gone. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
