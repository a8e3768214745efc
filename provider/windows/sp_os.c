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
