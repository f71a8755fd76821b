//! The result model: [`Analysis`] and what it holds per layer, serialized as the JSON the
//! README documents.

use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use crate::calib::{MethodKind, Scheme};
use crate::source::{LayerSpec, LoadError};

use super::cast::CastAudit;
use super::formats::{FormatGranularity, FormatKind, FormatResult};
use super::granularity::Granularity;
use super::metrics::Metrics;
use super::options::Options;
use super::profile::KeptProfile;
use super::stats::Stats;
use super::validation::{Convergence, Validation};
use super::warnings::Warning;

/// Version of the JSON shape (see README "JSON output").
pub const JSON_VERSION: u32 = 1;

/// The result of analysing all layers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Analysis {
    pub version: u32,
    pub settings: Settings,
    pub layers: Vec<LayerAnalysis>,
}

/// The options that shaped the numbers, echoed in every output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub bits: u8,
    pub scheme: Scheme,
    pub percentiles: Vec<f64>,
    pub ema_constant: f64,
    pub batch_axis: Option<usize>,
    pub sqnr_floor_db: f64,
    /// The granularity rows shown and what they were measured with.
    pub granularities: Vec<Granularity>,
    pub channel_axis: i64,
    pub block_sizes: Vec<usize>,
    pub outlier_ratio: f64,
    pub outlier_threshold: f64,
    /// Whether held-out validation and convergence ran, and K.
    pub validate: bool,
    pub folds: usize,
    /// The format rows measured (`--formats`).
    pub formats: Vec<FormatKind>,
}

impl Settings {
    pub fn of(o: &Options) -> Settings {
        Settings {
            bits: o.bits,
            scheme: o.scheme,
            percentiles: o.percentiles.clone(),
            ema_constant: o.ema_constant,
            batch_axis: o.batch_axis,
            sqnr_floor_db: o.thresholds.sqnr_floor_db,
            granularities: o.granularity.rows.clone(),
            channel_axis: o.granularity.channel_axis,
            block_sizes: o.granularity.block_sizes.clone(),
            outlier_ratio: o.granularity.outlier_ratio,
            outlier_threshold: o.granularity.outlier_threshold,
            validate: o.validate,
            folds: o.folds,
            formats: o.formats.clone(),
        }
    }
}

/// One method's range on one layer and its exact error there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: MethodKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub scheme: Scheme,
    pub bits: u8,
    /// The range the method chose (affine: before the zero point widens it to contain 0).
    pub range: [f64; 2],
    pub scale: f64,
    pub zero_point: i64,
    /// Candidate ranges the method's search evaluated (1 for closed-form methods).
    pub candidates: usize,
    pub metrics: Metrics,
}

impl MethodResult {
    /// `minmax`, `percentile 99.99`, ...: the label front ends show.
    pub fn label(&self) -> String {
        match self.percentile {
            Some(p) => format!("{} {}", self.method.name(), p),
            None => self.method.name().to_string(),
        }
    }
}

/// Which rule chose a layer's `recommended` method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendedBy {
    /// The held-out rule (README "Held-out validation").
    Heldout,
    /// The best SQNR on the calibration data itself (no validation: too few batches).
    InSample,
}

/// Symmetric abs-max quantization of the layer with one scale per group: the tensor, a token,
/// a channel or a block (README "Granularities").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GranularityResult {
    pub granularity: Granularity,
    /// G for a block row, else `null`.
    pub block_size: Option<usize>,
    pub bits: u8,
    /// How many scales the row uses.
    pub groups: u64,
    pub metrics: Metrics,
}

impl GranularityResult {
    /// `tensor`, `token`, `channel`, `block 32`: the label front ends show.
    pub fn label(&self) -> String {
        match self.block_size {
            Some(g) => format!("{} {g}", self.granularity.name()),
            None => self.granularity.name().to_string(),
        }
    }

    /// The CSV `method` value: `granularity:token`, `granularity:block:32`.
    pub fn csv_method(&self) -> String {
        match self.block_size {
            Some(g) => format!("granularity:{}:{g}", self.granularity.name()),
            None => format!("granularity:{}", self.granularity.name()),
        }
    }
}

/// The per-channel absmax along the channel axis and the outlier channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub axis: usize,
    pub count: usize,
    /// numpy's median of the per-channel absmax.
    pub absmax_median: f64,
    /// The largest channels, largest first (ties: lower index first).
    pub top: Vec<TopChannel>,
    /// Channels whose absmax ≥ `--outlier-ratio` × the median (none when the median is 0).
    pub outliers: Vec<usize>,
    pub above_threshold: AboveThreshold,
    /// The per-tensor grid fitted to the other channels, the outlier channels left exact.
    pub outliers_in_float: Option<OutliersInFloat>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopChannel {
    pub channel: usize,
    pub absmax: f64,
    /// absmax over the median channel's (`"inf"` when the median is 0).
    #[serde(serialize_with = "ser_num")]
    pub ratio: f64,
}

/// LLM.int8's criterion: values with |x| ≥ threshold and the channels holding any.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AboveThreshold {
    pub threshold: f64,
    pub values: u64,
    pub channels: usize,
}

