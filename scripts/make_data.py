#!/usr/bin/env python3
"""Generate the sample activation dumps in data/ that calibscope opens by default.

Dev-only tool: CI never runs it, the outputs are committed. Needs numpy and ml_dtypes
(`pip install numpy ml_dtypes`). Run from the repo root:

    python3 scripts/make_data.py

Everything is synthetic and deterministic (one fixed seed per file; re-running gives
byte-identical files with the same numpy/zlib, including the .npz, whose zip
timestamps are fixed). Axis 0 is
always the batch / token axis, so calibrators see one batch per row of axis 0.

Files (float32 little-endian unless noted):

01_conv1_relu.npy  (8, 32, 16, 16)
    Post-ReLU conv output in NCHW. Per-channel scale (log-normal) and bias, chosen so that
    about half of the values are exact zeros; channel 7 is "dead" (all zeros). One-sided
    data: symmetric int8 wastes half its codes, uint8 affine does not; per-channel ranges
    differ by ~10x.
02_block_gelu.npy  (32, 2048)
    Exact-erf GELU of N(-0.2, 1.3) pre-activations with slightly varying per-channel scale.
    Well-behaved: min ~ -0.17, no outliers; every calibration method should agree closely.
03_attn_scores_heavy_tail.npy  (8, 8, 32, 32)
    Pre-softmax attention logits (batch, head, query, key): Laplace with a per-head
    scale (0.7..1.8), plus exactly 4 planted outliers (-210, -150, 180, 260) so that
    max|x| is ~15x the 99.99th percentile of |x| (~17). Min-max wastes nearly the whole int8
    grid on 4 values; percentile / entropy / MSE clip them.
04_layernorm_outlier_channels.npy  (128, 512) = (tokens, hidden)
    LayerNorm output (gamma ~ 1, small beta) with 4 systematic outlier channels
    (37, 211, 300, 466) of fixed sign per channel and magnitude ~36..85 (centres 48..75), i.e. 45-100x the
    typical |x| ~ 0.8 of the rest (the LLM.int8 "outlier feature" pattern). Per-tensor
    int8 ranges are dominated by those 4 channels; per-channel ranges are not.
05_mlp_fp16_overflow.npy  (16, 4096)
    MLP up-projection intermediate. Rows 0-7: moderate (row sum of squares < 65504).
    Rows 8-13: larger scale, every element fits fp16 but each row's sum of squares
    exceeds 65504 (an fp16 RMSNorm / L2 norm would overflow). Rows 14 and 15 (whose sums
    of squares overflow too, ~1.7e10 and ~8.4e10) carry
    "massive activations" in channels 1415 and 2718: 70000, -91000, 130000, -250000 overflow
    float16 to +-inf, and two edge values test the rounding boundary: 65519.0 rounds down
    to 65504 (no overflow) while 65520.0 is a tie that rounds to even = inf (overflow).
    bfloat16 keeps all of them finite.
06_tiny_grads_fp16_underflow.npy  (16, 4096)
    Gradient-like tensor: 10% exact zeros, the rest random sign with log-uniform magnitude
    in [1e-9, 1e-5]. In float16 everything nonzero is below the smallest normal (6.1e-5):
    magnitudes below ~2.98e-8 flush to zero (~37% of the nonzero values) and the rest
    become subnormals with large relative error. bfloat16 keeps them all normal.
07_with_nan.npy  (32, 1024)
    N(0, 0.8) with 4 NaN and one +Inf: NaN at [0,0] (the first element of batch 0, the
    position where ONNX Runtime's ReduceMin/Max propagates NaN), [5,17], [20,1000],
    [31,512]; +Inf at [12,345]. float16/bfloat16 casts are harmless here. The tool should report 4 NaN / 1 +Inf and calibrate the
    32763 finite values (or refuse, per option).
08_embeddings_bf16.npy  (512, 256) bfloat16
    Token-embedding-like table written with ml_dtypes.bfloat16: N(0, 0.02) per element,
    dims 0-3 with 8x scale, and a few rare-token rows with 3x norm. NOTE: numpy has no
    bfloat16 type code, so the .npy header says descr '<V2' (2-byte void); that is what
    ml_dtypes + np.save produce, and the tool must read '<V2' as bfloat16. The values are
    already bf16-exact (bf16 cast error 0); casting to fp16 makes the smallest ones
    (|x| < 6.1e-5) subnormal.
09_small_mlp.npz  (members, float32)
    Activations of a small network that was really trained here, in pure numpy: a
    2 -> 64 -> 64 -> 3 MLP (ReLU, then tanh) on a synthetic 3-arm 2-D spiral (1536 training
    points, noise 0.2), full-batch Adam (lr 0.01) for 800 steps, seed 9. Train accuracy
    1.00, held-out accuracy 1.00 on 1200 fresh points (printed when run). The members are recorded on a
    separate calibration batch of 256 fresh points (seed 109):
      input (256,2), fc1_pre (256,64), fc1_relu (256,64), fc2_pre (256,64),
      fc2_tanh (256,64), logits (256,3).
    fc1_relu is one-sided with many zeros, fc2_tanh saturates near +-1 (mass piled at the
    range ends, where clipping hurts), logits are wide. Written like np.savez_compressed
    (one deflated .npy member per tensor) with fixed zip timestamps.
10_attn_probs_fp16.npy  (8, 8, 32, 32) float16 ('<f2')
    Softmax of attention logits, stored as float16: in [0, 1], each key row sums to ~1,
    many tiny probabilities: ~16% of the stored values are fp16 subnormals and 0.5% already
    underflowed to 0 when written. Exercises the fp16 read path.
11_silu_bigendian.npy  (32, 1024) big-endian float32 ('>f4')
    SiLU of N(0, 2): min ~ -0.278, long positive tail. Exercises the byte-swap read path.

The compare sample (`calibscope compare examples/compare/ref examples/compare/int8`) lives
outside data/ so that `calibscope data` is unchanged:

examples/compare/ref/*.npy, examples/compare/int8/*.npy  (float32)
    The trained MLP of 09_small_mlp.npz run on 64 fresh points (seed 110), its five layer
    outputs dumped as 01_fc1_pre (64,64), 02_fc1_relu, 03_fc2_pre, 04_fc2_tanh (64,64) and
    05_logits (64,3): once in float32 (ref/) and once with int8 fake-quantized inputs to each
    linear layer (int8/): symmetric per-tensor, scale from the max |x| of the calibration batch
    of 09_small_mlp.npz, except fc2's input, whose range comes from the 90th percentile of |x|
    (a badly calibrated quantizer that clips the top 10%). The error enters at 03_fc2_pre
    (SQNR well below 20 dB, a large drop), and 04_fc2_tanh and 05_logits inherit it.
"""
import io
import math
import os
import time
import unittest.mock
import zipfile

