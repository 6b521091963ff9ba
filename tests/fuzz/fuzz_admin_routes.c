/*
 * fuzz_admin_routes.c - libFuzzer harness for the admin API's request
 * validation: path parameters and JSON bodies as the route handlers see them.
 *
 * Input: one byte choosing the handler (its low 7 bits, modulo the number of
 * handlers, index the table below; its top bit set: no push service), then
 * "param0 \0 param1 \0 body \0 query", the query as "k=v&k=v..." (a piece
 * without '=' is a key with the value ""), as http.c hands it over: at most
 * ADMIN_MAX_QUERY arguments kept, all of them counted. The queue registry
 * is replaced at link time by the stubs below (the real queue/registry.o is
 * not linked), so every input reaches the code that builds the reply,
 * including the device and queue JSON. There is no gateway (req.gw NULL),
 * so a disconnect always finds the device without a connection.
 *
 * POST /v1/push and GET /v1/stats talk to a real push service (push.o is
 * linked, so it cannot be stubbed here) started once on the default
 * configuration: no app has credentials, so every target the stubbed
 * registry gives a token is answered no_credentials by the push thread at
 * once, without any network, and the answer is built as for any push.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "common/config.h"
#include "push/push.h"
#include "queue/queue.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- registry stubs ---- */

static void fake_device(struct queue_device *d, int64_t id, int with_push)
{
	memset(d, 0, sizeof(*d));
	d->id = id;
	d->user = strdup("alice");
	d->platform = strdup("ios");
	d->created_ms = 1764342349123LL;
	if (with_push) {
		d->push_provider = strdup("apns");
		d->push_token = strdup("00112233445566778899aabbccddeeff");
		d->push_topic = strdup("com.example");
		d->push_environment = strdup("sandbox");
		d->push_updated_ms = 1764342349124LL;
	}
	d->pending = (uint64_t)id % 11;
	d->oldest_ms = d->pending ? 1764342349125LL : 0;
	if (id % 4 == 1) {
		d->push_last_ms = 1764342349126LL;
		d->push_last_provider = strdup("apns");
		d->push_last_outcome = strdup(id % 8 == 1 ? "ok" : "token_invalid");
		d->push_last_status = id % 8 == 1 ? 200 : 410;
		d->push_last_reason = id % 8 == 1 ? NULL : strdup("Unregistered");
	}
}

enum ferry_err queue_devices_push_outcomes(struct queue_registry *reg,
					   const struct queue_push_outcome *o, size_t n)
{
	return n > QUEUE_PUSH_OUTCOMES_MAX ? FERRY_EINVAL : FERRY_OK;
}

enum ferry_err queue_registry_ping(struct queue_registry *reg)
{
	return FERRY_OK;
}

enum ferry_err queue_device_create(struct queue_registry *reg, const char *user,
				   const char *platform, int64_t *id,
				   char secret[QUEUE_SECRET_LEN + 1])
{
	*id = 42;
	memset(secret, 'A', QUEUE_SECRET_LEN);
	secret[QUEUE_SECRET_LEN] = '\0';
	return FERRY_OK;
}

enum ferry_err queue_device_get(struct queue_registry *reg, int64_t id, struct queue_device *out)
{
	if (id % 3 == 0)
		return FERRY_ENOTFOUND;
	fake_device(out, id, id % 2);
	return FERRY_OK;
}

enum ferry_err queue_device_list(struct queue_registry *reg, const char *user,
				 struct queue_device **out, size_t *n)
{
	*out = calloc(2, sizeof(**out));
	if (!*out)
		return FERRY_ENOMEM;
	fake_device(&(*out)[0], 1, 0);
	fake_device(&(*out)[1], 2, 1);
	*n = 2;
	return FERRY_OK;
}

enum ferry_err queue_device_delete(struct queue_registry *reg, int64_t id)
{
	return id % 3 == 0 ? FERRY_ENOTFOUND : FERRY_OK;
}

enum ferry_err queue_device_set_push(struct queue_registry *reg, int64_t id,
				     const struct queue_push_token *tok)
{
	return id % 5 == 0 ? FERRY_EUNAVAIL : FERRY_OK;
}

