/*
 * ferryctl_args.c - ferryctl's usage text and argument parsing
 * (ferryctl_int.h), in the manner of ferry-client (client/cli_util.c): one
 * table of options, each valid for every command or for some; options may
 * come before or after the command word, as `--opt VALUE` or `--opt=VALUE`,
 * each at most once; `--` ends the options. The first word that is not an
 * option is the command, the words after it its arguments.
 *
 * What can be checked here is, so that a typo costs no request and exits 2:
 * the URL's form, ids, numbers and user ids (the server's rules, repeated).
 * The server has the last word on the rest (platform names, push tokens).
 *
 * Secrets: an error message never quotes the token (an argument equal to it
 * is shown as "<token>") or the URL (which a token must not be put in, and
 * which is refused when it has a query, a fragment or credentials).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools/ferryctl_int.h"
#include "common/banned.h"

const char ctl_usage[] =
	"usage: ferryctl [--url URL] [--token TOKEN] [--json] [--timeout SEC] [--ca FILE]\n"
	"                COMMAND [ARGS...]\n"
	"\n"
	"commands:\n"
	"  stats                       ferryd's counters (GET /v1/stats)\n"
	"  devices USER                USER's devices, as a table\n"
	"  device ID                   one device\n"
	"  add-device USER [--platform ios|android|desktop|web]\n"
	"                              register a device (default platform desktop);\n"
	"                              prints its id and its secret, shown only once\n"
	"  set-push ID apns|fcm TOKEN [--topic T] [--app A] [--sandbox]\n"
	"                              set the device's push token\n"
	"  send (--user U | --device D) (--text STR | --file PATH) [--ttl SEC]\n"
	"       [--client-id N]        send an envelope from the server itself and wait\n"
	"                              until it is delivered or stored (POST /v1/messages)\n"
	"  queues [--top N]            the N (1-1000, default 20) devices with the most\n"
	"                              envelopes waiting\n"
	"  disconnect ID               close the device's connection to this ferryd so\n"
	"                              that it connects again\n"
	"  drain [--spread MS] [--wait SEC]\n"
	"                              stop taking device connections and send every\n"
	"                              connected device RECONNECT, spread over MS\n"
	"                              (0-600000, default the server's: 10000); then\n"
	"                              wait up to SEC (1-86400, default 60) until no\n"
	"                              connection and no store write is left\n"
	"\n"
	"--url       the admin API, default " CTL_DEFAULT_URL " ([admin] listen); no\n"
	"            query string: the token goes only in the Authorization header\n"
	"--token     the admin token; better in the environment variable\n"
	"            FERRY_ADMIN_TOKEN, where other users cannot see it\n"
	"--json      print the server's JSON answer as it is, one document\n"
	"--timeout   seconds a request may take in all (default 30)\n"
	"--ca        CA certificates (PEM) to verify an https URL with\n"
	"\n"
	"Exit status: 0 done, 1 the server refused (its message on stderr), could\n"
	"not be reached, or the drain was not done within --wait, 2 bad arguments.\n";

enum opt_id {
	O_URL,
	O_TOKEN,
	O_JSON,
	O_TIMEOUT,
	O_CA,
	O_HELP,
	O_PLATFORM,
	O_TOPIC,
	O_APP,
	O_SANDBOX,
	O_USER,
	O_DEVICE,
	O_TEXT,
	O_FILE,
	O_TTL,
	O_CLIENT_ID,
	O_TOP,
	O_SPREAD,
	O_WAIT,
	O_N
};

#define ALL_CMDS (~0u)
#define CMD(c) (1u << (c))

static const struct opt {
	const char *name;
	int has_arg;
	unsigned cmds; /* commands it is valid with, as 1 << enum ctl_cmd */
} opts[O_N] = {
	[O_URL] = { "url", 1, ALL_CMDS },
	[O_TOKEN] = { "token", 1, ALL_CMDS },
	[O_JSON] = { "json", 0, ALL_CMDS },
	[O_TIMEOUT] = { "timeout", 1, ALL_CMDS },
	[O_CA] = { "ca", 1, ALL_CMDS },
	[O_HELP] = { "help", 0, ALL_CMDS },
	[O_PLATFORM] = { "platform", 1, CMD(CTL_ADD_DEVICE) },
	[O_TOPIC] = { "topic", 1, CMD(CTL_SET_PUSH) },
	[O_APP] = { "app", 1, CMD(CTL_SET_PUSH) },
	[O_SANDBOX] = { "sandbox", 0, CMD(CTL_SET_PUSH) },
	[O_USER] = { "user", 1, CMD(CTL_SEND) },
	[O_DEVICE] = { "device", 1, CMD(CTL_SEND) },
	[O_TEXT] = { "text", 1, CMD(CTL_SEND) },
	[O_FILE] = { "file", 1, CMD(CTL_SEND) },
	[O_TTL] = { "ttl", 1, CMD(CTL_SEND) },
	[O_CLIENT_ID] = { "client-id", 1, CMD(CTL_SEND) },
	[O_TOP] = { "top", 1, CMD(CTL_QUEUES) },
	[O_SPREAD] = { "spread", 1, CMD(CTL_DRAIN) },
	[O_WAIT] = { "wait", 1, CMD(CTL_DRAIN) },
};