import ml_dtypes
import numpy as np

OUT = "data"
SAVED = []


def save(name, arr):
    path = os.path.join(OUT, name)
    np.save(path, arr, allow_pickle=False)
    SAVED.append(path)
    return arr


def summary(name, a):
    f = np.asarray(a, dtype=np.float64)
    fin = f[np.isfinite(f)]
    aa = np.abs(fin)
    print("%-36s %-14s %-18s min=% .4g max=% .4g p99.99|x|=%.4g zeros=%.3f nan=%d inf=%d" % (
        name, str(a.dtype), str(a.shape), fin.min(), fin.max(),
        np.percentile(aa, 99.99), np.mean(fin == 0), np.isnan(f).sum(), np.isinf(f).sum()))


def gelu_exact(x):
    erf = np.frompyfunc(math.erf, 1, 1)
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64)))


def conv1_relu():
    rng = np.random.default_rng(1)
    n, c, h, w = 8, 32, 16, 16
    scale = np.exp(rng.normal(0.0, 0.6, size=c))            # per-channel scale, ~10x spread
    bias = rng.normal(0.0, 0.5, size=c) * scale               # ~half of pre-acts negative
    pre = rng.normal(size=(n, c, h, w)) * scale[None, :, None, None] + bias[None, :, None, None]
    pre[:, 7] = -np.abs(pre[:, 7]) - 0.1                      # dead channel
    return np.maximum(pre, 0.0).astype(np.float32)


