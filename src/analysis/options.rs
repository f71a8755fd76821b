//! Options: everything that changes what is computed, with the defaults written once here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use crate::calib::Scheme;
use crate::source::Limits;

use super::warnings::Thresholds;

/// Bins of the fine histograms (percentiles, display).
pub const FINE_BINS: usize = 65536;
pub use crate::calib::SEARCH_BINS;
/// Most batches the moving average tracks along the batch axis.
pub const MAX_BATCHES: usize = 1 << 22;

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
