/*
 * migrate_int.h - the compiled-in migrations (private to queue/).
 *
 * build/gen/migrations.c is generated from the sql/ files by scripts/embed-sql.sh;
 * versions run 1..queue_migrations_count without gaps, in array order.
 */
#ifndef FERRY_QUEUE_MIGRATE_INT_H
#define FERRY_QUEUE_MIGRATE_INT_H

struct queue_migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct queue_migration queue_migrations[];
extern const int queue_migrations_count;

#endif
