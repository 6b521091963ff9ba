/*
 * openapi.c - an OpenAPI 3.0 schema validator over jansson, the lookup of
 * an operation's documented responses, and a check of the document itself
 * (see openapi.h for what is supported).
 *
 * The validator walks the schema and the instance together, keeping the
 * instance's JSON path ("$.devices[2].push") in a fixed buffer that every
 * step restores on its way out, and stops at the first failure. Trials of
 * anyOf/oneOf/not write their messages to buffers of their own, so a
 * branch that fails on purpose leaves nothing behind.
 *
 * Nothing is cached: patterns are compiled where they are used. The
 * answers the tests check are small, and a cache would be one more thing
 * to get wrong.
 */
#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tests/integration/openapi.h"
#include "common/banned.h"

/* Longest JSON path kept in messages (a longer one is cut). */
#define PATH_MAX_LEN 512

/* Deepest schema nesting, $refs included: a cycle that consumes nothing ends here. */
#define SCHEMA_MAX_DEPTH 128

/* Most bytes of a value quoted in a message. */
#define QUOTE_MAX 80

struct vctx {
	const json_t *doc;
	char *err;
	size_t errlen;
	char path[PATH_MAX_LEN];
	size_t plen;
	int depth;
};

/* Keywords that only describe: they never make an instance invalid. */
static const char *const annotations[] = {
	"description", "example",      "default", "title",	   "readOnly", "writeOnly",
	"deprecated",  "externalDocs", "xml",	  "discriminator", NULL,
};

/* Keywords that validate (validate() reads each of them). */
static const char *const assertions[] = {
	"$ref",
	"type",
	"nullable",
	"properties",
	"required",
	"additionalProperties",
	"items",
	"minItems",
	"maxItems",
	"uniqueItems",
	"minProperties",
	"maxProperties",
	"enum",
	"minimum",
	"maximum",
	"exclusiveMinimum",
	"exclusiveMaximum",
	"multipleOf",
	"minLength",
	"maxLength",
	"pattern",
	"format",
	"allOf",
	"anyOf",
	"oneOf",
	"not",
	NULL,
};

static int in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (!strcmp(*list, s))
			return 1;
	return 0;
}

int openapi_keyword_known(const char *k)
{
	return in_list(assertions, k) || in_list(annotations, k) || !strncmp(k, "x-", 2);
}

/* ---- messages ---- */

static const char *type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
		return "integer";
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	default:
		return "null";
	}
}

/* @j as compact JSON, cut to QUOTE_MAX bytes with "...", into @out. */
static const char *quote(const json_t *j, char *out, size_t outlen)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

	if (!s) {
		snprintf(out, outlen, "(%s)", type_name(j));
		return out;
	}
	if (strlen(s) > QUOTE_MAX)
		snprintf(out, outlen, "%.*s...", QUOTE_MAX, s);
	else
		snprintf(out, outlen, "%s", s);
	free(s);
	return out;
}

