/* SPDX-License-Identifier: BSD-2-Clause */
/* Windows has no fork: a process never finds itself a child of a cache's creator. */
#include "../sp_fork.h"

_Atomic unsigned int sp_fork_generation;

void sp_fork_watch(void)
{
}

void sp_fork_check(void)
{
}
