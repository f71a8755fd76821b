#!/usr/bin/env python3
"""ONNX Runtime's own calibration-cache writer on calibscope's ranges, as a test fixture.

Dev-only (CI never runs it; its output is committed). Needs onnxruntime and numpy
(`pip install onnxruntime numpy`) and a built calibscope (`cargo build --release`).

1. Runs `calibscope report data --export json` (min-max ranges, with a name map) to get the
   ranges, then writes them with ONNX Runtime's `save_tensors_data` (the writer behind
   `quantize_static(calibration_cache_path=...)`) to tests/fixtures/ort/minmax_data.json.
2. Runs `calibscope report data --export ort` with the same options and checks ONNX Runtime's
   `load_tensors_data` reads it back to the same ranges and method.
tests/cli.rs compares calibscope's `--export ort` with the fixture value by value.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization.calibrate import (
    CalibrationMethod,
    TensorData,
    TensorsData,
    load_tensors_data,
    save_tensors_data,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "calibscope"
OUT = ROOT / "tests" / "fixtures" / "ort"
NAME_MAP = OUT / "name_map.tsv"


def calibscope(*args):
    subprocess.run([str(BIN), "report", str(ROOT / "data"), "-q", *args], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    NAME_MAP.write_text("# dump name\ttensor name\n01_conv1_relu\t/conv1/Relu_output_0\n"
                        "09_small_mlp/fc1_pre\t/fc1/Gemm_output_0\n")
    common = ["--method", "minmax", "--name-map", str(NAME_MAP)]
    with tempfile.TemporaryDirectory() as tmp:
        ranges_path = Path(tmp) / "ranges.json"
        calibscope(*common, "--export", "json", str(ranges_path))
        ranges = json.loads(ranges_path.read_text())
        data = {
            name: TensorData(lowest=np.array(r["min"], dtype=np.float32),
                             highest=np.array(r["max"], dtype=np.float32))
            for name, r in ranges.items()
        }
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), OUT / "minmax_data.json")

        ours_path = Path(tmp) / "ours.json"
        calibscope(*common, "--export", "ort", str(ours_path))
        ours = load_tensors_data(ours_path)
        assert ours.calibration_method == CalibrationMethod.MinMax, ours.calibration_method
        assert set(ours.keys()) == set(data.keys()), (set(ours.keys()) ^ set(data.keys()))
        for name, td in data.items():
            lo, hi = ours[name].range_value
            assert lo.dtype == np.float32 and hi.dtype == np.float32, name
            assert lo == td.lowest and hi == td.highest, (name, lo, hi, td.range_value)
    print(f"wrote {OUT / 'minmax_data.json'}; ONNX Runtime reads calibscope's cache back: "
          f"{len(data)} tensors, same ranges")


if __name__ == "__main__":
    sys.exit(main())
