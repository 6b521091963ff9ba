/*
 * bench_util.c - what ferry-bench's modes and bench_insert share
 * (tools/bench_int.h): the clock, latency samples, ferryd's and
 * PostgreSQL's CPU time and memory from /proc, device credentials,
 * created through the admin API (a few requests in parallel, libcurl) or
 * read from a file of `user device_id secret` lines, and single GETs from
 * the admin API (GET /v1/stats, PUT a push token), and the scenarios' one
 * JSON result line (fb_json_*).
 *
 * Nothing here keeps state between calls but fb_interrupted, which only the
 * signal handler sets.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "tools/bench_int.h"
#include "common/banned.h"

#define ADMIN_THREADS 4 /* admin API requests at once */

volatile sig_atomic_t fb_interrupted;

/* ---- small helpers ---- */

uint64_t fb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void fb_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR && !fb_interrupted)
		;
}

int fb_samples_add(struct fb_samples *s, uint64_t v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		uint64_t *p = realloc(s->v, cap * sizeof(*p));

		if (!p)
			return -1;
		s->v = p;
		s->cap = cap;
	}
	s->v[s->n++] = v;
	return 0;
}

int fb_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int fb_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted @v, in microseconds; NAN if empty. */
double fb_pct_us(const uint64_t *v, size_t n, double pct)
{
	size_t rank;

	if (!n)
		return NAN;
	rank = (size_t)ceil(pct / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	return (double)v[rank - 1] / 1000.0;
}

/* ---- /proc: ferryd's memory and CPU ---- */

/* VmRSS and VmHWM of @pid in kB; -1 if unreadable. */
int fb_proc_mem_kb(long pid, long *rss, long *hwm)
{
	char path[64], line[256];
	FILE *f;

	*rss = *hwm = -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "VmRSS:", 6))
			*rss = strtol(line + 6, NULL, 10);
		else if (!strncmp(line, "VmHWM:", 6))
			*hwm = strtol(line + 6, NULL, 10);
	}
	fclose(f);
	return *rss < 0 ? -1 : 0;
}

/* CPU time of every thread of @pid in ns (their schedstat run times). */
double fb_proc_cpu_ns(long pid)
{
	char path[300], line[128];
	struct dirent *e;
	double total = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	d = opendir(path);
	if (!d)
		return NAN;
	while ((e = readdir(d)) != NULL) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/task/%s/schedstat", pid, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(line, sizeof(line), f))
			total += strtod(line, NULL);
		fclose(f);
	}
	closedir(d);
	return total;
}

/* The parent of process @pid (the field after the command's closing paren); -1 if gone. */
static long proc_ppid(const char *pid)
{
	char path[300], line[512], *p;
	FILE *f;
	long ppid = -1;

	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')')) != NULL)
		ppid = strtol(p + 3, NULL, 10); /* ") S PPID" */
	fclose(f);
	return ppid;
}

double fb_proc_tree_cpu_ns(long pid)
{
	double total = fb_proc_cpu_ns(pid), t;
	struct dirent *e;
	DIR *d;

	if (isnan(total))
		return NAN;
	d = opendir("/proc");
	if (!d)
		return NAN;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9' || proc_ppid(e->d_name) != pid)
			continue;
		t = fb_proc_cpu_ns(strtol(e->d_name, NULL, 10));
		if (!isnan(t))
			total += t;
	}
	closedir(d);
	return total;
}

double fb_self_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- credentials: the admin API ---- */

struct body {
	char *p;
	size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t add = size * n;
	char *q;

	if (b->len + add > 65536)
		return 0;
	q = realloc(b->p, b->len + add + 1);
	if (!q)
		return 0;
	memcpy(q + b->len, p, add);
	b->len += add;
	q[b->len] = '\0';
	b->p = q;
	return add;
}

