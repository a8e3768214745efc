/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Memory regions: the shared MR table, key checks, and the buffers of
 * vb_buf_alloc() that peers can map directly.
 *
 * A key is slot | tag << log2(max_mr): the slot for the peer that looks
 * it up, and a tag that a secret permutation of the slot's registration
 * count gives (snic_key_make()), so that keys cannot be guessed from other
 * keys.  Slots are reused first-in first-out and a slot's tag comes back
 * only after 2^(32 - log2(max_mr)) of its registrations, so a stale rkey
 * stays invalid for as long as possible, as the key byte of a NIC's
 * memory key does for 256 registrations.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "snic.h"

int snic_mr_table_init(struct snic_dev *dev)
{
	int ret;

	dev->mr_free = malloc(sizeof(*dev->mr_free) * dev->max_mr);
	dev->mr_gen = malloc(sizeof(*dev->mr_gen) * dev->max_mr);
	if (!dev->mr_free || !dev->mr_gen) {
		ret = ENOMEM;
		goto err;
	}
	/* Each slot's count starts anywhere: keys say nothing of their neighbours'. */
	ret = snic_os_random(dev->mr_gen, sizeof(*dev->mr_gen) * dev->max_mr);
	if (!ret)
		ret = snic_os_random(dev->key_secret, sizeof(dev->key_secret));
	if (ret)
		goto err;
	for (uint32_t i = 0; i < dev->max_mr; i++)
		dev->mr_free[i] = i;
	dev->mr_free_head = 0;
	dev->mr_free_count = dev->max_mr;
	return 0;

err:
	free(dev->mr_free);
	free(dev->mr_gen);
	return ret;
}

void snic_mr_table_fini(struct snic_dev *dev)
{
	free(dev->mr_free);
	free(dev->mr_gen);
	free(dev->bufs);
}

const struct snic_mr_entry *snic_mr_get(const struct snic_dev_seg *seg, uint32_t max_mr,
					uint32_t key, uint32_t pd, uint32_t qpn, uint64_t addr,
					uint64_t len, unsigned int access, _Atomic uint32_t *hold)
{
	uint32_t slot = snic_key_slot(key, max_mr);
	const struct snic_mr_entry *e;
	uint64_t iova, length;
	uint32_t bound;

	if (!key || slot >= max_mr)
		return NULL;
	e = &seg->mr[slot];
	/*
	 * busy (or the hold) first, key second; dereg stores key = 0 first
	 * and looks at busy and the holds second.  Whichever comes last sees
	 * the other: either this access fails or dereg waits for it to end.
	 */
	if (hold)
		atomic_store(hold, key);
	else
		atomic_fetch_add(&((struct snic_mr_entry *)e)->busy, 1);
	if (atomic_load(&e->key) != key)
		goto fail;
	/* Read once: the checks and the caller see the same values. */
	iova = e->iova;
	length = e->length;
	bound = e->qpn;
	if (e->pd != pd || (e->access & access) != access)
		goto fail;
	/* A window serves its own QP's peer only, and never as a local key. */
	if (bound && bound != qpn)
		goto fail;
	if (addr < iova || len > length || addr - iova > length - len)
		goto fail;
	/*
	 * The key again, after the fields: values a rebinding wrote after it
	 * killed this key are never taken for the old key's (a seqlock's
	 * reader).  So only the QP the entry named under this key passes,
	 * and a window's key dies waiting for that QP's peer alone.
	 */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&e->key, memory_order_relaxed) != key)
		goto fail;
	return e;
fail:
	snic_mr_put(e, hold);
	return NULL;
}

static const struct snic_buf *buf_find(struct snic_dev *dev, uintptr_t addr, size_t len)
{
	for (uint32_t i = 0; i < dev->n_bufs; i++) {
		const struct snic_buf *b = &dev->bufs[i];
		if (addr >= b->base && addr - b->base <= b->len && len <= b->len - (addr - b->base))
			return b;
	}
	return NULL;
}

