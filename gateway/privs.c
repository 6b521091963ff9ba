/*
 * privs.c - [gateway] user and group: giving up root once ferryd is set up.
 *
 * ferryd may be started as root so that it can bind privileged ports. Once
 * its listeners are bound and its keys are loaded, nothing it does needs
 * root, and a flaw in the code that parses what devices and the admin API
 * send should not be worth more than an unprivileged account.
 * gateway_privs_drop() switches the whole process to the configured user
 * and group, with no supplementary groups, and then proves that it cannot
 * switch back: setuid(0) and setgid(0) must fail. A process that could
 * become root again, say because it kept a capability, stops instead.
 *
 * The worker, store, push and admin threads are running by then (starting
 * them is what binds the sockets); glibc's set*id calls change the
 * credentials of every thread of the process, not only the caller's, so
 * none of them keeps root.
 *
 * Started as another user, ferryd cannot switch, and an operator who named
 * a user expects ferryd never to run as anyone else: it refuses to start,
 * unless it runs as exactly that user and group already (as a systemd unit
 * with User= and the same name in the config does).
 *
 * What ferryd reads after the switch must be readable by that user: the
 * config file and every credential file on SIGHUP, the APNs certificate and
 * its key for each new connection. gateway_privs_drop() opens each of them
 * once as the new user, so that a file it cannot read fails the start, not
 * the first reload hours later.
 *
 * Messages name the key ("[gateway] user: no user 'ferry' on this system").
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/gateway.h"
#include "common/banned.h"

/* Room for one passwd or group entry from NSS; a group with many members
 * can need more, which is reported, not truncated. */
#define NSS_BUF 16384
/* Supplementary groups looked at after the switch; there should be one. */
#define GROUPS_MAX 64

struct ids {
	uid_t uid;
	gid_t gid;
};

static enum ferry_err lookup_user(const char *name, struct ids *ids, char *err, size_t errlen)
{
	struct passwd pw, *found = NULL;
	char buf[NSS_BUF], tmp[128];
	int e;

	e = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
	if (!found) {
		if (e)
			snprintf(err, errlen, "[gateway] user: cannot look up '%s': %s", name,
				 strerror_r(e, tmp, sizeof(tmp)));
		else
			snprintf(err, errlen, "[gateway] user: no user '%s' on this system", name);
		return FERRY_ECONFIG;
	}
	if (pw.pw_uid == 0) {
		snprintf(err, errlen,
			 "[gateway] user: '%s' is uid 0, so nothing would be given up; leave user "
			 "empty to stay root",
			 name);
		return FERRY_ECONFIG;
	}
	ids->uid = pw.pw_uid;
	ids->gid = pw.pw_gid;
	return FERRY_OK;
}

static enum ferry_err lookup_group(const char *name, gid_t *gid, char *err, size_t errlen)
{
	struct group gr, *found = NULL;
	char buf[NSS_BUF], tmp[128];
	int e;

	e = getgrnam_r(name, &gr, buf, sizeof(buf), &found);
	if (!found) {
		if (e)
			snprintf(err, errlen, "[gateway] group: cannot look up '%s': %s", name,
				 strerror_r(e, tmp, sizeof(tmp)));
		else
			snprintf(err, errlen, "[gateway] group: no group '%s' on this system",
				 name);
		return FERRY_ECONFIG;
	}
	*gid = gr.gr_gid;
	return FERRY_OK;
}

/* The ids [gateway] user and group name; the group may not be root's. */
static enum ferry_err resolve(const struct ferry_config *cfg, struct ids *ids, char *err,
			      size_t errlen)
{
	enum ferry_err rc;

	rc = lookup_user(cfg->gateway.user, ids, err, errlen);
	if (!rc && cfg->gateway.group[0])
		rc = lookup_group(cfg->gateway.group, &ids->gid, err, errlen);
	if (rc)
		return rc;
	if (ids->gid == 0) {
		snprintf(err, errlen,
			 "[gateway] group: '%s' is gid 0, root's group; name another group",
			 cfg->gateway.group[0] ? cfg->gateway.group : cfg->gateway.user);
		return FERRY_ECONFIG;
	}
	return FERRY_OK;
}

/* 1 if the process runs as @ids already: real, effective and saved. */
static int running_as(const struct ids *ids)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (getresuid(&ru, &eu, &su) || getresgid(&rg, &eg, &sg))
		return 0;
	return ru == ids->uid && eu == ids->uid && su == ids->uid && rg == ids->gid &&
	       eg == ids->gid && sg == ids->gid;
}

/* As root, or as the user already; anything else cannot switch. */
static enum ferry_err can_switch(const struct ferry_config *cfg, const struct ids *ids, char *err,
				 size_t errlen)
{
	if (geteuid() == 0 || running_as(ids))
		return FERRY_OK;
	snprintf(err, errlen,
		 "[gateway] user = '%s': ferryd runs as uid %u, not as root, and cannot switch to "
		 "that user (uid %u, gid %u); start it as root or as that user, or leave user "
		 "empty",
		 cfg->gateway.user, (unsigned)geteuid(), (unsigned)ids->uid, (unsigned)ids->gid);
	return FERRY_ECONFIG;
}

