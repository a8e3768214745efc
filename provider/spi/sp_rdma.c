/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * WSPRegisterRdmaMemory, WSPDeregisterRdmaMemory, WSPRdmaWrite, WSPRdmaRead.
 *
 * An RDMA registration is a region of its own, zero-based (the peer
 * addresses it from its offset within the first page, which every NIC
 * keeps: the descriptor carries no address of this process), in the
 * socket's protection domain (only that connection's QP can reach it).  Deregistering it
 * deregisters the region: from then on the peer's rkey fails, whether or not the memory stays
 * cached locally.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_internal.h"
#include "sp_wire.h"

struct sp_rdma_reg {
	uint64_t token;
	struct sp_rdma_reg *next; /* in the socket's list */
	struct sp_sock *sock;
	struct vb_mr *mr;
	uint32_t flags;
};

static unsigned int rdma_access(uint32_t flags)
{
	unsigned int a = 0;

	if (flags & SP_MEM_READ)
		a |= VB_ACCESS_REMOTE_READ;
	if (flags & SP_MEM_WRITE)
		a |= VB_ACCESS_REMOTE_WRITE | VB_ACCESS_LOCAL_WRITE;
	return a;
}

int sp_register_rdma_memory(sp_socket s, void *buf, uint32_t len, uint32_t flags, void *desc,
			    uint32_t *desc_len, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct sp_rdma_reg *r;
	struct sp_rdma_desc d;
	bool probe = false;
	int ret = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	if (!desc_len) {
		ret = SP_WSAEFAULT;
		goto out;
	}
	/* The switch's size probe: too small, here is what it takes. */
	if (!desc || *desc_len < sizeof(d)) {
		*desc_len = sizeof(d);
		probe = true;
		ret = SP_WSAEFAULT;
		goto out;
	}
	ret = sp_mem_check_args(buf, len, flags);
	if (ret)
		goto out;
	r = calloc(1, sizeof(*r));
	if (!r) {
		ret = SP_WSAENOBUFS;
		goto out;
	}
	pthread_mutex_lock(&so->lock);
	if (so->state != SP_SOCK_CONNECTED) {
		ret = SP_WSAENOTCONN;
		goto err_free;
	}
	r->sock = so;
	r->flags = flags;
	r->mr = vb_reg_mr_iova(so->pd, buf, len, (uintptr_t)buf % VB_PAGE_SIZE, rdma_access(flags));
	if (!r->mr) {
		ret = errno == EINVAL ? SP_WSAEFAULT : sp_wsa_error(errno);
		goto err_free;
	}
	if (sp_htab_add(&sp_prov.rdma, r, &r->token)) {
		ret = SP_WSAENOBUFS;
		goto err_dereg;
	}
	r->next = so->rdma;
	so->rdma = r;
	pthread_mutex_unlock(&so->lock);

	sp_desc_fill(&d, flags, r->mr->rkey, len, (uint32_t)r->mr->iova, r->token);
	memcpy(desc, &d, sizeof(d));
	*desc_len = sizeof(d);
	sp_stats_inc(&so->stats, SP_SC_RDMA_REG);
	sp_sock_put(so);
	return 0;

err_dereg:
	vb_dereg_mr(r->mr);
err_free:
	pthread_mutex_unlock(&so->lock);
	free(r);
out:
	sp_stats_inc(&so->stats, probe ? SP_SC_RDMA_PROBE : SP_SC_RDMA_REG_ERR);
	sp_sock_put(so);
	return sp_fail(err, ret);
}

static int rdma_of(void *obj, void *so)
{
	return ((struct sp_rdma_reg *)obj)->sock == so;
}

/* Unlink and deregister r (socket lock held). */
static void rdma_free(struct sp_sock *so, struct sp_rdma_reg *r)
{
	struct sp_rdma_reg **pp;

	for (pp = &so->rdma; *pp != r; pp = &(*pp)->next)
		;
	*pp = r->next;
	sp_htab_remove(&sp_prov.rdma, r->token);
	vb_dereg_mr(r->mr);
	sp_stats_inc(&so->stats, SP_SC_RDMA_FREED);
	free(r);
}

