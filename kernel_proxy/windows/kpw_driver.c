/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov_proxy.sys: the WDM glue around the driver's logic (kpw_logic.c).
 *
 * It creates \Device\SanProvProxy with a DACL of its own (SYSTEM and
 * Administrators: all; Users: read and write), serves create, cleanup,
 * close and METHOD_BUFFERED device controls, registers a process-notify
 * routine (a process's ranges go when it exits, whatever became of its
 * handles), and implements KPW_OPS with the kernel's calls.  Every call
 * that can raise runs inside __try, in a function of its own: clang
 * records __try ranges around calls only, so no user access is ever
 * inlined into a __try body.  The exception code is taken in the filter
 * expression (Wine returns 0 for it in the __except body).
 *
 * Built with -fstack-protector-strong: mingw-w64 has no /GS runtime for
 * the kernel, so the cookie (__stack_chk_guard) and its failure
 * (__stack_chk_fail: bugcheck DRIVER_OVERRAN_STACK_BUFFER) are here, and
 * the entry point seeds the cookie before anything it protects runs.
 */
#include <ntifs.h>

#include "kpw.h"

/* mingw-w64 10's kernel headers predate these: the values are the WDK's. */
#ifndef SECURITY_MAX_SID_SIZE
#define SECURITY_MAX_SID_SIZE                                                                      \
	(sizeof(SID) - sizeof(ULONG) + SID_MAX_SUB_AUTHORITIES * sizeof(ULONG))
#endif
#define KPW_BUGCHECK_OVERRAN_STACK_BUFFER 0xF7

#define KPW_TAG 'PnaS'

DRIVER_INITIALIZE DriverEntry;
DRIVER_INITIALIZE KpwEntry;
static DRIVER_UNLOAD KpwUnload;
static DRIVER_DISPATCH KpwDispatchCreate, KpwDispatchCleanup, KpwDispatchClose,
    KpwDispatchDeviceControl;

typedef struct _KPW_EXTENSION {
	KPW_DEVICE *Logic;
	ERESOURCE Lock;
	BOOLEAN LockReady;
	BOOLEAN NotifyRegistered;
} KPW_EXTENSION;

/* The logic keeps a KAPC_STATE in a KPW_ATTACH_STATE: room and alignment. */
_Static_assert(sizeof(KAPC_STATE) <= sizeof(KPW_ATTACH_STATE), "KAPC_STATE fits");
_Static_assert(_Alignof(KAPC_STATE) <= _Alignof(KPW_ATTACH_STATE), "KAPC_STATE aligned");

/* The process-notify routine has no context: the one device's logic. */
static KPW_DEVICE *NotifyLogic;

/* Stack cookies ----------------------------------------------------------- */

ULONG_PTR __stack_chk_guard = 0x2B992DDFA232ull;

void __stack_chk_fail(void);
void __stack_chk_fail(void)
{
	KeBugCheckEx(KPW_BUGCHECK_OVERRAN_STACK_BUFFER, 0, 0, 0, 0);
}

/*
 * The image's entry: seeds the cookie, then DriverEntry.  Nothing on the
 * stack here checks one, so the new value breaks no frame.
 */
__attribute__((no_stack_protector)) NTSTATUS KpwEntry(PDRIVER_OBJECT Driver,
						      PUNICODE_STRING Registry)
{
	ULONG_PTR Seed = (ULONG_PTR)__rdtsc();

	Seed ^= (ULONG_PTR)&Seed ^ ((ULONG_PTR)Driver << 17) ^ (ULONG_PTR)&__stack_chk_guard;
	Seed *= 0x9E3779B97F4A7C15ull;
	Seed &= ~(ULONG_PTR)0xFF; /* a zero byte stops string overreads */
	__stack_chk_guard = Seed ? Seed : 0x2B992DDFA200ull;
	return DriverEntry(Driver, Registry);
}

/*
 * Wine's unimplemented-function stubs carry no unwind data: its unwinder
 * then walks the stub's frame a slot at a time, as if each held a return
 * address, and a stale one left by an earlier call (ExReleaseResourceLite's,
 * say) sends it off the stack before it reaches our __try.  Filled with an
 * address in this image outside any function, each slot is passed over
 * until the walk reaches the real return address.  Called right before the
 * call that can raise: its frame is the region the callee's frames take.
 */
static const UCHAR StackFill[16];

static __attribute__((noinline, no_stack_protector)) void ScrubCalleeFrames(void)
{
	volatile ULONG_PTR Slots[32];

	for (ULONG i = 0; i < ARRAYSIZE(Slots); i++)
		Slots[i] = (ULONG_PTR)StackFill;
}

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

