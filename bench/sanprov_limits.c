/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_limits: the backend's figures next to the physical limits of
 * this host, measured in the same run, as ratios.
 *
 *   RDMA write bandwidth at 1 MiB between two processes (goal >= 0.8)
 *       shared memory: vs single-thread memcpy over a working set larger
 *       than the caches, and (for reference) vs memcpy of the very 1 MiB
 *       buffers, cache-hot as the benchmark's are;
 *       private memory: vs raw process_vm_writev of 1 MiB, what
 *       cross-memory attach allows.
 *   8-byte RDMA-write ping-pong latency between two processes (goal <= 2)
 *       shared memory: vs a raw shared-memory ping-pong;
 *       private memory: vs a ping-pong of process_vm_writev calls.
 *
 * Each figure is the median of --runs runs; the backend is measured with
 * shared buffers (vb_buf_alloc) and with private (malloc) memory.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
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

/* The same over 64 MiB each way, copied 1 MiB at a time in turn: out of the caches. */
static double memcpy_cold_bw(uint32_t iters)
{
	const size_t n = 64;
	char *src = aligned_alloc(4096, n * MIB), *dst = aligned_alloc(4096, n * MIB);
	uint64_t t0, t1;

	if (!src || !dst)
		return -1;
	memset(src, 1, n * MIB);
	memset(dst, 2, n * MIB);
	t0 = perf_now_ns();
	for (uint32_t i = 0; i < iters; i++) {
		memcpy(dst + (i % n) * MIB, src + (i % n) * MIB, MIB);
		__asm__ volatile("" : : "r"(dst) : "memory");
	}
	t1 = perf_now_ns();
	free(src);
	free(dst);
	return (double)iters * MIB / ((double)(t1 - t0) / 1e9) / MIB;
}

/*
 * Raw process_vm_writev of 1 MiB from this process's private memory into a
 * child's (the buffer is at the same address there): MB/sec.
 */
static double pvm_bw(uint32_t iters)
{
	char *src = aligned_alloc(4096, MIB), *dst = aligned_alloc(4096, MIB);
	struct iovec l = { src, MIB }, r = { dst, MIB };
	int go[2], ok = 1;
	uint64_t t0 = 0, t1;
	char c;
	pid_t pid;

	if (!src || !dst || pipe(go))
		return -1;
	memset(src, 1, MIB);
	memset(dst, 2, MIB);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(go[1]);
		(void)!read(go[0], &c, 1); /* until the parent is done */
		_exit(0);
	}
	close(go[0]);
	for (uint32_t i = 0; i < 16 + iters && ok; i++) {
		if (i == 16)
			t0 = perf_now_ns();
		ok = process_vm_writev(pid, &l, 1, &r, 1, 0) == (ssize_t)MIB;
	}
	t1 = perf_now_ns();
	close(go[1]);
	waitpid(pid, NULL, 0);
	free(src);
	free(dst);
	return ok ? (double)iters * MIB / ((double)(t1 - t0) / 1e9) / MIB : -1;
}

/*
 * Ping-pong between two processes in private memory: each side writes a
 * counter into the other's memory with process_vm_writev and spins on its
 * own.  The median half round trip in microseconds.
 */
