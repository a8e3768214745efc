/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sanprov-install: register sanprov.dll with Windows Sockets as a SAN
 * service provider, or take it out again.
 *
 * Installing copies the catalog entry of the TCP/IP (IPv4, stream)
 * provider, gives it sanprov's provider GUID and PFL_HIDDEN (applications
 * never pick a SAN provider themselves: the switch does), installs it with
 * WSCInstallProvider, and adds the GUID to the "TCP on SAN" value under
 * the Winsock parameters, which is how the switch finds SAN providers.
 * Both steps are idempotent; uninstall undoes both.  Needs administrator
 * rights on Windows.
 *
 * The catalog names the DLL every process that opens a socket will load:
 * it must not be a file a user can replace.  Installing copies the DLL into
 * the system directory (writable by administrators only) and registers
 * that copy, never the path it was found at; uninstall deletes the copy.
 */
/* winsock2.h must come before windows.h. */
#include <winsock2.h>
#include <ws2spi.h>

#include <windows.h>

#include <stdio.h>
#include <string.h>
#include <wchar.h>

#define EXIT_USAGE 2

/* sanprov's provider GUID {6B2F6A1E-3C41-4E8A-9D2B-5A7C1E9F4D30}. */
static GUID ProviderGuid = {
	0x6B2F6A1E, 0x3C41, 0x4E8A, { 0x9D, 0x2B, 0x5A, 0x7C, 0x1E, 0x9F, 0x4D, 0x30 }
};

static const WCHAR ParametersKey[] = L"SYSTEM\\CurrentControlSet\\Services\\Winsock\\Parameters";
static const WCHAR SanValue[] = L"TCP on SAN";
static const WCHAR ProtocolName[] = L"sanprov SAN service provider (TCP/IP)";

static BOOL DryRun;

static void Usage(FILE *f)
{
	fwprintf(f,
		 L"Usage: sanprov-install [--dry-run] install [DLL]\n"
		 L"       sanprov-install [--dry-run] uninstall\n"
		 L"       sanprov-install status\n"
		 L"\n"
		 L"  install    copy DLL (default: sanprov.dll beside this program) to the\n"
		 L"             system directory, register that copy as the SAN provider\n"
		 L"             for TCP/IP, hidden, and list it under\n"
		 L"             HKLM\\%ls\\%ls\n"
		 L"  uninstall  take it out of the catalog and of that list, delete the copy\n"
		 L"  status     say whether it is in the catalog and in the list\n"
		 L"  --dry-run  say what would change, change nothing\n"
		 L"\n"
		 L"Exit status: 0 done, 1 failed, 2 usage.\n",
		 ParametersKey, SanValue);
}

/* The catalog, in a buffer the caller frees; NULL on failure. */
static WSAPROTOCOL_INFOW *EnumCatalog(int *Count)
{
	DWORD Length = 0;
	WSAPROTOCOL_INFOW *Info;
	int Error = 0;

	*Count = 0;
	if (WSCEnumProtocols(NULL, NULL, &Length, &Error) != SOCKET_ERROR || Error != WSAENOBUFS)
		return NULL;
	Info = HeapAlloc(GetProcessHeap(), 0, Length);
	if (!Info)
		return NULL;
	*Count = WSCEnumProtocols(NULL, Info, &Length, &Error);
	if (*Count == SOCKET_ERROR) {
		HeapFree(GetProcessHeap(), 0, Info);
		*Count = 0;
		return NULL;
	}
	return Info;
}

static BOOL InCatalog(void)
{
	int Count;
	WSAPROTOCOL_INFOW *Info = EnumCatalog(&Count);
	BOOL Found = FALSE;

	for (int i = 0; Info && i < Count; i++)
		if (IsEqualGUID(&Info[i].ProviderId, &ProviderGuid))
			Found = TRUE;
	if (Info)
		HeapFree(GetProcessHeap(), 0, Info);
	return Found;
}

/* The "TCP on SAN" list: GUIDs back to back.  FALSE when it cannot be read. */
static BOOL ReadSanList(BYTE *Buffer, DWORD *Length)
{
	DWORD Type = 0, Size = *Length;
	LSTATUS Status = RegGetValueW(HKEY_LOCAL_MACHINE, ParametersKey, SanValue, RRF_RT_ANY,
				      &Type, Buffer, &Size);

	if (Status == ERROR_FILE_NOT_FOUND) {
		*Length = 0;
		return TRUE;
	}
	if (Status != ERROR_SUCCESS || Type != REG_BINARY || Size % sizeof(GUID)) {
		fwprintf(stderr, L"sanprov-install: HKLM\\%ls\\%ls cannot be read (%ld)\n",
			 ParametersKey, SanValue, (long)Status);
		return FALSE;
	}
	*Length = Size;
	return TRUE;
}

static int FindInList(const BYTE *Buffer, DWORD Length)
{
	for (DWORD Off = 0; Off < Length; Off += sizeof(GUID))
		if (!memcmp(Buffer + Off, &ProviderGuid, sizeof(GUID)))
			return (int)(Off / sizeof(GUID));
	return -1;
}

