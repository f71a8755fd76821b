#!/usr/bin/env python3
"""ml_dtypes reference for the element formats (src/formats) and the format rows (README "Formats").

Dev-only tool (CI never runs it; its output is committed and read by the tests).
Needs numpy and ml_dtypes 0.7.0. Run from the repo root:

    python3 scripts/fp_formats_fixtures.py

Writes
  tests/fixtures/formats/elements.json  every code's value of float8_e4m3fn, float8_e5m2,
        float4_e2m1fn and float8_e8m0fnu, and float32 inputs at, around and between every
        rounding midpoint and past the saturation edges with ml_dtypes' code for the plain cast
        (`astype`) and for the clamped cast (`np.clip(x, -max, max).astype`). Numbers are
        hex strings of float32 bits (8 digits each) and codes (2 digits each), to stay small.
  tests/fixtures/formats/rows.json  the format rows' metrics on a few reference dumps
        (tests/fixtures/reference/*.npy), computed the plain numpy way below.
"""
import json
import os

import ml_dtypes
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "formats")
FORMATS = {
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e2m1fn": ml_dtypes.float4_e2m1fn,
}
F32 = np.float32


def hex32(a):
    return "".join("%08x" % v for v in np.asarray(a, F32).view(np.uint32))


def hex8(a):
    return "".join("%02x" % v for v in np.asarray(a).view(np.uint8))


def decode_all(dt, n):
    return np.arange(n, dtype=np.uint8).view(dt).astype(F32)


def inputs_for(dt, n):
    vals = decode_all(dt, n)
    fin = np.unique(np.abs(vals[np.isfinite(vals)]).astype(np.float64))
    mx = F32(fin.max())
    pts = []
    for lo, hi in zip(fin[:-1], fin[1:]):
        mid = F32((lo + hi) / 2)
        pts += [F32(lo), mid, np.nextafter(mid, F32(-np.inf)), np.nextafter(mid, F32(np.inf))]
    step = F32(fin[-1] - fin[-2]) if len(fin) > 2 else F32(1)
    # The next step above max is twice the last one when max ends its binade's mantissa.
    up = [mx + step / 2, mx + step, mx + step * 2, mx * 2]
    for v in up:
        v = F32(v)
        pts += [v, np.nextafter(v, F32(-np.inf)), np.nextafter(v, F32(np.inf))]
    tiny = np.float32(np.finfo(F32).smallest_subnormal)
    pts += [mx, tiny, F32(1e30), np.finfo(F32).max, F32(np.inf)]
    x = np.array(pts, F32)
    x = x[x >= 0]
    x = np.unique(x)
    return np.concatenate([x, -x])


def elements():
    out = {"ml_dtypes": ml_dtypes.__version__, "formats": {}}
    for name, dt in FORMATS.items():
        n = 16 if name == "e2m1fn" else 256
        x = inputs_for(dt, n)
        mx = F32(np.max(np.abs(decode_all(dt, n)[np.isfinite(decode_all(dt, n))])))
        with np.errstate(all="ignore"):
            cast = x.astype(dt).view(np.uint8)
            clamped = np.clip(x, -mx, mx).astype(dt).view(np.uint8)
        out["formats"][name] = {
            "decode": hex32(decode_all(dt, n)),
            "inputs": hex32(x),
            "cast": hex8(cast),
            "clamped": hex8(clamped),
        }
    out["e8m0fnu"] = {"decode": hex32(decode_all(ml_dtypes.float8_e8m0fnu, 256))}
    return out


# ---- format rows -------------------------------------------------------------------------

E4M3 = (ml_dtypes.float8_e4m3fn, F32(448))
E5M2 = (ml_dtypes.float8_e5m2, F32(57344))
E2M1 = (ml_dtypes.float4_e2m1fn, F32(6))


def fp(v, fmt):
    return v.astype(fmt[0]).astype(F32)


def metrics(x, xh, clip_lo, clip_hi):
    """The methods' metrics over finite values (x, xh float32 arrays, non-finite x set to 0
    and left out of the count by the caller via `n`)."""
    x64 = x.astype(np.float64)
    e = x64 - xh.astype(np.float64)
    sig = float(np.sum(x64 * x64))
    err = float(np.sum(e * e))
    rec = float(np.sum(xh.astype(np.float64) ** 2))
    dot = float(np.sum(x64 * xh.astype(np.float64)))
    return {
        "err_sq": err,
        "sig_sq": sig,
        "rec_sq": rec,
        "dot": dot,
        "max_abs_error": float(np.max(np.abs(e))) if e.size else 0.0,
        "clipped_below": int(clip_lo),
        "clipped_above": int(clip_hi),
    }


def unbounded_clip(y, fmt, mx):
    """Values whose rounding on the grid extended past max lands beyond it (the clamp changed
    their code): |y| at or past the overflow midpoint, found with ml_dtypes on a wider type."""
    # A value clips iff its plain cast overflows (E4M3fn: NaN, E5M2: inf), or for E2M1fn
    # (which saturates) iff |y| >= 7, the midpoint between 6 and the next step 8 (ties go up:
    # 6 has an odd mantissa).
    if fmt is E2M1:
        return y <= -7, y >= 7
    with np.errstate(all="ignore"):
        c = y.astype(fmt[0]).astype(F32)
    bad = ~np.isfinite(c)
    return bad & (y < 0), bad & (y > 0)


