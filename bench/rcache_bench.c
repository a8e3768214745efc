/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * rcache_bench: sanprov's registration cache and UCX's ucs_rcache side by
 * side, in one run, driving the same registration callback (vb_reg_mr /
 * vb_dereg_mr on one backend device) with the same request streams.
 *
 *   hit       get + release of cached regions, 10,000 regions, in random
 *             order (1 and 2 threads) and in address order (a buffer ring)
 *   churn     get + release, 90 % on 5,000 hot regions, 10 % on cold
 *             addresses never seen before; 10,000 regions at most (LRU)
 *   storm     invalidate 10,000 cached regions one after the other
 *   miss      every get a miss, against raw registration + deregistration
 *
 * Figures are medians of --runs runs, in nanoseconds per operation.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucm/api/ucm.h>
#include <ucs/memory/rcache.h>
#include <unistd.h>

#include "perf.h"
#include "sp_watched_cache.h"
#include "vb.h"

#define PG 4096u
#define NREG 10000
#define HOT 5000
#define COLD 20000
#define STRIDE (2 * PG) /* a gap page between slots: nothing merges */
#define PAIRS 3		/* miss rounds per run, each next to its raw round */
#define EVICT_MAX 64	/* regions in the cache that evicts on every miss */

static struct vb_pd *pd;
static char *arena; /* NREG + COLD slots */

static void *slot(size_t i)
{
	return arena + i * STRIDE;
}

/* ---- the UCX side ---------------------------------------------------- */

struct ucx_region {
	ucs_rcache_region_t super;
	struct vb_mr *mr;
};

static ucs_status_t ucx_mem_reg(void *ctx, ucs_rcache_t *rc, void *arg, ucs_rcache_region_t *r,
				uint16_t flags)
{
	struct ucx_region *u = (struct ucx_region *)r;

	(void)rc, (void)arg, (void)flags;
	u->mr =
	    vb_reg_mr(ctx, (void *)r->super.start, r->super.end - r->super.start, VB_ACCESS_ALL);
	return u->mr ? UCS_OK : UCS_ERR_IO_ERROR;
}

static void ucx_mem_dereg(void *ctx, ucs_rcache_t *rc, ucs_rcache_region_t *r)
{
	(void)ctx, (void)rc;
	vb_dereg_mr(((struct ucx_region *)r)->mr);
}

static void ucx_dump(void *ctx, ucs_rcache_t *rc, ucs_rcache_region_t *r, char *buf, size_t max)
{
	(void)ctx, (void)rc, (void)r;
	snprintf(buf, max, "bench");
}

/* UCX calls this when an invalidated region is finally destroyed. */
static void ucx_invalidated(void *arg)
{
	(void)arg;
}

static const ucs_rcache_ops_t ucx_ops = {
	.mem_reg = ucx_mem_reg,
	.mem_dereg = ucx_mem_dereg,
	.dump_region = ucx_dump,
};

static ucs_rcache_t *ucx_create(unsigned long max_regions)
{
	ucs_rcache_params_t p = {
		.region_struct_size = sizeof(struct ucx_region),
		.alignment = PG,
		.max_alignment = PG,
		.ucm_events = 0, /* no memory hooks: invalidations are explicit here */
		.ucm_event_priority = 1000,
		.ops = &ucx_ops,
		.context = pd,
		.flags = UCS_RCACHE_FLAG_NO_PFN_CHECK,
		.max_regions = max_regions ? max_regions : ULONG_MAX,
		.max_size = SIZE_MAX,
		.max_unreleased = SIZE_MAX,
	};
	ucs_rcache_t *rc;

	if (ucs_rcache_create(&p, "bench", NULL, &rc) != UCS_OK)
		return NULL;
	return rc;
}

