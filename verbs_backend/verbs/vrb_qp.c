/* SPDX-License-Identifier: BSD-2-Clause */
/* The verbs backend's RC queue pairs: work requests pass through to libibverbs. */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vrb.h"

/* vb_sge is ibv_sge: scatter-gather lists go to the device as they are. */
_Static_assert(sizeof(struct vb_sge) == sizeof(struct ibv_sge), "vb_sge layout");
_Static_assert(offsetof(struct vb_sge, lkey) == offsetof(struct ibv_sge, lkey), "vb_sge layout");
#define SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(SAME(VB_WR_RDMA_READ, IBV_WR_RDMA_READ) && SAME(VB_WR_SEND, IBV_WR_SEND) &&
		   SAME(VB_WR_RDMA_WRITE_WITH_IMM, IBV_WR_RDMA_WRITE_WITH_IMM),
	       "opcodes");
_Static_assert(SAME(VB_SEND_INLINE, IBV_SEND_INLINE) && SAME(VB_SEND_SIGNALED, IBV_SEND_SIGNALED),
	       "send flags");
_Static_assert(SAME(VB_WC_REM_ACCESS_ERR, IBV_WC_REM_ACCESS_ERR) &&
		   SAME(VB_WC_GENERAL_ERR, IBV_WC_GENERAL_ERR) &&
		   SAME(VB_WC_RECV_RDMA_WITH_IMM, IBV_WC_RECV_RDMA_WITH_IMM),
	       "statuses and completion opcodes");
_Static_assert(SAME(VB_QPS_ERR, IBV_QPS_ERR) && SAME(VB_QPS_RTS, IBV_QPS_RTS), "QP states");
_Static_assert(SAME(VB_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_READ) &&
		   SAME(VB_ACCESS_REMOTE_WRITE, IBV_ACCESS_REMOTE_WRITE) &&
		   SAME(VB_ACCESS_LOCAL_WRITE, IBV_ACCESS_LOCAL_WRITE) &&
		   SAME(VB_ACCESS_MW_BIND, IBV_ACCESS_MW_BIND),
	       "access flags");

/* Send queue slots kept for vrb_bind_mw(), beyond what the caller asks for. */
#define VRB_BIND_HEADROOM 16

struct vb_qp *vrb_create_qp(struct vb_pd *vpd, const struct vb_qp_init_attr *attr)
{
	struct vrb_pd *pd = vb_container_of(vpd, struct vrb_pd, vpd);
	struct ibv_qp_init_attr ia = {
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = attr->sq_sig_all,
		/* Room for the unsignaled window binds beside the caller's requests. */
		.cap = { .max_send_wr = attr->cap.max_send_wr + VRB_BIND_HEADROOM,
			 .max_recv_wr = attr->cap.max_recv_wr,
			 .max_send_sge = attr->cap.max_send_sge ? attr->cap.max_send_sge : 1,
			 .max_recv_sge = attr->cap.max_recv_sge ? attr->cap.max_recv_sge : 1,
			 .max_inline_data = attr->cap.max_inline_data },
	};
	struct vrb_qp *qp;
	int ret;

