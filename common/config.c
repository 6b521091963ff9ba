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
 * (STRING, SECRET, CONNINFO, ADDR, CHOICE, APPLE_ID), unsigned for UINT,
 * size_t for SIZE and int (enum log_level) for LOGLEVEL. The offset is into
 * struct ferry_config, or, for rows flagged FLAG_APP, into one app's struct
 * config_push_app: every function that reads or writes a field takes that
 * base, and only the code that picks the base knows about apps.
 *
 * Apps. [push.apns] and [push.fcm] (the FLAG_APP sections) hold the default
 * app, apps[0]; [push.apns.NAME] and [push.fcm.NAME] hold further apps with
 * the same rows, created at their defaults by the first header that names
 * them. Environment overrides reach the default app only. Rows flagged
 * FLAG_TOGETHER in one section are set all or none, checked per app once the
 * file and the environment are in.
 *
 * Diagnostics are one line in the caller's buffer, "file:line: [section] key:
 * problem" or "environment VAR: problem". The offending value is quoted unless
 * the key is secret. Lines and values with control characters are refused, so
 * neither a message nor check-config output can carry one.
 *
 * Ownership: a struct ferry_config owns its strings and its apps;
 * config_free() walks the table to release them. Everything here runs on the
 * thread that loads the configuration (startup, SIGHUP); a loaded config is
 * read-only.
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
#include "common/config_int.h"
#include "common/log.h"
#include "common/secfile.h"
#include "common/banned.h"

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)

/* A printed value: masking can lengthen a conninfo a little. */
#define PRINT_MAX (4 * CONFIG_MAX_VALUE)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* Named apps at most ([push.apns.NAME]), the default one not counted: keeps
 * a hostile file from making the app lookups quadratic in its size. */
#define APPS_MAX 1000
/* An Apple key ID or team ID: exactly this many of [A-Z0-9]. */
#define APPLE_ID_LEN 10

#define FIELD(f) offsetof(struct ferry_config, f)
#define APP_FIELD(f) offsetof(struct config_push_app, f)

