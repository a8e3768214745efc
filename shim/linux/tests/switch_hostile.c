/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Linux switch against bad input and faults (run under its preload):
 * a hand-written SAN peer (this program again, without the preload,
 * driving the provider's SPI directly as tests/sw.c does) that sends
 * garbage, cut or lying messages to a preloaded application; descriptor
 * exhaustion; a provider that does not start; and an application that
 * misuses its sockets.  The application gets the errno TCP would give,
 * never a crash or a hang.  Prints TAP.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sw.h"
#include "swc_wire.h"
#include "switch_tenv.h"

static int (*is_san)(int);
static int ctl[2];  /* server -> client: the port */
static int back[2]; /* client -> server: go-aheads */
static int fwd[2];  /* server -> client: go-aheads */

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

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int listener(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port;

	sin.sin_addr.s_addr = switch_tenv_addr();
	if (l < 0 || bind(l, (struct sockaddr *)&sin, sizeof(sin)) || listen(l, 64) ||
	    getsockname(l, (struct sockaddr *)&sin, &len))
		return -1;
	port = ntohs(sin.sin_port);
	(void)!write(ctl[1], &port, sizeof(port));
	return l;
}

static uint16_t the_port(void)
{
	static uint16_t port;

	if (!port && read(ctl[0], &port, sizeof(port)) != sizeof(port))
		return 0;
	return port;
}

/* A new connection to the server's port: the fd, or -1 with errno (the socket closed). */
static int dial(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0), e;

	if (fd < 0)
		return -1;
	sin.sin_port = htons(the_port());
	sin.sin_addr.s_addr = switch_tenv_addr();
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin))) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
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

/* The hand-written peer --------------------------------------------------------------- */

#define RAW_N 64
#define RAW_MSG 8192 /* the switch's message size (SANPROV_RUN_MSG_SIZE) */

static struct sw sw;

struct raw {
	sp_socket s;
	char *tx, *rx, *big;
	void *tx_h, *rx_h;
	struct sp_overlapped rov[RAW_N], tov[RAW_N];
	unsigned int n_tx;
	uint64_t *word;
	uint8_t desc[SWC_DESC_MAX], big_desc[SWC_DESC_MAX];
	uint32_t desc_len, big_desc_len;
};

static int raw_init(struct raw *r, sp_socket s)
{
	uint32_t flags;
	int err = 0;

	memset(r, 0, sizeof(*r));
	r->s = s;
	r->tx = aligned_alloc(4096, RAW_N * RAW_MSG);
	r->rx = aligned_alloc(4096, RAW_N * RAW_MSG);
	r->word = aligned_alloc(4096, 4096);
	r->big = aligned_alloc(4096, 4096);
	CHECK(r->tx && r->rx && r->word && r->big);
	r->tx_h = sw.register_memory(s, r->tx, RAW_N * RAW_MSG, SP_MEM_READ, &err);
	r->rx_h = sw.register_memory(s, r->rx, RAW_N * RAW_MSG, SP_MEM_WRITE, &err);
	CHECK(r->tx_h && r->rx_h);
	r->desc_len = sizeof(r->desc);
	CHECK(!sw.register_rdma_memory(s, r->word, 16, SP_MEM_WRITE, r->desc, &r->desc_len, &err));
	r->big_desc_len = sizeof(r->big_desc);
	CHECK(!sw.register_rdma_memory(s, r->big, 4096, SP_MEM_READ, r->big_desc, &r->big_desc_len,
				       &err));
	for (unsigned int i = 0; i < RAW_N; i++) {
		struct sp_wsabufex b = { RAW_MSG, r->rx + i * RAW_MSG, r->rx_h };

		r->rov[i].event = r->tov[i].event = 1;
		flags = 0;
		CHECK(sw.p.recv(s, &b, 1, NULL, &flags, &r->rov[i], NULL, NULL, &err) &&
		      err == SP_WSA_IO_PENDING);
	}
	return 0;
}

static void raw_send(struct raw *r, const void *msg, uint32_t len)
{
	unsigned int i = r->n_tx++ % RAW_N;
	struct sp_wsabufex b = { len, r->tx + i * RAW_MSG, r->tx_h };
	int err = 0;

	memcpy(b.buf, msg, len);
	r->tov[i].event = 1;
	sw.p.send(r->s, &b, 1, NULL, 0, &r->tov[i], NULL, NULL, &err);
}

