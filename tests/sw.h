/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A stand-in for the Windows Sockets switch: it loads the provider library
 * through its WSPStartupEx, serves the up-calls (socket handles, overlapped
 * completions) and fetches the SAN extension functions by GUID.  On top,
 * sw_sess runs the switch's session protocol over one connection: control
 * messages from registered rings, large transfers by RDMA read (or write).
 */
#ifndef SANPROV_TESTS_SW_H
#define SANPROV_TESTS_SW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sp_spi.h"
#include "swc.h"
#include "tfork.h"

struct sw {
	void *dl;
	struct sp_wsp_data data;
	struct sp_proc_table p;
	sp_register_memory_fn register_memory;
	sp_deregister_memory_fn deregister_memory;
	sp_register_rdma_memory_fn register_rdma_memory;
	sp_deregister_rdma_memory_fn deregister_rdma_memory;
	sp_rdma_fn rdma_write;
	sp_rdma_fn rdma_read;
	sp_cache_callback_fn cache_callback;
};

/* Load the library (SANPROV_TEST_SPI_LIBRARY), start it, fetch the extensions: 0 or an error. */
int sw_load(struct sw *sw);
/* The same with a provider linked into the program (its sp_wsp_startup_ex). */
typedef int (*sw_startup_fn)(uint16_t version, struct sp_wsp_data *data,
			     const struct sp_upcalls *upcalls, struct sp_proc_table *procs);
int sw_start(struct sw *sw, sw_startup_fn startup);
void sw_unload(struct sw *sw);

/* Up-call bookkeeping the tests look at. */
unsigned int sw_open_handles(void);
unsigned long sw_upcall_completions(void);
/* Call fn on every completion up-call, before the event is signalled (NULL: none). */
void sw_on_complete(void (*fn)(sp_socket s, struct sp_overlapped *ov, uint32_t error,
			       uint32_t bytes));

/* An overlapped structure with an eventfd; no_upcall sets bit 0 of the event. */
struct sw_ov {
	struct sp_overlapped ov;
	int fd;
};
void sw_ov_init(struct sw_ov *o, bool no_upcall);
void sw_ov_fini(struct sw_ov *o);
/*
 * Wait for the operation (up to timeout_ms): through the event when the
 * provider up-calls, else by polling get_overlapped_result.  Returns the
 * operation's WSA error (0: success), ETIMEDOUT as -1.
 */
int sw_ov_wait(struct sw *sw, sp_socket s, struct sw_ov *o, uint32_t *bytes, int timeout_ms);

/* Post a receive of len bytes of buf (handle h), polled or up-called: 0 or its WSA error. */
int sw_post_recv(struct sw *sw, sp_socket s, char *buf, uint32_t len, void *h, struct sw_ov *o,
		 bool polled);
/* Send len bytes of buf (handle h), polled, and wait for it: 0 or the WSA error. */
int sw_send_wait(struct sw *sw, sp_socket s, char *buf, uint32_t len, void *h);

/* A listening socket on the test address and a free port; its address in *sin. */
sp_socket sw_listen(struct sw *sw, struct sockaddr_in *sin);
/* Connect a new socket to sin (blocking); SP_INVALID_SOCKET and *err on failure. */
sp_socket sw_connect(struct sw *sw, const struct sockaddr_in *sin, int *err);
/* A connected pair in this process: *c connects, *a is accepted. */
void sw_pair(struct sw *sw, sp_socket *c, sp_socket *a);

/* The provider's entry points as the switch core (shim/core/swc.h) takes them. */
void sw_spi(struct sw *sw, struct swc_spi *spi);
/* Up-call completion for the switch core: eventfd events the up-calls signal. */
extern const struct swc_events sw_events;

#endif
