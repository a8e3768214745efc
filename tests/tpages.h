/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The pages of some memory a call touches.  The memory is made
 * inaccessible; the first access to each page faults into a handler that
 * counts the page and gives it back its access.  A cost measured in memory
 * touched, which the code under test cannot leave out of the count as it
 * can a counter it bumps itself.
 *
 * Protection is process-wide: while armed, no other thread may touch the
 * watched memory (it would be counted).  Kernel accesses (a system call
 * given a watched buffer) fail with EFAULT instead of faulting: watch only
 * memory the code reads and writes itself.
 */
#ifndef SANPROV_TPAGES_H
#define SANPROV_TPAGES_H

#include <stddef.h>

/* Watch the pages [p, p + len) lies on: read-write memory whose pages hold nothing else in use. */
void tpages_watch(const void *p, size_t len);
void tpages_unwatch_all(void);
/* Every watched page inaccessible until touched; the count starts at 0. */
void tpages_arm(void);
/* Access back everywhere; the distinct pages touched since tpages_arm(). */
unsigned int tpages_disarm(void);

#endif
