/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The provider's counters at run time: sp_stats_query (fetched by its
 * GUID) after known work, counter by counter; its size probe; the dump a
 * signal asks for and the one at cleanup, in a child process.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sw.h"
#include "tdev.h"

static struct sw sw;
static sp_stats_query_fn stats_query;

static int fetch_query(void)
{
	uint32_t bytes = 0;
	int err = 0;

	if (sw.p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER,
		       (void *)&sp_guid_stats_query, sizeof(sp_guid_stats_query), &stats_query,
		       sizeof(stats_query), &bytes, NULL, NULL, NULL, &err))
		return err;
	return bytes == sizeof(stats_query) ? 0 : EIO;
}

static void load(void)
{
	int ret = sw_load(&sw);

	cr_assert_eq(ret, 0, "loading the provider: %d", ret);
	ret = fetch_query();
	cr_assert_eq(ret, 0, "fetching sp_stats_query: %d", ret);
}

static void unload(void)
{
	sw_unload(&sw);
	cr_assert_eq(sw_open_handles(), 0, "cleanup closes every socket");
}

static struct sp_stats query(void)
{
	struct sp_stats s;
	uint32_t len = sizeof(s);
	int err = 0;

	memset(&s, 0xa5, sizeof(s));
	cr_assert_eq(stats_query(&s, &len, &err), 0, "query: %d", err);
	cr_assert_eq(len, sizeof(s));
	cr_assert_eq(s.version, SP_STATS_VERSION);
	cr_assert_eq(s.size, sizeof(s));
	return s;
}

static bool cache_on(void)
{
	return strstr(sw.data.description, "registration cache on") != NULL;
}

/* One overlapped operation posted: the answer must be WSA_IO_PENDING. */
#define PENDING(call)                                                                              \
	do {                                                                                       \
		int perr = 0;                                                                      \
		cr_assert_eq((call), SP_SOCKET_ERROR);                                             \
		cr_assert_eq(perr, SP_WSA_IO_PENDING);                                             \
	} while (0)

