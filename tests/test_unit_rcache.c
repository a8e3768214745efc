/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache over fake registration ops that record every
 * call and fail on demand: index cases, merging, rights, invalidation,
 * limits and eviction order, regions in use, failures, teardown.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sp_rcache_int.h"
#include "vb.h"

#define PG 4096u
#define BASE ((uintptr_t)0x7f0000000000ull)

struct fake_reg {
	uintptr_t start, end;
	unsigned int access;
	int id;
};

struct fake {
	int live;	    /* registrations not yet deregistered */
	int regs, deregs;   /* calls that succeeded */
	int fail_next;	    /* fail this many registrations */
	size_t fail_longer; /* fail registrations longer than this (0: never) */
	struct fake_reg last;
};

static void *fake_reg(void *ctx, void *addr, size_t len, unsigned int access, unsigned int *flags)
{
	struct fake *f = ctx;
	struct fake_reg *r;

	(void)flags;
	if (f->fail_next) {
		f->fail_next--;
		errno = EFAULT;
		return NULL;
	}
	if (f->fail_longer && len > f->fail_longer) {
		errno = EFAULT;
		return NULL;
	}
	r = malloc(sizeof(*r));
	if (!r)
		return NULL;
	*r = (struct fake_reg){ (uintptr_t)addr, (uintptr_t)addr + len, access, ++f->regs };
	f->last = *r;
	f->live++;
	return r;
}

static void fake_dereg(void *ctx, void *handle)
{
	struct fake *f = ctx;

	f->live--;
	f->deregs++;
	free(handle);
}

static const struct sp_rcache_ops fake_ops = { .reg = fake_reg, .dereg = fake_dereg };

static struct fake f;
static struct sp_rcache *c;

static struct sp_rcache *make(size_t max_regions, size_t max_bytes, size_t max_region, bool merge)
{
	struct sp_rcache_config cfg = { .enable = true,
					.merge = merge,
					.max_regions = max_regions,
					.max_bytes = max_bytes,
					.max_region_size = max_region };
	struct sp_rcache *rc;

	memset(&f, 0, sizeof(f));
	rc = sp_rcache_create(&cfg, &fake_ops, &f);
	cr_assert_not_null(rc);
	return rc;
}

static void verify(void)
{
	const char *why;

	cr_assert_eq(sp_rcache_verify(c, &why), 0, "index broken: %s", why);
}

static void finish(void)
{
	verify();
	cr_assert_eq(sp_rcache_destroy(c), 0);
	cr_assert_eq(f.live, 0, "%d registrations leaked", f.live);
	c = NULL;
}

static struct sp_region *get(uintptr_t addr, size_t len, unsigned int access)
{
	struct sp_region *r = NULL;
	int ret = sp_rcache_get(c, (void *)addr, len, access, &r);

	cr_assert_eq(ret, 0, "get %#lx+%zu: %s", (unsigned long)addr, len, strerror(ret));
	cr_assert(sp_region_start(r) <= addr && sp_region_end(r) >= addr + len,
		  "region does not cover the request");
	cr_assert_eq(sp_region_access(r) & access, access, "region lacks rights");
	verify();
	return r;
}

static int reg_id(struct sp_region *r)
{
	return ((struct fake_reg *)sp_region_handle(r))->id;
}

static struct sp_rcache_stats stats(void)
{
	struct sp_rcache_stats s;

	sp_rcache_get_stats(c, &s);
	return s;
}

Test(rcache, covered_request_is_a_hit)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE + 100, 1000, VB_ACCESS_LOCAL_WRITE);
	struct sp_region *b = get(BASE + 2000, 64, VB_ACCESS_LOCAL_WRITE);

	cr_assert_eq(a, b);
	cr_assert_eq(sp_region_start(a), BASE, "keys are page aligned");
	cr_assert_eq(sp_region_end(a), BASE + PG);
	cr_assert_eq(f.regs, 1);
	cr_assert_eq(stats().hits, 1);
	cr_assert_eq(stats().misses, 1);
	sp_rcache_put(c, a);
	sp_rcache_put(c, b);
	cr_assert_eq(f.live, 1, "an unused region stays cached");
	finish();
}

