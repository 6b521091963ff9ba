/*
 * cli_util.c - ferry-client's argument parsing and JSON output (cli_int.h).
 *
 * Parsing is one table of options, each valid for the global part or one
 * command; options may come before or after the command word, as `--opt
 * VALUE` or `--opt=VALUE`, each at most once. Numbers are whole decimal
 * strings within a range (strtoull with full checks); --ids is a comma-
 * separated list of them. Errors name the option and what is wrong with it,
 * never the secret.
 *
 * Output lines are built with jansson (insertion order kept), integers above
 * INT64_MAX as reals (jansson's integers are signed), payloads in base64 with
 * OpenSSL's EVP_EncodeBlock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "client/cli_int.h"
#include "gateway/proto.h"
#include "common/banned.h"

const char cli_usage[] =
	"usage: ferry-client --server HOST:PORT --device ID --secret SECRET\n"
	"                    [--tls [--ca FILE] [--server-name NAME]] [--verbose] COMMAND ...\n"
	"\n"
	"commands:\n"
	"  listen [--count N] [--until-empty] [--timeout SEC]\n"
	"      print each delivered envelope as one JSON line once it is acknowledged,\n"
	"      each delivered or read receipt for this user's messages as\n"
	"      {\"receipt\": \"delivered\"|\"read\", \"from_user\": U, \"device\": D, \"ids\": "
	"[...]}\n"
	"      (acknowledged likewise), and {\"queue_empty\": true, \"drained\": N} once\n"
	"      what was stored for the device while it was away has all come; stop after\n"
	"      N envelopes, after SEC seconds, or with --until-empty at the first\n"
	"      queue_empty line (exit 1 if SEC seconds pass before it)\n"
	"  send --to USER (--text STR | --file PATH) [--ttl SEC] [--timeout SEC]\n"
	"      send one envelope to every other device of USER and print the server's\n"
	"      ACK or NACK as JSON (default timeout 30 s)\n"
	"  read --to USER --ids ID[,ID...] [--to-device D] [--timeout SEC]\n"
	"      tell USER that this user has read the messages USER's device D sent\n"
	"      under these client ids (from_user, from_device and client_id of listen's\n"
	"      lines; D 0 or left out: not named, up to 512 ids) and print the server's\n"
	"      ACK or NACK as send does\n"
	"\n"
	"The secret may come from the environment variable FERRY_DEVICE_SECRET instead.\n"
	"Exit status: 0 done, 1 refused or failed, 2 bad arguments.\n";

enum opt_id {
	O_SERVER,
	O_DEVICE,
	O_SECRET,
	O_TLS,
	O_CA,
	O_SERVER_NAME,
	O_VERBOSE,
	O_HELP,
	O_COUNT,
	O_UNTIL_EMPTY,
	O_TIMEOUT,
	O_TO,
	O_TEXT,
	O_FILE,
	O_TTL,
	O_TO_DEVICE,
	O_IDS,
	O_N
};

#define FOR_ALL ((1u << CLI_LISTEN) | (1u << CLI_SEND) | (1u << CLI_READ))

static const struct opt {
	const char *name;
	int has_arg;
	unsigned cmds; /* commands it is valid with, as 1 << enum cli_cmd */
} opts[O_N] = {
	[O_SERVER] = { "server", 1, FOR_ALL },
	[O_DEVICE] = { "device", 1, FOR_ALL },
	[O_SECRET] = { "secret", 1, FOR_ALL },
	[O_TLS] = { "tls", 0, FOR_ALL },
	[O_CA] = { "ca", 1, FOR_ALL },
	[O_SERVER_NAME] = { "server-name", 1, FOR_ALL },
	[O_VERBOSE] = { "verbose", 0, FOR_ALL },
	[O_HELP] = { "help", 0, FOR_ALL },
	[O_COUNT] = { "count", 1, 1u << CLI_LISTEN },
	[O_UNTIL_EMPTY] = { "until-empty", 0, 1u << CLI_LISTEN },
	[O_TIMEOUT] = { "timeout", 1, FOR_ALL },
	[O_TO] = { "to", 1, (1u << CLI_SEND) | (1u << CLI_READ) },
	[O_TEXT] = { "text", 1, 1u << CLI_SEND },
	[O_FILE] = { "file", 1, 1u << CLI_SEND },
	[O_TTL] = { "ttl", 1, 1u << CLI_SEND },
	[O_TO_DEVICE] = { "to-device", 1, 1u << CLI_READ },
	[O_IDS] = { "ids", 1, 1u << CLI_READ },
};

