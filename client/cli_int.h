/*
 * cli_int.h - the parts of ferry-client that need no server: argument
 * parsing and the JSON lines it prints (cli_util.c), for cli.c and the unit
 * tests. Not to be included outside client/ (but by tests/unit/client/).
 */
#ifndef FERRY_CLIENT_CLI_INT_H
#define FERRY_CLIENT_CLI_INT_H

#include <stddef.h>
#include <stdint.h>

#include "client/ferry.h"
#include "common/err.h"
#include "gateway/proto.h"

#define CLI_SEND_DEFAULT_TIMEOUT_S 30 /* send and read */
#define CLI_MAX_TIMEOUT_S (24 * 3600 * 365)
#define CLI_HOST_MAX 256
#define CLI_PORT_MAX 8

enum cli_cmd {
	CLI_NONE,
	CLI_LISTEN,
	CLI_SEND,
	CLI_READ,
};

/* Strings point into argv or the environment (borrowed). */
struct cli_opts {
	char host[CLI_HOST_MAX]; /* without the brackets of an IPv6 literal */
	char port[CLI_PORT_MAX]; /* decimal */
	uint64_t device;
	const char *secret;
	int tls;
	const char *ca;		 /* NULL: the system's CA store */
	const char *server_name; /* NULL: host */
	int verbose;
	enum cli_cmd cmd;
	uint64_t count;	    /* listen: stop after this many (0: no limit) */
	int until_empty;    /* listen: stop after the first QUEUE_EMPTY */
	uint64_t timeout_s; /* 0: none (listen); send, read default to CLI_SEND_DEFAULT_TIMEOUT_S */
	const char *to;	    /* send, read */
	const char *text;   /* exactly one of text and file for send */
	const char *file;
	uint64_t ttl;
	uint64_t to_device;	     /* read: the device of @to that sent them; 0: not named */
	uint64_t ids[PROTO_MAX_IDS]; /* read: the client ids read */
	size_t nids;		     /* 1..PROTO_MAX_IDS */
};

enum cli_parse_result {
	CLI_PARSE_OK,
	CLI_PARSE_HELP,	 /* --help: print the usage, exit 0 */
	CLI_PARSE_USAGE, /* bad arguments: print @err and the usage, exit 2 */
};

extern const char cli_usage[];

/*
 * Parse the command line. @env_secret is FERRY_DEVICE_SECRET (NULL if unset),
 * used when --secret is not given. On CLI_PARSE_USAGE @err says what is wrong
 * (never the secret).
 */
enum cli_parse_result cli_parse(int argc, char **argv, const char *env_secret, struct cli_opts *o,
				char *err, size_t errlen);

/* A decimal number in [@min, @max], the whole string. FERRY_EINVAL otherwise. */
enum ferry_err cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) FERRY_WUR;

/* HOST:PORT or [V6]:PORT; the port 1-65535. FERRY_EINVAL otherwise. */
enum ferry_err cli_parse_server(const char *s, char *host, size_t hostcap, char *port,
				size_t portcap) FERRY_WUR;

/*
 * The JSON lines printed, without the newline; malloc()ed (the caller frees),
 * NULL when out of memory. Texts must be printable ASCII (libferry's are).
 */
char *cli_json_envelope(const struct ferry_envelope *env);
char *cli_json_ack(uint64_t client_id, uint64_t server_id, unsigned status);
char *cli_json_nack(uint64_t client_id, const char *reason, const char *text);
/* listen: {"receipt": "delivered"|"read", "from_user": U, "device": N, "ids": [...]}. */
char *cli_json_receipt(const struct ferry_receipt *r);
/* listen: {"queue_empty": true, "drained": N}. */
char *cli_json_queue_empty(uint64_t drained);
/* listen: {"error": CODE, "text": TEXT}; send, read: {"error": {"code": CODE, "text": TEXT}}. */
char *cli_json_listen_error(const char *code, const char *text);
char *cli_json_send_error(const char *code, const char *text);

#endif