int sp_deregister_rdma_memory(sp_socket s, void *desc, uint32_t desc_len, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct sp_rdma_desc d;
	struct sp_rdma_reg *r;
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	ret = sp_desc_take(desc, desc_len, &d);
	pthread_mutex_lock(&so->lock);
	if (!ret) {
		r = sp_htab_lookup_if(&sp_prov.rdma, d.token, rdma_of, so);
		/* Only this socket's own descriptors, exactly as handed out. */
		if (!r || r->flags != d.flags || r->mr->rkey != d.rkey || r->mr->length != d.len ||
		    r->mr->iova != d.base)
			ret = SP_WSAEINVAL;
		else
			rdma_free(so, r);
	}
	pthread_mutex_unlock(&so->lock);
	sp_stats_inc(&so->stats, ret ? SP_SC_RDMA_DEREG_ERR : SP_SC_RDMA_DEREG);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

void sp_rdma_release_socket(struct sp_sock *so)
{
	pthread_mutex_lock(&so->lock);
	while (so->rdma)
		rdma_free(so, so->rdma);
	pthread_mutex_unlock(&so->lock);
}

static int rdma_xfer(enum sp_op_kind kind, sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs,
		     void *target_desc, uint32_t target_desc_len, uint32_t target_offset,
		     uint32_t *bytes, uint32_t flags, struct sp_overlapped *ov, sp_completion_fn cr,
		     int *err)
{
	bool write = kind == SP_OP_RDMA_WRITE;
	struct sp_sock *so = sp_sock_get(s, err);
	struct vb_sge sge[SP_OP_MAX_SGE];
	struct sp_rdma_desc d;
	struct sp_op *op;
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	/* Always overlapped; the switch never asks for completion routines. */
	ret = !ov ? SP_WSAEINVAL : cr ? SP_WSAEOPNOTSUPP : flags ? SP_WSAEINVAL : 0;
	if (!ret)
		ret = sp_desc_take(target_desc, target_desc_len, &d);
	if (!ret && !(d.flags & (write ? SP_MEM_WRITE : SP_MEM_READ)))
		ret = SP_WSAEINVAL; /* the peer did not register it for this */
	if (ret) {
		sp_sock_put(so);
		return sp_fail(err, ret);
	}
	ret = sp_op_begin(so, kind, ov, cr, bufs, nbufs, sge, &op);
	if (!ret && op->bytes > so->max_rdma)
		ret = SP_WSAEMSGSIZE;
	/* Checked here for a clean error: the NIC would refuse it and break the connection. */
	if (!ret && (target_offset > d.len || op->bytes > d.len - target_offset))
		ret = SP_WSAEINVAL;
	if (!ret) {
		struct vb_send_wr wr = { .wr_id = op->handle,
					 .sg_list = sge,
					 .num_sge = (int)nbufs,
					 .opcode = write ? VB_WR_RDMA_WRITE : VB_WR_RDMA_READ,
					 .send_flags = VB_SEND_SIGNALED,
					 .remote_addr = (uint64_t)d.base + target_offset,
					 .rkey = d.rkey },
				  *bad;
		ret = vb_post_send(so->qp, &wr, &bad);
		ret = ret ? sp_wsa_error(ret) : 0;
	}
	return sp_op_end(so, op, ret, bytes, err);
}

int sp_rdma_write(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
		  uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes, uint32_t flags,
		  struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err)
{
	(void)tid;
	return rdma_xfer(SP_OP_RDMA_WRITE, s, bufs, nbufs, target_desc, target_desc_len,
			 target_offset, bytes, flags, ov, cr, err);
}

int sp_rdma_read(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
		 uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes, uint32_t flags,
		 struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err)
{
	(void)tid;
	return rdma_xfer(SP_OP_RDMA_READ, s, bufs, nbufs, target_desc, target_desc_len,
			 target_offset, bytes, flags, ov, cr, err);
}
