/* SPDX-License-Identifier: BSD-2-Clause */
/* Registration cache settings from the environment, and its statistics in text. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "sp_rcache.h"

/* A size with an optional K, M or G suffix (powers of 1024). */
static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;
	unsigned int shift = 0;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		return EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	}
	if (*end || (shift && v > (SIZE_MAX >> shift)))
		return EINVAL;
	*out = (size_t)(v << shift);
	return 0;
}

static void env_size(const char *name, size_t *val)
{
	const char *s = getenv(name);
	size_t v;

	if (!s || !*s)
		return;
	if (parse_size(s, &v)) {
		fprintf(stderr, "sanprov: ignoring %s=%s (expected a size, e.g. 4096, 64K, 2G)\n",
			name, s);
		return;
	}
	*val = v;
}

static void env_bool(const char *name, bool *val)
{
	const char *s = getenv(name);

	if (!s || !*s)
		return;
	if ((s[0] == '0' || s[0] == '1') && !s[1]) {
		*val = s[0] == '1';
		return;
	}
	fprintf(stderr, "sanprov: ignoring %s=%s (expected 0 or 1)\n", name, s);
}

void sp_rcache_config_init(struct sp_rcache_config *cfg)
{
	*cfg = (struct sp_rcache_config){
		.enable = true,
		.merge = true,
		.max_regions = 16384,
		.max_bytes = 0,
		.max_region_size = 0,
	};
	env_bool("SANPROV_RCACHE", &cfg->enable);
	env_bool("SANPROV_RCACHE_MERGE", &cfg->merge);
	env_size("SANPROV_RCACHE_MAX_REGIONS", &cfg->max_regions);
	env_size("SANPROV_RCACHE_MAX_BYTES", &cfg->max_bytes);
	env_size("SANPROV_RCACHE_MAX_REGION", &cfg->max_region_size);
	env_bool("SANPROV_RCACHE_STATS", &cfg->print_stats);
}

void sp_rcache_print_stats(const struct sp_rcache_stats *s, FILE *f)
{
	fprintf(f,
		"rcache: hits %" PRIu64 " misses %" PRIu64 " merges %" PRIu64
		" unmerged_retries %" PRIu64 " evictions %" PRIu64 "\n"
		"rcache: invalidations %" PRIu64 " invalidated %" PRIu64 " registrations %" PRIu64
		" registration_errors %" PRIu64 " deregistrations %" PRIu64 "\n"
		"rcache: no_buffers %" PRIu64 " uncached %" PRIu64 " regions %" PRIu64
		" cached_regions %" PRIu64 " bytes_pinned %" PRIu64 "\n",
		s->hits, s->misses, s->merges, s->unmerged_retries, s->evictions, s->invalidations,
		s->invalidated, s->registrations, s->registration_errors, s->deregistrations,
		s->no_buffers, s->uncached, s->regions, s->cached_regions, s->bytes_pinned);
}
