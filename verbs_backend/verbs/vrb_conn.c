/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Connections of the verbs backend through librdmacm.  The QP exists
 * before the connection (as with softnic), so rdma_cm connects an external
 * QP: its number travels in the connection parameters and the QP is moved
 * to INIT, RTR and RTS here with the attributes rdma_init_qp_attr() gives.
 *
 * Each connection keeps its own event channel; a thread per device reads
 * them and moves a QP to the error state when its peer disconnects, so
 * outstanding work completes flushed, as on softnic.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "vrb.h"

#define RESOLVE_MS 5000
/* The receiver-not-ready wait a peer is told, in the IB spec's code: 12 is 0.64 ms. */
#define VRB_MIN_RNR_TIMER 12
#define VRB_REJ_CONSUMER_DEFINED 28 /* the IB CM's reason for a reject by the consumer */

static int cm_status(enum rdma_cm_event_type e)
{
	switch (e) {
	case RDMA_CM_EVENT_REJECTED:
		return ECONNREFUSED;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		return EHOSTUNREACH;
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return ECONNRESET;
	default:
		return EPROTO;
	}
}

/* The next event of ech, which must be want (the caller acks it). */
static int wait_event(struct rdma_event_channel *ech, enum rdma_cm_event_type want, int timeout_ms,
		      struct rdma_cm_event **out)
{
	struct pollfd p = { .fd = ech->fd, .events = POLLIN };
	struct rdma_cm_event *ev;
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno;
	if (!n)
		return ETIMEDOUT;
	if (rdma_get_cm_event(ech, &ev))
		return errno ? errno : EIO;
	if (ev->event != want) {
		int ret = cm_status(ev->event);
		/*
		 * Only the peer's own refusal (rdma_reject(): a consumer-defined
		 * reason) is one; any other reject means nobody listens there.
		 */
		if (ev->event == RDMA_CM_EVENT_REJECTED && ev->status != VRB_REJ_CONSUMER_DEFINED)
			ret = EHOSTUNREACH;
		rdma_ack_cm_event(ev);
		return ret;
	}
	*out = ev;
	return 0;
}

/* rdma_cm opens its own context: compare devices, not contexts. */
static int same_device(struct vrb_dev *dev, struct rdma_cm_id *id)
{
	return id->verbs &&
	       ibv_get_device_guid(id->verbs->device) == ibv_get_device_guid(dev->ctx->device) &&
	       !strcmp(ibv_get_device_name(id->verbs->device),
		       ibv_get_device_name(dev->ctx->device));
}

static int move_qp(struct rdma_cm_id *id, struct ibv_qp *qp, enum ibv_qp_state st)
{
	struct ibv_qp_attr a = { .qp_state = st };
	int mask;

	if (rdma_init_qp_attr(id, &a, &mask))
		return errno ? errno : EIO;
	if (st == IBV_QPS_INIT)
		a.qp_access_flags =
		    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	/*
	 * The kernel's CM gives 0, which the IB spec reads as 655 ms: every
	 * send that meets no receive would wait that long before its retry
	 * (softnic retries at once).  The peer waits what this end says.
	 */
	if (st == IBV_QPS_RTR && mask & IBV_QP_MIN_RNR_TIMER)
		a.min_rnr_timer = VRB_MIN_RNR_TIMER;
	return ibv_modify_qp(qp, &a, mask) ? (errno ? errno : EIO) : 0;
}