/* Copy the string member @key of @obj into @out (cap @cap); -1 if absent. */
static int json_text(json_t *obj, const char *key, char *out, size_t cap)
{
	const char *s = json_string_value(json_object_get(obj, key));

	if (!s || strlen(s) >= cap)
		return -1;
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

static int parse_created(const char *text, struct fb_cred *cr)
{
	char id[32], *end;
	json_t *obj = json_loads(text, 0, NULL);
	int rc = -1;

	if (obj && !json_text(obj, "device_id", id, sizeof(id)) &&
	    !json_text(obj, "secret", cr->secret, sizeof(cr->secret))) {
		errno = 0;
		cr->device_id = strtoull(id, &end, 10);
		rc = errno || *end || cr->device_id < 1 ? -1 : 0;
	}
	json_decref(obj);
	return rc;
}

/* POST /v1/users/@cr->user/devices; fills the rest of @cr. */
static int create_device(CURL *h, struct curl_slist *hdrs, const char *admin, struct fb_cred *cr)
{
	char url[512];
	struct body b = { NULL, 0 };
	size_t alen = strlen(admin);
	long status = 0;
	CURLcode rc;

	while (alen && admin[alen - 1] == '/')
		alen--;
	snprintf(url, sizeof(url), "%.*s/v1/users/%s/devices", (int)alen, admin, cr->user);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, "{\"platform\":\"desktop\"}");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	while (b.len && (b.p[b.len - 1] == '\n' || b.p[b.len - 1] == '\r'))
		b.p[--b.len] = '\0';
	if (rc != CURLE_OK || status != 201 || !b.p || parse_created(b.p, cr)) {
		fprintf(stderr, "ferry-bench: POST %s: %s, HTTP %ld: %.200s\n", url,
			rc == CURLE_OK ? "done" : curl_easy_strerror(rc), status, b.p ? b.p : "");
		free(b.p);
		return -1;
	}
	free(b.p);
	return 0;
}

struct admin_job {
	const struct fb_opts *o;
	const char *auth; /* "Authorization: Bearer ..." */
	struct fb_cred *creds;
	size_t n, first, step;
	int failed;
};

static void *admin_thread(void *arg)
{
	struct admin_job *j = arg;
	struct curl_slist *hdrs = NULL;
	CURL *h = curl_easy_init();

	hdrs = curl_slist_append(hdrs, j->auth);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (!h || !hdrs)
		j->failed = 1;
	for (size_t i = j->first; i < j->n && !j->failed && !fb_interrupted; i += j->step)
		j->failed = create_device(h, hdrs, j->o->admin, &j->creds[i]) != 0;
	curl_slist_free_all(hdrs);
	if (h)
		curl_easy_cleanup(h);
	return NULL;
}

/* The admin token: --token, or the first line of --token-file. */
static int read_token(const struct fb_opts *o, char *out, size_t cap)
{
	FILE *f;
	size_t n;

	if (o->token) {
		snprintf(out, cap, "%s", o->token);
		return *out ? 0 : -1;
	}
	f = fopen(o->token_file, "r");
	if (!f) {
		fprintf(stderr, "ferry-bench: %s: %s\n", o->token_file, strerror(errno));
		return -1;
	}
	if (!fgets(out, (int)cap, f))
		out[0] = '\0';
	fclose(f);
	n = strlen(out);
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
		out[--n] = '\0';
	return n ? 0 : -1;
}

/* @method @path (with @send as the body if not NULL) on the admin API; 0 and
 * the body on HTTP @want, -1 with a message otherwise. */
