/* SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "sp_htab.h"

#define SP_HTAB_CHUNK 64u

static uint64_t make_handle(uint32_t idx, uint32_t gen)
{
	return (uint64_t)gen << 32 | (idx + 1);
}

int sp_htab_init_bits(struct sp_htab *t, uint32_t max_slots, unsigned int gen_bits)
{
	int ret;

	memset(t, 0, sizeof(*t));
	if (!max_slots || max_slots == UINT32_MAX || !gen_bits || gen_bits > 32)
		return EINVAL;
	t->max_slots = max_slots;
	t->gen_mask = gen_bits == 32 ? UINT32_MAX : (1u << gen_bits) - 1;
	/* Room for every chunk's pointer up front: a chunk, once made, never moves. */
	t->n_chunks = (max_slots + SP_HTAB_CHUNK - 1) / SP_HTAB_CHUNK;
	t->chunks = calloc(t->n_chunks, sizeof(*t->chunks));
	if (!t->chunks)
		return ENOMEM;
	ret = pthread_mutex_init(&t->lock, NULL);
	if (ret) {
		free(t->chunks);
		t->chunks = NULL;
	}
	return ret;
}

int sp_htab_init(struct sp_htab *t, uint32_t max_slots)
{
	return sp_htab_init_bits(t, max_slots, 32);
}

void sp_htab_fini(struct sp_htab *t)
{
	if (t->chunks) {
		for (uint32_t i = 0; i < t->n_chunks; i++)
			free(atomic_load_explicit(&t->chunks[i], memory_order_relaxed));
		free(t->chunks);
		pthread_mutex_destroy(&t->lock);
	}
	memset(t, 0, sizeof(*t));
}

/* The slot of index idx, or NULL when its chunk was never made. */
static struct sp_htab_slot *slot_of(struct sp_htab *t, uint32_t idx)
{
	struct sp_htab_slot *c;

	if (idx / SP_HTAB_CHUNK >= t->n_chunks)
		return NULL;
	c = atomic_load_explicit(&t->chunks[idx / SP_HTAB_CHUNK], memory_order_acquire);
	return c ? &c[idx % SP_HTAB_CHUNK] : NULL;
}

/* One more chunk of free slots (lock held). */
static int grow(struct sp_htab *t)
{
	uint32_t first = t->n_slots, n = SP_HTAB_CHUNK;
	struct sp_htab_slot *c;

	if (t->n_slots >= t->max_slots)
		return ENOBUFS;
	if (n > t->max_slots - first)
		n = t->max_slots - first;
	c = calloc(SP_HTAB_CHUNK, sizeof(*c));
	if (!c)
		return ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		atomic_init(&c[i].gen, 1);
		c[i].next_free = i + 1 < n ? first + i + 2 : 0;
	}
	atomic_store_explicit(&t->chunks[first / SP_HTAB_CHUNK], c, memory_order_release);
	t->free_head = first + 1;
	t->n_slots = first + n;
	return 0;
}

int sp_htab_add(struct sp_htab *t, void *obj, uint64_t *handle)
{
	struct sp_htab_slot *s;
	uint32_t idx;
	int ret = 0;

	pthread_mutex_lock(&t->lock);
	if (!t->free_head && (ret = grow(t)))
		goto out;
	idx = t->free_head - 1;
	s = slot_of(t, idx);
	t->free_head = s->next_free;
	s->next_free = 0;
	t->used++;
	*handle = make_handle(idx, atomic_load_explicit(&s->gen, memory_order_relaxed));
	/* Last: a lookup that finds obj finds it whole. */
	atomic_store_explicit(&s->obj, obj, memory_order_release);
out:
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/*
 * Enter the slot handle names and return its object, if it is in use with
 * that generation (then leave() it after); NULL with nothing entered.
 */
static void *enter(struct sp_htab *t, uint64_t handle, struct sp_htab_slot **sp)
{
	uint32_t idx = (uint32_t)handle - 1, gen = (uint32_t)(handle >> 32);
	struct sp_htab_slot *s;
	void *obj;

	if (!(uint32_t)handle || !(s = slot_of(t, idx)))
		return NULL;
	/*
	 * Counted in before obj is read, both sequentially consistent: a
	 * removal that cleared obj and then saw no reader finds every later
	 * lookup reading NULL, and one that saw this reader waits for it.
	 */
	atomic_fetch_add(&s->readers, 1);
	/*
	 * The generation before and after obj: a removal clears obj before it
	 * moves the generation on, so the same generation on both sides is
	 * obj's.  (Read only after, a removal between the two reads could pass
	 * its object off under the next generation, a stale handle's when the
	 * generations wrap.)  Every removal that starts meanwhile waits for
	 * this lookup: the generation cannot come round again unless as many
	 * removals of this slot run at once as it has values.
	 */
	if (atomic_load(&s->gen) != gen || !(obj = atomic_load(&s->obj)) ||
	    atomic_load(&s->gen) != gen) {
		atomic_fetch_sub_explicit(&s->readers, 1, memory_order_release);
		return NULL;
	}
	*sp = s;
	return obj;
}

static void leave(struct sp_htab_slot *s)
{
	atomic_fetch_sub_explicit(&s->readers, 1, memory_order_release);
}

void *sp_htab_lookup(struct sp_htab *t, uint64_t handle, void (*get)(void *obj))
{
	struct sp_htab_slot *s;
	void *obj = enter(t, handle, &s);

	if (obj) {
		if (get)
			get(obj);
		leave(s);
	}
	return obj;
}

void *sp_htab_lookup_if(struct sp_htab *t, uint64_t handle, int (*match)(void *obj, void *arg),
			void *arg)
{
	struct sp_htab_slot *s;
	void *obj = enter(t, handle, &s);

	if (obj) {
		if (!match(obj, arg))
			obj = NULL;
		leave(s);
	}
	return obj;
}

void *sp_htab_remove(struct sp_htab *t, uint64_t handle)
{
	uint32_t idx = (uint32_t)handle - 1, gen = (uint32_t)(handle >> 32), next;
	struct sp_htab_slot *s;
	void *obj = NULL;

	pthread_mutex_lock(&t->lock);
	s = (uint32_t)handle ? slot_of(t, idx) : NULL;
	if (s && atomic_load_explicit(&s->gen, memory_order_relaxed) == gen)
		obj = atomic_load_explicit(&s->obj, memory_order_relaxed);
	if (obj) {
		atomic_store(&s->obj, NULL);
		/* Generation 0 is skipped: a handle is never 0 in its upper half either. */
		next = (gen + 1) & t->gen_mask;
		atomic_store(&s->gen, next ? next : 1);
		s->next_free = t->free_head;
		t->free_head = idx + 1;
		t->used--;
	}
	pthread_mutex_unlock(&t->lock);
	/* Lookups that found obj are inside get() or match(): short. */
	if (obj)
		while (atomic_load(&s->readers))
			sched_yield();
	return obj;
}

void sp_htab_for_each(struct sp_htab *t, void (*fn)(void *obj, void *arg), void *arg)
{
	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->n_slots; i++) {
		void *obj = atomic_load_explicit(&slot_of(t, i)->obj, memory_order_relaxed);

		if (obj)
			fn(obj, arg);
	}
	pthread_mutex_unlock(&t->lock);
}
