/*
 * fuzz_admin_routes.c - libFuzzer harness for the admin API's request
 * validation: path parameters and JSON bodies as the route handlers see them.
 *
 * Input: one byte choosing the handler, then "param0 \0 param1 \0 body".
 * The queue registry is replaced at link time by the stubs below (the real
 * queue/registry.o is not linked), so every input reaches the code that
 * builds the reply, including the device JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
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

/* Linked in through the gateway, never reached from the admin routes. */
enum ferry_err queue_device_auth(struct queue_registry *reg, int64_t id, const void *secret,
				 size_t len, char user[QUEUE_USER_MAX + 1])
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

/* ---- harness ---- */

static admin_handler *const handlers[] = {
	admin_route_healthz,	  admin_route_readyz,	  admin_route_devices_create,
	admin_route_devices_list, admin_route_device_get, admin_route_device_delete,
	admin_route_push_set,	  admin_route_push_clear, admin_route_message_send,
};

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data + 1, *end = data + size;
	struct admin_req req = { 0 };
	struct admin_reply rep = { 0 };
	char *param0, *param1, *body;

	if (size < 1)
		return 0;
	param0 = take(&p, end);
	param1 = take(&p, end);
	body = take(&p, end);
	req.method = "POST";
	req.params[0] = param0;
	req.params[1] = param1;
	req.body = body;
	req.body_len = strlen(body);
	handlers[data[0] % (sizeof(handlers) / sizeof(handlers[0]))](&req, &rep);
	if (rep.status < 200 || rep.status > 599)
		abort();
	json_decref(rep.json);
	free(param0);
	free(param1);
	free(body);
	return 0;
}
