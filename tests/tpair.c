/* SPDX-License-Identifier: BSD-2-Clause */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "tpair.h"

static void side_init(struct tside *s, struct vb_device *dev, struct vb_pd *pd,
		      const struct tpair_opts *o)
{
	struct vb_qp_init_attr attr = {
		.cap = { .max_send_wr = o && o->max_send_wr ? o->max_send_wr : 64,
			 .max_recv_wr = o && o->max_recv_wr ? o->max_recv_wr : 64,
			 .max_send_sge = 4,
			 .max_recv_sge = 4,
			 .max_inline_data = o ? o->max_inline : 0 },
		.sq_sig_all = o && o->sq_sig_all,
	};
	int cqe = o && o->cqe ? (int)o->cqe : 256;

	s->pd = pd ? pd : vb_alloc_pd(dev);
	cr_assert_not_null(s->pd, "alloc_pd: %s", strerror(errno));
	s->scq = vb_create_cq(dev, cqe);
	s->rcq = vb_create_cq(dev, cqe);
	cr_assert(s->scq && s->rcq, "create_cq: %s", strerror(errno));
	attr.send_cq = s->scq;
	attr.recv_cq = s->rcq;
	s->qp = vb_create_qp(s->pd, &attr);
	cr_assert_not_null(s->qp, "create_qp: %s", strerror(errno));
}

struct vb_listener *tlisten(struct vb_device *dev)
{
	struct sockaddr_in sin;
	struct vb_listener *l;

	tdev_sockaddr(&sin, 0);
	l = vb_create_listener(dev, (struct sockaddr *)&sin, sizeof(sin), 16);

	cr_assert_not_null(l, "create_listener: %s", strerror(errno));
	return l;
}

void tpair_init(struct tpair *p, struct vb_device *dev, const struct tpair_opts *o)
{
	struct vb_listener *l;
	int acc;
	int ret;

	memset(p, 0, sizeof(*p));
	p->dev = dev;
	side_init(&p->a, dev, NULL, o);
	side_init(&p->b, dev, o && o->shared_pd ? p->a.pd : NULL, o);
	l = tlisten(dev);
	ret = tconnect(l, p->b.qp, NULL, p->a.qp, NULL, &acc);
	cr_assert_eq(acc, 0, "accept failed");
	cr_assert_eq(ret, 0, "connect: %s", strerror(ret));
	cr_assert_eq(vb_destroy_listener(l), 0);
}

static void side_fini(struct tside *s, bool free_pd)
{
	cr_assert_eq(vb_destroy_qp(s->qp), 0);
	cr_assert_eq(vb_destroy_cq(s->scq), 0);
	cr_assert_eq(vb_destroy_cq(s->rcq), 0);
	if (free_pd)
		cr_assert_eq(vb_dealloc_pd(s->pd), 0);
}

void tpair_fini(struct tpair *p)
{
	bool shared = p->a.pd == p->b.pd;

	side_fini(&p->a, false);
	side_fini(&p->b, !shared);
	cr_assert_eq(vb_dealloc_pd(p->a.pd), 0);
}

struct vb_wc tpair_wait(struct vb_cq *cq)
{
	struct vb_wc wc;
	int n = 0;
	int ret = vb_cq_wait(cq, 1, &wc, &n, 5000);

	cr_assert_eq(ret, 0, "cq wait: %s", strerror(ret));
	cr_assert_eq(n, 1);
	return wc;
}

void tpair_expect_empty(struct vb_cq *cq)
{
	struct vb_wc wc;
	int n = 0;

	nanosleep(&(struct timespec){ .tv_nsec = 20 * 1000 * 1000 }, NULL);
	cr_assert_eq(vb_poll_cq(cq, 1, &wc, &n), 0);
	cr_assert_eq(n, 0, "unexpected completion: wr_id %llu status %s",
		     (unsigned long long)wc.wr_id, vb_wc_status_str(wc.status));
}

enum vb_qp_state tpair_wait_qp_state(struct vb_qp *qp, enum vb_qp_state state, unsigned int ms)
{
	enum vb_qp_state st;

	for (unsigned int i = 0;; i++) {
		cr_assert_eq(vb_query_qp(qp, &st), 0);
		if (st == state || i >= ms)
			return st;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
}

static uint8_t pattern_byte(size_t i, uint32_t seed)
{
	uint32_t x = (uint32_t)i * 2654435761u ^ seed;

	x ^= x >> 15;
	return (uint8_t)(x * 2246822519u >> 24);
}

void fill_pattern(void *buf, size_t len, uint32_t seed)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = pattern_byte(i, seed);
}

bool check_pattern(const void *buf, size_t len, uint32_t seed)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i] != pattern_byte(i, seed))
			return false;
	return true;
}
