/* SPDX-License-Identifier: BSD-2-Clause */
/* What the switch core needs of the OS. */
#ifndef SANPROV_SWC_OS_H
#define SANPROV_SWC_OS_H

#include <stddef.h>
#include <stdint.h>

/* A monotonic clock in nanoseconds. */
uint64_t swc_os_now_ns(void);
/* Give the core to another thread that is ready to run. */
void swc_os_yield(void);
/* Page-aligned memory (size rounded up), freed with swc_os_free_pages. */
void *swc_os_alloc_pages(size_t size);
void swc_os_free_pages(void *p);

#endif
