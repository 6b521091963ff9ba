/*
 * faults.h - the fault suite's shared parts: a daemon under test, devices
 * that record every SEND, ACK and DELIVER, and the checker that scores the
 * history.
 *
 * The history. Each sender keeps one record per client id (struct fh_sent:
 * target user, transmissions, whether and how it was ACKed, the server id);
 * each receiving device keeps every DELIVER it read, in the order read
 * (struct fh_seen). fh_score() then counts, per receiving device:
 *
 *   lost        an envelope a sender saw ACKed (stored or delivered) that a
 *               target device never received: must be 0
 *   unexpected  a DELIVER of something never sent, to a device that was not
 *               a target, or with a wrong payload or sender: must be 0
 *   reordered   for one (sender, receiving device), a client id first seen
 *               after a larger one was first seen: must be 0
 *   dup         deliveries after the first (at-least-once): allowed, counted
 *               (libferry drops them for applications)
 *
 * Senders send client ids 1, 2, 3, ... in order and SEND them in that order
 * (raw senders one at a time; libferry senders with first_client_id 1, in
 * its queue's order), so client id order is acceptance order. Not when
 * NACKs retry_later come with a window of SENDs (libferry retries the
 * refused ones later while the next go on): then the order checked is that
 * of the server ids the ACKs carried (by_server_id), the server's own
 * acceptance order, and envelopes never ACKed are not ordered. The payload of
 * client id C from sender S to user R is "fault sS cC rR", optionally
 * padded with '.', so a receiver can tell a wrong or mixed-up payload.
 *
 * Two kinds of device: raw ones (struct fh_peer, the protocol by hand, for
 * exact frame control: which acks go out, when the socket drops) and
 * libferry clients (client/ferry.h, as applications use it: its own
 * retransmissions, backoff and dedup). Scenarios say which they use.
 *
 * Threads: each device thread owns its records until it is joined; the main
 * thread injects the faults, then scores. Only the main thread calls cmocka.
 * One scenario at a time: everything lives in the one struct fh fx, which
 * fh_reset() clears between scenarios.
 */
#ifndef FERRY_TESTS_FAULTS_H
#define FERRY_TESTS_FAULTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "client/ferry.h"
#include "gateway/proto.h"
#include "tests/integration/harness.h"

#define FH_TOKEN "faults-test-token"
#define FH_MAX_SENDERS 8
#define FH_MAX_RECEIVERS 8
#define FH_PEER_BUF (96 * 1024) /* over the daemon's max_frame (64 KiB) */
#define FH_MAX_EXAMPLES 10

/* One envelope a sender sent (index: its client id). */
struct fh_sent {
	uint8_t to;	    /* receiving user fr<to> */
	uint8_t acked;	    /* 1 once ACK came */
	uint8_t status;	    /* the ACK's status */
	uint8_t rejected;   /* a NACK that is not "retry later" */
	uint32_t tx;	    /* transmissions (raw senders) or 1 (libferry) */
	uint64_t server_id; /* from the ACK */
	int64_t acked_ms;   /* when the ACK came (fh_now_ms) */
};

struct fh_sender {
	int idx;
	int64_t id;
	char user[16]; /* fs<idx> */
	char secret[64];
	unsigned seed;
	pthread_t thread;
	atomic_int done;
	struct fh_sent *env; /* [1..last] */
	size_t cap;
	uint64_t last; /* highest client id sent */
	unsigned connects, nacks, stray_acks, delivers, bad_frames;
	unsigned pad;	   /* payload padding, bytes */
	unsigned limit;	   /* libferry senders: stop after this many (0: no limit) */
	unsigned interval; /* libferry senders: ms between SENDs (0: as fast as the window) */
	unsigned window;   /* libferry senders: SENDs queued at once */
	int by_server_id;  /* acceptance order is server id order, not client id order */
	struct ferry_client *client;
};

/* One DELIVER a receiving device read, in the order read. */
struct fh_seen {
	uint64_t sender_device;
	uint64_t client_id;
	uint64_t server_id;
	int sender;   /* index, or -1: no such sender */
	int valid;    /* sender user and payload as that sender would send them */
	int in_drain; /* read by the final drain */
};

struct fh_receiver {
	int idx;
	int user; /* fr<user> */
	int64_t id;
	char secret[64];
	int always_online;
	unsigned seed;
	pthread_t thread;
	pthread_mutex_t lock; /* seen[] (libferry callbacks vs the checker) */
	struct fh_seen *seen;
	size_t n, cap;
	unsigned connects, queue_empty, drained, lazy_phases, offline_phases, bad_frames;
};

/* A device connection that never fails the test: errors close it. */
struct fh_peer {
	int fd;
	uint8_t buf[FH_PEER_BUF];
	size_t len, used; /* bytes buffered; bytes of the frame last returned */
	struct proto_frame f;
	int bad; /* the server sent a malformed frame */
};

struct fh {
	char *conninfo;
	char ferryd[4096]; /* the copy of the daemon under test */
	struct th_ferryd d;
	int port;
	int nsnd, nrcv;
	struct fh_sender snd[FH_MAX_SENDERS];
	struct fh_receiver rcv[FH_MAX_RECEIVERS];
	atomic_int stop_senders, abort_senders, stop_receivers;
	struct fh_peer *own[2]; /* a scenario's own peers, freed by fh_reset() */
};

