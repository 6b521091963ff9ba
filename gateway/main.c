/*
 * main.c - ferryd: the daemon's entry point and its commands.
 *
 *   ferryd [run] [-c FILE]       serve (the default command)
 *   ferryd migrate [-c FILE]     apply pending schema migrations
 *   ferryd check-config [-c FILE] validate and print the effective config
 *   ferryd config-reference      print docs/configuration.md
 *   ferryd version
 *
 * Exit codes (docs/operations.md): 0 success, 1 runtime failure, 2 usage or
 * configuration error, 3 database schema mismatch, 4 database unreachable,
 * 5 database not durable (fsync or synchronous_commit off, [store]
 * require_durable = on).
 *
 * The main thread runs a libuv loop that owns the signals: handlers only
 * wake the loop; SIGINT/SIGTERM stop it, SIGHUP reloads the configuration
 * (parsed and validated whole, then swapped; keys that need a restart are
 * named in the log) and reads the TLS certificate and key again, so that a
 * renewed certificate needs no restart. The admin API runs on
 * libmicrohttpd's threads.
 *
 * Started as root with [gateway] user set, ferryd binds its sockets and
 * loads its keys first, then switches to that user (gateway/privs.c) before
 * it logs event=started.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

#include "admin/admin.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "push/push.h"
#include "queue/queue.h"
#include "common/banned.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_RUNTIME = 1,
	EXIT_USAGE = 2,
	EXIT_SCHEMA = 3,
	EXIT_DB_DOWN = 4,
	EXIT_NOT_DURABLE = 5,
};

#define ERRLEN 1024

struct daemon {
	uv_loop_t loop;
	uv_signal_t sigint, sigterm, sighup;
	const char *config_path;
	struct ferry_config *cfg;      /* the one in force */
	struct ferry_config *boot_cfg; /* what the admin server was started with */
	struct queue_registry *reg;
	struct queue_store *store; /* the offline store, with the gateway */
	struct push_service *push; /* wake-ups and direct pushes */
	struct gateway *gw;
	struct admin_server *admin;
};

static void usage(FILE *out)
{
	fprintf(out, "usage: ferryd [run] [-c FILE]\n"
		     "       ferryd migrate [-c FILE]\n"
		     "       ferryd check-config [-c FILE]\n"
		     "       ferryd config-reference\n"
		     "       ferryd version\n"
		     "\n"
		     "Without -c, built-in defaults and FERRY_<SECTION>_<KEY> variables apply.\n");
}

static int exit_for(enum ferry_err rc)
{
	switch (rc) {
	case FERRY_OK:
		return EXIT_OK;
	case FERRY_ECONFIG:
		return EXIT_USAGE;
	case FERRY_ESCHEMA:
		return EXIT_SCHEMA;
	case FERRY_EUNAVAIL:
		return EXIT_DB_DOWN;
	default:
		return EXIT_RUNTIME;
	}
}

static int load_config(const char *path, struct ferry_config **cfg)
{
	char err[ERRLEN];

	if (config_load(path, cfg, err, sizeof(err))) {
		fprintf(stderr, "ferryd: %s\n", err);
		return EXIT_USAGE;
	}
	log_set_level((enum log_level)(*cfg)->log.level);
	return EXIT_OK;
}

/*
 * What `run` needs beyond a well-formed file: checked by check-config too, and
 * by run before it touches the database, so a config error is always exit 2.
 * @running: this process is the one that will run (and may have to switch
 * to [gateway] user); check-config may be run by anyone.
 */
