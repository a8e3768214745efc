/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_proxy.sys loaded (TAP): the device opens, each IOCTL decodes and
 * validates its request, error paths give the right status and the driver
 * keeps answering.  Under Wine the driver lives in winedevice.exe, where
 * MmSecureVirtualMemory is an unimplemented stub, locked pages get no
 * system mapping and a view is not mapped into the caller: what depends on
 * those is a SKIP that says so, never a pass.
 */
#include <windows.h>

#include <stdio.h>
#include <string.h>

#include "kp_proto.h"
#include "kpw_ioctl.h"
#include "tap.h"

static BOOL Wine;

/* One IOCTL: TRUE or FALSE with the Win32 error in *Err. */
static BOOL Ioctl(HANDLE h, DWORD Code, void *In, DWORD InLen, void *Out, DWORD OutLen,
		  DWORD *Bytes, DWORD *Err)
{
	BOOL r = DeviceIoControl(h, Code, In, InLen, Out, OutLen, Bytes, NULL);

	*Err = r ? 0 : GetLastError();
	return r;
}

static HANDLE Open(void)
{
	return CreateFileW(L"\\\\.\\SanProvProxy", GENERIC_READ | GENERIC_WRITE, 0, NULL,
			   OPEN_EXISTING, 0, NULL);
}

/* KP_QUERY of a handle never issued: the proof that the driver still answers. */
static BOOL Answers(HANDLE h)
{
	struct kp_handle_req q = { .hdr = { sizeof(q), KP_PROTO_VERSION, KP_QUERY },
				   .handle = 0x500000007ull };
	struct kp_query_rsp r;
	DWORD Bytes = 0, Err;

	memset(&r, 0, sizeof(r));
	return Ioctl(h, KPW_IOCTL_REQUEST, &q, sizeof(q), &r, sizeof(r), &Bytes, &Err) &&
	       Bytes >= sizeof(struct kp_rsp_hdr) && r.hdr.status == KP_E_UNKNOWN_HANDLE;
}

