/*
 * ferryctl_out.c - ferryctl's human-readable output (ferryctl_int.h).
 *
 * Any answer can be printed generically: an object as one "key: value" line
 * per member, in the server's order, nested objects indented under their
 * key, arrays of scalars on one line, arrays of objects as "- " items (a
 * YAML-like shape). GET /v1/stats grows with ferryd, so ferryctl knows none
 * of its sections: whatever the server sends is shown. null is "-".
 *
 * Two answers are tables instead: a user's devices and the deepest queues,
 * columns as wide as their widest cell, two spaces apart.
 *
 * Everything from the server goes through ctl_clean() first: a byte below
 * 0x20 (or 0x7f) never reaches the terminal as itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ferryctl_int.h"
#include "common/banned.h"

/* Longest cell or scalar printed (longer ones are cut). */
#define CELL_MAX 256
/* Most columns in a table. */
#define MAX_COLS 6
/* Deepest nesting printed as indented lines; deeper values as compact JSON. */
#define MAX_DEPTH 16

const char *ctl_clean(char *out, size_t outlen, const char *s)
{
	size_t o = 0;

	for (; *s && o + 1 < outlen; s++)
		out[o++] = (unsigned char)*s < ' ' || *s == 0x7f ? '?' : *s;
	out[o] = '\0';
	return out;
}

/* A scalar (or a value too deep to unfold) as text. */
static const char *scalar(const json_t *v, char *out, size_t outlen)
{
	char *dump;

	switch (json_typeof(v)) {
	case JSON_STRING:
		if (!json_string_length(v))
			return "\"\"";
		return ctl_clean(out, outlen, json_string_value(v));
	case JSON_INTEGER:
		snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return out;
	case JSON_REAL:
		snprintf(out, outlen, "%.6g", json_real_value(v));
		return out;
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_NULL:
		return "-";
	default:
		dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		ctl_clean(out, outlen, dump ? dump : "?");
		free(dump);
		return out;
	}
}

static int is_container(const json_t *v)
{
	return json_is_object(v) || json_is_array(v);
}

static void put_object(FILE *f, const json_t *obj, int indent, int dash, int depth);

/* "   " or "   - " before a line: @dash puts the list marker in the last two. */
static void lead(FILE *f, int indent, int dash)
{
	fprintf(f, "%*s%s", dash ? indent - 2 : indent, "", dash ? "- " : "");
}

/* An array's members under its key: scalars on the key's line, else items. */
static void put_array(FILE *f, const char *key, const json_t *arr, int indent, int dash, int depth)
{
	char buf[CELL_MAX], k[CELL_MAX];
	const json_t *v;
	size_t i, nested = 0;

	json_array_foreach(arr, i, v) nested += is_container(v);
	lead(f, indent, dash);
	fprintf(f, "%s:", ctl_clean(k, sizeof(k), key));
	if (!json_array_size(arr) || !nested) {
		fputs(json_array_size(arr) ? " " : " []", f);
		json_array_foreach(arr, i, v)
			fprintf(f, "%s%s", i ? ", " : "", scalar(v, buf, sizeof(buf)));
		fputc('\n', f);
		return;
	}
	fputc('\n', f);
	json_array_foreach(arr, i, v)
	{
		if (json_is_object(v) && json_object_size(v) && depth < MAX_DEPTH) {
			put_object(f, v, indent + 4, 1, depth + 1);
		} else {
			lead(f, indent + 4, 1);
			fprintf(f, "%s\n", scalar(v, buf, sizeof(buf)));
		}
	}
}

static void put_member(FILE *f, const char *key, const json_t *v, int indent, int dash, int depth)
{
	char buf[CELL_MAX], k[CELL_MAX];

	if (json_is_array(v) && depth < MAX_DEPTH) {
		put_array(f, key, v, indent, dash, depth);
		return;
	}
	lead(f, indent, dash);
	ctl_clean(k, sizeof(k), key);
	if (json_is_object(v) && json_object_size(v) && depth < MAX_DEPTH) {
		fprintf(f, "%s:\n", k);
		put_object(f, v, indent + 2, 0, depth + 1);
	} else if (json_is_object(v) && !json_object_size(v)) {
		fprintf(f, "%s: {}\n", k);
	} else {
		fprintf(f, "%s: %s\n", k, scalar(v, buf, sizeof(buf)));
	}
}

static void put_object(FILE *f, const json_t *obj, int indent, int dash, int depth)
{
	const char *key;
	json_t *v;
	int first = 1;

	json_object_foreach((json_t *)obj, key, v)
	{
		put_member(f, key, v, indent, dash && first, depth);
		first = 0;
	}
}

void ctl_print_value(FILE *f, const json_t *v)
{
	char buf[CELL_MAX];

	if (json_is_object(v))
		put_object(f, v, 0, 0, 0);
	else
		fprintf(f, "%s\n", scalar(v, buf, sizeof(buf)));
}

/* ---- tables ---- */

