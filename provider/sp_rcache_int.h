/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Registration cache internals.
 *
 * Readers (the hit path) take no lock: the index is an AVL tree of
 * non-overlapping regions under a sequence lock.  A reader walks it with
 * relaxed atomic loads, takes a reference on the region it found, and
 * keeps the hit only if the sequence did not move meanwhile.  Regions
 * come from a type-stable pool that is freed only with the cache, so a
 * reader racing a writer never touches freed memory; a walk that a
 * rotation sends around in circles is cut off by a step bound and retried.
 *
 * A region's life: FREE (in the pool) -> LIVE (registered, maybe indexed)
 * -> DEAD (out of the index, held by users) -> GARBAGE (last reference
 * gone, waiting for deregistration) -> FREE.  The index holds one
 * reference while the region is indexed.  A reader's reference on a region
 * it then drops (the sequence moved) is balanced, and the state machine
 * makes sure only the DEAD -> GARBAGE step queues a region, once.
 */
#ifndef SANPROV_SP_RCACHE_INT_H
#define SANPROV_SP_RCACHE_INT_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>

#include "sp_rcache.h"

#define SP_RCACHE_PAGE 4096u
#define SP_RCACHE_MAX_DEPTH 96 /* > 1.44 log2(2^48): an AVL tree is never deeper */
#define SP_RCACHE_PENDING 64   /* queued invalidation ranges before they coalesce */
#define SP_RCACHE_SLAB 256     /* regions allocated at a time */

enum sp_rregion_state { SP_RR_FREE, SP_RR_LIVE, SP_RR_DEAD, SP_RR_GARBAGE };

struct sp_rregion {
	struct sp_region pub; /* stable while a reference is held */
	/* index: read by lock-free readers */
	_Atomic uintptr_t start;
	_Atomic uintptr_t end;
	_Atomic unsigned int access;
	_Atomic(struct sp_rregion *) left;
	_Atomic(struct sp_rregion *) right;
	int height; /* writer only */
	_Atomic uint32_t refs;
	_Atomic uint32_t state;
	_Atomic uint8_t touched; /* used since the LRU hand last passed */
	bool indexed;		 /* writer only */
	bool uncached;
	/* writer only: LRU order of indexed regions, most recent first */
	struct sp_rregion *lru_prev, *lru_next;
	/* lock-free stacks: garbage list, free pool */
	struct sp_rregion *_Atomic next_free;
};

struct sp_range {
	uintptr_t start, end;
};

/* Counters updated with relaxed atomics; each on its own line where hot. */
struct sp_rcache_counters {
	alignas(64) _Atomic uint64_t hits;
	alignas(64) _Atomic uint64_t misses;
	_Atomic uint64_t merges;
	_Atomic uint64_t unmerged_retries;
	_Atomic uint64_t evictions;
	_Atomic uint64_t invalidations;
	_Atomic uint64_t invalidated;
	_Atomic uint64_t registrations;
	_Atomic uint64_t registration_errors;
	_Atomic uint64_t deregistrations;
	_Atomic uint64_t no_buffers;
	_Atomic uint64_t uncached;
	_Atomic uint64_t regions;
	_Atomic uint64_t cached_regions;
	_Atomic uint64_t bytes_pinned;
};

struct sp_rcache {
	/* read-mostly: the hit path */
	alignas(64) _Atomic uint32_t seq; /* odd while the index changes */
	_Atomic uint32_t inv_pending;	  /* queued invalidations wait */
	_Atomic(struct sp_rregion *) root;
	bool lru_enabled;
	struct sp_rcache_config cfg;
	const struct sp_rcache_ops *ops;
	void *ctx;

	alignas(64) pthread_mutex_t lock; /* writers: index, LRU, pool slabs */
	struct sp_rregion *lru_head, *lru_tail;
	size_t n_cached;     /* indexed regions */
	size_t cached_bytes; /* bytes of indexed regions */
	void **slabs;
	size_t n_slabs, cap_slabs;

	struct sp_rregion *_Atomic garbage;
	struct sp_rregion *_Atomic free_pool;

	/* deferred invalidations: a short spinlock, never held while doing anything else */
	alignas(64) atomic_flag pending_lock;
	uint32_t n_pending;
	uint64_t pending_gen;
	struct sp_range pending[SP_RCACHE_PENDING];

	struct sp_rcache_counters stats;
};

static inline uintptr_t sp_page_floor(uintptr_t a)
{
	return a & ~(uintptr_t)(SP_RCACHE_PAGE - 1);
}

static inline uintptr_t sp_page_ceil(uintptr_t a)
{
	return (a + SP_RCACHE_PAGE - 1) & ~(uintptr_t)(SP_RCACHE_PAGE - 1);
}

static inline void sp_count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* sp_rcache_tree.c: the index; writers hold c->lock and bracket changes with seq. */
#define SP_TREE_RETRY ((struct sp_rregion *)1)
/* Lock-free: the region with the greatest start <= addr, NULL, or SP_TREE_RETRY. */
struct sp_rregion *sp_tree_floor(struct sp_rcache *c, uintptr_t addr);
/* Writer: the first region (lowest start) with start < end && r.end > start, or NULL. */
struct sp_rregion *sp_tree_first_overlap(struct sp_rcache *c, uintptr_t start, uintptr_t end);
void sp_tree_insert(struct sp_rcache *c, struct sp_rregion *r);
void sp_tree_remove(struct sp_rcache *c, struct sp_rregion *r);

/*
 * For tests: check the index (order, no overlap, AVL balance and heights),
 * the LRU list against it, and the counts.  0, or EUCLEAN with a reason
 * in *why.  Takes the lock.
 */
int sp_rcache_verify(struct sp_rcache *c, const char **why);

#endif
