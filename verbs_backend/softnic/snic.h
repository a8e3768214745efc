/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic: the embedded emulated RDMA NIC (internal definitions).
 *
 * Every process that opens softnic owns a few shared-memory segments
 * (memfd) that it hands to its peers over the connection socket:
 *   - the device segment: the MR table, so a peer checks an rkey, its
 *     bounds, PD and rights exactly as a responder NIC would;
 *   - one segment per QP: its state, its receive queue, which the peer
 *     (the requester of sends) consumes, and the peer's reports of the
 *     receives it consumed, which this process checks against its own
 *     record of what it posted before it completes them;
 *   - one segment per CQ, which peers map read-only: only this process
 *     writes completions.
 * The requester executes each work request itself, in the posting thread:
 * RDMA write/read and send are one-sided for the responder, as on a NIC.
 * A progress thread per device only finishes what must wait (a send that
 * found no receive posted, the flush of a QP moved to the error state by
 * its peer, a peer that went away).
 *
 * Payload moves with one copy: memcpy within one process or into a peer
 * buffer that came from vb_buf_alloc() (a memfd the peer maps once through
 * pidfd_getfd), and cross-memory attach (process_vm_writev/readv) for any
 * other memory.
 *
 * Nothing read from a peer's segment is trusted beyond what the local
 * process itself risks: indexes are masked, counts bounded, offsets
 * checked against the sizes this process mapped.
 */
#ifndef SANPROV_SNIC_H
#define SANPROV_SNIC_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../vb_internal.h"
#include "snic_os.h"

#define SNIC_DEV_NAME "softnic0"
#define SNIC_MAX_SGE 32
#define SNIC_MAX_INLINE 256
#define SNIC_MAX_QP_WR 16384
#define SNIC_MAX_CQE (1u << 18)
#define SNIC_MAX_MSG_SZ (1u << 31)
#define SNIC_MAX_IMPORTS 16
/* A key's low bits are its slot (as many as max_mr needs), the rest a tag. */
#define SNIC_MAX_MR_LIMIT (1u << 24)
/* Pending connections a listener holds while they have not spoken. */
#define SNIC_MAX_PENDING 16
/* How long a connection may take to send its request. */
#define SNIC_HANDSHAKE_MS 10000

#define SNIC_DEV_MAGIC 0x3356454443494e53ull /* "SNICDEV3": windows bound to a QP */
#define SNIC_QP_MAGIC 0x3450514349494e53ull  /* "SNIICQP4": reports rung unless polled */
#define SNIC_CQ_MAGIC 0x3151434349494e53ull  /* "SNICCQ1" */

/* A shared segment (its handle: a memfd on Linux) and its mapping here. */
struct snic_shm {
	snic_handle fd;
	void *addr;
	size_t len;
};

/*
 * Shared: one MR table entry (64 bytes).  Peers map the table read-only:
 * their accesses in flight are announced in their own QP segments
 * (snic_qp_seg.held), which deregistration looks at.
 */
struct snic_mr_entry {
	_Atomic uint32_t key;  /* the valid key; 0 while free or changing */
	_Atomic uint32_t busy; /* local accesses in flight */
	uint32_t access;
	uint32_t pd;
	uint64_t addr; /* the owner's address of the first byte */
	uint64_t iova; /* the same byte's address in work requests */
	uint64_t length;
	int32_t buf_fd; /* fd of the vb_buf_alloc() memfd in the owner, or -1 */
	uint32_t qpn;	/* a memory window: the only QP it is valid on; 0: a region */
	uint64_t buf_ino;
	uint64_t buf_base; /* owner's address of the memfd's first byte */
	uint64_t buf_len;
};

struct snic_dev_seg {
	uint64_t magic;
	uint32_t max_mr;
	int32_t pid;
	uint64_t reserved[6];
	struct snic_mr_entry mr[];
};

/* Shared: one completion. */
struct snic_cqe {
	uint64_t wr_id;
	uint32_t status;
	uint32_t opcode;
	uint32_t vendor_err;
	uint32_t byte_len;
	uint32_t imm_data;
	uint32_t qp_num;
	uint32_t wc_flags;
	uint32_t sq_idx; /* send completions: index of the WQE, for SQ credit */
	uint64_t reserved;
};

