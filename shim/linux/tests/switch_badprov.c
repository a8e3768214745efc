/* SPDX-License-Identifier: BSD-2-Clause */
/* A provider library that refuses to start (switch_hostile). */
#include <errno.h>

__attribute__((visibility("default"))) int sp_wsp_startup_ex(unsigned short version, void *data,
							     const void *upcalls, void *procs);

int sp_wsp_startup_ex(unsigned short version, void *data, const void *upcalls, void *procs)
{
	(void)version;
	(void)data;
	(void)upcalls;
	(void)procs;
	return ENOSYS;
}
