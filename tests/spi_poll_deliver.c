/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Completions while application threads poll (WSPGetOverlappedResult)
 * next to the progress thread: an up-call that waits (GetOverlappedResult,
 * fWait) for a later operation of its own socket, two up-calls that wait
 * on each other's socket (both hung while a polling thread made the
 * up-calls of its socket), 64 connections and 4 threads (order, events),
 * up-calls that re-enter and close, a slot reused past the wr_id's
 * generations, a closing thread's abort up-call and the progress thread's
 * up-call that wait on each other.  Each case in a child process under a
 * watchdog (a hang fails it); TAP.
 *   spi_poll_deliver [case letter]   (SPI_POLL_DELIVER_ROUNDS, SPI_POLL_DELIVER_WATCHDOG)
 */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sw.h"
#include "tcase.h"

static struct sw sw;

static uintptr_t ov_status(struct sp_overlapped *ov)
{
	return __atomic_load_n(&ov->internal, __ATOMIC_ACQUIRE);
}

static int rounds(int dflt)
{
	const char *v = getenv("SPI_POLL_DELIVER_ROUNDS");

	return v ? atoi(v) : dflt;
}

/* A. An up-call on the polling thread waits for a later receive of its socket ----- */

static struct sw_ov a_r[2];
static sp_socket a_sock;
static pthread_t a_poller;
static atomic_int a_on_poller, a_in_hook, a_gor_ret = 99;

static void a_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n = 0, fl = 0;
	int err = 0;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov != &a_r[0].ov)
		return;
	if (pthread_equal(pthread_self(), a_poller))
		atomic_store(&a_on_poller, 1);
	atomic_store(&a_in_hook, 1);
	/* r[1]'s message is sent only once this up-call runs. */
	tcase_stage = "up-call: GetOverlappedResult(wait) on the socket's next receive";
	atomic_store(&a_gor_ret, sw.p.get_overlapped_result(a_sock, &a_r[1].ov, &n, 1, &fl, &err));
}

static void *a_poll_main(void *arg)
{
	uint32_t n = 0, fl = 0;
	int err = 0;

	(void)arg;
	sw.p.get_overlapped_result(a_sock, &a_r[0].ov, &n, 1, &fl, &err);
	return NULL;
}

static void case_wait_in_upcall_same_socket(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	int on_poller = 0, n = rounds(10);
	sp_socket c;
	int err = 0;

	sw_on_complete(a_hook);
	for (int r = 0; r < n && on_poller < 3; r++) {
		sw_pair(&sw, &c, &a_sock);
		CHECK(c != SP_INVALID_SOCKET && a_sock != SP_INVALID_SOCKET);
		void *hr = sw.register_memory(a_sock, rbuf, 4096, SP_MEM_WRITE, &err);
		void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
		CHECK(hr && hs);
		atomic_store(&a_on_poller, 0);
		atomic_store(&a_in_hook, 0);
		atomic_store(&a_gor_ret, 99);
		CHECK(sw_post_recv(&sw, a_sock, rbuf, 64, hr, &a_r[0], false) == 0);
		CHECK(sw_post_recv(&sw, a_sock, rbuf + 64, 64, hr, &a_r[1], false) == 0);
		pthread_create(&a_poller, NULL, a_poll_main, NULL);
		usleep(2000); /* the poller spins in its wait (SANPROV_SPI_POLL_US) */
		tcase_stage = "first message";
		CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
		while (!atomic_load(&a_in_hook))
			usleep(100);
		usleep(150000); /* past the up-call's polling (SANPROV_SPI_POLL_US): it sleeps */
		tcase_stage = "second message, for the receive the up-call waits on";
		CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
		tcase_stage = "the up-call's wait ends";
		for (int i = 0; i < 300 && atomic_load(&a_gor_ret) == 99; i++)
			usleep(10000);
		if (atomic_load(&a_gor_ret) == 99) {
			printf(
			    "FAIL: round %d: the up-call (on the %s thread) waits for ever for a "
			    "receive that completed (status %#lx)\n",
			    r, atomic_load(&a_on_poller) ? "polling" : "progress",
			    (unsigned long)ov_status(&a_r[1].ov));
			exit(1);
		}
		CHECK(atomic_load(&a_gor_ret) == 0);
		pthread_join(a_poller, NULL);
		on_poller += atomic_load(&a_on_poller);
		sw.p.close_socket(a_sock, &err);
		sw.p.close_socket(c, &err);
	}
	sw_on_complete(NULL);
	/* Up-calls on the polling thread are what hung; made on the progress thread, none. */
	printf("# %d rounds with the up-call on the polling thread\n", on_poller);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* B. Two polling threads, each one's up-call waits on the other's socket ---------- */

static struct sw_ov b_r[2][2];
static sp_socket b_sock[2];
static pthread_t b_poller[2];
static atomic_int b_on_poller[2], b_in_hook[2], b_gor_ret[2];

static void b_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n = 0, fl = 0;
	int err = 0;

	(void)s;
	(void)error;
	(void)bytes;
	for (int k = 0; k < 2; k++) {
		if (ov != &b_r[k][0].ov)
			continue;
		if (pthread_equal(pthread_self(), b_poller[k]))
			atomic_store(&b_on_poller[k], 1);
		atomic_store(&b_in_hook[k], 1);
		/* Both up-calls at once (bounded: the progress thread may run both in turn). */
		for (int i = 0; i < 200 && !atomic_load(&b_in_hook[!k]); i++)
			usleep(1000);
		atomic_store(&b_gor_ret[k], sw.p.get_overlapped_result(b_sock[!k], &b_r[!k][1].ov,
								       &n, 1, &fl, &err));
	}
}

