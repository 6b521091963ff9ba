/*
 * config.c - the configuration table and everything it drives (see config.h).
 *
 * Every key is one row of `table` below: section, key, type, default, bounds,
 * where it lives in struct ferry_config, flags, unit and help. Parsing the INI
 * file, the FERRY_<SECTION>_<KEY> environment overrides, range checks,
 * config_print() (check-config), config_diff() (SIGHUP) and the Markdown
 * reference all walk that table; no code is specific to one key. Defaults are
 * strings parsed by the same code as user input, so a default is always a
 * valid value and the reference shows what an operator would write.
 *
 * A row's type says what is stored at its offset: char * for the string types
 * (STRING, SECRET, CONNINFO, ADDR), unsigned for UINT, size_t for SIZE and
 * int (enum log_level) for LOGLEVEL.
 *
 * Diagnostics are one line in the caller's buffer, "file:line: [section] key:
 * problem" or "environment VAR: problem". The offending value is quoted unless
 * the key is secret. Lines and values with control characters are refused, so
 * neither a message nor check-config output can carry one.
 *
 * Ownership: a struct ferry_config owns its strings; config_free() walks the
 * table to release them. Everything here runs on the thread that loads the
 * configuration (startup, SIGHUP); a loaded config is read-only.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "common/banned.h"

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)

#define MASK "********"
#define ENV_NAME_MAX 64
/* A printed value: masking can lengthen a conninfo a little. */
#define PRINT_MAX (4 * CONFIG_MAX_VALUE)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum type {
	TYPE_STRING,   /* char *, any text */
	TYPE_SECRET,   /* char *, printed as ******** */
	TYPE_CONNINFO, /* char *, libpq connection string, passwords printed as ******** */
	TYPE_UINT,     /* unsigned, decimal */
	TYPE_SIZE,     /* size_t, bytes, optional k/m/g suffix (powers of 1024) */
	TYPE_LOGLEVEL, /* int, enum log_level */
	TYPE_ADDR,     /* char *, host:port, [v6]:port or "" */
};

enum {
	FLAG_RELOADABLE = 1 << 0, /* takes effect on SIGHUP, no restart needed */
	FLAG_SECRET = 1 << 1,	  /* never quoted in messages nor printed */
};

struct entry {
	const char *section;
	const char *key;
	enum type type;
	const char *def;	     /* parsed like user input */
	unsigned long long min, max; /* UINT and SIZE only */
	size_t offset;		     /* in struct ferry_config */
	unsigned flags;
	const char *unit; /* shown in the reference, or NULL */
	const char *help;
};

#define FIELD(f) offsetof(struct ferry_config, f)

