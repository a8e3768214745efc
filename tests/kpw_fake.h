/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A fake Windows kernel for the proxy driver's logic (kernel_proxy/windows/
 * kpw_logic.c): process objects (a reused id is a new object) with mapped
 * user ranges and a user, threads that belong to one process and may be
 * attached to another, process exit, a memory manager that refuses the
 * way Windows does (MmSecureVirtualMemory returns NULL) or raises, and
 * counts of everything handed out, so a test can tell that nothing leaked.
 *
 * It also catches what would bugcheck or corrupt on Windows: a process
 * that exits with ranges still secured (PROCESS_HAS_LOCKED_PAGES' kind),
 * a memory-manager call or attach in a process that has exited, an
 * unsecure in another address space than the secure's, a memory-manager
 * call or attach under the device lock, a misaligned KAPC_STATE.
 */
#ifndef SANPROV_TESTS_KPW_FAKE_H
#define SANPROV_TESTS_KPW_FAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "kpw.h"

#define FAKE_MAX_MAPPED 8
#define FAKE_MAX_PROCS 32

struct fake_process {
	uint64_t pid;
	uint32_t uid; /* the token's user */
	bool exited;
	long refs;    /* references the driver holds */
	long secured; /* ranges secured in its address space */
	struct {
		uint64_t lo, hi;
	} mapped[FAKE_MAX_MAPPED];
};

struct fake_kernel {
	struct fake_process procs[FAKE_MAX_PROCS];
	int nprocs;
	/* outstanding objects */
	long allocs, secured, mutexes, refs;
	/* fault injection */
	int fail_alloc_after; /* fail the (n+1)th Alloc from now; -1: never */
	bool raise_secure;    /* the next MmSecureVirtualMemory raises */
	bool fail_user;	      /* the token cannot be read */
	/* called in MmSecureVirtualMemory, e.g. to stall it */
	void (*secure_hook)(struct fake_kernel *k);
	/* what Windows would not survive, or would get wrong */
	long wrong_process_unsecure; /* unsecure outside the securing address space */
	long after_exit;	     /* MM call or attach in an exited process */
	long exited_with_secured;    /* ranges left when a process exited */
	long mm_under_lock;	     /* MM call or attach under the device lock */
	long misaligned_state;	     /* KAPC_STATE storage not 8-byte aligned */
	long attached_now;	     /* attaches not yet detached */
	long asked_attached;	     /* ProcessGet while attached (the logic must not) */
};

extern const KPW_OPS fake_ops;

void fake_init(struct fake_kernel *k);
/* A new process object; pid may be one an exited process had. */
struct fake_process *fake_spawn(struct fake_kernel *k, uint64_t pid, uint32_t uid);
/* The calling thread now belongs to p (not attached). */
void fake_run_as(struct fake_process *p);
/* The process whose address space the calling thread runs in. */
struct fake_process *fake_current(void);
void fake_map(struct fake_process *p, uint64_t lo, uint64_t hi);
void fake_unmap_all(struct fake_process *p);
/* p's last thread is gone: its address space is torn down (after the notify routines). */
void fake_exit(struct fake_kernel *k, struct fake_process *p);

#endif
