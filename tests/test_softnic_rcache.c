/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache over a real backend (softnic through the ops
 * table): cached regions carry working keys, invalidation and eviction
 * never pull a key from under a transfer, and teardown leaves no MR.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_watched_cache.h"
#include "tpair.h"

static struct vb_device *dev;
static struct tpair p;
static struct sp_rcache *c;
static uint8_t *src, *dst;
static struct vb_mr *dst_mr;

#define LEN (64 * 1024)

static void setup(void)
{
	struct sp_rcache_config cfg;

	dev = tdev_open();
	cr_assert_not_null(dev);
	tpair_init(&p, dev, NULL);
	sp_rcache_config_init(&cfg);
	cfg.max_regions = 4;
	c = sp_rcache_create(&cfg, &sp_rcache_vb_ops, p.a.pd);
	cr_assert_not_null(c);
	src = aligned_alloc(4096, 8 * LEN);
	dst = aligned_alloc(4096, LEN);
	dst_mr = vb_reg_mr(p.b.pd, dst, LEN, VB_ACCESS_ALL);
	cr_assert(src && dst && dst_mr);
}

static void teardown(void)
{
	cr_assert_eq(sp_rcache_destroy(c), 0);
	cr_assert_eq(vb_dereg_mr(dst_mr), 0);
	tpair_fini(&p);
	/* close_device refuses while any MR is left: the cache left none. */
	cr_assert_eq(vb_close_device(dev), 0);
	free(src);
	free(dst);
}

/* Criterion ignores failed assertions in .fini: each test ends with teardown(). */
TestSuite(softnic_rcache, .init = setup);

/* RDMA-write len bytes at src + off through the cache; return the completion status. */
static enum vb_wc_status write_through_cache(size_t off, size_t len, struct sp_region **held)
{
	struct sp_region *r;
	struct vb_mr *mr;
	int ret = sp_rcache_get(c, src + off, len, 0, &r);

	cr_assert_eq(ret, 0, "get: %s", strerror(ret));
	mr = sp_region_handle(r);
	cr_assert(sp_region_start(r) <= (uintptr_t)src + off);
	cr_assert(sp_region_end(r) >= (uintptr_t)src + off + len);
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 1, src + off, (uint32_t)len, mr->lkey,
			       (uintptr_t)dst, dst_mr->rkey, VB_SEND_SIGNALED),
		     0);
	enum vb_wc_status st = tpair_wait(p.a.scq).status;
	if (held)
		*held = r;
	else
		sp_rcache_put(c, r);
	return st;
}

Test(softnic_rcache, cached_keys_move_data)
{
	struct sp_rcache_stats s;

	for (int round = 0; round < 3; round++) {
		fill_pattern(src + 100, 4000, (uint32_t)round);
		cr_assert_eq(write_through_cache(100, 4000, NULL), VB_WC_SUCCESS);
		cr_assert(check_pattern(dst, 4000, (uint32_t)round));
	}
	sp_rcache_get_stats(c, &s);
	cr_assert_eq(s.misses, 1);
	cr_assert_eq(s.hits, 2);
	cr_assert_eq(s.registrations, 1);
	teardown();
}

Test(softnic_rcache, invalidated_region_keeps_its_key_while_held)
{
	struct sp_region *held;
	struct sp_rcache_stats s;

	fill_pattern(src, 512, 9);
	cr_assert_eq(write_through_cache(0, 512, &held), VB_WC_SUCCESS);
	size_t n;
	cr_assert_eq(sp_rcache_invalidate(c, src, 1, &n), 0);
	cr_assert_eq(n, 1);
	sp_rcache_collect(c);
	/* The held region is out of the cache but still registered: its key works. */
	struct vb_mr *mr = sp_region_handle(held);
	fill_pattern(src, 512, 10);
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 2, src, 512, mr->lkey, (uintptr_t)dst,
			       dst_mr->rkey, VB_SEND_SIGNALED),
		     0);
	cr_assert_eq(tpair_wait(p.a.scq).status, VB_WC_SUCCESS);
	cr_assert(check_pattern(dst, 512, 10));
	uint32_t old_key = mr->lkey;
	sp_rcache_put(c, held);
	/* Now it is deregistered: the old key fails, a new get registers anew. */
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 3, src, 512, old_key, (uintptr_t)dst,
			       dst_mr->rkey, VB_SEND_SIGNALED),
		     0);
	/* soft-RoCE calls a bad lkey a local QP operation error. */
	enum vb_wc_status st = tpair_wait(p.a.scq).status;
	cr_assert(tdev_status_ok(st, VB_WC_LOC_PROT_ERR, VB_WC_LOC_QP_OP_ERR), "%s",
		  vb_wc_status_str(st));
	sp_rcache_get_stats(c, &s);
	cr_assert_eq(s.deregistrations, 1);
	cr_assert_eq(s.regions, 0);
	teardown();
}

