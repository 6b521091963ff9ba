/*
 * gateway.c - starting and stopping the gateway: worker threads, their
 * loops, listening sockets and mailboxes.
 *
 * Listening: every worker has its own socket on each address, bound with
 * SO_REUSEPORT, and the kernel spreads new connections over them; no accept
 * lock, no hand-off between threads. Workers poll their sockets and accept
 * themselves (on_listener()), to handle running out of descriptors. The
 * sockets are made on the calling thread, so that a bad address fails
 * gateway_start() with a clear message before any thread runs.
 *
 * Stopping: a STOP message makes each worker close its listeners and
 * connections (ERROR shutting_down) and its mailbox; its loop then runs out
 * of handles and the thread ends. Threadpool jobs still running finish first
 * (uv_run waits for them).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/gateway_int.h"
#include "common/banned.h"

#define LISTEN_BACKLOG 1024
/* At most one event=accept_failed line per worker in this many ms. */
#define ACCEPT_LOG_MS 10000
/* Connections accepted in one go before the loop's other work gets a turn. */
#define ACCEPT_BATCH 64
/* How long a worker out of descriptors stops accepting. */
#define ACCEPT_PAUSE_MS 100
#define MAX_WORKERS 64

uint64_t gw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- messages ---- */

static void handle_msg(struct gw_worker *w, struct gw_msg *m);

void gw_post(struct gateway *gw, struct gw_worker *self, unsigned index, struct gw_msg *m)
{
	if (self && self->index == index) {
		handle_msg(self, m);
		return;
	}
	if (mailbox_post(&gw->workers[index].mbox, &m->link) == FERRY_OK)
		return;
	/* That worker is stopping: the message is moot. */
	gw_env_unref(m->env);
	free(m->text);
	free(m);
}

int gw_post_later(struct gateway *gw, unsigned index, struct gw_msg *m)
{
	return mailbox_post(&gw->workers[index].mbox, &m->link) == FERRY_OK ? 0 : -1;
}

static void begin_stop(struct gw_worker *w);
static void drain_worker(struct gw_worker *w, unsigned spread_ms);

static void handle_msg(struct gw_worker *w, struct gw_msg *m)
{
	struct gw_conn *c;

	switch (m->kind) {
	case GW_MSG_DELIVER:
		gw_deliver_msg(w, m); /* takes m */
		return;
	case GW_MSG_HANDOVER:
		gw_deliver_handover(w, m); /* takes m */
		return;
	case GW_MSG_STORE:
		gw_op_done(w, (struct gw_op *)m); /* takes it */
		return;
	case GW_MSG_TAKEOVER:
		gw_deliver_takeover(w, m->conn_id);
		break;
	case GW_MSG_RELEASE:
		gw_deliver_release(w, m->device_id, m->conn_id);
		break;
	case GW_MSG_INJECT:
		gw_route_inject(w, m->job);
		break;
	case GW_MSG_RESULT:
		gw_route_result(w, m->send_id, m->result, m->server_id);
		break;
	case GW_MSG_DRAIN:
		drain_worker(w, m->code);
		break;
	case GW_MSG_SETTINGS:
		gw_receipt_settings(w, m->text, (int)m->code);
		free(m->text);
		break;
	case GW_MSG_KICK:
		c = gw_conn_find(w, m->conn_id);
		if (c && (!m->device_id || c->device_id == m->device_id))
			gw_conn_close(c, m->code, NULL);
		break;
	case GW_MSG_STOP:
		begin_stop(w);
		break;
	}
	free(m);
}

static void on_mail(struct mailbox *mb, struct mailbox_msg *msg, void *arg)
{
	handle_msg(arg, (struct gw_msg *)msg);
}

/* ---- last seen ---- */

struct seen_job {
	uv_work_t req;
	struct gateway *gw;
	size_t n;
	int64_t ids[GW_SEEN_BATCH];
};

static void seen_work(uv_work_t *req)
{
	struct seen_job *job = req->data;

	if (queue_devices_seen(job->gw->reg, job->ids, job->n))
		log_warn("event=last_seen_not_written devices=%zu", job->n);
}

static void seen_done(uv_work_t *req, int status)
{
	free(req->data);
}

