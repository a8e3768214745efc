/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic's trust boundary (docs/softnic-security.md): a process of another
 * user, and a peer of the same user that speaks the protocol and then does
 * with the shared segments what a hostile or broken peer would.  The peer
 * here is hand-written (the connection message as softnic sends it, and
 * segments of its own) so that nothing of softnic's own checks helps it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softnic/snic.h"
#include "tpair.h"

#define NOBODY 65534

/* The connection message, as snic_conn.c lays it out. */
struct wire_msg {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	int32_t status;
	uint32_t qpn, pd, max_mr, rq_size, rq_max_sge, cq_size;
	uint8_t priv_len;
	uint8_t priv[VB_MAX_PRIVATE_DATA];
	uint8_t reserved[7];
};
_Static_assert(sizeof(struct wire_msg) == 96, "the connection message is 96 bytes");

enum { MSG_REQ = 1, MSG_REP = 2, MSG_REJ = 3 };

/* A peer that speaks softnic's protocol by hand. */
struct evil {
	int sock;
	int mine[5];   /* what we send: dev, qp, cq segments, cq event, doorbell */
	int theirs[5]; /* what the server sent */
	int ntheirs;
	struct wire_msg answer;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static socklen_t wire_name(struct sockaddr_un *un, uint16_t port)
{
	int n;

	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "sanprov-softnic:%u", port);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int wire_send(int sock, const struct wire_msg *m, const int *fds, int nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 5)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)m, sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)sizeof(*m) ? 0 : -1;
}

/* One message and its descriptors: bytes received, 0 closed, -1 timeout or error. */
static int wire_recv(int sock, struct wire_msg *m, int *fds, int *nfds, int timeout_ms)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { m, sizeof(*m) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
	};
	struct pollfd p = { .fd = sock, .events = POLLIN };
	ssize_t n;

	*nfds = 0;
	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (size_t)i, sizeof(fd));
				if (*nfds < 5)
					fds[(*nfds)++] = fd;
				else
					close(fd);
			}
		}
	return (int)n;
}

/* A segment as a peer could make it: sealed as softnic's are, or a plain memfd. */
static int evil_segment(size_t len, bool sealed, void **addr)
{
	struct snic_shm shm;

	if (sealed) {
		if (snic_os_shm_create(&shm, "evil", len, false))
			return -1;
		*addr = shm.addr;
		return shm.fd;
	}
	int fd = memfd_create("evil", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)len))
		return -1;
	*addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	return *addr == MAP_FAILED ? -1 : fd;
}

/* The MR table's magic the hand-written peer shows: another version of softnic's, if set so. */
static uint64_t evil_dev_magic = SNIC_DEV_MAGIC;

/*
 * Connect to port and send a well-formed request.  0 when the server
 * answered (evil->answer, evil->theirs), -1 when it could not be sent or
 * nothing came back.  Usable in a child without Criterion.
 */
static int evil_connect(struct evil *ev, uint16_t port, bool sealed, int timeout_ms)
{
	struct sockaddr_un un;
	socklen_t len = wire_name(&un, port);
	struct wire_msg m = { .magic = 0x534e4343u,
			      .version = 3,
			      .type = MSG_REQ,
			      .qpn = 7,
			      .pd = 1,
			      .max_mr = 16,
			      .rq_size = 4,
			      .rq_max_sge = 1,
			      .cq_size = 8 };
	struct snic_dev_seg *dev;
	struct snic_qp_seg *qp;
	struct snic_cq_seg *cq;
	void *p;

	memset(ev, 0, sizeof(*ev));
	ev->mine[0] = evil_segment(snic_dev_seg_size(16), sealed, &p);
	dev = p;
	ev->mine[1] = evil_segment(snic_qp_seg_size(4, 1), sealed, &p);
	qp = p;
	ev->mine[2] = evil_segment(snic_cq_seg_size(8), sealed, &p);
	cq = p;
	if (ev->mine[0] < 0 || ev->mine[1] < 0 || ev->mine[2] < 0)
		return -1;
	dev->magic = evil_dev_magic;
	dev->max_mr = 16;
	qp->magic = SNIC_QP_MAGIC;
	qp->qpn = 7;
	qp->pd = 1;
	qp->rq_size = 4;
	qp->rq_max_sge = 1;
	atomic_store(&qp->state, VB_QPS_RTS);
	snic_os_shared_lock_init(&qp->rq_lock);
	cq->magic = SNIC_CQ_MAGIC;
	cq->size = 8;
	snic_os_shared_lock_init(&cq->prod_lock);
	if (snic_os_event_create(&ev->mine[3]) || snic_os_event_create(&ev->mine[4]))
		return -1;
	ev->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (ev->sock < 0 || connect(ev->sock, (struct sockaddr *)&un, len))
		return -1;
	/* A server that refuses may close before the request is out: its answer is still there. */
	(void)wire_send(ev->sock, &m, ev->mine, 5);
	return wire_recv(ev->sock, &ev->answer, ev->theirs, &ev->ntheirs, timeout_ms) > 0 ? 0 : -1;
}

static void evil_close(struct evil *ev)
{
	for (int i = 0; i < 5; i++)
		close(ev->mine[i]);
	for (int i = 0; i < ev->ntheirs; i++)
		close(ev->theirs[i]);
	close(ev->sock);
}

/* The server: a device, a QP waiting in accept, its listener's port. */
struct server {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	struct vb_listener *l;
	uint16_t port;
	int accepted;
	int timeout_ms;
	pthread_t t;
};

static void server_open(struct server *s)
{
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 } };

	if (!tdev_is_softnic())
		cr_skip_test("softnic's trust boundary; %s has its own", tdev_backend());
	s->dev = tdev_open();
	cr_assert_not_null(s->dev);
	s->pd = vb_alloc_pd(s->dev);
	s->cq = vb_create_cq(s->dev, 64);
	cr_assert(s->pd && s->cq);
	attr.send_cq = attr.recv_cq = s->cq;
	s->qp = vb_create_qp(s->pd, &attr);
	cr_assert_not_null(s->qp);
	s->l = tlisten(s->dev);
	s->port = ntohs(((struct sockaddr_in *)&s->l->addr)->sin_port);
	s->accepted = -1;
}

static void *server_accept_main(void *p)
{
	struct server *s = p;
	struct vb_conn_param param = { .timeout_ms = s->timeout_ms };

	s->accepted = vb_accept(s->l, s->qp, &param);
	return NULL;
}

static void server_accept_async(struct server *s, int timeout_ms)
{
	s->timeout_ms = timeout_ms;
	cr_assert_eq(pthread_create(&s->t, NULL, server_accept_main, s), 0);
}

static int server_accept_wait(struct server *s)
{
	pthread_join(s->t, NULL);
	return s->accepted;
}

static void server_close(struct server *s)
{
	cr_assert_eq(vb_destroy_listener(s->l), 0);
	cr_assert_eq(vb_destroy_qp(s->qp), 0);
	cr_assert_eq(vb_destroy_cq(s->cq), 0);
	cr_assert_eq(vb_dealloc_pd(s->pd), 0);
	cr_assert_eq(vb_close_device(s->dev), 0);
}

/* A hand-made peer with sealed segments, connected to s and accepted there. */
static void evil_accepted(struct server *s, struct evil *ev)
{
	server_accept_async(s, 5000);
	cr_assert_eq(evil_connect(ev, s->port, true, 5000), 0);
	cr_assert_eq(server_accept_wait(s), 0);
}

/* In a child: become an unprivileged user, or exit 77 (the parent skips). */
static void become_nobody(void)
{
	if (setresgid(NOBODY, NOBODY, NOBODY) || setresuid(NOBODY, NOBODY, NOBODY))
		_exit(77);
}

