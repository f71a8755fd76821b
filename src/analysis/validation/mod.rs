//! Will the range hold on data it has not seen? Held-out validation of every method over K
//! folds of batches (batch i → fold i mod K), its convergence over batch prefixes
//! (n = 1, 2, 4, …, B), and the recommendation by held-out SQNR (README "Held-out
//! validation").
//!
//! - [`folds`]: pass 2's histograms per cell (one fold within one convergence segment);
//! - [`convergence`]: the verdict and the percentiles' order-statistic intervals;
//! - here: the layout of cells, the calibrations per fold and per prefix, the quantizers pass
//!   3 measures for them ([`Probe`]), and the results.

pub mod convergence;
pub mod folds;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::calib::{self, Chosen, MethodKind, QParams, Scheme};

use super::metrics::{ErrorAccum, Metrics, Prepared};
use super::model::{LayerAnalysis, RecommendedBy, ser_num};
use super::options::Options;
use super::passes::Batches;
use super::profile::Profile;
use super::warnings::{Warning, WarningKind};

pub use convergence::{Convergence, ConvergenceMethod, Verdict};
pub(crate) use folds::CellCounter;
pub use folds::Cells;

/// Held-out SQNRs within this many dB of the best tie (the range variation decides).
pub const TIE_DB: f64 = 0.1;
/// Range variations within this share of the widest range end tie (the simpler method decides).
pub const VARIATION_TIE: f64 = 1e-3;
/// A method whose held-out SQNR is this many dB below its in-sample SQNR overfits its range.
pub const OVERFIT_DB: f64 = 1.0;

/// How a layer's batches fall into cells: the fold of batch i is i mod K, its convergence
/// segment the batches between two checkpoints (1, 2, 4, …, B).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub batches: usize,
    /// K, or 1 when there are fewer than 2·K batches (no validation, convergence only).
    pub folds: usize,
    /// K as asked (`--folds`).
    pub asked: usize,
    /// Prefix lengths: the powers of two below B, then B.
    pub checkpoints: Vec<usize>,
}

impl Layout {
    /// None for a layer of one batch (nothing to hold out or to grow).
    pub fn new(batches: usize, folds: usize) -> Option<Layout> {
        if batches < 2 {
            return None;
        }
        let mut checkpoints: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
            .take_while(|&n| n < batches)
            .collect();
        checkpoints.push(batches);
        let validated = folds >= 2 && batches >= 2 * folds;
        Some(Layout {
            batches,
            folds: if validated { folds } else { 1 },
            asked: folds,
            checkpoints,
        })
    }

    /// Whether the batches are enough for held-out validation (at least 2·K).
    pub fn validated(&self) -> bool {
        self.folds >= 2
    }

    pub fn cells(&self) -> usize {
        self.checkpoints.len() * self.folds
    }

    /// The segment of a batch: the first checkpoint above it.
    fn segment(&self, batch: usize) -> usize {
        self.checkpoints.partition_point(|&c| c <= batch)
    }

    pub fn cell(&self, batch: usize) -> usize {
        self.segment(batch) * self.folds + batch % self.folds
    }

    /// H: the largest power of two ≤ B/2, as the index of its checkpoint.
    pub fn half(&self) -> Option<usize> {
        let h = self.batches / 2;
        self.checkpoints.iter().rposition(|&c| c <= h)
    }
}

/// The quantizers pass 3 measures for validation: `all` on every value (each method's range
/// from the first H batches), `by_fold[k]` on the values of fold k only (the distinct ranges
/// calibrated without fold k).
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    pub all: Vec<QParams>,
    pub by_fold: Vec<Vec<QParams>>,
    folds: usize,
}

/// What pass 3 measured for a [`Probe`].
#[derive(Clone, Debug)]
pub(crate) struct ProbeSums {
    pub all: Vec<ErrorAccum>,
    pub by_fold: Vec<Vec<ErrorAccum>>,
}

impl ProbeSums {
    pub(crate) fn new(p: &Probe) -> ProbeSums {
        ProbeSums {
            all: vec![ErrorAccum::default(); p.all.len()],
            by_fold: p
                .by_fold
                .iter()
                .map(|q| vec![ErrorAccum::default(); q.len()])
                .collect(),
        }
    }

    /// Adds another chunk's fold sums (the `all` sums come from pass 3's shared list).
    pub(crate) fn merge(&mut self, o: &ProbeSums) {
        for (a, b) in self.by_fold.iter_mut().zip(&o.by_fold) {
            for (x, y) in a.iter_mut().zip(b) {
                x.merge(y);
            }
        }
    }
}

