/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The measurements of sanprov_perf, modelled on perftest:
 *   write_lat  RDMA-write ping-pong; each side polls the last byte of its
 *              receive area, half the round trip is the latency;
 *   read_lat   one RDMA read at a time, post to completion;
 *   write_bw / read_bw  tx_depth operations in flight, every cq_mod-th
 *              signaled; bandwidth from the first post to the last completion.
 *
 * Each side has one buffer of two halves, a receive area (what the peer
 * writes or reads) and a send area.  The client's parameters and both
 * buffers' addresses and keys travel in the connection's private data.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "perf.h"
#include "perf_reg.h"
#include "perf_stats.h"
#include "vb.h"

#define PERF_MAGIC 0x53505046u /* "SPPF" */
#define PERF_VERSION 2
#define PERF_MAX_SIZES 40
#define PERF_CQ_MOD 64
#define PERF_TIMEOUT_MS 600000

const char *const perf_test_names[PERF_N_TESTS] = {
	[PERF_WRITE_LAT] = "write_lat",
	[PERF_READ_LAT] = "read_lat",
	[PERF_WRITE_BW] = "write_bw",
	[PERF_READ_BW] = "read_bw",
};

/* Connection private data, both directions (fits the 56 bytes of a CM REQ). */
struct perf_wire {
	uint32_t magic;
	uint8_t version;
	uint8_t test;
	uint8_t all_sizes;
	uint8_t reg; /* enum perf_reg_mode */
	uint32_t iters;
	uint32_t min_size;
	uint32_t max_size;
	uint32_t rkey;
	uint64_t addr; /* the receive area */
	uint64_t len;  /* its length */
};

struct perf_ctx {
	struct vb_device *dev;
	struct vb_pd *pd;
	struct vb_cq *cq;
	struct vb_qp *qp;
	uint8_t *buf;
	size_t half; /* receive area [0, half), send area [half, 2 * half) */
	bool shared;
	struct vb_mr *mr;
	uint32_t ctl[4];
	struct vb_mr *ctl_mr;
	uint32_t max_inline;
	uint32_t cq_mod;
	bool bye_seen; /* the client's goodbye arrived (the CQ is shared) */
	struct perf_wire peer;
	struct perf_reg reg;
};

bool perf_is_lat(enum perf_test t)
{
	return t == PERF_WRITE_LAT || t == PERF_READ_LAT;
}

uint32_t perf_default_iters(enum perf_test t)
{
	return perf_is_lat(t) ? 1000 : 5000;
}

uint64_t perf_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

unsigned int perf_sizes(const struct perf_opts *o, uint32_t *sizes, unsigned int max)
{
	unsigned int n = 0;

	if (!o->all_sizes) {
		sizes[n++] = o->max_size;
		return n;
	}
	for (uint64_t s = o->min_size ? o->min_size : 2; s <= o->max_size && n < max; s *= 2)
		sizes[n++] = (uint32_t)s;
	return n;
}

static uint8_t *recv_area(struct perf_ctx *c)
{
	return c->buf;
}

static uint8_t *send_area(struct perf_ctx *c)
{
	return c->buf + c->half;
}

void *perf_buf_alloc(struct vb_device *dev, bool shared, size_t len)
{
	void *buf = shared ? vb_buf_alloc(dev, len) : aligned_alloc(4096, len);

	if (!buf) {
		if (!errno)
			errno = ENOMEM;
		return NULL;
	}
	memset(buf, 0, len);
	return buf;
}

void perf_buf_free(struct vb_device *dev, bool shared, void *buf, size_t len)
{
	if (!buf)
		return;
	if (shared)
		vb_buf_free(dev, buf, len);
	else
		free(buf);
}

static void ctx_close(struct perf_ctx *c)
{
	if (c->qp)
		vb_destroy_qp(c->qp);
	perf_reg_close(&c->reg);
	if (c->mr)
		vb_dereg_mr(c->mr);
	if (c->ctl_mr)
		vb_dereg_mr(c->ctl_mr);
	perf_buf_free(c->dev, c->shared, c->buf, 2 * c->half);
	if (c->cq)
		vb_destroy_cq(c->cq);
	if (c->pd)
		vb_dealloc_pd(c->pd);
	if (c->dev)
		vb_close_device(c->dev);
}

