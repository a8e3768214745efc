/* SPDX-License-Identifier: BSD-2-Clause */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kpw_fake.h"

static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;

/* The calling thread: its process, the process it is attached to, the device lock. */
static __thread struct fake_process *thread_process, *thread_attached;
static __thread int thread_holds_lock;

struct fake_secured {
	struct fake_process *p;
	uint64_t addr, len;
};

static void bump(long *c, long v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

void fake_init(struct fake_kernel *k)
{
	memset(k, 0, sizeof(*k));
	k->fail_alloc_after = -1;
	thread_process = thread_attached = NULL;
}

struct fake_process *fake_spawn(struct fake_kernel *k, uint64_t pid, uint32_t uid)
{
	struct fake_process *p;

	if (k->nprocs == FAKE_MAX_PROCS)
		abort();
	p = &k->procs[k->nprocs++];
	p->pid = pid;
	p->uid = uid;
	return p;
}

void fake_run_as(struct fake_process *p)
{
	thread_process = p;
	thread_attached = NULL;
}

struct fake_process *fake_current(void)
{
	return thread_attached ? thread_attached : thread_process;
}

void fake_map(struct fake_process *p, uint64_t lo, uint64_t hi)
{
	for (int i = 0; i < FAKE_MAX_MAPPED; i++) {
		if (!p->mapped[i].hi) {
			p->mapped[i].lo = lo;
			p->mapped[i].hi = hi;
			return;
		}
	}
	abort();
}

void fake_unmap_all(struct fake_process *p)
{
	memset(p->mapped, 0, sizeof(p->mapped));
}

void fake_exit(struct fake_kernel *k, struct fake_process *p)
{
	/* Windows bugchecks when a process goes with pages the driver still holds. */
	bump(&k->exited_with_secured, p->secured);
	p->exited = true;
	fake_unmap_all(p);
}

static bool is_mapped(struct fake_process *p, uint64_t addr, uint64_t len)
{
	for (int i = 0; i < FAKE_MAX_MAPPED; i++)
		if (addr >= p->mapped[i].lo && addr + len <= p->mapped[i].hi && addr + len > addr)
			return true;
	return false;
}

/* A memory-manager call or an attach: never under the device lock, never in an exited process. */
static void mm_call(struct fake_kernel *k, struct fake_process *p)
{
	if (thread_holds_lock)
		bump(&k->mm_under_lock, 1);
	if (!p || p->exited)
		bump(&k->after_exit, 1);
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
		bump(&k->allocs, 1);
	return p;
}

static void f_free(void *ctx, void *p)
{
	struct fake_kernel *k = ctx;

	if (p)
		bump(&k->allocs, -1);
	free(p);
}

static void f_lock(void *ctx)
{
	(void)ctx;
	pthread_mutex_lock(&dev_lock);
	thread_holds_lock++;
}

static void f_unlock(void *ctx)
{
	(void)ctx;
	thread_holds_lock--;
	pthread_mutex_unlock(&dev_lock);
}

static void *f_mutex_create(void *ctx)
{
	struct fake_kernel *k = ctx;
	pthread_mutex_t *m = f_alloc(ctx, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(m, NULL);
	bump(&k->mutexes, 1);
	return m;
}

static void f_mutex_destroy(void *ctx, void *m)
{
	struct fake_kernel *k = ctx;

	pthread_mutex_destroy(m);
	bump(&k->mutexes, -1);
	f_free(ctx, m);
}

static void f_mutex_acquire(void *ctx, void *m)
{
	(void)ctx;
	pthread_mutex_lock(m);
}

static void f_mutex_release(void *ctx, void *m)
{
	(void)ctx;
	pthread_mutex_unlock(m);
}

/* The thread's process; asked while attached it would still be the thread's. */
static void *f_process_get(void *ctx)
{
	struct fake_kernel *k = ctx;
	struct fake_process *p = thread_process;

	if (thread_attached)
		bump(&k->asked_attached, 1);
	bump(&p->refs, 1);
	bump(&k->refs, 1);
	return p;
}

static void f_process_put(void *ctx, void *process)
{
	struct fake_kernel *k = ctx;

	bump(&((struct fake_process *)process)->refs, -1);
	bump(&k->refs, -1);
}

static KPW_STATUS f_current_user(void *ctx, KPW_USER_ID *user)
{
	struct fake_kernel *k = ctx;
	struct fake_process *p = fake_current();

	if (k->fail_user) {
		k->fail_user = false;
		return KPW_ACCESS_DENIED;
	}
	/* S-1-5-21-...-uid, enough to tell users apart */
	user->Length = 12;
	memset(user->Sid, 0, sizeof(user->Sid));
	user->Sid[0] = 1;
	user->Sid[1] = 1;
	user->Sid[7] = 5;
	memcpy(user->Sid + 8, &p->uid, sizeof(p->uid));
	return KPW_SUCCESS;
}

static void f_attach(void *ctx, void *process, KPW_ATTACH_STATE *state)
{
	struct fake_kernel *k = ctx;

	mm_call(k, process);
	if ((uintptr_t)state % 8)
		bump(&k->misaligned_state, 1);
	memcpy(state->Bytes, &thread_attached, sizeof(thread_attached));
	thread_attached = process;
	bump(&k->attached_now, 1);
}

static void f_detach(void *ctx, KPW_ATTACH_STATE *state)
{
	struct fake_kernel *k = ctx;

	memcpy(&thread_attached, state->Bytes, sizeof(thread_attached));
	bump(&k->attached_now, -1);
}

static KPW_STATUS f_secure(void *ctx, uint64_t addr, uint64_t len, bool write, void **handle)
{
	struct fake_kernel *k = ctx;
	struct fake_process *p = fake_current();
	struct fake_secured *s;

	(void)write;
	mm_call(k, p);
	if (k->secure_hook)
		k->secure_hook(k);
	/* It raises on a bad argument and now and then on a page-in error... */
	if (k->raise_secure) {
		k->raise_secure = false;
		return KPW_ACCESS_VIOLATION;
	}
	/* ... and answers NULL for a range that is not there: no exception. */
	if (!p || p->exited || !is_mapped(p, addr, len)) {
		*handle = NULL;
		return KPW_SUCCESS;
	}
	s = malloc(sizeof(*s));
	if (!s)
		abort();
	*s = (struct fake_secured){ p, addr, len };
	bump(&k->secured, 1);
	bump(&p->secured, 1);
	*handle = s;
	return KPW_SUCCESS;
}

static void f_unsecure(void *ctx, void *handle)
{
	struct fake_kernel *k = ctx;
	struct fake_secured *s = handle;

	mm_call(k, s->p);
	if (s->p != fake_current())
		bump(&k->wrong_process_unsecure, 1);
	bump(&k->secured, -1);
	bump(&s->p->secured, -1);
	free(s);
}

const KPW_OPS fake_ops = {
	.Alloc = f_alloc,
	.Free = f_free,
	.Lock = f_lock,
	.Unlock = f_unlock,
	.MutexCreate = f_mutex_create,
	.MutexDestroy = f_mutex_destroy,
	.MutexAcquire = f_mutex_acquire,
	.MutexRelease = f_mutex_release,
	.ProcessGet = f_process_get,
	.ProcessPut = f_process_put,
	.CurrentUser = f_current_user,
	.Attach = f_attach,
	.Detach = f_detach,
	.Secure = f_secure,
	.Unsecure = f_unsecure,
};
