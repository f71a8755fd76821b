//! The FP8-aware MSE search (`mse_fp8`): the amax whose FP8 quantize-dequantize of the |x|
//! histogram's bin centres has the least count-weighted squared error. The same candidates as
//! the symmetric int search (bin centres 128..2047 of the 2048-bin |x| histogram, first
//! minimum), but each scored on the FP8 grid: x̂ = fp8(clamp(c·(M/a), −M, M))·(a/M) in float32
//! (README "Formats").

use rayon::prelude::*;

use super::symmetric::START_BIN;
use super::{LANES, weighted_centres};
use crate::calib::Search;
use crate::formats::FpFormat;
use crate::histogram::Histogram;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

/// Candidates per parallel piece.
const PIECE: usize = 64;

/// The search on a 2048-bin |x| histogram for element format `fmt`.
pub fn fp8(abs_hist: &Histogram, fmt: &FpFormat) -> Search {
    let nbins = abs_hist.bins();
    let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(abs_hist).into_iter().unzip();
    let cs: Vec<f32> = cs.iter().map(|&c| c as f32).collect();
    let start = START_BIN.min(nbins.saturating_sub(1));
    let amax: Vec<f32> = (start..nbins)
        .map(|i| abs_hist.centre(i).abs() as f32)
        .collect();
    let errs: Vec<f64> = amax
        .par_chunks(PIECE)
        .flat_map_iter(|piece| {
            piece
                .iter()
                .map(|&a| sse(&cs, &ws, a, fmt))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut best = f64::INFINITY;
    let mut best_a = abs_hist.hi.abs() as f32;
    for (n, (&e, &a)) in errs.iter().zip(&amax).enumerate() {
        // Strict `<`: the first minimum, as the int search.
        if e < best || n == 0 {
            best = e;
            best_a = a;
        }
    }
    let a = f64::from(best_a);
    Search {
        lo: -a,
        hi: a,
        candidates: amax.len(),
    }
}

/// Σ w·(x̂(c) − c)² for amax `a` (0 for an amax the scales refuse: every x̂ would be exact 0
/// only for an all-zero histogram, where the centres are 0 too).
pub(crate) fn sse(cs: &[f32], ws: &[f64], a: f32, fmt: &FpFormat) -> f64 {
    let Some((inv, s)) = fmt.tensor_scales(a) else {
        return ws
            .iter()
            .zip(cs)
            .map(|(w, &c)| w * f64::from(c).powi(2))
            .sum();
    };
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return sse_avx2(cpu, cs, ws, inv, s, fmt);
    }
    sse_lanes(cs, ws, inv, s, fmt)
}

/// [`sse_lanes`] compiled for AVX2 (the same operations: the same sum).
#[cfg(target_arch = "x86_64")]
fn sse_avx2(_: Avx2, cs: &[f32], ws: &[f64], inv: f32, s: f32, fmt: &FpFormat) -> f64 {
    #[target_feature(enable = "avx2")]
    fn run(cs: &[f32], ws: &[f64], inv: f32, s: f32, fmt: &FpFormat) -> f64 {
        sse_lanes(cs, ws, inv, s, fmt)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(cs, ws, inv, s, fmt) }
}

/// Centre j into lane j mod 8, the lanes summed in order.
#[inline(always)]
pub(crate) fn sse_lanes(cs: &[f32], ws: &[f64], inv: f32, s: f32, fmt: &FpFormat) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (c8, c_rest) = cs.as_chunks::<LANES>();
    let (w8, w_rest) = ws.as_chunks::<LANES>();
    for (c, w) in c8.iter().zip(w8) {
        for k in 0..LANES {
            let d = f64::from(fmt.qdq(c[k], inv, s)) - f64::from(c[k]);
            acc[k] += w[k] * d * d;
        }
    }
    for (k, (&c, &w)) in c_rest.iter().zip(w_rest).enumerate() {
        let d = f64::from(fmt.qdq(c, inv, s)) - f64::from(c);
        acc[k] += w * d * d;
    }
    acc.iter().sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::calib::test_support::gaussian_counts;
    use crate::formats::{E4M3, E5M2};

    #[test]
    fn on_a_gaussian_the_search_keeps_nearly_the_whole_range() {
        let h = gaussian_counts(0.0, 4.0, 2048, 1e6, true);
        let s = fp8(&h, &E4M3);
        assert_eq!(s.candidates, 2048 - 128);
        assert!(s.hi > 0.0 && s.hi <= 4.0 && s.lo == -s.hi);
        // FP8's relative error is flat over its range: clipping the Gaussian tail costs more
        // than it saves, so the search keeps (nearly) the whole range.
        assert!(s.hi > 3.5, "{}", s.hi);
        // The chosen amax scores no worse than min-max's.
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
        let cs: Vec<f32> = cs.iter().map(|&c| c as f32).collect();
        let top = h.centre(2047) as f32;
        assert!(sse(&cs, &ws, s.hi as f32, &E4M3) <= sse(&cs, &ws, top, &E4M3));
    }

    #[test]
    fn the_lanes_sum_as_a_plain_loop_and_avx2_as_the_lanes() {
        let cs: Vec<f32> = (0..1003)
            .map(|i| (i as f32 * 0.37).sin().abs() * 9.0)
            .collect();
        let ws: Vec<f64> = (0..1003).map(|i| (i % 7) as f64).collect();
        for fmt in [E4M3, E5M2] {
            for a in [0.5f32, 3.0, 9.0, 100.0] {
                let (inv, s) = fmt.tensor_scales(a).unwrap();
                let got = sse_lanes(&cs, &ws, inv, s, &fmt);
                let mut lanes = [0.0f64; LANES];
                for (j, (&c, &w)) in cs.iter().zip(&ws).enumerate() {
                    let d = f64::from(fmt.quantize(c * inv) * s) - f64::from(c);
                    lanes[j % LANES] += w * d * d;
                }
                assert_eq!(got.to_bits(), lanes.iter().sum::<f64>().to_bits());
                #[cfg(target_arch = "x86_64")]
                if let Some(cpu) = simd::avx2() {
                    assert_eq!(
                        sse_avx2(cpu, &cs, &ws, inv, s, &fmt).to_bits(),
                        got.to_bits()
                    );
                }
            }
        }
    }
}
