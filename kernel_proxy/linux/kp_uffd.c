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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../kp_client.h"
#include "../kp_core.h"
#include "kp_uffd_test.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* One mapping's facts from /proc/self/maps (PROCMAP_QUERY, Linux 6.11; older headers lack it). */
struct kp_procmap_query {
	uint64_t size;
	uint64_t query_flags;
	uint64_t query_addr;
	uint64_t vma_start;
	uint64_t vma_end;
	uint64_t vma_flags;
	uint64_t vma_page_size;
	uint64_t vma_offset;
	uint64_t inode;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint32_t vma_name_size;
	uint32_t build_id_size;
	uint64_t vma_name_addr;
	uint64_t build_id_addr;
};
#define KP_PROCMAP_QUERY _IOWR('f', 17, struct kp_procmap_query)
#define KP_VMA_READABLE 0x01
#define KP_VMA_WRITABLE 0x02
#define KP_VMA_SHARED 0x08

#define PAGE 4096u
#define MOVES_MAX 64

/*
 * What is registered with the userfaultfd: disjoint segments, each with the
 * number of secured ranges covering it, in a treap ordered by start (with
 * parent links) and a list in address order.  A run is a maximal stretch
 * of adjacent segments: one registration as the kernel sees it, which
 * splits at most two mappings.
 *
 * A boundary between adjacent segments stays only where it means
 * something: their counts differ, or a secured range starts there (nstart,
 * the ranges starting at the segment's start).  So the start of every
 * secured range is always a segment's start, and that segment lives as
 * long as the range (its count and nstart are not 0): the range's record
 * keeps it (the core's cookie).  Its end is always a segment's end too: a
 * boundary with equal counts on both sides has a range starting there.
 * An unsecure therefore starts at its segment, walks the list to its end,
 * and looks at the two neighbours: no search, and removing a treap node
 * given the node takes O(1) rotations on average.  Secures search (O(log n)).
 */
struct kp_seg {
	uint64_t start, end;
	uint32_t count;
	uint32_t nstart; /* secured ranges that start at start */
	uint32_t prio;
	struct kp_seg *l, *r, *up;  /* the treap */
	struct kp_seg *prev, *next; /* address order */
};

struct vma_info {
	uint64_t start, end, inode;
	uint32_t flags; /* KP_VMA_* */
	dev_t dev;
	char name[64];
};

/* Moves on in every child of fork (the event thread and the registrations stay in the parent). */
static _Atomic unsigned int fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
/* Every open client, for the fork handlers. */
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kp_client *clients;

struct kp_client {
	struct kp_core *core;
	int uffd;
	int stop_fd;
	int maps_fd; /* /proc/self/maps, for PROCMAP_QUERY; -1: parse the text */
	pid_t pid;
	unsigned int fork_gen;
	unsigned int test_flags;
	int user_mode_only; /* the kernel's own accesses never fault to us */
	dev_t shm_dev;	    /* the device of shared anonymous memory; 0: unknown */
	pthread_t thread;
	struct kp_client *next;	    /* clients */
	pthread_mutex_t table_lock; /* the core's table: held around UFFDIO_REGISTER */
	pthread_mutex_t ring_lock;  /* the core's event ring: short, never held calling out */
	/* What is registered (table_lock). */
	struct kp_seg *root, *first; /* the treap, the list */
	struct kp_seg *pool, *free_segs;
	size_t pool_bytes; /* a mapping of its own: pages untouched cost nothing */
	uint32_t pool_used;
	uint32_t seed;
	uint32_t runs, max_runs;
	uint64_t probes; /* segments examined by unsecures (kp_uffd_test_probes) */
	/* Ranges mremap moved, still registered at their new place (move_lock, short). */
	pthread_mutex_t move_lock;
	struct {
		uint64_t start, end;
	} moves[MOVES_MAX];
	uint32_t n_moves;
	int moves_lost;
	/* sinks: slots the event thread reads without a lock */
	_Atomic(const struct kp_sink *) sinks[KP_MAX_SINKS];
	_Atomic uint64_t batch;	   /* odd while the event thread runs a batch */
	pthread_mutex_t sink_lock; /* add/remove only */
};

static void fork_prepare(void)
{
	pthread_mutex_lock(&clients_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&clients_lock);
}

