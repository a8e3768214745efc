/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache: lookups, misses with merging and eviction,
 * invalidation, and the deferred deregistration of released regions.
 * See sp_rcache_int.h for how readers and writers share the index.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "sp_fork.h"
#include "sp_os.h"
#include "sp_rcache_int.h"
#include "vb.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define VICTIMS 64

/* In a child of a fork the parent's registrations are neither used nor released. */
static inline bool forked(const struct sp_rcache *c)
{
	return atomic_load_explicit(&sp_fork_generation, memory_order_relaxed) != c->fork_gen;
}

static VB_THREAD_LOCAL unsigned int thread_slot_plus1;
static _Atomic unsigned int next_thread_slot;

static inline void count_fast_hit(struct sp_rcache *c)
{
	unsigned int s = thread_slot_plus1;
	_Atomic uint64_t *n;

	if (!s)
		s = thread_slot_plus1 =
		    atomic_fetch_add(&next_thread_slot, 1) % SP_RCACHE_HIT_SLOTS + 1;
	n = &c->hit_slots[s - 1].n;
	ST(*n, LD(*n) + 1);
}

uintptr_t sp_region_start(const struct sp_region *r)
{
	return atomic_load_explicit(&((struct sp_region *)r)->start, memory_order_relaxed);
}

uintptr_t sp_region_end(const struct sp_region *r)
{
	return atomic_load_explicit(&((struct sp_region *)r)->end, memory_order_relaxed);
}

unsigned int sp_region_access(const struct sp_region *r)
{
	return atomic_load_explicit(&((struct sp_region *)r)->access, memory_order_relaxed);
}

void *sp_region_handle(const struct sp_region *r)
{
	return r->handle;
}

bool sp_region_dropped(const struct sp_region *r)
{
	/* uncached is set before the region is handed out and never changes after. */
	return !r->uncached && atomic_load_explicit(&((struct sp_region *)r)->state,
						    memory_order_acquire) != SP_RR_LIVE;
}

static void stack_push(struct sp_region *_Atomic *top, struct sp_region *r)
{
	struct sp_region *old = atomic_load(top);

	do
		ST(r->next_free, old);
	while (!atomic_compare_exchange_weak(top, &old, r));
}

/*
 * Drop a reference: true when the caller must release the region, as it
 * dropped the last reference of a region out of the index.  Only DEAD ->
 * GARBAGE releases: a reader's balanced reference on a region in any other
 * state ends here too and must do nothing.
 */
static SP_ALWAYS_INLINE bool drop_last(struct sp_region *r, bool usually_last)
{
	uint8_t dead = SP_RR_DEAD;

	if (__builtin_expect(atomic_fetch_sub(&r->refs, 1) != 1, !usually_last))
		return false;
	return atomic_compare_exchange_strong(&r->state, &dead, SP_RR_GARBAGE);
}

/*
 * Drop a reference; the last one of a region out of the index queues it
 * for deregistration.  In a child of a fork the count is the child's own
 * copy, and releasing the parent's registration is not the child's
 * business: the fork check waits for a last reference (a put that follows
 * a miss's registration call would pay a cache miss on the fork
 * generation for nothing).
 */
static SP_ALWAYS_INLINE void unref(struct sp_rcache *c, struct sp_region *r)
{
	if (sp_unlikely(drop_last(r, false)) && !forked(c))
		stack_push(&c->garbage, r);
}

/* Writer: keep a free region (no holder, no registration) for the next miss. */
static SP_ALWAYS_INLINE void pool_keep(struct sp_rcache *c, struct sp_region *r)
{
	ST(r->next_free, c->local_free);
	c->local_free = r;
}

/* Writer: deregister a region nobody holds any more; it is FREE after. */
static SP_ALWAYS_INLINE void dereg_locked(struct sp_rcache *c, struct sp_region *r)
{
	c->ops->dereg(c->ctx, r->handle);
	c->stats.writer_deregistrations++;
	c->stats.writer_bytes_deregistered += LD(r->end) - LD(r->start);
	atomic_store_explicit(&r->state, SP_RR_FREE, memory_order_release);
}

/* Writer: deregister a region nobody holds any more and keep it for the next miss. */
static SP_ALWAYS_INLINE void release_locked(struct sp_rcache *c, struct sp_region *r)
{
	dereg_locked(c, r);
	pool_keep(c, r);
}

/*
 * Writer: drop the index's reference to a region it just took out of the
 * index.  When that was the last one, the writer deregisters the region
 * itself: an eviction then costs a registration's deregistration and two
 * atomic operations, not a trip through the garbage list and the shared
 * pool (five more).
 */
static SP_ALWAYS_INLINE void unref_locked(struct sp_rcache *c, struct sp_region *r)
{
	if (sp_likely(drop_last(r, true)))
		release_locked(c, r);
}

