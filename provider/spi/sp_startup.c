/* SPDX-License-Identifier: BSD-2-Clause */
/* WSPStartupEx and WSPCleanup: the provider's device, queues and tables. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_internal.h"

struct sp_prov sp_prov = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.life = PTHREAD_RWLOCK_INITIALIZER,
	.cq_lock = PTHREAD_MUTEX_INITIALIZER,
	.ready_lock = PTHREAD_MUTEX_INITIALIZER,
	.idle = PTHREAD_COND_INITIALIZER,
};

/* One CQ serves every QP: room for this many operations in flight by default. */
#define SP_CQ_ENTRIES 65536u

static uint32_t env_u32(const char *name, uint32_t def, uint32_t min, uint32_t max)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long n;

	if (!v || !*v)
		return def;
	errno = 0;
	n = strtoull(v, &end, 0);
	if (errno || *end || n < min || n > max) {
		fprintf(stderr, "sanprov: %s=%s is not in %u..%u; using %u\n", name, v, min, max,
			def);
		return def;
	}
	return (uint32_t)n;
}

static void config_init(struct sp_prov_config *c)
{
	c->max_sockets = env_u32("SANPROV_SPI_MAX_SOCKETS", 1024, 1, 1u << 20);
	c->queue_depth = env_u32("SANPROV_SPI_QUEUE_DEPTH", 128, 4, 4096);
	c->max_sge = SP_OP_MAX_SGE;
	c->rdma_threshold = env_u32("SANPROV_SPI_RDMA_THRESHOLD", 65536, 0, UINT32_MAX);
	c->max_rdma = env_u32("SANPROV_SPI_MAX_RDMA", 1u << 30, 4096, 1u << 30);
	c->max_mem_handles = env_u32("SANPROV_SPI_MAX_MEM_HANDLES", 1u << 16, 16, 1u << 24);
	c->connect_timeout_ms = (int)env_u32("SANPROV_SPI_CONNECT_TIMEOUT_MS", 10000, 10, 600000);
	/*
	 * A thread woken by the CQ's event costs tens of microseconds on a
	 * busy host: after a completion, poll this long first.  Idle, nothing
	 * spins.
	 */
	c->poll_us = env_u32("SANPROV_SPI_POLL_US", 100, 0, 1000000);
	c->cq_entries = env_u32("SANPROV_SPI_CQ_ENTRIES", SP_CQ_ENTRIES, 16, 1u << 22);
	/*
	 * A switch whose completion up-call never waits in the provider (it
	 * signals an event, as WPUCompleteOverlappedRequest does) may have it
	 * made by the thread that polls WSPGetOverlappedResult: no thread
	 * wake-up between the completion and the poller.  An up-call that
	 * waits there could hold a delivery nobody else can make.
	 */
	c->inline_upcalls = env_u32("SANPROV_SPI_INLINE_UPCALLS", 0, 0, 1) != 0;
}

static void teardown_status(const char *what, int ret)
{
	if (ret)
		fprintf(stderr, "sanprov: cleanup: %s: %s\n", what, strerror(ret));
}

static void prov_teardown(void)
{
	struct sp_prov *p = &sp_prov;

	if (p->progress_running)
		sp_stats_stop();
	sp_progress_stop();
	/* Every socket is gone: nothing holds a region any more. */
	if (p->cache) {
		struct sp_watched *cache = p->cache;

		sp_stats_lock();
		p->cache = NULL;
		sp_stats_retire_cache(cache);
		sp_stats_unlock();
		teardown_status("destroying the registration cache", sp_watched_destroy(cache));
	}
	if (p->pd)
		teardown_status("freeing the protection domain", vb_dealloc_pd(p->pd));
	p->pd = NULL;
	if (p->cq)
		teardown_status("destroying the CQ", vb_destroy_cq(p->cq));
	if (p->proxy)
		kp_client_close(p->proxy);
	if (p->dev)
		teardown_status("closing the device", vb_close_device(p->dev));
	sp_htab_fini(&p->sockets);
	sp_htab_fini(&p->mem);
	sp_htab_fini(&p->rdma);
	sp_htab_fini(&p->conns);
	p->cq = NULL;
	p->proxy = NULL;
	p->dev = NULL;
}