struct table {
	size_t ncols, nrows;
	const char *head[MAX_COLS];
	char **cells; /* nrows * ncols, each malloc'ed */
	size_t width[MAX_COLS];
};

/* Cell @col of the row being filled in (row nrows - 1). Returns -1 if out of memory. */
static int cell(struct table *t, size_t col, const char *text)
{
	char buf[CELL_MAX];
	char *s = strdup(ctl_clean(buf, sizeof(buf), text));
	size_t len;

	if (!s)
		return -1;
	t->cells[(t->nrows - 1) * t->ncols + col] = s;
	len = strlen(s);
	if (len > t->width[col])
		t->width[col] = len;
	return 0;
}

static int table_init(struct table *t, size_t rows, size_t ncols, const char *const *head)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	for (size_t c = 0; c < ncols; c++) {
		t->head[c] = head[c];
		t->width[c] = strlen(head[c]);
	}
	t->cells = calloc(rows * ncols + 1, sizeof(*t->cells));
	return t->cells ? 0 : -1;
}

static void table_print(FILE *f, const struct table *t)
{
	for (size_t r = 0; r <= t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = r ? t->cells[(r - 1) * t->ncols + c] : t->head[c];

			if (c + 1 < t->ncols)
				fprintf(f, "%-*s  ", (int)t->width[c], s ? s : "");
			else
				fprintf(f, "%s\n", s ? s : "");
		}
	}
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* @obj's string member @key, or @dflt when it is null or absent. */
static const char *str_or(const json_t *obj, const char *key, const char *dflt)
{
	const json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : dflt;
}

/* "apns", "apns sandbox", "fcm app=x"; "-" without a push token. */
static void push_cell(const json_t *dev, char *out, size_t outlen)
{
	const json_t *push = json_object_get(dev, "push");
	const char *env = str_or(push, "environment", "production");
	const char *app = str_or(push, "app", NULL);

	if (!json_is_object(push)) {
		snprintf(out, outlen, "-");
		return;
	}
	snprintf(out, outlen, "%s%s%s%s", str_or(push, "provider", "?"),
		 strcmp(env, "production") ? " " : "", strcmp(env, "production") ? env : "",
		 app ? " app=" : "");
	if (app)
		snprintf(out + strlen(out), outlen - strlen(out), "%s", app);
}

int ctl_print_devices(FILE *f, const json_t *answer)
{
	static const char *const head[] = { "ID", "PLATFORM", "PUSH", "CREATED", "LAST SEEN" };
	const json_t *devs = json_object_get(answer, "devices"), *d;
	char push[CELL_MAX];
	struct table t;
	size_t i;
	int rc = 0;

	if (!json_is_array(devs))
		return -1;
	if (!json_array_size(devs)) {
		char user[CELL_MAX];

		fprintf(f, "no devices for user '%s'\n",
			ctl_clean(user, sizeof(user), str_or(answer, "user", "?")));
		return 0;
	}
	if (table_init(&t, json_array_size(devs), 5, head))
		return -1;
	json_array_foreach(devs, i, d)
	{
		t.nrows++;
		push_cell(d, push, sizeof(push));
		if (cell(&t, 0, str_or(d, "device_id", "?")) ||
		    cell(&t, 1, str_or(d, "platform", "?")) || cell(&t, 2, push) ||
		    cell(&t, 3, str_or(d, "created", "?")) ||
		    cell(&t, 4, str_or(d, "last_seen", "never"))) {
			rc = -1;
			break;
		}
	}
	if (!rc)
		table_print(f, &t);
	table_free(&t);
	return rc;
}

int ctl_print_queues(FILE *f, const json_t *answer)
{
	static const char *const head[] = { "DEVICE", "USER", "PENDING", "OLDEST" };
	const json_t *qs = json_object_get(answer, "queues"), *q;
	const json_t *tot = json_object_get(answer, "total");
	char pending[32];
	struct table t;
	size_t i;
	int rc = 0;

	if (!json_is_array(qs))
		return -1;
	if (json_is_object(tot))
		fprintf(f,
			"%" JSON_INTEGER_FORMAT " envelopes waiting for %" JSON_INTEGER_FORMAT
			" devices in all\n",
			json_integer_value(json_object_get(tot, "envelopes")),
			json_integer_value(json_object_get(tot, "devices")));
	if (!json_array_size(qs)) {
		fprintf(f, "no device has envelopes waiting\n");
		return 0;
	}
	if (table_init(&t, json_array_size(qs), 4, head))
		return -1;
	json_array_foreach(qs, i, q)
	{
		t.nrows++;
		snprintf(pending, sizeof(pending), "%" JSON_INTEGER_FORMAT,
			 json_integer_value(json_object_get(q, "pending")));
		if (cell(&t, 0, str_or(q, "device_id", "?")) ||
		    cell(&t, 1, str_or(q, "user", "?")) || cell(&t, 2, pending) ||
		    cell(&t, 3, str_or(q, "oldest_created", "-"))) {
			rc = -1;
			break;
		}
	}
	if (!rc)
		table_print(f, &t);
	table_free(&t);
	return rc;
}
