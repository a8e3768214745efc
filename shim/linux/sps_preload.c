/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The Linux switch: a preload library that carries an unmodified program's
 * TCP sockets over the provider (docs/linux-switch.md).
 *
 * Every SAN socket is a real file descriptor.  A connected one is an
 * eventfd at the program's fd number whose counter says what the session
 * can do (0: not readable; 1: readable and writable; the largest count:
 * readable only), so poll, select and epoll work on it unchanged; a
 * progress thread and every call keep it current.  A listening one is an
 * epoll instance at the program's number holding the kernel listener
 * (moved to another number) and the SAN listener's accept event, so it is
 * readable when either has a connection.  Everything else (other
 * families and types, destinations the SAN does not reach, a peer without
 * a SAN listener, a provider that does not start) stays on the kernel.
 */
/* Both fcntl and fcntl64 are defined here: neither may be renamed to the other. */
#undef _FILE_OFFSET_BITS
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sp_spi.h"
#include "swc.h"

#define SPS_EXPORT __attribute__((visibility("default")))
#define SPS_MAX_FD 65536
#define SPS_MAX_HANDLES 65536
#define SPS_ACCEPT_ROOM 12 /* descriptors the provider's accept may need (softnic: 7) */
#define SPS_EV_READ_ONLY 0xfffffffffffffffeull /* readable, not writable */

enum sps_kind { SPS_LISTEN = 1, SPS_CONN = 2 };

/* One SAN socket, named by every fd dup'ed from it. */
struct sps {
	pthread_mutex_t lock;
	atomic_int refs;
	int kind;
	int kfd;  /* the kernel socket, away from the program's number (-1: none) */
	int fd;	  /* the number it was made at (its readiness eventfd or epoll) */
	int evfd; /* a number of the switch's own for that eventfd or epoll */
	int afd;  /* listener: the SAN listener's accept event */
	int wake; /* connection: the eventfd the provider's up-calls signal */
	sp_socket ls;
	struct sp_protocol_info *dup; /* listener: for the fork children (duplicate_socket) */
	struct swc_sess sess;
	struct swc_events events;
	bool live; /* sess started */
	/* One sender and one receiver at a time (their calls interleave in the waits). */
	pthread_mutex_t send_mx, recv_mx;
	pid_t pid; /* the process that made it: a child of a fork cannot use it */
	bool nonblock, cloexec, shut_rd, shut_wr, linger0;
	int rcvtimeo_ms, sndtimeo_ms; /* 0: none */
	int nodelay, keepalive, reuseaddr, sndbuf, rcvbuf;
	struct linger linger;
	/* Readiness as last written to the eventfd. */
	uint64_t ev_val;
	uint64_t last_rx;
	bool last_w;
	struct sockaddr_storage local, peer;
	socklen_t local_len, peer_len;
	struct sps *next; /* every connection (conns_lock) */
	/* Which thread holds lock, in a session call (the address of its tls_mark), or 0. */
	atomic_uintptr_t holder;
	/*
	 * For the progress thread (dirty_lock): on the list of connections to
	 * look at (dirty), and whether it may go on it (listed).  want_w (the
	 * session's lock): a writer waits for credits, which come by RDMA
	 * with no completion, so only a look finds them.
	 */
	bool listed, dirty, want_w;
	struct sps *dirty_next;
	struct sps *work_next; /* the progress thread's own copy of the list it took */
	/*
	 * A receive is inside the session, perhaps waiting with the lock let
	 * go (a large message read by RDMA): nobody else looks at the
	 * session meanwhile (the lock's holder or the receive publishes).
	 */
	bool in_recv;
	/* An up-call came while this thread held it: its poll looks once more. */
	bool again;
};

/* The kernel's entry points. */
static struct {
	int (*socket)(int, int, int);
	int (*bind)(int, const struct sockaddr *, socklen_t);
	int (*listen)(int, int);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*send)(int, const void *, size_t, int);
	ssize_t (*recv)(int, void *, size_t, int);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	int (*close)(int);
	int (*shutdown)(int, int);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*getsockname)(int, struct sockaddr *, socklen_t *);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_wait)(int, struct epoll_event *, int, int);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
} real;

static struct sps *_Atomic fdtab[SPS_MAX_FD];

static int log_level = 1;
static bool disabled;
static pthread_once_t start_once = PTHREAD_ONCE_INIT;
static bool started, exit_set;
static pid_t started_pid;
static void *prov_dl;
static struct sp_proc_table procs;
static struct swc_spi spi;
static struct in_addr san_addrs[16];
static int n_san_addrs;
static uint32_t opt_ring, opt_msg, opt_spin, opt_epoll_spin, opt_timeout;

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sps *conns;
static atomic_int n_conns; /* read without conns_lock by epoll_wait's spin */
static pthread_t prog_thread;
/*
 * Until when (CLOCK_MONOTONIC ns) the progress thread looks without
 * sleeping: a non-blocking send found no credits, and they come by RDMA
 * write with no completion, so only a look finds them (a tick would hold
 * the writer up to a millisecond per ring).
 */
static _Atomic uint64_t prog_spin_until;

/*
 * The connections the progress thread looks at: those an up-call came for
 * while their session was busy, and those whose writers wait for credits.
 * Not every connection at every tick: an idle one costs nothing.
 */
static pthread_mutex_t dirty_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sps *dirty_head;
static uint64_t dirty_marks; /* marks that asked for a wake-up */
static int prog_wake = -1;   /* the progress thread sleeps on it */
static atomic_bool prog_asleep;
static _Thread_local char tls_mark;
static atomic_uint_fast64_t prog_looks; /* sessions the progress thread looked at */
/* A session's waits, and those its connection's wake eventfd ended (the rest timed out). */
static atomic_uint_fast64_t sess_waits, sess_wakes;
/* The provider's completion processing on the caller's thread; NULL until it starts. */
static _Atomic sp_progress_fn prov_progress;
/* epoll_waits that found events while they spun, and those that went to sleep. */
static atomic_uint_fast64_t epoll_spun, epoll_slept;
#define SPS_WRITER_SPIN_NS 500000

#define sps_log(lvl, ...)                                                                          \
	do {                                                                                       \
		if (log_level >= (lvl)) {                                                          \
			fprintf(stderr, "sanprov-run[%d]: ", (int)getpid());                       \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
		}                                                                                  \
	} while (0)

static void atfork_child(void);
/* This process (getpid() is a system call, asked on every send and receive). */
static pid_t self_pid;

/* glibc's fortified entry points (_FORTIFY_SOURCE), which programs call instead. */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
		       struct sockaddr *from, socklen_t *fromlen);
int sanprov_preload_is_san(int fd);
uint64_t sanprov_preload_progress_looks(void);
void sanprov_preload_epoll_stats(uint64_t *spun, uint64_t *slept);
void sanprov_preload_wait_stats(uint64_t *waits, uint64_t *wakes);

#define RESOLVE(name) (*(void **)&real.name = dlsym(RTLD_NEXT, #name))

__attribute__((constructor)) static void sps_init(void)
{
	const char *v;

	RESOLVE(socket);
	RESOLVE(bind);
	RESOLVE(listen);
	RESOLVE(accept);
	RESOLVE(accept4);
	RESOLVE(connect);
	RESOLVE(read);
	RESOLVE(write);
	RESOLVE(readv);
	RESOLVE(writev);
	RESOLVE(send);
	RESOLVE(recv);
	RESOLVE(sendto);
	RESOLVE(recvfrom);
	RESOLVE(sendmsg);
	RESOLVE(recvmsg);
	RESOLVE(close);
	RESOLVE(shutdown);
	RESOLVE(getsockopt);
	RESOLVE(setsockopt);
	RESOLVE(getsockname);
	RESOLVE(getpeername);
	RESOLVE(fcntl);
	RESOLVE(fcntl64);
	RESOLVE(ioctl);
	RESOLVE(dup);
	RESOLVE(dup2);
	RESOLVE(dup3);
	RESOLVE(epoll_ctl);
	RESOLVE(epoll_wait);
	RESOLVE(epoll_pwait);
	RESOLVE(sendfile);
	if (!real.fcntl64)
		real.fcntl64 = real.fcntl;
	self_pid = getpid();
	pthread_atfork(NULL, NULL, atfork_child);
	v = getenv("SANPROV_RUN_LOG");
	if (v)
		log_level = atoi(v);
	v = getenv("SANPROV_RUN_DISABLE");
	disabled = v && *v && strcmp(v, "0");
}

static uint32_t env_u32(const char *name, uint32_t def)
{
	const char *v = getenv(name);

	return v && *v ? (uint32_t)strtoul(v, NULL, 0) : def;
}

static struct sps *lookup(int fd)
{
	if (fd < 0 || fd >= SPS_MAX_FD)
		return NULL;
	return atomic_load_explicit(&fdtab[fd], memory_order_acquire);
}

static void sess_lock(struct sps *so)
{
	pthread_mutex_lock(&so->lock);
	atomic_store_explicit(&so->holder, (uintptr_t)&tls_mark, memory_order_relaxed);
}

static void sess_unlock(struct sps *so)
{
	atomic_store_explicit(&so->holder, 0, memory_order_relaxed);
	pthread_mutex_unlock(&so->lock);
}

