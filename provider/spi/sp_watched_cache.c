/* SPDX-License-Identifier: BSD-2-Clause */
/* sp_rcache over the verbs_backend, watched through the kernel proxy. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "sp_watched_cache.h"

struct sp_watched {
	struct sp_rcache *cache;
	struct vb_pd *pd;
	struct kp_client *proxy;
	struct kp_sink sink;
	struct sp_watched_hub *hub; /* or the sink of its own */
	struct sp_watched *hub_next, *hub_prev;
};

/*
 * One sink for many caches: the proxy serves a handful of sinks, a
 * provider has a cache per connection.  The event thread holds the lock
 * for reading from a batch's begin() to its end(); adding and removing a
 * cache only link and unlink it under the lock for writing (nothing there
 * changes memory, which could wait for the event thread).
 */
struct sp_watched_hub {
	struct kp_client *proxy;
	struct kp_sink sink;
	pthread_rwlock_t lock;
	struct sp_watched *head;
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

static void hub_begin(void *arg)
{
	struct sp_watched_hub *hub = arg;

	pthread_rwlock_rdlock(&hub->lock);
	for (struct sp_watched *w = hub->head; w; w = w->hub_next)
		sp_rcache_events_begin(w->cache);
}

static void hub_changed(void *arg, uint32_t kind, uint64_t addr, uint64_t len)
{
	struct sp_watched_hub *hub = arg;

	for (struct sp_watched *w = hub->head; w; w = w->hub_next)
		sink_changed(w, kind, addr, len);
}

static void hub_end(void *arg)
{
	struct sp_watched_hub *hub = arg;

	for (struct sp_watched *w = hub->head; w; w = w->hub_next)
		sp_rcache_events_end(w->cache);
	pthread_rwlock_unlock(&hub->lock);
}

struct sp_watched_hub *sp_watched_hub_create(struct kp_client *proxy)
{
	struct sp_watched_hub *hub;
	int ret;

	if (!proxy) {
		errno = EINVAL;
		return NULL;
	}
	hub = calloc(1, sizeof(*hub));
	if (!hub) {
		errno = ENOMEM;
		return NULL;
	}
	hub->proxy = proxy;
	ret = pthread_rwlock_init(&hub->lock, NULL);
	if (ret)
		goto err_free;
	hub->sink = (struct kp_sink){
		.begin = hub_begin, .changed = hub_changed, .end = hub_end, .arg = hub
	};
	ret = kp_client_add_sink(proxy, &hub->sink);
	if (ret)
		goto err_lock;
	return hub;

err_lock:
	pthread_rwlock_destroy(&hub->lock);
err_free:
	free(hub);
	errno = ret;
	return NULL;
}

int sp_watched_hub_destroy(struct sp_watched_hub *hub)
{
	if (!hub)
		return 0;
	if (hub->head)
		return EBUSY;
	kp_client_remove_sink(hub->proxy, &hub->sink);
	pthread_rwlock_destroy(&hub->lock);
	free(hub);
	return 0;
}

static void hub_link(struct sp_watched_hub *hub, struct sp_watched *w)
{
	pthread_rwlock_wrlock(&hub->lock);
	w->hub_prev = NULL;
	w->hub_next = hub->head;
	if (hub->head)
		hub->head->hub_prev = w;
	hub->head = w;
	pthread_rwlock_unlock(&hub->lock);
}

static void hub_unlink(struct sp_watched_hub *hub, struct sp_watched *w)
{
	pthread_rwlock_wrlock(&hub->lock);
	if (w->hub_prev)
		w->hub_prev->hub_next = w->hub_next;
	else
		hub->head = w->hub_next;
	if (w->hub_next)
		w->hub_next->hub_prev = w->hub_prev;
	pthread_rwlock_unlock(&hub->lock);
}

static struct sp_watched *watched_create(const struct sp_rcache_config *cfg, struct vb_pd *pd,
					 struct kp_client *proxy, struct sp_watched_hub *hub)
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
	w->proxy = hub ? hub->proxy : proxy;
	w->hub = hub;
	w->cache = sp_rcache_create(cfg, &watched_ops, w);
	if (!w->cache) {
		ret = errno;
		goto err;
	}
	w->sink = (struct kp_sink){
		.begin = sink_begin, .changed = sink_changed, .end = sink_end, .arg = w
	};
	if (hub)
		hub_link(hub, w);
	else if (proxy && (ret = kp_client_add_sink(proxy, &w->sink)))
		goto err_cache;
	return w;

err_cache:
	sp_rcache_destroy(w->cache);
err:
	free(w);
	errno = ret;
	return NULL;
}

struct sp_watched *sp_watched_create(const struct sp_rcache_config *cfg, struct vb_pd *pd,
				     struct kp_client *proxy)
{
	return watched_create(cfg, pd, proxy, NULL);
}

struct sp_watched *sp_watched_create_in(const struct sp_rcache_config *cfg, struct vb_pd *pd,
					struct sp_watched_hub *hub)
{
	if (!hub) {
		errno = EINVAL;
		return NULL;
	}
	return watched_create(cfg, pd, NULL, hub);
}

int sp_watched_destroy(struct sp_watched *w)
{
	int ret;

	if (!w)
		return 0;
	if (w->hub)
		hub_unlink(w->hub, w);
	else if (w->proxy)
		kp_client_remove_sink(w->proxy, &w->sink);
	ret = sp_rcache_destroy(w->cache);
	if (ret) {
		if (w->hub)
			hub_link(w->hub, w);
		else if (w->proxy)
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
