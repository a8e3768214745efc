/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic on Linux: memfd segments, eventfds, robust process-shared
 * mutexes, and the page checks a NIC's pinning makes.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../snic.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

/* What every received segment must carry: its size can no longer change. */
#define SNIC_SEALS_SIZE (F_SEAL_SHRINK | F_SEAL_GROW)

void snic_os_close(snic_handle h)
{
	if (h >= 0)
		close(h);
}

int snic_os_shm_create(struct snic_shm *shm, const char *name, size_t len, bool peer_readonly)
{
	/*
	 * Sealed against resizing, so that no holder of the descriptor can
	 * truncate it under a mapping (SIGBUS in every process using it), and
	 * against new seals.  Future write: this mapping stays writable, every
	 * later one (a peer's, or one reopened through /proc) is read-only.
	 */
	int seals = SNIC_SEALS_SIZE | F_SEAL_SEAL | (peer_readonly ? F_SEAL_FUTURE_WRITE : 0);
	int ret;

	shm->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (shm->fd < 0)
		return errno;
	/* Sparse: only the pages a table or ring really touches cost memory. */
	if (ftruncate(shm->fd, (off_t)len)) {
		ret = errno;
		goto err_close;
	}
	shm->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, shm->fd, 0);
	if (shm->addr == MAP_FAILED) {
		ret = errno;
		goto err_close;
	}
	if (fcntl(shm->fd, F_ADD_SEALS, seals)) {
		ret = errno;
		munmap(shm->addr, len);
		goto err_close;
	}
	shm->len = len;
	return 0;

err_close:
	close(shm->fd);
	shm->fd = -1;
	shm->addr = NULL;
	return ret;
}

/* A memfd whose size is fixed for good: the only kind mapped from a peer. */
static int check_sealed(int fd, struct stat *st)
{
	int seals;

	if (fstat(fd, st))
		return errno;
	if (!S_ISREG(st->st_mode) || st->st_size <= 0)
		return EPROTO;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & SNIC_SEALS_SIZE) != SNIC_SEALS_SIZE)
		return EPROTO;
	return 0;
}

int snic_os_shm_map(struct snic_shm *shm, snic_handle fd, size_t min_len, bool writable)
{
	struct stat st;
	int ret;

	ret = check_sealed(fd, &st);
	if (ret)
		return ret;
	if ((uint64_t)st.st_size < min_len || !min_len)
		return EPROTO;
	shm->addr = mmap(NULL, min_len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
	if (shm->addr == MAP_FAILED) {
		shm->addr = NULL;
		return errno;
	}
	shm->fd = fd;
	shm->len = min_len;
	return 0;
}

void snic_os_shm_destroy(struct snic_shm *shm)
{
	if (shm->addr)
		munmap(shm->addr, shm->len);
	if (shm->fd >= 0)
		close(shm->fd);
	shm->addr = NULL;
	shm->fd = -1;
	shm->len = 0;
}

int snic_os_shm_id(snic_handle fd, uint64_t *id)
{
	struct stat st;

	if (fstat(fd, &st))
		return errno;
	*id = (uint64_t)st.st_ino;
	return 0;
}

int snic_os_event_create(snic_handle *h)
{
	*h = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return *h < 0 ? errno : 0;
}

void snic_os_event_signal(snic_handle h)
{
	(void)!write(h, &(uint64_t){ 1 }, sizeof(uint64_t));
}

int snic_os_event_drain(snic_handle h)
{
	uint64_t v;

	if (read(h, &v, sizeof(v)) != sizeof(v))
		return errno == EAGAIN ? EAGAIN : EIO;
	return 0;
}

int snic_os_shared_lock_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int ret;

	ret = pthread_mutexattr_init(&a);
	if (ret)
		return ret;
	ret = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!ret)
		ret = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!ret)
		ret = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return ret;
}

/*
 * A peer that dies holding a ring lock must not stop this process: the
 * robust mutex hands the lock over.  What the dead peer was writing is in
 * a slot it had not yet published, so the ring itself is consistent.  A
 * live peer that keeps the lock only costs the timeout.
 */
