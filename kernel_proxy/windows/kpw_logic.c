/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The proxy driver's logic over KPW_OPS (see kpw.h): handles, process and
 * user records, and the contract's requests through the portable core.
 *
 * The core calls the platform's secure and unsecure under its table lock,
 * which here is the device lock.  No memory-manager call may run under
 * that lock, so the platform's callbacks only move bookkeeping: the logic
 * secures a range before the core's dispatch (under the process's mutex
 * only) and hands it over in PfSecure; PfUnsecure queues a released range
 * on its process, and the thread that holds that process's mutex
 * unsecures the queue after the core returns, in the process's context.
 */
#include <string.h>

#include "kpw.h"

typedef struct _KPW_USER KPW_USER;
typedef struct _KPW_PROC KPW_PROC;

struct _KPW_USER {
	KPW_USER *Next;
	KPW_USER_ID Id;
	uint32_t Refs; /* process records */
	uint32_t Files;
	uint32_t Ranges;
	uint64_t Bytes;
};

/* A secured range: the core's cookie. */
typedef struct _KPW_RANGE {
	struct _KPW_RANGE *Next;
	KPW_PROC *Proc;
	void *Handle; /* MmSecureVirtualMemory's */
	uint64_t Addr;
	uint64_t Len;
} KPW_RANGE;

struct _KPW_PROC {
	KPW_PROC *Next;
	void *Process; /* the process object, referenced: never reused while we hold it */
	KPW_USER *User;
	void *Mutex;
	/* under the device lock */
	uint32_t Refs;	/* files not yet closed, and callers at work */
	uint32_t Files; /* files not yet cleaned up */
	uint32_t Ranges;
	uint64_t Bytes;
	bool Exited; /* set with Mutex held too: then nothing of it is secured */
	/* under Mutex */
	KPW_RANGE *Pending;	/* secured for the request in progress */
	uint32_t PendingStatus; /* or why not */
	KPW_RANGE *Deferred;	/* released by the core, to unsecure */
};

struct _KPW_FILE {
	KPW_PROC *Proc;
	bool CleanedUp; /* under the device lock */
};

struct _KPW_DEVICE {
	KPW_LIMITS Limits;
	const KPW_OPS *Ops;
	void *Ctx;
	struct kp_core *Core;
	struct kp_platform Platform;
	KPW_PROC *Procs;
	KPW_USER *Users;
	uint32_t Files;
};

/* The core's owner id of a process record: its address, unique while it lives. */
static uint64_t OwnerOf(KPW_PROC *p)
{
	return (uint64_t)(uintptr_t)p;
}

/* The core's platform: the driver's services. */

static void *PfAlloc(void *Ctx, size_t Size)
{
	KPW_DEVICE *d = Ctx;

	return d->Ops->Alloc(d->Ctx, Size);
}

static void PfFree(void *Ctx, void *P)
{
	KPW_DEVICE *d = Ctx;

	d->Ops->Free(d->Ctx, P);
}

static void PfLock(void *Ctx)
{
	KPW_DEVICE *d = Ctx;

	d->Ops->Lock(d->Ctx);
}

static void PfUnlock(void *Ctx)
{
	KPW_DEVICE *d = Ctx;

	d->Ops->Unlock(d->Ctx);
}

/*
 * Nothing posts to the core's event ring on Windows (the driver has no
 * event to report), and the core touches it only under its table lock.
 */
static void PfNoLock(void *Ctx)
{
	(void)Ctx;
}

/* Under the device lock: hand over the range secured before the dispatch. */
static uint32_t PfSecure(void *Ctx, uint64_t Owner, uint64_t Addr, uint64_t Len, uint32_t Access,
			 void **Cookie)
{
	KPW_DEVICE *d = Ctx;
	KPW_PROC *p = (KPW_PROC *)(uintptr_t)Owner;
	KPW_USER *u = p->User;
	KPW_RANGE *r = p->Pending;

	(void)Access;
	if (!r || r->Addr != Addr || r->Len != Len)
		return p->PendingStatus ? p->PendingStatus : KP_E_FAULT;
	/* The user's allowance, exact here: all its processes count under this lock. */
	if (u->Ranges >= d->Limits.MaxRangesPerUser)
		return KP_E_QUOTA_RANGES;
	if (Len > d->Limits.MaxBytesPerUser - u->Bytes)
		return KP_E_QUOTA_BYTES;
	p->Pending = NULL;
	p->Ranges++;
	p->Bytes += Len;
	u->Ranges++;
	u->Bytes += Len;
	*Cookie = r;
	return KP_OK;
}

