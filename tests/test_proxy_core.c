/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The proxy's portable core over a fake memory manager: every request
 * with good and bad input, each failure with its own status, quotas,
 * release of a process that never unsecured, the event ring.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kp_core.h"
#include "tpages.h"

#define PG 4096u

struct fake_mm {
	int secured;   /* secured now */
	int secures;   /* calls that succeeded */
	uint32_t fail; /* status the next secure returns, then 0 */
	int locked;    /* table lock depth: must be 1 around the mm calls */
	int bad_lock;  /* the mm was called without the lock */
	size_t allocated;
	size_t bytes;	 /* allocated now */
	int fail_alloc;	 /* the fail_alloc-th allocation from now fails (0: none) */
	int alloc_calls; /* allocations asked for */
};

static struct fake_mm mm;

/* Each block carries its size, so that the bytes in use can be counted. */
struct block {
	size_t size;
	_Alignas(16) unsigned char data[];
};

static void *f_alloc(void *ctx, size_t n)
{
	struct block *b;

	(void)ctx;
	mm.alloc_calls++;
	if (mm.fail_alloc && --mm.fail_alloc == 0)
		return NULL;
	b = calloc(1, sizeof(*b) + n);
	if (!b)
		return NULL;
	b->size = n;
	mm.allocated++;
	mm.bytes += n;
	return b->data;
}

static void f_free(void *ctx, void *p)
{
	struct block *b = (struct block *)((unsigned char *)p - offsetof(struct block, data));

	(void)ctx;
	mm.allocated--;
	mm.bytes -= b->size;
	free(b);
}

static void f_lock(void *ctx)
{
	(void)ctx;
	mm.locked++;
}

static void f_unlock(void *ctx)
{
	(void)ctx;
	mm.locked--;
}

static void f_nop(void *ctx)
{
	(void)ctx;
}

static uint32_t f_secure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, uint32_t access,
			 void **cookie)
{
	(void)ctx, (void)owner, (void)addr, (void)len, (void)access;
	if (mm.locked != 1)
		mm.bad_lock++;
	if (mm.fail) {
		uint32_t st = mm.fail;
		mm.fail = 0;
		return st;
	}
	*cookie = &mm;
	mm.secured++;
	mm.secures++;
	return KP_OK;
}

static void f_unsecure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, void *cookie)
{
	(void)ctx, (void)owner, (void)addr, (void)len;
	if (mm.locked != 1)
		mm.bad_lock++;
	cr_assert_eq(cookie, &mm);
	mm.secured--;
}

static const struct kp_platform fake = {
	.alloc = f_alloc,
	.free = f_free,
	.lock = f_lock,
	.unlock = f_unlock,
	.ev_lock = f_nop,
	.ev_unlock = f_nop,
	.secure = f_secure,
	.unsecure = f_unsecure,
};

static struct kp_core *core;

static void setup(void)
{
	struct kp_core_limits lim = {
		.max_ranges = 64,
		.max_owners = 4,
		.max_ranges_per_owner = 8,
		.max_bytes_per_owner = 16 * PG,
		.user_addr_max = (uint64_t)1 << 47,
		.page_size = PG,
		.event_ring = 8,
	};

	memset(&mm, 0, sizeof(mm));
	core = kp_core_create(&lim, &fake, NULL);
	cr_assert_not_null(core);
}

static void teardown(void)
{
	kp_core_destroy(core);
	cr_assert_eq(mm.secured, 0, "%d ranges left secured", mm.secured);
	cr_assert_eq(mm.allocated, 0, "%zu allocations leaked", mm.allocated);
	cr_assert_eq(mm.bad_lock, 0, "the memory manager was called without the table lock");
}

/* Criterion ignores failed assertions in .fini: each test ends with teardown(). */
TestSuite(core, .init = setup);

static uint32_t secure(uint64_t owner, uint64_t addr, uint64_t len, uint32_t access,
		       uint64_t *handle)
{
	struct kp_secure_req r = { .hdr = { sizeof(r), KP_PROTO_VERSION, KP_SECURE },
				   .access = access,
				   .addr = addr,
				   .len = len };
	struct kp_secure_rsp rsp;
	size_t n;
	uint32_t st = kp_core_dispatch(core, owner, &r, sizeof(r), &rsp, sizeof(rsp), &n);

	cr_assert_eq(n, sizeof(rsp));
	cr_assert_eq(rsp.hdr.status, st);
	cr_assert_eq(rsp.hdr.code, KP_SECURE);
	if (!st && handle)
		*handle = rsp.handle;
	return st;
}

