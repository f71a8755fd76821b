//! The three passes over a layer's chunks: 1 (moments, casts, batch extremes, row sums),
//! 2 (the two fine histograms, and ONNX Runtime's entropy histogram where it is needed) and
//! 3 (every chosen quantizer's exact error).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::calib::Chosen;
use crate::calib::QParams;
use crate::calib::{SEARCH_BINS, Scheme};
use crate::histogram::{NumpyBins, PairCounter, PairTotals};
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};
use crate::source::{ArrayInfo, LayerSpec, LoadError, OpenArray};

use super::binned::{self, BinSums, Bins, Engine, Grid};
use super::cast::{self, CastAccum, CastType, F16_OVERFLOW};
use super::formats::{FormatAccums, FormatPlan};
use super::granularity::{ChannelFold, ChannelLayout, FoldAcc, GroupAccums, Plan};
use super::metrics::{self, ErrorAccum};
use super::options::{FINE_BINS, MAX_BATCHES, Options, Progress};
use super::profile::Profile;
use super::stats::Moments;
use super::validation::{CellCounter, Layout, Probe, ProbeSums};

thread_local! {
    /// The metrics pass's widened block per worker thread.
    static PREPARED: std::cell::RefCell<metrics::Prepared> = Default::default();
}

/// Where a flat element index falls along the batch axis: runs of `run` consecutive
/// elements share a batch, and batches repeat every `count` runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchMap {
    run: usize,
    count: usize,
}

impl BatchMap {
    fn new(info: &ArrayInfo, axis: Option<usize>) -> Option<BatchMap> {
        // A 1-D tensor is one batch (as the references treat it), not one batch per value.
        if info.shape.len() < 2 {
            return None;
        }
        let axis = axis?;
        let count = *info.shape.get(axis)?;
        let run = if info.fortran_order {
            info.shape[..axis].iter().product()
        } else {
            info.shape[axis + 1..].iter().product()
        };
        (count > 0 && count <= MAX_BATCHES && run > 0).then_some(BatchMap { run, count })
    }
}

/// How a layer's parts split into batches: several files are one batch each; one file splits
/// along the batch axis (or is one batch).
pub(crate) struct Batches {
    multi: bool,
    maps: Vec<Option<BatchMap>>,
    /// How many batches.
    pub count: usize,
}

impl Batches {
    pub(crate) fn of(parts: &[OpenArray], opts: &Options) -> Batches {
        let multi = parts.len() > 1;
        let maps: Vec<Option<BatchMap>> = parts
            .iter()
            .map(|p| {
                if multi {
                    None
                } else {
                    BatchMap::new(&p.info, opts.batch_axis)
                }
            })
            .collect();
        let count = if multi {
            parts.len()
        } else {
            maps[0].map_or(1, |m| m.count)
        };
        Batches { multi, maps, count }
    }

    /// Calls `f(batch, range)` for each run of values of one batch in the chunk of part `pi`
    /// that starts at flat index `first` and holds `len` values, in order.
    pub(crate) fn runs(
        &self,
        pi: usize,
        first: usize,
        len: usize,
        mut f: impl FnMut(usize, std::ops::Range<usize>),
    ) {
        match self.maps.get(pi).copied().flatten() {
            _ if self.multi => f(pi, 0..len),
            None => f(0, 0..len),
            Some(b) => {
                let mut i = 0;
                while i < len {
                    let idx = first + i;
                    let end = (idx / b.run * b.run + b.run - first).min(len);
                    f(idx / b.run % b.count, i..end);
                    i = end;
                }
            }
        }
    }
}

/// Lock-free running min/max per batch, keyed by an order-preserving integer image of f32
/// (min and max are exact, so the result does not depend on the order chunks finish in).
struct BatchExtremes {
    min: Vec<AtomicI32>,
    max: Vec<AtomicI32>,
}

fn ordered(v: f32) -> i32 {
    let b = v.to_bits() as i32;
    if b < 0 { b ^ i32::MAX } else { b }
}

fn unordered(k: i32) -> f32 {
    let b = if k < 0 { k ^ i32::MAX } else { k };
    f32::from_bits(b as u32)
}