Test(rcache, request_across_a_page_boundary_takes_both_pages)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE + PG - 10, 20, 0);

	cr_assert_eq(sp_region_start(a), BASE);
	cr_assert_eq(sp_region_end(a), BASE + 2 * PG);
	sp_rcache_put(c, a);
	finish();
}

Test(rcache, containment_is_a_hit)
{
	c = make(0, 0, 0, true);
	struct sp_region *big = get(BASE, 64 * PG, VB_ACCESS_ALL);
	struct sp_region *in = get(BASE + 17 * PG + 5, 3 * PG, VB_ACCESS_REMOTE_READ);

	cr_assert_eq(big, in);
	cr_assert_eq(f.regs, 1);
	sp_rcache_put(c, big);
	sp_rcache_put(c, in);
	finish();
}

Test(rcache, insufficient_rights_miss_and_merge_rights)
{
	c = make(0, 0, 0, true);
	struct sp_region *ro = get(BASE, PG, VB_ACCESS_REMOTE_READ);
	int ro_id = reg_id(ro);

	sp_rcache_put(c, ro);
	/* A read-only registration must not serve a write. */
	struct sp_region *rw = get(BASE, PG, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE);
	cr_assert_neq(reg_id(rw), ro_id);
	cr_assert_eq(sp_region_access(rw), VB_ACCESS_ALL, "the new registration has both rights");
	cr_assert_eq(f.live, 1, "the unused read-only one was released");
	/* Now a read is a hit on the merged one. */
	struct sp_region *again = get(BASE, PG, VB_ACCESS_REMOTE_READ);
	cr_assert_eq(again, rw);
	sp_rcache_put(c, rw);
	sp_rcache_put(c, again);
	finish();
}

Test(rcache, overlapping_regions_merge)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, 2 * PG, 0);
	sp_rcache_put(c, a);
	struct sp_region *b = get(BASE + PG, 2 * PG, 0);

	cr_assert_eq(sp_region_start(b), BASE);
	cr_assert_eq(sp_region_end(b), BASE + 3 * PG);
	cr_assert_eq(stats().merges, 1);
	cr_assert_eq(stats().cached_regions, 1);
	cr_assert_eq(f.live, 1);
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, adjacent_regions_merge)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);
	struct sp_region *b = get(BASE + 2 * PG, PG, 0);
	sp_rcache_put(c, a);
	sp_rcache_put(c, b);
	/* The middle page touches both: one region of three pages replaces them. */
	struct sp_region *m = get(BASE + PG, PG, 0);

	cr_assert_eq(sp_region_start(m), BASE);
	cr_assert_eq(sp_region_end(m), BASE + 3 * PG);
	cr_assert_eq(stats().cached_regions, 1);
	cr_assert_eq(f.live, 1);
	sp_rcache_put(c, m);
	finish();
}

Test(rcache, no_merge_keeps_regions_apart_but_never_overlapping)
{
	c = make(0, 0, 0, false);
	struct sp_region *a = get(BASE, 2 * PG, 0);
	struct sp_region *b = get(BASE + PG, 2 * PG, 0);

	cr_assert_eq(sp_region_start(b), BASE + PG);
	cr_assert_eq(sp_region_end(b), BASE + 3 * PG);
	/* a overlaps b: it left the cache, but a's holder still has it registered. */
	cr_assert_eq(stats().cached_regions, 1);
	cr_assert_eq(f.live, 2);
	sp_rcache_put(c, a);
	cr_assert_eq(f.live, 1, "released with its last reference");
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, merged_registration_failure_retries_unmerged)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);
	sp_rcache_put(c, a);
	f.fail_longer = PG; /* the merged two pages cannot be registered */
	struct sp_region *b = get(BASE + PG, PG, 0);

	cr_assert_eq(sp_region_start(b), BASE + PG);
	cr_assert_eq(sp_region_end(b), BASE + 2 * PG);
	cr_assert_eq(stats().unmerged_retries, 1);
	cr_assert_eq(stats().cached_regions, 2, "the touching one stays");
	sp_rcache_put(c, b);
	f.fail_longer = 0;
	finish();
}

/*
 * The same in a full cache: the merged registration goes into the region
 * its eviction freed, fails, and the unmerged one (which has room then)
 * goes into that region again.  Every region keeps the right references:
 * both left can be evicted and destroyed at the end.
 */
