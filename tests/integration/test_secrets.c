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
 * No secret in the log or an admin answer: a full run at debug level
 * (devices, push tokens, envelopes online and offline, receipts, pushes
 * that work and fail, dead tokens, the admin's server message and pushes,
 * SIGHUP, admin calls), then a search of the log and of every answer for
 * device secrets, the admin token, more of a push token than its logged
 * prefix, JWTs, key material, OAuth access tokens and the payload marker
 * (raw, base64 at any alignment, hex). test_push_api's test_no_token_in_log
 * does the same for the tokens of its direct pushes.
 *
 * [gateway] user: started as root with user = nobody, ferryd refuses to
 * start while it could not read its files as nobody, then runs as nobody
 * (/proc/PID/status), serves devices and reloads; an unknown user and root
 * are refused; not started as root, it refuses another user and keeps its
 * own. test_user_switch needs root and says so otherwise; the others run
 * either way.
 *
 * The group set-up makes every file once (owner-only, as th_write_file()
 * writes them), one database and the mocks; each test sets the modes it
 * needs and starts ferryd daemons of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "gateway/proto.h"
#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "tests/integration/rawdev.h"
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
 * SIGHUP with a file that became group-readable (the .p8 key, the token
 * file, the TLS key): the reload is refused and logged, and the old
 * configuration (the old admin token) stays; once the mode is fixed, the
 * same file reloads.
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

	/* The token file is fixed, the TLS key (read again on SIGHUP) is not. */
	assert_int_equal(chmod(token2, 0400), 0);
	assert_int_equal(chmod(fx.tls_key, 0640), 0);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_failed", 3);
	refusal_text(&secret_files[4], 0640, want, sizeof(want));
	assert_int_equal(th_log_count(&d, want), 1);
	assert_int_equal(stats_status(&d, TOKEN), 200);
	assert_int_equal(stats_status(&d, TOKEN2), 401);

	/* All fixed: the new configuration is in. */
	assert_int_equal(chmod(fx.tls_key, 0600), 0);
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_done", 1);
	assert_int_equal(stats_status(&d, TOKEN2), 200);
	assert_int_equal(stats_status(&d, TOKEN), 401);
	assert_int_equal(th_log_count(&d, "event=reload_failed"), 3);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	unlink(token2);
	free(token2);
	free(cfg);
	free(cfg2);
}

/* ---- no secret in the log or in an admin API answer ---- */

/*
 * The scenario's marker, in every payload it sends (devices' SENDs, the
 * admin's server message, the admin's push title, body and data): text no
 * log line or answer has a reason to contain.
 */
#define MARKER "pAyL0ad-m4rker-5f2e9c71b3d8"
#define PAYLOAD "before " MARKER " after"
/* Push tokens, each unique; a prefix of the mocks' behaviour words aside
 * (tests/mock/README.md), nothing in them occurs elsewhere. */
#define TOK_ALICE_APNS "a11ce0a9c3e5b7d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8"
#define TOK_ALICE_FCM "fcmA1ice:Qx7Lm2Vb9Nc4Hd8Jf3Kg6Pt1Rw5Sy0Tz"
#define TOK_CAROL "0ff410c4a7b2e9d6f1a8c3e5b7d0f2a4c6e8b1d3f5a7c9e2b4d6f8a1c3e5b7d9"
#define TOK_DAVE "unregistered-dAve:Wq3Er8Ty1Ui6Op0As5Df"
#define TOK_FRANK "0ff429f7a3c8e1b6d4f9a2c7e5b0d8f3a6c1e9b4d7f2a5c0e8b3d6f1a4c9e7b2"
#define TOK_GRACE "67ace1b5d9f3a7c1e5b9d3f7a1c5e9b3d7f1a5c9e3b7d1f5a9c3e7b1d5f9a3c7"
#define TOK_BARE_APNS "baeef2c6a0e4b8d2f6a0c4e8b2d6f0a4c8e2b6d0f4a8c2e6b0d4f8a2c6e0b4d8"
#define TOK_BARE_FCM "fcmBare:Mn4Bv7Cx2Zl9Kj5Hg1Fd6Sa3Po8Iu0Yt"
#define TOK_REFUSED "zzRefused:Lk8Jh3Gf6Ds1Aq9Wm4Ne7"
/* The prefix the log and the API may show: at most this many characters
 * (push/apns.h, push/fcm.h, admin ADMIN_TOKEN_PREFIX_MAX). */
#define TOKEN_PREFIX_MAX 8

/* A push token, and how many of its first characters are a mock's
 * behaviour word, which may occur in the log as a word of its own. */
struct push_token {
	const char *text;
	size_t word;
};

static const struct push_token push_tokens[] = {
	{ TOK_ALICE_APNS, 0 }, { TOK_ALICE_FCM, 0 }, { TOK_CAROL, 0 },
	{ TOK_DAVE, 12 },      { TOK_FRANK, 0 },     { TOK_GRACE, 0 },
	{ TOK_BARE_APNS, 0 },  { TOK_BARE_FCM, 0 },  { TOK_REFUSED, 0 },
};

