/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The portable core of every proxy: request decoding and validation, the
 * per-process table of secured ranges with quotas, the event ring.
 *
 * A handle is slot << 32 | generation.  A slot's generation moves on when
 * it is released, so a handle tells "never issued" (generation ahead of the
 * slot's), "released" (behind, or the slot free at that generation) and
 * "another process's" apart.
 *
 * Nothing a request names is searched for: a handle is its slot, a slot
 * knows its owner's record, an owner's slots are a list, and owners are
 * found by a hash of their id.  Unsecure and a process's release cost the
 * same whatever the table holds (counted in kp_core_counts.probes).
 *
 * The slot and owner arrays start small and double, up to the limits, when
 * a secure or a new owner finds them full.  Growth copies an array under
 * the table lock: a handle is an index, not a pointer, so every handle
 * stays valid; nothing keeps a pointer into an array across a growth.
 * They never shrink.
 */
#include <string.h>

#include "kp_core.h"

struct kp_slot {
	uint64_t owner;
	uint64_t addr;
	uint64_t len;
	void *cookie;
	uint32_t gen;
	uint32_t access;
	uint32_t in_use;
	uint32_t oidx;	     /* the owner's record */
	uint32_t prev, next; /* the owner's slots, or the free list (0: none) */
};

struct kp_owner {
	uint64_t id;
	uint64_t bytes;
	uint64_t ev_cursor; /* next event sequence number to read */
	uint32_t ranges;
	uint32_t used;
	uint32_t first;	    /* the owner's first slot (0: none) */
	uint32_t next_free; /* record index + 1 (0: none) */
};

struct kp_ring_entry {
	struct kp_event ev;
	uint64_t owner;
};

struct kp_core {
	struct kp_core_limits lim;
	const struct kp_platform *pf;
	void *ctx;
	struct kp_slot *slots;
	uint32_t n_slots;   /* allocated, slot 0 included; at most lim.max_ranges */
	uint32_t free_head; /* slot index; 0: none (slot 0 is never used) */
	uint32_t n_ranges;
	uint64_t bytes;
	uint64_t probes;
	struct kp_owner *owners;
	uint32_t n_owners;   /* records allocated; at most lim.max_owners */
	uint32_t owner_free; /* record index + 1; 0: none */
	uint32_t hash_mask;
	uint32_t *hash; /* owner id -> record index + 1, linear probing; 0: empty */
	/* event ring, under ev_lock */
	struct kp_ring_entry *ring;
	uint64_t ring_head; /* sequence number of the next event */
};

static uint64_t make_handle(uint32_t slot, uint32_t gen)
{
	return (uint64_t)slot << 32 | gen;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* Add slots [from, to) to the free list, in index order. */
static void free_slots(struct kp_core *c, uint32_t from, uint32_t to)
{
	for (uint32_t i = to - 1; i >= from; i--) {
		c->slots[i].next = c->free_head;
		c->slots[i].gen = 1;
		c->free_head = i;
	}
}

/* Room for more slots: 0, or -1 when at the limit or out of memory (nothing changed). */
static int grow_slots(struct kp_core *c)
{
	uint32_t n = c->n_slots, want;
	struct kp_slot *s, *old;

	if (n >= c->lim.max_ranges)
		return -1;
	want = n > c->lim.max_ranges / 2 ? c->lim.max_ranges : 2 * n;
	s = c->pf->alloc(c->ctx, sizeof(*s) * want);
	if (!s)
		return -1;
	memcpy(s, c->slots, sizeof(*s) * n);
	/*
	 * Swap, then free: a child forked by another thread meanwhile (which
	 * only abandons its copy) never holds a pointer already freed.
	 */
	old = c->slots;
	c->slots = s;
	c->n_slots = want;
	c->pf->free(c->ctx, old);
	free_slots(c, n, want);
	return 0;
}

/* The hash of owner ids for the records now allocated: at most half full. */
static uint32_t *owner_hash(struct kp_core *c, uint32_t n_owners, uint32_t *mask)
{
	uint32_t buckets = 2, *h;

	while (buckets < 2 * n_owners)
		buckets *= 2;
	h = c->pf->alloc(c->ctx, sizeof(*h) * buckets);
	*mask = buckets - 1;
	return h;
}

static uint32_t owner_bucket(const struct kp_core *c, uint64_t id);

/* Add owner records [from, to) to the free list, in index order. */
static void free_owners(struct kp_core *c, uint32_t from, uint32_t to)
{
	for (uint32_t i = to; i > from; i--) {
		c->owners[i - 1].next_free = c->owner_free;
		c->owner_free = i;
	}
}

/* Room for more owners, with a hash to match: 0, or -1 (nothing changed). */
static int grow_owners(struct kp_core *c)
{
	uint32_t n = c->n_owners, want, mask, *h, *old_h;
	struct kp_owner *o, *old_o;

	if (n >= c->lim.max_owners)
		return -1;
	want = n > c->lim.max_owners / 2 ? c->lim.max_owners : 2 * n;
	o = c->pf->alloc(c->ctx, sizeof(*o) * want);
	if (!o)
		return -1;
	h = owner_hash(c, want, &mask);
	if (!h) {
		c->pf->free(c->ctx, o);
		return -1;
	}
	memcpy(o, c->owners, sizeof(*o) * n);
	old_o = c->owners;
	old_h = c->hash;
	c->owners = o;
	c->n_owners = want;
	c->hash = h;
	c->hash_mask = mask;
	/* Rehash: buckets depend on the mask. */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t b;
		if (!o[i].used)
			continue;
		for (b = owner_bucket(c, o[i].id); h[b]; b = (b + 1) & mask)
			;
		h[b] = i + 1;
	}
	free_owners(c, n, want);
	/* Freed last, as in grow_slots. */
	c->pf->free(c->ctx, old_o);
	c->pf->free(c->ctx, old_h);
	return 0;
}

struct kp_core *kp_core_create(const struct kp_core_limits *lim, const struct kp_platform *pf,
			       void *ctx)
{
	struct kp_core *c;

	if (!lim || !pf || !lim->max_ranges || lim->max_ranges >= UINT32_MAX - 1 ||
	    !lim->max_owners || lim->max_owners > (1u << 30) || !lim->page_size ||
	    (lim->page_size & (lim->page_size - 1)) || !lim->event_ring ||
	    (lim->event_ring & (lim->event_ring - 1)))
		return NULL;
	c = pf->alloc(ctx, sizeof(*c));
	if (!c)
		return NULL;
	c->lim = *lim;
	c->pf = pf;
	c->ctx = ctx;
	/* Slot 0 is never used (handle 0 is never valid): two at least, if allowed. */
	c->n_slots = lim->init_ranges ? lim->init_ranges : KP_CORE_INIT_RANGES;
	c->n_slots = min_u32(lim->max_ranges, c->n_slots < 2 ? 2 : c->n_slots);
	c->n_owners =
	    min_u32(lim->max_owners, lim->init_owners ? lim->init_owners : KP_CORE_INIT_OWNERS);
	c->slots = pf->alloc(ctx, sizeof(*c->slots) * c->n_slots);
	c->owners = pf->alloc(ctx, sizeof(*c->owners) * c->n_owners);
	c->ring = pf->alloc(ctx, sizeof(*c->ring) * lim->event_ring);
	c->hash = owner_hash(c, c->n_owners, &c->hash_mask);
	if (!c->slots || !c->owners || !c->ring || !c->hash)
		goto err;
	free_slots(c, 1, c->n_slots);
	free_owners(c, 0, c->n_owners);
	c->ring_head = 1;
	return c;
err:
	if (c->slots)
		pf->free(ctx, c->slots);
	if (c->owners)
		pf->free(ctx, c->owners);
	if (c->ring)
		pf->free(ctx, c->ring);
	if (c->hash)
		pf->free(ctx, c->hash);
	pf->free(ctx, c);
	return NULL;
}

static uint32_t owner_bucket(const struct kp_core *c, uint64_t id)
{
	/* Ids are process ids or kernel addresses: mixed, so neighbours spread. */
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return (uint32_t)id & c->hash_mask;
}

static struct kp_owner *find_owner(struct kp_core *c, uint64_t id, int create)
{
	struct kp_owner *o;
	uint32_t b = owner_bucket(c, id), idx;

	for (;; b = (b + 1) & c->hash_mask) {
		c->probes++;
		if (!c->hash[b])
			break;
		if (c->owners[c->hash[b] - 1].id == id)
			return &c->owners[c->hash[b] - 1];
	}
	if (!create)
		return NULL;
	if (!c->owner_free) {
		if (grow_owners(c))
			return NULL;
		/* The new hash has its own empty bucket for id. */
		for (b = owner_bucket(c, id); c->hash[b]; b = (b + 1) & c->hash_mask)
			;
	}
	idx = c->owner_free - 1;
	o = &c->owners[idx];
	c->owner_free = o->next_free;
	c->hash[b] = idx + 1;
	memset(o, 0, sizeof(*o));
	o->used = 1;
	o->id = id;
	/* A new reader starts at the present: what came before is not its business. */
	c->pf->ev_lock(c->ctx);
	o->ev_cursor = c->ring_head;
	c->pf->ev_unlock(c->ctx);
	return o;
}

/* Forget an owner with nothing secured: its id may come back as a new process. */
static void drop_owner(struct kp_core *c, struct kp_owner *o)
{
	uint32_t idx = (uint32_t)(o - c->owners), i = owner_bucket(c, o->id), j;

	while (c->hash[i] != idx + 1)
		i = (i + 1) & c->hash_mask;
	/* Backward-shift deletion: every entry stays reachable from its home bucket. */
	c->hash[i] = 0;
	for (j = (i + 1) & c->hash_mask; c->hash[j]; j = (j + 1) & c->hash_mask) {
		uint32_t home = owner_bucket(c, c->owners[c->hash[j] - 1].id);
		if (((j - home) & c->hash_mask) >= ((j - i) & c->hash_mask)) {
			c->hash[i] = c->hash[j];
			c->hash[j] = 0;
			i = j;
		}
	}
	memset(o, 0, sizeof(*o));
	o->next_free = c->owner_free;
	c->owner_free = idx + 1;
}

static void release_slot(struct kp_core *c, uint32_t idx)
{
	struct kp_slot *s = &c->slots[idx];
	struct kp_owner *o = &c->owners[s->oidx];

	c->pf->unsecure(c->ctx, s->owner, s->addr, s->len, s->cookie);
	if (s->prev)
		c->slots[s->prev].next = s->next;
	else
		o->first = s->next;
	if (s->next)
		c->slots[s->next].prev = s->prev;
	o->ranges--;
	o->bytes -= s->len;
	c->n_ranges--;
	c->bytes -= s->len;
	s->in_use = 0;
	s->cookie = NULL;
	s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
	s->prev = 0;
	s->next = c->free_head;
	c->free_head = idx;
}

void kp_core_destroy(struct kp_core *c)
{
	if (!c)
		return;
	c->pf->lock(c->ctx);
	for (uint32_t i = 1; i < c->n_slots; i++)
		if (c->slots[i].in_use)
			release_slot(c, i);
	c->pf->unlock(c->ctx);
	kp_core_abandon(c);
}

void kp_core_abandon(struct kp_core *c)
{
	if (!c)
		return;
	c->pf->free(c->ctx, c->hash);
	c->pf->free(c->ctx, c->ring);
	c->pf->free(c->ctx, c->owners);
	c->pf->free(c->ctx, c->slots);
	c->pf->free(c->ctx, c);
}

void kp_core_release_owner(struct kp_core *c, uint64_t owner)
{
	struct kp_owner *o;

	c->pf->lock(c->ctx);
	o = find_owner(c, owner, 0);
	if (o) {
		while (o->first) {
			c->probes++;
			release_slot(c, o->first);
		}
		drop_owner(c, o);
	}
	c->pf->unlock(c->ctx);
}

/* The slot a handle names for owner, or a status saying why not. */
static uint32_t lookup_handle(struct kp_core *c, uint64_t owner, uint64_t handle, uint32_t *idx)
{
	uint32_t slot = (uint32_t)(handle >> 32), gen = (uint32_t)handle;
	struct kp_slot *s;

	/* A slot not yet allocated was never issued. */
	if (!slot || slot >= c->n_slots || !gen)
		return KP_E_UNKNOWN_HANDLE;
	s = &c->slots[slot];
	c->probes++;
	if (s->in_use && s->gen == gen) {
		if (s->owner != owner)
			return KP_E_FOREIGN_HANDLE;
		*idx = slot;
		return KP_OK;
	}
	/* Generations only grow (until they wrap after 2^32 reuses of one slot). */
	if (gen < s->gen)
		return KP_E_STALE_HANDLE;
	return KP_E_UNKNOWN_HANDLE;
}

static uint32_t do_secure(struct kp_core *c, uint64_t owner, const struct kp_secure_req *r,
			  struct kp_secure_rsp *rsp)
{
	uint64_t mask = c->lim.page_size - 1;
	struct kp_owner *o;
	struct kp_slot *s;
	void *cookie = NULL;
	uint32_t idx, st;

	if (!r->len)
		return KP_E_ZERO_LENGTH;
	if (r->addr + r->len < r->addr || r->addr + r->len > c->lim.user_addr_max)
		return KP_E_OVERFLOW;
	if ((r->addr & mask) || (r->len & mask))
		return KP_E_ALIGN;
	if (!r->access || (r->access & ~(uint32_t)(KP_ACCESS_READ | KP_ACCESS_WRITE)))
		return KP_E_ACCESS;
	if (r->flags)
		return KP_E_FLAGS;
	o = find_owner(c, owner, 1);
	if (!o)
		return KP_E_NO_MEMORY;
	if (o->ranges >= c->lim.max_ranges_per_owner)
		return KP_E_QUOTA_RANGES;
	/* Growing moves the slots only: o stays valid.  Full at the limit is a quota. */
	if (!c->free_head && grow_slots(c))
		return c->n_slots < c->lim.max_ranges ? KP_E_NO_MEMORY : KP_E_QUOTA_RANGES;
	if (r->len > c->lim.max_bytes_per_owner - o->bytes)
		return KP_E_QUOTA_BYTES;
	idx = c->free_head;
	st = c->pf->secure(c->ctx, owner, r->addr, r->len, r->access, &cookie);
	if (st)
		return st;
	s = &c->slots[idx];
	s->cookie = cookie;
	c->free_head = s->next;
	s->in_use = 1;
	s->owner = owner;
	s->oidx = (uint32_t)(o - c->owners);
	s->prev = 0;
	s->next = o->first;
	if (o->first)
		c->slots[o->first].prev = idx;
	o->first = idx;
	s->addr = r->addr;
	s->len = r->len;
	s->access = r->access;
	o->ranges++;
	o->bytes += r->len;
	c->n_ranges++;
	c->bytes += r->len;
	rsp->handle = make_handle(idx, s->gen);
	return KP_OK;
}

/* Copy out up to max of owner's events; a gap the ring overwrote reads as one LOST event. */
static uint32_t do_events(struct kp_core *c, uint64_t owner, uint32_t max,
			  struct kp_events_rsp *rsp)
{
	struct kp_owner *o = find_owner(c, owner, 1);
	uint64_t size = c->lim.event_ring;

	if (!o)
		return KP_E_NO_MEMORY;
	c->pf->ev_lock(c->ctx);
	if (c->ring_head - o->ev_cursor > size) {
		rsp->ev[rsp->count++] =
		    (struct kp_event){ .seq = o->ev_cursor, .kind = KP_EVENT_LOST };
		o->ev_cursor = c->ring_head - size;
	}
	while (rsp->count < max && o->ev_cursor < c->ring_head) {
		const struct kp_ring_entry *e = &c->ring[o->ev_cursor & (size - 1)];
		if (e->owner == owner)
			rsp->ev[rsp->count++] = e->ev;
		o->ev_cursor++;
	}
	c->pf->ev_unlock(c->ctx);
	return KP_OK;
}

void kp_core_post_event(struct kp_core *c, uint64_t owner, uint32_t kind, uint64_t addr,
			uint64_t len)
{
	c->pf->ev_lock(c->ctx);
	struct kp_ring_entry *e = &c->ring[c->ring_head & (c->lim.event_ring - 1)];
	e->owner = owner;
	e->ev = (struct kp_event){ .seq = c->ring_head, .addr = addr, .len = len, .kind = kind };
	c->ring_head++;
	c->pf->ev_unlock(c->ctx);
}

static size_t req_size(uint16_t code)
{
	switch (code) {
	case KP_SECURE:
		return sizeof(struct kp_secure_req);
	case KP_UNSECURE:
	case KP_QUERY:
		return sizeof(struct kp_handle_req);
	case KP_EVENTS:
		return sizeof(struct kp_events_req);
	}
	return 0;
}

static size_t rsp_size(uint16_t code)
{
	switch (code) {
	case KP_SECURE:
		return sizeof(struct kp_secure_rsp);
	case KP_QUERY:
		return sizeof(struct kp_query_rsp);
	case KP_EVENTS:
		return sizeof(struct kp_events_rsp);
	}
	return sizeof(struct kp_rsp_hdr);
}

uint32_t kp_core_dispatch(struct kp_core *c, uint64_t owner, const void *in, size_t in_len,
			  void *out, size_t out_cap, size_t *out_len)
{
	union {
		struct kp_req_hdr hdr;
		struct kp_secure_req secure;
		struct kp_handle_req handle;
		struct kp_events_req events;
	} req;
	union {
		struct kp_rsp_hdr hdr;
		struct kp_secure_rsp secure;
		struct kp_query_rsp query;
		struct kp_events_rsp events;
	} rsp;
	uint32_t st = KP_OK, idx;
	size_t rlen;

	*out_len = 0;
	memset(&rsp, 0, sizeof(rsp.hdr));
	/*
	 * One copy of the whole request, and only the copy is read after it:
	 * the caller's buffer may change under us (another thread of the
	 * process, a view the user can write).
	 */
	if (!in || in_len < sizeof(req.hdr))
		return KP_E_SIZE;
	memset(&req, 0, sizeof(req));
	memcpy(&req, in, in_len < sizeof(req) ? in_len : sizeof(req));
	if (req.hdr.version != KP_PROTO_VERSION)
		return KP_E_VERSION;
	if (!req_size(req.hdr.code))
		return KP_E_CODE;
	if (req.hdr.size != req_size(req.hdr.code) || in_len != req.hdr.size)
		return KP_E_SIZE;
	rlen = rsp_size(req.hdr.code);
	if (!out || out_cap < rlen)
		return KP_E_SIZE;
	memset(&rsp, 0, rlen);

	c->pf->lock(c->ctx);
	switch (req.hdr.code) {
	case KP_SECURE:
		st = do_secure(c, owner, &req.secure, &rsp.secure);
		break;
	case KP_UNSECURE:
		st = lookup_handle(c, owner, req.handle.handle, &idx);
		if (!st)
			release_slot(c, idx);
		break;
	case KP_QUERY:
		st = lookup_handle(c, owner, req.handle.handle, &idx);
		if (!st) {
			rsp.query.addr = c->slots[idx].addr;
			rsp.query.len = c->slots[idx].len;
			rsp.query.access = c->slots[idx].access;
		}
		break;
	case KP_EVENTS:
		if (req.events.reserved)
			st = KP_E_FLAGS;
		else if (!req.events.max || req.events.max > KP_EVENTS_MAX)
			st = KP_E_SIZE;
		else
			st = do_events(c, owner, req.events.max, &rsp.events);
		break;
	}
	c->pf->unlock(c->ctx);

	rsp.hdr.size = (uint32_t)rlen;
	rsp.hdr.version = KP_PROTO_VERSION;
	rsp.hdr.code = req.hdr.code;
	rsp.hdr.status = st;
	memcpy(out, &rsp, rlen);
	*out_len = rlen;
	return st;
}

void kp_core_counts(struct kp_core *c, struct kp_core_counts *n)
{
	c->pf->lock(c->ctx);
	n->ranges = c->n_ranges;
	n->bytes = c->bytes;
	n->probes = c->probes;
	n->owners = 0;
	for (uint32_t i = 0; i < c->n_owners; i++)
		n->owners += c->owners[i].used && c->owners[i].ranges;
	c->pf->unlock(c->ctx);
}

int kp_status_errno(uint32_t st)
{
	/* Values of Linux's errno.h; the Windows side maps statuses itself. */
	static const int map[KP_E_MAX] = {
		[KP_OK] = 0,
		[KP_E_SIZE] = 22,	   /* EINVAL */
		[KP_E_VERSION] = 95,	   /* EOPNOTSUPP */
		[KP_E_CODE] = 95,	   /* EOPNOTSUPP */
		[KP_E_ZERO_LENGTH] = 22,   /* EINVAL */
		[KP_E_OVERFLOW] = 14,	   /* EFAULT */
		[KP_E_ALIGN] = 22,	   /* EINVAL */
		[KP_E_ACCESS] = 22,	   /* EINVAL */
		[KP_E_FLAGS] = 22,	   /* EINVAL */
		[KP_E_UNKNOWN_HANDLE] = 2, /* ENOENT */
		[KP_E_STALE_HANDLE] = 116, /* ESTALE */
		[KP_E_FOREIGN_HANDLE] = 1, /* EPERM */
		[KP_E_QUOTA_RANGES] = 122, /* EDQUOT */
		[KP_E_QUOTA_BYTES] = 122,  /* EDQUOT */
		[KP_E_FAULT] = 14,	   /* EFAULT */
		[KP_E_NO_MEMORY] = 12,	   /* ENOMEM */
		[KP_E_UNWATCHABLE] = 38,   /* ENOSYS */
	};

	return st < KP_E_MAX ? map[st] : 5; /* EIO */
}

const char *kp_status_str(uint32_t st)
{
	static const char *const str[KP_E_MAX] = {
		[KP_OK] = "success",
		[KP_E_SIZE] = "request or response of the wrong size",
		[KP_E_VERSION] = "protocol version not supported",
		[KP_E_CODE] = "unknown request code",
		[KP_E_ZERO_LENGTH] = "empty range",
		[KP_E_OVERFLOW] = "range wraps or leaves the user address space",
		[KP_E_ALIGN] = "range not page aligned",
		[KP_E_ACCESS] = "unknown access bits",
		[KP_E_FLAGS] = "unknown flags or reserved fields set",
		[KP_E_UNKNOWN_HANDLE] = "unknown handle",
		[KP_E_STALE_HANDLE] = "handle already released",
		[KP_E_FOREIGN_HANDLE] = "handle of another process",
		[KP_E_QUOTA_RANGES] = "range quota reached",
		[KP_E_QUOTA_BYTES] = "byte quota reached",
		[KP_E_FAULT] = "memory manager refused the range",
		[KP_E_NO_MEMORY] = "no memory",
		[KP_E_UNWATCHABLE] = "changes to the range cannot be watched",
	};

	return st < KP_E_MAX ? str[st] : "unknown status";
}
