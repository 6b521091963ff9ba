/*
 * webdriver.c - a headless Chromium through chromedriver (see webdriver.h).
 *
 * Each call is one W3C WebDriver command: an HTTP request to chromedriver
 * with a JSON body, answered with {"value": ...}; an answer other than 200
 * carries {"value": {"error": ..., "message": ...}}, which fails the test
 * with the error and the first line of the message (the rest is a stack).
 *
 * chromedriver is forked into a process group of its own (setpgid), so that
 * stopping it can signal the whole group: the browser and its helpers too,
 * even when the test failed before it could quit its session.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "tests/integration/harness.h"
#include "tests/integration/webdriver.h"
#include "common/banned.h"

/* W3C's key for an element reference in JSON. */
#define WD_ELEMENT_KEY "element-6066-11e4-a52e-4f735466cecf"

/* Longest answer kept from chromedriver (a screenshot is the largest). */
#define WD_ANSWER_MAX (32 * 1024 * 1024)

/* How long one command may take: starting a browser under load is slow. */
#define WD_COMMAND_TIMEOUT_S 60
/* ... and one whose failure is no failure: a poll, a quit in a teardown. */
#define WD_QUIET_TIMEOUT_S 10

/* Tries at starting chromedriver, each on another free port. */
#define WD_START_TRIES 3

struct answer {
	char *data;
	size_t len;
	int too_big;
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n;
	char *grown;

