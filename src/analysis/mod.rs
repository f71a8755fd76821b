//! The analysis of a layer: streaming passes over its values and the one result type,
//! [`Analysis`], that every front end (report formats, exports, TUI) only views.
//!
//! Passes, each a parallel fold over chunks of a few MiB (no pass holds a whole tensor):
//! 1. profile: moments, NaN/Inf, casts, per-batch extremes, row sums of squares;
//! 2. histograms of x over `[min, max]` and of |x| over `[0, max|x|]` (65536 bins; the 2048-bin
//!    histograms the searches use are exact sums of 32 fine bins);
//! 3. metrics: every method's quantizer evaluated on each chunk while it is hot.
//!
//! The calibrators ([`crate::calib`]) only see the merged profile, never raw values.

pub mod cast;
pub mod histogram;
pub mod metrics;
pub mod stats;
pub mod warnings;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::{Serialize, Serializer};

use crate::calib::{self, QParams, Scheme, Search};
use crate::source::{ArrayInfo, DType, LayerSpec, Limits, LoadError, OpenArray};
use cast::{CastAccum, CastAudit, CastType};
use histogram::{Histogram, PackedHistogram, PairCounter, PairTotals};
use metrics::{ErrorAccum, Metrics};
use stats::{Moments, Percentiles, STAT_PERCENTILES, Stats, percentile_key};
use warnings::{Thresholds, Warning, WarningKind, fmt_count};

/// Version of the JSON shape (see README "JSON output").
pub const JSON_VERSION: u32 = 1;
/// Bins of the fine histograms (percentiles, display).
pub const FINE_BINS: usize = 65536;
/// Bins of the histograms the entropy and MSE searches use (as the references).
pub const SEARCH_BINS: usize = 2048;
/// Most batches the moving average tracks along the batch axis.
pub const MAX_BATCHES: usize = 1 << 22;

/// Everything that changes what is computed.
#[derive(Clone, Debug)]
pub struct Options {
    pub bits: u8,
    pub scheme: Scheme,
    /// Percentiles for the percentile method, in percent (default 99.9, 99.99, 99.999).
    pub percentiles: Vec<f64>,
    pub ema_constant: f64,
    /// Axis that splits a tensor into calibration batches (None: the whole tensor is one batch).
    pub batch_axis: Option<usize>,
    pub thresholds: Thresholds,
    /// Elements per chunk (the unit of streaming and of parallel work).
    pub chunk_elems: usize,
    pub limits: Limits,
    /// Keep each layer's profile (≈1 MiB of histograms) in the result, for front ends that
    /// draw histograms or re-run; a headless report drops them so memory does not grow with
    /// the layer count.
    pub keep_profiles: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 8,
            scheme: Scheme::Symmetric,
            percentiles: vec![99.9, 99.99, 99.999],
            ema_constant: 0.01,
            batch_axis: Some(0),
            thresholds: Thresholds::default(),
            chunk_elems: 1 << 20,
            limits: Limits::default(),
            keep_profiles: true,
        }
    }
}

/// Shared progress counters a front end may poll while the analysis runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Elements to process across all passes (grows as layers are opened).
    pub total: AtomicU64,
    pub done: AtomicU64,
    pub layers_done: AtomicUsize,
    pub cancel: AtomicBool,
}

/// The result of analysing all layers.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    pub version: u32,
    pub settings: Settings,
    pub layers: Vec<LayerAnalysis>,
}

/// The options that shaped the numbers, echoed in every output.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub bits: u8,
    pub scheme: Scheme,
    pub percentiles: Vec<f64>,
    pub ema_constant: f64,
    pub batch_axis: Option<usize>,
    pub sqnr_floor_db: f64,
}

impl Settings {
    pub fn of(o: &Options) -> Settings {
        Settings {
            bits: o.bits,
            scheme: o.scheme,
            percentiles: o.percentiles.clone(),
            ema_constant: o.ema_constant,
            batch_axis: o.batch_axis,
            sqnr_floor_db: o.thresholds.sqnr_floor_db,
        }
    }
}

/// A calibration method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// One method's range on one layer and its exact error there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodResult {
    pub method: MethodKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub scheme: Scheme,
    pub bits: u8,
    /// The range the method chose (affine: before the zero point widens it to contain 0).
    pub range: [f64; 2],
    pub scale: f64,
    pub zero_point: i64,
    /// Candidate ranges the method's search evaluated (1 for closed-form methods).
    pub candidates: usize,
    pub metrics: Metrics,
}

