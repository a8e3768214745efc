/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * For tests only: open the Linux proxy as it would run on a kernel that
 * gives it less than this one does; see what its calls cost.
 */
#ifndef SANPROV_KP_UFFD_TEST_H
#define SANPROV_KP_UFFD_TEST_H

#include <stddef.h>
#include <stdint.h>

struct kp_client;

/* A userfaultfd for user-mode faults only (unprivileged, vm.unprivileged_userfaultfd = 0). */
#define KP_UFFD_TEST_USER_MODE_ONLY 1u
/* A kernel that refuses write-protect mode for every mapping (missing-page mode only). */
#define KP_UFFD_TEST_NO_WP 2u

struct kp_client *kp_uffd_open_test(unsigned int flags);

/* Segments of the registered set examined by unsecures so far (their cost, whatever the set). */
uint64_t kp_uffd_test_probes(struct kp_client *k);

/*
 * The pool the registered set's segments come from: a mapping of its own,
 * which only the calls of the client touch (never the event thread).
 */
void kp_uffd_test_pool(struct kp_client *k, void **base, size_t *len);

#endif
