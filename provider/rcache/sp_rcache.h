/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache: registered memory regions kept for reuse, keyed
 * by page-aligned virtual address range and access rights, never stale.
 *
 * A lookup that finds a cached region covering the range with enough
 * rights is a hit: it takes no lock and allocates nothing.  A miss
 * registers the range (merged with the cached regions it overlaps or
 * touches) through the caller's ops, usually the verbs_backend.
 *
 * Every region a caller holds stays registered until its last reference
 * is released, even when an invalidation or an eviction has already
 * taken it out of the cache.  Deregistration never happens inside an
 * invalidation: regions whose last reference drops there wait on a
 * garbage list that the next cache call (or sp_rcache_collect()) empties.
 *
 * In a child of fork() a cache made before the fork serves nothing (get:
 * EPERM) and releases nothing: its registrations are the parent's.
 *
 * Errors: 0 or a positive errno; constructors return NULL and set errno.
 */
#ifndef SANPROV_SP_RCACHE_H
#define SANPROV_SP_RCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sp_rcache;

/* A registered region; what sp_region_*() return is stable while a reference is held. */
struct sp_region;

/* The registered range [start, end), page aligned, and its VB_ACCESS_* rights. */
uintptr_t sp_region_start(const struct sp_region *region);
uintptr_t sp_region_end(const struct sp_region *region);
unsigned int sp_region_access(const struct sp_region *region);
/* What ops->reg returned: a struct vb_mr * for sp_rcache_vb_ops (sp_watched_cache.h). */
void *sp_region_handle(const struct sp_region *region);
/*
 * The region no longer stands for its range's current memory: an
 * invalidation or an eviction took it out of the cache.  (A region handed
 * out uncached was never watched: nothing tells.)  Its registration lasts
 * until its last put.
 */
bool sp_region_dropped(const struct sp_region *region);

/* Set by ops->reg: registered, but changes to the memory cannot be watched. */
#define SP_RCACHE_REG_NOCACHE 1u

struct sp_rcache_ops {
	/*
	 * Register [addr, addr + len) with access: the registration's handle,
	 * or NULL with errno set.  *flags starts 0; SP_RCACHE_REG_NOCACHE hands
	 * the region out without caching it.  (A handle returned, not stored:
	 * a backend's own registration call can then be a tail call.)
	 */
	void *(*reg)(void *ctx, void *addr, size_t len, unsigned int access, unsigned int *flags);
	void (*dereg)(void *ctx, void *handle);
	/*
	 * Optional: the memory of [start, end) changed (an invalidation, not an
	 * eviction or a merge, which change no memory), so a region over it,
	 * cached or held, no longer stands for what is mapped there.  Called
	 * by sp_rcache_invalidate() and sp_rcache_invalidate_deferred() before
	 * they return, in their caller's thread, without the cache's lock, for
	 * every range they are given, whether a region was found or not (a held
	 * region may already be out of the index): whoever handed a region's
	 * memory to someone else (a remote key) takes it back here.  It must
	 * not call the cache, and from a memory-event thread it must not wait
	 * for a thread that may be changing memory.
	 */
	void (*changed)(void *ctx, uintptr_t start, uintptr_t end);
};

struct sp_rcache_config {
	bool enable;		/* false: every get registers, the last put deregisters */
	bool merge;		/* merge overlapping and adjacent regions */
	bool print_stats;	/* print the statistics to stderr when the cache is destroyed */
	size_t max_regions;	/* cached regions at most; 0: no limit */
	size_t max_bytes;	/* registered bytes at most; 0: no limit */
	size_t max_region_size; /* larger requests are registered but not cached; 0: no limit */
};

