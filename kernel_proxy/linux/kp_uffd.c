/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Linux proxy: user mode, on userfaultfd.  Securing a range registers
 * it with the process's userfaultfd (write-protect mode with nothing
 * write-protected, so no fault ever comes to us; missing-page mode where
 * the kernel refuses that), which makes the kernel report munmap, mremap,
 * madvise(DONTNEED/FREE/REMOVE), mmap(MAP_FIXED) over it and brk shrinking
 * as events, and hold the thread that caused each one until the event is
 * read.
 *
 * The event thread is the part that must never hang the application:
 *  - it takes no lock that a thread changing memory may hold (the core's
 *    table lock is held around UFFDIO_REGISTER, which waits for mmap_lock,
 *    which an unmapping thread holds while it waits for us): events go to
 *    the core's ring (its own short lock) and to the sinks, which promise
 *    the same;
 *  - it calls the sinks' begin() before read(): a thread stopped by an
 *    event cannot return from munmap before the sinks know, so no lookup can
 *    see the old registration once the address can be reused;
 *  - in missing-page mode it resolves the faults it is sent (a page
 *    touched after DONTNEED) with a zero page, or unregisters the page and
 *    wakes the thread;
 *  - it lives as long as the client, and stops through an eventfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../kp_client.h"
#include "../kp_core.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define PAGE 4096u

struct kp_range {
	uint64_t start, end;
	uint32_t used;
};

/* Moves on in every child of fork (the event thread and the registrations stay in the parent). */
static _Atomic unsigned int fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_child(void)
{
	atomic_fetch_add(&fork_generation, 1);
}

static void fork_install(void)
{
	pthread_atfork(NULL, NULL, fork_child);
}

struct kp_client {
	struct kp_core *core;
	int uffd;
	int stop_fd;
	pid_t pid;
	unsigned int fork_gen;
	pthread_t thread;
	pthread_mutex_t table_lock; /* the core's table: held around UFFDIO_REGISTER */
	pthread_mutex_t ring_lock;  /* the core's event ring: short, never held calling out */
	/* Registered ranges, to unregister only pages nobody else secured (table_lock). */
	struct kp_range *ranges;
	uint32_t n_ranges;
	uint32_t max_ranges;
	/* sinks: slots the event thread reads without a lock */
	_Atomic(const struct kp_sink *) sinks[KP_MAX_SINKS];
	_Atomic uint64_t batch;	   /* odd while the event thread runs a batch */
	pthread_mutex_t sink_lock; /* add/remove only */
};

static void *pf_alloc(void *ctx, size_t size)
{
	(void)ctx;
	return calloc(1, size);
}

static void pf_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

static void pf_lock(void *ctx)
{
	pthread_mutex_lock(&((struct kp_client *)ctx)->table_lock);
}

static void pf_unlock(void *ctx)
{
	pthread_mutex_unlock(&((struct kp_client *)ctx)->table_lock);
}

static void pf_ev_lock(void *ctx)
{
	pthread_mutex_lock(&((struct kp_client *)ctx)->ring_lock);
}

static void pf_ev_unlock(void *ctx)
{
	pthread_mutex_unlock(&((struct kp_client *)ctx)->ring_lock);
}

/* Is every page of [addr, addr + len) mapped? */
static int mapped(uint64_t addr, uint64_t len)
{
	unsigned char v;

	for (uint64_t p = addr; p < addr + len; p += PAGE)
		if (mincore((void *)(uintptr_t)p, PAGE, &v))
			return 0;
	return 1;
}

static uint32_t pf_secure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, uint32_t access,
			  void **cookie)
{
	struct kp_client *k = ctx;
	struct uffdio_register reg = { .range = { addr, len }, .mode = UFFDIO_REGISTER_MODE_WP };
	uint32_t i;
	int ret;

	(void)owner, (void)access;
	if (k->n_ranges == k->max_ranges)
		return KP_E_NO_MEMORY;
	/*
	 * Write-protect mode with no page ever write-protected: the events come,
	 * and no fault of the application is ever routed to us.  Missing-page
	 * mode (faults on removed pages come to the event thread) only where
	 * the kernel refuses write-protect mode for the mapping.
	 */
	ret = ioctl(k->uffd, UFFDIO_REGISTER, &reg);
	if (ret && errno == EINVAL && mapped(addr, len)) {
		reg.mode = UFFDIO_REGISTER_MODE_MISSING;
		ret = ioctl(k->uffd, UFFDIO_REGISTER, &reg);
	}
	if (ret) {
		/* Unmapped memory, or a mapping userfaultfd cannot watch (a file,
		 * VM_PFNMAP, another userfaultfd): it must not be cached unwatched. */
		return errno == EINVAL && !mapped(addr, len) ? KP_E_FAULT : KP_E_UNWATCHABLE;
	}
	for (i = 0; k->ranges[i].used; i++)
		;
	k->ranges[i] = (struct kp_range){ addr, addr + len, 1 };
	k->n_ranges++;
	*cookie = &k->ranges[i];
	return KP_OK;
}

