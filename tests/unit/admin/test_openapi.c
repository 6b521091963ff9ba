/*
 * test_openapi.c - unit tests for tests/integration/openapi*.c, what the
 * integration tests hold the admin API's answers against.
 *
 * Each keyword of the validator with a document it must accept and one it
 * must refuse, and the exact message (the JSON path and the rule); YAML
 * read the way the core schema says; the lookup of a documented response
 * by path template, status and media type; and, last, admin/openapi.yaml
 * itself: it loads, passes openapi_check_document(), and describes answers
 * shaped like ferryd's. Run from the top of the tree, as make test does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/openapi.h"
#include "common/banned.h"

/* ---- helpers ---- */

static json_t *yaml(const char *text)
{
	char err[OPENAPI_ERR_MAX];
	json_t *j = openapi_yaml_parse(text, strlen(text), err, sizeof(err));

	if (!j)
		fail_msg("YAML refused: %s\n%s", err, text);
	return j;
}

static json_t *json(const char *text)
{
	json_error_t jerr;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);

	if (!j)
		fail_msg("bad JSON in the test: %s: %s", jerr.text, text);
	return j;
}

/* A document whose components/schemas/T is @schema (YAML, flow style). */
static json_t *doc_with(const char *schema)
{
	char text[4096];

	snprintf(text, sizeof(text),
		 "components:\n  schemas:\n    T: %s\n"
		 "    Int: { type: integer }\n"
		 "    Loop: { $ref: \"#/components/schemas/Loop\" }\n",
		 schema);
	return yaml(text);
}

/* @inst (JSON) against @schema (YAML): valid if @want is NULL, else that exact message. */
static void check(const char *schema, const char *inst, const char *want)
{
	char err[OPENAPI_ERR_MAX];
	json_t *doc = doc_with(schema), *j = json(inst);
	int rc = openapi_validate_component(doc, "T", j, err, sizeof(err));

	if (!want && rc)
		fail_msg("%s against %s: %s", inst, schema, err);
	if (want && !rc)
		fail_msg("%s against %s: accepted, expected '%s'", inst, schema, want);
	if (want && strcmp(err, want))
		fail_msg("%s against %s:\n  got      '%s'\n  expected '%s'", inst, schema, err,
			 want);
	json_decref(j);
	json_decref(doc);
}

#define OK(schema, inst) check(schema, inst, NULL)
#define BAD(schema, inst, msg) check(schema, inst, msg)

/* ---- YAML ---- */

static void test_yaml_scalars(void **state)
{
	json_t *j = yaml("a: 1\nb: -2\nc: 1.5\nd: true\ne: False\nf: null\ng: ~\nh:\n"
			 "i: \"1\"\nj: 'true'\nk: plain text\nl: [1, x, {m: n}]\n"
			 "o: |\n  line one\n  line two\np: >\n  folded\n  text\nq: 1e3\n"
			 "r: !!str 12\ns: \"\"\nt: 0.5\n\"200\": x\n");
	char *s = json_dumps(j, JSON_COMPACT);

	(void)state;
	assert_string_equal(s, "{\"a\":1,\"b\":-2,\"c\":1.5,\"d\":true,\"e\":false,\"f\":null,"
			       "\"g\":null,\"h\":null,\"i\":\"1\",\"j\":\"true\",\"k\":\"plain "
			       "text\",\"l\":[1,\"x\",{\"m\":\"n\"}],\"o\":\"line one\\nline "
			       "two\\n\",\"p\":\"folded text\\n\",\"q\":1000.0,\"r\":\"12\","
			       "\"s\":\"\",\"t\":0.5,\"200\":\"x\"}");
	free(s);
	json_decref(j);
}

static void expect_yaml_error(const char *text, const char *want)
{
	char err[OPENAPI_ERR_MAX];
	json_t *j = openapi_yaml_parse(text, strlen(text), err, sizeof(err));

	if (j)
		fail_msg("YAML accepted, expected '%s': %s", want, text);
	if (!strstr(err, want))
		fail_msg("YAML error '%s' does not say '%s'", err, want);
}

