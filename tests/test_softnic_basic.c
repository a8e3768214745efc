/* SPDX-License-Identifier: BSD-2-Clause */
/* softnic in one process: every operation moves the right bytes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tpair.h"

static struct vb_device *dev;
static struct tpair p;

static void setup(void)
{
	dev = tdev_open();
	cr_assert_not_null(dev, "open: %s", strerror(errno));
	tpair_init(&p, dev, &(struct tpair_opts){ .max_inline = 64 });
}

static void teardown(void)
{
	tpair_fini(&p);
	cr_assert_eq(vb_close_device(dev), 0);
}

/* Criterion ignores failed assertions in .fini: each test ends with teardown(). */
TestSuite(basic, .init = setup);

Test(basic, query)
{
	struct vb_device_attr da;
	struct vb_port_attr pa;

	cr_assert_eq(vb_query_device(dev, &da), 0);
	cr_assert_str_eq(da.backend, tdev_backend());
	if (tdev_is_softnic())
		cr_assert_str_eq(da.name, "softnic0");
	cr_assert_geq(da.max_mr, 16);
	cr_assert_geq(da.max_sge, 4);
	cr_assert_eq(vb_query_port(dev, &pa), 0);
	cr_assert_eq(pa.state, VB_PORT_ACTIVE);
	/* softnic takes what an IB port does; any device takes a megabyte. */
	cr_assert_geq(pa.max_msg_sz, tdev_is_softnic() ? 1u << 31 : 1u << 20);
	teardown();
}

static void rdma_roundtrip(void *a, void *b, size_t len)
{
	struct vb_mr *la = vb_reg_mr(p.a.pd, a, len, VB_ACCESS_LOCAL_WRITE);
	struct vb_mr *rb = vb_reg_mr(p.b.pd, b, len, VB_ACCESS_ALL);
	struct vb_wc wc;

	cr_assert(la && rb);
	fill_pattern(a, len, 11);
	memset(b, 0, len);
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 1, a, (uint32_t)len, la->lkey,
			       (uintptr_t)b, rb->rkey, VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
	cr_assert_eq(wc.opcode, VB_WC_RDMA_WRITE);
	cr_assert_eq(wc.qp_num, p.a.qp->qp_num);
	cr_assert(check_pattern(b, len, 11));

	fill_pattern(b, len, 12);
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_READ, 2, a, (uint32_t)len, la->lkey, (uintptr_t)b,
			       rb->rkey, VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.opcode, VB_WC_RDMA_READ);
	cr_assert_eq(wc.byte_len, len);
	cr_assert(check_pattern(a, len, 12));
	cr_assert_eq(vb_dereg_mr(la), 0);
	cr_assert_eq(vb_dereg_mr(rb), 0);
}

Test(basic, write_read_malloc)
{
	size_t len = 1 << 20;
	void *a = malloc(len), *b = malloc(len);

	rdma_roundtrip(a, b, len);
	free(a);
	free(b);
	teardown();
}

Test(basic, write_read_buf_alloc)
{
	size_t len = 3 << 20;
	void *a = vb_buf_alloc(dev, len), *b = vb_buf_alloc(dev, len);

	cr_assert(a && b);
	rdma_roundtrip(a, b, len);
	cr_assert_eq(vb_buf_free(dev, a, len), 0);
	cr_assert_eq(vb_buf_free(dev, b, len), 0);
	cr_assert_eq(vb_buf_free(dev, b, len), EINVAL, "double free is refused");
	teardown();
}

