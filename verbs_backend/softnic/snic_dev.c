/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The softnic device: its MR table segment, protection domains, limits,
 * and the progress thread that finishes what cannot complete in the
 * posting thread (sends that waited for a receive, errors raised by a
 * peer, peers that went away).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snic.h"

void snic_dev_ring(snic_handle doorbell)
{
	snic_os_event_signal(doorbell);
}

void snic_dev_service(struct snic_qp *qp)
{
	struct snic_dev *dev = qp->dev;

	if (atomic_exchange(&qp->svc_queued, true))
		return; /* queued already: the thread clears the flag before it serves */
	pthread_mutex_lock(&dev->svc_lock);
	if (dev->n_svc == dev->cap_svc) {
		uint32_t cap = dev->cap_svc ? 2 * dev->cap_svc : 64;
		uint32_t *svc = realloc(dev->svc, cap * sizeof(*svc));

		if (svc) {
			dev->svc = svc;
			dev->cap_svc = cap;
		}
	}
	/* Without room it waits for the next ring of its own socket or queue. */
	if (dev->n_svc < dev->cap_svc)
		dev->svc[dev->n_svc++] = qp->vqp.qp_num;
	else
		atomic_store(&qp->svc_queued, false);
	pthread_mutex_unlock(&dev->svc_lock);
	snic_dev_ring(dev->doorbell_fd);
}

void snic_qp_ring_peer(struct snic_qp *qp)
{
	static const char ring = 'r';

	/* One ring in flight per QP: the socket never fills, the poster never blocks. */
	if (!atomic_exchange(&qp->peer.qp_seg->rung, 1))
		snic_os_send(qp->sock, &ring, 1, NULL, 0);
}

/*
 * Take the rings that qp's peer sent on its connection (dev->lock held):
 * true when the peer is gone instead.  Anything but a one-byte ring is
 * dropped.
 */
static bool take_rings(struct snic_qp *qp)
{
	snic_handle h[1];
	char b;
	int nh, ret = 0;

	for (int i = 0; i < 16 && !ret; i++) {
		ret = snic_os_recv(qp->sock, &b, 1, h, &nh, 0, 0);
		if (ret == EPROTO)
			ret = 0;
	}
	/*
	 * Cleared after the rings are taken, before the QP is served: a ring
	 * that found the flag still set made its change before this, and the
	 * service sees it; a later one sends again.
	 */
	atomic_store(&qp->seg->rung, 0);
	return ret && ret != ETIMEDOUT;
}

int snic_dev_watch(struct snic_dev *dev, snic_handle conn, uint32_t qpn)
{
	return snic_os_watch_conn(dev->watch, conn, qpn);
}

/*
 * The handles peers share (snic_dev_share()): a lock of their own, taken
 * under a QP's lock at connect and accept, never with dev->lock, which the
 * progress thread holds while it takes QPs' locks.
 */
static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;

snic_handle snic_dev_share(struct snic_dev *dev, snic_handle h, pid_t pid)
{
	struct snic_shared *s;

	if (h == SNIC_NO_HANDLE)
		return h;
	pthread_mutex_lock(&share_lock);
	for (uint32_t i = 0; i < dev->n_shared; i++) {
		s = &dev->shared[i];
		/*
		 * A process handle names its process while that runs: a live
		 * one with the same pid is the same process.  Events are compared
		 * as objects.
		 */
		if (pid ? s->pid == pid && snic_os_process_alive(s->h)
			: !s->pid && snic_os_same_object(s->h, h)) {
			s->refs++;
			pthread_mutex_unlock(&share_lock);
			snic_os_close(h);
			return s->h;
		}
	}
	if (dev->n_shared == dev->cap_shared) {
		uint32_t cap = dev->cap_shared ? 2 * dev->cap_shared : 16;
		s = realloc(dev->shared, cap * sizeof(*s));
		if (!s) {
			pthread_mutex_unlock(&share_lock);
			return h; /* kept by its connection alone */
		}
		dev->shared = s;
		dev->cap_shared = cap;
	}
	dev->shared[dev->n_shared++] = (struct snic_shared){ .h = h, .pid = pid, .refs = 1 };
	pthread_mutex_unlock(&share_lock);
	return h;
}

