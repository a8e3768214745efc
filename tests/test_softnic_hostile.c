/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A peer that does not follow the protocol: whatever arrives on the
 * connection socket is checked before anything is mapped or trusted, every
 * descriptor received is closed on failure, and the listener keeps serving.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tpair.h"

static int raw_connect(uint16_t port)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	int n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "sanprov-softnic:%u", port);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&un,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)),
		     0, "%s", strerror(errno));
	return fd;
}

static void send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)buf, len };
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
	cr_assert_eq(sendmsg(sock, &mh, 0), (ssize_t)len);
}

static int count_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

enum attack { GARBAGE, SHORT, REQ_NO_FDS, REQ_WRONG_FDS, REQ_HUGE_SIZES, SILENT };

struct attack_arg {
	uint16_t port;
	enum attack what;
};

static void *attacker(void *p)
{
	struct attack_arg *a = p;
	int sock = raw_connect(a->port);
	unsigned char msg[96];
	int fds[5];

	memset(msg, 0xa5, sizeof(msg));
	/* A REQ header as softnic writes it: magic, version 2, type REQ. */
	uint32_t magic = 0x534e4343u;
	uint16_t ver = 2, type = 1;
	memcpy(msg, &magic, 4);
	memcpy(msg + 4, &ver, 2);
	memcpy(msg + 6, &type, 2);
	for (int i = 0; i < 5; i++)
		fds[i] = open("/dev/null", O_RDWR | O_CLOEXEC);
	switch (a->what) {
	case GARBAGE:
		memset(msg, 0xa5, 8);
		send_with_fds(sock, msg, 96, fds, 5);
		break;
	case SHORT:
		send_with_fds(sock, msg, 10, NULL, 0);
		break;
	case REQ_NO_FDS:
		send_with_fds(sock, msg, 96, NULL, 0);
		break;
	case REQ_WRONG_FDS:
		/* Sizes in range, descriptors that are no shared segments. */
		memset(msg + 8, 0, 88);
		for (int off = 20; off < 44; off += 4) {
			uint32_t one = 4;
			memcpy(msg + off, &one, 4);
		}
		send_with_fds(sock, msg, 96, fds, 5);
		break;
	case REQ_HUGE_SIZES:
		send_with_fds(sock, msg, 96, fds, 5);
		break;
	case SILENT:
		break;
	}
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	/* Wait for the answer (a REJ or a close), then go. */
	char rep[128];
	(void)!recv(sock, rep, sizeof(rep), 0);
	close(sock);
	return NULL;
}

static void try_attack(enum attack what, int expect)
{
	struct vb_device *dev;

	/* These speak softnic's own connection protocol; a verbs device has rdma_cm's. */
	if (!tdev_is_softnic())
		cr_skip_test("attacks softnic's connection socket; %s has none", tdev_backend());
	dev = tdev_open();
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_listener *l;
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 2, .max_recv_wr = 2 } };
	struct vb_qp *qp;
	struct attack_arg a;
	struct vb_conn_param param = { .timeout_ms = 300 };
	pthread_t t;
	enum vb_qp_state st;

	cr_assert_not_null(dev);
	pd = vb_alloc_pd(dev);
	cq = vb_create_cq(dev, 8);
	cr_assert(pd && cq);
	attr.send_cq = attr.recv_cq = cq;
	qp = vb_create_qp(pd, &attr);
	cr_assert_not_null(qp);
	l = tlisten(dev);
	a = (struct attack_arg){ ntohs(((struct sockaddr_in *)&l->addr)->sin_port), what };

	int before = count_fds();
	cr_assert_eq(pthread_create(&t, NULL, attacker, &a), 0);
	cr_assert_eq(vb_accept(l, qp, &param), expect, "attack %d", what);
	/*
	 * A silent client stays with the listener until its own deadline or
	 * the listener's end, without holding anyone back: checked below.
	 */
	if (what != SILENT) {
		pthread_join(t, NULL);
		cr_assert_eq(count_fds(), before, "attack %d leaked descriptors", what);
	} else {
		cr_assert_eq(count_fds(), before + 2, "only the silent connection's two ends stay");
	}
	cr_assert_eq(vb_query_qp(qp, &st), 0);
	cr_assert_eq(st, VB_QPS_INIT, "the QP is still free to connect");

	/* The same listener and QP still take an honest client. */
	struct vb_cq *ccq = vb_create_cq(dev, 8);
	attr.send_cq = attr.recv_cq = ccq;
	struct vb_qp *cqp = vb_create_qp(pd, &attr);
	int accepted;
	cr_assert(ccq && cqp);
	param.timeout_ms = 5000;
	cr_assert_eq(tconnect(l, qp, NULL, cqp, &param, &accepted), 0);
	cr_assert_eq(accepted, 0);
	cr_assert_eq(vb_query_qp(qp, &st), 0);
	cr_assert_eq(st, VB_QPS_RTS);
	cr_assert_eq(vb_destroy_qp(cqp), 0);
	cr_assert_eq(vb_destroy_cq(ccq), 0);
	cr_assert_eq(vb_destroy_listener(l), 0);
	if (what == SILENT)
		pthread_join(t, NULL); /* the listener's end closed the silent connection */
	cr_assert_eq(vb_destroy_qp(qp), 0);
	cr_assert_eq(vb_destroy_cq(cq), 0);
	cr_assert_eq(vb_dealloc_pd(pd), 0);
	cr_assert_eq(vb_close_device(dev), 0);
}

Test(hostile, garbage_message)
{
	try_attack(GARBAGE, EPROTO);
}

Test(hostile, short_message)
{
	try_attack(SHORT, EPROTO);
}

Test(hostile, request_without_descriptors)
{
	try_attack(REQ_NO_FDS, EPROTO);
}

Test(hostile, request_with_foreign_descriptors)
{
	try_attack(REQ_WRONG_FDS, EPROTO);
}

Test(hostile, request_with_sizes_out_of_range)
{
	try_attack(REQ_HUGE_SIZES, EPROTO);
}

Test(hostile, client_that_says_nothing)
{
	try_attack(SILENT, ETIMEDOUT);
}