impl BatchExtremes {
    fn new(n: usize) -> Self {
        BatchExtremes {
            min: (0..n)
                .map(|_| AtomicI32::new(ordered(f32::INFINITY)))
                .collect(),
            max: (0..n)
                .map(|_| AtomicI32::new(ordered(f32::NEG_INFINITY)))
                .collect(),
        }
    }

    fn update(&self, batch: usize, values: &[f32]) {
        let (lo, hi) = finite_extremes(values);
        self.set(batch, lo, hi);
    }

    /// Merges the finite extremes (lo, hi) of some values of `batch` ((+inf, −inf): none).
    fn set(&self, batch: usize, lo: f32, hi: f32) {
        if lo <= hi {
            self.min[batch].fetch_min(ordered(lo), Ordering::Relaxed);
            self.max[batch].fetch_max(ordered(hi), Ordering::Relaxed);
        }
    }

    fn into_pairs(self) -> Vec<(f32, f32)> {
        self.min
            .into_iter()
            .zip(self.max)
            .map(|(a, b)| (unordered(a.into_inner()), unordered(b.into_inner())))
            .collect()
    }
}

/// A stack of reusable accumulators: each chunk takes one, fills it, puts it back, so there are
/// at most as many as threads. For exact (integer) sums only.
pub(crate) struct Pool<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Pool<T> {
    pub(crate) fn new() -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn with(&self, make: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
        let taken = self.items.lock().ok().and_then(|mut v| v.pop());
        let mut item = taken.unwrap_or_else(make);
        f(&mut item);
        if let Ok(mut v) = self.items.lock() {
            v.push(item);
        }
    }

    pub(crate) fn into_items(self) -> Vec<T> {
        self.items.into_inner().unwrap_or_default()
    }
}

pub(crate) fn open_parts(spec: &LayerSpec, opts: &Options) -> Result<Vec<OpenArray>, LoadError> {
    if spec.parts.is_empty() {
        return Err(LoadError::new(&spec.name, "layer has no data files"));
    }
    spec.parts
        .iter()
        .map(|loc| OpenArray::open(loc, &opts.limits))
        .collect()
}

/// Chunk length: a multiple of the last axis (C order) so rows never straddle chunks.
fn chunk_len(info: &ArrayInfo, opts: &Options) -> (usize, Option<usize>) {
    let chunk = opts.chunk_elems.max(1);
    match info.shape.last() {
        Some(&n) if !info.fortran_order && n > 0 && n <= chunk && info.shape.len() >= 2 => {
            (chunk / n * n, Some(n))
        }
        _ => (chunk, None),
    }
}

/// Passes 1 and 2.
pub fn profile_layer(
    spec: &LayerSpec,
    opts: &Options,
    progress: &Progress,
) -> Result<Profile, LoadError> {
    profile_parts(&open_parts(spec, opts)?, opts, progress)
}