/*
 * Writer, with the sequence odd: claim a region being evicted for the
 * miss that evicts it.  When the index's reference is the only one (no
 * reader took one before the sequence moved), one compare-and-swap turns
 * it into the two references a new region starts with, where dropping it
 * and staging a region from the pool would take three locked operations.
 * False when a reader holds it: it is then dropped the usual way.  Done
 * before the eviction's stores to the index and the LRU neighbour, lines
 * long out of the CPU cache: a locked operation waits for every store
 * before it.
 */
static SP_ALWAYS_INLINE bool claim_for_reuse(struct sp_region *r)
{
	uint32_t index_only = 1;

	return atomic_compare_exchange_strong(&r->refs, &index_only, 2);
}

/* Writer: give back a region make_room() handed out for reuse, unused. */
static void unrecycle(struct sp_rcache *c, struct sp_region *r)
{
	atomic_fetch_sub(&r->refs, 2);
	pool_keep(c, r);
}

/* Registrations and bytes deregistered so far, by the garbage collector and by writers. */
static inline uint64_t deregistered(const struct sp_rcache *c)
{
	return LD(c->stats.deregistrations) + c->stats.writer_deregistrations;
}

static inline uint64_t bytes_deregistered(const struct sp_rcache *c)
{
	return LD(c->stats.bytes_deregistered) + c->stats.writer_bytes_deregistered;
}

/* Deregister every region on the garbage list and return it to the pool. */
static void collect_garbage_list(struct sp_rcache *c)
{
	struct sp_region *r;

	/* The parent's registrations: a child leaves them alone. */
	if (forked(c))
		return;
	r = atomic_exchange(&c->garbage, NULL);

	while (r) {
		struct sp_region *next = LD(r->next_free);
		uint64_t len = LD(r->end) - LD(r->start);

		c->ops->dereg(c->ctx, r->handle);
		sp_count(&c->stats.deregistrations, 1);
		sp_count(&c->stats.bytes_deregistered, len);
		atomic_store_explicit(&r->state, SP_RR_FREE, memory_order_release);
		stack_push(&c->free_pool, r);
		r = next;
	}
}

/* Inline: most calls find nothing to do. */
static inline void collect_garbage(struct sp_rcache *c)
{
	if (sp_unlikely(atomic_load_explicit(&c->garbage, memory_order_relaxed)))
		collect_garbage_list(c);
}

/* Writer: a new slab of regions for the pool; NULL on ENOMEM. */
static struct sp_region *region_alloc_slab(struct sp_rcache *c)
{
	if (c->n_slabs == c->cap_slabs) {
		size_t cap = c->cap_slabs ? 2 * c->cap_slabs : 16;
		void **s = realloc(c->slabs, cap * sizeof(*s));
		if (!s)
			return NULL;
		c->slabs = s;
		c->cap_slabs = cap;
	}
	struct sp_region *slab = calloc(SP_RCACHE_SLAB, sizeof(*slab));
	if (!slab)
		return NULL;
	c->slabs[c->n_slabs++] = slab;
	for (int i = SP_RCACHE_SLAB - 1; i > 0; i--)
		pool_keep(c, &slab[i]);
	return &slab[0];
}

/* Writer: a region from the pool; the shared free stack is taken whole, once in a while. */
static inline struct sp_region *region_alloc(struct sp_rcache *c)
{
	struct sp_region *r = c->local_free;

	if (sp_unlikely(!r))
		r = c->local_free = atomic_exchange(&c->free_pool, NULL);
	if (sp_unlikely(!r))
		return region_alloc_slab(c);
	c->local_free = LD(r->next_free);
	/* The next miss's region: a pooled line is long out of the CPU cache. */
	if (sp_likely(c->local_free))
		__builtin_prefetch(c->local_free, 1);
	return r;
}

static void seq_begin(struct sp_rcache *c)
{
	ST(c->seq, LD(c->seq) + 1);
	atomic_thread_fence(memory_order_release);
}

static void seq_end(struct sp_rcache *c)
{
	atomic_store_explicit(&c->seq, LD(c->seq) + 1, memory_order_release);
}

static void lru_unlink(struct sp_rcache *c, struct sp_region *r)
{
	if (r->lru_prev)
		r->lru_prev->lru_next = r->lru_next;
	else
		c->lru_head = r->lru_next;
	if (r->lru_next)
		r->lru_next->lru_prev = r->lru_prev;
	else
		c->lru_tail = r->lru_prev;
	r->lru_prev = r->lru_next = NULL;
}

static void lru_push_head(struct sp_rcache *c, struct sp_region *r)
{
	r->lru_prev = NULL;
	r->lru_next = c->lru_head;
	if (c->lru_head)
		c->lru_head->lru_prev = r;
	else
		c->lru_tail = r;
	c->lru_head = r;
}

