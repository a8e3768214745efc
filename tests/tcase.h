/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * SPI test programs whose cases each run in a child process of their own,
 * with the provider loaded and a watchdog (a hang fails the case); TAP.
 * A case fails with CHECK(), which names the stage it was in.
 */
#ifndef SANPROV_TESTS_TCASE_H
#define SANPROV_TESTS_TCASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "sw.h"

struct tcase {
	const char *name;
	void (*run)(void);
	bool unloads; /* the case ends the provider itself */
};

/* What the case is doing, for CHECK() and the watchdog. */
extern const char *_Atomic tcase_stage;

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			printf("FAIL: %s (line %d, stage %s)\n", #c, __LINE__, tcase_stage);       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

/*
 * Run the cases, each in a child with *sw loaded (and unloaded after,
 * unless it unloads itself) and a watchdog of secs; only those whose name
 * starts with only's first letter when only is given (the rest are
 * skips).  The children's own lines go to stderr.  The exit status.
 */
int tcase_main(struct sw *sw, const struct tcase *cases, size_t n, const char *only,
	       unsigned int secs);

#endif
