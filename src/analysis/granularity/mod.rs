//! Where the scale lives: symmetric abs-max quantization per token, per channel and per block
//! beside per tensor, and the outlier channels that decide it (README "Granularities").
//!
//! - Pass 1 folds each channel's absmax ([`ChannelFold`]: a vector of C per worker, merged by
//!   max, so exact whatever the order) and counts |x| ≥ the outlier threshold.
//! - Pass 3 ([`Plan::measure_chunk`]) quantizes every group with its own scale s = absmax/qmax.
//!   Per-channel scales come from pass 1. Per-token and per-block scales come from the values
//!   themselves, which needs a token (a row along the channel axis) whole inside one chunk:
//!   true when the channel axis is innermost in file order and chunks hold whole rows.
//!   Otherwise (NCHW with axis 1, Fortran order) only the per-channel row and the outlier
//!   channels are measured, by strided index arithmetic: the channel of flat index i is
//!   (i / stride) mod C.
//!
//! Each value is quantized as numpy's `np.clip(np.round(x / s), -qmax, qmax) * s` computes it:
//! t = x·(1/s) where that provably rounds the same (see `metrics::lanes_avx2`: within 2^-35 of
//! x/s for |t| ≤ 2^16 + 1, so only t within 2^-30 of a half step can differ), and the group
//! is redone with the division when any t comes that close.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::calib::{QParams, Scheme};
use crate::source::ArrayInfo;

use super::metrics::{ErrorAccum, Metrics};
use super::model::{
    AboveThreshold, ChannelSummary, GranularityResult, OutliersInFloat, TopChannel,
};
use super::options::Options;

#[macro_use]
mod kernels;
#[cfg(test)]
mod tests;

use kernels::*;

/// One way of placing the scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One scale for the whole tensor (min-max symmetric).
    Tensor,
    /// One scale per token: a row along the channel axis (dynamic per-token quantization).
    Token,
    /// One scale per channel over all tokens (static per-channel).
    Channel,
    /// One scale per block of G consecutive values along the channel axis inside one token.
    Block,
}

impl Granularity {
    pub const ALL: [Granularity; 4] = [
        Granularity::Tensor,
        Granularity::Token,
        Granularity::Channel,
        Granularity::Block,
    ];

    /// The name in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Tensor => "tensor",
            Granularity::Token => "token",
            Granularity::Channel => "channel",
            Granularity::Block => "block",
        }
    }

    pub fn from_name(name: &str) -> Option<Granularity> {
        Granularity::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(name))
    }
}

/// Most channels one layer's channel summary holds (a vector of this many f32 per worker in
/// pass 1, two of f64 in pass 3).
pub const MAX_CHANNELS: usize = 1 << 22;

/// How many of the largest channels the summary lists.
pub const TOP_CHANNELS: usize = 8;

/// Where the channel axis runs in one part's file order: flat index i (within the part) is in
/// channel ((offset + i) / stride) mod count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMap {
    pub stride: usize,
    pub count: usize,
    pub offset: usize,
}

impl ChannelMap {
    fn channel(&self, i: usize) -> usize {
        (self.offset + i) / self.stride % self.count
    }
}

/// The channel axis of a layer, resolved against its parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelLayout {
    /// The axis in the layer's shape (batch files add a leading axis).
    pub axis: usize,
    pub count: usize,
    /// One map per part.
    pub maps: Vec<ChannelMap>,
    /// Whether every token lies whole inside one chunk (`Err`: why not), so per-token and
    /// per-block scales can be measured.
    pub rows: Result<(), String>,
}