def block_gelu():
    rng = np.random.default_rng(2)
    ch_scale = rng.uniform(0.9, 1.1, size=2048)
    pre = rng.normal(-0.2, 1.3, size=(32, 2048)) * ch_scale
    return gelu_exact(pre).astype(np.float32)


def attn_scores_heavy_tail():
    rng = np.random.default_rng(3)
    b, hds, q, k = 8, 8, 32, 32
    temp = rng.uniform(0.7, 1.8, size=hds)
    x = rng.laplace(0.0, 1.0, size=(b, hds, q, k)) * temp[None, :, None, None]
    # exactly 4 planted outliers (< 0.01% of 65536 elements, so p99.99 stays in the bulk)
    for (idx, v) in [((0, 3, 5, 9), 180.0), ((2, 6, 17, 0), -150.0),
                     ((5, 1, 30, 30), 260.0), ((7, 3, 12, 31), -210.0)]:
        x[idx] = v
    return x.astype(np.float32)


def layernorm_outliers():
    rng = np.random.default_rng(4)
    t, d = 128, 512
    z = rng.normal(size=(t, d))
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    gamma = rng.normal(1.0, 0.1, size=d)
    beta = rng.normal(0.0, 0.05, size=d)
    y = z * gamma + beta
    for ch, centre in [(37, -62.0), (211, 48.0), (300, 75.0), (466, -55.0)]:
        y[:, ch] = centre + rng.normal(0.0, 5.0, size=t)
    return y.astype(np.float32)


def mlp_fp16_overflow():
    rng = np.random.default_rng(5)
    r, d = 16, 4096
    ch = np.exp(rng.normal(0.0, 0.4, size=d))
    row = np.concatenate([rng.uniform(0.8, 1.6, 8), rng.uniform(5.0, 9.0, 6), [1.2, 1.2]])
    x = rng.normal(size=(r, d)) * ch[None, :] * row[:, None]
    x[14, 1415] = 70000.0
    x[14, 2718] = -91000.0
    x[15, 1415] = 130000.0
    x[15, 2718] = -250000.0
    x[14, 100] = 65519.0     # rounds to 65504 in fp16: no overflow
    x[15, 100] = 65520.0     # halfway to 65536 -> ties-to-even -> inf: overflow
    x = x.astype(np.float32)
    ss = (x.astype(np.float64) ** 2).sum(1)
    assert (ss[:8] < 65504).all() and (ss[8:] > 65504).all(), ss
    return x


def tiny_grads():
    rng = np.random.default_rng(6)
    shape = (16, 4096)
    mag = 10.0 ** rng.uniform(-9.0, -5.0, size=shape)
    x = mag * rng.choice([-1.0, 1.0], size=shape)
    x[rng.random(shape) < 0.10] = 0.0
    return x.astype(np.float32)


def with_nan():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(32, 1024)) * 0.8).astype(np.float32)
    for i, j in [(0, 0), (5, 17), (20, 1000), (31, 512)]:
        x[i, j] = np.nan
    x[12, 345] = np.inf
    return x


def embeddings_bf16():
    rng = np.random.default_rng(8)
    v, d = 512, 256
    e = rng.normal(0.0, 0.02, size=(v, d))
    e[:, :4] *= 8.0
    e[rng.choice(v, 6, replace=False)] *= 3.0
    return e.astype(np.float32).astype(ml_dtypes.bfloat16)