/* What the scenario saw: every admin answer (status, headers, body), the
 * answers that hand out a device secret kept apart. */
struct record {
	char *answers;
	size_t answers_len;
	FILE *out;
	char *with_secret;
	size_t with_secret_len;
	FILE *out_secret;
	char secrets[8][64];
	size_t nsecrets;
};

static struct record rec;

/* One admin request; @want its status. The answer is recorded; the JSON
 * (NULL if it is not JSON) is the caller's. */
static json_t *api(const struct th_ferryd *d, const char *method, const char *path,
		   const char *token, const char *body, long want)
{
	char url[512];
	struct th_response r;
	json_t *j;

	snprintf(url, sizeof(url), "%s%s", d->admin_url, path);
	th_http(&r, method, url, token, body);
	if (r.status != want)
		fail_msg("%s %s: %ld, not %ld: %s", method, path, r.status, want, r.body);
	/* The path without its query, which may hold what is looked for. */
	fprintf(rec.out, "%s %.*s -> %ld\n%s\n%s\n", method, (int)strcspn(path, "?"), path,
		r.status, r.headers ? r.headers : "", r.body);
	j = json_loads(r.body, 0, NULL);
	th_response_release(&r);
	return j;
}

/* A device of @user with push token @tok of @provider (NULL: none) in
 * @app (NULL: the default); its secret is recorded. */