/* Writer, inside seq_begin/seq_end: take r out of the index (its reference is dropped later). */
static SP_ALWAYS_INLINE void index_remove(struct sp_rcache *c, struct sp_region *r)
{
	sp_index_remove(c, r);
	lru_unlink(c, r);
	r->indexed = false;
	c->n_cached--;
	atomic_store_explicit(&r->state, SP_RR_DEAD, memory_order_release);
}

/* Writer: remove every indexed region overlapping [start, end); returns how many. */
static size_t remove_overlapping(struct sp_rcache *c, uintptr_t start, uintptr_t end)
{
	struct sp_region *victims[VICTIMS];
	size_t total = 0, n;

	do {
		n = 0;
		seq_begin(c);
		while (n < VICTIMS && start < end) {
			struct sp_region *r = sp_index_first_overlap(c, start, end);
			if (!r)
				break;
			/* r was the lowest: nothing else overlaps below its end. */
			if (LD(r->end) > start)
				start = LD(r->end);
			index_remove(c, r);
			victims[n++] = r;
		}
		seq_end(c);
		for (size_t i = 0; i < n; i++)
			unref(c, victims[i]);
		total += n;
	} while (n == VICTIMS);
	return total;
}

/* Writer: apply the deferred invalidations queued so far. */
static void apply_pending_ranges(struct sp_rcache *c)
{
	struct sp_range ranges[SP_RCACHE_PENDING];
	uint32_t n;
	uint64_t gen;
	size_t removed = 0;

	/* A batch of memory events in flight: its invalidations are not all queued yet. */
	while (atomic_load(&c->event_holds))
		sched_yield();
	while (atomic_flag_test_and_set_explicit(&c->pending_lock, memory_order_acquire))
		;
	n = c->n_pending;
	memcpy(ranges, c->pending, n * sizeof(ranges[0]));
	c->n_pending = 0;
	gen = c->pending_gen;
	atomic_flag_clear_explicit(&c->pending_lock, memory_order_release);

	for (uint32_t i = 0; i < n; i++)
		removed += remove_overlapping(c, ranges[i].start, ranges[i].end);
	c->stats.invalidated += removed;

	/* Lookups may trust the index again only if nothing was queued meanwhile. */
	while (atomic_flag_test_and_set_explicit(&c->pending_lock, memory_order_acquire))
		;
	if (c->pending_gen == gen && !atomic_load(&c->event_holds))
		atomic_store(&c->inv_pending, 0);
	atomic_flag_clear_explicit(&c->pending_lock, memory_order_release);
}

/* Inline: most calls find nothing queued. */
static inline void apply_pending(struct sp_rcache *c)
{
	if (sp_unlikely(atomic_load(&c->inv_pending)))
		apply_pending_ranges(c);
}

/*
 * The hit path: no lock, no allocation, no write but the reference, the
 * hit counter and (with limits) the LRU mark.  NULL: take the slow path.
 */
static struct sp_region *lookup_fast(struct sp_rcache *c, uintptr_t start, uintptr_t end,
				     unsigned int access, uint32_t *miss_seq, struct sp_rdir **leaf)
{
	*miss_seq = 1; /* odd: no index state seen */
	for (int tries = 0; tries < 4; tries++) {
		uint32_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
		struct sp_region *r;

		if (sp_unlikely(s1 & 1))
			continue;
		r = sp_index_lookup_leaf(c, start, leaf);
		if (!r || LD(r->end) < end || (LD(r->access) & access) != access) {
			/* A miss in the index as of s1: the slow path looks again only if it moved.
			 */
			atomic_thread_fence(memory_order_acquire);
			if (sp_likely(LD(c->seq) == s1))
				*miss_seq = s1;
			return NULL;
		}
		atomic_fetch_add(&r->refs, 1);
		atomic_thread_fence(memory_order_acquire);
		if (LD(c->seq) == s1) {
			if (c->lru_enabled && !LD(r->touched))
				ST(r->touched, 1);
			return r;
		}
		unref(c, r);
	}
	return NULL;
}

/* Writer: a cached region covering the range, with a reference for the caller. */
static struct sp_region *lookup_locked(struct sp_rcache *c, uintptr_t start, uintptr_t end,
				       unsigned int access)
{
	struct sp_region *r = sp_index_lookup(c, start);

	if (!r || LD(r->end) < end || (LD(r->access) & access) != access)
		return NULL;
	atomic_fetch_add(&r->refs, 1);
	if (c->lru_enabled)
		ST(r->touched, 1);
	return r;
}

/*
 * Writer: evict the least recently used cached region nobody holds
 * (second chance for regions used since the hand passed).  Regions marked
 * for the merge in progress are left alone.  Returns the region, out of
 * the index, or NULL when every region is in use.  The region still holds
 * the index's reference, unless *claimed (asked for with claim): then it
 * holds the two of a new region (see claim_for_reuse()).
 */