static int fail(const char *step, int ret)
{
	fprintf(stderr, "sanprov_perf: %s: %s\n", step, strerror(ret));
	return ret;
}

static int ctx_open(struct perf_ctx *c, const struct perf_opts *o, size_t half, uint32_t tx_depth)
{
	struct vb_device_attr da;
	struct vb_qp_init_attr attr = { 0 };
	int ret;

	memset(c, 0, sizeof(*c));
	c->dev = vb_open_device(o->backend, o->device);
	if (!c->dev)
		return fail("open device", errno);
	ret = vb_query_device(c->dev, &da);
	if (ret)
		goto err;
	c->half = half;
	c->shared = !o->private_mem;
	c->buf = perf_buf_alloc(c->dev, c->shared, 2 * half);
	if (!c->buf) {
		ret = errno;
		goto err;
	}
	c->max_inline = da.max_inline_data < 220 ? da.max_inline_data : 220;
	c->cq_mod = tx_depth < 2 * PERF_CQ_MOD ? (tx_depth + 1) / 2 : PERF_CQ_MOD;
	c->pd = vb_alloc_pd(c->dev);
	c->cq = c->pd ? vb_create_cq(c->dev, (int)(tx_depth + 16)) : NULL;
	if (!c->cq) {
		ret = fail("PD or CQ", errno);
		goto err;
	}
	c->mr = vb_reg_mr(c->pd, c->buf, 2 * half, VB_ACCESS_ALL);
	c->ctl_mr = c->mr ? vb_reg_mr(c->pd, c->ctl, sizeof(c->ctl), VB_ACCESS_LOCAL_WRITE) : NULL;
	if (!c->ctl_mr) {
		ret = fail("register memory", errno);
		goto err;
	}
	attr.send_cq = attr.recv_cq = c->cq;
	attr.cap.max_send_wr = tx_depth + 4;
	attr.cap.max_recv_wr = 4;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	attr.cap.max_inline_data = c->max_inline;
	c->qp = vb_create_qp(c->pd, &attr);
	if (!c->qp) {
		ret = fail("create QP", errno);
		goto err;
	}
	return 0;
err:
	ctx_close(c);
	return ret;
}

static void wire_fill(struct perf_ctx *c, const struct perf_opts *o, struct perf_wire *w)
{
	*w = (struct perf_wire){ .magic = PERF_MAGIC,
				 .version = PERF_VERSION,
				 .test = (uint8_t)o->test,
				 .all_sizes = o->all_sizes,
				 .reg = (uint8_t)o->reg,
				 .iters = o->iters,
				 .min_size = o->min_size,
				 .max_size = o->max_size,
				 .rkey = c->mr->rkey,
				 .addr = (uintptr_t)recv_area(c),
				 .len = c->half };
}

static int wire_take(struct perf_ctx *c)
{
	if (c->qp->peer_private_data_len < sizeof(c->peer))
		return EPROTO;
	memcpy(&c->peer, c->qp->peer_private_data, sizeof(c->peer));
	if (c->peer.magic != PERF_MAGIC || c->peer.version != PERF_VERSION ||
	    c->peer.test >= PERF_N_TESTS || c->peer.reg >= PERF_N_REGS ||
	    (c->peer.reg != PERF_REG_ONCE && !perf_is_lat(c->peer.test)))
		return EPROTO;
	return 0;
}

/* Reap send completions; wait for at least min of them. */
static int reap(struct perf_ctx *c, uint32_t min, uint32_t *got)
{
	struct vb_wc wc[16];
	int n, ret;

	*got = 0;
	do {
		ret = vb_poll_cq(c->cq, 16, wc, &n);
		if (ret)
			return ret;
		for (int i = 0; i < n; i++) {
			if (wc[i].status != VB_WC_SUCCESS) {
				fprintf(stderr, "sanprov_perf: work completion: %s (vendor %u)\n",
					vb_wc_status_str(wc[i].status), wc[i].vendor_err);
				return EIO;
			}
			if (wc[i].opcode != VB_WC_RECV)
				(*got)++;
			else
				c->bye_seen = true;
		}
	} while (*got < min);
	return 0;
}

