/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Sockets: creation, bind, listen, accept, connect, network events, close.
 *
 * A connection is an RC QP on the provider's CQ, in the provider's one
 * protection domain, whose registration cache every socket shares (the
 * rkeys a connection hands out are windows bound to its QP: sp_rdma.c).
 * Connect and accept
 * go through the backend's connection manager; the connecting side sends a
 * hello in the private data with the address the switch bound it to (the
 * switch binds a SAN socket to the address of the TCP socket it stands
 * for), which the listener's condition function gets to see.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_internal.h"
#include "sp_os.h"
#include "sp_wire.h"

#define SP_LISTEN_TICK_MS 100
#define SP_MAX_DEFERRED 64     /* deferred requests a listening socket keeps */
#define SP_ACCEPT_GRACE_MS 100 /* for a request behind its connection */

/*
 * The condition functions this thread runs, innermost first (an accept
 * may run from inside a condition function too).
 */
struct cond_frame {
	struct sp_sock *so;
	struct cond_frame *up;
};
static VB_THREAD_LOCAL struct cond_frame *cond_top;

bool sp_sock_in_condition(void)
{
	return cond_top != NULL;
}

/* How many of this thread's accepts of so are inside their condition function. */
static uint32_t own_accepts(const struct sp_sock *so)
{
	uint32_t n = 0;

	for (struct cond_frame *f = cond_top; f; f = f->up)
		n += f->so == so;
	return n;
}

bool sp_sock_closed(struct sp_sock *so)
{
	bool closed;

	pthread_mutex_lock(&so->lock);
	closed = so->closing && !so->qp;
	pthread_mutex_unlock(&so->lock);
	return closed;
}

/* Objects ------------------------------------------------------------------ */

void sp_sock_hold(void *obj)
{
	atomic_fetch_add(&((struct sp_sock *)obj)->refs, 1);
}

void sp_sock_put(struct sp_sock *so)
{
	if (atomic_fetch_sub(&so->refs, 1) != 1)
		return;
	sp_stats_sock_fini(&so->stats);
	sp_op_slab_free(so);
	pthread_cond_destroy(&so->cond);
	pthread_mutex_destroy(&so->lock);
	free(so);
}

static struct sp_sock *sock_alloc(uint32_t catalog_id)
{
	struct sp_sock *so = calloc(1, sizeof(*so));

	if (!so)
		return NULL;
	atomic_init(&so->refs, 1);
	pthread_mutex_init(&so->lock, NULL);
	pthread_cond_init(&so->cond, NULL);
	so->catalog_id = catalog_id;
	so->rdma_threshold = sp_prov.cfg.rdma_threshold;
	so->max_rdma = sp_prov.cfg.max_rdma;
	sp_stats_sock_init(&so->stats);
	return so;
}

static bool started(void)
{
	return atomic_load(&sp_prov.startups) > 0 && !atomic_load(&sp_prov.tearing_down);
}

struct sp_sock *sp_sock_get(sp_socket s, int *err)
{
	struct sp_sock *so;
	uintptr_t ctx = 0;
	int e;

	if (!started()) {
		*err = SP_WSANOTINITIALISED;
		return NULL;
	}
	/* A fork child's inherited sockets are the parent's: they must not be touched here. */
	if (sp_forked()) {
		*err = SP_WSAENETDOWN;
		return NULL;
	}
	if (sp_prov.up.query_socket_handle_context(s, &ctx, &e)) {
		*err = SP_WSAENOTSOCK;
		return NULL;
	}
	so = sp_htab_lookup(&sp_prov.sockets, ctx, sp_sock_hold);
	if (!so)
		*err = SP_WSAENOTSOCK;
	return so;
}

/* Publish so to the switch: a context in the table, a handle from the switch. */
static int sock_publish(struct sp_sock *so)
{
	int err, ret;

	ret = sp_htab_add(&sp_prov.sockets, so, &so->ctx);
	if (ret)
		return SP_WSAEMFILE;
	so->handle = sp_prov.up.create_socket_handle(so->catalog_id, (uintptr_t)so->ctx, &err);
	if (so->handle == SP_INVALID_SOCKET) {
		sp_htab_remove(&sp_prov.sockets, so->ctx);
		return err ? err : SP_WSAENOBUFS;
	}
	sp_stats_count(SP_PC_SOCKETS_OPENED);
	return 0;
}