static const char *const cmd_names[] = {
	[CLI_NONE] = "",
	[CLI_LISTEN] = "listen",
	[CLI_SEND] = "send",
	[CLI_READ] = "read",
};

enum ferry_err cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9') /* no sign, no space, not empty */
		return FERRY_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return FERRY_EINVAL;
	*out = v;
	return FERRY_OK;
}

enum ferry_err cli_parse_server(const char *s, char *host, size_t hostcap, char *port,
				size_t portcap)
{
	const char *h = s, *colon, *hend;
	uint64_t p;

	if (*s == '[') {
		h = s + 1;
		hend = strchr(h, ']');
		if (!hend || hend[1] != ':')
			return FERRY_EINVAL;
		colon = hend + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || memchr(s, ':', (size_t)(colon - s))) /* bare IPv6: use [v6]:port */
			return FERRY_EINVAL;
		hend = colon;
	}
	if (hend == h || (size_t)(hend - h) >= hostcap ||
	    cli_parse_u64(colon + 1, 1, 65535, &p) != FERRY_OK)
		return FERRY_EINVAL;
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	snprintf(port, portcap, "%u", (unsigned)p);
	return FERRY_OK;
}

/* Find @arg (without its leading "--" and any "=value") in the table. */
static int find_opt(const char *arg, size_t len)
{
	for (int i = 0; i < O_N; i++) {
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, arg, len) == 0)
			return i;
	}
	return -1;
}

/* First pass: the command word and each option's raw value. */
static enum cli_parse_result scan(int argc, char **argv, struct cli_opts *o, const char *val[O_N],
				  char *err, size_t errlen)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq;
		int id;

		enum cli_cmd cmd = CLI_NONE;

		for (int k = CLI_LISTEN; k <= CLI_READ; k++) {
			if (strcmp(a, cmd_names[k]) == 0)
				cmd = (enum cli_cmd)k;
		}
		if (cmd != CLI_NONE) {
			if (o->cmd != CLI_NONE) {
				snprintf(err, errlen, "more than one command ('%s')", a);
				return CLI_PARSE_USAGE;
			}
			o->cmd = cmd;
			continue;
		}
		if (strcmp(a, "-h") == 0)
			a = "--help";
		if (strncmp(a, "--", 2) != 0) {
			snprintf(err, errlen, "unexpected argument '%s'", a);
			return CLI_PARSE_USAGE;
		}
		eq = strchr(a + 2, '=');
		id = find_opt(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
		if (id < 0) {
			snprintf(err, errlen, "unknown option '%.*s'",
				 (int)(eq ? (size_t)(eq - a) : strlen(a)), a);
			return CLI_PARSE_USAGE;
		}
		if (val[id]) {
			snprintf(err, errlen, "option '--%s' given twice", opts[id].name);
			return CLI_PARSE_USAGE;
		}
		if (!opts[id].has_arg && eq) {
			snprintf(err, errlen, "option '--%s' takes no value", opts[id].name);
			return CLI_PARSE_USAGE;
		}
		if (opts[id].has_arg && !eq && i + 1 >= argc) {
			snprintf(err, errlen, "option '--%s' needs a value", opts[id].name);
			return CLI_PARSE_USAGE;
		}
		val[id] = !opts[id].has_arg ? "" : eq ? eq + 1 : argv[++i];
	}
	return CLI_PARSE_OK;
}

static enum cli_parse_result bad(char *err, size_t errlen, const char *what, const char *value)
{
	if (value)
		snprintf(err, errlen, "%s: '%s'", what, value);
	else
		snprintf(err, errlen, "%s", what);
	return CLI_PARSE_USAGE;
}

