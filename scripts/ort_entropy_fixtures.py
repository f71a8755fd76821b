#!/usr/bin/env python3
"""ONNX Runtime's own entropy calibrator on the reference dumps, at 64 and 128 quantized bins
(calibscope's --scheme affine --bits 7 and 8), for tests/reference.rs.

Runs `onnxruntime.quantization.calibrate.HistogramCollector(method="entropy",
symmetric=False, num_bins=2048, num_quantized_bins=nq)`: what `CalibrationMethod.Entropy`
runs for every ORT user (`quantize_static` feeds it one `collect` of all batches, which
`collect_value` flattens into one `np.histogram` over [-max|x|, max|x|]). For each dump it
records ORT's range (lo, hi), the number of candidate windows, the data's min/max and the
histogram's threshold, and checksums of ORT's 2048-bin histogram (so the test can check that
calibscope counts the same bins).

Data: `np.ascontiguousarray(np.load(f), dtype=np.float32)`, as the reference set's README says.
nan_inf: ORT raises on the raw file (its threshold is inf, `np.histogram` rejects the range),
so its entry uses the finite values only, which is what calibscope calibrates.

Dev-only (CI has no onnxruntime); its output is committed. From the repo root:
    pip install onnxruntime onnx numpy
    python3 scripts/ort_entropy_fixtures.py > tests/fixtures/reference/ort_entropy.json
"""
import contextlib
import io
import json
import sys

import numpy as np
import onnxruntime
from onnxruntime.quantization.calibrate import HistogramCollector

CASES = ["gaussian", "laplace", "relu_nchw", "gelu", "silu", "softmax_attention",
         "layernorm_outliers", "spike", "drift", "fp16_overflow", "fp16_underflow_tiny",
         "float16", "float64", "int8", "bigendian_f4", "fortran_order", "vector_1d",
         "constant", "zeros", "nan_inf"]
DIR = "tests/fixtures/reference"
NUM_BINS = 2048


def ort_entropy(x, nq):
    c = HistogramCollector(method="entropy", symmetric=False, num_bins=NUM_BINS,
                           num_quantized_bins=nq, percentile=99.999, scenario="same")
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress
        c.collect({"X": x})
        lo, hi, hist, edges = c.compute_collection_result()["X"]
    hist_entry = c.get_histogram_dict()["X"]
    return float(lo), float(hi), hist, edges, hist_entry


def checksums(hist):
    c = [int(v) for v in hist]
    return {
        "bins": len(c),
        "total": sum(c),
        "nonzero": sum(1 for v in c if v),
        "sum_i": sum(i * v for i, v in enumerate(c)),
        "sum_i2": sum(i * i * v for i, v in enumerate(c)),
        "sum_c2": sum(v * v for v in c),
    }


def main():
    out = {
        "generator": "scripts/ort_entropy_fixtures.py",
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "call": "HistogramCollector(method='entropy', symmetric=False, num_bins=2048, "
                "num_quantized_bins=nq).collect({'X': x}); compute_collection_result()",
        "cases": {},
    }
    for name in CASES:
        x = np.ascontiguousarray(np.load(f"{DIR}/{name}.npy"), dtype=np.float32).ravel()
        finite = np.isfinite(x)
        entry = {"input": "all values" if finite.all() else
                 "finite values only (ORT raises on the raw file: its threshold is inf)"}
        x = x[finite]
        first = None
        for nq in (64, 128):
            lo, hi, hist, edges, h = ort_entropy(x, nq)
            if first is None:
                first = (hist, edges)
                _, _, mn, mx, threshold = h
                entry.update({
                    "min": float(mn), "max": float(mx), "threshold": float(threshold),
                    "hist_lo_edge": float(edges[0]), "hist_hi_edge": float(edges[-1]),
                    "hist": checksums(hist),
                })
            else:
                assert np.array_equal(hist, first[0]) and np.array_equal(edges, first[1])
            z = len(hist) // 2
            entry[f"q{nq}"] = {"lo": lo, "hi": hi, "candidates": z - nq // 2 + 1}
        # The shared reference set ran the same ORT on the same data at 128 quantized bins.
        ref = json.load(open(f"{DIR}/{name}.json"))["entropy"].get("ort.entropy_b2048_q128")
        if ref and "lo" in ref and ref["lo"] is not None:
            assert (ref["lo"], ref["hi"]) == (entry["q128"]["lo"], entry["q128"]["hi"]), name
        out["cases"][name] = entry
        print(name, entry["q64"], entry["q128"], file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