static void raw_hdr(struct raw *r, uint8_t type, uint32_t credits, uint32_t len, uint64_t total,
		    const void *desc, uint8_t desc_len, const void *payload, uint32_t sent_len)
{
	char m[RAW_MSG];
	struct swc_hdr h = {
		.type = type, .desc_len = desc_len, .credits = credits, .len = len, .total = total
	};

	memset(m, 0, sizeof(m));
	memcpy(m, &h, sizeof(h));
	if (desc_len)
		memcpy(m + sizeof(h), desc, desc_len);
	if (payload)
		memcpy(m + sizeof(h) + desc_len, payload, sent_len - sizeof(h) - desc_len);
	raw_send(r, m, sent_len);
}

static void raw_hello(struct raw *r, uint32_t msg_size)
{
	raw_hdr(r, SWC_MSG_HELLO, 0, 0, RAW_N | (uint64_t)msg_size << 32, r->desc,
		(uint8_t)r->desc_len, NULL, (uint32_t)sizeof(struct swc_hdr) + r->desc_len);
}

static void raw_fini(struct raw *r)
{
	int err;

	sw.p.close_socket(r->s, &err);
	free(r->tx);
	free(r->rx);
	free(r->word);
	free(r->big);
}

enum attack {
	GARBAGE,
	CUT_HEADER,
	LENGTH_PAST,
	LARGE_READ_LIES,
	LARGE_READ_NOWHERE,
	CREDITS_NEVER_GIVEN,
	DATA_AFTER_SHUTDOWN,
	HELLO_WRONG_SIZE,
	N_ATTACKS
};

static const char *const attack_name[N_ATTACKS] = {
	"garbage instead of a hello",
	"a header cut short",
	"a length past the message",
	"LARGE_READ of 1 MiB through a descriptor of 4 KiB",
	"LARGE_READ through a made-up descriptor",
	"credits for messages never sent",
	"data after SHUTDOWN",
	"a hello with another message size",
};

static void attack(struct raw *r, enum attack a)
{
	uint8_t junk[64];
	char p[100] = { 0 };

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	if (a != GARBAGE && a != HELLO_WRONG_SIZE)
		raw_hello(r, RAW_MSG);
	switch (a) {
	case GARBAGE:
		raw_send(r, junk, sizeof(junk));
		break;
	case CUT_HEADER:
		raw_send(r, "\2\0\0\0", 4);
		break;
	case LENGTH_PAST:
		raw_hdr(r, SWC_MSG_DATA, 0, 4000, 0, NULL, 0, p,
			(uint32_t)sizeof(struct swc_hdr) + 100);
		break;
	case LARGE_READ_LIES:
		raw_hdr(r, SWC_MSG_LARGE_READ, 0, 0, 1 << 20, r->big_desc, (uint8_t)r->big_desc_len,
			NULL, (uint32_t)sizeof(struct swc_hdr) + r->big_desc_len);
		break;
	case LARGE_READ_NOWHERE:
		raw_hdr(r, SWC_MSG_LARGE_READ, 0, 0, 100000, junk, 40, NULL,
			(uint32_t)sizeof(struct swc_hdr) + 40);
		break;
	case CREDITS_NEVER_GIVEN:
		raw_hdr(r, SWC_MSG_DATA, 1000, 1, 0, NULL, 0, "x",
			(uint32_t)sizeof(struct swc_hdr) + 1);
		break;
	case DATA_AFTER_SHUTDOWN:
		raw_hdr(r, SWC_MSG_SHUTDOWN, 0, 0, 0, NULL, 0, NULL,
			(uint32_t)sizeof(struct swc_hdr));
		raw_hdr(r, SWC_MSG_DATA, 0, 1, 0, NULL, 0, "x",
			(uint32_t)sizeof(struct swc_hdr) + 1);
		break;
	case HELLO_WRONG_SIZE:
		raw_hello(r, 4096);
		break;
	default:
		break;
	}
}

