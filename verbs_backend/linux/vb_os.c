/* SPDX-License-Identifier: BSD-2-Clause */
/* Linux: waitable objects are file descriptors; guarded memory accesses. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../vb_internal.h"

int vb_os_wait(vb_waitable fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;

	/* A signal restarts the wait (for the whole timeout: signals are rare here). */
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n > 0;
}

/*
 * Guarded accesses.  A fault inside one jumps back to its start: the
 * handler, installed on the first guarded access, runs the previous
 * SIGSEGV/SIGBUS action for any fault that is not a guarded access's.
 * SA_NODEFER leaves the signal unblocked, so the jump needs no saved
 * signal mask (no system call an access).
 */
/* volatile: the compiler knows memcpy does not read it; the handler does. */
static VB_THREAD_LOCAL sigjmp_buf *volatile guard_env;
static VB_THREAD_LOCAL uintptr_t guard_fault;
static struct sigaction old_segv, old_bus;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static atomic_bool guard_ready; /* skips pthread_once on the fast path */

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *env = guard_env;
	struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;

	if (env) {
		guard_env = NULL;
		guard_fault = (uintptr_t)si->si_addr;
		siglongjmp(*env, 1);
	}
	/* Not ours: as if we were not here. */
	if (old->sa_flags & SA_SIGINFO) {
		old->sa_sigaction(sig, si, uc);
	} else if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN) {
		/* The faulting instruction runs again and takes the default action. */
		sigaction(sig, old, NULL);
	} else {
		old->sa_handler(sig);
	}
}

static void guard_install(void)
{
	struct sigaction sa = { .sa_sigaction = guard_handler,
				.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	atomic_store_explicit(&guard_ready, true, memory_order_release);
}

static inline void guard_init(void)
{
	if (!atomic_load_explicit(&guard_ready, memory_order_acquire))
		pthread_once(&guard_once, guard_install);
}

int vb_mem_copy(void *dst, const void *src, size_t len, uintptr_t *fault)
{
	sigjmp_buf env;

	guard_init();
	if (sigsetjmp(env, 0)) {
		*fault = guard_fault;
		return EFAULT;
	}
	guard_env = &env;
	atomic_signal_fence(memory_order_seq_cst);
	memcpy(dst, src, len);
	atomic_signal_fence(memory_order_seq_cst);
	guard_env = NULL;
	return 0;
}

int vb_mem_probe(const void *addr, size_t len, bool write, uintptr_t *fault)
{
	const uintptr_t page = VB_PAGE_SIZE;
	uintptr_t p = (uintptr_t)addr, end = (uintptr_t)addr + len;
	sigjmp_buf env;

	if (!len)
		return 0;
	guard_init();
	if (sigsetjmp(env, 0)) {
		*fault = guard_fault;
		return EFAULT;
	}
	guard_env = &env;
	atomic_signal_fence(memory_order_seq_cst);
	for (; p < end; p = (p & ~(page - 1)) + page) {
		/* Atomic both ways: the application may use the buffer meanwhile. */
		if (write)
			__atomic_fetch_add((char *)p, 0, __ATOMIC_RELAXED);
		else
			(void)__atomic_load_n((const char *)p, __ATOMIC_RELAXED);
	}
	atomic_signal_fence(memory_order_seq_cst);
	guard_env = NULL;
	return 0;
}
