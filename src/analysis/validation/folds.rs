//! Pass 2 per cell: a cell is the batches of one fold within one convergence segment, so that
//! every held-out calibration set (the other folds) and every batch prefix (the segments up to
//! a checkpoint) is a sum of cells. The layer's histograms are the sum of all cells: the same
//! counts, counted once.

use std::sync::Mutex;

use crate::histogram::{Histogram, NumpyBins, PairCounter, PairEdges, PairTotals};
use serde::{Deserialize, Serialize};

use super::super::options::FINE_BINS;
use super::super::passes::{Batches, Pool};
use super::Layout;

/// The histograms of each cell, with the edges of the layer's own (so they sum to them).
/// `H` is how they are held: dense while a layer is analysed, packed in a kept profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cells<H = Histogram> {
    pub layout: Layout,
    /// x over `[min, max]`, per cell.
    pub x: Vec<H>,
    /// |x| over `[0, max|x|]`, per cell.
    pub abs: Vec<H>,
    /// ONNX Runtime's entropy histogram per cell, where the layer counts one.
    pub entropy: Option<Vec<H>>,
}

impl<H> Cells<H> {
    /// The same cells with the histograms converted by `f`.
    pub fn map<G>(&self, f: impl Fn(&H) -> G) -> Cells<G> {
        Cells {
            layout: self.layout.clone(),
            x: self.x.iter().map(&f).collect(),
            abs: self.abs.iter().map(&f).collect(),
            entropy: self.entropy.as_ref().map(|e| e.iter().map(&f).collect()),
        }
    }
}

/// The sum of some histograms with the same edges (None if there are none).
fn sum<'a>(mut hs: impl Iterator<Item = &'a Histogram>) -> Option<Histogram> {
    let mut total = hs.next()?.clone();
    for h in hs {
        total.merge(h);
    }
    Some(total)
}

/// A histogram and, for the affine scheme, ONNX Runtime's entropy histogram of the same values.
pub(crate) type Pair = (Histogram, Option<Histogram>);

fn add(a: &mut Pair, b: (&Histogram, Option<&Histogram>)) {
    a.0.merge(b.0);
    if let (Some(x), Some(y)) = (a.1.as_mut(), b.1) {
        x.merge(y);
    }
}

fn minus(whole: &Histogram, part: &Histogram) -> Histogram {
    Histogram {
        counts: whole
            .counts
            .iter()
            .zip(&part.counts)
            .map(|(w, p)| w.saturating_sub(*p))
            .collect(),
        ..whole.clone()
    }
}

impl Cells {
    /// The calibration sets of validation, in the one histogram the scheme's calibrators read
    /// (|x| for symmetric, x and the entropy histogram for affine): per fold k, every other
    /// fold's batches (the whole minus fold k); per checkpoint but the last, the batches
    /// before it.
    pub(crate) fn training_sets(&self, affine: bool) -> (Vec<Pair>, Vec<Pair>) {
        let l = &self.layout;
        let main = if affine { &self.x } else { &self.abs };
        let ent = if affine {
            self.entropy.as_deref()
        } else {
            None
        };
        let cell = |i: usize| (&main[i], ent.map(|e| &e[i]));
        let empty = |i: usize| -> Pair {
            let z = |h: &Histogram| Histogram {
                counts: vec![0; h.bins()],
                ..h.clone()
            };
            (z(&main[i]), ent.map(|e| z(&e[i])))
        };
        let segments = l.checkpoints.len();
        let mut folds: Vec<Pair> = (0..l.folds).map(|_| empty(0)).collect();
        let mut prefix = empty(0);
        let mut prefixes = Vec::with_capacity(segments);
        for s in 0..segments {
            for (k, f) in folds.iter_mut().enumerate() {
                let i = s * l.folds + k;
                add(f, cell(i));
                add(&mut prefix, cell(i));
            }
            prefixes.push(prefix.clone());
        }
        let whole = prefixes.pop().unwrap_or_else(|| empty(0));
        let out = if l.validated() {
            folds
                .iter()
                .map(|f| {
                    let e = match (&whole.1, &f.1) {
                        (Some(w), Some(p)) => Some(minus(w, p)),
                        _ => None,
                    };
                    (minus(&whole.0, &f.0), e)
                })
                .collect()
        } else {
            Vec::new()
        };
        (out, prefixes)
    }

