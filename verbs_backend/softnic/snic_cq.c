/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Completion queues: a ring that only this process writes (its requesters,
 * its flushes, and its pollers completing the receives peers reported
 * consumed), in a segment that peers map read-only.  A full ring is an
 * overflow error that stays, as on a NIC; nothing is dropped silently.
 *
 * Peers report the receives they consumed in each QP's segment.  A poll
 * takes in the reports of the few QPs that had some lately (the polled
 * set); every other QP's peer rings its connection for its reports and the
 * progress thread takes them in, then adds the QP to the set.  A QP leaves
 * the set when a busier one needs its place or after SNIC_POLLED_IDLE_MS
 * without reports.  So a poll or an arm costs the QPs with work, and a QP
 * is only ever looked at on its own segment's word, or its own ring: a
 * peer that lies about its QP (sets the flag, never rings) stalls that
 * QP alone.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "snic.h"

#define SNIC_POLLED_IDLE_MS 20

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct vb_cq *snic_create_cq(struct vb_device *vdev, int cqe)
{
	struct snic_dev *dev = snic_dev_of(vdev);
	struct snic_cq *cq;
	uint32_t size;
	int ret;

	if (cqe < 1 || (uint32_t)cqe > SNIC_MAX_CQE) {
		errno = EINVAL;
		return NULL;
	}
	size = snic_pow2((uint32_t)cqe);
	cq = calloc(1, sizeof(*cq));
	if (!cq) {
		errno = ENOMEM;
		return NULL;
	}
	cq->max_polled = (uint32_t)snic_env_ulong("SANPROV_SOFTNIC_POLLED_QPS", 64, 0, 4096);
	cq->polled = calloc(cq->max_polled ? cq->max_polled : 1, sizeof(*cq->polled));
	if (!cq->polled) {
		ret = ENOMEM;
		goto err_free;
	}
	ret = snic_os_shm_create(&cq->shm, "sanprov-cq", snic_cq_seg_size(size), true);
	if (ret)
		goto err_free;
	cq->seg = cq->shm.addr;
	cq->seg->magic = SNIC_CQ_MAGIC;
	cq->seg->size = size;
	ret = snic_os_shared_lock_init(&cq->seg->prod_lock);
	if (ret)
		goto err_shm;
	ret = pthread_mutex_init(&cq->cons_lock, NULL);
	if (ret)
		goto err_shm;
	ret = snic_os_event_create(&cq->vcq.fd);
	if (ret)
		goto err_lock;
	pthread_mutex_lock(&dev->lock);
	if (dev->n_cq >= dev->max_cq) {
		pthread_mutex_unlock(&dev->lock);
		ret = ENOMEM;
		goto err_fd;
	}
	dev->n_cq++;
	pthread_mutex_unlock(&dev->lock);
	cq->size = size;
	cq->vcq.dev = vdev;
	cq->vcq.cqe = (int)size;
	return &cq->vcq;

err_fd:
	snic_os_close(cq->vcq.fd);
err_lock:
	pthread_mutex_destroy(&cq->cons_lock);
err_shm:
	snic_os_shm_destroy(&cq->shm);
err_free:
	free(cq->polled);
	free(cq);
	errno = ret;
	return NULL;
}

int snic_destroy_cq(struct vb_cq *vcq)
{
	struct snic_cq *cq = snic_cq_of(vcq);
	struct snic_dev *dev = snic_dev_of(vcq->dev);

	if (atomic_load(&cq->refs))
		return EBUSY;
	pthread_mutex_lock(&dev->lock);
	dev->n_cq--;
	pthread_mutex_unlock(&dev->lock);
	if (snic_env_ulong("SANPROV_SOFTNIC_STATS", 0, 0, 1))
		fprintf(stderr, "softnic: CQ: %llu polls looked at %llu QPs for reports\n",
			(unsigned long long)atomic_load(&cq->n_polls),
			(unsigned long long)atomic_load(&cq->n_examined));
	snic_os_close(vcq->fd);
	pthread_mutex_destroy(&cq->cons_lock);
	snic_os_shm_destroy(&cq->shm);
	free(cq->polled);
	free(cq);
	return 0;
}

int snic_cq_push(struct snic_cq_seg *seg, uint32_t size, snic_handle evfd,
		 const struct snic_cqe *cqe, _Atomic bool *dead)
{
	uint32_t t, h;

	/* A peer that keeps the lock costs one timeout, not one per completion. */
	if (atomic_load_explicit(dead, memory_order_relaxed))
		return EIO;
	if (snic_os_shared_lock(&seg->prod_lock)) {
		atomic_store(dead, true);
		return EIO;
	}
	t = atomic_load_explicit(&seg->tail, memory_order_relaxed);
	h = atomic_load_explicit(&seg->head, memory_order_acquire);
	if (t - h >= size || atomic_load_explicit(&seg->overflow, memory_order_relaxed)) {
		atomic_store(&seg->overflow, 1);
		pthread_mutex_unlock(&seg->prod_lock);
		/* Wake a sleeping consumer so that it sees the error. */
		if (atomic_exchange(&seg->armed, 0))
			snic_os_event_signal(evfd);
		return EOVERFLOW;
	}
	seg->ring[t & (size - 1)] = *cqe;
	atomic_store_explicit(&seg->tail, t + 1, memory_order_release);
	pthread_mutex_unlock(&seg->prod_lock);

	if (atomic_load_explicit(&seg->armed, memory_order_relaxed) &&
	    atomic_exchange(&seg->armed, 0))
		snic_os_event_signal(evfd);
	return 0;
}