static ucs_rcache_region_t *ucx_get(ucs_rcache_t *rc, void *addr, size_t len)
{
	ucs_rcache_region_t *r;

	if (ucs_rcache_get(rc, addr, len, PROT_READ | PROT_WRITE, NULL, &r) != UCS_OK) {
		fprintf(stderr, "rcache_bench: ucs_rcache_get failed\n");
		exit(1);
	}
	return r;
}

/* ---- the sanprov side ------------------------------------------------ */

/*
 * -w null-miss|null-evict: a registration callback that does nothing, so
 * that a miss round shows what the cache itself costs.
 */
static char null_handle;

static void *null_reg(void *ctx, void *addr, size_t len, unsigned int access, unsigned int *flags)
{
	(void)ctx, (void)addr, (void)len, (void)access, (void)flags;
	return &null_handle;
}

static void null_dereg(void *ctx, void *handle)
{
	(void)ctx, (void)handle;
}

static const struct sp_rcache_ops null_ops = { .reg = null_reg, .dereg = null_dereg };
static const struct sp_rcache_ops *sp_ops = &sp_rcache_vb_ops;

static struct sp_rcache *sp_create(size_t max_regions)
{
	struct sp_rcache_config cfg = { .enable = true, .merge = true, .max_regions = max_regions };

	return sp_rcache_create(&cfg, sp_ops, pd);
}

/*
 * Inline, as the raw side calls vb_reg_mr from its loop: a frame of the
 * benchmark's own would cost the cache a mispredicted return after each
 * registration system call.
 */
static inline __attribute__((always_inline)) struct sp_region *sp_get(struct sp_rcache *c,
								      void *addr, size_t len)
{
	struct sp_region *r;
	int ret = sp_rcache_get(c, addr, len, VB_ACCESS_ALL, &r);

	if (ret) {
		fprintf(stderr, "rcache_bench: sp_rcache_get: %s\n", strerror(ret));
		exit(1);
	}
	return r;
}

/* ---- workloads ------------------------------------------------------- */

enum impl { SANPROV, UCX };

struct hit_arg {
	enum impl impl;
	void *cache;
	size_t from, n;
	bool in_order; /* regions in address order, as a ring of buffers; else random */
	uint64_t ns;
};

static void *hit_loop(void *p)
{
	struct hit_arg *a = p;
	/* Random slots from a generator in registers: a table of indexes would
	 * stream through the cache and evict what is being measured. */
	uint64_t x = 0x9e3779b97f4a7c15ull * (a->from + 1);
	uint64_t t0 = perf_now_ns();

	for (size_t i = a->from; i < a->from + a->n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t k = a->in_order ? i % NREG : (size_t)((x >> 32) * NREG >> 32);
		void *addr = (char *)slot(k) + 64;
		if (a->impl == SANPROV) {
			struct sp_rcache *c = a->cache;
			sp_rcache_put(c, sp_get(c, addr, 512));
		} else {
			ucs_rcache_t *rc = a->cache;
			ucs_rcache_region_put(rc, ucx_get(rc, addr, 512));
		}
	}
	a->ns = perf_now_ns() - t0;
	return NULL;
}

static void populate(enum impl impl, void *cache, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (impl == SANPROV)
			sp_rcache_put(cache, sp_get(cache, slot(i), PG));
		else
			ucs_rcache_region_put(cache, ucx_get(cache, slot(i), PG));
	}
}

static void *create(enum impl impl, size_t max_regions)
{
	void *c =
	    impl == SANPROV ? (void *)sp_create(max_regions) : (void *)ucx_create(max_regions);

	if (!c) {
		fprintf(stderr, "rcache_bench: cannot create the %s cache\n",
			impl == SANPROV ? "sanprov" : "UCX");
		exit(1);
	}
	return c;
}

static void destroy(enum impl impl, void *c)
{
	if (impl == SANPROV) {
		if (sp_rcache_destroy(c))
			fprintf(stderr, "rcache_bench: sanprov cache still busy\n");
	} else {
		ucs_rcache_destroy(c);
	}
}