Test(rcache, merged_registration_failure_in_a_full_cache)
{
	c = make(2, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);
	sp_rcache_put(c, get(BASE + 8 * PG, PG, 0));
	f.fail_longer = PG;
	struct sp_region *b = get(BASE + PG, PG, 0);

	cr_assert_eq(sp_region_start(b), BASE + PG);
	cr_assert_eq(sp_region_end(b), BASE + 2 * PG);
	cr_assert_eq(stats().unmerged_retries, 1);
	cr_assert_eq(stats().evictions, 1, "the region at 8 pages (a is in the merge)");
	cr_assert_eq(f.live, 2);
	sp_rcache_put(c, b);
	sp_rcache_put(c, a);
	f.fail_longer = 0;
	/* Both unused now: a miss evicts one of them, and destroy finds nothing held. */
	sp_rcache_put(c, get(BASE + 16 * PG, PG, 0));
	cr_assert_eq(stats().evictions, 2);
	cr_assert_eq(f.live, 2);
	finish();
}

Test(rcache, registration_failure_is_clean)
{
	c = make(0, 0, 0, true);
	struct sp_region *r = NULL;

	f.fail_next = 1;
	cr_assert_eq(sp_rcache_get(c, (void *)BASE, PG, 0, &r), EFAULT);
	cr_assert_null(r);
	cr_assert_eq(stats().regions, 0);
	cr_assert_eq(stats().registration_errors, 1);
	cr_assert_eq(f.live, 0);
	/* And the next try works. */
	r = get(BASE, PG, 0);
	sp_rcache_put(c, r);
	finish();
}

Test(rcache, bad_arguments)
{
	c = make(0, 0, 0, true);
	struct sp_region *r;

	cr_assert_eq(sp_rcache_get(c, (void *)BASE, 0, 0, &r), EINVAL);
	cr_assert_eq(sp_rcache_get(c, (void *)(UINTPTR_MAX - 10), 100, 0, &r), EINVAL);
	cr_assert_eq(sp_rcache_get(c, (void *)(UINTPTR_MAX - 4096), 10, 0, &r), EINVAL);
	cr_assert_eq(sp_rcache_get(c, (void *)BASE, 10, 0x80, &r), EINVAL);
	cr_assert_eq(sp_rcache_invalidate(c, (void *)BASE, 0, NULL), EINVAL);
	cr_assert_eq(f.regs, 0);
	finish();
}

Test(rcache, partial_overlap_invalidation)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, 4 * PG, 0);
	size_t n = 99;

	sp_rcache_put(c, a);
	/* One byte in the second page takes the whole region out. */
	cr_assert_eq(sp_rcache_invalidate(c, (void *)(BASE + PG + 7), 1, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(stats().cached_regions, 0);
	int before = f.regs;
	struct sp_region *b = get(BASE, PG, 0);
	cr_assert_eq(f.regs, before + 1, "a miss after the invalidation");
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, invalidation_takes_every_overlapping_region)
{
	c = make(0, 0, 0, false);
	for (int i = 0; i < 200; i++)
		sp_rcache_put(c, get(BASE + (uintptr_t)i * 2 * PG, PG, 0));
	size_t n = 0;

	/* From the middle of region 10 to the middle of region 109. */
	cr_assert_eq(sp_rcache_invalidate(c, (void *)(BASE + 20 * PG + 100), (99 * 2) * PG, &n), 0);
	cr_assert_eq(n, 100);
	cr_assert_eq(stats().cached_regions, 100);
	cr_assert_eq(sp_rcache_invalidate(c, (void *)(BASE + 21 * PG), PG, &n), 0);
	cr_assert_eq(n, 0, "a gap between regions holds nothing");
	verify();
	finish();
}

Test(rcache, invalidation_defers_deregistration)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);

	sp_rcache_put(c, a);
	int deregs = f.deregs;
	cr_assert_eq(sp_rcache_invalidate(c, (void *)BASE, PG, NULL), 0);
	cr_assert_eq(f.deregs, deregs, "nothing is deregistered inside an invalidation");
	sp_rcache_collect(c);
	cr_assert_eq(f.deregs, deregs + 1);
	finish();
}

