/*
 * fault.c - crash points for the fault suite (see fault.h); compiled to
 * nothing unless FERRY_FAULTS is defined.
 *
 * FERRY_FAULT is read once, on the first passage of any point. One point is
 * armed per process; its counter is atomic, so exactly one passage (the Nth)
 * kills, whichever thread makes it. SIGKILL rather than exit(): no atexit
 * handler, no flush, no sanitizer report, as when the machine loses power.
 */
#ifdef FERRY_FAULTS
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/banned.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char armed[64];	 /* the point's name; "" none */
static unsigned long at; /* the passage that kills, from 1 */
static unsigned long delay_ms;
static atomic_ulong passages;

static void arm(void)
{
	const char *v = getenv("FERRY_FAULT");
	const char *colon = v ? strchr(v, ':') : NULL;
	char *end;

	if (!colon || (size_t)(colon - v) >= sizeof(armed))
		return;
	at = strtoul(colon + 1, &end, 10);
	if (*end == ':')
		delay_ms = strtoul(end + 1, &end, 10);
	if (*end || at == 0)
		return;
	memcpy(armed, v, (size_t)(colon - v));
	armed[colon - v] = '\0';
}

static void die(void)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "ferryd: fault point %s hit %lu\n", armed, at);

	if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
		line[0] = '\0';
	raise(SIGKILL);
}

static void *die_later(void *arg)
{
	struct timespec ts = { (time_t)(delay_ms / 1000), (long)(delay_ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
	die();
	return NULL;
}

void fault_point(const char *name)
{
	pthread_t t;

	pthread_once(&once, arm);
	if (!armed[0] || strcmp(name, armed) != 0)
		return;
	if (atomic_fetch_add(&passages, 1) + 1 != at)
		return;
	if (!delay_ms || pthread_create(&t, NULL, die_later, NULL))
		die();
}
#endif