struct snic_cq_seg {
	uint64_t magic;
	uint32_t size;
	uint32_t reserved;
	pthread_mutex_t prod_lock; /* robust, process-shared: producers only */
	alignas(64) _Atomic uint32_t tail;
	_Atomic uint32_t overflow;
	_Atomic uint32_t armed;
	alignas(64) _Atomic uint32_t head;
	alignas(64) struct snic_cqe ring[];
};

/* Shared: one receive WQE; sge[] has the QP's max_recv_sge entries. */
struct snic_rwqe {
	uint64_t wr_id;
	uint32_t num_sge;
	uint32_t reserved;
	struct vb_sge sge[];
};

/*
 * Shared: the peer's report that it consumed receive idx (posting order).
 * The owner takes wr_id and the buffers from its own copy of the receive,
 * and puts the QP in the error state on a report it did not expect.
 */
struct snic_inb {
	uint32_t idx;
	uint32_t status;
	uint32_t opcode; /* VB_WC_RECV or VB_WC_RECV_RDMA_WITH_IMM */
	uint32_t byte_len;
	uint32_t imm_data;
	uint32_t wc_flags;
};

struct snic_qp_seg {
	uint64_t magic;
	uint32_t qpn;
	uint32_t pd;
	uint32_t rq_size;
	uint32_t rq_max_sge;
	_Atomic uint32_t state;	     /* enum vb_qp_state, written by the owner */
	_Atomic uint32_t remote_err; /* set by the peer: the responder side failed */
	_Atomic uint32_t rnr_wait;   /* owner's send waits for the peer's receive */
	_Atomic uint32_t cq_notify;  /* owner's recv CQ is armed: the peer signals it */
	_Atomic uint32_t rung; /* the peer rang this QP; the owner's progress thread clears it */
	/*
	 * Written by the owner: its CQ's pollers look at this QP's reports,
	 * so the peer need not ring for them (snic_cq.c).
	 */
	_Atomic uint32_t polled;
	pthread_mutex_t rq_lock; /* robust, process-shared: RQ consumers */
	/* The owner's accesses in flight to its peer's MRs, by key (0: none). */
	_Atomic uint32_t held[SNIC_MAX_SGE];
	alignas(64) _Atomic uint32_t rq_head;
	alignas(64) _Atomic uint32_t rq_tail;
	alignas(64) _Atomic uint32_t inb_tail; /* reports written by the peer */
	_Atomic uint32_t inb_head;	       /* reports the owner took: a hint for the peer */
	/* rq_size receive WQEs, then rq_size reports (snic_inb_at()) */
	alignas(64) unsigned char rq[];
};

/* A peer buffer mapped here, found by its inode. */
struct snic_import {
	uint64_t ino;
	void *base;
	size_t len;
	uint64_t last_use;
};

struct snic_peer {
	pid_t pid;
	snic_handle pidfd; /* the peer process (pidfd on Linux), SNIC_NO_HANDLE: self */
	bool self;
	bool admitted; /* snic_peer_admit() succeeded: pid is known and trusted */
	bool gone;
	_Atomic bool broken; /* a lock of its segments was kept or corrupted: no more requests */
	struct snic_shm dev_shm;
	struct snic_dev_seg *dev_seg;
	uint32_t max_mr;
	struct snic_shm qp_shm;
	struct snic_qp_seg *qp_seg;
	uint32_t qpn;
	uint32_t pd;
	uint32_t rq_size;
	uint32_t rq_max_sge;
	size_t rwqe_size;
	struct snic_shm cq_shm;
	struct snic_cq_seg *cq_seg;
	uint32_t cq_size;
	snic_handle cq_evfd;
	snic_handle doorbell_fd;
	uint64_t import_clock;
	struct snic_import imports[SNIC_MAX_IMPORTS];
};

struct snic_buf {
	uintptr_t base;
	size_t len;
	snic_handle fd;
	uint64_t ino; /* snic_os_shm_id() */
};

struct snic_qp;

/*
 * A handle a peer process sent, kept once for all its connections: the
 * peer sends its doorbell and its CQ's event with every connection, and
 * its process handle comes with each; one copy each keeps a connection's
 * cost at its own socket (snic_dev_share()).
 */
struct snic_shared {
	snic_handle h;
	pid_t pid; /* a process handle: its process id; 0: an event */
	uint32_t refs;
};

