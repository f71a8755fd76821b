//! One per-layer pipeline, for the report and the UI alike: open, profile (passes 1–2),
//! describe, calibrate, measure (pass 3), recommend, warn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::calib;
use crate::histogram::Histogram;
use crate::source::{LayerSpec, LoadError, OpenArray};

use super::cast::CastAudit;
use super::formats::FormatPlan;
use super::granularity::Plan;
use super::metrics::Metrics;
use super::model::{Analysis, JSON_VERSION, LayerAnalysis, MethodResult, RecommendedBy, Settings};
use super::options::{Options, Progress};
use super::passes::{Extras, measure_parts_with, open_parts, profile_parts};
use super::profile::{KeptProfile, Profile};
use super::stats::{Percentiles, STAT_PERCENTILES, Stats, percentile_key};
use super::validation;
use super::warnings::{format_warnings, granularity_warnings, method_warnings, profile_warnings};

/// One layer to run: its files, and the profile a front end kept from an earlier run (then
/// passes 1–2 are not repeated: only calibration and the metrics pass run again).
#[derive(Clone, Debug)]
pub struct LayerJob {
    pub spec: LayerSpec,
    pub kept: Option<Arc<KeptProfile>>,
}

/// What the pipeline reports about job `index` (its position in the list) as it goes.
#[derive(Debug)]
pub enum LayerEvent {
    /// Passes 1–2 are done (only with [`Options::keep_profiles`]): the histograms can be
    /// drawn before the metrics pass. Not sent for a job that came with its profile.
    Profiled {
        index: usize,
        profile: Arc<KeptProfile>,
    },
    /// The layer is finished (or failed: its `error` says why).
    Done {
        index: usize,
        layer: Box<LayerAnalysis>,
    },
}

/// Runs `jobs` in parallel through the one per-layer pipeline, sending each layer's events to
/// `sink` as they happen (from worker threads). Stops starting layers once
/// `progress.cancel` is set.
pub fn run_layers(
    jobs: Vec<LayerJob>,
    opts: &Options,
    progress: &Progress,
    sink: &(dyn Fn(LayerEvent) + Sync),
) {
    // A kept profile skips passes 1–2, which is where a fresh layer counts its elements:
    // count the metrics pass of those here, so the total is known from the start.
    let rerun: u64 = jobs
        .iter()
        .filter_map(|j| j.kept.as_ref())
        .map(|p| p.moments.count)
        .sum();
    progress.total.fetch_add(rerun, Ordering::Relaxed);
    jobs.into_par_iter().enumerate().for_each(|(index, job)| {
        if progress.cancel.load(Ordering::Relaxed) {
            return;
        }
        let layer = run_layer(&job, opts, progress, &|profile| {
            sink(LayerEvent::Profiled { index, profile })
        });
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        sink(LayerEvent::Done {
            index,
            layer: Box::new(layer),
        });
    });
}