/* Under the device lock: queue the range for its process's mutex holder. */
static void PfUnsecure(void *Ctx, uint64_t Owner, uint64_t Addr, uint64_t Len, void *Cookie)
{
	KPW_RANGE *r = Cookie;
	KPW_PROC *p = r->Proc;

	(void)Ctx, (void)Owner, (void)Addr, (void)Len;
	p->Ranges--;
	p->Bytes -= r->Len;
	p->User->Ranges--;
	p->User->Bytes -= r->Len;
	r->Next = p->Deferred;
	p->Deferred = r;
}

KPW_STATUS KpwDeviceCreate(const KPW_LIMITS *Limits, const KPW_OPS *Ops, void *Ctx,
			   KPW_DEVICE **Device)
{
	KPW_DEVICE *d;

	*Device = NULL;
	if (!Limits || !Ops || !Limits->MaxFiles || !Limits->MaxFilesPerProcess ||
	    !Limits->MaxFilesPerUser || !Limits->MaxRangesPerUser || !Limits->MaxBytesPerUser ||
	    !Limits->Core.page_size || (Limits->Core.page_size & (Limits->Core.page_size - 1)))
		return KPW_INVALID_PARAMETER;
	d = Ops->Alloc(Ctx, sizeof(*d));
	if (!d)
		return KPW_INSUFFICIENT_RESOURCES;
	d->Limits = *Limits;
	d->Ops = Ops;
	d->Ctx = Ctx;
	d->Platform = (struct kp_platform){ .alloc = PfAlloc,
					    .free = PfFree,
					    .lock = PfLock,
					    .unlock = PfUnlock,
					    .ev_lock = PfNoLock,
					    .ev_unlock = PfNoLock,
					    .secure = PfSecure,
					    .unsecure = PfUnsecure };
	d->Core = kp_core_create(&Limits->Core, &d->Platform, d);
	if (!d->Core) {
		Ops->Free(Ctx, d);
		return KPW_INSUFFICIENT_RESOURCES;
	}
	*Device = d;
	return KPW_SUCCESS;
}

void KpwDeviceDestroy(KPW_DEVICE *d)
{
	if (!d)
		return;
	/*
	 * The I/O manager cleaned up and closed every handle before Unload,
	 * and each process's last cleanup released its ranges: the core has
	 * nothing left to unsecure, and no record is left.
	 */
	kp_core_destroy(d->Core);
	d->Ops->Free(d->Ctx, d);
}

/* Lookups, under the device lock. */

static KPW_PROC *FindProc(KPW_DEVICE *d, void *Process)
{
	for (KPW_PROC *p = d->Procs; p; p = p->Next)
		if (p->Process == Process && !p->Exited)
			return p;
	return NULL;
}

static KPW_USER *FindUser(KPW_DEVICE *d, const KPW_USER_ID *Id)
{
	for (KPW_USER *u = d->Users; u; u = u->Next)
		if (u->Id.Length == Id->Length && !memcmp(u->Id.Sid, Id->Sid, Id->Length))
			return u;
	return NULL;
}

/* Drop a reference on a record; the last frees it (its ranges are released by then). */
static void ProcPut(KPW_DEVICE *d, KPW_PROC *p)
{
	KPW_USER *u = p->User, **uu;
	KPW_PROC **pp;
	bool Last, LastUser = false;

	d->Ops->Lock(d->Ctx);
	Last = --p->Refs == 0;
	if (Last) {
		for (pp = &d->Procs; *pp != p; pp = &(*pp)->Next)
			;
		*pp = p->Next;
		LastUser = --u->Refs == 0;
		if (LastUser) {
			for (uu = &d->Users; *uu != u; uu = &(*uu)->Next)
				;
			*uu = u->Next;
		}
	}
	d->Ops->Unlock(d->Ctx);
	if (!Last)
		return;
	d->Ops->MutexDestroy(d->Ctx, p->Mutex);
	d->Ops->ProcessPut(d->Ctx, p->Process);
	d->Ops->Free(d->Ctx, p);
	if (LastUser)
		d->Ops->Free(d->Ctx, u);
}