static BOOL WriteSanList(const BYTE *Buffer, DWORD Length)
{
	HKEY Key;
	LSTATUS Status = RegCreateKeyExW(HKEY_LOCAL_MACHINE, ParametersKey, 0, NULL, 0,
					 KEY_SET_VALUE, NULL, &Key, NULL);

	if (Status == ERROR_SUCCESS) {
		Status = Length ? RegSetValueExW(Key, SanValue, 0, REG_BINARY, Buffer, Length)
				: RegDeleteValueW(Key, SanValue);
		RegCloseKey(Key);
	}
	if (Status != ERROR_SUCCESS) {
		fwprintf(stderr, L"sanprov-install: cannot write HKLM\\%ls\\%ls (%ld)\n",
			 ParametersKey, SanValue, (long)Status);
		return FALSE;
	}
	return TRUE;
}

/* The DLL's full path; default: sanprov.dll in this program's directory. */
static BOOL DllPath(const WCHAR *Given, WCHAR *Path, DWORD Size)
{
	WCHAR Here[MAX_PATH];
	DWORD Attributes;

	if (!Given) {
		DWORD n = GetModuleFileNameW(NULL, Here, MAX_PATH);
		WCHAR *Slash;
		if (!n || n == MAX_PATH)
			return FALSE;
		Slash = wcsrchr(Here, L'\\');
		if (!Slash || (size_t)(Slash - Here) + 13 >= MAX_PATH)
			return FALSE;
		wcscpy(Slash + 1, L"sanprov.dll");
		Given = Here;
	}
	if (!GetFullPathNameW(Given, Size, Path, NULL))
		return FALSE;
	Attributes = GetFileAttributesW(Path);
	if (Attributes == INVALID_FILE_ATTRIBUTES || (Attributes & FILE_ATTRIBUTE_DIRECTORY)) {
		fwprintf(stderr, L"sanprov-install: %ls: not found\n", Path);
		return FALSE;
	}
	return TRUE;
}

/* Where the registered copy lives: the system directory's sanprov.dll. */
static BOOL SystemCopyPath(WCHAR *Path, DWORD Size)
{
	UINT n = GetSystemDirectoryW(Path, Size);

	if (!n || n + 13 >= Size)
		return FALSE;
	wcscpy(Path + n, L"\\sanprov.dll");
	return TRUE;
}

/* Copy the DLL at From to the system directory (replacing an older copy). */
static BOOL CopyToSystem(const WCHAR *From, const WCHAR *To)
{
	if (!_wcsicmp(From, To))
		return TRUE; /* installed from the system directory itself */
	if (DryRun) {
		wprintf(L"copy: would copy %ls to %ls\n", From, To);
		return TRUE;
	}
	if (!CopyFileW(From, To, FALSE)) {
		fwprintf(stderr, L"sanprov-install: cannot copy %ls to %ls (error %lu)\n", From, To,
			 (unsigned long)GetLastError());
		return FALSE;
	}
	wprintf(L"copy: %ls\n", To);
	return TRUE;
}

static int Install(const WCHAR *Given)
{
	WCHAR Source[MAX_PATH], Path[MAX_PATH];
	BYTE List[4096];
	DWORD Length = sizeof(List);
	WSAPROTOCOL_INFOW Entry, *Info;
	int Count, Error = 0;
	BOOL Found = FALSE;

	if (!DllPath(Given, Source, MAX_PATH))
		return 1;
	if (!SystemCopyPath(Path, MAX_PATH)) {
		fwprintf(stderr, L"sanprov-install: no system directory\n");
		return 1;
	}
	Info = EnumCatalog(&Count);
	for (int i = 0; Info && i < Count && !Found; i++) {
		if (Info[i].iAddressFamily == AF_INET && Info[i].iSocketType == SOCK_STREAM &&
		    Info[i].iProtocol == IPPROTO_TCP &&
		    Info[i].ProtocolChain.ChainLen == BASE_PROTOCOL &&
		    !IsEqualGUID(&Info[i].ProviderId, &ProviderGuid)) {
			Entry = Info[i];
			Found = TRUE;
		}
	}
	if (Info)
		HeapFree(GetProcessHeap(), 0, Info);
	if (!Found) {
		fwprintf(stderr, L"sanprov-install: no TCP/IP provider in the catalog\n");
		return 1;
	}
	Entry.ProviderId = ProviderGuid;
	Entry.dwCatalogEntryId = 0;
	Entry.dwProviderFlags |= PFL_HIDDEN;
	Entry.ProtocolChain.ChainLen = BASE_PROTOCOL;
	wcsncpy(Entry.szProtocol, ProtocolName, WSAPROTOCOL_LEN);
	Entry.szProtocol[WSAPROTOCOL_LEN] = 0;

	/* The copy first: a catalog entry must never name a missing file. */
	if (!CopyToSystem(Source, Path))
		return 1;
	if (InCatalog()) {
		wprintf(L"catalog: already installed\n");
	} else if (DryRun) {
		wprintf(L"catalog: would install %ls as \"%ls\" (hidden)\n", Path, ProtocolName);
	} else if (WSCInstallProvider(&ProviderGuid, Path, &Entry, 1, &Error) == SOCKET_ERROR) {
		/*
		 * The 64-bit catalog only: sanprov.dll is an x64 DLL, which no
		 * 32-bit process could load (WSCInstallProvider64_32 would list it
		 * in the 32-bit catalog as well).
		 */
		fwprintf(stderr, L"sanprov-install: WSCInstallProvider: error %d\n", Error);
		return 1;
	} else {
		wprintf(L"catalog: installed %ls\n", Path);
	}

	if (!ReadSanList(List, &Length))
		return 1;
	if (FindInList(List, Length) >= 0) {
		wprintf(L"TCP on SAN: already listed\n");
		return 0;
	}
	if (Length + sizeof(GUID) > sizeof(List)) {
		fwprintf(stderr, L"sanprov-install: the TCP on SAN list is full\n");
		return 1;
	}
	if (DryRun) {
		wprintf(L"TCP on SAN: would add the provider to HKLM\\%ls\\%ls\n", ParametersKey,
			SanValue);
		return 0;
	}
	memcpy(List + Length, &ProviderGuid, sizeof(GUID));
	if (!WriteSanList(List, Length + sizeof(GUID)))
		return 1;
	wprintf(L"TCP on SAN: listed\n");
	return 0;
}

