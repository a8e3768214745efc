/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Completion queues: a ring that only this process writes (its requesters,
 * its flushes, and its pollers completing the receives peers reported
 * consumed), in a segment that peers map read-only.  A full ring is an
 * overflow error that stays, as on a NIC; nothing is dropped silently.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "snic.h"

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
	snic_os_close(vcq->fd);
	pthread_mutex_destroy(&cq->cons_lock);
	snic_os_shm_destroy(&cq->shm);
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

int snic_req_notify_cq(struct vb_cq *vcq)
{
	struct snic_cq *cq = snic_cq_of(vcq);

	atomic_store(&cq->seg->armed, 1);
	/* A peer's report is no completion yet, but the poller it wakes makes it one. */
	pthread_mutex_lock(&cq->cons_lock);
	for (struct snic_qp *qp = cq->rqps; qp; qp = qp->cq_next)
		atomic_store(&qp->seg->cq_notify, 1);
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
	/* What peers reported, checked against what was posted, becomes completions here. */
	for (struct snic_qp *qp = cq->rqps; qp; qp = qp->cq_next)
		snic_qp_drain(qp);
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
