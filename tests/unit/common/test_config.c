/*
 * test_config.c - unit tests for common/config.c.
 *
 * Each test writes its config text to a mkstemp() file in /tmp and removes it
 * before returning. The FERRY_* variables of the table are cleared before
 * every test, so the environment of the shell running the tests cannot leak
 * in. Error tests check the return code and that the one-line message names
 * the file, the line and the key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/log.h"
#include "common/banned.h"

#define ERRLEN 512

static const char *const env_vars[] = {
	"FERRY_STORE_CONNINFO",
	"FERRY_STORE_CONNECT_TIMEOUT",
	"FERRY_ADMIN_LISTEN",
	"FERRY_ADMIN_TOKEN",
	"FERRY_ADMIN_TOKEN_FILE",
	"FERRY_ADMIN_MAX_BODY",
	"FERRY_ADMIN_THREADS",
	"FERRY_LOG_LEVEL",
	"FERRY_PUSH_MODE",
	"FERRY_PUSH_MIN_INTERVAL",
	"FERRY_PUSH_APNS_KEY_FILE",
	"FERRY_PUSH_APNS_KEY_ID",
	"FERRY_PUSH_APNS_TEAM_ID",
	"FERRY_PUSH_APNS_TOPIC",
	"FERRY_PUSH_FCM_SERVICE_ACCOUNT",
};

static int clear_env(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
		unsetenv(env_vars[i]);
	return 0;
}

/* Write @len bytes of @text to a new temporary file; returns its malloc'ed path. */
static char *write_tmp_n(const char *text, size_t len)
{
	char *path = strdup("/tmp/ferry-test-config.XXXXXX");
	int fd;

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return path;
}

static char *write_tmp(const char *text)
{
	return write_tmp_n(text, strlen(text));
}

static void remove_tmp(char *path)
{
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fail_msg("expected \"%s\" in \"%s\"", needle, hay);
}

static void assert_lacks(const char *hay, const char *needle)
{
	if (strstr(hay, needle))
		fail_msg("did not expect \"%s\" in \"%s\"", needle, hay);
}

/* Load @text as a file; the config must be valid. */
static struct ferry_config *load_ok(const char *text)
{
	char *path = write_tmp(text);
	struct ferry_config *cfg = NULL;
	char err[ERRLEN] = "";
	enum ferry_err rc = config_load(path, &cfg, err, sizeof(err));

	if (rc)
		fail_msg("config_load: %s", err);
	assert_non_null(cfg);
	assert_string_equal(cfg->path, path);
	remove_tmp(path);
	return cfg;
}

/*
 * Load @text, expect FERRY_ECONFIG with a message that starts with
 * "FILE:LINE: " and contains @needle (which names the key).
 */
static void expect_error(const char *text, unsigned line, const char *needle)
{
	char *path = write_tmp(text);
	struct ferry_config *cfg = (struct ferry_config *)&cfg;
	char err[ERRLEN] = "", prefix[128];

	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(cfg);
	snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("expected \"%s\" to start with \"%s\"", err, prefix);
	assert_contains(err, needle);
	assert_null(strchr(err, '\n'));
	remove_tmp(path);
}

/* config_print() into a malloc'ed string. */
static char *print_config(const struct ferry_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	config_print(cfg, f);
	assert_int_equal(fclose(f), 0);
	return text;
}

static void assert_defaults(const struct ferry_config *cfg)
{
	assert_string_equal(cfg->store.conninfo, "");
	assert_int_equal(cfg->store.connect_timeout, 5);
	assert_string_equal(cfg->admin.listen, "127.0.0.1:7280");
	assert_string_equal(cfg->admin.token, "");
	assert_string_equal(cfg->admin.token_file, "");
	assert_int_equal(cfg->admin.max_body, 64 * 1024);
	assert_int_equal(cfg->admin.threads, 2);
	assert_int_equal(cfg->log.level, LOG_LEVEL_INFO);
}

static void test_no_file(void **state)
{
	struct ferry_config *cfg = NULL;
	char err[ERRLEN];

	(void)state;
	assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), FERRY_OK);
	assert_null(cfg->path);
	assert_defaults(cfg);
	config_free(cfg);
	config_free(NULL);
}

static void test_empty_file(void **state)
{
	struct ferry_config *cfg = load_ok("");

	(void)state;
	assert_defaults(cfg);
	config_free(cfg);
}

static void test_every_key(void **state)
{
	struct ferry_config *cfg = load_ok("[gateway]\n"
					   "listen = 127.0.0.1:9000\n"
					   "tls_listen = [::]:9001\n"
					   "tls_cert = /etc/ferry/cert.pem\n"
					   "tls_key = /etc/ferry/key.pem\n"
					   "workers = 3\n"
					   "max_frame = 128k\n"
					   "max_connections = 50000\n"
					   "max_output = 2m\n"
					   "ack_timeout = 500\n"
					   "handshake_timeout = 3000\n"
					   "idle_timeout = 60000\n"
					   "drain_window = 64\n"
					   "[store]\n"
					   "conninfo = host=db dbname=ferry\n"
					   "connect_timeout = 300\n"
					   "connections = 8\n"
					   "writers = 3\n"
					   "batch_max = 500\n"
					   "max_pending_per_device = 0\n"
					   "max_inflight_bytes = 1g\n"
					   "default_ttl = 86400\n"
					   "expire_interval = 1000\n"
					   "expire_batch = 50\n"
					   "[push]\n"
					   "mode = alert\n"
					   "alert_text = \" Wake up \"\n"
					   "min_interval = 86400\n"
					   "max_pending = 10000000\n"
					   "max_attempts = 100\n"
					   "ttl = 0\n"
					   "ca_file = /etc/ssl/ca.pem\n"
					   "connections = 16\n"
					   "timeout = 1000\n"
					   "[push.apns]\n"
					   "endpoint = https://apns.test\n"
					   "sandbox_endpoint = https://sandbox.apns.test\n"
					   "key_file = /etc/ferry/AuthKey.p8\n"
					   "key_id = ABCDE12345\n"
					   "team_id = 0123456789\n"
					   "topic = org.example.app\n"
					   "[push.fcm]\n"
					   "endpoint = https://fcm.test\n"
					   "service_account = /etc/ferry/sa.json\n"
					   "[admin]\n"
					   "listen = [::1]:8080\n"
					   "token = abc\n"
					   "token_file = /etc/ferry/token\n"
					   "max_body = 1M\n"
					   "threads = 64\n"
					   "[receipts]\n"
					   "max_batch = 100\n"
					   "delivered = off\n"
					   "flush_interval = 20\n"
					   "[log]\n"
					   "level = debug\n");

	(void)state;
	assert_string_equal(cfg->gateway.listen, "127.0.0.1:9000");
	assert_string_equal(cfg->gateway.tls_listen, "[::]:9001");
	assert_string_equal(cfg->gateway.tls_cert, "/etc/ferry/cert.pem");
	assert_string_equal(cfg->gateway.tls_key, "/etc/ferry/key.pem");
	assert_int_equal(cfg->gateway.workers, 3);
	assert_int_equal(cfg->gateway.max_frame, 128 * 1024);
	assert_int_equal(cfg->gateway.max_connections, 50000);
	assert_int_equal(cfg->gateway.max_output, 2 * 1024 * 1024);
	assert_int_equal(cfg->gateway.ack_timeout, 500);
	assert_int_equal(cfg->gateway.handshake_timeout, 3000);
	assert_int_equal(cfg->gateway.idle_timeout, 60000);
	assert_int_equal(cfg->gateway.drain_window, 64);
	assert_int_equal(cfg->store.connections, 8);
	assert_int_equal(cfg->store.writers, 3);
	assert_int_equal(cfg->store.batch_max, 500);
	assert_int_equal(cfg->store.max_pending_per_device, 0);
	assert_int_equal(cfg->store.max_inflight_bytes, 1024ULL * 1024 * 1024);
	assert_int_equal(cfg->store.default_ttl, 86400);
	assert_int_equal(cfg->store.expire_interval, 1000);
	assert_int_equal(cfg->store.expire_batch, 50);
	assert_string_equal(cfg->store.conninfo, "host=db dbname=ferry");
	assert_int_equal(cfg->store.connect_timeout, 300);
	assert_string_equal(cfg->admin.listen, "[::1]:8080");
	assert_string_equal(cfg->admin.token, "abc");
	assert_string_equal(cfg->admin.token_file, "/etc/ferry/token");
	assert_int_equal(cfg->admin.max_body, 1024 * 1024);
	assert_int_equal(cfg->admin.threads, 64);
	assert_int_equal(cfg->receipts.max_batch, 100);
	assert_string_equal(cfg->receipts.delivered, "off");
	assert_int_equal(cfg->receipts.flush_interval, 20);
	assert_int_equal(cfg->log.level, LOG_LEVEL_DEBUG);
	assert_string_equal(cfg->push.mode, "alert");
	assert_string_equal(cfg->push.alert_text, " Wake up ");
	assert_int_equal(cfg->push.min_interval, 86400);
	assert_int_equal(cfg->push.max_pending, 10000000);
	assert_int_equal(cfg->push.max_attempts, 100);
	assert_int_equal(cfg->push.ttl, 0);
	assert_string_equal(cfg->push.ca_file, "/etc/ssl/ca.pem");
	assert_int_equal(cfg->push.connections, 16);
	assert_int_equal(cfg->push.timeout, 1000);
	assert_int_equal(cfg->npush_apps, 1);
	assert_string_equal(cfg->push_apps[0].name, "");
	assert_string_equal(cfg->push_apps[0].apns.endpoint, "https://apns.test");
	assert_string_equal(cfg->push_apps[0].apns.sandbox_endpoint, "https://sandbox.apns.test");
	assert_string_equal(cfg->push_apps[0].apns.key_file, "/etc/ferry/AuthKey.p8");
	assert_string_equal(cfg->push_apps[0].apns.key_id, "ABCDE12345");
	assert_string_equal(cfg->push_apps[0].apns.team_id, "0123456789");
	assert_string_equal(cfg->push_apps[0].apns.topic, "org.example.app");
	assert_string_equal(cfg->push_apps[0].fcm.endpoint, "https://fcm.test");
	assert_string_equal(cfg->push_apps[0].fcm.service_account, "/etc/ferry/sa.json");
	config_free(cfg);
}

