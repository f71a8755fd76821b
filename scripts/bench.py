"""Driver of scripts/bench (run through it: it sets up the virtualenv).

Inputs (target/bench/): a 1 GiB float32 file, a folder of 200 layers of 4 MiB, and the
folder's values joined into one file. Times, on the same files, each a median of several runs
with the page cache warm:
  read      a plain sequential read of the file (the floor: what reading costs)
  3 passes  examples/read_floor: our reader making the analysis' three passes with no analysis
            (the floor of this design: the histograms need pass 1's range, the metrics need
            the ranges chosen from the histograms)
  ours      `calibscope report --format json` (all five methods, three percentiles, both casts,
            all metrics), with 2 threads and with --threads 1
  ort       ONNX Runtime's MinMaxCalibrater (through an Identity model, as quantize_static runs
            it) plus HistogramCollector entropy (2048 bins, 128 quantized levels) and percentile
            (2048 bins, 99.999), the way HistogramCalibrater feeds it: one batch per call
  modelopt  (with --modelopt) Model Optimizer's HistogramCalibrator: entropy, mse, percentile
Peak RSS comes from /usr/bin/time -v. With BASELINE=/path/to/an/older/calibscope in the
environment, that binary is timed on the same inputs too (before/after tables).

With --compare, only `calibscope compare` is timed instead: the 1 GiB file against a copy with
small noise added (a second 1 GiB file), against `cat` of both files, same run.

With --per-value, only the efficiency figures are measured (issue 18's yardstick): on a 256 MiB
float32 file of shape 256 x 262144 with four x30 outlier columns, the CPU time (user + sys) per
value of the default `calibscope report`, its wall time and peak RSS, and ONNX Runtime's minmax +
entropy + percentile calibrators' wall time on the same file, each a median of 5 in one run
(BASELINE, when set, is measured the same way in the same run).

With --kernels, the same report on the same file runs on one thread under `perf record` (5 runs)
and the samples are summed by kernel: CPU ns per value of each kernel (median of the runs), so a
change's effect on each kernel can be read off before and after (BASELINE too, when set).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

QUICK = "--quick" in sys.argv
MODELOPT = "--modelopt" in sys.argv
COMPARE = "--compare" in sys.argv
PER_VALUE = "--per-value" in sys.argv
KERNELS = "--kernels" in sys.argv
RUNS = 3 if QUICK else 5
OUT = "target/bench"
BIN = "target/release/calibscope"
FLOOR = "target/release/examples/read_floor"
BIG_ROWS = 64 if QUICK else 256  # rows of 2^20 float32 = 4 MiB each
SMALL = 50 if QUICK else 200


def make_data():
    many = f"{OUT}/many_{SMALL}"
    os.makedirs(many, exist_ok=True)
    big = f"{OUT}/big_{BIG_ROWS}.npy"
    if not os.path.exists(big):
        rng = np.random.default_rng(0)
        a = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(BIG_ROWS, 1 << 20))
        for i in range(BIG_ROWS):
            row = rng.standard_normal(1 << 20, dtype=np.float32)
            row[rng.integers(0, 1 << 20, 8)] *= 40  # a few outliers, as real activations have
            a[i] = row
        a.flush()
        del a
    for i in range(SMALL):
        p = f"{many}/layer{i:03d}.npy"
        if not os.path.exists(p):
            rng = np.random.default_rng(i + 1)
            np.save(p, rng.laplace(size=(16, 1 << 16)).astype(np.float32))
    # The same values as the folder in one file: the folder's time over this one's is the
    # per-file overhead alone (the 1 GiB file holds other values, which cost a little less).
    joined = f"{OUT}/many_joined_{SMALL}.npy"
    if not os.path.exists(joined):
        a = np.lib.format.open_memmap(joined, mode="w+", dtype=np.float32,
                                      shape=(16 * SMALL, 1 << 16))
        for i in range(SMALL):
            a[16 * i:16 * (i + 1)] = np.load(f"{many}/layer{i:03d}.npy")
        a.flush()
        del a
    return big, many, joined


def timed_cpu(cmd):
    """Wall seconds, CPU seconds (user + sys) and peak RSS (MiB) of a command."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 3):
        raise SystemExit(f"{cmd} failed: {r.stderr[-2000:]}")
    rss, cpu = 0.0, 0.0
    for line in r.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) / 1024
        elif "User time (seconds)" in line or "System time (seconds)" in line:
            cpu += float(line.split(":")[1])
    return dt, cpu, rss


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of a command."""
    dt, _, rss = timed_cpu(cmd)
    return dt, rss


def median_of(cmd):
    timed(cmd)  # warm the page cache and the binary
    runs = [timed(cmd) for _ in range(RUNS)]
    return statistics.median(t for t, _ in runs), max(r for _, r in runs)


def plain_read(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path))
        return ["cat"] + files
    return ["cat", path]


ORT_SCRIPT = r'''
import sys, time, numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto
from onnxruntime.quantization.calibrate import HistogramCollector, MinMaxCalibrater
import tempfile, os
paths = sys.argv[1:]
arrays = [np.load(p, mmap_mode="r") for p in paths]
shape = [None] + list(arrays[0].shape[1:])
x = helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)
y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)
g = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "g", [x], [y])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
d = tempfile.mkdtemp(); mp = os.path.join(d, "m.onnx"); onnx.save(m, mp)
class Reader:
    def __init__(self): self.it = (a[i:i+1] for a in arrays for i in range(a.shape[0]))
    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"X": np.ascontiguousarray(b, dtype=np.float32)}
out = {}
t = time.perf_counter()
c = MinMaxCalibrater(mp, op_types_to_calibrate=["Identity"], augmented_model_path=os.path.join(d, "a.onnx"))
c.augment_graph(); c.create_inference_session(); c.collect_data(Reader()); c.compute_data()
out["minmax"] = time.perf_counter() - t
for method, kw in (("entropy", dict(num_bins=2048, num_quantized_bins=128, percentile=99.999)),
                   ("percentile", dict(num_bins=2048, num_quantized_bins=128, percentile=99.999))):
    t = time.perf_counter()
    col = HistogramCollector(method=method, symmetric=(method == "percentile"), scenario="same", **kw)
    for a in arrays:
        for i in range(a.shape[0]):
            col.collect({"X": [np.ascontiguousarray(a[i:i+1], dtype=np.float32)]})
    col.compute_collection_result()
    out[method] = time.perf_counter() - t
print(__import__("json").dumps(out))
'''


def ort_time(paths):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(ORT_SCRIPT)
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, f.name] + paths,
                       capture_output=True, text=True)
    total = time.perf_counter() - t0
    if r.returncode != 0:
        return None, None, r.stderr[-1500:]
    parts = json.loads(r.stdout.strip().splitlines()[-1])
    rss = next(int(l.split(":")[1]) / 1024 for l in r.stderr.splitlines() if "Maximum resident" in l)
    return parts, rss, total


def compare_bench(big):
    """`calibscope compare` of the big file against a noisy copy, and `cat` of both."""
    test = big.replace(".npy", "_test.npy")
    if not os.path.exists(test):
        src = np.load(big, mmap_mode="r")
        a = np.lib.format.open_memmap(test, mode="w+", dtype=np.float32, shape=src.shape)
        rng = np.random.default_rng(1)
        for i in range(src.shape[0]):
            a[i] = src[i] + rng.uniform(-0.01, 0.01, src.shape[1]).astype(np.float32)
        a.flush()
        del a
    mib = (os.path.getsize(big) + os.path.getsize(test)) / 2**20
    t_read, _ = median_of(["cat", big, test])
    t_cmp, rss = median_of([BIN, "compare", "-q", "--format", "json", big, test])
    t_one, _ = median_of([BIN, "compare", "-q", "--format", "json", "--threads", "1", big, test])
    print(f"{'input':<22} {'MiB':>7} {'cat s':>8} {'compare s':>9} {'compare/cat':>11} "
          f"{'MB/s':>7} {'1 thread s':>10} {'peak RSS MiB':>12}")
    print(f"{'2 files (ref, test)':<22} {mib:>7.0f} {t_read:>8.3f} {t_cmp:>9.3f} "
          f"{t_cmp / t_read:>11.2f} {mib / t_cmp:>7.0f} {t_one:>10.3f} {rss:>12.0f}")


PV_ROWS, PV_COLS = 256, 262144


def per_value_file():
    """The 256 x 262144 float32 file with four x30 outlier columns (made once)."""
    os.makedirs(OUT, exist_ok=True)
    path = f"{OUT}/per_value_{PV_ROWS}x{PV_COLS}.npy"
    if not os.path.exists(path):
        rng = np.random.default_rng(18)
        a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(PV_ROWS, PV_COLS))
        outliers = rng.choice(PV_COLS, 4, replace=False)
        for i in range(PV_ROWS):
            row = rng.standard_normal(PV_COLS, dtype=np.float32)
            row[outliers] *= 30
            a[i] = row
        a.flush()
        del a
    return path


def per_value_bench():
    """Issue 18's figures: CPU ns per value of the default report, ONNX Runtime / ours."""
    path = per_value_file()
    values = PV_ROWS * PV_COLS
    bins = [("ours", BIN)]
    if os.environ.get("BASELINE"):
        bins.insert(0, ("baseline", os.environ["BASELINE"]))
    runs = {}
    for label, b in bins:
        timed_cpu([b, "report", "-q", "--format", "json", path])  # warm the cache and binary
    for _ in range(5):  # interleaved, so both binaries see the same machine
        for label, b in bins:
            runs.setdefault(label, []).append(
                timed_cpu([b, "report", "-q", "--format", "json", path]))
    ort = []
    for _ in range(5):
        parts, _, err = ort_time([path])
        if parts is None:
            print("ONNX Runtime run failed:", err)
            break
        ort.append(sum(parts.values()))
    print(f"file: {path} ({values} float32 values, {values * 4 / 2**20:.0f} MiB), medians of 5")
    print(f"{'binary':<10} {'wall s':>8} {'CPU s':>8} {'CPU ns/value':>13} {'peak RSS MiB':>13}"
          f" {'ORT / ours (wall)':>18}")
    t_ort = statistics.median(ort) if ort else float("nan")
    for label, _ in bins:
        r = runs[label]
        wall = statistics.median(t for t, _, _ in r)
        cpu = statistics.median(c for _, c, _ in r)
        rss = max(m for _, _, m in r)
        print(f"{label:<10} {wall:>8.3f} {cpu:>8.3f} {cpu / values * 1e9:>13.2f} {rss:>13.0f}"
              f" {t_ort / wall:>18.1f}")
    print(f"ONNX Runtime minmax + entropy + percentile: {t_ort:.2f} s wall (median of {len(ort)})")


