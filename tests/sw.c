/* SPDX-License-Identifier: BSD-2-Clause */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "sw.h"
#include "tdev.h"

/* Up-calls: the switch's socket handles ------------------------------------ */

#define SW_MAX_HANDLES 4096

static pthread_mutex_t h_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t h_ctx[SW_MAX_HANDLES];
static bool h_used[SW_MAX_HANDLES];
static unsigned int h_open;
static atomic_ulong completions;
static void (*_Atomic complete_hook)(sp_socket s, struct sp_overlapped *ov, uint32_t error,
				     uint32_t bytes);

void sw_on_complete(void (*fn)(sp_socket s, struct sp_overlapped *ov, uint32_t error,
			       uint32_t bytes))
{
	atomic_store(&complete_hook, fn);
}

/* Handles look like Windows' (multiples of 4), away from small integers. */
static sp_socket handle_of(unsigned int i)
{
	return 0x1000 + 4 * (sp_socket)i;
}

static int index_of(sp_socket s)
{
	if (s < 0x1000 || (s - 0x1000) % 4 || (s - 0x1000) / 4 >= SW_MAX_HANDLES)
		return -1;
	return (int)((s - 0x1000) / 4);
}

static sp_socket up_create(uint32_t catalog_id, uintptr_t ctx, int *err)
{
	(void)catalog_id;
	pthread_mutex_lock(&h_lock);
	for (unsigned int i = 0; i < SW_MAX_HANDLES; i++) {
		if (!h_used[i]) {
			h_used[i] = true;
			h_ctx[i] = ctx;
			h_open++;
			pthread_mutex_unlock(&h_lock);
			return handle_of(i);
		}
	}
	pthread_mutex_unlock(&h_lock);
	*err = SP_WSAEMFILE;
	return SP_INVALID_SOCKET;
}

static int up_close(sp_socket s, int *err)
{
	int i = index_of(s);

	pthread_mutex_lock(&h_lock);
	if (i < 0 || !h_used[i]) {
		pthread_mutex_unlock(&h_lock);
		*err = SP_WSAENOTSOCK;
		return SP_SOCKET_ERROR;
	}
	h_used[i] = false;
	h_open--;
	pthread_mutex_unlock(&h_lock);
	return 0;
}

static int up_query(sp_socket s, uintptr_t *ctx, int *err)
{
	int i = index_of(s);

	pthread_mutex_lock(&h_lock);
	if (i < 0 || !h_used[i]) {
		pthread_mutex_unlock(&h_lock);
		*err = SP_WSAENOTSOCK;
		return SP_SOCKET_ERROR;
	}
	*ctx = h_ctx[i];
	pthread_mutex_unlock(&h_lock);
	return 0;
}

static int up_complete(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes,
		       int *err)
{
	uint64_t one = 1;

	void (*hook)(sp_socket, struct sp_overlapped *, uint32_t, uint32_t) =
	    atomic_load(&complete_hook);

	(void)err;
	atomic_fetch_add(&completions, 1);
	if (hook)
		hook(s, ov, error, bytes);
	/* As WPUCompleteOverlappedRequest: signal the event (never with bit 0 set). */
	if (SP_OV_NO_UPCALL(ov)) {
		fprintf(stderr, "sw: an up-call for a polled operation\n");
		abort(); /* the provider must not up-call for these */
	}
	if (ov->event && write(SP_EVENT_TO_FD(ov->event), &one, sizeof(one)) != sizeof(one)) {
		fprintf(stderr, "sw: the event of a completed operation: %s\n", strerror(errno));
		abort();
	}
	return 0;
}

static const struct sp_upcalls upcalls = {
	.create_socket_handle = up_create,
	.close_socket_handle = up_close,
	.query_socket_handle_context = up_query,
	.complete_overlapped_request = up_complete,
};

unsigned int sw_open_handles(void)
{
	unsigned int n;

	pthread_mutex_lock(&h_lock);
	n = h_open;
	pthread_mutex_unlock(&h_lock);
	return n;
}

unsigned long sw_upcall_completions(void)
{
	return atomic_load(&completions);
}

/* Loading ------------------------------------------------------------------- */

