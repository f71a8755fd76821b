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
    // Plain loops, not closures: a closure is compiled without the caller's target features.
    if map.stride == 1 {
        for (ch, xs) in Runs::contiguous(map, first, values) {
            let mut n = 0u32;
            for (m, &v) in acc.absmax[ch..ch + xs.len()].iter_mut().zip(xs) {
                let a = finite_abs(v);
                *m = if a > *m { a } else { *m };
                n += u32::from(a >= t);
            }
            above += u64::from(n);
        }
    } else {
        for (ch, xs) in Runs::strided(map, first, values) {
            let (m, n) = absmax_count(xs, t);
            acc.absmax[ch] = acc.absmax[ch].max(m);
            above += n;
        }
    }
    acc.above += above;
}

/// The runs of a chunk that share a channel layout: with stride 1, (first channel, values)
/// for each run of consecutive channels (the chunk cut at every multiple of the channel
/// count); otherwise (channel, values) for each run of `stride` values of one channel.
struct Runs<'a> {
    map: ChannelMap,
    first: usize,
    values: &'a [f32],
    at: usize,
    contiguous: bool,
}

impl<'a> Runs<'a> {
    fn contiguous(map: ChannelMap, first: usize, values: &'a [f32]) -> Self {
        Runs {
            map,
            first,
            values,
            at: 0,
            contiguous: true,
        }
    }

    fn strided(map: ChannelMap, first: usize, values: &'a [f32]) -> Self {
        Runs {
            contiguous: false,
            ..Runs::contiguous(map, first, values)
        }
    }
}

impl<'a> Iterator for Runs<'a> {
    type Item = (usize, &'a [f32]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (i, m) = (self.at, self.map);
        if i >= self.values.len() {
            return None;
        }
        let (ch, end) = if self.contiguous {
            let ch = m.channel(self.first + i);
            (ch, i + (m.count - ch).min(self.values.len() - i))
        } else {
            let g = (m.offset + self.first + i) / m.stride;
            let end = (g + 1) * m.stride - m.offset - self.first;
            (g % m.count, end.min(self.values.len()))
        };
        self.at = end;
        Some((ch, &self.values[i..end]))
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

/// Lanes of the floating sums of pass 3: value i of a call goes to lane i mod 8 (two AVX
/// registers of 4, so the fused multiply-add chains overlap).
const GL: usize = 8;
/// Lanes of the order-free parts (maxima, counts): one AVX register.
const ML: usize = 4;

/// |t − rint(t)| above this may round differently as x·(1/s) than as x/s: redo with the
/// division (the bound of `metrics::lanes_avx2`).
const NEAR_HALF: f64 = 0.5 - 1.0 / (1u64 << 30) as f64;

/// Error sums of one quantizer over some groups, lane by lane.
///
/// Two modes. Fast: t = x·(1/s), no clamp, and the largest |t − rint(t)| and |rint(t)| kept,
/// so [`Self::needs_redo`] can tell when a t came near a half step or the grid would clip.
/// Slow: t = x/s, clamped, clips counted. When the fast mode needs no redo, every rint(t) is
/// the division's and inside the grid, so its sums are the slow mode's bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct GroupLanes {
    err: [f64; GL],
    rec: [f64; GL],
    mx: [f64; ML],
    tie: [f64; ML],
    rmax: [f64; ML],
    below: [u64; ML],
    above: [u64; ML],
}

impl GroupLanes {
    fn needs_redo(&self, qmax: f64) -> bool {
        self.tie.iter().any(|&t| t > NEAR_HALF) || self.rmax.iter().any(|&r| r > qmax)
    }

