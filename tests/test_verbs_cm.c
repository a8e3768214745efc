/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The verbs backend's CM thread with many connections: a connection event
 * finds its QP by the slot its epoll key names, not by a walk of every
 * connected QP.  Runs in the soft-RoCE tier; skips elsewhere.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tpair.h"
#include "verbs/vrb.h"

#define PAIRS 16

static struct vb_qp *qp_new(struct vb_pd *pd, struct vb_cq *cq)
{
	struct vb_qp_init_attr attr = { .send_cq = cq,
					.recv_cq = cq,
					.cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
	struct vb_qp *qp = vb_create_qp(pd, &attr);

	cr_assert_not_null(qp, "create_qp: %s", strerror(errno));
	return qp;
}

/* 32 connected QPs; one peer goes: its disconnect costs one look. */
Test(verbs_cm, a_disconnect_finds_its_qp_without_a_walk, .timeout = 120)
{
	struct vb_qp *a[PAIRS], *b[PAIRS];
	struct vb_listener *l;
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	uint64_t before, looks;
	int acc = -1;

	if (tdev_is_softnic())
		cr_skip_test("looks at the verbs backend's CM thread");
	dev = tdev_open();
	cr_assert_not_null(dev);
	pd = vb_alloc_pd(dev);
	cq = vb_create_cq(dev, 256);
	cr_assert(pd && cq);
	l = tlisten(dev);
	for (int i = 0; i < PAIRS; i++) {
		a[i] = qp_new(pd, cq);
		b[i] = qp_new(pd, cq);
		cr_assert_eq(tconnect(l, a[i], NULL, b[i], NULL, &acc), 0);
		cr_assert_eq(acc, 0);
	}
	before = atomic_load(&vrb_dev_of(dev)->n_cm_looks);
	cr_assert_eq(vb_destroy_qp(a[3]), 0);
	cr_assert_eq(tpair_wait_qp_state(b[3], VB_QPS_ERR, 5000), VB_QPS_ERR);
	looks = atomic_load(&vrb_dev_of(dev)->n_cm_looks) - before;
	cr_assert_leq(looks, 4, "the CM thread looked at %llu QPs for one disconnect",
		      (unsigned long long)looks);
	for (int i = 0; i < PAIRS; i++) {
		if (i != 3)
			cr_assert_eq(vb_destroy_qp(a[i]), 0);
		cr_assert_eq(vb_destroy_qp(b[i]), 0);
	}
	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_destroy_cq(cq), 0);
	cr_assert_eq(vb_dealloc_pd(pd), 0);
	cr_assert_eq(vb_close_device(dev), 0);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * A send that meets no receive waits for the receiver-not-ready timer the
 * peer's QP gives, then retries: after a receive posted 50 ms later it
 * completes within the timer's 0.64 ms and the retry, not the 655 ms the
 * kernel's CM leaves in the QP (each of the switch's sends that beats the
 * peer's repost paid that).
 */
Test(verbs_cm, a_send_waits_a_short_rnr_timer, .timeout = 60)
{
	static char src[64], dst[64];
	struct vb_mr *smr, *dmr;
	struct vb_wc wc;
	struct tpair p;
	uint64_t t0, took;

	if (tdev_is_softnic())
		cr_skip_test("the verbs backend's QP attributes (softnic retries at once)");
	tpair_init(&p, tdev_open(), NULL);
	smr = vb_reg_mr(p.a.pd, src, sizeof(src), VB_ACCESS_LOCAL_WRITE);
	dmr = vb_reg_mr(p.b.pd, dst, sizeof(dst), VB_ACCESS_LOCAL_WRITE);
	cr_assert(smr && dmr);
	memset(src, 'r', sizeof(src));
	/* Three rounds: the first RNR may come before the timer of a fresh QP. */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(
		    post_rdma(p.a.qp, VB_WR_SEND, 7, src, 64, smr->lkey, 0, 0, VB_SEND_SIGNALED),
		    0);
		usleep(50000);
		t0 = now_ms();
		cr_assert_eq(post_recv1(p.b.qp, 9, dst, sizeof(dst), dmr->lkey), 0);
		wc = tpair_wait(p.a.scq);
		took = now_ms() - t0;
		cr_assert_eq(wc.status, VB_WC_SUCCESS);
		wc = tpair_wait(p.b.rcq);
		cr_assert_eq(wc.byte_len, 64);
		/* 655 ms before; the emulated CPU of the VM tier leaves room for a slow retry. */
		cr_assert_lt(took, 300, "round %d: the send completed %llu ms after the receive", i,
			     (unsigned long long)took);
	}
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	tpair_fini(&p);
}