/* Resources: PASSIVE_LEVEL with normal kernel APCs off, so page faults are served. */
static void AcquireResource(PERESOURCE R)
{
	KeEnterCriticalRegion();
	ExAcquireResourceExclusiveLite(R, TRUE);
}

static void ReleaseResource(PERESOURCE R)
{
	ExReleaseResourceLite(R);
	KeLeaveCriticalRegion();
}

/* The device lock: lists and counters only, never across the memory manager. */
static void OpLock(void *Ctx)
{
	AcquireResource(&((KPW_EXTENSION *)Ctx)->Lock);
}

static void OpUnlock(void *Ctx)
{
	ReleaseResource(&((KPW_EXTENSION *)Ctx)->Lock);
}

static void *OpMutexCreate(void *Ctx)
{
	PERESOURCE R = OpAlloc(Ctx, sizeof(*R));

	if (R && !NT_SUCCESS(ExInitializeResourceLite(R))) {
		OpFree(Ctx, R);
		R = NULL;
	}
	return R;
}

static void OpMutexDestroy(void *Ctx, void *Mutex)
{
	ExDeleteResourceLite(Mutex);
	OpFree(Ctx, Mutex);
}

static void OpMutexAcquire(void *Ctx, void *Mutex)
{
	(void)Ctx;
	AcquireResource(Mutex);
}

static void OpMutexRelease(void *Ctx, void *Mutex)
{
	(void)Ctx;
	ReleaseResource(Mutex);
}

/*
 * The calling thread's process object, referenced.  Looked up by the
 * thread's own id, which no other process can hold while the thread runs;
 * the logic compares the objects (a record keeps its reference, so the
 * object it holds is never another process's).
 */
static void *OpProcessGet(void *Ctx)
{
	PEPROCESS P = NULL;

	(void)Ctx;
	if (!NT_SUCCESS(PsLookupProcessByProcessId(PsGetCurrentProcessId(), &P)))
		return NULL;
	return P;
}

static void OpProcessPut(void *Ctx, void *Process)
{
	(void)Ctx;
	ObDereferenceObject(Process);
}

/* The primary token's user, through a kernel handle of our own. */
static KPW_STATUS OpCurrentUser(void *Ctx, KPW_USER_ID *User)
{
	union {
		TOKEN_USER Tu;
		UCHAR Bytes[sizeof(TOKEN_USER) + SECURITY_MAX_SID_SIZE];
	} Info;
	HANDLE h;
	ULONG Len = 0, SidLen;
	NTSTATUS s;

	(void)Ctx;
	s = ZwOpenProcessTokenEx(ZwCurrentProcess(), TOKEN_QUERY, OBJ_KERNEL_HANDLE, &h);
	if (!NT_SUCCESS(s))
		return s;
	s = ZwQueryInformationToken(h, TokenUser, &Info, sizeof(Info), &Len);
	ZwClose(h);
	if (!NT_SUCCESS(s))
		return s;
	SidLen = RtlLengthSid(Info.Tu.User.Sid);
	if (!SidLen || SidLen > sizeof(User->Sid))
		return STATUS_INVALID_SID;
	RtlCopyMemory(User->Sid, Info.Tu.User.Sid, SidLen);
	User->Length = SidLen;
	return STATUS_SUCCESS;
}

static void OpAttach(void *Ctx, void *Process, KPW_ATTACH_STATE *State)
{
	(void)Ctx;
	KeStackAttachProcess((PKPROCESS)Process, (PKAPC_STATE)State);
}

static void OpDetach(void *Ctx, KPW_ATTACH_STATE *State)
{
	(void)Ctx;
	KeUnstackDetachProcess((PKAPC_STATE)State);
}

/* NULL, not an exception, is how it refuses memory of the wrong kind. */
static KPW_STATUS OpSecure(void *Ctx, uint64_t Addr, uint64_t Len, bool Write, void **Handle)
{
	NTSTATUS Code = STATUS_SUCCESS;
	HANDLE h = NULL;

	(void)Ctx;
	ScrubCalleeFrames();
	__try {
		h = MmSecureVirtualMemory((PVOID)(ULONG_PTR)Addr, (SIZE_T)Len,
					  Write ? PAGE_READWRITE : PAGE_READONLY);
	} __except (Filter(GetExceptionCode(), &Code)) {
		return Code ? Code : STATUS_ACCESS_VIOLATION;
	}
	*Handle = h;
	return STATUS_SUCCESS;
}

