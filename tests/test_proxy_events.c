/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Linux proxy makes the cache never stale: for every call that changes
 * a mapping, the cached registration of the address is gone before the
 * call returns (the next get is a miss), and an RDMA read from the address
 * returns the new contents.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sp_watched_cache.h"
#include "tfork.h"
#include "tpair.h"

#define PG 4096u
#define LEN (4 * PG)

static struct vb_device *dev;
static struct tpair p;
static struct kp_client *kp;
static struct sp_watched *w;
static struct sp_rcache *cache;
#define RBUF (512 * 1024)
static uint8_t *rbuf; /* the peer's landing buffer */
static struct vb_mr *rmr;

static void setup(void)
{
	struct sp_rcache_config cfg;

	dev = tdev_open();
	cr_assert_not_null(dev);
	tpair_init(&p, dev, NULL);
	kp = kp_client_open();
	cr_assert_not_null(kp, "userfaultfd proxy: %s", strerror(errno));
	sp_rcache_config_init(&cfg);
	w = sp_watched_create(&cfg, p.a.pd, kp);
	cr_assert_not_null(w);
	cache = sp_watched_cache(w);
	rbuf = aligned_alloc(PG, RBUF);
	rmr = vb_reg_mr(p.b.pd, rbuf, RBUF, VB_ACCESS_LOCAL_WRITE);
	cr_assert(rbuf && rmr);
}

/* Criterion ignores failed assertions in .fini: each test ends with teardown(). */
static void teardown(void)
{
	cr_assert_eq(sp_watched_destroy(w), 0);
	kp_client_close(kp);
	cr_assert_eq(vb_dereg_mr(rmr), 0);
	free(rbuf);
	tpair_fini(&p);
	cr_assert_eq(vb_close_device(dev), 0, "an MR was left registered");
}

TestSuite(events, .init = setup);

static uint64_t misses(void)
{
	struct sp_rcache_stats s;

	sp_rcache_get_stats(cache, &s);
	return s.misses;
}

