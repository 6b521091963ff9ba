/*
 * routes_ops.c - the operators' admin routes: GET /v1/queues, the devices
 * with the deepest offline queues, and POST /v1/devices/{device}/disconnect,
 * which closes a device's connection to this node so that it connects
 * again. Also the query-argument helpers (admin_int.h). The routes and every
 * error they return are documented in admin/openapi.yaml.
 *
 * GET /v1/queues?top=N reads devices.pending, the counter the store keeps
 * (queue_devices_deepest(): one statement, a scan of devices), and the
 * totals over every device (queue_depth_totals(), a second scan); N is 1 to
 * QUEUE_DEEPEST_MAX, default QUEUES_TOP_DEFAULT, and any other argument is
 * a 400, as an unknown body field is elsewhere.
 *
 * POST /v1/devices/{device}/disconnect looks the device up first (404 for an
 * unknown one, like every device route), then asks the gateway to close its
 * connection with ERROR disconnected (gateway_disconnect_device()), which
 * libferry treats as a reason to reconnect, not to give up. The answer says
 * whether there was a connection on this node; without a device gateway
 * there never is. The request ignores a body, as other routes without one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin_int.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "queue/queue.h"
#include "common/banned.h"

#define HTTP_OK 200
#define HTTP_BAD_REQUEST 400
#define HTTP_INTERNAL 500
#define HTTP_ACCEPTED 202
#define HTTP_CONFLICT 409

/* Devices GET /v1/queues lists without ?top. */
#define QUEUES_TOP_DEFAULT 20

/* ---- query arguments ---- */

int admin_query_known(const struct admin_req *req, const char *const *allowed,
		      struct admin_reply *rep)
{
	char q[ADMIN_QUOTE_MAX + 8];
	size_t i, j, k;

	if (req->nquery > ADMIN_MAX_QUERY) {
		admin_reply_error(rep, HTTP_BAD_REQUEST, "too many query parameters: at most %d",
				  ADMIN_MAX_QUERY);
		return 0;
	}
	for (i = 0; i < req->nquery; i++) {
		const char *key = req->query[i].key;

		for (k = 0; allowed[k] && strcmp(allowed[k], key); k++)
			;
		if (!allowed[k]) {
			admin_reply_error(rep, HTTP_BAD_REQUEST, "unknown query parameter '%s'",
					  admin_quote(q, sizeof(q), key));
			return 0;
		}
		for (j = 0; j < i; j++) {
			if (!strcmp(req->query[j].key, key)) {
				admin_reply_error(rep, HTTP_BAD_REQUEST,
						  "query parameter '%s' is given twice", key);
				return 0;
			}
		}
	}
	return 1;
}

const char *admin_query_get(const struct admin_req *req, const char *key)
{
	size_t n = req->nquery < ADMIN_MAX_QUERY ? req->nquery : ADMIN_MAX_QUERY;

	for (size_t i = 0; i < n; i++)
		if (!strcmp(req->query[i].key, key))
			return req->query[i].value;
	return NULL;
}

/*
 * The query argument @key into *@out: @dflt when absent, else a whole number
 * from @min to @max in decimal digits, without sign or leading zero. 0 with
 * @rep set to 400 otherwise.
 */
static int query_count(const struct admin_req *req, const char *key, size_t min, size_t max,
		       size_t dflt, size_t *out, struct admin_reply *rep)
{
	const char *s = admin_query_get(req, key);
	char q[ADMIN_QUOTE_MAX + 8];
	size_t v = 0, i;

	*out = dflt;
	if (!s)
		return 1;
	for (i = 0; s[i] >= '0' && s[i] <= '9' && i < 10; i++)
		v = v * 10 + (size_t)(s[i] - '0');
	if (i && !s[i] && s[0] != '0' && v >= min && v <= max) {
		*out = v;
		return 1;
	}
	admin_reply_error(rep, HTTP_BAD_REQUEST,
			  "query parameter '%s' must be a whole number from %zu to %zu, not '%s'",
			  key, min, max, admin_quote(q, sizeof(q), s));
	return 0;
}

/* ---- GET /v1/queues ---- */

static json_t *depth_json(const struct queue_depth *d)
{
	char id[24], oldest[ADMIN_TIME_LEN];

	snprintf(id, sizeof(id), "%" PRId64, d->device);
	if (d->oldest_created_ms)
		admin_format_time(d->oldest_created_ms, oldest);
	return json_pack("{s:s,s:s,s:I,s:s?}", "device_id", id, "user", d->user, "pending",
			 (json_int_t)(d->pending > INT64_MAX ? INT64_MAX : d->pending),
			 "oldest_created", d->oldest_created_ms ? oldest : NULL);
}

