/*
 * admin_int.h - what admin/http.c and admin/routes.c share; private to admin/.
 *
 * http.c owns the HTTP side: the libmicrohttpd daemon, body accumulation
 * under [admin] max_body, bearer-token auth, matching a path to a route,
 * turning a struct admin_reply into a response, and the request log.
 * routes.c owns what each route does: it validates its input, calls the
 * queue registry or the gateway and fills in a reply. Handlers never see the
 * connection, so they cannot send twice or forget to send.
 *
 * A handler runs on one of libmicrohttpd's threads; several run at once. All
 * they share is struct admin_server, read-only after admin_start() but for
 * the token (under its lock) and the atomics admin_stop() waits on, which
 * only http.c touches.
 */
#ifndef FERRY_ADMIN_ADMIN_INT_H
#define FERRY_ADMIN_ADMIN_INT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "admin/admin.h"
#include "common/err.h"

/* Most path parameters ("{user}", "{device}") one route has. */
#define ADMIN_MAX_PARAMS 2

/* Longest piece of client input quoted in an error message. */
#define ADMIN_QUOTE_MAX 80

/* Room for the Location and Allow headers a handler may set. */
#define ADMIN_HEADER_MAX 64

/* A request as a handler sees it; everything is borrowed for the call. */
struct admin_req {
	struct queue_registry *reg;
	struct gateway *gw; /* NULL when the device gateway is off */
	const char *method;
	/* Percent-decoded path parameters, in the order of the pattern. They
	 * contain no NUL byte (a %00 is rejected before dispatch). */
	const char *params[ADMIN_MAX_PARAMS];
	/* The body, NUL-terminated, at most [admin] max_body bytes. */
	const char *body;
	size_t body_len;
	/* Largest envelope payload: [gateway] max_frame - PROTO_PAYLOAD_HEADROOM. */
	size_t max_payload;
};

/* What a handler answers. http.c sends it and releases it. */
struct admin_reply {
	unsigned status;
	json_t *json;			 /* owned; NULL: no body (204) */
	char location[ADMIN_HEADER_MAX]; /* Location header, "" for none */
	char allow[ADMIN_HEADER_MAX];	 /* Allow header (405), "" for none */
	unsigned retry_after;		 /* Retry-After header in seconds, 0 for none */
};

typedef void admin_handler(const struct admin_req *req, struct admin_reply *rep);

/* The route handlers (routes.c). Each fills in @rep, always. */
admin_handler admin_route_healthz;
admin_handler admin_route_readyz;
admin_handler admin_route_devices_create;
admin_handler admin_route_devices_list;
admin_handler admin_route_device_get;
admin_handler admin_route_device_delete;
admin_handler admin_route_push_set;
admin_handler admin_route_push_clear;
admin_handler admin_route_message_send;

/*
 * Make @rep a JSON reply with @status. Takes @json (a reference), which may
 * be NULL when building it ran out of memory: the reply becomes a 500 then.
 */
void admin_reply_json(struct admin_reply *rep, unsigned status, json_t *json);

/* Make @rep a reply without a body (204). */
void admin_reply_empty(struct admin_reply *rep, unsigned status);

/*
 * Make @rep the error object {"error":{"code":...,"message":...}}, the code
 * named after @status (400 bad_request, 404 not_found, 429 queue_full, ...).
 * Bytes of the message outside printable ASCII are written as \xNN, so any
 * client input quoted in it is safe in JSON and in logs.
 */
void admin_reply_error(struct admin_reply *rep, unsigned status, const char *fmt, ...)
	FERRY_PRINTF(3, 4);

/*
 * Copy @s into @out (of @outlen bytes) for quoting in a message, cut to
 * ADMIN_QUOTE_MAX bytes with "..." when longer. Returns @out.
 */
const char *admin_quote(char *out, size_t outlen, const char *s);

#endif