static void test_yaml_refused(void **state)
{
	(void)state;
	expect_yaml_error("a: 1\nb: 2\na: 3\n", "line 3 column 1: duplicate key");
	expect_yaml_error("a: &x 1\nb: *x\n", "anchors and tags are not taken");
	expect_yaml_error("a: [1, 2\n", "line ");
	expect_yaml_error("a: .inf\n", "no JSON form");
	expect_yaml_error("a: 0x1F\n", "hexadecimal");
	expect_yaml_error("a: !!int 3\n", "tags other than !!str");
	expect_yaml_error("a: 1\n---\nb: 2\n", "one document only");
	expect_yaml_error("a: 99999999999999999999\n", "out of range");
	expect_yaml_error("? [a]\n: 1\n", "mapping keys must be scalars");
}

/* ---- the validator, keyword by keyword ---- */

static void test_type(void **state)
{
	(void)state;
	OK("{ type: integer }", "3");
	BAD("{ type: integer }", "3.5", "$: expected integer, got number");
	BAD("{ type: integer }", "\"3\"", "$: expected integer, got string");
	OK("{ type: number }", "3");
	OK("{ type: number }", "3.5");
	BAD("{ type: number }", "true", "$: expected number, got boolean");
	OK("{ type: string }", "\"\"");
	BAD("{ type: string }", "null", "$: expected string, got null");
	OK("{ type: boolean }", "false");
	BAD("{ type: boolean }", "0", "$: expected boolean, got integer");
	OK("{ type: array }", "[]");
	BAD("{ type: array }", "{}", "$: expected array, got object");
	OK("{ type: object }", "{}");
	BAD("{ type: object }", "[]", "$: expected object, got array");
	BAD("{ type: null }", "null", "$: unsupported type in the schema");
	/* Without a type, anything goes. */
	OK("{ description: anything }", "[1, \"a\"]");
}

static void test_nested_path(void **state)
{
	static const char schema[] =
		"{ type: object, properties: { push: { type: object, properties: { apns: "
		"{ type: object, properties: { sent: { type: integer } } } } } } }";

	(void)state;
	OK(schema, "{\"push\":{\"apns\":{\"sent\":1}}}");
	BAD(schema, "{\"push\":{\"apns\":{\"sent\":\"1\"}}}",
	    "$.push.apns.sent: expected integer, got string");
	BAD("{ type: object, additionalProperties: { type: integer } }", "{\"a b\":\"x\"}",
	    "$[\"a b\"]: expected integer, got string");
	BAD("{ type: array, items: { type: array, items: { type: string } } }",
	    "[[\"a\"],[\"b\",2]]", "$[1][1]: expected string, got integer");
}

static void test_nullable(void **state)
{
	(void)state;
	OK("{ type: string, nullable: true }", "null");
	OK("{ type: string, nullable: true }", "\"x\"");
	BAD("{ type: string, nullable: false }", "null", "$: expected string, got null");
	BAD("{ type: string }", "null", "$: expected string, got null");
	/* nullable beside allOf, as the document writes a nullable $ref. */
	OK("{ allOf: [{ $ref: \"#/components/schemas/Int\" }], nullable: true }", "null");
	OK("{ allOf: [{ $ref: \"#/components/schemas/Int\" }], nullable: true }", "4");
	BAD("{ allOf: [{ $ref: \"#/components/schemas/Int\" }] }", "null",
	    "$: expected integer, got null");
	/* An enum that lists null. */
	OK("{ type: string, nullable: true, enum: [a, null] }", "null");
	BAD("{ type: string, nullable: \"yes\" }", "null",
	    "$: nullable in the schema is not a boolean");
}

