#!/usr/bin/env python3
"""Trim the shared calibration reference results into small test fixtures.

Dev-only tool (CI never runs it; its outputs are committed).

Reads   /work/shared/reference/expected/*.json   (schema "calib-ref/1", written by the
        reference generator that ran ONNX Runtime, PyTorch observers, NVIDIA Model
        Optimizer and numpy/ml_dtypes on the dumps in /work/shared/reference/)
Copies  /work/shared/reference/*.npy             -> tests/fixtures/reference/*.npy
        /work/shared/reference/MANIFEST.json      -> tests/fixtures/reference/MANIFEST.json
Writes  tests/fixtures/reference/NAME.json        (one per source JSON, including
        nan_inf.finite_only.json)

The output schema is documented in tests/fixtures/reference/README.md. In short:

    {
      "schema": "calibscope-ref-trim/1",
      "name": ..., "source": ..., "source_sha256": ..., "versions": {...},
      "input":      {dtype, shape, fortran_order, size, n_nan, ..., n_batches, ...},
      "minmax":     {RESULT_NAME: RESULT, ...},
      "ema":        {...}, "entropy": {...}, "mse": {...}, "percentile": {...},
      "casts":      {"float16": {...}, "bfloat16": {...}}
    }

Non-finite numbers: the source writes NaN/Inf as the strings "nan", "inf", "-inf".
Here such a value becomes JSON null and a sibling key "<key>_nonfinite" holds the
original string ("nan" | "inf" | "-inf"). A null WITHOUT that sibling flag was already
null in the source (e.g. sqnr_db of an all-zero signal, which is 0/0 = undefined).

Run from the repo root:  python3 scripts/trim_reference.py [--src DIR] [--dst DIR]
"""
import argparse
import glob
import hashlib
import json
import os
import shutil
import sys

NONFINITE = {"nan", "inf", "-inf"}

# group -> list of (result name in source, fields to keep besides qdq, qdq schemes, note)
LOHI_QDQ = ("int8_sym", "uint8_affine_zero_included")
AMAX_QDQ = ("int8_sym",)
HIST = ("hist_bins", "hist_hi_edge", "impl")
ORT_HIST = ("hist_bins", "hist_lo_edge", "hist_hi_edge")

PCTS = ("99.9", "99.99", "99.999")

GROUPS = {
    "minmax": [
        ("modelopt.max", ("amax",), AMAX_QDQ, None),
        ("ort.minmax", ("lo", "hi"), LOHI_QDQ, None),
        ("torch.minmax.quint8_affine", ("lo", "hi", "scale", "zero_point"), LOHI_QDQ, None),
    ],
    "ema": [
        ("torch.ma_minmax.qint8_sym", ("lo", "hi", "scale", "zero_point"), LOHI_QDQ, None),
        ("ort.minmax_ma.per_batch", ("lo", "hi"), LOHI_QDQ, None),
    ],
    "entropy": [
        ("modelopt.hist.entropy", ("amax",) + HIST, AMAX_QDQ, None),
        ("ort.entropy_b2048_q128", ("lo", "hi") + ORT_HIST, LOHI_QDQ, None),
    ],
    "mse": [
        ("modelopt.hist.mse_argfix", ("amax",) + HIST, AMAX_QDQ, None),
        ("modelopt.hist.mse", ("amax",) + HIST, AMAX_QDQ,
         "KNOWN BUG (reference README 5.8): modelopt 0.47.0 calls fake_tensor_quant with "
         "shifted arguments (bias=8, num_bits=False); do not match this value"),
    ],
    "percentile": (
        [("modelopt.hist.percentile.p" + p, ("amax",) + HIST, AMAX_QDQ, None) for p in PCTS]
        + [("ort.percentile.p" + p, ("lo", "hi") + ORT_HIST, LOHI_QDQ, None) for p in PCTS]
        + [("ort.percentile.p" + p + ".symmetric", ("lo", "hi") + ORT_HIST, LOHI_QDQ, None)
           for p in PCTS]
    ),
}