	if (!attr->send_cq || !attr->recv_cq) {
		errno = EINVAL;
		return NULL;
	}
	ia.send_cq = vrb_cq_of(attr->send_cq)->cq;
	ia.recv_cq = vrb_cq_of(attr->recv_cq)->cq;
	qp = calloc(1, sizeof(*qp));
	if (!qp) {
		errno = ENOMEM;
		return NULL;
	}
	qp->qp = ibv_create_qp(pd->pd, &ia);
	if (!qp->qp) {
		ret = errno ? errno : EINVAL;
		free(qp);
		errno = ret;
		return NULL;
	}
	/*
	 * INIT at once, as softnic: receives may be posted before the
	 * connection (RESET refuses them); rdma_cm's INIT -> INIT refines it.
	 */
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_INIT,
				 .port_num = vrb_dev_of(vpd->dev)->port,
				 .pkey_index = 0,
				 .qp_access_flags = IBV_ACCESS_LOCAL_WRITE |
						    IBV_ACCESS_REMOTE_WRITE |
						    IBV_ACCESS_REMOTE_READ };
	if (ibv_modify_qp(qp->qp, &a,
			  IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
		ret = errno ? errno : EINVAL;
		ibv_destroy_qp(qp->qp);
		free(qp);
		errno = ret;
		return NULL;
	}
	qp->vqp.dev = vpd->dev;
	qp->vqp.pd = vpd;
	qp->vqp.send_cq = attr->send_cq;
	qp->vqp.recv_cq = attr->recv_cq;
	qp->vqp.qp_num = qp->qp->qp_num;
	qp->vqp.cap = (struct vb_qp_cap){ .max_send_wr = ia.cap.max_send_wr - VRB_BIND_HEADROOM,
					  .max_recv_wr = ia.cap.max_recv_wr,
					  .max_send_sge = ia.cap.max_send_sge,
					  .max_recv_sge = ia.cap.max_recv_sge,
					  .max_inline_data = ia.cap.max_inline_data };
	atomic_fetch_add(&vrb_dev_of(vpd->dev)->objects, 1);
	return &qp->vqp;
}

int vrb_destroy_qp(struct vb_qp *vqp)
{
	struct vrb_qp *qp = vrb_qp_of(vqp);
	struct vrb_dev *dev = vrb_dev_of(vqp->dev);

	vrb_disconnect(qp);
	if (ibv_destroy_qp(qp->qp))
		return errno ? errno : EBUSY;
	if (qp->id)
		rdma_destroy_id(qp->id);
	if (qp->ech)
		rdma_destroy_event_channel(qp->ech);
	atomic_fetch_sub(&dev->objects, 1);
	free(qp);
	return 0;
}

int vrb_query_qp(struct vb_qp *vqp, enum vb_qp_state *state)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;

	if (ibv_query_qp(vrb_qp_of(vqp)->qp, &a, IBV_QP_STATE, &ia))
		return errno ? errno : EIO;
	*state = (enum vb_qp_state)a.qp_state;
	return 0;
}

#define BATCH 16

/*
 * Work requests go to the device in batches, translated on the stack.  A
 * request the device must refuse stops the chain the way ibv_post_send
 * does: those before it are posted, *bad_wr names it.
 */
int vrb_post_send(struct vb_qp *vqp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr)
{
	struct ibv_qp *ibqp = vrb_qp_of(vqp)->qp;

	while (wr) {
		struct ibv_send_wr w[BATCH], *bad = NULL;
		struct vb_send_wr *src[BATCH];
		int n = 0, ret, invalid = 0;

		for (; wr && n < BATCH; wr = wr->next, n++) {
			invalid = vb_check_send_wr(vqp, wr);
			if (invalid)
				break;
			src[n] = wr;
			w[n] = (struct ibv_send_wr){
				.wr_id = wr->wr_id,
				.next = NULL,
				.sg_list = (struct ibv_sge *)wr->sg_list,
				.num_sge = wr->num_sge,
				.opcode = (enum ibv_wr_opcode)wr->opcode,
				.send_flags = wr->send_flags,
				.imm_data = htonl(wr->imm_data),
			};
			w[n].wr.rdma.remote_addr = wr->remote_addr;
			w[n].wr.rdma.rkey = wr->rkey;
			if (n)
				w[n - 1].next = &w[n];
		}
		ret = n ? ibv_post_send(ibqp, w, &bad) : 0;
		if (ret) {
			*bad_wr = bad ? src[bad - w] : src[0];
			return ret;
		}
		if (invalid) {
			*bad_wr = wr;
			return invalid;
		}
	}
	return 0;
}