static int validate_for_run(const struct ferry_config *cfg, int running)
{
	char err[ERRLEN];
	char *token = NULL;

	if (config_admin_token(cfg, &token, err, sizeof(err))) {
		fprintf(stderr, "ferryd: %s\n", err);
		return EXIT_USAGE;
	}
	if (*cfg->admin.listen && !*token)
		fprintf(stderr, "ferryd: warning: no [admin] token or token_file: the admin API "
				"stays off\n");
	free(token);
	if (gateway_privs_check(cfg, running, err, sizeof(err))) {
		fprintf(stderr, "ferryd: %s\n", err);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/*
 * An ACK(stored) means "committed": with fsync or synchronous_commit off, a
 * crash of the database host can lose what was acknowledged. [store]
 * require_durable says whether that stops ferryd (on), is logged (warn) or
 * is not looked at (off).
 */
static int check_durable(const struct ferry_config *cfg)
{
	const char *mode = cfg->store.require_durable;
	char bad[128], err[ERRLEN];
	enum ferry_err rc;

	if (strcmp(mode, "off") == 0)
		return EXIT_OK;
	rc = queue_durability_check(cfg->store.conninfo, cfg->store.connect_timeout, bad,
				    sizeof(bad), err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		return exit_for(rc);
	}
	if (!bad[0])
		return EXIT_OK;
	if (strcmp(mode, "warn") == 0) {
		log_warn("event=store_not_durable settings=\"%s\" reason=\"a crash of the "
			 "database host can lose acknowledged envelopes\"",
			 bad);
		return EXIT_OK;
	}
	fprintf(stderr,
		"ferryd: the database is not durable (%s): an acknowledged envelope would not "
		"survive a crash of the database host; turn the setting on, or set [store] "
		"require_durable = warn for a throwaway database\n",
		bad);
	return EXIT_NOT_DURABLE;
}

/* What a reload did, for report_change(). */
struct reload_report {
	int tls_loaded; /* the TLS files were loaded for the listener */
};

static int is_tls_file(const char *section, const char *key)
{
	return strcmp(section, "gateway") == 0 &&
	       (strcmp(key, "tls_cert") == 0 || strcmp(key, "tls_key") == 0);
}

static void report_change(const char *section, const char *key, int reloadable, void *arg)
{
	const struct reload_report *r = arg;

	/* The TLS files reload into a listener that is open; opening or
	 * closing one is a restart. */
	if (is_tls_file(section, key) && !r->tls_loaded) {
		log_warn("event=config_needs_restart key=%s.%s reason=\"the TLS listener opens "
			 "or closes only on a restart\"",
			 section, key);
		return;
	}
	if (reloadable)
		log_info("event=config_reloaded key=%s.%s", section, key);
	else
		log_warn("event=config_needs_restart key=%s.%s", section, key);
}

/*
 * SIGHUP: load and validate everything first; apply only if all of it is
 * good. What is loaded from files (the TLS certificate, push credentials)
 * is loaded whole before anything is swapped.
 */
static void reload(struct daemon *d)
{
	struct reload_report report = { 0 };
	struct gateway_tls *tls = NULL;
	struct ferry_config *next;
	char err[ERRLEN];
	char *token = NULL;

	if (config_load(d->config_path, &next, err, sizeof(err))) {
		log_error("event=reload_failed reason=\"%s\" action=kept_old_config", err);
		return;
	}
	if (d->admin && (config_admin_token(next, &token, err, sizeof(err)) || !*token)) {
		log_error("event=reload_failed reason=\"%s\" action=kept_old_config",
			  token ? "admin token is empty" : err);
		goto out_next;
	}
	if (gateway_tls_load(d->gw, next, &tls, err, sizeof(err))) {
		log_error("event=reload_failed reason=\"%s\" action=kept_old_config", err);
		goto out_next;
	}
	/* Loads and checks every credential file; applied only if all are good,
	 * and the last check that can fail for a reason of the file's. */
	if (d->push && push_reload(d->push, next, err, sizeof(err))) {
		log_error("event=reload_failed reason=\"%s\" action=kept_old_config", err);
		goto out_tls;
	}
	if (d->admin && admin_set_token(d->admin, token)) {
		log_error("event=reload_failed reason=\"cannot set admin token\"");
		goto out_tls;
	}
	free(token);
	report.tls_loaded = tls != NULL;
	gateway_tls_swap(d->gw, tls);
	config_diff(d->cfg, next, report_change, &report);
	log_set_level((enum log_level)next->log.level);
	if (d->cfg != d->boot_cfg)
		config_free(d->cfg);
	d->cfg = next;
	log_info("event=reload_done");
	return;

out_tls:
	gateway_tls_free(tls);
out_next:
	free(token);
	config_free(next);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (signum == SIGHUP) {
		reload(d);
		return;
	}
	log_info("event=stopping signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
	uv_stop(&d->loop);
}

static int watch_signals(struct daemon *d)
{
	uv_signal_t *hs[] = { &d->sigint, &d->sigterm, &d->sighup };
	int nums[] = { SIGINT, SIGTERM, SIGHUP };

	for (int i = 0; i < 3; i++) {
		if (uv_signal_init(&d->loop, hs[i]) || uv_signal_start(hs[i], on_signal, nums[i]))
			return -1;
		hs[i]->data = d;
	}
	return 0;
}

static void close_handle(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int start_gateway(struct daemon *d)
{
	struct queue_store_opts opts = { 0 };
	char err[ERRLEN];
	uint16_t ports[2];
	enum ferry_err rc;

	if (!*d->cfg->gateway.listen && !*d->cfg->gateway.tls_cert) {
		log_info("event=gateway_disabled");
		return EXIT_OK;
	}
	opts.conninfo = d->cfg->store.conninfo;
	opts.connect_timeout = d->cfg->store.connect_timeout;
	opts.connections = d->cfg->store.connections;
	opts.writers = d->cfg->store.writers;
	opts.batch_max = d->cfg->store.batch_max;
	opts.max_pending_per_device = d->cfg->store.max_pending_per_device;
	opts.max_inflight_bytes = d->cfg->store.max_inflight_bytes;
	opts.default_ttl = d->cfg->store.default_ttl;
	opts.expire_interval = d->cfg->store.expire_interval;
	opts.expire_batch = d->cfg->store.expire_batch;
	d->store = queue_store_start(&opts, err, sizeof(err));
	if (!d->store) {
		fprintf(stderr, "ferryd: %s\n", err);
		return EXIT_RUNTIME;
	}
	rc = push_start(d->cfg, d->reg, &d->push, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		queue_store_stop(d->store);
		d->store = NULL;
		return rc == FERRY_ECONFIG ? EXIT_USAGE : EXIT_RUNTIME;
	}
	rc = gateway_start(d->cfg, d->reg, d->store, d->push, &d->gw, ports, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		queue_store_stop(d->store);
		d->store = NULL;
		push_stop(d->push);
		d->push = NULL;
		return rc == FERRY_ECONFIG ? EXIT_USAGE : EXIT_RUNTIME;
	}
	return EXIT_OK;
}

static int start_admin(struct daemon *d)
{
	char err[ERRLEN];
	char *token = NULL;
	uint16_t port = 0;
	enum ferry_err rc;

	if (!*d->cfg->admin.listen) {
		log_info("event=admin_disabled");
		return EXIT_OK;
	}
	if (config_admin_token(d->cfg, &token, err, sizeof(err))) {
		fprintf(stderr, "ferryd: %s\n", err);
		return EXIT_USAGE;
	}
	if (!*token) {
		/* An unauthenticated admin API is never an option. */
		free(token);
		log_warn("event=admin_disabled reason=\"no [admin] token or token_file\"");
		return EXIT_OK;
	}
	rc = admin_start(d->cfg, token, d->reg, d->gw, d->push, &d->admin, &port, err, sizeof(err));
	free(token);
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		return EXIT_RUNTIME;
	}
	log_info("event=admin_listening listen=%s port=%u", d->cfg->admin.listen, port);
	return EXIT_OK;
}

/*
 * [gateway] user: give up root now that the sockets are bound and the keys
 * loaded. The database is asked once more as the new user, since the store
 * reconnects as that user after an outage: a socket directory it cannot
 * reach, or peer authentication that only let root in, fails the start
 * rather than the first reconnect.
 */
static int drop_privileges(struct daemon *d)
{
	char err[ERRLEN];
	enum ferry_err rc;

	if (!*d->cfg->gateway.user)
		return EXIT_OK;
	rc = gateway_privs_drop(d->cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		return exit_for(rc);
	}
	rc = queue_schema_check(d->cfg->store.conninfo, d->cfg->store.connect_timeout, NULL, err,
				sizeof(err));
	if (rc) {
		fprintf(stderr, "ferryd: as [gateway] user '%s': %s\n", d->cfg->gateway.user, err);
		return exit_for(rc);
	}
	return EXIT_OK;
}

/* No core file: one would hold the admin token, push credentials and the
 * envelopes in memory at the time. */
static void no_core_dumps(void)
{
	struct rlimit none = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &none))
		log_warn("event=core_dumps_not_disabled reason=\"%s\"", strerror(errno));
}

static int cmd_run(const char *path)
{
	struct daemon d = { .config_path = path };
	char err[ERRLEN];
	enum ferry_err rc;
	int code;

	no_core_dumps();
	code = load_config(path, &d.cfg);
	if (code)
		return code;
	d.boot_cfg = d.cfg;
	code = validate_for_run(d.cfg, 1);
	if (code)
		goto out_cfg;
	rc = queue_schema_check(d.cfg->store.conninfo, d.cfg->store.connect_timeout, NULL, err,
				sizeof(err));
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		code = exit_for(rc);
		goto out_cfg;
	}
	code = check_durable(d.cfg);
	if (code)
		goto out_cfg;
	/* Admin threads and the gateway's threadpool jobs share the registry. */
	d.reg = queue_registry_new(d.cfg->store.conninfo, d.cfg->store.connect_timeout,
				   d.cfg->admin.threads + 6);
	if (!d.reg || uv_loop_init(&d.loop)) {
		fprintf(stderr, "ferryd: cannot initialise: out of memory\n");
		code = EXIT_RUNTIME;
		goto out_reg;
	}
	signal(SIGPIPE, SIG_IGN);
	if (watch_signals(&d)) {
		fprintf(stderr, "ferryd: cannot install signal handlers\n");
		code = EXIT_RUNTIME;
		goto out_loop;
	}
	code = start_gateway(&d);
	if (code)
		goto out_loop;
	code = start_admin(&d);
	if (code)
		goto out_gateway;
	code = drop_privileges(&d);
	if (code)
		goto out_admin;
	log_info("event=started version=%s schema=%d", FERRY_VERSION, queue_schema_latest());
	uv_run(&d.loop, UV_RUN_DEFAULT);
out_admin:
	admin_stop(d.admin);
	if (!code)
		log_info("event=stopped");

out_gateway:
	/* The gateway waits for the store's answers to what it asked. */
	gateway_stop(d.gw);
	queue_store_stop(d.store);
	push_stop(d.push);
out_loop:
	uv_walk(&d.loop, close_handle, NULL);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	uv_loop_close(&d.loop);
out_reg:
	queue_registry_free(d.reg);
out_cfg:
	if (d.cfg != d.boot_cfg)
		config_free(d.cfg);
	config_free(d.boot_cfg);
	return code;
}

