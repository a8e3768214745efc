/* SPDX-License-Identifier: BSD-2-Clause */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kpw_fake.h"

static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;

struct fake_secured {
	uint64_t pid, addr, len;
};

struct fake_process {
	uint64_t pid;
};

void fake_init(struct fake_kernel *k)
{
	memset(k, 0, sizeof(*k));
	k->pid = 1;
	k->fail_alloc_after = -1;
}

void fake_map(struct fake_kernel *k, uint64_t pid, uint64_t lo, uint64_t hi)
{
	for (int i = 0; i < FAKE_MAX_MAPPED; i++) {
		if (!k->mapped[pid][i].hi) {
			k->mapped[pid][i].lo = lo;
			k->mapped[pid][i].hi = hi;
			return;
		}
	}
	abort();
}

void fake_unmap_all(struct fake_kernel *k, uint64_t pid)
{
	memset(k->mapped[pid], 0, sizeof(k->mapped[pid]));
}

static bool is_mapped(struct fake_kernel *k, uint64_t addr, uint64_t len)
{
	for (int i = 0; i < FAKE_MAX_MAPPED; i++)
		if (addr >= k->mapped[k->pid][i].lo && addr + len <= k->mapped[k->pid][i].hi &&
		    addr + len > addr)
			return true;
	return false;
}

static void *f_alloc(void *ctx, size_t size)
{
	struct fake_kernel *k = ctx;
	void *p;

	if (k->fail_alloc_after == 0) {
		k->fail_alloc_after = -1;
		return NULL;
	}
	if (k->fail_alloc_after > 0)
		k->fail_alloc_after--;
	p = calloc(1, size);
	if (p)
		k->allocs++;
	return p;
}

static void f_free(void *ctx, void *p)
{
	struct fake_kernel *k = ctx;

	if (p)
		k->allocs--;
	free(p);
}

static void f_lock(void *ctx)
{
	(void)ctx;
	pthread_mutex_lock(&big_lock);
}

static void f_unlock(void *ctx)
{
	(void)ctx;
	pthread_mutex_unlock(&big_lock);
}

static void f_ev_lock(void *ctx)
{
	(void)ctx;
	pthread_mutex_lock(&ev_lock);
}

static void f_ev_unlock(void *ctx)
{
	(void)ctx;
	pthread_mutex_unlock(&ev_lock);
}

static uint64_t f_pid(void *ctx)
{
	return ((struct fake_kernel *)ctx)->pid;
}

static void *f_process_get(void *ctx)
{
	struct fake_kernel *k = ctx;
	struct fake_process *p = malloc(sizeof(*p));

	if (!p)
		abort();
	p->pid = k->pid;
	k->processes++;
	return p;
}

static void f_process_put(void *ctx, void *p)
{
	((struct fake_kernel *)ctx)->processes--;
	free(p);
}

static void f_attach(void *ctx, void *process, void *state)
{
	struct fake_kernel *k = ctx;

	memcpy(state, &k->pid, sizeof(k->pid));
	k->pid = ((struct fake_process *)process)->pid;
	k->attached = k->pid;
}

static void f_detach(void *ctx, void *state)
{
	struct fake_kernel *k = ctx;

	memcpy(&k->pid, state, sizeof(k->pid));
	k->attached = 0;
}

static KPW_STATUS f_secure(void *ctx, uint64_t addr, uint64_t len, bool write, void **handle)
{
	struct fake_kernel *k = ctx;
	struct fake_secured *s;

	(void)write;
	/* MmSecureVirtualMemory raises on a range that is not there. */
	if (k->raise_secure || !is_mapped(k, addr, len)) {
		k->raise_secure = false;
		return KPW_ACCESS_VIOLATION;
	}
	s = malloc(sizeof(*s));
	if (!s)
		return KPW_INSUFFICIENT_RESOURCES;
	*s = (struct fake_secured){ k->pid, addr, len };
	k->secured++;
	*handle = s;
	return KPW_SUCCESS;
}

static void f_unsecure(void *ctx, void *handle)
{
	struct fake_kernel *k = ctx;
	struct fake_secured *s = handle;

	if (s->pid != k->pid)
		k->wrong_process_unsecure++;
	k->secured--;
	free(s);
}

static KPW_STATUS f_lock_user(void *ctx, uint64_t addr, uint32_t len, bool write, void **mdl,
			      void **va)
{
	struct fake_kernel *k = ctx;

	(void)write;
	/* IoAllocateMdl, then MmProbeAndLockPages raises: the MDL must go again. */
	k->mdls++;
	if (k->raise_lock || !is_mapped(k, addr, len)) {
		k->raise_lock = false;
		k->mdls--;
		return KPW_ACCESS_VIOLATION;
	}
	*mdl = &k->notify_word;
	*va = &k->notify_word;
	return KPW_SUCCESS;
}

static void f_unlock_user(void *ctx, void *mdl)
{
	(void)mdl;
	((struct fake_kernel *)ctx)->mdls--;
}

static KPW_STATUS f_section_create(void *ctx, uint32_t size, void **section, void **va)
{
	struct fake_kernel *k = ctx;

	if (k->fail_section) {
		k->fail_section = false;
		return KPW_INSUFFICIENT_RESOURCES;
	}
	*va = calloc(1, size);
	if (!*va)
		return KPW_INSUFFICIENT_RESOURCES;
	*section = *va;
	k->sections++;
	return KPW_SUCCESS;
}

static void f_section_destroy(void *ctx, void *section, void *va)
{
	(void)section;
	((struct fake_kernel *)ctx)->sections--;
	free(va);
}

static KPW_STATUS f_map_user(void *ctx, void *section, uint32_t size, uint64_t *user_va)
{
	struct fake_kernel *k = ctx;

	(void)section, (void)size;
	if (k->raise_map_view) {
		k->raise_map_view = false;
		return KPW_ACCESS_VIOLATION;
	}
	k->views++;
	*user_va = 0x7ff000000000ull + (uint64_t)k->views * 0x100000;
	return KPW_SUCCESS;
}

static void f_unmap_user(void *ctx, uint64_t user_va)
{
	(void)user_va;
	((struct fake_kernel *)ctx)->views--;
}

static KPW_STATUS f_read64(void *ctx, const volatile uint64_t *p, uint64_t *v)
{
	struct fake_kernel *k = ctx;

	if (k->raise_read) {
		k->raise_read = false;
		return KPW_ACCESS_VIOLATION;
	}
	*v = *p;
	return KPW_SUCCESS;
}

const KPW_OPS fake_ops = {
	.Alloc = f_alloc,
	.Free = f_free,
	.Lock = f_lock,
	.Unlock = f_unlock,
	.EvLock = f_ev_lock,
	.EvUnlock = f_ev_unlock,
	.CurrentProcessId = f_pid,
	.ProcessGet = f_process_get,
	.ProcessPut = f_process_put,
	.Attach = f_attach,
	.Detach = f_detach,
	.Secure = f_secure,
	.Unsecure = f_unsecure,
	.LockUser = f_lock_user,
	.UnlockUser = f_unlock_user,
	.SectionCreate = f_section_create,
	.SectionDestroy = f_section_destroy,
	.SectionMapUser = f_map_user,
	.SectionUnmapUser = f_unmap_user,
	.ReadUser64 = f_read64,
};
