/* SPDX-License-Identifier: BSD-2-Clause */
#include "tdev.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v && *v ? v : dflt;
}

const char *tdev_backend(void)
{
	return env_or("SANPROV_TEST_BACKEND", "softnic");
}

bool tdev_is_softnic(void)
{
	return !strcmp(tdev_backend(), "softnic");
}

struct vb_device *tdev_open(void)
{
	return vb_open_device(tdev_backend(), env_or("SANPROV_TEST_DEVICE", NULL));
}

bool tdev_status_ok(enum vb_wc_status got, enum vb_wc_status spec, enum vb_wc_status alt)
{
	return got == spec || (alt != VB_WC_SUCCESS && got == alt && !tdev_is_softnic());
}

void tdev_sockaddr(struct sockaddr_in *sin, uint16_t port)
{
	const char *addr = env_or("SANPROV_TEST_ADDR", "127.0.0.1");

	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1) {
		/* A typo here would otherwise show up as a connect error far away. */
		fprintf(stderr, "SANPROV_TEST_ADDR=%s is not an IPv4 address\n", addr);
		abort();
	}
}
