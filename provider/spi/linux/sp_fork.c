/* SPDX-License-Identifier: BSD-2-Clause */
/* Fork awareness on Linux: a pthread_atfork child handler. */
#include <pthread.h>

#include "../sp_fork.h"

_Atomic unsigned int sp_fork_generation;

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void in_child(void)
{
	atomic_fetch_add(&sp_fork_generation, 1);
	sp_fork_child();
}

static void install(void)
{
	pthread_atfork(NULL, NULL, in_child);
}

void sp_fork_watch(void)
{
	pthread_once(&once, install);
}
