/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Windows proxy driver's logic (kernel_proxy/windows/kpw_logic.c) over
 * a fake kernel with process objects, threads attached or not, process
 * exit and a memory manager that refuses or raises: the IOCTL with good
 * and bad input, handles used, closed or inherited across processes, a
 * process that exits with its handle alive elsewhere, quotas per process
 * and per user, and no memory-manager call under the device lock.  After
 * each case nothing is left, and nothing happened that Windows would
 * bugcheck on.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <time.h>

#include "kpw_fake.h"

#define PAGE 4096u
#define UMAX 0x00007fffffffffffull

static struct fake_kernel k;
static KPW_DEVICE *dev;
static struct fake_process *p1, *p2, *p3; /* p1, p2: user 1000; p3: user 2000 */

static const KPW_LIMITS limits = {
	.Core = { .max_ranges = 64,
		  .max_owners = 8,
		  .max_ranges_per_owner = 4, /* per process */
		  .max_bytes_per_owner = 64 * PAGE,
		  .user_addr_max = UMAX,
		  .page_size = PAGE,
		  .event_ring = 16 },
	.MaxFiles = 6,
	.MaxFilesPerProcess = 2,
	.MaxFilesPerUser = 3,
	.MaxRangesPerUser = 6,
	.MaxBytesPerUser = 96 * PAGE,
};

static void setup(void)
{
	fake_init(&k);
	p1 = fake_spawn(&k, 1, 1000);
	p2 = fake_spawn(&k, 2, 1000);
	p3 = fake_spawn(&k, 3, 2000);
	fake_map(p1, 0x10000, 0x10000 + 32 * PAGE);
	fake_map(p2, 0x10000, 0x10000 + 32 * PAGE);
	fake_map(p3, 0x10000, 0x10000 + 32 * PAGE);
	fake_run_as(p1);
	cr_assert_eq(KpwDeviceCreate(&limits, &fake_ops, &k, &dev), KPW_SUCCESS);
}

static void teardown(void)
{
	KPW_COUNTS c;

	KpwCounts(dev, &c);
	cr_assert_eq(c.Files + c.Processes + c.Users + c.Secured, 0, "records left");
	KpwDeviceDestroy(dev);
	cr_assert_eq(k.allocs, 0, "memory left: %ld", k.allocs);
	cr_assert_eq(k.secured, 0, "ranges left secured: %ld", k.secured);
	cr_assert_eq(k.mutexes, 0, "mutexes left: %ld", k.mutexes);
	cr_assert_eq(k.refs, 0, "process references left: %ld", k.refs);
	cr_assert_eq(k.wrong_process_unsecure, 0, "unsecured outside the securing process");
	cr_assert_eq(k.after_exit, 0, "memory manager or attach in an exited process");
	cr_assert_eq(k.exited_with_secured, 0, "a process exited with ranges secured");
	cr_assert_eq(k.mm_under_lock, 0, "memory manager or attach under the device lock");
	cr_assert_eq(k.misaligned_state, 0, "KAPC_STATE storage misaligned");
	cr_assert_eq(k.attached_now, 0, "still attached");
	cr_assert_eq(k.asked_attached, 0, "asked for the thread's process while attached");
}

TestSuite(driver, .init = setup);

static KPW_FILE *open_file(void)
{
	KPW_FILE *f;

	cr_assert_eq(KpwCreate(dev, 0, &f), KPW_SUCCESS);
	return f;
}

static void close_file(KPW_FILE *f)
{
	KpwCleanup(dev, f);
	KpwClose(dev, f);
}

/* The notify routine, then the address space goes. */
static void process_exits(struct fake_process *p)
{
	struct fake_process *was = fake_current();

	fake_run_as(p); /* its last thread */
	KpwProcessExit(dev, p);
	fake_exit(&k, p);
	fake_run_as(was);
}

static KPW_STATUS request(KPW_FILE *f, const void *req, uint32_t len, void *rsp, uint32_t cap)
{
	uint32_t info = 0;

	return KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, req, len, rsp, cap, &info);
}