static void test_missing_file(void **state)
{
	struct ferry_config *cfg = NULL;
	char err[ERRLEN];

	(void)state;
	assert_int_equal(config_load("/tmp/ferry-test-no-such-file.ini", &cfg, err, sizeof(err)),
			 FERRY_ECONFIG);
	assert_null(cfg);
	assert_string_equal(err, "cannot read config file '/tmp/ferry-test-no-such-file.ini': "
				 "No such file or directory");
	assert_int_equal(config_load("/tmp", &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_string_equal(err, "cannot read config file '/tmp': Is a directory");
}

static void test_structure_errors(void **state)
{
	(void)state;
	expect_error("[admin]\nthreads = 2\nbogus = 1\n", 3, "[admin] bogus: unknown key");
	expect_error("[log]\n\n\n\n\n\n[nope]\n", 7, "[nope]: unknown section");
	expect_error("[gateway]\nlisten_on = 1.2.3.4:5\n", 2, "[gateway] listen_on: unknown key");
	expect_error("# c\nlevel = info\n[log]\n", 2, "level: key before any [section] header");
	expect_error("[log]\njust words\n", 2, "expected 'key = value' or '[section]'");
	expect_error("[log]\n= info\n", 2, "expected 'key = value' or '[section]'");
	expect_error("[log\n", 1, "expected 'key = value' or '[section]'");
	expect_error("[admin]\nthreads = 2\n\nthreads = 3\n", 4,
		     "[admin] threads: duplicate key (first set on line 2)");
	/* The same key twice, split by another section header, is still a duplicate. */
	expect_error("[log]\nlevel = info\n[admin]\n[log]\nlevel = warn\n", 5,
		     "[log] level: duplicate key");
	/* Keys are case-sensitive. */
	expect_error("[log]\nLevel = info\n", 2, "[log] Level: unknown key");
}

static void test_bad_numbers(void **state)
{
	static const char *const bad[] = {
		"abc", "-1", "+5", "5x", "0x10", "1.5", "1 000", "\"\"", "5k",
	};
	char text[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[admin]\nthreads = %s\n", bad[i]);
		expect_error(text, 2, "[admin] threads: '");
		expect_error(text, 2, "' is not a whole number");
	}
	expect_error("[admin]\nthreads =\n", 2, "[admin] threads: '' is not a whole number");
	expect_error("[admin]\nthreads = 100\n", 2,
		     "[admin] threads: '100' is above the maximum 64");
	expect_error("[admin]\nthreads = 0\n", 2, "[admin] threads: '0' is below the minimum 1");
	expect_error("[admin]\nthreads = 99999999999999999999999999\n", 2,
		     "[admin] threads: '99999999999999999999999999' is above the maximum 64");
	expect_error("[admin]\nthreads = 4294967298\n", 2, "is above the maximum 64");
	expect_error("[store]\nconnect_timeout = 301\n", 2,
		     "[store] connect_timeout: '301' is above the maximum 300");
}

static void test_sizes(void **state)
{
	static const struct {
		const char *text;
		size_t bytes;
	} good[] = {
		{ "1024", 1024 },     { "1k", 1024 },	  { "64K", 65536 },
		{ "16m", 16u << 20 }, { "2M", 2u << 20 }, { "0001k", 1024 },
	};
	char text[128];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct ferry_config *cfg;

		snprintf(text, sizeof(text), "[admin]\nmax_body = %s\n", good[i].text);
		cfg = load_ok(text);
		assert_int_equal(cfg->admin.max_body, good[i].bytes);
		config_free(cfg);
	}
	expect_error("[admin]\nmax_body = 5x\n", 2,
		     "[admin] max_body: '5x' is not a size (e.g. 64k, 1m)");
	expect_error("[admin]\nmax_body = 64kb\n", 2, "'64kb' is not a size");
	expect_error("[admin]\nmax_body = k\n", 2, "'k' is not a size");
	expect_error("[admin]\nmax_body = 1t\n", 2, "'1t' is not a size");
	expect_error("[admin]\nmax_body = -1k\n", 2, "'-1k' is not a size");
	expect_error("[admin]\nmax_body = 64 k\n", 2, "'64 k' is not a size");
	expect_error("[admin]\nmax_body = 17m\n", 2,
		     "[admin] max_body: '17m' is above the maximum 16m");
	expect_error("[admin]\nmax_body = 1g\n", 2, "'1g' is above the maximum 16m");
	expect_error("[admin]\nmax_body = 1023\n", 2,
		     "[admin] max_body: '1023' is below the minimum 1k");
	/* Overflow in the multiplication, not only in the digits. */
	expect_error("[admin]\nmax_body = 18014398509481984k\n", 2, "is above the maximum 16m");
	expect_error("[admin]\nmax_body = 18446744073709551615g\n", 2, "is above the maximum 16m");
}

static void test_log_level(void **state)
{
	static const struct {
		const char *name;
		int level;
	} good[] = {
		{ "debug", LOG_LEVEL_DEBUG },
		{ "info", LOG_LEVEL_INFO },
		{ "warn", LOG_LEVEL_WARN },
		{ "error", LOG_LEVEL_ERROR },
	};
	char text[64];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct ferry_config *cfg;

		snprintf(text, sizeof(text), "[log]\nlevel = %s\n", good[i].name);
		cfg = load_ok(text);
		assert_int_equal(cfg->log.level, good[i].level);
		config_free(cfg);
	}
	expect_error("[log]\nlevel = verbose\n", 2,
		     "[log] level: 'verbose' is not a log level (debug, info, warn, error)");
	expect_error("[log]\nlevel = fatal\n", 2, "'fatal' is not a log level");
}

