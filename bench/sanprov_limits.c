/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_limits: the backend's figures next to the physical limits of
 * this host, measured in the same run, as ratios.
 *
 *   RDMA write bandwidth at 1 MiB between two processes
 *       vs single-thread memcpy bandwidth of 1 MiB buffers      (goal >= 0.8)
 *   8-byte RDMA-write ping-pong latency between two processes
 *       vs a raw shared-memory ping-pong between two processes  (goal <= 2)
 *
 * Each figure is the median of --runs runs; the backend is measured with
 * shared buffers (vb_buf_alloc) and with private (malloc) memory.
 */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"
#include "vb.h"

#define MIB (1u << 20)

/* memcpy bandwidth in MB/sec (2^20), one thread, 1 MiB buffers reused as RDMA reuses them. */
static double memcpy_bw(uint32_t iters)
{
	char *src = aligned_alloc(4096, MIB), *dst = aligned_alloc(4096, MIB);
	uint64_t t0, t1;

	memset(src, 1, MIB);
	memset(dst, 2, MIB);
	for (int i = 0; i < 16; i++) /* warm-up */
		memcpy(dst, src, MIB);
	t0 = perf_now_ns();
	for (uint32_t i = 0; i < iters; i++) {
		memcpy(dst, src, MIB);
		/* Keep the compiler from dropping or merging the copies. */
		__asm__ volatile("" : : "r"(dst) : "memory");
	}
	t1 = perf_now_ns();
	free(src);
	free(dst);
	return (double)iters * MIB / ((double)(t1 - t0) / 1e9) / MIB;
}

/*
 * Raw ping-pong between two processes through one shared page: each side
 * stores a counter into the other's cache line and spins on its own.
 * Returns the median half round trip in microseconds.
 */
static double shm_pingpong(uint32_t iters)
{
	_Atomic uint64_t *shm =
	    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	_Atomic uint64_t *ping, *pong;
	double *lat;
	uint32_t warm = iters / 10;
	pid_t pid;

	if (shm == MAP_FAILED)
		return -1;
	ping = &shm[0];
	pong = &shm[16]; /* another cache line */
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		for (uint64_t k = 1; k <= warm + iters; k++) {
			while (atomic_load_explicit(ping, memory_order_acquire) != k)
				;
			atomic_store_explicit(pong, k, memory_order_release);
		}
		_exit(0);
	}
	lat = calloc(iters, sizeof(*lat));
	for (uint64_t k = 1; k <= warm + iters; k++) {
		uint64_t t0 = perf_now_ns();

		atomic_store_explicit(ping, k, memory_order_release);
		while (atomic_load_explicit(pong, memory_order_acquire) != k)
			;
		if (k > warm)
			lat[k - warm - 1] = (double)(perf_now_ns() - t0) / 2000.0;
	}
	waitpid(pid, NULL, 0);
	munmap((void *)shm, 4096);
	double m = perf_median(lat, (int)iters);
	free(lat);
	return m;
}

struct grab {
	struct perf_row row;
};

static void keep_row(const struct perf_opts *o, const struct perf_row *row, void *arg)
{
	(void)o;
	((struct grab *)arg)->row = *row;
}

static int run_backend(struct perf_opts *o, enum perf_test test, uint32_t size, uint32_t iters,
		       struct perf_row *row)
{
	struct grab g;
	int ret;

	o->test = test;
	o->min_size = o->max_size = size;
	o->all_sizes = false;
	o->iters = iters;
	ret = perf_loopback(o, keep_row, &g);
	if (!ret)
		*row = g.row;
	return ret;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: sanprov_limits [-b BACKEND] [-d DEVICE] [-r RUNS] [-q]\n"
		   "  Prints the backend's RDMA write bandwidth (1 MiB) and 8-byte ping-pong\n"
		   "  latency between two processes next to memcpy and shared-memory limits.\n");
}

int main(int argc, char **argv)
{
	struct perf_opts base = { .tx_depth = 128, .port_fd = -1, .quiet = true };
	int runs = 5, opt;
	double mc[16], shm[16], bw[2][16], lat[2][16];

	while ((opt = getopt(argc, argv, "b:d:r:qh")) != -1) {
		switch (opt) {
		case 'b':
			base.backend = optarg;
			break;
		case 'd':
			base.device = optarg;
			break;
		case 'r':
			runs = atoi(optarg);
			if (runs < 1 || runs > 16) {
				fprintf(stderr, "sanprov_limits: runs must be 1..16\n");
				return 2;
			}
			break;
		case 'q':
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	for (int r = 0; r < runs; r++) {
		mc[r] = memcpy_bw(2000);
		shm[r] = shm_pingpong(20000);
		for (int m = 0; m < 2; m++) {
			struct perf_opts o = base;
			struct perf_row row;
			int ret;

			o.private_mem = m == 1;
			ret = run_backend(&o, PERF_WRITE_BW, MIB, 2000, &row);
			if (!ret) {
				bw[m][r] = row.bw_avg;
				ret = run_backend(&o, PERF_WRITE_LAT, 8, 20000, &row);
			}
			if (ret) {
				fprintf(stderr, "sanprov_limits: %s memory: %s\n",
					m ? "private" : "shared", strerror(ret));
				return 1;
			}
			lat[m][r] = row.t_typical;
		}
		fprintf(stderr, "sanprov_limits: run %d/%d done\n", r + 1, runs);
	}

	double mcm = perf_median(mc, runs), shmm = perf_median(shm, runs);
	const char *backend = base.backend ? base.backend : vb_backend_find(NULL)->name;

	printf("Backend %s, median of %d runs, two processes on this host\n", backend, runs);
	printf("%-46s %14s %14s %8s %8s\n", "measure", "backend", "limit", "ratio", "goal");
	for (int m = 0; m < 2; m++) {
		double b = perf_median(bw[m], runs), l = perf_median(lat[m], runs);
		char what[64];

		snprintf(what, sizeof(what), "RDMA write BW 1 MiB [MB/s], %s memory",
			 m ? "private" : "shared");
		printf("%-46s %14.0f %14.0f %8.2f %8s\n", what, b, mcm, b / mcm, ">= 0.80");
		snprintf(what, sizeof(what), "8 B write ping-pong [usec], %s memory",
			 m ? "private" : "shared");
		printf("%-46s %14.3f %14.3f %8.2f %8s\n", what, l, shmm, l / shmm, "<= 2.00");
	}
	printf("limits: single-thread memcpy of 1 MiB; shared-memory ping-pong half round trip\n");
	return 0;
}