struct snic_dev {
	struct vb_device vdev;
	pthread_mutex_t lock; /* objects, MR slots, buffers, QP list */
	struct snic_shm seg_shm;
	struct snic_dev_seg *seg;
	uint32_t max_mr;
	uint32_t max_qp;
	uint32_t max_cq;
	uint32_t *mr_free; /* FIFO of free slots: a slot is reused as late as possible */
	uint32_t mr_free_head, mr_free_count;
	uint32_t *mr_gen;	/* per slot: registrations so far, from a random start */
	uint32_t key_secret[4]; /* the key tags' permutation (snic_mr.c) */
	uint32_t n_pd, n_mr, n_cq, n_qp, n_lst;
	uint32_t n_req; /* connect requests taken, not yet answered */
	uint32_t next_pd;
	uint32_t next_qpn;
	struct snic_qp **qp_table; /* by qpn & (max_qp - 1) */
	/*
	 * SQ credit by QP slot: qpn << 32 | completions polled.  It outlives
	 * the QP, so a poller never writes into a destroyed one.
	 */
	_Atomic uint64_t *sq_credit;
	struct snic_qp *qp_list;
	struct snic_buf *bufs;
	uint32_t n_bufs, cap_bufs;
	struct snic_shared *shared; /* under lock */
	uint32_t n_shared, cap_shared;
	unsigned int dereg_timeout_ms;
	snic_handle doorbell_fd;
	struct snic_os_watch *watch;
	/*
	 * QPs this process rang for itself (by number), for the progress
	 * thread: it services those and the QPs whose peers rang their
	 * connection sockets, never every QP.
	 */
	pthread_mutex_t svc_lock;
	uint32_t *svc;
	uint32_t n_svc, cap_svc;
	_Atomic uint64_t n_rings;      /* progress thread wake-ups for QPs */
	_Atomic uint64_t n_serviced;   /* QPs it looked at for them */
	_Atomic uint64_t n_hold_looks; /* QPs whose peer's accesses a key's end looked at */
	pthread_t progress;
	_Atomic bool stop;
};

struct snic_pd {
	struct vb_pd vpd;
	_Atomic uint32_t refs; /* MRs and QPs */
};

struct snic_mr {
	struct vb_mr vmr;
	uint32_t slot;
	_Atomic uint32_t windows; /* memory windows bound to it: dereg refuses (EBUSY) */
};

/* A memory window of type 2: a slot of the MR table, valid on one QP once bound. */
struct snic_mw {
	struct vb_mw vmw;
	uint32_t slot;
	struct snic_mr *mr; /* bound to, or NULL */
	/* The QP it is bound to, in its list (dev->lock): destroying the QP kills the key. */
	struct snic_qp *qp;
	struct snic_mw *qp_next, *qp_prev;
};

struct snic_cq {
	struct vb_cq vcq;
	struct snic_shm shm;
	struct snic_cq_seg *seg;
	uint32_t size;
	pthread_mutex_t cons_lock; /* local consumers; the reports of the polled QPs */
	/*
	 * The QPs whose reports a poll takes in (at most max_polled, the
	 * latest to have had reports): the others' peers ring their reports
	 * to the progress thread, so a poll costs what has work, not every QP.
	 */
	struct snic_qp **polled;
	uint32_t n_polled, max_polled;
	_Atomic uint64_t n_polls;    /* snic_poll_cq() calls */
	_Atomic uint64_t n_examined; /* QPs those polls looked at for reports */
	_Atomic uint32_t refs;	     /* QPs */
	_Atomic bool dead;	     /* a peer kept or corrupted the producers' lock */
};

/* Private: one send WQE; sge[] then inline data follow. */
struct snic_swqe {
	uint64_t wr_id;
	uint64_t remote_addr;
	uint32_t rkey;
	uint32_t imm_data;
	uint32_t opcode;
	uint32_t flags;
	uint32_t num_sge;
	uint32_t inline_len;
	struct vb_sge sge[];
};

/* Private: what was posted to a receive, the only source of its completion. */
struct snic_rpriv {
	uint64_t wr_id;
	uint64_t len; /* room in its buffers */
};