static const struct entry table[] = {
	{ "gateway", "listen", TYPE_ADDR, "0.0.0.0:7222", 0, 0, FIELD(gateway.listen), 0, NULL,
	  "Address devices connect to over plain TCP: `host:port` or `[v6]:port`. Empty "
	  "disables the plain listener." },
	{ "gateway", "tls_listen", TYPE_ADDR, "0.0.0.0:7223", 0, 0, FIELD(gateway.tls_listen), 0,
	  NULL,
	  "Address devices connect to over TLS; used when `tls_cert` and `tls_key` are set." },
	{ "gateway", "tls_cert", TYPE_STRING, "", 0, 0, FIELD(gateway.tls_cert), 0, NULL,
	  "PEM file with the server certificate (and its chain). With `tls_key`, enables the TLS "
	  "listener (TLS 1.2 or later, ECDHE with AES-GCM or ChaCha20)." },
	{ "gateway", "tls_key", TYPE_STRING, "", 0, 0, FIELD(gateway.tls_key), 0, NULL,
	  "PEM file with the private key of `tls_cert`." },
	{ "gateway", "workers", TYPE_UINT, "0", 0, 64, FIELD(gateway.workers), 0, NULL,
	  "Worker threads, each with its own event loop and connections. 0: one per core." },
	{ "gateway", "max_frame", TYPE_SIZE, "64k", 1 * KIB, 16 * MIB, FIELD(gateway.max_frame), 0,
	  NULL,
	  "Largest frame a device may send (announced in WELCOME); a payload may be up to "
	  "128 bytes less." },
	{ "gateway", "max_connections", TYPE_UINT, "10000", 1, 1000000,
	  FIELD(gateway.max_connections), 0, NULL,
	  "Devices connected at once; one more is answered ERROR overloaded. Mind the process's "
	  "open-file limit." },
	{ "gateway", "max_output", TYPE_SIZE, "1m", 16 * KIB, 256 * MIB, FIELD(gateway.max_output),
	  0, NULL,
	  "Bytes that may wait for one slow device to read them; past it the connection is "
	  "closed." },
	{ "gateway", "ack_timeout", TYPE_UINT, "250", 10, 60000, FIELD(gateway.ack_timeout), 0,
	  "ms",
	  "How long a DELIVER to an online device may wait for its DELIVER_ACK before it counts as "
	  "not delivered." },
	{ "gateway", "handshake_timeout", TYPE_UINT, "10000", 100, 600000,
	  FIELD(gateway.handshake_timeout), 0, "ms",
	  "Time from connecting to a valid HELLO and its check." },
	{ "gateway", "idle_timeout", TYPE_UINT, "120000", 1000, 86400000,
	  FIELD(gateway.idle_timeout), 0, "ms",
	  "A connection that sends nothing for this long is closed (announced in WELCOME; "
	  "devices PING well within it)." },
	{ "gateway", "drain_window", TYPE_UINT, "256", 1, 10000, FIELD(gateway.drain_window), 0,
	  NULL,
	  "Stored envelopes sent to a reconnecting device ahead of its DELIVER_ACKs; the next page "
	  "is read when half of them are acknowledged." },
	{ "store", "conninfo", TYPE_CONNINFO, "", 0, 0, FIELD(store.conninfo), 0, NULL,
	  "libpq connection string (`key=value` pairs or a `postgresql://` URI). Empty: libpq "
	  "defaults and the `PG*` environment variables." },
	{ "store", "connect_timeout", TYPE_UINT, "5", 1, 300, FIELD(store.connect_timeout), 0,
	  "seconds", "How long to wait for the database to accept a connection." },
	{ "store", "connections", TYPE_UINT, "4", 2, 64, FIELD(store.connections), 0, NULL,
	  "PostgreSQL connections of the offline store, writers included; the others read and "
	  "delete." },
	{ "store", "writers", TYPE_UINT, "0", 0, 63, FIELD(store.writers), 0, NULL,
	  "Connections that write envelopes, each for a fixed share of the devices (a device's "
	  "envelopes commit in order on its writer); less than `connections`. 0: 2, or 1 when "
	  "`connections` is 2." },
	{ "store", "batch_max", TYPE_UINT, "2000", 1, 100000, FIELD(store.batch_max), 0,
	  "recipients",
	  "Envelope rows written in one commit at most; what arrives while a batch is written "
	  "rides the next one." },
	{ "store", "max_pending_per_device", TYPE_UINT, "10000", 0, 100000000,
	  FIELD(store.max_pending_per_device), 0, "envelopes",
	  "Envelopes one device may have waiting; past it a SEND gets NACK queue_full. 0: no "
	  "limit." },
	{ "store", "max_inflight_bytes", TYPE_SIZE, "64m", 64 * KIB, 16ULL * 1024 * MIB,
	  FIELD(store.max_inflight_bytes), 0, NULL,
	  "Payload bytes waiting to be written to the database at most; past it SENDs that "
	  "need the store get NACK retry_later." },
	{ "store", "default_ttl", TYPE_UINT, "2592000", 1, 315360000, FIELD(store.default_ttl), 0,
	  "seconds",
	  "How long an envelope waits for an offline device (30 days); a SEND may ask for less. "
	  "Expired envelopes are deleted, never delivered." },
	{ "store", "expire_interval", TYPE_UINT, "60000", 100, 86400000,
	  FIELD(store.expire_interval), 0, "ms", "Time between sweeps for expired envelopes." },
	{ "store", "expire_batch", TYPE_UINT, "1000", 1, 1000000, FIELD(store.expire_batch), 0,
	  "rows", "Expired envelopes deleted by one statement of a sweep." },
	{ "admin", "listen", TYPE_ADDR, "127.0.0.1:7280", 0, 0, FIELD(admin.listen), 0, NULL,
	  "Address of the admin REST API: `host:port` or `[v6]:port`. Empty disables the admin "
	  "API." },
	{ "admin", "token", TYPE_SECRET, "", 0, 0, FIELD(admin.token),
	  FLAG_RELOADABLE | FLAG_SECRET, NULL,
	  "Bearer token for the admin API. When set, `token_file` is not read." },
	{ "admin", "token_file", TYPE_STRING, "", 0, 0, FIELD(admin.token_file), FLAG_RELOADABLE,
	  NULL,
	  "File whose first line is the admin bearer token (trailing whitespace removed); "
	  "read when `token` is empty." },
	{ "admin", "max_body", TYPE_SIZE, "64k", 1 * KIB, 16 * MIB, FIELD(admin.max_body), 0, NULL,
	  "Largest request body the admin API accepts." },
	{ "admin", "threads", TYPE_UINT, "2", 1, 64, FIELD(admin.threads), 0, NULL,
	  "Threads serving admin API requests." },
	{ "log", "level", TYPE_LOGLEVEL, "info", 0, 0, FIELD(log.level), FLAG_RELOADABLE, NULL,
	  "Lowest level written to stderr." },
};

/* Every known section, in the order of the reference. @about is NULL until
 * the section has keys. */
struct section {
	const char *name;
	const char *about;
};

static const struct section sections[] = {
	{ "gateway", "The device-facing listeners, worker threads and connection limits." },
	{ "store", "The PostgreSQL database." },
	{ "push.apns", NULL },
	{ "push.fcm", NULL },
	{ "admin", "The admin REST API." },
	{ "receipts", NULL },
	{ "log", "Logging to stderr." },
};

/* Where a value came from, for messages. */
struct origin {
	const char *file; /* a config file, at @line */
	unsigned line;
	const char *env; /* or this environment variable; neither: the default */
};

static void seterr(char *err, size_t errlen, const char *fmt, ...) FERRY_PRINTF(3, 4);
static void fail(char *err, size_t errlen, const struct origin *o, const struct entry *e,
		 const char *fmt, ...) FERRY_PRINTF(5, 6);

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* "file:line: [section] key: " or "environment VAR: ", then the problem. */
static void fail(char *err, size_t errlen, const struct origin *o, const struct entry *e,
		 const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || !errlen)
		return;
	if (o->env)
		n = snprintf(err, errlen, "environment %s: ", o->env);
	else if (o->file)
		n = snprintf(err, errlen, "%s:%u: [%s] %s: ", o->file, o->line, e->section, e->key);
	else
		n = snprintf(err, errlen, "default for [%s] %s: ", e->section, e->key);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static const char *errno_text(int errnum, char *tmp, size_t n)
{
	/* GNU strerror_r: thread-safe, returns the text (maybe not in @tmp). */
	return strerror_r(errnum, tmp, n);
}