static void test_addresses(void **state)
{
	static const char *const bad[] = {
		"localhost", "host:", ":80",  "h:65536",  "::1:80", "[::1]80", "[::1]",	  "[]:80",
		"h:-1",	     "h:+80", "h:8o", "h:123456", "a b:80", "[::1:80", "h:80 80",
	};
	struct ferry_config *cfg;
	char text[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[admin]\nlisten = %s\n", bad[i]);
		expect_error(text, 2, "[admin] listen: '");
		expect_error(text, 2, "' is not host:port (e.g. 127.0.0.1:7280, [::1]:7280)");
	}
	cfg = load_ok("[admin]\nlisten = \"\"\n");
	assert_string_equal(cfg->admin.listen, "");
	config_free(cfg);
	cfg = load_ok("[admin]\nlisten =\n");
	assert_string_equal(cfg->admin.listen, "");
	config_free(cfg);
}

static void test_split_addr(void **state)
{
	static const struct {
		const char *addr, *host;
		uint16_t port;
	} good[] = {
		{ "127.0.0.1:7280", "127.0.0.1", 7280 },
		{ "[::1]:7280", "::1", 7280 },
		{ "localhost:0", "localhost", 0 },
		{ "example.org:65535", "example.org", 65535 },
		{ "[fe80::1%eth0]:80", "fe80::1%eth0", 80 },
	};
	char *host = NULL;
	uint16_t port = 1;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(config_split_addr(good[i].addr, &host, &port), FERRY_OK);
		assert_string_equal(host, good[i].host);
		assert_int_equal(port, good[i].port);
		free(host);
	}
	host = NULL;
	assert_int_equal(config_split_addr("", &host, &port), FERRY_EINVAL);
	assert_int_equal(config_split_addr(NULL, &host, &port), FERRY_EINVAL);
	assert_int_equal(config_split_addr("h:99999", &host, &port), FERRY_EINVAL);
	assert_int_equal(config_split_addr(":1", &host, &port), FERRY_EINVAL);
	assert_null(host);
}

static void test_quotes_and_comments(void **state)
{
	struct ferry_config *cfg = load_ok("\xef\xbb\xbf# leading comment\r\n"
					   "; another\r\n"
					   "\r\n"
					   "   [ admin ]   \r\n"
					   "\t# indented comment\n"
					   "  token   =   \"a # b ; c\"  \n"
					   "token_file = \"  spaced  \"\n"
					   "listen = \"\"\n"
					   "[store]\n"
					   "conninfo = host=db # not a comment\n"
					   "[log]\n"
					   "level=\"warn\"\n");

	(void)state;
	assert_string_equal(cfg->admin.token, "a # b ; c");
	assert_string_equal(cfg->admin.token_file, "  spaced  ");
	assert_string_equal(cfg->admin.listen, "");
	assert_string_equal(cfg->store.conninfo, "host=db # not a comment");
	assert_int_equal(cfg->log.level, LOG_LEVEL_WARN);
	config_free(cfg);

	expect_error("[admin]\ntoken = \"abc\n", 2, "[admin] token: missing closing quote");
	expect_error("[admin]\ntoken = \"a\"b\"\n", 2,
		     "[admin] token: text after the closing quote");
	expect_error("[admin]\nthreads = 4 # four\n", 2, "'4 # four' is not a whole number");
}

static void test_limits(void **state)
{
	char *text = malloc(CONFIG_MAX_FILE + 64);
	size_t n;

	(void)state;
	assert_non_null(text);
	/* A value of CONFIG_MAX_VALUE bytes is fine as long as the line is too. */
	n = (size_t)snprintf(text, 64, "[store]\nconninfo=");
	memset(text + n, 'x', CONFIG_MAX_VALUE - 9);
	n += CONFIG_MAX_VALUE - 9;
	memcpy(text + n, "\n", 2);
	{
		struct ferry_config *cfg = load_ok(text);

		assert_int_equal(strlen(cfg->store.conninfo), CONFIG_MAX_VALUE - 9);
		config_free(cfg);
	}
	memcpy(text + n, "x\n", 3);
	expect_error(text, 2, "line is longer than 4096 bytes");

	/* One byte over the file limit, all of it comments. */
	memset(text, '\n', CONFIG_MAX_FILE + 1);
	text[CONFIG_MAX_FILE + 1] = '\0';
	{
		char *path = write_tmp(text);
		struct ferry_config *cfg = NULL;
		char err[ERRLEN];

		assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_ECONFIG);
		assert_null(cfg);
		assert_contains(err, path);
		assert_contains(err, "is larger than 1048576 bytes");
		remove_tmp(path);
	}
	free(text);
}

static void test_control_characters(void **state)
{
	static const char nul[] = "[admin]\ntoken = ab\0cd\n";
	struct ferry_config *cfg = NULL;
	char err[ERRLEN];
	char *path;

	(void)state;
	expect_error("[admin]\ntoken = a\x01secret\n", 2, "line contains a control character");
	expect_error("[admin]\ntoken = a\rb\n", 2, "line contains a control character");

	path = write_tmp_n(nul, sizeof(nul) - 1);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_contains(err, ":2: line contains a control character");
	remove_tmp(path);

	/* From the environment, and the secret is not echoed. */
	setenv("FERRY_ADMIN_TOKEN", "\x1bsupersecret", 1);
	assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(cfg);
	assert_string_equal(err, "environment FERRY_ADMIN_TOKEN: value contains a control "
				 "character");
	unsetenv("FERRY_ADMIN_TOKEN");
}

static void test_env_overrides(void **state)
{
	char *path = write_tmp("[admin]\nthreads = 8\nlisten = 127.0.0.1:1\n"
			       "[store]\nconninfo = host=file\n");
	struct ferry_config *cfg = NULL;
	char err[ERRLEN];

	(void)state;
	setenv("FERRY_ADMIN_THREADS", "16", 1);
	setenv("FERRY_STORE_CONNINFO", "host=env", 1);
	setenv("FERRY_ADMIN_MAX_BODY", "1m", 1);
	setenv("FERRY_LOG_LEVEL", "error", 1);
	setenv("FERRY_ADMIN_LISTEN", "", 1); /* set but empty: disables */
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_OK);
	assert_int_equal(cfg->admin.threads, 16);
	assert_string_equal(cfg->store.conninfo, "host=env");
	assert_int_equal(cfg->admin.max_body, 1 << 20);
	assert_int_equal(cfg->log.level, LOG_LEVEL_ERROR);
	assert_string_equal(cfg->admin.listen, "");
	config_free(cfg);

	setenv("FERRY_ADMIN_THREADS", "0", 1);
	cfg = (struct ferry_config *)&cfg;
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(cfg);
	assert_string_equal(err, "environment FERRY_ADMIN_THREADS: '0' is below the minimum 1");

	setenv("FERRY_ADMIN_THREADS", "4", 1);
	setenv("FERRY_LOG_LEVEL", "loud", 1);
	assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_string_equal(err, "environment FERRY_LOG_LEVEL: 'loud' is not a log level "
				 "(debug, info, warn, error)");
	clear_env(NULL);
	remove_tmp(path);
}

