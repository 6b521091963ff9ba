/*
 * fault.h - crash points for the fault suite (tests/faults/), test builds only.
 *
 * A crash point names a moment that matters to the invariant (an envelope the
 * server has acknowledged is never lost): just before a batch's COMMIT is
 * sent, between its COMMIT returning and the requests being answered, just
 * after an ACK was handed to a connection. Built with -DFERRY_FAULTS (the
 * ASan and TSan builds that `make test` runs), each FAULT_POINT(name) counts its
 * passages, and when the environment variable FERRY_FAULT is
 * "NAME:N[:DELAY_MS]" the daemon dies with SIGKILL at the Nth passage of
 * NAME (after DELAY_MS, from another thread, if given: time for what was
 * just written to reach the socket). Before dying it writes one line to
 * stderr, "ferryd: fault point NAME hit N", so that a test can tell the
 * point it asked for from a crash of another kind.
 *
 * Without FERRY_FAULTS (every release build, bin/ferryd) FAULT_POINT is
 * nothing at all: no variable is read, no code is emitted.
 */
#ifndef FERRY_COMMON_FAULT_H
#define FERRY_COMMON_FAULT_H

#ifdef FERRY_FAULTS
/* Count a passage of @name; die if FERRY_FAULT asks for this one. Thread-safe. */
void fault_point(const char *name);
#define FAULT_POINT(name) fault_point(name)
#else
#define FAULT_POINT(name) ((void)0)
#endif

#endif
