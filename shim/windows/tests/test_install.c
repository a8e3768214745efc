/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov-install under test (TAP): its argument handling, exit statuses,
 * --dry-run, and the "TCP on SAN" list it maintains.  The catalog step is
 * checked where WSCInstallProvider really changes the catalog; Wine's is a
 * stub, and there that check is a SKIP saying so.
 *
 *   test_install.exe PATH-OF-sanprov-install.exe
 */
/* winsock2.h must come before windows.h. */
#include <winsock2.h>
#include <ws2spi.h>

#include <windows.h>

#include <stdio.h>
#include <string.h>
#include <wchar.h>

#include "tap.h"

static WCHAR Installer[MAX_PATH];
static WCHAR SomeFile[MAX_PATH];
static char Output[16384];

static const GUID ProviderGuid = {
	0x6B2F6A1E, 0x3C41, 0x4E8A, { 0x9D, 0x2B, 0x5A, 0x7C, 0x1E, 0x9F, 0x4D, 0x30 }
};

/* A point; a failing one shows what the installer printed. */
static void Ok(BOOL Cond, const char *What)
{
	tap_result(Cond, "%s", What);
	if (!Cond)
		printf("# output was:\n# %s\n", Output);
}

/* A path as Windows sees it: /unix/path becomes Z:\unix\path under Wine. */
static void WinPath(const char *In, WCHAR *Out)
{
	WCHAR *p;

	if (In[0] == '/')
		swprintf(Out, MAX_PATH, L"Z:%hs", In);
	else
		swprintf(Out, MAX_PATH, L"%hs", In);
	for (p = Out; *p; p++)
		if (*p == L'/')
			*p = L'\\';
}

/* Run the installer with Args; its exit status, its output in Output. */
static DWORD Run(const WCHAR *Args)
{
	SECURITY_ATTRIBUTES Sa = { sizeof(Sa), NULL, TRUE };
	STARTUPINFOW Si;
	PROCESS_INFORMATION Pi;
	WCHAR Cmd[2 * MAX_PATH + 256];
	HANDLE Read, Write;
	DWORD Status = 999, n, Total = 0;

	Output[0] = 0;
	if (!CreatePipe(&Read, &Write, &Sa, 0))
		return Status;
	SetHandleInformation(Read, HANDLE_FLAG_INHERIT, 0);
	ZeroMemory(&Si, sizeof(Si));
	Si.cb = sizeof(Si);
	Si.dwFlags = STARTF_USESTDHANDLES;
	Si.hStdOutput = Si.hStdError = Write;
	Si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
	swprintf(Cmd, sizeof(Cmd) / sizeof(Cmd[0]), L"\"%ls\" %ls", Installer, Args);
	if (!CreateProcessW(NULL, Cmd, NULL, NULL, TRUE, 0, NULL, NULL, &Si, &Pi)) {
		CloseHandle(Read);
		CloseHandle(Write);
		return Status;
	}
	CloseHandle(Write);
	while (Total < sizeof(Output) - 1 &&
	       ReadFile(Read, Output + Total, sizeof(Output) - 1 - Total, &n, NULL) && n)
		Total += n;
	Output[Total] = 0;
	for (char *c = Output; *c; c++)
		if (*c == '\n' && c[1])
			*c = ' '; /* one line in the TAP comment */
	WaitForSingleObject(Pi.hProcess, 30000);
	GetExitCodeProcess(Pi.hProcess, &Status);
	CloseHandle(Pi.hProcess);
	CloseHandle(Pi.hThread);
	CloseHandle(Read);
	return Status;
}

/* How often the provider's GUID is in the "TCP on SAN" list. */
static int Listed(void)
{
	BYTE List[4096];
	DWORD Size = sizeof(List), Type;
	int n = 0;

	if (RegGetValueW(HKEY_LOCAL_MACHINE,
			 L"SYSTEM\\CurrentControlSet\\Services\\Winsock\\Parameters", L"TCP on SAN",
			 RRF_RT_ANY, &Type, List, &Size) != ERROR_SUCCESS)
		return 0;
	for (DWORD Off = 0; Off + sizeof(GUID) <= Size; Off += sizeof(GUID))
		n += !memcmp(List + Off, &ProviderGuid, sizeof(GUID));
	return n;
}

static BOOL InCatalog(void)
{
	static WSAPROTOCOL_INFOW Info[64];
	DWORD Length = sizeof(Info);
	int Error, Count = WSCEnumProtocols(NULL, Info, &Length, &Error);

	for (int i = 0; i < Count; i++)
		if (IsEqualGUID(&Info[i].ProviderId, &ProviderGuid))
			return TRUE;
	return FALSE;
}

/* The system directory's sanprov.dll, and its size (-1: absent). */
static char SystemCopy[MAX_PATH];