static void test_print_masks_secrets(void **state)
{
	struct ferry_config *cfg =
		load_ok("[store]\n"
			"conninfo = host=db password=hunter2 user=ferry "
			"sslpassword='key pass\\' phrase' dbname='host=x password=innerpw'\n"
			"[admin]\n"
			"token = s3cr3t-t0ken\n"
			"max_body = 1536\n");
	char *out = print_config(cfg);

	(void)state;
	assert_lacks(out, "hunter2");
	assert_lacks(out, "s3cr3t");
	assert_lacks(out, "phrase");
	assert_lacks(out, "innerpw");
	assert_contains(out, "[store]\nconninfo = host=db password=******** user=ferry "
			     "sslpassword=******** dbname=********\n");
	assert_contains(out, "[admin]\nlisten = 127.0.0.1:7280\ntoken = ********\n");
	assert_contains(out, "token_file = \"\"\n");
	assert_contains(out, "max_body = 1536\n");
	assert_contains(out, "[log]\nlevel = info\n");
	free(out);
	config_free(cfg);

	/* URIs: the user info password and password parameters. */
	setenv("FERRY_STORE_CONNINFO",
	       "postgresql://ferry:hunter2@db:5432/ferry?sslmode=require&%70assword=pw2", 1);
	assert_int_equal(config_load(NULL, &cfg, NULL, 0), FERRY_OK);
	out = print_config(cfg);
	assert_lacks(out, "hunter2");
	assert_lacks(out, "pw2");
	assert_contains(out, "conninfo = postgresql://ferry:********@db:5432/ferry?"
			     "sslmode=require&%70assword=********\n");
	free(out);
	config_free(cfg);

	/* What cannot be parsed as a conninfo is masked whole. */
	setenv("FERRY_STORE_CONNINFO", "host=db password hunter2", 1);
	assert_int_equal(config_load(NULL, &cfg, NULL, 0), FERRY_OK);
	out = print_config(cfg);
	assert_lacks(out, "hunter2");
	assert_contains(out, "conninfo = ********\n");
	free(out);
	config_free(cfg);

	/* An empty secret is shown as empty, so that the operator sees it is unset. */
	assert_int_equal(config_load(NULL, &cfg, NULL, 0), FERRY_OK);
	out = print_config(cfg);
	assert_contains(out, "token = \"\"\n");
	free(out);
	config_free(cfg);
	unsetenv("FERRY_STORE_CONNINFO");
}

/* config_print() output is a config file that loads to the same values. */
static void test_print_round_trip(void **state)
{
	struct ferry_config *a = load_ok("[store]\nconninfo = host=db\nconnect_timeout = 7\n"
					 "[admin]\nlisten = [::1]:1\ntoken_file = \" x \"\n"
					 "max_body = 2048k\nthreads = 3\n[log]\nlevel = warn\n");
	char *text = print_config(a), *again;
	struct ferry_config *b;

	(void)state;
	assert_contains(text, "max_body = 2m\n");
	b = load_ok(text);
	again = print_config(b);
	assert_string_equal(text, again);
	assert_string_equal(b->admin.token_file, " x ");
	free(text);
	free(again);
	config_free(a);
	config_free(b);
}

struct change {
	char name[64];
	int reloadable;
};

struct changes {
	struct change c[16];
	size_t n;
};

static void record_change(const char *section, const char *key, int reloadable, void *arg)
{
	struct changes *ch = arg;

	assert_true(ch->n < 16);
	snprintf(ch->c[ch->n].name, sizeof(ch->c[ch->n].name), "%s.%s", section, key);
	ch->c[ch->n++].reloadable = reloadable;
}

static void test_diff(void **state)
{
	struct ferry_config *a = load_ok("[admin]\ntoken = one\nthreads = 2\n");
	struct ferry_config *b = load_ok("[admin]\ntoken = two\nthreads = 4\nmax_body = 64k\n"
					 "[log]\nlevel = debug\n[store]\nconninfo = host=x\n");
	struct changes ch = { .n = 0 };

	(void)state;
	config_diff(a, a, record_change, &ch);
	assert_int_equal(ch.n, 0);
	config_diff(a, b, record_change, &ch);
	/* Table order; max_body is unchanged (64k is the default). */
	assert_int_equal(ch.n, 4);
	assert_string_equal(ch.c[0].name, "store.conninfo");
	assert_false(ch.c[0].reloadable);
	assert_string_equal(ch.c[1].name, "admin.token");
	assert_true(ch.c[1].reloadable);
	assert_string_equal(ch.c[2].name, "admin.threads");
	assert_false(ch.c[2].reloadable);
	assert_string_equal(ch.c[3].name, "log.level");
	assert_true(ch.c[3].reloadable);
	config_free(a);
	config_free(b);
}

/* Load @text, expect FERRY_ECONFIG with exactly the message @want. */
static void expect_message(const char *text, const char *want)
{
	char *path = write_tmp(text);
	struct ferry_config *cfg = (struct ferry_config *)&cfg;
	char err[ERRLEN] = "";

	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(cfg);
	assert_string_equal(err, want);
	remove_tmp(path);
}

static void assert_app_defaults(const struct config_push_app *a)
{
	assert_string_equal(a->apns.endpoint, "https://api.push.apple.com");
	assert_string_equal(a->apns.sandbox_endpoint, "https://api.sandbox.push.apple.com");
	assert_string_equal(a->apns.key_file, "");
	assert_string_equal(a->apns.key_id, "");
	assert_string_equal(a->apns.team_id, "");
	assert_string_equal(a->apns.topic, "");
	assert_string_equal(a->fcm.endpoint, "https://fcm.googleapis.com");
	assert_string_equal(a->fcm.service_account, "");
}

static void test_push_defaults(void **state)
{
	struct ferry_config *cfg = load_ok("");

	(void)state;
	assert_string_equal(cfg->push.mode, "background");
	assert_string_equal(cfg->push.alert_text, "New message");
	assert_int_equal(cfg->push.min_interval, 30);
	assert_int_equal(cfg->push.max_pending, 100000);
	assert_int_equal(cfg->push.max_attempts, 14);
	assert_int_equal(cfg->push.ttl, 86400);
	assert_string_equal(cfg->push.ca_file, "");
	assert_int_equal(cfg->push.connections, 1);
	assert_int_equal(cfg->push.timeout, 30000);
	/* The default app always exists. */
	assert_int_equal(cfg->npush_apps, 1);
	assert_string_equal(cfg->push_apps[0].name, "");
	assert_app_defaults(&cfg->push_apps[0]);
	config_free(cfg);

	/* Without a file too. */
	assert_int_equal(config_load(NULL, &cfg, NULL, 0), FERRY_OK);
	assert_int_equal(cfg->npush_apps, 1);
	assert_app_defaults(&cfg->push_apps[0]);
	config_free(cfg);
}

