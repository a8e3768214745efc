/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The SPI re-entered: what a switch may do from inside the provider's
 * calls (its up-calls and condition function) and from other threads at
 * the same time.  GetOverlappedResult(wait) and closesocket from a
 * completion up-call, a close under a lock an up-call wants, a close from
 * an up-call after the QP completed more, two accepts that both defer,
 * closing the listener from the condition function, nested closes while a
 * close delivers, cleanup from an up-call, a cleanup racing another
 * user's startup.  Each case runs in a child process of its own under a
 * watchdog (a hang fails it); TAP.  Each one hung, crashed or lost
 * completions on the provider they were found on.
 */
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
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

/* The buffers a case registers: one process a case, so static ones leak nothing. */
static alignas(4096) char case_buf[2][4096];

/* 1. WSPGetOverlappedResult(wait=TRUE) from a completion up-call --------------- */

static sp_socket g_a;
static struct sw_ov g_r[8];
static atomic_int g_gor_ret = -1, g_gor_err = -1;

static void gor_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	uint32_t n = 0, flags = 0;
	int err = 0, r;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov != &g_r[0].ov)
		return;
	tcase_stage = "GetOverlappedResult(wait=TRUE) inside the up-call";
	r = sw.p.get_overlapped_result(g_a, &g_r[1].ov, &n, 1, &flags, &err);
	atomic_store(&g_gor_ret, r);
	atomic_store(&g_gor_err, err);
}

static void case_gor_wait_in_upcall(bool polled)
{
	sp_socket c, a;
	char *rbuf = case_buf[0], *sbuf = case_buf[1];
	int err = 0;

	sw_pair(&sw, &c, &a);
	CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	g_a = a;
	void *hr = sw.register_memory(a, rbuf, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(hr && hs);
	CHECK(sw_post_recv(&sw, a, rbuf, 64, hr, &g_r[0], false) == 0);
	CHECK(sw_post_recv(&sw, a, rbuf + 64, 64, hr, &g_r[1], polled) == 0);
	sw_on_complete(gor_hook);
	tcase_stage = "first send";
	CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
	usleep(100000);
	tcase_stage = "second send (completes the receive the up-call waits for)";
	struct sw_ov so;
	struct sp_wsabufex b = { 9, sbuf, hs };
	sw_ov_init(&so, true);
	CHECK(sw.p.send(c, &b, 1, NULL, 0, &so.ov, NULL, NULL, &err) && err == SP_WSA_IO_PENDING);
	/* The watchdog reports a hang: the second receive completed in the QP long ago. */
	tcase_stage = "the up-call's GetOverlappedResult(wait=TRUE) on the second receive, sent";
	while (atomic_load(&g_gor_ret) == -1)
		usleep(10000);
	CHECK(atomic_load(&g_gor_ret) == 0);
	/* The send's overlapped structure is on this stack: its completion first. */
	uint32_t sent;
	CHECK(sw_ov_wait(&sw, c, &so, &sent, 10000) == 0);
	sw_ov_fini(&so);
	sw_on_complete(NULL);
	printf("ok\n");
}

/* 2. closesocket of an unrelated socket while an up-call waits for the closer -- */

static pthread_mutex_t app_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int hook_entered;

static void lock_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	(void)s;
	(void)ov;
	(void)error;
	(void)bytes;
	atomic_store(&hook_entered, 1);
	/* A switch's own per-process lock, taken in WPUCompleteOverlappedRequest. */
	pthread_mutex_lock(&app_lock);
	pthread_mutex_unlock(&app_lock);
}