struct snic_qp {
	struct vb_qp vqp;
	struct snic_dev *dev;
	struct snic_qp *next, *prev; /* dev->qp_list */
	pthread_mutex_t lock;
	enum vb_qp_state state;
	bool sq_sig_all;
	struct snic_shm shm;
	struct snic_qp_seg *seg;
	/* send queue (private) */
	unsigned char *sq;
	size_t swqe_size;
	uint32_t sq_size, sq_mask;
	uint32_t sq_tail; /* posted */
	uint32_t sq_head; /* executed */
	/* receive queue (shared segment) */
	uint32_t rq_size, rq_mask;
	uint32_t rq_tail;	    /* posted: the shared copy is the peer's to read, not ours */
	_Atomic uint32_t rq_posted; /* rq_tail, for the recv CQ's poller */
	/* Under the recv CQ's cons_lock: */
	struct snic_rpriv *rpriv;
	_Atomic uint32_t rq_done; /* receives completed (reported or flushed) */
	uint32_t inb_head;	  /* reports taken */
	bool rq_flushed;	  /* later reports are ignored */
	bool polled;		  /* in its recv CQ's polled[polled_idx] */
	uint32_t polled_idx;
	uint64_t polled_ms; /* when it last had reports there */
	/* A report was wrong or its completion overflowed: the progress thread fails the QP. */
	_Atomic bool inb_err;
	size_t rwqe_size;
	/* connection */
	snic_handle sock;
	_Atomic bool connected;	 /* set once; the progress thread skips QPs not yet connected */
	_Atomic bool svc_queued; /* in dev->svc */
	struct snic_peer peer;
	struct snic_mw *mws; /* windows bound to it (dev->lock) */
};

static inline struct snic_dev *snic_dev_of(struct vb_device *d)
{
	return vb_container_of(d, struct snic_dev, vdev);
}

static inline struct snic_pd *snic_pd_of(struct vb_pd *p)
{
	return vb_container_of(p, struct snic_pd, vpd);
}

static inline struct snic_cq *snic_cq_of(struct vb_cq *c)
{
	return vb_container_of(c, struct snic_cq, vcq);
}

static inline struct snic_qp *snic_qp_of(struct vb_qp *q)
{
	return vb_container_of(q, struct snic_qp, vqp);
}

static inline struct snic_mr *snic_mr_of(struct vb_mr *m)
{
	return vb_container_of(m, struct snic_mr, vmr);
}

static inline struct snic_rwqe *snic_rwqe_at(unsigned char *rq, size_t rwqe_size, uint32_t idx)
{
	return (struct snic_rwqe *)(rq + (size_t)idx * rwqe_size);
}

static inline struct snic_inb *snic_inb_at(unsigned char *rq, uint32_t rq_size, size_t rwqe_size,
					   uint32_t idx)
{
	return (struct snic_inb *)(rq + (size_t)rq_size * rwqe_size) + (idx & (rq_size - 1));
}

static inline size_t snic_rwqe_size(uint32_t max_sge)
{
	return sizeof(struct snic_rwqe) + (size_t)max_sge * sizeof(struct vb_sge);
}

