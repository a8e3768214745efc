/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The provider's state, shared by the files of the SPI (internal).
 *
 * One device for the process, one completion queue for every connection's
 * QP (a progress thread completes the overlapped operations), sized for
 * the operations in flight rather than the connections: each operation
 * takes one entry when it is posted and gives it back once its completion
 * has left the CQ, so a connection costs no CQ entries while idle.  One
 * protection domain and one registration cache shared by every socket:
 * memory handles belong to their socket, the registrations behind them to
 * the process.  An rkey is a memory window bound to one connection's QP
 * (sp_rdma.c), so a descriptor sent to one peer is worth nothing to any
 * other although every QP shares the PD (docs/spi-memory.md).
 */
#ifndef SANPROV_SP_INTERNAL_H
#define SANPROV_SP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kp_client.h"
#include "sp_fork.h"
#include "sp_htab.h"
#include "sp_rcache.h"
#include "sp_spi.h"
#include "sp_stats.h"
#include "sp_watched_cache.h"
#include "vb.h"

/* Limits and defaults (environment: SANPROV_SPI_*; see sp_prov.c). */
struct sp_prov_config {
	uint32_t max_sockets;
	uint32_t queue_depth;	 /* send and receive WRs of a connection */
	uint32_t max_sge;	 /* buffers of one send, receive or RDMA */
	uint32_t rdma_threshold; /* SO_RDMA_THRESHOLD_SIZE default */
	uint32_t max_rdma;	 /* SO_MAX_RDMA_SIZE default and cap */
	uint32_t max_mem_handles;
	int connect_timeout_ms;
	uint32_t poll_us;    /* spin this long after activity before sleeping (0: never) */
	bool inline_upcalls; /* a polling caller makes its socket's up-calls (they never wait) */
	uint32_t cq_entries; /* the shared CQ: operations in flight at most, every socket's */
};

struct sp_prov {
	pthread_mutex_t lock; /* startups, the device and the table of sockets */
	/* Changed under lock; read without it by every call (a socket needs a started provider). */
	atomic_uint startups;
	unsigned int fork_gen; /* sp_fork_generation at startup: a child must not use it */
	/* Held by the cache callback, taken for writing by the last cleanup's teardown. */
	pthread_rwlock_t life;
	/*
	 * Completions go from the CQ to their socket's FIFO under cq_lock,
	 * which is held for polling only, never across an up-call.  Sockets
	 * with completions to deliver wait on the ready list (ready_lock) for
	 * the progress thread.
	 */
	pthread_mutex_t cq_lock;
	pthread_mutex_t ready_lock;
	struct sp_sock *ready_head, *ready_tail;
	atomic_bool tearing_down; /* the last cleanup runs: startups wait (changed under lock) */
	pthread_cond_t idle;	  /* broadcast when a teardown ends */
	vb_waitable wake;	  /* the progress thread sleeps on it and the CQ */
	/* When an application thread last polled the CQ (ns): the progress thread keeps off. */
	_Atomic uint64_t app_poll_ns;
	struct sp_upcalls up;
	struct sp_prov_config cfg;
	struct vb_device *dev;
	struct vb_cq *cq;
	struct vb_pd *pd;	     /* every QP's and every registration's */
	struct sp_watched *cache;    /* the registrations of every socket, watched by the proxy */
	_Atomic uint32_t cq_credits; /* CQEs not taken by an operation in flight */
	struct kp_client *proxy;
	struct sp_rcache_config cache_cfg;
	struct sp_htab sockets; /* socket contexts */
	struct sp_htab mem;	/* WSPRegisterMemory handles */
	struct sp_htab rdma;	/* WSPRegisterRdmaMemory registrations */
	/*
	 * Sockets with a QP, until what it completed is delivered: named by
	 * their wr_ids, with SP_CONN_GEN_BITS of generation.
	 */
	struct sp_htab conns;
	pthread_t progress;
	bool progress_running;
	atomic_bool stop;
};

