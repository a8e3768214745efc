/* SPDX-License-Identifier: BSD-2-Clause */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tfork.h"

/* fork() after the other threads settle ------------------------------------ */

/* Other threads: false when one is not asleep; *sig sums what changes when one runs. */
static bool threads_asleep(unsigned long long *sig)
{
	char path[300], buf[512];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/task");
	bool asleep = true;
	pid_t me = gettid();

	*sig = 0;
	if (!dir)
		return true;
	while ((d = readdir(dir))) {
		unsigned long long utime, stime;
		char state, *p;
		FILE *f;

		if (d->d_name[0] == '.' || atoi(d->d_name) == me)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* exited */
		p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		/* After the name: state, then 10 fields, then utime and stime. */
		if (!p || sscanf(p + 2, "%c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu",
				 &state, &utime, &stime) != 3) {
			asleep = false;
			continue;
		}
		if (state != 'S')
			asleep = false;
		*sig += utime + stime;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", d->d_name);
		f = fopen(path, "r");
		while (f && fgets(buf, sizeof(buf), f)) {
			unsigned long long n;

			if (sscanf(buf, "voluntary_ctxt_switches: %llu", &n) == 1 ||
			    sscanf(buf, "nonvoluntary_ctxt_switches: %llu", &n) == 1)
				*sig = *sig * 31 + n;
		}
		if (f)
			fclose(f);
	}
	closedir(dir);
	return asleep;
}

pid_t tfork_settled(void)
{
	unsigned long long a, b;

	/* Asleep twice, 2 ms apart, having run in between not at all; at most 2 s. */
	for (int i = 0; i < 500; i++) {
		if (threads_asleep(&a)) {
			usleep(2000);
			if (threads_asleep(&b) && a == b)
				break;
		} else {
			usleep(2000);
		}
	}
	return fork();
}
