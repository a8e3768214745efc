/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * WSPSend, WSPRecv and WSPGetOverlappedResult.  The switch sends and
 * receives whole messages from registered buffers (its control rings):
 * a send is one SEND work request, a receive one posted receive.
 */
#include <errno.h>
#include <sched.h>

#include "sp_internal.h"
#include "sp_os.h"

static int post(enum sp_op_kind kind, sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs,
		uint32_t *bytes, uint32_t flags, struct sp_overlapped *ov, sp_completion_fn cr,
		int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct vb_sge sge[SP_OP_MAX_SGE];
	struct sp_op *op;
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	ret = !ov ? SP_WSAEINVAL : cr ? SP_WSAEOPNOTSUPP : flags ? SP_WSAEOPNOTSUPP : 0;
	if (ret) {
		sp_sock_put(so);
		return sp_fail(err, ret);
	}
	ret = sp_op_begin(so, kind, ov, cr, bufs, nbufs, sge, &op);
	if (!ret && kind == SP_OP_SEND) {
		struct vb_send_wr wr = { .wr_id = op->handle,
					 .sg_list = sge,
					 .num_sge = (int)nbufs,
					 .opcode = VB_WR_SEND,
					 .send_flags = VB_SEND_SIGNALED },
				  *bad;
		ret = vb_post_send(so->qp, &wr, &bad);
		ret = ret ? sp_wsa_error(ret) : 0;
	} else if (!ret) {
		struct vb_recv_wr wr = { .wr_id = op->handle,
					 .sg_list = sge,
					 .num_sge = (int)nbufs },
				  *bad;
		ret = vb_post_recv(so->qp, &wr, &bad);
		ret = ret ? sp_wsa_error(ret) : 0;
	}
	return sp_op_end(so, op, ret, bytes, err);
}

int sp_send(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes, uint32_t flags,
	    struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err)
{
	(void)tid;
	return post(SP_OP_SEND, s, bufs, nbufs, bytes, flags, ov, cr, err);
}

int sp_recv(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes, uint32_t *flags,
	    struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err)
{
	(void)tid;
	/* No receive flags (MSG_PEEK, MSG_OOB) on a SAN socket: they come back as 0. */
	if (flags && *flags)
		return sp_fail(err, SP_WSAEOPNOTSUPP);
	return post(SP_OP_RECV, s, bufs, nbufs, bytes, 0, ov, cr, err);
}

int sp_get_overlapped_result(sp_socket s, struct sp_overlapped *ov, uint32_t *bytes, int wait,
			     uint32_t *flags, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	uintptr_t st;

	if (!so)
		return SP_SOCKET_ERROR;
	if (!ov || !bytes || !flags) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSAEFAULT);
	}
	st = __atomic_load_n(&ov->internal, __ATOMIC_ACQUIRE);
	if (st == SP_OV_PENDING) {
		sp_progress_poll(so);
		st = __atomic_load_n(&ov->internal, __ATOMIC_ACQUIRE);
	}
	if (st == SP_OV_PENDING && !wait) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSA_IO_INCOMPLETE);
	}
	if (st == SP_OV_PENDING && sp_progress_is_self()) {
		/*
		 * Called from an up-call: nobody else delivers while this thread
		 * is away, so it polls and delivers until the operation is done.
		 */
		for (unsigned int spins = 0;
		     (st = __atomic_load_n(&ov->internal, __ATOMIC_ACQUIRE)) == SP_OV_PENDING;
		     spins++) {
			sp_progress_poll(so);
			/*
			 * Closed meanwhile by another thread, which waits for this
			 * one (its deliverer) to let go: what is left is aborted
			 * here, in the order posted.
			 */
			if (sp_sock_closed(so))
				sp_op_abort_all(so);
			if (spins < 1000)
				sched_yield();
			else
				sp_os_sleep_us(100); /* a long wait must not take a core */
		}
	} else if (st == SP_OV_PENDING) {
		/* A completion due soon is polled for: a wake-up costs more than the wait. */
		uint64_t until = sp_progress_now_ns() + (uint64_t)sp_prov.cfg.poll_us * 1000;

		while ((st = __atomic_load_n(&ov->internal, __ATOMIC_ACQUIRE)) == SP_OV_PENDING &&
		       sp_progress_now_ns() < until) {
			sp_progress_poll(so);
			sched_yield();
		}
	}
	if (st == SP_OV_PENDING && !sp_progress_is_self()) {
		/* ov is an operation of s (the SPI says so): its completion wakes s's waiters. */
		pthread_mutex_lock(&so->lock);
		atomic_fetch_add(&so->waiters, 1);
		while ((st = __atomic_load_n(&ov->internal, __ATOMIC_SEQ_CST)) == SP_OV_PENDING)
			pthread_cond_wait(&so->cond, &so->lock);
		atomic_fetch_sub(&so->waiters, 1);
		pthread_mutex_unlock(&so->lock);
	}
	sp_sock_put(so);
	*bytes = (uint32_t)ov->internal_high;
	*flags = 0;
	return st ? sp_fail(err, (int)st) : 0;
}
