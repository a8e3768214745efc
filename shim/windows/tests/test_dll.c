/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov.dll under test (TAP), the way the Windows Sockets switch uses
 * it: loaded by path, started through its one export WSPStartupEx with
 * this program's up-call table, the SAN functions fetched by the GUIDs of
 * <ddk/ws2san.h>, then two sockets connected in this process (softnic) and
 * RDMA between them, with every byte checked.
 *
 *   test_dll.exe PATH-OF-sanprov.dll
 */
/* winsock2.h must come before windows.h. */
#include <winsock2.h>
#include <ws2spi.h>

#include <ddk/ws2san.h>
#include <stdio.h>
#include <string.h>
#include <windows.h>

#include "tap.h"

#define LEN 65536

static WSPPROC_TABLE Procs;

/* The up-calls: socket handles of our own, completions signal the event. */

#define MAX_SOCKETS 64
static DWORD_PTR Contexts[MAX_SOCKETS];
static BOOL Used[MAX_SOCKETS];
static LONG Open, Completions;

static SOCKET WSPAPI UpCreate(DWORD CatalogId, DWORD_PTR Context, LPINT Err)
{
	(void)CatalogId;
	for (int i = 0; i < MAX_SOCKETS; i++) {
		if (!Used[i]) {
			Used[i] = TRUE;
			Contexts[i] = Context;
			InterlockedIncrement(&Open);
			return (SOCKET)(0x1000 + 4 * i);
		}
	}
	*Err = WSAEMFILE;
	return INVALID_SOCKET;
}

static int Index(SOCKET s)
{
	if (s < 0x1000 || (s - 0x1000) % 4 || (s - 0x1000) / 4 >= MAX_SOCKETS)
		return -1;
	return (int)((s - 0x1000) / 4);
}

static int WSPAPI UpClose(SOCKET s, LPINT Err)
{
	int i = Index(s);

	if (i < 0 || !Used[i]) {
		*Err = WSAENOTSOCK;
		return SOCKET_ERROR;
	}
	Used[i] = FALSE;
	InterlockedDecrement(&Open);
	return 0;
}

static int WSPAPI UpQuery(SOCKET s, PDWORD_PTR Context, LPINT Err)
{
	int i = Index(s);

	if (i < 0 || !Used[i]) {
		*Err = WSAENOTSOCK;
		return SOCKET_ERROR;
	}
	*Context = Contexts[i];
	return 0;
}

static int WSPAPI UpComplete(SOCKET s, LPWSAOVERLAPPED Ov, DWORD Error, DWORD Bytes, LPINT Err)
{
	(void)s, (void)Error, (void)Bytes, (void)Err;
	InterlockedIncrement(&Completions);
	if ((DWORD_PTR)Ov->hEvent & 1)
		return 0; /* the provider must not up-call for these: counted, checked */
	SetEvent(Ov->hEvent);
	return 0;
}

/* A second switch's up-calls: never to be used once the first one's are in place. */
static LONG BadCalls;

static SOCKET WSPAPI BadCreate(DWORD CatalogId, DWORD_PTR Context, LPINT Err)
{
	(void)CatalogId, (void)Context;
	InterlockedIncrement(&BadCalls);
	*Err = WSAENOBUFS;
	return INVALID_SOCKET;
}

/* An absolute Linux path as Wine sees it. */
static void WinPath(const char *In, WCHAR *Out, size_t Size)
{
	if (In[0] == '/')
		swprintf(Out, Size, L"Z:%hs", In);
	else
		swprintf(Out, Size, L"%hs", In);
	for (WCHAR *p = Out; *p; p++)
		if (*p == L'/')
			*p = L'\\';
}

/* The names the DLL exports, from its export directory. */
static BOOL ExportsOnlyStartup(HMODULE Dll)
{
	BYTE *Base = (BYTE *)Dll;
	IMAGE_DOS_HEADER *Dos = (IMAGE_DOS_HEADER *)Base;
	IMAGE_NT_HEADERS64 *Nt = (IMAGE_NT_HEADERS64 *)(Base + Dos->e_lfanew);
	IMAGE_DATA_DIRECTORY *Dir = &Nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
	IMAGE_EXPORT_DIRECTORY *Exp;
	DWORD *Names;

	if (!Dir->VirtualAddress)
		return FALSE;
	Exp = (IMAGE_EXPORT_DIRECTORY *)(Base + Dir->VirtualAddress);
	Names = (DWORD *)(Base + Exp->AddressOfNames);
	return Exp->NumberOfNames == 1 && !strcmp((char *)(Base + Names[0]), "WSPStartupEx");
}

