/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sp_mutex (the registration cache's lock) under contention: mutual
 * exclusion and the ordering of what the holder wrote, with short holds
 * (the inline paths and the handover racing them), with long ones (waiters
 * asleep on the semaphore), and with signals interrupting a waiter.  Under
 * ThreadSanitizer, a missing happens-before shows as a race on the plain
 * counter.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "sp_mutex.h"
#include "tap.h"

#define THREADS 4

static struct sp_mutex m;
static unsigned long counter;	     /* plain: only the holder touches it */
static _Atomic int inside, overlaps; /* holders at once, and times that exceeded one */
static struct timespec hold;	     /* how long each hold sleeps (0: not at all) */
static unsigned long rounds;

static void critical(void)
{
	if (atomic_fetch_add(&inside, 1))
		atomic_fetch_add(&overlaps, 1);
	unsigned long v = counter;
	if (hold.tv_nsec)
		nanosleep(&hold, NULL);
	counter = v + 1;
	atomic_fetch_sub(&inside, 1);
}

static void *worker(void *arg)
{
	(void)arg;
	for (unsigned long i = 0; i < rounds; i++) {
		sp_mutex_lock(&m);
		critical();
		sp_mutex_unlock(&m);
	}
	return NULL;
}

static void contend(const char *what, unsigned long n, long hold_ns)
{
	pthread_t t[THREADS];
	int started = 0;

	counter = 0;
	atomic_store(&overlaps, 0);
	rounds = n;
	hold = (struct timespec){ .tv_nsec = hold_ns };
	for (int i = 0; i < THREADS; i++)
		if (!pthread_create(&t[i], NULL, worker, NULL))
			started++;
	for (int i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	tap_result(started == THREADS && counter == (unsigned long)THREADS * n &&
		       !atomic_load(&overlaps),
		   "%s: %d threads x %lu locked increments: counter %lu, %d overlaps", what,
		   THREADS, n, counter, atomic_load(&overlaps));
}

/* A waiter whose sleep a signal interrupts waits on; it gets the lock only once it is let go. */
static _Atomic bool released, got_it_early;
static _Atomic int handled;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&handled, 1);
}

static void *waiter(void *arg)
{
	(void)arg;
	sp_mutex_lock(&m);
	if (!atomic_load(&released))
		atomic_store(&got_it_early, true);
	sp_mutex_unlock(&m);
	return NULL;
}

static void interrupted_waiter(void)
{
	struct sigaction sa;
	struct timespec ms = { .tv_nsec = 1000000 };
	pthread_t t;
	int sent = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: sem_wait() returns EINTR */
	sigaction(SIGUSR1, &sa, NULL);
	sp_mutex_lock(&m);
	if (pthread_create(&t, NULL, waiter, NULL)) {
		sp_mutex_unlock(&m);
		tap_result(0, "interrupted waiter: pthread_create failed");
		return;
	}
	/* Let the waiter count itself in and sleep, then interrupt it again and again. */
	for (int i = 0; i < 20; i++) {
		nanosleep(&ms, NULL);
		if (!pthread_kill(t, SIGUSR1))
			sent++;
	}
	/* Bounded: a waiter that wrongly left its wait has exited and handles no more. */
	for (int i = 0; i < 2000 && atomic_load(&handled) < sent; i++)
		nanosleep(&ms, NULL);
	atomic_store(&released, true);
	sp_mutex_unlock(&m);
	pthread_join(t, NULL);
	tap_result(sent == 20 && !atomic_load(&got_it_early),
		   "interrupted waiter: %d signals handled, lock taken only after its release",
		   atomic_load(&handled));
}

int main(void)
{
	int ret = sp_mutex_init(&m);

	tap_plan(3);
	if (ret) {
		for (int i = 0; i < 3; i++)
			tap_result(0, "sp_mutex_init: %s", strerror(ret));
		return tap_exit();
	}
	contend("short holds", 200000, 0);
	contend("holds of 50 us (waiters sleep)", 200, 50000);
	interrupted_waiter();
	sp_mutex_destroy(&m);
	return tap_exit();
}
