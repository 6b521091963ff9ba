/*
 * test_admin.c - the admin REST API over real HTTP, against a real ferryd on
 * a fresh, migrated PostgreSQL database.
 *
 * One daemon serves the whole group (group setup/teardown); each test uses
 * users of its own so that tests do not see each other's devices. The
 * daemon runs with [admin] max_body = 1k so that 413 is cheap to provoke.
 * Bodies are checked by parsing them with jansson, not by matching text;
 * only error messages are matched by substring. Every answer is also held
 * against admin/openapi.yaml by the harness (th_http()), and
 * test_every_route calls each operation the document has, with and
 * without the token, with a body over the limit and with another method.
 *
 * (test_stop_finishes_requests, test_user_settings_survive_restart and
 * test_queues_live_and_disconnect start and stop daemons of their own; the
 * last one with a device gateway, on a database of its own, for the store's
 * queue counters and a raw device to disconnect.) The user settings tests also call the
 * registry in-process (queue_device_auth(), what the gateway's handshake
 * reads) and look at the user_settings table through libpq.
 *
 * Teardown stops the daemon with SIGTERM and requires exit status 0, which
 * under ASan includes "no leaks", so admin_stop() freeing everything is
 * tested too. The last test reads the daemon's log and checks that no
 * secret reached it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "gateway/proto.h"
#include "queue/queue.h"
#include "tests/integration/harness.h"
#include "tests/integration/rawdev.h"
#include "common/banned.h"

#define TOKEN "admin-test-token-7f3a"
#define APNS_TOKEN "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"
#define FCM_TOKEN "fcm-token:APA91bH_example-0123456789"
#define MAX_BODY 1024

struct ctx {
	char *conninfo;
	struct th_ferryd d;
	char secret[64]; /* one device secret, to look for in the log */
};

/* ---- helpers ---- */

/* th_ferryd_config() with max_body = 1k added to its [admin] section. */
static char *admin_config(const char *conninfo, int port)
{
	char *base = th_ferryd_config(conninfo, port, TOKEN);
	const char *at = strstr(base, "[admin]\n");
	static const char extra[] = "max_body = 1k\n";
	size_t head, len = strlen(base);
	char *text;

	assert_non_null(at);
	head = (size_t)(at - base) + strlen("[admin]\n");
	text = malloc(len + sizeof(extra));
	assert_non_null(text);
	memcpy(text, base, head);
	memcpy(text + head, extra, sizeof(extra) - 1);
	memcpy(text + head + sizeof(extra) - 1, base + head, len - head + 1);
	free(base);
	return text;
}

static void url_of(const struct ctx *c, const char *path, char *url, size_t len)
{
	int n = snprintf(url, len, "%s%s", c->d.admin_url, path);

	assert_true(n > 0 && (size_t)n < len);
}

/* @method @path (below the daemon's URL) with the right token. */
static void request(struct ctx *c, struct th_response *r, const char *method, const char *path,
		    const char *body)
{
	char url[1024];

	url_of(c, path, url, sizeof(url));
	th_http(r, method, url, TOKEN, body);
}

/* The body as JSON; fails the test unless it is JSON with an application/json type. */
static json_t *body_json(const struct th_response *r)
{
	json_error_t jerr;
	json_t *j;

	assert_non_null(r->content_type);
	assert_string_equal(r->content_type, "application/json");
	j = json_loads(r->body, 0, &jerr);
	if (!j)
		fail_msg("response is not JSON (%s): %s", jerr.text, r->body);
	return j;
}

static const char *str_field(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		fail_msg("field '%s' is missing or not a string", key);
	return json_string_value(v);
}

/* An error reply: @status, the error object with @code, a message containing @needle. */
static void assert_error(const struct th_response *r, long status, const char *code,
			 const char *needle)
{
	json_t *j, *err;

	if (r->status != status)
		fail_msg("expected status %ld, got %ld: %s", status, r->status, r->body);
	j = body_json(r);
	err = json_object_get(j, "error");
	assert_true(json_is_object(err));
	assert_int_equal(json_object_size(j), 1);
	assert_int_equal(json_object_size(err), 2);
	assert_string_equal(str_field(err, "code"), code);
	if (needle && !strstr(str_field(err, "message"), needle))
		fail_msg("message '%s' does not mention '%s'", str_field(err, "message"), needle);
	json_decref(j);
}

/* Send and expect an error in one go. */
static void expect_error(struct ctx *c, const char *method, const char *path, const char *body,
			 long status, const char *code, const char *needle)
{
	struct th_response r;

	request(c, &r, method, path, body);
	assert_error(&r, status, code, needle);
	th_response_release(&r);
}

/* "2026-11-28T15:05:49.123Z" */
static void assert_time(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	size_t i;

	assert_int_equal(strlen(s), strlen(shape));
	for (i = 0; shape[i]; i++) {
		if (shape[i] == 'd')
			assert_true(s[i] >= '0' && s[i] <= '9');
		else
			assert_int_equal(s[i], shape[i]);
	}
}

static void assert_device_id(const char *s)
{
	size_t i;

	assert_true(s[0] >= '1' && s[0] <= '9');
	for (i = 0; s[i]; i++)
		assert_true(s[i] >= '0' && s[i] <= '9');
	assert_true(i <= 19);
}

/* Create a device for @user; returns its id (malloc'ed); the secret into @secret if not NULL. */
static char *create_device(struct ctx *c, const char *user, const char *platform, char *secret,
			   size_t secret_len)
{
	char path[256], body[128], location[64];
	struct th_response r;
	char *loc, *id;
	json_t *j;

	snprintf(path, sizeof(path), "/v1/users/%s/devices", user);
	snprintf(body, sizeof(body), "{\"platform\":\"%s\"}", platform);
	request(c, &r, "POST", path, body);
	if (r.status != 201)
		fail_msg("device creation: %ld %s", r.status, r.body);
	j = body_json(&r);
	assert_int_equal(json_object_size(j), 4);
	id = strdup(str_field(j, "device_id"));
	assert_device_id(id);
	assert_string_equal(str_field(j, "user"), user);
	assert_string_equal(str_field(j, "platform"), platform);
	if (secret)
		snprintf(secret, secret_len, "%s", str_field(j, "secret"));
	loc = th_response_header(&r, "Location");
	assert_non_null(loc);
	snprintf(location, sizeof(location), "/v1/devices/%s", id);
	assert_string_equal(loc, location);
	free(loc);
	json_decref(j);
	th_response_release(&r);
	return id;
}

/* GET /v1/devices/@id, expecting 200; returns the device object. */
static json_t *get_device(struct ctx *c, const char *id)
{
	struct th_response r;
	char path[64];
	json_t *j;

	snprintf(path, sizeof(path), "/v1/devices/%s", id);
	request(c, &r, "GET", path, NULL);
	if (r.status != 200)
		fail_msg("GET %s: %ld %s", path, r.status, r.body);
	j = body_json(&r);
	th_response_release(&r);
	return j;
}

static int count_rows(const char *conninfo, const char *sql)
{
	PGconn *conn = th_pg_connect(conninfo);
	PGresult *res = th_pg_exec(conn, sql);
	int n = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);

	PQclear(res);
	PQfinish(conn);
	return n;
}

/* A TCP connection to 127.0.0.1:@port that gives up reading after 10 s. */
static int tcp_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 10, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		assert_true(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

/* Everything @fd delivers until EOF (or the read timeout), malloc'ed. */
static char *recv_all(int fd)
{
	size_t len = 0;
	char *s = NULL, chunk[4096];
	ssize_t r;

	while ((r = recv(fd, chunk, sizeof(chunk), 0)) > 0) {
		s = realloc(s, len + (size_t)r + 1);
		assert_non_null(s);
		memcpy(s + len, chunk, (size_t)r);
		len += (size_t)r;
	}
	s = s ? s : calloc(1, 1);
	assert_non_null(s);
	s[len] = '\0';
	return s;
}

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&t, NULL);
}

