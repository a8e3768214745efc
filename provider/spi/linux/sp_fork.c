/* SPDX-License-Identifier: BSD-2-Clause */
/* Fork awareness on Linux: a pthread_atfork child handler. */
#include <pthread.h>
#include <unistd.h>

#include "../sp_fork.h"

_Atomic unsigned int sp_fork_generation;

static pthread_once_t once = PTHREAD_ONCE_INIT;
/* The process the generation was last counted for. */
static _Atomic pid_t counted_pid;

/* Once per process: the handler, or an earlier startup in the child. */
void sp_fork_check(void)
{
	pid_t me = getpid(), was = atomic_load(&counted_pid);

	if (!was || was == me || !atomic_compare_exchange_strong(&counted_pid, &was, me))
		return;
	atomic_fetch_add(&sp_fork_generation, 1);
	sp_fork_child();
}

static void install(void)
{
	atomic_store(&counted_pid, getpid());
	pthread_atfork(NULL, NULL, sp_fork_check);
}

void sp_fork_watch(void)
{
	pthread_once(&once, install);
}
