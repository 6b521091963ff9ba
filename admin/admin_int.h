/*
 * admin_int.h - what admin/http.c and admin/routes.c share; private to admin/.
 *
 * http.c owns the HTTP side: the libmicrohttpd daemon, body accumulation
 * under [admin] max_body, bearer-token auth, matching a path to a route,
 * turning a struct admin_reply into a response, and the request log.
 * routes.c owns what each route does: it validates its input, calls the
 * queue registry or the gateway and fills in a reply; routes_push.c does the
 * same for the push service's routes (POST /v1/push, GET /v1/stats), with
 * the body helpers routes.c shares below, and routes_ops.c for the
 * operators' routes (GET /v1/queues, POST /v1/devices/{device}/disconnect)
 * and the query-argument helpers; routes_ui.c serves the dashboard page
 * (GET /ui), compiled in. Handlers never see the connection, so
 * they cannot send twice or forget to send; http.c hands them the query
 * arguments along with the path parameters and the body.
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

struct queue_push_token;

/* Most path parameters ("{user}", "{device}") one route has. */
#define ADMIN_MAX_PARAMS 2

/* Longest piece of client input quoted in an error message. */
#define ADMIN_QUOTE_MAX 80

/* Room for the Location and Allow headers a handler may set. */
#define ADMIN_HEADER_MAX 64

/* Most query arguments kept of a request; a route that reads them refuses
 * a request with more. */
#define ADMIN_MAX_QUERY 8

/* One query argument, as sent: not percent-decoded ('+' is a space). A key
 * without '=' has the value "". */
struct admin_query_arg {
	const char *key;
	const char *value;
};

/* A request as a handler sees it; everything is borrowed for the call. */
struct admin_req {
	struct queue_registry *reg;
	struct gateway *gw;	   /* NULL when the device gateway is off */
	struct push_service *push; /* NULL when the push service is off */
	const char *method;
	/* Percent-decoded path parameters, in the order of the pattern. They
	 * contain no NUL byte (a %00 is rejected before dispatch). */
	const char *params[ADMIN_MAX_PARAMS];
	/* The body, NUL-terminated, at most [admin] max_body bytes. */
	const char *body;
	size_t body_len;
	/* Largest envelope payload: [gateway] max_frame - PROTO_PAYLOAD_HEADROOM. */
	size_t max_payload;
	/* The query arguments in the order sent, at most ADMIN_MAX_QUERY of
	 * them; nquery counts them all (more than ADMIN_MAX_QUERY: some were
	 * left out). Routes that take none ignore them. */
	const struct admin_query_arg *query;
	size_t nquery;
};

/* A response header a route adds; both strings static. */
struct admin_header {
	const char *name;
	const char *value;
};

/* What a handler answers. http.c sends it and releases it. */
struct admin_reply {
	unsigned status;
	json_t *json;			 /* owned; NULL: no body (204) */
	char *text;			 /* owned: a text body instead of JSON */
	const char *ctype;		 /* with text or fixed: its Content-Type (static) */
	char location[ADMIN_HEADER_MAX]; /* Location header, "" for none */
	char allow[ADMIN_HEADER_MAX];	 /* Allow header (405), "" for none */
	unsigned retry_after;		 /* Retry-After header in seconds, 0 for none */

	/* A static body instead of JSON or text (admin_reply_fixed()), and
	 * extra headers: static, ending with a NULL name; NULL for none. */
	const void *fixed;
	size_t fixed_len;
	const struct admin_header *headers;
};

typedef void admin_handler(const struct admin_req *req, struct admin_reply *rep);

/* The route handlers (routes.c). Each fills in @rep, always. */
admin_handler admin_route_healthz;
admin_handler admin_route_readyz;
admin_handler admin_route_devices_create;
admin_handler admin_route_devices_list;
admin_handler admin_route_user_settings_get;
admin_handler admin_route_user_settings_put;
admin_handler admin_route_device_get;
admin_handler admin_route_device_delete;
admin_handler admin_route_push_set;
admin_handler admin_route_push_clear;
admin_handler admin_route_message_send;
admin_handler admin_route_queues;	     /* routes_ops.c */
admin_handler admin_route_device_disconnect; /* routes_ops.c */
admin_handler admin_route_drain;	     /* routes_ops.c */
admin_handler admin_route_drain_get;	     /* routes_ops.c */
admin_handler admin_route_push_send;	     /* routes_push.c */
admin_handler admin_route_stats;	     /* routes_stats.c */
admin_handler admin_route_metrics;	     /* routes_stats.c */
admin_handler admin_route_ui;		     /* routes_ui.c */

/* The dashboard page, admin/ui/dashboard.html, compiled in by
 * scripts/embed-file.sh (build/gen/ui_page.c). */
extern const unsigned char admin_ui_page[];
extern const size_t admin_ui_page_len;