static void *b_poll_main(void *arg)
{
	int k = (int)(intptr_t)arg;
	uint32_t n = 0, fl = 0;
	int err = 0;

	sw.p.get_overlapped_result(b_sock[k], &b_r[k][0].ov, &n, 1, &fl, &err);
	return NULL;
}

static void case_wait_in_upcall_cross(void)
{
	char *rbuf = aligned_alloc(4096, 8192), *sbuf = aligned_alloc(4096, 4096);
	int both = 0, n = rounds(10);
	sp_socket c[2];
	void *hr[2], *hs[2];
	int err = 0;

	sw_on_complete(b_hook);
	for (int r = 0; r < n && both < 3; r++) {
		for (int k = 0; k < 2; k++) {
			sw_pair(&sw, &c[k], &b_sock[k]);
			CHECK(c[k] != SP_INVALID_SOCKET && b_sock[k] != SP_INVALID_SOCKET);
			hr[k] = sw.register_memory(b_sock[k], rbuf + 4096 * k, 4096, SP_MEM_WRITE,
						   &err);
			hs[k] = sw.register_memory(c[k], sbuf, 4096, SP_MEM_READ, &err);
			CHECK(hr[k] && hs[k]);
			atomic_store(&b_on_poller[k], 0);
			atomic_store(&b_in_hook[k], 0);
			atomic_store(&b_gor_ret[k], 99);
			for (int j = 0; j < 2; j++)
				CHECK(sw_post_recv(&sw, b_sock[k], rbuf + 4096 * k + 64 * j, 64,
						   hr[k], &b_r[k][j], false) == 0);
		}
		for (int k = 0; k < 2; k++)
			pthread_create(&b_poller[k], NULL, b_poll_main, (void *)(intptr_t)k);
		usleep(2000);
		tcase_stage = "first messages";
		for (int k = 0; k < 2; k++)
			CHECK(sw_send_wait(&sw, c[k], sbuf, 8, hs[k]) == 0);
		while (!atomic_load(&b_in_hook[0]) || !atomic_load(&b_in_hook[1]))
			usleep(100);
		usleep(20000);
		tcase_stage = "second messages, for the receives the up-calls wait on";
		for (int k = 0; k < 2; k++)
			CHECK(sw_send_wait(&sw, c[k], sbuf, 8, hs[k]) == 0);
		tcase_stage = "the up-calls' waits end";
		for (int i = 0; i < 300 && (atomic_load(&b_gor_ret[0]) == 99 ||
					    atomic_load(&b_gor_ret[1]) == 99);
		     i++)
			usleep(10000);
		if (atomic_load(&b_gor_ret[0]) == 99 || atomic_load(&b_gor_ret[1]) == 99) {
			printf(
			    "FAIL: round %d: up-calls on the %s/%s threads wait for ever on each "
			    "other's socket (statuses %#lx %#lx)\n",
			    r, atomic_load(&b_on_poller[0]) ? "polling" : "progress",
			    atomic_load(&b_on_poller[1]) ? "polling" : "progress",
			    (unsigned long)ov_status(&b_r[0][1].ov),
			    (unsigned long)ov_status(&b_r[1][1].ov));
			exit(1);
		}
		CHECK(atomic_load(&b_gor_ret[0]) == 0 && atomic_load(&b_gor_ret[1]) == 0);
		for (int k = 0; k < 2; k++) {
			pthread_join(b_poller[k], NULL);
			sw.p.close_socket(b_sock[k], &err);
			sw.p.close_socket(c[k], &err);
		}
		both += atomic_load(&b_on_poller[0]) && atomic_load(&b_on_poller[1]);
	}
	sw_on_complete(NULL);
	printf("# %d rounds with both up-calls on their polling threads\n", both);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* C. Many sockets and threads: polled and up-called receives, order, no lost wake-up */

#define C_NC 64 /* connections */
#define C_NT 4	/* receiving threads, C_NC / C_NT sockets each */
#define C_K 8	/* receives per socket per round */

static sp_socket c_s[C_NC], c_a[C_NC];
static void *c_hr[C_NC], *c_hs[C_NC];
static char *c_rbuf, *c_sbuf;
static struct sw_ov c_r[C_NC][C_K];
static atomic_int c_upcalls[C_NC][C_K], c_bad, c_round;
static pthread_barrier_t c_bar;

#define c_bad_msg(fmt, x, y, z)                                                                    \
	do {                                                                                       \
		if (atomic_fetch_add(&c_bad, 1) < 8)                                               \
			printf("# round %d: " fmt "\n", atomic_load(&c_round), x, y, z);           \
	} while (0)

/* Every receive posted before receive j of connection i is complete. */
static void c_check_before(int i, int j)
{
	for (int k = 0; k < j; k++)
		if (ov_status(&c_r[i][k].ov) == SP_OV_PENDING) {
			c_bad_msg("connection %d: receive %d done before %d", i, j, k);
			return;
		}
}

static void c_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	(void)s;
	(void)bytes;
	if ((char *)ov < (char *)c_r || (char *)ov >= (char *)c_r + sizeof(c_r))
		return;
	long k = ((char *)ov - (char *)c_r) / (long)sizeof(c_r[0][0]);
	int i = (int)(k / C_K), j = (int)(k % C_K);

	if (error)
		c_bad_msg("connection %d receive %d: up-call error %d", i, j, (int)error);
	c_check_before(i, j);
	if (atomic_fetch_add(&c_upcalls[i][j], 1))
		c_bad_msg("connection %d receive %d: %d up-calls", i, j, 2);
}

