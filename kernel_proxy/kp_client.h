/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * How the provider talks to the kernel proxy of its platform: requests of
 * the contract (kp_proto.h), and sinks the proxy calls when a secured range's
 * mapping changes.  Meson builds the implementation of the host's OS
 * (linux/: a user-mode proxy on userfaultfd).
 */
#ifndef SANPROV_KP_CLIENT_H
#define SANPROV_KP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "kp_proto.h"

struct kp_client;

/*
 * Called from the proxy's event thread; none of them may block or take a
 * lock that a thread changing memory may hold.  begin() comes before the
 * proxy reads a batch of events (the threads that caused them are still
 * stopped in the kernel), changed() for each range, end() after the batch.
 */
struct kp_sink {
	void (*begin)(void *arg);
	void (*changed)(void *arg, uint32_t kind, uint64_t addr, uint64_t len);
	void (*end)(void *arg);
	void *arg;
};

#define KP_MAX_SINKS 16

/* NULL with errno when this process cannot have a proxy (no userfaultfd, ...). */
struct kp_client *kp_client_open(void);
/* Unsecures everything the process secured and stops the event thread. */
void kp_client_close(struct kp_client *client);

/*
 * One request of the contract; 0 or errno (EMSGSIZE: rsp cannot hold even a
 * response header).  On 0 the status is in the response: a full one, or a
 * bare kp_rsp_hdr for a request refused before it had one.
 */
int kp_client_request(struct kp_client *client, const void *req, size_t req_len, void *rsp,
		      size_t rsp_cap, size_t *rsp_len);

/* 0, ENOSPC (KP_MAX_SINKS reached) or EINVAL. */
int kp_client_add_sink(struct kp_client *client, const struct kp_sink *sink);
/* After it returns, the sink is not running and will not be called again. */
void kp_client_remove_sink(struct kp_client *client, const struct kp_sink *sink);

/* Helpers over kp_client_request: KP_OK or a kp_status. */
uint32_t kp_secure(struct kp_client *client, uint64_t addr, uint64_t len, uint32_t access,
		   uint64_t *handle);
uint32_t kp_unsecure(struct kp_client *client, uint64_t handle);

#endif