Test(rcache, region_in_use_survives_invalidation)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);

	cr_assert_eq(sp_rcache_invalidate(c, (void *)BASE, PG, NULL), 0);
	sp_rcache_collect(c);
	cr_assert_eq(f.live, 1, "held: still registered");
	cr_assert_eq(sp_region_start(a), BASE);
	/* A new request gets a new registration, not the invalidated one. */
	struct sp_region *b = get(BASE, PG, 0);
	cr_assert_neq(a, b);
	cr_assert_eq(sp_rcache_destroy(c), EBUSY, "a region is still held");
	sp_rcache_put(c, a);
	cr_assert_eq(f.live, 1);
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, deferred_invalidation_applies_before_the_next_lookup)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);
	int id = reg_id(a);

	sp_rcache_put(c, a);
	int deregs = f.deregs;
	sp_rcache_invalidate_deferred(c, (void *)(BASE + 100), 1);
	cr_assert_eq(f.deregs, deregs);
	struct sp_region *b = get(BASE, PG, 0);
	cr_assert_neq(reg_id(b), id, "never the invalidated registration");
	cr_assert_eq(stats().invalidated, 1);
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, deferred_queue_overflow_coalesces_safely)
{
	c = make(0, 0, 0, false);
	enum { N = 300 };
	int ids[N];

	for (int i = 0; i < N; i++) {
		struct sp_region *r = get(BASE + (uintptr_t)i * 4 * PG, PG, 0);
		ids[i] = reg_id(r);
		sp_rcache_put(c, r);
	}
	/* More ranges than the queue holds: it widens ranges, never drops one. */
	for (int i = 0; i < N; i += 2)
		sp_rcache_invalidate_deferred(c, (void *)(BASE + (uintptr_t)i * 4 * PG), 1);
	for (int i = 0; i < N; i += 2) {
		struct sp_region *r = get(BASE + (uintptr_t)i * 4 * PG, PG, 0);
		cr_assert_neq(reg_id(r), ids[i], "region %d served stale", i);
		sp_rcache_put(c, r);
	}
	finish();
}

Test(rcache, lru_evicts_least_recently_used_unused_region)
{
	c = make(3, 0, 0, false);
	uintptr_t a = BASE, b = BASE + 2 * PG, d = BASE + 4 * PG, e = BASE + 6 * PG;

	sp_rcache_put(c, get(a, PG, 0));
	sp_rcache_put(c, get(b, PG, 0));
	sp_rcache_put(c, get(d, PG, 0));
	/* a is used again: b is now the least recently used. */
	sp_rcache_put(c, get(a, PG, 0));
	sp_rcache_put(c, get(e, PG, 0));
	cr_assert_eq(stats().evictions, 1);
	cr_assert_eq(stats().regions, 3);
	int regs = f.regs;
	sp_rcache_put(c, get(a, PG, 0));
	sp_rcache_put(c, get(d, PG, 0));
	sp_rcache_put(c, get(e, PG, 0));
	cr_assert_eq(f.regs, regs, "a, d and e are still cached");
	sp_rcache_put(c, get(b, PG, 0));
	cr_assert_eq(f.regs, regs + 1, "b was the one evicted");
	finish();
}

/*
 * A miss finds its place in the index before making room; the eviction
 * that makes room may empty that directory and give it back.  The new
 * region must still land in the index, where lookups find it.
 */
Test(rcache, eviction_that_empties_the_directory_found_by_the_miss)
{
	c = make(1, 0, 0, true);
	sp_rcache_put(c, get(BASE + 100 * PG, PG, VB_ACCESS_ALL));
	struct sp_region *b = get(BASE + 105 * PG, PG, VB_ACCESS_ALL);
	cr_assert_eq(stats().evictions, 1);
	struct sp_region *again = get(BASE + 105 * PG, PG, VB_ACCESS_ALL);
	cr_assert_eq(again, b, "the new region is not in the index");
	cr_assert_eq(stats().hits, 1);
	sp_rcache_put(c, again);
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, in_use_regions_are_never_evicted)
{
	c = make(2, 0, 0, false);
	struct sp_region *a = get(BASE, PG, 0), *b = get(BASE + 2 * PG, PG, 0), *r = NULL;

	cr_assert_eq(sp_rcache_get(c, (void *)(BASE + 4 * PG), PG, 0, &r), ENOBUFS);
	cr_assert_null(r);
	cr_assert_eq(stats().no_buffers, 1);
	cr_assert_eq(f.live, 2);
	sp_rcache_put(c, a);
	r = get(BASE + 4 * PG, PG, 0);
	cr_assert_eq(f.live, 2, "a, unused, made room");
	cr_assert_eq(sp_region_start(b), BASE + 2 * PG);
	sp_rcache_put(c, b);
	sp_rcache_put(c, r);
	finish();
}