static int child_status(pid_t pid)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st), "child status %#x", st);
	if (WEXITSTATUS(st) == 77)
		cr_skip_test("cannot switch to uid %d here (not root?)", NOBODY);
	return WEXITSTATUS(st);
}

/*
 * A process of another user connects.  Refused and given nothing; with
 * SANPROV_SOFTNIC_ANY_USER=1, accepted and handed the server's segments.
 */
static void other_user_client(bool any_user)
{
	struct server s;
	enum vb_qp_state st;
	pid_t pid;

	if (any_user)
		setenv("SANPROV_SOFTNIC_ANY_USER", "1", 1);
	server_open(&s);
	server_accept_async(&s, any_user ? 5000 : 2000);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		struct evil ev;

		become_nobody();
		/*
		 * A refusal, or a reset when the server closed with our request
		 * unread (the kernel then reports the reset first).
		 */
		int rc = evil_connect(&ev, s.port, true, 5000);
		if (any_user)
			_exit(!rc && ev.answer.type == MSG_REP && ev.ntheirs == 5 ? 0 : 4);
		if (ev.ntheirs)
			_exit(2); /* the server's tables */
		if (!rc && (ev.answer.type != MSG_REJ || ev.answer.status != EACCES))
			_exit(3);
		_exit(0);
	}
	int code = child_status(pid);
	if (any_user) {
		cr_assert_eq(code, 0, "the other user's process was not let in (%d)", code);
		cr_assert_eq(server_accept_wait(&s), 0);
		unsetenv("SANPROV_SOFTNIC_ANY_USER");
		server_close(&s);
		return;
	}
	cr_assert_eq(code, 0, "the other user's process got more than a refusal (%d)", code);
	/* The refusal did not end the accept: it goes on waiting for a real peer. */
	cr_assert_eq(server_accept_wait(&s), ETIMEDOUT);
	cr_assert_eq(vb_query_qp(s.qp, &st), 0);
	cr_assert_eq(st, VB_QPS_INIT);
	server_close(&s);
}

Test(trust, other_user_is_refused_by_the_server, .timeout = 30)
{
	other_user_client(false);
}

Test(trust, any_user_knob_lets_other_users_reach_the_server, .timeout = 30)
{
	other_user_client(true);
}

/*
 * A process of another user listens on the port: the client refuses it
 * before its request (and its tables) leave.  With
 * SANPROV_SOFTNIC_ANY_USER=1 the request goes out.
 */
static void other_user_server(bool any_user)
{
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
	struct vb_conn_param param = { .timeout_ms = 1000 };
	struct sockaddr_in sin;
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	int ready[2], nfds;
	uint16_t port;
	pid_t pid;

	if (!tdev_is_softnic())
		cr_skip_test("softnic's trust boundary; %s has its own", tdev_backend());
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		struct sockaddr_un un;
		struct wire_msg m;
		int fds[5], l, c;

		become_nobody();
		l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		for (port = 40000; port < 41000; port++)
			if (!bind(l, (struct sockaddr *)&un, wire_name(&un, port)))
				break;
		if (listen(l, 4) || write(ready[1], &port, sizeof(port)) != sizeof(port))
			_exit(1);
		struct pollfd p = { .fd = l, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1 || (c = accept(l, NULL, NULL)) < 0)
			_exit(0); /* nobody came */
		wire_recv(c, &m, fds, &nfds, 2000);
		_exit(10 + nfds); /* what the client handed over */
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &port, sizeof(port)), (ssize_t)sizeof(port));
	close(ready[0]);

	if (any_user)
		setenv("SANPROV_SOFTNIC_ANY_USER", "1", 1);
	dev = tdev_open();
	cr_assert_not_null(dev);
	pd = vb_alloc_pd(dev);
	cq = vb_create_cq(dev, 8);
	cr_assert(pd && cq);
	attr.send_cq = attr.recv_cq = cq;
	qp = vb_create_qp(pd, &attr);
	cr_assert_not_null(qp);
	tdev_sockaddr(&sin, port);
	int ret = vb_connect(qp, (struct sockaddr *)&sin, sizeof(sin), &param);
	int handed = child_status(pid);
	if (any_user) {
		cr_assert_eq(handed, 15, "the request carries 5 descriptors (%d)", handed);
		cr_assert_neq(ret, EACCES);
	} else {
		cr_assert_eq(ret, EACCES, "connect: %s", strerror(ret));
		cr_assert(handed == 0 || handed == 10, "the other user got %d descriptors",
			  handed - 10);
	}
	cr_assert_eq(vb_destroy_qp(qp), 0);
	cr_assert_eq(vb_destroy_cq(cq), 0);
	cr_assert_eq(vb_dealloc_pd(pd), 0);
	cr_assert_eq(vb_close_device(dev), 0);
}

Test(trust, other_user_server_is_refused_by_the_client, .timeout = 30)
{
	other_user_server(false);
}

Test(trust, any_user_knob_lets_other_users_in, .timeout = 30)
{
	other_user_server(true);
}

/* Segments that their sender could still resize are refused. */
Test(trust, unsealed_segments_are_refused, .timeout = 30)
{
	struct server s;
	struct evil ev;

	server_open(&s);
	server_accept_async(&s, 5000);
	cr_assert_eq(evil_connect(&ev, s.port, false, 5000), 0);
	cr_assert_eq(ev.answer.type, MSG_REJ);
	cr_assert_eq(ev.ntheirs, 0);
	cr_assert_eq(server_accept_wait(&s), EPROTO);
	evil_close(&ev);
	server_close(&s);
}

/*
 * A peer of the previous device version (2: no window entries, so it
 * would take a window's key on any QP) is refused at connect, with
 * nothing handed over, and the accept goes on waiting.
 */
Test(trust, an_older_peer_is_refused, .timeout = 30)
{
	struct server s;
	struct evil ev;

	evil_dev_magic = 0x3256454443494e53ull; /* "SNICDEV2" */
	server_open(&s);
	server_accept_async(&s, 2000);
	cr_assert_eq(evil_connect(&ev, s.port, true, 5000), 0);
	cr_assert_eq(ev.answer.type, MSG_REJ);
	cr_assert_eq(ev.answer.status, EPROTO);
	cr_assert_eq(ev.ntheirs, 0);
	cr_assert_eq(server_accept_wait(&s), EPROTO);
	evil_close(&ev);
	server_close(&s);
}

/*
 * What the server hands over cannot be resized (SIGBUS in the server), and
 * its MR table cannot be written, however the descriptor is opened again.
 */
Test(trust, segments_are_sealed_and_the_mr_table_read_only, .timeout = 30)
{
	struct server s;
	struct evil ev;
	char path[64];
	uint64_t rbuf;
	void *p;
	int fd;

	server_open(&s);
	struct vb_mr *mr = vb_reg_mr(s.pd, &rbuf, sizeof(rbuf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(mr);
	cr_assert_eq(post_recv1(s.qp, 1, &rbuf, sizeof(rbuf), mr->lkey), 0);
	evil_accepted(&s, &ev);
	cr_assert_eq(ev.answer.type, MSG_REP);
	cr_assert_eq(ev.ntheirs, 5);

	for (int i = 0; i < 3; i++) {
		cr_assert_neq(ftruncate(ev.theirs[i], 0), 0, "segment %d could be truncated", i);
		cr_assert_neq(ftruncate(ev.theirs[i], 1 << 30), 0, "segment %d could grow", i);
	}
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ev.theirs[0], 0);
	cr_assert_eq(p, MAP_FAILED, "the MR table could be mapped writable");
	cr_assert_eq(pwrite(ev.theirs[0], "x", 1, 0), -1, "the MR table could be written");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", ev.theirs[0]);
	fd = open(path, O_RDWR);
	if (fd >= 0) {
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_assert_eq(p, MAP_FAILED, "the MR table, opened again, could be mapped writable");
		close(fd);
	}
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ev.theirs[0], 0);
	cr_assert_neq(p, MAP_FAILED, "reading the MR table is what a peer does");
	cr_assert_eq(mprotect(p, 4096, PROT_READ | PROT_WRITE), -1);
	munmap(p, 4096);

	/* The server's CQ is still whole: the disconnect's flush lands in it. */
	evil_close(&ev);
	struct vb_wc wc = tpair_wait(s.cq);
	cr_assert_eq(wc.status, VB_WC_WR_FLUSH_ERR);
	cr_assert_eq(wc.wr_id, 1);
	cr_assert_eq(vb_dereg_mr(mr), 0);
	server_close(&s);
}

