/*
 * http.c - the admin API's HTTP server: libmicrohttpd lifecycle, request
 * bodies, bearer-token auth, routing, JSON responses and the request log.
 *
 * Threads: libmicrohttpd runs its own polling threads (a pool of
 * [admin] threads, epoll where available). Everything in struct admin_server
 * is read-only while the daemon runs except the token hash, which
 * admin_set_token() swaps under token_lock from the main thread, and the
 * atomics admin_stop() waits on (requests in flight, stopping).
 *
 * A request goes through on_access() three ways: once when its headers are
 * in (auth is decided then, and a declared body over max_body is refused at
 * once, before it is read), once per piece of body (kept only when
 * authorised, and never more than max_body bytes), and once when it is
 * complete, when it is routed and answered. Its state (struct request) is
 * freed in on_completed(), which libmicrohttpd calls for every request it
 * gave to on_access(), answered or not.
 *
 * A chunked body has no declared length. libmicrohttpd 0.9.75 cannot answer
 * in the middle of a body, so once one goes over max_body the rest is read
 * and dropped (nothing more is kept) and 413 goes out at its end; past
 * ADMIN_DRAIN_MAX more bytes the connection is closed without an answer.
 *
 * Order of checks: auth (401), body size (413), route (404, 405), then the
 * handler's own (400, 404, 413, 429, 503, 500). A client without the token
 * learns nothing about routes or limits.
 *
 * Auth: only the SHA-256 of the token is kept. A presented token is hashed
 * too and the two hashes compared with CRYPTO_memcmp(), so neither the
 * comparison time nor the token's length tells anything about the token.
 *
 * The raw path is routed (our unescape callback leaves %XX alone) and only
 * path parameters are percent-decoded, so "%2F" cannot make up a route and
 * "%00" is refused instead of cutting a parameter short. Query arguments
 * reach the handlers as sent (not decoded), the first ADMIN_MAX_QUERY of
 * them; a route that reads them refuses unknown ones (admin_query_known()).
 *
 * Stopping (admin_stop()): no new connection is accepted (one that comes
 * meanwhile waits in the listen backlog until the socket is closed at the
 * end), the requests in flight are let finish, each answer then saying
 * "Connection: close", for up to ADMIN_CONN_TIMEOUT seconds, and only then
 * is libmicrohttpd stopped, which drops whatever connections remain.
 *
 * Slow and silent clients: a connection that sends nothing for [admin]
 * request_timeout seconds, whether before its request, inside its headers
 * or body, or between requests, is closed by libmicrohttpd; at most
 * ADMIN_CONN_LIMIT are open at once, and a request's headers must fit in
 * libmicrohttpd's per-connection memory (32 KiB; past it, 431).
 *
 * Diagnostics: one event=admin_request line per answered request (method,
 * escaped path, status, peer, body size, duration); never a header, a body
 * or the token.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "admin/admin.h"
#include "admin/admin_int.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/proto.h"
#include "queue/queue.h"
#include "common/banned.h"

/* Most clients served at once; how long stopping waits for the requests in
 * flight. How long a silent connection may stay is [admin] request_timeout. */
#define ADMIN_CONN_LIMIT 256
#define ADMIN_CONN_TIMEOUT 30 /* seconds */
#define ADMIN_LISTEN_BACKLOG 128

/* Most bytes of a chunked body over max_body read (and dropped) to answer 413. */
#define ADMIN_DRAIN_MAX (1024 * 1024)

#define TOKEN_HASH_LEN 32 /* SHA-256 */

/* Longest error message before escaping, and after (4 bytes per byte). */
#define MSG_MAX 512
#define MSG_ESCAPED_MAX (MSG_MAX * 4)

struct admin_server {
	struct MHD_Daemon *daemon;
	struct queue_registry *reg; /* borrowed */
	struct gateway *gw;	    /* borrowed, may be NULL */
	struct push_service *push;  /* borrowed, may be NULL */
	size_t max_body;
	size_t max_payload; /* of an envelope: [gateway] max_frame - headroom */
	pthread_rwlock_t token_lock;
	unsigned char token_hash[TOKEN_HASH_LEN]; /* under token_lock */
	atomic_uint inflight;			  /* requests begun, not yet completed */
	atomic_bool stopping;			  /* admin_stop() has begun */
};