/*
 * The child's copy of a userfaultfd would keep the parent's registrations
 * alive after the parent closes its proxy, and an unmap there would wait for
 * a reader that is gone: the child lets go of it at once.
 */
static void fork_child(void)
{
	atomic_fetch_add(&fork_generation, 1);
	for (struct kp_client *k = clients; k; k = k->next)
		if (k->uffd >= 0) {
			close(k->uffd);
			k->uffd = -1;
		}
	pthread_mutex_unlock(&clients_lock);
}

static void fork_install(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

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

/* The treap of segments. */

static struct kp_seg *seg_new(struct kp_client *k, uint64_t start, uint64_t end, uint32_t count)
{
	struct kp_seg *s = k->free_segs;

	/* The pool holds twice the ranges the core allows: it never runs out.
	 * Untouched until needed (anonymous memory), so an idle proxy costs no
	 * memory for it. */
	if (s)
		k->free_segs = s->r;
	else
		s = &k->pool[k->pool_used++];
	k->seed = k->seed * 1103515245u + 12345u;
	*s = (struct kp_seg){ .start = start, .end = end, .count = count, .prio = k->seed };
	return s;
}

static void seg_put(struct kp_client *k, struct kp_seg *s)
{
	s->r = k->free_segs;
	k->free_segs = s;
}

/* Where the link to t is: its parent's child pointer, or the root. */
static struct kp_seg **seg_link(struct kp_client *k, struct kp_seg *t)
{
	if (!t->up)
		return &k->root;
	return t->up->l == t ? &t->up->l : &t->up->r;
}

/* Rotate x above its parent. */
static void seg_rotate_up(struct kp_client *k, struct kp_seg *x)
{
	struct kp_seg *p = x->up, **link = seg_link(k, p);

	k->probes++;
	if (p->l == x) {
		p->l = x->r;
		if (x->r)
			x->r->up = p;
		x->r = p;
	} else {
		p->r = x->l;
		if (x->l)
			x->l->up = p;
		x->l = p;
	}
	x->up = p->up;
	p->up = x;
	*link = x;
}

/* Put s, not yet in the structure, right after prev (NULL: first). */
static void seg_insert_after(struct kp_client *k, struct kp_seg *prev, struct kp_seg *s)
{
	struct kp_seg *next = prev ? prev->next : k->first;

	/* In order between prev and next: prev has no right child, or next no left one. */
	if (prev && !prev->r) {
		prev->r = s;
		s->up = prev;
	} else if (next) {
		next->l = s;
		s->up = next;
	} else {
		k->root = s;
		s->up = NULL;
	}
	s->prev = prev;
	s->next = next;
	if (prev)
		prev->next = s;
	else
		k->first = s;
	if (next)
		next->prev = s;
	while (s->up && s->up->prio < s->prio)
		seg_rotate_up(k, s);
}

/* Take s out (given the node: no search) and free it. */
static void seg_erase(struct kp_client *k, struct kp_seg *s)
{
	struct kp_seg *c;

	/* Down until it has a child at most, then spliced out. */
	while (s->l && s->r)
		seg_rotate_up(k, s->l->prio > s->r->prio ? s->l : s->r);
	c = s->l ? s->l : s->r;
	*seg_link(k, s) = c;
	if (c)
		c->up = s->up;
	if (s->prev)
		s->prev->next = s->next;
	else
		k->first = s->next;
	if (s->next)
		s->next->prev = s->prev;
	k->probes++;
	seg_put(k, s);
}

/* The segment with the greatest start <= x (a search: secures only). */
static struct kp_seg *seg_floor(struct kp_client *k, uint64_t x)
{
	struct kp_seg *t = k->root, *best = NULL;

	while (t)
		if (t->start <= x) {
			best = t;
			t = t->r;
		} else {
			t = t->l;
		}
	return best;
}

/* Make x a segment boundary, if a segment spans it. */
static void seg_cut(struct kp_client *k, uint64_t x)
{
	struct kp_seg *s = seg_floor(k, x);

	if (s && s->start < x && x < s->end) {
		struct kp_seg *n = seg_new(k, x, s->end, s->count);
		s->end = x;
		seg_insert_after(k, s, n);
	}
}

/* The first segment that ends at or after a. */
static struct kp_seg *seg_first_touching(struct kp_client *k, uint64_t a)
{
	struct kp_seg *s = seg_floor(k, a);

	return s && s->end >= a ? s : s ? s->next : k->first;
}

/* How many runs meet [a, b] (touching counts), from s, the first segment that ends at or after a.
 */
static uint32_t runs_from(struct kp_client *k, struct kp_seg *s, uint64_t b)
{
	uint32_t n = 0;
	uint64_t prev_end = 0;

	for (; s && s->start <= b; s = s->next) {
		k->probes++;
		if (!n || s->start != prev_end)
			n++;
		prev_end = s->end;
	}
	return n;
}

static uint32_t runs_touching(struct kp_client *k, uint64_t a, uint64_t b)
{
	return runs_from(k, seg_first_touching(k, a), b);
}

/* Merge s into the segment before it, if nothing tells them apart any more. */
static void seg_join_prev(struct kp_client *k, struct kp_seg *s)
{
	struct kp_seg *p;

	if (!s || s->nstart)
		return;
	p = s->prev;
	k->probes++;
	if (p && p->end == s->start && p->count == s->count) {
		p->end = s->end;
		seg_erase(k, s);
	}
}

static void unregister_range(struct kp_client *k, uint64_t start, uint64_t end)
{
	struct uffdio_range rg = { start, end - start };

	/* EINVAL where nothing is mapped any more, or where another userfaultfd watches. */
	if (start < end && k->uffd >= 0)
		ioctl(k->uffd, UFFDIO_UNREGISTER, &rg);
}

/* Unregister what of [start, end) no secured range covers. */
static void unregister_uncovered(struct kp_client *k, uint64_t start, uint64_t end)
{
	struct kp_seg *s = seg_first_touching(k, start);

	for (; s && s->start < end && start < end; s = s->next) {
		if (s->end <= start)
			continue;
		unregister_range(k, start, s->start > start ? s->start : start);
		start = s->end;
	}
	unregister_range(k, start, end);
}

/* Count [a, b) once more as secured: the segment that starts at a. */
static struct kp_seg *cover(struct kp_client *k, uint64_t a, uint64_t b)
{
	struct kp_seg *s, *first;
	uint64_t pos = a;

	k->runs -= runs_touching(k, a, b);
	seg_cut(k, a);
	seg_cut(k, b);
	s = seg_floor(k, a);
	if (!s)
		s = k->first;
	else if (s->end <= a)
		s = s->next; /* a lies in a gap */
	first = NULL;
	while (pos < b) {
		if (s && s->start <= pos) {
			s->count++;
			pos = s->end;
		} else {
			uint64_t end = s && s->start < b ? s->start : b;
			struct kp_seg *n = seg_new(k, pos, end, 1);
			seg_insert_after(k, s ? s->prev : seg_floor(k, pos), n);
			s = n;
			pos = end;
		}
		if (!first)
			first = s;
		s = s->next;
	}
	first->nstart++;
	/* Inside [a, b) every count moved by one, and a range starts at a: only b may join. */
	seg_join_prev(k, s && s->start == b ? s : NULL);
	k->runs += 1;
	return first;
}

/*
 * Count [a, b) once less, first being the segment that starts at a; unregister
 * what nothing covers any more.  Examines the range's segments and its two
 * neighbours only.
 */
static void uncover(struct kp_client *k, struct kp_seg *first, uint64_t a, uint64_t b)
{
	uint64_t gone_start = 0, gone_end = 0;
	struct kp_seg *before = first->prev, *s = first, *n;

	k->runs -= runs_from(k, before && before->end == a ? before : first, b);
	first->nstart--;
	for (; s && s->start < b; s = n) {
		k->probes++;
		if (s->end > b) {
			/* Never so (the range's end is a boundary), but a split keeps it exact. */
			struct kp_seg *m = seg_new(k, b, s->end, s->count);
			s->end = b;
			seg_insert_after(k, s, m);
		}
		n = s->next;
		if (--s->count)
			continue;
		if (gone_end != s->start) {
			unregister_range(k, gone_start, gone_end);
			gone_start = s->start;
		}
		gone_end = s->end;
		if (s == first)
			first = NULL;
		seg_erase(k, s);
	}
	unregister_range(k, gone_start, gone_end);
	/* s: the segment after the range, if any. */
	seg_join_prev(k, s && s->start == b ? s : NULL);
	seg_join_prev(k, first);
	s = before ? before : k->first;
	if (s && s->end < a)
		s = s->next;
	k->runs += runs_from(k, s, b);
}

/* Ranges mremap moved: unregister what of them nothing secured covers (table_lock). */
static void sweep_registered(struct kp_client *k);

static void settle_moves(struct kp_client *k)
{
	uint64_t moves[MOVES_MAX][2];
	uint32_t n;
	int lost;

	pthread_mutex_lock(&k->move_lock);
	n = k->n_moves;
	for (uint32_t i = 0; i < n; i++) {
		moves[i][0] = k->moves[i].start;
		moves[i][1] = k->moves[i].end;
	}
	lost = k->moves_lost;
	k->n_moves = 0;
	k->moves_lost = 0;
	pthread_mutex_unlock(&k->move_lock);
	for (uint32_t i = 0; i < n; i++)
		unregister_uncovered(k, moves[i][0], moves[i][1]);
	if (lost)
		sweep_registered(k);
}

/*
 * Every mapping registered with a userfaultfd (smaps' "um"/"uw"/"ui"), less
 * what secured ranges cover, is unregistered: mremap may have grown or moved
 * a registration where no event says.  Another userfaultfd's mappings refuse
 * our UFFDIO_UNREGISTER and stay as they are.
 */
static void sweep_registered(struct kp_client *k)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	unsigned long long start = 0, end = 0;

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		if (sscanf(line, "%llx-%llx ", &s, &e) == 2) {
			start = s;
			end = e;
		} else if (!strncmp(line, "VmFlags:", 8) && end > start &&
			   (strstr(line, " um") || strstr(line, " uw") || strstr(line, " ui"))) {
			unregister_uncovered(k, start, end);
		}
	}
	fclose(f);
}

