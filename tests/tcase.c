/* SPDX-License-Identifier: BSD-2-Clause */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "tcase.h"

const char *_Atomic tcase_stage = "start";

static void *watchdog(void *arg)
{
	sleep((unsigned int)(uintptr_t)arg);
	printf("HANG: at stage '%s'\n", tcase_stage);
	fflush(stdout);
	_exit(3);
}

static void watch(unsigned int secs)
{
	pthread_t t;

	if (pthread_create(&t, NULL, watchdog, (void *)(uintptr_t)secs))
		abort();
	pthread_detach(t);
}

int tcase_main(struct sw *sw, const struct tcase *cases, size_t n, const char *only,
	       unsigned int secs)
{
	tap_plan((int)n);
	for (size_t i = 0; i < n; i++) {
		int status;
		pid_t pid;

		if (only && cases[i].name[0] != only[0]) {
			tap_skip(cases[i].name, "not selected");
			continue;
		}
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			/* The case's own lines go to stderr: stdout is the TAP stream. */
			dup2(2, 1);
			setvbuf(stdout, NULL, _IONBF, 0);
			CHECK(sw_load(sw) == 0);
			watch(secs);
			cases[i].run();
			if (!cases[i].unloads)
				sw_unload(sw);
			/* exit, not _exit: the leak checker runs under ASan */
			exit(0);
		}
		if (pid < 0 || waitpid(pid, &status, 0) != pid)
			status = -1;
		tap_result(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s (status %#x)",
			   cases[i].name, status);
	}
	return tap_exit();
}
