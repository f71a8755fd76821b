//! Moving-average min-max, as PyTorch's `MovingAverageMinMaxObserver`
//! (`torch/ao/quantization/observer.py`): the first batch sets (m_min, m_max); each later batch
//! does `m ← m + c·(batch value − m)`, c = 0.01 by default. One batch gives plain min-max.
//! (ONNX Runtime's `quantize_static` "moving average" is instead a plain mean of the per-batch
//! extremes; TF uses c = 0.001.)

use super::Search;

/// EMA over per-batch `(min, max)` pairs in batch order. Batches with no finite values
/// (`min > max`) are skipped, as an observer that never saw a finite value would be.
pub fn ema(batches: &[(f32, f32)], c: f64) -> Option<Search> {
    let mut it = batches.iter().filter(|(lo, hi)| lo <= hi);
    let &(lo0, hi0) = it.next()?;
    // torch does this arithmetic in float32; so do we, to agree to the last bit.
    let c = c as f32;
    let (mut lo, mut hi) = (lo0, hi0);
    for &(blo, bhi) in it {
        lo += c * (blo - lo);
        hi += c * (bhi - hi);
    }
    Some(Search {
        lo: f64::from(lo),
        hi: f64::from(hi),
        candidates: batches.len(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_is_min_max() {
        let s = ema(&[(-2.0, 3.0)], 0.01).unwrap();
        assert_eq!((s.lo, s.hi), (-2.0, 3.0));
    }

    #[test]
    fn constant_c_one_tracks_last_batch_and_zero_keeps_first() {
        let b = [(-1.0, 1.0), (-4.0, 2.0), (-3.0, 5.0)];
        let s = ema(&b, 1.0).unwrap();
        assert_eq!((s.lo, s.hi), (-3.0, 5.0));
        let s = ema(&b, 0.0).unwrap();
        assert_eq!((s.lo, s.hi), (-1.0, 1.0));
    }

    #[test]
    fn closed_form_two_batches() {
        let s = ema(&[(0.0, 10.0), (-100.0, 110.0)], 0.01).unwrap();
        assert!((s.lo + 1.0).abs() < 1e-6 && (s.hi - 11.0).abs() < 1e-5);
    }

    #[test]
    fn empty_batches_are_skipped() {
        assert!(ema(&[], 0.01).is_none());
        let s = ema(&[(f32::INFINITY, f32::NEG_INFINITY), (1.0, 2.0)], 0.5).unwrap();
        assert_eq!((s.lo, s.hi), (1.0, 2.0));
    }
}
