/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The handle tables' lock-free lookups (sp_htab) against adds and removes:
 * readers look up handles, live and stale, taking a reference in get()
 * (as sp_sock_get does) or checking the owner in match() (as a memory
 * handle's lookup does), while writers remove objects, drop the table's
 * reference (the last one frees) and add new ones in the freed slots.
 * A lookup must find nothing or the very object of that handle, alive;
 * under AddressSanitizer a lookup that reached a freed object shows as a
 * use after free, under ThreadSanitizer a missing happens-before as a race
 * on the plain fields.  Small generations (2 bits: 3 values, and two
 * writers, so fewer removals of a slot at once than values) make stale
 * handles collide with new ones: the answer must still be the handle's
 * object now.  (A lookup that checked the generation only after reading
 * the object passed a removed object off under the next generation.)
 *
 *   stress_htab [SECONDS]   (default 1 per case; TAP)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "sp_htab.h"
#include "tap.h"

#define READERS 2
#define WRITERS 2
#define HANDLES 66 /* more than one chunk of the table */
#define MAGIC 0x68746162u

struct obj {
	atomic_uint refs;
	uint32_t magic; /* plain: written before the add, cleared before the free */
	uint64_t handle;
	int owner;
};

static struct sp_htab t;
static _Atomic uint64_t handles[HANDLES]; /* the handle each slot last got (stale ones stay) */
static atomic_bool stop;
static atomic_ulong found, missed, bad;

static void obj_get(void *o)
{
	atomic_fetch_add(&((struct obj *)o)->refs, 1);
}

static void obj_put(struct obj *o)
{
	if (atomic_fetch_sub(&o->refs, 1) != 1)
		return;
	o->magic = 0;
	free(o);
}

static int owned_by(void *o, void *arg)
{
	struct obj *ob = o;

	/* Read inside the lookup, as memh_of() reads a handle's socket. */
	return ob->magic == MAGIC && ob->owner == *(const int *)arg;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *reader(void *arg)
{
	uint64_t s = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	unsigned long f = 0, m = 0, b = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint64_t h = atomic_load(&handles[rnd(&s) % HANDLES]);
		struct obj *o;

		if (rnd(&s) & 1) {
			o = sp_htab_lookup(&t, h, obj_get);
			if (o) {
				b += o->magic != MAGIC || o->handle != h;
				obj_put(o);
			}
		} else {
			int owner = 1;

			/* No reference: only what match() read, inside the lookup. */
			o = sp_htab_lookup_if(&t, h, owned_by, &owner);
		}
		if (o)
			f++;
		else
			m++;
	}
	atomic_fetch_add(&found, f);
	atomic_fetch_add(&missed, m);
	atomic_fetch_add(&bad, b);
	return NULL;
}

static void *writer(void *arg)
{
	uint64_t s = (uintptr_t)arg * 0x2545f4914f6cdd1dull + 7;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned int i = (unsigned int)(rnd(&s) % HANDLES);
		uint64_t h = atomic_load(&handles[i]);
		struct obj *o = h ? sp_htab_remove(&t, h) : NULL;

		if (o) {
			obj_put(o); /* the table's reference */
			continue;
		}
		o = malloc(sizeof(*o));
		if (!o)
			abort();
		/* The table's reference and this writer's: another may remove it at once. */
		atomic_init(&o->refs, 2);
		o->magic = MAGIC;
		o->owner = 1;
		if (sp_htab_add(&t, o, &o->handle)) {
			free(o);
			continue;
		}
		/* A handle another writer's removal left behind stays for the readers (stale). */
		atomic_store(&handles[i], o->handle);
		obj_put(o);
	}
	return NULL;
}

static void remove_all(void *o, void *arg)
{
	(void)arg;
	obj_put(o);
}

static void run(unsigned int gen_bits, double seconds)
{
	pthread_t th[READERS + WRITERS];
	struct timespec d = { (time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9) };
	int i;

	atomic_store(&stop, false);
	atomic_store(&found, 0);
	atomic_store(&missed, 0);
	atomic_store(&bad, 0);
	for (i = 0; i < HANDLES; i++)
		atomic_store(&handles[i], 0);
	if (sp_htab_init_bits(&t, HANDLES, gen_bits))
		abort();
	for (i = 0; i < READERS; i++)
		pthread_create(&th[i], NULL, reader, (void *)(uintptr_t)(i + 1));
	for (i = 0; i < WRITERS; i++)
		pthread_create(&th[READERS + i], NULL, writer, (void *)(uintptr_t)(i + 1));
	nanosleep(&d, NULL);
	atomic_store(&stop, true);
	for (i = 0; i < READERS + WRITERS; i++)
		pthread_join(th[i], NULL);
	sp_htab_for_each(&t, remove_all, NULL);
	sp_htab_fini(&t);
	tap_result(!atomic_load(&bad) && atomic_load(&found) && atomic_load(&missed),
		   "%u-bit generations: %lu lookups found their object, %lu found nothing, %lu "
		   "found another",
		   gen_bits, atomic_load(&found), atomic_load(&missed), atomic_load(&bad));
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.0;

	tap_plan(2);
	run(32, seconds);
	run(2, seconds);
	return tap_exit();
}
