/* SPDX-License-Identifier: BSD-2-Clause */
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "swc_os.h"

uint64_t swc_os_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void swc_os_yield(void)
{
	sched_yield();
}

void *swc_os_alloc_pages(size_t size)
{
	return aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
}

void swc_os_free_pages(void *p)
{
	free(p);
}
