//! The result of a comparison, serialized as the JSON the README documents (names fixed by
//! issue 14 so scripts can rely on them).

use std::sync::Arc;

use serde::Serialize;

use crate::histogram::PackedHistogram;

use super::super::model::{JSON_VERSION, ser_num, ser_opt_num};
use super::options::CompareOptions;

/// Two runs compared layer by layer.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub version: u32,
    /// Always `"compare"`: tells this JSON from a `report`'s.
    pub mode: &'static str,
    pub settings: CompareSettings,
    /// Matched layers in the natural order of their names, then inputs that failed to load.
    pub pairs: Vec<Pair>,
    pub reference_only: Vec<String>,
    pub test_only: Vec<String>,
    /// The first pair (in order) below the SQNR floor or with a NaN/inf mismatch.
    pub first_degraded: Option<String>,
}

/// The options that shaped the numbers.
#[derive(Clone, Debug, Serialize)]
pub struct CompareSettings {
    pub atol: f64,
    pub rtol: f64,
    pub sqnr_floor_db: f64,
}

impl CompareSettings {
    pub fn of(o: &CompareOptions) -> CompareSettings {
        CompareSettings {
            atol: o.atol,
            rtol: o.rtol,
            sqnr_floor_db: o.sqnr_floor_db,
        }
    }
}

/// One layer present on both sides.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub name: String,
    /// Where each side's data comes from.
    pub reference: String,
    pub test: String,
    /// The reference's shape (batch files: `[files, ...shape]`).
    pub shape: Vec<usize>,
    pub reference_dtype: String,
    pub test_dtype: String,
    /// None when the pair could not be compared (`error` says why) or is still running.
    pub metrics: Option<PairMetrics>,
    /// The SQNR of the nearest earlier pair that has one, minus this pair's (∞ − ∞ counts
    /// as 0): large where the error enters, small where it is only inherited.
    #[serde(serialize_with = "ser_opt_num")]
    pub sqnr_drop_db: Option<f64>,
    pub warnings: Vec<CompareWarning>,
    pub error: Option<String>,
    /// Histograms of r, t and t − r for front ends that draw them.
    #[serde(skip)]
    pub histograms: Option<Arc<PairHistograms>>,
}

impl Pair {
    /// A pair with nothing measured yet.
    pub fn new(name: &str, reference: String, test: String) -> Pair {
        Pair {
            name: name.to_string(),
            reference,
            test,
            shape: Vec::new(),
            reference_dtype: String::new(),
            test_dtype: String::new(),
            metrics: None,
            sqnr_drop_db: None,
            warnings: Vec::new(),
            error: None,
            histograms: None,
        }
    }

    pub fn sqnr_db(&self) -> Option<f64> {
        self.metrics.as_ref().map(|m| m.sqnr_db)
    }
}

/// The per-pair numbers, over the positions where both values are finite (counts of
/// mismatching non-finite positions aside).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairMetrics {
    pub count: u64,
    /// 10·log10(Σr² / Σ(t − r)²): ∞ when equal.
    #[serde(serialize_with = "ser_num")]
    pub sqnr_db: f64,
    #[serde(serialize_with = "ser_num")]
    pub cosine: f64,
    #[serde(serialize_with = "ser_num")]
    pub mse: f64,
    #[serde(serialize_with = "ser_num")]
    pub max_abs_error: f64,
    /// max |t − r| / |r| over r ≠ 0.
    #[serde(serialize_with = "ser_num")]
    pub max_rel_error: f64,
    #[serde(serialize_with = "ser_num")]
    pub mean_abs_error: f64,
    /// Nearest-rank 99th percentile of |t − r|, within 0.4% relative (log-spaced bins).
    #[serde(serialize_with = "ser_num")]
    pub p99_abs_error: f64,
    /// Count of |t − r| > atol + rtol·|r|.
    pub allclose_failures: u64,
    /// Positions where exactly one side is NaN.
    pub nan_mismatch: u64,
    /// Positions without a NaN where exactly one side is ±inf, or both are with opposite signs.
    pub inf_mismatch: u64,
    /// Multi-index (of `shape`) of the largest |t − r|, the first one on ties.
    pub worst: Option<Vec<usize>>,
}

impl PairMetrics {
    /// Below the SQNR floor, or a NaN/inf mismatch.
    pub fn degraded(&self, floor_db: f64) -> bool {
        self.sqnr_db < floor_db || self.nan_mismatch > 0 || self.inf_mismatch > 0
    }
}

/// Every compare warning. The JSON `kind` (and the `--fail-on` name) is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareWarningKind {
    Degraded,
    NanMismatch,
    InfMismatch,
    NoFiniteValues,
    TrailingBytes,
    Float64Narrowed,
}

impl CompareWarningKind {
    pub const ALL: [CompareWarningKind; 6] = [
        CompareWarningKind::Degraded,
        CompareWarningKind::NanMismatch,
        CompareWarningKind::InfMismatch,
        CompareWarningKind::NoFiniteValues,
        CompareWarningKind::TrailingBytes,
        CompareWarningKind::Float64Narrowed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CompareWarningKind::Degraded => "degraded",
            CompareWarningKind::NanMismatch => "nan_mismatch",
            CompareWarningKind::InfMismatch => "inf_mismatch",
            CompareWarningKind::NoFiniteValues => "no_finite_values",
            CompareWarningKind::TrailingBytes => "trailing_bytes",
            CompareWarningKind::Float64Narrowed => "float64_narrowed",
        }
    }
}

/// One warning on one pair: the same shape as the analysis's warnings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompareWarning {
    pub kind: CompareWarningKind,
    pub message: String,
    /// The number that triggered it (a count or dB: the message says which).
    #[serde(serialize_with = "ser_num")]
    pub value: f64,
}

/// Display histograms (2048 bins, each over its own finite range) of the reference, the test
/// and the error t − r, re-binned from the log-spaced counts: for drawing, not for numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct PairHistograms {
    pub reference: PackedHistogram,
    pub test: PackedHistogram,
    pub error: PackedHistogram,
}

impl Comparison {
    /// An empty comparison with these settings.
    pub fn new(opts: &CompareOptions) -> Comparison {
        Comparison {
            version: JSON_VERSION,
            mode: "compare",
            settings: CompareSettings::of(opts),
            pairs: Vec::new(),
            reference_only: Vec::new(),
            test_only: Vec::new(),
            first_degraded: None,
        }
    }

    /// Sets what depends on the order of the pairs: each pair's `sqnr_drop_db` and
    /// `first_degraded`. Pairs without metrics (errors, still running) are skipped.
    pub fn derive(&mut self) {
        let floor = self.settings.sqnr_floor_db;
        let mut prev: Option<f64> = None;
        self.first_degraded = None;
        for p in &mut self.pairs {
            p.sqnr_drop_db = None;
            let Some(m) = &p.metrics else { continue };
            if !m.sqnr_db.is_nan() {
                p.sqnr_drop_db = prev.map(|q| if q == m.sqnr_db { 0.0 } else { q - m.sqnr_db });
                prev = Some(m.sqnr_db);
            }
            if self.first_degraded.is_none() && m.degraded(floor) {
                self.first_degraded = Some(p.name.clone());
            }
        }
    }

    /// Pairs that could not be compared.
    pub fn failed(&self) -> impl Iterator<Item = &Pair> {
        self.pairs.iter().filter(|p| p.error.is_some())
    }
}
