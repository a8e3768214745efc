/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The switch core against a hand-written peer on the other socket of a
 * pair: garbage, sizes that lie, truncated messages, credits never given
 * or given too many, a done nobody asked for, a peer that goes silent or
 * closes mid-transfer.  The session fails with an error, never a crash or
 * a hang: every wait is bounded by the session's timeout.  And flow
 * control: a session never fills more of the peer's ring than the credits
 * allow.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sw.h"
#include "swc_wire.h"
#include "tpair.h"

#define RAW_N 64 /* more receives than the session's ring: overruns would land */
#define RAW_MSG 4096

static struct sw sw;
static struct swc_spi spi;

struct raw {
	sp_socket s;
	char *tx, *rx;
	void *tx_h, *rx_h;
	struct sp_overlapped rov[RAW_N], tov[RAW_N];
	unsigned int n_tx, n_rx;
	uint64_t *word; /* the credit word the session may write */
	uint8_t desc[SWC_DESC_MAX];
	uint32_t desc_len;
};

static void raw_init(struct raw *r, sp_socket s)
{
	int err = 0;
	uint32_t flags = 0;

	memset(r, 0, sizeof(*r));
	r->s = s;
	r->tx = aligned_alloc(4096, RAW_N * RAW_MSG);
	r->rx = aligned_alloc(4096, RAW_N * RAW_MSG);
	r->word = aligned_alloc(4096, 4096);
	cr_assert(r->tx && r->rx && r->word);
	r->tx_h = sw.register_memory(s, r->tx, RAW_N * RAW_MSG, SP_MEM_READ, &err);
	r->rx_h = sw.register_memory(s, r->rx, RAW_N * RAW_MSG, SP_MEM_WRITE, &err);
	cr_assert(r->tx_h && r->rx_h);
	r->desc_len = sizeof(r->desc);
	cr_assert_eq(
	    sw.register_rdma_memory(s, r->word, 16, SP_MEM_WRITE, r->desc, &r->desc_len, &err), 0);
	for (unsigned int i = 0; i < RAW_N; i++) {
		struct sp_wsabufex b = { RAW_MSG, r->rx + i * RAW_MSG, r->rx_h };

		r->rov[i].event = r->tov[i].event = 1;
		flags = 0;
		cr_assert(sw.p.recv(s, &b, 1, NULL, &flags, &r->rov[i], NULL, NULL, &err) &&
			  err == SP_WSA_IO_PENDING);
	}
}

/* Send len bytes as one message. */
static void raw_send(struct raw *r, const void *msg, uint32_t len)
{
	unsigned int i = r->n_tx++;
	struct sp_wsabufex b = { len, r->tx + i * RAW_MSG, r->tx_h };
	int err = 0;

	cr_assert_lt(i, RAW_N);
	memcpy(b.buf, msg, len);
	cr_assert(sw.p.send(r->s, &b, 1, NULL, 0, &r->tov[i], NULL, NULL, &err) &&
		  err == SP_WSA_IO_PENDING);
}

static void raw_hdr(struct raw *r, uint8_t type, uint32_t credits, uint32_t len, uint64_t total,
		    const void *desc, uint8_t desc_len, const void *payload, uint32_t sent_len)
{
	char m[RAW_MSG];
	struct swc_hdr h = {
		.type = type, .desc_len = desc_len, .credits = credits, .len = len, .total = total
	};

	memcpy(m, &h, sizeof(h));
	if (desc_len)
		memcpy(m + sizeof(h), desc, desc_len);
	if (payload)
		memcpy(m + sizeof(h) + desc_len, payload, sent_len - sizeof(h) - desc_len);
	raw_send(r, m, sent_len);
}

static void raw_hello(struct raw *r)
{
	raw_hdr(r, SWC_MSG_HELLO, 0, 0, 16 | (uint64_t)4096 << 32, r->desc, (uint8_t)r->desc_len,
		NULL, (uint32_t)sizeof(struct swc_hdr) + r->desc_len);
}

