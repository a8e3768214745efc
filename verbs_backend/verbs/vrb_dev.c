/* SPDX-License-Identifier: BSD-2-Clause */
/* The verbs backend's device, PDs, MRs, CQs and buffers. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vrb.h"

static unsigned long env_ulong(const char *name, unsigned long def)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (!s || !*s)
		return def;
	v = strtoul(s, &end, 0);
	if (*end) {
		fprintf(stderr, "sanprov: ignoring %s=%s (expected a number)\n", name, s);
		return def;
	}
	return v;
}

struct vb_device *vrb_open_device(const struct vb_ops *ops, const char *name)
{
	struct ibv_device **list;
	struct ibv_device *found = NULL;
	struct vrb_dev *dev;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0 };
	int n, ret;

	list = ibv_get_device_list(&n);
	if (!list) {
		errno = errno ? errno : ENODEV;
		return NULL;
	}
	for (int i = 0; i < n && !found; i++)
		if (!name || !strcmp(ibv_get_device_name(list[i]), name))
			found = list[i];
	if (!found) {
		ibv_free_device_list(list);
		errno = ENODEV;
		return NULL;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev) {
		ret = ENOMEM;
		goto err_list;
	}
	dev->ctx = ibv_open_device(found);
	if (!dev->ctx) {
		ret = errno ? errno : ENODEV;
		goto err_free;
	}
	if (ibv_query_device(dev->ctx, &dev->attr)) {
		ret = errno ? errno : EIO;
		goto err_close;
	}
	/* Windows are the SPI's remote keys: without them, say so once, here. */
	dev->mw_type2 = dev->attr.max_mw > 0 &&
			(dev->attr.device_cap_flags &
			 (IBV_DEVICE_MEM_WINDOW_TYPE_2A | IBV_DEVICE_MEM_WINDOW_TYPE_2B));
	if (!dev->mw_type2)
		fprintf(stderr,
			"sanprov verbs: %s has no type 2 memory windows (max_mw %d): "
			"remote keys (vb_alloc_mw) fail with EOPNOTSUPP\n",
			ibv_get_device_name(found), dev->attr.max_mw);
	dev->port = (uint8_t)env_ulong("SANPROV_VERBS_PORT", 1);
	dev->gid_index = (int)env_ulong("SANPROV_VERBS_GID_INDEX", 0);
	dev->vdev.ops = ops;
	snprintf(dev->vdev.name, sizeof(dev->vdev.name), "%s", ibv_get_device_name(found));
	pthread_mutex_init(&dev->lock, NULL);
	dev->free_watched = UINT32_MAX;
	pthread_mutex_init(&dev->buf_lock, NULL);
	dev->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	dev->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (dev->epoll_fd < 0 || dev->stop_fd < 0 ||
	    epoll_ctl(dev->epoll_fd, EPOLL_CTL_ADD, dev->stop_fd, &ev) ||
	    fcntl(dev->ctx->async_fd, F_SETFL, fcntl(dev->ctx->async_fd, F_GETFL) | O_NONBLOCK) ||
	    epoll_ctl(dev->epoll_fd, EPOLL_CTL_ADD, dev->ctx->async_fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.u64 = 1 })) {
		ret = errno;
		goto err_fds;
	}
	ret = pthread_create(&dev->cm_thread, NULL, vrb_cm_thread, dev);
	if (ret)
		goto err_fds;
	ibv_free_device_list(list);
	return &dev->vdev;

err_fds:
	if (dev->epoll_fd >= 0)
		close(dev->epoll_fd);
	if (dev->stop_fd >= 0)
		close(dev->stop_fd);
	pthread_mutex_destroy(&dev->buf_lock);
	pthread_mutex_destroy(&dev->lock);
err_close:
	ibv_close_device(dev->ctx);
err_free:
	free(dev);
err_list:
	ibv_free_device_list(list);
	errno = ret;
	return NULL;
}

