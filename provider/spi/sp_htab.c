/* SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_htab.h"

#define SP_HTAB_FIRST 64u

static uint64_t make_handle(uint32_t idx, uint32_t gen)
{
	return (uint64_t)gen << 32 | (idx + 1);
}

int sp_htab_init(struct sp_htab *t, uint32_t max_slots)
{
	memset(t, 0, sizeof(*t));
	if (!max_slots || max_slots == UINT32_MAX)
		return EINVAL;
	t->max_slots = max_slots;
	return pthread_mutex_init(&t->lock, NULL);
}

void sp_htab_fini(struct sp_htab *t)
{
	free(t->slots);
	pthread_mutex_destroy(&t->lock);
	memset(t, 0, sizeof(*t));
}

static int grow(struct sp_htab *t)
{
	uint32_t n = t->n_slots ? t->n_slots * 2 : SP_HTAB_FIRST;
	struct sp_htab_slot *s;

	if (t->n_slots == t->max_slots)
		return ENOBUFS;
	if (n > t->max_slots)
		n = t->max_slots;
	s = realloc(t->slots, n * sizeof(*s));
	if (!s)
		return ENOMEM;
	for (uint32_t i = t->n_slots; i < n; i++)
		s[i] = (struct sp_htab_slot){ .gen = 1, .next_free = i + 1 < n ? i + 2 : 0 };
	t->free_head = t->n_slots + 1;
	t->slots = s;
	t->n_slots = n;
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
	s = &t->slots[idx];
	t->free_head = s->next_free;
	s->obj = obj;
	s->next_free = 0;
	t->used++;
	*handle = make_handle(idx, s->gen);
out:
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* The slot handle names, if it is in use with that generation (lock held). */
static struct sp_htab_slot *find(struct sp_htab *t, uint64_t handle)
{
	uint32_t idx = (uint32_t)handle - 1, gen = (uint32_t)(handle >> 32);

	if (!(uint32_t)handle || idx >= t->n_slots)
		return NULL;
	if (t->slots[idx].gen != gen || !t->slots[idx].obj)
		return NULL;
	return &t->slots[idx];
}

void *sp_htab_lookup(struct sp_htab *t, uint64_t handle, void (*get)(void *obj))
{
	struct sp_htab_slot *s;
	void *obj = NULL;

	pthread_mutex_lock(&t->lock);
	s = find(t, handle);
	if (s) {
		obj = s->obj;
		if (get)
			get(obj);
	}
	pthread_mutex_unlock(&t->lock);
	return obj;
}

void *sp_htab_lookup_if(struct sp_htab *t, uint64_t handle, int (*match)(void *obj, void *arg),
			void *arg)
{
	struct sp_htab_slot *s;
	void *obj = NULL;

	pthread_mutex_lock(&t->lock);
	s = find(t, handle);
	if (s && match(s->obj, arg))
		obj = s->obj;
	pthread_mutex_unlock(&t->lock);
	return obj;
}

void *sp_htab_remove(struct sp_htab *t, uint64_t handle)
{
	struct sp_htab_slot *s;
	void *obj = NULL;

	pthread_mutex_lock(&t->lock);
	s = find(t, handle);
	if (s) {
		obj = s->obj;
		s->obj = NULL;
		/* Generation 0 is skipped: a handle is never 0 in its upper half either. */
		s->gen = s->gen + 1 ? s->gen + 1 : 1;
		s->next_free = t->free_head;
		t->free_head = (uint32_t)(s - t->slots) + 1;
		t->used--;
	}
	pthread_mutex_unlock(&t->lock);
	return obj;
}

void sp_htab_for_each(struct sp_htab *t, void (*fn)(void *obj, void *arg), void *arg)
{
	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->n_slots; i++)
		if (t->slots[i].obj)
			fn(t->slots[i].obj, arg);
	pthread_mutex_unlock(&t->lock);
}
