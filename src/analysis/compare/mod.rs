//! Two runs of the same model compared layer by layer: the float reference against a quantized,
//! float16 or other-runtime run, and the first layer where it breaks.
//!
//! Layers are paired by name ([`pair_up`]); each pair is streamed in lockstep, chunk by chunk
//! and in parallel ([`crate::source::OpenArray::zip_chunks`]), so memory stays a few chunks per
//! worker thread whatever the size of the dumps. Per pair, over the positions where both
//! values are finite: f64 sums (merged in chunk order, so the numbers do not depend on the
//! thread count), the allclose count, the worst position, and a log-spaced histogram of
//! t − r for its 99th percentile (see [`accum`]).
//!
//! - [`options`]: the tolerances, the floor, the `--fail-on` kinds;
//! - [`model`]: the result types = the JSON;
//! - [`accum`]: the per-chunk accumulators.

pub mod accum;
pub mod model;
pub mod options;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::source::discover::natural_cmp;
use crate::source::{LayerSpec, LoadError, OpenArray, discover};

use super::options::Progress;
use super::passes::Pool;
use accum::{Hists, Sums};

pub use model::{
    CompareSettings, CompareWarning, CompareWarningKind, Comparison, Pair, PairHistograms,
    PairMetrics,
};
pub use options::{CompareOptions, FailOn};

/// Which run an input belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Reference,
    Test,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Reference => "reference",
            Side::Test => "test",
        }
    }
}

/// One layer found on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairSpec {
    pub name: String,
    pub reference: LayerSpec,
    pub test: LayerSpec,
}

/// The layers of both sides matched by name.
#[derive(Clone, Debug, Default)]
pub struct Pairing {
    /// In the natural order of the names.
    pub pairs: Vec<PairSpec>,
    pub reference_only: Vec<String>,
    pub test_only: Vec<String>,
    /// Inputs that could not be read while looking for layers (each becomes a failed pair).
    pub errors: Vec<(Side, LoadError)>,
}

/// The name a layer is matched by: relative to its input (an `.npz` or `.safetensors` given as
/// a file drops its own name, so `ref.npz/fc1` meets `int8.npz/fc1`).
fn match_name(input: &Path, name: &str) -> String {
    let is_npz = input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz") || e.eq_ignore_ascii_case("safetensors"))
        && input.is_file();
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_prefix(&format!("{stem}/")) {
        Some(rest) if is_npz => rest.to_string(),
        _ => name.to_string(),
    }
}

