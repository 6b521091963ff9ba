/*
 * gateway.h - the device-facing side of ferryd: listeners, worker threads,
 * connections, presence and routing (docs/protocol.md).
 *
 * gateway_start() spawns [gateway] workers threads, each with its own libuv
 * loop and its own listening sockets on the same addresses (SO_REUSEPORT:
 * the kernel spreads connections). A connection lives on one worker for its
 * whole life. Workers talk to each other only through mailboxes; what they
 * share is the presence table, the duplicate-SEND table and the TLS context
 * new connections start from (each behind its own mutex) and atomic
 * counters.
 *
 * The functions here may be called from any thread.
 */
#ifndef FERRY_GATEWAY_GATEWAY_H
#define FERRY_GATEWAY_GATEWAY_H

#include "common/hist.h"
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

struct gateway;
struct queue_registry;
struct queue_store;
struct push_service;

/*
 * Start the workers and listeners. @cfg, @reg, @store and @push (NULL: no
 * wake-up pushes) are borrowed and must outlive the gateway (stop the
 * gateway before the store: it waits for the store's answers to what it
 * asked; and before the push service, which it wakes devices through). On failure nothing is left
 * running and @err says why ("cannot listen on '0.0.0.0:7222': Address already in use"). *ports
 * (may be NULL) gets the bound plain and TLS ports (0: none).
 */
enum ferry_err gateway_start(const struct ferry_config *cfg, struct queue_registry *reg,
			     struct queue_store *store, struct push_service *push,
			     struct gateway **out, uint16_t ports[2], char *err,
			     size_t errlen) FERRY_WUR;

/*
 * An envelope from the server itself (sender user "ferry", sender device 0),
 * with a SEND's guarantees: delivered to every target device that is online
 * and acknowledges in time, stored for the others, in the same per-device
 * order as devices' SENDs.
 */
struct gateway_inject {
	const char *to_user; /* every device of this user, or */
	int64_t to_device;   /* this one device (to_user NULL) */
	const void *payload; /* at most [gateway] max_frame - 128 bytes */
	size_t len;
	unsigned ttl; /* seconds in the offline store; 0: [store] default_ttl */
	/* The caller's id for this message (0: none, the server id is used).
	 * A retry with the same id is the same message: devices that got it
	 * drop the copy (sender device 0, client id), and a device's store does
	 * not take it twice (then server_id is the one stored first). */
	uint64_t client_id;
	/* Filled by gateway_inject(): */
	uint64_t server_id; /* what DELIVER carries, or the id stored first */
	unsigned targets;   /* devices it went to */
	int delivered;	    /* 1: every target acknowledged (else stored) */
};

/*
 * Run @inj to the end, blocking the caller (not a gateway worker) until it
 * is delivered or committed. FERRY_OK: done (inj->delivered says how);
 * FERRY_ENOTFOUND: no such user or device, or the user has no device;
 * FERRY_ELIMIT: a target's offline queue is full; FERRY_ETOOBIG: payload
 * over the limit; FERRY_EUNAVAIL: the store cannot take it now (retry);
 * FERRY_ENOMEM. @err says why in words.
 */
enum ferry_err gateway_inject(struct gateway *gw, struct gateway_inject *inj, char *err,
			      size_t errlen) FERRY_WUR;

/*
 * Close every connection of device @id with ERROR @code (a proto_error_code),
 * e.g. when the device was deleted. Returns at once; the close happens on the
 * connection's worker.
 */
void gateway_kick_device(struct gateway *gw, int64_t id, unsigned code);

/*
 * Close device @id's connection to this node with ERROR disconnected, so
 * that the device connects again (POST /v1/devices/{device}/disconnect).
 * Returns 1 if the device had a connection here (it is closed on its worker,
 * shortly after), 0 if it had none. @gw may be NULL (no gateway: 0).
 */
int gateway_disconnect_device(struct gateway *gw, int64_t id);

/* A device's connection to this node, as GET /v1/devices/{device} shows it. */
struct gateway_presence {
	unsigned worker;
	int64_t since_ms; /* authenticated, Unix ms */
	char remote[64];  /* "192.0.2.1:50000", "[2001:db8::1]:50000"; "" unknown */
};

/*
 * 1 and device @id's connection to this node in *out, or 0 when it has none
 * here. @gw may be NULL (no gateway: 0). One lookup under the presence lock.
 */
int gateway_device_presence(struct gateway *gw, int64_t id, struct gateway_presence *out);

/* @user's devices changed (one registered or deleted): route the next SEND
 * to @user from a fresh list. @gw may be NULL. */
void gateway_user_changed(struct gateway *gw, const char *user);

/* @user switched read receipts on or off (PUT /v1/users/{user}/settings):
 * applies to the user's connections on this node at once. @gw may be NULL. */
void gateway_user_settings_changed(struct gateway *gw, const char *user, int read_receipts);

/* Receipts since the start, summed over the workers. */
struct gateway_receipt_stats {
	uint64_t read_in;      /* read receipt ids from devices' RECEIPT frames */
	uint64_t delivered_in; /* delivered receipt ids made from DELIVER_ACKs */
	uint64_t batches;      /* DELIVER_RECEIPT envelopes made of them */
	uint64_t ids_out;      /* ids in those (after coalescing) */
	uint64_t read_off;     /* RECEIPT frames of users with read receipts off */
	uint64_t lost;	       /* delivered ids that could be neither sent nor stored */
};

