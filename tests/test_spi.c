/* SPDX-License-Identifier: BSD-2-Clause */
/* The SAN SPI through the switch stand-in (sw.h): semantics and error codes. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sw.h"
#include "tdev.h"
#include "tpair.h"

static struct sw sw;

static void setup(void)
{
	int ret = sw_load(&sw);

	cr_assert_eq(ret, 0, "loading the provider: %d", ret);
}

static void teardown(void)
{
	sw_unload(&sw);
	cr_assert_eq(sw_open_handles(), 0, "cleanup closes every socket");
}

TestSuite(spi, .init = setup);

static void pair(sp_socket *c, sp_socket *a)
{
	sw_pair(&sw, c, a);
	cr_assert_neq(*c, SP_INVALID_SOCKET);
	cr_assert_neq(*a, SP_INVALID_SOCKET);
}

Test(spi, startup_fetches_every_extension_and_refuses_the_rest)
{
	static const struct sp_guid unknown = { 0x12345678, 1, 2, { 3, 4, 5, 6, 7, 8, 9, 10 } };
	struct sp_wsp_data d;
	struct sp_proc_table p;
	void *fn = NULL;
	uint32_t bytes = 0;
	int err = 0;

	cr_assert_eq(sw.data.version, SP_SPI_VERSION);
	cr_assert(sw.register_memory && sw.deregister_memory && sw.register_rdma_memory &&
		  sw.deregister_rdma_memory && sw.rdma_write && sw.rdma_read && sw.cache_callback);
	/* Unsupported GUIDs: WSAEOPNOTSUPP, as the switch expects. */
	cr_assert_eq(sw.p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER,
				(void *)&unknown, sizeof(unknown), &fn, sizeof(fn), &bytes, NULL,
				NULL, NULL, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEOPNOTSUPP);
	cr_assert_null(fn);
	/* Short buffers and unknown codes. */
	cr_assert_eq(sw.p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER,
				(void *)&sp_guid_rdma_read, 8, &fn, sizeof(fn), &bytes, NULL, NULL,
				NULL, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_eq(sw.p.ioctl(SP_INVALID_SOCKET, 0x12345, NULL, 0, NULL, 0, &bytes, NULL, NULL,
				NULL, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	/* Missing up-calls are refused. */
	int (*startup)(uint16_t, struct sp_wsp_data *, const struct sp_upcalls *,
		       struct sp_proc_table *);
	*(void **)&startup = dlsym(sw.dl, "sp_wsp_startup_ex");
	cr_assert_not_null(startup);
	cr_assert_eq(startup(0x0101, &d, NULL, &p), SP_WSAEFAULT);
	teardown();
}

Test(spi, sockets_refuse_what_a_san_cannot_carry)
{
	int err = 0;

	cr_assert_eq(sw.p.socket(AF_UNIX, SOCK_STREAM, 0, 1, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEAFNOSUPPORT);
	cr_assert_eq(sw.p.socket(AF_INET, SOCK_DGRAM, 0, 1, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEPROTOTYPE);
	cr_assert_eq(sw.p.socket(AF_INET, SOCK_STREAM, IPPROTO_UDP, 1, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEPROTONOSUPPORT);
	/* Handles the switch never had, or closed. */
	cr_assert_eq(sw.p.listen(0x4444, 1, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAENOTSOCK);
	sp_socket s = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	cr_assert_neq(s, SP_INVALID_SOCKET);
	cr_assert_eq(sw.p.listen(s, 1, &err), SP_SOCKET_ERROR, "listen before bind");
	cr_assert_eq(err, SP_WSAEINVAL);
	cr_assert_eq(sw.p.close_socket(s, &err), 0);
	cr_assert_eq(sw.p.close_socket(s, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAENOTSOCK);
	/* Left open on purpose: the last cleanup closes it. */
	s = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	cr_assert_neq(s, SP_INVALID_SOCKET);
	teardown();
}

Test(spi, register_memory_semantics)
{
	sp_socket c, a;
	char *buf = aligned_alloc(4096, 3 * 4096);
	/*
	 * Memory that cannot be valid: a page of an empty file (every touch is
	 * SIGBUS).  Unmapped addresses may be reused by the next mmap, and a
	 * PROT_NONE page some devices pin for reading all the same.
	 */
	int fd = memfd_create("sanprov-hole", MFD_CLOEXEC);
	void *hole = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int err = 0;

	cr_assert(buf && fd >= 0 && hole != MAP_FAILED);
	/* Not connected yet. */
	sp_socket s = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	cr_assert_null(sw.register_memory(s, buf, 4096, SP_MEM_READ, &err));
	cr_assert_eq(err, SP_WSAENOTCONN);
	pair(&c, &a);
	cr_assert_null(sw.register_memory(c, buf, 4096, 0, &err));
	cr_assert_eq(err, SP_WSAEINVAL, "no flags");
	cr_assert_null(sw.register_memory(c, buf, 4096, 4, &err));
	cr_assert_eq(err, SP_WSAEINVAL, "unknown flag");
	cr_assert_null(sw.register_memory(c, NULL, 4096, SP_MEM_READ, &err));
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_null(sw.register_memory(c, buf, 0, SP_MEM_READ, &err));
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_null(sw.register_memory(c, hole, 4096, SP_MEM_READ, &err));
	cr_assert_eq(err, SP_WSAEFAULT, "not valid memory: %d", err);

	/* The same buffer twice: one handle, counted. */
	void *h1 = sw.register_memory(c, buf, 8192, SP_MEM_READWRITE, &err);
	void *h2 = sw.register_memory(c, buf, 8192, SP_MEM_READWRITE, &err);
	cr_assert_not_null(h1);
	cr_assert_eq(h1, h2);
	/* Valid only on its socket: another connection does not know it. */
	cr_assert_eq(sw.deregister_memory(a, h1, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	cr_assert_eq(sw.deregister_memory(c, (void *)(uintptr_t)0xdeadbeef, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL, "forged handle");
	cr_assert_eq(sw.deregister_memory(c, h1, &err), 0);
	cr_assert_eq(sw.deregister_memory(c, h1, &err), 0, "the second reference");
	cr_assert_eq(sw.deregister_memory(c, h1, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL, "released");
	/* The same buffer on the other socket: its own handle. */
	void *h3 = sw.register_memory(a, buf, 8192, SP_MEM_READ, &err);
	cr_assert_not_null(h3);
	cr_assert_eq(sw.deregister_memory(a, h3, &err), 0);
	cr_assert_eq(sw.p.close_socket(s, &err), 0);
	munmap(hole, 4096);
	close(fd);
	teardown();
	free(buf);
}

Test(spi, rdma_descriptor_probe_and_contents)
{
	sp_socket c, a;
	char *buf = aligned_alloc(4096, 4096);
	uint8_t desc[128];
	uint32_t len = 4;
	uintptr_t p = (uintptr_t)buf;
	int err = 0;

	cr_assert_not_null(buf);
	pair(&c, &a);
	/* The switch's size probe. */
	cr_assert_eq(sw.register_rdma_memory(c, buf, 4096, SP_MEM_READ, desc, &len, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert(len > 4 && len <= sizeof(desc), "needed %u", len);
	cr_assert_eq(sw.register_rdma_memory(c, buf, 4096, SP_MEM_READ, desc, &len, &err), 0);
	/* Nothing of this process's address space goes to the peer. */
	for (uint32_t i = 0; i + sizeof(p) <= len; i++)
		cr_assert(memcmp(desc + i, &p, sizeof(p)), "buffer address at byte %u", i);
	cr_assert_eq(sw.register_rdma_memory(c, buf, 4096, 0, desc, &len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	/* Another socket's descriptor, and a damaged one, are refused. */
	cr_assert_eq(sw.deregister_rdma_memory(a, desc, len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	desc[0] ^= 1;
	cr_assert_eq(sw.deregister_rdma_memory(c, desc, len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	desc[0] ^= 1;
	cr_assert_eq(sw.deregister_rdma_memory(c, desc, len - 1, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert_eq(sw.deregister_rdma_memory(c, desc, len, &err), 0);
	cr_assert_eq(sw.deregister_rdma_memory(c, desc, len, &err), SP_SOCKET_ERROR);
	teardown();
	free(buf);
}

/* One RDMA operation of s, waited for; returns its WSA result. */
static int rdma(sp_rdma_fn fn, sp_socket s, struct sp_wsabufex *b, uint32_t n, uint8_t *desc,
		uint32_t dlen, uint32_t off, bool no_upcall, uint32_t *bytes)
{
	struct sw_ov o;
	int err = 0, ret;

	sw_ov_init(&o, no_upcall);
	if (!fn(s, b, n, desc, dlen, off, bytes, 0, &o.ov, NULL, NULL, &err)) {
		sw_ov_fini(&o);
		return -2; /* an RDMA operation is always overlapped */
	}
	if (err != SP_WSA_IO_PENDING) {
		sw_ov_fini(&o);
		return err;
	}
	ret = sw_ov_wait(&sw, s, &o, bytes, 10000);
	sw_ov_fini(&o);
	return ret;
}

Test(spi, rdma_write_and_read_with_scatter_gather)
{
	enum { LEN = 64 * 1024 };
	sp_socket c, a;
	char *target = aligned_alloc(4096, LEN), *src = aligned_alloc(4096, LEN);
	uint8_t desc[128];
	uint32_t dlen = sizeof(desc), bytes = 0;
	int err = 0;

	cr_assert(target && src);
	memset(target, 0, LEN);
	fill_pattern(src, LEN, 3);
	pair(&c, &a);
	/* a exposes target; c writes three pieces of src at offset 1000. */
	cr_assert_eq(sw.register_rdma_memory(a, target, LEN, SP_MEM_READWRITE, desc, &dlen, &err),
		     0);
	void *h = sw.register_memory(c, src, LEN, SP_MEM_READWRITE, &err);
	cr_assert_not_null(h);
	struct sp_wsabufex b[3] = { { 100, src, h },
				    { 5000, src + 100, h },
				    { 20000, src + 5100, h } };
	cr_assert_eq(rdma(sw.rdma_write, c, b, 3, desc, dlen, 1000, false, &bytes), 0);
	cr_assert_eq(bytes, 25100);
	cr_assert_eq(memcmp(target + 1000, src, 25100), 0);
	cr_assert_eq(target[999], 0);
	cr_assert_eq(target[1000 + 25100], 0);
	/* Read it back into the second half, polled (bit 0 of the event). */
	unsigned long upcalls = sw_upcall_completions();
	struct sp_wsabufex r = { 25100, src + 32768, h };
	memset(src + 32768, 0, 32768);
	cr_assert_eq(rdma(sw.rdma_read, c, &r, 1, desc, dlen, 1000, true, &bytes), 0);
	cr_assert_eq(bytes, 25100);
	cr_assert_eq(memcmp(src + 32768, src, 25100), 0);
	cr_assert_eq(sw_upcall_completions(), upcalls, "no up-call for a polled operation");
	/* Outside the target, or beyond the socket's RDMA size: clean errors. */
	cr_assert_eq(rdma(sw.rdma_write, c, b, 3, desc, dlen, LEN - 100, false, &bytes),
		     SP_WSAEINVAL);
	cr_assert_eq(rdma(sw.rdma_write, c, b, 1, desc, dlen - 1, 0, false, &bytes), SP_WSAEFAULT);
	/* A buffer outside its handle's registration. */
	struct sp_wsabufex bad = { 4096, src + LEN - 100, h };
	cr_assert_eq(rdma(sw.rdma_write, c, &bad, 1, desc, dlen, 0, false, &bytes), SP_WSAEFAULT);
	/* A write-only local handle cannot be the source of a write. */
	void *wo = sw.register_memory(c, src, 4096, SP_MEM_WRITE, &err);
	struct sp_wsabufex w = { 10, src, wo };
	cr_assert_eq(rdma(sw.rdma_write, c, &w, 1, desc, dlen, 0, false, &bytes), SP_WSAEFAULT);
	/* In use by a transfer: not deregistered under it (checked while one waits). */
	cr_assert_eq(sw.deregister_memory(c, wo, &err), 0);
	cr_assert_eq(sw.deregister_memory(c, h, &err), 0);
	cr_assert_eq(sw.deregister_rdma_memory(a, desc, dlen, &err), 0);
	teardown();
	free(target);
	free(src);
}

Test(spi, deregistered_rdma_memory_is_out_of_reach)
{
	sp_socket c, a;
	char *target = aligned_alloc(4096, 4096), *src = aligned_alloc(4096, 4096);
	uint8_t desc[128];
	uint32_t dlen = sizeof(desc), bytes;
	int err = 0;

	cr_assert(target && src);
	memset(target, 0, 4096);
	memset(src, 'x', 4096);
	pair(&c, &a);
	cr_assert_eq(sw.register_rdma_memory(a, target, 4096, SP_MEM_WRITE, desc, &dlen, &err), 0);
	void *h = sw.register_memory(c, src, 4096, SP_MEM_READ, &err);
	cr_assert_not_null(h);
	struct sp_wsabufex b = { 64, src, h };
	/* Registered for write only: reading is refused before the NIC sees it. */
	cr_assert_eq(rdma(sw.rdma_read, c, &b, 1, desc, dlen, 0, false, &bytes), SP_WSAEINVAL);
	cr_assert_eq(sw.deregister_rdma_memory(a, desc, dlen, &err), 0);
	/* The peer still has the descriptor; the NIC refuses it now. */
	int ret = rdma(sw.rdma_write, c, &b, 1, desc, dlen, 0, false, &bytes);
	cr_assert(ret == SP_WSAEACCES || ret == SP_WSAECONNRESET, "got %d", ret);
	cr_assert_eq(target[0], 0, "nothing was written");
	/* The failure broke the connection: the switch hears of it. */
	struct sw_ov o;
	sw_ov_init(&o, false);
	cr_assert_eq(sw.p.send(c, &b, 1, NULL, 0, &o.ov, NULL, NULL, &err), SP_SOCKET_ERROR);
	cr_assert_neq(err, SP_WSA_IO_PENDING);
	sw_ov_fini(&o);
	teardown();
	free(target);
	free(src);
}

Test(spi, close_aborts_pending_operations)
{
	sp_socket c, a;
	char *buf = aligned_alloc(4096, 4096);
	struct sw_ov o[3];
	int err = 0;

	cr_assert_not_null(buf);
	pair(&c, &a);
	void *h = sw.register_memory(a, buf, 4096, SP_MEM_WRITE, &err);
	cr_assert_not_null(h);
	for (int i = 0; i < 3; i++) {
		struct sp_wsabufex b = { 1024, buf + 1024 * i, h };
		uint32_t flags = 0;
		sw_ov_init(&o[i], i == 2);
		cr_assert_eq(sw.p.recv(a, &b, 1, NULL, &flags, &o[i].ov, NULL, NULL, &err),
			     SP_SOCKET_ERROR);
		cr_assert_eq(err, SP_WSA_IO_PENDING);
	}
	uint32_t n, flags;
	cr_assert_eq(sw.p.get_overlapped_result(a, &o[0].ov, &n, 0, &flags, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSA_IO_INCOMPLETE);
	/* In use by a pending receive: not deregistered. */
	cr_assert_eq(sw.deregister_memory(a, h, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	cr_assert_eq(sw.p.close_socket(a, &err), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(__atomic_load_n(&o[i].ov.internal, __ATOMIC_ACQUIRE),
			     SP_WSA_OPERATION_ABORTED);
		if (i < 2) {
			struct pollfd p = { .fd = o[i].fd, .events = POLLIN };
			cr_assert_eq(poll(&p, 1, 0), 1, "signalled through the up-call");
		}
		sw_ov_fini(&o[i]);
	}
	teardown();
	free(buf);
}

Test(spi, cache_callback_drops_partial_overlaps)
{
	sp_socket c, a;
	char *buf = aligned_alloc(4096, 4 * 4096);
	int err = 0;

	cr_assert_not_null(buf);
	pair(&c, &a);
	cr_assert_eq(sw.cache_callback(buf, 4096, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL, "nothing cached there");
	cr_assert_eq(sw.cache_callback(NULL, 0, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	void *h = sw.register_memory(c, buf, 4 * 4096, SP_MEM_READ, &err);
	cr_assert_not_null(h);
	cr_assert_eq(sw.deregister_memory(c, h, &err), 0);
	/* Still cached after the deregistration; one byte in its middle drops it. */
	if (strstr(sw.data.description, "registration cache on")) {
		cr_assert_eq(sw.cache_callback(buf + 5000, 1, &err), 0, "err %d", err);
		cr_assert_eq(sw.cache_callback(buf, 4 * 4096, &err), SP_SOCKET_ERROR);
		cr_assert_eq(err, SP_WSAEINVAL, "already gone");
	}
	teardown();
	free(buf);
}

Test(spi, nonblocking_connect_reports_through_events)
{
	struct sockaddr_in sin;
	sp_socket l = sw_listen(&sw, &sin), c, a;
	int lev = eventfd(0, EFD_CLOEXEC), cev = eventfd(0, EFD_CLOEXEC), err = 0;
	struct sp_network_events ne;
	struct pollfd p;

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert(lev >= 0 && cev >= 0);
	cr_assert_eq(sw.p.event_select(l, SP_EVENT_FD(lev), SP_FD_ACCEPT, &err), 0);
	/* Selected: non-blocking, nothing waits yet. */
	cr_assert_eq(sw.p.accept(l, NULL, NULL, NULL, 0, &err), SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAEWOULDBLOCK);
	c = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
	cr_assert_eq(sw.p.event_select(c, SP_EVENT_FD(cev), SP_FD_CONNECT | SP_FD_CLOSE, &err), 0);
	cr_assert_eq(sw.p.connect(c, (struct sockaddr *)&sin, sizeof(sin), &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEWOULDBLOCK);
	p = (struct pollfd){ .fd = lev, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 10000), 1, "FD_ACCEPT");
	cr_assert_eq(sw.p.enum_network_events(l, SP_EVENT_FD(lev), &ne, &err), 0);
	cr_assert_eq(ne.network_events, SP_FD_ACCEPT);
	struct sockaddr_in peer;
	int plen = sizeof(peer);
	a = sw.p.accept(l, (struct sockaddr *)&peer, &plen, NULL, 0, &err);
	cr_assert_neq(a, SP_INVALID_SOCKET, "err %d", err);
	cr_assert_eq(plen, sizeof(peer));
	cr_assert_eq(peer.sin_family, AF_INET);
	p = (struct pollfd){ .fd = cev, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 10000), 1, "FD_CONNECT");
	cr_assert_eq(sw.p.enum_network_events(c, SP_EVENT_FD(cev), &ne, &err), 0);
	cr_assert_eq(ne.network_events, SP_FD_CONNECT);
	cr_assert_eq(ne.error_code[SP_FD_CONNECT_BIT], 0);
	cr_assert_eq(sw.p.connect(c, (struct sockaddr *)&sin, sizeof(sin), &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEISCONN);
	/*
	 * The peer goes while a receive is posted (the switch always has its
	 * control ring posted): the receive fails and FD_CLOSE says why.
	 */
	char *buf = aligned_alloc(4096, 4096);
	void *h = sw.register_memory(c, buf, 4096, SP_MEM_WRITE, &err);
	struct sw_ov o;
	uint32_t flags = 0;
	cr_assert_not_null(h);
	sw_ov_init(&o, false);
	struct sp_wsabufex b = { 4096, buf, h };
	cr_assert_eq(sw.p.recv(c, &b, 1, NULL, &flags, &o.ov, NULL, NULL, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSA_IO_PENDING);
	cr_assert_eq(sw.p.close_socket(a, &err), 0);
	cr_assert_eq(sw_ov_wait(&sw, c, &o, NULL, 10000), SP_WSAECONNRESET);
	cr_assert_eq(poll(&p, 1, 10000), 1, "FD_CLOSE");
	cr_assert_eq(sw.p.enum_network_events(c, SP_EVENT_FD(cev), &ne, &err), 0);
	cr_assert_eq(ne.network_events, SP_FD_CLOSE);
	cr_assert_eq(ne.error_code[SP_FD_CLOSE_BIT], SP_WSAECONNRESET);
	/* Broken: new operations say so at once. */
	cr_assert_eq(sw.p.recv(c, &b, 1, NULL, &flags, &o.ov, NULL, NULL, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAECONNRESET);
	sw_ov_fini(&o);
	free(buf);
	close(lev);
	close(cev);
	teardown();
}

/*
 * FD_ACCEPT is re-enabled by every accept, as in Winsock, also by one that
 * found nothing: an accept that takes a connection the watcher saw arrive
 * at the same time, then one that answers WSAEWOULDBLOCK, must not leave
 * the next connection unsignalled.
 */
Test(spi, fd_accept_comes_again_after_an_accept_that_found_nothing)
{
	struct sockaddr_in sin;
	sp_socket l = sw_listen(&sw, &sin), c, a;
	int lev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), cev = eventfd(0, EFD_CLOEXEC), err = 0;
	struct sp_network_events ne;
	struct pollfd p = { .fd = lev, .events = POLLIN };
	uint64_t v;

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert(lev >= 0 && cev >= 0);
	cr_assert_eq(sw.p.event_select(l, SP_EVENT_FD(lev), SP_FD_ACCEPT, &err), 0);
	for (int i = 0; i < 60; i++) {
		bool by_event = i % 2;

		c = sw.p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);
		cr_assert_eq(sw.p.event_select(c, SP_EVENT_FD(cev), SP_FD_CONNECT, &err), 0);
		cr_assert_eq(sw.p.connect(c, (struct sockaddr *)&sin, sizeof(sin), &err),
			     SP_SOCKET_ERROR);
		cr_assert_eq(err, SP_WSAEWOULDBLOCK);
		/* Every other time, as a program that accepts until EAGAIN: at once, racing. */
		if (by_event)
			cr_assert_eq(poll(&p, 1, 3000), 1, "no FD_ACCEPT for connection %d", i);
		do
			a = sw.p.accept(l, NULL, NULL, NULL, 0, &err);
		while (a == SP_INVALID_SOCKET && err == SP_WSAEWOULDBLOCK && !by_event);
		cr_assert_neq(a, SP_INVALID_SOCKET, "err %d", err);
		cr_assert_eq(sw.p.accept(l, NULL, NULL, NULL, 0, &err), SP_INVALID_SOCKET);
		cr_assert_eq(err, SP_WSAEWOULDBLOCK);
		/* Whatever the watcher signals for this one has come before the next. */
		usleep(20000);
		(void)!read(lev, &v, sizeof(v));
		sw.p.enum_network_events(l, SP_EVENT_FD(lev), &ne, &err);
		cr_assert_eq(sw.p.close_socket(a, &err), 0);
		cr_assert_eq(sw.p.close_socket(c, &err), 0);
	}
	close(lev);
	close(cev);
	teardown();
}

static int reject_all(const struct sockaddr *caller, int len, uintptr_t data)
{
	(void)caller, (void)len;
	*(int *)data += 1;
	return SP_CF_REJECT;
}

struct conn_arg {
	struct sockaddr_in sin;
	int err;
	sp_socket c;
};

static void *connect_main(void *arg)
{
	struct conn_arg *x = arg;

	x->c = sw_connect(&sw, &x->sin, &x->err);
	return NULL;
}

Test(spi, condition_function_can_refuse)
{
	struct conn_arg x = { 0 };
	sp_socket l = sw_listen(&sw, &x.sin);
	int calls = 0, err = 0;
	pthread_t t;

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert_eq(pthread_create(&t, NULL, connect_main, &x), 0);
	cr_assert_eq(sw.p.accept(l, NULL, NULL, reject_all, (uintptr_t)&calls, &err),
		     SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSAECONNREFUSED);
	cr_assert_eq(calls, 1);
	pthread_join(t, NULL);
	/* The connecting side was refused too, as TCP's would be: no fallback. */
	cr_assert_eq(x.c, SP_INVALID_SOCKET, "the refused side got a connected socket");
	cr_assert_eq(x.err, SP_WSAECONNREFUSED, "connect: %d", x.err);
	teardown();
}

static int defer_first(const struct sockaddr *caller, int len, uintptr_t data)
{
	(void)caller, (void)len;
	return (*(int *)data)++ ? SP_CF_ACCEPT : SP_CF_DEFER;
}

Test(spi, condition_function_can_defer)
{
	struct conn_arg x = { 0 };
	sp_socket l = sw_listen(&sw, &x.sin), a;
	int calls = 0, err = 0;
	pthread_t t;

	cr_assert_neq(l, SP_INVALID_SOCKET);
	cr_assert_eq(pthread_create(&t, NULL, connect_main, &x), 0);
	cr_assert_eq(sw.p.accept(l, NULL, NULL, defer_first, (uintptr_t)&calls, &err),
		     SP_INVALID_SOCKET);
	cr_assert_eq(err, SP_WSATRY_AGAIN);
	/* The same request again: accepted now. */
	a = sw.p.accept(l, NULL, NULL, defer_first, (uintptr_t)&calls, &err);
	cr_assert_neq(a, SP_INVALID_SOCKET, "accept: %d", err);
	cr_assert_eq(calls, 2);
	pthread_join(t, NULL);
	cr_assert_neq(x.c, SP_INVALID_SOCKET, "connect: %d", x.err);
	teardown();
}

Test(spi, connect_to_nobody_lets_tcp_have_it)
{
	struct sockaddr_in sin;
	int err = 0;

	tdev_sockaddr(&sin, 1); /* nobody listens on port 1 */
	cr_assert_eq(sw_connect(&sw, &sin, &err), SP_INVALID_SOCKET);
	/* Only a timeout lets the switch fall back to TCP/IP. */
	cr_assert_eq(err, SP_WSAETIMEDOUT, "err %d", err);
	teardown();
}

Test(spi, socket_options_and_address_list)
{
	sp_socket c, a;
	int32_t v;
	int len = sizeof(v), err = 0;
	char out[512];
	uint32_t bytes = 0;

	pair(&c, &a);
	cr_assert_eq(
	    sw.p.get_sock_opt(c, SP_SOL_SOCKET, SP_SO_RDMA_THRESHOLD_SIZE, (char *)&v, &len, &err),
	    0);
	v = 1000;
	cr_assert_eq(sw.p.set_sock_opt(c, SP_SOL_SOCKET, SP_SO_RDMA_THRESHOLD_SIZE, (char *)&v,
				       sizeof(v), &err),
		     0);
	v = 0;
	cr_assert_eq(
	    sw.p.get_sock_opt(c, SP_SOL_SOCKET, SP_SO_RDMA_THRESHOLD_SIZE, (char *)&v, &len, &err),
	    0);
	cr_assert_eq(v, 1000);
	v = 0;
	cr_assert_eq(
	    sw.p.set_sock_opt(c, SP_SOL_SOCKET, SP_SO_MAX_RDMA_SIZE, (char *)&v, sizeof(v), &err),
	    SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEINVAL);
	len = 2;
	cr_assert_eq(
	    sw.p.get_sock_opt(c, SP_SOL_SOCKET, SP_SO_MAX_RDMA_SIZE, (char *)&v, &len, &err),
	    SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	len = sizeof(v);
	cr_assert_eq(sw.p.get_sock_opt(c, 6, 1, (char *)&v, &len, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAENOPROTOOPT);
	/* The address list: probed, then read. */
	cr_assert_eq(sw.p.ioctl(c, SP_SIO_ADDRESS_LIST_QUERY, NULL, 0, out, 4, &bytes, NULL, NULL,
				NULL, &err),
		     SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSAEFAULT);
	cr_assert(bytes > 4 && bytes <= sizeof(out));
	cr_assert_eq(sw.p.ioctl(c, SP_SIO_ADDRESS_LIST_QUERY, NULL, 0, out, sizeof(out), &bytes,
				NULL, NULL, NULL, &err),
		     0);
	struct sp_socket_address_list *l = (void *)out;
	struct sockaddr_in want;
	tdev_sockaddr(&want, 0);
	cr_assert_geq(l->count, 1);
	cr_assert_eq(l->address[0].len, sizeof(struct sockaddr_in));
	cr_assert_eq(((struct sockaddr_in *)l->address[0].sockaddr)->sin_addr.s_addr,
		     want.sin_addr.s_addr);
	teardown();
}

Test(spi, messages_in_order_in_both_completion_modes)
{
	sp_socket c, a;
	struct swc_sess sc, sa;
	struct swc_spi spi;
	struct swc_opts up = { .events = &sw_events };
	char *out = malloc(40000), *in = malloc(40000);

	cr_assert(out && in);
	pair(&c, &a);
	sw_spi(&sw, &spi);
	/* One end polls, the other waits for up-calls. */
	cr_assert_eq(swc_sess_init(&sc, &spi, c, NULL), 0);
	cr_assert_eq(swc_sess_init(&sa, &spi, a, &up), 0);
	fill_pattern(out, 40000, 9);
	/* Below the threshold: control messages only. */
	cr_assert_eq(swc_send(&sc, out, 40000), 0);
	cr_assert_eq(swc_recv(&sa, in, 40000), 0);
	cr_assert_eq(memcmp(in, out, 40000), 0);
	cr_assert_eq(sc.st.large_msgs, 0);
	cr_assert_geq(sc.st.small_msgs, 10);
	swc_sess_fini(&sc);
	swc_sess_fini(&sa);
	teardown();
	free(out);
	free(in);
}

struct late_send {
	sp_socket s;
	struct sp_wsabufex b;
	struct sw_ov ov;
};

static void *send_late(void *arg)
{
	struct late_send *l = arg;
	int err = 0;

	usleep(50000);
	sw.p.send(l->s, &l->b, 1, NULL, 0, &l->ov.ov, NULL, NULL, &err);
	return NULL;
}

Test(spi, get_overlapped_result_waits_for_the_completion)
{
	sp_socket c, a;
	char *buf = aligned_alloc(4096, 8192);
	struct late_send l;
	struct sw_ov o;
	uint32_t flags = 0, bytes = 0;
	pthread_t t;
	int err = 0;

	cr_assert_not_null(buf);
	memset(buf, 'w', 4096);
	pair(&c, &a);
	void *hr = sw.register_memory(a, buf + 4096, 4096, SP_MEM_WRITE, &err);
	void *hs = sw.register_memory(c, buf, 4096, SP_MEM_READ, &err);
	cr_assert(hr && hs);
	sw_ov_init(&o, true); /* polled: no up-call, the switch waits in the call */
	struct sp_wsabufex rb = { 4096, buf + 4096, hr };
	cr_assert_eq(sw.p.recv(a, &rb, 1, NULL, &flags, &o.ov, NULL, NULL, &err), SP_SOCKET_ERROR);
	cr_assert_eq(err, SP_WSA_IO_PENDING);
	l = (struct late_send){ .s = c, .b = { 100, buf, hs } };
	sw_ov_init(&l.ov, true);
	cr_assert_eq(pthread_create(&t, NULL, send_late, &l), 0);
	cr_assert_eq(sw.p.get_overlapped_result(a, &o.ov, &bytes, 1, &flags, &err), 0, "err %d",
		     err);
	cr_assert_eq(bytes, 100);
	cr_assert_eq(memcmp(buf + 4096, buf, 100), 0);
	pthread_join(t, NULL);
	cr_assert_eq(sw.p.get_overlapped_result(c, &l.ov.ov, &bytes, 1, &flags, &err), 0);
	sw_ov_fini(&o);
	sw_ov_fini(&l.ov);
	teardown();
	free(buf);
}
