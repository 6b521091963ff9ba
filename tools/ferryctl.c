/*
 * ferryctl.c - the operators' command-line tool over ferryd's admin API
 * (usage in ferryctl_args.c, docs/operations.md): one command, one HTTP
 * request (libcurl), the answer printed as a table or as "key: value" lines
 * (ferryctl_out.c), or with --json as the server sent it.
 *
 * drain is the one command that makes more: POST /v1/drain, then GET
 * /v1/drain every DRAIN_POLL_MS on the same handle (one connection, kept
 * alive) until the answer says done or --wait passes. --timeout bounds each
 * request, --wait the whole wait; leaving early (--wait, ^C) does not stop
 * the drain, which only a restart of ferryd ends.
 *
 * Exit codes: 0 done, 1 the server refused (its error message on stderr;
 * with --json its error document on stdout too), could not be reached, or
 * did not finish draining within --wait, 2 bad arguments.
 *
 * The token: from --token or FERRY_ADMIN_TOKEN, sent only in the
 * Authorization header, to the URL given and nowhere else (no redirects are
 * followed, only http and https are spoken), never printed, and wiped from
 * ferryctl's own buffers after the request. A URL with a query string,
 * fragment or credentials is refused (ferryctl_args.c).
 *
 * No global state: the options, one curl handle and the answer go from
 * function to function.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "tools/ferryctl_int.h"
#include "common/banned.h"

/* Largest answer read from the server. */
#define MAX_ANSWER (64u * 1024 * 1024)
/* Largest `send --file`: more than any server takes ([admin] max_body is 16m at most). */
#define MAX_FILE (16u * 1024 * 1024)
/* Longest request path below the URL. */
#define PATH_MAX_LEN 512
/* Seconds to connect, within --timeout. */
#define CONNECT_TIMEOUT_S 10
/* drain: how often GET /v1/drain is asked. */
#define DRAIN_POLL_MS 500

#ifndef FERRY_VERSION
#define FERRY_VERSION "dev"
#endif

/* The server's answer to one request. */
struct answer {
	long status;
	struct buf body; /* capped at MAX_ANSWER */
	json_t *json;	 /* the body parsed; NULL if empty or not JSON */
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;

	return buf_append(&a->body, p, size * n) ? 0 : size * n;
}

/* Everything but the token and the body, set again for each request. */
static void set_common(CURL *h, const struct ctl_opts *o, struct answer *a, char *errbuf)
{
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, o->timeout_s);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
			 o->timeout_s < CONNECT_TIMEOUT_S ? o->timeout_s : (long)CONNECT_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "ferryctl/" FERRY_VERSION);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	if (o->ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, o->ca);
}

/*
 * @method @path (below the URL) with @body (JSON text or NULL) into @a.
 * 0: an answer came (any status); -1: none, with a message printed.
 */
static int request(CURL *h, const struct ctl_opts *o, const char *method, const char *path,
		   const char *body, struct answer *a)
{
	static const char *const extra[] = { "Accept: application/json",
					     "Content-Type: application/json" };
	char errbuf[CURL_ERROR_SIZE] = "", *url = NULL, *auth = NULL;
	struct curl_slist *hdrs = NULL, *tmp;
	size_t authlen = strlen("Authorization: Bearer ") + strlen(o->token) + 1;
	CURLcode rc = CURLE_OUT_OF_MEMORY;
	int ret = -1;

	buf_init(&a->body, MAX_ANSWER);
	if (asprintf(&url, "%.*s%s", (int)o->url_len, o->url, path) < 0) {
		url = NULL;
		goto out;
	}
	auth = malloc(authlen);
	if (!auth)
		goto out;
	snprintf(auth, authlen, "Authorization: Bearer %s", o->token);
	hdrs = curl_slist_append(NULL, auth);
	for (size_t i = 0; hdrs && i < (body ? 2u : 1u); i++) {
		tmp = curl_slist_append(hdrs, extra[i]);
		if (!tmp)
			curl_slist_free_all(hdrs);
		hdrs = tmp;
	}
	if (!hdrs)
		goto out;
	/* Nothing from an earlier request on the handle (a POST's body) but its connection. */
	curl_easy_reset(h);
	set_common(h, o, a, errbuf);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (strcmp(method, "GET"))
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
		ret = 0;
	}
