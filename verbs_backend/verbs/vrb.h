/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The verbs backend: the ops table over libibverbs, with librdmacm for
 * connections.  It works on any verbs device (mlx5, soft-RoCE, ...) and
 * knows none in particular.
 *
 * The vb_* values of access flags, opcodes, send flags, QP states and
 * completion statuses are libibverbs' own, so work requests and
 * completions pass through field by field, statuses unchanged.
 */
#ifndef SANPROV_VRB_H
#define SANPROV_VRB_H

#include <infiniband/verbs.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "../vb_internal.h"

struct vrb_qp;

/* CQ entries kept for window binds' completions, beyond what the caller asks for. */
#define VRB_CQ_BIND_ROOM 1024 /* entries a CQ grows by for binds, at its first */

/*
 * A connected QP's place in the device's table: its connection events
 * carry the slot and its generation, so that the CM thread finds the QP
 * without a walk, and an event that was waiting when the QP went finds
 * nothing.
 */
struct vrb_watched {
	struct vrb_qp *qp; /* NULL: free */
	uint32_t gen;
	uint32_t next_free;
};

struct vrb_dev {
	struct vb_device vdev;
	struct ibv_context *ctx;
	struct ibv_device_attr attr;
	uint8_t port;
	int gid_index;
	/* Connection events of every connected QP: a disconnect moves the QP to the error state. */
	int epoll_fd;
	int stop_fd;
	pthread_t cm_thread;
	pthread_mutex_t lock; /* the table of connected QPs */
	struct vrb_watched *watched;
	uint32_t n_watched, cap_watched; /* slots used (some free), allocated */
	uint32_t free_watched;		 /* first free slot, or UINT32_MAX */
	_Atomic uint64_t n_cm_looks;	 /* table slots the CM thread looked at */
	_Atomic int objects; /* PDs, MRs, CQs, QPs, listeners: close_device refuses while any */
	bool mw_type2;	     /* the device binds type 2 windows (checked at open) */
	pthread_mutex_t buf_lock;
	struct vrb_buf *bufs; /* from buf_alloc, so that buf_free can refuse what is not */
};

struct vrb_buf {
	struct vrb_buf *next;
	void *addr;
	size_t len;
};

struct vrb_pd {
	struct vb_pd vpd;
	struct ibv_pd *pd;
};

struct vrb_mr {
	struct vb_mr vmr;
	struct ibv_mr *mr;
};

struct vrb_mw {
	struct vb_mw vmw;
	struct ibv_mw *mw;
	bool bound; /* a type 2 window is bound once */
};

struct vrb_cq {
	struct vb_cq vcq;
	struct ibv_comp_channel *channel;
	struct ibv_cq *cq;
	_Atomic bool overrun; /* the device reported a CQ error: completions were lost */
	/*
	 * Entries kept beyond vcq.cqe for window binds' completions, which
	 * vrb_poll_cq() swallows: what is left of them.  None until a QP on
	 * this CQ binds a window (the CQ then grows: vrb_cq_grow_bind_room()),
	 * so a CQ that carries no binds overflows exactly past vcq.cqe.
	 */
	_Atomic int bind_room;
	int binds_room_given; /* entries added for binds so far (grow_lock) */
	pthread_mutex_t grow_lock;
};

struct vrb_qp {
	struct vb_qp vqp;
	struct ibv_qp *qp;
	struct rdma_event_channel *ech; /* this QP's connection */
	struct rdma_cm_id *id;
	bool watched; /* in dev->watched[slot] */
	uint32_t slot;
	_Atomic bool disconnected;
};

struct vrb_listener {
	struct vb_listener vl;
	struct rdma_event_channel *ech;
	struct rdma_cm_id *id;
};

static inline struct vrb_dev *vrb_dev_of(struct vb_device *d)
{
	return vb_container_of(d, struct vrb_dev, vdev);
}

static inline struct vrb_qp *vrb_qp_of(struct vb_qp *q)
{
	return vb_container_of(q, struct vrb_qp, vqp);
}

static inline struct vrb_cq *vrb_cq_of(struct vb_cq *c)
{
	return vb_container_of(c, struct vrb_cq, vcq);
}

/* vrb_dev.c */
struct vb_device *vrb_open_device(const struct vb_ops *ops, const char *name);
int vrb_close_device(struct vb_device *vdev);
int vrb_query_device(struct vb_device *vdev, struct vb_device_attr *attr);
int vrb_query_port(struct vb_device *vdev, struct vb_port_attr *attr);
struct vb_pd *vrb_alloc_pd(struct vb_device *vdev);
int vrb_dealloc_pd(struct vb_pd *vpd);
struct vb_mr *vrb_reg_mr(struct vb_pd *vpd, void *addr, size_t length, uint64_t iova,
			 unsigned int access);
int vrb_dereg_mr(struct vb_mr *vmr);
struct vb_mw *vrb_alloc_mw(struct vb_pd *vpd);
int vrb_dealloc_mw(struct vb_mw *vmw);
void *vrb_buf_alloc(struct vb_device *vdev, size_t length);
int vrb_buf_free(struct vb_device *vdev, void *buf, size_t length);
struct vb_cq *vrb_create_cq(struct vb_device *vdev, int cqe);
int vrb_destroy_cq(struct vb_cq *vcq);
int vrb_cq_grow_bind_room(struct vrb_cq *cq);
int vrb_req_notify_cq(struct vb_cq *vcq);
int vrb_get_cq_event(struct vb_cq *vcq);
int vrb_poll_cq(struct vb_cq *vcq, int max, struct vb_wc *wc, int *count);

/* vrb_qp.c */
struct vb_qp *vrb_create_qp(struct vb_pd *vpd, const struct vb_qp_init_attr *attr);
int vrb_destroy_qp(struct vb_qp *vqp);
int vrb_query_qp(struct vb_qp *vqp, enum vb_qp_state *state);
int vrb_post_send(struct vb_qp *vqp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr);
int vrb_post_recv(struct vb_qp *vqp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr);
int vrb_bind_mw(struct vb_qp *vqp, struct vb_mw *vmw, struct vb_mr *vmr, void *addr, size_t length,
		unsigned int access);

/* vrb_conn.c */
struct vb_listener *vrb_create_listener(struct vb_device *vdev, const struct sockaddr *addr,
					socklen_t addrlen, int backlog);
int vrb_destroy_listener(struct vb_listener *vl);
int vrb_connect(struct vb_qp *vqp, const struct sockaddr *addr, socklen_t addrlen,
		const struct vb_conn_param *param);
struct vb_conn_req *vrb_get_request(struct vb_listener *vl, int timeout_ms);
int vrb_accept_request(struct vb_conn_req *req, struct vb_qp *vqp,
		       const struct vb_conn_param *param);
int vrb_reject_request(struct vb_conn_req *req);
void *vrb_cm_thread(void *arg);
void vrb_disconnect(struct vrb_qp *qp);

#endif
