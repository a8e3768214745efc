/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What softnic needs of the operating system (softnic/<os>/snic_os*.c).
 *
 * A handle is what vb_os.h calls a waitable object: a file descriptor on
 * Linux, a HANDLE on Windows.  Errors are 0 or a positive errno.
 */
#ifndef SANPROV_SNIC_OS_H
#define SANPROV_SNIC_OS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vb.h"

typedef vb_waitable snic_handle;
#define SNIC_NO_HANDLE VB_NO_WAITABLE

struct snic_shm;

/* A handle as a number in a shared segment (what the peer asks the OS for), -1 for none. */
static inline int32_t snic_os_handle_number(snic_handle h)
{
	/* Windows handles are 32-bit values, even in 64-bit processes. */
	return h == SNIC_NO_HANDLE ? -1 : (int32_t)(intptr_t)h;
}

/* Close a handle (SNIC_NO_HANDLE is left alone). */
void snic_os_close(snic_handle h);

/*
 * Shared-memory segments: a new one of len bytes (zeroed, sparse where the
 * OS allows), or one a peer sent, which must hold at least min_len bytes.
 * *id names the underlying object (same object, same id).
 *
 * A segment never changes size once created (a peer that could shrink it
 * would make every access here fault), and one created peer_readonly can
 * be mapped for reading only by whoever gets its handle.  A received
 * segment that does not carry these guarantees is refused with EPROTO;
 * writable says how this process maps it.
 */
int snic_os_shm_create(struct snic_shm *shm, const char *name, size_t len, bool peer_readonly);
int snic_os_shm_map(struct snic_shm *shm, snic_handle h, size_t min_len, bool writable);
void snic_os_shm_destroy(struct snic_shm *shm);
int snic_os_shm_id(snic_handle h, uint64_t *id);

/* Events: signalled until drained (eventfd semantics, non-blocking). */
int snic_os_event_create(snic_handle *h);
void snic_os_event_signal(snic_handle h);
/* 0 if it was signalled (and is no longer), EAGAIN if not. */
int snic_os_event_drain(snic_handle h);

/*
 * A lock that lives in a shared segment, which a peer that dies holding it
 * hands over (a robust, process-shared mutex where the OS has one).  A peer
 * can also keep it, or scribble over it: taking it gives up after
 * SNIC_SHARED_LOCK_TIMEOUT_MS with ETIMEDOUT (EINVAL for a lock that is no
 * longer one), and the caller stops trusting that segment.
 */
#define SNIC_SHARED_LOCK_TIMEOUT_MS 1000
int snic_os_shared_lock_init(pthread_mutex_t *m);
int snic_os_shared_lock(pthread_mutex_t *m);

/*
 * The progress thread's wait set: handles, each with a key.  An event
 * handle counts when signalled; a connection handle when the peer is gone.
 */
struct snic_os_watch;
struct snic_os_watch *snic_os_watch_create(void); /* NULL with errno */
void snic_os_watch_destroy(struct snic_os_watch *w);
int snic_os_watch_event(struct snic_os_watch *w, snic_handle event, uint32_t key);
int snic_os_watch_conn(struct snic_os_watch *w, snic_handle conn, uint32_t key);
void snic_os_watch_remove(struct snic_os_watch *w, snic_handle h);
/*
 * A waitable that is ready when any watched handle is (fallback where the
 * OS cannot make one: then only fallback's readiness counts).
 */
snic_handle snic_os_watch_waitable(struct snic_os_watch *w, snic_handle fallback);
/* Block until something is ready: how many keys were stored (>= 0), or -errno. */
int snic_os_watch_wait(struct snic_os_watch *w, uint32_t *keys, int max);

/* Connections -------------------------------------------------------------
 *
 * A listener per port of the host (private to it: nothing leaves the
 * machine), and message channels that carry handles along with each
 * message and stay open as the connection's liveness.
 */
#define SNIC_OS_MAX_HANDLES 5

/* Listen on *port (0: a free one, stored back): 0, EADDRINUSE or errno. */
int snic_os_listen(uint16_t *port, int backlog, snic_handle *lst);
/*
 * The listener of port that h names in this process (inherited across a
 * fork, or this process's own) as a handle of its own in *lst: 0, EINVAL
 * when h is no softnic listener of that port, EOPNOTSUPP where listeners
 * cannot be shared, or errno.
 */