/* How many of the session's messages arrived. */
static unsigned int raw_received(struct raw *r)
{
	uint32_t n, flags;
	int err;

	while (r->n_rx < RAW_N &&
	       !sw.p.get_overlapped_result(r->s, &r->rov[r->n_rx], &n, 0, &flags, &err))
		r->n_rx++;
	return r->n_rx;
}

/* The session's messages that arrived once n did (or a second passed): its sends land later. */
static unsigned int raw_received_wait(struct raw *r, unsigned int n)
{
	for (int i = 0; i < 1000 && raw_received(r) < n; i++)
		usleep(1000);
	return raw_received(r);
}

static void raw_fini(struct raw *r)
{
	int err;

	sw.p.close_socket(r->s, &err);
	free(r->tx);
	free(r->rx);
	free(r->word);
}

static struct swc_sess ss;
static struct raw raw;
static const struct swc_opts quick = { .timeout_ms = 300 };

static void setup(void)
{
	sp_socket c, a;

	cr_assert_eq(sw_load(&sw), 0);
	sw_spi(&sw, &spi);
	sw_pair(&sw, &c, &a);
	cr_assert(c != SP_INVALID_SOCKET && a != SP_INVALID_SOCKET);
	raw_init(&raw, a);
	cr_assert_eq(swc_sess_init(&ss, &spi, c, &quick), 0);
}

static void teardown(void)
{
	swc_sess_fini(&ss);
	raw_fini(&raw);
	sw_unload(&sw);
}

TestSuite(swc_hostile, .init = setup, .fini = teardown, .timeout = 60);

static int recv_byte(void)
{
	char b[64];

	return swc_recv(&ss, b, sizeof(b));
}

Test(swc_hostile, garbage_first)
{
	char junk[100];

	fill_pattern(junk, sizeof(junk), 5);
	raw_send(&raw, junk, sizeof(junk));
	cr_assert_eq(recv_byte(), EPROTO);
	/* Failed for good. */
	cr_assert_eq(swc_send(&ss, "x", 1), EPROTO);
}

Test(swc_hostile, data_before_hello)
{
	raw_hdr(&raw, SWC_MSG_DATA, 0, 10, 0, NULL, 0, "0123456789",
		(uint32_t)sizeof(struct swc_hdr) + 10);
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, header_cut_short)
{
	raw_hello(&raw);
	raw_send(&raw, "\2\0\0\0", 4);
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, length_past_the_message)
{
	char p[100] = { 0 };

	raw_hello(&raw);
	/* Says 4000 bytes, sends 100. */
	raw_hdr(&raw, SWC_MSG_DATA, 0, 4000, 0, NULL, 0, p, (uint32_t)sizeof(struct swc_hdr) + 100);
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, descriptor_too_long)
{
	char p[200] = { 0 };

	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_LARGE_READ, 0, 0, 100000, p, 200, NULL,
		(uint32_t)sizeof(struct swc_hdr) + 200);
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, large_beyond_the_limit)
{
	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_LARGE_WRITE, 0, 0, SWC_LARGE_MAX + 1, NULL, 0, NULL,
		(uint32_t)sizeof(struct swc_hdr));
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, descriptor_of_garbage)
{
	uint8_t junk[40];
	char buf[8192];

	fill_pattern(junk, sizeof(junk), 9);
	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_LARGE_READ, 0, 0, 100000, junk, sizeof(junk), NULL,
		(uint32_t)sizeof(struct swc_hdr) + sizeof(junk));
	/* The RDMA read through a made-up descriptor fails; the session with it. */
	int ret = swc_recv(&ss, buf, sizeof(buf));
	cr_assert(ret != 0 && ret != ETIMEDOUT, "got %d", ret);
}

