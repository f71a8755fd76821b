//! A layer's profile: the options-independent facts of passes 1 and 2.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::calib;
use crate::histogram::{Histogram, PackedHistogram};
use crate::source::ArrayInfo;

use super::binned::Bins;
use super::cast::{CastAccum, CastType};
use super::granularity::ChannelProfile;
use super::stats::Moments;
use super::validation::Cells;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile<H = Histogram> {
    pub info: ArrayInfo,
    pub parts: usize,
    pub moments: Moments,
    pub casts: Vec<(CastType, CastAccum)>,
    /// Per-batch (min, max) of the finite values, in batch order.
    pub batches: Vec<(f32, f32)>,
    /// Rows along the last axis and how many have Σx² ≥ 65520 (None: not measured).
    pub rows: Option<(u64, u64, f64)>,
    /// x over `[min, max]` and |x| over `[0, max|x|]`, FINE_BINS each.
    pub hist: H,
    pub abs_hist: H,
    /// x over `[−max|x|, max|x|]` in SEARCH_BINS bins with numpy's edges: ONNX Runtime's
    /// entropy histogram, which the affine entropy reads. Counted where a run may need it
    /// (an affine scheme, or a kept profile that a re-run may take to affine); else None.
    pub entropy_hist: Option<H>,
    pub f64_overflows: u64,
    pub trailing_bytes: u64,
    /// Per-channel absmax along the channel axis (None: no channel axis).
    pub channels: Option<ChannelProfile>,
    /// Why there is no channel axis, when the options asked for one that cannot be used.
    pub channel_note: Option<String>,
    /// The histograms per fold and convergence segment (None: one batch).
    pub cells: Option<Cells<H>>,
    /// Pass 2's per-bin sums for the metrics pass (large layers, with `--binned`); not kept
    /// nor saved.
    #[serde(skip)]
    pub bins: Option<Arc<Bins>>,
}

/// A profile as front ends keep it between runs: ≈70 KiB a layer instead of 1 MiB.
pub type KeptProfile = Profile<PackedHistogram>;

impl<H> Profile<H> {
    pub fn absmax(&self) -> f64 {
        f64::from(self.moments.min.abs().max(self.moments.max.abs()))
    }

    /// The same facts with the histograms converted by `f`.
    fn map_hists<G>(&self, f: impl Fn(&H) -> G) -> Profile<G> {
        Profile {
            info: self.info.clone(),
            parts: self.parts,
            moments: self.moments.clone(),
            casts: self.casts.clone(),
            batches: self.batches.clone(),
            rows: self.rows,
            hist: f(&self.hist),
            abs_hist: f(&self.abs_hist),
            entropy_hist: self.entropy_hist.as_ref().map(&f),
            f64_overflows: self.f64_overflows,
            trailing_bytes: self.trailing_bytes,
            channels: self.channels.clone(),
            channel_note: self.channel_note.clone(),
            cells: self.cells.as_ref().map(|c| c.map(&f)),
            bins: None,
        }
    }
}

impl Profile {
    /// What the calibrators read of this layer.
    pub fn observed(&self) -> calib::Observed<'_> {
        let (min, max) = if self.moments.n > 0 {
            (f64::from(self.moments.min), f64::from(self.moments.max))
        } else {
            (0.0, 0.0)
        };
        calib::Observed {
            min,
            max,
            batches: &self.batches,
            hist: &self.hist,
            abs_hist: &self.abs_hist,
            entropy_hist: self.entropy_hist.as_ref(),
        }
    }

    pub fn pack(&self) -> KeptProfile {
        self.map_hists(PackedHistogram::pack)
    }
}

impl KeptProfile {
    pub fn unpack(&self) -> Profile {
        self.map_hists(PackedHistogram::unpack)
    }
}