static int is_string(const struct entry *e)
{
	return e->type == TYPE_STRING || e->type == TYPE_SECRET || e->type == TYPE_CONNINFO ||
	       e->type == TYPE_ADDR;
}

/* Secret values are never quoted in messages; conninfo may hold a password. */
static int is_secret(const struct entry *e)
{
	return e->type == TYPE_SECRET || e->type == TYPE_CONNINFO || (e->flags & FLAG_SECRET);
}

static char **string_field(struct ferry_config *cfg, const struct entry *e)
{
	return (char **)((char *)cfg + e->offset);
}

static const char *string_value(const struct ferry_config *cfg, const struct entry *e)
{
	return *(char *const *)((const char *)cfg + e->offset);
}

static const void *cfield(const struct ferry_config *cfg, const struct entry *e)
{
	return (const char *)cfg + e->offset;
}

static int is_control(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int has_control(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (is_control((unsigned char)s[i]))
			return 1;
	}
	return 0;
}

static void format_size(unsigned long long v, char *out, size_t n)
{
	if (v && v % GIB == 0)
		snprintf(out, n, "%llug", v / GIB);
	else if (v && v % MIB == 0)
		snprintf(out, n, "%llum", v / MIB);
	else if (v && v % KIB == 0)
		snprintf(out, n, "%lluk", v / KIB);
	else
		snprintf(out, n, "%llu", v);
}

static void format_bound(const struct entry *e, unsigned long long v, char *out, size_t n)
{
	if (e->type == TYPE_SIZE)
		format_size(v, out, n);
	else
		snprintf(out, n, "%llu", v);
}

/*
 * Leading decimal digits of @s: 0 and *end past them, -1 when @s does not
 * start with a digit (signs and spaces are not numbers here), 1 on overflow.
 */
static int parse_digits(const char *s, unsigned long long *v, const char **end)
{
	char *p;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	*v = strtoull(s, &p, 10);
	if (errno == ERANGE)
		return 1;
	*end = p;
	return 0;
}

/* Parse a UINT or SIZE value and check its bounds. */
static enum ferry_err parse_number(const struct entry *e, const char *s, unsigned long long *out,
				   char *why, size_t whylen)
{
	unsigned long long v, mult = 1;
	const char *end = s;
	char bound[32];
	int r = parse_digits(s, &v, &end);

	if (r == 0 && e->type == TYPE_SIZE && *end) {
		switch (tolower((unsigned char)*end++)) {
		case 'k':
			mult = KIB;
			break;
		case 'm':
			mult = MIB;
			break;
		case 'g':
			mult = GIB;
			break;
		default:
			r = -1;
		}
		if (r == 0 && v > ULLONG_MAX / mult)
			r = 1;
	}
	if (r < 0 || (r == 0 && *end)) {
		snprintf(why, whylen, "is not %s",
			 e->type == TYPE_SIZE ? "a size (e.g. 64k, 1m)" : "a whole number");
		return FERRY_EINVAL;
	}
	if (r > 0 || v * mult > e->max) {
		format_bound(e, e->max, bound, sizeof(bound));
		snprintf(why, whylen, "is above the maximum %s", bound);
		return FERRY_EINVAL;
	}
	if (v * mult < e->min) {
		format_bound(e, e->min, bound, sizeof(bound));
		snprintf(why, whylen, "is below the minimum %s", bound);
		return FERRY_EINVAL;
	}
	*out = v * mult;
	return FERRY_OK;
}

static enum ferry_err set_string(struct ferry_config *cfg, const struct entry *e, const char *s)
{
	char **field = string_field(cfg, e);
	char *copy = strdup(s);

	if (!copy)
		return FERRY_ENOMEM;
	free(*field);
	*field = copy;
	return FERRY_OK;
}

/* Parse @s by the type of @e into @cfg; on EINVAL @why says what is wrong. */
static enum ferry_err parse_value(struct ferry_config *cfg, const struct entry *e, const char *s,
				  char *why, size_t whylen)
{
	unsigned long long v;
	enum log_level level;
	enum ferry_err rc;
	uint16_t port;
	char *host;

	switch (e->type) {
	case TYPE_STRING:
	case TYPE_SECRET:
	case TYPE_CONNINFO:
		return set_string(cfg, e, s);
	case TYPE_ADDR:
		if (*s) {
			rc = config_split_addr(s, &host, &port);
			if (rc == FERRY_EINVAL)
				snprintf(why, whylen,
					 "is not host:port (e.g. 127.0.0.1:7280, [::1]:7280)");
			if (rc)
				return rc;
			free(host);
		}
		return set_string(cfg, e, s);
	case TYPE_UINT:
		if (e->max > UINT_MAX)
			ferry_panic("config table: [%s] %s: maximum too large", e->section, e->key);
		rc = parse_number(e, s, &v, why, whylen);
		if (!rc)
			*(unsigned *)((char *)cfg + e->offset) = (unsigned)v;
		return rc;
	case TYPE_SIZE:
		rc = parse_number(e, s, &v, why, whylen);
		if (!rc)
			*(size_t *)((char *)cfg + e->offset) = (size_t)v;
		return rc;
	case TYPE_LOGLEVEL:
		if (log_level_parse(s, &level)) {
			snprintf(why, whylen, "is not a log level (debug, info, warn, error)");
			return FERRY_EINVAL;
		}
		*(int *)((char *)cfg + e->offset) = (int)level;
		return FERRY_OK;
	}
	ferry_panic("config table: [%s] %s: bad type %d", e->section, e->key, (int)e->type);
}