enum ferry_err queue_device_clear_push(struct queue_registry *reg, int64_t id)
{
	return FERRY_OK;
}

static int id_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* As the registry answers: each existing id once, ascending. Ids divisible
 * by 3 do not exist, even ones have no token, the others have an APNs or
 * (every fifth) an FCM token. */
enum ferry_err queue_devices_get(struct queue_registry *reg, const int64_t *ids, size_t n,
				 struct queue_device **out, size_t *nout)
{
	int64_t *sorted;
	size_t i, k = 0;

	*out = NULL;
	*nout = 0;
	if (n > QUEUE_DEVICES_GET_MAX)
		return FERRY_EINVAL;
	if (n && ids[0] % 7 == 0)
		return FERRY_EUNAVAIL;
	sorted = malloc(n * sizeof(*sorted) + 1);
	*out = calloc(n + 1, sizeof(**out));
	if (!sorted || !*out) {
		free(sorted);
		free(*out);
		*out = NULL;
		return FERRY_ENOMEM;
	}
	memcpy(sorted, ids, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), id_cmp);
	for (i = 0; i < n; i++) {
		if (sorted[i] % 3 == 0 || (i && sorted[i] == sorted[i - 1]))
			continue;
		fake_device(&(*out)[k], sorted[i], sorted[i] % 2);
		if (sorted[i] % 5 == 0 && (*out)[k].push_token) {
			free((*out)[k].push_provider);
			free((*out)[k].push_topic);
			(*out)[k].push_provider = strdup("fcm");
			(*out)[k].push_topic = NULL;
		}
		k++;
	}
	free(sorted);
	*nout = k;
	return FERRY_OK;
}

/* Linked in through the push service, never reached without credentials. */
enum ferry_err queue_device_drop_push(struct queue_registry *reg, int64_t id, const char *token,
				      int64_t before_ms)
{
	return FERRY_ENOTFOUND;
}

/* Linked in through the gateway, never reached from the admin routes. */
enum ferry_err queue_device_auth(struct queue_registry *reg, int64_t id, const void *secret,
				 size_t len, char user[QUEUE_USER_MAX + 1], int *read_receipts)
{
	return FERRY_EAUTH;
}

enum ferry_err queue_user_devices(struct queue_registry *reg, const char *user, int64_t *ids,
				  size_t max, size_t *n)
{
	*n = 0;
	return FERRY_OK;
}

enum ferry_err queue_devices_seen(struct queue_registry *reg, const int64_t *ids, size_t n)
{
	return FERRY_OK;
}

/* Users starting with 'x' find the database down; the others have read
 * receipts on when their id is of even length. */
enum ferry_err queue_user_settings_get(struct queue_registry *reg, const char *user,
				       struct queue_user_settings *out)
{
	out->read_receipts = QUEUE_READ_RECEIPTS_DEFAULT;
	if (user[0] == 'x')
		return FERRY_EUNAVAIL;
	out->read_receipts = strlen(user) % 2 == 0;
	return FERRY_OK;
}

/* Users starting with 'x' find the database down, with 'y' refusing. */
enum ferry_err queue_user_settings_put(struct queue_registry *reg, const char *user,
				       const struct queue_user_settings *s)
{
	if (s->read_receipts != 0 && s->read_receipts != 1)
		abort(); /* the routes pass a boolean */
	if (user[0] == 'x')
		return FERRY_EUNAVAIL;
	return user[0] == 'y' ? FERRY_EDB : FERRY_OK;
}

/* As many devices as asked for, deepest first; one in four has no head
 * row left (oldest_created null). top 7 finds the database down. */
enum ferry_err queue_devices_deepest(struct queue_registry *reg, size_t max,
				     struct queue_depth *out, size_t *n)
{
	*n = 0;
	if (max < 1 || max > QUEUE_DEEPEST_MAX)
		abort(); /* the route checks ?top */
	if (max == 7)
		return FERRY_EUNAVAIL;
	for (size_t i = 0; i < max; i++) {
		out[i].device = (int64_t)(i + 1);
		snprintf(out[i].user, sizeof(out[i].user), "user%zu", i);
		out[i].pending = UINT64_MAX - i;
		out[i].oldest_created_ms = i % 4 ? 1764342349123LL + (int64_t)i : 0;
	}
	*n = max;
	return FERRY_OK;
}