static struct sp_region *evict_one(struct sp_rcache *c, const struct sp_region *const *keep,
				   size_t nkeep, bool claim, bool *claimed)
{
	struct sp_region *r = c->lru_tail;

	for (size_t steps = 0; r && steps < 2 * c->n_cached + 2; steps++) {
		struct sp_region *prev = r->lru_prev;
		bool kept = false;

		for (size_t i = 0; i < nkeep && !kept; i++)
			kept = keep[i] == r;
		if (sp_unlikely(kept)) {
			r = prev;
			continue;
		}
		/* The tail of the list is where regions nobody uses end up: the usual case. */
		if (sp_unlikely(LD(r->refs) > 1 || LD(r->touched))) {
			/*
			 * In use, or used lately: keep it, as the most recent.  (A hit
			 * that marks it again between the load and the store is lost:
			 * the region just loses its second chance.)
			 */
			ST(r->touched, 0);
			if (r != c->lru_head) {
				lru_unlink(c, r);
				lru_push_head(c, r);
			}
			r = prev ? prev : c->lru_tail;
			continue;
		}
		seq_begin(c);
		*claimed = claim && sp_likely(claim_for_reuse(r));
		index_remove(c, r);
		seq_end(c);
		c->stats.evictions++;
		return r;
	}
	return NULL;
}

/* Whether one more registration of len bytes fits, counting what the caller will release. */
static inline bool has_room(const struct sp_rcache *c, size_t len, size_t free_regions,
			    size_t free_bytes)
{
	size_t max_r = c->cfg.max_regions, max_b = c->cfg.max_bytes;
	size_t regions = (size_t)(c->stats.registrations - deregistered(c)),
	       bytes = (size_t)(c->stats.bytes_registered - bytes_deregistered(c));

	regions = regions > free_regions ? regions - free_regions : 0;
	bytes = bytes > free_bytes ? bytes - free_bytes : 0;
	return (!max_r || regions + 1 <= max_r) && (!max_b || bytes + len <= max_b);
}

static int make_room(struct sp_rcache *c, size_t len, size_t free_regions, size_t free_bytes,
		     const struct sp_region *const *keep, size_t nkeep, struct sp_region **spare)
{
	if (sp_unlikely(c->cfg.max_bytes && len > c->cfg.max_bytes))
		return ENOBUFS;
	do {
		bool claimed;
		struct sp_region *v = evict_one(c, keep, nkeep, spare && !*spare, &claimed);

		if (sp_unlikely(!v))
			return ENOBUFS;
		if (sp_likely(claimed)) {
			dereg_locked(c, v);
			*spare = v;
		} else {
			unref_locked(c, v);
		}
		collect_garbage(c);
	} while (!has_room(c, len, free_regions, free_bytes));
	return 0;
}

/*
 * Writer: make room for one more registration of len bytes, counting
 * free_regions/free_bytes that the caller will release anyway.  Evicts and
 * deregisters as needed.  ENOBUFS when everything left is in use.  Inline:
 * a cache below its limits (the usual miss) only compares.  With spare,
 * the first region evicted may come back in *spare for the caller's
 * registration (see claim_for_reuse(); the caller gives it back with
 * unrecycle() if it does not use it, on success or failure alike).
 */
static inline int ensure_room(struct sp_rcache *c, size_t len, size_t free_regions,
			      size_t free_bytes, const struct sp_region *const *keep, size_t nkeep,
			      struct sp_region **spare)
{
	if (sp_likely(has_room(c, len, free_regions, free_bytes)))
		return 0;
	return make_room(c, len, free_regions, free_bytes, keep, nkeep, spare);
}

/* The NIC refused a registration for want of room, not for the memory. */
static inline bool nic_full(int err)
{
	return err == ENOMEM || err == ENOBUFS;
}

/*
 * Writer: the NIC is out of room (its own limit, below the cache's):
 * evict the least recently used idle region, which deregisters it, so that
 * a retry may fit.  False when every cached region is in use.
 */
static bool evict_for_nic(struct sp_rcache *c, const struct sp_region *const *keep, size_t nkeep)
{
	bool claimed;
	struct sp_region *v = evict_one(c, keep, nkeep, false, &claimed);

	if (!v)
		return false;
	unref_locked(c, v);
	collect_garbage(c);
	return true;
}

/* Writer: a region taken from the pool gets its range and a fresh state. */
static SP_ALWAYS_INLINE void set_range(struct sp_region *r, uintptr_t start, uintptr_t end,
				       unsigned int access)
{
	ST(r->start, start);
	ST(r->end, end);
	ST(r->access, access);
	ST(r->touched, 0);
	r->uncached = false;
	r->indexed = false;
}

