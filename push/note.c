/*
 * note.c - a direct push's APNs payload, built from the operator's note
 * (push_int.h). The note comes from the admin API, so everything in it is
 * checked here: the data object (string values, no "aps"), UTF-8 text, and
 * the size APNs takes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "push/apns.h"
#include "push/push.h"
#include "push/push_int.h"
#include "common/banned.h"

/* A JSON object whose values are all strings, without an "aps" key. */
static json_t *parse_data(const char *text, char *err, size_t errlen)
{
	json_error_t jerr;
	const char *key;
	json_t *obj, *v;

	obj = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj || !json_is_object(obj)) {
		snprintf(err, errlen, "data must be a JSON object");
		json_decref(obj);
		return NULL;
	}
	json_object_foreach(obj, key, v)
	{
		if (!json_is_string(v) || strcmp(key, "aps") == 0) {
			snprintf(err, errlen,
				 "data: every value must be a string, and 'aps' is reserved");
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

/* The APNs body of @n: {"aps":{...}} plus the data's keys. */
char *push_note_apns_payload(const struct push_note *n, int background, char *err, size_t errlen)
{
	json_t *root = NULL, *aps = json_object(), *data = NULL;
	char *text = NULL;
	int bad = !aps;

	root = json_object();
	bad |= !root;
	if (!bad && n->data_json) {
		data = parse_data(n->data_json, err, errlen);
		if (!data)
			goto out;
		bad |= json_object_update(root, data) != 0;
	}
	if (!bad && background) {
		bad |= json_object_set_new(aps, "content-available", json_integer(1)) != 0;
	} else if (!bad) {
		json_t *alert = json_object();

		bad |= !alert;
		if (!bad && n->title)
			bad |= json_object_set_new(alert, "title", json_string(n->title)) != 0;
		if (!bad && n->body)
			bad |= json_object_set_new(alert, "body", json_string(n->body)) != 0;
		if (!bad && (n->title || n->body))
			bad |= json_object_set(aps, "alert", alert) != 0;
		json_decref(alert);
		if (!bad && n->badge >= 0)
			bad |= json_object_set_new(aps, "badge", json_integer(n->badge)) != 0;
		if (!bad && n->sound)
			bad |= json_object_set_new(aps, "sound", json_string(n->sound)) != 0;
	}
	if (!bad)
		bad |= json_object_set(root, "aps", aps) != 0;
	if (!bad)
		text = json_dumps(root, JSON_COMPACT);
	if (!text) {
		snprintf(err, errlen, "title, body and sound must be UTF-8");
		goto out;
	}
	if (strlen(text) > PUSH_APNS_MAX_PAYLOAD) {
		snprintf(err, errlen, "the APNs payload would be %zu bytes, over %d", strlen(text),
			 PUSH_APNS_MAX_PAYLOAD);
		free(text);
		text = NULL;
	}
out:
	json_decref(data);
	json_decref(aps);
	json_decref(root);
	return text;
}
