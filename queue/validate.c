/*
 * validate.c - the rules for names that reach the database from outside.
 *
 * The schema enforces the same rules with CHECK constraints; checking here
 * first lets the admin API and the gateway answer with a clear message
 * instead of a constraint violation.
 */
#include <string.h>

#include "queue/queue.h"
#include "common/banned.h"

int queue_user_valid(const char *user)
{
	size_t n = 0;

	if (!user)
		return 0;
	for (const char *p = user; *p; p++, n++) {
		char c = *p;

		if (n >= QUEUE_USER_MAX)
			return 0;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			continue;
		if (!strchr("._:@+-", c))
			return 0;
	}
	return n > 0;
}

int queue_platform_valid(const char *platform)
{
	static const char *const platforms[] = { "ios", "android", "desktop", "web" };

	if (!platform)
		return 0;
	for (size_t i = 0; i < sizeof(platforms) / sizeof(platforms[0]); i++)
		if (strcmp(platform, platforms[i]) == 0)
			return 1;
	return 0;
}