/* A failed connection leaves the QP as created: INIT, ready to connect again. */
static void reset_qp(struct vrb_qp *qp)
{
	struct vrb_dev *dev = vrb_dev_of(qp->vqp.dev);
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_RESET };

	ibv_modify_qp(qp->qp, &a, IBV_QP_STATE);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_INIT,
				  .port_num = dev->port,
				  .qp_access_flags = IBV_ACCESS_LOCAL_WRITE |
						     IBV_ACCESS_REMOTE_WRITE |
						     IBV_ACCESS_REMOTE_READ };
	ibv_modify_qp(qp->qp, &a,
		      IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

/*
 * rdma_cm hands the peer's private data over padded to the transport's
 * maximum, so the length travels in a header of our own, which also tells
 * a sanprov peer from any other rdma_cm user on the same port.
 */
struct vrb_cm_priv {
	uint8_t magic[2];
	uint8_t version;
	uint8_t len;
	uint8_t data[VB_MAX_PRIVATE_DATA];
};
_Static_assert(sizeof(struct vrb_cm_priv) == 56, "rdma_cm REQ private data is 56 bytes");

static const uint8_t vrb_cm_magic[2] = { 'S', 'P' };
#define VRB_CM_VERSION 1
#define VRB_CM_HDR offsetof(struct vrb_cm_priv, data)

static struct rdma_conn_param conn_param(struct vrb_dev *dev, struct vrb_qp *qp,
					 const struct vb_conn_param *p, struct vrb_cm_priv *priv)
{
	int rd = dev->attr.max_qp_rd_atom < 16 ? dev->attr.max_qp_rd_atom : 16;
	uint8_t n = p ? p->private_data_len : 0;

	memcpy(priv->magic, vrb_cm_magic, sizeof(priv->magic));
	priv->version = VRB_CM_VERSION;
	priv->len = n;
	if (n)
		memcpy(priv->data, p->private_data, n);
	return (struct rdma_conn_param){
		.private_data = priv,
		.private_data_len = (uint8_t)(VRB_CM_HDR + n),
		.responder_resources = (uint8_t)rd,
		.initiator_depth = (uint8_t)rd,
		.retry_count = 7,
		.rnr_retry_count = 7, /* as softnic: a send waits for its receive */
		.qp_num = qp->qp->qp_num,
	};
}

/* The peer's private data, checked: EPROTO when the peer is not one of ours. */
static int take_private_data(const struct rdma_conn_param *cp, uint8_t *len, uint8_t *data)
{
	const struct vrb_cm_priv *priv = cp->private_data;

	if (!priv || cp->private_data_len < VRB_CM_HDR ||
	    memcmp(priv->magic, vrb_cm_magic, sizeof(priv->magic)) ||
	    priv->version != VRB_CM_VERSION || priv->len > VB_MAX_PRIVATE_DATA ||
	    priv->len > cp->private_data_len - VRB_CM_HDR)
		return EPROTO;
	*len = priv->len;
	memcpy(data, priv->data, priv->len);
	return 0;
}

static int param_check(const struct vb_conn_param *p)
{
	if (p && (p->private_data_len > VB_MAX_PRIVATE_DATA ||
		  (p->private_data_len && !p->private_data)))
		return EINVAL;
	return 0;
}

static int timeout_of(const struct vb_conn_param *p)
{
	return p ? p->timeout_ms : -1;
}

/* The connection is up: watch it for the peer's disconnect. */
/* The CM thread's epoll keys: 0 stops it, 1 is the async events, then QPs. */
#define VRB_KEY_QP 2

static uint64_t watch_key(const struct vrb_dev *dev, uint32_t slot)
{
	return (uint64_t)dev->watched[slot].gen << 32 | (slot + VRB_KEY_QP);
}

/* The connected QP an event key names, or NULL (dev->lock held). */
static struct vrb_qp *watched_qp(struct vrb_dev *dev, uint64_t key)
{
	uint32_t slot = (uint32_t)key - VRB_KEY_QP;

	atomic_fetch_add_explicit(&dev->n_cm_looks, 1, memory_order_relaxed);
	if (slot >= dev->n_watched || dev->watched[slot].gen != (uint32_t)(key >> 32))
		return NULL;
	return dev->watched[slot].qp;
}

static int watch(struct vrb_dev *dev, struct vrb_qp *qp)
{
	struct epoll_event ev = { .events = EPOLLIN };
	uint32_t slot;

	fcntl(qp->ech->fd, F_SETFL, fcntl(qp->ech->fd, F_GETFL) | O_NONBLOCK);
	pthread_mutex_lock(&dev->lock);
	if (dev->free_watched != UINT32_MAX) {
		slot = dev->free_watched;
		dev->free_watched = dev->watched[slot].next_free;
	} else {
		if (dev->n_watched == dev->cap_watched) {
			uint32_t cap = dev->cap_watched ? 2 * dev->cap_watched : 64;
			struct vrb_watched *w =
			    cap < UINT32_MAX / 2 ? realloc(dev->watched, cap * sizeof(*w)) : NULL;

			if (!w) {
				pthread_mutex_unlock(&dev->lock);
				return ENOMEM;
			}
			dev->watched = w;
			dev->cap_watched = cap;
		}
		slot = dev->n_watched++;
		dev->watched[slot].gen = 0;
	}
	dev->watched[slot].qp = qp;
	dev->watched[slot].gen++;
	qp->slot = slot;
	qp->watched = true;
	ev.data.u64 = watch_key(dev, slot);
	/* Added under the lock: a disconnect that follows finds it there to remove. */
	if (epoll_ctl(dev->epoll_fd, EPOLL_CTL_ADD, qp->ech->fd, &ev)) {
		int ret = errno;

		pthread_mutex_unlock(&dev->lock);
		return ret;
	}
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

int vrb_connect(struct vb_qp *vqp, const struct sockaddr *addr, socklen_t addrlen,
		const struct vb_conn_param *param)
{
	struct vrb_qp *qp = vrb_qp_of(vqp);
	struct vrb_dev *dev = vrb_dev_of(vqp->dev);
	struct rdma_conn_param cp;
	struct vrb_cm_priv priv;
	struct rdma_cm_event *ev;
	int ret;

	ret = vb_sockaddr_port(addr, addrlen, NULL);
	if (!ret)
		ret = param_check(param);
	if (ret)
		return ret;
	if (qp->id)
		return EISCONN;
	qp->ech = rdma_create_event_channel();
	if (!qp->ech)
		return errno ? errno : ENOMEM;
	if (rdma_create_id(qp->ech, &qp->id, qp, RDMA_PS_TCP)) {
		ret = errno ? errno : ENOMEM;
		goto err_ech;
	}
	if (rdma_resolve_addr(qp->id, NULL, (struct sockaddr *)addr, RESOLVE_MS)) {
		ret = errno ? errno : EHOSTUNREACH;
		goto err_id;
	}
	ret = wait_event(qp->ech, RDMA_CM_EVENT_ADDR_RESOLVED, RESOLVE_MS + 1000, &ev);
	if (ret)
		goto err_id;
	rdma_ack_cm_event(ev);
	if (!same_device(dev, qp->id)) {
		ret = EXDEV; /* the address is reached through another device */
		goto err_id;
	}
	if (rdma_resolve_route(qp->id, RESOLVE_MS)) {
		ret = errno ? errno : EHOSTUNREACH;
		goto err_id;
	}
	ret = wait_event(qp->ech, RDMA_CM_EVENT_ROUTE_RESOLVED, RESOLVE_MS + 1000, &ev);
	if (ret)
		goto err_id;
	rdma_ack_cm_event(ev);
	ret = move_qp(qp->id, qp->qp, IBV_QPS_INIT);
	if (ret)
		goto err_id;
	cp = conn_param(dev, qp, param, &priv);
	if (rdma_connect(qp->id, &cp)) {
		ret = errno ? errno : ECONNREFUSED;
		goto err_qp;
	}
	/* An external QP gets CONNECT_RESPONSE: moving it to RTS and RTU are ours. */
	ret = wait_event(qp->ech, RDMA_CM_EVENT_CONNECT_RESPONSE, timeout_of(param), &ev);
	if (ret)
		goto err_qp;
	ret = take_private_data(&ev->param.conn, &qp->vqp.peer_private_data_len,
				qp->vqp.peer_private_data);
	rdma_ack_cm_event(ev);
	if (!ret)
		ret = move_qp(qp->id, qp->qp, IBV_QPS_RTR);
	if (!ret)
		ret = move_qp(qp->id, qp->qp, IBV_QPS_RTS);
	if (!ret && rdma_establish(qp->id))
		ret = errno ? errno : EPROTO;
	if (ret)
		goto err_qp;
	ret = watch(dev, qp);
	return ret;

err_qp:
	reset_qp(qp);
err_id:
	rdma_destroy_id(qp->id);
	qp->id = NULL;
err_ech:
	rdma_destroy_event_channel(qp->ech);
	qp->ech = NULL;
	return ret;
}

struct vb_listener *vrb_create_listener(struct vb_device *vdev, const struct sockaddr *addr,
					socklen_t addrlen, int backlog)
{
	struct vrb_listener *l;
	int ret;

	ret = vb_sockaddr_port(addr, addrlen, NULL);
	if (ret) {
		errno = ret;
		return NULL;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		errno = ENOMEM;
		return NULL;
	}
	l->ech = rdma_create_event_channel();
	if (!l->ech) {
		ret = errno ? errno : ENOMEM;
		goto err_free;
	}
	if (rdma_create_id(l->ech, &l->id, NULL, RDMA_PS_TCP)) {
		ret = errno ? errno : ENOMEM;
		goto err_ech;
	}
	if (rdma_bind_addr(l->id, (struct sockaddr *)addr) ||
	    rdma_listen(l->id, backlog > 0 ? backlog : 128)) {
		ret = errno ? errno : EADDRINUSE;
		goto err_id;
	}
	fcntl(l->ech->fd, F_SETFL, fcntl(l->ech->fd, F_GETFL) | O_NONBLOCK);
	l->vl.dev = vdev;
	l->vl.fd = l->ech->fd;
	memcpy(&l->vl.addr, rdma_get_local_addr(l->id),
	       addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
	atomic_fetch_add(&vrb_dev_of(vdev)->objects, 1);
	return &l->vl;

err_id:
	rdma_destroy_id(l->id);
err_ech:
	rdma_destroy_event_channel(l->ech);
err_free:
	free(l);
	errno = ret;
	return NULL;
}

int vrb_destroy_listener(struct vb_listener *vl)
{
	struct vrb_listener *l = vb_container_of(vl, struct vrb_listener, vl);

	rdma_destroy_id(l->id);
	rdma_destroy_event_channel(l->ech);
	atomic_fetch_sub(&vrb_dev_of(vl->dev)->objects, 1);
	free(l);
	return 0;
}

/*
 * The passive side in three steps.  A request taken leaves the listener's
 * event channel for one of its own, so that it outlives the listener and
 * its events do not mix with the next requests'.
 */
struct vrb_conn_req {
	struct vb_conn_req vreq;
	struct rdma_cm_id *id;
	struct rdma_event_channel *ech;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int time_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Refuse an id of a connect request and let it go (its events are all acknowledged). */
static void refuse(struct rdma_cm_id *id, struct rdma_event_channel *ech)
{
	rdma_reject(id, NULL, 0);
	rdma_destroy_id(id);
	if (ech)
		rdma_destroy_event_channel(ech);
}

struct vb_conn_req *vrb_get_request(struct vb_listener *vl, int timeout_ms)
{
	struct vrb_listener *l = vb_container_of(vl, struct vrb_listener, vl);
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct pollfd p = { .fd = l->ech->fd, .events = POLLIN };
	const struct sockaddr *peer;
	struct vrb_conn_req *req;
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	int n, ret;

	req = calloc(1, sizeof(*req));
	if (!req) {
		errno = ENOMEM;
		return NULL;
	}
	for (;;) {
		do
			n = poll(&p, 1, time_left(deadline));
		while (n < 0 && errno == EINTR);
		if (n <= 0) {
			ret = n ? errno : ETIMEDOUT;
			goto err_free;
		}
		/* The channel does not block: another thread may have taken the event. */
		if (rdma_get_cm_event(l->ech, &ev)) {
			if (errno == EAGAIN)
				continue;
			ret = errno ? errno : EIO;
			goto err_free;
		}
		if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST)
			break;
		rdma_ack_cm_event(ev); /* nothing else concerns a listener */
	}
	id = ev->id;
	ret =
	    take_private_data(&ev->param.conn, &req->vreq.private_data_len, req->vreq.private_data);
	/* Acknowledged before the id migrates: rdma_migrate_id() waits for that. */
	rdma_ack_cm_event(ev);
	if (ret) {
		refuse(id, NULL); /* not a sanprov peer */
		goto err_free;
	}
	peer = rdma_get_peer_addr(id);
	if (peer->sa_family == AF_INET || peer->sa_family == AF_INET6)
		memcpy(&req->vreq.peer, peer,
		       peer->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						  : sizeof(struct sockaddr_in6));
	req->ech = rdma_create_event_channel();
	if (!req->ech || rdma_migrate_id(id, req->ech)) {
		ret = errno ? errno : ENOMEM;
		refuse(id, req->ech);
		goto err_free;
	}
	req->id = id;
	req->vreq.dev = vl->dev;
	atomic_fetch_add(&vrb_dev_of(vl->dev)->objects, 1);
	return &req->vreq;

err_free:
	free(req);
	errno = ret;
	return NULL;
}

static void req_free(struct vrb_conn_req *req)
{
	atomic_fetch_sub(&vrb_dev_of(req->vreq.dev)->objects, 1);
	free(req);
}

int vrb_reject_request(struct vb_conn_req *vreq)
{
	struct vrb_conn_req *req = vb_container_of(vreq, struct vrb_conn_req, vreq);

	refuse(req->id, req->ech);
	req_free(req);
	return 0;
}

int vrb_accept_request(struct vb_conn_req *vreq, struct vb_qp *vqp,
		       const struct vb_conn_param *param)
{
	struct vrb_conn_req *req = vb_container_of(vreq, struct vrb_conn_req, vreq);
	struct vrb_qp *qp = vrb_qp_of(vqp);
	struct vrb_dev *dev = vrb_dev_of(vqp->dev);
	struct rdma_cm_id *id = req->id;
	struct rdma_conn_param cp;
	struct vrb_cm_priv priv;
	struct rdma_cm_event *ev;
	int ret;

	ret = param_check(param);
	if (!ret && vqp->dev != vreq->dev)
		ret = EINVAL;
	if (!ret && qp->id)
		ret = EISCONN;
	if (!ret && !same_device(dev, id))
		ret = EXDEV;
	if (ret) {
		refuse(id, req->ech);
		goto out;
	}
	ret = move_qp(id, qp->qp, IBV_QPS_INIT);
	if (!ret)
		ret = move_qp(id, qp->qp, IBV_QPS_RTR);
	if (!ret)
		ret = move_qp(id, qp->qp, IBV_QPS_RTS);
	if (ret)
		goto err_refuse;
	cp = conn_param(dev, qp, param, &priv);
	if (rdma_accept(id, &cp)) {
		ret = errno ? errno : ECONNABORTED;
		goto err_refuse;
	}
	ret = wait_event(req->ech, RDMA_CM_EVENT_ESTABLISHED, RESOLVE_MS, &ev);
	if (ret) {
		reset_qp(qp);
		rdma_destroy_id(id);
		rdma_destroy_event_channel(req->ech);
		goto out;
	}
	rdma_ack_cm_event(ev);
	qp->vqp.peer_private_data_len = vreq->private_data_len;
	memcpy(qp->vqp.peer_private_data, vreq->private_data, vreq->private_data_len);
	qp->ech = req->ech;
	qp->id = id;
	ret = watch(dev, qp);
	goto out;

err_refuse:
	reset_qp(qp);
	refuse(id, req->ech);
out:
	req_free(req);
	return ret;
}

/* Stop watching qp and tell the peer, if it is connected. */
void vrb_disconnect(struct vrb_qp *qp)
{
	struct vrb_dev *dev = vrb_dev_of(qp->vqp.dev);

	if (!qp->id)
		return;
	pthread_mutex_lock(&dev->lock);
	if (qp->watched) {
		struct vrb_watched *w = &dev->watched[qp->slot];

		/* A new generation: an event already taken for this QP finds nothing. */
		w->qp = NULL;
		w->gen++;
		w->next_free = dev->free_watched;
		dev->free_watched = qp->slot;
		qp->watched = false;
		epoll_ctl(dev->epoll_fd, EPOLL_CTL_DEL, qp->ech->fd, NULL);
	}
	pthread_mutex_unlock(&dev->lock);
	rdma_disconnect(qp->id);
}

/*
 * A CQ overrun loses completions: the CQ says EOVERFLOW from then on and,
 * as the IB spec has it, the QPs that complete into it go to the error
 * state (not every device moves them itself).
 */
static void async_events(struct vrb_dev *dev)
{
	struct ibv_async_event ae;

	while (!ibv_get_async_event(dev->ctx, &ae)) {
		if (ae.event_type == IBV_EVENT_CQ_ERR) {
			struct vrb_cq *cq = ae.element.cq->cq_context;
			struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };

			atomic_store(&cq->overrun, true);
			/* Rare: every connected QP is looked at. */
			pthread_mutex_lock(&dev->lock);
			for (uint32_t i = 0; i < dev->n_watched; i++) {
				struct vrb_qp *q = dev->watched[i].qp;

				if (q && (q->vqp.send_cq == &cq->vcq || q->vqp.recv_cq == &cq->vcq))
					ibv_modify_qp(q->qp, &a, IBV_QP_STATE);
			}
			pthread_mutex_unlock(&dev->lock);
		}
		ibv_ack_async_event(&ae);
	}
}

void *vrb_cm_thread(void *arg)
{
	struct vrb_dev *dev = arg;
	struct epoll_event evs[16];

	for (;;) {
		int n = epoll_wait(dev->epoll_fd, evs, 16, -1);

		for (int i = 0; i < n; i++) {
			uint64_t key = evs[i].data.u64;
			struct rdma_cm_event *ev;
			struct vrb_qp *qp;

			if (!key)
				return NULL; /* the stop eventfd */
			if (key == 1) {
				async_events(dev);
				continue;
			}
			/* The QP by its slot, if it is still the one connected there. */
			pthread_mutex_lock(&dev->lock);
			qp = watched_qp(dev, key);
			while (qp && !rdma_get_cm_event(qp->ech, &ev)) {
				if (ev->event == RDMA_CM_EVENT_DISCONNECTED ||
				    ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
					struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };
					atomic_store(&qp->disconnected, true);
					ibv_modify_qp(qp->qp, &a, IBV_QP_STATE);
				}
				rdma_ack_cm_event(ev);
			}
			pthread_mutex_unlock(&dev->lock);
		}
	}
}