Test(basic, send_recv_scatter_gather)
{
	char src[3][100], dst[4][80];
	struct vb_mr *smr = vb_reg_mr(p.a.pd, src, sizeof(src), 0);
	struct vb_mr *dmr = vb_reg_mr(p.b.pd, dst, sizeof(dst), VB_ACCESS_LOCAL_WRITE);
	struct vb_sge ss[3], ds[4];
	struct vb_send_wr swr = { .wr_id = 5,
				  .sg_list = ss,
				  .num_sge = 3,
				  .opcode = VB_WR_SEND_WITH_IMM,
				  .send_flags = VB_SEND_SIGNALED,
				  .imm_data = 0xabcd };
	struct vb_recv_wr rwr = { .wr_id = 6, .sg_list = ds, .num_sge = 4 }, *rbad;
	struct vb_send_wr *sbad;
	struct vb_wc wc;

	cr_assert(smr && dmr);
	fill_pattern(src, sizeof(src), 3);
	memset(dst, 0, sizeof(dst));
	for (int i = 0; i < 3; i++)
		ss[i] = (struct vb_sge){ (uintptr_t)src[i], 100, smr->lkey };
	for (int i = 0; i < 4; i++)
		ds[i] = (struct vb_sge){ (uintptr_t)dst[i], 80, dmr->lkey };
	cr_assert_eq(vb_post_recv(p.b.qp, &rwr, &rbad), 0);
	cr_assert_eq(vb_post_send(p.a.qp, &swr, &sbad), 0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.opcode, VB_WC_SEND);
	wc = tpair_wait(p.b.rcq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.wr_id, 6);
	cr_assert_eq(wc.opcode, VB_WC_RECV);
	cr_assert_eq(wc.byte_len, 300);
	cr_assert_eq(wc.qp_num, p.b.qp->qp_num);
	cr_assert(wc.wc_flags & VB_WC_WITH_IMM);
	cr_assert_eq(wc.imm_data, 0xabcd);
	cr_assert_eq(memcmp(dst, src, 300), 0);
	cr_assert_eq(((char *)dst)[300], 0, "nothing past the message");
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	teardown();
}

Test(basic, inline_send_reuses_buffer_at_once)
{
	char msg[48], dst[64] = { 0 };
	struct vb_mr *dmr = vb_reg_mr(p.b.pd, dst, sizeof(dst), VB_ACCESS_LOCAL_WRITE);
	struct vb_wc wc;

	cr_assert_not_null(dmr);
	memset(msg, 'x', sizeof(msg));
	/* No receive yet: the send waits, and must have taken the data already. */
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_SEND, 1, msg, sizeof(msg), 0, 0, 0,
			       VB_SEND_INLINE | VB_SEND_SIGNALED),
		     0);
	memset(msg, 'y', sizeof(msg));
	tpair_expect_empty(p.a.scq);
	cr_assert_eq(post_recv1(p.b.qp, 2, dst, sizeof(dst), dmr->lkey), 0);
	wc = tpair_wait(p.b.rcq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.byte_len, sizeof(msg));
	for (size_t i = 0; i < sizeof(msg); i++)
		cr_assert_eq(dst[i], 'x');
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	teardown();
}

Test(basic, inline_too_large_is_refused)
{
	char msg[65];
	struct vb_sge sge = { (uintptr_t)msg, sizeof(msg), 0 };
	struct vb_send_wr wr = { .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = VB_WR_SEND,
				 .send_flags = VB_SEND_INLINE },
			  *bad = NULL;

	cr_assert_eq(vb_post_send(p.a.qp, &wr, &bad), EINVAL);
	cr_assert_eq(bad, &wr);
	teardown();
}