static int post_one(struct perf_ctx *c, enum vb_wr_opcode op, void *local, uint32_t lkey,
		    uint32_t len, uint64_t raddr, bool signaled)
{
	struct vb_sge sge = { .addr = (uintptr_t)local, .length = len, .lkey = lkey };
	struct vb_send_wr wr = { .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = op,
				 .send_flags = signaled ? VB_SEND_SIGNALED : 0,
				 .remote_addr = raddr,
				 .rkey = c->peer.rkey },
			  *bad;

	if (op == VB_WR_RDMA_WRITE && len <= c->max_inline)
		wr.send_flags |= VB_SEND_INLINE;
	return vb_post_send(c->qp, &wr, &bad);
}

static uint8_t flag_of(uint32_t k)
{
	return (uint8_t)(k % 255 + 1);
}

/* Spin until *p == v; now and then make sure the peer is still there. */
static int spin_for(struct perf_ctx *c, volatile uint8_t *p, uint8_t v)
{
	for (uint32_t i = 1; *p != v; i++) {
		enum vb_qp_state st;
		if (!(i & 0xfffff) && (vb_query_qp(c->qp, &st) || st == VB_QPS_ERR))
			return ECONNRESET;
	}
	atomic_thread_fence(memory_order_acquire);
	return 0;
}

/*
 * The local buffer of operation k: the send area under the one registration
 * of the run, or a slot registered for this operation alone.
 */
static int lbuf_get(struct perf_ctx *c, uint32_t k, uint32_t size, struct perf_lbuf *b)
{
	if (c->reg.mode == PERF_REG_ONCE) {
		*b = (struct perf_lbuf){ .addr = send_area(c), .lkey = c->mr->lkey };
		return 0;
	}
	return perf_reg_get(&c->reg, k, size, b);
}

/*
 * Latency samples come as perftest takes them: one clock reading per
 * iteration, a sample is the time from one reading to the next.  A clock
 * read is costly on some hosts (emulated ones above all); reading twice per
 * iteration would count it twice.
 *
 * One side of the write ping-pong.  The client writes first and times the
 * round trip; the server answers each message.  Unsignaled writes are
 * reaped every cq_mod iterations; a buffer registered per operation is
 * released after its own completion, so then every write is signaled.
 */
static int write_pingpong(struct perf_ctx *c, uint32_t size, uint32_t n, bool client, double *lat)
{
	volatile uint8_t *in = recv_area(c) + size - 1;
	bool per_op = c->reg.mode != PERF_REG_ONCE;
	struct perf_lbuf b;
	uint32_t outstanding = 0, got;
	uint64_t prev = client ? perf_ticks() : 0, t1 = 0;
	int ret;

	for (uint32_t k = 0; k < n; k++) {
		uint8_t v = flag_of(k);
		bool sig = per_op || (k + 1) % c->cq_mod == 0;

		if (!client && (ret = spin_for(c, in, v)))
			return ret;
		ret = lbuf_get(c, k, size, &b);
		if (ret)
			return ret;
		b.addr[size - 1] = v;
		ret = post_one(c, VB_WR_RDMA_WRITE, b.addr, b.lkey, size, c->peer.addr, sig);
		if (ret)
			goto err_put;
		outstanding++;
		if (client) {
			ret = spin_for(c, in, v);
			if (ret)
				goto err_put;
			t1 = perf_ticks();
		}
		if (sig) {
			ret = reap(c, 1, &got);
			if (ret)
				goto err_put;
			outstanding = 0;
		}
		if (per_op) {
			perf_reg_put(&c->reg, &b);
			if (client)
				t1 = perf_ticks(); /* the release is part of the operation */
		}
		if (lat)
			lat[k] = (double)(t1 - prev) / 2.0;
		prev = t1;
	}
	/* The rest were unsignaled: one signaled zero-byte write retires them. */
	if (outstanding) {
		ret =
		    post_one(c, VB_WR_RDMA_WRITE, send_area(c), c->mr->lkey, 0, c->peer.addr, true);
		if (!ret)
			ret = reap(c, 1, &got);
	}
	return ret;
err_put:
	/* The run ends here and the QP is destroyed next, so nothing outlives b. */
	if (per_op)
		perf_reg_put(&c->reg, &b);
	return ret;
}

