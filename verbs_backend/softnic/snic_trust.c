/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic's trust boundary (docs/softnic-security.md): who may connect,
 * who may reach this process's memory, how connections that do not speak
 * are kept from holding back those that do, and keys a peer cannot guess.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "snic.h"

int snic_peer_admit(struct snic_peer *peer, snic_handle sock)
{
	int ret;

	if (peer->admitted)
		return 0;
	/* Another user's process is refused here, before anything is mapped or sent. */
	ret = snic_os_conn_peer(sock, &peer->pid, &peer->self, &peer->pidfd);
	if (ret)
		return ret;
	if (!peer->self) {
		ret = snic_os_peer_trust(peer->pid);
		if (ret) {
			snic_os_close(peer->pidfd);
			peer->pidfd = SNIC_NO_HANDLE;
			return ret;
		}
	}
	peer->admitted = true;
	return 0;
}

int snic_peer_readmit(struct snic_peer *peer, pid_t pid)
{
	snic_handle proc;
	bool self;
	int ret;

	if (!pid || pid == peer->pid)
		return 0;
	ret = snic_os_peer_open(pid, &self, &proc);
	if (!ret && !self)
		ret = snic_os_peer_trust(pid);
	if (ret) {
		snic_os_close(proc);
		return ret;
	}
	snic_peer_dismiss(peer);
	snic_os_close(peer->pidfd);
	peer->pid = pid;
	peer->self = self;
	peer->pidfd = proc;
	peer->admitted = true;
	return 0;
}

void snic_peer_dismiss(struct snic_peer *peer)
{
	if (peer->admitted && !peer->self)
		snic_os_peer_untrust(peer->pid);
	peer->admitted = false;
}

/*
 * Key tags: a keyed permutation of the slot's registration count, on the
 * 32 - log2(max_mr) bits the slot leaves free.  Counts start at random, so
 * neither a neighbour's key nor the previous key of the slot says anything
 * about the next one, and a slot's key comes back only after 2^bits
 * registrations of that slot (the FIFO of free slots multiplies that by
 * the table's size).  A balanced Feistel network of four rounds on the
 * next even width, walked until the value fits, is a permutation of any
 * width.
 */
static uint32_t key_round(uint32_t x, uint32_t k)
{
	x ^= k;
	x *= 0x9e3779b1u;
	x ^= x >> 15;
	x *= 0x85ebca77u;
	x ^= x >> 13;
	return x;
}

static uint32_t key_permute(const uint32_t secret[4], unsigned int bits, uint32_t v)
{
	unsigned int half = (bits + 1) / 2;
	uint32_t mask = (1u << half) - 1;

	do {
		uint32_t l = v >> half, r = v & mask;

		for (int i = 0; i < 4; i++) {
			uint32_t t = l ^ (key_round(r, secret[i]) & mask);
			l = r;
			r = t;
		}
		v = l << half | r;
	} while (v >> bits);
	return v;
}

uint32_t snic_key_make(const uint32_t secret[4], uint32_t max_mr, uint32_t slot, uint32_t *gen)
{
	unsigned int idx_bits = 0, tag_bits;
	uint32_t key;

	/* max_mr >= 16: the tag has 8 to 28 bits. */
	while ((1u << idx_bits) < max_mr)
		idx_bits++;
	tag_bits = 32 - idx_bits;
	do {
		uint32_t c = (*gen)++ & ((1u << tag_bits) - 1);
		key = slot | key_permute(secret, tag_bits, c) << idx_bits;
	} while (!key); /* 0 is no key */
	return key;
}

/* Pending connections ------------------------------------------------------ */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int snic_pending_init(struct snic_pending *p, struct snic_os_watch *ready)
{
	p->ready = ready;
	p->n = 0;
	return pthread_mutex_init(&p->lock, NULL);
}

static void pending_drop(struct snic_pending *p, int i)
{
	if (p->sock[i] != SNIC_NO_HANDLE) {
		snic_os_watch_remove(p->ready, p->sock[i]);
		snic_os_close(p->sock[i]);
	}
	p->n--;
	memmove(&p->sock[i], &p->sock[i + 1], (size_t)(p->n - i) * sizeof(p->sock[0]));
	memmove(&p->deadline[i], &p->deadline[i + 1], (size_t)(p->n - i) * sizeof(p->deadline[0]));
}

void snic_pending_fini(struct snic_pending *p)
{
	while (p->n)
		pending_drop(p, p->n - 1);
	pthread_mutex_destroy(&p->lock);
}

static int pending_lock(struct snic_pending *p, int timeout_ms)
{
	struct timespec ts;

	if (timeout_ms < 0)
		return pthread_mutex_lock(&p->lock);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_mutex_timedlock(&p->lock, &ts);
}

/*
 * One connection at a time would let a client that connects and says
 * nothing hold every client behind it for the handshake's timeout.  So
 * every waiting connection is taken at once, the first one that speaks is
 * served, and a silent one goes at its own deadline, or when a newer one
 * needs its place.
 */
int snic_pending_take(struct snic_pending *p, snic_handle lst, int timeout_ms,
		      void (*refuse)(snic_handle sock, int status), snic_handle *sock)
{
	uint64_t end = timeout_ms < 0 ? UINT64_MAX : now_ms() + (uint64_t)timeout_ms;
	snic_handle h[SNIC_MAX_PENDING + 1];
	int ret, i;

	*sock = SNIC_NO_HANDLE;
	ret = pending_lock(p, timeout_ms);
	if (ret)
		return ret;
	for (;;) {
		uint64_t now = now_ms(), until = end;
		snic_handle c;

		for (i = 0; i < p->n; i++) {
			if (p->deadline[i] <= now)
				pending_drop(p, i--);
			else if (p->deadline[i] < until)
				until = p->deadline[i];
		}
		if (p->n) {
			i = snic_os_wait_any(p->sock, p->n, 0);
			if (i >= 0) {
				*sock = p->sock[i];
				snic_os_watch_remove(p->ready, *sock);
				p->sock[i] = SNIC_NO_HANDLE; /* not closed by the drop */
				pending_drop(p, i);
				ret = 0;
				break;
			}
		}
		ret = snic_os_accept(lst, &c);
		if (!ret) {
			int why = snic_os_conn_check(c);

			if (why) {
				/* Another user: told so, and never handed anything. */
				refuse(c, why);
				snic_os_close(c);
				continue;
			}
			if (p->n == SNIC_MAX_PENDING)
				pending_drop(p, 0); /* the oldest had the longest time to speak */
			if (snic_os_watch_conn(p->ready, c, 1)) {
				snic_os_close(c); /* it could not be watched: as if it never came */
				continue;
			}
			p->sock[p->n] = c;
			p->deadline[p->n++] = now + SNIC_HANDSHAKE_MS;
			continue;
		}
		if (ret != EAGAIN)
			break;
		if (now >= end) {
			ret = ETIMEDOUT;
			break;
		}
		h[0] = lst;
		memcpy(&h[1], p->sock, (size_t)p->n * sizeof(h[0]));
		i = snic_os_wait_any(h, p->n + 1,
				     until - now > 0x7fffffff ? 0x7fffffff : (int)(until - now));
		if (i < 0 && i != -ETIMEDOUT) {
			ret = -i;
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return ret;
}