/* Get through the cache; the peer reads the bytes back; they must be pattern seed. */
static void get_and_read(void *addr, size_t len, uint32_t seed, bool expect_miss)
{
	struct sp_region *r;
	uint64_t before = misses();
	int ret =
	    sp_rcache_get(cache, addr, len, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_READ, &r);

	cr_assert_eq(ret, 0, "get: %s", strerror(ret));
	cr_assert_leq(len, RBUF);
	if (expect_miss)
		cr_assert_eq(misses() - before, 1,
			     "a stale hit: the cache kept a registration of changed memory");
	else
		cr_assert_eq(misses() - before, 0, "expected a hit");
	memset(rbuf, 0, len);
	cr_assert_eq(post_rdma(p.b.qp, VB_WR_RDMA_READ, 1, rbuf, (uint32_t)len, rmr->lkey,
			       (uintptr_t)addr, sp_watched_mr(r)->rkey, VB_SEND_SIGNALED),
		     0);
	struct vb_wc wc = tpair_wait(p.b.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
	cr_assert(check_pattern(rbuf, len, seed),
		  "the read returned other bytes than the memory holds");
	sp_rcache_put(cache, r);
}

static uint8_t *map_at(void *hint, int flags)
{
	uint8_t *m =
	    mmap(hint, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);

	cr_assert_neq(m, MAP_FAILED, "mmap: %s", strerror(errno));
	return m;
}

/*
 * A fresh mapping far below where the kernel places mappings (top down,
 * in the highest gap that fits): the cases unmap it and map the address
 * again, and a mapping another thread makes meanwhile (the proxy's and
 * the device's threads, the sanitizer's) would take the hole first if it
 * were the highest.  Where no such address is free: anywhere.
 */
static uint8_t *map_low(void)
{
	for (uintptr_t a = (uintptr_t)1 << 45; a < (uintptr_t)1 << 46; a += (uintptr_t)1 << 40) {
		void *m = mmap((void *)a, LEN, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (m == (void *)a)
			return m;
		if (m != MAP_FAILED)
			munmap(m, LEN); /* a kernel without NOREPLACE took it as a hint */
	}
	return map_at(NULL, 0);
}

/* Cache a fresh mapping with pattern 1 and show it is cached. */
static uint8_t *cached_mapping(void)
{
	uint8_t *x = map_low();

	fill_pattern(x, LEN, 1);
	get_and_read(x, LEN, 1, true);
	get_and_read(x, LEN, 1, false);
	return x;
}

Test(events, munmap_then_new_mapping_at_the_address)
{
	uint8_t *x = cached_mapping();

	cr_assert_eq(munmap(x, LEN), 0);
	cr_assert_eq(map_at(x, MAP_FIXED_NOREPLACE), x);
	fill_pattern(x, LEN, 2);
	get_and_read(x, LEN, 2, true);
	munmap(x, LEN);
	teardown();
}

Test(events, partial_munmap_invalidates_the_whole_region)
{
	uint8_t *x = cached_mapping();

	/* One page in the middle: the region covering it must go. */
	cr_assert_eq(munmap(x + PG, PG), 0);
	cr_assert_eq(mmap(x + PG, PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0),
		     x + PG);
	fill_pattern(x, LEN, 3);
	get_and_read(x, LEN, 3, true);
	munmap(x, LEN);
	teardown();
}

Test(events, mmap_fixed_over_the_range)
{
	uint8_t *x = cached_mapping();

	cr_assert_eq(map_at(x, MAP_FIXED), x);
	fill_pattern(x, LEN, 4);
	get_and_read(x, LEN, 4, true);
	munmap(x, LEN);
	teardown();
}

Test(events, mremap_away_then_new_mapping_at_the_address)
{
	uint8_t *x = cached_mapping();
	uint8_t *elsewhere = map_at(NULL, 0);

	cr_assert_eq(mremap(x, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, elsewhere), elsewhere);
	cr_assert(check_pattern(elsewhere, LEN, 1), "mremap moved the contents");
	cr_assert_eq(map_at(x, MAP_FIXED_NOREPLACE), x);
	fill_pattern(x, LEN, 5);
	get_and_read(x, LEN, 5, true);
	munmap(x, LEN);
	munmap(elsewhere, LEN);
	teardown();
}

Test(events, madvise_dontneed)
{
	uint8_t *x = cached_mapping();

	cr_assert_eq(madvise(x, LEN, MADV_DONTNEED), 0);
	/* The pages are new zero pages now: the thread touching them is not held. */
	for (size_t i = 0; i < LEN; i++)
		cr_assert_eq(x[i], 0);
	fill_pattern(x, LEN, 6);
	get_and_read(x, LEN, 6, true);
	munmap(x, LEN);
	teardown();
}

Test(events, madvise_free)
{
	uint8_t *x = cached_mapping();

	cr_assert_eq(madvise(x + PG, 2 * PG, MADV_FREE), 0);
	fill_pattern(x, LEN, 7);
	get_and_read(x, LEN, 7, true);
	munmap(x, LEN);
	teardown();
}

Test(events, madvise_remove_on_shared_memory)
{
	/* Shared anonymous memory: no file anyone can truncate, so it is watched. */
	uint8_t *x = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(x, MAP_FAILED);
	fill_pattern(x, LEN, 1);
	get_and_read(x, LEN, 1, true);
	get_and_read(x, LEN, 1, false);
	/* Punch the pages out of the file: the mapping keeps its address, loses its pages. */
	cr_assert_eq(madvise(x, LEN, MADV_REMOVE), 0);
	fill_pattern(x, LEN, 8);
	get_and_read(x, LEN, 8, true);
	munmap(x, LEN);
	teardown();
}

/* A shared mapping of a memfd (shmem) whose bytes are cached, if the proxy lets it be. */
static uint8_t *memfd_mapping(int *fd)
{
	uint8_t *x;

	*fd = memfd_create("events-test", MFD_CLOEXEC);
	cr_assert_geq(*fd, 0);
	cr_assert_eq(ftruncate(*fd, LEN), 0);
	x = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	cr_assert_neq(x, MAP_FAILED);
	fill_pattern(x, LEN, 1);
	get_and_read(x, LEN, 1, true);
	return x;
}

/*
 * The file's pages go, the mapping stays: no userfaultfd event says so.
 * Such memory must never be cached (the NIC would keep the old pages).
 */
Test(events, punch_hole_in_a_shared_memfd)
{
	int fd;
	uint8_t *x = memfd_mapping(&fd);

	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, LEN), 0);
	fill_pattern(x, LEN, 11);
	get_and_read(x, LEN, 11, true);
	munmap(x, LEN);
	close(fd);
	teardown();
}

Test(events, ftruncate_of_a_shared_memfd)
{
	int fd;
	uint8_t *x = memfd_mapping(&fd);

	cr_assert_eq(ftruncate(fd, 0), 0);
	cr_assert_eq(ftruncate(fd, LEN), 0);
	fill_pattern(x, LEN, 12);
	get_and_read(x, LEN, 12, true);
	munmap(x, LEN);
	close(fd);
	teardown();
}

