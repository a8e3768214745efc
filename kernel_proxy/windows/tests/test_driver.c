/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_proxy.sys loaded (TAP): the device opens (and a name after it
 * does not), the IOCTL decodes and validates its request, other methods
 * and codes are refused with their own statuses, error paths give the
 * right status and the driver keeps answering.  Under Wine the driver
 * lives in winedevice.exe, where MmSecureVirtualMemory is an unimplemented
 * stub: securing a buffer is a SKIP that says so, and only after the
 * request has been shown to reach that call (its validation answered
 * first, its answer complete, nothing issued), never a pass.
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
	tap_plan(12);
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
	/* The request's own code with another method: its own status, not "unknown IOCTL". */
	tap_result(!Ioctl(h, KPW_IOCTL_REQUEST | 2 /* METHOD_OUT_DIRECT */, Buf, 16, Buf,
			  sizeof(Buf), &Bytes, &Err) &&
		       Err == ERROR_NOT_SUPPORTED,
		   "KPW_IOCTL_REQUEST with METHOD_OUT_DIRECT: ERROR_NOT_SUPPORTED");
	/* The ring and the notify word are gone: nothing is shared with user mode. */
	tap_result(!Ioctl(h, KPW_CTL_CODE(0x801), Buf, 16, Buf, sizeof(Buf), &Bytes, &Err) &&
		       Err == ERROR_INVALID_FUNCTION &&
		       !Ioctl(h, KPW_CTL_CODE(0x802), Buf, 16, Buf, sizeof(Buf), &Bytes, &Err) &&
		       Err == ERROR_INVALID_FUNCTION,
		   "the former MAP_RING and SET_NOTIFY codes: ERROR_INVALID_FUNCTION");
	HANDLE Named = CreateFileW(L"\\\\.\\SanProvProxy\\ring", GENERIC_READ | GENERIC_WRITE, 0,
				   NULL, OPEN_EXISTING, 0, NULL);
	Err = GetLastError();
	if (Named == INVALID_HANDLE_VALUE && Err == ERROR_FILE_NOT_FOUND && Wine)
		tap_skip("a name after the device does not open (ERROR_INVALID_NAME)",
			 "Wine answers ERROR_FILE_NOT_FOUND itself: the name never reaches the "
			 "driver");
	else
		tap_result(Named == INVALID_HANDLE_VALUE && Err == ERROR_INVALID_NAME,
			   "a name after the device does not open (ERROR_INVALID_NAME)");
	if (Named != INVALID_HANDLE_VALUE)
		CloseHandle(Named);
	else if (Err != ERROR_INVALID_NAME)
		printf("# error %lu\n", Err);

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
	BOOL Complete = r && Bytes == sizeof(Sr) && Sr.hdr.size == sizeof(Sr);
	if (Complete && Sr.hdr.status == KP_OK) {
		struct kp_handle_req u = { .hdr = { sizeof(u), KP_PROTO_VERSION, KP_UNSECURE },
					   .handle = Sr.handle };
		struct kp_rsp_hdr Ur;
		tap_result(
		    Ioctl(h, KPW_IOCTL_REQUEST, &u, sizeof(u), &Ur, sizeof(Ur), &Bytes, &Err) &&
			Ur.status == KP_OK,
		    "KP_SECURE and KP_UNSECURE of a buffer of this process");
	} else if (Wine && Complete && Sr.hdr.status == KP_E_FAULT && !Sr.handle) {
		/*
		 * Only the memory manager's call can have failed: the same
		 * request one byte off or with no access bits is answered by
		 * the validation before it, and the driver still answers.
		 */
		struct kp_secure_req Bad = s;
		struct kp_secure_rsp Br;
		BOOL Checked;
		Bad.addr += 1;
		Checked =
		    Ioctl(h, KPW_IOCTL_REQUEST, &Bad, sizeof(Bad), &Br, sizeof(Br), &Bytes, &Err) &&
		    Br.hdr.status == KP_E_ALIGN;
		Bad = s;
		Bad.access = 0;
		Checked =
		    Checked &&
		    Ioctl(h, KPW_IOCTL_REQUEST, &Bad, sizeof(Bad), &Br, sizeof(Br), &Bytes, &Err) &&
		    Br.hdr.status == KP_E_ACCESS && Answers(h);
		if (Checked)
			tap_skip(
			    "KP_SECURE and KP_UNSECURE of a buffer of this process",
			    "Wine's MmSecureVirtualMemory is an unimplemented stub (the request "
			    "passed validation, the driver caught the stub's exception and "
			    "answered KP_E_FAULT)");
		else
			tap_result(FALSE, "KP_SECURE and KP_UNSECURE of a buffer of this process");
	} else {
		printf("# r %d, error %lu, bytes %lu, status %u\n", r, Err, Bytes, Sr.hdr.status);
		tap_result(FALSE, "KP_SECURE and KP_UNSECURE of a buffer of this process");
	}
	s.addr = 0xffff800000000000ull;
	tap_result(Ioctl(h, KPW_IOCTL_REQUEST, &s, sizeof(s), &Sr, sizeof(Sr), &Bytes, &Err) &&
		       Sr.hdr.status == KP_E_OVERFLOW,
		   "KP_SECURE of a kernel address: KP_E_OVERFLOW");

	/* After every error path the driver still answers, on this handle and a new one. */
	tap_result(Answers(h), "the driver survives every error path");
	h2 = Open();
	tap_result(h2 != INVALID_HANDLE_VALUE && Answers(h2) && CloseHandle(h2) && CloseHandle(h) &&
		       (h = Open()) != INVALID_HANDLE_VALUE && Answers(h),
		   "handles close (cleanup, close) and open again");
	CloseHandle(h);
	return tap_exit();
}