int vrb_close_device(struct vb_device *vdev)
{
	struct vrb_dev *dev = vrb_dev_of(vdev);

	if (atomic_load(&dev->objects))
		return EBUSY;
	(void)!write(dev->stop_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
	pthread_join(dev->cm_thread, NULL);
	ibv_close_device(dev->ctx);
	close(dev->epoll_fd);
	close(dev->stop_fd);
	free(dev->watched);
	/* As softnic: buffers not given back go with the device. */
	while (dev->bufs) {
		struct vrb_buf *b = dev->bufs;
		dev->bufs = b->next;
		munmap(b->addr, b->len);
		free(b);
	}
	pthread_mutex_destroy(&dev->buf_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
	return 0;
}

int vrb_query_device(struct vb_device *vdev, struct vb_device_attr *a)
{
	struct vrb_dev *dev = vrb_dev_of(vdev);
	const struct ibv_device_attr *d = &dev->attr;

	memset(a, 0, sizeof(*a));
	snprintf(a->name, sizeof(a->name), "%s", vdev->name);
	snprintf(a->backend, sizeof(a->backend), "%s", vdev->ops->name);
	a->max_mr_size = d->max_mr_size;
	a->page_size_cap = d->page_size_cap;
	a->max_mr = (uint32_t)d->max_mr;
	a->max_pd = (uint32_t)d->max_pd;
	a->max_qp = (uint32_t)d->max_qp;
	a->max_qp_wr = (uint32_t)d->max_qp_wr;
	a->max_sge = (uint32_t)d->max_sge;
	a->max_cq = (uint32_t)d->max_cq;
	a->max_cqe = (uint32_t)d->max_cqe;
	/* Verbs has no device-wide figure: the QP's cap.max_inline_data says what it got. */
	a->max_inline_data = 64;
	return 0;
}

int vrb_query_port(struct vb_device *vdev, struct vb_port_attr *a)
{
	struct vrb_dev *dev = vrb_dev_of(vdev);
	struct ibv_port_attr p;

	if (ibv_query_port(dev->ctx, dev->port, &p))
		return errno ? errno : EIO;
	memset(a, 0, sizeof(*a));
	a->state = p.state == IBV_PORT_ACTIVE ? VB_PORT_ACTIVE : VB_PORT_DOWN;
	a->max_msg_sz = p.max_msg_sz;
	a->active_mtu = 128u << p.active_mtu; /* IBV_MTU_256 = 1 */
	snprintf(a->link_layer, sizeof(a->link_layer), "%s",
		 p.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand");
	return 0;
}

struct vb_pd *vrb_alloc_pd(struct vb_device *vdev)
{
	struct vrb_pd *pd = calloc(1, sizeof(*pd));

	if (!pd) {
		errno = ENOMEM;
		return NULL;
	}
	pd->pd = ibv_alloc_pd(vrb_dev_of(vdev)->ctx);
	if (!pd->pd) {
		int ret = errno ? errno : ENOMEM;
		free(pd);
		errno = ret;
		return NULL;
	}
	pd->vpd.dev = vdev;
	pd->vpd.handle = pd->pd->handle;
	atomic_fetch_add(&vrb_dev_of(vdev)->objects, 1);
	return &pd->vpd;
}

int vrb_dealloc_pd(struct vb_pd *vpd)
{
	struct vrb_pd *pd = vb_container_of(vpd, struct vrb_pd, vpd);

	if (ibv_dealloc_pd(pd->pd))
		return errno ? errno : EBUSY;
	atomic_fetch_sub(&vrb_dev_of(vpd->dev)->objects, 1);
	free(pd);
	return 0;
}

struct vb_mr *vrb_reg_mr(struct vb_pd *vpd, void *addr, size_t length, uint64_t iova,
			 unsigned int access)
{
	struct vrb_pd *pd = vb_container_of(vpd, struct vrb_pd, vpd);
	struct vrb_mr *mr;
	int ret;

	ret = vb_check_mr_args(addr, length, iova, access);
	if (ret) {
		errno = ret;
		return NULL;
	}
	mr = calloc(1, sizeof(*mr));
	if (!mr) {
		errno = ENOMEM;
		return NULL;
	}
	mr->mr = iova == (uintptr_t)addr ? ibv_reg_mr(pd->pd, addr, length, (int)access)
					 : ibv_reg_mr_iova(pd->pd, addr, length, iova, (int)access);
	if (!mr->mr) {
		ret = errno ? errno : EINVAL;
		free(mr);
		errno = ret;
		return NULL;
	}
	mr->vmr.pd = vpd;
	mr->vmr.addr = addr;
	mr->vmr.length = length;
	mr->vmr.iova = iova;
	mr->vmr.access = access;
	mr->vmr.lkey = mr->mr->lkey;
	mr->vmr.rkey = mr->mr->rkey;
	atomic_fetch_add(&vrb_dev_of(vpd->dev)->objects, 1);
	return &mr->vmr;
}

int vrb_dereg_mr(struct vb_mr *vmr)
{
	struct vrb_mr *mr = vb_container_of(vmr, struct vrb_mr, vmr);

	struct vrb_dev *dev = vrb_dev_of(vmr->pd->dev);

	if (ibv_dereg_mr(mr->mr))
		return errno ? errno : EIO;
	atomic_fetch_sub(&dev->objects, 1);
	free(mr);
	return 0;
}

/* Type 2: bound by a work request to one QP, whose peer alone can use it. */
struct vb_mw *vrb_alloc_mw(struct vb_pd *vpd)
{
	struct vrb_pd *pd = vb_container_of(vpd, struct vrb_pd, vpd);
	struct vrb_mw *mw = calloc(1, sizeof(*mw));
	int ret;

	if (!mw) {
		errno = ENOMEM;
		return NULL;
	}
	if (!vrb_dev_of(vpd->dev)->mw_type2) {
		free(mw);
		errno = EOPNOTSUPP;
		return NULL;
	}
	mw->mw = ibv_alloc_mw(pd->pd, IBV_MW_TYPE_2);
	if (!mw->mw) {
		ret = errno ? errno : ENOMEM;
		free(mw);
		errno = ret;
		return NULL;
	}
	mw->vmw.pd = vpd;
	mw->vmw.rkey = mw->mw->rkey;
	atomic_fetch_add(&vrb_dev_of(vpd->dev)->objects, 1);
	return &mw->vmw;
}

int vrb_dealloc_mw(struct vb_mw *vmw)
{
	struct vrb_mw *mw = vb_container_of(vmw, struct vrb_mw, vmw);
	struct vrb_dev *dev = vrb_dev_of(vmw->pd->dev);

	/* Invalidates the window: the device ends accesses in flight first. */
	if (ibv_dealloc_mw(mw->mw))
		return errno ? errno : EIO;
	atomic_fetch_sub(&dev->objects, 1);
	free(mw);
	return 0;
}

/*
 * Anonymous pages of their own mapping: every verbs device registers them,
 * and freeing unmaps them, so a stale registration cannot outlive them
 * unnoticed.
 */
void *vrb_buf_alloc(struct vb_device *vdev, size_t length)
{
	struct vrb_dev *dev = vrb_dev_of(vdev);
	struct vrb_buf *b;
	size_t len;
	int ret;

	len = vb_buf_size(length);
	if (!len) {
		errno = EINVAL;
		return NULL;
	}
	b = malloc(sizeof(*b));
	if (!b) {
		errno = ENOMEM;
		return NULL;
	}
	b->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->addr == MAP_FAILED) {
		ret = errno;
		free(b);
		errno = ret;
		return NULL;
	}
	b->len = len;
	pthread_mutex_lock(&dev->buf_lock);
	b->next = dev->bufs;
	dev->bufs = b;
	pthread_mutex_unlock(&dev->buf_lock);
	return b->addr;
}

int vrb_buf_free(struct vb_device *vdev, void *buf, size_t length)
{
	struct vrb_dev *dev = vrb_dev_of(vdev);
	size_t len = vb_buf_size(length);
	struct vrb_buf **pp, *b;

	pthread_mutex_lock(&dev->buf_lock);
	for (pp = &dev->bufs; (b = *pp); pp = &b->next)
		if (b->addr == buf)
			break;
	if (!b || b->len != len) {
		pthread_mutex_unlock(&dev->buf_lock);
		return EINVAL;
	}
	*pp = b->next;
	pthread_mutex_unlock(&dev->buf_lock);
	munmap(b->addr, b->len);
	free(b);
	return 0;
}

struct vb_cq *vrb_create_cq(struct vb_device *vdev, int cqe)
{
	struct vrb_dev *dev = vrb_dev_of(vdev);
	struct vrb_cq *cq = calloc(1, sizeof(*cq));
	int ret, room = 0;

	if (!cq) {
		errno = ENOMEM;
		return NULL;
	}
	cq->channel = ibv_create_comp_channel(dev->ctx);
	if (!cq->channel) {
		ret = errno ? errno : ENOMEM;
		goto err_free;
	}
	/* The CQ's fd is polled; reading an event must never block. */
	fcntl(cq->channel->fd, F_SETFL, fcntl(cq->channel->fd, F_GETFL) | O_NONBLOCK);
	if (cqe < 1 || cqe > dev->attr.max_cqe) {
		ret = EINVAL;
		goto err_channel;
	}
	/*
	 * A CQ near the device's largest cannot grow at its first bind: its
	 * room for binds is kept now, out of what the caller asked (cqe says
	 * what is left).  Smaller ones grow when a QP on them binds.
	 */
	if (cqe > dev->attr.max_cqe - VRB_CQ_BIND_ROOM) {
		room = dev->attr.max_cqe / 4 < VRB_CQ_BIND_ROOM ? dev->attr.max_cqe / 4
								: VRB_CQ_BIND_ROOM;
		cqe = dev->attr.max_cqe;
	}
	cq->cq = ibv_create_cq(dev->ctx, cqe, cq, cq->channel, 0);
	if (!cq->cq) {
		ret = errno ? errno : EINVAL;
		goto err_channel;
	}
	cq->vcq.dev = vdev;
	cq->vcq.fd = cq->channel->fd;
	cq->vcq.cqe = cq->cq->cqe - room;
	cq->binds_room_given = room;
	atomic_store(&cq->bind_room, room);
	pthread_mutex_init(&cq->grow_lock, NULL);
	atomic_fetch_add(&dev->objects, 1);
	return &cq->vcq;

err_channel:
	ibv_destroy_comp_channel(cq->channel);
err_free:
	free(cq);
	errno = ret;
	return NULL;
}

int vrb_destroy_cq(struct vb_cq *vcq)
{
	struct vrb_cq *cq = vrb_cq_of(vcq);

	if (ibv_destroy_cq(cq->cq))
		return errno ? errno : EBUSY;
	atomic_fetch_sub(&vrb_dev_of(vcq->dev)->objects, 1);
	ibv_destroy_comp_channel(cq->channel);
	pthread_mutex_destroy(&cq->grow_lock);
	free(cq);
	return 0;
}

/*
 * Room for binds' completions, made at the first bind on the CQ: the CQ
 * grows by VRB_CQ_BIND_ROOM entries (the device resizes under its own CQ
 * lock, so pollers may run).  Later, room comes back as binds' completions
 * are polled.  0, or ENOMEM: the room is in use, or the device cannot grow.
 */
int vrb_cq_grow_bind_room(struct vrb_cq *cq)
{
	struct vrb_dev *dev = vrb_dev_of(cq->vcq.dev);
	int ret = 0, want;

	pthread_mutex_lock(&cq->grow_lock);
	if (atomic_load(&cq->bind_room) > 0)
		goto out; /* another bind grew it meanwhile, or a poll gave room back */
	if (cq->binds_room_given) {
		ret = ENOMEM; /* grown once: the binds in flight fill it until polled */
		goto out;
	}
	want = cq->cq->cqe + VRB_CQ_BIND_ROOM;
	if (want > dev->attr.max_cqe)
		want = dev->attr.max_cqe;
	if (want <= cq->cq->cqe || ibv_resize_cq(cq->cq, want)) {
		ret = ENOMEM;
		goto out;
	}
	/* The device may round up: everything past the caller's entries and the binds' is room. */
	atomic_fetch_add(&cq->bind_room, cq->cq->cqe - cq->vcq.cqe - cq->binds_room_given);
	cq->binds_room_given = cq->cq->cqe - cq->vcq.cqe;
out:
	pthread_mutex_unlock(&cq->grow_lock);
	return ret;
}

int vrb_req_notify_cq(struct vb_cq *vcq)
{
	return ibv_req_notify_cq(vrb_cq_of(vcq)->cq, 0) ? (errno ? errno : EIO) : 0;
}

int vrb_get_cq_event(struct vb_cq *vcq)
{
	struct vrb_cq *cq = vrb_cq_of(vcq);
	struct ibv_cq *ev_cq;
	void *ev_ctx;

	if (ibv_get_cq_event(cq->channel, &ev_cq, &ev_ctx))
		return errno == EAGAIN ? EAGAIN : EIO;
	ibv_ack_cq_events(ev_cq, 1);
	return 0;
}

int vrb_poll_cq(struct vb_cq *vcq, int max, struct vb_wc *wc, int *count)
{
	struct vrb_cq *cq = vrb_cq_of(vcq);
	struct ibv_wc w[32];
	int total = 0, binds = 0;

	*count = 0;
	if (max < 0)
		return EINVAL;
	while (total < max) {
		int want = max - total < 32 ? max - total : 32;
		int n = ibv_poll_cq(cq->cq, want, w);

		if (n < 0)
			return total ? 0 : EIO;
		int k = 0;

		for (int i = 0; i < n; i++) {
			/* A window's bind: its entry is the bind room's again, the caller never
			 * sees it. */
			if (w[i].wr_id == VB_WR_ID_RESERVED) {
				binds++;
				continue;
			}
			wc[total + k++] = (struct vb_wc){
				.wr_id = w[i].wr_id,
				.status = (enum vb_wc_status)w[i].status,
				.opcode = (enum vb_wc_opcode)w[i].opcode,
				.vendor_err = w[i].vendor_err,
				.byte_len = w[i].byte_len,
				.imm_data = ntohl(w[i].imm_data),
				.qp_num = w[i].qp_num,
				.wc_flags = w[i].wc_flags & IBV_WC_WITH_IMM ? VB_WC_WITH_IMM : 0,
			};
		}
		total += k;
		if (n < want)
			break;
	}
	if (binds)
		atomic_fetch_add(&cq->bind_room, binds);
	*count = total;
	/* As softnic: once drained, an overrun CQ says so, and keeps saying it. */
	if (!total && atomic_load(&cq->overrun))
		return EOVERFLOW;
	return 0;
}