# Where each sampled function's time goes: the first pattern a symbol contains names its kernel.
KERNEL_OF = [
    ("Prepared::fill", "pass 3: blocks widened to f64, loop"),
    ("LocalKey", "pass 3: blocks widened to f64, loop"),
    ("metrics::", "pass 3: per-tensor int quantizers"),
    ("formats::", "pass 3: FP8 / MX / NVFP4 rows"),
    ("fp8::", "pass 3: FP8 / MX / NVFP4 rows"),
    ("granularity::", "pass 3: token / channel / block rows"),
    ("cast::", "pass 1: float16 / bfloat16 cast audit"),
    ("histogram::", "pass 2: histograms"),
    ("Pass2", "pass 2: histograms"),
    ("Pass1", "pass 1: moments, extremes, row sums"),
    ("finite_extremes", "pass 1: moments, extremes, row sums"),
    ("row_sums", "pass 1: moments, extremes, row sums"),
    ("[k]", "kernel: reading the file, page faults"),
]


PERF_HZ = 4000


def kernel_profile(binary, path, values):
    """CPU ns per value by kernel of one single-threaded run under perf."""
    data = f"{OUT}/perf.data"
    r = subprocess.run(["perf", "record", "-q", "-F", str(PERF_HZ), "-o", data, "--",
                        binary, "report", "-q", "--format", "json", "--threads", "1", path],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode not in (0, 3):
        raise SystemExit(f"perf record failed: {r.stderr[-2000:]}")
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                          "--sort", "sym", "-F", "sample,sym", "-q"],
                         capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in rep.splitlines():
        parts = line.split(None, 1)
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        n, sym = int(parts[0]), parts[1]
        kernel = next((k for pat, k in KERNEL_OF if pat in sym), "other")
        counts[kernel] = counts.get(kernel, 0) + n
    # perf's cpu-clock takes one sample per 1/F s of CPU time.
    return {k: n / PERF_HZ / values * 1e9 for k, n in counts.items()}