thread_local! {
    /// A block's piece of one fold, widened, where a block holds several folds' values.
    static PIECE: std::cell::RefCell<Prepared> = Default::default();
    /// A block with the values of other folds replaced by NaN.
    static MASKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Probe {
    /// The runs of one fold in a chunk: (fold, end), consecutive, the last ending at `len`.
    /// Empty when no fold is measured.
    pub(crate) fn fold_runs(
        &self,
        b: &Batches,
        pi: usize,
        first: usize,
        len: usize,
    ) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        if self.by_fold.is_empty() {
            return runs;
        }
        b.runs(pi, first, len, |batch, r| {
            let fold = batch % self.folds;
            match runs.last_mut() {
                Some(last) if last.0 == fold => last.1 = r.end,
                _ => runs.push((fold, r.end)),
            }
        });
        runs
    }

    /// Adds the block of the chunk at `start` (prepared as `p`) to the sums of each fold's
    /// quantizers, each value under its own fold's.
    pub(crate) fn add_block(
        &self,
        sums: &mut ProbeSums,
        runs: &[(usize, usize)],
        start: usize,
        block: &[f32],
        p: &Prepared,
    ) {
        if runs.is_empty() {
            return;
        }
        let end = start + block.len();
        let mut i = runs.partition_point(|r| r.1 <= start);
        let mut add = |fold: usize, p: &Prepared| {
            if let (Some(qs), Some(acc)) = (self.by_fold.get(fold), sums.by_fold.get_mut(fold)) {
                for (a, q) in acc.iter_mut().zip(qs) {
                    a.add_prepared(q, p);
                }
            }
        };
        let pieces = runs[i.min(runs.len())..]
            .iter()
            .take_while(|r| r.1 < end)
            .count()
            + 1;
        match runs.get(i) {
            Some(&(fold, e)) if e >= end => add(fold, p),
            // Many short runs (a batch axis that is not the slowest, Fortran order): one
            // copy of the block per fold, the other folds' values masked as NaN (skipped as
            // every non-finite value is).
            _ if pieces > 2 * self.folds => PIECE.with_borrow_mut(|piece| {
                MASKED.with_borrow_mut(|masked| {
                    for fold in 0..self.folds {
                        masked.clear();
                        masked.resize(block.len(), f32::NAN);
                        let (mut from, mut j, mut any) = (start, i, false);
                        while let Some(&(f, e)) = runs.get(j) {
                            let to = e.min(end);
                            if f == fold {
                                masked[from - start..to - start]
                                    .copy_from_slice(&block[from - start..to - start]);
                                any = true;
                            }
                            if e >= end {
                                break;
                            }
                            from = to;
                            j += 1;
                        }
                        if any {
                            piece.fill(masked);
                            add(fold, piece);
                        }
                    }
                });
            }),
            _ => PIECE.with_borrow_mut(|piece| {
                let mut from = start;
                while let Some(&(fold, e)) = runs.get(i) {
                    let to = e.min(end);
                    piece.fill(&block[from - start..to - start]);
                    add(fold, piece);
                    if e >= end {
                        break;
                    }
                    from = to;
                    i += 1;
                }
            }),
        }
    }
}

/// One method's held-out figures.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HeldOut {
    /// 10·log10(Σx² / Σ(x − x̂_fold(x))²) over every finite value, each quantized with the
    /// range calibrated without its fold.
    pub sqnr_db: f64,
    /// Share of finite values clipped by the range calibrated without their fold.
    pub clipped_fraction: f64,
    /// Every pooled held-out metric: the JSON keeps the two above (its shape is fixed), the
    /// CSV lists them all, a saved analysis keeps them (see the `Serialize` impl).
    #[serde(default = "unmeasured")]
    pub metrics: Metrics,
}

fn unmeasured() -> Metrics {
    Metrics::UNMEASURED
}

/// The JSON's two keys; in a binary format (a saved analysis) every metric too, so that a
/// reopened analysis reports what the first run did.
impl Serialize for HeldOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Db(f64);
        impl Serialize for Db {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                ser_num(&self.0, s)
            }
        }
        let all = !s.is_human_readable();
        let mut st = s.serialize_struct("HeldOut", 2 + usize::from(all))?;
        st.serialize_field("sqnr_db", &Db(self.sqnr_db))?;
        st.serialize_field("clipped_fraction", &self.clipped_fraction)?;
        if all {
            st.serialize_field("metrics", &self.metrics)?;
        }
        st.end()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOutMethod {
    pub method: MethodKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub heldout: HeldOut,
    /// Fold k's range: calibrated on the other folds' batches.
    pub ranges_by_fold: Vec<[f64; 2]>,
}

