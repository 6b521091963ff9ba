/*
 * test_secrets.c - what ferryd does with its secrets, end to end: ferryd
 * against a throwaway PostgreSQL and the mock providers
 * (tests/mock/README.md).
 *
 * Key and token files: every file that holds a secret (the APNs .p8 key, an
 * APNs certificate's key, alone or in the certificate file, the
 * service-account file, the device TLS key, the admin token file) must be
 * accessible to its owner only. One that its group or others may read is
 * refused at start (exit 2, the fix in the message) and on SIGHUP (the old
 * configuration stays); 0600 and 0400 are fine.
 *
 * The group set-up makes every file once (owner-only, as th_write_file()
 * writes them), one database and the mocks; each test sets the modes it
 * needs and starts ferryd daemons of its own.
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "common/banned.h"

#define TOKEN "adm1n-t0ken-c4f19e7b2d5a"
#define TOKEN2 "adm1n-t0ken-93b7d0e1aa6f"

struct fixture {
	char *conninfo;
	struct th_push_keys k;		/* the .p8 key; the mocks' certificate */
	char *sa;			/* service-account file */
	char *tls_cert, *tls_key;	/* the device listener's */
	char *client_cert, *client_key; /* certificate-based APNs, app "certs" */
	char *combined;			/* both in one file, app "combined" */
	char *token_file;		/* TOKEN */
	struct th_mock apns, apns_certs, fcm;
};

static struct fixture fx;

/* One secret file, how ferryd names it in messages. */
struct secret_file {
	char **path;
	const char *what;
};

static const struct secret_file secret_files[] = {
	{ &fx.k.p8, "APNs key file" },
	{ &fx.sa, "service-account file" },
	{ &fx.client_key, "APNs certificate key" },
	{ &fx.combined, "APNs certificate (and key)" },
	{ &fx.tls_key, "TLS key" },
	{ &fx.token_file, "token file" },
};

#define NSECRET (sizeof(secret_files) / sizeof(secret_files[0]))

/* ---- set-up ---- */

static char *concat_files(const char *a, const char *b)
{
	char *ta = th_read_file(a), *tb = th_read_file(b), *text, *path;
	size_t n = strlen(ta) + strlen(tb) + 1;

	text = malloc(n);
	assert_non_null(text);
	snprintf(text, n, "%s%s", ta, tb);
	path = th_write_file("combined.pem", text);
	free(ta);
	free(tb);
	free(text);
	return path;
}

static int setup(void **state)
{
	char *path, *cfg;

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	th_push_keys_make(&fx.k);
	th_mock_cert(&fx.tls_cert, &fx.tls_key);
	th_mock_cert(&fx.client_cert, &fx.client_key);
	fx.combined = concat_files(fx.client_cert, fx.client_key);
	fx.token_file = th_write_file("admin.token", TOKEN "\n");
	th_mock_apns_start(&fx.apns, &fx.k, (const char *[]){ "--topic", TH_TOPIC, NULL });
	th_mock_apns_start(
		&fx.apns_certs, &fx.k,
		(const char *[]){ "--topic", TH_TOPIC, "--client-ca", fx.client_cert, NULL });
	th_mock_fcm_start(&fx.fcm, &fx.k, NULL);
	fx.sa = th_service_account_file(fx.k.rsa, &fx.fcm, TH_PROJECT, TH_SA_EMAIL);
	fx.conninfo = th_db_new("secrets");
	cfg = th_ferryd_config(fx.conninfo, th_free_port(), TOKEN);
	path = th_write_file("secrets-migrate.ini", cfg);
	if (th_ferryd_cmd(path, (const char *[]){ "migrate", NULL }, NULL) != 0)
		return -1;
	unlink(path);
	free(path);
	free(cfg);
	return 0;
}

