/*
 * openapi_doc.c - the OpenAPI document as a whole: the response an
 * operation documents for an answer (openapi_check_response()), and the
 * document's own consistency (openapi_check_document()). See openapi.h.
 *
 * Paths are matched segment by segment, a {param} standing for any one
 * segment, the empty one included (the server routes "/v1/users//devices"
 * to its handler, which answers 400). When several templates match, the
 * one with the most literal segments wins, as OpenAPI says.
 */
#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tests/integration/openapi.h"
#include "common/banned.h"

/* Longest JSON pointer kept in the document check's messages. */
#define WHERE_MAX 512

static const char *const methods[] = { "get",  "put",	"post",	 "delete", "options",
				       "head", "patch", "trace", NULL };

/* ---- matching a path ---- */

/* Literal segments of @tmpl when @path matches it, -1 when it does not. */
static int template_match(const char *tmpl, const char *path)
{
	int literals = 0;

	for (;;) {
		const char *te = strchrnul(tmpl, '/'), *pe = strchrnul(path, '/');
		size_t tl = (size_t)(te - tmpl), pl = (size_t)(pe - path);

		if (tl >= 2 && tmpl[0] == '{' && tmpl[tl - 1] == '}') {
			; /* a parameter: any one segment */
		} else if (tl != pl || memcmp(tmpl, path, tl)) {
			return -1;
		} else {
			literals++;
		}
		if (!*te || !*pe)
			return !*te && !*pe ? literals : -1;
		tmpl = te + 1;
		path = pe + 1;
	}
}

/* The path item of @doc that @path matches best, its template into *@tmpl. */
static const json_t *find_path(const json_t *doc, const char *path, const char **tmpl)
{
	const json_t *paths = json_object_get(doc, "paths"), *best = NULL;
	const char *key;
	json_t *item;
	int most = -1;

	*tmpl = NULL;
	json_object_foreach((json_t *)paths, key, item)
	{
		int n = template_match(key, path);

		if (n > most) {
			most = n;
			best = item;
			*tmpl = key;
		}
	}
	return best;
}

/* ---- the response for a status ---- */

/* @obj, or what its $ref names. */
static const json_t *deref(const json_t *doc, const json_t *obj)
{
	const json_t *ref = json_object_get(obj, "$ref");

	return json_is_string(ref) ? openapi_resolve(doc, json_string_value(ref)) : obj;
}

/* The response @op documents for @status: by code, by range ("4XX"), or "default". */
static const json_t *op_response(const json_t *doc, const json_t *op, long status)
{
	const json_t *responses = json_object_get(op, "responses"), *r;
	char key[32];

	snprintf(key, sizeof(key), "%ld", status);
	r = json_object_get(responses, key);
	if (!r) {
		snprintf(key, sizeof(key), "%ldXX", status / 100);
		r = json_object_get(responses, key);
	}
	if (!r)
		r = json_object_get(responses, "default");
	return r ? deref(doc, r) : NULL;
}

/* The statuses @op documents, "200, 401, ...", into @out. */
static const char *documented(const json_t *op, char *out, size_t outlen)
{
	const char *key;
	json_t *r;
	size_t o = 0;

	out[0] = '\0';
	json_object_foreach(json_object_get(op, "responses"), key, r)
	{
		if (o < outlen)
			o += (size_t)snprintf(out + o, outlen - o, "%s%s", o ? ", " : "", key);
	}
	return out;
}

/* The media type of a Content-Type value: parameters and case dropped. */
static void media_type(const char *ctype, char *out, size_t outlen)
{
	size_t o = 0;

	while (*ctype == ' ' || *ctype == '\t')
		ctype++;
	for (; *ctype && *ctype != ';' && o + 1 < outlen; ctype++)
		out[o++] = (char)tolower((unsigned char)*ctype);
	while (o && (out[o - 1] == ' ' || out[o - 1] == '\t'))
		o--;
	out[o] = '\0';
}