	if (a->len + len > WD_ANSWER_MAX) {
		a->too_big = 1;
		return 0;
	}
	grown = realloc(a->data, a->len + len + 1);
	if (!grown)
		return 0;
	memcpy(grown + a->len, p, len);
	a->data = grown;
	a->len += len;
	a->data[a->len] = '\0';
	return len;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * @method @path (below the driver's URL) with @body (taken; NULL: none).
 * Returns the answer's "value" (a new reference) and its HTTP status in
 * *status; NULL with *status 0 when chromedriver could not be reached (or,
 * with @quiet, did not answer JSON). Without @quiet any failure fails the test.
 */
static json_t *command(const struct wd_driver *drv, const char *method, const char *path,
		       json_t *body, long *status, int quiet)
{
	struct answer a = { 0 };
	struct curl_slist *hdrs = NULL;
	char url[512], *text = NULL;
	json_t *j, *value = NULL;
	CURLcode cc;
	CURL *c;

	*status = 0;
	snprintf(url, sizeof(url), "%s%s", drv->url, path);
	c = curl_easy_init();
	if (!c)
		fail_msg("out of memory");
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		json_decref(body);
		if (!text)
			fail_msg("out of memory");
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json; charset=utf-8");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
	}
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(c, CURLOPT_TIMEOUT,
			 quiet ? (long)WD_QUIET_TIMEOUT_S : (long)WD_COMMAND_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	free(text);
	j = a.data ? json_loads(a.data, 0, NULL) : NULL;
	if (j)
		value = json_incref(json_object_get(j, "value"));
	json_decref(j);
	if (!quiet && cc != CURLE_OK)
		fail_msg("WebDriver %s %s: %s%s", method, path, curl_easy_strerror(cc),
			 a.too_big ? " (answer too long)" : "");
	if (!quiet && !value)
		fail_msg("WebDriver %s %s: HTTP %ld, not a WebDriver answer: %.200s", method, path,
			 *status, a.data ? a.data : "");
	free(a.data);
	if (cc != CURLE_OK)
		*status = 0;
	return value;
}

/* A command that must succeed; returns its value (a new reference). */
static json_t *must(const struct wd_driver *drv, const char *method, const char *path, json_t *body)
{
	long status;
	json_t *v = command(drv, method, path, body, &status, 0);

	if (status != 200) {
		const char *msg = json_string_value(json_object_get(v, "message"));
		const char *err = json_string_value(json_object_get(v, "error"));
		size_t len = msg ? strcspn(msg, "\n") : 0;

		fail_msg("WebDriver %s %s: HTTP %ld %s: %.*s", method, path, status,
			 err ? err : "?", (int)len, msg ? msg : "");
	}
	return v;
}

static void must_drop(const struct wd_driver *drv, const char *method, const char *path,
		      json_t *body)
{
	json_decref(must(drv, method, path, body));
}

/* "/session/ID" + @rest into @out. */
static const char *session_path(const struct wd_session *s, const char *rest, char *out,
				size_t outlen)
{
	if (!s->id[0])
		fail_msg("WebDriver: no session");
	if ((size_t)snprintf(out, outlen, "/session/%s%s", s->id, rest) >= outlen)
		fail_msg("WebDriver: path too long");
	return out;
}

static const char *element_path(const struct wd_session *s, const char *eid, const char *rest,
				char *out, size_t outlen)
{
	char tail[256];

	if ((size_t)snprintf(tail, sizeof(tail), "/element/%s%s", eid, rest) >= sizeof(tail))
		fail_msg("WebDriver: path too long");
	return session_path(s, tail, out, outlen);
}

const char *wd_missing(void)
{
	if (access(WD_CHROMEDRIVER, X_OK))
		return WD_CHROMEDRIVER " is missing: install chromium-driver "
				       "(sh scripts/deps.sh test)";
	if (access(WD_CHROMIUM, X_OK))
		return WD_CHROMIUM " is missing: install chromium (sh scripts/deps.sh test)";
	return NULL;
}

/* fork/exec chromedriver on @port in a process group of its own. */
static pid_t spawn_driver(int port, const char *log_path)
{
	char portarg[32];
	pid_t pid;

	snprintf(portarg, sizeof(portarg), "--port=%d", port);
	pid = fork();
	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

		setpgid(0, 0);
		if (fd < 0)
			_exit(126);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
		execl(WD_CHROMEDRIVER, "chromedriver", portarg, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid); /* as well: whichever runs first */
	return pid;
}

/* Wait up to @ms for GET /status to say ready: 1, or 0 (the driver exited, or too slow). */
static int driver_ready(struct wd_driver *drv, long ms)
{
	for (long waited = 0; waited < ms; waited += 50) {
		long status;
		json_t *v;
		int st, ready;

		if (waitpid(drv->pid, &st, WNOHANG) == drv->pid) {
			drv->pid = 0;
			return 0;
		}
		v = command(drv, "GET", "/status", NULL, &status, 1);
		ready = status == 200 && json_is_true(json_object_get(v, "ready"));
		json_decref(v);
		if (ready)
			return 1;
		sleep_ms(50);
	}
	return 0;
}

void wd_driver_start(struct wd_driver *drv)
{
	const char *missing = wd_missing();

	memset(drv, 0, sizeof(*drv));
	if (missing)
		fail_msg("%s", missing);
	drv->log_path = th_write_file("chromedriver.log", "");
	for (int i = 0; i < WD_START_TRIES; i++) {
		drv->port = th_free_port();
		snprintf(drv->url, sizeof(drv->url), "http://127.0.0.1:%d", drv->port);
		drv->pid = spawn_driver(drv->port, drv->log_path);
		if (driver_ready(drv, 20000 / WD_START_TRIES))
			return;
		wd_driver_stop(drv);
	}
	wd_driver_dump_log(drv);
	fail_msg("chromedriver did not start (%d tries)", WD_START_TRIES);
}

void wd_driver_stop(struct wd_driver *drv)
{
	pid_t group = drv->pid;
	int st, reaped = 0;

	if (group <= 0)
		return;
	kill(-group, SIGTERM);
	for (int i = 0; i < 100 && !reaped; i++) {
		reaped = waitpid(group, &st, WNOHANG) == group;
		if (!reaped)
			sleep_ms(50);
	}
	/* Whatever is left of the group: the driver, browsers it left behind. */
	kill(-group, SIGKILL);
	if (!reaped)
		waitpid(group, &st, 0);
	drv->pid = 0;
}

void wd_driver_dump_log(const struct wd_driver *drv)
{
	char *log;

	if (!drv->log_path)
		return;
	log = th_read_file(drv->log_path);
	fprintf(stderr, "---- chromedriver log (%s) ----\n%s---- end of log ----\n", drv->log_path,
		log);
	free(log);
}

void wd_session_new(struct wd_session *s, struct wd_driver *drv, const char *profile_dir, int width,
		    int height)
{
	char dir_arg[512], size_arg[64];
	json_t *caps, *v;
	const char *id;

	memset(s, 0, sizeof(*s));
	s->drv = drv;
	snprintf(dir_arg, sizeof(dir_arg), "--user-data-dir=%s", profile_dir);
	snprintf(size_arg, sizeof(size_arg), "--window-size=%d,%d", width, height);
	caps = json_pack("{s:{s:{s:s,s:{s:s,s:[s,s,s,s,s,s,s,s,s]}}}}", "capabilities",
			 "alwaysMatch", "browserName", "chrome", "goog:chromeOptions", "binary",
			 WD_CHROMIUM, "args", "--headless=new", "--no-sandbox", "--disable-gpu",
			 "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
			 "--disable-extensions", dir_arg, size_arg);
	if (!caps)
		fail_msg("out of memory");
	v = must(drv, "POST", "/session", caps);
	id = json_string_value(json_object_get(v, "sessionId"));
	if (!id || strlen(id) >= sizeof(s->id))
		fail_msg("WebDriver: new session without a usable id");
	snprintf(s->id, sizeof(s->id), "%s", id);
	json_decref(v);
}

void wd_session_quit(struct wd_session *s)
{
	char path[256];
	long status;

	if (!s->drv || !s->id[0] || s->drv->pid <= 0)
		return;
	snprintf(path, sizeof(path), "/session/%s", s->id);
	json_decref(command(s->drv, "DELETE", path, NULL, &status, 1));
	s->id[0] = '\0';
}

void wd_navigate(struct wd_session *s, const char *url)
{
	char path[256];

	must_drop(s->drv, "POST", session_path(s, "/url", path, sizeof(path)),
		  json_pack("{s:s}", "url", url));
}

void wd_refresh(struct wd_session *s)
{
	char path[256];

	must_drop(s->drv, "POST", session_path(s, "/refresh", path, sizeof(path)), NULL);
}

int wd_find(struct wd_session *s, const char *css, char eid[WD_ID_MAX])
{
	char path[256];
	long status;
	json_t *v;
	const char *id, *err;

	v = command(s->drv, "POST", session_path(s, "/element", path, sizeof(path)),
		    json_pack("{s:s,s:s}", "using", "css selector", "value", css), &status, 0);
	err = json_string_value(json_object_get(v, "error"));
	if (status == 404 && err && !strcmp(err, "no such element")) {
		json_decref(v);
		return 0;
	}
	id = json_string_value(json_object_get(v, WD_ELEMENT_KEY));
	if (status != 200 || !id || strlen(id) >= WD_ID_MAX)
		fail_msg("WebDriver: finding '%s': HTTP %ld", css, status);
	snprintf(eid, WD_ID_MAX, "%s", id);
	json_decref(v);
	return 1;
}

void wd_find_must(struct wd_session *s, const char *css, char eid[WD_ID_MAX])
{
	if (!wd_find(s, css, eid))
		fail_msg("the page has no element '%s'", css);
}

int wd_displayed(struct wd_session *s, const char *eid)
{
	char path[256];
	json_t *v =
		must(s->drv, "GET", element_path(s, eid, "/displayed", path, sizeof(path)), NULL);
	int shown = json_is_true(v);

	json_decref(v);
	return shown;
}

char *wd_text(struct wd_session *s, const char *eid)
{
	char path[256], *text;
	json_t *v = must(s->drv, "GET", element_path(s, eid, "/text", path, sizeof(path)), NULL);

	if (!json_is_string(v))
		fail_msg("WebDriver: element text is not a string");
	text = strdup(json_string_value(v));
	json_decref(v);
	if (!text)
		fail_msg("out of memory");
	return text;
}

char *wd_attribute(struct wd_session *s, const char *eid, const char *name)
{
	char rest[128], path[256], *text = NULL;
	json_t *v;

	snprintf(rest, sizeof(rest), "/attribute/%s", name);
	v = must(s->drv, "GET", element_path(s, eid, rest, path, sizeof(path)), NULL);
	if (json_is_string(v) && !(text = strdup(json_string_value(v))))
		fail_msg("out of memory");
	json_decref(v);
	return text;
}

void wd_click(struct wd_session *s, const char *eid)
{
	char path[256];

	must_drop(s->drv, "POST", element_path(s, eid, "/click", path, sizeof(path)), NULL);
}

void wd_type(struct wd_session *s, const char *eid, const char *text)
{
	char path[256];

	must_drop(s->drv, "POST", element_path(s, eid, "/value", path, sizeof(path)),
		  json_pack("{s:s}", "text", text));
}

json_t *wd_script(struct wd_session *s, const char *script)
{
	char path[256];

	return must(s->drv, "POST", session_path(s, "/execute/sync", path, sizeof(path)),
		    json_pack("{s:s,s:[]}", "script", script, "args"));
}

void wd_screenshot(struct wd_session *s, const char *path)
{
	static const unsigned char png_magic[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	char cmd[256];
	json_t *v = must(s->drv, "GET", session_path(s, "/screenshot", cmd, sizeof(cmd)), NULL);
	const char *b64 = json_string_value(v);
	size_t len = b64 ? strlen(b64) : 0;
	unsigned char *png;
	int n;
	FILE *f;

	if (!len || len % 4)
		fail_msg("WebDriver: the screenshot is not base64");
	png = malloc(len / 4 * 3 + 1);
	if (!png)
		fail_msg("out of memory");
	n = EVP_DecodeBlock(png, (const unsigned char *)b64, (int)len);
	if (n < 0)
		fail_msg("WebDriver: the screenshot is not base64");
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	n -= (b64[len - 1] == '=') + (b64[len - 2] == '=');
	if (n < (int)sizeof(png_magic) || memcmp(png, png_magic, sizeof(png_magic)))
		fail_msg("WebDriver: the screenshot is not a PNG");
	f = fopen(path, "wb");
	if (!f || fwrite(png, 1, (size_t)n, f) != (size_t)n || fclose(f))
		fail_msg("cannot write '%s': %s", path, strerror(errno));
	free(png);
	json_decref(v);
}
