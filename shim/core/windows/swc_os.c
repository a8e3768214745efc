/* SPDX-License-Identifier: BSD-2-Clause */
#include <malloc.h>
#include <windows.h>

#include "swc_os.h"

uint64_t swc_os_now_ns(void)
{
	LARGE_INTEGER c, f;

	QueryPerformanceCounter(&c);
	QueryPerformanceFrequency(&f);
	return (uint64_t)((double)c.QuadPart * 1e9 / (double)f.QuadPart);
}

void swc_os_yield(void)
{
	SwitchToThread();
}

void *swc_os_alloc_pages(size_t size)
{
	return _aligned_malloc((size + 4095) & ~(size_t)4095, 4096);
}

void swc_os_free_pages(void *p)
{
	_aligned_free(p);
}
