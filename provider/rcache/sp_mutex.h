/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A mutex whose uncontended lock and unlock are one locked instruction
 * each, inline: the registration cache's lock, taken on every miss.
 *
 * A miss is cheap work around a registration system call, and after that
 * call the branch predictors hold little of ours: pthread_mutex_unlock()
 * there is an indirect jump through the PLT, a call and the mutex type
 * checks, measured at 4-6 ns a miss (about 0.7 % of a softnic
 * registration).  Contended, a thread waits on a POSIX semaphore (glibc's
 * on Linux, winpthreads' on Windows): the benaphore scheme, where the
 * count says how many threads hold or want the lock and each unlock with
 * a waiter hands the lock over through the semaphore.  Like glibc's
 * default mutex, a waiter does not spin first.
 */
#ifndef SANPROV_SP_MUTEX_H
#define SANPROV_SP_MUTEX_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>

struct sp_mutex {
	_Atomic uint32_t count; /* threads holding or waiting for the lock */
	sem_t handoff;		/* posted once for each waiter an unlock lets in */
};

/* 0 or errno. */
int sp_mutex_init(struct sp_mutex *m);
void sp_mutex_destroy(struct sp_mutex *m);

/* Out of line: a thread found the lock taken, or left it to a waiter. */
void sp_mutex_wait(struct sp_mutex *m);
void sp_mutex_hand_over(struct sp_mutex *m);

static inline void sp_mutex_lock(struct sp_mutex *m)
{
	if (__builtin_expect(atomic_fetch_add_explicit(&m->count, 1, memory_order_acquire) != 0, 0))
		sp_mutex_wait(m);
}

static inline void sp_mutex_unlock(struct sp_mutex *m)
{
	if (__builtin_expect(atomic_fetch_sub_explicit(&m->count, 1, memory_order_release) != 1, 0))
		sp_mutex_hand_over(m);
}

#endif
