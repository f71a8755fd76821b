//! Warnings: a kind, a message with the actionable hint, and the number that triggered it.
//! Adding one is a variant here plus a check in [`profile_warnings`] (facts of passes 1–2) or
//! [`method_warnings`] (the chosen ranges and their metrics).

use serde::{Deserialize, Serialize};

use crate::calib::{self, Scheme};
use crate::source::DType;

use super::cast::{CastType, F16_MAX, F16_OVERFLOW};
use super::formats::{FormatFacts, FormatGranularity, FormatKind, FormatResult, ScaleRule};
use super::granularity::Granularity;
use super::metrics::Metrics;
use super::model::{GranularityResult, LayerAnalysis};
use super::options::Options;
use super::profile::Profile;

/// Every warning calibscope raises. The JSON `kind` is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    NanInf,
    Fp16Overflow,
    Fp16SquareOverflow,
    Fp16SumSquaresOverflow,
    Fp16Underflow,
    Bf16LowSqnr,
    ZeroRange,
    Float64Narrowed,
    TrailingBytes,
    HeavyOutliers,
    OutlierChannels,
    OneSided,
    Clipping,
    LowSqnr,
    RangeDisagreement,
    CalibrationUnstable,
    OverfitRange,
    Fp8Clipping,
    Fp8UnclampedNan,
    Fp8ZeroAmax,
    MxScaleClipping,
}

impl WarningKind {
    pub const ALL: [WarningKind; 21] = [
        WarningKind::NanInf,
        WarningKind::Fp16Overflow,
        WarningKind::Fp16SquareOverflow,
        WarningKind::Fp16SumSquaresOverflow,
        WarningKind::Fp16Underflow,
        WarningKind::Bf16LowSqnr,
        WarningKind::ZeroRange,
        WarningKind::Float64Narrowed,
        WarningKind::TrailingBytes,
        WarningKind::HeavyOutliers,
        WarningKind::OutlierChannels,
        WarningKind::OneSided,
        WarningKind::Clipping,
        WarningKind::LowSqnr,
        WarningKind::RangeDisagreement,
        WarningKind::CalibrationUnstable,
        WarningKind::OverfitRange,
        WarningKind::Fp8Clipping,
        WarningKind::Fp8UnclampedNan,
        WarningKind::Fp8ZeroAmax,
        WarningKind::MxScaleClipping,
    ];

    /// The snake_case name used in JSON and by `--fail-on`.
    pub fn name(self) -> &'static str {
        match self {
            WarningKind::NanInf => "nan_inf",
            WarningKind::Fp16Overflow => "fp16_overflow",
            WarningKind::Fp16SquareOverflow => "fp16_square_overflow",
            WarningKind::Fp16SumSquaresOverflow => "fp16_sum_squares_overflow",
            WarningKind::Fp16Underflow => "fp16_underflow",
            WarningKind::Bf16LowSqnr => "bf16_low_sqnr",
            WarningKind::ZeroRange => "zero_range",
            WarningKind::Float64Narrowed => "float64_narrowed",
            WarningKind::TrailingBytes => "trailing_bytes",
            WarningKind::HeavyOutliers => "heavy_outliers",
            WarningKind::OutlierChannels => "outlier_channels",
            WarningKind::OneSided => "one_sided",
            WarningKind::Clipping => "clipping",
            WarningKind::LowSqnr => "low_sqnr",
            WarningKind::RangeDisagreement => "range_disagreement",
            WarningKind::CalibrationUnstable => "calibration_unstable",
            WarningKind::OverfitRange => "overfit_range",
            WarningKind::Fp8Clipping => "fp8_clipping",
            WarningKind::Fp8UnclampedNan => "fp8_unclamped_nan",
            WarningKind::Fp8ZeroAmax => "fp8_zero_amax",
            WarningKind::MxScaleClipping => "mx_scale_clipping",
        }
    }

    pub fn from_name(name: &str) -> Option<WarningKind> {
        WarningKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One warning on one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
    /// The number that triggered it (a count, a ratio, dB: the message says which).
    #[serde(serialize_with = "crate::analysis::ser_num")]
    pub value: f64,
}

impl Warning {
    pub fn new(kind: WarningKind, value: f64, message: impl Into<String>) -> Warning {
        Warning {
            kind,
            message: message.into(),
            value,
        }
    }
}

