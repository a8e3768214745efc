/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * softnic on Windows, for peers in the same process: segments are
 * pagefile-backed sections, events are auto-reset events, connections
 * are in-process channels registered by port, and handles travel as
 * duplicates (what SCM_RIGHTS does on Linux).  A peer in another process
 * is not reached yet: connect and accept work in one process only, which
 * is what the Windows tests need.
 *
 * A listener's handle is an event set while connections wait; a
 * connection's handle is an event set once the other end has closed, so
 * both are waitable objects as vb_os.h promises.  The objects behind them
 * are found in a small table.
 */
#define _CRT_RAND_S /* rand_s() */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../snic.h"

#define CHAN_INBOX 4
#define CHAN_MSG_MAX 256

static bool close_object(HANDLE h);

/* Listeners and channel ends are objects of the table below; the rest are plain handles. */
void snic_os_close(snic_handle h)
{
	if (h && !close_object(h))
		CloseHandle(h);
}

/* Segments ------------------------------------------------------------------ */

/*
 * A pagefile-backed section keeps the size it was created with (only
 * SEC_RESERVE sections grow, and none shrinks): no seal is needed.  Peers
 * are in this process, so a read-only view is all peer_readonly can give.
 */
int snic_os_shm_create(struct snic_shm *shm, const char *name, size_t len, bool peer_readonly)
{
	(void)name, (void)peer_readonly;
	shm->fd = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE,
				     (DWORD)((uint64_t)len >> 32), (DWORD)len, NULL);
	if (!shm->fd)
		return ENOMEM;
	shm->addr = MapViewOfFile(shm->fd, FILE_MAP_ALL_ACCESS, 0, 0, len);
	if (!shm->addr) {
		CloseHandle(shm->fd);
		shm->fd = NULL;
		return ENOMEM;
	}
	shm->len = len;
	return 0;
}

int snic_os_shm_map(struct snic_shm *shm, snic_handle h, size_t min_len, bool writable)
{
	if (!min_len)
		return EPROTO;
	/* A view larger than the section fails: that is the size check. */
	shm->addr = MapViewOfFile(h, writable ? FILE_MAP_ALL_ACCESS : FILE_MAP_READ, 0, 0, min_len);
	if (!shm->addr)
		return EPROTO;
	shm->fd = h;
	shm->len = min_len;
	return 0;
}

void snic_os_shm_destroy(struct snic_shm *shm)
{
	if (shm->addr)
		UnmapViewOfFile(shm->addr);
	if (shm->fd)
		CloseHandle(shm->fd);
	shm->addr = NULL;
	shm->fd = NULL;
	shm->len = 0;
}

int snic_os_shm_id(snic_handle h, uint64_t *id)
{
	/* Only peers in another process import segments, and they are not reached here. */
	*id = (uint64_t)(uintptr_t)h;
	return 0;
}

void snic_os_unmap(void *base, size_t len)
{
	(void)len;
	UnmapViewOfFile(base);
}

/* Events ------------------------------------------------------------------------ */

int snic_os_event_create(snic_handle *h)
{
	/* Auto-reset: a wait that sees it signalled also drains it, atomically. */
	*h = CreateEventW(NULL, FALSE, FALSE, NULL);
	return *h ? 0 : ENOMEM;
}

void snic_os_event_signal(snic_handle h)
{
	SetEvent(h);
}

int snic_os_event_drain(snic_handle h)
{
	return WaitForSingleObject(h, 0) == WAIT_OBJECT_0 ? 0 : EAGAIN;
}

/* Peers are in this process: an ordinary mutex is shared by both views. */
int snic_os_shared_lock_init(pthread_mutex_t *m)
{
	return pthread_mutex_init(m, NULL);
}

int snic_os_shared_lock(pthread_mutex_t *m)
{
	return pthread_mutex_lock(m);
}

