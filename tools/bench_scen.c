/*
 * bench_scen.c - ferry-bench's scenarios (ferry-bench [options] SCENARIO N
 * ...), each printing one JSON line and a human summary, all driven by the
 * event-loop generator (tools/bench_gen.c) on one thread:
 *
 *   idle N       N authenticated idle connections: ferryd's VmRSS before,
 *                with them and after, userspace bytes per connection, and
 *                the kernel's memory per socket (the Slab: line of
 *                /proc/meminfo, both ends of each loopback connection).
 *   pairs P      P sender -> recipient pairs, each sender keeping --window
 *                SENDs un-acknowledged (or paced with --rate), --payload
 *                bytes, --warmup then --duration seconds measured:
 *                envelopes acknowledged "delivered" per second, send ->
 *                ACK and send -> DELIVER (end to end) p50/p99/p999, ferryd's
 *                and the generator's CPU per envelope.
 *   fanout U     one sender's messages to U users of --devices devices
 *                each (one SEND per user, delivered to all its devices):
 *                DELIVERs per second and their end-to-end latency.
 *
 * offline, reconnect-storm and push are in tools/bench_scen_store.c.
 *
 * Timing: every payload starts with a header (magic, sender, the
 * CLOCK_MONOTONIC ns of the SEND), so the recipient measures end to end
 * and the sender, by client id, send -> ACK. Only SENDs made inside the
 * measured window count for latency, and only ACKs that arrive inside it
 * for the rate. ferryd's CPU (--pid) and the generator's own CPU over the
 * window, per envelope, say which side was saturated: the generator's
 * "busy" (CPU seconds per second) near 1.0 means it limited the run.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/bench_gen_int.h"
#include "tools/bench_int.h"
#include "common/banned.h"

#define SC_RING 4096 /* send times kept per sender, by client id */
#define SC_DRAIN_MS 5000
#define SC_LINGER_MS 300

/* ---- shared by the scenarios ---- */

/* One turn of the generator, failing loudly on an epoll error. */
static void turn(struct gen *g, int timeout_ms)
{
	if (gen_run(g, timeout_ms) < 0)
		ferry_panic("ferry-bench: epoll_wait: %s", strerror(errno));
}

/* Sort @s and return its @pct percentile in microseconds (NAN if empty). */
static double pct(struct fb_samples *s, double p, int sorted)
{
	if (!sorted)
		qsort(s->v, s->n, sizeof(s->v[0]), fb_cmp_u64);
	return fb_pct_us(s->v, s->n, p);
}

/* ferryd's VmRSS in bytes (NAN without --pid). */
static double ferryd_rss(const struct fb_opts *o)
{
	long rss, hwm;

	return o->pid && !fb_proc_mem_kb(o->pid, &rss, &hwm) ? (double)rss * 1024.0 : NAN;
}

/* The kernel's slab memory (the Slab: line of /proc/meminfo), in kB; -1 if unreadable. */
static long slab_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Slab: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* ---- idle N ---- */

struct idle {
	struct gen g;
	struct gen_conn *c;
	size_t lost;
};

static void idle_ready(struct gen_conn *c, const struct proto_welcome *w)
{
}

static void idle_frame(struct gen_conn *c, const struct proto_frame *f, uint64_t now)
{
}

static void idle_closed(struct gen_conn *c, int err, uint64_t code)
{
	struct idle *s = c->g->arg;

	if (c->welcomes)
		s->lost++;
}

