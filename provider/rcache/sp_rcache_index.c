/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The cache's index: a radix page table over page numbers, four levels of
 * 512 entries (36 bits of page number: 48-bit addresses).  An entry is
 * empty, a directory, or (low bit set) a region.  A region is stored as
 * the aligned blocks it covers, each at the highest level it fills, so a
 * lookup is at most four dependent loads from small, cache-resident
 * directories, and a region of N pages takes O(log N) entries when aligned
 * and at most 2 x 511 per level otherwise.
 *
 * Lock-free readers walk it with relaxed loads and validate with the
 * cache's sequence lock.  Directories are type-stable: an emptied one goes
 * back to a free list for reuse, never to the allocator, so a reader on a
 * stale path reads a directory (or zeros), never freed memory.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "sp_rcache_int.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

#define BITS SP_RCACHE_RADIX_BITS
#define FAN (1u << BITS)
#define LEVELS SP_RCACHE_RADIX_LEVELS
#define TAG_REGION SP_RDIR_TAG_REGION

static unsigned int idx(uint64_t page, int level)
{
	return sp_rdir_idx(page, level);
}

static uint64_t span(int level)
{
	return (uint64_t)1 << (BITS * level);
}

static struct sp_rdir *dir_alloc(struct sp_rcache *c)
{
	struct sp_rdir *d = c->dir_free;

	if (d) {
		c->dir_free = d->next;
	} else {
		d = calloc(1, sizeof(*d));
		if (!d)
			return NULL;
		if (c->n_dirs == c->cap_dirs) {
			size_t cap = c->cap_dirs ? 2 * c->cap_dirs : 64;
			struct sp_rdir **a = realloc(c->dirs, cap * sizeof(*a));
			if (!a) {
				free(d);
				return NULL;
			}
			c->dirs = a;
			c->cap_dirs = cap;
		}
		c->dirs[c->n_dirs++] = d;
	}
	/* Entries are all empty here: a reused directory was emptied before it left. */
	d->used = 0;
	d->next = NULL;
	return d;
}

/* Write-side: the entry slot for page at level, creating directories; NULL on ENOMEM. */
static _Atomic uintptr_t *slot_for(struct sp_rcache *c, uint64_t page, int level,
				   struct sp_rdir **owner)
{
	struct sp_rdir *d = LD(c->root);

	if (!d) {
		d = dir_alloc(c);
		if (!d)
			return NULL;
		/* Release: a lock-free lookup sees the directory's entries empty. */
		atomic_store_explicit(&c->root, d, memory_order_release);
	}
	for (int l = LEVELS - 1; l > level; l--) {
		_Atomic uintptr_t *e = &d->e[idx(page, l)];
		uintptr_t v = LD(*e);
		if (!v) {
			struct sp_rdir *n = dir_alloc(c);
			if (!n)
				return NULL;
			atomic_store_explicit(e, (uintptr_t)n, memory_order_release);
			d->used++;
			v = (uintptr_t)n;
		}
		d = (struct sp_rdir *)v;
	}
	*owner = d;
	return &d->e[idx(page, level)];
}

/* The largest aligned block at page that fits before end: its level. */
static int block_level(uint64_t page, uint64_t end)
{
	int level = 0;

	while (level + 1 < LEVELS && !(page & (span(level + 1) - 1)) &&
	       page + span(level + 1) <= end)
		level++;
	return level;
}

/*
 * Writer: directories are needed before the sequence lock goes odd, so
 * that insertion itself cannot fail half-way.  Creates them all; a range
 * that is one block (a small aligned region) also gets its entry's place,
 * so that the insertion does not walk again.
 */