/* Everything in the file at @path, malloc'ed ("" when it cannot be read). */
static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t len = 0, n;
	char *s = calloc(1, 1), chunk[4096];

	assert_non_null(s);
	while (f && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		s = realloc(s, len + n + 1);
		assert_non_null(s);
		memcpy(s + len, chunk, n);
		len += n;
		s[len] = '\0';
	}
	if (f)
		fclose(f);
	return s;
}

/* Wait up to 10 s for @needle in the log of @d. */
static void wait_for_log(const struct th_ferryd *d, const char *needle)
{
	for (int i = 0; i < 200; i++) {
		char *log = read_text(d->log_path);
		int found = strstr(log, needle) != NULL;

		free(log);
		if (found)
			return;
		sleep_ms(50);
	}
	fail_msg("'%s' did not appear in %s", needle, d->log_path);
}

/* ---- group fixtures ---- */

static int group_setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	const char *const migrate[] = { "migrate", NULL };
	int port = th_free_port();
	char *text, *path;

	assert_non_null(c);
	c->conninfo = th_db_new("admin");
	text = admin_config(c->conninfo, port);
	path = th_write_file("admin-migrate.ini", text);
	assert_int_equal(th_ferryd_cmd(path, migrate, NULL), 0);
	unlink(path);
	free(path);
	th_ferryd_start(&c->d, text, port);
	free(text);
	*state = c;
	return 0;
}

static int group_teardown(void **state)
{
	struct ctx *c = *state;
	int status = th_ferryd_stop(&c->d, SIGTERM);

	free(c->conninfo);
	free(c);
	if (status != 0)
		fprintf(stderr, "ferryd exited with status %d\n", status);
	return status == 0 ? 0 : -1;
}

/* ---- tests ---- */