Test(softnic_rcache, eviction_under_a_limit_keeps_held_regions)
{
	struct sp_region *held[4];
	struct sp_rcache_stats s;

	/* Four separate regions (a page of gap between), all held: the limit is reached. */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(write_through_cache((size_t)i * 2 * LEN / 4, 100, &held[i]),
			     VB_WC_SUCCESS);
	struct sp_region *r = NULL;
	cr_assert_eq(sp_rcache_get(c, src + 5 * LEN, 100, 0, &r), ENOBUFS);
	for (int i = 0; i < 4; i++) {
		struct vb_mr *mr = sp_region_handle(held[i]);
		cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 4, src + (size_t)i * 2 * LEN / 4,
				       100, mr->lkey, (uintptr_t)dst, dst_mr->rkey,
				       VB_SEND_SIGNALED),
			     0);
		cr_assert_eq(tpair_wait(p.a.scq).status, VB_WC_SUCCESS, "held keys stay valid");
		sp_rcache_put(c, held[i]);
	}
	cr_assert_eq(write_through_cache(5 * LEN, 100, NULL), VB_WC_SUCCESS);
	sp_rcache_get_stats(c, &s);
	cr_assert_eq(s.evictions, 1);
	cr_assert_eq(s.no_buffers, 1);
	cr_assert_leq(s.regions, 4);
	teardown();
}

Test(softnic_rcache, backend_errors_come_back_clean)
{
	struct sp_region *r = NULL;
	struct sp_rcache_stats s;

	/* Unmapped memory: the backend says EFAULT, nothing is cached or leaked. */
	cr_assert_eq(sp_rcache_get(c, (void *)0x1000, 100, 0, &r), EFAULT);
	cr_assert_null(r);
	sp_rcache_get_stats(c, &s);
	cr_assert_eq(s.registration_errors, 1);
	cr_assert_eq(s.regions, 0);
	teardown();
}

/*
 * A deregistration the NIC refuses (here: a window still bound to the
 * region) keeps the registration within reach: counted, tried again at the
 * next deregistration or collection, and never leaked (the device closes).
 */
Test(softnic_rcache, refused_deregistration_is_kept_and_retried)
{
	struct sp_watched_stats ws;
	struct sp_rcache_config cfg;
	struct sp_watched *w;
	struct sp_region *r;
	struct vb_mw *mw;

	sp_rcache_config_init(&cfg);
	/* No proxy: nothing is cached, the last put deregisters. */
	w = sp_watched_create(&cfg, p.a.pd, NULL);
	cr_assert_not_null(w);
	cr_assert_eq(sp_rcache_get(sp_watched_cache(w), src, LEN, VB_ACCESS_MW_BIND, &r), 0);
	mw = vb_alloc_mw(p.a.pd);
	cr_assert_not_null(mw);
	cr_assert_eq(vb_bind_mw(p.a.qp, mw, sp_watched_mr(r), src, LEN, VB_ACCESS_REMOTE_READ), 0);
	sp_rcache_put(sp_watched_cache(w), r);
	sp_watched_get_stats(w, &ws);
	cr_assert_eq(ws.dereg_failures, 1);
	cr_assert_eq(ws.dereg_pending, 1);
	sp_watched_collect(w);
	sp_watched_get_stats(w, &ws);
	cr_assert_eq(ws.dereg_pending, 1, "still refused while the window is bound");
	cr_assert_eq(vb_dealloc_mw(mw), 0);
	sp_watched_collect(w);
	sp_watched_get_stats(w, &ws);
	cr_assert_eq(ws.dereg_failures, 1);
	cr_assert_eq(ws.dereg_pending, 0);
	cr_assert_eq(sp_watched_destroy(w), 0);
	/* teardown() closes the device: it refuses while an MR is left. */
	teardown();
}