/*
 * The peer moves the head of the server's receive queue past its tail
 * (the index wraps): the flush at disconnect stays bounded by the ring.
 */
Test(trust, wrapped_receive_index_is_bounded, .timeout = 20)
{
	struct server s;
	struct evil ev;
	struct vb_wc wc[64];
	uint64_t rbuf[2];
	int n, total = 0;

	server_open(&s);
	struct vb_mr *mr = vb_reg_mr(s.pd, rbuf, sizeof(rbuf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(mr);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(post_recv1(s.qp, (uint64_t)i, &rbuf[i], 8, mr->lkey), 0);
	evil_accepted(&s, &ev);
	struct snic_qp_seg *seg =
	    mmap(NULL, snic_qp_seg_size(4, 1), PROT_READ | PROT_WRITE, MAP_SHARED, ev.theirs[1], 0);
	cr_assert_neq(seg, MAP_FAILED);
	atomic_store(&seg->rq_head, atomic_load(&seg->rq_tail) + 1);
	uint64_t start = now_ms();
	evil_close(&ev);
	/* The flush takes the QP's lock: once destroy has it, the flush is over. */
	cr_assert_eq(tpair_wait_qp_state(s.qp, VB_QPS_ERR, 5000), VB_QPS_ERR);
	do {
		cr_assert_eq(vb_poll_cq(s.cq, 64, wc, &n), 0);
		total += n;
	} while (!total && now_ms() - start < 5000);
	cr_assert_eq(vb_destroy_qp(s.qp), 0);
	cr_assert_lt(now_ms() - start, 3000, "the flush took %llu ms",
		     (unsigned long long)(now_ms() - start));
	cr_assert_eq(vb_poll_cq(s.cq, 64, wc + total, &n), 0);
	total += n;
	cr_assert_leq(total, 4, "%d flushes for a ring of 4", total);
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
					.send_cq = s.cq,
					.recv_cq = s.cq };
	s.qp = vb_create_qp(s.pd, &attr); /* for server_close */
	munmap(seg, snic_qp_seg_size(4, 1));
	cr_assert_eq(vb_dereg_mr(mr), 0);
	server_close(&s);
}

/* Clients that connect and say nothing hold back nobody. */
Test(trust, silent_clients_do_not_hold_back_others, .timeout = 30)
{
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
	struct vb_conn_param param = { .timeout_ms = 8000 };
	struct sockaddr_un un;
	struct server s;
	int silent[3], acc;

	server_open(&s);
	for (int i = 0; i < 3; i++) {
		silent[i] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		cr_assert_eq(connect(silent[i], (struct sockaddr *)&un, wire_name(&un, s.port)), 0);
	}
	attr.send_cq = attr.recv_cq = s.cq;
	struct vb_qp *cqp = vb_create_qp(s.pd, &attr);
	cr_assert_not_null(cqp);
	uint64_t start = now_ms();
	cr_assert_eq(tconnect(s.l, s.qp, &param, cqp, &param, &acc), 0);
	cr_assert_eq(acc, 0);
	cr_assert_lt(now_ms() - start, 2000, "the honest client waited %llu ms",
		     (unsigned long long)(now_ms() - start));
	for (int i = 0; i < 3; i++)
		close(silent[i]);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	server_close(&s);
}

/*
 * A peer cannot take a CQ's lock at all (it maps the CQ read-only), and one
 * that keeps the lock of a receive queue it consumes holds back no one that
 * completes into the same CQ, and no connection on other CQs.
 */
Test(trust, a_kept_lock_stalls_no_one, .timeout = 30)
{
	struct server s;
	struct evil ev;
	struct tpair other;
	uint64_t buf = 0;

	server_open(&s);
	evil_accepted(&s, &ev);
	void *cqw =
	    mmap(NULL, snic_cq_seg_size(64), PROT_READ | PROT_WRITE, MAP_SHARED, ev.theirs[2], 0);
	cr_assert_eq(cqw, MAP_FAILED, "a peer could map the CQ writable");
	struct snic_qp_seg *qs =
	    mmap(NULL, snic_qp_seg_size(4, 1), PROT_READ | PROT_WRITE, MAP_SHARED, ev.theirs[1], 0);
	cr_assert_neq(qs, MAP_FAILED);
	cr_assert_eq(pthread_mutex_lock(&qs->rq_lock), 0);

	/* An honest pair whose receiver completes into the kept CQ. */
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
					.send_cq = s.cq,
					.recv_cq = s.cq };
	struct vb_cq *ccq = vb_create_cq(s.dev, 8);
	cr_assert_not_null(ccq);
	struct vb_qp *sqp = vb_create_qp(s.pd, &attr);
	attr.send_cq = attr.recv_cq = ccq;
	struct vb_qp *cqp = vb_create_qp(s.pd, &attr);
	struct vb_listener *l = tlisten(s.dev);
	int acc;
	cr_assert(sqp && cqp);
	cr_assert_eq(tconnect(l, sqp, NULL, cqp, NULL, &acc), 0);
	cr_assert_eq(acc, 0);
	struct vb_mr *mr = vb_reg_mr(s.pd, &buf, sizeof(buf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(mr);
	cr_assert_eq(post_recv1(sqp, 1, &buf, 8, mr->lkey), 0);
	uint64_t start = now_ms();
	cr_assert_eq(post_rdma(cqp, VB_WR_SEND, 2, &buf, 8, mr->lkey, 0, 0, VB_SEND_SIGNALED), 0);
	cr_assert_lt(now_ms() - start, 3 * SNIC_SHARED_LOCK_TIMEOUT_MS, "the send hung %llu ms",
		     (unsigned long long)(now_ms() - start));

	/* A pair on CQs of its own still moves data. */
	tpair_init(&other, s.dev, NULL);
	uint64_t x = 42, y = 0;
	struct vb_mr *xm = vb_reg_mr(other.a.pd, &x, 8, VB_ACCESS_LOCAL_WRITE);
	struct vb_mr *ym = vb_reg_mr(other.b.pd, &y, 8, VB_ACCESS_LOCAL_WRITE);
	cr_assert(xm && ym);
	cr_assert_eq(post_recv1(other.b.qp, 3, &y, 8, ym->lkey), 0);
	cr_assert_eq(post_rdma(other.a.qp, VB_WR_SEND, 4, &x, 8, xm->lkey, 0, 0, VB_SEND_SIGNALED),
		     0);
	cr_assert_eq(tpair_wait(other.b.rcq).status, VB_WC_SUCCESS);
	cr_assert_eq(y, 42);
	cr_assert_eq(tpair_wait(other.a.scq).status, VB_WC_SUCCESS);
	cr_assert_eq(vb_dereg_mr(xm), 0);
	cr_assert_eq(vb_dereg_mr(ym), 0);
	tpair_fini(&other);

	pthread_mutex_unlock(&qs->rq_lock);
	munmap(qs, snic_qp_seg_size(4, 1));
	evil_close(&ev);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_qp(sqp), 0);
	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_dereg_mr(mr), 0);
	cr_assert_eq(vb_destroy_cq(ccq), 0);
	server_close(&s);
}