static bool sess_trylock(struct sps *so)
{
	if (pthread_mutex_trylock(&so->lock))
		return false;
	atomic_store_explicit(&so->holder, (uintptr_t)&tls_mark, memory_order_relaxed);
	return true;
}

/* The calling thread is in a session call on so: it publishes so's readiness on its way out. */
static bool sess_mine(struct sps *so)
{
	return atomic_load_explicit(&so->holder, memory_order_relaxed) == (uintptr_t)&tls_mark;
}

/* Put so on the progress thread's list; wake it up unless the look can wait for its tick. */
static void mark_dirty(struct sps *so, bool wake)
{
	uint64_t one = 1;

	pthread_mutex_lock(&dirty_lock);
	if (so->listed && !so->dirty) {
		so->dirty = true;
		so->dirty_next = dirty_head;
		dirty_head = so;
	}
	if (wake)
		dirty_marks++;
	pthread_mutex_unlock(&dirty_lock);
	if (wake && atomic_exchange(&prog_asleep, false))
		(void)!real.write(prog_wake, &one, sizeof(one));
}

static void unmark_dirty(struct sps *so)
{
	pthread_mutex_lock(&dirty_lock);
	so->listed = false;
	if (so->dirty) {
		for (struct sps **p = &dirty_head; *p; p = &(*p)->dirty_next) {
			if (*p == so) {
				*p = so->dirty_next;
				break;
			}
		}
		so->dirty = false;
	}
	pthread_mutex_unlock(&dirty_lock);
}

/* Up-calls: the socket handles the provider asks for --------------------------------- */

static pthread_mutex_t h_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t h_ctx[SPS_MAX_HANDLES];
static bool h_used[SPS_MAX_HANDLES];
static unsigned int h_next;

static int h_index(sp_socket s)
{
	if (s < 0x1000 || (s - 0x1000) % 4 || (s - 0x1000) / 4 >= SPS_MAX_HANDLES)
		return -1;
	return (int)((s - 0x1000) / 4);
}

static sp_socket up_create(uint32_t catalog_id, uintptr_t ctx, int *err)
{
	(void)catalog_id;
	pthread_mutex_lock(&h_lock);
	for (unsigned int k = 0; k < SPS_MAX_HANDLES; k++) {
		unsigned int i = (h_next + k) % SPS_MAX_HANDLES;

		if (!h_used[i]) {
			h_used[i] = true;
			h_ctx[i] = ctx;
			h_next = i + 1;
			pthread_mutex_unlock(&h_lock);
			return 0x1000 + 4 * (sp_socket)i;
		}
	}
	pthread_mutex_unlock(&h_lock);
	*err = SP_WSAEMFILE;
	return SP_INVALID_SOCKET;
}

static int up_close(sp_socket s, int *err)
{
	int i = h_index(s);

	pthread_mutex_lock(&h_lock);
	if (i < 0 || !h_used[i]) {
		pthread_mutex_unlock(&h_lock);
		*err = SP_WSAENOTSOCK;
		return SP_SOCKET_ERROR;
	}
	h_used[i] = false;
	pthread_mutex_unlock(&h_lock);
	return 0;
}

static int up_query(sp_socket s, uintptr_t *ctx, int *err)
{
	int i = h_index(s);

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

static int poll_sess(struct sps *so, struct swc_ready *r);

/*
 * As WPUCompleteOverlappedRequest: signal the operation's event, the
 * connection's wake eventfd (its session's waits sleep on it).  And the
 * program's readiness follows at once: published here when the session is
 * free (no thread hop between the completion and an epoll_wait), by the
 * calling thread's own session call when it is inside one, else by the
 * progress thread.
 */
static int up_complete(sp_socket s, struct sp_overlapped *ov, uint32_t error, uint32_t bytes,
		       int *err)
{
	struct sps *so = (struct sps *)ov->event;
	struct swc_ready r;
	uint64_t one = 1;

	(void)s;
	(void)error;
	(void)bytes;
	(void)err;
	if (!so || SP_OV_NO_UPCALL(ov))
		return 0;
	(void)!real.write(so->wake, &one, sizeof(one));
	if (sess_mine(so)) {
		so->again = true;
		return 0;
	}
	if (sess_trylock(so)) {
		if (so->live && !so->sess.error && !so->in_recv)
			poll_sess(so, &r);
		sess_unlock(so);
		return 0;
	}
	mark_dirty(so, true);
	return 0;
}

static const struct sp_upcalls upcalls = {
	.create_socket_handle = up_create,
	.close_socket_handle = up_close,
	.query_socket_handle_context = up_query,
	.complete_overlapped_request = up_complete,
};

/* The session's events: every operation of a connection signals its wake eventfd. */
/* The event the provider hands back to up_complete: the connection itself. */
static int ev_create(void *ctx, sp_event *ev)
{
	*ev = (sp_event)ctx;
	return 0;
}

static void ev_destroy(void *ctx, sp_event ev)
{
	(void)ctx;
	(void)ev; /* the wake eventfd goes with the socket */
}

static int ev_wait(void *ctx, sp_event ev, int timeout_ms)
{
	struct sps *so = ctx;
	/* Every event of the connection is the connection (ev_create): its wake eventfd. */
	struct pollfd p = { .fd = so->wake, .events = POLLIN };
	/*
	 * A session call's waits let the lock go when this thread holds it
	 * (another thread may receive while this one waits to send).
	 */
	bool held = sess_mine(so);
	uint64_t v;
	int n;

	(void)ev;
	/*
	 * A session call that waits (a blocking send for credits, or for the
	 * end of a large transfer) lets the socket go meanwhile: a thread
	 * blocked in a receive on it must go on reading, or both ends wait
	 * for each other with full rings.
	 */
	if (held)
		sess_unlock(so);
	n = poll(&p, 1, timeout_ms);
	atomic_fetch_add_explicit(&sess_waits, 1, memory_order_relaxed);
	if (n == 1 && real.read(p.fd, &v, sizeof(v)) == sizeof(v))
		atomic_fetch_add_explicit(&sess_wakes, 1, memory_order_relaxed);
	if (held)
		sess_lock(so);
	return n == 1 ? 0 : ETIMEDOUT;
}

/* Starting the provider ------------------------------------------------------------- */

static void *progress_main(void *arg);
static void sps_exit(void);
static int high(int fd);

static int fetch(const struct sp_guid *g, void *fn, size_t fn_size)
{
	uint32_t bytes = 0;
	int err = 0;

	if (procs.ioctl(SP_INVALID_SOCKET, SP_SIO_GET_EXTENSION_FUNCTION_POINTER, (void *)g,
			sizeof(*g), fn, (uint32_t)fn_size, &bytes, NULL, NULL, NULL, &err))
		return err;
	return bytes == fn_size ? 0 : EIO;
}

static int address_list(void)
{
	union {
		struct sp_socket_address_list l;
		char buf[4096];
	} u;
	uint32_t bytes = 0;
	int err = 0, e;
	/* The query goes to a socket, as in Winsock. */
	sp_socket s = procs.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP, 1, 0, &err);

	if (s == SP_INVALID_SOCKET)
		return err;
	if (procs.ioctl(s, SP_SIO_ADDRESS_LIST_QUERY, NULL, 0, &u, sizeof(u), &bytes, NULL, NULL,
			NULL, &err)) {
		procs.close_socket(s, &e);
		return err;
	}
	procs.close_socket(s, &e);
	for (int i = 0; i < u.l.count && n_san_addrs < 16; i++) {
		const struct sockaddr *sa = u.l.address[i].sockaddr;

		if (sa && sa->sa_family == AF_INET)
			san_addrs[n_san_addrs++] = ((const struct sockaddr_in *)sa)->sin_addr;
	}
	return 0;
}