impl MethodResult {
    /// `minmax`, `percentile 99.99`, ...: the label front ends show.
    pub fn label(&self) -> String {
        match self.percentile {
            Some(p) => format!("{} {}", self.method.name(), p),
            None => self.method.name().to_string(),
        }
    }
}

/// Everything we know about one layer. `error` set means the layer could not be analysed
/// (its message names the file); the other fields then hold what was known before it failed.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAnalysis {
    pub name: String,
    pub source: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub stats: Option<Stats>,
    pub casts: Vec<CastAudit>,
    pub methods: Vec<MethodResult>,
    /// The method with the best SQNR (ties: the narrower range).
    pub recommended: Option<String>,
    /// The best SQNR any method reached: low means the layer is sensitive to quantization.
    #[serde(serialize_with = "ser_opt_num")]
    pub sensitivity_sqnr_db: Option<f64>,
    pub warnings: Vec<Warning>,
    /// Facts about how the numbers were made (float64 narrowed, layout, ...).
    pub notes: Vec<String>,
    pub error: Option<String>,
    /// The data behind the numbers (histograms, packed) for front ends that draw them or
    /// re-run with other options; only with [`Options::keep_profiles`].
    #[serde(skip)]
    pub profile: Option<Arc<KeptProfile>>,
}

impl LayerAnalysis {
    fn failed(spec: &LayerSpec, e: &LoadError) -> LayerAnalysis {
        LayerAnalysis {
            name: spec.name.clone(),
            source: spec.source(),
            shape: Vec::new(),
            dtype: String::new(),
            stats: None,
            casts: Vec::new(),
            methods: Vec::new(),
            recommended: None,
            sensitivity_sqnr_db: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            error: Some(e.to_string()),
            profile: None,
        }
    }

    /// A layer for an input that failed before any layer could be formed (e.g. a bad folder).
    pub fn from_error(e: &LoadError) -> LayerAnalysis {
        let spec = LayerSpec {
            name: e.path.clone(),
            parts: Vec::new(),
        };
        let mut l = LayerAnalysis::failed(&spec, e);
        l.source = e.path.clone();
        l
    }

    pub fn recommended_method(&self) -> Option<&MethodResult> {
        let label = self.recommended.as_deref()?;
        self.methods.iter().find(|m| m.label() == label)
    }
}

/// Options-independent facts about a layer from passes 1 and 2: kept so a change of scheme,
/// bits or percentiles recalibrates without re-reading for them. `H` is how the two fine
/// histograms are held: dense while a layer is analysed, packed in a [`KeptProfile`].
#[derive(Clone, Debug)]
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
    pub f64_overflows: u64,
    pub trailing_bytes: u64,
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
            f64_overflows: self.f64_overflows,
            trailing_bytes: self.trailing_bytes,
        }
    }
}

impl Profile {
    pub fn pack(&self) -> KeptProfile {
        self.map_hists(PackedHistogram::pack)
    }
}

impl KeptProfile {
    pub fn unpack(&self) -> Profile {
        self.map_hists(PackedHistogram::unpack)
    }
}

/// Serializes non-finite numbers as strings (`"inf"`, `"-inf"`, `"nan"`): JSON has none.
pub fn ser_num<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

fn ser_opt_num<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_num(v, s),
        None => s.serialize_none(),
    }
}

/// Analyses every layer (in parallel) and turns discovery errors into errored layers.
pub fn analyze(
    specs: &[LayerSpec],
    errors: &[LoadError],
    opts: &Options,
    progress: &Progress,
) -> Analysis {
    let mut layers: Vec<LayerAnalysis> = specs
        .par_iter()
        .map(|spec| {
            let l = analyze_layer(spec, opts, progress);
            progress.layers_done.fetch_add(1, Ordering::Relaxed);
            l
        })
        .collect();
    layers.extend(errors.iter().map(LayerAnalysis::from_error));
    Analysis {
        version: JSON_VERSION,
        settings: Settings::of(opts),
        layers,
    }
}