Test(swc_hostile, too_many_credits)
{
	raw_hello(&raw);
	/* Credits for messages never sent. */
	raw_hdr(&raw, SWC_MSG_DATA, 1000, 1, 0, NULL, 0, "x", (uint32_t)sizeof(struct swc_hdr) + 1);
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, done_nobody_asked_for)
{
	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_DONE, 0, 0, 5, NULL, 0, NULL, (uint32_t)sizeof(struct swc_hdr));
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, data_after_shutdown)
{
	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_SHUTDOWN, 0, 0, 0, NULL, 0, NULL, (uint32_t)sizeof(struct swc_hdr));
	raw_hdr(&raw, SWC_MSG_DATA, 0, 1, 0, NULL, 0, "x", (uint32_t)sizeof(struct swc_hdr) + 1);
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, silent_peer_times_out)
{
	raw_hello(&raw);
	cr_assert_eq(recv_byte(), ETIMEDOUT);
}

Test(swc_hostile, peer_closes_mid_transfer)
{
	char buf[100];

	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_LARGE_WRITE, 0, 10, 100000, NULL, 0, "0123456789",
		(uint32_t)sizeof(struct swc_hdr) + 10);
	/* The inline part comes; then the peer is gone before it writes. */
	cr_assert_eq(swc_recv(&ss, buf, 10), 0);
	cr_assert_eq(memcmp(buf, "0123456789", 10), 0);
	raw_fini(&raw);
	raw.tx = raw.rx = NULL;
	raw.word = NULL;
	int ret = swc_recv(&ss, buf, sizeof(buf));
	cr_assert(ret != 0, "a closed peer's transfer succeeded");
	/* The pair's other socket is closed already. */
	raw.s = SP_INVALID_SOCKET;
}

/* Wait for the raw peer's sends, then close it as the test's end of the pair. */
static void raw_close_after_sends(struct raw *r)
{
	uint32_t n, flags;
	int err;

	for (unsigned int i = 0; i < r->n_tx; i++)
		cr_assert_eq(sw.p.get_overlapped_result(r->s, &r->tov[i], &n, 1, &flags, &err), 0);
	raw_fini(r);
	r->tx = r->rx = NULL;
	r->word = NULL;
	r->s = SP_INVALID_SOCKET;
	usleep(100 * 1000); /* the session's receives behind the data complete flushed */
}

/* A peer that sends and then resets: the data is read first, then ECONNRESET. */
Test(swc_hostile, data_before_a_reset_is_read)
{
	char buf[16] = { 0 };
	size_t got = 0;

	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_DATA, 0, 3, 0, NULL, 0, "abc", (uint32_t)sizeof(struct swc_hdr) + 3);
	raw_hdr(&raw, SWC_MSG_DATA, 0, 3, 0, NULL, 0, "def", (uint32_t)sizeof(struct swc_hdr) + 3);
	raw_close_after_sends(&raw);
	int r6 = swc_recv(&ss, buf, 6);
	cr_assert_eq(r6, 0, "the data before the reset is lost: %d wsa %d", r6, ss.wsa_error);
	cr_assert_str_eq(buf, "abcdef");
	cr_assert_eq(swc_recv_some(&ss, buf, sizeof(buf), &got), ECONNRESET);
	cr_assert_eq(got, 0);
	cr_assert_eq(swc_send(&ss, "x", 1), ECONNRESET);
}

/* Data, shutdown, close: the data, then the end of the stream (not an error). */
Test(swc_hostile, data_shutdown_close_reads_the_end)
{
	char buf[16] = { 0 };
	size_t got = 1;

	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_DATA, 0, 3, 0, NULL, 0, "abc", (uint32_t)sizeof(struct swc_hdr) + 3);
	raw_hdr(&raw, SWC_MSG_SHUTDOWN, 0, 0, 0, NULL, 0, NULL, (uint32_t)sizeof(struct swc_hdr));
	raw_close_after_sends(&raw);
	cr_assert_eq(swc_recv(&ss, buf, 3), 0, "the data before the close is lost");
	cr_assert_str_eq(buf, "abc");
	cr_assert_eq(swc_recv_some(&ss, buf, sizeof(buf), &got), 0);
	cr_assert_eq(got, 0);
}

/*
 * A peer that posted more receives than the session's ring but gives no
 * credit back: the session stops at its credits (the hello and ring - 2
 * data messages, one credit kept for control messages) and times out.
 */