Test(rcache, byte_limit)
{
	c = make(0, 8 * PG, 0, false);
	struct sp_region *a = get(BASE, 4 * PG, 0), *r = NULL;

	cr_assert_eq(sp_rcache_get(c, (void *)(BASE + 8 * PG), 5 * PG, 0, &r), ENOBUFS);
	cr_assert_eq(sp_rcache_get(c, (void *)(BASE + 20 * PG), 9 * PG, 0, &r), ENOBUFS,
		     "larger than the limit itself");
	sp_rcache_put(c, a);
	r = get(BASE + 8 * PG, 5 * PG, 0);
	cr_assert_leq(stats().bytes_pinned, 8 * PG);
	sp_rcache_put(c, r);
	finish();
}

/*
 * A miss that evicts keeps the first region it evicts for its own
 * registration.  When the evictions then run out of unused regions, that
 * region goes back to the pool with no reference left over: reused, it
 * must be evictable again once its user puts it.
 */
Test(rcache, eviction_short_of_room_gives_back_the_region_it_kept)
{
	c = make(0, 4 * PG, 0, false);
	struct sp_region *r = NULL;

	sp_rcache_put(c, get(BASE, PG, 0));
	struct sp_region *b = get(BASE + 4 * PG, 2 * PG, 0);
	cr_assert_eq(sp_rcache_get(c, (void *)(BASE + 8 * PG), 3 * PG, 0, &r), ENOBUFS);
	cr_assert_null(r);
	cr_assert_eq(stats().evictions, 1);
	cr_assert_eq(f.live, 1, "the evicted region was deregistered");
	verify();
	sp_rcache_put(c, b);
	/* Room without an eviction: the region given back is the next one used. */
	sp_rcache_put(c, get(BASE + 16 * PG, PG, 0));
	cr_assert_eq(stats().evictions, 1);
	/* Room for this one only if both b and that region go. */
	sp_rcache_put(c, get(BASE + 20 * PG, 4 * PG, 0));
	cr_assert_eq(stats().evictions, 3);
	cr_assert_eq(f.live, 1);
	finish();
}

Test(rcache, too_large_is_registered_but_not_cached)
{
	c = make(0, 0, 16 * PG, true);
	struct sp_region *big = get(BASE, 17 * PG, 0);

	cr_assert_eq(stats().uncached, 1);
	cr_assert_eq(stats().cached_regions, 0);
	cr_assert_eq(f.live, 1);
	sp_rcache_put(c, big);
	cr_assert_eq(f.live, 0, "released with its last reference");
	/* Merging never grows a region past the limit either. */
	struct sp_region *a = get(BASE, 10 * PG, 0);
	sp_rcache_put(c, a);
	struct sp_region *b = get(BASE + 10 * PG, 10 * PG, 0);
	cr_assert_eq(sp_region_start(b), BASE + 10 * PG);
	sp_rcache_put(c, b);
	finish();
}

Test(rcache, disabled_cache_registers_every_time)
{
	struct sp_rcache_config cfg = { .enable = false };

	memset(&f, 0, sizeof(f));
	c = sp_rcache_create(&cfg, &fake_ops, &f);
	cr_assert_not_null(c);
	struct sp_region *a = get(BASE, PG, 0), *b = get(BASE, PG, 0);
	cr_assert_neq(a, b);
	cr_assert_eq(f.live, 2);
	sp_rcache_put(c, a);
	sp_rcache_put(c, b);
	cr_assert_eq(f.live, 0);
	finish();
}

Test(rcache, hold_adds_a_reference)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);

	sp_rcache_hold(c, a);
	cr_assert_eq(sp_rcache_invalidate(c, (void *)BASE, PG, NULL), 0);
	sp_rcache_put(c, a);
	cr_assert_eq(f.live, 1, "one reference left");
	sp_rcache_put(c, a);
	cr_assert_eq(f.live, 0);
	finish();
}

