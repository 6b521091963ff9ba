/*
 * routes_ui.c - GET /ui: the live dashboard (admin/ui/dashboard.html).
 *
 * The page is compiled into ferryd (build/gen/ui_page.c, made by
 * scripts/embed-file.sh), so a running ferryd serves the page it was built
 * with, without files to install or find, and nothing is read at run time.
 *
 * It is served without the admin token: it holds no data, only the script
 * that asks the operator for the token and reads GET /v1/stats with it,
 * which needs the token like every /v1 route. The headers keep the page to
 * itself: its Content-Security-Policy lets it run its own inline script and
 * style and talk to this ferryd only (no other origin, no plugin, no
 * frame, no form sent anywhere), and it may not be framed by another site.
 */
#include <stddef.h>

#include "admin/admin_int.h"
#include "common/banned.h"

#define HTTP_OK 200

#define UI_CSP                                                                            \
	"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "     \
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; " \
	"frame-ancestors 'none'"

static const struct admin_header ui_headers[] = {
	{ "Content-Security-Policy", UI_CSP },
	{ "X-Content-Type-Options", "nosniff" },
	{ "X-Frame-Options", "DENY" },
	{ "Referrer-Policy", "no-referrer" },
	{ NULL, NULL },
};

void admin_route_ui(const struct admin_req *req, struct admin_reply *rep)
{
	admin_reply_fixed(rep, HTTP_OK, admin_ui_page, admin_ui_page_len,
			  "text/html; charset=utf-8", ui_headers);
}
