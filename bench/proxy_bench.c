/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proxy_bench: what watching memory costs, measured side by side.
 *
 *   munmap of a page nobody watches                          (the baseline)
 *   munmap of a page whose registration is cached and watched (the caller
 *     is held until the proxy's event thread has read the event)
 *   from that munmap call to the cache entry gone (the next cache call
 *     applies the queued invalidation)
 *   the same three for madvise(MADV_DONTNEED)
 *
 * and what a registration costs on the provider's own path (sp_watched:
 * the cache, a registration and a secure per miss), next to a bare
 * vb_reg_mr and to the cache alone (sp_rcache_vb_ops, no proxy), on the
 * same scattered pages, in turns (-p).
 *
 * Medians over --iters rounds, in microseconds.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kp_client.h"
#include "perf.h"
#include "sp_watched_cache.h"

#define PG 4096u

static uint8_t *fresh_page(void)
{
	uint8_t *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("proxy_bench: mmap");
		exit(1);
	}
	p[0] = 1;
	return p;
}

static void cache_it(struct sp_rcache *c, uint8_t *p)
{
	struct sp_region *r;
	int ret = sp_rcache_get(c, p, PG, VB_ACCESS_LOCAL_WRITE, &r);

	if (ret) {
		fprintf(stderr, "proxy_bench: get: %s\n", strerror(ret));
		exit(1);
	}
	sp_rcache_put(c, r);
}

/* The floor of any blocking hand-off: a round trip between two threads sleeping on eventfds. */
static int ping_fd, pong_fd, ping_rounds;

