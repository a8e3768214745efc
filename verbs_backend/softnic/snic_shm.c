/* SPDX-License-Identifier: BSD-2-Clause */
/* Sizes of the shared segments, and settings from the environment. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "snic.h"

size_t snic_dev_seg_size(uint32_t max_mr)
{
	return sizeof(struct snic_dev_seg) + (size_t)max_mr * sizeof(struct snic_mr_entry);
}

size_t snic_qp_seg_size(uint32_t rq_size, uint32_t max_sge)
{
	return sizeof(struct snic_qp_seg) +
	       (size_t)rq_size * (snic_rwqe_size(max_sge) + sizeof(struct snic_inb));
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