enum ferry_err gateway_privs_check(const struct ferry_config *cfg, int switching, char *err,
				   size_t errlen)
{
	struct ids ids;
	enum ferry_err rc;

	if (!cfg->gateway.user[0])
		return FERRY_OK;
	rc = resolve(cfg, &ids, err, errlen);
	if (rc || !switching)
		return rc;
	return can_switch(cfg, &ids, err, errlen);
}

/* After the switch: exactly @ids everywhere, and no way back to root. */
static enum ferry_err verify_dropped(const struct ids *ids, char *err, size_t errlen)
{
	gid_t groups[GROUPS_MAX];
	int n;

	if (!running_as(ids)) {
		snprintf(err, errlen, "[gateway] user: the switch to uid %u gid %u did not take",
			 (unsigned)ids->uid, (unsigned)ids->gid);
		return FERRY_EIO;
	}
	n = getgroups(GROUPS_MAX, groups);
	if (n < 0 || n > 1 || (n == 1 && groups[0] != ids->gid)) {
		snprintf(err, errlen,
			 "[gateway] user: supplementary groups remain after the switch");
		return FERRY_EIO;
	}
	if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || setegid(0) == 0) {
		snprintf(err, errlen,
			 "[gateway] user: ferryd could become root again after the switch "
			 "(a kept capability?); it stops rather than run so");
		return FERRY_EIO;
	}
	return FERRY_OK;
}

/* Open @path once as the new user; @what names its key for the message. */
static enum ferry_err readable(const char *user, const char *what, const char *app,
			       const char *path, char *err, size_t errlen)
{
	char tmp[128];
	int fd;

	if (!path || !path[0])
		return FERRY_OK;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return FERRY_OK;
	}
	snprintf(err, errlen,
		 "as user '%s', ferryd cannot read '%s' (%s%s%s): %s; it reads it again on "
		 "SIGHUP, so that user must be able to (own it, if it is a key)",
		 user, path, what, app[0] ? " of app " : "", app,
		 strerror_r(errno, tmp, sizeof(tmp)));
	return FERRY_ECONFIG;
}

/* Every file ferryd may read again after the switch. */
static enum ferry_err all_readable(const struct ferry_config *cfg, char *err, size_t errlen)
{
	const char *u = cfg->gateway.user;
	enum ferry_err rc = FERRY_OK;

	rc = readable(u, "the config file", "", cfg->path, err, errlen);
	if (!rc)
		rc = readable(u, "[gateway] tls_cert", "", cfg->gateway.tls_cert, err, errlen);
	if (!rc)
		rc = readable(u, "[gateway] tls_key", "", cfg->gateway.tls_key, err, errlen);
	if (!rc && !cfg->admin.token[0])
		rc = readable(u, "[admin] token_file", "", cfg->admin.token_file, err, errlen);
	if (!rc)
		rc = readable(u, "[push] ca_file", "", cfg->push.ca_file, err, errlen);
	for (size_t i = 0; !rc && i < cfg->npush_apps; i++) {
		const struct config_push_app *a = &cfg->push_apps[i];

		rc = readable(u, "APNs key_file", a->name, a->apns.key_file, err, errlen);
		if (!rc)
			rc = readable(u, "APNs cert_file", a->name, a->apns.cert_file, err, errlen);
		if (!rc)
			rc = readable(u, "APNs cert_key", a->name, a->apns.cert_key, err, errlen);
		if (!rc)
			rc = readable(u, "FCM service_account", a->name, a->fcm.service_account,
				      err, errlen);
	}
	return rc;
}

enum ferry_err gateway_privs_drop(const struct ferry_config *cfg, char *err, size_t errlen)
{
	struct ids ids;
	enum ferry_err rc;
	char tmp[128];

	if (!cfg->gateway.user[0])
		return FERRY_OK;
	rc = resolve(cfg, &ids, err, errlen);
	if (!rc)
		rc = can_switch(cfg, &ids, err, errlen);
	if (rc)
		return rc;
	if (geteuid() != 0) {
		log_info("event=privileges_kept user=%s reason=\"running as that user already\"",
			 cfg->gateway.user);
		return all_readable(cfg, err, errlen);
	}
	/* Groups first: once the uid is not root, they cannot be changed. */
	if (setgroups(1, &ids.gid) || setresgid(ids.gid, ids.gid, ids.gid) ||
	    setresuid(ids.uid, ids.uid, ids.uid)) {
		snprintf(err, errlen, "[gateway] user: cannot switch to '%s' (uid %u, gid %u): %s",
			 cfg->gateway.user, (unsigned)ids.uid, (unsigned)ids.gid,
			 strerror_r(errno, tmp, sizeof(tmp)));
		return FERRY_EIO;
	}
	rc = verify_dropped(&ids, err, errlen);
	if (rc)
		return rc;
	log_info("event=privileges_dropped user=%s uid=%u gid=%u", cfg->gateway.user,
		 (unsigned)ids.uid, (unsigned)ids.gid);
	return all_readable(cfg, err, errlen);
}