static int64_t device(const struct th_ferryd *d, const char *user, const char *provider,
		      const char *tok, const char *app)
{
	char url[512], path[128], body[512];
	struct th_response r;
	json_t *j;
	int64_t id;

	snprintf(url, sizeof(url), "%s/v1/users/%s/devices", d->admin_url, user);
	th_http(&r, "POST", url, TOKEN, "{\"platform\":\"ios\"}");
	assert_int_equal(r.status, 201);
	fprintf(rec.out_secret, "%s\n%s\n", r.headers ? r.headers : "", r.body);
	j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	id = strtoll(json_string_value(json_object_get(j, "device_id")), NULL, 10);
	assert_true(rec.nsecrets < sizeof(rec.secrets) / sizeof(rec.secrets[0]));
	snprintf(rec.secrets[rec.nsecrets++], 64, "%s",
		 json_string_value(json_object_get(j, "secret")));
	json_decref(j);
	th_response_release(&r);
	if (tok) {
		snprintf(path, sizeof(path), "/v1/devices/%lld/push", (long long)id);
		snprintf(body, sizeof(body), "{\"provider\":\"%s\",\"token\":\"%s\"%s%s%s}",
			 provider, tok, app ? ",\"app\":\"" : "", app ? app : "", app ? "\"" : "");
		json_decref(api(d, "PUT", path, TOKEN, body, 200));
	}
	return id;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

/* Wait up to 10 s for @n requests with push token @tok at mock @m. */
static void wait_pushes(const struct th_mock *m, const char *tok, size_t n)
{
	for (int t = 0; t < 200; t++) {
		json_t *lines = th_mock_log_where(m, "token", tok);
		size_t got = json_array_size(lines);

		json_decref(lines);
		if (got >= n)
			return;
		sleep_ms(50);
	}
	fail_msg("no push for token %.8s... at the mock within 10 s", tok);
}

/* The next frame of @type on @dev, skipping the ACKs of other things and
 * DELIVER_RECEIPTs (acknowledged, as a device does; one whose ack came late
 * was stored and comes again, followed by QUEUE_EMPTY). */
static const struct proto_frame *next_of(struct rawdev *dev, enum proto_type type)
{
	for (int i = 0; i < 64; i++) {
		const struct proto_frame *f;

		if (rawdev_read(dev, 10000) != 1)
			fail_msg("no frame of type %d within 10 s", (int)type);
		f = &dev->f;
		if (f->type == type)
			return f;
		if (f->type == PROTO_DELIVER_RECEIPT)
			rawdev_ack(dev, f->u.receipt.id);
		else if (f->type != PROTO_ACK && f->type != PROTO_QUEUE_EMPTY)
			fail_msg("frame of type %d while waiting for %d", (int)f->type, (int)type);
	}
	fail_msg("no frame of type %d among 64", (int)type);
	return NULL;
}

static void send_payload(struct rawdev *dev, uint64_t cid, const char *to)
{
	rawdev_send_text(dev, cid, to, PAYLOAD);
}

/* A RECEIPT read: @dev's user read @cid of @peer's device @peer_dev. */
static void send_read(struct rawdev *dev, uint64_t rid, const char *peer, int64_t peer_dev,
		      uint64_t cid)
{
	struct proto_frame f = { .type = PROTO_RECEIPT };

	f.u.receipt.id = rid;
	f.u.receipt.kind = PROTO_RECEIPT_READ;
	f.u.receipt.peer_user.p = (const uint8_t *)peer;
	f.u.receipt.peer_user.len = strlen(peer);
	f.u.receipt.device = (uint64_t)peer_dev;
	f.u.receipt.count = 1;
	f.u.receipt.ids[0] = cid;
	rawdev_send(dev, &f);
}

/* The payload of a DELIVER is the scenario's (the marker went through). */
static uint64_t expect_payload(const struct proto_frame *f)
{
	assert_int_equal(f->u.deliver.payload.len, strlen(PAYLOAD));
	assert_memory_equal(f->u.deliver.payload.p, PAYLOAD, strlen(PAYLOAD));
	return f->u.deliver.server_id;
}

/* Read frames on @dev until the ACK of @cid; its status. */
static unsigned expect_ack(struct rawdev *dev, uint64_t cid)
{
	for (int i = 0; i < 64; i++) {
		const struct proto_frame *f = next_of(dev, PROTO_ACK);

		if (f->u.ack.client_id == cid)
			return f->u.ack.status;
	}
	fail_msg("no ACK of %llu", (unsigned long long)cid);
	return 0;
}

/* The devices of the scenario and their connections. */
struct scene {
	struct th_ferryd d;
	int ports[2];
	int64_t alice1, alice2, bob, carol, dave, erin, frank, grace;
	struct rawdev *bob_dev, *erin_dev, *alice_dev;
};

static void scene_start(struct scene *sc)
{
	int admin = th_free_port();
	char *cfg;

	memset(&rec, 0, sizeof(rec));
	rec.out = open_memstream(&rec.answers, &rec.answers_len);
	rec.out_secret = open_memstream(&rec.with_secret, &rec.with_secret_len);
	assert_true(rec.out && rec.out_secret);
	set_modes(0600);
	free_ports(sc->ports);
	cfg = make_config(admin, sc->ports, fx.token_file, "");
	th_ferryd_start(&sc->d, cfg, admin);
	th_ferryd_wait_ready(&sc->d, 10000);
	free(cfg);
	sc->alice1 = device(&sc->d, "alice", "apns", TOK_ALICE_APNS, NULL);
	sc->alice2 = device(&sc->d, "alice", "fcm", TOK_ALICE_FCM, NULL);
	sc->bob = device(&sc->d, "bob", NULL, NULL, NULL);
	sc->carol = device(&sc->d, "carol", "apns", TOK_CAROL, NULL);
	sc->dave = device(&sc->d, "dave", "fcm", TOK_DAVE, NULL);
	sc->erin = device(&sc->d, "erin", NULL, NULL, NULL);
	sc->frank = device(&sc->d, "frank", "apns", TOK_FRANK, NULL);
	sc->grace = device(&sc->d, "grace", "apns", TOK_GRACE, "certs");
}

/* bob (over TLS) and erin are online: an envelope goes straight through,
 * is acknowledged, and erin reads it. */
static void scene_online(struct scene *sc)
{
	const struct proto_frame *f;

	sc->bob_dev = rawdev_new();
	rawdev_connect(sc->bob_dev, sc->ports[1], fx.tls_cert);
	rawdev_hello(sc->bob_dev, PROTO_VERSION, sc->bob, rec.secrets[2]);
	rawdev_expect(sc->bob_dev, PROTO_WELCOME, 5000);
	rawdev_expect(sc->bob_dev, PROTO_QUEUE_EMPTY, 5000);
	sc->erin_dev = rawdev_new();
	rawdev_login(sc->erin_dev, sc->ports[0], sc->erin, rec.secrets[5]);
	send_payload(sc->bob_dev, 1, "erin");
	f = rawdev_expect(sc->erin_dev, PROTO_DELIVER, 10000);
	rawdev_ack(sc->erin_dev, expect_payload(f));
	assert_int_equal(expect_ack(sc->bob_dev, 1), PROTO_ACK_DELIVERED);
	send_read(sc->erin_dev, 1, "bob", sc->bob, 1);
	(void)expect_ack(sc->erin_dev, 1);
	f = next_of(sc->bob_dev, PROTO_DELIVER_RECEIPT);
	while (f->u.receipt.kind != PROTO_RECEIPT_READ)
		f = next_of(sc->bob_dev, PROTO_DELIVER_RECEIPT);
}

/* Envelopes for devices that are away: stored, and the devices woken, one
 * push of each kind: ok (APNs, FCM, APNs with a client certificate), token
 * dead (APNs 410, FCM UNREGISTERED), transient failure (APNs 429). */
static void scene_offline(struct scene *sc)
{
	static const char *const to[] = { "alice", "carol", "dave", "frank", "grace" };

	for (size_t i = 0; i < sizeof(to) / sizeof(to[0]); i++) {
		send_payload(sc->bob_dev, 2 + i, to[i]);
		assert_int_equal(expect_ack(sc->bob_dev, 2 + i), PROTO_ACK_STORED);
	}
	wait_pushes(&fx.apns, TOK_ALICE_APNS, 1);
	wait_pushes(&fx.fcm, TOK_ALICE_FCM, 1);
	wait_pushes(&fx.apns, TOK_CAROL, 1);
	wait_pushes(&fx.fcm, TOK_DAVE, 1);
	wait_pushes(&fx.apns, TOK_FRANK, 1);
	wait_pushes(&fx.apns_certs, TOK_GRACE, 1);
	th_log_wait(&sc->d, "event=push_token_removed", 2);
}

/* The admin's server message and pushes; then alice comes online, gets
 * what was stored and reads bob's envelope. */
static void scene_admin_messages(struct scene *sc)
{
	char body[1024], b64[256], path[64];
	uint64_t pending;

	assert_true(EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)PAYLOAD,
				    (int)strlen(PAYLOAD)) > 0);
	snprintf(body, sizeof(body), "{\"to_user\":\"alice\",\"payload_b64\":\"%s\"}", b64);
	json_decref(api(&sc->d, "POST", "/v1/messages", TOKEN, body, 200));
	snprintf(body, sizeof(body),
		 "{\"devices\":[%lld,\"%lld\",%lld],\"title\":\"" MARKER "\",\"body\":\"" MARKER
		 "\",\"data\":{\"m\":\"" MARKER "\"}}",
		 (long long)sc->alice1, (long long)sc->alice2, (long long)sc->carol);
	json_decref(api(&sc->d, "POST", "/v1/push", TOKEN, body, 200));
	json_decref(api(&sc->d, "POST", "/v1/push", TOKEN,
			"{\"tokens\":[{\"provider\":\"apns\",\"token\":\"" TOK_BARE_APNS "\"},"
			"{\"provider\":\"fcm\",\"token\":\"" TOK_BARE_FCM "\"}],"
			"\"data\":{\"m\":\"" MARKER "\"}}",
			200));
	json_decref(api(&sc->d, "POST", "/v1/push", TOKEN,
			"{\"tokens\":[{\"provider\":\"apns\",\"token\":\"" TOK_REFUSED "\"}]}",
			400));
	snprintf(path, sizeof(path), "/v1/devices/%lld/push", (long long)sc->carol);
	json_decref(api(&sc->d, "PUT", path, TOKEN,
			"{\"provider\":\"fcm\",\"token\":\"" TOK_REFUSED "\",\"topic\":\"x\"}",
			400));

	sc->alice_dev = rawdev_new();
	pending = rawdev_login_pending(sc->alice_dev, sc->ports[0], sc->alice1, rec.secrets[0]);
	assert_int_equal(pending, 2);
	for (uint64_t i = 0; i < pending; i++)
		rawdev_ack(sc->alice_dev,
			   expect_payload(rawdev_expect(sc->alice_dev, PROTO_DELIVER, 10000)));
	rawdev_expect(sc->alice_dev, PROTO_QUEUE_EMPTY, 10000);
	send_read(sc->alice_dev, 1, "bob", sc->bob, 2);
	(void)expect_ack(sc->alice_dev, 1);
}