static void test_health_without_token(void **state)
{
	struct ctx *c = *state;
	struct th_response r;
	char url[256];
	json_t *j;

	url_of(c, "/healthz", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	assert_int_equal(r.status, 200);
	j = body_json(&r);
	assert_int_equal(json_object_size(j), 1);
	assert_string_equal(str_field(j, "status"), "ok");
	json_decref(j);
	th_response_release(&r);

	url_of(c, "/readyz", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	assert_int_equal(r.status, 200);
	j = body_json(&r);
	assert_string_equal(str_field(j, "status"), "ready");
	assert_string_equal(str_field(json_object_get(j, "checks"), "database"), "ok");
	assert_string_equal(str_field(json_object_get(j, "checks"), "listeners"), "ok");
	assert_string_equal(str_field(json_object_get(j, "checks"), "store"), "ok");
	json_decref(j);
	th_response_release(&r);

	url_of(c, "/healthz", url, sizeof(url));
	th_http(&r, "HEAD", url, NULL, NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);
}

static void expect_unauthorized(struct th_response *r)
{
	char *www = th_response_header(r, "WWW-Authenticate");

	assert_error(r, 401, "unauthorized", NULL);
	assert_non_null(www);
	assert_string_equal(www, "Bearer");
	free(www);
	th_response_release(r);
}

static void test_auth_required(void **state)
{
	struct ctx *c = *state;
	struct th_response r;
	char url[256];

	url_of(c, "/v1/users/alice/devices", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	expect_unauthorized(&r);
	th_http(&r, "GET", url, "wrong-token", NULL);
	expect_unauthorized(&r);
	th_http(&r, "GET", url, TOKEN "x", NULL);
	expect_unauthorized(&r);
	th_http_hdr(&r, "GET", url, "Authorization: Basic YWRtaW46c2VjcmV0", NULL);
	expect_unauthorized(&r);
	th_http_hdr(&r, "GET", url, "Authorization: Bearer", NULL);
	expect_unauthorized(&r);

	/* Auth comes before the body is looked at, and before routing. */
	th_http(&r, "POST", url, NULL, "{\"platform\":\"ios\"}");
	expect_unauthorized(&r);
	th_http(&r, "POST", url, "wrong-token", "not json");
	expect_unauthorized(&r);
	url_of(c, "/v1/no/such/route", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	expect_unauthorized(&r);

	/* The scheme name is case-insensitive. */
	url_of(c, "/v1/users/alice/devices", url, sizeof(url));
	th_http_hdr(&r, "GET", url, "Authorization: bearer " TOKEN, NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);

	/* A token in the query string is refused, even with a good header,
	 * and the log keeps the path without the query. */
	url_of(c, "/v1/stats?access_token=" TOKEN, url, sizeof(url));
	th_http(&r, "GET", url, TOKEN, NULL);
	assert_error(&r, 401, "unauthorized", "never in the query string");
	th_response_release(&r);
	url_of(c, "/v1/users/alice/devices?Token=x", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	assert_error(&r, 401, "unauthorized", "query parameter 'token'");
	th_response_release(&r);
	url_of(c, "/healthz?token=x", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	assert_int_equal(r.status, 200); /* needs no token: nothing to refuse */
	th_response_release(&r);
}

static void test_device_create_list_get(void **state)
{
	struct ctx *c = *state;
	char secret[64];
	struct th_response r;
	json_t *j, *devs, *dev;
	char *id;
	size_t i;

	id = create_device(c, "alice", "ios", secret, sizeof(secret));
	assert_int_equal(strlen(secret), 43);
	for (i = 0; secret[i]; i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789-_",
				       secret[i]));
	snprintf(c->secret, sizeof(c->secret), "%s", secret);

	request(c, &r, "GET", "/v1/users/alice/devices", NULL);
	assert_int_equal(r.status, 200);
	j = body_json(&r);
	assert_string_equal(str_field(j, "user"), "alice");
	devs = json_object_get(j, "devices");
	assert_true(json_is_array(devs));
	assert_int_equal(json_array_size(devs), 1);
	dev = json_array_get(devs, 0);
	assert_string_equal(str_field(dev, "device_id"), id);
	assert_null(json_object_get(dev, "secret"));
	assert_null(strstr(r.body, secret));
	json_decref(j);
	th_response_release(&r);

	j = get_device(c, id);
	assert_string_equal(str_field(j, "device_id"), id);
	assert_string_equal(str_field(j, "user"), "alice");
	assert_string_equal(str_field(j, "platform"), "ios");
	assert_time(str_field(j, "created"));
	assert_true(json_is_null(json_object_get(j, "last_seen")));
	assert_true(json_is_null(json_object_get(j, "push")));
	assert_null(json_object_get(j, "secret"));
	json_decref(j);

	/* An unknown user has no devices, which is not an error. */
	request(c, &r, "GET", "/v1/users/nobody-here/devices", NULL);
	assert_int_equal(r.status, 200);
	j = body_json(&r);
	assert_int_equal(json_array_size(json_object_get(j, "devices")), 0);
	json_decref(j);
	th_response_release(&r);
	free(id);
}

static void test_invalid_user(void **state)
{
	struct ctx *c = *state;
	char path[256];

	expect_error(c, "POST", "/v1/users/a%20b/devices", "{\"platform\":\"ios\"}", 400,
		     "bad_request", "user 'a b' is invalid");
	expect_error(c, "GET", "/v1/users/a%20b/devices", NULL, 400, "bad_request",
		     "user 'a b' is invalid");
	snprintf(path, sizeof(path), "/v1/users/%065d/devices", 0);
	expect_error(c, "POST", path, "{\"platform\":\"ios\"}", 400, "bad_request", "is invalid");
	expect_error(c, "GET", path, NULL, 400, "bad_request", "is invalid");
	expect_error(c, "POST", "/v1/users//devices", "{\"platform\":\"ios\"}", 400, "bad_request",
		     "user '' is invalid");
	expect_error(c, "GET", "/v1/users/a%2Fb/devices", NULL, 400, "bad_request",
		     "user 'a/b' is invalid");
	expect_error(c, "GET", "/v1/users/a%00b/devices", NULL, 400, "bad_request",
		     "percent-escape");
	expect_error(c, "GET", "/v1/users/a%zzb/devices", NULL, 400, "bad_request",
		     "percent-escape");
}

static void test_bad_request_bodies(void **state)
{
	struct ctx *c = *state;
	const char *p = "/v1/users/bodies/devices";

	expect_error(c, "POST", p, "{\"platform\":\"nokia\"}", 400, "bad_request",
		     "field 'platform' must be one of ios, android, desktop, web");
	expect_error(c, "POST", p, "{\"platform\":\"ios\"", 400, "bad_request", "invalid JSON");
	expect_error(c, "POST", p, "{platform: ios}", 400, "bad_request", "invalid JSON");
	expect_error(c, "POST", p, "[\"ios\"]", 400, "bad_request", "must be a JSON object");
	expect_error(c, "POST", p, "\"ios\"", 400, "bad_request", "must be a JSON object");
	expect_error(c, "POST", p, "{\"platform\":\"ios\",\"x\":1}", 400, "bad_request",
		     "unknown field 'x'");
	expect_error(c, "POST", p, "{\"platform\":7}", 400, "bad_request",
		     "field 'platform' must be a string");
	expect_error(c, "POST", p, "{}", 400, "bad_request", "field 'platform' is required");
	expect_error(c, "POST", p, "{\"platform\":\"ios\",\"platform\":\"web\"}", 400,
		     "bad_request", "duplicate");
	expect_error(c, "POST", p, "", 400, "bad_request", "empty");
}

static void test_body_too_large(void **state)
{
	struct ctx *c = *state;
	struct th_response r;
	char url[256], *body = malloc(2 * MAX_BODY + 32);

	assert_non_null(body);
	snprintf(body, 2 * MAX_BODY + 32, "{\"platform\":\"%0*d\"}", 2 * MAX_BODY, 0);
	expect_error(c, "POST", "/v1/users/big/devices", body, 413, "payload_too_large",
		     "max_body");
	/* Without the token, the answer is 401 whatever the size. */
	url_of(c, "/v1/users/big/devices", url, sizeof(url));
	th_http(&r, "POST", url, NULL, body);
	expect_unauthorized(&r);
	/* The daemon is still fine, and nothing was created. */
	request(c, &r, "GET", "/v1/users/big/devices", NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);
	free(body);
}

static void test_routes_and_methods(void **state)
{
	struct ctx *c = *state;
	struct th_response r;
	char *allow;

	expect_error(c, "GET", "/nope", NULL, 404, "not_found", "'/nope'");
	expect_error(c, "GET", "/v1/nope", NULL, 404, "not_found", "'/v1/nope'");
	expect_error(c, "GET", "/v1/devices/1/push/x", NULL, 404, "not_found", NULL);

	request(c, &r, "PATCH", "/v1/devices/1", "{}");
	assert_error(&r, 405, "method_not_allowed", "PATCH");
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "GET, HEAD, DELETE");
	free(allow);
	th_response_release(&r);

	request(c, &r, "POST", "/healthz", NULL);
	assert_error(&r, 405, "method_not_allowed", NULL);
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "GET, HEAD");
	free(allow);
	th_response_release(&r);

	request(c, &r, "GET", "/v1/devices/1/push", NULL);
	assert_error(&r, 405, "method_not_allowed", NULL);
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "PUT, DELETE");
	free(allow);
	th_response_release(&r);

	expect_error(c, "GET", "/v1/devices/abc", NULL, 400, "bad_request",
		     "device id 'abc' is invalid");
	expect_error(c, "GET", "/v1/devices/0", NULL, 400, "bad_request", "device id '0'");
	expect_error(c, "GET", "/v1/devices/-1", NULL, 400, "bad_request", "device id '-1'");
	expect_error(c, "GET", "/v1/devices/01", NULL, 400, "bad_request", "device id '01'");
	expect_error(c, "GET", "/v1/devices/9223372036854775808", NULL, 400, "bad_request",
		     "is invalid");
	expect_error(c, "GET", "/v1/devices/9223372036854775807", NULL, 404, "not_found",
		     "device '9223372036854775807' not found");
}

/*
 * One call of every operation of admin/openapi.yaml, with the status this
 * daemon (no device gateway) answers it with; test_every_route checks that
 * the list covers the document.
 */
static const struct call {
	const char *method, *path, *tmpl, *body;
	long status;
} calls[] = {
	{ "GET", "/healthz", "/healthz", NULL, 200 },
	{ "GET", "/readyz", "/readyz", NULL, 200 },
	{ "POST", "/v1/users/everyroute/devices", "/v1/users/{user}/devices",
	  "{\"platform\":\"web\"}", 201 },
	{ "GET", "/v1/users/everyroute/devices", "/v1/users/{user}/devices", NULL, 200 },
	{ "GET", "/v1/users/everyroute/settings", "/v1/users/{user}/settings", NULL, 200 },
	{ "PUT", "/v1/users/everyroute/settings", "/v1/users/{user}/settings",
	  "{\"read_receipts\":true}", 200 },
	{ "GET", "/v1/devices/987654321", "/v1/devices/{device}", NULL, 404 },
	{ "DELETE", "/v1/devices/987654321", "/v1/devices/{device}", NULL, 404 },
	{ "PUT", "/v1/devices/987654321/push", "/v1/devices/{device}/push",
	  "{\"provider\":\"fcm\",\"token\":\"t\"}", 404 },
	{ "DELETE", "/v1/devices/987654321/push", "/v1/devices/{device}/push", NULL, 404 },
	{ "POST", "/v1/devices/987654321/disconnect", "/v1/devices/{device}/disconnect", NULL,
	  404 },
	{ "POST", "/v1/messages", "/v1/messages",
	  "{\"to_user\":\"everyroute\",\"payload_b64\":\"eA==\"}", 503 },
	{ "POST", "/v1/push", "/v1/push", "{\"devices\":[1]}", 503 },
	{ "GET", "/v1/stats", "/v1/stats", NULL, 200 },
	{ "GET", "/v1/queues", "/v1/queues", NULL, 200 },
	{ "POST", "/v1/drain", "/v1/drain", NULL, 409 },
	{ "GET", "/v1/drain", "/v1/drain", NULL, 200 },
	{ "GET", "/metrics", "/metrics", NULL, 200 },
	{ "GET", "/ui", "/ui", NULL, 200 },
};

#define NCALLS (sizeof(calls) / sizeof(calls[0]))

/* Fail unless every operation of the document has its line in calls[]. */
static void assert_calls_cover_document(void)
{
	static const char *const methods[] = { "get",	  "put",  "post",  "delete",
					       "options", "head", "patch", "trace" };
	json_t *paths = json_object_get((json_t *)th_openapi_doc(), "paths"), *item;
	const char *tmpl;

	assert_non_null(paths);
	json_object_foreach(paths, tmpl, item)
	{
		for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
			size_t i;

			if (!json_object_get(item, methods[m]))
				continue;
			for (i = 0; i < NCALLS; i++)
				if (!strcmp(calls[i].tmpl, tmpl) &&
				    !strcasecmp(calls[i].method, methods[m]))
					break;
			if (i == NCALLS)
				fail_msg("%s %s of admin/openapi.yaml has no line in calls[]",
					 methods[m], tmpl);
		}
	}
}

/*
 * Every route, each answer held against admin/openapi.yaml by th_http():
 * its own answer, and those that come before it (401 without the token,
 * 413 for a body over max_body, 405 for another method), GET's also to
 * HEAD.
 */
static void test_every_route(void **state)
{
	struct ctx *c = *state;
	char url[256], *big = malloc(2 * MAX_BODY + 32);

	assert_non_null(big);
	snprintf(big, 2 * MAX_BODY + 32, "{\"x\":\"%0*d\"}", 2 * MAX_BODY, 0);
	assert_calls_cover_document();
	for (size_t i = 0; i < NCALLS; i++) {
		const struct call *k = &calls[i];
		int auth = strcmp(k->path, "/healthz") && strcmp(k->path, "/readyz") &&
			   strcmp(k->path, "/ui");
		struct th_response r;

		request(c, &r, k->method, k->path, k->body);
		if (r.status != k->status)
			fail_msg("%s %s: expected %ld, got %ld: %s", k->method, k->path, k->status,
				 r.status, r.body);
		th_response_release(&r);
		if (!strcmp(k->method, "GET")) {
			request(c, &r, "HEAD", k->path, NULL);
			assert_int_equal(r.status, k->status);
			th_response_release(&r);
		}
		url_of(c, k->path, url, sizeof(url));
		if (auth) {
			th_http(&r, k->method, url, NULL, k->body);
			expect_unauthorized(&r);
			th_http(&r, k->method, url, "wrong-token", k->body);
			expect_unauthorized(&r);
		}
		request(c, &r, k->method, k->path, big);
		assert_error(&r, 413, "payload_too_large", "max_body");
		th_response_release(&r);
		request(c, &r, "PATCH", k->path, NULL);
		assert_error(&r, 405, "method_not_allowed", "PATCH");
		th_response_release(&r);
	}
	free(big);
}

static void assert_push(json_t *dev, const char *provider, const char *token, const char *app,
			const char *topic, const char *environment)
{
	json_t *push = json_object_get(dev, "push");
	char prefix[32];

	assert_true(json_is_object(push));
	assert_string_equal(str_field(push, "provider"), provider);
	snprintf(prefix, sizeof(prefix), "%.8s\xe2\x80\xa6", token);
	assert_string_equal(str_field(push, "token_prefix"), prefix);
	assert_null(json_object_get(push, "token"));
	if (app)
		assert_string_equal(str_field(push, "app"), app);
	else
		assert_true(json_is_null(json_object_get(push, "app")));
	if (topic)
		assert_string_equal(str_field(push, "topic"), topic);
	else
		assert_true(json_is_null(json_object_get(push, "topic")));
	assert_string_equal(str_field(push, "environment"), environment);
	assert_time(str_field(push, "updated"));
}

static void test_push_token(void **state)
{
	struct ctx *c = *state;
	char *id = create_device(c, "pusher", "android", NULL, 0);
	char path[64];
	struct th_response r;
	json_t *j;

	snprintf(path, sizeof(path), "/v1/devices/%s/push", id);
	request(c, &r, "PUT", path,
		"{\"provider\":\"apns\",\"token\":\"" APNS_TOKEN "\",\"app\":\"main\","
		"\"topic\":\"com.example.app\",\"environment\":\"sandbox\"}");
	assert_int_equal(r.status, 200);
	assert_null(strstr(r.body, APNS_TOKEN));
	j = body_json(&r);
	assert_string_equal(str_field(j, "device_id"), id);
	assert_push(j, "apns", APNS_TOKEN, "main", "com.example.app", "sandbox");
	json_decref(j);
	th_response_release(&r);

	snprintf(path, sizeof(path), "/v1/devices/%s", id);
	request(c, &r, "GET", path, NULL);
	assert_int_equal(r.status, 200);
	assert_null(strstr(r.body, APNS_TOKEN));
	th_response_release(&r);

	snprintf(path, sizeof(path), "/v1/devices/%s/push", id);
	request(c, &r, "PUT", path, "{\"provider\":\"fcm\",\"token\":\"" FCM_TOKEN "\"}");
	assert_int_equal(r.status, 200);
	assert_null(strstr(r.body, FCM_TOKEN));
	j = body_json(&r);
	assert_push(j, "fcm", FCM_TOKEN, NULL, NULL, "production");
	json_decref(j);
	th_response_release(&r);

	request(c, &r, "DELETE", path, NULL);
	assert_int_equal(r.status, 204);
	assert_string_equal(r.body, "");
	th_response_release(&r);
	j = get_device(c, id);
	assert_true(json_is_null(json_object_get(j, "push")));
	json_decref(j);
	free(id);
}

/* PUT @body to @path: a 400 "invalid JSON" naming @problem, quoting nothing of "SECRETjs". */
static void expect_invalid_json(struct ctx *c, const char *path, const char *body,
				const char *problem)
{
	struct th_response r;

	request(c, &r, "PUT", path, body);
	assert_error(&r, 400, "bad_request", "invalid JSON");
	assert_error(&r, 400, "bad_request", problem);
	assert_error(&r, 400, "bad_request", " at line 1 column ");
	if (strstr(r.body, "SECRETjs"))
		fail_msg("the token is quoted in: %s", r.body);
	th_response_release(&r);
}

static void test_push_token_invalid(void **state)
{
	struct ctx *c = *state;
	char *id = create_device(c, "pusher2", "ios", NULL, 0);
	char path[64];

	snprintf(path, sizeof(path), "/v1/devices/%s/push", id);
	expect_error(c, "PUT", path, "{\"provider\":\"apns\",\"token\":\"not-hex\"}", 400,
		     "bad_request", "hexadecimal");
	expect_error(c, "PUT", path,
		     "{\"provider\":\"fcm\",\"token\":\"" FCM_TOKEN "\",\"topic\":\"t\"}", 400,
		     "bad_request", "field 'topic'");
	expect_error(c, "PUT", path,
		     "{\"provider\":\"fcm\",\"token\":\"" FCM_TOKEN
		     "\",\"environment\":\"sandbox\"}",
		     400, "bad_request", "field 'environment'");
	expect_error(c, "PUT", path, "{\"provider\":\"fcm\",\"token\":\"a b\"}", 400, "bad_request",
		     "field 'token'");
	expect_error(c, "PUT", path, "{\"provider\":\"fcm\",\"token\":\"\"}", 400, "bad_request",
		     "field 'token'");
	expect_error(c, "PUT", path, "{\"provider\":\"fcm\"}", 400, "bad_request",
		     "field 'token' is required");
	expect_error(c, "PUT", path, "{\"provider\":\"gcm\",\"token\":\"abc\"}", 400, "bad_request",
		     "field 'provider' must be one of apns, fcm");
	expect_error(c, "PUT", path, "{\"provider\":\"apns\",\"token\":\"ab\",\"app\":\"a b\"}",
		     400, "bad_request", "field 'app'");
	expect_error(c, "PUT", path, "{\"provider\":\"apns\",\"token\":\"ab\",\"tokn\":\"ab\"}",
		     400, "bad_request", "unknown field 'tokn'");
	expect_error(c, "PUT", path, "{\"provider\":\"apns\",\"token\":12}", 400, "bad_request",
		     "must be a string");
	/* Nothing of a refused token leaks into the message. */
	expect_error(c, "PUT", path, "{\"provider\":\"apns\",\"token\":\"SECRETzz\"}", 400,
		     "bad_request", "hexadecimal");
	/* Not even when the JSON around it is broken (the parser quotes its input). */
	expect_invalid_json(c, path, "{\"provider\":\"fcm\",\"token\":\"SECRETjs\tx\"}",
			    "control character");
	expect_invalid_json(c, path, "{\"provider\":\"fcm\",\"token\":\"SECRETjs", "end");
	expect_invalid_json(c, path, "{\"provider\":\"fcm\",\"token\":\"SECRETjs\\q\"}",
			    "invalid escape");

	expect_error(c, "PUT", "/v1/devices/987654321/push",
		     "{\"provider\":\"fcm\",\"token\":\"" FCM_TOKEN "\"}", 404, "not_found",
		     "device '987654321' not found");
	expect_error(c, "DELETE", "/v1/devices/987654321/push", NULL, 404, "not_found",
		     "device '987654321' not found");
	free(id);
}

static void test_device_delete(void **state)
{
	struct ctx *c = *state;
	char *id = create_device(c, "leaver", "desktop", NULL, 0);
	char path[64], sql[512];
	struct th_response r;
	PGconn *conn;

	snprintf(sql, sizeof(sql),
		 "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		 "client_id, kind, payload, expires) VALUES "
		 "(%s, 1, 'bob', 0, 1, 'message', '\\x01'::bytea, now() + interval '1 day'), "
		 "(%s, 2, 'bob', 0, 2, 'message', '\\x02'::bytea, now() + interval '1 day')",
		 id, id);
	conn = th_pg_connect(c->conninfo);
	PQclear(th_pg_exec(conn, sql));
	PQfinish(conn);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM envelopes WHERE recipient_device = %s",
		 id);
	assert_int_equal(count_rows(c->conninfo, sql), 2);

	snprintf(path, sizeof(path), "/v1/devices/%s", id);
	request(c, &r, "DELETE", path, "ignored body");
	assert_int_equal(r.status, 204);
	assert_string_equal(r.body, "");
	th_response_release(&r);
	assert_int_equal(count_rows(c->conninfo, sql), 0);

	expect_error(c, "GET", path, NULL, 404, "not_found", "not found");
	expect_error(c, "DELETE", path, NULL, 404, "not_found", "not found");
	request(c, &r, "GET", "/v1/users/leaver/devices", NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);
	free(id);
}