static int read_lat(struct perf_ctx *c, uint32_t size, uint32_t n, double *lat)
{
	bool per_op = c->reg.mode != PERF_REG_ONCE;
	struct perf_lbuf b;
	uint64_t prev = perf_ticks(), now;
	uint32_t got;
	int ret;

	for (uint32_t k = 0; k < n; k++) {
		ret = lbuf_get(c, k, size, &b);
		if (ret)
			return ret;
		ret = post_one(c, VB_WR_RDMA_READ, b.addr, b.lkey, size, c->peer.addr, true);
		if (!ret)
			ret = reap(c, 1, &got);
		if (per_op)
			perf_reg_put(&c->reg, &b);
		if (ret)
			return ret;
		now = perf_ticks();
		if (lat)
			lat[k] = (double)(now - prev);
		prev = now;
	}
	return 0;
}

/* tx_depth operations in flight until n complete; every cq_mod-th is signaled. */
static int pipeline(struct perf_ctx *c, enum vb_wr_opcode op, uint32_t size, uint32_t n,
		    uint32_t tx_depth)
{
	uint8_t *local = op == VB_WR_RDMA_READ ? recv_area(c) : send_area(c);
	uint32_t posted = 0, done = 0, got;
	int ret;

	while (done < n) {
		while (posted < n && posted - done < tx_depth) {
			bool sig = (posted + 1) % c->cq_mod == 0 || posted + 1 == n;
			ret = post_one(c, op, local, c->mr->lkey, size, c->peer.addr, sig);
			if (ret)
				return ret;
			posted++;
		}
		ret = reap(c, 1, &got);
		if (ret)
			return ret;
		for (uint32_t i = 0; i < got; i++)
			done += n - done < c->cq_mod ? n - done : c->cq_mod;
	}
	return 0;
}

/*
 * Bandwidth over the whole run (average) and over the best of 8 equal
 * chunks timed one after the other (peak).
 */
static int bandwidth(struct perf_ctx *c, enum vb_wr_opcode op, uint32_t size, uint32_t n,
		     uint32_t tx_depth, struct perf_row *row)
{
	uint32_t chunks = n >= 8 * c->cq_mod ? 8 : 1, left = n;
	uint64_t t0 = perf_now_ns(), best = UINT64_MAX;
	uint32_t best_n = n;
	double secs;
	int ret;

	for (uint32_t k = 0; k < chunks; k++) {
		uint32_t cn = k + 1 == chunks ? left : n / chunks;
		uint64_t start = perf_now_ns(), t;

		ret = pipeline(c, op, size, cn, tx_depth);
		if (ret)
			return ret;
		t = perf_now_ns() - start;
		/* Compare rates, not times: the last chunk may be longer. */
		if (best == UINT64_MAX || (double)cn / (double)t > (double)best_n / (double)best) {
			best = t;
			best_n = cn;
		}
		left -= cn;
	}
	secs = (double)(perf_now_ns() - t0) / 1e9;
	row->bw_avg = (double)size * n / secs / 0x100000;
	row->msg_rate = n / secs / 1e6;
	row->bw_peak = (double)size * best_n / ((double)best / 1e9) / 0x100000;
	return 0;
}

static void progress(const struct perf_opts *o, unsigned int i, unsigned int n, uint64_t t0,
		     uint64_t *last)
{
	uint64_t now = perf_now_ns();

	if (o->quiet || n < 2 || now - *last < 1000000000u)
		return;
	*last = now;
	fprintf(stderr, "sanprov_perf: %s %u/%u sizes done, %.1f s\n", perf_test_names[o->test], i,
		n, (double)(now - t0) / 1e9);
}

