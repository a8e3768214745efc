/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The switch core's session protocol (shim/core/swc.h) between two
 * processes: a stream of small and large sends each way (large ones by
 * RDMA read, or by RDMA write), received in other sizes than sent and
 * verified byte for byte, while a thread in each process keeps calling the
 * cache callback over the application's buffer that its transfers use
 * through memory handles only; then the orderly shutdown, each end reading
 * 0 after the data.  (The callback says the memory is changing: over a
 * buffer the peer reaches by an RDMA registration it revokes the peer's
 * access, docs/spi-memory.md, and would break the session.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sw.h"
#include "tdev.h"
#include "tpair.h"

/* Message sizes: below, at and above the payload of a control message and the threshold. */
static const size_t sizes[] = { 1,
				17,
				4000,
				4056,
				4057,
				65536,
				65537,
				100000,
				1u << 20,
				3 * 4096 + 5,
				3u << 20 /* more than one RDMA */,
				200,
				2 * 1024 * 1024 + 77 };
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))
#define MAX_RDMA (1u << 20)

struct storm {
	struct sw *sw;
	char *buf[2]; /* what the process sends from and receives into */
	size_t len;
	atomic_bool stop;
	atomic_ulong calls;
	unsigned long dropped;
	int bad; /* an answer the SPI does not allow */
};

static void *storm_main(void *arg)
{
	struct storm *st = arg;
	unsigned int seed = 12345;

	while (!atomic_load(&st->stop)) {
		size_t off = (size_t)rand_r(&seed) % st->len;
		size_t len =
		    1 + (size_t)rand_r(&seed) % (st->len - off < 300000 ? st->len - off : 300000);
		char *buf = st->buf[rand_r(&seed) & 1];
		int err = 0;

		if (!st->sw->cache_callback(buf + off, len, &err))
			st->dropped++;
		else if (err != SP_WSAEINVAL)
			st->bad = err;
		atomic_fetch_add(&st->calls, 1);
		usleep(50);
	}
	return NULL;
}

static size_t total(void)
{
	size_t t = 0;

	for (size_t i = 0; i < N_SIZES; i++)
		t += sizes[i];
	return t;
}

/* Receive sizes other than the sent ones: the stream has no message boundaries. */
static const size_t rsizes[] = { 3, 4093, 1, 70000, 900000, 5000, 2u << 20, 12345 };
#define N_RSIZES (sizeof(rsizes) / sizeof(rsizes[0]))

/* Send every size from out, then receive them all back into in and compare. */
static int stream(struct swc_sess *ss, bool first, char *out, char *in, size_t len)
{
	int ret = 0;

	for (int round = 0; round < 2 && !ret; round++) {
		bool sending = (round == 0) == first;
		size_t off = 0;

		for (size_t i = 0; off < len && !ret; i++) {
			size_t n = sending ? sizes[i] : rsizes[i % N_RSIZES];

			n = n < len - off ? n : len - off;
			ret = sending ? swc_send(ss, out + off, n) : swc_recv(ss, in + off, n);
			off += n;
		}
		if (!ret && !sending && memcmp(in, out, len))
			ret = -100; /* the data differs */
	}
	return ret;
}

/* Shut down, then read 0 after the peer's shutdown (twice: it stays at the end). */
static int finish(struct swc_sess *ss)
{
	char c;
	size_t got = 1;
	int ret = swc_shutdown(ss);

	if (ret)
		return ret;
	if (swc_send(ss, &c, 1) != EPIPE)
		return -101;
	for (int i = 0; i < 2; i++) {
		ret = swc_recv_some(ss, &c, 1, &got);
		if (ret || got)
			return ret ? ret : -102;
	}
	return swc_recv(ss, &c, 1) == EPIPE ? 0 : -103;
}

