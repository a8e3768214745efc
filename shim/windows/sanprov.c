/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov.dll: the SAN service provider as the Windows Sockets switch
 * loads it.  Its one export, WSPStartupEx, starts the portable provider
 * (provider/sp_spi.h) and fills the switch's WSPPROC_TABLE with thin
 * adapters.  The portable types are laid out as the Windows ones (checked
 * below), and a provider built for Windows uses Windows' own constants
 * (AF_INET6, FD_*, WSAE*), so the adapters only change calling shapes:
 * the extension functions need none and are handed out as they are.
 */
/* winsock2.h must come before windows.h. */
#include <winsock2.h>
#include <ws2spi.h>

#include <ddk/ws2san.h>
#include <stddef.h>
#include <string.h>
#include <windows.h>

#include "sp_spi.h"

#define SAME_LAYOUT(WinType, SpType, WinField, SpField)                                            \
	_Static_assert(offsetof(WinType, WinField) == offsetof(SpType, SpField),                   \
		       #WinType "." #WinField)

_Static_assert(sizeof(WSABUFEX) == sizeof(struct sp_wsabufex), "WSABUFEX");
SAME_LAYOUT(WSABUFEX, struct sp_wsabufex, len, len);
SAME_LAYOUT(WSABUFEX, struct sp_wsabufex, buf, buf);
SAME_LAYOUT(WSABUFEX, struct sp_wsabufex, handle, handle);
_Static_assert(sizeof(WSAOVERLAPPED) == sizeof(struct sp_overlapped), "WSAOVERLAPPED");
SAME_LAYOUT(WSAOVERLAPPED, struct sp_overlapped, Internal, internal);
SAME_LAYOUT(WSAOVERLAPPED, struct sp_overlapped, InternalHigh, internal_high);
SAME_LAYOUT(WSAOVERLAPPED, struct sp_overlapped, hEvent, event);
_Static_assert(sizeof(WSANETWORKEVENTS) == sizeof(struct sp_network_events), "WSANETWORKEVENTS");
SAME_LAYOUT(WSANETWORKEVENTS, struct sp_network_events, iErrorCode, error_code);
_Static_assert(sizeof(GUID) == sizeof(struct sp_guid), "GUID");
_Static_assert(sizeof(SOCKET_ADDRESS) == sizeof(struct sp_socket_address), "SOCKET_ADDRESS");
SAME_LAYOUT(SOCKET_ADDRESS_LIST, struct sp_socket_address_list, Address, address);
_Static_assert(sizeof(WSATHREADID) == sizeof(struct sp_thread_id), "WSATHREADID");
_Static_assert(SO_MAX_RDMA_SIZE == SP_SO_MAX_RDMA_SIZE &&
		   SO_RDMA_THRESHOLD_SIZE == SP_SO_RDMA_THRESHOLD_SIZE,
	       "SAN socket options");
_Static_assert(MEM_READ == SP_MEM_READ && MEM_WRITE == SP_MEM_WRITE, "MEM_*");
_Static_assert(SIO_GET_EXTENSION_FUNCTION_POINTER == SP_SIO_GET_EXTENSION_FUNCTION_POINTER &&
		   SIO_ADDRESS_LIST_QUERY == SP_SIO_ADDRESS_LIST_QUERY,
	       "SIO_*");
_Static_assert(FD_ACCEPT == SP_FD_ACCEPT && FD_CONNECT == SP_FD_CONNECT && FD_CLOSE == SP_FD_CLOSE,
	       "FD_*");
_Static_assert(WSAENOBUFS == SP_WSAENOBUFS && WSA_IO_PENDING == SP_WSA_IO_PENDING &&
		   WSAEOPNOTSUPP == SP_WSAEOPNOTSUPP && WSAETIMEDOUT == SP_WSAETIMEDOUT,
	       "WSAE*");

static WSPUPCALLTABLEEX Upcalls;
/* Startups and cleanups, in step with the provider's count: the first startup sets Upcalls. */
static SRWLOCK StartupLock = SRWLOCK_INIT;
static unsigned int Startups;
static struct sp_proc_table Procs;

/* Up-calls, portable shape to the switch's. */

static sp_socket UpCreateSocketHandle(uint32_t CatalogId, uintptr_t Context, int *Err)
{
	return Upcalls.lpWPUCreateSocketHandle(CatalogId, Context, Err);
}

static int UpCloseSocketHandle(sp_socket s, int *Err)
{
	return Upcalls.lpWPUCloseSocketHandle(s, Err);
}

static int UpQuerySocketHandleContext(sp_socket s, uintptr_t *Context, int *Err)
{
	DWORD_PTR c = 0;
	int Ret = Upcalls.lpWPUQuerySocketHandleContext(s, &c, Err);

	*Context = c;
	return Ret;
}

static int UpCompleteOverlappedRequest(sp_socket s, struct sp_overlapped *Ov, uint32_t Error,
				       uint32_t Bytes, int *Err)
{
	return Upcalls.lpWPUCompleteOverlappedRequest(s, (LPWSAOVERLAPPED)Ov, Error, Bytes, Err);
}

static const struct sp_upcalls PortableUpcalls = {
	.create_socket_handle = UpCreateSocketHandle,
	.close_socket_handle = UpCloseSocketHandle,
	.query_socket_handle_context = UpQuerySocketHandleContext,
	.complete_overlapped_request = UpCompleteOverlappedRequest,
};

/* The proc table, the switch's shape to the portable one. */

/* The switch's condition function, called with the caller's address. */
struct Condition {
	LPCONDITIONPROC Proc;
	DWORD_PTR Data;
};

static int CallCondition(const struct sockaddr *Caller, int CallerLen, uintptr_t Data)
{
	struct Condition *c = (struct Condition *)Data;
	WSABUF CallerId = { (u_long)CallerLen, (char *)Caller };
	GROUP g = 0;

	switch (c->Proc(&CallerId, NULL, NULL, NULL, NULL, NULL, &g, c->Data)) {
	case CF_ACCEPT:
		return SP_CF_ACCEPT;
	case CF_DEFER:
		return SP_CF_DEFER;
	default:
		return SP_CF_REJECT;
	}
}

static SOCKET WSPAPI ShimAccept(SOCKET s, struct sockaddr *Addr, LPINT AddrLen,
				LPCONDITIONPROC Condition, DWORD_PTR CallbackData, LPINT Err)
{
	struct Condition c = { Condition, CallbackData };

	return Procs.accept(s, Addr, AddrLen, Condition ? CallCondition : NULL, (uintptr_t)&c, Err);
}

static int WSPAPI ShimBind(SOCKET s, const struct sockaddr *Name, int NameLen, LPINT Err)
{
	return Procs.bind(s, Name, NameLen, Err);
}

static int WSPAPI ShimCleanup(LPINT Err)
{
	int Ret;

	AcquireSRWLockExclusive(&StartupLock);
	if (!Startups) {
		*Err = WSANOTINITIALISED;
		Ret = SOCKET_ERROR;
	} else if (!(Ret = Procs.cleanup(Err))) {
		Startups--;
	}
	ReleaseSRWLockExclusive(&StartupLock);
	return Ret;
}

static int WSPAPI ShimCloseSocket(SOCKET s, LPINT Err)
{
	return Procs.close_socket(s, Err);
}

static int WSPAPI ShimConnect(SOCKET s, const struct sockaddr *Name, int NameLen,
			      LPWSABUF CallerData, LPWSABUF CalleeData, LPQOS SQos, LPQOS GQos,
			      LPINT Err)
{
	/* Connect data and QOS are not carried over a SAN. */
	if ((CallerData && CallerData->len) || (CalleeData && CalleeData->len) || SQos || GQos) {
		*Err = WSAEOPNOTSUPP;
		return SOCKET_ERROR;
	}
	return Procs.connect(s, Name, NameLen, Err);
}

static int WSPAPI ShimEnumNetworkEvents(SOCKET s, WSAEVENT Event, LPWSANETWORKEVENTS Events,
					LPINT Err)
{
	return Procs.enum_network_events(s, (sp_event)Event, (struct sp_network_events *)Events,
					 Err);
}

static int WSPAPI ShimEventSelect(SOCKET s, WSAEVENT Event, __LONG32 NetworkEvents, LPINT Err)
{
	return Procs.event_select(s, (sp_event)Event, NetworkEvents, Err);
}

static WINBOOL WSPAPI ShimGetOverlappedResult(SOCKET s, LPWSAOVERLAPPED Ov, LPDWORD Bytes,
					      WINBOOL Wait, LPDWORD Flags, LPINT Err)
{
	uint32_t b = 0, f = 0;
	int Ret = Procs.get_overlapped_result(s, (struct sp_overlapped *)Ov, &b, Wait, &f, Err);

	if (Bytes)
		*Bytes = b;
	if (Flags)
		*Flags = f;
	return Ret ? FALSE : TRUE;
}

static int WSPAPI ShimGetSockName(SOCKET s, struct sockaddr *Name, LPINT NameLen, LPINT Err)
{
	return Procs.get_sock_name(s, Name, NameLen, Err);
}

static int WSPAPI ShimGetSockOpt(SOCKET s, int Level, int OptName, char *OptVal, LPINT OptLen,
				 LPINT Err)
{
	return Procs.get_sock_opt(s, Level, OptName, OptVal, OptLen, Err);
}

static int WSPAPI ShimSetSockOpt(SOCKET s, int Level, int OptName, const char *OptVal, int OptLen,
				 LPINT Err)
{
	return Procs.set_sock_opt(s, Level, OptName, OptVal, OptLen, Err);
}

static int WSPAPI ShimIoctl(SOCKET s, DWORD Code, LPVOID In, DWORD InLen, LPVOID Out, DWORD OutLen,
			    LPDWORD Bytes, LPWSAOVERLAPPED Ov,
			    LPWSAOVERLAPPED_COMPLETION_ROUTINE Routine, LPWSATHREADID ThreadId,
			    LPINT Err)
{
	uint32_t b = 0;
	int Ret;

	/* The portable extension functions have the SAN functions' exact shapes. */
	Ret = Procs.ioctl(s, Code, In, InLen, Out, OutLen, &b, (struct sp_overlapped *)Ov,
			  (sp_completion_fn)Routine, (struct sp_thread_id *)ThreadId, Err);
	if (Bytes)
		*Bytes = b;
	return Ret;
}

static int WSPAPI ShimListen(SOCKET s, int Backlog, LPINT Err)
{
	return Procs.listen(s, Backlog, Err);
}

/* A SAN provider's send and receive buffers are WSABUFEX, whatever the prototype says. */
static int WSPAPI ShimRecv(SOCKET s, LPWSABUF Buffers, DWORD Count, LPDWORD Received, LPDWORD Flags,
			   LPWSAOVERLAPPED Ov, LPWSAOVERLAPPED_COMPLETION_ROUTINE Routine,
			   LPWSATHREADID ThreadId, LPINT Err)
{
	uint32_t b = 0, f = Flags ? *Flags : 0;
	int Ret =
	    Procs.recv(s, (struct sp_wsabufex *)Buffers, Count, &b, &f, (struct sp_overlapped *)Ov,
		       (sp_completion_fn)Routine, (struct sp_thread_id *)ThreadId, Err);

	if (Received)
		*Received = b;
	if (Flags)
		*Flags = f;
	return Ret;
}

static int WSPAPI ShimSend(SOCKET s, LPWSABUF Buffers, DWORD Count, LPDWORD Sent, DWORD Flags,
			   LPWSAOVERLAPPED Ov, LPWSAOVERLAPPED_COMPLETION_ROUTINE Routine,
			   LPWSATHREADID ThreadId, LPINT Err)
{
	uint32_t b = 0;
	int Ret = Procs.send(s, (struct sp_wsabufex *)Buffers, Count, &b, Flags,
			     (struct sp_overlapped *)Ov, (sp_completion_fn)Routine,
			     (struct sp_thread_id *)ThreadId, Err);

	if (Sent)
		*Sent = b;
	return Ret;
}

static SOCKET WSPAPI ShimSocket(int Af, int Type, int Protocol, LPWSAPROTOCOL_INFOW Info, GROUP g,
				DWORD Flags, LPINT Err)
{
	(void)g;
	return Procs.socket(Af, Type, Protocol, Info ? Info->dwCatalogEntryId : 0, Flags, Err);
}

/* What a SAN socket does not do: the switch handles these itself. */

static int WSPAPI ShimDuplicateSocket(SOCKET s, DWORD ProcessId, LPWSAPROTOCOL_INFOW Info,
				      LPINT Err)
{
	(void)s, (void)ProcessId, (void)Info;
	*Err = WSAEOPNOTSUPP;
	return SOCKET_ERROR;
}

static WINBOOL WSPAPI ShimGetQOSByName(SOCKET s, LPWSABUF Name, LPQOS Qos, LPINT Err)
{
	(void)s, (void)Name, (void)Qos;
	*Err = WSAEOPNOTSUPP;
	return FALSE;
}

static int WSPAPI ShimShutdown(SOCKET s, int How, LPINT Err)
{
	(void)s, (void)How;
	*Err = WSAEOPNOTSUPP;
	return SOCKET_ERROR;
}

int WSPAPI WSPStartupEx(WORD Version, LPWSPDATA Data, LPWSAPROTOCOL_INFOW Info,
			LPWSPUPCALLTABLEEX UpcallTable, LPWSPPROC_TABLE ProcTable)
{
	struct sp_wsp_data d;
	int Ret;

	(void)Info;
	if (!Data || !UpcallTable || !ProcTable)
		return WSAEFAULT;
	/* The up-calls the provider makes: a table without them is refused, not used. */
	if (!UpcallTable->lpWPUCreateSocketHandle || !UpcallTable->lpWPUCloseSocketHandle ||
	    !UpcallTable->lpWPUQuerySocketHandleContext ||
	    !UpcallTable->lpWPUCompleteOverlappedRequest)
		return WSAEFAULT;
	/*
	 * Only the first startup's table is used, as the provider keeps the
	 * first one; a refused startup (a version, a failed device) changes
	 * nothing that later calls see.
	 */
	AcquireSRWLockExclusive(&StartupLock);
	if (!Startups) {
		WSPUPCALLTABLEEX Saved = Upcalls;

		Upcalls = *UpcallTable;
		Ret = sp_wsp_startup_ex(Version, &d, &PortableUpcalls, &Procs);
		if (Ret)
			Upcalls = Saved;
	} else {
		Ret = sp_wsp_startup_ex(Version, &d, &PortableUpcalls, &Procs);
	}
	if (!Ret)
		Startups++;
	ReleaseSRWLockExclusive(&StartupLock);
	if (Ret)
		return Ret;
	Data->wVersion = d.version;
	Data->wHighVersion = d.high_version;
	MultiByteToWideChar(CP_UTF8, 0, d.description, -1, Data->szDescription,
			    WSADESCRIPTION_LEN + 1);
	memset(ProcTable, 0, sizeof(*ProcTable));
	ProcTable->lpWSPAccept = ShimAccept;
	ProcTable->lpWSPBind = ShimBind;
	ProcTable->lpWSPCleanup = ShimCleanup;
	ProcTable->lpWSPCloseSocket = ShimCloseSocket;
	ProcTable->lpWSPConnect = ShimConnect;
	ProcTable->lpWSPDuplicateSocket = ShimDuplicateSocket;
	ProcTable->lpWSPEnumNetworkEvents = ShimEnumNetworkEvents;
	ProcTable->lpWSPEventSelect = ShimEventSelect;
	ProcTable->lpWSPGetOverlappedResult = ShimGetOverlappedResult;
	ProcTable->lpWSPGetSockName = ShimGetSockName;
	ProcTable->lpWSPGetSockOpt = ShimGetSockOpt;
	ProcTable->lpWSPGetQOSByName = ShimGetQOSByName;
	ProcTable->lpWSPIoctl = ShimIoctl;
	ProcTable->lpWSPListen = ShimListen;
	ProcTable->lpWSPRecv = ShimRecv;
	ProcTable->lpWSPSend = ShimSend;
	ProcTable->lpWSPSetSockOpt = ShimSetSockOpt;
	ProcTable->lpWSPShutdown = ShimShutdown;
	ProcTable->lpWSPSocket = ShimSocket;
	return 0;
}
