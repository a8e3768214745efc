/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * verbs_backend: one ibverbs-shaped interface over every NIC the project runs on.
 *
 * A backend is a static const struct vb_ops table.  provider/ and the
 * registration cache are written once against the vb_* calls below and run
 * unchanged on the embedded softnic, on soft-RoCE and on real SAN NICs.
 *
 * Error convention: functions return 0 or a positive errno; constructors
 * return NULL and set errno.  Missing capabilities answer EOPNOTSUPP (the
 * registry fills every member a backend leaves out), so callers never test
 * a member for NULL.
 *
 * Numeric values of access flags, work-request opcodes, send flags and
 * completion statuses are those of libibverbs, so a status read on one
 * backend means the same on every other and the verbs backend passes the
 * hardware's statuses through unchanged.
 */
#ifndef SANPROV_VB_H
#define SANPROV_VB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Socket addresses and waitable objects of this OS (<os>/vb_os.h). */
#include "vb_os.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What an rdma_cm connect request carries (56 bytes) less the verbs backend's header. */
#define VB_MAX_PRIVATE_DATA 52
#define VB_NAME_MAX 64
/* The page a region's iova keeps its offset in (x86-64 Linux and Windows). */
#define VB_PAGE_SIZE 4096u

enum vb_access {
	VB_ACCESS_LOCAL_WRITE = 1,
	VB_ACCESS_REMOTE_WRITE = 2,
	VB_ACCESS_REMOTE_READ = 4,
	/* A region memory windows may be bound to (vb_bind_mw()). */
	VB_ACCESS_MW_BIND = 16,
};
#define VB_ACCESS_ALL (VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE | VB_ACCESS_REMOTE_READ)
/* Every flag a registration may carry. */
#define VB_ACCESS_VALID (VB_ACCESS_ALL | VB_ACCESS_MW_BIND)

enum vb_wr_opcode {
	VB_WR_RDMA_WRITE = 0,
	VB_WR_RDMA_WRITE_WITH_IMM = 1,
	VB_WR_SEND = 2,
	VB_WR_SEND_WITH_IMM = 3,
	VB_WR_RDMA_READ = 4,
};

enum vb_send_flags {
	VB_SEND_FENCE = 1,
	VB_SEND_SIGNALED = 2,
	VB_SEND_SOLICITED = 4,
	VB_SEND_INLINE = 8,
};

enum vb_wc_status {
	VB_WC_SUCCESS = 0,
	VB_WC_LOC_LEN_ERR = 1,
	VB_WC_LOC_QP_OP_ERR = 2,
	VB_WC_LOC_EEC_OP_ERR = 3,
	VB_WC_LOC_PROT_ERR = 4,
	VB_WC_WR_FLUSH_ERR = 5,
	VB_WC_MW_BIND_ERR = 6,
	VB_WC_BAD_RESP_ERR = 7,
	VB_WC_LOC_ACCESS_ERR = 8,
	VB_WC_REM_INV_REQ_ERR = 9,
	VB_WC_REM_ACCESS_ERR = 10,
	VB_WC_REM_OP_ERR = 11,
	VB_WC_RETRY_EXC_ERR = 12,
	VB_WC_RNR_RETRY_EXC_ERR = 13,
	VB_WC_LOC_RDD_VIOL_ERR = 14,
	VB_WC_REM_INV_RD_REQ_ERR = 15,
	VB_WC_REM_ABORT_ERR = 16,
	VB_WC_INV_EECN_ERR = 17,
	VB_WC_INV_EEC_STATE_ERR = 18,
	VB_WC_FATAL_ERR = 19,
	VB_WC_RESP_TIMEOUT_ERR = 20,
	VB_WC_GENERAL_ERR = 21,
};

enum vb_wc_opcode {
	VB_WC_SEND = 0,
	VB_WC_RDMA_WRITE = 1,
	VB_WC_RDMA_READ = 2,
	VB_WC_RECV = 128,
	VB_WC_RECV_RDMA_WITH_IMM = 129,
};

enum vb_wc_flags {
	VB_WC_WITH_IMM = 2,
};