def kernels_bench():
    """Issue 18's per-kernel figures: CPU ns per value of each kernel, one thread."""
    path = per_value_file()
    values = PV_ROWS * PV_COLS
    bins = [("ours", BIN)]
    if os.environ.get("BASELINE"):
        bins.insert(0, ("baseline", os.environ["BASELINE"]))
    runs = {label: [] for label, _ in bins}
    timed_cpu([BIN, "report", "-q", "--format", "json", path])  # warm the page cache
    for _ in range(5):
        for label, b in bins:
            runs[label].append(kernel_profile(b, path, values))
    names = sorted({k for r in runs.values() for p in r for k in p},
                   key=lambda k: -statistics.median(p.get(k, 0) for p in runs[bins[-1][0]]))
    print(f"file: {path} ({values} float32 values), one thread, CPU ns per value by kernel "
          "(perf cpu-clock samples, medians of 5)")
    print(f"{'kernel':<42}" + "".join(f"{label:>10}" for label, _ in bins))
    for k in names + ["total"]:
        cells = []
        for label, _ in bins:
            vals = [sum(p.values()) if k == "total" else p.get(k, 0.0) for p in runs[label]]
            cells.append(f"{statistics.median(vals):>10.2f}")
        print(f"{k:<42}" + "".join(cells))


