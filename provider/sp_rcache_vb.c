/* SPDX-License-Identifier: BSD-2-Clause */
/* Registration through the verbs_backend ops table: the cache's usual ops. */
#include <errno.h>

#include "sp_rcache.h"
#include "vb.h"

static int vb_cache_reg(void *ctx, void *addr, size_t len, unsigned int access, void **handle,
			unsigned int *flags)
{
	(void)flags;
	struct vb_mr *mr = vb_reg_mr(ctx, addr, len, access);

	if (!mr)
		return errno ? errno : EIO;
	*handle = mr;
	return 0;
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