impl ChannelLayout {
    /// Resolves `opts.granularity.channel_axis` for a layer made of `parts` (their headers and
    /// the chunk length each is read in). `Ok(None)`: no channel axis to speak of (0-d, 1-D);
    /// `Err`: a note saying why there is none.
    pub fn resolve(
        parts: &[(&ArrayInfo, usize)],
        opts: &Options,
    ) -> Result<Option<ChannelLayout>, String> {
        let Some(&(first, _)) = parts.first() else {
            return Ok(None);
        };
        if parts.iter().any(|(i, _)| i.shape != first.shape) {
            return Err(
                "batch files differ in shape: no channel axis, only the per-tensor row".into(),
            );
        }
        let multi = parts.len() > 1;
        let ndim = first.shape.len() + usize::from(multi);
        if ndim < 2 {
            return Ok(None);
        }
        let a = opts.granularity.channel_axis;
        let axis = if a < 0 { ndim as i64 + a } else { a };
        if !(0..ndim as i64).contains(&axis) {
            return Err(format!(
                "channel axis {a} does not exist in this {ndim}-d shape: only the per-tensor row"
            ));
        }
        let axis = axis as usize;
        let part_len = first.len();
        let count = if multi && axis == 0 {
            parts.len()
        } else {
            first.shape[axis - usize::from(multi)]
        };
        if count == 0 || part_len == 0 {
            return Ok(None);
        }
        if count > MAX_CHANNELS {
            return Err(format!(
                "{count} channels along axis {axis} exceed the {MAX_CHANNELS} a channel summary holds: only the per-tensor row"
            ));
        }
        let mut maps = Vec::with_capacity(parts.len());
        let mut rows = Ok(());
        for (pi, &(info, chunk)) in parts.iter().enumerate() {
            let map = if multi && axis == 0 {
                ChannelMap {
                    stride: part_len,
                    count,
                    offset: pi * part_len,
                }
            } else {
                let k = axis - usize::from(multi);
                let stride = if info.fortran_order {
                    info.shape[..k].iter().product()
                } else {
                    info.shape[k + 1..].iter().product()
                };
                ChannelMap {
                    stride,
                    count,
                    offset: 0,
                }
            };
            // Chunks are cut at multiples of `chunk` (the last one shorter): a token is whole
            // inside one when it is contiguous and the chunk is a multiple of its length.
            let chunk = chunk.clamp(1, part_len);
            if rows.is_ok() {
                if map.stride != 1 {
                    rows = Err(format!(
                        "per-token and per-block rows not available: the channel axis ({axis}) is not the innermost one in file order, so a token's values are not contiguous"
                    ));
                } else if chunk % count != 0 {
                    rows = Err(format!(
                        "per-token and per-block rows not available: a token's {count} values do not fit whole in the {chunk}-value chunks this layer is read in"
                    ));
                }
            }
            maps.push(map);
        }
        Ok(Some(ChannelLayout {
            axis,
            count,
            maps,
            rows,
        }))
    }
}

/// The per-channel facts of pass 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelProfile {
    pub layout: ChannelLayout,
    /// Each channel's largest finite |x| (0 for a channel with none).
    pub absmax: Arc<Vec<f32>>,
    /// The `--outlier-threshold` the counts below were made with.
    pub threshold: f64,
    /// Finite values with |x| ≥ threshold.
    pub above_threshold: u64,
}

/// One worker's pass-1 channel sums.
#[derive(Clone, Debug)]
pub struct FoldAcc {
    absmax: Vec<f32>,
    above: u64,
}

/// Pass 1's per-channel absmax fold over a layer's chunks.
#[derive(Debug)]
pub struct ChannelFold {
    layout: ChannelLayout,
    threshold: f64,
    /// The least f32 ≥ `threshold`: |x| ≥ threshold ⇔ |x| ≥ this.
    threshold_f32: f32,
}

impl ChannelFold {
    pub fn new(layout: ChannelLayout, threshold: f64) -> ChannelFold {
        let mut t = threshold as f32;
        if f64::from(t) < threshold {
            t = t.next_up();
        }
        ChannelFold {
            layout,
            threshold,
            threshold_f32: t,
        }
    }

    pub fn new_acc(&self) -> FoldAcc {
        FoldAcc {
            absmax: vec![0.0; self.layout.count],
            above: 0,
        }
    }

    /// Folds the chunk of part `part` that starts at flat index `first`.
    pub fn fold(&self, acc: &mut FoldAcc, part: usize, first: usize, values: &[f32]) {
        let Some(&map) = self.layout.maps.get(part) else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { fold_avx2(acc, map, self.threshold_f32, first, values) };
            return;
        }
        fold_lanes(acc, map, self.threshold_f32, first, values);
    }

    /// Merges the workers' sums (max and integer sums: exact in any order).
    pub fn finish(self, accs: Vec<FoldAcc>) -> ChannelProfile {
        let mut absmax = vec![0.0f32; self.layout.count];
        let mut above = 0;
        for a in accs {
            for (m, v) in absmax.iter_mut().zip(&a.absmax) {
                *m = m.max(*v);
            }
            above += a.above;
        }
        ChannelProfile {
            layout: self.layout,
            absmax: Arc::new(absmax),
            threshold: self.threshold,
            above_threshold: above,
        }
    }
}