static int teardown(void **state)
{
	char **files[] = { &fx.sa,	   &fx.tls_cert, &fx.tls_key,	&fx.client_cert,
			   &fx.client_key, &fx.combined, &fx.token_file };

	(void)state;
	th_mock_stop(&fx.apns);
	th_mock_stop(&fx.apns_certs);
	th_mock_stop(&fx.fcm);
	th_push_keys_release(&fx.k);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		unlink(*files[i]);
		free(*files[i]);
	}
	free(fx.conninfo);
	curl_global_cleanup();
	return 0;
}

/* ---- shared steps ---- */

/* Every secret file to @mode. */
static void set_modes(mode_t mode)
{
	for (size_t i = 0; i < NSECRET; i++)
		assert_int_equal(chmod(*secret_files[i].path, mode), 0);
}

/*
 * A config with every kind of secret file: the device listeners (plain on
 * @ports[0], TLS on @ports[1]), the default app's APNs key and FCM service
 * account, apps "certs" and "combined" with client certificates, the admin
 * token from @token_file; @gateway_extra is added to [gateway].
 */
static char *make_config(int admin_port, const int ports[2], const char *token_file,
			 const char *gateway_extra)
{
	char extra[8192];

	snprintf(extra, sizeof(extra),
		 "[gateway]\nlisten = 127.0.0.1:%d\ntls_listen = 127.0.0.1:%d\n"
		 "tls_cert = %s\ntls_key = %s\nworkers = 2\nack_timeout = 200\n%s\n\n"
		 "[push]\nca_file = %s\nmin_interval = 1\n\n"
		 "[push.apns]\nendpoint = %s\nsandbox_endpoint = %s\nkey_file = %s\n"
		 "key_id = " TH_KEY_ID "\nteam_id = " TH_TEAM_ID "\ntopic = " TH_TOPIC "\n\n"
		 "[push.fcm]\nendpoint = %s\nservice_account = %s\n\n"
		 "[push.apns.certs]\nendpoint = %s\ncert_file = %s\ncert_key = %s\n"
		 "topic = " TH_TOPIC "\n\n"
		 "[push.apns.combined]\nendpoint = %s\ncert_file = %s\ntopic = " TH_TOPIC "\n\n"
		 "[admin]\ntoken_file = %s\n",
		 ports[0], ports[1], fx.tls_cert, fx.tls_key, gateway_extra, fx.k.cert,
		 fx.apns.base, fx.apns.base, fx.k.p8, fx.fcm.base, fx.sa, fx.apns_certs.base,
		 fx.client_cert, fx.client_key, fx.apns_certs.base, fx.combined, token_file);
	return th_ferryd_config_ex(fx.conninfo, admin_port, "", extra);
}

static void free_ports(int ports[2])
{
	ports[0] = th_free_port();
	ports[1] = th_free_port();
}

/* The status of GET /v1/stats with @token. */
static long stats_status(const struct th_ferryd *d, const char *token)
{
	char url[128];
	struct th_response r;
	long status;

	snprintf(url, sizeof(url), "%s/v1/stats", d->admin_url);
	th_http(&r, "GET", url, token, NULL);
	status = r.status;
	th_response_release(&r);
	return status;
}

/* The message ferryd gives for secret file @f at @mode. */
static void refusal_text(const struct secret_file *f, mode_t mode, char *out, size_t n)
{
	snprintf(out, n,
		 "%s '%s' has group or world access (mode %04o); allow its owner only: "
		 "chmod 600 '%s'",
		 f->what, *f->path, (unsigned)mode, *f->path);
}