fn is_npy_file(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Finds the layers of `reference` and `test` (each a file, an `.npz` or a folder, batch
/// folders included) and pairs them by name. Two `.npy` files are one pair whatever their
/// names (the reference's name is used).
pub fn pair_up(reference: &Path, test: &Path, opts: &CompareOptions) -> Pairing {
    let mut out = Pairing::default();
    let mut found = |side: Side, input: &Path| -> Vec<(String, LayerSpec)> {
        let d = discover(&[PathBuf::from(input)], opts.layout, &opts.limits);
        out.errors.extend(d.errors.into_iter().map(|e| (side, e)));
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut v = Vec::new();
        for spec in d.layers {
            let key = match_name(input, &spec.name);
            if seen.insert(key.clone(), ()).is_some() {
                out.errors.push((
                    side,
                    LoadError::new(
                        spec.source(),
                        format!("a second layer named `{key}`; only the first is compared"),
                    ),
                ));
                continue;
            }
            v.push((key, spec));
        }
        v
    };
    let refs = found(Side::Reference, reference);
    let mut tests = found(Side::Test, test);
    if is_npy_file(reference) && is_npy_file(test) && refs.len() == 1 && tests.len() == 1 {
        tests[0].0 = refs[0].0.clone();
    }
    let mut by_name: HashMap<String, LayerSpec> = tests.iter().cloned().collect();
    for (name, spec) in refs {
        match by_name.remove(&name) {
            Some(t) => out.pairs.push(PairSpec {
                name,
                reference: spec,
                test: t,
            }),
            None => out.reference_only.push(name),
        }
    }
    out.test_only = tests
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| by_name.contains_key(n))
        .collect();
    out.pairs.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    out.reference_only.sort_by(|a, b| natural_cmp(a, b));
    out.test_only.sort_by(|a, b| natural_cmp(a, b));
    out
}

/// Compares every pair (in parallel), sending each finished pair to `sink` with its index in
/// `pairing.pairs`, from worker threads. Stops starting pairs once `progress.cancel` is set.
pub fn compare_pairs(
    pairing: &Pairing,
    opts: &CompareOptions,
    progress: &Progress,
    sink: &(dyn Fn(usize, Pair) + Sync),
) {
    pairing.pairs.par_iter().enumerate().for_each(|(i, spec)| {
        if progress.cancel.load(Ordering::Relaxed) {
            return;
        }
        let pair = compare_pair(spec, opts, progress);
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        sink(i, pair);
    });
}

/// The comparison before any pair has run: every pair listed without metrics, the inputs that
/// failed to load as failed pairs.
pub fn pending(pairing: &Pairing, opts: &CompareOptions) -> Comparison {
    let mut c = Comparison::new(opts);
    c.pairs = pairing
        .pairs
        .iter()
        .map(|p| Pair::new(&p.name, p.reference.source(), p.test.source()))
        .collect();
    c.pairs.extend(pairing.errors.iter().map(|(side, e)| {
        let (r, t) = match side {
            Side::Reference => (e.path.clone(), String::new()),
            Side::Test => (String::new(), e.path.clone()),
        };
        let mut p = Pair::new(&e.path, r, t);
        p.error = Some(format!("{}: {e}", side.name()));
        p
    }));
    c.reference_only = pairing.reference_only.clone();
    c.test_only = pairing.test_only.clone();
    c
}

/// Compares every pair of `pairing` and assembles the result.
pub fn compare(pairing: &Pairing, opts: &CompareOptions, progress: &Progress) -> Comparison {
    let mut c = pending(pairing, opts);
    let done = std::sync::Mutex::new(Vec::with_capacity(pairing.pairs.len()));
    compare_pairs(pairing, opts, progress, &|i, pair| {
        if let Ok(mut d) = done.lock() {
            d.push((i, pair));
        }
    });
    for (i, pair) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
        if let Some(slot) = c.pairs.get_mut(i) {
            *slot = pair;
        }
    }
    c.derive();
    c
}

/// One pair; any failure, a panic included, becomes its `error`.
pub fn compare_pair(spec: &PairSpec, opts: &CompareOptions, progress: &Progress) -> Pair {
    let mut pair = Pair::new(&spec.name, spec.reference.source(), spec.test.source());
    let run = std::panic::AssertUnwindSafe(|| measure(spec, opts, progress, &mut pair));
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => pair.error = Some(e),
        Err(_) => {
            pair.error = Some(format!(
                "{}: internal error while comparing (a bug: please report it)",
                spec.name
            ))
        }
    }
    pair
}

fn open_all(spec: &LayerSpec, opts: &CompareOptions) -> Result<Vec<OpenArray>, String> {
    if spec.parts.is_empty() {
        return Err(format!("{}: layer has no data files", spec.name));
    }
    spec.parts
        .iter()
        .map(|loc| OpenArray::open(loc, &opts.limits).map_err(|e| e.to_string()))
        .collect()
}

