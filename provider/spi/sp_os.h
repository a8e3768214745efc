/* SPDX-License-Identifier: BSD-2-Clause */
/* What the SPI needs of the operating system (provider/<os>/sp_os.c). */
#ifndef SANPROV_SP_OS_H
#define SANPROV_SP_OS_H

#include <stdbool.h>
#include <stddef.h>

#include "sp_spi.h"
#include "vb_os.h"

/* Memory aligned to align bytes (a power of two), NULL with errno; sp_os_aligned_free() it. */
void *sp_os_aligned_alloc(size_t align, size_t size);
void sp_os_aligned_free(void *p);

/* Signal and reset the switch's event object (WSAEVENT). 0 or errno. */
int sp_os_event_set(sp_event ev);
int sp_os_event_reset(sp_event ev);

/*
 * A wake-up object for threads that sleep on a CQ or a listener: 0 or
 * errno.  A sticky one stays woken (a close: every waiter must see it); a
 * plain one is reset by the wait that sees it.
 */
int sp_os_wake_open(vb_waitable *w, bool sticky);
void sp_os_wake_close(vb_waitable w);
void sp_os_wake(vb_waitable w);
/*
 * Sleep until fd is ready (1), w is woken (2; reset with reset, for a plain
 * one) or timeout_us passes (0; negative: no timeout); or -errno.
 */
int sp_os_wait2(vb_waitable fd, vb_waitable w, int timeout_us, bool reset);

/* What process id is to this one: 0 itself, 1 a child, 2 its parent, -1 another or none. */
int sp_os_process_relation(uint32_t pid);

/* Sleep about us microseconds. */
void sp_os_sleep_us(unsigned int us);

#endif
