/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * TCP semantics through the Linux switch (run under its preload): each
 * case is a server process and a client process, both started fresh (a
 * process's provider does not cross fork()).  Prints TAP.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switch_tenv.h"

static int (*is_san)(int);
static int ctl[2];	   /* server -> client: the port, then go-aheads */
static int back[2];	   /* client -> server: go-aheads */
static volatile int pipes; /* SIGPIPEs seen */

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "# %d: %s failed (errno %d)\n", __LINE__, #c, errno);      \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

static int san(int fd)
{
	return is_san ? is_san(fd) : 0;
}

static void tell(int fd)
{
	char c = 1;

	(void)!write(fd, &c, 1);
}

static void hear(int fd)
{
	char c;

	(void)!read(fd, &c, 1);
}

static int listener(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port;

	sin.sin_addr.s_addr = switch_tenv_addr();
	if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) || listen(l, 8) ||
	    getsockname(l, (struct sockaddr *)&sin, &len))
		return -1;
	port = ntohs(sin.sin_port);
	(void)!write(ctl[1], &port, sizeof(port));
	return l;
}

static int dial(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	uint16_t port;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (read(ctl[0], &port, sizeof(port)) != sizeof(port))
		return -1;
	sin.sin_port = htons(port);
	sin.sin_addr.s_addr = switch_tenv_addr();
	return connect(fd, (struct sockaddr *)&sin, sizeof(sin)) ? -1 : fd;
}

static int read_all(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* EOF after shutdown(SHUT_WR), once all data came; the other direction goes on. */
static int eof_server(void)
{
	static char buf[300000];
	int l = listener(), a = accept(l, NULL, NULL);
	size_t got = 0;
	ssize_t n;

	CHECK(a >= 0 && san(a) == 2);
	while ((n = read(a, buf + got, sizeof(buf) - got + 1)) > 0)
		got += (size_t)n;
	CHECK(n == 0 && got == sizeof(buf));
	for (size_t i = 0; i < got; i++)
		CHECK(buf[i] == (char)(i * 7));
	CHECK(write(a, "bye", 3) == 3);
	close(a);
	return 0;
}

static int eof_client(void)
{
	static char buf[300000];
	int fd = dial();
	char r[8];

	CHECK(fd >= 0 && san(fd) == 2);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7);
	CHECK(write(fd, buf, 1000) == 1000);
	CHECK(send(fd, buf + 1000, sizeof(buf) - 1000, 0) == sizeof(buf) - 1000);
	CHECK(shutdown(fd, SHUT_WR) == 0);
	CHECK(write(fd, "x", 1) < 0 && errno == EPIPE);
	CHECK(read_all(fd, r, 3) == 0 && !memcmp(r, "bye", 3));
	CHECK(read(fd, r, sizeof(r)) == 0);
	close(fd);
	return 0;
}

/* A server on the kernel alone: the client falls back to TCP. */
static int echo_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL);
	char buf[64];
	ssize_t n;

	CHECK(a >= 0);
	while ((n = read(a, buf, sizeof(buf))) > 0)
		CHECK(write(a, buf, (size_t)n) == n);
	close(a);
	return 0;
}

static int echo_client(void)
{
	int fd = dial();
	char buf[5];

	CHECK(fd >= 0);
	CHECK(write(fd, "hello", 5) == 5 && read_all(fd, buf, 5) == 0 && !memcmp(buf, "hello", 5));
	close(fd);
	return 0;
}

static int fallback_client(void)
{
	int fd = dial();
	char buf[5];

	CHECK(fd >= 0 && san(fd) == 0); /* the peer has no SAN listener */
	CHECK(write(fd, "hello", 5) == 5 && read_all(fd, buf, 5) == 0 && !memcmp(buf, "hello", 5));
	close(fd);
	return 0;
}

static int san_echo_client(void)
{
	int fd = dial();
	char buf[5];

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(write(fd, "hello", 5) == 5 && read_all(fd, buf, 5) == 0 && !memcmp(buf, "hello", 5));
	close(fd);
	return 0;
}