static void start(void)
{
	const char *lib = getenv("SANPROV_RUN_PROVIDER");
	int (*startup)(uint16_t, struct sp_wsp_data *, const struct sp_upcalls *,
		       struct sp_proc_table *);
	struct sp_wsp_data data;
	int ret;

	const char *off = getenv("SANPROV_RUN_DISABLE");

	/* Read again here: a program may turn the switch off before its first socket. */
	if (disabled || (off && *off && strcmp(off, "0")))
		return;
	prov_dl = dlopen(lib ? lib : "libsanprov.so", RTLD_NOW | RTLD_LOCAL);
	if (!prov_dl) {
		sps_log(1, "warning: the provider does not load (%s): sockets stay on TCP",
			dlerror());
		return;
	}
	*(void **)&startup = dlsym(prov_dl, "sp_wsp_startup_ex");
	ret = startup ? startup(SP_SPI_VERSION, &data, &upcalls, &procs) : ENOENT;
	if (!ret)
		ret = fetch(&sp_guid_register_memory, &spi.register_memory,
			    sizeof(spi.register_memory));
	if (!ret)
		ret = fetch(&sp_guid_deregister_memory, &spi.deregister_memory,
			    sizeof(spi.deregister_memory));
	if (!ret)
		ret = fetch(&sp_guid_register_rdma_memory, &spi.register_rdma_memory,
			    sizeof(spi.register_rdma_memory));
	if (!ret)
		ret = fetch(&sp_guid_deregister_rdma_memory, &spi.deregister_rdma_memory,
			    sizeof(spi.deregister_rdma_memory));
	if (!ret)
		ret = fetch(&sp_guid_rdma_write, &spi.rdma_write, sizeof(spi.rdma_write));
	if (!ret)
		ret = fetch(&sp_guid_rdma_read, &spi.rdma_read, sizeof(spi.rdma_read));
	if (!ret)
		ret = address_list();
	if (!ret) {
		prog_wake = high(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
		if (prog_wake < 0 || pthread_create(&prog_thread, NULL, progress_main, NULL))
			ret = ENOMEM;
	}
	if (ret) {
		sps_log(1, "warning: the provider does not start (error %d): sockets stay on TCP",
			ret);
		return;
	}
	spi.p = &procs;
	opt_ring = env_u32("SANPROV_RUN_RING", 32);
	opt_msg = env_u32("SANPROV_RUN_MSG_SIZE", 8192);
	opt_spin = env_u32("SANPROV_RUN_SPIN_US", 20);
	opt_epoll_spin = env_u32("SANPROV_RUN_EPOLL_SPIN_US", opt_spin);
	opt_timeout = env_u32("SANPROV_RUN_TIMEOUT_MS", 3600000);
	started = true;
	started_pid = self_pid;
	{
		sp_progress_fn fn = NULL;

		/* An older provider without it: epoll_wait sleeps at once, as before. */
		if (!fetch(&sp_guid_progress, &fn, sizeof(fn)))
			atomic_store_explicit(&prov_progress, fn, memory_order_release);
	}
	/* Before the libraries' destructors: the provider is still there (a fork child inherits
	 * it). */
	if (!exit_set)
		atexit(sps_exit);
	exit_set = true;
	sps_log(2, "provider started: %s, %d SAN address(es)", data.description, n_san_addrs);
}

/* Whether the SAN may carry a socket of this process. */
static bool san_ready(void)
{
	if (disabled)
		return false;
	pthread_once(&start_once, start);
	return started && started_pid == self_pid;
}

static bool san_reaches(const struct sockaddr *sa, socklen_t len)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

	if (!sa || len < sizeof(*in) || sa->sa_family != AF_INET)
		return false;
	for (int i = 0; i < n_san_addrs; i++)
		if (san_addrs[i].s_addr == in->sin_addr.s_addr)
			return true;
	return false;
}

/* A TCP socket of the kernel, IPv4, that the switch may take over. */
static bool tcp4(int fd)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (fd < 0 || fd >= SPS_MAX_FD || lookup(fd))
		return false;
	if (real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) || v != AF_INET)
		return false;
	l = sizeof(v);
	if (real.getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) || v != SOCK_STREAM)
		return false;
	l = sizeof(v);
	return !real.getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) && v == IPPROTO_TCP;
}

/* Readiness ------------------------------------------------------------------------ */

/* Write what the session can do into the program's eventfd (sock locked). */
static void publish(struct sps *so, const struct swc_ready *r)
{
	bool rd = r->readable || so->shut_rd;
	uint64_t want = !rd ? 0 : r->writable ? 1 : SPS_EV_READ_ONLY, v;

	if (want != so->ev_val) {
		(void)!real.read(so->evfd, &v, sizeof(v));
		if (want)
			(void)!real.write(so->evfd, &want, sizeof(want));
		so->ev_val = want;
	} else if ((r->rx_msgs != so->last_rx && rd) || (r->writable && !so->last_w)) {
		/* Same level, something new: an edge for edge-triggered waiters. */
		v = 0;
		(void)!real.write(so->evfd, &v, sizeof(v));
	}
	so->last_rx = r->rx_msgs;
	so->last_w = r->writable;
	/* Told "not writable": the progress thread looks for credits until they come. */
	if (want == SPS_EV_READ_ONLY && !so->want_w) {
		so->want_w = true;
		mark_dirty(so, true);
	} else if (r->writable) {
		so->want_w = false;
	}
}