enum forgery { FORGE_CQE, FORGE_INDEX, FORGE_LENGTH, FORGE_STATUS };

/*
 * The peer lies about the receives it consumed: a completion written into
 * the server's CQ with a wr_id never posted, or a report of a receive out
 * of order, longer than the receive holds, or with a status no responder
 * gives.  No forged completion reaches the CQ; the QP goes to the error
 * state and flushes its receives, in order, with the wr_ids posted; a
 * connection completing into the same CQ goes on.
 */
static void forge(enum forgery kind)
{
	struct server s;
	struct evil ev;
	struct vb_wc wc[16];
	uint64_t rbuf[2], buf = 7, got[8];
	int n, total = 0, acc;

	server_open(&s);
	struct vb_mr *mr = vb_reg_mr(s.pd, rbuf, sizeof(rbuf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(mr);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(post_recv1(s.qp, (uint64_t)i + 1, &rbuf[i], 8, mr->lkey), 0);
	evil_accepted(&s, &ev);

	/* An honest pair whose receiver completes into the same CQ. */
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
					.send_cq = s.cq,
					.recv_cq = s.cq };
	struct vb_cq *ccq = vb_create_cq(s.dev, 8);
	cr_assert_not_null(ccq);
	struct vb_qp *sqp = vb_create_qp(s.pd, &attr);
	attr.send_cq = attr.recv_cq = ccq;
	struct vb_qp *cqp = vb_create_qp(s.pd, &attr);
	struct vb_listener *l = tlisten(s.dev);
	cr_assert(sqp && cqp);
	cr_assert_eq(tconnect(l, sqp, NULL, cqp, NULL, &acc), 0);
	cr_assert_eq(acc, 0);
	struct vb_mr *bm = vb_reg_mr(s.pd, &buf, sizeof(buf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(bm);

	if (kind == FORGE_CQE) {
		struct snic_cq_seg *cq = mmap(NULL, snic_cq_seg_size(64), PROT_READ | PROT_WRITE,
					      MAP_SHARED, ev.theirs[2], 0);
		if (cq != MAP_FAILED) {
			/* What a peer could do when it completed into the CQ itself. */
			uint32_t t = atomic_load(&cq->tail);
			cq->ring[t & (cq->size - 1)] = (struct snic_cqe){ .wr_id = 0xbad,
									  .opcode = VB_WC_RECV,
									  .qp_num = s.qp->qp_num };
			atomic_store(&cq->tail, t + 1);
			atomic_store(&cq->overflow, 1);
			munmap(cq, snic_cq_seg_size(64));
		}
		/* A lie the QP cannot see: the peer then goes away. */
		evil_close(&ev);
		ev.sock = -1;
	} else {
		struct snic_qp_seg *qs = mmap(NULL, snic_qp_seg_size(4, 1), PROT_READ | PROT_WRITE,
					      MAP_SHARED, ev.theirs[1], 0);
		cr_assert_neq(qs, MAP_FAILED);
		struct snic_inb *r = snic_inb_at(qs->rq, 4, snic_rwqe_size(1), 0);
		*r = (struct snic_inb){ .idx = kind == FORGE_INDEX ? 1 : 0,
					.status = kind == FORGE_STATUS ? 0x77 : VB_WC_SUCCESS,
					.opcode = VB_WC_RECV,
					.byte_len = kind == FORGE_LENGTH ? 4096 : 8 };
		atomic_store(&qs->rq_head, 1);
		atomic_store(&qs->inb_tail, 1);
		/* Rung as a peer must, unless the owner polls the QP. */
		if (!atomic_load(&qs->polled) && !atomic_exchange(&qs->rung, 1))
			cr_assert_eq(send(ev.sock, "r", 1, 0), 1);
		munmap(qs, snic_qp_seg_size(4, 1));
		/* Polling takes the report in; the QP fails, with no completion of it. */
		cr_assert_eq(vb_poll_cq(s.cq, 16, wc, &n), 0);
		for (int i = 0; i < n; i++)
			got[total++] = wc[i].wr_id;
		cr_assert_eq(tpair_wait_qp_state(s.qp, VB_QPS_ERR, 5000), VB_QPS_ERR,
			     "a wrong report left the QP up");
	}

	/* The honest connection on the same CQ still completes. */
	cr_assert_eq(post_recv1(sqp, 3, &buf, 8, bm->lkey), 0);
	cr_assert_eq(post_rdma(cqp, VB_WR_SEND, 4, &buf, 8, bm->lkey, 0, 0, VB_SEND_SIGNALED), 0);
	cr_assert_eq(tpair_wait(ccq).status, VB_WC_SUCCESS);
	cr_assert_eq(tpair_wait_qp_state(s.qp, VB_QPS_ERR, 5000), VB_QPS_ERR);
	uint64_t start = now_ms();
	bool honest = false;
	while (now_ms() - start < 2000 && (total < 2 || !honest)) {
		int ret = vb_poll_cq(s.cq, 16, wc, &n);

		cr_assert_eq(ret, 0, "the CQ failed (%d)", ret);
		for (int i = 0; i < n; i++) {
			if (wc[i].qp_num == sqp->qp_num) {
				cr_assert_eq(wc[i].wr_id, 3);
				cr_assert_eq(wc[i].status, VB_WC_SUCCESS);
				honest = true;
				continue;
			}
			cr_assert_eq(wc[i].qp_num, s.qp->qp_num);
			cr_assert_lt(total, 8);
			got[total++] = wc[i].wr_id;
			cr_assert_eq(wc[i].status, VB_WC_WR_FLUSH_ERR, "wr_id %#llx completed %d",
				     (unsigned long long)wc[i].wr_id, wc[i].status);
		}
	}
	cr_assert(honest, "the honest receive did not complete");
	cr_assert_eq(total, 2, "%d completions of the lying peer's QP", total);
	cr_assert_eq(got[0], 1);
	cr_assert_eq(got[1], 2);
	enum vb_qp_state st;
	cr_assert_eq(vb_query_qp(sqp, &st), 0);
	cr_assert_eq(st, VB_QPS_RTS, "the honest QP went down");

	if (ev.sock >= 0)
		evil_close(&ev);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_qp(sqp), 0);
	cr_assert_eq(vb_destroy_listener(l), 0);
	cr_assert_eq(vb_dereg_mr(bm), 0);
	cr_assert_eq(vb_dereg_mr(mr), 0);
	cr_assert_eq(vb_destroy_cq(ccq), 0);
	server_close(&s);
}

Test(trust, a_forged_completion_never_reaches_the_cq, .timeout = 30)
{
	forge(FORGE_CQE);
}

Test(trust, a_report_out_of_order_fails_only_its_qp, .timeout = 30)
{
	forge(FORGE_INDEX);
}

Test(trust, a_report_longer_than_the_receive_fails_only_its_qp, .timeout = 30)
{
	forge(FORGE_LENGTH);
}

Test(trust, a_report_with_a_made_up_status_fails_only_its_qp, .timeout = 30)
{
	forge(FORGE_STATUS);
}

/* Keys say nothing of their neighbours, and a slot's key stays dead for long. */
Test(trust, keys_are_unpredictable_and_stale_keys_stay_dead, .timeout = 60)
{
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_mr *mr[8];
	static char buf[4096];
	uint32_t first;
	int same_step = 0;

	if (!tdev_is_softnic())
		cr_skip_test("softnic's keys; %s has its own", tdev_backend());
	setenv("SANPROV_SOFTNIC_MAX_MR", "16", 1);
	dev = tdev_open();
	cr_assert_not_null(dev);
	pd = vb_alloc_pd(dev);
	cr_assert_not_null(pd);
	for (int i = 0; i < 8; i++) {
		mr[i] = vb_reg_mr(pd, buf, sizeof(buf), VB_ACCESS_ALL);
		cr_assert_not_null(mr[i]);
		if (i >= 2 && mr[i]->rkey - mr[i - 1]->rkey == mr[i - 1]->rkey - mr[i - 2]->rkey)
			same_step++;
		if (i)
			cr_assert_neq(mr[i]->rkey, mr[i - 1]->rkey + 1,
				      "key %d is the last one + 1", i);
	}
	cr_assert_lt(same_step, 6, "keys come out in steps");
	first = mr[0]->rkey;
	for (int i = 0; i < 8; i++)
		cr_assert_eq(vb_dereg_mr(mr[i]), 0);
	/* 16 slots reused in turn: 600 reuses of the first key's slot. */
	for (int i = 0; i < 16 * 600; i++) {
		struct vb_mr *m = vb_reg_mr(pd, buf, sizeof(buf), VB_ACCESS_ALL);
		cr_assert_not_null(m);
		cr_assert_neq(m->rkey, first, "a stale key came back after %d registrations", i);
		cr_assert_eq(vb_dereg_mr(m), 0);
	}
	cr_assert_eq(vb_dealloc_pd(pd), 0);
	cr_assert_eq(vb_close_device(dev), 0);
}

/*
 * Under Yama's ptrace_scope 1 only the connected peer process may attach,
 * and a second peer process is refused while the first is connected.  The
 * policy runs as if Yama were there (it is not everywhere); a real Yama is
 * checked below.
 */
static pid_t peer_child(uint16_t port, int *done_pipe, int *result, const void *probe)
{
	int res[2], done[2];
	pid_t pid;

	cr_assert_eq(pipe(res), 0);
	cr_assert_eq(pipe(done), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
		struct vb_conn_param param = { .timeout_ms = 5000 };
		struct sockaddr_in sin;
		struct vb_device *dev = tdev_open();
		struct vb_pd *pd = dev ? vb_alloc_pd(dev) : NULL;
		struct vb_cq *cq = dev ? vb_create_cq(dev, 8) : NULL;
		char c;
		int ret = EIO;

		close(res[0]);
		close(done[1]);

		if (pd && cq) {
			attr.send_cq = attr.recv_cq = cq;
			struct vb_qp *qp = vb_create_qp(pd, &attr);
			tdev_sockaddr(&sin, port);
			if (qp)
				ret = vb_connect(qp, (struct sockaddr *)&sin, sizeof(sin), &param);
		}
		/* Connected, the peer reads a byte of the server (its parent) directly. */
		if (!ret && probe) {
			struct iovec l = { &c, 1 }, r = { (void *)probe, 1 };

			if (process_vm_readv(getppid(), &l, 1, &r, 1, 0) != 1)
				ret = errno ? errno : EIO;
		}
		(void)!write(res[1], &ret, sizeof(ret));
		(void)!read(done[0], &c, 1);
		_exit(0);
	}
	close(res[1]);
	close(done[0]);
	*done_pipe = done[1];
	cr_assert_eq(read(res[0], result, sizeof(*result)), (ssize_t)sizeof(*result));
	close(res[0]);
	return pid;
}

Test(trust, only_the_connected_peer_may_attach, .timeout = 30)
{
	struct server s;
	int done1, done2, r1, r2;
	pid_t c1, c2;

	unsetenv("SANPROV_SOFTNIC_PTRACER");
	snic_os_set_ptrace_scope(1);
	server_open(&s);
	cr_assert_eq(snic_os_peer_trusted(), 0, "nobody before a connection");
	server_accept_async(&s, 5000);
	c1 = peer_child(s.port, &done1, &r1, NULL);
	cr_assert_eq(r1, 0, "connect: %s", strerror(r1));
	cr_assert_eq(server_accept_wait(&s), 0);
	cr_assert_eq(snic_os_peer_trusted(), c1, "the peer, and only it");

	/* A second peer process: Yama can name one tracer only. */
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
					.send_cq = s.cq,
					.recv_cq = s.cq };
	struct vb_qp *qp2 = vb_create_qp(s.pd, &attr);
	cr_assert_not_null(qp2);
	struct vb_qp *keep = s.qp;
	s.qp = qp2;
	server_accept_async(&s, 5000);
	c2 = peer_child(s.port, &done2, &r2, NULL);
	int acc = server_accept_wait(&s);
	cr_assert_eq(acc, EBUSY, "accept: %s", strerror(acc));
	cr_assert_eq(r2, EBUSY, "the second peer learns why: %s", strerror(r2));
	cr_assert_eq(snic_os_peer_trusted(), c1);
	close(done2);
	waitpid(c2, NULL, 0);

	/* The first one leaves: nobody may attach any more. */
	close(done1);
	waitpid(c1, NULL, 0);
	cr_assert_eq(tpair_wait_qp_state(keep, VB_QPS_ERR, 5000), VB_QPS_ERR);
	cr_assert_eq(vb_destroy_qp(keep), 0);
	cr_assert_eq(snic_os_peer_trusted(), 0, "still allowed after the disconnect");
	server_close(&s);
	snic_os_set_ptrace_scope(-1);
}

#define YAMA_SCOPE "/proc/sys/kernel/yama/ptrace_scope"

/* The kernel's Yama scope; -1: no Yama. */
static int yama_scope(void)
{
	FILE *f = fopen(YAMA_SCOPE, "r");
	int scope = -1;

	if (f) {
		if (fscanf(f, "%d", &scope) != 1)
			scope = -1;
		fclose(f);
	}
	return scope;
}

static int yama_set(int scope)
{
	FILE *f = fopen(YAMA_SCOPE, "w");
	int ret;

	if (!f)
		return errno;
	ret = fprintf(f, "%d\n", scope) < 0;
	ret |= fclose(f) != 0;
	return ret ? EIO : 0;
}

static int yama_was = -1;

/*
 * SANPROV_TEST_YAMA=1 (the soft-RoCE VM's run, a machine of our own): the
 * case sets the system-wide scope to 1 itself, and puts it back after.
 */
static void yama_init(void)
{
	const char *set = getenv("SANPROV_TEST_YAMA");
	int scope = yama_scope();

	if (!set || strcmp(set, "1") || scope < 0 || scope == 1)
		return;
	cr_assert_eq(yama_set(1), 0, "setting " YAMA_SCOPE " to 1");
	yama_was = scope;
}

static void yama_fini(void)
{
	if (yama_was >= 0)
		yama_set(yama_was);
}

/* The same with the kernel's Yama, where there is one. */
Test(trust, yama_lets_in_the_connected_peer_only, .init = yama_init, .fini = yama_fini,
     .timeout = 30)
{
	int scope = yama_scope();

	if (scope != 1)
		cr_skip_test(
		    "needs Yama with ptrace_scope 1 (here: %s; SANPROV_TEST_YAMA=1 sets it)",
		    scope < 0 ? "no Yama" : "another scope");
	struct server s;
	int done, r;
	pid_t c;

	/* CAP_SYS_PTRACE passes over Yama: this process and its children do without it. */
	struct __user_cap_header_struct ch = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct cd[2];
	cr_assert_eq(syscall(SYS_capget, &ch, cd), 0);
	cd[CAP_SYS_PTRACE / 32].effective &= ~(1u << (CAP_SYS_PTRACE % 32));
	cd[CAP_SYS_PTRACE / 32].permitted &= ~(1u << (CAP_SYS_PTRACE % 32));
	cd[CAP_SYS_PTRACE / 32].inheritable &= ~(1u << (CAP_SYS_PTRACE % 32));
	cr_assert_eq(syscall(SYS_capset, &ch, cd), 0, "capset: %s", strerror(errno));
	server_open(&s);
	server_accept_async(&s, 5000);
	c = peer_child(s.port, &done, &r, &s);
	cr_assert_eq(r, 0, "the peer's connect, or its read of this process: %s", strerror(r));
	cr_assert_eq(server_accept_wait(&s), 0);
	/* The peer could attach; a third process of the user may not. */
	pid_t third = fork();
	if (!third) {
		char b;
		struct iovec l = { &b, 1 }, rv = { (void *)&s, 1 };
		if (getppid() != 1 && process_vm_readv(getppid(), &l, 1, &rv, 1, 0) == 1)
			_exit(1);
		_exit(0);
	}
	cr_assert_eq(child_status(third), 0, "a process other than the peer could attach");
	close(done);
	waitpid(c, NULL, 0);
	server_close(&s);
}

/*
 * A peer's RDMA write into a region is held in the middle of its copy (its
 * source pages fault to a userfaultfd the peer serves) while the owner
 * deregisters the region, after destroying the QP too when destroy_qp is
 * set.  Deregistration does not return before the copy ends, and after it
 * the owner reuses the memory: no byte of it changes.
 */
#define INFLIGHT_LEN (16 * 4096)

struct inflight_info {
	uint64_t addr;
	uint32_t rkey;
	uint16_t port;
};

static void *inflight_fault_main(void *arg)
{
	int *fds = arg; /* uffd, to the parent, from the parent */
	static char page[4096];
	bool told = false;
	struct uffd_msg m;

	memset(page, 0xbb, sizeof(page));
	for (;;) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		if (poll(&p, 1, 10000) != 1 || read(fds[0], &m, sizeof(m)) != sizeof(m))
			return NULL;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		if (!told) {
			char c = 'F';
			told = true;
			if (write(fds[1], &c, 1) != 1 || read(fds[2], &c, 1) != 1)
				_exit(30);
		}
		struct uffdio_copy cp = { .dst = m.arg.pagefault.address & ~4095ull,
					  .src = (uintptr_t)page,
					  .len = 4096 };
		ioctl(fds[0], UFFDIO_COPY, &cp);
	}
}

