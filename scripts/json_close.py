#!/usr/bin/env python3
"""Compare two calibscope JSON outputs number by number.

Usage: scripts/json_close.py A.json B.json [--rel 1e-12]

Every non-number (strings, null, booleans, keys, list lengths) must be equal; every number must
agree within the relative bound (|a - b| <= rel * max(|a|, |b|)), integers exactly. SQNRs in dB
(a key with "sqnr" in its path) are logarithms of ratios: a relative error rel in the ratio moves
them by at most 10/ln(10)·rel dB, so they get that absolute bound instead (an SQNR near 0 dB has
no meaningful relative error). A cosine near 0 comes from a cancelling difference of sums, so it
gets the bound as an absolute one. Prints each difference with its path, and a summary; exit status 1
if any difference exceeds its bound.
"""
import math
import json
import sys


def walk(a, b, path, rel, out):
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        if a != b:
            out.append((path, a, b, None))
        return
    if isinstance(a, int) and isinstance(b, int):
        if a != b:
            out.append((path, a, b, None))
        return
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a != b:
            if "cosine" in path:
                r = abs(a - b)
            elif "sqnr" in path:
                # Expressed as a relative error of the underlying ratio.
                r = abs(a - b) * math.log(10) / 10
            else:
                r = abs(a - b) / max(abs(a), abs(b))
            out.append((path, a, b, r))
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            out.append((path + " (keys)", list(a), list(b), None))
            return
        for k in a:
            walk(a[k], b[k], f"{path}.{k}", rel, out)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((path + " (length)", len(a), len(b), None))
            return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", rel, out)
        return
    if a != b:
        out.append((path, a, b, None))


def main():
    args = sys.argv[1:]
    rel = 1e-12
    if "--rel" in args:
        i = args.index("--rel")
        rel = float(args[i + 1])
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = (json.load(open(p)) for p in args)
    out = []
    walk(a, b, "$", rel, out)
    bad = [d for d in out if d[3] is None or d[3] > rel]
    for path, x, y, r in out:
        flag = "FAIL" if (r is None or r > rel) else "ok  "
        print(f"{flag} {path}: {x!r} vs {y!r}" + ("" if r is None else f" (rel {r:.3g})"))
    worst = max((d[3] for d in out if d[3] is not None), default=0.0)
    print(f"{len(out)} numbers differ, {len(bad)} beyond {rel:g}; largest relative difference {worst:.3g}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
