/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Where the switch's tests run: softnic on 127.0.0.1 unless the soft-RoCE
 * tier (tests/rxe_run.py) says otherwise with
 *   SANPROV_TEST_BACKEND=verbs SANPROV_TEST_DEVICE=rxe0 SANPROV_TEST_ADDR=<rxe0's IPv4>
 * (tests/tdev.h).  Call switch_tenv_setup() before the first socket: the
 * preload starts the provider at the first one, with these settings.
 */
#ifndef SWITCH_TENV_H
#define SWITCH_TENV_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static inline void switch_tenv_setup(void)
{
	const char *b = getenv("SANPROV_TEST_BACKEND");
	const char *d = getenv("SANPROV_TEST_DEVICE");
	const char *a = getenv("SANPROV_TEST_ADDR");

	if (b && *b)
		setenv("SANPROV_BACKEND", b, 1);
	if (d && *d)
		setenv("SANPROV_DEVICE", d, 1);
	/* The SAN reaches that address alone (softnic's default is 127.0.0.1). */
	if (a && *a)
		setenv("SANPROV_SPI_ADDRESSES", a, 1);
}

/* The address servers bind and clients dial, network order. */
static inline in_addr_t switch_tenv_addr(void)
{
	const char *a = getenv("SANPROV_TEST_ADDR");
	struct in_addr in;

	if (a && *a && inet_pton(AF_INET, a, &in) == 1)
		return in.s_addr;
	return htonl(INADDR_LOOPBACK);
}

/* The verbs backend (soft-RoCE): a listener cannot cross fork() there. */
static inline bool switch_tenv_verbs(void)
{
	const char *b = getenv("SANPROV_TEST_BACKEND");

	return b && !strcmp(b, "verbs");
}

#endif