static int scen_idle(struct fb_opts *o)
{
	static const struct gen_ops ops = { idle_ready, idle_frame, idle_closed };
	struct idle s = { .lost = 0 };
	struct fb_fixed fx;
	struct fb_json j;
	struct fb_cred *creds;
	long kb0 = -1, kb1 = -1, hwm, slab0, slab1;
	long rss_closed = -1;
	size_t n = o->n, ready;
	uint64_t t0, t1;
	double kernel = NAN;
	int rc = 1;

	if (!o->pid) {
		fprintf(stderr, "ferry-bench: idle needs --pid (ferryd's)\n");
		return 2;
	}
	fb_raise_nofile();
	creds = fb_get_creds(o, n, 0);
	s.c = calloc(n, sizeof(*s.c));
	if (!creds || !s.c || gen_init(&s.g, o->host, o->port, o->sources, &ops, &s))
		goto out;
	for (size_t i = 0; i < n; i++)
		gen_conn_init(&s.g, &s.c[i], &creds[i], (uint32_t)i, NULL);
	fb_proc_mem_kb(o->pid, &kb0, &hwm);
	slab0 = slab_kb();
	t0 = fb_now_ns();
	ready = gen_connect_all(&s.g, s.c, n, GEN_CONNECT_INFLIGHT);
	t1 = fb_now_ns();
	/* Let ferryd finish what connecting started, answering its PINGs. */
	for (uint64_t end = fb_now_ns() + 1000000000ull; fb_now_ns() < end;)
		turn(&s.g, 10);
	fb_proc_mem_kb(o->pid, &kb1, &hwm);
	slab1 = slab_kb();
	ready = 0;
	for (size_t i = 0; i < n; i++)
		ready += s.c[i].state == GEN_READY;
	for (size_t i = 0; i < n; i++)
		gen_conn_close(&s.c[i]);
	fb_sleep_ms(1500); /* ferryd notices the closes and frees them */
	fb_proc_mem_kb(o->pid, &rss_closed, &hwm);
	/* Both ends of every connection are on this host: two sockets each. */
	if (slab0 >= 0 && slab1 >= 0 && ready)
		kernel = (double)(slab1 - slab0) * 1024.0 / (2.0 * (double)ready);

	fb_fixed_init(&fx);
	fx.ferryd_rss_bytes = (double)kb1 * 1024.0;
	fx.bytes_per_connection = ready ? (double)(kb1 - kb0) * 1024.0 / (double)ready : NAN;
	fb_json_begin(&j, "idle", o->label);
	fb_json_fixed(&j, &fx);
	fb_json_num(&j, "connections", (double)ready, 0);
	fb_json_num(&j, "wanted", (double)n, 0);
	fb_json_num(&j, "ferryd_rss_before_bytes", (double)kb0 * 1024.0, 0);
	fb_json_num(&j, "ferryd_rss_closed_bytes", (double)rss_closed * 1024.0, 0);
	fb_json_num(&j, "ferryd_hwm_bytes", (double)hwm * 1024.0, 0);
	fb_json_num(&j, "kernel_slab_delta_bytes", (double)(slab1 - slab0) * 1024.0, 0);
	fb_json_num(&j, "kernel_bytes_per_socket", kernel, 0);
	fb_json_num(&j, "connect_s", (double)(t1 - t0) / 1e9, 2);
	fb_json_num(&j, "connects_per_s", (double)ready / ((double)(t1 - t0) / 1e9), 0);
	fb_json_num(&j, "sources", (double)s.g.sources, 0);
	fb_json_num(&j, "lost", (double)s.lost, 0);
	fb_json_end(&j);
	printf("\nidle: %zu of %zu authenticated idle connections to ferryd (pid %ld), from "
	       "%u source addresses\n",
	       ready, n, o->pid, s.g.sources);
	printf("  ferryd VmRSS before / with them / after: %ld / %ld / %ld kB\n", kb0, kb1,
	       rss_closed);
	printf("  userspace bytes per connection:          %.0f\n", fx.bytes_per_connection);
	printf("  kernel slab per socket (both ends):      %.0f B\n", kernel);
	printf("  connected in %.2f s\n", (double)(t1 - t0) / 1e9);
	rc = ready == n && !s.lost ? 0 : 1;
out:
	if (s.c)
		gen_release(&s.g);
	free(s.c);
	free(creds);
	return rc;
}

/* ---- pairs P, fanout U: live traffic ---- */

struct sender {
	const char **to; /* the users it sends to, in turn */
	size_t nto, next;
	unsigned inflight;
	uint64_t sent;
	uint64_t ring[SC_RING]; /* send time by client id */
};

struct traffic {
	const struct fb_opts *o;
	struct gen g;
	struct gen_conn *c; /* receivers first, then senders */
	size_t nrecv, nsend;
	struct sender *snd;
	const char **users; /* the receivers' users, distinct */
	uint8_t *payload;
	int sending;
	uint64_t t_start, pace_ns;
	uint64_t w0, w1; /* the measured window; w1 0 while it runs */
	/* Counted inside the window. */
	uint64_t acked, delivered_acks, delivers;
	uint64_t stored, nacks, lost_conns;
	struct fb_samples ack_lat, e2e_lat;
};

static int in_window(const struct traffic *t, uint64_t ns)
{
	return t->w0 && ns >= t->w0 && (!t->w1 || ns < t->w1);
}