/// The per-channel scales and the outlier channels, fixed before pass 3.
#[derive(Debug)]
struct Channels {
    profile: ChannelProfile,
    /// Per-channel scale and reciprocal (only when the channel row is measured).
    scales: Option<(Vec<f64>, Vec<f64>)>,
    median: f64,
    /// Outlier channel indices, ascending.
    outliers: Vec<usize>,
    /// Scale (and reciprocal) of the grid fitted to the other channels.
    in_float: Option<(f64, f64)>,
    is_outlier: Vec<bool>,
}

/// What pass 3 measures beside the methods, fixed from passes 1–2 and the options.
#[derive(Debug)]
pub struct Plan {
    /// The per-tensor grid: min-max symmetric (the same parameters as the symmetric `minmax`
    /// method, so measured once with it).
    pub tensor: QParams,
    qmax: f64,
    token: bool,
    channel: bool,
    blocks: Vec<usize>,
    channels: Option<Channels>,
    /// Elements of the layer (for the group counts).
    elems: u64,
    /// Why per-token and per-block rows are missing, when they are.
    note: Option<String>,
}

/// Pass-3 sums of the granularity rows over some chunks (in chunk order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupAccums {
    token: ErrorAccum,
    channel: ErrorAccum,
    blocks: Vec<ErrorAccum>,
    in_float: ErrorAccum,
}

impl GroupAccums {
    pub fn merge(&mut self, o: &GroupAccums) {
        self.token.merge(&o.token);
        self.channel.merge(&o.channel);
        self.in_float.merge(&o.in_float);
        self.blocks
            .resize(o.blocks.len().max(self.blocks.len()), Default::default());
        for (a, b) in self.blocks.iter_mut().zip(&o.blocks) {
            a.merge(b);
        }
    }
}

impl Plan {
    /// The plan for a layer with finite absmax `absmax`, its pass-1 channel facts (if it has a
    /// channel axis) and the note that says why it has none (if any).
    pub fn new(absmax: f64, channels: Option<&ChannelProfile>, elems: u64, opts: &Options) -> Plan {
        let g = &opts.granularity;
        let qmax = Scheme::Symmetric.qmax(opts.bits) as f64;
        let tensor = QParams::new(Scheme::Symmetric, opts.bits, -absmax, absmax);
        let rows_ok = channels.map(|c| c.layout.rows.clone());
        let rows = matches!(rows_ok, Some(Ok(())));
        let note = match rows_ok {
            Some(Err(why)) if g.shows(Granularity::Token) || g.shows(Granularity::Block) => {
                Some(why)
            }
            _ => None,
        };
        let channels = channels.map(|p| {
            let c = p.absmax.len();
            let median = median(&p.absmax);
            let outliers: Vec<usize> = if median > 0.0 {
                (0..c)
                    .filter(|&i| f64::from(p.absmax[i]) >= g.outlier_ratio * median)
                    .collect()
            } else {
                Vec::new()
            };
            let mut is_outlier = vec![false; c];
            for &i in &outliers {
                is_outlier[i] = true;
            }
            let rest = p
                .absmax
                .iter()
                .zip(&is_outlier)
                .filter(|(_, o)| !**o)
                .fold(0.0f32, |a, (&m, _)| a.max(m));
            let scales = g.shows(Granularity::Channel).then(|| {
                p.absmax
                    .iter()
                    .map(|&m| scale(m, qmax))
                    .unzip::<f64, f64, Vec<f64>, Vec<f64>>()
            });
            Channels {
                profile: p.clone(),
                scales,
                median,
                in_float: (!outliers.is_empty()).then(|| scale(rest, qmax)),
                outliers,
                is_outlier,
            }
        });
        Plan {
            tensor,
            qmax,
            token: rows && g.shows(Granularity::Token),
            channel: channels.is_some() && g.shows(Granularity::Channel),
            blocks: if rows && g.shows(Granularity::Block) {
                g.block_sizes.clone()
            } else {
                Vec::new()
            },
            channels,
            elems,
            note,
        }
    }

