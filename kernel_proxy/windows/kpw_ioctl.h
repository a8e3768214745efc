/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * How a process reaches the Windows proxy driver: the device and its one
 * IOCTL code (METHOD_BUFFERED: the I/O manager copies a request once into
 * the system buffer).  The contract's requests (kp_proto.h) travel as they
 * are in KPW_IOCTL_REQUEST.
 *
 * The driver shares no memory with user mode: no event ring, no notify
 * word.  A secured range cannot be freed or reprotected behind the
 * provider's back on Windows, so the driver has nothing to report (see
 * docs/kernel-proxy-windows.md).
 */
#ifndef SANPROV_KPW_IOCTL_H
#define SANPROV_KPW_IOCTL_H

#include <stdint.h>

#include "kp_proto.h"

/* \Device\SanProvProxy, \DosDevices\SanProvProxy; user mode opens \\.\SanProvProxy. */
#define KPW_DEVICE_NAME u"\\Device\\SanProvProxy"
#define KPW_LINK_NAME u"\\DosDevices\\SanProvProxy"
#define KPW_USER_PATH u"\\\\.\\SanProvProxy"

/* CTL_CODE(FILE_DEVICE_UNKNOWN, fn, METHOD_BUFFERED, FILE_READ_DATA | FILE_WRITE_DATA) */
#define KPW_CTL_CODE(fn) ((0x22u << 16) | (3u << 14) | ((uint32_t)(fn) << 2) | 0u)
#define KPW_CTL_METHOD(code) ((code)&3u) /* 0: METHOD_BUFFERED */

#define KPW_IOCTL_REQUEST KPW_CTL_CODE(0x800) /* a kp_proto request -> its response */

#endif