/* The peer: attacks the first connection, serves "ok" on the second. */
static int peer_main(enum attack a)
{
	struct sockaddr_in sin;
	struct raw r;
	sp_socket l, s;
	uint16_t port;
	int err = 0;

	CHECK(!sw_load(&sw));
	l = sw_listen(&sw, &sin);
	CHECK(l != SP_INVALID_SOCKET);
	port = ntohs(sin.sin_port);
	CHECK(write(ctl[1], &port, sizeof(port)) == sizeof(port));
	s = sw.p.accept(l, NULL, NULL, NULL, 0, &err);
	CHECK(s != SP_INVALID_SOCKET);
	CHECK(!raw_init(&r, s));
	attack(&r, a);
	hear(back[0]);
	raw_fini(&r);
	s = sw.p.accept(l, NULL, NULL, NULL, 0, &err);
	CHECK(s != SP_INVALID_SOCKET);
	CHECK(!raw_init(&r, s));
	raw_hello(&r, RAW_MSG);
	raw_hdr(&r, SWC_MSG_DATA, 0, 2, 0, NULL, 0, "ok", (uint32_t)sizeof(struct swc_hdr) + 2);
	hear(back[0]);
	raw_fini(&r);
	sw.p.close_socket(l, &err);
	return 0;
}

/* The application under attack: a reset, at once; its other sockets go on. */
static int victim(enum attack a)
{
	struct pollfd p = { .events = POLLIN | POLLOUT };
	int fd = dial(), fd2;
	uint64_t t0 = now_ms();
	char buf[4096];
	ssize_t n;

	CHECK(fd >= 0 && san(fd) == 2);
	/* What the peer's lying descriptor does cover may come first: then the reset. */
	size_t total = 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0 && total <= 4096)
		total += (size_t)n;
	/* The end may come first (the data after it not there yet): the reset then. */
	while (a == DATA_AFTER_SHUTDOWN && n == 0 && now_ms() - t0 < 3000) {
		usleep(1000);
		n = read(fd, buf, sizeof(buf));
	}
	if (n >= 0)
		fprintf(stderr, "# read gave %zd after %zu\n", n, total);
	CHECK(n < 0 && errno == ECONNRESET && total <= (a == LARGE_READ_LIES ? 4096u : 0u));
	CHECK(now_ms() - t0 < 5000);
	p.fd = fd;
	CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLIN));
	CHECK(read(fd, buf, sizeof(buf)) < 0 && errno == ECONNRESET);
	CHECK(send(fd, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE);
	CHECK(close(fd) == 0);
	tell(back[1]);
	fd2 = dial();
	CHECK(fd2 >= 0 && san(fd2) == 2);
	CHECK(!read_all(fd2, buf, 2) && !memcmp(buf, "ok", 2));
	CHECK(write(fd2, "y", 1) == 1);
	tell(back[1]);
	close(fd2);
	return 0;
}

/* Preloaded pairs ------------------------------------------------------------------ */

/* Echoes each connection until its end; a byte from the client on fwd: "z" on the connection. */
static int echo_server(void)
{
	int l = listener(), a;
	char buf[4096];
	ssize_t n;

	CHECK(l >= 0);
	while ((a = accept(l, NULL, NULL)) >= 0) {
		struct pollfd p[2] = { { .fd = a, .events = POLLIN },
				       { .fd = fwd[0], .events = POLLIN } };

		for (;;) {
			CHECK(poll(p, 2, -1) > 0);
			if (p[1].revents) {
				hear(fwd[0]);
				CHECK(write(a, "z", 1) == 1);
			}
			if (!p[0].revents)
				continue;
			n = read(a, buf, sizeof(buf));
			if (n <= 0)
				break;
			CHECK(write(a, buf, (size_t)n) == n);
		}
		tell(back[1]); /* this connection ended */
		close(a);
	}
	return 0;
}

