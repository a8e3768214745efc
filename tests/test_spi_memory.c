/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The SPI's memory: one registration cache for every socket, RDMA
 * registrations through it, rkeys good for one connection's peer only, and
 * a NIC out of room for registrations (docs/spi-memory.md).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sw.h"

#define LEN (64 * 1024)

static struct sw sw;
static sp_stats_query_fn stats_query;

static void load(void)
{
	uint32_t bytes = 0;
	int ret = sw_load(&sw), err = 0;

	cr_assert_eq(ret, 0, "loading the provider: %d", ret);
	cr_assert_eq(sw.p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER,
				(void *)&sp_guid_stats_query, sizeof(sp_guid_stats_query),
				&stats_query, sizeof(stats_query), &bytes, NULL, NULL, NULL, &err),
		     0, "sp_stats_query: %d", err);
}

static struct sp_stats query(void)
{
	struct sp_stats s;
	uint32_t len = sizeof(s);
	int err = 0;

	cr_assert_eq(stats_query(&s, &len, &err), 0, "query: %d", err);
	return s;
}

/* Without the kernel proxy nothing is cached: what these tests count cannot happen. */
static void need_cache(void)
{
	if (!strstr(sw.data.description, "registration cache on"))
		cr_skip_test("the registration cache is off (no kernel proxy): %s",
			     sw.data.description);
}

static char *page_buf(size_t len, int fill)
{
	char *b = aligned_alloc(4096, len);

	cr_assert_not_null(b);
	memset(b, fill, len);
	return b;
}

static int rdma_write_wait(sp_socket s, char *src, void *h, uint32_t n, const char *desc,
			   uint32_t dlen, uint32_t *bytes)
{
	struct sp_wsabufex b = { n, src, h };
	struct sw_ov o;
	int err = 0, ret;

	sw_ov_init(&o, true);
	ret = sw.rdma_write(s, &b, 1, (void *)desc, dlen, 0, NULL, 0, &o.ov, NULL, NULL, &err);
	cr_assert_eq(ret, SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSA_IO_PENDING);
	ret = sw_ov_wait(&sw, s, &o, bytes, 10000);
	sw_ov_fini(&o);
	return ret;
}

/*
 * Two connections, one buffer: each accepted socket registers it for
 * RDMA, which is one registration of the NIC.  Connection 1's descriptor
 * used by connection 2's peer is refused by the NIC, nothing written; the
 * same descriptor works for connection 1's own peer.
 */
Test(spi_memory, rkey_of_one_connection_is_refused_to_another)
{
	sp_socket c1, a1, c2, a2;
	char d1[64], d2[64];
	uint32_t l1 = sizeof(d1), l2 = sizeof(d2), n = 1;
	char *dst = page_buf(LEN, 0x11), *src = page_buf(LEN, 0x77);
	void *hs1, *hs2;
	struct sp_stats s;
	int err = 0, ret;

	load();
	sw_pair(&sw, &c1, &a1);
	sw_pair(&sw, &c2, &a2);
	cr_assert(c1 != SP_INVALID_SOCKET && a1 != SP_INVALID_SOCKET);
	cr_assert(c2 != SP_INVALID_SOCKET && a2 != SP_INVALID_SOCKET);
	cr_assert_eq(sw.register_rdma_memory(a1, dst, LEN, SP_MEM_WRITE, d1, &l1, &err), 0,
		     "register on a1: %d", err);
	cr_assert_eq(sw.register_rdma_memory(a2, dst, LEN, SP_MEM_WRITE, d2, &l2, &err), 0,
		     "register on a2: %d", err);
	s = query();
	if (strstr(sw.data.description, "registration cache on")) {
		/* The registration behind both is shared. */
		cr_assert_eq(s.rcache_registrations, 1, "registrations: %llu",
			     (unsigned long long)s.rcache_registrations);
		cr_assert_eq(s.rcache_hits, 1);
	}
	hs1 = sw.register_memory(c1, src, LEN, SP_MEM_READ, &err);
	hs2 = sw.register_memory(c2, src, LEN, SP_MEM_READ, &err);
	cr_assert(hs1 && hs2);

	/* c2's peer is a2: a1's rkey is nothing there. */
	ret = rdma_write_wait(c2, src, hs2, LEN, d1, l1, &n);
	cr_assert_neq(ret, 0, "another connection's rkey must be refused");
	cr_assert_neq(ret, -1, "the refused write must complete");
	cr_assert_eq(n, 0);
	for (size_t i = 0; i < LEN; i++)
		cr_assert_eq(dst[i], 0x11, "byte %zu written through another connection's rkey", i);

	/* The rkey is good where it was handed out. */
	ret = rdma_write_wait(c1, src, hs1, 4096, d1, l1, &n);
	cr_assert_eq(ret, 0, "c1 with its own peer's rkey: %d", ret);
	cr_assert_eq(n, 4096);
	cr_assert_eq(dst[0], 0x77);
	cr_assert_eq(dst[4095], 0x77);
	cr_assert_eq(dst[4096], 0x11);
	cr_assert_eq(sw.deregister_rdma_memory(a1, d1, l1, &err), 0);
	cr_assert_eq(sw.deregister_rdma_memory(a2, d2, l2, &err), 0);
	sw_unload(&sw);
	free(dst);
	free(src);
}

