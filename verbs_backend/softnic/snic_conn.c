/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Connection setup: the address exchange of two QPs, in one process or in
 * two, over a Unix seqpacket socket in the abstract namespace (so it is
 * private to the network namespace).  Each side sends its segments and
 * eventfds with SCM_RIGHTS; the socket then stays open as the connection's
 * liveness: when it closes, the other side's QP goes to the error state,
 * as with an rdma_cm disconnect.
 *
 * The listener's address is the port of an IPv4/IPv6 socket address: one
 * host, so the IP part is not used.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "snic.h"

#define SNIC_CONN_MAGIC 0x534e4343u /* "SNCC" */
#define SNIC_CONN_VERSION 1
#define SNIC_CONN_NFDS 5

enum snic_conn_type { SNIC_CONN_REQ = 1, SNIC_CONN_REP = 2, SNIC_CONN_REJ = 3 };

struct snic_conn_msg {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	int32_t status;
	uint32_t qpn;
	uint32_t pd;
	uint32_t max_mr;
	uint32_t rq_size;
	uint32_t rq_max_sge;
	uint32_t cq_size;
	uint8_t priv_len;
	uint8_t priv[VB_MAX_PRIVATE_DATA];
	uint8_t reserved[7];
};

struct snic_listener {
	struct vb_listener vl;
};

static socklen_t unix_name(struct sockaddr_un *un, uint16_t port)
{
	int n;

	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "sanprov-softnic:%u", port);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int wait_fd(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno;
	return n ? 0 : ETIMEDOUT;
}

static int send_msg(int sock, const struct snic_conn_msg *m, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SNIC_CONN_NFDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)m, sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)sizeof(*m))
		return errno ? errno : EIO;
	return 0;
}

/* Receive one message; fds[] gets exactly SNIC_CONN_NFDS descriptors or none. */
static int recv_msg(int sock, struct snic_conn_msg *m, int *fds, int *nfds, int timeout_ms)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SNIC_CONN_NFDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { m, sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;
	ssize_t n;
	int ret;

	*nfds = 0;
	ret = wait_fd(sock, timeout_ms);
	if (ret)
		return ret;
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (size_t)i, sizeof(fd));
			if (*nfds < SNIC_CONN_NFDS)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	if (n == 0)
		ret = ECONNRESET;
	else if (n != (ssize_t)sizeof(*m) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
		 m->magic != SNIC_CONN_MAGIC || m->version != SNIC_CONN_VERSION)
		ret = EPROTO;
	else if ((m->type == SNIC_CONN_REJ) != (*nfds == 0) || (*nfds && *nfds != SNIC_CONN_NFDS))
		ret = EPROTO;
	if (ret) {
		while (*nfds)
			close(fds[--*nfds]);
	}
	return ret;
}

static void local_msg(struct snic_qp *qp, struct snic_conn_msg *m, int *fds, uint16_t type,
		      const struct vb_conn_param *param)
{
	struct snic_cq *rcq = snic_cq_of(qp->vqp.recv_cq);

	memset(m, 0, sizeof(*m));
	m->magic = SNIC_CONN_MAGIC;
	m->version = SNIC_CONN_VERSION;
	m->type = type;
	m->qpn = qp->vqp.qp_num;
	m->pd = qp->vqp.pd->handle;
	m->max_mr = qp->dev->max_mr;
	m->rq_size = qp->rq_size;
	m->rq_max_sge = qp->vqp.cap.max_recv_sge;
	m->cq_size = rcq->size;
	if (param && param->private_data && param->private_data_len) {
		m->priv_len = param->private_data_len;
		memcpy(m->priv, param->private_data, m->priv_len);
	}
	fds[0] = qp->dev->seg_shm.fd;
	fds[1] = qp->shm.fd;
	fds[2] = rcq->shm.fd;
	fds[3] = rcq->vcq.fd;
	fds[4] = qp->dev->doorbell_fd;
}