enum auth {
	AUTH_NOT_NEEDED,
	AUTH_OK,
	AUTH_MISSING,
	AUTH_SCHEME,
	AUTH_WRONG,
};

/* One request; owned by libmicrohttpd's con_cls slot until on_completed(). */
struct request {
	struct buf body;       /* capped at max_body */
	uint64_t received;     /* body bytes seen, kept or not */
	struct timespec start; /* CLOCK_MONOTONIC */
	enum auth auth;
	int too_big; /* the body went over max_body: nothing of it is kept */
	int answered;
	/* The query arguments (libmicrohttpd's strings), nquery of them in all. */
	struct admin_query_arg query[ADMIN_MAX_QUERY];
	size_t nquery;
};

struct route {
	const char *method;
	const char *pattern; /* '*' stands for one path segment, maybe empty */
	admin_handler *handler;
};

static const struct route routes[] = {
	{ "GET", "/healthz", admin_route_healthz },
	{ "GET", "/readyz", admin_route_readyz },
	{ "POST", "/v1/users/*/devices", admin_route_devices_create },
	{ "GET", "/v1/users/*/devices", admin_route_devices_list },
	{ "GET", "/v1/users/*/settings", admin_route_user_settings_get },
	{ "PUT", "/v1/users/*/settings", admin_route_user_settings_put },
	{ "GET", "/v1/devices/*", admin_route_device_get },
	{ "DELETE", "/v1/devices/*", admin_route_device_delete },
	{ "PUT", "/v1/devices/*/push", admin_route_push_set },
	{ "DELETE", "/v1/devices/*/push", admin_route_push_clear },
	{ "POST", "/v1/devices/*/disconnect", admin_route_device_disconnect },
	{ "POST", "/v1/messages", admin_route_message_send },
	{ "POST", "/v1/push", admin_route_push_send },
	{ "GET", "/v1/stats", admin_route_stats },
	{ "GET", "/v1/queues", admin_route_queues },
	{ "POST", "/v1/drain", admin_route_drain },
	{ "GET", "/v1/drain", admin_route_drain_get },
	{ "GET", "/metrics", admin_route_metrics },
	{ "GET", "/ui", admin_route_ui },
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* A path parameter before decoding: a slice of the raw path. */
struct segment {
	const char *p;
	size_t len;
};

/* Sent when even building an error reply failed. */
static const char oom_body[] =
	"{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";

/* ---- helpers shared with routes.c ---- */

static const char *error_code(unsigned status)
{
	switch (status) {
	case MHD_HTTP_BAD_REQUEST:
		return "bad_request";
	case MHD_HTTP_UNAUTHORIZED:
		return "unauthorized";
	case MHD_HTTP_NOT_FOUND:
		return "not_found";
	case MHD_HTTP_METHOD_NOT_ALLOWED:
		return "method_not_allowed";
	case MHD_HTTP_CONFLICT:
		return "conflict";
	case MHD_HTTP_CONTENT_TOO_LARGE:
		return "payload_too_large";
	case MHD_HTTP_TOO_MANY_REQUESTS:
		return "queue_full"; /* the only 429: a device's offline queue is full */
	case MHD_HTTP_SERVICE_UNAVAILABLE:
		return "unavailable";
	default:
		return "internal";
	}
}

/*
 * Copy @in to @out (@outlen >= 1), bytes outside printable ASCII as \xNN;
 * with @strict also space, '"' and '\', for key=value log lines.
 */
static void escape(char *out, size_t outlen, const char *in, int strict)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;
		int plain = c > 0x20 && c < 0x7f;

		if (!strict)
			plain = plain || c == ' ';
		else if (c == '"' || c == '\\')
			plain = 0;
		if (plain && o + 1 < outlen) {
			out[o++] = (char)c;
			continue;
		}
		if (plain || o + 4 >= outlen)
			break;
		out[o++] = '\\';
		out[o++] = 'x';
		out[o++] = hex[c >> 4];
		out[o++] = hex[c & 15];
	}
	out[o] = '\0';
}

const char *admin_quote(char *out, size_t outlen, const char *s)
{
	size_t len = strlen(s);

	if (len > ADMIN_QUOTE_MAX)
		snprintf(out, outlen, "%.*s...", ADMIN_QUOTE_MAX, s);
	else
		snprintf(out, outlen, "%s", s);
	return out;
}

