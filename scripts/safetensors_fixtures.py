#!/usr/bin/env python3
"""Rebuild tests/fixtures/safetensors/: the reference values the .safetensors loader tests use.

Dev-only (CI never runs it; the outputs are committed). Needs numpy, ml_dtypes 0.7.0, torch
and safetensors. Run from the repo root:

    python3 scripts/safetensors_fixtures.py

float8.json
    Every one of the 256 codes of float8_e4m3fn (safetensors F8_E4M3) and float8_e5m2
    (F8_E5M2) as ml_dtypes converts it to float32, given as the float32 bit pattern in hex.
torch.safetensors, torch.json
    A file written by safetensors' own torch writer with one small tensor of each dtype it
    shares with calibscope, a metadata block, and names in Hugging Face style; torch.json has
    each tensor's dtype, shape and values as torch converts them to float32 (bit patterns).
"""
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path("tests/fixtures/safetensors")


def bits(a):
    return [f"{int(b):08x}" for b in np.asarray(a, dtype=np.float32).ravel().view(np.uint32)]


def float8():
    codes = np.arange(256, dtype=np.uint8)
    table = {
        "ml_dtypes": ml_dtypes.__version__,
        "float8_e4m3fn": bits(codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)),
        "float8_e5m2": bits(codes.view(ml_dtypes.float8_e5m2).astype(np.float32)),
    }
    (OUT / "float8.json").write_text(json.dumps(table, indent=1) + "\n")


def torch_file():
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2, 3, 4, generator=g) * 3
    tensors = {
        "model.layers.0.mlp.down_proj.input": x.clone(),
        "model.layers.10.self_attn.o_proj.output": (x * 100).to(torch.float16),
        "model.layers.2.mlp.act": (x * 1e20).to(torch.bfloat16),
        "fp8.e4m3": (x * 40).to(torch.float8_e4m3fn),
        "fp8.e5m2": (x * 1e4).to(torch.float8_e5m2),
        "f64": (x.double() * 1e39),
        "i8": torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "i16": torch.tensor([-32768, 7, 32767], dtype=torch.int16),
        "i32": torch.tensor([-(2**31), 16777217, 2**31 - 1], dtype=torch.int32),
        "i64": torch.tensor([-(2**63), 2**53 + 1, 2**63 - 1], dtype=torch.int64),
        "bool": torch.tensor([[True, False], [False, True]]),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, OUT / "torch.safetensors", metadata={"format": "pt", "note": "fixture"})
    names = {
        torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.float64: "F64",
        torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32",
        torch.int64: "I64", torch.bool: "BOOL",
    }
    expect = {
        name: {
            "dtype": names[t.dtype],
            "shape": list(t.shape),
            "values": bits(t.to(torch.float32).numpy()),
        }
        for name, t in tensors.items()
    }
    (OUT / "torch.json").write_text(json.dumps(expect, indent=1) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    float8()
    torch_file()