/// Thresholds of the warnings (ours to tune; documented in the README).
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// Best SQNR below this marks a sensitive layer (dB).
    pub sqnr_floor_db: f64,
    /// A method clipping more than this share of values is flagged.
    pub clip_share: f64,
    /// max|x| above this multiple of the 99.99th percentile of |x| is an outlier warning.
    pub outlier_ratio: f64,
    /// Pearson kurtosis above this is heavy-tailed (Gaussian 3, Laplace 6).
    pub kurtosis: f64,
    /// Ranges of two methods differing by more than this factor.
    pub disagreement: f64,
    /// bfloat16 SQNR below this (dB).
    pub bf16_sqnr_db: f64,
    /// Share of values that flush to zero or turn subnormal in float16.
    pub fp16_underflow_share: f64,
    /// E4M3 at the recommended amax losing this much SQNR to clipping against min-max (dB).
    pub fp8_clip_cost_db: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            sqnr_floor_db: 20.0,
            clip_share: 0.01,
            outlier_ratio: 10.0,
            kurtosis: 20.0,
            disagreement: 4.0,
            bf16_sqnr_db: 40.0,
            fp16_underflow_share: 0.001,
            fp8_clip_cost_db: 1.0,
        }
    }
}

/// Compact count formatting for messages: `1234567` -> `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
/// `1 value`, `2 values`, `1 value has`, `2 values have`: counts in messages read right.
fn values(n: u64, noun: &str) -> String {
    let plural = match noun.split_once(' ') {
        Some((w, "has")) => format!("{w}s have"),
        _ => format!("{noun}s"),
    };
    format!(
        "{} {}",
        fmt_count(n),
        if n == 1 { noun.to_string() } else { plural }
    )
}

