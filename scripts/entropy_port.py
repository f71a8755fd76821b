#!/usr/bin/env python3
"""Model Optimizer's `_compute_amax_entropy` (modelopt 0.47, calib/histogram.py), ported to
numpy, applied to calibscope's fixed 2048-bin |x| histogram of each reference dump.

Why: Model Optimizer grows its histogram from the first batch's range, so its bins differ from
ours and the KL search (which is bin-sensitive on discrete data, e.g. float16 dumps) can land
elsewhere. Running the same search on *our* histogram isolates the algorithm from the binning:
tests/reference.rs requires calibscope to match these values exactly.

The KL is scipy.stats.entropy's: both distributions normalised, sum p·log(p/q) over p > 0.
Group sums are integer counts in float64, so the vectorised bincount is exact.

Usage: python3 scripts/entropy_port.py > tests/fixtures/reference/entropy_on_fixed_bins.json
(needs numpy; run from the repo root).
"""
import json
import sys

import numpy as np

CASES = ["gaussian", "laplace", "relu_nchw", "gelu", "silu", "softmax_attention",
         "layernorm_outliers", "spike", "drift", "fp16_overflow", "fp16_underflow_tiny",
         "float16", "float64", "int8", "bigendian_f4", "fortran_order", "vector_1d",
         "constant", "zeros", "nan_inf"]


def kl(p, q):
    p = p / p.sum()
    q = q / q.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum()


def entropy_amax(hist, edges, num_bits=8, start_bin=128):
    bins = hist.astype(np.float64)
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1)
    divergences = []
    for i in range(start_bin, len(bins) + 1):
        space = np.linspace(0, i, num=nbins + 1)
        dig = np.digitize(range(i), space) - 1
        head = bins[:i]
        nz = head != 0
        sums = np.bincount(dig[nz], weights=head[nz], minlength=nbins)
        cnt = np.bincount(dig[nz], minlength=nbins)
        new_density = np.zeros(i)
        new_density[nz] = sums[dig[nz]] / cnt[dig[nz]]
        ref = head.copy()
        ref[-1] += bins[i:].sum()
        divergences.append(kl(ref, new_density))
    d = np.array(divergences)
    last = len(d) - 1 - np.argmin(d[::-1])
    return float(edges[last + start_bin]), len(d)


def main():
    out = {}
    for name in CASES:
        x = np.load(f"tests/fixtures/reference/{name}.npy").astype(np.float32).ravel()
        a = np.abs(x[np.isfinite(x)])
        m = float(a.max()) if a.size else 0.0
        if m == 0.0:
            continue
        # Same binning as calibscope: 65536 fine bins summed 32 at a time equal 2048 bins.
        h, e = np.histogram(a, bins=2048, range=(0, m))
        amax, n = entropy_amax(h, e)
        out[name] = {"amax": amax, "candidates": n}
        print(name, amax, file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
