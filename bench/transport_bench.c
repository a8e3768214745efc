/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * transport_bench: one byte stream four ways between the same two
 * processes (a forked server), side by side in one run:
 *   tcp      a TCP loopback socket (TCP_NODELAY)
 *   session  the switch core's session protocol over the SAN SPI (polled)
 *   spi      RDMA writes straight through the SPI, the receiver polling
 *            the last bytes of its buffer
 *   backend  the same RDMA writes on the verbs backend alone
 * For each size, the round trip (ping-pong, usec) and one-way bandwidth
 * (GB/s, until the receiver's one-byte answer), medians of -r runs taken
 * in turns; x = against TCP.  The TCP socket also carries the setup.
 *
 *   transport_bench [-r RUNS] [-n PINGPONGS] [-m MIB]
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"
#include "sw.h"
#include "swc.h"
#include "tdev.h"
#include "vb.h"

static const size_t sizes[] = { 64, 4096, 65536, 1u << 20 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define MAXLEN (1u << 20)
#define BUFLEN (MAXLEN + 4096)
#define DEPTH 4
/*
 * Polling loops let the core go now and then: when both ends share a core
 * (a loaded host) a spin that never yields costs a scheduler slice per turn.
 */
#define SPIN_YIELD 64
/* The transports: TCP, the session polled and by up-call, RDMA through the SPI, the backend. */
enum { X_TCP, X_SESS, X_UPCALL, X_SPI, X_BACKEND, NX };
static const char *const names[NX] = { "tcp", "session", "upcall", "spi", "backend" };

static int tcp_fd;
static char *sbuf, *rbuf;
/* -s and -t: the sizes and transports measured (profiling one path). */
static size_t only_size;
static bool is_server;
static bool skip_x[NX];

static int full_io(bool wr, void *p, size_t n)
{
	char *c = p;

	while (n) {
		ssize_t k = wr ? write(tcp_fd, c, n) : read(tcp_fd, c, n);
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* The RDMA paths: post a write of n bytes from the local source to the peer's buffer. */
struct rpath {
	int (*write)(struct rpath *r, size_t n);
	int (*reap)(struct rpath *r); /* one completion, waited for by polling */
	char *src, *dst;	      /* registered: the source, and where the peer writes */
	unsigned int in_flight;
};

/* The session, the SPI and the backend, as each process has them. */
static struct sw g_sw;
static struct swc_sess sess, usess; /* polled, by up-call */

struct spi_path {
	struct rpath r;
	sp_socket s;
	void *h;
	uint8_t peer_desc[64];
	uint32_t peer_desc_len;
	struct sp_overlapped ov[DEPTH];
	unsigned int next, first;
};

static int spi_write(struct rpath *r, size_t n)
{
	struct spi_path *p = (struct spi_path *)r;
	struct sp_wsabufex b = { (uint32_t)n, r->src, p->h };
	uint32_t bytes;
	int err = 0;

	p->ov[p->next].event = 1; /* polled */
	if (g_sw.rdma_write(p->s, &b, 1, p->peer_desc, p->peer_desc_len, 0, &bytes, 0,
			    &p->ov[p->next], NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING)
		return -1;
	p->next = (p->next + 1) % DEPTH;
	r->in_flight++;
	return 0;
}

static int spi_reap(struct rpath *r)
{
	struct spi_path *p = (struct spi_path *)r;
	uint32_t bytes, flags;
	int err;

	for (unsigned int i = 1;
	     g_sw.p.get_overlapped_result(p->s, &p->ov[p->first], &bytes, 0, &flags, &err); i++) {
		if (err != SP_WSA_IO_INCOMPLETE)
			return -1;
		if (i % SPIN_YIELD == 0)
			sched_yield();
	}
	p->first = (p->first + 1) % DEPTH;
	r->in_flight--;
	return 0;
}

struct be_path {
	struct rpath r;
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	struct vb_mr *smr, *dmr;
	uint64_t peer_addr;
	uint32_t peer_rkey;
};

static int be_write(struct rpath *r, size_t n)
{
	struct be_path *p = (struct be_path *)r;
	struct vb_sge sge = { (uintptr_t)r->src, (uint32_t)n, p->smr->lkey };
	struct vb_send_wr wr = { .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = VB_WR_RDMA_WRITE,
				 .send_flags = VB_SEND_SIGNALED,
				 .remote_addr = p->peer_addr,
				 .rkey = p->peer_rkey },
			  *bad;

	if (vb_post_send(p->qp, &wr, &bad))
		return -1;
	r->in_flight++;
	return 0;
}

static int be_reap(struct rpath *r)
{
	struct be_path *p = (struct be_path *)r;
	struct vb_wc wc;
	int got = 0;

	for (unsigned int i = 1; !got; i++) {
		if (vb_poll_cq(p->cq, 1, &wc, &got))
			return -1;
		if (!got && i % SPIN_YIELD == 0)
			sched_yield();
	}
	r->in_flight--;
	return wc.status == VB_WC_SUCCESS ? 0 : -1;
}

static struct spi_path spi;
static struct be_path be;

/* The sequence number in the last 8 bytes of an n-byte message. */
static void put_seq(char *buf, size_t n, uint64_t seq)
{
	__atomic_store_n((uint64_t *)(buf + n - 8), seq, __ATOMIC_RELEASE);
}

static void wait_seq(char *buf, size_t n, uint64_t seq)
{
	for (unsigned int i = 1;
	     __atomic_load_n((uint64_t *)(buf + n - 8), __ATOMIC_ACQUIRE) != seq; i++)
		if (i % SPIN_YIELD == 0)
			sched_yield();
}

static uint64_t seq_no;

/* One message through the RDMA path and its completion. */
static int rsend(struct rpath *r, size_t n, uint64_t seq)
{
	while (r->in_flight >= DEPTH)
		if (r->reap(r))
			return -1;
	put_seq(r->src, n, seq);
	return r->write(r, n);
}

static int rdrain(struct rpath *r)
{
	while (r->in_flight)
		if (r->reap(r))
			return -1;
	return 0;
}

/* Transport x: n bytes out (or in), through each path's own means. */
static int xsend(int x, size_t n, uint64_t seq)
{
	struct swc_sess *ss = x == X_UPCALL ? &usess : &sess;

	switch (x) {
	case X_TCP:
		return full_io(true, sbuf, n);
	case X_SESS:
	case X_UPCALL:
		return swc_send(ss, sbuf, n)
			   ? (fprintf(stderr, "%s send (%s): %s\n", names[x],
				      is_server ? "server" : "client", strerror(ss->error)),
			      -1)
			   : 0;
	case X_SPI:
		return rsend(&spi.r, n, seq);
	default:
		return rsend(&be.r, n, seq);
	}
}

static int xrecv(int x, size_t n, uint64_t seq)
{
	struct swc_sess *ss = x == X_UPCALL ? &usess : &sess;

	switch (x) {
	case X_TCP:
		return full_io(false, rbuf, n);
	case X_SESS:
	case X_UPCALL:
		return swc_recv(ss, rbuf, n)
			   ? (fprintf(stderr, "%s recv (%s): %s\n", names[x],
				      is_server ? "server" : "client", strerror(ss->error)),
			      -1)
			   : 0;
	case X_SPI:
		wait_seq(spi.r.dst, n, seq);
		return 0;
	default:
		wait_seq(be.r.dst, n, seq);
		return 0;
	}
}

/* Ping-pong of n bytes, iters round trips: usec per round trip (client). */
static double pingpong(int x, bool server, size_t n, uint32_t iters)
{
	uint64_t t0 = perf_now_ns();

	for (uint32_t i = 0; i < iters; i++) {
		uint64_t a = ++seq_no, b = ++seq_no;

		if (server ? xrecv(x, n, a) || xsend(x, n, b) : xsend(x, n, a) || xrecv(x, n, b))
			return -1;
	}
	if (x >= X_SPI && rdrain(x == X_SPI ? &spi.r : &be.r))
		return -1;
	return (double)(perf_now_ns() - t0) / 1000.0 / iters;
}

/* count messages of n bytes one way, then a small answer: GB/s (client). */
static double stream(int x, bool server, size_t n, uint32_t count)
{
	uint64_t t0 = perf_now_ns(), base = seq_no;

	for (uint32_t i = 0; i < count; i++) {
		/* The RDMA paths reuse one target: only the last message is looked at. */
		if (server ? (x < X_SPI && xrecv(x, n, 0)) : xsend(x, n, base + i + 1))
			return -1;
	}
	if (server && x >= X_SPI && xrecv(x, n, base + count))
		return -1;
	seq_no = base + count + 1;
	if (server ? xsend(x, 64, seq_no) : xrecv(x, 64, seq_no))
		return -1;
	if (x >= X_SPI && rdrain(x == X_SPI ? &spi.r : &be.r))
		return -1;
	return (double)n * count / (double)(perf_now_ns() - t0);
}

static int tcp_open(bool server, int lfd)
{
	int one = 1;

	tcp_fd = server ? accept(lfd, NULL, NULL) : lfd;
	if (tcp_fd < 0)
		return -1;
	return setsockopt(tcp_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

struct acc {
	struct vb_listener *l;
	struct vb_qp *qp;
};

static int setup(bool server)
{
	struct swc_spi fns;
	struct sockaddr_in sin;
	sp_socket s[3];
	int err = 0;

	if (sw_load(&g_sw))
		return -1;
	/* Three SPI connections: the sessions' (polled, by up-call), and one for plain RDMA writes.
	 */
	for (int i = 0; i < 3; i++) {
		if (server) {
			sp_socket l = sw_listen(&g_sw, &sin);
			if (l == SP_INVALID_SOCKET || full_io(true, &sin, sizeof(sin)))
				return -1;
			s[i] = g_sw.p.accept(l, NULL, NULL, NULL, 0, &err);
			g_sw.p.close_socket(l, &err);
		} else {
			if (full_io(false, &sin, sizeof(sin)))
				return -1;
			s[i] = sw_connect(&g_sw, &sin, &err);
		}
		if (s[i] == SP_INVALID_SOCKET)
			return -1;
	}
	sw_spi(&g_sw, &fns);
	if (swc_sess_init(&sess, &fns, s[0], NULL) ||
	    swc_sess_init(&usess, &fns, s[1], &(struct swc_opts){ .events = &sw_events }))
		return -1;
	spi.s = s[2];
	spi.r = (struct rpath){ .write = spi_write, .reap = spi_reap };
	spi.r.src = aligned_alloc(4096, BUFLEN);
	spi.r.dst = aligned_alloc(4096, BUFLEN);
	if (!spi.r.src || !spi.r.dst)
		return -1;
	memset(spi.r.src, 0, BUFLEN);
	memset(spi.r.dst, 0, BUFLEN);
	spi.h = g_sw.register_memory(spi.s, spi.r.src, BUFLEN, SP_MEM_READ, &err);
	uint8_t desc[64];
	uint32_t dlen = sizeof(desc);
	if (!spi.h ||
	    g_sw.register_rdma_memory(spi.s, spi.r.dst, BUFLEN, SP_MEM_WRITE, desc, &dlen, &err))
		return -1;
	if (full_io(true, &dlen, 4) || full_io(true, desc, dlen) ||
	    full_io(false, &spi.peer_desc_len, 4) || spi.peer_desc_len > 64 ||
	    full_io(false, spi.peer_desc, spi.peer_desc_len))
		return -1;

	/* The backend alone: its own device, QP and registrations. */
	struct vb_qp_init_attr attr = { 0 };
	be.r = (struct rpath){ .write = be_write, .reap = be_reap };
	be.dev = tdev_open();
	be.pd = be.dev ? vb_alloc_pd(be.dev) : NULL;
	be.cq = be.pd ? vb_create_cq(be.dev, 64) : NULL;
	if (!be.cq)
		return -1;
	attr.send_cq = attr.recv_cq = be.cq;
	attr.cap.max_send_wr = attr.cap.max_recv_wr = 16;
	attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
	be.qp = vb_create_qp(be.pd, &attr);
	be.r.src = aligned_alloc(4096, BUFLEN);
	be.r.dst = aligned_alloc(4096, BUFLEN);
	if (!be.qp || !be.r.src || !be.r.dst)
		return -1;
	memset(be.r.src, 0, BUFLEN);
	memset(be.r.dst, 0, BUFLEN);
	be.smr = vb_reg_mr(be.pd, be.r.src, BUFLEN, VB_ACCESS_ALL);
	be.dmr = vb_reg_mr(be.pd, be.r.dst, BUFLEN, VB_ACCESS_ALL);
	if (!be.smr || !be.dmr)
		return -1;
	if (server) {
		struct vb_listener *l;

		tdev_sockaddr(&sin, 0);
		l = vb_create_listener(be.dev, (struct sockaddr *)&sin, sizeof(sin), 1);
		if (!l || full_io(true, &l->addr, sizeof(sin)) || vb_accept(l, be.qp, NULL))
			return -1;
		vb_destroy_listener(l);
	} else {
		if (full_io(false, &sin, sizeof(sin)) ||
		    vb_connect(be.qp, (struct sockaddr *)&sin, sizeof(sin), NULL))
			return -1;
	}
	uint64_t addr = (uintptr_t)be.r.dst;
	if (full_io(true, &addr, 8) || full_io(true, &be.dmr->rkey, 4) ||
	    full_io(false, &be.peer_addr, 8) || full_io(false, &be.peer_rkey, 4))
		return -1;
	return 0;
}

static void teardown(void)
{
	swc_sess_fini(&sess);
	swc_sess_fini(&usess);
	vb_destroy_qp(be.qp);
	vb_dereg_mr(be.smr);
	vb_dereg_mr(be.dmr);
	vb_destroy_cq(be.cq);
	vb_dealloc_pd(be.pd);
	vb_close_device(be.dev);
	sw_unload(&g_sw);
}

/* The client failed: say how the server ended, if it did (a crash shows as a reset). */
static void report_server(pid_t pid)
{
	int status;

	for (int i = 0; i < 20; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			if (WIFSIGNALED(status))
				fprintf(stderr, "transport_bench: the server died of signal %d\n",
					WTERMSIG(status));
			else
				fprintf(stderr, "transport_bench: the server exited with %d\n",
					WEXITSTATUS(status));
			return;
		}
		usleep(50 * 1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
}

int main(int argc, char **argv)
{
	uint32_t iters = 2000, mib = 256;
	int runs = 5, opt, lfd, status = 0;
	static double rt[NX][NSIZES][16], bw[NX][NSIZES][16];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	char desc[256];
	bool server;
	pid_t pid;

	/*
	 * As under sanprov-run: the test switch's up-call only signals an
	 * eventfd, so the polling thread may make it (SANPROV_SPI_INLINE_UPCALLS=0
	 * measures the progress thread's way).
	 */
	setenv("SANPROV_SPI_INLINE_UPCALLS", "1", 0);
	while ((opt = getopt(argc, argv, "r:n:m:s:t:h")) != -1) {
		switch (opt) {
		case 's':
			only_size = strtoul(optarg, NULL, 0);
			break;
		case 't':
			for (int x = 1; x < NX; x++)
				skip_x[x] = !strstr(optarg, names[x]);
			break;
		case 'r':
			runs = atoi(optarg);
			break;
		case 'n':
			iters = (uint32_t)atoi(optarg);
			break;
		case 'm':
			mib = (uint32_t)atoi(optarg);
			break;
		default:
			fprintf(stderr, "Usage: transport_bench [-r RUNS (1..16)] [-n PINGPONGS] "
					"[-m MIB per bandwidth run]\n"
					"       [-s SIZE (one size only)] [-t session,spi,backend "
					"(TCP always)]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (only_size) {
		bool known = false;

		for (size_t i = 0; i < NSIZES; i++)
			known |= sizes[i] == only_size;
		if (!known) {
			fprintf(stderr, "transport_bench: -s takes 64, 4096, 65536 or 1048576\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 16 || iters < 1 || mib < 1) {
		fprintf(stderr, "transport_bench: runs 1..16, iterations and MiB >= 1\n");
		return 2;
	}
	sbuf = aligned_alloc(4096, BUFLEN);
	rbuf = aligned_alloc(4096, BUFLEN);
	if (!sbuf || !rbuf)
		return 1;
	memset(sbuf, 7, BUFLEN);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sin, &slen))
		return 1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 1;
	server = pid == 0;
	is_server = server;
	if (!server) {
		close(lfd);
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		if (lfd < 0 || connect(lfd, (struct sockaddr *)&sin, sizeof(sin)))
			return 1;
	}
	if (tcp_open(server, lfd) || setup(server)) {
		fprintf(stderr, "transport_bench: %s: cannot set up the connections\n",
			server ? "server" : "client");
		if (!server)
			kill(pid, SIGKILL);
		return 1;
	}
	for (int k = 0; k < runs; k++) {
		/* In turns, so that drift hits every column alike. */
		for (size_t i = 0; i < NSIZES; i++) {
			uint32_t n = sizes[i] >= 65536 ? iters / 10 + 1 : iters;
			uint32_t count = (uint32_t)(((uint64_t)mib << 20) / sizes[i]);

			count = count ? count : 1;
			if (only_size && sizes[i] != only_size)
				continue;
			for (int x = 0; x < NX; x++) {
				if (skip_x[x])
					continue;
				rt[x][i][k] = pingpong(x, server, sizes[i], n);
				bw[x][i][k] = stream(x, server, sizes[i], count);
				if (rt[x][i][k] < 0 || bw[x][i][k] < 0) {
					fprintf(stderr,
						"transport_bench (%s): %s failed at %zu bytes\n",
						is_server ? "server" : "client", names[x],
						sizes[i]);
					if (!server)
						report_server(pid);
					return 1;
				}
			}
		}
	}
	snprintf(desc, sizeof(desc), "%s", g_sw.data.description);
	teardown();
	if (server)
		_exit(0);
	close(tcp_fd);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "transport_bench: the server failed\n");
		return 1;
	}
	printf("One byte stream four ways between two processes, %s (median of %d runs)\n"
	       "round trip: ping-pong, usec; bandwidth: one way, GB/s; x = against TCP loopback\n",
	       desc, runs);
	printf("%8s %-9s %10s", "bytes", "", names[0]);
	for (int x = 1; x < NX; x++)
		printf(" %10s %6s", names[x], "x");
	printf("\n");
	for (size_t i = 0; i < NSIZES; i++) {
		if (only_size && sizes[i] != only_size)
			continue;
		for (int m = 0; m < 2; m++) {
			double base = perf_median(m ? bw[0][i] : rt[0][i], runs);

			printf("%8zu %-9s %10.2f", sizes[i], m ? "GB/s" : "rtt usec", base);
			for (int x = 1; x < NX; x++) {
				double v = perf_median(m ? bw[x][i] : rt[x][i], runs);

				if (skip_x[x]) {
					printf(" %10s %6s", "-", "-");
					continue;
				}
				printf(" %10.2f %6.2f", v, v / base);
			}
			printf("\n");
		}
	}
	return 0;
}
