/* SPDX-License-Identifier: BSD-2-Clause */
/* Test helpers: a connected pair of QPs in one process, on one device. */
#ifndef SANPROV_TPAIR_H
#define SANPROV_TPAIR_H

#include <stdbool.h>
#include <stdint.h>

#include "tconn.h"
#include "tdev.h"
#include "twr.h"
#include "vb.h"

struct tside {
	struct vb_pd *pd;
	struct vb_cq *scq, *rcq;
	struct vb_qp *qp;
};

struct tpair {
	struct vb_device *dev;
	struct tside a, b; /* a connects, b accepts */
};

struct tpair_opts {
	uint32_t cqe;
	uint32_t max_send_wr, max_recv_wr;
	uint32_t max_inline;
	bool shared_pd;
	bool sq_sig_all;
};

/* Connect a (client) to b (server) on dev; asserts on failure. */
void tpair_init(struct tpair *p, struct vb_device *dev, const struct tpair_opts *o);
void tpair_fini(struct tpair *p);

/* Wait for exactly one completion on cq (5 s at most); asserts. */
struct vb_wc tpair_wait(struct vb_cq *cq);
/* Assert that cq stays empty for a short while. */
void tpair_expect_empty(struct vb_cq *cq);
/*
 * Poll qp's state until it is state or ms milliseconds have passed (a
 * device may move it asynchronously); the last state seen.  Asserts that
 * the queries succeed.
 */
enum vb_qp_state tpair_wait_qp_state(struct vb_qp *qp, enum vb_qp_state state, unsigned int ms);

/* A listener on a free port and its sockaddr. */
struct vb_listener *tlisten(struct vb_device *dev);

void fill_pattern(void *buf, size_t len, uint32_t seed);
bool check_pattern(const void *buf, size_t len, uint32_t seed);

#endif