static LONGLONG FileSize(const char *Path)
{
	WIN32_FILE_ATTRIBUTE_DATA a;

	if (!GetFileAttributesExA(Path, GetFileExInfoStandard, &a))
		return -1;
	return (LONGLONG)a.nFileSizeHigh << 32 | a.nFileSizeLow;
}

static BOOL UnderWine(void)
{
	HMODULE Ntdll = GetModuleHandleW(L"ntdll.dll");

	return Ntdll && GetProcAddress(Ntdll, "wine_get_version");
}

int main(int argc, char **argv)
{
	WSADATA Data;
	WCHAR Args[MAX_PATH + 64];

	if (argc != 2) {
		printf("1..0 # SKIP usage: test_install.exe PATH-OF-sanprov-install.exe\n");
		return 0;
	}
	WinPath(argv[1], Installer);
	/* Any file will do as the DLL: install only checks that it is there. */
	if (!GetModuleFileNameW(NULL, SomeFile, MAX_PATH))
		return 1;
	WSAStartup(MAKEWORD(2, 2), &Data);
	UINT n = GetSystemDirectoryA(SystemCopy, MAX_PATH);
	if (!n || n + 13 >= MAX_PATH)
		return 1;
	strcpy(SystemCopy + n, "\\sanprov.dll");
	char Self[MAX_PATH];
	if (!GetModuleFileNameA(NULL, Self, MAX_PATH))
		return 1;
	tap_plan(17);
	/* A clean start: nothing of an earlier run. */
	Run(L"uninstall");

	Ok(Run(L"--help") == 0 && strstr(Output, "Usage:"), "--help: usage, exit 0");
	Ok(Run(L"") == 2, "no command: exit 2");
	Ok(Run(L"--bogus install") == 2 && strstr(Output, "unknown option"),
	   "unknown option: exit 2");
	Ok(Run(L"frobnicate") == 2, "unknown command: exit 2");
	Ok(Run(L"status extra") == 2, "extra argument: exit 2");
	Ok(Run(L"install Z:\\no\\such\\sanprov.dll") == 1 && strstr(Output, "not found"),
	   "missing DLL: exit 1, says so");

	swprintf(Args, sizeof(Args) / sizeof(Args[0]), L"--dry-run install \"%ls\"", SomeFile);
	Ok(Run(Args) == 0 && strstr(Output, "would add") && Listed() == 0 &&
	       FileSize(SystemCopy) < 0,
	   "--dry-run install: says what it would do, changes nothing");

	swprintf(Args, sizeof(Args) / sizeof(Args[0]), L"install \"%ls\"", SomeFile);
	Ok(Run(Args) == 0 && Listed() == 1, "install: listed under TCP on SAN");
	/* What the catalog names is the system directory's copy, never the file given. */
	Ok(FileSize(SystemCopy) >= 0 && FileSize(SystemCopy) == FileSize(Self),
	   "install: the DLL copied to the system directory");
	Ok(strstr(Output, "catalog: installed") && strstr(Output, SystemCopy) &&
	       !strstr(strstr(Output, "catalog: installed"), "test_install"),
	   "install: the copy is what it registers");
	{
		WCHAR Registered[MAX_PATH], Expanded[MAX_PATH], Want[MAX_PATH];
		int Len = MAX_PATH, Error = 0;

		swprintf(Want, MAX_PATH, L"%hs", SystemCopy);
		if (InCatalog() &&
		    WSCGetProviderPath((GUID *)&ProviderGuid, Registered, &Len, &Error) == 0 &&
		    ExpandEnvironmentStringsW(Registered, Expanded, MAX_PATH))
			Ok(!_wcsicmp(Expanded, Want),
			   "install: the catalog's path is the system directory's");
		else if (UnderWine())
			tap_skip("install: the catalog's path is the system directory's",
				 "Wine's WSCInstallProvider is a stub: nothing was installed");
		else
			Ok(FALSE, "install: the catalog's path is the system directory's");
	}
	if (InCatalog())
		Ok(TRUE, "install: in the Winsock catalog");
	else if (UnderWine())
		tap_skip(
		    "install: in the Winsock catalog",
		    "Wine's WSCInstallProvider is a stub that leaves its fixed catalog as it is");
	else
		Ok(FALSE, "install: in the Winsock catalog");
	Ok(Run(Args) == 0 && strstr(Output, "already listed") && Listed() == 1,
	   "install again: idempotent, listed once");
	Ok(Run(L"status") == 0 && strstr(Output, "TCP on SAN: listed"), "status: listed");
	Ok(Run(L"uninstall") == 0 && Listed() == 0, "uninstall: no longer listed");
	Ok(FileSize(SystemCopy) < 0, "uninstall: the system directory's copy is gone");
	Ok(Run(L"status") == 0 && strstr(Output, "TCP on SAN: not listed"),
	   "status after uninstall: not listed");
	WSACleanup();
	return tap_exit();
}