static void *c_recv_main(void *arg)
{
	int t = (int)(intptr_t)arg, rounds_n = rounds(20);

	for (int r = 0; r < rounds_n; r++) {
		pthread_barrier_wait(&c_bar); /* the last round checked */
		for (int i = t; i < C_NC; i += C_NT)
			for (int j = 0; j < C_K; j++) {
				atomic_store(&c_upcalls[i][j], 0);
				if (sw_post_recv(&sw, c_a[i], c_rbuf + (i * C_K + j) * 64, 64,
						 c_hr[i], &c_r[i][j], (i + j + r) % 3 == 0))
					c_bad_msg("connection %d receive %d: post failed%d", i, j,
						  0);
			}
		pthread_barrier_wait(&c_bar);
		/* The sender runs: poll a while, then wait (event, or GetOverlappedResult). */
		for (int j = 0; j < C_K; j++)
			for (int i = t; i < C_NC; i += C_NT) {
				struct sw_ov *o = &c_r[i][j];
				uint32_t n = 0, fl = 0;
				int err = 0, ret = -2;

				for (int p = 0; p < 20 && ret; p++) {
					ret = sw.p.get_overlapped_result(c_a[i], &o->ov, &n, 0, &fl,
									 &err);
					if (ret && err != SP_WSA_IO_INCOMPLETE)
						break;
					sched_yield();
				}
				/* An up-call's event says it ran (the status is stored before). */
				if (!SP_OV_NO_UPCALL(&o->ov) &&
				    (!ret || err == SP_WSA_IO_INCOMPLETE)) {
					if ((ret = sw_ov_wait(&sw, c_a[i], o, &n, 5000)) == -1)
						c_bad_msg("connection %d receive %d: no event in 5 "
							  "s (lost wake-up)%d",
							  i, j, 0);
				} else if (ret && err == SP_WSA_IO_INCOMPLETE) {
					ret = sw.p.get_overlapped_result(c_a[i], &o->ov, &n, 1, &fl,
									 &err);
				}
				if (ret && ret != -1)
					c_bad_msg("connection %d receive %d: error %d", i, j,
						  ret == SP_SOCKET_ERROR ? err : ret);
				c_check_before(i, j);
			}
		pthread_barrier_wait(&c_bar);
	}
	return NULL;
}

