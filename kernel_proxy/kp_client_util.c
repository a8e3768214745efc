/* SPDX-License-Identifier: BSD-2-Clause */
/* Requests of the contract, built once for every platform's client. */
#include <string.h>

#include "kp_client.h"

uint32_t kp_secure(struct kp_client *client, uint64_t addr, uint64_t len, uint32_t access,
		   uint64_t *handle)
{
	struct kp_secure_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_SECURE },
				     .access = access,
				     .addr = addr,
				     .len = len };
	struct kp_secure_rsp rsp;
	size_t n;

	memset(&rsp, 0, sizeof(rsp));
	if (kp_client_request(client, &req, sizeof(req), &rsp, sizeof(rsp), &n) || n != sizeof(rsp))
		return KP_E_SIZE;
	if (!rsp.hdr.status)
		*handle = rsp.handle;
	return rsp.hdr.status;
}

uint32_t kp_unsecure(struct kp_client *client, uint64_t handle)
{
	struct kp_handle_req req = { .hdr = { sizeof(req), KP_PROTO_VERSION, KP_UNSECURE },
				     .handle = handle };
	struct kp_rsp_hdr rsp;
	size_t n;

	if (kp_client_request(client, &req, sizeof(req), &rsp, sizeof(rsp), &n) || n != sizeof(rsp))
		return KP_E_SIZE;
	return rsp.status;
}