static uint32_t by_handle(uint64_t owner, uint16_t code, uint64_t handle, struct kp_query_rsp *q)
{
	struct kp_handle_req r = { .hdr = { sizeof(r), KP_PROTO_VERSION, code }, .handle = handle };
	struct kp_query_rsp rsp;
	size_t n;
	uint32_t st = kp_core_dispatch(core, owner, &r, sizeof(r), &rsp, sizeof(rsp), &n);

	if (q)
		*q = rsp;
	return st;
}

Test(core, secure_query_unsecure)
{
	uint64_t h;
	struct kp_query_rsp q;

	cr_assert_eq(secure(7, 0x10000, 2 * PG, KP_ACCESS_READ | KP_ACCESS_WRITE, &h), KP_OK);
	cr_assert_eq(mm.secured, 1);
	cr_assert_eq(by_handle(7, KP_QUERY, h, &q), KP_OK);
	cr_assert_eq(q.addr, 0x10000);
	cr_assert_eq(q.len, 2 * PG);
	cr_assert_eq(q.access, KP_ACCESS_READ | KP_ACCESS_WRITE);
	cr_assert_eq(q.hdr.size, sizeof(q));
	cr_assert_eq(by_handle(7, KP_UNSECURE, h, NULL), KP_OK);
	cr_assert_eq(mm.secured, 0);
	teardown();
}

Test(core, every_bad_secure_has_its_own_status)
{
	struct {
		uint64_t addr, len;
		uint32_t access;
		uint32_t status;
	} cases[] = {
		{ 0x10000, 0, KP_ACCESS_READ, KP_E_ZERO_LENGTH },
		{ UINT64_MAX - PG + 1, 2 * PG, KP_ACCESS_READ, KP_E_OVERFLOW },
		{ ((uint64_t)1 << 47) - PG, 2 * PG, KP_ACCESS_READ, KP_E_OVERFLOW },
		{ 0x10001, PG, KP_ACCESS_READ, KP_E_ALIGN },
		{ 0x10000, PG + 1, KP_ACCESS_READ, KP_E_ALIGN },
		{ 0x10000, PG, 0, KP_E_ACCESS },
		{ 0x10000, PG, 4, KP_E_ACCESS },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(secure(1, cases[i].addr, cases[i].len, cases[i].access, NULL),
			     cases[i].status, "case %zu", i);
	cr_assert_eq(mm.secures, 0, "nothing reached the memory manager");
	teardown();
}

Test(core, malformed_requests)
{
	struct kp_secure_req r = { .hdr = { sizeof(r), KP_PROTO_VERSION, KP_SECURE },
				   .access = KP_ACCESS_READ,
				   .addr = 0x10000,
				   .len = PG };
	struct kp_events_rsp rsp;
	size_t n;

	/* Too short for a header, sizes that disagree, a response buffer too small. */
	cr_assert_eq(kp_core_dispatch(core, 1, &r, 7, &rsp, sizeof(rsp), &n), KP_E_SIZE);
	cr_assert_eq(n, 0);
	cr_assert_eq(kp_core_dispatch(core, 1, &r, sizeof(r) - 1, &rsp, sizeof(rsp), &n),
		     KP_E_SIZE);
	cr_assert_eq(kp_core_dispatch(core, 1, &r, sizeof(r), &rsp, 8, &n), KP_E_SIZE);
	cr_assert_eq(n, 0, "nothing written past the buffer");
	cr_assert_eq(kp_core_dispatch(core, 1, NULL, sizeof(r), &rsp, sizeof(rsp), &n), KP_E_SIZE);
	r.hdr.size = sizeof(r) + 8;
	cr_assert_eq(kp_core_dispatch(core, 1, &r, sizeof(r), &rsp, sizeof(rsp), &n), KP_E_SIZE);
	r.hdr.size = sizeof(r);
	r.hdr.version = 2;
	cr_assert_eq(kp_core_dispatch(core, 1, &r, sizeof(r), &rsp, sizeof(rsp), &n), KP_E_VERSION);
	r.hdr.version = KP_PROTO_VERSION;
	r.hdr.code = 99;
	cr_assert_eq(kp_core_dispatch(core, 1, &r, sizeof(r), &rsp, sizeof(rsp), &n), KP_E_CODE);
	r.hdr.code = KP_SECURE;
	r.flags = 1;
	cr_assert_eq(kp_core_dispatch(core, 1, &r, sizeof(r), &rsp, sizeof(rsp), &n), KP_E_FLAGS);
	cr_assert_eq(mm.secures, 0);
	teardown();
}

static struct kp_handle_req racy;
static atomic_bool racy_stop;

/* Another thread of the process rewrites the request while the proxy reads it. */
static void *racy_writer(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&racy_stop, memory_order_relaxed)) {
		__atomic_store_n(&racy.hdr.code, (uint16_t)KP_SECURE, __ATOMIC_RELAXED);
		__atomic_store_n(&racy.hdr.code, (uint16_t)KP_UNSECURE, __ATOMIC_RELAXED);
	}
	return NULL;
}