/* ns per get + release on cached regions, with threads threads. */
static double bench_hit(enum impl impl, int threads, size_t ops, bool in_order)
{
	void *c = create(impl, 0);
	struct hit_arg a[8];
	pthread_t t[8];
	uint64_t worst = 0;

	populate(impl, c, NREG);
	for (int i = 0; i < threads; i++) {
		a[i] = (struct hit_arg){ impl, c, (size_t)i * ops, ops, in_order, 0 };
		pthread_create(&t[i], NULL, hit_loop, &a[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		if (a[i].ns > worst)
			worst = a[i].ns;
	}
	destroy(impl, c);
	return (double)worst / (double)ops;
}

/* ns per get + release with 10 % of the gets on never-seen addresses. */
static double bench_churn(enum impl impl, size_t ops, double *miss_rate)
{
	void *c = create(impl, NREG);
	uint64_t seed = 42, t0, regs_before = 0, regs_after = 0;
	size_t cold = 0;

	populate(impl, c, HOT);
	if (impl == SANPROV) {
		struct sp_rcache_stats s;
		sp_rcache_get_stats(c, &s);
		regs_before = s.misses;
	}
	t0 = perf_now_ns();
	for (size_t i = 0; i < ops; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint32_t x = (uint32_t)(seed >> 33);
		size_t s = x % 10 ? (x >> 4) % HOT : NREG + cold++ % COLD;
		void *addr = (char *)slot(s) + 64;
		if (impl == SANPROV)
			sp_rcache_put(c, sp_get(c, addr, 512));
		else
			ucs_rcache_region_put(c, ucx_get(c, addr, 512));
	}
	uint64_t ns = perf_now_ns() - t0;
	if (impl == SANPROV) {
		struct sp_rcache_stats s;
		sp_rcache_get_stats(c, &s);
		regs_after = s.misses;
		*miss_rate = (double)(regs_after - regs_before) / (double)ops;
	}
	destroy(impl, c);
	return (double)ns / (double)ops;
}

/* ns per invalidated region, deregistration included. */
static double bench_storm(enum impl impl)
{
	void *c = create(impl, 0);
	uint64_t t0;

	populate(impl, c, NREG);
	t0 = perf_now_ns();
	for (size_t i = 0; i < NREG; i++) {
		if (impl == SANPROV) {
			sp_rcache_invalidate(c, slot(i), PG, NULL);
		} else {
			/* UCX invalidates a region it is handed: look it up first, and
			 * release that reference after. */
			ucs_rcache_region_t *r = ucx_get(c, slot(i), PG);
			ucs_rcache_region_invalidate(c, r, ucx_invalidated, NULL);
			ucs_rcache_region_put(c, r);
		}
	}
	if (impl == SANPROV)
		sp_rcache_collect(c);
	uint64_t ns = perf_now_ns() - t0;
	destroy(impl, c);
	return (double)ns / NREG;
}

/*
 * The miss path against raw registration, on the same pages:
 *   alone:          get of a new range (nothing to evict) vs vb_reg_mr;
 *   with eviction:  get + put in a full cache of 64 regions (an eviction,
 *                   its deregistration, a registration) vs vb_dereg_mr of
 *                   the registration made 64 operations before + vb_reg_mr.
 * Every operation is timed on its own with the cycle counter; a round
 * gives the interquartile mean (of the middle half of the operations) and
 * the mean, in ns.  The first is what a timer interrupt or a neighbour on
 * the host does not move; it is not a median because a VM's cycle
 * counter may tick coarsely (26 cycles at a time on some hosts), and a
 * median of such samples sticks to a tick where a mean of many does not.
 * The mean keeps what a miss costs only now and then.
 */
struct timing {
	double iqm, mean;
};

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p) {
		fprintf(stderr, "rcache_bench: out of memory\n");
		exit(1);
	}
	return p;
}

static struct timing timing_of(double *tk, size_t n, uint64_t ns0, uint64_t tk0)
{
	double ns_per_tick = (double)(perf_now_ns() - ns0) / (double)(perf_ticks() - tk0), sum = 0;
	struct timing t;