static const struct entry table[] = {
	{ "gateway", "listen", TYPE_ADDR, "0.0.0.0:7222", 0, 0, FIELD(gateway.listen), 0, NULL,
	  "Address devices connect to over plain TCP: `host:port` or `[v6]:port`. Empty "
	  "disables the plain listener." },
	{ "gateway", "tls_listen", TYPE_ADDR, "0.0.0.0:7223", 0, 0, FIELD(gateway.tls_listen), 0,
	  NULL,
	  "Address devices connect to over TLS; used when `tls_cert` and `tls_key` are set." },
	{ "gateway", "tls_cert", TYPE_STRING, "", 0, 0, FIELD(gateway.tls_cert),
	  FLAG_RELOADABLE | FLAG_TOGETHER, NULL,
	  "PEM file with the server certificate (and its chain). `tls_cert` and `tls_key` go "
	  "together and enable the TLS listener: TLS 1.2 and 1.3, Mozilla's intermediate ciphers. "
	  "Both files are read again on every SIGHUP, also when the paths did not change (a "
	  "renewed certificate); connections made before keep theirs. Turning TLS on or off "
	  "needs a restart." },
	{ "gateway", "tls_key", TYPE_STRING, "", 0, 0, FIELD(gateway.tls_key),
	  FLAG_RELOADABLE | FLAG_TOGETHER, NULL,
	  "PEM file with the private key of `tls_cert`, unencrypted. It must be accessible to its "
	  "owner only (mode 0600 or 0400): ferryd refuses to start otherwise, and a SIGHUP with "
	  "such a key, or one that does not match the certificate, keeps the old pair." },
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
	{ "gateway", "max_handshakes", TYPE_UINT, "2048", 1, 100000, FIELD(gateway.max_handshakes),
	  0, "connections",
	  "Per worker thread, HELLOs being checked at once (the secret and a database lookup, "
	  "then the registration). At the limit the worker stops accepting connections until a "
	  "quarter of them are done; new ones wait in the kernel's listen backlog. This paces a "
	  "reconnect storm so that the devices already connected keep their latency. "
	  "Connections that send nothing are not counted (handshake_timeout closes them)." },
	{ "gateway", "write_timeout", TYPE_UINT, "30000", 1000, 3600000,
	  FIELD(gateway.write_timeout), 0, "ms",
	  "A connection whose output waits this long without the device reading any of it is "
	  "closed: a device that stops reading while it keeps sending (PINGs, say) must not hold "
	  "its envelopes and memory for ever. What it had not acknowledged stays stored." },
	{ "gateway", "drain_window", TYPE_UINT, "256", 1, 10000, FIELD(gateway.drain_window), 0,
	  NULL,
	  "Stored envelopes sent to a reconnecting device ahead of its DELIVER_ACKs; the next page "
	  "is read when half of them are acknowledged." },
	{ "gateway", "max_frames_per_s", TYPE_UINT, "100", 1, 1000000,
	  FIELD(gateway.max_frames_per_s), 0, "frames",
	  "Per connection, the sustained rate of frames that cost work without carrying an "
	  "envelope: PING, PONG, and DELIVER_ACKs naming an id not in flight on the connection "
	  "(late acks of DELIVERs whose ack deadline passed excepted). Past it (and "
	  "`frames_burst`) the connection is closed with ERROR rate_limited. SEND, RECEIPT and "
	  "the acks of what the device was sent are never counted." },
	{ "gateway", "frames_burst", TYPE_UINT, "500", 1, 1000000, FIELD(gateway.frames_burst), 0,
	  "frames",
	  "How many of the frames `max_frames_per_s` counts a connection may send at once, "
	  "ahead of the rate." },
	{ "gateway", "auth_failures_per_addr", TYPE_UINT, "60", 0, 1000000,
	  FIELD(gateway.auth_failures_per_addr), 0, "handshakes",
	  "Failed handshakes (unknown device or wrong secret) from one address (IPv4, or an IPv6 "
	  "/64) in `auth_failure_window`; past it every HELLO from there is answered ERROR "
	  "rate_limited, unchecked, until the window ends. Mind devices behind a shared NAT. 0: "
	  "no limit." },
	{ "gateway", "auth_failures_per_device", TYPE_UINT, "10", 0, 1000000,
	  FIELD(gateway.auth_failures_per_device), 0, "handshakes",
	  "Failed handshakes naming one device in `auth_failure_window`; past it that device's "
	  "HELLOs are answered ERROR rate_limited, unchecked, until the window ends. 0: no "
	  "limit." },
	{ "gateway", "auth_failure_window", TYPE_UINT, "60", 1, 86400,
	  FIELD(gateway.auth_failure_window), 0, "seconds",
	  "The window in which failed handshakes are counted." },
	{ "gateway", "user", TYPE_STRING, "", 0, 0, FIELD(gateway.user), 0, NULL,
	  "Once its sockets are bound and its keys loaded, ferryd (started as root) switches to "
	  "this user: its uid, `group` (or the user's login group), no supplementary groups; "
	  "then it checks that it cannot become root again. Started as another user, ferryd "
	  "refuses to start unless it runs as this user and group already. After the switch it "
	  "must still read the config file, `tls_cert`, `tls_key`, `token_file`, `ca_file` and "
	  "the push credential files (SIGHUP reads them again; APNs `cert_file` and `cert_key` "
	  "are read for each new connection), so the key files must be owned by this user, and "
	  "it must reach the PostgreSQL socket: ferryd checks both right after the switch and "
	  "refuses to start if it cannot. Empty: no switch." },
	{ "gateway", "group", TYPE_STRING, "", 0, 0, FIELD(gateway.group), 0, NULL,
	  "The group to switch to with `user`. Empty: the user's login group." },
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
	{ "store", "require_durable", TYPE_CHOICE, "on", 0, 0, FIELD(store.require_durable), 0,
	  NULL,
	  "What `ferryd run` does when the database has `fsync` or `synchronous_commit` off, so "
	  "that a commit, and the ACK that follows it, does not survive a crash of the database "
	  "host: `on` refuses to start (exit code 5), `warn` starts and logs a warning, `off` "
	  "does not look. Only for throwaway test and benchmark databases is it anything but "
	  "`on`." },
	{ "push", "mode", TYPE_CHOICE, "background", 0, 0, FIELD(push.mode), FLAG_RELOADABLE, NULL,
	  "What a wake-up push is: `background`, a silent push that lets the app wake and "
	  "connect; or `alert`, a visible notification showing `alert_text`." },
	{ "push", "alert_text", TYPE_STRING, "New message", 0, 0, FIELD(push.alert_text),
	  FLAG_RELOADABLE, NULL,
	  "The text of an alert-mode wake-up push; the same for every device and never anything "
	  "from the envelopes." },
	{ "push", "min_interval", TYPE_UINT, "30", 1, 86400, FIELD(push.min_interval),
	  FLAG_RELOADABLE, "seconds",
	  "At most one wake-up push per device per this many seconds while it stays away." },
	{ "push", "max_pending", TYPE_UINT, "100000", 1, 10000000, FIELD(push.max_pending), 0, NULL,
	  "Wake-ups waiting at once; past it the oldest pending one is dropped (counted)." },
	{ "push", "max_attempts", TYPE_UINT, "14", 1, 100, FIELD(push.max_attempts),
	  FLAG_RELOADABLE, NULL,
	  "Tries of one wake-up push, the first one included, when the provider fails "
	  "transiently. With the back-off (1 s doubling to 15 minutes) the default rides through "
	  "a provider outage of at least 31 minutes; fewer give up sooner, and a device whose "
	  "wake-up gave up is woken by its next envelope." },
	{ "push", "ttl", TYPE_UINT, "86400", 0, 2419200, FIELD(push.ttl), FLAG_RELOADABLE,
	  "seconds",
	  "How long the provider keeps trying to deliver a wake-up (apns-expiration, FCM android "
	  "ttl); 0: try once." },
	{ "push", "ca_file", TYPE_STRING, "", 0, 0, FIELD(push.ca_file), FLAG_RELOADABLE, NULL,
	  "PEM bundle of the CAs trusted for the providers' servers. Empty: the system's." },
	{ "push", "connections", TYPE_UINT, "1", 1, 16, FIELD(push.connections), 0, NULL,
	  "HTTP/2 connections per provider origin." },
	{ "push", "timeout", TYPE_UINT, "30000", 1000, 600000, FIELD(push.timeout), 0, "ms",
	  "How long one request to a provider may take." },
	{ "push.apns", "endpoint", TYPE_STRING, "https://api.push.apple.com", 0, 0,
	  APP_FIELD(apns.endpoint), FLAG_APP | FLAG_RELOADABLE, NULL,
	  "APNs origin for devices registered for production." },
	{ "push.apns", "sandbox_endpoint", TYPE_STRING, "https://api.sandbox.push.apple.com", 0, 0,
	  APP_FIELD(apns.sandbox_endpoint), FLAG_APP | FLAG_RELOADABLE, NULL,
	  "APNs origin for devices registered for the sandbox (development builds)." },
	{ "push.apns", "key_file", TYPE_STRING, "", 0, 0, APP_FIELD(apns.key_file),
	  FLAG_APP | FLAG_RELOADABLE | FLAG_TOGETHER, NULL,
	  "The `.p8` token-auth key from Apple, accessible to its owner only (mode 0600 or 0400; "
	  "refused otherwise). `key_file`, `key_id` and `team_id` go together and enable APNs for "
	  "the app." },
	{ "push.apns", "key_id", TYPE_APPLE_ID, "", 0, 0, APP_FIELD(apns.key_id),
	  FLAG_APP | FLAG_RELOADABLE | FLAG_TOGETHER, NULL, "The ID of the key in `key_file`." },
	{ "push.apns", "team_id", TYPE_APPLE_ID, "", 0, 0, APP_FIELD(apns.team_id),
	  FLAG_APP | FLAG_RELOADABLE | FLAG_TOGETHER, NULL,
	  "The Apple developer team the key belongs to." },
	{ "push.apns", "cert_file", TYPE_STRING, "", 0, 0, APP_FIELD(apns.cert_file),
	  FLAG_APP | FLAG_RELOADABLE, NULL,
	  "Certificate-based authentication instead of `key_file`: the app's APNs client "
	  "certificate (PEM). The two exclude each other; either enables APNs for the app. When "
	  "it holds the key too (`cert_key` empty), it must be accessible to its owner only." },
	{ "push.apns", "cert_key", TYPE_STRING, "", 0, 0, APP_FIELD(apns.cert_key),
	  FLAG_APP | FLAG_RELOADABLE, NULL,
	  "The private key (PEM, unencrypted) of `cert_file`, accessible to its owner only (mode "
	  "0600 or 0400; refused otherwise); empty: it is in `cert_file`." },
	{ "push.apns", "topic", TYPE_STRING, "", 0, 0, APP_FIELD(apns.topic),
	  FLAG_APP | FLAG_RELOADABLE, NULL,
	  "The default `apns-topic` (the app's bundle ID), for devices registered without "
	  "one." },
	{ "push.fcm", "endpoint", TYPE_STRING, "https://fcm.googleapis.com", 0, 0,
	  APP_FIELD(fcm.endpoint), FLAG_APP | FLAG_RELOADABLE, NULL, "FCM origin." },
	{ "push.fcm", "service_account", TYPE_STRING, "", 0, 0, APP_FIELD(fcm.service_account),
	  FLAG_APP | FLAG_RELOADABLE, NULL,
	  "The Google service-account JSON file of the app's Firebase project; enables FCM for "
	  "the app. It holds a private key: accessible to its owner only (mode 0600 or 0400; "
	  "refused otherwise)." },
	{ "admin", "listen", TYPE_ADDR, "127.0.0.1:7280", 0, 0, FIELD(admin.listen), 0, NULL,
	  "Address of the admin REST API: `host:port` or `[v6]:port`. Empty disables the admin "
	  "API." },
	{ "admin", "token", TYPE_SECRET, "", 0, 0, FIELD(admin.token),
	  FLAG_RELOADABLE | FLAG_SECRET, NULL,
	  "Bearer token for the admin API. When set, `token_file` is not read." },
	{ "admin", "token_file", TYPE_STRING, "", 0, 0, FIELD(admin.token_file), FLAG_RELOADABLE,
	  NULL,
	  "File whose first line is the admin bearer token (trailing whitespace removed); "
	  "read when `token` is empty. It must be accessible to its owner only (mode 0600 or "
	  "0400); ferryd refuses it otherwise." },
	{ "admin", "max_body", TYPE_SIZE, "64k", 1 * KIB, 16 * MIB, FIELD(admin.max_body), 0, NULL,
	  "Largest request body the admin API accepts." },
	{ "admin", "threads", TYPE_UINT, "2", 1, 64, FIELD(admin.threads), 0, NULL,
	  "Threads serving admin API requests." },
	{ "admin", "request_timeout", TYPE_UINT, "15", 1, 3600, FIELD(admin.request_timeout), 0,
	  "seconds",
	  "A client connection that sends nothing for this long, before or within a request "
	  "(a half-sent header, a stalled body), or between requests, is closed." },
	{ "receipts", "max_batch", TYPE_UINT, "512", 1, 512, FIELD(receipts.max_batch), 0, NULL,
	  "Receipt ids gathered for one (device, peer user, kind) before they go out at once, "
	  "as one DELIVER_RECEIPT." },
	{ "receipts", "delivered", TYPE_CHOICE, "on", 0, 0, FIELD(receipts.delivered), 0, NULL,
	  "Whether ferry makes delivered receipts from devices' DELIVER_ACKs (`on`) or sends "
	  "read receipts only (`off`)." },
	{ "receipts", "flush_interval", TYPE_UINT, "50", 1, 10000, FIELD(receipts.flush_interval),
	  0, "ms",
	  "Longest time a receipt id waits to be coalesced with others before it goes out." },
	{ "log", "level", TYPE_LOGLEVEL, "info", 0, 0, FIELD(log.level), FLAG_RELOADABLE, NULL,
	  "Lowest level written to stderr." },
};

