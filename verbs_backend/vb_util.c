/* SPDX-License-Identifier: BSD-2-Clause */
/* Helpers written once over the ops table. */
#include <errno.h>
#include <stdint.h>
#include <time.h>

#include "vb_internal.h"

const char *vb_wc_status_str(enum vb_wc_status status)
{
	static const char *const str[] = {
		[VB_WC_SUCCESS] = "success",
		[VB_WC_LOC_LEN_ERR] = "local length error",
		[VB_WC_LOC_QP_OP_ERR] = "local QP operation error",
		[VB_WC_LOC_EEC_OP_ERR] = "local EE context operation error",
		[VB_WC_LOC_PROT_ERR] = "local protection error",
		[VB_WC_WR_FLUSH_ERR] = "Work Request Flushed Error",
		[VB_WC_MW_BIND_ERR] = "memory management operation error",
		[VB_WC_BAD_RESP_ERR] = "bad response error",
		[VB_WC_LOC_ACCESS_ERR] = "local access error",
		[VB_WC_REM_INV_REQ_ERR] = "remote invalid request error",
		[VB_WC_REM_ACCESS_ERR] = "remote access error",
		[VB_WC_REM_OP_ERR] = "remote operation error",
		[VB_WC_RETRY_EXC_ERR] = "transport retry counter exceeded",
		[VB_WC_RNR_RETRY_EXC_ERR] = "RNR retry counter exceeded",
		[VB_WC_LOC_RDD_VIOL_ERR] = "local RDD violation error",
		[VB_WC_REM_INV_RD_REQ_ERR] = "remote invalid RD request",
		[VB_WC_REM_ABORT_ERR] = "aborted error",
		[VB_WC_INV_EECN_ERR] = "invalid EE context number",
		[VB_WC_INV_EEC_STATE_ERR] = "invalid EE context state",
		[VB_WC_FATAL_ERR] = "fatal error",
		[VB_WC_RESP_TIMEOUT_ERR] = "response timeout error",
		[VB_WC_GENERAL_ERR] = "general error",
	};

	if ((unsigned int)status < sizeof(str) / sizeof(str[0]) && str[status])
		return str[status];
	return "unknown";
}

int vb_check_mr_args(const void *addr, size_t length, uint64_t iova, unsigned int access)
{
	if (access & ~(unsigned int)VB_ACCESS_VALID)
		return EINVAL;
	/* As the IB spec: remote write needs local write. */
	if ((access & VB_ACCESS_REMOTE_WRITE) && !(access & VB_ACCESS_LOCAL_WRITE))
		return EINVAL;
	if (!addr || !length || (uintptr_t)addr + length < (uintptr_t)addr)
		return EINVAL;
	if (iova + length < iova)
		return EINVAL;
	/* As the kernel's verbs: a region keeps its offset within the page. */
	if ((iova ^ (uintptr_t)addr) & (VB_PAGE_SIZE - 1))
		return EINVAL;
	return 0;
}

size_t vb_buf_size(size_t length)
{
	if (!length || length > ((size_t)1 << 46))
		return 0;
	return (length + 4095) & ~(size_t)4095;
}

int vb_sockaddr_port(const struct sockaddr *addr, socklen_t addrlen, uint16_t *port)
{
	if (!addr)
		return EINVAL;
	if (addr->sa_family == AF_INET && (size_t)addrlen >= sizeof(struct sockaddr_in)) {
		if (port)
			*port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
	} else if (addr->sa_family == AF_INET6 && (size_t)addrlen >= sizeof(struct sockaddr_in6)) {
		if (port)
			*port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
	} else {
		return EAFNOSUPPORT;
	}
	return 0;
}