/* One side; returns 0 or a code for the exit status. */
static int side(bool server, int port_rd, int port_wr, bool rdma_read)
{
	struct sw sw;
	struct swc_sess ss;
	struct swc_spi spi;
	/* The server waits by up-call, the client polls. */
	struct swc_opts o = { .large = rdma_read ? SWC_LARGE_READ : SWC_LARGE_WRITE,
			      .events = server ? &sw_events : NULL };
	struct storm st = { 0 };
	size_t len = total();
	char *out = malloc(len), *in = calloc(1, len);
	pthread_t t;
	sp_socket s;
	int err = 0, ret;
	int32_t max = MAX_RDMA;

	if (!out || !in)
		return 1;
	/* Both sides send the same stream: each checks what it got against its own. */
	fill_pattern(out, len, 77);
	ret = sw_load(&sw);
	if (ret) {
		fprintf(stderr, "load: %d\n", ret);
		return 2;
	}
	if (server) {
		struct sockaddr_in sin;
		sp_socket l = sw_listen(&sw, &sin);
		if (l == SP_INVALID_SOCKET || write(port_wr, &sin, sizeof(sin)) != sizeof(sin))
			return 3;
		s = sw.p.accept(l, NULL, NULL, NULL, 0, &err);
		sw.p.close_socket(l, &err);
	} else {
		struct sockaddr_in sin;
		if (read(port_rd, &sin, sizeof(sin)) != sizeof(sin))
			return 4;
		s = sw_connect(&sw, &sin, &err);
	}
	if (s == SP_INVALID_SOCKET) {
		fprintf(stderr, "%s: %d\n", server ? "accept" : "connect", err);
		return 5;
	}
	if (sw.p.set_sock_opt(s, SP_SOL_SOCKET, SP_SO_MAX_RDMA_SIZE, (char *)&max, sizeof(max),
			      &err))
		return 6;
	sw_spi(&sw, &spi);
	ret = swc_sess_init(&ss, &spi, s, &o);
	if (ret) {
		fprintf(stderr, "session: %d\n", ret);
		return 7;
	}
	/*
	 * By RDMA read the receiver reads into in through a memory handle and
	 * the sender's out is the peer's target; by RDMA write the other way.
	 */
	st = (struct storm){ .sw = &sw,
			     .buf = { rdma_read ? in : out, rdma_read ? in : out },
			     .len = len };
	if (pthread_create(&t, NULL, storm_main, &st))
		return 8;
	/* The storm is under way before the first transfer. */
	while (!atomic_load(&st.calls))
		usleep(100);
	ret = stream(&ss, !server, out, in, len);
	if (!ret)
		ret = finish(&ss);
	atomic_store(&st.stop, true);
	pthread_join(t, NULL);
	if (ret) {
		fprintf(stderr, "%s: stream: %d\n", server ? "server" : "client", ret);
		return 9;
	}
	if (st.bad) {
		fprintf(stderr, "cache callback answered %d\n", st.bad);
		return 10;
	}
	if (!ss.st.large_msgs || !ss.st.small_msgs || ss.st.bytes_received != len)
		return 11;

	fprintf(stderr,
		"%s: %lu small, %lu large, %lu control messages, %lu credit writes, %lu stalls; "
		"%lu cache callbacks, %lu dropped\n",
		server ? "server" : "client", (unsigned long)ss.st.small_msgs,
		(unsigned long)ss.st.large_msgs, (unsigned long)ss.st.ctl_msgs,
		(unsigned long)ss.st.credit_writes, (unsigned long)ss.st.credit_stalls,
		atomic_load(&st.calls), st.dropped);
	swc_sess_fini(&ss);
	sw_unload(&sw);
	free(out);
	free(in);
	return 0;
}

static void run(bool rdma_read)
{
	int fds[2], status;
	pid_t pid;

	cr_assert_eq(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		close(fds[0]);
		_exit(side(true, -1, fds[1], rdma_read));
	}
	close(fds[1]);
	int ret = side(false, fds[0], -1, rdma_read);
	close(fds[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(ret, 0, "client side failed: %d", ret);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server side failed: 0x%x",
		  status);
}

Test(spi_session, two_processes_large_sends_by_rdma_read, .timeout = 240)
{
	run(true);
}

Test(spi_session, two_processes_large_sends_by_rdma_write, .timeout = 240)
{
	run(false);
}

/*
 * Both ends of a pair in one thread: the first end's hello meets a peer
 * with no receive posted yet.  softnic waits for it at once; a NIC retries
 * after its receiver-not-ready timer, which takes seconds on the emulated
 * soft-RoCE of the VM tier, where the two-process cases run instead.
 */
static void one_thread_pairs_only_on_softnic(void)
{
	if (!tdev_is_softnic())
		cr_skip_test("both ends in one thread wait out RNR timers on a NIC");
}

/*
 * A sender that closes right after its last send (no shutdown of its
 * own, as an HTTP/1.0 server does): the reader gets every byte, then the
 * end of the stream, never a reset.
 */
/* The provider loaded, a connected pair in this process, a session at each end. */
static void sess_pair(struct sw *sw, struct swc_sess *a, struct swc_sess *b)
{
	struct swc_spi spi;
	sp_socket c, s;

	cr_assert_eq(sw_load(sw), 0);
	sw_spi(sw, &spi);
	sw_pair(sw, &c, &s);
	cr_assert(c != SP_INVALID_SOCKET && s != SP_INVALID_SOCKET);
	cr_assert_eq(swc_sess_init(a, &spi, c, NULL), 0);
	cr_assert_eq(swc_sess_init(b, &spi, s, NULL), 0);
}

Test(spi_session, close_right_after_sending_is_graceful, .timeout = 60)
{
	static char out[200000], in[sizeof(out)];
	struct swc_sess a, b;
	struct sw sw;
	size_t got = 1;

	one_thread_pairs_only_on_softnic();
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 7 + 3);
	sess_pair(&sw, &a, &b);
	/* Small messages only (below the threshold): the sender need not wait for the reader. */
	for (size_t off = 0; off < 8 * 1000; off += 1000)
		cr_assert_eq(swc_send(&a, out + off, 1000), 0);
	cr_assert_eq(swc_recv(&b, in, 1), 0); /* the hello is in */
	swc_sess_fini(&a);
	usleep(100 * 1000); /* the reader's receives behind the data complete */
	cr_assert_eq(swc_recv(&b, in + 1, 8 * 1000 - 1), 0, "data lost at the sender's close");
	cr_assert_eq(memcmp(in, out, 8 * 1000), 0);
	int re = swc_recv_some(&b, in, 1, &got);
	cr_assert_eq(re, 0, "the end of the stream is an error: %d wsa %d", re, b.wsa_error);
	cr_assert_eq(got, 0);
	swc_sess_fini(&b);
	sw_unload(&sw);
}

