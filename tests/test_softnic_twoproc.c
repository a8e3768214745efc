/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic between two processes: RDMA write and read with every byte
 * verified, on private memory (cross-memory attach) and on vb_buf_alloc()
 * memory (mapped by the peer); rkey revocation seen by the other process;
 * a peer that dies.
 *
 * The child acts as the server and reports through its exit status (no
 * Criterion assertions in the child).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tpair.h"

enum cmd { CMD_CHECK = 1, CMD_DEREG = 2, CMD_BYE = 3, CMD_HANG = 4 };

struct region_info {
	uint64_t addr;
	uint64_t len;
	uint32_t rkey;
};

struct server {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	uint64_t msg[4];
	struct vb_mr *msg_mr;
};

#define CHILD_CHECK(cond)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
			_exit(10);                                                                 \
		}                                                                                  \
	} while (0)

/* The next command; a flushed receive (the parent went away) reads as CMD_BYE. */
static uint64_t child_recv(struct server *s)
{
	struct vb_wc wc;
	int n = 0;

	do {
		CHILD_CHECK(vb_cq_wait(s->cq, 1, &wc, &n, 10000) == 0 && n == 1);
		if (wc.status == VB_WC_WR_FLUSH_ERR)
			return CMD_BYE;
		CHILD_CHECK(wc.status == VB_WC_SUCCESS);
	} while (wc.opcode != VB_WC_RECV); /* skip the completions of our replies */
	uint64_t v = s->msg[wc.wr_id];
	CHILD_CHECK(post_recv1(s->qp, wc.wr_id, &s->msg[wc.wr_id], 8, s->msg_mr->lkey) == 0);
	return v;
}

static void child_send(struct server *s, uint64_t v)
{
	s->msg[3] = v;
	CHILD_CHECK(post_rdma(s->qp, VB_WR_SEND, 3, &s->msg[3], 8, s->msg_mr->lkey, 0, 0,
			      VB_SEND_SIGNALED) == 0);
}

static void child_main(int port_fd, bool use_buf_alloc, size_t len)
{
	struct server s = { 0 };
	struct sockaddr_in sin;
	struct vb_listener *l;
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 8, .max_recv_wr = 8 } };
	struct region_info ri;
	struct vb_conn_param param = { .private_data = &ri,
				       .private_data_len = sizeof(ri),
				       .timeout_ms = 10000 };
	uint8_t *buf;
	struct vb_mr *mr;

	s.dev = tdev_open();
	CHILD_CHECK(s.dev);
	s.pd = vb_alloc_pd(s.dev);
	s.cq = vb_create_cq(s.dev, 32);
	CHILD_CHECK(s.pd && s.cq);
	attr.send_cq = attr.recv_cq = s.cq;
	s.qp = vb_create_qp(s.pd, &attr);
	CHILD_CHECK(s.qp);
	buf = use_buf_alloc ? vb_buf_alloc(s.dev, len) : malloc(len);
	CHILD_CHECK(buf);
	memset(buf, 0, len);
	mr = vb_reg_mr(s.pd, buf, len, VB_ACCESS_ALL);
	s.msg_mr = vb_reg_mr(s.pd, s.msg, sizeof(s.msg), VB_ACCESS_LOCAL_WRITE);
	CHILD_CHECK(mr && s.msg_mr);
	for (uint64_t i = 0; i < 3; i++)
		CHILD_CHECK(post_recv1(s.qp, i, &s.msg[i], 8, s.msg_mr->lkey) == 0);
	ri = (struct region_info){ (uintptr_t)buf, len, mr->rkey };

	tdev_sockaddr(&sin, 0);
	l = vb_create_listener(s.dev, (struct sockaddr *)&sin, sizeof(sin), 4);
	CHILD_CHECK(l);
	uint16_t port = ntohs(((struct sockaddr_in *)&l->addr)->sin_port);
	CHILD_CHECK(write(port_fd, &port, sizeof(port)) == sizeof(port));
	CHILD_CHECK(vb_accept(l, s.qp, &param) == 0);

	for (;;) {
		uint64_t cmd = child_recv(&s);
		if (cmd == CMD_CHECK) {
			/* The parent wrote pattern 21; answer, then offer pattern 22. */
			uint64_t ok = check_pattern(buf, len, 21);
			fill_pattern(buf, len, 22);
			child_send(&s, ok);
		} else if (cmd == CMD_DEREG) {
			CHILD_CHECK(vb_dereg_mr(mr) == 0);
			mr = NULL;
			child_send(&s, 1);
		} else if (cmd == CMD_HANG) {
			child_send(&s, 1);
			pause(); /* killed by the parent */
		} else {
			break;
		}
	}
	if (mr)
		CHILD_CHECK(vb_dereg_mr(mr) == 0);
	_exit(0);
}

