/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The default ops table: one EOPNOTSUPP stub per member.  The registry
 * fills every member a backend leaves out from here, so a missing
 * capability is an error the caller can read, never a NULL call.
 */
#include <errno.h>

#include "vb_internal.h"

/* No backend without get_request hands out a request: nothing to free. */
static int unsup_accept_request(struct vb_conn_req *req, struct vb_qp *qp,
				const struct vb_conn_param *p)
{
	(void)req, (void)qp, (void)p;
	return EOPNOTSUPP;
}

static struct vb_mw *unsup_alloc_mw(struct vb_pd *pd)
{
	(void)pd;
	errno = EOPNOTSUPP;
	return NULL;
}

static int unsup_bind_mw(struct vb_qp *qp, struct vb_mw *mw, struct vb_mr *mr, void *addr,
			 size_t length, unsigned int access)
{
	(void)qp, (void)mw, (void)mr, (void)addr, (void)length, (void)access;
	return EOPNOTSUPP;
}

static int unsup_dealloc_mw(struct vb_mw *mw)
{
	(void)mw;
	return EOPNOTSUPP;
}

static struct vb_pd *unsup_alloc_pd(struct vb_device *dev)
{
	(void)dev;
	errno = EOPNOTSUPP;
	return NULL;
}

static void *unsup_buf_alloc(struct vb_device *dev, size_t length)
{
	(void)dev, (void)length;
	errno = EOPNOTSUPP;
	return NULL;
}

static int unsup_buf_free(struct vb_device *dev, void *buf, size_t length)
{
	(void)dev, (void)buf, (void)length;
	return EOPNOTSUPP;
}

static int unsup_close_device(struct vb_device *dev)
{
	(void)dev;
	return EOPNOTSUPP;
}

static int unsup_connect(struct vb_qp *qp, const struct sockaddr *addr, socklen_t addrlen,
			 const struct vb_conn_param *p)
{
	(void)qp, (void)addr, (void)addrlen, (void)p;
	return EOPNOTSUPP;
}

static struct vb_cq *unsup_create_cq(struct vb_device *dev, int cqe)
{
	(void)dev, (void)cqe;
	errno = EOPNOTSUPP;
	return NULL;
}

static struct vb_listener *unsup_create_listener(struct vb_device *dev, const struct sockaddr *a,
						 socklen_t alen, int backlog)
{
	(void)dev, (void)a, (void)alen, (void)backlog;
	errno = EOPNOTSUPP;
	return NULL;
}

static struct vb_qp *unsup_create_qp(struct vb_pd *pd, const struct vb_qp_init_attr *attr)
{
	(void)pd, (void)attr;
	errno = EOPNOTSUPP;
	return NULL;
}

static int unsup_dealloc_pd(struct vb_pd *pd)
{
	(void)pd;
	return EOPNOTSUPP;
}

static int unsup_dereg_mr(struct vb_mr *mr)
{
	(void)mr;
	return EOPNOTSUPP;
}

static int unsup_destroy_cq(struct vb_cq *cq)
{
	(void)cq;
	return EOPNOTSUPP;
}

static int unsup_destroy_listener(struct vb_listener *lst)
{
	(void)lst;
	return EOPNOTSUPP;
}

static int unsup_destroy_qp(struct vb_qp *qp)
{
	(void)qp;
	return EOPNOTSUPP;
}

static int unsup_export_listener(struct vb_listener *lst, void *blob, size_t *len)
{
	(void)lst, (void)blob, (void)len;
	return EOPNOTSUPP;
}

static struct vb_listener *unsup_import_listener(struct vb_device *dev, const void *blob,
						 size_t len)
{
	(void)dev, (void)blob, (void)len;
	errno = EOPNOTSUPP;
	return NULL;
}

static int unsup_get_cq_event(struct vb_cq *cq)
{
	(void)cq;
	return EOPNOTSUPP;
}

static struct vb_conn_req *unsup_get_request(struct vb_listener *lst, int timeout_ms)
{
	(void)lst, (void)timeout_ms;
	errno = EOPNOTSUPP;
	return NULL;
}

static struct vb_device *unsup_open_device(const struct vb_ops *ops, const char *dev_name)
{
	(void)ops, (void)dev_name;
	errno = EOPNOTSUPP;
	return NULL;
}

static int unsup_poll_cq(struct vb_cq *cq, int max, struct vb_wc *wc, int *count)
{
	(void)cq, (void)max, (void)wc;
	*count = 0;
	return EOPNOTSUPP;
}

static int unsup_post_recv(struct vb_qp *qp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr)
{
	(void)qp;
	*bad_wr = wr;
	return EOPNOTSUPP;
}

static int unsup_post_send(struct vb_qp *qp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr)
{
	(void)qp;
	*bad_wr = wr;
	return EOPNOTSUPP;
}

static int unsup_query_device(struct vb_device *dev, struct vb_device_attr *attr)
{
	(void)dev, (void)attr;
	return EOPNOTSUPP;
}

static int unsup_query_port(struct vb_device *dev, struct vb_port_attr *attr)
{
	(void)dev, (void)attr;
	return EOPNOTSUPP;
}

static int unsup_query_qp(struct vb_qp *qp, enum vb_qp_state *state)
{
	(void)qp, (void)state;
	return EOPNOTSUPP;
}

static struct vb_mr *unsup_reg_mr(struct vb_pd *pd, void *addr, size_t length, uint64_t iova,
				  unsigned int access)
{
	(void)pd, (void)addr, (void)length, (void)iova, (void)access;
	errno = EOPNOTSUPP;
	return NULL;
}

static int unsup_reject_request(struct vb_conn_req *req)
{
	(void)req;
	return EOPNOTSUPP;
}

static int unsup_req_notify_cq(struct vb_cq *cq)
{
	(void)cq;
	return EOPNOTSUPP;
}

const struct vb_ops vb_unsupported_ops = {
	.name = "unsupported",
	.description = "every call answers EOPNOTSUPP",
	.accept_request = unsup_accept_request,
	.alloc_mw = unsup_alloc_mw,
	.alloc_pd = unsup_alloc_pd,
	.bind_mw = unsup_bind_mw,
	.buf_alloc = unsup_buf_alloc,
	.buf_free = unsup_buf_free,
	.close_device = unsup_close_device,
	.connect = unsup_connect,
	.create_cq = unsup_create_cq,
	.create_listener = unsup_create_listener,
	.create_qp = unsup_create_qp,
	.dealloc_mw = unsup_dealloc_mw,
	.dealloc_pd = unsup_dealloc_pd,
	.dereg_mr = unsup_dereg_mr,
	.destroy_cq = unsup_destroy_cq,
	.destroy_listener = unsup_destroy_listener,
	.destroy_qp = unsup_destroy_qp,
	.get_cq_event = unsup_get_cq_event,
	.get_request = unsup_get_request,
	.export_listener = unsup_export_listener,
	.import_listener = unsup_import_listener,
	.open_device = unsup_open_device,
	.poll_cq = unsup_poll_cq,
	.post_recv = unsup_post_recv,
	.post_send = unsup_post_send,
	.query_device = unsup_query_device,
	.query_port = unsup_query_port,
	.query_qp = unsup_query_qp,
	.reg_mr = unsup_reg_mr,
	.reject_request = unsup_reject_request,
	.req_notify_cq = unsup_req_notify_cq,
};
