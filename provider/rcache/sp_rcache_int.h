/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Registration cache internals.
 *
 * Readers (the hit path) take no lock: the index is a radix page table of
 * non-overlapping regions under a sequence lock.  A reader walks it with
 * relaxed atomic loads, takes a reference on the region it found, and
 * keeps the hit only if the sequence did not move meanwhile.  Regions and
 * directories are type-stable (pools freed only with the cache), so a
 * reader racing a writer never touches freed memory.
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

#include <stdalign.h>
#include <stdatomic.h>

#include <stddef.h>

#include "sp_mutex.h"
#include "sp_rcache.h"

#define SP_RCACHE_PAGE 4096u
#define SP_RCACHE_RADIX_BITS 9
#define SP_RCACHE_RADIX_LEVELS 4 /* 36 bits of page number: 48-bit addresses */
#define SP_RCACHE_MAX_ADDR ((uintptr_t)1 << (12 + SP_RCACHE_RADIX_BITS * SP_RCACHE_RADIX_LEVELS))
#define SP_RCACHE_PENDING 64	/* queued invalidation ranges before they coalesce */
#define SP_RCACHE_SLAB 256	/* regions allocated at a time */
#define SP_RCACHE_HIT_SLOTS 128 /* per-thread hit counters */

/*
 * For the frames a miss returns through after the registration system
 * call: the kernel's own calls leave the return-stack predictor holding
 * nothing of ours, so each user frame left to unwind costs a mispredicted
 * return, a measurable share of a cheap registration.
 */
#define SP_ALWAYS_INLINE inline __attribute__((always_inline))

/*
 * The same system call also leaves the branch predictors holding little of
 * ours: a branch it has no history for is predicted to fall through.  The
 * miss path marks its rare cases, so that its usual one is straight-line
 * code that such a prediction gets right.
 */
#define sp_likely(x) __builtin_expect(!!(x), 1)
#define sp_unlikely(x) __builtin_expect(!!(x), 0)

enum sp_rregion_state { SP_RR_FREE, SP_RR_LIVE, SP_RR_DEAD, SP_RR_GARBAGE };

struct sp_region {
	/*
	 * One cache line, all of it: a hit reads start/end/access and writes
	 * refs, its caller reads handle, and nothing else; with the radix index
	 * no lookup touches a region other than the one it finds.  64 bytes a
	 * region keeps a large cache's working set small.
	 */
	alignas(64) _Atomic uintptr_t start;
	_Atomic uintptr_t end;
	void *handle; /* written before the region is published */
	_Atomic unsigned int access;
	_Atomic uint32_t refs;
	_Atomic uint8_t state;
	_Atomic uint8_t touched; /* used since the LRU hand last passed */
	bool indexed;		 /* writer only */
	bool uncached;
	/* writer only: LRU order of indexed regions, most recent first */
	struct sp_region *lru_prev, *lru_next;
	/*
	 * Out of the index, the link of the lock-free stacks (garbage list,
	 * free pool); in it, the directory that holds its first entry, so that
	 * its removal needs no walk.  Never both at once.
	 */
	union {
		struct sp_region *_Atomic next_free;
		struct sp_rdir *dir; /* writer only */
	};
};

_Static_assert(sizeof(struct sp_region) == 64, "a region is one cache line");

/* A radix directory (sp_rcache_index.c); an entry with the low bit set is a region. */
#define SP_RDIR_TAG_REGION ((uintptr_t)1)
struct sp_rdir {
	_Atomic uintptr_t e[1u << SP_RCACHE_RADIX_BITS];
	uint32_t used;	      /* writer only: non-empty entries */
	struct sp_rdir *next; /* writer only: free list */
};

struct sp_range {
	uintptr_t start, end;
};

/*
 * Counters.  Those a lock-free path touches (hits, the garbage collector's,
 * deferred invalidations) are relaxed atomics; the rest change only under
 * the cache lock and are plain.  The first five are what every miss reads
 * or writes: they share a cache line with the cache's other per-miss
 * fields (struct sp_rcache).
 */
struct sp_rcache_counters {
	/* under c->lock (regions and bytes pinned are these minus the two below): */
	uint64_t misses;
	uint64_t registrations;
	uint64_t bytes_registered;
	/* the garbage collector's, lock-free: */
	_Atomic uint64_t deregistrations;
	_Atomic uint64_t bytes_deregistered;
	/* the rest, under c->lock (an eviction touches the first three): */
	uint64_t evictions;
	uint64_t writer_deregistrations; /* released at once by a writer, see unref_locked() */
	uint64_t writer_bytes_deregistered;
	uint64_t merges;
	uint64_t unmerged_retries;
	uint64_t invalidated;
	uint64_t registration_errors;
	uint64_t no_buffers;
	uint64_t uncached;
	/* lock-free: */
	_Atomic uint64_t invalidations;
	_Atomic uint64_t hits; /* hits on the slow path */
};

