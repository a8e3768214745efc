/* SPDX-License-Identifier: BSD-2-Clause */
/* Backend selection by name, and completion of partial ops tables. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vb_internal.h"

#define VB_MAX_BACKENDS 8

void vb_ops_complete(struct vb_ops *dst, const struct vb_ops *src)
{
	const struct vb_ops *d = &vb_unsupported_ops;

	*dst = *src;
#define VB_FILL(member)                                                                            \
	do {                                                                                       \
		if (!dst->member)                                                                  \
			dst->member = d->member;                                                   \
	} while (0)
	VB_FILL(accept_request);
	VB_FILL(alloc_mw);
	VB_FILL(alloc_pd);
	VB_FILL(bind_mw);
	VB_FILL(buf_alloc);
	VB_FILL(buf_free);
	VB_FILL(close_device);
	VB_FILL(connect);
	VB_FILL(create_cq);
	VB_FILL(create_listener);
	VB_FILL(create_qp);
	VB_FILL(dealloc_mw);
	VB_FILL(dealloc_pd);
	VB_FILL(dereg_mr);
	VB_FILL(destroy_cq);
	VB_FILL(destroy_listener);
	VB_FILL(destroy_qp);
	VB_FILL(export_listener);
	VB_FILL(get_cq_event);
	VB_FILL(get_request);
	VB_FILL(import_listener);
	VB_FILL(open_device);
	VB_FILL(poll_cq);
	VB_FILL(post_recv);
	VB_FILL(post_send);
	VB_FILL(query_device);
	VB_FILL(query_port);
	VB_FILL(query_qp);
	VB_FILL(reg_mr);
	VB_FILL(reject_request);
	VB_FILL(req_notify_cq);
#undef VB_FILL
	if (!dst->description)
		dst->description = "";
}

static struct vb_ops completed[VB_MAX_BACKENDS];
static const char *names[VB_MAX_BACKENDS + 1];
static unsigned int n_backends;
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;

static void registry_init(void)
{
	for (unsigned int i = 0; vb_builtin_backends[i] && i < VB_MAX_BACKENDS; i++) {
		vb_ops_complete(&completed[i], vb_builtin_backends[i]);
		names[i] = completed[i].name;
		n_backends = i + 1;
	}
	names[n_backends] = NULL;
}

const char *const *vb_backend_names(void)
{
	pthread_once(&registry_once, registry_init);
	return names;
}

const struct vb_ops *vb_backend_find(const char *name)
{
	pthread_once(&registry_once, registry_init);
	if (!name || !*name)
		name = getenv("SANPROV_BACKEND");
	if (!name || !*name)
		name = VB_DEFAULT_BACKEND;
	for (unsigned int i = 0; i < n_backends; i++)
		if (!strcmp(completed[i].name, name))
			return &completed[i];
	errno = ENOENT;
	return NULL;
}

struct vb_device *vb_open_device(const char *backend, const char *dev_name)
{
	const struct vb_ops *ops = vb_backend_find(backend);

	if (!ops)
		return NULL;
	if (!dev_name || !*dev_name)
		dev_name = getenv("SANPROV_DEVICE");
	return ops->open_device(ops, dev_name && *dev_name ? dev_name : NULL);
}
