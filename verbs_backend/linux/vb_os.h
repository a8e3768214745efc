/* SPDX-License-Identifier: BSD-2-Clause */
/* What vb.h takes from the OS on Linux: socket addresses and waitable objects. */
#ifndef SANPROV_VB_OS_H
#define SANPROV_VB_OS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* A CQ's or a listener's waitable object: a file descriptor (poll() it). */
typedef int vb_waitable;
#define VB_NO_WAITABLE (-1)

#endif
