#!/usr/bin/env python3
"""numpy reference for the granularity rows and the channel summary (README "Granularities").

Dev-only tool (CI never runs it; its output is committed and read by tests/granularity.rs).

Reads   SRC/*.npy (default /work/shared/reference, whose dumps tests/fixtures/reference/
        holds byte for byte)
Writes  tests/fixtures/granularity_reference.json

Every row is symmetric abs-max quantization with one scale per group, computed the plain numpy
way: x in float64 (from float32, NaN/Inf set to 0 and left out of the counts), s = group
absmax / qmax (1 for an all-zero group), x_hat = clip(round(x / s), -qmax, qmax) * s.
Groups: the whole tensor; a token = one row of the [rows, C] view with the channel axis moved
last; a channel = one column of that view; a block = G consecutive values of a token (the last
one shorter). "Outliers kept in float": channels whose absmax >= ratio * median(absmax) are
left exact, the rest on one grid of scale max(absmax of the rest) / qmax.

Run from the repo root:  python3 scripts/granularity_reference.py [--src DIR]
"""
import argparse
import hashlib
import json
import os

import numpy as np

CASES = [
    # (name, channel_axis, bits, block_sizes)
    ("gaussian", -1, 8, [32, 128]),
    ("laplace", -1, 8, [32, 128]),
    ("relu_nchw", -1, 8, [32, 128]),
    ("relu_nchw", 1, 8, [32, 128]),
    ("gelu", -1, 8, [32, 128]),
    ("silu", -1, 8, [32, 128]),
    ("softmax_attention", -1, 8, [32, 128]),
    ("softmax_attention", 1, 8, [32, 128]),
    ("layernorm_outliers", -1, 8, [32, 128]),
    ("layernorm_outliers", -1, 4, [16, 100]),
    ("spike", -1, 8, [32, 128]),
    ("drift", -1, 8, [32, 128]),
    ("fp16_overflow", -1, 8, [32, 128]),
    ("fp16_underflow_tiny", -1, 8, [32, 128]),
    ("float16", -1, 8, [32, 128]),
    ("float64", -1, 8, [32, 128]),
    ("int8", -1, 8, [32, 128]),
    ("bigendian_f4", -1, 8, [32, 128]),
    ("fortran_order", -1, 8, [32, 128]),
    ("fortran_order", 0, 8, [32, 128]),
    ("vector_1d", -1, 8, [32, 128]),
    ("constant", -1, 8, [32, 128]),
    ("zeros", -1, 8, [32, 128]),
    ("nan_inf", -1, 8, [32, 128]),
]
RATIO = 8.0
THRESHOLD = 6.0
TOP = 8


def num(v):
    v = float(v)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def metrics(x, xh, finite):
    x, xh = x[finite], xh[finite]
    e = x - xh
    n = max(x.size, 1)
    sig, err, rec = np.sum(x * x), np.sum(e * e), np.sum(xh * xh)
    if sig == 0 and rec == 0:
        cos = 1.0
    elif sig == 0 or rec == 0:
        cos = 0.0
    else:
        cos = np.sum(x * xh) / (np.sqrt(sig) * np.sqrt(rec))
    with np.errstate(divide="ignore", invalid="ignore"):
        sqnr = 10 * np.log10(sig / err)
    return {
        "mse": num(err / n),
        "sqnr_db": num(sqnr),
        "max_abs_error": num(np.max(np.abs(e)) if e.size else 0.0),
        "cosine": num(cos),
    }