static void test_properties_required(void **state)
{
	static const char schema[] =
		"{ type: object, required: [a, b], properties: { a: { type: string }, "
		"b: { type: integer, nullable: true } } }";

	(void)state;
	OK(schema, "{\"a\":\"x\",\"b\":null}");
	OK(schema, "{\"a\":\"x\",\"b\":1,\"c\":true}");
	BAD(schema, "{\"a\":\"x\"}", "$: missing required property 'b'");
	BAD(schema, "{\"a\":1,\"b\":1}", "$.a: expected string, got integer");
	/* required and properties only apply to objects. */
	OK("{ required: [a] }", "[1]");
}

static void test_additional_properties(void **state)
{
	static const char closed[] = "{ type: object, additionalProperties: false, properties: { "
				     "a: { type: string } } }";

	(void)state;
	OK(closed, "{\"a\":\"x\"}");
	OK(closed, "{}");
	BAD(closed, "{\"a\":\"x\",\"b\":1}",
	    "$: property 'b' is not allowed (additionalProperties false)");
	OK("{ type: object, additionalProperties: true }", "{\"b\":1}");
	OK("{ type: object }", "{\"b\":1}");
	OK("{ type: object, additionalProperties: { type: integer } }", "{\"x\":1,\"y\":2}");
	BAD("{ type: object, additionalProperties: { type: integer } }", "{\"x\":1,\"y\":\"2\"}",
	    "$.y: expected integer, got string");
	/* A declared property is not an additional one. */
	OK("{ type: object, properties: { a: { type: string } }, additionalProperties: { type: "
	   "integer } }",
	   "{\"a\":\"s\",\"n\":1}");
	BAD("{ type: object, minProperties: 1 }", "{}",
	    "$: object of 0 properties, fewer than minProperties 1");
	BAD("{ type: object, maxProperties: 1 }", "{\"a\":1,\"b\":2}",
	    "$: object of 2 properties, more than maxProperties 1");
}

static void test_items(void **state)
{
	static const char schema[] = "{ type: array, minItems: 1, maxItems: 3, items: { type: "
				     "integer, minimum: 0 } }";

	(void)state;
	OK(schema, "[0, 1, 2]");
	BAD(schema, "[]", "$: array of 0 items, fewer than minItems 1");
	BAD(schema, "[1,2,3,4]", "$: array of 4 items, more than maxItems 3");
	BAD(schema, "[1,-1]", "$[1]: -1 is less than the minimum 0");
	OK("{ type: array, uniqueItems: true }", "[1, 2, \"1\"]");
	BAD("{ type: array, uniqueItems: true }", "[1, 2, 1]",
	    "$: items 0 and 2 are equal (uniqueItems)");
	BAD("{ type: array, minItems: -1 }", "[]",
	    "$: minItems in the schema is not a whole number");
}

static void test_enum(void **state)
{
	(void)state;
	OK("{ type: string, enum: [ok, down] }", "\"down\"");
	BAD("{ type: string, enum: [ok, down] }", "\"draining\"",
	    "$: \"draining\" is not one of [\"ok\",\"down\"]");
	OK("{ type: boolean, enum: [true] }", "true");
	BAD("{ type: boolean, enum: [true] }", "false", "$: false is not one of [true]");
	OK("{ enum: [1, x] }", "1");
	BAD("{ enum: [1, x] }", "1.0", "$: 1.0 is not one of [1,\"x\"]");
}