	for (size_t i = 0; i < n; i++)
		sum += tk[i];
	t.mean = sum / (double)n * ns_per_tick;
	perf_median(tk, (int)n); /* sorts */
	sum = 0;
	for (size_t i = n / 4; i < n - n / 4; i++)
		sum += tk[i];
	t.iqm = sum / (double)(n - 2 * (n / 4)) * ns_per_tick;
	return t;
}

static struct timing miss_round(struct sp_rcache *c, size_t ops, bool evict,
				struct sp_region **held, double *tk)
{
	uint64_t ns0 = perf_now_ns(), tk0 = perf_ticks();
	struct timing t;

	for (size_t i = 0; i < ops; i++) {
		uint64_t t0 = perf_ticks();
		struct sp_region *r = sp_get(c, slot(NREG + i % COLD), PG);
		if (evict)
			sp_rcache_put(c, r);
		else
			held[i] = r;
		tk[i] = (double)(perf_ticks() - t0);
	}
	t = timing_of(tk, ops, ns0, tk0);
	for (size_t i = 0; !evict && i < ops; i++)
		sp_rcache_put(c, held[i]);
	/* Empty the cache: the next round misses on the same pages. */
	sp_rcache_invalidate(c, slot(0), (NREG + COLD) * (size_t)STRIDE, NULL);
	sp_rcache_collect(c);
	return t;
}

/* A warm-up round first: a long-running process has its pools and pages warm. */
static struct timing bench_miss(size_t ops, bool evict)
{
	struct sp_rcache *c = create(SANPROV, evict ? EVICT_MAX : 0);
	struct sp_region **held = xcalloc(ops, sizeof(*held));
	double *tk = xcalloc(ops, sizeof(*tk));
	struct timing t;

	miss_round(c, ops, evict, held, tk);
	t = miss_round(c, ops, evict, held, tk);
	free(tk);
	free(held);
	destroy(SANPROV, c);
	return t;
}

/* The same miss rounds on UCX's cache, for context. */
static struct timing ucx_miss_round(ucs_rcache_t *c, size_t ops, ucs_rcache_region_t **held,
				    double *tk)
{
	uint64_t ns0 = perf_now_ns(), tk0 = perf_ticks();
	struct timing t;

	for (size_t i = 0; i < ops; i++) {
		uint64_t t0 = perf_ticks();
		held[i] = ucx_get(c, slot(NREG + i % COLD), PG);
		tk[i] = (double)(perf_ticks() - t0);
	}
	t = timing_of(tk, ops, ns0, tk0);
	for (size_t i = 0; i < ops; i++) {
		/* Invalidate so that the next round misses again. */
		ucs_rcache_region_invalidate(c, held[i], ucx_invalidated, NULL);
		ucs_rcache_region_put(c, held[i]);
	}
	return t;
}

static struct timing bench_ucx_miss(size_t ops)
{
	ucs_rcache_t *c = create(UCX, 0);
	ucs_rcache_region_t **held = xcalloc(ops, sizeof(*held));
	double *tk = xcalloc(ops, sizeof(*tk));
	struct timing t;

	ucx_miss_round(c, ops, held, tk);
	t = ucx_miss_round(c, ops, held, tk);
	free(tk);
	free(held);
	destroy(UCX, c);
	return t;
}

/*
 * Raw registrations; with a lag, each operation also deregisters the
 * registration made lag operations before, first: the backend calls a
 * full cache of lag regions makes on a miss, in its order.
 */
static struct timing raw_round(size_t ops, size_t lag, struct vb_mr **mrs, double *tk)
{
	uint64_t ns0 = perf_now_ns(), tk0 = perf_ticks();
	struct timing t;

