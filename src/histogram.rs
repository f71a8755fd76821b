//! Fixed-edge histograms with u64 counts (float counts saturate at 2^24: torch.histc's bug).

use serde::Serialize;

#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

/// `counts.len()` equal-width bins over `[lo, hi]`; values equal to `hi` fall in the last bin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram of `bins` bins over `[lo, hi]`. A zero-width range is widened to a
    /// tiny positive width so bin arithmetic stays finite.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Self {
        let hi = if hi > lo {
            hi
        } else {
            lo + f64::from(f32::MIN_POSITIVE)
        };
        Histogram {
            lo,
            hi,
            counts: vec![0; bins.max(1)],
        }
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }

    /// Left edge of bin `i`; `edge(bins())` is `hi`.
    pub fn edge(&self, i: usize) -> f64 {
        if i >= self.counts.len() {
            self.hi
        } else {
            self.lo + self.width() * i as f64
        }
    }

    /// Bins per unit of x.
    fn scale(&self) -> f64 {
        self.counts.len() as f64 / (self.hi - self.lo)
    }

    /// The bin a value falls in, by the arithmetic of [`Self::add_values`]: values beyond an
    /// end go to the end bin (NaN to bin 0).
    pub fn bin_of(&self, x: f64) -> usize {
        position(x, self.lo, self.scale(), (self.counts.len() - 1) as f64) as usize
    }

    pub fn centre(&self, i: usize) -> f64 {
        self.lo + self.width() * (i as f64 + 0.5)
    }

    /// Σ counts, in 8 lanes so the additions vectorise (with AVX2 where the CPU has it): a
    /// sweep of 65536 bins per layer, one dependent add per bin as a plain sum. Integer sums:
    /// the same total (each lane's partial sum is at most the total).
    pub fn total(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            return total_avx2(cpu, &self.counts);
        }
        total_lanes(&self.counts)
    }

    /// Adds finite values; values outside `[lo, hi]` are clamped into the end bins.
    pub fn add_values(&mut self, values: &[f32]) {
        self.add(values, false);
    }

    /// Adds `|v|` of finite values.
    pub fn add_abs_values(&mut self, values: &[f32]) {
        self.add(values, true);
    }

    fn add(&mut self, values: &[f32], abs: bool) {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            self.add_avx2(cpu, values, abs);
            return;
        }
        self.add_blocks(values, abs);
    }

    /// The same code compiled for AVX2 (same arithmetic, same bins).
    #[cfg(target_arch = "x86_64")]
    fn add_avx2(&mut self, _: Avx2, values: &[f32], abs: bool) {
        #[target_feature(enable = "avx2")]
        fn run(h: &mut Histogram, values: &[f32], abs: bool) {
            h.add_blocks(values, abs);
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, values, abs) }
    }

    /// Bin indices are computed a block at a time without branches (so that part vectorises),
    /// then counted; non-finite values get an out-of-range index and are skipped.
    #[inline(always)]
    fn add_blocks(&mut self, values: &[f32], abs: bool) {
        const BLOCK: usize = 256;
        let scale = self.scale();
        let last = (self.counts.len() - 1) as f64;
        let lo = self.lo;
        let mut idx = [0u32; BLOCK];
        for block in values.chunks(BLOCK) {
            for (slot, &v) in idx.iter_mut().zip(block) {
                let fin = v.abs() < f32::INFINITY;
                let x = if abs { v.abs() } else { v };
                let x = if fin { f64::from(x) } else { lo };
                let b = position(x, lo, scale, last);
                *slot = if fin { b as u32 } else { u32::MAX };
            }
            for &i in &idx[..block.len()] {
                if let Some(c) = self.counts.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
    }

    /// Adds another histogram with the same edges.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Sums groups of `factor` consecutive bins (exact: same edges every `factor` bins).
    pub fn coarsen(&self, factor: usize) -> Histogram {
        let factor = factor.max(1);
        Histogram {
            lo: self.lo,
            hi: self.hi,
            counts: self.counts.chunks(factor).map(|c| c.iter().sum()).collect(),
        }
    }

    /// For each rank (1-based), the smallest bin index whose cumulative count reaches it, i.e.
    /// the bin that holds the rank-th smallest value; `None` for rank 0 or a rank beyond
    /// `total`, which must be the histogram's count ([`Self::total`]; the analysis knows it as
    /// the finite count). One sweep from each end for all ranks (a layer asks for ~20 ranks of
    /// 65536 bins): the ranks in the upper half (the calibration percentiles, 99.9 % and up,
    /// and the statistics' p99s) are met soon going down, where a sweep up crosses most bins.
    pub fn bins_of_ranks(&self, ranks: &[u64], total: u64) -> Vec<Option<usize>> {
        let high = |r: u64| r > total / 2 && r <= total;
        let low: Vec<u64> = ranks
            .iter()
            .map(|&r| if high(r) || r > total { 0 } else { r })
            .collect();
        let mut out = self.bins_from_bottom(&low);
        // The bin of rank r is the smallest b with Σ_{i ≤ b} counts ≥ r, i.e. with the count
        // of the bins above it ≤ t = total − r: going down, the first bin whose own count takes
        // the count above past t. Met in order of t, smallest first.
        let mut order: Vec<usize> = (0..ranks.len()).filter(|&i| high(ranks[i])).collect();
        order.sort_by_key(|&i| total - ranks[i]);
        let mut next = order.into_iter().peekable();
        let mut above = 0u64;
        for (k, block) in self.counts.chunks(RANK_BLOCK).enumerate().rev() {
            let Some(&first) = next.peek() else { break };
            let sum: u64 = block.iter().sum();
            if above + sum <= total - ranks[first] {
                above += sum;
                continue;
            }
            for (j, &c) in block.iter().enumerate().rev() {
                above += c;
                while let Some(i) = next.next_if(|&i| above > total - ranks[i]) {
                    out[i] = Some(k * RANK_BLOCK + j);
                }
            }
        }
        out
    }

    /// [`Self::bins_of_ranks`] by a sweep up (rank 0 gives `None`, as does a rank beyond the
    /// count). Whole blocks are summed first (a block's sum vectorises; one bin at a time is a
    /// chain of dependent additions) and only a block that reaches the next rank is walked.
    fn bins_from_bottom(&self, ranks: &[u64]) -> Vec<Option<usize>> {
        let mut out = vec![None; ranks.len()];
        let mut order: Vec<usize> = (0..ranks.len()).filter(|&i| ranks[i] > 0).collect();
        order.sort_by_key(|&i| ranks[i]);
        let mut next = order.into_iter().peekable();
        let mut acc = 0u64;
        for (b, block) in self.counts.chunks(RANK_BLOCK).enumerate() {
            let Some(&first) = next.peek() else { break };
            let sum: u64 = block.iter().sum();
            if acc + sum < ranks[first] {
                acc += sum;
                continue;
            }
            for (j, &c) in block.iter().enumerate() {
                acc += c;
                while let Some(i) = next.next_if(|&i| acc >= ranks[i]) {
                    out[i] = Some(b * RANK_BLOCK + j);
                }
            }
        }
        out
    }
}

/// Bins summed at a time by the rank sweeps.
const RANK_BLOCK: usize = 64;

/// [`total_lanes`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
fn total_avx2(_: Avx2, counts: &[u64]) -> u64 {
    #[target_feature(enable = "avx2")]
    fn run(counts: &[u64]) -> u64 {
        total_lanes(counts)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(counts) }
}

#[inline(always)]
fn total_lanes(counts: &[u64]) -> u64 {
    const L: usize = 8;
    let mut acc = [0u64; L];
    let mut chunks = counts.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<u64>() + chunks.remainder().iter().sum::<u64>()
}

/// A histogram kept for later (a front end's re-runs and drawing), its counts packed: each
/// non-empty bin is its count as a LEB128 varint, and each run of empty bins is a 0 byte then
/// the run's length. A fine histogram of a few million values packs ~15× smaller than the
/// dense u64s (1 MiB a layer for the pair), so a UI holding hundreds of layers stays small.
/// Written here rather than taken from a crate: the run-length part is ours, and the varint is
/// ten lines.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedHistogram {
    pub lo: f64,
    pub hi: f64,
    bins: usize,
    bytes: Box<[u8]>,
}