/// Passes 1 and 2 over a layer's open parts (at least one).
pub(crate) fn profile_parts(
    parts: &[OpenArray],
    opts: &Options,
    progress: &Progress,
) -> Result<Profile, LoadError> {
    let info = parts[0].info.clone();
    let elems: u64 = parts.iter().map(|p| p.info.len() as u64).sum();
    progress.total.fetch_add(elems * 3, Ordering::Relaxed);

    // Several files: each is one batch. One file: batches along the batch axis.
    let multi = parts.len() > 1;
    let batching = Batches::of(parts, opts);
    let batch_maps = &batching.maps;
    let n_batches = batching.count;
    let extremes = BatchExtremes::new(n_batches);
    let chunks: Vec<_> = parts
        .iter()
        .map(|p| (&p.info, chunk_len(&p.info, opts).0))
        .collect();
    let (fold, channel_note) = match ChannelLayout::resolve(&chunks, opts) {
        Ok(layout) => (
            layout.map(|l| ChannelFold::new(l, opts.granularity.outlier_threshold)),
            None,
        ),
        Err(note) => (None, Some(note)),
    };
    let fold_pool: Pool<FoldAcc> = Pool::new();

    // Pass 1.
    let mut moments = Moments::default();
    let mut casts: Vec<(CastType, CastAccum)> = CastType::ALL
        .iter()
        .map(|&c| (c, CastAccum::default()))
        .collect();
    let mut rows: Option<(u64, u64, f64)> = Some((0, 0, 0.0));
    let mut f64_overflows = 0;
    let mut trailing_bytes = 0;
    for (pi, part) in parts.iter().enumerate() {
        let (chunk, row_len) = chunk_len(&part.info, opts);
        if row_len.is_none() {
            rows = None;
        }
        let bmap = batch_maps[pi];
        let partials = part.map_chunks(chunk, &progress.cancel, |first, values| {
            let m = Moments::of_chunk(values);
            let c = cast::audit_chunk(values);
            // When the chunk lies in one batch, its extremes are the moments' (finite min/max).
            let batch = match bmap {
                _ if multi => Some(pi),
                None => Some(0),
                Some(b) if first / b.run == (first + values.len() - 1) / b.run => {
                    Some(first / b.run % b.count)
                }
                Some(_) => None,
            };
            match (batch, bmap) {
                (Some(k), _) => extremes.set(k, m.min, m.max),
                (None, Some(b)) => update_batches(&extremes, b, first, values),
                (None, None) => {}
            }
            let r = row_len.map(|n| row_sums(values, n));
            if let Some(f) = &fold {
                fold_pool.with(|| f.new_acc(), |a| f.fold(a, pi, first, values));
            }
            progress
                .done
                .fetch_add(values.len() as u64, Ordering::Relaxed);
            (m, c, r)
        })?;
        for (m, c, r) in partials {
            moments.merge(&m);
            for ((_, acc), part_acc) in casts.iter_mut().zip(&c) {
                acc.merge(part_acc);
            }
            if let (Some(total), Some(r)) = (rows.as_mut(), r) {
                total.0 += r.0;
                total.1 += r.1;
                total.2 = total.2.max(r.2);
            }
        }
        f64_overflows += part.f64_overflows();
        trailing_bytes += part.trailing_bytes;
    }
    let channels = fold.map(|f| f.finish(fold_pool.into_items()));

    // Pass 2.
    let (lo, hi) = if moments.n > 0 {
        (f64::from(moments.min), f64::from(moments.max))
    } else {
        (0.0, 0.0)
    };
    let absmax = lo.abs().max(hi.abs());
    let pool: Pool<PairCounter> = Pool::new();
    let totals = PairTotals::new(lo, hi, absmax, FINE_BINS);
    let edges = totals.edges();
    let make = || PairCounter::with_edges(edges);
    // Counters that would overflow are folded into the totals under the lock (rarely: after
    // 2^32 values in one worker).
    let totals = Mutex::new(totals);
    // ONNX Runtime's entropy histogram, only where it may be read: its own loop over each chunk.
    let entropy_bins = (opts.scheme == Scheme::Affine || opts.keep_profiles)
        .then(|| NumpyBins::new(-absmax as f32, absmax as f32, SEARCH_BINS));
    let entropy_pool: Pool<Vec<u64>> = Pool::new();
    // With batches to validate on, the histograms are counted per cell (a fold within a
    // convergence segment) and summed: the same counts, one increment per value.
    let layout = opts
        .validate
        .then(|| Layout::new(n_batches, opts.folds))
        .flatten();
    let cells = layout
        .as_ref()
        .map(|l| CellCounter::new(l, (lo, hi, absmax), entropy_bins.as_ref()));
    let grid = Grid::of(opts, &moments);
    let bin_pool: Pool<BinSums> = Pool::new();
    for (pi, part) in parts.iter().enumerate() {
        let (chunk, _) = chunk_len(&part.info, opts);
        part.map_chunks(chunk, &progress.cancel, |first, values| {
            if let Some(g) = grid {
                bin_pool.with(|| BinSums::new(g), |s| s.add(values));
            }
            if let Some(cells) = &cells {
                cells.add(&batching, pi, first, values);
                progress
                    .done
                    .fetch_add(values.len() as u64, Ordering::Relaxed);
                return;
            }
            pool.with(make, |c| {
                if c.needs_fold(values.len())
                    && let Ok(mut t) = totals.lock()
                {
                    t.fold(c);
                }
                c.add(values);
            });
            if let Some(b) = &entropy_bins {
                entropy_pool.with(|| vec![0; b.bins()], |c| b.add(values, c));
            }
            progress
                .done
                .fetch_add(values.len() as u64, Ordering::Relaxed);
        })?;
    }
    let mut totals = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    for c in pool.into_items() {
        totals.take(c);
    }
    let (mut hist, mut abs_hist) = totals.finish();
    let bins = binned::merge(bin_pool.into_items()).map(Arc::new);
    let mut entropy_hist = entropy_bins.as_ref().map(|b| {
        let mut counts = vec![0u64; b.bins()];
        for c in entropy_pool.into_items() {
            for (t, n) in counts.iter_mut().zip(c) {
                *t += n;
            }
        }
        b.histogram(counts)
    });
    let cells = cells.map(|c| {
        let (cells, whole) = c.finish();
        (hist, abs_hist, entropy_hist) = whole;
        cells
    });

    Ok(Profile {
        info,
        parts: parts.len(),
        moments,
        casts,
        batches: extremes.into_pairs(),
        rows,
        hist,
        abs_hist,
        entropy_hist,
        f64_overflows,
        trailing_bytes,
        channels,
        channel_note,
        cells,
        bins,
    })
}

