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

use serde::Serialize;

use crate::calib::{QParams, Scheme};
use crate::source::ArrayInfo;

use super::metrics::{ErrorAccum, Metrics};
use super::model::{
    AboveThreshold, ChannelSummary, GranularityResult, OutliersInFloat, TopChannel,
};
use super::options::Options;

/// One way of placing the scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq)]
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_avx2(acc: &mut FoldAcc, map: ChannelMap, t: f32, first: usize, values: &[f32]) {
    fold_lanes(acc, map, t, first, values)
}

/// |x| of a finite value, 0 for NaN and ±Inf (which every grid leaves out).
#[inline(always)]
fn finite_abs(v: f32) -> f32 {
    let a = v.abs();
    if a < f32::INFINITY { a } else { 0.0 }
}

#[inline(always)]
fn fold_lanes(acc: &mut FoldAcc, map: ChannelMap, t: f32, first: usize, values: &[f32]) {
    let mut above = 0u64;
    if map.stride == 1 {
        walk_contiguous(map, first, values, |ch, xs| {
            let mut n = 0u32;
            for (m, &v) in acc.absmax[ch..ch + xs.len()].iter_mut().zip(xs) {
                let a = finite_abs(v);
                *m = if a > *m { a } else { *m };
                n += u32::from(a >= t);
            }
            above += u64::from(n);
        });
    } else {
        walk_strided(map, first, values, |ch, xs| {
            let (m, n) = absmax_count(xs, t);
            acc.absmax[ch] = acc.absmax[ch].max(m);
            above += n;
        });
    }
    acc.above += above;
}

/// Calls `f(first channel, values)` on each run of consecutive channels (stride 1): the runs
/// are the chunk cut at every multiple of the channel count.
#[inline(always)]
fn walk_contiguous(
    map: ChannelMap,
    first: usize,
    values: &[f32],
    mut f: impl FnMut(usize, &[f32]),
) {
    let mut i = 0;
    let mut ch = map.channel(first);
    while i < values.len() {
        let n = (map.count - ch).min(values.len() - i);
        f(ch, &values[i..i + n]);
        i += n;
        ch = 0;
    }
}

/// Calls `f(channel, values)` on each run of `stride` values that share a channel.
#[inline(always)]
fn walk_strided(map: ChannelMap, first: usize, values: &[f32], mut f: impl FnMut(usize, &[f32])) {
    let mut i = 0;
    while i < values.len() {
        let g = (map.offset + first + i) / map.stride;
        let end = ((g + 1) * map.stride - map.offset - first).min(values.len());
        f(g % map.count, &values[i..end]);
        i = end;
    }
}

/// The largest finite |x| of `xs` (0 if none), in 8 lanes so it vectorises.
#[inline(always)]
fn absmax(xs: &[f32]) -> f32 {
    const L: usize = 8;
    let mut m = [0.0f32; L];
    let mut c = xs.chunks_exact(L);
    for v in &mut c {
        for k in 0..L {
            let a = finite_abs(v[k]);
            m[k] = if a > m[k] { a } else { m[k] };
        }
    }
    for (k, &v) in c.remainder().iter().enumerate() {
        let a = finite_abs(v);
        m[k] = if a > m[k] { a } else { m[k] };
    }
    m.iter().fold(0.0, |a, &b| if b > a { b } else { a })
}

/// [`absmax`] and the number of finite |x| ≥ `t`.
#[inline(always)]
fn absmax_count(xs: &[f32], t: f32) -> (f32, u64) {
    const L: usize = 8;
    let mut m = [0.0f32; L];
    let mut n = [0u32; L];
    let mut c = xs.chunks_exact(L);
    let mut total = 0u64;
    for v in &mut c {
        for k in 0..L {
            let a = finite_abs(v[k]);
            m[k] = if a > m[k] { a } else { m[k] };
            n[k] += u32::from(a >= t);
        }
    }
    for (k, &v) in c.remainder().iter().enumerate() {
        let a = finite_abs(v);
        m[k] = if a > m[k] { a } else { m[k] };
        total += u64::from(a >= t);
    }
    total += n.iter().map(|&c| u64::from(c)).sum::<u64>();
    (m.iter().fold(0.0, |a, &b| if b > a { b } else { a }), total)
}

/// The scale of a group with this absmax and its reciprocal: absmax/qmax, or 1 for an all-zero
/// group (which any scale quantizes exactly).
#[inline(always)]
fn scale(absmax: f32, qmax: f64) -> (f64, f64) {
    let s = if absmax > 0.0 {
        f64::from(absmax) / qmax
    } else {
        1.0
    };
    (s, 1.0 / s)
}

