/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_proxy.sys: the WDM glue around the driver's logic (kpw_logic.c).
 *
 * It creates \Device\SanProvProxy with a DACL of its own (SYSTEM and
 * Administrators: all; Users: read and write), serves create, cleanup,
 * close and METHOD_BUFFERED device controls, and implements KPW_OPS with
 * the kernel's calls.  Every call that touches user memory or can raise
 * runs inside __try, in a function of its own: clang records __try ranges
 * around calls only, so no user access is ever inlined into a __try body.
 * The exception code is taken in the filter expression (Wine returns 0 for
 * it in the __except body).
 */
#include <ntifs.h>

#include "kpw.h"

/* mingw-w64 10's kernel headers predate these: the values are the WDK's. */
#ifndef MdlMappingNoExecute
#define MdlMappingNoExecute 0x40000000
#endif
#ifndef SECURITY_MAX_SID_SIZE
#define SECURITY_MAX_SID_SIZE                                                                      \
	(sizeof(SID) - sizeof(ULONG) + SID_MAX_SUB_AUTHORITIES * sizeof(ULONG))
#endif

#define KPW_TAG 'PnaS'

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD KpwUnload;
static DRIVER_DISPATCH KpwDispatchCreate, KpwDispatchCleanup, KpwDispatchClose,
    KpwDispatchDeviceControl;

typedef struct _KPW_EXTENSION {
	KPW_DEVICE *Logic;
	ERESOURCE Lock;
	FAST_MUTEX EvLock;
	BOOLEAN LockReady;
} KPW_EXTENSION;

_Static_assert(sizeof(KAPC_STATE) <= 64, "the logic keeps a KAPC_STATE in 64 bytes");

static LONG Filter(NTSTATUS Code, NTSTATUS *Out)
{
	*Out = Code;
	return EXCEPTION_EXECUTE_HANDLER;
}

/* KPW_OPS ------------------------------------------------------------------ */

static void *OpAlloc(void *Ctx, size_t Size)
{
	void *P = ExAllocatePoolWithTag(NonPagedPoolNx, Size, KPW_TAG);

	(void)Ctx;
	if (P)
		RtlZeroMemory(P, Size);
	return P;
}

static void OpFree(void *Ctx, void *P)
{
	(void)Ctx;
	ExFreePoolWithTag(P, KPW_TAG);
}

/* A resource, not a mutex: the logic maps and unmaps views under it, at PASSIVE_LEVEL. */
static void OpLock(void *Ctx)
{
	KPW_EXTENSION *x = Ctx;

	KeEnterCriticalRegion();
	ExAcquireResourceExclusiveLite(&x->Lock, TRUE);
}

static void OpUnlock(void *Ctx)
{
	KPW_EXTENSION *x = Ctx;

	ExReleaseResourceLite(&x->Lock);
	KeLeaveCriticalRegion();
}

/* The ring is pageable (a section view): its lock keeps the IRQL below DISPATCH_LEVEL. */
static void OpEvLock(void *Ctx)
{
	ExAcquireFastMutex(&((KPW_EXTENSION *)Ctx)->EvLock);
}

static void OpEvUnlock(void *Ctx)
{
	ExReleaseFastMutex(&((KPW_EXTENSION *)Ctx)->EvLock);
}

static uint64_t OpCurrentProcessId(void *Ctx)
{
	(void)Ctx;
	return (uint64_t)(ULONG_PTR)PsGetCurrentProcessId();
}

static void *OpProcessGet(void *Ctx)
{
	PEPROCESS P = PsGetCurrentProcess();

	(void)Ctx;
	ObReferenceObject(P);
	return P;
}

static void OpProcessPut(void *Ctx, void *Process)
{
	(void)Ctx;
	ObDereferenceObject(Process);
}

static void OpAttach(void *Ctx, void *Process, void *State)
{
	(void)Ctx;
	KeStackAttachProcess((PKPROCESS)Process, (PKAPC_STATE)State);
}

static void OpDetach(void *Ctx, void *State)
{
	(void)Ctx;
	KeUnstackDetachProcess((PKAPC_STATE)State);
}

