/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The session protocol (swc.h).  Receives complete in the order posted,
 * so the ring is read through the FIFO of posted slots: control messages
 * (hello, write descriptor, done) are taken at once and their slots posted
 * again; stream messages (data, large, shutdown) are held until the
 * application has consumed them.  One credit is kept back for control
 * messages: data may hold at most ring - 1 of the peer's slots, so a done
 * or a descriptor always finds one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swc.h"
#include "swc_os.h"
#include "swc_wire.h"

#define SWC_RDMA_DEPTH 4
/* How long an end waits before it tells the peer its credits by RDMA. */
#define SWC_CREDIT_IDLE_NS 5000

enum { EXPECT_NONE, EXPECT_DONE, EXPECT_DESC };

int swc_errno(int wsa)
{
	switch (wsa) {
	case 0:
		return 0;
	case SP_WSAENOBUFS:
		return ENOBUFS;
	case SP_WSAECONNRESET:
		return ECONNRESET;
	case SP_WSAECONNABORTED:
	case SP_WSA_OPERATION_ABORTED:
		return ECONNABORTED;
	case SP_WSAENOTCONN:
		return ENOTCONN;
	case SP_WSAESHUTDOWN:
		return EPIPE; /* as a write after shutdown(SHUT_WR) */
	case SP_WSAETIMEDOUT:
		return ETIMEDOUT;
	case SP_WSAEMSGSIZE:
		return EMSGSIZE;
	case SP_WSAEFAULT:
		return EFAULT;
	case SP_WSAEACCES:
		return EACCES;
	case SP_WSAEINVAL:
		return EINVAL;
	case SP_WSAENETDOWN:
	case SP_WSAENETRESET:
		return ENETDOWN;
	case SP_WSAENOTSOCK:
		return ENOTSOCK;
	default:
		return EIO;
	}
}

/* Fail the session for good with errno value ret (the first failure stays). */
static int fail(struct swc_sess *s, int ret)
{
	if (!s->error)
		s->error = ret;
	return s->error;
}

static int fail_wsa(struct swc_sess *s, int wsa)
{
	s->wsa_error = wsa;
	return fail(s, swc_errno(wsa));
}

static char *tx_msg(struct swc_sess *s, uint32_t i)
{
	return s->tx + (size_t)i * s->o.msg_size;
}

static char *rx_msg(struct swc_sess *s, uint32_t i)
{
	return s->rx + (size_t)i * s->o.msg_size;
}

/*
 * Whether ov finished: 1 (its WSA status in *wsa, bytes in *bytes), 0 while
 * it runs.  The status word is read first: no provider call for an
 * operation already done by up-call.
 */
static int ov_done(struct swc_sess *s, struct sp_overlapped *ov, int *wsa, uint32_t *bytes)
{
	uint32_t n = 0, flags = 0;
	int err = 0;

	if (!s->spi.p->get_overlapped_result(s->s, ov, &n, 0, &flags, &err)) {
		*wsa = 0;
		*bytes = n;
		return 1;
	}
	if (err == SP_WSA_IO_INCOMPLETE)
		return 0;
	*wsa = err;
	*bytes = 0;
	return 1;
}