static void top_up(struct traffic *t, struct gen_conn *c, uint64_t now)
{
	struct sender *s = c->arg;
	uint64_t id;

	while (t->sending && s->inflight < t->o->window) {
		if (t->pace_ns && s->sent * t->pace_ns > now - t->t_start)
			break;
		fb_put_u64(t->payload + 8, now);
		fb_put_u32(t->payload + 4, c->index);
		if (gen_conn_send_to(c, s->to[s->next], t->payload, t->o->size, &id))
			break;
		s->next = (s->next + 1) % s->nto;
		s->ring[id & (SC_RING - 1)] = now;
		s->inflight++;
		s->sent++;
	}
}

static void tr_ready(struct gen_conn *c, const struct proto_welcome *w)
{
}

static void tr_frame(struct gen_conn *c, const struct proto_frame *f, uint64_t now)
{
	struct traffic *t = c->g->arg;
	struct sender *s = c->arg;

	switch (f->type) {
	case PROTO_DELIVER: {
		const struct proto_bytes *p = &f->u.deliver.payload;
		uint64_t sent;

		if (p->len < GEN_HDR || fb_get_u32(p->p) != GEN_MAGIC)
			return;
		sent = fb_get_u64(p->p + 8);
		if (in_window(t, now))
			t->delivers++;
		if (in_window(t, sent) && sent <= now && fb_samples_add(&t->e2e_lat, now - sent))
			ferry_panic("ferry-bench: out of memory for samples");
		return;
	}
	case PROTO_ACK: {
		uint64_t sent;

		if (!s || !s->inflight)
			return;
		sent = s->ring[f->u.ack.client_id & (SC_RING - 1)];
		s->inflight--;
		if (in_window(t, now)) {
			t->acked++;
			t->delivered_acks += f->u.ack.status == PROTO_ACK_DELIVERED;
			t->stored += f->u.ack.status != PROTO_ACK_DELIVERED;
		}
		if (in_window(t, sent) && fb_samples_add(&t->ack_lat, now - sent))
			ferry_panic("ferry-bench: out of memory for samples");
		top_up(t, c, now);
		return;
	}
	case PROTO_NACK:
		if (s && s->inflight) {
			s->inflight--;
			t->nacks++;
			top_up(t, c, now);
		}
		return;
	case PROTO_ERROR:
		fprintf(stderr, "ferry-bench: device %" PRIu64 ": ERROR %s\n", c->cred->device_id,
			proto_error_name(f->u.error.code));
		return;
	default:
		return;
	}
}

static void tr_closed(struct gen_conn *c, int err, uint64_t code)
{
	struct traffic *t = c->g->arg;

	if (c->welcomes)
		t->lost_conns++;
}

/* Run the generator until @until (ns), topping every sender up each turn. */
static void run_until(struct traffic *t, uint64_t until)
{
	while (!fb_interrupted) {
		uint64_t now = fb_now_ns();

		if (now >= until)
			break;
		for (size_t i = 0; i < t->nsend; i++)
			if (t->c[t->nrecv + i].state == GEN_READY)
				top_up(t, &t->c[t->nrecv + i], now);
		gen_flush(&t->g);
		turn(&t->g, t->pace_ns ? 1 : 5);
	}
}

static unsigned inflight_total(const struct traffic *t)
{
	unsigned n = 0;

	for (size_t i = 0; i < t->nsend; i++)
		n += t->snd[i].inflight;
	return n;
}

struct tr_result {
	double secs, ferryd_cpu_ns, gen_cpu_ns;
	size_t ready;
};

/* Connect, warm up, measure, drain. */
static int traffic_run(struct traffic *t, struct tr_result *r)
{
	const struct fb_opts *o = t->o;
	size_t n = t->nrecv + t->nsend;
	double c0, c1, g0, g1;

	r->ready = gen_connect_all(&t->g, t->c, n, GEN_CONNECT_INFLIGHT);
	if (r->ready < n) {
		fprintf(stderr, "ferry-bench: %zu of %zu devices connected\n", r->ready, n);
		return -1;
	}
	if (o->rate)
		t->pace_ns = (uint64_t)(1e9 * (double)t->nsend / (double)o->rate);
	t->sending = 1;
	t->t_start = fb_now_ns();
	run_until(t, t->t_start + (uint64_t)(o->warmup * 1e9));
	c0 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	g0 = fb_self_cpu_ns();
	t->w0 = fb_now_ns();
	run_until(t, t->w0 + (uint64_t)(o->duration * 1e9));
	t->w1 = fb_now_ns();
	c1 = o->pid ? fb_proc_cpu_ns(o->pid) : NAN;
	g1 = fb_self_cpu_ns();
	t->sending = 0;
	r->secs = (double)(t->w1 - t->w0) / 1e9;
	r->ferryd_cpu_ns = c1 - c0;
	r->gen_cpu_ns = g1 - g0;
	for (uint64_t end = fb_now_ns() + SC_DRAIN_MS * 1000000ull;
	     inflight_total(t) && fb_now_ns() < end && !fb_interrupted;)
		turn(&t->g, 5);
	/* The delivered receipts of the last envelopes, acknowledged. */
	for (uint64_t end = fb_now_ns() + SC_LINGER_MS * 1000000ull; fb_now_ns() < end;)
		turn(&t->g, 5);
	if (inflight_total(t))
		fprintf(stderr, "ferry-bench: %u SENDs unanswered after the drain\n",
			inflight_total(t));
	return inflight_total(t) ? -1 : 0;
}