struct client {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	uint64_t msg[4];
	struct vb_mr *msg_mr;
	struct region_info ri;
	pid_t child;
};

static void client_start(struct client *c, bool use_buf_alloc, size_t len)
{
	struct vb_qp_init_attr attr = {
		.cap = { .max_send_wr = 8, .max_recv_wr = 8, .max_send_sge = 4 }
	};
	struct sockaddr_in sin;
	struct vb_conn_param param = { .timeout_ms = 10000 };
	int fds[2];
	uint16_t port;

	cr_assert_eq(pipe(fds), 0);
	c->child = fork();
	cr_assert_geq(c->child, 0);
	if (!c->child) {
		close(fds[0]);
		child_main(fds[1], use_buf_alloc, len);
	}
	close(fds[1]);
	cr_assert_eq(read(fds[0], &port, sizeof(port)), (ssize_t)sizeof(port), "child failed");
	close(fds[0]);

	c->dev = tdev_open();
	cr_assert_not_null(c->dev);
	c->pd = vb_alloc_pd(c->dev);
	c->cq = vb_create_cq(c->dev, 32);
	cr_assert(c->pd && c->cq);
	attr.send_cq = attr.recv_cq = c->cq;
	c->qp = vb_create_qp(c->pd, &attr);
	cr_assert_not_null(c->qp);
	c->msg_mr = vb_reg_mr(c->pd, c->msg, sizeof(c->msg), VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(c->msg_mr);
	for (uint64_t i = 0; i < 3; i++)
		cr_assert_eq(post_recv1(c->qp, i, &c->msg[i], 8, c->msg_mr->lkey), 0);
	tdev_sockaddr(&sin, port);
	cr_assert_eq(vb_connect(c->qp, (struct sockaddr *)&sin, sizeof(sin), &param), 0);
	cr_assert_eq(c->qp->peer_private_data_len, sizeof(c->ri));
	memcpy(&c->ri, c->qp->peer_private_data, sizeof(c->ri));
	cr_assert_eq(c->ri.len, len);
}

/*
 * Send a command and wait for the one-word answer.  The answer's receive
 * completion may come before the completion of our own send, as on a NIC:
 * wait for both.
 */
static uint64_t client_call(struct client *c, uint64_t cmd)
{
	bool sent = false, answered = false;
	uint64_t v = 0;
	struct vb_wc wc;

	c->msg[3] = cmd;
	cr_assert_eq(
	    post_rdma(c->qp, VB_WR_SEND, 3, &c->msg[3], 8, c->msg_mr->lkey, 0, 0, VB_SEND_SIGNALED),
	    0);
	while (!sent || !answered) {
		wc = tpair_wait(c->cq);
		cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
		if (wc.opcode == VB_WC_SEND) {
			sent = true;
			continue;
		}
		cr_assert_eq(wc.opcode, VB_WC_RECV);
		answered = true;
		v = c->msg[wc.wr_id];
		cr_assert_eq(post_recv1(c->qp, wc.wr_id, &c->msg[wc.wr_id], 8, c->msg_mr->lkey), 0);
	}
	return v;
}

static void client_finish(struct client *c, bool say_bye)
{
	int status;

	if (say_bye) {
		c->msg[3] = CMD_BYE;
		cr_assert_eq(post_rdma(c->qp, VB_WR_SEND, 3, &c->msg[3], 8, c->msg_mr->lkey, 0, 0,
				       VB_SEND_SIGNALED),
			     0);
		cr_assert_eq(tpair_wait(c->cq).status, VB_WC_SUCCESS);
	}
	cr_assert_eq(waitpid(c->child, &status, 0), c->child);
	if (say_bye)
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x",
			  status);
	cr_assert_eq(vb_destroy_qp(c->qp), 0);
	cr_assert_eq(vb_dereg_mr(c->msg_mr), 0);
	cr_assert_eq(vb_destroy_cq(c->cq), 0);
	cr_assert_eq(vb_dealloc_pd(c->pd), 0);
	cr_assert_eq(vb_close_device(c->dev), 0);
}

