//! Calibration methods: each turns the merged statistics/histograms of a layer into a range.
//! One method per file, each citing the reference implementation it follows; [`dispatch`]
//! runs them all on a layer's [`Observed`] facts.

pub mod dispatch;
pub mod ema;
pub mod entropy;
pub mod mse;
pub mod percentile;
pub mod scheme;

use std::sync::atomic::{AtomicU64, Ordering};

pub use dispatch::{Chosen, Config, MethodKind, Observed, SEARCH_BINS, calibrate};
pub use scheme::{QParams, Scheme};

/// The range a calibrator chose and how many candidate ranges its search evaluated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Search {
    pub lo: f64,
    pub hi: f64,
    pub candidates: usize,
}

/// Indices, in order, of the candidates whose fast score lies within `tol` of the fast minimum,
/// plus any NaN (re-checked rather than dropped): if `tol` bounds |fast − exact|, every other
/// candidate's exact score is strictly above the exact minimum, so an exact rule over these
/// picks what it would pick over all. Only the NaNs if every other score is ∞.
pub(crate) fn near_minimum(fast: &[f64], tol: f64) -> impl Iterator<Item = usize> + '_ {
    let m = fast.iter().copied().fold(f64::INFINITY, f64::min);
    let cut = m + tol;
    fast.iter()
        .enumerate()
        .filter(move |&(_, &f)| f.is_nan() || (m < f64::INFINITY && f <= cut))
        .map(|(k, _)| k)
}

/// The least fast score found so far, shared by the parallel pieces of a search (the bits of
/// a finite f64 or ∞: `fetch_min` on the bits would misorder negatives, which rounding can
/// produce), and how far above it a lower bound must lie to skip a candidate.
pub(crate) struct Found {
    bits: AtomicU64,
    margin: f64,
}

impl Found {
    pub fn new(margin: f64) -> Found {
        Found {
            bits: AtomicU64::new(f64::INFINITY.to_bits()),
            margin,
        }
    }

    /// The least score so far plus the margin: a candidate whose lower bound exceeds it may be
    /// skipped (∞ before a first finite score).
    #[inline(always)]
    pub fn limit(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed)) + self.margin
    }

    /// Whether a candidate with lower bound `floor` may be skipped. NaN never skips (the
    /// comparison is false), nor does anything before a first finite score.
    #[inline(always)]
    pub fn skips(&self, floor: f64) -> bool {
        floor > self.limit()
    }

    #[inline(always)]
    pub fn lower(&self, f: f64) {
        let mut cur = self.bits.load(Ordering::Relaxed);
        while f < f64::from_bits(cur) {
            match self.bits.compare_exchange_weak(
                cur,
                f.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
    }
}

/// Histograms and helpers the calibrator tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::histogram::Histogram;

    pub fn hist(lo: f64, hi: f64, counts: Vec<u64>) -> Histogram {
        Histogram { lo, hi, counts }
    }

    /// Counts proportional to the normal pdf at the bin centres (|x| histogram: 2φ), ×scale.
    pub fn gaussian_counts(lo: f64, hi: f64, bins: usize, scale: f64, abs: bool) -> Histogram {
        let mut h = Histogram::new(lo, hi, bins);
        let w = h.width();
        for i in 0..bins {
            let x = h.centre(i);
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let d = if abs { 2.0 * pdf } else { pdf };
            h.counts[i] = (d * w * scale).round() as u64;
        }
        h
    }

    /// One time in three, a few counts in one of the last 10 bins: a far outlier, the case
    /// where clipping pays.
    pub fn maybe_far_outlier(rng: &mut Rng, c: &mut [u64]) {
        let len = c.len();
        if rng.below(3) == 0 && len > 1 {
            let far = len - 1 - rng.below(len.min(10) as u64) as usize;
            c[far] += 1 + rng.below(3);
        }
    }

    /// Deterministic xorshift64* so the tests need no crate.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// How far the fast divergences of a search's candidates stray from the exact ones: the
    /// premise of the re-check window is that they agree well within its tolerance.
    #[derive(Default)]
    pub struct FastVsExact {
        pub finite: usize,
        pub worst: f64,
        /// The largest |fast − exact| / tolerance seen by [`Self::add_within`].
        pub worst_ratio: f64,
    }

    impl FastVsExact {
        /// One candidate: both finite or both ∞, and the gap counted when finite.
        pub fn add(&mut self, fast: f64, exact: f64, what: std::fmt::Arguments) {
            assert_eq!(
                fast.is_finite(),
                exact.is_finite(),
                "{what}: {fast} vs {exact}"
            );
            if exact.is_finite() {
                self.finite += 1;
                self.worst = self.worst.max((fast - exact).abs());
            }
        }

        /// One candidate whose tolerance varies from search to search (it scales with the
        /// histogram): [`Self::add`], plus the gap as a fraction of `tol`, which must stay
        /// well below 1/2 (the re-check window is 2× the bound on the gap).
        pub fn add_within(&mut self, fast: f64, exact: f64, tol: f64, what: std::fmt::Arguments) {
            self.add(fast, exact, what);
            if exact.is_finite() {
                // NaN only for 0/0: no gap and a zero tolerance (an empty histogram).
                let r = (fast - exact).abs() / tol;
                assert!(
                    r < 0.5 || r.is_nan(),
                    "{what}: |fast − exact| = {:e}, tol {tol:e}",
                    (fast - exact).abs()
                );
                self.worst_ratio = self.worst_ratio.max(if r.is_nan() { 0.0 } else { r });
            }
        }

        /// The largest gap so far is well within the tolerance.
        pub fn check(&self, tol: f64, what: std::fmt::Arguments) {
            let worst = self.worst;
            assert!(worst < tol / 2.0, "{what}: |fast − exact| = {worst:e}");
        }

        /// Enough finite candidates were compared for the test to mean something.
        pub fn report(&self, noun: &str) {
            eprintln!(
                "{} finite {noun}, max |fast − exact| = {:e}",
                self.finite, self.worst
            );
            assert!(self.finite > 10_000);
        }
    }
}