/* Each command's name and its positional arguments, by name. */
static const struct command {
	const char *name;
	const char *args[CTL_MAX_ARGS];
} commands[CTL_NCMDS] = {
	[CTL_STATS] = { "stats", { NULL } },
	[CTL_DEVICES] = { "devices", { "USER" } },
	[CTL_DEVICE] = { "device", { "ID" } },
	[CTL_ADD_DEVICE] = { "add-device", { "USER" } },
	[CTL_SET_PUSH] = { "set-push", { "ID", "PROVIDER", "TOKEN" } },
	[CTL_SEND] = { "send", { NULL } },
	[CTL_QUEUES] = { "queues", { NULL } },
	[CTL_DISCONNECT] = { "disconnect", { "ID" } },
	[CTL_DRAIN] = { "drain", { NULL } },
};

/* What the first pass collects. */
struct scan {
	const char *val[O_N];
	const char *args[CTL_MAX_ARGS];
	size_t nargs;
	const char *extra; /* the first argument beyond what the command takes */
};

__attribute__((format(printf, 3, 4))) static enum ctl_parse_result bad(char *err, size_t errlen,
								       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return CTL_PARSE_USAGE;
}

/* @s for an error message: "<token>" when it is the token, else @s. */
static const char *shown(const char *s, const char *token)
{
	return token && *token && strstr(s, token) ? "<token>" : s;
}

/* A decimal number in [@min, @max], the whole string: 0, or -1. */
static int parse_num(const char *s, unsigned long long min, unsigned long long max,
		     unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9') /* no sign, no space, not empty */
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int find_opt(const char *arg, size_t len)
{
	for (int i = 0; i < O_N; i++) {
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, arg, len) == 0)
			return i;
	}
	return -1;
}

static enum ctl_cmd find_cmd(const char *word)
{
	for (int k = CTL_NONE + 1; k < CTL_NCMDS; k++) {
		if (!strcmp(word, commands[k].name))
			return (enum ctl_cmd)k;
	}
	return CTL_NONE;
}

/* A word that is not an option: the command, or one of its arguments. */
static enum ctl_parse_result word(const char *a, struct ctl_opts *o, struct scan *sc,
				  const char *token, char *err, size_t errlen)
{
	if (o->cmd == CTL_NONE) {
		o->cmd = find_cmd(a);
		if (o->cmd == CTL_NONE)
			return bad(err, errlen, "unknown command '%s'", shown(a, token));
		o->cmd_name = commands[o->cmd].name;
		return CTL_PARSE_OK;
	}
	if (sc->nargs < CTL_MAX_ARGS && commands[o->cmd].args[sc->nargs])
		sc->args[sc->nargs++] = a;
	else if (!sc->extra)
		sc->extra = a;
	return CTL_PARSE_OK;
}