int sp_index_prepare(struct sp_rcache *c, uintptr_t start, uintptr_t end, struct sp_index_slot *one)
{
	const uint64_t first = start / SP_RCACHE_PAGE, e = end / SP_RCACHE_PAGE;
	uint64_t p = first;
	struct sp_rdir *owner;

	one->e = NULL;
	if (e >> (BITS * LEVELS))
		return ERANGE;
	while (p < e) {
		int level = block_level(p, e);
		_Atomic uintptr_t *s = slot_for(c, p, level, &owner);
		if (!s)
			return ENOMEM;
		if (p == first && p + span(level) == e) {
			one->e = s;
			one->owner = owner;
			one->count = 1;
		}
		p += span(level);
	}
	return 0;
}

void sp_index_insert_slow(struct sp_rcache *c, struct sp_region *r)
{
	uint64_t p = LD(r->start) / SP_RCACHE_PAGE, e = LD(r->end) / SP_RCACHE_PAGE;
	struct sp_rdir *owner;

	while (p < e) {
		int level = block_level(p, e);
		_Atomic uintptr_t *s = slot_for(c, p, level, &owner); /* exists: prepared */
		if (p == LD(r->start) / SP_RCACHE_PAGE)
			r->dir = owner;
		ST(*s, (uintptr_t)r | TAG_REGION);
		owner->used++;
		p += span(level);
	}
}

/* Unlink the empty directories on page's path bottom-up, from level up; the root stays. */
static void give_back_empty(struct sp_rcache *c, struct sp_rdir *const *path, struct sp_rdir *d,
			    uint64_t page, int level)
{
	for (int l = level + 1; l < LEVELS && sp_unlikely(!d->used); l++) {
		struct sp_rdir *parent = path[l];
		ST(parent->e[idx(page, l)], 0);
		parent->used--;
		d->next = c->dir_free;
		c->dir_free = d;
		c->dirs_given_back++;
		d = parent;
	}
}

/* The directory at level on page's path, with the path above it in path[]. */
static struct sp_rdir *walk_to(struct sp_rcache *c, uint64_t page, int level, struct sp_rdir **path)
{
	struct sp_rdir *d = LD(c->root);

	for (int l = LEVELS - 1; l > level; l--) {
		path[l] = d;
		d = (struct sp_rdir *)LD(d->e[idx(page, l)]);
	}
	return d;
}

/* The rest of sp_index_remove(): a directory emptied, or a region over several. */
void sp_index_remove_slow(struct sp_rcache *c, struct sp_region *r, bool emptied)
{
	uint64_t p = LD(r->start) / SP_RCACHE_PAGE, e = LD(r->end) / SP_RCACHE_PAGE;
	struct sp_rdir *path[LEVELS], *d;

	if (emptied) {
		walk_to(c, p, 0, path);
		give_back_empty(c, path, r->dir, p, 0);
		return;
	}
	while (p < e) {
		int level = block_level(p, e);
		d = walk_to(c, p, level, path);
		ST(d->e[idx(p, level)], 0);
		d->used--;
		give_back_empty(c, path, d, p, level);
		p += span(level);
	}
}

/*
 * Writer: the region at the lowest page of [start, end) (bytes), or NULL.
 * An iterative walk with the path kept: it descends where an entry is a
 * directory, steps over empty entries at the level they are found (an
 * empty entry high up skips its whole block), and climbs back when it
 * leaves a directory.  A miss's neighbour check over a few pages is a
 * handful of loads.
 */
struct sp_region *sp_index_first_overlap(struct sp_rcache *c, uintptr_t start, uintptr_t end)
{
	uint64_t p = start / SP_RCACHE_PAGE, e = (end + SP_RCACHE_PAGE - 1) / SP_RCACHE_PAGE;
	struct sp_rdir *path[LEVELS];
	struct sp_rdir *d = LD(c->root);
	int level = LEVELS - 1;

