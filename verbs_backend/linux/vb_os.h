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

/*
 * Per-thread state of a library that is loaded with dlopen: in the static
 * TLS block (a few words), so that no thread's first access allocates
 * and no exiting thread frees a block another thread's access then reuses
 * (ThreadSanitizer reported that as a race).
 */
#define VB_THREAD_LOCAL _Thread_local __attribute__((tls_model("initial-exec")))

#endif
