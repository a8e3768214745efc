/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Handle tables: the opaque values the provider hands to the switch
 * (socket contexts, memory handles) and to the NIC (a connection's slot
 * in a work request's wr_id).  A handle is a slot index and the slot's
 * generation; the generation moves on whenever a slot is freed, so a
 * stale or forged handle finds nothing instead of someone else's object.
 * Zero is never a valid handle.
 *
 * Lookups take no lock: they are on the data path of every socket.  The
 * slots come in chunks that never move (a lookup cannot read a slot while
 * it is reallocated), and each slot counts the lookups inside it: a
 * removal waits for them to leave before it returns, so that what a
 * lookup's get() or match() did is done before the caller frees the
 * object.  Adding and removing take the table's lock.
 */
#ifndef SANPROV_SP_HTAB_H
#define SANPROV_SP_HTAB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct sp_htab_slot {
	_Atomic(void *) obj;
	_Atomic uint32_t gen;
	_Atomic uint32_t readers; /* lookups reading this slot now */
	uint32_t next_free;	  /* index + 1 of the next free slot, 0: none (under lock) */
};

struct sp_htab {
	pthread_mutex_t lock;
	_Atomic(struct sp_htab_slot *) *chunks; /* SP_HTAB_CHUNK slots each, made on demand */
	uint32_t n_chunks;			/* room in chunks */
	uint32_t n_slots;			/* in the chunks made so far (under lock) */
	uint32_t max_slots;
	uint32_t gen_mask;  /* generations wrap within it (never 0) */
	uint32_t free_head; /* index + 1, 0: none */
	uint32_t used;
};

/* max_slots bounds the table (an application cannot grow it without end). */
int sp_htab_init(struct sp_htab *t, uint32_t max_slots);
/* The same with generations of gen_bits bits (1 to 32), for handles that must fit fewer bits. */
int sp_htab_init_bits(struct sp_htab *t, uint32_t max_slots, unsigned int gen_bits);
void sp_htab_fini(struct sp_htab *t);

/* A new handle for obj: 0 or ENOBUFS. */
int sp_htab_add(struct sp_htab *t, void *obj, uint64_t *handle);

/*
 * The object of handle, or NULL.  With get set, get(obj) runs while a
 * concurrent remove cannot return (take a reference there, so that the
 * object is not freed in between).
 */
void *sp_htab_lookup(struct sp_htab *t, uint64_t handle, void (*get)(void *obj));

/* The object of handle if match(obj, arg) holds (run as get() above); else NULL. */
void *sp_htab_lookup_if(struct sp_htab *t, uint64_t handle, int (*match)(void *obj, void *arg),
			void *arg);

/*
 * Forget handle; returns its object (NULL when the handle was not valid)
 * once no lookup reads it any more.
 */
void *sp_htab_remove(struct sp_htab *t, uint64_t handle);

/* Call fn on every object (under the lock: fn must not call the table). */
void sp_htab_for_each(struct sp_htab *t, void (*fn)(void *obj, void *arg), void *arg);

#endif