static void case_close_unrelated_under_app_lock(void)
{
	sp_socket c, a;
	char *rbuf = case_buf[0], *sbuf = case_buf[1];
	struct sw_ov r;
	int err = 0;

	sw_pair(&sw, &c, &a);
	CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	sp_socket x = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	CHECK(x != SP_INVALID_SOCKET);
	void *hr = sw.register_memory(a, rbuf, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(hr && hs);
	CHECK(sw_post_recv(&sw, a, rbuf, 64, hr, &r, false) == 0);
	sw_on_complete(lock_hook);
	pthread_mutex_lock(&app_lock);
	CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
	while (!atomic_load(&hook_entered))
		usleep(1000);
	tcase_stage = "closesocket(unrelated, never connected socket) with the app lock held";
	CHECK(sw.p.close_socket(x, &err) == 0);
	pthread_mutex_unlock(&app_lock);
	/* The receive's overlapped structure is on this stack: its up-call ends first. */
	uint32_t got;
	CHECK(sw_ov_wait(&sw, a, &r, &got, 10000) == 0);
	sw_ov_fini(&r);
	sw_on_complete(NULL);
	printf("ok\n");
}

/* 3. closesocket from an up-call reports completed receives as aborted -------- */

#define NR 5
static struct sw_ov c3_r[NR];
static uint32_t c3_err[NR], c3_bytes[NR];
static atomic_int c3_done;
static atomic_int c3_close_ret = -1;

static void close_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	int err;

	for (int i = 0; i < NR; i++) {
		if (ov != &c3_r[i].ov)
			continue;
		c3_err[i] = error;
		c3_bytes[i] = bytes;
		if (getenv("REVIEW_DEBUG"))
			printf("# up-call %d: error %u bytes %u thread %lx\n", i, error, bytes,
			       (unsigned long)pthread_self());
		atomic_fetch_add(&c3_done, 1);
		if (i == 0) {
			atomic_store(&hook_entered, 1);
			/* Let the peer's other messages land before the close. */
			usleep(300000);
			atomic_store(&c3_close_ret, sw.p.close_socket(s, &err));
		}
	}
}

