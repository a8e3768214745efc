/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * RC queue pairs: posting, the requester's execution of each work request
 * (with the responder's checks made on the responder's shared tables), and
 * the error state with its flush.
 *
 * Every check is made before the first byte moves: a work request that
 * fails a key, PD, bounds or rights check moves nothing, completes with the
 * status a NIC reports, and moves its QP (and for responder errors, the
 * peer's QP) to the error state, after which all work completes flushed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snic.h"

/* execute() result that is no completion: the peer has no receive posted. */
#define SNIC_RNR (-1)

static uint32_t sq_reclaimed(struct snic_qp *qp)
{
	return (uint32_t)atomic_load_explicit(
	    &qp->dev->sq_credit[qp->vqp.qp_num & (qp->dev->max_qp - 1)], memory_order_acquire);
}

static struct snic_swqe *swqe_at(struct snic_qp *qp, uint32_t idx)
{
	return (struct snic_swqe *)(qp->sq + (size_t)(idx & qp->sq_mask) * qp->swqe_size);
}

static unsigned char *swqe_inline(struct snic_qp *qp, struct snic_swqe *w)
{
	return (unsigned char *)&w->sge[qp->vqp.cap.max_send_sge];
}

static void set_state(struct snic_qp *qp, enum vb_qp_state st)
{
	qp->state = st;
	atomic_store(&qp->seg->state, (uint32_t)st);
}

struct vb_qp *snic_create_qp(struct vb_pd *vpd, const struct vb_qp_init_attr *attr)
{
	struct snic_dev *dev = snic_dev_of(vpd->dev);
	struct vb_qp_cap cap = attr->cap;
	struct snic_qp *qp;
	uint32_t slot = 0, qpn = 0;
	int ret = EINVAL;

	if (!attr->send_cq || !attr->recv_cq || attr->send_cq->dev != vpd->dev ||
	    attr->recv_cq->dev != vpd->dev)
		goto err;
	if (!cap.max_send_wr || cap.max_send_wr > SNIC_MAX_QP_WR || !cap.max_recv_wr ||
	    cap.max_recv_wr > SNIC_MAX_QP_WR || cap.max_send_sge > SNIC_MAX_SGE ||
	    cap.max_recv_sge > SNIC_MAX_SGE || cap.max_inline_data > SNIC_MAX_INLINE)
		goto err;
	if (!cap.max_send_sge)
		cap.max_send_sge = 1;
	if (!cap.max_recv_sge)
		cap.max_recv_sge = 1;

	qp = calloc(1, sizeof(*qp));
	if (!qp) {
		ret = ENOMEM;
		goto err;
	}
	qp->sock = SNIC_NO_HANDLE;
	qp->peer.pidfd = qp->peer.cq_evfd = qp->peer.doorbell_fd = SNIC_NO_HANDLE;
	qp->peer.dev_shm.fd = qp->peer.qp_shm.fd = qp->peer.cq_shm.fd = SNIC_NO_HANDLE;
	qp->sq_size = snic_pow2(cap.max_send_wr);
	qp->sq_mask = qp->sq_size - 1;
	qp->rq_size = snic_pow2(cap.max_recv_wr);
	qp->rq_mask = qp->rq_size - 1;
	cap.max_send_wr = qp->sq_size;
	cap.max_recv_wr = qp->rq_size;
	qp->swqe_size = (sizeof(struct snic_swqe) + cap.max_send_sge * sizeof(struct vb_sge) +
			 cap.max_inline_data + 7) &
			~(size_t)7;
	qp->rwqe_size = snic_rwqe_size(cap.max_recv_sge);
	qp->sq = calloc(qp->sq_size, qp->swqe_size);
	qp->rpriv = calloc(qp->rq_size, sizeof(*qp->rpriv));
	if (!qp->sq || !qp->rpriv) {
		ret = ENOMEM;
		goto err_sq;
	}
	ret = pthread_mutex_init(&qp->lock, NULL);
	if (ret)
		goto err_sq;
	ret = snic_os_shm_create(&qp->shm, "sanprov-qp",
				 snic_qp_seg_size(qp->rq_size, cap.max_recv_sge), false);
	if (ret)
		goto err_lock;
	qp->seg = qp->shm.addr;
	ret = snic_os_shared_lock_init(&qp->seg->rq_lock);
	if (ret)
		goto err_shm;

	/* Set before the QP is in the device's list, where others look at it. */
	qp->dev = dev;
	pthread_mutex_lock(&dev->lock);
	if (dev->n_qp >= dev->max_qp) {
		pthread_mutex_unlock(&dev->lock);
		ret = ENOMEM;
		goto err_shm;
	}
	/* QP numbers are 24 bits, unique in the device and not reused soon. */
	for (;;) {
		qpn = dev->next_qpn++ & 0xffffff;
		slot = qpn & (dev->max_qp - 1);
		if (qpn && !dev->qp_table[slot])
			break;
	}
	dev->qp_table[slot] = qp;
	atomic_store(&dev->sq_credit[slot], (uint64_t)qpn << 32);
	qp->next = dev->qp_list;
	if (qp->next)
		qp->next->prev = qp;
	dev->qp_list = qp;
	dev->n_qp++;
	pthread_mutex_unlock(&dev->lock);

	atomic_fetch_add(&snic_pd_of(vpd)->refs, 1);
	atomic_fetch_add(&snic_cq_of(attr->send_cq)->refs, 1);
	atomic_fetch_add(&snic_cq_of(attr->recv_cq)->refs, 1);
	qp->sq_sig_all = attr->sq_sig_all != 0;
	qp->seg->magic = SNIC_QP_MAGIC;
	qp->seg->qpn = qpn;
	qp->seg->pd = vpd->handle;
	qp->seg->rq_size = qp->rq_size;
	qp->seg->rq_max_sge = cap.max_recv_sge;
	qp->vqp.dev = vpd->dev;
	qp->vqp.pd = vpd;
	qp->vqp.send_cq = attr->send_cq;
	qp->vqp.recv_cq = attr->recv_cq;
	qp->vqp.cap = cap;
	qp->vqp.qp_num = qpn;
	set_state(qp, VB_QPS_INIT);
	return &qp->vqp;

err_shm:
	snic_os_shm_destroy(&qp->shm);
err_lock:
	pthread_mutex_destroy(&qp->lock);
err_sq:
	free(qp->rpriv);
	free(qp->sq);
	free(qp);
err:
	errno = ret;
	return NULL;
}

int snic_destroy_qp(struct vb_qp *vqp)
{
	struct snic_qp *qp = snic_qp_of(vqp);
	struct snic_dev *dev = qp->dev;

	/* Unlinked under the device lock: the progress thread no longer sees it. */
	pthread_mutex_lock(&dev->lock);
	if (qp->prev)
		qp->prev->next = qp->next;
	else
		dev->qp_list = qp->next;
	if (qp->next)
		qp->next->prev = qp->prev;
	dev->qp_table[vqp->qp_num & (dev->max_qp - 1)] = NULL;
	atomic_store(&dev->sq_credit[vqp->qp_num & (dev->max_qp - 1)], 0);
	dev->n_qp--;
	/* Its number may come back: the windows bound to it must not. */
	snic_mw_qp_gone(dev, qp);
	pthread_mutex_unlock(&dev->lock);
	{
		struct snic_cq *rcq = snic_cq_of(vqp->recv_cq);

		pthread_mutex_lock(&rcq->cons_lock);
		/* What the peer reported before the QP went completes, as the NIC wrote it. */
		snic_cq_unpoll(rcq, qp);
		snic_qp_drain(qp);
		pthread_mutex_unlock(&rcq->cons_lock);
	}

	pthread_mutex_lock(&qp->lock);
	set_state(qp, VB_QPS_ERR);
	pthread_mutex_unlock(&qp->lock);
	/* Unlinked, so dereg_mr no longer sees this peer's accesses: wait for them here. */
	snic_qp_wait_peer_holds(qp);
	/* Closing the connection socket tells the peer, as a disconnect. */
	snic_os_close(qp->sock);
	snic_peer_unmap(dev, &qp->peer);
	atomic_fetch_sub(&snic_pd_of(vqp->pd)->refs, 1);
	atomic_fetch_sub(&snic_cq_of(vqp->send_cq)->refs, 1);
	atomic_fetch_sub(&snic_cq_of(vqp->recv_cq)->refs, 1);
	snic_os_shm_destroy(&qp->shm);
	pthread_mutex_destroy(&qp->lock);
	free(qp->rpriv);
	free(qp->sq);
	free(qp);
	return 0;
}

int snic_query_qp(struct vb_qp *vqp, enum vb_qp_state *state)
{
	struct snic_qp *qp = snic_qp_of(vqp);

	pthread_mutex_lock(&qp->lock);
	*state = qp->state;
	pthread_mutex_unlock(&qp->lock);
	return 0;
}

static enum vb_wc_opcode wc_opcode(uint32_t wr_opcode)
{
	switch (wr_opcode) {
	case VB_WR_RDMA_WRITE:
	case VB_WR_RDMA_WRITE_WITH_IMM:
		return VB_WC_RDMA_WRITE;
	case VB_WR_RDMA_READ:
		return VB_WC_RDMA_READ;
	default:
		return VB_WC_SEND;
	}
}

/*
 * Push a completion; a full CQ is an overflow error that also puts the QP
 * in the error state (its later completions would have nowhere to go).
 */
static void complete(struct snic_qp *qp, struct vb_cq *vcq, const struct snic_cqe *c)
{
	struct snic_cq *cq = snic_cq_of(vcq);

	if (snic_cq_push(cq->seg, cq->size, vcq->fd, c, &cq->dead) && qp->state != VB_QPS_ERR)
		set_state(qp, VB_QPS_ERR);
}

static bool report_status_ok(uint32_t st)
{
	return st == VB_WC_SUCCESS || st == VB_WC_LOC_LEN_ERR || st == VB_WC_LOC_PROT_ERR ||
	       st == VB_WC_LOC_QP_OP_ERR;
}

uint32_t snic_qp_drain(struct snic_qp *qp)
{
	struct snic_cq *cq = snic_cq_of(qp->vqp.recv_cq);
	uint32_t t = atomic_load(&qp->seg->inb_tail), n = 0;

	if (qp->inb_head == t)
		return 0;
	if (qp->rq_flushed || atomic_load(&qp->inb_err)) {
		qp->inb_head = t; /* flushed already, or failed: nothing more is believed */
		return 0;
	}
	if (t - qp->inb_head > qp->rq_size)
		goto bad;
	for (; qp->inb_head != t; qp->inb_head++, n++) {
		const volatile struct snic_inb *v =
		    snic_inb_at(qp->seg->rq, qp->rq_size, qp->rwqe_size, qp->inb_head);
		/* Each field read once: the peer may change them while we look. */
		struct snic_inb r = { .idx = v->idx,
				      .status = v->status,
				      .opcode = v->opcode,
				      .byte_len = v->byte_len,
				      .imm_data = v->imm_data,
				      .wc_flags = v->wc_flags };
		uint32_t k = atomic_load(&qp->rq_done);
		const struct snic_rpriv *rp = &qp->rpriv[k & qp->rq_mask];
		bool imm = r.wc_flags & VB_WC_WITH_IMM;

		/* Only the next posted receive, within what it can hold, as a NIC completes. */
		if (r.idx != k || k == atomic_load_explicit(&qp->rq_posted, memory_order_acquire) ||
		    !report_status_ok(r.status) || (r.wc_flags & ~(uint32_t)VB_WC_WITH_IMM))
			goto bad;
		if (r.opcode == VB_WC_RECV_RDMA_WITH_IMM
			? !imm || r.byte_len > SNIC_MAX_MSG_SZ
			: r.opcode != VB_WC_RECV || r.byte_len > rp->len)
			goto bad;
		struct snic_cqe c = { .wr_id = rp->wr_id,
				      .status = r.status,
				      .opcode = r.opcode,
				      .byte_len = r.byte_len,
				      .imm_data = imm ? r.imm_data : 0,
				      .qp_num = qp->vqp.qp_num,
				      .wc_flags = r.wc_flags };
		atomic_store(&qp->rq_done, k + 1);
		atomic_store_explicit(&qp->seg->inb_head, qp->inb_head + 1, memory_order_relaxed);
		/* A full CQ: its overflow stays, and this QP goes to the error state. */
		if (snic_cq_push(cq->seg, cq->size, cq->vcq.fd, &c, &cq->dead) &&
		    !atomic_exchange(&qp->inb_err, true))
			snic_dev_service(qp);
	}
	return n;

bad:
	qp->inb_head = t;
	if (!atomic_exchange(&qp->inb_err, true))
		snic_dev_service(qp);
	return n;
}

static void flush_rq(struct snic_qp *qp)
{
	struct snic_cq *cq = snic_cq_of(qp->vqp.recv_cq);
	struct snic_qp_seg *seg = qp->seg;
	/* A peer that keeps the lock is not consuming honestly: flush without it. */
	bool locked = !snic_os_shared_lock(&seg->rq_lock);
	uint32_t h, t = qp->rq_tail;

	pthread_mutex_lock(&cq->cons_lock);
	/* What the peer consumed and reported completes first, in order; later reports are void. */
	snic_qp_drain(qp);
	qp->rq_flushed = true;
	for (h = atomic_load(&qp->rq_done); h != t; h++) {
		struct snic_cqe c = { .wr_id = qp->rpriv[h & qp->rq_mask].wr_id,
				      .status = VB_WC_WR_FLUSH_ERR,
				      .opcode = VB_WC_RECV,
				      .qp_num = qp->vqp.qp_num };
		complete(qp, qp->vqp.recv_cq, &c);
	}
	atomic_store(&qp->rq_done, t);
	pthread_mutex_unlock(&cq->cons_lock);
	atomic_store(&seg->rq_head, t);
	if (locked)
		pthread_mutex_unlock(&seg->rq_lock);
}

static void flush_sq(struct snic_qp *qp)
{
	for (; qp->sq_head != qp->sq_tail; qp->sq_head++) {
		struct snic_swqe *w = swqe_at(qp, qp->sq_head);
		struct snic_cqe c = { .wr_id = w->wr_id,
				      .status = VB_WC_WR_FLUSH_ERR,
				      .opcode = wc_opcode(w->opcode),
				      .qp_num = qp->vqp.qp_num,
				      .sq_idx = qp->sq_head };
		complete(qp, qp->vqp.send_cq, &c);
	}
}

void snic_qp_set_error(struct snic_qp *qp)
{
	set_state(qp, VB_QPS_ERR);
	atomic_store(&qp->seg->rnr_wait, 0);
	flush_sq(qp);
	flush_rq(qp);
}

/* The responder's side of a failed request: its QP goes to the error state too. */
static void fail_responder(struct snic_peer *peer)
{
	atomic_store(&peer->qp_seg->remote_err, 1);
	snic_qp_ring_peer(vb_container_of(peer, struct snic_qp, peer));
}

struct held {
	const struct snic_mr_entry *e[2 * SNIC_MAX_SGE + 1];
	_Atomic uint32_t *hold[2 * SNIC_MAX_SGE + 1]; /* NULL: a local entry */
	unsigned int n, nremote;
};

static void held_put(struct held *h)
{
	while (h->n) {
		h->n--;
		snic_mr_put(h->e[h->n], h->hold[h->n]);
	}
	h->nremote = 0;
}

static bool peer_ready(struct snic_peer *peer);

/* A peer's region, announced in our QP segment while we use it (snic_mr_get()). */
static const struct snic_mr_entry *take_remote(struct snic_qp *qp, struct held *h, uint32_t key,
					       uint64_t addr, uint64_t len, unsigned int access,
					       bool rdma)
{
	struct snic_peer *peer = &qp->peer;
	const struct snic_mr_entry *e;
	_Atomic uint32_t *hold;

	if (h->nremote == SNIC_MAX_SGE)
		return NULL;
	hold = &qp->seg->held[h->nremote];
	/* An RDMA comes through the peer's QP: the one its windows may be bound to. */
	e = snic_mr_get(peer->dev_seg, peer->max_mr, key, peer->pd, rdma ? peer->qpn : 0, addr, len,
			access, hold);
	/* Announced, then the state: a peer QP that went meanwhile waits for us or we see it. */
	if (e && !peer_ready(peer)) {
		snic_mr_put(e, hold);
		return NULL;
	}
	if (e) {
		h->e[h->n] = e;
		h->hold[h->n++] = hold;
		h->nremote++;
	}
	return e;
}

/* Check the local gather/scatter list; fills sge[] with what the copy uses. */
static enum vb_wc_status take_local(struct snic_qp *qp, struct snic_swqe *w, unsigned int access,
				    struct held *h, struct vb_sge *sge, uint32_t *nsge,
				    uint64_t *total)
{
	*total = 0;
	if (w->flags & VB_SEND_INLINE) {
		sge[0] = (struct vb_sge){ (uintptr_t)swqe_inline(qp, w), w->inline_len, 0 };
		*nsge = 1;
		*total = w->inline_len;
		return VB_WC_SUCCESS;
	}
	*nsge = 0;
	for (uint32_t i = 0; i < w->num_sge; i++) {
		const struct snic_mr_entry *e;

		if (!w->sge[i].length)
			continue;
		e = snic_mr_get(qp->dev->seg, qp->dev->max_mr, w->sge[i].lkey, qp->vqp.pd->handle,
				0, w->sge[i].addr, w->sge[i].length, access, NULL);
		if (!e)
			return VB_WC_LOC_PROT_ERR;
		h->hold[h->n] = NULL;
		h->e[h->n++] = e;
		sge[*nsge] = w->sge[i];
		sge[(*nsge)++].addr = snic_mr_va(e, w->sge[i].addr);
		*total += w->sge[i].length;
	}
	return *total > SNIC_MAX_MSG_SZ ? VB_WC_LOC_LEN_ERR : VB_WC_SUCCESS;
}

static bool peer_ready(struct snic_peer *peer)
{
	uint32_t st;

	if (peer->gone || atomic_load(&peer->broken))
		return false;
	st = atomic_load(&peer->qp_seg->state);
	return st == VB_QPS_RTR || st == VB_QPS_RTS;
}

/*
 * Claim the peer's next receive (rq_lock held on success).  NULL: none
 * posted, or, with peer->broken set, a lock the peer kept.
 */
static struct snic_rwqe *claim_recv(struct snic_qp *qp)
{
	struct snic_peer *peer = &qp->peer;
	struct snic_qp_seg *ps = peer->qp_seg;

	for (int pass = 0; pass < 2; pass++) {
		if (snic_os_shared_lock(&ps->rq_lock)) {
			atomic_store(&peer->broken, true);
			return NULL;
		}
		uint32_t h = atomic_load(&ps->rq_head);
		if (h != atomic_load(&ps->rq_tail)) {
			if (pass)
				atomic_store(&qp->seg->rnr_wait, 0);
			return snic_rwqe_at(ps->rq, peer->rwqe_size, h & (peer->rq_size - 1));
		}
		pthread_mutex_unlock(&ps->rq_lock);
		/*
		 * Say we wait, then look again: a receive posted in between is
		 * seen here, or its poster sees the flag and rings us.
		 */
		if (!pass)
			atomic_store(&qp->seg->rnr_wait, 1);
	}
	return NULL;
}

/*
 * Retire the claimed receive and report it to the responder, which
 * completes it from its own record (snic_qp_drain()).  rq_lock is held:
 * one reporter at a time.
 */
static void consume_recv(struct snic_peer *peer, const struct snic_cqe *c)
{
	struct snic_qp_seg *ps = peer->qp_seg;
	uint32_t h = atomic_load(&ps->rq_head);
	uint32_t t = atomic_load(&ps->inb_tail);
	struct snic_inb *r = snic_inb_at(ps->rq, peer->rq_size, peer->rwqe_size, t);

	*r = (struct snic_inb){ .idx = h,
				.status = c->status,
				.opcode = c->opcode,
				.byte_len = c->byte_len,
				.imm_data = c->imm_data,
				.wc_flags = c->wc_flags };
	atomic_store(&ps->rq_head, h + 1);
	/* Sequentially consistent with the arming poller: one of us sees the other. */
	atomic_store(&ps->inb_tail, t + 1);
	if (atomic_load(&ps->cq_notify) && atomic_exchange(&ps->cq_notify, 0))
		snic_os_event_signal(peer->cq_evfd);
	/*
	 * The owner's pollers look only at the QPs it marked polled: for the
	 * others, its progress thread takes the report in.  Reports that may
	 * not fit in the owner's CQ go there too, so that an overflow takes
	 * its QP down even if nobody polls, as on a NIC.  The ring's counts
	 * are only a hint.
	 */
	if (!atomic_load(&ps->polled) ||
	    atomic_load_explicit(&peer->cq_seg->tail, memory_order_relaxed) -
		    atomic_load_explicit(&peer->cq_seg->head, memory_order_relaxed) + t + 1 -
		    atomic_load_explicit(&ps->inb_head, memory_order_relaxed) >=
		peer->cq_size)
		snic_qp_ring_peer(vb_container_of(peer, struct snic_qp, peer));
}

/* RDMA write (with immediate) and RDMA read. */
static int exec_rdma(struct snic_qp *qp, struct snic_swqe *w, struct held *h, uint32_t *byte_len,
		     uint32_t *vendor_err)
{
	struct snic_peer *peer = &qp->peer;
	bool read = w->opcode == VB_WR_RDMA_READ;
	bool imm = w->opcode == VB_WR_RDMA_WRITE_WITH_IMM;
	struct vb_sge sge[SNIC_MAX_SGE];
	struct snic_rwqe *rw = NULL;
	struct snic_rseg rs;
	uint32_t nsge;
	uint64_t total;
	enum vb_wc_status st;

	st = take_local(qp, w, read ? VB_ACCESS_LOCAL_WRITE : 0, h, sge, &nsge, &total);
	if (st != VB_WC_SUCCESS)
		return st;
	if (imm) {
		rw = claim_recv(qp);
		if (!rw)
			return atomic_load(&peer->broken) ? VB_WC_RETRY_EXC_ERR : SNIC_RNR;
	}
	if (total) {
		const struct snic_mr_entry *re =
		    take_remote(qp, h, w->rkey, w->remote_addr, total,
				read ? VB_ACCESS_REMOTE_READ : VB_ACCESS_REMOTE_WRITE, true);
		if (!re) {
			st = VB_WC_REM_ACCESS_ERR;
			goto out;
		}
		rs = (struct snic_rseg){ .raddr = snic_mr_va(re, w->remote_addr), .len = total };
		snic_xfer_resolve(peer, re, &rs);
		st = snic_xfer(peer, read ? SNIC_XFER_FROM_PEER : SNIC_XFER_TO_PEER, sge, nsge, &rs,
			       1, vendor_err);
	}
	if (st == VB_WC_SUCCESS && imm) {
		struct snic_cqe c = { .wr_id = rw->wr_id,
				      .status = VB_WC_SUCCESS,
				      .opcode = VB_WC_RECV_RDMA_WITH_IMM,
				      .byte_len = (uint32_t)total,
				      .imm_data = w->imm_data,
				      .qp_num = peer->qpn,
				      .wc_flags = VB_WC_WITH_IMM };
		consume_recv(peer, &c);
	}
	*byte_len = (uint32_t)total;
out:
	if (imm)
		pthread_mutex_unlock(&peer->qp_seg->rq_lock);
	if (st == VB_WC_REM_ACCESS_ERR && !*vendor_err)
		fail_responder(peer);
	return st;
}

/* Send (with immediate): scatter into the peer's next receive. */
static int exec_send(struct snic_qp *qp, struct snic_swqe *w, struct held *h, uint32_t *byte_len,
		     uint32_t *vendor_err)
{
	struct snic_peer *peer = &qp->peer;
	struct vb_sge sge[SNIC_MAX_SGE];
	struct snic_rseg rs[SNIC_MAX_SGE];
	struct snic_rwqe *rw;
	struct snic_cqe c = { .opcode = VB_WC_RECV, .qp_num = peer->qpn };
	uint32_t nsge, nrs = 0, nrecv;
	uint64_t total, left, room = 0;
	enum vb_wc_status st;

	st = take_local(qp, w, 0, h, sge, &nsge, &total);
	if (st != VB_WC_SUCCESS)
		return st;
	rw = claim_recv(qp);
	if (!rw)
		return atomic_load(&peer->broken) ? VB_WC_RETRY_EXC_ERR : SNIC_RNR;
	c.wr_id = rw->wr_id;
	nrecv = rw->num_sge;
	if (nrecv > peer->rq_max_sge) {
		/* A receive queue only a broken peer could write. */
		c.status = VB_WC_LOC_QP_OP_ERR;
		st = VB_WC_REM_OP_ERR;
		goto out_consume;
	}
	for (uint32_t i = 0; i < nrecv; i++)
		room += rw->sge[i].length;
	if (room < total) {
		c.status = VB_WC_LOC_LEN_ERR;
		st = VB_WC_REM_INV_REQ_ERR;
		goto out_consume;
	}
	left = total;
	for (uint32_t i = 0; i < nrecv && left; i++) {
		struct vb_sge r = rw->sge[i];
		const struct snic_mr_entry *re;
		uint64_t len;

		if (!r.length)
			continue;
		len = r.length < left ? r.length : left;
		re = take_remote(qp, h, r.lkey, r.addr, r.length, VB_ACCESS_LOCAL_WRITE, false);
		if (!re) {
			c.status = VB_WC_LOC_PROT_ERR;
			st = VB_WC_REM_OP_ERR;
			goto out_consume;
		}
		rs[nrs] = (struct snic_rseg){ .raddr = snic_mr_va(re, r.addr), .len = len };
		snic_xfer_resolve(peer, re, &rs[nrs++]);
		left -= len;
	}
	st = snic_xfer(peer, SNIC_XFER_TO_PEER, sge, nsge, rs, nrs, vendor_err);
	c.status = st == VB_WC_SUCCESS ? VB_WC_SUCCESS : VB_WC_LOC_PROT_ERR;
	c.byte_len = (uint32_t)total;
	if (w->opcode == VB_WR_SEND_WITH_IMM) {
		c.imm_data = w->imm_data;
		c.wc_flags = VB_WC_WITH_IMM;
	}
	*byte_len = (uint32_t)total;
out_consume:
	consume_recv(peer, &c);
	pthread_mutex_unlock(&peer->qp_seg->rq_lock);
	if (c.status != VB_WC_SUCCESS)
		fail_responder(peer);
	return st;
}

static int execute(struct snic_qp *qp, struct snic_swqe *w, uint32_t *byte_len,
		   uint32_t *vendor_err)
{
	struct held h = { .n = 0, .nremote = 0 };
	int st;

	*byte_len = 0;
	*vendor_err = 0;
	/* No responder: as a NIC that exhausted its transport retries. */
	if (!peer_ready(&qp->peer))
		return VB_WC_RETRY_EXC_ERR;
	if (w->opcode == VB_WR_SEND || w->opcode == VB_WR_SEND_WITH_IMM)
		st = exec_send(qp, w, &h, byte_len, vendor_err);
	else
		st = exec_rdma(qp, w, &h, byte_len, vendor_err);
	held_put(&h);
	return st;
}

void snic_qp_progress(struct snic_qp *qp)
{
	if (qp->state == VB_QPS_ERR) {
		flush_sq(qp);
		return;
	}
	while (qp->sq_head != qp->sq_tail) {
		struct snic_swqe *w = swqe_at(qp, qp->sq_head);
		uint32_t byte_len, vendor_err;
		int st = execute(qp, w, &byte_len, &vendor_err);

		if (st == SNIC_RNR)
			return; /* the progress thread resumes when the peer posts */
		if (st != VB_WC_SUCCESS || (w->flags & VB_SEND_SIGNALED) || qp->sq_sig_all) {
			struct snic_cqe c = { .wr_id = w->wr_id,
					      .status = (uint32_t)st,
					      .opcode = wc_opcode(w->opcode),
					      .vendor_err = vendor_err,
					      .byte_len = byte_len,
					      .qp_num = qp->vqp.qp_num,
					      .sq_idx = qp->sq_head };
			complete(qp, qp->vqp.send_cq, &c);
		}
		qp->sq_head++;
		if (st != VB_WC_SUCCESS || qp->state == VB_QPS_ERR) {
			snic_qp_set_error(qp);
			return;
		}
	}
}

int snic_post_send(struct vb_qp *vqp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr)
{
	struct snic_qp *qp = snic_qp_of(vqp);
	int ret = 0;

	pthread_mutex_lock(&qp->lock);
	if (qp->state != VB_QPS_RTS && qp->state != VB_QPS_ERR) {
		ret = EINVAL;
		goto out;
	}
	for (; wr; wr = wr->next) {
		struct snic_swqe *w;

		ret = vb_check_send_wr(vqp, wr);
		if (ret)
			break;
		/* Credit comes from completions a peer could forge: the SQ's own count bounds it.
		 */
		if (qp->sq_tail - sq_reclaimed(qp) >= qp->sq_size ||
		    qp->sq_tail - qp->sq_head >= qp->sq_size) {
			ret = ENOMEM;
			break;
		}
		w = swqe_at(qp, qp->sq_tail);
		w->wr_id = wr->wr_id;
		w->remote_addr = wr->remote_addr;
		w->rkey = wr->rkey;
		w->imm_data = wr->imm_data;
		w->opcode = wr->opcode;
		w->flags = wr->send_flags;
		w->num_sge = (uint32_t)wr->num_sge;
		w->inline_len = 0;
		if (wr->send_flags & VB_SEND_INLINE) {
			/* The data is taken now: the caller may reuse its buffer at once. */
			unsigned char *p = swqe_inline(qp, w);
			for (int i = 0; i < wr->num_sge; i++) {
				memcpy(p + w->inline_len, (void *)(uintptr_t)wr->sg_list[i].addr,
				       wr->sg_list[i].length);
				w->inline_len += wr->sg_list[i].length;
			}
		} else if (wr->num_sge) {
			memcpy(w->sge, wr->sg_list, sizeof(*w->sge) * (size_t)wr->num_sge);
		}
		qp->sq_tail++;
	}
	snic_qp_progress(qp);
out:
	if (ret)
		*bad_wr = wr;
	pthread_mutex_unlock(&qp->lock);
	return ret;
}

int snic_post_recv(struct vb_qp *vqp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr)
{
	struct snic_qp *qp = snic_qp_of(vqp);
	struct snic_qp_seg *seg = qp->seg;
	int ret = 0;

	pthread_mutex_lock(&qp->lock);
	if (qp->state == VB_QPS_RESET) {
		ret = EINVAL;
		goto out;
	}
	for (; wr; wr = wr->next) {
		uint32_t t = qp->rq_tail;
		struct snic_rwqe *rw;

		ret = vb_check_recv_wr(vqp, wr);
		if (ret)
			break;
		if (qp->state == VB_QPS_ERR) {
			struct snic_cqe c = { .wr_id = wr->wr_id,
					      .status = VB_WC_WR_FLUSH_ERR,
					      .opcode = VB_WC_RECV,
					      .qp_num = vqp->qp_num };
			complete(qp, vqp->recv_cq, &c);
			continue;
		}
		/* A slot is free once its receive completed, whatever the peer says. */
		if (t - atomic_load(&qp->rq_done) >= qp->rq_size) {
			ret = ENOMEM;
			break;
		}
		rw = snic_rwqe_at(seg->rq, qp->rwqe_size, t & qp->rq_mask);
		rw->wr_id = wr->wr_id;
		rw->num_sge = (uint32_t)wr->num_sge;
		if (wr->num_sge)
			memcpy(rw->sge, wr->sg_list, sizeof(*rw->sge) * (size_t)wr->num_sge);
		qp->rpriv[t & qp->rq_mask].wr_id = wr->wr_id;
		qp->rpriv[t & qp->rq_mask].len = 0;
		for (int i = 0; i < wr->num_sge; i++)
			qp->rpriv[t & qp->rq_mask].len += wr->sg_list[i].length;
		qp->rq_tail = t + 1;
		atomic_store_explicit(&qp->rq_posted, t + 1, memory_order_release);
		atomic_store(&seg->rq_tail, t + 1);
	}
	/* A peer send waiting for this receive resumes in the peer's progress thread. */
	if (qp->connected && !qp->peer.gone && atomic_load(&qp->peer.qp_seg->rnr_wait))
		snic_qp_ring_peer(qp);
out:
	if (ret)
		*bad_wr = wr;
	pthread_mutex_unlock(&qp->lock);
	return ret;
}
