/*
 * net.c - libferry's sockets: name resolution, non-blocking connect, and
 * reads and writes that never block.
 *
 * Every socket is non-blocking and close-on-exec, with TCP_NODELAY (frames
 * are small and latency matters more than packets). Writes use MSG_NOSIGNAL
 * so that a peer's close is an error, not a SIGPIPE. Failures fill the
 * caller's err buffer with what failed and why; nothing here logs.
 * Name resolution is getaddrinfo(3), which blocks: it happens once per
 * connection attempt.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "client/client_int.h"
#include "common/banned.h"

enum ferry_err fc_net_resolve(const char *host, const char *port, struct addrinfo **out, char *err,
			      size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	int rc = getaddrinfo(host, port, &hints, out);

	if (rc == 0)
		return FERRY_OK;
	*out = NULL;
	snprintf(err, errlen, "cannot resolve '%s': %s", host,
		 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
	return FERRY_EIO;
}

void fc_net_addr_text(const struct addrinfo *ai, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";

	getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(out, cap, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

enum fc_io fc_net_connect(const struct addrinfo *ai, int *fd, char *err, size_t errlen)
{
	char addr[INET6_ADDRSTRLEN + 10];
	int one = 1;

	fc_net_addr_text(ai, addr, sizeof(addr));
	*fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		     ai->ai_protocol);
	if (*fd < 0) {
		snprintf(err, errlen, "cannot create a socket for %s: %s", addr, strerror(errno));
		return FC_IO_ERROR;
	}
	setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(*fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return FC_IO_DONE;
	if (errno == EINPROGRESS)
		return FC_IO_WANT_WRITE;
	snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(errno));
	close(*fd);
	*fd = -1;
	return FC_IO_ERROR;
}

enum fc_io fc_net_connect_result(int fd, char *err, size_t errlen)
{
	int e = 0;
	socklen_t len = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
		e = errno;
	if (e == 0)
		return FC_IO_DONE;
	if (e == EINPROGRESS || e == EALREADY)
		return FC_IO_WANT_WRITE;
	snprintf(err, errlen, "%s", strerror(e));
	return FC_IO_ERROR;
}

enum fc_io fc_net_read(int fd, void *p, size_t n, size_t *got, char *err, size_t errlen)
{
	ssize_t r;

	do
		r = recv(fd, p, n, 0);
	while (r < 0 && errno == EINTR);
	*got = 0;
	if (r > 0) {
		*got = (size_t)r;
		return FC_IO_DONE;
	}
	if (r == 0)
		return FC_IO_EOF;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return FC_IO_WANT_READ;
	snprintf(err, errlen, "read from the server failed: %s", strerror(errno));
	return FC_IO_ERROR;
}

enum fc_io fc_net_write(int fd, const void *p, size_t n, size_t *put, char *err, size_t errlen)
{
	ssize_t r;

	do
		r = send(fd, p, n, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	*put = 0;
	if (r >= 0) {
		*put = (size_t)r;
		return r > 0 ? FC_IO_DONE : FC_IO_WANT_WRITE;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return FC_IO_WANT_WRITE;
	snprintf(err, errlen, "write to the server failed: %s", strerror(errno));
	return FC_IO_ERROR;
}