/*
 * A child of a fork holds copies of the parent's registrations, which
 * only the parent may release: in the child, dropping the last reference
 * of an invalidated region, getting and invalidating all leave the
 * backend alone.
 */
static int child_of_fork(struct sp_region *dead)
{
	struct sp_region *r = NULL;
	int deregs = f.deregs, regs = f.regs;

	sp_rcache_put(c, dead);
	if (f.deregs != deregs)
		return 1;
	if (sp_rcache_get(c, (void *)(BASE + 4 * PG), PG, 0, &r) != EPERM || r)
		return 2;
	if (sp_rcache_invalidate(c, (void *)(BASE + 4 * PG), PG, NULL) || f.deregs != deregs)
		return 3;
	return f.regs == regs ? 0 : 4;
}

Test(rcache, child_of_a_fork_leaves_the_parents_registrations_alone)
{
	c = make(0, 0, 0, true);
	struct sp_region *a = get(BASE, PG, 0);
	int status;
	pid_t pid;

	sp_rcache_put(c, get(BASE + 4 * PG, PG, 0));
	cr_assert_eq(sp_rcache_invalidate(c, (void *)BASE, PG, NULL), 0);
	cr_assert_eq(f.deregs, 0, "a, in use, is deregistered at its last put");
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid)
		_exit(child_of_fork(a));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && !WEXITSTATUS(status), "the child failed check %d (0x%x)",
		  WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
	sp_rcache_put(c, a);
	cr_assert_eq(f.deregs, 1, "the parent releases a at its last put");
	finish();
}

Test(rcache, environment_settings)
{
	struct sp_rcache_config cfg;

	setenv("SANPROV_RCACHE", "0", 1);
	setenv("SANPROV_RCACHE_MAX_REGIONS", "100", 1);
	setenv("SANPROV_RCACHE_MAX_BYTES", "64M", 1);
	setenv("SANPROV_RCACHE_MAX_REGION", "bogus", 1);
	setenv("SANPROV_RCACHE_STATS", "1", 1);
	sp_rcache_config_init(&cfg);
	cr_assert(cfg.print_stats);
	cr_assert_eq(cfg.enable, false);
	cr_assert_eq(cfg.max_regions, 100);
	cr_assert_eq(cfg.max_bytes, 64u << 20);
	cr_assert_eq(cfg.max_region_size, 0, "a malformed value keeps the default");
	unsetenv("SANPROV_RCACHE");
	unsetenv("SANPROV_RCACHE_MAX_REGIONS");
	unsetenv("SANPROV_RCACHE_MAX_BYTES");
	unsetenv("SANPROV_RCACHE_MAX_REGION");
	unsetenv("SANPROV_RCACHE_STATS");
	sp_rcache_config_init(&cfg);
	cr_assert(!cfg.print_stats);
	cr_assert(cfg.enable && cfg.merge);
	cr_assert_eq(cfg.max_regions, 16384);
}

/*
 * Random operations against a model: every region returned covers the
 * request with the rights asked, the index stays valid, and no region
 * registered before an invalidation of its range is ever returned after it.
 */