static void case_many_sockets_threads(void)
{
	int rounds_n = rounds(20), err = 0;
	pthread_t th[C_NT];

	c_rbuf = aligned_alloc(4096, C_NC * C_K * 64);
	c_sbuf = aligned_alloc(4096, 4096);
	CHECK(c_rbuf && c_sbuf);
	tcase_stage = "connecting";
	for (int i = 0; i < C_NC; i++) {
		sw_pair(&sw, &c_s[i], &c_a[i]);
		CHECK(c_s[i] != SP_INVALID_SOCKET && c_a[i] != SP_INVALID_SOCKET);
		c_hr[i] =
		    sw.register_memory(c_a[i], c_rbuf + i * C_K * 64, C_K * 64, SP_MEM_WRITE, &err);
		c_hs[i] = sw.register_memory(c_s[i], c_sbuf, 4096, SP_MEM_READ, &err);
		CHECK(c_hr[i] && c_hs[i]);
	}
	sw_on_complete(c_hook);
	pthread_barrier_init(&c_bar, NULL, C_NT + 1);
	for (int t = 0; t < C_NT; t++)
		pthread_create(&th[t], NULL, c_recv_main, (void *)(intptr_t)t);
	for (int r = 0; r < rounds_n; r++) {
		atomic_store(&c_round, r);
		pthread_barrier_wait(&c_bar);
		pthread_barrier_wait(&c_bar); /* posted */
		tcase_stage = "sending";
		/* Round robin, with pauses: receivers poll, stop, and sleep meanwhile. */
		for (int j = 0; j < C_K; j++) {
			for (int i = 0; i < C_NC; i++) {
				int v = r * C_K + j;

				memcpy(c_sbuf + 64 * (i % 64), &v, sizeof(v));
				CHECK(sw_send_wait(&sw, c_s[i], c_sbuf + 64 * (i % 64), sizeof(v),
						   c_hs[i]) == 0);
			}
			if (j % 3 == 2)
				usleep(2000);
		}
		tcase_stage = "receivers finish the round";
		pthread_barrier_wait(&c_bar);
		for (int i = 0; i < C_NC; i++)
			for (int j = 0, v; j < C_K; j++) {
				if (!SP_OV_NO_UPCALL(&c_r[i][j].ov) &&
				    atomic_load(&c_upcalls[i][j]) != 1)
					c_bad_msg("connection %d receive %d: %d up-calls", i, j,
						  atomic_load(&c_upcalls[i][j]));
				/* Read here, by the sending thread: the data comes through the
				 * NIC's shared mapping, which the race detector does not follow. */
				memcpy(&v, c_rbuf + (i * C_K + j) * 64, sizeof(v));
				if (v != r * C_K + j)
					c_bad_msg("connection %d receive %d holds message %d", i, j,
						  v);
				sw_ov_fini(&c_r[i][j]);
			}
		if (atomic_load(&c_bad)) {
			printf("FAIL: round %d: %d errors\n", r, atomic_load(&c_bad));
			exit(1);
		}
	}
	for (int t = 0; t < C_NT; t++)
		pthread_join(th[t], NULL);
	sw_on_complete(NULL);
	tcase_stage = "closing";
	for (int i = 0; i < C_NC; i++) {
		CHECK(sw.p.close_socket(c_a[i], &err) == 0);
		CHECK(sw.p.close_socket(c_s[i], &err) == 0);
	}
	printf("# %d connections, %d threads, %d rounds\n", C_NC, C_NT, rounds_n);
	free(c_rbuf);
	free(c_sbuf);
	printf("ok\n");
}

/* D. Up-calls that re-enter (post, poll another socket, close), a close racing pollers */

#define D_K 8

