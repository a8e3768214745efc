/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The kernel proxy contract: request codes and fixed-size, versioned
 * request and response structures shared by the provider and every proxy
 * (the Linux user-mode proxy, the Windows WDM driver).
 *
 * Every request starts with kp_req_hdr, whose size is the size of the whole
 * structure the code calls for; every response starts with kp_rsp_hdr.  A
 * proxy copies a request once, checks size, version and code before it
 * reads anything else, and answers with a specific status (enum kp_status)
 * that a caller can tell apart from every other.
 *
 * Types are fixed-width and naturally aligned, with explicit padding, so
 * the layout is the same for every compiler and both ABIs.
 */
#ifndef SANPROV_KP_PROTO_H
#define SANPROV_KP_PROTO_H

#include <stdint.h>

#define KP_PROTO_VERSION 1
#define KP_EVENTS_MAX 32 /* events one KP_EVENTS response carries */

enum kp_code {
	KP_SECURE = 1,	 /* kp_secure_req  -> kp_secure_rsp */
	KP_UNSECURE = 2, /* kp_handle_req  -> kp_rsp_hdr */
	KP_QUERY = 3,	 /* kp_handle_req  -> kp_query_rsp */
	KP_EVENTS = 4,	 /* kp_events_req  -> kp_events_rsp */
};

/* Statuses; 0 is success.  Each failure has its own value. */
enum kp_status {
	KP_OK = 0,
	KP_E_SIZE = 1,		  /* request or response buffer of the wrong size */
	KP_E_VERSION = 2,	  /* protocol version not supported */
	KP_E_CODE = 3,		  /* unknown request code */
	KP_E_ZERO_LENGTH = 4,	  /* secure of an empty range */
	KP_E_OVERFLOW = 5,	  /* addr + len wraps, or leaves the user address space */
	KP_E_ALIGN = 6,		  /* range not page aligned */
	KP_E_ACCESS = 7,	  /* unknown access bits */
	KP_E_FLAGS = 8,		  /* unknown flags, or reserved fields not zero */
	KP_E_UNKNOWN_HANDLE = 9,  /* never issued */
	KP_E_STALE_HANDLE = 10,	  /* issued, already released */
	KP_E_FOREIGN_HANDLE = 11, /* owned by another process */
	KP_E_QUOTA_RANGES = 12,	  /* the process secures as many ranges as it may */
	KP_E_QUOTA_BYTES = 13,	  /* ... or as many bytes */
	KP_E_FAULT = 14,	  /* the memory manager refused the range */
	KP_E_NO_MEMORY = 15,
	KP_E_UNWATCHABLE = 16, /* secured, but changes to it cannot be reported */
	KP_E_MAX
};

enum kp_access {
	KP_ACCESS_READ = 1,
	KP_ACCESS_WRITE = 2,
};

enum kp_event_kind {
	KP_EVENT_UNMAP = 1,  /* munmap, mmap(MAP_FIXED) over, brk shrink */
	KP_EVENT_REMOVE = 2, /* madvise DONTNEED / FREE / REMOVE */
	KP_EVENT_REMAP = 3,  /* mremap: the old range */
	KP_EVENT_LOST = 4,   /* the ring overflowed: everything may have changed */
};

struct kp_req_hdr {
	uint32_t size; /* sizeof the whole request */
	uint16_t version;
	uint16_t code;
};

struct kp_rsp_hdr {
	uint32_t size; /* sizeof the whole response */
	uint16_t version;
	uint16_t code;
	uint32_t status; /* enum kp_status */
	uint32_t reserved;
};

struct kp_secure_req {
	struct kp_req_hdr hdr;
	uint32_t access; /* enum kp_access bits */
	uint32_t flags;	 /* none defined: must be 0 */
	uint64_t addr;
	uint64_t len;
};

struct kp_secure_rsp {
	struct kp_rsp_hdr hdr;
	uint64_t handle;
};

struct kp_handle_req {
	struct kp_req_hdr hdr;
	uint64_t handle;
};

struct kp_query_rsp {
	struct kp_rsp_hdr hdr;
	uint64_t addr;
	uint64_t len;
	uint32_t access;
	uint32_t changed; /* 1: an event reported a change to the range since it was secured */
};

struct kp_events_req {
	struct kp_req_hdr hdr;
	uint32_t max; /* at most KP_EVENTS_MAX */
	uint32_t reserved;
};

struct kp_event {
	uint64_t seq; /* increasing; a gap never happens without KP_EVENT_LOST */
	uint64_t addr;
	uint64_t len;
	uint32_t kind; /* enum kp_event_kind */
	uint32_t reserved;
};

struct kp_events_rsp {
	struct kp_rsp_hdr hdr;
	uint32_t count;
	uint32_t reserved;
	struct kp_event ev[KP_EVENTS_MAX];
};

_Static_assert(sizeof(struct kp_req_hdr) == 8, "kp_req_hdr layout");
_Static_assert(sizeof(struct kp_rsp_hdr) == 16, "kp_rsp_hdr layout");
_Static_assert(sizeof(struct kp_secure_req) == 32, "kp_secure_req layout");
_Static_assert(sizeof(struct kp_secure_rsp) == 24, "kp_secure_rsp layout");
_Static_assert(sizeof(struct kp_handle_req) == 16, "kp_handle_req layout");
_Static_assert(sizeof(struct kp_query_rsp) == 40, "kp_query_rsp layout");
_Static_assert(sizeof(struct kp_events_req) == 16, "kp_events_req layout");
_Static_assert(sizeof(struct kp_event) == 32, "kp_event layout");
_Static_assert(sizeof(struct kp_events_rsp) == 24 + 32 * KP_EVENTS_MAX, "kp_events_rsp layout");

#endif