out:
	if (ret && rc == CURLE_WRITE_ERROR)
		fprintf(stderr, "ferryctl: %s: the answer is over %u MiB\n", o->cmd_name,
			MAX_ANSWER >> 20);
	else if (ret)
		fprintf(stderr, "ferryctl: %s: no answer from the admin API: %s\n", o->cmd_name,
			errbuf[0] ? errbuf : curl_easy_strerror(rc));
	curl_slist_free_all(hdrs);
	if (auth)
		OPENSSL_cleanse(auth, authlen);
	free(auth);
	free(url);
	return ret;
}

/* What the server said went wrong: its message, or the status alone. */
static void print_refusal(const struct ctl_opts *o, const struct answer *a)
{
	const json_t *e = json_object_get(a->json, "error");
	const char *msg = json_string_value(json_object_get(e, "message"));
	const char *code = json_string_value(json_object_get(e, "code"));
	char m[1024], c[64];

	if (msg)
		fprintf(stderr, "ferryctl: %s: %s (HTTP %ld %s)\n", o->cmd_name,
			ctl_clean(m, sizeof(m), msg), a->status,
			code ? ctl_clean(c, sizeof(c), code) : "");
	else
		fprintf(stderr, "ferryctl: %s: the server answered HTTP %ld\n", o->cmd_name,
			a->status);
	if (o->cmd == CTL_DRAIN && (a->status == 404 || a->status == 405))
		fprintf(stderr, "ferryctl: drain: the server has no drain route (/v1/drain): a "
				"ferryd older than ferryctl, or --url is not ferryd's admin API\n");
}

/* With --json: the body as it came, one document, ending in a newline. */
static void print_raw(const struct answer *a)
{
	if (!a->body.len)
		return;
	fwrite(a->body.data, 1, a->body.len, stdout);
	if (a->body.data[a->body.len - 1] != '\n')
		fputc('\n', stdout);
}

/* call()'s @flags: with --json, print the body only when it is a refusal. */
#define CALL_QUIET 1

/*
 * Run one request and sort out its answer: 0 with a->json (NULL for an empty
 * body) on a 2xx; else CTL_EXIT_REFUSED with the reason printed. Takes
 * @body (may be NULL). The caller prints a 2xx answer (in human form; with
 * --json it is printed here, unless @flags has CALL_QUIET).
 */
static int call(CURL *h, const struct ctl_opts *o, const char *method, const char *path,
		json_t *body, struct answer *a, unsigned flags)
{
	json_error_t jerr = { 0 };
	char *text = NULL;

	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		json_decref(body);
		if (!text) {
			fprintf(stderr, "ferryctl: out of memory\n");
			return CTL_EXIT_REFUSED;
		}
	}
	if (request(h, o, method, path, text, a)) {
		free(text);
		return CTL_EXIT_REFUSED;
	}
	free(text);
	if (a->body.len)
		a->json = json_loadb(a->body.data, a->body.len, 0, &jerr);
	if (o->json && (!(flags & CALL_QUIET) || a->status < 200 || a->status > 299))
		print_raw(a);
	if (a->status < 200 || a->status > 299) {
		print_refusal(o, a);
		return CTL_EXIT_REFUSED;
	}
	if (a->body.len && !a->json) {
		fprintf(stderr, "ferryctl: %s: the answer is not JSON: %s\n", o->cmd_name,
			jerr.text);
		return CTL_EXIT_REFUSED;
	}
	return CTL_EXIT_OK;
}

static void answer_release(struct answer *a)
{
	json_decref(a->json);
	buf_release(&a->body);
}

/* ---- the commands ---- */