void snic_peer_unmap(struct snic_peer *peer)
{
	snic_peer_release_imports(peer);
	snic_os_shm_destroy(&peer->dev_shm);
	snic_os_shm_destroy(&peer->qp_shm);
	snic_os_shm_destroy(&peer->cq_shm);
	if (peer->cq_evfd >= 0)
		close(peer->cq_evfd);
	if (peer->doorbell_fd >= 0)
		close(peer->doorbell_fd);
	if (peer->pidfd >= 0)
		close(peer->pidfd);
	peer->cq_evfd = peer->doorbell_fd = peer->pidfd = -1;
	peer->dev_seg = NULL;
	peer->qp_seg = NULL;
	peer->cq_seg = NULL;
}

/*
 * Validate what the peer sent and map its segments.  Takes ownership of
 * fds[] on every path.  Every size comes from the message and is checked
 * against the segment the peer really gave.
 */
static int map_peer(struct snic_qp *qp, int sock, const struct snic_conn_msg *m, int *fds)
{
	struct snic_peer *peer = &qp->peer;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int ret = EPROTO;

	peer->cq_evfd = fds[3];
	peer->doorbell_fd = fds[4];
	fds[3] = fds[4] = -1;
	if (m->max_mr < 1 || m->max_mr > SNIC_MAX_MR_LIMIT || m->rq_size < 1 ||
	    m->rq_size > SNIC_MAX_QP_WR || (m->rq_size & (m->rq_size - 1)) || m->rq_max_sge < 1 ||
	    m->rq_max_sge > SNIC_MAX_SGE || m->cq_size < 1 || m->cq_size > SNIC_MAX_CQE ||
	    (m->cq_size & (m->cq_size - 1)) || m->priv_len > VB_MAX_PRIVATE_DATA)
		goto err;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len)) {
		ret = errno;
		goto err;
	}
	ret = snic_os_shm_map(&peer->dev_shm, fds[0], snic_dev_seg_size(m->max_mr));
	if (ret)
		goto err;
	fds[0] = -1;
	ret = snic_os_shm_map(&peer->qp_shm, fds[1], snic_qp_seg_size(m->rq_size, m->rq_max_sge));
	if (ret)
		goto err;
	fds[1] = -1;
	ret = snic_os_shm_map(&peer->cq_shm, fds[2], snic_cq_seg_size(m->cq_size));
	if (ret)
		goto err;
	fds[2] = -1;
	peer->dev_seg = peer->dev_shm.addr;
	peer->qp_seg = peer->qp_shm.addr;
	peer->cq_seg = peer->cq_shm.addr;
	ret = EPROTO;
	if (peer->dev_seg->magic != SNIC_DEV_MAGIC || peer->qp_seg->magic != SNIC_QP_MAGIC ||
	    peer->cq_seg->magic != SNIC_CQ_MAGIC || peer->qp_seg->qpn != m->qpn)
		goto err;
	/* Mapped segments need no descriptor: keep the fd table small. */
	close(peer->dev_shm.fd);
	close(peer->qp_shm.fd);
	close(peer->cq_shm.fd);
	peer->dev_shm.fd = peer->qp_shm.fd = peer->cq_shm.fd = -1;

	peer->pid = cred.pid;
	peer->self = cred.pid == getpid();
	peer->pidfd = peer->self ? -1 : pidfd_open(cred.pid, 0);
	peer->gone = false;
	peer->max_mr = m->max_mr;
	peer->qpn = m->qpn;
	peer->pd = m->pd;
	peer->rq_size = m->rq_size;
	peer->rq_max_sge = m->rq_max_sge;
	peer->rwqe_size = snic_rwqe_size(m->rq_max_sge);
	peer->cq_size = m->cq_size;
	qp->vqp.peer_private_data_len = m->priv_len;
	memcpy(qp->vqp.peer_private_data, m->priv, m->priv_len);
	return 0;