/* Drop what @rep would have sent: its body, Content-Type and extra headers. */
static void reply_clear(struct admin_reply *rep)
{
	json_decref(rep->json);
	rep->json = NULL;
	free(rep->text);
	rep->text = NULL;
	rep->fixed = NULL;
	rep->fixed_len = 0;
	rep->ctype = NULL;
	rep->headers = NULL;
}

void admin_reply_json(struct admin_reply *rep, unsigned status, json_t *json)
{
	reply_clear(rep);
	rep->status = json ? status : MHD_HTTP_INTERNAL_SERVER_ERROR;
	rep->json = json;
}

void admin_reply_text(struct admin_reply *rep, unsigned status, char *text, const char *ctype)
{
	reply_clear(rep);
	rep->text = text;
	rep->ctype = ctype;
	rep->status = text ? status : MHD_HTTP_INTERNAL_SERVER_ERROR;
	if (!text)
		rep->json = json_pack("{s:{s:s,s:s}}", "error", "code", "internal", "message",
				      "out of memory");
}

void admin_reply_fixed(struct admin_reply *rep, unsigned status, const void *body, size_t len,
		       const char *ctype, const struct admin_header *headers)
{
	reply_clear(rep);
	rep->fixed = body;
	rep->fixed_len = len;
	rep->ctype = ctype;
	rep->headers = headers;
	rep->status = status;
}

void admin_reply_empty(struct admin_reply *rep, unsigned status)
{
	reply_clear(rep);
	rep->status = status;
}

