/* SPDX-License-Identifier: BSD-2-Clause */
/* Windows: a CQ's or a listener's waitable object is a HANDLE. */
#include <errno.h>

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