static struct sw_ov d_r[D_K], d_re[D_K], d_other;
static sp_socket d_a, d_a2;
static void *d_hr;
static char *d_rbuf;
static atomic_int d_upcalls[D_K], d_reposts, d_bad, d_closed_in_upcall, d_after_close, d_in_hook;
static atomic_bool d_close_returned, d_stop;

#define d_bad_msg(fmt, x, y)                                                                       \
	do {                                                                                       \
		if (atomic_fetch_add(&d_bad, 1) < 8)                                               \
			printf("# " fmt "\n", x, y);                                               \
	} while (0)

static void d_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n = 0, fl = 0;
	int err = 0;

	(void)bytes;
	if (s != d_a || (char *)ov < (char *)d_r || (char *)ov >= (char *)(d_r + D_K))
		return;
	int j = (int)(((char *)ov - (char *)d_r) / (long)sizeof(d_r[0]));
	atomic_fetch_add(&d_in_hook, 1);
	if (atomic_load(&d_close_returned))
		atomic_fetch_add(&d_after_close, 1);
	if (atomic_fetch_add(&d_upcalls[j], 1))
		d_bad_msg("receive %d: up-call %d", j, 2);
	for (int k = 0; k < j; k++)
		if (ov_status(&d_r[k].ov) == SP_OV_PENDING)
			d_bad_msg("receive %d up-called before %d", j, k);
	if (error)
		goto out;
	/* Re-enter: another receive, a poll of another socket, then a close of this one. */
	int k = atomic_fetch_add(&d_reposts, 1);
	if (k < D_K)
		sw_post_recv(&sw, d_a, d_rbuf + 64 * (D_K + k), 64, d_hr, &d_re[k], k % 2);
	/* WSAENOTSOCK: a late up-call, the round is over. */
	if (!sw.p.get_overlapped_result(d_a2, &d_other.ov, &n, 0, &fl, &err) ||
	    (err != SP_WSA_IO_INCOMPLETE && err != SP_WSAENOTSOCK))
		d_bad_msg("the other socket's receive: error %d%d", err, 0);
	if (j == 3 && !atomic_exchange(&d_closed_in_upcall, 1))
		/* WSAENOTSOCK: the main thread's close came first, and waits for this up-call. */
		if (sw.p.close_socket(d_a, &err) && err != SP_WSAENOTSOCK)
			d_bad_msg("close from the up-call: error %d%d", err, 0);
out:
	atomic_fetch_sub(&d_in_hook, 1);
}

/* Poller 1 waits in GetOverlappedResult: the close must wake it. */
static void *d_poll_main(void *arg)
{
	int wait = (int)(intptr_t)arg;

	while (!atomic_load(&d_stop))
		for (int j = 0; j < D_K; j++) {
			uint32_t n = 0, fl = 0;
			int err = 0;

			if (SP_OV_NO_UPCALL(&d_r[j].ov) && ov_status(&d_r[j].ov) == SP_OV_PENDING)
				sw.p.get_overlapped_result(d_a, &d_r[j].ov, &n, wait, &fl, &err);
		}
	return NULL;
}