def spiral(rng, n_per_class, k=3, noise=0.2):
    xs, ys = [], []
    for c in range(k):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(c * 2 * np.pi / k, c * 2 * np.pi / k + 2.0 * np.pi, n_per_class)
        t = t + rng.normal(0.0, noise, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1) * 2.0)
        ys.append(np.full(n_per_class, c))
    x = np.concatenate(xs).astype(np.float64)
    y = np.concatenate(ys)
    p = rng.permutation(len(y))
    return x[p], y[p]


def small_mlp():
    rng = np.random.default_rng(9)
    x, y = spiral(rng, 512)
    sizes = [2, 64, 64, 3]
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.normal(0.0, math.sqrt(2.0 / a), size=(a, b)), np.zeros(b)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]

    def forward(p, xb):
        w1, b1, w2, b2, w3, b3 = p
        h1p = xb @ w1 + b1
        h1 = np.maximum(h1p, 0.0)
        h2p = h1 @ w2 + b2
        h2 = np.tanh(h2p)
        lg = h2 @ w3 + b3
        return h1p, h1, h2p, h2, lg

    yoh = np.eye(3)[y]
    lr, b1m, b2m, eps = 0.01, 0.9, 0.999, 1e-8
    for step in range(1, 801):
        w1, b1, w2, b2, w3, b3 = params
        h1p, h1, h2p, h2, lg = forward(params, x)
        pr = np.exp(lg - lg.max(1, keepdims=True))
        pr /= pr.sum(1, keepdims=True)
        g = (pr - yoh) / len(y)
        gw3, gb3 = h2.T @ g, g.sum(0)
        g2 = (g @ w3.T) * (1.0 - h2 ** 2)
        gw2, gb2 = h1.T @ g2, g2.sum(0)
        g1 = (g2 @ w2.T) * (h1p > 0)
        gw1, gb1 = x.T @ g1, g1.sum(0)
        grads = [gw1, gb1, gw2, gb2, gw3, gb3]
        for i, gr in enumerate(grads):
            m[i] = b1m * m[i] + (1 - b1m) * gr
            v[i] = b2m * v[i] + (1 - b2m) * gr ** 2
            mh = m[i] / (1 - b1m ** step)
            vh = v[i] / (1 - b2m ** step)
            params[i] = params[i] - lr * mh / (np.sqrt(vh) + eps)
    train_acc = (forward(params, x)[-1].argmax(1) == y).mean()
    xt, yt = spiral(np.random.default_rng(1009), 400)
    test_acc = (forward(params, xt)[-1].argmax(1) == yt).mean()
    print("09_small_mlp: spiral MLP train acc %.4f, held-out acc %.4f" % (train_acc, test_acc))

    crng = np.random.default_rng(109)
    xc, _ = spiral(crng, 512)
    xc = xc[:256]
    h1p, h1, h2p, h2, lg = forward(params, xc)
    members = {"input": xc, "fc1_pre": h1p, "fc1_relu": h1, "fc2_pre": h2p,
               "fc2_tanh": h2, "logits": lg}
    TRAINED["params"] = params
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in members.items()}


TRAINED = {}


def fake_quant(x, absmax, bits=8):
    """Symmetric per-tensor fake quantization: round to the grid, clip to its ends."""
    qmax = 2 ** (bits - 1) - 1
    s = np.float32(absmax / qmax)
    return (np.clip(np.rint(x / s), -qmax, qmax) * s).astype(np.float32)