static void case_close_in_upcall_aborts_completed(void)
{
	sp_socket c, a;
	char *rbuf = case_buf[0], *sbuf = case_buf[1];
	int err = 0;

	sw_pair(&sw, &c, &a);
	CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	void *hr = sw.register_memory(a, rbuf, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(hr && hs);
	for (int i = 0; i < NR; i++)
		CHECK(sw_post_recv(&sw, a, rbuf + 64 * i, 64, hr, &c3_r[i], false) == 0);
	sw_on_complete(close_hook);
	CHECK(sw_send_wait(&sw, c, sbuf, 10, hs) == 0);
	while (!atomic_load(&hook_entered))
		usleep(1000);
	/* The up-call of receive 0 runs: the others complete in the QP meanwhile. */
	struct sw_ov so[NR];
	for (int i = 1; i < NR; i++) {
		struct sp_wsabufex b = { 10 + (uint32_t)i, sbuf, hs };
		sw_ov_init(&so[i], true);
		CHECK(sw.p.send(c, &b, 1, NULL, 0, &so[i].ov, NULL, NULL, &err) &&
		      err == SP_WSA_IO_PENDING);
	}
	tcase_stage = "waiting for the up-calls";
	for (int i = 0; i < 500 && atomic_load(&c3_done) < NR; i++)
		usleep(10000);
	sw_on_complete(NULL);
	CHECK(atomic_load(&c3_done) == NR);
	CHECK(atomic_load(&c3_close_ret) == 0);
	for (int i = 1; i < NR; i++) {
		uint32_t n = 0;
		int r = sw_ov_wait(&sw, c, &so[i], &n, 5000);
		printf("# the peer's send %d: error %d, %u bytes\n", i, r, n);
	}
	int bad = 0;
	for (int i = 0; i < NR; i++) {
		printf("# receive %d: error %u, %u bytes (message of %d bytes was received)\n", i,
		       c3_err[i], c3_bytes[i], 10 + i);
		bad += c3_err[i] != 0;
	}
	if (bad) {
		printf("FAIL: %d receives the QP completed before the close reported as errors\n",
		       bad);
		exit(1);
	}
	printf("ok\n");
}

/* 4. two accepts deferring at once: one request is refused, not deferred ------- */

static pthread_barrier_t cond_barrier;
static sp_socket c4_l;
static struct sockaddr_in c4_sin;

static int defer_cond(const struct sockaddr *caller, int len, uintptr_t data)
{
	(void)caller;
	(void)len;
	(void)data;
	pthread_barrier_wait(&cond_barrier);
	return SP_CF_DEFER;
}

static int accept_cond(const struct sockaddr *caller, int len, uintptr_t data)
{
	(void)caller;
	(void)len;
	(void)data;
	return SP_CF_ACCEPT;
}

struct c4_acc {
	pthread_t t;
	sp_socket a;
	int err;
};

static void *c4_accept(void *arg)
{
	struct c4_acc *x = arg;

	x->a = sw.p.accept(c4_l, NULL, NULL, defer_cond, 0, &x->err);
	return NULL;
}

struct c4_conn {
	pthread_t t;
	sp_socket c;
	int err;
};

static void *c4_connect(void *arg)
{
	struct c4_conn *x = arg;

	x->c = sw_connect(&sw, &c4_sin, &x->err);
	return NULL;
}

static void case_two_accepts_defer(void)
{
	struct c4_acc acc[2];
	struct c4_conn con[2];
	int err = 0;

	c4_l = sw_listen(&sw, &c4_sin);
	CHECK(c4_l != SP_INVALID_SOCKET);
	pthread_barrier_init(&cond_barrier, NULL, 2);
	for (int i = 0; i < 2; i++) {
		memset(&con[i], 0, sizeof(con[i]));
		pthread_create(&con[i].t, NULL, c4_connect, &con[i]);
	}
	for (int i = 0; i < 2; i++)
		pthread_create(&acc[i].t, NULL, c4_accept, &acc[i]);
	for (int i = 0; i < 2; i++) {
		pthread_join(acc[i].t, NULL);
		printf("# accept %d with CF_DEFER: %s, error %d\n", i,
		       acc[i].a == SP_INVALID_SOCKET ? "failed" : "socket", acc[i].err);
		CHECK(acc[i].a == SP_INVALID_SOCKET && acc[i].err == SP_WSATRY_AGAIN);
	}
	/* Both were deferred (WSATRY_AGAIN): both must be offered again. */
	tcase_stage = "accepting the two deferred requests";
	sp_socket a1 = sw.p.accept(c4_l, NULL, NULL, accept_cond, 0, &err);
	sp_socket a2 = sw.p.accept(c4_l, NULL, NULL, accept_cond, 0, &err);
	CHECK(a1 != SP_INVALID_SOCKET && a2 != SP_INVALID_SOCKET);
	for (int i = 0; i < 2; i++)
		pthread_join(con[i].t, NULL);
	for (int i = 0; i < 2; i++)
		printf("# connect %d: %s, error %d\n", i,
		       con[i].c == SP_INVALID_SOCKET ? "failed" : "connected", con[i].err);
	int refused = (con[0].c == SP_INVALID_SOCKET) + (con[1].c == SP_INVALID_SOCKET);
	if (refused) {
		printf(
		    "FAIL: %d of 2 deferred requests were refused (WSATRY_AGAIN said deferred)\n",
		    refused);
		exit(1);
	}
	printf("ok\n");
}

/* 5. closesocket(listener) from the condition function -------------------------- */

static int close_cond(const struct sockaddr *caller, int len, uintptr_t data)
{
	int err;

	(void)caller;
	(void)len;
	tcase_stage = "closesocket(listener) inside the condition function";
	sw.p.close_socket((sp_socket)data, &err);
	tcase_stage = "condition function returned";
	return SP_CF_REJECT;
}

static void case_close_listener_in_cond(void)
{
	struct c4_conn con = { 0 };
	int err = 0;

	c4_l = sw_listen(&sw, &c4_sin);
	CHECK(c4_l != SP_INVALID_SOCKET);
	pthread_create(&con.t, NULL, c4_connect, &con);
	sp_socket a = sw.p.accept(c4_l, NULL, NULL, close_cond, (uintptr_t)c4_l, &err);
	printf("# accept: %s, error %d\n", a == SP_INVALID_SOCKET ? "failed" : "socket", err);
	pthread_join(con.t, NULL);
	printf("ok\n");
}

/* 6. WSPCleanup from a completion up-call ---------------------------------------- */

static atomic_int c6_done;

static void cleanup_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	int err = 0, r;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov != &g_r[0].ov || atomic_exchange(&c6_done, 1))
		return;
	tcase_stage = "WSPCleanup inside the up-call";
	r = sw.p.cleanup(&err);
	printf("# cleanup in the up-call: %d, error %d\n", r, err);
	tcase_stage = "after WSPCleanup in the up-call";
	atomic_store(&c6_done, 2);
}