INPUT_KEYS = ("file", "sha256", "dtype", "shape", "fortran_order", "size", "n_nan",
              "n_posinf", "n_neginf", "n_finite", "n_zero", "min", "max", "absmax",
              "mean", "std", "n_batches", "finite_only")
QDQ_KEYS = ("n", "mse", "sqnr_db", "max_abs_err", "n_clipped", "frac_clipped", "scale",
            "zero_point")
CAST_KEYS = ("n", "n_overflow_to_inf", "n_underflow_to_zero", "n_became_subnormal",
             "n_input_nan", "n_input_inf", "mse", "sqnr_db", "max_abs_err",
             "max_rel_err_nonzero", "smallest_normal")


def put(out, key, value):
    """Store value under key; non-finite strings become null + '<key>_nonfinite'."""
    if isinstance(value, str) and value in NONFINITE:
        out[key] = None
        out[key + "_nonfinite"] = value
    elif isinstance(value, float) and value != value:  # defensive: real NaN
        out[key] = None
        out[key + "_nonfinite"] = "nan"
    elif isinstance(value, float) and value in (float("inf"), float("-inf")):
        out[key] = None
        out[key + "_nonfinite"] = "inf" if value > 0 else "-inf"
    else:
        out[key] = value


def pick(src, keys):
    out = {}
    for k in keys:
        if k in src:
            put(out, k, src[k])
    return out


def trim_qdq(q):
    if q.get("degenerate"):
        return {"degenerate": True, "reason": q.get("reason", "")}
    return pick(q, QDQ_KEYS)


def trim_result(r, keys, schemes, note):
    if "error" in r:
        return {"error": str(r["error"])}
    out = pick(r, keys)
    if note:
        out["known_bug"] = True
        out["note"] = note
    qdq = r.get("qdq", {})
    tq = {s: trim_qdq(qdq[s]) for s in schemes if s in qdq}
    if tq:
        out["qdq"] = tq
    return out


def trim(doc, name, src_path):
    with open(src_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {
        "schema": "calibscope-ref-trim/1",
        "name": name,
        "source": "expected/" + os.path.basename(src_path),
        "source_schema": doc.get("schema"),
        "source_sha256": sha,
        "versions": doc.get("versions", {}),
        "input": pick(doc["input"], INPUT_KEYS),
    }
    results = doc.get("results", {})
    for group, entries in GROUPS.items():
        g = {}
        for rname, keys, schemes, note in entries:
            if rname in results:  # missing keys: omitted
                g[rname] = trim_result(results[rname], keys, schemes, note)
        out[group] = g
    out["casts"] = {t: pick(c, CAST_KEYS) for t, c in doc.get("casts", {}).items()
                    if t in ("float16", "bfloat16")}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="/work/shared/reference")
    ap.add_argument("--dst", default="tests/fixtures/reference")
    ap.add_argument("--no-copy", action="store_true", help="do not copy the .npy dumps")
    a = ap.parse_args()
    os.makedirs(a.dst, exist_ok=True)
    if not a.no_copy:
        for npy in sorted(glob.glob(os.path.join(a.src, "*.npy"))):
            dst = os.path.join(a.dst, os.path.basename(npy))
            shutil.copyfile(npy, dst)  # copyfile: content only, not the read-only mode
        man = os.path.join(a.src, "MANIFEST.json")
        if os.path.exists(man):
            shutil.copyfile(man, os.path.join(a.dst, "MANIFEST.json"))
    srcs = sorted(glob.glob(os.path.join(a.src, "expected", "*.json")))
    if not srcs:
        sys.exit("no JSON found under %s/expected" % a.src)
    for p in srcs:
        name = os.path.basename(p)[:-len(".json")]
        with open(p) as f:
            doc = json.load(f)
        t = trim(doc, name, p)
        text = json.dumps(t, indent=1, allow_nan=False) + "\n"
        with open(os.path.join(a.dst, name + ".json"), "w") as f:
            f.write(text)
        print("%-28s %6d bytes" % (name + ".json", len(text)))


if __name__ == "__main__":
    main()