Test(swc_hostile, sender_never_overruns_the_ring)
{
	char m[64] = { 0 };
	int ret = 0;

	raw_hello(&raw);
	for (int i = 0; i < 2 * 16 && !ret; i++)
		ret = swc_send(&ss, m, sizeof(m));
	cr_assert_eq(ret, ETIMEDOUT);
	cr_assert_eq(raw_received(&raw), 16 - 1, "the peer got %u messages", raw.n_rx);
	cr_assert_gt(ss.st.credit_stalls, 0);
}

/* And once the peer writes its credit word, the session goes on. */
Test(swc_hostile, credit_word_lets_it_go_on)
{
	struct swc_opts o = quick;
	char m[64] = { 0 };

	(void)o;
	raw_hello(&raw);
	for (int i = 0; i < 14; i++)
		cr_assert_eq(swc_send(&ss, m, sizeof(m)), 0);
	cr_assert_eq(raw_received_wait(&raw, 15), 15);
	/* The peer's credit word: ten receives posted again (complement beside it). */
	uint64_t w[2] = { 10, ~(uint64_t)10 };
	char *src = aligned_alloc(4096, 4096);
	int err = 0;
	uint32_t bytes;
	struct sp_overlapped ov = { .event = 1 };
	uint32_t flags;

	memcpy(src, w, sizeof(w));
	void *h = sw.register_memory(raw.s, src, 16, SP_MEM_READ, &err);
	struct sp_wsabufex b = { 16, src, h };
	cr_assert(h);
	/* Where the session's hello said its word is: read it from the first message. */
	struct swc_hdr hh;
	memcpy(&hh, raw.rx, sizeof(hh));
	cr_assert_eq(hh.type, SWC_MSG_HELLO);
	cr_assert(sw.rdma_write(raw.s, &b, 1, raw.rx + sizeof(hh), hh.desc_len, 0, &bytes, 0, &ov,
				NULL, NULL, &err) == 0 ||
		  err == SP_WSA_IO_PENDING);
	while (sw.p.get_overlapped_result(raw.s, &ov, &bytes, 0, &flags, &err))
		cr_assert_eq(err, SP_WSA_IO_INCOMPLETE);
	/* Ten more fit now (RAW_N receives are posted: they land). */
	for (int i = 0; i < 8; i++)
		cr_assert_eq(swc_send(&ss, m, sizeof(m)), 0);
	/*
	 * Then credits come in headers only, far past the word's old value,
	 * which stays there: the session must not take it for a count again.
	 */
	for (int i = 0; i < 30; i++) {
		char c;

		cr_assert_eq(swc_send(&ss, m, sizeof(m)), 0);
		raw_hdr(&raw, SWC_MSG_DATA, ss.sent, 1, 0, NULL, 0, "y",
			(uint32_t)sizeof(struct swc_hdr) + 1);
		cr_assert_eq(swc_recv(&ss, &c, 1), 0, "round %d: %d", i, ss.error);
	}
	free(src);
}

/* The peer writes count into the session's credit word (where its hello said) and waits. */
static void raw_word(struct raw *r, uint64_t count)
{
	uint64_t w[2] = { count, ~count };
	char *src = aligned_alloc(4096, 4096);
	struct sp_overlapped ov = { .event = 1 };
	struct swc_hdr hh;
	uint32_t bytes, flags;
	int err = 0;
	void *h;

	cr_assert(src);
	memcpy(src, w, sizeof(w));
	h = sw.register_memory(r->s, src, 16, SP_MEM_READ, &err);
	cr_assert(h);
	struct sp_wsabufex b = { 16, src, h };
	memcpy(&hh, r->rx, sizeof(hh));
	cr_assert_eq(hh.type, SWC_MSG_HELLO);
	cr_assert(sw.rdma_write(r->s, &b, 1, r->rx + sizeof(hh), hh.desc_len, 0, &bytes, 0, &ov,
				NULL, NULL, &err) == 0 ||
		  err == SP_WSA_IO_PENDING);
	while (sw.p.get_overlapped_result(r->s, &ov, &bytes, 0, &flags, &err))
		cr_assert_eq(err, SP_WSA_IO_INCOMPLETE);
	sw.deregister_memory(r->s, h, &err);
	free(src);
}

