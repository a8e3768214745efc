/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * How a process reaches the Windows proxy driver: the device, the IOCTL
 * codes (all METHOD_BUFFERED: the I/O manager copies a request once into
 * the system buffer) and the fixed-size structures of the driver's own
 * requests.  The contract's requests (kp_proto.h) travel as they are in
 * KPW_IOCTL_REQUEST.
 */
#ifndef SANPROV_KPW_IOCTL_H
#define SANPROV_KPW_IOCTL_H

#include <stdint.h>

#include "kp_proto.h"

/* \Device\SanProvProxy, \DosDevices\SanProvProxy; user mode opens \\.\SanProvProxy. */
#define KPW_DEVICE_NAME u"\\Device\\SanProvProxy"
#define KPW_LINK_NAME u"\\DosDevices\\SanProvProxy"
#define KPW_USER_PATH u"\\\\.\\SanProvProxy"

/* CTL_CODE(FILE_DEVICE_UNKNOWN, fn, METHOD_BUFFERED, FILE_READ_DATA | FILE_WRITE_DATA) */
#define KPW_CTL_CODE(fn) ((0x22u << 16) | (3u << 14) | ((uint32_t)(fn) << 2) | 0u)

#define KPW_IOCTL_REQUEST KPW_CTL_CODE(0x800)	 /* a kp_proto request -> its response */
#define KPW_IOCTL_MAP_RING KPW_CTL_CODE(0x801)	 /* kpw_map_req -> kpw_map_rsp */
#define KPW_IOCTL_SET_NOTIFY KPW_CTL_CODE(0x802) /* kpw_notify_req -> kp_rsp_hdr */

enum kpw_code {
	KPW_MAP_RING = 0x100,
	KPW_SET_NOTIFY = 0x101,
};

/* Map the handle's event ring into the calling process (once per handle). */
struct kpw_map_req {
	struct kp_req_hdr hdr; /* code KPW_MAP_RING */
	uint32_t flags;	       /* none: 0 */
	uint32_t reserved;
};

struct kpw_map_rsp {
	struct kp_rsp_hdr hdr;
	uint64_t user_va; /* the view: a struct kpw_ring */
	uint32_t size;
	uint32_t entries;
};

/*
 * A 64-bit word of the process the driver keeps locked and sets to the
 * ring's head whenever it posts an event: the provider waits on it (or
 * polls it) instead of calling in.  8-byte aligned; once per handle.
 */
struct kpw_notify_req {
	struct kp_req_hdr hdr; /* code KPW_SET_NOTIFY */
	uint64_t addr;
};

#define KPW_RING_MAGIC 0x474e495257504b53ull /* "SKPWRING" */
#define KPW_RING_VERSION 1

/*
 * The ring in the shared view.  The driver writes entries and head; the
 * provider writes tail (what it has read), which the driver reads and
 * checks before it believes it.  When the ring is full the driver drops
 * events and writes one KP_EVENT_LOST instead.
 */
struct kpw_ring {
	uint64_t magic;
	uint32_t version;
	uint32_t entries; /* a power of two */
	uint64_t head;	  /* sequence number of the next event (driver) */
	uint64_t tail;	  /* sequence number of the next event to read (provider) */
	uint64_t reserved[4];
	struct kp_event ev[]; /* event seq lives in ev[seq & (entries - 1)] */
};

_Static_assert(sizeof(struct kpw_map_req) == 16, "kpw_map_req layout");
_Static_assert(sizeof(struct kpw_map_rsp) == 32, "kpw_map_rsp layout");
_Static_assert(sizeof(struct kpw_notify_req) == 16, "kpw_notify_req layout");
_Static_assert(sizeof(struct kpw_ring) == 64, "kpw_ring layout");

#endif
