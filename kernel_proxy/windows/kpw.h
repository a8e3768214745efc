/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Windows proxy driver's logic, apart from the WDM glue (kpw_driver.c)
 * so that the same code also runs in a Linux test build over a fake memory
 * manager (tests/test_proxy_driver.c).
 *
 * Every kernel service the logic needs goes through KPW_OPS.  Each one
 * returns an NTSTATUS; the driver's implementations catch the exceptions
 * the memory manager raises on bad user memory (__try/__except around the
 * call) and return them as statuses, so the logic sees no exception and a
 * fake can "raise" by returning one at any step.
 *
 * Per open handle (file object) the logic keeps: the process that opened
 * it (whose address space its ranges live in), the core's owner id, the
 * view of the event ring mapped into that process, and the notify word the
 * process registered (locked through an MDL, written through a system
 * mapping).  IRP_MJ_CLEANUP of the handle releases all of it.
 */
#ifndef SANPROV_KPW_H
#define SANPROV_KPW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_core.h"
#include "kpw_ioctl.h"

typedef int32_t KPW_STATUS; /* an NTSTATUS */

#define KPW_SUCCESS ((KPW_STATUS)0x00000000)
#define KPW_ACCESS_VIOLATION ((KPW_STATUS)0xC0000005)
#define KPW_INVALID_HANDLE ((KPW_STATUS)0xC0000008)
#define KPW_INVALID_PARAMETER ((KPW_STATUS)0xC000000D)
#define KPW_INVALID_DEVICE_REQUEST ((KPW_STATUS)0xC0000010)
#define KPW_BUFFER_TOO_SMALL ((KPW_STATUS)0xC0000023)
#define KPW_ACCESS_DENIED ((KPW_STATUS)0xC0000022)
#define KPW_INSUFFICIENT_RESOURCES ((KPW_STATUS)0xC000009A)
#define KPW_NOT_SUPPORTED ((KPW_STATUS)0xC00000BB)
#define KPW_INVALID_USER_BUFFER ((KPW_STATUS)0xC00000E8)
#define KPW_ALREADY_REGISTERED ((KPW_STATUS)0xC0000718)
#define KPW_QUOTA_EXCEEDED ((KPW_STATUS)0xC0000044)

#define KPW_FAILED(s) ((s) < 0)

/* Kernel services; Ctx is the driver's.  Handles are opaque to the logic. */
typedef struct _KPW_OPS {
	void *(*Alloc)(void *Ctx, size_t Size); /* zeroed nonpaged memory, or NULL */
	void (*Free)(void *Ctx, void *P);
	void (*Lock)(void *Ctx); /* the driver's mutex: files and the core */
	void (*Unlock)(void *Ctx);
	void (*EvLock)(void *Ctx); /* the event ring's short lock */
	void (*EvUnlock)(void *Ctx);

	/* The current process: an id, and a reference on it (released with ProcessPut). */
	uint64_t (*CurrentProcessId)(void *Ctx);
	void *(*ProcessGet)(void *Ctx);
	void (*ProcessPut)(void *Ctx, void *Process);
	/* Run in Process's address space until Detach (cleanup from another process). */
	void (*Attach)(void *Ctx, void *Process, void *State);
	void (*Detach)(void *Ctx, void *State);

	/* MmSecureVirtualMemory in the current process. */
	KPW_STATUS (*Secure)(void *Ctx, uint64_t Addr, uint64_t Len, bool Write, void **Handle);
	void (*Unsecure)(void *Ctx, void *Handle);

	/* IoAllocateMdl + MmProbeAndLockPages, then a no-execute system mapping. */
	KPW_STATUS(*LockUser)
	(void *Ctx, uint64_t Addr, uint32_t Len, bool Write, void **Mdl, void **SystemVa);
	void (*UnlockUser)(void *Ctx, void *Mdl);

	/* A section the driver creates (kernel handle, referenced object) and maps in system space.
	 */
	KPW_STATUS (*SectionCreate)(void *Ctx, uint32_t Size, void **Section, void **SystemVa);
	void (*SectionDestroy)(void *Ctx, void *Section, void *SystemVa);
	/* Map / unmap a view of it in the current process (from the dispatch routine). */
	KPW_STATUS (*SectionMapUser)(void *Ctx, void *Section, uint32_t Size, uint64_t *UserVa);
	void (*SectionUnmapUser)(void *Ctx, uint64_t UserVa);
	/* Read a 64-bit word the user can change (a view's field), under try/except. */
	KPW_STATUS (*ReadUser64)(void *Ctx, const volatile uint64_t *P, uint64_t *Value);
} KPW_OPS;

typedef struct _KPW_LIMITS {
	struct kp_core_limits Core;
	uint32_t MaxFiles;	     /* open handles, all processes */
	uint32_t MaxFilesPerProcess; /* so that quotas per handle stay quotas per process */
	uint32_t RingEntries;	     /* events the shared ring holds (power of two) */
} KPW_LIMITS;

typedef struct _KPW_DEVICE KPW_DEVICE;
typedef struct _KPW_FILE KPW_FILE;

KPW_STATUS KpwDeviceCreate(const KPW_LIMITS *Limits, const KPW_OPS *Ops, void *Ctx,
			   KPW_DEVICE **Device);
/* Unload: every file must have been cleaned up; releases the section. */
void KpwDeviceDestroy(KPW_DEVICE *Device);

/* IRP_MJ_CREATE, in the opening process. */
KPW_STATUS KpwCreate(KPW_DEVICE *Device, KPW_FILE **File);
/* IRP_MJ_CLEANUP: release everything the handle holds (in any process context). */
void KpwCleanup(KPW_DEVICE *Device, KPW_FILE *File);
/* IRP_MJ_CLOSE: the file's memory. */
void KpwClose(KPW_DEVICE *Device, KPW_FILE *File);

/*
 * IRP_MJ_DEVICE_CONTROL with METHOD_BUFFERED: In/InLen is the system
 * buffer's copy of the request (copied once by the I/O manager), Out/OutCap
 * the same buffer for the answer; *Info the bytes answered.
 */
KPW_STATUS KpwDeviceControl(KPW_DEVICE *Device, KPW_FILE *File, uint32_t Code, const void *In,
			    uint32_t InLen, void *Out, uint32_t OutCap, uint32_t *Info);

/* Post an event to the file's owner (and ring the notify word). */
void KpwPostEvent(KPW_DEVICE *Device, KPW_FILE *File, uint32_t Kind, uint64_t Addr, uint64_t Len);

typedef struct _KPW_COUNTS {
	uint32_t Files;
	uint32_t Mapped;  /* ring views in user space */
	uint32_t Locked;  /* notify words locked */
	uint32_t Secured; /* ranges, all files */
} KPW_COUNTS;
void KpwCounts(KPW_DEVICE *Device, KPW_COUNTS *Counts);

#endif