/*
 * A header sent long before the word was last written may be taken after
 * it (the word is memory, the header waits for its completion): its count,
 * older than the word's by more than a ring, is old news, not a lie.
 */
Test(swc_hostile, an_old_count_after_a_newer_word)
{
	char m[64] = { 0 }, c;
	struct swc_ready rd;

	raw_hello(&raw);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 14; i++)
			cr_assert_eq(swc_send(&ss, m, sizeof(m)), 0, "round %d", round);
		raw_word(&raw, ss.sent);
	}
	cr_assert_eq(swc_poll(&ss, &rd), 0);
	cr_assert_eq(ss.peer_posted, ss.sent, "the word was not taken");
	cr_assert_gt(ss.peer_posted, 2 + 16);
	/* Sent by the peer when it had posted two receives again. */
	raw_hdr(&raw, SWC_MSG_DATA, 2, 1, 0, NULL, 0, "y", (uint32_t)sizeof(struct swc_hdr) + 1);
	cr_assert_eq(swc_recv(&ss, &c, 1), 0, "an old count failed the session");
	cr_assert_eq(c, 'y');
	cr_assert_eq(swc_send(&ss, m, sizeof(m)), 0);
}

/*
 * A poll after each message read does not write the credit word for it
 * (an RDMA write per message): the peer is told once half the ring is owed
 * (its hello and seven messages).
 */
Test(swc_hostile, polls_write_credits_by_half_rings)
{
	struct swc_ready rd;
	char c;

	raw_hello(&raw);
	for (int i = 0; i < 6; i++) {
		raw_hdr(&raw, SWC_MSG_DATA, 0, 1, 0, NULL, 0, "z",
			(uint32_t)sizeof(struct swc_hdr) + 1);
		do
			cr_assert_eq(swc_poll(&ss, &rd), 0);
		while (!rd.readable);
		cr_assert_eq(swc_recv(&ss, &c, 1), 0);
		cr_assert_eq(swc_poll(&ss, &rd), 0);
	}
	cr_assert_eq(ss.st.credit_writes, 0, "%llu credit writes for 6 messages",
		     (unsigned long long)ss.st.credit_writes);
	raw_hdr(&raw, SWC_MSG_DATA, 0, 1, 0, NULL, 0, "z", (uint32_t)sizeof(struct swc_hdr) + 1);
	do
		cr_assert_eq(swc_poll(&ss, &rd), 0);
	while (!rd.readable);
	cr_assert_eq(swc_recv(&ss, &c, 1), 0);
	cr_assert_eq(swc_poll(&ss, &rd), 0);
	cr_assert_eq(ss.st.credit_writes, 1);
}

/* A staged done for a slot never sent, or with another length: a protocol error. */
Test(swc_hostile, staged_done_nobody_asked_for)
{
	raw_hello(&raw);
	raw_hdr(&raw, SWC_MSG_STAGED_DONE, 0, 0, 5, NULL, 0, NULL, sizeof(struct swc_hdr));
	cr_assert_eq(recv_byte(), EPROTO);
}

Test(swc_hostile, staged_done_of_another_length)
{
	static char big[100000];
	struct swc_ready rd;
	size_t sent;

	raw_hello(&raw);
	cr_assert_eq(swc_send_some(&ss, big, sizeof(big), &sent), 0);
	cr_assert_eq(ss.st.staged_msgs, 1);
	raw_hdr(&raw, SWC_MSG_STAGED_DONE, 0, 0, 5, NULL, 0, NULL, sizeof(struct swc_hdr));
	for (int i = 0; i < 1000 && !ss.error; i++) {
		swc_poll(&ss, &rd);
		usleep(1000);
	}
	cr_assert_eq(ss.error, EPROTO);
}