/* Set @e from text @s that came from @o. FERRY_ECONFIG or FERRY_ENOMEM. */
static enum ferry_err set_value(struct ferry_config *cfg, const struct entry *e, const char *s,
				const struct origin *o, char *err, size_t errlen)
{
	size_t len = strlen(s);
	char why[128] = "";
	enum ferry_err rc;

	if (len > CONFIG_MAX_VALUE) {
		fail(err, errlen, o, e, "value is longer than %d bytes", CONFIG_MAX_VALUE);
		return FERRY_ECONFIG;
	}
	if (has_control(s, len)) {
		fail(err, errlen, o, e, "value contains a control character");
		return FERRY_ECONFIG;
	}
	rc = parse_value(cfg, e, s, why, sizeof(why));
	if (rc == FERRY_ENOMEM) {
		seterr(err, errlen, "out of memory");
		return rc;
	}
	if (rc) {
		if (is_secret(e))
			fail(err, errlen, o, e, "value %s", why);
		else
			fail(err, errlen, o, e, "'%s' %s", s, why);
		return FERRY_ECONFIG;
	}
	return FERRY_OK;
}

static enum ferry_err apply_defaults(struct ferry_config *cfg, char *err, size_t errlen)
{
	const struct origin o = { 0 };
	char msg[256];

	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		enum ferry_err rc = set_value(cfg, &table[i], table[i].def, &o, msg, sizeof(msg));

		if (rc == FERRY_ENOMEM) {
			seterr(err, errlen, "out of memory");
			return rc;
		}
		if (rc)
			ferry_panic("config table: %s", msg);
	}
	return FERRY_OK;
}

/* FERRY_<SECTION>_<KEY>: upper case, dots in the section become underscores. */
static void env_name(const struct entry *e, char *out, size_t n)
{
	int w = snprintf(out, n, "FERRY_%s_%s", e->section, e->key);

	if (w < 0 || (size_t)w >= n)
		ferry_panic("config table: [%s] %s: name too long", e->section, e->key);
	for (char *p = out; *p; p++)
		*p = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
}

static enum ferry_err apply_env(struct ferry_config *cfg, char *err, size_t errlen)
{
	char name[ENV_NAME_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		const struct origin o = { .env = name };
		const char *v;
		enum ferry_err rc;

		env_name(&table[i], name, sizeof(name));
		v = getenv(name);
		if (!v)
			continue;
		rc = set_value(cfg, &table[i], v, &o, err, errlen);
		if (rc)
			return rc;
	}
	return FERRY_OK;
}

/*
 * Read all of @path into @out (at most @cap bytes). @what names the file in
 * messages ("config file"). On failure @out is released.
 */
static enum ferry_err read_file(const char *path, size_t cap, const char *what, struct buf *out,
				char *err, size_t errlen)
{
	char chunk[4096], tmp[128];
	enum ferry_err rc = FERRY_OK;
	FILE *f;
	size_t n;

	buf_init(out, cap);
	f = fopen(path, "re");
	if (!f) {
		seterr(err, errlen, "cannot read %s '%s': %s", what, path,
		       errno_text(errno, tmp, sizeof(tmp)));
		return FERRY_ECONFIG;
	}
	do {
		n = fread(chunk, 1, sizeof(chunk), f);
		rc = buf_append(out, chunk, n);
	} while (!rc && n == sizeof(chunk));
	if (rc == FERRY_ETOOBIG) {
		seterr(err, errlen, "%s '%s' is larger than %zu bytes", what, path, cap);
		rc = FERRY_ECONFIG;
	} else if (rc) {
		seterr(err, errlen, "out of memory");
	} else if (ferror(f)) {
		seterr(err, errlen, "cannot read %s '%s': %s", what, path,
		       errno_text(errno, tmp, sizeof(tmp)));
		rc = FERRY_ECONFIG;
	}
	fclose(f);
	if (rc)
		buf_release(out);
	return rc;
}

/* State while parsing one file. */
struct parser {
	struct ferry_config *cfg;
	const char *file;
	unsigned line;
	const char *section;		    /* current [section], NULL before the first */
	unsigned set_on[ARRAY_SIZE(table)]; /* line where each key was set, 0: not yet */
	char *err;
	size_t errlen;
};

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	return s;
}

static const struct entry *find_entry(const char *section, const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		if (strcmp(table[i].section, section) == 0 && strcmp(table[i].key, key) == 0)
			return &table[i];
	}
	return NULL;
}

static enum ferry_err malformed(struct parser *p)
{
	seterr(p->err, p->errlen, "%s:%u: expected 'key = value' or '[section]'", p->file, p->line);
	return FERRY_ECONFIG;
}

/* "[name]", @s trimmed. */
static enum ferry_err parse_header(struct parser *p, char *s)
{
	size_t len = strlen(s);
	char *name;

	if (s[len - 1] != ']')
		return malformed(p);
	s[len - 1] = '\0';
	name = trim(s + 1);
	for (size_t i = 0; i < ARRAY_SIZE(sections); i++) {
		if (strcmp(sections[i].name, name) == 0) {
			p->section = sections[i].name;
			return FERRY_OK;
		}
	}
	seterr(p->err, p->errlen, "%s:%u: [%s]: unknown section", p->file, p->line, name);
	return FERRY_ECONFIG;
}