impl HeldOutMethod {
    pub fn label(&self) -> String {
        label(self.method, self.percentile)
    }

    /// How much the range moves across folds: the spread of its low ends plus that of its
    /// high ends.
    pub fn range_variation(&self) -> f64 {
        let spread = |i: usize| {
            let v = self.ranges_by_fold.iter().map(|r| r[i]);
            v.clone().fold(f64::NEG_INFINITY, f64::max) - v.fold(f64::INFINITY, f64::min)
        };
        spread(0) + spread(1)
    }
}

/// Which step of the held-out rule chose the recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The best held-out SQNR, more than [`TIE_DB`] ahead of the next.
    BestHeldoutSqnr,
    /// Held-out SQNRs tied within [`TIE_DB`]: the range that varies least across folds.
    LeastRangeVariation,
    /// Tied on both: the simpler method (minmax < ema < percentile < entropy < mse).
    SimplerMethod,
}

impl Rule {
    /// The rule as a phrase for the reports.
    pub fn phrase(self) -> &'static str {
        match self {
            Rule::BestHeldoutSqnr => "best held-out SQNR",
            Rule::LeastRangeVariation => {
                "held-out SQNR tied within 0.1 dB: least range variation across folds"
            }
            Rule::SimplerMethod => "held-out SQNR and range variation tied: simpler method",
        }
    }
}

/// The held-out validation of a layer (JSON `validation`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub folds: usize,
    pub batches: usize,
    pub methods: Vec<HeldOutMethod>,
    pub recommended: String,
    pub rule: Rule,
}

impl Validation {
    /// The held-out figures of the method labelled `label`.
    pub fn method(&self, label: &str) -> Option<&HeldOutMethod> {
        self.methods.iter().find(|m| m.label() == label)
    }
}

pub(crate) fn label(method: MethodKind, percentile: Option<f64>) -> String {
    match percentile {
        Some(p) => format!("{} {}", method.name(), p),
        None => method.name().to_string(),
    }
}

/// Simplicity order of the tie-break: minmax < ema < percentile < entropy < mse.
fn simplicity(m: MethodKind) -> u8 {
    match m {
        MethodKind::Minmax => 0,
        MethodKind::Ema => 1,
        MethodKind::Percentile => 2,
        MethodKind::Entropy => 3,
        MethodKind::Mse => 4,
    }
}

/// The held-out rule: the best held-out SQNR; ties within [`TIE_DB`] → the least range
/// variation across folds; then the simpler method (then the first listed). None if every
/// held-out SQNR is NaN.
pub fn choose(methods: &[HeldOutMethod]) -> Option<(usize, Rule)> {
    let valid = || {
        methods
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.heldout.sqnr_db.is_nan())
    };
    let best = valid()
        .map(|(_, m)| m.heldout.sqnr_db)
        .fold(f64::NEG_INFINITY, f64::max);
    valid().next()?;
    // An infinite best (an exact quantizer) ties only with another exact one.
    let tied: Vec<usize> = valid()
        .filter(|(_, m)| m.heldout.sqnr_db >= best - TIE_DB || m.heldout.sqnr_db == best)
        .map(|(i, _)| i)
        .collect();
    if let [only] = tied[..] {
        return Some((only, Rule::BestHeldoutSqnr));
    }
    let least = tied
        .iter()
        .map(|&i| methods[i].range_variation())
        .fold(f64::INFINITY, f64::min);
    // Variations closer than this share of the widest range are equal: percentile ranges are
    // read off fine histogram bins, so a percentile that keeps every value and min-max differ
    // by a bin's width, which must not decide.
    let reach = tied
        .iter()
        .flat_map(|&i| methods[i].ranges_by_fold.iter().flatten())
        .fold(0.0f64, |a, &v| a.max(v.abs()));
    let steady: Vec<usize> = tied
        .into_iter()
        .filter(|&i| methods[i].range_variation() <= least + VARIATION_TIE * reach)
        .collect();
    if let [only] = steady[..] {
        return Some((only, Rule::LeastRangeVariation));
    }
    steady
        .into_iter()
        .min_by_key(|&i| (simplicity(methods[i].method), i))
        .map(|i| (i, Rule::SimplerMethod))
}

