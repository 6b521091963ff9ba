/*
 * err.h - ferry's one error enum.
 *
 * Every function in ferry that can fail returns an enum ferry_err (or documents
 * why it does not). FERRY_OK is zero so that `if (rc)` reads as "if failed".
 * ferry_strerror() gives a short lower-case text for logs and API errors.
 */
#ifndef FERRY_COMMON_ERR_H
#define FERRY_COMMON_ERR_H

/* Results that callers must look at. */
#define FERRY_WUR __attribute__((warn_unused_result))
#define FERRY_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

enum ferry_err {
	FERRY_OK = 0,
	FERRY_ENOMEM,	 /* out of memory */
	FERRY_EINVAL,	 /* invalid argument or input */
	FERRY_ETOOBIG,	 /* over a configured cap */
	FERRY_EIO,	 /* a system call failed (errno was logged or reported) */
	FERRY_ENOTFOUND, /* no such object */
	FERRY_EEXIST,	 /* object exists already */
	FERRY_EDB,	 /* the database answered with an error */
	FERRY_EUNAVAIL,	 /* a dependency (the database, a push provider) cannot be reached now */
	FERRY_ESCHEMA,	 /* database schema and binary disagree */
	FERRY_ECONFIG,	 /* configuration error */
	FERRY_EPROTO,	 /* protocol violation by a peer */
	FERRY_EAUTH,	 /* authentication failed */
	FERRY_ELIMIT,	 /* a per-object limit was reached */
};

/* Return a static, lower-case description of @err; never NULL. */
const char *ferry_strerror(enum ferry_err err);

/* Log @fmt at fatal level and abort(): for broken invariants only. */
_Noreturn void ferry_panic(const char *fmt, ...) FERRY_PRINTF(1, 2);

#endif