__attribute__((format(printf, 2, 3))) static int fail(struct vctx *v, const char *fmt, ...)
{
	char msg[OPENAPI_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(v->err, v->errlen, "%s: %s", v->path, msg);
	return -1;
}

/* ---- the instance's path ---- */

static size_t path_push_key(struct vctx *v, const char *key)
{
	size_t was = v->plen;
	const char *c;
	int plain = *key != '\0';

	for (c = key; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '$')
			plain = 0;
	snprintf(v->path + v->plen, sizeof(v->path) - v->plen, plain ? ".%s" : "[\"%s\"]", key);
	v->plen = strlen(v->path);
	return was;
}

static size_t path_push_index(struct vctx *v, size_t i)
{
	size_t was = v->plen;

	snprintf(v->path + v->plen, sizeof(v->path) - v->plen, "[%zu]", i);
	v->plen = strlen(v->path);
	return was;
}

static void path_pop(struct vctx *v, size_t was)
{
	v->plen = was;
	v->path[was] = '\0';
}

/* ---- $ref ---- */

const json_t *openapi_resolve(const json_t *doc, const char *ref)
{
	const json_t *at = doc;
	const char *p;

	if (!ref || ref[0] != '#')
		return NULL;
	p = ref + 1;
	while (at && *p == '/') {
		char key[256];
		size_t k = 0;

		for (p++; *p && *p != '/'; p++) {
			char c = *p;

			if (c == '~' && (p[1] == '0' || p[1] == '1'))
				c = *++p == '0' ? '~' : '/';
			if (k + 1 >= sizeof(key))
				return NULL;
			key[k++] = c;
		}
		key[k] = '\0';
		if (json_is_object(at)) {
			at = json_object_get(at, key);
		} else if (json_is_array(at)) {
			char *end;
			unsigned long i = strtoul(key, &end, 10);

			at = *key && !*end ? json_array_get(at, i) : NULL;
		} else {
			at = NULL;
		}
	}
	return *p ? NULL : at;
}

/* ---- the keywords ---- */

static int validate(struct vctx *v, const json_t *schema, const json_t *inst);

static int type_matches(const char *type, const json_t *inst)
{
	if (!strcmp(type, "integer"))
		return json_is_integer(inst);
	if (!strcmp(type, "number"))
		return json_is_number(inst);
	if (!strcmp(type, "boolean"))
		return json_is_boolean(inst);
	return !strcmp(type, type_name(inst));
}

static int check_type(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *t = json_object_get(schema, "type");
	static const char *const types[] = { "object", "array",	  "string", "integer",
					     "number", "boolean", NULL };

	if (!t)
		return 0;
	if (!json_is_string(t) || !in_list(types, json_string_value(t)))
		return fail(v, "unsupported type in the schema");
	if (!type_matches(json_string_value(t), inst))
		return fail(v, "expected %s, got %s", json_string_value(t), type_name(inst));
	return 0;
}

static int check_enum(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *e = json_object_get(schema, "enum"), *item;
	char q1[QUOTE_MAX + 8], q2[QUOTE_MAX + 8];
	size_t i;

	if (!e)
		return 0;
	if (!json_is_array(e))
		return fail(v, "enum in the schema is not an array");
	json_array_foreach(e, i, item)
	{
		if (json_equal(item, inst))
			return 0;
	}
	return fail(v, "%s is not one of %s", quote(inst, q1, sizeof(q1)),
		    quote(e, q2, sizeof(q2)));
}

/* -1, 0 or 1 as @a is below, equal to or above @b (both numbers). */
static int num_cmp(const json_t *a, const json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b)) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b);

		return (x > y) - (x < y);
	}
	return (json_number_value(a) > json_number_value(b)) -
	       (json_number_value(a) < json_number_value(b));
}

static int check_numbers(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *min = json_object_get(schema, "minimum");
	const json_t *max = json_object_get(schema, "maximum");
	const json_t *mult = json_object_get(schema, "multipleOf");
	int xmin = json_is_true(json_object_get(schema, "exclusiveMinimum"));
	int xmax = json_is_true(json_object_get(schema, "exclusiveMaximum"));
	char q[QUOTE_MAX + 8], b[QUOTE_MAX + 8];

	if (!json_is_number(inst))
		return 0;
	if ((min && !json_is_number(min)) || (max && !json_is_number(max)) ||
	    (mult && (!json_is_number(mult) || json_number_value(mult) <= 0)))
		return fail(v, "minimum, maximum or multipleOf in the schema is not a number");
	if (min && (num_cmp(inst, min) < 0 || (xmin && num_cmp(inst, min) == 0)))
		return fail(v, "%s is less than the %sminimum %s", quote(inst, q, sizeof(q)),
			    xmin ? "exclusive " : "", quote(min, b, sizeof(b)));
	if (max && (num_cmp(inst, max) > 0 || (xmax && num_cmp(inst, max) == 0)))
		return fail(v, "%s is more than the %smaximum %s", quote(inst, q, sizeof(q)),
			    xmax ? "exclusive " : "", quote(max, b, sizeof(b)));
	if (mult && json_is_integer(inst) && json_is_integer(mult) &&
	    json_integer_value(inst) % json_integer_value(mult))
		return fail(v, "%s is not a multiple of %s", quote(inst, q, sizeof(q)),
			    quote(mult, b, sizeof(b)));
	return 0;
}