enum vb_qp_state {
	VB_QPS_RESET = 0,
	VB_QPS_INIT = 1,
	VB_QPS_RTR = 2,
	VB_QPS_RTS = 3,
	VB_QPS_SQD = 4,
	VB_QPS_SQE = 5,
	VB_QPS_ERR = 6,
};

enum vb_port_state {
	VB_PORT_DOWN = 1,
	VB_PORT_ACTIVE = 4,
};

struct vb_device_attr {
	char name[VB_NAME_MAX];
	char backend[VB_NAME_MAX];
	uint64_t max_mr_size;
	uint64_t page_size_cap;
	uint32_t max_mr;
	uint32_t max_pd;
	uint32_t max_qp;
	uint32_t max_qp_wr;
	uint32_t max_sge;
	uint32_t max_cq;
	uint32_t max_cqe;
	uint32_t max_inline_data;
};

struct vb_port_attr {
	enum vb_port_state state;
	uint32_t max_msg_sz;
	uint32_t active_mtu; /* bytes */
	char link_layer[16];
};

struct vb_ops;

struct vb_device {
	const struct vb_ops *ops;
	char name[VB_NAME_MAX];
};

struct vb_pd {
	struct vb_device *dev;
	uint32_t handle;
};

struct vb_mr {
	struct vb_pd *pd;
	void *addr;
	size_t length;
	/*
	 * The address of addr's byte in work requests, local and remote:
	 * addr itself, or what vb_reg_mr_iova() asked for (a zero-based
	 * region tells a peer nothing of this process's address space).
	 */
	uint64_t iova;
	uint32_t lkey;
	uint32_t rkey;
	unsigned int access;
};

/*
 * A memory window of type 2: a remote key over part of a region, valid on
 * one QP only.  Unbound when allocated, bound once by vb_bind_mw() (a
 * verbs type 2 window would need an invalidation before a second bind:
 * allocate another instead), its rkey killed by vb_dealloc_mw().
 */
struct vb_mw {
	struct vb_pd *pd;
	uint32_t rkey;
};

/*
 * A CQ has its own completion channel: fd becomes readable after
 * vb_req_notify_cq() once a completion arrives; vb_get_cq_event() consumes
 * the event.
 */
struct vb_cq {
	struct vb_device *dev;
	vb_waitable fd;
	int cqe;
};

struct vb_qp_cap {
	uint32_t max_send_wr;
	uint32_t max_recv_wr;
	uint32_t max_send_sge;
	uint32_t max_recv_sge;
	uint32_t max_inline_data;
};

struct vb_qp_init_attr {
	struct vb_cq *send_cq;
	struct vb_cq *recv_cq;
	struct vb_qp_cap cap;
	int sq_sig_all;
};

struct vb_qp {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *send_cq;
	struct vb_cq *recv_cq;
	struct vb_qp_cap cap;
	uint32_t qp_num;
	uint8_t peer_private_data_len;
	uint8_t peer_private_data[VB_MAX_PRIVATE_DATA];
};

/* A passive endpoint; fd becomes readable when a connect request waits. */
struct vb_listener {
	struct vb_device *dev;
	vb_waitable fd;
	struct sockaddr_storage addr; /* the bound address (port filled in) */
};

/*
 * A connect request taken from a listener (vb_get_request()), not yet
 * answered.  The connecting side waits in vb_connect() until it is answered
 * with vb_accept_request() or vb_reject_request(), which both free it, or
 * until its own timeout.  A request belongs to whoever took it, not to the
 * listener: it stays valid (and must still be answered) after its listener
 * is destroyed; its device refuses to close (EBUSY) until it is answered.
 */
struct vb_conn_req {
	struct vb_device *dev;	      /* the listener's device */
	struct sockaddr_storage peer; /* where it came from, if the backend knows; else AF_UNSPEC */
	uint8_t private_data_len;
	uint8_t private_data[VB_MAX_PRIVATE_DATA];
	/* backend-private data follows (each backend embeds this struct) */
};

struct vb_conn_param {
	const void *private_data;
	uint8_t private_data_len;
	int timeout_ms; /* < 0: wait forever */
};

