/*
 * cli.c - ferry-client, a device on the command line (usage in cli_util.c,
 * docs/client.md).
 *
 * listen: each envelope libferry hands over is turned into its JSON line and
 * held; the line is printed (and stdout flushed) once the DELIVER_ACK that
 * acknowledges it has gone to the socket, so a printed envelope is one the
 * server has been told about. With --count N, envelopes beyond the N-th are
 * refused (left unacknowledged, so the server keeps them) and the run stops
 * when N lines are out. Delivered and read receipts (DELIVER_RECEIPT) are
 * held and printed the same way, once their acknowledgement is written; they
 * are not envelopes for --count. A receipt whose acknowledgement was lost
 * with the connection is dropped (the server sends it again; receipts are
 * not deduplicated, unlike envelopes, whose held lines the acknowledgement
 * of a later duplicate prints). QUEUE_EMPTY gets a line of its own; libferry
 * reports it only after the acknowledgements of every envelope and receipt
 * before it went out, so it follows their lines, and --until-empty can stop
 * there with nothing left unacknowledged (envelopes behind it stay unread,
 * for next time); a timeout before it is a failure, since the queue was not
 * seen drained.
 *
 * send and read: queue one SEND or RECEIPT (read receipt) and run until its
 * ACK or first NACK (a NACK that libferry would retry is cancelled: the
 * command reports it and fails), a final ERROR, a not_implemented ERROR (a
 * server without read receipts), or the timeout.
 *
 * Exit codes: 0 done, 1 refused or failed (with a JSON line saying why), 2 bad
 * arguments. Global state: the client and a flag for the signal handlers,
 * which only ask the loop to stop.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/cli_int.h"
#include "client/ferry.h"
#include "common/buf.h"
#include "common/log.h"
#include "gateway/proto.h"
#include "common/banned.h"

/* Largest --file: a payload the largest server frame could carry. */
#define MAX_FILE (PROTO_MAX_MAX_FRAME - PROTO_PAYLOAD_HEADROOM)
/* The loop wakes at least this often, so a signal between checks is noticed. */
#define SLICE_MS 250
#define CODE_MAX 32

static struct ferry_client *volatile g_client;
static volatile sig_atomic_t g_signalled;

/* An envelope or receipt waiting for its DELIVER_ACK to be written. */
struct held {
	unsigned receipt_kind; /* 0: an envelope, matched by sender device and client id */
	uint64_t sender_device, client_id;
	uint64_t server_id; /* a receipt: matched by it */
	char *line;
};

struct cli {
	struct cli_opts o;
	struct ferry_client *c;
	int authenticated, done, status;
	/* listen */
	struct held *held;
	size_t nheld, capheld;
	uint64_t accepted, printed;
	/* send, read */
	uint64_t client_id;
	int gave_up; /* the server cannot do it: report the ERROR without waiting */
	/* the last ERROR from the server */
	char code[CODE_MAX];
	char text[PROTO_MAX_TEXT + 1];
	int have_error, final;
};

static void on_signal(int sig)
{
	g_signalled = 1;
	if (g_client)
		ferry_client_stop(g_client);
}

/* Print @line (taken) and a newline, flushed; NULL means out of memory. */
static void print_line(char *line)
{
	if (!line) {
		fprintf(stderr, "ferry-client: out of memory\n");
		return;
	}
	printf("%s\n", line);
	fflush(stdout);
	free(line);
}

/* ---- callbacks ---- */

static void on_connected(void *arg, const struct ferry_welcome *w)
{
	struct cli *s = arg;

	s->authenticated = 1;
}

static void on_server_error(void *arg, uint64_t code, const char *text, int final)
{
	struct cli *s = arg;

	snprintf(s->code, sizeof(s->code), "%s", proto_error_name(code));
	snprintf(s->text, sizeof(s->text), "%s", text);
	s->have_error = 1;
	s->final = final;
	if (code == PROTO_ERR_NOT_IMPLEMENTED && s->o.cmd != CLI_LISTEN) {
		s->gave_up = 1; /* what we sent, the server does not serve */
		ferry_client_stop(s->c);
	}
}

/* Hold @line (taken) until its acknowledgement is written; -1 if out of memory. */
static int hold(struct cli *s, char *line, const struct held *key)
{
	struct held *h;

	if (!line)
		return -1;
	if (s->nheld == s->capheld) {
		size_t cap = s->capheld ? 2 * s->capheld : 64;

		h = realloc(s->held, cap * sizeof(*h));
		if (!h) {
			free(line);
			return -1;
		}
		s->held = h;
		s->capheld = cap;
	}
	h = &s->held[s->nheld++];
	*h = *key;
	h->line = line;
	return 0;
}