Test(spi_stats, counters_after_known_work)
{
	enum { N = 10, MSG = 100, LEN = 4 * 4096 };
	char *sbuf = aligned_alloc(4096, LEN), *rbuf = aligned_alloc(4096, LEN);
	char *wbuf = aligned_alloc(4096, 4096);
	struct sw_ov so[N], ro[N], o;
	uint8_t desc[128];
	uint32_t dlen = 4, n = 0, flags = 0;
	sp_socket c, a;
	int err = 0;

	cr_assert(sbuf && rbuf && wbuf);
	memset(sbuf, 7, LEN);
	/* Each buffer its own region, adjacent or not. */
	setenv("SANPROV_RCACHE_MERGE", "0", 1);
	load();
	struct sp_stats s = query();
	cr_assert_eq(s.sockets_opened, 0);
	cr_assert_eq(s.ops_posted[SP_STATS_SEND], 0);
	cr_assert_eq(s.mem_registrations, 0);
	cr_assert_eq(s.rcache_misses, 0);

	/* A listener, a connection and its accepted socket; sw_pair closes the listener. */
	sw_pair(&sw, &c, &a);
	cr_assert(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	s = query();
	cr_assert_eq(s.sockets_opened, 3);
	cr_assert_eq(s.sockets_closed, 1);
	cr_assert_eq(s.sockets_open, 2);
	cr_assert_eq(s.connects, 1);
	cr_assert_eq(s.connects_ok, 1);
	cr_assert_eq(s.connect_errors, 0);
	cr_assert_eq(s.accepts, 1);
	cr_assert_eq(s.accept_errors + s.accept_rejected + s.accept_deferred + s.accept_foreign, 0);

	/* Registrations: a second one of the same buffer is the same handle. */
	void *hs = sw.register_memory(c, sbuf, LEN, SP_MEM_READ, &err);
	void *hs2 = sw.register_memory(c, sbuf, LEN, SP_MEM_READ, &err);
	void *hr = sw.register_memory(a, rbuf, LEN, SP_MEM_WRITE, &err);
	void *hw = sw.register_memory(c, wbuf, 4096, SP_MEM_WRITE, &err);
	cr_assert(hs && hr && hw && hs2 == hs);
	cr_assert_null(sw.register_memory(c, sbuf, LEN, 0, &err));
	cr_assert_eq(sw.deregister_memory(c, (void *)(uintptr_t)12345, &err), SP_SOCKET_ERROR);
	s = query();
	cr_assert_eq(s.mem_registrations, 4);
	cr_assert_eq(s.mem_reuses, 1);
	cr_assert_eq(s.mem_register_errors, 1);
	cr_assert_eq(s.mem_deregister_errors, 1);
	cr_assert_eq(s.mem_handles, 3);
	if (cache_on()) {
		cr_assert_eq(s.rcache_misses, 3);
		cr_assert_eq(s.rcache_registrations, 3);
		cr_assert_eq(s.rcache_regions, 3);
		cr_assert_eq(s.rcache_cached_regions, 3);
		cr_assert_eq(s.rcache_bytes_pinned, 2 * LEN + 4096);
	} else {
		cr_assert_eq(s.rcache_uncached, 3);
		cr_assert_eq(s.rcache_regions, 3);
	}

	/* N messages: receives polled, sends by up-call. */
	for (int i = 0; i < N; i++) {
		struct sp_wsabufex rb = { MSG, rbuf + MSG * i, hr }, sb = { MSG, sbuf, hs };

		sw_ov_init(&ro[i], true);
		sw_ov_init(&so[i], false);
		PENDING(sw.p.recv(a, &rb, 1, NULL, &flags, &ro[i].ov, NULL, NULL, &perr));
		PENDING(sw.p.send(c, &sb, 1, NULL, 0, &so[i].ov, NULL, NULL, &perr));
	}
	for (int i = 0; i < N; i++) {
		cr_assert_eq(sw_ov_wait(&sw, c, &so[i], &n, 10000), 0);
		cr_assert_eq(sw_ov_wait(&sw, a, &ro[i], &n, 10000), 0);
		cr_assert_eq(n, MSG);
		sw_ov_fini(&so[i]);
		sw_ov_fini(&ro[i]);
	}
	/* A send with a handle of nobody's: refused at once. */
	struct sp_wsabufex bad = { MSG, sbuf, (void *)(uintptr_t)777 };
	sw_ov_init(&o, true);
	cr_assert_eq(sw.p.send(c, &bad, 1, NULL, 0, &o.ov, NULL, NULL, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	sw_ov_fini(&o);
	s = query();
	cr_assert_eq(s.ops_posted[SP_STATS_SEND], N);
	cr_assert_eq(s.ops_posted[SP_STATS_RECV], N);
	cr_assert_eq(s.ops_completed[SP_STATS_SEND], N);
	cr_assert_eq(s.ops_completed[SP_STATS_RECV], N);
	cr_assert_eq(s.bytes_completed[SP_STATS_SEND], N * MSG);
	cr_assert_eq(s.bytes_completed[SP_STATS_RECV], N * MSG);
	cr_assert_eq(s.ops_refused, 1);
	cr_assert_eq(s.ops_outstanding, 0);
	cr_assert_eq(s.upcalls, N);
	cr_assert_eq(s.delivered_by_progress + s.delivered_by_caller, 2 * N);
	/* Nobody polled c: the progress thread made the sends' up-calls. */
	cr_assert_geq(s.delivered_by_progress, N);
	cr_assert_gt(s.progress_loops, 0);

	/* RDMA: a's buffer, after the size probe; c writes to it by up-call, reads back polled. */
	cr_assert_eq(sw.register_rdma_memory(a, rbuf, LEN, SP_MEM_READWRITE, desc, &dlen, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_eq(sw.register_rdma_memory(a, rbuf, LEN, SP_MEM_READWRITE, desc, &dlen, &err), 0);
	struct sp_wsabufex wb = { 256, sbuf, hs }, rdb = { 128, wbuf, hw };
	sw_ov_init(&o, false);
	PENDING(sw.rdma_write(c, &wb, 1, desc, dlen, 0, NULL, 0, &o.ov, NULL, NULL, &perr));
	cr_assert_eq(sw_ov_wait(&sw, c, &o, &n, 10000), 0);
	sw_ov_fini(&o);
	sw_ov_init(&o, true);
	PENDING(sw.rdma_read(c, &rdb, 1, desc, dlen, 64, NULL, 0, &o.ov, NULL, NULL, &perr));
	cr_assert_eq(sw_ov_wait(&sw, c, &o, &n, 10000), 0);
	sw_ov_fini(&o);
	cr_assert_eq(sw.deregister_rdma_memory(a, desc, dlen - 1, &err), SP_SOCKET_ERROR);
	s = query();
	cr_assert_eq(s.rdma_size_probes, 1);
	cr_assert_eq(s.rdma_registrations, 1);
	cr_assert_eq(s.rdma_register_errors, 0);
	cr_assert_eq(s.rdma_deregister_errors, 1);
	cr_assert_eq(s.rdma_regions, 1);
	cr_assert_eq(s.ops_posted[SP_STATS_RDMA_WRITE], 1);
	cr_assert_eq(s.ops_posted[SP_STATS_RDMA_READ], 1);
	cr_assert_eq(s.ops_completed[SP_STATS_RDMA_WRITE], 1);
	cr_assert_eq(s.ops_completed[SP_STATS_RDMA_READ], 1);
	cr_assert_eq(s.bytes_completed[SP_STATS_RDMA_WRITE], 256);
	cr_assert_eq(s.bytes_completed[SP_STATS_RDMA_READ], 128);
	cr_assert_eq(s.upcalls, N + 1);
	cr_assert_eq(s.delivered_by_progress + s.delivered_by_caller, 2 * N + 2);
	cr_assert_eq(sw.deregister_rdma_memory(a, desc, dlen, &err), 0);

	/* The cache callback: one call, to the one cache both sockets share. */
	if (cache_on()) {
		cr_assert_eq(sw.cache_callback(sbuf, LEN, &err), 0, "callback: %d", err);
	} else {
		/* Nothing cached there: the switch is told so. */
		cr_assert_eq(sw.cache_callback(sbuf, LEN, &err), SP_SOCKET_ERROR);
		cr_assert_eq(err, SP_WSAEINVAL);
	}
	/* Deregistered twice: one reference, then the handle. */
	cr_assert_eq(sw.deregister_memory(c, hs, &err), 0);
	cr_assert_eq(sw.deregister_memory(c, hs, &err), 0);
	s = query();
	cr_assert_eq(s.cache_callbacks, 1);
	cr_assert_eq(s.rdma_deregistrations, 1);
	cr_assert_eq(s.rdma_regions_freed, 1);
	cr_assert_eq(s.rdma_regions, 0);
	cr_assert_eq(s.mem_deregistrations, 2);
	cr_assert_eq(s.mem_handles_freed, 1);
	cr_assert_eq(s.mem_handles, 2);
	if (cache_on()) {
		cr_assert_eq(s.rcache_invalidations, 1);
		cr_assert_eq(s.rcache_invalidated, 1);
		cr_assert_eq(s.rcache_cached_regions, 2);
	}

	/* A receive that never completes: aborted by the close, with c's handle freed. */
	struct sp_wsabufex ab = { 64, wbuf, hw };
	sw_ov_init(&o, false);
	PENDING(sw.p.recv(c, &ab, 1, NULL, &flags, &o.ov, NULL, NULL, &perr));
	s = query();
	cr_assert_eq(s.ops_outstanding, 1);
	cr_assert_eq(sw.p.close_socket(c, &err), 0);
	cr_assert_eq(__atomic_load_n(&o.ov.internal, __ATOMIC_ACQUIRE), SP_WSA_OPERATION_ABORTED);
	sw_ov_fini(&o);
	s = query();
	cr_assert_eq(s.ops_aborted[SP_STATS_RECV], 1);
	cr_assert_eq(s.ops_posted[SP_STATS_RECV], N + 1);
	cr_assert_eq(s.ops_outstanding, 0);
	cr_assert_eq(s.upcalls, N + 2);
	cr_assert_eq(s.sockets_closed, 2);
	cr_assert_eq(s.sockets_open, 1);
	cr_assert_eq(s.mem_handles_freed, 2);
	cr_assert_eq(s.mem_handles, 1);
	/*
	 * c's handles are gone, their registrations stay in the shared cache
	 * for the next socket: wbuf's (sbuf's was invalidated, so it went with
	 * its last handle), and a's rbuf.
	 */
	cr_assert_eq(s.rcache_regions, 2);
	cr_assert_eq(s.rcache_deregistrations, 1);
	unload();
	free(sbuf);
	free(rbuf);
	free(wbuf);
}

static sp_progress_fn progress_fn;

static void fetch_progress(void)
{
	uint32_t bytes = 0;
	int err = 0;

	cr_assert_eq(sw.p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER,
				(void *)&sp_guid_progress, sizeof(sp_guid_progress), &progress_fn,
				sizeof(progress_fn), &bytes, NULL, NULL, NULL, &err),
		     0, "fetching sp_progress_fn: %d", err);
	cr_assert_eq(bytes, sizeof(progress_fn));
}

/*
 * N RDMA writes that ask for an up-call, each taken by the calling thread
 * until done: polled with WSPGetOverlappedResult (the session's spin
 * before it sleeps on the event), or with spin set by calls of
 * sp_progress_fn until its event is signalled (a switch's spin before it
 * sleeps, as the Linux switch's epoll_wait).  How many of their up-calls
 * the calling thread made; every event is signalled, whichever thread
 * made the up-call.
 */
static uint64_t upcalls_by_caller(bool spin)
{
	enum { N = 200, LEN = 4096 };
	char *src = aligned_alloc(4096, LEN), *dst = aligned_alloc(4096, LEN);
	uint32_t dlen = 128, n = 0, flags = 0;
	uint8_t desc[128];
	struct sw_ov o;
	sp_socket c, a;
	int err = 0;

	cr_assert(src && dst);
	memset(src, 3, LEN);
	load();
	if (spin)
		fetch_progress();
	sw_pair(&sw, &c, &a);
	void *h = sw.register_memory(c, src, LEN, SP_MEM_READ, &err);
	cr_assert_not_null(h);
	cr_assert_eq(sw.register_rdma_memory(a, dst, LEN, SP_MEM_READWRITE, desc, &dlen, &err), 0);
	struct sp_stats before = query();
	for (int i = 0; i < N; i++) {
		struct sp_wsabufex b = { 64, src, h };
		struct pollfd p;
		uint64_t v = 0;
		int spins = 0;

		sw_ov_init(&o, false);
		PENDING(sw.rdma_write(c, &b, 1, desc, dlen, 0, NULL, 0, &o.ov, NULL, NULL, &perr));
		if (spin) {
			do {
				cr_assert_geq(progress_fn(&err), 0, "sp_progress_fn: %d", err);
				p = (struct pollfd){ .fd = o.fd, .events = POLLIN };
				cr_assert_lt(++spins, 10000000, "write %d: its event never came",
					     i);
			} while (poll(&p, 1, 0) != 1);
		} else {
			while (sw.p.get_overlapped_result(c, &o.ov, &n, 0, &flags, &err))
				cr_assert_eq(err, SP_WSA_IO_INCOMPLETE);
			cr_assert_eq(n, 64);
			p = (struct pollfd){ .fd = o.fd, .events = POLLIN };
			cr_assert_eq(poll(&p, 1, 10000), 1, "write %d: its event never came", i);
		}
		cr_assert_eq(read(o.fd, &v, sizeof(v)), sizeof(v));
		sw_ov_fini(&o);
	}
	struct sp_stats s = query();
	cr_assert_eq(s.upcalls - before.upcalls, N);
	cr_assert_eq(sw.deregister_rdma_memory(a, desc, dlen, &err), 0);
	cr_assert_eq(sw.deregister_memory(c, h, &err), 0);
	if (spin) {
		/* After the last cleanup there is nothing to poll. */
		cr_assert_eq(sw.p.cleanup(&err), 0);
		cr_assert_eq(progress_fn(&err), SP_SOCKET_ERROR);
		cr_assert_eq(err, SP_WSANOTINITIALISED);
		sw.p.cleanup = NULL;
	}
	unload();
	free(src);
	free(dst);
	cr_log_info("%d up-calls, %llu made by the %s thread", N,
		    (unsigned long long)(s.delivered_by_caller - before.delivered_by_caller),
		    spin ? "spinning" : "polling");
	return s.delivered_by_caller - before.delivered_by_caller;
}

Test(spi_stats, a_spinning_switch_makes_the_up_calls_when_they_never_wait)
{
	setenv("SANPROV_SPI_INLINE_UPCALLS", "1", 1);
	cr_assert_gt(upcalls_by_caller(true), 0, "every up-call waited for the progress thread");
	unsetenv("SANPROV_SPI_INLINE_UPCALLS");
}

Test(spi_stats, a_spinning_switch_leaves_up_calls_to_the_progress_thread_by_default)
{
	unsetenv("SANPROV_SPI_INLINE_UPCALLS");
	cr_assert_eq(upcalls_by_caller(true), 0, "up-calls made on the spinning thread");
}

/*
 * By default the up-calls stay on the progress thread: one made on the
 * polling thread may wait on a completion only a blocked thread delivers
 * (spi_poll_deliver).
 */
Test(spi_stats, a_polling_caller_leaves_up_calls_to_the_progress_thread)
{
	unsetenv("SANPROV_SPI_INLINE_UPCALLS");
	cr_assert_eq(upcalls_by_caller(false), 0, "up-calls made on the polling thread");
}

/*
 * A switch whose up-calls never wait (SANPROV_SPI_INLINE_UPCALLS=1) gets
 * them on the polling thread: no thread wake-up between the completion and
 * the poller (most of them; the progress thread may get there first).
 */
Test(spi_stats, inline_upcalls_are_made_by_the_polling_thread)
{
	setenv("SANPROV_SPI_INLINE_UPCALLS", "1", 1);
	cr_assert_gt(upcalls_by_caller(false), 0, "every up-call waited for the progress thread");
	unsetenv("SANPROV_SPI_INLINE_UPCALLS");
}

Test(spi_stats, query_size_probe)
{
	struct sp_stats s;
	uint32_t len = 0;
	int err = 0;

	load();
	cr_assert_eq(stats_query(NULL, &len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_eq(len, sizeof(s));
	len = sizeof(s) - 1;
	err = 0;
	memset(&s, 0, sizeof(s));
	cr_assert_eq(stats_query(&s, &len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_eq(len, sizeof(s));
	cr_assert_eq(s.version, 0, "nothing written into a buffer too small");
	cr_assert_eq(stats_query(&s, NULL, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	/* More room than needed: the size it filled. */
	struct {
		struct sp_stats s;
		char more[64];
	} big;
	len = sizeof(big);
	cr_assert_eq(stats_query(&big.s, &len, &err), 0);
	cr_assert_eq(len, sizeof(s));
	cr_assert_eq(big.s.size, sizeof(s));
	cr_assert_eq(big.s.version, SP_STATS_VERSION);
	/* After the last cleanup: not started. */
	cr_assert_eq(sw.p.cleanup(&err), 0);
	len = sizeof(s);
	cr_assert_eq(stats_query(&s, &len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSANOTINITIALISED);
	sw.p.cleanup = NULL;
	unload();
}

/* The dumps ----------------------------------------------------------------------- */

static bool file_has(const char *path, const char *what, int timeout_ms)
{
	for (int waited = 0;; waited += 10) {
		char buf[16384];
		FILE *f = fopen(path, "r");
		size_t n = 0;

		if (f) {
			n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
		}
		buf[n] = 0;
		if (strstr(buf, what))
			return true;
		if (waited >= timeout_ms)
			return false;
		usleep(10000);
	}
}

/* The value of name in the last dump of path whose header contains why, or -1. */
static long long dumped(const char *path, const char *why, const char *name)
{
	char line[256], key[64];
	long long v = -1, cur = -1;
	bool in = false;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	snprintf(key, sizeof(key), "  %s ", name);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "sanprov stats: pid", 18)) {
			in = strstr(line, why) != NULL;
			cur = -1;
		} else if (in && !strncmp(line, key, strlen(key))) {
			cur = strtoll(line + strlen(key), NULL, 10);
		} else if (in && !strncmp(line, "sanprov stats: end", 18)) {
			v = cur;
		}
	}
	fclose(f);
	return v;
}

/* In a child: the provider with the dump's settings, a pair, a signal; exit 0 when all went. */
static int dump_child(const char *path)
{
	sp_socket c, a;
	int err;

	setenv("SANPROV_STATS_SIGNAL", "10", 1); /* SIGUSR1 */
	setenv("SANPROV_STATS_FILE", path, 1);
	if (sw_load(&sw) || fetch_query())
		return 10;
	sw_pair(&sw, &c, &a);
	if (c == SP_INVALID_SOCKET || a == SP_INVALID_SOCKET)
		return 11;
	if (kill(getpid(), SIGUSR1))
		return 12;
	/* The progress thread writes it. */
	if (!file_has(path, "sanprov stats: end", 5000))
		return 13;
	if (sw.p.close_socket(a, &err))
		return 14;
	sw_unload(&sw);
	/* The handler went with the provider: the default action is back. */
	struct sigaction sa;
	if (sigaction(SIGUSR1, NULL, &sa) || sa.sa_handler != SIG_DFL)
		return 15;
	return 0;
}

Test(spi_stats, signal_dump_and_cleanup_dump)
{
	char path[] = "/tmp/sanprov-stats-XXXXXX";
	int fd = mkstemp(path), status = 0;
	pid_t pid;

	cr_assert_geq(fd, 0);
	close(fd);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid)
		_exit(dump_child(path));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the child died: status %#x", status);
	cr_assert_eq(WEXITSTATUS(status), 0, "the child's step %d failed", WEXITSTATUS(status));
	/* On request: the pair is up, the listener closed. */
	cr_expect_eq(dumped(path, "on request", "sockets_opened"), 3);
	cr_expect_eq(dumped(path, "on request", "sockets_open"), 2);
	cr_expect_eq(dumped(path, "on request", "accepts"), 1);
	cr_expect_eq(dumped(path, "on request", "dumps"), 1);
	/* At cleanup: everything closed. */
	cr_expect_eq(dumped(path, "at cleanup", "sockets_closed"), 3);
	cr_expect_eq(dumped(path, "at cleanup", "sockets_open"), 0);
	cr_expect_eq(dumped(path, "at cleanup", "dumps"), 2);
	cr_expect_eq(dumped(path, "at cleanup", "ops_outstanding"), 0);
	unlink(path);
}

Test(spi_stats, no_handler_without_the_setting)
{
	struct sigaction sa;

	load();
	cr_assert_eq(sigaction(SIGUSR1, NULL, &sa), 0);
	cr_assert_eq(sa.sa_handler, SIG_DFL);
	unload();
}