static void test_numbers(void **state)
{
	(void)state;
	OK("{ type: integer, minimum: 1, maximum: 1000 }", "1");
	OK("{ type: integer, minimum: 1, maximum: 1000 }", "1000");
	BAD("{ type: integer, minimum: 1, maximum: 1000 }", "0", "$: 0 is less than the minimum 1");
	BAD("{ type: integer, minimum: 1, maximum: 1000 }", "1001",
	    "$: 1001 is more than the maximum 1000");
	OK("{ type: number, minimum: 0.5 }", "0.5");
	BAD("{ type: number, minimum: 0.5 }", "0", "$: 0 is less than the minimum 0.5");
	BAD("{ type: number, minimum: 0, exclusiveMinimum: true }", "0",
	    "$: 0 is less than the exclusive minimum 0");
	BAD("{ type: number, maximum: 1, exclusiveMaximum: true }", "1.0",
	    "$: 1.0 is more than the exclusive maximum 1");
	/* Exact for 64-bit integers beyond a double's precision. */
	BAD("{ type: integer, maximum: 9223372036854775806 }", "9223372036854775807",
	    "$: 9223372036854775807 is more than the maximum 9223372036854775806");
	OK("{ type: integer, multipleOf: 5 }", "15");
	BAD("{ type: integer, multipleOf: 5 }", "16", "$: 16 is not a multiple of 5");
	/* Not numbers: not their business. */
	OK("{ minimum: 5 }", "\"x\"");
}

static void test_strings(void **state)
{
	(void)state;
	OK("{ type: string, minLength: 1, maxLength: 3 }", "\"abc\"");
	BAD("{ type: string, minLength: 1, maxLength: 3 }", "\"\"",
	    "$: string of 0 characters, shorter than minLength 1");
	BAD("{ type: string, minLength: 1, maxLength: 3 }", "\"abcd\"",
	    "$: string of 4 characters, longer than maxLength 3");
	/* Characters, not bytes: U+2026 is one. */
	OK("{ type: string, maxLength: 3 }", "\"ab\\u2026\"");
	OK("{ type: string, pattern: \"^[1-9][0-9]{0,18}$\" }", "\"12\"");
	BAD("{ type: string, pattern: \"^[1-9][0-9]{0,18}$\" }", "\"012\"",
	    "$: \"012\" does not match the pattern '^[1-9][0-9]{0,18}$'");
	/* Unanchored, as in ECMA 262: a match anywhere. */
	OK("{ type: string, pattern: \"b+\" }", "\"abba\"");
	OK("{ type: string, pattern: \"^[A-Za-z0-9._:@+-]{1,64}$\" }", "\"a.b:c@d+e-f_\"");
	BAD("{ type: string, pattern: \"^[A-Za-z0-9._:@+-]{1,64}$\" }", "\"a b\"",
	    "$: \"a b\" does not match the pattern '^[A-Za-z0-9._:@+-]{1,64}$'");
	BAD("{ type: string, pattern: \"(\" }", "\"x\"",
	    "$: pattern '(' in the schema does not compile");
}

static void test_format(void **state)
{
	static const char dt[] = "{ type: string, format: date-time }";

	(void)state;
	OK(dt, "\"2026-11-28T15:05:49.123Z\"");
	OK(dt, "\"2026-11-28T15:05:49Z\"");
	OK(dt, "\"2026-11-28t15:05:49.1+01:00\"");
	BAD(dt, "\"2026-11-28 15:05:49Z\"",
	    "$: \"2026-11-28 15:05:49Z\" is not an RFC 3339 date-time");
	BAD(dt, "\"2026-13-28T15:05:49Z\"",
	    "$: \"2026-13-28T15:05:49Z\" is not an RFC 3339 date-time");
	BAD(dt, "\"2026-11-28T15:05:49.Z\"",
	    "$: \"2026-11-28T15:05:49.Z\" is not an RFC 3339 date-time");
	BAD(dt, "\"2026-11-28T15:05:49\"",
	    "$: \"2026-11-28T15:05:49\" is not an RFC 3339 date-time");
	BAD(dt, "\"1700000000\"", "$: \"1700000000\" is not an RFC 3339 date-time");
	OK("{ type: integer, format: int32 }", "2147483647");
	BAD("{ type: integer, format: int32 }", "2147483648",
	    "$: 2147483648 is out of the int32 range");
	/* Other formats only describe. */
	OK("{ type: string, format: byte }", "\"not base64!\"");
	OK("{ type: integer, format: int64 }", "9223372036854775807");
}