def compare_sample(calib):
    """The trained MLP in float32 and with int8 inputs to each linear layer (see docstring)."""
    w1, b1, w2, b2, w3, b3 = [np.asarray(p, dtype=np.float32) for p in TRAINED["params"]]
    xs, _ = spiral(np.random.default_rng(110), 512)
    x = xs[:64].astype(np.float32)
    # Input ranges from the calibration batch; fc2's from a too-low percentile.
    r_in = np.abs(calib["input"]).max()
    r_fc2 = np.percentile(np.abs(calib["fc1_relu"]), 90.0)
    r_fc3 = np.abs(calib["fc2_tanh"]).max()

    def run(q1, q2, q3):
        h1p = q1(x) @ w1 + b1
        h1 = np.maximum(h1p, np.float32(0.0))
        h2p = q2(h1) @ w2 + b2
        h2 = np.tanh(h2p)
        lg = q3(h2) @ w3 + b3
        return {"01_fc1_pre": h1p, "02_fc1_relu": h1, "03_fc2_pre": h2p,
                "04_fc2_tanh": h2, "05_logits": lg}

    same = lambda a: a
    ref = run(same, same, same)
    int8 = run(lambda a: fake_quant(a, r_in), lambda a: fake_quant(a, r_fc2),
               lambda a: fake_quant(a, r_fc3))
    for side, acts in [("ref", ref), ("int8", int8)]:
        d = os.path.join("examples", "compare", side)
        os.makedirs(d, exist_ok=True)
        for name, a in acts.items():
            path = os.path.join(d, name + ".npy")
            np.save(path, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
            SAVED.append(path)
    for name in ref:
        r = ref[name].astype(np.float64)
        e = int8[name].astype(np.float64) - r
        print("compare %-12s SQNR %.1f dB" % (name, 10 * np.log10((r * r).sum() / (e * e).sum())))


def savez_deterministic(name, members):
    """np.savez_compressed with reproducible zip timestamps.

    numpy 2.x already stamps members 1980-01-01; older numpy uses the current local time,
    which the patch pins to 2024-01-01 so that re-running never changes the bytes."""
    path = os.path.join(OUT, name)
    fixed = time.struct_time((2024, 1, 1, 0, 0, 0, 0, 1, 0))
    with unittest.mock.patch.object(zipfile.time, "localtime", lambda *a: fixed):
        np.savez_compressed(path, **members)
    SAVED.append(path)


def attn_probs_fp16():
    rng = np.random.default_rng(10)
    b, hds, q, k = 8, 8, 32, 32
    temp = rng.uniform(1.0, 4.0, size=hds)
    lg = rng.normal(size=(b, hds, q, k)) * temp[None, :, None, None]
    pr = np.exp(lg - lg.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    return pr.astype(np.float16)


def silu_bigendian():
    rng = np.random.default_rng(11)
    pre = rng.normal(0.0, 2.0, size=(32, 1024))
    y = pre / (1.0 + np.exp(-pre))
    return y.astype(">f4")


def main():
    os.makedirs(OUT, exist_ok=True)
    files = [
        ("01_conv1_relu.npy", conv1_relu),
        ("02_block_gelu.npy", block_gelu),
        ("03_attn_scores_heavy_tail.npy", attn_scores_heavy_tail),
        ("04_layernorm_outlier_channels.npy", layernorm_outliers),
        ("05_mlp_fp16_overflow.npy", mlp_fp16_overflow),
        ("06_tiny_grads_fp16_underflow.npy", tiny_grads),
        ("07_with_nan.npy", with_nan),
        ("08_embeddings_bf16.npy", embeddings_bf16),
    ]
    for name, fn in files:
        a = save(name, fn())
        summary(name, a)
    mem = small_mlp()
    savez_deterministic("09_small_mlp.npz", mem)
    for k, a in mem.items():
        summary("09_small_mlp.npz/" + k, a)
    compare_sample(mem)
    for name, fn in [("10_attn_probs_fp16.npy", attn_probs_fp16),
                     ("11_silu_bigendian.npy", silu_bigendian)]:
        a = save(name, fn())
        summary(name, a)
    total = sum(os.path.getsize(p) for p in SAVED)
    print("total %d bytes (%.2f MiB)" % (total, total / 2 ** 20))


if __name__ == "__main__":
    main()
