/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * WSPRegisterMemory, WSPDeregisterMemory and the cache callback.
 *
 * A memory handle belongs to one socket and holds a region of the
 * provider's registration cache, which every socket shares (the same
 * buffer registered on two sockets is one registration).  Registering the
 * same buffer with the same
 * flags on the same socket again returns the same handle with one more
 * reference; the last deregistration gives the region back to the cache,
 * which keeps it registered, pinned and watched for the next time.
 */
#include <errno.h>
#include <stdlib.h>

#include "sp_internal.h"

unsigned int sp_mem_access(uint32_t flags)
{
	/*
	 * MEM_READ: the NIC reads it (a source); MEM_WRITE: the NIC writes it.
	 * Windows may be bound to every region, so that an RDMA registration
	 * of the same buffer shares it (sp_rdma.c).
	 */
	return VB_ACCESS_MW_BIND | (flags & SP_MEM_WRITE ? VB_ACCESS_LOCAL_WRITE : 0);
}

/*
 * A region of the process's cache over buf for flags, every page checked
 * for what the flags ask: 0, or a WSA error with nothing held.
 */
int sp_mem_region_get(void *buf, uint32_t len, uint32_t flags, struct sp_region **region)
{
	struct sp_rcache *cache = sp_watched_cache(sp_prov.cache);
	int ret = sp_rcache_get(cache, buf, len, sp_mem_access(flags), region);

	/* EFAULT: not all valid memory; ENOBUFS: a limit; others: the NIC. */
	if (ret)
		return ret == EINVAL ? SP_WSAEFAULT : sp_wsa_error(ret);
	ret = sp_mem_probe(buf, len, flags);
	if (ret)
		sp_rcache_put(cache, *region);
	return ret;
}

/*
 * A cache hit, or a handle given again, does not see a protection changed
 * since its region was made (no event reports mprotect): every page must
 * still allow what the flags ask.  0 or WSAEFAULT.
 */
int sp_mem_probe(const void *buf, uint32_t len, uint32_t flags)
{
	uintptr_t fault;

	return vb_mem_probe(buf, len, flags & SP_MEM_WRITE, &fault) ? SP_WSAEFAULT : 0;
}

int sp_mem_check_args(const void *buf, uint32_t len, uint32_t flags)
{
	if (!flags || flags & ~SP_MEM_READWRITE)
		return SP_WSAEINVAL;
	if (!buf || !len || (uintptr_t)buf + len < (uintptr_t)buf)
		return SP_WSAEFAULT;
	return 0;
}

#define SP_MEMH_FIRST_BUCKETS 16u

static uint32_t memh_bucket(const struct sp_sock *so, const void *addr, uint32_t len,
			    uint32_t flags)
{
	uint64_t k = (uintptr_t)addr ^ ((uint64_t)len << 20) ^ ((uint64_t)flags << 60);

	/* Fibonacci hashing: page-aligned addresses spread over the top bits. */
	return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & (so->memh_buckets - 1);
}

/* Double the buckets once there are more handles than buckets (socket lock held). */
static int memh_hash_grow(struct sp_sock *so)
{
	uint32_t n = so->memh_buckets ? 2 * so->memh_buckets : SP_MEMH_FIRST_BUCKETS;
	struct sp_memh **b = calloc(n, sizeof(*b)), **old = so->memh_hash;
	uint32_t old_n = so->memh_buckets;

	if (!b)
		return ENOMEM;
	so->memh_hash = b;
	so->memh_buckets = n;
	for (uint32_t i = 0; i < old_n; i++) {
		struct sp_memh *h, *next;

		for (h = old[i]; h; h = next) {
			uint32_t j = memh_bucket(so, h->addr, h->len, h->flags);

			next = h->hnext;
			h->hnext = b[j];
			b[j] = h;
		}
	}
	free(old);
	return 0;
}