Test(basic, write_with_imm_consumes_a_receive)
{
	uint64_t src = 0x1122334455667788ull, dst = 0;
	struct vb_mr *smr = vb_reg_mr(p.a.pd, &src, sizeof(src), 0);
	struct vb_mr *dmr =
	    vb_reg_mr(p.b.pd, &dst, sizeof(dst), VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE);
	struct vb_sge sge = { (uintptr_t)&src, 8, 0 };
	struct vb_send_wr wr = { .wr_id = 9,
				 .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = VB_WR_RDMA_WRITE_WITH_IMM,
				 .imm_data = 42,
				 .remote_addr = (uintptr_t)&dst },
			  *bad;
	struct vb_wc wc;

	cr_assert(smr && dmr);
	sge.lkey = smr->lkey;
	wr.rkey = dmr->rkey;
	cr_assert_eq(post_recv1(p.b.qp, 3, NULL, 0, 0), 0);
	cr_assert_eq(vb_post_send(p.a.qp, &wr, &bad), 0);
	wc = tpair_wait(p.b.rcq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	cr_assert_eq(wc.opcode, VB_WC_RECV_RDMA_WITH_IMM);
	cr_assert_eq(wc.imm_data, 42);
	cr_assert_eq(wc.byte_len, 8);
	cr_assert_eq(dst, src);
	tpair_expect_empty(p.a.scq); /* unsignaled */
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	teardown();
}

Test(basic, completions_in_order)
{
	enum { N = 48 };
	uint32_t src[N], dst[N];
	struct vb_mr *smr = vb_reg_mr(p.a.pd, src, sizeof(src), 0);
	struct vb_mr *dmr = vb_reg_mr(p.b.pd, dst, sizeof(dst), VB_ACCESS_ALL);

	cr_assert(smr && dmr);
	for (int i = 0; i < N; i++) {
		src[i] = (uint32_t)i;
		/* A mix of signaled and unsignaled: only the signaled complete. */
		cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, (uint64_t)i, &src[i], 4, smr->lkey,
				       (uintptr_t)&dst[i], dmr->rkey, i % 3 ? 0 : VB_SEND_SIGNALED),
			     0);
	}
	for (int i = 0; i < N; i += 3) {
		struct vb_wc wc = tpair_wait(p.a.scq);
		cr_assert_eq(wc.wr_id, (uint64_t)i);
		cr_assert_eq(wc.status, VB_WC_SUCCESS);
	}
	tpair_expect_empty(p.a.scq);
	cr_assert_eq(memcmp(src, dst, sizeof(src)), 0);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	teardown();
}

Test(basic, zero_length_write_needs_no_rkey)
{
	char b = 0;
	struct vb_wc wc;

	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 1, &b, 0, 0, 0, 0, VB_SEND_SIGNALED), 0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	teardown();
}

struct late_recv {
	struct vb_qp *qp;
	void *buf;
	uint32_t lkey;
};

static void *post_late(void *arg)
{
	struct late_recv *l = arg;

	nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
	cr_assert_eq(post_recv1(l->qp, 1, l->buf, 64, l->lkey), 0);
	return NULL;
}

Test(basic, send_waits_for_receive_then_completes)
{
	char src[64], dst[64] = { 0 };
	struct vb_mr *smr = vb_reg_mr(p.a.pd, src, sizeof(src), 0);
	struct vb_mr *dmr = vb_reg_mr(p.b.pd, dst, sizeof(dst), VB_ACCESS_LOCAL_WRITE);
	struct late_recv l = { p.b.qp, dst, 0 };
	struct vb_wc wc;
	pthread_t t;

	cr_assert(smr && dmr);
	l.lkey = dmr->lkey;
	memset(src, 'r', sizeof(src));
	/* Posted with no receive: RNR, retried without limit as rnr_retry=7. */
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_SEND, 7, src, 64, smr->lkey, 0, 0, VB_SEND_SIGNALED),
		     0);
	/* A write posted behind it waits too: RC executes in order. */
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_SEND, 8, src, 0, 0, 0, 0, VB_SEND_SIGNALED), 0);
	cr_assert_eq(pthread_create(&t, NULL, post_late, &l), 0);
	/* The waiting thread sleeps on the CQ's fd, woken by the progress thread. */
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.wr_id, 7);
	cr_assert_eq(wc.status, VB_WC_SUCCESS);
	pthread_join(t, NULL);
	wc = tpair_wait(p.b.rcq);
	cr_assert_eq(wc.byte_len, 64);
	cr_assert_eq(memcmp(src, dst, 64), 0);
	cr_assert_eq(post_recv1(p.b.qp, 2, dst, 64, dmr->lkey), 0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.wr_id, 8);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	teardown();
}

