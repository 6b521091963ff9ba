/*
 * openapi_yaml.c - a YAML document into jansson, for the OpenAPI document
 * (see openapi.h).
 *
 * libyaml's event parser drives a recursive descent: a mapping becomes an
 * object, a sequence an array, a scalar a string unless it is plain
 * (unquoted) and reads as a YAML 1.2 core-schema null, boolean, integer or
 * float. Only what JSON can hold is taken: anchors, aliases and tags other
 * than the core ones are refused rather than guessed at, and so are .inf
 * and .nan. Nesting is capped (YAML_MAX_DEPTH), so the recursion is too.
 *
 * The result is the document's data only; comments and styles are gone.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <yaml.h>

#include "tests/integration/openapi.h"
#include "common/banned.h"

/* Deepest nesting of mappings and sequences taken. */
#define YAML_MAX_DEPTH 64

/* Largest document file read. */
#define YAML_MAX_FILE (4 * 1024 * 1024)

struct reader {
	yaml_parser_t parser;
	char *err;
	size_t errlen;
	int failed;
};

static void fail_at(struct reader *rd, const yaml_mark_t *mark, const char *why)
{
	if (rd->failed)
		return;
	rd->failed = 1;
	snprintf(rd->err, rd->errlen, "line %zu column %zu: %s", mark->line + 1, mark->column + 1,
		 why);
}

/* The next event into @ev; 0 (with the error set) when the parser fails. */
static int next(struct reader *rd, yaml_event_t *ev)
{
	if (yaml_parser_parse(&rd->parser, ev))
		return 1;
	if (!rd->failed) {
		rd->failed = 1;
		snprintf(rd->err, rd->errlen, "line %zu column %zu: %s%s%s",
			 rd->parser.problem_mark.line + 1, rd->parser.problem_mark.column + 1,
			 rd->parser.problem ? rd->parser.problem : "invalid YAML",
			 rd->parser.context ? " " : "",
			 rd->parser.context ? rd->parser.context : "");
	}
	return 0;
}

static int all_digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/* A YAML 1.2 core float: [-+]? ( . [0-9]+ | [0-9]+ ( . [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static int is_float(const char *s)
{
	int digits = 0;

	if (*s == '-' || *s == '+')
		s++;
	while (*s >= '0' && *s <= '9')
		s++, digits++;
	if (*s == '.') {
		s++;
		while (*s >= '0' && *s <= '9')
			s++, digits++;
	}
	if (!digits)
		return 0;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!all_digits(s))
			return 0;
		return 1;
	}
	return *s == '\0';
}

static int is_core_tag(const char *tag, const char *name)
{
	static const char prefix[] = "tag:yaml.org,2002:";

	return !strncmp(tag, prefix, sizeof(prefix) - 1) && !strcmp(tag + sizeof(prefix) - 1, name);
}

/* A plain scalar as the core schema reads it. */
static json_t *plain_scalar(struct reader *rd, const yaml_event_t *ev, const char *s)
{
	const char *digits = s + (*s == '-' || *s == '+');

	if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	    !strcmp(s, "NULL"))
		return json_null();
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
		return json_true();
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
		return json_false();
	if (all_digits(digits)) {
		char *end;
		long long v;

		errno = 0;
		v = strtoll(s, &end, 10);
		if (errno == ERANGE) {
			fail_at(rd, &ev->start_mark, "integer out of range");
			return NULL;
		}
		return json_integer((json_int_t)v);
	}
	if (is_float(s))
		return json_real(strtod(s, NULL));
	if (!strcasecmp(digits, ".inf") || !strcasecmp(s, ".nan")) {
		fail_at(rd, &ev->start_mark, "infinity and NaN have no JSON form");
		return NULL;
	}
	if (digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'o')) {
		fail_at(rd, &ev->start_mark, "octal and hexadecimal numbers are not taken");
		return NULL;
	}
	return json_string(s);
}

static json_t *scalar(struct reader *rd, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	const char *tag = (const char *)ev->data.scalar.tag;

	if (tag && strcmp(tag, "!")) {
		if (is_core_tag(tag, "str"))
			return json_stringn(s, ev->data.scalar.length);
		fail_at(rd, &ev->start_mark, "tags other than !!str are not taken");
		return NULL;
	}
	if (strlen(s) != ev->data.scalar.length) {
		fail_at(rd, &ev->start_mark, "a NUL byte in a scalar");
		return NULL;
	}
	if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag)
		return plain_scalar(rd, ev, s);
	return json_string(s);
}

static json_t *node(struct reader *rd, yaml_event_t *ev, int depth);