/* Workers whose connections struct gateway_stats lists one by one. */
#define GATEWAY_STATS_WORKERS 64

/* What the gateway has done since it started, summed over its workers. */
struct gateway_stats {
	uint64_t uptime_ms;
	uint64_t connections;	   /* now */
	uint64_t peak_connections; /* most at once */
	uint64_t authenticated;	   /* now: connections past WELCOME */
	uint64_t accepted;	   /* connections accepted */
	unsigned nworkers;
	uint64_t worker_connections[GATEWAY_STATS_WORKERS]; /* now, per worker */
	uint64_t frames_in, frames_out, bytes_in, bytes_out;
	uint64_t writes;       /* socket writes: frames_out / writes is the coalescing */
	uint64_t env_accepted; /* SENDs accepted for routing */
	uint64_t env_online;   /* deliveries acknowledged live */
	uint64_t env_drained;  /* stored deliveries acknowledged */
	uint64_t nacks[5];     /* NACKs sent by reason (1 to 5), SENDs and RECEIPTs */
	struct gateway_receipt_stats receipts;
	struct hist_snap delivery; /* live DELIVER written -> acknowledged, us */
};

void gateway_stats(const struct gateway *gw, struct gateway_stats *out);

/* The offline store's counters and commit latencies (0 without a gateway). */
struct queue_store_stats;
void gateway_store_stats(const struct gateway *gw, struct queue_store_stats *out,
			 struct hist_snap *commits);

/* The device was deleted: close its connection (ERROR device_deleted).
 * @gw may be NULL (no gateway: nothing to do). */
void gateway_device_deleted(struct gateway *gw, int64_t id);

/*
 * Drain this node: close the device listeners (/readyz turns 503) and send
 * every connected device RECONNECT, the delays spread evenly over
 * @spread_ms, so that they connect elsewhere without a storm; a device that
 * finishes its handshake meanwhile gets one too. Once only: a second call
 * changes nothing. The node keeps serving what is connected until the
 * devices leave; there is no way back but a restart.
 */
void gateway_drain(struct gateway *gw, unsigned spread_ms);

/* 1 once gateway_drain() was called. */
int gateway_draining(const struct gateway *gw);
/* Listening sockets of the workers not closed yet (0 once a drain has
 * closed them all: no device can connect). @gw may be NULL (0). */
unsigned gateway_listeners_open(const struct gateway *gw);

/* 1 when every listener is up and the gateway is not stopping. */
int gateway_ready(const struct gateway *gw);

/* 1 when the offline store is connected to the database (SENDs to offline
 * devices can be acknowledged). */
int gateway_store_ready(const struct gateway *gw);

/* A certificate and key loaded for the TLS listener, not yet in use. */
struct gateway_tls;

/*
 * SIGHUP, first step: load @cfg's [gateway] tls_cert and tls_key into a new
 * TLS context with the same versions and ciphers, checking that the key
 * matches the certificate and the chain loads. The files are read again
 * even when their paths did not change: a renewal rewrites them. *out gets
 * the context, the caller's to hand to gateway_tls_swap() or to
 * gateway_tls_free(); it is NULL when there is nothing to reload: no
 * gateway (@gw NULL), a gateway that started without TLS, or @cfg without
 * the two keys (turning TLS on or off opens or closes a listener: a restart).
 * FERRY_ECONFIG (the files cannot be used) or FERRY_ENOMEM, and @err, which
 * names the file and OpenSSL's reason, never key material. Call it on the
 * thread that calls gateway_tls_swap().
 */
enum ferry_err gateway_tls_load(const struct gateway *gw, const struct ferry_config *cfg,
				struct gateway_tls **out, char *err, size_t errlen) FERRY_WUR;

/*
 * SIGHUP, second step: handshakes that start from now on use @tls (taken;
 * NULL: no-op). Connections made before keep the certificate they started
 * with until they close. Logs event=tls_reloaded with the certificate's
 * subject, expiry and SHA-256 fingerprint.
 */
void gateway_tls_swap(struct gateway *gw, struct gateway_tls *tls);

/* Free @tls without using it; NULL is a no-op. */
void gateway_tls_free(struct gateway_tls *tls);

/* Stop: close listeners and connections (ERROR shutting_down), join the
 * workers, free everything. NULL is a no-op. */
void gateway_stop(struct gateway *gw);

/*
 * [gateway] user and group (privs.c). gateway_privs_check() only looks: the
 * user (and group) must exist and not be root; with @switching, this
 * process must also be able to switch to them (run as root, or as exactly
 * that user and group already). FERRY_ECONFIG with a message naming the
 * key otherwise; FERRY_OK when user is empty.
 */
enum ferry_err gateway_privs_check(const struct ferry_config *cfg, int switching, char *err,
				   size_t errlen) FERRY_WUR;

/*
 * Switch the whole process to [gateway] user and group (no supplementary
 * groups), check that it cannot become root again, then that it can still
 * open every file it reads on SIGHUP (the config file, TLS, token and push
 * credential files). Call it once everything that needs root is done: the
 * sockets are bound and the keys loaded. Nothing to do when user is empty
 * or ferryd runs as that user already. FERRY_ECONFIG (a file it cannot
 * read, or what gateway_privs_check() refuses) or FERRY_EIO (the switch
 * failed or can be undone), with a message in @err; the process should
 * stop then.
 */
enum ferry_err gateway_privs_drop(const struct ferry_config *cfg, char *err,
				  size_t errlen) FERRY_WUR;

#endif