/* The peer: writes INFLIGHT_LEN bytes of 0xbb, the second half faulting. */
static void inflight_peer(int to_parent, int from_parent)
{
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
	struct vb_conn_param param = { .timeout_ms = 5000 };
	struct uffdio_api api = { .api = UFFD_API };
	struct inflight_info in;
	struct sockaddr_in sin;
	struct vb_wc wc;
	pthread_t t;
	int fds[3], n = 0;

	if (read(from_parent, &in, sizeof(in)) != sizeof(in))
		_exit(21);
	struct vb_device *dev = tdev_open();
	struct vb_pd *pd = dev ? vb_alloc_pd(dev) : NULL;
	struct vb_cq *cq = dev ? vb_create_cq(dev, 8) : NULL;
	if (!pd || !cq)
		_exit(22);
	attr.send_cq = attr.recv_cq = cq;
	struct vb_qp *qp = vb_create_qp(pd, &attr);
	uint8_t *src =
	    mmap(NULL, INFLIGHT_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!qp || src == MAP_FAILED)
		_exit(23);
	memset(src, 0xbb, INFLIGHT_LEN);
	struct vb_mr *mr = vb_reg_mr(pd, src, INFLIGHT_LEN, VB_ACCESS_LOCAL_WRITE);
	if (!mr)
		_exit(24);
	/* The second half is gone, and comes back only when we say so. */
	struct uffdio_register reg = { .range = { (uintptr_t)src + INFLIGHT_LEN / 2,
						  INFLIGHT_LEN / 2 },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	fds[0] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fds[0] < 0 || ioctl(fds[0], UFFDIO_API, &api) ||
	    madvise(src + INFLIGHT_LEN / 2, INFLIGHT_LEN / 2, MADV_DONTNEED) ||
	    ioctl(fds[0], UFFDIO_REGISTER, &reg))
		_exit(77); /* no userfaultfd that the kernel's own copies fault to */
	fds[1] = to_parent;
	fds[2] = from_parent;
	if (pthread_create(&t, NULL, inflight_fault_main, fds))
		_exit(25);
	tdev_sockaddr(&sin, in.port);
	if (vb_connect(qp, (struct sockaddr *)&sin, sizeof(sin), &param))
		_exit(26);
	if (post_rdma(qp, VB_WR_RDMA_WRITE, 1, src, INFLIGHT_LEN, mr->lkey, in.addr, in.rkey,
		      VB_SEND_SIGNALED))
		_exit(27);
	if (vb_cq_wait(cq, 1, &wc, &n, 10000) || n != 1)
		_exit(28);
	/* The copy ran to its end; what the owner's QP says afterwards does not matter. */
	_exit(wc.status == VB_WC_SUCCESS || wc.status == VB_WC_WR_FLUSH_ERR ? 0
									    : 40 + (int)wc.status);
}