static void case_reentry_and_close(void)
{
	char *sbuf = aligned_alloc(4096, 4096);
	int n = rounds(100), err = 0, upcalls = 0, aborted = 0;
	sp_socket c, c2;

	d_rbuf = aligned_alloc(4096, 4096);
	CHECK(d_rbuf && sbuf);
	sw_on_complete(d_hook);
	srand(77);
	for (int r = 0; r < n; r++) {
		pthread_t pt[2];

		sw_pair(&sw, &c, &d_a);
		sw_pair(&sw, &c2, &d_a2);
		CHECK(c != SP_INVALID_SOCKET && d_a != SP_INVALID_SOCKET);
		CHECK(c2 != SP_INVALID_SOCKET && d_a2 != SP_INVALID_SOCKET);
		d_hr = sw.register_memory(d_a, d_rbuf, 4096, SP_MEM_WRITE, &err);
		void *h2 = sw.register_memory(d_a2, d_rbuf + 2048, 2048, SP_MEM_WRITE, &err);
		void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
		CHECK(d_hr && h2 && hs);
		CHECK(sw_post_recv(&sw, d_a2, d_rbuf + 2048, 64, h2, &d_other, false) == 0);
		atomic_store(&d_reposts, 0);
		atomic_store(&d_closed_in_upcall, 0);
		atomic_store(&d_close_returned, false);
		atomic_store(&d_stop, false);
		for (int j = 0; j < D_K; j++) {
			atomic_store(&d_upcalls[j], 0);
			CHECK(sw_post_recv(&sw, d_a, d_rbuf + 64 * j, 64, d_hr, &d_r[j],
					   rand() % 2) == 0);
		}
		for (int k = 0; k < 2; k++)
			pthread_create(&pt[k], NULL, d_poll_main, (void *)(intptr_t)k);
		tcase_stage = "sending while pollers and up-calls deliver";
		int sends = rand() % (D_K + 1);
		for (int j = 0; j < sends; j++)
			if (sw_send_wait(&sw, c, sbuf, 8, hs))
				break;
		usleep((useconds_t)(rand() % 300));
		tcase_stage = "closesocket racing the pollers";
		if (!sw.p.close_socket(d_a, &err))
			atomic_store(&d_close_returned, true);
		else if (err != SP_WSAENOTSOCK || !atomic_load(&d_closed_in_upcall))
			d_bad_msg("close: error %d%d", err, 0);
		/* A close from an up-call may still be aborting: it has 2 s. */
		for (int t = 0, left = 1; t < 2000 && left; t++) {
			left = 0;
			for (int j = 0; j < D_K; j++)
				left |= ov_status(&d_r[j].ov) == SP_OV_PENDING;
			if (left)
				usleep(1000);
		}
		atomic_store(&d_stop, true);
		for (int k = 0; k < 2; k++)
			pthread_join(pt[k], NULL);
		tcase_stage = "checking";
		bool aborted_seen = false;
		for (int j = 0; j < D_K; j++) {
			uintptr_t st = ov_status(&d_r[j].ov);

			if (st == SP_OV_PENDING)
				d_bad_msg("receive %d still pending after close (round %d)", j, r);
			else if (st == SP_WSA_OPERATION_ABORTED)
				aborted_seen = true, aborted++;
			else if (st)
				d_bad_msg("receive %d: error %d", j, (int)st);
			else if (aborted_seen)
				d_bad_msg("receive %d done after an earlier one aborted (round %d)",
					  j, r);
			if (!SP_OV_NO_UPCALL(&d_r[j].ov)) {
				if (atomic_load(&d_upcalls[j]) != 1)
					d_bad_msg("receive %d: %d up-calls", j,
						  atomic_load(&d_upcalls[j]));
				upcalls++;
			}
		}
		if (atomic_load(&d_after_close))
			d_bad_msg("%d up-calls after close returned%d", atomic_load(&d_after_close),
				  0);
		while (atomic_load(&d_in_hook))
			usleep(100);
		sw.p.close_socket(d_a2, &err);
		if (ov_status(&d_other.ov) != SP_WSA_OPERATION_ABORTED)
			d_bad_msg("the other socket's receive: %d%d", (int)ov_status(&d_other.ov),
				  0);
		sw.p.close_socket(c, &err);
		sw.p.close_socket(c2, &err);
		for (int j = 0; j < D_K; j++)
			sw_ov_fini(&d_r[j]);
		for (int k = 0; k < atomic_load(&d_reposts) && k < D_K; k++)
			sw_ov_fini(&d_re[k]);
		sw_ov_fini(&d_other);
		if (atomic_load(&d_bad)) {
			printf("FAIL: round %d: %d errors\n", r, atomic_load(&d_bad));
			exit(1);
		}
	}
	sw_on_complete(NULL);
	CHECK(sw_open_handles() == 0);
	printf("# %d rounds, %d up-calls, %d aborted\n", n, upcalls, aborted);
	free(d_rbuf);
	free(sbuf);
	printf("ok\n");
}

/* E. Slots reused past the wr_id's generations while a closed socket's peer still sends */

#define E_K 4

static struct sw_ov e_r[E_K];
static sp_socket e_a;
static atomic_int e_close_after_us;

static void *e_close_main(void *arg)
{
	int err = 0;

	(void)arg;
	usleep((useconds_t)atomic_load(&e_close_after_us));
	sw.p.close_socket(e_a, &err);
	return NULL;
}

