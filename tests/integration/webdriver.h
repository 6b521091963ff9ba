/*
 * webdriver.h - a headless Chromium driven through chromedriver's W3C
 * WebDriver HTTP API (libcurl + jansson), for integration tests of pages
 * that ferryd serves.
 *
 * Debian's packages: chromium (/usr/bin/chromium) and chromium-driver
 * (/usr/bin/chromedriver); `make test` installs them (scripts/deps.sh test).
 * chromedriver runs in a process group of its own, on a port chosen at run
 * time; the browsers it starts belong to that group, so wd_driver_stop()
 * ends them all, even when a session was not quit.
 *
 * Every function fails the test (cmocka fail_msg) on a transport error or a
 * WebDriver error, but wd_driver_stop() and wd_session_quit(), which are for
 * teardowns and never fail.
 */
#ifndef FERRY_TESTS_WEBDRIVER_H
#define FERRY_TESTS_WEBDRIVER_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define WD_CHROMEDRIVER "/usr/bin/chromedriver"
#define WD_CHROMIUM "/usr/bin/chromium"

/* Room for a session or element id. */
#define WD_ID_MAX 128

/* A running chromedriver. */
struct wd_driver {
	pid_t pid; /* also its process group; 0: not running */
	int port;
	char url[64];	/* http://127.0.0.1:PORT */
	char *log_path; /* its output, malloc'ed */
};

/* One browser. */
struct wd_session {
	struct wd_driver *drv; /* borrowed */
	char id[WD_ID_MAX];    /* "" once quit */
};

/*
 * NULL if chromedriver and chromium are installed, else what is missing
 * (static text), for a test to fail with.
 */
const char *wd_missing(void);

/* Start chromedriver on a free port (its output to a file in
 * FERRY_TEST_TMPDIR) and wait until it is ready; fails the test if it
 * cannot be started within 20 s. */
void wd_driver_start(struct wd_driver *drv);

/* End chromedriver and every browser it started (SIGTERM to its process
 * group, SIGKILL after 5 s), reap it. Not running: a no-op. */
void wd_driver_stop(struct wd_driver *drv);

/* Print chromedriver's output so far to stderr (for a failed test). */
void wd_driver_dump_log(const struct wd_driver *drv);

/*
 * Start a headless Chromium (--headless=new, no sandbox, no GPU, no
 * /dev/shm, window @width x @height) with the profile directory
 * @profile_dir, which must exist and be empty.
 */
void wd_session_new(struct wd_session *s, struct wd_driver *drv, const char *profile_dir, int width,
		    int height);

/* Close the browser; "" id (never started or quit already): a no-op. */
void wd_session_quit(struct wd_session *s);

/* Load @url and wait for the page to finish loading. */
void wd_navigate(struct wd_session *s, const char *url);

/* Reload the page and wait for it to finish loading. */
void wd_refresh(struct wd_session *s);

/* The element matching CSS selector @css into @eid: 1, or 0 if none. */
int wd_find(struct wd_session *s, const char *css, char eid[WD_ID_MAX]);

/* The same, failing the test if there is none. */
void wd_find_must(struct wd_session *s, const char *css, char eid[WD_ID_MAX]);

/* 1 if the element is shown (not display:none, not hidden, ...). */
int wd_displayed(struct wd_session *s, const char *eid);

/* The element's rendered text (malloc'ed). */
char *wd_text(struct wd_session *s, const char *eid);

/* The element's attribute @name (malloc'ed), or NULL if it has none. */
char *wd_attribute(struct wd_session *s, const char *eid, const char *name);

void wd_click(struct wd_session *s, const char *eid);

/* Type @text into the element (focused first). */
void wd_type(struct wd_session *s, const char *eid, const char *text);

/* Run @script (a function body; `return` gives the result) in the page;
 * returns the result as a new reference (JSON null for undefined). */
json_t *wd_script(struct wd_session *s, const char *script);

/* Write a PNG screenshot of the window to @path. */
void wd_screenshot(struct wd_session *s, const char *path);

#endif