/* ---- queues and disconnect ---- */

/* GET @path (the group's daemon): 200 with {"queues": [...]}; returns the array (a reference). */
static json_t *get_queues(struct ctx *c, const char *path)
{
	struct th_response r;
	json_t *j, *qs;

	request(c, &r, "GET", path, NULL);
	if (r.status != 200)
		fail_msg("GET %s: %ld %s", path, r.status, r.body);
	j = body_json(&r);
	assert_int_equal(json_object_size(j), 2);
	assert_true(json_is_object(json_object_get(j, "total")));
	qs = json_object_get(j, "queues");
	assert_true(json_is_array(qs));
	json_incref(qs);
	json_decref(j);
	th_response_release(&r);
	return qs;
}

/* Queue @i of @qs is device @id of @user with @pending; its oldest_created @oldest (NULL: null). */
static void assert_queue(json_t *qs, size_t i, const char *id, const char *user, json_int_t pending,
			 const char *oldest)
{
	json_t *q = json_array_get(qs, i), *o;

	assert_true(json_is_object(q));
	assert_int_equal(json_object_size(q), 4);
	assert_string_equal(str_field(q, "device_id"), id);
	assert_string_equal(str_field(q, "user"), user);
	assert_true(json_is_integer(json_object_get(q, "pending")));
	assert_int_equal(json_integer_value(json_object_get(q, "pending")), pending);
	o = json_object_get(q, "oldest_created");
	if (oldest)
		assert_string_equal(str_field(q, "oldest_created"), oldest);
	else
		assert_true(json_is_null(o));
}