/// Analyses one layer; a failure is recorded in the result, never raised.
pub fn analyze_layer(spec: &LayerSpec, opts: &Options, progress: &Progress) -> LayerAnalysis {
    let parts = open_layer(spec, opts, &progress.cancel);
    match parts.and_then(|parts| profile_parts(&parts, opts, progress).map(|p| (parts, p))) {
        Ok((parts, profile)) => {
            let mut layer = finish_with(spec, &profile, Some(&parts), opts, progress);
            layer.profile = opts.keep_profiles.then(|| Arc::new(profile.pack()));
            layer
        }
        Err(e) => LayerAnalysis::failed(spec, &e),
    }
}

/// Opens a layer's parts for its three passes. A layer that fits in one chunk is read once and
/// kept (a folder of small layers otherwise pays three opens and reads per file); larger ones
/// are streamed on every pass. Dropping a resident part hands its buffer to the thread's next
/// read.
pub fn open_layer(
    spec: &LayerSpec,
    opts: &Options,
    cancel: &AtomicBool,
) -> Result<Vec<OpenArray>, LoadError> {
    let parts = open_parts(spec, opts)?;
    let total: usize = parts.iter().map(|p| p.info.len()).sum();
    if total <= opts.chunk_elems {
        parts.into_iter().map(|p| p.into_resident(cancel)).collect()
    } else {
        Ok(parts)
    }
}

/// Calibrates and measures a layer from its profile (the metrics pass reads the file again).
/// `kept` is the packed profile to attach to the result (with [`Options::keep_profiles`]):
/// a re-run passes the one it unpacked, so nothing is packed twice.
pub fn finish_layer(
    spec: &LayerSpec,
    profile: &Profile,
    kept: Arc<KeptProfile>,
    opts: &Options,
    progress: &Progress,
) -> LayerAnalysis {
    let mut layer = finish_with(spec, profile, None, opts, progress);
    layer.profile = opts.keep_profiles.then_some(kept);
    layer
}

/// [`finish_layer`] with the layer's data already open (or opened here if `None`), without
/// the profile attached.
fn finish_with(
    spec: &LayerSpec,
    profile: &Profile,
    parts: Option<&[OpenArray]>,
    opts: &Options,
    progress: &Progress,
) -> LayerAnalysis {
    let mut layer = describe(spec, profile, opts);
    if profile.moments.n == 0 {
        // An empty array or one of only NaN/Inf: there is no range to calibrate.
        layer
            .notes
            .push("no finite values: nothing to calibrate".into());
        return layer;
    }
    let chosen = calibrate(profile, opts);
    let accums = match parts {
        Some(parts) => measure_parts(parts, &chosen, opts, progress),
        None => measure(spec, &chosen, opts, progress),
    };
    match accums {
        Ok(accums) => {
            layer.methods = chosen
                .iter()
                .zip(accums)
                .map(|(c, a)| MethodResult {
                    method: c.method,
                    percentile: c.percentile,
                    scheme: opts.scheme,
                    bits: opts.bits,
                    range: [c.search.lo, c.search.hi],
                    scale: c.q.scale,
                    zero_point: c.q.zero_point,
                    candidates: c.search.candidates,
                    metrics: a.finish(),
                })
                .collect();
            recommend(&mut layer);
            method_warnings(&mut layer, profile, opts);
        }
        Err(e) => layer.error = Some(e.to_string()),
    }
    layer
}

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
struct Pool<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Pool<T> {
    fn new() -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
        }
    }

    fn with(&self, make: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
        let taken = self.items.lock().ok().and_then(|mut v| v.pop());
        let mut item = taken.unwrap_or_else(make);
        f(&mut item);
        if let Ok(mut v) = self.items.lock() {
            v.push(item);
        }
    }

    fn into_items(self) -> Vec<T> {
        self.items.into_inner().unwrap_or_default()
    }
}