int snic_os_shared_lock(pthread_mutex_t *m)
{
	struct timespec ts;
	int ret;

	/*
	 * timedlock (the realtime clock) rather than clocklock: sanitizers know
	 * it, and a clock step only moves a one-second bound.
	 */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += SNIC_SHARED_LOCK_TIMEOUT_MS / 1000;
	ts.tv_nsec += (long)(SNIC_SHARED_LOCK_TIMEOUT_MS % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	ret = pthread_mutex_timedlock(m, &ts);
	if (ret == EOWNERDEAD)
		ret = pthread_mutex_consistent(m);
	return ret;
}

static bool populate_supported;
static pthread_once_t populate_once = PTHREAD_ONCE_INIT;

/* Kernels before 5.14 do not know MADV_POPULATE_*: they answer EINVAL. */
static void populate_probe(void)
{
	static alignas(4096) char page[4096];

	populate_supported = !madvise(page, sizeof(page), MADV_POPULATE_READ);
}

/*
 * A NIC pins the pages it registers: unmapped memory fails with EFAULT,
 * and so does a write registration of memory that cannot be written.
 * Populating the range does to the page tables what pinning does.
 */
int snic_os_check_memory(void *addr, size_t length, bool write)
{
	uintptr_t start = (uintptr_t)addr & ~(uintptr_t)4095;
	size_t span = (uintptr_t)addr + length - start;
	unsigned char v;

	pthread_once(&populate_once, populate_probe);
	if (populate_supported)
		return madvise((void *)start, span,
			       write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ)
			   ? EFAULT
			   : 0;
	/* Without populate, at least require every page to be mapped. */
	for (uintptr_t p = start; p < start + span; p += 4096)
		if (mincore((void *)p, 1, &v))
			return EFAULT;
	return 0;
}

/*
 * Cross-memory attach and pidfd_getfd() need the ptrace right on the peer
 * (PTRACE_MODE_ATTACH_REALCREDS).  Under Yama's restricted mode
 * (ptrace_scope 1) only ancestors have it, and a process can name exactly
 * one more tracer (and its descendants) with PR_SET_PTRACER.  So the
 * connected peer is named while it is connected, and a second peer process
 * is refused while the first one is: a connection that could not move
 * data would be worse.  SANPROV_SOFTNIC_PTRACER=any lets every process of
 * the user attach instead (several peer processes), =0 leaves it alone.
 * Scope 0 needs nothing; scopes 2 and 3 cannot be helped from here.
 */
enum ptracer_mode { PTRACER_OFF, PTRACER_PEER, PTRACER_ANY };

static pthread_mutex_t trust_lock = PTHREAD_MUTEX_INITIALIZER;
static int trust_scope = -1; /* -1: not read yet */
static pid_t trust_pid;
static unsigned int trust_refs;
static bool trust_any;

static int yama_scope(void)
{
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
	int scope = 0;

	if (!f)
		return 0; /* no Yama: the same user may attach */
	if (fscanf(f, "%d", &scope) != 1)
		scope = 0;
	fclose(f);
	return scope;
}

static enum ptracer_mode ptracer_mode(void)
{
	const char *s = getenv("SANPROV_SOFTNIC_PTRACER");

	if (!s || !*s || !strcmp(s, "1") || !strcmp(s, "peer"))
		return PTRACER_PEER;
	if (!strcmp(s, "0") || !strcmp(s, "off"))
		return PTRACER_OFF;
	if (!strcmp(s, "any"))
		return PTRACER_ANY;
	fprintf(stderr, "sanprov: ignoring SANPROV_SOFTNIC_PTRACER=%s (expected peer, any or 0)\n",
		s);
	return PTRACER_PEER;
}

/* Yama's exception belongs to the process that set it: a fork child has none. */
static void trust_forget(void)
{
	pthread_mutex_init(&trust_lock, NULL);
	trust_pid = 0;
	trust_refs = 0;
	trust_any = false;
}

static pthread_once_t trust_once = PTHREAD_ONCE_INIT;

static void trust_init(void)
{
	pthread_atfork(NULL, NULL, trust_forget);
}

int snic_os_peer_trust(pid_t pid)
{
	enum ptracer_mode mode = ptracer_mode();
	int ret = 0;

	pthread_once(&trust_once, trust_init);
	pthread_mutex_lock(&trust_lock);
	if (trust_scope < 0)
		trust_scope = yama_scope();
	if (trust_scope != 1 || mode == PTRACER_OFF)
		goto out;
	if (mode == PTRACER_ANY || trust_any) {
		if (!trust_any)
			prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
		trust_any = true;
		goto out;
	}
	if (trust_refs && trust_pid != pid) {
		fprintf(stderr,
			"sanprov softnic: refusing peer process %d: Yama ptrace_scope 1 lets "
			"only one peer process (%d) in at a time; SANPROV_SOFTNIC_PTRACER=any "
			"lets every process of the user attach\n",
			(int)pid, (int)trust_pid);
		ret = EBUSY;
		goto out;
	}
	if (!trust_refs++) {
		trust_pid = pid;
		prctl(PR_SET_PTRACER, (unsigned long)pid, 0, 0, 0);
	}
out:
	pthread_mutex_unlock(&trust_lock);
	return ret;
}

void snic_os_peer_untrust(pid_t pid)
{
	pthread_mutex_lock(&trust_lock);
	if (trust_refs && trust_pid == pid && !--trust_refs) {
		trust_pid = 0;
		if (!trust_any)
			prctl(PR_SET_PTRACER, 0, 0, 0, 0);
	}
	pthread_mutex_unlock(&trust_lock);
}

pid_t snic_os_peer_trusted(void)
{
	pid_t pid;

	pthread_mutex_lock(&trust_lock);
	pid = trust_any ? -1 : trust_refs ? trust_pid : 0;
	pthread_mutex_unlock(&trust_lock);
	return pid;
}

void snic_os_set_ptrace_scope(int scope)
{
	pthread_mutex_lock(&trust_lock);
	trust_scope = scope;
	pthread_mutex_unlock(&trust_lock);
}

int snic_os_random(void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = getrandom((char *)buf + done, len - done, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		done += (size_t)n;
	}
	return 0;
}

struct snic_os_watch {
	int epfd;
};

struct snic_os_watch *snic_os_watch_create(void)
{
	struct snic_os_watch *w = malloc(sizeof(*w));

	if (!w) {
		errno = ENOMEM;
		return NULL;
	}
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		int ret = errno;
		free(w);
		errno = ret;
		return NULL;
	}
	return w;
}