static void test_push_values(void **state)
{
	struct ferry_config *cfg;

	(void)state;
	cfg = load_ok("[push]\nmode = alert\n");
	assert_string_equal(cfg->push.mode, "alert");
	config_free(cfg);
	cfg = load_ok("[push]\nmode = \"background\"\n");
	assert_string_equal(cfg->push.mode, "background");
	config_free(cfg);

	expect_error("[push]\nmode = loud\n", 2,
		     "[push] mode: 'loud' is not one of background, alert");
	expect_error("[push]\nmode = Alert\n", 2, "[push] mode: 'Alert' is not one of");
	expect_error("[push]\nmode =\n", 2, "[push] mode: '' is not one of");
	expect_error("[push]\nmin_interval = 0\n", 2,
		     "[push] min_interval: '0' is below the minimum 1");
	expect_error("[push]\nmin_interval = 86401\n", 2, "is above the maximum 86400");
	expect_error("[push]\nmax_pending = 10000001\n", 2, "is above the maximum 10000000");
	expect_error("[push]\nmax_attempts = 0\n", 2, "is below the minimum 1");
	expect_error("[push]\nttl = 2419201\n", 2, "[push] ttl: '2419201' is above the maximum");
	expect_error("[push]\nconnections = 17\n", 2, "is above the maximum 16");
	expect_error("[push]\ntimeout = 999\n", 2,
		     "[push] timeout: '999' is below the minimum 1000");
	expect_error("[push]\nkey_file = x\n", 2, "[push] key_file: unknown key");
	expect_error("[push.apns]\nservice_account = x\n", 2,
		     "[push.apns] service_account: unknown key");

	setenv("FERRY_PUSH_MODE", "silent", 1);
	cfg = (struct ferry_config *)&cfg;
	{
		char err[ERRLEN];

		assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), FERRY_ECONFIG);
		assert_null(cfg);
		assert_string_equal(err, "environment FERRY_PUSH_MODE: 'silent' is not one of "
					 "background, alert");
	}
	unsetenv("FERRY_PUSH_MODE");
}

/* [push.apns.NAME] and [push.fcm.NAME]: apps in order of first appearance. */
static void test_push_apps(void **state)
{
	struct ferry_config *cfg = load_ok("[push.fcm.beta]\n"
					   "service_account = /sa-beta.json\n"
					   "[push.apns]\n"
					   "topic = org.example.default\n"
					   "[push.apns.alpha]\n"
					   "key_file = /alpha.p8\n"
					   "key_id = ABCDE12345\n"
					   "team_id = TEAM567890\n"
					   "topic = org.example.alpha\n"
					   "[push.apns.beta]\n"
					   "topic = org.example.beta\n"
					   "[ push.fcm.alpha ]\n"
					   "endpoint = http://127.0.0.1:9\n"
					   "[push.apns.empty-app_1.x]\n");
	const struct config_push_app *a;

	(void)state;
	assert_int_equal(cfg->npush_apps, 4);
	assert_string_equal(cfg->push_apps[0].name, "");
	assert_string_equal(cfg->push_apps[1].name, "beta");
	assert_string_equal(cfg->push_apps[2].name, "alpha");
	assert_string_equal(cfg->push_apps[3].name, "empty-app_1.x");

	a = &cfg->push_apps[0];
	assert_string_equal(a->apns.topic, "org.example.default");
	assert_string_equal(a->apns.key_file, "");
	assert_string_equal(a->fcm.service_account, "");

	a = &cfg->push_apps[1];
	assert_string_equal(a->fcm.service_account, "/sa-beta.json");
	assert_string_equal(a->apns.topic, "org.example.beta");
	assert_string_equal(a->apns.endpoint, "https://api.push.apple.com");
	assert_string_equal(a->fcm.endpoint, "https://fcm.googleapis.com");

	a = &cfg->push_apps[2];
	assert_string_equal(a->apns.key_file, "/alpha.p8");
	assert_string_equal(a->apns.key_id, "ABCDE12345");
	assert_string_equal(a->apns.team_id, "TEAM567890");
	assert_string_equal(a->apns.topic, "org.example.alpha");
	assert_string_equal(a->apns.sandbox_endpoint, "https://api.sandbox.push.apple.com");
	assert_string_equal(a->fcm.endpoint, "http://127.0.0.1:9");
	assert_string_equal(a->fcm.service_account, "");

	assert_app_defaults(&cfg->push_apps[3]);

	/* Lookups. */
	assert_ptr_equal(config_push_app(cfg, NULL), &cfg->push_apps[0]);
	assert_ptr_equal(config_push_app(cfg, ""), &cfg->push_apps[0]);
	assert_ptr_equal(config_push_app(cfg, "alpha"), &cfg->push_apps[2]);
	assert_ptr_equal(config_push_app(cfg, "beta"), &cfg->push_apps[1]);
	assert_null(config_push_app(cfg, "gamma"));
	assert_null(config_push_app(cfg, "Alpha"));
	config_free(cfg);

	cfg = load_ok("");
	assert_ptr_equal(config_push_app(cfg, NULL), &cfg->push_apps[0]);
	assert_null(config_push_app(cfg, "alpha"));
	config_free(cfg);
}

static void test_push_app_keys(void **state)
{
	struct ferry_config *cfg;

	(void)state;
	/* The same key in two apps, and in the default app, is fine. */
	cfg = load_ok("[push.apns]\ntopic = d\n"
		      "[push.apns.a]\ntopic = a\n"
		      "[push.apns.b]\ntopic = b\n"
		      "[push.fcm.a]\nendpoint = fa\n"
		      "[push.fcm]\nendpoint = fd\n");
	assert_string_equal(config_push_app(cfg, "")->apns.topic, "d");
	assert_string_equal(config_push_app(cfg, "a")->apns.topic, "a");
	assert_string_equal(config_push_app(cfg, "b")->apns.topic, "b");
	assert_string_equal(config_push_app(cfg, "a")->fcm.endpoint, "fa");
	assert_string_equal(config_push_app(cfg, "")->fcm.endpoint, "fd");
	assert_string_equal(config_push_app(cfg, "b")->fcm.endpoint, "https://fcm.googleapis.com");
	config_free(cfg);

	/* Twice in one app, even with its section opened twice, is not. */
	expect_error("[push.apns.a]\ntopic = x\ntopic = y\n", 3,
		     "[push.apns.a] topic: duplicate key (first set on line 2)");
	expect_error("[push.apns.a]\ntopic = x\n[push.apns.b]\ntopic = y\n[push.apns.a]\n"
		     "topic = z\n",
		     6, "[push.apns.a] topic: duplicate key (first set on line 2)");
	expect_error("[push.apns]\ntopic = x\n[push.apns.a]\n[push.apns]\ntopic = z\n", 5,
		     "[push.apns] topic: duplicate key (first set on line 2)");
	/* The same key name under the other provider of the same app is another key. */
	cfg = load_ok("[push.apns.a]\nendpoint = x\n[push.fcm.a]\nendpoint = y\n");
	assert_string_equal(config_push_app(cfg, "a")->apns.endpoint, "x");
	assert_string_equal(config_push_app(cfg, "a")->fcm.endpoint, "y");
	config_free(cfg);

	expect_error("[push.apns.a]\nbogus = 1\n", 2, "[push.apns.a] bogus: unknown key");
	expect_error("[push.fcm.a]\ntopic = 1\n", 2, "[push.fcm.a] topic: unknown key");
	expect_error("[push.apns.a]\ntopic = \"x\n", 2,
		     "[push.apns.a] topic: missing closing quote");
	expect_error("[push.apns.a]\nkey_id = abcde12345\n", 2,
		     "[push.apns.a] key_id: 'abcde12345' is not 10 characters of A-Z and 0-9");
}

