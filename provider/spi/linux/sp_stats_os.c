/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: the statistics dump's signal. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../sp_stats.h"

static void (*handler_fn)(void);
static int installed_signo;
static struct sigaction previous;

static void on_signal(int signo)
{
	int saved = errno; /* the write in fn may change it under the interrupted code */

	(void)signo;
	handler_fn();
	errno = saved;
}

int sp_os_stats_signal_install(int signo, void (*fn)(void))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* Interrupted system calls of the application go on. */
	sa.sa_flags = SA_RESTART;
	handler_fn = fn;
	if (sigaction(signo, &sa, &previous))
		return errno;
	installed_signo = signo;
	return 0;
}

void sp_os_stats_signal_restore(void)
{
	/* The library may be unloaded next: its handler must not stay. */
	if (installed_signo)
		sigaction(installed_signo, &previous, NULL);
	installed_signo = 0;
}

long sp_os_stats_pid(void)
{
	return (long)getpid();
}