/// Analyses every layer (in parallel) and turns discovery errors into errored layers.
pub fn analyze(
    specs: &[LayerSpec],
    errors: &[LoadError],
    opts: &Options,
    progress: &Progress,
) -> Analysis {
    let jobs = specs
        .iter()
        .map(|spec| LayerJob {
            spec: spec.clone(),
            kept: None,
        })
        .collect();
    let done = std::sync::Mutex::new(Vec::with_capacity(specs.len()));
    run_layers(jobs, opts, progress, &|ev| {
        if let LayerEvent::Done { index, layer } = ev
            && let Ok(mut d) = done.lock()
        {
            d.push((index, *layer));
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    let mut layers: Vec<LayerAnalysis> = done.into_iter().map(|(_, l)| l).collect();
    layers.extend(errors.iter().map(LayerAnalysis::from_error));
    Analysis {
        version: JSON_VERSION,
        settings: Settings::of(opts),
        layers,
    }
}

/// Analyses one layer; a failure is recorded in the result, never raised.
pub fn analyze_layer(spec: &LayerSpec, opts: &Options, progress: &Progress) -> LayerAnalysis {
    let job = LayerJob {
        spec: spec.clone(),
        kept: None,
    };
    run_layer(&job, opts, progress, &|_| {})
}

/// One layer through the pipeline. Any failure, a panic included, becomes the layer's
/// `error` (naming it), so one bad layer never takes the others down.
fn run_layer(
    job: &LayerJob,
    opts: &Options,
    progress: &Progress,
    profiled: &dyn Fn(Arc<KeptProfile>),
) -> LayerAnalysis {
    let run = || {
        #[cfg(test)]
        tests::maybe_panic(&job.spec.name);
        match &job.kept {
            Some(kept) => {
                let mut layer = finish_with(&job.spec, &kept.unpack(), None, opts, progress);
                layer.profile = opts.keep_profiles.then(|| kept.clone());
                layer
            }
            None => fresh_layer(&job.spec, opts, progress, profiled),
        }
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let e = LoadError::new(
            &job.spec.name,
            format!("internal error while analysing this layer (a bug: please report it): {what}"),
        );
        LayerAnalysis::failed(&job.spec, &e)
    })
}

/// Passes 1–3 from the layer's files.
fn fresh_layer(
    spec: &LayerSpec,
    opts: &Options,
    progress: &Progress,
    profiled: &dyn Fn(Arc<KeptProfile>),
) -> LayerAnalysis {
    let parts = open_layer(spec, opts, &progress.cancel);
    match parts.and_then(|parts| profile_parts(&parts, opts, progress).map(|p| (parts, p))) {
        Ok((parts, profile)) => {
            let kept = opts.keep_profiles.then(|| Arc::new(profile.pack()));
            if let Some(k) = &kept {
                profiled(k.clone());
            }
            let mut layer = finish_with(spec, &profile, Some(&parts), opts, progress);
            layer.profile = kept;
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

/// Describes, calibrates and measures a layer from its profile, with the layer's data already
/// open (or opened here for the metrics pass if `None`), without the profile attached.
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
    let elems = profile.moments.count;
    let plan = Plan::new(profile.absmax(), profile.channels.as_ref(), elems, opts);
    let token_note = profile.channel_note.is_some() || plan.has_note();
    let formats = FormatPlan::new(profile, &chosen, opts, token_note);
    let checks = profile
        .cells
        .as_ref()
        .map(|c| validation::Plan::new(profile, c, &chosen, opts));
    let probe = checks.as_ref().map(|c| &c.probe);
    let reopened;
    let parts = match parts {
        Some(parts) => parts,
        None => match reopen(spec, profile, opts) {
            Ok(p) => {
                reopened = p;
                &reopened
            }
            Err(e) => {
                // A kept profile whose values are gone (a saved analysis opened without its
                // dumps): the ranges stand on the histograms alone; their error cannot be
                // measured, and the layer says why.
                layer.methods =
                    method_results(&chosen, std::iter::repeat(Metrics::UNMEASURED), opts);
                layer.error = Some(format!(
                    "{e}: the ranges come from the kept histograms; their error metrics need \
                     the values"
                ));
                return layer;
            }
        },
    };
    let extras = Extras {
        plan: Some(&plan),
        formats: Some(&formats),
        probe,
        bins: profile.bins.as_deref(),
    };
    match measure_parts_with(parts, &chosen, extras, opts, progress) {
        Ok(measured) => {
            let metrics = measured.methods.iter().map(|a| a.finish());
            layer.methods = method_results(&chosen, metrics, opts);
            recommend(&mut layer);
            if let (Some(checks), Some(sums)) = (checks, &measured.probe) {
                checks.finish(&mut layer, &chosen, sums);
            } else if opts.validate {
                layer.notes.push(
                    "one batch: no held-out validation or convergence (give a batch axis or batch folders)"
                        .into(),
                );
            }
            method_warnings(&mut layer, profile, opts);
            let (rows, channels, note) = plan.finish(&measured.tensor, &measured.groups, opts);
            layer.granularities = rows;
            layer.channels = channels;
            layer
                .notes
                .extend(profile.channel_note.iter().cloned().chain(note));
            granularity_warnings(&mut layer, &measured.tensor.finish(), opts);
            let (rows, facts) = formats.finish(&measured.tensor, &measured.formats);
            layer.formats = rows;
            layer.notes.extend(formats.note.clone());
            format_warnings(&mut layer, &facts, opts);
        }
        Err(e) => layer.error = Some(e.to_string()),
    }
    layer
}

/// Opens a layer's files again for the metrics pass of a kept profile, checking they still
/// hold the arrays the profile was made from.
fn reopen(
    spec: &LayerSpec,
    profile: &Profile,
    opts: &Options,
) -> Result<Vec<OpenArray>, LoadError> {
    let parts = open_parts(spec, opts)?;
    let same = parts.len() == profile.parts
        && parts.first().is_some_and(|p| p.info == profile.info)
        && parts.iter().map(|p| p.info.len() as u64).sum::<u64>() == profile.moments.count;
    if !same {
        return Err(LoadError::new(
            spec.source(),
            "changed since its histograms were made (another shape, dtype or batch count)",
        ));
    }
    Ok(parts)
}

/// Each chosen range with its metrics.
fn method_results(
    chosen: &[calib::Chosen],
    metrics: impl Iterator<Item = Metrics>,
    opts: &Options,
) -> Vec<MethodResult> {
    chosen
        .iter()
        .zip(metrics)
        .map(|(c, metrics)| MethodResult {
            method: c.method,
            percentile: c.percentile,
            scheme: opts.scheme,
            bits: opts.bits,
            range: [c.search.lo, c.search.hi],
            scale: c.q.scale,
            zero_point: c.q.zero_point,
            candidates: c.search.candidates,
            metrics,
        })
        .collect()
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
        shape,
        dtype: p.info.dtype.name().to_string(),
        stats: Some(stats),
        casts,
        ..LayerAnalysis::named(spec)
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
        layer.recommended_by = Some(RecommendedBy::InSample);
        layer.sensitivity_sqnr_db = Some(b.metrics.sqnr_db);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use super::*;
    use crate::source::Location;
    use npyz::WriterBuilder;

    /// A layer of this name panics inside the pipeline (only in this crate's unit tests).
    const PANICKING_LAYER: &str = "panicking layer (test)";

    pub(in crate::analysis) fn maybe_panic(name: &str) {
        if name == PANICKING_LAYER {
            panic!("injected failure");
        }
    }

    #[test]
    fn a_panicking_layer_becomes_an_error_and_the_others_are_analysed() {
        let dir = tempfile::tempdir().unwrap();
        let mut specs = Vec::new();
        for name in ["a", PANICKING_LAYER, "c"] {
            let path = dir.path().join(format!("{}.npy", specs.len()));
            let mut buf = Vec::new();
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&[3])
                .writer(&mut buf)
                .begin_nd()
                .unwrap();
            w.extend([1.0f32, -2.0, 0.5]).unwrap();
            w.finish().unwrap();
            std::fs::write(&path, buf).unwrap();
            specs.push(LayerSpec {
                name: name.into(),
                parts: vec![Location::Npy(path)],
            });
        }
        let a = analyze(&specs, &[], &Options::default(), &Progress::default());
        assert_eq!(a.layers.len(), 3);
        let names: Vec<&str> = a.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", PANICKING_LAYER, "c"]);
        let bad = &a.layers[1];
        let msg = bad.error.as_deref().unwrap();
        assert!(msg.starts_with(PANICKING_LAYER), "{msg}");
        assert!(msg.contains("injected failure"), "{msg}");
        for l in [&a.layers[0], &a.layers[2]] {
            assert!(l.error.is_none());
            assert_eq!(l.stats.as_ref().unwrap().absmax, 2.0);
            assert!(!l.methods.is_empty());
        }
    }
}
