//! What changes a comparison, with its defaults written once here, and the `--fail-on` kinds.

use crate::source::{BatchLayout, Limits};

use super::super::options::{OptionError, Options};
use super::super::warnings::Thresholds;
use super::model::{CompareWarningKind, Pair};

/// Everything that changes what `compare` computes.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Absolute tolerance of the allclose check (|t − r| > atol + rtol·|r| fails).
    pub atol: f64,
    /// Relative tolerance of the allclose check, against the reference.
    pub rtol: f64,
    /// A pair whose SQNR is below this (dB) is degraded.
    pub sqnr_floor_db: f64,
    /// Elements per chunk of the lockstep read (the unit of streaming and parallel work).
    pub chunk_elems: usize,
    pub limits: Limits,
    /// How each side's folders of sub-folders are read.
    pub layout: BatchLayout,
    /// Keep each pair's display histograms (r, t, t − r) for front ends that draw them; a
    /// headless report skips counting r and t.
    pub keep_histograms: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            atol: 1e-5,
            rtol: 1e-3,
            // The same floor as the analysis's sensitivity warning.
            sqnr_floor_db: Thresholds::default().sqnr_floor_db,
            chunk_elems: Options::default().chunk_elems,
            limits: Limits::default(),
            layout: BatchLayout::Auto,
            keep_histograms: true,
        }
    }
}

impl CompareOptions {
    /// Checks every value against its rule (the command line calls this).
    pub fn validate(&self) -> Result<(), OptionError> {
        for (name, v) in [("--atol", self.atol), ("--rtol", self.rtol)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(OptionError(format!(
                    "{name} {v} is not a finite number ≥ 0"
                )));
            }
        }
        if !self.sqnr_floor_db.is_finite() {
            return Err(OptionError(format!(
                "SQNR floor {} is not a finite number of dB",
                self.sqnr_floor_db
            )));
        }
        if self.chunk_elems == 0 {
            return Err(OptionError("chunk size must be at least 1 element".into()));
        }
        Ok(())
    }
}

/// What `--fail-on` can gate on (exit status 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    /// Any warning on any pair.
    AnyWarning,
    /// A pair with this warning.
    Warning(CompareWarningKind),
    /// A pair with allclose failures (a metric, not a warning: int8 runs fail it everywhere).
    Allclose,
}

impl FailOn {
    /// Every accepted name, as the usage error lists them.
    pub fn names() -> Vec<&'static str> {
        let mut v = vec!["warnings"];
        v.extend(CompareWarningKind::ALL.iter().map(|k| k.name()));
        v.push("allclose");
        v
    }

    pub fn from_name(name: &str) -> Option<FailOn> {
        match name {
            "warnings" | "any" => Some(FailOn::AnyWarning),
            "allclose" => Some(FailOn::Allclose),
            n => CompareWarningKind::ALL
                .into_iter()
                .find(|k| k.name() == n)
                .map(FailOn::Warning),
        }
    }

    /// `degraded,nan_mismatch` → the kinds; an unknown name is an error naming the choices.
    pub fn parse_list(s: &str) -> Result<Vec<FailOn>, OptionError> {
        s.split(',')
            .map(str::trim)
            .map(|k| {
                FailOn::from_name(k).ok_or_else(|| {
                    OptionError(format!(
                        "unknown kind `{k}` for --fail-on (expected some of: {})",
                        FailOn::names().join(", ")
                    ))
                })
            })
            .collect()
    }

    /// Whether `pair` trips this gate.
    pub fn hits(self, pair: &Pair) -> bool {
        match self {
            FailOn::AnyWarning => !pair.warnings.is_empty(),
            FailOn::Warning(k) => pair.warnings.iter().any(|w| w.kind == k),
            FailOn::Allclose => pair
                .metrics
                .as_ref()
                .is_some_and(|m| m.allclose_failures > 0),
        }
    }
}