/// Calibrates every method on the batches `keep` accepts, whose histogram (the one the
/// scheme reads) is `set`.
fn calibrate_on(
    profile: &Profile,
    keep: impl Fn(usize) -> bool,
    set: &folds::Pair,
    opts: &Options,
) -> Vec<Chosen> {
    let batches: Vec<(f32, f32)> = profile
        .batches
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &b)| b)
        .collect();
    let (lo, hi) = batches
        .iter()
        .filter(|(lo, hi)| lo <= hi)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &(lo, hi)| {
            (a.min(lo), b.max(hi))
        });
    let (min, max) = if lo <= hi {
        (f64::from(lo), f64::from(hi))
    } else {
        (0.0, 0.0)
    };
    let affine = opts.scheme == Scheme::Affine;
    // The calibrators of a scheme read one of the two fine histograms (and the other only
    // for its bin count, which the layer's shares).
    let observed = calib::Observed {
        min,
        max,
        batches: &batches,
        hist: if affine { &set.0 } else { &profile.hist },
        abs_hist: if affine { &profile.abs_hist } else { &set.0 },
        entropy_hist: set.1.as_ref(),
    };
    // The histograms keep the whole layer's bin edges, so a search on a subset whose values
    // span few bins can land beyond the subset's own extremes (its first candidate bins lie
    // there); calibrated on that subset alone, no method could: cut each range to them.
    let (lo_cap, hi_cap) = if affine {
        (min, max)
    } else {
        let a = min.abs().max(max.abs());
        (-a, a)
    };
    let mut chosen = calib::calibrate(&observed, &opts.calib());
    for c in &mut chosen {
        let (lo, hi) = (c.search.lo.max(lo_cap), c.search.hi.min(hi_cap));
        if (lo, hi) != (c.search.lo, c.search.hi) && lo <= hi {
            c.search.lo = lo;
            c.search.hi = hi;
            c.q = QParams::new(opts.scheme, opts.bits, lo, hi);
        }
    }
    chosen
}

/// Every calibration validation needs for one layer, and the probe pass 3 measures.
pub(crate) struct Plan {
    layout: Layout,
    /// A fold whose complement has no finite value (then no validation).
    empty_fold: Option<usize>,
    /// Per fold: every method calibrated without it (empty without validation).
    by_fold: Vec<Vec<Chosen>>,
    /// Per fold and method: its quantizer's index in `probe.by_fold[k]`.
    fold_slot: Vec<Vec<usize>>,
    /// Per checkpoint but the last (all batches: the in-sample ranges): every method.
    prefixes: Vec<Vec<Chosen>>,
    /// n and percentile facts for the order-statistic intervals.
    intervals: Vec<Option<[[f64; 2]; 2]>>,
    pub probe: Probe,
}

impl Plan {
    pub(crate) fn new(profile: &Profile, cells: &Cells, chosen: &[Chosen], opts: &Options) -> Plan {
        let layout = cells.layout.clone();
        let k = layout.folds;
        let mut by_fold = Vec::new();
        let mut fold_slot = Vec::new();
        let mut probe = Probe {
            folds: k,
            ..Probe::default()
        };
        let (outs, prefix_sets) = cells.training_sets(opts.scheme == Scheme::Affine);
        // A fold whose complement holds no finite value has nothing to calibrate on.
        let empty_fold = (0..k).find(|&fold| {
            !profile
                .batches
                .iter()
                .enumerate()
                .any(|(b, (lo, hi))| b % k != fold && lo <= hi)
        });
        if layout.validated() && empty_fold.is_none() {
            for (fold, set) in outs.iter().enumerate() {
                let ch = calibrate_on(profile, |b| b % k != fold, set, opts);
                let mut unique: Vec<QParams> = Vec::new();
                let slots = ch
                    .iter()
                    .map(|c| {
                        unique.iter().position(|u| *u == c.q).unwrap_or_else(|| {
                            unique.push(c.q);
                            unique.len() - 1
                        })
                    })
                    .collect();
                probe.by_fold.push(unique);
                fold_slot.push(slots);
                by_fold.push(ch);
            }
        }
        let prefixes: Vec<Vec<Chosen>> = layout
            .checkpoints
            .iter()
            .zip(&prefix_sets)
            .map(|(&n, set)| calibrate_on(profile, |b| b < n, set, opts))
            .collect();
        if let Some(h) = layout.half() {
            let ranges = prefixes.get(h).map_or(chosen, |v| v.as_slice());
            probe.all = ranges.iter().map(|c| c.q).collect();
        }
        let intervals = chosen
            .iter()
            .map(|c| {
                c.percentile
                    .map(|p| convergence::interval(profile, p, opts.scheme))
            })
            .collect();
        Plan {
            empty_fold: empty_fold.filter(|_| layout.validated()),
            layout,
            by_fold,
            fold_slot,
            prefixes,
            intervals,
            probe,
        }
    }

