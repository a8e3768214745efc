/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer over what a softnic peer controls: its connection request, the
 * segments it sends along (which the server maps and checks), and, once
 * connected, every word of the segments it may write (the server's QP and
 * CQ segments, its own MR table, receive queue and CQ, which the server
 * reads as requester) interleaved with the server's own operations and a
 * disconnect.  The server must neither crash nor hang nor read out of
 * bounds, whatever the peer writes.
 *
 * The peer's socket is connected by a short-lived process, so the server
 * sees another process (whose memory, once it exits, no copy reaches) and
 * never takes the peer's addresses for its own.  The bytes of the
 * process-shared locks are left alone: a peer that keeps or breaks a lock
 * costs a timeout per lock, which the trust suite checks.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "softnic/snic.h"
#include "vb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

static struct {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	struct vb_listener *l;
	struct vb_mr *mr;
	uint16_t port;
	int helper;
	uint64_t buf[64];
} srv;

static struct vb_qp *new_qp(void)
{
	struct vb_qp_init_attr attr = {
		.cap = { .max_send_wr = 8, .max_recv_wr = 4, .max_send_sge = 2, .max_recv_sge = 2 },
		.send_cq = srv.cq,
		.recv_cq = srv.cq
	};

	return vb_create_qp(srv.pd, &attr);
}

/* The connecting process: one short-lived child per connection. */
static void helper_main(int s)
{
	uint16_t port;

	while (read(s, &port, sizeof(port)) == sizeof(port)) {
		pid_t c = fork();

		if (!c) {
			struct sockaddr_un un = { .sun_family = AF_UNIX };
			int n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1,
					 "sanprov-softnic:%u", port);
			int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
			union {
				char b[CMSG_SPACE(sizeof(int))];
				struct cmsghdr align;
			} u;
			char one = 1;
			struct iovec iov = { &one, 1 };
			struct msghdr mh = { .msg_iov = &iov,
					     .msg_iovlen = 1,
					     .msg_control = u.b,
					     .msg_controllen = sizeof(u.b) };
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

			if (connect(fd, (struct sockaddr *)&un,
				    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
						(size_t)n)))
				_exit(1);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &fd, sizeof(int));
			_exit(sendmsg(s, &mh, 0) == 1 ? 0 : 1);
		}
		waitpid(c, NULL, 0);
	}
	_exit(0);
}

static int peer_socket(void)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	char one;
	struct iovec iov = { &one, 1 };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
	};
	struct cmsghdr *cm;
	int fd;

	if (write(srv.helper, &srv.port, sizeof(srv.port)) != sizeof(srv.port) ||
	    recvmsg(srv.helper, &mh, MSG_CMSG_CLOEXEC) != 1)
		abort();
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		abort();
	memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
	return fd;
}

static void setup(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int sv[2];

	setenv("SANPROV_SOFTNIC_MAX_MR", "16", 1);
	setenv("SANPROV_SOFTNIC_DEREG_TIMEOUT_MS", "1", 1);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		abort();
	if (!fork()) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the fuzzer */
		helper_main(sv[1]);
	}
	close(sv[1]);
	srv.helper = sv[0];
	srv.dev = vb_open_device("softnic", NULL);
	if (!srv.dev)
		abort();
	srv.pd = vb_alloc_pd(srv.dev);
	srv.cq = vb_create_cq(srv.dev, 16);
	srv.qp = srv.pd && srv.cq ? new_qp() : NULL;
	srv.l = vb_create_listener(srv.dev, (struct sockaddr *)&sin, sizeof(sin), 16);
	srv.mr = srv.pd ? vb_reg_mr(srv.pd, srv.buf, sizeof(srv.buf), VB_ACCESS_ALL) : NULL;
	if (!srv.qp || !srv.l || !srv.mr)
		abort();
	srv.port = ntohs(((struct sockaddr_in *)&srv.l->addr)->sin_port);
}

/* Input reader: zeros once it runs out. */
struct in {
	const uint8_t *p;
	size_t n;
};

static void take(struct in *in, void *out, size_t len)
{
	size_t k = len < in->n ? len : in->n;

	memcpy(out, in->p, k);
	memset((char *)out + k, 0, len - k);
	in->p += k;
	in->n -= k;
}

static uint32_t take32(struct in *in)
{
	uint32_t v;

	take(in, &v, sizeof(v));
	return v;
}