/* A free slot of the table, first in first out (dev->lock held, one is free). */
static uint32_t slot_take(struct snic_dev *dev)
{
	uint32_t slot = dev->mr_free[dev->mr_free_head];

	dev->mr_free_head = (dev->mr_free_head + 1) % dev->max_mr;
	dev->mr_free_count--;
	return slot;
}

static void slot_give(struct snic_dev *dev, uint32_t slot)
{
	dev->mr_free[(dev->mr_free_head + dev->mr_free_count) % dev->max_mr] = slot;
	dev->mr_free_count++;
}

struct vb_mr *snic_reg_mr(struct vb_pd *vpd, void *addr, size_t length, uint64_t iova,
			  unsigned int access)
{
	struct snic_dev *dev = snic_dev_of(vpd->dev);
	struct snic_mr *mr;
	struct snic_mr_entry *e;
	const struct snic_buf *buf;
	uint32_t slot, key;
	int ret;

	ret = vb_check_mr_args(addr, length, iova, access);
	if (ret)
		goto err;
	/* A NIC pins what it registers: unmapped or unwritable memory is EFAULT. */
	ret = snic_os_check_memory(addr, length, access & VB_ACCESS_LOCAL_WRITE);
	if (ret)
		goto err;
	mr = calloc(1, sizeof(*mr));
	if (!mr) {
		ret = ENOMEM;
		goto err;
	}

	pthread_mutex_lock(&dev->lock);
	if (!dev->mr_free_count) {
		pthread_mutex_unlock(&dev->lock);
		ret = ENOMEM;
		goto err_free;
	}
	slot = slot_take(dev);
	key = snic_key_make(dev->key_secret, dev->max_mr, slot, &dev->mr_gen[slot]);
	e = &dev->seg->mr[slot];
	e->qpn = 0;
	e->access = access;
	e->pd = vpd->handle;
	e->addr = (uintptr_t)addr;
	e->iova = iova;
	e->length = length;
	buf = buf_find(dev, (uintptr_t)addr, length);
	e->buf_fd = buf ? snic_os_handle_number(buf->fd) : -1;
	e->buf_ino = buf ? buf->ino : 0;
	e->buf_base = buf ? buf->base : 0;
	e->buf_len = buf ? buf->len : 0;
	dev->n_mr++;
	atomic_fetch_add(&snic_pd_of(vpd)->refs, 1);
	pthread_mutex_unlock(&dev->lock);

	mr->slot = slot;
	mr->vmr.pd = vpd;
	mr->vmr.addr = addr;
	mr->vmr.length = length;
	mr->vmr.iova = iova;
	mr->vmr.access = access;
	mr->vmr.lkey = mr->vmr.rkey = key;
	/* Publish last: the fields above are complete before the key is valid. */
	atomic_store_explicit(&e->key, mr->vmr.lkey, memory_order_release);
	return &mr->vmr;

err_free:
	free(mr);
err:
	errno = ret;
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool held_by_qp_peer(struct snic_qp *qp, uint32_t key)
{
	struct snic_qp_seg *ps;

	atomic_fetch_add_explicit(&qp->dev->n_hold_looks, 1, memory_order_relaxed);
	if (!atomic_load(&qp->connected) || !(ps = qp->peer.qp_seg))
		return false;
	for (int i = 0; i < SNIC_MAX_SGE; i++)
		if (atomic_load(&ps->held[i]) == key)
			return true;
	return false;
}

/*
 * Is a peer's access to key in flight?  Its QP announces it in its own
 * segment.  A region's key may come through any QP; a window's through the
 * QP it is bound to only (snic_mr_get()): its peer alone is looked at, or
 * none once the QP went (its destruction waited for them).
 */
static bool held_by_peer(struct snic_dev *dev, uint32_t key, struct snic_mw *mw)
{
	bool held = false;

	pthread_mutex_lock(&dev->lock);
	if (mw)
		held = mw->qp && held_by_qp_peer(mw->qp, key);
	else
		for (struct snic_qp *qp = dev->qp_list; qp && !held; qp = qp->next)
			held = held_by_qp_peer(qp, key);
	pthread_mutex_unlock(&dev->lock);
	return held;
}

/*
 * A QP that goes (destroy_qp) first waits for its peer's accesses to this
 * process's regions: after it, no QP lets dereg_mr see them.  The QP is in
 * the error state already, and a peer checks the state again after it
 * announced an access (take_remote()), so none starts once this looked.
 */
void snic_qp_wait_peer_holds(struct snic_qp *qp)
{
	struct snic_qp_seg *ps = qp->peer.qp_seg;
	uint64_t start = now_ms();
	unsigned int spins = 0;

	if (!ps || qp->peer.gone)
		return; /* never connected, or the peer and its copies are gone */
	for (int i = 0; i < SNIC_MAX_SGE; i++) {
		while (atomic_load(&ps->held[i])) {
			if (++spins < 1000) {
				sched_yield();
				continue;
			}
			if (now_ms() - start > qp->dev->dereg_timeout_ms) {
				fprintf(stderr,
					"sanprov softnic: QP %u's peer still announces an access "
					"after %u ms, letting it go\n",
					qp->vqp.qp_num, qp->dev->dereg_timeout_ms);
				return;
			}
			nanosleep(&(struct timespec){ .tv_nsec = 100000 }, NULL);
		}
	}
}

/*
 * Make key (the entry's key, or 0) invalid and wait for the accesses in
 * flight: mw's, a window's, or a region's (NULL).
 */
static void entry_kill(struct snic_dev *dev, struct snic_mr_entry *e, uint32_t key,
		       struct snic_mw *mw)
{
	uint64_t start = now_ms();
	unsigned int spins = 0;

	/* From here no new access starts; wait for those in flight. */
	atomic_store(&e->key, 0);
	while (key && (atomic_load(&e->busy) || held_by_peer(dev, key, mw))) {
		if (++spins < 1000) {
			sched_yield();
			continue;
		}
		/*
		 * Only a peer killed in the middle of a copy leaves an access
		 * announced for long (or one that lies): its copy died with it.
		 */
		if (now_ms() - start > dev->dereg_timeout_ms) {
			fprintf(stderr,
				"sanprov softnic: MR key 0x%x still busy after %u ms, "
				"releasing it\n",
				key, dev->dereg_timeout_ms);
			atomic_store(&e->busy, 0);
			break;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 100000 }, NULL);
	}
}

