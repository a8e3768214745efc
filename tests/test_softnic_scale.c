/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic with many QPs on one CQ: a poll looks at the QPs that had work
 * lately, not at every QP whose receives complete there (snic_cq.c's
 * polled set; its counters are read from the CQ).  softnic only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "softnic/snic.h"
#include "tpair.h"

#define PAIRS 100

struct many {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *a[PAIRS], *b[PAIRS]; /* a connects, b accepts */
	struct vb_mr *mr;
	uint64_t buf[2 * PAIRS];
};

static struct vb_qp *qp_new(struct many *m)
{
	struct vb_qp_init_attr attr = { .send_cq = m->cq,
					.recv_cq = m->cq,
					.cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
	struct vb_qp *qp = vb_create_qp(m->pd, &attr);

	cr_assert_not_null(qp, "create_qp: %s", strerror(errno));
	return qp;
}

static void many_open(struct many *m)
{
	struct vb_listener *l;
	int acc = -1;

	memset(m, 0, sizeof(*m));
	m->dev = tdev_open();
	cr_assert_not_null(m->dev);
	m->pd = vb_alloc_pd(m->dev);
	m->cq = vb_create_cq(m->dev, 4 * PAIRS);
	cr_assert(m->pd && m->cq);
	m->mr = vb_reg_mr(m->pd, m->buf, sizeof(m->buf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(m->mr);
	l = tlisten(m->dev);
	for (int i = 0; i < PAIRS; i++) {
		m->a[i] = qp_new(m);
		m->b[i] = qp_new(m);
		cr_assert_eq(tconnect(l, m->a[i], NULL, m->b[i], NULL, &acc), 0);
		cr_assert_eq(acc, 0);
		cr_assert_eq(post_recv1(m->b[i], (uint64_t)i, &m->buf[i], 8, m->mr->lkey), 0);
	}
	cr_assert_eq(vb_destroy_listener(l), 0);
}

static void many_close(struct many *m)
{
	for (int i = 0; i < PAIRS; i++) {
		cr_assert_eq(vb_destroy_qp(m->a[i]), 0);
		cr_assert_eq(vb_destroy_qp(m->b[i]), 0);
	}
	cr_assert_eq(vb_dereg_mr(m->mr), 0);
	cr_assert_eq(vb_destroy_cq(m->cq), 0);
	cr_assert_eq(vb_dealloc_pd(m->pd), 0);
	cr_assert_eq(vb_close_device(m->dev), 0);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Poll until want completions came; each must be a success. */
static void poll_for(struct many *m, int want)
{
	uint64_t start = now_ms();
	struct vb_wc wc[8];
	int got = 0, n;

	while (got < want) {
		cr_assert_lt(now_ms() - start, 5000, "%d of %d completions", got, want);
		cr_assert_eq(vb_poll_cq(m->cq, 8, wc, &n), 0);
		for (int i = 0; i < n; i++)
			cr_assert_eq(wc[i].status, VB_WC_SUCCESS, "wr_id %llu: status %d",
				     (unsigned long long)wc[i].wr_id, wc[i].status);
		got += n;
	}
}

static void examined(struct many *m, uint64_t *polls, uint64_t *qps)
{
	struct snic_cq *cq = snic_cq_of(m->cq);

	*polls = atomic_load(&cq->n_polls);
	*qps = atomic_load(&cq->n_examined);
}

/*
 * 200 QPs complete into one CQ.  Idle, a poll looks at none of them;
 * with one message on every connection in turn, at no more than the
 * polled set holds (64 by default); idle again, at none.
 */
Test(scale, a_poll_looks_at_the_qps_with_work_only, .timeout = 120)
{
	uint64_t p0, q0, p1, q1;
	struct many m;

	if (!tdev_is_softnic())
		cr_skip_test("looks at softnic's CQ");
	many_open(&m);

	examined(&m, &p0, &q0);
	for (int i = 0; i < 1000; i++) {
		int n;
		struct vb_wc wc;

		cr_assert_eq(vb_poll_cq(m.cq, 1, &wc, &n), 0);
		cr_assert_eq(n, 0);
	}
	examined(&m, &p1, &q1);
	cr_assert_eq(q1 - q0, 0, "idle: %llu polls looked at %llu QPs",
		     (unsigned long long)(p1 - p0), (unsigned long long)(q1 - q0));

	for (int i = 0; i < PAIRS; i++) {
		m.buf[PAIRS + i] = (uint64_t)i * 7;
		cr_assert_eq(post_rdma(m.a[i], VB_WR_SEND, 1000 + (uint64_t)i, &m.buf[PAIRS + i], 8,
				       m.mr->lkey, 0, 0, VB_SEND_SIGNALED),
			     0);
		poll_for(&m, 2); /* the send and its receive */
		cr_assert_eq(m.buf[i], (uint64_t)i * 7);
	}
	examined(&m, &p0, &q0);
	cr_assert_leq(q0 - q1, 64 * (p0 - p1), "%llu polls looked at %llu QPs",
		      (unsigned long long)(p0 - p1), (unsigned long long)(q0 - q1));

	/* Quiet QPs leave the polled set. */
	usleep(100 * 1000);
	for (int i = 0; i < 2; i++) {
		int n;
		struct vb_wc wc;

		cr_assert_eq(vb_poll_cq(m.cq, 1, &wc, &n), 0);
	}
	examined(&m, &p0, &q0);
	for (int i = 0; i < 1000; i++) {
		int n;
		struct vb_wc wc;

		cr_assert_eq(vb_poll_cq(m.cq, 1, &wc, &n), 0);
		cr_assert_eq(n, 0);
	}
	examined(&m, &p1, &q1);
	cr_assert_eq(q1 - q0, 0, "idle again: %llu polls looked at %llu QPs",
		     (unsigned long long)(p1 - p0), (unsigned long long)(q1 - q0));
	many_close(&m);
}

/*
 * A QP that left the polled set still completes what its peer reports,
 * in order, while the poller sleeps armed: the peer rings, and the
 * progress thread's completion wakes the CQ.
 */
Test(scale, a_report_of_an_unpolled_qp_wakes_an_armed_cq, .timeout = 60)
{
	struct many m;
	struct vb_wc wc;
	int n = 0;

	if (!tdev_is_softnic())
		cr_skip_test("looks at softnic's CQ");
	many_open(&m);
	for (int round = 0; round < 3; round++) {
		int i = round * 17;

		if (round)
			usleep(60 * 1000); /* idle: nothing is polled any more */
		cr_assert_eq(vb_req_notify_cq(m.cq), 0);
		cr_assert_eq(post_rdma(m.a[i], VB_WR_SEND, 1000 + (uint64_t)i, &m.buf[PAIRS + i], 8,
				       m.mr->lkey, 0, 0, 0),
			     0);
		/* The send is unsignaled: the one completion is the receive's. */
		cr_assert_eq(vb_cq_wait(m.cq, 1, &wc, &n, 5000), 0);
		cr_assert_eq(n, 1);
		cr_assert_eq(wc.wr_id, (uint64_t)i);
		cr_assert_eq(wc.status, VB_WC_SUCCESS);
		cr_assert_eq(post_recv1(m.b[i], (uint64_t)i, &m.buf[i], 8, m.mr->lkey), 0);
	}
	many_close(&m);
}

/*
 * A window's key is used through its own QP only: freeing the window
 * waits for that QP's peer alone, not for every connection's (closing a
 * socket frees its windows).
 */
Test(scale, freeing_a_window_looks_at_its_own_qp_only, .timeout = 60)
{
	struct many m;
	struct vb_mr *mr;
	struct vb_mw *mw;
	uint64_t before;

	if (!tdev_is_softnic())
		cr_skip_test("looks at softnic's device");
	many_open(&m);
	mr = vb_reg_mr(m.pd, m.buf, sizeof(m.buf),
		       VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE | VB_ACCESS_MW_BIND);
	cr_assert_not_null(mr);
	mw = vb_alloc_mw(m.pd);
	cr_assert_not_null(mw);
	cr_assert_eq(vb_bind_mw(m.b[7], mw, mr, m.buf, 64, VB_ACCESS_REMOTE_WRITE), 0);
	before = atomic_load(&snic_dev_of(m.dev)->n_hold_looks);
	cr_assert_eq(vb_dealloc_mw(mw), 0);
	cr_assert_leq(
	    atomic_load(&snic_dev_of(m.dev)->n_hold_looks) - before, 1,
	    "%llu QPs looked at for one window",
	    (unsigned long long)(atomic_load(&snic_dev_of(m.dev)->n_hold_looks) - before));
	cr_assert_eq(vb_dereg_mr(mr), 0);
	many_close(&m);
}
