/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The switch core: the Windows Sockets switch's session protocol over one
 * SAN connection, in portable C (docs/switch-core.md).
 *
 * A byte stream over a connected SAN socket.  Each end registers two
 * VA-contiguous rings of control messages (send and receive) and keeps its
 * receive ring posted.  Small sends are copied through control messages;
 * a send above SO_RDMA_THRESHOLD_SIZE puts its first bytes in a control
 * message and moves the rest by RDMA read (the receiver reads, then sends
 * "done") or, when the peer cannot read, by RDMA write (the receiver
 * registers its buffer and sends the descriptor, the sender writes, then
 * sends "done").  Credits keep a sender from overrunning the peer's posted
 * ring: every message carries how many receives its sender has posted
 * again, and an end that waits writes that count into the peer's credit
 * word by RDMA, which costs the peer no ring slot.  A peer that breaks the
 * protocol fails the session with EPROTO; every wait is bounded.
 *
 * Not thread-safe: one thread at a time per session.  Every call returns
 * 0 or a positive errno value; the SPI's last WSA error is in wsa_error.
 */
#ifndef SANPROV_SWC_H
#define SANPROV_SWC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_spi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The provider's entry points the session calls: its proc table and the SAN extensions. */
struct swc_spi {
	const struct sp_proc_table *p;
	sp_register_memory_fn register_memory;
	sp_deregister_memory_fn deregister_memory;
	sp_register_rdma_memory_fn register_rdma_memory;
	sp_deregister_rdma_memory_fn deregister_rdma_memory;
	sp_rdma_fn rdma_write;
	sp_rdma_fn rdma_read;
};

/*
 * Completion by up-call: the host's event objects.  wait returns 0 once ev
 * was signalled (or may have been), ETIMEDOUT after timeout_ms.
 */
struct swc_events {
	void *ctx;
	int (*create)(void *ctx, sp_event *ev);
	void (*destroy)(void *ctx, sp_event ev);
	int (*wait)(void *ctx, sp_event ev, int timeout_ms);
};

enum swc_large { SWC_LARGE_READ = 0, SWC_LARGE_WRITE = 1 };

struct swc_opts {
	enum swc_large large; /* how this end's large sends move (the peer reads or is written) */
	/* NULL: polled completions (bit 0 of hEvent), no up-call and no thread wake-up. */
	const struct swc_events *events;
	uint32_t ring;	     /* control messages per ring (0: 16); both ends alike */
	uint32_t msg_size;   /* bytes per control message (0: 4096); both ends alike */
	uint32_t spin_us;    /* busy-poll this long before yielding or sleeping (0: 50) */
	uint32_t timeout_ms; /* the longest any wait lasts (0: 30000) */
};

#define SWC_DESC_MAX 64

/*
 * Non-blocking large sends (swc_send_some) are copied into staging slots,
 * registered once, that the peer reads when its application asks: the
 * call returns at once, the slot is free again at the peer's STAGED_DONE.
 */
#define SWC_STAGE_SLOTS 8
#define SWC_STAGE_SLOT (256u << 10)

struct swc_stats {
	uint64_t small_msgs, large_msgs, ctl_msgs;
	uint64_t credit_writes; /* credit counts written into the peer's word */
	uint64_t credit_stalls; /* sends that waited for credits */
	uint64_t rdma_ops;
	uint64_t staged_msgs; /* non-blocking large sends through the staging slots */
	uint64_t bytes_sent, bytes_received;
};

/* One received control message as checked when it arrived. */
struct swc_rx_info {
	uint8_t type;
	uint8_t desc_len;
	uint32_t len;	/* inline payload bytes */
	uint64_t total; /* bytes by RDMA (large messages) */
};

struct swc_sess {
	struct swc_spi spi;
	sp_socket s;
	struct swc_opts o;
	uint32_t threshold, max_rdma;
	int error;     /* sticky: once set every call returns it */
	int wsa_error; /* the SPI's last WSA error code */
	/*
	 * The connection broke under the receives (the peer closed or reset):
	 * what arrived before is still read, then every call returns it.
	 */
	int rx_error;

	char *tx, *rx;
	void *tx_h, *rx_h;
	struct sp_overlapped *tx_ov, *rx_ov;
	struct swc_rx_info *rx_info;
	bool *tx_busy;
	uint32_t tx_next;
	/* Receives in the order posted (they complete in that order). */
	uint32_t *posted, post_head, post_n;
	/* Stream messages received, not yet consumed by the application. */
	uint32_t *held, held_head, held_n;
	uint32_t held_off;   /* inline bytes of the first held message consumed */
	uint64_t large_done; /* RDMA bytes of the first held message moved */

