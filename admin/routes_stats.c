/*
 * routes_stats.c - GET /v1/stats (JSON) and GET /metrics (the Prometheus
 * text exposition format, version 0.0.4).
 *
 * Both are built from one snapshot of the same counters: the gateway's,
 * summed over its workers (gateway_stats(): per-worker atomics, no lock on
 * the hot path), the offline store's (gateway_store_stats()), and the push
 * service's (push_stats_get()). A section whose module does not run is null
 * in JSON and absent from /metrics.
 *
 * Metric names are ferry_*; counters end in _total; latencies are
 * histograms in seconds (buckets hist_latency_us, 100 us to 60 s).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin_int.h"
#include "common/buf.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/proto.h"
#include "push/push.h"
#include "queue/queue.h"
#include "common/banned.h"

#define HTTP_OK 200

/* The queue totals are a scan of the devices table: /v1/stats and /metrics
 * share one reading for this long (queue_depth_totals()). */
#define TOTALS_MAX_AGE_MS 5000

#ifndef FERRY_VERSION
#define FERRY_VERSION "unknown"
#endif

/* Everything one request reports, read once. */
struct snapshot {
	int has_gw;
	struct gateway_stats gw;
	struct queue_store_stats store;
	struct hist_snap commits;
	int has_totals; /* the database answered */
	struct queue_totals totals;
};

static void snapshot_take(const struct admin_req *req, struct snapshot *s)
{
	memset(s, 0, sizeof(*s));
	s->has_gw = req->gw != NULL;
	gateway_stats(req->gw, &s->gw);
	gateway_store_stats(req->gw, &s->store, &s->commits);
	s->has_totals = queue_depth_totals(req->reg, TOTALS_MAX_AGE_MS, &s->totals) == FERRY_OK;
}

/* ---- GET /v1/stats ---- */

static json_t *quantiles_ms(const struct hist_snap *h)
{
	return json_pack("{s:I,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count, "p50",
			 hist_quantile(h, 0.50) / 1000.0, "p90", hist_quantile(h, 0.90) / 1000.0,
			 "p99", hist_quantile(h, 0.99) / 1000.0, "avg",
			 h->count ? (double)h->sum / (double)h->count / 1000.0 : 0.0);
}

static json_t *connections_json(const struct gateway_stats *g)
{
	json_t *per = json_array();

	for (unsigned i = 0; per && i < g->nworkers && i < GATEWAY_STATS_WORKERS; i++) {
		if (json_array_append_new(per,
					  json_integer((json_int_t)g->worker_connections[i]))) {
			json_decref(per);
			per = NULL;
		}
	}
	if (!per)
		return NULL;
	return json_pack("{s:I,s:I,s:I,s:I,s:o}", "now", (json_int_t)g->connections, "peak",
			 (json_int_t)g->peak_connections, "authenticated",
			 (json_int_t)g->authenticated, "accepted", (json_int_t)g->accepted,
			 "per_worker", per);
}

static json_t *envelopes_json(const struct snapshot *s)
{
	const struct gateway_stats *g = &s->gw;
	json_t *rejected = json_object();

	for (unsigned r = 1; rejected && r <= 5; r++) {
		if (json_object_set_new(rejected, proto_nack_name(r),
					json_integer((json_int_t)g->nacks[r - 1]))) {
			json_decref(rejected);
			rejected = NULL;
		}
	}
	if (!rejected)
		return NULL;
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "accepted", (json_int_t)g->env_accepted,
			 "delivered_online", (json_int_t)g->env_online, "stored",
			 (json_int_t)s->store.put_stored, "drained", (json_int_t)g->env_drained,
			 "expired", (json_int_t)s->store.expired_rows, "rejected", rejected);
}

