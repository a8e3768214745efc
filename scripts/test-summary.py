#!/usr/bin/env python3
"""Count the test cases of meson test runs from their TAP output.

Reads meson's testlog.json files and prints one closing line,
'N passed, N failed, N skipped', counting every TAP test point
(a test that is not TAP counts as one).  A sanitizer report on a test's
stderr (leak, address or undefined-behaviour error) is one more failure:
Criterion reports a test before its worker exits, where leaks are found.
--skip REASON counts one more skipped suite (one that could not run on
this machine) and prints its reason.  Exits 1 if anything failed.
"""
import json
import re
import sys

TAP_OK = re.compile(r"^ok\b")
TAP_NOT_OK = re.compile(r"^not ok\b")
TAP_SKIP = re.compile(r"#\s*skip", re.IGNORECASE)
SANITIZER = re.compile(r"ERROR: (Leak|Address|Thread)Sanitizer|runtime error:")


def count(path):
    passed = failed = skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            out = t.get("stdout") or ""
            points = [l for l in out.splitlines() if TAP_OK.match(l) or TAP_NOT_OK.match(l)]
            if t.get("protocol") == "tap" or points:
                for l in points:
                    if TAP_NOT_OK.match(l):
                        failed += 1
                    elif TAP_SKIP.search(l):
                        skipped += 1
                    else:
                        passed += 1
                # A test binary that died without its points still failed.
                if t.get("result") not in ("OK", "SKIP") and not any(
                    TAP_NOT_OK.match(l) for l in points
                ):
                    failed += 1
            elif t.get("result") == "SKIP":
                skipped += 1
            elif t.get("result") == "OK":
                passed += 1
            else:
                failed += 1
            reports = len(SANITIZER.findall(t.get("stderr") or ""))
            if reports:
                print(f"{t['name']}: {reports} sanitizer report(s) on stderr", file=sys.stderr)
                failed += 1
    return passed, failed, skipped


def main():
    total = [0, 0, 0]
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        if a == "--skip":
            reason = args.pop(0)
            print(f"SKIP: {reason}")
            total[2] += 1
            continue
        for i, v in enumerate(count(a)):
            total[i] += v
    print(f"{total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] or not total[0] else 0


if __name__ == "__main__":
    sys.exit(main())