int snic_os_listen_share(uint16_t port, snic_handle h, snic_handle *lst);
/* Take a waiting connection without blocking: 0, EAGAIN, or errno. */
int snic_os_accept(snic_handle lst, snic_handle *conn);
/*
 * Connect to the listener of port: 0, ECONNREFUSED (nobody there), EACCES
 * (it belongs to a peer snic_os_conn_check() refuses: nothing was sent), or
 * errno.
 */
int snic_os_connect(uint16_t port, snic_handle *conn);
/*
 * May this process deal with the other end of conn?  Only a process of the
 * same user, unless SANPROV_SOFTNIC_ANY_USER=1: 0 or EACCES.
 */
int snic_os_conn_check(snic_handle conn);
/*
 * Wait until one of h[0..n) is ready: a listener with a connection
 * waiting, a connection with a message or whose other end closed.  Its
 * index, -ETIMEDOUT, or -errno.
 */
int snic_os_wait_any(const snic_handle *h, int n, int timeout_ms);
int snic_os_send(snic_handle conn, const void *msg, size_t len, const snic_handle *h, int nh);
/*
 * Receive one message of exactly len bytes and up to max handles (beyond
 * that they are closed): 0, ETIMEDOUT, ECONNRESET (the peer closed) or
 * EPROTO (another size, cut short).
 */
int snic_os_recv(snic_handle conn, void *msg, size_t len, snic_handle *h, int *nh, int max,
		 int timeout_ms);
/*
 * snic_os_recv() that also tells which process sent the message (*sender,
 * as the OS vouches for it; 0 where it cannot), on a connection made by
 * snic_os_connect().  A listener may be shared across a fork: the process
 * that answers is then not the one that listened.
 */
int snic_os_recv_from(snic_handle conn, void *msg, size_t len, snic_handle *h, int *nh, int max,
		      int timeout_ms, pid_t *sender);
/* The process pid: whether it is this one, a handle on it. */
int snic_os_peer_open(pid_t pid, bool *self, snic_handle *proc);
/* The process at the other end: its id, whether it is this one, a handle on it. */
int snic_os_conn_peer(snic_handle conn, pid_t *pid, bool *self, snic_handle *proc);
/* Two handles of this process on one object (an event a peer sent twice). */
bool snic_os_same_object(snic_handle a, snic_handle b);
/* The process that proc (from snic_os_conn_peer()) names still runs. */
bool snic_os_process_alive(snic_handle proc);

/* Peer memory ------------------------------------------------------------ */

struct snic_peer;

/* A piece of memory, here or in a peer. */
struct snic_iov {
	void *base;
	size_t len;
};

/*
 * Copy between this process (l) and the peer's memory (r), the same total:
 * 0, EFAULT (a page of either side is not there) or ESRCH (the peer is gone).
 */
int snic_os_peer_copy(const struct snic_peer *peer, bool to_peer, const struct snic_iov *l,
		      unsigned int nl, const struct snic_iov *r, unsigned int nr, size_t total);
/*
 * Map here the peer's vb_buf_alloc() segment that the peer knows as
 * remote, if it is still the object id names: 0 or errno.
 */
int snic_os_peer_map_segment(const struct snic_peer *peer, int32_t remote, uint64_t id, void **base,
			     size_t *len);
void snic_os_unmap(void *base, size_t len);

/* Does [addr, addr + len) hold memory a NIC could pin (writable if write)? 0 or EFAULT. */
int snic_os_check_memory(void *addr, size_t length, bool write);

/*
 * Let the connected peer pid reach this process's memory, where the OS
 * asks for it (Yama's ptrace_scope 1 on Linux): counted per peer process,
 * and withdrawn with the last connection of that peer.  EBUSY when the OS
 * can name only one such process and another one holds it (see
 * docs/softnic-security.md).
 */
int snic_os_peer_trust(pid_t pid);
void snic_os_peer_untrust(pid_t pid);
/* The process currently allowed by snic_os_peer_trust(): 0 none, -1 any (tests). */
pid_t snic_os_peer_trusted(void);
/* Tests: act as if Yama's ptrace_scope were scope (-1: read it again). */
void snic_os_set_ptrace_scope(int scope);

/* Unpredictable bytes from the OS: 0 or errno. */
int snic_os_random(void *buf, size_t len);

#endif
