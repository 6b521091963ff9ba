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
		unsigned drain_window;	    /* stored DELIVERs un-acked at once */
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
	} store;

	struct {
		char *listen;	  /* host:port, "" disables the admin API */
		char *token;	  /* bearer token (secret) */
		char *token_file; /* or: a file holding it */
		size_t max_body;  /* bytes */
		unsigned threads; /* libmicrohttpd worker threads */
	} admin;

	struct {
		int level; /* enum log_level */
	} log;
};

/*
 * Load a configuration: defaults, then @path (NULL: none), then the
 * environment. On failure returns FERRY_ECONFIG (or FERRY_ENOMEM) and writes
 * a one-line message to @err naming file, line and key, e.g.
 *   ferry.ini:12: [admin] max_body: '5x' is not a size (e.g. 64k, 1m)
 * On success *out is a new config the caller frees with config_free().
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
 */
void config_diff(const struct ferry_config *old, const struct ferry_config *new,
		 void (*cb)(const char *section, const char *key, int reloadable, void *arg),
		 void *arg);

/*
 * Read the admin token: [admin] token, or the first line of [admin]
 * token_file (trailing whitespace removed). *out is malloc'ed, the caller
 * frees it; an empty token when neither is set. FERRY_ECONFIG with a message
 * in @err when the file cannot be read.
 */
enum ferry_err config_admin_token(const struct ferry_config *cfg, char **out, char *err,
				  size_t errlen) FERRY_WUR;

/* Split "host:port" ("[v6]:port" too) into a malloc'ed host and a port. */
enum ferry_err config_split_addr(const char *addr, char **host, uint16_t *port) FERRY_WUR;

#endif
