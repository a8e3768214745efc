/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Memory windows of type 2 through the backend: a window's rkey serves the
 * one QP it is bound to, even when every QP shares the PD, and is never a
 * local key; a region with no remote right is no remote key; a window's
 * accesses in flight end before the window or its QP goes.  The tests
 * marked softnic look at softnic's segments to stage a peer's access in
 * flight; the others hold for every backend.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "softnic/snic.h"
#include "tpair.h"

#define BUF 16384

/* Two connections on one device, every QP in one PD (as the SPI has them). */
struct two {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *a1, *b1, *a2, *b2; /* a connects, b accepts */
};

static struct vb_qp *qp_new(struct two *t)
{
	struct vb_qp_init_attr attr = { .send_cq = t->cq,
					.recv_cq = t->cq,
					.cap = { .max_send_wr = 16, .max_recv_wr = 16 } };
	struct vb_qp *qp = vb_create_qp(t->pd, &attr);

	cr_assert_not_null(qp, "create_qp: %s", strerror(errno));
	return qp;
}

static void connect_pair(struct two *t, struct vb_qp *a, struct vb_qp *b)
{
	struct vb_listener *l = tlisten(t->dev);
	int acc = -1, ret = tconnect(l, b, NULL, a, NULL, &acc);

	cr_assert_eq(ret, 0, "connect: %s", strerror(ret));
	cr_assert_eq(acc, 0, "accept: %s", strerror(acc));
	cr_assert_eq(vb_destroy_listener(l), 0);
}

static void two_open(struct two *t)
{
	memset(t, 0, sizeof(*t));
	t->dev = tdev_open();
	cr_assert_not_null(t->dev);
	t->pd = vb_alloc_pd(t->dev);
	t->cq = vb_create_cq(t->dev, 256);
	cr_assert(t->pd && t->cq);
	t->a1 = qp_new(t);
	t->b1 = qp_new(t);
	t->a2 = qp_new(t);
	t->b2 = qp_new(t);
	connect_pair(t, t->a1, t->b1);
	connect_pair(t, t->a2, t->b2);
}

static struct vb_wc wait_one(struct vb_cq *cq)
{
	struct vb_wc wc;
	int n = 0, ret = vb_cq_wait(cq, 1, &wc, &n, 5000);

	cr_assert_eq(ret, 0, "cq wait: %s", strerror(ret));
	cr_assert_eq(n, 1);
	return wc;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * One buffer of b1's side, a window over its second half bound to b1: a1
 * writes through it, a2 (same PD, same device) is refused, the region's
 * own rkey is no remote key, and the window's key is no local key.
 */
Test(mw, a_window_serves_its_qp_only, .timeout = 60)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF), *src = aligned_alloc(4096, BUF);
	struct vb_mr *dmr, *smr;
	struct vb_mw *mw;
	struct vb_wc wc;

	cr_assert(dst && src);
	memset(dst, 0x11, BUF);
	memset(src, 0x77, BUF);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	smr = vb_reg_mr(t.pd, src, BUF, VB_ACCESS_LOCAL_WRITE);
	cr_assert(dmr && smr, "reg_mr: %s", strerror(errno));
	mw = vb_alloc_mw(t.pd);
	cr_assert_not_null(mw, "alloc_mw: %s", strerror(errno));
	cr_assert_eq(vb_bind_mw(t.b1, mw, dmr, dst + BUF / 2, BUF / 2, VB_ACCESS_REMOTE_WRITE), 0);
	/* Its region is bound: it stays. */
	cr_assert_neq(vb_dereg_mr(dmr), 0, "a region with a window bound was deregistered");

	/* Its own QP's peer, zero-based. */
	cr_assert_eq(
	    post_rdma(t.a1, VB_WR_RDMA_WRITE, 1, src, 64, smr->lkey, 0, mw->rkey, VB_SEND_SIGNALED),
	    0);
	wc = wait_one(t.cq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "own peer: %s", vb_wc_status_str(wc.status));
	cr_assert_eq(dst[BUF / 2], 0x77);
	cr_assert_eq(dst[BUF / 2 - 1], 0x11);

	/* Another connection in the same PD. */
	cr_assert_eq(post_rdma(t.a2, VB_WR_RDMA_WRITE, 2, src, 64, smr->lkey, 64, mw->rkey,
			       VB_SEND_SIGNALED),
		     0);
	do
		wc = wait_one(t.cq);
	while (wc.qp_num != t.a2->qp_num);
	cr_assert_neq(wc.status, VB_WC_SUCCESS, "another connection used the window");
	cr_assert_eq(dst[BUF / 2 + 64], 0x11);

	/* The window's key as a local key, on its own QP. */
	cr_assert_eq(post_rdma(t.b1, VB_WR_RDMA_WRITE, 3, dst + BUF / 2, 64, mw->rkey, 0, mw->rkey,
			       VB_SEND_SIGNALED),
		     0);
	do
		wc = wait_one(t.cq);
	while (wc.qp_num != t.b1->qp_num || wc.wr_id != 3);
	cr_assert_neq(wc.status, VB_WC_SUCCESS, "a window's key served as a local key");

	cr_assert_eq(vb_dealloc_mw(mw), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0, "the region stays bound after its window is freed");
	cr_assert_eq(vb_dereg_mr(smr), 0);
	free(dst);
	free(src);
}