/*
 * Hits on the fast path are counted per thread, without a locked
 * instruction: each thread owns a slot (threads beyond SP_RCACHE_HIT_SLOTS
 * share, and two sharing threads that hit at the same instant may lose a
 * count).
 */
struct sp_hit_slot {
	alignas(64) _Atomic uint64_t n;
};

/*
 * Laid out by cache line for the two paths that matter.  A hit reads the
 * first line only.  A miss is cheap work around a registration system
 * call that evicts much of what the CPU had cached, so what it touches is
 * packed into the first three lines: each line more is a cache miss before
 * the call and another after it.
 */
struct sp_rcache {
	/* read-mostly: the hit path, and the settings every get reads */
	alignas(64) _Atomic uint32_t seq; /* odd while the index changes */
	_Atomic uint32_t inv_pending;	  /* queued invalidations wait */
	unsigned int fork_gen; /* sp_fork_generation when created: another means a child */
	bool lru_enabled;
	_Atomic(struct sp_rdir *) root;
	struct sp_rcache_config cfg;
	const struct sp_rcache_ops *ops;

	/* writers: the lock and the per-miss fields */
	alignas(64) struct sp_mutex lock; /* writers: index, LRU, pool slabs */
	struct sp_region *lru_head;
	struct sp_region *local_free;	   /* writer only: taken from free_pool in batches */
	struct sp_region *_Atomic garbage; /* pushed by anyone */
	alignas(64) size_t n_cached;	   /* indexed regions */
	void *ctx;
	struct sp_rcache_counters stats; /* its first five share this line */

	/* writers: the rest */
	struct sp_region *lru_tail;
	void **slabs;
	size_t n_slabs, cap_slabs;
	struct sp_rdir **dirs; /* every directory, to free them with the cache */
	size_t n_dirs, cap_dirs;
	struct sp_rdir *dir_free;
	uint64_t dirs_given_back; /* directories unlinked so far: a saved one may be stale */
	struct sp_region *_Atomic free_pool; /* pushed by anyone */
	_Atomic uint32_t event_holds;	     /* memory-event batches in flight */

	/* deferred invalidations: a short spinlock, never held while doing anything else */
	alignas(64) atomic_flag pending_lock;
	uint32_t n_pending;
	uint64_t pending_gen;
	struct sp_range pending[SP_RCACHE_PENDING];

	struct sp_hit_slot hit_slots[SP_RCACHE_HIT_SLOTS];
};

_Static_assert(offsetof(struct sp_rcache, ops) < 64, "the read-mostly fields fit a line");
_Static_assert(offsetof(struct sp_rcache, garbage) < 128,
	       "the lock's line holds the miss's fields");
_Static_assert(offsetof(struct sp_rcache, stats.bytes_deregistered) < 192,
	       "a miss's counters share the line of n_cached");

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

/* sp_rcache_index.c: the index; writers hold c->lock and bracket changes with seq. */
static inline unsigned int sp_rdir_idx(uint64_t page, int level)
{
	return (unsigned int)(page >> (SP_RCACHE_RADIX_BITS * level)) &
	       ((1u << SP_RCACHE_RADIX_BITS) - 1);
}

/*
 * Lock-free (inline: the hit path): the region holding addr's page, or
 * NULL; *leaf is the last-level directory of addr's page when the walk
 * reached it, else NULL.
 */
static inline struct sp_region *sp_index_lookup_leaf(struct sp_rcache *c, uintptr_t addr,
						     struct sp_rdir **leaf)
{
	uint64_t page = addr / SP_RCACHE_PAGE;
	/* Acquire: a directory published meanwhile is seen with its empty entries. */
	struct sp_rdir *d = atomic_load_explicit(&c->root, memory_order_acquire);
	uintptr_t e;

	*leaf = NULL;
	if (sp_unlikely(!d || page >> (SP_RCACHE_RADIX_BITS * SP_RCACHE_RADIX_LEVELS)))
		return NULL;
	/*
	 * A loop, not unrolled: after the registration call a miss runs with
	 * cold predictors, and every unrolled branch is one more they miss
	 * (measured: an unrolled walk made the miss 3 % slower).
	 */
	for (int level = SP_RCACHE_RADIX_LEVELS - 1; level > 0; level--) {
		e = atomic_load_explicit(&d->e[sp_rdir_idx(page, level)], memory_order_acquire);
		if (sp_unlikely(!e))
			return NULL;
		if (sp_unlikely(e & SP_RDIR_TAG_REGION))
			return (struct sp_region *)(e & ~SP_RDIR_TAG_REGION);
		d = (struct sp_rdir *)e;
	}
	*leaf = d;
	e = atomic_load_explicit(&d->e[sp_rdir_idx(page, 0)], memory_order_relaxed);
	return e & SP_RDIR_TAG_REGION ? (struct sp_region *)(e & ~SP_RDIR_TAG_REGION) : NULL;
}

static inline struct sp_region *sp_index_lookup(struct sp_rcache *c, uintptr_t addr)
{
	struct sp_rdir *leaf;

	return sp_index_lookup_leaf(c, addr, &leaf);
}