static void *Extension(GUID Guid, int *Err)
{
	void *Fn = NULL;
	DWORD Bytes = 0;

	*Err = 0;
	if (Procs.lpWSPIoctl(INVALID_SOCKET, SIO_GET_EXTENSION_FUNCTION_POINTER, &Guid,
			     sizeof(Guid), &Fn, sizeof(Fn), &Bytes, NULL, NULL, NULL, Err))
		return NULL;
	return Bytes == sizeof(Fn) ? Fn : NULL;
}

struct AcceptArg {
	SOCKET Listener, Accepted;
	int Err;
};

static DWORD WINAPI AcceptMain(LPVOID Arg)
{
	struct AcceptArg *a = Arg;

	a->Accepted = Procs.lpWSPAccept(a->Listener, NULL, NULL, NULL, 0, &a->Err);
	return 0;
}

/* Wait for an overlapped operation the provider completes by up-call or by polling. */
static BOOL Finish(SOCKET s, WSAOVERLAPPED *Ov, DWORD *Bytes, BOOL Polled)
{
	DWORD Flags = 0;
	int Err = 0;

	if (!Polled && WaitForSingleObject(Ov->hEvent, 10000) != WAIT_OBJECT_0)
		return FALSE;
	return Procs.lpWSPGetOverlappedResult(s, Ov, Bytes, TRUE, &Flags, &Err);
}

