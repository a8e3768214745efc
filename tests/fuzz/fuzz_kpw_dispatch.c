/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer over the Windows proxy driver's logic on the fake kernel of
 * tests/kpw_fake.c.  An input is a short program over three process slots
 * (two users) and four handle slots: open, request (the request's bytes
 * from the input, faults chosen by the input, from the handle's process or
 * another), cleanup, close, a handle passed to another process, a process
 * exit (its notify routine, from its own context or another) and a new
 * process reusing the id.  At the end every process exits and every
 * handle closes; nothing may be left (memory, range, mutex, process
 * reference) and nothing may have happened that Windows bugchecks on: an
 * exit with ranges secured, a memory-manager call or attach in an exited
 * process or under the device lock, an unsecure in another address space.
 * The driver shares no memory with user mode, so there is no view for the
 * process to write behind its back.
 */
#include <stdint.h>
#include <string.h>

#include "kpw_fake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const KPW_LIMITS limits = {
	.Core = { .max_ranges = 32,
		  .max_owners = 4,
		  .init_ranges = 2, /* the core's tables grow as the program secures */
		  .init_owners = 1,
		  .max_ranges_per_owner = 8,
		  .max_bytes_per_owner = 1u << 20,
		  .user_addr_max = 0x00007fffffffffffull,
		  .page_size = 4096,
		  .event_ring = 8 },
	.MaxFiles = 4,
	.MaxFilesPerProcess = 3,
	.MaxFilesPerUser = 3,
	.MaxRangesPerUser = 12,
	.MaxBytesPerUser = 1u << 21,
};

#define NPROC 3
#define NFILE 4

static struct fake_kernel k;

static struct fake_process *spawn(int slot, uint64_t pid)
{
	struct fake_process *p = fake_spawn(&k, pid, slot == 2 ? 2000 : 1000);

	fake_map(p, 0x10000, 0x10000 + 64 * 4096);
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake_process *proc[NPROC];
	KPW_FILE *file[NFILE] = { 0 };
	bool cleaned[NFILE] = { 0 };
	KPW_DEVICE *dev;
	unsigned char in[64], out[300];
	size_t pos = 0;

	fake_init(&k);
	for (int i = 0; i < NPROC; i++)
		proc[i] = spawn(i, (uint64_t)i + 1);
	fake_run_as(proc[0]);
	if (KpwDeviceCreate(&limits, &fake_ops, &k, &dev))
		__builtin_trap();
	while (pos + 3 <= size && k.nprocs < FAKE_MAX_PROCS - NPROC) {
		uint8_t op = data[pos], a = data[pos + 1], b = data[pos + 2];
		int fs = a % NFILE, ps = (a >> 2) % NPROC;

		pos += 3;
		fake_run_as(proc[ps]);
		switch (op % 7) {
		case 0: /* open in process ps */
			if (!file[fs] && !proc[ps]->exited &&
			    !KpwCreate(dev, b & 0x80 ? b & 7 : 0, &file[fs]))
				cleaned[fs] = false;
			break;
		case 1: { /* a request through handle fs, from process ps */
			uint32_t code = b & 0x40 ? KPW_IOCTL_REQUEST | (b & 3) : KPW_IOCTL_REQUEST;
			uint32_t cap = (uint32_t)(b & 0x3f) * 5 % sizeof(out), info = 0;
			size_t len = pos < size ? data[pos++] % sizeof(in) : 0;
			if (len > size - pos)
				len = size - pos;
			memcpy(in, data + pos, len);
			pos += len;
			if (!file[fs] || proc[ps]->exited)
				break;
			k.raise_secure = b & 0x80;
			KpwDeviceControl(dev, file[fs], code, in, (uint32_t)len, out, cap, &info);
			k.raise_secure = false;
			if (info > cap)
				__builtin_trap();
			break;
		}
		case 2: /* cleanup (last handle closed), from process ps */
			if (file[fs] && !cleaned[fs]) {
				KpwCleanup(dev, file[fs]);
				cleaned[fs] = true;
			}
			break;
		case 3: /* close */
			if (file[fs]) {
				KpwClose(dev, file[fs]);
				file[fs] = NULL;
			}
			break;
		case 4: /* process ps exits: its notify routine, then its address space goes */
			if (!proc[ps]->exited) {
				fake_run_as(b & 1 ? proc[(ps + 1) % NPROC] : proc[ps]);
				KpwProcessExit(dev, proc[ps]);
				fake_exit(&k, proc[ps]);
			}
			break;
		case 5: /* a new process in slot ps, reusing the id once it has exited */
			if (proc[ps]->exited)
				proc[ps] = spawn(ps, proc[ps]->pid);
			break;
		case 6: /* the process unmaps what it has */
			fake_unmap_all(proc[ps]);
			break;
		}
	}
	for (int i = 0; i < NPROC; i++) {
		if (!proc[i]->exited) {
			fake_run_as(proc[i]);
			KpwProcessExit(dev, proc[i]);
			fake_exit(&k, proc[i]);
		}
	}
	fake_run_as(proc[0]);
	for (int i = 0; i < NFILE; i++)
		if (file[i])
			KpwClose(dev, file[i]);
	KpwDeviceDestroy(dev);
	if (k.allocs || k.secured || k.mutexes || k.refs || k.wrong_process_unsecure ||
	    k.after_exit || k.exited_with_secured || k.mm_under_lock || k.misaligned_state ||
	    k.attached_now || k.asked_attached)
		__builtin_trap();
	return 0;
}