pub(crate) fn profile_warnings(layer: &mut LayerAnalysis, p: &Profile, opts: &Options) {
    let m = &p.moments;
    let t = &opts.thresholds;
    let w = &mut layer.warnings;
    let notes = &mut layer.notes;
    if p.parts > 1 {
        notes.push(format!(
            "{} batch files, each one calibration batch",
            p.parts
        ));
    } else if p.batches.len() > 1 {
        notes.push(format!(
            "{} batches along axis {}",
            p.batches.len(),
            opts.batch_axis.unwrap_or(0)
        ));
    }
    if p.info.fortran_order {
        notes.push("Fortran order (per-tensor results do not depend on it)".into());
    }
    let bad = m.nan + m.pos_inf + m.neg_inf;
    if bad > 0 {
        w.push(Warning::new(
            WarningKind::NanInf,
            bad as f64,
            format!(
                "{} NaN, {} +Inf, {} -Inf: left out of every range and metric; find the op that makes them",
                fmt_count(m.nan),
                fmt_count(m.pos_inf),
                fmt_count(m.neg_inf)
            ),
        ));
    }
    if p.info.dtype == DType::F64 {
        notes.push("float64 input narrowed to float32 for analysis".into());
        if p.f64_overflows > 0 {
            w.push(Warning::new(
                WarningKind::Float64Narrowed,
                p.f64_overflows as f64,
                format!(
                    "{} overflow float32 (became ±inf)",
                    values(p.f64_overflows, "float64 value")
                ),
            ));
        }
    }
    if p.trailing_bytes > 0 {
        w.push(Warning::new(
            WarningKind::TrailingBytes,
            p.trailing_bytes as f64,
            format!(
                "{} bytes after the data that the header does not account for (ignored)",
                fmt_count(p.trailing_bytes)
            ),
        ));
    }
    for (t_cast, acc) in &p.casts {
        match t_cast {
            CastType::Float16 => {
                if acc.overflow > 0 {
                    w.push(Warning::new(
                        WarningKind::Fp16Overflow,
                        acc.overflow as f64,
                        format!(
                            "{} beyond ±{F16_MAX} become ±inf in float16 (max |x| {:.4e}); keep this op in float32 or bfloat16",
                            values(acc.overflow, "value"),
                            p.absmax()
                        ),
                    ));
                }
                let lost = acc.underflow + acc.subnormal;
                if m.n > 0 && lost as f64 / m.n as f64 > t.fp16_underflow_share {
                    w.push(Warning::new(
                        WarningKind::Fp16Underflow,
                        lost as f64,
                        format!(
                            "{} flush to zero and {} become subnormal in float16 (|x| < 6.1e-5); scale them up or keep float32",
                            values(acc.underflow, "value"),
                            fmt_count(acc.subnormal)
                        ),
                    ));
                }
            }
            CastType::Bfloat16 => {
                let a = acc.finish(CastType::Bfloat16);
                if a.sqnr_db < t.bf16_sqnr_db {
                    w.push(Warning::new(
                        WarningKind::Bf16LowSqnr,
                        a.sqnr_db,
                        format!("bfloat16 SQNR only {:.1} dB", a.sqnr_db),
                    ));
                }
            }
        }
    }
    if m.square_overflow > 0 {
        w.push(Warning::new(
            WarningKind::Fp16SquareOverflow,
            m.square_overflow as f64,
            format!(
                "{} |x| > 255.9, so x² overflows float16: a LayerNorm/RMSNorm variance computed in float16 becomes inf",
                values(m.square_overflow, "value has")
            ),
        ));
    }
    match p.rows {
        Some((rows, over, max_sum)) if over > 0 => w.push(Warning::new(
            WarningKind::Fp16SumSquaresOverflow,
            over as f64,
            format!(
                "{} of {} rows have Σx² over the last axis > {F16_MAX} (max {:.4e}): a float16 norm over them overflows",
                fmt_count(over),
                fmt_count(rows),
                max_sum
            ),
        )),
        Some(_) => {}
        None => {
            // Rows not contiguous (Fortran order or a huge last axis): estimate from the RMS.
            let n = p.info.shape.last().copied().unwrap_or(1) as f64;
            if m.n > 0 && p.info.shape.len() >= 2 {
                let mean_row = n * m.sum_sq / m.n as f64;
                if mean_row >= F16_OVERFLOW {
                    w.push(Warning::new(
                        WarningKind::Fp16SumSquaresOverflow,
                        mean_row,
                        format!(
                            "the mean Σx² over the last axis is {mean_row:.4e} > {F16_MAX}: a float16 norm over it overflows"
                        ),
                    ));
                }
            }
        }
    }
    let range = if opts.scheme == Scheme::Symmetric {
        p.absmax()
    } else {
        f64::from(m.max) - f64::from(m.min)
    };
    if m.n > 0 && range < calib::scheme::ZERO_RANGE {
        w.push(Warning::new(
            WarningKind::ZeroRange,
            range,
            "the range is (nearly) zero: scale falls back to 1; is this layer dead?",
        ));
    }
    if m.n > 0 && m.min >= 0.0 && opts.scheme == Scheme::Symmetric && m.max > 0.0 {
        w.push(Warning::new(
            WarningKind::OneSided,
            f64::from(m.min),
            "all values ≥ 0 under a symmetric scheme: the negative half of the grid is wasted (one bit); use --scheme affine or an unsigned type",
        ));
    }
    let abs_pct = |k: &str| {
        layer
            .stats
            .as_ref()
            .and_then(|s| s.percentiles.abs.get(k).copied())
            .unwrap_or(f64::NAN)
    };
    let (p99, p9999) = (abs_pct("p99"), abs_pct("p99.99"));
    let absmax = p.absmax();
    let kurt = m.kurtosis();
    if p9999 > 0.0 && (absmax / p9999 > t.outlier_ratio || kurt > t.kurtosis) {
        let qmax = opts.scheme.qmax(opts.bits) as u64;
        // Levels min-max leaves to the bulk of the data: |x| ≤ P maps to ceil(P/max·qmax).
        let levels = |pv: f64| ((pv / absmax) * qmax as f64).ceil().max(1.0) as u64;
        w.push(Warning::new(
            WarningKind::HeavyOutliers,
            absmax / p9999,
            format!(
                "max |x| is {:.1}× the 99.99th percentile of |x| and kurtosis is {:.1}: min-max \
                 puts 99% of values on {} and 99.99% on {} of {} levels; clip with \
                 entropy/MSE/percentile",
                absmax / p9999,
                kurt,
                levels(p99),
                levels(p9999),
                qmax
            ),
        ));
    }
}

pub(crate) fn method_warnings(layer: &mut LayerAnalysis, p: &Profile, opts: &Options) {
    let t = &opts.thresholds;
    for m in &layer.methods {
        let c = m.metrics.clipped();
        if c > t.clip_share {
            layer.warnings.push(Warning::new(
                WarningKind::Clipping,
                c,
                format!(
                    "{} clips {:.2}% of values ({:.2}% below, {:.2}% above)",
                    m.label(),
                    100.0 * c,
                    100.0 * m.metrics.clipped_below,
                    100.0 * m.metrics.clipped_above
                ),
            ));
        }
    }
    if let Some(s) = layer.sensitivity_sqnr_db
        && s < t.sqnr_floor_db
    {
        layer.warnings.push(Warning::new(
            WarningKind::LowSqnr,
            s,
            format!(
                "best SQNR {:.1} dB < {:.0} dB at {} bits: keep this layer in higher precision",
                s, t.sqnr_floor_db, opts.bits
            ),
        ));
    }
    let widths: Vec<f64> = layer
        .methods
        .iter()
        .map(|m| m.range[1] - m.range[0])
        .filter(|w| *w > 0.0)
        .collect();
    let wmax = widths.iter().copied().fold(0.0, f64::max);
    let wmin = widths.iter().copied().fold(f64::INFINITY, f64::min);
    if p.moments.n > 0 && wmin > 0.0 && wmax / wmin > t.disagreement {
        layer.warnings.push(Warning::new(
            WarningKind::RangeDisagreement,
            wmax / wmin,
            format!(
                "methods disagree on the range by {:.1}×: the choice of calibrator matters here",
                wmax / wmin
            ),
        ));
    }
}

