/*
 * ferryctl_int.h - what the parts of ferryctl share: argument parsing
 * (ferryctl_args.c) and the human-readable output (ferryctl_out.c), for
 * the commands and the HTTP side in ferryctl.c. Not included elsewhere.
 */
#ifndef FERRY_TOOLS_FERRYCTL_INT_H
#define FERRY_TOOLS_FERRYCTL_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* [admin] listen's default (docs/configuration.md). */
#define CTL_DEFAULT_URL "http://127.0.0.1:7280"
#define CTL_DEFAULT_TIMEOUT_S 30
#define CTL_MAX_TIMEOUT_S 3600
/* Most positional arguments a command takes (set-push ID PROVIDER TOKEN). */
#define CTL_MAX_ARGS 3
/* GET /v1/queues?top=N: what the server accepts (QUEUE_DEEPEST_MAX). */
#define CTL_MAX_TOP 1000
/* drain --spread: what POST /v1/drain accepts for spread_ms. */
#define CTL_MAX_SPREAD_MS 600000
/* drain --wait: seconds to wait for the drain to be done. */
#define CTL_DEFAULT_WAIT_S 60
#define CTL_MAX_WAIT_S 86400

/* Exit codes. */
#define CTL_EXIT_OK 0
#define CTL_EXIT_REFUSED 1 /* the server refused, could not be reached, or drain was not done */
#define CTL_EXIT_USAGE 2

enum ctl_cmd {
	CTL_NONE,
	CTL_STATS,
	CTL_DEVICES,
	CTL_DEVICE,
	CTL_ADD_DEVICE,
	CTL_SET_PUSH,
	CTL_SEND,
	CTL_QUEUES,
	CTL_DISCONNECT,
	CTL_DRAIN,
	CTL_NCMDS
};

/* The command line, checked. Strings point into argv or the environment. */
struct ctl_opts {
	enum ctl_cmd cmd;
	const char *cmd_name;
	const char *url; /* http(s)://host[:port][/prefix], url_len bytes of it */
	size_t url_len;	 /* without trailing slashes */
	const char *token;
	const char *ca; /* NULL: the system's CA store */
	int json;
	long timeout_s;
	const char *user;     /* devices, add-device; send --user */
	int64_t device;	      /* device, set-push, disconnect; send --device (0: none) */
	const char *platform; /* add-device */
	const char *provider; /* set-push: apns or fcm */
	const char *push_token;
	const char *topic, *app; /* set-push, NULL: not given */
	int sandbox;
	const char *text, *file; /* send: exactly one */
	long long ttl;		 /* send: -1 when not given */
	int64_t client_id;	 /* send: 0 when not given */
	unsigned top;		 /* queues: 0 when not given (the server's default) */
	long spread_ms;		 /* drain: -1 when not given (the server's default) */
	long wait_s;		 /* drain: how long to wait for it to be done */
};

enum ctl_parse_result {
	CTL_PARSE_OK,
	CTL_PARSE_HELP,	 /* --help: print the usage, exit 0 */
	CTL_PARSE_USAGE, /* bad arguments: print @err and the usage, exit 2 */
};

extern const char ctl_usage[];

/*
 * Parse the command line. @env_token is FERRY_ADMIN_TOKEN (NULL if unset),
 * used when --token is not given. On CTL_PARSE_USAGE @err says what is
 * wrong; it never quotes the token or the URL.
 */
enum ctl_parse_result ctl_parse(int argc, char **argv, const char *env_token, struct ctl_opts *o,
				char *err, size_t errlen);

/*
 * Human-readable output of a server's answer (borrowed). ctl_print_value:
 * any JSON value, objects as indented "key: value" lines, so new members
 * show up without a change here. The tables: GET /v1/users/{user}/devices
 * and GET /v1/queues; they return -1 (printing nothing) when the answer is
 * not of that shape.
 */
void ctl_print_value(FILE *f, const json_t *v);
int ctl_print_devices(FILE *f, const json_t *answer);
int ctl_print_queues(FILE *f, const json_t *answer);

/* @s with bytes below 0x20 and 0x7f as '?', for a terminal. Returns @out. */
const char *ctl_clean(char *out, size_t outlen, const char *s);

#endif