static KPW_STATUS OpSecure(void *Ctx, uint64_t Addr, uint64_t Len, bool Write, void **Handle)
{
	NTSTATUS Code = STATUS_SUCCESS;
	HANDLE h = NULL;

	(void)Ctx;
	__try {
		h = MmSecureVirtualMemory((PVOID)(ULONG_PTR)Addr, (SIZE_T)Len,
					  Write ? PAGE_READWRITE : PAGE_READONLY);
	} __except (Filter(GetExceptionCode(), &Code)) {
		return Code ? Code : STATUS_ACCESS_VIOLATION;
	}
	if (!h)
		return STATUS_ACCESS_VIOLATION; /* not valid memory of the right protection */
	*Handle = h;
	return STATUS_SUCCESS;
}

static void OpUnsecure(void *Ctx, void *Handle)
{
	NTSTATUS Code;

	(void)Ctx;
	__try {
		MmUnsecureVirtualMemory(Handle);
	} __except (Filter(GetExceptionCode(), &Code)) {
		/* Nothing to give back: the range is gone with its process. */
	}
}

static KPW_STATUS OpLockUser(void *Ctx, uint64_t Addr, uint32_t Len, bool Write, void **Mdl,
			     void **SystemVa)
{
	NTSTATUS Code = STATUS_SUCCESS;
	PMDL m;
	PVOID Va;

	(void)Ctx;
	m = IoAllocateMdl((PVOID)(ULONG_PTR)Addr, Len, FALSE, FALSE, NULL);
	if (!m)
		return STATUS_INSUFFICIENT_RESOURCES;
	__try {
		MmProbeAndLockPages(m, UserMode, Write ? IoWriteAccess : IoReadAccess);
	} __except (Filter(GetExceptionCode(), &Code)) {
		IoFreeMdl(m);
		return Code ? Code : STATUS_INVALID_USER_BUFFER;
	}
	/* A second mapping, the kernel's own, that the process cannot take away. */
	Va = MmGetSystemAddressForMdlSafe(m, NormalPagePriority | MdlMappingNoExecute);
	if (!Va) {
		MmUnlockPages(m);
		IoFreeMdl(m);
		return STATUS_INSUFFICIENT_RESOURCES;
	}
	*Mdl = m;
	*SystemVa = Va;
	return STATUS_SUCCESS;
}

static void OpUnlockUser(void *Ctx, void *Mdl)
{
	(void)Ctx;
	MmUnlockPages(Mdl);
	IoFreeMdl(Mdl);
}

static KPW_STATUS OpSectionCreate(void *Ctx, uint32_t Size, void **Section, void **SystemVa)
{
	OBJECT_ATTRIBUTES Oa;
	LARGE_INTEGER Max;
	HANDLE h;
	PVOID Obj = NULL, Va = NULL;
	SIZE_T ViewSize = Size;
	NTSTATUS s;

	(void)Ctx;
	/* Created here, with a kernel handle: never a handle from user mode. */
	InitializeObjectAttributes(&Oa, NULL, OBJ_KERNEL_HANDLE, NULL, NULL);
	Max.QuadPart = Size;
	s = ZwCreateSection(&h, SECTION_ALL_ACCESS, &Oa, &Max, PAGE_READWRITE, SEC_COMMIT, NULL);
	if (!NT_SUCCESS(s))
		return s;
	/* The reference keeps the section whatever becomes of handles. */
	s = ObReferenceObjectByHandle(h, SECTION_ALL_ACCESS, NULL, KernelMode, &Obj, NULL);
	ZwClose(h);
	if (!NT_SUCCESS(s))
		return s;
	s = MmMapViewInSystemSpace(Obj, &Va, &ViewSize);
	if (!NT_SUCCESS(s)) {
		ObDereferenceObject(Obj);
		return s;
	}
	*Section = Obj;
	*SystemVa = Va;
	return STATUS_SUCCESS;
}

static void OpSectionDestroy(void *Ctx, void *Section, void *SystemVa)
{
	(void)Ctx;
	MmUnmapViewInSystemSpace(SystemVa);
	ObDereferenceObject(Section);
}