static int poll_sess(struct sps *so, struct swc_ready *r)
{
	int ret;

	/* What an up-call delivered in this very poll, after it read the messages, is read too. */
	do {
		so->again = false;
		ret = swc_poll(&so->sess, r);
	} while (so->again && !ret);

	publish(so, r);
	return ret;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static void *progress_main(void *arg)
{
	uint64_t v;

	(void)arg;
	for (;;) {
		struct sps *list, *so, *next;
		bool looking = false, news;
		uint64_t seen;
		int t;

		pthread_mutex_lock(&conns_lock);
		pthread_mutex_lock(&dirty_lock);
		list = dirty_head;
		dirty_head = NULL;
		seen = dirty_marks;
		/*
		 * Walked by its own links: once off the list, an up-call may put
		 * one back on the new list (dirty_next) while this walks it.
		 */
		for (so = list; so; so = so->dirty_next) {
			so->dirty = false;
			so->work_next = so->dirty_next;
		}
		pthread_mutex_unlock(&dirty_lock);
		/* Each one on the list is listed: unlisting it takes conns_lock, held here. */
		for (so = list; so; so = next) {
			struct swc_ready r;
			bool again = true;

			next = so->work_next;
			atomic_fetch_add_explicit(&prog_looks, 1, memory_order_relaxed);
			if (sess_trylock(so)) {
				if (so->live && !so->sess.error && !so->in_recv)
					poll_sess(so, &r);
				again = so->want_w && !so->sess.error;
				sess_unlock(so);
			}
			/* Busy (its holder publishes), or waiting for credits: looked at again. */
			if (again) {
				mark_dirty(so, false);
				looking = true;
			}
		}
		pthread_mutex_unlock(&conns_lock);
		t = !looking								      ? 100
		    : now_ns() < atomic_load_explicit(&prog_spin_until, memory_order_relaxed) ? 0
											      : 1;
		atomic_store(&prog_asleep, true);
		pthread_mutex_lock(&dirty_lock);
		news = dirty_marks != seen;
		pthread_mutex_unlock(&dirty_lock);
		if (!news) {
			struct pollfd p = { .fd = prog_wake, .events = POLLIN };

			if (t)
				poll(&p, 1, t);
			else
				sched_yield();
		}
		atomic_store(&prog_asleep, false);
		(void)!real.read(prog_wake, &v, sizeof(v));
	}
	return NULL;
}

/* Sockets ----------------------------------------------------------------------- */

static struct sps *sps_new(int kind)
{
	struct sps *so = calloc(1, sizeof(*so));

	if (!so)
		return NULL;
	pthread_mutex_init(&so->lock, NULL);
	pthread_mutex_init(&so->send_mx, NULL);
	pthread_mutex_init(&so->recv_mx, NULL);
	atomic_init(&so->refs, 1);
	so->kind = kind;
	so->kfd = so->fd = so->evfd = so->afd = so->wake = -1;
	so->ls = SP_INVALID_SOCKET;
	so->pid = self_pid;
	so->sndbuf = so->rcvbuf = (int)(opt_ring * opt_msg);
	return so;
}

static void sps_free(struct sps *so)
{
	int err;

	if (so->kind == SPS_CONN && so->live && so->pid == self_pid) {
		sps_log(3,
			"fd %d: %llu copied, %llu large (%llu staged) messages, %llu credit writes",
			so->fd, (unsigned long long)so->sess.st.small_msgs,
			(unsigned long long)so->sess.st.large_msgs,
			(unsigned long long)so->sess.st.staged_msgs,
			(unsigned long long)so->sess.st.credit_writes);
		pthread_mutex_lock(&conns_lock);
		for (struct sps **p = &conns; *p; p = &(*p)->next) {
			if (*p == so) {
				*p = so->next;
				n_conns--;
				break;
			}
		}
		unmark_dirty(so);
		pthread_mutex_unlock(&conns_lock);
		sess_lock(so);
		/*
		 * Its waits below let the lock go: an up-call must not look at a
		 * session on its way out (live is read under the lock).
		 */
		so->live = false;
		/* A close ends the stream as TCP's does (EOF), unless SO_LINGER asked to abort. */
		so->sess.o.timeout_ms = 2000;
		if (!so->linger0 && !so->sess.error && !so->shut_wr)
			swc_shutdown(&so->sess);
		if (so->linger0)
			so->sess.error = ECONNRESET; /* fini then does not wait */
		swc_sess_fini(&so->sess);
		sess_unlock(so);
	}
	if (so->kind == SPS_LISTEN && so->ls != SP_INVALID_SOCKET && so->pid == self_pid)
		procs.close_socket(so->ls, &err);
	free(so->dup);
	if (so->kfd >= 0)
		real.close(so->kfd);
	if (so->afd >= 0)
		real.close(so->afd);
	if (so->wake >= 0)
		real.close(so->wake);
	if (so->evfd >= 0)
		real.close(so->evfd);
	pthread_mutex_destroy(&so->lock);
	pthread_mutex_destroy(&so->send_mx);
	pthread_mutex_destroy(&so->recv_mx);
	free(so);
}

static void sps_put(struct sps *so)
{
	if (atomic_fetch_sub(&so->refs, 1) == 1)
		sps_free(so);
}

/* Name fd by so (one more reference). */
static void fd_set_sps(int fd, struct sps *so)
{
	atomic_fetch_add(&so->refs, 1);
	atomic_store_explicit(&fdtab[fd], so, memory_order_release);
}

/* fd no longer names a SAN socket: the reference it held goes. */
static void fd_drop(int fd)
{
	struct sps *so;

	if (fd < 0 || fd >= SPS_MAX_FD)
		return;
	so = atomic_exchange(&fdtab[fd], NULL);
	if (so)
		sps_put(so);
}

/*
 * The switch's own descriptors go high (half the descriptor limit, when
 * that is room enough), so that the program's numbers stay as dense as
 * TCP's: programs size tables by them (wrk's event loop refuses a
 * connection whose number is above 3 per connection).  fd itself, or its
 * new number.
 */
static int high(int fd)
{
	static int base = -1;
	int h;

	if (base < 0) {
		struct rlimit rl;

		base = !getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur >= 512 &&
			       rl.rlim_cur != RLIM_INFINITY
			   ? (int)(rl.rlim_cur / 2 < 32768 ? rl.rlim_cur / 2 : 32768)
			   : 0;
	}
	if (fd < 0 || !base || fd >= base)
		return fd;
	h = real.fcntl(fd, F_DUPFD_CLOEXEC, base);
	if (h < 0)
		return fd;
	real.close(fd);
	return h;
}

/*
 * Put a new object (newfd) at the program's number fd, the kernel socket
 * there moving to a number of its own: that number, or -1.
 */
static int take_number(int fd, int newfd)
{
	int k = high(real.fcntl(fd, F_DUPFD_CLOEXEC, 0));

	if (k < 0)
		return -1;
	if (real.dup3(newfd, fd, O_CLOEXEC) < 0) {
		real.close(k);
		return -1;
	}
	real.close(newfd);
	return k;
}

/*
 * The descriptors a SAN connection needs of the process: the progress
 * thread's wake, the program's number (an eventfd) and the copy that
 * stays with the session.  Taken before the connection is, so that a
 * process out of descriptors leaves it where it was (EMFILE, as the
 * kernel's accept).
 */
struct conn_fds {
	int wake, ev, evfd;
};

static void conn_fds_close(struct conn_fds *f)
{
	if (f->wake >= 0)
		real.close(f->wake);
	if (f->ev >= 0)
		real.close(f->ev);
	if (f->evfd >= 0)
		real.close(f->evfd);
	f->wake = f->ev = f->evfd = -1;
}

/* 0, or -1 with errno (EMFILE when none is left) and nothing open. */
static int conn_fds_open(struct conn_fds *f)
{
	int err;

	/* The switch's own numbers go high: the program's stay as dense as with TCP. */
	f->wake = high(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	f->ev = f->wake >= 0 ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
	f->evfd = f->ev >= 0 ? high(real.fcntl(f->ev, F_DUPFD_CLOEXEC, 0)) : -1;
	if (f->evfd >= 0 && f->ev < SPS_MAX_FD)
		return 0;
	err = f->evfd >= 0 ? EMFILE : errno; /* past the switch's table: no number for it */
	conn_fds_close(f);
	errno = err;
	return -1;
}

/*
 * Whether the provider's accept finds the descriptors it needs of its own
 * (softnic: the connection's socket, the peer's segments, the QP's): 0, or
 * -1 and EMFILE.  Asked before the accept, which takes the connection out
 * of its queue for good and drops it when it finds none.
 */
static int accept_room(int fd)
{
	int k[SPS_ACCEPT_ROOM], n, err = 0;

	for (n = 0; n < SPS_ACCEPT_ROOM; n++) {
		k[n] = real.fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (k[n] < 0) {
			err = errno;
			break;
		}
	}
	while (n)
		real.close(k[--n]);
	errno = err;
	return err ? -1 : 0;
}

/*
 * A connected SAN socket s as a session at number fd (-1: a new number),
 * with the descriptors f (both s and f are taken on every path); its fd
 * or -1.
 */
static int conn_open(sp_socket s, int fd, struct conn_fds *f, struct sps **out)
{
	struct swc_opts o = { 0 };
	struct sps *so = sps_new(SPS_CONN);
	int ev = f->ev, ret, err;

	if (!so)
		goto err_sock;
	so->wake = f->wake;
	so->evfd = f->evfd;
	f->wake = f->evfd = -1; /* so has them now */
	so->events = (struct swc_events){
		.ctx = so, .create = ev_create, .destroy = ev_destroy, .wait = ev_wait
	};
	o = (struct swc_opts){ .events = &so->events,
			       .ring = opt_ring,
			       .msg_size = opt_msg,
			       .spin_us = opt_spin,
			       .timeout_ms = opt_timeout };
	ret = swc_sess_init(&so->sess, &spi, s, &o);
	if (ret) {
		real.close(ev);
		sps_log(1, "warning: a SAN session does not start (%s)", strerror(ret));
		sps_put(so);
		errno = ret;
		return -1;
	}
	so->live = true;
	if (fd >= 0) {
		so->kfd = take_number(fd, ev);
		if (so->kfd < 0)
			goto err_live;
	} else {
		fd = ev;
	}
	so->fd = fd;
	pthread_mutex_lock(&conns_lock);
	so->next = conns;
	conns = so;
	n_conns++;
	pthread_mutex_lock(&dirty_lock);
	so->listed = true;
	pthread_mutex_unlock(&dirty_lock);
	pthread_mutex_unlock(&conns_lock);
	/* What came before it was listed: published now. */
	mark_dirty(so, true);
	fd_set_sps(fd, so);
	*out = so;
	sps_put(so); /* the fd holds it */
	return fd;

err_live:
	err = errno;
	real.close(ev);
	swc_sess_fini(&so->sess);
	so->live = false;
	sps_put(so);
	errno = err;
	return -1;
err_sock:
	conn_fds_close(f);
	procs.close_socket(s, &err);
	errno = ENOMEM;
	return -1;
}

/*
 * exit() ends every stream as a close does (the peer reads EOF, not a
 * reset), before the provider's destructors run.
 */
static void sps_exit(void)
{
	if (started_pid != self_pid)
		return;
	pthread_mutex_lock(&conns_lock);
	for (struct sps *so = conns; so; so = so->next) {
		if (!sess_trylock(so))
			continue;
		so->sess.o.timeout_ms = 500;
		if (so->live && !so->sess.error && !so->shut_wr && !so->linger0) {
			swc_shutdown(&so->sess);
			so->shut_wr = true;
		}
		sess_unlock(so);
	}
	pthread_mutex_unlock(&conns_lock);
}

/*
 * In a child of fork() the provider is the parent's: the child's switch
 * forgets it (nothing of it is released here).  A listener is at once the
 * kernel's listener alone, in an epoll set of the child's own (the
 * parent's set also holds the parent's accept event).  When listeners
 * were inherited, the child's first accept or epoll_ctl on one of them
 * starts a provider of the child's own (not here: other libraries' fork
 * handlers, which run after this one, must have run) and adds a SAN
 * listener on the parent's backend listener (from the parent's
 * duplicate_socket), so each worker process accepts SAN connections; a
 * parent that never accepts holds none back (the backend's queue is one).
 * Connected SAN sockets stay the parent's (ENOTCONN here).
 */
static atomic_bool child_pending;
static pthread_mutex_t child_mx = PTHREAD_MUTEX_INITIALIZER;

static void atfork_child(void)
{
	struct epoll_event ee = { .events = EPOLLIN };
	bool listeners = false;

	self_pid = getpid();
	pthread_mutex_init(&conns_lock, NULL);
	pthread_mutex_init(&h_lock, NULL);
	pthread_mutex_init(&child_mx, NULL);
	pthread_mutex_init(&dirty_lock, NULL);
	conns = NULL;
	n_conns = 0;
	dirty_head = NULL;
	atomic_store(&prog_asleep, false);
	if (prog_wake >= 0)
		real.close(prog_wake);
	prog_wake = -1;
	for (int fd = 0; fd < SPS_MAX_FD; fd++) {
		struct sps *so = lookup(fd);
		int ep;

		if (!so || so->kind != SPS_LISTEN || so->fd != fd)
			continue;
		pthread_mutex_init(&so->lock, NULL);
		listeners |= so->dup != NULL;
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0)
			continue;
		ee.data.fd = so->kfd;
		real.epoll_ctl(ep, EPOLL_CTL_ADD, so->kfd, &ee);
		real.dup3(ep, fd, O_CLOEXEC);
		real.dup3(ep, so->evfd, O_CLOEXEC);
		real.close(ep);
	}
	atomic_store(&child_pending, started && listeners);
}

/* A SAN listener of this child's own beside the kernel listener of so (at fd). */
static void child_listener(struct sps *so, int fd)
{
	struct epoll_event ee = { .events = EPOLLIN };
	sp_socket ls = SP_INVALID_SOCKET;
	int afd, err = 0, e;

	afd = high(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	if (afd >= 0)
		ls = procs.socket_from_info(so->dup, 0, &err);
	if (ls != SP_INVALID_SOCKET &&
	    procs.event_select(ls, SP_EVENT_FD(afd), SP_FD_ACCEPT, &err)) {
		procs.close_socket(ls, &e);
		ls = SP_INVALID_SOCKET;
	}
	if (ls == SP_INVALID_SOCKET) {
		sps_log(1, "warning: fd %d: no SAN listener in this child (error %d): TCP only", fd,
			err);
		if (afd >= 0)
			real.close(afd);
		return;
	}
	ee.data.fd = afd;
	real.epoll_ctl(fd, EPOLL_CTL_ADD, afd, &ee);
	if (so->afd >= 0)
		real.close(so->afd); /* the parent's accept event */
	so->afd = afd;
	so->ls = ls;
	so->pid = self_pid;
	sps_log(2, "fd %d listens on TCP and the SAN in this child", fd);
}

/* The first use of an inherited listener in a fork child: the SAN's side of each. */
static void child_start(void)
{
	if (!atomic_load_explicit(&child_pending, memory_order_acquire))
		return;
	pthread_mutex_lock(&child_mx);
	if (atomic_load(&child_pending)) {
		started = false;
		n_san_addrs = 0;
		start_once = (pthread_once_t)PTHREAD_ONCE_INIT;
		pthread_once(&start_once, start);
		for (int fd = 0; started && fd < SPS_MAX_FD; fd++) {
			struct sps *so = lookup(fd);

			if (so && so->kind == SPS_LISTEN && so->fd == fd && so->dup)
				child_listener(so, fd);
		}
		atomic_store(&child_pending, false);
	}
	pthread_mutex_unlock(&child_mx);
}

/* The calls ----------------------------------------------------------------------- */

SPS_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct sps *so = lookup(fd);

	if (so && so->kfd >= 0)
		return real.bind(so->kfd, addr, len);
	if (so) {
		errno = EINVAL;
		return -1;
	}
	return real.bind(fd, addr, len);
}

SPS_EXPORT int listen(int fd, int backlog)
{
	struct sps *so = lookup(fd);
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	struct epoll_event ee = { .events = EPOLLIN };
	int ep, err = 0;

	if (so)
		return so->kind == SPS_LISTEN ? real.listen(so->kfd, backlog)
					      : (errno = EINVAL, -1);
	/* The kernel's listener stays: plain TCP clients keep reaching it. */
	if (real.listen(fd, backlog))
		return -1;
	if (!tcp4(fd) || !san_ready() || real.getsockname(fd, (struct sockaddr *)&local, &len) ||
	    (local.sin_addr.s_addr != htonl(INADDR_ANY) &&
	     !san_reaches((struct sockaddr *)&local, len)))
		return 0;
	so = sps_new(SPS_LISTEN);
	if (!so)
		return 0;
	so->afd = high(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	so->ls = procs.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP, 1, 0, &err);
	if (so->afd < 0 || so->ls == SP_INVALID_SOCKET ||
	    procs.bind(so->ls, (struct sockaddr *)&local, sizeof(local), &err) ||
	    procs.listen(so->ls, backlog, &err) ||
	    procs.event_select(so->ls, SP_EVENT_FD(so->afd), SP_FD_ACCEPT, &err))
		goto err_so;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		goto err_so;
	so->nonblock = real.fcntl(fd, F_GETFL) & O_NONBLOCK;
	so->cloexec = real.fcntl(fd, F_GETFD) & FD_CLOEXEC;
	so->evfd = high(real.fcntl(ep, F_DUPFD_CLOEXEC, 0));
	so->kfd = so->evfd >= 0 ? take_number(fd, ep) : -1;
	if (so->kfd < 0) {
		real.close(ep);
		goto err_so;
	}
	so->fd = fd;
	real.fcntl(so->kfd, F_SETFL, real.fcntl(so->kfd, F_GETFL) | O_NONBLOCK);
	ee.data.fd = so->kfd;
	epoll_ctl(fd, EPOLL_CTL_ADD, so->kfd, &ee);
	ee.data.fd = so->afd;
	epoll_ctl(fd, EPOLL_CTL_ADD, so->afd, &ee);
	/* What a fork child needs to accept on this listener too. */
	so->dup = malloc(sizeof(*so->dup));
	if (so->dup && procs.duplicate_socket(so->ls, (uint32_t)self_pid, so->dup, &err)) {
		/* Expected where the backend cannot share a listener (verbs): no warning. */
		sps_log(err == SP_WSAEOPNOTSUPP ? 2 : 1,
			"%sfd %d: the SAN listener stays with this process (error %d)",
			err == SP_WSAEOPNOTSUPP ? "" : "warning: ", fd, err);
		free(so->dup);
		so->dup = NULL;
	}
	fd_set_sps(fd, so);
	sps_put(so);
	sps_log(2, "fd %d listens on TCP and the SAN, port %u", fd, ntohs(local.sin_port));
	return 0;

err_so:
	sps_log(1, "warning: no SAN listener for fd %d (error %d): TCP only", fd, err);
	sps_put(so);
	return 0;
}

static int do_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	struct sps *so = lookup(fd), *c;
	struct sockaddr_storage peer;
	struct conn_fds f;
	int plen, err = 0, r;
	uint64_t v;

	if (!so)
		return real.accept4(fd, addr, alen, flags);
	if (so->kind != SPS_LISTEN) {
		errno = EINVAL;
		return -1;
	}
	child_start();
	for (;;) {
		if (so->pid == self_pid) {
			sp_socket s;

			/* No descriptor left: EMFILE, the connection stays queued. */
			if (conn_fds_open(&f) || accept_room(f.wake)) {
				conn_fds_close(&f);
				return -1;
			}
			(void)!real.read(so->afd, &v, sizeof(v));
			plen = sizeof(peer);
			s = procs.accept(so->ls, (struct sockaddr *)&peer, &plen, NULL, 0, &err);
			if (s == SP_INVALID_SOCKET)
				conn_fds_close(&f);
			if (s != SP_INVALID_SOCKET) {
				r = conn_open(s, -1, &f, &c);
				/*
				 * Its peer went before the session started (a client
				 * whose provider failed after the connect, EMFILE say):
				 * TCP's accept never returns such a connection either.
				 */
				if (r < 0 && (errno == ECONNRESET || errno == ECONNABORTED ||
					      errno == EPIPE || errno == ETIMEDOUT))
					continue;
				if (r < 0)
					return -1;
				c->nonblock = flags & SOCK_NONBLOCK;
				c->cloexec = flags & SOCK_CLOEXEC;
				c->peer_len = (socklen_t)plen;
				memcpy(&c->peer, &peer, (size_t)plen);
				c->local_len = sizeof(c->local);
				real.getsockname(so->kfd, (struct sockaddr *)&c->local,
						 &c->local_len);
				if (addr && alen) {
					memcpy(addr, &peer,
					       *alen < (socklen_t)plen ? *alen : (size_t)plen);
					*alen = (socklen_t)plen;
				}
				sps_log(3, "fd %d: SAN connection accepted", r);
				return r;
			}
		}
		r = real.accept4(so->kfd, addr, alen, flags);
		if (r >= 0 || errno != EAGAIN)
			return r;
		if (so->nonblock) {
			errno = EAGAIN;
			return -1;
		}
		struct pollfd p = { .fd = so->evfd, .events = POLLIN };

		if (poll(&p, 1, -1) < 0)
			return -1;
	}
}