/* A contract request through KPW_IOCTL_REQUEST: the response's status. */
static uint32_t secure(KPW_FILE *f, uint64_t addr, uint64_t len, uint64_t *handle)
{
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = KP_ACCESS_READ | KP_ACCESS_WRITE,
				     .addr = addr,
				     .len = len };
	struct kp_secure_rsp rsp;
	uint32_t info = 0;
	KPW_STATUS s = KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &rsp,
					sizeof(rsp), &info);

	cr_assert_eq(s, KPW_SUCCESS, "driver status 0x%x", (unsigned)s);
	cr_assert_eq(info, sizeof(rsp));
	if (!rsp.hdr.status && handle)
		*handle = rsp.handle;
	return rsp.hdr.status;
}

static uint32_t unsecure(KPW_FILE *f, uint64_t handle)
{
	struct kp_handle_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_UNSECURE },
				     .handle = handle };
	struct kp_rsp_hdr rsp;

	cr_assert_eq(request(f, &req, sizeof(req), &rsp, sizeof(rsp)), KPW_SUCCESS);
	return rsp.status;
}

static KPW_STATUS secure_status(KPW_FILE *f)
{
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = KP_ACCESS_READ,
				     .addr = 0x10000,
				     .len = PAGE };
	struct kp_secure_rsp rsp;
	uint32_t info;

	return KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &rsp, sizeof(rsp),
				&info);
}

Test(driver, secure_and_unsecure_through_the_ioctl)
{
	KPW_FILE *f = open_file();
	uint64_t h;

	cr_assert_eq(secure(f, 0x10000, 4 * PAGE, &h), KP_OK);
	cr_assert_eq(k.secured, 1);
	cr_assert_eq(p1->secured, 1);
	cr_assert_eq(unsecure(f, h), KP_OK);
	cr_assert_eq(k.secured, 0);
	cr_assert_eq(unsecure(f, h), KP_E_STALE_HANDLE);
	close_file(f);
	teardown();
}

Test(driver, contract_errors_come_back_as_statuses)
{
	KPW_FILE *f = open_file();

	cr_assert_eq(secure(f, 0x10001, PAGE, NULL), KP_E_ALIGN);
	cr_assert_eq(secure(f, 0x10000, 0, NULL), KP_E_ZERO_LENGTH);
	cr_assert_eq(secure(f, UMAX - PAGE + 1, 2 * PAGE, NULL), KP_E_OVERFLOW);
	cr_assert_eq(secure(f, 0xffff000000000000ull, PAGE, NULL), KP_E_OVERFLOW);
	/* MmSecureVirtualMemory answers NULL for a range that is not there: it does not raise. */
	cr_assert_eq(secure(f, 0x900000, PAGE, NULL), KP_E_FAULT);
	/* It may raise all the same: a status, not a crash. */
	k.raise_secure = true;
	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_E_FAULT);
	cr_assert_eq(k.secured, 0);
	KPW_COUNTS c;
	KpwCounts(dev, &c);
	cr_assert_eq(c.Secured, 0, "a refused range is not in the table");
	close_file(f);
	teardown();
}

Test(driver, bad_requests_fail_with_the_right_status)
{
	KPW_FILE *f = open_file();
	unsigned char in[64] = { 0 }, out[64];
	uint32_t info = 7;

	cr_assert_eq(KpwDeviceControl(dev, f, KPW_CTL_CODE(0x8ff), in, 16, out, sizeof(out), &info),
		     KPW_INVALID_DEVICE_REQUEST);
	cr_assert_eq(info, 0);
	/* The ring and the notify word are gone: their codes are unknown. */
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_CTL_CODE(0x801), in, 16, out, sizeof(out), &info),
		     KPW_INVALID_DEVICE_REQUEST);
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_CTL_CODE(0x802), in, 16, out, sizeof(out), &info),
		     KPW_INVALID_DEVICE_REQUEST);
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, in, 4, out, sizeof(out), &info),
		     KPW_INVALID_PARAMETER, "shorter than a header");
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, NULL, 16, out, sizeof(out), &info),
		     KPW_INVALID_PARAMETER);
	cr_assert_eq(
	    KpwDeviceControl(dev, NULL, KPW_IOCTL_REQUEST, in, 16, out, sizeof(out), &info),
	    KPW_INVALID_HANDLE);
	/* A response that does not fit the output buffer. */
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = KP_ACCESS_READ,
				     .addr = 0x10000,
				     .len = PAGE };
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), out, 8, &info),
		     KPW_BUFFER_TOO_SMALL);
	cr_assert_eq(k.secured, 0, "nothing secured for an answer that cannot be given");
	/* Room for a header but not for the response: the header says KP_E_SIZE. */
	struct kp_rsp_hdr small;
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &small,
				      sizeof(small), &info),
		     KPW_SUCCESS);
	cr_assert_eq(info, sizeof(small));
	cr_assert_eq(small.status, KP_E_SIZE);
	cr_assert_eq(k.secured, 0);
	/* A header that lies about its size is the core's KP_E_SIZE. */
	struct kp_rsp_hdr rsp;
	req.hdr.size = 999;
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &rsp,
				      sizeof(rsp), &info),
		     KPW_SUCCESS);
	cr_assert_eq(rsp.status, KP_E_SIZE);
	/* A request longer than any the contract has. */
	unsigned char big[200] = { 0 };
	memcpy(big, &req, sizeof(req));
	cr_assert_eq(
	    KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, big, sizeof(big), &rsp, sizeof(rsp), &info),
	    KPW_SUCCESS);
	cr_assert_eq(rsp.status, KP_E_SIZE);
	cr_assert_eq(k.secured, 0);
	close_file(f);
	teardown();
}

