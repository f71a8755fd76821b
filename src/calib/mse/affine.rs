//! Our coarse-to-fine search over pairs of bin edges, with the affine zero point.

use rayon::prelude::*;

use super::*;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

/// Σ h·(qdq(c) − c)² for the affine range [lo, hi], with the scheme's own zero point, one
/// range at a time: the reference for `affine_sse_lanes`. `pts` is sorted by centre (bins
/// are). Centres at or beyond the representable ends map to exactly `qp.lo` / `qp.hi` (q
/// clamps to qmin/qmax, and (q − z)·s is the expression `QParams` uses for its ends), so only
/// the centres between them need the division and rounding. One accumulator in bin order:
/// the same sum as a plain loop over `qdq`.
#[cfg(test)]
pub(super) fn affine_sse(pts: &[(f64, f64)], bits: u8, lo: f64, hi: f64) -> f64 {
    let qp = QParams::new(Scheme::Affine, bits, lo, hi);
    let a = pts.partition_point(|&(c, _)| c <= qp.lo);
    let b = a + pts[a..].partition_point(|&(c, _)| c < qp.hi);
    let mut sum = 0.0;
    for &(c, w) in &pts[..a] {
        let d = qp.lo - c;
        sum += w * d * d;
    }
    for &(c, w) in &pts[a..b] {
        let d = qp.qdq(c) - c;
        sum += w * d * d;
    }
    for &(c, w) in &pts[b..] {
        let d = qp.hi - c;
        sum += w * d * d;
    }
    sum
}

/// Indices lo..=hi at the given stride, always including both ends.
pub(super) fn grid(lo: usize, hi: usize, stride: usize) -> impl Iterator<Item = usize> {
    (lo..=hi)
        .step_by(stride)
        .chain((hi > lo && !(hi - lo).is_multiple_of(stride)).then_some(hi))
}

/// Σ h·(qdq(c) − c)² for `LANES` affine ranges at once, each lane adding its terms in bin
/// order (the same sums as a plain loop over `qdq`; independent lanes vectorise). Centres
/// at or beyond a range's representable ends map to exactly `qp.lo` / `qp.hi` (q clamps to
/// qmin/qmax, and (q − z)·s is the expression `QParams` uses for its ends), so only the
/// centres in the union of the lanes' [lo, hi) go through the division and rounding.
#[inline(always)]
pub(super) fn affine_sse_lanes(cs: &[f64], ws: &[f64], qps: &[QParams; LANES]) -> [f64; LANES] {
    let scale = qps.map(|q| q.scale);
    let tlo = qps.map(|q| q.qmin as f64 - q.zero_point as f64);
    let thi = qps.map(|q| q.qmax as f64 - q.zero_point as f64);
    let (lo, hi) = (qps.map(|q| q.lo), qps.map(|q| q.hi));
    let mut a = cs.len();
    let mut b = 0;
    for q in qps {
        let al = cs.partition_point(|&c| c <= q.lo);
        a = a.min(al);
        b = b.max(al + cs[al..].partition_point(|&c| c < q.hi));
    }
    let b = b.max(a);
    let mut acc = [0.0f64; LANES];
    add_clipped(&mut acc, &cs[..a], &ws[..a], &lo);
    for (&c, &w) in cs[a..b].iter().zip(&ws[a..b]) {
        for l in 0..LANES {
            // `QParams::qdq`.
            let d = crate::calib::scheme::rint_clamped(c / scale[l], tlo[l], thi[l]) * scale[l] - c;
            acc[l] += w * d * d;
        }
    }
    add_clipped(&mut acc, &cs[b..], &ws[b..], &hi);
    acc
}

/// [`affine_sse_lanes`] compiled for AVX2 (same operations per lane: the same sums).
#[cfg(target_arch = "x86_64")]
pub(super) fn affine_sse_lanes_avx2(
    _: Avx2,
    cs: &[f64],
    ws: &[f64],
    qps: &[QParams; LANES],
) -> [f64; LANES] {
    #[target_feature(enable = "avx2")]
    fn run(cs: &[f64], ws: &[f64], qps: &[QParams; LANES]) -> [f64; LANES] {
        affine_sse_lanes(cs, ws, qps)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(cs, ws, qps) }
}

/// Prefix sums of w, w·c and w·c² over the nonzero bins' centres (in order), for the lower
/// bound [`ClipFloor::floor`] on an affine range's error, and the totals of w, w·|c| and w·c²
/// for its margin.
pub(super) struct ClipFloor {
    pub(super) p0: Vec<f64>,
    pub(super) p1: Vec<f64>,
    pub(super) p2: Vec<f64>,
    pub(super) totals: [f64; 3],
}

impl ClipFloor {
    pub(super) fn new(cs: &[f64], ws: &[f64]) -> ClipFloor {
        let (p0, p1, p2, totals) = prefix_sums(cs.iter().copied().zip(ws.iter().copied()));
        ClipFloor { p0, p1, p2, totals }
    }