extern struct sp_prov sp_prov;

enum sp_sock_state {
	SP_SOCK_NEW,
	SP_SOCK_BOUND,
	SP_SOCK_LISTENING,
	SP_SOCK_CONNECTING,
	SP_SOCK_CONNECTED,
	SP_SOCK_FAILED, /* the connection broke or connect failed */
	SP_SOCK_CLOSED,
};

struct sp_op;
struct sp_memh;
/* Bits of a socket's generation in sp_prov.conns that a wr_id keeps (sp_op.c). */
#define SP_CONN_GEN_BITS 10
/* Chunks of a socket's operation slab: the first made with the QP, the others if ever needed. */
#define SP_OP_MAX_CHUNKS 8
struct sp_rdma_reg;

struct sp_sock {
	atomic_uint refs;
	uint64_t ctx;	  /* handle in sp_prov.sockets: the switch's socket context */
	sp_socket handle; /* the switch's socket, for up-calls */
	uint32_t catalog_id;
	pthread_mutex_t lock;
	uint32_t accepters; /* WSPAccept calls using the listener */
	/*
	 * Completed operations, in the order the CQ gave them, not yet
	 * delivered (under lock).  One thread at a time delivers them
	 * (delivering, deliverer); it may re-enter from an up-call.
	 */
	struct sp_op *done_head, *done_tail;
	bool delivering;
	pthread_t deliverer;
	bool ready; /* on sp_prov's ready list (under ready_lock) */
	struct sp_sock *ready_next;
	pthread_cond_t cond;
	enum sp_sock_state state;
	int error; /* WSA error of a failed connect or a broken connection */
	struct sockaddr_storage local, peer;
	bool bound;
	struct vb_listener *listener;
	vb_waitable closed; /* listening: woken (sticky) when the socket closes */
	/* Requests the condition function deferred, oldest first (at most the backlog). */
	struct vb_conn_req **deferred;
	uint32_t n_deferred, max_deferred;
	struct vb_qp *qp;
	uint32_t sq_free; /* send queue slots not in use */
	uint32_t rq_free; /* receive queue slots not in use */
	pthread_t worker; /* connect, or watching the listener */
	bool worker_running;
	bool worker_stop;
	bool accept_ready; /* FD_ACCEPT signalled, accept() not called yet */
	bool connect_busy; /* a blocking connect runs in the caller's thread */
	bool closing;
	sp_event event;
	int32_t event_mask;
	int32_t events; /* recorded, not yet enumerated */
	int32_t event_errors[SP_FD_MAX_EVENTS];
	uint32_t rdma_threshold;
	uint32_t max_rdma;
	struct sp_op *ops, *ops_tail; /* outstanding overlapped operations, oldest first */
	/*
	 * The operations' slab (sp_op.c), made with the QP: chunks of
	 * op_chunk_size, a free list (under lock), and the socket's slot in
	 * sp_prov.conns, which every wr_id of its operations names.
	 */
	struct sp_op *op_chunks[SP_OP_MAX_CHUNKS];
	uint32_t op_chunk_size, n_op_chunks;
	uint32_t op_fresh; /* slots handed out at least once */
	struct sp_op *op_free;
	uint64_t conn;
	atomic_uint waiters; /* WSPGetOverlappedResult calls waiting on cond */
	/*
	 * Memory handles of this socket: a list, and a hash of (address,
	 * length, flags) for re-registrations (under lock; grows by doubling).
	 */
	struct sp_memh *memh;
	struct sp_memh **memh_hash;
	uint32_t memh_buckets, memh_count;
	struct sp_rdma_reg *rdma; /* RDMA registrations of this socket */
	struct sp_sock_stats stats;
};

/* In a child of the process that started the provider: nothing of it is usable here. */
static inline bool sp_forked(void)
{
	return atomic_load_explicit(&sp_fork_generation, memory_order_relaxed) != sp_prov.fork_gen;
}