/// Lanes of the quantizers of pass 3 (value i of a call goes to lane i mod 4).
const GL: usize = 4;

/// |t − rint(t)| above this may round differently as x·(1/s) than as x/s: redo with the
/// division (the bound of `metrics::lanes_avx2`).
const NEAR_HALF: f64 = 0.5 - 1.0 / (1u64 << 30) as f64;

/// Error sums of one quantizer over some groups, lane by lane.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct GroupLanes {
    err: [f64; GL],
    rec: [f64; GL],
    mx: [f64; GL],
    tie: [f64; GL],
    below: [u64; GL],
    above: [u64; GL],
}

impl GroupLanes {
    fn near_tie(&self) -> bool {
        self.tie.iter().any(|&t| t > NEAR_HALF)
    }

    /// Adds these sums to `acc` (its count and Σx² are set once per layer, see
    /// [`Plan::finish`]).
    fn absorb(&self, acc: &mut ErrorAccum) {
        let (mut err, mut rec) = (0.0, 0.0);
        for k in 0..GL {
            err += self.err[k];
            rec += self.rec[k];
            acc.max_abs_error = acc.max_abs_error.max(self.mx[k]);
            acc.below += self.below[k];
            acc.above += self.above[k];
        }
        acc.err_sq += err;
        acc.rec_sq += rec;
    }

    /// One value x (finite, widened) on the grid of scale s into lane k.
    #[inline(always)]
    fn step<const DIV: bool>(&mut self, k: usize, x: f64, s: f64, inv: f64, qmax: f64) {
        let t = if DIV { x / s } else { x * inv };
        let r = t.round_ties_even();
        let d = (t - r).abs();
        self.tie[k] = if d > self.tie[k] { d } else { self.tie[k] };
        self.below[k] += u64::from(r < -qmax);
        self.above[k] += u64::from(r > qmax);
        let r = if r < -qmax { -qmax } else { r };
        let r = if r > qmax { qmax } else { r };
        // x̂ = r·s rounded, as a framework dequantizes (not fused).
        let xh = r * s;
        let e = x - xh;
        self.err[k] = e.mul_add(e, self.err[k]);
        self.rec[k] = xh.mul_add(xh, self.rec[k]);
        let a = e.abs();
        self.mx[k] = if a > self.mx[k] { a } else { self.mx[k] };
    }

    /// Every value of `xs` on one grid of scale `s` (`inv` = 1/s).
    #[inline(always)]
    fn uniform<const DIV: bool>(&mut self, xs: &[f32], s: f64, inv: f64, qmax: f64) {
        let mut c = xs.chunks_exact(GL);
        for v in &mut c {
            for (k, &x) in v.iter().enumerate() {
                self.step::<DIV>(k, widen(x), s, inv, qmax);
            }
        }
        for (k, &v) in c.remainder().iter().enumerate() {
            self.step::<DIV>(k, widen(v), s, inv, qmax);
        }
    }

    /// Value j of `xs` on the grid of scale `s[j]` (`inv[j]` = 1/s[j]).
    #[inline(always)]
    fn each<const DIV: bool>(&mut self, xs: &[f32], s: &[f64], inv: &[f64], qmax: f64) {
        let n = xs.len().min(s.len()).min(inv.len());
        let (xs, s, inv) = (&xs[..n], &s[..n], &inv[..n]);
        let mut c = xs.chunks_exact(GL);
        let mut cs = s.chunks_exact(GL);
        let mut ci = inv.chunks_exact(GL);
        for ((v, s), inv) in (&mut c).zip(&mut cs).zip(&mut ci) {
            for k in 0..GL {
                self.step::<DIV>(k, widen(v[k]), s[k], inv[k], qmax);
            }
        }
        let tail = c.remainder().iter().zip(cs.remainder()).zip(ci.remainder());
        for (k, ((&v, &s), &inv)) in tail.enumerate() {
            self.step::<DIV>(k, widen(v), s, inv, qmax);
        }
    }

    /// Values kept exact (x̂ = x): they add x² to Σx̂² and nothing to the error.
    #[inline(always)]
    fn exact(&mut self, xs: &[f32]) {
        for (i, &v) in xs.iter().enumerate() {
            let x = widen(v);
            self.rec[i % GL] = x.mul_add(x, self.rec[i % GL]);
        }
    }
}

/// A finite f32 widened to f64; NaN and ±Inf become 0 (every grid holds 0 exactly, so they add
/// nothing to any sum).
#[inline(always)]
fn widen(v: f32) -> f64 {
    if v.abs() < f32::INFINITY {
        f64::from(v)
    } else {
        0.0
    }
}