/* SIGHUP, and a wake with the reloaded credentials. */
static void scene_reload(struct scene *sc)
{
	json_t *before = th_mock_log_where(&fx.fcm, "token", TOK_ALICE_FCM);
	size_t n = json_array_size(before);

	json_decref(before);
	kill(sc->d.pid, SIGHUP);
	th_log_wait(&sc->d, "event=reload_done", 1);
	th_log_wait(&sc->d, "event=push_reloaded", 1);
	sleep_ms(1100); /* [push] min_interval */
	send_payload(sc->bob_dev, 10, "alice");
	(void)expect_ack(sc->bob_dev, 10);
	rawdev_ack(sc->alice_dev, expect_payload(next_of(sc->alice_dev, PROTO_DELIVER)));
	wait_pushes(&fx.fcm, TOK_ALICE_FCM, n + 1);
}

/* Reading and changing things through the admin API, refused requests
 * included. */
static void scene_admin_calls(struct scene *sc)
{
	char path[128];
	const int64_t ids[] = { sc->alice1, sc->alice2, sc->carol, sc->dave, sc->grace };

	json_decref(api(&sc->d, "GET", "/v1/users/alice/devices", TOKEN, NULL, 200));
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		snprintf(path, sizeof(path), "/v1/devices/%lld", (long long)ids[i]);
		json_decref(api(&sc->d, "GET", path, TOKEN, NULL, 200));
	}
	json_decref(api(&sc->d, "GET", "/v1/stats", TOKEN, NULL, 200));
	json_decref(api(&sc->d, "GET", "/v1/queues", TOKEN, NULL, 200));
	json_decref(api(&sc->d, "GET", "/metrics", TOKEN, NULL, 200));
	json_decref(api(&sc->d, "PUT", "/v1/users/alice/settings", TOKEN,
			"{\"read_receipts\":false}", 200));
	json_decref(api(&sc->d, "GET", "/v1/users/alice/settings", TOKEN, NULL, 200));
	snprintf(path, sizeof(path), "/v1/devices/%lld/disconnect", (long long)sc->erin);
	json_decref(api(&sc->d, "POST", path, TOKEN, NULL, 200));
	snprintf(path, sizeof(path), "/v1/devices/%lld/push", (long long)sc->frank);
	json_decref(api(&sc->d, "DELETE", path, TOKEN, NULL, 204));
	json_decref(api(&sc->d, "GET", "/healthz", NULL, NULL, 200));
	json_decref(api(&sc->d, "GET", "/readyz", NULL, NULL, 200));
	json_decref(api(&sc->d, "GET", "/v1/stats", "not-the-token", NULL, 401));
	json_decref(api(&sc->d, "GET", "/v1/stats?access_token=" TOKEN, TOKEN, NULL, 401));
}

