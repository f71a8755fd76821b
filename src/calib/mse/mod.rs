//! MSE calibration (`calibration-reference.md`, Methods §4): the range whose quantize-dequantize
//! of the histogram's bin centres has the least count-weighted squared error.
//!
//! * [`symmetric`]: NVIDIA Model Optimizer's `_compute_amax_mse` with its `fake_tensor_quant`
//!   call fixed (reference README §5 item 8; the `modelopt.hist.mse_argfix` results).
//! * [`affine`]: our own coarse-to-fine search over pairs of bin edges.

mod affine;
pub mod fp8;
mod symmetric;
#[cfg(test)]
mod tests;

pub use affine::affine;
pub use fp8::fp8;
pub use symmetric::symmetric;

use super::{Found, QParams, Scheme, Search};
use crate::histogram::Histogram;

/// (centre, count) of the nonzero bins: empty bins add nothing to any error.
pub(super) fn weighted_centres(h: &Histogram) -> Vec<(f64, f64)> {
    h.counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(i, &c)| (h.centre(i), c as f64))
        .collect()
}
/// Candidates the symmetric search scores together, one per lane.
pub(super) const LANES: usize = 8;

/// Prefix sums of w, w·c and w·c² over (centre, weight) pairs (entry k: over the first k),
/// and the totals of w, w·|c| and w·c²: what both searches' bounds and fast scores read.
pub(super) type PrefixSums = (Vec<f64>, Vec<f64>, Vec<f64>, [f64; 3]);

pub(super) fn prefix_sums(pairs: impl ExactSizeIterator<Item = (f64, f64)>) -> PrefixSums {
    let n = pairs.len() + 1;
    let (mut p0, mut p1, mut p2) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut s0, mut s1, mut s2, mut a1) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (c, w) in pairs {
        p0.push(s0);
        p1.push(s1);
        p2.push(s2);
        s0 += w;
        s1 += w * c;
        s2 += w * c * c;
        a1 += w * c.abs();
    }
    p0.push(s0);
    p1.push(s1);
    p2.push(s2);
    (p0, p1, p2, [s0, a1, s2])
}

/// Adds w·(end − c)² per lane: centres every lane's quantizer maps to its `end` (clipped).
#[inline(always)]
pub(super) fn add_clipped(acc: &mut [f64; LANES], cs: &[f64], ws: &[f64], end: &[f64; LANES]) {
    for (&c, &w) in cs.iter().zip(ws) {
        for l in 0..LANES {
            let d = end[l] - c;
            acc[l] += w * d * d;
        }
    }
}
