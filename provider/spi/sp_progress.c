/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Completions of every connection's QP, from one CQ.
 *
 * Polling and delivering are apart.  Whoever polls (the progress thread,
 * a WSPGetOverlappedResult caller, a closing socket) holds cq_lock only
 * while it moves what it polled into each socket's FIFO, in the order
 * polled: a QP completes each of its queues in the order posted, so a
 * socket's FIFO is in posted order too.  No up-call runs under cq_lock.
 *
 * One thread at a time delivers a socket's FIFO, oldest first (the
 * socket's delivering flag); an up-call may re-enter the provider, and
 * the same thread may then deliver more of the same socket.  The progress
 * thread delivers everything; a polling caller (WSPGetOverlappedResult)
 * delivers only operations that need no up-call (bit 0 of the event) at
 * the head of its socket's FIFO, and leaves the rest, in order, to the
 * progress thread; a closing socket delivers its whole FIFO before it
 * aborts what never completed.  Up-calls stay on one thread: an up-call
 * may wait (GetOverlappedResult) for a later completion of its own socket
 * or of another one, which only a thread that can nest deliveries of every
 * socket brings; two pollers, each inside an up-call of its socket and
 * waiting on the other's, would wait for ever.
 *
 * While application threads poll, the progress thread keeps off the CQ:
 * two spinning threads per process would share the cores with the ones
 * that move the data.  It sleeps until the polling stops (or a poller
 * hands it other sockets' completions), then polls, spins and sleeps on
 * the CQ as before.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sp_internal.h"
#include "sp_os.h"

#define SP_PROGRESS_BATCH 32
#define SP_PROGRESS_TICK_MS 100 /* how soon the thread sees stop */
/* An application thread that polled this recently is still polling (a wait's poll gap). */
#define SP_PROGRESS_APP_POLL_NS 20000u

/* Up-calls the calling thread is inside of (sp_op_complete counts them). */
static VB_THREAD_LOCAL unsigned int upcall_depth;

bool sp_progress_in_upcall(void)
{
	return upcall_depth > 0;
}

void sp_progress_upcall_enter(void)
{
	upcall_depth++;
}

void sp_progress_upcall_leave(void)
{
	upcall_depth--;
}

bool sp_progress_is_self(void)
{
	return sp_prov.progress_running && pthread_equal(pthread_self(), sp_prov.progress);
}

/* Put so on the ready list for the progress thread (once); true when it was added. */
static bool make_ready(struct sp_sock *so)
{
	bool added = false;

	pthread_mutex_lock(&sp_prov.ready_lock);
	if (!so->ready) {
		so->ready = true;
		so->ready_next = NULL;
		sp_sock_hold(so);
		if (sp_prov.ready_tail)
			sp_prov.ready_tail->ready_next = so;
		else
			sp_prov.ready_head = so;
		sp_prov.ready_tail = so;
		added = true;
	}
	pthread_mutex_unlock(&sp_prov.ready_lock);
	return added;
}

static struct sp_sock *take_ready(void)
{
	struct sp_sock *so;

	pthread_mutex_lock(&sp_prov.ready_lock);
	so = sp_prov.ready_head;
	if (so) {
		sp_prov.ready_head = so->ready_next;
		if (!sp_prov.ready_head)
			sp_prov.ready_tail = NULL;
		so->ready = false;
	}
	pthread_mutex_unlock(&sp_prov.ready_lock);
	return so;
}

/* Wake the progress thread for the ready list, unless it is the caller. */
static void kick(void)
{
	if (!sp_progress_is_self())
		sp_os_wake(sp_prov.wake);
}

/*
 * One work completion into its socket's FIFO (cq_lock held).  The socket
 * goes on the ready list, unless it is mine: the caller delivers mine next
 * (and puts back on the list whatever it leaves).  True when another
 * socket was put on the list.
 */
static bool handle_wc(const struct vb_wc *wc, struct sp_sock *mine)
{
	struct sp_sock *so = sp_op_wc_sock(wc->wr_id);
	struct sp_op *op;
	uint32_t bytes;
	bool ready;
	int err = 0;

	if (!so)
		return false; /* its socket closed: the QP's completions were delivered */
	pthread_mutex_lock(&so->lock);
	op = sp_op_take(so, wc->wr_id);
	if (!op) {
		/* The socket closes and aborted it already. */
		pthread_mutex_unlock(&so->lock);
		sp_sock_put(so);
		return false;
	}
	bytes = op->kind == SP_OP_RECV ? wc->byte_len : op->bytes;
	if (wc->status != VB_WC_SUCCESS) {
		err = sp_wsa_wc_error(wc->status, so->state == SP_SOCK_CLOSED);
		bytes = 0;
		/* Any failed WR leaves the QP in the error state: the connection is gone. */
		sp_sock_broken(so,
			       err == SP_WSAEMSGSIZE || err == SP_WSAEFAULT || err == SP_WSAEACCES
				   ? SP_WSAECONNABORTED
				   : err);
	}
	op->done_error = err;
	op->done_bytes = bytes;
	op->done_next = NULL;
	if (so->done_tail)
		so->done_tail->done_next = op;
	else
		so->done_head = op;
	so->done_tail = op;
	pthread_mutex_unlock(&so->lock);
	ready = so != mine && make_ready(so);
	sp_sock_put(so);
	return ready;
}

/*
 * Poll one batch into the FIFOs (cq_lock held): how many, or -errno;
 * *others tells whether a socket other than mine went on the ready list.
 */
static int poll_batch(struct sp_sock *mine, bool *others)
{
	struct vb_wc wc[SP_PROGRESS_BATCH];
	int n = 0, ret;

	ret = vb_poll_cq(sp_prov.cq, SP_PROGRESS_BATCH, wc, &n);
	if (ret)
		return -ret;
	for (int i = 0; i < n; i++)
		*others |= handle_wc(&wc[i], mine);
	return n;
}

/*
 * Deliver so's FIFO, oldest first, while its head may be delivered here;
 * one deliverer at a time, the same thread again from an up-call.  What is
 * left (an up-call this thread may not make, or another thread delivering)
 * goes back on the ready list.  True when another thread delivers so and
 * its FIFO is not empty.
 */
static bool deliver(struct sp_sock *so, bool may_upcall)
{
	bool mine = false;
	struct sp_op *op;

	pthread_mutex_lock(&so->lock);
	if (so->delivering && !pthread_equal(so->deliverer, pthread_self())) {
		/* Its deliverer looks at the FIFO again when it lets go. */
		op = so->done_head;
		pthread_mutex_unlock(&so->lock);
		return op != NULL;
	}
	if (!so->delivering) {
		so->delivering = true;
		so->deliverer = pthread_self();
		mine = true;
	} else {
		may_upcall = true; /* re-entered from its own up-call: the same thread goes on */
	}
	while ((op = so->done_head) && (may_upcall || SP_OV_NO_UPCALL(op->ov))) {
		so->done_head = op->done_next;
		if (!so->done_head)
			so->done_tail = NULL;
		pthread_mutex_unlock(&so->lock);
		sp_op_complete(op, op->done_error, op->done_bytes);
		pthread_mutex_lock(&so->lock);
	}
	if (mine) {
		so->delivering = false;
		pthread_cond_broadcast(&so->cond);
	}
	op = so->done_head;
	pthread_mutex_unlock(&so->lock);
	if (op && mine && make_ready(so))
		kick();
	return false;
}

/* Deliver every socket on the ready list, up-calls included: how many. */
static int deliver_ready(void)
{
	struct sp_sock *so;
	int n = 0;

	while ((so = take_ready())) {
		deliver(so, true);
		sp_sock_put(so);
		n++;
	}
	return n;
}

void sp_progress_poll(struct sp_sock *so)
{
	bool others = false;

	if (!sp_progress_is_self())
		atomic_store_explicit(&sp_prov.app_poll_ns, sp_progress_now_ns(),
				      memory_order_relaxed);
	if (!pthread_mutex_trylock(&sp_prov.cq_lock)) {
		poll_batch(so, &others);
		pthread_mutex_unlock(&sp_prov.cq_lock);
		/* Only for other sockets' completions: so's own go out right here. */
		if (others)
			kick();
	}
	/*
	 * Up-calls only on the progress thread (or re-entered, from a
	 * deliverer's up-call), unless the switch's never wait
	 * (SANPROV_SPI_INLINE_UPCALLS).  What this thread polled for so while another
	 * delivers it goes on the ready list too: its deliverer may be the
	 * progress thread waiting in an up-call, which delivers that list.
	 */
	if (so && deliver(so, sp_progress_is_self() || sp_prov.cfg.inline_upcalls) &&
	    !sp_progress_is_self() && make_ready(so))
		kick();
	/*
	 * The progress thread waits in an up-call: the sockets it delivers
	 * (outer up-calls) and those it polled for others go out from here, or
	 * a thread waiting on one of them waits for ever.
	 */
	if (sp_progress_is_self())
		deliver_ready();
}

int sp_progress_app(int *err)
{
	bool others = false;
	int n = 0;

	if (!err)
		return SP_SOCKET_ERROR;
	/* The last cleanup's teardown takes life for writing: the CQ stays while this runs. */
	if (pthread_rwlock_tryrdlock(&sp_prov.life))
		return sp_fail(err, SP_WSANOTINITIALISED);
	if (!atomic_load(&sp_prov.startups) || atomic_load(&sp_prov.tearing_down) || !sp_prov.cq) {
		pthread_rwlock_unlock(&sp_prov.life);
		return sp_fail(err, SP_WSANOTINITIALISED);
	}
	if (sp_forked()) {
		pthread_rwlock_unlock(&sp_prov.life);
		return sp_fail(err, SP_WSAENETDOWN);
	}
	atomic_store_explicit(&sp_prov.app_poll_ns, sp_progress_now_ns(), memory_order_relaxed);
	if (!pthread_mutex_trylock(&sp_prov.cq_lock)) {
		n = poll_batch(NULL, &others);
		pthread_mutex_unlock(&sp_prov.cq_lock);
	}
	/*
	 * Up-calls here only when the switch's never wait, and not from inside
	 * one (its thread may wait for what the progress thread brings).
	 */
	if (sp_prov.cfg.inline_upcalls && !sp_progress_in_upcall() && !sp_progress_is_self())
		deliver_ready();
	else if (others)
		kick();
	pthread_rwlock_unlock(&sp_prov.life);
	return n < 0 ? 0 : n;
}

bool sp_progress_try_own(struct sp_sock *so, bool wait, bool *owned)
{
	bool others = false;

	*owned = false;
	pthread_mutex_lock(&so->lock);
	if (!so->delivering || !pthread_equal(so->deliverer, pthread_self())) {
		if (so->delivering && !wait) {
			/* Its deliverer (the closing thread) completes what is left. */
			pthread_mutex_unlock(&so->lock);
			return false;
		}
		while (so->delivering)
			pthread_cond_wait(&so->cond, &so->lock);
		so->delivering = true;
		so->deliverer = pthread_self();
		*owned = true;
	}
	pthread_mutex_unlock(&so->lock);
	/* What its QP completed is in the CQ: all of it into the FIFOs. */
	pthread_mutex_lock(&sp_prov.cq_lock);
	while (poll_batch(so, &others) > 0)
		;
	pthread_mutex_unlock(&sp_prov.cq_lock);
	if (others)
		kick();
	/* Owned (or re-entered): the FIFO goes out here, up-calls included. */
	deliver(so, true);
	return true;
}

bool sp_progress_own(struct sp_sock *so)
{
	bool owned;

	sp_progress_try_own(so, true, &owned);
	return owned;
}

void sp_progress_release(struct sp_sock *so, bool owned)
{
	if (!owned)
		return;
	pthread_mutex_lock(&so->lock);
	so->delivering = false;
	pthread_cond_broadcast(&so->cond);
	pthread_mutex_unlock(&so->lock);
}

uint64_t sp_progress_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *progress_main(void *arg)
{
	const uint64_t spin_ns = (uint64_t)sp_prov.cfg.poll_us * 1000;
	bool others = false; /* the ready list is read below anyway */
	uint64_t last = 0;   /* the last completion or delivery */
	int n, ret = 0;

	(void)arg;
	while (!atomic_load(&sp_prov.stop)) {
		uint64_t now = sp_progress_now_ns();
		uint64_t app =
		    now - atomic_load_explicit(&sp_prov.app_poll_ns, memory_order_relaxed);
		/* Soon after activity: poll again rather than sleep (adaptive polling). */
		bool spin = spin_ns && now - last < spin_ns;

		sp_stats_poll_dump();
		if (app < SP_PROGRESS_APP_POLL_NS) {
			/* An application thread polls: until it stops, only what it hands over. */
			deliver_ready();
			/* The CQ may be armed from before: its event is taken, or it stays ready.
			 */
			if (sp_os_wait2(sp_prov.cq->fd, sp_prov.wake,
					(int)((SP_PROGRESS_APP_POLL_NS - app) / 1000) + 1,
					true) == 1)
				(void)vb_get_cq_event(sp_prov.cq);
			last = sp_progress_now_ns();
			continue;
		}
		pthread_mutex_lock(&sp_prov.cq_lock);
		n = poll_batch(NULL, &others);
		/* Armed, then polled again: a completion that came before the arm raised no event.
		 */
		if (!n && !spin && !(ret = vb_req_notify_cq(sp_prov.cq)))
			n = poll_batch(NULL, &others);
		pthread_mutex_unlock(&sp_prov.cq_lock);
		if (n < 0 || (!n && ret)) {
			/*
			 * Credits keep the CQ from overrunning; an error here means
			 * the device is gone.  Operations then end at close.
			 */
			fprintf(stderr, "sanprov: completion queue: %s\n",
				strerror(n < 0 ? -n : ret));
			break;
		}
		n += deliver_ready();
		if (n) {
			last = sp_progress_now_ns();
			continue;
		}
		if (spin) {
			sched_yield(); /* on a busy host, the peer may need this core */
			continue;
		}
		ret = sp_os_wait2(sp_prov.cq->fd, sp_prov.wake, SP_PROGRESS_TICK_MS * 1000, true);
		if (ret == 1) {
			ret = vb_get_cq_event(sp_prov.cq);
			if (ret && ret != EAGAIN)
				fprintf(stderr, "sanprov: completion event: %s\n", strerror(ret));
		}
		ret = 0;
	}
	return NULL;
}

int sp_progress_start(void)
{
	int ret = sp_os_wake_open(&sp_prov.wake, false);

	if (ret)
		return ret;
	ret = pthread_create(&sp_prov.progress, NULL, progress_main, NULL);
	sp_prov.progress_running = !ret;
	if (ret)
		sp_os_wake_close(sp_prov.wake);
	return ret;
}

void sp_progress_stop(void)
{
	struct sp_sock *so;

	if (!sp_prov.progress_running)
		return;
	atomic_store(&sp_prov.stop, true);
	sp_os_wake(sp_prov.wake);
	pthread_join(sp_prov.progress, NULL);
	sp_os_wake_close(sp_prov.wake);
	sp_prov.progress_running = false;
	/* Every socket closed before: nothing is left to deliver, only references. */
	while ((so = take_ready()))
		sp_sock_put(so);
}