static void set_pending(struct ctx *c, const char *id, int n)
{
	PGconn *conn = th_pg_connect(c->conninfo);
	char sql[128];

	snprintf(sql, sizeof(sql), "UPDATE devices SET pending = %d WHERE id = %s", n, id);
	PQclear(th_pg_exec(conn, sql));
	PQfinish(conn);
}

/*
 * The order, the limit and the shape, on counters set by hand (the store
 * keeps them in real life: test_queues_live). Ties go by device id; the
 * head of a queue is its lowest seq, whatever the creation times say.
 */
static void test_queues(void **state)
{
	struct ctx *c = *state;
	char *a = create_device(c, "deep1", "ios", NULL, 0);
	char *b = create_device(c, "deep2", "web", NULL, 0);
	char *d = create_device(c, "deep3", "android", NULL, 0);
	char *e = create_device(c, "deep3", "ios", NULL, 0);
	char sql[512];
	PGconn *conn;
	json_t *qs;

	qs = get_queues(c, "/v1/queues");
	assert_int_equal(json_array_size(qs), 0);
	json_decref(qs);

	snprintf(sql, sizeof(sql),
		 "INSERT INTO envelopes (recipient_device, seq, sender_user, sender_device, "
		 "client_id, kind, payload, created, expires) VALUES "
		 "(%s, 1, 'bob', 0, 1, 'message', '\\x01'::bytea, '2026-01-02 03:04:05.678+00', "
		 "now() + interval '1 day'), "
		 "(%s, 2, 'bob', 0, 2, 'message', '\\x02'::bytea, '2025-01-01 00:00:00+00', "
		 "now() + interval '1 day')",
		 b, b);
	conn = th_pg_connect(c->conninfo);
	PQclear(th_pg_exec(conn, sql));
	PQfinish(conn);
	set_pending(c, a, 5);
	set_pending(c, b, 2);
	set_pending(c, d, 7);
	set_pending(c, e, 5);

	qs = get_queues(c, "/v1/queues");
	assert_int_equal(json_array_size(qs), 4);
	assert_queue(qs, 0, d, "deep3", 7, NULL);
	assert_queue(qs, 1, a, "deep1", 5, NULL); /* a and e tie: the lower id first */
	assert_queue(qs, 2, e, "deep3", 5, NULL);
	assert_queue(qs, 3, b, "deep2", 2, "2026-01-02T03:04:05.678Z");
	json_decref(qs);

	qs = get_queues(c, "/v1/queues?top=2");
	assert_int_equal(json_array_size(qs), 2);
	assert_queue(qs, 0, d, "deep3", 7, NULL);
	assert_queue(qs, 1, a, "deep1", 5, NULL);
	json_decref(qs);
	qs = get_queues(c, "/v1/queues?top=1000");
	assert_int_equal(json_array_size(qs), 4);
	json_decref(qs);
	qs = get_queues(c, "/v1/queues?top=1");
	assert_int_equal(json_array_size(qs), 1);
	json_decref(qs);

	/* Emptied queues drop out. */
	set_pending(c, d, 0);
	set_pending(c, a, 0);
	set_pending(c, e, 0);
	set_pending(c, b, 0);
	qs = get_queues(c, "/v1/queues");
	assert_int_equal(json_array_size(qs), 0);
	json_decref(qs);
	free(a);
	free(b);
	free(d);
	free(e);
}

static void test_queues_invalid(void **state)
{
	struct ctx *c = *state;
	struct th_response r;
	char url[256], *allow;

	expect_error(c, "GET", "/v1/queues?top=0", NULL, 400, "bad_request",
		     "query parameter 'top' must be a whole number from 1 to 1000, not '0'");
	expect_error(c, "GET", "/v1/queues?top=1001", NULL, 400, "bad_request", "not '1001'");
	expect_error(c, "GET", "/v1/queues?top=abc", NULL, 400, "bad_request", "not 'abc'");
	expect_error(c, "GET", "/v1/queues?top=-1", NULL, 400, "bad_request", "not '-1'");
	expect_error(c, "GET", "/v1/queues?top=020", NULL, 400, "bad_request", "not '020'");
	expect_error(c, "GET", "/v1/queues?top=5x", NULL, 400, "bad_request", "not '5x'");
	expect_error(c, "GET", "/v1/queues?top=99999999999999999999", NULL, 400, "bad_request",
		     "must be a whole number");
	expect_error(c, "GET", "/v1/queues?top=", NULL, 400, "bad_request", "not ''");
	expect_error(c, "GET", "/v1/queues?top", NULL, 400, "bad_request", "not ''");
	expect_error(c, "GET", "/v1/queues?top=%31", NULL, 400, "bad_request", "not '%31'");
	expect_error(c, "GET", "/v1/queues?limit=5", NULL, 400, "bad_request",
		     "unknown query parameter 'limit'");
	expect_error(c, "GET", "/v1/queues?top=5&top=6", NULL, 400, "bad_request",
		     "query parameter 'top' is given twice");
	expect_error(c, "GET", "/v1/queues?top=1&a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1", NULL, 400,
		     "bad_request", "too many query parameters: at most 8");

	/* Without the right token: 401, before the query is looked at. */
	url_of(c, "/v1/queues?top=0", url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	expect_unauthorized(&r);
	th_http(&r, "GET", url, "wrong-token", NULL);
	expect_unauthorized(&r);

	request(c, &r, "POST", "/v1/queues", "{}");
	assert_error(&r, 405, "method_not_allowed", "POST");
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "GET, HEAD");
	free(allow);
	th_response_release(&r);
	expect_error(c, "GET", "/v1/queues/1", NULL, 404, "not_found", NULL);
}

