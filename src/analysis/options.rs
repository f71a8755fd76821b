//! Options: everything that changes what is computed, with the defaults written once here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use crate::calib::Scheme;
use crate::calib::scheme::{MAX_BITS, MIN_BITS};
use crate::source::Limits;

use super::formats::{FormatKind, check_formats};
use super::granularity::Granularity;
use super::warnings::Thresholds;

/// Bins of the fine histograms (percentiles, display).
pub const FINE_BINS: usize = 65536;
pub use crate::calib::SEARCH_BINS;
/// Most batches the moving average tracks along the batch axis.
pub const MAX_BATCHES: usize = 1 << 22;
/// Most percentiles one run calibrates (each is a method row in every output).
pub const MAX_PERCENTILES: usize = 16;
/// Most block sizes one run measures (each is a granularity row in every output).
pub const MAX_BLOCK_SIZES: usize = 8;
/// Most folds of held-out validation (`--folds`).
pub const MAX_FOLDS: usize = 64;
/// Largest block size (values along the channel axis).
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

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
    /// Where the scale lives: per-token, per-channel and per-block rows beside per-tensor
    /// (boxed: `Options` travels by value in the UI's commands).
    pub granularity: Box<GranularityOptions>,
    /// Held-out validation and convergence over batches (README "Held-out validation"):
    /// opt-in, as its exact metrics roughly double the metrics pass.
    pub validate: bool,
    /// K of the held-out validation: batch i is in fold i mod K.
    pub folds: usize,
    /// The deployed formats measured beside the int methods (`--formats`, README "Formats").
    pub formats: Vec<FormatKind>,
    /// Measure per-tensor quantizers from pass 2's per-bin sums where they can
    /// ([`super::binned`]): opt-in, as on the default rows it saves instructions but not time
    /// (its 2 MiB scatter per worker misses the cache).
    pub binned: bool,
}

/// What the granularity rows and the channel summary measure (README "Granularities").
#[derive(Clone, Debug, PartialEq)]
pub struct GranularityOptions {
    /// The rows shown, in [`Granularity::ALL`] order, none repeated.
    pub rows: Vec<Granularity>,
    /// The channel axis, numpy style: negative counts from the end (−1: the last axis).
    pub channel_axis: i64,
    /// Block sizes G (values along the channel axis inside one token).
    pub block_sizes: Vec<usize>,
    /// A channel whose absmax is at least this multiple of the median channel's is an outlier.
    pub outlier_ratio: f64,
    /// |x| at or above this counts toward `above_threshold` (LLM.int8's criterion).
    pub outlier_threshold: f64,
}

impl Default for GranularityOptions {
    fn default() -> Self {
        GranularityOptions {
            // Blocks are opt-in: a scale per 32 values is the costliest row and answers a
            // narrower question (block formats); README "Granularities" has the figures.
            rows: vec![
                Granularity::Tensor,
                Granularity::Token,
                Granularity::Channel,
            ],
            channel_axis: -1,
            block_sizes: vec![32, 128],
            outlier_ratio: 8.0,
            outlier_threshold: 6.0,
        }
    }
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
            granularity: Box::default(),
            validate: false,
            folds: 2,
            formats: FormatKind::DEFAULT.to_vec(),
            binned: false,
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
        if !(2..=MAX_FOLDS).contains(&self.folds) {
            return Err(invalid(format!(
                "{} folds is outside 2..={MAX_FOLDS}",
                self.folds
            )));
        }
        check_formats(&self.formats)?;
        self.granularity.validate()
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

impl GranularityOptions {
    /// Checks every value against its rule.
    pub fn validate(&self) -> Result<(), OptionError> {
        check_granularities(&self.rows)?;
        check_block_sizes(&self.block_sizes)?;
        if !(self.outlier_ratio.is_finite() && self.outlier_ratio >= 1.0) {
            return Err(invalid(format!(
                "outlier ratio {} is not a finite number ≥ 1",
                self.outlier_ratio
            )));
        }
        if !(self.outlier_threshold.is_finite() && self.outlier_threshold > 0.0) {
            return Err(invalid(format!(
                "outlier threshold {} is not a finite number > 0",
                self.outlier_threshold
            )));
        }
        Ok(())
    }

