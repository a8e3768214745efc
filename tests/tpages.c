/* SPDX-License-Identifier: BSD-2-Clause */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tpages.h"

#define TPAGES_MAX 16

static struct {
	uintptr_t start, end;
} regions[TPAGES_MAX];
static int n_regions;
static uintptr_t page_size;
static atomic_uint touched;
static struct sigaction old_segv;
static int armed;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;

	(void)uc;
	/*
	 * A fault on a watched page: give the page its access back and let the
	 * access run again.  mprotect is not on POSIX's list of async-signal-safe
	 * functions, but on Linux it is a bare system call.
	 */
	if (si->si_code == SEGV_ACCERR)
		for (int i = 0; i < n_regions; i++)
			if (a >= regions[i].start && a < regions[i].end &&
			    !mprotect((void *)(a & ~(page_size - 1)), page_size,
				      PROT_READ | PROT_WRITE)) {
				atomic_fetch_add(&touched, 1);
				return;
			}
	/* Not ours: the action there was before, for this fault (retried) or signal. */
	sigaction(sig, &old_segv, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

void tpages_watch(const void *p, size_t len)
{
	if (!page_size)
		page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
	cr_assert_lt(n_regions, TPAGES_MAX);
	cr_assert(!armed);
	regions[n_regions].start = (uintptr_t)p & ~(page_size - 1);
	regions[n_regions].end = ((uintptr_t)p + len + page_size - 1) & ~(page_size - 1);
	n_regions++;
}

void tpages_unwatch_all(void)
{
	cr_assert(!armed);
	n_regions = 0;
}

void tpages_arm(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	cr_assert(!armed);
	atomic_store(&touched, 0);
	cr_assert_eq(sigaction(SIGSEGV, &sa, &old_segv), 0);
	armed = 1;
	for (int i = 0; i < n_regions; i++)
		cr_assert_eq(mprotect((void *)regions[i].start, regions[i].end - regions[i].start,
				      PROT_NONE),
			     0);
}

unsigned int tpages_disarm(void)
{
	cr_assert(armed);
	for (int i = 0; i < n_regions; i++)
		cr_assert_eq(mprotect((void *)regions[i].start, regions[i].end - regions[i].start,
				      PROT_READ | PROT_WRITE),
			     0);
	cr_assert_eq(sigaction(SIGSEGV, &old_segv, NULL), 0);
	armed = 0;
	return atomic_load(&touched);
}