static int on_deliver(void *arg, const struct ferry_envelope *env)
{
	struct cli *s = arg;
	struct held key = { .sender_device = env->sender_device, .client_id = env->client_id };

	if (s->o.count && s->accepted >= s->o.count)
		return 1; /* not ours to take: the server keeps it for next time */
	if (hold(s, cli_json_envelope(env), &key))
		return 1;
	s->accepted++;
	return 0;
}

static int on_receipt(void *arg, const struct ferry_receipt *r)
{
	struct cli *s = arg;
	struct held key = { .receipt_kind = r->kind, .server_id = r->server_id };

	return hold(s, cli_json_receipt(r), &key) ? 1 : 0;
}

static int held_matches(const struct held *h, const struct ferry_acked *a)
{
	if (a->receipt_kind)
		return h->receipt_kind && h->server_id == a->server_id;
	return !h->receipt_kind && h->sender_device == a->sender_device &&
	       h->client_id == a->client_id;
}

static void on_deliver_acked(void *arg, const struct ferry_acked *acked, size_t n)
{
	struct cli *s = arg;

	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < s->nheld; j++) {
			struct held *h = &s->held[j];

			if (!held_matches(h, &acked[i]))
				continue;
			if (!h->receipt_kind)
				s->printed++;
			print_line(h->line);
			memmove(h, h + 1, (s->nheld - j - 1) * sizeof(*h));
			s->nheld--;
			break;
		}
	}
	if (s->o.count && s->printed >= s->o.count) {
		s->done = 1;
		ferry_client_stop(s->c);
	}
}

/* The acknowledgements not written are lost: held receipts will come again. */
static void on_disconnected(void *arg, enum ferry_err why, const char *text, uint64_t retry_ms)
{
	struct cli *s = arg;
	size_t kept = 0;

	for (size_t j = 0; j < s->nheld; j++) {
		if (s->held[j].receipt_kind)
			free(s->held[j].line);
		else
			s->held[kept++] = s->held[j];
	}
	s->nheld = kept;
}

static void on_queue_empty(void *arg, uint64_t drained)
{
	struct cli *s = arg;

	print_line(cli_json_queue_empty(drained));
	if (s->o.until_empty) {
		s->done = 1;
		ferry_client_stop(s->c);
	}
}

static void on_send_acked(void *arg, uint64_t client_id, uint64_t server_id, unsigned status)
{
	struct cli *s = arg;

	if (client_id != s->client_id)
		return;
	print_line(cli_json_ack(client_id, server_id, status));
	s->done = 1;
	s->status = 0;
	ferry_client_stop(s->c);
}

static void on_send_nacked(void *arg, uint64_t client_id, uint64_t reason, const char *text,
			   int final)
{
	struct cli *s = arg;

	if (client_id != s->client_id)
		return;
	if (!final)
		(void)ferry_client_cancel(s->c, client_id); /* report the first NACK, no retry */
	print_line(cli_json_nack(client_id, proto_nack_name(reason), text));
	s->done = 1;
	s->status = 1;
	ferry_client_stop(s->c);
}

/* ---- running ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Run until done, a final ERROR, a signal or @timeout_s (0: none).
 * Returns 0, or 1 if the loop itself failed.
 */
static int run(struct cli *s, uint64_t timeout_s)
{
	uint64_t end = timeout_s ? now_ms() + timeout_s * 1000 : UINT64_MAX;

	while (!s->done && !s->gave_up && !g_signalled) {
		uint64_t now = now_ms();
		enum ferry_err rc;

		if (now >= end)
			break;
		rc = ferry_client_run(s->c, end - now < SLICE_MS ? (int)(end - now) : SLICE_MS);
		if (rc == FERRY_EAUTH)
			break; /* a final ERROR: on_server_error() has it */
		if (rc) {
			fprintf(stderr, "ferry-client: the event loop failed: %s\n",
				ferry_strerror(rc));
			return 1;
		}
	}
	return 0;
}

/* What went wrong when nothing else says: the last ERROR, or why connecting failed. */
static void why_not(const struct cli *s, const char **code, const char **text)
{
	if (s->have_error) {
		*code = s->code;
		*text = s->text;
	} else if (!s->authenticated) {
		*code = "connect_failed";
		*text = ferry_client_last_error(s->c);
		if (!**text)
			*text = "no connection to the server";
	} else {
		*code = "timeout";
		*text = "no answer from the server in time";
	}
}

