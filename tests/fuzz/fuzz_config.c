/*
 * fuzz_config.c - libFuzzer harness for the configuration parser.
 *
 * Feeds arbitrary bytes to config_load() as a file (an anonymous memfd seen
 * through /proc/self/fd), and prints what loaded through config_print(), so
 * that parsing, validation, masking and printing all run on hostile input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct ferry_config *cfg = NULL;
	char path[64], err[1024];
	int fd;

	if (!devnull) {
		devnull = fopen("/dev/null", "w");
		log_set_level(LOG_LEVEL_FATAL);
		/* Only the input decides what loads. */
		clearenv();
	}
	fd = memfd_create("fuzz.ini", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (config_load(path, &cfg, err, sizeof(err)) == FERRY_OK) {
		config_print(cfg, devnull);
		config_free(cfg);
	}
	close(fd);
	return 0;
}