/* Write a word of a segment, outside its lock: [lock, lock + size) is skipped. */
static void poke(void *seg, size_t len, size_t lock, uint32_t off, uint32_t v)
{
	size_t o = (off % (len / 4)) * 4;

	if (o + 4 > lock && o < lock + sizeof(pthread_mutex_t))
		return;
	memcpy((char *)seg + o, &v, 4);
}

static int evil_seg(size_t len, bool sealed, void **addr)
{
	struct snic_shm shm;
	int fd;

	if (sealed) {
		if (snic_os_shm_create(&shm, "fuzz", len, false))
			return -1;
		*addr = shm.addr;
		return shm.fd;
	}
	fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)len))
		abort();
	*addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*addr == MAP_FAILED)
		abort();
	return fd;
}

static void send_req(int sock, const struct wire_msg *m, const int *fds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 5)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)m, sizeof(*m) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	memset(&u, 0, sizeof(u));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * 5);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * 5);
	(void)!sendmsg(sock, &mh, MSG_NOSIGNAL);
}

static int recv_rep(int sock, int *fds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} u;
	struct wire_msg m;
	struct iovec iov = { &m, sizeof(m) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
	};
	int n = 0;

	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) != sizeof(m))
		return 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (size_t)i, sizeof(fd));
			if (n < 5)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* The server's own operations, steered by the input. */