fn update_batches(ex: &BatchExtremes, b: BatchMap, first: usize, values: &[f32]) {
    let mut i = 0;
    while i < values.len() {
        let idx = first + i;
        let run_start = idx / b.run * b.run;
        let end = (run_start + b.run - first).min(values.len());
        ex.update(idx / b.run % b.count, &values[i..end]);
        i = end;
    }
}

/// (min, max) of the finite values; (+inf, −inf) if there are none. In 8 independent lanes
/// without branches so it vectorises (min and max do not depend on order).
fn finite_extremes(values: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return finite_extremes_avx2(cpu, values);
    }
    finite_extremes_lanes(values)
}

/// [`finite_extremes_lanes`] in one AVX register of 8 lanes (`minps`/`maxps` pick as its
/// lanes do, down to the sign of a zero).
#[cfg(target_arch = "x86_64")]
fn finite_extremes_avx2(_: Avx2, values: &[f32]) -> (f32, f32) {
    #[target_feature(enable = "avx2")]
    fn run(values: &[f32]) -> (f32, f32) {
        use std::arch::x86_64::*;
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let (inf, ninf) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        let (mut lo, mut hi) = (inf, ninf);
        let (eights, rest) = values.as_chunks::<8>();
        for v in eights {
            let v = simd::load_f32x8(v);
            let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs), inf);
            lo = _mm256_min_ps(lo, _mm256_blendv_ps(inf, v, fin));
            hi = _mm256_max_ps(hi, _mm256_blendv_ps(ninf, v, fin));
        }
        let (mut l, mut h) = ([0.0f32; 8], [0.0f32; 8]);
        simd::store_f32x8(&mut l, lo);
        simd::store_f32x8(&mut h, hi);
        fold_extremes(l, h, rest)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(values) }
}

/// Each lane keeps its extreme unless the new value is strictly beyond it (so of +0 and −0,
/// the later), as `minps`/`maxps` do.
#[inline(always)]
fn finite_extremes_lanes(values: &[f32]) -> (f32, f32) {
    const L: usize = 8;
    let mut lo = [f32::INFINITY; L];
    let mut hi = [f32::NEG_INFINITY; L];
    let (chunks, rest) = values.as_chunks::<L>();
    for c in chunks {
        for k in 0..L {
            let v = c[k];
            let fin = v.abs() < f32::INFINITY;
            let a = if fin { v } else { f32::INFINITY };
            let b = if fin { v } else { f32::NEG_INFINITY };
            lo[k] = if lo[k] < a { lo[k] } else { a };
            hi[k] = if hi[k] > b { hi[k] } else { b };
        }
    }
    fold_extremes(lo, hi, rest)
}