static int run_client(struct perf_ctx *c, const struct perf_opts *o, perf_row_fn fn, void *arg)
{
	uint32_t sizes[PERF_MAX_SIZES];
	unsigned int nsizes = perf_sizes(o, sizes, PERF_MAX_SIZES);
	uint32_t iters = o->iters ? o->iters : perf_default_iters(o->test);
	uint32_t warm = perf_is_lat(o->test) ? (iters / 10 > 10 ? iters / 10 : 10) : 0;
	uint32_t tx = o->tx_depth;
	double *lat = NULL;
	uint64_t start = perf_now_ns(), last = start;
	int ret = 0;

	if (perf_is_lat(o->test) && !(lat = calloc(iters, sizeof(*lat))))
		return ENOMEM;
	for (unsigned int i = 0; i < nsizes && !ret; i++) {
		struct perf_row row = { .size = sizes[i], .iters = iters };
		uint64_t ns0 = 0, tk0 = 0;
		switch (o->test) {
		case PERF_WRITE_LAT:
			/* The server answers warm + iters messages: both know the count. */
			ret = write_pingpong(c, sizes[i], warm, true, NULL);
			ns0 = perf_now_ns(), tk0 = perf_ticks();
			if (!ret)
				ret = write_pingpong(c, sizes[i], iters, true, lat);
			break;
		case PERF_READ_LAT:
			ret = read_lat(c, sizes[i], warm, NULL);
			ns0 = perf_now_ns(), tk0 = perf_ticks();
			if (!ret)
				ret = read_lat(c, sizes[i], iters, lat);
			break;
		case PERF_WRITE_BW:
		case PERF_READ_BW:
			ret = bandwidth(
			    c, o->test == PERF_WRITE_BW ? VB_WR_RDMA_WRITE : VB_WR_RDMA_READ,
			    sizes[i], iters, tx, &row);
			break;
		default:
			ret = EINVAL;
		}
		if (ret)
			break;
		if (lat) {
			/* Samples are in ticks: microseconds per tick over this loop. */
			uint64_t tk = perf_ticks() - tk0, ns = perf_now_ns() - ns0;
			double us_per_tick = tk ? (double)ns / 1000.0 / (double)tk : 0;

			for (uint32_t k = 0; k < iters; k++)
				lat[k] *= us_per_tick;
			perf_lat_stats(lat, iters, &row);
		}
		fn(o, &row, arg);
		progress(o, i + 1, nsizes, start, &last);
	}
	free(lat);
	return ret;
}

/* The client says goodbye with a send; the server waits for it. */
static int say_bye(struct perf_ctx *c)
{
	struct vb_sge sge = { (uintptr_t)c->ctl, 4, c->ctl_mr->lkey };
	struct vb_send_wr wr = { .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = VB_WR_SEND,
				 .send_flags = VB_SEND_SIGNALED },
			  *bad;
	uint32_t got;
	int ret;

	c->ctl[0] = PERF_MAGIC;
	ret = vb_post_send(c->qp, &wr, &bad);
	return ret ? ret : reap(c, 1, &got);
}