Test(core, a_request_changed_while_dispatched_is_served_as_validated, .timeout = 30)
{
	struct kp_events_rsp rsp;
	pthread_t t;
	long served = 0, wrong = 0;
	time_t end = time(NULL) + 3;

	racy = (struct kp_handle_req){ .hdr = { sizeof(racy), KP_PROTO_VERSION, KP_UNSECURE } };
	atomic_store(&racy_stop, false);
	cr_assert_eq(pthread_create(&t, NULL, racy_writer, NULL), 0);
	/*
	 * A 16-byte request is an UNSECURE (handle 0: unknown) or, if it reads
	 * as SECURE, too short for one: never a SECURE served from half a copy.
	 */
	while (!wrong && time(NULL) < end)
		for (int i = 0; i < 10000; i++) {
			size_t n;
			uint32_t st =
			    kp_core_dispatch(core, 1, &racy, sizeof(racy), &rsp, sizeof(rsp), &n);
			if (n && rsp.hdr.code == KP_UNSECURE && st == KP_E_UNKNOWN_HANDLE)
				served++;
			else if (n || st != KP_E_SIZE)
				wrong++;
		}
	atomic_store(&racy_stop, true);
	pthread_join(t, NULL);
	cr_assert_eq(wrong, 0, "%ld requests served other than validated", wrong);
	cr_assert_gt(served, 0);
	cr_assert_eq(mm.secures, 0, "a SECURE reached the memory manager");
	teardown();
}

Test(core, handles_unknown_released_and_foreign)
{
	uint64_t h, h2;

	cr_assert_eq(secure(1, 0x10000, PG, KP_ACCESS_READ, &h), KP_OK);
	cr_assert_eq(by_handle(1, KP_QUERY, 0, NULL), KP_E_UNKNOWN_HANDLE);
	cr_assert_eq(by_handle(1, KP_QUERY, (uint64_t)9999 << 32 | 1, NULL), KP_E_UNKNOWN_HANDLE);
	cr_assert_eq(by_handle(1, KP_QUERY, h + 1, NULL), KP_E_UNKNOWN_HANDLE, "never issued");
	cr_assert_eq(by_handle(2, KP_UNSECURE, h, NULL), KP_E_FOREIGN_HANDLE);
	cr_assert_eq(mm.secured, 1, "another process cannot release it");
	cr_assert_eq(by_handle(1, KP_UNSECURE, h, NULL), KP_OK);
	cr_assert_eq(by_handle(1, KP_UNSECURE, h, NULL), KP_E_STALE_HANDLE, "double unsecure");
	cr_assert_eq(by_handle(1, KP_QUERY, h, NULL), KP_E_STALE_HANDLE);
	/* The slot is reused: the old handle stays stale, the new one works. */
	cr_assert_eq(secure(1, 0x20000, PG, KP_ACCESS_READ, &h2), KP_OK);
	cr_assert_eq(by_handle(1, KP_QUERY, h, NULL), KP_E_STALE_HANDLE);
	cr_assert_eq(by_handle(1, KP_QUERY, h2, NULL), KP_OK);
	cr_assert_eq(by_handle(1, KP_UNSECURE, h2, NULL), KP_OK);
	teardown();
}

