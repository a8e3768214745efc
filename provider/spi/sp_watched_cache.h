/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The provider's registration cache as it runs: sp_rcache registering
 * through the verbs_backend and securing every cached range through the
 * kernel proxy, whose events invalidate what changes.  A range the proxy
 * cannot watch is registered for its one use and never cached.
 */
#ifndef SANPROV_SP_WATCHED_H
#define SANPROV_SP_WATCHED_H

#include "kp_client.h"
#include "sp_rcache.h"
#include "vb.h"

/* Registration through the verbs_backend: ctx is a struct vb_pd *. */
extern const struct sp_rcache_ops sp_rcache_vb_ops;

struct sp_watched;
struct sp_watched_hub;

/* NULL with errno.  Without a proxy (NULL) nothing is ever cached. */
struct sp_watched *sp_watched_create(const struct sp_rcache_config *cfg, struct vb_pd *pd,
				     struct kp_client *proxy);
/*
 * One proxy sink serving many caches (the proxy has room for few sinks):
 * NULL with errno.  Destroying it: EBUSY while a cache is in it.
 */
struct sp_watched_hub *sp_watched_hub_create(struct kp_client *proxy);
int sp_watched_hub_destroy(struct sp_watched_hub *hub);
/* A cache whose events come through hub. */
struct sp_watched *sp_watched_create_in(const struct sp_rcache_config *cfg, struct vb_pd *pd,
					struct sp_watched_hub *hub);
/*
 * EBUSY while a region is held (nothing done).  EIO: destroyed, but the NIC
 * refused to release some registration even now (it stays registered).
 */
int sp_watched_destroy(struct sp_watched *w);

/*
 * The owner's hook for memory that changed (the proxy's events and
 * sp_rcache_invalidate(), see sp_rcache_ops.changed): [start, end) no
 * longer holds what was registered there.  Called on the proxy's event
 * thread too: it must take no lock that a thread changing memory may hold.
 * Set it before the first registration.
 */
typedef void (*sp_watched_changed_fn)(void *arg, uintptr_t start, uintptr_t end);
void sp_watched_set_changed(struct sp_watched *w, sp_watched_changed_fn fn, void *arg);

/* The cache's sp_rcache_collect(), and another try at what the NIC refused to release. */
void sp_watched_collect(struct sp_watched *w);

struct sp_watched_stats {
	uint64_t dereg_failures; /* deregistrations the NIC refused (each kept and retried) */
	uint64_t dereg_pending;	 /* gauge: registrations still waiting for another try */
};
void sp_watched_get_stats(struct sp_watched *w, struct sp_watched_stats *s);

struct sp_rcache *sp_watched_cache(struct sp_watched *w);

/* The memory region of a region got from sp_watched_cache(). */
struct vb_mr *sp_watched_mr(const struct sp_region *region);

#endif
