/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer target over the proxy core: the input is a stream of requests
 * from several processes (with response buffers of varying size), process
 * exits and events.  Every byte of a request is hostile.  After the
 * stream the core is destroyed: every range secured must have been
 * released exactly once, and nothing allocated may be left.
 *
 * The tables start smaller than the limits, so requests grow them, and an
 * op can make the next allocation fail: a growth that fails must leave
 * the core as it was.
 *
 * Input: repeated [op][owner][len][len bytes of request]
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kp_core.h"

static long secured, allocated;
static int fail_next_alloc;

static void *f_alloc(void *ctx, size_t n)
{
	(void)ctx;
	if (fail_next_alloc) {
		fail_next_alloc = 0;
		return NULL;
	}
	allocated++;
	return calloc(1, n);
}

static void f_free(void *ctx, void *p)
{
	(void)ctx;
	allocated--;
	free(p);
}

static void f_nop(void *ctx)
{
	(void)ctx;
}

static uint32_t f_secure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, uint32_t access,
			 void **cookie)
{
	(void)ctx, (void)owner, (void)access;
	/* The memory manager refuses some ranges, as a real one would. */
	if ((addr >> 12) % 7 == 3)
		return KP_E_FAULT;
	if ((len >> 12) % 11 == 5)
		return KP_E_UNWATCHABLE;
	*cookie = (void *)(uintptr_t)(addr | 1);
	secured++;
	return KP_OK;
}

static void f_unsecure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, void *cookie)
{
	(void)ctx, (void)owner, (void)len;
	if (cookie != (void *)(uintptr_t)(addr | 1))
		abort(); /* released with another range's cookie */
	secured--;
}

static const struct kp_platform platform = {
	.alloc = f_alloc,
	.free = f_free,
	.lock = f_nop,
	.unlock = f_nop,
	.ev_lock = f_nop,
	.ev_unlock = f_nop,
	.secure = f_secure,
	.unsecure = f_unsecure,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct kp_core_limits lim = {
		.max_ranges = 32,
		.max_owners = 3,
		.init_ranges = 2,
		.init_owners = 1,
		.max_ranges_per_owner = 12,
		.max_bytes_per_owner = 64 << 12,
		.user_addr_max = (uint64_t)1 << 47,
		.page_size = 4096,
		.event_ring = 8,
	};
	struct kp_core *core = kp_core_create(&lim, &platform, NULL);
	uint8_t out[sizeof(struct kp_events_rsp) + 16];

	if (!core)
		abort();
	while (size >= 3) {
		uint8_t op = data[0], owner = data[1] % 4, len = data[2];
		size_t out_len;

		data += 3;
		size -= 3;
		if (len > size)
			len = (uint8_t)size;
		switch (op % 8) {
		case 0:
			if (op & 0x80)
				fail_next_alloc = 1;
			else
				kp_core_release_owner(core, owner);
			break;
		case 1:
			kp_core_post_event(core, owner, op >> 3, (uint64_t)len << 12, 4096);
			break;
		default: {
			/* Response buffers too small, exact, or larger. */
			size_t cap = op & 0x40 ? sizeof(out) : (size_t)(op >> 3) * 3;
			uint32_t st = kp_core_dispatch(core, owner, data, len, out, cap, &out_len);
			if (out_len > cap || st >= KP_E_MAX)
				abort();
			if (out_len) {
				struct kp_rsp_hdr h;
				memcpy(&h, out, sizeof(h));
				if (h.status != st || h.size != out_len)
					abort();
			}
			break;
		}
		}
		data += len;
		size -= len;
	}
	kp_core_destroy(core);
	fail_next_alloc = 0;
	if (secured || allocated)
		abort(); /* leaked or double-released */
	return 0;
}
