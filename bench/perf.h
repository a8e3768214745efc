/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * perftest-style measurements over the verbs_backend data path, shared by
 * sanprov_perf (the command-line tool) and sanprov_limits (the side-by-side
 * comparison with memcpy and shared memory).
 */
#ifndef SANPROV_PERF_H
#define SANPROV_PERF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum perf_test { PERF_WRITE_LAT, PERF_READ_LAT, PERF_WRITE_BW, PERF_READ_BW, PERF_N_TESTS };

/* How latency tests register local buffers (perf_reg.h). */
enum perf_reg_mode { PERF_REG_ONCE, PERF_REG_OP, PERF_REG_CACHE, PERF_N_REGS };

struct perf_opts {
	enum perf_test test;
	const char *backend; /* NULL: $SANPROV_BACKEND or the default */
	const char *device;
	const char *server; /* client: the server's address; NULL: be the server */
	uint16_t port;
	uint32_t min_size, max_size; /* with all_sizes: powers of two from 2 to max_size */
	bool all_sizes;
	uint32_t iters;		   /* 0: the test's default */
	uint32_t tx_depth;	   /* outstanding WRs in bandwidth tests */
	bool private_mem;	   /* malloc'ed buffers instead of vb_buf_alloc() */
	enum perf_reg_mode reg;	   /* latency tests only; both sides follow the client */
	int port_fd;		   /* server: write the bound port here when >= 0 */
	const char *loopback_addr; /* perf_loopback: the address that reaches the server */
	bool quiet;
};

struct perf_row {
	uint32_t size;
	uint32_t iters;
	/* latency tests, microseconds */
	double t_min, t_max, t_typical, t_avg, t_stdev, t_p99, t_p999;
	/* bandwidth tests, MB/sec as perftest (2^20 bytes) and million messages/s */
	double bw_peak, bw_avg, msg_rate;
};

typedef void (*perf_row_fn)(const struct perf_opts *o, const struct perf_row *row, void *arg);

extern const char *const perf_test_names[PERF_N_TESTS];
extern const char *const perf_reg_names[PERF_N_REGS];
bool perf_is_lat(enum perf_test t);
uint32_t perf_default_iters(enum perf_test t);

/* Client side: run o->test for every size, calling fn for each row; 0 or errno. */
int perf_client(const struct perf_opts *o, perf_row_fn fn, void *arg);

/* Server side: serve one client's run, then return; 0 or errno. */
int perf_server(const struct perf_opts *o);

/* Fork a server for o on a free port, then run the client against it. */
int perf_loopback(const struct perf_opts *o, perf_row_fn fn, void *arg);

/* The message sizes of a run, in order; returns how many (at most max). */
unsigned int perf_sizes(const struct perf_opts *o, uint32_t *sizes, unsigned int max);

struct vb_device;
/*
 * A zeroed buffer for the data path: shared (vb_buf_alloc(), which a peer
 * process can map) or private (page-aligned heap); NULL with errno set.
 * perf_buf_free() takes the same dev, shared and len.
 */
void *perf_buf_alloc(struct vb_device *dev, bool shared, size_t len);
void perf_buf_free(struct vb_device *dev, bool shared, void *buf, size_t len);

/* The median of n values (sorts them in place). */
double perf_median(double *v, int n);

/* Monotonic time in nanoseconds. */
uint64_t perf_now_ns(void);

/*
 * Timed loops read a cycle counter, as perftest does: clock_gettime is a
 * system call where the clock source is not the TSC (an emulated HPET in
 * a VM costs microseconds a read).  Callers calibrate the counter against
 * perf_now_ns() over each timed loop.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static inline uint64_t perf_ticks(void)
{
	return __rdtsc();
}
#else
static inline uint64_t perf_ticks(void)
{
	return perf_now_ns();
}
#endif

#endif