int snic_dereg_mr(struct vb_mr *vmr)
{
	struct snic_mr *mr = snic_mr_of(vmr);
	struct snic_dev *dev = snic_dev_of(vmr->pd->dev);
	struct snic_mr_entry *e = &dev->seg->mr[mr->slot];

	/* As a NIC: a region with windows bound to it stays. */
	if (atomic_load(&mr->windows))
		return EBUSY;
	entry_kill(dev, e, vmr->lkey, NULL);
	pthread_mutex_lock(&dev->lock);
	e->addr = e->iova = e->length = 0;
	e->buf_fd = -1;
	slot_give(dev, mr->slot);
	dev->n_mr--;
	atomic_fetch_sub(&snic_pd_of(vmr->pd)->refs, 1);
	pthread_mutex_unlock(&dev->lock);
	free(mr);
	return 0;
}

/*
 * Memory windows take a slot of the MR table (max_mr counts both, as a
 * NIC's key space does).  A bound window's entry is a copy of its part of
 * the region with the QP it serves; peers check it as they check a region
 * (snic_mr_get()), so a key handed to one connection's peer is refused on
 * any other QP, whatever PD that QP shares.
 */
struct vb_mw *snic_alloc_mw(struct vb_pd *vpd)
{
	struct snic_dev *dev = snic_dev_of(vpd->dev);
	struct snic_mw *mw = calloc(1, sizeof(*mw));