static inline uint32_t snic_pow2(uint32_t v)
{
	uint32_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

/* snic_shm.c */
size_t snic_dev_seg_size(uint32_t max_mr);
size_t snic_qp_seg_size(uint32_t rq_size, uint32_t max_sge);
size_t snic_cq_seg_size(uint32_t size);
unsigned long snic_env_ulong(const char *name, unsigned long def, unsigned long min,
			     unsigned long max);

/* snic_mr.c */
struct vb_mr *snic_reg_mr(struct vb_pd *pd, void *addr, size_t length, uint64_t iova,
			  unsigned int access);
int snic_dereg_mr(struct vb_mr *mr);
struct vb_mw *snic_alloc_mw(struct vb_pd *pd);
int snic_bind_mw(struct vb_qp *qp, struct vb_mw *mw, struct vb_mr *mr, void *addr, size_t length,
		 unsigned int access);
int snic_dealloc_mw(struct vb_mw *mw);
/* destroy_qp: wait (bounded) until the peer announces no access to our regions. */
void snic_qp_wait_peer_holds(struct snic_qp *qp);
void *snic_buf_alloc(struct vb_device *vdev, size_t length);
int snic_buf_free(struct vb_device *vdev, void *buf, size_t length);
int snic_mr_table_init(struct snic_dev *dev);
void snic_mr_table_fini(struct snic_dev *dev);

/* The slot a key names in a table of max_mr entries (>= max_mr: none). */
static inline uint32_t snic_key_slot(uint32_t key, uint32_t max_mr)
{
	uint32_t p = 1;

	while (p < max_mr)
		p <<= 1;
	return key & (p - 1);
}

/*
 * Take a reference on the entry of seg that key names, if [addr, addr+len)
 * (addresses of work requests: the region's iova space) lies inside it, it
 * belongs to pd and grants every right in access.  A memory window's entry
 * is valid for a peer's remote access through the one QP it is bound to:
 * qpn, the owner's number of the QP the access comes through (0: not a
 * remote access, which no window serves).  Returns the entry
 * (release it with snic_mr_put()) or NULL.  A local access (hold NULL)
 * counts in the entry; a peer's table is read-only here, so an access to
 * it is announced in hold, a word of this process's QP segment that the
 * table's owner reads before it lets a region go.
 */
const struct snic_mr_entry *snic_mr_get(const struct snic_dev_seg *seg, uint32_t max_mr,
					uint32_t key, uint32_t pd, uint32_t qpn, uint64_t addr,
					uint64_t len, unsigned int access, _Atomic uint32_t *hold);

/* Kill the keys of the windows bound to qp, which is going (dev->lock held). */
void snic_mw_qp_gone(struct snic_dev *dev, struct snic_qp *qp);

/* The owner's address of the byte at iova in a region taken with snic_mr_get(). */
static inline uint64_t snic_mr_va(const struct snic_mr_entry *e, uint64_t iova)
{
	return e->addr + (iova - e->iova);
}

static inline void snic_mr_put(const struct snic_mr_entry *e, _Atomic uint32_t *hold)
{
	if (hold)
		atomic_store_explicit(hold, 0, memory_order_release);
	else
		atomic_fetch_sub_explicit(&((struct snic_mr_entry *)e)->busy, 1,
					  memory_order_release);
}

/* snic_cq.c */
struct vb_cq *snic_create_cq(struct vb_device *vdev, int cqe);
int snic_destroy_cq(struct vb_cq *vcq);
int snic_req_notify_cq(struct vb_cq *vcq);
int snic_get_cq_event(struct vb_cq *vcq);
int snic_poll_cq(struct vb_cq *vcq, int max, struct vb_wc *wc, int *count);
/*
 * With cq's cons_lock held: qp (whose receives complete in cq) had
 * reports; its peer stops ringing for them and polls take them in.
 * snic_cq_unpoll() undoes it (and takes in what came meanwhile).
 */
void snic_cq_poll_qp(struct snic_cq *cq, struct snic_qp *qp);
void snic_cq_unpoll(struct snic_cq *cq, struct snic_qp *qp);
/*
 * Add one completion to a ring (local or a peer's); EOVERFLOW when full,
 * EIO when the ring's lock was kept or corrupted (then *dead is set and
 * later pushes fail at once).
 */
int snic_cq_push(struct snic_cq_seg *seg, uint32_t size, snic_handle evfd,
		 const struct snic_cqe *cqe, _Atomic bool *dead);

/* snic_qp.c */
struct vb_qp *snic_create_qp(struct vb_pd *vpd, const struct vb_qp_init_attr *attr);
int snic_destroy_qp(struct vb_qp *vqp);
int snic_query_qp(struct vb_qp *vqp, enum vb_qp_state *state);
int snic_post_send(struct vb_qp *vqp, struct vb_send_wr *wr, struct vb_send_wr **bad_wr);
int snic_post_recv(struct vb_qp *vqp, struct vb_recv_wr *wr, struct vb_recv_wr **bad_wr);
/* With qp->lock held: execute what can run, flush what must. */
void snic_qp_progress(struct snic_qp *qp);
/* With qp->lock held: move to the error state and flush both queues. */
void snic_qp_set_error(struct snic_qp *qp);
/*
 * With the recv CQ's cons_lock held: complete the receives the peer
 * reported: how many reports it took.  A report that does not match the
 * next posted receive sets qp->inb_err and rings the device (the QP goes to
 * the error state there).
 */
uint32_t snic_qp_drain(struct snic_qp *qp);

/* snic_xfer.c: the one-copy engine */
enum snic_xfer_dir { SNIC_XFER_TO_PEER, SNIC_XFER_FROM_PEER };
struct snic_rseg {
	uint64_t raddr; /* address in the peer */
	void *mapped;	/* the same bytes mapped here, or NULL: use CMA */
	uint64_t len;
};
/* Resolve where the bytes of a peer MR entry can be reached from here. */
void snic_xfer_resolve(struct snic_peer *peer, const struct snic_mr_entry *e, struct snic_rseg *rs);
/*
 * Move bytes between local segments and peer segments (same total).
 * Returns VB_WC_SUCCESS or the completion status of the failure.
 */
enum vb_wc_status snic_xfer(struct snic_peer *peer, enum snic_xfer_dir dir,
			    const struct vb_sge *local, uint32_t nlocal,
			    const struct snic_rseg *remote, uint32_t nremote, uint32_t *vendor_err);
void snic_peer_release_imports(struct snic_peer *peer);

/* snic_conn.c */
struct vb_listener *snic_create_listener(struct vb_device *vdev, const struct sockaddr *addr,
					 socklen_t addrlen, int backlog);
int snic_destroy_listener(struct vb_listener *lst);
int snic_export_listener(struct vb_listener *lst, void *blob, size_t *len);
struct vb_listener *snic_import_listener(struct vb_device *dev, const void *blob, size_t len);
int snic_connect(struct vb_qp *vqp, const struct sockaddr *addr, socklen_t addrlen,
		 const struct vb_conn_param *param);
struct vb_conn_req *snic_get_request(struct vb_listener *lst, int timeout_ms);
int snic_accept_request(struct vb_conn_req *req, struct vb_qp *vqp,
			const struct vb_conn_param *param);
int snic_reject_request(struct vb_conn_req *req);
void snic_peer_unmap(struct snic_dev *dev, struct snic_peer *peer);

/* snic_trust.c: what a peer must be before anything is shared with it */
/*
 * Learn who is at the other end of sock (refusing another user: EACCES),
 * and let it reach this process's memory (EBUSY when the OS cannot).
 * Undone by snic_peer_unmap().
 */
int snic_peer_admit(struct snic_peer *peer, snic_handle sock);
void snic_peer_dismiss(struct snic_peer *peer);
/*
 * The answer to a connect came from process pid (0: unknown), not the
 * listener's (a listener shared with a fork child): that one is the peer.
 */
int snic_peer_readmit(struct snic_peer *peer, pid_t pid);
/* A listener's connections that have not sent their request yet. */
struct snic_pending {
	pthread_mutex_t lock; /* one accept at a time takes from them */
	/*
	 * The listener's waitable: its socket and these connections, so that
	 * one of them speaking wakes a vb_listener_wait() too.
	 */
	struct snic_os_watch *ready;
	int n;
	snic_handle sock[SNIC_MAX_PENDING];
	uint64_t deadline[SNIC_MAX_PENDING];
};
int snic_pending_init(struct snic_pending *p, struct snic_os_watch *ready);
void snic_pending_fini(struct snic_pending *p); /* closes them */
/*
 * Wait up to timeout_ms (-1: for ever) for a connection on lst that has
 * sent something, or closed.  Meanwhile every waiting connection is taken,
 * so that a silent one holds back nobody; one of a peer snic_os_conn_check()
 * refuses is handed to refuse() and closed, one silent for
 * SNIC_HANDSHAKE_MS is closed.  0 with *sock, ETIMEDOUT, or errno.
 */
int snic_pending_take(struct snic_pending *p, snic_handle lst, int timeout_ms,
		      void (*refuse)(snic_handle sock, int status), snic_handle *sock);
/* The key for slot, whose registrations so far are *gen (counted on). */
uint32_t snic_key_make(const uint32_t secret[4], uint32_t max_mr, uint32_t slot, uint32_t *gen);

/* snic_dev.c */
struct vb_device *snic_open_device(const struct vb_ops *ops, const char *name);
int snic_close_device(struct vb_device *vdev);
int snic_query_device(struct vb_device *vdev, struct vb_device_attr *attr);
int snic_query_port(struct vb_device *vdev, struct vb_port_attr *attr);
struct vb_pd *snic_alloc_pd(struct vb_device *vdev);
int snic_dealloc_pd(struct vb_pd *vpd);
void snic_dev_ring(snic_handle doorbell);
/* This process's own QP needs its progress thread (an error to raise). */
void snic_dev_service(struct snic_qp *qp);
/* The peer's QP needs the peer's progress thread: rung on the connection, once until served. */
void snic_qp_ring_peer(struct snic_qp *qp);
int snic_dev_watch(struct snic_dev *dev, snic_handle conn, uint32_t qpn);
/*
 * h, just received from a peer (pid: the process it is a handle on, 0 for
 * an event): the device's copy of the same object if it has one (h is
 * closed then), else h, now kept.  snic_dev_unshare() drops one use (and
 * closes a handle the device does not keep).
 */
snic_handle snic_dev_share(struct snic_dev *dev, snic_handle h, pid_t pid);
void snic_dev_unshare(struct snic_dev *dev, snic_handle h);

#endif
