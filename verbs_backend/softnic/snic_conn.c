/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Connection setup: the address exchange of two QPs, in one process or in
 * two, over the OS's connection channel (snic_os.h; a Unix seqpacket
 * socket in the abstract namespace on Linux).  Each side sends its
 * segments and events along with its message; the channel then stays open
 * as the connection's liveness: when it closes, the other side's QP goes
 * to the error state, as with an rdma_cm disconnect.
 *
 * The listener's address is the port of an IPv4/IPv6 socket address: one
 * host, so the IP part is not used.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "snic.h"

#define SNIC_CONN_MAGIC 0x534e4343u /* "SNCC" */
#define SNIC_CONN_VERSION 3	    /* 3: a peer rings a QP on its connection, not the device */
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
	struct vb_listener vl;	     /* vl.fd: ready's waitable */
	snic_handle sock;	     /* the listening socket */
	struct snic_os_watch *ready; /* sock and the pending connections */
	struct snic_pending pending; /* connections that have not spoken yet */
};

static int send_msg(snic_handle sock, const struct snic_conn_msg *m, const snic_handle *fds,
		    int nfds)
{
	return snic_os_send(sock, m, sizeof(*m), fds, nfds);
}

/* A connection refused before its request is read (snic_pending_take()). */
static void send_rej(snic_handle sock, int status)
{
	struct snic_conn_msg rej = { .magic = SNIC_CONN_MAGIC,
				     .version = SNIC_CONN_VERSION,
				     .type = SNIC_CONN_REJ,
				     .status = status };

	send_msg(sock, &rej, NULL, 0);
}

/* Receive one message; fds[] gets exactly SNIC_CONN_NFDS handles or none. */
static int recv_msg_from(snic_handle sock, struct snic_conn_msg *m, snic_handle *fds, int *nfds,
			 int timeout_ms, pid_t *sender)
{
	int ret =
	    snic_os_recv_from(sock, m, sizeof(*m), fds, nfds, SNIC_CONN_NFDS, timeout_ms, sender);

	if (ret)
		return ret;
	if (m->magic != SNIC_CONN_MAGIC || m->version != SNIC_CONN_VERSION)
		ret = EPROTO;
	else if ((m->type == SNIC_CONN_REJ) != (*nfds == 0) || (*nfds && *nfds != SNIC_CONN_NFDS))
		ret = EPROTO;
	if (ret) {
		while (*nfds)
			snic_os_close(fds[--*nfds]);
	}
	return ret;
}

static int recv_msg(snic_handle sock, struct snic_conn_msg *m, snic_handle *fds, int *nfds,
		    int timeout_ms)
{
	return recv_msg_from(sock, m, fds, nfds, timeout_ms, NULL);
}