/* Remove optional double quotes around @*value; they must enclose it all. */
static enum ferry_err unquote(struct parser *p, const struct entry *e, char **value)
{
	const struct origin o = { .file = p->file, .line = p->line };
	char *v = *value, *close;

	if (*v != '"')
		return FERRY_OK;
	close = strchr(v + 1, '"');
	if (!close) {
		fail(p->err, p->errlen, &o, e, "missing closing quote");
		return FERRY_ECONFIG;
	}
	if (close[1]) {
		fail(p->err, p->errlen, &o, e, "text after the closing quote");
		return FERRY_ECONFIG;
	}
	*close = '\0';
	*value = v + 1;
	return FERRY_OK;
}

/* One line, without its newline, checked for length and control characters. */
static enum ferry_err parse_line(struct parser *p, char *line)
{
	const struct origin o = { .file = p->file, .line = p->line };
	const struct entry *e;
	char *s = trim(line), *eq, *key, *value;
	enum ferry_err rc;
	size_t i;

	if (*s == '\0' || *s == '#' || *s == ';')
		return FERRY_OK;
	if (*s == '[')
		return parse_header(p, s);
	eq = strchr(s, '=');
	if (!eq)
		return malformed(p);
	*eq = '\0';
	key = trim(s);
	value = trim(eq + 1);
	if (!*key)
		return malformed(p);
	if (!p->section) {
		seterr(p->err, p->errlen, "%s:%u: %s: key before any [section] header", p->file,
		       p->line, key);
		return FERRY_ECONFIG;
	}
	e = find_entry(p->section, key);
	if (!e) {
		seterr(p->err, p->errlen, "%s:%u: [%s] %s: unknown key", p->file, p->line,
		       p->section, key);
		return FERRY_ECONFIG;
	}
	i = (size_t)(e - table);
	if (p->set_on[i]) {
		fail(p->err, p->errlen, &o, e, "duplicate key (first set on line %u)",
		     p->set_on[i]);
		return FERRY_ECONFIG;
	}
	p->set_on[i] = p->line;
	rc = unquote(p, e, &value);
	if (rc)
		return rc;
	return set_value(p->cfg, e, value, &o, p->err, p->errlen);
}

/* Parse @text (@len bytes, NUL-terminated, modified in place). */
static enum ferry_err parse_text(struct parser *p, char *text, size_t len)
{
	char *s = text, *end = text + len;

	if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3; /* a UTF-8 byte order mark */
	while (s < end) {
		char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
		enum ferry_err rc;

		p->line++;
		if (n && s[n - 1] == '\r')
			n--;
		s[n] = '\0';
		if (n > CONFIG_MAX_VALUE) {
			seterr(p->err, p->errlen, "%s:%u: line is longer than %d bytes", p->file,
			       p->line, CONFIG_MAX_VALUE);
			return FERRY_ECONFIG;
		}
		if (has_control(s, n)) {
			seterr(p->err, p->errlen, "%s:%u: line contains a control character",
			       p->file, p->line);
			return FERRY_ECONFIG;
		}
		rc = parse_line(p, s);
		if (rc)
			return rc;
		s = nl ? nl + 1 : end;
	}
	return FERRY_OK;
}

static enum ferry_err load_file(struct ferry_config *cfg, const char *path, char *err,
				size_t errlen)
{
	struct parser p = { .cfg = cfg, .file = path, .err = err, .errlen = errlen };
	enum ferry_err rc;
	struct buf text;

	rc = read_file(path, CONFIG_MAX_FILE, "config file", &text, err, errlen);
	if (rc)
		return rc;
	if (text.len)
		rc = parse_text(&p, text.data, text.len);
	buf_release(&text);
	return rc;
}

enum ferry_err config_load(const char *path, struct ferry_config **out, char *err, size_t errlen)
{
	struct ferry_config *cfg;
	enum ferry_err rc;

	*out = NULL;
	seterr(err, errlen, "%s", "");
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		seterr(err, errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	rc = apply_defaults(cfg, err, errlen);
	if (rc)
		goto fail;
	if (path) {
		cfg->path = strdup(path);
		if (!cfg->path) {
			seterr(err, errlen, "out of memory");
			rc = FERRY_ENOMEM;
			goto fail;
		}
		rc = load_file(cfg, path, err, errlen);
		if (rc)
			goto fail;
	}
	rc = apply_env(cfg, err, errlen);
	if (rc)
		goto fail;
	*out = cfg;
	return FERRY_OK;

fail:
	config_free(cfg);
	return rc;
}

void config_free(struct ferry_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		if (is_string(&table[i]))
			free(*string_field(cfg, &table[i]));
	}
	free(cfg->path);
	free(cfg);
}

/* ---- masking ---------------------------------------------------------------- */

static int is_password_key(const char *k, size_t n)
{
	/* "password", and "sslpassword" (the client key's passphrase). */
	return (n == 8 && strncasecmp(k, "password", 8) == 0) ||
	       (n == 11 && strncasecmp(k, "sslpassword", 11) == 0);
}

/* A URI query key, %XX-decoded as libpq does, into @out (NUL-terminated). */
static size_t uri_decode_key(const char *k, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 1 < outlen; i++) {
		if (k[i] == '%' && i + 2 < n && isxdigit((unsigned char)k[i + 1]) &&
		    isxdigit((unsigned char)k[i + 2])) {
			char hex[3] = { k[i + 1], k[i + 2], '\0' };

			out[o++] = (char)strtoul(hex, NULL, 16);
			i += 2;
		} else {
			out[o++] = k[i];
		}
	}
	out[o] = '\0';
	return o;
}

