/* SPDX-License-Identifier: BSD-2-Clause */
#ifndef SANPROV_PERF_STATS_H
#define SANPROV_PERF_STATS_H

#include "perf.h"

/* Fill the latency columns of row from n samples in microseconds (sorted in place). */
void perf_lat_stats(double *us, uint32_t n, struct perf_row *row);

#endif
