/*
 * openapi.h - admin/openapi.yaml as something tests can hold answers against.
 *
 * Three parts. openapi_yaml.c reads a YAML document into jansson (libyaml's
 * parser, YAML 1.2 core scalars: null, true/false, integers, floats; quoted
 * and block scalars are strings; no anchors, aliases or tags). openapi.c
 * validates JSON against an OpenAPI 3.0 Schema Object of that document.
 * openapi_doc.c finds the response an operation documents for a status and
 * media type and holds an answer against it, and checks the document as a
 * whole.
 *
 * The validator knows the keywords admin/openapi.yaml uses, and a few
 * neighbours: $ref (local, "#/..."), type (integer is a JSON integer, not a
 * real with no fraction), nullable, properties, required,
 * additionalProperties (true, false or a schema), items, minItems,
 * maxItems, enum, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
 * minLength, maxLength (in characters), pattern (POSIX extended regular
 * expressions, which the document's patterns are), allOf, anyOf, oneOf,
 * not, and format date-time (RFC 3339 shape) and int32 (range); other
 * formats are annotations. So are description, example, default, title,
 * readOnly, writeOnly, deprecated, externalDocs, xml, discriminator and
 * x-* members. Any other keyword is an error: the validator never passes
 * a document by ignoring a rule it does not know.
 *
 * Messages name the JSON path of the offending value and the rule, e.g.
 * "$.push.apns.sent: expected integer, got string", and stop at the first
 * failure. Nothing here fails a test by itself: the harness does
 * (th_check_response()).
 *
 * Ownership: every function borrows its arguments; a returned json_t is a
 * new reference, a returned const json_t * is borrowed from @doc.
 */
#ifndef FERRY_TESTS_OPENAPI_H
#define FERRY_TESTS_OPENAPI_H

#include <stddef.h>

#include <jansson.h>

/* Longest message the functions below write (more is cut). */
#define OPENAPI_ERR_MAX 1024

/*
 * The YAML document @text (@len bytes) as JSON. Mapping keys are strings;
 * a key given twice is an error. Returns a new reference, or NULL with
 * @err set to "line L column C: why".
 */
json_t *openapi_yaml_parse(const char *text, size_t len, char *err, size_t errlen);

/* openapi_yaml_parse() of the file at @path; @err names the file. */
json_t *openapi_yaml_load(const char *path, char *err, size_t errlen);

/* 1 if @k is a Schema Object keyword openapi_validate() knows (or an x-*), else 0. */
int openapi_keyword_known(const char *k);

/*
 * What the JSON pointer @ref ("#/components/schemas/Device") names in
 * @doc, or NULL when it names nothing or is not local.
 */
const json_t *openapi_resolve(const json_t *doc, const char *ref);

/*
 * Check @inst against @schema, a Schema Object of @doc (its $refs are
 * resolved in @doc). Returns 0, or -1 with @err set to "$.path: rule".
 * An unknown keyword or a $ref that names nothing in @schema is an error
 * too, reported the same way.
 */
int openapi_validate(const json_t *doc, const json_t *schema, const json_t *inst, char *err,
		     size_t errlen);

/* openapi_validate() against #/components/schemas/@name. */
int openapi_validate_component(const json_t *doc, const char *name, const json_t *inst, char *err,
			       size_t errlen);

/*
 * Check one answer of the API described by @doc: the request @method on
 * @path (as sent, a query string allowed; or a path template of the
 * document, "/v1/devices/{device}") got @status with Content-Type
 * @content_type (NULL: none) and @body (NUL-terminated; "" for none).
 *
 * The path is matched against the document's templates, a {param} standing
 * for one segment (literal segments win). For a documented operation the
 * status must be among its responses (or "default"); the Content-Type,
 * parameters aside, among that response's media types; a JSON body (an
 * application/json or +json type) must parse, without duplicate keys, and
 * validate against the media type's schema. A response documented without
 * content must have an empty body. HEAD is checked as GET, without a body.
 *
 * Answers that come before routing (http.c: auth, body size, then the
 * route) are held against the document as it describes them: a path the
 * document does not have may only get 401, 404 or 413, as
 * #/components/responses Unauthorized, NotFound and PayloadTooLarge; a
 * method a documented path does not have only 401, 405 or 413, as some
 * operation of the path documents them.
 *
 * Returns 0, or -1 with @err set to "METHOD TEMPLATE STATUS: why".
 */
int openapi_check_response(const json_t *doc, const char *method, const char *path, long status,
			   const char *content_type, const char *body, char *err, size_t errlen);

/*
 * Check the document itself: every Schema Object in it (components, path
 * and operation parameters, request bodies, responses and their headers)
 * uses only keywords openapi_validate() knows, every $ref resolves, every
 * pattern compiles, and every example beside a schema (a schema's
 * `example`, a media type's `example` or `examples`) validates against it.
 * Returns 0, or -1 with @err naming the place ("#/components/schemas/X").
 */
int openapi_check_document(const json_t *doc, char *err, size_t errlen);

#endif
