/*
 * err.c - texts for enum ferry_err, and ferry_panic().
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/err.h"
#include "common/log.h"
#include "common/banned.h"

const char *ferry_strerror(enum ferry_err err)
{
	switch (err) {
	case FERRY_OK:
		return "success";
	case FERRY_ENOMEM:
		return "out of memory";
	case FERRY_EINVAL:
		return "invalid argument";
	case FERRY_ETOOBIG:
		return "too large";
	case FERRY_EIO:
		return "input/output error";
	case FERRY_ENOTFOUND:
		return "not found";
	case FERRY_EEXIST:
		return "already exists";
	case FERRY_EDB:
		return "database error";
	case FERRY_EUNAVAIL:
		return "unavailable";
	case FERRY_ESCHEMA:
		return "database schema mismatch";
	case FERRY_ECONFIG:
		return "configuration error";
	case FERRY_EPROTO:
		return "protocol error";
	case FERRY_EAUTH:
		return "authentication failed";
	case FERRY_ELIMIT:
		return "limit reached";
	}
	return "unknown error";
}

void ferry_panic(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_write(LOG_LEVEL_FATAL, "event=panic reason=\"%s\"", msg);
	abort();
}
