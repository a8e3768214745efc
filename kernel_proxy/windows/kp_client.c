/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The kernel proxy on Windows is the WDM driver (sanprov_proxy.sys).  The
 * provider does not talk to it yet: kp_client_open() answers ENOSYS, and
 * the provider registers memory for each use without caching it, which is
 * what it does wherever memory cannot be watched.
 */
#include <errno.h>
#include <stddef.h>

#include "../kp_client.h"

struct kp_client *kp_client_open(void)
{
	errno = ENOSYS;
	return NULL;
}

void kp_client_close(struct kp_client *client)
{
	(void)client;
}

int kp_client_request(struct kp_client *client, const void *req, size_t req_len, void *rsp,
		      size_t rsp_cap, size_t *rsp_len)
{
	(void)client, (void)req, (void)req_len, (void)rsp, (void)rsp_cap;
	*rsp_len = 0;
	return ENOSYS;
}

int kp_client_add_sink(struct kp_client *client, const struct kp_sink *sink)
{
	(void)client, (void)sink;
	return ENOSYS;
}

void kp_client_remove_sink(struct kp_client *client, const struct kp_sink *sink)
{
	(void)client, (void)sink;
}