/*
 * A listener is an epoll instance, which the kernel does not take with
 * EPOLLEXCLUSIVE (EINVAL): nginx asks for it with several workers.  Every
 * waiter is woken instead; the accepts that lose the race answer EAGAIN.
 */
SPS_EXPORT int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
	struct sps *so = lookup(fd);

	if (so && so->kind == SPS_LISTEN)
		child_start();
	if (so && so->kind == SPS_LISTEN && ev && (ev->events & EPOLLEXCLUSIVE)) {
		struct epoll_event e = *ev;

		e.events &= ~(uint32_t)EPOLLEXCLUSIVE;
		return real.epoll_ctl(ep, op, fd, &e);
	}
	return real.epoll_ctl(ep, op, fd, ev);
}

/*
 * epoll_wait spins before it sleeps while this process has SAN
 * connections: the provider's completions are taken on this thread, whose
 * up-calls publish the connections' readiness to their eventfds, which
 * this epoll set then shows.  A message that comes within the spin costs
 * no thread wake-up; asleep it costs two (the provider's progress thread,
 * then this one), where TCP's costs one.  The events found, or -1 with
 * errno EAGAIN when the spin found none (the caller sleeps).
 */
static int epoll_spin(int ep, struct epoll_event *ev, int max, int *timeout)
{
	sp_progress_fn progress = atomic_load_explicit(&prov_progress, memory_order_acquire);
	uint64_t start, spin = (uint64_t)opt_epoll_spin * 1000;
	int n, err;

	if (!*timeout || !progress || !spin || started_pid != self_pid ||
	    !atomic_load_explicit(&n_conns, memory_order_relaxed))
		goto sleep;
	start = now_ns();
	do {
		progress(&err);
		n = real.epoll_wait(ep, ev, max, 0);
		if (n) {
			if (n > 0)
				atomic_fetch_add_explicit(&epoll_spun, 1, memory_order_relaxed);
			return n;
		}
		sched_yield(); /* the peer may need this core */
	} while (now_ns() - start < spin);
	if (*timeout > 0) {
		uint64_t ms = (now_ns() - start) / 1000000;

		*timeout = ms >= (uint64_t)*timeout ? 0 : *timeout - (int)ms;
	}
	atomic_fetch_add_explicit(&epoll_slept, 1, memory_order_relaxed);
sleep:
	errno = EAGAIN;
	return -1;
}

