//! The dispatch that turns a layer's observed facts into every method's chosen range.

use serde::{Deserialize, Serialize};

use super::{QParams, Scheme, Search};
use crate::histogram::Histogram;

/// Bins of the histograms the entropy and MSE searches use (as the references).
pub const SEARCH_BINS: usize = 2048;

/// A calibration method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Minmax,
    Ema,
    Entropy,
    Mse,
    Percentile,
}

impl MethodKind {
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Minmax => "minmax",
            MethodKind::Ema => "ema",
            MethodKind::Entropy => "entropy",
            MethodKind::Mse => "mse",
            MethodKind::Percentile => "percentile",
        }
    }
}

/// One method's chosen range and its quantizer.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub method: MethodKind,
    pub percentile: Option<f64>,
    pub search: Search,
    pub q: QParams,
}

/// What the calibrators read of a layer: never its values, only these merged facts.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The finite range ((0, 0) when there is no finite value).
    pub min: f64,
    pub max: f64,
    /// Per-batch (min, max) of the finite values, in batch order.
    pub batches: &'a [(f32, f32)],
    /// x over `[min, max]` and |x| over `[0, max|x|]`, with a multiple of [`SEARCH_BINS`] bins.
    pub hist: &'a Histogram,
    pub abs_hist: &'a Histogram,
    /// x over `[−max|x|, max|x|]` in [`SEARCH_BINS`] bins with numpy's edges (ONNX Runtime's
    /// entropy histogram, `crate::histogram::NumpyBins`), for the affine entropy; None where
    /// the scheme is symmetric (the affine entropy then falls back to min-max, 0 candidates).
    pub entropy_hist: Option<&'a Histogram>,
}

/// The settings the calibrators depend on.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    pub bits: u8,
    pub scheme: Scheme,
    pub percentiles: &'a [f64],
    pub ema_constant: f64,
}

/// Runs every calibrator: min-max, moving average, entropy, MSE, then each percentile.
pub fn calibrate(p: &Observed, opts: &Config) -> Vec<Chosen> {
    let (min, max) = (p.min, p.max);
    let absmax = min.abs().max(max.abs());
    let sym = opts.scheme == Scheme::Symmetric;
    let factor = (p.hist.bins() / SEARCH_BINS).max(1);
    let mut out = Vec::new();
    let mut push = |method, percentile, search: Search| {
        let q = QParams::new(opts.scheme, opts.bits, search.lo, search.hi);
        out.push(Chosen {
            method,
            percentile,
            search,
            q,
        });
    };
    let minmax = if sym {
        Search {
            lo: -absmax,
            hi: absmax,
            candidates: 1,
        }
    } else {
        Search {
            lo: min,
            hi: max,
            candidates: 1,
        }
    };
    push(MethodKind::Minmax, None, minmax);
    let ema = super::ema::ema(p.batches, opts.ema_constant).map_or(minmax, |s| {
        if sym {
            let a = s.lo.abs().max(s.hi.abs());
            Search { lo: -a, hi: a, ..s }
        } else {
            s
        }
    });
    push(MethodKind::Ema, None, ema);
    // A scheme's searches read one of the two fine histograms (the affine entropy reads its
    // own): coarsen only that one (each is a sweep of 65536 bins).
    let h = if sym {
        p.abs_hist.coarsen(factor)
    } else {
        p.hist.coarsen(factor)
    };
    if sym {
        push(
            MethodKind::Entropy,
            None,
            super::entropy::symmetric(&h, opts.bits),
        );
        push(MethodKind::Mse, None, super::mse::symmetric(&h, opts.bits));
    } else {
        let entropy = p.entropy_hist.map_or(
            Search {
                lo: min,
                hi: max,
                candidates: 0,
            },
            |eh| super::entropy::affine(eh, min, max, opts.bits),
        );
        push(MethodKind::Entropy, None, entropy);
        push(MethodKind::Mse, None, super::mse::affine(&h, opts.bits));
    }
    let pcts = if sym {
        super::percentile::symmetric(p.abs_hist, opts.percentiles)
    } else {
        super::percentile::affine(p.hist, opts.percentiles)
    };
    for (&pc, s) in opts.percentiles.iter().zip(pcts) {
        push(MethodKind::Percentile, Some(pc), s);
    }
    out
}
