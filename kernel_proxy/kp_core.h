/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The portable core every proxy shares (the Linux user-mode proxy, the
 * Windows driver): the table of secured ranges per process, validation of
 * every request, per-process quotas, and release of everything a process
 * secured when it goes away.
 *
 * It is plain C with no library calls: allocation, locking and the memory
 * manager come through struct kp_platform, so the same code runs in user
 * mode, in a kernel, and in tests with a fake memory manager.  The tables
 * start small and grow, under the table lock, when a secure or a new
 * process finds them full: the platform's alloc must work there.  Nothing
 * else a request does allocates.
 */
#ifndef SANPROV_KP_CORE_H
#define SANPROV_KP_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "kp_proto.h"

struct kp_platform {
	void *(*alloc)(void *ctx, size_t size); /* zeroed memory, or NULL */
	void (*free)(void *ctx, void *p);
	/* The table lock: held while the memory manager is called. */
	void (*lock)(void *ctx);
	void (*unlock)(void *ctx);
	/* The event ring's lock: short, never held while calling out. */
	void (*ev_lock)(void *ctx);
	void (*ev_unlock)(void *ctx);
	/* Secure [addr, addr + len) for owner; KP_OK or a kp_status. */
	uint32_t (*secure)(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, uint32_t access,
			   void **cookie);
	void (*unsecure)(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, void *cookie);
};

/* The tables' sizes at creation, unless the limits say otherwise. */
#define KP_CORE_INIT_RANGES 64
#define KP_CORE_INIT_OWNERS 16

struct kp_core_limits {
	uint32_t max_ranges; /* all owners together: the table's size (slot 0 unused) */
	uint32_t max_owners;
	uint32_t init_ranges; /* slots allocated at creation (0: KP_CORE_INIT_RANGES) */
	uint32_t init_owners; /* owner records at creation (0: KP_CORE_INIT_OWNERS) */
	uint32_t max_ranges_per_owner;
	uint64_t max_bytes_per_owner;
	uint64_t user_addr_max; /* ranges must end at or below */
	uint32_t page_size;	/* power of two */
	uint32_t event_ring;	/* events kept for KP_EVENTS readers (power of two) */
};

struct kp_core;

struct kp_core *kp_core_create(const struct kp_core_limits *limits,
			       const struct kp_platform *platform, void *ctx);
/* Releases every range still secured. */
void kp_core_destroy(struct kp_core *core);
/* Frees the core's memory only: for a copy in a child of fork, whose ranges are the parent's. */
void kp_core_abandon(struct kp_core *core);

/*
 * Serve one request of owner: in/in_len is copied once, validated, and
 * executed; the response (at most out_cap bytes) goes to out and its size
 * to *out_len (0 when out_cap cannot hold it).  Returns the status, also
 * written in the response.
 */
uint32_t kp_core_dispatch(struct kp_core *core, uint64_t owner, const void *in, size_t in_len,
			  void *out, size_t out_cap, size_t *out_len);

/* Release everything owner secured: the process exited or closed the proxy. */
void kp_core_release_owner(struct kp_core *core, uint64_t owner);

/*
 * Record that [addr, addr + len) of owner's address space changed (event
 * kind).  Takes only the ring's short lock: safe from a thread that must
 * never wait on a memory-changing thread.
 */
void kp_core_post_event(struct kp_core *core, uint64_t owner, uint32_t kind, uint64_t addr,
			uint64_t len);

struct kp_core_counts {
	uint32_t ranges; /* secured now, all owners */
	uint32_t owners; /* owners with something secured */
	uint64_t bytes;
	/* Table slots and owner records examined to find what requests name, since creation:
	 * what unsecure and a process's release cost, whatever the table's size. */
	uint64_t probes;
};
void kp_core_counts(struct kp_core *core, struct kp_core_counts *counts);

/* The errno a status stands for, for callers that speak errno. */
int kp_status_errno(uint32_t status);
const char *kp_status_str(uint32_t status);

#endif