/* poll, FIONREAD, edge-triggered epoll. */
static int ready_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL), ep = epoll_create1(0), n;
	struct pollfd p = { .events = POLLIN };
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	char buf[1000];

	CHECK(a >= 0 && san(a) == 2);
	p.fd = a;
	CHECK(poll(&p, 1, 200) == 0);
	tell(ctl[1]);
	CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLIN));
	for (int i = 0; i < 100; i++) {
		CHECK(ioctl(a, FIONREAD, &n) == 0);
		if (n == 1000)
			break;
		usleep(10000);
	}
	CHECK(n == 1000);
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) == 0);
	CHECK(epoll_wait(ep, &ev, 1, 1000) == 1);
	CHECK(read(a, buf, 500) == 500);
	CHECK(epoll_wait(ep, &ev, 1, 100) == 0); /* no new data, no new edge */
	tell(ctl[1]);
	CHECK(epoll_wait(ep, &ev, 1, 5000) == 1); /* new data: a new edge */
	CHECK(fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK) == 0);
	CHECK(fcntl(a, F_GETFL) & O_NONBLOCK);
	/* The rest of the first write and the second: 501 bytes, then nothing. */
	for (int i = 0, got = 0; got < 501; i++) {
		ssize_t k = read(a, buf, sizeof(buf));

		CHECK(i < 500 && (k > 0 || errno == EAGAIN));
		got += k > 0 ? (int)k : 0;
		if (k < 0)
			usleep(10000);
	}
	CHECK(read(a, buf, 1) < 0 && errno == EAGAIN);
	tell(ctl[1]);
	close(a);
	return 0;
}

static int ready_client(void)
{
	int fd = dial();
	char buf[1000] = { 0 };

	CHECK(fd >= 0 && san(fd) == 2);
	hear(ctl[0]);
	CHECK(write(fd, buf, 1000) == 1000);
	hear(ctl[0]);
	CHECK(write(fd, buf, 1) == 1);
	hear(ctl[0]); /* the server checked that nothing more comes */
	close(fd);
	return 0;
}

/* A peer that dies: ECONNRESET on read, EPIPE on write, SIGPIPE unless MSG_NOSIGNAL. */
static int death_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL), st;
	char buf[10];

	CHECK(a >= 0 && san(a) == 2);
	CHECK(read_all(a, buf, 10) == 0);
	wait(&st);
	CHECK(WIFSIGNALED(st));
	usleep(200000);
	CHECK(read(a, buf, 10) < 0 && errno == ECONNRESET);
	CHECK(send(a, buf, 10, MSG_NOSIGNAL) < 0 && errno == EPIPE && pipes == 0);
	CHECK(write(a, buf, 10) < 0 && errno == EPIPE && pipes == 1);
	close(a);
	return 0;
}

static int death_client(void)
{
	int fd = dial();

	CHECK(fd >= 0 && write(fd, "0123456789", 10) == 10);
	usleep(100000);
	raise(SIGKILL);
	return 1;
}

/* dup, dup2, close of the first number: the socket lives on. */
static int dup_client(void)
{
	int fd = dial(), d, e;
	char buf[5];

	CHECK(fd >= 0 && san(fd) == 2);
	d = dup(fd);
	CHECK(d >= 0 && san(d) == 2);
	CHECK(close(fd) == 0 && san(fd) == 0);
	CHECK(write(d, "hello", 5) == 5);
	e = dup2(d, 200);
	CHECK(e == 200 && san(e) == 2 && close(d) == 0);
	CHECK(read_all(e, buf, 5) == 0 && !memcmp(buf, "hello", 5));
	close(e);
	return 0;
}

