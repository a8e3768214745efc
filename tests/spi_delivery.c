/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The SPI's completion delivery (a FIFO per socket, one deliverer at a
 * time) and accept, under the ways a switch uses them at once: a wait in
 * an up-call racing a close of the same socket, cleanup from a condition
 * function, an accept nested in a condition function, mixed polled and
 * up-called operations on one socket with two pollers and the progress
 * thread (order, exactly once, contents), closes racing delivery, accepts
 * that defer or refuse while the listener closes, waits across sockets
 * from up-calls, a receive reposted from its up-call on a full queue.
 * Each case in a child process under a watchdog (a hang fails it); TAP.
 *   spi_delivery [case letter]   (SPI_DELIVERY_ROUNDS, SPI_DELIVERY_WATCHDOG)
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sw.h"
#include "tcase.h"
#include "tdev.h"

static struct sw sw;

static uintptr_t ov_status(struct sp_overlapped *ov)
{
	return __atomic_load_n(&ov->internal, __ATOMIC_ACQUIRE);
}

/* A. GetOverlappedResult(wait) in an up-call on the same socket, racing a close ---- */

static struct sw_ov a_r[2];
static sp_socket a_sock;
static atomic_int a_in_hook, a_gor_ret = 99, a_gor_err;

static void a_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n = 0, fl = 0;
	int err = 0, r;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov != &a_r[0].ov)
		return;
	atomic_store(&a_in_hook, 1);
	/* The second receive never completes in the QP: only the close can end it. */
	r = sw.p.get_overlapped_result(a_sock, &a_r[1].ov, &n, 1, &fl, &err);
	atomic_store(&a_gor_err, err);
	atomic_store(&a_gor_ret, r);
}

