/* SPDX-License-Identifier: BSD-2-Clause */
/* The provider's counters: the query, the totals, the on-demand dump. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_internal.h"
#include "sp_os.h"

/* The socket counters are sp_stats' fields from ops_posted on, one for one. */
#define SC_FIRST offsetof(struct sp_stats, ops_posted)
_Static_assert(offsetof(struct sp_stats, ops_completed) ==
		   SC_FIRST + SP_SC_COMPLETED * sizeof(uint64_t),
	       "socket counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, bytes_completed) ==
		   SC_FIRST + SP_SC_BYTES * sizeof(uint64_t),
	       "socket counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, ops_refused) ==
		   SC_FIRST + SP_SC_REFUSED * sizeof(uint64_t),
	       "socket counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, mem_registrations) ==
		   SC_FIRST + SP_SC_MEM_REG * sizeof(uint64_t),
	       "socket counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, rdma_registrations) ==
		   SC_FIRST + SP_SC_RDMA_REG * sizeof(uint64_t),
	       "socket counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, rdma_regions_freed) ==
		   SC_FIRST + (SP_SC_COUNT - 1) * sizeof(uint64_t),
	       "socket counters in sp_stats' order");
/* The provider's own from sockets_opened on. */
#define PC_FIRST offsetof(struct sp_stats, sockets_opened)
_Static_assert(offsetof(struct sp_stats, accepts) == PC_FIRST + SP_PC_ACCEPTS * sizeof(uint64_t),
	       "provider counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, dumps) == PC_FIRST + SP_PC_DUMPS * sizeof(uint64_t),
	       "provider counters in sp_stats' order");
_Static_assert(offsetof(struct sp_stats, ops_posted) == PC_FIRST + SP_PC_COUNT * sizeof(uint64_t),
	       "provider counters in sp_stats' order");

/* Every field after the header, for the dump (docs/spi-stats.md describes them). */
static const char *const names[] = {
	"sockets_opened",
	"sockets_closed",
	"connects",
	"connects_ok",
	"connect_errors",
	"accepts",
	"accept_rejected",
	"accept_deferred",
	"accept_foreign",
	"accept_errors",
	"cache_callbacks",
	"progress_loops",
	"dumps",
#define KINDS(n) n ".send", n ".recv", n ".rdma_write", n ".rdma_read"
	KINDS("ops_posted"),
	KINDS("ops_completed"),
	KINDS("ops_failed"),
	KINDS("ops_aborted"),
	KINDS("bytes_completed"),
#undef KINDS
	"ops_refused",
	"delivered_by_progress",
	"delivered_by_caller",
	"upcalls",
	"mem_registrations",
	"mem_reuses",
	"mem_register_errors",
	"mem_deregistrations",
	"mem_deregister_errors",
	"mem_handles_freed",
	"rdma_registrations",
	"rdma_size_probes",
	"rdma_register_errors",
	"rdma_deregistrations",
	"rdma_deregister_errors",
	"rdma_regions_freed",
	"sockets_open",
	"ops_outstanding",
	"mem_handles",
	"rdma_regions",
	"rcache_hits",
	"rcache_misses",
	"rcache_merges",
	"rcache_unmerged_retries",
	"rcache_evictions",
	"rcache_invalidations",
	"rcache_invalidated",
	"rcache_registrations",
	"rcache_registration_errors",
	"rcache_deregistrations",
	"rcache_no_buffers",
	"rcache_uncached",
	"rcache_regions",
	"rcache_cached_regions",
	"rcache_bytes_pinned",
	"rdma_revoked",
	"rcache_dereg_failures",
	"rcache_dereg_pending",
};
_Static_assert(sizeof(names) / sizeof(names[0]) ==
		   (sizeof(struct sp_stats) - offsetof(struct sp_stats, sockets_opened)) /
		       sizeof(uint64_t),
	       "a name for every field");

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
/* Every socket not yet freed (under stats_lock). */
static struct sp_sock_stats *socks;
/* Freed sockets' counters, retired caches' (under stats_lock). */
static uint64_t sock_totals[SP_SC_COUNT];
static struct sp_rcache_stats cache_totals;
static _Atomic uint64_t prov_counters[SP_PC_COUNT];
_Atomic uint64_t sp_stats_loops;
atomic_bool sp_stats_dump_asked;

/* The dump's settings and the signal handler's way to the progress thread. */
static char *dump_file;
static bool signal_installed;
static struct timespec started_at;
static vb_waitable wake;
static atomic_bool wake_ok;
static atomic_uint in_handler;

void sp_stats_count(enum sp_prov_counter i)
{
	atomic_fetch_add_explicit(&prov_counters[i], 1, memory_order_relaxed);
}

void sp_stats_lock(void)
{
	pthread_mutex_lock(&stats_lock);
}

void sp_stats_unlock(void)
{
	pthread_mutex_unlock(&stats_lock);
}

