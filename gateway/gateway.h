/*
 * gateway.h - the device-facing side of ferryd: listeners, worker threads,
 * connections, presence and routing (docs/protocol.md).
 *
 * gateway_start() spawns [gateway] workers threads, each with its own libuv
 * loop and its own listening sockets on the same addresses (SO_REUSEPORT:
 * the kernel spreads connections). A connection lives on one worker for its
 * whole life. Workers talk to each other only through mailboxes; what they
 * share is the presence table and the duplicate-SEND table (each behind its
 * own mutex) and atomic counters.
 *
 * The functions here may be called from any thread.
 */
#ifndef FERRY_GATEWAY_GATEWAY_H
#define FERRY_GATEWAY_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

struct gateway;
struct queue_registry;

/*
 * Start the workers and listeners. @cfg and @reg are borrowed and must
 * outlive the gateway. On failure nothing is left running and @err says why
 * ("cannot listen on '0.0.0.0:7222': Address already in use").
 * *ports (may be NULL) gets the bound plain and TLS ports (0: none).
 */
enum ferry_err gateway_start(const struct ferry_config *cfg, struct queue_registry *reg,
			     struct gateway **out, uint16_t ports[2], char *err,
			     size_t errlen) FERRY_WUR;

/*
 * Close every connection of device @id with ERROR @code (a proto_error_code),
 * e.g. when the device was deleted. Returns at once; the close happens on the
 * connection's worker.
 */
void gateway_kick_device(struct gateway *gw, int64_t id, unsigned code);

/* @user's devices changed (one registered or deleted): route the next SEND
 * to @user from a fresh list. @gw may be NULL. */
void gateway_user_changed(struct gateway *gw, const char *user);

/* The device was deleted: close its connection (ERROR device_deleted).
 * @gw may be NULL (no gateway: nothing to do). */
void gateway_device_deleted(struct gateway *gw, int64_t id);

/* 1 when every listener is up and the gateway is not stopping. */
int gateway_ready(const struct gateway *gw);

/* Stop: close listeners and connections (ERROR shutting_down), join the
 * workers, free everything. NULL is a no-op. */
void gateway_stop(struct gateway *gw);

#endif