/* Characters (code points) of the UTF-8 string @s. */
static size_t utf8_len(const char *s, size_t bytes)
{
	size_t n = 0;

	for (size_t i = 0; i < bytes; i++)
		n += ((unsigned char)s[i] & 0xC0) != 0x80;
	return n;
}

static int digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

static int num2(const char *s)
{
	return (s[0] - '0') * 10 + (s[1] - '0');
}

/* RFC 3339 date-time: the shape and the ranges of its fields, not the calendar. */
static int is_date_time(const char *s)
{
	if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
	    !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) ||
	    s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
		return 0;
	if (num2(s + 5) < 1 || num2(s + 5) > 12 || num2(s + 8) < 1 || num2(s + 8) > 31 ||
	    num2(s + 11) > 23 || num2(s + 14) > 59 || num2(s + 17) > 60)
		return 0;
	s += 19;
	if (*s == '.') {
		if (!isdigit((unsigned char)*++s))
			return 0;
		while (isdigit((unsigned char)*s))
			s++;
	}
	if ((*s == 'Z' || *s == 'z') && !s[1])
		return 1;
	return (*s == '+' || *s == '-') && digits(s + 1, 2) && s[3] == ':' && digits(s + 4, 2) &&
	       !s[6] && num2(s + 1) <= 23 && num2(s + 4) <= 59;
}

static int check_format(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *f = json_object_get(schema, "format");
	char q[QUOTE_MAX + 8];

	if (!f)
		return 0;
	if (!json_is_string(f))
		return fail(v, "format in the schema is not a string");
	if (!strcmp(json_string_value(f), "date-time") && json_is_string(inst) &&
	    !is_date_time(json_string_value(inst)))
		return fail(v, "%s is not an RFC 3339 date-time", quote(inst, q, sizeof(q)));
	if (!strcmp(json_string_value(f), "int32") && json_is_integer(inst) &&
	    (json_integer_value(inst) < INT32_MIN || json_integer_value(inst) > INT32_MAX))
		return fail(v, "%s is out of the int32 range", quote(inst, q, sizeof(q)));
	return 0;
}

/* The count keyword @key of @schema into *@n (-1 when absent); 0, or -1 when it is no count. */
static int count_of(struct vctx *v, const json_t *schema, const char *key, json_int_t *n)
{
	const json_t *j = json_object_get(schema, key);

	*n = -1;
	if (!j)
		return 0;
	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return fail(v, "%s in the schema is not a whole number", key);
	*n = json_integer_value(j);
	return 0;
}

static int check_pattern(struct vctx *v, const char *pattern, const json_t *inst)
{
	char q[QUOTE_MAX + 8];
	regex_t re;
	int rc;

	if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB))
		return fail(v, "pattern '%s' in the schema does not compile", pattern);
	rc = regexec(&re, json_string_value(inst), 0, NULL, 0);
	regfree(&re);
	if (rc)
		return fail(v, "%s does not match the pattern '%s'", quote(inst, q, sizeof(q)),
			    pattern);
	return 0;
}

static int check_string(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *pat = json_object_get(schema, "pattern");
	json_int_t min, max;
	size_t n;

	if (count_of(v, schema, "minLength", &min) || count_of(v, schema, "maxLength", &max))
		return -1;
	if (pat && !json_is_string(pat))
		return fail(v, "pattern in the schema is not a string");
	if (!json_is_string(inst))
		return 0;
	n = utf8_len(json_string_value(inst), json_string_length(inst));
	if (min >= 0 && n < (size_t)min)
		return fail(v, "string of %zu characters, shorter than minLength %lld", n,
			    (long long)min);
	if (max >= 0 && n > (size_t)max)
		return fail(v, "string of %zu characters, longer than maxLength %lld", n,
			    (long long)max);
	if (pat && strlen(json_string_value(inst)) != json_string_length(inst))
		return fail(v, "string with a NUL character cannot match a pattern");
	return pat ? check_pattern(v, json_string_value(pat), inst) : 0;
}