int vb_check_send_wr(const struct vb_qp *qp, const struct vb_send_wr *wr)
{
	if (wr->wr_id == VB_WR_ID_RESERVED)
		return EINVAL;
	switch (wr->opcode) {
	case VB_WR_RDMA_WRITE:
	case VB_WR_RDMA_WRITE_WITH_IMM:
	case VB_WR_SEND:
	case VB_WR_SEND_WITH_IMM:
		break;
	case VB_WR_RDMA_READ:
		if (wr->send_flags & VB_SEND_INLINE)
			return EINVAL;
		break;
	default:
		return EINVAL;
	}
	if (wr->num_sge < 0 || (uint32_t)wr->num_sge > qp->cap.max_send_sge ||
	    (wr->num_sge && !wr->sg_list))
		return EINVAL;
	if (wr->send_flags &
	    ~(unsigned int)(VB_SEND_FENCE | VB_SEND_SIGNALED | VB_SEND_SOLICITED | VB_SEND_INLINE))
		return EINVAL;
	if (wr->send_flags & VB_SEND_INLINE) {
		uint64_t len = 0;
		for (int i = 0; i < wr->num_sge; i++)
			len += wr->sg_list[i].length;
		if (len > qp->cap.max_inline_data)
			return EINVAL;
	}
	return 0;
}

int vb_check_recv_wr(const struct vb_qp *qp, const struct vb_recv_wr *wr)
{
	if (wr->wr_id == VB_WR_ID_RESERVED)
		return EINVAL;
	if (wr->num_sge < 0 || (uint32_t)wr->num_sge > qp->cap.max_recv_sge ||
	    (wr->num_sge && !wr->sg_list))
		return EINVAL;
	return 0;
}

const char *vb_wr_opcode_str(enum vb_wr_opcode opcode)
{
	switch (opcode) {
	case VB_WR_RDMA_WRITE:
		return "RDMA_WRITE";
	case VB_WR_RDMA_WRITE_WITH_IMM:
		return "RDMA_WRITE_WITH_IMM";
	case VB_WR_SEND:
		return "SEND";
	case VB_WR_SEND_WITH_IMM:
		return "SEND_WITH_IMM";
	case VB_WR_RDMA_READ:
		return "RDMA_READ";
	}
	return "unknown";
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vb_cq_wait(struct vb_cq *cq, int max, struct vb_wc *wc, int *count, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int ret;

	for (;;) {
		ret = vb_poll_cq(cq, max, wc, count);
		if (ret || *count)
			return ret;
		ret = vb_req_notify_cq(cq);
		if (ret)
			return ret;
		/* A completion that arrived before the arm raised no event: look again. */
		ret = vb_poll_cq(cq, max, wc, count);
		if (ret || *count)
			return ret;

		int wait = -1;
		if (deadline >= 0) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return ETIMEDOUT;
			wait = left > 1000000 ? 1000000 : (int)left;
		}
		ret = vb_os_wait(cq->fd, wait);
		if (ret < 0)
			return -ret;
		if (ret > 0) {
			ret = vb_get_cq_event(cq);
			if (ret && ret != EAGAIN)
				return ret;
		}
	}
}

int vb_listener_wait(struct vb_listener *lst, int timeout_ms)
{
	int ret = vb_os_wait(lst->fd, timeout_ms);

	return ret > 0 ? 0 : ret < 0 ? -ret : ETIMEDOUT;
}

int vb_accept(struct vb_listener *lst, struct vb_qp *qp, const struct vb_conn_param *param)
{
	struct vb_conn_req *req;
	enum vb_qp_state st;
	int ret;

	if (param && (param->private_data_len > VB_MAX_PRIVATE_DATA ||
		      (param->private_data_len && !param->private_data)))
		return EINVAL;
	if (qp->dev != lst->dev)
		return EINVAL;
	/* A QP that cannot take the request would refuse it: check before taking one. */
	ret = vb_query_qp(qp, &st);
	if (ret)
		return ret;
	if (st != VB_QPS_INIT)
		return st == VB_QPS_RESET ? EINVAL : EISCONN;
	req = vb_get_request(lst, param ? param->timeout_ms : -1);
	if (!req)
		return errno;
	return vb_accept_request(req, qp, param);
}
