/* SPDX-License-Identifier: BSD-2-Clause */
/* The progress thread: completions of every connection's QP, one CQ. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sp_prov.h"

#define SP_PROGRESS_BATCH 32
#define SP_PROGRESS_TICK_MS 100 /* how soon the thread sees stop */

static void handle_wc(const struct vb_wc *wc)
{
	struct sp_op *op = sp_htab_remove(&sp_prov.ops, wc->wr_id);
	struct sp_sock *so;
	uint32_t bytes;
	int err = 0;

	if (!op)
		return; /* left over from a closed socket's QP */
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
	sp_op_complete(op, err, bytes);
}

/*
 * Complete what the CQ holds now, in the calling thread.  A switch that
 * polls (WSPGetOverlappedResult) gets its completion without waiting for
 * the progress thread to wake up: a thread wake-up costs microseconds, a
 * poll of the CQ a fraction of one.  Any thread may do this at any time:
 * whoever takes an operation out of the table completes it.
 */
void sp_progress_poll(void)
{
	struct vb_wc wc[SP_PROGRESS_BATCH];
	int n = 0;

	if (vb_poll_cq(sp_prov.cq, SP_PROGRESS_BATCH, wc, &n))
		return;
	for (int i = 0; i < n; i++)
		handle_wc(&wc[i]);
}

static void *progress_main(void *arg)
{
	struct vb_wc wc[SP_PROGRESS_BATCH];
	int n, ret;

	(void)arg;
	while (!atomic_load(&sp_prov.stop)) {
		ret = vb_cq_wait(sp_prov.cq, SP_PROGRESS_BATCH, wc, &n, SP_PROGRESS_TICK_MS);
		if (ret == ETIMEDOUT)
			continue;
		if (ret) {
			/*
			 * Credits keep the CQ from overrunning; an error here means
			 * the device is gone.  Operations then end at close.
			 */
			fprintf(stderr, "sanprov: completion queue: %s\n", strerror(ret));
			break;
		}
		for (int i = 0; i < n; i++)
			handle_wc(&wc[i]);
	}
	return NULL;
}

int sp_progress_start(void)
{
	int ret = pthread_create(&sp_prov.progress, NULL, progress_main, NULL);

	sp_prov.progress_running = !ret;
	return ret;
}

void sp_progress_stop(void)
{
	if (!sp_prov.progress_running)
		return;
	atomic_store(&sp_prov.stop, true);
	pthread_join(sp_prov.progress, NULL);
	sp_prov.progress_running = false;
}
