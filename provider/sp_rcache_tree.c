/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The cache's index: an AVL tree of non-overlapping regions keyed by start.
 * Links are atomics read with relaxed loads by lock-free readers, who
 * validate what they found with the cache's sequence lock; writers (under
 * the cache lock) change them in place.
 */
#include <errno.h>

#include "sp_rcache_int.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

struct sp_rregion *sp_tree_floor(struct sp_rcache *c, uintptr_t addr)
{
	struct sp_rregion *n = LD(c->root), *best = NULL;

	/* A rotation seen half-done can form a cycle: the bound ends such a walk. */
	for (int steps = 0; n; steps++) {
		if (steps == SP_RCACHE_MAX_DEPTH)
			return SP_TREE_RETRY;
		if (LD(n->start) <= addr) {
			best = n;
			n = LD(n->right);
		} else {
			n = LD(n->left);
		}
	}
	return best;
}

struct sp_rregion *sp_tree_first_overlap(struct sp_rcache *c, uintptr_t start, uintptr_t end)
{
	struct sp_rregion *n = LD(c->root), *floor = NULL, *succ = NULL;

	while (n) {
		if (LD(n->start) <= start) {
			floor = n;
			n = LD(n->right);
		} else {
			succ = n;
			n = LD(n->left);
		}
	}
	if (floor && LD(floor->end) > start)
		return floor;
	if (succ && LD(succ->start) < end)
		return succ;
	return NULL;
}

static int height(struct sp_rregion *n)
{
	return n ? n->height : 0;
}

static void fix_height(struct sp_rregion *n)
{
	int l = height(LD(n->left)), r = height(LD(n->right));

	n->height = 1 + (l > r ? l : r);
}

static struct sp_rregion *rotate_right(struct sp_rregion *y)
{
	struct sp_rregion *x = LD(y->left);

	ST(y->left, LD(x->right));
	ST(x->right, y);
	fix_height(y);
	fix_height(x);
	return x;
}

static struct sp_rregion *rotate_left(struct sp_rregion *x)
{
	struct sp_rregion *y = LD(x->right);

	ST(x->right, LD(y->left));
	ST(y->left, x);
	fix_height(x);
	fix_height(y);
	return y;
}

static struct sp_rregion *balance(struct sp_rregion *n)
{
	int bf;

	fix_height(n);
	bf = height(LD(n->left)) - height(LD(n->right));
	if (bf > 1) {
		struct sp_rregion *l = LD(n->left);
		if (height(LD(l->left)) < height(LD(l->right)))
			ST(n->left, rotate_left(l));
		return rotate_right(n);
	}
	if (bf < -1) {
		struct sp_rregion *r = LD(n->right);
		if (height(LD(r->right)) < height(LD(r->left)))
			ST(n->right, rotate_right(r));
		return rotate_left(n);
	}
	return n;
}

static struct sp_rregion *insert_node(struct sp_rregion *n, struct sp_rregion *r)
{
	if (!n)
		return r;
	if (LD(r->start) < LD(n->start))
		ST(n->left, insert_node(LD(n->left), r));
	else
		ST(n->right, insert_node(LD(n->right), r));
	return balance(n);
}

void sp_tree_insert(struct sp_rcache *c, struct sp_rregion *r)
{
	ST(r->left, NULL);
	ST(r->right, NULL);
	r->height = 1;
	ST(c->root, insert_node(LD(c->root), r));
}

/* Unlink the leftmost node of n into *min; returns the new subtree. */
static struct sp_rregion *remove_min(struct sp_rregion *n, struct sp_rregion **min)
{
	if (!LD(n->left)) {
		*min = n;
		return LD(n->right);
	}
	ST(n->left, remove_min(LD(n->left), min));
	return balance(n);
}

static struct sp_rregion *remove_node(struct sp_rregion *n, struct sp_rregion *r)
{
	uintptr_t key = LD(r->start);

	if (!n)
		return NULL;
	if (n != r) {
		if (key < LD(n->start))
			ST(n->left, remove_node(LD(n->left), r));
		else
			ST(n->right, remove_node(LD(n->right), r));
		return balance(n);
	}
	struct sp_rregion *l = LD(n->left), *rt = LD(n->right), *m;
	if (!l)
		return rt;
	if (!rt)
		return l;
	rt = remove_min(rt, &m);
	ST(m->right, rt);
	ST(m->left, l);
	return balance(m);
}

void sp_tree_remove(struct sp_rcache *c, struct sp_rregion *r)
{
	ST(c->root, remove_node(LD(c->root), r));
}

/* Returns the height of n's subtree, or -1 with *why set. */
static int verify_node(struct sp_rregion *n, uintptr_t lo, uintptr_t hi, size_t *count,
		       const char **why)
{
	int l, r;

	if (!n)
		return 0;
	if (LD(n->start) < lo || LD(n->end) > hi || LD(n->start) >= LD(n->end)) {
		*why = "regions out of order or overlapping";
		return -1;
	}
	if (!n->indexed || atomic_load(&n->state) != SP_RR_LIVE) {
		*why = "an indexed region is not live";
		return -1;
	}
	l = verify_node(LD(n->left), lo, LD(n->start), count, why);
	if (l < 0)
		return -1;
	r = verify_node(LD(n->right), LD(n->end), hi, count, why);
	if (r < 0)
		return -1;
	if (n->height != 1 + (l > r ? l : r) || l - r > 1 || r - l > 1) {
		*why = "AVL height or balance broken";
		return -1;
	}
	(*count)++;
	return n->height;
}

int sp_rcache_verify(struct sp_rcache *c, const char **why)
{
	size_t count = 0, lru = 0, bytes = 0;
	int ret = 0;

	*why = NULL;
	pthread_mutex_lock(&c->lock);
	if (verify_node(LD(c->root), 0, UINTPTR_MAX, &count, why) < 0)
		ret = EUCLEAN;
	for (struct sp_rregion *r = c->lru_head; r && !ret; r = r->lru_next) {
		if (!r->indexed || (r->lru_next && r->lru_next->lru_prev != r)) {
			*why = "LRU list broken";
			ret = EUCLEAN;
		}
		lru++;
		bytes += r->pub.end - r->pub.start;
	}
	if (!ret && (count != c->n_cached || lru != c->n_cached || bytes != c->cached_bytes)) {
		*why = "counts disagree with the index";
		ret = EUCLEAN;
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}
