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

/// Histograms the calibrator tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::analysis::histogram::Histogram;

    pub fn hist(lo: f64, hi: f64, counts: Vec<u64>) -> Histogram {
        Histogram { lo, hi, counts }
    }

    /// Counts proportional to the normal pdf at the bin centres (|x| histogram: 2φ), ×scale.
    pub fn gaussian_counts(lo: f64, hi: f64, bins: usize, scale: f64, abs: bool) -> Histogram {
        let mut h = Histogram::new(lo, hi, bins);
        let w = h.width();
        for i in 0..bins {
            let x = h.centre(i);
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let d = if abs { 2.0 * pdf } else { pdf };
            h.counts[i] = (d * w * scale).round() as u64;
        }
        h
    }
}
