/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Many connections through the Linux switch (run under its preload): one
 * server process, non-blocking with epoll, and client processes that
 * stream random data both ways with random sizes, every byte checked at
 * the receiving end.  The first client's connections must all complete;
 * the second's peer kills itself mid-stream (the server must see the
 * end of every one of them, not hang); a third must complete after that.
 * Prints TAP.
 *
 * usage: switch_stream [CONNECTIONS] [MAX_BYTES]
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switch_tenv.h"

#define KILL_BIT 0x80000000u
#define BUF (512 * 1024)

struct hdr {
	uint32_t id;
	uint32_t pad;
	uint64_t seed;
	uint64_t total;
};

struct ep {
	int fd;
	bool out; /* EPOLLOUT asked for */
	struct hdr tx, rx;
	uint64_t tx_done, rx_done; /* header bytes included */
	bool shut, eof;
};

static unsigned char scratch[BUF], want[BUF];
static int (*is_san)(int);

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Bytes pos.. of the stream of seed into out. */
static void stream_fill(uint64_t seed, uint64_t pos, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++, pos++)
		out[i] = (unsigned char)(splitmix(seed ^ (pos >> 3) * 0x100000001b3ull) >>
					 (8 * (pos & 7)));
}

static uint64_t rnd(uint64_t *s)
{
	*s = splitmix(*s);
	return *s;
}

static void set_events(int epfd, struct ep *e, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0u) |
					    (e->tx.id & 1 ? EPOLLET : 0u),
				  .data.ptr = e };

	e->out = out;
	epoll_ctl(epfd, EPOLL_CTL_MOD, e->fd, &ev);
}

/* After a failed send: the header, if it came, names the connection. */
static void drain(struct ep *e)
{
	while (e->rx_done < sizeof(struct hdr)) {
		ssize_t k = recv(e->fd, (char *)&e->rx + e->rx_done,
				 sizeof(struct hdr) - e->rx_done, MSG_DONTWAIT);

		if (k <= 0)
			break;
		e->rx_done += (uint64_t)k;
	}
}

/* Move what can move now: 1 done, 0 not yet, -1 failed (errno). */
static int step(int epfd, struct ep *e, uint64_t *r)
{
	uint64_t tx_all = sizeof(struct hdr) + e->tx.total;
	int tx_err = 0;

	while (e->tx_done < tx_all) {
		size_t n = 1 + rnd(r) % (e->tx.id & 2 ? 300000 : 5000);
		ssize_t k;

		if (e->tx_done < sizeof(struct hdr)) {
			n = sizeof(struct hdr) - e->tx_done;
			memcpy(scratch, (char *)&e->tx + e->tx_done, n);
		} else {
			if (n > tx_all - e->tx_done)
				n = tx_all - e->tx_done;
			if (n > BUF)
				n = BUF;
			stream_fill(e->tx.seed, e->tx_done - sizeof(struct hdr), scratch, n);
		}
		k = send(e->fd, scratch, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EAGAIN)
			break;
		if (k <= 0) {
			/* What the peer sent before it died is still read (its header names it). */
			tx_err = k < 0 ? errno : EPIPE;
			break;
		}
		e->tx_done += (uint64_t)k;
	}
	if (tx_err) {
		drain(e);
		errno = tx_err;
		return -1;
	}
	if (e->tx_done == tx_all && !e->shut) {
		shutdown(e->fd, SHUT_WR);
		e->shut = true;
	}
	if (e->out != (e->tx_done < tx_all))
		set_events(epfd, e, e->tx_done < tx_all);
	while (!e->eof) {
		size_t n = 1 + rnd(r) % BUF;
		ssize_t k = recv(e->fd, scratch, n, 0);

		if (k < 0 && errno == EAGAIN)
			break;
		if (k < 0)
			return -1;
		if (!k) {
			e->eof = true;
			break;
		}
		for (ssize_t i = 0; i < k;) {
			if (e->rx_done < sizeof(struct hdr)) {
				((char *)&e->rx)[e->rx_done++] = (char)scratch[i++];
				continue;
			}
			size_t m = (size_t)k - (size_t)i;
			uint64_t pos = e->rx_done - sizeof(struct hdr);

			if (pos + m > e->rx.total) {
				errno = EPROTO; /* more than the header said */
				return -1;
			}
			stream_fill(e->rx.seed, pos, want, m);
			if (memcmp(want, scratch + i, m)) {
				fprintf(stderr, "# id %u: wrong data at %llu\n", e->rx.id,
					(unsigned long long)pos);
				errno = EILSEQ;
				return -1;
			}
			e->rx_done += m;
			i += (ssize_t)m;
		}
	}
	if (e->eof) {
		if (e->rx_done != sizeof(struct hdr) + e->rx.total) {
			fprintf(stderr, "# id %u: the end after %llu of %llu bytes\n", e->rx.id,
				(unsigned long long)e->rx_done, (unsigned long long)e->rx.total);
			errno = ECONNRESET; /* ended early */
			return -1;
		}
		if (e->tx_done == tx_all)
			return 1;
	}
	return 0;
}

