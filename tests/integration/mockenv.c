/*
 * mockenv.c - the mock push providers for integration tests (mockenv.h).
 */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "tests/integration/harness.h"
#include "tests/integration/mockenv.h"
#include "common/banned.h"

void th_mock_cert(char **cert, char **key)
{
	char cmd[1024];

	*cert = th_write_file("cert.pem", "");
	*key = th_write_file("key.pem", "");
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-days 1 -subj /CN=localhost "
		 "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
		 "-keyout '%s' -out '%s' 2>/dev/null",
		 *key, *cert);
	if (system(cmd) != 0)
		fail_msg("cannot make a test certificate with openssl");
}

char *th_key_pem(EVP_PKEY *k, int private_key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *text;
	long n;

	if (!b || (private_key ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
			       : PEM_write_bio_PUBKEY(b, k)) != 1)
		fail_msg("cannot write a key");
	n = BIO_get_mem_data(b, &data);
	text = strndup(data, (size_t)n);
	BIO_free(b);
	return text;
}

char *th_key_file(EVP_PKEY *k, const char *name, int private_key)
{
	char *text = th_key_pem(k, private_key), *path = th_write_file(name, text);

	free(text);
	return path;
}

char *th_service_account_file(EVP_PKEY *k, const struct th_mock *fcm, const char *project,
			      const char *email)
{
	char *pem = th_key_pem(k, 1), *text, *path, uri[128];
	json_t *j;

	snprintf(uri, sizeof(uri), "%s/token", fcm->base);
	j = json_pack("{ss,ss,ss,ss,ss,ss}", "type", "service_account", "project_id", project,
		      "private_key_id", "k1", "private_key", pem, "client_email", email,
		      "token_uri", uri);
	text = json_dumps(j, 0);
	path = th_write_file("sa.json", text);
	free(text);
	free(pem);
	json_decref(j);
	return path;
}

static const char *mock_dir(void)
{
	const char *d = getenv("FERRY_TEST_MOCK_DIR");

	return d ? d : "build/asan/tests/mock";
}

void th_mock_start(struct th_mock *m, const char *prog, const char *const args[])
{
	const char *argv[40];
	char path[256];
	int n = 0;

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "%s/%s", mock_dir(), prog);
	m->log = th_write_file("mock.log", "");
	m->out = th_write_file("mock.out", "");
	argv[n++] = path;
	for (int i = 0; args[i] && n < 36; i++)
		argv[n++] = args[i];
	argv[n++] = "--log";
	argv[n++] = m->log;
	argv[n] = NULL;
	m->pid = th_spawn(argv, m->out);
	for (int i = 0; i < 1000 && !m->port; i++) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		char *out = th_read_file(m->out);
		const char *p = out ? strstr(out, "listening ") : NULL;

		if (p)
			m->port = (int)strtol(p + 10, NULL, 10);
		free(out);
		if (!m->port)
			nanosleep(&pause, NULL);
	}
	if (!m->port)
		fail_msg("%s did not start: %s", prog, th_read_file(m->out));
	snprintf(m->base, sizeof(m->base), "https://127.0.0.1:%d", m->port);
}

void th_mock_outage(struct th_mock *m, int down)
{
	char want[32];

	if (down)
		m->outages++;
	snprintf(want, sizeof(want), "\n%s %u\n", down ? "down" : "up", m->outages);
	kill(m->pid, down ? SIGUSR1 : SIGUSR2);
	for (int i = 0; i < 1000; i++) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		char *out = th_read_file(m->out);
		int seen = out && strstr(out, want);

		free(out);
		if (seen)
			return;
		nanosleep(&pause, NULL);
	}
	fail_msg("the mock did not say '%s %u'", down ? "down" : "up", m->outages);
}

void th_mock_stop(struct th_mock *m)
{
	int st;

	if (!m->pid)
		return;
	kill(m->pid, SIGTERM);
	st = th_wait(m->pid);
	if (st != 0) {
		char *out = th_read_file(m->out);

		fprintf(stderr, "---- mock output ----\n%s\n", out);
		free(out);
		fail_msg("mock exited with %d after SIGTERM", st);
	}
	unlink(m->log);
	unlink(m->out);
	free(m->log);
	free(m->out);
	m->pid = 0;
}

json_t *th_mock_log(const struct th_mock *m)
{
	char *text = th_read_file(m->log), *line = text;
	json_t *all = json_array();

	while (line && *line) {
		char *nl = strchr(line, '\n');
		json_t *j;

		/* The mock may be writing its last line right now: a line
		 * without its newline is not there yet. */
		if (!nl)
			break;
		*nl = '\0';
		j = json_loads(line, 0, NULL);
		if (!j)
			fail_msg("log line is not JSON: %s", line);
		json_array_append_new(all, j);
		line = nl + 1;
	}
	free(text);
	return all;
}

json_t *th_mock_log_where(const struct th_mock *m, const char *field, const char *value)
{
	json_t *all = th_mock_log(m), *out = json_array(), *line;
	size_t i;

	json_array_foreach(all, i, line)
	{
		const char *v = json_string_value(json_object_get(line, field));

		if (v && strcmp(v, value) == 0)
			json_array_append(out, line);
	}
	json_decref(all);
	return out;
}

const char *th_json_str(json_t *line, const char *field)
{
	const char *v = json_string_value(json_object_get(line, field));

	if (!v)
		fail_msg("log field '%s' is not a string", field);
	return v;
}

void th_push_keys_make(struct th_push_keys *k)
{
	memset(k, 0, sizeof(*k));
	th_mock_cert(&k->cert, &k->key);
	k->ec = EVP_EC_gen("P-256");
	k->rsa = EVP_RSA_gen(2048);
	if (!k->ec || !k->rsa)
		fail_msg("cannot generate keys");
	k->ec_pub = th_key_file(k->ec, "authkey.pub", 0);
	k->rsa_pub = th_key_file(k->rsa, "sa.pub", 0);
	k->p8 = th_key_file(k->ec, "AuthKey.p8", 1);
}

void th_push_keys_release(struct th_push_keys *k)
{
	char *files[] = { k->cert, k->key, k->ec_pub, k->rsa_pub, k->p8 };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (files[i])
			unlink(files[i]);
		free(files[i]);
	}
	EVP_PKEY_free(k->ec);
	EVP_PKEY_free(k->rsa);
	memset(k, 0, sizeof(*k));
}

/* @prog with @base then @more. */
static void start_with(struct th_mock *m, const char *prog, const char *const base[],
		       const char *const more[])
{
	const char *args[36];
	size_t n = 0;

	for (size_t i = 0; base[i]; i++)
		args[n++] = base[i];
	for (size_t i = 0; more && more[i] && n < 35; i++)
		args[n++] = more[i];
	args[n] = NULL;
	th_mock_start(m, prog, args);
}

void th_mock_apns_start(struct th_mock *m, const struct th_push_keys *k, const char *const more[])
{
	start_with(m, "mock_apns",
		   (const char *[]){ "--port", "0", "--cert", k->cert, "--key", k->key,
				     "--auth-key", k->ec_pub, "--key-id", TH_KEY_ID, "--team-id",
				     TH_TEAM_ID, NULL },
		   more);
}

void th_mock_fcm_start(struct th_mock *m, const struct th_push_keys *k, const char *const more[])
{
	start_with(m, "mock_fcm",
		   (const char *[]){ "--port", "0", "--cert", k->cert, "--key", k->key,
				     "--sa-pubkey", k->rsa_pub, "--client-email", TH_SA_EMAIL,
				     "--project-id", TH_PROJECT, NULL },
		   more);
}