static void server_op(struct in *in, uint8_t op)
{
	uint32_t a = take32(in), b = take32(in);
	struct vb_sge sge = { (uintptr_t)&srv.buf[a % 32], 8 * (1 + b % 16), srv.mr->lkey };
	static const enum vb_wr_opcode ops[] = { VB_WR_RDMA_WRITE, VB_WR_RDMA_WRITE_WITH_IMM,
						 VB_WR_SEND, VB_WR_SEND_WITH_IMM, VB_WR_RDMA_READ };
	struct vb_wc wc[16];
	int n;

	switch (op % 3) {
	case 0: {
		struct vb_send_wr wr = { .wr_id = a,
					 .sg_list = &sge,
					 .num_sge = 1,
					 .opcode = ops[a % 5],
					 .send_flags = VB_SEND_SIGNALED,
					 .remote_addr = (uint64_t)b << 12 | (a & 0xfff),
					 .rkey = take32(in) },
				  *bad;
		vb_post_send(srv.qp, &wr, &bad);
		break;
	}
	case 1: {
		struct vb_recv_wr wr = { .wr_id = b, .sg_list = &sge, .num_sge = 1 }, *bad;
		vb_post_recv(srv.qp, &wr, &bad);
		break;
	}
	default:
		vb_poll_cq(srv.cq, 16, wc, &n);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size };
	struct wire_msg m;
	struct snic_dev_seg *dev;
	struct snic_qp_seg *qp;
	struct snic_cq_seg *cq;
	struct snic_qp_seg *sqp = NULL;
	struct snic_cq_seg *scq = NULL;
	size_t dev_len, qp_len, cq_len;
	int mine[5], theirs[5] = { -1, -1, -1, -1, -1 }, ntheirs = 0, sock;
	uint8_t flags;
	void *p;

	if (!srv.dev)
		setup();
	take(&in, &flags, 1);
	take(&in, &m, sizeof(m));
	/* Mostly a request softnic would take, so that the input reaches the tables. */
	if (!(flags & 1)) {
		m.magic = 0x534e4343u;
		m.version = 2;
		m.type = 1;
	}
	if (!(flags & 2)) {
		m.max_mr = 16 + m.max_mr % 16;
		m.rq_size = 1u << (m.rq_size % 4);
		m.rq_max_sge = 1 + m.rq_max_sge % 2;
		m.cq_size = 1u << (m.cq_size % 5);
		m.priv_len %= VB_MAX_PRIVATE_DATA + 1;
	}
	/* The segments as the request says, or smaller when its sizes are out of range. */
	dev_len = snic_dev_seg_size(m.max_mr % 64 + 1);
	qp_len = snic_qp_seg_size(m.rq_size % 64 + 1, m.rq_max_sge % 33 + 1);
	cq_len = snic_cq_seg_size(m.cq_size % 64 + 1);
	mine[0] = evil_seg(dev_len, !(flags & 4), &p);
	dev = p;
	mine[1] = evil_seg(qp_len, !(flags & 4), &p);
	qp = p;
	mine[2] = evil_seg(cq_len, !(flags & 4), &p);
	cq = p;
	if (snic_os_event_create(&mine[3]) || snic_os_event_create(&mine[4]))
		abort();
	dev->magic = SNIC_DEV_MAGIC;
	dev->max_mr = m.max_mr;
	qp->magic = SNIC_QP_MAGIC;
	qp->qpn = m.qpn;
	qp->rq_size = m.rq_size;
	qp->rq_max_sge = m.rq_max_sge;
	atomic_store(&qp->state, VB_QPS_RTS);
	snic_os_shared_lock_init(&qp->rq_lock);
	cq->magic = SNIC_CQ_MAGIC;
	cq->size = m.cq_size;
	snic_os_shared_lock_init(&cq->prod_lock);
	for (int i = take32(&in) % 16; i > 0; i--) {
		uint32_t off = take32(&in), v = take32(&in);
		switch (off % 3) {
		case 0:
			poke(dev, dev_len, dev_len, off / 3, v);
			break;
		case 1:
			poke(qp, qp_len, offsetof(struct snic_qp_seg, rq_lock), off / 3, v);
			break;
		default:
			poke(cq, cq_len, offsetof(struct snic_cq_seg, prod_lock), off / 3, v);
			break;
		}
	}

	sock = peer_socket();
	send_req(sock, &m, mine);
	struct vb_conn_param param = { .timeout_ms = 200 };
	if (!vb_accept(srv.l, srv.qp, &param)) {
		ntheirs = recv_rep(sock, theirs);
		if (ntheirs == 5) {
			sqp = mmap(NULL, snic_qp_seg_size(4, 2), PROT_READ | PROT_WRITE, MAP_SHARED,
				   theirs[1], 0);
			/* The server's CQ is its own to write: a peer only reads it. */
			scq = mmap(NULL, snic_cq_seg_size(16), PROT_READ | PROT_WRITE, MAP_SHARED,
				   theirs[2], 0);
			if (scq != MAP_FAILED)
				abort();
			scq = mmap(NULL, snic_cq_seg_size(16), PROT_READ, MAP_SHARED, theirs[2], 0);
			if (sqp == MAP_FAILED || scq == MAP_FAILED)
				abort();
		}
		/* Whatever the peer may write, and the server at work meanwhile. */
		for (int i = 0; i < 64 && in.n; i++) {
			uint8_t op;
			uint32_t off, v;

			take(&in, &op, 1);
			if (op % 6 == 5) {
				server_op(&in, op / 6);
				continue;
			}
			off = take32(&in);
			v = take32(&in);
			switch (op % 6) {
			case 0:
				if (sqp)
					poke(sqp, snic_qp_seg_size(4, 2),
					     offsetof(struct snic_qp_seg, rq_lock), off, v);
				break;
			case 1:
				/* A report of a consumed receive, right or wrong. */
				if (sqp) {
					uint32_t t = atomic_load(&sqp->inb_tail);

					*snic_inb_at(sqp->rq, 4, snic_rwqe_size(2), t) =
					    (struct snic_inb){ .idx = off % 8,
							       .status = v % 16,
							       .opcode = VB_WC_RECV + (v >> 4) % 3,
							       .byte_len = off >> 3,
							       .imm_data = v,
							       .wc_flags = (v >> 8) % 4 };
					atomic_store(&sqp->inb_tail, t + 1);
				}
				break;
			case 2:
				poke(dev, dev_len, dev_len, off, v);
				break;
			case 3:
				poke(qp, qp_len, offsetof(struct snic_qp_seg, rq_lock), off, v);
				break;
			default:
				poke(cq, cq_len, offsetof(struct snic_cq_seg, prod_lock), off, v);
				break;
			}
		}
	}
	/* The peer leaves: the server's QP flushes; a fresh one for the next input. */
	close(sock);
	if (vb_destroy_qp(srv.qp) || vb_destroy_cq(srv.cq))
		abort();
	srv.cq = vb_create_cq(srv.dev, 16);
	srv.qp = srv.cq ? new_qp() : NULL;
	if (!srv.qp)
		abort();
	if (sqp)
		munmap(sqp, snic_qp_seg_size(4, 2));
	if (scq)
		munmap(scq, snic_cq_seg_size(16));
	munmap(dev, dev_len);
	munmap(qp, qp_len);
	munmap(cq, cq_len);
	for (int i = 0; i < 5; i++)
		close(mine[i]);
	for (int i = 0; i < ntheirs; i++)
		close(theirs[i]);
	return 0;
}