/*
 * Writer: a new region gets everything only writers see before its
 * registration call: its range, its two references (the index's and the
 * caller's; a recycled region has them already), its place at the head of
 * the LRU list, and the counts.  The call evicts much of what the CPU had
 * cached, so what is written before it is not paid for again after it; no
 * other writer runs meanwhile (the lock is held), and readers find the
 * region only once it is indexed.
 */
static SP_ALWAYS_INLINE void stage(struct sp_rcache *c, struct sp_region *r, uintptr_t start,
				   uintptr_t end, unsigned int access, bool recycled)
{
	/* The locked add first: it waits for the stores before it to drain. */
	if (sp_likely(!recycled))
		atomic_fetch_add(&r->refs, 2);
	set_range(r, start, end, access);
	lru_push_head(c, r);
	c->n_cached++;
	c->stats.registrations++;
	c->stats.bytes_registered += end - start;
}

/* Writer: undo stage(); a registration that was made stays counted. */
static void unstage(struct sp_rcache *c, struct sp_region *r, bool registered)
{
	size_t len = LD(r->end) - LD(r->start);

	atomic_fetch_sub(&r->refs, 2);
	lru_unlink(c, r);
	c->n_cached--;
	if (!registered) {
		c->stats.registrations--;
		c->stats.bytes_registered -= len;
	}
}

/* Register r's range: the handle, or NULL with errno set (and counted). */
static SP_ALWAYS_INLINE void *do_register(struct sp_rcache *c, struct sp_region *r,
					  unsigned int *flags)
{
	uintptr_t start = LD(r->start);
	void *handle;

	*flags = 0;
	handle = c->ops->reg(c->ctx, (void *)start, LD(r->end) - start, LD(r->access), flags);
	if (sp_unlikely(!handle)) {
		int err = errno ? errno : EIO;
		c->stats.registration_errors++;
		errno = err;
	}
	return handle;
}

/* Writer: a get that failed gives back its unused region, counts, and unlocks. */
static int get_failed(struct sp_rcache *c, struct sp_region *r, int ret)
{
	if (r)
		pool_keep(c, r);
	if (ret == ENOBUFS)
		c->stats.no_buffers++;
	sp_mutex_unlock(&c->lock);
	return ret;
}

/* Writer: hand out a registered region without caching it; it dies with its last put. */
static struct sp_region *hand_out_uncached(struct sp_rcache *c, struct sp_region *r)
{
	r->uncached = true;
	r->indexed = false;
	atomic_fetch_add(&r->refs, 1);
	atomic_store_explicit(&r->state, SP_RR_DEAD, memory_order_release);
	c->stats.uncached++;
	sp_mutex_unlock(&c->lock);
	return r;
}

/* A registration that is not cached: it dies with its last reference. */
static int get_uncached(struct sp_rcache *c, uintptr_t start, uintptr_t end, unsigned int access,
			struct sp_region **out)
{
	struct sp_region *r;
	unsigned int flags;
	void *handle;
	int ret;

	sp_mutex_lock(&c->lock);
	ret = c->cfg.enable ? ensure_room(c, end - start, 0, 0, NULL, 0, NULL) : 0;
	r = ret ? NULL : region_alloc(c);
	if (!ret && !r)
		ret = ENOMEM;
	if (ret)
		return get_failed(c, r, ret);
	set_range(r, start, end, access);
	handle = do_register(c, r, &flags);
	while (!handle && nic_full(errno) && evict_for_nic(c, NULL, 0))
		handle = do_register(c, r, &flags);
	if (!handle)
		return get_failed(c, r, errno);
	r->handle = handle;
	c->stats.registrations++;
	c->stats.bytes_registered += end - start;
	*out = hand_out_uncached(c, r);
	return 0;
}

/*
 * Writer: the cached regions the new one absorbs: every region that
 * overlaps or touches [*start, *end), transitively; widens the range and
 * the rights.  Returns how many (at most max), 0 when the merged region
 * would exceed the size limit; *touching is how many were found at all.
 */
static size_t merge_set(struct sp_rcache *c, uintptr_t *start, uintptr_t *end, unsigned int *access,
			struct sp_region **set, size_t max, size_t *touching)
{
	uintptr_t s = *start, e = *end;
	unsigned int acc = *access;
	size_t n = 0;

	for (;;) {
		/* Touching counts: a region that ends at s or starts at e joins. */
		struct sp_region *r = sp_index_first_overlap(c, s ? s - 1 : 0, e + 1);
		bool known = false;

		while (r) {
			for (size_t i = 0; i < n && !known; i++)
				known = set[i] == r;
			if (!known)
				break;
			/* Already in: look past it to the right. */
			uintptr_t next = LD(r->end);
			r = next <= e ? sp_index_first_overlap(c, next, e + 1) : NULL;
			known = false;
		}
		if (!r || n == max)
			break;
		set[n++] = r;
		if (LD(r->start) < s)
			s = LD(r->start);
		if (LD(r->end) > e)
			e = LD(r->end);
		acc |= LD(r->access);
	}
	*touching = n;
	if (c->cfg.max_region_size && e - s > c->cfg.max_region_size)
		return 0;
	*start = s;
	*end = e;
	*access = acc;
	return n;
}