/// What a granularity table row's group column counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupCount {
    /// Groups with a scale of their own.
    Groups(u64),
    /// Outlier channels kept exact (the "outliers in float" row).
    ExactChannels(usize),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutliersInFloat {
    pub channels: usize,
    pub metrics: Metrics,
}

/// Everything we know about one layer. `error` set means the layer could not be analysed
/// (its message names the file); the other fields then hold what was known before it failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerAnalysis {
    pub name: String,
    pub source: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub stats: Option<Stats>,
    pub casts: Vec<CastAudit>,
    pub methods: Vec<MethodResult>,
    /// The method with the best held-out SQNR where there is a validation, else the best
    /// in-sample SQNR (ties: the narrower range); `recommended_by` says which.
    pub recommended: Option<String>,
    pub recommended_by: Option<RecommendedBy>,
    /// The best SQNR any method reached: low means the layer is sensitive to quantization.
    #[serde(serialize_with = "ser_opt_num")]
    pub sensitivity_sqnr_db: Option<f64>,
    /// Symmetric abs-max quantization per tensor, token, channel and block (`--granularities`).
    pub granularities: Vec<GranularityResult>,
    /// The channel axis and its outliers; `null` for a layer without one (0-d, 1-D).
    pub channels: Option<ChannelSummary>,
    /// Held-out validation over K folds of batches; `null` with fewer than 2·K batches.
    pub validation: Option<Validation>,
    /// Ranges over batch prefixes and the verdict; `null` with one batch.
    pub convergence: Option<Convergence>,
    /// FP8, MX and NVFP4 rows (`--formats`, README "Formats").
    pub formats: Vec<FormatResult>,
    pub warnings: Vec<Warning>,
    /// Facts about how the numbers were made (float64 narrowed, layout, ...).
    pub notes: Vec<String>,
    pub error: Option<String>,
    /// The data behind the numbers (histograms, packed) for front ends that draw them or
    /// re-run with other options; only with [`Options::keep_profiles`].
    #[serde(skip)]
    pub profile: Option<Arc<KeptProfile>>,
}

impl LayerAnalysis {
    /// A layer of `spec` with nothing known yet.
    pub(crate) fn named(spec: &LayerSpec) -> LayerAnalysis {
        LayerAnalysis {
            name: spec.name.clone(),
            source: spec.source(),
            shape: Vec::new(),
            dtype: String::new(),
            stats: None,
            casts: Vec::new(),
            methods: Vec::new(),
            recommended: None,
            recommended_by: None,
            sensitivity_sqnr_db: None,
            granularities: Vec::new(),
            channels: None,
            validation: None,
            convergence: None,
            formats: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            error: None,
            profile: None,
        }
    }

    pub(crate) fn failed(spec: &LayerSpec, e: &LoadError) -> LayerAnalysis {
        LayerAnalysis {
            error: Some(e.to_string()),
            ..LayerAnalysis::named(spec)
        }
    }

    /// A layer for an input that failed before any layer could be formed (e.g. a bad folder).
    pub fn from_error(e: &LoadError) -> LayerAnalysis {
        let spec = LayerSpec {
            name: e.path.clone(),
            parts: Vec::new(),
        };
        let mut l = LayerAnalysis::failed(&spec, e);
        l.source = e.path.clone();
        l
    }

    /// The granularity table as every report lists it: each granularity row (label, its group
    /// count), then the outlier channels kept in float (label, how many channels are exact).
    pub fn granularity_rows(&self) -> Vec<(String, GroupCount, &Metrics)> {
        let rows = self
            .granularities
            .iter()
            .map(|g| (g.label(), GroupCount::Groups(g.groups), &g.metrics));
        let kept = self
            .channels
            .as_ref()
            .and_then(|c| c.outliers_in_float.as_ref())
            .map(|f| {
                (
                    "outliers in float".to_string(),
                    GroupCount::ExactChannels(f.channels),
                    &f.metrics,
                )
            });
        rows.chain(kept).collect()
    }

    /// Whether `m` is this layer's recommended method.
    pub fn is_recommended(&self, m: &MethodResult) -> bool {
        self.recommended.as_deref() == Some(m.label().as_str())
    }

    pub fn recommended_method(&self) -> Option<&MethodResult> {
        self.methods.iter().find(|m| self.is_recommended(m))
    }

    /// The per-tensor rows of the FP8 format `kind` (one per calibrator's amax), in table order.
    pub fn fp8_tensor_rows(&self, kind: FormatKind) -> Vec<&FormatResult> {
        self.formats
            .iter()
            .filter(|f| f.format == kind && f.granularity == FormatGranularity::Tensor)
            .collect()
    }
}

/// Options-independent facts about a layer from passes 1 and 2: kept so a change of scheme,
/// bits or percentiles recalibrates without re-reading for them. `H` is how the two fine
/// histograms are held: dense while a layer is analysed, packed in a [`KeptProfile`].
/// Serializes non-finite numbers as strings (`"inf"`, `"-inf"`, `"nan"`): JSON has none. A
/// binary format (a saved analysis) gets the number itself, so every bit comes back.
pub fn ser_num<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() || !s.is_human_readable() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

pub(crate) fn ser_opt_num<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_num(v, s),
        None => s.serialize_none(),
    }
}