/* Stop the daemon and return its whole log (malloc'ed). */
static char *scene_stop(struct scene *sc)
{
	char *log;

	rawdev_free(sc->bob_dev);
	rawdev_free(sc->erin_dev);
	rawdev_free(sc->alice_dev);
	kill(sc->d.pid, SIGTERM);
	assert_int_equal(th_wait(sc->d.pid), 0);
	sc->d.pid = 0;
	log = th_read_file(sc->d.log_path);
	unlink(sc->d.config_path);
	unlink(sc->d.log_path);
	free(sc->d.config_path);
	free(sc->d.log_path);
	assert_int_equal(fclose(rec.out), 0);
	assert_int_equal(fclose(rec.out_secret), 0);
	return log;
}

/* What must not appear: @text, described by @what. */
struct needle {
	char what[96];
	char *text;
};

struct needles {
	struct needle *v;
	size_t n, cap;
};

static void add(struct needles *ns, const char *what, const char *text, size_t len)
{
	struct needle *nd;

	if (ns->n == ns->cap) {
		ns->cap = ns->cap ? 2 * ns->cap : 256;
		ns->v = realloc(ns->v, ns->cap * sizeof(*ns->v));
		assert_non_null(ns->v);
	}
	nd = &ns->v[ns->n++];
	snprintf(nd->what, sizeof(nd->what), "%s", what);
	nd->text = strndup(text, len);
	assert_non_null(nd->text);
}

/* Every @width-byte window of @s from window @first on (the whole of @s
 * if it is shorter). */
static void add_windows(struct needles *ns, const char *what, const char *s, size_t width,
			size_t first)
{
	size_t len = strlen(s);

	if (len <= width) {
		add(ns, what, s, len);
		return;
	}
	for (size_t i = first; i + width <= len; i++)
		add(ns, what, s + i, width);
}

/* The base64 body of the PEM block in @pem, lines joined (malloc'ed). */
static char *pem_body(const char *pem)
{
	const char *p = strstr(pem, "-----\n"), *end = strstr(pem, "\n-----END");
	char *out, *o;

	assert_non_null(p);
	assert_non_null(end);
	p += 6;
	out = o = malloc((size_t)(end - p) + 1);
	assert_non_null(out);
	for (; p < end; p++)
		if (*p != '\n' && *p != '\r')
			*o++ = *p;
	*o = '\0';
	return out;
}

/*
 * The marker as base64 inside any payload: for each of the 3 alignments,
 * the characters that depend on the marker's bytes only; in the standard
 * and the URL alphabet. And as hex, both cases.
 */
static void add_marker_forms(struct needles *ns)
{
	const size_t mlen = strlen(MARKER);
	unsigned char in[64], out[128];

	add(ns, "the payload marker", MARKER, mlen);
	for (size_t a = 0; a < 3; a++) {
		size_t first = (a * 8 + 5) / 6, last = (a + mlen) * 8 / 6;
		char url[128];

		memset(in, 'x', a);
		memcpy(in + a, MARKER, mlen);
		assert_true(EVP_EncodeBlock(out, in, (int)(a + mlen)) > 0);
		add(ns, "the payload marker in base64", (char *)out + first, last - first);
		snprintf(url, sizeof(url), "%.*s", (int)(last - first), (char *)out + first);
		for (char *c = url; *c; c++)
			*c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
		add(ns, "the payload marker in base64url", url, strlen(url));
	}
	for (int upper = 0; upper < 2; upper++) {
		char hex[128];

		for (size_t i = 0; i < mlen; i++)
			snprintf(hex + 2 * i, 3, upper ? "%02X" : "%02x", (unsigned char)MARKER[i]);
		add(ns, "the payload marker in hex", hex, 2 * mlen);
	}
}

/* Every secret of the scenario, as it would appear if it leaked. */
static struct needles collect_needles(void)
{
	struct needles ns = { 0 };
	char *p8 = th_read_file(fx.k.p8), *sa = th_key_pem(fx.k.rsa, 1), *body;
	json_t *lines = th_mock_log_where(&fx.fcm, "path", "/token"), *l;
	size_t i;