/* One "--name[=value]" at argv[*i]; may take argv[*i + 1] as its value. */
static enum ctl_parse_result option(int argc, char **argv, int *i, struct scan *sc,
				    const char *token, char *err, size_t errlen)
{
	const char *a = argv[*i], *eq = strchr(a + 2, '=');
	size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
	char name[32];
	int id = find_opt(a + 2, len);

	snprintf(name, sizeof(name), "%.*s", (int)(len < 24 ? len : 24), a + 2);
	if (id < 0)
		return bad(err, errlen, "unknown option '--%s'%s", shown(name, token),
			   len < 24 ? "" : "...");
	if (sc->val[id])
		return bad(err, errlen, "option '--%s' given twice", opts[id].name);
	if (!opts[id].has_arg && eq)
		return bad(err, errlen, "option '--%s' takes no value", opts[id].name);
	if (opts[id].has_arg && !eq && *i + 1 >= argc)
		return bad(err, errlen, "option '--%s' needs a value", opts[id].name);
	sc->val[id] = !opts[id].has_arg ? "" : eq ? eq + 1 : argv[++*i];
	return CTL_PARSE_OK;
}

/* First pass: the command, its arguments and each option's raw value. */
static enum ctl_parse_result scan(int argc, char **argv, struct ctl_opts *o, struct scan *sc,
				  const char *token, char *err, size_t errlen)
{
	enum ctl_parse_result r = CTL_PARSE_OK;
	int only_words = 0;

	for (int i = 1; i < argc && r == CTL_PARSE_OK; i++) {
		const char *a = argv[i];

		if (!only_words && !strcmp(a, "--"))
			only_words = 1;
		else if (!only_words && !strcmp(a, "-h"))
			sc->val[O_HELP] = "";
		else if (!only_words && !strncmp(a, "--", 2))
			r = option(argc, argv, &i, sc, token, err, errlen);
		else if (!only_words && a[0] == '-' && a[1])
			r = bad(err, errlen, "unknown option '%s'", shown(a, token));
		else
			r = word(a, o, sc, token, err, errlen);
	}
	return r;
}

/*
 * --url: http:// or https://, a host, no credentials, query or fragment,
 * nothing outside printable ASCII; trailing slashes dropped.
 */
static enum ctl_parse_result url_opt(struct ctl_opts *o, const char *url, char *err, size_t errlen)
{
	size_t len = strlen(url), host, skip = 0;

	if (!strncasecmp(url, "http://", 7))
		skip = 7;
	else if (!strncasecmp(url, "https://", 8))
		skip = 8;
	else
		return bad(err, errlen, "--url must start with http:// or https://");
	for (size_t i = 0; i < len; i++) {
		if (url[i] <= ' ' || url[i] > '~')
			return bad(err, errlen, "--url must be printable ASCII without spaces");
	}
	if (strpbrk(url, "?#"))
		return bad(err, errlen,
			   "--url must not have a query string or fragment: the token goes only "
			   "in the Authorization header (--token or FERRY_ADMIN_TOKEN)");
	host = strcspn(url + skip, "/");
	if (memchr(url + skip, '@', host))
		return bad(err, errlen,
			   "--url must not carry credentials: give the token with --token or "
			   "FERRY_ADMIN_TOKEN");
	if (!host)
		return bad(err, errlen, "--url has no host");
	while (len > skip + host && url[len - 1] == '/')
		len--;
	o->url = url;
	o->url_len = len;
	return CTL_PARSE_OK;
}

/* The options every command has. */
static enum ctl_parse_result global_opts(struct ctl_opts *o, const struct scan *sc,
					 const char *env_token, char *err, size_t errlen)
{
	const char *const *val = sc->val;
	unsigned long long n;
	enum ctl_parse_result r;

	r = url_opt(o, val[O_URL] ? val[O_URL] : CTL_DEFAULT_URL, err, errlen);
	if (r != CTL_PARSE_OK)
		return r;
	o->token = val[O_TOKEN] ? val[O_TOKEN] : env_token;
	if (!o->token || !*o->token)
		return bad(err, errlen, "missing --token (or FERRY_ADMIN_TOKEN)");
	for (const char *p = o->token; *p; p++) {
		if ((unsigned char)*p < ' ' || *p == 0x7f)
			return bad(err, errlen, "the token has a control character in it");
	}
	o->json = val[O_JSON] != NULL;
	o->timeout_s = CTL_DEFAULT_TIMEOUT_S;
	if (val[O_TIMEOUT]) {
		if (parse_num(val[O_TIMEOUT], 1, CTL_MAX_TIMEOUT_S, &n))
			return bad(err, errlen,
				   "--timeout must be a number of seconds, 1 to 3600: '%s'",
				   shown(val[O_TIMEOUT], o->token));
		o->timeout_s = (long)n;
	}
	o->ca = val[O_CA];
	if (o->ca && !*o->ca)
		return bad(err, errlen, "--ca cannot be empty");
	return CTL_PARSE_OK;
}