static int check_array(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *items = json_object_get(schema, "items"), *item;
	json_int_t min, max;
	size_t i, j;

	if (count_of(v, schema, "minItems", &min) || count_of(v, schema, "maxItems", &max))
		return -1;
	if (!json_is_array(inst))
		return 0;
	if (min >= 0 && json_array_size(inst) < (size_t)min)
		return fail(v, "array of %zu items, fewer than minItems %lld",
			    json_array_size(inst), (long long)min);
	if (max >= 0 && json_array_size(inst) > (size_t)max)
		return fail(v, "array of %zu items, more than maxItems %lld", json_array_size(inst),
			    (long long)max);
	if (json_is_true(json_object_get(schema, "uniqueItems"))) {
		for (i = 0; i < json_array_size(inst); i++)
			for (j = i + 1; j < json_array_size(inst); j++)
				if (json_equal(json_array_get(inst, i), json_array_get(inst, j)))
					return fail(v, "items %zu and %zu are equal (uniqueItems)",
						    i, j);
	}
	if (!items)
		return 0;
	json_array_foreach(inst, i, item)
	{
		size_t was = path_push_index(v, i);
		int rc = validate(v, items, item);

		path_pop(v, was);
		if (rc)
			return rc;
	}
	return 0;
}

static int check_required(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *req = json_object_get(schema, "required"), *name;
	size_t i;

	if (!req)
		return 0;
	if (!json_is_array(req))
		return fail(v, "required in the schema is not an array");
	json_array_foreach(req, i, name)
	{
		if (!json_is_string(name))
			return fail(v, "required in the schema lists a non-string");
		if (!json_object_get(inst, json_string_value(name)))
			return fail(v, "missing required property '%s'", json_string_value(name));
	}
	return 0;
}

static int check_object(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *props = json_object_get(schema, "properties");
	const json_t *extra = json_object_get(schema, "additionalProperties");
	json_int_t min, max;
	const char *key;
	json_t *val;

	if (count_of(v, schema, "minProperties", &min) ||
	    count_of(v, schema, "maxProperties", &max))
		return -1;
	if ((props && !json_is_object(props)) ||
	    (extra && !json_is_boolean(extra) && !json_is_object(extra)))
		return fail(v, "properties or additionalProperties in the schema is malformed");
	if (!json_is_object(inst))
		return 0;
	if (min >= 0 && json_object_size(inst) < (size_t)min)
		return fail(v, "object of %zu properties, fewer than minProperties %lld",
			    json_object_size(inst), (long long)min);
	if (max >= 0 && json_object_size(inst) > (size_t)max)
		return fail(v, "object of %zu properties, more than maxProperties %lld",
			    json_object_size(inst), (long long)max);
	if (check_required(v, schema, inst))
		return -1;
	json_object_foreach((json_t *)inst, key, val)
	{
		const json_t *sub = props ? json_object_get(props, key) : NULL;
		size_t was;
		int rc;

		if (!sub && json_is_false(extra))
			return fail(v, "property '%s' is not allowed (additionalProperties false)",
				    key);
		if (!sub && !json_is_object(extra))
			continue;
		was = path_push_key(v, key);
		rc = validate(v, sub ? sub : extra, val);
		path_pop(v, was);
		if (rc)
			return rc;
	}
	return 0;
}

/* validate() with its message into @buf; the caller's message is left alone. */
static int trial(struct vctx *v, const json_t *schema, const json_t *inst, char *buf, size_t len)
{
	char *err = v->err;
	size_t errlen = v->errlen, was = v->plen;
	int rc;

	v->err = buf;
	v->errlen = len;
	buf[0] = '\0';
	rc = validate(v, schema, inst);
	v->err = err;
	v->errlen = errlen;
	path_pop(v, was);
	return rc;
}

