/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Windows proxy driver's logic (kernel_proxy/windows/kpw_logic.c) over
 * a fake kernel that refuses, raises and unmaps on demand: every IOCTL with
 * good and bad input, exceptions in the middle of an operation, cleanup of
 * a process that never unsecured (from another process too), quotas, the
 * event ring and the notify word.  After each case nothing is left.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "kpw_fake.h"

#define PAGE 4096u
#define UMAX 0x00007fffffffffffull

static struct fake_kernel k;
static KPW_DEVICE *dev;

static const KPW_LIMITS limits = {
	.Core = { .max_ranges = 64,
		  .max_owners = 8,
		  .max_ranges_per_owner = 4,
		  .max_bytes_per_owner = 64 * PAGE,
		  .user_addr_max = UMAX,
		  .page_size = PAGE,
		  .event_ring = 16 },
	.MaxFiles = 6,
	.MaxFilesPerProcess = 2,
	.RingEntries = 8,
};

static void setup(void)
{
	fake_init(&k);
	fake_map(&k, 1, 0x10000, 0x10000 + 32 * PAGE);
	fake_map(&k, 2, 0x10000, 0x10000 + 32 * PAGE);
	cr_assert_eq(KpwDeviceCreate(&limits, &fake_ops, &k, &dev), KPW_SUCCESS);
}

static void teardown(void)
{
	KpwDeviceDestroy(dev);
	cr_assert_eq(k.allocs, 0, "memory left: %ld", k.allocs);
	cr_assert_eq(k.secured, 0, "ranges left secured: %ld", k.secured);
	cr_assert_eq(k.mdls, 0, "MDLs left: %ld", k.mdls);
	cr_assert_eq(k.sections, 0, "sections left: %ld", k.sections);
	cr_assert_eq(k.views, 0, "views left: %ld", k.views);
	cr_assert_eq(k.processes, 0, "process references left: %ld", k.processes);
	cr_assert_eq(k.wrong_process_unsecure, 0, "unsecured outside the securing process");
}

TestSuite(driver, .init = setup);

static KPW_FILE *open_file(void)
{
	KPW_FILE *f;

	cr_assert_eq(KpwCreate(dev, &f), KPW_SUCCESS);
	return f;
}

static void close_file(KPW_FILE *f)
{
	KpwCleanup(dev, f);
	KpwClose(dev, f);
}

/* A contract request through KPW_IOCTL_REQUEST: the response's status, or a driver status. */
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
	uint32_t info = 0;

	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &rsp,
				      sizeof(rsp), &info),
		     KPW_SUCCESS);
	return rsp.status;
}

Test(driver, secure_and_unsecure_through_the_ioctl)
{
	KPW_FILE *f = open_file();
	uint64_t h;

	cr_assert_eq(secure(f, 0x10000, 4 * PAGE, &h), KP_OK);
	cr_assert_eq(k.secured, 1);
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
	/* The memory manager raises on a range that is not mapped: a status, not a crash. */
	cr_assert_eq(secure(f, 0x900000, PAGE, NULL), KP_E_FAULT);
	k.raise_secure = true;
	cr_assert_eq(secure(f, 0x10000, PAGE, NULL), KP_E_FAULT);
	cr_assert_eq(k.secured, 0);
	close_file(f);
	teardown();
}

Test(driver, bad_requests_fail_with_the_right_status)
{
	KPW_FILE *f = open_file();
	unsigned char in[64] = { 0 }, out[64];
	uint32_t info = 7;

	cr_assert_eq(KpwDeviceControl(dev, f, 0x12345, in, 16, out, sizeof(out), &info),
		     KPW_INVALID_DEVICE_REQUEST);
	cr_assert_eq(info, 0);
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
	close_file(f);
	teardown();
}

Test(driver, a_handle_works_only_in_the_process_that_opened_it)
{
	KPW_FILE *f = open_file();
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = KP_ACCESS_READ,
				     .addr = 0x10000,
				     .len = PAGE };
	struct kp_secure_rsp rsp;
	uint32_t info;

	k.pid = 2; /* the handle was duplicated into process 2 */
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &req, sizeof(req), &rsp,
				      sizeof(rsp), &info),
		     KPW_ACCESS_DENIED);
	cr_assert_eq(k.secured, 0);
	k.pid = 1;
	close_file(f);
	teardown();
}

