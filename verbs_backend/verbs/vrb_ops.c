/* SPDX-License-Identifier: BSD-2-Clause */
/* The verbs backend's ops table. */
#include "vrb.h"

const struct vb_ops vb_verbs_ops = {
	.name = "verbs",
	.description = "libibverbs + librdmacm: real RDMA NICs and soft-RoCE",
	.accept_request = vrb_accept_request,
	.alloc_pd = vrb_alloc_pd,
	.buf_alloc = vrb_buf_alloc,
	.buf_free = vrb_buf_free,
	.close_device = vrb_close_device,
	.connect = vrb_connect,
	.create_cq = vrb_create_cq,
	.create_listener = vrb_create_listener,
	.create_qp = vrb_create_qp,
	.dealloc_pd = vrb_dealloc_pd,
	.dereg_mr = vrb_dereg_mr,
	.destroy_cq = vrb_destroy_cq,
	.destroy_listener = vrb_destroy_listener,
	.destroy_qp = vrb_destroy_qp,
	.get_cq_event = vrb_get_cq_event,
	.get_request = vrb_get_request,
	.open_device = vrb_open_device,
	.poll_cq = vrb_poll_cq,
	.post_recv = vrb_post_recv,
	.post_send = vrb_post_send,
	.query_device = vrb_query_device,
	.query_port = vrb_query_port,
	.query_qp = vrb_query_qp,
	.reg_mr = vrb_reg_mr,
	.reject_request = vrb_reject_request,
	.req_notify_cq = vrb_req_notify_cq,
};