static void case_cleanup_in_upcall(void)
{
	sp_socket c, a;
	char *rbuf = case_buf[0], *sbuf = case_buf[1];
	int err = 0;

	sw_pair(&sw, &c, &a);
	CHECK(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	void *hr = sw.register_memory(a, rbuf, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, sbuf, 4096, SP_MEM_READ, &err);
	CHECK(hr && hs);
	for (int i = 0; i < 4; i++)
		CHECK(sw_post_recv(&sw, a, rbuf + 64 * i, 64, hr, &g_r[i], false) == 0);
	sw_on_complete(cleanup_hook);
	for (int i = 0; i < 4; i++)
		CHECK(sw_send_wait(&sw, c, sbuf, 8, hs) == 0);
	for (int i = 0; i < 500 && atomic_load(&c6_done) != 2; i++)
		usleep(10000);
	CHECK(atomic_load(&c6_done) == 2);
	sw.p.cleanup = NULL; /* done already */
	usleep(300000);
	if (getenv("REVIEW_NO_RESTART")) {
		printf("ok (no restart)\n");
		return;
	}
	/* A new startup must work after that cleanup. */
	tcase_stage = "startup again after the cleanup in the up-call";
	struct sw sw2;
	CHECK(sw_load(&sw2) == 0);
	sp_socket c2, a2;
	sw_pair(&sw2, &c2, &a2);
	CHECK(c2 != SP_INVALID_SOCKET && a2 != SP_INVALID_SOCKET);
	sw_unload(&sw2);
	printf("ok\n");
}

/* 7. a close from an up-call of another close's flushed completion ------------- */

static struct sw_ov c7_x, c7_a, c7_b, c7_c;
static sp_socket c7_s3;
static atomic_int c7_closed3;

static void nested_hook(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes)
{
	int err;

	(void)s;
	(void)error;
	(void)bytes;
	if (ov == &c7_b.ov && !atomic_exchange(&c7_closed3, 1))
		sw.p.close_socket(c7_s3, &err);
}

static void case_nested_flush(int rounds)
{
	char *rbuf = case_buf[0], *sbuf = case_buf[1];
	int err = 0, queued_rounds = 0;

	for (int r = 0; r < rounds; r++) {
		sp_socket c2, a2, c3, a3;
		struct sw_ov sx, sa, sb, sc;

		sw_pair(&sw, &c2, &a2);
		sw_pair(&sw, &c3, &a3);
		CHECK(c2 != SP_INVALID_SOCKET && a2 != SP_INVALID_SOCKET);
		CHECK(c3 != SP_INVALID_SOCKET && a3 != SP_INVALID_SOCKET);
		c7_s3 = a3;
		atomic_store(&c7_closed3, 0);
		void *h2 = sw.register_memory(a2, rbuf, 4096, SP_MEM_WRITE, &err);
		void *h3 = sw.register_memory(a3, rbuf, 4096, SP_MEM_WRITE, &err);
		void *hs2 = sw.register_memory(c2, sbuf, 4096, SP_MEM_READ, &err);
		void *hs3 = sw.register_memory(c3, sbuf, 4096, SP_MEM_READ, &err);
		CHECK(h2 && h3 && hs2 && hs3);
		CHECK(sw_post_recv(&sw, a2, rbuf, 64, h2, &c7_x, false) == 0);
		CHECK(sw_post_recv(&sw, a2, rbuf + 64, 64, h2, &c7_b, false) == 0);
		CHECK(sw_post_recv(&sw, a2, rbuf + 128, 64, h2, &c7_c, false) == 0);
		CHECK(sw_post_recv(&sw, a3, rbuf + 192, 64, h3, &c7_a, false) == 0);
		sw_on_complete(nested_hook);
		struct sp_wsabufex b2 = { 8, sbuf, hs2 }, b3 = { 8, sbuf, hs3 };
		sw_ov_init(&sx, true);
		sw_ov_init(&sa, true);
		sw_ov_init(&sb, true);
		sw_ov_init(&sc, true);
		sw.p.send(c2, &b2, 1, NULL, 0, &sx.ov, NULL, NULL, &err);
		sw.p.send(c3, &b3, 1, NULL, 0, &sa.ov, NULL, NULL, &err);
		sw.p.send(c2, &b2, 1, NULL, 0, &sb.ov, NULL, NULL, &err);
		sw.p.send(c2, &b2, 1, NULL, 0, &sc.ov, NULL, NULL, &err);
		/* Poll (the receives' completions go to the queue), then close a2 at once. */
		uint32_t n, fl;
		while (sw.p.get_overlapped_result(c2, &sc.ov, &n, 0, &fl, &err) &&
		       err == SP_WSA_IO_INCOMPLETE)
			;
		sw.p.close_socket(a2, &err);
		queued_rounds += atomic_load(&c7_closed3);
		sw_on_complete(NULL);
		sw.p.close_socket(c2, &err);
		sw.p.close_socket(c3, &err);
		if (!atomic_load(&c7_closed3))
			sw.p.close_socket(a3, &err);
		sw_ov_fini(&sx);
		sw_ov_fini(&sa);
		sw_ov_fini(&sb);
		sw_ov_fini(&sc);
		sw_ov_fini(&c7_x);
		sw_ov_fini(&c7_a);
		sw_ov_fini(&c7_b);
		sw_ov_fini(&c7_c);
	}
	printf("# %d of %d rounds closed the second socket from the first's close\n", queued_rounds,
	       rounds);
	printf("ok\n");
}

/* 8. the last cleanup of one user closes the sockets of a user started meanwhile */

static atomic_int c8_go;
static sp_socket c8_b = SP_INVALID_SOCKET;
static struct sw c8_sw;

static void *c8_user_b(void *arg)
{
	int err = 0;

	(void)arg;
	while (!atomic_load(&c8_go))
		;
	/* Startup while the other user's cleanup runs: the provider stays up for us. */
	CHECK(sw_load(&c8_sw) == 0);
	c8_b = c8_sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	return NULL;
}

static void case_cleanup_vs_startup(void)
{
	sp_socket c, a;
	pthread_t t;
	int err = 0;

	for (int i = 0; i < 24; i++)
		sw_pair(&sw, &c, &a);
	pthread_create(&t, NULL, c8_user_b, NULL);
	atomic_store(&c8_go, 1);
	tcase_stage = "the first user's cleanup";
	CHECK(sw.p.cleanup(&err) == 0);
	sw.p.cleanup = NULL;
	pthread_join(t, NULL);
	CHECK(c8_b != SP_INVALID_SOCKET);
	int32_t v;
	int len = sizeof(v);
	int r = c8_sw.p.get_sock_opt(c8_b, SP_SOL_SOCKET, SP_SO_TYPE, (char *)&v, &len, &err);
	printf("# the second user's socket after the first user's cleanup: %d, error %d\n", r, err);
	if (r) {
		printf("FAIL: the other user's cleanup closed a socket it did not own\n");
		exit(1);
	}
	sw_unload(&c8_sw);
	printf("ok\n");
}

static void case_gor_wait(void)
{
	case_gor_wait_in_upcall(false);
}

static void case_gor_wait_polled(void)
{
	case_gor_wait_in_upcall(true);
}

static void case_nested(void)
{
	case_nested_flush(200);
}

static const struct tcase cases[] = {
	{ "GetOverlappedResult(wait) from an up-call", case_gor_wait, false },
	{ "GetOverlappedResult(wait) on a polled operation from an up-call", case_gor_wait_polled,
	  false },
	{ "closesocket of another socket under a lock an up-call wants",
	  case_close_unrelated_under_app_lock, false },
	{ "closesocket from an up-call delivers what the QP completed",
	  case_close_in_upcall_aborts_completed, false },
	{ "two accepts that both defer: both requests offered again", case_two_accepts_defer,
	  false },
	{ "closesocket of the listener from the condition function", case_close_listener_in_cond,
	  false },
	{ "a close from an up-call of another socket's close", case_nested, false },
	{ "WSPCleanup from an up-call: WSAEINPROGRESS", case_cleanup_in_upcall, true },
	{ "the last cleanup racing another user's startup", case_cleanup_vs_startup, true },
};

int main(void)
{
	return tcase_main(&sw, cases, sizeof(cases) / sizeof(cases[0]), NULL, 30);
}
