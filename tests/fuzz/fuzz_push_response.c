/*
 * fuzz_push_response.c - libFuzzer harness for what the push providers
 * answer: every parser of push/response.c and push_http_retry_after_parse.
 *
 * Input: "P SSS X RETRY-AFTER \n BODY" without the spaces:
 *   P      the parser: 'a' APNs send, 'f' FCM send, 't' token endpoint,
 *          'h' one header line, 'r' one Retry-After value; any other byte
 *          picks one by its value modulo 5;
 *   SSS    the HTTP status, three bytes read as decimal digits (each byte
 *          modulo 10 after subtracting '0'), so every input has one;
 *   X      one byte, ignored (a space in the seeds, for the eye);
 *   then for 'a' and 'f' the Retry-After value up to the first '\n' (kept
 *   as http.c keeps it: at most 63 bytes) and the body after it (no '\n':
 *   no Retry-After, all body); for 't' the body; for 'h' the header line,
 *   as libcurl hands it over; for 'r' the value, up to a NUL if any.
 * The seeds (tests/fuzz/corpus/push_response/) are the providers'
 * documented answers in this format, one file each.
 *
 * Besides what ASan and UBSan catch, the harness aborts when a result
 * breaks its contract (response_int.h): an outcome outside its enum, a
 * string without its NUL, a 410 timestamp on another status, a number
 * past its PUSH_RESPONSE_MAX_*, a token without OK or OK without a token,
 * a truncated header value that is not a prefix of the whole one.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/http.h"
#include "push/response_int.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 2023-11-14T22:13:20Z: dates in Retry-After are read against it. */
#define NOW 1700000000
#define HEAD 5

static void check(int ok)
{
	if (!ok)
		abort();
}

static int terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static long status_of(const uint8_t *d)
{
	long st = 0;

	for (int i = 1; i <= 3; i++)
		st = st * 10 + (long)((uint8_t)(d[i] - '0') % 10);
	return st;
}

/* The Retry-After line (up to '\n') into @ra as http.c would keep it; the
 * body is what follows. */
static void split(const uint8_t *p, size_t n, char *ra, size_t racap, const uint8_t **body,
		  size_t *blen)
{
	const uint8_t *nl = memchr(p, '\n', n);
	size_t l = nl ? (size_t)(nl - p) : 0;

	if (l >= racap)
		l = racap - 1;
	memcpy(ra, p, l);
	ra[l] = '\0';
	*body = nl ? nl + 1 : p;
	*blen = nl ? n - (size_t)(nl + 1 - p) : n;
}

static void fuzz_apns(long st, const uint8_t *p, size_t n)
{
	struct push_apns_response r;
	char ra[64];
	const uint8_t *body;
	size_t blen;

	split(p, n, ra, sizeof(ra), &body, &blen);
	push_apns_response_parse(st, body, blen, ra, NOW, &r);
	check((unsigned)r.outcome <= PUSH_APNS_REJECTED);
	check(terminated(r.reason, sizeof(r.reason)));
	check(st == 410 || r.timestamp_ms == 0);
	check(r.timestamp_ms >= 0 && r.timestamp_ms <= PUSH_RESPONSE_MAX_TIMESTAMP_MS);
	check(r.retry_after_s >= -1 && r.retry_after_s <= PUSH_RESPONSE_MAX_RETRY_AFTER);
	check((st == 200) == (r.outcome == PUSH_APNS_OK));
}

static void fuzz_fcm(long st, const uint8_t *p, size_t n)
{
	struct push_fcm_response r;
	char ra[64];
	const uint8_t *body;
	size_t blen;

	split(p, n, ra, sizeof(ra), &body, &blen);
	push_fcm_response_parse(st, body, blen, ra, NOW, &r);
	check((unsigned)r.outcome <= PUSH_FCM_REJECTED);
	check(terminated(r.error_code, sizeof(r.error_code)));
	check(r.has_fcm_error || !r.error_code[0]);
	check(r.retry_after_s >= -1 && r.retry_after_s <= PUSH_RESPONSE_MAX_RETRY_AFTER);
	check((st == 200) == (r.outcome == PUSH_FCM_OK));
}

static void fuzz_token(long st, const uint8_t *p, size_t n)
{
	struct push_token_response r;
	enum ferry_err rc;

	rc = push_token_response_parse(st, p, n, &r);
	check(rc == FERRY_OK || rc == FERRY_ENOMEM);
	check((unsigned)r.outcome <= PUSH_FCM_REJECTED);
	check(terminated(r.error, sizeof(r.error)));
	if (r.outcome == PUSH_FCM_OK)
		check(st == 200 && r.access_token && r.access_token[0] && r.expires_in >= 0 &&
		      r.expires_in <= PUSH_RESPONSE_MAX_EXPIRES_IN);
	else
		check(!r.access_token && r.expires_in == 0);
	push_token_response_release(&r);
	push_token_response_release(&r);
}

/* Each name into a full buffer and a small one: the small one must hold a
 * prefix of the full one, NUL-terminated, never more. */
static void fuzz_header(const uint8_t *p, size_t n)
{
	static const char *const names[] = { "retry-after", "apns-id" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char full[256], small[8];
		int a, b;

		memset(small, 'x', sizeof(small));
		a = push_http_header_value((const char *)p, n, names[i], full, sizeof(full));
		b = push_http_header_value((const char *)p, n, names[i], small, sizeof(small));
		check(a == b);
		if (!a)
			continue;
		check(terminated(full, sizeof(full)) && terminated(small, sizeof(small)));
		check(strlen(small) ==
		      (strlen(full) < sizeof(small) ? strlen(full) : sizeof(small) - 1));
		check(strncmp(full, small, strlen(small)) == 0);
		check(push_http_header_value((const char *)p, n, names[i], NULL, 0) == 1);
	}
}

static void fuzz_retry_after(const uint8_t *p, size_t n)
{
	char *v = malloc(n + 1);
	uint64_t secs;
	enum ferry_err rc;

	if (!v)
		return;
	memcpy(v, p, n);
	v[n] = '\0';
	rc = push_http_retry_after_parse(v, NOW, &secs);
	check(rc == FERRY_OK || rc == FERRY_EINVAL);
	free(v);
}

/* P: a letter, or any other byte modulo 5, so that no mutation is wasted. */
static int parser_of(uint8_t b)
{
	static const char letters[] = "afthr";
	const char *l = b ? strchr(letters, b) : NULL;

	return l ? (int)(l - letters) : b % 5;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p;
	size_t n;
	long st;

	if (size < HEAD)
		return 0;
	p = data + HEAD;
	n = size - HEAD;
	st = status_of(data);
	switch (parser_of(data[0])) {
	case 0:
		fuzz_apns(st, p, n);
		break;
	case 1:
		fuzz_fcm(st, p, n);
		break;
	case 2:
		fuzz_token(st, p, n);
		break;
	case 3:
		fuzz_header(p, n);
		break;
	default:
		fuzz_retry_after(p, n);
		break;
	}
	return 0;
}