void sp_sock_signal(struct sp_sock *so, int32_t events, int bit, int error)
{
	so->events |= events;
	so->event_errors[bit] = error;
	if (so->event && (so->event_mask & events))
		sp_os_event_set(so->event);
	pthread_cond_broadcast(&so->cond);
}

void sp_sock_broken(struct sp_sock *so, int error)
{
	if (so->state == SP_SOCK_CONNECTED) {
		so->state = SP_SOCK_FAILED;
		so->error = error;
		sp_sock_signal(so, SP_FD_CLOSE, SP_FD_CLOSE_BIT, error);
	}
}

/* Connection resources ------------------------------------------------------ */

/* Report a teardown step that failed: what it held stays allocated (leaked, never reused). */
static void teardown_failed(const char *what, int ret)
{
	if (ret)
		fprintf(stderr, "sanprov: %s: %s (its resources are leaked)\n", what,
			strerror(ret));
}

/*
 * Tear down so's connection: its QP first (nothing more completes), then
 * its operations (they give their memory handles back), its handles and
 * registrations (their regions stay in the shared cache).  Socket lock not
 * held.
 */
static void conn_release(struct sp_sock *so)
{
	struct vb_qp *qp;

	pthread_mutex_lock(&so->lock);
	qp = so->qp;
	so->qp = NULL;
	pthread_mutex_unlock(&so->lock);
	if (qp)
		teardown_failed("destroying a QP", vb_destroy_qp(qp));
	sp_op_abort_all(so);
	/* Whatever the QP completed is delivered: its wr_ids find nothing from now on. */
	sp_op_slab_unpublish(so);
	sp_rdma_release_socket(so);
	sp_mem_release_socket(so);
}

/*
 * A QP for so's connection, in the provider's PD: 0 or errno, with
 * nothing left behind on failure.  Takes no socket lock (a caller may
 * hold it).
 */
static int conn_resources(struct sp_sock *so)
{
	uint32_t depth = sp_prov.cfg.queue_depth;
	struct vb_qp_init_attr attr = {
		.send_cq = sp_prov.cq,
		.recv_cq = sp_prov.cq,
		.cap = { .max_send_wr = depth,
			 .max_recv_wr = depth,
			 .max_send_sge = sp_prov.cfg.max_sge,
			 .max_recv_sge = sp_prov.cfg.max_sge },
	};
	struct vb_qp *qp;

	/*
	 * Nothing of the shared CQ is promised to the QP: each operation takes
	 * its entry when it is posted (sp_op.c), so the CQ bounds the
	 * operations in flight, not the connections.
	 */
	int ret;

	qp = vb_create_qp(sp_prov.pd, &attr);
	if (!qp)
		return errno ? errno : ENOMEM;
	/* Its operations, made now: posting allocates nothing. */
	ret = sp_op_slab_init(so, depth, depth);
	if (ret) {
		teardown_failed("destroying a QP", vb_destroy_qp(qp));
		return ret;
	}
	so->qp = qp;
	so->sq_free = depth;
	so->rq_free = depth;
	return 0;
}

/* Addresses ----------------------------------------------------------------- */

static int check_sockaddr(const struct sockaddr *sa, int len)
{
	if (!sa || len < (int)sizeof(sa->sa_family))
		return SP_WSAEFAULT;
	if (sa->sa_family == AF_INET)
		return len >= (int)sizeof(struct sockaddr_in) ? 0 : SP_WSAEFAULT;
	if (sa->sa_family == AF_INET6)
		return len >= (int)sizeof(struct sockaddr_in6) ? 0 : SP_WSAEFAULT;
	return SP_WSAEAFNOSUPPORT;
}

static socklen_t sockaddr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* The calls ------------------------------------------------------------------ */

sp_socket sp_socket_open(int af, int type, int protocol, uint32_t catalog_id, uint32_t flags,
			 int *err)
{
	struct sp_sock *so;
	int ret;

	(void)flags;
	if (!started()) {
		*err = SP_WSANOTINITIALISED;
		return SP_INVALID_SOCKET;
	}
	if (sp_forked()) {
		*err = SP_WSAENETDOWN;
		return SP_INVALID_SOCKET;
	}
	if (af != AF_INET && af != AF_INET6) {
		*err = SP_WSAEAFNOSUPPORT;
		return SP_INVALID_SOCKET;
	}
	if (type != SOCK_STREAM) {
		*err = SP_WSAEPROTOTYPE;
		return SP_INVALID_SOCKET;
	}
	if (protocol && protocol != IPPROTO_TCP) {
		*err = SP_WSAEPROTONOSUPPORT;
		return SP_INVALID_SOCKET;
	}
	so = sock_alloc(catalog_id);
	if (!so) {
		*err = SP_WSAENOBUFS;
		return SP_INVALID_SOCKET;
	}
	so->local.ss_family = (unsigned short)af;
	ret = sock_publish(so);
	if (ret) {
		sp_sock_put(so);
		*err = ret;
		return SP_INVALID_SOCKET;
	}
	return so->handle;
}