Test(events, brk_shrink)
{
	/*
	 * The break is ours for this test: with an mmap threshold of 0 malloc
	 * serves everything by mmap, and glibc never trims a break it did not
	 * leave where it is.
	 */
	if (!mallopt(M_MMAP_THRESHOLD, 0)) {
		/* Not glibc's allocator (ASan replaces it): the break is ours if it never moves it.
		 */
		void *b0 = sbrk(0), *p1 = malloc(256 * 1024), *p2 = malloc(64);
		free(p1);
		free(p2);
		if (sbrk(0) != b0) {
			teardown();
			cr_skip_test("the allocator moves the break and ignores mallopt");
		}
	}
	uintptr_t brk0 = (uintptr_t)sbrk(0), pad = (PG - brk0 % PG) % PG;
	size_t len = 64 * PG;
	cr_assert_neq(sbrk((intptr_t)(pad + len)), (void *)-1);
	uint8_t *x = (uint8_t *)(brk0 + pad);

	fill_pattern(x, len, 1);
	get_and_read(x, len, 1, true);
	get_and_read(x, len, 1, false);
	/* Shrink the heap below the cached pages, then grow it back over the same addresses. */
	cr_assert_neq(sbrk(-(intptr_t)len), (void *)-1);
	cr_assert_eq((uintptr_t)sbrk(0), (uintptr_t)x);
	cr_assert_eq(sbrk((intptr_t)len), x);
	for (size_t i = 0; i < len; i += PG)
		cr_assert_eq(x[i], 0, "new pages");
	fill_pattern(x, len, 9);
	get_and_read(x, len, 9, true);
	teardown();
}

Test(events, unwatchable_memory_is_used_but_not_cached)
{
	/*
	 * A private mapping of a file on a disk file system: userfaultfd
	 * cannot watch it (it can on tmpfs, which is shmem; so not /tmp, and
	 * not anywhere tmpfs-backed).
	 */
	char name[] = "unwatchable-XXXXXX";
	int fd = mkstemp(name);
	struct statfs sfs;
	cr_assert_geq(fd, 0, "mkstemp in the working directory: %s", strerror(errno));
	/* The directory's file system: 9p cannot statfs an unlinked file. */
	cr_assert_eq(statfs(".", &sfs), 0, "statfs: %s", strerror(errno));
	if (sfs.f_type == TMPFS_MAGIC) {
		unlink(name);
		close(fd);
		teardown();
		cr_skip_test("the working directory is on tmpfs, which userfaultfd can watch");
	}
	cr_assert_eq(ftruncate(fd, LEN), 0);
	uint8_t *x = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	cr_assert_neq(x, MAP_FAILED);
	fill_pattern(x, LEN, 10);
	get_and_read(x, LEN, 10, true);
	get_and_read(x, LEN, 10, true); /* again a miss: never cached */
	struct sp_rcache_stats s;
	sp_rcache_get_stats(cache, &s);
	cr_assert_eq(s.uncached, 2);
	cr_assert_eq(s.cached_regions, 0);
	munmap(x, LEN);
	/* Only now: 9p (the soft-RoCE VM's working directory) cannot grow or map unlinked files. */
	unlink(name);
	close(fd);
	teardown();
}