SPS_EXPORT int epoll_wait(int ep, struct epoll_event *ev, int max, int timeout)
{
	int saved = errno, n = epoll_spin(ep, ev, max, &timeout);

	if (n >= 0 || errno != EAGAIN)
		return n;
	errno = saved;
	return real.epoll_wait(ep, ev, max, timeout);
}

/* With a signal mask, no spin: the mask is the program's only while it waits. */
SPS_EXPORT int epoll_pwait(int ep, struct epoll_event *ev, int max, int timeout, const sigset_t *ss)
{
	int saved = errno, n;

	if (ss)
		return real.epoll_pwait(ep, ev, max, timeout, ss);
	n = epoll_spin(ep, ev, max, &timeout);
	if (n >= 0 || errno != EAGAIN)
		return n;
	errno = saved;
	return real.epoll_pwait(ep, ev, max, timeout, NULL);
}

SPS_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
	return do_accept(fd, addr, alen, 0);
}

SPS_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	return do_accept(fd, addr, alen, flags);
}

SPS_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct sps *so = lookup(fd);
	struct sockaddr_in local;
	socklen_t llen = sizeof(local);
	struct conn_fds f;
	sp_socket s;
	int err = 0, e, r;

	if (so) {
		errno = so->kind == SPS_CONN ? EISCONN : EINVAL;
		return -1;
	}
	if (!addr || len < sizeof(struct sockaddr_in) || addr->sa_family != AF_INET || !tcp4(fd) ||
	    !san_ready() || !san_reaches(addr, len))
		return real.connect(fd, addr, len);
	/* A port of the kernel's: the local address the program sees, and the peer too. */
	if (real.getsockname(fd, (struct sockaddr *)&local, &llen) || !local.sin_port) {
		struct sockaddr_in any = { .sin_family = AF_INET };

		if (real.bind(fd, (struct sockaddr *)&any, sizeof(any)) ||
		    real.getsockname(fd, (struct sockaddr *)&local, &llen))
			return real.connect(fd, addr, len);
	}
	if (local.sin_addr.s_addr == htonl(INADDR_ANY))
		local.sin_addr = ((const struct sockaddr_in *)addr)->sin_addr;
	s = procs.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP, 1, 0, &err);
	if (s == SP_INVALID_SOCKET)
		return real.connect(fd, addr, len);
	if (procs.bind(s, (struct sockaddr *)&local, sizeof(local), &err) ||
	    procs.connect(s, addr, (int)len, &err)) {
		/* No SAN listener there (or not a sanprov peer): TCP, transparently. */
		procs.close_socket(s, &e);
		sps_log(3, "fd %d: no SAN peer (WSA error %d): TCP", fd, err);
		return real.connect(fd, addr, len);
	}
	e = real.fcntl(fd, F_GETFL);
	r = real.fcntl(fd, F_GETFD);
	if (conn_fds_open(&f)) {
		err = errno;
		procs.close_socket(s, &e);
		errno = err;
		return -1;
	}
	if (conn_open(s, fd, &f, &so) < 0)
		return -1;
	so->nonblock = e & O_NONBLOCK;
	so->cloexec = r & FD_CLOEXEC;
	memcpy(&so->local, &local, sizeof(local));
	so->local_len = sizeof(local);
	memcpy(&so->peer, addr, sizeof(struct sockaddr_in));
	so->peer_len = sizeof(struct sockaddr_in);
	sps_log(3, "fd %d: SAN connection", fd);
	return 0;
}

/* The errno value of a failed session, as TCP's reset reads. */
static int conn_error(struct sps *so, bool write)
{
	sps_log(3, "fd %d: the session failed: %s (WSA error %d)", so->fd, strerror(so->sess.error),
		so->sess.wsa_error);
	return write ? EPIPE : ECONNRESET;
}

static bool usable(struct sps *so)
{
	if (so->pid != self_pid) {
		errno = ENOTCONN; /* a connection stays with the process that made it */
		return false;
	}
	return true;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Wait until so is readable (for_write false) or writable, without its
 * lock: 0, or -1 with errno (EAGAIN after the timeout, EINTR).
 */
static int wait_ready(struct sps *so, bool for_write, int timeout_ms)
{
	uint64_t end = timeout_ms > 0 ? now_ms() + (uint64_t)timeout_ms : 0;
	struct swc_ready r;

	for (int i = 0;; i++) {
		struct pollfd p = { .fd = so->evfd, .events = for_write ? POLLOUT : POLLIN };
		int t = 10;

		sess_lock(so);
		poll_sess(so, &r);
		sess_unlock(so);
		if (for_write ? r.writable : r.readable || so->shut_rd)
			return 0;
		if (end && now_ms() >= end) {
			errno = EAGAIN;
			return -1;
		}
		if (i < 64) {
			sched_yield();
			continue;
		}
		/* Writable comes back by credits, which only a look finds. */
		if (for_write)
			t = 1;
		if (poll(&p, 1, t) < 0)
			return -1;
	}
}

static ssize_t conn_recv_one(struct sps *so, void *buf, size_t len, int flags)
{
	bool block = !so->nonblock && !(flags & MSG_DONTWAIT);
	size_t done = 0, got;
	struct swc_ready r;
	int ret;

	if (!usable(so))
		return -1;
	if (flags & (MSG_PEEK | MSG_OOB)) {
		errno = EOPNOTSUPP;
		return -1;
	}
	if (!len)
		return 0;
	for (;;) {
		bool eof = false;

		sess_lock(so);
		so->in_recv = true;
		if (so->shut_rd) {
			so->in_recv = false;
			sess_unlock(so);
			return (ssize_t)done;
		}
		ret = poll_sess(so, &r);
		if (ret) {
			so->in_recv = false;
			sess_unlock(so);
			if (done)
				return (ssize_t)done;
			errno = conn_error(so, false);
			return -1;
		}
		while (r.readable && done < len) {
			ret = swc_recv_some(&so->sess, (char *)buf + done, len - done, &got);
			if (ret)
				break;
			if (!got) {
				eof = true;
				break;
			}
			done += got;
			swc_poll(&so->sess, &r);
		}
		so->in_recv = false;
		poll_sess(so, &r);
		sess_unlock(so);
		if (ret && !done) {
			errno = conn_error(so, false);
			return -1;
		}
		/* Enough, the end, or a failure after some data. */
		if (done == len || (done && !(flags & MSG_WAITALL)) || eof || ret)
			return (ssize_t)done;
		/* What came in since the first look is read now, not taken for the end. */
		if (r.readable)
			continue;
		if (!block) {
			if (done)
				return (ssize_t)done;
			errno = EAGAIN;
			return -1;
		}
		if (wait_ready(so, false, so->rcvtimeo_ms))
			return done ? (ssize_t)done : -1;
	}
}

static ssize_t conn_send_one(struct sps *so, const void *buf, size_t len, int flags)
{
	bool block = !so->nonblock && !(flags & MSG_DONTWAIT);
	/*
	 * A blocking send waits in the session (for credits, and large ones
	 * move by RDMA); with SO_SNDTIMEO it sends what the credits allow and
	 * waits here, so that the time is kept.
	 */
	bool in_sess = block && !so->sndtimeo_ms;
	uint64_t end = block && so->sndtimeo_ms ? now_ms() + (uint64_t)so->sndtimeo_ms : 0;
	size_t done = 0, sent;
	struct swc_ready r;
	int ret = 0;

	if (!usable(so))
		return -1;
	if (!len)
		return 0;
	for (;;) {
		sess_lock(so);
		if (so->shut_wr) {
			ret = EPIPE;
		} else if (in_sess) {
			ret = swc_send(&so->sess, (const char *)buf + done, len - done);
			if (!ret)
				done = len;
		} else {
			ret = swc_send_some(&so->sess, (const char *)buf + done, len - done, &sent);
			done += sent;
			if (ret == EAGAIN)
				ret = 0;
		}
		poll_sess(so, &r);
		sess_unlock(so);
		if (ret) {
			if (done)
				return (ssize_t)done;
			if (!(flags & MSG_NOSIGNAL))
				raise(SIGPIPE);
			errno = conn_error(so, true);
			return -1;
		}
		if (done == len)
			return (ssize_t)done;
		if (!block) {
			/* The writer will wait for credits: the progress thread looks for them. */
			atomic_store_explicit(&prog_spin_until, now_ns() + SPS_WRITER_SPIN_NS,
					      memory_order_relaxed);
			sess_lock(so);
			so->want_w = true;
			sess_unlock(so);
			mark_dirty(so, true);
			if (done)
				return (ssize_t)done;
			errno = EAGAIN;
			return -1;
		}
		uint64_t now = now_ms();
		int left = end ? (now >= end ? -1 : (int)(end - now)) : 0;

		if (left < 0 || wait_ready(so, true, left)) {
			if (left < 0)
				errno = EAGAIN;
			return done ? (ssize_t)done : -1;
		}
	}
}

/*
 * Whether the program's len bytes at buf are mapped: the kernel answers a
 * bad pointer with EFAULT, the switch must not crash on it.  The kernel
 * reads one byte of each page into scratch.  Nothing is written: a write
 * probe would race the program's other threads on bytes past what the
 * call fills (a receive into a read-only mapping still faults).
 */
static bool user_buf_ok(const void *buf, size_t len, bool write)
{
	(void)write;
	uintptr_t p = (uintptr_t)buf, end = p + len;
	struct iovec loc[64], rem[64];
	char scratch;

	if (end < p)
		return false;
	while (p < end) {
		int n = 0;
		ssize_t r;

		for (; n < 64 && p < end; n++, p = (p | 4095) + 1) {
			rem[n] = (struct iovec){ (void *)p, 1 };
			loc[n] = (struct iovec){ &scratch, 1 };
		}
		r = process_vm_readv(self_pid, loc, (unsigned long)n, rem, (unsigned long)n, 0);
		if (r < 0 && (errno == ENOSYS || errno == EPERM))
			return true; /* no way to tell here */
		if (r != n)
			return false;
	}
	return true;
}

static ssize_t conn_send(struct sps *so, const void *buf, size_t len, int flags)
{
	ssize_t r;

	if (flags & MSG_OOB) {
		errno = EOPNOTSUPP;
		return -1;
	}
	if (!user_buf_ok(buf, len, false)) {
		errno = EFAULT;
		return -1;
	}
	/* A close() by another thread meanwhile leaves so to this call until it returns. */
	atomic_fetch_add(&so->refs, 1);
	pthread_mutex_lock(&so->send_mx);
	r = conn_send_one(so, buf, len, flags);
	pthread_mutex_unlock(&so->send_mx);
	sps_put(so);
	return r;
}

static ssize_t conn_recv(struct sps *so, void *buf, size_t len, int flags)
{
	ssize_t r;

	if (!user_buf_ok(buf, len, true)) {
		errno = EFAULT;
		return -1;
	}
	atomic_fetch_add(&so->refs, 1);
	pthread_mutex_lock(&so->recv_mx);
	r = conn_recv_one(so, buf, len, flags);
	pthread_mutex_unlock(&so->recv_mx);
	sps_put(so);
	return r;
}

static ssize_t conn_recvv(struct sps *so, const struct iovec *iov, int n, int flags)
{
	ssize_t total = 0, r;

	for (int i = 0; i < n; i++) {
		if (!iov[i].iov_len)
			continue;
		r = conn_recv(so, iov[i].iov_base, iov[i].iov_len,
			      total ? flags | MSG_DONTWAIT : flags);
		if (r < 0)
			return total ? total : -1;
		total += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	return total;
}

static ssize_t conn_sendv(struct sps *so, const struct iovec *iov, int n, int flags)
{
	ssize_t total = 0, r;

	for (int i = 0; i < n; i++) {
		if (!iov[i].iov_len)
			continue;
		r = conn_send(so, iov[i].iov_base, iov[i].iov_len,
			      total ? flags | MSG_NOSIGNAL : flags);
		if (r < 0)
			return total ? total : -1;
		total += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	return total;
}

#define CONN_OR(fd, so)                                                                            \
	struct sps *so = lookup(fd);                                                               \
	if (so && so->kind != SPS_CONN) {                                                          \
		errno = ENOTCONN;                                                                  \
		return -1;                                                                         \
	}

SPS_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	struct sps *so = lookup(fd);

	if (!so)
		return real.read(fd, buf, len);
	if (so->kind != SPS_CONN) {
		errno = EINVAL;
		return -1;
	}
	return conn_recv(so, buf, len, 0);
}

SPS_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		abort();
	return read(fd, buf, len);
}

SPS_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	struct sps *so = lookup(fd);

	if (!so)
		return real.write(fd, buf, len);
	if (so->kind != SPS_CONN) {
		errno = ENOTCONN;
		return -1;
	}
	return conn_send(so, buf, len, 0);
}