Test(core, quotas_refuse_cleanly)
{
	uint64_t h[8];

	for (int i = 0; i < 8; i++)
		cr_assert_eq(secure(3, 0x100000 + (uint64_t)i * PG, PG, KP_ACCESS_READ, &h[i]),
			     KP_OK);
	cr_assert_eq(secure(3, 0x200000, PG, KP_ACCESS_READ, NULL), KP_E_QUOTA_RANGES);
	/* Another process has its own quota... */
	cr_assert_eq(secure(4, 0x200000, 16 * PG, KP_ACCESS_READ, NULL), KP_OK);
	/* ...of bytes too. */
	cr_assert_eq(secure(4, 0x300000, PG, KP_ACCESS_READ, NULL), KP_E_QUOTA_BYTES);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(by_handle(3, KP_UNSECURE, h[i], NULL), KP_OK);
	cr_assert_eq(secure(3, 0x200000, PG, KP_ACCESS_READ, NULL), KP_OK, "room again");
	struct kp_core_counts n;
	kp_core_counts(core, &n);
	cr_assert_eq(n.ranges, 2);
	cr_assert_eq(n.owners, 2);
	/* Left secured on purpose: teardown must release them. */
	teardown();
}

Test(core, memory_manager_refusal_is_reported_and_leaks_nothing)
{
	mm.fail = KP_E_FAULT;
	cr_assert_eq(secure(1, 0x10000, PG, KP_ACCESS_READ, NULL), KP_E_FAULT);
	mm.fail = KP_E_UNWATCHABLE;
	cr_assert_eq(secure(1, 0x10000, PG, KP_ACCESS_READ, NULL), KP_E_UNWATCHABLE);
	struct kp_core_counts n;
	kp_core_counts(core, &n);
	cr_assert_eq(n.ranges, 0);
	cr_assert_eq(n.bytes, 0);
	teardown();
}

Test(core, exiting_process_leaves_no_trace)
{
	for (int i = 0; i < 5; i++)
		cr_assert_eq(secure(42, 0x100000 + (uint64_t)i * PG, PG, KP_ACCESS_READ, NULL),
			     KP_OK);
	cr_assert_eq(secure(43, 0x900000, PG, KP_ACCESS_READ, NULL), KP_OK);
	kp_core_release_owner(core, 42);
	cr_assert_eq(mm.secured, 1, "only the other process's range is left");
	struct kp_core_counts n;
	kp_core_counts(core, &n);
	cr_assert_eq(n.ranges, 1);
	cr_assert_eq(n.owners, 1);
	/* And the process id can come back as a new process with a full quota. */
	for (int i = 0; i < 8; i++)
		cr_assert_eq(secure(42, 0x100000 + (uint64_t)i * PG, PG, KP_ACCESS_READ, NULL),
			     KP_OK);
	teardown();
}

static uint64_t probes(void)
{
	struct kp_core_counts n;

	kp_core_counts(core, &n);
	return n.probes;
}

/* The core's memory on pages of its own, which tpages can watch: each allocation is a mapping. */
static struct {
	void *p;
	size_t len;
} paged[8];

static void *p_alloc(void *ctx, size_t n)
{
	size_t len = (n + PG - 1) & ~(size_t)(PG - 1);
	void *p;

	(void)ctx;
	for (size_t i = 0; i < sizeof(paged) / sizeof(paged[0]); i++)
		if (!paged[i].p) {
			/* Anonymous memory is zeroed. */
			p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
				 0);
			if (p == MAP_FAILED)
				return NULL;
			paged[i].p = p;
			paged[i].len = len;
			mm.allocated++;
			return p;
		}
	return NULL;
}

static void p_free(void *ctx, void *p)
{
	(void)ctx;
	for (size_t i = 0; i < sizeof(paged) / sizeof(paged[0]); i++)
		if (paged[i].p == p) {
			munmap(p, paged[i].len);
			paged[i].p = NULL;
			mm.allocated--;
			return;
		}
	cr_assert_fail("free of %p, never allocated", p);
}

static const struct kp_platform fake_paged = {
	.alloc = p_alloc,
	.free = p_free,
	.lock = f_lock,
	.unlock = f_unlock,
	.ev_lock = f_nop,
	.ev_unlock = f_nop,
	.secure = f_secure,
	.unsecure = f_unsecure,
};

/* Every page of the core's memory as it is now (its tables grow: new mappings). */
static void watch_core(void)
{
	tpages_unwatch_all();
	for (size_t i = 0; i < sizeof(paged) / sizeof(paged[0]); i++)
		if (paged[i].p)
			tpages_watch(paged[i].p, paged[i].len);
}

/* The pages of the core's memory (its record, slots, owners, hash, ring) one unsecure touches. */
static unsigned int unsecure_pages(uint64_t owner, uint64_t h)
{
	unsigned int n;
	uint32_t st;

	watch_core();
	tpages_arm();
	st = by_handle(owner, KP_UNSECURE, h, NULL);
	n = tpages_disarm();
	cr_assert_eq(st, KP_OK);
	return n;
}