/* The words each CHOICE row accepts, NULL-terminated. */
static const struct {
	const char *section, *key;
	const char *const words[4];
} choices[] = {
	{ "push", "mode", { "background", "alert", NULL } },
	{ "receipts", "delivered", { "on", "off", NULL } },
	{ "store", "require_durable", { "on", "warn", "off", NULL } },
};

static const struct section sections[] = {
	{ "gateway", "The device-facing listeners, worker threads and connection limits." },
	{ "store", "The PostgreSQL database." },
	{ "push", "Wake-up pushes: when and how ferry wakes devices that are away, through "
		  "Apple's APNs or Google's FCM." },
	{ "push.apns",
	  "The default app's APNs credentials. Further apps get sections of their own, "
	  "`[push.apns.NAME]` with the same keys, NAME being 1 to 64 characters of `A`-`Z` "
	  "`a`-`z` `0`-`9` `.` `_` `-` (up to 1000 apps); a device's push registration names its "
	  "app (none: the default). Per-app sections are not set from the environment." },
	{ "push.fcm",
	  "The default app's FCM credentials. Further apps get sections of their own, "
	  "`[push.fcm.NAME]` with the same keys (NAME as for `[push.apns.NAME]`); a device's push "
	  "registration names its app (none: the default). Per-app sections are not set from the "
	  "environment." },
	{ "admin", "The admin REST API." },
	{ "receipts", "Delivery and read receipts: how they are coalesced." },
	{ "log", "Logging to stderr." },
};