static SP_ALWAYS_INLINE int get_slow(struct sp_rcache *c, uintptr_t start, uintptr_t end,
				     unsigned int access, uint32_t miss_seq, struct sp_rdir *leaf,
				     struct sp_region **out)
{
	struct sp_region *set[VICTIMS], *r, *spare = NULL;
	struct sp_index_slot one;
	uintptr_t mstart = start, mend = end;
	unsigned int macc = access, flags;
	size_t nset = 0, touching = 0, free_regions = 0, free_bytes = 0;
	int ret, prepared = -1;
	uint64_t given_back;
	void *handle;

	collect_garbage(c);
	sp_mutex_lock(&c->lock);
	apply_pending(c);
	/*
	 * The index unchanged since the lock-free lookup missed: no need to
	 * look again, and the directory it ended in is still the one for the
	 * range.  A small range with nothing around it there (most misses)
	 * needs no merge search and no walk to insert it.
	 */
	if (sp_likely(LD(c->seq) == miss_seq)) {
		r = NULL;
		if (sp_likely(leaf && sp_index_alone_in_leaf(leaf, start, end, &one)))
			prepared = 0;
	} else {
		r = lookup_locked(c, start, end, access);
	}
	if (sp_unlikely(r)) {
		sp_mutex_unlock(&c->lock);
		sp_count(&c->stats.hits, 1);
		*out = r;
		return 0;
	}
	c->stats.misses++;
	if (sp_unlikely(prepared && c->cfg.merge))
		nset = merge_set(c, &mstart, &mend, &macc, set, VICTIMS, &touching);
	if (sp_likely(!nset)) {
		mstart = start;
		mend = end;
		macc = access;
	}
	for (size_t i = 0; i < nset; i++)
		if (LD(set[i]->refs) == 1) {
			free_regions++;
			free_bytes += LD(set[i]->end) - LD(set[i]->start);
		}
	given_back = c->dirs_given_back;
	ret = ensure_room(c, mend - mstart, free_regions, free_bytes,
			  (const struct sp_region *const *)set, nset, &spare);
	if (sp_unlikely(ret && spare)) {
		unrecycle(c, spare);
		spare = NULL;
	}
	r = ret || spare ? spare : region_alloc(c);
	if (sp_unlikely(!ret && !r))
		ret = ENOMEM;
	if (sp_unlikely(ret))
		return get_failed(c, r, ret);
	/*
	 * Evictions only empty entries, so nothing came to touch the range;
	 * but one may have given back the directory found above.
	 */
	if (sp_unlikely(!prepared && c->dirs_given_back != given_back))
		prepared = -1;

	/*
	 * The index's directories too, unless cached regions are to be
	 * replaced first (removing them may give directories back).  When
	 * the merge search found no region even touching the range, none
	 * overlaps it.
	 */
	if (sp_unlikely(prepared && !touching && c->cfg.merge))
		prepared = sp_index_prepare(c, mstart, mend, &one);
	stage(c, r, mstart, mend, macc, r == spare);
	handle = do_register(c, r, &flags);
	if (sp_unlikely(!handle && (mstart != start || mend != end || macc != access))) {
		/* The merged range may reach memory that cannot be registered. */
		c->stats.unmerged_retries++;
		unstage(c, r, false);
		nset = touching = 0;
		mstart = start;
		mend = end;
		macc = access;
		prepared = -1;
		ret = ensure_room(c, mend - mstart, 0, 0, NULL, 0, NULL);
		if (ret)
			return get_failed(c, r, ret);
		stage(c, r, mstart, mend, macc, false);
		handle = do_register(c, r, &flags);
	}
	/* ENOMEM/ENOBUFS from the NIC: idle regions make room before the get fails. */
	while (sp_unlikely(!handle) && nic_full(errno) &&
	       evict_for_nic(c, (const struct sp_region *const *)set, nset))
		handle = do_register(c, r, &flags);
	if (sp_unlikely(!handle)) {
		ret = errno;
		unstage(c, r, false);
		return get_failed(c, r, ret);
	}
	r->handle = handle;
	if (sp_unlikely(flags & SP_RCACHE_REG_NOCACHE)) {
		/* The memory cannot be watched: it is registered for this use only. */
		unstage(c, r, true);
		*out = hand_out_uncached(c, r);
		return 0;
	}
	if (sp_unlikely(nset))
		c->stats.merges++;
	if (sp_unlikely(prepared < 0)) {
		/* The new region replaces every cached region inside its range. */
		remove_overlapping(c, mstart, mend);
		prepared = sp_index_prepare(c, mstart, mend, &one);
	}
	if (sp_unlikely(prepared)) {
		/* No memory for the index: hand the registration out uncached. */
		unstage(c, r, true);
		*out = hand_out_uncached(c, r);
		return 0;
	}
	atomic_store_explicit(&r->state, SP_RR_LIVE, memory_order_release);
	seq_begin(c);
	sp_index_insert(c, r, &one);
	seq_end(c);
	r->indexed = true;
	sp_mutex_unlock(&c->lock);
	collect_garbage(c);
	*out = r;
	return 0;
}