void sp_fork_child(void)
{
	struct sp_prov *p = &sp_prov;

	/* No thread of the parent runs here: what they held is free. */
	pthread_mutex_init(&p->lock, NULL);
	pthread_rwlock_init(&p->life, NULL);
	pthread_mutex_init(&p->cq_lock, NULL);
	pthread_mutex_init(&p->ready_lock, NULL);
	pthread_cond_init(&p->idle, NULL);
	sp_stats_fork_child();
}

/*
 * In a child of fork(): forget the parent's provider without releasing
 * any of it (its device, registrations and sockets are the parent's; the
 * memory stays as fork copied it), so that a startup here makes a new one.
 */
static void prov_abandon(void)
{
	struct sp_prov *p = &sp_prov;

	p->startups = 0;
	p->dev = NULL;
	p->cq = NULL;
	p->pd = NULL;
	p->cache = NULL;
	p->proxy = NULL;
	p->ready_head = p->ready_tail = NULL;
	p->progress_running = false;
	memset(&p->sockets, 0, sizeof(p->sockets));
	memset(&p->mem, 0, sizeof(p->mem));
	memset(&p->rdma, 0, sizeof(p->rdma));
	memset(&p->conns, 0, sizeof(p->conns));
	atomic_store(&p->tearing_down, false);
}

static int prov_setup(void)
{
	struct sp_prov *p = &sp_prov;
	struct vb_device_attr da;
	int ret;

	config_init(&p->cfg);
	sp_rcache_config_init(&p->cache_cfg);
	/*
	 * Every handle the SPI may give out holds a region: a cache limit
	 * below the handle limit refused registrations the SPI promised (the
	 * 16,385th buffer), with nothing idle to evict.  The cache's own
	 * setting wins when it is given.
	 */
	if (!getenv("SANPROV_RCACHE_MAX_REGIONS") && p->cache_cfg.max_regions &&
	    p->cache_cfg.max_regions < p->cfg.max_mem_handles)
		p->cache_cfg.max_regions = p->cfg.max_mem_handles;
	if (sp_htab_init(&p->sockets, p->cfg.max_sockets) ||
	    sp_htab_init(&p->mem, p->cfg.max_mem_handles) ||
	    sp_htab_init(&p->rdma, p->cfg.max_mem_handles) ||
	    /*
	     * A closed socket keeps its slot until its QP's completions are
	     * delivered: room for as many again.  Generations as the wr_id
	     * keeps them (sp_op.c).
	     */
	    sp_htab_init_bits(&p->conns, 2 * p->cfg.max_sockets, SP_CONN_GEN_BITS)) {
		ret = ENOMEM;
		goto err;
	}
	p->dev = vb_open_device(NULL, getenv("SANPROV_DEVICE"));
	if (!p->dev) {
		ret = errno;
		fprintf(stderr, "sanprov: no device: %s\n", strerror(ret));
		goto err;
	}
	/* As large as the device allows, up to cq_entries. */
	if (vb_query_device(p->dev, &da)) {
		ret = EIO;
		goto err;
	}
	p->cq = vb_create_cq(
	    p->dev,
	    (int)(da.max_cqe && da.max_cqe < p->cfg.cq_entries ? da.max_cqe : p->cfg.cq_entries));
	if (!p->cq) {
		ret = errno;
		goto err;
	}
	/* Only what was asked for: a NIC may round the size up. */
	atomic_store(&p->cq_credits, (uint32_t)p->cq->cqe < p->cfg.cq_entries ? (uint32_t)p->cq->cqe
									      : p->cfg.cq_entries);
	/*
	 * Without the proxy nothing can tell the cache that memory changed:
	 * registrations are then made per use and never cached.
	 */
	p->proxy = kp_client_open();
	if (!p->proxy) {
		fprintf(stderr,
			"sanprov: kernel proxy unavailable (%s): registrations are not "
			"cached\n",
			strerror(errno));
		p->cache_cfg.enable = false;
	}
	p->pd = vb_alloc_pd(p->dev);
	if (!p->pd) {
		ret = errno;
		goto err;
	}
	/* One cache for the process and the device, shared by every socket. */
	p->cache = sp_watched_create(&p->cache_cfg, p->pd, p->proxy);
	if (!p->cache) {
		ret = errno;
		goto err;
	}
	/* Memory that changes under an RDMA registration: the peer's key dies. */
	sp_watched_set_changed(p->cache, sp_rdma_memory_changed, NULL);
	sp_fork_watch();
	p->fork_gen = atomic_load(&sp_fork_generation);
	atomic_store(&p->stop, false);
	ret = sp_progress_start();
	if (ret)
		goto err;
	sp_stats_start(p->wake);
	return 0;
err:
	prov_teardown();
	return ret;
}

