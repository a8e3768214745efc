/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The provider's side of the Windows proxy driver: \\.\SanProvProxy, one
 * handle per client, each contract request a KPW_IOCTL_REQUEST.
 *
 * On Windows a secured range cannot be freed or made inaccessible behind
 * the provider's back: the switch calls WSPMemoryRegistrationCacheCallback
 * first, and that callback invalidates the cache.  Sinks are therefore
 * kept but never called here; the driver's event ring is for ranges the
 * driver itself releases, which this client does not read yet.
 */
#include <windows.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../kp_client.h"
#include "kpw_ioctl.h"

struct kp_client {
	HANDLE Device;
	CRITICAL_SECTION Lock;
	struct kp_sink Sinks[KP_MAX_SINKS];
	int NSinks;
};

struct kp_client *kp_client_open(void)
{
	struct kp_client *c = calloc(1, sizeof(*c));

	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	c->Device = CreateFileW(L"\\\\.\\SanProvProxy", GENERIC_READ | GENERIC_WRITE, 0, NULL,
				OPEN_EXISTING, 0, NULL);
	if (c->Device == INVALID_HANDLE_VALUE) {
		DWORD e = GetLastError();
		free(c);
		/* No driver loaded: no proxy for this process. */
		errno = e == ERROR_ACCESS_DENIED ? EACCES : ENODEV;
		return NULL;
	}
	InitializeCriticalSection(&c->Lock);
	return c;
}

void kp_client_close(struct kp_client *c)
{
	if (!c)
		return;
	/* Closing the handle is the driver's cleanup: it unsecures what is left. */
	CloseHandle(c->Device);
	DeleteCriticalSection(&c->Lock);
	free(c);
}

int kp_client_request(struct kp_client *c, const void *req, size_t req_len, void *rsp,
		      size_t rsp_cap, size_t *rsp_len)
{
	DWORD Bytes = 0;

	*rsp_len = 0;
	if (req_len > MAXDWORD || rsp_cap > MAXDWORD)
		return EINVAL;
	if (!DeviceIoControl(c->Device, KPW_IOCTL_REQUEST, (void *)req, (DWORD)req_len, rsp,
			     (DWORD)rsp_cap, &Bytes, NULL))
		return GetLastError() == ERROR_INSUFFICIENT_BUFFER ? EMSGSIZE : EIO;
	*rsp_len = Bytes;
	return 0;
}

int kp_client_add_sink(struct kp_client *c, const struct kp_sink *sink)
{
	int Ret = 0;

	if (!sink || !sink->changed)
		return EINVAL;
	EnterCriticalSection(&c->Lock);
	if (c->NSinks == KP_MAX_SINKS)
		Ret = ENOSPC;
	else
		c->Sinks[c->NSinks++] = *sink;
	LeaveCriticalSection(&c->Lock);
	return Ret;
}

void kp_client_remove_sink(struct kp_client *c, const struct kp_sink *sink)
{
	EnterCriticalSection(&c->Lock);
	for (int i = 0; i < c->NSinks; i++) {
		if (c->Sinks[i].arg == sink->arg && c->Sinks[i].changed == sink->changed) {
			c->Sinks[i] = c->Sinks[--c->NSinks];
			break;
		}
	}
	LeaveCriticalSection(&c->Lock);
}
