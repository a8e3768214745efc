/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic under concurrency: QPs whose completions share CQs, sends that
 * race the receives they need (the progress thread resumes them), and
 * several threads posting on one QP.  Every byte and every ordering rule
 * is checked.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tpair.h"

#define NT 4
#define MSGS 3000
#define DEPTH 32
#define MSG_MAX 256

struct shared_cqs {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *scq, *rcq;
	struct vb_qp *a[NT], *b[NT];
	uint8_t src[NT][DEPTH][MSG_MAX];
	uint8_t dst[NT][DEPTH][MSG_MAX];
	struct vb_mr *mr_src, *mr_dst;
	_Atomic uint32_t verified[NT];
	_Atomic uint32_t sent[NT];
	_Atomic bool failed;
	_Atomic bool done;
};

static uint32_t msg_len(int t, uint32_t k)
{
	return 1 + (k * 37u + (uint32_t)t * 11u) % MSG_MAX;
}

/* Both QPs of every pair complete into the same two CQs. */
static void create_pair(struct shared_cqs *s, int i)
{
	struct vb_qp_init_attr attr = { .send_cq = s->scq,
					.recv_cq = s->rcq,
					.cap = { .max_send_wr = 2 * DEPTH, .max_recv_wr = DEPTH } };

	s->a[i] = vb_create_qp(s->pd, &attr);
	s->b[i] = vb_create_qp(s->pd, &attr);
	cr_assert(s->a[i] && s->b[i]);
}

struct targ {
	struct shared_cqs *s;
	int t;
};

static void *sender(void *p)
{
	struct targ *a = p;
	struct shared_cqs *s = a->s;
	int t = a->t;
	struct vb_wc wc[8];
	int n;

	for (uint32_t k = 0; k < MSGS && !atomic_load(&s->failed); k++) {
		uint32_t slot = k % DEPTH, len = msg_len(t, k);

		/* Keep at most DEPTH messages unverified: their buffers are in use. */
		while (k - atomic_load(&s->verified[t]) >= DEPTH && !atomic_load(&s->failed))
			;
		fill_pattern(s->src[t][slot], len, (uint32_t)t << 16 | k);
		/* Every other message is sent before its receive exists. */
		if (k % 2 == 0 && post_recv1(s->b[t], (uint64_t)t << 32 | k, s->dst[t][slot],
					     MSG_MAX, s->mr_dst->lkey))
			atomic_store(&s->failed, true);
		if (post_rdma(s->a[t], VB_WR_SEND, (uint64_t)t << 32 | k, s->src[t][slot], len,
			      s->mr_src->lkey, 0, 0, VB_SEND_SIGNALED))
			atomic_store(&s->failed, true);
		if (k % 2 == 1 && post_recv1(s->b[t], (uint64_t)t << 32 | k, s->dst[t][slot],
					     MSG_MAX, s->mr_dst->lkey))
			atomic_store(&s->failed, true);
		/* The send CQ is shared: reap whatever is there, for anyone. */
		if (vb_poll_cq(s->scq, 8, wc, &n) == 0)
			for (int i = 0; i < n; i++) {
				if (wc[i].status != VB_WC_SUCCESS)
					atomic_store(&s->failed, true);
				atomic_fetch_add(&s->sent[wc[i].wr_id >> 32], 1);
			}
	}
	return NULL;
}

static void *receiver(void *p)
{
	struct shared_cqs *s = p;
	uint32_t next[NT] = { 0 };
	uint32_t total = 0;
	struct vb_wc wc[16];
	int n;

	while (total < NT * MSGS && !atomic_load(&s->failed)) {
		if (vb_cq_wait(s->rcq, 16, wc, &n, 5000)) {
			atomic_store(&s->failed, true);
			break;
		}
		for (int i = 0; i < n; i++) {
			int t = (int)(wc[i].wr_id >> 32);
			uint32_t k = (uint32_t)wc[i].wr_id;
			/* In order per QP, with the right QP number and every byte. */
			if (wc[i].status != VB_WC_SUCCESS || t >= NT || k != next[t] ||
			    wc[i].qp_num != s->b[t]->qp_num || wc[i].byte_len != msg_len(t, k) ||
			    !check_pattern(s->dst[t][k % DEPTH], msg_len(t, k),
					   (uint32_t)t << 16 | k)) {
				atomic_store(&s->failed, true);
				break;
			}
			next[t]++;
			total++;
			atomic_store(&s->verified[t], next[t]);
		}
	}
	return NULL;
}