/* The mapping at addr: 0, or ENOENT where nothing is mapped. */
static int vma_at(struct kp_client *k, uint64_t addr, struct vma_info *v)
{
	FILE *f;
	char line[512];

	memset(v, 0, sizeof(*v));
	if (k->maps_fd >= 0) {
		struct kp_procmap_query q = { .size = sizeof(q),
					      .query_addr = addr,
					      .vma_name_size = sizeof(v->name),
					      .vma_name_addr = (uintptr_t)v->name };
		if (!ioctl(k->maps_fd, KP_PROCMAP_QUERY, &q)) {
			v->start = q.vma_start;
			v->end = q.vma_end;
			v->inode = q.inode;
			v->flags = (uint32_t)q.vma_flags;
			v->dev = makedev(q.dev_major, q.dev_minor);
			return 0;
		}
		if (errno != ENAMETOOLONG)
			return ENOENT;
		/* A name longer than any we accept: the mapping's extent only. */
		q.vma_name_size = 0;
		q.vma_name_addr = 0;
		if (ioctl(k->maps_fd, KP_PROCMAP_QUERY, &q))
			return ENOENT;
		v->start = q.vma_start;
		v->end = q.vma_end;
		v->inode = q.inode ? q.inode : 1;
		v->flags = (uint32_t)q.vma_flags;
		return 0;
	}
	f = fopen("/proc/self/maps", "re");
	if (!f)
		return ENOENT;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e, off, ino;
		unsigned int maj, min;
		char perms[8];
		int name_at = 0;
		if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &s, &e, perms, &off, &maj,
			   &min, &ino, &name_at) < 7 ||
		    addr < s || addr >= e)
			continue;
		v->start = s;
		v->end = e;
		v->inode = ino;
		v->dev = makedev(maj, min);
		v->flags = (perms[0] == 'r' ? KP_VMA_READABLE : 0) |
			   (perms[1] == 'w' ? KP_VMA_WRITABLE : 0) |
			   (perms[3] == 's' ? KP_VMA_SHARED : 0);
		if (name_at) {
			line[strcspn(line, "\n")] = 0;
			snprintf(v->name, sizeof(v->name), "%s", line + name_at);
		}
		fclose(f);
		return 0;
	}
	fclose(f);
	return ENOENT;
}