Test(driver, only_method_buffered_is_served)
{
	KPW_FILE *f = open_file();
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = KP_ACCESS_READ,
				     .addr = 0x10000,
				     .len = PAGE };
	struct kp_secure_rsp rsp;
	uint32_t info = 7;

	/* The request's own code with METHOD_IN/OUT_DIRECT or METHOD_NEITHER: not supported. */
	for (uint32_t m = 1; m < 4; m++) {
		cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST | m, &req, sizeof(req),
					      &rsp, sizeof(rsp), &info),
			     KPW_NOT_SUPPORTED, "method %u", m);
		cr_assert_eq(info, 0);
	}
	cr_assert_eq(k.secured, 0);
	close_file(f);
	teardown();
}

Test(driver, a_name_after_the_device_is_refused)
{
	KPW_FILE *f = NULL;

	cr_assert_eq(KpwCreate(dev, 8, &f), KPW_OBJECT_NAME_INVALID);
	cr_assert_null(f);
	/* A token that cannot be read opens nothing. */
	k.fail_user = true;
	cr_assert_eq(KpwCreate(dev, 0, &f), KPW_ACCESS_DENIED);
	cr_assert_null(f);
	teardown();
}

Test(driver, a_handle_works_only_in_the_process_that_opened_it)
{
	KPW_FILE *f = open_file();

	fake_run_as(p2); /* the handle was duplicated into process 2 */
	cr_assert_eq(secure_status(f), KPW_ACCESS_DENIED);
	cr_assert_eq(k.secured, 0);
	fake_run_as(p1);
	close_file(f);
	teardown();
}

Test(driver, a_reused_process_id_is_another_process)
{
	KPW_FILE *f = open_file(), *g;

	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_OK);
	/* Process 1 goes; its handle lives on in process 2, which hands it on. */
	fake_run_as(p2);
	g = open_file(); /* process 2 also has one of its own */
	process_exits(p1);
	cr_assert_eq(k.secured, 0, "released at the exit");
	/* A new process gets id 1 and the inherited handle: it is not the opener. */
	struct fake_process *again = fake_spawn(&k, 1, 1000);
	fake_map(again, 0x10000, 0x10000 + 32 * PAGE);
	fake_run_as(again);
	cr_assert_eq(secure_status(f), KPW_ACCESS_DENIED);
	cr_assert_eq(again->secured, 0);
	close_file(f); /* from the new process: nothing to release, no attach */
	process_exits(again);
	fake_run_as(p2);
	close_file(g);
	teardown();
}