const struct entry *const config_table = table;
const size_t config_table_len = ARRAY_SIZE(table);
const struct section *const config_sections = sections;
const size_t config_sections_len = ARRAY_SIZE(sections);

_Static_assert(CONFIG_APP_MAX == 64 && APPS_MAX == 1000,
	       "the [push.apns] text of sections[] names these limits");

/* Where a value came from, for messages. */
struct origin {
	const char *file; /* a config file, at @line */
	unsigned line;
	const char *env; /* or this environment variable; neither: the default */
	const char *app; /* the app of a [section.NAME], or NULL */
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

/* "." before a named app's name in "[push.apns.NAME]", nothing for the default. */
static const char *app_dot(const char *app)
{
	return app && *app ? "." : "";
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
		n = snprintf(err, errlen, "%s:%u: [%s%s%s] %s: ", o->file, o->line, e->section,
			     app_dot(o->app), o->app ? o->app : "", e->key);
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
	       e->type == TYPE_ADDR || e->type == TYPE_CHOICE || e->type == TYPE_APPLE_ID;
}

/* Secret values are never quoted in messages; conninfo may hold a password. */
static int is_secret(const struct entry *e)
{
	return e->type == TYPE_SECRET || e->type == TYPE_CONNINFO || (e->flags & FLAG_SECRET);
}

static int is_app_row(const struct entry *e)
{
	return !!(e->flags & FLAG_APP);
}

/* What @e's offset is into: app @app of @cfg for an app row, else @cfg. */
static void *row_base(struct ferry_config *cfg, size_t app, const struct entry *e)
{
	return is_app_row(e) ? (void *)&cfg->push_apps[app] : (void *)cfg;
}

static const void *row_cbase(const struct ferry_config *cfg, size_t app, const struct entry *e)
{
	return is_app_row(e) ? (const void *)&cfg->push_apps[app] : (const void *)cfg;
}

/* @base: what row_base() gives for @e. */
static char **string_field(void *base, const struct entry *e)
{
	return (char **)((char *)base + e->offset);
}

static const char *string_value(const void *base, const struct entry *e)
{
	return *(char *const *)((const char *)base + e->offset);
}

static const void *cfield(const void *base, const struct entry *e)
{
	return (const char *)base + e->offset;
}

/* A FLAG_APP section: [push.apns] and [push.fcm], which also come per app. */
static int is_app_section(const char *section)
{
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		if (strcmp(table[i].section, section) == 0)
			return is_app_row(&table[i]);
	}
	return 0;
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

void config_format_bound(const struct entry *e, unsigned long long v, char *out, size_t n)
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
		config_format_bound(e, e->max, bound, sizeof(bound));
		snprintf(why, whylen, "is above the maximum %s", bound);
		return FERRY_EINVAL;
	}
	if (v * mult < e->min) {
		config_format_bound(e, e->min, bound, sizeof(bound));
		snprintf(why, whylen, "is below the minimum %s", bound);
		return FERRY_EINVAL;
	}
	*out = v * mult;
	return FERRY_OK;
}

