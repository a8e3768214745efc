/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: an event object is an eventfd; the switch's harness owns it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int sp_os_wait2(vb_waitable fd, vb_waitable w, int timeout_us, bool reset)
{
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = w, .events = POLLIN } };
	struct timespec ts = { timeout_us / 1000000, (long)(timeout_us % 1000000) * 1000 };
	uint64_t v;
	int n = ppoll(p, 2, timeout_us < 0 ? NULL : &ts, NULL);

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

int sp_os_process_relation(uint32_t pid)
{
	char path[64], buf[512], *p;
	unsigned long ppid;
	ssize_t n;
	int fd;

	if (!pid || pid > INT32_MAX)
		return -1;
	if (pid == (uint32_t)getpid())
		return 0;
	if (pid == (uint32_t)getppid())
		return 2;
	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* pid (comm) state ppid: comm may hold anything, so from the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %lu", &ppid) != 1)
		return -1;
	return ppid == (unsigned long)getpid() ? 1 : -1;
}