/* From the dispatch routine, so the view lands in the caller's address space. */
static KPW_STATUS OpSectionMapUser(void *Ctx, void *Section, uint32_t Size, uint64_t *UserVa)
{
	HANDLE h;
	PVOID Base = NULL;
	SIZE_T ViewSize = Size;
	NTSTATUS s;

	(void)Ctx;
	s = ObOpenObjectByPointer(Section, OBJ_KERNEL_HANDLE, NULL,
				  SECTION_MAP_READ | SECTION_MAP_WRITE, NULL, KernelMode, &h);
	if (!NT_SUCCESS(s))
		return s;
	s = ZwMapViewOfSection(h, ZwCurrentProcess(), &Base, 0, 0, NULL, &ViewSize, ViewUnmap, 0,
			       PAGE_READWRITE);
	ZwClose(h);
	if (!NT_SUCCESS(s))
		return s;
	*UserVa = (uint64_t)(ULONG_PTR)Base;
	return STATUS_SUCCESS;
}

static void OpSectionUnmapUser(void *Ctx, uint64_t UserVa)
{
	(void)Ctx;
	ZwUnmapViewOfSection(ZwCurrentProcess(), (PVOID)(ULONG_PTR)UserVa);
}

static __attribute__((noinline)) uint64_t Read64(const volatile uint64_t *P)
{
	return *P;
}

static KPW_STATUS OpReadUser64(void *Ctx, const volatile uint64_t *P, uint64_t *Value)
{
	NTSTATUS Code = STATUS_SUCCESS;

	(void)Ctx;
	__try {
		*Value = Read64(P);
	} __except (Filter(GetExceptionCode(), &Code)) {
		return Code ? Code : STATUS_ACCESS_VIOLATION;
	}
	return STATUS_SUCCESS;
}

static const KPW_OPS Ops = {
	.Alloc = OpAlloc,
	.Free = OpFree,
	.Lock = OpLock,
	.Unlock = OpUnlock,
	.EvLock = OpEvLock,
	.EvUnlock = OpEvUnlock,
	.CurrentProcessId = OpCurrentProcessId,
	.ProcessGet = OpProcessGet,
	.ProcessPut = OpProcessPut,
	.Attach = OpAttach,
	.Detach = OpDetach,
	.Secure = OpSecure,
	.Unsecure = OpUnsecure,
	.LockUser = OpLockUser,
	.UnlockUser = OpUnlockUser,
	.SectionCreate = OpSectionCreate,
	.SectionDestroy = OpSectionDestroy,
	.SectionMapUser = OpSectionMapUser,
	.SectionUnmapUser = OpSectionUnmapUser,
	.ReadUser64 = OpReadUser64,
};

static const KPW_LIMITS Limits = {
	.Core = { .max_ranges = 65536,
		  .max_owners = 1024,
		  .max_ranges_per_owner = 16384,
		  .max_bytes_per_owner = 64ull << 30,
		  .user_addr_max = 0x00007fffffffffffull,
		  .page_size = PAGE_SIZE,
		  .event_ring = 4096 },
	.MaxFiles = 1024,
	.MaxFilesPerProcess = 8,
	.RingEntries = 1024,
};

/* Dispatch ------------------------------------------------------------------ */

static NTSTATUS Complete(PIRP Irp, NTSTATUS Status, ULONG_PTR Information)
{
	Irp->IoStatus.Status = Status;
	Irp->IoStatus.Information = Information;
	IoCompleteRequest(Irp, IO_NO_INCREMENT);
	return Status;
}

static NTSTATUS KpwDispatchCreate(PDEVICE_OBJECT Device, PIRP Irp)
{
	KPW_EXTENSION *x = Device->DeviceExtension;
	PIO_STACK_LOCATION Sp = IoGetCurrentIrpStackLocation(Irp);
	KPW_FILE *f;
	NTSTATUS s = KpwCreate(x->Logic, &f);

	if (NT_SUCCESS(s))
		Sp->FileObject->FsContext = f;
	return Complete(Irp, s, 0);
}