KPW_STATUS KpwCreate(KPW_DEVICE *d, uint32_t NameLength, KPW_FILE **File)
{
	void *Process, *Mutex = NULL;
	KPW_PROC *p, *NewP = NULL;
	KPW_USER *u, *NewU = NULL;
	KPW_FILE *f = NULL;
	KPW_USER_ID Id;
	KPW_STATUS s;

	*File = NULL;
	/* The device has no namespace: \\.\SanProvProxy\anything is not it. */
	if (NameLength)
		return KPW_OBJECT_NAME_INVALID;
	memset(&Id, 0, sizeof(Id));
	s = d->Ops->CurrentUser(d->Ctx, &Id);
	if (KPW_FAILED(s))
		return s;
	if (!Id.Length || Id.Length > KPW_MAX_SID)
		return KPW_ACCESS_DENIED;
	Process = d->Ops->ProcessGet(d->Ctx);
	if (!Process)
		return KPW_ACCESS_DENIED;
	/* Allocated before the lock, which guards lists only; what is not used goes again. */
	f = d->Ops->Alloc(d->Ctx, sizeof(*f));
	NewP = d->Ops->Alloc(d->Ctx, sizeof(*NewP));
	NewU = d->Ops->Alloc(d->Ctx, sizeof(*NewU));
	Mutex = f && NewP && NewU ? d->Ops->MutexCreate(d->Ctx) : NULL;
	if (!Mutex) {
		s = KPW_INSUFFICIENT_RESOURCES;
		goto out;
	}
	s = KPW_SUCCESS;
	d->Ops->Lock(d->Ctx);
	p = FindProc(d, Process);
	u = p ? p->User : FindUser(d, &Id);
	if (d->Files >= d->Limits.MaxFiles || (u && u->Files >= d->Limits.MaxFilesPerUser) ||
	    (p && p->Files >= d->Limits.MaxFilesPerProcess)) {
		d->Ops->Unlock(d->Ctx);
		s = KPW_QUOTA_EXCEEDED;
		goto out;
	}
	if (!u) {
		u = NewU;
		NewU = NULL;
		u->Id = Id;
		u->Next = d->Users;
		d->Users = u;
	}
	if (!p) {
		p = NewP;
		NewP = NULL;
		p->Process = Process; /* the record keeps this reference */
		Process = NULL;
		p->User = u;
		u->Refs++;
		p->Mutex = Mutex;
		Mutex = NULL;
		p->Next = d->Procs;
		d->Procs = p;
	}
	p->Refs++;
	p->Files++;
	u->Files++;
	d->Files++;
	f->Proc = p;
	*File = f;
	f = NULL;
	d->Ops->Unlock(d->Ctx);
out:
	if (Process)
		d->Ops->ProcessPut(d->Ctx, Process);
	if (Mutex)
		d->Ops->MutexDestroy(d->Ctx, Mutex);
	if (NewU)
		d->Ops->Free(d->Ctx, NewU);
	if (NewP)
		d->Ops->Free(d->Ctx, NewP);
	if (f)
		d->Ops->Free(d->Ctx, f);
	return s;
}

/* Whether the calling thread belongs to p's process. */
static bool InProcess(KPW_DEVICE *d, KPW_PROC *p)
{
	void *Cur = d->Ops->ProcessGet(d->Ctx);
	bool Same = Cur == p->Process;

	if (Cur)
		d->Ops->ProcessPut(d->Ctx, Cur);
	return Same;
}

/*
 * Unsecure a list of p's ranges (p's mutex held), in p's address space:
 * attached when the caller runs in another one.  Process objects are
 * compared, never ids: an id follows the thread, not the address space.
 */
static void UnsecureList(KPW_DEVICE *d, KPW_PROC *p, KPW_RANGE *List)
{
	KPW_ATTACH_STATE State;
	bool Attached = false;
	KPW_RANGE *r;

	if (!List)
		return;
	if (!InProcess(d, p)) {
		d->Ops->Attach(d->Ctx, p->Process, &State);
		Attached = true;
	}
	while (List) {
		r = List;
		List = r->Next;
		d->Ops->Unsecure(d->Ctx, r->Handle);
		d->Ops->Free(d->Ctx, r);
	}
	if (Attached)
		d->Ops->Detach(d->Ctx, &State);
}

/* Release everything p secured (p's mutex held, p not exited). */
static void ReleaseOwner(KPW_DEVICE *d, KPW_PROC *p)
{
	KPW_RANGE *List;

	kp_core_release_owner(d->Core, OwnerOf(p));
	List = p->Deferred;
	p->Deferred = NULL;
	UnsecureList(d, p, List);
}