Test(driver, quotas_are_per_process_across_its_handles)
{
	KPW_FILE *a = open_file(), *b = open_file(), *c;

	/* Two handles per process at most. */
	cr_assert_eq(KpwCreate(dev, 0, &c), KPW_QUOTA_EXCEEDED);
	/* Four ranges per process, whichever handle secures them. */
	cr_assert_eq(secure(a, 0x10000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(a, 0x11000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(b, 0x12000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(b, 0x13000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(b, 0x14000, PAGE, NULL), KP_E_QUOTA_RANGES);
	cr_assert_eq(secure(a, 0x14000, PAGE, NULL), KP_E_QUOTA_RANGES);
	cr_assert_eq(p1->secured, 4);
	close_file(a);
	close_file(b);
	teardown();
}

Test(driver, quotas_are_per_user_across_its_processes)
{
	KPW_FILE *a = open_file(), *b, *c, *d, *e;

	/* Process 2, same user: the user has 3 handles and 6 ranges in all. */
	cr_assert_eq(secure(a, 0x10000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(a, 0x11000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(a, 0x12000, PAGE, NULL), KP_OK);
	fake_run_as(p2);
	b = open_file();
	c = open_file();
	cr_assert_eq(secure(b, 0x10000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(b, 0x11000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(c, 0x12000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(c, 0x13000, PAGE, NULL), KP_E_QUOTA_RANGES, "the user's 7th range");
	fake_run_as(p1);
	cr_assert_eq(KpwCreate(dev, 0, &d), KPW_QUOTA_EXCEEDED, "the user's 4th handle");
	/* Another user has its own allowance. */
	fake_run_as(p3);
	e = open_file();
	cr_assert_eq(secure(e, 0x10000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(e, 0x11000, 16 * PAGE, NULL), KP_OK);
	cr_assert_eq(secure(e, 0x30000, 48 * PAGE, NULL), KP_E_QUOTA_BYTES, "64 pages a process");
	close_file(e);
	/* Closing one of process 2's handles keeps its ranges, and the user's count. */
	fake_run_as(p2);
	close_file(b);
	cr_assert_eq(secure(c, 0x13000, PAGE, NULL), KP_E_QUOTA_RANGES);
	/* Process 1's last handle gives the user its 3 ranges back. */
	fake_run_as(p1);
	close_file(a);
	fake_run_as(p2);
	cr_assert_eq(secure(c, 0x13000, PAGE, NULL), KP_OK);
	close_file(c);
	teardown();
}

Test(driver, closing_the_last_handle_from_another_process_releases_in_the_opener)
{
	KPW_FILE *f = open_file();
	KPW_COUNTS c;

	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(f, 0x12000, 2 * PAGE, NULL), KP_OK);
	KpwCounts(dev, &c);
	cr_assert_eq(c.Secured, 2);
	/*
	 * The last handle is closed by another process (it was duplicated):
	 * the ranges are unsecured in the process that secured them.
	 */
	fake_run_as(p3);
	KpwCleanup(dev, f);
	cr_assert_eq(k.secured, 0);
	cr_assert_eq(fake_current(), p3, "detached again");
	/* After cleanup the handle answers nothing, in its process either. */
	fake_run_as(p1);
	cr_assert_eq(secure_status(f), KPW_INVALID_HANDLE);
	KpwClose(dev, f);
	teardown();
}

Test(driver, ranges_belong_to_the_process_until_its_last_handle)
{
	KPW_FILE *a = open_file(), *b = open_file();
	uint64_t h;

	cr_assert_eq(secure(a, 0x10000, PAGE, &h), KP_OK);
	close_file(a);
	cr_assert_eq(k.secured, 1, "another handle of the process is open");
	cr_assert_eq(unsecure(b, h), KP_OK, "the process's range, through its other handle");
	cr_assert_eq(secure(b, 0x10000, PAGE, NULL), KP_OK);
	close_file(b);
	cr_assert_eq(k.secured, 0);
	teardown();
}

Test(driver, a_process_that_exits_with_its_handle_in_a_child)
{
	KPW_FILE *f = open_file();

	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(f, 0x14000, 4 * PAGE, NULL), KP_OK);
	/*
	 * Process 2 inherited the handle; process 1 exits: its handle is
	 * closed without IRP_MJ_CLEANUP (process 2's is still open).  The
	 * ranges must go before the address space does.
	 */
	process_exits(p1);
	cr_assert_eq(p1->secured, 0);
	/* The child uses the handle, then closes it: no attach to the dead process. */
	fake_run_as(p2);
	cr_assert_eq(secure_status(f), KPW_ACCESS_DENIED);
	close_file(f);
	cr_assert_eq(k.refs, 0, "the process object released");
	teardown();
}

Test(driver, an_exit_notified_from_another_context_attaches)
{
	KPW_FILE *f = open_file();

	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_OK);
	fake_run_as(p3);
	KpwProcessExit(dev, p1);
	cr_assert_eq(p1->secured, 0);
	cr_assert_eq(fake_current(), p3, "detached again");
	fake_exit(&k, p1);
	/* A process the driver never saw exits: nothing happens. */
	KpwProcessExit(dev, p2);
	close_file(f);
	teardown();
}

Test(driver, a_request_after_the_exit_is_refused)
{
	KPW_FILE *f = open_file();

	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_OK);
	/* The notify routine ran, a last request of the process comes after it. */
	KpwProcessExit(dev, p1);
	cr_assert_eq(secure_status(f), KPW_INVALID_HANDLE);
	cr_assert_eq(p1->secured, 0);
	close_file(f);
	fake_exit(&k, p1);
	teardown();
}

Test(driver, another_process_s_range_is_foreign)
{
	KPW_FILE *a = open_file();
	uint64_t h;

	cr_assert_eq(secure(a, 0x10000, PAGE, &h), KP_OK);
	fake_run_as(p2);
	KPW_FILE *b = open_file();
	cr_assert_eq(unsecure(b, h), KP_E_FOREIGN_HANDLE);
	cr_assert_eq(unsecure(b, h + (1ull << 40)), KP_E_UNKNOWN_HANDLE);
	close_file(b);
	fake_run_as(p1);
	cr_assert_eq(k.secured, 1, "still a's");
	close_file(a);
	teardown();
}

Test(driver, memory_that_goes_away_between_requests)
{
	KPW_FILE *f = open_file();
	uint64_t h;

	cr_assert_eq(secure(f, 0x10000, PAGE, &h), KP_OK);
	/* The process unmaps everything: MmSecureVirtualMemory answers NULL from now on. */
	fake_unmap_all(p1);
	cr_assert_eq(secure(f, 0x11000, PAGE, NULL), KP_E_FAULT);
	cr_assert_eq(k.secured, 1);
	cr_assert_eq(unsecure(f, h), KP_OK);
	cr_assert_eq(k.secured, 0);
	close_file(f);
	teardown();
}

Test(driver, out_of_memory_at_create_and_open)
{
	KPW_DEVICE *d2;
	KPW_FILE *f;

	k.fail_alloc_after = 0;
	cr_assert_eq(KpwDeviceCreate(&limits, &fake_ops, &k, &d2), KPW_INSUFFICIENT_RESOURCES);
	k.fail_alloc_after = 2;
	cr_assert_eq(KpwDeviceCreate(&limits, &fake_ops, &k, &d2), KPW_INSUFFICIENT_RESOURCES);
	for (int i = 0; i < 4; i++) {
		k.fail_alloc_after = i;
		cr_assert_eq(KpwCreate(dev, 0, &f), KPW_INSUFFICIENT_RESOURCES, "alloc %d", i);
		cr_assert_eq(k.refs, 0);
	}
	/* No memory for a range's record: a status, nothing secured. */
	f = open_file();
	k.fail_alloc_after = 0;
	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_E_NO_MEMORY);
	cr_assert_eq(k.secured, 0);
	close_file(f);
	teardown();
}

/*
 * The core's tables grow as processes secure: a growth that cannot
 * allocate answers KP_E_NO_MEMORY, and the range the logic secured for
 * that request is unsecured, in its process, before the request returns.
 */
Test(driver, a_table_growth_without_memory_unsecures_the_range)
{
	KPW_LIMITS small = limits;
	KPW_FILE *f, *f2;
	uint64_t h, h2;

	KpwDeviceDestroy(dev);
	small.Core.init_ranges = 2; /* one range: slot 0 is never used */
	small.Core.init_owners = 1;
	cr_assert_eq(KpwDeviceCreate(&small, &fake_ops, &k, &dev), KPW_SUCCESS);
	f = open_file();
	cr_assert_eq(secure(f, 0x10000, PAGE, &h), KP_OK);
	/* Alloc 1: the range's record; alloc 2: the core's slots, refused. */
	k.fail_alloc_after = 1;
	cr_assert_eq(secure(f, 0x20000, PAGE, NULL), KP_E_NO_MEMORY);
	cr_assert_eq(k.fail_alloc_after, -1, "the secure grew the table");
	cr_assert_eq(p1->secured, 1, "the range secured for the request was unsecured");
	cr_assert_eq(secure(f, 0x20000, PAGE, &h2), KP_OK, "grows now");
	cr_assert_eq(unsecure(f, h), KP_OK);
	/* A second process needs a second owner record: refused, then its hash. */
	fake_run_as(p2);
	f2 = open_file();
	for (int i = 1; i <= 2; i++) {
		k.fail_alloc_after = i;
		cr_assert_eq(secure(f2, 0x10000, PAGE, NULL), KP_E_NO_MEMORY, "alloc %d", i);
		cr_assert_eq(k.fail_alloc_after, -1);
		cr_assert_eq(p2->secured, 0);
	}
	cr_assert_eq(secure(f2, 0x10000, PAGE, NULL), KP_OK);
	close_file(f2);
	cr_assert_eq(p2->secured, 0);
	fake_run_as(p1);
	cr_assert_eq(unsecure(f, h2), KP_OK);
	close_file(f);
	teardown();
}

Test(driver, limits_are_checked)
{
	KPW_LIMITS l = limits;
	KPW_DEVICE *d2;

	l.MaxFilesPerUser = 0;
	cr_assert_eq(KpwDeviceCreate(&l, &fake_ops, &k, &d2), KPW_INVALID_PARAMETER);
	l = limits;
	l.MaxFiles = 0;
	cr_assert_eq(KpwDeviceCreate(&l, &fake_ops, &k, &d2), KPW_INVALID_PARAMETER);
	teardown();
}

/* A page-in that stalls in one process stalls nobody else. */

static sem_t in_mm, go_on;

static void stall(struct fake_kernel *kk)
{
	if (fake_current() != p1)
		return;
	(void)kk;
	sem_post(&in_mm);
	sem_wait(&go_on);
}

/* Threads other than the test's report instead of asserting. */
static uint32_t thread_secure(KPW_FILE *f)
{
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = KP_ACCESS_READ,
				     .addr = 0x10000,
				     .len = PAGE };
	struct kp_secure_rsp rsp = { .hdr.status = 999 };
	uint32_t info;

	if (KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &rsp, sizeof(rsp),
			     &info))
		return 998;
	return rsp.hdr.status;
}

static uint32_t stalled_status, others_status;

static void *stalled_secure(void *arg)
{
	fake_run_as(p1);
	stalled_status = thread_secure(arg);
	return NULL;
}

static void *others(void *arg)
{
	KPW_FILE *g;

	(void)arg;
	fake_run_as(p3);
	if (KpwCreate(dev, 0, &g))
		return others_status = 997, NULL;
	others_status |= thread_secure(g);
	KpwCleanup(dev, g);
	KpwClose(dev, g);
	fake_run_as(p2);
	if (KpwCreate(dev, 0, &g))
		return others_status = 997, NULL;
	others_status |= thread_secure(g);
	KpwProcessExit(dev, p2);
	fake_exit(&k, p2);
	KpwCleanup(dev, g);
	KpwClose(dev, g);
	return NULL;
}

Test(driver, a_stalled_memory_manager_call_blocks_no_other_process)
{
	KPW_FILE *f = open_file();
	pthread_t a, b;
	struct timespec until;

	sem_init(&in_mm, 0, 0);
	sem_init(&go_on, 0, 0);
	k.secure_hook = stall;
	pthread_create(&a, NULL, stalled_secure, f);
	sem_wait(&in_mm);
	/* Process 1 is in MmSecureVirtualMemory; processes 3 and 2 go on. */
	pthread_create(&b, NULL, others, NULL);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	int r = pthread_timedjoin_np(b, NULL, &until);
	sem_post(&go_on);
	pthread_join(a, NULL);
	if (r)
		pthread_join(b, NULL);
	cr_assert_eq(r, 0, "other processes waited for process 1's page-in");
	cr_assert_eq(stalled_status, KP_OK);
	cr_assert_eq(others_status, KP_OK);
	k.secure_hook = NULL;
	cr_assert_eq(p1->secured, 1);
	close_file(f);
	teardown();
}