static int admin_request(const struct fb_opts *o, const char *method, const char *path,
			 const char *send, long want, char **body)
{
	char token[1024], auth[1100], url[512];
	struct body b = { NULL, 0 };
	struct curl_slist *hdrs = NULL;
	size_t alen = strlen(o->admin ? o->admin : "");
	long status = 0;
	CURLcode rc = CURLE_FAILED_INIT;
	CURL *h;

	*body = NULL;
	if (!o->admin || read_token(o, token, sizeof(token)))
		return -1;
	while (alen && o->admin[alen - 1] == '/')
		alen--;
	snprintf(url, sizeof(url), "%.*s%s", (int)alen, o->admin, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	h = curl_easy_init();
	hdrs = curl_slist_append(hdrs, auth);
	if (send)
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (h && hdrs) {
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		if (send) {
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, send);
		}
		rc = curl_easy_perform(h);
		if (rc == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	}
	curl_slist_free_all(hdrs);
	if (h)
		curl_easy_cleanup(h);
	if (rc != CURLE_OK || status != want || !b.p) {
		fprintf(stderr, "ferry-bench: %s %s: %s, HTTP %ld\n", method, url,
			rc == CURLE_OK ? "done" : curl_easy_strerror(rc), status);
		free(b.p);
		return -1;
	}
	*body = b.p;
	return 0;
}

int fb_admin_get(const struct fb_opts *o, const char *path, char **body)
{
	return admin_request(o, "GET", path, NULL, 200, body);
}

int fb_admin_put_push(const struct fb_opts *o, uint64_t id, const char *token)
{
	char path[64], send[256], *body;

	snprintf(path, sizeof(path), "/v1/devices/%" PRIu64 "/push", id);
	snprintf(send, sizeof(send), "{\"provider\":\"apns\",\"token\":\"%s\"}", token);
	if (admin_request(o, "PUT", path, send, 200, &body))
		return -1;
	free(body);
	return 0;
}

/* ---- scenario results: one JSON line ---- */

static void json_add(struct fb_json *j, const char *fmt, ...) FERRY_PRINTF(2, 3);

static void json_add(struct fb_json *j, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (j->len >= sizeof(j->buf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(j->buf + j->len, sizeof(j->buf) - j->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		j->len += (size_t)n;
}

static void json_key(struct fb_json *j, const char *key)
{
	json_add(j, "%s\"%s\":", j->len > 1 ? "," : "", key);
}

void fb_json_begin(struct fb_json *j, const char *scenario, const char *label)
{
	j->len = 0;
	json_add(j, "{");
	fb_json_str(j, "scenario", scenario);
	fb_json_str(j, "label", label ? label : scenario);
}

void fb_json_num(struct fb_json *j, const char *key, double v, int prec)
{
	json_key(j, key);
	if (isnan(v) || isinf(v))
		json_add(j, "null");
	else
		json_add(j, "%.*f", prec, v);
}

void fb_json_str(struct fb_json *j, const char *key, const char *v)
{
	json_key(j, key);
	if (!v) {
		json_add(j, "null");
		return;
	}
	json_add(j, "\"");
	for (; *v; v++)
		json_add(j, *v == '"' || *v == '\\' ? "\\%c" : "%c", *v);
	json_add(j, "\"");
}

void fb_json_end(struct fb_json *j)
{
	json_add(j, "}");
	if (j->len >= sizeof(j->buf)) { /* a program error: the line is ours */
		fputs("ferry-bench: a result line is too long\n", stderr);
		abort();
	}
	printf("%s\n", j->buf);
	fflush(stdout);
}

void fb_fixed_init(struct fb_fixed *f)
{
	f->envelopes_per_s = f->p50_us = f->p99_us = f->p999_us = NAN;
	f->ferryd_rss_bytes = f->bytes_per_connection = NAN;
	f->cpu_us_per_envelope = f->gen_cpu_us_per_envelope = NAN;
}

void fb_json_fixed(struct fb_json *j, const struct fb_fixed *f)
{
	fb_json_num(j, "envelopes_per_s", f->envelopes_per_s, 0);
	fb_json_num(j, "p50_us", f->p50_us, 0);
	fb_json_num(j, "p99_us", f->p99_us, 0);
	fb_json_num(j, "p999_us", f->p999_us, 0);
	fb_json_num(j, "ferryd_rss_bytes", f->ferryd_rss_bytes, 0);
	fb_json_num(j, "bytes_per_connection", f->bytes_per_connection, 0);
	fb_json_num(j, "cpu_us_per_envelope", f->cpu_us_per_envelope, 2);
	fb_json_num(j, "gen_cpu_us_per_envelope", f->gen_cpu_us_per_envelope, 2);
}

/* Create a device for each of @creds (users already named), ADMIN_THREADS at a time. */
static int create_devices(const struct fb_opts *o, struct fb_cred *creds, size_t n)
{
	struct admin_job jobs[ADMIN_THREADS];
	pthread_t th[ADMIN_THREADS];
	char token[1024], auth[1100];
	size_t nt = n < ADMIN_THREADS ? n : ADMIN_THREADS, started = 0;
	int failed = 0;

	if (read_token(o, token, sizeof(token))) {
		fprintf(stderr, "ferry-bench: no admin token (--token or --token-file)\n");
		return -1;
	}
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	for (size_t t = 0; t < nt; t++) {
		jobs[t] = (struct admin_job){ o, auth, creds, n, t, nt, 0 };
		if (pthread_create(&th[t], NULL, admin_thread, &jobs[t]))
			break;
		started++;
	}
	for (size_t t = 0; t < started; t++) {
		pthread_join(th[t], NULL);
		failed |= jobs[t].failed;
	}
	return failed || started < nt ? -1 : 0;
}

/* ---- credentials: files ---- */

static int parse_cred_line(char *line, struct fb_cred *cr)
{
	char user[128], secret[FB_SECRET_MAX + 2];
	unsigned long long id;

	if (sscanf(line, "%127s %llu %257s", user, &id, secret) != 3 ||
	    strlen(user) > PROTO_MAX_USER || strlen(secret) > FB_SECRET_MAX || id < 1)
		return -1;
	memcpy(cr->user, user, strlen(user) + 1);
	memcpy(cr->secret, secret, strlen(secret) + 1);
	cr->device_id = id;
	return 0;
}

static int read_creds(const char *path, struct fb_cred *creds, size_t n)
{
	char line[1024];
	size_t got = 0, lineno = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "ferry-bench: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (got < n && fgets(line, sizeof(line), f)) {
		char *p = line + strspn(line, " \t");

		lineno++;
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		if (parse_cred_line(p, &creds[got])) {
			fprintf(stderr, "ferry-bench: %s:%zu: expected 'user device_id secret'\n",
				path, lineno);
			fclose(f);
			return -1;
		}
		got++;
	}
	fclose(f);
	if (got < n) {
		fprintf(stderr, "ferry-bench: %s holds %zu devices, %zu needed\n", path, got, n);
		return -1;
	}
	return 0;
}

static int save_creds(const char *path, const struct fb_cred *creds, size_t n)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "ferry-bench: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fchmod(fileno(f), 0600);
	fprintf(f, "# ferry-bench devices: user device_id secret\n");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s %" PRIu64 " %s\n", creds[i].user, creds[i].device_id,
			creds[i].secret);
	return fclose(f) ? -1 : 0;
}

/* @n credentials: from --creds, or fresh devices; @nrecv receivers first. */
struct fb_cred *fb_get_creds(const struct fb_opts *o, size_t n, size_t nrecv)
{
	struct fb_cred *creds = calloc(n, sizeof(*creds));
	unsigned run = (unsigned)(fb_now_ns() / 1000) ^ ((unsigned)getpid() << 12);
	int rc;

	if (!creds)
		return NULL;
	if (o->creds) {
		rc = read_creds(o->creds, creds, n);
	} else {
		for (size_t i = 0; i < n; i++)
			snprintf(creds[i].user, sizeof(creds[i].user), "fb-%08x-%c%zu", run,
				 i < nrecv ? 'r' : 's',
				 i < nrecv ? i / (o->devices > 1 ? o->devices : 1) : i - nrecv);
		rc = create_devices(o, creds, n);
	}
	if (rc == 0 && o->save_creds)
		rc = save_creds(o->save_creds, creds, n);
	if (rc) {
		free(creds);
		return NULL;
	}
	return creds;
}

/* Raise the soft limit on open files to the hard one. */
void fb_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}