static void test_push_app_names(void **state)
{
	static const char *const bad[] = {
		"bad name",    "",
		"a/b",	       "a]b",
		"caf\xc3\xa9", "a+b",
		"a:b",	       "x12345678901234567890123456789012345678901234567890123456789012345",
	};
	char text[256], want[256];
	struct ferry_config *cfg;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[log]\n[push.apns.%s]\n", bad[i]);
		snprintf(want, sizeof(want),
			 "[push.apns.%s]: app name must be 1-64 characters of A-Z a-z 0-9 . _ -",
			 bad[i]);
		expect_error(text, 2, want);
		snprintf(text, sizeof(text), "[push.fcm.%s]\n", bad[i]);
		expect_error(text, 1, "app name must be 1-64 characters");
	}
	/* 64 characters are fine. */
	cfg = load_ok(
		"[push.apns.x123456789012345678901234567890123456789012345678901234567890123]\n");
	assert_int_equal(cfg->npush_apps, 2);
	assert_int_equal(strlen(cfg->push_apps[1].name), 64);
	config_free(cfg);
	/* Only the app sections take a name. */
	expect_error("[push.x]\n", 1, "[push.x]: unknown section");
	expect_error("[push.apnsx]\n", 1, "[push.apnsx]: unknown section");
	expect_error("[admin.x]\n", 1, "[admin.x]: unknown section");
	expect_error("[push.apns.a]\n[push.x.a]\n", 2, "[push.x.a]: unknown section");
}

/* At most 1000 named apps. */
static void test_push_app_limit(void **state)
{
	size_t cap = 1002 * 32, n = 0;
	char *text = malloc(cap);
	struct ferry_config *cfg;

	(void)state;
	assert_non_null(text);
	for (int i = 0; i < 1000; i++)
		n += (size_t)snprintf(text + n, cap - n, "[push.fcm.app%d]\n", i);
	cfg = load_ok(text);
	assert_int_equal(cfg->npush_apps, 1001);
	assert_string_equal(cfg->push_apps[1000].name, "app999");
	config_free(cfg);
	snprintf(text + n, cap - n, "[push.apns.app0]\n[push.apns.one-more]\n");
	expect_error(text, 1002, "[push.apns.one-more]: more than 1000 apps");
	free(text);
}

/* [gateway] group only means something with user. */
static void test_gateway_user_group(void **state)
{
	struct ferry_config *cfg;

	(void)state;
	expect_message("[gateway]\ngroup = ferry\n",
		       "[gateway]: group is set but user is not; group applies only with user");
	cfg = load_ok("[gateway]\nuser = ferry\n");
	assert_string_equal(cfg->gateway.user, "ferry");
	assert_string_equal(cfg->gateway.group, "");
	config_free(cfg);
	cfg = load_ok("[gateway]\nuser = ferry\ngroup = ferry-keys\n");
	assert_string_equal(cfg->gateway.group, "ferry-keys");
	config_free(cfg);
}

/* The TLS certificate and key go together, so that a SIGHUP that sets one of
 * them only is refused whole, like a file with a typo. */
static void test_tls_files(void **state)
{
	struct ferry_config *cfg;

	(void)state;
	expect_message("[gateway]\ntls_key = /k.pem\n",
		       "[gateway]: tls_cert and tls_key go together; tls_cert is not set");
	expect_message("[gateway]\ntls_cert = /c.pem\ntls_key = \"\"\n",
		       "[gateway]: tls_cert and tls_key go together; tls_key is not set");
	cfg = load_ok("[gateway]\ntls_cert = /c.pem\ntls_key = /k.pem\n");
	assert_string_equal(cfg->gateway.tls_key, "/k.pem");
	config_free(cfg);
}

static void test_push_credentials(void **state)
{
	struct ferry_config *cfg;
	char err[ERRLEN];

	(void)state;
	expect_message("[push.apns]\nkey_file = /k.p8\n",
		       "[push.apns]: key_file, key_id and team_id go together; key_id is not set");
	expect_message("[push.apns.app]\nkey_file = /k.p8\nkey_id = ABCDE12345\n",
		       "[push.apns.app]: key_file, key_id and team_id go together; team_id is "
		       "not set");
	expect_message("[push.apns.app]\nteam_id = ABCDE12345\n",
		       "[push.apns.app]: key_file, key_id and team_id go together; key_file is "
		       "not set");
	expect_error("[push.apns]\nkey_id = ABCDE1234\n", 2,
		     "[push.apns] key_id: 'ABCDE1234' is not 10 characters of A-Z and 0-9");
	expect_error("[push.apns]\nkey_id = ABCDE123456\n", 2, "is not 10 characters");
	expect_error("[push.apns]\nteam_id = ABCDE-1234\n", 2,
		     "[push.apns] team_id: 'ABCDE-1234' is not 10 characters");
	expect_error("[push.apns.x]\nteam_id = \" ABCDE1234\"\n", 2, "is not 10 characters");

	/* The three together, or none: fine. An empty value is "not set". */
	cfg = load_ok("[push.apns.a]\nkey_file = /k.p8\nkey_id = ABCDE12345\n"
		      "team_id = 0123456789\n[push.apns]\nkey_id = \"\"\n");
	assert_string_equal(config_push_app(cfg, "a")->apns.team_id, "0123456789");
	config_free(cfg);

	/* Checked once the environment is in: it may complete the file. */
	setenv("FERRY_PUSH_APNS_KEY_ID", "ABCDE12345", 1);
	setenv("FERRY_PUSH_APNS_TEAM_ID", "0123456789", 1);
	cfg = load_ok("[push.apns]\nkey_file = /k.p8\n");
	assert_string_equal(cfg->push_apps[0].apns.key_id, "ABCDE12345");
	config_free(cfg);
	/* ... or leave it incomplete. */
	unsetenv("FERRY_PUSH_APNS_TEAM_ID");
	expect_message("[push.apns]\nkey_file = /k.p8\n",
		       "[push.apns]: key_file, key_id and team_id go together; team_id is not set");
	setenv("FERRY_PUSH_APNS_KEY_ID", "short", 1);
	assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), FERRY_ECONFIG);
	assert_string_equal(err, "environment FERRY_PUSH_APNS_KEY_ID: 'short' is not 10 characters "
				 "of A-Z and 0-9");
	unsetenv("FERRY_PUSH_APNS_KEY_ID");
}

/* The environment sets the default app only. */
static void test_push_env(void **state)
{
	char *path = write_tmp("[push.apns]\ntopic = file.default\n"
			       "[push.apns.other]\ntopic = file.other\n"
			       "[push.fcm.other]\nservice_account = /other.json\n");
	struct ferry_config *cfg = NULL;
	char err[ERRLEN];

	(void)state;
	setenv("FERRY_PUSH_APNS_TOPIC", "env.default", 1);
	setenv("FERRY_PUSH_FCM_SERVICE_ACCOUNT", "/env.json", 1);
	setenv("FERRY_PUSH_MIN_INTERVAL", "60", 1);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), FERRY_OK);
	assert_int_equal(cfg->push.min_interval, 60);
	assert_string_equal(config_push_app(cfg, NULL)->apns.topic, "env.default");
	assert_string_equal(config_push_app(cfg, NULL)->fcm.service_account, "/env.json");
	assert_string_equal(config_push_app(cfg, "other")->apns.topic, "file.other");
	assert_string_equal(config_push_app(cfg, "other")->fcm.service_account, "/other.json");
	config_free(cfg);
	clear_env(NULL);
	remove_tmp(path);
}

