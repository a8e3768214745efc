/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The proxy driver's logic over KPW_OPS (see kpw.h): handles, the
 * contract's requests through the portable core, the event ring section
 * and the notify word.
 */
#include <string.h>

#include "kpw.h"

struct _KPW_FILE {
	KPW_FILE *Next;
	uint64_t Owner;	    /* the core's owner id: one per handle */
	uint64_t ProcessId; /* who opened it: only its threads may secure through it */
	void *Process;	    /* referenced, for cleanup from another context */
	bool CleanedUp;
	/* the event ring: a section of the driver's, viewed by the process */
	void *Section;
	struct kpw_ring *Ring; /* the driver's system mapping */
	uint64_t RingUserVa;
	uint32_t RingSize;
	bool Lost; /* a KP_EVENT_LOST is waiting in the ring */
	/* the notify word, locked */
	void *NotifyMdl;
	volatile uint64_t *Notify; /* its system mapping */
};

struct _KPW_DEVICE {
	KPW_LIMITS Limits;
	const KPW_OPS *Ops;
	void *Ctx;
	struct kp_core *Core;
	struct kp_platform Platform;
	KPW_FILE *Files;
	uint32_t NFiles;
	uint64_t NextOwner;
};

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

/* The core calls out under the lock KpwDeviceControl already holds. */
static void PfNoLock(void *Ctx)
{
	(void)Ctx;
}

static void PfEvLock(void *Ctx)
{
	KPW_DEVICE *d = Ctx;

	d->Ops->EvLock(d->Ctx);
}

static void PfEvUnlock(void *Ctx)
{
	KPW_DEVICE *d = Ctx;

	d->Ops->EvUnlock(d->Ctx);
}

static uint32_t PfSecure(void *Ctx, uint64_t Owner, uint64_t Addr, uint64_t Len, uint32_t Access,
			 void **Cookie)
{
	KPW_DEVICE *d = Ctx;
	KPW_STATUS s;

	(void)Owner;
	s = d->Ops->Secure(d->Ctx, Addr, Len, (Access & KP_ACCESS_WRITE) != 0, Cookie);
	if (!KPW_FAILED(s))
		return KP_OK;
	return s == KPW_INSUFFICIENT_RESOURCES ? KP_E_NO_MEMORY : KP_E_FAULT;
}

static void PfUnsecure(void *Ctx, uint64_t Owner, uint64_t Addr, uint64_t Len, void *Cookie)
{
	KPW_DEVICE *d = Ctx;

	(void)Owner, (void)Addr, (void)Len;
	d->Ops->Unsecure(d->Ctx, Cookie);
}