static int is_json_media(const char *m)
{
	size_t n = strlen(m);

	return !strcmp(m, "application/json") || (n > 5 && !strcmp(m + n - 5, "+json"));
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Hold the answer against the documented response @resp ("METHOD TMPL STATUS" is @what). */
static int check_content(const json_t *doc, const json_t *resp, const char *what, int head,
			 const char *content_type, const char *body, char *err, size_t errlen)
{
	const json_t *content = json_object_get(resp, "content"), *mt, *schema;
	char media[128], why[OPENAPI_ERR_MAX];
	json_error_t jerr;
	json_t *inst;
	int rc;

	if (!resp)
		return fail(err, errlen, "%s: the response's $ref names nothing", what);
	if (!content || !json_object_size(content)) {
		if (!head && body[0])
			return fail(err, errlen, "%s: documented without a body, got %zu bytes",
				    what, strlen(body));
		return 0;
	}
	if (!content_type)
		return fail(err, errlen, "%s: no Content-Type, documented with a body", what);
	media_type(content_type, media, sizeof(media));
	mt = json_object_get(content, media);
	if (!mt) {
		char any[128];
		const char *slash = strchr(media, '/');

		snprintf(any, sizeof(any), "%.*s/*", slash ? (int)(slash - media) : 0, media);
		mt = json_object_get(content, any);
		if (!mt)
			mt = json_object_get(content, "*/*");
	}
	if (!mt)
		return fail(err, errlen, "%s: Content-Type '%s' is not documented", what, media);
	schema = json_object_get(mt, "schema");
	if (head || !is_json_media(media) || !schema)
		return 0;
	inst = json_loads(body, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!inst)
		return fail(err, errlen, "%s: the body is not JSON: %s at line %d column %d", what,
			    jerr.text, jerr.line, jerr.column);
	rc = openapi_validate(doc, schema, inst, why, sizeof(why));
	json_decref(inst);
	if (rc)
		return fail(err, errlen, "%s %s: %s", what, media, why);
	return 0;
}

/*
 * An answer to a method the path item @item does not have: only what comes
 * before the route (401, 413) or instead of it (405), as some operation of
 * the path documents it.
 */
static const json_t *other_method_response(const json_t *doc, const json_t *item, long status)
{
	for (int i = 0; methods[i]; i++) {
		const json_t *op = json_object_get(item, methods[i]);

		if (op && op_response(doc, op, status))
			return op_response(doc, op, status);
	}
	return NULL;
}

int openapi_check_response(const json_t *doc, const char *method, const char *path, long status,
			   const char *content_type, const char *body, char *err, size_t errlen)
{
	char what[OPENAPI_ERR_MAX / 2], lower[16], bare[1024], list[256];
	const json_t *item, *op, *resp;
	const char *tmpl;
	int head = !strcmp(method, "HEAD");
	size_t i;

	snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(path, "?#"), path);
	for (i = 0; method[i] && i + 1 < sizeof(lower); i++)
		lower[i] = (char)tolower((unsigned char)method[i]);
	lower[i] = '\0';
	item = find_path(doc, bare, &tmpl);
	snprintf(what, sizeof(what), "%.16s %.200s %ld", method, tmpl ? tmpl : bare, status);
	if (!item) {
		static const char *const names[] = {
			[1] = "Unauthorized", [4] = "NotFound", [13] = "PayloadTooLarge"
		};
		const json_t *rs = json_object_get(json_object_get(doc, "components"), "responses");
		long k = status - 400;

		if (k < 0 || k > 13 || !names[k])
			return fail(err, errlen,
				    "%s: no path of the document matches, and only 401, 404 and "
				    "413 can answer any path",
				    what);
		return check_content(doc, deref(doc, json_object_get(rs, names[k])), what, head,
				     content_type, body, err, errlen);
	}
	op = json_object_get(item, lower);
	if (!op && head)
		op = json_object_get(item, "get");
	if (!op) {
		if (status != 401 && status != 405 && status != 413)
			return fail(err, errlen,
				    "%s: the path has no operation %s, and only 401, 405 and 413 "
				    "can answer a method a path does not have",
				    what, lower);
		resp = other_method_response(doc, item, status);
		if (!resp)
			return fail(err, errlen,
				    "%s: no operation of the path documents the status", what);
		return check_content(doc, resp, what, head, content_type, body, err, errlen);
	}
	resp = op_response(doc, op, status);
	if (!resp && !json_object_get(json_object_get(op, "responses"), "default")) {
		return fail(err, errlen, "%s: the status is not documented (documented: %s)", what,
			    documented(op, list, sizeof(list)));
	}
	return check_content(doc, resp, what, head, content_type, body, err, errlen);
}

/* ---- the document's own check ---- */

struct dctx {
	const json_t *doc;
	char *err;
	size_t errlen;
	char where[WHERE_MAX]; /* a JSON pointer, "#/components/schemas/Device" */
	size_t wlen;
};

/* Append a JSON pointer token (~ and / escaped); returns the length to restore. */
static size_t where_push(struct dctx *d, const char *token)
{
	size_t was = d->wlen;

	if (d->wlen + 1 < sizeof(d->where))
		d->where[d->wlen++] = '/';
	for (; *token && d->wlen + 2 < sizeof(d->where); token++) {
		if (*token == '~' || *token == '/') {
			d->where[d->wlen++] = '~';
			d->where[d->wlen++] = *token == '~' ? '0' : '1';
		} else {
			d->where[d->wlen++] = *token;
		}
	}
	d->where[d->wlen] = '\0';
	return was;
}