static void test_combinators(void **state)
{
	static const char one[] = "{ oneOf: [{ type: integer, minimum: 1 }, { type: string, "
				  "pattern: \"^[1-9][0-9]*$\" }] }";

	(void)state;
	OK(one, "12");
	OK(one, "\"12\"");
	BAD(one, "\"012\"",
	    "$: matches none of oneOf; the first says: $: expected integer, got string");
	BAD("{ oneOf: [{ type: integer }, { type: number }] }", "1",
	    "$: matches 2 of oneOf, expected exactly one");
	OK("{ anyOf: [{ type: integer }, { type: number }] }", "1");
	BAD("{ anyOf: [{ type: integer }, { type: boolean }] }", "\"x\"",
	    "$: matches none of anyOf; the first says: $: expected integer, got string");
	OK("{ allOf: [{ type: integer }, { minimum: 2 }] }", "2");
	BAD("{ allOf: [{ type: integer }, { minimum: 2 }] }", "1",
	    "$: 1 is less than the minimum 2");
	OK("{ not: { type: string } }", "1");
	BAD("{ not: { type: string } }", "\"x\"", "$: matches the schema of not");
	BAD("{ oneOf: [] }", "1", "$: oneOf in the schema is not a non-empty array");
	/* A failed branch leaves the path as it was. */
	BAD("{ type: object, properties: { a: { anyOf: [{ type: object, properties: { b: { type: "
	    "integer } } }, { type: string }] }, c: { type: integer } } }",
	    "{\"a\":\"s\",\"c\":\"x\"}", "$.c: expected integer, got string");
}

static void test_ref(void **state)
{
	(void)state;
	OK("{ $ref: \"#/components/schemas/Int\" }", "1");
	BAD("{ $ref: \"#/components/schemas/Int\" }", "\"1\"", "$: expected integer, got string");
	BAD("{ type: array, items: { $ref: \"#/components/schemas/Nope\" } }", "[1]",
	    "$[0]: $ref #/components/schemas/Nope names nothing in the document");
	BAD("{ $ref: \"other.yaml#/x\" }", "1",
	    "$: $ref other.yaml#/x names nothing in the document");
	BAD("{ $ref: \"#/components/schemas/Loop\" }", "1",
	    "$: schemas nested more than 128 deep (a $ref cycle?)");
}

static void test_unknown_keyword(void **state)
{
	(void)state;
	BAD("{ type: string, patternProperties: {} }", "\"x\"",
	    "$: unsupported schema keyword 'patternProperties'");
	BAD("{ type: object, properties: { a: { type: string, contentEncoding: base64 } } }",
	    "{\"a\":\"x\"}", "$.a: unsupported schema keyword 'contentEncoding'");
	/* Annotations and extensions are fine. */
	OK("{ type: string, description: d, example: e, default: f, x-ferry: 1, title: t }",
	   "\"x\"");
}

/* ---- responses ---- */

static const char api[] = "paths:\n"
			  "  /v1/things/{id}:\n"
			  "    get:\n"
			  "      responses:\n"
			  "        \"200\":\n"
			  "          description: ok\n"
			  "          content:\n"
			  "            application/json:\n"
			  "              schema: { $ref: \"#/components/schemas/Thing\" }\n"
			  "        \"404\": { $ref: \"#/components/responses/NotFound\" }\n"
			  "        \"405\": { $ref: \"#/components/responses/NotFound\" }\n"
			  "    delete:\n"
			  "      responses:\n"
			  "        \"204\": { description: gone }\n"
			  "        5XX: { $ref: \"#/components/responses/NotFound\" }\n"
			  "  /v1/things/special:\n"
			  "    get:\n"
			  "      responses:\n"
			  "        \"200\":\n"
			  "          description: text\n"
			  "          content:\n"
			  "            text/plain:\n"
			  "              schema: { type: string }\n"
			  "        default: { $ref: \"#/components/responses/NotFound\" }\n"
			  "components:\n"
			  "  schemas:\n"
			  "    Thing:\n"
			  "      type: object\n"
			  "      additionalProperties: false\n"
			  "      required: [id]\n"
			  "      properties:\n"
			  "        id: { type: string, pattern: \"^[0-9]+$\" }\n"
			  "    Error:\n"
			  "      type: object\n"
			  "      required: [error]\n"
			  "      properties: { error: { type: string } }\n"
			  "  responses:\n"
			  "    NotFound:\n"
			  "      description: not found\n"
			  "      content:\n"
			  "        application/json:\n"
			  "          schema: { $ref: \"#/components/schemas/Error\" }\n"
			  "    Unauthorized:\n"
			  "      description: no\n"
			  "      content:\n"
			  "        application/json:\n"
			  "          schema: { $ref: \"#/components/schemas/Error\" }\n"
			  "    PayloadTooLarge: { $ref: \"#/components/responses/NotFound\" }\n";