/* Write pattern 21 in three gathered pieces, have the child check it, read back 22. */
static void write_read_verified(bool use_buf_alloc, bool local_buf_alloc, size_t len)
{
	struct client c = { 0 };
	struct vb_wc wc;

	client_start(&c, use_buf_alloc, len);
	uint8_t *buf = local_buf_alloc ? vb_buf_alloc(c.dev, len) : malloc(len);
	cr_assert_not_null(buf);
	struct vb_mr *mr = vb_reg_mr(c.pd, buf, len, VB_ACCESS_LOCAL_WRITE);
	cr_assert_not_null(mr);
	fill_pattern(buf, len, 21);

	size_t third = len / 3;
	struct vb_sge sge[3] = {
		{ (uintptr_t)buf, (uint32_t)third, mr->lkey },
		{ (uintptr_t)buf + third, (uint32_t)third, mr->lkey },
		{ (uintptr_t)buf + 2 * third, (uint32_t)(len - 2 * third), mr->lkey },
	};
	struct vb_send_wr wr = { .wr_id = 50,
				 .sg_list = sge,
				 .num_sge = 3,
				 .opcode = VB_WR_RDMA_WRITE,
				 .send_flags = VB_SEND_SIGNALED,
				 .remote_addr = c.ri.addr,
				 .rkey = c.ri.rkey },
			  *bad;
	cr_assert_eq(vb_post_send(c.qp, &wr, &bad), 0);
	wc = tpair_wait(c.cq);
	cr_assert_eq(wc.wr_id, 50);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s (vendor %u)", vb_wc_status_str(wc.status),
		     wc.vendor_err);
	cr_assert_eq(client_call(&c, CMD_CHECK), 1, "the child did not see every byte");

	memset(buf, 0, len);
	wr.wr_id = 51;
	wr.opcode = VB_WR_RDMA_READ;
	cr_assert_eq(vb_post_send(c.qp, &wr, &bad), 0);
	wc = tpair_wait(c.cq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.byte_len, len);
	cr_assert(check_pattern(buf, len, 22), "read returned other bytes");

	/* Revocation crosses the process boundary at once. */
	cr_assert_eq(client_call(&c, CMD_DEREG), 1);
	wr.wr_id = 52;
	cr_assert_eq(vb_post_send(c.qp, &wr, &bad), 0);
	wc = tpair_wait(c.cq);
	cr_assert_eq(wc.status, VB_WC_REM_ACCESS_ERR);

	cr_assert_eq(vb_dereg_mr(mr), 0);
	if (local_buf_alloc)
		cr_assert_eq(vb_buf_free(c.dev, buf, len), 0);
	else
		free(buf);
	/*
	 * Our QP is in the error state now, so no bye can be sent: the child
	 * sees the disconnect as a flushed receive and exits cleanly.
	 */
	int status;
	cr_assert_eq(vb_destroy_qp(c.qp), 0);
	cr_assert_eq(waitpid(c.child, &status, 0), c.child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	cr_assert_eq(vb_dereg_mr(c.msg_mr), 0);
	cr_assert_eq(vb_destroy_cq(c.cq), 0);
	cr_assert_eq(vb_dealloc_pd(c.pd), 0);
	cr_assert_eq(vb_close_device(c.dev), 0);
}

Test(twoproc, write_read_private_memory)
{
	write_read_verified(false, false, (1 << 20) + 123);
}

Test(twoproc, write_read_shared_buffers)
{
	write_read_verified(true, true, 4 << 20);
}

Test(twoproc, write_read_mixed)
{
	write_read_verified(true, false, 100000);
}

Test(twoproc, peer_death_flushes_and_fails_requests)
{
	struct client c = { 0 };
	struct vb_wc wc;
	enum vb_qp_state st;

	client_start(&c, false, 4096);
	cr_assert_eq(client_call(&c, CMD_HANG), 1);
	kill(c.child, SIGKILL);
	/* Our receives flush when the connection drops. */
	for (int i = 0; i < 3; i++) {
		wc = tpair_wait(c.cq);
		cr_assert_eq(wc.status, VB_WC_WR_FLUSH_ERR);
	}
	cr_assert_eq(vb_query_qp(c.qp, &st), 0);
	cr_assert_eq(st, VB_QPS_ERR);
	client_finish(&c, false);
}
