/* SPDX-License-Identifier: BSD-2-Clause */
/* sp_mutex's contended paths (see sp_mutex.h). */
#include <errno.h>

#include "sp_mutex.h"

int sp_mutex_init(struct sp_mutex *m)
{
	atomic_init(&m->count, 0);
	return sem_init(&m->handoff, 0, 0) ? errno : 0;
}

void sp_mutex_destroy(struct sp_mutex *m)
{
	sem_destroy(&m->handoff);
}

/* Counted in while the lock was held: it is ours when its holder hands it over. */
void sp_mutex_wait(struct sp_mutex *m)
{
	while (sem_wait(&m->handoff) && errno == EINTR)
		; /* a signal handler ran */
}

void sp_mutex_hand_over(struct sp_mutex *m)
{
	sem_post(&m->handoff);
}