int sp_rcache_get(struct sp_rcache *c, void *addr, size_t len, unsigned int access,
		  struct sp_region **region)
{
	uintptr_t a = (uintptr_t)addr, start, end;
	struct sp_region *r = NULL;
	int ret;

	if (sp_unlikely(!len || a + len < a || a + len > UINTPTR_MAX - SP_RCACHE_PAGE ||
			(access & ~(unsigned int)VB_ACCESS_VALID)))
		return EINVAL;
	if (sp_unlikely(forked(c)))
		return EPERM;
	start = sp_page_floor(a);
	end = sp_page_ceil(a + len);
	if (sp_unlikely(!c->cfg.enable ||
			(c->cfg.max_region_size && end - start > c->cfg.max_region_size))) {
		ret = get_uncached(c, start, end, access, &r);
		if (!ret)
			*region = r;
		return ret;
	}
	uint32_t miss_seq = 1;
	struct sp_rdir *leaf = NULL;
	if (sp_likely(!atomic_load(&c->inv_pending))) {
		r = lookup_fast(c, start, end, access, &miss_seq, &leaf);
		if (r) {
			count_fast_hit(c);
			*region = r;
			return 0;
		}
	}
	ret = get_slow(c, start, end, access, miss_seq, leaf, &r);
	if (!ret)
		*region = r;
	return ret;
}

void sp_rcache_hold(struct sp_rcache *c, struct sp_region *region)
{
	(void)c;
	atomic_fetch_add(&region->refs, 1);
}

void sp_rcache_put(struct sp_rcache *c, struct sp_region *region)
{
	unref(c, region);
	collect_garbage(c);
}

int sp_rcache_invalidate(struct sp_rcache *c, void *addr, size_t len, size_t *removed)
{
	uintptr_t a = (uintptr_t)addr, end = a + len < a ? UINTPTR_MAX : a + len;
	size_t n;

	if (!len)
		return EINVAL;
	if (forked(c)) {
		if (removed)
			*removed = 0;
		return 0;
	}
	sp_count(&c->stats.invalidations, 1);
	sp_mutex_lock(&c->lock);
	apply_pending(c);
	n = remove_overlapping(c, a, end);
	c->stats.invalidated += n;
	sp_mutex_unlock(&c->lock);
	if (c->ops->changed)
		c->ops->changed(c->ctx, a, end);
	if (removed)
		*removed = n;
	return 0;
}

void sp_rcache_invalidate_deferred(struct sp_rcache *c, void *addr, size_t len)
{
	uintptr_t s = (uintptr_t)addr, e = s + len < s ? UINTPTR_MAX : s + len;
	uint32_t i;

	if (!len)
		return;
	sp_count(&c->stats.invalidations, 1);
	while (atomic_flag_test_and_set_explicit(&c->pending_lock, memory_order_acquire))
		;
	/* Coalesce with a queued range it overlaps or touches. */
	for (i = 0; i < c->n_pending; i++)
		if (c->pending[i].start <= e && s <= c->pending[i].end)
			break;
	if (i == c->n_pending && c->n_pending == SP_RCACHE_PENDING) {
		/* Full: widen the nearest range; invalidating more is always safe. */
		uintptr_t best = UINTPTR_MAX;
		for (uint32_t k = 0; k < c->n_pending; k++) {
			uintptr_t gap = c->pending[k].start > e ? c->pending[k].start - e
								: s - c->pending[k].end;
			if (gap < best) {
				best = gap;
				i = k;
			}
		}
	}
	if (i == c->n_pending) {
		c->pending[c->n_pending++] = (struct sp_range){ s, e };
	} else {
		if (s < c->pending[i].start)
			c->pending[i].start = s;
		if (e > c->pending[i].end)
			c->pending[i].end = e;
	}
	c->pending_gen++;
	atomic_store(&c->inv_pending, 1);
	atomic_flag_clear_explicit(&c->pending_lock, memory_order_release);
	/* Now, not when the queue is applied: a remote key over the range must die at once. */
	if (c->ops->changed && !forked(c))
		c->ops->changed(c->ctx, s, e);
}