/* Writer: the region at the lowest page of [start, end) (bytes), or NULL. */
struct sp_region *sp_index_first_overlap(struct sp_rcache *c, uintptr_t start, uintptr_t end);
/*
 * Where a range goes when its entries are known before the insertion:
 * count consecutive entries from e, all in directory owner (one block, or
 * the pages of a range inside one last-level directory).  e NULL: the
 * insertion walks the index.
 */
struct sp_index_slot {
	_Atomic uintptr_t *e;
	struct sp_rdir *owner;
	unsigned int count;
};
/* Writer, before seq_begin: create the directories [start, end) needs. 0, ENOMEM, ERANGE. */
int sp_index_prepare(struct sp_rcache *c, uintptr_t start, uintptr_t end,
		     struct sp_index_slot *one);
/*
 * Writer, with the index unchanged since a lookup of start's page found
 * leaf: true when [start, end) lies inside leaf with empty entries on both
 * sides, so that nothing overlaps or touches it, and then *one is where it
 * goes (sp_index_prepare is not needed).  False: ask the general way.
 * Inline, as the insertion below: the usual miss.
 */
static inline bool sp_index_alone_in_leaf(struct sp_rdir *leaf, uintptr_t start, uintptr_t end,
					  struct sp_index_slot *one)
{
	uint64_t p = start / SP_RCACHE_PAGE, n = end / SP_RCACHE_PAGE - p;
	unsigned int first = sp_rdir_idx(p, 0);
	uintptr_t any;

	/* The pages before and after must be in leaf too: [first - 1, first + n]. */
	if (sp_unlikely(!first || first + n + 1 > (1u << SP_RCACHE_RADIX_BITS)))
		return false;
	/* Straight-line for the first page and its neighbours; a loop only for more pages. */
	any = atomic_load_explicit(&leaf->e[first - 1], memory_order_relaxed) |
	      atomic_load_explicit(&leaf->e[first], memory_order_relaxed) |
	      atomic_load_explicit(&leaf->e[first + n], memory_order_relaxed);
	if (sp_unlikely(n > 1))
		for (unsigned int i = first + 1; i < first + n; i++)
			any |= atomic_load_explicit(&leaf->e[i], memory_order_relaxed);
	if (sp_unlikely(any))
		return false;
	one->e = &leaf->e[first];
	one->owner = leaf;
	one->count = (unsigned int)n;
	return true;
}

void sp_index_insert_slow(struct sp_rcache *c, struct sp_region *r);

/* Writer, inside seq_begin/seq_end, after sp_index_prepare of r's range: cannot fail. */
static inline void sp_index_insert(struct sp_rcache *c, struct sp_region *r,
				   const struct sp_index_slot *one)
{
	if (sp_unlikely(!one->e)) {
		sp_index_insert_slow(c, r);
		return;
	}
	r->dir = one->owner;
	atomic_store_explicit(&one->e[0], (uintptr_t)r | SP_RDIR_TAG_REGION, memory_order_relaxed);
	if (sp_unlikely(one->count > 1))
		for (unsigned int i = 1; i < one->count; i++)
			atomic_store_explicit(&one->e[i], (uintptr_t)r | SP_RDIR_TAG_REGION,
					      memory_order_relaxed);
	one->owner->used += one->count;
}
void sp_index_remove_slow(struct sp_rcache *c, struct sp_region *r, bool emptied);

/*
 * Writer, inside seq_begin/seq_end: take r out of the index.  Inline for
 * a region inside one last-level directory (the usual one): that
 * directory is the one its insertion noted, no walk needed unless it
 * empties.  (Nonempty, it cannot have been given back meanwhile.)
 */
static inline void sp_index_remove(struct sp_rcache *c, struct sp_region *r)
{
	uint64_t p = atomic_load_explicit(&r->start, memory_order_relaxed) / SP_RCACHE_PAGE,
		 e = atomic_load_explicit(&r->end, memory_order_relaxed) / SP_RCACHE_PAGE;
	const uint64_t fan = 1u << SP_RCACHE_RADIX_BITS;
	struct sp_rdir *d = r->dir;

	if (sp_unlikely(p / fan != (e - 1) / fan || e - p >= fan)) {
		sp_index_remove_slow(c, r, false);
		return;
	}
	for (uint64_t q = p; q < e; q++)
		atomic_store_explicit(&d->e[sp_rdir_idx(q, 0)], 0, memory_order_relaxed);
	d->used -= (uint32_t)(e - p);
	if (sp_unlikely(!d->used))
		sp_index_remove_slow(c, r, true);
}
void sp_index_fini(struct sp_rcache *c);

/*
 * For tests: check the index (entries inside their regions, no overlap,
 * directory counts), the LRU list against it, and the counts.  0, or EPROTO with a reason
 * in *why.  Takes the lock.
 */
int sp_rcache_verify(struct sp_rcache *c, const char **why);

#endif