static void on_seen_timer(uv_timer_t *t)
{
	struct gw_worker *w = t->data;
	struct seen_job *job = malloc(sizeof(*job));

	if (!job)
		return;
	job->req.data = job;
	job->gw = w->gw;
	job->n = gw_presence_take_seen(w->gw, job->ids, GW_SEEN_BATCH);
	if (job->n == 0 || uv_queue_work(&w->loop, &job->req, seen_work, seen_done))
		free(job);
}

/* ---- listening ---- */

/*
 * Accepting. Each listener is polled for readability and accepted from here
 * (not uv_listen()), so that running out of descriptors is ours to handle:
 * a listener with a pending connection stays readable, and a loop that
 * cannot accept it would spin. On EMFILE or ENFILE the worker closes one of
 * the spare descriptors the gateway keeps for this, accepts and closes every
 * pending connection (those peers see their connection closed at once,
 * instead of waiting in the backlog), and opens the spare again. Connections already
 * open carry on. The log line is written at most once per ACCEPT_LOG_MS per
 * worker, with how many connections it stands for: a flood must not flood
 * the log too.
 */
static void accept_failed(struct gw_worker *w, int err, unsigned shed)
{
	uint64_t now = uv_now(&w->loop);

	w->accept_failures += shed ? shed : 1;
	if (w->accept_logged_at && now - w->accept_logged_at < ACCEPT_LOG_MS)
		return;
	log_warn("event=accept_failed worker=%u reason=\"%s\" refused=%llu%s", w->index,
		 strerror(err), (unsigned long long)w->accept_failures,
		 err == EMFILE || err == ENFILE
			 ? " action=\"pending connections closed; raise the open-file limit "
			   "(LimitNOFILE) or lower [gateway] max_connections\""
			 : "");
	w->accept_logged_at = now;
	w->accept_failures = 0;
}

static void on_listener(uv_poll_t *h, int status, int events);

/* Poll the listeners unless accepting is paused (too many handshakes, out
 * of descriptors) or they are closing. */
static void listeners_update(struct gw_worker *w)
{
	int on = !w->hs_paused && !w->emfile_paused && !w->stopping;

	for (int i = 0; i < 2; i++) {
		if (!w->listening[i] || uv_is_closing((uv_handle_t *)&w->listeners[i]))
			continue;
		if (on)
			uv_poll_start(&w->listeners[i], UV_READABLE, on_listener);
		else
			uv_poll_stop(&w->listeners[i]);
	}
}

/*
 * Admission: a worker with [gateway] max_handshakes HELLOs being checked
 * (the secret's hash and a database lookup on the threadpool, then the
 * registration) accepts no more connections until a quarter of them are
 * through. A reconnect storm then waits in the kernel's listen backlog (and
 * in the devices' SYN retries) instead of in a queue of checks, where it
 * would delay every device's traffic. Connections that say nothing are not
 * counted: they cost a descriptor and a few hundred bytes, not a check, and
 * counting them would let a slowloris lock devices out until
 * handshake_timeout. The log says so at most once per ACCEPT_LOG_MS.
 */
void gw_auth_begin(struct gw_worker *w)
{
	unsigned limit = w->gw->cfg->gateway.max_handshakes;
	uint64_t now = uv_now(&w->loop);

	if (++w->authing < limit || w->hs_paused)
		return;
	w->hs_paused = 1;
	listeners_update(w);
	if (!w->hs_logged_at || now - w->hs_logged_at >= ACCEPT_LOG_MS) {
		log_info("event=accept_paused worker=%u checking=%u reason=\"max_handshakes\"",
			 w->index, w->authing);
		w->hs_logged_at = now;
	}
}

void gw_auth_done(struct gw_worker *w)
{
	unsigned limit = w->gw->cfg->gateway.max_handshakes;

	w->authing--;
	if (w->hs_paused && w->authing <= limit - (limit + 3) / 4) {
		w->hs_paused = 0;
		listeners_update(w);
	}
}

/* Spare descriptors lost to another thread are opened again if they can
 * be. accept_lock held for writing. */