/*
 * Memory whose pages no file operation can take away: anonymous memory, and
 * shared anonymous memory (a shmem file no one can open).  A shmem,
 * hugetlbfs or disk file can be truncated or have holes punched (ftruncate,
 * fallocate), which changes its mappings' pages and sends no event; System V
 * segments userfaultfd does not take.
 */
static int vma_watchable(const struct kp_client *k, const struct vma_info *v)
{
	if (!v->inode)
		return 1;
	return k->shm_dev && v->dev == k->shm_dev && !strcmp(v->name, "/dev/zero (deleted)");
}

/* KP_OK, KP_E_FAULT (not all mapped, or not with the access) or KP_E_UNWATCHABLE. */
static uint32_t check_range(struct kp_client *k, uint64_t addr, uint64_t len, uint32_t access)
{
	uint32_t st = KP_OK;
	struct vma_info v;

	for (uint64_t p = addr; p < addr + len; p = v.end) {
		if (vma_at(k, p, &v) || v.start > p)
			return KP_E_FAULT;
		if (((access & KP_ACCESS_READ) && !(v.flags & KP_VMA_READABLE)) ||
		    ((access & KP_ACCESS_WRITE) && !(v.flags & KP_VMA_WRITABLE)))
			return KP_E_FAULT;
		if (!vma_watchable(k, &v))
			st = KP_E_UNWATCHABLE;
	}
	return st;
}

