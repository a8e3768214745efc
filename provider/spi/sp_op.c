/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Overlapped operations.  Each one comes from its socket's slab, made
 * with the QP (as many as its send and receive queues hold), and goes
 * back there: posting and completing allocate nothing and take no lock
 * but the socket's.  While in flight it is in its socket's list and in
 * the posted state; its handle is the wr_id of its work request: the
 * socket's slot in sp_prov.conns, the operation's slot in the slab and
 * the slot's generation, so the poller finds it in O(1).  Whoever takes
 * it out of the posted state (under the socket's lock), owning the CQ,
 * owns its completion: the thread that polls its work completion, or the
 * closing socket.  A work completion whose wr_id names no socket with a
 * QP, or an operation no longer in flight, is left over from a closed
 * socket's QP and finds nothing.
 */
#include <errno.h>
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

/*
 * wr_id: the socket's slot in sp_prov.conns (index + 1 in 22 bits, the
 * table keeps 10 bits of generation), the operation's slot and its
 * generation (16 bits each).
 */
#define CONN_IDX_MASK 0x3fffffu
_Static_assert(SP_CONN_GEN_BITS == 64 - 54, "the wr_id keeps 10 bits of a socket's generation");

static uint64_t conn_of_wr_id(uint64_t wr_id)
{
	return (wr_id >> 54) << 32 | (wr_id >> 32 & CONN_IDX_MASK);
}

static uint64_t wr_id_of(const struct sp_sock *so, const struct sp_op *op)
{
	return (so->conn >> 32) << 54 | (so->conn & CONN_IDX_MASK) << 32 | (uint64_t)op->gen << 16 |
	       op->idx;
}

/*
 * One more chunk of so's slab (socket lock held, or so not shared yet).
 * Its operations are handed out in slot order the first time, and only
 * then touched: a connection with few operations in flight keeps the
 * rest of its chunk untouched (zero pages), and the free list, last in
 * first out, reuses the same few.
 */
static int slab_grow(struct sp_sock *so)
{
	struct sp_op *c;

	if (so->n_op_chunks == SP_OP_MAX_CHUNKS)
		return ENOBUFS;
	c = calloc(so->op_chunk_size, sizeof(*c));
	if (!c)
		return ENOMEM;
	so->op_chunks[so->n_op_chunks++] = c;
	return 0;
}

/* An operation of so's slab not in use (socket lock held): NULL when the slab is full. */
static struct sp_op *slab_take(struct sp_sock *so)
{
	uint32_t n = so->op_chunk_size;
	struct sp_op *op = so->op_free;

	if (op) {
		so->op_free = op->next;
		return op;
	}
	/* Out of operations only when up-calls hold completed ones while the switch reposts. */
	if (!n || (so->op_fresh == so->n_op_chunks * n && slab_grow(so)))
		return NULL;
	op = &so->op_chunks[so->op_fresh / n][so->op_fresh % n];
	op->idx = so->op_fresh++;
	return op;
}

int sp_op_slab_init(struct sp_sock *so, uint32_t send_depth, uint32_t recv_depth)
{
	int ret;

	if (so->n_op_chunks)
		return 0;
	/* One op per queue slot; SP_OP_MAX_CHUNKS of them must fit the wr_id's 16 bits. */
	so->op_chunk_size = send_depth + recv_depth;
	if (!so->op_chunk_size || so->op_chunk_size > 65536 / SP_OP_MAX_CHUNKS)
		return EINVAL;
	ret = slab_grow(so);
	if (ret)
		return ret;
	ret = sp_htab_add(&sp_prov.conns, so, &so->conn);
	if (ret)
		sp_op_slab_free(so);
	return ret;
}

void sp_op_slab_unpublish(struct sp_sock *so)
{
	/* Waits for a poller that found so to have its reference. */
	if (so->conn)
		sp_htab_remove(&sp_prov.conns, so->conn);
	so->conn = 0;
}

void sp_op_slab_free(struct sp_sock *so)
{
	sp_op_slab_unpublish(so);
	for (uint32_t i = 0; i < so->n_op_chunks; i++)
		free(so->op_chunks[i]);
	so->n_op_chunks = 0;
	so->op_fresh = 0;
	so->op_free = NULL;
}

struct sp_sock *sp_op_wc_sock(uint64_t wr_id)
{
	return sp_htab_lookup(&sp_prov.conns, conn_of_wr_id(wr_id), sp_sock_hold);
}

struct sp_op *sp_op_take(struct sp_sock *so, uint64_t wr_id)
{
	uint32_t idx = (uint32_t)wr_id & 0xffff, n = so->op_chunk_size;
	struct sp_op *op;

	if (idx >= so->op_fresh)
		return NULL;
	op = &so->op_chunks[idx / n][idx % n];
	if (op->gen != (uint16_t)(wr_id >> 16) || op->state != SP_OP_POSTED)
		return NULL;
	op->state = SP_OP_TAKEN;
	return op;
}

/* Back to the slab, under a new generation (socket lock held). */
static void op_put(struct sp_sock *so, struct sp_op *op)
{
	op->state = SP_OP_FREE;
	op->gen++;
	op->next = so->op_free;
	so->op_free = op;
}

struct sp_op *sp_op_new(struct sp_sock *so, enum sp_op_kind kind, struct sp_overlapped *ov,
			sp_completion_fn cr, int *err)
{
	struct sp_op *op;

	if (!cq_credit_take()) {
		*err = SP_WSAENOBUFS;
		return NULL;
	}
	op = slab_take(so);
	if (!op) {
		atomic_fetch_add_explicit(&sp_prov.cq_credits, 1, memory_order_relaxed);
		*err = SP_WSAENOBUFS;
		return NULL;
	}
	op->state = SP_OP_STARTING;
	op->handle = wr_id_of(so, op);
	op->next = op->prev = op->done_next = NULL;
	op->sock = so;
	op->kind = kind;
	op->ov = ov;
	op->cr = cr;
	op->bytes = 0;
	op->n_memh = 0;
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
	 * In flight from here.  The socket's lock, held until the WR is
	 * posted, orders everything written above before the completer takes
	 * it, whichever thread (or, through a peer's shared memory, process)
	 * made the completion visible.
	 */
	if (!ret)
		(*op)->state = SP_OP_POSTED;
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

	unlink_op(op);
	free_slot(op);
	sp_mem_release_op(op);
	/* Nothing was posted: the overlapped structure is the caller's again. */
	op->ov->internal = 0;
	op_put(so, op);
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
	if (!upcall) {
		/*
		 * Polled (bit 0 of the event set): nothing runs between the
		 * steps below, so they take the socket's lock once.  Waiters
		 * sleep on cond under it: the broadcast reaches them.
		 */
		pthread_mutex_lock(&so->lock);
		free_slot(op);
		ov->internal_high = bytes;
		__atomic_store_n(&ov->internal, (uintptr_t)wsa_error, __ATOMIC_SEQ_CST);
		unlink_op(op);
		op_put(so, op);
		pthread_cond_broadcast(&so->cond);
		pthread_mutex_unlock(&so->lock);
		sp_sock_put(so);
		return;
	}
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
	 * woken, or it reads the status after it and does not wait.  Only
	 * this socket's waiters.
	 */
	__atomic_store_n(&ov->internal, (uintptr_t)wsa_error, __ATOMIC_SEQ_CST);
	if (atomic_load(&so->waiters)) {
		pthread_mutex_lock(&so->lock);
		pthread_cond_broadcast(&so->cond);
		pthread_mutex_unlock(&so->lock);
	}
	sp_progress_upcall_enter();
	sp_prov.up.complete_overlapped_request(so->handle, ov, (uint32_t)wsa_error, bytes, &err);
	sp_progress_upcall_leave();
	/*
	 * Unlinked last: closesocket waits for the list to empty, so once it
	 * returns no completion touches the switch's overlapped structures.
	 */
	pthread_mutex_lock(&so->lock);
	unlink_op(op);
	op_put(so, op);
	pthread_cond_broadcast(&so->cond);
	pthread_mutex_unlock(&so->lock);
	/* The slab goes with the socket: the op's reference is dropped after it is back. */
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
		 * Taken already: delivered by this very thread (the close came
		 * from its up-call), which unlinks it when the up-call returns.
		 */
		if (op->state != SP_OP_POSTED) {
			op = op->next;
			continue;
		}
		op->state = SP_OP_TAKEN;
		pthread_mutex_unlock(&so->lock);
		sp_op_complete(op, SP_WSA_OPERATION_ABORTED, 0);
		pthread_mutex_lock(&so->lock);
		op = so->ops;
	}
	pthread_mutex_unlock(&so->lock);
	sp_progress_release(so, owned);
}
