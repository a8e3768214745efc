/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The randomized stale-hit detector: malloc/free (glibc returning memory
 * with munmap, madvise and brk), mmap/munmap/mremap/madvise and mmap
 * (MAP_FIXED) at reused addresses, and RDMA reads through the watched
 * cache (softnic, Linux proxy), every transferred byte verified.
 *
 * A stale hit is a get that returns a registration made before the mapping
 * of one of its pages changed.  Two oracles:
 *  - for mappings this program changes itself, it keeps the epoch of each
 *    page's last change and the epoch of each registration (exact);
 *  - for malloc'd memory, whose mappings glibc changes unseen, it compares
 *    the pages' frames (/proc/self/pagemap, readable by root) at
 *    registration and at every hit; transparent huge pages are off, so a
 *    frame changes only with the mapping.
 *
 *   stress_stale [operations] [seconds]   (default 1000000, 120)
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "sp_rcache_int.h"
#include "sp_watched_cache.h"
#include "tap.h"
#include "tconn.h"
#include "tdev.h"

#define PG 4096u
#define SLOTS 48
#define MAX_LEN (16 * PG)

enum kind { EMPTY, MALLOC, MMAP };

struct slot {
	enum kind kind;
	uint8_t *addr; /* malloc: the pointer; mmap: page aligned */
	size_t len;
	uint32_t seed;
};

struct regrec {
	const struct vb_mr *mr;
	uint64_t epoch;
	uintptr_t start, end;
	uint64_t pfn[MAX_LEN / PG + 2];
};

static struct slot slots[SLOTS];
static uint64_t epoch = 1;
/* Epoch of the last change per page this program made, in a small open hash. */
#define CHG_BITS 16
static struct {
	uintptr_t page;
	uint64_t epoch;
} changes[1 << CHG_BITS];
static struct regrec *regs; /* by hash of the mr pointer */
#define REG_BITS 14
static int pagemap_fd = -1;
static long stale_exact, stale_pfn, bad_bytes, errors_seen, mremap_refused;

static uint8_t pattern_byte(size_t i, uint32_t seed)
{
	uint32_t x = (uint32_t)i * 2654435761u ^ seed;

	x ^= x >> 15;
	return (uint8_t)(x * 2246822519u >> 24);
}

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pattern_byte(i, seed);
}

static size_t chg_index(uintptr_t page)
{
	return (size_t)((page / PG) * 0x9e3779b97f4a7c15ull >> (64 - CHG_BITS));
}

static void mark_changed(uintptr_t addr, size_t len)
{
	epoch++;
	for (uintptr_t p = addr & ~(uintptr_t)(PG - 1); p < addr + len; p += PG) {
		size_t i = chg_index(p);
		while (changes[i].page && changes[i].page != p)
			i = (i + 1) & ((1 << CHG_BITS) - 1);
		changes[i].page = p;
		changes[i].epoch = epoch;
	}
}

static uint64_t changed_at(uintptr_t page)
{
	size_t i = chg_index(page);

	while (changes[i].page) {
		if (changes[i].page == page)
			return changes[i].epoch;
		i = (i + 1) & ((1 << CHG_BITS) - 1);
	}
	return 0;
}

static uint64_t pfn_of(uintptr_t page)
{
	uint64_t e = 0;

	if (pagemap_fd < 0 || pread(pagemap_fd, &e, 8, (off_t)(page / PG * 8)) != 8)
		return 0;
	return e & (1ull << 63) ? e & ((1ull << 55) - 1) : 0; /* present: the frame */
}

static size_t regs_used;

static struct regrec *reg_slot(const struct vb_mr *mr)
{
	size_t i = (size_t)((uintptr_t)mr * 0x9e3779b97f4a7c15ull >> (64 - REG_BITS));

	/* Three quarters full: forget them all; a forgotten region reads as new, never as stale. */
	if (regs_used > (3u << REG_BITS) / 4) {
		memset(regs, 0, sizeof(*regs) << REG_BITS);
		regs_used = 0;
	}
	while (regs[i].mr && regs[i].mr != mr)
		i = (i + 1) & ((1 << REG_BITS) - 1);
	if (!regs[i].mr)
		regs_used++;
	return &regs[i];
}

/* --- a connected pair on softnic, without Criterion --------------------- */

static struct vb_device *dev;
static struct vb_pd *pd_a, *pd_b;
static struct vb_cq *cq_a, *cq_b;
static struct vb_qp *qp_a, *qp_b;
static uint8_t *rbuf;
static struct vb_mr *rmr;

