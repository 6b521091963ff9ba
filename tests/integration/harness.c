/*
 * harness.c - integration test support (see harness.h).
 *
 * Databases are named <prefix>_<pid>_<n> so that tests running at the same
 * time in one cluster never meet. Daemons are started with fork/exec and
 * their stderr kept in a file that is printed when a test fails.
 *
 * Every answer th_http_hdr() gets is held against admin/openapi.yaml
 * (th_check_response()), which is read once per test program, the first
 * time it is needed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "tests/integration/harness.h"
#include "tests/integration/openapi.h"
#include "common/banned.h"

/* FERRY_TEST_FILTER=PATTERN runs only the tests whose names match (cmocka's
 * glob, e.g. "test_out_of_*"): for chasing one test without the others. */
__attribute__((constructor)) static void th_test_filter(void)
{
	const char *f = getenv("FERRY_TEST_FILTER");

	if (f && *f)
		cmocka_set_test_filter(f);
}

static const char *env_or_fail(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		fail_msg("%s is not set: run integration tests through 'make test'", name);
	return v;
}

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s)
		fail_msg("out of memory");
	return s;
}

static char *base_conninfo(const char *dbname)
{
	return xasprintf("host=%s user=%s dbname=%s", env_or_fail("FERRY_TEST_PGHOST"),
			 env_or_fail("FERRY_TEST_PGUSER"), dbname);
}

PGconn *th_pg_connect(const char *conninfo)
{
	PGconn *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
		fail_msg("cannot connect to '%s': %s", conninfo, PQerrorMessage(conn));
	PQsetNoticeProcessor(conn, NULL, NULL);
	return conn;
}

PGresult *th_pg_exec(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		fail_msg("SQL failed: %s\n  %s", sql, PQerrorMessage(conn));
	return res;
}

const char *th_pg_sqlstate(PGconn *conn, const char *sql, char state[6])
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	const char *s;

	state[0] = '\0';
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		snprintf(state, 6, "%s", s ? s : "?????");
	}
	PQclear(res);
	return state;
}