/* GET /v1/stats's "push" section: null without a push service; NULL when
 * out of memory (routes_push.c). */
json_t *admin_stats_push_json(struct push_service *ps);

/*
 * Make @rep a JSON reply with @status. Takes @json (a reference), which may
 * be NULL when building it ran out of memory: the reply becomes a 500 then.
 */
void admin_reply_json(struct admin_reply *rep, unsigned status, json_t *json);

/* Make @rep a text reply with @status and Content-Type @ctype; takes @text
 * (malloc'ed, NUL-terminated; NULL: out of memory, a 500). */
void admin_reply_text(struct admin_reply *rep, unsigned status, char *text, const char *ctype);

/* Make @rep a reply with @status, the static body @body (@len bytes, not
 * copied, never freed) of Content-Type @ctype, and the extra headers
 * @headers (static, ending with a NULL name; NULL for none). */
void admin_reply_fixed(struct admin_reply *rep, unsigned status, const void *body, size_t len,
		       const char *ctype, const struct admin_header *headers);

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

/* ---- request bodies (routes.c), for every route that takes one ---- */

/*
 * The body as a JSON object (no duplicate keys) with members from @allowed
 * (NULL-terminated) only. Returns a new reference, or NULL with @rep set to
 * the error (400 for bad input).
 */
json_t *admin_body_object(const struct admin_req *req, const char *const *allowed,
			  struct admin_reply *rep);

/*
 * 1 if every member of @obj is in @allowed (NULL-terminated); else 0 with
 * @rep set to 400 "unknown field '<where><key>'". @where names the object
 * in messages ("tokens[2]."), "" for the body itself.
 */
int admin_members_known(json_t *obj, const char *const *allowed, const char *where,
			struct admin_reply *rep);

/*
 * The string member @key of @obj into *out (borrowed from @obj). An absent
 * or null optional member gives NULL. Returns 0 with @rep set when it is
 * missing though @required, or not a string; messages name the member as
 * "<where><key>".
 */
int admin_member_string(json_t *obj, const char *where, const char *key, int required,
			const char **out, struct admin_reply *rep);

/* "an object", "a string", ... for messages. */
const char *admin_json_type_name(const json_t *j);

/* @v in a few words for a message: "-3", "1.5", "a string". Returns @out. */
const char *admin_json_describe(const json_t *v, char *out, size_t outlen);

/* A device id as the API spells it: a positive decimal int64, digits only,
 * no leading zero. 1 and *id set, or 0. */
int admin_device_id_parse(const char *s, int64_t *id);

/* The {device} path parameter (params[0]) into *@id: 1, or 0 with @rep set
 * to 400 "device id '...' is invalid: ...". */
int admin_device_param(const struct admin_req *req, struct admin_reply *rep, int64_t *id);

/* @ms (Unix milliseconds) as RFC 3339 UTC with milliseconds,
 * "2026-11-28T15:05:49.123Z". */
#define ADMIN_TIME_LEN 32
void admin_format_time(int64_t ms, char out[ADMIN_TIME_LEN]);

/*
 * Check @req's query arguments against @allowed (NULL-terminated): 1, or 0
 * with @rep set to 400 for an unknown argument, one given twice, or more
 * than ADMIN_MAX_QUERY of them (routes_ops.c).
 */
int admin_query_known(const struct admin_req *req, const char *const *allowed,
		      struct admin_reply *rep);

/* The value of query argument @key, or NULL if absent (borrowed from @req). */
const char *admin_query_get(const struct admin_req *req, const char *key);

/*
 * Check a push registration as PUT /v1/devices/{id}/push takes it: the
 * provider, the token (never quoted in a message), app, topic and
 * environment (NULL becomes "production"). 0 with @rep set to a 400 naming
 * the member as "<where><key>".
 */
int admin_push_token_check(struct queue_push_token *t, const char *where, struct admin_reply *rep);

/*
 * Map a registry error to a reply: FERRY_ENOTFOUND 404 (device @id),
 * FERRY_EUNAVAIL 503, FERRY_EINVAL 400, anything else 500 (logged). @op
 * names the operation in messages ("device lookup").
 */
void admin_reply_store_error(struct admin_reply *rep, enum ferry_err rc, const char *op,
			     int64_t id);

/*
 * The first characters of push token @token, at most ADMIN_TOKEN_PREFIX_MAX
 * and never more than half of it, then U+2026, into @out: all an answer
 * ever shows of a token.
 */
#define ADMIN_TOKEN_PREFIX_MAX 8
#define ADMIN_TOKEN_PREFIX_SIZE (ADMIN_TOKEN_PREFIX_MAX + 4) /* + U+2026 in UTF-8, NUL */
void admin_token_prefix(const char *token, char out[ADMIN_TOKEN_PREFIX_SIZE]);

#endif