/// A dtype name, or the distinct names of batch files that differ.
fn dtype_of(parts: &[OpenArray]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for p in parts {
        let n = p.info.dtype.name();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.join("+")
}

/// Whether two arrays of one shape keep their elements in the same file order.
fn same_order(a: &OpenArray, b: &OpenArray) -> bool {
    a.info.fortran_order == b.info.fortran_order
        || a.info.shape.iter().filter(|&&d| d > 1).count() <= 1
}

fn shape_text(s: &[usize]) -> String {
    format!(
        "({})",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Opens both sides, checks they line up, streams them in lockstep and fills `pair`.
fn measure(
    spec: &PairSpec,
    opts: &CompareOptions,
    progress: &Progress,
    pair: &mut Pair,
) -> Result<(), String> {
    let refs = open_all(&spec.reference, opts)?;
    let tests = open_all(&spec.test, opts)?;
    pair.reference_dtype = dtype_of(&refs);
    pair.test_dtype = dtype_of(&tests);
    let uniform = refs.iter().all(|p| p.info.shape == refs[0].info.shape);
    pair.shape = if refs.len() == 1 {
        refs[0].info.shape.clone()
    } else if uniform {
        std::iter::once(refs.len())
            .chain(refs[0].info.shape.iter().copied())
            .collect()
    } else {
        vec![refs.iter().map(|p| p.info.len()).sum()]
    };
    if refs.len() != tests.len() {
        return Err(format!(
            "the reference has {} batch file(s), the test {}",
            refs.len(),
            tests.len()
        ));
    }
    for (a, b) in refs.iter().zip(&tests) {
        if a.info.shape != b.info.shape {
            let same = if a.info.len() == b.info.len() {
                " (the same element count: reshape one side if that is intended)".to_string()
            } else {
                format!(" ({} against {} elements)", a.info.len(), b.info.len())
            };
            return Err(format!(
                "shapes differ: reference {} is {}, test {} is {}{same}",
                a.location,
                shape_text(&a.info.shape),
                b.location,
                shape_text(&b.info.shape)
            ));
        }
        if !same_order(a, b) {
            return Err(format!(
                "memory orders differ: {} is {}-ordered, {} is {}-ordered (save both in the same order)",
                a.location,
                if a.info.fortran_order { "Fortran" } else { "C" },
                b.location,
                if b.info.fortran_order { "Fortran" } else { "C" },
            ));
        }
    }
    let elems: u64 = refs.iter().map(|p| p.info.len() as u64).sum();
    progress.total.fetch_add(elems, Ordering::Relaxed);

    let (atol, rtol) = (opts.atol, opts.rtol);
    let pool: Pool<Hists> = Pool::new();
    let mut sums = Sums::default();
    let mut offset = 0usize;
    let mut worst_at: Option<(usize, usize)> = None;
    for (k, (a, b)) in refs.iter().zip(&tests).enumerate() {
        let partials = a
            .zip_chunks(b, opts.chunk_elems, &progress.cancel, |first, r, t| {
                let mut s = Sums::default();
                pool.with(Hists::default, |h| {
                    s = accum::chunk(first, r, t, (atol, rtol), opts.keep_histograms, h)
                });
                progress.done.fetch_add(r.len() as u64, Ordering::Relaxed);
                s
            })
            .map_err(|e| e.to_string())?;
        let before = sums.max_abs;
        for s in &partials {
            let s = s.clone().offset(offset);
            sums.merge(&s);
        }
        if sums.max_abs > before {
            worst_at = Some((k, offset));
        }
        offset += a.info.len();
        for (side, arr) in [("reference", a), ("test", b)] {
            data_warnings(pair, side, arr);
        }
    }
    let mut hists = Hists::default();
    for h in pool.into_items() {
        hists.merge(&h);
    }
    let worst = match (sums.worst, worst_at) {
        (Some(flat), Some((k, off))) => {
            let a = &refs[k];
            let local = unravel_in(a, flat - off);
            Some(if refs.len() == 1 {
                local
            } else if uniform {
                std::iter::once(k).chain(local).collect()
            } else {
                vec![flat]
            })
        }
        _ => None,
    };
    let m = metrics(&sums, &hists, worst);
    pair_warnings(pair, &m, elems, opts);
    if opts.keep_histograms {
        pair.histograms = Some(Arc::new(accum::histograms(&hists, &sums)));
    }
    pair.metrics = Some(m);
    Ok(())
}

fn unravel_in(a: &OpenArray, flat: usize) -> Vec<usize> {
    accum::unravel(flat, &a.info.shape, a.info.fortran_order)
}

/// The metrics from the merged sums.
fn metrics(s: &Sums, h: &Hists, worst: Option<Vec<usize>>) -> PairMetrics {
    let n = s.count;
    let nan_if_empty = |v: f64| if n == 0 { f64::NAN } else { v };
    let sqnr_db = if n == 0 {
        f64::NAN
    } else if s.ee == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s.rr / s.ee).log10()
    };
    let cosine = if n == 0 {
        f64::NAN
    } else if s.rr == 0.0 && s.tt == 0.0 {
        1.0
    } else if s.rr == 0.0 || s.tt == 0.0 {
        0.0
    } else {
        let norm = (s.rr * s.tt).sqrt();
        let norm = if norm.is_finite() {
            norm
        } else {
            s.rr.sqrt() * s.tt.sqrt()
        };
        (s.rt / norm).clamp(-1.0, 1.0)
    };
    PairMetrics {
        count: n,
        sqnr_db,
        cosine,
        mse: nan_if_empty(s.ee / n as f64),
        max_abs_error: nan_if_empty(s.max_abs),
        max_rel_error: if s.max_rel < 0.0 { f64::NAN } else { s.max_rel },
        mean_abs_error: nan_if_empty(s.abs_e / n as f64),
        p99_abs_error: accum::p99_abs(&h.e, s),
        allclose_failures: s.allclose,
        nan_mismatch: s.nan_mismatch,
        inf_mismatch: s.inf_mismatch,
        worst,
    }
}

fn warn(pair: &mut Pair, kind: CompareWarningKind, value: f64, message: String) {
    pair.warnings.push(CompareWarning {
        kind,
        message,
        value,
    });
}

/// Facts of one side's file: bytes after the data, float64 values beyond float32.
fn data_warnings(pair: &mut Pair, side: &str, a: &OpenArray) {
    if a.trailing_bytes > 0 {
        warn(
            pair,
            CompareWarningKind::TrailingBytes,
            a.trailing_bytes as f64,
            format!(
                "the {side} file {} has {} bytes after the data (ignored)",
                a.location, a.trailing_bytes
            ),
        );
    }
    let over = a.f64_overflows();
    if over > 0 {
        warn(
            pair,
            CompareWarningKind::Float64Narrowed,
            over as f64,
            format!(
                "{over} finite float64 values of the {side} are beyond float32 and were read as ±inf"
            ),
        );
    }
}

fn pair_warnings(pair: &mut Pair, m: &PairMetrics, elems: u64, opts: &CompareOptions) {
    use CompareWarningKind as K;
    if m.nan_mismatch > 0 {
        warn(
            pair,
            K::NanMismatch,
            m.nan_mismatch as f64,
            format!("{} positions are NaN on one side only", m.nan_mismatch),
        );
    }
    if m.inf_mismatch > 0 {
        warn(
            pair,
            K::InfMismatch,
            m.inf_mismatch as f64,
            format!(
                "{} positions are ±inf on one side only (or with opposite signs)",
                m.inf_mismatch
            ),
        );
    }
    if m.sqnr_db < opts.sqnr_floor_db {
        warn(
            pair,
            K::Degraded,
            m.sqnr_db,
            format!(
                "SQNR {:.1} dB is below the floor of {} dB",
                m.sqnr_db, opts.sqnr_floor_db
            ),
        );
    }
    if m.count == 0 && elems > 0 {
        warn(
            pair,
            K::NoFiniteValues,
            elems as f64,
            format!("no position of {elems} is finite on both sides: nothing to measure"),
        );
    }
}