static unsigned int release_pages(uint64_t owner)
{
	watch_core();
	tpages_arm();
	kp_core_release_owner(core, owner);
	return tpages_disarm();
}

/*
 * Unsecure and a process's release touch a few pages of the core's memory,
 * be the table empty or full: 65,535 unsecures once scanned the table each.
 * Measured in memory touched, not timed and not in a count the code keeps
 * (an uncounted scan would escape that): every page of the core is made
 * inaccessible, and the first access to each is counted.  The unsecure of
 * one range touches the core's record, the slot and its two neighbours on
 * the owner's list (a slot may straddle two pages) and the owner's record:
 * at most 8 pages, where a scan of the 65,536 slots touches 896.  A release
 * adds the owner hash's buckets and the records of the owners after it in
 * their run (the tables grow with the owners, the hash stays at most half
 * full): at most 10 pages on average, where a scan of the 4,001 owner
 * records touches about 40.  The records the core says it examined (kp_core_counts.probes)
 * are checked too.
 */
Test(core, unsecure_and_release_cost_the_same_whatever_the_table_holds, .timeout = 60)
{
	struct kp_core_limits lim = {
		.max_ranges = 65536,
		.max_owners = 8192,
		.max_ranges_per_owner = 65535,
		.max_bytes_per_owner = UINT64_MAX,
		.user_addr_max = (uint64_t)1 << 47,
		.page_size = PG,
		.event_ring = 8,
	};
	/*
	 * A release deletes from the owner hash, which reads the records of the
	 * entries after it in their run: a few more pages than an unsecure.
	 */
	enum { MAX_PAGES = 8, MAX_RELEASE_PAGES = 10 };
	struct kp_core *small = core;
	uint64_t h, p0, empty_unsecure, empty_release, *many;
	unsigned int empty_unsecure_pages, empty_release_pages, pages, most = 0;

	core = kp_core_create(&lim, &fake_paged, NULL);
	cr_assert_not_null(core);
	/* Nearly empty: one process, one range. */
	cr_assert_eq(secure(7, 0x10000, PG, KP_ACCESS_READ, &h), KP_OK);
	p0 = probes();
	empty_unsecure_pages = unsecure_pages(7, h);
	empty_unsecure = probes() - p0;
	cr_assert_eq(secure(7, 0x10000, PG, KP_ACCESS_READ, NULL), KP_OK);
	p0 = probes();
	empty_release_pages = release_pages(7);
	empty_release = probes() - p0;
	cr_assert_leq(empty_unsecure_pages, MAX_PAGES,
		      "unsecure touched %u pages of a table holding one range",
		      empty_unsecure_pages);
	cr_assert_leq(empty_release_pages, MAX_RELEASE_PAGES,
		      "a release touched %u pages of a table holding one range",
		      empty_release_pages);

	/* Full: 4,000 processes, then 60,000 ranges of one more. */
	for (uint64_t o = 1; o <= 4000; o++)
		cr_assert_eq(secure(1000 + o, 0x10000, PG, KP_ACCESS_READ, NULL), KP_OK);
	many = calloc(60000, sizeof(*many));
	cr_assert_not_null(many);
	for (uint64_t i = 0; i < 60000; i++)
		cr_assert_eq(secure(7, 0x10000 + i * PG, PG, KP_ACCESS_READ, &many[i]), KP_OK);
	for (int i = 0; i < 60000; i += 7919) {
		p0 = probes();
		pages = unsecure_pages(7, many[i]);
		cr_assert_leq(
		    probes() - p0, empty_unsecure,
		    "unsecure examined %llu records in a full table, %llu in an empty one",
		    (unsigned long long)(probes() - p0), (unsigned long long)empty_unsecure);
		cr_assert_leq(pages, MAX_PAGES,
			      "unsecure touched %u pages of a full table, %u of an empty one",
			      pages, empty_unsecure_pages);
		most = pages > most ? pages : most;
	}
	cr_log_info("pages touched by an unsecure: %u in an empty table, at most %u in a full one",
		    empty_unsecure_pages, most);
	/*
	 * 100 of the processes, each with its one range, whatever else is
	 * secured: on average, as the run each one's hash deletion reads varies.
	 */
	unsigned long total = 0, examined = 0;

	most = 0;
	for (uint64_t o = 3901; o <= 4000; o++) {
		p0 = probes();
		pages = release_pages(1000 + o);
		examined += probes() - p0;
		total += pages;
		most = pages > most ? pages : most;
	}
	cr_assert_leq(examined / 100, empty_release + 4,
		      "a release examined %lu records on average, %llu in an empty table",
		      examined / 100, (unsigned long long)empty_release);
	cr_assert_leq(total / 100, MAX_RELEASE_PAGES,
		      "a release touched %lu pages of a full table on average, %u of an empty one",
		      total / 100, empty_release_pages);
	cr_log_info("pages touched by a release: %u in an empty table, %lu on average and at most "
		    "%u in a full one",
		    empty_release_pages, total / 100, most);
	/* Forged and stale handles are still refused, each with its status. */
	cr_assert_eq(by_handle(7, KP_UNSECURE, many[0], NULL), KP_E_STALE_HANDLE);
	cr_assert_eq(by_handle(7, KP_UNSECURE, many[1] + 1, NULL), KP_E_UNKNOWN_HANDLE);
	cr_assert_eq(by_handle(7, KP_UNSECURE, (uint64_t)65536 << 32 | 1, NULL),
		     KP_E_UNKNOWN_HANDLE);
	cr_assert_eq(by_handle(1001, KP_UNSECURE, many[1], NULL), KP_E_FOREIGN_HANDLE);
	free(many);
	kp_core_destroy(core);
	tpages_unwatch_all();
	core = small;
	teardown();
}