/* Unregister [start, end) minus what other secured ranges still cover. */
static void unregister_uncovered(struct kp_client *k, uint64_t start, uint64_t end)
{
	while (start < end) {
		uint64_t piece_end = end;

		for (uint32_t i = 0; i < k->max_ranges; i++) {
			const struct kp_range *r = &k->ranges[i];
			if (!r->used || r->end <= start || r->start >= piece_end)
				continue;
			if (r->start <= start) {
				/* start is covered: skip past this range and look again. */
				start = r->end;
				piece_end = start;
				break;
			}
			piece_end = r->start;
		}
		if (start < piece_end) {
			struct uffdio_range rg = { start, piece_end - start };
			ioctl(k->uffd, UFFDIO_UNREGISTER, &rg);
			start = piece_end;
		}
	}
}

static void pf_unsecure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, void *cookie)
{
	struct kp_client *k = ctx;
	struct kp_range *r = cookie;

	(void)owner;
	r->used = 0;
	k->n_ranges--;
	unregister_uncovered(k, addr, addr + len);
}

static const struct kp_platform linux_platform = {
	.alloc = pf_alloc,
	.free = pf_free,
	.lock = pf_lock,
	.unlock = pf_unlock,
	.ev_lock = pf_ev_lock,
	.ev_unlock = pf_ev_unlock,
	.secure = pf_secure,
	.unsecure = pf_unsecure,
};

/*
 * The sinks of one batch, read once when it starts: begin(), changed() and
 * end() go to the same set, so a sink removed meanwhile still gets the end()
 * of every begin() (removal waits for the batch).
 */
struct batch_sinks {
	const struct kp_sink *s[KP_MAX_SINKS];
	int n;
};

static void changed(struct kp_client *k, const struct batch_sinks *b, uint32_t kind, uint64_t addr,
		    uint64_t len)
{
	kp_core_post_event(k->core, (uint64_t)k->pid, kind, addr, len);
	for (int i = 0; i < b->n; i++)
		if (b->s[i]->changed)
			b->s[i]->changed(b->s[i]->arg, kind, addr, len);
}

/* A thread touched a secured page that is gone (after DONTNEED): give it a zero page. */
static void resolve_fault(struct kp_client *k, const struct batch_sinks *b, uint64_t address)
{
	uint64_t page = address & ~(uint64_t)(PAGE - 1);
	struct uffdio_zeropage z = { .range = { page, PAGE } };
	struct uffdio_range r = { page, PAGE };

	if (!ioctl(k->uffd, UFFDIO_ZEROPAGE, &z))
		return; /* mapped and the thread woken */
	if (errno == EEXIST) {
		/* Populated meanwhile: the faulting thread may still sleep. */
		ioctl(k->uffd, UFFDIO_WAKE, &r);
		return;
	}
	/* A mapping without zero pages: stop watching the page (which wakes the thread). */
	ioctl(k->uffd, UFFDIO_UNREGISTER, &r);
	ioctl(k->uffd, UFFDIO_WAKE, &r);
	changed(k, b, KP_EVENT_REMOVE, page, PAGE);
}

static void *event_main(void *arg)
{
	struct kp_client *k = arg;
	struct pollfd pfd[2] = { { .fd = k->uffd, .events = POLLIN },
				 { .fd = k->stop_fd, .events = POLLIN } };

	for (;;) {
		struct uffd_msg msg[16];
		ssize_t n;

		if (poll(pfd, 2, -1) < 0)
			continue; /* EINTR */
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		/* One batch per read(): lookups wait only for what this read returned. */
		for (n = 1; n > 0;) {
			struct batch_sinks b = { .n = 0 };

			atomic_fetch_add(&k->batch, 1);
			for (int i = 0; i < KP_MAX_SINKS; i++) {
				const struct kp_sink *sk = atomic_load(&k->sinks[i]);
				if (sk)
					b.s[b.n++] = sk;
			}
			for (int i = 0; i < b.n; i++)
				if (b.s[i]->begin)
					b.s[i]->begin(b.s[i]->arg);
			n = read(k->uffd, msg, sizeof(msg));
			for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(msg[0]); i++) {
				const struct uffd_msg *m = &msg[i];
				switch (m->event) {
				case UFFD_EVENT_UNMAP:
					changed(k, &b, KP_EVENT_UNMAP, m->arg.remove.start,
						m->arg.remove.end - m->arg.remove.start);
					break;
				case UFFD_EVENT_REMOVE:
					changed(k, &b, KP_EVENT_REMOVE, m->arg.remove.start,
						m->arg.remove.end - m->arg.remove.start);
					break;
				case UFFD_EVENT_REMAP:
					changed(k, &b, KP_EVENT_REMAP, m->arg.remap.from,
						m->arg.remap.len);
					break;
				case UFFD_EVENT_PAGEFAULT:
					resolve_fault(k, &b, m->arg.pagefault.address);
					break;
				}
			}
			for (int i = 0; i < b.n; i++)
				if (b.s[i]->end)
					b.s[i]->end(b.s[i]->arg);
			atomic_fetch_add(&k->batch, 1);
		}
	}
	return NULL;
}

