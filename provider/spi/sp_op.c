/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Overlapped operations.  Each one is in the table of operations (its
 * handle is the wr_id of its work request) and in its socket's list.
 * Whoever takes it out of the table, owning the CQ, owns its completion:
 * the thread that polls its work completion, or the closing socket.  A
 * work completion whose wr_id is no longer in the table is left over from a
 * closed socket's QP and finds nothing.
 */
#include <stdlib.h>

#include "sp_internal.h"

/*
 * Take an entry of the shared CQ for one operation: false when every entry
 * is taken by operations in flight.  No lock: the socket's may be held.
 */
static bool cq_credit_take(void)
{
	uint32_t left = atomic_load_explicit(&sp_prov.cq_credits, memory_order_relaxed);

	do {
		if (!left)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(
	    &sp_prov.cq_credits, &left, left - 1, memory_order_relaxed, memory_order_relaxed));
	return true;
}

struct sp_op *sp_op_new(struct sp_sock *so, enum sp_op_kind kind, struct sp_overlapped *ov,
			sp_completion_fn cr, int *err)
{
	struct sp_op *op;

	if (!cq_credit_take()) {
		*err = SP_WSAENOBUFS;
		return NULL;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		atomic_fetch_add_explicit(&sp_prov.cq_credits, 1, memory_order_relaxed);
		*err = SP_WSAENOBUFS;
		return NULL;
	}
	op->sock = so;
	op->kind = kind;
	op->ov = ov;
	op->cr = cr;
	sp_sock_hold(so);
	/* Oldest first: a closing socket aborts them in the order posted. */
	op->prev = so->ops_tail;
	if (so->ops_tail)
		so->ops_tail->next = op;
	else
		so->ops = op;
	so->ops_tail = op;
	if (kind == SP_OP_RECV)
		so->rq_free--;
	else
		so->sq_free--;
	ov->internal_high = 0;
	__atomic_store_n(&ov->internal, SP_OV_PENDING, __ATOMIC_RELEASE);
	return op;
}

static void unlink_op(struct sp_op *op)
{
	struct sp_sock *so = op->sock;

	if (op->prev)
		op->prev->next = op->next;
	else
		so->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	else
		so->ops_tail = op->prev;
	op->next = op->prev = NULL;
}

/*
 * Its queue slot is free again, and its CQ entry: its completion was
 * polled, or its QP is gone and the CQ was polled dry since (socket lock
 * held; once an operation).
 */
static void free_slot(struct sp_op *op)
{
	struct sp_sock *so = op->sock;

	if (op->kind == SP_OP_RECV)
		so->rq_free++;
	else
		so->sq_free++;
	atomic_fetch_add_explicit(&sp_prov.cq_credits, 1, memory_order_relaxed);
}

int sp_op_begin(struct sp_sock *so, enum sp_op_kind kind, struct sp_overlapped *ov,
		sp_completion_fn cr, const struct sp_wsabufex *bufs, uint32_t nbufs,
		struct vb_sge *sge, struct sp_op **op)
{
	bool nic_reads = kind == SP_OP_SEND || kind == SP_OP_RDMA_WRITE;
	uint32_t total = 0;
	int ret;

	*op = NULL;
	pthread_mutex_lock(&so->lock);
	if (so->closing)
		return SP_WSAENOTSOCK;
	if (so->state != SP_SOCK_CONNECTED)
		return so->state == SP_SOCK_FAILED ? so->error : SP_WSAENOTCONN;
	if (!(kind == SP_OP_RECV ? so->rq_free : so->sq_free))
		return SP_WSAENOBUFS;
	*op = sp_op_new(so, kind, ov, cr, &ret);
	if (!*op)
		return ret;
	ret = sp_mem_resolve(so, bufs, nbufs, nic_reads ? SP_MEM_READ : SP_MEM_WRITE, sge, *op,
			     &total);
	(*op)->bytes = total;
	/*
	 * Published last: the table's lock orders everything written above
	 * before the completer's removal, whichever thread (or, through a
	 * peer's shared memory, process) made the completion visible.
	 */
	if (!ret && sp_htab_add(&sp_prov.ops, *op, &(*op)->handle))
		ret = SP_WSAENOBUFS;
	return ret;
}