int sp_bind(sp_socket s, const struct sockaddr *name, int namelen, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	ret = check_sockaddr(name, namelen);
	pthread_mutex_lock(&so->lock);
	if (!ret && (so->state != SP_SOCK_NEW || so->bound))
		ret = SP_WSAEINVAL;
	if (!ret && name->sa_family != so->local.ss_family)
		ret = SP_WSAEFAULT;
	if (!ret) {
		memcpy(&so->local, name,
		       (size_t)(name->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							    : sizeof(struct sockaddr_in)));
		so->bound = true;
		so->state = SP_SOCK_BOUND;
	}
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

/* Tell the switch when a connection request waits (FD_ACCEPT). */
static void *listen_main(void *arg)
{
	struct sp_sock *so = arg;

	pthread_mutex_lock(&so->lock);
	while (!so->worker_stop) {
		if (so->accept_ready) {
			/* Signalled; accept() clears it.  Until then nothing to do. */
			pthread_cond_wait(&so->cond, &so->lock);
			continue;
		}
		pthread_mutex_unlock(&so->lock);
		int r = sp_os_wait2(so->listener->fd, so->closed, SP_LISTEN_TICK_MS * 1000, false);
		pthread_mutex_lock(&so->lock);
		/*
		 * Looked at again under the lock: an accept may have taken the
		 * request since (and re-enabled FD_ACCEPT already); signalling
		 * it now would leave a stale FD_ACCEPT that blocks the next.
		 */
		if (r == 1 && !so->worker_stop && !so->accept_ready &&
		    sp_os_wait2(so->listener->fd, so->closed, 0, false) == 1) {
			so->accept_ready = true;
			sp_sock_signal(so, SP_FD_ACCEPT, SP_FD_ACCEPT_BIT, 0);
		}
	}
	pthread_mutex_unlock(&so->lock);
	return NULL;
}

/*
 * so (locked, bound) listens on the backend listener that make() returns
 * (a new one, or one shared with another socket): 0 or a WSA error.
 */
static int listen_start(struct sp_sock *so, int backlog,
			struct vb_listener *(*make)(struct sp_sock *so, int backlog,
						    const void *arg),
			const void *arg)
{
	struct vb_listener *l;
	int ret = 0;

	if (sp_os_wake_open(&so->closed, true))
		return SP_WSAENOBUFS;
	/* Deferred requests: as many as the backlog, which bounds what waits anyway. */
	so->max_deferred = backlog < 1 ? 1 : backlog > SP_MAX_DEFERRED ? SP_MAX_DEFERRED : backlog;
	so->deferred = calloc(so->max_deferred, sizeof(*so->deferred));
	if (!so->deferred) {
		ret = SP_WSAENOBUFS;
		goto err_deferred;
	}
	l = make(so, backlog, arg);
	if (!l) {
		ret = sp_wsa_error(errno);
		goto err_deferred;
	}
	so->listener = l;
	memcpy(&so->local, &l->addr, sizeof(so->local));
	so->bound = true;
	so->state = SP_SOCK_LISTENING;
	so->worker_stop = false;
	if (pthread_create(&so->worker, NULL, listen_main, so)) {
		vb_destroy_listener(l);
		so->listener = NULL;
		so->state = SP_SOCK_BOUND;
		ret = SP_WSAENOBUFS;
		goto err_deferred;
	}
	so->worker_running = true;
	return 0;

err_deferred:
	free(so->deferred);
	so->deferred = NULL;
	sp_os_wake_close(so->closed);
	return ret;
}

static struct vb_listener *listener_new(struct sp_sock *so, int backlog, const void *arg)
{
	(void)arg;
	return vb_create_listener(sp_prov.dev, (struct sockaddr *)&so->local,
				  sockaddr_len(&so->local), backlog > 0 ? backlog : 1);
}

int sp_listen(sp_socket s, int backlog, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	int ret = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	pthread_mutex_lock(&so->lock);
	if (so->state == SP_SOCK_LISTENING)
		goto out; /* a new backlog: the backend's queue stays as it is */
	if (so->state != SP_SOCK_BOUND) {
		ret = so->state == SP_SOCK_NEW ? SP_WSAEINVAL : SP_WSAEISCONN;
		goto out;
	}
	ret = listen_start(so, backlog, listener_new, NULL);
out:
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

/* Duplicated sockets ------------------------------------------------------------ */

/* The provider's part of a protocol info. */
#define SP_DUP_MAGIC 0x53504455u /* "SPDU" */
#define SP_DUP_VERSION 1

struct sp_dup_blob {
	uint32_t magic;
	uint16_t version;
	uint16_t backend_len;
	uint32_t creator; /* the process it was made for, again */
	uint32_t catalog_id;
	uint8_t backend[VB_LISTENER_BLOB_MAX];
};
_Static_assert(sizeof(struct sp_dup_blob) <= SP_PROTOCOL_INFO_RESERVED, "blob too large");

int sp_duplicate_socket(sp_socket s, uint32_t process_id, struct sp_protocol_info *info, int *err)
{
	struct sp_dup_blob b = { .magic = SP_DUP_MAGIC, .version = SP_DUP_VERSION };
	struct sp_sock *so = sp_sock_get(s, err);
	size_t len = sizeof(b.backend);
	int ret = 0, rel;

	if (!so)
		return SP_SOCKET_ERROR;
	/* The info travels to a process that inherits the listener: self or a child. */
	rel = sp_os_process_relation(process_id);
	if (!info)
		ret = SP_WSAEFAULT;
	else if (rel != 0 && rel != 1)
		ret = SP_WSAEINVAL;
	pthread_mutex_lock(&so->lock);
	/* A connection is usable in one process at a time: it is not shared. */
	if (!ret && so->state != SP_SOCK_LISTENING)
		ret = so->state == SP_SOCK_CONNECTED || so->state == SP_SOCK_CONNECTING
			  ? SP_WSAEOPNOTSUPP
			  : SP_WSAEINVAL;
	if (!ret) {
		ret = vb_export_listener(so->listener, b.backend, &len);
		ret = ret == EOPNOTSUPP ? SP_WSAEOPNOTSUPP : ret ? sp_wsa_error(ret) : 0;
	}
	if (!ret) {
		b.backend_len = (uint16_t)len;
		b.creator = process_id;
		b.catalog_id = so->catalog_id;
		memset(info, 0, sizeof(*info));
		info->catalog_id = so->catalog_id;
		info->af = so->local.ss_family;
		info->type = SOCK_STREAM;
		info->protocol = IPPROTO_TCP;
		info->process_id = process_id;
		info->reserved_len = sizeof(b);
	}
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	if (ret)
		return sp_fail(err, ret);
	memcpy(info->provider_reserved, &b, sizeof(b));
	return 0;
}

static bool tail_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

static struct vb_listener *listener_import(struct sp_sock *so, int backlog, const void *arg)
{
	const struct sp_dup_blob *b = arg;

	(void)so, (void)backlog;
	return vb_import_listener(sp_prov.dev, b->backend, b->backend_len);
}

sp_socket sp_socket_from_info(const struct sp_protocol_info *info, uint32_t flags, int *err)
{
	struct sp_dup_blob b;
	struct sp_sock *so;
	sp_socket s;
	int ret, rel, e;

	if (!info) {
		*err = SP_WSAEFAULT;
		return SP_INVALID_SOCKET;
	}
	/* Made for this process, or for its parent before the fork that made this one. */
	rel = sp_os_process_relation(info->process_id);
	memcpy(&b, info->provider_reserved, sizeof(b));
	if ((rel != 0 && rel != 2) || info->reserved_len != sizeof(b) || b.magic != SP_DUP_MAGIC ||
	    b.version != SP_DUP_VERSION || b.backend_len > sizeof(b.backend) ||
	    b.creator != info->process_id || b.catalog_id != info->catalog_id ||
	    !tail_zero(b.backend + b.backend_len, sizeof(b.backend) - b.backend_len)) {
		*err = SP_WSAEINVAL;
		return SP_INVALID_SOCKET;
	}
	s = sp_socket_open(info->af, info->type, info->protocol, info->catalog_id, flags, err);
	if (s == SP_INVALID_SOCKET)
		return s;
	so = sp_sock_get(s, err);
	if (!so)
		return SP_INVALID_SOCKET;
	pthread_mutex_lock(&so->lock);
	ret = listen_start(so, SP_MAX_DEFERRED, listener_import, &b);
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	if (ret) {
		sp_close_socket(s, &e);
		*err = ret;
		return SP_INVALID_SOCKET;
	}
	return s;
}

/* Close a socket that the switch never saw (a failed accept). */
static void sock_discard(struct sp_sock *so)
{
	conn_release(so);
	sp_sock_put(so);
}

/* An accept call is done with the listener. */
static void accept_leave(struct sp_sock *so)
{
	pthread_mutex_lock(&so->lock);
	if (!--so->accepters)
		pthread_cond_broadcast(&so->cond);
	pthread_mutex_unlock(&so->lock);
}

/*
 * The next connect request of so's listener (socket locked, accepters
 * counted): a deferred one first, else wait for one.  NULL with *ret, a
 * WSA error; a closesocket() meanwhile ends the wait with WSAEINTR, as a
 * blocking call in Winsock.  With an event selected the socket is
 * non-blocking, as in Winsock.
 */
static struct vb_conn_req *accept_next(struct sp_sock *so, int *ret)
{
	struct vb_conn_req *req;
	int r;

	if (so->n_deferred) {
		req = so->deferred[0];
		memmove(so->deferred, so->deferred + 1, --so->n_deferred * sizeof(*so->deferred));
		return req;
	}
	for (;;) {
		int tick = so->event_mask ? 0 : SP_LISTEN_TICK_MS;

		pthread_mutex_unlock(&so->lock);
		/* A close wakes every waiter at once (the closed object stays woken). */
		r = sp_os_wait2(so->listener->fd, so->closed, tick * 1000, false);
		r = r == 1 ? 0 : r == 0 ? ETIMEDOUT : r == 2 ? EINTR : -r;
		/*
		 * Ready: a connection arrived, its request may still be on the
		 * way (FD_ACCEPT comes with the connection): a short grace, so
		 * that an accept after FD_ACCEPT does not answer WSAEWOULDBLOCK.
		 */
		req = r ? NULL : vb_get_request(so->listener, SP_ACCEPT_GRACE_MS);
		if (!r && !req)
			r = errno;
		pthread_mutex_lock(&so->lock);
		/*
		 * Every accept re-enables FD_ACCEPT, as in Winsock, also one that
		 * found nothing: the watcher may have signalled a request this
		 * call took as it arrived, and must look again for the next one.
		 */
		so->accept_ready = false;
		pthread_cond_broadcast(&so->cond);
		if (so->state != SP_SOCK_LISTENING) {
			if (req)
				vb_reject_request(req);
			*ret = SP_WSAEINTR;
			return NULL;
		}
		if (req)
			return req;
		/* Gone before it was taken (its connector gave up), or not one of ours. */
		if (r != ETIMEDOUT && r != EAGAIN && r != EPROTO) {
			*ret = sp_wsa_error(r);
			return NULL;
		}
		if (so->event_mask) {
			*ret = SP_WSAEWOULDBLOCK;
			return NULL;
		}
	}
}

sp_socket sp_accept(sp_socket s, struct sockaddr *addr, int *addrlen, sp_condition_fn cond,
		    uintptr_t callback_data, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err), *child = NULL;
	struct sockaddr_storage peer;
	struct vb_conn_req *req;
	struct sp_hello hello;
	struct vb_conn_param param = { .private_data = &hello, .private_data_len = sizeof(hello) };
	int ret = 0, verdict;

	if (!so)
		return SP_INVALID_SOCKET;
	pthread_mutex_lock(&so->lock);
	if (so->state != SP_SOCK_LISTENING) {
		ret = so->closing ? SP_WSAENOTSOCK : SP_WSAEINVAL;
		pthread_mutex_unlock(&so->lock);
		goto out;
	}
	/* Room for a peer of the listener's family (an IPv6 address is 28 bytes). */
	if (addr && (!addrlen || *addrlen < (int)sockaddr_len(&so->local))) {
		pthread_mutex_unlock(&so->lock);
		ret = SP_WSAEFAULT;
		goto out;
	}
	/* The listener stays until the last accepter leaves (closesocket waits). */
	so->accepters++;
	for (;;) {
		req = accept_next(so, &ret);
		if (!req)
			break;
		/* Not a sanprov peer: refused, and the next one is waited for. */
		if (!sp_hello_take(req->private_data, req->private_data_len, &peer))
			break;
		sp_stats_count(SP_PC_ACCEPT_FOREIGN);
		vb_reject_request(req);
		if (so->event_mask) {
			ret = SP_WSAEWOULDBLOCK;
			break;
		}
	}
	pthread_mutex_unlock(&so->lock);
	if (!req)
		goto out_accepter;

	/*
	 * Asked before anything is made for it: a refusal costs nothing.  It
	 * may close the listening socket meanwhile (the close does not wait for
	 * this accept, which then ends with WSAEINTR).
	 */
	if (cond) {
		struct cond_frame frame = { .so = so, .up = cond_top };

		cond_top = &frame;
		verdict = cond((struct sockaddr *)&peer, (int)sockaddr_len(&peer), callback_data);
		cond_top = frame.up;
	} else {
		verdict = SP_CF_ACCEPT;
	}
	pthread_mutex_lock(&so->lock);
	if (so->state != SP_SOCK_LISTENING) {
		pthread_mutex_unlock(&so->lock);
		vb_reject_request(req);
		ret = SP_WSAEINTR;
		goto out_accepter;
	}
	if (verdict == SP_CF_DEFER && so->n_deferred < so->max_deferred) {
		so->deferred[so->n_deferred++] = req;
		pthread_mutex_unlock(&so->lock);
		sp_stats_count(SP_PC_ACCEPT_DEFERRED);
		ret = SP_WSATRY_AGAIN;
		goto out_accepter;
	}
	pthread_mutex_unlock(&so->lock);
	if (verdict == SP_CF_DEFER) {
		/* No room to keep it: refused, and the caller is told it was not deferred. */
		vb_reject_request(req);
		sp_stats_count(SP_PC_ACCEPT_ERRORS);
		ret = SP_WSAENOBUFS;
		goto out_accepter;
	}
	if (verdict != SP_CF_ACCEPT) {
		vb_reject_request(req);
		sp_stats_count(SP_PC_ACCEPT_REJECTED);
		ret = SP_WSAECONNREFUSED;
		goto out_accepter;
	}
	child = sock_alloc(so->catalog_id);
	ret = child ? conn_resources(child) : ENOMEM;
	if (ret) {
		/* The connecting side hears of it at once, not at its timeout. */
		vb_reject_request(req);
		ret = sp_wsa_error(ret);
		goto err_child;
	}
	memcpy(&child->local, &so->local, sizeof(child->local));
	memcpy(&child->peer, &peer, sizeof(peer));
	sp_hello_fill(&hello, &so->local);
	param.timeout_ms = sp_prov.cfg.connect_timeout_ms;
	ret = vb_accept_request(req, child->qp, &param);
	if (ret) {
		ret = SP_WSAECONNABORTED;
		goto err_child;
	}
	child->state = SP_SOCK_CONNECTED;
	ret = sock_publish(child);
	if (ret)
		goto err_child;
	if (addr) {
		socklen_t n = sockaddr_len(&child->peer);
		if ((int)n > *addrlen)
			n = (socklen_t)*addrlen;
		memcpy(addr, &child->peer, n);
		*addrlen = (int)sockaddr_len(&child->peer);
	}
	accept_leave(so);
	sp_sock_put(so);
	sp_stats_count(SP_PC_ACCEPTS);
	return child->handle;

err_child:
	sp_stats_count(SP_PC_ACCEPT_ERRORS);
	if (child)
		sock_discard(child);
out_accepter:
	accept_leave(so);
out:
	sp_sock_put(so);
	*err = ret;
	return SP_INVALID_SOCKET;
}

static void connect_done(struct sp_sock *so, int ret)
{
	pthread_mutex_lock(&so->lock);
	if (so->state == SP_SOCK_CONNECTING) {
		so->state = ret ? SP_SOCK_FAILED : SP_SOCK_CONNECTED;
		so->error = ret ? sp_wsa_connect_error(ret) : 0;
		struct sockaddr_storage stated;
		if (!ret && sp_hello_take(so->qp->peer_private_data, so->qp->peer_private_data_len,
					  &stated)) {
			so->state = SP_SOCK_FAILED;
			so->error = SP_WSAETIMEDOUT; /* not a sanprov peer: let TCP have it */
		}
		sp_stats_count(so->error ? SP_PC_CONNECT_ERRORS : SP_PC_CONNECTS_OK);
		sp_sock_signal(so, SP_FD_CONNECT, SP_FD_CONNECT_BIT, so->error);
		if (so->state == SP_SOCK_CONNECTED)
			sp_sock_signal(so, SP_FD_WRITE, SP_FD_WRITE_BIT, 0);
	}
	pthread_mutex_unlock(&so->lock);
}

static int do_connect(struct sp_sock *so)
{
	struct sp_hello hello;
	struct vb_conn_param param = { .private_data = &hello,
				       .private_data_len = sizeof(hello),
				       .timeout_ms = sp_prov.cfg.connect_timeout_ms };

	sp_hello_fill(&hello, &so->local);
	return vb_connect(so->qp, (struct sockaddr *)&so->peer, sockaddr_len(&so->peer), &param);
}

static void *connect_main(void *arg)
{
	struct sp_sock *so = arg;

	connect_done(so, do_connect(so));
	return NULL;
}

int sp_connect(sp_socket s, const struct sockaddr *name, int namelen, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	bool nonblocking;
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	ret = check_sockaddr(name, namelen);
	pthread_mutex_lock(&so->lock);
	if (!ret) {
		switch (so->state) {
		case SP_SOCK_NEW:
		case SP_SOCK_BOUND:
			break;
		case SP_SOCK_CONNECTING:
			ret = SP_WSAEALREADY;
			break;
		case SP_SOCK_CONNECTED:
			ret = SP_WSAEISCONN;
			break;
		default:
			ret = SP_WSAEINVAL;
		}
	}
	if (!ret && name->sa_family != so->local.ss_family)
		ret = SP_WSAEAFNOSUPPORT;
	if (!ret)
		sp_stats_count(SP_PC_CONNECTS);
	if (!ret && (ret = conn_resources(so))) {
		ret = sp_wsa_error(ret);
		sp_stats_count(SP_PC_CONNECT_ERRORS);
	}
	if (ret) {
		pthread_mutex_unlock(&so->lock);
		sp_sock_put(so);
		return sp_fail(err, ret);
	}
	memcpy(&so->peer, name,
	       name->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
	so->state = SP_SOCK_CONNECTING;
	nonblocking = so->event_mask != 0;
	if (nonblocking) {
		so->worker_stop = false;
		if (pthread_create(&so->worker, NULL, connect_main, so)) {
			sp_stats_count(SP_PC_CONNECT_ERRORS);
			so->state = SP_SOCK_FAILED;
			pthread_mutex_unlock(&so->lock);
			sp_sock_put(so);
			return sp_fail(err, SP_WSAENOBUFS);
		}
		so->worker_running = true;
	}
	so->connect_busy = !nonblocking;
	pthread_mutex_unlock(&so->lock);
	if (nonblocking) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSAEWOULDBLOCK);
	}
	connect_done(so, do_connect(so));
	pthread_mutex_lock(&so->lock);
	ret = so->state == SP_SOCK_CONNECTED ? 0 : so->error ? so->error : SP_WSAEINTR;
	so->connect_busy = false;
	pthread_cond_broadcast(&so->cond);
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

int sp_event_select(sp_socket s, sp_event event, int32_t events, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);

	if (!so)
		return SP_SOCKET_ERROR;
	if (events & ~(int32_t)((1u << SP_FD_MAX_EVENTS) - 1) || (events && !event)) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSAEINVAL);
	}
	pthread_mutex_lock(&so->lock);
	so->event = event;
	so->event_mask = events;
	/* Events that happened before the selection are not lost. */
	if (so->events & events)
		sp_os_event_set(event);
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return 0;
}

