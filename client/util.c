/*
 * util.c - small pure helpers of libferry: clocks, the per-client random
 * generator, full-jitter backoff, texts from the wire, and which ERROR codes
 * and NACK reasons are final.
 *
 * The generator is splitmix64 on a state each client owns (no global state);
 * it drives jitter only, so it needs no cryptographic strength.
 */
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "client/client_int.h"
#include "common/banned.h"

uint64_t fc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t fc_wallclock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t fc_rng_seed(void)
{
	uint64_t s = 0;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
		s = fc_wallclock_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&s;
	return s;
}

uint64_t fc_rng_next(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

uint64_t fc_backoff_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t rnd)
{
	uint64_t window = cap_ms;

	/* base * 2^attempt, unless that passes the cap (or 64 bits). */
	if (attempt < 64 && base_ms <= (cap_ms >> attempt))
		window = base_ms << attempt;
	if (window == UINT64_MAX)
		return rnd;
	return rnd % (window + 1);
}

void fc_text_copy(char *dst, size_t cap, const uint8_t *p, size_t len)
{
	size_t i;

	if (len > cap - 1)
		len = cap - 1;
	for (i = 0; i < len; i++)
		dst[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	dst[i] = '\0';
}

int fc_error_is_final(uint64_t code)
{
	return code == PROTO_ERR_AUTH_FAILED || code == PROTO_ERR_UNSUPPORTED_VERSION ||
	       code == PROTO_ERR_DEVICE_DELETED;
}

/* Only what the server could not do now is worth a retry; an unknown reason is not. */
int fc_nack_is_final(uint64_t reason)
{
	return reason != PROTO_NACK_RETRY_LATER && reason != PROTO_NACK_QUEUE_FULL;
}