struct inflight_owner {
	struct vb_mr *mr;
	struct vb_qp *qp; /* destroyed first, when set */
	atomic_bool done;
};

static void *inflight_dereg_main(void *arg)
{
	struct inflight_owner *o = arg;

	if (o->qp && vb_destroy_qp(o->qp))
		abort();
	if (vb_dereg_mr(o->mr))
		abort();
	atomic_store(&o->done, true);
	return NULL;
}

static void dereg_with_access_in_flight(bool destroy_qp)
{
	struct inflight_owner o = { .qp = NULL };
	int to_child[2], from_child[2], code;
	struct inflight_info in;
	struct server s;
	pthread_t t;
	uint8_t *dst;
	pid_t pid;
	char c;

	server_open(&s);
	dst = mmap(NULL, INFLIGHT_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(dst, MAP_FAILED);
	memset(dst, 0, INFLIGHT_LEN);
	o.mr = vb_reg_mr(s.pd, dst, INFLIGHT_LEN, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE);
	cr_assert_not_null(o.mr);
	cr_assert_eq(pipe(to_child), 0);
	cr_assert_eq(pipe(from_child), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		close(to_child[1]);
		close(from_child[0]);
		inflight_peer(from_child[1], to_child[0]);
	}
	close(to_child[0]);
	close(from_child[1]);
	server_accept_async(&s, 5000);
	in = (struct inflight_info){ (uintptr_t)dst, o.mr->rkey, s.port };
	cr_assert_eq(write(to_child[1], &in, sizeof(in)), (ssize_t)sizeof(in));
	if (read(from_child[0], &c, 1) != 1) {
		code = child_status(pid); /* skips on 77 */
		cr_assert_fail("the peer stopped before its copy (%d)", code);
	}
	cr_assert_eq(server_accept_wait(&s), 0);
	/* The peer's copy is under way, stopped at its first missing page. */
	if (destroy_qp)
		o.qp = s.qp;
	cr_assert_eq(pthread_create(&t, NULL, inflight_dereg_main, &o), 0);
	usleep(300 * 1000);
	cr_assert(!atomic_load(&o.done), "%s returned with the peer's write in flight",
		  destroy_qp ? "destroy_qp + dereg_mr" : "dereg_mr");
	cr_assert_eq(write(to_child[1], "G", 1), 1);
	pthread_join(t, NULL);
	/* The memory is the owner's again. */
	memset(dst, 0x5a, INFLIGHT_LEN);
	code = child_status(pid);
	cr_assert_eq(code, 0, "the peer's write ended with %d", code);
	usleep(100 * 1000);
	for (size_t i = 0; i < INFLIGHT_LEN; i++)
		cr_assert_eq(dst[i], 0x5a, "byte %zu written after deregistration", i);
	close(to_child[1]);
	close(from_child[0]);
	if (destroy_qp) {
		s.qp = vb_create_qp(
		    s.pd, &(struct vb_qp_init_attr){ .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
						     .send_cq = s.cq,
						     .recv_cq = s.cq });
		cr_assert_not_null(s.qp);
	}
	munmap(dst, INFLIGHT_LEN);
	server_close(&s);
}

Test(trust, dereg_waits_for_a_peers_access_in_flight, .timeout = 30)
{
	dereg_with_access_in_flight(false);
}

Test(trust, destroy_qp_then_dereg_waits_for_a_peers_access_in_flight, .timeout = 30)
{
	dereg_with_access_in_flight(true);
}

/*
 * A fork child that shares the listener answers the request: the
 * connecting side takes the answer's sender (its kernel credentials) as
 * its peer, and names it, not the listener's creator, as the process that
 * may attach.
 */
Test(trust, a_fork_child_that_answers_is_the_peer, .timeout = 30)
{
	char blob[VB_LISTENER_BLOB_MAX];
	size_t blen = sizeof(blob);
	struct vb_conn_param param = { .timeout_ms = 5000 };
	struct sockaddr_in sin;
	struct server s;
	int res[2], done[2], acc = -1;
	pid_t pid;

	unsetenv("SANPROV_SOFTNIC_PTRACER");
	snic_os_set_ptrace_scope(1);
	server_open(&s);
	cr_assert_eq(vb_export_listener(s.l, blob, &blen), 0);
	cr_assert_eq(pipe(res), 0);
	cr_assert_eq(pipe(done), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
		struct vb_conn_param cp = { .timeout_ms = 5000 };
		struct vb_device *dev = tdev_open();
		struct vb_pd *pd = dev ? vb_alloc_pd(dev) : NULL;
		struct vb_cq *cq = dev ? vb_create_cq(dev, 8) : NULL;
		struct vb_listener *l = dev ? vb_import_listener(dev, blob, blen) : NULL;
		int ret = EIO;
		char c;

		close(res[0]);
		close(done[1]);
		if (pd && cq && l) {
			attr.send_cq = attr.recv_cq = cq;
			struct vb_qp *qp = vb_create_qp(pd, &attr);
			if (qp)
				ret = vb_accept(l, qp, &cp);
		}
		(void)!write(res[1], &ret, sizeof(ret));
		(void)!read(done[0], &c, 1);
		_exit(0);
	}
	close(res[1]);
	close(done[0]);
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
					.send_cq = s.cq,
					.recv_cq = s.cq };
	struct vb_qp *qp = vb_create_qp(s.pd, &attr);
	cr_assert_not_null(qp);
	tdev_sockaddr(&sin, s.port);
	int ret = vb_connect(qp, (struct sockaddr *)&sin, sizeof(sin), &param);
	cr_assert_eq(read(res[0], &acc, sizeof(acc)), (ssize_t)sizeof(acc));
	cr_assert_eq(acc, 0, "the child's accept: %s", strerror(acc));
	cr_assert_eq(ret, 0, "connect: %s", strerror(ret));
	/* The listening socket names this process; the answer came from the child. */
	cr_assert_eq(snic_os_peer_trusted(), pid, "named %d, the child is %d",
		     (int)snic_os_peer_trusted(), (int)pid);
	close(done[1]);
	close(res[0]);
	waitpid(pid, NULL, 0);
	cr_assert_eq(tpair_wait_qp_state(qp, VB_QPS_ERR, 5000), VB_QPS_ERR);
	cr_assert_eq(vb_destroy_qp(qp), 0);
	cr_assert_eq(snic_os_peer_trusted(), 0, "still named after the disconnect");
	server_close(&s);
	snic_os_set_ptrace_scope(-1);
}