void admin_reply_error(struct admin_reply *rep, unsigned status, const char *fmt, ...)
{
	char raw[MSG_MAX], msg[MSG_ESCAPED_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	escape(msg, sizeof(msg), raw, 0);
	admin_reply_json(
		rep, status,
		json_pack("{s:{s:s,s:s}}", "error", "code", error_code(status), "message", msg));
}

/* ---- auth ---- */

static int sha256(const void *p, size_t len, unsigned char out[TOKEN_HASH_LEN])
{
	unsigned int n = 0;

	return EVP_Digest(p, len, out, &n, EVP_sha256(), NULL) == 1 && n == TOKEN_HASH_LEN;
}

/* Every route needs the token but the probes (/healthz, /readyz) and the
 * dashboard page (/ui), which holds no data and reads /v1/stats with the
 * token: those under /v1, and /metrics (Prometheus sends it as
 * `authorization`). */
static int needs_auth(const char *path)
{
	return !strncmp(path, "/v1/", 4) || !strcmp(path, "/v1") || !strcmp(path, "/metrics");
}

static enum auth auth_check(struct admin_server *srv, struct MHD_Connection *conn)
{
	unsigned char got[TOKEN_HASH_LEN], want[TOKEN_HASH_LEN];
	const char *h, *tok;
	size_t len;
	int same;

	h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h)
		return AUTH_MISSING;
	if (strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t' && h[6] != '\0'))
		return AUTH_SCHEME;
	for (tok = h + 6; *tok == ' ' || *tok == '\t'; tok++)
		;
	len = strlen(tok);
	while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
		len--;
	if (!len || !sha256(tok, len, got))
		return AUTH_WRONG;
	pthread_rwlock_rdlock(&srv->token_lock);
	memcpy(want, srv->token_hash, sizeof(want));
	pthread_rwlock_unlock(&srv->token_lock);
	same = CRYPTO_memcmp(got, want, sizeof(got)) == 0;
	OPENSSL_cleanse(want, sizeof(want));
	return same ? AUTH_OK : AUTH_WRONG;
}

static void reply_unauthorized(struct admin_reply *rep, enum auth auth)
{
	switch (auth) {
	case AUTH_MISSING:
		admin_reply_error(rep, MHD_HTTP_UNAUTHORIZED,
				  "missing Authorization header: expected 'Bearer <token>'");
		break;
	case AUTH_SCHEME:
		admin_reply_error(rep, MHD_HTTP_UNAUTHORIZED,
				  "authorization scheme must be 'Bearer'");
		break;
	default:
		admin_reply_error(rep, MHD_HTTP_UNAUTHORIZED, "invalid bearer token");
		break;
	}
}

/* ---- routing ---- */

/* Match @path against @pattern, collecting the '*' segments into @segs. */
static int route_match(const char *pattern, const char *path, struct segment *segs, size_t *nsegs)
{
	*nsegs = 0;
	while (*pattern) {
		if (*pattern == '*') {
			const char *end = strchrnul(path, '/');

			if (*nsegs == ADMIN_MAX_PARAMS)
				ferry_panic("admin route '%s' has too many parameters", pattern);
			segs[*nsegs].p = path;
			segs[*nsegs].len = (size_t)(end - path);
			(*nsegs)++;
			path = end;
			pattern++;
		} else if (*pattern++ != *path++) {
			return 0;
		}
	}
	return *path == '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode @seg into a new string: FERRY_EINVAL for a bad or %00 escape. */
static enum ferry_err decode_segment(const struct segment *seg, char **out)
{
	char *s = malloc(seg->len + 1);
	size_t i, o = 0;

	if (!s)
		return FERRY_ENOMEM;
	for (i = 0; i < seg->len; i++) {
		int hi, lo;

		if (seg->p[i] != '%') {
			s[o++] = seg->p[i];
			continue;
		}
		hi = i + 2 < seg->len ? hexval(seg->p[i + 1]) : -1;
		lo = hi >= 0 ? hexval(seg->p[i + 2]) : -1;
		if (lo < 0 || (hi == 0 && lo == 0)) {
			free(s);
			return FERRY_EINVAL;
		}
		s[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	s[o] = '\0';
	*out = s;
	return FERRY_OK;
}

/* The methods that @path answers to, as an Allow header value. */
static void allowed_methods(const char *path, char *out, size_t outlen)
{
	struct segment segs[ADMIN_MAX_PARAMS];
	size_t i, n, o = 0;

	out[0] = '\0';
	for (i = 0; i < NROUTES; i++) {
		if (!route_match(routes[i].pattern, path, segs, &n))
			continue;
		o += (size_t)snprintf(out + o, outlen - o, "%s%s%s", o ? ", " : "",
				      routes[i].method,
				      strcmp(routes[i].method, "GET") ? "" : ", HEAD");
		if (o >= outlen)
			ferry_panic("admin Allow header for '%s' is too long", routes[i].pattern);
	}
}

static void call_route(struct admin_server *srv, const struct route *r, const struct segment *segs,
		       size_t nsegs, const struct request *rq, const char *method,
		       struct admin_reply *rep)
{
	char *params[ADMIN_MAX_PARAMS] = { NULL };
	struct admin_req req = {
		.reg = srv->reg,
		.gw = srv->gw,
		.push = srv->push,
		.method = method,
		.body = rq->body.data ? rq->body.data : "",
		.body_len = rq->body.len,
		.max_payload = srv->max_payload,
		.query = rq->query,
		.nquery = rq->nquery,
	};
	char q[ADMIN_QUOTE_MAX + 8], raw[ADMIN_QUOTE_MAX + 1];
	enum ferry_err rc = FERRY_OK;
	size_t i;

	for (i = 0; i < nsegs && !rc; i++) {
		rc = decode_segment(&segs[i], &params[i]);
		req.params[i] = params[i];
		if (rc == FERRY_EINVAL) {
			snprintf(raw, sizeof(raw), "%.*s", (int)segs[i].len, segs[i].p);
			admin_reply_error(rep, MHD_HTTP_BAD_REQUEST,
					  "path segment '%s' has an invalid percent-escape",
					  admin_quote(q, sizeof(q), raw));
		} else if (rc) {
			admin_reply_error(rep, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		}
	}
	if (!rc)
		r->handler(&req, rep);
	for (i = 0; i < nsegs; i++)
		free(params[i]);
}

static void dispatch(struct admin_server *srv, const struct request *rq, const char *path,
		     const char *method, struct admin_reply *rep)
{
	const char *m = strcmp(method, "HEAD") ? method : "GET";
	struct segment segs[ADMIN_MAX_PARAMS];
	char q[ADMIN_QUOTE_MAX + 8], qm[ADMIN_QUOTE_MAX + 8];
	int path_known = 0;
	size_t i, n;

	for (i = 0; i < NROUTES; i++) {
		if (!route_match(routes[i].pattern, path, segs, &n))
			continue;
		path_known = 1;
		if (!strcmp(routes[i].method, m)) {
			call_route(srv, &routes[i], segs, n, rq, method, rep);
			return;
		}
	}
	admin_quote(q, sizeof(q), path);
	if (!path_known) {
		admin_reply_error(rep, MHD_HTTP_NOT_FOUND, "route '%s' not found", q);
		return;
	}
	allowed_methods(path, rep->allow, sizeof(rep->allow));
	admin_reply_error(rep, MHD_HTTP_METHOD_NOT_ALLOWED,
			  "method '%s' is not allowed on '%s': use %s",
			  admin_quote(qm, sizeof(qm), method), q, rep->allow);
}

/* ---- responses and the request log ---- */

static void log_request(struct MHD_Connection *conn, const char *method, const char *path,
			unsigned status, const struct request *rq)
{
	char epath[ADMIN_QUOTE_MAX * 4 + 8], emethod[64], q[ADMIN_QUOTE_MAX + 8];
	char peer[NI_MAXHOST] = "-";
	const union MHD_ConnectionInfo *ci;
	struct timespec now;
	long long us;

	if (LOG_LEVEL_INFO < atomic_load_explicit(&log_threshold, memory_order_relaxed))
		return;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr)
		getnameinfo(ci->client_addr,
			    ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								   : sizeof(struct sockaddr_in),
			    peer, sizeof(peer), NULL, 0, NI_NUMERICHOST);
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (now.tv_sec - rq->start.tv_sec) * 1000000LL + (now.tv_nsec - rq->start.tv_nsec) / 1000;
	escape(emethod, sizeof(emethod), method, 1);
	escape(epath, sizeof(epath), admin_quote(q, sizeof(q), path), 1);
	log_info("event=admin_request method=%s path=%s status=%u peer=%s body_bytes=%" PRIu64
		 " duration_ms=%lld.%03lld",
		 emethod, epath, status, peer, rq->received, us / 1000, us % 1000);
}

static struct MHD_Response *make_response(struct admin_reply *rep)
{
	struct MHD_Response *resp;
	char *text;

	if (rep->fixed)
		return MHD_create_response_from_buffer(rep->fixed_len, (void *)rep->fixed,
						       MHD_RESPMEM_PERSISTENT);
	if (rep->text) {
		resp = MHD_create_response_from_buffer_with_free_callback(strlen(rep->text),
									  rep->text, free);
		if (resp)
			rep->text = NULL; /* the response owns it */
		return resp;
	}
	if (!rep->json && rep->status == MHD_HTTP_NO_CONTENT)
		return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	text = rep->json ? json_dumps(rep->json, JSON_COMPACT) : NULL;
	if (text) {
		size_t len = strlen(text);
		char *p = realloc(text, len + 2);

		if (p) {
			p[len] = '\n';
			p[len + 1] = '\0';
			resp = MHD_create_response_from_buffer_with_free_callback(len + 1, p, free);
			if (!resp)
				free(p);
			return resp;
		}
		free(text);
	}
	rep->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	return MHD_create_response_from_buffer(sizeof(oom_body) - 1, (void *)oom_body,
					       MHD_RESPMEM_PERSISTENT);
}

/* Send @rep (and release it), log the request. MHD_NO closes the connection. */
static enum MHD_Result send_reply(struct admin_server *srv, struct MHD_Connection *conn,
				  struct request *rq, const char *method, const char *path,
				  struct admin_reply *rep)
{
	struct MHD_Response *resp = make_response(rep);
	enum MHD_Result ret = MHD_NO;

	json_decref(rep->json);
	rep->json = NULL;
	rq->answered = 1;
	if (rep->text) { /* not taken by a response */
		free(rep->text);
		rep->text = NULL;
		rep->ctype = NULL;
	}
	if (!resp) {
		log_error("event=admin_response_failed reason=\"out of memory\"");
		return MHD_NO;
	}
	if (rep->ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep->ctype);
	else if (rep->status != MHD_HTTP_NO_CONTENT)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (rep->status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (rep->allow[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep->allow);
	if (rep->location[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, rep->location);
	if (rep->retry_after) {
		char secs[16];

		snprintf(secs, sizeof(secs), "%u", rep->retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs);
	}
	for (const struct admin_header *h = rep->headers; h && h->name; h++)
		MHD_add_response_header(resp, h->name, h->value);
	if (atomic_load(&srv->stopping))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, rep->status, resp);
	MHD_destroy_response(resp);
	if (ret == MHD_YES)
		log_request(conn, method, path, rep->status, rq);
	else
		log_warn("event=admin_response_failed status=%u", rep->status);
	return ret;
}

/* Answer a request whose body is over max_body: 401 if it was not authorised, else 413. */
static enum MHD_Result refuse_body(struct admin_server *srv, struct MHD_Connection *conn,
				   struct request *rq, const char *method, const char *path)
{
	struct admin_reply rep = { 0 };

	if (rq->auth != AUTH_OK && rq->auth != AUTH_NOT_NEEDED)
		reply_unauthorized(&rep, rq->auth);
	else
		admin_reply_error(&rep, MHD_HTTP_CONTENT_TOO_LARGE,
				  "request body is larger than %zu bytes ([admin] max_body)",
				  srv->max_body);
	buf_release(&rq->body);
	return send_reply(srv, conn, rq, method, path, &rep);
}

/* ---- the libmicrohttpd callbacks ---- */

static enum MHD_Result request_start(struct admin_server *srv, struct MHD_Connection *conn,
				     const char *path, const char *method, struct request *rq)
{
	const char *cl;

	rq->auth = needs_auth(path) ? auth_check(srv, conn) : AUTH_NOT_NEEDED;
	cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		char *end;
		unsigned long long n;

		errno = 0;
		n = strtoull(cl, &end, 10);
		if (end != cl && (errno == ERANGE || n > srv->max_body))
			return refuse_body(srv, conn, rq, method, path);
	}
	return MHD_YES;
}

static enum MHD_Result request_body(struct admin_server *srv, struct MHD_Connection *conn,
				    const char *path, const char *method, struct request *rq,
				    const char *data, size_t len)
{
	rq->received += len;
	if (rq->received > srv->max_body) {
		/*
		 * A body without Content-Length (chunked) went over the cap.
		 * libmicrohttpd 0.9.75 cannot answer in the middle of a body,
		 * so drop the rest as it comes and answer at its end; close
		 * the connection instead if it goes on and on.
		 */
		buf_release(&rq->body);
		rq->too_big = 1;
		if (rq->received - srv->max_body > ADMIN_DRAIN_MAX) {
			log_warn("event=admin_body_dropped bytes=%" PRIu64 " max_body=%zu",
				 rq->received, srv->max_body);
			return MHD_NO;
		}
		return MHD_YES;
	}
	/* A request that will be refused keeps nothing of its body. */
	if (rq->auth == AUTH_OK || rq->auth == AUTH_NOT_NEEDED) {
		if (buf_append(&rq->body, data, len))
			return MHD_NO; /* out of memory: the cap was checked above */
	}
	return MHD_YES;
}

/* Keep a query argument; its strings live as long as the request. */
static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct request *rq = cls;

	if (rq->nquery < ADMIN_MAX_QUERY) {
		rq->query[rq->nquery].key = key;
		rq->query[rq->nquery].value = value ? value : "";
	}
	rq->nquery++;
	return MHD_YES;
}

/*
 * The name of a query argument that looks like a credential, or NULL. A
 * token in a URL ends up in proxies' and browsers' logs and histories: such
 * a request is refused whether or not its header is right, so that the
 * habit never works.
 */
static const char *token_in_query(const struct request *rq)
{
	static const char *const names[] = { "token", "access_token",  "api_key", "apikey",
					     "auth",  "authorization", "bearer",  NULL };

	for (size_t i = 0; i < rq->nquery && i < ADMIN_MAX_QUERY; i++)
		for (size_t k = 0; names[k]; k++)
			if (strcasecmp(rq->query[i].key, names[k]) == 0)
				return names[k];
	return NULL;
}

static enum MHD_Result request_finish(struct admin_server *srv, struct MHD_Connection *conn,
				      const char *path, const char *method, struct request *rq)
{
	struct admin_reply rep = { 0 };

	const char *leaked;

	if (rq->too_big)
		return refuse_body(srv, conn, rq, method, path);
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_query, rq);
	leaked = rq->auth == AUTH_NOT_NEEDED ? NULL : token_in_query(rq);
	if (leaked) {
		admin_reply_error(&rep, MHD_HTTP_UNAUTHORIZED,
				  "the admin token goes in the Authorization header, never in the "
				  "query string (query parameter '%s')",
				  leaked);
	} else if (rq->auth == AUTH_OK || rq->auth == AUTH_NOT_NEEDED) {
		dispatch(srv, rq, path, method, &rep);
	} else {
		reply_unauthorized(&rep, rq->auth);
	}
	return send_reply(srv, conn, rq, method, path, &rep);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
				 const char *method, const char *version, const char *upload_data,
				 size_t *upload_data_size, void **con_cls)
{
	struct admin_server *srv = cls;
	struct request *rq = *con_cls;
	size_t len = *upload_data_size;

	if (!rq) {
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return MHD_NO;
		buf_init(&rq->body, srv->max_body);
		clock_gettime(CLOCK_MONOTONIC, &rq->start);
		atomic_fetch_add(&srv->inflight, 1);
		*con_cls = rq;
		return request_start(srv, conn, url, method, rq);
	}
	*upload_data_size = 0;
	if (rq->answered)
		return MHD_YES; /* refused early: drop whatever still comes */
	if (len)
		return request_body(srv, conn, url, method, rq, upload_data, len);
	return request_finish(srv, conn, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct admin_server *srv = cls;
	struct request *rq = *con_cls;

	if (!rq)
		return;
	atomic_fetch_sub(&srv->inflight, 1);
	if (!rq->answered)
		log_debug("event=admin_request_aborted reason=%d", (int)toe);
	buf_release(&rq->body);
	free(rq);
	*con_cls = NULL;
}

/* Route on the raw path: leave %XX escapes to decode_segment(). */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	return strlen(s);
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char raw[MSG_MAX], msg[MSG_ESCAPED_MAX];
	size_t len;

	vsnprintf(raw, sizeof(raw), fmt, ap);
	len = strlen(raw);
	while (len && (raw[len - 1] == '\n' || raw[len - 1] == '.'))
		raw[--len] = '\0';
	escape(msg, sizeof(msg), raw, 0);
	log_warn("event=admin_http_error message=\"%s\"", msg);
}

/* ---- lifecycle ---- */

/* Bind and listen on the first address in @ai that works, IPv4 first. */
static int bind_first(struct addrinfo *ai, int *saved_errno)
{
	int pass, fd, one = 1;
	struct addrinfo *a;

	for (pass = 0; pass < 2; pass++) {
		for (a = ai; a; a = a->ai_next) {
			if ((a->ai_family == AF_INET) != (pass == 0))
				continue;
			fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
			if (fd < 0) {
				*saved_errno = errno;
				continue;
			}
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (!bind(fd, a->ai_addr, a->ai_addrlen) &&
			    !listen(fd, ADMIN_LISTEN_BACKLOG))
				return fd;
			*saved_errno = errno;
			close(fd);
		}
	}
	return -1;
}

/*
 * Open the listening socket ourselves rather than through libmicrohttpd, so
 * that a failure can say why. *fd and *family describe it.
 */
static enum ferry_err listen_on(const char *addr, int *fd, int *family, char *err, size_t errlen)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	};
	struct addrinfo *ai = NULL;
	char portstr[8];
	char *host = NULL;
	uint16_t port;
	int rc, saved_errno = EADDRNOTAVAIL;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (config_split_addr(addr, &host, &port)) {
		snprintf(err, errlen, "cannot listen on '%s': expected host:port", addr);
		return FERRY_ECONFIG;
	}
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	rc = getaddrinfo(host, portstr, &hints, &ai);
	free(host);
	if (rc) {
		snprintf(err, errlen, "cannot listen on '%s': %s", addr,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return FERRY_EIO;
	}
	*fd = bind_first(ai, &saved_errno);
	freeaddrinfo(ai);
	if (*fd < 0) {
		snprintf(err, errlen, "cannot listen on '%s': %s", addr, strerror(saved_errno));
		return FERRY_EIO;
	}
	*family = getsockname(*fd, (struct sockaddr *)&ss, &sslen) ? AF_INET : ss.ss_family;
	return FERRY_OK;
}

/* The port @fd is bound to (0 if it cannot be told). */
static uint16_t bound_port(struct MHD_Daemon *d, int fd)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (di && di->port)
		return di->port;
	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static struct MHD_Daemon *daemon_start(struct admin_server *srv, int fd, int family,
				       unsigned threads, unsigned timeout)
{
	/* MHD_USE_ITC: needed by MHD_quiesce_daemon() in admin_stop(). */
	unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;

	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	return MHD_start_daemon(flags, 0, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER,
				on_mhd_log, srv, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ADMIN_CONN_LIMIT,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)timeout,
				MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(threads ? threads : 1),
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
				MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, srv, MHD_OPTION_END);
}

static void server_free(struct admin_server *srv)
{
	pthread_rwlock_destroy(&srv->token_lock);
	OPENSSL_cleanse(srv->token_hash, sizeof(srv->token_hash));
	free(srv);
}

enum ferry_err admin_start(const struct ferry_config *cfg, const char *token,
			   struct queue_registry *reg, struct gateway *gw,
			   struct push_service *push, struct admin_server **out, uint16_t *port,
			   char *err, size_t errlen)
{
	struct admin_server *srv;
	enum ferry_err rc;
	int fd, family;

	*out = NULL;
	if (!token || !token[0]) {
		snprintf(err, errlen, "admin token is empty: set [admin] token or token_file");
		return FERRY_ECONFIG;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv || pthread_rwlock_init(&srv->token_lock, NULL)) {
		free(srv);
		snprintf(err, errlen, "cannot start the admin API: out of memory");
		return FERRY_ENOMEM;
	}
	srv->reg = reg;
	srv->gw = gw;
	srv->push = push;
	srv->max_body = cfg->admin.max_body;
	/* max_frame is at least PROTO_MIN_MAX_FRAME, well over the headroom. */
	srv->max_payload = cfg->gateway.max_frame - PROTO_PAYLOAD_HEADROOM;
	atomic_init(&srv->inflight, 0);
	atomic_init(&srv->stopping, 0);
	if (!sha256(token, strlen(token), srv->token_hash)) {
		snprintf(err, errlen, "cannot start the admin API: SHA-256 unavailable");
		rc = FERRY_EIO;
		goto free_srv;
	}
	rc = listen_on(cfg->admin.listen, &fd, &family, err, errlen);
	if (rc)
		goto free_srv;
	srv->daemon = daemon_start(srv, fd, family, cfg->admin.threads, cfg->admin.request_timeout);
	if (!srv->daemon) {
		snprintf(err, errlen, "cannot start the admin HTTP server on '%s'",
			 cfg->admin.listen);
		rc = FERRY_EIO;
		goto close_fd;
	}
	*port = bound_port(srv->daemon, fd);
	log_debug("event=admin_http_started port=%u threads=%u max_body=%zu", (unsigned)*port,
		  cfg->admin.threads, srv->max_body);
	*out = srv;
	return FERRY_OK;

close_fd:
	close(fd);
free_srv:
	server_free(srv);
	return rc;
}

enum ferry_err admin_set_token(struct admin_server *srv, const char *token)
{
	unsigned char hash[TOKEN_HASH_LEN];

	if (!token || !token[0])
		return FERRY_EINVAL;
	if (!sha256(token, strlen(token), hash))
		return FERRY_EIO;
	pthread_rwlock_wrlock(&srv->token_lock);
	memcpy(srv->token_hash, hash, sizeof(hash));
	pthread_rwlock_unlock(&srv->token_lock);
	OPENSSL_cleanse(hash, sizeof(hash));
	log_info("event=admin_token_replaced");
	return FERRY_OK;
}

/*
 * Stop accepting and wait until the requests in flight are answered, for at
 * most ADMIN_CONN_TIMEOUT seconds. Returns the listening socket, which
 * libmicrohttpd no longer closes, or MHD_INVALID_SOCKET.
 */
static MHD_socket drain(struct admin_server *srv)
{
	const struct timespec pause = { 0, 10 * 1000 * 1000 };
	MHD_socket fd;
	unsigned n;

	atomic_store(&srv->stopping, 1);
	fd = MHD_quiesce_daemon(srv->daemon);
	for (int i = 0; i < ADMIN_CONN_TIMEOUT * 100; i++) {
		if (!atomic_load(&srv->inflight))
			return fd;
		nanosleep(&pause, NULL);
	}
	n = atomic_load(&srv->inflight);
	if (n)
		log_warn("event=admin_stop_timeout requests=%u", n);
	return fd;
}

void admin_stop(struct admin_server *srv)
{
	MHD_socket fd;

	if (!srv)
		return;
	fd = drain(srv);
	/* Waits for the threads; then the quiesced socket may be closed. */
	MHD_stop_daemon(srv->daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	server_free(srv);
	log_info("event=admin_stopped");
}