/* A listener shared with a child of fork(): the child takes kernel TCP clients. */
static int fork_server(void)
{
	int l = listener(), a, st;
	pid_t w;
	char buf[5];

	CHECK(l >= 0 && san(l) == 1);
	w = fork();
	if (!w) {
		a = accept(l, NULL, NULL);
		_exit(a >= 0 && san(a) == 0 && read_all(a, buf, 5) == 0 && write(a, buf, 5) == 5
			  ? 0
			  : 1);
	}
	tell(back[1]); /* the client's kernel-only child may connect */
	waitpid(w, &st, 0);
	CHECK(WIFEXITED(st) && !WEXITSTATUS(st));
	tell(back[1]);
	a = accept(l, NULL, NULL);
	CHECK(a >= 0 && san(a) == 2);
	CHECK(read_all(a, buf, 5) == 0 && write(a, buf, 5) == 5);
	close(a);
	return 0;
}

static int fork_client(void)
{
	uint16_t port;
	pid_t k;
	int st;

	/* The port goes to both clients. */
	CHECK(read(ctl[0], &port, sizeof(port)) == sizeof(port));
	hear(back[0]);
	k = fork();
	if (!k) {
		setenv("SANPROV_RUN_DISABLE", "1", 1);
		(void)!write(ctl[1], &port, sizeof(port));
		_exit(echo_client());
	}
	waitpid(k, &st, 0);
	CHECK(WIFEXITED(st) && !WEXITSTATUS(st));
	hear(back[0]);
	(void)!write(ctl[1], &port, sizeof(port));
	return san_echo_client();
}

/* A worker of fork_workers_server: epoll (EPOLLEXCLUSIVE, as nginx) and echo, until killed. */
static int epoll_worker(int l)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int ep = epoll_create1(0), a;
	char buf[5];

	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0);
	for (;;) {
		CHECK(epoll_wait(ep, &ev, 1, -1) >= 0 || errno == EINTR);
		a = accept4(l, NULL, NULL, SOCK_NONBLOCK);
		if (a < 0) {
			CHECK(errno == EAGAIN);
			continue;
		}
		/* Each worker takes SAN clients (the parent never accepts). */
		CHECK(san(a) == 2);
		fcntl(a, F_SETFL, 0);
		CHECK(read_all(a, buf, 5) == 0 && write(a, buf, 5) == 5);
		close(a);
	}
}

/*
 * Worker processes accept on a listener their parent made and never
 * accepts on (nginx's master): every client is a SAN one, without a
 * connect timeout.
 */
static int fork_workers_server(void)
{
	int l = listener(), st;
	pid_t w[2];

	CHECK(l >= 0 && san(l) == 1);
	fcntl(l, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 2; i++) {
		w[i] = fork();
		if (!w[i]) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* a server that fails takes them along */
			_exit(epoll_worker(l));
		}
	}
	hear(back[0]); /* the client is done */
	for (int i = 0; i < 2; i++)
		kill(w[i], SIGKILL);
	for (int i = 0; i < 2; i++) {
		waitpid(w[i], &st, 0);
		CHECK(WIFSIGNALED(st)); /* no worker failed a check before */
	}
	return 0;
}

static int fork_workers_client_run(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct timeval t0, t1;
	uint16_t port;
	char buf[5];

	CHECK(read(ctl[0], &port, sizeof(port)) == sizeof(port));
	sin.sin_port = htons(port);
	sin.sin_addr.s_addr = switch_tenv_addr();
	for (int i = 0; i < 6; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		gettimeofday(&t0, NULL);
		CHECK(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && san(fd) == 2);
		gettimeofday(&t1, NULL);
		/* Well inside the 10 s connect timeout a parent that never accepts would cost. */
		CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000 < 7000);
		CHECK(write(fd, "hello", 5) == 5 && read_all(fd, buf, 5) == 0 &&
		      !memcmp(buf, "hello", 5));
		close(fd);
	}
	return 0;
}

static int fork_workers_client(void)
{
	int r = fork_workers_client_run();

	tell(back[1]); /* done, or failed: the server stops its workers either way */
	return r;
}