    /// (x, |x|, entropy) histograms of the cells `keep` accepts.
    pub fn subset(
        &self,
        keep: impl Fn(usize) -> bool,
    ) -> (Histogram, Histogram, Option<Histogram>) {
        let pick = |v: &[Histogram]| {
            let kept = v
                .iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(_, h)| h);
            sum(kept).unwrap_or_else(|| match v.first() {
                Some(f) => Histogram {
                    lo: f.lo,
                    hi: f.hi,
                    counts: vec![0; f.bins()],
                },
                None => Histogram::new(0.0, 0.0, 1),
            })
        };
        (
            pick(&self.x),
            pick(&self.abs),
            self.entropy.as_deref().map(pick),
        )
    }
}

/// One worker's counters for one cell.
struct Counter {
    pair: PairCounter,
    entropy: Vec<u64>,
}

/// Pass 2's counting per cell: each worker keeps a counter per cell it met (made on first
/// use), folded into the cell's u64 totals before a count could wrap and at the end.
pub(crate) struct CellCounter<'a> {
    layout: &'a Layout,
    edges: PairEdges,
    entropy: Option<&'a NumpyBins>,
    pool: Pool<Vec<Option<Counter>>>,
    totals: Vec<Mutex<PairTotals>>,
}

impl<'a> CellCounter<'a> {
    /// Counters with the layer's edges: x over `[lo, hi]`, |x| over `[0, absmax]`.
    pub(crate) fn new(
        layout: &'a Layout,
        (lo, hi, absmax): (f64, f64, f64),
        entropy: Option<&'a NumpyBins>,
    ) -> Self {
        let totals: Vec<Mutex<PairTotals>> = (0..layout.cells())
            .map(|_| Mutex::new(PairTotals::new(lo, hi, absmax, FINE_BINS)))
            .collect();
        let edges = PairTotals::new(lo, hi, absmax, FINE_BINS).edges();
        CellCounter {
            layout,
            edges,
            entropy,
            pool: Pool::new(),
            totals,
        }
    }

    /// Counts the values of a chunk (of part `pi`, from flat index `first`) in their cells.
    pub(crate) fn add(&self, batches: &Batches, pi: usize, first: usize, values: &[f32]) {
        let cells = self.layout.cells();
        self.pool.with(
            || (0..cells).map(|_| None).collect(),
            |counters| {
                batches.runs(pi, first, values.len(), |batch, r| {
                    let cell = self.layout.cell(batch);
                    let Some(slot) = counters.get_mut(cell) else {
                        return;
                    };
                    let c = slot.get_or_insert_with(|| Counter {
                        pair: PairCounter::with_edges(self.edges),
                        entropy: self.entropy.map_or(Vec::new(), |b| vec![0; b.bins()]),
                    });
                    let v = &values[r];
                    if c.pair.needs_fold(v.len())
                        && let Some(Ok(mut t)) = self.totals.get(cell).map(|t| t.lock())
                    {
                        t.fold(&mut c.pair);
                    }
                    c.pair.add(v);
                    if let Some(b) = self.entropy {
                        b.add(v, &mut c.entropy);
                    }
                });
            },
        );
    }

    /// The cells' histograms, and their sums: the layer's (x, |x|, entropy) histograms.
    pub(crate) fn finish(self) -> (Cells, (Histogram, Histogram, Option<Histogram>)) {
        let n = self.layout.cells();
        let mut totals: Vec<PairTotals> = self
            .totals
            .into_iter()
            .map(|t| t.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut entropy: Vec<Vec<u64>> = (0..n)
            .map(|_| self.entropy.map_or(Vec::new(), |b| vec![0; b.bins()]))
            .collect();
        for counters in self.pool.into_items() {
            for (cell, c) in counters.into_iter().enumerate() {
                if let Some(c) = c {
                    if let Some(t) = totals.get_mut(cell) {
                        t.take(c.pair);
                    }
                    for (t, k) in entropy[cell].iter_mut().zip(c.entropy) {
                        *t += k;
                    }
                }
            }
        }
        let (x, abs): (Vec<Histogram>, Vec<Histogram>) =
            totals.into_iter().map(PairTotals::finish).unzip();
        let entropy = self
            .entropy
            .map(|b| entropy.into_iter().map(|c| b.histogram(c)).collect());
        let cells = Cells {
            layout: self.layout.clone(),
            x,
            abs,
            entropy,
        };
        let whole = cells.subset(|_| true);
        (cells, whole)
    }
}