static NTSTATUS KpwDispatchCleanup(PDEVICE_OBJECT Device, PIRP Irp)
{
	KPW_EXTENSION *x = Device->DeviceExtension;
	PIO_STACK_LOCATION Sp = IoGetCurrentIrpStackLocation(Irp);

	KpwCleanup(x->Logic, Sp->FileObject->FsContext);
	return Complete(Irp, STATUS_SUCCESS, 0);
}

static NTSTATUS KpwDispatchClose(PDEVICE_OBJECT Device, PIRP Irp)
{
	KPW_EXTENSION *x = Device->DeviceExtension;
	PIO_STACK_LOCATION Sp = IoGetCurrentIrpStackLocation(Irp);

	KpwClose(x->Logic, Sp->FileObject->FsContext);
	Sp->FileObject->FsContext = NULL;
	return Complete(Irp, STATUS_SUCCESS, 0);
}

static NTSTATUS KpwDispatchDeviceControl(PDEVICE_OBJECT Device, PIRP Irp)
{
	KPW_EXTENSION *x = Device->DeviceExtension;
	PIO_STACK_LOCATION Sp = IoGetCurrentIrpStackLocation(Irp);
	ULONG Code = Sp->Parameters.DeviceIoControl.IoControlCode;
	uint32_t Info = 0;
	NTSTATUS s;

	/* Buffered only: the I/O manager copied the request once into SystemBuffer. */
	if ((Code & 3) != METHOD_BUFFERED)
		return Complete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
	s = KpwDeviceControl(
	    x->Logic, Sp->FileObject->FsContext, Code, Irp->AssociatedIrp.SystemBuffer,
	    Sp->Parameters.DeviceIoControl.InputBufferLength, Irp->AssociatedIrp.SystemBuffer,
	    Sp->Parameters.DeviceIoControl.OutputBufferLength, &Info);
	return Complete(Irp, s, NT_SUCCESS(s) ? Info : 0);
}

/* Setup ---------------------------------------------------------------------- */

/*
 * The device's DACL: SYSTEM and Administrators all access, Users read and
 * write (the provider runs in ordinary applications), nobody else.
 */
static NTSTATUS Protect(PDEVICE_OBJECT Device)
{
	static SID_IDENTIFIER_AUTHORITY Nt = SECURITY_NT_AUTHORITY;
	UCHAR System[SECURITY_MAX_SID_SIZE], Admins[SECURITY_MAX_SID_SIZE],
	    Users[SECURITY_MAX_SID_SIZE];
	SECURITY_DESCRIPTOR Sd;
	ULONG AclSize;
	PACL Acl;
	HANDLE h;
	NTSTATUS s;

	RtlInitializeSid((PSID)System, &Nt, 1);
	*RtlSubAuthoritySid((PSID)System, 0) = SECURITY_LOCAL_SYSTEM_RID;
	RtlInitializeSid((PSID)Admins, &Nt, 2);
	*RtlSubAuthoritySid((PSID)Admins, 0) = SECURITY_BUILTIN_DOMAIN_RID;
	*RtlSubAuthoritySid((PSID)Admins, 1) = DOMAIN_ALIAS_RID_ADMINS;
	RtlInitializeSid((PSID)Users, &Nt, 2);
	*RtlSubAuthoritySid((PSID)Users, 0) = SECURITY_BUILTIN_DOMAIN_RID;
	*RtlSubAuthoritySid((PSID)Users, 1) = DOMAIN_ALIAS_RID_USERS;
	AclSize = sizeof(ACL) + 3 * sizeof(ACCESS_ALLOWED_ACE) + RtlLengthSid((PSID)System) +
		  RtlLengthSid((PSID)Admins) + RtlLengthSid((PSID)Users);
	Acl = ExAllocatePoolWithTag(PagedPool, AclSize, KPW_TAG);
	if (!Acl)
		return STATUS_INSUFFICIENT_RESOURCES;
	s = RtlCreateAcl(Acl, AclSize, ACL_REVISION);
	if (NT_SUCCESS(s))
		s = RtlAddAccessAllowedAce(Acl, ACL_REVISION, GENERIC_ALL, (PSID)System);
	if (NT_SUCCESS(s))
		s = RtlAddAccessAllowedAce(Acl, ACL_REVISION, GENERIC_ALL, (PSID)Admins);
	if (NT_SUCCESS(s))
		s = RtlAddAccessAllowedAce(Acl, ACL_REVISION, GENERIC_READ | GENERIC_WRITE,
					   (PSID)Users);
	if (NT_SUCCESS(s))
		s = RtlCreateSecurityDescriptor(&Sd, SECURITY_DESCRIPTOR_REVISION);
	if (NT_SUCCESS(s))
		s = RtlSetDaclSecurityDescriptor(&Sd, TRUE, Acl, FALSE);
	if (NT_SUCCESS(s))
		s = ObOpenObjectByPointer(Device, OBJ_KERNEL_HANDLE, NULL, WRITE_DAC, NULL,
					  KernelMode, &h);
	if (NT_SUCCESS(s)) {
		s = ZwSetSecurityObject(h, DACL_SECURITY_INFORMATION, &Sd);
		ZwClose(h);
	}
	ExFreePoolWithTag(Acl, KPW_TAG);
	return s;
}