enum ferry_err queue_depth_totals(struct queue_registry *reg, unsigned max_age_ms,
				  struct queue_totals *out)
{
	static unsigned calls;

	if (++calls % 5 == 0)
		return FERRY_EUNAVAIL;
	out->devices = calls;
	out->envelopes = UINT64_MAX - calls;
	out->as_of_ms = 1764342349127LL;
	return FERRY_OK;
}

/* ---- harness ---- */

static admin_handler *const handlers[] = {
	admin_route_healthz,	       admin_route_readyz,     admin_route_devices_create,
	admin_route_devices_list,      admin_route_device_get, admin_route_device_delete,
	admin_route_push_set,	       admin_route_push_clear, admin_route_message_send,
	admin_route_push_send,	       admin_route_stats,      admin_route_user_settings_get,
	admin_route_user_settings_put, admin_route_queues,     admin_route_device_disconnect,
	admin_route_metrics,	       admin_route_drain,      admin_route_drain_get,
};

/* A push service without credentials, for the whole run. */
static struct push_service *push_service(void)
{
	static struct push_service *ps;
	struct ferry_config *cfg = NULL;
	char err[256];

	if (ps)
		return ps;
	/* Only the defaults: no credentials from the environment. */
	clearenv();
	if (config_load(NULL, &cfg, err, sizeof(err)) ||
	    push_start(cfg, NULL, &ps, err, sizeof(err))) {
		fprintf(stderr, "fuzz_admin_routes: cannot start the push service: %s\n", err);
		abort();
	}
	config_free(cfg);
	return ps;
}

/* Split off the next NUL-terminated piece of the input (copied). */
static char *take(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nul = memchr(*p, 0, (size_t)(end - *p));
	size_t n = nul ? (size_t)(nul - *p) : (size_t)(end - *p);
	char *s = malloc(n + 1);

	if (!s)
		abort();
	memcpy(s, *p, n);
	s[n] = '\0';
	*p += nul ? n + 1 : n;
	return s;
}

/* "k=v&k&..." into @args (pointing into @q, which is cut up), as http.c
 * collects a request's: the first ADMIN_MAX_QUERY kept, all counted. */
static size_t split_query(char *q, struct admin_query_arg args[ADMIN_MAX_QUERY])
{
	size_t n = 0;

	while (*q) {
		char *amp = strchr(q, '&'), *eq;

		if (amp)
			*amp = '\0';
		eq = strchr(q, '=');
		if (eq)
			*eq = '\0';
		if (n < ADMIN_MAX_QUERY) {
			args[n].key = q;
			args[n].value = eq ? eq + 1 : "";
		}
		n++;
		if (!amp)
			break;
		q = amp + 1;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data + 1, *end = data + size;
	struct admin_req req = { 0 };
	struct admin_reply rep = { 0 };
	struct admin_query_arg args[ADMIN_MAX_QUERY];
	char *param0, *param1, *body, *query;

	if (size < 1)
		return 0;
	param0 = take(&p, end);
	param1 = take(&p, end);
	body = take(&p, end);
	query = take(&p, end);
	req.query = args;
	req.nquery = split_query(query, args);
	req.method = "POST";
	req.push = data[0] & 0x80 ? NULL : push_service();
	req.params[0] = param0;
	req.params[1] = param1;
	req.body = body;
	req.body_len = strlen(body);
	handlers[(data[0] & 0x7f) % (sizeof(handlers) / sizeof(handlers[0]))](&req, &rep);
	if (rep.status < 200 || rep.status > 599)
		abort();
	/* A reply is JSON or text (GET /metrics), and text says its type. */
	if ((rep.json && rep.text) || (rep.text && !rep.ctype))
		abort();
	json_decref(rep.json);
	free(rep.text);
	free(param0);
	free(param1);
	free(body);
	free(query);
	return 0;
}