    /// Adds these sums to `acc` (its count and Σx² are set once per layer, see
    /// [`Plan::finish`]).
    fn absorb(&self, acc: &mut ErrorAccum) {
        let (mut err, mut rec) = (0.0, 0.0);
        for k in 0..GL {
            err += self.err[k];
            rec += self.rec[k];
        }
        for k in 0..ML {
            acc.max_abs_error = acc.max_abs_error.max(self.mx[k]);
            acc.below += self.below[k];
            acc.above += self.above[k];
        }
        acc.err_sq += err;
        acc.rec_sq += rec;
    }

    /// One value x (finite, widened) on the grid of scale s into lane k (`inv` = 1/s).
    /// `CHECK`: keep |rint(t)| for [`Self::needs_redo`] (not needed when s comes from these
    /// very values' absmax: then |x·(1/s)| ≤ qmax·(1 + 2^-51) rounds inside the grid).
    #[inline(always)]
    fn step<const SLOW: bool, const CHECK: bool>(
        &mut self,
        k: usize,
        x: f64,
        s: f64,
        inv: f64,
        qmax: f64,
    ) {
        let m = k % ML;
        let r = if SLOW {
            let r = (x / s).round_ties_even();
            self.below[m] += u64::from(r < -qmax);
            self.above[m] += u64::from(r > qmax);
            r.clamp(-qmax, qmax)
        } else {
            let t = x * inv;
            let r = t.round_ties_even();
            self.tie[m] = self.tie[m].max((t - r).abs());
            if CHECK {
                self.rmax[m] = self.rmax[m].max(r.abs());
            }
            r
        };
        // x̂ = r·s rounded, as a framework dequantizes (not fused).
        let xh = r * s;
        let e = x - xh;
        self.err[k] = e.mul_add(e, self.err[k]);
        self.rec[k] = xh.mul_add(xh, self.rec[k]);
        self.mx[m] = self.mx[m].max(e.abs());
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

/// The per-value kernels of pass 3: [`Portable`], and [`Avx2`] which computes the same lanes
/// in AVX registers (the same operations in the same order, so the same bits).
trait Kernel {
    /// The largest finite |x| of `xs` (0 if none).
    ///
    /// # Safety
    /// The CPU has the kernel's target features.
    unsafe fn absmax(xs: &[f32]) -> f32;

    /// Every value of `xs` on one grid of scale `s` (`inv` = 1/s) into `l`.
    ///
    /// # Safety
    /// The CPU has the kernel's target features.
    unsafe fn uniform<const SLOW: bool, const CHECK: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: f64,
        inv: f64,
        qmax: f64,
    );

    /// Value j of `xs` on the grid of scale `s[j]` (`inv[j]` = 1/s[j]) into `l`.
    ///
    /// # Safety
    /// The CPU has the kernel's target features.
    unsafe fn each<const SLOW: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: &[f64],
        inv: &[f64],
        qmax: f64,
    );
}

struct Portable;

impl Kernel for Portable {
    unsafe fn absmax(xs: &[f32]) -> f32 {
        absmax(xs)
    }

    #[inline(always)]
    unsafe fn uniform<const SLOW: bool, const CHECK: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: f64,
        inv: f64,
        qmax: f64,
    ) {
        for (i, &v) in xs.iter().enumerate() {
            l.step::<SLOW, CHECK>(i % GL, widen(v), s, inv, qmax);
        }
    }

    #[inline(always)]
    unsafe fn each<const SLOW: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: &[f64],
        inv: &[f64],
        qmax: f64,
    ) {
        for (i, ((&v, &s), &inv)) in xs.iter().zip(s).zip(inv).enumerate() {
            l.step::<SLOW, true>(i % GL, widen(v), s, inv, qmax);
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Kernel for Avx2 {
    #[inline(always)]
    unsafe fn absmax(xs: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { absmax_avx2(xs) }
    }

    #[inline(always)]
    unsafe fn uniform<const SLOW: bool, const CHECK: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: f64,
        inv: f64,
        qmax: f64,
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { lanes_avx2::<SLOW, CHECK, false>(l, xs, (s, inv), (&[], &[]), qmax) }
    }

    #[inline(always)]
    unsafe fn each<const SLOW: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: &[f64],
        inv: &[f64],
        qmax: f64,
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { lanes_avx2::<SLOW, true, true>(l, xs, (0.0, 0.0), (s, inv), qmax) }
    }
}

