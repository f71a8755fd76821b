//! Calibration methods: each turns the merged statistics/histograms of a layer into a range.
//! One method per file, each citing the reference implementation it follows.

pub mod ema;
pub mod entropy;
pub mod mse;
pub mod percentile;
pub mod scheme;

pub use scheme::{QParams, Scheme};

/// The range a calibrator chose and how many candidate ranges its search evaluated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Search {
    pub lo: f64,
    pub hi: f64,
    pub candidates: usize,
}
