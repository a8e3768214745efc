/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache under concurrency (also built with
 * ThreadSanitizer): lookups, releases, synchronous and deferred
 * invalidations and evictions from many threads at once, with a stale-hit
 * detector.
 *
 * The detector: per page, the invalidations that started and those that
 * completed.  A registration records how many had started on its pages;
 * a lookup reads how many had completed before it began.  A region that
 * saw fewer starts than the lookup saw completions was registered before
 * an invalidation that finished before the lookup: a stale hit.
 *
 *   stress_rcache [seconds]   (default 2)
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "sp_rcache_int.h"
#include "tap.h"
#include "vb.h"

#define PG 4096u
#define PAGES 64
#define BASE ((uintptr_t)0x7e0000000000ull)
#define GETTERS 4

static _Atomic uint32_t inv_started[PAGES], inv_done[PAGES];
static _Atomic long live, stale, bad_cover, errors, hits_total;
static _Atomic bool stop;

struct fake_reg {
	uintptr_t start, end;
	uint32_t started[PAGES];
};

static void *fake_reg(void *ctx, void *addr, size_t len, unsigned int access, unsigned int *flags)
{
	struct fake_reg *r = malloc(sizeof(*r));

	(void)ctx, (void)access;
	if (!r)
		return NULL;
	r->start = (uintptr_t)addr;
	r->end = r->start + len;
	for (int p = 0; p < PAGES; p++)
		r->started[p] = atomic_load(&inv_started[p]);
	atomic_fetch_add(&live, 1);
	return r;
}

static void fake_dereg(void *ctx, void *handle)
{
	(void)ctx;
	atomic_fetch_sub(&live, 1);
	free(handle);
}

static const struct sp_rcache_ops ops = { .reg = fake_reg, .dereg = fake_dereg };

static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

static void *getter(void *arg)
{
	struct sp_rcache *c = arg;
	uint64_t seed = (uintptr_t)&seed;
	long hits = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint32_t x = rnd(&seed), page = x % PAGES, n = 1 + (x >> 8) % 4, done[PAGES];
		unsigned int acc = (x >> 12) & 1 ? VB_ACCESS_ALL : 0;
		struct sp_region *r;

		if (page + n > PAGES)
			n = PAGES - page;
		for (uint32_t p = page; p < page + n; p++)
			done[p] = atomic_load(&inv_done[p]);
		int ret = sp_rcache_get(c, (void *)(BASE + page * PG + 8), n * PG - 16, acc, &r);
		if (ret == ENOBUFS)
			continue;
		if (ret) {
			atomic_fetch_add(&errors, 1);
			continue;
		}
		const struct fake_reg *fr = sp_region_handle(r);
		uintptr_t rs = sp_region_start(r), re = sp_region_end(r);
		if (rs > BASE + page * PG || re < BASE + (page + n) * PG ||
		    (sp_region_access(r) & acc) != acc || fr->start != rs || fr->end != re)
			atomic_fetch_add(&bad_cover, 1);
		for (uint32_t p = page; p < page + n; p++)
			if (fr->started[p] < done[p])
				atomic_fetch_add(&stale, 1);
		hits++;
		if ((x >> 13) & 1)
			sp_rcache_hold(c, r), sp_rcache_put(c, r);
		sp_rcache_put(c, r);
	}
	atomic_fetch_add(&hits_total, hits);
	return NULL;
}

static void *invalidator(void *arg)
{
	struct sp_rcache *c = arg;
	uint64_t seed = 99 + (uintptr_t)&seed;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint32_t x = rnd(&seed), page = x % PAGES, n = 1 + (x >> 8) % 3;

		if (page + n > PAGES)
			n = PAGES - page;
		for (uint32_t p = page; p < page + n; p++)
			atomic_fetch_add(&inv_started[p], 1);
		if ((x >> 12) & 1)
			sp_rcache_invalidate(c, (void *)(BASE + page * PG + 100), n * PG - 200,
					     NULL);
		else
			sp_rcache_invalidate_deferred(c, (void *)(BASE + page * PG + 100),
						      n * PG - 200);
		for (uint32_t p = page; p < page + n; p++)
			atomic_fetch_add(&inv_done[p], 1);
		/* Let lookups run between invalidations. */
		for (volatile int spin = 0; spin < 2000; spin++)
			;
	}
	return NULL;
}

static void run(const char *name, size_t max_regions, bool merge, double seconds)
{
	struct sp_rcache_config cfg = { .enable = true,
					.merge = merge,
					.max_regions = max_regions };
	struct sp_rcache *c = sp_rcache_create(&cfg, &ops, NULL);
	pthread_t g[GETTERS], inv;
	struct sp_rcache_stats st;
	const char *why = NULL;

	atomic_store(&stale, 0);
	atomic_store(&bad_cover, 0);
	atomic_store(&errors, 0);
	atomic_store(&hits_total, 0);
	atomic_store(&stop, false);
	if (!c) {
		tap_result(0, "%s: create: %s", name, strerror(errno));
		return;
	}
	for (int i = 0; i < GETTERS; i++)
		pthread_create(&g[i], NULL, getter, c);
	pthread_create(&inv, NULL, invalidator, c);
	nanosleep(
	    &(struct timespec){ .tv_sec = (time_t)seconds,
				.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9) },
	    NULL);
	atomic_store(&stop, true);
	for (int i = 0; i < GETTERS; i++)
		pthread_join(g[i], NULL);
	pthread_join(inv, NULL);
	sp_rcache_collect(c);
	sp_rcache_get_stats(c, &st);
	int verified = sp_rcache_verify(c, &why);
	int destroyed = sp_rcache_destroy(c);

	tap_result(!atomic_load(&stale) && !atomic_load(&bad_cover) && !atomic_load(&errors) &&
		       !verified && !destroyed && !atomic_load(&live) && st.hits > 0 &&
		       st.invalidated > 0,
		   "%s: %ld lookups, %lu hits, %lu misses, %lu evictions, %lu invalidated; "
		   "stale %ld, bad cover %ld, errors %ld, index %s, leaked %ld",
		   name, atomic_load(&hits_total), (unsigned long)st.hits, (unsigned long)st.misses,
		   (unsigned long)st.evictions, (unsigned long)st.invalidated, atomic_load(&stale),
		   atomic_load(&bad_cover), atomic_load(&errors), verified ? why : "ok",
		   atomic_load(&live));
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;

	if (seconds <= 0)
		seconds = 2.0;
	tap_plan(3);
	run("merging, no limits", 0, true, seconds / 3);
	run("merging, 8 regions at most", 8, true, seconds / 3);
	run("no merging, 16 regions at most", 16, false, seconds / 3);
	return tap_exit();
}
