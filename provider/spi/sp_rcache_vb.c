/* SPDX-License-Identifier: BSD-2-Clause */
/* Registration through the verbs_backend ops table: the cache's usual ops. */
#include <errno.h>

#include "sp_watched_cache.h"
#include "vb.h"

/* A tail call: a miss returns from the backend straight into the cache. */
static void *vb_cache_reg(void *ctx, void *addr, size_t len, unsigned int access,
			  unsigned int *flags)
{
	(void)flags;
	return vb_reg_mr(ctx, addr, len, access);
}

static void vb_cache_dereg(void *ctx, void *handle)
{
	(void)ctx;
	vb_dereg_mr(handle);
}

const struct sp_rcache_ops sp_rcache_vb_ops = {
	.reg = vb_cache_reg,
	.dereg = vb_cache_dereg,
};