	for (size_t i = 0; i < ops; i++) {
		uint64_t t0 = perf_ticks();
		if (lag && i >= lag) {
			vb_dereg_mr(mrs[i - lag]);
			mrs[i - lag] = NULL;
		}
		mrs[i] = vb_reg_mr(pd, slot(NREG + i % COLD), PG, VB_ACCESS_ALL);
		if (!mrs[i]) {
			fprintf(stderr, "rcache_bench: vb_reg_mr: %s\n", strerror(errno));
			exit(1);
		}
		tk[i] = (double)(perf_ticks() - t0);
	}
	t = timing_of(tk, ops, ns0, tk0);
	for (size_t i = 0; i < ops; i++)
		if (mrs[i])
			vb_dereg_mr(mrs[i]);
	return t;
}

static struct timing bench_raw(size_t ops, size_t lag)
{
	struct vb_mr **mrs = xcalloc(ops, sizeof(*mrs));
	double *tk = xcalloc(ops, sizeof(*tk));
	struct timing t;

	raw_round(ops, lag, mrs, tk);
	t = raw_round(ops, lag, mrs, tk);
	free(tk);
	free(mrs);
	return t;
}

/*
 * The figures of n pairs of measurements taken back to back: the median of
 * each side in *ma and *mb, and the median of the pairs' ratios a/b.  The
 * host's own load changes over seconds (a VM's neighbours), so a ratio of
 * two sides measured together is what it moves least.  Sorts a and b.
 */
static double pair_medians(double *a, double *b, int n, double *ma, double *mb)
{
	double q[16 * PAIRS];

	for (int i = 0; i < n; i++)
		q[i] = a[i] / b[i];
	*ma = perf_median(a, n);
	*mb = perf_median(b, n);
	return perf_median(q, n);
}

/* One line of the miss table: the rounds' interquartile means (or means), the overhead. */
static void print_overhead(const char *what, const struct timing *ours, const struct timing *raw,
			   int n, bool mean, const char *goal)
{
	double a[16 * PAIRS], b[16 * PAIRS], x, y, q;

	for (int i = 0; i < n; i++) {
		a[i] = mean ? ours[i].mean : ours[i].iqm;
		b[i] = mean ? raw[i].mean : raw[i].iqm;
	}
	q = pair_medians(a, b, n, &x, &y);
	printf("%-52s %10.1f %10.1f %8.1f%% %8s\n", what, x, y, (q - 1) * 100, goal);
}

/* One line of the workload table: both caches ran each run's workload back to back. */
static void print_row(const char *what, double *ours, double *ucx, int runs, const char *goal)
{
	double x, y, q = pair_medians(ucx, ours, runs, &y, &x);

	printf("%-52s %10.1f %10.1f %9.2f %8s\n", what, x, y, q, goal);
}

/* The table of the workloads both caches run. */
static void print_workloads(double (*h1)[16], double (*h2)[16], double (*hs)[16], double (*ch)[16],
			    double (*st)[16], double mr, int runs)
{
	char what[80];

	printf("%-52s %10s %10s %9s %8s\n", "workload", "sanprov", "UCX", "UCX/ours", "goal");
	print_row("hit get+put, 10000 regions, random, 1 thread", h1[0], h1[1], runs, ">= 2.00");
	print_row("hit get+put, 10000 regions, random, 2 threads", h2[0], h2[1], runs, ">= 2.00");
	print_row("hit get+put, 10000 regions, in order, 1 thread", hs[0], hs[1], runs, ">= 2.00");
	snprintf(what, sizeof(what), "churn get+put, %.0f %% misses, 10000 regions max", mr * 100);
	print_row(what, ch[0], ch[1], runs, "");
	print_row("invalidation storm, per region (UCX: + lookup)", st[0], st[1], runs, "");
}

/*
 * libucm interposes on madvise, mmap and the like in every process that
 * loads it, to deliver memory events, and softnic's registration calls
 * madvise: with the events on, both caches' registrations and the raw ones
 * would go through UCM's dispatch, which a process running sanprov's
 * provider does not have (it costs 40-60 ns a call here, and the
 * registration of a miss pays more of it than a bare one).  Neither cache
 * here uses the events (invalidations are explicit), so the bench runs
 * with UCX_MEM_EVENTS=no unless the user set it.  libucm reads it when it
 * is loaded, before main: hence the exec.
 */
