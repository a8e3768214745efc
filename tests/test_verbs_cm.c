/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The verbs backend's CM thread with many connections: a connection event
 * finds its QP by the slot its epoll key names, not by a walk of every
 * connected QP.  Runs in the soft-RoCE tier; skips elsewhere.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

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