static int cmd_migrate(const char *path)
{
	struct ferry_config *cfg;
	char err[ERRLEN];
	int applied = 0, code;
	enum ferry_err rc;

	code = load_config(path, &cfg);
	if (code)
		return code;
	rc = queue_migrate(cfg->store.conninfo, cfg->store.connect_timeout, &applied, err,
			   sizeof(err));
	config_free(cfg);
	if (rc) {
		fprintf(stderr, "ferryd: %s\n", err);
		return exit_for(rc);
	}
	printf("schema at version %d (%d migration%s applied)\n", queue_schema_latest(), applied,
	       applied == 1 ? "" : "s");
	return EXIT_OK;
}

static int cmd_check_config(const char *path)
{
	struct ferry_config *cfg;
	int code;

	code = load_config(path, &cfg);
	if (code)
		return code;
	code = validate_for_run(cfg, 0);
	if (!code)
		config_print(cfg, stdout);
	config_free(cfg);
	return code;
}

int main(int argc, char **argv)
{
	const char *cmd = "run";
	const char *path = NULL;
	int i = 1;

	if (argc > 1 && argv[1][0] != '-')
		cmd = argv[i++];
	for (; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
		    i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return EXIT_OK;
		} else {
			fprintf(stderr, "ferryd: unexpected argument '%s'\n", argv[i]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}

	if (strcmp(cmd, "run") == 0)
		return cmd_run(path);
	if (strcmp(cmd, "migrate") == 0)
		return cmd_migrate(path);
	if (strcmp(cmd, "check-config") == 0)
		return cmd_check_config(path);
	if (strcmp(cmd, "config-reference") == 0) {
		config_print_reference(stdout);
		return EXIT_OK;
	}
	if (strcmp(cmd, "version") == 0) {
		printf("ferryd %s (schema %d)\n", FERRY_VERSION, queue_schema_latest());
		return EXIT_OK;
	}
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	fprintf(stderr, "ferryd: unknown command '%s'\n", cmd);
	usage(stderr);
	return EXIT_USAGE;
}