/*
 * sendfile to a SAN socket copies: the file's bytes are read here and
 * sent as a write would send them (what the socket takes; the file
 * offset, or *off, moves by what was sent).
 */
static ssize_t conn_sendfile(struct sps *so, int in, off_t *off, size_t count)
{
	char buf[32768];
	size_t total = 0;

	while (total < count) {
		size_t n = count - total < sizeof(buf) ? count - total : sizeof(buf);
		ssize_t r = off ? pread(in, buf, n, *off) : real.read(in, buf, n), w;

		if (r <= 0) {
			if (r < 0 && !total)
				return -1;
			break;
		}
		w = conn_send(so, buf, (size_t)r, 0);
		if (w < 0) {
			int e = errno;

			if (!off)
				lseek(in, -r, SEEK_CUR);
			errno = e;
			return total ? (ssize_t)total : -1;
		}
		if (off)
			*off += w;
		else if (w < r)
			lseek(in, w - r, SEEK_CUR);
		total += (size_t)w;
		if (w < r)
			break;
	}
	return (ssize_t)total;
}

SPS_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
	struct sps *so = lookup(out);

	if (!so)
		return real.sendfile(out, in, off, count);
	if (so->kind != SPS_CONN) {
		errno = EINVAL;
		return -1;
	}
	return conn_sendfile(so, in, off, count);
}

_Static_assert(sizeof(off_t) == sizeof(off64_t), "one offset type");

SPS_EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t count)
{
	return sendfile(out, in, (off_t *)off, count);
}

SPS_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
	CONN_OR(fd, so);
	if (so && (n < 0 || n > IOV_MAX)) {
		errno = EINVAL;
		return -1;
	}
	return so ? conn_recvv(so, iov, n, 0) : real.readv(fd, iov, n);
}

SPS_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	CONN_OR(fd, so);
	if (so && (n < 0 || n > IOV_MAX)) {
		errno = EINVAL;
		return -1;
	}
	return so ? conn_sendv(so, iov, n, 0) : real.writev(fd, iov, n);
}

SPS_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	CONN_OR(fd, so);
	return so ? conn_send(so, buf, len, flags) : real.send(fd, buf, len, flags);
}

SPS_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	CONN_OR(fd, so);
	return so ? conn_recv(so, buf, len, flags) : real.recv(fd, buf, len, flags);
}

SPS_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		abort();
	return recv(fd, buf, len, flags);
}

SPS_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
			  socklen_t tolen)
{
	CONN_OR(fd, so);
	if (!so)
		return real.sendto(fd, buf, len, flags, to, tolen);
	/* As Linux TCP: the address of a connected stream socket is ignored. */
	(void)to;
	(void)tolen;
	return conn_send(so, buf, len, flags);
}

SPS_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
			    socklen_t *fromlen)
{
	CONN_OR(fd, so);
	if (!so)
		return real.recvfrom(fd, buf, len, flags, from, fromlen);
	if (from && fromlen) {
		memcpy(from, &so->peer, *fromlen < so->peer_len ? *fromlen : so->peer_len);
		*fromlen = so->peer_len;
	}
	return conn_recv(so, buf, len, flags);
}

SPS_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
				  struct sockaddr *from, socklen_t *fromlen)
{
	if (len > buflen)
		abort();
	return recvfrom(fd, buf, len, flags, from, fromlen);
}

SPS_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	CONN_OR(fd, so);
	if (!so)
		return real.sendmsg(fd, m, flags);
	if (m->msg_controllen) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return conn_sendv(so, m->msg_iov, (int)m->msg_iovlen, flags);
}

SPS_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	CONN_OR(fd, so);
	if (!so)
		return real.recvmsg(fd, m, flags);
	m->msg_controllen = 0;
	m->msg_flags = 0;
	if (m->msg_name) {
		memcpy(m->msg_name, &so->peer,
		       m->msg_namelen < so->peer_len ? m->msg_namelen : so->peer_len);
		m->msg_namelen = so->peer_len;
	}
	return conn_recvv(so, m->msg_iov, (int)m->msg_iovlen, flags);
}

SPS_EXPORT int close(int fd)
{
	struct sps *so = lookup(fd);
	int r;

	if (!so)
		return real.close(fd);
	atomic_store(&fdtab[fd], NULL);
	r = real.close(fd);
	sps_put(so);
	return r;
}

SPS_EXPORT int shutdown(int fd, int how)
{
	struct sps *so = lookup(fd);
	int ret = 0;

	if (!so)
		return real.shutdown(fd, how);
	if (so->kind == SPS_LISTEN)
		return real.shutdown(so->kfd, how);
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
		errno = EINVAL;
		return -1;
	}
	if (!usable(so))
		return -1;
	sess_lock(so);
	if (how != SHUT_WR)
		so->shut_rd = true;
	if (how != SHUT_RD && !so->shut_wr) {
		ret = swc_shutdown(&so->sess);
		so->shut_wr = true;
	}
	struct swc_ready r;
	poll_sess(so, &r);
	sess_unlock(so);
	if (ret && ret != EPIPE) {
		errno = ENOTCONN;
		return -1;
	}
	return 0;
}

static int ms_of(const void *v, socklen_t len)
{
	const struct timeval *tv = v;

	if (len < sizeof(*tv))
		return -1;
	return (int)(tv->tv_sec * 1000 + tv->tv_usec / 1000) +
	       (tv->tv_sec == 0 && tv->tv_usec > 0 && tv->tv_usec < 1000);
}

