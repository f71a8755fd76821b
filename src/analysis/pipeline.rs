//! One per-layer pipeline, for the report and the UI alike: open, profile (passes 1–2),
//! describe, calibrate, measure (pass 3), recommend, warn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::calib;
use crate::histogram::Histogram;
use crate::source::{LayerSpec, LoadError, OpenArray};

use super::cast::CastAudit;
use super::model::{Analysis, JSON_VERSION, LayerAnalysis, MethodResult, Settings};
use super::options::{Options, Progress};
use super::passes::{measure, measure_parts, open_parts, profile_parts};
use super::profile::{KeptProfile, Profile};
use super::stats::{Percentiles, STAT_PERCENTILES, Stats, percentile_key};
use super::warnings::{method_warnings, profile_warnings};

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
    let chosen = calib::calibrate(&profile.observed(), &opts.calib());
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
