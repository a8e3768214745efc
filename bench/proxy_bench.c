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

int main(int argc, char **argv)
{
	int iters = 5000, opt;
	struct sp_rcache_config cfg;
	struct sp_rcache_stats st;

	while ((opt = getopt(argc, argv, "n:h")) != -1) {
		if (opt == 'n' && (iters = atoi(optarg)) > 0)
			continue;
		fprintf(stderr, "Usage: proxy_bench [-n ITERS]\n");
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
	kp_client_close(kp);
	vb_dealloc_pd(pd);
	vb_close_device(dev);
	return 0;
}
