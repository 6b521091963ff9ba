/*
 * mock.c - helpers shared by the mock push providers (see mock.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/mock/mock.h"
#include "common/banned.h"

struct mock_counter {
	struct mock_counter *next;
	long count;
	char token[];
};

long mock_count(struct mock_counters *mc, const char *token)
{
	struct mock_counter *c;
	size_t len;

	for (c = mc->head; c; c = c->next)
		if (strcmp(c->token, token) == 0)
			return ++c->count;
	len = strlen(token);
	c = malloc(sizeof(*c) + len + 1);
	if (!c)
		abort();
	memcpy(c->token, token, len + 1);
	c->count = 1;
	c->next = mc->head;
	mc->head = c;
	return 1;
}

void mock_counters_release(struct mock_counters *mc)
{
	while (mc->head) {
		struct mock_counter *c = mc->head;

		mc->head = c->next;
		free(c);
	}
}

int mock_starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

int mock_prefix_n(const char *token, const char *prefix, long *n)
{
	const char *p;
	long v = 0;

	if (!mock_starts_with(token, prefix))
		return 0;
	p = token + strlen(prefix);
	if (*p < '0' || *p > '9')
		return 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > 1000000)
			return 0;
		v = v * 10 + (*p - '0');
	}
	if (*p != '-')
		return 0;
	*n = v;
	return 1;
}

int mock_parse_long(const char *s, long *out)
{
	char *end;
	long v;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

int mock_parse_outage(const char *s, enum h2srv_outage *out)
{
	if (strcmp(s, "refuse") == 0)
		*out = H2SRV_OUTAGE_REFUSE;
	else if (strcmp(s, "reset") == 0)
		*out = H2SRV_OUTAGE_RESET;
	else if (strcmp(s, "unavailable") == 0)
		*out = H2SRV_OUTAGE_ANSWER;
	else
		return -1;
	return 0;
}

int64_t mock_now_s(void)
{
	return (int64_t)time(NULL);
}

int64_t mock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mock_log(FILE *log, json_t *line)
{
	char *text;

	if (log && line && (text = json_dumps(line, JSON_COMPACT))) {
		fprintf(log, "%s\n", text);
		fflush(log);
		free(text);
	}
	json_decref(line);
}

json_t *mock_json_str(const char *s)
{
	json_t *v = s ? json_string(s) : NULL; /* NULL too if not UTF-8 */

	return v ? v : json_null();
}

void mock_announce(int port)
{
	printf("listening %d\n", port);
	fflush(stdout);
}
