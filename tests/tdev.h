/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The device the backend-level suites run on.  softnic unless the
 * environment says otherwise: the soft-RoCE tier (tests/rxe_run.py) runs the
 * same suites with
 *   SANPROV_TEST_BACKEND=verbs SANPROV_TEST_DEVICE=rxe0 SANPROV_TEST_ADDR=<rxe0's IPv4>
 */
#ifndef SANPROV_TDEV_H
#define SANPROV_TDEV_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "vb.h"

/* The backend's name: SANPROV_TEST_BACKEND, or "softnic". */
const char *tdev_backend(void);
/* True when the suites run on the embedded NIC (its own checks apply). */
bool tdev_is_softnic(void);
/* vb_open_device() on that backend and SANPROV_TEST_DEVICE (NULL: the first). */
struct vb_device *tdev_open(void);
/*
 * A completion status as the IB spec has it (spec), or, off softnic, the
 * alternative a real device is known to give instead (alt; VB_WC_SUCCESS
 * for none: success is never an alternative).  softnic must give spec.
 */
bool tdev_status_ok(enum vb_wc_status got, enum vb_wc_status spec, enum vb_wc_status alt);
/* The IPv4 address listeners bind and clients dial, with port (host order). */
void tdev_sockaddr(struct sockaddr_in *sin, uint16_t port);

#endif
