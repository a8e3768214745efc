/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer over what a peer sends the provider: the connection hello and
 * the RDMA descriptor.  Whatever the decoders accept must be exactly what
 * the encoders write for the values they return, and within the ranges the
 * provider relies on.
 */
#include <stdint.h>
#include <string.h>

#include "sp_spi.h"
#include "sp_wire.h"
#include "vb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage peer;
	struct sp_hello h;
	struct sp_rdma_desc d, again;

	if (!sp_hello_take(data, size, &peer)) {
		if (peer.ss_family != 0 && peer.ss_family != AF_INET && peer.ss_family != AF_INET6)
			__builtin_trap();
		sp_hello_fill(&h, &peer);
		if (memcmp(&h, data, sizeof(h)))
			__builtin_trap();
	}
	if (!sp_desc_take(data, (uint32_t)size, &d)) {
		if (size != sizeof(d) || d.base >= VB_PAGE_SIZE || !d.len || !d.flags ||
		    d.flags & ~SP_MEM_READWRITE)
			__builtin_trap();
		sp_desc_fill(&again, d.flags, d.rkey, d.len, d.base, d.token);
		if (memcmp(&again, data, sizeof(again)))
			__builtin_trap();
	}
	return 0;
}