static enum ferry_err set_string(void *base, const struct entry *e, const char *s)
{
	char **field = string_field(base, e);
	char *copy = strdup(s);

	if (!copy)
		return FERRY_ENOMEM;
	free(*field);
	*field = copy;
	return FERRY_OK;
}

/* The words CHOICE row @e accepts. */
const char *const *config_choice_words(const struct entry *e)
{
	for (size_t i = 0; i < ARRAY_SIZE(choices); i++) {
		if (strcmp(choices[i].section, e->section) == 0 &&
		    strcmp(choices[i].key, e->key) == 0)
			return choices[i].words;
	}
	ferry_panic("config table: [%s] %s: no choices", e->section, e->key);
}

/* CHOICE: @s is one of @e's words; else @why lists them. */
static enum ferry_err check_choice(const struct entry *e, const char *s, char *why, size_t whylen)
{
	const char *const *words = config_choice_words(e);
	size_t n;

	for (size_t i = 0; words[i]; i++) {
		if (strcmp(words[i], s) == 0)
			return FERRY_OK;
	}
	n = (size_t)snprintf(why, whylen, "is not one of");
	for (size_t i = 0; words[i] && n < whylen; i++)
		n += (size_t)snprintf(why + n, whylen - n, "%s %s", i ? "," : "", words[i]);
	return FERRY_EINVAL;
}

/* APPLE_ID: empty, or an ID as Apple shows it (key ID, team ID). */
static enum ferry_err check_apple_id(const char *s, char *why, size_t whylen)
{
	size_t n = strlen(s);

	if (n == 0)
		return FERRY_OK;
	if (n == APPLE_ID_LEN && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == n)
		return FERRY_OK;
	snprintf(why, whylen, "is not %d characters of A-Z and 0-9", APPLE_ID_LEN);
	return FERRY_EINVAL;
}

/*
 * Parse @s by the type of @e into @base (row_base()); on EINVAL @why says
 * what is wrong.
 */
static enum ferry_err parse_value(void *base, const struct entry *e, const char *s, char *why,
				  size_t whylen)
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
		return set_string(base, e, s);
	case TYPE_CHOICE:
		rc = check_choice(e, s, why, whylen);
		return rc ? rc : set_string(base, e, s);
	case TYPE_APPLE_ID:
		rc = check_apple_id(s, why, whylen);
		return rc ? rc : set_string(base, e, s);
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
		return set_string(base, e, s);
	case TYPE_UINT:
		if (e->max > UINT_MAX)
			ferry_panic("config table: [%s] %s: maximum too large", e->section, e->key);
		rc = parse_number(e, s, &v, why, whylen);
		if (!rc)
			*(unsigned *)((char *)base + e->offset) = (unsigned)v;
		return rc;
	case TYPE_SIZE:
		rc = parse_number(e, s, &v, why, whylen);
		if (!rc)
			*(size_t *)((char *)base + e->offset) = (size_t)v;
		return rc;
	case TYPE_LOGLEVEL:
		if (log_level_parse(s, &level)) {
			snprintf(why, whylen, "is not a log level (debug, info, warn, error)");
			return FERRY_EINVAL;
		}
		*(int *)((char *)base + e->offset) = (int)level;
		return FERRY_OK;
	}
	ferry_panic("config table: [%s] %s: bad type %d", e->section, e->key, (int)e->type);
}

/* Set @e in @base from text @s that came from @o. FERRY_ECONFIG or FERRY_ENOMEM. */
static enum ferry_err set_value(void *base, const struct entry *e, const char *s,
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
	rc = parse_value(base, e, s, why, sizeof(why));
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

/* The defaults of the app rows into @base (an app), or of the others (@cfg). */
static enum ferry_err set_defaults(void *base, int app_rows, char *err, size_t errlen)
{
	const struct origin o = { 0 };
	char msg[256];

	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		enum ferry_err rc;

		if (is_app_row(&table[i]) != app_rows)
			continue;
		rc = set_value(base, &table[i], table[i].def, &o, msg, sizeof(msg));
		if (rc == FERRY_ENOMEM) {
			seterr(err, errlen, "out of memory");
			return rc;
		}
		if (rc)
			ferry_panic("config table: %s", msg);
	}
	return FERRY_OK;
}

/* The index of the app named @name in @cfg, or -1. */
static long app_index(const struct ferry_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->npush_apps; i++) {
		if (strcmp(cfg->push_apps[i].name, name) == 0)
			return (long)i;
	}
	return -1;
}

/*
 * Append an app named @name (copied) with every app row at its default.
 * On failure @cfg stays valid for config_free(): a slot is zeroed before it
 * is counted.
 */
static enum ferry_err app_add(struct ferry_config *cfg, const char *name, char *err, size_t errlen)
{
	struct config_push_app *apps, *a;