/* "12" for a device id. */
static const char *id_text(int64_t id, char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld", (long long)id);
	return out;
}

/* The file's bytes in @b (capped at MAX_FILE): 0, or -1 with a message. */
static int read_file(const char *path, struct buf *b)
{
	char chunk[16384];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f) {
		fprintf(stderr, "ferryctl: send: cannot open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(b, chunk, n)) {
			fprintf(stderr, "ferryctl: send: '%s' is over %u MiB\n", path,
				MAX_FILE >> 20);
			fclose(f);
			return -1;
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "ferryctl: send: cannot read '%s': %s\n", path, strerror(errno));
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

/* The body of POST /v1/messages; NULL (with a message) when it cannot be made. */
static json_t *message_body(const struct ctl_opts *o, int *usage)
{
	struct buf payload;
	const void *p;
	size_t len, cap;
	char *b64, idbuf[24];
	json_t *body;

	buf_init(&payload, MAX_FILE);
	if (o->file && read_file(o->file, &payload)) {
		*usage = 1;
		buf_release(&payload);
		return NULL;
	}
	p = o->file ? (const void *)payload.data : o->text;
	len = o->file ? payload.len : strlen(o->text);
	cap = 4 * ((len + 2) / 3) + 1;
	b64 = malloc(cap);
	if (b64)
		EVP_EncodeBlock((unsigned char *)b64, len ? p : (const void *)"", (int)len);
	buf_release(&payload);
	body = b64 ? json_pack("{s:s}", "payload_b64", b64) : NULL;
	free(b64);
	if (body && o->user && json_object_set_new(body, "to_user", json_string(o->user)))
		goto fail;
	if (body && !o->user &&
	    json_object_set_new(body, "to_device",
				json_string(id_text(o->device, idbuf, sizeof(idbuf)))))
		goto fail;
	if (body && o->ttl >= 0 && json_object_set_new(body, "ttl", json_integer(o->ttl)))
		goto fail;
	if (body && o->client_id &&
	    json_object_set_new(body, "client_id",
				json_string(id_text(o->client_id, idbuf, sizeof(idbuf)))))
		goto fail;
	if (!body)
		fprintf(stderr, "ferryctl: out of memory\n");
	return body;
fail:
	json_decref(body);
	fprintf(stderr, "ferryctl: out of memory\n");
	return NULL;
}

static json_t *push_body(const struct ctl_opts *o)
{
	json_t *body = json_pack("{s:s,s:s}", "provider", o->provider, "token", o->push_token);

	if (body && o->topic && json_object_set_new(body, "topic", json_string(o->topic)))
		goto fail;
	if (body && o->app && json_object_set_new(body, "app", json_string(o->app)))
		goto fail;
	if (body && o->sandbox && json_object_set_new(body, "environment", json_string("sandbox")))
		goto fail;
	return body;
fail:
	json_decref(body);
	return NULL;
}

/* The request a command makes: method, path and body (NULL: none). */
struct req {
	const char *method;
	char path[PATH_MAX_LEN];
	json_t *body;
};

/* Fill in @r for @o's command: 0, or an exit code (message printed). */
static int build(const struct ctl_opts *o, struct req *r)
{
	char id[24];
	int usage = 0;

	id_text(o->device, id, sizeof(id));
	r->method = "GET";
	r->body = NULL;
	switch (o->cmd) {
	case CTL_STATS:
		snprintf(r->path, sizeof(r->path), "/v1/stats");
		return 0;
	case CTL_DEVICES:
		snprintf(r->path, sizeof(r->path), "/v1/users/%s/devices", o->user);
		return 0;
	case CTL_DEVICE:
		snprintf(r->path, sizeof(r->path), "/v1/devices/%s", id);
		return 0;
	case CTL_ADD_DEVICE:
		r->method = "POST";
		snprintf(r->path, sizeof(r->path), "/v1/users/%s/devices", o->user);
		r->body = json_pack("{s:s}", "platform", o->platform);
		break;
	case CTL_SET_PUSH:
		r->method = "PUT";
		snprintf(r->path, sizeof(r->path), "/v1/devices/%s/push", id);
		r->body = push_body(o);
		break;
	case CTL_SEND:
		r->method = "POST";
		snprintf(r->path, sizeof(r->path), "/v1/messages");
		r->body = message_body(o, &usage);
		if (!r->body)
			return usage ? CTL_EXIT_USAGE : CTL_EXIT_REFUSED;
		return 0;
	case CTL_QUEUES:
		if (o->top)
			snprintf(r->path, sizeof(r->path), "/v1/queues?top=%u", o->top);
		else
			snprintf(r->path, sizeof(r->path), "/v1/queues");
		return 0;
	case CTL_DISCONNECT:
		r->method = "POST";
		snprintf(r->path, sizeof(r->path), "/v1/devices/%s/disconnect", id);
		return 0;
	case CTL_DRAIN:
		r->method = "POST";
		snprintf(r->path, sizeof(r->path), "/v1/drain");
		if (o->spread_ms < 0)
			return 0; /* no body: the server's default spread */
		r->body = json_pack("{s:I}", "spread_ms", (json_int_t)o->spread_ms);
		break;
	default:
		fprintf(stderr, "ferryctl: no command\n");
		return CTL_EXIT_USAGE;
	}
	if (!r->body) {
		fprintf(stderr, "ferryctl: out of memory\n");
		return CTL_EXIT_REFUSED;
	}
	return 0;
}

/* A 2xx answer in human form. */
static int show(const struct ctl_opts *o, const json_t *j)
{
	const json_t *v;

	if (!j) {
		printf("%s: done\n", o->cmd_name);
		return CTL_EXIT_OK;
	}
	switch (o->cmd) {
	case CTL_DEVICES:
		if (ctl_print_devices(stdout, j))
			break;
		return CTL_EXIT_OK;
	case CTL_QUEUES:
		if (ctl_print_queues(stdout, j))
			break;
		return CTL_EXIT_OK;
	case CTL_DISCONNECT:
		v = json_object_get(j, "disconnected");
		if (!json_is_boolean(v))
			break;
		printf("device %lld: %s\n", (long long)o->device,
		       json_is_true(v) ? "disconnected" : "no connection to this ferryd");
		return CTL_EXIT_OK;
	case CTL_ADD_DEVICE:
		ctl_print_value(stdout, j);
		fflush(stdout);
		fprintf(stderr, "ferryctl: the secret is shown only once: give it to the device\n");
		return CTL_EXIT_OK;
	default:
		ctl_print_value(stdout, j);
		return CTL_EXIT_OK;
	}
	/* Not the shape expected: show it as it is rather than nothing. */
	ctl_print_value(stdout, j);
	return CTL_EXIT_OK;
}

/* ---- drain: wait for it to be done ---- */

/* GET /v1/drain's answer, the members ferryctl reads. */
struct drain_state {
	int draining, done;
	long long connections, queued_puts;
};

/* @j's members into @s: 0, or -1 when it is not a drain state. */
static int drain_state_read(const json_t *j, struct drain_state *s)
{
	const json_t *draining = json_object_get(j, "draining"), *done = json_object_get(j, "done");
	const json_t *conns = json_object_get(j, "connections"),
		     *queued = json_object_get(j, "queued_puts");

	if (!json_is_boolean(draining) || !json_is_boolean(done) || !json_is_integer(conns) ||
	    !json_is_integer(queued))
		return -1;
	s->draining = json_is_true(draining);
	s->done = json_is_true(done);
	s->connections = json_integer_value(conns);
	s->queued_puts = json_integer_value(queued);
	return 0;
}

static const char *plural(long long n)
{
	return n == 1 ? "" : "s";
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void pause_ms(long long ms)
{
	struct timespec t = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };

	while (nanosleep(&t, &t) && errno == EINTR)
		;
}

/*
 * After POST /v1/drain was accepted: GET /v1/drain every DRAIN_POLL_MS until
 * it says done (CTL_EXIT_OK) or o->wait_s pass (CTL_EXIT_REFUSED, the last
 * state on stderr). In human form a line each time the connection count
 * changes, and a last one when done; with --json the last answer only.
 */
static int drain_wait(CURL *h, const struct ctl_opts *o)
{
	long long deadline = now_ms() + o->wait_s * 1000LL, shown = -1, left;
	struct answer a = { 0 };
	struct drain_state s;
	int rc;

	for (;;) {
		answer_release(&a);
		a = (struct answer){ 0 };
		rc = call(h, o, "GET", "/v1/drain", NULL, &a, CALL_QUIET);
		if (rc)
			break;
		rc = CTL_EXIT_REFUSED;
		if (drain_state_read(a.json, &s)) {
			fprintf(stderr, "ferryctl: drain: the answer to GET /v1/drain is not a "
					"drain state\n");
			break;
		}
		if (!s.draining) {
			fprintf(stderr, "ferryctl: drain: ferryd is not draining (was it "
					"restarted?)\n");
			break;
		}
		if (s.done) {
			if (!o->json)
				printf("drained: %lld connection%s left\n", s.connections,
				       plural(s.connections));
			rc = CTL_EXIT_OK;
			break;
		}
		if (!o->json && s.connections != shown) {
			printf("draining: %lld connection%s left", s.connections,
			       plural(s.connections));
			if (s.queued_puts)
				printf(", %lld store write%s waiting", s.queued_puts,
				       plural(s.queued_puts));
			putchar('\n');
			fflush(stdout);
			shown = s.connections;
		}
		left = deadline - now_ms();
		if (left <= 0) {
			fprintf(stderr,
				"ferryctl: drain: not done after %ld s: %lld connection%s left, "
				"%lld store write%s waiting; ferryd goes on draining (run drain "
				"again to wait more)\n",
				o->wait_s, s.connections, plural(s.connections), s.queued_puts,
				plural(s.queued_puts));
			break;
		}
		pause_ms(left < DRAIN_POLL_MS ? left : DRAIN_POLL_MS);
	}
	/* A refusal was printed by call(); a 2xx in JSON is the last state. */
	if (o->json && a.json && a.status >= 200 && a.status <= 299)
		print_raw(&a);
	answer_release(&a);
	return rc;
}

static int run(const struct ctl_opts *o)
{
	struct answer a = { 0 };
	struct req r;
	CURL *h;
	int rc = build(o, &r);

	if (rc)
		return rc;
	h = curl_easy_init();
	if (!h) {
		json_decref(r.body);
		fprintf(stderr, "ferryctl: cannot start libcurl\n");
		return CTL_EXIT_REFUSED;
	}
	rc = call(h, o, r.method, r.path, r.body, &a, o->cmd == CTL_DRAIN ? CALL_QUIET : 0);
	if (!rc && o->cmd == CTL_DRAIN)
		rc = drain_wait(h, o);
	else if (!rc && !o->json)
		rc = show(o, a.json);
	answer_release(&a);
	curl_easy_cleanup(h);
	return rc;
}

int main(int argc, char **argv)
{
	struct ctl_opts o;
	char err[512];
	int rc;

	switch (ctl_parse(argc, argv, getenv("FERRY_ADMIN_TOKEN"), &o, err, sizeof(err))) {
	case CTL_PARSE_HELP:
		fputs(ctl_usage, stdout);
		return CTL_EXIT_OK;
	case CTL_PARSE_USAGE:
		fprintf(stderr, "ferryctl: %s\n%s", err, ctl_usage);
		return CTL_EXIT_USAGE;
	case CTL_PARSE_OK:
		break;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "ferryctl: cannot start libcurl\n");
		return CTL_EXIT_REFUSED;
	}
	rc = run(&o);
	curl_global_cleanup();
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "ferryctl: cannot write the output: %s\n", strerror(errno));
		return CTL_EXIT_REFUSED;
	}
	return rc;
}