	for (i = 0; i < rec.nsecrets; i++)
		add_windows(&ns, "a device secret", rec.secrets[i], 12, 0);
	add_windows(&ns, "the admin token", TOKEN, 12, 0);
	for (i = 0; i < sizeof(push_tokens) / sizeof(push_tokens[0]); i++) {
		size_t w = push_tokens[i].word;

		add_windows(&ns, "more than the prefix of a push token", push_tokens[i].text,
			    TOKEN_PREFIX_MAX + 1, w > TOKEN_PREFIX_MAX ? w - TOKEN_PREFIX_MAX : 0);
	}
	body = pem_body(p8);
	add_windows(&ns, "the APNs .p8 key", body, 16, 0);
	free(body);
	body = pem_body(sa);
	add_windows(&ns, "the service account's private key", body, 16, 0);
	free(body);
	add(&ns, "a PEM private key", "PRIVATE KEY", 11);
	assert_true(json_array_size(lines) > 0);
	json_array_foreach(lines, i, l)
	{
		const char *tok = th_json_str(l, "issued");

		add(&ns, "an FCM OAuth access token", tok, strlen(tok));
	}
	add(&ns, "an FCM OAuth access token", "ya29.", 5);
	add_marker_forms(&ns);
	json_decref(lines);
	free(p8);
	free(sa);
	return ns;
}

static void needles_free(struct needles *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i].text);
	free(ns->v);
}