/* The options every command has. */
static enum cli_parse_result global_opts(struct cli_opts *o, const char *val[O_N],
					 const char *env_secret, char *err, size_t errlen)
{
	if (!val[O_SERVER])
		return bad(err, errlen, "missing --server HOST:PORT", NULL);
	if (cli_parse_server(val[O_SERVER], o->host, sizeof(o->host), o->port, sizeof(o->port)))
		return bad(err, errlen, "--server must be HOST:PORT or [IPV6]:PORT", val[O_SERVER]);
	if (!val[O_DEVICE])
		return bad(err, errlen, "missing --device ID", NULL);
	if (cli_parse_u64(val[O_DEVICE], 1, INT64_MAX, &o->device))
		return bad(err, errlen, "--device must be a positive integer", val[O_DEVICE]);
	o->secret = val[O_SECRET] ? val[O_SECRET] : env_secret;
	if (!o->secret || !*o->secret)
		return bad(err, errlen, "missing --secret (or FERRY_DEVICE_SECRET)", NULL);
	if (strlen(o->secret) > PROTO_MAX_SECRET)
		return bad(err, errlen, "the secret is over 256 bytes", NULL);
	o->tls = val[O_TLS] != NULL;
	o->ca = val[O_CA];
	o->server_name = val[O_SERVER_NAME];
	if (!o->tls && (o->ca || o->server_name))
		return bad(err, errlen, "--ca and --server-name need --tls", NULL);
	if ((o->ca && !*o->ca) || (o->server_name && !*o->server_name))
		return bad(err, errlen, "--ca and --server-name cannot be empty", NULL);
	o->verbose = val[O_VERBOSE] != NULL;
	if (val[O_TIMEOUT] && cli_parse_u64(val[O_TIMEOUT], 1, CLI_MAX_TIMEOUT_S, &o->timeout_s))
		return bad(err, errlen, "--timeout must be a number of seconds, at least 1",
			   val[O_TIMEOUT]);
	return CLI_PARSE_OK;
}

/* --to USER, for send and read. */
static enum cli_parse_result to_opt(struct cli_opts *o, const char *val[O_N], char *err,
				    size_t errlen)
{
	const char *cmd = cmd_names[o->cmd];

	o->to = val[O_TO];
	if (!o->to) {
		snprintf(err, errlen, "%s: missing --to USER", cmd);
		return CLI_PARSE_USAGE;
	}
	if (!proto_user_valid((const uint8_t *)o->to, strlen(o->to))) {
		snprintf(err, errlen, "%s: --to must be 1-64 characters of [A-Za-z0-9._:@+-]: '%s'",
			 cmd, o->to);
		return CLI_PARSE_USAGE;
	}
	if (!o->timeout_s)
		o->timeout_s = CLI_SEND_DEFAULT_TIMEOUT_S;
	return CLI_PARSE_OK;
}

static enum cli_parse_result send_opts(struct cli_opts *o, const char *val[O_N], char *err,
				       size_t errlen)
{
	enum cli_parse_result r = to_opt(o, val, err, errlen);

	if (r != CLI_PARSE_OK)
		return r;
	o->text = val[O_TEXT];
	o->file = val[O_FILE];
	if (!o->text == !o->file)
		return bad(err, errlen, "send: give exactly one of --text and --file", NULL);
	if (o->file && !*o->file)
		return bad(err, errlen, "send: --file cannot be empty", NULL);
	if (val[O_TTL] && cli_parse_u64(val[O_TTL], 0, UINT32_MAX, &o->ttl))
		return bad(err, errlen, "send: --ttl must be a number of seconds", val[O_TTL]);
	return CLI_PARSE_OK;
}

/* ID[,ID...]: 1 to PROTO_MAX_IDS whole decimal numbers. */
static enum ferry_err parse_ids(const char *s, uint64_t *ids, size_t *n)
{
	char one[24]; /* UINT64_MAX has 20 digits */

	*n = 0;
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);

		if (len >= sizeof(one) || *n == PROTO_MAX_IDS)
			return FERRY_EINVAL;
		memcpy(one, s, len);
		one[len] = '\0';
		if (cli_parse_u64(one, 0, UINT64_MAX, &ids[*n]) != FERRY_OK)
			return FERRY_EINVAL;
		(*n)++;
		if (!comma)
			return FERRY_OK;
		s = comma + 1;
	}
}

static enum cli_parse_result read_opts(struct cli_opts *o, const char *val[O_N], char *err,
				       size_t errlen)
{
	enum cli_parse_result r = to_opt(o, val, err, errlen);

	if (r != CLI_PARSE_OK)
		return r;
	if (!val[O_IDS])
		return bad(err, errlen, "read: missing --ids ID[,ID...]", NULL);
	if (parse_ids(val[O_IDS], o->ids, &o->nids) != FERRY_OK)
		return bad(err, errlen,
			   "read: --ids must be 1 to 512 client ids (whole numbers) separated by "
			   "commas",
			   val[O_IDS]);
	if (val[O_TO_DEVICE] && cli_parse_u64(val[O_TO_DEVICE], 0, INT64_MAX, &o->to_device))
		return bad(err, errlen, "read: --to-device must be a device id (0: not named)",
			   val[O_TO_DEVICE]);
	return CLI_PARSE_OK;
}