static void ucm_events_off(char **argv)
{
	if (getenv("UCX_MEM_EVENTS"))
		return;
	setenv("UCX_MEM_EVENTS", "no", 1);
	execv("/proc/self/exe", argv);
	/* Not fatal: the figures then include UCM's dispatch, and the header says so. */
	setenv("UCX_MEM_EVENTS", "yes (the bench could not restart itself without them)", 1);
}

int main(int argc, char **argv)
{
	int runs = 5, opt;
	const char *backend = NULL;
	size_t hit_ops = 2000000, churn_ops = 200000, miss_ops = 20000;
	double h1[2][16], h2[2][16], hs[2][16], ch[2][16], st[2][16], mr = 0;
	struct timing miss[16 * PAIRS], raw[16 * PAIRS], missev[16 * PAIRS], rawdr[16 * PAIRS],
	    umiss[16 * PAIRS];
	const char *only = NULL;
	bool miss_only = false;

	ucm_events_off(argv);
	while ((opt = getopt(argc, argv, "b:mr:w:h")) != -1) {
		switch (opt) {
		case 'w':
			only = optarg;
			break;
		case 'm':
			miss_only = true;
			break;
		case 'b':
			backend = optarg;
			break;
		case 'r':
			runs = atoi(optarg);
			if (runs < 1 || runs > 16) {
				fprintf(stderr, "rcache_bench: runs must be 1..16\n");
				return 2;
			}
			break;
		default:
			fprintf(stderr,
				"Usage: rcache_bench [-b BACKEND] [-r RUNS] [-m] [-w "
				"hit|churn|storm|miss|miss-evict|raw|null-miss|null-evict]\n"
				"  -m measures the miss path only (its table)\n"
				"  -w runs one workload alone (for profiling) and prints "
				"its figures; null-*: misses with a registration that does "
				"nothing\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	/*
	 * softnic reuses MR slots first-in first-out: until the table has been
	 * cycled once, every registration touches a fresh page of it.  A table
	 * of 32768 slots, cycled before measuring, keeps that out of the figures
	 * (the variable set by the user wins).
	 */
	setenv("SANPROV_SOFTNIC_MAX_MR", "32768", 0);
	struct vb_device *dev = vb_open_device(backend, NULL);
	if (!dev || !(pd = vb_alloc_pd(dev))) {
		fprintf(stderr, "rcache_bench: cannot open the backend: %s\n", strerror(errno));
		return 1;
	}
	arena = mmap(NULL, (NREG + COLD) * (size_t)STRIDE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (arena == MAP_FAILED)
		return 1;
	/* Warm every page the runs register, so first-touch faults count for neither side. */
	for (size_t i = 0; i < NREG + COLD; i++)
		memset(slot(i), 0, PG);
	for (size_t i = 0; i < 2 * 32768; i++) {
		struct vb_mr *m = vb_reg_mr(pd, slot(i % (NREG + COLD)), PG, VB_ACCESS_ALL);
		if (!m) {
			fprintf(stderr, "rcache_bench: vb_reg_mr: %s\n", strerror(errno));
			return 1;
		}
		vb_dereg_mr(m);
	}

	if (only) {
		double v;
		for (int r = 0; r < runs; r++) {
			if (!strcmp(only, "hit"))
				v = bench_hit(SANPROV, 1, hit_ops, false);
			else if (!strcmp(only, "churn"))
				v = bench_churn(SANPROV, churn_ops, &mr);
			else if (!strcmp(only, "storm"))
				v = bench_storm(SANPROV);
			else if (!strcmp(only, "miss"))
				v = bench_miss(miss_ops, false).iqm;
			else if (!strcmp(only, "miss-evict"))
				v = bench_miss(miss_ops, true).iqm;
			else if (!strcmp(only, "raw"))
				v = bench_raw(miss_ops, 0).iqm;
			else if (!strcmp(only, "null-miss") || !strcmp(only, "null-evict")) {
				sp_ops = &null_ops;
				v = bench_miss(miss_ops, !strcmp(only, "null-evict")).mean;
			} else
				return 2;
			printf("%s: %.1f ns/op\n", only, v);
		}
		return 0;
	}
	for (int r = 0; r < runs; r++) {
		/* Each workload on both caches back to back, the first in turns. */
		for (int w = 0; w < 5 && !miss_only; w++) {
			for (int k = 0; k < 2; k++) {
				enum impl impl = (enum impl)((k + r) % 2);
				switch (w) {
				case 0:
					h1[impl][r] = bench_hit(impl, 1, hit_ops, false);
					break;
				case 1:
					h2[impl][r] = bench_hit(impl, 2, hit_ops, false);
					break;
				case 2:
					hs[impl][r] = bench_hit(impl, 1, hit_ops, true);
					break;
				case 3:
					ch[impl][r] = bench_churn(impl, churn_ops, &mr);
					break;
				default:
					st[impl][r] = bench_storm(impl);
				}
			}
		}
		/* Pairs back to back, in turns, so that neither side always runs first. */
		for (int p = 0; p < PAIRS; p++) {
			int i = r * PAIRS + p;
			if (p & 1) {
				raw[i] = bench_raw(miss_ops, 0);
				miss[i] = bench_miss(miss_ops, false);
				umiss[i] = bench_ucx_miss(miss_ops);
				rawdr[i] = bench_raw(miss_ops, EVICT_MAX);
				missev[i] = bench_miss(miss_ops, true);
			} else {
				miss[i] = bench_miss(miss_ops, false);
				umiss[i] = bench_ucx_miss(miss_ops);
				raw[i] = bench_raw(miss_ops, 0);
				missev[i] = bench_miss(miss_ops, true);
				rawdr[i] = bench_raw(miss_ops, EVICT_MAX);
			}
		}
		fprintf(stderr, "rcache_bench: run %d/%d done\n", r + 1, runs);
	}

	printf("Registration cache: sanprov sp_rcache vs UCX ucs_rcache (%s), backend %s,\n"
	       "same callback (vb_reg_mr/vb_dereg_mr), %d runs, ns per operation (medians) and\n"
	       "ratios (medians of each run's); UCX's memory events (UCX_MEM_EVENTS): %s\n",
	       SP_UCX_VERSION, dev->ops->name, runs, getenv("UCX_MEM_EVENTS"));
	if (!miss_only)
		print_workloads(h1, h2, hs, ch, st, mr, runs);
	printf("%-52s %10s %10s %9s %8s\n", "miss path (interquartile mean of operations)",
	       "sanprov", "raw", "overhead", "goal");
	int n = runs * PAIRS;
	print_overhead("miss (lookup, register, insert) vs vb_reg_mr", miss, raw, n, false,
		       "<= 5%");
	print_overhead("  the same miss on UCX (for comparison) vs vb_reg_mr", umiss, raw, n, false,
		       "");
	print_overhead("miss + eviction vs vb_dereg_mr (64 back) + vb_reg_mr", missev, rawdr, n,
		       false, "<= 5%");
	printf("%-52s\n", "miss path (mean: with what only some misses pay)");
	print_overhead("miss (lookup, register, insert) vs vb_reg_mr", miss, raw, n, true, "");
	print_overhead("  the same miss on UCX (for comparison) vs vb_reg_mr", umiss, raw, n, true,
		       "");
	print_overhead("miss + eviction vs vb_dereg_mr (64 back) + vb_reg_mr", missev, rawdr, n,
		       true, "");

	munmap(arena, (NREG + COLD) * (size_t)STRIDE);
	vb_dealloc_pd(pd);
	vb_close_device(dev);
	return 0;
}