    /// Whether row `g` is shown.
    pub fn shows(&self, g: Granularity) -> bool {
        self.rows.contains(&g)
    }
}

/// At least one row, none repeated.
pub fn check_granularities(rows: &[Granularity]) -> Result<(), OptionError> {
    if rows.is_empty() {
        return Err(invalid(
            "give at least one granularity, e.g. tensor,token (or all)".into(),
        ));
    }
    if let Some((_, g)) = rows
        .iter()
        .enumerate()
        .find(|(i, g)| rows[..*i].contains(g))
    {
        return Err(invalid(format!("granularity {} is listed twice", g.name())));
    }
    Ok(())
}

/// Each block size in 1..=[`MAX_BLOCK_SIZE`], at least one, at most [`MAX_BLOCK_SIZES`], none
/// repeated.
pub fn check_block_sizes(sizes: &[usize]) -> Result<(), OptionError> {
    if let Some(g) = sizes.iter().find(|g| !(1..=MAX_BLOCK_SIZE).contains(*g)) {
        return Err(invalid(format!(
            "block size {g} is outside 1..={MAX_BLOCK_SIZE}"
        )));
    }
    if sizes.is_empty() {
        return Err(invalid("give at least one block size, e.g. 32,128".into()));
    }
    if sizes.len() > MAX_BLOCK_SIZES {
        return Err(invalid(format!("at most {MAX_BLOCK_SIZES} block sizes")));
    }
    if let Some((_, g)) = sizes
        .iter()
        .enumerate()
        .find(|(i, g)| sizes[..*i].contains(g))
    {
        return Err(invalid(format!("block size {g} is listed twice")));
    }
    Ok(())
}

/// `tensor,token` or `all` → the rows in [`Granularity::ALL`] order, checked by
/// [`check_granularities`].
pub fn parse_granularities(s: &str) -> Result<Vec<Granularity>, OptionError> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Granularity::ALL.to_vec());
    }
    let rows = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            Granularity::from_name(part).ok_or_else(|| {
                let all: Vec<&str> = Granularity::ALL.iter().map(|g| g.name()).collect();
                invalid(format!(
                    "unknown granularity `{part}` (expected all or some of: {})",
                    all.join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_granularities(&rows)?;
    Ok(Granularity::ALL
        .into_iter()
        .filter(|g| rows.contains(g))
        .collect())
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
    fn granularity_rules_reject_with_one_line() {
        let bad = |f: &dyn Fn(&mut GranularityOptions)| {
            let mut o = Options::default();
            f(&mut o.granularity);
            o.validate().err().map(|e| e.to_string())
        };
        type Edit<'a> = &'a dyn Fn(&mut GranularityOptions);
        let cases: [(Edit, &str); 8] = [
            (
                &|g| g.block_sizes = vec![0],
                "block size 0 is outside 1..=1048576",
            ),
            (
                &|g| g.block_sizes = vec![(1 << 20) + 1],
                "block size 1048577 is outside 1..=1048576",
            ),
            (
                &|g| g.block_sizes = vec![],
                "give at least one block size, e.g. 32,128",
            ),
            (
                &|g| g.block_sizes = vec![32, 64, 32],
                "block size 32 is listed twice",
            ),
            (
                &|g| g.block_sizes = (1..=9).collect(),
                "at most 8 block sizes",
            ),
            (
                &|g| g.outlier_ratio = 0.5,
                "outlier ratio 0.5 is not a finite number ≥ 1",
            ),
            (
                &|g| g.outlier_threshold = f64::INFINITY,
                "outlier threshold inf is not a finite number > 0",
            ),
            (
                &|g| g.rows = vec![],
                "give at least one granularity, e.g. tensor,token (or all)",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(bad(f).as_deref(), Some(want));
        }
        assert_eq!(bad(&|g| g.outlier_ratio = 1.0), None);
        assert_eq!(bad(&|g| g.block_sizes = vec![1, 1 << 20]), None);
    }

    #[test]
    fn granularity_lists_parse_in_table_order() {
        use Granularity::*;
        assert_eq!(parse_granularities("all"), Ok(Granularity::ALL.to_vec()));
        assert_eq!(
            parse_granularities(" block, Token ,"),
            Ok(vec![Token, Block])
        );
        assert_eq!(
            parse_granularities("token,token").map_err(|e| e.to_string()),
            Err("granularity token is listed twice".into())
        );
        assert_eq!(
            parse_granularities("tokens").map_err(|e| e.to_string()),
            Err(
                "unknown granularity `tokens` (expected all or some of: tensor, token, channel, block)"
                    .into()
            )
        );
        assert!(parse_granularities("").is_err());
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