/* POST /v1/devices/@id/disconnect to daemon @d: 200 and {"disconnected": @want}. */
static void disconnect_at(const struct th_ferryd *d, const char *id, int want)
{
	struct th_response r;
	char url[256];
	json_t *j, *v;

	snprintf(url, sizeof(url), "%s/v1/devices/%s/disconnect", d->admin_url, id);
	th_http(&r, "POST", url, TOKEN, NULL);
	if (r.status != 200)
		fail_msg("POST %s: %ld %s", url, r.status, r.body);
	j = body_json(&r);
	assert_int_equal(json_object_size(j), 1);
	v = json_object_get(j, "disconnected");
	if (!json_is_boolean(v) || json_is_true(v) != want)
		fail_msg("POST %s: expected disconnected %s: %s", url, want ? "true" : "false",
			 r.body);
	json_decref(j);
	th_response_release(&r);
}

/* Without a device gateway no device is connected; the rest as everywhere. */
static void test_disconnect_invalid(void **state)
{
	struct ctx *c = *state;
	char *id = create_device(c, "unplugged", "ios", NULL, 0);
	struct th_response r;
	char path[64], url[256], *allow;

	disconnect_at(&c->d, id, 0);
	snprintf(path, sizeof(path), "/v1/devices/%s/disconnect", id);
	/* A body is ignored, as on every route that takes none. */
	request(c, &r, "POST", path, "{\"x\":1}");
	assert_int_equal(r.status, 200);
	th_response_release(&r);

	expect_error(c, "POST", "/v1/devices/9223372036854775807/disconnect", NULL, 404,
		     "not_found", "device '9223372036854775807' not found");
	expect_error(c, "POST", "/v1/devices/abc/disconnect", NULL, 400, "bad_request",
		     "device id 'abc' is invalid");
	expect_error(c, "POST", "/v1/devices/0/disconnect", NULL, 400, "bad_request",
		     "device id '0'");
	expect_error(c, "POST", "/v1/devices/01/disconnect", NULL, 400, "bad_request",
		     "device id '01'");

	url_of(c, path, url, sizeof(url));
	th_http(&r, "POST", url, NULL, NULL);
	expect_unauthorized(&r);
	th_http(&r, "POST", url, "wrong-token", NULL);
	expect_unauthorized(&r);

	request(c, &r, "GET", path, NULL);
	assert_error(&r, 405, "method_not_allowed", "GET");
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "POST");
	free(allow);
	th_response_release(&r);
	wait_for_log(&c->d, "event=admin_device_disconnected device=");
	free(id);
}

/* POST /v1/messages to device @id of daemon @d: it must be stored (the device is away). */
static void store_one(const struct th_ferryd *d, const char *id)
{
	struct th_response r;
	char url[256], body[128];
	json_t *j;

	snprintf(url, sizeof(url), "%s/v1/messages", d->admin_url);
	snprintf(body, sizeof(body), "{\"to_device\":\"%s\",\"payload_b64\":\"aGk=\"}", id);
	th_http(&r, "POST", url, TOKEN, body);
	if (r.status != 200)
		fail_msg("POST /v1/messages: %ld %s", r.status, r.body);
	j = body_json(&r);
	assert_string_equal(str_field(j, "status"), "stored");
	json_decref(j);
	th_response_release(&r);
}

/*
 * With a device gateway, on a database of its own: the store's counters
 * as GET /v1/queues shows them, and a connected device disconnected (ERROR
 * disconnected, then it logs in again). A daemon of its own.
 */
static void test_queues_live_and_disconnect(void **state)
{
	struct ctx c = { 0 };
	struct th_response r;
	struct rawdev *dev;
	char extra[256], ida[24], idb[24], idc[24], secret_c[64], *text, *path;
	int64_t a, b, cdev;
	int port = th_free_port(), gw_port = th_free_port();
	json_t *qs;

	c.conninfo = th_db_new("adminops");
	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\nworkers = 2\n\n[receipts]\ndelivered = off\n",
		 gw_port);
	text = th_ferryd_config_ex(c.conninfo, port, TOKEN, extra);
	path = th_write_file("admin-ops.ini", text);
	assert_int_equal(th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL), 0);
	th_ferryd_start(&c.d, text, port);
	th_ferryd_wait_ready(&c.d, 10000); /* the store connects in the background */
	th_device_create(&c.d, TOKEN, "qa", &a, secret_c);
	th_device_create(&c.d, TOKEN, "qb", &b, secret_c);
	th_device_create(&c.d, TOKEN, "qc", &cdev, secret_c);
	snprintf(ida, sizeof(ida), "%lld", (long long)a);
	snprintf(idb, sizeof(idb), "%lld", (long long)b);
	snprintf(idc, sizeof(idc), "%lld", (long long)cdev);

	store_one(&c.d, idb);
	store_one(&c.d, ida);
	store_one(&c.d, ida);
	store_one(&c.d, ida);
	qs = get_queues(&c, "/v1/queues");
	assert_int_equal(json_array_size(qs), 2);
	assert_queue(qs, 0, ida, "qa", 3, str_field(json_array_get(qs, 0), "oldest_created"));
	assert_time(str_field(json_array_get(qs, 0), "oldest_created"));
	assert_queue(qs, 1, idb, "qb", 1, str_field(json_array_get(qs, 1), "oldest_created"));
	assert_time(str_field(json_array_get(qs, 1), "oldest_created"));
	json_decref(qs);
	qs = get_queues(&c, "/v1/queues?top=1");
	assert_int_equal(json_array_size(qs), 1);
	assert_queue(qs, 0, ida, "qa", 3, str_field(json_array_get(qs, 0), "oldest_created"));
	json_decref(qs);

	/* A device that is away: nothing to close. */
	disconnect_at(&c.d, ida, 0);

	/* A connected one: ERROR disconnected, closed; then it logs in again. */
	dev = rawdev_new();
	rawdev_login(dev, gw_port, cdev, secret_c);
	disconnect_at(&c.d, idc, 1);
	rawdev_expect_error_close(dev, PROTO_ERR_DISCONNECTED);
	rawdev_close(dev);
	th_log_wait(&c.d, "event=admin_device_disconnected device=", 1);
	assert_true(th_log_count(&c.d, "connected=true") >= 1);
	rawdev_login(dev, gw_port, cdev, secret_c);
	disconnect_at(&c.d, idc, 1);
	rawdev_expect_error_close(dev, PROTO_ERR_DISCONNECTED);
	rawdev_free(dev);

	expect_error(&c, "POST", "/v1/devices/9223372036854775807/disconnect", NULL, 404,
		     "not_found", "not found");
	request(&c, &r, "GET", "/v1/queues?top=1", NULL);
	assert_int_equal(r.status, 200);
	th_response_release(&r);
	assert_int_equal(th_ferryd_stop(&c.d, SIGTERM), 0);
	unlink(path);
	free(path);
	free(text);
	free(c.conninfo);
}

/* ---- user settings ---- */

/* @method /v1/users/@user/settings with @body, to daemon @d: 200 and
 * exactly {"read_receipts": @want}. */
static void settings_at(const struct th_ferryd *d, const char *method, const char *user,
			const char *body, int want)
{
	struct th_response r;
	char url[256];
	json_t *j, *v;

	snprintf(url, sizeof(url), "%s/v1/users/%s/settings", d->admin_url, user);
	th_http(&r, method, url, TOKEN, body);
	if (r.status != 200)
		fail_msg("%s %s: %ld %s", method, url, r.status, r.body);
	j = body_json(&r);
	assert_int_equal(json_object_size(j), 1);
	v = json_object_get(j, "read_receipts");
	if (!json_is_boolean(v))
		fail_msg("%s %s: read_receipts is not a boolean: %s", method, url, r.body);
	if (json_is_true(v) != want)
		fail_msg("%s %s: expected read_receipts %s: %s", method, url,
			 want ? "true" : "false", r.body);
	json_decref(j);
	th_response_release(&r);
}

/* The same with the group's daemon. */
static void expect_settings(struct ctx *c, const char *method, const char *user, const char *body,
			    int want)
{
	settings_at(&c->d, method, user, body, want);
}

