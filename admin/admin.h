/*
 * admin.h - the admin REST API (libmicrohttpd).
 *
 * Runs on libmicrohttpd's own threads. It reaches the database only through
 * the queue registry (queue/queue.h), which is thread-safe, and the gateway
 * and the push service only through their thread-safe entry points; it
 * shares nothing else with the rest of the daemon but the token, which is
 * swapped under a lock on reload. Routes and their errors are documented in
 * admin/openapi.yaml.
 */
#ifndef FERRY_ADMIN_ADMIN_H
#define FERRY_ADMIN_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/config.h"

struct queue_registry;
struct gateway;
struct push_service;
struct admin_server;

/*
 * Start serving on cfg->admin.listen with bearer token @token (borrowed,
 * copied; must not be empty). @reg, @gw (NULL: no device gateway) and @push
 * (NULL: no push service, so POST /v1/push answers 503) are borrowed and
 * must outlive the server.
 * On failure returns an error, writes the reason to @err and starts nothing.
 * *port gets the bound port (useful when the configured port is 0).
 */
enum ferry_err admin_start(const struct ferry_config *cfg, const char *token,
			   struct queue_registry *reg, struct gateway *gw,
			   struct push_service *push, struct admin_server **out, uint16_t *port,
			   char *err, size_t errlen) FERRY_WUR;

/* Replace the bearer token (SIGHUP). @token is copied. */
enum ferry_err admin_set_token(struct admin_server *srv, const char *token) FERRY_WUR;

/* Stop serving, wait for in-flight requests, free everything. NULL is a no-op. */
void admin_stop(struct admin_server *srv);

#endif