void snic_os_watch_destroy(struct snic_os_watch *w)
{
	if (!w)
		return;
	close(w->epfd);
	free(w);
}

int snic_os_watch_event(struct snic_os_watch *w, snic_handle event, uint32_t key)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = key };

	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, event, &ev) ? errno : 0;
}

/* The connection socket is never read after setup: readable means the peer is gone. */
int snic_os_watch_conn(struct snic_os_watch *w, snic_handle conn, uint32_t key)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = key };

	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, conn, &ev) ? errno : 0;
}

void snic_os_watch_remove(struct snic_os_watch *w, snic_handle h)
{
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, h, NULL);
}

snic_handle snic_os_watch_waitable(struct snic_os_watch *w, snic_handle fallback)
{
	(void)fallback; /* an epoll set is itself readable when a member is */
	return w->epfd;
}

int snic_os_watch_wait(struct snic_os_watch *w, uint32_t *keys, int max)
{
	struct epoll_event ev[32];
	int n = epoll_wait(w->epfd, ev, max < 32 ? max : 32, -1);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++)
		keys[i] = (uint32_t)ev[i].data.u64;
	return n;
}

int snic_os_peer_copy(const struct snic_peer *peer, bool to_peer, const struct snic_iov *l,
		      unsigned int nl, const struct snic_iov *r, unsigned int nr, size_t total)
{
	struct iovec li[SNIC_MAX_SGE], ri[SNIC_MAX_SGE];
	ssize_t n;

	if (nl > SNIC_MAX_SGE || nr > SNIC_MAX_SGE)
		return EINVAL;
	for (unsigned int i = 0; i < nl; i++)
		li[i] = (struct iovec){ l[i].base, l[i].len };
	for (unsigned int i = 0; i < nr; i++)
		ri[i] = (struct iovec){ r[i].base, r[i].len };
	/* Cross-memory attach: one copy, inside the kernel. */
	if (to_peer)
		n = process_vm_writev(peer->pid, li, nl, ri, nr, 0);
	else
		n = process_vm_readv(peer->pid, li, nl, ri, nr, 0);
	if (n < 0)
		return errno;
	/* A short count means a page in between was not there. */
	return (size_t)n == total ? 0 : EFAULT;
}