static int nofile_client(void)
{
	struct rlimit rl, low;
	int fd, got_emfile = 0;

	CHECK(!getrlimit(RLIMIT_NOFILE, &rl));
	/* A connection works, and so the provider is up. */
	fd = dial();
	CHECK(fd >= 0 && san(fd) == 2);
	close(fd);
	hear(back[0]);
	/* Every number of free descriptors from 0 to 12: a connection or EMFILE, never another
	 * error. */
	for (int free_fds = 0; free_fds <= 12; free_fds++) {
		for (int round = 0; round < 8; round++) {
			int top = fcntl(0, F_DUPFD, 0);

			CHECK(top >= 0);
			close(top);
			low = rl;
			low.rlim_cur = (rlim_t)(top + free_fds);
			CHECK(!setrlimit(RLIMIT_NOFILE, &low));
			fd = dial();
			if (fd < 0) {
				CHECK(errno == EMFILE);
				got_emfile++;
			} else {
				CHECK(san(fd) == 2 || san(fd) == 0);
				CHECK(write(fd, "a", 1) == 1);
				char c;
				CHECK(read(fd, &c, 1) == 1 && c == 'a');
				close(fd);
				hear(back[0]);
			}
			CHECK(!setrlimit(RLIMIT_NOFILE, &rl));
		}
	}
	CHECK(got_emfile > 0);
	/*
	 * Nothing leaked: with few provider sockets (SANPROV_SPI_MAX_SOCKETS=16),
	 * more connections than that, each SAN.  One at a time: the echo server
	 * serves one connection at a time, and a SAN connect waits for the
	 * accept (a second one at once would time out and take TCP).
	 */
	for (int i = 0; i < 20; i++) {
		char c;

		fd = dial();
		CHECK(fd >= 0 && san(fd) == 2);
		CHECK(write(fd, "b", 1) == 1 && read(fd, &c, 1) == 1 && c == 'b');
		close(fd);
		hear(back[0]);
	}
	return 0;
}

/*
 * An accept with no descriptor left: EMFILE, and the connection accepted
 * later (the switch once took the SAN connection from the provider first,
 * then dropped it when it found no descriptor: the client fell back to
 * TCP).
 */
static int nofile_accept_server(void)
{
	struct rlimit rl, low;
	int l = listener(), a, top, got_emfile = 0;
	char c;

	CHECK(l >= 0 && !getrlimit(RLIMIT_NOFILE, &rl));
	for (int free_fds = 0; free_fds <= 16; free_fds++) {
		struct pollfd p = { .fd = l, .events = POLLIN };

		/* A connection waits (a SAN connect returns only when it is accepted). */
		CHECK(poll(&p, 1, 10000) == 1);
		top = fcntl(0, F_DUPFD, 0);
		CHECK(top >= 0);
		close(top);
		low = rl;
		low.rlim_cur = (rlim_t)(top + free_fds);
		CHECK(!setrlimit(RLIMIT_NOFILE, &low));
		a = accept(l, NULL, NULL);
		if (a < 0) {
			CHECK(errno == EMFILE);
			got_emfile++;
		}
		CHECK(!setrlimit(RLIMIT_NOFILE, &rl));
		if (a < 0)
			a = accept(l, NULL, NULL);
		CHECK(a >= 0 && san(a) == 2);
		CHECK(read(a, &c, 1) == 1 && write(a, &c, 1) == 1);
		close(a);
	}
	CHECK(got_emfile > 0);
	return 0;
}

static int nofile_accept_client(void)
{
	char c;

	for (int i = 0; i <= 16; i++) {
		int fd = dial();

		CHECK(fd >= 0 && san(fd) == 2);
		CHECK(write(fd, "q", 1) == 1 && read(fd, &c, 1) == 1 && c == 'q');
		close(fd);
	}
	return 0;
}

/* More connections over time than the provider has sockets at once. */
static int churn_client(void)
{
	char c;

	for (int i = 0; i < 1100; i++) {
		int fd = dial();

		CHECK(fd >= 0 && san(fd) == 2);
		CHECK(write(fd, "c", 1) == 1 && read(fd, &c, 1) == 1 && c == 'c');
		close(fd);
		hear(back[0]);
	}
	return 0;
}

/* A provider that does not start: TCP for every socket, one warning. */
static int nostart_app(void)
{
	int l = listener(), fd[3], a[3];
	char c;

	CHECK(l >= 0 && san(l) == 0);
	for (int i = 0; i < 3; i++) {
		fd[i] = dial();
		CHECK(fd[i] >= 0 && san(fd[i]) == 0);
		a[i] = accept(l, NULL, NULL);
		CHECK(a[i] >= 0 && san(a[i]) == 0);
		CHECK(write(fd[i], "t", 1) == 1 && read(a[i], &c, 1) == 1 && c == 't');
	}
	for (int i = 0; i < 3; i++) {
		close(fd[i]);
		close(a[i]);
	}
	close(l);
	return 0;
}