static void answer(const char *method, const char *path, long status, const char *ctype,
		   const char *body, const char *want)
{
	char err[OPENAPI_ERR_MAX];
	json_t *doc = yaml(api);
	int rc = openapi_check_response(doc, method, path, status, ctype, body, err, sizeof(err));

	if (!want && rc)
		fail_msg("%s %s %ld: %s", method, path, status, err);
	if (want && !rc)
		fail_msg("%s %s %ld %s: accepted, expected '%s'", method, path, status, body, want);
	if (want && strcmp(err, want))
		fail_msg("%s %s %ld:\n  got      '%s'\n  expected '%s'", method, path, status, err,
			 want);
	json_decref(doc);
}

static void test_response_lookup(void **state)
{
	static const char json_ct[] = "application/json";

	(void)state;
	answer("GET", "/v1/things/12", 200, json_ct, "{\"id\":\"12\"}", NULL);
	answer("GET", "/v1/things/12?x=1", 200, "application/json; charset=utf-8",
	       "{\"id\":\"12\"}", NULL);
	answer("GET", "/v1/things/{id}", 200, json_ct, "{\"id\":\"12\"}", NULL);
	answer("GET", "/v1/things/12", 200, json_ct, "{\"id\":\"x\"}",
	       "GET /v1/things/{id} 200 application/json: $.id: \"x\" does not match the pattern "
	       "'^[0-9]+$'");
	answer("GET", "/v1/things/12", 200, json_ct, "{\"id\":\"1\",\"more\":1}",
	       "GET /v1/things/{id} 200 application/json: $: property 'more' is not allowed "
	       "(additionalProperties false)");
	answer("GET", "/v1/things/12", 200, json_ct, "{\"id\":\"1\",\"id\":\"2\"}",
	       "GET /v1/things/{id} 200: the body is not JSON: duplicate object key near '\"id\"' "
	       "at line 1 column 14");
	answer("GET", "/v1/things/12", 200, "text/html", "<p>",
	       "GET /v1/things/{id} 200: Content-Type 'text/html' is not documented");
	answer("GET", "/v1/things/12", 200, NULL, "{}",
	       "GET /v1/things/{id} 200: no Content-Type, documented with a body");
	answer("GET", "/v1/things/12", 400, json_ct, "{\"error\":\"x\"}",
	       "GET /v1/things/{id} 400: the status is not documented (documented: 200, 404, "
	       "405)");
	/* A literal segment wins over a parameter. */
	answer("GET", "/v1/things/special", 200, "text/plain; version=0.0.4", "a b", NULL);
	answer("GET", "/v1/things/special", 418, json_ct, "{\"error\":\"teapot\"}", NULL);
	/* A parameter stands for any one segment, the empty one too. */
	answer("GET", "/v1/things/", 404, json_ct, "{\"error\":\"x\"}", NULL);
	/* Ranges; no content means no body. */
	answer("DELETE", "/v1/things/1", 204, NULL, "", NULL);
	answer("DELETE", "/v1/things/1", 204, NULL, "x",
	       "DELETE /v1/things/{id} 204: documented without a body, got 1 bytes");
	answer("DELETE", "/v1/things/1", 503, json_ct, "{\"error\":\"x\"}", NULL);
	answer("DELETE", "/v1/things/1", 503, json_ct, "{}",
	       "DELETE /v1/things/{id} 503 application/json: $: missing required property "
	       "'error'");
	/* HEAD is GET without a body. */
	answer("HEAD", "/v1/things/1", 200, json_ct, "", NULL);
}