/// How many outlier channels a message names.
const NAMED_CHANNELS: usize = 5;

/// "per token", "per channel", "blocks of 32": a granularity row in a sentence.
pub fn granularity_phrase(r: &GranularityResult) -> String {
    match (r.granularity, r.block_size) {
        (Granularity::Block, Some(g)) => format!("blocks of {g}"),
        (g, _) => format!("per {}", g.name()),
    }
}

/// The `outlier_channels` warning, and the verdict on finer scales added to `low_sqnr`.
/// `tensor` is the per-tensor grid's error (measured whether or not its row is shown).
pub(crate) fn granularity_warnings(layer: &mut LayerAnalysis, tensor: &Metrics, opts: &Options) {
    let floor = opts.thresholds.sqnr_floor_db;
    let finer: Vec<&GranularityResult> = layer
        .granularities
        .iter()
        .filter(|r| r.granularity != Granularity::Tensor)
        .collect();
    let verdict = if finer.is_empty() {
        None
    } else {
        let good: Vec<String> = finer
            .iter()
            .filter(|r| r.metrics.sqnr_db >= floor)
            .map(|r| format!("{} {:.1} dB", granularity_phrase(r), r.metrics.sqnr_db))
            .collect();
        let best = finer
            .iter()
            .filter(|r| !r.metrics.sqnr_db.is_nan())
            .max_by(|a, b| a.metrics.sqnr_db.total_cmp(&b.metrics.sqnr_db));
        Some(if !good.is_empty() {
            format!(", or use finer scales: {}", good.join(", "))
        } else if let Some(b) = best {
            format!(
                "; finer scales do not reach {floor:.0} dB either (best: {}, {:.1} dB)",
                granularity_phrase(b),
                b.metrics.sqnr_db
            )
        } else {
            String::new()
        })
    };
    if let Some(v) = verdict
        && let Some(w) = layer
            .warnings
            .iter_mut()
            .find(|w| w.kind == WarningKind::LowSqnr)
    {
        w.message.push_str(&v);
    }
    let Some(ch) = &layer.channels else {
        return;
    };
    let (Some(in_float), Some(top)) = (&ch.outliers_in_float, ch.top.first()) else {
        return;
    };
    let mut named: Vec<usize> = ch
        .top
        .iter()
        .map(|t| t.channel)
        .filter(|c| ch.outliers.contains(c))
        .take(NAMED_CHANNELS)
        .collect();
    if named.len() < NAMED_CHANNELS.min(ch.outliers.len()) {
        // More outliers than the top list holds: the rest in index order.
        let rest: Vec<usize> = ch
            .outliers
            .iter()
            .copied()
            .filter(|c| !named.contains(c))
            .take(NAMED_CHANNELS - named.len())
            .collect();
        named.extend(rest);
    }
    let list = named
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let more = ch.outliers.len() - named.len();
    let who = match (ch.outliers.len(), more) {
        (1, _) => format!("channel {list} holds"),
        (_, 0) => format!("channels {list} hold"),
        (_, m) => format!("channels {list} and {m} more hold"),
    };
    let token = layer
        .granularities
        .iter()
        .find(|r| r.granularity == Granularity::Token)
        .map(|r| format!("; per-token {:.1} dB", r.metrics.sqnr_db))
        .unwrap_or_default();
    layer.warnings.push(Warning::new(
        WarningKind::OutlierChannels,
        top.ratio,
        format!(
            "{who} values up to {:.0}× the median channel (axis {}); per-tensor int{} SQNR {:.1} dB → {:.1} dB with {} kept in float{token}",
            top.ratio,
            ch.axis,
            opts.bits,
            tensor.sqnr_db,
            in_float.metrics.sqnr_db,
            if ch.outliers.len() == 1 { "it" } else { "them" },
        ),
    ));
}