/* sp_sock.c */
/* The socket of s with a reference, or NULL (*err = WSAENOTSOCK). */
struct sp_sock *sp_sock_get(sp_socket s, int *err);
void sp_sock_put(struct sp_sock *so);
void sp_sock_hold(void *obj);
/* Record network events and signal the socket's event (lock held). */
void sp_sock_signal(struct sp_sock *so, int32_t events, int bit, int error);
/* The connection broke: record it and tell the switch (FD_CLOSE; lock held). */
void sp_sock_broken(struct sp_sock *so, int error);
/* Close so as closesocket does (the caller holds a reference). */
int sp_sock_close(struct sp_sock *so);
/* so is closing and its QP is gone already. */
bool sp_sock_closed(struct sp_sock *so);
/* The calling thread runs a condition function of WSPAccept. */
bool sp_sock_in_condition(void);

/* sp_op.c: overlapped operations */
enum sp_op_kind { SP_OP_SEND, SP_OP_RECV, SP_OP_RDMA_WRITE, SP_OP_RDMA_READ };

#define SP_OP_MAX_SGE 8

enum sp_op_state {
	SP_OP_FREE,	/* in its socket's slab */
	SP_OP_STARTING, /* being posted (socket lock held) */
	SP_OP_POSTED,	/* in flight: whoever takes it out owns its completion */
	SP_OP_TAKEN,	/* in its socket's FIFO, or being completed */
};

struct sp_op {
	uint64_t handle; /* the WR's wr_id: the socket's slot, this op's slot and generation */
	uint32_t idx;	 /* in its socket's slab */
	uint16_t gen;	 /* moves on each time it goes back to the slab */
	uint8_t state;	 /* enum sp_op_state (under the socket's lock) */
	struct sp_op *next, *prev; /* in the socket's list */
	struct sp_sock *sock;
	enum sp_op_kind kind;
	struct sp_overlapped *ov;
	sp_completion_fn cr;
	uint32_t bytes;
	int done_error; /* the result, while it waits in its socket's FIFO */
	uint32_t done_bytes;
	struct sp_op *done_next;
	uint32_t n_memh;
	struct sp_memh *memh[SP_OP_MAX_SGE]; /* busy while the op runs */
};

/*
 * Start an operation of kind on so: lock the socket, check that it is
 * connected and has room, make the operation and resolve its buffers
 * (read by the NIC for a send or an RDMA write, written for a receive or an
 * RDMA read; op->bytes is their total).  0 or a WSA error; the socket's
 * lock is held on return either way, for sp_op_end().
 */
int sp_op_begin(struct sp_sock *so, enum sp_op_kind kind, struct sp_overlapped *ov,
		sp_completion_fn cr, const struct sp_wsabufex *bufs, uint32_t nbufs,
		struct vb_sge *sge, struct sp_op **op);
/*
 * End what sp_op_begin() started: ret 0 when the operation was posted
 * (the answer is WSA_IO_PENDING), else its WSA error (the operation, if
 * any, is cancelled).  Unlocks the socket and drops the caller's reference.
 */
int sp_op_end(struct sp_sock *so, struct sp_op *op, int ret, uint32_t *bytes, int *err);

/*
 * A new operation of so from its slab, linked into the socket (socket
 * lock held; the caller marks it posted once it is complete); NULL with
 * *err set.
 */
struct sp_op *sp_op_new(struct sp_sock *so, enum sp_op_kind kind, struct sp_overlapped *ov,
			sp_completion_fn cr, int *err);
/* Posting failed: unlink it and give it back, nothing reported (socket lock held). */
void sp_op_cancel(struct sp_op *op);
/*
 * Its completion arrived (or the socket closes): unlink it, report the
 * result to the switch and give it back to the slab.  Socket lock not held.
 */
void sp_op_complete(struct sp_op *op, int wsa_error, uint32_t bytes);
/*
 * Complete every outstanding operation of so, in the order posted: what
 * its QP completed with that result, the rest aborted (closing; the QP is
 * gone).  Runs their up-calls in the calling thread.
 */
