/* SPDX-License-Identifier: BSD-2-Clause */
/* The functions behind sp_proc_table (internal). */
#ifndef SANPROV_SP_SPI_PROCS_H
#define SANPROV_SP_SPI_PROCS_H

#include "sp_spi.h"

void sp_spi_fill_procs(struct sp_proc_table *procs);

sp_socket sp_socket_open(int af, int type, int protocol, uint32_t catalog_id, uint32_t flags,
			 int *err);
int sp_bind(sp_socket s, const struct sockaddr *name, int namelen, int *err);
int sp_listen(sp_socket s, int backlog, int *err);
sp_socket sp_accept(sp_socket s, struct sockaddr *addr, int *addrlen, sp_condition_fn cond,
		    uintptr_t callback_data, int *err);
int sp_connect(sp_socket s, const struct sockaddr *name, int namelen, int *err);
int sp_event_select(sp_socket s, sp_event event, int32_t events, int *err);
int sp_enum_network_events(sp_socket s, sp_event event, struct sp_network_events *ne, int *err);
int sp_get_sock_name(sp_socket s, struct sockaddr *name, int *namelen, int *err);
int sp_get_sock_opt(sp_socket s, int level, int optname, char *optval, int *optlen, int *err);
int sp_set_sock_opt(sp_socket s, int level, int optname, const char *optval, int optlen, int *err);
int sp_ioctl(sp_socket s, uint32_t code, void *in, uint32_t in_len, void *out, uint32_t out_len,
	     uint32_t *bytes, struct sp_overlapped *ov, sp_completion_fn cr,
	     struct sp_thread_id *tid, int *err);
int sp_send(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes, uint32_t flags,
	    struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err);
int sp_recv(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes, uint32_t *flags,
	    struct sp_overlapped *ov, sp_completion_fn cr, struct sp_thread_id *tid, int *err);
int sp_get_overlapped_result(sp_socket s, struct sp_overlapped *ov, uint32_t *bytes, int wait,
			     uint32_t *flags, int *err);
int sp_close_socket(sp_socket s, int *err);
int sp_cleanup(int *err);

#endif