static void case_slot_reuse_stale(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	/* 2^SP_CONN_GEN_BITS closes of the same slot and more: the generation wraps. */
	int n = rounds(1500), err = 0, done = 0, aborted = 0;
	sp_socket c;

	CHECK(rbuf && sbuf);
	srand(99);
	for (int r = 0; r < n; r++) {
		pthread_t ct;

		tcase_stage = "pair";
		sw_pair(&sw, &c, &e_a);
		CHECK(c != SP_INVALID_SOCKET && e_a != SP_INVALID_SOCKET);
		void *hr = sw.register_memory(e_a, rbuf, 4096, SP_MEM_WRITE, &err);
		void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
		CHECK(hr && hs);
		memset(rbuf, 0xff, 64 * E_K);
		for (int j = 0; j < E_K; j++)
			CHECK(sw_post_recv(&sw, e_a, rbuf + 64 * j, 64, hr, &e_r[j], j % 2) == 0);
		/* Nothing sent yet: a completion now is a stale one found under a new generation.
		 */
		for (int j = 0; j < E_K; j++)
			if (ov_status(&e_r[j].ov) != SP_OV_PENDING) {
				printf(
				    "FAIL: round %d: receive %d completed (%#lx) before any send\n",
				    r, j, (unsigned long)ov_status(&e_r[j].ov));
				exit(1);
			}
		atomic_store(&e_close_after_us, rand() % 50);
		pthread_create(&ct, NULL, e_close_main, NULL);
		tcase_stage = "sending while the receiver closes";
		for (int j = 0; j < E_K; j++) {
			int v = r * E_K + j;

			memcpy(sbuf + 64 * j, &v, sizeof(v));
			if (sw_send_wait(&sw, c, sbuf + 64 * j, sizeof(v), hs))
				break;
		}
		pthread_join(ct, NULL);
		tcase_stage = "checking";
		bool ab = false;
		for (int j = 0; j < E_K; j++) {
			uintptr_t st = ov_status(&e_r[j].ov);
			int v;

			memcpy(&v, rbuf + 64 * j, sizeof(v));
			if (st == SP_WSA_OPERATION_ABORTED) {
				ab = true;
				aborted++;
				continue;
			}
			if (st || ab || v != r * E_K + j) {
				printf("FAIL: round %d: receive %d: status %#lx, message %d%s\n", r,
				       j, (unsigned long)st, v, ab ? ", after an aborted one" : "");
				exit(1);
			}
			done++;
		}
		for (int j = 0; j < E_K; j++) {
			/* An up-called receive's event: its up-call ran. */
			uint32_t b;

			if (!SP_OV_NO_UPCALL(&e_r[j].ov))
				CHECK(sw_ov_wait(&sw, e_a, &e_r[j], &b, 5000) != -1 ||
				      ov_status(&e_r[j].ov) != SP_OV_PENDING);
			sw_ov_fini(&e_r[j]);
		}
		CHECK(sw.p.close_socket(c, &err) == 0);
	}
	CHECK(sw_open_handles() == 0);
	printf("# %d rounds, %d received, %d aborted\n", n, done, aborted);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* F. A closing thread's abort up-call and the progress thread's up-call wait on each other */

static struct sw_ov f_x2, f_y2, f_r1, f_y1;
static sp_socket f_s1, f_s2;
static atomic_int f_step, f_ret1 = 99, f_ret2 = 99;

static void f_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n = 0, fl = 0;
	int err = 0;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov == &f_x2.ov) {
		/* The progress thread, delivering s2: wait for s1's receive y1. */
		atomic_store(&f_step, 1);
		atomic_store(&f_ret2, sw.p.get_overlapped_result(f_s1, &f_y1.ov, &n, 1, &fl, &err));
	} else if (ov == &f_r1.ov) {
		/* The closing thread, aborting s1: wait for s2's receive y2. */
		atomic_store(&f_step, 2);
		atomic_store(&f_ret1, sw.p.get_overlapped_result(f_s2, &f_y2.ov, &n, 1, &fl, &err));
	}
}

static void *f_close_main(void *arg)
{
	int err = 0;

	(void)arg;
	sw.p.close_socket(f_s1, &err);
	return NULL;
}

