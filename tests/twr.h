/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test helpers: one work request posted, with one scatter-gather entry.
 * Without Criterion, so that the portable TAP programs use them too.
 */
#ifndef SANPROV_TWR_H
#define SANPROV_TWR_H

#include <stdint.h>

#include "vb.h"

/* A send-queue request (write, read, send); the vb_post_send() result. */
int post_rdma(struct vb_qp *qp, enum vb_wr_opcode op, uint64_t wr_id, void *laddr, uint32_t len,
	      uint32_t lkey, uint64_t raddr, uint32_t rkey, unsigned int flags);
/* A receive; the vb_post_recv() result. */
int post_recv1(struct vb_qp *qp, uint64_t wr_id, void *addr, uint32_t len, uint32_t lkey);

#endif