static void pending_lock(struct sp_rcache *c)
{
	while (atomic_flag_test_and_set_explicit(&c->pending_lock, memory_order_acquire))
		;
}

void sp_rcache_events_begin(struct sp_rcache *c)
{
	pending_lock(c);
	atomic_fetch_add(&c->event_holds, 1);
	c->pending_gen++; /* an apply running now must not clear inv_pending */
	atomic_store(&c->inv_pending, 1);
	atomic_flag_clear_explicit(&c->pending_lock, memory_order_release);
}

void sp_rcache_events_end(struct sp_rcache *c)
{
	atomic_fetch_sub(&c->event_holds, 1);
}

size_t sp_rcache_evict_idle(struct sp_rcache *c, size_t n)
{
	size_t done = 0;

	if (forked(c))
		return 0;
	sp_mutex_lock(&c->lock);
	apply_pending(c);
	while (done < n && evict_for_nic(c, NULL, 0))
		done++;
	sp_mutex_unlock(&c->lock);
	collect_garbage(c);
	return done;
}

void sp_rcache_collect(struct sp_rcache *c)
{
	if (forked(c))
		return;
	if (atomic_load(&c->inv_pending)) {
		sp_mutex_lock(&c->lock);
		apply_pending(c);
		sp_mutex_unlock(&c->lock);
	}
	collect_garbage(c);
}

struct sp_rcache *sp_rcache_create(const struct sp_rcache_config *cfg,
				   const struct sp_rcache_ops *ops, void *ctx)
{
	struct sp_rcache *c;
	int ret;

	if (!cfg || !ops || !ops->reg || !ops->dereg) {
		errno = EINVAL;
		return NULL;
	}
	c = sp_os_aligned_alloc(64, sizeof(*c));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	ret = sp_mutex_init(&c->lock);
	if (ret) {
		sp_os_aligned_free(c);
		errno = ret;
		return NULL;
	}
	atomic_flag_clear(&c->pending_lock);
	c->cfg = *cfg;
	c->ops = ops;
	c->ctx = ctx;
	c->lru_enabled = cfg->max_regions || cfg->max_bytes;
	sp_fork_watch();
	c->fork_gen = atomic_load(&sp_fork_generation);
	return c;
}

static void free_memory(struct sp_rcache *c)
{
	sp_index_fini(c);
	for (size_t i = 0; i < c->n_slabs; i++)
		free(c->slabs[i]);
	free(c->slabs);
	sp_mutex_destroy(&c->lock);
	sp_os_aligned_free(c);
}

int sp_rcache_destroy(struct sp_rcache *c)
{
	if (!c)
		return 0;
	if (forked(c)) {
		/* The registrations are the parent's: only this copy's memory goes. */
		free_memory(c);
		return 0;
	}
	sp_mutex_lock(&c->lock);
	apply_pending(c);
	collect_garbage(c);
	for (struct sp_region *r = c->lru_head; r; r = r->lru_next)
		if (LD(r->refs) > 1)
			goto busy;
	if ((size_t)(c->stats.registrations - deregistered(c)) != c->n_cached)
		goto busy; /* uncached or invalidated regions still held */
	while (c->lru_head) {
		struct sp_region *r = c->lru_head;
		seq_begin(c);
		index_remove(c, r);
		seq_end(c);
		unref_locked(c, r);
	}
	collect_garbage(c);
	sp_mutex_unlock(&c->lock);
	if (c->cfg.print_stats) {
		struct sp_rcache_stats st;
		sp_rcache_get_stats(c, &st);
		sp_rcache_print_stats(&st, stderr);
	}
	free_memory(c);
	return 0;
busy:
	sp_mutex_unlock(&c->lock);
	return EBUSY;
}

void sp_rcache_get_stats(struct sp_rcache *c, struct sp_rcache_stats *s)
{
	struct sp_rcache_counters *k = &c->stats;

	sp_mutex_lock(&c->lock);
	s->misses = k->misses;
	s->merges = k->merges;
	s->unmerged_retries = k->unmerged_retries;
	s->evictions = k->evictions;
	s->invalidated = k->invalidated;
	s->registrations = k->registrations;
	s->registration_errors = k->registration_errors;
	s->no_buffers = k->no_buffers;
	s->uncached = k->uncached;
	s->cached_regions = c->n_cached;
	s->deregistrations = deregistered(c);
	s->bytes_pinned = k->bytes_registered - bytes_deregistered(c);
	sp_mutex_unlock(&c->lock);
	s->regions = s->registrations - s->deregistrations;
	s->hits = LD(k->hits);
	for (int i = 0; i < SP_RCACHE_HIT_SLOTS; i++)
		s->hits += LD(c->hit_slots[i].n);
	s->invalidations = LD(k->invalidations);
}