static int post_rx(struct swc_sess *s, uint32_t i)
{
	struct sp_wsabufex b = { s->o.msg_size, rx_msg(s, i), s->rx_h };
	uint32_t flags = 0;
	int err = 0;

	if (s->spi.p->recv(s->s, &b, 1, NULL, &flags, &s->rx_ov[i], NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING) {
		/* After the peer's shutdown nothing more comes: its close is no failure. */
		if (s->eof)
			return 0;
		return fail_wsa(s, err);
	}
	s->posted[(s->post_head + s->post_n) % s->o.ring] = i;
	s->post_n++;
	return 0;
}

/*
 * The connection broke under the receives: the messages that arrived
 * before are still read, in order, before rx_error is returned.
 */
static void rx_broken(struct swc_sess *s, int wsa)
{
	if (!s->rx_error) {
		s->wsa_error = wsa;
		s->rx_error = swc_errno(wsa);
	}
}

/* Post slot i again after its message was used: one more credit for the peer. */
static int repost(struct swc_sess *s, uint32_t i)
{
	struct sp_wsabufex b = { s->o.msg_size, rx_msg(s, i), s->rx_h };
	uint32_t flags = 0;
	int err = 0;

	if (s->rx_error)
		return 0;
	if (s->spi.p->recv(s->s, &b, 1, NULL, &flags, &s->rx_ov[i], NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING) {
		/*
		 * No receive can be posted on a broken connection; those posted
		 * before may still hold messages.
		 */
		rx_broken(s, err);
		return 0;
	}
	s->posted[(s->post_head + s->post_n) % s->o.ring] = i;
	s->post_n++;
	s->reposted++;
	return 0;
}

/* Credits this end may spend on the peer's ring. */
static uint32_t credits(const struct swc_sess *s)
{
	return s->peer_ring - (s->sent - s->peer_posted);
}

/* The peer says it posted count receives again: believed only if it could have. */
static int take_credits(struct swc_sess *s, uint32_t count)
{
	/*
	 * Counts only grow, but an older one may come after a newer one, by
	 * any distance: a header whose completion came in after the credit
	 * word was written again (the word is memory, seen at once).  Old
	 * news, and no credit: ignored.
	 */
	if ((int32_t)(count - s->peer_posted) <= 0)
		return 0;
	if (count - s->peer_posted > s->sent - s->peer_posted)
		return fail(s, EPROTO);
	s->peer_posted = count;
	return 0;
}

/* The credit word, once both halves agree (the peer's write may be under way). */
static int read_credit_word(struct swc_sess *s)
{
	uint64_t v = __atomic_load_n(&s->credit_word[0], __ATOMIC_ACQUIRE);
	uint64_t nv = __atomic_load_n(&s->credit_word[1], __ATOMIC_ACQUIRE);

	/* Only a new value: an old one stays in the word while headers carry newer counts. */
	if (v != ~nv || v == s->last_word || v >> 32)
		return 0;
	s->last_word = v;
	return take_credits(s, (uint32_t)v);
}

/* Tell the peer this end's receives by RDMA write into its credit word. */
static int write_credits(struct swc_sess *s)
{
	struct sp_wsabufex b = { 2 * sizeof(uint64_t), (char *)s->credit_src, s->credit_src_h };
	uint32_t bytes = 0;
	int err = 0, wsa;

	if (s->credit_busy) {
		if (!ov_done(s, &s->credit_ov, &wsa, &bytes))
			return 0; /* the next wait round writes the newer count */
		s->credit_busy = false;
		/* A peer that closed does not lose what it sent before: no failure yet. */
		if (wsa && !s->eof)
			rx_broken(s, wsa);
	}
	/*
	 * After the peer's shutdown it sends no data: it needs no credits, and
	 * may be gone; but the dones of this end's staged messages are still
	 * to come, each on a credit.
	 */
	if (s->told == s->reposted || !s->hello || s->rx_error || (s->eof && !s->stage_n))
		return 0;
	s->credit_src[0] = s->reposted;
	s->credit_src[1] = ~(uint64_t)s->reposted;
	if (s->spi.rdma_write(s->s, &b, 1, s->peer_credit_desc, s->peer_credit_desc_len, 0, &bytes,
			      0, &s->credit_ov, NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING) {
		rx_broken(s, err);
		return 0;
	}
	s->credit_busy = true;
	s->told = s->reposted;
	s->st.credit_writes++;
	return 0;
}

/* A control message for this end, taken at once (its slot is posted again). */
static int take_control(struct swc_sess *s, const struct swc_hdr *h, const uint8_t *desc)
{
	if (h->len)
		return fail(s, EPROTO);
	switch (h->type) {
	case SWC_MSG_HELLO:
		if (s->hello || !h->desc_len)
			return fail(s, EPROTO);
		s->peer_ring = (uint32_t)h->total;
		if (s->peer_ring < 2 || s->peer_ring > 4096 || h->total >> 32 != s->o.msg_size)
			return fail(s, EPROTO);
		/* What this end sent before must fit the ring the peer has. */
		if (s->sent - s->peer_posted > s->peer_ring)
			return fail(s, EPROTO);
		memcpy(s->peer_credit_desc, desc, h->desc_len);
		s->peer_credit_desc_len = h->desc_len;
		s->hello = true;
		return 0;
	case SWC_MSG_DONE:
		if (s->expect != EXPECT_DONE || s->ctl_got || h->desc_len)
			return fail(s, EPROTO);
		break;
	case SWC_MSG_STAGED_DONE:
		/* The peer reads staged messages in order: the oldest one's slot is free. */
		if (!s->stage_n || h->desc_len || h->total != s->stage_len[s->stage_head])
			return fail(s, EPROTO);
		s->stage_head = (s->stage_head + 1) % SWC_STAGE_SLOTS;
		s->stage_n--;
		return 0;
	case SWC_MSG_WRITE_DESC:
		if (s->expect != EXPECT_DESC || s->ctl_got || !h->desc_len || !h->total)
			return fail(s, EPROTO);
		memcpy(s->ctl_desc, desc, h->desc_len);
		s->ctl_desc_len = h->desc_len;
		break;
	default:
		return fail(s, EPROTO);
	}
	s->ctl_total = h->total;
	s->ctl_got = true;
	return 0;
}

/* Check a stream message; it is held until consumed. */
static int check_stream(struct swc_sess *s, const struct swc_hdr *h)
{
	if (!s->hello || s->eof)
		return fail(s, EPROTO);
	switch (h->type) {
	case SWC_MSG_DATA:
		if (!h->len || h->desc_len || h->total)
			return fail(s, EPROTO);
		return 0;
	case SWC_MSG_LARGE_READ:
	case SWC_MSG_LARGE_STAGED:
		if (!h->desc_len || !h->total || h->total > SWC_LARGE_MAX)
			return fail(s, EPROTO);
		return 0;
	case SWC_MSG_LARGE_WRITE:
		if (h->desc_len || !h->total || h->total > SWC_LARGE_MAX)
			return fail(s, EPROTO);
		return 0;
	case SWC_MSG_SHUTDOWN:
		if (h->len || h->desc_len || h->total)
			return fail(s, EPROTO);
		s->eof = true;
		return 0;
	default:
		return fail(s, EPROTO);
	}
}

/* The oldest posted receive, if it completed: checked, then taken or held. */
static int rx_one(struct swc_sess *s, bool *got)
{
	uint32_t i, n = 0;
	struct swc_hdr h;
	int wsa = 0, ret;
	char *m;

	*got = false;
	if (!s->post_n)
		return 0;
	i = s->posted[s->post_head];
	if (!ov_done(s, &s->rx_ov[i], &wsa, &n))
		return 0;
	*got = true;
	s->post_head = (s->post_head + 1) % s->o.ring;
	s->post_n--;
	if (wsa) {
		/*
		 * The connection is gone; the messages already held are read
		 * first (after the peer's shutdown, its end reads as the end of
		 * the stream, not a failure), and nothing is sent any more: a
		 * close does not wait for a shutdown nobody can receive.
		 */
		*got = false;
		s->post_n = 0; /* the later ones complete flushed too */
		rx_broken(s, wsa);
		return 0;
	}
	m = rx_msg(s, i);
	if (n < sizeof(h) || n > s->o.msg_size)
		return fail(s, EPROTO);
	memcpy(&h, m, sizeof(h));
	if (h.desc_len > SWC_DESC_MAX || h.reserved || h.reserved2 ||
	    (uint64_t)sizeof(h) + h.desc_len + h.len > n)
		return fail(s, EPROTO);
	if (s->hello) {
		ret = take_credits(s, h.credits);
		if (ret)
			return ret;
	} else if (h.type != SWC_MSG_HELLO || h.credits) {
		return fail(s, EPROTO);
	}
	if (h.type == SWC_MSG_HELLO || h.type == SWC_MSG_DONE || h.type == SWC_MSG_WRITE_DESC ||
	    h.type == SWC_MSG_STAGED_DONE) {
		ret = take_control(s, &h, (const uint8_t *)m + sizeof(h));
		return ret ? ret : repost(s, i);
	}
	ret = check_stream(s, &h);
	if (ret)
		return ret;
	s->rx_info[i] = (struct swc_rx_info){
		.type = h.type, .desc_len = h.desc_len, .len = h.len, .total = h.total
	};
	s->held[(s->held_head + s->held_n) % s->o.ring] = i;
	s->held_n++;
	s->rx_msgs++;
	return 0;
}

/* Take what arrived, read the credit word, tell the peer when it is owed. */
static int progress(struct swc_sess *s, bool idle)
{
	bool got = true;
	int ret;

	while (got) {
		ret = rx_one(s, &got);
		if (ret)
			return ret;
	}
	ret = read_credit_word(s);
	if (ret)
		return ret;
	/*
	 * Half the ring owed, or waiting with anything owed: the peer may be
	 * waiting too.  And when the peer may be out of credits as far as this
	 * end knows (what it owes and holds fill the ring): its application may
	 * wait for a done that needs one, while this one's reads elsewhere.
	 */
	uint32_t owed = s->reposted - s->told;

	if (owed >= s->o.ring / 2 || (idle && owed) ||
	    (owed && owed + s->held_n + 2 >= s->o.ring) || s->credit_busy)
		return write_credits(s);
	return 0;
}

/* The oldest posted receive: what comes next completes it. */
static struct sp_overlapped *rx_head_ov(struct swc_sess *s)
{
	return s->post_n ? &s->rx_ov[s->posted[s->post_head]] : NULL;
}

typedef bool (*swc_cond_fn)(struct swc_sess *s, void *arg);

/*
 * Wait until cond holds, making progress meanwhile: busy-polling for
 * spin_us, then yielding the core (polled) or sleeping on ov's event for
 * at most a millisecond at a time (up-calls).  Bounded by timeout_ms.
 */
static int wait_until(struct swc_sess *s, swc_cond_fn cond, void *arg, struct sp_overlapped *ov)
{
	uint64_t start = swc_os_now_ns(), now = start;
	uint64_t spin = (uint64_t)s->o.spin_us * 1000, limit = (uint64_t)s->o.timeout_ms * 1000000;
	int ret;

	for (unsigned int i = 0;; i++) {
		bool idle = now - start >= SWC_CREDIT_IDLE_NS;

		if (s->error)
			return s->error;
		ret = progress(s, idle);
		if (ret)
			return ret;
		if (cond(s, arg))
			return 0;
		if (i % 16 == 0 || now - start >= spin)
			now = swc_os_now_ns();
		if (now - start >= limit)
			return fail(s, ETIMEDOUT);
		if (now - start < spin) {
			/*
			 * The core goes to whoever else may run on it, the peer
			 * perhaps: spinning without that costs a ping-pong two spin
			 * times whenever both ends share a core.
			 */
			swc_os_yield();
			continue;
		}
		/*
		 * With events the host's wait runs even when nothing of this
		 * end's is posted (a ring full of data not yet read): a host
		 * may let another thread in meanwhile, the one that reads.
		 */
		if (s->o.events) {
			if (!ov)
				ov = rx_head_ov(s) ? rx_head_ov(s) : &s->credit_ov;
			s->o.events->wait(s->o.events->ctx, ov->event, 1);
		} else {
			swc_os_yield();
		}
	}
}

struct ov_wait {
	struct sp_overlapped *ov;
	int wsa;
	uint32_t bytes;
};

static bool ov_cond(struct swc_sess *s, void *arg)
{
	struct ov_wait *w = arg;

	return ov_done(s, w->ov, &w->wsa, &w->bytes);
}

/* Wait for one operation: 0 with its bytes, or an errno value. */
static int wait_ov(struct swc_sess *s, struct sp_overlapped *ov, uint32_t *bytes)
{
	struct ov_wait w = { .ov = ov };
	int ret = wait_until(s, ov_cond, &w, ov);

	if (ret)
		return ret;
	if (w.wsa)
		return fail_wsa(s, w.wsa);
	if (bytes)
		*bytes = w.bytes;
	return 0;
}

/*
 * Nothing more can come: the connection broke and every receive posted
 * before completed (with a message, or flushed).  The conditions below
 * hold then too.
 */
static bool rx_over(const struct swc_sess *s)
{
	return s->rx_error && !s->post_n;
}

static bool credit_cond(struct swc_sess *s, void *arg)
{
	return credits(s) >= (uint32_t)(uintptr_t)arg || rx_over(s);
}

static bool ctl_cond(struct swc_sess *s, void *arg)
{
	(void)arg;
	return s->ctl_got || rx_over(s);
}

static bool held_cond(struct swc_sess *s, void *arg)
{
	(void)arg;
	return s->held_n > 0 || rx_over(s);
}

/*
 * Send one control message: header, descriptor, then len bytes of payload.
 * Data keeps one credit back for control messages.
 */
static int send_msg(struct swc_sess *s, struct swc_hdr *h, const void *desc, const void *payload)
{
	uint32_t need = h->type == SWC_MSG_DATA || h->type == SWC_MSG_LARGE_READ ||
				h->type == SWC_MSG_LARGE_WRITE
			    ? 2
			    : 1;
	uint32_t i;
	struct sp_wsabufex b;
	char *m;
	int err = 0, ret;

	/*
	 * The credit and the slot are looked at again after every wait: a
	 * host may let another call in meanwhile (one that receives, and
	 * sends a done), which may take them.
	 */
	for (;;) {
		if (s->rx_error)
			return s->rx_error; /* as a write to a socket the peer reset */
		if (credits(s) < need) {
			s->st.credit_stalls++;
			ret = wait_until(s, credit_cond, (void *)(uintptr_t)need, rx_head_ov(s));
			if (ret)
				return ret;
			continue;
		}
		i = s->tx_next;
		if (!s->tx_busy[i])
			break;
		ret = wait_ov(s, &s->tx_ov[i], NULL);
		if (ret)
			return ret;
		s->tx_busy[i] = false;
	}
	m = tx_msg(s, i);
	s->tx_next = (i + 1) % s->o.ring;
	h->credits = s->reposted;
	memcpy(m, h, sizeof(*h));
	if (h->desc_len)
		memcpy(m + sizeof(*h), desc, h->desc_len);
	if (h->len)
		memcpy(m + sizeof(*h) + h->desc_len, payload, h->len);
	b = (struct sp_wsabufex){ (uint32_t)(sizeof(*h) + h->desc_len + h->len), m, s->tx_h };
	if (s->spi.p->send(s->s, &b, 1, NULL, 0, &s->tx_ov[i], NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING) {
		/* Nothing more goes out; what came in is still read. */
		rx_broken(s, err);
		return s->rx_error;
	}
	s->tx_busy[i] = true;
	s->sent++;
	s->told = s->reposted;
	return 0;
}

static int send_ctl(struct swc_sess *s, uint8_t type, uint64_t total, const void *desc,
		    uint32_t desc_len)
{
	struct swc_hdr h = { .type = type, .desc_len = (uint8_t)desc_len, .total = total };

	s->st.ctl_msgs++;
	return send_msg(s, &h, desc, NULL);
}

/* Wait for the control message this end expects (done, or a descriptor). */
static int expect_ctl(struct swc_sess *s, uint8_t what)
{
	int ret;

	s->expect = what;
	ret = wait_until(s, ctl_cond, NULL, NULL);
	if (!ret && !s->ctl_got)
		ret = s->rx_error;
	s->expect = EXPECT_NONE;
	s->ctl_got = false;
	return ret;
}

/*
 * RDMA (read or write) of len bytes between buf (registered as h) and the
 * peer's region desc from offset off: pieces of at most SO_MAX_RDMA_SIZE,
 * up to SWC_RDMA_DEPTH in flight.
 */
static int rdma(struct swc_sess *s, sp_rdma_fn fn, char *buf, uint64_t len, void *h,
		const void *desc, uint32_t desc_len, uint64_t off)
{
	uint64_t posted = 0, done = 0;
	uint32_t n_in = 0, first = 0, bytes;
	uint32_t piece_len[SWC_RDMA_DEPTH];
	int err = 0, ret;

	while (done < len) {
		while (posted < len && n_in < SWC_RDMA_DEPTH) {
			uint32_t k = (first + n_in) % SWC_RDMA_DEPTH;
			uint64_t p = len - posted < s->max_rdma ? len - posted : s->max_rdma;
			struct sp_wsabufex b = { (uint32_t)p, buf + posted, h };

			if (fn(s->s, &b, 1, (void *)desc, desc_len, (uint32_t)(off + posted),
			       &bytes, 0, &s->rdma_ov[k], NULL, NULL, &err) &&
			    err != SP_WSA_IO_PENDING)
				return fail_wsa(s, err);
			piece_len[k] = (uint32_t)p;
			posted += p;
			n_in++;
			s->st.rdma_ops++;
		}
		ret = wait_ov(s, &s->rdma_ov[first], &bytes);
		if (ret)
			return ret;
		if (bytes != piece_len[first])
			return fail(s, EPROTO);
		done += bytes;
		first = (first + 1) % SWC_RDMA_DEPTH;
		n_in--;
	}
	return 0;
}

/* The room for inline payload in a message with desc_len bytes of descriptor. */
static uint32_t room(const struct swc_sess *s, uint32_t desc_len)
{
	return s->o.msg_size - (uint32_t)sizeof(struct swc_hdr) - desc_len;
}

/* One large piece (more than the inline room): inline bytes, then the rest by RDMA. */
static int send_large(struct swc_sess *s, const char *buf, uint64_t len)
{
	struct swc_hdr h = { .type = SWC_MSG_LARGE_WRITE };
	uint8_t desc[SWC_DESC_MAX];
	uint32_t dlen = sizeof(desc), in;
	uint64_t rest, moved = 0;
	char *r;
	void *mh;
	int err = 0, ret, ret2;

	if (s->o.large == SWC_LARGE_READ) {
		in = room(s, SWC_DESC_MAX);
		r = (char *)buf + in;
		rest = len - in;
		if (s->spi.register_rdma_memory(s->s, r, (uint32_t)rest, SP_MEM_READ, desc, &dlen,
						&err))
			return fail_wsa(s, err);
		h = (struct swc_hdr){ .type = SWC_MSG_LARGE_READ,
				      .desc_len = (uint8_t)dlen,
				      .len = in,
				      .total = rest };
		ret = send_msg(s, &h, desc, buf);
		if (!ret)
			ret = expect_ctl(s, EXPECT_DONE);
		if (!ret && s->ctl_total != rest)
			ret = fail(s, EPROTO);
		if (s->spi.deregister_rdma_memory(s->s, desc, dlen, &err) && !ret)
			ret = fail_wsa(s, err);
		return ret;
	}
	in = room(s, 0);
	r = (char *)buf + in;
	rest = len - in;
	h.len = in;
	h.total = rest;
	/* Asked for before the message goes: the first descriptor may come at once. */
	ret = send_msg(s, &h, NULL, buf);
	if (ret)
		return ret;
	mh = s->spi.register_memory(s->s, r, (uint32_t)rest, SP_MEM_READ, &err);
	if (!mh)
		return fail_wsa(s, err);
	while (!ret && moved < rest) {
		ret = expect_ctl(s, EXPECT_DESC);
		if (ret)
			break;
		if (s->ctl_total > rest - moved) {
			ret = fail(s, EPROTO);
			break;
		}
		uint64_t c = s->ctl_total;
		uint8_t d[SWC_DESC_MAX];
		uint32_t dl = s->ctl_desc_len;

		memcpy(d, s->ctl_desc, dl);
		ret = rdma(s, s->spi.rdma_write, r + moved, c, mh, d, dl, 0);
		if (!ret)
			ret = send_ctl(s, SWC_MSG_DONE, c, NULL, 0);
		moved += c;
	}
	ret2 = s->spi.deregister_memory(s->s, mh, &err);
	if (ret2 && !ret)
		ret = fail_wsa(s, err);
	return ret;
}

int swc_send(struct swc_sess *s, const void *data, size_t len)
{
	const char *buf = data;
	int ret;

	if (s->error)
		return s->error;
	if (s->shut)
		return EPIPE; /* as a write after shutdown(SHUT_WR) */
	while (len) {
		uint64_t piece;

		/* Large only when the RDMA part is worth it: above the threshold and the inline
		 * room. */
		if (len > s->threshold && len > room(s, 0)) {
			piece = len - room(s, SWC_DESC_MAX) > SWC_LARGE_MAX
				    ? SWC_LARGE_MAX + room(s, SWC_DESC_MAX)
				    : len;
			ret = send_large(s, buf, piece);
			s->st.large_msgs++;
		} else {
			struct swc_hdr h = { .type = SWC_MSG_DATA };

			piece = len < room(s, 0) ? len : room(s, 0);
			h.len = (uint32_t)piece;
			ret = send_msg(s, &h, NULL, buf);
			s->st.small_msgs++;
		}
		if (ret)
			return ret;
		s->st.bytes_sent += piece;
		buf += piece;
		len -= (size_t)piece;
	}
	return 0;
}

/* The first held message is used up: its slot goes back to the peer. */
static int release_held(struct swc_sess *s)
{
	uint32_t i = s->held[s->held_head];

	s->held_head = (s->held_head + 1) % s->o.ring;
	s->held_n--;
	s->held_off = 0;
	s->large_done = 0;
	return repost(s, i);
}

/* Up to len bytes of the first held large message's RDMA part into buf. */
static int recv_large(struct swc_sess *s, uint32_t i, char *buf, size_t len, size_t *got)
{
	struct swc_rx_info *ri = &s->rx_info[i];
	const uint8_t *desc = (const uint8_t *)rx_msg(s, i) + sizeof(struct swc_hdr);
	uint64_t left = ri->total - s->large_done;
	uint64_t c = len < left ? len : left;
	uint8_t d[SWC_DESC_MAX];
	uint32_t dlen = sizeof(d);
	int err = 0, ret, ret2;

	if (ri->type == SWC_MSG_LARGE_READ || ri->type == SWC_MSG_LARGE_STAGED) {
		void *mh = s->spi.register_memory(s->s, buf, (uint32_t)c, SP_MEM_WRITE, &err);

		if (!mh)
			return fail_wsa(s, err);
		ret = rdma(s, s->spi.rdma_read, buf, c, mh, desc, ri->desc_len, s->large_done);
		ret2 = s->spi.deregister_memory(s->s, mh, &err);
		if (ret2 && !ret)
			ret = fail_wsa(s, err);
		if (ret)
			return ret;
		s->large_done += c;
		if (s->large_done == ri->total) {
			uint8_t type =
			    ri->type == SWC_MSG_LARGE_STAGED ? SWC_MSG_STAGED_DONE : SWC_MSG_DONE;
			uint64_t total = ri->total;

			/*
			 * The slot goes back first: the done needs a credit, and
			 * a peer in the same place (reading, with a done to send)
			 * gets its credit from this repost, or both wait for good.
			 */
			*got = (size_t)c;
			ret = release_held(s);
			return ret ? ret : send_ctl(s, type, total, NULL, 0);
		}
	} else {
		if (s->spi.register_rdma_memory(s->s, buf, (uint32_t)c, SP_MEM_WRITE, d, &dlen,
						&err))
			return fail_wsa(s, err);
		/* Expected before it is asked for: the done may come at once. */
		s->expect = EXPECT_DONE;
		ret = send_ctl(s, SWC_MSG_WRITE_DESC, c, d, dlen);
		if (!ret)
			ret = expect_ctl(s, EXPECT_DONE);
		if (!ret && s->ctl_total != c)
			ret = fail(s, EPROTO);
		ret2 = s->spi.deregister_rdma_memory(s->s, d, dlen, &err);
		if (ret2 && !ret)
			ret = fail_wsa(s, err);
		if (ret)
			return ret;
		s->large_done += c;
	}
	*got = (size_t)c;
	if (s->large_done == ri->total)
		return release_held(s);
	return 0;
}

int swc_recv_some(struct swc_sess *s, void *data, size_t len, size_t *got)
{
	char *buf = data;
	struct swc_rx_info *ri;
	uint32_t i;
	int ret;

	*got = 0;
	if (s->error)
		return s->error;
	if (!len)
		return 0;
	if (!s->held_n) {
		ret = wait_until(s, held_cond, NULL, rx_head_ov(s));
		if (ret)
			return ret;
		if (!s->held_n)
			return s->rx_error;
	}
	i = s->held[s->held_head];
	ri = &s->rx_info[i];
	if (ri->type == SWC_MSG_SHUTDOWN) {
		/*
		 * Held for good: every later call reads 0 too.  What arrived
		 * behind it is looked at first, so that data after a shutdown is
		 * the protocol error it is whether or not its completion came in
		 * before this call.
		 */
		ret = progress(s, false);
		return ret ? ret : s->error;
	}
	if (s->held_off < ri->len) {
		size_t n = ri->len - s->held_off < len ? ri->len - s->held_off : len;

		memcpy(buf, rx_msg(s, i) + sizeof(struct swc_hdr) + ri->desc_len + s->held_off, n);
		s->held_off += (uint32_t)n;
		*got = n;
		s->st.bytes_received += n;
		if (ri->type == SWC_MSG_DATA && s->held_off == ri->len)
			return release_held(s);
		return 0;
	}
	ret = recv_large(s, i, buf, len, got);
	s->st.bytes_received += *got;
	return ret;
}

int swc_recv(struct swc_sess *s, void *data, size_t len)
{
	char *buf = data;
	size_t got;
	int ret;

	while (len) {
		ret = swc_recv_some(s, buf, len, &got);
		if (ret)
			return ret;
		if (!got)
			return EPIPE;
		buf += got;
		len -= got;
	}
	return 0;
}

/* Whether the next transmit slot is free (its send completed), without waiting. */
static bool tx_slot_free(struct swc_sess *s)
{
	uint32_t bytes;
	int wsa;

	if (!s->tx_busy[s->tx_next])
		return true;
	if (!ov_done(s, &s->tx_ov[s->tx_next], &wsa, &bytes))
		return false;
	s->tx_busy[s->tx_next] = false;
	/* The connection broke: what came in is still read (rx_error). */
	if (wsa && !s->eof)
		rx_broken(s, wsa);
	return true;
}

int swc_poll(struct swc_sess *s, struct swc_ready *r)
{
	memset(r, 0, sizeof(*r));
	/*
	 * Not idle: a look must not cost an RDMA write per message read.  The
	 * half-ring rule tells the peer before it can stall (a peer without
	 * credits has ring - 1 messages unacknowledged, and this end owes at
	 * least half of them once it has read them); waits still tell it all.
	 */
	if (!s->error)
		progress(s, false);
	r->rx_msgs = s->rx_msgs;
	for (uint32_t k = 0; k < s->held_n; k++) {
		uint32_t i = s->held[(s->held_head + k) % s->o.ring];
		const struct swc_rx_info *ri = &s->rx_info[i];

		r->readable = true;
		r->bytes += ri->len + ri->total;
		if (!k)
			r->bytes -= s->held_off + s->large_done;
	}
	if (s->error || rx_over(s)) {
		/* A failure, or nothing more can come: read and write answer at once. */
		r->readable = r->writable = true;
		return s->error;
	}
	r->writable = s->shut || s->rx_error ||
		      (credits(s) >= 2 && tx_slot_free(s) && s->stage_n < SWC_STAGE_SLOTS);
	return 0;
}

/* Register the staging slots, once; on failure non-blocking sends stay copied. */
static void stage_init(struct swc_sess *s)
{
	uint32_t k;
	int err = 0;

	s->stage = swc_os_alloc_pages((size_t)SWC_STAGE_SLOTS * SWC_STAGE_SLOT);
	if (!s->stage)
		goto err;
	for (k = 0; k < SWC_STAGE_SLOTS; k++) {
		s->stage_desc_len[k] = SWC_DESC_MAX;
		if (s->spi.register_rdma_memory(s->s, s->stage + (size_t)k * SWC_STAGE_SLOT,
						SWC_STAGE_SLOT, SP_MEM_READ, s->stage_desc[k],
						&s->stage_desc_len[k], &err))
			goto err_dereg;
	}
	return;

err_dereg:
	while (k--)
		s->spi.deregister_rdma_memory(s->s, s->stage_desc[k], s->stage_desc_len[k], &err);
	swc_os_free_pages(s->stage);
	s->stage = NULL;
err:
	s->stage_off = true;
}

static void stage_fini(struct swc_sess *s)
{
	int err;

	if (!s->stage)
		return;
	for (uint32_t k = 0; k < SWC_STAGE_SLOTS; k++)
		s->spi.deregister_rdma_memory(s->s, s->stage_desc[k], s->stage_desc_len[k], &err);
	swc_os_free_pages(s->stage);
	s->stage = NULL;
}

/*
 * A large piece without waiting: copied into the next staging slot and
 * announced; the peer reads it when its application asks.  0 with *piece
 * bytes taken, EAGAIN when every slot is on the way (or none can be used).
 */
static int send_staged(struct swc_sess *s, const char *buf, size_t len, size_t *piece)
{
	struct swc_hdr h = { .type = SWC_MSG_LARGE_STAGED };
	uint32_t k;
	int ret;

	if (s->o.large != SWC_LARGE_READ || s->stage_off || s->stage_n == SWC_STAGE_SLOTS)
		return EAGAIN;
	if (!s->stage) {
		stage_init(s);
		if (!s->stage)
			return EAGAIN;
	}
	k = (s->stage_head + s->stage_n) % SWC_STAGE_SLOTS;
	*piece = len < SWC_STAGE_SLOT ? len : SWC_STAGE_SLOT;
	memcpy(s->stage + (size_t)k * SWC_STAGE_SLOT, buf, *piece);
	h.desc_len = (uint8_t)s->stage_desc_len[k];
	h.total = *piece;
	ret = send_msg(s, &h, s->stage_desc[k], NULL);
	if (ret)
		return ret;
	s->stage_len[k] = *piece;
	s->stage_n++;
	s->st.staged_msgs++;
	s->st.large_msgs++;
	return 0;
}

int swc_send_some(struct swc_sess *s, const void *data, size_t len, size_t *sent)
{
	const char *buf = data;
	int ret;

	*sent = 0;
	if (s->error)
		return s->error;
	if (s->shut)
		return EPIPE;
	progress(s, false);
	if (s->rx_error)
		return s->rx_error;
	while (len && !s->error && credits(s) >= 2 && tx_slot_free(s)) {
		struct swc_hdr h = { .type = SWC_MSG_DATA };
		size_t piece = len < room(s, 0) ? len : room(s, 0);

		/* Above the threshold: staged (one message, read by RDMA) while a slot is free. */
		ret = len > s->threshold && len > room(s, 0) ? send_staged(s, buf, len, &piece)
							     : EAGAIN;
		/* Every slot on the way: the send buffer is full, as TCP's would be. */
		if (ret == EAGAIN && s->stage_n == SWC_STAGE_SLOTS)
			break;
		if (ret == EAGAIN) {
			piece = len < room(s, 0) ? len : room(s, 0);
			h.len = (uint32_t)piece;
			ret = send_msg(s, &h, NULL, buf);
			s->st.small_msgs++;
		}
		if (ret)
			return *sent ? 0 : ret;
		s->st.bytes_sent += piece;
		*sent += piece;
		buf += piece;
		len -= piece;
	}
	if (*sent)
		return 0;
	return s->error ? s->error : EAGAIN;
}

int swc_shutdown(struct swc_sess *s)
{
	int ret;

	if (s->error)
		return s->error;
	if (s->shut)
		return 0;
	ret = send_ctl(s, SWC_MSG_SHUTDOWN, 0, NULL, 0);
	if (!ret)
		s->shut = true;
	return ret;
}

static int events_init(struct swc_sess *s, struct sp_overlapped *ov)
{
	if (!s->o.events) {
		ov->event = 1; /* bit 0: no up-call, the session polls */
		return 0;
	}
	return s->o.events->create(s->o.events->ctx, &ov->event);
}

static void events_fini(struct swc_sess *s, struct sp_overlapped *ov)
{
	if (s->o.events && ov->event)
		s->o.events->destroy(s->o.events->ctx, ov->event);
	ov->event = 0;
}

static void all_events(struct swc_sess *s, void (*fn)(struct swc_sess *, struct sp_overlapped *))
{
	for (uint32_t i = 0; s->tx_ov && i < s->o.ring; i++) {
		fn(s, &s->tx_ov[i]);
		fn(s, &s->rx_ov[i]);
	}
	for (uint32_t i = 0; i < SWC_RDMA_DEPTH; i++)
		fn(s, &s->rdma_ov[i]);
	fn(s, &s->credit_ov);
}

static void free_all(struct swc_sess *s)
{
	all_events(s, events_fini);
	swc_os_free_pages(s->tx);
	swc_os_free_pages(s->rx);
	swc_os_free_pages(s->credit_word);
	free(s->tx_ov);
	free(s->rx_ov);
	free(s->rx_info);
	free(s->tx_busy);
	free(s->posted);
	free(s->held);
}

int swc_sess_init(struct swc_sess *s, const struct swc_spi *spi, sp_socket sock,
		  const struct swc_opts *opts)
{
	int32_t v;
	int err = 0, len = sizeof(v), ret;
	size_t ring_bytes;
	uint32_t r;

	memset(s, 0, sizeof(*s));
	s->spi = *spi;
	s->s = sock;
	if (opts)
		s->o = *opts;
	r = s->o.ring = s->o.ring ? s->o.ring : 16;
	s->o.msg_size = s->o.msg_size ? s->o.msg_size : 4096;
	s->o.spin_us = s->o.spin_us ? s->o.spin_us : 50;
	s->o.timeout_ms = s->o.timeout_ms ? s->o.timeout_ms : 30000;
	if (r < 2 || r > 4096 || s->o.msg_size < sizeof(struct swc_hdr) + 2 * SWC_DESC_MAX ||
	    s->o.msg_size > (1u << 20) || (s->o.events && !s->o.events->wait)) {
		ret = EINVAL;
		goto err_close;
	}
	if (spi->p->get_sock_opt(sock, SP_SOL_SOCKET, SP_SO_RDMA_THRESHOLD_SIZE, (char *)&v, &len,
				 &err)) {
		ret = fail_wsa(s, err);
		goto err_close;
	}
	s->threshold = (uint32_t)v;
	len = sizeof(v);
	if (spi->p->get_sock_opt(sock, SP_SOL_SOCKET, SP_SO_MAX_RDMA_SIZE, (char *)&v, &len,
				 &err)) {
		ret = fail_wsa(s, err);
		goto err_close;
	}
	s->max_rdma = v > 0 ? (uint32_t)v : 4096;
	ring_bytes = (size_t)r * s->o.msg_size;
	s->tx = swc_os_alloc_pages(ring_bytes);
	s->rx = swc_os_alloc_pages(ring_bytes);
	/* Two cache lines: the peer's word, and the source of this end's writes. */
	s->credit_word = swc_os_alloc_pages(128);
	s->tx_ov = calloc(r, sizeof(*s->tx_ov));
	s->rx_ov = calloc(r, sizeof(*s->rx_ov));
	s->rx_info = calloc(r, sizeof(*s->rx_info));
	s->tx_busy = calloc(r, sizeof(*s->tx_busy));
	s->posted = calloc(r, sizeof(*s->posted));
	s->held = calloc(r, sizeof(*s->held));
	if (!s->tx || !s->rx || !s->credit_word || !s->tx_ov || !s->rx_ov || !s->rx_info ||
	    !s->tx_busy || !s->posted || !s->held) {
		ret = ENOMEM;
		goto err_free;
	}
	memset(s->credit_word, 0, 128);
	s->credit_word[1] = ~(uint64_t)0;
	s->credit_src = s->credit_word + 8;
	for (uint32_t i = 0; i < r; i++) {
		ret = events_init(s, &s->tx_ov[i]);
		if (!ret)
			ret = events_init(s, &s->rx_ov[i]);
		if (ret)
			goto err_free;
	}
	for (uint32_t i = 0; i < SWC_RDMA_DEPTH; i++) {
		ret = events_init(s, &s->rdma_ov[i]);
		if (ret)
			goto err_free;
	}
	ret = events_init(s, &s->credit_ov);
	if (ret)
		goto err_free;
	/* Each ring VA-contiguous and registered once; the handles go with the socket. */
	s->tx_h = spi->register_memory(sock, s->tx, (uint32_t)ring_bytes, SP_MEM_READ, &err);
	s->rx_h = s->tx_h
		      ? spi->register_memory(sock, s->rx, (uint32_t)ring_bytes, SP_MEM_WRITE, &err)
		      : NULL;
	s->credit_src_h = s->rx_h ? spi->register_memory(sock, (char *)s->credit_src,
							 2 * sizeof(uint64_t), SP_MEM_READ, &err)
				  : NULL;
	s->credit_desc_len = sizeof(s->credit_desc);
	if (!s->credit_src_h ||
	    spi->register_rdma_memory(sock, s->credit_word, 2 * sizeof(uint64_t), SP_MEM_WRITE,
				      s->credit_desc, &s->credit_desc_len, &err)) {
		ret = fail_wsa(s, err);
		goto err_free;
	}
	for (uint32_t i = 0; i < r; i++) {
		ret = post_rx(s, i);
		if (ret)
			goto err_free;
	}
	/* The peer's ring is assumed ours until its hello says otherwise. */
	s->peer_ring = r;
	s->hello = true; /* lets the hello itself be sent */
	ret = send_ctl(s, SWC_MSG_HELLO, r | (uint64_t)s->o.msg_size << 32, s->credit_desc,
		       s->credit_desc_len);
	s->hello = false;
	s->st.ctl_msgs = 0;
	if (ret)
		goto err_free;
	/* The peer's hello is taken by the first call that waits: no round trip here. */
	return 0;

err_free:
	/* Closing aborts the receives before their memory goes. */
	spi->p->close_socket(sock, &err);
	free_all(s);
	memset(s, 0, sizeof(*s));
	return ret;
err_close:
	spi->p->close_socket(sock, &err);
	memset(s, 0, sizeof(*s));
	return ret;
}

static bool sends_left_cond(struct swc_sess *s, void *arg)
{
	(void)arg;
	for (uint32_t i = 0; i < s->o.ring; i++) {
		uint32_t bytes;
		int wsa;

		if (s->tx_busy[i] && ov_done(s, &s->tx_ov[i], &wsa, &bytes))
			s->tx_busy[i] = false;
		if (s->tx_busy[i])
			return false;
	}
	if (s->credit_busy) {
		uint32_t bytes;
		int wsa;

		if (!ov_done(s, &s->credit_ov, &wsa, &bytes))
			return false;
		s->credit_busy = false;
	}
	/* Staged data is the peer's to read until its done (unless it is gone). */
	return !s->stage_n || s->rx_error;
}

void swc_sess_fini(struct swc_sess *s)
{
	int err;

	if (!s->tx_ov)
		return;
	/*
	 * A close is graceful, as TCP's: the peer reads this end's shutdown
	 * after the data (not a reset), and the sends still on the way are
	 * waited for (closing would abort them and the peer would miss them).
	 */
	if (!s->error && !s->rx_error && !s->shut)
		(void)swc_shutdown(s);
	if (!s->error)
		wait_until(s, sends_left_cond, NULL, NULL);
	stage_fini(s);
	/* The receives still posted complete aborted, before their memory goes. */
	s->spi.p->close_socket(s->s, &err);
	free_all(s);
	memset(s, 0, sizeof(*s));
}