static uint32_t events(uint64_t owner, uint32_t max, struct kp_events_rsp *rsp)
{
	struct kp_events_req r = { .hdr = { sizeof(r), KP_PROTO_VERSION, KP_EVENTS }, .max = max };
	size_t n;

	return kp_core_dispatch(core, owner, &r, sizeof(r), rsp, sizeof(*rsp), &n);
}

Test(core, event_stream_per_process_with_loss_reported)
{
	struct kp_events_rsp rsp;

	cr_assert_eq(events(1, 0, &rsp), KP_E_SIZE);
	cr_assert_eq(events(1, KP_EVENTS_MAX + 1, &rsp), KP_E_SIZE);
	cr_assert_eq(events(1, 4, &rsp), KP_OK); /* registers the reader */
	cr_assert_eq(rsp.count, 0);
	events(2, 4, &rsp);
	kp_core_post_event(core, 1, KP_EVENT_UNMAP, 0x1000, PG);
	kp_core_post_event(core, 2, KP_EVENT_REMOVE, 0x9000, PG);
	kp_core_post_event(core, 1, KP_EVENT_REMAP, 0x2000, 2 * PG);
	cr_assert_eq(events(1, 4, &rsp), KP_OK);
	cr_assert_eq(rsp.count, 2, "only its own events");
	cr_assert_eq(rsp.ev[0].kind, KP_EVENT_UNMAP);
	cr_assert_eq(rsp.ev[0].addr, 0x1000);
	cr_assert_eq(rsp.ev[1].kind, KP_EVENT_REMAP);
	cr_assert_lt(rsp.ev[0].seq, rsp.ev[1].seq);
	cr_assert_eq(events(2, 4, &rsp), KP_OK);
	cr_assert_eq(rsp.count, 1);
	/* More events than the ring holds (8): the reader learns it lost some. */
	for (int i = 0; i < 20; i++)
		kp_core_post_event(core, 1, KP_EVENT_UNMAP, 0x1000 * (uint64_t)i, PG);
	cr_assert_eq(events(1, KP_EVENTS_MAX, &rsp), KP_OK);
	cr_assert_eq(rsp.ev[0].kind, KP_EVENT_LOST);
	cr_assert_eq(rsp.count, 1 + 8);
	teardown();
}

Test(core, statuses_have_names_and_errnos)
{
	for (uint32_t s = 1; s < KP_E_MAX; s++) {
		cr_assert_neq(kp_status_errno(s), 0);
		cr_assert_str_neq(kp_status_str(s), "unknown status");
	}
	cr_assert_eq(kp_status_errno(KP_OK), 0);
	cr_assert_str_eq(kp_status_str(KP_E_MAX), "unknown status");
	teardown();
}

static const struct kp_core_limits large = {
	.max_ranges = 65536,
	.max_owners = 1024,
	.max_ranges_per_owner = 65535,
	.max_bytes_per_owner = UINT64_MAX,
	.user_addr_max = (uint64_t)1 << 47,
	.page_size = PG,
	.event_ring = 8,
};