long long th_pg_int(PGconn *conn, const char *fmt, ...)
{
	char sql[1024];
	va_list ap;
	PGresult *res;
	long long v;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	res = th_pg_exec(conn, sql);
	if (PQntuples(res) != 1)
		fail_msg("expected one row from: %s", sql);
	v = PQgetisnull(res, 0, 0) ? -1 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

void th_ferryd_wait_ready(const struct th_ferryd *d, unsigned timeout_ms)
{
	char *url = xasprintf("%s/readyz", d->admin_url);
	long status = 0;

	for (unsigned waited = 0;; waited += 50) {
		struct th_response r;
		struct timespec ts = { 0, 50 * 1000 * 1000 };

		th_http(&r, "GET", url, NULL, NULL);
		status = r.status;
		th_response_release(&r);
		if (status == 200 || waited >= timeout_ms)
			break;
		nanosleep(&ts, NULL);
	}
	free(url);
	if (status != 200)
		fail_msg("ferryd not ready within %u ms (/readyz %ld)", timeout_ms, status);
}

void th_promtool_check(const char *text)
{
	char *in = th_write_file("metrics.txt", text);
	char *out = xasprintf("%s.out", in);
	char *cmd = xasprintf("promtool check metrics < '%s' > '%s' 2>&1", in, out);
	int rc = system(cmd);

	if (rc != 0) {
		char *said = th_read_file(out);

		fail_msg("promtool check metrics: status %d: %s\n---- the exposition ----\n%s", rc,
			 said, text);
	}
	unlink(in);
	unlink(out);
	free(cmd);
	free(out);
	free(in);
}

char *th_db_new(const char *prefix)
{
	static int counter;
	char *admin = base_conninfo("postgres");
	char *name = xasprintf("%s_%d_%d", prefix, (int)getpid(), ++counter);
	char *sql = xasprintf("CREATE DATABASE \"%s\"", name);
	PGconn *conn = th_pg_connect(admin);
	char *conninfo;

	PQclear(th_pg_exec(conn, sql));
	PQfinish(conn);
	conninfo = base_conninfo(name);
	free(sql);
	free(name);
	free(admin);
	return conninfo;
}

/* The first port the kernel hands out for outgoing connections (and for
 * bind to port 0). */
static int ephemeral_low(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	int lo = 32768, hi;

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	return lo;
}

/* 1 if 127.0.0.1:@port can be bound now. */
static int port_free(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	if (fd < 0)
		fail_msg("cannot make a socket: %s", strerror(errno));
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/*
 * A port below the ephemeral range, chosen at random: a port that bind(0)
 * gave would come from the range that every outgoing connection on the
 * machine draws from too (a load generator's thousands of them), so it
 * could be taken again before the daemon binds it. Ports handed out by this
 * process are not handed out twice.
 */
int th_free_port(void)
{
	static int given[256];
	static size_t next; /* ports given so far; the last 256 are in @given */
	static unsigned seed;
	int lo = 10000, hi = ephemeral_low() - 1;

	if (!seed)
		seed = (unsigned)getpid() ^ (unsigned)time(NULL);
	for (int tries = 0; hi - lo > 1000 && tries < 200; tries++) {
		int port = lo + (int)(rand_r(&seed) % (unsigned)(hi - lo));
		size_t i;

		for (i = 0; i < next && i < 256 && given[i] != port; i++)
			;
		if ((i < next && i < 256) || !port_free(port))
			continue;
		given[next++ % 256] = port;
		return port;
	}
	{
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(sa);
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
		    getsockname(fd, (struct sockaddr *)&sa, &len))
			fail_msg("cannot find a free port: %s", strerror(errno));
		close(fd);
		return ntohs(sa.sin_port);
	}
}

char *th_write_file(const char *name, const char *text)
{
	static int counter;
	char *path = xasprintf("%s/%d_%d_%s", env_or_fail("FERRY_TEST_TMPDIR"), (int)getpid(),
			       ++counter, name);
	/* Owner-only: ferryd refuses key and token files others can read. */
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (!f || fputs(text, f) < 0 || fclose(f))
		fail_msg("cannot write '%s': %s", path, strerror(errno));
	return path;
}

char *th_ferryd_config_ex(const char *conninfo, int admin_port, const char *token,
			  const char *extra)
{
	/* The device listener is off unless @extra configures it. */
	const char *gateway = strstr(extra, "[gateway]") ? "" : "[gateway]\nlisten = \"\"\n\n";

	/* The test cluster runs with fsync = off (scripts/run-tests.sh): say so. */
	return xasprintf("[store]\nconninfo = \"%s\"\nrequire_durable = off\n\n"
			 "[admin]\nlisten = 127.0.0.1:%d\n"
			 "token = \"%s\"\n\n%s[log]\nlevel = debug\n%s",
			 conninfo, admin_port, token, gateway, extra);
}

char *th_ferryd_config(const char *conninfo, int admin_port, const char *token)
{
	return th_ferryd_config_ex(conninfo, admin_port, token, "");
}

void th_device_create(const struct th_ferryd *d, const char *token, const char *user, int64_t *id,
		      char secret[64])
{
	char url[256];
	struct th_response r;
	json_error_t jerr;
	json_t *j;

	snprintf(url, sizeof(url), "%s/v1/users/%s/devices", d->admin_url, user);
	th_http(&r, "POST", url, token, "{\"platform\":\"desktop\"}");
	if (r.status != 201)
		fail_msg("creating a device for '%s': HTTP %ld %s", user, r.status, r.body);
	j = json_loads(r.body, 0, &jerr);
	if (!j || !json_is_string(json_object_get(j, "device_id")) ||
	    !json_is_string(json_object_get(j, "secret")))
		fail_msg("unexpected device JSON: %s", r.body);
	*id = strtoll(json_string_value(json_object_get(j, "device_id")), NULL, 10);
	snprintf(secret, 64, "%s", json_string_value(json_object_get(j, "secret")));
	json_decref(j);
	th_response_release(&r);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s = NULL;
	size_t n = 0;
	FILE *mem;
	char chunk[4096];
	size_t r;

	mem = open_memstream(&s, &n);
	if (!mem)
		fail_msg("out of memory");
	while (f && (r = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, r, mem);
	if (f)
		fclose(f);
	fclose(mem);
	return s;
}

/* fork/exec @argv with stdout and stderr to @log_path (or inherited if NULL). */
static pid_t spawn(const char *const argv[], const char *log_path)
{
	pid_t pid = fork();

	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		if (log_path) {
			int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

			if (fd < 0)
				_exit(126);
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Wait for @pid; past 60 s kill it (a hung daemon must not hang make test)
 * and fail the test. */
static int wait_status(pid_t pid)
{
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	int st;

	for (int i = 0; i < 6000; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid) {
			if (WIFEXITED(st))
				return WEXITSTATUS(st);
			return 128 + WTERMSIG(st);
		}
		if (r < 0 && errno != EINTR)
			fail_msg("waitpid: %s", strerror(errno));
		nanosleep(&pause, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	fail_msg("process %d did not exit within 60 s; killed", (int)pid);
	return -1;
}

pid_t th_spawn(const char *const argv[], const char *out_path)
{
	return spawn(argv, out_path);
}

int th_wait(pid_t pid)
{
	return wait_status(pid);
}

char *th_read_file(const char *path)
{
	return read_all(path);
}

int th_ferryd_cmd(const char *config_path, const char *const argv_tail[], char **output)
{
	const char *argv[32];
	char *log_path = NULL;
	int n = 0, status;

	argv[n++] = env_or_fail("FERRY_TEST_FERRYD");
	for (int i = 0; argv_tail[i] && n < 28; i++)
		argv[n++] = argv_tail[i];
	if (config_path) {
		argv[n++] = "-c";
		argv[n++] = config_path;
	}
	argv[n] = NULL;
	if (output)
		log_path = th_write_file("cmd.log", "");
	status = wait_status(spawn(argv, log_path));
	if (output)
		*output = read_all(log_path);
	if (log_path) {
		unlink(log_path);
		free(log_path);
	}
	return status;
}

static void dump_log(const struct th_ferryd *d)
{
	char *log = read_all(d->log_path);

	fprintf(stderr, "---- ferryd log (%s) ----\n%s---- end of log ----\n", d->log_path, log);
	free(log);
}

void th_ferryd_start(struct th_ferryd *d, const char *config_text, int admin_port)
{
	char *path = th_write_file("ferry.ini", config_text);

	th_ferryd_start_file(d, path, admin_port);
	free(path);
}

void th_ferryd_start_file(struct th_ferryd *d, const char *config_path, int admin_port)
{
	struct timespec pause = { 0, 50 * 1000 * 1000 };
	const char *argv[5];
	int st;

	memset(d, 0, sizeof(*d));
	d->config_path = xasprintf("%s", config_path);
	d->log_path = xasprintf("%s.log", d->config_path);
	d->admin_port = admin_port;
	snprintf(d->admin_url, sizeof(d->admin_url), "http://127.0.0.1:%d", admin_port);
	argv[0] = env_or_fail("FERRY_TEST_FERRYD");
	argv[1] = "run";
	argv[2] = "-c";
	argv[3] = d->config_path;
	argv[4] = NULL;
	d->pid = spawn(argv, d->log_path);

	for (int i = 0; i < 400; i++) {
		char url[96];
		CURL *c;
		long status = 0;

		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			dump_log(d);
			fail_msg("ferryd exited before it was ready");
		}
		snprintf(url, sizeof(url), "%s/healthz", d->admin_url);
		c = curl_easy_init();
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
		if (curl_easy_perform(c) == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_cleanup(c);
		if (status == 200)
			return;
		nanosleep(&pause, NULL);
	}
	dump_log(d);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &st, 0);
	fail_msg("ferryd did not become healthy within 20 s");
}

void th_assert_lacks(const char *text, const char *needle, const char *what, const char *where)
{
	const char *at = strstr(text, needle), *line = at;

	if (!at)
		return;
	while (line > text && line[-1] != '\n')
		line--;
	fail_msg("%s in %s: %.*s", what, where, (int)strcspn(line, "\n"), line);
}

int th_log_count(const struct th_ferryd *d, const char *needle)
{
	char *log = read_all(d->log_path);
	int n = 0;

	for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	free(log);
	return n;
}

void th_log_wait(const struct th_ferryd *d, const char *needle, int n)
{
	struct timespec pause = { 0, 20 * 1000 * 1000 };

	for (int i = 0; i < 500; i++) {
		if (th_log_count(d, needle) >= n)
			return;
		nanosleep(&pause, NULL);
	}
	dump_log(d);
	fail_msg("'%s' did not appear %d time(s) in the log within 10 s", needle, n);
}

int th_ferryd_stop(struct th_ferryd *d, int sig)
{
	int status;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, sig);
	status = wait_status(d->pid);
	d->pid = 0;
	if (status != 0)
		dump_log(d);
	unlink(d->config_path);
	unlink(d->log_path);
	free(d->config_path);
	free(d->log_path);
	d->config_path = d->log_path = NULL;
	return status;
}

int th_ferryd_kill(struct th_ferryd *d)
{
	int st;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGKILL);
	while (waitpid(d->pid, &st, 0) < 0)
		if (errno != EINTR)
			fail_msg("waitpid: %s", strerror(errno));
	d->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* 1 once GET /healthz on the daemon's admin port answers 200. */
static int healthy(const struct th_ferryd *d)
{
	char url[96];
	long status = 0;
	CURL *c = curl_easy_init();

	snprintf(url, sizeof(url), "%s/healthz", d->admin_url);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return status == 200;
}

void th_ferryd_restart(struct th_ferryd *d)
{
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	const char *argv[] = { env_or_fail("FERRY_TEST_FERRYD"), "run", "-c", d->config_path,
			       NULL };
	int fd, st;

	if (d->pid > 0)
		fail_msg("th_ferryd_restart: the daemon is still running");
	d->pid = fork();
	if (d->pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (d->pid == 0) {
		fd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd < 0)
			_exit(126);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			dump_log(d);
			fail_msg("ferryd exited (status %d) before it was ready after a restart",
				 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		}
		if (healthy(d))
			return;
		nanosleep(&pause, NULL);
	}
	dump_log(d);
	th_ferryd_kill(d);
	fail_msg("ferryd did not become healthy within 20 s after a restart");
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	FILE *mem = arg;

	return fwrite(p, size, n, mem);
}

struct hdr_ctx {
	struct th_response *r;
	FILE *all;
};

static size_t header_cb(char *p, size_t size, size_t n, void *arg)
{
	struct hdr_ctx *ctx = arg;
	struct th_response *r = ctx->r;
	size_t len = size * n;
	static const char ct[] = "content-type:";

	fwrite(p, 1, len, ctx->all);
	if (len > sizeof(ct) - 1 && strncasecmp(p, ct, sizeof(ct) - 1) == 0) {
		const char *v = p + sizeof(ct) - 1;
		size_t vlen = len - (sizeof(ct) - 1);

		while (vlen && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
			vlen--;
		free(r->content_type);
		r->content_type = strndup(v, vlen);
	}
	return len;
}

const json_t *th_openapi_doc(void)
{
	static json_t *doc;
	char err[OPENAPI_ERR_MAX];
	const char *path = getenv("FERRY_TEST_OPENAPI");

	if (doc)
		return doc;
	if (!path || !*path)
		path = "admin/openapi.yaml";
	doc = openapi_yaml_load(path, err, sizeof(err));
	if (!doc)
		fail_msg("%s", err);
	return doc;
}

void th_check_response(const char *method, const char *path, long status, const char *content_type,
		       const char *body)
{
	char err[OPENAPI_ERR_MAX];

	if (!body)
		body = "";
	if (openapi_check_response(th_openapi_doc(), method, path, status, content_type, body, err,
				   sizeof(err)))
		fail_msg("admin/openapi.yaml does not describe this answer: %s\n  body: %.2000s",
			 err, body);
}

/* The path (and query) of @url, "http://host:port/path?q": "/path?q". */
static const char *url_path(const char *url)
{
	const char *p = strstr(url, "://");

	p = p ? p + 3 : url;
	p = strchr(p, '/');
	return p ? p : "/";
}

void th_http_hdr(struct th_response *r, const char *method, const char *url, const char *header,
		 const char *body)
{
	struct curl_slist *hdrs = NULL;
	size_t blen = 0, hlen = 0;
	struct hdr_ctx ctx = { .r = r };
	FILE *mem;
	CURL *c;
	CURLcode cc;

	memset(r, 0, sizeof(*r));
	mem = open_memstream(&r->body, &blen);
	ctx.all = open_memstream(&r->headers, &hlen);
	c = curl_easy_init();
	if (!mem || !ctx.all || !c)
		fail_msg("out of memory");
	if (header)
		hdrs = curl_slist_append(hdrs, header);
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &ctx);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK)
		fail_msg("%s %s: %s", method, url, curl_easy_strerror(cc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	fclose(mem);
	fclose(ctx.all);
	th_check_response(method, url_path(url), r->status, r->content_type, r->body);
}

char *th_response_header(const struct th_response *r, const char *name)
{
	size_t nlen = strlen(name);
	const char *line = r->headers;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);

		if (len > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			const char *v = line + nlen + 1;
			size_t vlen = len - nlen - 1;

			while (vlen && (*v == ' ' || *v == '\t'))
				v++, vlen--;
			while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '))
				vlen--;
			return strndup(v, vlen);
		}
		line = end ? end + 1 : NULL;
	}
	return NULL;
}

void th_http(struct th_response *r, const char *method, const char *url, const char *token,
	     const char *body)
{
	char *hdr = token ? xasprintf("Authorization: Bearer %s", token) : NULL;

	th_http_hdr(r, method, url, hdr, body);
	free(hdr);
}

void th_response_release(struct th_response *r)
{
	free(r->body);
	free(r->content_type);
	free(r->headers);
	memset(r, 0, sizeof(*r));
}

int th_tcp_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		fail_msg("cannot connect to port %d: %s", port, strerror(errno));
	return fd;
}

void th_ferryd_up(struct th_ferryd *d, const char *conninfo, int admin_port, const char *token,
		  const char *extra)
{
	char *cfg = th_ferryd_config_ex(conninfo, admin_port, token, extra);
	char *path = th_write_file("ferryd.ini", cfg), *out = NULL;
	int status = th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, &out);

	unlink(path);
	free(path);
	if (status != 0)
		fail_msg("ferryd migrate failed (status %d):\n%s", status, out ? out : "");
	free(out);
	th_ferryd_start(d, cfg, admin_port);
	free(cfg);
}

long th_proc_status(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t n = strlen(field);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot read %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n))
			v = strtol(line + n, NULL, 10);
	fclose(f);
	return v;
}

long long th_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int th_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		fail_msg("cannot read %s: %s", path, strerror(errno));
	while ((e = readdir(dir)) != NULL)
		n += e->d_name[0] != '.';
	closedir(dir);
	return n;
}