/*
 * A type 2 window is bound once, by a work request on the QP it will serve
 * (a second bind would need a local invalidation first), which the send
 * queue executes before anything posted after it.  Signaled, so that its
 * send queue slot (part of the headroom vrb_create_qp() adds) comes back
 * when its completion is polled, whatever else the QP posts; the
 * completion, success, error or flush, takes an entry of the send CQ's
 * bind room and vrb_poll_cq() swallows it (a failed bind moves the QP to
 * the error state, as any failed request does).
 */
int vrb_bind_mw(struct vb_qp *vqp, struct vb_mw *vmw, struct vb_mr *vmr, void *addr, size_t length,
		unsigned int access)
{
	struct vrb_mw *mw = vb_container_of(vmw, struct vrb_mw, vmw);
	struct vrb_mr *mr = vb_container_of(vmr, struct vrb_mr, vmr);
	uintptr_t a = (uintptr_t)addr, base = (uintptr_t)vmr->addr;
	struct ibv_send_wr wr = { .wr_id = VB_WR_ID_RESERVED,
				  .opcode = IBV_WR_BIND_MW,
				  .send_flags = IBV_SEND_SIGNALED },
			   *bad = NULL;
	struct vrb_cq *scq = vrb_cq_of(vqp->send_cq);
	uint32_t rkey = ibv_inc_rkey(vmw->rkey);
	int ret;

	if (vqp->pd != vmw->pd || vmr->pd != vmw->pd || !length ||
	    access & ~(unsigned int)(VB_ACCESS_REMOTE_READ | VB_ACCESS_REMOTE_WRITE) ||
	    !(vmr->access & VB_ACCESS_MW_BIND) ||
	    (access & VB_ACCESS_REMOTE_WRITE && !(vmr->access & VB_ACCESS_LOCAL_WRITE)) ||
	    a < base || length > vmr->length || a - base > vmr->length - length)
		return EINVAL;
	if (mw->bound)
		return EBUSY;
	/* Its completion's entry, taken before the device may write it. */
	while (atomic_fetch_sub(&scq->bind_room, 1) <= 0) {
		atomic_fetch_add(&scq->bind_room, 1);
		/* The first bind on this CQ makes room; later ones wait for polls. */
		if (vrb_cq_grow_bind_room(scq))
			return ENOMEM;
	}
	wr.bind_mw.mw = mw->mw;
	wr.bind_mw.rkey = rkey;
	/* The window is addressed in the region's iova space; its peer sees it from 0. */
	wr.bind_mw.bind_info = (struct ibv_mw_bind_info){
		.mr = mr->mr,
		.addr = vmr->iova + (a - base),
		.length = length,
		.mw_access_flags = (unsigned int)access | IBV_ACCESS_ZERO_BASED,
	};
	ret = ibv_post_send(vrb_qp_of(vqp)->qp, &wr, &bad);
	if (ret) {
		atomic_fetch_add(&scq->bind_room, 1);
		return ret;
	}
	mw->bound = true;
	vmw->rkey = rkey;
	return 0;
}

int vrb_post_recv(struct vb_qp *vqp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr)
{
	struct ibv_qp *ibqp = vrb_qp_of(vqp)->qp;

	while (wr) {
		struct ibv_recv_wr w[BATCH], *bad = NULL;
		struct vb_recv_wr *src[BATCH];
		int n = 0, ret, invalid = 0;

		for (; wr && n < BATCH; wr = wr->next, n++) {
			invalid = vb_check_recv_wr(vqp, wr);
			if (invalid)
				break;
			src[n] = wr;
			w[n] = (struct ibv_recv_wr){ .wr_id = wr->wr_id,
						     .sg_list = (struct ibv_sge *)wr->sg_list,
						     .num_sge = wr->num_sge };
			if (n)
				w[n - 1].next = &w[n];
		}
		ret = n ? ibv_post_recv(ibqp, w, &bad) : 0;
		if (ret) {
			*bad_wr = bad ? src[bad - w] : src[0];
			return ret;
		}
		if (invalid) {
			*bad_wr = wr;
			return invalid;
		}
	}
	return 0;
}