static int wait_bye(struct perf_ctx *c)
{
	while (!c->bye_seen) {
		struct vb_wc wc;
		int n, ret = vb_cq_wait(c->cq, 1, &wc, &n, PERF_TIMEOUT_MS);

		if (ret)
			return ret;
		if (wc.status != VB_WC_SUCCESS)
			return EIO;
		if (wc.opcode == VB_WC_RECV)
			c->bye_seen = true;
	}
	return c->ctl[0] == PERF_MAGIC ? 0 : EPROTO;
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
	char service[8];

	snprintf(service, sizeof(service), "%u", port);
	if (getaddrinfo(host, service, &hints, &res))
		return EHOSTUNREACH;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int perf_client(const struct perf_opts *o, perf_row_fn fn, void *arg)
{
	struct perf_ctx c;
	struct perf_wire w;
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct vb_conn_param param = { .private_data = &w,
				       .private_data_len = sizeof(w),
				       .timeout_ms = 10000 };
	int ret;

	ret = resolve(o->server, o->port, &ss, &sslen);
	if (ret)
		return ret;
	ret = ctx_open(&c, o, o->max_size, o->tx_depth);
	if (ret)
		return ret;
	ret = perf_reg_open(&c.reg, o->reg, c.dev, c.pd, o->max_size, c.shared);
	if (ret) {
		ctx_close(&c);
		return ret;
	}
	wire_fill(&c, o, &w);
	ret = vb_connect(c.qp, (struct sockaddr *)&ss, sslen, &param);
	if (ret)
		fail("connect", ret);
	else
		ret = wire_take(&c);
	if (!ret && c.peer.len < o->max_size) {
		fprintf(stderr,
			"sanprov_perf: the server's buffer holds %llu bytes; run it with -s %u\n",
			(unsigned long long)c.peer.len, o->max_size);
		ret = EMSGSIZE;
	}
	if (!ret)
		ret = run_client(&c, o, fn, arg);
	if (!ret)
		ret = say_bye(&c);
	if (!ret && !o->quiet)
		perf_reg_report(&c.reg, stderr);
	ctx_close(&c);
	return ret;
}

int perf_server(const struct perf_opts *o)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(o->port) };
	struct perf_ctx c;
	struct perf_wire w;
	struct vb_conn_param param = { .private_data = &w,
				       .private_data_len = sizeof(w),
				       .timeout_ms = -1 };
	struct vb_recv_wr rwr = { .num_sge = 1 }, *rbad;
	struct vb_sge rsge;
	struct vb_listener *l;
	int ret;

	ret = ctx_open(&c, o, o->max_size, o->tx_depth);
	if (ret)
		return ret;
	rsge = (struct vb_sge){ (uintptr_t)c.ctl, sizeof(c.ctl), c.ctl_mr->lkey };
	rwr.sg_list = &rsge;
	ret = vb_post_recv(c.qp, &rwr, &rbad);
	if (ret)
		goto out;
	l = vb_create_listener(c.dev, (struct sockaddr *)&sin6, sizeof(sin6), 1);
	if (!l) {
		ret = fail("listen", errno);
		goto out;
	}
	if (o->port_fd >= 0) {
		uint16_t port = ntohs(((struct sockaddr_in6 *)&l->addr)->sin6_port);
		if (write(o->port_fd, &port, sizeof(port)) != sizeof(port))
			ret = EIO;
	}
	wire_fill(&c, o, &w);
	if (!ret && (ret = vb_accept(l, c.qp, &param)))
		fail("accept", ret);
	vb_destroy_listener(l);
	if (!ret)
		ret = wire_take(&c);
	if (!ret)
		ret = perf_reg_open(&c.reg, (enum perf_reg_mode)c.peer.reg, c.dev, c.pd,
				    c.peer.max_size < c.half ? c.peer.max_size : c.half, c.shared);
	if (!ret && c.peer.test == PERF_WRITE_LAT) {
		struct perf_opts co = *o;
		uint32_t sizes[PERF_MAX_SIZES], iters = c.peer.iters;

		co.all_sizes = c.peer.all_sizes;
		co.min_size = c.peer.min_size;
		co.max_size = c.peer.max_size;
		if (!iters)
			iters = perf_default_iters(PERF_WRITE_LAT);
		uint32_t warm = iters / 10 > 10 ? iters / 10 : 10;
		unsigned int n = perf_sizes(&co, sizes, PERF_MAX_SIZES);
		for (unsigned int i = 0; i < n && !ret; i++) {
			if (sizes[i] > c.half) {
				ret = EMSGSIZE;
				break;
			}
			ret = write_pingpong(&c, sizes[i], warm, false, NULL);
			if (!ret)
				ret = write_pingpong(&c, sizes[i], iters, false, NULL);
		}
	}
	/* Read and bandwidth tests need nothing of the server: it waits for the bye. */
	if (!ret)
		ret = wait_bye(&c);
out:
	ctx_close(&c);
	return ret;
}

int perf_loopback(const struct perf_opts *o, perf_row_fn fn, void *arg)
{
	struct perf_opts so = *o, co = *o;
	int fds[2], status, ret;
	uint16_t port;
	pid_t pid;

	if (pipe(fds))
		return errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return errno;
	if (!pid) {
		close(fds[0]);
		so.port = 0;
		so.port_fd = fds[1];
		so.server = NULL;
		ret = perf_server(&so);
		if (ret)
			fprintf(stderr, "sanprov_perf server: %s\n", strerror(ret));
		_exit(ret ? 1 : 0);
	}
	close(fds[1]);
	if (read(fds[0], &port, sizeof(port)) != sizeof(port)) {
		close(fds[0]);
		waitpid(pid, &status, 0);
		return ECONNREFUSED;
	}
	close(fds[0]);
	co.server = o->loopback_addr ? o->loopback_addr : "127.0.0.1";
	co.port = port;
	ret = perf_client(&co, fn, arg);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		ret = ret ? ret : EIO;
	return ret;
}