int sp_enum_network_events(sp_socket s, sp_event event, struct sp_network_events *ne, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);

	if (!so)
		return SP_SOCKET_ERROR;
	if (!ne) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSAEFAULT);
	}
	pthread_mutex_lock(&so->lock);
	memset(ne, 0, sizeof(*ne));
	ne->network_events = so->events & so->event_mask;
	for (int i = 0; i < SP_FD_MAX_EVENTS; i++)
		if (ne->network_events & (1 << i))
			ne->error_code[i] = so->event_errors[i];
	so->events &= ~ne->network_events;
	if (event)
		sp_os_event_reset(event);
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return 0;
}

int sp_get_sock_name(sp_socket s, struct sockaddr *name, int *namelen, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	int ret = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	pthread_mutex_lock(&so->lock);
	if (!name || !namelen || *namelen < (int)sockaddr_len(&so->local))
		ret = SP_WSAEFAULT;
	else if (so->state == SP_SOCK_NEW)
		ret = SP_WSAEINVAL;
	else {
		memcpy(name, &so->local, sockaddr_len(&so->local));
		*namelen = (int)sockaddr_len(&so->local);
	}
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

int sp_get_sock_opt(sp_socket s, int level, int optname, char *optval, int *optlen, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	int32_t v;
	int ret = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	if (!optval || !optlen || *optlen < (int)sizeof(v)) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSAEFAULT);
	}
	pthread_mutex_lock(&so->lock);
	if (level != SP_SOL_SOCKET)
		ret = SP_WSAENOPROTOOPT;
	else if (optname == SP_SO_RDMA_THRESHOLD_SIZE)
		v = (int32_t)so->rdma_threshold;
	else if (optname == SP_SO_MAX_RDMA_SIZE)
		v = (int32_t)so->max_rdma;
	else if (optname == SP_SO_TYPE)
		v = SOCK_STREAM;
	else if (optname == SP_SO_ERROR) {
		v = so->state == SP_SOCK_FAILED ? so->error : 0;
	} else
		ret = SP_WSAENOPROTOOPT;
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	if (ret)
		return sp_fail(err, ret);
	memcpy(optval, &v, sizeof(v));
	*optlen = (int)sizeof(v);
	return 0;
}