int main(void)
{
	HMODULE Ntdll = GetModuleHandleW(L"ntdll.dll");
	HANDLE h, h2;
	DWORD Bytes = 0, Err = 0;
	unsigned char Buf[256];

	Wine = Ntdll && GetProcAddress(Ntdll, "wine_get_version");
	tap_plan(14);
	h = Open();
	tap_result(h != INVALID_HANDLE_VALUE, "\\\\.\\SanProvProxy opens (the driver loaded)");
	if (h == INVALID_HANDLE_VALUE) {
		printf("# CreateFile: error %lu\n", GetLastError());
		return 1;
	}

	tap_result(!Ioctl(h, KPW_IOCTL_REQUEST, Buf, 4, Buf, sizeof(Buf), &Bytes, &Err) &&
		       Err == ERROR_INVALID_PARAMETER,
		   "a request shorter than its header: ERROR_INVALID_PARAMETER");
	tap_result(!Ioctl(h, KPW_CTL_CODE(0x8ff), Buf, 16, Buf, sizeof(Buf), &Bytes, &Err) &&
		       Err == ERROR_INVALID_FUNCTION,
		   "an unknown IOCTL: ERROR_INVALID_FUNCTION");
	tap_result(!Ioctl(h, KPW_CTL_CODE(0x800) | 2 /* METHOD_OUT_DIRECT */, Buf, 16, Buf,
			  sizeof(Buf), &Bytes, &Err),
		   "a request not METHOD_BUFFERED is refused");

	struct kp_handle_req q = { .hdr = { sizeof(q), KP_PROTO_VERSION + 7, KP_QUERY },
				   .handle = 1 };
	struct kp_rsp_hdr *Rsp = (struct kp_rsp_hdr *)Buf;
	tap_result(Ioctl(h, KPW_IOCTL_REQUEST, &q, sizeof(q), Buf, sizeof(Buf), &Bytes, &Err) &&
		       Bytes >= sizeof(*Rsp) && Rsp->status == KP_E_VERSION,
		   "a request of another version: KP_E_VERSION");
	tap_result(Answers(h), "a handle never issued: KP_E_UNKNOWN_HANDLE");

	/* Secure a buffer of this process. */
	static __attribute__((aligned(4096))) char Page[4096];
	struct kp_secure_req s = { .hdr = { sizeof(s), KP_PROTO_VERSION, KP_SECURE },
				   .access = KP_ACCESS_READ | KP_ACCESS_WRITE,
				   .addr = (uint64_t)(uintptr_t)Page,
				   .len = sizeof(Page) };
	struct kp_secure_rsp Sr;
	memset(&Sr, 0, sizeof(Sr));
	BOOL r = Ioctl(h, KPW_IOCTL_REQUEST, &s, sizeof(s), &Sr, sizeof(Sr), &Bytes, &Err);
	if (r && Sr.hdr.status == KP_OK) {
		struct kp_handle_req u = { .hdr = { sizeof(u), KP_PROTO_VERSION, KP_UNSECURE },
					   .handle = Sr.handle };
		struct kp_rsp_hdr Ur;
		tap_result(
		    Ioctl(h, KPW_IOCTL_REQUEST, &u, sizeof(u), &Ur, sizeof(Ur), &Bytes, &Err) &&
			Ur.status == KP_OK,
		    "KP_SECURE and KP_UNSECURE of a buffer of this process");
	} else if (Wine && r && Sr.hdr.status == KP_E_FAULT) {
		tap_skip(
		    "KP_SECURE and KP_UNSECURE of a buffer of this process",
		    "Wine's MmSecureVirtualMemory is an unimplemented stub (the driver caught its "
		    "exception and answered KP_E_FAULT)");
	} else {
		tap_result(FALSE, "KP_SECURE and KP_UNSECURE of a buffer of this process");
	}
	s.addr = 0xffff800000000000ull;
	tap_result(Ioctl(h, KPW_IOCTL_REQUEST, &s, sizeof(s), &Sr, sizeof(Sr), &Bytes, &Err) &&
		       Sr.hdr.status == KP_E_OVERFLOW,
		   "KP_SECURE of a kernel address: KP_E_OVERFLOW");

	/* The event ring. */
	struct kpw_map_req m = { .hdr = { sizeof(m), KP_PROTO_VERSION, KPW_MAP_RING }, .flags = 1 };
	struct kpw_map_rsp Mr;
	tap_result(!Ioctl(h, KPW_IOCTL_MAP_RING, &m, sizeof(m), &Mr, sizeof(Mr), &Bytes, &Err) &&
		       Err == ERROR_INVALID_PARAMETER,
		   "KPW_IOCTL_MAP_RING with unknown flags: ERROR_INVALID_PARAMETER");
	m.flags = 0;
	r = Ioctl(h, KPW_IOCTL_MAP_RING, &m, sizeof(m), &Mr, sizeof(Mr), &Bytes, &Err);
	if (r && !Wine) {
		const struct kpw_ring *Ring = (const void *)(uintptr_t)Mr.user_va;
		tap_result(Ring->magic == KPW_RING_MAGIC && Ring->entries == Mr.entries &&
			       Ring->head == 1,
			   "KPW_IOCTL_MAP_RING: the driver's ring, mapped here");
	} else if (Wine) {
		tap_skip(
		    "KPW_IOCTL_MAP_RING: the driver's ring, mapped here",
		    "Wine runs the driver in winedevice.exe: a view it maps is not in the caller's "
		    "address space");
	} else {
		tap_result(FALSE, "KPW_IOCTL_MAP_RING: the driver's ring, mapped here");
	}

	/* The notify word. */
	static volatile uint64_t Word;
	struct kpw_notify_req n = { .hdr = { sizeof(n), KP_PROTO_VERSION, KPW_SET_NOTIFY },
				    .addr = (uint64_t)(uintptr_t)&Word + 4 };
	tap_result(!Ioctl(h, KPW_IOCTL_SET_NOTIFY, &n, sizeof(n), Buf, sizeof(Buf), &Bytes, &Err) &&
		       Err == ERROR_INVALID_USER_BUFFER,
		   "KPW_IOCTL_SET_NOTIFY, not 8-byte aligned: ERROR_INVALID_USER_BUFFER");
	n.addr -= 4;
	r = Ioctl(h, KPW_IOCTL_SET_NOTIFY, &n, sizeof(n), Buf, sizeof(Buf), &Bytes, &Err);
	if (r)
		tap_result(TRUE, "KPW_IOCTL_SET_NOTIFY: the word locked");
	else if (Wine && Err == ERROR_NO_SYSTEM_RESOURCES)
		tap_skip(
		    "KPW_IOCTL_SET_NOTIFY: the word locked",
		    "Wine's MmMapLockedPagesSpecifyCache returns NULL (the driver released the MDL "
		    "and answered STATUS_INSUFFICIENT_RESOURCES)");
	else {
		printf("# error %lu\n", Err);
		tap_result(FALSE, "KPW_IOCTL_SET_NOTIFY: the word locked");
	}

	/* After every error path the driver still answers, on this handle and a new one. */
	tap_result(Answers(h), "the driver survives every error path");
	h2 = Open();
	tap_result(h2 != INVALID_HANDLE_VALUE && Answers(h2) && CloseHandle(h2) && CloseHandle(h) &&
		       (h = Open()) != INVALID_HANDLE_VALUE && Answers(h),
		   "handles close (cleanup, close) and open again");
	CloseHandle(h);
	return tap_exit();
}
