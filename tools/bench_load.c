/*
 * bench_load.c - the commands ferry-bench runs beside the phases of online
 * mode (--load NAME=CMD): another load on the same ferryd, such as wrk on
 * its admin API, started before a phase and stopped after it, so that the
 * phases with and without it run on the same connections, alternated.
 *
 * A command is /bin/sh -c CMD, spawned (posix_spawn: ferry-bench has a
 * thread per device, and a forked child of a threaded process may call
 * nothing but async-signal-safe functions before exec) in a process group of
 * its own, so that a Ctrl-C at the terminal reaches ferry-bench only and
 * ferry-bench stops the whole group, the shell and what it started, itself.
 * SIGINT is what stops it: wrk then prints its report and exits 0. The
 * command learns its phase and run from FERRY_BENCH_PHASE and
 * FERRY_BENCH_RUN (to name its output files). Signals ferry-bench handles
 * or ignores are reset to their defaults in the child.
 *
 * Ownership: a struct fb_load borrows its command from argv; its pid is
 * that of the process group's leader while it runs, 0 otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/bench_int.h"
#include "common/banned.h"

#define LOAD_STOP_MS 5000 /* after SIGINT, before SIGKILL */

extern char **environ;

int fb_load_parse(const char *arg, struct fb_load *l)
{
	static const char name_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : 0;

	if (!n || n >= sizeof(l->name) || !eq[1] || strspn(arg, name_chars) != n)
		return -1;
	memcpy(l->name, arg, n);
	l->name[n] = '\0';
	l->cmd = eq + 1;
	l->pid = 0;
	return 0;
}

/* environ with FERRY_BENCH_PHASE and FERRY_BENCH_RUN set (old ones left out). */
static char **load_env(const struct fb_load *l, unsigned run, char *phase, size_t phase_cap,
		       char *runv, size_t run_cap)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 3, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(environ[i], "FERRY_BENCH_PHASE=", 18) &&
		    strncmp(environ[i], "FERRY_BENCH_RUN=", 16))
			env[k++] = environ[i];
	}
	snprintf(phase, phase_cap, "FERRY_BENCH_PHASE=%s", l->name);
	snprintf(runv, run_cap, "FERRY_BENCH_RUN=%u", run);
	env[k++] = phase;
	env[k++] = runv;
	return env;
}

int fb_load_start(struct fb_load *l, unsigned run)
{
	char phase[64], runv[32];
	char *argv[] = { "sh", "-c", (char *)l->cmd, NULL };
	char **env = load_env(l, run, phase, sizeof(phase), runv, sizeof(runv));
	posix_spawnattr_t attr;
	sigset_t def;
	pid_t pid;
	int rc;

	if (!env) {
		fprintf(stderr, "ferry-bench: load '%s': out of memory\n", l->name);
		return -1;
	}
	sigemptyset(&def);
	sigaddset(&def, SIGINT);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGPIPE);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigdefault(&attr, &def);
	rc = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, env);
	posix_spawnattr_destroy(&attr);
	free(env);
	if (rc) {
		fprintf(stderr, "ferry-bench: cannot start load '%s': %s\n", l->name, strerror(rc));
		return -1;
	}
	l->pid = (int)pid;
	return 0;
}

/* Say how @l ended (status from waitpid); 0 if that counts as success. */
static int load_ended(struct fb_load *l, int status, int stopped)
{
	l->pid = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (stopped && WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)
		return 0;
	if (WIFEXITED(status))
		fprintf(stderr, "ferry-bench: load '%s' exited with status %d\n", l->name,
			WEXITSTATUS(status));
	else
		fprintf(stderr, "ferry-bench: load '%s' died of signal %d\n", l->name,
			WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return -1;
}

int fb_load_running(struct fb_load *l)
{
	int status;
	pid_t r;

	if (!l->pid)
		return 0;
	r = waitpid(l->pid, &status, WNOHANG);
	if (r == 0)
		return 1;
	if (r == l->pid)
		load_ended(l, status, 0);
	else
		l->pid = 0;
	return 0;
}

int fb_load_stop(struct fb_load *l)
{
	uint64_t deadline = fb_now_ns() + LOAD_STOP_MS * 1000000ull;
	int status;
	pid_t r;

	if (!l->pid)
		return 0;
	kill(-l->pid, SIGINT);
	for (;;) {
		r = waitpid(l->pid, &status, WNOHANG);
		if (r == l->pid)
			break;
		if (r < 0 && errno != EINTR) {
			l->pid = 0;
			return -1;
		}
		if (fb_now_ns() >= deadline) {
			fprintf(stderr, "ferry-bench: load '%s' ignored SIGINT: killed\n", l->name);
			kill(-l->pid, SIGKILL);
			while (waitpid(l->pid, &status, 0) < 0 && errno == EINTR)
				;
			l->pid = 0;
			return -1;
		}
		fb_sleep_ms(5);
	}
	return load_ended(l, status, 1);
}