int snic_os_check_memory(void *addr, size_t length, bool write)
{
	uintptr_t p = (uintptr_t)addr, end = p + length;

	while (p < end) {
		MEMORY_BASIC_INFORMATION mi;
		DWORD prot;

		if (!VirtualQuery((void *)p, &mi, sizeof(mi)) || mi.State != MEM_COMMIT)
			return EFAULT;
		prot = mi.Protect & 0xff;
		if (mi.Protect & PAGE_GUARD || prot == PAGE_NOACCESS || prot == PAGE_EXECUTE)
			return EFAULT;
		if (write && prot != PAGE_READWRITE && prot != PAGE_WRITECOPY &&
		    prot != PAGE_EXECUTE_READWRITE && prot != PAGE_EXECUTE_WRITECOPY)
			return EFAULT;
		p = (uintptr_t)mi.BaseAddress + mi.RegionSize;
	}
	return 0;
}

/* Peers are in this process: there is nobody else to let in. */
int snic_os_peer_trust(pid_t pid)
{
	(void)pid;
	return 0;
}

void snic_os_peer_untrust(pid_t pid)
{
	(void)pid;
}

pid_t snic_os_peer_trusted(void)
{
	return 0;
}

void snic_os_set_ptrace_scope(int scope)
{
	(void)scope;
}

int snic_os_random(void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		unsigned int v;
		size_t n = len - done < sizeof(v) ? len - done : sizeof(v);

		if (rand_s(&v))
			return EIO;
		memcpy((char *)buf + done, &v, n);
		done += n;
	}
	return 0;
}

/* The progress thread's wait set ----------------------------------------------------- */

struct snic_os_watch {
	pthread_mutex_t lock;
	HANDLE changed; /* wakes the waiter to take the new set */
	HANDLE h[MAXIMUM_WAIT_OBJECTS - 1];
	uint32_t key[MAXIMUM_WAIT_OBJECTS - 1];
	int n;
};

struct snic_os_watch *snic_os_watch_create(void)
{
	struct snic_os_watch *w = calloc(1, sizeof(*w));

	if (!w) {
		errno = ENOMEM;
		return NULL;
	}
	w->changed = CreateEventW(NULL, FALSE, FALSE, NULL);
	if (!w->changed || pthread_mutex_init(&w->lock, NULL)) {
		if (w->changed)
			CloseHandle(w->changed);
		free(w);
		errno = ENOMEM;
		return NULL;
	}
	return w;
}

