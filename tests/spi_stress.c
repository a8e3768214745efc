/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The SPI as a switch uses it, in two processes: a server that echoes
 * messages and serves RDMA requests on every connection it accepts (a
 * thread each), and a client whose threads drive many connections at once
 * with random work: messages of random sizes (every byte checked, the
 * receives' up-calls checked to come in the order posted), RDMA reads and
 * writes through registrations made for each transfer, registrations of a
 * pool beside cache callbacks over it, closes with receives in flight, and
 * connection churn.  TAP; bounded in time.
 *
 *   spi_stress [seconds [connections [threads]]]
 *
 * With --scale, many connections rather than much work: the client opens n
 * connections to the server (one thread each side), moves one message
 * each way on every one of them, and reports what a connection costs in
 * memory (RSS) and file descriptors on each side.  RLIMIT_NOFILE is raised
 * to its hard limit; a hard limit too low for n is a clear failure.
 *
 *   spi_stress --scale n      (SANPROV_STRESS_SCALE=n overrides n)
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sp_wire.h"
#include "sw.h"
#include "tap.h"
#include "tdev.h"

#define RING 4		   /* receives a side keeps posted */
#define MSG (4096 + 64)	   /* largest message */
#define RDMA_MAX (1 << 16) /* largest RDMA transfer */
#define POOL_PAGES 256
#define TIMEOUT_MS 20000
#define RECV_MARK 0x5eceu /* in a receive's overlapped structure, for the up-call check */

enum { M_ECHO = 1, M_RDMA, M_BURST };

struct hdr {
	uint32_t type;
	uint32_t seq;
	uint32_t len; /* payload (M_ECHO), transfer (M_RDMA), replies (M_BURST) */
	uint32_t seed;
	struct sp_rdma_desc desc; /* M_RDMA: the client's region */
};

static struct sw sw;
static atomic_int failures;

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fputc('\n', stderr);                                                               \
		atomic_fetch_add(&failures, 1);                                                    \
	} while (0)

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pattern(char *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* One side of a connection: a send buffer, RING receive slots. */
struct end {
	sp_socket s;
	bool polled; /* its receives are polled (bit 0) rather than up-called */
	char *buf;   /* RING * MSG receive slots, then one MSG send buffer */
	void *h;
	struct rov {
		struct sw_ov o;
		struct end *e;
		uint32_t seq;
	} r[RING];
	uint32_t posted, done; /* receives posted and completed, in order */
	atomic_uint upcalled;  /* receives up-called, checked in order */
};

static int end_init(struct end *e, sp_socket s, bool polled)
{
	int err = 0;

	memset(e, 0, sizeof(*e));
	for (int i = 0; i < RING; i++)
		e->r[i].o.fd = -1;
	e->s = s;
	e->polled = polled;
	e->buf = aligned_alloc(4096, ((RING + 1) * MSG + 4095) / 4096 * 4096);
	if (!e->buf)
		return SP_WSAENOBUFS;
	e->h = sw.register_memory(s, e->buf, (RING + 1) * MSG, SP_MEM_READWRITE, &err);
	return e->h ? 0 : err;
}

static void end_fini(struct end *e)
{
	for (int i = 0; i < RING; i++)
		sw_ov_fini(&e->r[i].o);
	free(e->buf);
	e->buf = NULL;
}

static int post_recv(struct end *e)
{
	struct rov *r = &e->r[e->posted % RING];
	struct sp_wsabufex b = { MSG, e->buf + (e->posted % RING) * MSG, e->h };
	uint32_t flags = 0;
	int err = 0;

	sw_ov_fini(&r->o);
	sw_ov_init(&r->o, e->polled);
	r->o.ov.offset = RECV_MARK;
	r->e = e;
	r->seq = e->posted++;
	if (!sw.p.recv(e->s, &b, 1, NULL, &flags, &r->o.ov, NULL, NULL, &err))
		return 0;
	return err == SP_WSA_IO_PENDING ? 0 : err;
}

/* The next receive in order: 0 and its message, or its error. */
static int next_recv(struct end *e, struct hdr **h, uint32_t *len)
{
	struct rov *r = &e->r[e->done % RING];
	int ret = sw_ov_wait(&sw, e->s, &r->o, len, TIMEOUT_MS);

	if (ret)
		return ret < 0 ? SP_WSAETIMEDOUT : ret;
	*h = (struct hdr *)(e->buf + (e->done % RING) * MSG);
	e->done++;
	return 0;
}

static int send_msg(struct end *e, const struct hdr *h, const char *payload, uint32_t len)
{
	char *sb = e->buf + RING * MSG;
	struct sp_wsabufex b = { (uint32_t)sizeof(*h) + len, sb, e->h };
	struct sw_ov o;
	uint32_t n;
	int err = 0, ret;

	memcpy(sb, h, sizeof(*h));
	if (len)
		memcpy(sb + sizeof(*h), payload, len);
	sw_ov_init(&o, true);
	if (sw.p.send(e->s, &b, 1, NULL, 0, &o.ov, NULL, NULL, &err) && err != SP_WSA_IO_PENDING) {
		sw_ov_fini(&o);
		return err;
	}
	ret = sw_ov_wait(&sw, e->s, &o, &n, TIMEOUT_MS);
	sw_ov_fini(&o);
	return ret < 0 ? SP_WSAETIMEDOUT : ret;
}

/* Every receive up-call: in the order its socket posted them. */
static void on_complete(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	struct rov *r = (struct rov *)((char *)ov - offsetof(struct rov, o.ov));

	(void)s, (void)bytes;
	/* Sends and the abort probe are not rov; their event is theirs. */
	if (SP_OV_NO_UPCALL(ov) || ov->offset != RECV_MARK)
		return;
	/* Aborted ones too: a close aborts them in the order posted. */
	if (r->seq != atomic_fetch_add(&r->e->upcalled, 1))
		FAIL("socket %#lx: receive %u up-called out of order", (unsigned long)s, r->seq);
}

/* The server --------------------------------------------------------------------- */

static void *serve(void *arg)
{
	struct end e;
	sp_socket s = (sp_socket)(uintptr_t)arg;
	char *rdma = aligned_alloc(4096, RDMA_MAX);
	void *rh = NULL;
	uint32_t expect = 0;
	int err = 0, ret;

	if (!rdma || end_init(&e, s, false))
		goto out;
	rh = sw.register_memory(s, rdma, RDMA_MAX, SP_MEM_READWRITE, &err);
	for (int i = 0; i < RING; i++)
		if (post_recv(&e))
			goto out;
	for (;;) {
		struct hdr *h, rep;
		uint32_t len;

		ret = next_recv(&e, &h, &len);
		if (ret)
			break; /* the client closed, or it broke */
		if (len < sizeof(*h) || h->seq != expect++) {
			FAIL("server: message %u out of order or short (%u bytes)", h->seq, len);
			break;
		}
		rep = *h;
		if (h->type == M_ECHO) {
			ret = send_msg(&e, &rep, (char *)(h + 1), len - (uint32_t)sizeof(*h));
		} else if (h->type == M_BURST) {
			for (uint32_t i = 0; !ret && i < h->len; i++) {
				rep.seq = i;
				ret = send_msg(&e, &rep, NULL, 0);
			}
		} else if (h->type == M_RDMA && rh && h->len <= RDMA_MAX / 2) {
			struct sp_wsabufex b = { h->len, rdma, rh };
			struct sp_rdma_desc d = h->desc;
			struct sw_ov o;
			uint32_t n, bytes;

			/* Read the client's bytes, check them, write them back changed. */
			sw_ov_init(&o, true);
			if (sw.rdma_read(s, &b, 1, &d, sizeof(d), 0, &bytes, 0, &o.ov, NULL, NULL,
					 &err) &&
			    err != SP_WSA_IO_PENDING)
				ret = err;
			else
				ret = sw_ov_wait(&sw, s, &o, &n, TIMEOUT_MS);
			sw_ov_fini(&o);
			if (!ret) {
				char *want = malloc(h->len);
				pattern(want, h->len, h->seed);
				if (memcmp(want, rdma, h->len))
					FAIL("server: RDMA read of %u bytes: wrong data", h->len);
				free(want);
				for (uint32_t i = 0; i < h->len; i++)
					rdma[i] ^= 0x5a;
				sw_ov_init(&o, true);
				if (sw.rdma_write(s, &b, 1, &d, sizeof(d), RDMA_MAX / 2, &bytes, 0,
						  &o.ov, NULL, NULL, &err) &&
				    err != SP_WSA_IO_PENDING)
					ret = err;
				else
					ret = sw_ov_wait(&sw, s, &o, &n, TIMEOUT_MS);
				sw_ov_fini(&o);
			}
			if (!ret)
				ret = send_msg(&e, &rep, NULL, 0);
		} else {
			FAIL("server: message type %u", h->type);
			break;
		}
		if (ret || post_recv(&e))
			break;
	}
out:
	sw.p.close_socket(s, &err);
	if (e.buf)
		end_fini(&e);
	free(rdma);
	return NULL;
}

static int server(int port_fd, int stop_fd)
{
	struct sockaddr_in sin;
	sp_socket l;
	int err = 0;

	if (sw_load(&sw))
		return 2;
	l = sw_listen(&sw, &sin);
	if (l == SP_INVALID_SOCKET || write(port_fd, &sin, sizeof(sin)) != sizeof(sin))
		return 3;
	for (;;) {
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		sp_socket s;
		pthread_t t;

		s = sw.p.accept(l, NULL, NULL, NULL, 0, &err);
		if (poll(&p, 1, 0) == 1) {
			if (s != SP_INVALID_SOCKET)
				sw.p.close_socket(s, &err);
			break;
		}
		if (s == SP_INVALID_SOCKET) {
			/* A client that closed before the accept took it: not an error. */
			if (err == SP_WSAECONNABORTED || err == SP_WSAEWOULDBLOCK)
				continue;
			FAIL("server: accept: %d", err);
			break;
		}
		if (pthread_create(&t, NULL, serve, (void *)(uintptr_t)s))
			return 4;
		pthread_detach(t);
	}
	sw.p.close_socket(l, &err);
	return atomic_load(&failures) ? 1 : 0;
}

/* The client --------------------------------------------------------------------- */

struct conn {
	pthread_mutex_t lock;
	struct end e;
	uint32_t seq;
	bool up;
};

static struct sockaddr_in server_addr;
static int n_conns, n_threads, seconds;
static struct conn *conns;
static char *pool;
static atomic_bool stop;
static atomic_ulong n_echo, n_rdma, n_burst, n_churn, n_abort, n_cb, n_reg;

static int conn_open(struct conn *c, uint32_t *seed)
{
	int err = 0, ret;
	sp_socket s = sw_connect(&sw, &server_addr, &err);

	if (s == SP_INVALID_SOCKET)
		return err;
	ret = end_init(&c->e, s, rnd(seed) % 4 == 0);
	for (int i = 0; !ret && i < RING; i++)
		ret = post_recv(&c->e);
	if (ret) {
		sw.p.close_socket(s, &err);
		end_fini(&c->e);
		return ret;
	}
	c->seq = 0;
	c->up = true;
	return 0;
}

static void conn_close(struct conn *c)
{
	int err = 0;

	if (sw.p.close_socket(c->e.s, &err))
		FAIL("closesocket: %d", err);
	/* Every receive still posted ended, aborted, and the up-calls said so. */
	for (uint32_t i = c->e.done; i < c->e.posted; i++) {
		struct rov *r = &c->e.r[i % RING];
		uintptr_t st = __atomic_load_n(&r->o.ov.internal, __ATOMIC_ACQUIRE);
		/* Aborted, or failed before the close by a broken connection. */
		if (st == SP_OV_PENDING)
			FAIL("a receive pending at close is still pending");
	}
	end_fini(&c->e);
	c->up = false;
}

static int do_echo(struct conn *c, uint32_t *seed)
{
	uint32_t len = rnd(seed) % 4096 + 1, n;
	char *payload = malloc(len);
	struct hdr h = { .type = M_ECHO, .seq = c->seq++, .len = len, .seed = rnd(seed) }, *r;
	int ret;

	pattern(payload, len, h.seed);
	ret = send_msg(&c->e, &h, payload, len);
	if (!ret)
		ret = next_recv(&c->e, &r, &n);
	if (!ret && (n != sizeof(h) + len || r->seq != h.seq || memcmp(r + 1, payload, len)))
		FAIL("echo of %u bytes: %u bytes back, wrong data", len, n);
	if (!ret)
		ret = post_recv(&c->e);
	free(payload);
	return ret;
}

static int do_burst(struct conn *c, uint32_t *seed)
{
	struct hdr h = { .type = M_BURST, .seq = c->seq++, .len = rnd(seed) % (RING - 1) + 2 }, *r;
	uint32_t n;
	int ret = send_msg(&c->e, &h, NULL, 0);

	/* Replies land in the posted receives, in order, as fast as the server sends. */
	for (uint32_t i = 0; !ret && i < h.len; i++) {
		ret = next_recv(&c->e, &r, &n);
		if (!ret && r->seq != i)
			FAIL("burst reply %u came as %u", i, r->seq);
		if (!ret)
			ret = post_recv(&c->e);
	}
	return ret;
}

static int do_rdma(struct conn *c, uint32_t *seed)
{
	uint32_t len = rnd(seed) % (RDMA_MAX / 2) + 1, dlen, n;
	char *buf = aligned_alloc(4096, RDMA_MAX), *want = malloc(len);
	struct hdr h = { .type = M_RDMA, .seq = c->seq++, .len = len, .seed = rnd(seed) }, *r;
	int err = 0, ret;

	pattern(buf, len, h.seed);
	memset(buf + RDMA_MAX / 2, 0, RDMA_MAX / 2);
	dlen = sizeof(h.desc);
	if (sw.register_rdma_memory(c->e.s, buf, RDMA_MAX, SP_MEM_READWRITE, &h.desc, &dlen,
				    &err)) {
		ret = err;
		goto out;
	}
	ret = send_msg(&c->e, &h, NULL, 0);
	if (!ret)
		ret = next_recv(&c->e, &r, &n);
	if (!ret) {
		pattern(want, len, h.seed);
		for (uint32_t i = 0; i < len; i++)
			want[i] ^= 0x5a;
		if (r->seq != h.seq || memcmp(buf + RDMA_MAX / 2, want, len))
			FAIL("RDMA of %u bytes: wrong data back", len);
		ret = post_recv(&c->e);
	}
	if (sw.deregister_rdma_memory(c->e.s, &h.desc, dlen, &err) && !ret)
		ret = err;
out:
	free(buf);
	free(want);
	return ret;
}

/* Registrations of the shared pool, beside the callback thread. */
static int do_register(struct conn *c, uint32_t *seed)
{
	void *h[4];
	int err = 0;

	for (int i = 0; i < 4; i++) {
		size_t page = rnd(seed) % (POOL_PAGES - 8);
		h[i] = sw.register_memory(c->e.s, pool + page * 4096, (rnd(seed) % 4 + 1) * 4096,
					  rnd(seed) % 3 + 1, &err);
		if (!h[i])
			return err;
	}
	for (int i = 0; i < 4; i++)
		if (sw.deregister_memory(c->e.s, h[i], &err))
			return err;
	return 0;
}

static void *client_main(void *arg)
{
	uint32_t seed = (uint32_t)(uintptr_t)arg * 2654435761u | 1;
	int me = (int)(uintptr_t)arg;

	while (!atomic_load(&stop)) {
		/* Connections are shared: any thread may take any of them. */
		struct conn *c = &conns[rnd(&seed) % (uint32_t)n_conns];
		uint32_t what = rnd(&seed) % 100;
		int ret = 0;

		if (pthread_mutex_trylock(&c->lock))
			continue;
		if (!c->up) {
			ret = conn_open(c, &seed);
			if (ret)
				FAIL("thread %d: connect: %d", me, ret);
		} else if (what < 40) {
			ret = do_echo(c, &seed);
			atomic_fetch_add(&n_echo, 1);
		} else if (what < 55) {
			ret = do_burst(c, &seed);
			atomic_fetch_add(&n_burst, 1);
		} else if (what < 75) {
			ret = do_rdma(c, &seed);
			atomic_fetch_add(&n_rdma, 1);
		} else if (what < 90) {
			ret = do_register(c, &seed);
			atomic_fetch_add(&n_reg, 1);
		} else if (what < 95) {
			/* Receives are posted: close with them in flight. */
			conn_close(c);
			atomic_fetch_add(&n_abort, 1);
		} else {
			/* Churn: a request in flight, then close before its reply. */
			struct hdr h = { .type = M_ECHO, .seq = c->seq++, .len = 0 };
			send_msg(&c->e, &h, NULL, 0);
			conn_close(c);
			atomic_fetch_add(&n_churn, 1);
		}
		if (ret && c->up) {
			FAIL("thread %d: operation %u: %d", me, what, ret);
			conn_close(c);
		}
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}

static void *callback_main(void *arg)
{
	uint32_t seed = 77;
	int err;

	(void)arg;
	while (!atomic_load(&stop)) {
		size_t page = rnd(&seed) % POOL_PAGES;
		if (sw.cache_callback(pool + page * 4096, 4096 * (rnd(&seed) % 3 + 1), &err) &&
		    err != SP_WSAEINVAL)
			FAIL("cache callback: %d", err);
		atomic_fetch_add(&n_cb, 1);
		usleep(200);
	}
	return NULL;
}

/* Scale: many connections, one message each way on each ------------------------- */

#define SCALE_MSG 64
#define SCALE_SLOT 128 /* a connection's receive, then its send */

struct scale_conn {
	sp_socket s;
	void *h;
	struct sw_ov r;
};

struct scale_cost {
	long rss_kib; /* RSS growth over the connections */
	long fds;     /* descriptors opened for them */
	double conn_ms;
};

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	long n = -1; /* the directory's own */

	if (!d)
		return 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2; /* . and .. */
}

/*
 * Descriptors for n connections: the soft limit goes up to the hard one;
 * 0, or -1 after saying what is missing.  per_conn is what one costs at
 * most on either side (measured: see docs/spi-scaling.md).
 */
static int scale_fd_limit(long n, long per_conn, const char *who)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)(n * per_conn + 256);

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return -1;
	if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need) {
		fprintf(stderr,
			"# %s: %ld connections need about %llu descriptors; RLIMIT_NOFILE is "
			"%llu (hard %llu): raise the hard limit (ulimit -Hn)\n",
			who, n, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
			(unsigned long long)rl.rlim_max);
		return -1;
	}
	return 0;
}