Test(rcache, randomized_against_a_model)
{
	enum { PAGES = 96, OPS = 40000 };
	/* The window crosses from one last-level directory into the next. */
	const uintptr_t WIN = BASE + 470 * (uintptr_t)PG;
	static int inv_epoch[PAGES]; /* invalidations that covered each page */
	enum { HELD = 4 };
	struct held {
		struct sp_region *r;
	} held[HELD] = { 0 };
	unsigned int seed = 12345;

	c = make(8, 0, 48 * PG, true);
	memset(inv_epoch, 0, sizeof(inv_epoch));
	for (int op = 0; op < OPS; op++) {
		unsigned int x = (unsigned int)rand_r(&seed);
		uintptr_t page = x % PAGES, npages = 1 + (x >> 10) % 8;
		if (page + npages > PAGES)
			npages = PAGES - page;
		switch (x >> 20 & 3) {
		case 0:
		case 1: {
			unsigned int acc = (x >> 23) & 1 ? VB_ACCESS_ALL : VB_ACCESS_REMOTE_READ;
			struct sp_region *r = NULL;
			int ret = sp_rcache_get(c, (void *)(WIN + page * PG + (x & 63)),
						npages * PG - 64, acc, &r);
			if (ret == ENOBUFS)
				break;
			cr_assert_eq(ret, 0);
			cr_assert(sp_region_start(r) <= WIN + page * PG &&
				  sp_region_end(r) >= WIN + (page + npages) * PG);
			cr_assert_eq(sp_region_access(r) & acc, acc);
			/* Never stale: registered after the last invalidation of its pages. */
			struct fake_reg *fr = sp_region_handle(r);
			for (uintptr_t p = (sp_region_start(r) - WIN) / PG;
			     p < (sp_region_end(r) - WIN) / PG; p++)
				cr_assert_gt(fr->id, inv_epoch[p], "stale region for page %lu",
					     (unsigned long)p);
			struct held *h = &held[x % HELD];
			if (h->r)
				sp_rcache_put(c, h->r);
			h->r = r;
			break;
		}
		case 2: {
			size_t n;
			if ((x >> 22) & 1) {
				cr_assert_eq(sp_rcache_invalidate(c, (void *)(WIN + page * PG + 1),
								  npages * PG - 2, &n),
					     0);
			} else {
				sp_rcache_invalidate_deferred(c, (void *)(WIN + page * PG + 1),
							      npages * PG - 2);
			}
			for (uintptr_t p = page; p < page + npages; p++)
				inv_epoch[p] = f.regs;
			break;
		}
		default: {
			struct held *h = &held[x % HELD];
			if (h->r)
				sp_rcache_put(c, h->r);
			h->r = NULL;
			break;
		}
		}
		if (op % 1000 == 0)
			verify();
	}
	for (int i = 0; i < HELD; i++)
		if (held[i].r)
			sp_rcache_put(c, held[i].r);
	/* The run went through every path it is meant to test. */
	struct sp_rcache_stats st = stats();
	cr_assert_gt(st.hits, 1000);
	cr_assert_gt(st.evictions, 100);
	cr_assert_gt(st.merges, 100);
	cr_assert_gt(st.invalidated, 100);
	finish();
}

/*
 * The index's range search against a scan of the regions, over a window
 * that crosses directory boundaries at every level below the root: random
 * disjoint regions of 1 to 1,500 pages, then random queries of every size.
 */
Test(rcache, first_overlap_matches_a_scan)
{
	enum { N = 400, QUERIES = 20000 };
	/* 2^27 pages is the span of a root entry: start a little below one. */
	const uintptr_t base = ((uintptr_t)1 << 39) - 300000 * (uintptr_t)PG;
	static struct sp_region *held[N];
	static uintptr_t lo[N], hi[N];
	unsigned int seed = 777;
	uintptr_t at = base;

	c = make(0, 0, 0, false);
	for (int i = 0; i < N; i++) {
		unsigned int x = (unsigned int)rand_r(&seed);
		size_t pages = x % 4 ? 1 + x % 7 : 1 + x % 1500;
		at += (uintptr_t)(1 + (x >> 16) % 1200) * PG; /* a gap: nothing merges */
		lo[i] = at;
		hi[i] = at + pages * PG;
		held[i] = get(lo[i], pages * PG, VB_ACCESS_ALL);
		at = hi[i];
	}
	cr_assert_gt(at - base, 300000 * (uintptr_t)PG, "the window must cross a root entry");
	for (int q = 0; q < QUERIES; q++) {
		unsigned int x = (unsigned int)rand_r(&seed), y = (unsigned int)rand_r(&seed);
		uintptr_t s = base + (uintptr_t)(x % (unsigned int)((at - base) / 64)) * 64;
		uintptr_t len = (uintptr_t)1 << (y % 32);
		uintptr_t e = s + 1 + (uintptr_t)(y >> 5) % len;
		struct sp_region *want = NULL;

		for (int i = 0; i < N && !want; i++)
			if (lo[i] < sp_page_ceil(e) && sp_page_floor(s) < hi[i])
				want = held[i];
		sp_mutex_lock(&c->lock);
		struct sp_region *got = sp_index_first_overlap(c, s, e);
		sp_mutex_unlock(&c->lock);
		cr_assert_eq(got, want, "[%#lx, %#lx): got %p, want %p", (unsigned long)s,
			     (unsigned long)e, (void *)got, (void *)want);
	}
	for (int i = 0; i < N; i++)
		sp_rcache_put(c, held[i]);
	finish();
}
