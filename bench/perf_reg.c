/* SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kp_client.h"
#include "perf.h"
#include "perf_reg.h"
#include "sp_watched_cache.h"

#define PERF_REG_PAGE 4096u

const char *const perf_reg_names[PERF_N_REGS] = {
	[PERF_REG_ONCE] = "once",
	[PERF_REG_OP] = "op",
	[PERF_REG_CACHE] = "cache",
};

void perf_reg_close(struct perf_reg *r)
{
	if (r->watched)
		sp_watched_destroy(r->watched);
	if (r->proxy)
		kp_client_close(r->proxy);
	perf_buf_free(r->dev, r->shared, r->slots, PERF_REG_SLOTS * r->slot_len);
	memset(r, 0, sizeof(*r));
}

int perf_reg_open(struct perf_reg *r, enum perf_reg_mode mode, struct vb_device *dev,
		  struct vb_pd *pd, size_t max_size, bool shared)
{
	struct sp_rcache_config cfg;
	int ret;

	memset(r, 0, sizeof(*r));
	r->mode = mode;
	if (mode == PERF_REG_ONCE)
		return 0;
	if (!max_size || max_size > SIZE_MAX / PERF_REG_SLOTS - PERF_REG_PAGE)
		return EINVAL;
	r->dev = dev;
	r->pd = pd;
	r->shared = shared;
	r->slot_len = (max_size + PERF_REG_PAGE - 1) & ~(size_t)(PERF_REG_PAGE - 1);
	r->slots = perf_buf_alloc(dev, shared, PERF_REG_SLOTS * r->slot_len);
	if (!r->slots) {
		ret = errno;
		goto err;
	}
	if (mode != PERF_REG_CACHE)
		return 0;
	/* The provider's cache is never stale because the proxy watches what it
	 * holds; measuring it without the proxy would flatter it. */
	r->proxy = kp_client_open();
	if (!r->proxy) {
		ret = errno;
		fprintf(stderr, "sanprov_perf: --reg=cache needs the kernel proxy: %s\n",
			strerror(ret));
		goto err;
	}
	sp_rcache_config_init(&cfg);
	r->watched = sp_watched_create(&cfg, pd, r->proxy);
	if (!r->watched) {
		ret = errno;
		fprintf(stderr, "sanprov_perf: registration cache: %s\n", strerror(ret));
		goto err;
	}
	return 0;
err:
	perf_reg_close(r);
	return ret;
}

int perf_reg_get(struct perf_reg *r, uint32_t k, uint32_t size, struct perf_lbuf *b)
{
	int ret;

	memset(b, 0, sizeof(*b));
	b->addr = r->slots + (size_t)(k % PERF_REG_SLOTS) * r->slot_len;
	if (r->mode == PERF_REG_OP) {
		b->mr = vb_reg_mr(r->pd, b->addr, size, VB_ACCESS_LOCAL_WRITE);
		if (!b->mr)
			return errno ? errno : EIO;
		b->lkey = b->mr->lkey;
		return 0;
	}
	ret = sp_rcache_get(sp_watched_cache(r->watched), b->addr, size, VB_ACCESS_LOCAL_WRITE,
			    &b->region);
	if (ret)
		return ret;
	b->lkey = sp_watched_mr(b->region)->lkey;
	return 0;
}

void perf_reg_put(struct perf_reg *r, struct perf_lbuf *b)
{
	if (b->mr)
		vb_dereg_mr(b->mr);
	if (b->region)
		sp_rcache_put(sp_watched_cache(r->watched), b->region);
	b->mr = NULL;
	b->region = NULL;
}

void perf_reg_report(struct perf_reg *r, FILE *f)
{
	struct sp_rcache_stats st;

	if (r->mode != PERF_REG_CACHE)
		return;
	sp_rcache_get_stats(sp_watched_cache(r->watched), &st);
	fprintf(f, "sanprov_perf: registration cache: %llu hits, %llu misses, %llu registrations\n",
		(unsigned long long)st.hits, (unsigned long long)st.misses,
		(unsigned long long)st.registrations);
}