static int pair_up(void)
{
	struct sockaddr_in sin;
	struct vb_qp_init_attr attr = { .cap = { .max_send_wr = 16, .max_recv_wr = 4 } };
	struct vb_listener *lst;
	int acc, ret;

	dev = tdev_open();
	if (!dev)
		return errno;
	pd_a = vb_alloc_pd(dev);
	pd_b = vb_alloc_pd(dev);
	cq_a = vb_create_cq(dev, 64);
	cq_b = vb_create_cq(dev, 64);
	if (!pd_a || !pd_b || !cq_a || !cq_b)
		return ENOMEM;
	attr.send_cq = attr.recv_cq = cq_a;
	qp_a = vb_create_qp(pd_a, &attr);
	attr.send_cq = attr.recv_cq = cq_b;
	qp_b = vb_create_qp(pd_b, &attr);
	tdev_sockaddr(&sin, 0);
	lst = vb_create_listener(dev, (struct sockaddr *)&sin, sizeof(sin), 1);
	if (!qp_a || !qp_b || !lst)
		return ENOMEM;
	ret = tconnect(lst, qp_b, NULL, qp_a, NULL, &acc);
	vb_destroy_listener(lst);
	if (ret || acc)
		return ret ? ret : acc;
	rbuf = aligned_alloc(PG, MAX_LEN + PG);
	rmr = vb_reg_mr(pd_b, rbuf, MAX_LEN + PG, VB_ACCESS_LOCAL_WRITE);
	return rbuf && rmr ? 0 : ENOMEM;
}

/* b reads [addr, addr + len) of a through the region's rkey. */
static int rdma_read(const struct vb_mr *mr, uint8_t *addr, size_t len)
{
	struct vb_sge sge = { (uintptr_t)rbuf, (uint32_t)len, rmr->lkey };
	struct vb_send_wr wr = { .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = VB_WR_RDMA_READ,
				 .send_flags = VB_SEND_SIGNALED,
				 .remote_addr = (uintptr_t)addr,
				 .rkey = mr->rkey },
			  *bad;
	struct vb_wc wc;
	int n;

	if (vb_post_send(qp_b, &wr, &bad))
		return -1;
	if (vb_cq_wait(cq_b, 1, &wc, &n, 5000) || n != 1)
		return -1;
	return wc.status == VB_WC_SUCCESS ? 0 : -1;
}

/* --- the operations -------------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
	return *s;
}

static void slot_free(struct slot *s)
{
	if (s->kind == MALLOC) {
		free(s->addr); /* glibc may unmap, madvise or trim: it says nothing */
	} else if (s->kind == MMAP) {
		mark_changed((uintptr_t)s->addr, s->len);
		munmap(s->addr, s->len);
	}
	s->kind = EMPTY;
}

