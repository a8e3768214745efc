/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Every access violation a responder or requester NIC checks, table-driven:
 * the work request completes with the NIC's status, no byte moves, the QP
 * goes to the error state (the responder's too for responder errors) and
 * later work completes flushed.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tpair.h"

#define BUF 4096
#define LEN 512

enum lsel { L_OK, L_RO, L_BAD_KEY, L_OTHER_PD, L_PAST_END, L_OVERFLOW };
enum rsel {
	R_OK,
	R_LOCAL_ONLY,
	R_READ_ONLY,
	R_WRITE_ONLY,
	R_BAD_KEY,
	R_OTHER_PD,
	R_DEREGISTERED,
	R_PAST_END,
	R_BEFORE_START,
	R_OVERFLOW,
};
enum recvsel { RECV_OK, RECV_NO_LOCAL_WRITE, RECV_TOO_SMALL, RECV_BAD_KEY };
enum resp { RESP_UNTOUCHED, RESP_FLUSHED, RESP_STATUS };

struct acase {
	char name[40];
	enum vb_wr_opcode op;
	enum lsel l;
	enum rsel r;
	enum recvsel recv;
	enum vb_wc_status req_status;
	enum resp resp;
	enum vb_wc_status recv_status;
	/*
	 * What a real device reports instead, where it differs from the IB
	 * spec (soft-RoCE: a bad lkey is a local QP operation error, and so
	 * on).  softnic must give the spec's status; other devices either.
	 * 0 (success) for none: success is never an alternative.
	 */
	enum vb_wc_status req_alt, recv_alt;
};

ParameterizedTestParameters(access, violations)
{
	static struct acase cases[] = {
		{ "write bad rkey", VB_WR_RDMA_WRITE, L_OK, R_BAD_KEY, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write to local-only MR", VB_WR_RDMA_WRITE, L_OK, R_LOCAL_ONLY, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write to read-only MR", VB_WR_RDMA_WRITE, L_OK, R_READ_ONLY, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "read from write-only MR", VB_WR_RDMA_READ, L_OK, R_WRITE_ONLY, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write rkey of other PD", VB_WR_RDMA_WRITE, L_OK, R_OTHER_PD, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write deregistered rkey", VB_WR_RDMA_WRITE, L_OK, R_DEREGISTERED, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write past MR end", VB_WR_RDMA_WRITE, L_OK, R_PAST_END, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write before MR start", VB_WR_RDMA_WRITE, L_OK, R_BEFORE_START, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write addr+len overflow", VB_WR_RDMA_WRITE, L_OK, R_OVERFLOW, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "read past MR end", VB_WR_RDMA_READ, L_OK, R_PAST_END, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "read addr+len overflow", VB_WR_RDMA_READ, L_OK, R_OVERFLOW, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, 0 },
		{ "write-imm bad rkey", VB_WR_RDMA_WRITE_WITH_IMM, L_OK, R_BAD_KEY, RECV_OK,
		  VB_WC_REM_ACCESS_ERR, RESP_FLUSHED, 0, 0, VB_WC_REM_ACCESS_ERR },
		{ "write bad lkey", VB_WR_RDMA_WRITE, L_BAD_KEY, R_OK, RECV_OK, VB_WC_LOC_PROT_ERR,
		  RESP_UNTOUCHED, 0, VB_WC_LOC_QP_OP_ERR, 0 },
		{ "write lkey of other PD", VB_WR_RDMA_WRITE, L_OTHER_PD, R_OK, RECV_OK,
		  VB_WC_LOC_PROT_ERR, RESP_UNTOUCHED, 0, VB_WC_LOC_QP_OP_ERR, 0 },
		{ "write local past MR end", VB_WR_RDMA_WRITE, L_PAST_END, R_OK, RECV_OK,
		  VB_WC_LOC_PROT_ERR, RESP_UNTOUCHED, 0, 0, 0 },
		{ "write local overflow", VB_WR_RDMA_WRITE, L_OVERFLOW, R_OK, RECV_OK,
		  VB_WC_LOC_PROT_ERR, RESP_UNTOUCHED, 0, 0, 0 },
		{ "read into MR without local write", VB_WR_RDMA_READ, L_RO, R_OK, RECV_OK,
		  VB_WC_LOC_PROT_ERR, RESP_UNTOUCHED, 0, 0, 0 },
		{ "send bad lkey", VB_WR_SEND, L_BAD_KEY, R_OK, RECV_OK, VB_WC_LOC_PROT_ERR,
		  RESP_UNTOUCHED, 0, VB_WC_LOC_QP_OP_ERR, 0 },
		{ "send into recv without local write", VB_WR_SEND, L_OK, R_OK, RECV_NO_LOCAL_WRITE,
		  VB_WC_REM_OP_ERR, RESP_STATUS, VB_WC_LOC_PROT_ERR, 0, VB_WC_LOC_QP_OP_ERR },
		{ "send into recv bad lkey", VB_WR_SEND, L_OK, R_OK, RECV_BAD_KEY, VB_WC_REM_OP_ERR,
		  RESP_STATUS, VB_WC_LOC_PROT_ERR, 0, VB_WC_LOC_QP_OP_ERR },
		{ "send larger than recv", VB_WR_SEND, L_OK, R_OK, RECV_TOO_SMALL,
		  VB_WC_REM_INV_REQ_ERR, RESP_STATUS, VB_WC_LOC_LEN_ERR, VB_WC_REM_OP_ERR,
		  VB_WC_LOC_QP_OP_ERR },
	};
	return cr_make_param_array(struct acase, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct acase *c, access, violations)
{
	struct vb_device *dev = tdev_open();
	struct tpair p;
	uint8_t *abuf, *bbuf;
	struct vb_mr *lmr, *lmr_ro, *lmr_b, *rmr, *rmr_local, *rmr_ro, *rmr_wo, *rmr_apd, *dead;
	uint32_t dead_key, lkey, rkey, recv_lkey, recv_len = BUF;
	uint64_t laddr, raddr;
	enum vb_qp_state st;
	struct vb_wc wc;

	cr_assert_not_null(dev);
	tpair_init(&p, dev, NULL);
	abuf = aligned_alloc(4096, BUF);
	bbuf = aligned_alloc(4096, BUF);
	fill_pattern(abuf, BUF, 1);
	fill_pattern(bbuf, BUF, 2);

	lmr = vb_reg_mr(p.a.pd, abuf, BUF, VB_ACCESS_LOCAL_WRITE);
	lmr_ro = vb_reg_mr(p.a.pd, abuf, BUF, 0);
	lmr_b = vb_reg_mr(p.b.pd, abuf, BUF, VB_ACCESS_LOCAL_WRITE);
	rmr = vb_reg_mr(p.b.pd, bbuf, BUF, VB_ACCESS_ALL);
	rmr_local = vb_reg_mr(p.b.pd, bbuf, BUF, VB_ACCESS_LOCAL_WRITE);
	rmr_ro = vb_reg_mr(p.b.pd, bbuf, BUF, VB_ACCESS_REMOTE_READ);
	rmr_wo = vb_reg_mr(p.b.pd, bbuf, BUF, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE);
	rmr_apd = vb_reg_mr(p.a.pd, bbuf, BUF, VB_ACCESS_ALL);
	dead = vb_reg_mr(p.b.pd, bbuf, BUF, VB_ACCESS_ALL);
	cr_assert(lmr && lmr_ro && lmr_b && rmr && rmr_local && rmr_ro && rmr_wo && rmr_apd && dead,
		  "reg_mr: %s", strerror(errno));
	dead_key = dead->rkey;
	cr_assert_eq(vb_dereg_mr(dead), 0);

	laddr = (uintptr_t)abuf;
	lkey = lmr->lkey;
	switch (c->l) {
	case L_OK:
		break;
	case L_RO:
		lkey = lmr_ro->lkey;
		break;
	case L_BAD_KEY:
		lkey = 0x00ffff17;
		break;
	case L_OTHER_PD:
		lkey = lmr_b->lkey;
		break;
	case L_PAST_END:
		laddr = (uintptr_t)abuf + BUF - LEN / 2;
		break;
	case L_OVERFLOW:
		laddr = UINT64_MAX - LEN / 2;
		break;
	}
	raddr = (uintptr_t)bbuf;
	rkey = rmr->rkey;
	switch (c->r) {
	case R_OK:
		break;
	case R_LOCAL_ONLY:
		rkey = rmr_local->rkey;
		break;
	case R_READ_ONLY:
		rkey = rmr_ro->rkey;
		break;
	case R_WRITE_ONLY:
		rkey = rmr_wo->rkey;
		break;
	case R_BAD_KEY:
		rkey = rmr->rkey ^ 0x5a000000;
		break;
	case R_OTHER_PD:
		rkey = rmr_apd->rkey;
		break;
	case R_DEREGISTERED:
		rkey = dead_key;
		break;
	case R_PAST_END:
		raddr = (uintptr_t)bbuf + BUF - LEN / 2;
		break;
	case R_BEFORE_START:
		raddr = (uintptr_t)bbuf - 64;
		break;
	case R_OVERFLOW:
		raddr = UINT64_MAX - LEN / 2;
		break;
	}
	recv_lkey = rmr->lkey;
	switch (c->recv) {
	case RECV_OK:
		break;
	case RECV_NO_LOCAL_WRITE:
		recv_lkey = rmr_ro->lkey;
		break;
	case RECV_TOO_SMALL:
		recv_len = LEN / 2;
		break;
	case RECV_BAD_KEY:
		recv_lkey = 0x00fffe33;
		break;
	}

	cr_assert_eq(post_recv1(p.b.qp, 77, bbuf, recv_len, recv_lkey), 0);
	cr_assert_eq(post_rdma(p.a.qp, c->op, 1, (void *)(uintptr_t)laddr, LEN, lkey, raddr, rkey,
			       VB_SEND_SIGNALED),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.wr_id, 1);
	cr_assert(tdev_status_ok(wc.status, c->req_status, c->req_alt),
		  "%s: status %s, expected %s", c->name, vb_wc_status_str(wc.status),
		  vb_wc_status_str(c->req_status));

	/* No byte moved, in either direction. */
	cr_assert(check_pattern(abuf, BUF, 1), "%s: local buffer changed", c->name);
	cr_assert(check_pattern(bbuf, BUF, 2), "%s: remote buffer changed", c->name);

	/* The requester is in the error state and flushes what follows. */
	cr_assert_eq(vb_query_qp(p.a.qp, &st), 0);
	cr_assert_eq(st, VB_QPS_ERR);
	cr_assert_eq(post_rdma(p.a.qp, VB_WR_RDMA_WRITE, 2, abuf, 8, lmr->lkey, (uintptr_t)bbuf,
			       rmr->rkey, 0),
		     0);
	wc = tpair_wait(p.a.scq);
	cr_assert_eq(wc.wr_id, 2);
	cr_assert_eq(wc.status, VB_WC_WR_FLUSH_ERR, "%s: %s", c->name, vb_wc_status_str(wc.status));
	cr_assert(check_pattern(bbuf, BUF, 2));

	switch (c->resp) {
	case RESP_UNTOUCHED:
		tpair_expect_empty(p.b.rcq);
		cr_assert_eq(vb_query_qp(p.b.qp, &st), 0);
		cr_assert_eq(st, VB_QPS_RTS);
		break;
	case RESP_FLUSHED:
	case RESP_STATUS:
		wc = tpair_wait(p.b.rcq);
		cr_assert_eq(wc.wr_id, 77);
		cr_assert(
		    tdev_status_ok(wc.status,
				   c->resp == RESP_FLUSHED ? VB_WC_WR_FLUSH_ERR : c->recv_status,
				   c->recv_alt),
		    "%s: responder %s", c->name, vb_wc_status_str(wc.status));
		/* The responder's QP went to the error state too. */
		st = tpair_wait_qp_state(p.b.qp, VB_QPS_ERR, 500);
		cr_assert_eq(st, VB_QPS_ERR, "%s: responder state %d", c->name, st);
		break;
	}

	struct vb_mr *mrs[] = { lmr, lmr_ro, lmr_b, rmr, rmr_local, rmr_ro, rmr_wo, rmr_apd };
	for (size_t i = 0; i < sizeof(mrs) / sizeof(mrs[0]); i++)
		cr_assert_eq(vb_dereg_mr(mrs[i]), 0);
	tpair_fini(&p);
	cr_assert_eq(vb_close_device(dev), 0);
	free(abuf);
	free(bbuf);
}