	if (!mw) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&dev->lock);
	if (!dev->mr_free_count) {
		pthread_mutex_unlock(&dev->lock);
		free(mw);
		errno = ENOMEM;
		return NULL;
	}
	mw->slot = slot_take(dev);
	dev->n_mr++;
	atomic_fetch_add(&snic_pd_of(vpd)->refs, 1);
	pthread_mutex_unlock(&dev->lock);
	mw->vmw.pd = vpd;
	return &mw->vmw;
}

/* Take mw out of its QP's list (dev->lock held). */
static void mw_qp_unlink(struct snic_mw *mw)
{
	if (!mw->qp)
		return;
	if (mw->qp_prev)
		mw->qp_prev->qp_next = mw->qp_next;
	else
		mw->qp->mws = mw->qp_next;
	if (mw->qp_next)
		mw->qp_next->qp_prev = mw->qp_prev;
	mw->qp = NULL;
	mw->qp_next = mw->qp_prev = NULL;
}

/*
 * As a NIC's type 2 window, which names its QP itself and not a number
 * that a later QP may get (softnic's wrap after 2^24): the keys die with
 * the QP.  The peer's accesses through the QP in flight are waited for by
 * its destruction (snic_qp_wait_peer_holds()).
 */
void snic_mw_qp_gone(struct snic_dev *dev, struct snic_qp *qp)
{
	while (qp->mws) {
		struct snic_mw *mw = qp->mws;

		atomic_store(&dev->seg->mr[mw->slot].key, 0);
		mw_qp_unlink(mw);
	}
}

/* Kill mw's key and let go of its region (no other call on mw meanwhile). */
static void mw_unbind(struct snic_dev *dev, struct snic_mw *mw)
{
	struct snic_mr_entry *e = &dev->seg->mr[mw->slot];

	entry_kill(dev, e, mw->vmw.rkey, mw);
	mw->vmw.rkey = 0;
	pthread_mutex_lock(&dev->lock);
	mw_qp_unlink(mw);
	pthread_mutex_unlock(&dev->lock);
	if (mw->mr) {
		atomic_fetch_sub(&mw->mr->windows, 1);
		mw->mr = NULL;
	}
}

int snic_bind_mw(struct vb_qp *vqp, struct vb_mw *vmw, struct vb_mr *vmr, void *addr, size_t length,
		 unsigned int access)
{
	struct snic_dev *dev = snic_dev_of(vqp->dev);
	struct snic_mw *mw = vb_container_of(vmw, struct snic_mw, vmw);
	struct snic_mr *mr = snic_mr_of(vmr);
	const struct snic_mr_entry *re = &dev->seg->mr[mr->slot];
	struct snic_mr_entry *e = &dev->seg->mr[mw->slot];
	uintptr_t a = (uintptr_t)addr, base = (uintptr_t)vmr->addr;

	if (vqp->pd != vmw->pd || vmr->pd != vmw->pd || !length ||
	    access & ~(unsigned int)(VB_ACCESS_REMOTE_READ | VB_ACCESS_REMOTE_WRITE) ||
	    !(vmr->access & VB_ACCESS_MW_BIND) ||
	    (access & VB_ACCESS_REMOTE_WRITE && !(vmr->access & VB_ACCESS_LOCAL_WRITE)) ||
	    a < base || length > vmr->length || a - base > vmr->length - length)
		return EINVAL;
	/* Bound once, as the verbs backend's windows (a NIC would need an invalidation). */
	if (mw->mr)
		return EBUSY;
	atomic_fetch_add(&mr->windows, 1);
	mw->mr = mr;
	pthread_mutex_lock(&dev->lock);
	vmw->rkey = snic_key_make(dev->key_secret, dev->max_mr, mw->slot, &dev->mr_gen[mw->slot]);
	e->qpn = vqp->qp_num;
	e->access = access;
	e->pd = vmw->pd->handle;
	e->addr = a;
	e->iova = 0; /* zero-based: the peer learns nothing of this address space */
	e->length = length;
	e->buf_fd = re->buf_fd;
	e->buf_ino = re->buf_ino;
	e->buf_base = re->buf_base;
	e->buf_len = re->buf_len;
	mw->qp = snic_qp_of(vqp);
	mw->qp_prev = NULL;
	mw->qp_next = mw->qp->mws;
	if (mw->qp_next)
		mw->qp_next->qp_prev = mw;
	mw->qp->mws = mw;
	pthread_mutex_unlock(&dev->lock);
	/* Publish last, as a registration does. */
	atomic_store_explicit(&e->key, vmw->rkey, memory_order_release);
	return 0;
}