static int nostart_case(const char *var, const char *val)
{
	char path[] = "/tmp/switch_hostile_XXXXXX", buf[4096];
	int fd = mkstemp(path), st, lines = 0, warnings = 0;
	pid_t pid;
	ssize_t n;

	CHECK(fd >= 0);
	unlink(path);
	pid = fork();
	if (!pid) {
		setenv(var, val, 1);
		dup2(fd, 2);
		_exit(nostart_app());
	}
	CHECK(waitpid(pid, &st, 0) == pid);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	CHECK(n >= 0);
	buf[n] = 0;
	for (char *p = buf; (p = strchr(p, '\n')); p++)
		lines++;
	for (char *p = buf; (p = strstr(p, "warning")); p++)
		warnings++;
	if (warnings != 1)
		fprintf(stderr, "# stderr: %s", buf);
	CHECK(WIFEXITED(st) && !WEXITSTATUS(st));
	/* The provider may say why on a line of its own (lines: 2). */
	CHECK(warnings == 1 && lines <= 2);
	return 0;
}

/* Misuse by the application ---------------------------------------------------------- */

/* Hidden from the compiler, which would flag the calls. */
static void *volatile bad_ptr = (void *)16;
static volatile int minus_one = -1;

static int bad_pointer_client(void)
{
	int fd = dial();
	char buf[8];

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(write(fd, bad_ptr, 5) < 0 && errno == EFAULT);
	CHECK(write(fd, bad_ptr, 200000) < 0 && errno == EFAULT);
	CHECK(write(fd, "hello", 5) == 5);
	usleep(100000);
	CHECK(read(fd, bad_ptr, 5) < 0 && errno == EFAULT);
	/* Nothing was lost. */
	CHECK(!read_all(fd, buf, 5) && !memcmp(buf, "hello", 5));
	close(fd);
	return 0;
}

static int iov_client(void)
{
	static struct iovec iov[IOV_MAX + 1];
	int fd = dial();
	char c = 'v';

	CHECK(fd >= 0 && san(fd) == 2);
	for (int i = 0; i <= IOV_MAX; i++)
		iov[i] = (struct iovec){ &c, 1 };
	CHECK(writev(fd, iov, IOV_MAX + 1) < 0 && errno == EINVAL);
	CHECK(writev(fd, iov, minus_one) < 0 && errno == EINVAL);
	CHECK(readv(fd, iov, IOV_MAX + 1) < 0 && errno == EINVAL);
	CHECK(readv(fd, iov, minus_one) < 0 && errno == EINVAL);
	CHECK(writev(fd, iov, 3) == 3);
	CHECK(readv(fd, iov, 1) == 1 && c == 'v');
	close(fd);
	return 0;
}

static int flags_client(void)
{
	int fd = dial();
	char c;

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(send(fd, "o", 1, MSG_OOB) < 0 && errno == EOPNOTSUPP);
	CHECK(write(fd, "p", 1) == 1);
	usleep(50000);
	CHECK(recv(fd, &c, 1, MSG_PEEK) < 0 && errno == EOPNOTSUPP);
	CHECK(recv(fd, &c, 1, MSG_OOB) < 0 && errno == EOPNOTSUPP);
	/* The out-of-band byte did not go into the stream. */
	CHECK(read(fd, &c, 1) == 1 && c == 'p');
	close(fd);
	return 0;
}

static void on_alarm(int sig)
{
	(void)sig;
}

static int eintr_client(void)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { .it_value = { 0, 200000 } };
	int fd = dial();
	uint64_t t0;
	char c;

	CHECK(fd >= 0 && san(fd) == 2);
	CHECK(!sigaction(SIGALRM, &sa, NULL)); /* no SA_RESTART */
	t0 = now_ms();
	CHECK(!setitimer(ITIMER_REAL, &it, NULL));
	CHECK(read(fd, &c, 1) < 0 && errno == EINTR);
	CHECK(now_ms() - t0 < 3000);
	CHECK(write(fd, "i", 1) == 1 && read(fd, &c, 1) == 1 && c == 'i');
	close(fd);
	return 0;
}

struct reader {
	int fd;
	ssize_t n;
	int err;
	char c;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->n = read(r->fd, &r->c, 1);
	r->err = errno;
	return NULL;
}

static int close_reader_client(void)
{
	struct reader r = { .fd = dial() };
	pthread_t t;

	CHECK(r.fd >= 0 && san(r.fd) == 2);
	CHECK(!pthread_create(&t, NULL, reader_main, &r));
	usleep(100000);
	CHECK(close(r.fd) == 0);
	/* Other sockets get the number now; the reader does not mind. */
	int p[2];
	CHECK(!pipe(p));
	usleep(50000);
	tell(fwd[1]); /* the server writes "z" to the connection */
	CHECK(!pthread_join(t, NULL));
	CHECK((r.n == 1 && r.c == 'z') || (r.n < 0 && r.err == EBADF));
	hear(back[0]); /* the server saw the end */
	close(p[0]);
	close(p[1]);
	return 0;
}