static int fetch(struct sw *sw, const struct sp_guid *g, void *fn, size_t fn_size)
{
	uint32_t bytes = 0;
	int err = 0;

	if (sw->p.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER, (void *)g,
			sizeof(*g), fn, (uint32_t)fn_size, &bytes, NULL, NULL, NULL, &err))
		return err;
	return bytes == fn_size ? 0 : EIO;
}

/* SANPROV_TEST_SPI_LIBRARY, else the build tree's, next to this program's directory. */
static const char *library(char *buf, size_t len)
{
	const char *lib = getenv("SANPROV_TEST_SPI_LIBRARY");
	ssize_t n;
	char *slash;

	if (lib)
		return lib;
	n = readlink("/proc/self/exe", buf, len - 1);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	slash = strrchr(buf, '/');
	if (!slash || (size_t)(slash - buf) + sizeof("/../provider/libsanprov.so") > len)
		return NULL;
	strcpy(slash, "/../provider/libsanprov.so");
	return buf;
}

int sw_load(struct sw *sw)
{
	char path[4096];
	const char *lib = library(path, sizeof(path));
	int (*startup)(uint16_t, struct sp_wsp_data *, const struct sp_upcalls *,
		       struct sp_proc_table *);
	int ret;

	memset(sw, 0, sizeof(*sw));
	/* The provider reads the backend and device the suites run on. */
	setenv("SANPROV_BACKEND", tdev_backend(), 1);
	if (getenv("SANPROV_TEST_DEVICE"))
		setenv("SANPROV_DEVICE", getenv("SANPROV_TEST_DEVICE"), 1);
	/* The SAN serves the test address (the provider's default is loopback on softnic only). */
	if (getenv("SANPROV_TEST_ADDR"))
		setenv("SANPROV_SPI_ADDRESSES", getenv("SANPROV_TEST_ADDR"), 1);
	if (!lib)
		return ENOENT;
	sw->dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (!sw->dl) {
		fprintf(stderr, "dlopen %s: %s\n", lib, dlerror());
		return ENOENT;
	}
	*(void **)&startup = dlsym(sw->dl, "sp_wsp_startup_ex");
	if (!startup)
		return ENOENT;
	ret = startup(SP_SPI_VERSION, &sw->data, &upcalls, &sw->p);
	if (ret)
		return ret;
	if ((ret = fetch(sw, &sp_guid_register_memory, &sw->register_memory,
			 sizeof(sw->register_memory))) ||
	    (ret = fetch(sw, &sp_guid_deregister_memory, &sw->deregister_memory,
			 sizeof(sw->deregister_memory))) ||
	    (ret = fetch(sw, &sp_guid_register_rdma_memory, &sw->register_rdma_memory,
			 sizeof(sw->register_rdma_memory))) ||
	    (ret = fetch(sw, &sp_guid_deregister_rdma_memory, &sw->deregister_rdma_memory,
			 sizeof(sw->deregister_rdma_memory))) ||
	    (ret = fetch(sw, &sp_guid_rdma_write, &sw->rdma_write, sizeof(sw->rdma_write))) ||
	    (ret = fetch(sw, &sp_guid_rdma_read, &sw->rdma_read, sizeof(sw->rdma_read))) ||
	    (ret = fetch(sw, &sp_guid_memory_registration_cache_callback, &sw->cache_callback,
			 sizeof(sw->cache_callback))))
		return ret;
	return 0;
}

void sw_unload(struct sw *sw)
{
	int err;

	if (sw->p.cleanup)
		sw->p.cleanup(&err);
	if (sw->dl)
		dlclose(sw->dl);
	memset(sw, 0, sizeof(*sw));
}

/* Overlapped operations --------------------------------------------------------- */

void sw_ov_init(struct sw_ov *o, bool no_upcall)
{
	memset(o, 0, sizeof(*o));
	o->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (o->fd < 0)
		abort();
	o->ov.event = SP_EVENT_FD(o->fd) | (no_upcall ? 1u : 0u);
}