/// [`absmax`] in one AVX register of 8 (the maximum does not depend on order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn absmax_avx2(xs: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut m = _mm256_setzero_ps();
    let mut c = xs.chunks_exact(8);
    for v in &mut c {
        // SAFETY: `v` holds exactly 8 f32; the load is unaligned.
        let a = _mm256_and_ps(unsafe { _mm256_loadu_ps(v.as_ptr()) }, abs);
        let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(a, inf);
        m = _mm256_max_ps(m, _mm256_and_ps(a, fin));
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    lanes
        .into_iter()
        .fold(absmax(c.remainder()), |a, b| if b > a { b } else { a })
}

/// [`GroupLanes::step`] over `xs` in AVX registers: values 8k..8k+3 and 8k+4..8k+7 are two
/// registers of 4 lanes (lanes 0–3 and 4–7 of the floating sums); the tail goes through the
/// portable step at its lanes. `EACH`: the scales come per value from `each`; otherwise `one`
/// is the one scale and its reciprocal.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lanes_avx2<const SLOW: bool, const CHECK: bool, const EACH: bool>(
    l: &mut GroupLanes,
    xs: &[f32],
    one: (f64, f64),
    each: (&[f64], &[f64]),
    qmax: f64,
) {
    use std::arch::x86_64::*;
    const RINT: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let n = if EACH {
        xs.len().min(each.0.len()).min(each.1.len())
    } else {
        xs.len()
    };
    let whole = n / GL * GL;
    let abs_ps = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let abs = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
    let (vqlo, vqhi) = (_mm256_set1_pd(-qmax), _mm256_set1_pd(qmax));
    let (s1, inv1) = (_mm256_set1_pd(one.0), _mm256_set1_pd(one.1));
    // SAFETY (all loads and stores below): each array holds the 4 or 8 elements addressed;
    // `xs`, `each.0` and `each.1` hold at least `whole` elements; all are unaligned.
    macro_rules! ld {
        ($p:expr, $i:expr) => {
            unsafe { _mm256_loadu_pd($p.as_ptr().add($i)) }
        };
    }
    let (mut err0, mut err1) = (ld!(l.err, 0), ld!(l.err, 4));
    let (mut rec0, mut rec1) = (ld!(l.rec, 0), ld!(l.rec, 4));
    let (mut mx, mut tie, mut rmax) = (ld!(l.mx, 0), ld!(l.tie, 0), ld!(l.rmax, 0));
    let (mut below, mut above) = unsafe {
        (
            _mm256_loadu_si256(l.below.as_ptr().cast()),
            _mm256_loadu_si256(l.above.as_ptr().cast()),
        )
    };
    let mut i = 0;
    while i < whole {
        let v = unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) };
        let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs_ps), inf);
        let v = _mm256_and_ps(v, fin);
        let x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let x1 = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        let (s0, s1_, i0, i1) = if EACH {
            (
                ld!(each.0, i),
                ld!(each.0, i + 4),
                ld!(each.1, i),
                ld!(each.1, i + 4),
            )
        } else {
            (s1, s1, inv1, inv1)
        };
        let mut xh = [x0, x1];
        for (h, (x, (s, inv))) in xh.iter_mut().zip([(x0, (s0, i0)), (x1, (s1_, i1))]) {
            let r = if SLOW {
                let r = _mm256_round_pd::<RINT>(_mm256_div_pd(x, s));
                // A true compare is all ones (−1 as an integer): subtracting it counts one.
                below = _mm256_sub_epi64(
                    below,
                    _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LT_OQ>(r, vqlo)),
                );
                above = _mm256_sub_epi64(
                    above,
                    _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_GT_OQ>(r, vqhi)),
                );
                _mm256_min_pd(_mm256_max_pd(r, vqlo), vqhi)
            } else {
                let t = _mm256_mul_pd(x, inv);
                let r = _mm256_round_pd::<RINT>(t);
                tie = _mm256_max_pd(tie, _mm256_and_pd(_mm256_sub_pd(t, r), abs));
                if CHECK {
                    rmax = _mm256_max_pd(rmax, _mm256_and_pd(r, abs));
                }
                r
            };
            *h = _mm256_mul_pd(r, s);
        }
        let e0 = _mm256_sub_pd(x0, xh[0]);
        let e1 = _mm256_sub_pd(x1, xh[1]);
        err0 = _mm256_fmadd_pd(e0, e0, err0);
        err1 = _mm256_fmadd_pd(e1, e1, err1);
        rec0 = _mm256_fmadd_pd(xh[0], xh[0], rec0);
        rec1 = _mm256_fmadd_pd(xh[1], xh[1], rec1);
        mx = _mm256_max_pd(mx, _mm256_and_pd(e0, abs));
        mx = _mm256_max_pd(mx, _mm256_and_pd(e1, abs));
        i += GL;
    }
    unsafe {
        _mm256_storeu_pd(l.err.as_mut_ptr(), err0);
        _mm256_storeu_pd(l.err.as_mut_ptr().add(4), err1);
        _mm256_storeu_pd(l.rec.as_mut_ptr(), rec0);
        _mm256_storeu_pd(l.rec.as_mut_ptr().add(4), rec1);
        _mm256_storeu_pd(l.mx.as_mut_ptr(), mx);
        _mm256_storeu_pd(l.tie.as_mut_ptr(), tie);
        _mm256_storeu_pd(l.rmax.as_mut_ptr(), rmax);
        _mm256_storeu_si256(l.below.as_mut_ptr().cast(), below);
        _mm256_storeu_si256(l.above.as_mut_ptr().cast(), above);
    }
    for (j, &v) in xs.iter().enumerate().take(n).skip(whole) {
        let (s, inv) = if EACH { (each.0[j], each.1[j]) } else { one };
        l.step::<SLOW, CHECK>(j % GL, widen(v), s, inv, qmax);
    }
}

