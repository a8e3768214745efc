/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: an event object is an eventfd; the switch's harness owns it. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
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

int sp_os_wake_open(vb_waitable *w, bool sticky)
{
	(void)sticky; /* an eventfd stays readable until read: the wait decides */
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	if (fd < 0)
		return errno;
	*w = fd;
	return 0;
}

void sp_os_wake_close(vb_waitable w)
{
	close(w);
}

void sp_os_wake(vb_waitable w)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so it is woken already. */
	if (write(w, &one, sizeof(one)) != sizeof(one))
		return;
}

int sp_os_wait2(vb_waitable fd, vb_waitable w, int timeout_ms, bool reset)
{
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = w, .events = POLLIN } };
	uint64_t v;
	int n = poll(p, 2, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (p[1].revents & POLLIN) {
		if (reset && read(w, &v, sizeof(v)) != sizeof(v))
			v = 0; /* another reader drained it: nothing lost, it was woken */
		return 2;
	}
	return n ? 1 : 0;
}

void sp_os_sleep_us(unsigned int us)
{
	usleep(us);
}