fn open_parts(spec: &LayerSpec, opts: &Options) -> Result<Vec<OpenArray>, LoadError> {
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
fn profile_parts(
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

/// One method's chosen range and its quantizer.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub method: MethodKind,
    pub percentile: Option<f64>,
    pub search: Search,
    pub q: QParams,
}

/// Runs every calibrator on the profile.
pub fn calibrate(p: &Profile, opts: &Options) -> Vec<Chosen> {
    let (min, max) = (f64::from(p.moments.min), f64::from(p.moments.max));
    let (min, max) = if p.moments.n > 0 {
        (min, max)
    } else {
        (0.0, 0.0)
    };
    let absmax = min.abs().max(max.abs());
    let sym = opts.scheme == Scheme::Symmetric;
    let factor = FINE_BINS / SEARCH_BINS;
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
    let ema = calib::ema::ema(&p.batches, opts.ema_constant).map_or(minmax, |s| {
        if sym {
            let a = s.lo.abs().max(s.hi.abs());
            Search { lo: -a, hi: a, ..s }
        } else {
            s
        }
    });
    push(MethodKind::Ema, None, ema);
    // A scheme's searches read one of the two histograms: coarsen only that one (each is a
    // sweep of 65536 bins).
    let h = if sym {
        p.abs_hist.coarsen(factor)
    } else {
        p.hist.coarsen(factor)
    };
    if sym {
        push(
            MethodKind::Entropy,
            None,
            calib::entropy::symmetric(&h, opts.bits),
        );
        push(MethodKind::Mse, None, calib::mse::symmetric(&h, opts.bits));
    } else {
        push(
            MethodKind::Entropy,
            None,
            calib::entropy::affine(&h, opts.bits),
        );
        push(MethodKind::Mse, None, calib::mse::affine(&h, opts.bits));
    }
    let pcts = if sym {
        calib::percentile::symmetric(&p.abs_hist, &opts.percentiles)
    } else {
        calib::percentile::affine(&p.hist, &opts.percentiles)
    };
    for (&pc, s) in opts.percentiles.iter().zip(pcts) {
        push(MethodKind::Percentile, Some(pc), s);
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
fn measure_parts(
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

/// Statistics, casts and the profile's warnings (those that do not depend on the methods).
fn describe(spec: &LayerSpec, p: &Profile, opts: &Options) -> LayerAnalysis {
    let m = &p.moments;
    let finite = m.n;
    let (min, max) = if finite > 0 {
        (f64::from(m.min), f64::from(m.max))
    } else {
        (f64::NAN, f64::NAN)
    };
    let pct = |h: &Histogram| {
        let ranks: Vec<u64> = STAT_PERCENTILES
            .iter()
            .map(|&q| calib::percentile::nearest_rank(q, finite))
            .collect();
        STAT_PERCENTILES
            .iter()
            .zip(h.bins_of_ranks(&ranks, finite))
            .map(|(&q, b)| {
                // Any value of the rank's bin is within the resolution; the first bin reports
                // its lower edge (the exact min, e.g. the zeros of a ReLU) and the rest their
                // upper edge.
                let v = b.map_or(f64::NAN, |b| if b == 0 { h.lo } else { h.edge(b + 1) });
                (percentile_key(q), v)
            })
            .collect()
    };
    let stats = Stats {
        count: m.count,
        finite,
        nan: m.nan,
        pos_inf: m.pos_inf,
        neg_inf: m.neg_inf,
        min,
        max,
        absmax: min.abs().max(max.abs()),
        mean: if finite > 0 { m.mean } else { f64::NAN },
        std: m.std(),
        kurtosis: m.kurtosis(),
        zero_fraction: if finite > 0 {
            m.zeros as f64 / finite as f64
        } else {
            0.0
        },
        percentiles: Percentiles {
            resolution_x: p.hist.width(),
            resolution_abs: p.abs_hist.width(),
            x: pct(&p.hist),
            abs: pct(&p.abs_hist),
        },
    };
    let casts: Vec<CastAudit> = p.casts.iter().map(|(t, a)| a.finish(*t)).collect();
    let mut shape = p.info.shape.clone();
    if p.parts > 1 {
        shape.insert(0, p.parts);
    }
    let mut layer = LayerAnalysis {
        name: spec.name.clone(),
        source: spec.source(),
        shape,
        dtype: p.info.dtype.name().to_string(),
        stats: Some(stats),
        casts,
        methods: Vec::new(),
        recommended: None,
        sensitivity_sqnr_db: None,
        warnings: Vec::new(),
        notes: Vec::new(),
        error: None,
        profile: None,
    };
    profile_warnings(&mut layer, p, opts);
    layer
}

/// `1 value`, `2 values`, `1 value has`, `2 values have`: counts in messages read right.
fn values(n: u64, noun: &str) -> String {
    let plural = match noun.split_once(' ') {
        Some((w, "has")) => format!("{w}s have"),
        _ => format!("{noun}s"),
    };
    format!(
        "{} {}",
        fmt_count(n),
        if n == 1 { noun.to_string() } else { plural }
    )
}

fn profile_warnings(layer: &mut LayerAnalysis, p: &Profile, opts: &Options) {
    let m = &p.moments;
    let t = &opts.thresholds;
    let w = &mut layer.warnings;
    let notes = &mut layer.notes;
    if p.parts > 1 {
        notes.push(format!(
            "{} batch files, each one calibration batch",
            p.parts
        ));
    } else if p.batches.len() > 1 {
        notes.push(format!(
            "{} batches along axis {}",
            p.batches.len(),
            opts.batch_axis.unwrap_or(0)
        ));
    }
    if p.info.fortran_order {
        notes.push("Fortran order (per-tensor results do not depend on it)".into());
    }
    let bad = m.nan + m.pos_inf + m.neg_inf;
    if bad > 0 {
        w.push(Warning::new(
            WarningKind::NanInf,
            bad as f64,
            format!(
                "{} NaN, {} +Inf, {} -Inf: left out of every range and metric; find the op that makes them",
                fmt_count(m.nan),
                fmt_count(m.pos_inf),
                fmt_count(m.neg_inf)
            ),
        ));
    }
    if p.info.dtype == DType::F64 {
        notes.push("float64 input narrowed to float32 for analysis".into());
        if p.f64_overflows > 0 {
            w.push(Warning::new(
                WarningKind::Float64Narrowed,
                p.f64_overflows as f64,
                format!(
                    "{} overflow float32 (became ±inf)",
                    values(p.f64_overflows, "float64 value")
                ),
            ));
        }
    }
    if p.trailing_bytes > 0 {
        w.push(Warning::new(
            WarningKind::TrailingBytes,
            p.trailing_bytes as f64,
            format!(
                "{} bytes after the data that the header does not account for (ignored)",
                fmt_count(p.trailing_bytes)
            ),
        ));
    }
    for (t_cast, acc) in &p.casts {
        match t_cast {
            CastType::Float16 => {
                if acc.overflow > 0 {
                    w.push(Warning::new(
                        WarningKind::Fp16Overflow,
                        acc.overflow as f64,
                        format!(
                            "{} beyond ±65504 become ±inf in float16 (max |x| {:.4e}); keep this op in float32 or bfloat16",
                            values(acc.overflow, "value"),
                            p.absmax()
                        ),
                    ));
                }
                let lost = acc.underflow + acc.subnormal;
                if m.n > 0 && lost as f64 / m.n as f64 > t.fp16_underflow_share {
                    w.push(Warning::new(
                        WarningKind::Fp16Underflow,
                        lost as f64,
                        format!(
                            "{} flush to zero and {} become subnormal in float16 (|x| < 6.1e-5); scale them up or keep float32",
                            values(acc.underflow, "value"),
                            fmt_count(acc.subnormal)
                        ),
                    ));
                }
            }
            CastType::Bfloat16 => {
                let a = acc.finish(CastType::Bfloat16);
                if a.sqnr_db < t.bf16_sqnr_db {
                    w.push(Warning::new(
                        WarningKind::Bf16LowSqnr,
                        a.sqnr_db,
                        format!("bfloat16 SQNR only {:.1} dB", a.sqnr_db),
                    ));
                }
            }
        }
    }
    if m.square_overflow > 0 {
        w.push(Warning::new(
            WarningKind::Fp16SquareOverflow,
            m.square_overflow as f64,
            format!(
                "{} |x| > 255.9, so x² overflows float16: a LayerNorm/RMSNorm variance computed in float16 becomes inf",
                values(m.square_overflow, "value has")
            ),
        ));
    }
    match p.rows {
        Some((rows, over, max_sum)) if over > 0 => w.push(Warning::new(
            WarningKind::Fp16SumSquaresOverflow,
            over as f64,
            format!(
                "{} of {} rows have Σx² over the last axis > 65504 (max {:.4e}): a float16 norm over them overflows",
                fmt_count(over),
                fmt_count(rows),
                max_sum
            ),
        )),
        Some(_) => {}
        None => {
            // Rows not contiguous (Fortran order or a huge last axis): estimate from the RMS.
            let n = p.info.shape.last().copied().unwrap_or(1) as f64;
            if m.n > 0 && p.info.shape.len() >= 2 {
                let mean_row = n * m.sum_sq / m.n as f64;
                if mean_row >= 65520.0 {
                    w.push(Warning::new(
                        WarningKind::Fp16SumSquaresOverflow,
                        mean_row,
                        format!(
                            "the mean Σx² over the last axis is {mean_row:.4e} > 65504: a float16 norm over it overflows"
                        ),
                    ));
                }
            }
        }
    }
    let range = if opts.scheme == Scheme::Symmetric {
        p.absmax()
    } else {
        f64::from(m.max) - f64::from(m.min)
    };
    if m.n > 0 && range < calib::scheme::ZERO_RANGE {
        w.push(Warning::new(
            WarningKind::ZeroRange,
            range,
            "the range is (nearly) zero: scale falls back to 1; is this layer dead?",
        ));
    }
    if m.n > 0 && m.min >= 0.0 && opts.scheme == Scheme::Symmetric && m.max > 0.0 {
        w.push(Warning::new(
            WarningKind::OneSided,
            f64::from(m.min),
            "all values ≥ 0 under a symmetric scheme: the negative half of the grid is wasted (one bit); use --scheme affine or an unsigned type",
        ));
    }
    let abs_pct = |k: &str| {
        layer
            .stats
            .as_ref()
            .and_then(|s| s.percentiles.abs.get(k).copied())
            .unwrap_or(f64::NAN)
    };
    let (p99, p9999) = (abs_pct("p99"), abs_pct("p99.99"));
    let absmax = p.absmax();
    let kurt = m.kurtosis();
    if p9999 > 0.0 && (absmax / p9999 > t.outlier_ratio || kurt > t.kurtosis) {
        let qmax = match opts.scheme {
            Scheme::Symmetric => (1u64 << (opts.bits - 1)) - 1,
            Scheme::Affine => (1u64 << opts.bits) - 1,
        };
        // Levels min-max leaves to the bulk of the data: |x| ≤ P maps to ceil(P/max·qmax).
        let levels = |pv: f64| ((pv / absmax) * qmax as f64).ceil().max(1.0) as u64;
        w.push(Warning::new(
            WarningKind::HeavyOutliers,
            absmax / p9999,
            format!(
                "max |x| is {:.1}× the 99.99th percentile of |x| and kurtosis is {:.1}: min-max \
                 puts 99% of values on {} and 99.99% on {} of {} levels; clip with \
                 entropy/MSE/percentile",
                absmax / p9999,
                kurt,
                levels(p99),
                levels(p9999),
                qmax
            ),
        ));
    }
}

fn recommend(layer: &mut LayerAnalysis) {
    let best = layer
        .methods
        .iter()
        .filter(|m| !m.metrics.sqnr_db.is_nan())
        .min_by(|a, b| {
            b.metrics
                .sqnr_db
                .total_cmp(&a.metrics.sqnr_db)
                .then((a.range[1] - a.range[0]).total_cmp(&(b.range[1] - b.range[0])))
        });
    if let Some(b) = best {
        layer.recommended = Some(b.label());
        layer.sensitivity_sqnr_db = Some(b.metrics.sqnr_db);
    }
}

fn method_warnings(layer: &mut LayerAnalysis, p: &Profile, opts: &Options) {
    let t = &opts.thresholds;
    for m in &layer.methods {
        let c = m.metrics.clipped();
        if c > t.clip_share {
            layer.warnings.push(Warning::new(
                WarningKind::Clipping,
                c,
                format!(
                    "{} clips {:.2}% of values ({:.2}% below, {:.2}% above)",
                    m.label(),
                    100.0 * c,
                    100.0 * m.metrics.clipped_below,
                    100.0 * m.metrics.clipped_above
                ),
            ));
        }
    }
    if let Some(s) = layer.sensitivity_sqnr_db
        && s < t.sqnr_floor_db
    {
        layer.warnings.push(Warning::new(
            WarningKind::LowSqnr,
            s,
            format!(
                "best SQNR {:.1} dB < {:.0} dB at {} bits: keep this layer in higher precision",
                s, t.sqnr_floor_db, opts.bits
            ),
        ));
    }
    let widths: Vec<f64> = layer
        .methods
        .iter()
        .map(|m| m.range[1] - m.range[0])
        .filter(|w| *w > 0.0)
        .collect();
    let wmax = widths.iter().copied().fold(0.0, f64::max);
    let wmin = widths.iter().copied().fold(f64::INFINITY, f64::min);
    if p.moments.n > 0 && wmin > 0.0 && wmax / wmin > t.disagreement {
        layer.warnings.push(Warning::new(
            WarningKind::RangeDisagreement,
            wmax / wmin,
            format!(
                "methods disagree on the range by {:.1}×: the choice of calibrator matters here",
                wmax / wmin
            ),
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