Test(basic, cq_wait_times_out_when_idle)
{
	struct vb_wc wc;
	int n = -1;

	cr_assert_eq(vb_cq_wait(p.a.scq, 1, &wc, &n, 30), ETIMEDOUT);
	cr_assert_eq(n, 0);
	teardown();
}

Test(basic, dereg_revokes_rkey_at_once)
{
	uint64_t src = 1, dst = 0;
	struct vb_mr *smr = vb_reg_mr(p.a.pd, &src, 8, 0);
	struct vb_mr *dmr = vb_reg_mr(p.b.pd, &dst, 8, VB_ACCESS_ALL);
	uint32_t rkey;
	struct vb_wc wc;

	cr_assert(smr && dmr);
	rkey = dmr->rkey;
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 1, &src, 8, smr->lkey, (uintptr_t)&dst,
			       rkey, VB_SEND_SIGNALED),
		     0);
	cr_assert_eq(tpair_wait(p.a.scq).status, VB_WC_SUCCESS);
	cr_assert_eq(dst, 1);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	/* Reregistering the same memory gives a new key; the old one stays dead. */
	dmr = vb_reg_mr(p.b.pd, &dst, 8, VB_ACCESS_ALL);
	cr_assert_not_null(dmr);
	cr_assert_neq(dmr->rkey, rkey);
	src = 2;
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 2, &src, 8, smr->lkey, (uintptr_t)&dst,
			       rkey, VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_REM_ACCESS_ERR);
	cr_assert_eq(dst, 1);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	teardown();
}

Test(basic, reg_mr_validates_arguments)
{
	static char buf[8192];
	void *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *hole = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct {
		void *addr;
		size_t len;
		unsigned int access;
		int err;
	} bad[] = {
		{ buf, sizeof(buf), 0x100, EINVAL },		      /* unknown flag */
		{ buf, sizeof(buf), VB_ACCESS_REMOTE_WRITE, EINVAL }, /* no local write */
		{ NULL, 4096, 0, EINVAL },			      /* NULL */
		{ buf, 0, 0, EINVAL },				      /* empty */
		{ (void *)(UINTPTR_MAX - 100), 4096, 0, EINVAL },     /* wraps */
		{ ro, 4096, VB_ACCESS_LOCAL_WRITE, EFAULT },	      /* read-only memory */
		{ (char *)hole + 4096, 4096, 0, EFAULT },	      /* unmapped */
		{ hole, 8192, 0, EFAULT },			      /* partly unmapped */
	};

	cr_assert(ro != MAP_FAILED && hole != MAP_FAILED);
	cr_assert_eq(munmap((char *)hole + 4096, 4096), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		cr_assert_null(vb_reg_mr(p.a.pd, bad[i].addr, bad[i].len, bad[i].access),
			       "case %zu", i);
		cr_assert_eq(errno, bad[i].err, "case %zu: errno %d", i, errno);
	}
	/* Read-only memory registers fine for reading. */
	struct vb_mr *mr = vb_reg_mr(p.a.pd, ro, 4096, VB_ACCESS_REMOTE_READ);
	cr_assert_not_null(mr);
	cr_assert_eq(vb_dereg_mr(mr), 0);
	munmap(ro, 4096);
	munmap(hole, 4096);
	teardown();
}

/*
 * A zero-based region: work requests address it from 0, local and remote,
 * so a peer learns nothing of this process's addresses.
 */