static void test_response_before_routing(void **state)
{
	static const char json_ct[] = "application/json";

	(void)state;
	/* A path the document does not have: 401, 404, 413 as the components say. */
	answer("GET", "/nope", 404, json_ct, "{\"error\":\"x\"}", NULL);
	answer("POST", "/v1/nope", 401, json_ct, "{\"error\":\"x\"}", NULL);
	answer("POST", "/v1/nope", 413, json_ct, "{\"error\":\"x\"}", NULL);
	answer("GET", "/nope", 404, json_ct, "{\"err\":\"x\"}",
	       "GET /nope 404 application/json: $: missing required property 'error'");
	answer("GET", "/nope", 200, json_ct, "{}",
	       "GET /nope 200: no path of the document matches, and only 401, 404 and 413 can "
	       "answer any path");
	answer("GET", "/v1/things/1/x", 500, json_ct, "{}",
	       "GET /v1/things/1/x 500: no path of the document matches, and only 401, 404 and "
	       "413 can answer any path");
	/* A method the path does not have: 401, 405, 413 as an operation documents them. */
	answer("PATCH", "/v1/things/1", 405, json_ct, "{\"error\":\"x\"}", NULL);
	answer("PATCH", "/v1/things/1", 200, json_ct, "{\"id\":\"1\"}",
	       "PATCH /v1/things/{id} 200: the path has no operation patch, and only 401, 405 "
	       "and 413 can answer a method a path does not have");
	answer("PATCH", "/v1/things/1", 401, json_ct, "{\"error\":\"x\"}",
	       "PATCH /v1/things/{id} 401: no operation of the path documents the status");
}

/* ---- the document's own check ---- */

static void expect_document(const char *text, const char *want)
{
	char err[OPENAPI_ERR_MAX];
	json_t *doc = yaml(text);
	int rc = openapi_check_document(doc, err, sizeof(err));

	if (!want && rc)
		fail_msg("document refused: %s", err);
	if (want && (!rc || strcmp(err, want)))
		fail_msg("document check:\n  got      '%s'\n  expected '%s'", rc ? err : "(ok)",
			 want);
	json_decref(doc);
}

static void test_document_check(void **state)
{
	(void)state;
	expect_document(api, NULL);
	expect_document("paths: {}\ncomponents:\n  schemas:\n    A: { type: strin }\n",
			"#/components/schemas/A: type must be one of object, array, string, "
			"integer, number, boolean");
	expect_document("paths: {}\ncomponents:\n  schemas:\n    A:\n      type: object\n"
			"      properties:\n        n: { type: integer, description: a, b }\n",
			"#/components/schemas/A/properties/n: unsupported schema keyword 'b'");
	expect_document("paths: {}\ncomponents:\n  schemas:\n    A: { items: { $ref: "
			"\"#/components/schemas/B\" } }\n",
			"#/components/schemas/A/items: $ref names nothing in the document");
	expect_document("paths: {}\ncomponents:\n  schemas:\n    A: { type: string, pattern: "
			"\"[\" }\n",
			"#/components/schemas/A: pattern does not compile as a POSIX regular "
			"expression");
	expect_document("paths: {}\ncomponents:\n  schemas:\n    A: { type: integer, example: "
			"x }\n",
			"#/components/schemas/A/example: the example does not match the schema: "
			"$: expected integer, got string");
	expect_document(
		"paths:\n  /a:\n    get:\n      responses:\n        \"200\":\n"
		"          description: d\n          content:\n            application/json:\n"
		"              schema: { type: object, required: [n] }\n"
		"              example: { m: 1 }\n",
		"#/paths/~1a/get/responses/200/content/application~1json/example: the example "
		"does not match the schema: $: missing required property 'n'");
	expect_document("paths:\n  /a:\n    get:\n      responses: {}\n",
			"#/paths/~1a/get: an operation without responses");
	expect_document("openapi: 3.0.3\n", "#: the document has no paths");
}

