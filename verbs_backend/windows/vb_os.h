/* SPDX-License-Identifier: BSD-2-Clause */
/* What vb.h takes from the OS on Windows: socket addresses and waitable objects. */
#ifndef SANPROV_VB_OS_H
#define SANPROV_VB_OS_H

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
/* winsock2.h must come before windows.h. */
#include <winsock2.h>
#include <ws2tcpip.h>

#include <windows.h>

/* A CQ's or a listener's waitable object: a HANDLE (WaitForSingleObject it). */
typedef HANDLE vb_waitable;
#define VB_NO_WAITABLE NULL

/* Per-thread state (see the Linux header). */
#define VB_THREAD_LOCAL _Thread_local

#endif