enum cli_parse_result cli_parse(int argc, char **argv, const char *env_secret, struct cli_opts *o,
				char *err, size_t errlen)
{
	const char *val[O_N] = { NULL };
	enum cli_parse_result r;

	memset(o, 0, sizeof(*o));
	r = scan(argc, argv, o, val, err, errlen);
	if (r != CLI_PARSE_OK)
		return r;
	if (val[O_HELP])
		return CLI_PARSE_HELP;
	if (o->cmd == CLI_NONE)
		return bad(err, errlen, "missing command: listen, send or read", NULL);
	for (int i = 0; i < O_N; i++) {
		if (val[i] && !(opts[i].cmds & (1u << o->cmd))) {
			snprintf(err, errlen, "option '--%s' is not valid with '%s'", opts[i].name,
				 cmd_names[o->cmd]);
			return CLI_PARSE_USAGE;
		}
	}
	r = global_opts(o, val, env_secret, err, errlen);
	if (r != CLI_PARSE_OK)
		return r;
	if (o->cmd == CLI_LISTEN) {
		o->until_empty = val[O_UNTIL_EMPTY] != NULL;
		if (val[O_COUNT] && cli_parse_u64(val[O_COUNT], 1, UINT64_MAX, &o->count))
			return bad(err, errlen, "listen: --count must be a positive integer",
				   val[O_COUNT]);
		return CLI_PARSE_OK;
	}
	if (o->cmd == CLI_READ)
		return read_opts(o, val, err, errlen);
	return send_opts(o, val, err, errlen);
}

/* ---- JSON ---- */

static json_t *json_u64(uint64_t v)
{
	return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

/* Serialise @o on one line and release it; NULL if anything failed. */
static char *dump(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_ENSURE_ASCII) : NULL;

	json_decref(o);
	return s;
}

static json_t *base64(const uint8_t *p, size_t len)
{
	size_t cap = 4 * ((len + 2) / 3) + 1;
	unsigned char *out;
	json_t *s;

	if (len > PROTO_MAX_MAX_FRAME)
		return NULL;
	out = malloc(cap);
	if (!out)
		return NULL;
	EVP_EncodeBlock(out, len ? p : (const uint8_t *)"", (int)len);
	s = json_string((const char *)out);
	free(out);
	return s;
}

char *cli_json_envelope(const struct ferry_envelope *env)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "id", json_u64(env->server_id)) ||
	    json_object_set_new(o, "from_user", json_string(env->sender_user)) ||
	    json_object_set_new(o, "from_device", json_u64(env->sender_device)) ||
	    json_object_set_new(o, "client_id", json_u64(env->client_id)) ||
	    json_object_set_new(o, "timestamp", json_u64(env->timestamp)) ||
	    json_object_set_new(o, "payload_b64", base64(env->payload, env->payload_len))) {
		json_decref(o);
		return NULL;
	}
	return dump(o);
}

char *cli_json_ack(uint64_t client_id, uint64_t server_id, unsigned status)
{
	const char *st = status == PROTO_ACK_DELIVERED ? "delivered" : "stored";

	return dump(json_pack("{s:{s:o,s:o,s:s}}", "ack", "client_id", json_u64(client_id),
			      "server_id", json_u64(server_id), "status", st));
}

char *cli_json_nack(uint64_t client_id, const char *reason, const char *text)
{
	return dump(json_pack("{s:{s:o,s:s,s:s}}", "nack", "client_id", json_u64(client_id),
			      "reason", reason, "text", text));
}

char *cli_json_receipt(const struct ferry_receipt *r)
{
	const char *kind = r->kind == PROTO_RECEIPT_READ ? "read" : "delivered";
	json_t *o = json_object(), *ids = json_array();

	if (!o || !ids || json_object_set_new(o, "receipt", json_string(kind)) ||
	    json_object_set_new(o, "from_user", json_string(r->peer_user)) ||
	    json_object_set_new(o, "device", json_u64(r->device)) || json_object_set(o, "ids", ids))
		goto fail;
	for (size_t i = 0; i < r->n; i++) {
		if (json_array_append_new(ids, json_u64(r->ids[i])))
			goto fail;
	}
	json_decref(ids);
	return dump(o);
fail:
	json_decref(ids);
	json_decref(o);
	return NULL;
}

char *cli_json_queue_empty(uint64_t drained)
{
	return dump(json_pack("{s:b,s:o}", "queue_empty", 1, "drained", json_u64(drained)));
}

char *cli_json_listen_error(const char *code, const char *text)
{
	return dump(json_pack("{s:s,s:s}", "error", code, "text", text));
}

char *cli_json_send_error(const char *code, const char *text)
{
	return dump(json_pack("{s:{s:s,s:s}}", "error", "code", code, "text", text));
}
