/*
 * fuzz_service_account.c - libFuzzer harness for the push credential files.
 *
 * Feeds arbitrary bytes, as a file (an anonymous memfd seen through
 * /proc/self/fd), to push_service_account_load() and push_apns_key_load(),
 * so that the JSON checks, the PEM and PKCS#8 decoding and the key checks
 * all run on hostile input. A service account that loads signs one
 * assertion; every error message must be a single NUL-terminated line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "push/creds.h"
#include "push/jwt.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_err(const char *err, size_t cap)
{
	if (!memchr(err, '\0', cap) || strchr(err, '\n'))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct push_service_account sa;
	EVP_PKEY *key = NULL;
	char path[64], err[512];
	char *tok = NULL;
	int fd;

	fd = memfd_create("fuzz.json", 0);
	if (fd < 0)
		return 0;
	/* A memfd starts as mode 0777; the loaders take owner-only files. */
	if (fchmod(fd, 0600)) {
		close(fd);
		return 0;
	}
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	err[0] = '\0';
	if (push_service_account_load(path, &sa, err, sizeof(err)) == FERRY_OK) {
		if (push_jwt_rs256(sa.key, sa.private_key_id, sa.client_email,
				   "https://www.googleapis.com/auth/firebase.messaging",
				   sa.token_uri, 1700000000, 1700003600, &tok) == FERRY_OK)
			free(tok);
		push_service_account_release(&sa);
	} else {
		check_err(err, sizeof(err));
	}
	err[0] = '\0';
	if (push_apns_key_load(path, &key, err, sizeof(err)) == FERRY_OK) {
		if (push_jwt_es256(key, "KEYID", "TEAMID", 1700000000, &tok) == FERRY_OK)
			free(tok);
		EVP_PKEY_free(key);
	} else {
		check_err(err, sizeof(err));
	}
	close(fd);
	return 0;
}