void sp_stats_sock_init(struct sp_sock_stats *s)
{
	for (int i = 0; i < SP_SC_COUNT; i++)
		atomic_init(&s->c[i], 0);
	pthread_mutex_lock(&stats_lock);
	s->prev = NULL;
	s->next = socks;
	if (socks)
		socks->prev = s;
	socks = s;
	pthread_mutex_unlock(&stats_lock);
}

void sp_stats_sock_fini(struct sp_sock_stats *s)
{
	pthread_mutex_lock(&stats_lock);
	for (int i = 0; i < SP_SC_COUNT; i++)
		sock_totals[i] += atomic_load_explicit(&s->c[i], memory_order_relaxed);
	if (s->prev)
		s->prev->next = s->next;
	else
		socks = s->next;
	if (s->next)
		s->next->prev = s->prev;
	pthread_mutex_unlock(&stats_lock);
}

static void cache_add(struct sp_rcache_stats *t, const struct sp_rcache_stats *s)
{
	t->hits += s->hits;
	t->misses += s->misses;
	t->merges += s->merges;
	t->unmerged_retries += s->unmerged_retries;
	t->evictions += s->evictions;
	t->invalidations += s->invalidations;
	t->invalidated += s->invalidated;
	t->registrations += s->registrations;
	t->registration_errors += s->registration_errors;
	t->deregistrations += s->deregistrations;
	t->no_buffers += s->no_buffers;
	t->uncached += s->uncached;
	t->regions += s->regions;
	t->cached_regions += s->cached_regions;
	t->bytes_pinned += s->bytes_pinned;
}

void sp_stats_retire_cache(struct sp_watched *cache)
{
	struct sp_rcache_stats s;

	if (!cache)
		return;
	sp_rcache_get_stats(sp_watched_cache(cache), &s);
	/* Its destruction deregisters what is left: counted here, as it is never seen again. */
	s.deregistrations = s.registrations;
	s.regions = s.cached_regions = s.bytes_pinned = 0;
	cache_add(&cache_totals, &s);
}

void sp_stats_collect(struct sp_stats *out)
{
	uint64_t *sc = (uint64_t *)(void *)((char *)out + SC_FIRST);
	uint64_t *pc = (uint64_t *)(void *)((char *)out + PC_FIRST);
	struct sp_rcache_stats cs;

	memset(out, 0, sizeof(*out));
	out->version = SP_STATS_VERSION;
	out->size = sizeof(*out);
	for (int i = 0; i < SP_PC_COUNT; i++)
		pc[i] = atomic_load_explicit(&prov_counters[i], memory_order_relaxed);
	out->progress_loops = atomic_load_explicit(&sp_stats_loops, memory_order_relaxed);
	pthread_mutex_lock(&stats_lock);
	memcpy(sc, sock_totals, sizeof(sock_totals));
	cs = cache_totals;
	for (struct sp_sock_stats *s = socks; s; s = s->next)
		for (int i = 0; i < SP_SC_COUNT; i++)
			sc[i] += atomic_load_explicit(&s->c[i], memory_order_relaxed);
	/* The shared cache: detached under stats_lock, then destroyed; here it is whole. */
	if (sp_prov.cache) {
		struct sp_rcache_stats one;
		struct sp_watched_stats ws;

		sp_rcache_get_stats(sp_watched_cache(sp_prov.cache), &one);
		cache_add(&cs, &one);
		sp_watched_get_stats(sp_prov.cache, &ws);
		out->rcache_dereg_failures = ws.dereg_failures;
		out->rcache_dereg_pending = ws.dereg_pending;
	}
	pthread_mutex_unlock(&stats_lock);

	out->sockets_open = out->sockets_opened - out->sockets_closed;
	for (int k = 0; k < SP_STATS_KINDS; k++)
		out->ops_outstanding += out->ops_posted[k] - out->ops_completed[k] -
					out->ops_failed[k] - out->ops_aborted[k];
	out->mem_handles = out->mem_registrations - out->mem_reuses - out->mem_handles_freed;
	out->rdma_regions = out->rdma_registrations - out->rdma_regions_freed;
	out->rcache_hits = cs.hits;
	out->rcache_misses = cs.misses;
	out->rcache_merges = cs.merges;
	out->rcache_unmerged_retries = cs.unmerged_retries;
	out->rcache_evictions = cs.evictions;
	out->rcache_invalidations = cs.invalidations;
	out->rcache_invalidated = cs.invalidated;
	out->rcache_registrations = cs.registrations;
	out->rcache_registration_errors = cs.registration_errors;
	out->rcache_deregistrations = cs.deregistrations;
	out->rcache_no_buffers = cs.no_buffers;
	out->rcache_uncached = cs.uncached;
	out->rcache_regions = cs.regions;
	out->rcache_cached_regions = cs.cached_regions;
	out->rcache_bytes_pinned = cs.bytes_pinned;
	out->rdma_revoked = sp_rdma_revoked();
}