static void *ponger(void *arg)
{
	uint64_t v;

	(void)arg;
	for (int i = 0; i < ping_rounds; i++) {
		struct pollfd p = { .fd = ping_fd, .events = POLLIN };
		poll(&p, 1, -1);
		(void)!read(ping_fd, &v, sizeof(v));
		(void)!write(pong_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
	}
	return NULL;
}

static double thread_round_trip(int iters, double *samples)
{
	pthread_t t;
	uint64_t v;

	ping_fd = eventfd(0, EFD_CLOEXEC);
	pong_fd = eventfd(0, EFD_CLOEXEC);
	ping_rounds = iters;
	pthread_create(&t, NULL, ponger, NULL);
	for (int i = 0; i < iters; i++) {
		uint64_t t0 = perf_now_ns();
		(void)!write(ping_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
		(void)!read(pong_fd, &v, sizeof(v));
		samples[i] = (double)(perf_now_ns() - t0) / 1000;
	}
	pthread_join(t, NULL);
	close(ping_fd);
	close(pong_fd);
	return perf_median(samples, iters);
}

/*
 * The registration path, side by side: -p rounds, each of -n scattered
 * pages (one in two, so that no two ranges merge or coalesce), every
 * variant in turn on the same pages.  Each operation is timed alone; a
 * figure is the median of the rounds' medians.
 */
enum reg_row {
	ROW_BARE_REG,	  /* vb_reg_mr */
	ROW_BARE_DEREG,	  /* vb_dereg_mr */
	ROW_SECURE,	  /* kp_secure alone */
	ROW_UNSECURE,	  /* kp_unsecure alone */
	ROW_CACHE_MISS,	  /* sp_rcache_get + put, a miss, sp_rcache_vb_ops (no proxy) */
	ROW_CACHE_HIT,	  /* the same, a hit */
	ROW_WATCHED_MISS, /* sp_rcache_get + put, a miss, sp_watched (the provider's path) */
	ROW_WATCHED_HIT,  /* the same, a hit */
	ROW_WATCHED_DROP, /* invalidation + collect, per region (dereg + unsecure) */
	ROW_MAX
};

static const char *const row_name[ROW_MAX] = {
	"bare vb_reg_mr",
	"bare vb_dereg_mr",
	"kp_secure alone",
	"kp_unsecure alone",
	"miss, cache alone (no proxy)",
	"hit, cache alone",
	"miss, provider path (sp_watched)",
	"hit, provider path (sp_watched)",
	"drop, provider path, per region",
};

static uint8_t *reg_arena;

static void *reg_page(int i)
{
	return reg_arena + (size_t)2 * (size_t)i * PG;
}

static double reg_cache_round(struct sp_rcache *c, int n, double *t, double *hit)
{
	for (int i = 0; i < n; i++) {
		struct sp_region *r;
		uint64_t t0 = perf_now_ns();
		if (sp_rcache_get(c, reg_page(i), PG, VB_ACCESS_LOCAL_WRITE, &r))
			exit(1);
		sp_rcache_put(c, r);
		t[i] = (double)(perf_now_ns() - t0) / 1000;
	}
	for (int i = 0; i < n; i++) {
		struct sp_region *r;
		uint64_t t0 = perf_now_ns();
		if (sp_rcache_get(c, reg_page(i), PG, VB_ACCESS_LOCAL_WRITE, &r))
			exit(1);
		sp_rcache_put(c, r);
		hit[i] = (double)(perf_now_ns() - t0) / 1000;
	}
	uint64_t t0 = perf_now_ns();
	sp_rcache_invalidate(c, reg_arena, (size_t)2 * (size_t)n * PG, NULL);
	sp_rcache_collect(c);
	double drop = (double)(perf_now_ns() - t0) / 1000 / n;
	perf_median(hit, n);
	return drop;
}

static void reg_path(struct vb_pd *pd, struct kp_client *kp, int n, int rounds)
{
	struct sp_rcache_config cfg;
	double *t = calloc((size_t)n, sizeof(double)), *u = calloc((size_t)n, sizeof(double));
	double fig[ROW_MAX][16];
	struct vb_mr **mr = calloc((size_t)n, sizeof(*mr));
	uint64_t *h = calloc((size_t)n, sizeof(*h));
	struct sp_rcache_stats st;

	reg_arena = mmap(NULL, (size_t)2 * (size_t)n * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!t || !u || !mr || !h || reg_arena == MAP_FAILED) {
		fprintf(stderr, "proxy_bench: out of memory\n");
		exit(1);
	}
	for (int i = 0; i < n; i++)
		memset(reg_page(i), 1, PG);
	sp_rcache_config_init(&cfg);
	cfg.max_regions = 0;
	struct sp_rcache *alone = sp_rcache_create(&cfg, &sp_rcache_vb_ops, pd);
	struct sp_watched *w = sp_watched_create(&cfg, pd, kp);
	struct sp_rcache *watched = w ? sp_watched_cache(w) : NULL;
	if (!alone || !watched) {
		fprintf(stderr, "proxy_bench: cache: %s\n", strerror(errno));
		exit(1);
	}
	for (int r = 0; r < rounds + 1; r++) {
		/* Round 0 warms pools and pages up and is not counted. */
		int k = r ? r - 1 : 0;
		for (int v = 0; v < 4; v++) {
			switch ((v + r) % 4) {
			case 0:
				for (int i = 0; i < n; i++) {
					uint64_t t0 = perf_now_ns();
					mr[i] =
					    vb_reg_mr(pd, reg_page(i), PG, VB_ACCESS_LOCAL_WRITE);
					t[i] = (double)(perf_now_ns() - t0) / 1000;
					if (!mr[i])
						exit(1);
				}
				for (int i = 0; i < n; i++) {
					uint64_t t0 = perf_now_ns();
					vb_dereg_mr(mr[i]);
					u[i] = (double)(perf_now_ns() - t0) / 1000;
				}
				fig[ROW_BARE_REG][k] = perf_median(t, n);
				fig[ROW_BARE_DEREG][k] = perf_median(u, n);
				break;
			case 1:
				for (int i = 0; i < n; i++) {
					uint64_t t0 = perf_now_ns();
					uint32_t s =
					    kp_secure(kp, (uintptr_t)reg_page(i), PG,
						      KP_ACCESS_READ | KP_ACCESS_WRITE, &h[i]);
					t[i] = (double)(perf_now_ns() - t0) / 1000;
					if (s) {
						fprintf(stderr, "proxy_bench: secure: status %u\n",
							s);
						exit(1);
					}
				}
				for (int i = 0; i < n; i++) {
					uint64_t t0 = perf_now_ns();
					kp_unsecure(kp, h[i]);
					u[i] = (double)(perf_now_ns() - t0) / 1000;
				}
				fig[ROW_SECURE][k] = perf_median(t, n);
				fig[ROW_UNSECURE][k] = perf_median(u, n);
				break;
			case 2:
				reg_cache_round(alone, n, t, u);
				fig[ROW_CACHE_MISS][k] = perf_median(t, n);
				fig[ROW_CACHE_HIT][k] = perf_median(u, n);
				break;
			default:
				fig[ROW_WATCHED_DROP][k] = reg_cache_round(watched, n, t, u);
				fig[ROW_WATCHED_MISS][k] = perf_median(t, n);
				fig[ROW_WATCHED_HIT][k] = perf_median(u, n);
			}
		}
	}
	sp_rcache_get_stats(watched, &st);
	printf("\nRegistration on the provider's path: %d scattered pages a round, medians of "
	       "%d rounds' medians, microseconds\n",
	       n, rounds);
	for (int row = 0; row < ROW_MAX; row++) {
		double m = perf_median(fig[row], rounds);
		printf("%-40s %10.2f %8.1fx bare vb_reg_mr\n", row_name[row], m,
		       m / perf_median(fig[ROW_BARE_REG], rounds));
	}
	printf("sp_watched: %lu registrations, %lu uncached (not watchable or over the budget)\n",
	       (unsigned long)st.registrations, (unsigned long)st.uncached);
	sp_rcache_destroy(alone);
	sp_watched_destroy(w);
	munmap(reg_arena, (size_t)2 * (size_t)n * PG);
	free(t);
	free(u);
	free(mr);
	free(h);
}

int main(int argc, char **argv)
{
	int iters = 5000, rounds = 5, opt;
	struct sp_rcache_config cfg;
	struct sp_rcache_stats st;

	while ((opt = getopt(argc, argv, "n:p:h")) != -1) {
		if (opt == 'n' && (iters = atoi(optarg)) > 0)
			continue;
		if (opt == 'p' && (rounds = atoi(optarg)) > 0 && rounds <= 15)
			continue;
		fprintf(stderr, "Usage: proxy_bench [-n ITERS] [-p ROUNDS (1..15)]\n");
		return opt == 'h' ? 0 : 2;
	}
	struct vb_device *dev = vb_open_device(NULL, NULL);
	struct vb_pd *pd = dev ? vb_alloc_pd(dev) : NULL;
	struct kp_client *kp = kp_client_open();
	if (!pd || !kp) {
		fprintf(stderr, "proxy_bench: setup: %s\n", strerror(errno));
		return 1;
	}
	sp_rcache_config_init(&cfg);
	struct sp_watched *w = sp_watched_create(&cfg, pd, kp);
	struct sp_rcache *c = w ? sp_watched_cache(w) : NULL;
	double *base = calloc((size_t)iters, sizeof(double)),
	       *watched = calloc((size_t)iters, sizeof(double)),
	       *gone = calloc((size_t)iters, sizeof(double));
	if (!c || !base || !watched || !gone)
		return 1;

	printf("Watching memory through the Linux proxy: medians of %d rounds, microseconds\n",
	       iters);
	printf("%-34s %12s %12s %12s %14s\n", "call", "unwatched", "watched", "overhead",
	       "to entry gone");
	for (int kind = 0; kind < 2; kind++) {
		for (int i = 0; i < iters; i++) {
			uint8_t *p = fresh_page(), *q = fresh_page();
			uint64_t t0, t1, t2;

			t0 = perf_now_ns();
			if (kind)
				madvise(p, PG, MADV_DONTNEED);
			else
				munmap(p, PG);
			base[i] = (double)(perf_now_ns() - t0) / 1000;

			cache_it(c, q);
			t0 = perf_now_ns();
			if (kind)
				madvise(q, PG, MADV_DONTNEED);
			else
				munmap(q, PG);
			t1 = perf_now_ns();
			sp_rcache_collect(c); /* applies the queued invalidation */
			t2 = perf_now_ns();
			watched[i] = (double)(t1 - t0) / 1000;
			gone[i] = (double)(t2 - t0) / 1000;
			if (kind) {
				munmap(p, PG);
				munmap(q, PG);
			}
		}
		double b = perf_median(base, iters), wt = perf_median(watched, iters);
		printf("%-34s %12.2f %12.2f %12.2f %14.2f\n",
		       kind ? "madvise(DONTNEED), one page" : "munmap, one page", b, wt, wt - b,
		       perf_median(gone, iters));
	}
	printf("%-34s %12s %12.2f   (the floor: the event thread wakes, then the caller)\n",
	       "thread round trip over eventfds", "", thread_round_trip(iters, base));
	sp_rcache_get_stats(c, &st);
	printf("cache: %lu registrations, %lu regions invalidated by events\n",
	       (unsigned long)st.registrations, (unsigned long)st.invalidated);
	free(base);
	free(watched);
	free(gone);
	sp_watched_destroy(w);
	/* Fewer pages than the proxy's map budget (max_map_count / 8): every miss is watched. */
	reg_path(pd, kp, iters < 4000 ? iters : 4000, rounds);
	kp_client_close(kp);
	vb_dealloc_pd(pd);
	vb_close_device(dev);
	return 0;
}
