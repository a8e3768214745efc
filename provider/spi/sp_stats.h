/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The provider's counters at run time (internal).
 *
 * What the data path counts, it counts in its socket: relaxed atomic adds
 * on the socket's own counters, no lock and nothing shared with another
 * socket.  A query sums every socket that exists, plus the totals of the
 * sockets freed so far, plus every socket's registration cache; a socket
 * adds its counters to the totals when it is freed, and its cache's when
 * the cache is detached, both under the statistics lock the query holds:
 * nothing is counted twice or missed.  The rarer events (sockets,
 * connections, cache callbacks) are counted provider-wide.
 *
 * SANPROV_STATS_SIGNAL=<signal number> installs a handler that only sets
 * a flag and wakes the progress thread; the progress thread then writes
 * the dump (sp_stats_poll_dump(), once a loop) to stderr or, with
 * SANPROV_STATS_FILE=<path>, appends it to that file, which also gets a
 * dump at the last WSPCleanup.
 */
#ifndef SANPROV_SP_STATS_H
#define SANPROV_SP_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sp_spi.h"

/* A socket's counters: each is the sp_stats field of the same name, in the same order. */
enum sp_sock_counter {
	SP_SC_POSTED, /* + the operation's kind: ops_posted[] */
	SP_SC_COMPLETED = SP_SC_POSTED + SP_STATS_KINDS,
	SP_SC_FAILED = SP_SC_COMPLETED + SP_STATS_KINDS,
	SP_SC_ABORTED = SP_SC_FAILED + SP_STATS_KINDS,
	SP_SC_BYTES = SP_SC_ABORTED + SP_STATS_KINDS,
	SP_SC_REFUSED = SP_SC_BYTES + SP_STATS_KINDS,
	SP_SC_BY_PROGRESS,
	SP_SC_BY_CALLER,
	SP_SC_UPCALLS,
	SP_SC_MEM_REG,
	SP_SC_MEM_REUSE,
	SP_SC_MEM_REG_ERR,
	SP_SC_MEM_DEREG,
	SP_SC_MEM_DEREG_ERR,
	SP_SC_MEMH_FREED,
	SP_SC_RDMA_REG,
	SP_SC_RDMA_PROBE,
	SP_SC_RDMA_REG_ERR,
	SP_SC_RDMA_DEREG,
	SP_SC_RDMA_DEREG_ERR,
	SP_SC_RDMA_FREED,
	SP_SC_COUNT
};

/* The provider-wide ones, likewise from sockets_opened to dumps. */
enum sp_prov_counter {
	SP_PC_SOCKETS_OPENED,
	SP_PC_SOCKETS_CLOSED,
	SP_PC_CONNECTS,
	SP_PC_CONNECTS_OK,
	SP_PC_CONNECT_ERRORS,
	SP_PC_ACCEPTS,
	SP_PC_ACCEPT_REJECTED,
	SP_PC_ACCEPT_DEFERRED,
	SP_PC_ACCEPT_FOREIGN,
	SP_PC_ACCEPT_ERRORS,
	SP_PC_CACHE_CALLBACKS,
	SP_PC_PROGRESS_LOOPS,
	SP_PC_DUMPS,
	SP_PC_COUNT
};

/* In struct sp_sock; linked into the list of every socket from allocation to free. */
struct sp_sock_stats {
	struct sp_sock_stats *prev, *next; /* under the statistics lock */
	_Atomic uint64_t c[SP_SC_COUNT];
};

struct sp_watched;

void sp_stats_sock_init(struct sp_sock_stats *s);
/* The socket is freed: its counts go to the totals. */
void sp_stats_sock_fini(struct sp_sock_stats *s);

/*
 * Around detaching the provider's cache, so that a query sees it in the
 * provider or in the totals: lock, detach, retire it, unlock.  A retired cache is counted as
 * destroyed (all its regions deregistered); it must not be used but to destroy it.
 */
void sp_stats_lock(void);
void sp_stats_unlock(void);
void sp_stats_retire_cache(struct sp_watched *cache);

static inline void sp_stats_add(struct sp_sock_stats *s, enum sp_sock_counter i, uint64_t n)
{
	atomic_fetch_add_explicit(&s->c[i], n, memory_order_relaxed);
}

static inline void sp_stats_inc(struct sp_sock_stats *s, enum sp_sock_counter i)
{
	sp_stats_add(s, i, 1);
}

void sp_stats_count(enum sp_prov_counter i);

/* sp_op_end(): posted, or refused with ret (socket lock held). */
static inline void sp_stats_op_end(struct sp_sock_stats *s, unsigned int kind, int ret)
{
	sp_stats_inc(s, ret ? SP_SC_REFUSED : (enum sp_sock_counter)(SP_SC_POSTED + kind));
}

bool sp_progress_is_self(void);

/* sp_op_complete(): an operation of kind ends with a WSA error (0: done) and bytes. */
static inline void sp_stats_op_done(struct sp_sock_stats *s, unsigned int kind, int wsa_error,
				    uint32_t bytes, bool upcall)
{
	if (!wsa_error) {
		sp_stats_inc(s, (enum sp_sock_counter)(SP_SC_COMPLETED + kind));
		sp_stats_add(s, (enum sp_sock_counter)(SP_SC_BYTES + kind), bytes);
	} else {
		unsigned int base =
		    wsa_error == SP_WSA_OPERATION_ABORTED ? SP_SC_ABORTED : SP_SC_FAILED;

		sp_stats_inc(s, (enum sp_sock_counter)(base + kind));
	}
	sp_stats_inc(s, sp_progress_is_self() ? SP_SC_BY_PROGRESS : SP_SC_BY_CALLER);
	if (upcall)
		sp_stats_inc(s, SP_SC_UPCALLS);
}

/* Sum everything into *out (sizeof(*out) filled). */
void sp_stats_collect(struct sp_stats *out);
/* The extension function (sp_stats_query_fn). */
int sp_stats_query(struct sp_stats *out, uint32_t *len, int *err);

/*
 * At startup (the progress thread runs, woken by wake): zero the counters,
 * read the environment, install the signal handler.  At the last cleanup,
 * before the progress thread stops: restore the signal's handler, dump to
 * SANPROV_STATS_FILE.
 */
void sp_stats_start(vb_waitable wake);
void sp_stats_stop(void);
/* In a child of fork(): the parent's sockets and its wake object are not counted here. */
void sp_stats_fork_child(void);

/* A dump was asked for (the flag the signal handler sets). */
extern atomic_bool sp_stats_dump_asked;
void sp_stats_dump_now(void);

/* The progress thread, once a loop: counts the loop and writes a dump if one was asked for. */
static inline void sp_stats_poll_dump(void)
{
	extern _Atomic uint64_t sp_stats_loops;

	/* Only this thread writes it: no locked add. */
	atomic_store_explicit(&sp_stats_loops,
			      atomic_load_explicit(&sp_stats_loops, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	if (atomic_load_explicit(&sp_stats_dump_asked, memory_order_relaxed))
		sp_stats_dump_now();
}

/*
 * provider/<os>/sp_stats_os.c: call fn (async-signal-safe) from the
 * handler of signal signo; 0 or errno (ENOTSUP where there are no
 * signals).  Restore puts the previous handler back.
 */
int sp_os_stats_signal_install(int signo, void (*fn)(void));
void sp_os_stats_signal_restore(void);
long sp_os_stats_pid(void);

#endif