/* Named apps print after the default app's sections and load back the same. */
static void test_push_print_round_trip(void **state)
{
	struct ferry_config *a =
		load_ok("[push]\nmode = alert\nalert_text = \" You have mail \"\n"
			"ttl = 0\n"
			"[push.fcm.beta]\nservice_account = /b.json\n"
			"[push.apns.alpha]\nkey_file = /a.p8\nkey_id = ABCDE12345\n"
			"team_id = 0123456789\ntopic = org.alpha\n"
			"[push.apns]\ntopic = org.default\n");
	char *text = print_config(a), *again;
	struct ferry_config *b;

	(void)state;
	assert_contains(text, "[push]\nmode = alert\nalert_text = \" You have mail \"\n");
	assert_contains(text, "[push.apns]\nendpoint = https://api.push.apple.com\n");
	assert_contains(text, "topic = org.default\n\n[push.fcm]\n");
	assert_contains(text, "service_account = \"\"\n\n[push.apns.beta]\n");
	assert_contains(text, "[push.fcm.beta]\nendpoint = https://fcm.googleapis.com\n"
			      "service_account = /b.json\n\n[push.apns.alpha]\n");
	assert_contains(text, "key_id = ABCDE12345\n");
	assert_contains(text, "[push.fcm.alpha]\n");
	assert_contains(text, "\n\n[admin]\n");
	b = load_ok(text);
	again = print_config(b);
	assert_string_equal(text, again);
	assert_int_equal(b->npush_apps, 3);
	assert_string_equal(b->push.mode, "alert");
	assert_string_equal(b->push.alert_text, " You have mail ");
	assert_int_equal(b->push.ttl, 0);
	assert_string_equal(b->push_apps[1].name, "beta");
	assert_string_equal(b->push_apps[1].fcm.service_account, "/b.json");
	assert_string_equal(b->push_apps[2].name, "alpha");
	assert_string_equal(b->push_apps[2].apns.key_file, "/a.p8");
	assert_string_equal(b->push_apps[2].apns.team_id, "0123456789");
	assert_string_equal(b->push_apps[0].apns.topic, "org.default");
	free(text);
	free(again);
	config_free(a);
	config_free(b);
}

static void test_push_diff(void **state)
{
	struct ferry_config *a = load_ok("[push]\nmax_pending = 10\n"
					 "[push.apns.one]\ntopic = one\n"
					 "[push.apns.two]\ntopic = two\n"
					 "[push.fcm.gone]\n");
	struct ferry_config *b = load_ok("[push]\nmax_pending = 20\nmode = alert\n"
					 "[push.apns]\ntopic = default\n"
					 "[push.apns.new]\n"
					 "[push.apns.two]\ntopic = two\n"
					 "[push.fcm.two]\nendpoint = https://fcm.test\n"
					 "[push.apns.one]\ntopic = uno\nkey_file = /k.p8\n"
					 "key_id = ABCDE12345\nteam_id = 0123456789\n");
	struct changes ch = { .n = 0 };

	(void)state;
	config_diff(a, a, record_change, &ch);
	assert_int_equal(ch.n, 0);
	/* Reordered apps with the same keys: no change. */
	{
		struct ferry_config *x = load_ok("[push.apns.two]\ntopic = two\n[push.fcm.gone]\n"
						 "[push.apns.one]\ntopic = one\n"
						 "[push]\nmax_pending = 10\n");

		config_diff(a, x, record_change, &ch);
		assert_int_equal(ch.n, 0);
		config_free(x);
	}
	config_diff(a, b, record_change, &ch);
	assert_int_equal(ch.n, 12);
	/* The table: [push], then the default app. */
	assert_string_equal(ch.c[0].name, "push.mode");
	assert_true(ch.c[0].reloadable);
	assert_string_equal(ch.c[1].name, "push.max_pending");
	assert_false(ch.c[1].reloadable);
	assert_string_equal(ch.c[2].name, "push.apns.topic");
	assert_true(ch.c[2].reloadable);
	/* Named apps in the new order: added, changed, changed. */
	assert_string_equal(ch.c[3].name, "push.apns.new.*");
	assert_true(ch.c[3].reloadable);
	assert_string_equal(ch.c[4].name, "push.fcm.new.*");
	assert_true(ch.c[4].reloadable);
	assert_string_equal(ch.c[5].name, "push.fcm.two.endpoint");
	assert_true(ch.c[5].reloadable);
	assert_string_equal(ch.c[6].name, "push.apns.one.key_file");
	assert_string_equal(ch.c[7].name, "push.apns.one.key_id");
	assert_string_equal(ch.c[8].name, "push.apns.one.team_id");
	assert_string_equal(ch.c[9].name, "push.apns.one.topic");
	assert_true(ch.c[9].reloadable);
	/* Then the removed ones. */
	assert_string_equal(ch.c[10].name, "push.apns.gone.*");
	assert_true(ch.c[10].reloadable);
	assert_string_equal(ch.c[11].name, "push.fcm.gone.*");
	config_free(a);
	config_free(b);
}

static void test_admin_token(void **state)
{
	char *tokfile = write_tmp("tok en\t \r\nsecond line\n");
	char *emptyfile = write_tmp("\n\nlater\n");
	char text[256], err[ERRLEN], *tok = NULL;
	struct ferry_config *cfg;

	(void)state;
	cfg = load_ok("[admin]\ntoken = direct\n");
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	assert_string_equal(tok, "direct");
	free(tok);
	config_free(cfg);

	/* Neither set: an empty token. */
	cfg = load_ok("");
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	assert_string_equal(tok, "");
	free(tok);
	config_free(cfg);

	snprintf(text, sizeof(text), "[admin]\ntoken_file = %s\n", tokfile);
	cfg = load_ok(text);
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	assert_string_equal(tok, "tok en");
	free(tok);
	config_free(cfg);

	/* token wins over token_file. */
	snprintf(text, sizeof(text), "[admin]\ntoken = direct\ntoken_file = %s\n", tokfile);
	cfg = load_ok(text);
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	assert_string_equal(tok, "direct");
	free(tok);
	config_free(cfg);

	snprintf(text, sizeof(text), "[admin]\ntoken_file = %s\n", emptyfile);
	cfg = load_ok(text);
	tok = (char *)&tok;
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(tok);
	assert_contains(err, "[admin] token_file: the first line of '");
	assert_contains(err, emptyfile);
	assert_contains(err, "is empty");
	config_free(cfg);

	cfg = load_ok("[admin]\ntoken_file = /tmp/ferry-test-no-such-token\n");
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(tok);
	assert_string_equal(err, "cannot read token file '/tmp/ferry-test-no-such-token': "
				 "No such file or directory");
	config_free(cfg);

	remove_tmp(tokfile);
	remove_tmp(emptyfile);
}

/* A token file its group or others may access is refused, with the fix;
 * owner read-write or read-only is fine. */
static void test_admin_token_file_mode(void **state)
{
	static const mode_t refused[] = { 0640, 0604, 0620, 0602, 0644 };
	char *tokfile = write_tmp("tok\n");
	char text[256], err[ERRLEN], want[512], *tok;
	struct ferry_config *cfg;

	(void)state;
	snprintf(text, sizeof(text), "[admin]\ntoken_file = %s\n", tokfile);
	cfg = load_ok(text);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		assert_int_equal(chmod(tokfile, refused[i]), 0);
		tok = (char *)&tok;
		assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_ECONFIG);
		assert_null(tok);
		snprintf(want, sizeof(want),
			 "token file '%s' has group or world access (mode %04o); allow its owner "
			 "only: chmod 600 '%s'",
			 tokfile, (unsigned)refused[i], tokfile);
		assert_string_equal(err, want);
	}
	assert_int_equal(chmod(tokfile, 0400), 0);
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	assert_string_equal(tok, "tok");
	free(tok);
	assert_int_equal(chmod(tokfile, 0600), 0);
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	free(tok);
	config_free(cfg);
	remove_tmp(tokfile);
}

