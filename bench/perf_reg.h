/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * How the latency tests register their local buffers: once for the whole
 * run (perftest's way), once per operation (register, post, wait for the
 * completion, deregister), or per operation through the registration cache
 * (sp_rcache watched by the kernel proxy, as the provider does).
 */
#ifndef SANPROV_PERF_REG_H
#define SANPROV_PERF_REG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "perf.h"
#include "vb.h"

struct sp_region;

/* Operations use local buffers from a ring of this many page-aligned slots. */
#define PERF_REG_SLOTS 16

struct perf_reg {
	enum perf_reg_mode mode;
	struct vb_device *dev;
	struct vb_pd *pd;
	uint8_t *slots;
	size_t slot_len;
	bool shared; /* slots from vb_buf_alloc() */
	struct kp_client *proxy;
	struct sp_watched *watched;
};

/* A local buffer for one operation and what must be released after it. */
struct perf_lbuf {
	uint8_t *addr;
	uint32_t lkey;
	struct vb_mr *mr;	  /* PERF_REG_OP */
	struct sp_region *region; /* PERF_REG_CACHE */
};

/* Slots for messages up to max_size; 0 or errno (with a message on stderr). */
int perf_reg_open(struct perf_reg *r, enum perf_reg_mode mode, struct vb_device *dev,
		  struct vb_pd *pd, size_t max_size, bool shared);
void perf_reg_close(struct perf_reg *r);

/* The buffer of operation k, registered for size bytes; 0 or errno. */
int perf_reg_get(struct perf_reg *r, uint32_t k, uint32_t size, struct perf_lbuf *b);

/* After the operation's completion. */
void perf_reg_put(struct perf_reg *r, struct perf_lbuf *b);

/* The cache's hit and miss counts (PERF_REG_CACHE), for the report. */
void perf_reg_report(struct perf_reg *r, FILE *f);

#endif