/*
 * postgresql://user:password@host/db?password=x&sslpassword=y: the password
 * in the user info and password query parameters are masked.
 */
static enum ferry_err mask_uri(const char *s, size_t scheme_len, struct buf *out)
{
	const char *p = s + scheme_len, *at, *colon, *q;
	enum ferry_err rc = FERRY_OK;
	char key[32];

	at = p + strcspn(p, "@/");
	if (*at == '@') {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			rc = buf_append(out, s, (size_t)(colon + 1 - s));
			rc = rc ? rc : buf_puts(out, MASK);
			s = at;
		}
		p = at + 1;
	}
	q = strchr(p, '?');
	if (!q || rc)
		return rc ? rc : buf_puts(out, s);
	rc = buf_append(out, s, (size_t)(q + 1 - s));
	for (p = q + 1; !rc && *p;) {
		size_t plen = strcspn(p, "&");
		const char *eq = memchr(p, '=', plen);
		size_t klen = eq ? (size_t)(eq - p) : plen;

		klen = uri_decode_key(p, klen, key, sizeof(key));
		if (eq && is_password_key(key, klen)) {
			rc = buf_append(out, p, (size_t)(eq + 1 - p));
			rc = rc ? rc : buf_puts(out, MASK);
		} else {
			rc = buf_append(out, p, plen);
		}
		p += plen;
		if (!rc && *p == '&')
			rc = buf_append(out, p++, 1);
	}
	return rc;
}

/* Skip a keyword=value value as libpq reads it: 'quoted' or bare, \ escapes. */
static const char *skip_conninfo_value(const char *p)
{
	int quoted = *p == '\'';

	if (quoted)
		p++;
	while (*p) {
		if (quoted && *p == '\'')
			return p + 1;
		if (!quoted && isspace((unsigned char)*p))
			return p;
		if (*p == '\\' && p[1])
			p++;
		p++;
	}
	return p;
}

/*
 * Copy a libpq conninfo to @out with the values of password keywords masked.
 * "dbname" may itself hold a connection string or URI (libpq expands it); such
 * a value is masked whole. FERRY_EINVAL when it cannot be parsed: the caller
 * then masks everything.
 */
static enum ferry_err mask_conninfo(const char *s, struct buf *out)
{
	const char *p = s, *kw, *kwend, *val, *vend;
	enum ferry_err rc = FERRY_OK;

	if (strncmp(s, "postgresql://", 13) == 0)
		return mask_uri(s, 13, out);
	if (strncmp(s, "postgres://", 11) == 0)
		return mask_uri(s, 11, out);
	while (!rc && *p) {
		kw = p;
		while (isspace((unsigned char)*kw))
			kw++;
		kwend = kw;
		while (*kwend && *kwend != '=' && !isspace((unsigned char)*kwend))
			kwend++;
		if (kwend == kw)
			return *kw ? FERRY_EINVAL : buf_puts(out, p);
		val = kwend + strspn(kwend, " \t\n\r\f\v");
		if (*val++ != '=')
			return FERRY_EINVAL;
		val += strspn(val, " \t\n\r\f\v");
		vend = skip_conninfo_value(val);
		if (is_password_key(kw, (size_t)(kwend - kw)) ||
		    ((size_t)(kwend - kw) == 6 && strncmp(kw, "dbname", 6) == 0 &&
		     (memchr(val, '=', (size_t)(vend - val)) ||
		      memmem(val, (size_t)(vend - val), "://", 3)))) {
			rc = buf_append(out, p, (size_t)(val - p));
			rc = rc ? rc : buf_puts(out, MASK);
		} else {
			rc = buf_append(out, p, (size_t)(vend - p));
		}
		p = vend;
	}
	return rc;
}

/* ---- printing --------------------------------------------------------------- */

/* The value of @e in @cfg as config_print() shows it; secrets masked. */
static enum ferry_err format_value(const struct ferry_config *cfg, const struct entry *e,
				   struct buf *out)
{
	const char *s;
	char tmp[32];
	int level;

	switch (e->type) {
	case TYPE_UINT:
		return buf_printf(out, "%u", *(const unsigned *)cfield(cfg, e));
	case TYPE_SIZE:
		format_size(*(const size_t *)cfield(cfg, e), tmp, sizeof(tmp));
		return buf_puts(out, tmp);
	case TYPE_LOGLEVEL:
		level = *(const int *)cfield(cfg, e);
		return buf_puts(out, log_level_name((enum log_level)level));
	default:
		break;
	}
	s = string_value(cfg, e);
	if (!*s)
		return FERRY_OK;
	if (e->type == TYPE_CONNINFO) {
		if (mask_conninfo(s, out) == FERRY_OK)
			return FERRY_OK;
		buf_reset(out);
		return buf_puts(out, MASK);
	}
	return buf_puts(out, is_secret(e) ? MASK : s);
}

static int needs_quotes(const char *s, size_t len)
{
	return len == 0 || s[0] == ' ' || s[0] == '\t' || s[0] == '"' || s[len - 1] == ' ' ||
	       s[len - 1] == '\t';
}