/* Replace the text of @d's config file (its mode stays). */
static void rewrite_config(const struct th_ferryd *d, const char *text)
{
	FILE *f = fopen(d->config_path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* ---- key and token file modes ---- */

/* Group-readable or world-readable: each file alone stops the start. */
static void test_refused_at_start(void **state)
{
	static const mode_t modes[] = { 0640, 0604 };
	int ports[2];

	(void)state;
	for (size_t i = 0; i < NSECRET; i++) {
		for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
			char want[1024], *cfg, *path, *out = NULL;
			int status;

			set_modes(0600);
			assert_int_equal(chmod(*secret_files[i].path, modes[m]), 0);
			free_ports(ports);
			cfg = make_config(th_free_port(), ports, fx.token_file, "");
			path = th_write_file("refused.ini", cfg);
			status = th_ferryd_cmd(path, (const char *[]){ "run", NULL }, &out);
			refusal_text(&secret_files[i], modes[m], want, sizeof(want));
			if (status != 2 || !strstr(out, want))
				fail_msg("%s at %04o: exit %d, not 2 with \"%s\":\n%s",
					 secret_files[i].what, (unsigned)modes[m], status, want,
					 out);
			unlink(path);
			free(path);
			free(cfg);
			free(out);
		}
	}
	set_modes(0600);
}

/* Owner read-write and owner read-only: ferryd starts and serves. */
static void test_accepted_at_start(void **state)
{
	static const mode_t modes[] = { 0600, 0400 };
	int ports[2];

	(void)state;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		struct th_ferryd d;
		int admin = th_free_port();
		char *cfg;

		set_modes(modes[m]);
		free_ports(ports);
		cfg = make_config(admin, ports, fx.token_file, "");
		th_ferryd_start(&d, cfg, admin);
		th_ferryd_wait_ready(&d, 10000);
		assert_int_equal(stats_status(&d, TOKEN), 200);
		th_log_wait(&d, "event=gateway_started", 1);
		assert_int_equal(th_log_count(&d, "has group or world access"), 0);
		assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
		free(cfg);
	}
	set_modes(0600);
}

/*
 * SIGHUP with a file that became group-readable: the reload is refused and
 * logged, and the old configuration (the old admin token) stays; once the
 * mode is fixed, the same file reloads.
 */
static void test_reload_refused(void **state)
{
	char want[1024], *cfg, *cfg2, *token2 = th_write_file("admin2.token", TOKEN2 "\n");
	const struct secret_file token2_file = { &token2, "token file" };
	struct th_ferryd d;
	int admin = th_free_port(), ports[2];

	(void)state;
	set_modes(0600);
	free_ports(ports);
	cfg = make_config(admin, ports, fx.token_file, "");
	th_ferryd_start(&d, cfg, admin);
	th_ferryd_wait_ready(&d, 10000);

	/* The new config names another token file; the .p8 key is 0640. */
	cfg2 = make_config(admin, ports, token2, "");
	rewrite_config(&d, cfg2);
	assert_int_equal(chmod(fx.k.p8, 0640), 0);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_failed", 1);
	refusal_text(&secret_files[0], 0640, want, sizeof(want));
	assert_int_equal(th_log_count(&d, want), 1);
	assert_int_equal(th_log_count(&d, "action=kept_old_config"), 1);
	assert_int_equal(stats_status(&d, TOKEN), 200);
	assert_int_equal(stats_status(&d, TOKEN2), 401);

	/* The key is fixed, the new token file is world-readable. */
	assert_int_equal(chmod(fx.k.p8, 0600), 0);
	assert_int_equal(chmod(token2, 0604), 0);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_failed", 2);
	refusal_text(&token2_file, 0604, want, sizeof(want));
	assert_int_equal(th_log_count(&d, want), 1);
	assert_int_equal(stats_status(&d, TOKEN), 200);
	assert_int_equal(stats_status(&d, TOKEN2), 401);

	/* Both fixed: the new configuration is in. */
	assert_int_equal(chmod(token2, 0400), 0);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_done", 1);
	assert_int_equal(stats_status(&d, TOKEN2), 200);
	assert_int_equal(stats_status(&d, TOKEN), 401);
	assert_int_equal(th_log_count(&d, "event=reload_failed"), 2);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	unlink(token2);
	free(token2);
	free(cfg);
	free(cfg2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_at_start),
		cmocka_unit_test(test_accepted_at_start),
		cmocka_unit_test(test_reload_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