static int dup2_client(void)
{
	int fd = dial(), p[2];
	char c;

	CHECK(fd >= 0 && san(fd) == 2 && !pipe(p));
	CHECK(dup2(p[1], fd) == fd && san(fd) == 0);
	CHECK(write(fd, "d", 1) == 1 && read(p[0], &c, 1) == 1 && c == 'd');
	hear(back[0]); /* the connection's last number went: the server saw its end */
	close(fd);
	close(p[0]);
	close(p[1]);
	return 0;
}

static int fork_client(void)
{
	int fd = dial(), st;
	pid_t pid;
	char c;

	CHECK(fd >= 0 && san(fd) == 2);
	pid = fork();
	if (!pid) {
		CHECK(read(fd, &c, 1) < 0 && errno == ENOTCONN);
		CHECK(write(fd, "f", 1) < 0 && errno == ENOTCONN);
		CHECK(send(fd, "f", 1, MSG_NOSIGNAL) < 0 && errno == ENOTCONN);
		CHECK(close(fd) == 0);
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st));
	CHECK(write(fd, "g", 1) == 1 && read(fd, &c, 1) == 1 && c == 'g');
	close(fd);
	return 0;
}

/* Running the cases ------------------------------------------------------------------- */

static char *self;

static pid_t spawn(int (*fn)(void), const char *env)
{
	pid_t pid = fork();

	if (!pid) {
		if (env)
			putenv((char *)env);
		_exit(fn());
	}
	return pid;
}

static bool exited_ok(int st)
{
	return WIFEXITED(st) && !WEXITSTATUS(st);
}

/*
 * Wait for both (up to limit_s, then they count as hung and are killed): 0
 * when both passed.  A server that serves forever (kill_srv) ends with the
 * client.
 */
static int reap(pid_t srv, pid_t cli, int limit_s, bool kill_srv)
{
	uint64_t end = now_ms() + (uint64_t)limit_s * 1000;
	bool srv_done = false, cli_done = false;
	int st, bad = 0;

	while (!srv_done || !cli_done) {
		pid_t p = waitpid(-1, &st, WNOHANG);

		if (p == cli) {
			cli_done = true;
			if (!exited_ok(st))
				fprintf(stderr, "# client: status 0x%x\n", st), bad = 1;
			if (kill_srv && !srv_done)
				kill(srv, SIGKILL);
		} else if (p == srv) {
			srv_done = true;
			if (!exited_ok(st) && !(kill_srv && cli_done))
				fprintf(stderr, "# server: status 0x%x\n", st), bad = 1;
		} else if (now_ms() > end) {
			fprintf(stderr, "# hung: killed\n");
			kill(srv, SIGKILL);
			kill(cli, SIGKILL);
			while (waitpid(-1, &st, 0) > 0)
				;
			return 1;
		} else {
			usleep(5000);
		}
	}
	return bad;
}

static int pipes_open(void)
{
	return pipe(ctl) || pipe(back) || pipe(fwd);
}

static void pipes_close(void)
{
	close(ctl[0]);
	close(ctl[1]);
	close(back[0]);
	close(back[1]);
	close(fwd[0]);
	close(fwd[1]);
}

static int n_case;

/* SWITCH_HOSTILE_ONLY=n runs case n alone (the others are skipped), for debugging. */
static bool wanted(void)
{
	const char *v = getenv("SWITCH_HOSTILE_ONLY");

	if (!v || atoi(v) == n_case + 1)
		return true;
	printf("ok %d # SKIP not asked for\n", ++n_case);
	return false;
}

static void report(int r, const char *name)
{
	printf("%sok %d - %s\n", r ? "not " : "", ++n_case, name);
	fflush(stdout);
}

static void pair_case(const char *name, int (*server)(void), int (*client)(void), int limit_s,
		      const char *client_env)
{
	pid_t srv, cli;

	if (!wanted())
		return;
	if (pipes_open()) {
		report(1, name);
		return;
	}
	srv = spawn(server, NULL);
	cli = spawn(client, client_env);
	/* The echo server never ends by itself. */
	report(reap(srv, cli, limit_s, server == echo_server), name);
	pipes_close();
}