err:
	for (int i = 0; i < SNIC_CONN_NFDS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	snic_peer_unmap(peer);
	return ret;
}

static int check_param(const struct vb_conn_param *param)
{
	if (param && param->private_data_len > VB_MAX_PRIVATE_DATA)
		return EINVAL;
	if (param && param->private_data_len && !param->private_data)
		return EINVAL;
	return 0;
}

static int param_timeout(const struct vb_conn_param *param)
{
	return param ? param->timeout_ms : -1;
}

/* Both sides: the connection is up, watch it. */
static int established(struct snic_qp *qp, int sock)
{
	qp->sock = sock;
	qp->connected = true;
	return snic_dev_watch(qp->dev, sock, qp->vqp.qp_num);
}

int snic_connect(struct vb_qp *vqp, const struct sockaddr *addr, socklen_t addrlen,
		 const struct vb_conn_param *param)
{
	struct snic_qp *qp = snic_qp_of(vqp);
	struct snic_conn_msg m;
	struct sockaddr_un un;
	socklen_t unlen;
	int fds[SNIC_CONN_NFDS], nfds, sock, ret;
	uint16_t port;

	ret = check_param(param);
	if (!ret)
		ret = vb_sockaddr_port(addr, addrlen, &port);
	if (ret)
		return ret;
	if (!port)
		return EINVAL;
	pthread_mutex_lock(&qp->lock);
	if (qp->state != VB_QPS_INIT) {
		ret = qp->connected ? EISCONN : EINVAL;
		goto out;
	}
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		ret = errno;
		goto out;
	}
	unlen = unix_name(&un, port);
	if (connect(sock, (struct sockaddr *)&un, unlen)) {
		ret = errno == ENOENT ? ECONNREFUSED : errno;
		goto err_sock;
	}
	/* Ready to receive before the peer learns of us, as RTR before the REQ. */
	qp->state = VB_QPS_RTR;
	atomic_store(&qp->seg->state, VB_QPS_RTR);
	local_msg(qp, &m, fds, SNIC_CONN_REQ, param);
	ret = send_msg(sock, &m, fds, SNIC_CONN_NFDS);
	if (ret)
		goto err_state;
	ret = recv_msg(sock, &m, fds, &nfds, param_timeout(param));
	if (ret)
		goto err_state;
	if (m.type != SNIC_CONN_REP) {
		ret = m.type == SNIC_CONN_REJ && m.status > 0 ? m.status : ECONNREFUSED;
		goto err_state;
	}
	ret = map_peer(qp, sock, &m, fds);
	if (ret)
		goto err_state;
	qp->state = VB_QPS_RTS;
	atomic_store(&qp->seg->state, VB_QPS_RTS);
	ret = established(qp, sock);
	if (ret) {
		snic_qp_set_error(qp);
		ret = 0; /* connected; the error state reports the rest */
	}
	goto out;

err_state:
	qp->state = VB_QPS_INIT;
	atomic_store(&qp->seg->state, VB_QPS_INIT);
err_sock:
	close(sock);
out:
	pthread_mutex_unlock(&qp->lock);
	return ret;
}