/// The extremes of the lanes and of the last values (fewer than 8), in one order for both
/// paths.
#[inline(always)]
fn fold_extremes(lo: [f32; 8], hi: [f32; 8], rest: &[f32]) -> (f32, f32) {
    let (mut tl, mut th) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in rest {
        if v.is_finite() {
            tl = tl.min(v);
            th = th.max(v);
        }
    }
    (
        lo.iter().fold(tl, |a, &b| a.min(b)),
        hi.iter().fold(th, |a, &b| a.max(b)),
    )
}

/// (rows, rows with Σx² ≥ 65520, largest Σx²) over complete rows of length `n`.
fn row_sums(values: &[f32], n: usize) -> (u64, u64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return row_sums_avx2(cpu, values, n);
    }
    row_sums_lanes(values, n)
}

/// [`row_sums_lanes`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
fn row_sums_avx2(_: Avx2, values: &[f32], n: usize) -> (u64, u64, f64) {
    #[target_feature(enable = "avx2")]
    fn run(values: &[f32], n: usize) -> (u64, u64, f64) {
        row_sums_lanes(values, n)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(values, n) }
}

/// Each row's Σx² in 4 lanes (x² of a widened f32 is exact; only the additions round).
#[inline(always)]
fn row_sums_lanes(values: &[f32], n: usize) -> (u64, u64, f64) {
    const L: usize = 4;
    let mut out = (0u64, 0u64, 0.0f64);
    let sq = |v: f32| {
        let x = if v.abs() < f32::INFINITY {
            f64::from(v)
        } else {
            0.0
        };
        x * x
    };
    for row in values.chunks_exact(n) {
        let mut lanes = [0.0f64; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for k in 0..L {
                lanes[k] += sq(c[k]);
            }
        }
        let s = chunks.remainder().iter().map(|&v| sq(v)).sum::<f64>()
            + ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]));
        out.0 += 1;
        out.1 += u64::from(s >= F16_OVERFLOW);
        out.2 = out.2.max(s);
    }
    out
}

/// Pass 3: the exact error of every chosen range, all evaluated on each chunk.
pub fn measure(
    spec: &LayerSpec,
    chosen: &[Chosen],
    opts: &Options,
    progress: &Progress,
) -> Result<Vec<ErrorAccum>, LoadError> {
    measure_parts(&open_parts(spec, opts)?, chosen, opts, progress)
}

/// Pass 3 over a layer's open parts.
pub(crate) fn measure_parts(
    parts: &[OpenArray],
    chosen: &[Chosen],
    opts: &Options,
    progress: &Progress,
) -> Result<Vec<ErrorAccum>, LoadError> {
    measure_parts_with(parts, chosen, Extras::default(), opts, progress).map(|m| m.methods)
}

/// What pass 3 measured: each chosen range's error, and with a [`Plan`] the per-tensor grid's
/// and the granularity rows' sums.
pub(crate) struct Measured {
    pub methods: Vec<ErrorAccum>,
    pub tensor: ErrorAccum,
    pub groups: GroupAccums,
    /// The validation's sums, with a probe.
    pub probe: Option<ProbeSums>,
    pub formats: FormatAccums,
}

/// What pass 3 measures beside the chosen ranges; each part is optional.
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    /// The granularity rows.
    pub plan: Option<&'a Plan>,
    /// The format rows.
    pub formats: Option<&'a FormatPlan>,
    /// The validation's quantizers: some on every value, some on the values of one fold.
    pub probe: Option<&'a Probe>,
    /// Pass 2's per-bin sums: the quantizers they can measure are measured from them.
    pub bins: Option<&'a Bins>,
}

