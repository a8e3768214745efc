/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic in one process, in portable C with TAP output: the same program
 * runs on Linux and, cross-built, on Windows under Wine, where Criterion
 * does not exist.  Two QPs connect through a listener; RDMA write and read,
 * send and receive move verified bytes; a bad rkey, a disconnect and the
 * blocking wait behave as on a NIC.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tconn.h"
#include "twr.h"
#include "vb.h"

#define LEN 65536

struct side {
	struct vb_pd *pd;
	struct vb_cq *scq, *rcq;
	struct vb_qp *qp;
	char *buf;
	struct vb_mr *mr;
};

static int side_init(struct vb_device *dev, struct side *s)
{
	struct vb_qp_init_attr attr = { 0 };

	s->pd = vb_alloc_pd(dev);
	s->scq = vb_create_cq(dev, 64);
	s->rcq = vb_create_cq(dev, 64);
	s->buf = calloc(1, LEN);
	if (!s->pd || !s->scq || !s->rcq || !s->buf)
		return -1;
	s->mr = vb_reg_mr(s->pd, s->buf, LEN, VB_ACCESS_ALL);
	if (!s->mr)
		return -1;
	attr.send_cq = s->scq;
	attr.recv_cq = s->rcq;
	attr.cap.max_send_wr = attr.cap.max_recv_wr = 16;
	attr.cap.max_send_sge = attr.cap.max_recv_sge = 2;
	s->qp = vb_create_qp(s->pd, &attr);
	return s->qp ? 0 : -1;
}

static void side_fini(struct side *s)
{
	if (s->qp)
		vb_destroy_qp(s->qp);
	if (s->mr)
		vb_dereg_mr(s->mr);
	if (s->scq)
		vb_destroy_cq(s->scq);
	if (s->rcq)
		vb_destroy_cq(s->rcq);
	if (s->pd)
		vb_dealloc_pd(s->pd);
	free(s->buf);
}

/* One completion (blocking, through the CQ's waitable object): its status, or -1. */
static int wait1(struct vb_cq *cq, struct vb_wc *wc)
{
	int n = 0;

	if (vb_cq_wait(cq, 1, wc, &n, 5000) || n != 1)
		return -1;
	return (int)wc->status;
}

/* Connect a to b through l (b accepts with private data); true when both ends are up. */
static bool pair_connect(struct vb_listener *l, struct side *a, struct side *b)
{
	struct vb_conn_param hello = { .private_data = "hello",
				       .private_data_len = 6,
				       .timeout_ms = 5000 };
	int accepted;

	return !tconnect(l, b->qp, &hello, a->qp, NULL, &accepted) && !accepted;
}

static void fill(char *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((i * 131 + seed) >> 3);
}

int main(void)
{
	struct vb_device *dev;
	struct side a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct vb_listener *l;
	struct vb_wc wc;
	int ret;

	tap_plan(12);
	dev = vb_open_device("softnic", NULL);
	tap_result(dev != NULL, "open softnic");
	if (!dev)
		return tap_exit();
	tap_result(!side_init(dev, &a) && !side_init(dev, &b) && !side_init(dev, &c) &&
		       !side_init(dev, &d),
		   "PDs, CQs, MRs and QPs");

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = vb_create_listener(dev, (struct sockaddr *)&sin, sizeof(sin), 4);
	ret = l && pair_connect(l, &a, &b) && pair_connect(l, &c, &d);
	tap_result(ret && a.qp->peer_private_data_len == 6 &&
		       !memcmp(a.qp->peer_private_data, "hello", 6),
		   "connect and accept through a listener, private data delivered");

	fill(a.buf, LEN, 7);
	ret = post_rdma(a.qp, VB_WR_RDMA_WRITE, 1, a.buf, LEN / 2, a.mr->lkey,
			(uintptr_t)b.buf + 100, b.mr->rkey, VB_SEND_SIGNALED);
	tap_result(!ret && wait1(a.scq, &wc) == VB_WC_SUCCESS &&
		       !memcmp(b.buf + 100, a.buf, LEN / 2) && b.buf[99] == 0,
		   "RDMA write of 32 KiB, every byte");

	memset(a.buf + LEN / 2, 0, LEN / 2);
	ret = post_rdma(a.qp, VB_WR_RDMA_READ, 2, a.buf + LEN / 2, LEN / 2, a.mr->lkey,
			(uintptr_t)b.buf + 100, b.mr->rkey, VB_SEND_SIGNALED);
	tap_result(!ret && wait1(a.scq, &wc) == VB_WC_SUCCESS &&
		       !memcmp(a.buf + LEN / 2, a.buf, LEN / 2),
		   "RDMA read back, every byte");

	fill(a.buf, 1000, 3);
	ret = post_recv1(b.qp, 7, b.buf, 4096, b.mr->lkey);
	ret =
	    ret || post_rdma(a.qp, VB_WR_SEND, 3, a.buf, 1000, a.mr->lkey, 0, 0, VB_SEND_SIGNALED);
	tap_result(!ret && wait1(b.rcq, &wc) == VB_WC_SUCCESS && wc.wr_id == 7 &&
		       wc.byte_len == 1000 && !memcmp(b.buf, a.buf, 1000),
		   "send into a posted receive");
	tap_result(wait1(a.scq, &wc) == VB_WC_SUCCESS && wc.wr_id == 3, "the send's completion");

	/* A send with no receive waits (RNR) until one is posted. */
	ret = post_rdma(a.qp, VB_WR_SEND, 4, a.buf, 10, a.mr->lkey, 0, 0, VB_SEND_SIGNALED);
	int n = 0;
	tap_result(!ret && vb_cq_wait(a.scq, 1, &wc, &n, 200) == ETIMEDOUT,
		   "a send waits for its receive");
	ret = post_recv1(b.qp, 8, b.buf, 4096, b.mr->lkey);
	tap_result(!ret && wait1(a.scq, &wc) == VB_WC_SUCCESS && wait1(b.rcq, &wc) == 0,
		   "and goes once the receive is posted");

	ret = post_rdma(c.qp, VB_WR_RDMA_WRITE, 5, c.buf, 8, c.mr->lkey, (uintptr_t)d.buf, 0xdead,
			VB_SEND_SIGNALED);
	tap_result(!ret && wait1(c.scq, &wc) == VB_WC_REM_ACCESS_ERR,
		   "a bad rkey is refused (a second connection)");

	/* The peer goes: b's posted receive is flushed. */
	ret = post_recv1(b.qp, 9, b.buf, 4096, b.mr->lkey);
	vb_destroy_qp(a.qp);
	a.qp = NULL;
	tap_result(!ret && wait1(b.rcq, &wc) == VB_WC_WR_FLUSH_ERR && wc.wr_id == 9,
		   "the peer's disconnect flushes a posted receive");

	vb_destroy_listener(l);
	side_fini(&a);
	side_fini(&b);
	side_fini(&c);
	side_fini(&d);
	tap_result(vb_close_device(dev) == 0, "everything released, the device closes");
	return tap_exit();
}