/*
 * A fork child of a process that named its peer starts with nobody named:
 * it may name a peer of its own.  The peer, which has the ptrace right,
 * reads this process's memory directly (what it could do anyway).
 */
Test(trust, a_fork_child_starts_with_nobody_named, .timeout = 30)
{
	struct server s;
	int done, r;
	pid_t c, f;

	unsetenv("SANPROV_SOFTNIC_PTRACER");
	snic_os_set_ptrace_scope(1);
	server_open(&s);
	server_accept_async(&s, 5000);
	c = peer_child(s.port, &done, &r, &s);
	cr_assert_eq(r, 0, "the peer's connect, or its read of this process: %s", strerror(r));
	cr_assert_eq(server_accept_wait(&s), 0);
	cr_assert_eq(snic_os_peer_trusted(), c);
	f = fork();
	cr_assert_geq(f, 0);
	if (!f) {
		if (snic_os_peer_trusted() != 0)
			_exit(1);
		/* Not refused as a second peer: this process has none yet. */
		if (snic_os_peer_trust(getppid()) || snic_os_peer_trusted() != getppid())
			_exit(2);
		_exit(0);
	}
	int code = child_status(f);
	cr_assert_eq(code, 0, "the fork child %s",
		     code == 1 ? "inherited the name" : "was refused");
	cr_assert_eq(snic_os_peer_trusted(), c, "the parent's name stays");
	close(done);
	waitpid(c, NULL, 0);
	server_close(&s);
	snic_os_set_ptrace_scope(-1);
}

/*
 * A listener holds 16 connections that have not spoken: the 17th makes the
 * oldest go, and the others stay for their own deadline.
 */
Test(trust, sixteen_silent_connections_are_held, .timeout = 30)
{
	struct sockaddr_un un;
	struct server s;
	int silent[SNIC_MAX_PENDING + 1];
	char b;

	cr_assert_eq(SNIC_MAX_PENDING, 16);
	server_open(&s);
	for (int i = 0; i <= SNIC_MAX_PENDING; i++) {
		silent[i] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		cr_assert_eq(connect(silent[i], (struct sockaddr *)&un, wire_name(&un, s.port)), 0);
	}
	server_accept_async(&s, 300);
	cr_assert_eq(server_accept_wait(&s), ETIMEDOUT);
	cr_assert_eq(recv(silent[0], &b, 1, MSG_DONTWAIT), 0, "the oldest was not closed");
	for (int i = 1; i <= SNIC_MAX_PENDING; i++) {
		cr_assert_eq(recv(silent[i], &b, 1, MSG_DONTWAIT), -1, "connection %d was closed",
			     i);
		cr_assert_eq(errno, EAGAIN);
	}
	for (int i = 0; i <= SNIC_MAX_PENDING; i++)
		close(silent[i]);
	server_close(&s);
}

/* The peer's own QP segment, as the server maps it. */
static struct snic_qp_seg *evil_qp_seg(struct evil *ev)
{
	struct snic_qp_seg *qs =
	    mmap(NULL, snic_qp_seg_size(4, 1), PROT_READ | PROT_WRITE, MAP_SHARED, ev->mine[1], 0);

	cr_assert_neq(qs, MAP_FAILED);
	return qs;
}

