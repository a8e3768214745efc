/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: an event object is an eventfd; the switch's harness owns it. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "sp_os.h"

int sp_os_event_set(sp_event ev)
{
	uint64_t one = 1;
	int fd = SP_EVENT_TO_FD(ev & ~(sp_event)3);

	if (ev < 4 || ev >> 2 > INT32_MAX)
		return EBADF;
	if (write(fd, &one, sizeof(one)) == sizeof(one))
		return 0;
	/* A full counter is still a signalled event. */
	return errno == EAGAIN ? 0 : errno;
}

int sp_os_event_reset(sp_event ev)
{
	uint64_t v;
	struct pollfd p;
	int fd = SP_EVENT_TO_FD(ev & ~(sp_event)3);

	if (ev < 4 || ev >> 2 > INT32_MAX)
		return EBADF;
	/* Drain without blocking, whatever the fd's flags. */
	p = (struct pollfd){ .fd = fd, .events = POLLIN };
	while (poll(&p, 1, 0) == 1 && (p.revents & POLLIN))
		if (read(fd, &v, sizeof(v)) != sizeof(v))
			break;
	return 0;
}

void *sp_os_aligned_alloc(size_t align, size_t size)
{
	/* aligned_alloc wants a multiple of the alignment. */
	return aligned_alloc(align, (size + align - 1) & ~(align - 1));
}

void sp_os_aligned_free(void *p)
{
	free(p);
}
