/*
 * mockenv.h - the mock push providers for integration tests: a TLS
 * certificate for 127.0.0.1, provider keys, starting and stopping
 * mock_apns / mock_fcm (tests/mock/README.md), and reading their JSON
 * request logs. Failures end the test (cmocka fail_msg).
 */
#ifndef FERRY_TESTS_INTEGRATION_MOCKENV_H
#define FERRY_TESTS_INTEGRATION_MOCKENV_H

#include <sys/types.h>

#include <jansson.h>
#include <openssl/evp.h>

/* The identities the mocks are started with. */
#define TH_KEY_ID "ABC123DEFG"
#define TH_TEAM_ID "TEAM123456"
#define TH_TOPIC "com.example.app"
#define TH_SA_EMAIL "ferry@mock-project.iam.gserviceaccount.com"
#define TH_PROJECT "mock-project"

/* Keys and files a test with mock providers needs (paths malloc'ed). */
struct th_push_keys {
	char *cert, *key;	/* the mocks' TLS certificate (a CA for ferryd) */
	EVP_PKEY *ec, *rsa;	/* the APNs .p8 key, the service account's key */
	char *ec_pub, *rsa_pub; /* their public halves, for the mocks */
	char *p8;		/* the .p8 file, for ferryd */
};

/* Make every key and file of @k. */
void th_push_keys_make(struct th_push_keys *k);

/* Remove the files and free everything. */
void th_push_keys_release(struct th_push_keys *k);

/* A running mock. */
struct th_mock {
	pid_t pid;
	int port;
	char *log;	  /* its request log */
	char *out;	  /* its stdout and stderr */
	char base[64];	  /* https://127.0.0.1:PORT */
	unsigned outages; /* begun with th_mock_outage() */
};

/* A self-signed certificate for localhost and 127.0.0.1, and its key, as
 * files (malloc'ed paths). */
void th_mock_cert(char **cert, char **key);

/* @k as PEM: its public half, or its private key (PKCS#8). malloc'ed. */
char *th_key_pem(EVP_PKEY *k, int private_key);

/* Write @k's public (or private) key to a new file named after @name;
 * returns the malloc'ed path. */
char *th_key_file(EVP_PKEY *k, const char *name, int private_key);

/* A service-account JSON file for @k (RSA) whose token_uri is @fcm's
 * /token; returns its malloc'ed path. */
char *th_service_account_file(EVP_PKEY *k, const struct th_mock *fcm, const char *project,
			      const char *email);

/* Start tests/mock/@prog (from $FERRY_TEST_MOCK_DIR, default
 * build/asan/tests/mock) with @args (NULL-terminated) and --log; wait for
 * its port. */
void th_mock_start(struct th_mock *m, const char *prog, const char *const args[]);

/* mock_apns with @k's certificate and key, TH_KEY_ID and TH_TEAM_ID, then
 * @more (NULL-terminated, may be NULL). */
void th_mock_apns_start(struct th_mock *m, const struct th_push_keys *k, const char *const more[]);

/* mock_fcm with @k, TH_SA_EMAIL and TH_PROJECT, then @more. */
void th_mock_fcm_start(struct th_mock *m, const struct th_push_keys *k, const char *const more[]);

/*
 * Begin (@down 1: SIGUSR1) or end (0: SIGUSR2) an outage of @m, of the kind
 * its --outage option chose, and wait until the mock says it is in force
 * ("down N" / "up N" on its output); fails the test after 10 s.
 */
void th_mock_outage(struct th_mock *m, int down);

/* SIGTERM it, check it exits 0, remove its files. Not started: nothing. */
void th_mock_stop(struct th_mock *m);

/* Every line of @m's log, parsed (a new JSON array). */
json_t *th_mock_log(const struct th_mock *m);

/* The lines of @m's log whose string @field is @value (a new array). */
json_t *th_mock_log_where(const struct th_mock *m, const char *field, const char *value);

/* The string @field of a log line; fails the test when it is not a string. */
const char *th_json_str(json_t *line, const char *field);

#endif