impl PackedHistogram {
    pub fn pack(h: &Histogram) -> Self {
        let mut bytes = Vec::new();
        let mut zeros = 0u64;
        for &c in &h.counts {
            if c == 0 {
                zeros += 1;
                continue;
            }
            if zeros > 0 {
                bytes.push(0);
                put_varint(&mut bytes, zeros);
                zeros = 0;
            }
            put_varint(&mut bytes, c);
        }
        if zeros > 0 {
            bytes.push(0);
            put_varint(&mut bytes, zeros);
        }
        PackedHistogram {
            lo: h.lo,
            hi: h.hi,
            bins: h.counts.len(),
            bytes: bytes.into_boxed_slice(),
        }
    }

    pub fn unpack(&self) -> Histogram {
        let mut counts = vec![0; self.bins];
        for (i, c) in self.nonzero() {
            counts[i] = c;
        }
        Histogram {
            lo: self.lo,
            hi: self.hi,
            counts,
        }
    }

    /// The non-empty bins in order, as (bin, count), read straight from the packed bytes.
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut pos = 0;
        let mut bin = 0usize;
        std::iter::from_fn(move || {
            loop {
                let v = get_varint(&self.bytes, &mut pos)?;
                if v == 0 {
                    // A run of empty bins: its length follows.
                    let run = get_varint(&self.bytes, &mut pos)?;
                    bin = bin.saturating_add(usize::try_from(run).unwrap_or(usize::MAX));
                    continue;
                }
                // Bytes we packed ourselves never name a bin past the end; stop if they did.
                if bin >= self.bins {
                    return None;
                }
                bin += 1;
                return Some((bin - 1, v));
            }
        })
    }

    pub fn bins(&self) -> usize {
        self.bins
    }

    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.bins as f64
    }

    /// Bytes the counts take packed.
    pub fn packed_len(&self) -> usize {
        self.bytes.len()
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `*pos`, advancing past it; None at the end (or on a truncated varint).
fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        if shift < 64 {
            v |= u64::from(b & 0x7F) << shift;
        }
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// (x − lo)·scale clamped to [0, last]: the bin arithmetic every fill shares (truncating it
/// gives the bin; NaN passes through and truncates to 0).
#[inline(always)]
fn position(x: f64, lo: f64, scale: f64, last: f64) -> f64 {
    let b = (x - lo) * scale;
    let b = if b < 0.0 { 0.0 } else { b };
    if b > last { last } else { b }
}

/// The two fine histograms of a pass over the values — x over `[lo, hi]` and |x| over
/// `[0, max|x|]` — counted by one worker in a single sweep, with the bin arithmetic of
/// [`Histogram::add_values`] / [`Histogram::add_abs_values`]. Counts are u32 (half the cache
/// footprint of u64, so both fit in L2) with one extra slot that swallows non-finite values,
/// so the increments need no branch; [`PairTotals`] moves them into u64 histograms, and
/// [`PairCounter::needs_fold`] says when it must, before a count could wrap.
#[derive(Clone, Debug)]
pub struct PairCounter {
    x: Vec<u32>,
    abs: Vec<u32>,
    lo: f64,
    scale: f64,
    abs_scale: f64,
    pending: u64,
}

/// What a [`PairCounter`] needs of its two histograms: each worker makes its counter from
/// this (zeroed memory) rather than cloning a template (a zeroed template plus a copy).
#[derive(Clone, Copy, Debug)]
pub struct PairEdges {
    bins: usize,
    lo: f64,
    scale: f64,
    abs_scale: f64,
}

impl PairEdges {
    /// The edges of `x` (signed) and `abs` (|x|, from 0); same bin count.
    pub fn of(x: &Histogram, abs: &Histogram) -> Self {
        debug_assert!(abs.bins() == x.bins() && abs.lo == 0.0);
        PairEdges {
            bins: x.bins(),
            lo: x.lo,
            scale: x.scale(),
            abs_scale: abs.scale(),
        }
    }
}

/// Most zeroed counter arrays a thread keeps for its next pass.
const SPARES: usize = 2;

thread_local! {
    /// Count arrays (x, abs) of counters this thread has emptied, all zero: the next pass
    /// here takes them instead of zero-filling new ones (a fill per small layer would dominate
    /// its fixed cost). Few, so memory stays a few MiB per thread.
    static SPARE: std::cell::RefCell<Vec<(Vec<u32>, Vec<u32>)>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl PairCounter {
    /// Counters with the edges of `x` (signed) and `abs` (|x|, from 0); same bin count.
    pub fn new(x: &Histogram, abs: &Histogram) -> Self {
        Self::with_edges(PairEdges::of(x, abs))
    }

    /// Zeroed counters with edges `e`: a spare pair of this thread's if it has one of the
    /// size, else new ones.
    pub fn with_edges(e: PairEdges) -> Self {
        let len = e.bins + 1;
        let spare = SPARE.with(|cell| {
            let mut s = cell.try_borrow_mut().ok()?;
            let i = s.iter().position(|(x, _)| x.len() == len)?;
            Some(s.swap_remove(i))
        });
        let (x, abs) = spare.unwrap_or_else(|| (vec![0; len], vec![0; len]));
        PairCounter {
            x,
            abs,
            lo: e.lo,
            scale: e.scale,
            abs_scale: e.abs_scale,
            pending: 0,
        }
    }

    /// True if adding `more` values could overflow a u32 count.
    pub fn needs_fold(&self, more: usize) -> bool {
        self.pending + more as u64 > u64::from(u32::MAX)
    }

    /// Gives an emptied counter's arrays to this thread's spares (if it keeps fewer than
    /// [`SPARES`]).
    fn recycle(self) {
        debug_assert!(self.pending == 0);
        SPARE.with(|cell| {
            if let Ok(mut s) = cell.try_borrow_mut()
                && s.len() < SPARES
            {
                s.push((self.x, self.abs));
            }
        });
    }

    /// Counts finite values of `values` in both histograms (non-finite ones are skipped).
    pub fn add(&mut self, values: &[f32]) {
        self.pending += values.len() as u64;
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            let rest = self.add_avx2(cpu, values);
            self.add_portable(rest);
            return;
        }
        self.add_portable(values);
    }

    /// `Histogram::add_blocks`' arithmetic for one value: the bin, or the trash slot.
    #[inline(always)]
    fn bins_of(&self, v: f32) -> (usize, usize) {
        let trash = self.x.len() - 1;
        if v.abs() < f32::INFINITY {
            let last = (trash - 1) as f64;
            (
                position(f64::from(v), self.lo, self.scale, last) as usize,
                position(f64::from(v.abs()), 0.0, self.abs_scale, last) as usize,
            )
        } else {
            (trash, trash)
        }
    }

    fn add_portable(&mut self, values: &[f32]) {
        for &v in values {
            let (i, j) = self.bins_of(v);
            if let (Some(a), Some(b)) = (self.x.get_mut(i), self.abs.get_mut(j)) {
                *a += 1;
                *b += 1;
            }
        }
    }

    /// Four values at a time: bins computed in AVX registers (the same f64 operations as
    /// [`Self::bins_of`], truncation included), then counted. Returns the values it left (fewer
    /// than four).
    #[cfg(target_arch = "x86_64")]
    fn add_avx2<'v>(&mut self, _: Avx2, values: &'v [f32]) -> &'v [f32] {
        #[target_feature(enable = "avx2")]
        fn run<'v>(c: &mut PairCounter, values: &'v [f32]) -> &'v [f32] {
            use std::arch::x86_64::*;
            let trash = (c.x.len() - 1) as i32;
            let last = _mm256_set1_pd(f64::from(trash - 1));
            let (lo, scale, abs_scale) = (
                _mm256_set1_pd(c.lo),
                _mm256_set1_pd(c.scale),
                _mm256_set1_pd(c.abs_scale),
            );
            let zero = _mm256_setzero_pd();
            let abs_ps = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
            let inf = _mm_set1_ps(f32::INFINITY);
            let vtrash = _mm_set1_epi32(trash);
            let (mut xi, mut ai) = ([0u32; 4], [0u32; 4]);
            let (fours, rest) = values.as_chunks::<4>();
            for v in fours {
                let v = simd::load_f32x4(v);
                let av = _mm_and_ps(v, abs_ps);
                let fin = _mm_castps_si128(_mm_cmplt_ps(av, inf));
                let b = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(v), lo), scale);
                let b = _mm256_min_pd(_mm256_max_pd(b, zero), last);
                let i = _mm_blendv_epi8(vtrash, _mm256_cvttpd_epi32(b), fin);
                let a = _mm256_mul_pd(_mm256_cvtps_pd(av), abs_scale);
                let a = _mm256_min_pd(_mm256_max_pd(a, zero), last);
                let j = _mm_blendv_epi8(vtrash, _mm256_cvttpd_epi32(a), fin);
                simd::store_u32x4(&mut xi, i);
                simd::store_u32x4(&mut ai, j);
                for k in 0..4 {
                    // Always in range (clamped, or the trash slot); `get_mut` keeps it
                    // panic-free.
                    if let Some(n) = c.x.get_mut(xi[k] as usize) {
                        *n += 1;
                    }
                    if let Some(n) = c.abs.get_mut(ai[k] as usize) {
                        *n += 1;
                    }
                }
            }
            rest
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, values) }
    }
}