static int do_listen(struct cli *s)
{
	const char *code, *text;

	if (run(s, s->o.timeout_s))
		return 1;
	if (s->done)
		return 0;
	if (s->final || !s->authenticated) {
		why_not(s, &code, &text);
		print_line(cli_json_listen_error(code, text));
		return 1;
	}
	if (s->o.until_empty && !g_signalled) {
		print_line(
			cli_json_listen_error("timeout", "no QUEUE_EMPTY from the server in time"));
		return 1;
	}
	return 0; /* timeout or signal: whatever arrived is out */
}

static int read_file(const char *path, struct buf *b)
{
	char chunk[16384];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f) {
		fprintf(stderr, "ferry-client: cannot open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(b, chunk, n)) {
			fprintf(stderr,
				"ferry-client: '%s' is over the payload limit of %u bytes\n", path,
				(unsigned)MAX_FILE);
			fclose(f);
			return -1;
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "ferry-client: cannot read '%s': %s\n", path, strerror(errno));
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

/* Wait for the answer to s->client_id: 0 ACK, 1 anything else (with a line saying why). */
static int await_answer(struct cli *s)
{
	const char *code, *text;

	s->status = 1;
	if (run(s, s->o.timeout_s))
		return 1;
	if (s->done)
		return s->status;
	why_not(s, &code, &text);
	print_line(cli_json_send_error(code, text));
	return 1;
}

static int do_send(struct cli *s)
{
	struct buf payload;
	enum ferry_err rc;

	buf_init(&payload, MAX_FILE);
	if (s->o.file && read_file(s->o.file, &payload)) {
		buf_release(&payload);
		return 2;
	}
	if (s->o.text)
		rc = ferry_client_send(s->c, s->o.to, (uint32_t)s->o.ttl, s->o.text,
				       strlen(s->o.text), &s->client_id);
	else
		rc = ferry_client_send(s->c, s->o.to, (uint32_t)s->o.ttl, payload.data, payload.len,
				       &s->client_id);
	buf_release(&payload);
	if (rc) {
		print_line(cli_json_send_error("invalid", ferry_strerror(rc)));
		return 1;
	}
	return await_answer(s);
}

static int do_read(struct cli *s)
{
	enum ferry_err rc;

	rc = ferry_client_read(s->c, s->o.to, s->o.to_device, s->o.ids, s->o.nids, &s->client_id);
	if (rc) {
		print_line(cli_json_send_error("invalid", ferry_strerror(rc)));
		return 1;
	}
	return await_answer(s);
}

/* ---- main ---- */

static int start(struct cli *s)
{
	struct ferry_callbacks cb = {
		.deliver = on_deliver,
		.deliver_acked = on_deliver_acked,
		.send_acked = on_send_acked,
		.send_nacked = on_send_nacked,
		.server_error = on_server_error,
		.connected = on_connected,
		.queue_empty = on_queue_empty,
		.receipt = on_receipt,
		.disconnected = on_disconnected,
	};
	struct ferry_config cfg = {
		.host = s->o.host,
		.port = s->o.port,
		.device_id = s->o.device,
		.secret = s->o.secret,
		.secret_len = strlen(s->o.secret),
		.tls = s->o.tls,
		.ca_file = s->o.ca,
		.server_name = s->o.server_name,
	};
	char err[256];
	enum ferry_err rc;

	if (s->o.cmd != CLI_LISTEN) {
		cb.deliver = NULL; /* unacknowledged: they stay with the server for a listener */
		cb.receipt = NULL;
		cb.queue_empty = NULL;
		cb.disconnected = NULL;
	}
	rc = ferry_client_new(&cfg, &cb, s, &s->c, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry-client: %s\n", err);
		return rc == FERRY_ENOMEM ? 1 : 2;
	}
	g_client = s->c;
	return 0;
}

static void on_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
	struct cli s = { .status = 0 };
	char err[512];
	int rc;

	switch (cli_parse(argc, argv, getenv("FERRY_DEVICE_SECRET"), &s.o, err, sizeof(err))) {
	case CLI_PARSE_HELP:
		fputs(cli_usage, stdout);
		return 0;
	case CLI_PARSE_USAGE:
		fprintf(stderr, "ferry-client: %s\n%s", err, cli_usage);
		return 2;
	case CLI_PARSE_OK:
		break;
	}
	log_set_level(s.o.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
	on_signals();
	rc = start(&s);
	if (rc)
		return rc;
	if (s.o.cmd == CLI_LISTEN)
		rc = do_listen(&s);
	else if (s.o.cmd == CLI_READ)
		rc = do_read(&s);
	else
		rc = do_send(&s);
	g_client = NULL;
	ferry_client_free(s.c);
	for (size_t i = 0; i < s.nheld; i++)
		free(s.held[i].line);
	free(s.held);
	return rc;
}