	apps = realloc(cfg->push_apps, (cfg->npush_apps + 1) * sizeof(*apps));
	if (!apps)
		goto nomem;
	cfg->push_apps = apps;
	a = &apps[cfg->npush_apps++];
	memset(a, 0, sizeof(*a));
	a->name = strdup(name);
	if (!a->name)
		goto nomem;
	return set_defaults(a, 1, err, errlen);

nomem:
	seterr(err, errlen, "out of memory");
	return FERRY_ENOMEM;
}

/* The built-in defaults, and the default app. */
static enum ferry_err apply_defaults(struct ferry_config *cfg, char *err, size_t errlen)
{
	enum ferry_err rc = set_defaults(cfg, 0, err, errlen);

	return rc ? rc : app_add(cfg, "", err, errlen);
}

/* FERRY_<SECTION>_<KEY>: upper case, dots in the section become underscores. */
void config_env_name(const struct entry *e, char *out, size_t n)
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

		config_env_name(&table[i], name, sizeof(name));
		v = getenv(name);
		if (!v)
			continue;
		/* App rows: the default app only. */
		rc = set_value(row_base(cfg, 0, &table[i]), &table[i], v, &o, err, errlen);
		if (rc)
			return rc;
	}
	return FERRY_OK;
}

/*
 * Read all of @path into @out (at most @cap bytes). @what names the file in
 * messages ("config file"). With @owner_only, a file its group or others can
 * access is refused (common/secfile.h), checked on the stream that is then
 * read. On failure @out is released.
 */
static enum ferry_err read_file(const char *path, size_t cap, const char *what, int owner_only,
				struct buf *out, char *err, size_t errlen)
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
	if (owner_only && secfile_check(fileno(f), what, path, err, errlen)) {
		fclose(f);
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

/*
 * State while parsing one file. A key may be set once per section, and an
 * app section exists once per app: the lines where app rows were set are
 * kept per app, in @app_set_on, grown as apps appear.
 */
struct parser {
	struct ferry_config *cfg;
	const char *file;
	unsigned line;
	const char *section;		    /* current [section], NULL before the first */
	size_t app;			    /* its app (an app section), else 0 */
	unsigned set_on[ARRAY_SIZE(table)]; /* line where each key was set, 0: not yet */
	unsigned *app_set_on;		    /* app rows: [app * app_rows() + app_row()] */
	size_t app_set_apps;		    /* apps that @app_set_on has room for */
	char *err;
	size_t errlen;
};

/* How many rows are app rows, and the place of app row @e among them. */
static size_t app_rows(void)
{
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(table); i++)
		n += (size_t)is_app_row(&table[i]);
	return n;
}

static size_t app_row(const struct entry *e)
{
	size_t n = 0;

	for (const struct entry *t = table; t < e; t++)
		n += (size_t)is_app_row(t);
	return n;
}

/* Where the line that set @e (in the current app) is kept; NULL: out of memory. */
static unsigned *set_on_slot(struct parser *p, const struct entry *e)
{
	size_t rows = app_rows(), apps = p->cfg->npush_apps;
	unsigned *grown;

	if (!is_app_row(e))
		return &p->set_on[e - table];
	if (p->app >= p->app_set_apps) {
		grown = realloc(p->app_set_on, apps * rows * sizeof(*grown));
		if (!grown)
			return NULL;
		memset(grown + p->app_set_apps * rows, 0,
		       (apps - p->app_set_apps) * rows * sizeof(*grown));
		p->app_set_on = grown;
		p->app_set_apps = apps;
	}
	return &p->app_set_on[p->app * rows + app_row(e)];
}

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