Test(basic, zero_based_region_is_addressed_by_offset)
{
	enum { LEN = 8192 };
	char *a = malloc(LEN), *b = calloc(1, LEN);
	uint64_t ia = (uintptr_t)a % VB_PAGE_SIZE, ib = (uintptr_t)b % VB_PAGE_SIZE;
	struct vb_wc wc;

	cr_assert(a && b);
	/* The iova keeps the page offset, as every NIC needs; another one is refused. */
	errno = 0;
	cr_assert_null(vb_reg_mr_iova(p.a.pd, a, LEN, ia ^ 8, VB_ACCESS_LOCAL_WRITE));
	cr_assert_eq(errno, EINVAL);
	struct vb_mr *la = vb_reg_mr_iova(p.a.pd, a, LEN, ia, VB_ACCESS_LOCAL_WRITE);
	struct vb_mr *rb = vb_reg_mr_iova(p.b.pd, b, LEN, ib, VB_ACCESS_ALL);
	cr_assert(la && rb, "%s", strerror(errno));
	cr_assert_eq(la->iova, ia);
	cr_assert_eq(rb->addr, b);
	fill_pattern(a, LEN, 5);
	/* 4 KiB from a + 100 to b + 300, both given as offsets. */
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 1, (void *)(uintptr_t)(ia + 100), 4096,
			       la->lkey, ib + 300, rb->rkey, VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
	cr_assert_eq(memcmp(a + 100, b + 300, 4096), 0);
	cr_assert_eq(b[299], 0);
	cr_assert_eq(b[300 + 4096], 0);
	/* Read it back to the start of a. */
	memset(a, 0, LEN);
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_READ, 2, (void *)(uintptr_t)ia, 4096, la->lkey,
			       ib + 300, rb->rkey, VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_SUCCESS, "%s", vb_wc_status_str(wc.status));
	cr_assert_eq(memcmp(a, b + 300, 4096), 0);
	/* The peer's real address is outside the region's iova range now. */
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 3, (void *)(uintptr_t)ia, 8, la->lkey,
			       (uintptr_t)b, rb->rkey, VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.status, VB_WC_REM_ACCESS_ERR, "%s", vb_wc_status_str(wc.status));
	cr_assert_eq(vb_dereg_mr(la), 0);
	cr_assert_eq(vb_dereg_mr(rb), 0);
	free(a);
	free(b);
	teardown();
}

Test(basic, iova_range_must_not_wrap)
{
	static char buf[4096];

	errno = 0;
	cr_assert_null(vb_reg_mr_iova(p.a.pd, buf, sizeof(buf), UINT64_MAX - 100, 0));
	cr_assert_eq(errno, EINVAL);
	teardown();
}

Test(basic, private_data_reaches_the_peer)
{
	static const char hello[VB_MAX_PRIVATE_DATA] = "client-hello";
	struct vb_cq *cq = vb_create_cq(dev, 16);
	struct vb_qp_init_attr attr = { .send_cq = cq,
					.recv_cq = cq,
					.cap = { .max_send_wr = 4, .max_recv_wr = 4 } };
	struct vb_qp *c = vb_create_qp(p.a.pd, &attr), *s = vb_create_qp(p.b.pd, &attr);
	static const char reply[] = "server-hello";
	struct vb_conn_param sparam = { .private_data = reply,
					.private_data_len = sizeof(reply),
					.timeout_ms = 5000 };
	struct vb_conn_param param = { .private_data = hello,
				       .private_data_len = sizeof(hello),
				       .timeout_ms = 5000 };
	struct vb_listener *l = tlisten(dev);
	int accepted;

	cr_assert(cq && c && s);
	cr_assert_eq(tconnect(l, s, &sparam, c, &param, &accepted), 0);
	cr_assert_eq(accepted, 0);
	cr_assert_eq(s->peer_private_data_len, VB_MAX_PRIVATE_DATA);
	cr_assert_str_eq((const char *)s->peer_private_data, "client-hello");
	cr_assert_eq(c->peer_private_data_len, sizeof("server-hello"));
	cr_assert_str_eq((const char *)c->peer_private_data, "server-hello");
	/* Connected once is enough. */
	cr_assert_eq(vb_connect(c, (struct sockaddr *)&l->addr, sizeof(l->addr), &param), EISCONN);
	param.private_data_len = VB_MAX_PRIVATE_DATA + 1;
	cr_assert_eq(vb_accept(l, s, &param), EINVAL);
	cr_assert_eq(vb_destroy_qp(c), 0);
	cr_assert_eq(vb_destroy_qp(s), 0);
	cr_assert_eq(vb_destroy_cq(cq), 0);
	cr_assert_eq(vb_destroy_listener(l), 0);
	teardown();
}
