/* SPDX-License-Identifier: BSD-2-Clause */
/* Windows: a CQ's or a listener's waitable object is a HANDLE. */
#include <errno.h>
#include <string.h>

#include "../vb_internal.h"

int vb_os_wait(vb_waitable h, int timeout_ms)
{
	switch (WaitForSingleObject(h, timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms)) {
	case WAIT_OBJECT_0:
		return 1;
	case WAIT_TIMEOUT:
		return 0;
	default:
		return -EIO;
	}
}

int vb_mem_probe(const void *addr, size_t len, bool write, uintptr_t *fault)
{
	const DWORD writable =
	    PAGE_READWRITE | PAGE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY;
	const char *p = addr, *end = p + len;
	MEMORY_BASIC_INFORMATION m;

	/* One query a region of like pages, no touch. */
	while (p < end) {
		if (!VirtualQuery(p, &m, sizeof(m)) || m.State != MEM_COMMIT || !m.Protect ||
		    m.Protect & (PAGE_NOACCESS | PAGE_GUARD) ||
		    (write && !(m.Protect & writable))) {
			*fault = (uintptr_t)p;
			return EFAULT;
		}
		p = (const char *)m.BaseAddress + m.RegionSize;
	}
	return 0;
}

int vb_mem_copy(void *dst, const void *src, size_t len, uintptr_t *fault)
{
	/*
	 * Both sides checked first: memory made inaccessible before the copy is
	 * an error, not an exception.  (A change racing the copy itself still
	 * raises: not guarded by an exception handler yet.)
	 */
	if (vb_mem_probe(src, len, false, fault) || vb_mem_probe(dst, len, true, fault))
		return EFAULT;
	memcpy(dst, src, len);
	return 0;
}
