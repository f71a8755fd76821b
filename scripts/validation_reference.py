#!/usr/bin/env python3
"""Rebuilds tests/fixtures/validation/: trimmed copies of a few shared reference dumps
(/work/shared/reference, batch axis 0) and what numpy computes for calibscope's held-out
validation and convergence on them (symmetric int8, K = 2 folds, batch i -> fold i mod K):

- the ranges calibrated without each fold, by the references' own closed forms: min-max
  (absmax), the moving average (torch's MovingAverageMinMaxObserver arithmetic in float32,
  c = 0.01) and the nearest-rank percentile of |x| (numpy method="inverted_cdf");
- held-out SQNR = 10 log10(sum x^2 / sum (x - xhat_fold(x))^2) over every finite value,
  each quantized with the range calibrated without its fold, and the held-out clipped
  fraction;
- the min-max ranges of the batch prefixes n = 1, 2, 4, ..., B and its
  half_range_sqnr_loss_db.

Usage: python3 scripts/validation_reference.py [REFERENCE_DIR]
"""

import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "validation")
# (dump, batches kept, values kept per batch)
DUMPS = [("gaussian", 16, 512), ("laplace", 16, 512), ("drift", 16, 512), ("spike", 12, 512)]
K = 2
QMAX = 127
PERCENTILES = [99.9, 99.99, 99.999]
EMA_C = np.float32(0.01)


def nearest_rank(p, n):
    x = p / 100.0 * n
    k = round(x) if abs(x - round(x)) <= 1e-9 * max(x, 1.0) else math.ceil(x)
    return min(max(int(k), 1), max(n, 1))


def qdq(x, a):
    """Symmetric int8 with amax a: (sum e^2, clipped count)."""
    s = a / QMAX
    t = np.rint(x / s)
    clipped = int(np.count_nonzero(np.abs(t) > QMAX))
    r = np.clip(t, -QMAX, QMAX)
    e = x - r * s
    return float(np.sum(e * e)), clipped


def sqnr(sig, err):
    if err == 0.0:
        return "inf"
    return 10.0 * math.log10(sig / err)


def ema(batches):
    lo, hi = None, None
    for b in batches:
        f = b[np.isfinite(b)]
        if f.size == 0:
            continue
        blo, bhi = np.float32(f.min()), np.float32(f.max())
        if lo is None:
            lo, hi = blo, bhi
        else:
            lo = np.float32(lo + EMA_C * np.float32(blo - lo))
            hi = np.float32(hi + EMA_C * np.float32(bhi - hi))
    return max(abs(float(lo)), abs(float(hi)))


def amax_of(method, batches):
    v = np.concatenate([b.ravel() for b in batches])
    v = np.abs(v[np.isfinite(v)].astype(np.float64))
    if method == "minmax":
        return float(v.max())
    if method == "ema":
        return ema(batches)
    p = float(method.split()[1])
    return float(np.sort(v)[nearest_rank(p, v.size) - 1])


def main():
    ref = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/reference"
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, nb, nv in DUMPS:
        a = np.ascontiguousarray(np.load(os.path.join(ref, name + ".npy"), allow_pickle=False), dtype=np.float32)
        a = np.ascontiguousarray(a.reshape(a.shape[0], -1)[:nb, :nv])
        np.save(os.path.join(OUT, name + ".npy"), a)
        batches = [a[i] for i in range(nb)]
        x = a[np.isfinite(a)].astype(np.float64)
        sig = float(np.sum(x * x))
        methods = {}
        for m in ["minmax", "ema"] + ["percentile %g" % p for p in PERCENTILES]:
            ranges, err, clipped = [], 0.0, 0
            for k in range(K):
                train = [b for i, b in enumerate(batches) if i % K != k]
                amax = amax_of(m, train)
                ranges.append([-amax, amax])
                held = np.concatenate([b for i, b in enumerate(batches) if i % K == k]).astype(np.float64)
                held = held[np.isfinite(held)]
                e, c = qdq(held, amax)
                err += e
                clipped += c
            methods[m] = {"ranges_by_fold": ranges, "sqnr_db": sqnr(sig, err),
                          "clipped_fraction": clipped / x.size}
        counts = []
        n = 1
        while n < nb:
            counts.append(n)
            n *= 2
        counts.append(nb)
        h = max(c for c in counts if c <= nb // 2)
        conv = {}
        for m in ["minmax"] + ["percentile %g" % p for p in PERCENTILES]:
            full = amax_of(m, batches)
            half = amax_of(m, batches[:h])
            loss = None
            if m == "minmax":
                loss = 10 * math.log10(qdq(x, half)[0] / qdq(x, full)[0])
            conv[m] = {"amax": [amax_of(m, batches[:c]) for c in counts], "loss": loss}
        expected[name] = {"batches": nb, "batch_counts": counts, "heldout": methods, "convergence": conv}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