void sw_ov_fini(struct sw_ov *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int sw_ov_wait(struct sw *sw, sp_socket s, struct sw_ov *o, uint32_t *bytes, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	uint32_t n = 0, flags = 0;
	int err = 0;

	for (;;) {
		if (!SP_OV_NO_UPCALL(&o->ov)) {
			struct pollfd p = { .fd = o->fd, .events = POLLIN };
			uint64_t v;
			int left = (int)(end > now_ms() ? end - now_ms() : 0);

			if (poll(&p, 1, left) != 1)
				return -1;
			if (read(o->fd, &v, sizeof(v)) != sizeof(v))
				return -1;
		}
		if (!sw->p.get_overlapped_result(s, &o->ov, &n, 0, &flags, &err)) {
			err = 0;
			break;
		}
		if (err != SP_WSA_IO_INCOMPLETE)
			break;
		if (now_ms() > end)
			return -1;
		usleep(20);
	}
	if (bytes)
		*bytes = n;
	return err;
}

int sw_post_recv(struct sw *sw, sp_socket s, char *buf, uint32_t len, void *h, struct sw_ov *o,
		 bool polled)
{
	struct sp_wsabufex b = { len, buf, h };
	uint32_t flags = 0;
	int err = 0;

	sw_ov_init(o, polled);
	if (!sw->p.recv(s, &b, 1, NULL, &flags, &o->ov, NULL, NULL, &err))
		return 0;
	return err == SP_WSA_IO_PENDING ? 0 : err;
}

int sw_send_wait(struct sw *sw, sp_socket s, char *buf, uint32_t len, void *h)
{
	struct sp_wsabufex b = { len, buf, h };
	struct sw_ov o;
	uint32_t n;
	int err = 0, ret;

	sw_ov_init(&o, true);
	if (sw->p.send(s, &b, 1, NULL, 0, &o.ov, NULL, NULL, &err) && err != SP_WSA_IO_PENDING) {
		sw_ov_fini(&o);
		return err;
	}
	ret = sw_ov_wait(sw, s, &o, &n, 10000);
	sw_ov_fini(&o);
	return ret;
}

/* Connections ------------------------------------------------------------------ */

sp_socket sw_listen(struct sw *sw, struct sockaddr_in *sin)
{
	int err = 0, len = sizeof(*sin);
	sp_socket l = sw->p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, &err);

	if (l == SP_INVALID_SOCKET)
		return l;
	tdev_sockaddr(sin, 0);
	if (sw->p.bind(l, (struct sockaddr *)sin, sizeof(*sin), &err) || sw->p.listen(l, 8, &err) ||
	    sw->p.get_sock_name(l, (struct sockaddr *)sin, &len, &err)) {
		sw->p.close_socket(l, &err);
		return SP_INVALID_SOCKET;
	}
	return l;
}

sp_socket sw_connect(struct sw *sw, const struct sockaddr_in *sin, int *err)
{
	sp_socket c = sw->p.socket(AF_INET, SOCK_STREAM, 0, 1, 0, err);
	struct sockaddr_in local;
	int e;

	if (c == SP_INVALID_SOCKET)
		return c;
	/* The switch binds the SAN socket to its TCP socket's address. */
	tdev_sockaddr(&local, 40000);
	if (sw->p.bind(c, (struct sockaddr *)&local, sizeof(local), err) ||
	    sw->p.connect(c, (const struct sockaddr *)sin, sizeof(*sin), err)) {
		sw->p.close_socket(c, &e);
		return SP_INVALID_SOCKET;
	}
	return c;
}

struct accept_arg {
	struct sw *sw;
	sp_socket l, a;
	int err;
};

static void *accept_main(void *arg)
{
	struct accept_arg *x = arg;

	x->a = x->sw->p.accept(x->l, NULL, NULL, NULL, 0, &x->err);
	return NULL;
}

void sw_pair(struct sw *sw, sp_socket *c, sp_socket *a)
{
	struct sockaddr_in sin;
	struct accept_arg x = { .sw = sw };
	pthread_t t;
	int err = 0, e;

	*c = *a = SP_INVALID_SOCKET;
	x.l = sw_listen(sw, &sin);
	if (x.l == SP_INVALID_SOCKET)
		return;
	if (pthread_create(&t, NULL, accept_main, &x))
		abort();
	*c = sw_connect(sw, &sin, &err);
	pthread_join(t, NULL);
	*a = x.a;
	sw->p.close_socket(x.l, &e);
}

/* The session protocol ---------------------------------------------------------- */