    /// Sets the layer's `validation` and `convergence` (and `recommended` by the held-out
    /// rule) from pass 3's sums, and raises their warnings.
    pub(crate) fn finish(self, layer: &mut LayerAnalysis, chosen: &[Chosen], sums: &ProbeSums) {
        let l = &self.layout;
        if let Some(k) = self.empty_fold {
            layer.notes.push(format!(
                "no held-out validation: the batches outside fold {k} hold no finite value"
            ));
        } else if l.validated() {
            let methods: Vec<HeldOutMethod> = chosen
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut acc = ErrorAccum::default();
                    for (k, slots) in self.fold_slot.iter().enumerate() {
                        if let Some(a) = sums.by_fold.get(k).and_then(|f| f.get(slots[i])) {
                            acc.merge(a);
                        }
                    }
                    let m = acc.finish();
                    HeldOutMethod {
                        method: c.method,
                        percentile: c.percentile,
                        heldout: HeldOut {
                            sqnr_db: m.sqnr_db,
                            clipped_fraction: m.clipped_below + m.clipped_above,
                            metrics: m,
                        },
                        ranges_by_fold: self
                            .by_fold
                            .iter()
                            .map(|f| [f[i].search.lo, f[i].search.hi])
                            .collect(),
                    }
                })
                .collect();
            if let Some((i, rule)) = choose(&methods) {
                let best = methods[i].label();
                layer.recommended = Some(best.clone());
                layer.recommended_by = Some(RecommendedBy::Heldout);
                layer.validation = Some(Validation {
                    folds: l.folds,
                    batches: l.batches,
                    methods,
                    recommended: best,
                    rule,
                });
            }
        } else {
            layer.notes.push(format!(
                "{} batches: held-out validation needs at least 2·K = {} (--folds {})",
                l.batches,
                2 * l.asked,
                l.asked
            ));
        }
        let methods = chosen
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut ranges: Vec<[f64; 2]> = self
                    .prefixes
                    .iter()
                    .map(|p| [p[i].search.lo, p[i].search.hi])
                    .collect();
                ranges.push([c.search.lo, c.search.hi]);
                let full = layer.methods.get(i).map_or(f64::NAN, |m| m.metrics.sqnr_db);
                let half = sums.all.get(i).map_or(f64::NAN, |a| a.finish().sqnr_db);
                ConvergenceMethod {
                    method: c.method,
                    percentile: c.percentile,
                    ranges,
                    half_range_sqnr_loss_db: convergence::loss(full, half),
                    interval_95: self.intervals.get(i).copied().flatten(),
                }
            })
            .collect();
        let conv = Convergence::new(l, methods, layer.recommended.as_deref());
        layer.convergence = Some(conv);
        warn(layer);
    }
}

/// `calibration_unstable` and `overfit_range`.
fn warn(layer: &mut LayerAnalysis) {
    if let Some(c) = &layer.convergence
        && c.verdict == Verdict::Growing
        && let Some(m) = c
            .methods
            .iter()
            .find(|m| Some(m.label()) == layer.recommended)
    {
        let h = layer
            .convergence
            .as_ref()
            .and_then(|c| c.half())
            .unwrap_or(0);
        let loss = m.half_range_sqnr_loss_db;
        layer.warnings.push(Warning::new(
            WarningKind::CalibrationUnstable,
            loss,
            format!(
                "{} from the first {h} of {} batches loses {} dB on all of them: calibrate on more data",
                m.label(),
                c.batches(),
                convergence::db(loss)
            ),
        ));
    }
    if let Some(v) = &layer.validation {
        let worst = v
            .methods
            .iter()
            .filter_map(|h| {
                let ins = layer.methods.iter().find(|m| m.label() == h.label())?;
                let drop = ins.metrics.sqnr_db - h.heldout.sqnr_db;
                // inf − inf: both exact, nothing lost.
                (drop > OVERFIT_DB)
                    .then(|| (h.label(), drop, ins.metrics.sqnr_db, h.heldout.sqnr_db))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((label, drop, ins, held)) = worst {
            layer.warnings.push(Warning::new(
                WarningKind::OverfitRange,
                drop,
                format!(
                    "{label} reaches {} dB on its calibration data but {} dB on held-out batches: its range fits the calibration set, not new data",
                    convergence::db(ins),
                    convergence::db(held)
                ),
            ));
        }
    }
}