void snic_os_watch_destroy(struct snic_os_watch *w)
{
	if (!w)
		return;
	CloseHandle(w->changed);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

static int watch_add(struct snic_os_watch *w, snic_handle h, uint32_t key)
{
	int ret = 0;

	pthread_mutex_lock(&w->lock);
	if (w->n == (int)(sizeof(w->h) / sizeof(w->h[0]))) {
		ret = ENOSPC; /* WaitForMultipleObjects' limit */
	} else {
		w->h[w->n] = h;
		w->key[w->n++] = key;
	}
	pthread_mutex_unlock(&w->lock);
	SetEvent(w->changed);
	return ret;
}

int snic_os_watch_event(struct snic_os_watch *w, snic_handle event, uint32_t key)
{
	return watch_add(w, event, key);
}

snic_handle snic_os_watch_waitable(struct snic_os_watch *w, snic_handle fallback)
{
	/* No handle waits for a set here: the listener's own (peers are in this process). */
	(void)w;
	return fallback;
}

int snic_os_watch_wait(struct snic_os_watch *w, uint32_t *keys, int max)
{
	HANDLE h[MAXIMUM_WAIT_OBJECTS];
	uint32_t key[MAXIMUM_WAIT_OBJECTS];
	DWORD r;
	int n;

	if (max < 1)
		return -EINVAL;
	pthread_mutex_lock(&w->lock);
	h[0] = w->changed;
	for (n = 0; n < w->n; n++) {
		h[n + 1] = w->h[n];
		key[n + 1] = w->key[n];
	}
	pthread_mutex_unlock(&w->lock);
	r = WaitForMultipleObjects((DWORD)n + 1, h, FALSE, INFINITE);
	if (r == WAIT_OBJECT_0)
		return 0; /* the set changed: the caller waits again */
	if (r > WAIT_OBJECT_0 && r <= WAIT_OBJECT_0 + (DWORD)n) {
		keys[0] = key[r - WAIT_OBJECT_0];
		return 1;
	}
	return -EIO;
}

/* Connections: in-process channels ------------------------------------------------------ */

struct chan_msg {
	size_t len;
	unsigned char data[CHAN_MSG_MAX];
	HANDLE h[SNIC_OS_MAX_HANDLES];
	int nh;
};

/* One channel, two ends; each end has an inbox and knows when the other closed. */
struct chan {
	int open_ends;
	struct chan_msg inbox[2][CHAN_INBOX];
	int count[2];
	HANDLE arrived[2]; /* manual-reset: end i's inbox is not empty */
	HANDLE gone[2];	   /* manual-reset: end i's peer has closed (end i's handle) */
	bool closed[2];
};

struct listener {
	uint16_t port;
	HANDLE pending; /* manual-reset: connections wait (the listener's handle) */
	struct chan *queue[128];
	int n;
	int backlog;
};

/* What a handle stands for: a listener, or one end of a channel. */
struct object {
	HANDLE h;
	struct listener *lst;
	struct chan *chan;
	int end;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct object *objects;
static int n_objects, cap_objects;

/* reg_lock held. */
static struct object *find(HANDLE h)
{
	for (int i = 0; i < n_objects; i++)
		if (objects[i].h == h)
			return &objects[i];
	return NULL;
}

/*
 * A connection wakes its watcher when its peer closes (the handle) and
 * when a message arrives (its inbox's event: a peer's ring), both with key.
 */
int snic_os_watch_conn(struct snic_os_watch *w, snic_handle conn, uint32_t key)
{
	HANDLE arrived = NULL;
	struct object *o;
	int ret;

	pthread_mutex_lock(&reg_lock);
	o = find(conn);
	if (o && o->chan)
		arrived = o->chan->arrived[o->end];
	pthread_mutex_unlock(&reg_lock);
	ret = watch_add(w, conn, key);
	if (!ret && arrived && (ret = watch_add(w, arrived, key)))
		snic_os_watch_remove(w, conn);
	return ret;
}

/* h, and what was watched with its key (a connection's inbox event). */
void snic_os_watch_remove(struct snic_os_watch *w, snic_handle h)
{
	pthread_mutex_lock(&w->lock);
	for (int i = 0; i < w->n; i++) {
		if (w->h[i] == h) {
			uint32_t key = w->key[i];

			for (int k = w->n - 1; k >= 0; k--) {
				if (w->h[k] == h || (w->key[k] == key && key)) {
					w->h[k] = w->h[w->n - 1];
					w->key[k] = w->key[--w->n];
				}
			}
			break;
		}
	}
	pthread_mutex_unlock(&w->lock);
	SetEvent(w->changed);
}

static struct listener *find_port(uint16_t port)
{
	for (int i = 0; i < n_objects; i++)
		if (objects[i].lst && objects[i].lst->port == port)
			return objects[i].lst;
	return NULL;
}

static int add_object(struct object o)
{
	if (n_objects == cap_objects) {
		int cap = cap_objects ? 2 * cap_objects : 32;
		struct object *p = realloc(objects, (size_t)cap * sizeof(*p));
		if (!p)
			return ENOMEM;
		objects = p;
		cap_objects = cap;
	}
	objects[n_objects++] = o;
	return 0;
}

static void remove_object(struct object *o)
{
	*o = objects[--n_objects];
}

static void chan_free(struct chan *c)
{
	for (int e = 0; e < 2; e++) {
		for (int i = 0; i < c->count[e]; i++)
			for (int k = 0; k < c->inbox[e][i].nh; k++)
				CloseHandle(c->inbox[e][i].h[k]);
		CloseHandle(c->arrived[e]);
		CloseHandle(c->gone[e]);
	}
	free(c);
}

static struct chan *chan_new(void)
{
	struct chan *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->open_ends = 2;
	for (int e = 0; e < 2; e++) {
		c->arrived[e] = CreateEventW(NULL, TRUE, FALSE, NULL);
		c->gone[e] = CreateEventW(NULL, TRUE, FALSE, NULL);
		if (!c->arrived[e] || !c->gone[e]) {
			for (int k = 0; k <= e; k++) {
				if (c->arrived[k])
					CloseHandle(c->arrived[k]);
				if (c->gone[k])
					CloseHandle(c->gone[k]);
			}
			free(c);
			return NULL;
		}
	}
	return c;
}

/* Close one end (reg_lock held): the other end learns it. */
static void chan_close_end(struct chan *c, int end)
{
	c->closed[end] = true;
	SetEvent(c->gone[!end]);
	if (!--c->open_ends)
		chan_free(c);
}

/* Register end `end` of c; its handle is gone[end]. */
static int chan_publish(struct chan *c, int end)
{
	return add_object((struct object){ .h = c->gone[end], .chan = c, .end = end });
}

int snic_os_listen(uint16_t *port, int backlog, snic_handle *lst)
{
	struct listener *l = calloc(1, sizeof(*l));
	int ret = 0;

	if (!l)
		return ENOMEM;
	l->pending = CreateEventW(NULL, TRUE, FALSE, NULL);
	if (!l->pending) {
		free(l);
		return ENOMEM;
	}
	l->backlog = backlog > 0 && backlog < 128 ? backlog : 128;
	pthread_mutex_lock(&reg_lock);
	if (*port) {
		ret = find_port(*port) ? EADDRINUSE : 0;
	} else {
		ret = EADDRINUSE;
		for (unsigned int p = 49152; p < 65536 && ret; p++)
			if (!find_port((uint16_t)p)) {
				*port = (uint16_t)p;
				ret = 0;
			}
	}
	l->port = *port;
	if (!ret)
		ret = add_object((struct object){ .h = l->pending, .lst = l });
	pthread_mutex_unlock(&reg_lock);
	if (ret) {
		CloseHandle(l->pending);
		free(l);
		return ret;
	}
	*lst = l->pending;
	return 0;
}

/* A listener lives in one process's registry here: nothing to share. */
int snic_os_listen_share(uint16_t port, snic_handle h, snic_handle *lst)
{
	(void)port, (void)h, (void)lst;
	return EOPNOTSUPP;
}

int snic_os_accept(snic_handle lst, snic_handle *conn)
{
	struct object *o;
	struct chan *c;
	int ret;

	pthread_mutex_lock(&reg_lock);
	o = find(lst);
	if (!o || !o->lst) {
		ret = EBADF;
	} else if (!o->lst->n) {
		ret = EAGAIN;
	} else {
		struct listener *l = o->lst;
		c = l->queue[0];
		memmove(l->queue, l->queue + 1, (size_t)--l->n * sizeof(l->queue[0]));
		if (!l->n)
			ResetEvent(l->pending);
		ret = chan_publish(c, 1);
		if (ret)
			chan_close_end(c, 1);
		else
			*conn = c->gone[1];
	}
	pthread_mutex_unlock(&reg_lock);
	return ret;
}

int snic_os_connect(uint16_t port, snic_handle *conn)
{
	struct listener *l;
	struct chan *c;
	int ret = 0;

	pthread_mutex_lock(&reg_lock);
	l = find_port(port);
	if (!l) {
		ret = ECONNREFUSED;
	} else if (l->n >= l->backlog) {
		ret = ECONNREFUSED;
	} else if (!(c = chan_new())) {
		ret = ENOMEM;
	} else if ((ret = chan_publish(c, 0))) {
		chan_free(c);
	} else {
		l->queue[l->n++] = c;
		SetEvent(l->pending);
		*conn = c->gone[0];
	}
	pthread_mutex_unlock(&reg_lock);
	return ret;
}

int snic_os_send(snic_handle conn, const void *msg, size_t len, const snic_handle *h, int nh)
{
	struct object *o;
	struct chan_msg *m;
	int ret = 0, peer;

	if (len > CHAN_MSG_MAX || nh < 0 || nh > SNIC_OS_MAX_HANDLES)
		return EINVAL;
	pthread_mutex_lock(&reg_lock);
	o = find(conn);
	if (!o || !o->chan) {
		ret = EBADF;
		goto out;
	}
	peer = !o->end;
	if (o->chan->closed[peer]) {
		ret = EPIPE;
		goto out;
	}
	if (o->chan->count[peer] == CHAN_INBOX) {
		ret = EAGAIN;
		goto out;
	}
	m = &o->chan->inbox[peer][o->chan->count[peer]];
	memcpy(m->data, msg, len);
	m->len = len;
	m->nh = 0;
	/* The receiver gets handles of its own, as SCM_RIGHTS gives. */
	for (int i = 0; i < nh; i++) {
		if (!DuplicateHandle(GetCurrentProcess(), h[i], GetCurrentProcess(), &m->h[i], 0,
				     FALSE, DUPLICATE_SAME_ACCESS)) {
			while (i--)
				CloseHandle(m->h[i]);
			ret = EBADF;
			goto out;
		}
		m->nh++;
	}
	o->chan->count[peer]++;
	SetEvent(o->chan->arrived[peer]);
out:
	pthread_mutex_unlock(&reg_lock);
	return ret;
}

int snic_os_recv(snic_handle conn, void *msg, size_t len, snic_handle *h, int *nh, int max,
		 int timeout_ms)
{
	struct object *o;
	struct chan *c;
	struct chan_msg m;
	HANDLE wait[2];
	int end, ret = 0;
	DWORD r;

	*nh = 0;
	pthread_mutex_lock(&reg_lock);
	o = find(conn);
	if (!o || !o->chan) {
		pthread_mutex_unlock(&reg_lock);
		return EBADF;
	}
	c = o->chan;
	end = o->end;
	wait[0] = c->arrived[end];
	wait[1] = c->gone[end];
	pthread_mutex_unlock(&reg_lock);

	/* The channel lives while this end is open: the caller holds it. */
	r = WaitForMultipleObjects(2, wait, FALSE, timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
	if (r == WAIT_TIMEOUT)
		return ETIMEDOUT;
	pthread_mutex_lock(&reg_lock);
	if (!c->count[end]) {
		pthread_mutex_unlock(&reg_lock);
		return ECONNRESET; /* woken by the other end's close */
	}
	m = c->inbox[end][0];
	memmove(&c->inbox[end][0], &c->inbox[end][1],
		(size_t)--c->count[end] * sizeof(c->inbox[end][0]));
	if (!c->count[end])
		ResetEvent(c->arrived[end]);
	pthread_mutex_unlock(&reg_lock);

	if (m.len != len) {
		ret = EPROTO;
	} else {
		memcpy(msg, m.data, len);
	}
	for (int i = 0; i < m.nh; i++) {
		if (!ret && *nh < max)
			h[(*nh)++] = m.h[i];
		else
			CloseHandle(m.h[i]);
	}
	return ret;
}

/* Both ends are in this process, so of the same user. */
int snic_os_conn_check(snic_handle conn)
{
	(void)conn;
	return 0;
}

int snic_os_wait_any(const snic_handle *h, int n, int timeout_ms)
{
	HANDLE w[MAXIMUM_WAIT_OBJECTS];
	int idx[MAXIMUM_WAIT_OBJECTS], nw = 0;
	DWORD r;

	if (n < 1 || 2 * n > MAXIMUM_WAIT_OBJECTS)
		return -EINVAL;
	/* A listener is ready when its event is; a channel end when a message came or the other end
	 * left. */
	pthread_mutex_lock(&reg_lock);
	for (int i = 0; i < n; i++) {
		struct object *o = find(h[i]);

		if (!o) {
			pthread_mutex_unlock(&reg_lock);
			return -EBADF;
		}
		if (o->chan) {
			idx[nw] = i;
			w[nw++] = o->chan->arrived[o->end];
		}
		idx[nw] = i;
		w[nw++] = h[i];
	}
	pthread_mutex_unlock(&reg_lock);
	r = WaitForMultipleObjects((DWORD)nw, w, FALSE,
				   timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
	if (r == WAIT_TIMEOUT)
		return -ETIMEDOUT;
	if (r >= WAIT_OBJECT_0 + (DWORD)nw)
		return -EIO;
	return idx[r - WAIT_OBJECT_0];
}

/* CompareObjectHandles is Windows 10's (kernelbase); older systems compare the values only. */
typedef BOOL(WINAPI *compare_handles_fn)(HANDLE, HANDLE);

static compare_handles_fn compare_handles(void)
{
	static compare_handles_fn fn;
	static bool looked;

	if (!looked) {
		HMODULE m = GetModuleHandleW(L"kernelbase.dll");
		FARPROC p = m ? GetProcAddress(m, "CompareObjectHandles") : NULL;

		memcpy(&fn, &p, sizeof(fn));
		looked = true;
	}
	return fn;
}

bool snic_os_same_object(snic_handle a, snic_handle b)
{
	compare_handles_fn fn;

	if (!a || !b)
		return false;
	if (a == b)
		return true;
	fn = compare_handles();
	return fn && fn(a, b);
}

bool snic_os_process_alive(snic_handle proc)
{
	return proc && WaitForSingleObject(proc, 0) == WAIT_TIMEOUT;
}

int snic_os_recv_from(snic_handle conn, void *msg, size_t len, snic_handle *h, int *nh, int max,
		      int timeout_ms, pid_t *sender)
{
	/* A listener is one process's here: the answer comes from it. */
	if (sender)
		*sender = 0;
	return snic_os_recv(conn, msg, len, h, nh, max, timeout_ms);
}

int snic_os_peer_open(pid_t pid, bool *self, snic_handle *proc)
{
	(void)pid, (void)self, (void)proc;
	return EOPNOTSUPP;
}

int snic_os_conn_peer(snic_handle conn, pid_t *pid, bool *self, snic_handle *proc)
{
	(void)conn;
	*pid = (pid_t)GetCurrentProcessId();
	*self = true;
	*proc = NULL;
	return 0;
}

/*
 * Close a listener or a channel end: out of the table, and the other end
 * told.  false when h is not one of them.
 */
static bool close_object(HANDLE h)
{
	struct object *o;

	pthread_mutex_lock(&reg_lock);
	o = find(h);
	if (!o) {
		pthread_mutex_unlock(&reg_lock);
		return false;
	}
	if (o->lst) {
		struct listener *l = o->lst;
		for (int i = 0; i < l->n; i++)
			chan_close_end(l->queue[i], 1); /* never accepted */
		remove_object(o);
		CloseHandle(l->pending);
		free(l);
	} else {
		struct chan *c = o->chan;
		int end = o->end;
		remove_object(o);
		chan_close_end(c, end); /* closes the handle with the channel */
	}
	pthread_mutex_unlock(&reg_lock);
	return true;
}

int snic_os_peer_copy(const struct snic_peer *peer, bool to_peer, const struct snic_iov *l,
		      unsigned int nl, const struct snic_iov *r, unsigned int nr, size_t total)
{
	(void)peer, (void)to_peer, (void)l, (void)nl, (void)r, (void)nr, (void)total;
	return ESRCH; /* peers in other processes are not reached on Windows yet */
}

int snic_os_peer_map_segment(const struct snic_peer *peer, int32_t remote, uint64_t id, void **base,
			     size_t *len)
{
	(void)peer, (void)remote, (void)id, (void)base, (void)len;
	return ENOSYS;
}