enum { MSG_SMALL = 1, MSG_LARGE_READ, MSG_LARGE_WRITE, MSG_WRITE_DESC, MSG_DONE };

struct sw_hdr {
	uint32_t type;
	uint32_t len;	/* payload bytes in this message */
	uint64_t total; /* MSG_LARGE_*: the whole piece, payload included */
	uint32_t desc_len;
	uint8_t desc[60];
};

#define SW_PAYLOAD (SW_MSG - sizeof(struct sw_hdr))
#define SW_TIMEOUT_MS 30000

static char *tx_msg(struct sw_sess *ss, unsigned int i)
{
	return ss->tx + (size_t)i * SW_MSG;
}

static char *rx_msg(struct sw_sess *ss, unsigned int i)
{
	return ss->rx + (size_t)i * SW_MSG;
}

static int post_rx(struct sw_sess *ss, unsigned int i)
{
	struct sp_wsabufex b = { SW_MSG, rx_msg(ss, i), ss->rx_h };
	uint32_t flags = 0;
	int err = 0;

	if (ss->sw->p.recv(ss->s, &b, 1, NULL, &flags, &ss->rx_ov[i].ov, NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING)
		return err;
	return 0;
}

int sw_sess_init(struct sw_sess *ss, struct sw *sw, sp_socket s, bool rdma_read)
{
	int err = 0, len = sizeof(int32_t), ret;
	int32_t threshold;

	memset(ss, 0, sizeof(*ss));
	for (unsigned int i = 0; i < SW_RING; i++)
		ss->tx_ov[i].fd = ss->rx_ov[i].fd = -1;
	ss->sw = sw;
	ss->s = s;
	ss->rdma_read = rdma_read;
	if (sw->p.get_sock_opt(s, SP_SOL_SOCKET, SP_SO_RDMA_THRESHOLD_SIZE, (char *)&threshold,
			       &len, &err))
		return err;
	ss->threshold = (uint32_t)threshold;
	ss->tx = aligned_alloc(4096, SW_RING * SW_MSG);
	ss->rx = aligned_alloc(4096, SW_RING * SW_MSG);
	if (!ss->tx || !ss->rx)
		return SP_WSAENOBUFS;
	/* Two VA-contiguous rings, each registered once. */
	ss->tx_h = sw->register_memory(s, ss->tx, SW_RING * SW_MSG, SP_MEM_READ, &err);
	if (!ss->tx_h)
		return err;
	ss->rx_h = sw->register_memory(s, ss->rx, SW_RING * SW_MSG, SP_MEM_WRITE, &err);
	if (!ss->rx_h)
		return err;
	for (unsigned int i = 0; i < SW_RING; i++) {
		sw_ov_init(&ss->tx_ov[i], false);
		sw_ov_init(&ss->rx_ov[i], i % 2); /* both completion modes */
		ret = post_rx(ss, i);
		if (ret)
			return ret;
	}
	return 0;
}

void sw_sess_fini(struct sw_sess *ss)
{
	int err;

	/*
	 * Sends still on the way are waited for, as a graceful close does
	 * (closing would abort them and the peer would miss their messages).
	 * Then close: the receives still posted complete aborted, through
	 * the overlapped structures and events freed below.
	 */
	for (unsigned int i = 0; ss->sw && i < SW_RING; i++)
		if (ss->tx_busy[i])
			sw_ov_wait(ss->sw, ss->s, &ss->tx_ov[i], NULL, SW_TIMEOUT_MS);
	if (ss->sw)
		ss->sw->p.close_socket(ss->s, &err);
	for (unsigned int i = 0; i < SW_RING; i++) {
		sw_ov_fini(&ss->tx_ov[i]);
		sw_ov_fini(&ss->rx_ov[i]);
	}
	free(ss->tx);
	free(ss->rx);
	memset(ss, 0, sizeof(*ss));
}

/* Send one control message: header, then len bytes of payload. */
static int send_msg(struct sw_sess *ss, const struct sw_hdr *h, const char *payload)
{
	unsigned int i = ss->tx_next;
	char *m = tx_msg(ss, i);
	struct sp_wsabufex b;
	int err = 0, ret;

	ss->tx_next = (i + 1) % SW_RING;
	if (ss->tx_busy[i]) {
		ret = sw_ov_wait(ss->sw, ss->s, &ss->tx_ov[i], NULL, SW_TIMEOUT_MS);
		if (ret)
			return ret < 0 ? SP_WSAETIMEDOUT : ret;
		ss->tx_busy[i] = false;
	}
	memcpy(m, h, sizeof(*h));
	if (h->len)
		memcpy(m + sizeof(*h), payload, h->len);
	b = (struct sp_wsabufex){ (uint32_t)(sizeof(*h) + h->len), m, ss->tx_h };
	if (ss->sw->p.send(ss->s, &b, 1, NULL, 0, &ss->tx_ov[i].ov, NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING)
		return err;
	ss->tx_busy[i] = true;
	return 0;
}

/* The next control message (its ring slot is reposted by the caller). */
static int next_msg(struct sw_sess *ss, struct sw_hdr *h, char **payload, unsigned int *slot)
{
	unsigned int i = ss->rx_next;
	uint32_t n = 0;
	int ret = sw_ov_wait(ss->sw, ss->s, &ss->rx_ov[i], &n, SW_TIMEOUT_MS);

	if (ret)
		return ret < 0 ? SP_WSAETIMEDOUT : ret;
	ss->rx_next = (i + 1) % SW_RING;
	if (n < sizeof(*h))
		return SP_WSAEMSGSIZE;
	memcpy(h, rx_msg(ss, i), sizeof(*h));
	if (h->len > n - sizeof(*h) || h->desc_len > sizeof(h->desc))
		return SP_WSAEMSGSIZE;
	*payload = rx_msg(ss, i) + sizeof(*h);
	*slot = i;
	return 0;
}

static int expect(struct sw_sess *ss, uint32_t type, struct sw_hdr *h)
{
	char *payload;
	unsigned int slot;
	int ret = next_msg(ss, h, &payload, &slot);

	if (ret)
		return ret;
	ret = post_rx(ss, slot);
	if (ret)
		return ret;
	return h->type == type ? 0 : SP_WSAEINVAL;
}

static int rdma_wait(struct sw_sess *ss, sp_rdma_fn fn, char *buf, uint32_t len, void *h,
		     const uint8_t *desc, uint32_t desc_len)
{
	struct sp_wsabufex b = { len, buf, h };
	struct sw_ov o;
	uint32_t bytes = 0;
	int err = 0, ret;

	sw_ov_init(&o, false);
	if (fn(ss->s, &b, 1, (void *)desc, desc_len, 0, &bytes, 0, &o.ov, NULL, NULL, &err) &&
	    err != SP_WSA_IO_PENDING) {
		sw_ov_fini(&o);
		return err;
	}
	ret = sw_ov_wait(ss->sw, ss->s, &o, &bytes, SW_TIMEOUT_MS);
	sw_ov_fini(&o);
	if (ret)
		return ret < 0 ? SP_WSAETIMEDOUT : ret;
	return bytes == len ? 0 : SP_WSAEMSGSIZE;
}

static int send_large(struct sw_sess *ss, const char *buf, size_t len, uint32_t max_rdma)
{
	struct sw_hdr h = { .len = SW_PAYLOAD };
	uint32_t rest = len - SW_PAYLOAD > max_rdma ? max_rdma : (uint32_t)(len - SW_PAYLOAD);
	char *r = (char *)buf + SW_PAYLOAD;
	int err = 0, ret;

	h.total = SW_PAYLOAD + rest;
	if (ss->rdma_read) {
		/* Probe the descriptor's size first, as the switch does. */
		uint32_t dlen = 0;
		if (!ss->sw->register_rdma_memory(ss->s, r, rest, SP_MEM_READ, NULL, &dlen, &err) ||
		    err != SP_WSAEFAULT || !dlen || dlen > sizeof(h.desc))
			return SP_WSAEINVAL;
		if (ss->sw->register_rdma_memory(ss->s, r, rest, SP_MEM_READ, h.desc, &dlen, &err))
			return err;
		h.type = MSG_LARGE_READ;
		h.desc_len = dlen;
		ret = send_msg(ss, &h, buf);
		if (!ret) {
			struct sw_hdr d;
			ret = expect(ss, MSG_DONE, &d);
		}
		if (ss->sw->deregister_rdma_memory(ss->s, h.desc, dlen, &err) && !ret)
			ret = err;
		return ret;
	}
	h.type = MSG_LARGE_WRITE;
	ret = send_msg(ss, &h, buf);
	if (ret)
		return ret;
	struct sw_hdr d;
	ret = expect(ss, MSG_WRITE_DESC, &d);
	if (ret)
		return ret;
	void *mh = ss->sw->register_memory(ss->s, r, rest, SP_MEM_READ, &err);
	if (!mh)
		return err;
	ret = rdma_wait(ss, ss->sw->rdma_write, r, rest, mh, d.desc, d.desc_len);
	if (ss->sw->deregister_memory(ss->s, mh, &err) && !ret)
		ret = err;
	if (!ret) {
		struct sw_hdr done = { .type = MSG_DONE };
		ret = send_msg(ss, &done, NULL);
	}
	return ret;
}

int sw_sess_send(struct sw_sess *ss, const char *buf, size_t len)
{
	int32_t max_rdma;
	int err = 0, optlen = sizeof(max_rdma), ret;

	if (ss->sw->p.get_sock_opt(ss->s, SP_SOL_SOCKET, SP_SO_MAX_RDMA_SIZE, (char *)&max_rdma,
				   &optlen, &err))
		return err;
	while (len) {
		size_t piece;

		if (len > ss->threshold && len > SW_PAYLOAD) {
			piece = len - SW_PAYLOAD > (uint32_t)max_rdma
				    ? SW_PAYLOAD + (size_t)max_rdma
				    : len;
			ret = send_large(ss, buf, piece, (uint32_t)max_rdma);
			ss->large_msgs++;
		} else {
			struct sw_hdr h = { .type = MSG_SMALL };
			piece = len < SW_PAYLOAD ? len : SW_PAYLOAD;
			h.len = (uint32_t)piece;
			ret = send_msg(ss, &h, buf);
			ss->small_msgs++;
		}
		if (ret)
			return ret;
		buf += piece;
		len -= piece;
	}
	return 0;
}

int sw_sess_recv(struct sw_sess *ss, char *buf, size_t len)
{
	size_t got = 0;
	int err = 0, ret;

	while (got < len) {
		struct sw_hdr h;
		char *payload;
		unsigned int slot;

		ret = next_msg(ss, &h, &payload, &slot);
		if (ret)
			return ret;
		if (h.len > len - got) {
			post_rx(ss, slot);
			return SP_WSAEMSGSIZE;
		}
		memcpy(buf + got, payload, h.len);
		ret = post_rx(ss, slot);
		if (ret)
			return ret;
		if (h.type == MSG_SMALL) {
			got += h.len;
			continue;
		}
		if ((h.type != MSG_LARGE_READ && h.type != MSG_LARGE_WRITE) || h.total < h.len ||
		    h.total - h.len > len - got - h.len)
			return SP_WSAEINVAL;
		char *dst = buf + got + h.len;
		uint32_t rest = (uint32_t)(h.total - h.len);
		if (h.type == MSG_LARGE_READ) {
			void *mh = ss->sw->register_memory(ss->s, dst, rest, SP_MEM_WRITE, &err);
			if (!mh)
				return err;
			ret = rdma_wait(ss, ss->sw->rdma_read, dst, rest, mh, h.desc, h.desc_len);
			if (ss->sw->deregister_memory(ss->s, mh, &err) && !ret)
				ret = err;
			if (!ret) {
				struct sw_hdr done = { .type = MSG_DONE };
				ret = send_msg(ss, &done, NULL);
			}
		} else {
			struct sw_hdr d = { .type = MSG_WRITE_DESC };
			uint32_t dlen = sizeof(d.desc);
			if (ss->sw->register_rdma_memory(ss->s, dst, rest, SP_MEM_WRITE, d.desc,
							 &dlen, &err))
				return err;
			d.desc_len = dlen;
			ret = send_msg(ss, &d, NULL);
			if (!ret) {
				struct sw_hdr done;
				ret = expect(ss, MSG_DONE, &done);
			}
			if (ss->sw->deregister_rdma_memory(ss->s, d.desc, dlen, &err) && !ret)
				ret = err;
		}
		if (ret)
			return ret;
		got += h.total;
	}
	return 0;
}