/* A JWT: "eyJ" (base64url of '{"'), base64url characters, '.', "eyJ". */
static const char *find_jwt(const char *text)
{
	static const char b64url[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

	for (const char *p = text; (p = strstr(p, "eyJ")) != NULL; p++) {
		size_t n = strspn(p, b64url);

		if (n >= 8 && p[n] == '.' && strncmp(p + n + 1, "eyJ", 3) == 0)
			return p;
	}
	return NULL;
}

/* Nothing of @ns in @text; device secrets only if @secrets_too. */
static void check_text(const struct needles *ns, const char *where, const char *text,
		       int secrets_too)
{
	const char *jwt = find_jwt(text);

	for (size_t i = 0; i < ns->n; i++) {
		if (!secrets_too && strcmp(ns->v[i].what, "a device secret") == 0)
			continue;
		th_assert_lacks(text, ns->v[i].text, ns->v[i].what, where);
	}
	if (jwt) {
		char shown[64];

		snprintf(shown, sizeof(shown), "%.40s", jwt);
		th_assert_lacks(text, shown, "a JWT", where);
	}
}

/*
 * A full run at debug level: devices registered, push tokens for APNs and
 * FCM, envelopes online and offline, receipts, wake-up pushes that work
 * and that fail, tokens found dead, the admin's server message and pushes,
 * SIGHUP, admin calls. Then neither the log nor any admin answer holds a
 * device secret, the admin token, more of a push token than its prefix, a
 * JWT, key material, an OAuth access token or payload bytes. The answers
 * that create a device carry its secret, once, by design; everything else
 * is checked in them too.
 */
static void test_no_secret_in_log_or_answers(void **state)
{
	struct scene sc;
	struct needles ns;
	char *log;

	(void)state;
	memset(&sc, 0, sizeof(sc));
	scene_start(&sc);
	scene_online(&sc);
	scene_offline(&sc);
	scene_admin_messages(&sc);
	scene_reload(&sc);
	scene_admin_calls(&sc);
	log = scene_stop(&sc);

	/* The scenario did what it says, and logged tokens by prefix. */
	assert_non_null(strstr(log, "level=debug"));
	assert_non_null(strstr(log, "event=apns_push_ok token_prefix=a11ce0a9 "));
	assert_non_null(strstr(log, "event=fcm_push_ok token_prefix=fcmA1ice "));
	assert_non_null(strstr(log, "event=apns_push_failed token_prefix=0ff410c4 "));
	assert_non_null(strstr(log, "event=fcm_push_failed token_prefix=unregist "));
	assert_non_null(strstr(log, "event=admin_push_sent"));
	assert_non_null(strstr(log, "event=reload_done"));

	ns = collect_needles();
	check_text(&ns, "the ferryd log", log, 1);
	check_text(&ns, "an admin API answer", rec.answers, 1);
	check_text(&ns, "a device-creating answer", rec.with_secret, 0);
	needles_free(&ns);
	free(log);
	free(rec.answers);
	free(rec.with_secret);
}

/* ---- [gateway] user ---- */

/* Every file the daemon of @cfg_path reads, for chown. */
static void chown_all(const char *cfg_path, uid_t uid, gid_t gid)
{
	const char *files[] = {
		cfg_path, fx.tls_cert,	  fx.tls_key,	 fx.k.cert,   fx.k.p8,
		fx.sa,	  fx.client_cert, fx.client_key, fx.combined, fx.token_file
	};

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (chown(files[i], uid, gid))
			fail_msg("chown '%s': %s", files[i], strerror(errno));
}

/* A user, copied out of getpw*()'s static storage. */
struct who {
	char name[64];
	uid_t uid;
	gid_t gid;
};

static void who_named(const char *name, struct who *w)
{
	struct passwd *pw = getpwnam(name);

	if (!pw)
		fail_msg("no user '%s' on this system", name);
	snprintf(w->name, sizeof(w->name), "%s", pw->pw_name);
	w->uid = pw->pw_uid;
	w->gid = pw->pw_gid;
}

/* Start `ferryd @cmd -c @cfg_path` as @w, output to @out_path. */
static pid_t spawn_as(const struct who *w, const char *cmd, const char *cfg_path,
		      const char *out_path)
{
	const char *ferryd = getenv("FERRY_TEST_FERRYD");
	pid_t pid;

	assert_non_null(ferryd);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
			_exit(126);
		if (geteuid() != w->uid &&
		    (setgroups(1, &w->gid) || setgid(w->gid) || setuid(w->uid)))
			_exit(125);
		execl(ferryd, ferryd, cmd, "-c", cfg_path, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Wait up to 20 s for @needle in the file @path. */
static void wait_in_file(const char *path, const char *needle, pid_t pid)
{
	for (int i = 0; i < 400; i++) {
		char *text = th_read_file(path);
		int found = strstr(text, needle) != NULL;

		if (found) {
			free(text);
			return;
		}
		if (i == 399 || waitpid(pid, NULL, WNOHANG) == pid)
			fail_msg("'%s' not in the output of ferryd within 20 s:\n%s", needle, text);
		free(text);
		sleep_ms(50);
	}
}

/* A user ferryd cannot switch to: there is none of that name, or it is root. */
static void test_user_refused(void **state)
{
	static const char *const users[][2] = {
		{ "ferry-no-such-user",
		  "[gateway] user: no user 'ferry-no-such-user' on this system" },
		{ "root", "[gateway] user: 'root' is uid 0, so nothing would be given up" },
	};
	int ports[2];

	(void)state;
	set_modes(0600);
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		char extra[128], *cfg, *path, *out = NULL;
		int st;

		snprintf(extra, sizeof(extra), "user = %s", users[i][0]);
		free_ports(ports);
		cfg = make_config(th_free_port(), ports, fx.token_file, extra);
		path = th_write_file("user.ini", cfg);
		st = th_ferryd_cmd(path, (const char *[]){ "run", NULL }, &out);
		if (st != 2 || !strstr(out, users[i][1]))
			fail_msg("user %s: exit %d, not 2 with \"%s\":\n%s", users[i][0], st,
				 users[i][1], out);
		assert_int_equal(
			th_ferryd_cmd(path, (const char *[]){ "check-config", NULL }, NULL), 2);
		unlink(path);
		free(path);
		free(cfg);
		free(out);
	}
}

/*
 * Not started as root: ferryd refuses a user other than itself, and runs
 * as itself when that is the user named. As root, the test runs these
 * daemons as nobody; otherwise as the user it runs as.
 */
static void test_user_not_root(void **state)
{
	char extra[128], *cfg, *path, *out = th_write_file("user.out", "");
	struct who me, other;
	int ports[2], st;
	pid_t pid;

	(void)state;
	if (geteuid() == 0) {
		who_named("nobody", &me);
		who_named("daemon", &other);
	} else {
		struct passwd *pw = getpwuid(geteuid());

		assert_non_null(pw);
		who_named(pw->pw_name, &me);
		/* Any user but root (refused for another reason) and oneself. */
		who_named(strcmp(me.name, "nobody") ? "nobody" : "daemon", &other);
	}
	set_modes(0600);
	free_ports(ports);
	snprintf(extra, sizeof(extra), "user = %s", other.name);
	cfg = make_config(th_free_port(), ports, fx.token_file, extra);
	path = th_write_file("notroot.ini", cfg);
	chown_all(path, me.uid, me.gid);
	st = th_wait(spawn_as(&me, "run", path, out));
	free(cfg);
	cfg = th_read_file(out);
	if (st != 2 || !strstr(cfg, "not as root, and cannot switch to that user"))
		fail_msg("as %s with user = %s: exit %d, not 2:\n%s", me.name, other.name, st, cfg);
	free(cfg);
	/* Checking the file is not running it: anyone may. */
	assert_int_equal(th_wait(spawn_as(&me, "check-config", path, out)), 0);

	snprintf(extra, sizeof(extra), "user = %s", me.name);
	cfg = make_config(th_free_port(), ports, fx.token_file, extra);
	chown_all(path, geteuid(), getegid());
	unlink(path);
	free(path);
	path = th_write_file("self.ini", cfg);
	chown_all(path, me.uid, me.gid);
	pid = spawn_as(&me, "run", path, out);
	wait_in_file(out, "event=privileges_kept user=", pid);
	wait_in_file(out, "event=started", pid);
	kill(pid, SIGTERM);
	assert_int_equal(th_wait(pid), 0);
	chown_all(path, geteuid(), getegid());
	unlink(path);
	unlink(out);
	free(path);
	free(out);
	free(cfg);
}

/* Field @name of /proc/@pid/status ("Uid", "Gid", "Groups", "CapEff"), its
 * values separated by single spaces. */
static void proc_status(pid_t pid, const char *name, char *out, size_t n)
{
	char path[64], *text, *p, *end;
	size_t len = strlen(name);

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	text = th_read_file(path);
	for (p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, name, len) == 0 && p[len] == ':')
			break;
	}
	if (!p || !*p)
		fail_msg("no %s in %s", name, path);
	p += len + 1;
	p += strspn(p, " \t");
	end = p + strcspn(p, "\n");
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	snprintf(out, n, "%.*s", (int)(end - p), p);
	for (char *c = out; *c; c++)
		if (*c == '\t')
			*c = ' ';
	free(text);
}