/* Every handle issued so far still names its range. */
static void all_valid(const uint64_t *h, const uint64_t *owner, int n)
{
	for (int i = 0; i < n; i++) {
		struct kp_query_rsp q;
		cr_assert_eq(by_handle(owner[i], KP_QUERY, h[i], &q), KP_OK, "handle %d", i);
		cr_assert_eq(q.addr, 0x10000 + (uint64_t)i * PG, "handle %d", i);
	}
}

/*
 * A core sized for 65,535 ranges and 1,024 processes takes a few KiB at
 * creation, not megabytes; the tables grow as ranges and processes come,
 * and no growth moves a handle.
 */
Test(core, tables_start_small_and_grow_keeping_every_handle)
{
	enum { N = 3000, OWNERS = 200 };
	struct kp_core *small = core;
	uint64_t *h = calloc(N, sizeof(*h)), *owner = calloc(N, sizeof(*owner));
	size_t start, before, growths = 0;

	cr_assert(h && owner);
	before = mm.bytes;
	core = kp_core_create(&large, &fake, NULL);
	cr_assert_not_null(core);
	start = mm.bytes - before;
	fprintf(stderr, "core of %u ranges, %u owners: %zu bytes at creation\n", large.max_ranges,
		large.max_owners, start);
	cr_assert_leq(start, 16384, "%zu bytes allocated at creation", start);
	for (int i = 0; i < N; i++) {
		size_t b = mm.bytes;
		/* The first OWNERS ranges each bring a new process. */
		owner[i] = i < OWNERS ? 100 + (uint64_t)i : 100 + (uint64_t)(i % OWNERS);
		cr_assert_eq(
		    secure(owner[i], 0x10000 + (uint64_t)i * PG, PG, KP_ACCESS_READ, &h[i]), KP_OK,
		    "range %d", i);
		if (mm.bytes != b) {
			growths++;
			all_valid(h, owner, i + 1);
		}
	}
	fprintf(stderr, "%d ranges of %d owners: %zu bytes after %zu growths\n", N, OWNERS,
		mm.bytes - before, growths);
	cr_assert_geq(growths, 2 + 2, "slots and owners grew");
	cr_assert_leq(mm.bytes - before, 64 * (size_t)N + 64 * 1024,
		      "%zu bytes for %d ranges of %d owners", mm.bytes - before, N, OWNERS);
	/* Released and reissued, old handles stay stale, new ones work. */
	for (int i = 0; i < N; i += 3)
		cr_assert_eq(by_handle(owner[i], KP_UNSECURE, h[i], NULL), KP_OK);
	for (int i = 0; i < N; i += 3)
		cr_assert_eq(by_handle(owner[i], KP_QUERY, h[i], NULL), KP_E_STALE_HANDLE);
	kp_core_release_owner(core, 100);
	struct kp_core_counts n;
	kp_core_counts(core, &n);
	cr_assert_eq(n.owners, OWNERS - 1);
	cr_assert_eq(n.ranges, (uint32_t)mm.secured);
	kp_core_destroy(core);
	cr_assert_eq(mm.bytes, before, "all freed");
	free(h);
	free(owner);
	core = small;
	teardown();
}

/* The tables grow up to the limits, not past them, whatever their sizes. */
Test(core, tables_grow_to_the_limits_exactly)
{
	struct kp_core_limits lim = large;
	struct kp_core *small = core;
	uint64_t h;

	lim.max_ranges = 100; /* 99 ranges: slot 0 is never used */
	lim.max_owners = 20;
	lim.init_ranges = 3;
	lim.init_owners = 1;
	core = kp_core_create(&lim, &fake, NULL);
	cr_assert_not_null(core);
	for (uint64_t i = 0; i < 99; i++)
		cr_assert_eq(secure(1 + i % 20, 0x10000 + i * PG, PG, KP_ACCESS_READ, &h), KP_OK,
			     "range %llu", (unsigned long long)i);
	cr_assert_eq((h >> 32) < 100, 1);
	cr_assert_eq(secure(1, 0x900000, PG, KP_ACCESS_READ, NULL), KP_E_QUOTA_RANGES);
	cr_assert_eq(by_handle(1, KP_QUERY, (uint64_t)100 << 32 | 1, NULL), KP_E_UNKNOWN_HANDLE);
	cr_assert_eq(by_handle(1, KP_UNSECURE, h, NULL), KP_E_FOREIGN_HANDLE);
	cr_assert_eq(by_handle(1 + 98 % 20, KP_UNSECURE, h, NULL), KP_OK);
	cr_assert_eq(secure(21, 0x900000, PG, KP_ACCESS_READ, NULL), KP_E_NO_MEMORY,
		     "a 21st process");
	cr_assert_eq(secure(19, 0x900000, PG, KP_ACCESS_READ, NULL), KP_OK, "room again");
	kp_core_destroy(core);
	core = small;
	teardown();
}

