/*
 * config.h - ferry's configuration: one typed table, one struct.
 *
 * A single declarative table (config.c) lists every key with its section,
 * type, default, bounds, flags and help text. The same table drives parsing
 * of the INI file, the FERRY_<SECTION>_<KEY> environment overrides, range
 * checks, `ferryd check-config` (secrets masked) and docs/configuration.md
 * (`ferryd config-reference`), so none of them can drift from the others.
 *
 * Sources, later ones win: built-in defaults, the file, the environment.
 * An empty file (or no file at all) is a valid configuration.
 *
 * Ownership: struct ferry_config owns every string in it; config_free()
 * releases them. A loaded config is never modified afterwards: SIGHUP loads
 * a whole new one and swaps it in (see config_diff()).
 */
#ifndef FERRY_COMMON_CONFIG_H
#define FERRY_COMMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

/* Longest config file accepted, and longest single value. */
#define CONFIG_MAX_FILE (1024 * 1024)
#define CONFIG_MAX_VALUE 4096

struct ferry_config {
	char *path; /* file it was read from, or NULL */

	struct {
		char *listen;		    /* host:port for devices, "" disables */
		char *tls_listen;	    /* host:port for TLS devices */
		char *tls_cert;		    /* PEM certificate chain; with tls_key enables TLS */
		char *tls_key;		    /* PEM private key */
		unsigned workers;	    /* worker threads, 0: one per core */
		size_t max_frame;	    /* bytes */
		unsigned max_connections;   /* devices connected at once */
		size_t max_output;	    /* bytes queued for one slow reader */
		unsigned ack_timeout;	    /* ms a DELIVER may wait for its ack */
		unsigned handshake_timeout; /* ms from connect to a valid HELLO */
		unsigned idle_timeout;	    /* ms without a frame before closing */
		unsigned write_timeout;	    /* ms output may wait without progress */
		unsigned max_handshakes;    /* per worker, connections not yet WELCOMEd */
		unsigned drain_window;	    /* stored DELIVERs un-acked at once */
		unsigned max_frames_per_s;  /* PING, PONG, stray DELIVER_ACK */
		unsigned frames_burst;	    /* of those, at once */
		unsigned auth_failures_per_addr;   /* in a window; 0: no limit */
		unsigned auth_failures_per_device; /* in a window; 0: no limit */
		unsigned auth_failure_window;	   /* seconds */
		char *user;			   /* switch to it after binding, "": stay */
		char *group;			   /* with user; "": the user's login group */
	} gateway;

	struct {
		char *conninfo;			 /* libpq connection string */
		unsigned connect_timeout;	 /* seconds */
		unsigned connections;		 /* writers and readers */
		unsigned writers;		 /* 0: automatic */
		unsigned batch_max;		 /* recipients in one commit */
		unsigned max_pending_per_device; /* 0: no limit */
		size_t max_inflight_bytes;	 /* payload bytes waiting to be written */
		unsigned default_ttl;		 /* seconds */
		unsigned expire_interval;	 /* ms between expiry sweeps */
		unsigned expire_batch;		 /* rows per sweep statement */
		char *require_durable; /* "on", "warn" or "off": fsync, synchronous_commit */
	} store;

	struct {
		char *mode;	       /* "background" or "alert" */
		char *alert_text;      /* alert mode: the text shown */
		unsigned min_interval; /* seconds between wakes of one device */
		unsigned max_pending;  /* wakes waiting at once */
		unsigned max_attempts; /* tries of one wake, first one included */
		unsigned ttl;	       /* seconds a wake is worth delivering */
		char *ca_file;	       /* PEM CA bundle for the providers; "": system's */
		unsigned connections;  /* HTTP/2 connections per provider origin */
		unsigned timeout;      /* ms for one request */
	} push;

	/* Push credentials per app: apps[0] is the default app ([push.apns],
	 * [push.fcm]; name ""), then one per [push.apns.NAME] or
	 * [push.fcm.NAME], in the order they first appear. */
	struct config_push_app *push_apps;
	size_t npush_apps;

	struct {
		char *listen;		  /* host:port, "" disables the admin API */
		char *token;		  /* bearer token (secret) */
		char *token_file;	  /* or: a file holding it */
		size_t max_body;	  /* bytes */
		unsigned threads;	  /* libmicrohttpd worker threads */
		unsigned request_timeout; /* seconds a connection may stay silent */
	} admin;

