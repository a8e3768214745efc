/* SPDX-License-Identifier: BSD-2-Clause */
#ifndef SANPROV_TESTS_TFORK_H
#define SANPROV_TESTS_TFORK_H

#include <sys/types.h>

/*
 * fork() once every other thread of the process sleeps in the kernel: the
 * child of a fork taken while a thread was inside ASan's allocator (which
 * takes no lock at fork before LLVM 18, GCC 12's libasan included) finds
 * that lock held forever.  glibc's malloc needs none of this; the wait is
 * bounded (a thread that never settles only narrows the window).
 */
pid_t tfork_settled(void);

#endif
