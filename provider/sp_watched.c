/* SPDX-License-Identifier: BSD-2-Clause */
/* sp_rcache over the verbs_backend, watched through the kernel proxy. */
#include <errno.h>
#include <stdlib.h>

#include "sp_watched.h"

struct sp_watched {
	struct sp_rcache *cache;
	struct vb_pd *pd;
	struct kp_client *proxy;
	struct kp_sink sink;
};

struct sp_watched_reg {
	struct vb_mr *mr;
	uint64_t kp_handle; /* 0: not secured */
};

static void *watched_reg(void *ctx, void *addr, size_t len, unsigned int access,
			 unsigned int *flags)
{
	struct sp_watched *w = ctx;
	struct sp_watched_reg *h = calloc(1, sizeof(*h));
	uint32_t st;
	int ret;

	if (!h) {
		errno = ENOMEM;
		return NULL;
	}
	/* Register first: pinning populates the pages, so securing them (which
	 * routes missing-page faults to the proxy) never sees a missing page. */
	h->mr = vb_reg_mr(w->pd, addr, len, access);
	if (!h->mr) {
		ret = errno ? errno : EIO;
		free(h);
		errno = ret;
		return NULL;
	}
	st =
	    !w->proxy
		? KP_E_UNWATCHABLE
		: kp_secure(w->proxy, (uintptr_t)addr, len,
			    KP_ACCESS_READ | (access & VB_ACCESS_LOCAL_WRITE ? KP_ACCESS_WRITE : 0),
			    &h->kp_handle);
	if (st) {
		/* Unwatchable (or gone meanwhile): usable now, never cached. */
		h->kp_handle = 0;
		*flags |= SP_RCACHE_REG_NOCACHE;
	}
	return h;
}

static void watched_dereg(void *ctx, void *handle)
{
	struct sp_watched *w = ctx;
	struct sp_watched_reg *h = handle;

	if (h->kp_handle)
		kp_unsecure(w->proxy, h->kp_handle);
	vb_dereg_mr(h->mr);
	free(h);
}

static const struct sp_rcache_ops watched_ops = {
	.reg = watched_reg,
	.dereg = watched_dereg,
};

static void sink_begin(void *arg)
{
	sp_rcache_events_begin(((struct sp_watched *)arg)->cache);
}

static void sink_changed(void *arg, uint32_t kind, uint64_t addr, uint64_t len)
{
	(void)kind;
	sp_rcache_invalidate_deferred(((struct sp_watched *)arg)->cache, (void *)(uintptr_t)addr,
				      len);
}

static void sink_end(void *arg)
{
	sp_rcache_events_end(((struct sp_watched *)arg)->cache);
}

struct sp_watched *sp_watched_create(const struct sp_rcache_config *cfg, struct vb_pd *pd,
				     struct kp_client *proxy)
{
	struct sp_watched *w;
	int ret;

	if (!cfg || !pd) {
		errno = EINVAL;
		return NULL;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		errno = ENOMEM;
		return NULL;
	}
	w->pd = pd;
	w->proxy = proxy;
	w->cache = sp_rcache_create(cfg, &watched_ops, w);
	if (!w->cache) {
		ret = errno;
		goto err;
	}
	w->sink = (struct kp_sink){
		.begin = sink_begin, .changed = sink_changed, .end = sink_end, .arg = w
	};
	ret = proxy ? kp_client_add_sink(proxy, &w->sink) : 0;
	if (ret)
		goto err_cache;
	return w;

err_cache:
	sp_rcache_destroy(w->cache);
err:
	free(w);
	errno = ret;
	return NULL;
}

int sp_watched_destroy(struct sp_watched *w)
{
	int ret;

	if (!w)
		return 0;
	if (w->proxy)
		kp_client_remove_sink(w->proxy, &w->sink);
	ret = sp_rcache_destroy(w->cache);
	if (ret) {
		if (w->proxy)
			kp_client_add_sink(w->proxy, &w->sink);
		return ret;
	}
	free(w);
	return 0;
}

struct sp_rcache *sp_watched_cache(struct sp_watched *w)
{
	return w->cache;
}

struct vb_mr *sp_watched_mr(const struct sp_region *region)
{
	return ((const struct sp_watched_reg *)sp_region_handle(region))->mr;
}