    /// Σ w·(qp.lo − c)² over the centres c ≤ qp.lo plus Σ w·(qp.hi − c)² over the rest with
    /// c ≥ qp.hi: the terms of the range's error (as [`affine_sse`] and [`affine_sse_lanes`]
    /// compute it, bit for bit) whose centres it maps to exactly qp.lo / qp.hi, found by the
    /// same partition; every other term is ≥ 0, so a lower bound on the error. From prefix
    /// sums in O(log n), less `margin` for the rounding of both: if the result exceeds an error
    /// already computed, the range's computed error exceeds it too.
    ///
    /// The margin, with ε = 2^-52, n centres, X = max(|qp.lo|, |qp.hi|) ≥ |x̂| and B = T2 +
    /// 2X·T1 + X²·T0 (T0 = Σw, T1 = Σw·|c|, T2 = Σw·c²), which bounds the error and every
    /// term of the floor: the error adds n nonnegative terms of 4 roundings each in sequence,
    /// ≤ (n + 5)·ε/2·B off its real value; each prefix sum is ≤ (n + 2)·ε/2·T off, a
    /// difference of two ≤ (2n + 5)·ε/2·T, which the multipliers X², 2X, 1 turn into
    /// ≤ (2n + 5)·ε/2·B, plus ≤ 4·ε/2·B for the side's own operations: ≤ (4n + 19)·ε/2·B for
    /// both sides and their sum. In all ≤ (3n + 15)·ε·B; doubled twice for slack, plus an
    /// absolute term for underflow (each operation off by at most 2^-1074, scaled by at most
    /// T0·(1 + X²)). Non-finite sums give a NaN or ∞ margin, so nothing is skipped.
    #[inline(always)]
    pub(super) fn floor(&self, cs: &[f64], qp: &QParams) -> f64 {
        let a = cs.partition_point(|&c| c <= qp.lo);
        let b = a + cs[a..].partition_point(|&c| c < qp.hi);
        let n = cs.len();
        let side = |x: f64, s0: f64, s1: f64, s2: f64| s2 - x * (2.0 * s1 - x * s0);
        let below = side(qp.lo, self.p0[a], self.p1[a], self.p2[a]);
        let above = side(
            qp.hi,
            self.p0[n] - self.p0[b],
            self.p1[n] - self.p1[b],
            self.p2[n] - self.p2[b],
        );
        let [t0, t1, t2] = self.totals;
        let x = qp.lo.abs().max(qp.hi.abs());
        let big = t2 + 2.0 * x * t1 + x * x * t0;
        let nf = n as f64;
        let margin = 4.0 * (3.0 * nf + 16.0) * f64::EPSILON * big
            + 16.0 * (nf + 8.0) * f64::MIN_POSITIVE * (1.0 + t0) * (1.0 + x * x);
        (below + above) - margin
    }
}

/// Pairs a parallel piece of [`best_pair`] scores (whole blocks of `LANES`).
pub(super) const PAIR_PIECE: usize = 4 * LANES;

/// The first pair (in order) with the least error, starting from `init`: scored `LANES` pairs
/// at a time (consecutive pairs have close ranges, so the lanes' union stays narrow) in
/// parallel, reduced in order with a strict `<`, so the result does not depend on the threads.
///
/// With `floor`, a pair whose [`ClipFloor::floor`] exceeds the least error found so far
/// (`init`'s or a scored pair's) is skipped (∞): its own error exceeds that value, so it is
/// neither the least nor, ties included, the first least, whatever order the threads find
/// values in. The lanes hold the next pairs not skipped; each lane's sum does not depend on
/// its neighbours, so the errors are those of scoring every pair.
pub(super) fn best_pair(
    cw: (&[f64], &[f64]),
    bits: u8,
    h: &Histogram,
    pairs: &[(usize, usize)],
    init: (f64, (usize, usize)),
    floor: Option<&ClipFloor>,
) -> (f64, (usize, usize)) {
    let errors = pair_errors(cw, bits, h, pairs, init.0, floor);
    let mut best = init;
    for (&e, &ij) in errors.iter().zip(pairs) {
        if e < best.0 {
            best = (e, ij);
        }
    }
    best
}