static int Uninstall(void)
{
	WCHAR Path[MAX_PATH];
	BYTE List[4096];
	DWORD Length = sizeof(List);
	int Index, Error = 0;

	if (!InCatalog()) {
		wprintf(L"catalog: not installed\n");
	} else if (DryRun) {
		wprintf(L"catalog: would remove the provider\n");
	} else if (WSCDeinstallProvider(&ProviderGuid, &Error) == SOCKET_ERROR) {
		fwprintf(stderr, L"sanprov-install: WSCDeinstallProvider: error %d\n", Error);
		return 1;
	} else {
		wprintf(L"catalog: removed\n");
	}
	/* The copy after the entry: nothing names it any more. */
	if (SystemCopyPath(Path, MAX_PATH) && GetFileAttributesW(Path) != INVALID_FILE_ATTRIBUTES) {
		if (DryRun) {
			wprintf(L"copy: would delete %ls\n", Path);
		} else if (!DeleteFileW(Path)) {
			fwprintf(stderr, L"sanprov-install: cannot delete %ls (error %lu)\n", Path,
				 (unsigned long)GetLastError());
			return 1;
		} else {
			wprintf(L"copy: deleted %ls\n", Path);
		}
	}
	if (!ReadSanList(List, &Length))
		return 1;
	Index = FindInList(List, Length);
	if (Index < 0) {
		wprintf(L"TCP on SAN: not listed\n");
		return 0;
	}
	if (DryRun) {
		wprintf(L"TCP on SAN: would remove the provider from the list\n");
		return 0;
	}
	memmove(List + Index * sizeof(GUID), List + (Index + 1) * sizeof(GUID),
		Length - (Index + 1) * sizeof(GUID));
	if (!WriteSanList(List, Length - sizeof(GUID)))
		return 1;
	wprintf(L"TCP on SAN: removed\n");
	return 0;
}

static int Status(void)
{
	BYTE List[4096];
	DWORD Length = sizeof(List);

	wprintf(L"catalog: %ls\n", InCatalog() ? L"installed" : L"not installed");
	if (!ReadSanList(List, &Length))
		return 1;
	wprintf(L"TCP on SAN: %ls\n", FindInList(List, Length) >= 0 ? L"listed" : L"not listed");
	return 0;
}

int wmain(int argc, WCHAR **argv);

int wmain(int argc, WCHAR **argv)
{
	WSADATA Data;
	int i = 1, Result;

	while (i < argc && argv[i][0] == L'-') {
		if (!wcscmp(argv[i], L"--help") || !wcscmp(argv[i], L"-h")) {
			Usage(stdout);
			return 0;
		}
		if (wcscmp(argv[i], L"--dry-run")) {
			fwprintf(stderr, L"sanprov-install: unknown option %ls\n", argv[i]);
			Usage(stderr);
			return EXIT_USAGE;
		}
		DryRun = TRUE;
		i++;
	}
	if (i >= argc) {
		Usage(stderr);
		return EXIT_USAGE;
	}
	if (WSAStartup(MAKEWORD(2, 2), &Data)) {
		fwprintf(stderr, L"sanprov-install: WSAStartup failed\n");
		return 1;
	}
	if (!wcscmp(argv[i], L"install") && argc - i <= 2)
		Result = Install(argc - i == 2 ? argv[i + 1] : NULL);
	else if (!wcscmp(argv[i], L"uninstall") && argc - i == 1)
		Result = Uninstall();
	else if (!wcscmp(argv[i], L"status") && argc - i == 1 && !DryRun)
		Result = Status();
	else {
		fwprintf(stderr, L"sanprov-install: unknown command or arguments\n");
		Usage(stderr);
		Result = EXIT_USAGE;
	}
	WSACleanup();
	return Result;
}