	/* Flow control (32-bit counters that wrap). */
	uint32_t peer_ring;
	uint32_t sent;	       /* messages sent */
	uint32_t peer_posted;  /* receives the peer posted again, as last told */
	uint32_t reposted;     /* receives this end posted again */
	uint32_t told;	       /* reposted, as last told to the peer */
	uint64_t *credit_word; /* [0] the peer's count, [1] its complement (written by the peer) */
	uint64_t last_word;    /* the count last read there */
	uint64_t *credit_src;  /* what this end writes into the peer's word */
	void *credit_src_h;
	uint8_t credit_desc[SWC_DESC_MAX], peer_credit_desc[SWC_DESC_MAX];
	uint32_t credit_desc_len, peer_credit_desc_len;
	struct sp_overlapped credit_ov;
	bool credit_busy;

	/* The control message this end waits for, if any, and what came. */
	uint8_t expect;
	bool ctl_got;
	uint64_t ctl_total;
	uint8_t ctl_desc[SWC_DESC_MAX];
	uint32_t ctl_desc_len;

	bool hello;	  /* the peer's hello came */
	bool eof;	  /* the peer's shutdown came */
	bool shut;	  /* this end's shutdown went */
	bool upcalled;	  /* the socket's operations complete by up-call */
	uint64_t rx_msgs; /* stream messages received (swc_poll: a new one is a new edge) */
	struct sp_overlapped rdma_ov[4];

	/* Staging slots (allocated at the first non-blocking large send), in send order. */
	char *stage;
	bool stage_off; /* they could not be set up: copied messages only */
	uint8_t stage_desc[SWC_STAGE_SLOTS][SWC_DESC_MAX];
	uint32_t stage_desc_len[SWC_STAGE_SLOTS];
	uint64_t stage_len[SWC_STAGE_SLOTS];
	uint32_t stage_head, stage_n;
	struct swc_stats st;
};

/*
 * Start the session on connected socket s: register the rings, post the
 * receives, send this end's hello (the peer's is taken by the first call
 * that waits, so both ends of a pair may start in one thread).  From
 * here on the session owns s: it is closed by swc_sess_fini, or here when
 * this fails.  opts may be NULL (the defaults).
 */
int swc_sess_init(struct swc_sess *sess, const struct swc_spi *spi, sp_socket s,
		  const struct swc_opts *opts);
/*
 * Close gracefully: this end's shutdown (if not sent yet), then wait
 * (bounded) for the sends to leave, close the socket, free the rings.
 * The peer reads all the data, then the end of the stream.
 */
void swc_sess_fini(struct swc_sess *sess);

/* Move exactly len bytes of buf into the stream. */
int swc_send(struct swc_sess *sess, const void *buf, size_t len);
/*
 * Receive exactly len bytes into buf.  EPIPE when the peer shut down first
 * (what came before is in buf; swc_recv_some tells how much).
 */
int swc_recv(struct swc_sess *sess, void *buf, size_t len);
/*
 * Receive between 1 and len bytes (as recv() does): *got bytes, or
 * *got == 0 once the peer shut down and everything before was received.
 */
int swc_recv_some(struct swc_sess *sess, void *buf, size_t len, size_t *got);
/* Orderly shutdown of this end's direction: the peer reads 0 after the data. */
int swc_shutdown(struct swc_sess *sess);

/* What a session can do now without waiting (swc_poll). */
struct swc_ready {
	bool readable;	  /* data, the peer's shutdown, or a failure */
	bool writable;	  /* a message can go without waiting for credits, or a failure */
	uint64_t rx_msgs; /* stream messages received so far */
	size_t bytes;	  /* stream bytes received and not yet consumed */
};

/*
 * Without waiting: take what arrived, tell the peer the credits it is owed,
 * and say what the session can do now.  Returns the session's error, if
 * any (then *r says readable and writable, as poll() does for a failed
 * socket).
 */
int swc_poll(struct swc_sess *sess, struct swc_ready *r);
/*
 * Without waiting: move what the credits allow of len bytes of buf, in
 * copied messages only, into the stream: *sent bytes, EAGAIN when nothing
 * could go.
 */
int swc_send_some(struct swc_sess *sess, const void *buf, size_t len, size_t *sent);

/* The errno value for a WSA error code. */
int swc_errno(int wsa_error);

#ifdef __cplusplus
}
#endif

#endif