static void KpwUnload(PDRIVER_OBJECT Driver)
{
	UNICODE_STRING Link = RTL_CONSTANT_STRING(L"\\DosDevices\\SanProvProxy");
	PDEVICE_OBJECT Device = Driver->DeviceObject;
	KPW_EXTENSION *x;

	IoDeleteSymbolicLink(&Link);
	if (!Device)
		return;
	x = Device->DeviceExtension;
	KpwDeviceDestroy(x->Logic);
	if (x->LockReady)
		ExDeleteResourceLite(&x->Lock);
	IoDeleteDevice(Device);
}

NTSTATUS DriverEntry(PDRIVER_OBJECT Driver, PUNICODE_STRING Registry)
{
	UNICODE_STRING Name = RTL_CONSTANT_STRING(L"\\Device\\SanProvProxy");
	UNICODE_STRING Link = RTL_CONSTANT_STRING(L"\\DosDevices\\SanProvProxy");
	PDEVICE_OBJECT Device;
	KPW_EXTENSION *x;
	NTSTATUS s;

	(void)Registry;
	s = IoCreateDevice(Driver, sizeof(KPW_EXTENSION), &Name, FILE_DEVICE_UNKNOWN,
			   FILE_DEVICE_SECURE_OPEN, FALSE, &Device);
	if (!NT_SUCCESS(s))
		return s;
	x = Device->DeviceExtension;
	RtlZeroMemory(x, sizeof(*x));
	s = ExInitializeResourceLite(&x->Lock);
	if (!NT_SUCCESS(s))
		goto err_device;
	x->LockReady = TRUE;
	ExInitializeFastMutex(&x->EvLock);
	s = KpwDeviceCreate(&Limits, &Ops, x, &x->Logic);
	if (!NT_SUCCESS(s))
		goto err_lock;
	s = Protect(Device);
	if (!NT_SUCCESS(s))
		goto err_logic;
	s = IoCreateSymbolicLink(&Link, &Name);
	if (!NT_SUCCESS(s))
		goto err_logic;
	Driver->MajorFunction[IRP_MJ_CREATE] = KpwDispatchCreate;
	Driver->MajorFunction[IRP_MJ_CLEANUP] = KpwDispatchCleanup;
	Driver->MajorFunction[IRP_MJ_CLOSE] = KpwDispatchClose;
	Driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = KpwDispatchDeviceControl;
	Driver->DriverUnload = KpwUnload;
	Device->Flags |= DO_BUFFERED_IO;
	Device->Flags &= ~DO_DEVICE_INITIALIZING;
	return STATUS_SUCCESS;

err_logic:
	KpwDeviceDestroy(x->Logic);
err_lock:
	ExDeleteResourceLite(&x->Lock);
err_device:
	IoDeleteDevice(Device);
	return s;
}