struct vb_sge {
	uint64_t addr;
	uint32_t length;
	uint32_t lkey;
};

/* A wr_id kept for the backend's own work requests: work requests with it are refused. */
#define VB_WR_ID_RESERVED UINT64_C(0xffffffffffffb1d0)

struct vb_send_wr {
	uint64_t wr_id;
	struct vb_send_wr *next;
	struct vb_sge *sg_list;
	int num_sge;
	enum vb_wr_opcode opcode;
	unsigned int send_flags;
	uint32_t imm_data;
	uint64_t remote_addr;
	uint32_t rkey;
};

struct vb_recv_wr {
	uint64_t wr_id;
	struct vb_recv_wr *next;
	struct vb_sge *sg_list;
	int num_sge;
};

struct vb_wc {
	uint64_t wr_id;
	enum vb_wc_status status;
	enum vb_wc_opcode opcode;
	uint32_t vendor_err;
	uint32_t byte_len;
	uint32_t imm_data;
	uint32_t qp_num;
	unsigned int wc_flags;
};

/*
 * The ops table.  Members are sorted by name; every backend defines its
 * table with designated initializers and may leave members out.
 */
struct vb_ops {
	const char *name;
	const char *description;
	int (*accept_request)(struct vb_conn_req *req, struct vb_qp *qp,
			      const struct vb_conn_param *param);
	struct vb_mw *(*alloc_mw)(struct vb_pd *pd);
	struct vb_pd *(*alloc_pd)(struct vb_device *dev);
	int (*bind_mw)(struct vb_qp *qp, struct vb_mw *mw, struct vb_mr *mr, void *addr,
		       size_t length, unsigned int access);
	void *(*buf_alloc)(struct vb_device *dev, size_t length);
	int (*buf_free)(struct vb_device *dev, void *buf, size_t length);
	int (*close_device)(struct vb_device *dev);
	int (*connect)(struct vb_qp *qp, const struct sockaddr *addr, socklen_t addrlen,
		       const struct vb_conn_param *param);
	struct vb_cq *(*create_cq)(struct vb_device *dev, int cqe);
	struct vb_listener *(*create_listener)(struct vb_device *dev, const struct sockaddr *addr,
					       socklen_t addrlen, int backlog);
	struct vb_qp *(*create_qp)(struct vb_pd *pd, const struct vb_qp_init_attr *attr);
	int (*dealloc_mw)(struct vb_mw *mw);
	int (*dealloc_pd)(struct vb_pd *pd);
	int (*dereg_mr)(struct vb_mr *mr);
	int (*destroy_cq)(struct vb_cq *cq);
	int (*destroy_listener)(struct vb_listener *lst);
	int (*destroy_qp)(struct vb_qp *qp);
	int (*export_listener)(struct vb_listener *lst, void *blob, size_t *len);
	int (*get_cq_event)(struct vb_cq *cq);
	struct vb_conn_req *(*get_request)(struct vb_listener *lst, int timeout_ms);
	struct vb_listener *(*import_listener)(struct vb_device *dev, const void *blob, size_t len);
	struct vb_device *(*open_device)(const struct vb_ops *ops, const char *dev_name);
	int (*poll_cq)(struct vb_cq *cq, int max, struct vb_wc *wc, int *count);
	int (*post_recv)(struct vb_qp *qp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr);
	int (*post_send)(struct vb_qp *qp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr);
	int (*query_device)(struct vb_device *dev, struct vb_device_attr *attr);
	int (*query_port)(struct vb_device *dev, struct vb_port_attr *attr);
	int (*query_qp)(struct vb_qp *qp, enum vb_qp_state *state);
	struct vb_mr *(*reg_mr)(struct vb_pd *pd, void *addr, size_t length, uint64_t iova,
				unsigned int access);
	int (*reject_request)(struct vb_conn_req *req);
	int (*req_notify_cq)(struct vb_cq *cq);
};

/* Registry ---------------------------------------------------------------- */

