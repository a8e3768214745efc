/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The SAN service provider interface in portable C.
 *
 * The types mirror those of <ws2spi.h> and <ddk/ws2san.h> member for member
 * (Windows' u_long and DWORD are 32 bits, HANDLE and ULONG_PTR pointer-wide),
 * and the numbers (error codes, option names, network event bits, flags)
 * are Windows' own, so the Windows shim passes them through unchanged.  The
 * names are the project's: the shim maps WSPRegisterMemory to
 * sp_proc_table.register_memory and so on.
 *
 * Every call that can fail returns SP_SOCKET_ERROR (or SP_INVALID_SOCKET,
 * or NULL) and stores a WSA error code in *err, as the SPI does.
 */
#ifndef SANPROV_SP_SPI_H
#define SANPROV_SP_SPI_H

#include <stddef.h>
#include <stdint.h>

/* Socket addresses of this OS. */
#include "vb_os.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uintptr_t sp_socket;
#define SP_INVALID_SOCKET (~(sp_socket)0)
#define SP_SOCKET_ERROR (-1)

/*
 * Event objects are the host's: a HANDLE on Windows, an eventfd on Linux.
 * A HANDLE is a multiple of 4, which leaves bit 0 to the overlapped
 * structure's no-up-call flag; an eventfd is passed the same way, as
 * SP_EVENT_FD(fd).
 */
typedef uintptr_t sp_event;
#define SP_EVENT_FD(fd) (((sp_event)(fd) + 1) << 2)
#define SP_EVENT_TO_FD(ev) ((int)(((ev) >> 2) - 1))

/* Error codes (winerror.h / winsock2.h values). */
enum {
	SP_WSA_INVALID_HANDLE = 6,
	SP_WSA_INVALID_PARAMETER = 87,
	SP_WSA_OPERATION_ABORTED = 995,
	SP_WSA_IO_INCOMPLETE = 996,
	SP_WSA_IO_PENDING = 997,
	SP_WSAEINTR = 10004,
	SP_WSAEBADF = 10009,
	SP_WSAEACCES = 10013,
	SP_WSAEFAULT = 10014,
	SP_WSAEINVAL = 10022,
	SP_WSAEMFILE = 10024,
	SP_WSAEWOULDBLOCK = 10035,
	SP_WSAEINPROGRESS = 10036,
	SP_WSAEALREADY = 10037,
	SP_WSAENOTSOCK = 10038,
	SP_WSAEDESTADDRREQ = 10039,
	SP_WSAEMSGSIZE = 10040,
	SP_WSAEPROTOTYPE = 10041,
	SP_WSAENOPROTOOPT = 10042,
	SP_WSAEPROTONOSUPPORT = 10043,
	SP_WSAEOPNOTSUPP = 10045,
	SP_WSAEAFNOSUPPORT = 10047,
	SP_WSAEADDRINUSE = 10048,
	SP_WSAEADDRNOTAVAIL = 10049,
	SP_WSAENETDOWN = 10050,
	SP_WSAENETUNREACH = 10051,
	SP_WSAENETRESET = 10052,
	SP_WSAECONNABORTED = 10053,
	SP_WSAECONNRESET = 10054,
	SP_WSAENOBUFS = 10055,
	SP_WSAEISCONN = 10056,
	SP_WSAENOTCONN = 10057,
	SP_WSAESHUTDOWN = 10058,
	SP_WSAETIMEDOUT = 10060,
	SP_WSAECONNREFUSED = 10061,
	SP_WSAEHOSTUNREACH = 10065,
	SP_WSASYSNOTREADY = 10091,
	SP_WSAVERNOTSUPPORTED = 10092,
	SP_WSANOTINITIALISED = 10093,
	SP_WSAECANCELLED = 10103,
	SP_WSAEPROVIDERFAILEDINIT = 10106,
	SP_WSATRY_AGAIN = 11002,
};

/* The WSA error code for a positive errno value (one table for all calls). */
int sp_wsa_error(int errnum);

struct sp_guid {
	uint32_t data1;
	uint16_t data2;
	uint16_t data3;
	uint8_t data4[8];
};

/* WSABUF and WSABUFEX: the handle is WSPRegisterMemory's. */
struct sp_wsabuf {
	uint32_t len;
	char *buf;
};

struct sp_wsabufex {
	uint32_t len;
	char *buf;
	void *handle;
};

/*
 * WSAOVERLAPPED.  The provider keeps an operation's status in internal and
 * its byte count in internal_high.  When bit 0 of event is set the switch
 * polls get_overlapped_result() and the provider must not up-call.
 */
struct sp_overlapped {
	uintptr_t internal;
	uintptr_t internal_high;
	uint32_t offset;
	uint32_t offset_high;
	sp_event event;
};

#define SP_OV_NO_UPCALL(ov) (((ov)->event & 1u) != 0)

/* internal while the operation runs (STATUS_PENDING). */
#define SP_OV_PENDING 0x103u

/* WSATHREADID */
struct sp_thread_id {
	uintptr_t thread;
	uintptr_t reserved;
};

typedef void (*sp_completion_fn)(uint32_t error, uint32_t bytes, struct sp_overlapped *ov,
				 uint32_t flags);

/* Memory registration flags (ws2san.h). */
#define SP_MEM_READ 1u
#define SP_MEM_WRITE 2u
#define SP_MEM_READWRITE 3u

/* Socket options and levels (winsock2.h / ws2san.h). */
#define SP_SOL_SOCKET 0xffff
#define SP_SO_TYPE 0x1008
#define SP_SO_ERROR 0x1007
#define SP_SO_RCVBUF 0x1002
#define SP_SO_SNDBUF 0x1001
#define SP_SO_MAX_RDMA_SIZE 0x700D
#define SP_SO_RDMA_THRESHOLD_SIZE 0x700E

/* Network events (FD_*). */
#define SP_FD_READ 0x01u
#define SP_FD_WRITE 0x02u
#define SP_FD_OOB 0x04u
#define SP_FD_ACCEPT 0x08u
#define SP_FD_CONNECT 0x10u
#define SP_FD_CLOSE 0x20u
#define SP_FD_MAX_EVENTS 10

/* WSANETWORKEVENTS */
struct sp_network_events {
	int32_t network_events;
	int32_t error_code[SP_FD_MAX_EVENTS];
};

#define SP_FD_READ_BIT 0
#define SP_FD_WRITE_BIT 1
#define SP_FD_ACCEPT_BIT 3
#define SP_FD_CONNECT_BIT 4
#define SP_FD_CLOSE_BIT 5

/* WSAIoctl codes the switch uses. */
#define SP_SIO_GET_EXTENSION_FUNCTION_POINTER 0xC8000006u
#define SP_SIO_ADDRESS_LIST_QUERY 0x48000016u

/* SOCKET_ADDRESS and SOCKET_ADDRESS_LIST (SIO_ADDRESS_LIST_QUERY's answer). */
struct sp_socket_address {
	struct sockaddr *sockaddr;
	int32_t len;
};

struct sp_socket_address_list {
	int32_t count;
	struct sp_socket_address address[1];
};

/* The accept condition function's answers. */
#define SP_CF_ACCEPT 0
#define SP_CF_REJECT 1
#define SP_CF_DEFER 2

/*
 * The condition function of accept(): the caller's address as a buffer
 * (the other WSABUF arguments of Windows' LPCONDITIONPROC are always empty
 * here).  Returns SP_CF_ACCEPT, SP_CF_REJECT, or SP_CF_DEFER (the request
 * stays pending: accept() answers WSATRY_AGAIN and offers it again next).
 */
typedef int (*sp_condition_fn)(const struct sockaddr *caller, int caller_len,
			       uintptr_t callback_data);

/* The extension functions' GUIDs (ws2san.h). */
extern const struct sp_guid sp_guid_register_memory;
extern const struct sp_guid sp_guid_deregister_memory;
extern const struct sp_guid sp_guid_register_rdma_memory;
extern const struct sp_guid sp_guid_deregister_rdma_memory;
extern const struct sp_guid sp_guid_rdma_write;
extern const struct sp_guid sp_guid_rdma_read;
extern const struct sp_guid sp_guid_memory_registration_cache_callback;
/* sanprov's own: sp_stats_query_fn, sp_progress_fn. */
extern const struct sp_guid sp_guid_stats_query;
extern const struct sp_guid sp_guid_progress;

/* The SAN extension functions, as the GUID query returns them. */
typedef void *(*sp_register_memory_fn)(sp_socket s, void *buf, uint32_t len, uint32_t flags,
				       int *err);
typedef int (*sp_deregister_memory_fn)(sp_socket s, void *handle, int *err);
typedef int (*sp_register_rdma_memory_fn)(sp_socket s, void *buf, uint32_t len, uint32_t flags,
					  void *desc, uint32_t *desc_len, int *err);
typedef int (*sp_deregister_rdma_memory_fn)(sp_socket s, void *desc, uint32_t desc_len, int *err);
typedef int (*sp_rdma_fn)(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, void *target_desc,
			  uint32_t target_desc_len, uint32_t target_offset, uint32_t *bytes,
			  uint32_t flags, struct sp_overlapped *ov, sp_completion_fn cr,
			  struct sp_thread_id *tid, int *err);
typedef int (*sp_cache_callback_fn)(void *addr, size_t size, int *err);

/*
 * The provider's counters (docs/spi-stats.md says what increments each):
 * counts since the provider started, summed over every socket, closed
 * ones included, and over every socket's registration cache; the fields
 * the document calls gauges are values now.  Every field after size is a
 * uint64_t.  A later version only appends fields.
 */
#define SP_STATS_VERSION 2

/* The kinds of overlapped operation, the index of the per-kind arrays. */
enum { SP_STATS_SEND, SP_STATS_RECV, SP_STATS_RDMA_WRITE, SP_STATS_RDMA_READ, SP_STATS_KINDS };

struct sp_stats {
	uint32_t version; /* SP_STATS_VERSION */
	uint32_t size;	  /* bytes filled in */

	/* Sockets and connections. */
	uint64_t sockets_opened;
	uint64_t sockets_closed;
	uint64_t connects;
	uint64_t connects_ok;
	uint64_t connect_errors;
	uint64_t accepts;
	uint64_t accept_rejected;
	uint64_t accept_deferred;
	uint64_t accept_foreign;
	uint64_t accept_errors;
	uint64_t cache_callbacks;
	uint64_t progress_loops;
	uint64_t dumps;

	/* Operations, completions and registrations. */
	uint64_t ops_posted[SP_STATS_KINDS];
	uint64_t ops_completed[SP_STATS_KINDS];
	uint64_t ops_failed[SP_STATS_KINDS];
	uint64_t ops_aborted[SP_STATS_KINDS];
	uint64_t bytes_completed[SP_STATS_KINDS];
	uint64_t ops_refused;
	uint64_t delivered_by_progress;
	uint64_t delivered_by_caller;
	uint64_t upcalls;
	uint64_t mem_registrations;
	uint64_t mem_reuses;
	uint64_t mem_register_errors;
	uint64_t mem_deregistrations;
	uint64_t mem_deregister_errors;
	uint64_t mem_handles_freed;
	uint64_t rdma_registrations;
	uint64_t rdma_size_probes;
	uint64_t rdma_register_errors;
	uint64_t rdma_deregistrations;
	uint64_t rdma_deregister_errors;
	uint64_t rdma_regions_freed;

	/* Gauges. */
	uint64_t sockets_open;
	uint64_t ops_outstanding;
	uint64_t mem_handles;
	uint64_t rdma_regions;

	/* The registration caches (struct sp_rcache_stats, summed). */
	uint64_t rcache_hits;
	uint64_t rcache_misses;
	uint64_t rcache_merges;
	uint64_t rcache_unmerged_retries;
	uint64_t rcache_evictions;
	uint64_t rcache_invalidations;
	uint64_t rcache_invalidated;
	uint64_t rcache_registrations;
	uint64_t rcache_registration_errors;
	uint64_t rcache_deregistrations;
	uint64_t rcache_no_buffers;
	uint64_t rcache_uncached;
	uint64_t rcache_regions;	/* gauge */
	uint64_t rcache_cached_regions; /* gauge */
	uint64_t rcache_bytes_pinned;	/* gauge */

	/* Version 2. */
	uint64_t rdma_revoked;		/* RDMA registrations whose memory changed under them */
	uint64_t rcache_dereg_failures; /* deregistrations the NIC refused (kept, tried again) */
	uint64_t rcache_dereg_pending;	/* gauge: of those, still registered */
};

/*
 * Fill *out and set *len to the bytes filled.  *len is the room at out:
 * with less than sizeof(struct sp_stats) (or out NULL) the answer is
 * WSAEFAULT and *len the size it takes, as WSPRegisterRdmaMemory's
 * descriptor probe.  WSANOTINITIALISED without a started provider.  Takes
 * no lock the data path takes, except each socket's and each cache's for
 * a moment.
 */
typedef int (*sp_stats_query_fn)(struct sp_stats *out, uint32_t *len, int *err);

/*
 * One round of completion processing on the calling thread, for a switch
 * that spins before it sleeps (the Linux switch's epoll_wait): the CQ is
 * polled once and what it held delivered here, the up-calls too when they
 * are made by polling threads (SANPROV_SPI_INLINE_UPCALLS), else by the
 * progress thread.  The progress thread keeps off the CQ meanwhile, as for
 * WSPGetOverlappedResult pollers.  The completions taken (0: none), or
 * SOCKET_ERROR with WSANOTINITIALISED (no started provider) or
 * WSAENETDOWN (a fork child's inherited one).
 */
typedef int (*sp_progress_fn)(int *err);

/* The up-calls the switch gives the provider (WSPUPCALLTABLEEX, the part used). */
struct sp_upcalls {
	sp_socket (*create_socket_handle)(uint32_t catalog_id, uintptr_t context, int *err);
	int (*close_socket_handle)(sp_socket s, int *err);
	int (*query_socket_handle_context)(sp_socket s, uintptr_t *context, int *err);
	int (*complete_overlapped_request)(sp_socket s, struct sp_overlapped *ov, uint32_t error,
					   uint32_t bytes, int *err);
};

/*
 * WSAPROTOCOL_INFOW as WSPDuplicateSocket fills it and WSPSocket takes it
 * (FROM_PROTOCOL_INFO): the catalog entry, the triple, and the provider's
 * own bytes, which name the shared socket.  Windows has one DWORD
 * (dwProviderReserved) there: the Windows shim would keep these bytes in
 * the provider and pass their key.
 */
#define SP_PROTOCOL_INFO_RESERVED 128

struct sp_protocol_info {
	uint32_t catalog_id;
	int32_t af;
	int32_t type;
	int32_t protocol;
	uint32_t process_id; /* the process it was made for */
	uint32_t reserved_len;
	uint8_t provider_reserved[SP_PROTOCOL_INFO_RESERVED];
};

/* WSPPROC_TABLE, the part the switch calls on a SAN provider. */
struct sp_proc_table {
	sp_socket (*accept)(sp_socket s, struct sockaddr *addr, int *addrlen, sp_condition_fn cond,
			    uintptr_t callback_data, int *err);
	int (*bind)(sp_socket s, const struct sockaddr *name, int namelen, int *err);
	int (*cleanup)(int *err);
	int (*close_socket)(sp_socket s, int *err);
	int (*connect)(sp_socket s, const struct sockaddr *name, int namelen, int *err);
	int (*enum_network_events)(sp_socket s, sp_event event, struct sp_network_events *ne,
				   int *err);
	int (*event_select)(sp_socket s, sp_event event, int32_t events, int *err);
	/* 0 when the operation succeeded (Windows: TRUE). */
	int (*get_overlapped_result)(sp_socket s, struct sp_overlapped *ov, uint32_t *bytes,
				     int wait, uint32_t *flags, int *err);
	int (*get_sock_name)(sp_socket s, struct sockaddr *name, int *namelen, int *err);
	int (*get_sock_opt)(sp_socket s, int level, int optname, char *optval, int *optlen,
			    int *err);
	int (*ioctl)(sp_socket s, uint32_t code, void *in, uint32_t in_len, void *out,
		     uint32_t out_len, uint32_t *bytes, struct sp_overlapped *ov,
		     sp_completion_fn cr, struct sp_thread_id *tid, int *err);
	int (*listen)(sp_socket s, int backlog, int *err);
	/* A SAN provider's send and receive buffers are registered: WSABUFEX. */
	int (*recv)(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes,
		    uint32_t *flags, struct sp_overlapped *ov, sp_completion_fn cr,
		    struct sp_thread_id *tid, int *err);
	int (*send)(sp_socket s, struct sp_wsabufex *bufs, uint32_t nbufs, uint32_t *bytes,
		    uint32_t flags, struct sp_overlapped *ov, sp_completion_fn cr,
		    struct sp_thread_id *tid, int *err);
	int (*set_sock_opt)(sp_socket s, int level, int optname, const char *optval, int optlen,
			    int *err);
	sp_socket (*socket)(int af, int type, int protocol, uint32_t catalog_id, uint32_t flags,
			    int *err);
	/*
	 * WSPDuplicateSocket: info for process_id, which turns it into a socket
	 * of its own with socket_from_info.  Listening sockets only (a
	 * connected one: WSAEOPNOTSUPP).  process_id is this process or a
	 * child of it; on Linux the info is also good in the children this
	 * process forks afterwards (they inherit the listener).  Another
	 * process: WSAEINVAL; info NULL: WSAEFAULT.
	 */
	int (*duplicate_socket)(sp_socket s, uint32_t process_id, struct sp_protocol_info *info,
				int *err);
	/*
	 * WSPSocket with the lpProtocolInfo of a duplicate_socket: a new
	 * listening socket on the same listener (each connect request goes to
	 * one of them).  Info made for another process, or damaged: WSAEINVAL.
	 */
	sp_socket (*socket_from_info)(const struct sp_protocol_info *info, uint32_t flags,
				      int *err);
};

/* WSPDATA */
struct sp_wsp_data {
	uint16_t version;
	uint16_t high_version;
	char description[256];
};

#define SP_SPI_VERSION 0x0202 /* 2.2 */

/*
 * WSPStartupEx: check the version, keep the up-calls, fill the data and the
 * proc table.  0 or a WSA error code (returned, as WSPStartupEx does).
 * Every successful startup needs one cleanup.  In a child of fork() the
 * first startup starts a provider of the child's own; the parent's
 * sockets stay the parent's (never used nor released in the child).
 */
int sp_wsp_startup_ex(uint16_t version, struct sp_wsp_data *data, const struct sp_upcalls *upcalls,
		      struct sp_proc_table *procs);

#ifdef __cplusplus
}
#endif

#endif