static unsigned long count_mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	unsigned long n = 0;
	int c;

	cr_assert_not_null(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/*
 * The provider's path keeps the application's map budget: 32,000 scattered
 * cached registrations (each watched range would split a mapping twice,
 * 64,000 mappings against the default vm.max_map_count of 65,530) leave
 * the watched mappings under a quarter of vm.max_map_count, the rest is
 * registered uncached, and the application still maps 8,000 of its own.
 */
Test(events, scattered_cached_registrations_leave_the_application_its_mappings, .timeout = 300)
{
	const uint32_t n = 32000, apps = 8000;
	struct sp_rcache_config cfg;
	struct sp_rcache_stats s;
	unsigned long max_map = 65530, before, after;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
	struct sp_region *r;

	if (!tdev_is_softnic()) {
		if (f)
			fclose(f);
		/* 32,000 NIC registrations in the emulated VM outlast its per-case limit. */
		cr_skip_test(
		    "the map budget is the proxy's: checked on softnic, where it is quick");
	}
	if (f) {
		cr_assert_eq(fscanf(f, "%lu", &max_map), 1);
		fclose(f);
	}
	sp_rcache_config_init(&cfg);
	cfg.max_regions = 0; /* nothing evicts: only the budget stops watching */
	struct sp_watched *big = sp_watched_create(&cfg, p.a.pd, kp);
	cr_assert_not_null(big);
	struct sp_rcache *c = sp_watched_cache(big);
	uint8_t *x = mmap(NULL, (size_t)2 * n * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t **own = calloc(apps, sizeof(*own));
	cr_assert(x != MAP_FAILED && own);
	before = count_mappings();
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *page = x + (size_t)2 * i * PG;
		page[0] = 1;
		int ret = sp_rcache_get(c, page, PG, VB_ACCESS_LOCAL_WRITE, &r);
		cr_assert_eq(ret, 0, "get %u: %s", i, strerror(ret));
		sp_rcache_put(c, r);
	}
	after = count_mappings();
	sp_rcache_get_stats(c, &s);
	cr_log_info("%lu mappings more, %lu cached, %lu uncached (vm.max_map_count %lu)",
		    after - before, (unsigned long)s.cached_regions, (unsigned long)s.uncached,
		    max_map);
	cr_assert_leq(after - before, max_map / 4 + 16,
		      "watched ranges made %lu mappings (vm.max_map_count %lu)", after - before,
		      max_map);
	cr_assert_eq(s.cached_regions + s.uncached, n);
	if (max_map / 8 < n)
		cr_assert_gt(s.uncached, 0, "the budget never refused a range");
	/* Separate mappings that cannot merge (protections alternate). */
	for (uint32_t i = 0; i < apps; i++) {
		own[i] = mmap(NULL, PG, i & 1 ? PROT_READ : PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert_neq(own[i], MAP_FAILED, "the application's mmap %u: %s", i,
			      strerror(errno));
	}
	void *m = malloc(64 << 20); /* a large malloc is an mmap too */
	cr_assert_not_null(m, "the application's malloc");
	free(m);
	/* What is cached is still a hit. */
	uint64_t hits = s.hits;
	cr_assert_eq(sp_rcache_get(c, x, PG, VB_ACCESS_LOCAL_WRITE, &r), 0);
	sp_rcache_put(c, r);
	sp_rcache_get_stats(c, &s);
	cr_assert_eq(s.hits, hits + 1);
	for (uint32_t i = 0; i < apps; i++)
		munmap(own[i], PG);
	free(own);
	cr_assert_eq(sp_watched_destroy(big), 0);
	munmap(x, (size_t)2 * n * PG);
	teardown();
}

Test(events, a_child_never_uses_the_parents_registrations)
{
	uint8_t *x = cached_mapping();
	pid_t pid = tfork_settled(); /* the event thread runs: settled first */

	if (!pid) {
		struct sp_region *r;
		/* No Criterion assertions in the child: its exit status says it all. */
		if (sp_rcache_get(cache, x, LEN, VB_ACCESS_REMOTE_READ, &r) != EPERM)
			_exit(1);
		/* Its copies go without releasing what the parent registered. */
		if (sp_watched_destroy(w))
			_exit(2);
		kp_client_close(kp);
		_exit(0);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	/* The parent's registration is intact: still a hit, and its key still reads. */
	get_and_read(x, LEN, 1, false);
	munmap(x, LEN);
	teardown();
}

static _Atomic bool stop_churn;

/* Misses one after the other: the cache's lock is taken again and again. */
static void *churn_main(void *arg)
{
	uint8_t *area = arg;
	size_t i = 0;

	while (!atomic_load(&stop_churn)) {
		struct sp_region *r;
		if (!sp_rcache_get(cache, area + (i++ % 64) * 2 * PG, PG, VB_ACCESS_LOCAL_WRITE,
				   &r))
			sp_rcache_put(cache, r);
	}
	return NULL;
}

Test(events, unmapping_never_waits_for_the_cache, .timeout = 60)
{
	uint8_t *area = map_at(NULL, 0), *big;
	pthread_t t;
	long rounds = 0;

	munmap(area, LEN);
	area = mmap(NULL, 128 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(area, MAP_FAILED);
	memset(area, 1, 128 * PG);
	atomic_store(&stop_churn, false);
	cr_assert_eq(pthread_create(&t, NULL, churn_main, area), 0);
	/* Meanwhile, watched memory is unmapped, discarded and moved, over and over. */
	time_t end = time(NULL) + 2;
	while (time(NULL) < end) {
		big = map_at(NULL, 0);
		memset(big, 2, LEN);
		struct sp_region *r;
		cr_assert_eq(sp_rcache_get(cache, big, LEN, VB_ACCESS_LOCAL_WRITE, &r), 0);
		sp_rcache_put(cache, r);
		cr_assert_eq(madvise(big, PG, MADV_DONTNEED), 0);
		big[0] = 3; /* a page touched after the discard */
		cr_assert_eq(munmap(big, LEN), 0);
		madvise(area + (rounds % 64) * 2 * PG, PG, MADV_DONTNEED);
		rounds++;
	}
	atomic_store(&stop_churn, true);
	pthread_join(t, NULL);
	cr_assert_gt(rounds, 100, "only %ld rounds in 2 s", rounds);
	munmap(area, 128 * PG);
	teardown();
}