static void where_pop(struct dctx *d, size_t was)
{
	d->wlen = was;
	d->where[was] = '\0';
}

__attribute__((format(printf, 2, 3))) static int dfail(struct dctx *d, const char *fmt, ...)
{
	char msg[OPENAPI_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(d->err, d->errlen, "%s: %s", d->where, msg);
	return -1;
}

/* @obj, or what its $ref names; fails when that is nothing. */
static int resolved(struct dctx *d, const json_t *obj, const json_t **out)
{
	const json_t *ref = json_object_get(obj, "$ref");

	*out = obj;
	if (!ref)
		return 0;
	*out = json_is_string(ref) ? openapi_resolve(d->doc, json_string_value(ref)) : NULL;
	if (!*out)
		return dfail(d, "$ref names nothing in the document");
	return 0;
}

/* @example, under @key of the current place, must validate against @schema. */
static int example_valid(struct dctx *d, const json_t *schema, const json_t *example,
			 const char *key)
{
	char why[OPENAPI_ERR_MAX];
	size_t was;
	int rc = 0;

	if (!example || !schema)
		return 0;
	was = where_push(d, key);
	if (openapi_validate(d->doc, schema, example, why, sizeof(why)))
		rc = dfail(d, "the example does not match the schema: %s", why);
	where_pop(d, was);
	return rc;
}

static int walk_schema(struct dctx *d, const json_t *schema);

static int type_known(const json_t *t)
{
	static const char *const types[] = { "object", "array",	  "string", "integer",
					     "number", "boolean", NULL };

	for (int i = 0; types[i]; i++)
		if (json_is_string(t) && !strcmp(json_string_value(t), types[i]))
			return 1;
	return 0;
}

static int walk_child(struct dctx *d, const char *key, const json_t *child)
{
	size_t was = where_push(d, key);
	int rc = walk_schema(d, child);

	where_pop(d, was);
	return rc;
}

static int walk_schema(struct dctx *d, const json_t *schema)
{
	static const char *const lists[] = { "allOf", "anyOf", "oneOf", NULL };
	const json_t *target, *j, *props, *pat;
	const char *key;
	regex_t re;
	json_t *val;
	size_t i;

	if (!json_is_object(schema))
		return dfail(d, "a schema must be an object");
	if (json_object_get(schema, "$ref"))
		return resolved(d, schema, &target);
	json_object_foreach((json_t *)schema, key, val)
	{
		if (!openapi_keyword_known(key))
			return dfail(d, "unsupported schema keyword '%s'", key);
	}
	j = json_object_get(schema, "type");
	if (j && !type_known(j))
		return dfail(d,
			     "type must be one of object, array, string, integer, number, boolean");
	pat = json_object_get(schema, "pattern");
	if (json_is_string(pat)) {
		if (regcomp(&re, json_string_value(pat), REG_EXTENDED | REG_NOSUB))
			return dfail(d, "pattern does not compile as a POSIX regular expression");
		regfree(&re);
	}
	if (example_valid(d, schema, json_object_get(schema, "example"), "example"))
		return -1;
	props = json_object_get(schema, "properties");
	json_object_foreach((json_t *)props, key, val)
	{
		size_t was = where_push(d, "properties");
		int rc = walk_child(d, key, val);

		where_pop(d, was);
		if (rc)
			return rc;
	}
	j = json_object_get(schema, "items");
	if (j && walk_child(d, "items", j))
		return -1;
	j = json_object_get(schema, "additionalProperties");
	if (json_is_object(j) && walk_child(d, "additionalProperties", j))
		return -1;
	j = json_object_get(schema, "not");
	if (j && walk_child(d, "not", j))
		return -1;
	for (int k = 0; lists[k]; k++) {
		json_array_foreach(json_object_get(schema, lists[k]), i, val)
		{
			char idx[24];
			size_t was = where_push(d, lists[k]);
			int rc;

			snprintf(idx, sizeof(idx), "%zu", i);
			rc = walk_child(d, idx, val);
			where_pop(d, was);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* A map of media types ("content"): schemas and their examples. */
static int walk_content(struct dctx *d, const json_t *content)
{
	const char *media, *name;
	json_t *mt, *ex;

	json_object_foreach((json_t *)content, media, mt)
	{
		const json_t *schema = json_object_get(mt, "schema"), *exo;
		size_t was = where_push(d, "content"), was2;
		int rc = 0;

		where_push(d, media);
		if (schema)
			rc = walk_child(d, "schema", schema);
		if (!rc)
			rc = example_valid(d, schema, json_object_get(mt, "example"), "example");
		was2 = where_push(d, "examples");
		json_object_foreach(json_object_get(mt, "examples"), name, ex)
		{
			size_t was3 = where_push(d, name);

			rc = rc ? rc : resolved(d, ex, &exo);
			if (!rc)
				rc = example_valid(d, schema, json_object_get(exo, "value"),
						   "value");
			where_pop(d, was3);
		}
		where_pop(d, was2);
		where_pop(d, was);
		if (rc)
			return rc;
	}
	return 0;
}

/* A Parameter or Header object (maybe a $ref): its schema and example. */
static int walk_parameter(struct dctx *d, const json_t *p)
{
	const json_t *schema;

	if (resolved(d, p, &p))
		return -1;
	schema = json_object_get(p, "schema");
	if (schema && walk_child(d, "schema", schema))
		return -1;
	if (example_valid(d, schema, json_object_get(p, "example"), "example"))
		return -1;
	return walk_content(d, json_object_get(p, "content"));
}

static int walk_response(struct dctx *d, const json_t *r)
{
	const char *name;
	json_t *h;

	if (resolved(d, r, &r))
		return -1;
	json_object_foreach(json_object_get(r, "headers"), name, h)
	{
		size_t was = where_push(d, "headers");
		int rc;

		where_push(d, name);
		rc = walk_parameter(d, h);
		where_pop(d, was);
		if (rc)
			return rc;
	}
	return walk_content(d, json_object_get(r, "content"));
}

static int walk_parameters(struct dctx *d, const json_t *list)
{
	json_t *p;
	size_t i;

	json_array_foreach(list, i, p)
	{
		char idx[24];
		size_t was = where_push(d, "parameters");
		int rc;

		snprintf(idx, sizeof(idx), "%zu", i);
		where_push(d, idx);
		rc = walk_parameter(d, p);
		where_pop(d, was);
		if (rc)
			return rc;
	}
	return 0;
}

static int walk_operation(struct dctx *d, const json_t *op)
{
	const json_t *body = json_object_get(op, "requestBody");
	const char *status;
	json_t *r;

	if (walk_parameters(d, json_object_get(op, "parameters")))
		return -1;
	if (body) {
		size_t was = where_push(d, "requestBody");
		int rc = resolved(d, body, &body) ||
			 walk_content(d, json_object_get(body, "content"));

		where_pop(d, was);
		if (rc)
			return -1;
	}
	if (!json_object_size(json_object_get(op, "responses")))
		return dfail(d, "an operation without responses");
	json_object_foreach(json_object_get(op, "responses"), status, r)
	{
		size_t was = where_push(d, "responses");
		int rc;

		where_push(d, status);
		rc = walk_response(d, r);
		where_pop(d, was);
		if (rc)
			return rc;
	}
	return 0;
}

/* Each member of the map under @key of @parent through @walk. */
static int walk_map(struct dctx *d, const json_t *parent, const char *key,
		    int (*walk)(struct dctx *, const json_t *))
{
	const char *name;
	json_t *val;

	json_object_foreach(json_object_get(parent, key), name, val)
	{
		size_t was = where_push(d, key);
		int rc;

		where_push(d, name);
		rc = walk(d, val);
		where_pop(d, was);
		if (rc)
			return rc;
	}
	return 0;
}

static int walk_path_item(struct dctx *d, const json_t *item)
{
	if (walk_parameters(d, json_object_get(item, "parameters")))
		return -1;
	for (int i = 0; methods[i]; i++) {
		const json_t *op = json_object_get(item, methods[i]);
		size_t was;
		int rc;

		if (!op)
			continue;
		was = where_push(d, methods[i]);
		rc = walk_operation(d, op);
		where_pop(d, was);
		if (rc)
			return rc;
	}
	return 0;
}

static int walk_request_body(struct dctx *d, const json_t *b)
{
	return resolved(d, b, &b) || walk_content(d, json_object_get(b, "content")) ? -1 : 0;
}

int openapi_check_document(const json_t *doc, char *err, size_t errlen)
{
	struct dctx d = { .doc = doc, .err = err, .errlen = errlen, .where = "#", .wlen = 1 };
	const json_t *comp = json_object_get(doc, "components");

	err[0] = '\0';
	if (!json_is_object(json_object_get(doc, "paths")))
		return dfail(&d, "the document has no paths");
	if (walk_map(&d, doc, "paths", walk_path_item))
		return -1;
	if (!comp)
		return 0;
	{
		size_t was = where_push(&d, "components");
		int rc = walk_map(&d, comp, "schemas", walk_schema) ||
			 walk_map(&d, comp, "responses", walk_response) ||
			 walk_map(&d, comp, "parameters", walk_parameter) ||
			 walk_map(&d, comp, "headers", walk_parameter) ||
			 walk_map(&d, comp, "requestBodies", walk_request_body);

		where_pop(&d, was);
		return rc ? -1 : 0;
	}
}