Test(driver, quotas_per_handle_and_per_process)
{
	KPW_FILE *a = open_file(), *b = open_file(), *c;

	/* Two handles per process at most. */
	cr_assert_eq(KpwCreate(dev, &c), KPW_QUOTA_EXCEEDED);
	/* Four ranges per handle. */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(secure(a, 0x10000 + (uint64_t)i * PAGE, PAGE, NULL), KP_OK);
	cr_assert_eq(secure(a, 0x20000, PAGE, NULL), KP_E_QUOTA_RANGES);
	/* Another process has its own allowance. */
	k.pid = 2;
	KPW_FILE *d = open_file();
	cr_assert_eq(secure(d, 0x10000, PAGE, NULL), KP_OK);
	close_file(d);
	k.pid = 1;
	close_file(a);
	close_file(b);
	teardown();
}

Test(driver, cleanup_releases_what_a_process_never_unsecured)
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
	k.pid = 3;
	KpwCleanup(dev, f);
	cr_assert_eq(k.secured, 0);
	cr_assert_eq(k.pid, 3, "detached again");
	cr_assert_eq(k.attached, 0);
	/* After cleanup the handle answers nothing. */
	k.pid = 1;
	unsigned char out[64];
	uint32_t info;
	struct kp_handle_req q = { .hdr = { sizeof(q), KP_PROTO_VERSION, KP_QUERY }, .handle = 1 };
	cr_assert_eq(
	    KpwDeviceControl(dev, f, KPW_IOCTL_REQUEST, &q, sizeof(q), out, sizeof(out), &info),
	    KPW_INVALID_HANDLE);
	KpwClose(dev, f);
	teardown();
}

static KPW_STATUS map_ring(KPW_FILE *f, struct kpw_map_rsp *rsp, uint32_t flags)
{
	struct kpw_map_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KPW_MAP_RING },
				   .flags = flags };
	uint32_t info = 0;

	return KpwDeviceControl(dev, f, KPW_IOCTL_MAP_RING, &req, sizeof(req), rsp, sizeof(*rsp),
				&info);
}

Test(driver, the_ring_is_a_section_of_the_driver_mapped_once)
{
	KPW_FILE *f = open_file();
	struct kpw_map_rsp rsp;
	struct kpw_map_req bad = { .hdr = { sizeof(bad), KP_PROTO_VERSION + 1, KPW_MAP_RING } };
	uint32_t info;

	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_MAP_RING, &bad, sizeof(bad), &rsp,
				      sizeof(rsp), &info),
		     KPW_INVALID_PARAMETER, "version");
	bad.hdr.version = KP_PROTO_VERSION;
	bad.hdr.code = KP_SECURE;
	cr_assert_eq(KpwDeviceControl(dev, f, KPW_IOCTL_MAP_RING, &bad, sizeof(bad), &rsp,
				      sizeof(rsp), &info),
		     KPW_INVALID_PARAMETER, "code");
	cr_assert_eq(map_ring(f, &rsp, 1), KPW_INVALID_PARAMETER, "flags");
	cr_assert_eq(
	    KpwDeviceControl(dev, f, KPW_IOCTL_MAP_RING, &bad, sizeof(bad), &rsp, 8, &info),
	    KPW_BUFFER_TOO_SMALL);
	/* The section cannot be made; then the view cannot be mapped: nothing stays. */
	k.fail_section = true;
	cr_assert_eq(map_ring(f, &rsp, 0), KPW_INSUFFICIENT_RESOURCES);
	k.raise_map_view = true;
	cr_assert_eq(map_ring(f, &rsp, 0), KPW_ACCESS_VIOLATION);
	cr_assert_eq(k.sections, 0);
	cr_assert_eq(k.views, 0);
	cr_assert_eq(map_ring(f, &rsp, 0), KPW_SUCCESS);
	cr_assert_eq(rsp.hdr.status, KP_OK);
	cr_assert_neq(rsp.user_va, 0);
	cr_assert_eq(rsp.entries, limits.RingEntries);
	cr_assert_eq(rsp.size,
		     sizeof(struct kpw_ring) + limits.RingEntries * sizeof(struct kp_event));
	cr_assert_eq(map_ring(f, &rsp, 0), KPW_ALREADY_REGISTERED);
	close_file(f);
	teardown();
}

static KPW_STATUS set_notify(KPW_FILE *f, uint64_t addr)
{
	struct kpw_notify_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KPW_SET_NOTIFY },
				      .addr = addr };
	struct kp_rsp_hdr rsp;
	uint32_t info = 0;

	return KpwDeviceControl(dev, f, KPW_IOCTL_SET_NOTIFY, &req, sizeof(req), &rsp, sizeof(rsp),
				&info);
}

