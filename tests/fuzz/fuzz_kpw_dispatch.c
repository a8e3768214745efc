/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer over the Windows proxy driver's dispatch entry, on the fake
 * kernel of tests/kpw_fake.c.  An input is a short program: for each step,
 * one byte picks the IOCTL, one the faults the fake kernel raises, one the
 * output buffer's size, then a request of the length a byte gives.  After
 * the handle's cleanup and close nothing may be left: no memory, range,
 * MDL, section, view or process reference.
 */
#include <stdint.h>
#include <string.h>

#include "kpw_fake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const KPW_LIMITS limits = {
	.Core = { .max_ranges = 32,
		  .max_owners = 4,
		  .max_ranges_per_owner = 8,
		  .max_bytes_per_owner = 1u << 20,
		  .user_addr_max = 0x00007fffffffffffull,
		  .page_size = 4096,
		  .event_ring = 8 },
	.MaxFiles = 4,
	.MaxFilesPerProcess = 4,
	.RingEntries = 4,
};

static const uint32_t codes[] = { KPW_IOCTL_REQUEST, KPW_IOCTL_MAP_RING, KPW_IOCTL_SET_NOTIFY,
				  0x12345 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake_kernel k;
	KPW_DEVICE *dev;
	KPW_FILE *f;
	unsigned char in[128], out[1200];
	size_t pos = 0;

	fake_init(&k);
	fake_map(&k, 1, 0x10000, 0x10000 + 64 * 4096);
	if (KpwDeviceCreate(&limits, &fake_ops, &k, &dev))
		__builtin_trap();
	if (KpwCreate(dev, &f))
		__builtin_trap();
	while (pos + 4 <= size) {
		uint32_t code = codes[data[pos] & 3], info = 0;
		uint8_t faults = data[pos + 1];
		uint32_t cap = (uint32_t)data[pos + 2] * 5 % sizeof(out);
		size_t len = data[pos + 3] % sizeof(in);

		pos += 4;
		if (len > size - pos)
			len = size - pos;
		memcpy(in, data + pos, len);
		pos += len;
		k.raise_secure = faults & 1;
		k.raise_lock = faults & 2;
		k.fail_section = faults & 4;
		k.raise_map_view = faults & 8;
		k.raise_read = faults & 16;
		k.pid = faults & 32 ? 2 : 1; /* now and then from another process */
		KpwDeviceControl(dev, f, code, in, (uint32_t)len, out, cap, &info);
		if (info > cap)
			__builtin_trap();
		if (faults & 64)
			KpwPostEvent(dev, f, KP_EVENT_UNMAP, 0x10000, 4096);
	}
	k.pid = 1;
	KpwCleanup(dev, f);
	KpwClose(dev, f);
	KpwDeviceDestroy(dev);
	if (k.allocs || k.secured || k.mdls || k.sections || k.views || k.processes ||
	    k.wrong_process_unsecure)
		__builtin_trap();
	return 0;
}
