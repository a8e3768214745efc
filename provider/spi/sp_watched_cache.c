/* SPDX-License-Identifier: BSD-2-Clause */
/* sp_rcache over the verbs_backend, watched through the kernel proxy. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "sp_watched_cache.h"

struct sp_watched_reg;

struct sp_watched {
	struct sp_rcache *cache;
	struct vb_pd *pd;
	struct kp_client *proxy;
	struct kp_sink sink;
	struct sp_watched_hub *hub; /* or the sink of its own */
	struct sp_watched *hub_next, *hub_prev;
	sp_watched_changed_fn changed; /* the owner's: remote keys over changed memory die */
	void *changed_arg;
	/*
	 * Registrations the NIC refused to release: kept, not forgotten, and
	 * tried again at every later deregistration, at sp_watched_collect()
	 * and at destroy.
	 */
	pthread_mutex_t stuck_lock;
	struct sp_watched_reg *stuck;
	_Atomic uint64_t n_stuck;
	_Atomic uint64_t dereg_failures;
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
	uint64_t kp_handle;	     /* 0: not secured */
	struct sp_watched_reg *next; /* on the stuck list */
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

/* Try the stuck registrations again; those the NIC still refuses stay.  How many are left. */
static uint64_t stuck_retry(struct sp_watched *w)
{
	struct sp_watched_reg *h, *left = NULL;
	uint64_t n = 0;

	if (!atomic_load_explicit(&w->n_stuck, memory_order_relaxed))
		return 0;
	pthread_mutex_lock(&w->stuck_lock);
	h = w->stuck;
	w->stuck = NULL;
	while (h) {
		struct sp_watched_reg *next = h->next;
		if (vb_dereg_mr(h->mr)) {
			h->next = left;
			left = h;
			n++;
		} else {
			free(h);
		}
		h = next;
	}
	w->stuck = left;
	atomic_store(&w->n_stuck, n);
	pthread_mutex_unlock(&w->stuck_lock);
	return n;
}

static void watched_dereg(void *ctx, void *handle)
{
	struct sp_watched *w = ctx;
	struct sp_watched_reg *h = handle;

	/* Nothing of the cache stands for the range any more: it need not be watched. */
	if (h->kp_handle)
		kp_unsecure(w->proxy, h->kp_handle);
	h->kp_handle = 0;
	if (vb_dereg_mr(h->mr)) {
		/* Still registered (a window bound to it, a NIC error): keep it within reach. */
		pthread_mutex_lock(&w->stuck_lock);
		h->next = w->stuck;
		w->stuck = h;
		atomic_fetch_add(&w->n_stuck, 1);
		atomic_fetch_add(&w->dereg_failures, 1);
		pthread_mutex_unlock(&w->stuck_lock);
		return;
	}
	free(h);
	stuck_retry(w);
}

static void watched_changed(void *ctx, uintptr_t start, uintptr_t end)
{
	struct sp_watched *w = ctx;

	if (w->changed)
		w->changed(w->changed_arg, start, end);
}

static const struct sp_rcache_ops watched_ops = {
	.reg = watched_reg,
	.dereg = watched_dereg,
	.changed = watched_changed,
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
	ret = pthread_mutex_init(&w->stuck_lock, NULL);
	if (ret)
		goto err;
	w->cache = sp_rcache_create(cfg, &watched_ops, w);
	if (!w->cache) {
		ret = errno;
		goto err_lock;
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
err_lock:
	pthread_mutex_destroy(&w->stuck_lock);
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
	uint64_t left;
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
	/* The last try: what the NIC still refuses now outlives the cache (EIO says so). */
	left = stuck_retry(w);
	while (w->stuck) {
		struct sp_watched_reg *h = w->stuck;
		w->stuck = h->next;
		free(h);
	}
	pthread_mutex_destroy(&w->stuck_lock);
	free(w);
	return left ? EIO : 0;
}

void sp_watched_set_changed(struct sp_watched *w, sp_watched_changed_fn fn, void *arg)
{
	w->changed_arg = arg;
	w->changed = fn;
}

void sp_watched_collect(struct sp_watched *w)
{
	sp_rcache_collect(w->cache);
	stuck_retry(w);
}

void sp_watched_get_stats(struct sp_watched *w, struct sp_watched_stats *s)
{
	s->dereg_failures = atomic_load(&w->dereg_failures);
	s->dereg_pending = atomic_load(&w->n_stuck);
}

struct sp_rcache *sp_watched_cache(struct sp_watched *w)
{
	return w->cache;
}

struct vb_mr *sp_watched_mr(const struct sp_region *region)
{
	return ((const struct sp_watched_reg *)sp_region_handle(region))->mr;
}
