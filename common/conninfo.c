/*
 * conninfo.c - masking the passwords of a libpq connection string, for
 * check-config and messages (config_int.h). Both forms libpq reads:
 * keyword=value pairs and postgresql:// URIs.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config_int.h"
#include "common/banned.h"

static int is_password_key(const char *k, size_t n)
{
	/* "password", and "sslpassword" (the client key's passphrase). */
	return (n == 8 && strncasecmp(k, "password", 8) == 0) ||
	       (n == 11 && strncasecmp(k, "sslpassword", 11) == 0);
}

/* A URI query key, %XX-decoded as libpq does, into @out (NUL-terminated). */
static size_t uri_decode_key(const char *k, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 1 < outlen; i++) {
		if (k[i] == '%' && i + 2 < n && isxdigit((unsigned char)k[i + 1]) &&
		    isxdigit((unsigned char)k[i + 2])) {
			char hex[3] = { k[i + 1], k[i + 2], '\0' };

			out[o++] = (char)strtoul(hex, NULL, 16);
			i += 2;
		} else {
			out[o++] = k[i];
		}
	}
	out[o] = '\0';
	return o;
}

/*
 * postgresql://user:password@host/db?password=x&sslpassword=y: the password
 * in the user info and password query parameters are masked.
 */
static enum ferry_err mask_uri(const char *s, size_t scheme_len, struct buf *out)
{
	const char *p = s + scheme_len, *at, *colon, *q;
	enum ferry_err rc = FERRY_OK;
	char key[32];

	at = p + strcspn(p, "@/");
	if (*at == '@') {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			rc = buf_append(out, s, (size_t)(colon + 1 - s));
			rc = rc ? rc : buf_puts(out, MASK);
			s = at;
		}
		p = at + 1;
	}
	q = strchr(p, '?');
	if (!q || rc)
		return rc ? rc : buf_puts(out, s);
	rc = buf_append(out, s, (size_t)(q + 1 - s));
	for (p = q + 1; !rc && *p;) {
		size_t plen = strcspn(p, "&");
		const char *eq = memchr(p, '=', plen);
		size_t klen = eq ? (size_t)(eq - p) : plen;

		klen = uri_decode_key(p, klen, key, sizeof(key));
		if (eq && is_password_key(key, klen)) {
			rc = buf_append(out, p, (size_t)(eq + 1 - p));
			rc = rc ? rc : buf_puts(out, MASK);
		} else {
			rc = buf_append(out, p, plen);
		}
		p += plen;
		if (!rc && *p == '&')
			rc = buf_append(out, p++, 1);
	}
	return rc;
}

/* Skip a keyword=value value as libpq reads it: 'quoted' or bare, \ escapes. */
static const char *skip_conninfo_value(const char *p)
{
	int quoted = *p == '\'';

	if (quoted)
		p++;
	while (*p) {
		if (quoted && *p == '\'')
			return p + 1;
		if (!quoted && isspace((unsigned char)*p))
			return p;
		if (*p == '\\' && p[1])
			p++;
		p++;
	}
	return p;
}

/*
 * Copy a libpq conninfo to @out with the values of password keywords masked.
 * "dbname" may itself hold a connection string or URI (libpq expands it); such
 * a value is masked whole. FERRY_EINVAL when it cannot be parsed: the caller
 * then masks everything.
 */
enum ferry_err config_mask_conninfo(const char *s, struct buf *out)
{
	const char *p = s, *kw, *kwend, *val, *vend;
	enum ferry_err rc = FERRY_OK;

	if (strncmp(s, "postgresql://", 13) == 0)
		return mask_uri(s, 13, out);
	if (strncmp(s, "postgres://", 11) == 0)
		return mask_uri(s, 11, out);
	while (!rc && *p) {
		kw = p;
		while (isspace((unsigned char)*kw))
			kw++;
		kwend = kw;
		while (*kwend && *kwend != '=' && !isspace((unsigned char)*kwend))
			kwend++;
		if (kwend == kw)
			return *kw ? FERRY_EINVAL : buf_puts(out, p);
		val = kwend + strspn(kwend, " \t\n\r\f\v");
		if (*val++ != '=')
			return FERRY_EINVAL;
		val += strspn(val, " \t\n\r\f\v");
		vend = skip_conninfo_value(val);
		if (is_password_key(kw, (size_t)(kwend - kw)) ||
		    ((size_t)(kwend - kw) == 6 && strncmp(kw, "dbname", 6) == 0 &&
		     (memchr(val, '=', (size_t)(vend - val)) ||
		      memmem(val, (size_t)(vend - val), "://", 3)))) {
			rc = buf_append(out, p, (size_t)(val - p));
			rc = rc ? rc : buf_puts(out, MASK);
		} else {
			rc = buf_append(out, p, (size_t)(vend - p));
		}
		p = vend;
	}
	return rc;
}
