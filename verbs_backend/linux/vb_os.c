/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: a CQ's or a listener's waitable object is a file descriptor. */
#include <errno.h>
#include <poll.h>

#include "../vb_internal.h"

int vb_os_wait(vb_waitable fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;

	/* A signal restarts the wait (for the whole timeout: signals are rare here). */
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n > 0;
}