/* The live handle of so for exactly this buffer and flags, or NULL (socket lock held). */
static struct sp_memh *memh_lookup(struct sp_sock *so, const void *addr, uint32_t len,
				   uint32_t flags)
{
	if (!so->memh_buckets)
		return NULL;
	for (struct sp_memh *h = so->memh_hash[memh_bucket(so, addr, len, flags)]; h; h = h->hnext)
		/* A handle whose region was dropped stands for old memory: map the current one. */
		if (h->addr == addr && h->len == len && h->flags == flags &&
		    !sp_region_dropped(h->region))
			return h;
	return NULL;
}

void *sp_register_memory(sp_socket s, void *buf, uint32_t len, uint32_t flags, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct sp_memh *h;
	int ret;

	if (!so)
		return NULL;
	ret = sp_mem_check_args(buf, len, flags);
	if (ret)
		goto out;
	pthread_mutex_lock(&so->lock);
	if (so->state != SP_SOCK_CONNECTED) {
		ret = so->closing ? SP_WSAENOTSOCK : SP_WSAENOTCONN;
		goto out_unlock;
	}
	h = memh_lookup(so, buf, len, flags);
	if (h) {
		ret = sp_mem_probe(buf, len, flags);
		if (ret)
			goto out_unlock;
		if (h->refs == UINT32_MAX) {
			ret = SP_WSAENOBUFS;
			goto out_unlock;
		}
		h->refs++;
		sp_stats_inc(&so->stats, SP_SC_MEM_REUSE);
		goto out_unlock;
	}
	if (so->memh_count >= so->memh_buckets && memh_hash_grow(so)) {
		ret = SP_WSAENOBUFS;
		goto out_unlock;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		ret = SP_WSAENOBUFS;
		goto out_unlock;
	}
	h->sock = so;
	h->addr = buf;
	h->len = len;
	h->flags = flags;
	h->refs = 1;
	ret = sp_mem_region_get(buf, len, flags, &h->region);
	if (ret)
		goto err_free;
	h->lkey = sp_watched_mr(h->region)->lkey;
	if (sp_htab_add(&sp_prov.mem, h, &h->handle)) {
		ret = SP_WSAENOBUFS;
		goto err_put;
	}
	h->prev = NULL;
	h->next = so->memh;
	if (so->memh)
		so->memh->prev = h;
	so->memh = h;
	uint32_t b = memh_bucket(so, buf, len, flags);
	h->hnext = so->memh_hash[b];
	so->memh_hash[b] = h;
	so->memh_count++;
	goto out_unlock;

err_put:
	sp_rcache_put(sp_watched_cache(sp_prov.cache), h->region);
err_free:
	free(h);
	h = NULL;
out_unlock:
	pthread_mutex_unlock(&so->lock);
out:
	sp_stats_inc(&so->stats, ret ? SP_SC_MEM_REG_ERR : SP_SC_MEM_REG);
	sp_sock_put(so);
	if (ret) {
		*err = ret;
		return NULL;
	}
	return (void *)(uintptr_t)h->handle;
}

static int memh_of(void *obj, void *so)
{
	return ((struct sp_memh *)obj)->sock == so;
}

/*
 * so's handle, or NULL.  Another socket's handle is as unknown here as a
 * forged one; its owner is read under the table's lock, while it cannot
 * be freed (so's lock held: so's own handles stay until it is dropped).
 */
static struct sp_memh *memh_find(struct sp_sock *so, const void *handle)
{
	return sp_htab_lookup_if(&sp_prov.mem, (uintptr_t)handle, memh_of, so);
}

/* Unlink and release h (socket lock held, h no longer busy). */
static void memh_free(struct sp_sock *so, struct sp_memh *h)
{
	struct sp_memh **pp = &so->memh_hash[memh_bucket(so, h->addr, h->len, h->flags)];

	/* A bucket holds about one handle: this walk is short. */
	while (*pp != h)
		pp = &(*pp)->hnext;
	*pp = h->hnext;
	if (h->prev)
		h->prev->next = h->next;
	else
		so->memh = h->next;
	if (h->next)
		h->next->prev = h->prev;
	so->memh_count--;
	sp_htab_remove(&sp_prov.mem, h->handle);
	sp_rcache_put(sp_watched_cache(sp_prov.cache), h->region);
	sp_stats_inc(&so->stats, SP_SC_MEMH_FREED);
	free(h);
}