static json_t *store_json(const struct snapshot *s)
{
	const struct queue_store_stats *st = &s->store;

	return json_pack(
		"{s:b,s:I,s:I,s:f,s:I,s:I,s:o,s:I,s:I,s:I,s:I}", "ready", st->ready, "batches",
		(json_int_t)st->batches, "batch_envelopes", (json_int_t)st->batch_envelopes,
		"batch_avg", st->batches ? (double)st->batch_envelopes / (double)st->batches : 0.0,
		"batch_largest", (json_int_t)st->batch_largest, "batch_failures",
		(json_int_t)st->batch_failures, "commit_ms", quantiles_ms(&s->commits),
		"queued_puts", (json_int_t)st->queued_puts, "inflight_bytes",
		(json_int_t)st->inflight_bytes, "fetched_rows", (json_int_t)st->fetched_rows,
		"deleted_rows", (json_int_t)st->deleted_rows);
}

static json_t *receipts_json(const struct gateway_receipt_stats *r)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:f,s:I,s:I}", "read_in", (json_int_t)r->read_in,
			 "delivered_in", (json_int_t)r->delivered_in, "batches",
			 (json_int_t)r->batches, "ids_out", (json_int_t)r->ids_out, "ids_per_batch",
			 r->batches ? (double)r->ids_out / (double)r->batches : 0.0, "read_off",
			 (json_int_t)r->read_off, "lost", (json_int_t)r->lost);
}

/* Every device's offline queue together, as of a few seconds ago. */
static json_t *queues_json(const struct snapshot *s)
{
	char as_of[ADMIN_TIME_LEN];

	if (!s->has_totals)
		return json_null();
	admin_format_time(s->totals.as_of_ms, as_of);
	return json_pack("{s:I,s:I,s:s}", "devices", (json_int_t)s->totals.devices, "envelopes",
			 (json_int_t)s->totals.envelopes, "as_of", as_of);
}

/* @f(@arg) if the gateway runs, else JSON null. */
static json_t *if_gw(const struct snapshot *s, json_t *j)
{
	if (s->has_gw)
		return j;
	json_decref(j);
	return json_null();
}

void admin_route_stats(const struct admin_req *req, struct admin_reply *rep)
{
	struct snapshot s;
	json_t *push, *j;

	snapshot_take(req, &s);
	push = admin_stats_push_json(req->push);
	j = push ? json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "version", FERRY_VERSION,
			     "uptime_s", (json_int_t)(s.gw.uptime_ms / 1000), "connections",
			     if_gw(&s, connections_json(&s.gw)), "traffic",
			     if_gw(&s, json_pack("{s:I,s:I,s:I,s:I,s:I}", "frames_in",
						 (json_int_t)s.gw.frames_in, "frames_out",
						 (json_int_t)s.gw.frames_out, "bytes_in",
						 (json_int_t)s.gw.bytes_in, "bytes_out",
						 (json_int_t)s.gw.bytes_out, "writes",
						 (json_int_t)s.gw.writes)),
			     "envelopes", if_gw(&s, envelopes_json(&s)), "delivery_latency_ms",
			     if_gw(&s, quantiles_ms(&s.gw.delivery)), "store",
			     if_gw(&s, store_json(&s)), "receipts",
			     if_gw(&s, receipts_json(&s.gw.receipts)), "queues", queues_json(&s),
			     "push", push)
		 : NULL;
	admin_reply_json(rep, HTTP_OK, j);
}

/* ---- GET /metrics ---- */

/* The exposition being written; bad once a line did not fit. */
struct out {
	struct buf b;
	int bad;
};

static void put(struct out *o, const char *fmt, ...) FERRY_PRINTF(2, 3);

static void put(struct out *o, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) || buf_append(&o->b, line, (size_t)n))
		o->bad = 1;
}