/* sendfile to a SAN socket (copied), with and without an offset. */
static int sendfile_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL), f;
	char path[] = "/tmp/sanprov-sendfile-XXXXXX", buf[4096];
	off_t off = 1000;

	CHECK(a >= 0 && san(a) == 2);
	f = mkstemp(path);
	CHECK(f >= 0);
	unlink(path);
	for (int i = 0; i < 50; i++) {
		for (size_t k = 0; k < sizeof(buf); k++)
			buf[k] = (char)(i * 31 + k);
		CHECK(write(f, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
	}
	/* 50 pages: from byte 1000 by offset (the file's position stays), then from 0. */
	CHECK(lseek(f, 0, SEEK_SET) == 0);
	CHECK(sendfile(a, f, &off, 50 * 4096 - 1000) == 50 * 4096 - 1000 && off == 50 * 4096);
	CHECK(lseek(f, 0, SEEK_CUR) == 0);
	CHECK(sendfile(a, f, NULL, 50 * 4096) == 50 * 4096 && lseek(f, 0, SEEK_CUR) == 50 * 4096);
	close(f);
	close(a);
	return 0;
}

static int sendfile_client(void)
{
	int fd = dial();
	size_t n = 2 * 50 * 4096 - 1000;
	char *got = malloc(n);

	CHECK(fd >= 0 && san(fd) == 2 && got);
	CHECK(read_all(fd, got, n) == 0);
	for (size_t k = 0; k < n; k++) {
		size_t at = k < 50 * 4096 - 1000 ? k + 1000 : k - (50 * 4096 - 1000);

		CHECK(got[k] == (char)(at / 4096 * 31 + at % 4096));
	}
	free(got);
	close(fd);
	return 0;
}

/*
 * Non-blocking reads that race the data: small messages trickle in while
 * the reader spins; no read may answer 0 (EOF) before the shutdown.
 */
static int trickle_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL);
	char m[16];

	CHECK(a >= 0 && san(a) == 2);
	for (int i = 0; i < 20000; i++) {
		for (size_t k = 0; k < sizeof(m); k++)
			m[k] = (char)(i + (int)k);
		CHECK(write(a, m, 1 + (size_t)i % sizeof(m)) == 1 + i % (int)sizeof(m));
		if (i % 64 == 0)
			usleep(10);
	}
	shutdown(a, SHUT_WR);
	hear(back[0]);
	close(a);
	return 0;
}

static int trickle_client(void)
{
	int fd = dial();
	uint64_t want = 0, got = 0;
	char buf[64];
	ssize_t n;

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(!fcntl(fd, F_SETFL, O_NONBLOCK));
	for (int i = 0; i < 20000; i++)
		want += 1 + (uint64_t)i % 16;
	while ((n = recv(fd, buf, sizeof(buf), 0)) != 0) {
		CHECK(n > 0 || errno == EAGAIN);
		if (n > 0)
			got += (uint64_t)n;
	}
	if (got != want)
		fprintf(stderr, "# EOF after %llu of %llu bytes\n", (unsigned long long)got,
			(unsigned long long)want);
	tell(back[1]);
	close(fd);
	CHECK(got == want);
	return 0;
}

/*
 * Two threads on one socket at each end, one sending and one receiving,
 * blocking, far more than both rings hold: neither end may stall.
 */
#define DUPLEX_BYTES (8u << 20)

static void *duplex_reader(void *arg)
{
	static __thread char buf[65536];
	int fd = *(int *)arg;
	size_t got = 0;
	ssize_t n;

	while (got < DUPLEX_BYTES && (n = read(fd, buf, sizeof(buf))) > 0)
		got += (size_t)n;
	return (void *)(uintptr_t)(got == DUPLEX_BYTES);
}