static int victim_for;

static int victim_main(void)
{
	return victim((enum attack)victim_for);
}

int main(int argc, char **argv)
{
	char name[128];

	self = argv[0];
	switch_tenv_setup();
	*(void **)&is_san = dlsym(RTLD_DEFAULT, "sanprov_preload_is_san");
	if (argc == 3 && !strcmp(argv[1], "peer")) {
		/* The pipes are the parent's, at fixed numbers. */
		ctl[1] = 3;
		back[0] = 4;
		return peer_main((enum attack)atoi(argv[2]));
	}
	signal(SIGPIPE, SIG_IGN);
	printf("1..%d\n", N_ATTACKS + 13);
	for (int a = 0; a < N_ATTACKS; a++) {
		pid_t srv, cli;

		if (!wanted())
			continue;
		snprintf(name, sizeof(name),
			 "a peer sends %s: ECONNRESET at once, other sockets go on",
			 attack_name[a]);
		if (pipes_open()) {
			report(1, name);
			continue;
		}
		victim_for = a;
		srv = fork();
		if (!srv) {
			/* The peer runs without the preload, its pipe ends at 3 and 4. */
			int c1 = dup(ctl[1]), b0 = dup(back[0]);

			snprintf(name, sizeof(name), "%d", a);
			if (c1 < 0 || b0 < 0 || dup2(c1, 3) < 0 || dup2(b0, 4) < 0)
				_exit(1);
			unsetenv("LD_PRELOAD");
			execl(self, self, "peer", name, (char *)NULL);
			_exit(127);
		}
		cli = spawn(victim_main, NULL);
		report(reap(srv, cli, 15, false), name);
		pipes_close();
	}
	pair_case("EMFILE from socket() and connect(), never another errno", echo_server,
		  nofile_client, 30, "SANPROV_SPI_MAX_SOCKETS=16");
	pair_case("EMFILE from accept(), the connection accepted later", nofile_accept_server,
		  nofile_accept_client, 20, NULL);
	pair_case("1100 connections one after another (provider: 1024 sockets at once)",
		  echo_server, churn_client, 60, NULL);
	{
		static const char *const how[][3] = {
			{ "SANPROV_RUN_PROVIDER", "/nonexistent/libsanprov.so",
			  "a provider library that is not there" },
			{ "SANPROV_RUN_PROVIDER", NULL, "a provider that refuses WSPStartupEx" },
			{ "SANPROV_BACKEND", "nonexistent", "a backend that does not exist" },
		};
		for (int i = 0; i < 3; i++) {
			const char *val = how[i][1];
			char lib[4096];

			if (!val) {
				snprintf(lib, sizeof(lib), "%s", self);
				char *slash = strrchr(lib, '/');
				snprintf(slash ? slash + 1 : lib,
					 sizeof(lib) - (size_t)(slash ? slash + 1 - lib : 0),
					 "libswitch_badprov.so");
				val = lib;
			}
			if (!wanted())
				continue;
			if (pipes_open()) {
				report(1, how[i][2]);
				continue;
			}
			snprintf(name, sizeof(name), "%s: every socket on TCP, exactly one warning",
				 how[i][2]);
			report(nostart_case(how[i][0], val), name);
			pipes_close();
		}
	}
	pair_case("read/write with a bad pointer: EFAULT, nothing lost", echo_server,
		  bad_pointer_client, 15, NULL);
	pair_case("readv/writev with iovcnt past IOV_MAX or negative: EINVAL", echo_server,
		  iov_client, 15, NULL);
	pair_case("MSG_PEEK, MSG_OOB: EOPNOTSUPP, nothing sent", echo_server, flags_client, 15,
		  NULL);
	pair_case("a signal interrupts a blocking read: EINTR", echo_server, eintr_client, 15,
		  NULL);
	pair_case("close() from another thread while a read blocks: no crash", echo_server,
		  close_reader_client, 15, NULL);
	pair_case("dup2 over a SAN socket: the connection ends, the number is the new file",
		  echo_server, dup2_client, 15, NULL);
	pair_case("fork: the child's calls on a connected SAN socket give ENOTCONN", echo_server,
		  fork_client, 15, NULL);
	return 0;
}
