/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * spi_bench: what the SAN SPI adds to an RDMA operation, side by side in
 * one run.  The same RDMA writes (one at a time, posted and waited for)
 * go through the backend directly (vb_post_send, vb_poll_cq) and through
 * the provider as the switch calls it (WSPRdmaWrite, then
 * WSPGetOverlappedResult polled, or the completion up-call), between two
 * sockets of this process.  And the registration of a buffer: the
 * backend's registration and deregistration (no cache) against
 * WSPRegisterMemory + WSPDeregisterMemory of a buffer the provider's cache
 * holds (a hit, with the probe of its pages).  Medians of --runs runs, in
 * microseconds.
 *
 *   spi_bench [-r RUNS] [-n ITERS]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"
#include "sw.h"
#include "vb.h"

static const uint32_t sizes[] = { 64, 4096, 65536 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define MAXLEN 65536
static const uint32_t reg_sizes[] = { 4096, 65536, 1u << 20 };
#define NREG (sizeof(reg_sizes) / sizeof(reg_sizes[0]))
#define REGLEN (1u << 20)
static const uint32_t live_counts[] = { 100, 100000 };
#define NLIVE (sizeof(live_counts) / sizeof(live_counts[0]))
#define LIVE_AREA ((100000u + 1) * 64)

struct raw {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq[2];
	struct vb_qp *qp[2];
	struct vb_mr *mr[2];
	char *buf[2];
};

struct acc {
	struct vb_listener *l;
	struct vb_qp *qp;
	int ret;
};

static void *acc_main(void *arg)
{
	struct acc *a = arg;

	a->ret = vb_accept(a->l, a->qp, NULL);
	return NULL;
}

static int raw_open(struct raw *r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct vb_qp_init_attr attr = { 0 };
	struct acc a = { 0 };
	pthread_t t;

	memset(r, 0, sizeof(*r));
	r->dev = vb_open_device(NULL, NULL);
	r->pd = r->dev ? vb_alloc_pd(r->dev) : NULL;
	if (!r->pd)
		return -1;
	for (int i = 0; i < 2; i++) {
		r->cq[i] = vb_create_cq(r->dev, 64);
		r->buf[i] = aligned_alloc(4096, MAXLEN);
		r->mr[i] = r->buf[i] ? vb_reg_mr(r->pd, r->buf[i], MAXLEN, VB_ACCESS_ALL) : NULL;
		attr.send_cq = attr.recv_cq = r->cq[i];
		attr.cap.max_send_wr = attr.cap.max_recv_wr = 16;
		attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
		r->qp[i] = r->cq[i] ? vb_create_qp(r->pd, &attr) : NULL;
		if (!r->mr[i] || !r->qp[i])
			return -1;
	}
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.l = vb_create_listener(r->dev, (struct sockaddr *)&sin, sizeof(sin), 1);
	a.qp = r->qp[1];
	if (!a.l || pthread_create(&t, NULL, acc_main, &a))
		return -1;
	int ret = vb_connect(r->qp[0], (struct sockaddr *)&a.l->addr, sizeof(sin), NULL);
	pthread_join(t, NULL);
	vb_destroy_listener(a.l);
	return ret || a.ret ? -1 : 0;
}

static void raw_close(struct raw *r)
{
	for (int i = 0; i < 2; i++) {
		if (r->qp[i])
			vb_destroy_qp(r->qp[i]);
		if (r->mr[i])
			vb_dereg_mr(r->mr[i]);
		if (r->cq[i])
			vb_destroy_cq(r->cq[i]);
		free(r->buf[i]);
	}
	if (r->pd)
		vb_dealloc_pd(r->pd);
	if (r->dev)
		vb_close_device(r->dev);
}

/* One write at a time, posted and polled: microseconds per write. */
static double raw_round(struct raw *r, uint32_t size, uint32_t n)
{
	struct vb_sge sge = { (uintptr_t)r->buf[0], size, r->mr[0]->lkey };
	struct vb_send_wr wr = { .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = VB_WR_RDMA_WRITE,
				 .send_flags = VB_SEND_SIGNALED,
				 .remote_addr = (uintptr_t)r->buf[1],
				 .rkey = r->mr[1]->rkey },
			  *bad;
	struct vb_wc wc;
	uint64_t t0 = perf_now_ns();
	int got;

	for (uint32_t i = 0; i < n; i++) {
		if (vb_post_send(r->qp[0], &wr, &bad))
			return -1;
		do
			if (vb_poll_cq(r->cq[0], 1, &wc, &got))
				return -1;
		while (!got);
		if (wc.status != VB_WC_SUCCESS)
			return -1;
	}
	return (double)(perf_now_ns() - t0) / 1000.0 / n;
}

struct spi {
	struct sw sw;
	sp_socket c, a;
	char *src, *dst;
	void *h;
	uint8_t desc[64];
	uint32_t desc_len;
};

static int spi_open(struct spi *s)
{
	int err = 0;

	memset(s, 0, sizeof(*s));
	if (sw_load(&s->sw))
		return -1;
	sw_pair(&s->sw, &s->c, &s->a);
	s->src = aligned_alloc(4096, MAXLEN);
	s->dst = aligned_alloc(4096, MAXLEN);
	if (s->c == SP_INVALID_SOCKET || s->a == SP_INVALID_SOCKET || !s->src || !s->dst)
		return -1;
	memset(s->src, 1, MAXLEN);
	s->h = s->sw.register_memory(s->c, s->src, MAXLEN, SP_MEM_READ, &err);
	s->desc_len = sizeof(s->desc);
	if (!s->h || s->sw.register_rdma_memory(s->a, s->dst, MAXLEN, SP_MEM_WRITE, s->desc,
						&s->desc_len, &err))
		return -1;
	return 0;
}

static void spi_close(struct spi *s)
{
	sw_unload(&s->sw); /* cleanup closes the sockets and their registrations */
	free(s->src);
	free(s->dst);
}

/*
 * One WSPRdmaWrite at a time: polled with WSPGetOverlappedResult (bit 0 of
 * hEvent), or waited for through the completion up-call and its event.
 */
static double spi_round(struct spi *s, uint32_t size, uint32_t n, bool upcall)
{
	struct sp_wsabufex b = { size, s->src, s->h };
	struct sw_ov o;
	uint32_t bytes, flags;
	uint64_t t0;
	int err;

	sw_ov_init(&o, !upcall);
	t0 = perf_now_ns();
	for (uint32_t i = 0; i < n; i++) {
		if (!s->sw.rdma_write(s->c, &b, 1, s->desc, s->desc_len, 0, &bytes, 0, &o.ov, NULL,
				      NULL, &err) ||
		    err != SP_WSA_IO_PENDING)
			goto fail;
		if (upcall) {
			if (sw_ov_wait(&s->sw, s->c, &o, &bytes, 10000))
				goto fail;
		} else {
			while (s->sw.p.get_overlapped_result(s->c, &o.ov, &bytes, 0, &flags, &err))
				if (err != SP_WSA_IO_INCOMPLETE)
					goto fail;
		}
		if (bytes != size)
			goto fail;
	}
	sw_ov_fini(&o);
	return (double)(perf_now_ns() - t0) / 1000.0 / n;
fail:
	sw_ov_fini(&o);
	return -1;
}

/* The backend's registration and deregistration of size bytes: microseconds per pair. */
static double raw_reg_round(struct raw *r, char *buf, uint32_t size, uint32_t n)
{
	uint64_t t0 = perf_now_ns();

	for (uint32_t i = 0; i < n; i++) {
		struct vb_mr *mr = vb_reg_mr(r->pd, buf, size, 0);
		if (!mr || vb_dereg_mr(mr))
			return -1;
	}
	return (double)(perf_now_ns() - t0) / 1000.0 / n;
}

/*
 * WSPRegisterMemory + WSPDeregisterMemory of one more buffer while live
 * handles are held: 64-byte pieces of one cached range, so the handles,
 * not the cache, are what grows.
 */
static double spi_handles_round(struct spi *s, char *area, uint32_t live, uint32_t n)
{
	void **held = calloc(live, sizeof(*held));
	double t = -1;
	uint64_t t0;
	int err;

	if (!held)
		return -1;
	for (uint32_t i = 0; i < live; i++)
		if (!(held[i] = s->sw.register_memory(s->c, area + (size_t)i * 64, 64, SP_MEM_READ,
						      &err)))
			goto out;
	t0 = perf_now_ns();
	for (uint32_t i = 0; i < n; i++) {
		void *h =
		    s->sw.register_memory(s->c, area + (size_t)live * 64, 64, SP_MEM_READ, &err);
		if (!h || s->sw.deregister_memory(s->c, h, &err))
			goto out;
	}
	t = (double)(perf_now_ns() - t0) / 1000.0 / n;
out:
	for (uint32_t i = 0; i < live && held[i]; i++)
		s->sw.deregister_memory(s->c, held[i], &err);
	free(held);
	return t;
}

/* WSPRegisterMemory + WSPDeregisterMemory of a buffer the cache holds. */
static double spi_reg_round(struct spi *s, char *buf, uint32_t size, uint32_t n)
{
	uint64_t t0 = perf_now_ns();
	int err;

	for (uint32_t i = 0; i < n; i++) {
		void *h = s->sw.register_memory(s->c, buf, size, SP_MEM_READ, &err);
		if (!h || s->sw.deregister_memory(s->c, h, &err))
			return -1;
	}
	return (double)(perf_now_ns() - t0) / 1000.0 / n;
}

/* WSPRegisterRdmaMemory + WSPDeregisterRdmaMemory of a buffer, as the switch's large transfers do.
 */
static double spi_rdma_reg_round(struct spi *s, char *buf, uint32_t size, uint32_t n)
{
	uint64_t t0 = perf_now_ns();
	uint8_t d[64];
	int err;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t len = sizeof(d);

		if (s->sw.register_rdma_memory(s->a, buf, size, SP_MEM_WRITE, d, &len, &err) ||
		    s->sw.deregister_rdma_memory(s->a, d, len, &err))
			return -1;
	}
	return (double)(perf_now_ns() - t0) / 1000.0 / n;
}