/* ---- admin/openapi.yaml ---- */

static json_t *admin_doc(void)
{
	char err[OPENAPI_ERR_MAX];
	const char *path = getenv("FERRY_TEST_OPENAPI");
	json_t *doc =
		openapi_yaml_load(path && *path ? path : "admin/openapi.yaml", err, sizeof(err));

	if (!doc)
		fail_msg("%s", err);
	return doc;
}

static void test_admin_document(void **state)
{
	char err[OPENAPI_ERR_MAX];
	json_t *doc = admin_doc();

	(void)state;
	if (openapi_check_document(doc, err, sizeof(err)))
		fail_msg("admin/openapi.yaml: %s", err);
	/* Answers shaped as ferryd writes them. */
	assert_int_equal(
		openapi_check_response(doc, "GET", "/v1/devices/12", 200, "application/json",
				       "{\"device_id\":\"12\",\"user\":\"alice\",\"platform\":"
				       "\"ios\",\"created\":\"2026-11-28T15:05:49.123Z\","
				       "\"last_seen\":null,\"presence\":{\"online\":false},"
				       "\"queue\":{\"pending\":0,\"oldest_created\":null,"
				       "\"oldest_age_s\":0.0},\"push\":null,\"last_push\":null}",
				       err, sizeof(err)),
		0);
	assert_int_equal(
		openapi_check_response(doc, "GET", "/v1/devices/12", 200, "application/json",
				       "{\"device_id\":12,\"user\":\"alice\",\"platform\":"
				       "\"ios\",\"created\":\"2026-11-28T15:05:49.123Z\","
				       "\"last_seen\":null,\"presence\":{\"online\":false},"
				       "\"queue\":{\"pending\":0,\"oldest_created\":null,"
				       "\"oldest_age_s\":0.0},\"push\":null,\"last_push\":null}",
				       err, sizeof(err)),
		-1);
	assert_string_equal(err, "GET /v1/devices/{device} 200 application/json: $.device_id: "
				 "expected string, got integer");
	assert_int_equal(openapi_check_response(doc, "GET", "/v1/nope", 404, "application/json",
						"{\"error\":{\"code\":\"not_found\",\"message\":"
						"\"route '/v1/nope' not found\"}}",
						err, sizeof(err)),
			 0);
	assert_int_equal(openapi_check_response(doc, "POST", "/healthz", 405, "application/json",
						"{\"error\":{\"code\":\"method_not_allowed\","
						"\"message\":\"x\"}}",
						err, sizeof(err)),
			 0);
	assert_int_equal(openapi_check_response(doc, "GET", "/metrics", 200,
						"text/plain; version=0.0.4; charset=utf-8",
						"ferry_connections 2\n", err, sizeof(err)),
			 0);
	json_decref(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_yaml_scalars),
		cmocka_unit_test(test_yaml_refused),
		cmocka_unit_test(test_type),
		cmocka_unit_test(test_nested_path),
		cmocka_unit_test(test_nullable),
		cmocka_unit_test(test_properties_required),
		cmocka_unit_test(test_additional_properties),
		cmocka_unit_test(test_items),
		cmocka_unit_test(test_enum),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_combinators),
		cmocka_unit_test(test_ref),
		cmocka_unit_test(test_unknown_keyword),
		cmocka_unit_test(test_response_lookup),
		cmocka_unit_test(test_response_before_routing),
		cmocka_unit_test(test_document_check),
		cmocka_unit_test(test_admin_document),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