int main(int argc, char **argv)
{
	WCHAR Path[MAX_PATH];
	HMODULE Dll;
	LPWSPSTARTUPEX Startup;
	WSPDATA Data;
	WSAPROTOCOL_INFOW Info;
	WSPUPCALLTABLEEX Up;
	int Err = 0;

	if (argc != 2) {
		printf("1..0 # SKIP usage: test_dll.exe PATH-OF-sanprov.dll\n");
		return 0;
	}
	tap_plan(20);
	WinPath(argv[1], Path, MAX_PATH);
	Dll = LoadLibraryW(Path);
	tap_result(Dll != NULL, "LoadLibrary sanprov.dll");
	if (!Dll)
		return 1;
	tap_result(ExportsOnlyStartup(Dll), "it exports WSPStartupEx and nothing else");
	Startup = (LPWSPSTARTUPEX)(void (*)(void))GetProcAddress(Dll, "WSPStartupEx");

	memset(&Up, 0, sizeof(Up));
	Up.lpWPUCreateSocketHandle = UpCreate;
	Up.lpWPUCloseSocketHandle = UpClose;
	Up.lpWPUQuerySocketHandleContext = UpQuery;
	Up.lpWPUCompleteOverlappedRequest = UpComplete;
	memset(&Info, 0, sizeof(Info));
	Info.dwCatalogEntryId = 1001;
	/* A table without an up-call the provider makes: refused, not used later. */
	WSPUPCALLTABLEEX Partial = Up;
	Partial.lpWPUCompleteOverlappedRequest = NULL;
	tap_result(Startup && Startup(MAKEWORD(2, 2), &Data, &Info, &Partial, &Procs) == WSAEFAULT,
		   "WSPStartupEx without WPUCompleteOverlappedRequest: WSAEFAULT");
	tap_result(Startup && !Startup(MAKEWORD(2, 2), &Data, &Info, &Up, &Procs) &&
		       Data.wVersion == MAKEWORD(2, 2) && Procs.lpWSPSocket && Procs.lpWSPIoctl,
		   "WSPStartupEx 2.2 fills WSPDATA and the proc table");

	/* Every SAN GUID of the header answers; an unknown one is refused. */
	GUID Guids[] = { WSAID_REGISTERMEMORY,
			 WSAID_DEREGISTERMEMORY,
			 WSAID_REGISTERRDMAMEMORY,
			 WSAID_DEREGISTERRDMAMEMORY,
			 WSAID_RDMAWRITE,
			 WSAID_RDMAREAD,
			 WSAID_MEMORYREGISTRATIONCACHECALLBACK };
	void *Fns[7];
	BOOL All = TRUE;
	for (int i = 0; i < 7; i++)
		All &= (Fns[i] = Extension(Guids[i], &Err)) != NULL;
	tap_result(All, "the seven SAN extension functions by their GUIDs");
	GUID Unknown = { 0x12345678, 1, 2, { 3, 4, 5, 6, 7, 8, 9, 10 } };
	tap_result(!Extension(Unknown, &Err) && Err == WSAEOPNOTSUPP,
		   "an unknown GUID: WSAEOPNOTSUPP");
	/* A refused startup (version 1.1) leaves the first switch's up-calls in place. */
	WSPUPCALLTABLEEX Other = Up;
	WSPPROC_TABLE OtherProcs;
	Other.lpWPUCreateSocketHandle = BadCreate;
	int Refused = Startup(MAKEWORD(1, 1), &Data, &Info, &Other, &OtherProcs);
	SOCKET Probe = Procs.lpWSPSocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, &Info, 0, 0, &Err);
	tap_result(Refused == WSAVERNOTSUPPORTED && Probe != INVALID_SOCKET && BadCalls == 0 &&
		       !Procs.lpWSPCloseSocket(Probe, &Err),
		   "a refused WSPStartupEx changes no up-call");
	LPFN_WSPREGISTERMEMORY RegisterMemory = (LPFN_WSPREGISTERMEMORY)(void (*)(void))Fns[0];
	LPFN_WSPDEREGISTERMEMORY DeregisterMemory =
	    (LPFN_WSPDEREGISTERMEMORY)(void (*)(void))Fns[1];
	LPFN_WSPREGISTERRDMAMEMORY RegisterRdma =
	    (LPFN_WSPREGISTERRDMAMEMORY)(void (*)(void))Fns[2];
	LPFN_WSPDEREGISTERRDMAMEMORY DeregisterRdma =
	    (LPFN_WSPDEREGISTERRDMAMEMORY)(void (*)(void))Fns[3];
	LPFN_WSPRDMAWRITE RdmaWrite = (LPFN_WSPRDMAWRITE)(void (*)(void))Fns[4];
	LPFN_WSPRDMAREAD RdmaRead = (LPFN_WSPRDMAREAD)(void (*)(void))Fns[5];
	LPFN_WSPMEMORYREGISTRATIONCACHECALLBACK CacheCallback =
	    (LPFN_WSPMEMORYREGISTRATIONCACHECALLBACK)(void (*)(void))Fns[6];

	/* Two sockets of this process, connected over softnic. */
	struct sockaddr_in Sin = { .sin_family = AF_INET };
	int SinLen = sizeof(Sin);
	struct AcceptArg a = { 0 };
	Sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.Listener = Procs.lpWSPSocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, &Info, 0, 0, &Err);
	BOOL Listening =
	    a.Listener != INVALID_SOCKET &&
	    !Procs.lpWSPBind(a.Listener, (struct sockaddr *)&Sin, sizeof(Sin), &Err) &&
	    !Procs.lpWSPListen(a.Listener, 4, &Err) &&
	    !Procs.lpWSPGetSockName(a.Listener, (struct sockaddr *)&Sin, &SinLen, &Err) &&
	    Sin.sin_port != 0;
	tap_result(Listening, "socket, bind, listen, getsockname");
	HANDLE Thread = CreateThread(NULL, 0, AcceptMain, &a, 0, NULL);
	SOCKET c = Procs.lpWSPSocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, &Info, 0, 0, &Err);
	BOOL Connected =
	    c != INVALID_SOCKET && !Procs.lpWSPConnect(c, (struct sockaddr *)&Sin, sizeof(Sin),
						       NULL, NULL, NULL, NULL, &Err);
	WaitForSingleObject(Thread, 20000);
	CloseHandle(Thread);
	tap_result(Connected && a.Accepted != INVALID_SOCKET, "connect and accept");

	/* Registration: one counted handle per buffer and socket. */
	char *Src = VirtualAlloc(NULL, LEN, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
	char *Dst = VirtualAlloc(NULL, LEN, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
	HANDLE h1 = RegisterMemory(c, Src, LEN, MEM_READWRITE, &Err);
	HANDLE h2 = RegisterMemory(c, Src, LEN, MEM_READWRITE, &Err);
	tap_result(h1 && h1 == h2 && !DeregisterMemory(c, h2, &Err),
		   "WSPRegisterMemory: a counted handle");
	tap_result(!RegisterMemory(c, Src, LEN, 0, &Err) && Err == WSAEINVAL,
		   "bad flags: WSAEINVAL");

	/* The descriptor: probed for its size, then filled. */
	char Desc[128];
	DWORD DescLen = 4;
	tap_result(RegisterRdma(a.Accepted, Dst, LEN, MEM_READWRITE, Desc, &DescLen, &Err) ==
			   SOCKET_ERROR &&
		       Err == WSAEFAULT && DescLen > 4 && DescLen <= sizeof(Desc),
		   "WSPRegisterRdmaMemory: the size probe");
	tap_result(!RegisterRdma(a.Accepted, Dst, LEN, MEM_READWRITE, Desc, &DescLen, &Err),
		   "WSPRegisterRdmaMemory");

	/* RDMA write with an up-call, then read back polled (bit 0 of hEvent). */
	for (int i = 0; i < LEN; i++)
		Src[i] = (char)(i * 7 + 3);
	WSABUFEX Bufs[2] = { { 1000, Src, h1 }, { 30000, Src + 1000, h1 } };
	WSAOVERLAPPED Ov;
	DWORD Bytes = 0;
	memset(&Ov, 0, sizeof(Ov));
	Ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
	int r = RdmaWrite(c, Bufs, 2, Desc, DescLen, 500, &Bytes, 0, &Ov, NULL, NULL, &Err);
	tap_result(r == SOCKET_ERROR && Err == WSA_IO_PENDING && Finish(c, &Ov, &Bytes, FALSE) &&
		       Bytes == 31000 && !memcmp(Dst + 500, Src, 31000),
		   "WSPRdmaWrite, two buffers at an offset, every byte");
	LONG Before = Completions;
	WSABUFEX Back = { 31000, Src + 32768, h1 };
	HANDLE Polled = CreateEventW(NULL, TRUE, FALSE, NULL);
	memset(&Ov, 0, sizeof(Ov));
	Ov.hEvent = (HANDLE)((DWORD_PTR)Polled | 1);
	memset(Src + 32768, 0, 31000);
	r = RdmaRead(c, &Back, 1, Desc, DescLen, 500, &Bytes, 0, &Ov, NULL, NULL, &Err);
	tap_result(r == SOCKET_ERROR && Err == WSA_IO_PENDING && Finish(c, &Ov, &Bytes, TRUE) &&
		       Bytes == 31000 && !memcmp(Src + 32768, Src, 31000) && Completions == Before,
		   "WSPRdmaRead polled: no up-call, every byte");

	tap_result(!DeregisterRdma(a.Accepted, Desc, DescLen, &Err) &&
		       !DeregisterMemory(c, h1, &Err),
		   "WSPDeregisterRdmaMemory, WSPDeregisterMemory");
	/* Without the proxy driver nothing is cached: the switch is told so. */
	tap_result(CacheCallback(Src, LEN, &Err) == SOCKET_ERROR && Err == WSAEINVAL,
		   "WSPMemoryRegistrationCacheCallback: nothing cached, WSAEINVAL");

	tap_result(!Procs.lpWSPCloseSocket(c, &Err) && !Procs.lpWSPCloseSocket(a.Accepted, &Err) &&
		       !Procs.lpWSPCloseSocket(a.Listener, &Err),
		   "WSPCloseSocket");
	tap_result(!Procs.lpWSPCleanup(&Err) && Open == 0,
		   "WSPCleanup; every socket handle closed");
	tap_result(Procs.lpWSPCleanup(&Err) == SOCKET_ERROR && Err == WSANOTINITIALISED,
		   "one WSPCleanup too many: WSANOTINITIALISED");
	CloseHandle(Polled);
	VirtualFree(Src, 0, MEM_RELEASE);
	VirtualFree(Dst, 0, MEM_RELEASE);
	return tap_exit();
}