int sp_op_end(struct sp_sock *so, struct sp_op *op, int ret, uint32_t *bytes, int *err)
{
	sp_stats_op_end(&so->stats, op ? (unsigned int)op->kind : 0, ret);
	if (ret && op)
		sp_op_cancel(op);
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	if (ret)
		return sp_fail(err, ret);
	if (bytes)
		*bytes = 0;
	return sp_fail(err, SP_WSA_IO_PENDING);
}

void sp_op_cancel(struct sp_op *op)
{
	struct sp_sock *so = op->sock;

	if (op->handle)
		sp_htab_remove(&sp_prov.ops, op->handle);
	unlink_op(op);
	free_slot(op);
	sp_mem_release_op(op);
	/* Nothing was posted: the overlapped structure is the caller's again. */
	op->ov->internal = 0;
	free(op);
	/* The caller holds its own reference: this is never the last one. */
	atomic_fetch_sub(&so->refs, 1);
}

void sp_op_complete(struct sp_op *op, int wsa_error, uint32_t bytes)
{
	struct sp_sock *so = op->sock;
	struct sp_overlapped *ov = op->ov;
	/* Read first: once the status is stored, a polling switch may reuse the structure. */
	bool upcall = !SP_OV_NO_UPCALL(ov);
	int err;

	sp_stats_op_done(&so->stats, (unsigned int)op->kind, wsa_error, bytes, upcall);
	sp_mem_release_op(op);
	/*
	 * Its slot first: a switch that reposts a receive from the up-call (or
	 * as soon as it sees the status) finds room for it.
	 */
	pthread_mutex_lock(&so->lock);
	free_slot(op);
	pthread_mutex_unlock(&so->lock);
	ov->internal_high = bytes;
	/*
	 * The overlapped structure is the switch's memory, not an atomic
	 * object.  Stored before waiters is read, both sequentially
	 * consistent: either a waiter counted itself before this store and is
	 * woken, or it reads the status after it and does not wait.
	 */
	__atomic_store_n(&ov->internal, (uintptr_t)wsa_error, __ATOMIC_SEQ_CST);
	if (atomic_load(&sp_prov.waiters)) {
		pthread_mutex_lock(&sp_prov.lock);
		pthread_cond_broadcast(&sp_prov.done);
		pthread_mutex_unlock(&sp_prov.lock);
	}
	/* With bit 0 of the event set the switch polls: no up-call then. */
	if (upcall) {
		sp_progress_upcall_enter();
		sp_prov.up.complete_overlapped_request(so->handle, ov, (uint32_t)wsa_error, bytes,
						       &err);
		sp_progress_upcall_leave();
	}
	/*
	 * Unlinked last: closesocket waits for the list to empty, so once it
	 * returns no completion touches the switch's overlapped structures.
	 */
	pthread_mutex_lock(&so->lock);
	unlink_op(op);
	pthread_cond_broadcast(&so->cond);
	pthread_mutex_unlock(&so->lock);
	free(op);
	sp_sock_put(so);
}

void sp_op_abort_all(struct sp_sock *so)
{
	struct sp_op *op;
	bool owned;

	pthread_mutex_lock(&so->lock);
	op = so->ops;
	pthread_mutex_unlock(&so->lock);
	if (!op)
		return; /* nothing outstanding: nothing in the CQ either */
	/* Its QP is gone: what it completed goes out first, with its result. */
	owned = sp_progress_own(so);
	pthread_mutex_lock(&so->lock);
	for (op = so->ops; op;) {
		/*
		 * Not in the table: delivered by this very thread (the close came
		 * from its up-call), which unlinks it when the up-call returns.
		 */
		if (sp_htab_remove(&sp_prov.ops, op->handle) != op) {
			op = op->next;
			continue;
		}
		pthread_mutex_unlock(&so->lock);
		sp_op_complete(op, SP_WSA_OPERATION_ABORTED, 0);
		pthread_mutex_lock(&so->lock);
		op = so->ops;
	}
	pthread_mutex_unlock(&so->lock);
	sp_progress_release(so, owned);
}