static void slot_alloc(struct slot *s, uint64_t x, uint32_t seed)
{
	if (x & 1) {
		s->len = 1 + (x >> 8) % (MAX_LEN - 1);
		s->addr = malloc(s->len);
		s->kind = MALLOC;
	} else {
		s->len = (1 + (x >> 8) % (MAX_LEN / PG)) * PG;
		/* Often at an address that was just given up: reuse is the point. */
		void *hint = (x >> 40) & 1 ? slots[(x >> 20) % SLOTS].addr : NULL;
		s->addr =
		    mmap(hint, s->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (s->addr == MAP_FAILED) {
			s->kind = EMPTY;
			return;
		}
		mark_changed((uintptr_t)s->addr, s->len);
		s->kind = MMAP;
	}
	if (!s->addr) {
		s->kind = EMPTY;
		return;
	}
	s->seed = seed;
	fill(s->addr, s->len, seed);
}

/* Change a mapping in place: madvise, mmap(MAP_FIXED) over, or mremap elsewhere. */
static void slot_change(struct slot *s, uint64_t x, uint32_t seed)
{
	if (s->kind != MMAP)
		return;
	switch ((x >> 8) % 4) {
	case 0:
		mark_changed((uintptr_t)s->addr, s->len);
		madvise(s->addr, s->len, MADV_DONTNEED);
		break;
	case 1:
		mark_changed((uintptr_t)s->addr, s->len);
		madvise(s->addr, s->len, MADV_FREE);
		break;
	case 2:
		mark_changed((uintptr_t)s->addr, s->len);
		if (mmap(s->addr, s->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
			errors_seen++;
		break;
	default: {
		/* Move it for real (a same-size mremap without MREMAP_FIXED stays put). */
		uint8_t *dest = mmap(NULL, s->len, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
			*to;
		if (dest == MAP_FAILED)
			return;
		mark_changed((uintptr_t)dest, s->len);
		to = mremap(s->addr, s->len, s->len, MREMAP_MAYMOVE | MREMAP_FIXED, dest);
		if (to != dest) {
			/*
			 * EFAULT: a cached part of the mapping is watched, which splits
			 * it into several mappings, and mremap refuses to move those;
			 * a newer kernel may have moved some of them before it refused.
			 * Where the bytes are is unknown: give both ranges up.
			 */
			if (errno != EFAULT)
				errors_seen++;
			mremap_refused++;
			mark_changed((uintptr_t)s->addr, s->len);
			munmap(dest, s->len);
			munmap(s->addr, s->len);
			s->kind = EMPTY;
			return;
		}
		mark_changed((uintptr_t)s->addr, s->len);
		s->addr = to;
		break;
	}
	}
	s->seed = seed;
	fill(s->addr, s->len, seed);
}

static void slot_rdma(struct sp_rcache *c, struct slot *s, uint64_t x)
{
	size_t off = (x >> 8) % s->len, len = 1 + (x >> 24) % (s->len - off);
	uint8_t *addr = s->addr + off;
	struct sp_rcache_stats st;
	uint64_t misses_before;
	struct sp_region *r;
	int ret;

	sp_rcache_get_stats(c, &st);
	misses_before = st.misses;
	ret = sp_rcache_get(c, addr, len, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_READ, &r);
	if (ret) {
		errors_seen++;
		return;
	}
	const struct vb_mr *mr = sp_watched_mr(r);
	struct regrec *rec = reg_slot(mr);
	uintptr_t first = (uintptr_t)addr & ~(uintptr_t)(PG - 1);
	sp_rcache_get_stats(c, &st);
	if (st.misses != misses_before || rec->mr != mr || rec->start != sp_region_start(r)) {
		/* A new registration: remember when, and the frames it saw. */
		rec->mr = mr;
		rec->epoch = epoch;
		rec->start = sp_region_start(r);
		rec->end = sp_region_end(r);
		for (uintptr_t p = rec->start, i = 0; p < rec->end && i < MAX_LEN / PG + 2;
		     p += PG, i++)
			rec->pfn[i] = pfn_of(p);
	} else {
		for (uintptr_t p = first; p < (uintptr_t)addr + len; p += PG) {
			if (changed_at(p) > rec->epoch)
				stale_exact++;
			size_t i = (p - rec->start) / PG;
			if (i < MAX_LEN / PG + 2 && rec->pfn[i] && pfn_of(p) != rec->pfn[i])
				stale_pfn++;
		}
	}
	if (rdma_read(mr, addr, len))
		errors_seen++;
	else
		for (size_t i = 0; i < len; i++)
			if (rbuf[i] != pattern_byte(off + i, s->seed)) {
				bad_bytes++;
				break;
			}
	sp_rcache_put(c, r);
}

int main(int argc, char **argv)
{
	long ops = argc > 1 ? atol(argv[1]) : 1000000;
	double seconds = argc > 2 ? atof(argv[2]) : 120;
	struct sp_rcache_config cfg;
	struct kp_client *kp;
	struct sp_watched *w;
	uint64_t seed = 0x12345678abcdefull;
	time_t t0 = time(NULL);
	long done = 0;
	int ret;

	tap_plan(2);
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap_fd >= 0 && !pfn_of((uintptr_t)&seed & ~(uintptr_t)(PG - 1))) {
		close(pagemap_fd); /* not root: frames read as 0 */
		pagemap_fd = -1;
	}
	regs = calloc(1 << REG_BITS, sizeof(*regs));
	ret = pair_up();
	kp = kp_client_open();
	if (ret || !kp || !regs) {
		tap_result(0, "setup: %s", strerror(ret ? ret : errno));
		tap_skip("frame oracle", "setup failed");
		return 1;
	}
	sp_rcache_config_init(&cfg);
	cfg.max_regions = 256; /* evictions too */
	w = sp_watched_create(&cfg, pd_a, kp);
	if (!w) {
		tap_result(0, "watched cache: %s", strerror(errno));
		tap_skip("frame oracle", "setup failed");
		return 1;
	}
	struct sp_rcache *c = sp_watched_cache(w);

	for (; done < ops && difftime(time(NULL), t0) < seconds; done++) {
		uint64_t x = rnd(&seed);
		struct slot *s = &slots[x % SLOTS];

		switch ((x >> 4) % 8) {
		case 0:
			slot_free(s);
			break;
		case 1:
			if (s->kind == EMPTY)
				slot_alloc(s, rnd(&seed), (uint32_t)done);
			break;
		case 2:
			slot_change(s, rnd(&seed), (uint32_t)done);
			break;
		default:
			if (s->kind != EMPTY)
				slot_rdma(c, s, rnd(&seed));
			break;
		}
	}
	for (int i = 0; i < SLOTS; i++)
		slot_free(&slots[i]);

	struct sp_rcache_stats st;
	sp_rcache_collect(c);
	sp_rcache_get_stats(c, &st);
	tap_result(!stale_exact && !bad_bytes && !errors_seen && done >= ops,
		   "%ld of %ld operations in %.0f s: %lu hits, %lu misses, %lu invalidated, "
		   "%lu evictions, %ld mremaps refused (watched part); stale hits %ld, "
		   "wrong bytes %ld, errors %ld",
		   done, ops, difftime(time(NULL), t0), (unsigned long)st.hits,
		   (unsigned long)st.misses, (unsigned long)st.invalidated,
		   (unsigned long)st.evictions, mremap_refused, stale_exact, bad_bytes,
		   errors_seen);
	if (pagemap_fd < 0)
		tap_skip("frame oracle for malloc'd memory",
			 "/proc/self/pagemap shows no frames (not root)");
	else
		tap_result(!stale_pfn, "frame oracle (malloc'd memory included): %ld stale hits",
			   stale_pfn);
	ret = sp_watched_destroy(w);
	kp_client_close(kp);
	return ret ? 1 : tap_exit();
}