/* Name of the backend used when none is asked for (SANPROV_BACKEND overrides). */
#define VB_DEFAULT_BACKEND "softnic"

/*
 * The ops table of the backend called name (NULL: $SANPROV_BACKEND, else
 * the default).  The table returned is complete: every member is set.
 * NULL with errno ENOENT when no such backend was built.
 */
const struct vb_ops *vb_backend_find(const char *name);

/* Names of the backends built into this library, NULL-terminated. */
const char *const *vb_backend_names(void);

/* Open a device of backend (NULL as for vb_backend_find) by name (NULL: the first). */
struct vb_device *vb_open_device(const char *backend, const char *dev_name);

const char *vb_wc_status_str(enum vb_wc_status status);
/*
 * For backends: the argument checks of reg_mr that every NIC makes the
 * same way (unknown flags, remote write without local write, NULL, empty,
 * wrapping ranges, in memory or in the iova space): 0 or EINVAL.
 */
int vb_check_mr_args(const void *addr, size_t length, uint64_t iova, unsigned int access);
/*
 * The size of a vb_buf_alloc() buffer of length bytes: whole pages, 0 when
 * length is 0 or larger than any backend maps (2^46).  buf_free finds the
 * buffer by the same size.
 */
size_t vb_buf_size(size_t length);
/*
 * An IPv4 or IPv6 address of addrlen, and its port where port is not
 * NULL: 0, EINVAL or EAFNOSUPPORT.
 */
int vb_sockaddr_port(const struct sockaddr *addr, socklen_t addrlen, uint16_t *port);
/* And those of post_send / post_recv, against qp->cap: 0 or EINVAL. */
int vb_check_send_wr(const struct vb_qp *qp, const struct vb_send_wr *wr);
int vb_check_recv_wr(const struct vb_qp *qp, const struct vb_recv_wr *wr);
const char *vb_wr_opcode_str(enum vb_wr_opcode opcode);

/*
 * Poll cq for up to max completions; when none is there, arm the channel
 * and sleep on cq->fd until one arrives or timeout_ms (< 0: forever)
 * passes.  *count is the number returned (0 only with ETIMEDOUT).
 */
int vb_cq_wait(struct vb_cq *cq, int max, struct vb_wc *wc, int *count, int timeout_ms);

/*
 * Process memory touched without a signal: a copy, and a probe of one byte
 * of every page of [addr, addr + len) for reading (and, with write, an
 * atomic add of zero).  0, or EFAULT with the faulting address in *fault
 * where the CPU would have raised SIGSEGV or SIGBUS (made PROT_NONE or
 * unmapped after a check, a truncated file), as a NIC completes with an
 * error.  Any other fault goes to the handler that was there before.
 */
int vb_mem_copy(void *dst, const void *src, size_t len, uintptr_t *fault);
int vb_mem_probe(const void *addr, size_t len, bool write, uintptr_t *fault);

/*
 * Wait up to timeout_ms (< 0: forever) for a connect request on lst: 0 when
 * one waits (vb_get_request() takes it at once), ETIMEDOUT, or errno.
 */
int vb_listener_wait(struct vb_listener *lst, int timeout_ms);

/*
 * vb_get_request() and vb_accept_request() in one call: take the next
 * connect request of lst (waiting up to param->timeout_ms) and accept it on
 * the unconnected qp.  Checks param and qp before it takes anything, so a
 * mistake of the caller consumes no request.  0 or errno.
 */
int vb_accept(struct vb_listener *lst, struct vb_qp *qp, const struct vb_conn_param *param);

/* Dispatch --------------------------------------------------------------- */

static inline int vb_close_device(struct vb_device *dev)
{
	return dev->ops->close_device(dev);
}

static inline int vb_query_device(struct vb_device *dev, struct vb_device_attr *attr)
{
	return dev->ops->query_device(dev, attr);
}

static inline int vb_query_port(struct vb_device *dev, struct vb_port_attr *attr)
{
	return dev->ops->query_port(dev, attr);
}

static inline struct vb_pd *vb_alloc_pd(struct vb_device *dev)
{
	return dev->ops->alloc_pd(dev);
}

