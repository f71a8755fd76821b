//! Micro-benchmarks of the hot kernels (`cargo bench --bench kernels`): the metrics pass
//! (quantize-dequantize error), the cast audit, the moments, the fine histogram, and the
//! entropy/MSE searches. One chunk is 1 Mi values (4 MiB of float32), as in the analysis.
#![allow(clippy::unwrap_used)]

use calibscope::analysis::metrics::ErrorAccum;
use calibscope::analysis::stats::Moments;
use calibscope::calib::{QParams, Scheme};
use calibscope::histogram::{Histogram, PairCounter};
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

#[divan::bench]
fn entropy_search_affine(b: Bencher) {
    let h = signed_hist();
    b.bench(|| calibscope::calib::entropy::affine(black_box(&h), 8));
}

#[divan::bench]
fn mse_search_affine(b: Bencher) {
    let h = signed_hist();
    b.bench(|| calibscope::calib::mse::affine(black_box(&h), 8));
}
