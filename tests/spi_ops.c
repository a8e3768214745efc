/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The SPI's data path, with the provider linked in: no allocation on it,
 * and stale work completions find nothing.
 *
 * malloc, calloc, realloc, free and the aligned allocations are defined
 * here (forwarding to glibc's) and counted while the operations run:
 * sends, receives, RDMA writes and reads between two sockets of this
 * process and their completions, polled and by up-call (the progress
 * thread delivers them), after a warm-up.  None may allocate.
 *
 * A work completion's wr_id names its socket's slot and its operation's
 * slot with their generations: one of a closed socket whose slot a new
 * socket took, or of an operation whose slot was reused, must find
 * nothing (it would complete someone else's operation).
 *
 *   spi_ops [OPERATIONS]   (default 10000; TAP)
 */
#include <errno.h>
#include <poll.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sp_internal.h"
#include "sw.h"
#include "tap.h"

/* Counted allocations ------------------------------------------------------------ */

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t size);

static atomic_bool counting;
static atomic_ulong n_allocs, n_frees;

static void count(atomic_ulong *c)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

void *malloc(size_t size)
{
	count(&n_allocs);
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	count(&n_allocs);
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	count(&n_allocs);
	return __libc_realloc(p, size);
}

void free(void *p)
{
	if (p)
		count(&n_frees);
	__libc_free(p);
}

void *aligned_alloc(size_t align, size_t size)
{
	count(&n_allocs);
	return __libc_memalign(align, size);
}

int posix_memalign(void **p, size_t align, size_t size)
{
	count(&n_allocs);
	*p = __libc_memalign(align, size);
	return *p ? 0 : ENOMEM;
}

/* A pair and its buffers ----------------------------------------------------------- */

static struct sw sw;

#define LEN 4096
static alignas(4096) char sbuf[LEN], rbuf[LEN], wsrc[LEN], rdst[LEN], area[LEN];

struct rig {
	sp_socket c, a;
	void *hs, *hr, *hw, *hd;
	uint8_t desc[64];
	uint32_t desc_len;
};

static int rig_open(struct rig *r)
{
	int err = 0;

	memset(r, 0, sizeof(*r));
	sw_pair(&sw, &r->c, &r->a);
	if (r->c == SP_INVALID_SOCKET || r->a == SP_INVALID_SOCKET)
		return -1;
	r->hs = sw.register_memory(r->c, sbuf, LEN, SP_MEM_READ, &err);
	r->hw = sw.register_memory(r->c, wsrc, LEN, SP_MEM_READ, &err);
	r->hd = sw.register_memory(r->c, rdst, LEN, SP_MEM_WRITE, &err);
	r->hr = sw.register_memory(r->a, rbuf, LEN, SP_MEM_WRITE, &err);
	r->desc_len = sizeof(r->desc);
	if (!r->hs || !r->hw || !r->hd || !r->hr ||
	    sw.register_rdma_memory(r->a, area, LEN, SP_MEM_READWRITE, r->desc, &r->desc_len, &err))
		return -1;
	return 0;
}

static void rig_close(struct rig *r)
{
	int err;

	if (r->c != SP_INVALID_SOCKET)
		sw.p.close_socket(r->c, &err);
	if (r->a != SP_INVALID_SOCKET)
		sw.p.close_socket(r->a, &err);
}

/* Wait for o: polled (bit 0 of the event), or its up-call's event. 0 or the WSA error. */
static int wait_op(sp_socket s, struct sw_ov *o, uint32_t *bytes)
{
	uint32_t flags;
	int err = 0;

	if (!SP_OV_NO_UPCALL(&o->ov))
		return sw_ov_wait(&sw, s, o, bytes, 10000);
	while (sw.p.get_overlapped_result(s, &o->ov, bytes, 0, &flags, &err))
		if (err != SP_WSA_IO_INCOMPLETE)
			return err;
	return 0;
}

/* One round: a receive and a send, an RDMA write, an RDMA read (4 operations). */
static int round_trip(struct rig *r, struct sw_ov o[4], uint32_t size)
{
	struct sp_wsabufex s = { size, sbuf, r->hs }, rv = { size, rbuf, r->hr },
			   w = { size, wsrc, r->hw }, d = { size, rdst, r->hd };
	uint32_t bytes, flags = 0;
	int err = 0;

	if (!sw.p.recv(r->a, &rv, 1, NULL, &flags, &o[0].ov, NULL, NULL, &err) ||
	    err != SP_WSA_IO_PENDING)
		return -1;
	if (!sw.p.send(r->c, &s, 1, NULL, 0, &o[1].ov, NULL, NULL, &err) ||
	    err != SP_WSA_IO_PENDING)
		return -1;
	if (wait_op(r->c, &o[1], &bytes) || bytes != size || wait_op(r->a, &o[0], &bytes) ||
	    bytes != size)
		return -1;
	if (!sw.rdma_write(r->c, &w, 1, r->desc, r->desc_len, 0, NULL, 0, &o[2].ov, NULL, NULL,
			   &err) ||
	    err != SP_WSA_IO_PENDING || wait_op(r->c, &o[2], &bytes) || bytes != size)
		return -1;
	if (!sw.rdma_read(r->c, &d, 1, r->desc, r->desc_len, 0, NULL, 0, &o[3].ov, NULL, NULL,
			  &err) ||
	    err != SP_WSA_IO_PENDING || wait_op(r->c, &o[3], &bytes) || bytes != size)
		return -1;
	return 0;
}

/* n operations after a warm-up, allocations counted: -1 when an operation failed. */
static long count_allocs(struct rig *r, bool upcall, unsigned int n, unsigned long *frees)
{
	struct sw_ov o[4];
	long allocs = -1;
	unsigned int i;

	for (i = 0; i < 4; i++)
		sw_ov_init(&o[i], !upcall);
	for (i = 0; i < 64; i++)
		if (round_trip(r, o, 64))
			goto out;
	atomic_store(&n_allocs, 0);
	atomic_store(&n_frees, 0);
	atomic_store(&counting, true);
	for (i = 0; i < n / 4; i++)
		if (round_trip(r, o, 64 + i % 1024))
			break;
	atomic_store(&counting, false);
	if (i == n / 4) {
		allocs = (long)atomic_load(&n_allocs);
		*frees = atomic_load(&n_frees);
	}
out:
	for (i = 0; i < 4; i++)
		sw_ov_fini(&o[i]);
	return allocs;
}

static void test_no_allocation(bool upcall, unsigned int n)
{
	unsigned long frees = 0;
	struct rig r;
	long allocs = -1;

	if (!rig_open(&r))
		allocs = count_allocs(&r, upcall, n, &frees);
	rig_close(&r);
	tap_result(allocs == 0 && frees == 0,
		   "%u operations %s: %ld allocations, %lu frees (none expected)", n / 4 * 4,
		   upcall ? "by up-call" : "polled", allocs, frees);
}

/* Stale work completions ----------------------------------------------------------- */

static struct sp_sock *sock_of(sp_socket s)
{
	int err;

	return sp_sock_get(s, &err);
}

/* What handle_wc() does with a work completion's wr_id: take its operation, or NULL. */
static struct sp_op *take(uint64_t wr_id)
{
	struct sp_sock *so = sp_op_wc_sock(wr_id);
	struct sp_op *op = NULL;

	if (!so)
		return NULL;
	pthread_mutex_lock(&so->lock);
	op = sp_op_take(so, wr_id);
	/* Put back: the test only looks (nothing else takes it meanwhile). */
	if (op)
		op->state = SP_OP_POSTED;
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return op;
}

/* The wr_id of the receive posted on s with o (its oldest outstanding operation). */
static uint64_t posted_wr_id(sp_socket s)
{
	struct sp_sock *so = sock_of(s);
	uint64_t id = 0;

	if (!so)
		return 0;
	pthread_mutex_lock(&so->lock);
	if (so->ops)
		id = so->ops->handle;
	pthread_mutex_unlock(&so->lock);
	sp_sock_put(so);
	return id;
}

/* Post a receive on each socket of r (o[0] on c, o[1] on a); their wr_ids in id[]. */
static int post_both(struct rig *r, struct sw_ov o[2], uint64_t id[2])
{
	struct sp_wsabufex rc = { 64, rdst, r->hd }, ra = { 64, rbuf, r->hr };
	uint32_t flags = 0;
	int err = 0;

	if ((sw.p.recv(r->c, &rc, 1, NULL, &flags, &o[0].ov, NULL, NULL, &err) &&
	     err != SP_WSA_IO_PENDING) ||
	    (sw.p.recv(r->a, &ra, 1, NULL, &flags, &o[1].ov, NULL, NULL, &err) &&
	     err != SP_WSA_IO_PENDING))
		return -1;
	id[0] = posted_wr_id(r->c);
	id[1] = posted_wr_id(r->a);
	return id[0] && id[1] ? 0 : -1;
}

static void test_stale_socket(void)
{
	uint64_t old_id[2] = { 0 }, new_id[2] = { 0 };
	struct sw_ov o1[2], o2[2];
	struct rig r1, r2;
	uint32_t bytes;
	int found_old = -1, found_new = -1, reused = 0;
	bool done = false;

	for (int i = 0; i < 2; i++) {
		sw_ov_init(&o1[i], true);
		sw_ov_init(&o2[i], true);
	}
	/* A receive in flight on each socket of a pair; then both close. */
	if (rig_open(&r1) || post_both(&r1, o1, old_id))
		goto out;
	rig_close(&r1);
	/* A new pair takes the freed slots, with the same receives. */
	if (rig_open(&r2) || post_both(&r2, o2, new_id))
		goto out2;
	/* The completions the old QPs would have left in the CQ. */
	found_old = (take(old_id[0]) != NULL) + (take(old_id[1]) != NULL);
	found_new = (take(new_id[0]) != NULL) + (take(new_id[1]) != NULL);
	/* The same slot of the table and of the slab: only the socket's generation tells. */
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 2; j++)
			reused += (old_id[i] & 0x3fffffffffffffull) ==
				      (new_id[j] & 0x3fffffffffffffull) &&
				  old_id[i] != new_id[j];
	/* The new receives are still in flight and complete with the peers' sends. */
	done = !sw_send_wait(&sw, r2.c, sbuf, 64, r2.hs) && !wait_op(r2.a, &o2[1], &bytes) &&
	       bytes == 64;
out2:
	rig_close(&r2);
out:
	for (int i = 0; i < 2; i++) {
		sw_ov_fini(&o1[i]);
		sw_ov_fini(&o2[i]);
	}
	tap_result(found_old == 0 && found_new == 2 && reused > 0 && done,
		   "closed sockets' wr_ids %#llx %#llx, their slots reused (%#llx %#llx), find "
		   "nothing (old found %d, new found %d, slots reused %d, new completed %d)",
		   (unsigned long long)old_id[0], (unsigned long long)old_id[1],
		   (unsigned long long)new_id[0], (unsigned long long)new_id[1], found_old,
		   found_new, reused, done);
}

