/* SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <string.h>

#include "sp_spi.h"
#include "sp_wire.h"
#include "vb.h"

_Static_assert(sizeof(struct sp_hello) <= VB_MAX_PRIVATE_DATA, "a hello fits a CM REQ");

void sp_hello_fill(struct sp_hello *h, const struct sockaddr_storage *local)
{
	memset(h, 0, sizeof(*h));
	h->magic[0] = 'S';
	h->magic[1] = 'H';
	h->version = SP_HELLO_VERSION;
	if (local->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)local;
		h->family = 4;
		h->port = in->sin_port;
		memcpy(h->addr, &in->sin_addr, 4);
	} else if (local->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)local;
		h->family = 6;
		h->port = in6->sin6_port;
		memcpy(h->addr, &in6->sin6_addr, 16);
	}
}

static int all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return 0;
	return 1;
}

int sp_hello_take(const void *data, size_t len, struct sockaddr_storage *peer)
{
	struct sp_hello h;

	/* Transports may pad private data: what follows the hello is ignored. */
	if (!data || len < sizeof(h))
		return EPROTO;
	memcpy(&h, data, sizeof(h));
	if (h.magic[0] != 'S' || h.magic[1] != 'H' || h.version != SP_HELLO_VERSION ||
	    !all_zero(h.reserved, sizeof(h.reserved)))
		return EPROTO;
	memset(peer, 0, sizeof(*peer));
	switch (h.family) {
	case 0:
		return all_zero((const uint8_t *)&h.port, sizeof(h.port)) &&
			       all_zero(h.addr, sizeof(h.addr))
			   ? 0
			   : EPROTO;
	case 4: {
		struct sockaddr_in *in = (struct sockaddr_in *)peer;
		if (!all_zero(h.addr + 4, sizeof(h.addr) - 4))
			return EPROTO;
		in->sin_family = AF_INET;
		in->sin_port = h.port;
		memcpy(&in->sin_addr, h.addr, 4);
		return 0;
	}
	case 6: {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)peer;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = h.port;
		memcpy(&in6->sin6_addr, h.addr, 16);
		return 0;
	}
	default:
		return EPROTO;
	}
}

void sp_desc_fill(struct sp_rdma_desc *d, uint32_t flags, uint32_t rkey, uint32_t len,
		  uint32_t base, uint64_t token)
{
	memset(d, 0, sizeof(*d));
	memcpy(d->magic, "SPRD", 4);
	d->version = SP_DESC_VERSION;
	d->flags = (uint8_t)flags;
	d->rkey = rkey;
	d->len = len;
	d->base = base;
	d->token = token;
}

int sp_desc_take(const void *desc, uint32_t desc_len, struct sp_rdma_desc *d)
{
	if (!desc || desc_len != sizeof(*d))
		return SP_WSAEFAULT;
	memcpy(d, desc, sizeof(*d));
	if (memcmp(d->magic, "SPRD", 4) || d->version != SP_DESC_VERSION || d->reserved ||
	    d->reserved2 || !d->flags || d->flags & ~SP_MEM_READWRITE || !d->len ||
	    d->base >= VB_PAGE_SIZE)
		return SP_WSAEINVAL;
	return 0;
}