Test(driver, the_notify_word_is_locked_and_checked)
{
	KPW_FILE *f = open_file();

	cr_assert_eq(set_notify(f, 0), KPW_INVALID_USER_BUFFER);
	cr_assert_eq(set_notify(f, 0x10004), KPW_INVALID_USER_BUFFER, "not 8-byte aligned");
	cr_assert_eq(set_notify(f, UMAX - 3), KPW_INVALID_USER_BUFFER, "kernel side");
	cr_assert_eq(set_notify(f, 0x900000), KPW_ACCESS_VIOLATION, "not mapped");
	k.raise_lock = true;
	cr_assert_eq(set_notify(f, 0x10000), KPW_ACCESS_VIOLATION, "raised while locking");
	cr_assert_eq(k.mdls, 0, "the MDL went with the failure");
	cr_assert_eq(set_notify(f, 0x10000), KPW_SUCCESS);
	cr_assert_eq(set_notify(f, 0x10008), KPW_ALREADY_REGISTERED);
	close_file(f);
	teardown();
}

Test(driver, events_go_to_the_ring_and_the_notify_word)
{
	KPW_FILE *f = open_file();
	struct kpw_map_rsp rsp;
	KPW_COUNTS c;

	cr_assert_eq(map_ring(f, &rsp, 0), KPW_SUCCESS);
	cr_assert_eq(set_notify(f, 0x10000), KPW_SUCCESS);
	KpwCounts(dev, &c);
	cr_assert(c.Mapped == 1 && c.Locked == 1);
	KpwPostEvent(dev, f, KP_EVENT_UNMAP, 0x10000, PAGE);
	cr_assert_eq(k.notify_word, 2, "notify word = head");
	/* Fill it: 8 entries, one slot kept for the LOST marker. */
	for (int i = 0; i < 20; i++)
		KpwPostEvent(dev, f, KP_EVENT_REMOVE, 0x20000 + (uint64_t)i * PAGE, PAGE);
	cr_assert_eq(k.notify_word, 1 + 8, "7 events and one LOST, then drops");
	close_file(f);
	KpwCounts(dev, &c);
	cr_assert(c.Mapped == 0 && c.Locked == 0 && c.Files == 0);
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
	k.fail_alloc_after = 0;
	cr_assert_eq(KpwCreate(dev, &f), KPW_INSUFFICIENT_RESOURCES);
	cr_assert_eq(k.processes, 0);
	teardown();
}

Test(driver, limits_are_checked)
{
	KPW_LIMITS l = limits;
	KPW_DEVICE *d2;

	l.RingEntries = 6;
	cr_assert_eq(KpwDeviceCreate(&l, &fake_ops, &k, &d2), KPW_INVALID_PARAMETER);
	l = limits;
	l.MaxFiles = 0;
	cr_assert_eq(KpwDeviceCreate(&l, &fake_ops, &k, &d2), KPW_INVALID_PARAMETER);
	teardown();
}

Test(driver, another_handles_range_is_foreign)
{
	KPW_FILE *a = open_file();
	uint64_t h;

	cr_assert_eq(secure(a, 0x10000, PAGE, &h), KP_OK);
	k.pid = 2;
	KPW_FILE *b = open_file();
	cr_assert_eq(unsecure(b, h), KP_E_FOREIGN_HANDLE);
	cr_assert_eq(unsecure(b, h + (1ull << 40)), KP_E_UNKNOWN_HANDLE);
	close_file(b);
	k.pid = 1;
	cr_assert_eq(k.secured, 1, "still a's");
	close_file(a);
	teardown();
}

Test(driver, memory_that_goes_away_between_requests)
{
	KPW_FILE *f = open_file();
	struct kpw_map_rsp rsp;
	uint64_t h;

	cr_assert_eq(secure(f, 0x10000, PAGE, &h), KP_OK);
	cr_assert_eq(map_ring(f, &rsp, 0), KPW_SUCCESS);
	cr_assert_eq(set_notify(f, 0x10008), KPW_SUCCESS);
	/* The process unmaps everything; the driver holds its own references. */
	fake_unmap_all(&k, 1);
	cr_assert_eq(secure(f, 0x11000, PAGE, NULL), KP_E_FAULT);
	/* The ring's tail cannot be read: the ring counts as full, nothing breaks. */
	k.raise_read = true;
	KpwPostEvent(dev, f, KP_EVENT_UNMAP, 0x10000, PAGE);
	KpwPostEvent(dev, f, KP_EVENT_UNMAP, 0x10000, PAGE);
	cr_assert_eq(unsecure(f, h), KP_OK);
	close_file(f);
	teardown();
}
