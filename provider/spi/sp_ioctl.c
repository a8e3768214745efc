/* SPDX-License-Identifier: BSD-2-Clause */
/* The proc table, WSPIoctl: the extension functions by GUID, the address list. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sp_internal.h"

void sp_spi_fill_procs(struct sp_proc_table *p)
{
	*p = (struct sp_proc_table){
		.accept = sp_accept,
		.bind = sp_bind,
		.cleanup = sp_cleanup,
		.close_socket = sp_close_socket,
		.connect = sp_connect,
		.enum_network_events = sp_enum_network_events,
		.event_select = sp_event_select,
		.get_overlapped_result = sp_get_overlapped_result,
		.get_sock_name = sp_get_sock_name,
		.get_sock_opt = sp_get_sock_opt,
		.ioctl = sp_ioctl,
		.listen = sp_listen,
		.recv = sp_recv,
		.send = sp_send,
		.set_sock_opt = sp_set_sock_opt,
		.socket = sp_socket_open,
		.duplicate_socket = sp_duplicate_socket,
		.socket_from_info = sp_socket_from_info,
	};
}

/* Any function pointer type converts to another and back (C11 6.3.2.3). */
typedef void (*sp_fn)(void);

static sp_fn extension(const struct sp_guid *g)
{
	static const struct {
		const struct sp_guid *guid;
		sp_fn fn;
	} table[] = {
		{ &sp_guid_register_memory, (sp_fn)sp_register_memory },
		{ &sp_guid_deregister_memory, (sp_fn)sp_deregister_memory },
		{ &sp_guid_register_rdma_memory, (sp_fn)sp_register_rdma_memory },
		{ &sp_guid_deregister_rdma_memory, (sp_fn)sp_deregister_rdma_memory },
		{ &sp_guid_rdma_write, (sp_fn)sp_rdma_write },
		{ &sp_guid_rdma_read, (sp_fn)sp_rdma_read },
		{ &sp_guid_memory_registration_cache_callback,
		  (sp_fn)sp_memory_registration_cache_callback },
		{ &sp_guid_stats_query, (sp_fn)sp_stats_query },
		{ &sp_guid_progress, (sp_fn)sp_progress_app },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (!memcmp(g, table[i].guid, sizeof(*g)))
			return table[i].fn;
	return NULL;
}

/*
 * The subnets the SAN serves: SANPROV_SPI_ADDRESSES (a comma-separated
 * list of IPv4 and IPv6 addresses), else the loopback address on the
 * emulated NIC, else none.
 */
static int addresses(struct sockaddr_storage *out, int max)
{
	const char *env = getenv("SANPROV_SPI_ADDRESSES");
	char buf[512], *save = NULL, *tok;
	int n = 0;

	if (!env)
		env = !strcmp(sp_prov.dev->ops->name, "softnic") ? "127.0.0.1" : "";
	if (strlen(env) >= sizeof(buf))
		return 0;
	strcpy(buf, env);
	for (tok = strtok_r(buf, ", ", &save); tok && n < max; tok = strtok_r(NULL, ", ", &save)) {
		struct sockaddr_in *in = (struct sockaddr_in *)&out[n];
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out[n];

		memset(&out[n], 0, sizeof(out[n]));
		if (inet_pton(AF_INET, tok, &in->sin_addr) == 1) {
			in->sin_family = AF_INET;
			n++;
		} else if (inet_pton(AF_INET6, tok, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			n++;
		}
	}
	return n;
}

static int address_list(void *out, uint32_t out_len, uint32_t *bytes)
{
	struct sockaddr_storage a[16];
	int n = addresses(a, 16);
	size_t head = offsetof(struct sp_socket_address_list, address) +
		      (size_t)(n ? n : 1) * sizeof(struct sp_socket_address);
	size_t need = head;
	struct sp_socket_address_list *l = out;
	char *p;

	for (int i = 0; i < n; i++)
		need += a[i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						   : sizeof(struct sockaddr_in);
	*bytes = (uint32_t)need;
	if (!out || out_len < need)
		return SP_WSAEFAULT;
	/* The addresses follow the list in the caller's buffer, as Winsock lays it out. */
	memset(out, 0, need);
	l->count = n;
	p = (char *)out + head;
	for (int i = 0; i < n; i++) {
		size_t len = a[i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							: sizeof(struct sockaddr_in);
		memcpy(p, &a[i], len);
		l->address[i].sockaddr = (struct sockaddr *)p;
		l->address[i].len = (int32_t)len;
		p += len;
	}
	return 0;
}

int sp_ioctl(sp_socket s, uint32_t code, void *in, uint32_t in_len, void *out, uint32_t out_len,
	     uint32_t *bytes, struct sp_overlapped *ov, sp_completion_fn cr,
	     struct sp_thread_id *tid, int *err)
{
	uint32_t dummy;
	int ret;

	(void)ov, (void)cr, (void)tid;
	if (!bytes)
		bytes = &dummy;
	*bytes = 0;
	switch (code) {
	case SP_SIO_GET_EXTENSION_FUNCTION_POINTER: {
		/* The socket of this query is not a real one: it is not looked up. */
		struct sp_guid g;
		sp_fn fn;

		(void)s;
		if (!in || in_len < sizeof(g) || !out || out_len < sizeof(fn))
			return sp_fail(err, SP_WSAEFAULT);
		memcpy(&g, in, sizeof(g));
		fn = extension(&g);
		if (!fn)
			return sp_fail(err, SP_WSAEOPNOTSUPP);
		memcpy(out, &fn, sizeof(fn));
		*bytes = sizeof(fn);
		return 0;
	}
	case SP_SIO_ADDRESS_LIST_QUERY: {
		struct sp_sock *so = sp_sock_get(s, err);

		if (!so)
			return SP_SOCKET_ERROR;
		sp_sock_put(so);
		ret = address_list(out, out_len, bytes);
		return ret ? sp_fail(err, ret) : 0;
	}
	default:
		return sp_fail(err, SP_WSAEINVAL);
	}
}