int snic_accept(struct vb_listener *vl, struct vb_qp *vqp, const struct vb_conn_param *param)
{
	struct snic_qp *qp = snic_qp_of(vqp);
	struct snic_conn_msg m;
	int fds[SNIC_CONN_NFDS], nfds, sock, ret;

	ret = check_param(param);
	if (ret)
		return ret;
	if (vqp->dev != vl->dev)
		return EINVAL;
	pthread_mutex_lock(&qp->lock);
	if (qp->state != VB_QPS_INIT) {
		ret = qp->connected ? EISCONN : EINVAL;
		goto out;
	}
	ret = wait_fd(vl->fd, param_timeout(param));
	if (ret)
		goto out;
	sock = accept4(vl->fd, NULL, NULL, SOCK_CLOEXEC);
	if (sock < 0) {
		ret = errno == EAGAIN ? ETIMEDOUT : errno;
		goto out;
	}
	/* A client that connects and says nothing must not hold us for ever. */
	ret = recv_msg(sock, &m, fds, &nfds,
		       param && param->timeout_ms >= 0 ? param->timeout_ms : 10000);
	if (!ret && m.type != SNIC_CONN_REQ) {
		while (nfds)
			close(fds[--nfds]);
		ret = EPROTO;
	}
	if (!ret)
		ret = map_peer(qp, sock, &m, fds);
	if (ret) {
		struct snic_conn_msg rej = { .magic = SNIC_CONN_MAGIC,
					     .version = SNIC_CONN_VERSION,
					     .type = SNIC_CONN_REJ,
					     .status = ret };
		send_msg(sock, &rej, NULL, 0);
		close(sock);
		goto out;
	}
	qp->state = VB_QPS_RTS;
	atomic_store(&qp->seg->state, VB_QPS_RTS);
	local_msg(qp, &m, fds, SNIC_CONN_REP, param);
	ret = send_msg(sock, &m, fds, SNIC_CONN_NFDS);
	if (ret) {
		snic_peer_unmap(&qp->peer);
		qp->state = VB_QPS_INIT;
		atomic_store(&qp->seg->state, VB_QPS_INIT);
		close(sock);
		goto out;
	}
	if (established(qp, sock))
		snic_qp_set_error(qp);
out:
	pthread_mutex_unlock(&qp->lock);
	return ret;
}

struct vb_listener *snic_create_listener(struct vb_device *vdev, const struct sockaddr *addr,
					 socklen_t addrlen, int backlog)
{
	struct snic_dev *dev = snic_dev_of(vdev);
	struct snic_listener *l;
	struct sockaddr_un un;
	uint16_t port;
	int ret, fd;

	ret = vb_sockaddr_port(addr, addrlen, &port);
	if (ret)
		goto err;
	l = calloc(1, sizeof(*l));
	if (!l) {
		ret = ENOMEM;
		goto err;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		ret = errno;
		goto err_free;
	}
	if (port) {
		if (bind(fd, (struct sockaddr *)&un, unix_name(&un, port))) {
			ret = errno;
			goto err_close;
		}
	} else {
		/* Port 0: the first free one of the dynamic range, from a random start. */
		unsigned int span = 65536 - 49152, start = (unsigned int)(getpid() ^ time(NULL));
		ret = EADDRINUSE;
		for (unsigned int i = 0; i < span && ret == EADDRINUSE; i++) {
			port = (uint16_t)(49152 + (start + i) % span);
			ret = bind(fd, (struct sockaddr *)&un, unix_name(&un, port)) ? errno : 0;
		}
		if (ret)
			goto err_close;
	}
	if (listen(fd, backlog > 0 ? backlog : 128)) {
		ret = errno;
		goto err_close;
	}
	memcpy(&l->vl.addr, addr,
	       addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					  : sizeof(struct sockaddr_in6));
	if (addr->sa_family == AF_INET)
		((struct sockaddr_in *)&l->vl.addr)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&l->vl.addr)->sin6_port = htons(port);
	l->vl.dev = vdev;
	l->vl.fd = fd;
	pthread_mutex_lock(&dev->lock);
	dev->n_lst++;
	pthread_mutex_unlock(&dev->lock);
	return &l->vl;

err_close:
	close(fd);
err_free:
	free(l);
err:
	errno = ret;
	return NULL;
}

int snic_destroy_listener(struct vb_listener *vl)
{
	struct snic_dev *dev = snic_dev_of(vl->dev);

	pthread_mutex_lock(&dev->lock);
	dev->n_lst--;
	pthread_mutex_unlock(&dev->lock);
	close(vl->fd);
	free(vb_container_of(vl, struct snic_listener, vl));
	return 0;
}