void KpwCleanup(KPW_DEVICE *d, KPW_FILE *f)
{
	KPW_PROC *p;
	bool Last;

	if (!f)
		return;
	p = f->Proc;
	d->Ops->Lock(d->Ctx);
	if (f->CleanedUp) {
		d->Ops->Unlock(d->Ctx);
		return;
	}
	f->CleanedUp = true;
	p->Files--;
	p->User->Files--;
	d->Files--;
	Last = !p->Files && !p->Exited;
	d->Ops->Unlock(d->Ctx);
	if (!Last)
		return;
	/*
	 * The process's last handle: its ranges go, in its context.  This may
	 * be another process closing a duplicated handle; the process's exit
	 * waits on the mutex, so its address space is there while attached.
	 */
	d->Ops->MutexAcquire(d->Ctx, p->Mutex);
	d->Ops->Lock(d->Ctx);
	Last = !p->Files && !p->Exited; /* a new handle of the process keeps them */
	d->Ops->Unlock(d->Ctx);
	if (Last)
		ReleaseOwner(d, p);
	d->Ops->MutexRelease(d->Ctx, p->Mutex);
}

void KpwClose(KPW_DEVICE *d, KPW_FILE *f)
{
	if (!f)
		return;
	KpwCleanup(d, f); /* never skipped, whatever the I/O manager did */
	ProcPut(d, f->Proc);
	d->Ops->Free(d->Ctx, f);
}

void KpwProcessExit(KPW_DEVICE *d, void *Process)
{
	KPW_PROC *p;

	d->Ops->Lock(d->Ctx);
	p = FindProc(d, Process);
	if (p)
		p->Refs++;
	d->Ops->Unlock(d->Ctx);
	if (!p)
		return;
	/*
	 * Its handles may live on in other processes (inherited, duplicated)
	 * and never be cleaned up before its address space goes: release
	 * now, in its context, and let nothing attach to it again.
	 */
	d->Ops->MutexAcquire(d->Ctx, p->Mutex);
	ReleaseOwner(d, p);
	d->Ops->Lock(d->Ctx);
	p->Exited = true;
	d->Ops->Unlock(d->Ctx);
	d->Ops->MutexRelease(d->Ctx, p->Mutex);
	ProcPut(d, p);
}

static void Answer(struct kp_rsp_hdr *h, uint32_t Size, uint16_t Code, uint32_t Status)
{
	*h = (struct kp_rsp_hdr){
		.size = Size, .version = KP_PROTO_VERSION, .code = Code, .status = Status
	};
}

/*
 * A KP_SECURE the core will accept gets its range secured now, under p's
 * mutex only; PfSecure hands it to the core.  The checks are the core's,
 * on the same copy of the request the core then reads.
 */
static void PreSecure(KPW_DEVICE *d, KPW_PROC *p, const void *Req, uint32_t Len)
{
	const struct kp_core_limits *l = &d->Limits.Core;
	struct kp_secure_req r;
	KPW_RANGE *R;
	void *Handle = NULL;
	uint32_t Over = KP_OK;
	KPW_STATUS s;

	if (Len != sizeof(r))
		return;
	memcpy(&r, Req, sizeof(r));
	if (r.hdr.size != sizeof(r) || r.hdr.version != KP_PROTO_VERSION || r.hdr.code != KP_SECURE)
		return;
	if (!r.len || r.addr + r.len < r.addr || r.addr + r.len > l->user_addr_max ||
	    ((r.addr | r.len) & (l->page_size - 1)) || !r.access ||
	    (r.access & ~(uint32_t)(KP_ACCESS_READ | KP_ACCESS_WRITE)) || r.flags)
		return;
	/* Over its quota, a process makes no memory-manager call at all. */
	d->Ops->Lock(d->Ctx);
	if (p->Ranges >= l->max_ranges_per_owner || p->User->Ranges >= d->Limits.MaxRangesPerUser)
		Over = KP_E_QUOTA_RANGES;
	else if (r.len > l->max_bytes_per_owner - p->Bytes ||
		 r.len > d->Limits.MaxBytesPerUser - p->User->Bytes)
		Over = KP_E_QUOTA_BYTES;
	d->Ops->Unlock(d->Ctx);
	if (Over) {
		p->PendingStatus = Over;
		return;
	}
	R = d->Ops->Alloc(d->Ctx, sizeof(*R));
	if (!R) {
		p->PendingStatus = KP_E_NO_MEMORY;
		return;
	}
	s = d->Ops->Secure(d->Ctx, r.addr, r.len, (r.access & KP_ACCESS_WRITE) != 0, &Handle);
	if (KPW_FAILED(s) || !Handle) {
		/* Raised, or returned NULL: not valid memory of that protection. */
		d->Ops->Free(d->Ctx, R);
		p->PendingStatus = s == KPW_INSUFFICIENT_RESOURCES ? KP_E_NO_MEMORY : KP_E_FAULT;
		return;
	}
	R->Proc = p;
	R->Handle = Handle;
	R->Addr = r.addr;
	R->Len = r.len;
	p->Pending = R;
}