void config_print(const struct ferry_config *cfg, FILE *out)
{
	struct buf b;
	int first = 1;

	buf_init(&b, PRINT_MAX);
	for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
		int header = 0;

		for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
			const struct entry *e = &table[i];
			const char *v;

			if (strcmp(e->section, sections[s].name) != 0)
				continue;
			if (!header) {
				fprintf(out, "%s[%s]\n", first ? "" : "\n", e->section);
				header = 1;
				first = 0;
			}
			buf_reset(&b);
			v = format_value(cfg, e, &b) == FERRY_OK ? (b.data ? b.data : "") : MASK;
			if (needs_quotes(v, strlen(v)))
				fprintf(out, "%s = \"%s\"\n", e->key, v);
			else
				fprintf(out, "%s = %s\n", e->key, v);
		}
	}
	buf_release(&b);
}

/* ---- reference ---------------------------------------------------------------- */

static const char reference_intro[] =
	"# ferry configuration\n"
	"\n"
	"<!-- Generated by `ferryd config-reference` from the table in common/config.c.\n"
	"     Do not edit: change the table and run `make docs`. -->\n"
	"\n"
	"ferryd reads one INI file, given with `ferryd -c FILE`. Every key has a default,\n"
	"so an empty file, or no file, is a valid configuration.\n"
	"`docs/ferry.ini.example` lists every key at its default.\n"
	"\n"
	"## File format\n"
	"\n"
	"- `[section]` starts a section; each key belongs to the section above it, and a key\n"
	"  before the first section header is an error.\n"
	"- `key = value`; whitespace around keys and values is ignored.\n"
	"- A value may be put in double quotes, to write an empty value (`token = \"\"`), keep\n"
	"  leading or trailing spaces, or just for clarity. There are no escapes: a quoted\n"
	"  value cannot contain `\"`.\n"
	"- Lines starting with `#` or `;` are comments. A comment must be on a line of its\n"
	"  own: in `threads = 4 # four` the value is `4 # four`, which is an error.\n"
	"- An unknown section or key, a key given twice, a value of the wrong type or out of\n"
	"  range are errors: the whole configuration is refused, and the message names file,\n"
	"  line and key, e.g. `ferry.ini:5: [admin] threads: '100' is above the maximum 64`.\n";

static const char reference_sources[] =
	"\n"
	"## Sources and precedence\n"
	"\n"
	"Built-in defaults, then the file, then the environment: a later source wins.\n"
	"\n"
	"Every key can be set in the environment as `FERRY_<SECTION>_<KEY>`: section and key\n"
	"in upper case, dots in the section name replaced by underscores. `[store] conninfo`\n"
	"is `FERRY_STORE_CONNINFO`; `[push.apns] key_file` would be\n"
	"`FERRY_PUSH_APNS_KEY_FILE`. A variable that is set, even to the empty string,\n"
	"overrides the file. A bad value is an error naming the variable, e.g.\n"
	"`environment FERRY_ADMIN_THREADS: '0' is below the minimum 1`.\n"
	"\n"
	"## Checking and reloading\n"
	"\n"
	"`ferryd check-config -c FILE` loads the configuration as the daemon would (file and\n"
	"environment) and prints the effective values as INI, secrets masked as `********`\n"
	"(in `conninfo`, only the password). It exits non-zero with the error message when\n"
	"the configuration is invalid.\n"
	"\n"
	"On SIGHUP ferryd loads and checks the whole configuration again. If it is valid,\n"
	"the keys marked *yes* under *reload* take effect; changes to the other keys are\n"
	"logged as needing a restart. If it is invalid, the error is logged and the running\n"
	"configuration stays. The environment is the one ferryd was started with.\n";

static const char reference_units[] =
	"\n"
	"## Values\n"
	"\n"
	"- *integer*: decimal digits, no sign.\n"
	"- *size*: bytes, as decimal digits with an optional suffix `k`, `m` or `g`\n"
	"  (either case) for KiB, MiB and GiB: `64k` is 65536 bytes.\n"
	"- *address*: `host:port`, or `[v6 address]:port`; port 0 to 65535.\n"
	"- *log level*: `debug`, `info`, `warn` or `error`.\n"
	"- *secret* values, and the passwords in *conninfo* values, are printed as `********`.\n";

static const char *type_name(enum type t)
{
	static const char *const names[] = {
		[TYPE_STRING] = "string", [TYPE_SECRET] = "secret", [TYPE_CONNINFO] = "conninfo",
		[TYPE_UINT] = "integer",  [TYPE_SIZE] = "size",	    [TYPE_LOGLEVEL] = "log level",
		[TYPE_ADDR] = "address",
	};

	return names[t];
}

/* Markdown table cell text: a | would end the cell. */
static void put_cell(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
}

static void print_reference_row(FILE *out, const struct entry *e)
{
	char env[ENV_NAME_MAX], lo[32], hi[32];

	env_name(e, env, sizeof(env));
	fprintf(out, "| `%s` | %s", e->key, type_name(e->type));
	if (e->unit)
		fprintf(out, " (%s)", e->unit);
	if (*e->def)
		fprintf(out, " | `%s` | ", e->def);
	else
		fputs(" | *empty* | ", out);
	if (e->type == TYPE_UINT || e->type == TYPE_SIZE) {
		format_bound(e, e->min, lo, sizeof(lo));
		format_bound(e, e->max, hi, sizeof(hi));
		fprintf(out, "%s to %s", lo, hi);
	} else if (e->type == TYPE_LOGLEVEL) {
		fputs("`debug`, `info`, `warn`, `error`", out);
	} else if (e->type == TYPE_ADDR) {
		fputs("host:port, or empty", out);
	}
	fprintf(out, " | %s | `%s` | ", e->flags & FLAG_RELOADABLE ? "yes" : "restart", env);
	put_cell(out, e->help);
	fputs(" |\n", out);
}