/* The options of a connected SAN socket the switch keeps itself: a pointer to the int. */
static int *conn_int_opt(struct sps *so, int level, int name)
{
	if (level == IPPROTO_TCP && name == TCP_NODELAY)
		return &so->nodelay;
	if (level != SOL_SOCKET)
		return NULL;
	switch (name) {
	case SO_KEEPALIVE:
		return &so->keepalive;
	case SO_REUSEADDR:
		return &so->reuseaddr;
	case SO_SNDBUF:
		return &so->sndbuf;
	case SO_RCVBUF:
		return &so->rcvbuf;
	default:
		return NULL;
	}
}

/* A kernel TCP socket for options the switch does not know (NULL: -1). */
static int option_fd(struct sps *so)
{
	static int scratch = -1;

	if (so->kfd >= 0)
		return so->kfd;
	if (scratch < 0)
		scratch = real.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return scratch;
}

SPS_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct sps *so = lookup(fd);
	int *p;

	if (!so)
		return real.setsockopt(fd, level, name, val, len);
	if (so->kind == SPS_LISTEN)
		return real.setsockopt(so->kfd, level, name, val, len);
	if (!val) {
		errno = EFAULT;
		return -1;
	}
	p = conn_int_opt(so, level, name);
	if (p) {
		if (len < sizeof(int)) {
			errno = EINVAL;
			return -1;
		}
		memcpy(p, val, sizeof(int));
		return 0;
	}
	if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO)) {
		int ms = ms_of(val, len);

		if (ms < 0) {
			errno = EINVAL;
			return -1;
		}
		*(name == SO_RCVTIMEO ? &so->rcvtimeo_ms : &so->sndtimeo_ms) = ms;
		return 0;
	}
	if (level == SOL_SOCKET && name == SO_LINGER) {
		if (len < sizeof(struct linger)) {
			errno = EINVAL;
			return -1;
		}
		memcpy(&so->linger, val, sizeof(so->linger));
		so->linger0 = so->linger.l_onoff && !so->linger.l_linger;
		return 0;
	}
	return real.setsockopt(option_fd(so), level, name, val, len);
}

static int put_int(void *val, socklen_t *len, int v)
{
	if (!val || !len || *len < sizeof(int)) {
		errno = EINVAL;
		return -1;
	}
	memcpy(val, &v, sizeof(v));
	*len = sizeof(int);
	return 0;
}

SPS_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct sps *so = lookup(fd);
	int *p;

	if (!so)
		return real.getsockopt(fd, level, name, val, len);
	if (so->kind == SPS_LISTEN)
		return real.getsockopt(so->kfd, level, name, val, len);
	p = conn_int_opt(so, level, name);
	if (p)
		return put_int(val, len, *p);
	if (level == SOL_SOCKET) {
		switch (name) {
		case SO_ERROR: {
			int e = 0;

			sess_lock(so);
			if (so->sess.error && !so->sess.eof)
				e = ECONNRESET;
			sess_unlock(so);
			return put_int(val, len, e);
		}
		case SO_TYPE:
			return put_int(val, len, SOCK_STREAM);
		case SO_DOMAIN:
			return put_int(val, len, AF_INET);
		case SO_PROTOCOL:
			return put_int(val, len, IPPROTO_TCP);
		case SO_ACCEPTCONN:
			return put_int(val, len, 0);
		case SO_RCVTIMEO:
		case SO_SNDTIMEO: {
			int ms = name == SO_RCVTIMEO ? so->rcvtimeo_ms : so->sndtimeo_ms;
			struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

			if (!val || !len || *len < sizeof(tv)) {
				errno = EINVAL;
				return -1;
			}
			memcpy(val, &tv, sizeof(tv));
			*len = sizeof(tv);
			return 0;
		}
		case SO_LINGER:
			if (!val || !len || *len < sizeof(so->linger)) {
				errno = EINVAL;
				return -1;
			}
			memcpy(val, &so->linger, sizeof(so->linger));
			*len = sizeof(so->linger);
			return 0;
		default:
			break;
		}
	}
	return real.getsockopt(option_fd(so), level, name, val, len);
}

static int copy_addr(const struct sockaddr_storage *a, socklen_t alen, struct sockaddr *out,
		     socklen_t *len)
{
	if (!out || !len) {
		errno = EFAULT;
		return -1;
	}
	memcpy(out, a, *len < alen ? *len : alen);
	*len = alen;
	return 0;
}

SPS_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct sps *so = lookup(fd);

	if (!so)
		return real.getsockname(fd, addr, len);
	if (so->kind == SPS_LISTEN)
		return real.getsockname(so->kfd, addr, len);
	return copy_addr(&so->local, so->local_len, addr, len);
}

SPS_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct sps *so = lookup(fd);

	if (!so)
		return real.getpeername(fd, addr, len);
	if (so->kind == SPS_LISTEN) {
		errno = ENOTCONN;
		return -1;
	}
	return copy_addr(&so->peer, so->peer_len, addr, len);
}

/* A copy of oldfd at newfd (dup2 semantics, newfd already made by the kernel). */
static int dup_done(int oldfd, int newfd)
{
	struct sps *so = lookup(oldfd);

	if (newfd < 0 || !so)
		return newfd;
	if (newfd >= SPS_MAX_FD) {
		real.close(newfd);
		errno = EMFILE;
		return -1;
	}
	fd_set_sps(newfd, so);
	return newfd;
}

static int do_fcntl(int (*fn)(int, int, ...), int fd, int cmd, va_list ap)
{
	struct sps *so = lookup(fd);
	long arg = va_arg(ap, long);

	if (!so)
		return fn(fd, cmd, arg);
	switch (cmd) {
	case F_GETFL:
		return O_RDWR | (so->nonblock ? O_NONBLOCK : 0);
	case F_SETFL:
		so->nonblock = arg & O_NONBLOCK;
		return 0;
	case F_GETFD:
		return so->cloexec ? FD_CLOEXEC : 0;
	case F_SETFD:
		/* SAN sockets never reach a new image (exec): the flag is only recorded. */
		so->cloexec = arg & FD_CLOEXEC;
		return 0;
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		return dup_done(fd, fn(fd, cmd, arg));
	default:
		return fn(so->kfd >= 0 ? so->kfd : fd, cmd, arg);
	}
}

SPS_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	int r;

	va_start(ap, cmd);
	r = do_fcntl(real.fcntl, fd, cmd, ap);
	va_end(ap);
	return r;
}

SPS_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	int r;

	va_start(ap, cmd);
	r = do_fcntl(real.fcntl64, fd, cmd, ap);
	va_end(ap);
	return r;
}

SPS_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	struct sps *so = lookup(fd);
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!so)
		return real.ioctl(fd, req, arg);
	if (req == FIONBIO) {
		so->nonblock = *(int *)arg != 0;
		return 0;
	}
	if (req == FIONREAD && so->kind == SPS_CONN) {
		struct swc_ready r;

		if (!usable(so))
			return -1;
		sess_lock(so);
		poll_sess(so, &r);
		sess_unlock(so);
		*(int *)arg = so->sess.error ? 0 : r.bytes > INT32_MAX ? INT32_MAX : (int)r.bytes;
		return 0;
	}
	if (so->kfd >= 0)
		return real.ioctl(so->kfd, req, arg);
	errno = ENOTTY;
	return -1;
}

SPS_EXPORT int dup(int fd)
{
	return dup_done(fd, real.dup(fd));
}

SPS_EXPORT int dup2(int oldfd, int newfd)
{
	int r;

	if (oldfd == newfd)
		return real.dup2(oldfd, newfd);
	r = real.dup2(oldfd, newfd);
	if (r >= 0) {
		fd_drop(newfd);
		dup_done(oldfd, r);
	}
	return r;
}

SPS_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	int r = real.dup3(oldfd, newfd, flags);

	if (r >= 0) {
		fd_drop(newfd);
		dup_done(oldfd, r);
	}
	return r;
}

/* Whether fd is a SAN socket (the tests look it up with dlsym; absent without the switch). */
/* How many times the progress thread looked at a session (an idle connection: never). */
SPS_EXPORT uint64_t sanprov_preload_progress_looks(void)
{
	return atomic_load_explicit(&prog_looks, memory_order_relaxed);
}

/* epoll_waits that found events in their spin, and those that slept (with SAN connections). */
SPS_EXPORT void sanprov_preload_epoll_stats(uint64_t *spun, uint64_t *slept)
{
	*spun = atomic_load_explicit(&epoll_spun, memory_order_relaxed);
	*slept = atomic_load_explicit(&epoll_slept, memory_order_relaxed);
}

/* A session's waits (a blocked send or receive, 1 ms each), and those an event ended. */
SPS_EXPORT void sanprov_preload_wait_stats(uint64_t *waits, uint64_t *wakes)
{
	*waits = atomic_load_explicit(&sess_waits, memory_order_relaxed);
	*wakes = atomic_load_explicit(&sess_wakes, memory_order_relaxed);
}

SPS_EXPORT int sanprov_preload_is_san(int fd)
{
	struct sps *so = lookup(fd);

	return so ? so->kind : 0;
}