extern struct fh fx;

struct fh_score {
	uint64_t sent, acked, acked_stored, tx, delivered, dup, lost, unexpected, reordered;
	uint64_t drain_delivered;
	unsigned nacks, undrained, stray, bad;
	uint64_t lost_ids[FH_MAX_EXAMPLES];
	size_t nlost_ids;
};

/* ---- small things ---- */

int64_t fh_now_ms(void);
void fh_sleep_ms(int64_t ms);
int fh_rnd(unsigned *seed, int lo, int hi);
/* A number from the environment, or @dflt. */
unsigned fh_env_uint(const char *name, unsigned dflt);
/* "long" when FERRY_FAULTS_LONG is set (make check-faults): @lng, else @shrt. */
unsigned fh_pick(unsigned shrt, unsigned lng);
/* The run's seed (FERRY_FAULTS_SEED or the time), printed once. */
unsigned fh_seed(void);

/* ---- the daemon ---- */

/*
 * A fresh database, migrated, and ferryd on it with device listener
 * fx.port, [gateway] workers = 2, @gateway_extra (more [gateway] lines, or
 * "") and @extra (whole sections, or ""). The binary is the copy pinned on
 * first use, so that restarts run the same build.
 */
void fh_start_daemon(const char *gateway_extra, const char *extra);
/* Kill -9 (fails the test unless it was running) and start it again. */
void fh_kill_restart(unsigned down_ms);
/*
 * Start the daemon (after a kill) with FERRY_FAULT=@fault (common/fault.h),
 * without waiting for it to be ready, and wait for it to exit: its status
 * (128 + 9 when the crash point killed it), or -1 if it was still running
 * after @timeout_ms (it is killed then).
 */
int fh_run_armed(const char *fault, unsigned timeout_ms);
/* Stop (if running) and forget the daemon, free every record. */
void fh_reset(void);
/* The daemon's resident set size, KiB (0 if unknown). */
long fh_rss_kib(void);
/* GET /readyz: its status. */
long fh_readyz(void);
/* Print the daemon's log lines that name @server_ids, and its warnings. */
void fh_show_log(const uint64_t *server_ids, size_t n);

/* ---- devices ---- */

/* Create @nsnd senders fs0.. and receivers on users fr<user[i]>. */
void fh_make_devices(int nsnd, int nrcv, const int *rusers, unsigned seed);

void fh_peer_close(struct fh_peer *p);
int fh_peer_send(struct fh_peer *p, const struct proto_frame *f);
/* 1: a frame in p->f; 0: nothing within @timeout_ms; -1: closed. */
int fh_peer_read(struct fh_peer *p, int timeout_ms);
/* Connect, HELLO, WELCOME. 0: ready; -1: could not. */
int fh_peer_open(struct fh_peer *p, int64_t device, const char *secret);
int fh_peer_ack(struct fh_peer *p, const uint64_t *ids, size_t n);
int fh_peer_pong(struct fh_peer *p, uint64_t nonce);
struct fh_peer *fh_peer_new(void);
void fh_peer_free(struct fh_peer *p);

/* Make room for client id @cid in @s's records, with target user @to. */
void fh_sent_new(struct fh_sender *s, uint64_t cid, int to);
/* SEND client id @cid of @s (its record made) on @p. */
int fh_send_env(struct fh_sender *s, struct fh_peer *p, uint64_t cid);
/* Record a DELIVER read by @r. */
void fh_record(struct fh_receiver *r, const struct proto_deliver *d, int in_drain);
/* The payload of (sender, client id, target user), without padding. */
void fh_payload(char *out, size_t cap, int sender, uint64_t client_id, int to);

/*
 * The raw traffic of the kill and restart scenarios: senders with one SEND
 * outstanding, retransmitting after NACK retry_later and every reconnect;
 * receivers that go offline and come back, some holding their acks past the
 * ack timeout, the ones with always_online set staying.
 */
void *fh_raw_sender(void *arg);
void *fh_raw_receiver(void *arg);
void fh_start_threads(void *(*snd)(void *), void *(*rcv)(void *));
/* Let senders finish their outstanding SEND (30 s at most), join them. */
void fh_stop_senders(void);
void fh_stop_receivers(void);
/* Connect @r once more and read until QUEUE_EMPTY, acking everything.
 * 0: caught up; -1: it could not within 15 s. */
int fh_drain(struct fh_receiver *r);
/* Drain every receiver; returns how many could not. */
unsigned fh_drain_all(void);

/* ---- libferry devices ---- */

/* A libferry client for sender @s or receiver @r (the other NULL). */
struct ferry_client *fh_lf_new(struct fh_sender *s, struct fh_receiver *r);
/* Thread bodies: a sender sending to random receiving users up to
 * s->limit; a receiver that stays connected until stop_receivers. */
void *fh_lf_sender(void *arg);
void *fh_lf_receiver(void *arg);

/* ---- scoring ---- */

void fh_score(struct fh_score *sc);
/*
 * Score, print "faults: scenario=NAME sent=... lost=... EXTRA", show the log
 * lines of what went wrong, and fail unless lost, unexpected, reordered,
 * undrained, stray answers and bad frames are all 0.
 */
void fh_report(const char *scenario, struct fh_score *sc, unsigned undrained, const char *extra);

#endif