struct kp_client *kp_client_open(void)
{
	struct kp_core_limits lim = {
		.max_ranges = 65536,
		.max_owners = 4,
		.max_ranges_per_owner = 65535,
		.max_bytes_per_owner = UINT64_MAX,
		.user_addr_max = (uint64_t)1 << 47,
		.page_size = PAGE,
		.event_ring = 4096,
	};
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE |
					      UFFD_FEATURE_EVENT_REMAP };
	struct kp_client *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return NULL;
	k->pid = getpid();
	k->stop_fd = -1;
	pthread_once(&fork_once, fork_install);
	k->fork_gen = atomic_load(&fork_generation);
	pthread_mutex_init(&k->table_lock, NULL);
	pthread_mutex_init(&k->ring_lock, NULL);
	pthread_mutex_init(&k->sink_lock, NULL);
	/* User-mode-only faults need no privilege (vm.unprivileged_userfaultfd = 0). */
	k->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (k->uffd < 0)
		k->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (k->uffd < 0)
		goto err;
	if (ioctl(k->uffd, UFFDIO_API, &api))
		goto err;
	k->max_ranges = lim.max_ranges;
	k->ranges = calloc(k->max_ranges, sizeof(*k->ranges));
	k->core = kp_core_create(&lim, &linux_platform, k);
	k->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (!k->ranges || !k->core || k->stop_fd < 0) {
		errno = ENOMEM;
		goto err;
	}
	ret = pthread_create(&k->thread, NULL, event_main, k);
	if (ret) {
		errno = ret;
		goto err;
	}
	return k;
err:
	ret = errno;
	if (k->core)
		kp_core_destroy(k->core);
	free(k->ranges);
	if (k->uffd >= 0)
		close(k->uffd);
	if (k->stop_fd >= 0)
		close(k->stop_fd);
	free(k);
	errno = ret;
	return NULL;
}

void kp_client_close(struct kp_client *k)
{
	if (!k)
		return;
	if (atomic_load(&fork_generation) != k->fork_gen) {
		/* A child of fork: no event thread here, and the userfaultfd's
		 * registrations are the parent's.  Only this copy's memory goes. */
		kp_core_abandon(k->core);
		close(k->uffd);
		close(k->stop_fd);
		free(k->ranges);
		free(k);
		return;
	}
	/* Everything secured is unregistered first, so no event can be pending for it. */
	kp_core_destroy(k->core);
	(void)!write(k->stop_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
	pthread_join(k->thread, NULL);
	close(k->uffd);
	close(k->stop_fd);
	free(k->ranges);
	pthread_mutex_destroy(&k->table_lock);
	pthread_mutex_destroy(&k->ring_lock);
	pthread_mutex_destroy(&k->sink_lock);
	free(k);
}

int kp_client_request(struct kp_client *k, const void *req, size_t req_len, void *rsp,
		      size_t rsp_cap, size_t *rsp_len)
{
	*rsp_len = 0;
	if (atomic_load_explicit(&fork_generation, memory_order_relaxed) != k->fork_gen)
		return EPERM; /* a child of fork has no proxy of its own */
	kp_core_dispatch(k->core, (uint64_t)k->pid, req, req_len, rsp, rsp_cap, rsp_len);
	return *rsp_len ? 0 : EINVAL;
}

int kp_client_add_sink(struct kp_client *k, const struct kp_sink *sink)
{
	int ret = ENOSPC;

	if (!sink)
		return EINVAL;
	pthread_mutex_lock(&k->sink_lock);
	for (int i = 0; i < KP_MAX_SINKS; i++)
		if (!atomic_load(&k->sinks[i])) {
			atomic_store(&k->sinks[i], sink);
			ret = 0;
			break;
		}
	pthread_mutex_unlock(&k->sink_lock);
	return ret;
}

void kp_client_remove_sink(struct kp_client *k, const struct kp_sink *sink)
{
	uint64_t b;

	pthread_mutex_lock(&k->sink_lock);
	for (int i = 0; i < KP_MAX_SINKS; i++)
		if (atomic_load(&k->sinks[i]) == sink)
			atomic_store(&k->sinks[i], NULL);
	pthread_mutex_unlock(&k->sink_lock);
	/* Wait out a batch that may still be calling it (it never blocks), unless
	 * this is a child of fork, where no event thread runs. */
	if (atomic_load(&fork_generation) != k->fork_gen)
		return;
	b = atomic_load(&k->batch);
	if (b & 1)
		while (atomic_load(&k->batch) == b)
			sched_yield();
}