static void local_msg(struct snic_qp *qp, struct snic_conn_msg *m, snic_handle *fds, uint16_t type,
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

void snic_peer_unmap(struct snic_dev *dev, struct snic_peer *peer)
{
	snic_peer_release_imports(peer);
	snic_os_shm_destroy(&peer->dev_shm);
	snic_os_shm_destroy(&peer->qp_shm);
	snic_os_shm_destroy(&peer->cq_shm);
	snic_dev_unshare(dev, peer->cq_evfd);
	snic_dev_unshare(dev, peer->doorbell_fd);
	snic_dev_unshare(dev, peer->pidfd);
	snic_peer_dismiss(peer);
	peer->broken = false;
	peer->cq_evfd = peer->doorbell_fd = peer->pidfd = SNIC_NO_HANDLE;
	peer->dev_seg = NULL;
	peer->qp_seg = NULL;
	peer->cq_seg = NULL;
}

/*
 * Validate what the peer sent and map its segments.  Takes ownership of
 * fds[] on every path.  Every size comes from the message and is checked
 * against the segment the peer really gave.
 */
static int map_peer(struct snic_qp *qp, snic_handle sock, const struct snic_conn_msg *m,
		    snic_handle *fds)
{
	struct snic_peer *peer = &qp->peer;
	int ret = EPROTO;

	/* One copy of each for all the peer's connections. */
	peer->cq_evfd = snic_dev_share(qp->dev, fds[3], 0);
	peer->doorbell_fd = snic_dev_share(qp->dev, fds[4], 0);
	fds[3] = fds[4] = SNIC_NO_HANDLE;
	if (m->max_mr < 1 || m->max_mr > SNIC_MAX_MR_LIMIT || m->rq_size < 1 ||
	    m->rq_size > SNIC_MAX_QP_WR || (m->rq_size & (m->rq_size - 1)) || m->rq_max_sge < 1 ||
	    m->rq_max_sge > SNIC_MAX_SGE || m->cq_size < 1 || m->cq_size > SNIC_MAX_CQE ||
	    (m->cq_size & (m->cq_size - 1)) || m->priv_len > VB_MAX_PRIVATE_DATA)
		goto err;
	ret = snic_peer_admit(peer, sock);
	if (ret)
		goto err;
	if (!peer->self)
		peer->pidfd = snic_dev_share(qp->dev, peer->pidfd, peer->pid);
	/* The MR table is only read here: a stray or hostile write cannot change a region. */
	ret = snic_os_shm_map(&peer->dev_shm, fds[0], snic_dev_seg_size(m->max_mr), false);
	if (ret)
		goto err;
	fds[0] = SNIC_NO_HANDLE;
	ret = snic_os_shm_map(&peer->qp_shm, fds[1], snic_qp_seg_size(m->rq_size, m->rq_max_sge),
			      true);
	if (ret)
		goto err;
	fds[1] = SNIC_NO_HANDLE;
	/* Only read too: completions are the owner's to write, from its own records. */
	ret = snic_os_shm_map(&peer->cq_shm, fds[2], snic_cq_seg_size(m->cq_size), false);
	if (ret)
		goto err;
	fds[2] = SNIC_NO_HANDLE;
	peer->dev_seg = peer->dev_shm.addr;
	peer->qp_seg = peer->qp_shm.addr;
	peer->cq_seg = peer->cq_shm.addr;
	ret = EPROTO;
	if (peer->dev_seg->magic != SNIC_DEV_MAGIC || peer->qp_seg->magic != SNIC_QP_MAGIC ||
	    peer->cq_seg->magic != SNIC_CQ_MAGIC || peer->qp_seg->qpn != m->qpn)
		goto err;
	/* Mapped segments need no handle: keep the handle table small. */
	snic_os_close(peer->dev_shm.fd);
	snic_os_close(peer->qp_shm.fd);
	snic_os_close(peer->cq_shm.fd);
	peer->dev_shm.fd = peer->qp_shm.fd = peer->cq_shm.fd = SNIC_NO_HANDLE;
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
		snic_os_close(fds[i]);
	snic_peer_unmap(qp->dev, peer);
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
static int established(struct snic_qp *qp, snic_handle sock)
{
	/* The peer has the QP's segment mapped: its handle is of no more use. */
	snic_os_close(qp->shm.fd);
	qp->shm.fd = SNIC_NO_HANDLE;
	qp->sock = sock;
	qp->connected = true;
	return snic_dev_watch(qp->dev, sock, qp->vqp.qp_num);
}

int snic_connect(struct vb_qp *vqp, const struct sockaddr *addr, socklen_t addrlen,
		 const struct vb_conn_param *param)
{
	struct snic_qp *qp = snic_qp_of(vqp);
	struct snic_conn_msg m;
	snic_handle fds[SNIC_CONN_NFDS], sock;
	int nfds, ret;
	uint16_t port;
	pid_t sender = 0;

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
	ret = snic_os_connect(port, &sock);
	if (ret == ECONNREFUSED)
		ret = EHOSTUNREACH; /* nobody listens there: no peer refused anything */
	if (ret)
		goto out;
	/* Before it can get our tables: who it is, and the right to reach us. */
	ret = snic_peer_admit(&qp->peer, sock);
	if (ret)
		goto err_state;
	/* Ready to receive before the peer learns of us, as RTR before the REQ. */
	qp->state = VB_QPS_RTR;
	atomic_store(&qp->seg->state, VB_QPS_RTR);
	local_msg(qp, &m, fds, SNIC_CONN_REQ, param);
	ret = send_msg(sock, &m, fds, SNIC_CONN_NFDS);
	if (!ret)
		ret = recv_msg_from(sock, &m, fds, &nfds, param_timeout(param), &sender);
	if (ret == ECONNRESET || ret == EPIPE)
		ret = ECONNREFUSED; /* closed unanswered: its listener went */
	if (ret)
		goto err_state;
	if (m.type != SNIC_CONN_REP) {
		ret = m.type == SNIC_CONN_REJ && m.status > 0 ? m.status : ECONNREFUSED;
		goto err_state;
	}
	/* Accepted by a fork child that shares the listener: the child is the peer. */
	ret = snic_peer_readmit(&qp->peer, sender);
	if (!ret)
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
	snic_peer_unmap(qp->dev, &qp->peer);
	snic_os_close(sock);
out:
	pthread_mutex_unlock(&qp->lock);
	return ret;
}

/*
 * The passive side in three steps.  A request taken holds the connection
 * socket and the handles the connecting side sent, unmapped: nothing of
 * the peer is mapped and nothing of ours is handed over until it is
 * accepted, and a refusal only closes what it holds.
 */
struct snic_conn_req {
	struct vb_conn_req vreq;
	snic_handle sock;
	struct snic_conn_msg m;
	snic_handle fds[SNIC_CONN_NFDS];
};

/* Refuse a connection whose request is not (or no longer) taken; closes sock. */
static void refuse(snic_handle sock, int status)
{
	send_rej(sock, status);
	snic_os_close(sock);
}

static void req_free(struct snic_conn_req *req)
{
	struct snic_dev *dev = snic_dev_of(req->vreq.dev);

	for (int i = 0; i < SNIC_CONN_NFDS; i++)
		snic_os_close(req->fds[i]);
	pthread_mutex_lock(&dev->lock);
	dev->n_req--;
	pthread_mutex_unlock(&dev->lock);
	free(req);
}

struct vb_conn_req *snic_get_request(struct vb_listener *vl, int timeout_ms)
{
	struct snic_dev *dev = snic_dev_of(vl->dev);
	struct snic_conn_req *req;
	snic_handle sock;
	int nfds, ret;

	req = calloc(1, sizeof(*req));
	if (!req) {
		errno = ENOMEM;
		return NULL;
	}
	for (int i = 0; i < SNIC_CONN_NFDS; i++)
		req->fds[i] = SNIC_NO_HANDLE;
	/*
	 * The first connection that has spoken: a silent one holds back nobody
	 * (it stays with the listener until its own deadline), another user's
	 * is refused before it gets anything.
	 */
	ret = snic_pending_take(&vb_container_of(vl, struct snic_listener, vl)->pending,
				vb_container_of(vl, struct snic_listener, vl)->sock, timeout_ms,
				send_rej, &sock);
	if (ret)
		goto err_free;
	ret = recv_msg(sock, &req->m, req->fds, &nfds, 0);
	if (!ret && (req->m.type != SNIC_CONN_REQ || req->m.priv_len > VB_MAX_PRIVATE_DATA)) {
		while (nfds)
			snic_os_close(req->fds[--nfds]);
		ret = EPROTO;
	}
	if (ret) {
		refuse(sock, ret);
		goto err_free;
	}
	req->sock = sock;
	req->vreq.dev = vl->dev;
	req->vreq.peer.ss_family = AF_UNSPEC; /* one host: the peer has no address of its own */
	req->vreq.private_data_len = req->m.priv_len;
	memcpy(req->vreq.private_data, req->m.priv, req->m.priv_len);
	pthread_mutex_lock(&dev->lock);
	dev->n_req++;
	pthread_mutex_unlock(&dev->lock);
	return &req->vreq;

err_free:
	free(req);
	errno = ret;
	return NULL;
}

int snic_reject_request(struct vb_conn_req *vreq)
{
	struct snic_conn_req *req = vb_container_of(vreq, struct snic_conn_req, vreq);

	refuse(req->sock, ECONNREFUSED);
	req_free(req);
	return 0;
}

int snic_accept_request(struct vb_conn_req *vreq, struct vb_qp *vqp,
			const struct vb_conn_param *param)
{
	struct snic_conn_req *req = vb_container_of(vreq, struct snic_conn_req, vreq);
	struct snic_qp *qp = snic_qp_of(vqp);
	struct snic_conn_msg m;
	snic_handle fds[SNIC_CONN_NFDS];
	snic_handle sock = req->sock;
	int ret;

	ret = check_param(param);
	if (!ret && vqp->dev != vreq->dev)
		ret = EINVAL;
	if (ret) {
		refuse(sock, ECONNREFUSED);
		req_free(req);
		return ret;
	}
	pthread_mutex_lock(&qp->lock);
	if (qp->state != VB_QPS_INIT) {
		ret = qp->connected ? EISCONN : EINVAL;
		refuse(sock, ECONNREFUSED);
		goto out;
	}
	/* map_peer() takes the handles on every path. */
	ret = map_peer(qp, sock, &req->m, req->fds);
	for (int i = 0; i < SNIC_CONN_NFDS; i++)
		req->fds[i] = SNIC_NO_HANDLE;
	if (ret) {
		refuse(sock, ret);
		goto out;
	}
	qp->state = VB_QPS_RTS;
	atomic_store(&qp->seg->state, VB_QPS_RTS);
	local_msg(qp, &m, fds, SNIC_CONN_REP, param);
	ret = send_msg(sock, &m, fds, SNIC_CONN_NFDS);
	if (ret) {
		/* The connecting side gave up (its timeout) before the answer. */
		if (ret == EPIPE || ret == ECONNRESET)
			ret = ECONNABORTED;
		snic_peer_unmap(qp->dev, &qp->peer);
		qp->state = VB_QPS_INIT;
		atomic_store(&qp->seg->state, VB_QPS_INIT);
		snic_os_close(sock);
		goto out;
	}
	if (established(qp, sock))
		snic_qp_set_error(qp);
out:
	pthread_mutex_unlock(&qp->lock);
	req_free(req);
	return ret;
}

/* A listener around the listening handle fd (taken over, closed on failure) of port. */
static struct vb_listener *listener_wrap(struct vb_device *vdev, const struct sockaddr *addr,
					 uint16_t port, snic_handle fd)
{
	struct snic_dev *dev = snic_dev_of(vdev);
	struct snic_listener *l;
	int ret;

	l = calloc(1, sizeof(*l));
	if (!l) {
		ret = ENOMEM;
		goto err_sock;
	}
	l->ready = snic_os_watch_create();
	if (!l->ready) {
		ret = errno;
		goto err_free;
	}
	ret = snic_pending_init(&l->pending, l->ready);
	if (ret)
		goto err_watch;
	ret = snic_os_watch_event(l->ready, fd, 0);
	if (ret)
		goto err_pending;
	memcpy(&l->vl.addr, addr,
	       addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					  : sizeof(struct sockaddr_in6));
	if (addr->sa_family == AF_INET)
		((struct sockaddr_in *)&l->vl.addr)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&l->vl.addr)->sin6_port = htons(port);
	l->vl.dev = vdev;
	l->sock = fd;
	/* Ready when a connection waits, or one taken before has spoken since. */
	l->vl.fd = snic_os_watch_waitable(l->ready, fd);
	pthread_mutex_lock(&dev->lock);
	dev->n_lst++;
	pthread_mutex_unlock(&dev->lock);
	return &l->vl;

err_pending:
	snic_pending_fini(&l->pending);
err_watch:
	snic_os_watch_destroy(l->ready);
err_free:
	free(l);
err_sock:
	snic_os_close(fd);
	errno = ret;
	return NULL;
}

struct vb_listener *snic_create_listener(struct vb_device *vdev, const struct sockaddr *addr,
					 socklen_t addrlen, int backlog)
{
	snic_handle fd;
	uint16_t port;
	int ret;

	ret = vb_sockaddr_port(addr, addrlen, &port);
	if (!ret)
		ret = snic_os_listen(&port, backlog, &fd);
	if (ret) {
		errno = ret;
		return NULL;
	}
	return listener_wrap(vdev, addr, port, fd);
}

/* What export_listener writes: the listening handle, valid where it is inherited. */
#define SNIC_LISTENER_BLOB_MAGIC 0x534e4c42u /* "SNLB" */

struct snic_listener_blob {
	uint32_t magic;
	uint16_t port;
	uint16_t reserved;
	int64_t handle;
	struct sockaddr_in6 addr; /* the bound address (IPv4 or IPv6) */
	uint32_t reserved2;	  /* no padding: every byte is checked or named */
};
_Static_assert(sizeof(struct snic_listener_blob) <= VB_LISTENER_BLOB_MAX, "blob too large");

int snic_export_listener(struct vb_listener *vl, void *blob, size_t *len)
{
	struct snic_listener *l = vb_container_of(vl, struct snic_listener, vl);
	struct snic_listener_blob b = { .magic = SNIC_LISTENER_BLOB_MAGIC };

	if (!blob || !len || *len < sizeof(b)) {
		if (len)
			*len = sizeof(b);
		return EINVAL;
	}
	b.port =
	    ntohs(vl->addr.ss_family == AF_INET ? ((struct sockaddr_in *)&vl->addr)->sin_port
						: ((struct sockaddr_in6 *)&vl->addr)->sin6_port);
	b.handle = (int64_t)(intptr_t)l->sock;
	memcpy(&b.addr, &vl->addr,
	       vl->addr.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(b.addr));
	memcpy(blob, &b, sizeof(b));
	*len = sizeof(b);
	return 0;
}

struct vb_listener *snic_import_listener(struct vb_device *vdev, const void *blob, size_t len)
{
	struct snic_listener_blob b;
	snic_handle fd;
	int ret;

	if (!blob || len != sizeof(b)) {
		errno = EINVAL;
		return NULL;
	}
	memcpy(&b, blob, sizeof(b));
	if (b.magic != SNIC_LISTENER_BLOB_MAGIC || b.reserved || b.reserved2 ||
	    (b.addr.sin6_family != AF_INET && b.addr.sin6_family != AF_INET6) || b.handle < 0 ||
	    b.handle > INT32_MAX) {
		errno = EINVAL;
		return NULL;
	}
	/* The OS checks that the handle is that port's listener, here. */
	ret = snic_os_listen_share(b.port, (snic_handle)(intptr_t)b.handle, &fd);
	if (ret) {
		errno = ret;
		return NULL;
	}
	return listener_wrap(vdev, (struct sockaddr *)&b.addr, b.port, fd);
}

int snic_destroy_listener(struct vb_listener *vl)
{
	struct snic_dev *dev = snic_dev_of(vl->dev);

	pthread_mutex_lock(&dev->lock);
	dev->n_lst--;
	pthread_mutex_unlock(&dev->lock);
	struct snic_listener *l = vb_container_of(vl, struct snic_listener, vl);

	snic_pending_fini(&l->pending);
	snic_os_watch_destroy(l->ready);
	snic_os_close(l->sock);
	free(l);
	return 0;
}
