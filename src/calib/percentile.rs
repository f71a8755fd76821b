//! Percentile calibration, nearest rank (`calibration-reference.md` §5): with n finite values,
//! k = ceil(p/100·n) and a = the k-th smallest |x| (numpy `method="inverted_cdf"`).
//!
//! We read the value off a fine histogram (65536 bins in the analysis): the result is the upper
//! edge of the bin holding the k-th value, so it lies at most one fine bin (range/65536) above
//! the exact order statistic and never clips that value. The references (Model Optimizer, ONNX
//! Runtime) read a 2048-bin histogram's *left* edge instead, which may lie up to 1/2048 of the
//! range below it.
//! Affine form: (100 − p)/2 % cut from each side of x (ONNX Runtime's convention).

use super::Search;
use crate::histogram::Histogram;

/// Rank of the p-th percentile among n values (1-based, nearest rank).
pub fn nearest_rank(p: f64, n: u64) -> u64 {
    let x = p / 100.0 * n as f64;
    // 99.9/100·10000 is 9990.000000000002 in binary: snap near-integers so k is not one too high.
    let k = if (x - x.round()).abs() <= 1e-9 * x.max(1.0) {
        x.round()
    } else {
        x.ceil()
    };
    (k as u64).clamp(1, n.max(1))
}

/// Upper edge of bin `b`, the bin holding a rank's value (or `hi` if the histogram holds fewer
/// values).
fn upper_edge(h: &Histogram, b: Option<usize>) -> f64 {
    b.map_or(h.hi, |b| h.edge(b + 1))
}

/// Lower edge of bin `b` (or `lo`): a lower clip bound that never clips the rank's value.
fn lower_edge(h: &Histogram, b: Option<usize>) -> f64 {
    b.map_or(h.lo, |b| h.edge(b))
}

/// Symmetric, for each p of `ps`: `[-a, a]`, a = p-th percentile of |x| from the |x| histogram
/// over `[0, max|x|]`. All ranks are found in one sweep from each end of the histogram.
pub fn symmetric(abs_hist: &Histogram, ps: &[f64]) -> Vec<Search> {
    let n = abs_hist.total();
    let ranks: Vec<u64> = ps.iter().map(|&p| nearest_rank(p, n)).collect();
    abs_hist
        .bins_of_ranks(&ranks, n)
        .into_iter()
        .map(|b| {
            let a = upper_edge(abs_hist, b);
            Search {
                lo: -a,
                hi: a,
                candidates: 1,
            }
        })
        .collect()
}

/// Affine, for each p of `ps`: `[P_(100−p)/2, P_(100−(100−p)/2)]` of x from the signed
/// histogram over `[min, max]`.
pub fn affine(signed_hist: &Histogram, ps: &[f64]) -> Vec<Search> {
    let n = signed_hist.total();
    // Both bounds are nearest-rank percentiles; the lower one takes its bin's lower edge so
    // that the order statistic itself is kept.
    let ranks: Vec<u64> = ps
        .iter()
        .flat_map(|&p| {
            let tail = (100.0 - p) / 2.0;
            [nearest_rank(tail, n), nearest_rank(100.0 - tail, n)]
        })
        .collect();
    signed_hist
        .bins_of_ranks(&ranks, n)
        .chunks_exact(2)
        .map(|b| Search {
            lo: lower_edge(signed_hist, b[0]),
            hi: upper_edge(signed_hist, b[1]),
            candidates: 1,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hist_of(values: &[f32], lo: f64, hi: f64, bins: usize, abs: bool) -> Histogram {
        let mut h = Histogram::new(lo, hi, bins);
        if abs {
            h.add_abs_values(values);
        } else {
            h.add_values(values);
        }
        h
    }

    #[test]
    fn nearest_rank_matches_inverted_cdf() {
        assert_eq!(nearest_rank(50.0, 4), 2);
        assert_eq!(nearest_rank(99.999, 131_072), 131_071);
        assert_eq!(nearest_rank(100.0, 10), 10);
        assert_eq!(nearest_rank(0.0, 10), 1);
    }

    #[test]
    fn percentile_100_is_min_max() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.01 - 3.0).collect();
        let s = symmetric(&hist_of(&v, 0.0, 7.0 - 0.01, 65536, true), &[100.0])[0];
        assert_eq!(s.hi, 7.0 - 0.01);
        let s = affine(&hist_of(&v, -3.0, 6.99, 65536, false), &[100.0])[0];
        assert_eq!((s.lo, s.hi), (-3.0, 6.99));
    }

    #[test]
    fn within_one_fine_bin_of_exact_order_statistic() {
        // |x| = 1..=10000 / 1000; the 99.9th nearest-rank value is the 9990th = 9.99.
        let v: Vec<f32> = (1..=10_000).map(|i| i as f32 / 1000.0).collect();
        let h = hist_of(&v, 0.0, 10.0, 65536, true);
        let s = symmetric(&h, &[99.9])[0];
        assert!(
            s.hi >= 9.99 - 1e-6 && s.hi <= 9.99 + h.width() + 1e-6,
            "{}",
            s.hi
        );
    }

    #[test]
    fn affine_cuts_half_the_tail_per_side() {
        let v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let h = hist_of(&v, 0.0, 9999.0, 65536, false);
        let s = affine(&h, &[99.0])[0];
        // P0.5 = 50th smallest = 49, P99.5 = 9950th smallest = 9949 (nearest rank).
        assert!(s.lo <= 49.0 && s.lo >= 49.0 - h.width() - 1e-9, "{}", s.lo);
        assert!(
            s.hi >= 9949.0 && s.hi <= 9949.0 + h.width() + 1e-9,
            "{}",
            s.hi
        );
    }
}