int sp_stats_query(struct sp_stats *out, uint32_t *len, int *err)
{
	struct sp_stats s;

	if (!err)
		return SP_SOCKET_ERROR;
	if (!len)
		return sp_fail(err, SP_WSAEFAULT);
	/* The caller's size probe: too small, here is what it takes. */
	if (!out || *len < sizeof(s)) {
		*len = sizeof(s);
		return sp_fail(err, SP_WSAEFAULT);
	}
	if (!atomic_load(&sp_prov.startups))
		return sp_fail(err, SP_WSANOTINITIALISED);
	if (sp_forked())
		return sp_fail(err, SP_WSAENETDOWN);
	sp_stats_collect(&s);
	memcpy(out, &s, sizeof(s));
	*len = sizeof(s);
	return 0;
}

/* The dump -------------------------------------------------------------------- */

static void dump(FILE *f, const char *why)
{
	struct sp_stats s;
	const uint64_t *v;
	struct timespec now;

	sp_stats_count(SP_PC_DUMPS);
	sp_stats_collect(&s);
	v = (const uint64_t *)(const void *)((const char *)&s + PC_FIRST);
	clock_gettime(CLOCK_MONOTONIC, &now);
	fprintf(f, "sanprov stats: pid %ld, %s, %.3f s after startup, version %u\n",
		sp_os_stats_pid(), why,
		(double)(now.tv_sec - started_at.tv_sec) +
		    (double)(now.tv_nsec - started_at.tv_nsec) / 1e9,
		s.version);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		fprintf(f, "  %-28s %" PRIu64 "\n", names[i], v[i]);
	fprintf(f, "sanprov stats: end\n");
	fflush(f);
}

/* To SANPROV_STATS_FILE (appended), else stderr. */
static void dump_to_target(const char *why, bool file_only)
{
	FILE *f;

	if (!dump_file) {
		if (!file_only)
			dump(stderr, why);
		return;
	}
	f = fopen(dump_file, "a");
	if (!f) {
		fprintf(stderr, "sanprov: SANPROV_STATS_FILE=%s: %s\n", dump_file, strerror(errno));
		return;
	}
	dump(f, why);
	fclose(f);
}

void sp_stats_dump_now(void)
{
	/* Cleared first: a signal during the dump asks for another. */
	atomic_store(&sp_stats_dump_asked, false);
	dump_to_target("on request", false);
}

/* The signal handler's part: async-signal-safe (a flag, and a write to an eventfd or event). */
static void asked(void)
{
	atomic_store(&sp_stats_dump_asked, true);
	atomic_fetch_add(&in_handler, 1);
	if (atomic_load(&wake_ok))
		sp_os_wake(wake);
	atomic_fetch_sub(&in_handler, 1);
}

void sp_stats_start(vb_waitable w)
{
	const char *sig = getenv("SANPROV_STATS_SIGNAL");
	const char *file = getenv("SANPROV_STATS_FILE");
	char *end;
	long n;
	int ret;

	pthread_mutex_lock(&stats_lock);
	memset(sock_totals, 0, sizeof(sock_totals));
	memset(&cache_totals, 0, sizeof(cache_totals));
	pthread_mutex_unlock(&stats_lock);
	for (int i = 0; i < SP_PC_COUNT; i++)
		atomic_store(&prov_counters[i], 0);
	atomic_store(&sp_stats_loops, 0);
	atomic_store(&sp_stats_dump_asked, false);
	clock_gettime(CLOCK_MONOTONIC, &started_at);
	free(dump_file);
	dump_file = file && *file ? strdup(file) : NULL;
	wake = w;
	atomic_store(&wake_ok, true);
	if (!sig || !*sig)
		return;
	errno = 0;
	n = strtol(sig, &end, 0);
	if (errno || *end || n <= 0 || n > 1024) {
		fprintf(stderr, "sanprov: ignoring SANPROV_STATS_SIGNAL=%s (a signal number)\n",
			sig);
		return;
	}
	ret = sp_os_stats_signal_install((int)n, asked);
	if (ret) {
		fprintf(stderr, "sanprov: SANPROV_STATS_SIGNAL=%s: %s\n", sig, strerror(ret));
		return;
	}
	signal_installed = true;
}

void sp_stats_fork_child(void)
{
	pthread_mutex_init(&stats_lock, NULL);
	socks = NULL;
	atomic_store(&wake_ok, false);
	atomic_store(&in_handler, 0);
}

void sp_stats_stop(void)
{
	if (signal_installed) {
		sp_os_stats_signal_restore();
		signal_installed = false;
	}
	/* The wake object closes next: no handler may be writing to it. */
	atomic_store(&wake_ok, false);
	while (atomic_load(&in_handler))
		sp_os_sleep_us(10);
	dump_to_target("at cleanup", true);
	free(dump_file);
	dump_file = NULL;
}