KPW_STATUS KpwDeviceCreate(const KPW_LIMITS *Limits, const KPW_OPS *Ops, void *Ctx,
			   KPW_DEVICE **Device)
{
	KPW_DEVICE *d;

	*Device = NULL;
	if (!Limits || !Ops || !Limits->MaxFiles || !Limits->MaxFilesPerProcess ||
	    Limits->RingEntries < 2 || (Limits->RingEntries & (Limits->RingEntries - 1)) ||
	    Limits->RingEntries > (1u << 20))
		return KPW_INVALID_PARAMETER;
	d = Ops->Alloc(Ctx, sizeof(*d));
	if (!d)
		return KPW_INSUFFICIENT_RESOURCES;
	d->Limits = *Limits;
	d->Ops = Ops;
	d->Ctx = Ctx;
	d->NextOwner = 1;
	d->Platform = (struct kp_platform){ .alloc = PfAlloc,
					    .free = PfFree,
					    .lock = PfNoLock,
					    .unlock = PfNoLock,
					    .ev_lock = PfEvLock,
					    .ev_unlock = PfEvUnlock,
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
	/* The I/O manager cleans up and closes every handle before Unload. */
	kp_core_destroy(d->Core);
	d->Ops->Free(d->Ctx, d);
}

KPW_STATUS KpwCreate(KPW_DEVICE *d, KPW_FILE **File)
{
	uint64_t Pid = d->Ops->CurrentProcessId(d->Ctx);
	uint32_t Same = 0;
	KPW_FILE *f;
	KPW_STATUS s = KPW_SUCCESS;

	*File = NULL;
	d->Ops->Lock(d->Ctx);
	for (f = d->Files; f; f = f->Next)
		Same += f->ProcessId == Pid && !f->CleanedUp;
	if (d->NFiles >= d->Limits.MaxFiles || Same >= d->Limits.MaxFilesPerProcess) {
		s = KPW_QUOTA_EXCEEDED;
		goto out;
	}
	f = d->Ops->Alloc(d->Ctx, sizeof(*f));
	if (!f) {
		s = KPW_INSUFFICIENT_RESOURCES;
		goto out;
	}
	f->Process = d->Ops->ProcessGet(d->Ctx);
	f->ProcessId = Pid;
	f->Owner = d->NextOwner++;
	f->Next = d->Files;
	d->Files = f;
	d->NFiles++;
	*File = f;
out:
	d->Ops->Unlock(d->Ctx);
	return s;
}

/* Take the file's ring and notify word down (lock held). */
static void ReleaseEvents(KPW_DEVICE *d, KPW_FILE *f)
{
	void *Mdl, *Section, *Ring;
	uint64_t UserVa;

	/* Out of KpwPostEvent's reach first, then released. */
	d->Ops->EvLock(d->Ctx);
	Mdl = f->Notify ? f->NotifyMdl : NULL;
	Section = f->Section;
	Ring = f->Ring;
	UserVa = f->RingUserVa;
	f->Notify = NULL;
	f->NotifyMdl = NULL;
	f->Section = NULL;
	f->Ring = NULL;
	f->RingUserVa = 0;
	d->Ops->EvUnlock(d->Ctx);
	if (Mdl)
		d->Ops->UnlockUser(d->Ctx, Mdl);
	if (UserVa)
		d->Ops->SectionUnmapUser(d->Ctx, UserVa);
	if (Section)
		d->Ops->SectionDestroy(d->Ctx, Section, Ring);
}

void KpwCleanup(KPW_DEVICE *d, KPW_FILE *f)
{
	unsigned char State[64];
	bool Attached = false;

	if (!f)
		return;
	d->Ops->Lock(d->Ctx);
	if (f->CleanedUp) {
		d->Ops->Unlock(d->Ctx);
		return;
	}
	f->CleanedUp = true;
	/*
	 * The ranges and the view live in the opener's address space: the
	 * last handle may be closed by another process it was duplicated to.
	 */
	if (d->Ops->CurrentProcessId(d->Ctx) != f->ProcessId) {
		d->Ops->Attach(d->Ctx, f->Process, State);
		Attached = true;
	}
	kp_core_release_owner(d->Core, f->Owner);
	ReleaseEvents(d, f);
	if (Attached)
		d->Ops->Detach(d->Ctx, State);
	d->Ops->Unlock(d->Ctx);
}

void KpwClose(KPW_DEVICE *d, KPW_FILE *f)
{
	KPW_FILE **pp;

	if (!f)
		return;
	KpwCleanup(d, f); /* never skipped, whatever the I/O manager did */
	d->Ops->Lock(d->Ctx);
	for (pp = &d->Files; *pp && *pp != f; pp = &(*pp)->Next)
		;
	if (*pp) {
		*pp = f->Next;
		d->NFiles--;
	}
	d->Ops->Unlock(d->Ctx);
	d->Ops->ProcessPut(d->Ctx, f->Process);
	d->Ops->Free(d->Ctx, f);
}

/* Check a driver request's header: the size of its structure, our version, its code. */
static bool HeaderOk(const void *In, uint32_t InLen, uint32_t Size, uint16_t Code)
{
	struct kp_req_hdr h;

	if (InLen != Size)
		return false;
	memcpy(&h, In, sizeof(h));
	return h.size == Size && h.version == KP_PROTO_VERSION && h.code == Code;
}

static void Answer(struct kp_rsp_hdr *h, uint32_t Size, uint16_t Code, uint32_t Status)
{
	*h = (struct kp_rsp_hdr){
		.size = Size, .version = KP_PROTO_VERSION, .code = Code, .status = Status
	};
}

static KPW_STATUS MapRing(KPW_DEVICE *d, KPW_FILE *f, const void *In, uint32_t InLen, void *Out,
			  uint32_t OutCap, uint32_t *Info)
{
	struct kpw_map_req Req;
	struct kpw_map_rsp Rsp;
	struct kpw_ring *Ring;
	void *Section;
	uint64_t UserVa;
	uint32_t Size = (uint32_t)sizeof(struct kpw_ring) +
			d->Limits.RingEntries * (uint32_t)sizeof(struct kp_event);
	KPW_STATUS s;

	if (OutCap < sizeof(Rsp))
		return KPW_BUFFER_TOO_SMALL;
	if (!HeaderOk(In, InLen, sizeof(Req), KPW_MAP_RING))
		return KPW_INVALID_PARAMETER;
	memcpy(&Req, In, sizeof(Req));
	if (Req.flags || Req.reserved)
		return KPW_INVALID_PARAMETER;
	if (f->Section)
		return KPW_ALREADY_REGISTERED;
	s = d->Ops->SectionCreate(d->Ctx, Size, &Section, (void **)&Ring);
	if (KPW_FAILED(s))
		return s;
	/* Written through the driver's own mapping, which the process cannot take away. */
	memset(Ring, 0, Size);
	Ring->magic = KPW_RING_MAGIC;
	Ring->version = KPW_RING_VERSION;
	Ring->entries = d->Limits.RingEntries;
	Ring->head = Ring->tail = 1;
	s = d->Ops->SectionMapUser(d->Ctx, Section, Size, &UserVa);
	if (KPW_FAILED(s)) {
		d->Ops->SectionDestroy(d->Ctx, Section, Ring);
		return s;
	}
	d->Ops->EvLock(d->Ctx);
	f->Section = Section;
	f->Ring = Ring;
	f->RingUserVa = UserVa;
	f->RingSize = Size;
	d->Ops->EvUnlock(d->Ctx);
	memset(&Rsp, 0, sizeof(Rsp));
	Answer(&Rsp.hdr, sizeof(Rsp), KPW_MAP_RING, KP_OK);
	Rsp.user_va = f->RingUserVa;
	Rsp.size = Size;
	Rsp.entries = d->Limits.RingEntries;
	memcpy(Out, &Rsp, sizeof(Rsp));
	*Info = sizeof(Rsp);
	return KPW_SUCCESS;
}

static KPW_STATUS SetNotify(KPW_DEVICE *d, KPW_FILE *f, const void *In, uint32_t InLen, void *Out,
			    uint32_t OutCap, uint32_t *Info)
{
	struct kpw_notify_req Req;
	struct kp_rsp_hdr Rsp;
	void *Mdl = NULL, *Va = NULL;
	KPW_STATUS s;

	if (OutCap < sizeof(Rsp))
		return KPW_BUFFER_TOO_SMALL;
	if (!HeaderOk(In, InLen, sizeof(Req), KPW_SET_NOTIFY))
		return KPW_INVALID_PARAMETER;
	memcpy(&Req, In, sizeof(Req));
	if (!Req.addr || Req.addr % 8 || Req.addr > d->Limits.Core.user_addr_max - 8)
		return KPW_INVALID_USER_BUFFER;
	if (f->Notify)
		return KPW_ALREADY_REGISTERED;
	s = d->Ops->LockUser(d->Ctx, Req.addr, 8, true, &Mdl, &Va);
	if (KPW_FAILED(s))
		return s;
	d->Ops->EvLock(d->Ctx);
	f->NotifyMdl = Mdl;
	f->Notify = Va;
	d->Ops->EvUnlock(d->Ctx);
	Answer(&Rsp, sizeof(Rsp), KPW_SET_NOTIFY, KP_OK);
	memcpy(Out, &Rsp, sizeof(Rsp));
	*Info = sizeof(Rsp);
	return KPW_SUCCESS;
}

KPW_STATUS KpwDeviceControl(KPW_DEVICE *d, KPW_FILE *f, uint32_t Code, const void *In,
			    uint32_t InLen, void *Out, uint32_t OutCap, uint32_t *Info)
{
	KPW_STATUS s;
	size_t n = 0;

	*Info = 0;
	if (!f)
		return KPW_INVALID_HANDLE;
	if (!In || !Out || InLen < sizeof(struct kp_req_hdr))
		return KPW_INVALID_PARAMETER;
	d->Ops->Lock(d->Ctx);
	if (f->CleanedUp) {
		s = KPW_INVALID_HANDLE;
		goto out;
	}
	/* Ranges and views belong to the opener's address space, and only there. */
	if (d->Ops->CurrentProcessId(d->Ctx) != f->ProcessId) {
		s = KPW_ACCESS_DENIED;
		goto out;
	}
	switch (Code) {
	case KPW_IOCTL_REQUEST: {
		/*
		 * The core validates the contract's request and answers it; a
		 * status of the contract is a completed request, not an error.
		 * A request refused before it had a response (its header) still
		 * gets one: a bare header with the status.
		 */
		uint32_t St = kp_core_dispatch(d->Core, f->Owner, In, InLen, Out, OutCap, &n);
		if (!n) {
			struct kp_req_hdr h;
			if (OutCap < sizeof(struct kp_rsp_hdr)) {
				s = KPW_BUFFER_TOO_SMALL;
				break;
			}
			memcpy(&h, In, sizeof(h));
			Answer(Out, sizeof(struct kp_rsp_hdr), h.code, St);
			n = sizeof(struct kp_rsp_hdr);
		}
		*Info = (uint32_t)n;
		s = KPW_SUCCESS;
		break;
	}
	case KPW_IOCTL_MAP_RING:
		s = MapRing(d, f, In, InLen, Out, OutCap, Info);
		break;
	case KPW_IOCTL_SET_NOTIFY:
		s = SetNotify(d, f, In, InLen, Out, OutCap, Info);
		break;
	default:
		s = KPW_INVALID_DEVICE_REQUEST;
	}
out:
	d->Ops->Unlock(d->Ctx);
	return s;
}

/* Write one event at head (ev lock held). */
static void RingPut(KPW_FILE *f, uint32_t Kind, uint64_t Addr, uint64_t Len)
{
	struct kpw_ring *r = f->Ring;
	uint64_t Head = r->head;

	r->ev[Head & (r->entries - 1)] =
	    (struct kp_event){ .seq = Head, .addr = Addr, .len = Len, .kind = Kind };
	__atomic_store_n(&r->head, Head + 1, __ATOMIC_RELEASE);
}

void KpwPostEvent(KPW_DEVICE *d, KPW_FILE *f, uint32_t Kind, uint64_t Addr, uint64_t Len)
{
	uint64_t Tail, Head;

	/* The core's own ring (KP_EVENTS readers) takes the event lock itself. */
	kp_core_post_event(d->Core, f->Owner, Kind, Addr, Len);
	d->Ops->EvLock(d->Ctx);
	if (f->Ring) {
		Head = f->Ring->head;
		/* The provider writes tail: believe it only within what was written. */
		if (KPW_FAILED(d->Ops->ReadUser64(d->Ctx, &f->Ring->tail, &Tail)) || Tail > Head ||
		    Head - Tail > f->Ring->entries)
			Tail = Head - f->Ring->entries; /* treat as full */
		if (Head - Tail >= f->Ring->entries - 1) {
			/* Full: one LOST entry says that everything may have changed. */
			if (!f->Lost && Head - Tail < f->Ring->entries) {
				RingPut(f, KP_EVENT_LOST, 0, 0);
				f->Lost = true;
			}
		} else {
			f->Lost = false;
			RingPut(f, Kind, Addr, Len);
		}
		if (f->Notify)
			__atomic_store_n(f->Notify, f->Ring->head, __ATOMIC_RELEASE);
	}
	d->Ops->EvUnlock(d->Ctx);
}

void KpwCounts(KPW_DEVICE *d, KPW_COUNTS *c)
{
	struct kp_core_counts cc;

	memset(c, 0, sizeof(*c));
	d->Ops->Lock(d->Ctx);
	for (KPW_FILE *f = d->Files; f; f = f->Next) {
		c->Files++;
		c->Mapped += f->RingUserVa != 0;
		c->Locked += f->Notify != NULL;
	}
	kp_core_counts(d->Core, &cc);
	c->Secured = cc.ranges;
	d->Ops->Unlock(d->Ctx);
}
