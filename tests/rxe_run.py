#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Run test programs on soft-RoCE, all in one boot of the project's VM.

    rxe_run.py [--timeout S] [--vm SCRIPT] [--env NAME=VALUE...] PROGRAM[:ARG,ARG...] ...

Outside the VM it boots scripts/rxe-vm.sh once and runs itself inside.
Inside, each program runs with the verbs backend on the VM's rxe device
(SANPROV_TEST_BACKEND, _DEVICE, _ADDR: tests/tdev.h); Criterion programs
are given --tap, TAP programs print it themselves.  Their results are
merged into one TAP stream, each test named after its program; a program
that dies or whose count does not match its plan is one more failure.
--env NAME=VALUE sets a variable for the next program only (the Linux
switch's programs run under its preload); a program run by sh is named
after its script.
A host that cannot boot the VM gets a TAP skip with the reason, never a
pass.
"""
import os
import re
import subprocess
import sys
import time

# A test that hangs on a device fails after a minute instead of holding the VM.
CRITERION_ARGS = ["-q", "--tap=/proc/self/fd/1", "--jobs=1", "--timeout", "60"]
# And a program that hangs, after 10 minutes, instead of the whole tier.
PROGRAM_TIMEOUT = 600


def parse_args(argv):
    opts = {"timeout": 1800, "vm": None, "inside": False}
    progs = []
    env = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--timeout", "--vm"):
            opts[a[2:]] = argv[i + 1]
            i += 2
            continue
        if a == "--env":
            name, _, value = argv[i + 1].partition("=")
            env[name] = value
            i += 2
            continue
        if a == "--inside":
            opts["inside"] = True
        else:
            progs.append((a, env))
            env = {}
        i += 1
    if not progs:
        sys.exit("usage: rxe_run.py [--timeout S] [--vm SCRIPT] PROGRAM[:ARG,...] ...")
    return opts, progs


def outside(opts, progs):
    here = os.path.dirname(os.path.abspath(__file__))
    vm = opts["vm"] or os.path.join(here, "..", "scripts", "rxe-vm.sh")
    args = []
    for spec, env in progs:
        for name, value in env.items():
            args += ["--env", "%s=%s" % (name, value)]
        args.append(spec)
    cmd = [vm, "--timeout", str(opts["timeout"]), "--",
           sys.executable, os.path.abspath(__file__), "--inside"] + args
    # The VM's own complaints (why it cannot boot) go to stderr; keep them
    # for the skip line, and pass them on.
    p = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode == 77:
        why = [l for l in p.stderr.splitlines() if "SKIP" in l]
        reason = why[-1].split("SKIP:", 1)[-1].strip() if why else "the VM cannot start"
        print("1..0 # SKIP soft-RoCE VM unavailable: " + reason)
        return 0
    return p.returncode


def run_one(spec, env, out, counter):
    # "PROGRAM:" is a TAP program run with no arguments, "PROGRAM" a Criterion one.
    prog, sep, argstr = spec.partition(":")
    args = [a for a in argstr.split(",") if a] if sep else None
    name = os.path.basename(prog)
    if name in ("sh", "bash") and args:
        name = os.path.basename(args[0]).rsplit(".", 1)[0]
    cmd = [os.path.abspath(prog)] + (args if args is not None else CRITERION_ARGS)
    start = time.monotonic()
    # A program that hangs is killed (its whole process group) and counted as failed.
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, errors="replace", start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=PROGRAM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        stdout, stderr = p.communicate()
        stderr += "\nkilled after %d s" % PROGRAM_TIMEOUT
    plan, seen, failed = None, 0, 0
    for line in stdout.splitlines():
        m = re.match(r"^(not ok|ok)\b(?:\s+\d+)?\s*(?:-\s*)?(.*)$", line)
        if m:
            counter[0] += 1
            seen += 1
            failed += m.group(1) == "not ok"
            out.write("%s %d - rxe/%s: %s\n" % (m.group(1), counter[0], name, m.group(2)))
            continue
        m = re.match(r"^1\.\.(\d+)", line)
        if m:
            plan = int(m.group(1))
            continue
        if line.startswith("TAP version"):
            continue
        # Diagnostics and YAML blocks: keep them, as comments.
        out.write("# " + line + "\n" if not line.startswith("#") else line + "\n")
    for line in stderr.splitlines()[-40:]:
        out.write("# %s: %s\n" % (name, line))
    took = time.monotonic() - start
    if p.returncode != 0 and failed == 0 or plan is None or plan != seen:
        counter[0] += 1
        out.write("not ok %d - rxe/%s: exited with %d after %d of %s results\n"
                  % (counter[0], name, p.returncode, seen, plan))
    out.write("# rxe/%s: %.1f s\n" % (name, took))
    out.flush()


def inside(progs):
    env = dict(os.environ)
    env["SANPROV_TEST_BACKEND"] = "verbs"
    env["SANPROV_TEST_DEVICE"] = os.environ.get("SANPROV_VM_RXE_DEV", "rxe0")
    env["SANPROV_TEST_ADDR"] = os.environ.get("SANPROV_VM_RXE_ADDR", "10.77.0.1")
    counter = [0]
    for spec, extra in progs:
        run_one(spec, dict(env, **extra), sys.stdout, counter)
    print("1..%d" % counter[0])
    return 0


def main():
    opts, progs = parse_args(sys.argv[1:])
    sys.exit(inside(progs) if opts["inside"] else outside(opts, progs))


if __name__ == "__main__":
    main()
