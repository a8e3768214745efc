/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Handle tables: the opaque values the provider hands to the switch
 * (socket contexts, memory handles).  A handle is a slot index and the
 * slot's generation; the generation moves on whenever a slot is freed, so
 * a stale or forged handle finds nothing instead of someone else's object.
 * Zero is never a valid handle.
 */
#ifndef SANPROV_SP_HTAB_H
#define SANPROV_SP_HTAB_H

#include <pthread.h>
#include <stdint.h>

struct sp_htab_slot {
	void *obj;
	uint32_t gen;
	uint32_t next_free; /* index + 1 of the next free slot, 0: none */
};

struct sp_htab {
	pthread_mutex_t lock;
	struct sp_htab_slot *slots;
	uint32_t n_slots;
	uint32_t max_slots;
	uint32_t free_head; /* index + 1, 0: none */
	uint32_t used;
};

/* max_slots bounds the table (an application cannot grow it without end). */
int sp_htab_init(struct sp_htab *t, uint32_t max_slots);
void sp_htab_fini(struct sp_htab *t);

/* A new handle for obj: 0 or ENOBUFS. */
int sp_htab_add(struct sp_htab *t, void *obj, uint64_t *handle);

/*
 * The object of handle, or NULL.  With get set, get(obj) runs under the
 * table's lock (take a reference there, so that a concurrent remove cannot
 * free the object in between).
 */
void *sp_htab_lookup(struct sp_htab *t, uint64_t handle, void (*get)(void *obj));

/* The object of handle if match(obj, arg) holds, run under the table's lock; else NULL. */
void *sp_htab_lookup_if(struct sp_htab *t, uint64_t handle, int (*match)(void *obj, void *arg),
			void *arg);

/* Forget handle; returns its object (NULL when the handle was not valid). */
void *sp_htab_remove(struct sp_htab *t, uint64_t handle);

/* Call fn on every object (under the lock: fn must not call the table). */
void sp_htab_for_each(struct sp_htab *t, void (*fn)(void *obj, void *arg), void *arg);

#endif