static uint32_t pf_secure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, uint32_t access,
			  void **cookie)
{
	struct kp_client *k = ctx;
	struct uffdio_register reg = { .range = { addr, len }, .mode = UFFDIO_REGISTER_MODE_WP };
	uint32_t st;
	int ret;

	(void)owner;
	st = check_range(k, addr, len, access);
	if (st)
		return st;
	/* Registrations that would merge with this one cost nothing more. */
	if (k->runs - runs_touching(k, addr, addr + len) + 1 > k->max_runs)
		return KP_E_QUOTA_RANGES;
	/*
	 * Write-protect mode with no page ever write-protected: the events come,
	 * and no fault of the application is ever routed to us.  Missing-page
	 * mode (faults on removed pages come to the event thread) only where
	 * the kernel refuses write-protect mode for the mapping, and only if the
	 * kernel's own accesses fault to us too: with a user-mode-only
	 * userfaultfd, recv() or process_vm_writev() into a removed page would
	 * fail with EFAULT instead of waiting for the zero page.
	 */
	if (k->test_flags & KP_UFFD_TEST_NO_WP) {
		ret = -1;
		errno = EINVAL;
	} else {
		ret = ioctl(k->uffd, UFFDIO_REGISTER, &reg);
	}
	if (ret && errno == EINVAL) {
		if (k->user_mode_only)
			return KP_E_UNWATCHABLE;
		reg.mode = UFFDIO_REGISTER_MODE_MISSING;
		ret = ioctl(k->uffd, UFFDIO_REGISTER, &reg);
	}
	if (ret) {
		/* ENOMEM: the process has no mapping left to split.  Else a mapping
		 * userfaultfd cannot watch (VM_PFNMAP, another userfaultfd's). */
		return errno == ENOMEM ? KP_E_NO_MEMORY : KP_E_UNWATCHABLE;
	}
	/* The record keeps the segment its range starts at: unsecure needs no search. */
	*cookie = cover(k, addr, addr + len);
	return KP_OK;
}