/* The members of a mapping whose start was just read, up to its end. */
static json_t *mapping(struct reader *rd, int depth)
{
	json_t *obj = json_object();
	yaml_event_t ev;

	if (!obj)
		return NULL;
	for (;;) {
		json_t *val;
		char *key;

		if (!next(rd, &ev))
			goto fail;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return obj;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			fail_at(rd, &ev.start_mark, "mapping keys must be scalars");
			yaml_event_delete(&ev);
			goto fail;
		}
		key = strdup((const char *)ev.data.scalar.value);
		if (!key || json_object_get(obj, key)) {
			fail_at(rd, &ev.start_mark, key ? "duplicate key" : "out of memory");
			free(key);
			yaml_event_delete(&ev);
			goto fail;
		}
		yaml_event_delete(&ev);
		if (!next(rd, &ev)) {
			free(key);
			goto fail;
		}
		val = node(rd, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (!val || json_object_set_new(obj, key, val)) {
			free(key);
			goto fail;
		}
		free(key);
	}
fail:
	json_decref(obj);
	return NULL;
}

static json_t *sequence(struct reader *rd, int depth)
{
	json_t *arr = json_array();
	yaml_event_t ev;

	if (!arr)
		return NULL;
	for (;;) {
		json_t *val;

		if (!next(rd, &ev))
			goto fail;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return arr;
		}
		val = node(rd, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (!val || json_array_append_new(arr, val))
			goto fail;
	}
fail:
	json_decref(arr);
	return NULL;
}

/* The node that begins with @ev (which the caller deletes). */
static json_t *node(struct reader *rd, yaml_event_t *ev, int depth)
{
	if (depth > YAML_MAX_DEPTH) {
		fail_at(rd, &ev->start_mark, "nested too deeply");
		return NULL;
	}
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		if (ev->data.scalar.anchor)
			break;
		return scalar(rd, ev);
	case YAML_MAPPING_START_EVENT:
		if (ev->data.mapping_start.anchor ||
		    (ev->data.mapping_start.tag &&
		     !is_core_tag((const char *)ev->data.mapping_start.tag, "map")))
			break;
		return mapping(rd, depth);
	case YAML_SEQUENCE_START_EVENT:
		if (ev->data.sequence_start.anchor ||
		    (ev->data.sequence_start.tag &&
		     !is_core_tag((const char *)ev->data.sequence_start.tag, "seq")))
			break;
		return sequence(rd, depth);
	default:
		break;
	}
	fail_at(rd, &ev->start_mark,
		ev->type == YAML_ALIAS_EVENT ? "aliases are not taken"
					     : "anchors and tags are not taken");
	return NULL;
}

/* Expect an event of @type; 0 with the error set otherwise. */
static int expect(struct reader *rd, yaml_event_type_t type, const char *what)
{
	yaml_event_t ev;
	int ok;

	if (!next(rd, &ev))
		return 0;
	ok = ev.type == type;
	if (!ok)
		fail_at(rd, &ev.start_mark, what);
	yaml_event_delete(&ev);
	return ok;
}

json_t *openapi_yaml_parse(const char *text, size_t len, char *err, size_t errlen)
{
	struct reader rd = { .err = err, .errlen = errlen };
	json_t *root = NULL;
	yaml_event_t ev;

	err[0] = '\0';
	if (!yaml_parser_initialize(&rd.parser)) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&rd.parser, (const unsigned char *)text, len);
	if (!expect(&rd, YAML_STREAM_START_EVENT, "expected the start of the stream") ||
	    !expect(&rd, YAML_DOCUMENT_START_EVENT, "expected a document"))
		goto out;
	if (!next(&rd, &ev))
		goto out;
	root = node(&rd, &ev, 0);
	yaml_event_delete(&ev);
	if (root && (!expect(&rd, YAML_DOCUMENT_END_EVENT, "expected the end of the document") ||
		     !expect(&rd, YAML_STREAM_END_EVENT, "expected one document only"))) {
		json_decref(root);
		root = NULL;
	}
out:
	yaml_parser_delete(&rd.parser);
	if (!root && !err[0])
		snprintf(err, errlen, "out of memory");
	return root;
}

json_t *openapi_yaml_load(const char *path, char *err, size_t errlen)
{
	char why[OPENAPI_ERR_MAX];
	FILE *f = fopen(path, "rb");
	char *text;
	size_t n;
	json_t *doc;

	if (!f) {
		snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
		return NULL;
	}
	text = malloc(YAML_MAX_FILE + 1);
	if (!text) {
		fclose(f);
		snprintf(err, errlen, "cannot read '%s': out of memory", path);
		return NULL;
	}
	n = fread(text, 1, YAML_MAX_FILE + 1, f);
	if (ferror(f) || n > YAML_MAX_FILE) {
		snprintf(err, errlen, "cannot read '%s': %s", path,
			 ferror(f) ? "read error" : "larger than 4 MiB");
		fclose(f);
		free(text);
		return NULL;
	}
	fclose(f);
	doc = openapi_yaml_parse(text, n, why, sizeof(why));
	free(text);
	if (!doc)
		snprintf(err, errlen, "cannot parse '%s': %s", path, why);
	return doc;
}