/* A buffer registered for RDMA again and again is registered with the NIC once. */
Test(spi_memory, rdma_registration_goes_through_the_cache)
{
	sp_socket c, a;
	char d[64];
	uint32_t l = sizeof(d), n = 0;
	char *dst = page_buf(LEN, 0), *src = page_buf(LEN, 0x5a);
	struct sp_stats s;
	void *hs;
	int err = 0;

	load();
	need_cache();
	sw_pair(&sw, &c, &a);
	cr_assert(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	hs = sw.register_memory(c, src, LEN, SP_MEM_READ, &err);
	cr_assert_not_null(hs);
	for (int i = 0; i < 2; i++) {
		l = sizeof(d);
		cr_assert_eq(sw.register_rdma_memory(a, dst, LEN, SP_MEM_READWRITE, d, &l, &err), 0,
			     "register %d: %d", i, err);
		cr_assert_eq(rdma_write_wait(c, src, hs, LEN, d, l, &n), 0);
		cr_assert_eq(n, LEN);
		cr_assert_eq(sw.deregister_rdma_memory(a, d, l, &err), 0);
		/* Deregistered: the old rkey is dead, although the memory stays cached. */
		if (i == 1) {
			cr_assert_neq(rdma_write_wait(c, src, hs, 64, d, l, &n), 0);
			cr_assert_eq(n, 0);
		}
	}
	cr_assert_eq(dst[LEN - 1], 0x5a);
	s = query();
	cr_assert_eq(s.rdma_registrations, 2);
	/* src once, dst once: the second RDMA registration was a hit. */
	cr_assert_eq(s.rcache_registrations, 2, "registrations: %llu",
		     (unsigned long long)s.rcache_registrations);
	cr_assert_eq(s.rcache_hits, 1);
	sw_unload(&sw);
	free(dst);
	free(src);
}

#define NIC_MRS 16 /* softnic's smallest MR table */
#define BUFS (3 * NIC_MRS)

/*
 * A NIC with room for 16 regions and windows, a cache with room for many
 * more: once the NIC says ENOMEM, idle cached regions are evicted and the
 * registration retried, for memory handles and RDMA registrations alike.
 */
Test(spi_memory, nic_out_of_regions_evicts_idle_ones_and_retries)
{
	sp_socket c, a;
	char *b[BUFS];
	char d[64];
	uint32_t l;
	struct sp_stats s;
	int err = 0;

	setenv("SANPROV_SOFTNIC_MAX_MR", "16", 1);
	load();
	need_cache();
	if (!strstr(sw.data.description, "(softnic,"))
		cr_skip_test("softnic's MR limit: %s", sw.data.description);
	sw_pair(&sw, &c, &a);
	cr_assert(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	for (int i = 0; i < BUFS; i++) {
		void *h;

		b[i] = page_buf(4096, i);
		h = sw.register_memory(c, b[i], 4096, SP_MEM_READWRITE, &err);
		cr_assert_not_null(h, "buffer %d: %d", i, err);
		/* Idle in the cache from here. */
		cr_assert_eq(sw.deregister_memory(c, h, &err), 0);
	}
	/* An RDMA registration needs a window too: a slot of the same table. */
	for (int i = 0; i < BUFS; i++) {
		l = sizeof(d);
		cr_assert_eq(
		    sw.register_rdma_memory(a, b[BUFS - 1 - i], 4096, SP_MEM_WRITE, d, &l, &err), 0,
		    "RDMA buffer %d: %d", i, err);
		cr_assert_eq(sw.deregister_rdma_memory(a, d, l, &err), 0);
	}
	s = query();
	cr_assert_geq(s.rcache_evictions, BUFS - NIC_MRS, "evictions: %llu",
		      (unsigned long long)s.rcache_evictions);
	cr_assert_leq(s.rcache_regions, NIC_MRS);
	sw_unload(&sw);
	for (int i = 0; i < BUFS; i++)
		free(b[i]);
}