static int is_app_name(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= CONFIG_APP_MAX &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* [@header], an app section of the app named @app: find or create that app. */
static enum ferry_err enter_app(struct parser *p, const char *header, const char *app)
{
	struct ferry_config *cfg = p->cfg;
	enum ferry_err rc;
	long i;

	if (!is_app_name(app)) {
		seterr(p->err, p->errlen,
		       "%s:%u: [%s]: app name must be 1-%d characters of A-Z a-z 0-9 . _ -",
		       p->file, p->line, header, CONFIG_APP_MAX);
		return FERRY_ECONFIG;
	}
	i = app_index(cfg, app);
	if (i < 0) {
		if (cfg->npush_apps > APPS_MAX) {
			seterr(p->err, p->errlen, "%s:%u: [%s]: more than %d apps", p->file,
			       p->line, header, APPS_MAX);
			return FERRY_ECONFIG;
		}
		rc = app_add(cfg, app, p->err, p->errlen);
		if (rc)
			return rc;
		i = (long)cfg->npush_apps - 1;
	}
	p->app = (size_t)i;
	return FERRY_OK;
}

/* "[name]", @s trimmed; an app section may be followed by ".APP". */
static enum ferry_err parse_header(struct parser *p, char *s)
{
	size_t len = strlen(s), n;
	char *name;

	if (s[len - 1] != ']')
		return malformed(p);
	s[len - 1] = '\0';
	name = trim(s + 1);
	p->app = 0;
	for (size_t i = 0; i < ARRAY_SIZE(sections); i++) {
		if (strcmp(sections[i].name, name) == 0) {
			p->section = sections[i].name;
			return FERRY_OK;
		}
		n = strlen(sections[i].name);
		if (strncmp(sections[i].name, name, n) == 0 && name[n] == '.' &&
		    is_app_section(sections[i].name)) {
			p->section = sections[i].name;
			return enter_app(p, name, name + n + 1);
		}
	}
	seterr(p->err, p->errlen, "%s:%u: [%s]: unknown section", p->file, p->line, name);
	return FERRY_ECONFIG;
}

/* Remove optional double quotes around @*value; they must enclose it all. */
static enum ferry_err unquote(struct parser *p, const struct origin *o, const struct entry *e,
			      char **value)
{
	char *v = *value, *close;

	if (*v != '"')
		return FERRY_OK;
	close = strchr(v + 1, '"');
	if (!close) {
		fail(p->err, p->errlen, o, e, "missing closing quote");
		return FERRY_ECONFIG;
	}
	if (close[1]) {
		fail(p->err, p->errlen, o, e, "text after the closing quote");
		return FERRY_ECONFIG;
	}
	*close = '\0';
	*value = v + 1;
	return FERRY_OK;
}

/* One line, without its newline, checked for length and control characters. */
static enum ferry_err parse_line(struct parser *p, char *line)
{
	const char *app = p->cfg->push_apps[p->app].name;
	const struct origin o = { .file = p->file, .line = p->line, .app = app };
	const struct entry *e;
	char *s = trim(line), *eq, *key, *value;
	enum ferry_err rc;
	unsigned *set_on;

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
		seterr(p->err, p->errlen, "%s:%u: [%s%s%s] %s: unknown key", p->file, p->line,
		       p->section, app_dot(app), app, key);
		return FERRY_ECONFIG;
	}
	set_on = set_on_slot(p, e);
	if (!set_on) {
		seterr(p->err, p->errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	if (*set_on) {
		fail(p->err, p->errlen, &o, e, "duplicate key (first set on line %u)", *set_on);
		return FERRY_ECONFIG;
	}
	*set_on = p->line;
	rc = unquote(p, &o, e, &value);
	if (rc)
		return rc;
	return set_value(row_base(p->cfg, p->app, e), e, value, &o, p->err, p->errlen);
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

	rc = read_file(path, CONFIG_MAX_FILE, "config file", 0, &text, err, errlen);
	if (rc)
		return rc;
	if (text.len)
		rc = parse_text(&p, text.data, text.len);
	free(p.app_set_on);
	buf_release(&text);
	return rc;
}

/*
 * The FLAG_TOGETHER rows of @section in @base (app @app, "" for the default
 * or for a section without apps) are set all or none.
 */
static enum ferry_err check_together(const void *base, const char *section, const char *app,
				     char *err, size_t errlen)
{
	const struct entry *rows[8], *unset = NULL;
	size_t n = 0, nset = 0;
	char keys[256] = "";
	size_t len = 0;

	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		const struct entry *e = &table[i];

		if (!(e->flags & FLAG_TOGETHER) || strcmp(e->section, section) != 0)
			continue;
		if (n == ARRAY_SIZE(rows) || !is_string(e))
			ferry_panic("config table: [%s] %s: bad FLAG_TOGETHER", section, e->key);
		rows[n++] = e;
		if (*string_value(base, e))
			nset++;
		else if (!unset)
			unset = e;
	}
	if (nset == 0 || nset == n)
		return FERRY_OK;
	for (size_t i = 0; i < n && len < sizeof(keys); i++) {
		const char *sep = i == 0 ? "" : i + 1 < n ? ", " : " and ";

		len += (size_t)snprintf(keys + len, sizeof(keys) - len, "%s%s", sep, rows[i]->key);
	}
	seterr(err, errlen, "[%s%s%s]: %s go together; %s is not set", section, app_dot(app), app,
	       keys, unset->key);
	return FERRY_ECONFIG;
}

/* Checks across keys, once the file and the environment are in. */
static enum ferry_err check_config(const struct ferry_config *cfg, char *err, size_t errlen)
{
	for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
		const char *name = sections[s].name;
		int per_app = is_app_section(name);
		size_t n = per_app ? cfg->npush_apps : 1;

		for (size_t a = 0; a < n; a++) {
			const void *base = per_app ? (const void *)&cfg->push_apps[a] : cfg;
			enum ferry_err rc = check_together(
				base, name, per_app ? cfg->push_apps[a].name : "", err, errlen);

			if (rc)
				return rc;
		}
	}
	if (cfg->gateway.group[0] && !cfg->gateway.user[0]) {
		seterr(err, errlen,
		       "[gateway]: group is set but user is not; group applies only with user");
		return FERRY_ECONFIG;
	}
	return FERRY_OK;
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
	rc = check_config(cfg, err, errlen);
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
		if (is_string(&table[i]) && !is_app_row(&table[i]))
			free(*string_field(cfg, &table[i]));
	}
	for (size_t a = 0; a < cfg->npush_apps; a++) {
		for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
			if (is_string(&table[i]) && is_app_row(&table[i]))
				free(*string_field(&cfg->push_apps[a], &table[i]));
		}
		free(cfg->push_apps[a].name);
	}
	free(cfg->push_apps);
	free(cfg->path);
	free(cfg);
}