static void OpUnsecure(void *Ctx, void *Handle)
{
	NTSTATUS Code;

	(void)Ctx;
	ScrubCalleeFrames();
	__try {
		MmUnsecureVirtualMemory(Handle);
	} __except (Filter(GetExceptionCode(), &Code)) {
		/* Nothing to give back. */
	}
}

static const KPW_OPS Ops = {
	.Alloc = OpAlloc,
	.Free = OpFree,
	.Lock = OpLock,
	.Unlock = OpUnlock,
	.MutexCreate = OpMutexCreate,
	.MutexDestroy = OpMutexDestroy,
	.MutexAcquire = OpMutexAcquire,
	.MutexRelease = OpMutexRelease,
	.ProcessGet = OpProcessGet,
	.ProcessPut = OpProcessPut,
	.CurrentUser = OpCurrentUser,
	.Attach = OpAttach,
	.Detach = OpDetach,
	.Secure = OpSecure,
	.Unsecure = OpUnsecure,
};

/*
 * The core's tables start small and grow to these limits (nonpaged, under
 * the device lock at PASSIVE_LEVEL); per process and per user records come
 * and go with the processes.
 */
static const KPW_LIMITS Limits = {
	.Core = { .max_ranges = 65536,
		  .max_owners = 1024, /* processes with something secured */
		  .max_ranges_per_owner = 8192,
		  .max_bytes_per_owner = 64ull << 30,
		  .user_addr_max = 0x00007fffffffffffull,
		  .page_size = PAGE_SIZE,
		  .event_ring = 2 },
	.MaxFiles = 4096,
	.MaxFilesPerProcess = 8,
	.MaxFilesPerUser = 256,
	.MaxRangesPerUser = 16384,
	.MaxBytesPerUser = 128ull << 30,
};

/*
 * Process exit (CreateInfo NULL), before its address space goes.  The
 * kernel hands over the process object itself, referenced for the call:
 * no lookup by id, which could fail or find another process, stands
 * between an exit and the release of what it secured.  The logic
 * attaches if the routine runs in another context.
 */
static void KpwProcessNotify(PEPROCESS Process, HANDLE ProcessId, PPS_CREATE_NOTIFY_INFO CreateInfo)
{
	(void)ProcessId;
	if (CreateInfo || !NotifyLogic)
		return;
	KpwProcessExit(NotifyLogic, Process);
}

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
	/* The device has no namespace: a name after it is refused. */
	NTSTATUS s = KpwCreate(x->Logic, Sp->FileObject->FileName.Length, &f);

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
		return Complete(Irp, STATUS_NOT_SUPPORTED, 0);
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
	/* Removal waits for routines in progress: none runs after this. */
	if (x->NotifyRegistered)
		PsSetCreateProcessNotifyRoutineEx(KpwProcessNotify, TRUE);
	NotifyLogic = NULL;
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
	s = KpwDeviceCreate(&Limits, &Ops, x, &x->Logic);
	if (!NT_SUCCESS(s))
		goto err_lock;
	s = Protect(Device);
	if (!NT_SUCCESS(s))
		goto err_logic;
	/*
	 * Without it a process could exit with ranges secured: no driver then.
	 * The Ex routine needs an image linked with FORCE_INTEGRITY (and so
	 * signed): it answers STATUS_ACCESS_DENIED otherwise.
	 */
	NotifyLogic = x->Logic;
	s = PsSetCreateProcessNotifyRoutineEx(KpwProcessNotify, FALSE);
	if (!NT_SUCCESS(s))
		goto err_logic;
	x->NotifyRegistered = TRUE;
	s = IoCreateSymbolicLink(&Link, &Name);
	if (!NT_SUCCESS(s))
		goto err_notify;
	Driver->MajorFunction[IRP_MJ_CREATE] = KpwDispatchCreate;
	Driver->MajorFunction[IRP_MJ_CLEANUP] = KpwDispatchCleanup;
	Driver->MajorFunction[IRP_MJ_CLOSE] = KpwDispatchClose;
	Driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = KpwDispatchDeviceControl;
	Driver->DriverUnload = KpwUnload;
	Device->Flags |= DO_BUFFERED_IO;
	Device->Flags &= ~DO_DEVICE_INITIALIZING;
	return STATUS_SUCCESS;

err_notify:
	PsSetCreateProcessNotifyRoutineEx(KpwProcessNotify, TRUE);
err_logic:
	NotifyLogic = NULL;
	KpwDeviceDestroy(x->Logic);
err_lock:
	ExDeleteResourceLite(&x->Lock);
err_device:
	IoDeleteDevice(Device);
	return s;
}