/// The format rows' warnings: `fp8_clipping`, `fp8_unclamped_nan`, `fp8_zero_amax` and
/// `mx_scale_clipping` (README "Warnings"), and the NVFP4 underflow note.
pub(crate) fn format_warnings(layer: &mut LayerAnalysis, facts: &FormatFacts, opts: &Options) {
    let e4m3: Vec<&FormatResult> = layer
        .formats
        .iter()
        .filter(|r| r.format == FormatKind::Fp8E4m3 && r.granularity == FormatGranularity::Tensor)
        .collect();
    let mut out = Vec::new();
    // Judged at the amax that would be deployed (the recommended method's), not at every
    // calibrator's: a percentile clips by design, and flagging each one would flag every layer.
    let rec = layer.recommended_method().and_then(|m| {
        e4m3.iter()
            .find(|r| r.method.as_deref() == Some(m.method.name()) && r.percentile == m.percentile)
    });
    let full = e4m3.iter().find(|r| r.method.as_deref() == Some("minmax"));
    if let (Some(rec), Some(full)) = (rec, full) {
        let cost = full.metrics.sqnr_db - rec.metrics.sqnr_db;
        if rec.metrics.clipped() > 0.0 && cost >= opts.thresholds.fp8_clip_cost_db {
            out.push(Warning::new(
                WarningKind::Fp8Clipping,
                cost,
                format!(
                    "E4M3 at the recommended {} amax {:.4e} clips {:.2}% of values that E4M3 holds at the min-max scale: SQNR {:.1} dB vs {:.1} dB (costs {:.1} dB); FP8 needs little clipping",
                    method_phrase(rec),
                    rec.amax.unwrap_or(f64::NAN),
                    100.0 * rec.metrics.clipped(),
                    rec.metrics.sqnr_db,
                    full.metrics.sqnr_db,
                    cost
                ),
            ));
        }
    }
    if let Some(rec) = rec.filter(|r| r.unclamped_nonfinite.unwrap_or(0) > 0) {
        let n = rec.unclamped_nonfinite.unwrap_or(0);
        out.push(Warning::new(
            WarningKind::Fp8UnclampedNan,
            n as f64,
            format!(
                "a kernel that casts to E4M3 without clamping would write NaN for {} at the recommended {} amax {:.4e} (|x|·448/amax past 464); clamp to ±448 before the cast",
                values(n, "value"),
                method_phrase(rec),
                rec.amax.unwrap_or(f64::NAN)
            ),
        ));
    }
    if !facts.zero_amax.is_empty() {
        out.push(Warning::new(
            WarningKind::Fp8ZeroAmax,
            facts.zero_amax.len() as f64,
            format!(
                "amax 0 for {}: the FP8 scale M/amax would be infinite; taken as exact (every value is 0)",
                facts.zero_amax.join(", ")
            ),
        ));
    }
    for &(kind, rule, blocks, clipped_blocks) in &facts.mx_blocks {
        if rule != ScaleRule::Ocp || clipped_blocks == 0 {
            continue;
        }
        let row = |r: ScaleRule| {
            layer
                .formats
                .iter()
                .find(|f| f.format == kind && f.scale_rule == Some(r))
        };
        let (Some(ocp), Some(rceil)) = (row(ScaleRule::Ocp), row(ScaleRule::Rceil)) else {
            continue;
        };
        let share = ocp.metrics.clipped();
        out.push(Warning::new(
            WarningKind::MxScaleClipping,
            share,
            format!(
                "{}: the OCP scale rule clips {:.3}% of values in {:.2}% of blocks ({} of {}); RCEIL would not (SQNR {:.1} dB OCP vs {:.1} dB RCEIL)",
                kind.name(),
                100.0 * share,
                100.0 * clipped_blocks as f64 / blocks.max(1) as f64,
                fmt_count(clipped_blocks),
                fmt_count(blocks),
                ocp.metrics.sqnr_db,
                rceil.metrics.sqnr_db
            ),
        ));
    }
    if facts.nvfp4_underflow > 0 {
        layer.notes.push(format!(
            "nvfp4: {} lie in blocks whose E4M3 scale rounds to 0 and dequantize to 0",
            values(facts.nvfp4_underflow, "nonzero value")
        ));
    }
    layer.warnings.extend(out);
}

/// `entropy`, `percentile 99.9`, `FP8 MSE search`: a per-tensor row's amax source in a
/// sentence.
fn method_phrase(r: &FormatResult) -> String {
    match (r.method.as_deref(), r.percentile) {
        (Some(m), _) if m == super::formats::MSE_FP8 => "FP8 MSE search".into(),
        (Some(m), Some(p)) => format!("{m} {p}"),
        (Some(m), None) => m.to_string(),
        (None, _) => "dynamic".into(),
    }
}
