//! Micro-benchmarks of the hot kernels (`cargo bench --bench kernels`): the metrics pass
//! (quantize-dequantize error), the cast audit, the moments, the fine histogram, and the
//! entropy/MSE searches. One chunk is 1 Mi values (4 MiB of float32), as in the analysis.
#![allow(clippy::unwrap_used)]

use calibscope::analysis::metrics::ErrorAccum;
use calibscope::analysis::stats::Moments;
use calibscope::calib::{QParams, Scheme};
use calibscope::histogram::{Histogram, NumpyBins, PairCounter};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const N: usize = 1 << 20;

/// Deterministic heavy-ish tailed values (no RNG dependency).
fn values() -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            let g = (u - 0.5) * 6.0;
            (g * g * g) as f32
        })
        .collect()
}

#[divan::bench]
fn metrics_one_method(b: Bencher) {
    let v = values();
    let q = QParams::new(Scheme::Symmetric, 8, -20.0, 20.0);
    b.counter(divan::counter::ItemsCount::new(N))
        .bench(|| ErrorAccum::of_chunk(&q, black_box(&v)));
}

/// Both casts (float16 and bfloat16) in one sweep, as pass 1 runs them.
#[divan::bench]
fn cast_audit_both(b: Bencher) {
    let v = values();
    b.counter(divan::counter::ItemsCount::new(N))
        .bench(|| calibscope::analysis::cast::audit_chunk(black_box(&v)));
}

#[divan::bench]
fn moments(b: Bencher) {
    let v = values();
    b.counter(divan::counter::ItemsCount::new(N))
        .bench(|| Moments::of_chunk(black_box(&v)));
}

#[divan::bench]
fn fine_histograms(b: Bencher) {
    let v = values();
    let (h, a) = (
        Histogram::new(-27.0, 27.0, 65536),
        Histogram::new(0.0, 27.0, 65536),
    );
    let template = PairCounter::new(&h, &a);
    // As pass 2 runs it: one sweep filling both u32 counters of a worker.
    b.counter(divan::counter::ItemsCount::new(N)).bench(|| {
        let mut c = template.clone();
        c.add(black_box(&v));
        c
    });
}

fn abs_hist() -> Histogram {
    let mut h = Histogram::new(0.0, 27.0, 2048);
    h.add_abs_values(&values());
    h
}

#[divan::bench]
fn entropy_search(b: Bencher) {
    let h = abs_hist();
    b.bench(|| calibscope::calib::entropy::symmetric(black_box(&h), 8));
}

#[divan::bench]
fn mse_search(b: Bencher) {
    let h = abs_hist();
    b.bench(|| calibscope::calib::mse::symmetric(black_box(&h), 8));
}

fn signed_hist() -> Histogram {
    let mut h = Histogram::new(-27.0, 27.0, 2048);
    h.add_values(&values());
    h
}

/// ONNX Runtime's entropy histogram (x over ±max|x|, numpy's bins) of the values: (it, min, max).
fn entropy_hist() -> (Histogram, f64, f64) {
    let v = values();
    let absmax = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    let bins = NumpyBins::new(-absmax, absmax, 2048);
    let mut counts = vec![0; 2048];
    bins.add(&v, &mut counts);
    let (min, max) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    (bins.histogram(counts), f64::from(min), f64::from(max))
}

#[divan::bench]
fn entropy_search_affine(b: Bencher) {
    let (h, min, max) = entropy_hist();
    b.bench(|| calibscope::calib::entropy::affine(black_box(&h), min, max, 8));
}

/// Pass 2's extra sweep for `--scheme affine`: ONNX Runtime's entropy histogram.
#[divan::bench]
fn entropy_histogram(b: Bencher) {
    let v = values();
    let bins = NumpyBins::new(-27.0, 27.0, 2048);
    b.counter(divan::counter::ItemsCount::new(N)).bench(|| {
        let mut c = vec![0u64; 2048];
        bins.add(black_box(&v), &mut c);
        c
    });
}

#[divan::bench]
fn mse_search_affine(b: Bencher) {
    let h = signed_hist();
    b.bench(|| calibscope::calib::mse::affine(black_box(&h), 8));
}