void sp_op_abort_all(struct sp_sock *so);
/*
 * The same, unless another thread delivers so's FIFO (the closing thread,
 * which then aborts them itself): no wait for it.
 */
void sp_op_try_abort_all(struct sp_sock *so);
/*
 * The socket's operation slab and its slot in sp_prov.conns, when it gets
 * its QP (0 or errno); sp_op_slab_unpublish() once the QP is gone and what
 * it completed was delivered, sp_op_slab_free() when the socket is freed.
 */
int sp_op_slab_init(struct sp_sock *so, uint32_t send_depth, uint32_t recv_depth);
void sp_op_slab_unpublish(struct sp_sock *so);
void sp_op_slab_free(struct sp_sock *so);
/*
 * A work completion's socket, with a reference, or NULL when the wr_id
 * names no socket with a QP (left over from a closed one).  No lock.
 */
struct sp_sock *sp_op_wc_sock(uint64_t wr_id);
/*
 * Take the operation wr_id names out of so, when it is in flight: the
 * caller owns its completion.  NULL when it is not (aborted by the closing
 * socket, or a stale wr_id).  Socket lock held.
 */
struct sp_op *sp_op_take(struct sp_sock *so, uint64_t wr_id);

/* sp_progress.c */
int sp_progress_start(void);
void sp_progress_stop(void);
/*
 * Poll the CQ (unless another thread is polling it: never blocks) and
 * deliver so's completions in order from the calling thread: only those
 * without an up-call, unless it is the progress thread (which then also
 * delivers the ready sockets), or re-enters from its up-call on so (and
 * nothing unless no other thread delivers so's FIFO right now).
 */
void sp_progress_poll(struct sp_sock *so);
/* The extension function (sp_progress_fn). */
int sp_progress_app(int *err);
/*
 * Poll the CQ dry (so's QP is gone: whatever it completed is now in its
 * FIFO), then deliver so's FIFO in the calling thread, up-calls included.
 * Returns owning so's delivery (false when the calling thread already
 * delivers it, from an up-call); sp_progress_release() gives it back.
 */
bool sp_progress_own(struct sp_sock *so);
/*
 * The same, but without a wait when another thread delivers so's FIFO
 * (false then, nothing done; else true and *owned).
 */
bool sp_progress_try_own(struct sp_sock *so, bool wait, bool *owned);
void sp_progress_release(struct sp_sock *so, bool owned);
/* The calling thread runs a completion up-call (it must not tear the provider down). */
bool sp_progress_in_upcall(void);
void sp_progress_upcall_enter(void);
void sp_progress_upcall_leave(void);
/* The progress thread is the calling thread. */
bool sp_progress_is_self(void);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t sp_progress_now_ns(void);

/* sp_mem.c */
struct sp_memh {
	uint64_t handle;
	struct sp_memh *next, *prev; /* in the socket's list */
	struct sp_memh *hnext;	     /* in its hash bucket */
	struct sp_sock *sock;
	char *addr;
	uint32_t len;
	uint32_t flags; /* SP_MEM_* */
	struct sp_region *region;
	uint32_t lkey;
	uint32_t refs;	  /* registrations (under the socket's lock) */
	atomic_uint busy; /* operations using it */
};

/*
 * Resolve n WSABUFEX of so for an operation that reads (need SP_MEM_READ)
 * or writes (SP_MEM_WRITE) them: fills sge and marks the handles busy in
 * op.  0 or a WSA error.  (socket lock held)
 */
int sp_mem_resolve(struct sp_sock *so, const struct sp_wsabufex *bufs, uint32_t n, uint32_t need,
		   struct vb_sge *sge, struct sp_op *op, uint32_t *total);
void sp_mem_release_op(struct sp_op *op);
/* Drop every handle and RDMA registration of so (closing). */
void sp_mem_release_socket(struct sp_sock *so);

