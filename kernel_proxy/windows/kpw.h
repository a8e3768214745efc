/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Windows proxy driver's logic, apart from the WDM glue (kpw_driver.c)
 * so that the same code also runs in a Linux test build over a fake kernel
 * (tests/kpw_fake.c).  docs/kernel-proxy-windows.md has its security model.
 *
 * Every kernel service the logic needs goes through KPW_OPS.  Each one that
 * can raise returns an NTSTATUS; the driver's implementations catch the
 * exceptions (__try/__except around the call), so the logic sees none and
 * a fake can "raise" by returning one at any step.
 *
 * The logic keeps a record per process that opened the device (keyed by
 * its process object, referenced) and one per user.  A process is the
 * core's owner: its ranges, quotas and release belong to the process, not
 * to one handle.  The ranges are released in the process's own context
 * when its last handle is cleaned up or when it exits (the driver's
 * process-notify routine), whichever comes first.
 *
 * Locking: the device lock guards lists and counters only and is never
 * held across a memory-manager call or an attach.  Each process has a
 * mutex of its own that orders its requests and its release; a stalled
 * page-in in one process stalls that process's proxy requests, no others.
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
#define KPW_OBJECT_NAME_INVALID ((KPW_STATUS)0xC0000033)
#define KPW_QUOTA_EXCEEDED ((KPW_STATUS)0xC0000044)
#define KPW_PROCESS_IS_TERMINATING ((KPW_STATUS)0xC000010A)
#define KPW_INSUFFICIENT_RESOURCES ((KPW_STATUS)0xC000009A)
#define KPW_NOT_SUPPORTED ((KPW_STATUS)0xC00000BB)

#define KPW_FAILED(s) ((s) < 0)

/* Room for a KAPC_STATE, aligned as one (kpw_driver.c asserts both). */
typedef union _KPW_ATTACH_STATE {
	uint64_t Align[8];
	unsigned char Bytes[64];
} KPW_ATTACH_STATE;

/* A user: the SID of the token's user, as bytes. */
#define KPW_MAX_SID 68
typedef struct _KPW_USER_ID {
	uint32_t Length;
	unsigned char Sid[KPW_MAX_SID];
} KPW_USER_ID;

/* Kernel services; Ctx is the driver's.  Processes and handles are opaque to the logic. */
typedef struct _KPW_OPS {
	void *(*Alloc)(void *Ctx, size_t Size); /* zeroed nonpaged memory, or NULL */
	void (*Free)(void *Ctx, void *P);
	/* The device lock: short, lists and counters only (also the core's table lock). */
	void (*Lock)(void *Ctx);
	void (*Unlock)(void *Ctx);
	/* A process's mutex: held across its memory-manager calls, PASSIVE_LEVEL. */
	void *(*MutexCreate)(void *Ctx);
	void (*MutexDestroy)(void *Ctx, void *Mutex);
	void (*MutexAcquire)(void *Ctx, void *Mutex);
	void (*MutexRelease)(void *Ctx, void *Mutex);

	/*
	 * The calling thread's process object, referenced (ProcessPut drops
	 * it).  The logic never asks while attached.  Objects are compared,
	 * never ids: a referenced object is never reused, an id is.
	 */
	void *(*ProcessGet)(void *Ctx);
	void (*ProcessPut)(void *Ctx, void *Process);
	/* The user of the current process's primary token. */
	KPW_STATUS (*CurrentUser)(void *Ctx, KPW_USER_ID *User);
	/* Run in Process's address space until Detach (KeStackAttachProcess). */
	void (*Attach)(void *Ctx, void *Process, KPW_ATTACH_STATE *State);
	void (*Detach)(void *Ctx, KPW_ATTACH_STATE *State);

	/*
	 * MmSecureVirtualMemory in the current address space: a raise comes
	 * back as its status; a refusal is success with *Handle NULL, as the
	 * memory manager answers it.
	 */
	KPW_STATUS (*Secure)(void *Ctx, uint64_t Addr, uint64_t Len, bool Write, void **Handle);
	/* MmUnsecureVirtualMemory, in the address space that secured Handle. */
	void (*Unsecure)(void *Ctx, void *Handle);
} KPW_OPS;

typedef struct _KPW_LIMITS {
	/* max_ranges_per_owner and max_bytes_per_owner are per process */
	struct kp_core_limits Core;
	uint32_t MaxFiles;	     /* open handles, all processes */
	uint32_t MaxFilesPerProcess; /* open handles of one process */
	uint32_t MaxFilesPerUser;    /* open handles of all processes of one user */
	uint32_t MaxRangesPerUser;   /* secured ranges of all processes of one user */
	uint64_t MaxBytesPerUser;
} KPW_LIMITS;

typedef struct _KPW_DEVICE KPW_DEVICE;
typedef struct _KPW_FILE KPW_FILE;

KPW_STATUS KpwDeviceCreate(const KPW_LIMITS *Limits, const KPW_OPS *Ops, void *Ctx,
			   KPW_DEVICE **Device);
/* Unload: every file has been closed (the I/O manager sees to it). */
void KpwDeviceDestroy(KPW_DEVICE *Device);

/*
 * IRP_MJ_CREATE, in the opening process.  NameLength is the length of the
 * file object's name: the device has no namespace, \\.\SanProvProxy\x is
 * refused.
 */
KPW_STATUS KpwCreate(KPW_DEVICE *Device, uint32_t NameLength, KPW_FILE **File);
/* IRP_MJ_CLEANUP, in any process: the process's last handle releases its ranges. */
void KpwCleanup(KPW_DEVICE *Device, KPW_FILE *File);
/* IRP_MJ_CLOSE: the file's memory. */
void KpwClose(KPW_DEVICE *Device, KPW_FILE *File);

/*
 * The process-notify routine's exit: Process (its object) is going away.
 * Releases what it secured, in its context (attached if the caller runs
 * elsewhere), before its address space is torn down.
 */
void KpwProcessExit(KPW_DEVICE *Device, void *Process);

/*
 * IRP_MJ_DEVICE_CONTROL: In/InLen is the system buffer's copy of the
 * request (METHOD_BUFFERED), Out/OutCap the same buffer for the answer;
 * *Info the bytes answered.
 */
KPW_STATUS KpwDeviceControl(KPW_DEVICE *Device, KPW_FILE *File, uint32_t Code, const void *In,
			    uint32_t InLen, void *Out, uint32_t OutCap, uint32_t *Info);

typedef struct _KPW_COUNTS {
	uint32_t Files;	    /* open (not cleaned up) */
	uint32_t Processes; /* records */
	uint32_t Users;	    /* records */
	uint32_t Secured;   /* ranges, all processes */
} KPW_COUNTS;
void KpwCounts(KPW_DEVICE *Device, KPW_COUNTS *Counts);

#endif