void snic_cq_poll_qp(struct snic_cq *cq, struct snic_qp *qp)
{
	uint64_t now = now_ms();

	if (qp->polled) {
		qp->polled_ms = now;
		return;
	}
	if (!cq->max_polled)
		return;
	if (cq->n_polled == cq->max_polled) {
		/* The one quiet for longest makes room: its peer rings again. */
		struct snic_qp *old = cq->polled[0];

		for (uint32_t i = 1; i < cq->n_polled; i++)
			if (cq->polled[i]->polled_ms < old->polled_ms)
				old = cq->polled[i];
		snic_cq_unpoll(cq, old);
	}
	qp->polled = true;
	qp->polled_idx = cq->n_polled;
	qp->polled_ms = now;
	cq->polled[cq->n_polled++] = qp;
	/*
	 * Armed for a sleeping poller first: a report the peer no longer
	 * rings for must still wake it (at worst once too often).
	 */
	atomic_store(&qp->seg->cq_notify, 1);
	atomic_store(&qp->seg->polled, 1);
}

void snic_cq_unpoll(struct snic_cq *cq, struct snic_qp *qp)
{
	uint32_t i = qp->polled_idx;

	if (!qp->polled)
		return;
	cq->polled[i] = cq->polled[--cq->n_polled];
	cq->polled[i]->polled_idx = i;
	qp->polled = false;
	/*
	 * The flag, then its reports: a report written while the peer saw the
	 * flag set is taken in here, and the peer rings for any later one.
	 */
	atomic_store(&qp->seg->polled, 0);
	snic_qp_drain(qp);
}

int snic_req_notify_cq(struct vb_cq *vcq)
{
	struct snic_cq *cq = snic_cq_of(vcq);

	atomic_store(&cq->seg->armed, 1);
	/*
	 * A peer's report is no completion yet, but the poller it wakes makes
	 * it one.  Only polled QPs' peers need the word: the others ring, and
	 * the progress thread's completions signal the armed CQ.
	 */
	pthread_mutex_lock(&cq->cons_lock);
	for (uint32_t i = 0; i < cq->n_polled; i++)
		atomic_store(&cq->polled[i]->seg->cq_notify, 1);
	pthread_mutex_unlock(&cq->cons_lock);
	return 0;
}

int snic_get_cq_event(struct vb_cq *vcq)
{
	return snic_os_event_drain(vcq->fd);
}

/* A polled send completion returns its WQEs (and the unsignaled before it) to the SQ. */
static void sq_credit(struct snic_dev *dev, const struct snic_cqe *c)
{
	_Atomic uint64_t *credit;
	uint64_t old, val;

	if (c->opcode >= VB_WC_RECV)
		return;
	credit = &dev->sq_credit[c->qp_num & (dev->max_qp - 1)];
	val = (uint64_t)c->qp_num << 32 | (uint32_t)(c->sq_idx + 1);
	old = atomic_load(credit);
	while (old >> 32 == c->qp_num && !atomic_compare_exchange_weak(credit, &old, val))
		;
}

int snic_poll_cq(struct vb_cq *vcq, int max, struct vb_wc *wc, int *count)
{
	struct snic_cq *cq = snic_cq_of(vcq);
	struct snic_cq_seg *seg = cq->seg;
	struct snic_dev *dev = snic_dev_of(vcq->dev);
	uint32_t h, t, n;

	*count = 0;
	if (max < 0)
		return EINVAL;
	pthread_mutex_lock(&cq->cons_lock);
	/*
	 * What peers reported, checked against what was posted, becomes
	 * completions here: the polled QPs' reports (the others' come through
	 * the progress thread).  Backwards, as unpolling moves the last one.
	 */
	if (cq->n_polled) {
		uint64_t now = now_ms();

		atomic_fetch_add_explicit(&cq->n_examined, cq->n_polled, memory_order_relaxed);
		for (uint32_t i = cq->n_polled; i-- > 0;) {
			struct snic_qp *qp = cq->polled[i];

			if (snic_qp_drain(qp))
				qp->polled_ms = now;
			else if (now - qp->polled_ms > SNIC_POLLED_IDLE_MS)
				snic_cq_unpoll(cq, qp);
		}
	}
	atomic_fetch_add_explicit(&cq->n_polls, 1, memory_order_relaxed);
	if (atomic_load_explicit(&seg->tail, memory_order_acquire) ==
	    atomic_load_explicit(&seg->head, memory_order_relaxed)) {
		pthread_mutex_unlock(&cq->cons_lock);
		/* Errors that stay, once what came before them is polled. */
		if (atomic_load_explicit(&seg->overflow, memory_order_relaxed))
			return EOVERFLOW;
		return atomic_load_explicit(&cq->dead, memory_order_relaxed) ? EIO : 0;
	}
	h = atomic_load_explicit(&seg->head, memory_order_relaxed);
	t = atomic_load_explicit(&seg->tail, memory_order_acquire);
	n = t - h;
	if (n > cq->size) /* only a corrupted segment gets here */
		n = cq->size;
	if (n > (uint32_t)max)
		n = (uint32_t)max;
	for (uint32_t i = 0; i < n; i++) {
		const struct snic_cqe *c = &seg->ring[(h + i) & (cq->size - 1)];
		wc[i] = (struct vb_wc){
			.wr_id = c->wr_id,
			.status = (enum vb_wc_status)c->status,
			.opcode = (enum vb_wc_opcode)c->opcode,
			.vendor_err = c->vendor_err,
			.byte_len = c->byte_len,
			.imm_data = c->imm_data,
			.qp_num = c->qp_num,
			.wc_flags = c->wc_flags,
		};
		sq_credit(dev, c);
	}
	atomic_store_explicit(&seg->head, h + n, memory_order_release);
	pthread_mutex_unlock(&cq->cons_lock);
	*count = (int)n;
	return 0;
}