	if (end <= start)
		return NULL;
	if (end > UINTPTR_MAX - SP_RCACHE_PAGE) /* ceil would wrap */
		e = UINTPTR_MAX / SP_RCACHE_PAGE + 1;
	if (!d || p >= e || p >> (BITS * LEVELS))
		return NULL;
	if (e > span(LEVELS))
		e = span(LEVELS);
	while (p < e) {
		uintptr_t v = LD(d->e[idx(p, level)]);

		if (v & TAG_REGION)
			return (struct sp_region *)(v & ~TAG_REGION);
		if (v && level) {
			path[level--] = d;
			d = (struct sp_rdir *)v;
			continue;
		}
		/* Empty: on to the next block of this level, up while it starts a new directory. */
		p = (p | (span(level) - 1)) + 1;
		while (level < LEVELS - 1 && !idx(p, level))
			d = path[++level];
	}
	return NULL;
}

void sp_index_fini(struct sp_rcache *c)
{
	for (size_t i = 0; i < c->n_dirs; i++)
		free(c->dirs[i]);
	free(c->dirs);
	c->dirs = NULL;
	c->n_dirs = c->cap_dirs = 0;
	c->dir_free = NULL;
	ST(c->root, NULL);
}

/* Count the distinct regions of the subtree and check entry counts. */
static int verify_dir(struct sp_rdir *d, int level, uint64_t base, struct sp_region **last,
		      size_t *regions, const char **why)
{
	uint32_t used = 0;

	for (unsigned int i = 0; i < FAN; i++) {
		uintptr_t v = LD(d->e[i]);
		uint64_t lo = base + (uint64_t)i * span(level);

		if (!v)
			continue;
		used++;
		if (v & TAG_REGION) {
			struct sp_region *r = (struct sp_region *)(v & ~TAG_REGION);
			if (LD(r->start) / SP_RCACHE_PAGE > lo ||
			    LD(r->end) / SP_RCACHE_PAGE < lo + span(level)) {
				*why = "an entry outside its region";
				return -1;
			}
			if (!r->indexed || atomic_load(&r->state) != SP_RR_LIVE) {
				*why = "an indexed region is not live";
				return -1;
			}
			if (lo == LD(r->start) / SP_RCACHE_PAGE && r->dir != d) {
				*why = "a region's first entry is not in the directory it names";
				return -1;
			}
			if (r != *last) {
				if (*last && LD((*last)->end) > LD(r->start)) {
					*why = "regions overlap or are out of order";
					return -1;
				}
				*last = r;
				(*regions)++;
			}
		} else if (!level) {
			*why = "a directory below the last level";
			return -1;
		} else if (verify_dir((struct sp_rdir *)v, level - 1, lo, last, regions, why)) {
			return -1;
		}
	}
	if (used != d->used || (!used && level < LEVELS - 1)) {
		*why = "directory entry count wrong, or an empty directory kept";
		return -1;
	}
	return 0;
}

int sp_rcache_verify(struct sp_rcache *c, const char **why)
{
	size_t regions = 0, lru = 0;
	struct sp_region *last = NULL;
	struct sp_rdir *root;
	int ret = 0;

	*why = NULL;
	sp_mutex_lock(&c->lock);
	root = LD(c->root);
	if (root && verify_dir(root, LEVELS - 1, 0, &last, &regions, why))
		ret = EPROTO;
	for (struct sp_region *r = c->lru_head; r && !ret; r = r->lru_next) {
		uintptr_t s = LD(r->start), e = LD(r->end);
		if (!r->indexed || (r->lru_next && r->lru_next->lru_prev != r) ||
		    sp_index_lookup(c, s) != r || sp_index_lookup(c, e - 1) != r ||
		    (s && sp_index_lookup(c, s - 1) == r) || sp_index_lookup(c, e) == r) {
			*why = "LRU list and index disagree";
			ret = EPROTO;
		}
		lru++;
	}
	if (!ret && (regions != c->n_cached || lru != c->n_cached)) {
		*why = "counts disagree with the index";
		ret = EPROTO;
	}
	sp_mutex_unlock(&c->lock);
	return ret;
}
