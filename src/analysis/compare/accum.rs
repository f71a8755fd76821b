//! The per-chunk accumulators of a comparison: f64 sums merged in chunk order (so the result
//! does not depend on the thread count), integer counts, and log-spaced histograms of r, t and
//! t − r from which the 99th percentile of |t − r| and the display histograms come.

use crate::histogram::{Histogram, PackedHistogram};

use super::model::PairHistograms;

/// Sub-bins per power of two of the error histogram: bins 2^-7 wide relative to their lower
/// edge, so a bin's midpoint is within 2^-8 (0.39%) of any value in it.
pub const ERROR_SUB_BITS: u32 = 7;
/// Sub-bins per power of two of the r and t histograms (drawing only).
pub const VALUE_SUB_BITS: u32 = 5;
/// Bins of the display histograms.
pub const DISPLAY_BINS: usize = 2048;

/// Signed log-spaced bins over the finite f32 values: index order is value order. Each sign
/// has 255·2^sub bins, one per (exponent, top `sub` mantissa bits) of |x|.
#[derive(Clone, Copy, Debug)]
pub struct LogBins {
    pub sub: u32,
}

impl LogBins {
    fn half(self) -> usize {
        255 << self.sub
    }

    /// Bins over both signs.
    pub fn count(self) -> usize {
        2 * self.half()
    }

    /// The bin of a finite value; ±inf (an error beyond the f32 range) goes to the end bins.
    #[inline(always)]
    pub fn index(self, v: f32) -> usize {
        let bits = v.to_bits();
        let mag = (bits & 0x7FFF_FFFF).min(0x7F7F_FFFF);
        let b = (mag >> (23 - self.sub)) as usize;
        if bits >> 31 == 1 {
            self.half() - 1 - b
        } else {
            self.half() + b
        }
    }

    /// Lower edge of the magnitude bin `b` (`b = 255·2^sub` is +inf).
    fn magnitude(self, b: usize) -> f64 {
        f64::from(f32::from_bits((b as u32) << (23 - self.sub)))
    }

    /// `[lo, hi]` of bin `i` in value space.
    pub fn bounds(self, i: usize) -> (f64, f64) {
        let h = self.half();
        if i >= h {
            let b = i - h;
            (self.magnitude(b), self.magnitude(b + 1))
        } else {
            let b = h - 1 - i;
            (-self.magnitude(b + 1), -self.magnitude(b))
        }
    }
}

pub const VALUE_BINS: LogBins = LogBins {
    sub: VALUE_SUB_BITS,
};
pub const ERROR_BINS: LogBins = LogBins {
    sub: ERROR_SUB_BITS,
};

/// Integer histograms of one worker (order-free sums, so pooled across chunks).
pub struct Hists {
    pub r: Vec<u64>,
    pub t: Vec<u64>,
    pub e: Vec<u64>,
}

impl Default for Hists {
    fn default() -> Hists {
        Hists {
            r: vec![0; VALUE_BINS.count()],
            t: vec![0; VALUE_BINS.count()],
            e: vec![0; ERROR_BINS.count()],
        }
    }
}