int snic_os_peer_map_segment(const struct snic_peer *peer, int32_t remote, uint64_t id, void **base,
			     size_t *len)
{
	struct stat st;
	void *p;
	int fd, ret;

	if (peer->pidfd < 0 || remote < 0)
		return EBADF;
	fd = pidfd_getfd(peer->pidfd, remote, 0);
	if (fd < 0)
		return errno;
	/*
	 * The number may have been reused for another file since the MR was
	 * made; and a segment the peer could still shrink would fault here.
	 */
	if (check_sealed(fd, &st) || (uint64_t)st.st_ino != id) {
		close(fd);
		return ESTALE;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ret = p == MAP_FAILED ? errno : 0;
	close(fd);
	if (ret)
		return ret;
	*base = p;
	*len = (size_t)st.st_size;
	return 0;
}

void snic_os_unmap(void *base, size_t len)
{
	munmap(base, len);
}

/* Connections: Unix seqpacket sockets in the abstract namespace, private to
 * the network namespace; handles go with SCM_RIGHTS. */

static socklen_t unix_name(struct sockaddr_un *un, uint16_t port)
{
	int n;

	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "sanprov-softnic:%u", port);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int snic_os_listen(uint16_t *port, int backlog, snic_handle *lst)
{
	struct sockaddr_un un;
	int fd, ret;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errno;
	if (*port) {
		ret = bind(fd, (struct sockaddr *)&un, unix_name(&un, *port)) ? errno : 0;
	} else {
		/* Port 0: the first free one of the dynamic range, from a random start. */
		unsigned int span = 65536 - 49152, start = (unsigned int)(getpid() ^ time(NULL));
		ret = EADDRINUSE;
		for (unsigned int i = 0; i < span && ret == EADDRINUSE; i++) {
			*port = (uint16_t)(49152 + (start + i) % span);
			ret = bind(fd, (struct sockaddr *)&un, unix_name(&un, *port)) ? errno : 0;
		}
	}
	if (!ret && listen(fd, backlog > 0 ? backlog : 128))
		ret = errno;
	if (ret) {
		close(fd);
		return ret;
	}
	*lst = fd;
	return 0;
}

int snic_os_listen_share(uint16_t port, snic_handle h, snic_handle *lst)
{
	struct sockaddr_un want, un;
	socklen_t wlen = unix_name(&want, port), len = sizeof(un), olen;
	int v = 0, fd;

	/* Whatever h is, it must be our listening socket of that name. */
	olen = sizeof(v);
	if (h < 0 || getsockopt(h, SOL_SOCKET, SO_TYPE, &v, &olen) || v != SOCK_SEQPACKET)
		return EINVAL;
	olen = sizeof(v);
	if (getsockopt(h, SOL_SOCKET, SO_ACCEPTCONN, &v, &olen) || !v)
		return EINVAL;
	if (getsockname(h, (struct sockaddr *)&un, &len) || len != wlen || memcmp(&un, &want, wlen))
		return EINVAL;
	fd = fcntl(h, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	*lst = fd;
	return 0;
}

int snic_os_accept(snic_handle lst, snic_handle *conn)
{
	int fd = accept4(lst, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return errno == EWOULDBLOCK ? EAGAIN : errno;
	*conn = fd;
	return 0;
}

int snic_os_connect(uint16_t port, snic_handle *conn)
{
	struct sockaddr_un un;
	socklen_t len = unix_name(&un, port);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), ret;

	if (fd < 0)
		return errno;
	/* The answer's sender: another process than the listener's, after a fork. */
	setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &(int){ 1 }, sizeof(int));
	if (connect(fd, (struct sockaddr *)&un, len)) {
		ret = errno == ENOENT ? ECONNREFUSED : errno;
		close(fd);
		return ret;
	}
	/* Anyone may bind the name: check who did before sending anything. */
	ret = snic_os_conn_check(fd);
	if (ret) {
		close(fd);
		return ret;
	}
	*conn = fd;
	return 0;
}

int snic_os_conn_check(snic_handle conn)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		return errno;
	if (cred.uid == geteuid() || snic_env_ulong("SANPROV_SOFTNIC_ANY_USER", 0, 0, 1))
		return 0;
	return EACCES;
}