const struct config_push_app *config_push_app(const struct ferry_config *cfg, const char *name)
{
	long i = app_index(cfg, name ? name : "");

	return i < 0 ? NULL : &cfg->push_apps[i];
}

/* ---- printing --------------------------------------------------------------- */

/* The value of @e in @base as config_print() shows it; secrets masked. */
static enum ferry_err format_value(const void *base, const struct entry *e, struct buf *out)
{
	const char *s;
	char tmp[32];
	int level;

	switch (e->type) {
	case TYPE_UINT:
		return buf_printf(out, "%u", *(const unsigned *)cfield(base, e));
	case TYPE_SIZE:
		format_size(*(const size_t *)cfield(base, e), tmp, sizeof(tmp));
		return buf_puts(out, tmp);
	case TYPE_LOGLEVEL:
		level = *(const int *)cfield(base, e);
		return buf_puts(out, log_level_name((enum log_level)level));
	default:
		break;
	}
	s = string_value(base, e);
	if (!*s)
		return FERRY_OK;
	if (e->type == TYPE_CONNINFO) {
		if (config_mask_conninfo(s, out) == FERRY_OK)
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

/* [@section] of app @app (an app section) or of @cfg; nothing if it has no keys. */
static void print_section(const struct ferry_config *cfg, size_t app, const char *section,
			  struct buf *b, int *first, FILE *out)
{
	const char *name = is_app_section(section) ? cfg->push_apps[app].name : "";
	int header = 0;

	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		const struct entry *e = &table[i];
		const char *v;

		if (strcmp(e->section, section) != 0)
			continue;
		if (!header) {
			fprintf(out, "%s[%s%s%s]\n", *first ? "" : "\n", section, app_dot(name),
				name);
			header = 1;
			*first = 0;
		}
		buf_reset(b);
		v = MASK;
		if (format_value(row_cbase(cfg, app, e), e, b) == FERRY_OK)
			v = b->data ? b->data : "";
		if (needs_quotes(v, strlen(v)))
			fprintf(out, "%s = \"%s\"\n", e->key, v);
		else
			fprintf(out, "%s = %s\n", e->key, v);
	}
}

/*
 * Sections in reference order. The app sections (adjacent in @sections) come
 * as a group: the default app's, then each named app's, in the apps' order.
 */
void config_print(const struct ferry_config *cfg, FILE *out)
{
	struct buf b;
	int first = 1;

	buf_init(&b, PRINT_MAX);
	for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
		size_t end = s;

		if (!is_app_section(sections[s].name)) {
			print_section(cfg, 0, sections[s].name, &b, &first, out);
			continue;
		}
		while (end < ARRAY_SIZE(sections) && is_app_section(sections[end].name))
			end++;
		for (size_t a = 0; a < cfg->npush_apps; a++) {
			for (size_t t = s; t < end; t++)
				print_section(cfg, a, sections[t].name, &b, &first, out);
		}
		s = end - 1;
	}
	buf_release(&b);
}

/* ---- reload, token, addresses ------------------------------------------------ */

/* @a and @b: what row_cbase() gives for @e in the old and the new config. */
static int same_value(const void *a, const void *b, const struct entry *e)
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

/*
 * The app sections of named app @app of @a that differ from the same app in
 * @b: with @b NULL (no such app there) each section once with key "*", else
 * each changed key.
 */
static void diff_app(const struct ferry_config *a, size_t app, const struct ferry_config *b,
		     size_t bapp, void (*cb)(const char *, const char *, int, void *), void *arg)
{
	const struct config_push_app *x = &a->push_apps[app];
	char section[64 + CONFIG_APP_MAX];

	for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
		if (!is_app_section(sections[s].name))
			continue;
		snprintf(section, sizeof(section), "%s.%s", sections[s].name, x->name);
		if (!b) {
			cb(section, "*", 1, arg);
			continue;
		}
		for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
			const struct entry *e = &table[i];

			if (strcmp(e->section, sections[s].name) == 0 &&
			    !same_value(x, &b->push_apps[bapp], e))
				cb(section, e->key, !!(e->flags & FLAG_RELOADABLE), arg);
		}
	}
}

void config_diff(const struct ferry_config *old, const struct ferry_config *new,
		 void (*cb)(const char *section, const char *key, int reloadable, void *arg),
		 void *arg)
{
	long j;

	/* Everything but the named apps; app rows of the default app. */
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		const struct entry *e = &table[i];

		if (!same_value(row_cbase(old, 0, e), row_cbase(new, 0, e), e))
			cb(e->section, e->key, !!(e->flags & FLAG_RELOADABLE), arg);
	}
	/* Named apps by name: added or changed, then removed. */
	for (size_t a = 1; a < new->npush_apps; a++) {
		j = app_index(old, new->push_apps[a].name);
		diff_app(new, (size_t)a, j < 0 ? NULL : old, j < 0 ? 0 : (size_t)j, cb, arg);
	}
	for (size_t a = 1; a < old->npush_apps; a++) {
		if (app_index(new, old->push_apps[a].name) < 0)
			diff_app(old, a, NULL, 0, cb, arg);
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
	rc = read_file(path, CONFIG_MAX_FILE, "token file", 1, &text, err, errlen);
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