/// The u64 totals of a pass's [`PairCounter`]s: x over `[lo, hi]` and |x| over
/// `[0, absmax]`, with the edges of [`Histogram::new`]. The counts are made by the first
/// counter taken in (converted as it is emptied: one write per bin) rather than zero-filled
/// up front and added to, and every counter is emptied in the same sweep that adds it.
#[derive(Clone, Debug)]
pub struct PairTotals {
    x: Histogram,
    abs: Histogram,
    bins: usize,
    filled: bool,
}

impl PairTotals {
    pub fn new(lo: f64, hi: f64, absmax: f64, bins: usize) -> Self {
        let bins = bins.max(1);
        // `Histogram::new`'s edges (it widens a zero-width range); the counts come later.
        let edges = |lo, hi| Histogram {
            counts: Vec::new(),
            ..Histogram::new(lo, hi, 1)
        };
        PairTotals {
            x: edges(lo, hi),
            abs: edges(0.0, absmax),
            bins,
            filled: false,
        }
    }

    /// The edges for this pass's counters: [`PairEdges::of`] the finished histograms.
    pub fn edges(&self) -> PairEdges {
        // `Histogram::scale`'s expression with the final bin count.
        let scale = |h: &Histogram| self.bins as f64 / (h.hi - h.lo);
        PairEdges {
            bins: self.bins,
            lo: self.x.lo,
            scale: scale(&self.x),
            abs_scale: scale(&self.abs),
        }
    }

