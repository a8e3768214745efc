/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Completions of every connection's QP, from one CQ.
 *
 * One thread at a time owns the CQ (sp_prov.cq_lock) and delivers what it
 * polls in the order polled: a QP completes each of its queues in the
 * order posted, so a socket's sends, receives and RDMA complete in that
 * order too.  Up-calls run on the progress thread (and on a closing
 * thread, for its socket's aborted operations).  A WSPGetOverlappedResult
 * caller that polls the CQ completes polled operations (bit 0 of the
 * event) itself; anything else it finds, and anything of a socket that
 * already has completions waiting, goes to the queue, in order, and the
 * progress thread is woken to deliver it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sp_os.h"
#include "sp_prov.h"

#define SP_PROGRESS_BATCH 32
#define SP_PROGRESS_TICK_MS 100 /* how soon the thread sees stop */

/* This thread owns the CQ (its deliveries may close sockets, which must not lock again). */
static _Thread_local bool cq_owner;

bool sp_progress_lock(void)
{
	if (cq_owner)
		return false;
	pthread_mutex_lock(&sp_prov.cq_lock);
	cq_owner = true;
	return true;
}

void sp_progress_unlock(bool locked)
{
	if (!locked)
		return;
	cq_owner = false;
	pthread_mutex_unlock(&sp_prov.cq_lock);
}

static void enqueue(struct sp_op *op, int err, uint32_t bytes)
{
	op->queued_error = err;
	op->queued_bytes = bytes;
	op->queue_next = NULL;
	if (sp_prov.queue_tail)
		sp_prov.queue_tail->queue_next = op;
	else
		sp_prov.queue_head = op;
	sp_prov.queue_tail = op;
	op->sock->queued++;
}

/* Deliver op's result now, or queue it behind its socket's earlier ones (CQ owned). */
static bool deliver(struct sp_op *op, int err, uint32_t bytes, bool may_upcall)
{
	if (op->sock->queued || (!may_upcall && !SP_OV_NO_UPCALL(op->ov))) {
		enqueue(op, err, bytes);
		return true;
	}
	sp_op_complete(op, err, bytes);
	return false;
}

/* Deliver the queue's operations, oldest first (CQ owned). */
static void drain_queue(void)
{
	struct sp_op *op;

	while ((op = sp_prov.queue_head)) {
		sp_prov.queue_head = op->queue_next;
		if (!sp_prov.queue_head)
			sp_prov.queue_tail = NULL;
		op->sock->queued--;
		sp_op_complete(op, op->queued_error, op->queued_bytes);
	}
}

void sp_progress_flush_socket(struct sp_sock *so)
{
	struct sp_op **pp = &sp_prov.queue_head, *prev = NULL, *op;

	while (so->queued && (op = *pp)) {
		if (op->sock != so) {
			prev = op;
			pp = &op->queue_next;
			continue;
		}
		*pp = op->queue_next;
		if (sp_prov.queue_tail == op)
			sp_prov.queue_tail = prev;
		so->queued--;
		sp_op_complete(op, op->queued_error, op->queued_bytes);
	}
}

/* One work completion (CQ owned); true when it was queued for the progress thread. */
static bool handle_wc(const struct vb_wc *wc, bool may_upcall)
{
	struct sp_op *op = sp_htab_remove(&sp_prov.ops, wc->wr_id);
	struct sp_sock *so;
	uint32_t bytes;
	int err = 0;

	if (!op)
		return false; /* the socket closed and completed it already */
	so = op->sock;
	bytes = op->kind == SP_OP_RECV ? wc->byte_len : op->bytes;
	if (wc->status != VB_WC_SUCCESS) {
		pthread_mutex_lock(&so->lock);
		err = sp_wsa_wc_error(wc->status, so->state == SP_SOCK_CLOSED);
		pthread_mutex_unlock(&so->lock);
		/* Any failed WR leaves the QP in the error state: the connection is gone. */
		sp_sock_broken(so,
			       err == SP_WSAEMSGSIZE || err == SP_WSAEFAULT || err == SP_WSAEACCES
				   ? SP_WSAECONNABORTED
				   : err);
		bytes = 0;
	}
	return deliver(op, err, bytes, may_upcall);
}

/* Poll and deliver one batch (CQ owned): the number of completions, or -errno. */
static int poll_batch(bool may_upcall, bool *queued)
{
	struct vb_wc wc[SP_PROGRESS_BATCH];
	int n = 0, ret;

	ret = vb_poll_cq(sp_prov.cq, SP_PROGRESS_BATCH, wc, &n);
	if (ret)
		return -ret;
	for (int i = 0; i < n; i++)
		*queued |= handle_wc(&wc[i], may_upcall);
	return n;
}

void sp_progress_poll(void)
{
	bool queued = false;

	if (cq_owner || pthread_mutex_trylock(&sp_prov.cq_lock))
		return; /* the owner delivers it */
	cq_owner = true;
	poll_batch(false, &queued);
	cq_owner = false;
	pthread_mutex_unlock(&sp_prov.cq_lock);
	if (queued)
		sp_os_wake(sp_prov.wake);
}

static void *progress_main(void *arg)
{
	bool queued = false;
	int n, ret = 0;

	(void)arg;
	while (!atomic_load(&sp_prov.stop)) {
		sp_progress_lock();
		drain_queue();
		n = poll_batch(true, &queued);
		/* Armed, then polled again: a completion that came before the arm raised no event.
		 */
		if (!n && !(ret = vb_req_notify_cq(sp_prov.cq)))
			n = poll_batch(true, &queued);
		sp_progress_unlock(true);
		if (n < 0 || (!n && ret)) {
			/*
			 * Credits keep the CQ from overrunning; an error here means
			 * the device is gone.  Operations then end at close.
			 */
			fprintf(stderr, "sanprov: completion queue: %s\n",
				strerror(n < 0 ? -n : ret));
			break;
		}
		if (n)
			continue;
		ret = sp_os_wait2(sp_prov.cq->fd, sp_prov.wake, SP_PROGRESS_TICK_MS);
		if (ret == 1) {
			ret = vb_get_cq_event(sp_prov.cq);
			if (ret && ret != EAGAIN)
				fprintf(stderr, "sanprov: completion event: %s\n", strerror(ret));
		}
	}
	return NULL;
}

int sp_progress_start(void)
{
	int ret = sp_os_wake_open(&sp_prov.wake);

	if (ret)
		return ret;
	ret = pthread_create(&sp_prov.progress, NULL, progress_main, NULL);
	sp_prov.progress_running = !ret;
	if (ret)
		sp_os_wake_close(sp_prov.wake);
	return ret;
}

void sp_progress_stop(void)
{
	if (!sp_prov.progress_running)
		return;
	atomic_store(&sp_prov.stop, true);
	sp_os_wake(sp_prov.wake);
	pthread_join(sp_prov.progress, NULL);
	sp_os_wake_close(sp_prov.wake);
	sp_prov.progress_running = false;
}