/* A region registered without remote rights, as the SPI's cache has them. */
Test(mw, a_region_without_remote_rights_is_no_remote_key, .timeout = 60)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF), *src = aligned_alloc(4096, BUF);
	struct vb_mr *dmr, *smr;
	struct vb_wc wc;

	cr_assert(dst && src);
	memset(dst, 0x11, BUF);
	memset(src, 0x77, BUF);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	smr = vb_reg_mr(t.pd, src, BUF, VB_ACCESS_LOCAL_WRITE);
	cr_assert(dmr && smr);
	cr_assert_eq(post_rdma(t.a1, VB_WR_RDMA_WRITE, 1, src, 64, smr->lkey, (uintptr_t)dst,
			       dmr->rkey, VB_SEND_SIGNALED),
		     0);
	wc = wait_one(t.cq);
	cr_assert_neq(wc.status, VB_WC_SUCCESS, "a region's rkey without remote rights worked");
	cr_assert_eq(dst[0], 0x11);
	cr_assert_eq(post_rdma(t.a2, VB_WR_RDMA_READ, 2, src, 64, smr->lkey, (uintptr_t)dst,
			       dmr->rkey, VB_SEND_SIGNALED),
		     0);
	do
		wc = wait_one(t.cq);
	while (wc.qp_num != t.a2->qp_num);
	cr_assert_neq(wc.status, VB_WC_SUCCESS, "a region's rkey without remote rights was read");
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	free(dst);
	free(src);
}

struct release {
	_Atomic uint32_t *held;
	unsigned int after_ms;
};

static void *release_main(void *p)
{
	struct release *r = p;

	nanosleep(&(struct timespec){ .tv_sec = r->after_ms / 1000,
				      .tv_nsec = (long)(r->after_ms % 1000) * 1000000 },
		  NULL);
	atomic_store(r->held, 0);
	return NULL;
}

/*
 * softnic: the peer's copy into this process through a window is in
 * flight (announced in the peer's QP segment, as snic_mr_get() does) when
 * the window's QP is destroyed and the window freed, as closing a socket
 * does.  Neither may return while the copy goes on: the buffer is the
 * application's again afterwards.
 */
Test(mw, destroying_the_qp_waits_for_the_peers_accesses, .timeout = 60)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF);
	struct release rel = { .after_ms = 300 };
	struct vb_mr *dmr;
	struct vb_mw *mw;
	pthread_t th;
	uint64_t t0, took;

	if (!tdev_is_softnic())
		cr_skip_test("stages a peer's access in softnic's segments; %s", tdev_backend());
	cr_assert_not_null(dst);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	cr_assert_not_null(dmr);
	mw = vb_alloc_mw(t.pd);
	cr_assert_not_null(mw);
	cr_assert_eq(vb_bind_mw(t.b1, mw, dmr, dst, BUF, VB_ACCESS_REMOTE_WRITE), 0);
	/* a1 is in the middle of a write through the window. */
	rel.held = &snic_qp_of(t.a1)->seg->held[0];
	atomic_store(rel.held, mw->rkey);
	cr_assert_eq(pthread_create(&th, NULL, release_main, &rel), 0);
	t0 = now_ms();
	cr_assert_eq(vb_destroy_qp(t.b1), 0);
	cr_assert_eq(vb_dealloc_mw(mw), 0);
	took = now_ms() - t0;
	pthread_join(th, NULL);
	cr_assert_geq(took, 250,
		      "the QP and its window went after %llu ms, with the peer's copy "
		      "in flight for 300",
		      (unsigned long long)took);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	free(dst);
}