    /// Adds a counter's counts and zeroes them in one sweep (before a count could wrap).
    pub fn fold(&mut self, c: &mut PairCounter) {
        debug_assert!(c.x.len() == self.bins + 1);
        for (h, src) in [(&mut self.x, &mut c.x), (&mut self.abs, &mut c.abs)] {
            // The trash slot (last) holds the skipped values: zeroed, never added.
            let (bins, trash) = src.split_at_mut(self.bins);
            trash.fill(0);
            if self.filled {
                for (t, s) in h.counts.iter_mut().zip(bins) {
                    *t += u64::from(std::mem::take(s));
                }
            } else {
                h.counts = bins
                    .iter_mut()
                    .map(|s| u64::from(std::mem::take(s)))
                    .collect();
            }
        }
        self.filled = true;
        c.pending = 0;
    }

    /// [`Self::fold`] of a counter's last counts; its emptied arrays go to this thread's
    /// spares for the next pass.
    pub fn take(&mut self, mut c: PairCounter) {
        self.fold(&mut c);
        c.recycle();
    }

    /// The histograms (x, |x|); all zero if no counter was taken in.
    pub fn finish(mut self) -> (Histogram, Histogram) {
        if !self.filled {
            self.x.counts = vec![0; self.bins];
            self.abs.counts = vec![0; self.bins];
        }
        (self.x, self.abs)
    }
}

