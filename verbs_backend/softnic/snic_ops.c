/* SPDX-License-Identifier: BSD-2-Clause */
/* The softnic backend's ops table. */
#include "snic.h"

const struct vb_ops vb_softnic_ops = {
	.name = "softnic",
	.description = "embedded emulated RDMA NIC (shared memory and cross-memory attach)",
	.accept_request = snic_accept_request,
	.alloc_pd = snic_alloc_pd,
	.buf_alloc = snic_buf_alloc,
	.buf_free = snic_buf_free,
	.close_device = snic_close_device,
	.connect = snic_connect,
	.create_cq = snic_create_cq,
	.create_listener = snic_create_listener,
	.create_qp = snic_create_qp,
	.dealloc_pd = snic_dealloc_pd,
	.dereg_mr = snic_dereg_mr,
	.destroy_cq = snic_destroy_cq,
	.destroy_listener = snic_destroy_listener,
	.destroy_qp = snic_destroy_qp,
	.get_cq_event = snic_get_cq_event,
	.get_request = snic_get_request,
	.open_device = snic_open_device,
	.poll_cq = snic_poll_cq,
	.post_recv = snic_post_recv,
	.post_send = snic_post_send,
	.query_device = snic_query_device,
	.query_port = snic_query_port,
	.query_qp = snic_query_qp,
	.reg_mr = snic_reg_mr,
	.reject_request = snic_reject_request,
	.req_notify_cq = snic_req_notify_cq,
};