/*
 * Defaults, then the environment:
 *   SANPROV_RCACHE=0|1            enable (1)
 *   SANPROV_RCACHE_MERGE=0|1      merge (1)
 *   SANPROV_RCACHE_MAX_REGIONS=N  (0: unlimited; default 16384)
 *   SANPROV_RCACHE_MAX_BYTES=N    (0: unlimited; default 0), K/M/G suffixes
 *   SANPROV_RCACHE_MAX_REGION=N   (0: unlimited; default 0), K/M/G suffixes
 *   SANPROV_RCACHE_STATS=0|1      print statistics at destroy (0)
 * A malformed value is reported on stderr and the default kept.
 */
void sp_rcache_config_init(struct sp_rcache_config *cfg);

struct sp_rcache_stats {
	uint64_t hits;
	uint64_t misses;
	uint64_t merges;	   /* misses that merged cached regions into a larger one */
	uint64_t unmerged_retries; /* merged registration failed, unmerged one tried */
	uint64_t evictions;
	uint64_t invalidations; /* invalidation calls (sync and deferred) */
	uint64_t invalidated;	/* regions they took out of the cache */
	uint64_t registrations; /* ops->reg calls that succeeded */
	uint64_t registration_errors;
	uint64_t deregistrations;
	uint64_t no_buffers;	 /* gets refused with ENOBUFS */
	uint64_t uncached;	 /* registrations made without caching */
	uint64_t regions;	 /* registered regions now (cached or held) */
	uint64_t cached_regions; /* regions in the cache now */
	uint64_t bytes_pinned;	 /* registered bytes now */
};

struct sp_rcache *sp_rcache_create(const struct sp_rcache_config *cfg,
				   const struct sp_rcache_ops *ops, void *ctx);

/*
 * Deregister everything and free the cache.  EBUSY (and nothing done) while
 * a region is still held.
 */
int sp_rcache_destroy(struct sp_rcache *c);

/*
 * A region covering [addr, addr + len) registered with at least access.
 * EINVAL (empty or wrapping range, unknown access bits), ENOBUFS (a limit
 * is reached and every cached region is in use), or what ops->reg said
 * (ENOMEM or ENOBUFS only once no idle region is left to evict).
 */
int sp_rcache_get(struct sp_rcache *c, void *addr, size_t len, unsigned int access,
		  struct sp_region **region);

/* Another reference on a held region. */
void sp_rcache_hold(struct sp_rcache *c, struct sp_region *region);

/* Release a reference; the last one of a region no longer cached deregisters it. */
void sp_rcache_put(struct sp_rcache *c, struct sp_region *region);

/*
 * Take every cached region that overlaps [addr, addr + len), partial
 * overlaps included, out of the cache before returning.  *removed (if not
 * NULL) is how many.  Allocates and deregisters nothing, so it may be
 * called from the application's memory-event callbacks.
 */
int sp_rcache_invalidate(struct sp_rcache *c, void *addr, size_t len, size_t *removed);

/*
 * The same for a caller that must never wait on the cache's lock (a thread
 * reading kernel memory events): the range is queued, and every lookup that
 * starts after this returns applies the queue first.
 */
void sp_rcache_invalidate_deferred(struct sp_rcache *c, void *addr, size_t len);

/*
 * For a memory-event thread, around each batch it reads: between begin and
 * end every lookup waits for the batch's invalidations (begin comes before
 * the thread that changed memory can run again).  Neither blocks.
 */
void sp_rcache_events_begin(struct sp_rcache *c);
void sp_rcache_events_end(struct sp_rcache *c);

/*
 * Evict up to n idle cached regions, least recently used first, and
 * deregister them: room on the NIC for something else that its limit
 * refused (a get retries this way by itself).  How many were evicted.
 */
size_t sp_rcache_evict_idle(struct sp_rcache *c, size_t n);

/* Apply queued invalidations and deregister what waits on the garbage list. */
void sp_rcache_collect(struct sp_rcache *c);

void sp_rcache_get_stats(struct sp_rcache *c, struct sp_rcache_stats *stats);
void sp_rcache_print_stats(const struct sp_rcache_stats *stats, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
