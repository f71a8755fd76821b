//! Entropy (KL-divergence) calibration (`calibration-reference.md`, Methods §3).
//!
//! * [`symmetric`]: TensorRT "EntropyCalibration2" exactly as NVIDIA Model Optimizer writes it
//!   (`modelopt/torch/quantization/calib/histogram.py`, `_compute_amax_entropy`), reproducing
//!   its choice bit for bit except where modelopt produces NaN (see [`symmetric`]).
//! * [`affine`]: ONNX Runtime's entropy calibrator (`HistogramCollector.get_entropy_threshold`
//!   in `onnxruntime/quantization/calibrate.py`) on its own histogram (x over ±max|x|, numpy's
//!   bins), reproducing its choice: float32 as ORT, up to numpy's float32 log (see [`affine`]).

mod affine;
mod symmetric;
#[cfg(test)]
mod tests;

pub use affine::affine;
pub use symmetric::symmetric;

use super::scheme::clamp_bits;
use super::{Found, Search, near_minimum};
use crate::histogram::Histogram;

/// First candidate bin count of Model Optimizer's search (`start_bin=128`).
pub(super) const START_BIN: usize = 128;
/// ONNX Runtime's `smooth_distribution` epsilon (also MXNet's).
pub(super) const ORT_EPS: f64 = 1e-4;

/// numpy's `add.reduce` on a contiguous float64 or float32 array (`pairwise_sum` in
/// `loops_utils.h`: 8 accumulators in blocks of at most 128, halves split at multiples of 8).
/// scipy's `entropy` and ORT's sum with it, so reproducing their tie-breaking needs the same
/// association order. Exact for arrays shorter than numpy's 8192-element buffer, which covers
/// every search here.
pub(super) fn pairwise_sum<T: Copy + Default + std::ops::Add<Output = T>>(a: &[T]) -> T {
    let n = a.len();
    if n < 8 {
        let mut res = T::default();
        for &x in a {
            res = res + x;
        }
        res
    } else if n <= 128 {
        let mut r = [T::default(); 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj = *rj + a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[whole..] {
            res = res + x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `scipy.special.rel_entr`: x·ln(x/y), 0 for x = 0, ∞ for x > 0 = y.
#[inline]
pub(super) fn rel_entr(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Saturating sum of counts (u64 cannot overflow in practice; never panic if it would).
pub(super) fn count_sum(c: &[u64]) -> u64 {
    c.iter().fold(0u64, |a, &b| a.saturating_add(b))
}

/// Windows per parallel work item of the affine search.
pub(super) const CHUNK: usize = 64;