int sp_wsp_startup_ex(uint16_t version, struct sp_wsp_data *data, const struct sp_upcalls *upcalls,
		      struct sp_proc_table *procs)
{
	struct sp_prov *p = &sp_prov;
	int ret = 0;

	if (!data || !upcalls || !procs || !upcalls->create_socket_handle ||
	    !upcalls->close_socket_handle || !upcalls->query_socket_handle_context ||
	    !upcalls->complete_overlapped_request)
		return SP_WSAEFAULT;
	/* 2.2 is the only version: a caller that cannot take it gets refused. */
	if ((version & 0xff) < 2 || ((version & 0xff) == 2 && (version >> 8) < 2))
		return SP_WSAVERNOTSUPPORTED;
	/* In a fork child whose provider's fork handler has not run yet (it runs later). */
	sp_fork_check();
	pthread_mutex_lock(&p->lock);
	/* The parent's provider: its device, threads and sockets are not this process's. */
	if ((p->startups || atomic_load(&p->tearing_down)) && sp_forked())
		prov_abandon();
	/* Another user's last cleanup runs: start afresh once it is done. */
	while (atomic_load(&p->tearing_down))
		pthread_cond_wait(&p->idle, &p->lock);
	if (!p->startups) {
		p->up = *upcalls;
		ret = prov_setup();
	}
	if (!ret)
		p->startups++;
	pthread_mutex_unlock(&p->lock);
	if (ret)
		return SP_WSAEPROVIDERFAILEDINIT;
	data->version = SP_SPI_VERSION;
	data->high_version = SP_SPI_VERSION;
	snprintf(data->description, sizeof(data->description),
		 "sanprov SAN service provider (%s, registration cache %s)", p->dev->ops->name,
		 p->cache_cfg.enable ? "on" : "off");
	sp_spi_fill_procs(procs);
	return 0;
}

struct collect {
	struct sp_sock **so;
	size_t n, cap;
};

static void collect_one(void *obj, void *arg)
{
	struct collect *c = arg;

	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		struct sp_sock **so = realloc(c->so, cap * sizeof(*so));
		if (!so)
			return; /* left for the next cleanup's sweep below */
		c->so = so;
		c->cap = cap;
	}
	sp_sock_hold(obj);
	c->so[c->n++] = obj;
}

int sp_cleanup(int *err)
{
	struct sp_prov *p = &sp_prov;
	struct collect c = { 0 };

	pthread_mutex_lock(&p->lock);
	if (!p->startups || atomic_load(&p->tearing_down)) {
		pthread_mutex_unlock(&p->lock);
		return sp_fail(err, SP_WSANOTINITIALISED);
	}
	/*
	 * A completion up-call runs on a thread the teardown would have to
	 * stop; a condition function, inside an accept that still uses it.
	 */
	if (sp_progress_in_upcall() || sp_sock_in_condition()) {
		pthread_mutex_unlock(&p->lock);
		return sp_fail(err, SP_WSAEINPROGRESS);
	}
	/* A fork child releases nothing: it would release the parent's resources. */
	if (sp_forked()) {
		pthread_mutex_unlock(&p->lock);
		return sp_fail(err, SP_WSAENETDOWN);
	}
	if (p->startups > 1) {
		p->startups--;
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	/* The last one: a startup from now on waits for the teardown, then starts afresh. */
	atomic_store(&p->tearing_down, true);
	pthread_mutex_unlock(&p->lock);
	/* The last cleanup closes what the switch left open. */
	do {
		c.n = 0;
		sp_htab_for_each(&p->sockets, collect_one, &c);
		for (size_t i = 0; i < c.n; i++) {
			sp_sock_close(c.so[i]);
			sp_sock_put(c.so[i]);
		}
	} while (c.n);
	free(c.so);
	pthread_mutex_lock(&p->lock);
	p->startups = 0;
	/* A cache callback in progress walks the tables torn down here. */
	pthread_rwlock_wrlock(&p->life);
	prov_teardown();
	pthread_rwlock_unlock(&p->life);
	atomic_store(&p->tearing_down, false);
	pthread_cond_broadcast(&p->idle);
	pthread_mutex_unlock(&p->lock);
	return 0;
}
