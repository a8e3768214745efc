/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A fake Windows kernel for the proxy driver's logic (kernel_proxy/windows/
 * kpw_logic.c): processes with mapped user ranges, a memory manager that
 * can refuse or raise at any step, sections and MDLs, and counts of
 * everything handed out, so a test can tell that nothing leaked.
 */
#ifndef SANPROV_TESTS_KPW_FAKE_H
#define SANPROV_TESTS_KPW_FAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "kpw.h"

#define FAKE_MAX_MAPPED 8

struct fake_kernel {
	uint64_t pid; /* the current process */
	/* what each process has mapped: [lo, hi) ranges, by pid 1..4 */
	struct {
		uint64_t lo, hi;
	} mapped[5][FAKE_MAX_MAPPED];
	/* outstanding objects */
	long allocs, secured, mdls, sections, views, processes;
	/* fault injection: the next call of that service fails (a raise) */
	int fail_alloc_after; /* fail the (n+1)th Alloc from now; -1: never */
	bool raise_secure, raise_lock, fail_section, raise_map_view, raise_read;
	/* checks the fake makes */
	long wrong_process_unsecure; /* MmUnsecureVirtualMemory outside the securing process */
	uint64_t attached;	     /* the process attached to, 0: none */
	uint64_t notify_word;	     /* the "user" word SET_NOTIFY locks */
};

extern const KPW_OPS fake_ops;

void fake_init(struct fake_kernel *k);
/* Map [lo, hi) in process pid. */
void fake_map(struct fake_kernel *k, uint64_t pid, uint64_t lo, uint64_t hi);
void fake_unmap_all(struct fake_kernel *k, uint64_t pid);

#endif