static void test_stale_op(void)
{
	struct sp_wsabufex rv = { 64, rbuf, NULL };
	uint64_t old_id = 0, new_id = 0;
	struct sw_ov o;
	struct rig r;
	uint32_t flags = 0, bytes;
	bool ok = false, found_old = true, found_new = false;
	int err = 0;

	sw_ov_init(&o, true);
	if (rig_open(&r))
		goto out;
	rv.handle = r.hr;
	/* A receive completes; the next one takes the same slot. */
	if (sw.p.recv(r.a, &rv, 1, NULL, &flags, &o.ov, NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING)
		goto out;
	old_id = posted_wr_id(r.a);
	if (sw_send_wait(&sw, r.c, sbuf, 64, r.hs) || wait_op(r.a, &o, &bytes))
		goto out;
	if (sw.p.recv(r.a, &rv, 1, NULL, &flags, &o.ov, NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING)
		goto out;
	new_id = posted_wr_id(r.a);
	found_old = take(old_id) != NULL;
	found_new = take(new_id) != NULL;
	ok = !sw_send_wait(&sw, r.c, sbuf, 64, r.hs) && !wait_op(r.a, &o, &bytes);
out:
	rig_close(&r);
	sw_ov_fini(&o);
	tap_result(ok && old_id && new_id && old_id != new_id &&
		       (old_id & 0xffff) == (new_id & 0xffff) && !found_old && found_new,
		   "an operation's old wr_id %#llx, its slot reused (%#llx), finds nothing "
		   "(old found %d, new found %d)",
		   (unsigned long long)old_id, (unsigned long long)new_id, found_old, found_new);
}

int main(int argc, char **argv)
{
	unsigned int n = argc > 1 ? (unsigned int)strtoul(argv[1], NULL, 0) : 10000;
	int ret;

	tap_plan(4);
	ret = sw_start(&sw, sp_wsp_startup_ex);
	if (ret) {
		printf("Bail out! startup: %d\n", ret);
		return 1;
	}
	test_no_allocation(false, n);
	test_no_allocation(true, n);
	test_stale_socket();
	test_stale_op();
	sw_unload(&sw);
	return tap_exit();
}