/// The bins `numpy.histogram(x, bins, range=(lo, hi))` makes for float32 x, as ONNX Runtime's
/// entropy calibrator calls it (`HistogramCollector.collect_value`, range ±max|x|): float32
/// edges from `np.linspace` (k·step + lo, the last edge hi; an empty range widened to
/// lo − 0.5, hi + 0.5), and a value v in bin k where edges[k] ≤ v < edges[k+1], the last bin
/// closed. numpy computes an index by arithmetic and moves it one bin where an edge says
/// otherwise; the edges decide, so they alone are kept. Where numpy refuses the range (edges
/// not finite and increasing: 2·|lo| or 2·hi beyond f32::MAX, or bins narrower than
/// float32's spacing) the edges come from f64 arithmetic instead, rounded to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct NumpyBins {
    edges: Vec<f32>,
    /// edges[k+1] for bin k, +inf for the last (closed) bin.
    upper: Vec<f32>,
    lo: f64,
    scale: f64,
    /// Whether (v − lo)·scale (in float32), rounded, is always v's bin or the next: every edge
    /// lies within a quarter bin of its exact place (float32 rounding moves it by ~bins·2⁻²⁴
    /// of a bin, but far more for subnormal ranges), the scale is a float32, and the guess's
    /// own rounding (≤ ~3·bins·2⁻²⁴ of a bin) stays under a quarter bin (bins < 2²⁰).
    one_step: bool,
}