int snic_os_wait_any(const snic_handle *h, int n, int timeout_ms)
{
	struct pollfd p[64];
	int r;

	if (n < 1 || n > 64)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		p[i] = (struct pollfd){ .fd = h[i], .events = POLLIN | POLLRDHUP };
	do
		r = poll(p, (nfds_t)n, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	for (int i = 0; i < n; i++)
		if (p[i].revents)
			return i;
	return -ETIMEDOUT;
}

int snic_os_send(snic_handle conn, const void *msg, size_t len, const snic_handle *h, int nh)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SNIC_OS_MAX_HANDLES)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)msg, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nh < 0 || nh > SNIC_OS_MAX_HANDLES)
		return EINVAL;
	if (nh) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nh);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nh);
		memcpy(CMSG_DATA(c), h, sizeof(int) * (size_t)nh);
	}
	if (sendmsg(conn, &mh, MSG_NOSIGNAL) != (ssize_t)len)
		return errno ? errno : EIO;
	return 0;
}

int snic_os_recv(snic_handle conn, void *msg, size_t len, snic_handle *h, int *nh, int max,
		 int timeout_ms)
{
	return snic_os_recv_from(conn, msg, len, h, nh, max, timeout_ms, NULL);
}

int snic_os_recv_from(snic_handle conn, void *msg, size_t len, snic_handle *h, int *nh, int max,
		      int timeout_ms, pid_t *sender)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SNIC_OS_MAX_HANDLES) +
			 CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { msg, len };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;
	ssize_t n;
	int ret;

	*nh = 0;
	ret = vb_os_wait(conn, timeout_ms);
	if (ret < 0)
		return -ret;
	if (!ret)
		return ETIMEDOUT;
	ret = 0;
	n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno;
	if (sender)
		*sender = 0;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && sender &&
		    c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
			struct ucred cr;

			memcpy(&cr, CMSG_DATA(c), sizeof(cr));
			*sender = cr.pid;
		}
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (size_t)i, sizeof(fd));
			if (*nh < max)
				h[(*nh)++] = fd;
			else
				close(fd);
		}
	}
	if (n == 0)
		ret = ECONNRESET;
	else if (n != (ssize_t)len || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		ret = EPROTO;
	if (ret)
		while (*nh)
			close(h[--*nh]);
	return ret;
}

bool snic_os_same_object(snic_handle a, snic_handle b)
{
	pid_t me = getpid();

	return a >= 0 && b >= 0 && syscall(SYS_kcmp, me, me, KCMP_FILE, a, b) == 0;
}

bool snic_os_process_alive(snic_handle proc)
{
	struct pollfd p = { .fd = proc, .events = POLLIN };

	/* A pidfd turns readable when its process exits. */
	return proc >= 0 && poll(&p, 1, 0) == 0;
}

int snic_os_peer_open(pid_t pid, bool *self, snic_handle *proc)
{
	*self = pid == getpid();
	*proc = -1;
	if (*self)
		return 0;
	*proc = pidfd_open(pid, 0);
	return *proc < 0 ? errno : 0;
}

int snic_os_conn_peer(snic_handle conn, pid_t *pid, bool *self, snic_handle *proc)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	int fd = -1;

	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		return errno;
	if (cred.uid != geteuid() && !snic_env_ulong("SANPROV_SOFTNIC_ANY_USER", 0, 0, 1))
		return EACCES;
	*pid = cred.pid;
	*self = cred.pid == getpid();
	if (!*self) {
		/* The socket's own reference (Linux 6.5) cannot name a recycled pid. */
		len = sizeof(fd);
		if (getsockopt(conn, SOL_SOCKET, SO_PEERPIDFD, &fd, &len))
			fd = pidfd_open(cred.pid, 0);
	}
	*proc = fd;
	return 0;
}