/* @user's user_settings row as SQL sees it: -1 without a row, else
 * read_receipts (0 or 1). */
static int stored_read_receipts(const struct ctx *c, const char *user)
{
	PGconn *conn = th_pg_connect(c->conninfo);
	const char *params[1] = { user };
	PGresult *res = PQexecParams(conn,
				     "SELECT read_receipts, updated IS NOT NULL FROM user_settings "
				     "WHERE user_id = $1",
				     1, NULL, params, NULL, NULL, 0);
	int v = -1;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("user_settings: %s", PQerrorMessage(conn));
	if (PQntuples(res) == 1) {
		assert_string_equal(PQgetvalue(res, 0, 1), "t");
		v = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	}
	PQclear(res);
	PQfinish(conn);
	return v;
}

/* What the gateway's handshake learns: queue_device_auth() with @secret
 * must succeed for device @id of @user; returns its read_receipts. */
static int auth_read_receipts(struct queue_registry *reg, const char *id, const char *secret,
			      const char *user)
{
	char who[QUEUE_USER_MAX + 1] = "";
	int rr = -1;

	assert_int_equal(
		queue_device_auth(reg, strtoll(id, NULL, 10), secret, strlen(secret), who, &rr),
		FERRY_OK);
	assert_string_equal(who, user);
	assert_true(rr == 0 || rr == 1);
	return rr;
}

static void test_user_settings(void **state)
{
	struct ctx *c = *state;
	struct queue_registry *reg = queue_registry_new(c->conninfo, 5, 1);
	struct queue_user_settings s;
	char secret[64], other_secret[64], who[QUEUE_USER_MAX + 1];
	char *id = create_device(c, "settler", "ios", secret, sizeof(secret));
	char *other = create_device(c, "settler2", "web", other_secret, sizeof(other_secret));
	int rr;

	assert_non_null(reg);
	/* Nothing written yet: the defaults, and no row. */
	expect_settings(c, "GET", "settler", NULL, 1);
	assert_int_equal(stored_read_receipts(c, "settler"), -1);
	assert_int_equal(auth_read_receipts(reg, id, secret, "settler"), 1);

	expect_settings(c, "PUT", "settler", "{\"read_receipts\":false}", 0);
	expect_settings(c, "GET", "settler", NULL, 0);
	assert_int_equal(stored_read_receipts(c, "settler"), 0);
	assert_int_equal(auth_read_receipts(reg, id, secret, "settler"), 0);
	assert_int_equal(queue_user_settings_get(reg, "settler", &s), FERRY_OK);
	assert_int_equal(s.read_receipts, 0);
	wait_for_log(&c->d, "event=admin_user_settings_set user=settler read_receipts=false");

	/* A wrong secret or an unknown device learns nothing: the default. */
	rr = -1;
	assert_int_equal(queue_device_auth(reg, strtoll(id, NULL, 10), "wrong", 5, who, &rr),
			 FERRY_EAUTH);
	assert_int_equal(rr, QUEUE_READ_RECEIPTS_DEFAULT);
	rr = -1;
	assert_int_equal(queue_device_auth(reg, 987654321, secret, strlen(secret), who, &rr),
			 FERRY_EAUTH);
	assert_int_equal(rr, QUEUE_READ_RECEIPTS_DEFAULT);
	/* NULL: the caller does not want the setting. */
	assert_int_equal(
		queue_device_auth(reg, strtoll(id, NULL, 10), secret, strlen(secret), who, NULL),
		FERRY_OK);

	/* Another user is not affected. */
	expect_settings(c, "GET", "settler2", NULL, 1);
	assert_int_equal(auth_read_receipts(reg, other, other_secret, "settler2"), 1);

	/* The same PUT again is harmless; then back on, and the row stays. */
	expect_settings(c, "PUT", "settler", "{\"read_receipts\":false}", 0);
	expect_settings(c, "PUT", "settler", "{ \"read_receipts\" : true }", 1);
	expect_settings(c, "GET", "settler", NULL, 1);
	assert_int_equal(stored_read_receipts(c, "settler"), 1);
	assert_int_equal(auth_read_receipts(reg, id, secret, "settler"), 1);
	assert_int_equal(queue_user_settings_get(reg, "settler", &s), FERRY_OK);
	assert_int_equal(s.read_receipts, 1);

	/* The registry alone: an upsert, and the defaults without a row. */
	s.read_receipts = 0;
	assert_int_equal(queue_user_settings_put(reg, "settler2", &s), FERRY_OK);
	assert_int_equal(auth_read_receipts(reg, other, other_secret, "settler2"), 0);
	expect_settings(c, "GET", "settler2", NULL, 0);
	assert_int_equal(queue_user_settings_get(reg, "settler-none", &s), FERRY_OK);
	assert_int_equal(s.read_receipts, QUEUE_READ_RECEIPTS_DEFAULT);

	/* A GET ignores a body, as every route that takes none. */
	expect_settings(c, "GET", "settler", "{\"read_receipts\":false}", 1);
	queue_registry_free(reg);
	free(id);
	free(other);
}

/*
 * A user without devices is not a 404 here, as for GET /v1/users/{user}/devices:
 * the defaults; settings written before the first device apply to it, and
 * stay after the last one is deleted.
 */
static void test_user_settings_without_devices(void **state)
{
	struct ctx *c = *state;
	struct queue_registry *reg = queue_registry_new(c->conninfo, 5, 1);
	char secret[64], path[64];
	struct th_response r;
	char *id;

	assert_non_null(reg);
	expect_settings(c, "GET", "nodevices", NULL, 1);
	assert_int_equal(stored_read_receipts(c, "nodevices"), -1);
	expect_settings(c, "PUT", "nodevices", "{\"read_receipts\":false}", 0);
	expect_settings(c, "GET", "nodevices", NULL, 0);

	id = create_device(c, "nodevices", "android", secret, sizeof(secret));
	assert_int_equal(auth_read_receipts(reg, id, secret, "nodevices"), 0);
	snprintf(path, sizeof(path), "/v1/devices/%s", id);
	request(c, &r, "DELETE", path, NULL);
	assert_int_equal(r.status, 204);
	th_response_release(&r);
	expect_settings(c, "GET", "nodevices", NULL, 0);
	assert_int_equal(stored_read_receipts(c, "nodevices"), 0);

	/* User ids as the path spells them: percent-decoded. */
	expect_settings(c, "PUT", "a%2Bb", "{\"read_receipts\":false}", 0);
	expect_settings(c, "GET", "a+b", NULL, 0);
	assert_int_equal(stored_read_receipts(c, "a+b"), 0);
	queue_registry_free(reg);
	free(id);
}