def main():
    if KERNELS:
        kernels_bench()
        return
    if PER_VALUE:
        per_value_bench()
        return
    big, many, joined = make_data()
    if COMPARE:
        compare_bench(big)
        return
    size_big = os.path.getsize(big) / 2**20
    size_many = sum(os.path.getsize(os.path.join(many, f)) for f in os.listdir(many)) / 2**20
    size_joined = os.path.getsize(joined) / 2**20
    rows = []
    for label, path, size in (("1 file", big, size_big), (f"{SMALL} files", many, size_many),
                              ("joined", joined, size_joined)):
        t_read, _ = median_of(plain_read(path))
        t_floor, _ = median_of([FLOOR, path])
        t_ours, rss = median_of([BIN, "report", "-q", "--format", "json", path])
        t_one, _ = median_of([BIN, "report", "-q", "--format", "json", "--threads", "1", path])
        rows.append((label, size, t_read, t_floor, t_ours, t_one, rss))
        base = os.environ.get("BASELINE")
        if base:
            t_base, rss_base = median_of([base, "report", "-q", "--format", "json", path])
            print(f"baseline {label}: {t_base:.3f} s ({t_base / t_read:.1f}x read, "
                  f"peak RSS {rss_base:.0f} MiB); now {t_ours:.3f} s: {t_base / t_ours:.2f}x faster")
    print(f"{'input':<10} {'MiB':>7} {'read s':>8} {'3 passes s':>10} {'ours s':>8} "
          f"{'ours/read':>9} {'ours/3 passes':>13} {'MB/s':>7} {'1 thread s':>10} "
          f"{'2T speedup':>10} {'peak RSS MiB':>12}")
    for label, size, tr, tf, to, t1, rss in rows:
        print(f"{label:<10} {size:>7.0f} {tr:>8.3f} {tf:>10.3f} {to:>8.3f} {to / tr:>9.2f} "
              f"{to / tf:>13.2f} {size / to:>7.0f} {t1:>10.3f} {t1 / to:>10.2f} {rss:>12.0f}")
    mbs = [size / to for _, size, _, _, to, _, _ in rows]
    print(f"\n{SMALL} files run at {mbs[1] / mbs[0]:.2f} of the 1-file MB/s and at "
          f"{mbs[1] / mbs[2]:.2f} of the MB/s of the same values joined into one file "
          f"(\"joined\": the per-file overhead alone)")
    parts, rss, total = ort_time([big])
    if parts is None:
        print("ONNX Runtime run failed:", total)
    else:
        ort_sum = sum(parts.values())
        t_ours = rows[0][4]
        print(f"\nONNX Runtime on the 1-file input: minmax {parts['minmax']:.2f} s, entropy "
              f"{parts['entropy']:.2f} s, percentile {parts['percentile']:.2f} s; sum {ort_sum:.2f} s "
              f"(process {total:.1f} s, peak RSS {rss:.0f} MiB)")
        print(f"reference / ours: {ort_sum / t_ours:.1f}x (ours does all five methods, three "
              f"percentiles, both casts and exact metrics)")


if __name__ == "__main__":
    main()