/* softnic: the same for freeing a window whose QP stays (WSPDeregisterRdmaMemory). */
Test(mw, freeing_a_window_waits_for_the_peers_accesses, .timeout = 60)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF);
	struct release rel = { .after_ms = 300 };
	struct vb_mr *dmr;
	struct vb_mw *mw;
	pthread_t th;
	uint64_t t0, took;

	if (!tdev_is_softnic())
		cr_skip_test("stages a peer's access in softnic's segments; %s", tdev_backend());
	cr_assert_not_null(dst);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	cr_assert_not_null(dmr);
	mw = vb_alloc_mw(t.pd);
	cr_assert_not_null(mw);
	cr_assert_eq(vb_bind_mw(t.b1, mw, dmr, dst, BUF, VB_ACCESS_REMOTE_WRITE), 0);
	rel.held = &snic_qp_of(t.a1)->seg->held[0];
	atomic_store(rel.held, mw->rkey);
	cr_assert_eq(pthread_create(&th, NULL, release_main, &rel), 0);
	t0 = now_ms();
	cr_assert_eq(vb_dealloc_mw(mw), 0);
	took = now_ms() - t0;
	pthread_join(th, NULL);
	cr_assert_geq(took, 250, "the window went after %llu ms", (unsigned long long)took);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	free(dst);
}

/*
 * softnic: a window bound to a QP that is destroyed is worth nothing,
 * even to a later QP that gets the same number (softnic's numbers wrap
 * after 2^24 QPs; the test moves the counter there).
 */
Test(mw, a_window_dies_with_its_qp, .timeout = 60)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF), *src = aligned_alloc(4096, BUF);
	struct vb_mr *dmr, *smr;
	struct vb_qp *a3, *b3;
	struct vb_mw *mw;
	struct vb_wc wc;
	uint32_t qpn;

	if (!tdev_is_softnic())
		cr_skip_test("reuses a QP number of softnic's; %s", tdev_backend());
	cr_assert(dst && src);
	memset(dst, 0x11, BUF);
	memset(src, 0x77, BUF);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	smr = vb_reg_mr(t.pd, src, BUF, VB_ACCESS_LOCAL_WRITE);
	cr_assert(dmr && smr);
	mw = vb_alloc_mw(t.pd);
	cr_assert_not_null(mw);
	cr_assert_eq(vb_bind_mw(t.b1, mw, dmr, dst, BUF, VB_ACCESS_REMOTE_WRITE), 0);
	qpn = t.b1->qp_num;
	cr_assert_eq(vb_destroy_qp(t.b1), 0);

	snic_dev_of(t.dev)->next_qpn = qpn;
	b3 = qp_new(&t);
	cr_assert_eq(b3->qp_num, qpn);
	a3 = qp_new(&t);
	connect_pair(&t, a3, b3);
	cr_assert_eq(
	    post_rdma(a3, VB_WR_RDMA_WRITE, 1, src, 64, smr->lkey, 0, mw->rkey, VB_SEND_SIGNALED),
	    0);
	do
		wc = wait_one(t.cq);
	while (wc.qp_num != a3->qp_num);
	cr_assert_neq(wc.status, VB_WC_SUCCESS, "a window of a destroyed QP served its successor");
	cr_assert_eq(dst[0], 0x11);
	cr_assert_eq(vb_dealloc_mw(mw), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	free(dst);
	free(src);
}

/*
 * A window is bound once: a second bind is refused (a verbs type 2 window
 * would need an invalidation first) and the first key keeps serving.
 */
