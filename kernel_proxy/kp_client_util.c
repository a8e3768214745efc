/* SPDX-License-Identifier: BSD-2-Clause */
/* Requests of the contract, built once for every platform's client. */
#include <string.h>

#include "kp_client.h"

/*
 * The status of a response of n bytes: a full response, or a bare header
 * for a request refused before it had one.  The proxy's specific status
 * is what the caller gets, never a generic one.
 */
static uint32_t status_of(const struct kp_rsp_hdr *h, size_t n, size_t full)
{
	if (n < sizeof(*h) || h->size != n || (n != full && (n != sizeof(*h) || !h->status)))
		return KP_E_SIZE;
	return h->status;
}

uint32_t kp_secure(struct kp_client *client, uint64_t addr, uint64_t len, uint32_t access,
		   uint64_t *handle)
{
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = access,
				     .addr = addr,
				     .len = len };
	struct kp_secure_rsp rsp;
	uint32_t st;
	size_t n;

	memset(&rsp, 0, sizeof(rsp));
	if (kp_client_request(client, &req, sizeof(req), &rsp, sizeof(rsp), &n))
		return KP_E_SIZE;
	st = status_of(&rsp.hdr, n, sizeof(rsp));
	if (!st)
		*handle = rsp.handle;
	return st;
}

uint32_t kp_unsecure(struct kp_client *client, uint64_t handle)
{
	struct kp_handle_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_UNSECURE },
				     .handle = handle };
	struct kp_rsp_hdr rsp;
	size_t n;

	if (kp_client_request(client, &req, sizeof(req), &rsp, sizeof(rsp), &n))
		return KP_E_SIZE;
	return status_of(&rsp, n, sizeof(rsp));
}