    /// Whether pass 3 has anything to do beside the tensor row.
    pub fn has_groups(&self) -> bool {
        self.channels.is_some()
    }

    /// The granularity rows of one chunk of part `part` starting at flat index `first`.
    pub fn measure_chunk(&self, part: usize, first: usize, values: &[f32]) -> GroupAccums {
        let mut out = GroupAccums {
            blocks: vec![ErrorAccum::default(); self.blocks.len()],
            ..GroupAccums::default()
        };
        let Some(c) = &self.channels else {
            return out;
        };
        let Some(&map) = c.profile.layout.maps.get(part) else {
            return out;
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            unsafe { self.chunk_avx2(&mut out, c, map, first, values) };
            return out;
        }
        // SAFETY: the portable kernel needs no target feature.
        unsafe { self.chunk::<Portable>(&mut out, c, map, first, values) };
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn chunk_avx2(
        &self,
        out: &mut GroupAccums,
        c: &Channels,
        map: ChannelMap,
        first: usize,
        values: &[f32],
    ) {
        // SAFETY: this function only runs with AVX2 and FMA.
        unsafe { self.chunk::<Avx2>(out, c, map, first, values) }
    }

    /// The rows of one chunk with kernel `K`.
    ///
    /// # Safety
    /// The CPU has `K`'s target features.
    #[inline(always)]
    unsafe fn chunk<K: Kernel>(
        &self,
        out: &mut GroupAccums,
        c: &Channels,
        map: ChannelMap,
        first: usize,
        values: &[f32],
    ) {
        let q = self.qmax;
        // SAFETY (every kernel call below): the caller's guarantee. Plain loops and
        // `exactly!`, not closures: a closure is compiled without the caller's features.
        if map.stride == 1 {
            for (ch, xs) in Runs::contiguous(map, first, values) {
                // With whole rows in every chunk (`ChannelLayout::rows`), each run is a token.
                if ch == 0 && xs.len() == map.count {
                    if self.token {
                        let (s, inv) = scale(unsafe { K::absmax(xs) }, q);
                        exactly!(q, &mut out.token, l, slow => unsafe {
                            uniform::<K, false>(&mut l, slow, xs, s, inv, q)
                        });
                    }
                    for (acc, &g) in out.blocks.iter_mut().zip(&self.blocks) {
                        exactly!(q, acc, l, slow => {
                            for b in xs.chunks(g) {
                                let (s, inv) = scale(unsafe { K::absmax(b) }, q);
                                unsafe { uniform::<K, false>(&mut l, slow, b, s, inv, q) };
                            }
                        });
                    }
                }
                if let (true, Some((s, inv))) = (self.channel, &c.scales) {
                    let (s, inv) = (&s[ch..ch + xs.len()], &inv[ch..ch + xs.len()]);
                    exactly!(q, &mut out.channel, l, slow => unsafe {
                        if slow {
                            K::each::<true>(&mut l, xs, s, inv, q)
                        } else {
                            K::each::<false>(&mut l, xs, s, inv, q)
                        }
                    });
                }
                if let Some((s, inv)) = c.in_float {
                    // Runs of the other channels on one grid, the outlier channels exact.
                    let lo = c.outliers.partition_point(|&o| o < ch);
                    let hi = c.outliers.partition_point(|&o| o < ch + xs.len());
                    exactly!(q, &mut out.in_float, l, slow => {
                        let mut at = 0;
                        for &o in &c.outliers[lo..hi] {
                            let o = o - ch;
                            unsafe { uniform::<K, true>(&mut l, slow, &xs[at..o], s, inv, q) };
                            l.exact(&xs[o..o + 1]);
                            at = o + 1;
                        }
                        unsafe { uniform::<K, true>(&mut l, slow, &xs[at..], s, inv, q) };
                    });
                }
            }
        } else {
            for (ch, xs) in Runs::strided(map, first, values) {
                if let (true, Some((s, inv))) = (self.channel, &c.scales) {
                    let (s, inv) = (s[ch], inv[ch]);
                    exactly!(q, &mut out.channel, l, slow => unsafe {
                        uniform::<K, true>(&mut l, slow, xs, s, inv, q)
                    });
                }
                if let Some((s, inv)) = c.in_float {
                    exactly!(q, &mut out.in_float, l, slow => if c.is_outlier[ch] {
                        l.exact(xs);
                    } else {
                        unsafe { uniform::<K, true>(&mut l, slow, xs, s, inv, q) };
                    });
                }
            }
        }
    }

    /// The rows and the channel summary, from pass 3's sums. `tensor` is the per-tensor grid's
    /// accumulator; its count and Σx² (over every finite value) complete every row's.
    pub fn finish(
        &self,
        tensor: &ErrorAccum,
        sums: &GroupAccums,
        opts: &Options,
    ) -> (
        Vec<GranularityResult>,
        Option<ChannelSummary>,
        Option<String>,
    ) {
        let g = &opts.granularity;
        let done = |a: &ErrorAccum| -> Metrics {
            let mut a = *a;
            a.n = tensor.n;
            a.sig_sq = tensor.sig_sq;
            a.finish()
        };
        let row = |granularity, block_size, groups, metrics| GranularityResult {
            granularity,
            block_size,
            bits: opts.bits,
            groups,
            metrics,
        };
        let mut rows = Vec::new();
        if g.shows(Granularity::Tensor) {
            rows.push(row(Granularity::Tensor, None, 1, tensor.finish()));
        }
        let count = self.channels.as_ref().map_or(1, |c| c.profile.absmax.len()) as u64;
        let tokens = self.elems / count.max(1);
        if self.token {
            rows.push(row(Granularity::Token, None, tokens, done(&sums.token)));
        }
        if self.channel {
            rows.push(row(Granularity::Channel, None, count, done(&sums.channel)));
        }
        for (&bs, acc) in self.blocks.iter().zip(&sums.blocks) {
            let groups = tokens * count.div_ceil(bs as u64);
            rows.push(row(Granularity::Block, Some(bs), groups, done(acc)));
        }
        let summary = self.channels.as_ref().map(|c| {
            let p = &c.profile;
            let ratio = |v: f64| v / c.median;
            let order = largest(&p.absmax, TOP_CHANNELS);
            ChannelSummary {
                axis: p.layout.axis,
                count: p.absmax.len(),
                absmax_median: c.median,
                top: order
                    .into_iter()
                    .map(|i| {
                        let v = f64::from(p.absmax[i]);
                        TopChannel {
                            channel: i,
                            absmax: v,
                            ratio: ratio(v),
                        }
                    })
                    .collect(),
                outliers: c.outliers.clone(),
                above_threshold: AboveThreshold {
                    threshold: p.threshold,
                    values: p.above_threshold,
                    channels: p
                        .absmax
                        .iter()
                        .filter(|&&m| f64::from(m) >= p.threshold)
                        .count(),
                },
                outliers_in_float: c.in_float.map(|_| OutliersInFloat {
                    channels: c.outliers.len(),
                    metrics: done(&sums.in_float),
                }),
            }
        });
        (rows, summary, self.note.clone())
    }
}

/// numpy's `np.median` of absmax values (each ≥ 0, so their bits order as the values do):
/// the middle value, or the mean of the two middle values.
fn median(v: &[f32]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    let mid = bits.len() / 2;
    let (lo, m, _) = bits.select_nth_unstable(mid);
    let m = f64::from(f32::from_bits(*m));
    if v.len() % 2 == 1 {
        m
    } else {
        let below = lo.iter().copied().max().unwrap_or(0);
        (f64::from(f32::from_bits(below)) + m) / 2.0
    }
}

/// The indices of the `k` largest values, largest first (ties: lower index first), in one
/// pass.
fn largest(v: &[f32], k: usize) -> Vec<usize> {
    let mut top: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &x) in v.iter().enumerate() {
        if top.len() == k && top.last().is_none_or(|&j| v[j] >= x) {
            continue;
        }
        let at = top.partition_point(|&j| v[j] >= x);
        top.insert(at, i);
        top.truncate(k);
    }
    top
}