static int scale_post_recv(struct scale_conn *c, char *slot)
{
	struct sp_wsabufex b = { SCALE_MSG, slot, c->h };
	uint32_t flags = 0;
	int err = 0;

	/* Polled (bit 0), and no event: a descriptor per receive would double the count. */
	memset(&c->r, 0, sizeof(c->r));
	c->r.fd = -1;
	c->r.ov.event = 1;
	if (!sw.p.recv(c->s, &b, 1, NULL, &flags, &c->r.ov, NULL, NULL, &err))
		return 0;
	return err == SP_WSA_IO_PENDING ? 0 : err;
}

/* The message connection i carries (each way the same). */
static void scale_fill(char *p, long i)
{
	pattern(p, SCALE_MSG, (uint32_t)i * 2654435761u);
}

static int scale_check(const char *p, long i)
{
	char want[SCALE_MSG];

	scale_fill(want, i);
	return memcmp(p, want, SCALE_MSG) ? SP_WSAEINVAL : 0;
}

/* A connection's buffer registered, its receive posted. */
static int scale_conn_init(struct scale_conn *c, char *slot)
{
	int err = 0;

	c->h = sw.register_memory(c->s, slot, SCALE_SLOT, SP_MEM_READWRITE, &err);
	if (!c->h)
		return err;
	return scale_post_recv(c, slot);
}