/* The rights a cached region needs for a buffer registered with SP_MEM_* flags. */
unsigned int sp_mem_access(uint32_t flags);
int sp_mem_region_get(void *buf, uint32_t len, uint32_t flags, struct sp_region **region);
int sp_mem_probe(const void *buf, uint32_t len, uint32_t flags);

/* The SPI's checks of a buffer to register: 0, WSAEINVAL (flags) or WSAEFAULT (range). */
int sp_mem_check_args(const void *buf, uint32_t len, uint32_t flags);

void *sp_register_memory(sp_socket s, void *buf, uint32_t len, uint32_t flags, int *err);
int sp_deregister_memory(sp_socket s, void *handle, int *err);
int sp_memory_registration_cache_callback(void *addr, size_t size, int *err);

/* sp_rdma.c */
int sp_register_rdma_memory(sp_socket s, void *buf, uint32_t len, uint32_t flags, void *desc,
			    uint32_t *desc_len, int *err);
int sp_deregister_rdma_memory(sp_socket s, void *desc, uint32_t desc_len, int *err);
int sp_rdma_write(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
		  uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes, uint32_t flags,
		  struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid,
		  int *err);
int sp_rdma_read(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
		 uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes, uint32_t flags,
		 struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err);
void sp_rdma_release_socket(struct sp_sock *so);
/* The cache's hook (sp_watched_set_changed): revoke the registrations over [start, end). */
void sp_rdma_memory_changed(void *arg, uintptr_t start, uintptr_t end);
/* Registrations revoked so far. */
uint64_t sp_rdma_revoked(void);

/* sp_wsaerr.c: connect's errors, and a failed work completion's. */
int sp_wsa_connect_error(int errnum);
int sp_wsa_wc_error(enum vb_wc_status status, bool closing);

/* The error convention of the SPI: store code in *err, return SP_SOCKET_ERROR. */
static inline int sp_fail(int *err, int code)
{
	*err = code;
	return SP_SOCKET_ERROR;
}

/* The functions behind sp_proc_table. */
void sp_spi_fill_procs(struct sp_proc_table *procs);

sp_socket sp_socket_open(int af, int type, int protocol, uint32_t catalog_id, uint32_t flags,
			 int *err);
int sp_bind(sp_socket s, const struct sockaddr *name, int namelen, int *err);
int sp_listen(sp_socket s, int backlog, int *err);
int sp_duplicate_socket(sp_socket s, uint32_t process_id, struct sp_protocol_info *info, int *err);
sp_socket sp_socket_from_info(const struct sp_protocol_info *info, uint32_t flags, int *err);
sp_socket sp_accept(sp_socket s, struct sockaddr *addr, int *addrlen, sp_condition_fn cond,
		    uintptr_t callback_data, int *err);
int sp_connect(sp_socket s, const struct sockaddr *name, int namelen, int *err);
int sp_event_select(sp_socket s, sp_event event, int32_t events, int *err);
int sp_enum_network_events(sp_socket s, sp_event event, struct sp_network_events *ne, int *err);
int sp_get_sock_name(sp_socket s, struct sockaddr *name, int *namelen, int *err);
int sp_get_sock_opt(sp_socket s, int level, int optname, char *optval, int *optlen, int *err);
int sp_set_sock_opt(sp_socket s, int level, int optname, const char *optval, int optlen, int *err);
int sp_ioctl(sp_socket s, uint32_t code, void *in, uint32_t in_len, void *out, uint32_t out_len,
	     uint32_t *bytes, struct sp_overlapped *ov, sp_completion_fn cr,
	     struct sp_thread_id *tid, int *err);
int sp_send(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes, uint32_t flags,
	    struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err);
int sp_recv(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes, uint32_t *flags,
	    struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err);
int sp_get_overlapped_result(sp_socket s, struct sp_overlapped *ov, uint32_t *bytes, int wait,
			     uint32_t *flags, int *err);
int sp_close_socket(sp_socket s, int *err);
int sp_cleanup(int *err);

#endif