def ratio(a, m):
    """a / m in IEEE arithmetic (x / 0 = inf, 0 / 0 = nan), as the JSON reports it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float64(a) / np.float64(m)


def qdq(x, s, qmax):
    return np.clip(np.round(x / s), -qmax, qmax) * s


def scale(absmax, qmax):
    return np.where(absmax > 0, absmax / qmax, 1.0)


def case(src, name, axis, bits, blocks):
    raw = np.load(os.path.join(src, name + ".npy"))
    x = np.asarray(raw, dtype=np.float32).astype(np.float64)
    finite = np.isfinite(x)
    x = np.where(finite, x, 0.0)
    qmax = float(2 ** (bits - 1) - 1)
    absmax = float(np.max(np.abs(x)))
    s_t = absmax / qmax if absmax >= 2.0**-24 else 1.0
    out = {
        "name": name,
        "sha256": hashlib.sha256(open(os.path.join(src, name + ".npy"), "rb").read()).hexdigest(),
        "channel_axis": axis,
        "bits": bits,
        "block_sizes": blocks,
        "outlier_ratio": RATIO,
        "outlier_threshold": THRESHOLD,
        "rows": [{"granularity": "tensor", "block_size": None, "groups": 1,
                  "metrics": metrics(x, qdq(x, s_t, qmax), finite)}],
    }
    if x.ndim < 2:
        out["channels"] = None
        return out
    k = axis % x.ndim
    xm = np.moveaxis(x, k, -1)
    fm = np.moveaxis(finite, k, -1)
    c = xm.shape[-1]
    xm = xm.reshape(-1, c)
    fm = fm.reshape(-1, c)
    rows = xm.shape[0]
    # token
    s = scale(np.max(np.abs(xm), axis=1), qmax)[:, None]
    out["rows"].append({"granularity": "token", "block_size": None, "groups": rows,
                        "metrics": metrics(xm, qdq(xm, s, qmax), fm)})
    # channel
    ch_absmax = np.max(np.abs(xm), axis=0)
    s = scale(ch_absmax, qmax)[None, :]
    out["rows"].append({"granularity": "channel", "block_size": None, "groups": c,
                        "metrics": metrics(xm, qdq(xm, s, qmax), fm)})
    # blocks: pad each token with zeros to whole blocks (zeros change no absmax and no sum)
    for g in blocks:
        nb = -(-c // g)
        pad = np.zeros((rows, nb * g))
        pad[:, :c] = xm
        padf = np.zeros((rows, nb * g), dtype=bool)
        padf[:, :c] = fm
        b = pad.reshape(rows, nb, g)
        s = scale(np.max(np.abs(b), axis=2), qmax)[:, :, None]
        xh = qdq(b, s, qmax).reshape(rows, nb * g)
        out["rows"].append({"granularity": "block", "block_size": g, "groups": rows * nb,
                            "metrics": metrics(pad, xh, padf)})
    median = float(np.median(ch_absmax))
    order = sorted(range(c), key=lambda i: (-ch_absmax[i], i))[:TOP]
    outliers = [int(i) for i in np.nonzero(ch_absmax >= RATIO * median)[0]] if median > 0 else []
    in_float = None
    if outliers:
        mask = np.zeros(c, dtype=bool)
        mask[outliers] = True
        rest = float(np.max(ch_absmax[~mask])) if (~mask).any() else 0.0
        xh = qdq(xm, float(scale(np.array(rest), qmax)), qmax)
        xh[:, mask] = xm[:, mask]
        in_float = {"channels": len(outliers), "metrics": metrics(xm, xh, fm)}
    out["channels"] = {
        "axis": k,
        "count": c,
        "absmax_median": median,
        "top": [{"channel": int(i), "absmax": float(ch_absmax[i]),
                 "ratio": num(ratio(ch_absmax[i], median))} for i in order],
        "outliers": outliers,
        "above_threshold": {
            "threshold": THRESHOLD,
            "values": int(np.sum(np.abs(xm[fm]) >= THRESHOLD)),
            "channels": int(np.sum(ch_absmax >= THRESHOLD)),
        },
        "outliers_in_float": in_float,
    }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="/work/shared/reference")
    ap.add_argument("--dst", default="tests/fixtures/granularity_reference.json")
    a = ap.parse_args()
    doc = {
        "schema": "calibscope-granularity-ref/1",
        "generator": "scripts/granularity_reference.py",
        "numpy": np.__version__,
        "cases": [case(a.src, *c) for c in CASES],
    }
    with open(a.dst, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {a.dst}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