/* Wait for i's message, check it. */
static int scale_recv(struct scale_conn *c, char *slot, long i)
{
	uint32_t n = 0;
	int ret = sw_ov_wait(&sw, c->s, &c->r, &n, TIMEOUT_MS);

	sw_ov_fini(&c->r);
	if (ret)
		return ret < 0 ? SP_WSAETIMEDOUT : ret;
	return n == SCALE_MSG ? scale_check(slot, i) : SP_WSAEMSGSIZE;
}

static int scale_send(struct scale_conn *c, char *slot, long i)
{
	scale_fill(slot + SCALE_MSG, i);
	return sw_send_wait(&sw, c->s, slot + SCALE_MSG, SCALE_MSG, c->h);
}

static void scale_report(const char *who, long n, long rss0, long fds0, double ms,
			 struct scale_cost *out)
{
	out->rss_kib = rss_kib() - rss0;
	out->fds = open_fds() - fds0;
	out->conn_ms = ms;
	fprintf(stderr,
		"# %s: %ld connections: RSS +%ld KiB (%.1f KiB a connection), %ld descriptors "
		"(%.2f a connection), %.0f connections/s\n",
		who, n, out->rss_kib, (double)out->rss_kib / (double)n, out->fds,
		(double)out->fds / (double)n, ms > 0 ? (double)n * 1000 / ms : 0.0);
}

