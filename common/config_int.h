/*
 * config_int.h - what the configuration's files share (common/ only): the
 * table's row type, the table itself, and the helpers the reference
 * (config_ref.c) and the masking of connection strings (conninfo.c) use.
 */
#ifndef FERRY_COMMON_CONFIG_INT_H
#define FERRY_COMMON_CONFIG_INT_H

#include <stddef.h>

#include "common/buf.h"
#include "common/config.h"

#define MASK "********"
#define ENV_NAME_MAX 64

enum type {
	TYPE_STRING,   /* char *, any text */
	TYPE_SECRET,   /* char *, printed as ******** */
	TYPE_CONNINFO, /* char *, libpq connection string, passwords printed as ******** */
	TYPE_UINT,     /* unsigned, decimal */
	TYPE_SIZE,     /* size_t, bytes, optional k/m/g suffix (powers of 1024) */
	TYPE_LOGLEVEL, /* int, enum log_level */
	TYPE_ADDR,     /* char *, host:port, [v6]:port or "" */
	TYPE_CHOICE,   /* char *, one of the words `choices` lists for the row */
	TYPE_APPLE_ID, /* char *, "" or APPLE_ID_LEN of [A-Z0-9] (key ID, team ID) */
};

enum {
	FLAG_RELOADABLE = 1 << 0, /* takes effect on SIGHUP, no restart needed */
	FLAG_SECRET = 1 << 1,	  /* never quoted in messages nor printed */
	FLAG_APP = 1 << 2,	  /* offset is into struct config_push_app */
	FLAG_TOGETHER = 1 << 3,	  /* with the others so flagged in its section: all or none */
};

struct entry {
	const char *section;
	const char *key;
	enum type type;
	const char *def;	     /* parsed like user input */
	unsigned long long min, max; /* UINT and SIZE only */
	size_t offset;		     /* in struct ferry_config, or an app (FLAG_APP) */
	unsigned flags;
	const char *unit; /* shown in the reference, or NULL */
	const char *help;
};

/* Every known section, in the order of the reference. @about is NULL until
 * the section has keys. */
struct section {
	const char *name;
	const char *about;
};

/* The table (config.c) and the sections, in the order of the reference. */
extern const struct entry *const config_table;
extern const size_t config_table_len;
extern const struct section *const config_sections;
extern const size_t config_sections_len;

/* FERRY_<SECTION>_<KEY> for @e into @out. */
void config_env_name(const struct entry *e, char *out, size_t n);

/* A bound of a UINT or SIZE row as the reference shows it. */
void config_format_bound(const struct entry *e, unsigned long long v, char *out, size_t n);

/* The words a CHOICE row accepts, NULL-terminated. */
const char *const *config_choice_words(const struct entry *e);

/*
 * Copy a libpq conninfo to @out with the values of password keywords masked
 * (conninfo.c). FERRY_EINVAL when it cannot be parsed: the caller then masks
 * everything.
 */
enum ferry_err config_mask_conninfo(const char *s, struct buf *out);

#endif