void config_print_reference(FILE *out)
{
	fputs(reference_intro, out);
	fprintf(out,
		"- Lines are at most %d bytes long, and the file is at most %d bytes.\n"
		"- A UTF-8 byte order mark and Windows line ends are accepted.\n",
		CONFIG_MAX_VALUE, CONFIG_MAX_FILE);
	fputs(reference_sources, out);
	fputs(reference_units, out);
	for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
		int rows = 0;

		fprintf(out, "\n## [%s]\n\n", sections[s].name);
		if (sections[s].about)
			fprintf(out, "%s\n\n", sections[s].about);
		for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
			if (strcmp(table[i].section, sections[s].name) != 0)
				continue;
			if (!rows++)
				fputs("| key | type | default | range | reload | environment | "
				      "description |\n"
				      "|---|---|---|---|---|---|---|\n",
				      out);
			print_reference_row(out, &table[i]);
		}
		if (!rows)
			fputs("No keys yet.\n", out);
	}
}

/* ---- reload, token, addresses ------------------------------------------------ */

static int same_value(const struct ferry_config *a, const struct ferry_config *b,
		      const struct entry *e)
{
	switch (e->type) {
	case TYPE_UINT:
		return *(const unsigned *)cfield(a, e) == *(const unsigned *)cfield(b, e);
	case TYPE_SIZE:
		return *(const size_t *)cfield(a, e) == *(const size_t *)cfield(b, e);
	case TYPE_LOGLEVEL:
		return *(const int *)cfield(a, e) == *(const int *)cfield(b, e);
	default:
		return strcmp(string_value(a, e), string_value(b, e)) == 0;
	}
}

void config_diff(const struct ferry_config *old, const struct ferry_config *new,
		 void (*cb)(const char *section, const char *key, int reloadable, void *arg),
		 void *arg)
{
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		if (!same_value(old, new, &table[i]))
			cb(table[i].section, table[i].key, !!(table[i].flags & FLAG_RELOADABLE),
			   arg);
	}
}

/*
 * An admin token travels as "Authorization: Bearer <token>", and the
 * whitespace around a header value and after "Bearer" is not part of the
 * token: one that starts or ends with a space or tab could never match.
 */
static int token_padded(const char *s, size_t n)
{
	return n && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t');
}

enum ferry_err config_admin_token(const struct ferry_config *cfg, char **out, char *err,
				  size_t errlen)
{
	const char *path = cfg->admin.token_file, *problem = NULL;
	enum ferry_err rc;
	struct buf text;
	char *nl;
	size_t n;

	*out = NULL;
	if (cfg->admin.token[0] || !path[0]) {
		if (token_padded(cfg->admin.token, strlen(cfg->admin.token))) {
			seterr(err, errlen,
			       "[admin] token: value starts or ends with a space or tab");
			return FERRY_ECONFIG;
		}
		*out = strdup(cfg->admin.token);
		if (!*out)
			goto nomem;
		return FERRY_OK;
	}
	rc = read_file(path, CONFIG_MAX_FILE, "token file", &text, err, errlen);
	if (rc)
		return rc;
	nl = text.len ? memchr(text.data, '\n', text.len) : NULL;
	n = nl ? (size_t)(nl - text.data) : text.len;
	while (n && isspace((unsigned char)text.data[n - 1]))
		n--;
	if (n == 0)
		problem = "is empty";
	else if (n > CONFIG_MAX_VALUE)
		problem = "is too long";
	else if (has_control(text.data, n))
		problem = "contains a control character";
	else if (token_padded(text.data, n))
		problem = "starts with a space or tab";
	if (problem) {
		seterr(err, errlen, "[admin] token_file: the first line of '%s' %s", path, problem);
		buf_release(&text);
		return FERRY_ECONFIG;
	}
	text.data[n] = '\0';
	*out = strdup(text.data);
	buf_release(&text);
	if (!*out)
		goto nomem;
	return FERRY_OK;

nomem:
	seterr(err, errlen, "out of memory");
	return FERRY_ENOMEM;
}

static int parse_port(const char *s, uint16_t *port)
{
	unsigned v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

enum ferry_err config_split_addr(const char *addr, char **host, uint16_t *port)
{
	const char *h, *colon;
	size_t hlen;
	uint16_t p;
	char *copy;

	if (!addr)
		return FERRY_EINVAL;
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');

		if (!close || close[1] != ':')
			return FERRY_EINVAL;
		h = addr + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return FERRY_EINVAL;
		h = addr;
		hlen = (size_t)(colon - addr);
		if (memchr(h, ':', hlen))
			return FERRY_EINVAL; /* an IPv6 address needs brackets */
	}
	if (hlen == 0 || parse_port(colon + 1, &p))
		return FERRY_EINVAL;
	for (size_t i = 0; i < hlen; i++) {
		unsigned char c = (unsigned char)h[i];

		/* Host names and addresses are printable ASCII. */
		if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '/')
			return FERRY_EINVAL;
	}
	copy = malloc(hlen + 1);
	if (!copy)
		return FERRY_ENOMEM;
	memcpy(copy, h, hlen);
	copy[hlen] = '\0';
	*host = copy;
	*port = p;
	return FERRY_OK;
}