Test(threads, shared_cqs_racing_receives)
{
	static struct shared_cqs s;
	pthread_t snd[NT], rcv;
	struct targ args[NT];
	struct vb_conn_param param = { .timeout_ms = 5000 };

	memset(&s, 0, sizeof(s));
	s.dev = tdev_open();
	cr_assert_not_null(s.dev);
	s.pd = vb_alloc_pd(s.dev);
	s.scq = vb_create_cq(s.dev, 4 * NT * DEPTH);
	s.rcq = vb_create_cq(s.dev, 4 * NT * DEPTH);
	cr_assert(s.pd && s.scq && s.rcq);
	s.mr_src = vb_reg_mr(s.pd, s.src, sizeof(s.src), 0);
	s.mr_dst = vb_reg_mr(s.pd, s.dst, sizeof(s.dst), VB_ACCESS_LOCAL_WRITE);
	cr_assert(s.mr_src && s.mr_dst);
	for (int i = 0; i < NT; i++) {
		create_pair(&s, i);
		struct vb_listener *l = tlisten(s.dev);
		int accepted;
		cr_assert_eq(tconnect(l, s.b[i], NULL, s.a[i], &param, &accepted), 0);
		cr_assert_eq(accepted, 0);
		cr_assert_eq(vb_destroy_listener(l), 0);
	}
	cr_assert_eq(pthread_create(&rcv, NULL, receiver, &s), 0);
	for (int i = 0; i < NT; i++) {
		args[i] = (struct targ){ &s, i };
		cr_assert_eq(pthread_create(&snd[i], NULL, sender, &args[i]), 0);
	}
	for (int i = 0; i < NT; i++)
		pthread_join(snd[i], NULL);
	pthread_join(rcv, NULL);
	cr_assert(!atomic_load(&s.failed), "a message was lost, reordered or corrupted");
	for (int i = 0; i < NT; i++)
		cr_assert_eq(atomic_load(&s.verified[i]), MSGS);
	/* Reap the last send completions. */
	uint32_t sent = 0;
	for (int i = 0; i < NT; i++)
		sent += atomic_load(&s.sent[i]);
	while (sent < NT * MSGS) {
		struct vb_wc wc[16];
		int n;
		cr_assert_eq(vb_cq_wait(s.scq, 16, wc, &n, 5000), 0);
		for (int i = 0; i < n; i++)
			cr_assert_eq(wc[i].status, VB_WC_SUCCESS);
		sent += (uint32_t)n;
	}
	cr_assert_eq(sent, NT * MSGS);
	for (int i = 0; i < NT; i++) {
		cr_assert_eq(vb_destroy_qp(s.a[i]), 0);
		cr_assert_eq(vb_destroy_qp(s.b[i]), 0);
	}
	cr_assert_eq(vb_dereg_mr(s.mr_src), 0);
	cr_assert_eq(vb_dereg_mr(s.mr_dst), 0);
	cr_assert_eq(vb_destroy_cq(s.scq), 0);
	cr_assert_eq(vb_destroy_cq(s.rcq), 0);
	cr_assert_eq(vb_dealloc_pd(s.pd), 0);
	cr_assert_eq(vb_close_device(s.dev), 0);
}

struct writer {
	struct tpair *p;
	struct vb_mr *smr, *dmr;
	uint64_t *src, *dst;
	int t;
	int failed;
};

#define WRITES 4000

/* Take what the CQ holds; a failed completion marks the writer failed. */
static void writer_drain(struct writer *w)
{
	struct vb_wc wc[16];
	int n;

	do {
		if (vb_poll_cq(w->p->a.scq, 16, wc, &n)) {
			w->failed = 1;
			return;
		}
		for (int i = 0; i < n; i++)
			if (wc[i].status != VB_WC_SUCCESS)
				w->failed = 1;
	} while (n);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	for (int k = 0; k < WRITES; k++) {
		int idx = w->t * WRITES + k;
		w->src[idx] = (uint64_t)idx * 0x9e3779b97f4a7c15ull;
		int ret;
		/* The SQ is shared by all writers: retry while it is full. */
		while ((ret = post_rdma(w->p->a.qp, VB_WR_RDMA_WRITE, (uint64_t)idx, &w->src[idx],
					8, w->smr->lkey, (uintptr_t)&w->dst[idx], w->dmr->rkey,
					VB_SEND_SIGNALED)) == ENOMEM)
			writer_drain(w);
		if (ret)
			w->failed = 1;
		/*
		 * A NIC frees a send slot when it completes the WR, not when the
		 * completion is polled: without draining, the CQ overflows.
		 */
		writer_drain(w);
	}
	return NULL;
}

Test(threads, many_threads_post_on_one_qp)
{
	struct vb_device *dev = tdev_open();
	static uint64_t src[NT * WRITES], dst[NT * WRITES];
	struct writer w[NT];
	pthread_t t[NT];
	struct tpair p;

	cr_assert_not_null(dev);
	tpair_init(&p, dev, &(struct tpair_opts){ .max_send_wr = 64, .cqe = 1024 });
	struct vb_mr *smr = vb_reg_mr(p.a.pd, src, sizeof(src), 0);
	struct vb_mr *dmr = vb_reg_mr(p.b.pd, dst, sizeof(dst), VB_ACCESS_ALL);
	cr_assert(smr && dmr);
	for (int i = 0; i < NT; i++) {
		w[i] = (struct writer){ &p, smr, dmr, src, dst, i, 0 };
		cr_assert_eq(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].failed, 0);
	}
	/* Drain what the writers left in the CQ. */
	for (;;) {
		struct vb_wc wc[16];
		int n;
		cr_assert_eq(vb_poll_cq(p.a.scq, 16, wc, &n), 0);
		if (!n)
			break;
		for (int i = 0; i < n; i++)
			cr_assert_eq(wc[i].status, VB_WC_SUCCESS);
	}
	cr_assert_eq(memcmp(src, dst, sizeof(src)), 0);
	cr_assert_eq(vb_dereg_mr(smr), 0);
	cr_assert_eq(vb_dereg_mr(dmr), 0);
	tpair_fini(&p);
	cr_assert_eq(vb_close_device(dev), 0);
}