static void spares_refill(struct gateway *gw)
{
	for (int i = 0; i < GW_SPARES; i++)
		if (gw->spare_fd[i] < 0)
			gw->spare_fd[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Accepting again after a pause; the spares back first if one was lost. */
static void on_accept_resume(uv_timer_t *t)
{
	struct gw_worker *w = t->data;

	pthread_rwlock_wrlock(&w->gw->accept_lock);
	spares_refill(w->gw);
	pthread_rwlock_unlock(&w->gw->accept_lock);
	w->emfile_paused = 0;
	listeners_update(w);
}

/*
 * Out of descriptors: shed what waits on @fd with a spare's help, then stop
 * accepting for ACCEPT_PAUSE_MS. The spares belong to the gateway, not to
 * the worker: a descriptor freed for a moment can be taken by any thread
 * (a log line's time zone file, a database connection), and a spare lost
 * that way must not leave one worker's backlog unshed for good while
 * another's spare is there. The pause is what bounds the work when no spare
 * can be had: the listener is not polled meanwhile, so a backlog that stays
 * full cannot make the loop spin.
 */
static void shed_pending(struct gw_worker *w, int fd, int err)
{
	struct gateway *gw = w->gw;
	unsigned shed = 0;
	int cfd;

	/* No worker accepts while a spare is down: the descriptor it frees
	 * must not become another worker's connection. */
	pthread_rwlock_wrlock(&gw->accept_lock);
	for (int i = 0; i < GW_SPARES; i++) {
		if (gw->spare_fd[i] < 0)
			continue;
		close(gw->spare_fd[i]);
		gw->spare_fd[i] = -1;
		while ((cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			close(cfd);
			shed++;
		}
		break;
	}
	spares_refill(gw);
	pthread_rwlock_unlock(&gw->accept_lock);
	accept_failed(w, err, shed);
	if (w->stopping)
		return;
	w->emfile_paused = 1;
	listeners_update(w);
	uv_timer_start(&w->accept_timer, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

static void on_listener(uv_poll_t *h, int status, int events)
{
	struct gw_worker *w = h->data;
	int tls = h == &w->listeners[GW_TLS], fd, cfd;

	if (status < 0 || uv_fileno((uv_handle_t *)h, &fd))
		return;
	/* A bounded batch per wake-up: the loop's other work takes turns. */
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		pthread_rwlock_rdlock(&w->gw->accept_lock);
		cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		pthread_rwlock_unlock(&w->gw->accept_lock);
		if (cfd >= 0) {
			gw_conn_accept(w, cfd, tls);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE)
			shed_pending(w, fd, errno);
		else if (errno != EAGAIN && errno != EWOULDBLOCK)
			accept_failed(w, errno, 0);
		return;
	}
}

/* A listening socket on @addr with SO_REUSEPORT; *port in: the port to use
 * when the address says 0 and an earlier worker already bound one. */
static int listen_socket(const char *addr, uint16_t *port, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char *host = NULL, service[8];
	uint16_t want;
	int fd = -1, one = 1, rc;

	if (config_split_addr(addr, &host, &want)) {
		snprintf(err, errlen, "cannot listen on '%s': not a host:port address", addr);
		return -1;
	}
	snprintf(service, sizeof(service), "%u", want ? want : *port);
	rc = getaddrinfo(*host ? host : NULL, service, &hints, &ai);
	free(host);
	if (rc) {
		snprintf(err, errlen, "cannot listen on '%s': %s", addr, gai_strerror(rc));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, LISTEN_BACKLOG) ||
	    getsockname(fd, (struct sockaddr *)&ss, &sslen)) {
		snprintf(err, errlen, "cannot listen on '%s': %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* ---- workers ---- */

static void on_closed_noop(uv_handle_t *h)
{
}

/* A listener's handle is closed: its socket may go now. */
static void on_listener_closed(uv_handle_t *h)
{
	struct gw_worker *w = h->data;
	int i = h == (uv_handle_t *)&w->listeners[GW_TLS];

	close(w->listen_fd[i]);
	w->listen_fd[i] = -1;
	atomic_fetch_sub(&w->gw->listeners_open, 1);
}

static void close_listeners(struct gw_worker *w)
{
	for (int i = 0; i < 2; i++)
		if (w->listening[i] && !uv_is_closing((uv_handle_t *)&w->listeners[i]))
			uv_close((uv_handle_t *)&w->listeners[i], on_listener_closed);
}

/* GW_MSG_DRAIN: no new devices here; those connected leave, spread out. */
static void drain_worker(struct gw_worker *w, unsigned spread_ms)
{
	struct gw_conn *c, *tmp;
	unsigned n = HASH_COUNT(w->conns), k = 0;

	close_listeners(w);
	HASH_ITER(hh, w->conns, c, tmp)
	{
		if (c->state == GW_CONN_READY)
			gw_conn_reconnect(c, n ? (uint64_t)spread_ms * k / n : 0);
		k++;
	}
	log_info("event=gateway_draining worker=%u connections=%u spread_ms=%u", w->index, n,
		 spread_ms);
}

static void begin_stop(struct gw_worker *w)
{
	struct gw_conn *c, *tmp;

	if (w->stopping)
		return;
	w->stopping = 1;
	close_listeners(w);
	if (w->accept_timer_on) {
		uv_close((uv_handle_t *)&w->accept_timer, on_closed_noop);
		w->accept_timer_on = 0;
	}
	if (w->index == 0 && uv_is_active((uv_handle_t *)&w->seen_timer))
		uv_close((uv_handle_t *)&w->seen_timer, on_closed_noop);
	gw_receipts_stop(w);
	HASH_ITER(hh, w->conns, c, tmp)
	{
		gw_conn_close(c, PROTO_ERR_SHUTTING_DOWN, "server is stopping");
	}
	/* Closing connections wrote their corks; from now on writes go out at
	 * once (conn.c). */
	if (w->flush_on) {
		gw_conn_flush_all(w);
		uv_close((uv_handle_t *)&w->flush_check, on_closed_noop);
		uv_close((uv_handle_t *)&w->flush_prepare, on_closed_noop);
		w->flush_on = 0;
	}
	gw_worker_maybe_done(w);
}

void gw_worker_maybe_done(struct gw_worker *w)
{
	/* The store posts its answers to this mailbox: it stays open until
	 * every request made here has been answered. */
	if (w->stopping && w->ops == 0 && w->mbox_ok) {
		w->mbox_ok = 0;
		mailbox_close(&w->mbox, NULL);
	}
}

static void on_flush_check(uv_check_t *h)
{
	gw_conn_flush_all(h->data);
}

static void on_flush_prepare(uv_prepare_t *h)
{
	gw_conn_flush_all(h->data);
}

static enum ferry_err worker_setup(struct gw_worker *w)
{
	if (uv_loop_init(&w->loop))
		return FERRY_EIO;
	uv_timer_init(&w->loop, &w->accept_timer);
	w->accept_timer.data = w;
	w->accept_timer_on = 1;
	uv_check_init(&w->loop, &w->flush_check);
	uv_prepare_init(&w->loop, &w->flush_prepare);
	w->flush_check.data = w->flush_prepare.data = w;
	uv_check_start(&w->flush_check, on_flush_check);
	uv_prepare_start(&w->flush_prepare, on_flush_prepare);
	w->flush_on = 1;
	if (mailbox_init(&w->mbox, &w->loop, on_mail, w))
		return FERRY_EIO;
	w->mbox_ok = 1;
	if (gw_receipts_init(w))
		return FERRY_ENOMEM;
	for (int i = 0; i < 2; i++) {
		if (w->listen_fd[i] < 0)
			continue;
		if (uv_poll_init(&w->loop, &w->listeners[i], w->listen_fd[i]))
			return FERRY_EIO;
		w->listeners[i].data = w;
		w->listening[i] = 1;
		atomic_fetch_add(&w->gw->listeners_open, 1);
		if (uv_poll_start(&w->listeners[i], UV_READABLE, on_listener))
			return FERRY_EIO;
	}
	if (w->index == 0) {
		uv_timer_init(&w->loop, &w->seen_timer);
		w->seen_timer.data = w;
		uv_timer_start(&w->seen_timer, on_seen_timer, GW_SEEN_FLUSH_MS, GW_SEEN_FLUSH_MS);
	}
	return FERRY_OK;
}

static void worker_main(void *arg)
{
	struct gw_worker *w = arg;

	w->start_rc = worker_setup(w);
	uv_sem_post(&w->started);
	if (w->start_rc) {
		begin_stop(w);
	}
	uv_run(&w->loop, UV_RUN_DEFAULT);
	gw_route_release(w);
	gw_conn_free_all(w);
	gw_conn_corks_free(w);
	gw_receipts_free(w);
	uv_loop_close(&w->loop);
}

static enum ferry_err make_listeners(struct gateway *gw, char *err, size_t errlen)
{
	const struct ferry_config *cfg = gw->cfg;
	const char *addrs[2] = { cfg->gateway.listen, gw->tls ? cfg->gateway.tls_listen : "" };

	for (unsigned i = 0; i < gw->nworkers; i++) {
		for (int k = 0; k < 2; k++) {
			gw->workers[i].listen_fd[k] = -1;
			if (!*addrs[k])
				continue;
			gw->workers[i].listen_fd[k] =
				listen_socket(addrs[k], &gw->ports[k], err, errlen);
			if (gw->workers[i].listen_fd[k] < 0)
				return FERRY_EIO;
		}
	}
	return FERRY_OK;
}

static void close_listen_fds(struct gateway *gw)
{
	for (unsigned i = 0; i < gw->nworkers; i++)
		for (int k = 0; k < 2; k++)
			if (gw->workers[i].listen_fd[k] >= 0 && !gw->workers[i].listening[k])
				close(gw->workers[i].listen_fd[k]);
}

static void gateway_free(struct gateway *gw)
{
	for (unsigned i = 0; gw->workers && i < gw->nworkers; i++) {
		free(gw->workers[i].rbuf);
		free(gw->workers[i].plain);
	}
	gw_presence_release(gw);
	gw_dir_release(gw);
	pthread_mutex_destroy(&gw->dir_lock);
	pthread_mutex_destroy(&gw->presence_lock);
	pthread_mutex_destroy(&gw->dedup_lock);
	pthread_rwlock_destroy(&gw->accept_lock);
	for (int i = 0; i < GW_SPARES; i++)
		if (gw->spare_fd[i] >= 0)
			close(gw->spare_fd[i]);
	gw_authfail_release(gw);
	pthread_mutex_destroy(&gw->authfail_lock);
	SSL_CTX_free(gw->tls);
	pthread_mutex_destroy(&gw->tls_lock);
	free(gw->workers);
	free(gw);
}

static struct gateway *gateway_new(const struct ferry_config *cfg, struct queue_registry *reg,
				   struct queue_store *store)
{
	struct gateway *gw = calloc(1, sizeof(*gw));
	unsigned n = cfg->gateway.workers ? cfg->gateway.workers : uv_available_parallelism();

	if (!gw)
		return NULL;
	gw->cfg = cfg;
	gw->reg = reg;
	gw->store = store;
	gw->nworkers = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : n;
	/* Server ids: milliseconds at start in the high bits, so ids of a new run
	 * are above those of the last one. */
	atomic_init(&gw->next_server_id, gw_now_ms() << 20);
	gw->started_ms = gw_now_ms();
	pthread_mutex_init(&gw->presence_lock, NULL);
	pthread_mutex_init(&gw->dedup_lock, NULL);
	pthread_mutex_init(&gw->dir_lock, NULL);
	pthread_rwlock_init(&gw->accept_lock, NULL);
	pthread_mutex_init(&gw->authfail_lock, NULL);
	pthread_mutex_init(&gw->tls_lock, NULL);
	for (int i = 0; i < GW_SPARES; i++)
		gw->spare_fd[i] = -1;
	gw->workers = calloc(gw->nworkers, sizeof(*gw->workers));
	if (!gw->workers) {
		gateway_free(gw);
		return NULL;
	}
	for (unsigned i = 0; i < gw->nworkers; i++) {
		struct gw_worker *w = &gw->workers[i];

		w->gw = gw;
		w->index = i;
		w->listen_fd[0] = w->listen_fd[1] = -1;
		hist_init(&w->delivery, hist_latency_us, hist_latency_us_n);
		w->rbuf = malloc(GW_READ_CHUNK);
		w->plain = malloc(GW_READ_CHUNK);
		if (!w->rbuf || !w->plain) {
			gateway_free(gw);
			return NULL;
		}
	}
	return gw;
}

static enum ferry_err start_workers(struct gateway *gw, unsigned *started)
{
	enum ferry_err rc = FERRY_OK;

	for (*started = 0; *started < gw->nworkers; (*started)++) {
		struct gw_worker *w = &gw->workers[*started];

		uv_sem_init(&w->started, 0);
		if (uv_thread_create(&w->thread, worker_main, w)) {
			uv_sem_destroy(&w->started);
			return FERRY_EIO;
		}
		uv_sem_wait(&w->started);
		uv_sem_destroy(&w->started);
		if (w->start_rc)
			rc = w->start_rc;
	}
	return rc;
}

static void stop_workers(struct gateway *gw, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct gw_msg *m = calloc(1, sizeof(*m));

		if (!m)
			ferry_panic("out of memory stopping the gateway");
		m->kind = GW_MSG_STOP;
		gw_post(gw, NULL, i, m);
	}
	for (unsigned i = 0; i < n; i++)
		uv_thread_join(&gw->workers[i].thread);
}

enum ferry_err gateway_start(const struct ferry_config *cfg, struct queue_registry *reg,
			     struct queue_store *store, struct push_service *push,
			     struct gateway **out, uint16_t ports[2], char *err, size_t errlen)
{
	struct gateway *gw = gateway_new(cfg, reg, store);
	unsigned started = 0;
	enum ferry_err rc;

	if (!gw) {
		snprintf(err, errlen, "cannot start the gateway: out of memory");
		return FERRY_ENOMEM;
	}
	gw->push = push;
	if (*cfg->gateway.tls_cert || *cfg->gateway.tls_key) {
		if (!*cfg->gateway.tls_cert || !*cfg->gateway.tls_key) {
			snprintf(err, errlen, "TLS needs both [gateway] tls_cert and tls_key");
			gateway_free(gw);
			return FERRY_ECONFIG;
		}
		gw->tls = gw_tls_context(cfg->gateway.tls_cert, cfg->gateway.tls_key, err, errlen);
		if (!gw->tls) {
			gateway_free(gw);
			return FERRY_ECONFIG;
		}
		gw_tls_log_loaded(gw->tls);
	}
	/* The descriptors that let on_listener() shed connections when the
	 * process is out of them. */
	spares_refill(gw);
	if (gw->spare_fd[GW_SPARES - 1] < 0) {
		snprintf(err, errlen, "cannot open /dev/null: %s", strerror(errno));
		gateway_free(gw);
		return FERRY_EIO;
	}
	rc = make_listeners(gw, err, errlen);
	if (rc) {
		close_listen_fds(gw);
		gateway_free(gw);
		return rc;
	}
	rc = start_workers(gw, &started);
	if (rc) {
		snprintf(err, errlen, "cannot start the gateway's workers");
		stop_workers(gw, started);
		close_listen_fds(gw);
		gateway_free(gw);
		return rc;
	}
	if (ports) {
		ports[0] = *cfg->gateway.listen ? gw->ports[0] : 0;
		ports[1] = gw->tls ? gw->ports[1] : 0;
	}
	atomic_store(&gw->ready, 1);
	log_info("event=gateway_started workers=%u listen=%s port=%u tls_port=%u", gw->nworkers,
		 cfg->gateway.listen, gw->ports[0], gw->tls ? gw->ports[1] : 0);
	*out = gw;
	return FERRY_OK;
}

void gateway_kick_device(struct gateway *gw, int64_t id, unsigned code)
{
	struct gw_msg *m;
	unsigned worker;
	uint64_t conn_id;

	if (!gw || !gw_presence_find(gw, id, &worker, &conn_id))
		return;
	m = calloc(1, sizeof(*m));
	if (!m)
		return;
	m->kind = GW_MSG_KICK;
	m->conn_id = conn_id;
	m->device_id = id;
	m->code = code;
	gw_post(gw, NULL, worker, m);
}

int gateway_disconnect_device(struct gateway *gw, int64_t id)
{
	unsigned worker;
	uint64_t conn_id;

	/* The worker finds the device's connection again, whichever it is by then. */
	if (!gw || !gw_presence_find(gw, id, &worker, &conn_id))
		return 0;
	gateway_kick_device(gw, id, PROTO_ERR_DISCONNECTED);
	return 1;
}

int gateway_device_presence(struct gateway *gw, int64_t id, struct gateway_presence *out)
{
	char host[INET6_ADDRSTRLEN];
	struct gw_peer peer;

	memset(out, 0, sizeof(*out));
	if (!gw || !gw_presence_peer(gw, id, &out->worker, &peer))
		return 0;
	out->since_ms = peer.since_ms;
	if (!peer.family || !inet_ntop(peer.family, peer.addr, host, sizeof(host)))
		return 1;
	if (peer.family == AF_INET6)
		snprintf(out->remote, sizeof(out->remote), "[%s]:%u", host, (unsigned)peer.port);
	else
		snprintf(out->remote, sizeof(out->remote), "%s:%u", host, (unsigned)peer.port);
	return 1;
}

void gateway_user_changed(struct gateway *gw, const char *user)
{
	if (gw)
		gw_dir_forget(gw, user);
}

void gateway_user_settings_changed(struct gateway *gw, const char *user, int read_receipts)
{
	if (!gw)
		return;
	for (unsigned i = 0; i < gw->nworkers; i++) {
		struct gw_msg *m = calloc(1, sizeof(*m));

		if (m)
			m->text = strdup(user);
		if (!m || !m->text) {
			free(m);
			log_warn("event=settings_not_applied user=%s reason=\"out of memory\"",
				 user);
			continue;
		}
		m->kind = GW_MSG_SETTINGS;
		m->code = read_receipts ? 1 : 0;
		gw_post(gw, NULL, i, m);
	}
}

void gateway_store_stats(const struct gateway *gw, struct queue_store_stats *out,
			 struct hist_snap *commits)
{
	memset(out, 0, sizeof(*out));
	hist_snap_init(commits, hist_latency_us, hist_latency_us_n);
	if (!gw || !gw->store)
		return;
	queue_store_stats(gw->store, out);
	queue_store_commit_hist(gw->store, commits);
}

void gateway_stats(const struct gateway *gw, struct gateway_stats *out)
{
	uint64_t v[GW_ST_N] = { 0 };

	memset(out, 0, sizeof(*out));
	hist_snap_init(&out->delivery, hist_latency_us, hist_latency_us_n);
	if (!gw)
		return;
	out->nworkers = gw->nworkers;
	for (unsigned i = 0; i < gw->nworkers; i++) {
		const struct gw_worker *w = &gw->workers[i];

		for (int k = 0; k < GW_ST_N; k++)
			v[k] += atomic_load_explicit(&w->st[k], memory_order_relaxed);
		if (i < GATEWAY_STATS_WORKERS)
			out->worker_connections[i] =
				atomic_load_explicit(&w->st[GW_ST_CONNS], memory_order_relaxed);
		hist_snap_add(&out->delivery, &w->delivery);
	}
	out->uptime_ms = gw_now_ms() - gw->started_ms;
	out->connections = v[GW_ST_CONNS];
	out->peak_connections = atomic_load(&gw->peak_connections);
	out->authenticated = v[GW_ST_AUTHED];
	out->accepted = v[GW_ST_ACCEPTS];
	out->frames_in = v[GW_ST_FRAMES_IN];
	out->frames_out = v[GW_ST_FRAMES_OUT];
	out->bytes_in = v[GW_ST_BYTES_IN];
	out->bytes_out = v[GW_ST_BYTES_OUT];
	out->writes = v[GW_ST_WRITES];
	out->env_accepted = v[GW_ST_ENV_ACCEPTED];
	out->env_online = v[GW_ST_ENV_ONLINE];
	out->env_drained = v[GW_ST_ENV_DRAINED];
	for (int r = 0; r < 5; r++)
		out->nacks[r] = v[GW_ST_NACK + r];
	out->receipts.read_in = v[GW_ST_RCPT_READ_IN];
	out->receipts.delivered_in = v[GW_ST_RCPT_DELIVERED];
	out->receipts.batches = v[GW_ST_RCPT_BATCHES];
	out->receipts.ids_out = v[GW_ST_RCPT_IDS_OUT];
	out->receipts.read_off = v[GW_ST_RCPT_OFF];
	out->receipts.lost = v[GW_ST_RCPT_LOST];
}

void gateway_device_deleted(struct gateway *gw, int64_t id)
{
	gateway_kick_device(gw, id, PROTO_ERR_DEVICE_DELETED);
}

void gateway_drain(struct gateway *gw, unsigned spread_ms)
{
	int was = 0;

	if (!gw || !atomic_compare_exchange_strong(&gw->draining, &was, 1))
		return;
	atomic_store(&gw->drain_spread, spread_ms);
	atomic_store(&gw->ready, 0);
	for (unsigned i = 0; i < gw->nworkers; i++) {
		struct gw_msg *m = calloc(1, sizeof(*m));

		if (!m)
			ferry_panic("out of memory draining the gateway");
		m->kind = GW_MSG_DRAIN;
		m->code = spread_ms;
		gw_post(gw, NULL, i, m);
	}
}

int gateway_draining(const struct gateway *gw)
{
	return gw && atomic_load(&gw->draining);
}

unsigned gateway_listeners_open(const struct gateway *gw)
{
	return gw ? atomic_load(&gw->listeners_open) : 0;
}

int gateway_ready(const struct gateway *gw)
{
	return gw && atomic_load(&gw->ready);
}

int gateway_store_ready(const struct gateway *gw)
{
	return gw && queue_store_ready(gw->store);
}

/* ---- envelopes from the server itself ---- */

#define INJECT_USER "ferry"

static enum ferry_err inject_targets(struct gateway *gw, struct gw_inject_job *job,
				     const struct gateway_inject *inj, char *err, size_t errlen)
{
	struct queue_device dev;
	enum ferry_err rc;

	if (inj->to_user) {
		rc = queue_user_devices(gw->reg, inj->to_user, job->devices, GW_MAX_USER_DEVICES,
					&job->n);
		if (rc == FERRY_OK && job->n == 0) {
			snprintf(err, errlen, "no user '%s' (or no device)", inj->to_user);
			return FERRY_ENOTFOUND;
		}
	} else {
		rc = queue_device_get(gw->reg, inj->to_device, &dev);
		if (rc == FERRY_OK) {
			queue_device_release(&dev);
			job->devices[0] = inj->to_device;
			job->n = 1;
		} else if (rc == FERRY_ENOTFOUND) {
			snprintf(err, errlen, "no device %lld", (long long)inj->to_device);
			return rc;
		}
	}
	if (rc)
		snprintf(err, errlen, "cannot look up the recipients now: %s", ferry_strerror(rc));
	return rc;
}

enum ferry_err gateway_inject(struct gateway *gw, struct gateway_inject *inj, char *err,
			      size_t errlen)
{
	size_t limit = gw->cfg->gateway.max_frame - PROTO_PAYLOAD_HEADROOM;
	struct gw_inject_job *job;
	struct gw_msg *m;
	enum ferry_err rc;
	uint64_t sid;

	if (inj->len > limit) {
		snprintf(err, errlen, "payload of %zu bytes is over the limit of %zu", inj->len,
			 limit);
		return FERRY_ETOOBIG;
	}
	job = calloc(1, sizeof(*job));
	m = calloc(1, sizeof(*m));
	if (!job || !m) {
		free(job);
		free(m);
		snprintf(err, errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	rc = inject_targets(gw, job, inj, err, errlen);
	if (rc) {
		free(job);
		free(m);
		return rc;
	}
	sid = atomic_fetch_add(&gw->next_server_id, 1);
	/* The client id of a server envelope: the caller's, or its server id
	 * (unique). */
	job->env = gw_env_deliver(sid, INJECT_USER, strlen(INJECT_USER), 0,
				  inj->client_id ? inj->client_id : sid, gw_now_ms(), inj->payload,
				  inj->len);
	if (!job->env) {
		free(job);
		free(m);
		snprintf(err, errlen, "out of memory");
		return FERRY_ENOMEM;
	}
	job->env->ttl = inj->ttl;
	pthread_mutex_init(&job->lock, NULL);
	pthread_cond_init(&job->cond, NULL);
	m->kind = GW_MSG_INJECT;
	m->job = job;
	if (gw_post_later(gw, 0, m)) {
		free(m);
		job->rc = FERRY_EUNAVAIL;
		job->done = 1;
	}
	pthread_mutex_lock(&job->lock);
	while (!job->done)
		pthread_cond_wait(&job->cond, &job->lock);
	pthread_mutex_unlock(&job->lock);
	rc = job->rc;
	inj->server_id = job->dup_id ? job->dup_id : sid;
	inj->targets = job->targets;
	inj->delivered = job->stored == 0;
	if (rc == FERRY_EUNAVAIL)
		snprintf(err, errlen, "%u device(s) could neither be reached nor stored now",
			 job->failed ? job->failed : 1);
	else if (rc == FERRY_ELIMIT)
		snprintf(err, errlen, "the offline queue of %u device(s) is full", job->full);
	gw_env_unref(job->env);
	pthread_cond_destroy(&job->cond);
	pthread_mutex_destroy(&job->lock);
	free(job);
	return rc;
}

void gateway_stop(struct gateway *gw)
{
	if (!gw)
		return;
	atomic_store(&gw->ready, 0);
	stop_workers(gw, gw->nworkers);
	gateway_free(gw);
	log_info("event=gateway_stopped");
}