static void traffic_free(struct traffic *t)
{
	for (size_t i = 0; t->c && i < t->nrecv + t->nsend; i++)
		gen_conn_close(&t->c[i]);
	gen_release(&t->g);
	free(t->c);
	free(t->snd);
	free(t->users);
	free(t->payload);
	free(t->ack_lat.v);
	free(t->e2e_lat.v);
}

/*
 * Set @t up: @nrecv receivers (o->devices to a user for fanout) and @nsend
 * senders from @creds; sender j sends to receiver user j mod users
 * (pairs), or to every receiver user in turn (@all_users).
 */
static int traffic_setup(struct traffic *t, const struct fb_opts *o, const struct fb_cred *creds,
			 size_t nrecv, size_t nsend, int all_users)
{
	static const struct gen_ops ops = { tr_ready, tr_frame, tr_closed };
	size_t per = o->devices > 1 ? o->devices : 1, nusers = (nrecv + per - 1) / per;

	memset(t, 0, sizeof(*t));
	t->o = o;
	t->nrecv = nrecv;
	t->nsend = nsend;
	t->c = calloc(nrecv + nsend, sizeof(*t->c));
	t->snd = calloc(nsend, sizeof(*t->snd));
	t->users = calloc(nusers, sizeof(*t->users));
	t->payload = calloc(1, o->size);
	if (!t->c || !t->snd || !t->users || !t->payload ||
	    gen_init(&t->g, o->host, o->port, o->sources, &ops, t))
		return -1;
	for (size_t u = 0; u < nusers; u++)
		t->users[u] = creds[u * per].user;
	fb_put_u32(t->payload, GEN_MAGIC);
	for (size_t k = GEN_HDR; k < o->size; k++)
		t->payload[k] = (uint8_t)(k * 131);
	for (size_t i = 0; i < nrecv; i++)
		gen_conn_init(&t->g, &t->c[i], &creds[i], (uint32_t)i, NULL);
	for (size_t j = 0; j < nsend; j++) {
		struct sender *s = &t->snd[j];

		s->to = all_users ? t->users : &t->users[j % nusers];
		s->nto = all_users ? nusers : 1;
		gen_conn_init(&t->g, &t->c[nrecv + j], &creds[nrecv + j], (uint32_t)(nrecv + j), s);
	}
	return 0;
}