/* A user id as the server takes it: 1-64 bytes of [A-Za-z0-9._:@+-]. */
static int user_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@+-",
			    s[i]))
			return 0;
	return i >= 1 && i <= 64;
}

static enum ctl_parse_result user_arg(struct ctl_opts *o, const char *what, const char *s,
				      char *err, size_t errlen)
{
	char q[96];

	if (user_valid(s)) {
		o->user = s;
		return CTL_PARSE_OK;
	}
	snprintf(q, sizeof(q), "%.80s", shown(s, o->token));
	snprintf(err, errlen, "%s: %s must be 1-64 characters of [A-Za-z0-9._:@+-]: '%s'",
		 o->cmd_name, what, q);
	return CTL_PARSE_USAGE;
}

static enum ctl_parse_result device_arg(struct ctl_opts *o, const char *what, const char *s,
					int64_t *out, char *err, size_t errlen)
{
	unsigned long long v;
	char q[96];

	if (!parse_num(s, 1, INT64_MAX, &v)) {
		*out = (int64_t)v;
		return CTL_PARSE_OK;
	}
	snprintf(q, sizeof(q), "%.80s", shown(s, o->token));
	snprintf(err, errlen, "%s: %s must be a device id (a positive integer): '%s'", o->cmd_name,
		 what, q);
	return CTL_PARSE_USAGE;
}

static enum ctl_parse_result send_opts(struct ctl_opts *o, const char *const *val, char *err,
				       size_t errlen)
{
	unsigned long long n;
	enum ctl_parse_result r;

	if (!val[O_USER] == !val[O_DEVICE])
		return bad(err, errlen, "send: give exactly one of --user and --device");
	r = val[O_USER] ? user_arg(o, "--user", val[O_USER], err, errlen)
			: device_arg(o, "--device", val[O_DEVICE], &o->device, err, errlen);
	if (r != CTL_PARSE_OK)
		return r;
	o->text = val[O_TEXT];
	o->file = val[O_FILE];
	if (!o->text == !o->file)
		return bad(err, errlen, "send: give exactly one of --text and --file");
	if (o->file && !*o->file)
		return bad(err, errlen, "send: --file cannot be empty");
	o->ttl = -1;
	if (val[O_TTL]) {
		if (parse_num(val[O_TTL], 0, UINT32_MAX, &n))
			return bad(err, errlen, "send: --ttl must be a number of seconds: '%s'",
				   shown(val[O_TTL], o->token));
		o->ttl = (long long)n;
	}
	if (val[O_CLIENT_ID]) {
		if (parse_num(val[O_CLIENT_ID], 1, INT64_MAX, &n))
			return bad(err, errlen,
				   "send: --client-id must be a positive integer: '%s'",
				   shown(val[O_CLIENT_ID], o->token));
		o->client_id = (int64_t)n;
	}
	return CTL_PARSE_OK;
}

static enum ctl_parse_result set_push_opts(struct ctl_opts *o, const struct scan *sc, char *err,
					   size_t errlen)
{
	enum ctl_parse_result r = device_arg(o, "ID", sc->args[0], &o->device, err, errlen);

	if (r != CTL_PARSE_OK)
		return r;
	o->provider = sc->args[1];
	if (strcmp(o->provider, "apns") && strcmp(o->provider, "fcm"))
		return bad(err, errlen, "set-push: the provider must be apns or fcm: '%s'",
			   shown(o->provider, o->token));
	o->push_token = sc->args[2];
	if (!*o->push_token)
		return bad(err, errlen, "set-push: the push token cannot be empty");
	o->topic = sc->val[O_TOPIC];
	o->app = sc->val[O_APP];
	o->sandbox = sc->val[O_SANDBOX] != NULL;
	return CTL_PARSE_OK;
}