def tensor_row(x, fmt, a):
    a = F32(a)
    mx = fmt[1]
    inv = F32(mx / a)
    s = F32(a / mx)
    y = (x * inv).astype(F32)
    lo, hi = unbounded_clip(y, fmt, mx)
    q = fp(np.clip(y, -mx, mx), fmt)
    xh = (q * s).astype(F32)
    return metrics(x, xh, lo.sum(), hi.sum()), int(lo.sum() + hi.sum())


def token_row(x2, fmt):
    mx = fmt[1]
    a = np.max(np.abs(x2), axis=1, keepdims=True).astype(F32)
    safe = np.where(a > 0, a, F32(1))
    inv = (mx / safe).astype(F32)
    s = (safe / mx).astype(F32)
    y = (x2 * inv).astype(F32)
    lo, hi = unbounded_clip(y, fmt, mx)
    xh = (fp(np.clip(y, -mx, mx), fmt) * s).astype(F32)
    xh = np.where(a > 0, xh, F32(0))
    return metrics(x2.ravel(), xh.ravel(), lo.sum(), hi.sum())


def blocks(x2, g):
    rows, c = x2.shape
    nb = -(-c // g)
    pad = np.zeros((rows, nb * g), F32)
    pad[:, :c] = x2
    return pad.reshape(rows, nb, g), c


def unblock(b, rows, c):
    return b.reshape(rows, -1)[:, :c]


def floor_log2(a):
    # Exact for float32 (np.frexp: a = m * 2^e with m in [0.5, 1)).
    _, e = np.frexp(a.astype(np.float64))
    return e - 1


def mx_row(x2, fmt, rule):
    mx = fmt[1]
    emax = 8 if fmt is E4M3 else 2
    rows, _ = x2.shape
    b, c = blocks(x2, 32)
    amax = np.max(np.abs(b), axis=2, keepdims=True).astype(F32)
    zero = amax == 0
    safe = np.where(zero, F32(1), amax)
    if rule == "ocp":
        k = floor_log2(safe) - emax
    else:
        d = (safe / mx).astype(F32)
        k = floor_log2(d)
        k = np.where(np.ldexp(np.float64(1), k) == d.astype(np.float64), k, k + 1)
    k = np.clip(k, -127, 127)
    X = np.ldexp(np.float64(1), k)
    y = (b.astype(np.float64) / X).astype(F32)
    lo, hi = unbounded_clip(y, fmt, mx)
    q = fp(np.clip(y, -mx, mx), fmt)
    xh = (q.astype(np.float64) * X).astype(F32)
    xh = np.where(zero, F32(0), xh)
    xh = unblock(xh, rows, c)
    lo = unblock(lo, rows, c)
    hi = unblock(hi, rows, c)
    return metrics(x2.ravel(), xh.ravel(), lo.sum(), hi.sum())


def nvfp4_row(x2):
    rows, _ = x2.shape
    b, c = blocks(x2, 16)
    at = F32(np.max(np.abs(x2)))
    sg = F32(at / F32(448 * 6))
    amax = np.max(np.abs(b), axis=2, keepdims=True).astype(F32)
    sb = fp(np.clip((amax / F32(F32(6) * sg)).astype(F32), -448, 448), E4M3)
    d = (sb * sg).astype(F32)
    zero = d == 0
    safe = np.where(zero, F32(1), d)
    y = (b / safe).astype(F32)
    lo, hi = unbounded_clip(y, E2M1, F32(6))
    lo &= ~zero
    hi &= ~zero
    q = fp(np.clip(y, -6, 6), E2M1)
    xh = np.where(zero, F32(0), (q * safe).astype(F32))
    xh = unblock(xh, rows, c)
    return metrics(x2.ravel(), xh.ravel(), unblock(lo, rows, c).sum(), unblock(hi, rows, c).sum())


ROW_CASES = ["gaussian", "laplace", "layernorm_outliers", "softmax_attention", "float16", "spike"]


def rows():
    out = {}
    src = os.path.join(ROOT, "tests", "fixtures", "reference")
    for name in ROW_CASES:
        a = np.load(os.path.join(src, name + ".npy"), allow_pickle=False)
        a = np.ascontiguousarray(a, dtype=F32)
        x = np.where(np.isfinite(a), a, F32(0))
        x2 = x.reshape(-1, x.shape[-1])
        absmax = F32(np.max(np.abs(x)))
        case = {"absmax": float(absmax), "rows": []}
        for fname, fmt in (("fp8_e4m3", E4M3), ("fp8_e5m2", E5M2)):
            for frac in (1.0, 0.5, 0.125, 0.01):
                amax = F32(absmax * F32(frac))
                m, nonfinite = tensor_row(x.ravel(), fmt, amax)
                case["rows"].append({"format": fname, "granularity": "tensor", "amax": float(amax),
                                     "metrics": m, "unclamped_nonfinite": nonfinite})
            case["rows"].append({"format": fname, "granularity": "token",
                                 "metrics": token_row(x2, fmt)})
        for fname, fmt in (("mxfp8", E4M3), ("mxfp4", E2M1)):
            for rule in ("ocp", "rceil"):
                case["rows"].append({"format": fname, "granularity": "block", "scale_rule": rule,
                                     "metrics": mx_row(x2, fmt, rule)})
        case["rows"].append({"format": "nvfp4", "granularity": "block", "metrics": nvfp4_row(x2)})
        out[name] = case
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "elements.json"), "w") as f:
        json.dump(elements(), f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "rows.json"), "w") as f:
        json.dump({"ml_dtypes": ml_dtypes.__version__, "cases": rows()}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