/// Pass 3 over a layer's open parts: every chosen range's error, and what `extras` asks for.
pub(crate) fn measure_parts_with(
    parts: &[OpenArray],
    chosen: &[Chosen],
    extras: Extras<'_>,
    opts: &Options,
    progress: &Progress,
) -> Result<Measured, LoadError> {
    let Extras {
        plan,
        formats,
        probe,
        bins,
    } = extras;
    // Methods often agree (percentile 99.999 is min-max on small tensors): measure each
    // distinct quantizer once. The per-tensor grid is symmetric min-max: free when the
    // symmetric minmax method is among them.
    let mut unique: Vec<QParams> = Vec::new();
    let mut slot_of = |q: QParams| {
        unique.iter().position(|u| *u == q).unwrap_or_else(|| {
            unique.push(q);
            unique.len() - 1
        })
    };
    let slot: Vec<usize> = chosen.iter().map(|c| slot_of(c.q)).collect();
    let tensor_slot = plan.map(|p| slot_of(p.tensor));
    let probe_slot: Vec<usize> =
        probe.map_or(Vec::new(), |p| p.all.iter().map(|&q| slot_of(q)).collect());
    let grouped = plan.filter(|p| p.has_groups());
    let batching = probe.map(|_| Batches::of(parts, opts));
    let mut total = vec![ErrorAccum::default(); unique.len()];
    let mut sums = probe.map(ProbeSums::new);
    let engine = bins.and_then(|b| Engine::plan(b, &unique, binned::MAX_REVISITED_SHARE));
    let by_value: Vec<usize> = (0..unique.len())
        .filter(|i| engine.as_ref().is_none_or(|e| !e.which().contains(i)))
        .collect();
    let mut binned_chunks = Vec::new();
    let mut groups = GroupAccums::default();
    let formats = formats.filter(|f| !f.is_empty());
    let mut format_sums = FormatAccums::default();
    for (pi, part) in parts.iter().enumerate() {
        let (chunk, _) = chunk_len(&part.info, opts);
        let partials = part.map_chunks(chunk, &progress.cancel, |first, values| {
            let g = grouped.map(|p| p.measure_chunk(pi, first, values));
            let f = formats.map(|p| p.measure_chunk(pi, first, values));
            let mut r = vec![ErrorAccum::default(); by_value.len()];
            let mut b = engine.as_ref().map(|e| e.chunk_sums());
            let mut folds = probe.map(ProbeSums::new);
            let runs = match (probe, &batching) {
                (Some(p), Some(b)) => p.fold_runs(b, pi, first, values.len()),
                _ => Vec::new(),
            };
            // Each block is widened once, then every quantizer reads it while it is in L1.
            PREPARED.with_borrow_mut(|p| {
                for (bi, block) in values.chunks(metrics::BLOCK).enumerate() {
                    p.fill(block);
                    for (acc, &i) in r.iter_mut().zip(&by_value) {
                        acc.add_prepared(&unique[i], p);
                    }
                    if let (Some(e), Some(b)) = (&engine, &mut b) {
                        e.block(p, b);
                    }
                    if let (Some(probe), Some(f)) = (probe, folds.as_mut()) {
                        probe.add_block(f, &runs, bi * metrics::BLOCK, block, p);
                    }
                }
            });
            progress
                .done
                .fetch_add(values.len() as u64, Ordering::Relaxed);
            (r, b, g, folds, f)
        })?;
        for (p, b, g, folds, f) in partials {
            for (&i, a) in by_value.iter().zip(&p) {
                total[i].merge(a);
            }
            binned_chunks.extend(b);
            if let Some(g) = g {
                groups.merge(&g);
            }
            if let (Some(s), Some(f)) = (sums.as_mut(), folds) {
                s.merge(&f);
            }
            if let Some(f) = f {
                format_sums.merge(&f);
            }
        }
    }
    if let Some(e) = &engine {
        for (&i, a) in e.which().iter().zip(e.finish(&binned_chunks)) {
            total[i] = a;
        }
    }
    if let Some(s) = sums.as_mut() {
        s.all = probe_slot.iter().map(|&i| total[i]).collect();
    }
    Ok(Measured {
        methods: slot.into_iter().map(|i| total[i]).collect(),
        tensor: tensor_slot.map(|i| total[i]).unwrap_or_default(),
        groups,
        probe: sums,
        formats: format_sums,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::source::DType;

    #[test]
    fn finite_extremes_skip_non_finite_values() {
        let mut v: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.77).sin() * 5.0).collect();
        v[17] = f32::NAN;
        v[400] = f32::INFINITY;
        v[999] = f32::NEG_INFINITY;
        for len in [0, 3, 8, 17, 18, 1001] {
            let fin = v[..len].iter().filter(|x| x.is_finite());
            let want = fin.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
            assert_eq!(finite_extremes(&v[..len]), want, "len {len}");
        }
        assert_eq!(
            finite_extremes(&[f32::NAN; 9]),
            (f32::INFINITY, f32::NEG_INFINITY)
        );
    }

    #[test]
    fn row_sums_count_rows_over_the_fp16_square_limit() {
        // Rows of 10: Σx² = 10·v² with v = 80 → 64000 (< 65520), v = 81 → 65610 (≥).
        let mut v = vec![80.0f32; 30];
        v[10..20].fill(81.0);
        v[25] = f32::NAN;
        let (rows, over, max) = row_sums(&v, 10);
        assert_eq!((rows, over), (3, 1));
        assert_eq!(max, 65610.0);
    }

    /// The AVX2 kernels against their portable twins, directly.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_extremes_and_row_sums_match_the_portable_lanes() {
        use crate::simd::testing;
        let Some(cpu) = simd::avx2() else {
            // No AVX2 on this CPU: nothing to compare.
            return;
        };
        for (seed, &len) in testing::LENGTHS.iter().enumerate() {
            let v = testing::values(len, seed as u64);
            let (a, b) = finite_extremes_avx2(cpu, &v);
            let (c, d) = finite_extremes_lanes(&v);
            assert_eq!(
                testing::bits32(&[a, b]),
                testing::bits32(&[c, d]),
                "len {len}"
            );
            // Rows of every length up to past a few lanes, and one row of everything.
            for n in (1..=13).chain([len.max(1)]) {
                let (r, o, m) = row_sums_avx2(cpu, &v, n);
                let (rp, op, mp) = row_sums_lanes(&v, n);
                assert_eq!(
                    (r, o, m.to_bits()),
                    (rp, op, mp.to_bits()),
                    "len {len} rows of {n}"
                );
            }
        }
        // All non-finite: no extremes.
        let nan = [f32::NAN; 17];
        assert_eq!(finite_extremes_avx2(cpu, &nan), finite_extremes_lanes(&nan));
        // Zeros of both signs in every arrangement (extremes 0 or 1), lanes and tail.
        for pattern in 0u32..1 << 10 {
            let v: Vec<f32> = (0..10)
                .map(|i| if pattern >> i & 1 == 1 { -0.0 } else { 0.0 })
                .chain([1.0; 9])
                .collect();
            for len in [8, 9, 10, 17, 19] {
                let (a, b) = finite_extremes_avx2(cpu, &v[..len]);
                let (c, d) = finite_extremes_lanes(&v[..len]);
                let what = format!("{pattern:010b} len {len}");
                assert_eq!(testing::bits32(&[a, b]), testing::bits32(&[c, d]), "{what}");
            }
        }
    }

    #[test]
    fn ordered_keys_sort_like_floats() {
        let v = [-f32::INFINITY, -3.5, -0.0, 0.0, 1e-30, 2.0, f32::INFINITY];
        for w in v.windows(2) {
            assert!(ordered(w[0]) <= ordered(w[1]));
            assert_eq!(unordered(ordered(w[0])), w[0]);
        }
    }

    #[test]
    fn batch_runs_follow_c_and_fortran_order() {
        let mut info = ArrayInfo {
            dtype: DType::F32,
            big_endian: false,
            shape: vec![3, 2],
            fortran_order: false,
            descr: "<f4".into(),
        };
        let values = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let ex = BatchExtremes::new(3);
        update_batches(&ex, BatchMap::new(&info, Some(0)).unwrap(), 0, &values);
        assert_eq!(
            ex.into_pairs(),
            vec![(0.0, 1.0), (10.0, 11.0), (20.0, 21.0)]
        );
        // Fortran order: file order walks axis 0 fastest, so batch = index % 3.
        info.fortran_order = true;
        let values = [0.0, 10.0, 20.0, 1.0, 11.0, 21.0];
        let ex = BatchExtremes::new(3);
        let m = BatchMap::new(&info, Some(0)).unwrap();
        update_batches(&ex, m, 0, &values[..4]);
        update_batches(&ex, m, 4, &values[4..]);
        assert_eq!(
            ex.into_pairs(),
            vec![(0.0, 1.0), (10.0, 11.0), (20.0, 21.0)]
        );
    }
}