/// `exactly!(qmax, acc, l, slow => body)` runs `body` on fresh lanes `l` with `slow` false,
/// again with `slow` true if the fast mode needs a redo (a t near a half step, or a value
/// outside the grid), and adds the lanes to `acc`. A macro, not a closure: a closure would be
/// compiled without the caller's target features.
macro_rules! exactly {
    ($qmax:expr, $acc:expr, $l:ident, $slow:ident => $body:expr) => {{
        let mut $l = GroupLanes::default();
        {
            let $slow = false;
            $body;
        }
        if $l.needs_redo($qmax) {
            $l = GroupLanes::default();
            let $slow = true;
            $body;
        }
        $l.absorb($acc);
    }};
}

/// `K::uniform` with the mode chosen at run time.
///
/// # Safety
/// The CPU has `K`'s target features.
#[inline(always)]
unsafe fn uniform<K: Kernel, const CHECK: bool>(
    l: &mut GroupLanes,
    slow: bool,
    xs: &[f32],
    s: f64,
    inv: f64,
    qmax: f64,
) {
    // SAFETY: the caller's guarantee.
    unsafe {
        if slow {
            K::uniform::<true, CHECK>(l, xs, s, inv, qmax)
        } else {
            K::uniform::<false, CHECK>(l, xs, s, inv, qmax)
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
        exactly!(127.0, &mut acc, l, slow => unsafe {
            uniform::<Portable, true>(&mut l, slow, &xs, s, 1.0 / s, 127.0)
        });
        let (err, rec, mx) = naive(&xs, s, 127.0);
        assert_eq!(acc.err_sq, err);
        assert!((acc.rec_sq - rec).abs() <= 1e-12 * rec);
        assert_eq!(acc.max_abs_error, mx);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_kernels_are_bit_identical_to_the_portable_lanes() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let xs: Vec<f32> = (0..1037)
            .map(|i| ((i as f32 * 0.6123).sin() * 40.0).powi(3) / 100.0)
            .chain([f32::NAN, f32::INFINITY, -0.0, -f32::INFINITY, 7.0])
            .collect();
        let a = absmax(&xs);
        let (s, inv) = scale(a, 127.0);
        let each_s: Vec<f64> = (0..xs.len()).map(|i| s * (1.0 + (i % 5) as f64)).collect();
        let each_i: Vec<f64> = each_s.iter().map(|s| 1.0 / s).collect();
        for len in [0, 1, 7, 8, 9, 16, 1037, xs.len()] {
            let x = &xs[..len];
            // SAFETY: AVX2 and FMA are present, checked above.
            unsafe {
                assert_eq!(Avx2::absmax(x), Portable::absmax(x), "len {len}");
                // A grid narrower than the values (s/4) makes the fast mode ask for a redo and
                // the slow mode clip: both modes are compared on both grids.
                for (s, inv) in [(s, inv), (s / 4.0, 4.0 * inv)] {
                    let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
                    Portable::uniform::<false, true>(&mut p, x, s, inv, 127.0);
                    Avx2::uniform::<false, true>(&mut v, x, s, inv, 127.0);
                    assert_eq!(p, v, "fast len {len}");
                    let (mut p2, mut v2) = (GroupLanes::default(), GroupLanes::default());
                    Portable::uniform::<true, true>(&mut p2, x, s, inv, 127.0);
                    Avx2::uniform::<true, true>(&mut v2, x, s, inv, 127.0);
                    assert_eq!(p2, v2, "slow len {len}");
                    let clips = x
                        .iter()
                        .filter(|v| {
                            v.is_finite() && (f64::from(**v) / s).round_ties_even().abs() > 127.0
                        })
                        .count() as u64;
                    let counted: u64 = p2.below.iter().chain(&p2.above).sum();
                    assert_eq!(counted, clips, "len {len}");
                    if p.needs_redo(127.0) {
                        assert!(clips > 0 || p.tie.iter().any(|&t| t > NEAR_HALF));
                    } else {
                        // No redo: the fast sums are the slow (division) sums.
                        assert_eq!(clips, 0);
                        assert_eq!((p.err, p.rec, p.mx), (p2.err, p2.rec, p2.mx));
                    }
                }
                // Unchecked (a group's own absmax scale): the same lanes, no |rint(t)| kept.
                let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
                Portable::uniform::<false, false>(&mut p, x, s, inv, 127.0);
                Avx2::uniform::<false, false>(&mut v, x, s, inv, 127.0);
                assert_eq!(p, v, "unchecked len {len}");
                assert_eq!(p.rmax, [0.0; ML]);
                let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
                Portable::each::<false>(&mut p, x, &each_s, &each_i, 127.0);
                Avx2::each::<false>(&mut v, x, &each_s, &each_i, 127.0);
                assert_eq!(p, v, "each len {len}");
                let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
                Portable::each::<true>(&mut p, x, &each_s, &each_i, 127.0);
                Avx2::each::<true>(&mut v, x, &each_s, &each_i, 127.0);
                assert_eq!(p, v, "each slow len {len}");
            }
        }
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
    fn largest_are_in_order_with_ties_by_index() {
        let v = [1.0, 5.0, 3.0, 5.0, 0.0, 9.0, 3.0];
        assert_eq!(largest(&v, 4), vec![5, 1, 3, 2]);
        assert_eq!(largest(&v, 10), vec![5, 1, 3, 2, 6, 0, 4]);
        assert_eq!(largest(&v, 0), Vec::<usize>::new());
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
