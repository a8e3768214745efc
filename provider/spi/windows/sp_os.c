/* SPDX-License-Identifier: BSD-2-Clause */
/* Windows: the switch's event objects are HANDLEs (WSAEVENT). */
#include <errno.h>
#include <malloc.h>

#include "../sp_os.h"
#include "vb_os.h"

int sp_os_event_set(sp_event ev)
{
	return SetEvent((HANDLE)ev) ? 0 : EBADF;
}

int sp_os_event_reset(sp_event ev)
{
	return ResetEvent((HANDLE)ev) ? 0 : EBADF;
}

void *sp_os_aligned_alloc(size_t align, size_t size)
{
	void *p = _aligned_malloc(size, align);

	if (!p)
		errno = ENOMEM;
	return p;
}

void sp_os_aligned_free(void *p)
{
	_aligned_free(p);
}

int sp_os_wake_open(vb_waitable *w, bool sticky)
{
	HANDLE h = CreateEventW(NULL, sticky, FALSE, NULL);

	if (!h)
		return ENOMEM;
	*w = h;
	return 0;
}

void sp_os_wake_close(vb_waitable w)
{
	CloseHandle(w);
}

void sp_os_wake(vb_waitable w)
{
	SetEvent(w);
}

int sp_os_wait2(vb_waitable fd, vb_waitable w, int timeout_us, bool reset)
{
	(void)reset; /* the event's kind decides: auto-reset, or manual (sticky) */
	HANDLE h[2] = { fd, w };
	/* Milliseconds, rounded up: a short wait must still wait. */
	DWORD r = WaitForMultipleObjects(
	    2, h, FALSE, timeout_us < 0 ? INFINITE : (DWORD)(timeout_us + 999) / 1000);

	if (r == WAIT_OBJECT_0)
		return 1;
	if (r == WAIT_OBJECT_0 + 1)
		return 2; /* an auto-reset event: reset by the wait */
	return r == WAIT_TIMEOUT ? 0 : -EIO;
}

void sp_os_sleep_us(unsigned int us)
{
	Sleep(us < 1000 ? 1 : us / 1000);
}

int sp_os_process_relation(uint32_t pid)
{
	/* Sharing with another process would need its handles: only this one. */
	return pid && pid == GetCurrentProcessId() ? 0 : -1;
}