/* Serve n connections: their outcomes in *ok and *killed; 0 or -1. */
static int serve(int l, int n, int *ok, int *killed, int *san, bool kill_phase)
{
	int epfd = epoll_create1(0), done = 0;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, evs[64];
	uint64_t r = 42;

	epoll_ctl(epfd, EPOLL_CTL_ADD, l, &ev);
	while (done < n) {
		int k = epoll_wait(epfd, evs, 64, 20000);

		if (k <= 0) {
			fprintf(stderr, "# server: no progress (%d of %d done)\n", done, n);
			return -1;
		}
		for (int i = 0; i < k; i++) {
			struct ep *e = evs[i].data.ptr;
			int fd, ret;

			if (!e) {
				while ((fd = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					e = calloc(1, sizeof(*e));
					e->fd = fd;
					e->tx.seed = rnd(&r);
					e->tx.total = rnd(&r) % (1u << 20);
					e->tx.id = (uint32_t)fd;
					*san += is_san && is_san(fd) == 2;
					ev = (struct epoll_event){ .events = EPOLLIN | EPOLLOUT,
								   .data.ptr = e };
					e->out = true;
					epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			ret = step(epfd, e, &r);
			if (!ret)
				continue;
			if (ret > 0)
				(*ok)++;
			else if ((e->rx.id & KILL_BIT) ||
				 (kill_phase && e->rx_done < sizeof(struct hdr)))
				/*
				 * A killed process's sends that had not moved yet die
				 * with it (no kernel keeps them): even its header may.
				 */
				(*killed)++;
			else
				fprintf(stderr, "# server: connection %u: %s\n", e->rx.id,
					strerror(errno));
			close(e->fd);
			free(e);
			done++;
		}
	}
	close(epfd);
	return 0;
}

/* One client: n connections; those with kill set die mid-stream. */
static int client(uint16_t port, int n, uint64_t max, bool kill_me, uint32_t base)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int epfd = epoll_create1(0), done = 0, ok = 0, san = 0;
	struct ep *eps = calloc((size_t)n, sizeof(*eps));
	struct epoll_event evs[64];
	uint64_t r = base * 7919u + 1, moved = 0;

	sin.sin_addr.s_addr = switch_tenv_addr();
	for (int i = 0; i < n; i++) {
		struct ep *e = &eps[i];
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = e };

		e->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (connect(e->fd, (struct sockaddr *)&sin, sizeof(sin)) && errno != EINPROGRESS)
			return 1;
		san += is_san && is_san(e->fd) == 2;
		e->tx.id = (base + (uint32_t)i) | (kill_me ? KILL_BIT : 0);
		e->tx.seed = rnd(&r);
		e->tx.total = kill_me ? (1ull << 40) : rnd(&r) % max;
		if (i % 2)
			ev.events |= EPOLLET;
		e->out = true;
		epoll_ctl(epfd, EPOLL_CTL_ADD, e->fd, &ev);
	}
	while (done < n) {
		int k = epoll_wait(epfd, evs, 64, 20000);

		if (k <= 0) {
			fprintf(stderr, "# client %u: no progress\n", base);
			return 1;
		}
		for (int i = 0; i < k; i++) {
			struct ep *e = evs[i].data.ptr;
			uint64_t before = e->tx_done;
			int ret;

			if (e->fd < 0)
				continue;
			ret = step(epfd, e, &r);
			moved += e->tx_done - before;
			if (kill_me && moved > (uint64_t)n * 200000)
				raise(SIGKILL); /* mid-stream, everything open */
			if (!ret)
				continue;
			if (ret > 0)
				ok++;
			else
				fprintf(stderr, "# client: connection %u: %s\n", e->tx.id,
					strerror(errno));
			close(e->fd);
			e->fd = -1;
			done++;
		}
	}
	printf("# client %u: %d of %d connections complete, %d over the SAN\n", base, ok, n, san);
	return ok == n && san == n ? 0 : 1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 64;
	uint64_t max = argc > 2 ? strtoull(argv[2], NULL, 0) : 1u << 20;
	int nk = n / 4 ? n / 4 : 1, nf = n / 8 ? n / 8 : 1;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int pfd[2], st, l, t = 0;
	pid_t srv, c;
	uint16_t port;

	switch_tenv_setup();
	*(void **)&is_san = dlsym(RTLD_DEFAULT, "sanprov_preload_is_san");
	printf("1..4\n");
	fflush(stdout);
	if (pipe(pfd))
		return 1;
	srv = fork();
	if (!srv) {
		int ok = 0, killed = 0, san = 0;

		sin.sin_addr.s_addr = switch_tenv_addr();
		l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) || listen(l, 128) ||
		    getsockname(l, (struct sockaddr *)&sin, &len))
			_exit(2);
		port = ntohs(sin.sin_port);
		if (write(pfd[1], &port, sizeof(port)) != sizeof(port))
			_exit(2);
		alarm(240);
		if (serve(l, n, &ok, &killed, &san, false))
			_exit(3);
		printf("# server: %d of %d complete, %d over the SAN\n", ok, n, san);
		if (ok != n || san != n)
			_exit(4);
		/* Each phase's clients connect once the last phase is over here. */
		(void)!write(pfd[1], &port, sizeof(port));
		ok = killed = 0;
		if (serve(l, nk, &ok, &killed, &san, true))
			_exit(5);
		printf("# server: %d of %d connections of the killed peer ended\n", killed, nk);
		if (killed != nk)
			_exit(6);
		(void)!write(pfd[1], &port, sizeof(port));
		ok = killed = 0;
		if (serve(l, nf, &ok, &killed, &san, false) || ok != nf)
			_exit(7);
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], &port, sizeof(port)) != sizeof(port))
		return 1;
	c = fork();
	if (!c) {
		alarm(240);
		_exit(client(port, n, max, false, 1000));
	}
	waitpid(c, &st, 0);
	printf("%sok %d - %d connections both ways, random sizes, every byte checked\n",
	       WIFEXITED(st) && !WEXITSTATUS(st) ? "" : "not ", ++t, n);
	fflush(stdout);
	(void)!read(pfd[0], &port, sizeof(port)); /* EOF: the server failed */
	c = fork();
	if (!c) {
		alarm(240);
		_exit(client(port, nk, max, true, 2000));
	}
	waitpid(c, &st, 0);
	printf("%sok %d - a peer killed mid-stream (%d connections)\n",
	       WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? "" : "not ", ++t, nk);
	fflush(stdout);
	(void)!read(pfd[0], &port, sizeof(port));
	c = fork();
	if (!c) {
		alarm(240);
		_exit(client(port, nf, max, false, 3000));
	}
	waitpid(c, &st, 0);
	printf("%sok %d - the server serves again after that\n",
	       WIFEXITED(st) && !WEXITSTATUS(st) ? "" : "not ", ++t);
	waitpid(srv, &st, 0);
	printf("%sok %d - the server saw every connection end as it should (status %d)\n",
	       WIFEXITED(st) && !WEXITSTATUS(st) ? "" : "not ", ++t,
	       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}