/* Run fn with stderr sent to a pipe; what it wrote, in out. */
static void with_stderr(void (*fn)(void *), void *arg, char *out, size_t len)
{
	int p[2], saved = dup(2);
	ssize_t n;

	cr_assert_eq(pipe(p), 0);
	fflush(stderr);
	cr_assert_eq(dup2(p[1], 2), 2);
	fn(arg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(p[1]);
	n = read(p[0], out, len - 1);
	out[n > 0 ? n : 0] = '\0';
	close(p[0]);
}

struct timed {
	struct server *s;
	struct vb_mr *mr;
	uint64_t ms;
	int ret;
};

static void timed_dereg(void *arg)
{
	struct timed *t = arg;
	uint64_t start = now_ms();

	t->ret = vb_dereg_mr(t->mr);
	t->ms = now_ms() - start;
}

static void timed_destroy_qp(void *arg)
{
	struct timed *t = arg;
	uint64_t start = now_ms();

	t->ret = vb_destroy_qp(t->s->qp);
	t->ms = now_ms() - start;
	t->s->qp = NULL;
}

/*
 * A peer announces an access it never ends: dereg_mr, and destroy_qp,
 * wait SANPROV_SOFTNIC_DEREG_TIMEOUT_MS for it, then let go with a message.
 */
Test(trust, an_access_never_ended_holds_dereg_for_the_timeout_only, .timeout = 10)
{
	static uint64_t buf[2];
	struct timed t = { 0 };
	struct server s;
	struct evil ev;
	char msg[512];

	setenv("SANPROV_SOFTNIC_DEREG_TIMEOUT_MS", "300", 1);
	server_open(&s);
	t.s = &s;
	struct vb_mr *mr =
	    vb_reg_mr(s.pd, &buf[0], 8, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE);
	struct vb_mr *mr2 =
	    vb_reg_mr(s.pd, &buf[1], 8, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE);
	cr_assert(mr && mr2);
	evil_accepted(&s, &ev);
	struct snic_qp_seg *qs = evil_qp_seg(&ev);

	atomic_store(&qs->held[0], mr->rkey);
	t.mr = mr;
	with_stderr(timed_dereg, &t, msg, sizeof(msg));
	cr_assert_eq(t.ret, 0);
	cr_assert_geq(t.ms, 300, "dereg_mr returned after %llu ms", (unsigned long long)t.ms);
	cr_assert_lt(t.ms, 1500, "dereg_mr took %llu ms", (unsigned long long)t.ms);
	cr_assert(strstr(msg, "still busy after 300 ms"), "no message: \"%s\"", msg);

	atomic_store(&qs->held[0], mr2->rkey);
	with_stderr(timed_destroy_qp, &t, msg, sizeof(msg));
	cr_assert_eq(t.ret, 0);
	cr_assert_geq(t.ms, 300, "destroy_qp returned after %llu ms", (unsigned long long)t.ms);
	cr_assert_lt(t.ms, 1500, "destroy_qp took %llu ms", (unsigned long long)t.ms);
	cr_assert(strstr(msg, "still announces an access after 300 ms"), "no message: \"%s\"", msg);
	/* The QP let go of its peer: nothing holds the region any more. */
	t.mr = mr2;
	timed_dereg(&t);
	cr_assert_eq(t.ret, 0);
	cr_assert_lt(t.ms, 200, "dereg_mr after destroy_qp took %llu ms", (unsigned long long)t.ms);

	munmap(qs, snic_qp_seg_size(4, 1));
	evil_close(&ev);
	s.qp = vb_create_qp(
	    s.pd, &(struct vb_qp_init_attr){ .cap = { .max_send_wr = 4, .max_recv_wr = 4 },
					     .send_cq = s.cq,
					     .recv_cq = s.cq });
	cr_assert_not_null(s.qp);
	server_close(&s);
	unsetenv("SANPROV_SOFTNIC_DEREG_TIMEOUT_MS");
}

/* A connected peer reads the whole MR table: every region's address, length, rights, key. */
Test(trust, a_peer_reads_the_whole_mr_table, .timeout = 30)
{
	static char buf[64];
	struct server s;
	struct evil ev;
	struct stat st;

	server_open(&s);
	struct vb_mr *mr = vb_reg_mr(s.pd, buf, sizeof(buf), VB_ACCESS_REMOTE_READ);
	cr_assert_not_null(mr);
	evil_accepted(&s, &ev);
	cr_assert_eq(fstat(ev.theirs[0], &st), 0);
	struct snic_dev_seg *dev =
	    mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, ev.theirs[0], 0);
	cr_assert_neq(dev, MAP_FAILED);
	bool found = false;
	for (uint32_t i = 0; i < dev->max_mr && !found; i++) {
		const struct snic_mr_entry *e = &dev->mr[i];

		found = atomic_load(&e->key) == mr->rkey && e->addr == (uintptr_t)buf &&
			e->length == sizeof(buf) && (e->access & VB_ACCESS_REMOTE_READ);
	}
	cr_assert(found, "the region's key, address, length and rights are not in the table");
	munmap(dev, (size_t)st.st_size);
	evil_close(&ev);
	cr_assert_eq(vb_dereg_mr(mr), 0);
	server_close(&s);
}

/*
 * A peer lies within what a responder could report: the next posted
 * receive completes with the status, length and immediate it says, though
 * no byte came.  It takes the second receive and never reports it: that
 * receive does not complete, and the QP stays up.
 */
Test(trust, a_peer_can_lie_within_what_a_responder_reports, .timeout = 30)
{
	uint64_t rbuf[2] = { 0, 0 };
	struct vb_wc wc;
	struct server s;
	struct evil ev;
	enum vb_qp_state st;
	int n;

	server_open(&s);
	struct vb_mr *mr = vb_reg_mr(s.pd, rbuf, sizeof(rbuf), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(mr);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(post_recv1(s.qp, (uint64_t)i + 1, &rbuf[i], 8, mr->lkey), 0);
	evil_accepted(&s, &ev);
	struct snic_qp_seg *qs =
	    mmap(NULL, snic_qp_seg_size(4, 1), PROT_READ | PROT_WRITE, MAP_SHARED, ev.theirs[1], 0);
	cr_assert_neq(qs, MAP_FAILED);
	struct snic_inb *r = snic_inb_at(qs->rq, 4, snic_rwqe_size(1), 0);
	*r = (struct snic_inb){ .idx = 0,
				.status = VB_WC_SUCCESS,
				.opcode = VB_WC_RECV,
				.byte_len = 3,
				.imm_data = 0x1234,
				.wc_flags = VB_WC_WITH_IMM };
	atomic_store(&qs->rq_head, 2); /* both taken, one reported */
	atomic_store(&qs->inb_tail, 1);
	if (!atomic_load(&qs->polled) && !atomic_exchange(&qs->rung, 1))
		cr_assert_eq(send(ev.sock, "r", 1, 0), 1);
	munmap(qs, snic_qp_seg_size(4, 1));
	wc = tpair_wait(s.cq);
	cr_assert_eq(wc.wr_id, 1);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.byte_len, 3);
	cr_assert(wc.wc_flags & VB_WC_WITH_IMM);
	cr_assert_eq(wc.imm_data, 0x1234);
	cr_assert_eq(rbuf[0], 0, "a byte moved");
	uint64_t start = now_ms();
	while (now_ms() - start < 300) {
		cr_assert_eq(vb_poll_cq(s.cq, 1, &wc, &n), 0);
		cr_assert_eq(n, 0, "wr_id %llu completed", (unsigned long long)wc.wr_id);
		usleep(10000);
	}
	cr_assert_eq(vb_query_qp(s.qp, &st), 0);
	cr_assert_eq(st, VB_QPS_RTS, "the lies took the QP down");
	evil_close(&ev);
	cr_assert_eq(tpair_wait_qp_state(s.qp, VB_QPS_ERR, 5000), VB_QPS_ERR);
	/* The flush returns the receive the peer kept, with its wr_id. */
	wc = tpair_wait(s.cq);
	cr_assert_eq(wc.wr_id, 2);
	cr_assert_eq(wc.status, VB_WC_WR_FLUSH_ERR);
	cr_assert_eq(vb_dereg_mr(mr), 0);
	server_close(&s);
}