/// Runs `f` on fresh lanes with x·(1/s), again with the division if some t came near a half
/// step, and adds the result to `acc`.
#[inline(always)]
fn exactly(acc: &mut ErrorAccum, f: impl Fn(&mut GroupLanes, bool)) {
    let mut l = GroupLanes::default();
    f(&mut l, false);
    if l.near_tie() {
        l = GroupLanes::default();
        f(&mut l, true);
    }
    l.absorb(acc);
}

/// `uniform::<DIV>` with DIV chosen at run time (inlined into both branches).
#[inline(always)]
fn uniform(l: &mut GroupLanes, div: bool, xs: &[f32], s: f64, inv: f64, qmax: f64) {
    if div {
        l.uniform::<true>(xs, s, inv, qmax)
    } else {
        l.uniform::<false>(xs, s, inv, qmax)
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
        self.chunk_lanes(&mut out, c, map, first, values);
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
        self.chunk_lanes(out, c, map, first, values)
    }

    /// The portable path; the AVX path is the same code compiled for AVX2 and FMA (the same
    /// lanes and operations, so the same sums).
    #[inline(always)]
    fn chunk_lanes(
        &self,
        out: &mut GroupAccums,
        c: &Channels,
        map: ChannelMap,
        first: usize,
        values: &[f32],
    ) {
        let q = self.qmax;
        if map.stride == 1 {
            walk_contiguous(map, first, values, |ch, xs| {
                // With whole rows in every chunk (`ChannelLayout::rows`), each run is a token.
                if ch == 0 && xs.len() == map.count {
                    if self.token {
                        let (s, inv) = scale(absmax(xs), q);
                        exactly(&mut out.token, |l, div| uniform(l, div, xs, s, inv, q));
                    }
                    for (acc, &g) in out.blocks.iter_mut().zip(&self.blocks) {
                        exactly(acc, |l, div| {
                            for b in xs.chunks(g) {
                                let (s, inv) = scale(absmax(b), q);
                                uniform(l, div, b, s, inv, q);
                            }
                        });
                    }
                }
                if let (true, Some((s, inv))) = (self.channel, &c.scales) {
                    let (s, inv) = (&s[ch..ch + xs.len()], &inv[ch..ch + xs.len()]);
                    exactly(&mut out.channel, |l, div| {
                        if div {
                            l.each::<true>(xs, s, inv, q)
                        } else {
                            l.each::<false>(xs, s, inv, q)
                        }
                    });
                }
                if let Some((s, inv)) = c.in_float {
                    // Runs of the other channels on one grid, the outlier channels exact.
                    let lo = c.outliers.partition_point(|&o| o < ch);
                    let hi = c.outliers.partition_point(|&o| o < ch + xs.len());
                    exactly(&mut out.in_float, |l, div| {
                        let mut at = 0;
                        for &o in &c.outliers[lo..hi] {
                            let o = o - ch;
                            uniform(l, div, &xs[at..o], s, inv, q);
                            l.exact(&xs[o..o + 1]);
                            at = o + 1;
                        }
                        uniform(l, div, &xs[at..], s, inv, q);
                    });
                }
            });
        } else {
            walk_strided(map, first, values, |ch, xs| {
                if let (true, Some((s, inv))) = (self.channel, &c.scales) {
                    let (s, inv) = (s[ch], inv[ch]);
                    exactly(&mut out.channel, |l, div| uniform(l, div, xs, s, inv, q));
                }
                if let Some((s, inv)) = c.in_float {
                    exactly(&mut out.in_float, |l, div| {
                        if c.is_outlier[ch] {
                            l.exact(xs);
                        } else {
                            uniform(l, div, xs, s, inv, q);
                        }
                    });
                }
            });
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
            let mut order: Vec<usize> = (0..p.absmax.len()).collect();
            let top_n = TOP_CHANNELS.min(order.len());
            let by_size =
                |a: &usize, b: &usize| p.absmax[*b].total_cmp(&p.absmax[*a]).then(a.cmp(b));
            if top_n > 0 && top_n < order.len() {
                order.select_nth_unstable_by(top_n - 1, by_size);
            }
            order.truncate(top_n);
            order.sort_by(by_size);
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

/// numpy's `np.median`: the middle value, or the mean of the two middle values.
fn median(v: &[f32]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s: Vec<f32> = v.to_vec();
    let mid = s.len() / 2;
    let (lo, m, _) = s.select_nth_unstable_by(mid, f32::total_cmp);
    let m = f64::from(*m);
    if v.len() % 2 == 1 {
        m
    } else {
        let below = lo.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (f64::from(below) + m) / 2.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// numpy's arithmetic, one value at a time with a division.
    fn naive(xs: &[f32], s: f64, qmax: f64) -> (f64, f64, f64) {
        let (mut err, mut rec, mut mx) = (0.0, 0.0, 0.0f64);
        for &v in xs.iter().filter(|v| v.is_finite()) {
            let x = f64::from(v);
            let xh = (x / s).round_ties_even().clamp(-qmax, qmax) * s;
            err += (x - xh) * (x - xh);
            rec += xh * xh;
            mx = mx.max((x - xh).abs());
        }
        (err, rec, mx)
    }

    #[test]
    fn uniform_groups_match_the_division_even_at_ties() {
        // s = 49/16 is exact but 1/s is not; every value is an exact half step, so x·(1/s)
        // would round some the wrong way: the near-tie check must redo them with the division.
        let s = 3.0625;
        let xs: Vec<f32> = (-127..127).map(|k| (2 * k + 1) as f32 * 1.53125).collect();
        let mut acc = ErrorAccum::default();
        exactly(&mut acc, |l, div| uniform(l, div, &xs, s, 1.0 / s, 127.0));
        let (err, rec, mx) = naive(&xs, s, 127.0);
        assert_eq!(acc.err_sq, err);
        assert!((acc.rec_sq - rec).abs() <= 1e-12 * rec);
        assert_eq!(acc.max_abs_error, mx);
    }

    #[test]
    fn absmax_and_counts_skip_non_finite_values() {
        let mut v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.5).collect();
        v[3] = f32::NAN;
        v[30] = f32::NEG_INFINITY;
        assert_eq!(absmax(&v), 9.0);
        // |x| ≥ 6: i ≤ 6 or i ≥ 30 (14 values) less the NaN at 3 and the -inf at 30.
        assert_eq!(absmax_count(&v, 6.0), (9.0, 12));
        assert_eq!(absmax(&[f32::NAN, f32::INFINITY]), 0.0);
    }

    #[test]
    fn median_is_numpys() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[0.0, 0.0, 5.0]), 0.0);
    }

    #[test]
    fn channel_maps_follow_c_fortran_and_batch_files() {
        let info = |shape: Vec<usize>, fortran_order| ArrayInfo {
            dtype: crate::source::DType::F32,
            big_endian: false,
            shape,
            fortran_order,
            descr: "<f4".into(),
        };
        let opts = |axis| {
            let mut o = Options::default();
            o.granularity.channel_axis = axis;
            o
        };
        let nchw = info(vec![2, 3, 4, 5], false);
        let l = ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(1))
            .unwrap()
            .unwrap();
        assert_eq!((l.axis, l.count), (1, 3));
        assert_eq!(
            l.maps[0],
            ChannelMap {
                stride: 20,
                count: 3,
                offset: 0
            }
        );
        assert!(l.rows.is_err());
        // Element [n, c, h, w] is at flat index ((n·3 + c)·4 + h)·5 + w.
        assert_eq!(l.maps[0].channel(((3 + 2) * 4 + 1) * 5 + 4), 2);
        let last = ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(-1))
            .unwrap()
            .unwrap();
        assert_eq!((last.axis, last.count, last.maps[0].stride), (3, 5, 1));
        assert_eq!(last.rows, Ok(()));
        // Chunks of 7 values would cut rows of 5.
        let cut = ChannelLayout::resolve(&[(&nchw, 7)], &opts(-1))
            .unwrap()
            .unwrap();
        assert!(cut.rows.is_err());
        // Fortran order: axis 0 is innermost.
        let f = info(vec![4, 6], true);
        let l = ChannelLayout::resolve(&[(&f, 1 << 20)], &opts(0))
            .unwrap()
            .unwrap();
        assert_eq!((l.count, l.maps[0].stride), (4, 1));
        let l = ChannelLayout::resolve(&[(&f, 1 << 20)], &opts(-1))
            .unwrap()
            .unwrap();
        assert_eq!((l.count, l.maps[0].stride), (6, 4));
        // Batch files: axis 0 is the file.
        let p = info(vec![3, 2], false);
        let two = [(&p, 1 << 20), (&p, 1 << 20)];
        let l = ChannelLayout::resolve(&two, &opts(0)).unwrap().unwrap();
        assert_eq!((l.count, l.maps[1].channel(5)), (2, 1));
        let l = ChannelLayout::resolve(&two, &opts(-1)).unwrap().unwrap();
        assert_eq!((l.axis, l.count, l.maps[1].stride), (2, 2, 1));
        // No channel axis, or a wrong one.
        let v = info(vec![10], false);
        assert_eq!(
            ChannelLayout::resolve(&[(&v, 1 << 20)], &opts(-1)),
            Ok(None)
        );
        assert!(ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(4)).is_err());
        assert!(ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(-5)).is_err());
    }
}
