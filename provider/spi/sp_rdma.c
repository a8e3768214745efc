/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * WSPRegisterRdmaMemory, WSPDeregisterRdmaMemory, WSPRdmaWrite, WSPRdmaRead.
 *
 * An RDMA registration holds a region of the shared registration cache
 * (the buffer stays registered, pinned and watched after it, for the next
 * transfer) and a memory window bound over the buffer to the socket's QP:
 * the descriptor's rkey is the window's, zero-based (the peer addresses
 * the buffer from 0: the descriptor carries no address of this process),
 * and only that connection's peer can use it, through that connection,
 * although every QP shares one PD.  Deregistering frees the window: from
 * then on the peer's rkey fails, whether or not the memory stays cached.
 * (docs/spi-memory.md says why windows.)
 *
 * When the memory under a registration changes (munmap, mremap, MAP_FIXED
 * over it, madvise: the proxy's events; or WSPMemoryRegistrationCacheCallback)
 * its window is freed at once: the registration is revoked.  The peer's
 * next access fails with a remote access error and moves nothing, where
 * softnic, which reaches memory by address, would otherwise reach the new
 * mapping.  A revoked registration stays until WSPDeregisterRdmaMemory,
 * which succeeds as for any other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_internal.h"
#include "sp_wire.h"

struct sp_rdma_reg {
	uint64_t token;
	struct sp_rdma_reg *next, *prev; /* in the socket's list */
	struct sp_sock *sock;
	struct sp_region *region;
	/* The window (NULL once revoked or being freed) and the live list: under live_lock. */
	struct vb_mw *mw;
	struct sp_rdma_reg *live_next, *live_prev;
	uintptr_t start, end; /* the buffer */
	uint32_t rkey;	      /* the descriptor's, to check a deregistration against */
	uint32_t flags;
	uint32_t len;
};

/*
 * Every registration whose window is bound, for the memory-change hook,
 * which runs on the proxy's event thread: nothing under live_lock
 * allocates, frees memory or waits for another lock, so no thread that
 * changes memory can hold it while the event thread waits.  The hook walks
 * the list (the registrations alive, usually few); an empty list costs it
 * one load.
 *
 * The last memory changes, for a registration racing one: it notes
 * live_gen before its cache lookup and, when changes came meanwhile, looks
 * here whether one overlaps its buffer (then its region may be the old
 * memory's: it starts again).
 */
#define RECENT 8
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sp_rdma_reg *live;
static _Atomic uint32_t n_live;
static uint64_t live_gen; /* memory changes seen so far */
static struct sp_range_rec {
	uintptr_t start, end;
} recent[RECENT]; /* change g is recent[g % RECENT] */
static _Atomic uint64_t revoked;

static bool overlaps(uintptr_t s1, uintptr_t e1, uintptr_t s2, uintptr_t e2)
{
	return s1 < e2 && s2 < e1;
}

/* live_lock held: a change since gen may have reached [start, end). */
static bool changed_since(uint64_t gen, uintptr_t start, uintptr_t end)
{
	if (live_gen - gen > RECENT)
		return true; /* some are forgotten: assume the worst */
	for (uint64_t g = gen; g < live_gen; g++)
		if (overlaps(recent[g % RECENT].start, recent[g % RECENT].end, start, end))
			return true;
	return false;
}

/* live_lock held. */
static void live_link(struct sp_rdma_reg *r)
{
	r->live_prev = NULL;
	r->live_next = live;
	if (live)
		live->live_prev = r;
	live = r;
	atomic_fetch_add(&n_live, 1);
}

static void live_unlink(struct sp_rdma_reg *r)
{
	if (r->live_prev)
		r->live_prev->live_next = r->live_next;
	else
		live = r->live_next;
	if (r->live_next)
		r->live_next->live_prev = r->live_prev;
	r->live_next = r->live_prev = NULL;
	atomic_fetch_sub(&n_live, 1);
}

void sp_rdma_memory_changed(void *arg, uintptr_t start, uintptr_t end)
{
	(void)arg;
	pthread_mutex_lock(&live_lock);
	recent[live_gen % RECENT] = (struct sp_range_rec){ start, end };
	live_gen++;
	if (!atomic_load_explicit(&n_live, memory_order_relaxed)) {
		pthread_mutex_unlock(&live_lock);
		return;
	}
	for (struct sp_rdma_reg *r = live, *next; r; r = next) {
		next = r->live_next;
		if (!overlaps(r->start, r->end, start, end))
			continue;
		/*
		 * The rkey dies before this returns (accesses in flight end
		 * first).  A window the NIC will not free stays listed, for
		 * the next change or the deregistration.
		 */
		if (vb_dealloc_mw(r->mw))
			continue;
		r->mw = NULL;
		live_unlink(r);
		atomic_fetch_add(&revoked, 1);
	}
	pthread_mutex_unlock(&live_lock);
}

uint64_t sp_rdma_revoked(void)
{
	return atomic_load_explicit(&revoked, memory_order_relaxed);
}

static unsigned int rdma_access(uint32_t flags)
{
	unsigned int a = 0;

	if (flags & SP_MEM_READ)
		a |= VB_ACCESS_REMOTE_READ;
	if (flags & SP_MEM_WRITE)
		a |= VB_ACCESS_REMOTE_WRITE;
	return a;
}

/* A window of the provider's PD; when the NIC is out of keys, idle cached regions make room. */
static struct vb_mw *rdma_mw_alloc(void)
{
	struct vb_mw *mw = vb_alloc_mw(sp_prov.pd);

	while (!mw && (errno == ENOMEM || errno == ENOBUFS) &&
	       sp_rcache_evict_idle(sp_watched_cache(sp_prov.cache), 1))
		mw = vb_alloc_mw(sp_prov.pd);
	return mw;
}

int sp_register_rdma_memory(sp_socket s, void *buf, uint32_t len, uint32_t flags, void *desc,
			    uint32_t *desc_len, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct sp_rcache *cache;
	struct sp_rdma_reg *r;
	struct sp_rdma_desc d;
	bool probe = false;
	uint64_t gen;
	int ret = 0, tries = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	if (!desc_len) {
		ret = SP_WSAEFAULT;
		goto out;
	}
	/* The switch's size probe: too small, here is what it takes. */
	if (!desc || *desc_len < sizeof(d)) {
		*desc_len = sizeof(d);
		probe = true;
		ret = SP_WSAEFAULT;
		goto out;
	}
	ret = sp_mem_check_args(buf, len, flags);
	if (ret)
		goto out;
	r = calloc(1, sizeof(*r));
	if (!r) {
		ret = SP_WSAENOBUFS;
		goto out;
	}
	r->sock = so;
	r->flags = flags;
	r->len = len;
	r->start = (uintptr_t)buf;
	r->end = (uintptr_t)buf + len;
	cache = sp_watched_cache(sp_prov.cache);
again:
	pthread_mutex_lock(&live_lock);
	gen = live_gen;
	pthread_mutex_unlock(&live_lock);
	/* Outside the socket's lock: a miss registers. */
	ret = sp_mem_region_get(buf, len, flags, &r->region);
	if (ret)
		goto err_free;
	r->mw = rdma_mw_alloc();
	if (!r->mw) {
		ret = sp_wsa_error(errno);
		goto err_put;
	}
	pthread_mutex_lock(&so->lock);
	if (so->state != SP_SOCK_CONNECTED || !so->qp) {
		ret = SP_WSAENOTCONN;
		goto err_unlock;
	}
	ret = vb_bind_mw(so->qp, r->mw, sp_watched_mr(r->region), buf, len, rdma_access(flags));
	if (ret) {
		ret = ret == EINVAL ? SP_WSAEFAULT : sp_wsa_error(ret);
		goto err_unlock;
	}
	r->rkey = r->mw->rkey;
	/*
	 * Listed for the memory-change hook before the peer can learn the
	 * rkey; a change since the lookup may have left the region the old
	 * memory's: then again, with what is mapped now.
	 */
	pthread_mutex_lock(&live_lock);
	if (changed_since(gen, r->start, r->end)) {
		pthread_mutex_unlock(&live_lock);
		pthread_mutex_unlock(&so->lock);
		vb_dealloc_mw(r->mw);
		sp_rcache_put(cache, r->region);
		if (++tries < 8)
			goto again;
		ret = SP_WSAEFAULT; /* the memory keeps changing under the call */
		goto err_free;
	}
	live_link(r);
	pthread_mutex_unlock(&live_lock);
	if (sp_htab_add(&sp_prov.rdma, r, &r->token)) {
		ret = SP_WSAENOBUFS;
		goto err_unlive;
	}
	r->prev = NULL;
	r->next = so->rdma;
	if (so->rdma)
		so->rdma->prev = r;
	so->rdma = r;
	pthread_mutex_unlock(&so->lock);

	sp_desc_fill(&d, flags, r->rkey, len, 0, r->token);
	memcpy(desc, &d, sizeof(d));
	*desc_len = sizeof(d);
	sp_stats_inc(&so->stats, SP_SC_RDMA_REG);
	sp_sock_put(so);
	return 0;

err_unlive:
	pthread_mutex_lock(&live_lock);
	if (r->mw)
		live_unlink(r);
	pthread_mutex_unlock(&live_lock);
err_unlock:
	pthread_mutex_unlock(&so->lock);
	if (r->mw)
		vb_dealloc_mw(r->mw);
err_put:
	sp_rcache_put(cache, r->region);
err_free:
	free(r);
out:
	sp_stats_inc(&so->stats, probe ? SP_SC_RDMA_PROBE : SP_SC_RDMA_REG_ERR);
	sp_sock_put(so);
	return sp_fail(err, ret);
}

static int rdma_of(void *obj, void *so)
{
	return ((struct sp_rdma_reg *)obj)->sock == so;
}

/* Unlink r (socket lock held); rdma_free() ends it once the lock is dropped. */
static void rdma_unlink(struct sp_sock *so, struct sp_rdma_reg *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		so->rdma = r->next;
	if (r->next)
		r->next->prev = r->prev;
	sp_htab_remove(&sp_prov.rdma, r->token);
}

/*
 * The rkey dies (accesses in flight end first), unless a memory change
 * revoked it already; the region goes back to the cache.
 */
static void rdma_free(struct sp_sock *so, struct sp_rdma_reg *r)
{
	struct vb_mw *mw;
	int ret = 0;

	pthread_mutex_lock(&live_lock);
	mw = r->mw;
	if (mw) {
		live_unlink(r);
		r->mw = NULL;
	}
	pthread_mutex_unlock(&live_lock);
	if (mw)
		ret = vb_dealloc_mw(mw);
	/* A window the NIC will not free keeps its region registered (leaked, never reused). */
	if (!ret)
		sp_rcache_put(sp_watched_cache(sp_prov.cache), r->region);
	sp_stats_inc(&so->stats, SP_SC_RDMA_FREED);
	free(r);
}

int sp_deregister_rdma_memory(sp_socket s, void *desc, uint32_t desc_len, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct sp_rdma_reg *r = NULL;
	struct sp_rdma_desc d;
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	ret = sp_desc_take(desc, desc_len, &d);
	pthread_mutex_lock(&so->lock);
	if (!ret) {
		r = sp_htab_lookup_if(&sp_prov.rdma, d.token, rdma_of, so);
		/* Only this socket's own descriptors, exactly as handed out. */
		if (!r || r->flags != d.flags || r->rkey != d.rkey || r->len != d.len || d.base) {
			r = NULL;
			ret = SP_WSAEINVAL;
		} else {
			rdma_unlink(so, r);
		}
	}
	pthread_mutex_unlock(&so->lock);
	if (r)
		rdma_free(so, r);
	sp_stats_inc(&so->stats, ret ? SP_SC_RDMA_DEREG_ERR : SP_SC_RDMA_DEREG);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

void sp_rdma_release_socket(struct sp_sock *so)
{
	struct sp_rdma_reg *r;

	for (;;) {
		pthread_mutex_lock(&so->lock);
		r = so->rdma;
		if (r)
			rdma_unlink(so, r);
		pthread_mutex_unlock(&so->lock);
		if (!r)
			break;
		rdma_free(so, r);
	}
}

static int rdma_xfer(enum sp_op_kind kind, sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs,
		     void *target_desc, uint32_t target_desc_len, uint32_t target_offset,
		     uint32_t *bytes, uint32_t flags, struct sp_overlapped *ov, sp_completion_fn cr,
		     int *err)
{
	bool write = kind == SP_OP_RDMA_WRITE;
	struct sp_sock *so = sp_sock_get(s, err);
	struct vb_sge sge[SP_OP_MAX_SGE];
	struct sp_rdma_desc d;
	struct sp_op *op;
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	/* Always overlapped; the switch never asks for completion routines. */
	ret = !ov ? SP_WSAEINVAL : cr ? SP_WSAEOPNOTSUPP : flags ? SP_WSAEINVAL : 0;
	if (!ret)
		ret = sp_desc_take(target_desc, target_desc_len, &d);
	if (!ret && !(d.flags & (write ? SP_MEM_WRITE : SP_MEM_READ)))
		ret = SP_WSAEINVAL; /* the peer did not register it for this */
	if (ret) {
		sp_sock_put(so);
		return sp_fail(err, ret);
	}
	ret = sp_op_begin(so, kind, ov, cr, bufs, nbufs, sge, &op);
	if (!ret && op->bytes > so->max_rdma)
		ret = SP_WSAEMSGSIZE;
	/* Checked here for a clean error: the NIC would refuse it and break the connection. */
	if (!ret && (target_offset > d.len || op->bytes > d.len - target_offset))
		ret = SP_WSAEINVAL;
	if (!ret) {
		struct vb_send_wr wr = { .wr_id = op->handle,
					 .sg_list = sge,
					 .num_sge = (int)nbufs,
					 .opcode = write ? VB_WR_RDMA_WRITE : VB_WR_RDMA_READ,
					 .send_flags = VB_SEND_SIGNALED,
					 .remote_addr = (uint64_t)d.base + target_offset,
					 .rkey = d.rkey },
				  *bad;
		ret = vb_post_send(so->qp, &wr, &bad);
		ret = ret ? sp_wsa_error(ret) : 0;
	}
	return sp_op_end(so, op, ret, bytes, err);
}

int sp_rdma_write(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
		  uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes, uint32_t flags,
		  struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err)
{
	(void)tid;
	return rdma_xfer(SP_OP_RDMA_WRITE, s, bufs, nbufs, target_desc, target_desc_len,
			 target_offset, bytes, flags, ov, cr, err);
}

int sp_rdma_read(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
		 uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes, uint32_t flags,
		 struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err)
{
	(void)tid;
	return rdma_xfer(SP_OP_RDMA_READ, s, bufs, nbufs, target_desc, target_desc_len,
			 target_offset, bytes, flags, ov, cr, err);
}