static void test_user_settings_invalid(void **state)
{
	struct ctx *c = *state;
	const char *p = "/v1/users/picky/settings";
	struct th_response r;
	char path[256], url[256], *allow, *big;

	/* The user id, in both methods. */
	expect_error(c, "GET", "/v1/users/a%20b/settings", NULL, 400, "bad_request",
		     "user 'a b' is invalid");
	expect_error(c, "PUT", "/v1/users/a%20b/settings", "{\"read_receipts\":false}", 400,
		     "bad_request", "user 'a b' is invalid");
	snprintf(path, sizeof(path), "/v1/users/%065d/settings", 0);
	expect_error(c, "GET", path, NULL, 400, "bad_request", "is invalid");
	expect_error(c, "PUT", path, "{\"read_receipts\":false}", 400, "bad_request", "is invalid");
	expect_error(c, "PUT", "/v1/users//settings", "{\"read_receipts\":false}", 400,
		     "bad_request", "user '' is invalid");
	expect_error(c, "GET", "/v1/users/a%2Fb/settings", NULL, 400, "bad_request",
		     "user 'a/b' is invalid");
	expect_error(c, "PUT", "/v1/users/a%00b/settings", "{\"read_receipts\":false}", 400,
		     "bad_request", "percent-escape");
	/* A bad user id is reported before a bad body. */
	expect_error(c, "PUT", "/v1/users/a%20b/settings", "nope", 400, "bad_request",
		     "user 'a b' is invalid");

	/* The body. */
	expect_error(c, "PUT", p, "", 400, "bad_request", "request body is empty");
	expect_error(c, "PUT", p, "{\"read_receipts\":false", 400, "bad_request", "invalid JSON");
	expect_error(c, "PUT", p, "{read_receipts: false}", 400, "bad_request", "invalid JSON");
	expect_error(c, "PUT", p, "{\"read_receipts\":false,\"read_receipts\":true}", 400,
		     "bad_request", "duplicate");
	expect_error(c, "PUT", p, "[false]", 400, "bad_request",
		     "request body must be a JSON object, not an array");
	expect_error(c, "PUT", p, "false", 400, "bad_request",
		     "request body must be a JSON object, not a boolean");
	expect_error(c, "PUT", p, "{}", 400, "bad_request", "field 'read_receipts' is required");
	expect_error(c, "PUT", p, "{\"read_receipts\":false,\"typing\":true}", 400, "bad_request",
		     "unknown field 'typing'");
	expect_error(c, "PUT", p, "{\"readReceipts\":false}", 400, "bad_request",
		     "unknown field 'readReceipts'");
	expect_error(c, "PUT", p, "{\"read_receipts\":\"false\"}", 400, "bad_request",
		     "field 'read_receipts' must be a boolean, not a string");
	expect_error(c, "PUT", p, "{\"read_receipts\":0}", 400, "bad_request",
		     "field 'read_receipts' must be a boolean, not a number");
	expect_error(c, "PUT", p, "{\"read_receipts\":null}", 400, "bad_request",
		     "field 'read_receipts' must be a boolean, not null");
	expect_error(c, "PUT", p, "{\"read_receipts\":[true]}", 400, "bad_request",
		     "field 'read_receipts' must be a boolean, not an array");
	expect_error(c, "PUT", p, "{\"read_receipts\":{}}", 400, "bad_request",
		     "field 'read_receipts' must be a boolean, not an object");

	/* Over [admin] max_body: 413. */
	big = malloc(2 * MAX_BODY + 64);
	assert_non_null(big);
	snprintf(big, 2 * MAX_BODY + 64, "{\"read_receipts\":false,\"x\":\"%0*d\"}", 2 * MAX_BODY,
		 0);
	expect_error(c, "PUT", p, big, 413, "payload_too_large", "max_body");
	free(big);

	/* Without the right token: 401, whatever the body. */
	url_of(c, p, url, sizeof(url));
	th_http(&r, "GET", url, NULL, NULL);
	expect_unauthorized(&r);
	th_http(&r, "PUT", url, NULL, "{\"read_receipts\":false}");
	expect_unauthorized(&r);
	th_http(&r, "PUT", url, "wrong-token", "{\"read_receipts\":false}");
	expect_unauthorized(&r);

	/* Other methods: 405 with the ones there are. */
	request(c, &r, "DELETE", p, NULL);
	assert_error(&r, 405, "method_not_allowed", "DELETE");
	allow = th_response_header(&r, "Allow");
	assert_non_null(allow);
	assert_string_equal(allow, "GET, HEAD, PUT");
	free(allow);
	th_response_release(&r);
	expect_error(c, "POST", p, "{\"read_receipts\":false}", 405, "method_not_allowed", "POST");
	expect_error(c, "GET", "/v1/users/picky/settings/x", NULL, 404, "not_found", NULL);

	/* None of it changed anything. */
	expect_settings(c, "GET", "picky", NULL, 1);
	assert_int_equal(stored_read_receipts(c, "picky"), -1);
}

/* A setting answered 200 is committed: it survives ferryd being killed. A
 * daemon of its own, on the group's database. */
static void test_user_settings_survive_restart(void **state)
{
	struct ctx *c = *state;
	struct th_ferryd d;
	int port = th_free_port();
	char *text = admin_config(c->conninfo, port);

	th_ferryd_start(&d, text, port);
	free(text);
	settings_at(&d, "PUT", "restarter", "{\"read_receipts\":false}", 0);
	assert_int_equal(th_ferryd_kill(&d), 128 + SIGKILL);
	th_ferryd_restart(&d);
	settings_at(&d, "GET", "restarter", NULL, 0);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	/* And the group's daemon, on the same database, sees it too. */
	expect_settings(c, "GET", "restarter", NULL, 0);
}

/*
 * SIGTERM lets a request in flight finish (docs/operations.md): the end of
 * its body is sent only after the daemon began stopping, and the request is
 * still answered, with "Connection: close". A daemon of its own.
 */
static void test_stop_finishes_requests(void **state)
{
	static const char body[] = "{\"platform\":\"ios\"}";
	struct ctx *c = *state;
	struct th_ferryd d;
	int port = th_free_port(), fd;
	char *text = admin_config(c->conninfo, port), head[512], *resp;

	th_ferryd_start(&d, text, port);
	free(text);
	snprintf(head, sizeof(head),
		 "POST /v1/users/drain/devices HTTP/1.1\r\nHost: x\r\n"
		 "Authorization: Bearer " TOKEN "\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n",
		 strlen(body));
	fd = tcp_connect(port);
	send_all(fd, head, strlen(head));
	send_all(fd, body, 5);
	sleep_ms(300); /* the headers are in: the request is in flight */
	assert_int_equal(kill(d.pid, SIGTERM), 0);
	wait_for_log(&d, "event=stopping");
	sleep_ms(300); /* well into admin_stop() */
	send_all(fd, body + 5, strlen(body) - 5);
	resp = recv_all(fd);
	close(fd);
	if (strncmp(resp, "HTTP/1.1 201 ", 13) != 0 || !strstr(resp, "\r\nConnection: close\r\n"))
		fail_msg("expected a 201 with Connection: close, got: '%s'", resp);
	free(resp);
	/* It is stopping already: wait for it (signal 0 sends nothing). A
	 * second SIGTERM would race its exit and, after the handlers are
	 * gone, end it with the default action (status 143). */
	assert_int_equal(th_ferryd_stop(&d, 0), 0);
}

/* Runs last: no token, device secret or push token reached the log. */
static void test_log_has_no_secrets(void **state)
{
	struct ctx *c = *state;
	char buf[4096];
	size_t n, len = 0;
	char *log = NULL;
	FILE *f = fopen(c->d.log_path, "r");

	assert_non_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		log = realloc(log, len + n + 1);
		assert_non_null(log);
		memcpy(log + len, buf, n);
		len += n;
	}
	fclose(f);
	assert_non_null(log);
	log[len] = '\0';
	assert_non_null(strstr(log, "event=admin_request"));
	assert_null(strstr(log, TOKEN));
	assert_null(strstr(log, APNS_TOKEN));
	assert_null(strstr(log, FCM_TOKEN));
	assert_null(strstr(log, "SECRETzz"));
	assert_null(strstr(log, "SECRETjs"));
	assert_true(c->secret[0]);
	assert_null(strstr(log, c->secret));
	free(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_health_without_token),
		cmocka_unit_test(test_auth_required),
		cmocka_unit_test(test_device_create_list_get),
		cmocka_unit_test(test_invalid_user),
		cmocka_unit_test(test_bad_request_bodies),
		cmocka_unit_test(test_body_too_large),
		cmocka_unit_test(test_routes_and_methods),
		cmocka_unit_test(test_every_route),
		cmocka_unit_test(test_push_token),
		cmocka_unit_test(test_push_token_invalid),
		cmocka_unit_test(test_device_delete),
		cmocka_unit_test(test_queues),
		cmocka_unit_test(test_queues_invalid),
		cmocka_unit_test(test_disconnect_invalid),
		cmocka_unit_test(test_queues_live_and_disconnect),
		cmocka_unit_test(test_user_settings),
		cmocka_unit_test(test_user_settings_without_devices),
		cmocka_unit_test(test_user_settings_invalid),
		cmocka_unit_test(test_user_settings_survive_restart),
		cmocka_unit_test(test_stop_finishes_requests),
		cmocka_unit_test(test_log_has_no_secrets),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