/* Two devices of @user talk through @d, over TLS and plain TCP. */
static void devices_talk(const struct th_ferryd *d, const int ports[2], const char *user)
{
	struct rawdev *a = rawdev_new(), *b = rawdev_new();
	char sa[64], sb[64];
	int64_t ia, ib;

	th_device_create(d, TOKEN, user, &ia, sa);
	th_device_create(d, TOKEN, user, &ib, sb);
	rawdev_connect(a, ports[1], fx.tls_cert);
	rawdev_hello(a, PROTO_VERSION, ia, sa);
	rawdev_expect(a, PROTO_WELCOME, 5000);
	rawdev_expect(a, PROTO_QUEUE_EMPTY, 5000);
	rawdev_login(b, ports[0], ib, sb);
	rawdev_send_text(a, 1, user, "as nobody");
	rawdev_ack(b, rawdev_expect(b, PROTO_DELIVER, 10000)->u.deliver.server_id);
	assert_int_equal(expect_ack(a, 1), PROTO_ACK_DELIVERED);
	rawdev_free(a);
	rawdev_free(b);
}

/*
 * Started as root with user = nobody: the files it reads again must be
 * readable by nobody, or it does not start. Once they are, it runs as
 * nobody (uid, gid, groups, no capabilities), serves devices over TLS and
 * plain TCP, and reloads on SIGHUP. Only root can start a daemon that
 * switches users: run as anyone else, this test fails and says so.
 */
static void test_user_switch(void **state)
{
	char want[512], line[256], *cfg, *path, *out = NULL;
	struct th_ferryd d;
	struct who nobody;
	int admin = th_free_port(), ports[2], st;

	(void)state;
	if (geteuid() != 0)
		fail_msg("test_user_switch needs root: only a ferryd started as root can switch to "
			 "[gateway] user (CI and make test run as root)");
	who_named("nobody", &nobody);
	set_modes(0600);
	free_ports(ports);
	cfg = make_config(admin, ports, fx.token_file, "user = nobody");
	path = th_write_file("nobody.ini", cfg);

	/* Everything still belongs to root: refused once switched. */
	st = th_ferryd_cmd(path, (const char *[]){ "run", NULL }, &out);
	snprintf(want, sizeof(want),
		 "ferryd: as user 'nobody', ferryd cannot read '%s' (the config file): "
		 "Permission denied",
		 path);
	if (st != 2 || !strstr(out, want))
		fail_msg("files of root: exit %d, not 2 with \"%s\":\n%s", st, want, out);
	free(out);

	chown_all(path, nobody.uid, nobody.gid);
	th_ferryd_start_file(&d, path, admin);
	th_log_wait(&d, "event=started", 1);
	snprintf(want, sizeof(want), "event=privileges_dropped user=nobody uid=%u gid=%u",
		 (unsigned)nobody.uid, (unsigned)nobody.gid);
	assert_int_equal(th_log_count(&d, want), 1);
	snprintf(want, sizeof(want), "%u %u %u %u", (unsigned)nobody.uid, (unsigned)nobody.uid,
		 (unsigned)nobody.uid, (unsigned)nobody.uid);
	proc_status(d.pid, "Uid", line, sizeof(line));
	assert_string_equal(line, want);
	snprintf(want, sizeof(want), "%u %u %u %u", (unsigned)nobody.gid, (unsigned)nobody.gid,
		 (unsigned)nobody.gid, (unsigned)nobody.gid);
	proc_status(d.pid, "Gid", line, sizeof(line));
	assert_string_equal(line, want);
	snprintf(want, sizeof(want), "%u", (unsigned)nobody.gid);
	proc_status(d.pid, "Groups", line, sizeof(line));
	assert_string_equal(line, want);
	proc_status(d.pid, "CapEff", line, sizeof(line));
	assert_string_equal(line, "0000000000000000");

	devices_talk(&d, ports, "nobody-user");
	kill(d.pid, SIGHUP);
	th_log_wait(&d, "event=reload_done", 1);
	assert_int_equal(th_log_count(&d, "event=reload_failed"), 0);
	assert_int_equal(stats_status(&d, TOKEN), 200);
	chown_all(d.config_path, 0, 0);
	assert_int_equal(th_ferryd_stop(&d, SIGTERM), 0);
	free(path);
	free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_at_start),
		cmocka_unit_test(test_accepted_at_start),
		cmocka_unit_test(test_reload_refused),
		cmocka_unit_test(test_no_secret_in_log_or_answers),
		cmocka_unit_test(test_user_refused),
		cmocka_unit_test(test_user_not_root),
		cmocka_unit_test(test_user_switch),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