void admin_route_queues(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const params[] = { "top", NULL };
	struct queue_depth *deep;
	struct queue_totals tot;
	char as_of[ADMIN_TIME_LEN];
	enum ferry_err rc;
	size_t top, n = 0;
	json_t *arr;

	if (!admin_query_known(req, params, rep) ||
	    !query_count(req, "top", 1, QUEUE_DEEPEST_MAX, QUEUES_TOP_DEFAULT, &top, rep))
		return;
	deep = calloc(top, sizeof(*deep));
	if (!deep) {
		admin_reply_error(rep, HTTP_INTERNAL, "out of memory");
		return;
	}
	rc = queue_devices_deepest(req->reg, top, deep, &n);
	if (!rc)
		rc = queue_depth_totals(req->reg, 0, &tot);
	if (rc) {
		admin_reply_store_error(rep, rc, "queue listing", 0);
		free(deep);
		return;
	}
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		if (json_array_append_new(arr, depth_json(&deep[i]))) {
			json_decref(arr);
			arr = NULL;
		}
	}
	free(deep);
	admin_format_time(tot.as_of_ms, as_of);
	admin_reply_json(rep, HTTP_OK,
			 arr ? json_pack("{s:{s:I,s:I,s:s},s:o}", "total", "devices",
					 (json_int_t)tot.devices, "envelopes",
					 (json_int_t)tot.envelopes, "as_of", as_of, "queues", arr)
			     : NULL);
}

/* ---- POST /v1/devices/{device}/disconnect ---- */

void admin_route_device_disconnect(const struct admin_req *req, struct admin_reply *rep)
{
	struct queue_device dev;
	enum ferry_err rc;
	int64_t id;
	int had;

	if (!admin_device_param(req, rep, &id))
		return;
	memset(&dev, 0, sizeof(dev));
	rc = queue_device_get(req->reg, id, &dev);
	if (rc) {
		admin_reply_store_error(rep, rc, "device lookup", id);
		return;
	}
	queue_device_release(&dev);
	had = gateway_disconnect_device(req->gw, id);
	log_info("event=admin_device_disconnected device=%" PRId64 " connected=%s", id,
		 had ? "true" : "false");
	admin_reply_json(rep, HTTP_OK, json_pack("{s:b}", "disconnected", had));
}

/* ---- POST /v1/drain, GET /v1/drain ---- */

#define DRAIN_SPREAD_DEFAULT_MS 10000
#define DRAIN_SPREAD_MAX_MS 600000

static json_t *drain_state(const struct admin_req *req)
{
	struct gateway_stats gs;
	struct queue_store_stats ss;
	struct hist_snap commits;
	int draining = gateway_draining(req->gw);

	gateway_stats(req->gw, &gs);
	gateway_store_stats(req->gw, &ss, &commits);
	return json_pack("{s:b,s:I,s:I,s:b}", "draining", draining, "connections",
			 (json_int_t)gs.connections, "queued_puts", (json_int_t)ss.queued_puts,
			 "done",
			 draining && gs.connections == 0 && ss.queued_puts == 0 &&
				 gateway_listeners_open(req->gw) == 0);
}

void admin_route_drain_get(const struct admin_req *req, struct admin_reply *rep)
{
	admin_reply_json(rep, HTTP_OK, drain_state(req));
}

void admin_route_drain(const struct admin_req *req, struct admin_reply *rep)
{
	static const char *const fields[] = { "spread_ms", NULL };
	json_int_t spread = DRAIN_SPREAD_DEFAULT_MS;

	if (!req->gw) {
		admin_reply_error(rep, HTTP_CONFLICT, "this ferryd has no device gateway to drain");
		return;
	}
	if (req->body_len) {
		json_t *obj = admin_body_object(req, fields, rep), *v;

		if (!obj)
			return;
		v = json_object_get(obj, "spread_ms");
		if (v && (!json_is_integer(v) || json_integer_value(v) < 0 ||
			  json_integer_value(v) > DRAIN_SPREAD_MAX_MS)) {
			json_decref(obj);
			admin_reply_error(rep, HTTP_BAD_REQUEST,
					  "field 'spread_ms' must be an integer from 0 to %d",
					  DRAIN_SPREAD_MAX_MS);
			return;
		}
		if (v)
			spread = json_integer_value(v);
		json_decref(obj);
	}
	if (!gateway_draining(req->gw))
		log_info("event=admin_drain spread_ms=%lld", (long long)spread);
	gateway_drain(req->gw, (unsigned)spread);
	admin_reply_json(rep, HTTP_ACCEPTED, drain_state(req));
}