int main(int argc, char **argv)
{
	uint32_t n = 20000;
	int runs = 5, opt;
	double raw[NSIZES][16], pol[NSIZES][16], up[NSIZES][16], rreg[NREG][16], sreg[NREG][16],
	    dreg[NREG][16], live[NLIVE][16];
	char *regbuf = aligned_alloc(4096, REGLEN);
	char *area = aligned_alloc(4096, (LIVE_AREA + 4095) / 4096 * 4096);
	struct raw r;
	struct spi s;

	while ((opt = getopt(argc, argv, "r:n:h")) != -1) {
		switch (opt) {
		case 'r':
			runs = atoi(optarg);
			break;
		case 'n':
			n = (uint32_t)atoi(optarg);
			break;
		default:
			fprintf(stderr, "Usage: spi_bench [-r RUNS (1..16)] [-n ITERS]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (runs < 1 || runs > 16 || n < 1) {
		fprintf(stderr, "spi_bench: runs 1..16, iterations >= 1\n");
		return 2;
	}
	if (!regbuf || !area)
		return 1;
	memset(regbuf, 1, REGLEN);
	memset(area, 1, LIVE_AREA);
	/* Room for the most live handles measured (the default is 65,536). */
	setenv("SANPROV_SPI_MAX_MEM_HANDLES", "262144", 0);
	if (raw_open(&r) || spi_open(&s)) {
		fprintf(stderr, "spi_bench: cannot set up the connections: %s\n", strerror(errno));
		return 1;
	}
	for (int k = 0; k < runs; k++) {
		/* In turns, so that drift hits every column alike. */
		for (size_t i = 0; i < NSIZES; i++) {
			raw[i][k] = raw_round(&r, sizes[i], n);
			pol[i][k] = spi_round(&s, sizes[i], n, false);
			up[i][k] = spi_round(&s, sizes[i], n / 10 ? n / 10 : 1, true);
			if (raw[i][k] < 0 || pol[i][k] < 0 || up[i][k] < 0) {
				fprintf(stderr, "spi_bench: an RDMA write failed\n");
				return 1;
			}
		}
		for (size_t i = 0; i < NREG; i++) {
			uint32_t m = n / 10 ? n / 10 : 1;
			rreg[i][k] = raw_reg_round(&r, regbuf, reg_sizes[i], m);
			sreg[i][k] = spi_reg_round(&s, regbuf, reg_sizes[i], m);
			dreg[i][k] = spi_rdma_reg_round(&s, regbuf, reg_sizes[i], m);
			if (rreg[i][k] < 0 || sreg[i][k] < 0 || dreg[i][k] < 0) {
				fprintf(stderr, "spi_bench: a registration failed\n");
				return 1;
			}
		}
		for (size_t i = 0; i < NLIVE; i++) {
			live[i][k] =
			    spi_handles_round(&s, area, live_counts[i], n / 10 ? n / 10 : 1);
			if (live[i][k] < 0) {
				fprintf(stderr, "spi_bench: %u live handles: %s\n", live_counts[i],
					"a registration failed");
				return 1;
			}
		}
	}
	printf("RDMA write, one at a time, %s: the backend alone vs through the SAN SPI\n"
	       "(median of %d runs, usec per write; x = SPI / backend)\n",
	       s.sw.data.description, runs);
	printf("%8s %10s %14s %8s %14s %8s\n", "bytes", "backend", "SPI polled", "x", "SPI up-call",
	       "x");
	for (size_t i = 0; i < NSIZES; i++) {
		double a = perf_median(raw[i], runs), b = perf_median(pol[i], runs),
		       c = perf_median(up[i], runs);
		printf("%8u %10.2f %14.2f %8.2f %14.2f %8.2f\n", sizes[i], a, b, b / a, c, c / a);
	}
	printf("\nRegistering a buffer: the backend's registration + deregistration (no cache)\n"
	       "vs WSPRegisterMemory + WSPDeregisterMemory of a buffer the cache holds,\n"
	       "and WSPRegisterRdmaMemory + WSPDeregisterRdmaMemory of the same buffer\n"
	       "(median of %d runs, usec per pair; x = SPI / backend)\n",
	       runs);
	printf("%8s %10s %14s %8s %14s %8s\n", "bytes", "backend", "SPI cached", "x", "SPI RDMA",
	       "x");
	for (size_t i = 0; i < NREG; i++) {
		double a = perf_median(rreg[i], runs), b = perf_median(sreg[i], runs),
		       c = perf_median(dreg[i], runs);
		printf("%8u %10.2f %14.2f %8.2f %14.2f %8.2f\n", reg_sizes[i], a, b, b / a, c,
		       c / a);
	}
	printf("\nOne more WSPRegisterMemory + WSPDeregisterMemory with live handles held\n"
	       "(median of %d runs, usec per pair; x = against %u live)\n",
	       runs, live_counts[0]);
	printf("%10s %10s %8s\n", "live", "usec", "x");
	for (size_t i = 0; i < NLIVE; i++) {
		double a = perf_median(live[0], runs), b = perf_median(live[i], runs);
		printf("%10u %10.2f %8.2f\n", live_counts[i], b, b / a);
	}
	spi_close(&s);
	raw_close(&r);
	free(regbuf);
	free(area);
	return 0;
}