int sp_set_sock_opt(sp_socket s, int level, int optname, const char *optval, int optlen, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	uint32_t v;
	int ret = 0;

	if (!so)
		return SP_SOCKET_ERROR;
	if (!optval || optlen < (int)sizeof(v)) {
		sp_sock_put(so);
		return sp_fail(err, SP_WSAEFAULT);
	}
	memcpy(&v, optval, sizeof(v));
	pthread_mutex_lock(&so->lock);
	if (level != SP_SOL_SOCKET)
		ret = SP_WSAENOPROTOOPT;
	else if (optname == SP_SO_RDMA_THRESHOLD_SIZE)
		so->rdma_threshold = v;
	else if (optname == SP_SO_MAX_RDMA_SIZE) {
		/* At most what the provider can move in one RDMA operation. */
		if (!v || v > sp_prov.cfg.max_rdma)
			ret = SP_WSAEINVAL;
		else
			so->max_rdma = v;
	} else
		ret = SP_WSAENOPROTOOPT;
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}

int sp_sock_close(struct sp_sock *so)
{
	struct vb_conn_req **deferred;
	struct vb_listener *listener;
	uint32_t n_deferred;
	bool was_listening;
	int err;

	/* Only one closer: the first takes the socket out of the table. */
	pthread_mutex_lock(&so->lock);
	if (so->closing) {
		pthread_mutex_unlock(&so->lock);
		return SP_WSAENOTSOCK;
	}
	so->closing = true;
	sp_stats_count(SP_PC_SOCKETS_CLOSED);
	was_listening = so->state == SP_SOCK_LISTENING;
	so->state = SP_SOCK_CLOSED;
	so->worker_stop = true;
	pthread_cond_broadcast(&so->cond);
	pthread_mutex_unlock(&so->lock);
	/* Its watcher and blocked accepts wake now, not at their next tick. */
	if (was_listening)
		sp_os_wake(so->closed);
	/* From now on the switch's calls on it find no socket. */
	sp_htab_remove(&sp_prov.sockets, so->ctx);
	pthread_mutex_lock(&so->lock);
	/*
	 * A blocking connect in another thread uses the QP: it ends within its
	 * timeout.  Blocked accepts see the state within a listener tick.
	 */
	while (so->connect_busy || so->accepters > own_accepts(so))
		pthread_cond_wait(&so->cond, &so->lock);
	pthread_mutex_unlock(&so->lock);
	/* A connect in progress ends within the connect timeout. */
	if (so->worker_running)
		pthread_join(so->worker, NULL);
	so->worker_running = false;
	pthread_mutex_lock(&so->lock);
	listener = so->listener;
	so->listener = NULL;
	deferred = so->deferred;
	n_deferred = so->n_deferred;
	so->deferred = NULL;
	so->n_deferred = 0;
	pthread_mutex_unlock(&so->lock);
	for (uint32_t i = 0; i < n_deferred; i++)
		vb_reject_request(deferred[i]);
	free(deferred);
	if (listener)
		teardown_failed("destroying a listener", vb_destroy_listener(listener));
	if (was_listening)
		sp_os_wake_close(so->closed);
	conn_release(so);
	sp_prov.up.close_socket_handle(so->handle, &err);
	sp_sock_put(so); /* the table's reference */
	return 0;
}

int sp_close_socket(sp_socket s, int *err)
{
	struct sp_sock *so = sp_sock_get(s, err);
	int ret;

	if (!so)
		return SP_SOCKET_ERROR;
	ret = sp_sock_close(so);
	sp_sock_put(so);
	return ret ? sp_fail(err, ret) : 0;
}
