/*
 * secfile.h - files that hold secrets: the mode a loader accepts.
 *
 * The APNs .p8 key, an APNs certificate's key, a service-account file, the
 * device TLS key and the admin token file may be accessible to their owner
 * only, as sshd and PostgreSQL insist for their keys: a key that the file's
 * group or everyone can read has leaked already, and one they can write can
 * be replaced. ferryd refuses such a file when it loads it (at start and on
 * SIGHUP) instead of warning, because a warning in a log is easy to miss and
 * the fix is one chmod.
 *
 * The check looks at the descriptor the loader goes on to read (fstat), not
 * at the path beforehand, so that the file checked is the file read.
 */
#ifndef FERRY_COMMON_SECFILE_H
#define FERRY_COMMON_SECFILE_H

#include <stddef.h>

#include "common/err.h"

/*
 * Check the open file @fd, read from @path as "@what" (e.g. "APNs key
 * file"), for group or world access. FERRY_OK when neither has any
 * permission bit; FERRY_ECONFIG with a one-line message in @err otherwise,
 * which quotes @path and the chmod that fixes it, e.g.
 *   APNs key file '/etc/ferry/k.p8' has group or world access (mode 0640);
 *   allow its owner only: chmod 600 '/etc/ferry/k.p8'
 * (FERRY_ECONFIG "cannot read ..." too in the unlikely case that fstat
 * fails.) Borrows everything.
 */
enum ferry_err secfile_check(int fd, const char *what, const char *path, char *err,
			     size_t errlen) FERRY_WUR;

#endif