static enum ctl_parse_result drain_opts(struct ctl_opts *o, const char *const *val, char *err,
					size_t errlen)
{
	unsigned long long n;

	o->spread_ms = -1;
	if (val[O_SPREAD]) {
		if (parse_num(val[O_SPREAD], 0, CTL_MAX_SPREAD_MS, &n))
			return bad(err, errlen,
				   "drain: --spread must be milliseconds, 0 to %d: '%s'",
				   CTL_MAX_SPREAD_MS, shown(val[O_SPREAD], o->token));
		o->spread_ms = (long)n;
	}
	o->wait_s = CTL_DEFAULT_WAIT_S;
	if (val[O_WAIT]) {
		if (parse_num(val[O_WAIT], 1, CTL_MAX_WAIT_S, &n))
			return bad(err, errlen, "drain: --wait must be seconds, 1 to %d: '%s'",
				   CTL_MAX_WAIT_S, shown(val[O_WAIT], o->token));
		o->wait_s = (long)n;
	}
	return CTL_PARSE_OK;
}

/* What each command takes beyond the global options. */
static enum ctl_parse_result command_opts(struct ctl_opts *o, const struct scan *sc, char *err,
					  size_t errlen)
{
	unsigned long long n;

	switch (o->cmd) {
	case CTL_DEVICES:
		return user_arg(o, "USER", sc->args[0], err, errlen);
	case CTL_ADD_DEVICE:
		o->platform = sc->val[O_PLATFORM] ? sc->val[O_PLATFORM] : "desktop";
		return user_arg(o, "USER", sc->args[0], err, errlen);
	case CTL_DEVICE:
	case CTL_DISCONNECT:
		return device_arg(o, "ID", sc->args[0], &o->device, err, errlen);
	case CTL_SET_PUSH:
		return set_push_opts(o, sc, err, errlen);
	case CTL_SEND:
		return send_opts(o, sc->val, err, errlen);
	case CTL_QUEUES:
		if (sc->val[O_TOP] && parse_num(sc->val[O_TOP], 1, CTL_MAX_TOP, &n))
			return bad(err, errlen,
				   "queues: --top must be a number from 1 to 1000: '%s'",
				   shown(sc->val[O_TOP], o->token));
		o->top = sc->val[O_TOP] ? (unsigned)n : 0;
		return CTL_PARSE_OK;
	case CTL_DRAIN:
		return drain_opts(o, sc->val, err, errlen);
	default:
		return CTL_PARSE_OK;
	}
}

enum ctl_parse_result ctl_parse(int argc, char **argv, const char *env_token, struct ctl_opts *o,
				char *err, size_t errlen)
{
	struct scan sc;
	const char *token = env_token;
	enum ctl_parse_result r;
	size_t want;

	memset(o, 0, sizeof(*o));
	memset(&sc, 0, sizeof(sc));
	/* The token, if given, is known before any message could quote it. */
	for (int i = 1; i + 1 < argc; i++) {
		if (!strcmp(argv[i], "--token"))
			token = argv[i + 1];
		else if (!strncmp(argv[i], "--token=", 8))
			token = argv[i] + 8;
	}
	o->token = token;
	r = scan(argc, argv, o, &sc, token, err, errlen);
	if (r != CTL_PARSE_OK)
		return r;
	if (sc.val[O_HELP])
		return CTL_PARSE_HELP;
	if (o->cmd == CTL_NONE)
		return bad(err, errlen,
			   "missing command: stats, devices, device, add-device, set-push, send, "
			   "queues, disconnect or drain");
	for (int i = 0; i < O_N; i++) {
		if (sc.val[i] && !(opts[i].cmds & (1u << o->cmd))) {
			snprintf(err, errlen, "option '--%s' is not valid with '%s'", opts[i].name,
				 o->cmd_name);
			return CTL_PARSE_USAGE;
		}
	}
	for (want = 0; want < CTL_MAX_ARGS && commands[o->cmd].args[want]; want++)
		;
	if (sc.nargs < want) {
		snprintf(err, errlen, "%s: missing %s", o->cmd_name,
			 commands[o->cmd].args[sc.nargs]);
		return CTL_PARSE_USAGE;
	}
	if (sc.extra) {
		char q[96];

		snprintf(q, sizeof(q), "%.80s", shown(sc.extra, token));
		snprintf(err, errlen, "%s: unexpected argument '%s'", o->cmd_name, q);
		return CTL_PARSE_USAGE;
	}
	r = global_opts(o, &sc, env_token, err, errlen);
	if (r != CTL_PARSE_OK)
		return r;
	return command_opts(o, &sc, err, errlen);
}
