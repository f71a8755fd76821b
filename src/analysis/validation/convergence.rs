//! Convergence over batch prefixes: each method's range from the first n batches, the SQNR
//! its range from the first H lose on all values, the verdict, and the percentiles'
//! distribution-free confidence intervals.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::calib::{MethodKind, Scheme, percentile::nearest_rank};
use crate::histogram::Histogram;

use super::super::model::ser_num;
use super::super::profile::Profile;
use super::{Layout, label};

/// A recommended method losing less than this (dB) from half the batches is `stable`.
pub const STABLE_LOSS_DB: f64 = 0.5;
/// Fewer batches than this are `too_few_batches`.
pub const MIN_BATCHES: usize = 4;
/// Coverage of the percentiles' order-statistic intervals.
pub const COVERAGE: f64 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Stable,
    Growing,
    TooFewBatches,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Stable => "stable",
            Verdict::Growing => "growing",
            Verdict::TooFewBatches => "too_few_batches",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvergenceMethod {
    pub method: MethodKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// The range calibrated on the first n batches, for each n of `batch_counts`.
    pub ranges: Vec<[f64; 2]>,
    /// SQNR over all finite values with the range from all B batches minus that with the
    /// range from the first H (H = the largest power of two ≤ B/2).
    #[serde(serialize_with = "ser_num")]
    pub half_range_sqnr_loss_db: f64,
    /// Percentiles only: the 95% order-statistic interval of the range's low and high ends
    /// ([[lo_low, lo_high], [hi_low, hi_high]]), assuming exchangeable values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_95: Option<[[f64; 2]; 2]>,
}

impl ConvergenceMethod {
    pub fn label(&self) -> String {
        label(self.method, self.percentile)
    }
}

/// The convergence of a layer's ranges (JSON `convergence`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub batch_counts: Vec<usize>,
    pub methods: Vec<ConvergenceMethod>,
    pub verdict: Verdict,
    pub detail: String,
}

/// A dB figure for a sentence: one decimal, `inf` for an exact quantizer.
pub(crate) fn db(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// SQNR with the full range minus SQNR with the half range; 0 when both are exact (∞) or both
/// undefined (an all-zero layer, 0/0).
pub fn loss(full: f64, half: f64) -> f64 {
    if full == half || (full.is_nan() && half.is_nan()) {
        0.0
    } else {
        full - half
    }
}

impl Convergence {
    /// The verdict on `recommended` (a method label) from each method's loss.
    pub(crate) fn new(
        l: &Layout,
        methods: Vec<ConvergenceMethod>,
        recommended: Option<&str>,
    ) -> Convergence {
        let b = l.batches;
        let h = l.half().map_or(0, |i| l.checkpoints[i]);
        let rec = methods
            .iter()
            .find(|m| Some(m.label().as_str()) == recommended);
        let (verdict, detail) = match rec {
            _ if b < MIN_BATCHES => (
                Verdict::TooFewBatches,
                format!("{b} batches: the convergence verdict needs at least {MIN_BATCHES}"),
            ),
            // Only an all-zero layer has no recommendation (every SQNR is 0/0): exact, stable.
            None => (
                Verdict::Stable,
                "no method has a defined SQNR (every finite value is 0): nothing moves".to_string(),
            ),
            Some(m) => {
                let loss = m.half_range_sqnr_loss_db;
                if loss < STABLE_LOSS_DB {
                    (
                        Verdict::Stable,
                        format!(
                            "{} calibrated on the first {h} of {b} batches loses {} dB on all of them (stable below {STABLE_LOSS_DB} dB)",
                            m.label(),
                            if loss.is_finite() {
                                format!("{loss:.2}")
                            } else {
                                db(loss)
                            }
                        ),
                    )
                } else {
                    (
                        Verdict::Growing,
                        format!(
                            "{} calibrated on the first {h} of {b} batches loses {} dB on all of them: more data would move it again",
                            m.label(),
                            db(loss)
                        ),
                    )
                }
            }
        };
        Convergence {
            batch_counts: l.checkpoints.clone(),
            methods,
            verdict,
            detail,
        }
    }

    /// B.
    pub fn batches(&self) -> usize {
        self.batch_counts.last().copied().unwrap_or(0)
    }

    /// H, the prefix whose loss is measured.
    pub fn half(&self) -> Option<usize> {
        let h = self.batches() / 2;
        self.batch_counts.iter().rev().find(|&&c| c <= h).copied()
    }
}

/// Ranks [l, u] (1-based) with P(l ≤ K < u) ≥ 95% for K ~ Binomial(n, q): the order
/// statistics X_(l) ≤ ξ_q ≤ X_(u) bracket the q-quantile with that probability for any
/// continuous distribution of exchangeable values.
pub fn rank_interval(q: f64, n: u64) -> (u64, u64) {
    let tail = (1.0 - COVERAGE) / 2.0;
    if n == 0 || q >= 1.0 {
        return (n.max(1), n.max(1));
    }
    let Ok(b) = Binomial::new(q.clamp(0.0, 1.0), n) else {
        return (1, n.max(1));
    };
    let l = b.inverse_cdf(tail).max(1);
    let u = (b.inverse_cdf(1.0 - tail) + 1).min(n.max(1));
    (l.min(u), u)
}

/// Values at ranks (l, u) read off a histogram as the percentile method reads its rank
/// (upper edge of the bin; `low_edge`: the lower edge, for an affine low end).
fn values_at(h: &Histogram, ranks: (u64, u64), n: u64, low_edge: bool) -> [f64; 2] {
    let b = h.bins_of_ranks(&[ranks.0, ranks.1], n);
    let read = |b: Option<usize>| match b {
        Some(b) if low_edge => h.edge(b),
        Some(b) => h.edge(b + 1),
        None if low_edge => h.lo,
        None => h.hi,
    };
    [read(b[0]), read(b[1])]
}

/// The 95% interval of each end of the percentile method's range at `p` percent, from the
/// layer's fine histograms (the values themselves to within a fine bin).
pub(crate) fn interval(profile: &Profile, p: f64, scheme: Scheme) -> [[f64; 2]; 2] {
    let n = profile.moments.n;
    match scheme {
        Scheme::Symmetric => {
            let k = nearest_rank(p, n);
            let _ = k;
            let r = rank_interval(p / 100.0, n);
            let [a, b] = values_at(&profile.abs_hist, r, n, false);
            [[-b, -a], [a, b]]
        }
        Scheme::Affine => {
            let tail = (100.0 - p) / 2.0;
            let klo = nearest_rank(tail, n);
            let khi = nearest_rank(100.0 - tail, n);
            let rl = rank_interval(klo as f64 / n.max(1) as f64, n);
            let rh = rank_interval(khi as f64 / n.max(1) as f64, n);
            [
                values_at(&profile.hist, rl, n, true),
                values_at(&profile.hist, rh, n, false),
            ]
        }
    }
}