struct closer {
	struct swc_sess *ss;
	char *buf;
	size_t len;
	int ret;
};

/* Read len bytes, answer 64, close at once (as the stream in transport_bench does). */
static void *closer_main(void *arg)
{
	struct closer *c = arg;

	c->ret = swc_recv(c->ss, c->buf, c->len);
	if (!c->ret)
		c->ret = swc_send(c->ss, c->buf, 64);
	swc_sess_fini(c->ss);
	return NULL;
}

/*
 * The peer answers and closes while this end still waits in a large send
 * (its credit write may meet the closed connection): the send completes
 * and the answer is read, many times over.
 */
Test(spi_session, peer_closes_while_a_large_send_ends, .timeout = 120)
{
	const size_t len = 4u << 20, piece = len / 4;
	const int rounds = 100;
	char *out, *in, ans[64];
	struct swc_spi spi;
	struct sw sw;

	one_thread_pairs_only_on_softnic();
	out = malloc(len);
	in = malloc(len);

	cr_assert(out && in);
	memset(out, 5, len);
	cr_assert_eq(sw_load(&sw), 0);
	sw_spi(&sw, &spi);
	for (int round = 0; round < rounds; round++) {
		struct swc_sess a, b;
		struct closer c = { &b, in, len, 0 };
		sp_socket cs, ss;
		pthread_t t;
		int ret = 0;

		sw_pair(&sw, &cs, &ss);
		cr_assert(cs != SP_INVALID_SOCKET && ss != SP_INVALID_SOCKET);
		cr_assert_eq(swc_sess_init(&a, &spi, cs, NULL), 0);
		cr_assert_eq(swc_sess_init(&b, &spi, ss, NULL), 0);
		cr_assert_eq(pthread_create(&t, NULL, closer_main, &c), 0);
		for (size_t off = 0; off < len && !ret; off += piece)
			ret = swc_send(&a, out + off, piece);
		if (!ret)
			ret = swc_recv(&a, ans, sizeof(ans));
		pthread_join(t, NULL);
		cr_assert_eq(c.ret, 0, "round %d: the reader failed: %d", round, c.ret);
		cr_assert_eq(ret, 0, "round %d: the sender failed: %d (wsa %d)", round, ret,
			     a.wsa_error);
		swc_sess_fini(&a);
	}
	sw_unload(&sw);
	free(out);
	free(in);
}

/*
 * Non-blocking large sends are staged: each returns at once with all its
 * bytes, before the reader reads (copied messages would stop at the ring's
 * credits); small ones between them keep their place in the stream; once
 * every slot is on the way the send buffer is full (EAGAIN); the reader's
 * dones free the slots.
 */
Test(spi_session, non_blocking_large_sends_are_staged, .timeout = 60)
{
	enum { BIG = 200000, N = SWC_STAGE_SLOTS };
	static char out[N * (BIG + 100)], in[sizeof(out)];
	struct swc_sess a, b;
	struct swc_ready rd;
	struct sw sw;
	size_t sent, off = 0;

	one_thread_pairs_only_on_softnic();
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 13 + 5);
	sess_pair(&sw, &a, &b);
	cr_assert_eq(swc_send(&b, "h", 1), 0);
	cr_assert_eq(swc_recv(&a, in, 1), 0); /* the hellos are in */
	for (int i = 0; i < N; i++) {
		cr_assert_eq(swc_send_some(&a, out + off, BIG, &sent), 0, "send %d", i);
		cr_assert_eq(sent, BIG, "send %d took %zu bytes", i, sent);
		off += sent;
		if (i % 2)
			continue; /* within the ring's credits: the reader reads nothing yet */
		cr_assert_eq(swc_send_some(&a, out + off, 100, &sent), 0);
		cr_assert_eq(sent, 100);
		off += sent;
	}
	cr_assert_eq(a.st.staged_msgs, N);
	int re = swc_send_some(&a, out, BIG, &sent);
	cr_assert_eq(re, EAGAIN, "more than the slots: %d, %zu bytes, %u staged", re, sent,
		     a.stage_n);
	cr_assert_eq(sent, 0);
	cr_assert_eq(swc_poll(&a, &rd), 0);
	cr_assert(!rd.writable, "writable with every slot on the way");
	cr_assert_eq(swc_recv(&b, in, off), 0);
	cr_assert_eq(memcmp(in, out, off), 0, "the stream is out of order");
	for (int i = 0; i < 1000 && a.stage_n; i++) {
		cr_assert_eq(swc_poll(&a, &rd), 0);
		usleep(1000);
	}
	cr_assert_eq(a.stage_n, 0, "the reader's dones did not free the slots");
	cr_assert(rd.writable);
	swc_sess_fini(&a);
	swc_sess_fini(&b);
	sw_unload(&sw);
}
