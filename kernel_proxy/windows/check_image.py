#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Check that a PE image is what Windows loads as a WDM driver (TAP output).

    check_image.py DRIVER.sys

x64 machine, native subsystem, the WDM_DRIVER flag, NX and ASLR,
FORCE_INTEGRITY (the process-notify routine needs it), and
imports from ntoskrnl.exe and hal.dll only: a kernel driver links against
nothing else.
"""
import struct
import sys

ALLOWED = {"ntoskrnl.exe", "hal.dll"}


def main(path):
    data = open(path, "rb").read()
    points = []

    def ok(cond, what):
        points.append(("ok" if cond else "not ok", what))

    pe = struct.unpack_from("<I", data, 0x3C)[0]
    ok(data[:2] == b"MZ" and data[pe:pe + 4] == b"PE\0\0", "a PE image")
    machine, nsect, _, _, _, optsize, _ = struct.unpack_from("<HHIIIHH", data, pe + 4)
    opt = pe + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    ok(machine == 0x8664 and magic == 0x20B, "x64 (PE32+)")
    subsystem, dllchars = struct.unpack_from("<HH", data, opt + 68)
    ok(subsystem == 1, "native subsystem (got %d)" % subsystem)
    ok(dllchars & 0x2000, "WDM_DRIVER in DllCharacteristics (0x%x)" % dllchars)
    ok(dllchars & 0x0100 and dllchars & 0x0040, "NX compatible, dynamic base")
    # PsSetCreateProcessNotifyRoutineEx refuses an image without it.
    ok(dllchars & 0x0080, "FORCE_INTEGRITY in DllCharacteristics (0x%x)" % dllchars)
    entry = struct.unpack_from("<I", data, opt + 16)[0]
    ok(entry != 0, "an entry point (DriverEntry)")

    sections = []
    for i in range(nsect):
        off = opt + optsize + 40 * i
        vsize, va, rsize, rptr = struct.unpack_from("<IIII", data, off + 8)
        sections.append((va, max(vsize, rsize), rptr))

    def rva(r):
        for va, size, ptr in sections:
            if va <= r < va + size:
                return ptr + r - va
        raise ValueError("RVA 0x%x outside every section" % r)

    imp_rva, imp_size = struct.unpack_from("<II", data, opt + 112 + 8)
    names = []
    if imp_rva:
        d = rva(imp_rva)
        while True:
            name_rva = struct.unpack_from("<I", data, d + 12)[0]
            if not name_rva:
                break
            n = rva(name_rva)
            names.append(data[n:data.index(b"\0", n)].decode().lower())
            d += 20
    extra = sorted(set(names) - ALLOWED)
    ok(names and not extra, "imports only %s (got %s)" % (", ".join(sorted(ALLOWED)),
                                                        ", ".join(names) or "none"))
    print("1..%d" % len(points))
    for i, (res, what) in enumerate(points, 1):
        print("%s %d - %s" % (res, i, what))
    return 0 if all(r == "ok" for r, _ in points) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_image.py DRIVER.sys")
    sys.exit(main(sys.argv[1]))