/* Accept n, receive one message on each and echo it back; 0 or the first error. */
static int scale_server(long n, int port_fd, int cost_fd)
{
	struct scale_conn *c = calloc((size_t)n, sizeof(*c));
	char *slots = aligned_alloc(4096, ((size_t)n * SCALE_SLOT + 4095) / 4096 * 4096);
	struct sockaddr_in sin;
	struct scale_cost cost;
	long rss0, fds0, i;
	uint64_t t0;
	sp_socket l;
	int err = 0, ret = 0;

	if (!c || !slots || scale_fd_limit(n, 1, "server") || sw_load(&sw))
		return 2;
	l = sw_listen(&sw, &sin);
	if (l == SP_INVALID_SOCKET || write(port_fd, &sin, sizeof(sin)) != sizeof(sin))
		return 3;
	rss0 = rss_kib();
	fds0 = open_fds();
	t0 = now_ms();
	for (i = 0; i < n && !ret; i++) {
		c[i].s = sw.p.accept(l, NULL, NULL, NULL, 0, &err);
		if (c[i].s == SP_INVALID_SOCKET) {
			FAIL("server: accept %ld: %d", i + 1, err);
			ret = err;
			break;
		}
		ret = scale_conn_init(&c[i], slots + i * SCALE_SLOT);
		if (ret)
			FAIL("server: connection %ld: %d", i + 1, ret);
	}
	double ms = (double)(now_ms() - t0);
	uint64_t t1 = now_ms();
	for (long j = 0; j < i && !ret; j++) {
		ret = scale_recv(&c[j], slots + j * SCALE_SLOT, j);
		if (!ret)
			ret = scale_send(&c[j], slots + j * SCALE_SLOT, j);
		if (ret)
			FAIL("server: message on connection %ld: %d", j + 1, ret);
	}
	uint64_t t2 = now_ms();
	scale_report("server", n, rss0, fds0, ms, &cost);
	if (write(cost_fd, &cost, sizeof(cost)) != sizeof(cost))
		ret = ret ? ret : 4;
	for (long j = 0; j < i; j++)
		sw.p.close_socket(c[j].s, &err);
	sw.p.close_socket(l, &err);
	fprintf(stderr, "# server: echo phase %llu ms, closing %ld sockets %llu ms\n",
		(unsigned long long)(t2 - t1), i, (unsigned long long)(now_ms() - t2));
	sw_unload(&sw);
	return ret || atomic_load(&failures) ? 1 : 0;
}

