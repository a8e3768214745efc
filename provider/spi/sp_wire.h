/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What travels between two providers: the hello in a connection's private
 * data and the RDMA descriptor the switch carries to the peer.  Whatever
 * comes from a peer is decoded here, checked in every byte.
 */
#ifndef SANPROV_SP_WIRE_H
#define SANPROV_SP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "vb_os.h"

#define SP_HELLO_VERSION 1
#define SP_DESC_VERSION 1

/* The connecting side's stated address (the one the switch bound it to). */
struct sp_hello {
	uint8_t magic[2]; /* 'S', 'H' */
	uint8_t version;
	uint8_t family; /* 0 (none), 4 or 6 */
	uint16_t port;	/* network order */
	uint8_t reserved[2];
	uint8_t addr[16];
};

/* An RDMA registration as the peer sees it.  No pointer of the owner in it. */
struct sp_rdma_desc {
	uint8_t magic[4]; /* "SPRD" */
	uint8_t version;
	uint8_t flags; /* SP_MEM_*: what the peer may do */
	uint16_t reserved;
	uint32_t rkey;
	uint32_t len;
	uint32_t base; /* the iova of the first byte: its offset within its page */
	uint32_t reserved2;
	uint64_t token; /* the registration in the owner's table */
};

void sp_hello_fill(struct sp_hello *h, const struct sockaddr_storage *local);
/* 0, or EPROTO for anything but a hello as sp_hello_fill() writes them. */
int sp_hello_take(const void *data, size_t len, struct sockaddr_storage *peer);

void sp_desc_fill(struct sp_rdma_desc *d, uint32_t flags, uint32_t rkey, uint32_t len,
		  uint32_t base, uint64_t token);
/* 0, SP_WSAEFAULT (wrong size) or SP_WSAEINVAL (not a descriptor sp_desc_fill() writes). */
int sp_desc_take(const void *desc, uint32_t desc_len, struct sp_rdma_desc *d);

#endif