void snic_dev_unshare(struct snic_dev *dev, snic_handle h)
{
	if (h == SNIC_NO_HANDLE)
		return;
	pthread_mutex_lock(&share_lock);
	for (uint32_t i = 0; i < dev->n_shared; i++) {
		if (dev->shared[i].h != h)
			continue;
		if (--dev->shared[i].refs)
			h = SNIC_NO_HANDLE;
		else
			dev->shared[i] = dev->shared[--dev->n_shared];
		break;
	}
	pthread_mutex_unlock(&share_lock);
	snic_os_close(h);
}

/* With dev->lock held. */
static void service_qp(struct snic_qp *qp, bool disconnected)
{
	if (!atomic_load(&qp->connected))
		return;
	atomic_fetch_add_explicit(&qp->dev->n_serviced, 1, memory_order_relaxed);
	pthread_mutex_lock(&qp->lock);
	if (disconnected && !qp->peer.gone) {
		qp->peer.gone = true;
		snic_os_watch_remove(qp->dev->watch, qp->sock);
	}
	if (qp->state != VB_QPS_ERR) {
		struct snic_cq *rcq = snic_cq_of(qp->vqp.recv_cq);

		/*
		 * Reports a peer rang for (an overflow is found now, not at the
		 * next poll); the QP then joins the ones polls look at.
		 */
		pthread_mutex_lock(&rcq->cons_lock);
		if (snic_qp_drain(qp))
			snic_cq_poll_qp(rcq, qp);
		pthread_mutex_unlock(&rcq->cons_lock);
	}
	if (qp->state != VB_QPS_ERR && (qp->peer.gone || atomic_exchange(&qp->seg->remote_err, 0) ||
					atomic_load(&qp->inb_err))) {
		snic_qp_set_error(qp);
	} else if (qp->state == VB_QPS_RTS && atomic_load(&qp->seg->rnr_wait)) {
		atomic_store(&qp->seg->rnr_wait, 0);
		snic_qp_progress(qp);
	}
	pthread_mutex_unlock(&qp->lock);
}

static void *progress_main(void *arg)
{
	struct snic_dev *dev = arg;
	uint32_t keys[32];

	while (!atomic_load(&dev->stop)) {
		int n = snic_os_watch_wait(dev->watch, keys, 32);
		uint32_t *svc = NULL, n_svc = 0;

		if (n < 0)
			continue;
		pthread_mutex_lock(&dev->lock);
		for (int i = 0; i < n; i++) {
			uint32_t qpn = keys[i];
			struct snic_qp *qp;

			if (!qpn) {
				snic_os_event_drain(dev->doorbell_fd);
				/* The QPs this process queued: those, not every QP. */
				pthread_mutex_lock(&dev->svc_lock);
				svc = dev->svc;
				n_svc = dev->n_svc;
				dev->svc = NULL;
				dev->n_svc = dev->cap_svc = 0;
				pthread_mutex_unlock(&dev->svc_lock);
				for (uint32_t j = 0; j < n_svc; j++) {
					qp = dev->qp_table[svc[j] & (dev->max_qp - 1)];
					if (!qp || qp->vqp.qp_num != svc[j])
						continue; /* destroyed meanwhile */
					atomic_store(&qp->svc_queued, false);
					service_qp(qp, false);
				}
				free(svc);
				atomic_fetch_add_explicit(&dev->n_rings, 1, memory_order_relaxed);
				continue;
			}
			/* The connection socket: the peer rang this QP, or it is gone. */
			qp = dev->qp_table[qpn & (dev->max_qp - 1)];
			if (qp && qp->vqp.qp_num == qpn && !qp->peer.gone) {
				atomic_fetch_add_explicit(&dev->n_rings, 1, memory_order_relaxed);
				service_qp(qp, take_rings(qp));
			}
		}
		pthread_mutex_unlock(&dev->lock);
	}
	return NULL;
}