KPW_STATUS KpwDeviceControl(KPW_DEVICE *d, KPW_FILE *f, uint32_t Code, const void *In,
			    uint32_t InLen, void *Out, uint32_t OutCap, uint32_t *Info)
{
	union {
		struct kp_req_hdr Hdr;
		unsigned char Bytes[64];
	} Req;
	const void *Src = In;
	KPW_RANGE *List;
	KPW_PROC *p;
	KPW_STATUS s = KPW_SUCCESS;
	bool Dead;
	size_t n = 0;
	uint32_t St;

	*Info = 0;
	if (!f)
		return KPW_INVALID_HANDLE;
	/* Buffered only: the other methods hand the driver user addresses. */
	if (KPW_CTL_METHOD(Code) != 0)
		return KPW_NOT_SUPPORTED;
	if (Code != KPW_IOCTL_REQUEST)
		return KPW_INVALID_DEVICE_REQUEST;
	if (!In || !Out || InLen < sizeof(struct kp_req_hdr))
		return KPW_INVALID_PARAMETER;
	p = f->Proc;
	/* Ranges belong to the opener's address space, and only there. */
	if (!InProcess(d, p))
		return KPW_ACCESS_DENIED;
	/* One copy, which the checks here and the core's both read. */
	if (InLen <= sizeof(Req)) {
		memcpy(Req.Bytes, In, InLen);
		Src = Req.Bytes;
	}

	d->Ops->MutexAcquire(d->Ctx, p->Mutex);
	d->Ops->Lock(d->Ctx);
	Dead = f->CleanedUp || p->Exited;
	d->Ops->Unlock(d->Ctx);
	if (Dead) {
		s = KPW_INVALID_HANDLE;
		goto out;
	}
	if (Src != In)
		PreSecure(d, p, Src, InLen);
	/*
	 * The core validates the contract's request and answers it; a status
	 * of the contract is a completed request, not an error.  A request
	 * refused before it had a response (its header) still gets one: a
	 * bare header with the status.
	 */
	St = kp_core_dispatch(d->Core, OwnerOf(p), Src, InLen, Out, OutCap, &n);
	/* A range the core did not take, and those it released, go now. */
	if (p->Pending) {
		p->Pending->Next = p->Deferred;
		p->Deferred = p->Pending;
	}
	p->Pending = NULL;
	p->PendingStatus = KP_OK;
	List = p->Deferred;
	p->Deferred = NULL;
	UnsecureList(d, p, List);
	if (!n) {
		struct kp_req_hdr h;
		if (OutCap < sizeof(struct kp_rsp_hdr)) {
			s = KPW_BUFFER_TOO_SMALL;
			goto out;
		}
		memcpy(&h, Src, sizeof(h));
		Answer(Out, sizeof(struct kp_rsp_hdr), h.code, St);
		n = sizeof(struct kp_rsp_hdr);
	}
	*Info = (uint32_t)n;
out:
	d->Ops->MutexRelease(d->Ctx, p->Mutex);
	return s;
}

void KpwCounts(KPW_DEVICE *d, KPW_COUNTS *c)
{
	struct kp_core_counts cc;

	memset(c, 0, sizeof(*c));
	d->Ops->Lock(d->Ctx);
	c->Files = d->Files;
	for (KPW_PROC *p = d->Procs; p; p = p->Next)
		c->Processes++;
	for (KPW_USER *u = d->Users; u; u = u->Next)
		c->Users++;
	d->Ops->Unlock(d->Ctx);
	kp_core_counts(d->Core, &cc); /* takes the device lock itself */
	c->Secured = cc.ranges;
}