static void case_gor_same_socket_vs_close(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	sp_socket c, a;
	int err = 0;

	sw_pair(&sw, &c, &a);
	CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	a_sock = a;
	void *hr = sw.register_memory(a, rbuf, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(hr && hs);
	CHECK(sw_post_recv(&sw, a, rbuf, 64, hr, &a_r[0], false) == 0);
	CHECK(sw_post_recv(&sw, a, rbuf + 64, 64, hr, &a_r[1], true) == 0);
	sw_on_complete(a_hook);
	CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
	while (!atomic_load(&a_in_hook))
		usleep(1000);
	usleep(50000);
	tcase_stage = "closesocket(a) from main while the up-call waits on a's other receive";
	int r = sw.p.close_socket(a, &err);
	tcase_stage = "after closesocket";
	for (int i = 0; i < 200 && atomic_load(&a_gor_ret) == 99; i++)
		usleep(10000);
	printf("# close %d; up-call's GetOverlappedResult(wait) %d error %d\n", r,
	       atomic_load(&a_gor_ret), atomic_load(&a_gor_err));
	CHECK(r == 0);
	CHECK(atomic_load(&a_gor_ret) != 0 && atomic_load(&a_gor_err) == SP_WSA_OPERATION_ABORTED);
	sw_on_complete(NULL);
	sw.p.close_socket(c, &err);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* B. WSPCleanup from the condition function: documented WSAEINPROGRESS -------------- */

static struct sockaddr_in b_sin;
static atomic_int b_cleanup_ret = 99, b_cleanup_err;

struct conn_arg {
	pthread_t t;
	sp_socket c;
	int err;
};

static void *connect_main(void *arg)
{
	struct conn_arg *x = arg;

	x->c = sw_connect(&sw, &b_sin, &x->err);
	return NULL;
}

static int b_cond(const struct sockaddr *caller, int len, uintptr_t data)
{
	int err = 0, r;

	(void)caller;
	(void)len;
	(void)data;
	tcase_stage = "WSPCleanup inside the condition function";
	r = sw.p.cleanup(&err);
	atomic_store(&b_cleanup_err, err);
	atomic_store(&b_cleanup_ret, r);
	printf("# cleanup in the condition function: %d, error %d\n", r, err);
	tcase_stage = "condition function returns after WSPCleanup";
	return SP_CF_ACCEPT;
}

static void case_cleanup_in_condition(void)
{
	struct conn_arg con = { 0 };
	int err = 0;

	sp_socket l = sw_listen(&sw, &b_sin);
	CHECK(l != SP_INVALID_SOCKET);
	pthread_create(&con.t, NULL, connect_main, &con);
	sp_socket a = sw.p.accept(l, NULL, NULL, b_cond, 0, &err);
	printf("# accept: %s, error %d\n", a == SP_INVALID_SOCKET ? "failed" : "socket", err);
	pthread_join(con.t, NULL);
	if (atomic_load(&b_cleanup_ret) == 0) {
		printf("FAIL: WSPCleanup from the condition function tore the provider down "
		       "(docs: refused there)\n");
		exit(1);
	}
	CHECK(atomic_load(&b_cleanup_err) == SP_WSAEINPROGRESS);
	printf("ok\n");
}

/* C. A nested accept inside a condition function, then close the listener -------------- */

static sp_socket c_l;
static atomic_int c_calls;

static int c_defer(const struct sockaddr *caller, int len, uintptr_t data)
{
	(void)caller;
	(void)len;
	(void)data;
	return SP_CF_DEFER;
}

static int c_cond(const struct sockaddr *caller, int len, uintptr_t data)
{
	int err = 0, r;

	(void)caller;
	(void)len;
	(void)data;
	if (atomic_fetch_add(&c_calls, 1))
		return SP_CF_REJECT;
	tcase_stage = "nested accept inside the condition function";
	sp_socket a = sw.p.accept(c_l, NULL, NULL, c_defer, 0, &err);
	printf("# nested accept: %s, error %d\n", a == SP_INVALID_SOCKET ? "failed" : "socket",
	       err);
	tcase_stage = "closesocket(listener) from the condition function after a nested accept";
	r = sw.p.close_socket(c_l, &err);
	printf("# close from the condition function: %d, error %d\n", r, err);
	tcase_stage = "condition function returns";
	return SP_CF_REJECT;
}

static void case_nested_accept_then_close(void)
{
	struct conn_arg con[2] = { 0 };
	int err = 0;

	c_l = sw_listen(&sw, &b_sin);
	CHECK(c_l != SP_INVALID_SOCKET);
	for (int i = 0; i < 2; i++)
		pthread_create(&con[i].t, NULL, connect_main, &con[i]);
	usleep(200000); /* both requests wait at the listener */
	sp_socket a = sw.p.accept(c_l, NULL, NULL, c_cond, 0, &err);
	printf("# outer accept: %s, error %d\n", a == SP_INVALID_SOCKET ? "failed" : "socket", err);
	CHECK(a == SP_INVALID_SOCKET && err == SP_WSAEINTR);
	for (int i = 0; i < 2; i++)
		pthread_join(con[i].t, NULL);
	printf("ok\n");
}

/* D. Order and count: mixed polled/up-call receives, two pollers and the progress thread */

#define DK 64
static struct sw_ov d_r[DK];
static bool d_polled[DK];
static atomic_int d_upcalls[DK], d_seen[DK], d_done, d_bad, d_round;
static atomic_bool d_stop;

static void d_check_before(int i, const char *who)
{
	for (int j = 0; j < i; j++)
		if (ov_status(&d_r[j].ov) == SP_OV_PENDING) {
			if (atomic_fetch_add(&d_bad, 1) < 5)
				printf("# round %d: %s saw receive %d complete before %d\n",
				       atomic_load(&d_round), who, i, j);
			return;
		}
}

static void d_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	(void)s;
	(void)bytes;
	if (ov < &d_r[0].ov || ov > &d_r[DK - 1].ov)
		return;
	int i = (int)(((char *)ov - (char *)&d_r[0]) / (long)sizeof(d_r[0]));
	if (error && atomic_fetch_add(&d_bad, 1) < 5)
		printf("# receive %d up-call error %u\n", i, error);
	d_check_before(i, "an up-call");
	if (atomic_fetch_add(&d_upcalls[i], 1)) {
		if (atomic_fetch_add(&d_bad, 1) < 5)
			printf("# receive %d: a second up-call\n", i);
		return;
	}
	atomic_fetch_add(&d_done, 1);
}

struct d_poller {
	pthread_t t;
	int id;
	sp_socket s;
};

static void *d_poll_main(void *arg)
{
	struct d_poller *p = arg;

	while (!atomic_load(&d_stop)) {
		for (int i = 0; i < DK; i++) {
			uint32_t n = 0, fl = 0;
			int err = 0, r;

			if (!d_polled[i] || (i / 2) % 2 != p->id || atomic_load(&d_seen[i]))
				continue;
			if (ov_status(&d_r[i].ov) == 0x0u && !atomic_load(&d_seen[i]) &&
			    d_r[i].fd < 0)
				continue;
			r = sw.p.get_overlapped_result(p->s, &d_r[i].ov, &n, p->id, &fl, &err);
			if (r && err == SP_WSA_IO_INCOMPLETE)
				continue;
			if (r && err == SP_WSAENOTSOCK)
				continue;
			if (r && atomic_fetch_add(&d_bad, 1) < 5)
				printf("# receive %d polled: error %d\n", i, err);
			d_check_before(i, "a poller");
			atomic_store(&d_seen[i], 1);
			atomic_fetch_add(&d_done, 1);
		}
		sched_yield();
	}
	return NULL;
}

static void case_order_mixed(void)
{
	char *rbuf = aligned_alloc(4096, DK * 64), *sbuf = aligned_alloc(4096, 4096);
	struct d_poller pl[2];
	sp_socket c, a;
	int err = 0,
	    rounds = getenv("SPI_DELIVERY_ROUNDS") ? atoi(getenv("SPI_DELIVERY_ROUNDS")) : 150;

	sw_pair(&sw, &c, &a);
	CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	void *hr = sw.register_memory(a, rbuf, DK * 64, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(hr && hs);
	sw_on_complete(d_hook);
	srand(1234);
	for (int r = 0; r < rounds; r++) {
		atomic_store(&d_round, r);
		atomic_store(&d_done, 0);
		atomic_store(&d_stop, false);
		for (int i = 0; i < DK; i++) {
			d_polled[i] = rand() % 2;
			atomic_store(&d_upcalls[i], 0);
			atomic_store(&d_seen[i], 0);
			CHECK(sw_post_recv(&sw, a, rbuf + 64 * i, 64, hr, &d_r[i], d_polled[i]) ==
			      0);
		}
		for (int k = 0; k < 2; k++) {
			pl[k].id = k;
			pl[k].s = a;
			pthread_create(&pl[k].t, NULL, d_poll_main, &pl[k]);
		}
		tcase_stage = "sending";
		for (int i = 0; i < DK; i++) {
			memcpy(sbuf, &i, sizeof(i));
			CHECK(sw_send_wait(&sw, c, sbuf, sizeof(i), hs) == 0);
		}
		tcase_stage = "waiting for every receive";
		for (int t = 0; t < 1000 && atomic_load(&d_done) < DK; t++)
			usleep(1000);
		atomic_store(&d_stop, true);
		for (int k = 0; k < 2; k++)
			pthread_join(pl[k].t, NULL);
		if (atomic_load(&d_done) != DK) {
			printf("FAIL: round %d: %d of %d receives delivered\n", r,
			       atomic_load(&d_done), DK);
			for (int i = 0; i < DK; i++)
				if (ov_status(&d_r[i].ov) == SP_OV_PENDING)
					printf("# receive %d (%s) still pending\n", i,
					       d_polled[i] ? "polled" : "up-call");
			exit(1);
		}
		for (int i = 0; i < DK; i++) {
			int v;
			memcpy(&v, rbuf + 64 * i, sizeof(v));
			if (v != i && atomic_fetch_add(&d_bad, 1) < 5)
				printf("# receive %d holds message %d\n", i, v);
			/* An up-call may still be signalling its event: seen first, then closed. */
			uint32_t got;
			if (!d_polled[i])
				CHECK(sw_ov_wait(&sw, a, &d_r[i], &got, 10000) == 0);
			sw_ov_fini(&d_r[i]);
		}
		CHECK(atomic_load(&d_bad) == 0);
	}
	sw_on_complete(NULL);
	sw.p.close_socket(a, &err);
	sw.p.close_socket(c, &err);
	printf("# %d rounds of %d\n", rounds, DK);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* E. closesocket racing delivery: every operation once, nothing after the close ------ */

#define EK 32
static struct sw_ov e_r[EK];
static atomic_int e_upcalls[EK], e_late, e_closed_flag;
static atomic_int e_hook_sleep;

static void e_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	(void)s;
	(void)error;
	(void)bytes;
	if (ov < &e_r[0].ov || ov > &e_r[EK - 1].ov)
		return;
	int i = (int)(((char *)ov - (char *)&e_r[0]) / (long)sizeof(e_r[0]));
	if (atomic_load(&e_closed_flag))
		atomic_fetch_add(&e_late, 1);
	atomic_fetch_add(&e_upcalls[i], 1);
	if (atomic_load(&e_hook_sleep))
		usleep((useconds_t)(rand() % 200));
}

struct e_sender {
	pthread_t t;
	sp_socket c;
	char *buf;
	void *h;
	int n;
};

static void *e_send_main(void *arg)
{
	struct e_sender *x = arg;

	for (int i = 0; i < x->n; i++)
		if (sw_send_wait(&sw, x->c, x->buf, 8, x->h))
			break;
	return NULL;
}

static void *e_poll_main(void *arg)
{
	sp_socket s = *(sp_socket *)arg;

	while (!atomic_load(&e_closed_flag)) {
		for (int i = 0; i < EK; i += 2) {
			uint32_t n, fl;
			int err;
			sw.p.get_overlapped_result(s, &e_r[i].ov, &n, 0, &fl, &err);
		}
	}
	return NULL;
}

static void case_close_racing_delivery(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	int err = 0,
	    rounds = getenv("SPI_DELIVERY_ROUNDS") ? atoi(getenv("SPI_DELIVERY_ROUNDS")) : 60;
	long total_up = 0, total_aborted = 0;

	sw_on_complete(e_hook);
	for (int r = 0; r < rounds; r++) {
		sp_socket c, a;
		struct e_sender snd;
		pthread_t pt;

		sw_pair(&sw, &c, &a);
		CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
		void *hr = sw.register_memory(a, rbuf, EK * 64, SP_MEM_WRITE, &err);
		void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
		CHECK(hr && hs);
		atomic_store(&e_closed_flag, 0);
		atomic_store(&e_hook_sleep, r % 2);
		for (int i = 0; i < EK; i++) {
			atomic_store(&e_upcalls[i], 0);
			/* even: polled, odd: up-call */
			CHECK(sw_post_recv(&sw, a, rbuf + 64 * i, 64, hr, &e_r[i], i % 2 == 0) ==
			      0);
		}
		snd = (struct e_sender){ .c = c, .buf = sbuf, .h = hs, .n = EK / 2 + rand() % EK };
		pthread_create(&snd.t, NULL, e_send_main, &snd);
		pthread_create(&pt, NULL, e_poll_main, &a);
		usleep((useconds_t)(rand() % 3000));
		tcase_stage = "closesocket racing the deliveries";
		CHECK(sw.p.close_socket(a, &err) == 0);
		atomic_store(&e_closed_flag, 1);
		int pending = 0, dup = 0;
		for (int i = 0; i < EK; i++) {
			if (ov_status(&e_r[i].ov) == SP_OV_PENDING)
				pending++;
			if (ov_status(&e_r[i].ov) == SP_WSA_OPERATION_ABORTED)
				total_aborted++;
			if (i % 2 && atomic_load(&e_upcalls[i]) != 1)
				dup++;
			total_up += atomic_load(&e_upcalls[i]);
		}
		pthread_join(pt, NULL);
		pthread_join(snd.t, NULL);
		usleep(5000);
		if (pending || dup || atomic_load(&e_late)) {
			printf("FAIL: round %d: %d pending after close, %d up-call ops not called "
			       "exactly once, %d up-calls after close returned\n",
			       r, pending, dup, atomic_load(&e_late));
			exit(1);
		}
		sw.p.close_socket(c, &err);
		for (int i = 0; i < EK; i++)
			sw_ov_fini(&e_r[i]);
	}
	sw_on_complete(NULL);
	printf("# %d rounds, %ld up-calls, %ld aborted\n", rounds, total_up, total_aborted);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* F. accept, defer and close racing ------------------------------------------------ */

static sp_socket f_l;
static atomic_int f_accepted_n;
static sp_socket f_acc[64];

static int f_cond(const struct sockaddr *caller, int len, uintptr_t data)
{
	(void)caller;
	(void)len;
	(void)data;
	usleep((useconds_t)(rand() % 2000));
	switch (rand() % 3) {
	case 0:
		return SP_CF_DEFER;
	case 1:
		return SP_CF_REJECT;
	default:
		return SP_CF_ACCEPT;
	}
}

static void *f_accept_main(void *arg)
{
	(void)arg;
	for (;;) {
		int err = 0;
		sp_socket a = sw.p.accept(f_l, NULL, NULL, f_cond, 0, &err);
		if (a != SP_INVALID_SOCKET) {
			int k = atomic_fetch_add(&f_accepted_n, 1);
			if (k < 64)
				f_acc[k] = a;
			continue;
		}
		if (err == SP_WSATRY_AGAIN || err == SP_WSAECONNREFUSED || err == SP_WSAENOBUFS ||
		    err == SP_WSAECONNABORTED)
			continue;
		if (err != SP_WSAEINTR && err != SP_WSAENOTSOCK)
			printf("# accept: unexpected error %d\n", err);
		return NULL;
	}
}

static void case_accept_defer_close(void)
{
	int rounds = getenv("SPI_DELIVERY_ROUNDS") ? atoi(getenv("SPI_DELIVERY_ROUNDS")) : 20;

	for (int r = 0; r < rounds; r++) {
		struct conn_arg con[4] = { 0 };
		pthread_t at[2];
		int err;

		atomic_store(&f_accepted_n, 0);
		f_l = sw_listen(&sw, &b_sin);
		CHECK(f_l != SP_INVALID_SOCKET);
		for (int i = 0; i < 4; i++)
			pthread_create(&con[i].t, NULL, connect_main, &con[i]);
		for (int i = 0; i < 2; i++)
			pthread_create(&at[i], NULL, f_accept_main, NULL);
		usleep((useconds_t)(rand() % 20000));
		tcase_stage = "closing the listener while accepts defer";
		CHECK(sw.p.close_socket(f_l, &err) == 0);
		tcase_stage = "joining the accepts";
		for (int i = 0; i < 2; i++)
			pthread_join(at[i], NULL);
		tcase_stage = "joining the connects";
		for (int i = 0; i < 4; i++) {
			pthread_join(con[i].t, NULL);
			if (con[i].c != SP_INVALID_SOCKET)
				sw.p.close_socket(con[i].c, &err);
		}
		for (int i = 0; i < atomic_load(&f_accepted_n) && i < 64; i++)
			sw.p.close_socket(f_acc[i], &err);
	}
	CHECK(sw_open_handles() == 0);
	printf("ok\n");
}

/* G. Two sockets, GetOverlappedResult(wait) from each one's up-call on the other ---- */

static struct sw_ov g_x, g_y, g_z;
static sp_socket g_s1, g_s2;
static atomic_int g_step;

static void g_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n, fl;
	int err;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov == &g_x.ov) {
		/* progress thread, delivering s1: wait on s2's receive z */
		atomic_store(&g_step, 1);
		tcase_stage = "progress thread: GetOverlappedResult(wait) on s2's receive";
		sw.p.get_overlapped_result(g_s2, &g_z.ov, &n, 1, &fl, &err);
	}
}

static void case_gor_cycle(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	sp_socket c1, c2;
	int err = 0;

	sw_pair(&sw, &c1, &g_s1);
	sw_pair(&sw, &c2, &g_s2);
	CHECK(g_s1 != SP_INVALID_SOCKET && g_s2 != SP_INVALID_SOCKET);
	void *h1 = sw.register_memory(g_s1, rbuf, 2048, SP_MEM_WRITE, &err);
	void *h2 = sw.register_memory(g_s2, rbuf + 2048, 2048, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c1, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(h1 && h2 && hs);
	CHECK(sw_post_recv(&sw, g_s1, rbuf, 64, h1, &g_x, false) == 0);
	CHECK(sw_post_recv(&sw, g_s1, rbuf + 64, 64, h1, &g_y, false) == 0);
	CHECK(sw_post_recv(&sw, g_s2, rbuf + 2048, 64, h2, &g_z, false) == 0);
	sw_on_complete(g_hook);
	CHECK(sw_send_wait(&sw, c1, sbuf, 8, hs) == 0);
	CHECK(sw_send_wait(&sw, c1, sbuf, 8, hs) == 0);
	while (atomic_load(&g_step) < 1)
		usleep(1000);
	/* The progress thread waits for z; closing s2 here must abort z and free it. */
	tcase_stage = "closesocket(s2) from main";
	CHECK(sw.p.close_socket(g_s2, &err) == 0);
	tcase_stage = "y (s1's second receive) delivered";
	for (int i = 0; i < 500 && ov_status(&g_y.ov) == SP_OV_PENDING; i++)
		usleep(10000);
	CHECK(ov_status(&g_y.ov) == 0);
	sw_on_complete(NULL);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

/* H. A full receive queue: the up-call reposts its receive (the switch's ring) ------ */

static struct sw_ov h_r[4], h_new;
static sp_socket h_a;
static char *h_buf;
static void *h_h;
static atomic_int h_ret = 99;

static void h_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	(void)s;
	(void)error;
	(void)bytes;
	if (ov != &h_r[0].ov)
		return;
	/* The completed receive's slot is the switch's again: post the next one in it. */
	atomic_store(&h_ret, sw_post_recv(&sw, h_a, h_buf + 1024, 64, h_h, &h_new, false));
}

static void case_repost_in_upcall_full_queue(void)
{
	char *rbuf = aligned_alloc(4096, 4096), *sbuf = aligned_alloc(4096, 4096);
	sp_socket c;
	int err = 0;

	sw_unload(&sw);
	setenv("SANPROV_SPI_QUEUE_DEPTH", "4", 1);
	CHECK(sw_load(&sw) == 0);
	sw_pair(&sw, &c, &h_a);
	CHECK(c != SP_INVALID_SOCKET && h_a != SP_INVALID_SOCKET);
	h_buf = rbuf;
	h_h = sw.register_memory(h_a, rbuf, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(h_h && hs);
	for (int i = 0; i < 4; i++)
		CHECK(sw_post_recv(&sw, h_a, rbuf + 64 * i, 64, h_h, &h_r[i], false) == 0);
	sw_on_complete(h_hook);
	CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
	for (int i = 0; i < 500 && atomic_load(&h_ret) == 99; i++)
		usleep(10000);
	printf("# receive posted from the up-call of a completed one (queue of 4 full): %d\n",
	       atomic_load(&h_ret));
	sw_on_complete(NULL);
	CHECK(atomic_load(&h_ret) == 0);
	sw.p.close_socket(h_a, &err);
	sw.p.close_socket(c, &err);
	free(rbuf);
	free(sbuf);
	printf("ok\n");
}

static const struct tcase cases[] = {
	{ "A gor_same_socket_vs_close", case_gor_same_socket_vs_close, false },
	{ "B cleanup_in_condition", case_cleanup_in_condition, true },
	{ "C nested_accept_then_close", case_nested_accept_then_close, false },
	{ "D order_mixed", case_order_mixed, false },
	{ "E close_racing_delivery", case_close_racing_delivery, false },
	{ "F accept_defer_close", case_accept_defer_close, false },
	{ "G gor_cycle", case_gor_cycle, false },
	{ "H repost_in_upcall_full_queue", case_repost_in_upcall_full_queue, false },
};

int main(int argc, char **argv)
{
	const char *secs = getenv("SPI_DELIVERY_WATCHDOG");

	setenv("SANPROV_SPI_CONNECT_TIMEOUT_MS", "2000", 0);
	return tcase_main(&sw, cases, sizeof(cases) / sizeof(cases[0]), argc > 1 ? argv[1] : NULL,
			  secs ? (unsigned int)atoi(secs) : 60);
}
