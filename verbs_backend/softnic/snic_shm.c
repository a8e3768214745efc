/* SPDX-License-Identifier: BSD-2-Clause */
/* Shared-memory segments (memfd) and the locks that live in them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snic.h"

int snic_shm_create(struct snic_shm *shm, const char *name, size_t len)
{
	int ret;

	shm->fd = memfd_create(name, MFD_CLOEXEC);
	if (shm->fd < 0)
		return errno;
	/* Sparse: only the pages a table or ring really touches cost memory. */
	if (ftruncate(shm->fd, (off_t)len)) {
		ret = errno;
		goto err_close;
	}
	shm->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, shm->fd, 0);
	if (shm->addr == MAP_FAILED) {
		ret = errno;
		goto err_close;
	}
	shm->len = len;
	return 0;

err_close:
	close(shm->fd);
	shm->fd = -1;
	shm->addr = NULL;
	return ret;
}

/* Map a segment received from a peer; it must hold at least min_len bytes. */
int snic_shm_map(struct snic_shm *shm, int fd, size_t min_len)
{
	struct stat st;

	if (fstat(fd, &st))
		return errno;
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size < min_len || !min_len)
		return EPROTO;
	shm->addr = mmap(NULL, min_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shm->addr == MAP_FAILED) {
		shm->addr = NULL;
		return errno;
	}
	shm->fd = fd;
	shm->len = min_len;
	return 0;
}

void snic_shm_destroy(struct snic_shm *shm)
{
	if (shm->addr)
		munmap(shm->addr, shm->len);
	if (shm->fd >= 0)
		close(shm->fd);
	shm->addr = NULL;
	shm->fd = -1;
	shm->len = 0;
}

int snic_robust_mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int ret;

	ret = pthread_mutexattr_init(&a);
	if (ret)
		return ret;
	ret = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!ret)
		ret = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!ret)
		ret = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return ret;
}

/*
 * A peer that dies holding a ring lock must not stop this process: the
 * robust mutex hands the lock over.  What the dead peer was writing is in
 * a slot it had not yet published, so the ring itself is consistent.
 */
void snic_robust_lock(pthread_mutex_t *m)
{
	if (pthread_mutex_lock(m) == EOWNERDEAD)
		pthread_mutex_consistent(m);
}

size_t snic_dev_seg_size(uint32_t max_mr)
{
	return sizeof(struct snic_dev_seg) + (size_t)max_mr * sizeof(struct snic_mr_entry);
}

size_t snic_qp_seg_size(uint32_t rq_size, uint32_t max_sge)
{
	return sizeof(struct snic_qp_seg) + (size_t)rq_size * snic_rwqe_size(max_sge);
}

size_t snic_cq_seg_size(uint32_t size)
{
	return sizeof(struct snic_cq_seg) + (size_t)size * sizeof(struct snic_cqe);
}

unsigned long snic_env_ulong(const char *name, unsigned long def, unsigned long min,
			     unsigned long max)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || v < min || v > max) {
		fprintf(stderr, "sanprov: ignoring %s=%s (expected %lu..%lu), using %lu\n", name, s,
			min, max, def);
		return def;
	}
	return v;
}