struct vb_device *snic_open_device(const struct vb_ops *ops, const char *name)
{
	struct snic_dev *dev;
	int ret;

	if (name && strcmp(name, SNIC_DEV_NAME)) {
		errno = ENODEV;
		return NULL;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev) {
		errno = ENOMEM;
		return NULL;
	}
	dev->vdev.ops = ops;
	snprintf(dev->vdev.name, sizeof(dev->vdev.name), "%s", SNIC_DEV_NAME);
	dev->max_mr =
	    (uint32_t)snic_env_ulong("SANPROV_SOFTNIC_MAX_MR", 1u << 18, 16, SNIC_MAX_MR_LIMIT);
	dev->max_qp =
	    snic_pow2((uint32_t)snic_env_ulong("SANPROV_SOFTNIC_MAX_QP", 4096, 2, 1u << 20));
	dev->max_cq = (uint32_t)snic_env_ulong("SANPROV_SOFTNIC_MAX_CQ", 4096, 1, 1u << 20);
	dev->dereg_timeout_ms =
	    (unsigned int)snic_env_ulong("SANPROV_SOFTNIC_DEREG_TIMEOUT_MS", 10000, 1, 3600000);
	dev->next_pd = 1;
	dev->next_qpn = 1;
	dev->doorbell_fd = SNIC_NO_HANDLE;
	ret = pthread_mutex_init(&dev->lock, NULL);
	if (ret)
		goto err_free;
	ret = pthread_mutex_init(&dev->svc_lock, NULL);
	if (ret) {
		pthread_mutex_destroy(&dev->lock);
		goto err_free;
	}
	/* Peers only read the MR table: they map it read-only. */
	ret =
	    snic_os_shm_create(&dev->seg_shm, "sanprov-dev", snic_dev_seg_size(dev->max_mr), true);
	if (ret)
		goto err_lock;
	dev->seg = dev->seg_shm.addr;
	dev->seg->magic = SNIC_DEV_MAGIC;
	dev->seg->max_mr = dev->max_mr;
	dev->seg->pid = getpid();
	ret = snic_mr_table_init(dev);
	if (ret)
		goto err_shm;
	dev->qp_table = calloc(dev->max_qp, sizeof(*dev->qp_table));
	dev->sq_credit = calloc(dev->max_qp, sizeof(*dev->sq_credit));
	if (!dev->qp_table || !dev->sq_credit) {
		ret = ENOMEM;
		goto err_tables;
	}
	/* Key 0 is the doorbell; QPs are watched by their numbers, never 0. */
	ret = snic_os_event_create(&dev->doorbell_fd);
	if (ret) {
		dev->doorbell_fd = SNIC_NO_HANDLE;
		goto err_fds;
	}
	dev->watch = snic_os_watch_create();
	if (!dev->watch) {
		ret = errno;
		goto err_fds;
	}
	ret = snic_os_watch_event(dev->watch, dev->doorbell_fd, 0);
	if (ret)
		goto err_fds;
	ret = pthread_create(&dev->progress, NULL, progress_main, dev);
	if (ret)
		goto err_fds;
	return &dev->vdev;

err_fds:
	snic_os_watch_destroy(dev->watch);
	snic_os_close(dev->doorbell_fd);
err_tables:
	free(dev->qp_table);
	free((void *)dev->sq_credit);
	snic_mr_table_fini(dev);
err_shm:
	snic_os_shm_destroy(&dev->seg_shm);
err_lock:
	pthread_mutex_destroy(&dev->svc_lock);
	pthread_mutex_destroy(&dev->lock);
err_free:
	free(dev);
	errno = ret;
	return NULL;
}

