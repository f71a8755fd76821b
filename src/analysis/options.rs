//! Options: everything that changes what is computed, with the defaults written once here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use crate::calib::Scheme;
use crate::calib::scheme::{MAX_BITS, MIN_BITS};
use crate::source::Limits;

use super::warnings::Thresholds;

/// Bins of the fine histograms (percentiles, display).
pub const FINE_BINS: usize = 65536;
pub use crate::calib::SEARCH_BINS;
/// Most batches the moving average tracks along the batch axis.
pub const MAX_BATCHES: usize = 1 << 22;
/// Most percentiles one run calibrates (each is a method row in every output).
pub const MAX_PERCENTILES: usize = 16;

/// An option value outside what the analysis accepts: one line saying which and why, the same
/// for the command line and the UI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

fn invalid(msg: String) -> OptionError {
    OptionError(msg)
}

/// Everything that changes what is computed.
#[derive(Clone, Debug)]
pub struct Options {
    pub bits: u8,
    pub scheme: Scheme,
    /// Percentiles for the percentile method, in percent (default 99.9, 99.99, 99.999).
    pub percentiles: Vec<f64>,
    pub ema_constant: f64,
    /// Axis that splits a tensor into calibration batches (None: the whole tensor is one batch).
    pub batch_axis: Option<usize>,
    pub thresholds: Thresholds,
    /// Elements per chunk (the unit of streaming and of parallel work).
    pub chunk_elems: usize,
    pub limits: Limits,
    /// Keep each layer's profile (≈1 MiB of histograms) in the result, for front ends that
    /// draw histograms or re-run; a headless report drops them so memory does not grow with
    /// the layer count.
    pub keep_profiles: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 8,
            scheme: Scheme::Symmetric,
            percentiles: vec![99.9, 99.99, 99.999],
            ema_constant: 0.01,
            batch_axis: Some(0),
            thresholds: Thresholds::default(),
            chunk_elems: 1 << 20,
            limits: Limits::default(),
            keep_profiles: true,
        }
    }
}

impl Options {
    /// Checks every value against its rule (the command line and the UI both call this).
    pub fn validate(&self) -> Result<(), OptionError> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) {
            return Err(invalid(format!(
                "bit width {} is outside {MIN_BITS}..={MAX_BITS}",
                self.bits
            )));
        }
        check_percentiles(&self.percentiles)?;
        if !(self.ema_constant > 0.0 && self.ema_constant <= 1.0) {
            return Err(invalid(format!(
                "moving-average constant {} is outside (0, 1]",
                self.ema_constant
            )));
        }
        if !self.thresholds.sqnr_floor_db.is_finite() {
            return Err(invalid(format!(
                "SQNR floor {} is not a finite number of dB",
                self.thresholds.sqnr_floor_db
            )));
        }
        Ok(())
    }

    /// The settings the calibrators depend on.
    pub fn calib(&self) -> crate::calib::Config<'_> {
        crate::calib::Config {
            bits: self.bits,
            scheme: self.scheme,
            percentiles: &self.percentiles,
            ema_constant: self.ema_constant,
        }
    }
}

/// Shared progress counters a front end may poll while the analysis runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Elements to process across all passes (grows as layers are opened).
    pub total: AtomicU64,
    pub done: AtomicU64,
    pub layers_done: AtomicUsize,
    pub cancel: AtomicBool,
}

/// Each percentile in (0, 100], at least one, at most [`MAX_PERCENTILES`], none repeated.
pub fn check_percentiles(p: &[f64]) -> Result<(), OptionError> {
    if let Some(v) = p.iter().find(|v| !(**v > 0.0 && **v <= 100.0)) {
        return Err(invalid(format!("percentile {v} is outside (0, 100]")));
    }
    if p.is_empty() {
        return Err(invalid(
            "give at least one percentile, e.g. 99.9,99.99".into(),
        ));
    }
    if p.len() > MAX_PERCENTILES {
        return Err(invalid(format!("at most {MAX_PERCENTILES} percentiles")));
    }
    if let Some((_, v)) = p.iter().enumerate().find(|(i, v)| p[..*i].contains(v)) {
        return Err(invalid(format!("percentile {v} is listed twice")));
    }
    Ok(())
}

/// `99.9, 99.99` → `[99.9, 99.99]`, checked by [`check_percentiles`].
pub fn parse_percentiles(s: &str) -> Result<Vec<f64>, OptionError> {
    let p = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            part.parse::<f64>()
                .map_err(|_| invalid(format!("percentile {part:?} is not a number")))
        })
        .collect::<Result<Vec<f64>, _>>()?;
    check_percentiles(&p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Options::default().validate(), Ok(()));
    }

    #[test]
    fn each_rule_rejects_with_one_line() {
        let bad = |f: &dyn Fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o.validate().err().map(|e| e.to_string())
        };
        type Edit<'a> = &'a dyn Fn(&mut Options);
        let cases: [(Edit, &str); 8] = [
            (&|o| o.bits = 1, "bit width 1 is outside 2..=16"),
            (&|o| o.bits = 17, "bit width 17 is outside 2..=16"),
            (
                &|o| o.percentiles = vec![0.0],
                "percentile 0 is outside (0, 100]",
            ),
            (
                &|o| o.percentiles = vec![100.5],
                "percentile 100.5 is outside (0, 100]",
            ),
            (
                &|o| o.percentiles = vec![f64::NAN],
                "percentile NaN is outside (0, 100]",
            ),
            (
                &|o| o.percentiles = vec![],
                "give at least one percentile, e.g. 99.9,99.99",
            ),
            (
                &|o| o.percentiles = vec![99.0, 99.0],
                "percentile 99 is listed twice",
            ),
            (
                &|o| o.ema_constant = 0.0,
                "moving-average constant 0 is outside (0, 1]",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(bad(f).as_deref(), Some(want));
        }
        assert_eq!(
            bad(&|o| o.ema_constant = 1.5).as_deref(),
            Some("moving-average constant 1.5 is outside (0, 1]")
        );
        assert_eq!(bad(&|o| o.percentiles = vec![100.0]), None);
        assert_eq!(bad(&|o| o.ema_constant = 1.0), None);
        assert_eq!(
            bad(&|o| o.percentiles = (1..=17).map(f64::from).collect()).as_deref(),
            Some("at most 16 percentiles")
        );
    }

    #[test]
    fn percentile_lists_parse_with_spaces_and_reject_words() {
        assert_eq!(parse_percentiles(" 99.9, 99.99 ,"), Ok(vec![99.9, 99.99]));
        assert_eq!(
            parse_percentiles("99,abc").map_err(|e| e.to_string()),
            Err("percentile \"abc\" is not a number".into())
        );
        assert!(parse_percentiles("").is_err());
    }
}
