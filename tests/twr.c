/* SPDX-License-Identifier: BSD-2-Clause */
#include "twr.h"

int post_rdma(struct vb_qp *qp, enum vb_wr_opcode op, uint64_t wr_id, void *laddr, uint32_t len,
	      uint32_t lkey, uint64_t raddr, uint32_t rkey, unsigned int flags)
{
	struct vb_sge sge = { .addr = (uintptr_t)laddr, .length = len, .lkey = lkey };
	struct vb_send_wr wr = { .wr_id = wr_id,
				 .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = op,
				 .send_flags = flags,
				 .remote_addr = raddr,
				 .rkey = rkey };
	struct vb_send_wr *bad = NULL;

	return vb_post_send(qp, &wr, &bad);
}

int post_recv1(struct vb_qp *qp, uint64_t wr_id, void *addr, uint32_t len, uint32_t lkey)
{
	struct vb_sge sge = { .addr = (uintptr_t)addr, .length = len, .lkey = lkey };
	struct vb_recv_wr wr = { .wr_id = wr_id, .sg_list = &sge, .num_sge = 1 };
	struct vb_recv_wr *bad = NULL;

	return vb_post_recv(qp, &wr, &bad);
}