static int check_combinators(struct vctx *v, const json_t *schema, const json_t *inst)
{
	static const char *const names[] = { "allOf", "anyOf", "oneOf" };
	char first[OPENAPI_ERR_MAX], why[OPENAPI_ERR_MAX];
	const json_t *sub;
	size_t i;

	for (int k = 0; k < 3; k++) {
		const json_t *list = json_object_get(schema, names[k]);
		size_t passed = 0;

		if (!list)
			continue;
		if (!json_is_array(list) || !json_array_size(list))
			return fail(v, "%s in the schema is not a non-empty array", names[k]);
		first[0] = '\0';
		json_array_foreach(list, i, sub)
		{
			if (k == 0) {
				if (validate(v, sub, inst))
					return -1;
				continue;
			}
			if (!trial(v, sub, inst, why, sizeof(why)))
				passed++;
			else if (!first[0])
				snprintf(first, sizeof(first), "%s", why);
		}
		if (k == 1 && !passed)
			return fail(v, "matches none of anyOf; the first says: %s", first);
		if (k == 2 && passed != 1)
			return passed ? fail(v, "matches %zu of oneOf, expected exactly one",
					     passed)
				      : fail(v, "matches none of oneOf; the first says: %s", first);
	}
	sub = json_object_get(schema, "not");
	if (sub && !trial(v, sub, inst, why, sizeof(why)))
		return fail(v, "matches the schema of not");
	return 0;
}

static int validate_here(struct vctx *v, const json_t *schema, const json_t *inst)
{
	const json_t *ref = json_object_get(schema, "$ref");
	const json_t *nullable = json_object_get(schema, "nullable");
	const char *key;
	json_t *val;

	if (ref) {
		/* OpenAPI 3.0: members beside a $ref are ignored. */
		const json_t *target = json_is_string(ref)
					       ? openapi_resolve(v->doc, json_string_value(ref))
					       : NULL;

		if (!target)
			return fail(v, "$ref %s names nothing in the document",
				    json_is_string(ref) ? json_string_value(ref)
							: "(not a string)");
		return validate(v, target, inst);
	}
	json_object_foreach((json_t *)schema, key, val)
	{
		if (!openapi_keyword_known(key))
			return fail(v, "unsupported schema keyword '%s'", key);
	}
	if (nullable && !json_is_boolean(nullable))
		return fail(v, "nullable in the schema is not a boolean");
	if (json_is_null(inst) && json_is_true(nullable))
		return 0;
	if (check_type(v, schema, inst) || check_enum(v, schema, inst) ||
	    check_numbers(v, schema, inst) || check_string(v, schema, inst) ||
	    check_format(v, schema, inst) || check_array(v, schema, inst) ||
	    check_object(v, schema, inst) || check_combinators(v, schema, inst))
		return -1;
	return 0;
}

static int validate(struct vctx *v, const json_t *schema, const json_t *inst)
{
	int rc;

	if (!json_is_object(schema))
		return fail(v, "the schema is not an object");
	if (v->depth >= SCHEMA_MAX_DEPTH)
		return fail(v, "schemas nested more than %d deep (a $ref cycle?)",
			    SCHEMA_MAX_DEPTH);
	v->depth++;
	rc = validate_here(v, schema, inst);
	v->depth--;
	return rc;
}

int openapi_validate(const json_t *doc, const json_t *schema, const json_t *inst, char *err,
		     size_t errlen)
{
	struct vctx v = { .doc = doc, .err = err, .errlen = errlen, .path = "$", .plen = 1 };

	err[0] = '\0';
	return validate(&v, schema, inst);
}

int openapi_validate_component(const json_t *doc, const char *name, const json_t *inst, char *err,
			       size_t errlen)
{
	const json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
	const json_t *schema = json_object_get(schemas, name);

	if (!schema) {
		snprintf(err, errlen, "no schema '%s' in #/components/schemas", name);
		return -1;
	}
	return openapi_validate(doc, schema, inst, err, errlen);
}