static inline int vb_dealloc_pd(struct vb_pd *pd)
{
	return pd->dev->ops->dealloc_pd(pd);
}

/*
 * Memory that every backend can register and that gives the best data path
 * (softnic maps it directly into its peers; verbs returns page-aligned
 * anonymous memory).  Free with vb_buf_free() and the same length.
 */
static inline void *vb_buf_alloc(struct vb_device *dev, size_t length)
{
	return dev->ops->buf_alloc(dev, length);
}

static inline int vb_buf_free(struct vb_device *dev, void *buf, size_t length)
{
	return dev->ops->buf_free(dev, buf, length);
}

static inline struct vb_mr *vb_reg_mr(struct vb_pd *pd, void *addr, size_t length,
				      unsigned int access)
{
	return pd->dev->ops->reg_mr(pd, addr, length, (uintptr_t)addr, access);
}

/*
 * The same with work requests addressing the region's first byte as iova.
 * iova keeps addr's offset within its page (VB_PAGE_SIZE), as every NIC
 * needs: iova = (uintptr_t)addr % VB_PAGE_SIZE makes a zero-based region.
 */
static inline struct vb_mr *vb_reg_mr_iova(struct vb_pd *pd, void *addr, size_t length,
					   uint64_t iova, unsigned int access)
{
	return pd->dev->ops->reg_mr(pd, addr, length, iova, access);
}

static inline int vb_dereg_mr(struct vb_mr *mr)
{
	return mr->pd->dev->ops->dereg_mr(mr);
}

/* An unbound type 2 memory window of pd: NULL with errno (ENOMEM: the NIC has no room). */
static inline struct vb_mw *vb_alloc_mw(struct vb_pd *pd)
{
	return pd->dev->ops->alloc_mw(pd);
}

/*
 * Bind mw to qp over [addr, addr + length) of mr (which has
 * VB_ACCESS_MW_BIND, and VB_ACCESS_LOCAL_WRITE for a remote write), with
 * access (VB_ACCESS_REMOTE_READ and/or VB_ACCESS_REMOTE_WRITE): a new
 * mw->rkey, zero-based (the peer addresses addr as 0), that only qp's peer
 * can use, through qp.  The bind takes effect before any work request
 * posted on qp after it (the descriptor that advertises the rkey included).
 * 0, EINVAL (range, rights, a QP or region of another PD), EBUSY (mw was
 * bound already), ENOMEM (binds in flight fill qp's send queue room or its
 * send CQ's, until that CQ is polled), EOPNOTSUPP or errno.  A bind may
 * complete in the send CQ with VB_WR_ID_RESERVED, which vb_poll_cq() keeps
 * from the caller, in room of its own (a CQ grows for it at the first bind
 * of a QP on it): cqe counts the caller's entries.
 */
static inline int vb_bind_mw(struct vb_qp *qp, struct vb_mw *mw, struct vb_mr *mr, void *addr,
			     size_t length, unsigned int access)
{
	return qp->dev->ops->bind_mw(qp, mw, mr, addr, length, access);
}

/* Invalidate mw's rkey (accesses in flight end first, as for vb_dereg_mr()) and free it. */
static inline int vb_dealloc_mw(struct vb_mw *mw)
{
	return mw->pd->dev->ops->dealloc_mw(mw);
}

static inline struct vb_cq *vb_create_cq(struct vb_device *dev, int cqe)
{
	return dev->ops->create_cq(dev, cqe);
}

static inline int vb_destroy_cq(struct vb_cq *cq)
{
	return cq->dev->ops->destroy_cq(cq);
}

static inline int vb_req_notify_cq(struct vb_cq *cq)
{
	return cq->dev->ops->req_notify_cq(cq);
}

static inline int vb_get_cq_event(struct vb_cq *cq)
{
	return cq->dev->ops->get_cq_event(cq);
}

static inline int vb_poll_cq(struct vb_cq *cq, int max, struct vb_wc *wc, int *count)
{
	return cq->dev->ops->poll_cq(cq, max, wc, count);
}