static int duplex_run(int fd)
{
	static char out[100000];
	pthread_t t;
	void *ok;

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(!pthread_create(&t, NULL, duplex_reader, &fd));
	/* Small writes and large ones (by RDMA) alike. */
	for (size_t sent = 0, k = 0; sent < DUPLEX_BYTES; k++) {
		size_t n = k % 2 ? sizeof(out) : 3000;

		if (n > DUPLEX_BYTES - sent)
			n = DUPLEX_BYTES - sent;
		CHECK(write(fd, out, n) == (ssize_t)n);
		sent += n;
	}
	pthread_join(t, &ok);
	CHECK(ok);
	return 0;
}

static int duplex_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL), r = duplex_run(a);

	hear(back[0]);
	close(a);
	return r;
}

static int duplex_client(void)
{
	int fd = dial(), r = duplex_run(fd);

	tell(back[1]);
	close(fd);
	return r;
}

/* SO_SNDTIMEO: a blocking send to a peer that does not read ends with EAGAIN in time. */
static int sndtimeo_server(void)
{
	int l = listener(), a = accept(l, NULL, NULL);

	CHECK(a >= 0 && san(a) == 2);
	hear(back[0]);
	close(a);
	return 0;
}

static int sndtimeo_client(void)
{
	int fd = dial();
	struct timeval tv = { 0, 200000 }, t0, t1;
	static char buf[65536];
	ssize_t n = 0;
	long ms;

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(!setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
	gettimeofday(&t0, NULL);
	for (int i = 0; i < 10000 && n >= 0; i++)
		n = write(fd, buf, sizeof(buf));
	gettimeofday(&t1, NULL);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
	CHECK(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
	CHECK(ms >= 150 && ms < 5000);
	tell(back[1]);
	close(fd);
	return 0;
}

/*
 * Idle connections cost nothing: the progress thread looks only at those
 * an up-call or a waiting writer asks it to (it once looked at every
 * connection every millisecond).
 */
enum { IDLE_CONNS = 32 };

static int idle_server(void)
{
	int l = listener(), a[IDLE_CONNS];
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	uint16_t port;
	char c;

	CHECK(l >= 0 && !getsockname(l, (struct sockaddr *)&sin, &len));
	/* dial() reads the port once per connection. */
	port = ntohs(sin.sin_port);
	for (int i = 1; i < IDLE_CONNS; i++)
		CHECK(write(ctl[1], &port, sizeof(port)) == sizeof(port));
	for (int i = 0; i < IDLE_CONNS; i++) {
		a[i] = accept(l, NULL, NULL);
		CHECK(a[i] >= 0 && read(a[i], &c, 1) == 1 && write(a[i], &c, 1) == 1);
	}
	hear(back[0]);
	for (int i = 0; i < IDLE_CONNS; i++)
		close(a[i]);
	return 0;
}

static int idle_client(void)
{
	uint64_t (*looks)(void);
	uint64_t before;
	int fd[IDLE_CONNS];
	char c;

	*(void **)&looks = dlsym(RTLD_DEFAULT, "sanprov_preload_progress_looks");
	CHECK(looks);
	for (int i = 0; i < IDLE_CONNS; i++) {
		fd[i] = dial();
		CHECK(fd[i] >= 0 && san(fd[i]) == 2);
		CHECK(write(fd[i], "i", 1) == 1 && read(fd[i], &c, 1) == 1 && c == 'i');
	}
	usleep(50000); /* what the connections' start asked for is done */
	before = looks();
	usleep(300000);
	fprintf(stderr, "# %d idle connections, 300 ms: %llu looks\n", IDLE_CONNS,
		(unsigned long long)(looks() - before));
	CHECK(looks() - before < IDLE_CONNS);
	tell(back[1]);
	for (int i = 0; i < IDLE_CONNS; i++)
		close(fd[i]);
	return 0;
}

/*
 * A blocked writer sleeps on its connection's wake eventfd, which the
 * provider's up-calls signal: the reader's returned credits end its waits
 * (once they polled a number made of a pointer's bits instead, and every
 * wait ran out its millisecond or spun).
 */
enum { WAKE_BYTES = 8 << 20 };

static int wake_server(void)
{
	static char buf[65536];
	int l = listener(), a = accept(l, NULL, NULL);
	size_t got = 0;
	ssize_t n = 1;

	CHECK(a >= 0 && san(a) == 2);
	usleep(100000); /* the writer fills the rings and waits */
	while (got < WAKE_BYTES && (n = read(a, buf, sizeof(buf))) > 0)
		got += (size_t)n;
	CHECK(got == WAKE_BYTES && write(a, "k", 1) == 1);
	close(a);
	return 0;
}

static int wake_client(void)
{
	void (*stats)(uint64_t *, uint64_t *);
	uint64_t w0, k0, w1, k1;
	static char buf[65536];
	int fd = dial();
	char c;

	*(void **)&stats = dlsym(RTLD_DEFAULT, "sanprov_preload_wait_stats");
	CHECK(stats && fd >= 0 && san(fd) == 2);
	stats(&w0, &k0);
	for (size_t sent = 0; sent < WAKE_BYTES; sent += sizeof(buf))
		CHECK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
	CHECK(read(fd, &c, 1) == 1 && c == 'k');
	stats(&w1, &k1);
	fprintf(stderr, "# %llu waits, %llu ended by the wake eventfd\n",
		(unsigned long long)(w1 - w0), (unsigned long long)(k1 - k0));
	CHECK(w1 > w0 && k1 > k0);
	close(fd);
	return 0;
}

/*
 * An epoll_wait with SAN connections spins before it sleeps, taking the
 * provider's completions on its own thread: a message that comes within
 * the spin is found without a thread wake-up (the spin is long here, so
 * that a loaded host's scheduling does not decide the case).
 */
enum { SPIN_ROUNDS = 200 };

static int spin_server(void)
{
	void (*stats)(uint64_t *, uint64_t *);
	struct epoll_event e = { .events = EPOLLIN };
	uint64_t spun, slept;
	int l, a, ep;
	char c;

	setenv("SANPROV_RUN_EPOLL_SPIN_US", "5000", 1); /* before the provider starts */
	l = listener();
	a = accept(l, NULL, NULL);
	ep = epoll_create1(0);
	*(void **)&stats = dlsym(RTLD_DEFAULT, "sanprov_preload_epoll_stats");
	CHECK(stats && a >= 0 && san(a) == 2 && ep >= 0);
	CHECK(!fcntl(a, F_SETFL, O_NONBLOCK) && !epoll_ctl(ep, EPOLL_CTL_ADD, a, &e));
	for (int i = 0; i < SPIN_ROUNDS; i++) {
		ssize_t n;

		CHECK(epoll_wait(ep, &e, 1, 10000) == 1);
		while ((n = read(a, &c, 1)) < 0 && errno == EAGAIN)
			CHECK(epoll_wait(ep, &e, 1, 10000) == 1);
		CHECK(n == 1 && write(a, &c, 1) == 1);
	}
	stats(&spun, &slept);
	fprintf(stderr,
		"# %d round trips: %llu epoll_waits found the message spinning, %llu slept\n",
		SPIN_ROUNDS, (unsigned long long)spun, (unsigned long long)slept);
	CHECK(spun > 0);
	close(ep);
	close(a);
	return 0;
}

static int spin_client(void)
{
	int fd = dial();
	char c = 'p';

	CHECK(fd >= 0 && san(fd) == 2);
	for (int i = 0; i < SPIN_ROUNDS; i++)
		CHECK(write(fd, &c, 1) == 1 && read(fd, &c, 1) == 1 && c == 'p');
	close(fd);
	return 0;
}

struct tcase {
	const char *name;
	int (*server)(void);
	int (*client)(void);
	bool server_tcp; /* the server's switch is off */
};

static void on_pipe(int sig)
{
	(void)sig;
	pipes++;
}

/* SWITCH_SEM_CASES=1,3,...: those cases only (the soft-RoCE tier's short variant). */
static bool wanted(int n)
{
	const char *v = getenv("SWITCH_SEM_CASES");
	char *end;

	if (!v || !*v)
		return true;
	while (*v) {
		if (strtol(v, &end, 10) == n)
			return true;
		if (end == v)
			return false;
		v = *end == ',' ? end + 1 : end;
	}
	return false;
}

/* Both ends in processes of their own; 0 when both passed. */
static int run(const struct tcase *t)
{
	pid_t srv, cli;
	int st, ok = 1;

	if (pipe(ctl) || pipe(back))
		return 1;
	srv = fork();
	if (!srv) {
		alarm(60);
		signal(SIGPIPE, on_pipe);
		if (t->server_tcp)
			setenv("SANPROV_RUN_DISABLE", "1", 1);
		cli = fork();
		if (!cli)
			_exit(t->client());
		st = t->server();
		if (t->server != death_server)
			waitpid(cli, &ok, 0);
		_exit(st || (t->server != death_server && (!WIFEXITED(ok) || WEXITSTATUS(ok))));
	}
	waitpid(srv, &st, 0);
	close(ctl[0]);
	close(ctl[1]);
	close(back[0]);
	close(back[1]);
	return !(WIFEXITED(st) && !WEXITSTATUS(st));
}

int main(void)
{
	static const struct tcase cases[] = {
		{ "EOF after shutdown(SHUT_WR), after all data", eof_server, eof_client, false },
		{ "a peer without the switch: TCP, transparently", echo_server, fallback_client,
		  true },
		{ "poll, FIONREAD, edge-triggered epoll, O_NONBLOCK", ready_server, ready_client,
		  false },
		{ "a dead peer: ECONNRESET, EPIPE, SIGPIPE unless MSG_NOSIGNAL", death_server,
		  death_client, false },
		{ "dup, dup2, close of the first number", echo_server, dup_client, false },
		{ "fork: the child accepts TCP clients, the parent SAN ones", fork_server,
		  fork_client, false },
		{ "non-blocking reads racing the data: no EOF before the shutdown", trickle_server,
		  trickle_client, false },
		{ "one thread sending, one receiving, at both ends, rings full: no stall",
		  duplex_server, duplex_client, false },
		{ "SO_SNDTIMEO: a blocking send to a peer that does not read gives EAGAIN",
		  sndtimeo_server, sndtimeo_client, false },
		{ "fork: workers on epoll (EPOLLEXCLUSIVE) take SAN clients, the parent never "
		  "accepts",
		  fork_workers_server, fork_workers_client, false },
		{ "sendfile to a SAN socket, with and without an offset", sendfile_server,
		  sendfile_client, false },
		{ "idle connections: the progress thread looks at none of them", idle_server,
		  idle_client, false },
		{ "a blocked writer is woken by its connection's events, not its timer",
		  wake_server, wake_client, false },
		{ "epoll_wait finds a message while it spins, before it sleeps", spin_server,
		  spin_client, false },
	};
	int n = (int)(sizeof(cases) / sizeof(cases[0]));

	switch_tenv_setup();
	*(void **)&is_san = dlsym(RTLD_DEFAULT, "sanprov_preload_is_san");
	printf("1..%d\n", n);
	for (int i = 0; i < n; i++) {
		int r;

		if (!wanted(i + 1)) {
			printf("ok %d # SKIP not in SWITCH_SEM_CASES\n", i + 1);
			continue;
		}
		/* A listening rdma_cm_id is one process's: the workers stay on TCP there. */
		if (cases[i].server == fork_workers_server && switch_tenv_verbs()) {
			printf("ok %d # SKIP %s: the verbs backend cannot share a listener\n",
			       i + 1, cases[i].name);
			continue;
		}
		r = run(&cases[i]);

		printf("%sok %d - %s\n", r ? "not " : "", i + 1, cases[i].name);
		fflush(stdout);
	}
	return 0;
}