/*
 * A token with a space or tab at either end could never match a Bearer
 * header (the whitespace around the token is not part of it): refused.
 */
static void test_admin_token_padded(void **state)
{
	char *lead = write_tmp(" \ttok\n");
	char text[256], err[ERRLEN], *tok;
	struct ferry_config *cfg;
	static const char *const padded[] = { "\" tok\"", "\"tok \"", "\"tok\t\"", "\"\ttok\"" };

	(void)state;
	for (size_t i = 0; i < sizeof(padded) / sizeof(padded[0]); i++) {
		snprintf(text, sizeof(text), "[admin]\ntoken = %s\n", padded[i]);
		cfg = load_ok(text);
		tok = (char *)&tok;
		assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_ECONFIG);
		assert_null(tok);
		assert_string_equal(err, "[admin] token: value starts or ends with a space or tab");
		config_free(cfg);
	}

	/* The same through the environment; the secret is not quoted. */
	setenv("FERRY_ADMIN_TOKEN", "tok-secret ", 1);
	cfg = load_ok("");
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_ECONFIG);
	assert_lacks(err, "tok-secret");
	config_free(cfg);
	unsetenv("FERRY_ADMIN_TOKEN");

	/* A token file's trailing whitespace is removed, its leading is refused. */
	snprintf(text, sizeof(text), "[admin]\ntoken_file = %s\n", lead);
	cfg = load_ok(text);
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_ECONFIG);
	assert_null(tok);
	assert_contains(err, "[admin] token_file: the first line of '");
	assert_contains(err, "starts with a space or tab");
	config_free(cfg);

	/* Inner whitespace is fine. */
	cfg = load_ok("[admin]\ntoken = \"t o\tk\"\n");
	assert_int_equal(config_admin_token(cfg, &tok, err, sizeof(err)), FERRY_OK);
	assert_string_equal(tok, "t o\tk");
	free(tok);
	config_free(cfg);
	remove_tmp(lead);
}

/*
 * docs/ferry.ini.example shows every key at its default, commented out:
 * each "key = value" line of config_print(defaults) appears as "#key = value",
 * and the file with those lines uncommented loads to the defaults.
 */
static void test_example_file(void **state)
{
	struct ferry_config *def;
	char *defaults, *example = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *f = fopen("docs/ferry.ini.example", "r");

	(void)state;
	if (!f)
		fail_msg("cannot open docs/ferry.ini.example (run the tests from the top "
			 "directory)");
	assert_true(getdelim(&example, &len, '\0', f) > 0);
	fclose(f);
	assert_int_equal(config_load(NULL, &def, NULL, 0), FERRY_OK);
	defaults = print_config(def);
	for (line = strtok_r(defaults, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char want[256];

		if (line[0] == '[')
			snprintf(want, sizeof(want), "\n%s\n", line);
		else
			snprintf(want, sizeof(want), "\n#%s\n", line);
		assert_contains(example, want);
	}
	for (char *p = example; (p = strstr(p, "\n#")) != NULL; p++) {
		if (p[2] != ' ' && p[2] != '\n' && p[2] != '#')
			p[1] = ' ';
	}
	{
		struct ferry_config *cfg = load_ok(example);
		char *a = print_config(cfg);

		f = open_memstream(&save, &len);
		config_print(def, f);
		fclose(f);
		assert_string_equal(a, save);
		free(a);
		free(save);
		config_free(cfg);
	}
	free(defaults);
	free(example);
	config_free(def);
}

static void test_reference(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)state;
	config_print_reference(f);
	fclose(f);
	assert_true(strncmp(text, "# ferry configuration\n", 22) == 0);
	assert_contains(text, "## [gateway]\n\nThe device-facing listeners");
	assert_contains(text, "## [push]\n\nWake-up pushes: ");
	assert_contains(text, "## [push.apns]\n\nThe default app's APNs credentials. ");
	assert_contains(text, "`[push.fcm.NAME]` with the same keys");
	assert_contains(text, "| `mode` | choice | `background` | `background`, `alert` | yes | "
			      "`FERRY_PUSH_MODE` |");
	assert_contains(text, "| `max_pending` | integer | `100000` | 1 to 10000000 | restart | "
			      "`FERRY_PUSH_MAX_PENDING` |");
	assert_contains(text, "| `key_id` | Apple ID | *empty* | ");
	assert_contains(text, "`FERRY_PUSH_APNS_KEY_FILE`");
	assert_contains(text, "`FERRY_PUSH_FCM_SERVICE_ACCOUNT`");
	assert_contains(text, "| `flush_interval` | integer (ms) | `50` | 1 to 10000 | restart | "
			      "`FERRY_RECEIPTS_FLUSH_INTERVAL` |");
	assert_contains(text, "| `max_body` | size | `64k` | 1k to 16m | restart | "
			      "`FERRY_ADMIN_MAX_BODY` |");
	assert_contains(text, "| `token` | secret | *empty* |  | yes | `FERRY_ADMIN_TOKEN` |");
	assert_contains(text, "`FERRY_LOG_LEVEL`");
	assert_contains(text, "`FERRY_STORE_CONNECT_TIMEOUT`");
	assert_contains(text, "ferryd check-config -c FILE");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_no_file, clear_env),
		cmocka_unit_test_setup(test_empty_file, clear_env),
		cmocka_unit_test_setup(test_every_key, clear_env),
		cmocka_unit_test_setup(test_missing_file, clear_env),
		cmocka_unit_test_setup(test_structure_errors, clear_env),
		cmocka_unit_test_setup(test_bad_numbers, clear_env),
		cmocka_unit_test_setup(test_sizes, clear_env),
		cmocka_unit_test_setup(test_log_level, clear_env),
		cmocka_unit_test_setup(test_addresses, clear_env),
		cmocka_unit_test_setup(test_split_addr, clear_env),
		cmocka_unit_test_setup(test_quotes_and_comments, clear_env),
		cmocka_unit_test_setup(test_limits, clear_env),
		cmocka_unit_test_setup(test_control_characters, clear_env),
		cmocka_unit_test_setup(test_env_overrides, clear_env),
		cmocka_unit_test_setup(test_print_masks_secrets, clear_env),
		cmocka_unit_test_setup(test_print_round_trip, clear_env),
		cmocka_unit_test_setup(test_diff, clear_env),
		cmocka_unit_test_setup(test_push_defaults, clear_env),
		cmocka_unit_test_setup(test_push_values, clear_env),
		cmocka_unit_test_setup(test_push_apps, clear_env),
		cmocka_unit_test_setup(test_push_app_keys, clear_env),
		cmocka_unit_test_setup(test_push_app_names, clear_env),
		cmocka_unit_test_setup(test_push_app_limit, clear_env),
		cmocka_unit_test_setup(test_tls_files, clear_env),
		cmocka_unit_test_setup(test_push_credentials, clear_env),
		cmocka_unit_test_setup(test_push_env, clear_env),
		cmocka_unit_test_setup(test_push_print_round_trip, clear_env),
		cmocka_unit_test_setup(test_push_diff, clear_env),
		cmocka_unit_test_setup(test_gateway_user_group, clear_env),
		cmocka_unit_test_setup(test_admin_token, clear_env),
		cmocka_unit_test_setup(test_admin_token_file_mode, clear_env),
		cmocka_unit_test_setup(test_admin_token_padded, clear_env),
		cmocka_unit_test_setup(test_example_file, clear_env),
		cmocka_unit_test_setup(test_reference, clear_env),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