/* The JSON line and the summary of a traffic scenario. */
static void traffic_report(struct traffic *t, const char *scenario, const struct tr_result *r)
{
	const struct fb_opts *o = t->o;
	double env = scenario[0] == 'f' ? (double)t->delivers : (double)t->delivered_acks;
	double ack50, ack99, ack999;
	struct fb_fixed fx;
	struct fb_json j;

	fb_fixed_init(&fx);
	fx.envelopes_per_s = env / r->secs;
	fx.p50_us = pct(&t->e2e_lat, 50, 0);
	fx.p99_us = pct(&t->e2e_lat, 99, 1);
	fx.p999_us = pct(&t->e2e_lat, 99.9, 1);
	ack50 = pct(&t->ack_lat, 50, 0);
	ack99 = pct(&t->ack_lat, 99, 1);
	ack999 = pct(&t->ack_lat, 99.9, 1);
	fx.ferryd_rss_bytes = ferryd_rss(o);
	fx.cpu_us_per_envelope = env > 0 ? r->ferryd_cpu_ns / 1000.0 / env : NAN;
	fx.gen_cpu_us_per_envelope = env > 0 ? r->gen_cpu_ns / 1000.0 / env : NAN;
	fb_json_begin(&j, scenario, o->label);
	fb_json_fixed(&j, &fx);
	if (scenario[0] == 'f') {
		fb_json_num(&j, "users", (double)o->n, 0);
		fb_json_num(&j, "devices", (double)(o->devices ? o->devices : 1), 0);
		fb_json_num(&j, "messages_per_s", (double)t->acked / r->secs, 0);
	} else {
		fb_json_num(&j, "pairs", (double)o->n, 0);
	}
	fb_json_num(&j, "window", o->window, 0);
	fb_json_num(&j, "payload", (double)o->size, 0);
	fb_json_num(&j, "rate", o->rate ? (double)o->rate : NAN, 0);
	fb_json_num(&j, "seconds", r->secs, 3);
	fb_json_num(&j, "acked", (double)t->acked, 0);
	fb_json_num(&j, "stored", (double)t->stored, 0);
	fb_json_num(&j, "nacks", (double)t->nacks, 0);
	fb_json_num(&j, "delivers", (double)t->delivers, 0);
	fb_json_num(&j, "ack_p50_us", ack50, 0);
	fb_json_num(&j, "ack_p99_us", ack99, 0);
	fb_json_num(&j, "ack_p999_us", ack999, 0);
	fb_json_num(&j, "ferryd_busy", r->ferryd_cpu_ns / (r->secs * 1e9), 3);
	fb_json_num(&j, "gen_busy", r->gen_cpu_ns / (r->secs * 1e9), 3);
	fb_json_num(&j, "disconnects", (double)t->lost_conns, 0);
	fb_json_end(&j);
	printf("\n%s: %zu sender(s) -> %zu receiver device(s), %zu-byte payloads, window %u%s, "
	       "%.1f s measured\n",
	       scenario, t->nsend, t->nrecv, o->size, o->window, o->rate ? ", paced" : "", r->secs);
	printf("  %-36s %12.0f\n",
	       scenario[0] == 'f' ? "DELIVERs per second" : "envelopes delivered per second",
	       fx.envelopes_per_s);
	printf("  %-36s %5.0f / %5.0f / %5.0f\n", "end to end p50 / p99 / p999 (us)", fx.p50_us,
	       fx.p99_us, fx.p999_us);
	printf("  %-36s %5.0f / %5.0f / %5.0f\n", "send -> ACK p50 / p99 / p999 (us)", ack50, ack99,
	       ack999);
	printf("  %-36s %8.2f (%.2f cores)\n", "ferryd CPU per envelope (us)",
	       fx.cpu_us_per_envelope, r->ferryd_cpu_ns / (r->secs * 1e9));
	printf("  %-36s %8.2f (%.2f cores)\n", "generator CPU per envelope (us)",
	       fx.gen_cpu_us_per_envelope, r->gen_cpu_ns / (r->secs * 1e9));
	if (t->stored || t->nacks || t->lost_conns)
		printf("  stored %" PRIu64 ", NACKs %" PRIu64 ", connections lost %" PRIu64 "\n",
		       t->stored, t->nacks, t->lost_conns);
}

static int scen_traffic(struct fb_opts *o, int fanout)
{
	size_t per = o->devices > 1 ? o->devices : 1;
	size_t nrecv = fanout ? o->n * per : o->n, nsend = fanout ? 1 : o->n;
	struct traffic t;
	struct tr_result r = { 0, 0, 0, 0 };
	struct fb_cred *creds;
	int rc = 1;

	if (o->size < GEN_HDR) {
		fprintf(stderr, "ferry-bench: --payload must be at least %d\n", GEN_HDR);
		return 2;
	}
	if (!fanout)
		o->devices = 1;
	fb_raise_nofile();
	creds = fb_get_creds(o, nrecv + nsend, nrecv);
	if (!creds)
		return 1;
	if (traffic_setup(&t, o, creds, nrecv, nsend, fanout) == 0) {
		rc = traffic_run(&t, &r) ? 1 : 0;
		if (r.ready == nrecv + nsend)
			traffic_report(&t, fanout ? "fanout" : "pairs", &r);
	}
	traffic_free(&t);
	free(creds);
	return rc;
}

/* ---- dispatch ---- */

int fb_run_scenario(struct fb_opts *o)
{
	static const char *const names[] = { "idle",	"pairs",	   "fanout",
					     "offline", "reconnect-storm", "push" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(o->scenario, names[i]))
			break;
	if (!o->n) {
		fprintf(stderr, "ferry-bench: %s needs a count: %s N\n", o->scenario, o->scenario);
		return 2;
	}
	switch (i) {
	case 0:
		return scen_idle(o);
	case 1:
		return scen_traffic(o, 0);
	case 2:
		return scen_traffic(o, 1);
	case 3:
		return fb_scen_offline(o);
	case 4:
		return fb_scen_storm(o);
	case 5:
		return fb_scen_push(o);
	default:
		fprintf(stderr, "ferry-bench: no scenario '%s'\n", o->scenario);
		return 2;
	}
}