static void close_upcall_cycle_round(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	sp_socket c1, c2;
	pthread_t ct;
	int err = 0;

	sw_pair(&sw, &c1, &f_s1);
	sw_pair(&sw, &c2, &f_s2);
	CHECK(f_s1 != SP_INVALID_SOCKET && f_s2 != SP_INVALID_SOCKET);
	void *h1 = sw.register_memory(f_s1, rbuf, 2048, SP_MEM_WRITE, &err);
	void *h2 = sw.register_memory(f_s2, rbuf + 2048, 2048, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c2, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(h1 && h2 && hs);
	CHECK(sw_post_recv(&sw, f_s1, rbuf, 64, h1, &f_r1, false) == 0);
	CHECK(sw_post_recv(&sw, f_s1, rbuf + 64, 64, h1, &f_y1, false) == 0);
	CHECK(sw_post_recv(&sw, f_s2, rbuf + 2048, 64, h2, &f_x2, false) == 0);
	CHECK(sw_post_recv(&sw, f_s2, rbuf + 2048 + 64, 64, h2, &f_y2, false) == 0);
	sw_on_complete(f_hook);
	tcase_stage = "x2's up-call waits for s1's y1";
	CHECK(sw_send_wait(&sw, c2, sbuf, 8, hs) == 0);
	while (atomic_load(&f_step) < 1)
		usleep(1000);
	tcase_stage = "closesocket(s1): r1's abort up-call waits for s2's y2";
	pthread_create(&ct, NULL, f_close_main, NULL);
	for (int i = 0; i < 1000 && atomic_load(&f_step) < 2; i++)
		usleep(1000);
	usleep(20000);
	tcase_stage = "y2's message";
	CHECK(sw_send_wait(&sw, c2, sbuf, 8, hs) == 0);
	tcase_stage = "both waits end";
	for (int i = 0; i < 500 && (atomic_load(&f_ret1) == 99 || atomic_load(&f_ret2) == 99); i++)
		usleep(10000);
	if (atomic_load(&f_ret1) == 99 || atomic_load(&f_ret2) == 99) {
		printf("FAIL: the closing thread's up-call and the progress thread's up-call wait "
		       "for each other (y1 %#lx, y2 %#lx)\n",
		       (unsigned long)ov_status(&f_y1.ov), (unsigned long)ov_status(&f_y2.ov));
		exit(1);
	}
	pthread_join(ct, NULL);
	sw_on_complete(NULL);
	atomic_store(&f_step, 0);
	atomic_store(&f_ret1, 99);
	atomic_store(&f_ret2, 99);
	/* Each event signalled (its up-call is over) before it is closed. */
	struct sw_ov *ovs[] = { &f_x2, &f_y2, &f_r1, &f_y1 };
	for (int i = 0; i < 4; i++) {
		struct pollfd p = { .fd = ovs[i]->fd, .events = POLLIN };

		uint64_t v;

		CHECK(poll(&p, 1, 5000) == 1);
		CHECK(read(ovs[i]->fd, &v, sizeof(v)) == sizeof(v));
		sw_ov_fini(ovs[i]);
	}
	sw.p.close_socket(f_s2, &err);
	sw.p.close_socket(c1, &err);
	sw.p.close_socket(c2, &err);
	free(rbuf);
	free(sbuf);
}

/* Which thread polls y2's completion first varies: a few rounds. */
static void case_close_upcall_cycle(void)
{
	for (int r = 0; r < rounds(3) && r < 10; r++)
		close_upcall_cycle_round();
	CHECK(sw_open_handles() == 0);
	printf("ok\n");
}

static const struct tcase cases[] = {
	{ "A wait_in_upcall_same_socket", case_wait_in_upcall_same_socket, false },
	{ "B wait_in_upcall_cross", case_wait_in_upcall_cross, false },
	{ "C many_sockets_threads", case_many_sockets_threads, false },
	{ "D reentry_and_close", case_reentry_and_close, false },
	{ "E slot_reuse_stale", case_slot_reuse_stale, false },
	{ "F close_upcall_cycle", case_close_upcall_cycle, false },
};

int main(int argc, char **argv)
{
	const char *secs = getenv("SPI_POLL_DELIVER_WATCHDOG");

	setenv("SANPROV_SPI_CONNECT_TIMEOUT_MS", "2000", 0);
	/* Long polling waits: the completions come while the application thread polls. */
	setenv("SANPROV_SPI_POLL_US", "50000", 0);
	return tcase_main(&sw, cases, sizeof(cases) / sizeof(cases[0]), argc > 1 ? argv[1] : NULL,
			  secs ? (unsigned int)atoi(secs) : 30);
}