static void pf_unsecure(void *ctx, uint64_t owner, uint64_t addr, uint64_t len, void *cookie)
{
	struct kp_client *k = ctx;

	(void)owner;
	uncover(k, cookie, addr, addr + len);
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

/* mremap took a registration to [start, end): settled at the next request (no table lock here). */
static void moved(struct kp_client *k, uint64_t start, uint64_t end)
{
	pthread_mutex_lock(&k->move_lock);
	if (k->n_moves < MOVES_MAX) {
		k->moves[k->n_moves].start = start;
		k->moves[k->n_moves].end = end;
		k->n_moves++;
	} else {
		k->moves_lost = 1;
	}
	pthread_mutex_unlock(&k->move_lock);
}

/* Read and handle what the userfaultfd has, one batch per read(). */
static void run_batches(struct kp_client *k)
{
	struct uffd_msg msg[16];
	ssize_t n;

	/* Lookups wait only for what this read returned. */
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
				changed(k, &b, KP_EVENT_REMAP, m->arg.remap.from, m->arg.remap.len);
				moved(k, m->arg.remap.to, m->arg.remap.to + m->arg.remap.len);
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

static void *event_main(void *arg)
{
	struct kp_client *k = arg;
	struct pollfd pfd[2] = { { .fd = k->uffd, .events = POLLIN },
				 { .fd = k->stop_fd, .events = POLLIN } };

	for (;;) {
		if (poll(pfd, 2, -1) < 0)
			continue; /* EINTR */
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & POLLIN)
			run_batches(k);
	}
	/* Everything is unregistered by now: the last events a thread may wait for. */
	run_batches(k);
	return NULL;
}

/* The device of shared anonymous memory, to tell it from a shmem file's mapping. */
static dev_t find_shm_dev(struct kp_client *k)
{
	void *p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct vma_info v;
	dev_t dev = 0;

	if (p == MAP_FAILED)
		return 0;
	if (!vma_at(k, (uintptr_t)p, &v) && v.inode && !strcmp(v.name, "/dev/zero (deleted)"))
		dev = v.dev;
	munmap(p, PAGE);
	return dev;
}

/* Registrations the proxy may make: a small share of the process's mapping budget. */
static uint32_t map_budget(uint32_t max_ranges)
{
	FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
	unsigned long max_map = 65530;
	uint32_t runs;

	if (f) {
		if (fscanf(f, "%lu", &max_map) != 1)
			max_map = 65530;
		fclose(f);
	}
	/* A run splits at most two mappings: an eighth of the count is a quarter of the budget. */
	runs = (uint32_t)(max_map / 8 < UINT32_MAX ? max_map / 8 : UINT32_MAX);
	if (runs < 1)
		runs = 1;
	return runs < max_ranges ? runs : max_ranges;
}

struct kp_client *kp_uffd_open_test(unsigned int flags)
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
	struct kp_procmap_query q = { .size = sizeof(q), .query_addr = (uintptr_t)&lim };
	uint32_t n_segs = 2 * lim.max_ranges + 8;
	int ret;

	if (!k)
		return NULL;
	k->pid = getpid();
	k->uffd = k->stop_fd = k->maps_fd = -1;
	k->test_flags = flags;
	pthread_once(&fork_once, fork_install);
	k->fork_gen = atomic_load(&fork_generation);
	pthread_mutex_init(&k->table_lock, NULL);
	pthread_mutex_init(&k->ring_lock, NULL);
	pthread_mutex_init(&k->sink_lock, NULL);
	pthread_mutex_init(&k->move_lock, NULL);
	/*
	 * A userfaultfd that also takes the kernel's own faults where the process
	 * may have one (privileged, or vm.unprivileged_userfaultfd = 1); else one
	 * for user-mode faults only, which needs no privilege.
	 */
	if (!(flags & KP_UFFD_TEST_USER_MODE_ONLY))
		k->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (k->uffd < 0) {
		k->uffd =
		    (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
		k->user_mode_only = 1;
	}
	if (k->uffd < 0)
		goto err;
	if (ioctl(k->uffd, UFFDIO_API, &api))
		goto err;
	k->maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (k->maps_fd >= 0 && ioctl(k->maps_fd, KP_PROCMAP_QUERY, &q)) {
		/* Before Linux 6.11: the text of /proc/self/maps. */
		close(k->maps_fd);
		k->maps_fd = -1;
	}
	k->shm_dev = find_shm_dev(k);
	k->max_runs = map_budget(lim.max_ranges);
	k->pool_bytes = (size_t)n_segs * sizeof(*k->pool);
	k->pool =
	    mmap(NULL, k->pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (k->pool == MAP_FAILED)
		k->pool = NULL;
	k->seed = (uint32_t)k->pid * 2654435761u;
	k->core = kp_core_create(&lim, &linux_platform, k);
	k->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (!k->pool || !k->core || k->stop_fd < 0) {
		errno = ENOMEM;
		goto err;
	}
	ret = pthread_create(&k->thread, NULL, event_main, k);
	if (ret) {
		errno = ret;
		goto err;
	}
	pthread_mutex_lock(&clients_lock);
	k->next = clients;
	clients = k;
	pthread_mutex_unlock(&clients_lock);
	return k;
err:
	ret = errno;
	if (k->core)
		kp_core_destroy(k->core);
	if (k->pool)
		munmap(k->pool, k->pool_bytes);
	if (k->uffd >= 0)
		close(k->uffd);
	if (k->stop_fd >= 0)
		close(k->stop_fd);
	if (k->maps_fd >= 0)
		close(k->maps_fd);
	free(k);
	errno = ret;
	return NULL;
}

struct kp_client *kp_client_open(void)
{
	return kp_uffd_open_test(0);
}

void kp_client_close(struct kp_client *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&clients_lock);
	for (struct kp_client **p = &clients; *p; p = &(*p)->next)
		if (*p == k) {
			*p = k->next;
			break;
		}
	pthread_mutex_unlock(&clients_lock);
	if (atomic_load(&fork_generation) != k->fork_gen) {
		/* A child of fork: no event thread here, and the userfaultfd (closed at
		 * fork) registered the parent's memory.  Only this copy's memory goes. */
		kp_core_abandon(k->core);
		if (k->uffd >= 0)
			close(k->uffd);
		close(k->stop_fd);
		if (k->maps_fd >= 0)
			close(k->maps_fd);
		munmap(k->pool, k->pool_bytes);
		free(k);
		return;
	}
	/*
	 * Everything is unregistered first: what is secured, where mremap took
	 * registrations, and any mapping still registered with this userfaultfd.
	 * A descriptor another process holds must not leave a registration whose
	 * unmap would wait for a reader that is gone.
	 */
	kp_core_release_owner(k->core, (uint64_t)k->pid);
	pthread_mutex_lock(&k->table_lock);
	settle_moves(k);
	sweep_registered(k);
	pthread_mutex_unlock(&k->table_lock);
	(void)!write(k->stop_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
	pthread_join(k->thread, NULL);
	/* The event thread posts to the core up to its last batch: freed after it. */
	kp_core_destroy(k->core);
	close(k->uffd);
	close(k->stop_fd);
	if (k->maps_fd >= 0)
		close(k->maps_fd);
	munmap(k->pool, k->pool_bytes);
	pthread_mutex_destroy(&k->table_lock);
	pthread_mutex_destroy(&k->ring_lock);
	pthread_mutex_destroy(&k->sink_lock);
	pthread_mutex_destroy(&k->move_lock);
	free(k);
}

/* Wait out the batch the event thread may be running (it never blocks). */
static void wait_batch(struct kp_client *k)
{
	uint64_t b = atomic_load(&k->batch);

	if (b & 1)
		while (atomic_load(&k->batch) == b)
			sched_yield();
}

int kp_client_request(struct kp_client *k, const void *req, size_t req_len, void *rsp,
		      size_t rsp_cap, size_t *rsp_len)
{
	uint32_t st;

	*rsp_len = 0;
	if (atomic_load_explicit(&fork_generation, memory_order_relaxed) != k->fork_gen)
		return EPERM; /* a child of fork has no proxy of its own */
	/* A move the caller's mremap reported is settled before what follows it. */
	wait_batch(k);
	pthread_mutex_lock(&k->move_lock);
	st = k->n_moves || k->moves_lost;
	pthread_mutex_unlock(&k->move_lock);
	if (st) {
		pthread_mutex_lock(&k->table_lock);
		settle_moves(k);
		pthread_mutex_unlock(&k->table_lock);
	}
	st = kp_core_dispatch(k->core, (uint64_t)k->pid, req, req_len, rsp, rsp_cap, rsp_len);
	if (*rsp_len)
		return 0;
	/* Refused before it had a response: a bare header still carries the status. */
	if (!rsp || rsp_cap < sizeof(struct kp_rsp_hdr))
		return EMSGSIZE;
	struct kp_rsp_hdr h = { .size = sizeof(h), .version = KP_PROTO_VERSION, .status = st };
	if (req && req_len >= sizeof(struct kp_req_hdr)) {
		struct kp_req_hdr rh;
		memcpy(&rh, req, sizeof(rh));
		h.code = rh.code;
	}
	memcpy(rsp, &h, sizeof(h));
	*rsp_len = sizeof(h);
	return 0;
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

uint64_t kp_uffd_test_probes(struct kp_client *k)
{
	uint64_t n;

	pthread_mutex_lock(&k->table_lock);
	n = k->probes;
	pthread_mutex_unlock(&k->table_lock);
	return n;
}

void kp_uffd_test_pool(struct kp_client *k, void **base, size_t *len)
{
	*base = k->pool;
	*len = k->pool_bytes;
}
