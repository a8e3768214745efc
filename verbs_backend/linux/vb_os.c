/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: a CQ's or a listener's waitable object is a file descriptor. */
#include <errno.h>
#include <poll.h>

#include "../vb_internal.h"

int vb_os_wait(vb_waitable fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n = poll(&p, 1, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	return n > 0;
}