static inline struct vb_qp *vb_create_qp(struct vb_pd *pd, const struct vb_qp_init_attr *attr)
{
	return pd->dev->ops->create_qp(pd, attr);
}

static inline int vb_destroy_qp(struct vb_qp *qp)
{
	return qp->dev->ops->destroy_qp(qp);
}

static inline int vb_query_qp(struct vb_qp *qp, enum vb_qp_state *state)
{
	return qp->dev->ops->query_qp(qp, state);
}

static inline int vb_post_send(struct vb_qp *qp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr)
{
	return qp->dev->ops->post_send(qp, wr, bad_wr);
}

static inline int vb_post_recv(struct vb_qp *qp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr)
{
	return qp->dev->ops->post_recv(qp, wr, bad_wr);
}

static inline struct vb_listener *vb_create_listener(struct vb_device *dev,
						     const struct sockaddr *addr, socklen_t addrlen,
						     int backlog)
{
	return dev->ops->create_listener(dev, addr, addrlen, backlog);
}

static inline int vb_destroy_listener(struct vb_listener *lst)
{
	return lst->dev->ops->destroy_listener(lst);
}

/*
 * Sharing a listener with the children a fork makes: export_listener
 * writes at most *len bytes (VB_LISTENER_BLOB_MAX is enough) that name
 * lst's passive endpoint and sets *len; import_listener, in this process
 * or in a fork child that inherited the endpoint (a child's own device),
 * makes a second listener on it.  Every listener on an endpoint takes
 * connect requests from one queue: each request goes to one of them.
 * The blob is checked (a blob that names no listener of this backend:
 * EINVAL).  0 or errno; EOPNOTSUPP where the backend cannot share.
 */
#define VB_LISTENER_BLOB_MAX 64

static inline int vb_export_listener(struct vb_listener *lst, void *blob, size_t *len)
{
	return lst->dev->ops->export_listener(lst, blob, len);
}

static inline struct vb_listener *vb_import_listener(struct vb_device *dev, const void *blob,
						     size_t len)
{
	return dev->ops->import_listener(dev, blob, len);
}

/*
 * Connect an unconnected QP to the listener at addr; on success it is RTS.
 * ECONNREFUSED when the passive side refuses the request (or its listener
 * goes before taking it), EHOSTUNREACH when nothing listens there,
 * ETIMEDOUT when param->timeout_ms passes without an answer; on failure the QP stays unconnected
 * and may connect again.
 */
static inline int vb_connect(struct vb_qp *qp, const struct sockaddr *addr, socklen_t addrlen,
			     const struct vb_conn_param *param)
{
	return qp->dev->ops->connect(qp, addr, addrlen, param);
}

/*
 * The passive side in three steps, as rdma_cm has them.  Take the next
 * connect request of lst, waiting up to timeout_ms (< 0: forever): the
 * request, whose private data can be read before it is answered, or NULL
 * with errno (ETIMEDOUT; EPROTO when what arrived was no request of this
 * backend, which is then refused; ...).  A request taken and not yet
 * answered holds nothing of the listener: the next ones are delivered
 * meanwhile, in any number.
 */
static inline struct vb_conn_req *vb_get_request(struct vb_listener *lst, int timeout_ms)
{
	return lst->dev->ops->get_request(lst, timeout_ms);
}

/*
 * Accept req on an unconnected qp of the same device, with param's private
 * data for the connecting side (param->timeout_ms bounds the wait for the
 * connection to be established): 0 or errno.  On success the QP is RTS and
 * its peer_private_data is the request's.  req is freed either way; on
 * failure the connecting side is refused and qp stays unconnected.
 */
static inline int vb_accept_request(struct vb_conn_req *req, struct vb_qp *qp,
				    const struct vb_conn_param *param)
{
	return req->dev->ops->accept_request(req, qp, param);
}

/* Refuse req: the connecting side's vb_connect() fails with ECONNREFUSED.  req is freed. */
static inline int vb_reject_request(struct vb_conn_req *req)
{
	return req->dev->ops->reject_request(req);
}

#ifdef __cplusplus
}
#endif

#endif /* SANPROV_VB_H */
