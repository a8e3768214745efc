/* SPDX-License-Identifier: BSD-2-Clause */
/* Latency statistics as perftest reports them. */
#include <math.h>
#include <stdlib.h>

#include "perf_stats.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double perf_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void perf_lat_stats(double *us, uint32_t n, struct perf_row *row)
{
	double sum = 0, sq = 0;

	qsort(us, n, sizeof(*us), cmp_double);
	for (uint32_t i = 0; i < n; i++)
		sum += us[i];
	row->t_avg = sum / n;
	for (uint32_t i = 0; i < n; i++)
		sq += (us[i] - row->t_avg) * (us[i] - row->t_avg);
	row->t_stdev = n > 1 ? sqrt(sq / (n - 1)) : 0;
	row->t_min = us[0];
	row->t_max = us[n - 1];
	row->t_typical = us[n / 2];
	row->t_p99 = us[(uint32_t)((n - 1) * 0.99)];
	row->t_p999 = us[(uint32_t)((n - 1) * 0.999)];
}