static double pvm_pingpong(uint32_t iters)
{
	_Atomic uint64_t *word = aligned_alloc(64, 64); /* same address in both */
	uint32_t warm = iters / 10;
	double *lat = calloc(iters, sizeof(*lat));
	pid_t parent = getpid(), pid;
	int ok = 1;

	if (!word || !lat)
		return -1;
	atomic_store(word, 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		for (uint64_t k = 1; k <= warm + iters; k++) {
			struct iovec l = { &k, sizeof(k) }, r = { (void *)word, sizeof(k) };

			while (atomic_load_explicit(word, memory_order_acquire) != k)
				;
			if (process_vm_writev(parent, &l, 1, &r, 1, 0) != sizeof(k))
				_exit(1);
		}
		_exit(0);
	}
	/* Under Yama's restricted ptrace the child may write here only when named. */
	prctl(PR_SET_PTRACER, pid, 0, 0, 0);
	for (uint64_t k = 1; k <= warm + iters && ok; k++) {
		struct iovec l = { &k, sizeof(k) }, r = { (void *)word, sizeof(k) };
		uint64_t t0 = perf_now_ns();

		ok = process_vm_writev(pid, &l, 1, &r, 1, 0) == sizeof(k);
		while (ok && atomic_load_explicit(word, memory_order_acquire) != k)
			;
		if (k > warm)
			lat[k - warm - 1] = (double)(perf_now_ns() - t0) / 2000.0;
	}
	if (!ok)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	double m = ok ? perf_median(lat, (int)iters) : -1;
	free(lat);
	free((void *)word);
	return m;
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
	fprintf(f,
		"Usage: sanprov_limits [-b BACKEND] [-d DEVICE] [-r RUNS] [-q]\n"
		"  Prints the backend's RDMA write bandwidth (1 MiB) and 8-byte ping-pong\n"
		"  latency between two processes next to this host's limits: memcpy in and\n"
		"  out of the caches, shared memory, and process_vm_writev for private memory.\n");
}

static void print_row(const char *what, int prec, double v, int lprec, double limit, double ratio,
		      const char *goal, const char *used)
{
	printf("%-42s %11.*f %11.*f %7.2f %8s  %s\n", what, prec, v, lprec, limit, ratio, goal,
	       used);
}

int main(int argc, char **argv)
{
	struct perf_opts base = { .tx_depth = 128, .port_fd = -1, .quiet = true };
	int runs = 5, opt;
	double mc[16], mcc[16], pbw[16], shm[16], ppl[16], bw[2][16], lat[2][16];

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
		mcc[r] = memcpy_cold_bw(2000);
		pbw[r] = pvm_bw(2000);
		shm[r] = shm_pingpong(20000);
		ppl[r] = pvm_pingpong(20000);
		if (mcc[r] < 0 || pbw[r] < 0 || ppl[r] < 0) {
			fprintf(stderr, "sanprov_limits: a limit could not be measured: %s\n",
				strerror(errno));
			return 1;
		}
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

	double mcm = perf_median(mc, runs), mccm = perf_median(mcc, runs);
	double pbwm = perf_median(pbw, runs), shmm = perf_median(shm, runs);
	double pplm = perf_median(ppl, runs);
	double bs = perf_median(bw[0], runs), bp = perf_median(bw[1], runs);
	double ls = perf_median(lat[0], runs), lp = perf_median(lat[1], runs);
	const char *backend = base.backend ? base.backend : vb_backend_find(NULL)->name;

	printf("Backend %s, median of %d runs, two processes on this host\n", backend, runs);
	printf("%-42s %11s %11s %7s %8s  %s\n", "measure", "backend", "limit", "ratio", "goal",
	       "limit used");
	print_row("RDMA write BW 1 MiB [MB/s], shared memory", 0, bs, 0, mccm, bs / mccm, ">= 0.80",
		  "memcpy, 64 MiB working set (out of cache)");
	print_row("  the same, against cache-hot memcpy", 0, bs, 0, mcm, bs / mcm, "-",
		  "memcpy of one 1 MiB pair, reused as the benchmark does");
	print_row("RDMA write BW 1 MiB [MB/s], private memory", 0, bp, 0, pbwm, bp / pbwm,
		  ">= 0.80", "process_vm_writev of 1 MiB");
	print_row("8 B write ping-pong [usec], shared memory", 3, ls, 3, shmm, ls / shmm, "<= 2.00",
		  "shared-memory ping-pong, half round trip");
	print_row("8 B write ping-pong [usec], private memory", 3, lp, 3, pplm, lp / pplm,
		  "<= 2.00", "process_vm_writev ping-pong, half round trip");
	return 0;
}
