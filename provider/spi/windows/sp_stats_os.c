/* SPDX-License-Identifier: BSD-2-Clause */
/* Windows: no signals; the statistics are read by the query or dumped at cleanup. */
#include <errno.h>

#include "../sp_stats.h"
#include "vb_os.h"

int sp_os_stats_signal_install(int signo, void (*fn)(void))
{
	(void)signo;
	(void)fn;
	return ENOTSUP;
}

void sp_os_stats_signal_restore(void)
{
}

long sp_os_stats_pid(void)
{
	return (long)GetCurrentProcessId();
}