static int scale_main(long n)
{
	int port_pipe[2], cost_pipe[2], status, err = 0;
	struct scale_conn *c = calloc((size_t)n, sizeof(*c));
	char *slots = aligned_alloc(4096, ((size_t)n * SCALE_SLOT + 4095) / 4096 * 4096);
	struct scale_cost mine = { 0 }, theirs = { 0 };
	char limit[32];
	long rss0, fds0, i, moved = 0;
	uint64_t t0;
	pid_t pid;

	tap_plan(5);
	if (!c || !slots || pipe(port_pipe) || pipe(cost_pipe))
		return 1;
	/* Both processes: room for n sockets and QPs, with some to spare. */
	snprintf(limit, sizeof(limit), "%ld", n + 64);
	if (!getenv("SANPROV_SPI_MAX_SOCKETS"))
		setenv("SANPROV_SPI_MAX_SOCKETS", limit, 1);
	if (!getenv("SANPROV_SOFTNIC_MAX_QP"))
		setenv("SANPROV_SOFTNIC_MAX_QP", limit, 1);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		close(port_pipe[0]);
		close(cost_pipe[0]);
		_exit(scale_server(n, port_pipe[1], cost_pipe[1]));
	}
	close(port_pipe[1]);
	close(cost_pipe[1]);
	if (read(port_pipe[0], &server_addr, sizeof(server_addr)) != sizeof(server_addr)) {
		tap_result(0, "the server started");
		waitpid(pid, &status, 0);
		return 1;
	}
	tap_result(!scale_fd_limit(n, 1, "client") && sw_load(&sw) == 0,
		   "the client's provider started, descriptors for %ld connections", n);
	rss0 = rss_kib();
	fds0 = open_fds();
	t0 = now_ms();
	for (i = 0; i < n; i++) {
		c[i].s = sw_connect(&sw, &server_addr, &err);
		if (c[i].s == SP_INVALID_SOCKET) {
			FAIL("client: connection %ld: %d", i + 1, err);
			break;
		}
		err = scale_conn_init(&c[i], slots + i * SCALE_SLOT);
		if (err) {
			FAIL("client: connection %ld: %d", i + 1, err);
			i++;
			break;
		}
	}
	double ms = (double)(now_ms() - t0);
	tap_result(i == n && !atomic_load(&failures), "%ld of %ld connections up", i, n);
	uint64_t t1 = now_ms();
	for (long j = 0; j < i && !atomic_load(&failures); j++) {
		err = scale_send(&c[j], slots + j * SCALE_SLOT, j);
		if (!err)
			err = scale_recv(&c[j], slots + j * SCALE_SLOT, j);
		if (err)
			FAIL("client: message on connection %ld: %d", j + 1, err);
		else
			moved++;
	}
	tap_result(moved == n, "a message each way on %ld of %ld connections, every byte checked",
		   moved, n);
	uint64_t t2 = now_ms();
	scale_report("client", n, rss0, fds0, ms, &mine);
	for (long j = 0; j < i; j++)
		sw.p.close_socket(c[j].s, &err);
	fprintf(stderr, "# client: messages %llu ms, closing %ld sockets %llu ms\n",
		(unsigned long long)(t2 - t1), i, (unsigned long long)(now_ms() - t2));
	sw_unload(&sw);
	/* Short of connections, the server waits in an accept for ever: stopped here. */
	if (i < n)
		kill(pid, SIGKILL);
	if (read(cost_pipe[0], &theirs, sizeof(theirs)) != sizeof(theirs))
		theirs.rss_kib = -1;
	waitpid(pid, &status, 0);
	tap_result(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		   "server: every connection accepted and echoed (status %#x)", status);
	/* A connection's own socket; the peer's events and process handle are kept once. */
	tap_result(mine.fds <= n + n / 10 && theirs.fds <= n + n / 10,
		   "about one descriptor a connection (client %ld, server %ld for %ld)", mine.fds,
		   theirs.fds, n);
	fprintf(stderr,
		"# per connection: client %.1f KiB + %.2f fds, server %.1f KiB + %.2f fds\n",
		(double)mine.rss_kib / (double)n, (double)mine.fds / (double)n,
		(double)theirs.rss_kib / (double)n, (double)theirs.fds / (double)n);
	free(c);
	free(slots);
	return tap_failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	int port_pipe[2], stop_pipe[2], status, err = 0;
	pthread_t *t, cb;
	pid_t pid;

	if (argc > 1 && !strcmp(argv[1], "--scale")) {
		const char *e = getenv("SANPROV_STRESS_SCALE");
		long n = e && *e ? atol(e) : argc > 2 ? atol(argv[2]) : 10000;

		return scale_main(n > 0 ? n : 1);
	}
	seconds = argc > 1 ? atoi(argv[1]) : 3;
	n_conns = argc > 2 ? atoi(argv[2]) : 64;
	n_threads = argc > 3 ? atoi(argv[3]) : 4;
	tap_plan(3);
	if (pipe(port_pipe) || pipe(stop_pipe))
		return 1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		close(stop_pipe[1]);
		_exit(server(port_pipe[1], stop_pipe[0]));
	}
	close(stop_pipe[0]);
	if (read(port_pipe[0], &server_addr, sizeof(server_addr)) != sizeof(server_addr)) {
		tap_result(0, "the server started");
		return 1;
	}
	tap_result(sw_load(&sw) == 0, "the client's provider started");
	sw_on_complete(on_complete);
	conns = calloc((size_t)n_conns, sizeof(*conns));
	pool = aligned_alloc(4096, POOL_PAGES * 4096);
	t = calloc((size_t)n_threads, sizeof(*t));
	if (!conns || !pool || !t)
		return 1;
	for (int i = 0; i < n_conns; i++)
		pthread_mutex_init(&conns[i].lock, NULL);
	/* Every connection up before the random work starts. */
	uint32_t seed = 1;
	for (int i = 0; i < n_conns; i++) {
		int ret = conn_open(&conns[i], &seed);
		if (ret)
			FAIL("connection %d: %d", i, ret);
	}
	pthread_create(&cb, NULL, callback_main, NULL);
	for (int i = 0; i < n_threads; i++)
		pthread_create(&t[i], NULL, client_main, (void *)(uintptr_t)(i + 1));
	uint64_t end = now_ms() + (uint64_t)seconds * 1000;
	while (now_ms() < end && !atomic_load(&failures))
		usleep(10000);
	atomic_store(&stop, true);
	for (int i = 0; i < n_threads; i++)
		pthread_join(t[i], NULL);
	pthread_join(cb, NULL);
	for (int i = 0; i < n_conns; i++)
		if (conns[i].up)
			conn_close(&conns[i]);
	sw_on_complete(NULL);
	fprintf(stderr,
		"# %d connections, %d threads, %d s: %lu echoes, %lu bursts, %lu RDMA, "
		"%lu registration rounds, %lu closes in flight, %lu churns, %lu callbacks\n",
		n_conns, n_threads, seconds, atomic_load(&n_echo), atomic_load(&n_burst),
		atomic_load(&n_rdma), atomic_load(&n_reg), atomic_load(&n_abort),
		atomic_load(&n_churn), atomic_load(&n_cb));
	tap_result(!atomic_load(&failures) && atomic_load(&n_echo) && atomic_load(&n_rdma),
		   "client: every byte and every up-call's order checked (%d failures)",
		   atomic_load(&failures));
	/* Stop the server: its accept wakes up to a closed pipe and a poke. */
	close(stop_pipe[1]);
	sp_socket poke = sw_connect(&sw, &server_addr, &err);
	if (poke != SP_INVALID_SOCKET)
		sw.p.close_socket(poke, &err);
	sw_unload(&sw);
	waitpid(pid, &status, 0);
	tap_result(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		   "server: every message in order, every RDMA byte checked (status %#x)", status);
	free(t);
	free(conns);
	free(pool);
	return tap_failed ? 1 : 0;
}