impl NumpyBins {
    pub fn new(lo: f32, hi: f32, bins: usize) -> Self {
        let bins = bins.max(1);
        let (lo, hi) = if lo == hi {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let div = bins as f32;
        let delta = hi - lo;
        let step = delta / div;
        let mut edges: Vec<f32> = (0..=bins)
            .map(|k| {
                let k = k as f32;
                // linspace's branch for a step that underflows to 0.
                if step == 0.0 {
                    k / div * delta + lo
                } else {
                    k * step + lo
                }
            })
            .collect();
        edges[bins] = hi;
        // Counted rather than short-circuited, so the sweeps vectorise.
        let increasing = |e: &[f32]| e.windows(2).filter(|w| w[0] >= w[1]).count() == 0;
        if !increasing(&edges) || edges.iter().filter(|e| !e.is_finite()).count() > 0 {
            let (l, h) = (f64::from(lo), f64::from(hi));
            for (k, e) in edges.iter_mut().enumerate() {
                *e = (l + (h - l) * k as f64 / bins as f64) as f32;
            }
            (edges[0], edges[bins]) = (lo, hi);
        }
        let mut upper = edges[1..].to_vec();
        upper[bins - 1] = f32::INFINITY;
        let (first, last) = (f64::from(edges[0]), f64::from(edges[bins]));
        let scale = bins as f64 / (last - first);
        let near = edges
            .iter()
            .enumerate()
            .map(|(k, &e)| ((f64::from(e) - first) * scale - k as f64).abs())
            .fold(0.0, f64::max)
            < 0.25;
        NumpyBins {
            one_step: near && increasing(&edges) && (scale as f32).is_finite() && bins < 1 << 20,
            edges,
            upper,
            lo: first,
            scale,
        }
    }

    pub fn bins(&self) -> usize {
        self.edges.len() - 1
    }

    /// The bins+1 edges.
    pub fn edges(&self) -> &[f32] {
        &self.edges
    }

    /// The bin of `v`, None outside `[edges[0], edges[bins]]` or NaN (numpy drops those).
    pub fn bin(&self, v: f32) -> Option<usize> {
        let e = &self.edges;
        let n = e.len() - 1;
        if !(v >= e[0] && v <= e[n]) {
            return None;
        }
        let mut k = position(f64::from(v), self.lo, self.scale, (n - 1) as f64) as usize;
        while k > 0 && v < e[k] {
            k -= 1;
        }
        while k + 1 < n && v >= e[k + 1] {
            k += 1;
        }
        Some(k)
    }

    /// Counts `values` into `counts` (`bins()` long); values outside the range, NaN and ±inf
    /// are not counted. The guesses are computed a block at a time without branches (so that
    /// part vectorises), then moved at most one bin by the edges (see `one_step`).
    pub fn add(&self, values: &[f32], counts: &mut [u64]) {
        if !self.one_step {
            for &v in values {
                if let Some(c) = self.bin(v).and_then(|k| counts.get_mut(k)) {
                    *c += 1;
                }
            }
            return;
        }
        const BLOCK: usize = 256;
        let n = self.bins();
        let (lower, upper) = (&self.edges[..n], &self.upper[..n]);
        let (first, last) = (self.edges[0], self.edges[n]);
        // The guess in float32 (as numpy's own; its rounding is ~n·2⁻²² of a bin), rounded to
        // the nearest bin index by adding 2²³, which leaves round(b) in the low mantissa bits
        // (b ∈ [0, n−1], NaN taken to 0): it vectorises, where a float-to-int cast saturates
        // lane by lane. Rounding rather than truncating keeps the guess within one bin.
        let (scale, top) = (self.scale as f32, (n - 1) as f32);
        let mut guess = [0u32; BLOCK];
        for block in values.chunks(BLOCK) {
            for (g, &v) in guess.iter_mut().zip(block) {
                let b = ((v - first) * scale).max(0.0).min(top);
                *g = (b + 8_388_608.0).to_bits() & 0x7f_ffff;
            }
            for (&v, &g) in block.iter().zip(&guess) {
                let g = (g as usize).min(n - 1);
                let k = (g + usize::from(v >= upper[g])).wrapping_sub(usize::from(v < lower[g]));
                if v >= first
                    && v <= last
                    && let Some(c) = counts.get_mut(k)
                {
                    *c += 1;
                }
            }
        }
    }

    /// `counts` as a [`Histogram`] over these bins' range (its `edge` is f64 arithmetic:
    /// read the exact edges from [`Self::edges`]).
    pub fn histogram(&self, counts: Vec<u64>) -> Histogram {
        Histogram {
            lo: f64::from(self.edges[0]),
            hi: f64::from(self.edges[self.bins()]),
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Packing keeps every count and the edges, whatever the mix of empty runs and counts
        /// (up to u64::MAX), and `nonzero` lists exactly the non-empty bins in order.
        #[test]
        fn packed_histograms_round_trip(
            counts in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::strategy::Just(0u64),
                    2 => 1u64..300,
                    1 => proptest::num::u64::ANY,
                ],
                1..3000,
            ),
            lo in -1e6f64..1e6,
        ) {
            let h = Histogram { lo, hi: lo + 2.5, counts };
            let p = PackedHistogram::pack(&h);
            proptest::prop_assert_eq!(p.unpack(), h.clone());
            let listed: Vec<(usize, u64)> = p.nonzero().collect();
            let expected: Vec<(usize, u64)> = h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i, *c))
                .collect();
            proptest::prop_assert_eq!(listed, expected);
            proptest::prop_assert_eq!(p.bins(), h.bins());
            proptest::prop_assert_eq!(p.width(), h.width());
        }
    }

    #[test]
    fn a_sparse_fine_histogram_packs_small() {
        // 65536 bins, a bell of 10^6 values over the middle fifth: counts fit 1–3 bytes and
        // the empty tails are two runs.
        let mut h = Histogram::new(-1.0, 1.0, 65536);
        for (i, c) in h.counts.iter_mut().enumerate().skip(26214).take(13107) {
            let d = (i as f64 - 32768.0) / 2000.0;
            *c = (100.0 * (-d * d).exp()).round() as u64;
        }
        let p = PackedHistogram::pack(&h);
        assert!(p.packed_len() < 30_000, "{}", p.packed_len());
        assert_eq!(p.unpack(), h);
    }

    #[test]
    fn bins_of_ranks_are_the_first_bins_whose_cumulative_count_reaches_the_ranks() {
        // Sizes around the block length, sparse and dense counts, every rank up to past the end.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for &len in &[1usize, 5, 63, 64, 65, 130, 1000] {
            for density in [2u64, 5, 50] {
                let counts: Vec<u64> = (0..len)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        if s.is_multiple_of(density) {
                            s >> 60
                        } else {
                            0
                        }
                    })
                    .collect();
                let total: u64 = counts.iter().sum();
                let h = Histogram {
                    lo: 0.0,
                    hi: 1.0,
                    counts: counts.clone(),
                };
                assert_eq!(h.total(), total);
                // Every rank, up to past the end, whichever end it is found from.
                for rank in 0..=total + 2 {
                    let mut acc = 0;
                    let want = counts.iter().position(|&c| {
                        acc += c;
                        rank > 0 && acc >= rank
                    });
                    let got = h.bins_of_ranks(&[rank], total);
                    assert_eq!(got, [want], "len {len} rank {rank}");
                }
                // Several ranks at once, unsorted and repeated, from both halves, answer as
                // one at a time.
                let ranks: Vec<u64> = (0..=total + 2)
                    .rev()
                    .chain([1, total, 0, total / 2, total / 2 + 1])
                    .collect();
                let one: Vec<_> = ranks
                    .iter()
                    .map(|&r| h.bins_of_ranks(&[r], total)[0])
                    .collect();
                assert_eq!(h.bins_of_ranks(&ranks, total), one, "len {len}");
            }
        }
    }

    #[test]
    fn pair_counter_bins_exactly_as_the_histograms_do() {
        let mut v: Vec<f32> = (0..100_003)
            .map(|i| ((i as f32 * 0.7312).sin() * 3.0).powi(3))
            .collect();
        v.extend([
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            -0.0,
            27.0,
            -27.0,
            1e-30,
        ]);
        let (mut h, mut a) = (
            Histogram::new(-27.0, 27.0, 4096),
            Histogram::new(0.0, 27.0, 4096),
        );
        h.add_values(&v);
        a.add_abs_values(&v);
        for start in [0, 1, 2, 3] {
            let mut t = PairTotals::new(-27.0, 27.0, 27.0, 4096);
            let mut c = PairCounter::with_edges(t.edges());
            // Split into pieces so the vector path and the scalar tail both run.
            c.add(&v[..start]);
            c.add(&v[start..]);
            assert_eq!(c.pending, v.len() as u64);
            t.fold(&mut c);
            // A folded counter is empty, trash slot included.
            assert_eq!(c.pending, 0);
            assert!(c.x.iter().chain(&c.abs).all(|&n| n == 0));
            let (h2, a2) = t.clone().finish();
            assert_eq!(h2, h, "start {start}");
            assert_eq!(a2, a, "start {start}");
            assert_eq!(h2.total(), v.len() as u64 - 3);
            // Counting again and taking it in doubles every bin.
            c.add(&v);
            t.take(c);
            let (h2, a2) = t.finish();
            assert!(h2.counts.iter().zip(&h.counts).all(|(&d, &c)| d == 2 * c));
            assert!(a2.counts.iter().zip(&a.counts).all(|(&d, &c)| d == 2 * c));
            // The recycled arrays come back zeroed for the next counter of that size.
            let again = PairCounter::with_edges(PairEdges::of(&h2, &a2));
            assert!(again.x.iter().chain(&again.abs).all(|&n| n == 0));
            let mut portable = PairCounter::new(&h2, &a2);
            portable.add_portable(&v[start..]);
            let mut fast = PairCounter::new(&h2, &a2);
            fast.add(&v[start..]);
            assert_eq!(portable.x, fast.x);
            assert_eq!(portable.abs, fast.abs);
        }
    }

    #[test]
    fn pair_totals_have_the_histograms_edges_and_start_at_zero() {
        for (lo, hi, bins) in [(-3.0, 5.0, 65536), (2.0, 2.0, 8), (0.0, 0.0, 1)] {
            let absmax = f64::max(-lo, hi);
            let (h, a) = (
                Histogram::new(lo, hi, bins),
                Histogram::new(0.0, absmax, bins),
            );
            let t = PairTotals::new(lo, hi, absmax, bins);
            let (e, want) = (t.edges(), PairEdges::of(&h, &a));
            assert_eq!(
                (
                    e.bins,
                    e.lo.to_bits(),
                    e.scale.to_bits(),
                    e.abs_scale.to_bits()
                ),
                (
                    want.bins,
                    want.lo.to_bits(),
                    want.scale.to_bits(),
                    want.abs_scale.to_bits()
                )
            );
            assert_eq!(t.finish(), (h, a));
        }
    }

    /// The AVX2 kernels against their portable twins, directly (not through the dispatch, which
    /// on a CPU with AVX2 would compare a kernel with itself).
    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::super::*;
        use crate::simd::{self, testing};

        /// Ranges: ordinary, one bin, a subnormal width, one wider than f32, offset from 0.
        const RANGES: [(f64, f64, usize); 6] = [
            (-3.0, 5.0, 4096),
            (-1.0, 1.0, 1),
            (0.0, 1e-40, 64),
            (-1e300, 1e300, 1000),
            (2.0, 2.0, 8),
            (65500.0, 65530.0, 77),
        ];

        #[test]
        fn total_is_the_portable_sum() {
            let Some(cpu) = simd::avx2() else {
                // No AVX2 on this CPU: nothing to compare.
                return;
            };
            for (seed, &len) in testing::LENGTHS.iter().enumerate() {
                let counts: Vec<u64> = testing::values(len, seed as u64)
                    .iter()
                    .map(|v| u64::from(v.to_bits()) << (seed % 28))
                    .collect();
                assert_eq!(total_avx2(cpu, &counts), total_lanes(&counts), "len {len}");
                assert_eq!(total_lanes(&counts), counts.iter().sum::<u64>());
            }
        }

        #[test]
        fn histogram_fill_bins_as_the_portable_code() {
            let Some(cpu) = simd::avx2() else {
                // No AVX2 on this CPU: nothing to compare.
                return;
            };
            for (lo, hi, bins) in RANGES {
                for (seed, &len) in testing::LENGTHS.iter().enumerate() {
                    let v = testing::values(len, seed as u64);
                    for abs in [false, true] {
                        let mut fast = Histogram::new(lo, hi, bins);
                        let mut portable = fast.clone();
                        fast.add_avx2(cpu, &v, abs);
                        portable.add_blocks(&v, abs);
                        assert_eq!(fast, portable, "[{lo}, {hi}] len {len} abs {abs}");
                    }
                }
            }
        }

        #[test]
        fn pair_counter_bins_as_the_portable_code() {
            let Some(cpu) = simd::avx2() else {
                // No AVX2 on this CPU: nothing to compare.
                return;
            };
            for (lo, hi, bins) in RANGES {
                let absmax = f64::max(lo.abs(), hi.abs());
                let edges = PairTotals::new(lo, hi, absmax, bins).edges();
                for (seed, &len) in testing::LENGTHS.iter().enumerate() {
                    let v = testing::values(len, seed as u64);
                    let mut fast = PairCounter::with_edges(edges);
                    let mut portable = PairCounter::with_edges(edges);
                    let rest = fast.add_avx2(cpu, &v);
                    assert_eq!(rest.len(), len % 4);
                    fast.add_portable(rest);
                    portable.add_portable(&v);
                    assert_eq!(fast.x, portable.x, "[{lo}, {hi}] len {len}");
                    assert_eq!(fast.abs, portable.abs, "[{lo}, {hi}] len {len}");
                }
            }
        }
    }

    #[test]
    fn numpy_bins_are_numpys() {
        // numpy 2.4: np.histogram(v, 16, range=(-T, T)) for float32 T = 0.7 (inexact edges),
        // v = every edge and its float32 neighbours either side, ±0, a few inside, NaN, inf
        // and a value beyond the range (the last three not counted).
        let t = 0.7f32;
        let b = NumpyBins::new(-t, t, 16);
        let want_edges: [u32; 17] = [
            0xbf33_3333,
            0xbf1c_cccd,
            0xbf06_6666,
            0xbee0_0000,
            0xbeb3_3333,
            0xbe86_6666,
            0xbe33_3334,
            0xbdb3_3330,
            0x0,
            0x3db3_3330,
            0x3e33_3334,
            0x3e86_6666,
            0x3eb3_3332,
            0x3edf_fffe,
            0x3f06_6667,
            0x3f1c_cccd,
            0x3f33_3333,
        ];
        let edges: Vec<u32> = b.edges().iter().map(|e| e.to_bits()).collect();
        assert_eq!(edges, want_edges);
        let mut v = Vec::new();
        for &e in b.edges() {
            v.extend([e, e.next_down(), e.next_up()]);
        }
        v.extend([0.0, -0.0, 0.3, -0.51, f32::NAN, f32::INFINITY, 2.0]);
        let mut counts = vec![0; 16];
        b.add(&v, &mut counts);
        assert_eq!(
            counts,
            [3, 3, 4, 3, 3, 3, 3, 3, 5, 3, 3, 4, 3, 3, 3, 4],
            "{v:?}"
        );
        // An empty range is widened by 0.5 each way: np.histogram([0, .5, -.5, .25, 1], 4,
        // range=(0, 0)) = [1, 0, 1, 2] over edges −0.5, −0.25, 0, 0.25, 0.5.
        let z = NumpyBins::new(-0.0, 0.0, 4);
        assert_eq!(z.edges(), [-0.5, -0.25, 0.0, 0.25, 0.5]);
        let mut c = vec![0; 4];
        z.add(&[0.0, 0.5, -0.5, 0.25, 1.0], &mut c);
        assert_eq!(c, [1, 0, 1, 2]);
        assert_eq!(
            z.histogram(c),
            Histogram {
                lo: -0.5,
                hi: 0.5,
                counts: vec![1, 0, 1, 2]
            }
        );
    }

    #[test]
    fn numpy_bins_one_step_counting_is_the_edges_verdict() {
        // Values on, beside and between the edges of several ranges: the block count (a guess
        // moved one bin) gives each value the bin `bin` finds by walking the edges.
        let mut kinds = [0; 2];
        let cases = [
            (0.7f32, 16),
            (5.914_631_4, 2048),
            (1e-30, 2048),
            (3e-41, 64),
            (1e-44, 8),
            (1e-44, 2048),
        ];
        for (t, bins) in cases {
            let b = NumpyBins::new(-t, t, bins);
            kinds[usize::from(b.one_step)] += 1;
            let mut v: Vec<f32> = b
                .edges()
                .iter()
                .flat_map(|&e| [e, e.next_down(), e.next_up()])
                .collect();
            v.extend((0..5000).map(|i| t * ((i as f32 * 0.618_034).fract() * 2.0 - 1.0)));
            v.extend([f32::NAN, f32::INFINITY, -f32::INFINITY, 2.0 * t, -2.0 * t]);
            let mut want = vec![0; bins];
            for &x in &v {
                if let Some(k) = b.bin(x) {
                    let e = b.edges();
                    assert!(
                        e[k] <= x && (x < e[k + 1] || k == bins - 1),
                        "{t}: {x} in {k}"
                    );
                    want[k] += 1;
                }
            }
            let mut got = vec![0; bins];
            b.add(&v, &mut got);
            assert_eq!(got, want, "T = {t}, {bins} bins (one step: {})", b.one_step);
        }
        // Both ways of counting ran (subnormal ranges walk the edges).
        assert!(kinds[0] > 0 && kinds[1] > 0, "{kinds:?}");
    }

    #[test]
    fn numpy_bins_where_numpy_refuses_the_range_stay_finite_and_ordered() {
        // ±f32::MAX: 2·MAX overflows float32 (numpy: "Too many bins for data range").
        for (lo, hi) in [(-f32::MAX, f32::MAX), (-1e-44, 1e-44), (-2e38, 2e38)] {
            let b = NumpyBins::new(lo, hi, 2048);
            let e = b.edges();
            assert!(e.iter().all(|x| x.is_finite()), "{lo} {hi}");
            assert!(e.windows(2).all(|w| w[0] <= w[1]), "{lo} {hi}");
            assert_eq!((e[0], e[2048]), (lo, hi));
            let v = [lo, hi, 0.0, lo / 2.0, hi / 3.0];
            let mut c = vec![0; 2048];
            b.add(&v, &mut c);
            assert_eq!(c.iter().sum::<u64>(), 5);
            for x in v {
                let k = b.bin(x).expect("inside the range");
                assert!(e[k] <= x && (x < e[k + 1] || k == 2047), "{x} in bin {k}");
            }
        }
    }

    #[test]
    fn pair_counter_asks_to_fold_before_a_count_could_wrap() {
        let (h, a) = (Histogram::new(0.0, 1.0, 8), Histogram::new(0.0, 1.0, 8));
        let mut c = PairCounter::new(&h, &a);
        assert!(!c.needs_fold(u32::MAX as usize));
        c.add(&[0.5]);
        assert!(c.needs_fold(u32::MAX as usize));
    }
}
