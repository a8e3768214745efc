#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""sanprov_perf on the verbs backend next to perftest, same device, one run.

    vs_perftest.py [--build DIR] [--dev NAME] [--addr IPV4] [--runs N]

For RDMA write latency, RDMA read latency and RDMA write bandwidth it runs
perftest's ib_write_lat, ib_read_lat and ib_write_bw (both sides on this
host, connected through rdma_cm, -R) and sanprov_perf (-b verbs), each
side a process of its own as perftest's, in turns, --runs times each, and prints the medians and their ratio.  Then it
shows what the registration cache buys on the same device: sanprov_perf's
latency tests with every buffer registered per operation (-R op) and per
operation through the registration cache (-R cache), in turns.  The
device and address default to the soft-RoCE VM's (SANPROV_VM_RXE_DEV,
SANPROV_VM_RXE_ADDR); on a host with a real NIC give --dev and --addr.

    scripts/rxe-vm.sh -- bench/vs_perftest.py --build build
"""
import argparse
import csv
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CASES = [  # (sanprov test, perftest program, size, iterations, metric)
    ("write_lat", "ib_write_lat", 64, 1000, "lat"),
    ("write_lat", "ib_write_lat", 4096, 1000, "lat"),
    ("read_lat", "ib_read_lat", 64, 1000, "lat"),
    ("read_lat", "ib_read_lat", 4096, 1000, "lat"),
    ("write_bw", "ib_write_bw", 65536, 5000, "bw"),
]

REG_CASES = [  # (sanprov test, size, iterations): -R op vs -R cache
    ("read_lat", 64, 1000),
    ("read_lat", 65536, 1000),
    ("write_lat", 64, 1000),
]


def pair_once(server_cmd, client_cmd):
    """A server and a client, each a process of its own, as perftest runs:
    the client's output, or None and why it failed."""
    with tempfile.TemporaryFile("w+") as serr:
        server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=serr)
        why = "no connection"
        try:
            for _ in range(10):  # the server needs a moment to listen
                time.sleep(1)
                if server.poll() is not None:
                    break
                try:
                    p = subprocess.run(client_cmd, capture_output=True, text=True, timeout=300)
                except subprocess.TimeoutExpired:
                    why = "client timed out"
                    continue
                if p.returncode == 0:
                    return p.stdout, None
                why = p.stderr.strip() or p.stdout.strip()
        finally:
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            serr.seek(0)
            tail = serr.read().strip()
        if server.returncode:
            why += "; server exited with %d: %s" % (server.returncode, tail)
        return None, why


def pair(name, make, port):
    """make(port) -> (server command, client command); one retry on another port."""
    out, why = pair_once(*make(port))
    if out is None:  # rdma_cm on a busy emulated VM: one more pair on the next port
        print("  %s: %s; again on port %d" % (name, why, port + 1000), file=sys.stderr)
        out, why = pair_once(*make(port + 1000))
    if out is None:
        sys.exit("%s failed: %s" % (name, why))
    return out


def perftest(prog, dev, addr, size, iters, port):
    def make(p):
        base = [prog, "-d", dev, "-R", "-F", "-s", str(size), "-n", str(iters), "-p", str(p)]
        return base, base + [addr]

    for attempt in range(2):
        out = pair(prog, make, port + 2000 * attempt)
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 5 and f[0] == str(size) and f[1].isdigit():
                # lat: bytes iters t_min t_max t_typical ...; bw: bytes iters peak avg rate
                v = float(f[4]) if prog.endswith("_lat") else float(f[3])
                if math.isfinite(v):
                    return v
        # perftest now and then prints "inf" (its cycle counter against a
        # guest clock that jumped): that run says nothing, run it again.
        print("  %s: no usable result row; again" % prog, file=sys.stderr)
    sys.exit("%s: no usable result row in:\n%s" % (prog, out))


def sanprov(perf, test, dev, addr, size, iters, port, reg="once"):
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as c:
        def make(p):
            base = [perf, "-b", "verbs", "-d", dev, "-q", "-s", str(size), "-p", str(p)]
            return base, base + ["-T", test, "-R", reg, "-n", str(iters), "-c", c.name, addr]

        pair("sanprov_perf", make, port)
        row = next(csv.DictReader(c))
    return float(row["t_typical_us"]) if test.endswith("_lat") else float(row["bw_avg_MBps"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--dev", default=os.environ.get("SANPROV_VM_RXE_DEV"))
    ap.add_argument("--addr", default=os.environ.get("SANPROV_VM_RXE_ADDR"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if not a.dev or not a.addr:
        sys.exit("give --dev and --addr (or run inside scripts/rxe-vm.sh)")
    perf = os.path.join(a.build, "bench", "sanprov_perf")
    for prog in ("ib_write_lat", "ib_read_lat", "ib_write_bw"):
        if not shutil.which(prog):
            sys.exit("%s not found (Debian package perftest)" % prog)
    print("device %s, %d runs each, medians; latency: t_typical in usec (lower is better), "
          "bandwidth: BW average in MB/s (higher is better)" % (a.dev, a.runs))
    print("%-10s %8s %12s %12s %8s" % ("test", "bytes", "perftest", "sanprov", "ratio"))
    port = 19000
    for test, prog, size, iters, metric in CASES:
        pt, sp = [], []
        for _ in range(a.runs):  # in turns, so that drift hits both alike
            port += 1
            pt.append(perftest(prog, a.dev, a.addr, size, iters, port))
            port += 1
            sp.append(sanprov(perf, test, a.dev, a.addr, size, iters, port))
            print("  %s %d: perftest %.2f, sanprov %.2f" % (test, size, pt[-1], sp[-1]),
                  file=sys.stderr, flush=True)
        mp, ms = statistics.median(pt), statistics.median(sp)
        # The ratio says how sanprov fares: > 1 is better for bandwidth, < 1 for latency.
        print("%-10s %8d %12.2f %12.2f %7.3fx" % (test, size, mp, ms, ms / mp), flush=True)

    print("\nregistration per operation vs through the cache, sanprov_perf t_typical in usec, "
          "medians; speedup = op / cache")
    print("%-10s %8s %12s %12s %8s" % ("test", "bytes", "op", "cache", "speedup"))
    for test, size, iters in REG_CASES:
        op, ca = [], []
        for _ in range(a.runs):
            port += 1
            op.append(sanprov(perf, test, a.dev, a.addr, size, iters, port, "op"))
            port += 1
            ca.append(sanprov(perf, test, a.dev, a.addr, size, iters, port, "cache"))
            print("  %s %d: op %.2f, cache %.2f" % (test, size, op[-1], ca[-1]),
                  file=sys.stderr, flush=True)
        mo, mc = statistics.median(op), statistics.median(ca)
        print("%-10s %8d %12.2f %12.2f %7.2fx" % (test, size, mo, mc, mo / mc), flush=True)


if __name__ == "__main__":
    main()
