/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Fork awareness: the generation moves on in every child a fork makes, so
 * a cache created before the fork can tell that it runs in a child, where
 * the parent's registrations must be neither used nor released.  Meson
 * picks the implementation of the OS (linux/: pthread_atfork).
 */
#ifndef SANPROV_SP_FORK_H
#define SANPROV_SP_FORK_H

#include <stdatomic.h>

extern _Atomic unsigned int sp_fork_generation;

/*
 * Called in a child of fork() after the generation moved on: the
 * provider's own locks, which a thread of the parent may have held, start
 * afresh there (sp_startup.c).
 */
void sp_fork_child(void);

/*
 * Count this process as a fork child if it is one and was not counted yet:
 * the fork handlers of other libraries (a switch's, which starts the
 * provider in the child) may run before the provider's own.
 */
void sp_fork_check(void);

/* Start counting forks (idempotent, thread-safe). */
void sp_fork_watch(void);

#endif
