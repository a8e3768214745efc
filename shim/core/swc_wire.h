/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The session protocol's control messages, in the host's byte order (both
 * ends run the same switch).  A message is a header, then desc_len bytes
 * of RDMA descriptor, then len bytes of inline payload.
 */
#ifndef SANPROV_SWC_WIRE_H
#define SANPROV_SWC_WIRE_H

#include <stdint.h>

enum swc_msg_type {
	SWC_MSG_HELLO = 1,	 /* total: ring | msg_size << 32; desc: the credit word */
	SWC_MSG_DATA = 2,	 /* len inline bytes */
	SWC_MSG_LARGE_READ = 3,	 /* len inline, then total bytes to read through desc */
	SWC_MSG_LARGE_WRITE = 4, /* len inline, then total bytes the receiver asks for */
	SWC_MSG_WRITE_DESC = 5,	 /* write total bytes through desc, then send done */
	SWC_MSG_DONE = 6,	 /* total bytes were read or written */
	SWC_MSG_SHUTDOWN = 7,	 /* no more data from this end */
	/* As LARGE_READ, from a staging slot of the sender's: answered by STAGED_DONE */
	SWC_MSG_LARGE_STAGED = 8,
	SWC_MSG_STAGED_DONE = 9, /* total bytes of the oldest staged message were read */
};

struct swc_hdr {
	uint8_t type;
	uint8_t desc_len;
	uint16_t reserved; /* 0 */
	uint32_t credits;  /* receives the sender posted again since the start (wraps) */
	uint32_t len;
	uint32_t reserved2; /* 0 */
	uint64_t total;
};

/* The largest piece one large message describes (target offsets are 32 bits). */
#define SWC_LARGE_MAX (1ull << 30)

#endif