/// The error of every pair of [`best_pair`], ∞ for those it skips (`known`: the least error
/// found before, ∞ if none).
pub(super) fn pair_errors(
    (cs, ws): (&[f64], &[f64]),
    bits: u8,
    h: &Histogram,
    pairs: &[(usize, usize)],
    known: f64,
    floor: Option<&ClipFloor>,
) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    let cpu = simd::avx2();
    let found = Found::new(0.0);
    found.lower(known);
    let score = |qps: &[QParams; LANES]| {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = cpu {
            return affine_sse_lanes_avx2(cpu, cs, ws, qps);
        }
        affine_sse_lanes(cs, ws, qps)
    };
    pairs
        .par_chunks(PAIR_PIECE)
        .map(|piece| {
            let mut out = vec![f64::INFINITY; piece.len()];
            let mut qps = [QParams::new(Scheme::Affine, bits, 0.0, 0.0); LANES];
            let mut slot = [0usize; LANES];
            let mut n = 0;
            // Scores the first n lanes; a short block is padded with its last pair and the
            // extra lanes dropped.
            let flush = |qps: &mut [QParams; LANES], slot: &[usize; LANES], n, out: &mut [f64]| {
                for l in n..LANES {
                    qps[l] = qps[n - 1];
                }
                let e = score(qps);
                for l in 0..n {
                    out[slot[l]] = e[l];
                    found.lower(e[l]);
                }
            };
            for (k, &(i, j)) in piece.iter().enumerate() {
                let qp = QParams::new(Scheme::Affine, bits, h.edge(i), h.edge(j));
                // NaN never skips (the comparison is false).
                if floor.is_some_and(|f| found.skips(f.floor(cs, &qp))) {
                    continue;
                }
                (qps[n], slot[n]) = (qp, k);
                n += 1;
                if n == LANES {
                    flush(&mut qps, &slot, n, &mut out);
                    n = 0;
                }
            }
            if n > 0 {
                flush(&mut qps, &slot, n, &mut out);
            }
            out
        })
        .collect::<Vec<_>>()
        .concat()
}

/// Affine MSE calibration on the signed histogram over `[min, max]`.
///
/// Our choice among the reference page's options: a search over pairs of bin edges,
/// lo = edge(i), hi = edge(j) with 0 ≤ i ≤ z ≤ j ≤ N (z = the bin holding 0; 0 if min ≥ 0,
/// N−1 if max ≤ 0), minimising Σ_k h[k]·(qdq(c[k]) − c[k])² where qdq is
/// `QParams::new(Scheme::Affine, bits, lo, hi)` (range widened to contain 0, the scheme's
/// zero point, round half to even). Exhaustive search is ~N²/4 pairs × N bins, so it runs
/// coarse to fine in three levels:
/// 1. every pair on the grid i ∈ {0, 64, 128, …, z}, j ∈ {z, z+64, …, N} (ends included);
/// 2. stride 8 over i*±64, j*±64 around the best pair (i*, j*) so far;
/// 3. stride 1 over i*±8, j*±8 around the new best.
///
/// (about 870 pairs for 2048 bins with 0 in the middle, against 2.1M exhaustive; a single
/// stride-16 pass would score 4225.) Pairs already scored are skipped; ties keep the first
/// minimum in that order (level, then i, then j ascending). Each error is exact for the bin
/// centres; the search may miss a global minimum the coarse grid steps over (an error
/// surface with several valleys narrower than 64 bins). `candidates` = distinct pairs scored.
/// An empty histogram returns `[min, max]` with 0 candidates. A pair whose clipped terms
/// alone ([`ClipFloor`]) provably exceed the least error found so far is not scored: it
/// could not be chosen, so the answer is the one scoring every pair gives.
pub fn affine(signed_hist: &Histogram, bits: u8) -> Search {
    affine_pruned(signed_hist, bits, true)
}

/// [`affine`], skipping pairs by their [`ClipFloor`] only if `prune` (the tests compare both).
pub(super) fn affine_pruned(signed_hist: &Histogram, bits: u8, prune: bool) -> Search {
    let nbins = signed_hist.bins();
    let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(signed_hist).into_iter().unzip();
    if cs.is_empty() {
        return Search {
            lo: signed_hist.lo,
            hi: signed_hist.hi,
            candidates: 0,
        };
    }
    let floor = prune.then(|| ClipFloor::new(&cs, &ws));
    let z = signed_hist.bin_of(0.0);
    let mut seen = std::collections::HashSet::new();
    let mut best: (f64, (usize, usize)) = (f64::INFINITY, (0, nbins));
    // (stride, half-width of the window around the best pair so far; None: everything).
    let levels: [(usize, Option<usize>); 3] = [(64, None), (8, Some(64)), (1, Some(8))];
    for (stride, reach) in levels {
        let (ci, cj) = best.1;
        let (i_lo, i_hi, j_lo, j_hi) = match reach {
            None => (0, z, z, nbins),
            Some(r) => (
                ci.saturating_sub(r),
                (ci + r).min(z),
                cj.saturating_sub(r).max(z),
                (cj + r).min(nbins),
            ),
        };
        let pairs: Vec<(usize, usize)> = grid(i_lo, i_hi, stride)
            .flat_map(|i| grid(j_lo, j_hi, stride).map(move |j| (i, j)))
            .filter(|ij| seen.insert(*ij))
            .collect();
        best = best_pair((&cs, &ws), bits, signed_hist, &pairs, best, floor.as_ref());
    }
    let (bi, bj) = best.1;
    Search {
        lo: signed_hist.edge(bi),
        hi: signed_hist.edge(bj),
        candidates: seen.len(),
    }
}