int snic_close_device(struct vb_device *vdev)
{
	struct snic_dev *dev = snic_dev_of(vdev);

	pthread_mutex_lock(&dev->lock);
	if (dev->n_pd || dev->n_mr || dev->n_cq || dev->n_qp || dev->n_lst || dev->n_req) {
		pthread_mutex_unlock(&dev->lock);
		return EBUSY;
	}
	pthread_mutex_unlock(&dev->lock);
	atomic_store(&dev->stop, true);
	snic_dev_ring(dev->doorbell_fd);
	pthread_join(dev->progress, NULL);
	snic_os_watch_destroy(dev->watch);
	snic_os_close(dev->doorbell_fd);
	/* Buffers the application did not free go with the device. */
	for (uint32_t i = 0; i < dev->n_bufs; i++)
		snic_os_shm_destroy(&(struct snic_shm){ .fd = dev->bufs[i].fd,
							.addr = (void *)dev->bufs[i].base,
							.len = dev->bufs[i].len });
	free(dev->qp_table);
	free((void *)dev->sq_credit);
	/* Every QP is gone, and with it every use of a shared handle. */
	free(dev->shared);
	free(dev->svc);
	if (snic_env_ulong("SANPROV_SOFTNIC_STATS", 0, 0, 1))
		fprintf(stderr, "softnic: %llu progress wake-ups for QPs, %llu QPs serviced\n",
			(unsigned long long)atomic_load(&dev->n_rings),
			(unsigned long long)atomic_load(&dev->n_serviced));
	pthread_mutex_destroy(&dev->svc_lock);
	snic_mr_table_fini(dev);
	snic_os_shm_destroy(&dev->seg_shm);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
	return 0;
}

int snic_query_device(struct vb_device *vdev, struct vb_device_attr *attr)
{
	struct snic_dev *dev = snic_dev_of(vdev);

	memset(attr, 0, sizeof(*attr));
	snprintf(attr->name, sizeof(attr->name), "%s", vdev->name);
	snprintf(attr->backend, sizeof(attr->backend), "%s", vdev->ops->name);
	attr->max_mr_size = (uint64_t)1 << 46;
	attr->page_size_cap = 4096;
	attr->max_mr = dev->max_mr;
	attr->max_pd = UINT32_MAX;
	attr->max_qp = dev->max_qp;
	attr->max_qp_wr = SNIC_MAX_QP_WR;
	attr->max_sge = SNIC_MAX_SGE;
	attr->max_cq = dev->max_cq;
	attr->max_cqe = SNIC_MAX_CQE;
	attr->max_inline_data = SNIC_MAX_INLINE;
	return 0;
}

int snic_query_port(struct vb_device *vdev, struct vb_port_attr *attr)
{
	(void)vdev;
	memset(attr, 0, sizeof(*attr));
	attr->state = VB_PORT_ACTIVE;
	attr->max_msg_sz = SNIC_MAX_MSG_SZ;
	attr->active_mtu = 4096;
	snprintf(attr->link_layer, sizeof(attr->link_layer), "%s", "softnic");
	return 0;
}

struct vb_pd *snic_alloc_pd(struct vb_device *vdev)
{
	struct snic_dev *dev = snic_dev_of(vdev);
	struct snic_pd *pd = calloc(1, sizeof(*pd));

	if (!pd) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&dev->lock);
	pd->vpd.handle = dev->next_pd++;
	dev->n_pd++;
	pthread_mutex_unlock(&dev->lock);
	pd->vpd.dev = vdev;
	return &pd->vpd;
}

int snic_dealloc_pd(struct vb_pd *vpd)
{
	struct snic_pd *pd = snic_pd_of(vpd);
	struct snic_dev *dev = snic_dev_of(vpd->dev);

	if (atomic_load(&pd->refs))
		return EBUSY;
	pthread_mutex_lock(&dev->lock);
	dev->n_pd--;
	pthread_mutex_unlock(&dev->lock);
	free(pd);
	return 0;
}