static void metric_head(struct out *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric(struct out *b, const char *name, const char *type, const char *help, uint64_t v)
{
	metric_head(b, name, type, help);
	put(b, "%s %" PRIu64 "\n", name, v);
}

/* A histogram of microseconds, in seconds. */
static void histogram(struct out *b, const char *name, const char *help, const char *labels,
		      const struct hist_snap *h, int head)
{
	uint64_t cum = 0;
	const char *sep = *labels ? "," : "";

	if (head)
		metric_head(b, name, "histogram", help);
	for (size_t i = 0; i < h->n; i++) {
		cum += h->counts[i];
		put(b, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, sep,
		    (double)h->bounds[i] / 1e6, cum);
	}
	cum += h->counts[h->n];
	put(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
	put(b, "%s_sum%s%s%s %.6f\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
	    (double)h->sum / 1e6);
	put(b, "%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
	    cum);
}

static void metrics_gateway(struct out *b, const struct snapshot *s)
{
	const struct gateway_stats *g = &s->gw;

	metric(b, "ferry_connections", "gauge", "Device connections open now.", g->connections);
	metric(b, "ferry_connections_peak", "gauge", "Most device connections open at once.",
	       g->peak_connections);
	metric(b, "ferry_devices_authenticated", "gauge",
	       "Device connections past their HELLO now.", g->authenticated);
	metric(b, "ferry_connections_accepted_total", "counter", "Device connections accepted.",
	       g->accepted);
	metric_head(b, "ferry_worker_connections", "gauge", "Device connections per worker now.");
	for (unsigned i = 0; i < g->nworkers && i < GATEWAY_STATS_WORKERS; i++)
		put(b, "ferry_worker_connections{worker=\"%u\"} %" PRIu64 "\n", i,
		    g->worker_connections[i]);
	metric(b, "ferry_frames_received_total", "counter", "Frames decoded from devices.",
	       g->frames_in);
	metric(b, "ferry_frames_sent_total", "counter", "Frames written to devices.",
	       g->frames_out);
	metric(b, "ferry_bytes_received_total", "counter",
	       "Bytes read from device sockets (TLS included).", g->bytes_in);
	metric(b, "ferry_bytes_sent_total", "counter", "Frame bytes written to devices.",
	       g->bytes_out);
	metric(b, "ferry_socket_writes_total", "counter",
	       "Writes to device sockets (system calls; frames are coalesced).", g->writes);
	metric(b, "ferry_envelopes_accepted_total", "counter", "SENDs accepted for routing.",
	       g->env_accepted);
	metric(b, "ferry_envelopes_delivered_online_total", "counter",
	       "Deliveries acknowledged by a connected device.", g->env_online);
	metric(b, "ferry_envelopes_stored_total", "counter",
	       "Envelopes committed to the offline store (per device).", s->store.put_stored);
	metric(b, "ferry_envelopes_drained_total", "counter",
	       "Stored envelopes acknowledged by their device.", g->env_drained);
	metric(b, "ferry_envelopes_expired_total", "counter",
	       "Stored envelopes deleted when their TTL passed.", s->store.expired_rows);
	metric_head(b, "ferry_nacks_total", "counter", "NACKs sent to devices, by reason.");
	for (unsigned r = 1; r <= 5; r++)
		put(b, "ferry_nacks_total{reason=\"%s\"} %" PRIu64 "\n", proto_nack_name(r),
		    g->nacks[r - 1]);
	histogram(b, "ferry_delivery_latency_seconds",
		  "From a live DELIVER's envelope being accepted to its acknowledgement.", "",
		  &g->delivery, 1);
	metric(b, "ferry_receipt_ids_received_total", "counter",
	       "Read receipt ids in devices' RECEIPT frames.", g->receipts.read_in);
	metric(b, "ferry_receipt_ids_delivered_total", "counter",
	       "Delivered receipt ids made from DELIVER_ACKs.", g->receipts.delivered_in);
	metric(b, "ferry_receipt_batches_total", "counter", "DELIVER_RECEIPT envelopes made.",
	       g->receipts.batches);
	metric(b, "ferry_receipt_ids_sent_total", "counter",
	       "Receipt ids in DELIVER_RECEIPT envelopes.", g->receipts.ids_out);
	metric(b, "ferry_receipts_lost_total", "counter",
	       "Delivered receipt ids that could be neither delivered nor stored.",
	       g->receipts.lost);
	metric(b, "ferry_store_ready", "gauge", "1 when the offline store has its database.",
	       (uint64_t)s->store.ready);
	metric(b, "ferry_store_batches_total", "counter", "Write batches committed.",
	       s->store.batches);
	metric(b, "ferry_store_batch_envelopes_total", "counter",
	       "Envelopes (per device) in committed batches.", s->store.batch_envelopes);
	metric(b, "ferry_store_batch_failures_total", "counter", "Write batches not committed.",
	       s->store.batch_failures);
	metric(b, "ferry_store_queued_puts", "gauge", "Store writes waiting for a batch now.",
	       s->store.queued_puts);
	histogram(b, "ferry_store_commit_seconds",
		  "One write batch, from BEGIN sent to COMMIT answered.", "", &s->commits, 1);
}

static void metrics_push(struct out *b, struct push_service *ps)
{
	static const char *const kinds[] = { "sent", "ok", "failed", "retries", "tokens_removed" };
	struct push_stats st;

	if (!ps || push_stats_get(ps, &st))
		return;
	metric(b, "ferry_push_wakes_total", "counter", "Wake-up requests.", st.wakes);
	metric(b, "ferry_push_wakes_coalesced_total", "counter",
	       "Wakes folded into a pending or recent push.", st.wakes_coalesced);
	metric(b, "ferry_push_wakes_gave_up_total", "counter", "Wakes given up after max_attempts.",
	       st.wakes_gave_up);
	metric(b, "ferry_push_pending", "gauge", "Wakes waiting, in flight or cooling down.",
	       st.pending);
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		char name[64];

		snprintf(name, sizeof(name), "ferry_push_%s_total", kinds[k]);
		metric_head(b, name, "counter", "Pushes per app and provider.");
		for (size_t i = 0; i < st.nproviders; i++) {
			const struct push_provider_stats *p = &st.providers[i];
			uint64_t v = k == 0   ? p->sent
				     : k == 1 ? p->ok
				     : k == 2 ? p->failed
				     : k == 3 ? p->retries
					      : p->tokens_removed;

			/* App names are [A-Za-z0-9._-]: safe in a label. */
			put(b, "%s{app=\"%s\",provider=\"%s\"} %" PRIu64 "\n", name, p->app,
			    p->provider, v);
		}
	}
	for (size_t i = 0; i < st.nproviders; i++) {
		const struct push_provider_stats *p = &st.providers[i];
		struct hist_snap h;
		char labels[128];

		hist_snap_init(&h, hist_latency_us, hist_latency_us_n);
		for (size_t k = 0; k <= h.n; k++) {
			h.counts[k] = p->latency_hist[k];
			h.count += p->latency_hist[k];
		}
		h.sum = p->latency_sum_us;
		snprintf(labels, sizeof(labels), "app=\"%s\",provider=\"%s\"", p->app, p->provider);
		histogram(b, "ferry_push_latency_seconds",
			  "Time to a provider's ok answer, per app and provider.", labels, &h,
			  i == 0);
	}
	push_stats_release(&st);
}

void admin_route_metrics(const struct admin_req *req, struct admin_reply *rep)
{
	struct snapshot s;
	struct out b = { .bad = 0 };

	snapshot_take(req, &s);
	buf_init(&b.b, 4 << 20);
	metric_head(&b, "ferry_build_info", "gauge", "The running version.");
	put(&b, "ferry_build_info{version=\"%s\"} 1\n", FERRY_VERSION);
	metric(&b, "ferry_uptime_seconds", "gauge", "Seconds since the gateway started.",
	       s.gw.uptime_ms / 1000);
	if (s.has_gw)
		metrics_gateway(&b, &s);
	if (s.has_totals) {
		metric(&b, "ferry_queue_envelopes", "gauge",
		       "Envelopes waiting in every offline queue (read at most 5 s ago).",
		       s.totals.envelopes);
		metric(&b, "ferry_queue_devices", "gauge",
		       "Devices with envelopes waiting (read at most 5 s ago).", s.totals.devices);
	}
	metrics_push(&b, req->push);
	if (b.bad) {
		buf_release(&b.b);
		admin_reply_error(rep, 500, "out of memory");
		return;
	}
	admin_reply_text(rep, HTTP_OK, buf_detach(&b.b),
			 "text/plain; version=0.0.4; charset=utf-8");
}
