//! The three passes over a layer's chunks: 1 (moments, casts, batch extremes, row sums),
//! 2 (the two fine histograms) and 3 (every chosen quantizer's exact error).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::calib::Chosen;
use crate::calib::QParams;
use crate::histogram::{PairCounter, PairTotals};
use crate::source::{ArrayInfo, LayerSpec, LoadError, OpenArray};

use super::cast::{self, CastAccum, CastType};
use super::metrics::{self, ErrorAccum};
use super::options::{FINE_BINS, MAX_BATCHES, Options, Progress};
use super::profile::Profile;
use super::stats::Moments;

thread_local! {
    /// The metrics pass's widened block per worker thread.
    static PREPARED: std::cell::RefCell<metrics::Prepared> = Default::default();
}

/// Where a flat element index falls along the batch axis: runs of `run` consecutive
/// elements share a batch, and batches repeat every `count` runs.
#[derive(Clone, Copy, Debug)]
struct BatchMap {
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
    let batch_maps: Vec<Option<BatchMap>> = parts
        .iter()
        .map(|p| {
            if multi {
                None
            } else {
                BatchMap::new(&p.info, opts.batch_axis)
            }
        })
        .collect();
    let n_batches = if multi {
        parts.len()
    } else {
        batch_maps[0].map_or(1, |m| m.count)
    };
    let extremes = BatchExtremes::new(n_batches);

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
    for part in parts {
        let (chunk, _) = chunk_len(&part.info, opts);
        part.map_chunks(chunk, &progress.cancel, |_, values| {
            pool.with(make, |c| {
                if c.needs_fold(values.len())
                    && let Ok(mut t) = totals.lock()
                {
                    t.fold(c);
                }
                c.add(values);
            });
            progress
                .done
                .fetch_add(values.len() as u64, Ordering::Relaxed);
        })?;
    }
    let mut totals = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    for c in pool.into_items() {
        totals.take(c);
    }
    let (hist, abs_hist) = totals.finish();

    Ok(Profile {
        info,
        parts: parts.len(),
        moments,
        casts,
        batches: extremes.into_pairs(),
        rows,
        hist,
        abs_hist,
        f64_overflows,
        trailing_bytes,
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
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { finite_extremes_avx2(values) };
    }
    finite_extremes_lanes(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn finite_extremes_avx2(values: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let (inf, ninf) = (
        _mm256_set1_ps(f32::INFINITY),
        _mm256_set1_ps(f32::NEG_INFINITY),
    );
    let (mut lo, mut hi) = (inf, ninf);
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 f32; the load is unaligned.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs), inf);
        lo = _mm256_min_ps(lo, _mm256_blendv_ps(inf, v, fin));
        hi = _mm256_max_ps(hi, _mm256_blendv_ps(ninf, v, fin));
    }
    let (mut l, mut h) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: both arrays hold 8 f32; the stores are unaligned.
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
    }
    let (tl, th) = finite_extremes_lanes(chunks.remainder());
    (
        l.iter().fold(tl, |a, &b| a.min(b)),
        h.iter().fold(th, |a, &b| a.max(b)),
    )
}

#[inline(always)]
fn finite_extremes_lanes(values: &[f32]) -> (f32, f32) {
    const L: usize = 8;
    let mut lo = [f32::INFINITY; L];
    let mut hi = [f32::NEG_INFINITY; L];
    let mut chunks = values.chunks_exact(L);
    for c in &mut chunks {
        for k in 0..L {
            let v = c[k];
            let fin = v.abs() < f32::INFINITY;
            let a = if fin { v } else { f32::INFINITY };
            let b = if fin { v } else { f32::NEG_INFINITY };
            lo[k] = if a < lo[k] { a } else { lo[k] };
            hi[k] = if b > hi[k] { b } else { hi[k] };
        }
    }
    for &v in chunks.remainder() {
        if v.is_finite() {
            lo[0] = lo[0].min(v);
            hi[0] = hi[0].max(v);
        }
    }
    let lo = lo.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (lo, hi)
}

/// (rows, rows with Σx² ≥ 65520, largest Σx²) over complete rows of length `n`.
fn row_sums(values: &[f32], n: usize) -> (u64, u64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { row_sums_avx2(values, n) };
    }
    row_sums_lanes(values, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_sums_avx2(values: &[f32], n: usize) -> (u64, u64, f64) {
    row_sums_lanes(values, n)
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
        out.1 += u64::from(s >= 65520.0);
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
    // Methods often agree (percentile 99.999 is min-max on small tensors): measure each
    // distinct quantizer once.
    let mut unique: Vec<QParams> = Vec::new();
    let slot: Vec<usize> = chosen
        .iter()
        .map(|c| {
            unique.iter().position(|u| *u == c.q).unwrap_or_else(|| {
                unique.push(c.q);
                unique.len() - 1
            })
        })
        .collect();
    let mut total = vec![ErrorAccum::default(); unique.len()];
    for part in parts {
        let (chunk, _) = chunk_len(&part.info, opts);
        let partials = part.map_chunks(chunk, &progress.cancel, |_, values| {
            let mut r = vec![ErrorAccum::default(); unique.len()];
            // Each block is widened once, then every quantizer reads it while it is in L1.
            PREPARED.with_borrow_mut(|p| {
                for block in values.chunks(metrics::BLOCK) {
                    p.fill(block);
                    for (acc, q) in r.iter_mut().zip(&unique) {
                        acc.add_prepared(q, p);
                    }
                }
            });
            progress
                .done
                .fetch_add(values.len() as u64, Ordering::Relaxed);
            r
        })?;
        for p in partials {
            for (t, a) in total.iter_mut().zip(&p) {
                t.merge(a);
            }
        }
    }
    Ok(slot.into_iter().map(|i| total[i]).collect())
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