	struct {
		char *delivered;	 /* "on": from DELIVER_ACKs; "off": read ones only */
		unsigned max_batch;	 /* ids in one DELIVER_RECEIPT */
		unsigned flush_interval; /* ms a receipt id may wait */
	} receipts;

	struct {
		int level; /* enum log_level */
	} log;
};

/* Longest app name in [push.apns.NAME]: 1-64 bytes of [A-Za-z0-9._-]. */
#define CONFIG_APP_MAX 64

/* One app's push credentials. An empty string is "not set". */
struct config_push_app {
	char *name; /* "" for the default app */
	struct {
		char *endpoint;		/* production origin */
		char *sandbox_endpoint; /* for tokens registered "sandbox" */
		char *key_file;		/* .p8 key; with key_id and team_id enables APNs */
		char *cert_file;	/* or: a client certificate (PEM) */
		char *cert_key;		/* its key, "": in cert_file */
		char *key_id;
		char *team_id;
		char *topic; /* default apns-topic (bundle id) */
	} apns;
	struct {
		char *endpoint;	       /* FCM origin */
		char *service_account; /* JSON file; enables FCM */
	} fcm;
};

/* The app named @name ("" or NULL: the default), or NULL if not configured. */
const struct config_push_app *config_push_app(const struct ferry_config *cfg, const char *name);

/*
 * Load a configuration: defaults, then @path (NULL: none), then the
 * environment (which reaches the default app only). On failure returns
 * FERRY_ECONFIG (or FERRY_ENOMEM) and writes a one-line message to @err
 * naming file, line and key, e.g.
 *   ferry.ini:12: [admin] max_body: '5x' is not a size (e.g. 64k, 1m)
 * Checks across keys run last and name the section only, e.g.
 *   [push.apns.NAME]: key_file, key_id and team_id go together; key_id is not set
 * Credential files are not read here. On success *out is a new config the
 * caller frees with config_free(); it always has the default app, apps[0].
 */
enum ferry_err config_load(const char *path, struct ferry_config **out, char *err,
			   size_t errlen) FERRY_WUR;

/* Release @cfg and everything it owns. NULL is a no-op. */
void config_free(struct ferry_config *cfg);

/* Print the effective configuration as INI, secrets masked as "********". */
void config_print(const struct ferry_config *cfg, FILE *out);

/* Print the configuration reference (docs/configuration.md) in Markdown. */
void config_print_reference(FILE *out);

/*
 * Compare @old and @new for a reload. Calls @cb once per key whose value
 * changed, with reloadable = 1 if it takes effect without a restart.
 * Secret values are never passed; only section and key names.
 *
 * Order: first every key of the table in table order, the app keys being the
 * default app's ([push.apns], [push.fcm]). Then the named apps, matched by
 * name (their order does not matter): for each app of @new in its order, an
 * app @old lacks gives one call per app section with key "*",
 * cb("push.apns.NAME", "*", 1), cb("push.fcm.NAME", "*", 1); an app in
 * both gives cb("push.apns.NAME", key, reloadable) per changed key. Last,
 * for each app of @old that @new lacks, the same "*" calls.
 *
 * @cb runs synchronously and borrows @section and @key for the call only: a
 * named app's section is formatted into a buffer on config_diff's stack.
 */
void config_diff(const struct ferry_config *old, const struct ferry_config *new,
		 void (*cb)(const char *section, const char *key, int reloadable, void *arg),
		 void *arg);

/*
 * Read the admin token: [admin] token, or the first line of [admin]
 * token_file (trailing whitespace removed). *out is malloc'ed, the caller
 * frees it; an empty token when neither is set. FERRY_ECONFIG with a message
 * in @err when the file cannot be read, or its group or others have access
 * to it (common/secfile.h).
 */
enum ferry_err config_admin_token(const struct ferry_config *cfg, char **out, char *err,
				  size_t errlen) FERRY_WUR;

/* Split "host:port" ("[v6]:port" too) into a malloc'ed host and a port. */
enum ferry_err config_split_addr(const char *addr, char **host, uint16_t *port) FERRY_WUR;

#endif
