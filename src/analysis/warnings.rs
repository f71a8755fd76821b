//! Warnings: a kind, a message with the actionable hint, and the number that triggered it.
//! Adding one is a variant here plus a check in [`check`].

use serde::Serialize;

/// Every warning calibscope raises. The JSON `kind` is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
    OneSided,
    Clipping,
    LowSqnr,
    RangeDisagreement,
}

impl WarningKind {
    pub const ALL: [WarningKind; 14] = [
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
        WarningKind::OneSided,
        WarningKind::Clipping,
        WarningKind::LowSqnr,
        WarningKind::RangeDisagreement,
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
            WarningKind::OneSided => "one_sided",
            WarningKind::Clipping => "clipping",
            WarningKind::LowSqnr => "low_sqnr",
            WarningKind::RangeDisagreement => "range_disagreement",
        }
    }

    pub fn from_name(name: &str) -> Option<WarningKind> {
        WarningKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One warning on one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