int snic_dealloc_mw(struct vb_mw *vmw)
{
	struct snic_dev *dev = snic_dev_of(vmw->pd->dev);
	struct snic_mw *mw = vb_container_of(vmw, struct snic_mw, vmw);
	struct snic_mr_entry *e = &dev->seg->mr[mw->slot];

	mw_unbind(dev, mw);
	pthread_mutex_lock(&dev->lock);
	e->addr = e->iova = e->length = 0;
	e->qpn = 0;
	e->buf_fd = -1;
	slot_give(dev, mw->slot);
	dev->n_mr--;
	atomic_fetch_sub(&snic_pd_of(vmw->pd)->refs, 1);
	pthread_mutex_unlock(&dev->lock);
	free(mw);
	return 0;
}

void *snic_buf_alloc(struct vb_device *vdev, size_t length)
{
	struct snic_dev *dev = snic_dev_of(vdev);
	struct snic_shm shm;
	uint64_t id;
	size_t len;
	int ret;

	len = vb_buf_size(length);
	if (!len) {
		errno = EINVAL;
		return NULL;
	}
	ret = snic_os_shm_create(&shm, "sanprov-buf", len, false);
	if (ret)
		goto err;
	ret = snic_os_shm_id(shm.fd, &id);
	if (ret)
		goto err_shm;
	pthread_mutex_lock(&dev->lock);
	if (dev->n_bufs == dev->cap_bufs) {
		uint32_t cap = dev->cap_bufs ? dev->cap_bufs * 2 : 16;
		struct snic_buf *b = realloc(dev->bufs, cap * sizeof(*b));
		if (!b) {
			pthread_mutex_unlock(&dev->lock);
			ret = ENOMEM;
			goto err_shm;
		}
		dev->bufs = b;
		dev->cap_bufs = cap;
	}
	dev->bufs[dev->n_bufs++] =
	    (struct snic_buf){ .base = (uintptr_t)shm.addr, .len = len, .fd = shm.fd, .ino = id };
	pthread_mutex_unlock(&dev->lock);
	return shm.addr;

err_shm:
	snic_os_shm_destroy(&shm);
err:
	errno = ret;
	return NULL;
}

int snic_buf_free(struct vb_device *vdev, void *buf, size_t length)
{
	struct snic_dev *dev = snic_dev_of(vdev);
	size_t len = vb_buf_size(length);

	pthread_mutex_lock(&dev->lock);
	for (uint32_t i = 0; i < dev->n_bufs; i++) {
		struct snic_buf b = dev->bufs[i];
		if (b.base != (uintptr_t)buf)
			continue;
		if (b.len != len) {
			pthread_mutex_unlock(&dev->lock);
			return EINVAL;
		}
		dev->bufs[i] = dev->bufs[--dev->n_bufs];
		pthread_mutex_unlock(&dev->lock);
		snic_os_shm_destroy(&(struct snic_shm){ .fd = b.fd, .addr = buf, .len = b.len });
		return 0;
	}
	pthread_mutex_unlock(&dev->lock);
	return EINVAL;
}
