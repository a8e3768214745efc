/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Memory that changes under a live RDMA registration (the application's
 * mistake): a buffer unmapped and something else mapped at its address, or
 * a WSPMemoryRegistrationCacheCallback over it.  On a NIC the peer's write
 * would land in the old pages, pinned by the registration; softnic reaches
 * the owner's memory by address and would reach the new mapping.  The
 * provider revokes the registration: its window dies, the peer's next
 * access fails with a remote access error and moves nothing, and the
 * registration is still deregistered cleanly (docs/spi-memory.md).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sw.h"

#define LEN (64 * 1024)

static struct sw sw;
static sp_stats_query_fn stats_query;

static uint64_t revoked_now(void)
{
	struct sp_stats s;
	uint32_t bytes = 0, len = sizeof(s);
	int err = 0;

	if (!stats_query)
		cr_assert_eq(sw.p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER,
					(void *)&sp_guid_stats_query, sizeof(sp_guid_stats_query),
					&stats_query, sizeof(stats_query), &bytes, NULL, NULL, NULL,
					&err),
			     0);
	cr_assert_eq(stats_query(&s, &len, &err), 0);
	return s.rdma_revoked;
}

/* c RDMA-writes 4096 bytes of 0x77 to the start of a's descriptor: the WSA error, bytes moved. */
static int peer_write(sp_socket c, char *src, void *hs, char *d, uint32_t l, uint32_t *n)
{
	struct sp_wsabufex b = { 4096, src, hs };
	struct sw_ov o;
	int err = 0, ret;

	sw_ov_init(&o, true);
	*n = 0;
	ret = sw.rdma_write(c, &b, 1, d, l, 0, NULL, 0, &o.ov, NULL, NULL, &err);
	cr_assert_eq(ret, SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSA_IO_PENDING);
	ret = sw_ov_wait(&sw, c, &o, n, 10000);
	sw_ov_fini(&o);
	return ret;
}

Test(spi_memory_stale, a_window_over_unmapped_memory_reaches_nothing_new, .timeout = 60)
{
	sp_socket c, a;
	char d[64];
	uint32_t l = sizeof(d), n = 0;
	char *src = aligned_alloc(4096, LEN), *dst, *again;
	uint64_t revoked0;
	void *hs;
	int err = 0, ret;

	cr_assert_not_null(src);
	memset(src, 0x77, LEN);
	cr_assert_eq(sw_load(&sw), 0);
	if (!strstr(sw.data.description, "registration cache on"))
		cr_skip_test("no kernel proxy: nothing is told of the unmapping");
	sw_pair(&sw, &c, &a);
	dst = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(dst, MAP_FAILED);
	memset(dst, 0x11, LEN);
	cr_assert_eq(sw.register_rdma_memory(a, dst, LEN, SP_MEM_WRITE, d, &l, &err), 0);
	hs = sw.register_memory(c, src, LEN, SP_MEM_READ, &err);
	cr_assert_not_null(hs);
	revoked0 = revoked_now();

	/* Freed and mapped again at the same address, the registration still alive. */
	cr_assert_eq(munmap(dst, LEN), 0);
	again =
	    mmap(dst, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	cr_assert_eq(again, dst);
	memset(again, 0x22, LEN);
	/* The event thread revokes as it reads the event, which lets munmap return: soon. */
	for (int i = 0; i < 1000 && revoked_now() == revoked0; i++)
		usleep(1000);
	cr_assert_eq(revoked_now(), revoked0 + 1);

	ret = peer_write(c, src, hs, d, l, &n);
	cr_assert_eq(ret, SP_WSAEACCES, "the peer's write: %d, not a remote access error", ret);
	cr_assert_eq(n, 0);
	for (size_t i = 0; i < LEN; i++)
		cr_assert_eq(again[i], 0x22, "byte %zu of the new mapping written by the peer", i);
	/* A revoked registration is deregistered as any other, once. */
	cr_assert_eq(sw.deregister_rdma_memory(a, d, l, &err), 0);
	cr_assert_eq(sw.deregister_rdma_memory(a, d, l, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	sw_unload(&sw);
	munmap(again, LEN);
	free(src);
}

/*
 * The cache callback says the application's memory there changed (or is
 * about to): the peer loses access too, whatever the pages hold now.
 */
Test(spi_memory_stale, the_cache_callback_revokes_remote_access, .timeout = 60)
{
	sp_socket c, a;
	char d[64], d2[64];
	uint32_t l = sizeof(d), l2 = sizeof(d2), n = 0;
	char *src = aligned_alloc(4096, LEN), *dst = aligned_alloc(4096, 2 * LEN);
	uint64_t revoked0;
	void *hs;
	int err = 0, ret;

	cr_assert(src && dst);
	memset(src, 0x77, LEN);
	memset(dst, 0x11, 2 * LEN);
	cr_assert_eq(sw_load(&sw), 0);
	sw_pair(&sw, &c, &a);
	cr_assert_eq(sw.register_rdma_memory(a, dst, LEN, SP_MEM_WRITE, d, &l, &err), 0);
	/* Beside it, not in the callback's range: untouched. */
	cr_assert_eq(sw.register_rdma_memory(a, dst + LEN, LEN, SP_MEM_WRITE, d2, &l2, &err), 0);
	hs = sw.register_memory(c, src, LEN, SP_MEM_READ, &err);
	cr_assert_not_null(hs);
	revoked0 = revoked_now();

	(void)sw.cache_callback(dst + 4096, 4096, &err);
	cr_assert_eq(revoked_now(), revoked0 + 1);
	ret = peer_write(c, src, hs, d2, l2, &n);
	cr_assert_eq(ret, 0, "the registration beside it: %d", ret);
	cr_assert_eq(n, 4096);
	ret = peer_write(c, src, hs, d, l, &n);
	cr_assert_eq(ret, SP_WSAEACCES, "the peer's write: %d, not a remote access error", ret);
	cr_assert_eq(n, 0);
	for (size_t i = 0; i < LEN; i++)
		cr_assert_eq(dst[i], 0x11, "byte %zu written through a revoked registration", i);
	cr_assert_eq(sw.deregister_rdma_memory(a, d, l, &err), 0);
	cr_assert_eq(sw.deregister_rdma_memory(a, d2, l2, &err), 0);
	sw_unload(&sw);
	free(src);
	free(dst);
}