impl Hists {
    pub fn merge(&mut self, o: &Hists) {
        for (a, b) in [
            (&mut self.r, &o.r),
            (&mut self.t, &o.t),
            (&mut self.e, &o.e),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// The sums and counts of one chunk (or several merged in order).
#[derive(Clone, Debug)]
pub struct Sums {
    /// Positions where both values are finite.
    pub count: u64,
    pub rr: f64,
    pub tt: f64,
    pub rt: f64,
    pub ee: f64,
    pub abs_e: f64,
    /// Largest |t − r| and its flat index (the first on ties); −1 before any.
    pub max_abs: f64,
    pub worst: Option<usize>,
    /// Largest |t − r|/|r| over r ≠ 0; −1 before any.
    pub max_rel: f64,
    pub allclose: u64,
    pub nan_mismatch: u64,
    pub inf_mismatch: u64,
    /// Exact zeros of t − r (for the percentile: they sit in the first bin with tiny values).
    pub zero_e: u64,
    /// Finite extremes of r, t and t − r (the display ranges).
    pub r_range: (f32, f32),
    pub t_range: (f32, f32),
    pub e_range: (f32, f32),
}

const EMPTY: (f32, f32) = (f32::INFINITY, f32::NEG_INFINITY);

impl Default for Sums {
    fn default() -> Self {
        Sums {
            count: 0,
            rr: 0.0,
            tt: 0.0,
            rt: 0.0,
            ee: 0.0,
            abs_e: 0.0,
            max_abs: -1.0,
            worst: None,
            max_rel: -1.0,
            allclose: 0,
            nan_mismatch: 0,
            inf_mismatch: 0,
            zero_e: 0,
            r_range: EMPTY,
            t_range: EMPTY,
            e_range: EMPTY,
        }
    }
}

fn join(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    (a.0.min(b.0), a.1.max(b.1))
}

impl Sums {
    /// Merges a later chunk (ties of the worst error keep the earlier position).
    pub fn merge(&mut self, o: &Sums) {
        self.count += o.count;
        self.rr += o.rr;
        self.tt += o.tt;
        self.rt += o.rt;
        self.ee += o.ee;
        self.abs_e += o.abs_e;
        if o.max_abs > self.max_abs {
            self.max_abs = o.max_abs;
            self.worst = o.worst;
        }
        self.max_rel = self.max_rel.max(o.max_rel);
        self.allclose += o.allclose;
        self.nan_mismatch += o.nan_mismatch;
        self.inf_mismatch += o.inf_mismatch;
        self.zero_e += o.zero_e;
        self.r_range = join(self.r_range, o.r_range);
        self.t_range = join(self.t_range, o.t_range);
        self.e_range = join(self.e_range, o.e_range);
    }

    /// Shifts the flat index of the worst error by `offset` (a later batch file).
    pub fn offset(mut self, offset: usize) -> Sums {
        self.worst = self.worst.map(|w| w + offset);
        self
    }
}

/// Values per block of [`chunk`]: the branch-free part runs over a block, then the rare cases
/// (a new worst error, non-finite values) look at that block again.
const BLOCK: usize = 256;
/// Independent accumulators per quantity: value i of a block goes to lane i mod 8, so the
/// additions of consecutive values overlap and the lane loop vectorises (with AVX2 where the
/// CPU has it; the portable path keeps the same lanes, so the sums are identical).
const LANES: usize = 8;

/// The float sums of a chunk, per lane.
#[derive(Default)]
struct LaneSums {
    rr: [f64; LANES],
    tt: [f64; LANES],
    rt: [f64; LANES],
    ee: [f64; LANES],
    ae: [f64; LANES],
}

/// The order-free facts of one block, per lane.
struct BlockLanes {
    n: [u64; LANES],
    fails: [u64; LANES],
    zeros: [u64; LANES],
    nonzero_r: [u64; LANES],
    max_abs: [f64; LANES],
    max_rel: [f64; LANES],
    elo: [f32; LANES],
    ehi: [f32; LANES],
}

impl BlockLanes {
    fn new() -> Self {
        BlockLanes {
            n: [0; LANES],
            fails: [0; LANES],
            zeros: [0; LANES],
            nonzero_r: [0; LANES],
            max_abs: [0.0; LANES],
            max_rel: [0.0; LANES],
            elo: [f32::INFINITY; LANES],
            ehi: [f32::NEG_INFINITY; LANES],
        }
    }
}

fn total(l: &[f64; LANES]) -> f64 {
    let mut pairs = [0.0; LANES / 2];
    for (p, c) in pairs.iter_mut().zip(l.chunks_exact(2)) {
        *p = c[0] + c[1];
    }
    (pairs[0] + pairs[1]) + (pairs[2] + pairs[3])
}

/// One position into lane `k`; returns its error-histogram bin (`u32::MAX`: not counted).
/// Positions that are not finite on both sides enter every sum as 0 and no count.
#[inline(always)]
fn step(l: &mut LaneSums, b: &mut BlockLanes, k: usize, a: f32, c: f32, tol: (f64, f64)) -> u32 {
    let m = a.is_finite() & c.is_finite();
    let rd = if m { f64::from(a) } else { 0.0 };
    let td = if m { f64::from(c) } else { 0.0 };
    let e = td - rd;
    let ae = e.abs();
    let ar = rd.abs();
    l.rr[k] += rd * rd;
    l.tt[k] += td * td;
    l.rt[k] += rd * td;
    l.ee[k] += e * e;
    l.ae[k] += ae;
    b.n[k] += u64::from(m);
    b.fails[k] += u64::from(ae > tol.0 + tol.1 * ar);
    b.zeros[k] += u64::from(m & (e == 0.0));
    b.nonzero_r[k] += u64::from(ar > 0.0);
    b.max_abs[k] = b.max_abs[k].max(ae);
    let rel = if ar > 0.0 { ae / ar } else { 0.0 };
    b.max_rel[k] = b.max_rel[k].max(rel);
    let ef = e as f32;
    // The display range: errors where both are finite, short of f32 overflow.
    let fin = m & ef.is_finite();
    b.elo[k] = if fin && ef < b.elo[k] { ef } else { b.elo[k] };
    b.ehi[k] = if fin && ef > b.ehi[k] { ef } else { b.ehi[k] };
    if m {
        ERROR_BINS.index(ef) as u32
    } else {
        u32::MAX
    }
}

/// One chunk: `r` and `t` are the same elements of both sides, `first` the index of the first.
/// `values`: also count r and t into their (display) histograms.
pub fn chunk(
    first: usize,
    r: &[f32],
    t: &[f32],
    tol: (f64, f64),
    values: bool,
    h: &mut Hists,
) -> Sums {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { chunk_avx2(first, r, t, tol, values, h) };
    }
    chunk_lanes(first, r, t, tol, values, h)
}

/// The same code compiled for AVX2 (same lanes, same arithmetic, same sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn chunk_avx2(
    first: usize,
    r: &[f32],
    t: &[f32],
    tol: (f64, f64),
    values: bool,
    h: &mut Hists,
) -> Sums {
    chunk_lanes(first, r, t, tol, values, h)
}

#[inline(always)]
fn chunk_lanes(
    first: usize,
    r: &[f32],
    t: &[f32],
    tol: (f64, f64),
    values: bool,
    h: &mut Hists,
) -> Sums {
    let mut s = Sums::default();
    let mut lanes = LaneSums::default();
    let mut idx = [0u32; BLOCK];
    for (bi, (rb, tb)) in r.chunks(BLOCK).zip(t.chunks(BLOCK)).enumerate() {
        let base = first + bi * BLOCK;
        let mut b = BlockLanes::new();
        let whole = rb.len() / LANES * LANES;
        for ((ix, rc), tc) in idx[..whole]
            .chunks_exact_mut(LANES)
            .zip(rb[..whole].chunks_exact(LANES))
            .zip(tb[..whole].chunks_exact(LANES))
        {
            for k in 0..LANES {
                ix[k] = step(&mut lanes, &mut b, k, rc[k], tc[k], tol);
            }
        }
        for i in whole..rb.len() {
            idx[i] = step(&mut lanes, &mut b, i % LANES, rb[i], tb[i], tol);
        }
        let n: u64 = b.n.iter().sum();
        s.count += n;
        s.allclose += b.fails.iter().sum::<u64>();
        s.zero_e += b.zeros.iter().sum::<u64>();
        if b.nonzero_r.iter().any(|&c| c > 0) {
            s.max_rel = b.max_rel.iter().fold(s.max_rel, |x, &y| x.max(y));
        }
        let lo = b.elo.iter().fold(s.e_range.0, |x, &y| x.min(y));
        let hi = b.ehi.iter().fold(s.e_range.1, |x, &y| x.max(y));
        s.e_range = (lo, hi);
        for &i in &idx[..rb.len()] {
            if let Some(c) = h.e.get_mut(i as usize) {
                *c += 1;
            }
        }
        let bmax = b.max_abs.iter().fold(0.0f64, |x, &y| x.max(y));
        if n > 0 && bmax > s.max_abs {
            // The first finite position holding the block's largest error.
            let at = rb.iter().zip(tb).position(|(&a, &c)| {
                a.is_finite() && c.is_finite() && (f64::from(c) - f64::from(a)).abs() == bmax
            });
            s.max_abs = bmax;
            s.worst = at.map(|i| base + i);
        }
        if n < rb.len() as u64 {
            for (&a, &c) in rb.iter().zip(tb) {
                if !(a.is_finite() & c.is_finite()) {
                    mismatch(&mut s, a, c);
                }
            }
        }
        if values {
            count_values(&mut h.r, &mut s.r_range, rb, &mut idx);
            count_values(&mut h.t, &mut s.t_range, tb, &mut idx);
        }
    }
    s.rr = total(&lanes.rr);
    s.tt = total(&lanes.tt);
    s.rt = total(&lanes.rt);
    s.ee = total(&lanes.ee);
    s.abs_e = total(&lanes.ae);
    s
}

/// A position where at least one side is not finite.
fn mismatch(s: &mut Sums, a: f32, c: f32) {
    let (an, cn) = (a.is_nan(), c.is_nan());
    if an != cn {
        s.nan_mismatch += 1;
    } else if !an && a != c {
        // No NaN, at least one infinite: one side only, or opposite signs.
        s.inf_mismatch += 1;
    }
}

/// The finite values of one side of a block into its histogram and range.
fn count_values(hist: &mut [u64], range: &mut (f32, f32), v: &[f32], idx: &mut [u32; BLOCK]) {
    let (mut lo, mut hi) = *range;
    for (slot, &x) in idx.iter_mut().zip(v) {
        let fin = x.is_finite();
        *slot = if fin {
            VALUE_BINS.index(x) as u32
        } else {
            u32::MAX
        };
        lo = if fin && x < lo { x } else { lo };
        hi = if fin && x > hi { x } else { hi };
    }
    *range = (lo, hi);
    for &i in &idx[..v.len()] {
        if let Some(c) = hist.get_mut(i as usize) {
            *c += 1;
        }
    }
}

/// Nearest-rank 99th percentile of |t − r| from the error histogram: the midpoint of the bin
/// holding rank ⌈0.99·n⌉, at most the exact maximum; exact 0 when that rank is a zero.
pub fn p99_abs(e: &[u64], s: &Sums) -> f64 {
    let n = s.count;
    if n == 0 {
        return f64::NAN;
    }
    let k = (99 * u128::from(n)).div_ceil(100) as u64;
    if k <= s.zero_e {
        return 0.0;
    }
    let half = e.len() / 2;
    let mut seen = 0u64;
    for b in 0..half {
        seen += e[half + b] + e[half - 1 - b];
        if seen >= k {
            let (lo, hi) = ERROR_BINS.bounds(half + b);
            return (0.5 * (lo + hi)).min(s.max_abs);
        }
    }
    s.max_abs
}

/// A display histogram of `bins` equal bins over the finite range `range`, from log-spaced
/// counts: each log bin's count is spread over the display bins it overlaps, in proportion.
pub fn display(log: &[u64], bins: LogBins, range: (f32, f32), n: usize) -> PackedHistogram {
    let (lo, hi) = if range.0 <= range.1 {
        (f64::from(range.0), f64::from(range.1))
    } else {
        (0.0, 0.0)
    };
    let mut h = Histogram::new(lo, hi, n);
    for (i, &c) in log.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (a, b) = bins.bounds(i);
        let (a, b) = (a.max(lo), b.min(h.hi));
        let (ia, ib) = (h.bin_of(a), h.bin_of(b));
        if ia >= ib || b <= a {
            h.counts[ia] += c;
            continue;
        }
        // Cumulative rounding keeps the total exact.
        let mut given = 0u64;
        for k in ia..=ib {
            let right = if k == ib { b } else { h.edge(k + 1).min(b) };
            let upto = if k == ib {
                c
            } else {
                ((c as f64) * (right - a) / (b - a)).round() as u64
            };
            let upto = upto.clamp(given, c);
            h.counts[k] += upto - given;
            given = upto;
        }
    }
    PackedHistogram::pack(&h)
}

/// The three display histograms of a pair.
pub fn histograms(h: &Hists, s: &Sums) -> PairHistograms {
    PairHistograms {
        reference: display(&h.r, VALUE_BINS, s.r_range, DISPLAY_BINS),
        test: display(&h.t, VALUE_BINS, s.t_range, DISPLAY_BINS),
        error: display(&h.e, ERROR_BINS, s.e_range, DISPLAY_BINS),
    }
}

/// The multi-index of flat position `flat` (in file order) of an array of `shape`.
pub fn unravel(mut flat: usize, shape: &[usize], fortran: bool) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    let axes: Vec<usize> = if fortran {
        (0..shape.len()).collect()
    } else {
        (0..shape.len()).rev().collect()
    };
    for a in axes {
        let d = shape[a].max(1);
        idx[a] = flat % d;
        flat /= d;
    }
    idx
}