Test(mw, a_window_is_bound_once, .timeout = 60)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF), *src = aligned_alloc(4096, BUF);
	struct vb_mr *dmr, *smr;
	struct vb_mw *mw;
	struct vb_wc wc;
	uint32_t rkey;

	cr_assert(dst && src);
	memset(dst, 0x11, BUF);
	memset(src, 0x77, BUF);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	smr = vb_reg_mr(t.pd, src, BUF, VB_ACCESS_LOCAL_WRITE);
	cr_assert(dmr && smr);
	mw = vb_alloc_mw(t.pd);
	cr_assert_not_null(mw, "alloc_mw: %s", strerror(errno));
	cr_assert_eq(vb_bind_mw(t.b1, mw, dmr, dst, BUF / 2, VB_ACCESS_REMOTE_WRITE), 0);
	rkey = mw->rkey;
	cr_assert_eq(vb_bind_mw(t.b1, mw, dmr, dst + BUF / 2, BUF / 2, VB_ACCESS_REMOTE_WRITE),
		     EBUSY, "a bound window was bound again");
	cr_assert_eq(mw->rkey, rkey);
	cr_assert_eq(
	    post_rdma(t.a1, VB_WR_RDMA_WRITE, 1, src, 64, smr->lkey, 0, rkey, VB_SEND_SIGNALED), 0);
	wc = wait_one(t.cq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
	cr_assert_eq(dst[0], 0x77, "the first binding no longer served");
	cr_assert_eq(dst[BUF / 2], 0x11);
	cr_assert_eq(vb_dealloc_mw(mw), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	free(dst);
	free(src);
}

/*
 * Many binds on one QP with no other traffic: each takes its send queue
 * slot back once the CQ is polled (the verbs backend's binds were
 * unsignaled, so the 17th waited for ever for a signaled completion).
 * Binds' completions, flushed ones included, never reach the caller, and
 * the backend's wr_id is refused to callers.
 */
Test(mw, binds_without_other_traffic_never_run_out, .timeout = 120)
{
	struct two t;
	char *dst = aligned_alloc(4096, BUF);
	struct vb_mw *mw[8] = { 0 }, *flushw[4];
	struct vb_mr *dmr;
	struct vb_wc wc[16];
	int n;

	cr_assert_not_null(dst);
	two_open(&t);
	dmr = vb_reg_mr(t.pd, dst, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_MW_BIND);
	cr_assert_not_null(dmr);
	for (int i = 0; i < 200; i++) {
		struct vb_mw *w = vb_alloc_mw(t.pd);
		uint64_t start = now_ms();
		int ret;

		cr_assert_not_null(w, "alloc_mw %d: %s", i, strerror(errno));
		/* Room comes back as the CQ is polled. */
		while ((ret = vb_bind_mw(t.b1, w, dmr, dst, 64, VB_ACCESS_REMOTE_WRITE)) ==
			   ENOMEM &&
		       now_ms() - start < 2000) {
			cr_assert_eq(vb_poll_cq(t.cq, 16, wc, &n), 0);
			cr_assert_eq(n, 0, "a bind's completion reached the caller");
		}
		cr_assert_eq(ret, 0, "bind %d: %s", i, strerror(ret));
		cr_assert_eq(vb_poll_cq(t.cq, 16, wc, &n), 0);
		cr_assert_eq(n, 0, "a bind's completion reached the caller");
		if (i < 8)
			mw[i] = w;
		else
			cr_assert_eq(vb_dealloc_mw(w), 0);
	}
	cr_assert_eq(post_recv1(t.b1, VB_WR_ID_RESERVED, dst, 64, dmr->lkey), EINVAL);
	/* Binds in flight when the QP fails: flushed, still not the caller's. */
	for (int i = 0; i < 4; i++) {
		struct vb_mw *w = vb_alloc_mw(t.pd);

		cr_assert_not_null(w);
		cr_assert_eq(vb_bind_mw(t.b2, w, dmr, dst, 64, VB_ACCESS_REMOTE_WRITE), 0);
		cr_assert_eq(post_recv1(t.b2, 100 + (uint64_t)i, dst, 64, dmr->lkey), 0);
		flushw[i] = w;
	}
	cr_assert_eq(vb_destroy_qp(t.a2), 0);
	cr_assert_eq(tpair_wait_qp_state(t.b2, VB_QPS_ERR, 5000), VB_QPS_ERR);
	uint64_t start = now_ms();
	int flushed = 0;
	while (flushed < 4 && now_ms() - start < 5000) {
		cr_assert_eq(vb_poll_cq(t.cq, 16, wc, &n), 0);
		for (int i = 0; i < n; i++) {
			cr_assert(wc[i].wr_id >= 100 && wc[i].wr_id < 104,
				  "wr_id %#llx reached the caller",
				  (unsigned long long)wc[i].wr_id);
			flushed++;
		}
	}
	cr_assert_eq(flushed, 4);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(vb_dealloc_mw(mw[i]), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(vb_dealloc_mw(flushw[i]), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	free(dst);
}
