#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""sanprov_perf on the verbs backend next to perftest, same device, one run.

    vs_perftest.py [--build DIR] [--dev NAME] [--addr IPV4] [--runs N]

For RDMA write latency, RDMA read latency and RDMA write bandwidth it runs
perftest's ib_write_lat, ib_read_lat and ib_write_bw (both sides on this
host, connected through rdma_cm, -R) and sanprov_perf (-b verbs -L), in
turns, --runs times each, and prints the medians and their ratio.  The
device and address default to the soft-RoCE VM's (SANPROV_VM_RXE_DEV,
SANPROV_VM_RXE_ADDR); on a host with a real NIC give --dev and --addr.

    scripts/rxe-vm.sh -- bench/vs_perftest.py --build build
"""
import argparse
import csv
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


def perftest(prog, dev, addr, size, iters, port):
    base = [prog, "-d", dev, "-R", "-F", "-s", str(size), "-n", str(iters), "-p", str(port)]
    server = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = None
        for _ in range(10):  # the server needs a moment to listen
            time.sleep(1)
            try:
                p = subprocess.run(base + [addr], capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired as e:
                p = subprocess.CompletedProcess(e.cmd, 124, "", "timed out")
                continue
            if p.returncode == 0:
                out = p.stdout
                break
        if out is None:
            sys.exit("%s failed: %s" % (prog, p.stderr.strip() or p.stdout.strip()))
    finally:
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == str(size) and f[1].isdigit():
            # lat: bytes iters t_min t_max t_typical ...; bw: bytes iters peak avg rate
            return float(f[4]) if prog.endswith("_lat") else float(f[3])
    sys.exit("%s: no result row in:\n%s" % (prog, out))


def sanprov(perf, test, dev, addr, size, iters, port):
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as c:
        cmd = [perf, "-b", "verbs", "-d", dev, "-L", "-A", addr, "-q", "-T", test,
               "-s", str(size), "-n", str(iters), "-p", str(port), "-c", c.name]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if p.returncode:
            sys.exit("sanprov_perf failed: " + (p.stderr.strip() or p.stdout.strip()))
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


if __name__ == "__main__":
    main()