/*
 * An allocation that fails while a table grows refuses that request
 * (no memory) before the memory manager sees it, and changes nothing:
 * every range secured before can be queried and unsecured, and the next
 * request grows the table.
 */
Test(core, growth_that_cannot_allocate_refuses_and_changes_nothing)
{
	enum { FIRST = KP_CORE_INIT_RANGES - 1 };
	struct kp_core *small = core;
	uint64_t h[FIRST + 1], owner[FIRST + 1];
	int secures;

	core = kp_core_create(&large, &fake, NULL);
	cr_assert_not_null(core);
	for (int i = 0; i < FIRST; i++) {
		owner[i] = 1 + (uint64_t)i % 4;
		cr_assert_eq(
		    secure(owner[i], 0x10000 + (uint64_t)i * PG, PG, KP_ACCESS_READ, &h[i]), KP_OK);
	}
	/* The slots are full: the next secure grows them, and that allocation fails. */
	secures = mm.secures;
	mm.fail_alloc = 1;
	cr_assert_eq(secure(1, 0x10000 + (uint64_t)FIRST * PG, PG, KP_ACCESS_READ, NULL),
		     KP_E_NO_MEMORY);
	cr_assert_eq(mm.fail_alloc, 0, "the secure tried to grow the table");
	cr_assert_eq(mm.secures, secures, "nothing reached the memory manager");
	struct kp_core_counts n;
	kp_core_counts(core, &n);
	cr_assert_eq(n.ranges, FIRST);
	all_valid(h, owner, FIRST);
	/* A released slot is reused without growing; then the table grows. */
	cr_assert_eq(by_handle(owner[5], KP_UNSECURE, h[5], NULL), KP_OK);
	mm.fail_alloc = 1;
	cr_assert_eq(secure(owner[5], 0x10000 + 5 * PG, PG, KP_ACCESS_READ, &h[5]), KP_OK);
	cr_assert_eq(mm.fail_alloc, 1, "no allocation for a free slot");
	mm.fail_alloc = 0;
	owner[FIRST] = 2;
	cr_assert_eq(
	    secure(owner[FIRST], 0x10000 + (uint64_t)FIRST * PG, PG, KP_ACCESS_READ, &h[FIRST]),
	    KP_OK);
	all_valid(h, owner, FIRST + 1);

	/* The owners are full (16): a 17th fails on its records, then on its hash. */
	for (uint64_t o = 5; o <= KP_CORE_INIT_OWNERS; o++)
		cr_assert_eq(secure(o, 0x4000000, PG, KP_ACCESS_READ, NULL), KP_OK);
	for (int k = 1; k <= 2; k++) {
		size_t bytes = mm.bytes;
		mm.fail_alloc = k;
		secures = mm.secures;
		cr_assert_eq(secure(99, 0x4000000, PG, KP_ACCESS_READ, NULL), KP_E_NO_MEMORY,
			     "allocation %d fails", k);
		cr_assert_eq(mm.fail_alloc, 0);
		cr_assert_eq(mm.secures, secures);
		cr_assert_eq(mm.bytes, bytes, "the half-grown table was freed");
	}
	/* Every process is still found by its id. */
	for (uint64_t o = 5; o <= KP_CORE_INIT_OWNERS; o++)
		cr_assert_eq(secure(o, 0x5000000, PG, KP_ACCESS_READ, NULL), KP_OK);
	all_valid(h, owner, FIRST + 1);
	cr_assert_eq(secure(99, 0x4000000, PG, KP_ACCESS_READ, NULL), KP_OK, "grows now");
	for (uint64_t o = 1; o <= KP_CORE_INIT_OWNERS; o++)
		kp_core_release_owner(core, o);
	kp_core_counts(core, &n);
	cr_assert_eq(n.ranges, 1);
	cr_assert_eq(n.owners, 1);
	kp_core_destroy(core);
	core = small;
	teardown();
}