int sp_deregister_memory(sp_socket s, void *handle, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	struct sp_memh *h;
	int ret = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	pthread_mutex_lock(&so->lock);
	h = memh_find(so, handle);
	if (!h)
		ret = SP_WSAEINVAL;
	else if (atomic_load(&h->busy))
		ret = SP_WSAEINVAL; /* a transfer uses it */
	else if (!--h->refs)
		memh_free(so, h);
	pthread_mutex_unlock(&so->lock);
	sp_stats_inc(&so->stats, ret ? SP_SC_MEM_DEREG_ERR : SP_SC_MEM_DEREG);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

int sp_mem_resolve(struct sp_sock *so, const struct sp_wsabufex *bufs, uint32_t n, uint32_t need,
		   struct vb_sge *sge, struct sp_op *op, uint32_t *total)
{
	struct sp_memh *hs[SP_OP_MAX_SGE];
	uint64_t sum = 0;

	if (n > SP_OP_MAX_SGE)
		return SP_WSAEINVAL;
	if (n && !bufs)
		return SP_WSAEFAULT;
	for (uint32_t i = 0; i < n; i++) {
		/* The socket's lock is held: a handle found here stays until the end. */
		struct sp_memh *h = memh_find(so, bufs[i].handle);
		uintptr_t a = (uintptr_t)bufs[i].buf;

		if (!h)
			return SP_WSAEINVAL;
		if ((h->flags & need) != need)
			return SP_WSAEFAULT;
		/* The buffer must lie inside what its handle registered. */
		if (a < (uintptr_t)h->addr || bufs[i].len > h->len ||
		    a - (uintptr_t)h->addr > h->len - bufs[i].len)
			return SP_WSAEFAULT;
		sge[i] = (struct vb_sge){ .addr = a, .length = bufs[i].len, .lkey = h->lkey };
		hs[i] = h;
		sum += bufs[i].len;
	}
	if (sum > UINT32_MAX)
		return SP_WSAEMSGSIZE;
	for (uint32_t i = 0; i < n; i++) {
		atomic_fetch_add(&hs[i]->busy, 1);
		op->memh[op->n_memh++] = hs[i];
	}
	*total = (uint32_t)sum;
	return 0;
}

void sp_mem_release_op(struct sp_op *op)
{
	for (uint32_t i = 0; i < op->n_memh; i++)
		atomic_fetch_sub(&op->memh[i]->busy, 1);
	op->n_memh = 0;
}

void sp_mem_release_socket(struct sp_sock *so)
{
	pthread_mutex_lock(&so->lock);
	while (so->memh)
		memh_free(so, so->memh);
	free(so->memh_hash);
	so->memh_hash = NULL;
	so->memh_buckets = 0;
	pthread_mutex_unlock(&so->lock);
}

int sp_memory_registration_cache_callback(void *addr, size_t size, int *err)
{
	size_t removed = 0;
	int ret = 0, error = 0;

	if (!err)
		return SP_SOCKET_ERROR;
	sp_stats_count(SP_PC_CACHE_CALLBACKS);
	/* The last cleanup's teardown waits for a callback in progress. */
	pthread_rwlock_rdlock(&sp_prov.life);
	if (!atomic_load(&sp_prov.startups))
		ret = SP_WSANOTINITIALISED;
	else if (sp_forked())
		ret = SP_WSAENETDOWN;
	else if (!addr || !size || (uintptr_t)addr + size < (uintptr_t)addr)
		ret = SP_WSAEINVAL;
	else
		/* One cache for every socket: no walk over them. */
		error = sp_rcache_invalidate(sp_watched_cache(sp_prov.cache), addr, size, &removed);
	pthread_rwlock_unlock(&sp_prov.life);
	if (ret)
		return sp_fail(err, ret);
	if (error)
		return sp_fail(err, SP_WSAEFAULT);
	/* Nothing was cached there: the switch is told so. */
	if (!removed)
		return sp_fail(err, SP_WSAEINVAL);
	return 0;
}
