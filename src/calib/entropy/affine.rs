//! ONNX Runtime's entropy calibration (`HistogramCollector.get_entropy_threshold`).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::*;
use crate::histogram::NumpyBins;

/// ONNX Runtime's `smooth_distribution` in float32, as it computes it, on `v` holding the
/// counts as f32: zeros become f32(eps), nonzero entries f32(count) − f32(eps·#zeros/
/// #nonzeros) (that quotient in f64). `false` where ORT gives up (all zero: its None, scored
/// ∞) or would fail its assertion (eps1 ≥ 1: only windows of over 10⁴ bins, almost all empty).
pub(super) fn smooth32(v: &mut [f32]) -> bool {
    let zeros = v.iter().filter(|&&c| c == 0.0).count();
    let nonzeros = v.len() - zeros;
    if nonzeros == 0 {
        return false;
    }
    let eps1 = ORT_EPS * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return false;
    }
    let (eps, eps1) = (ORT_EPS as f32, eps1 as f32);
    for c in v.iter_mut() {
        *c = if *c == 0.0 { eps } else { *c - eps1 };
    }
    true
}

/// float32 ln for numpy's `np.log` on float32: the f64 logarithm rounded to f32 (numpy's SIMD
/// float32 log, which differs by CPU, is up to 4 ulps from it; see [`ort_window_kl`]).
#[inline]
pub(super) fn ln32(x: f32) -> f32 {
    f64::from(x).ln() as f32
}

/// ORT's `entropy(p, q)` on smoothed float32 vectors, in float32 as it computes it: each
/// normalised by its numpy (pairwise) sum, `rel_entr` = p·ln(p/q) (0 for p = 0 ≤ q, ∞ where
/// either is not positive), summed pairwise. Overwrites `p` and `q`.
pub(super) fn entropy32(p: &mut [f32], q: &mut [f32]) -> f32 {
    let (ps, qs) = (pairwise_sum(p), pairwise_sum(q));
    for x in p.iter_mut() {
        *x /= ps;
    }
    for x in q.iter_mut() {
        *x /= qs;
    }
    // Reuse p for the terms: each p[j] is read before it is overwritten.
    for (pj, &qj) in p.iter_mut().zip(q.iter()) {
        *pj = if *pj > 0.0 && qj > 0.0 {
            *pj * ln32(*pj / qj)
        } else if *pj == 0.0 && qj >= 0.0 {
            0.0
        } else {
            f32::INFINITY
        };
    }
    pairwise_sum(p)
}

/// ORT's divergence of one window `slice` (bins [l, r)) with `below`/`above` counts outside
/// it, in float32 as `get_entropy_threshold` computes it (`p` and `q`: scratch of at least
/// `slice.len()`):
/// * p = the window, the outlier counts added to its first and last bins;
/// * q = the window without outliers in nq chunks of ⌊len/nq⌋ bins (the remainder's mass goes
///   to the last chunk, the remainder bins stay 0); each chunk's mass / #(nonzero p bins in
///   it) fills every bin of the chunk, truncated to an integer (ORT's int64 q);
/// * both smoothed ([`smooth32`]) and compared by [`entropy32`].
///
/// The one operation not reproduced bit for bit is numpy's float32 log (SIMD code that differs
/// by CPU): [`ln32`] rounds the f64 one. On the reference dumps (numpy 2.4, AVX-512) that
/// changes ~15 % of ORT's divergences, by at most 2·10⁻⁶, and none of its choices.
pub(super) fn ort_window_kl(
    slice: &[u64],
    below: u64,
    above: u64,
    nq: usize,
    p: &mut [f32],
    q: &mut [f32],
) -> f32 {
    let len = slice.len();
    let (p, q) = (&mut p[..len], &mut q[..len]);
    let p_count = |j: usize| {
        let mut c = slice[j];
        if j == 0 {
            c = c.saturating_add(below);
        }
        if j == len - 1 {
            c = c.saturating_add(above);
        }
        c
    };
    let merged = len / nq;
    for (j, pj) in p.iter_mut().enumerate() {
        *pj = p_count(j) as f32;
    }
    q.fill(0.0);
    for idx in 0..nq {
        let (s, e) = (idx * merged, idx * merged + merged);
        let mut m = count_sum(&slice[s..e]);
        if idx == nq - 1 {
            m = m.saturating_add(count_sum(&slice[nq * merged..]));
        }
        let norm = p[s..e].iter().filter(|&&c| c != 0.0).count();
        if norm != 0 {
            // int64(m / norm), then to float32 (one rounding of the integer).
            q[s..e].fill((u64_f64(m) / usize_f64(norm)).trunc() as f32);
        }
    }
    if !smooth32(p) || !smooth32(q) {
        return f32::INFINITY;
    }
    entropy32(p, q)
}

/// Affine entropy calibration: ONNX Runtime's `HistogramCollector.get_entropy_threshold`
/// (onnxruntime/quantization/calibrate.py, what `CalibrationMethod.Entropy` gives every ORT
/// user) on `hist`, x over `[−max|x|, max|x|]` with numpy's edges ([`NumpyBins`] of
/// `(hist.lo, hist.hi)` as f32, as `collect_value` makes it), and the data's `[min, max]`:
/// * zero bin z = N/2; windows of bins `[z−i, min(z+i+1, N))` for i = nq/2 ..= z (one bin
///   wider on the + side), nq = 2^(b−1) quantized bins (ORT's default 128 at 8 bits);
/// * each window scored by [`ort_window_kl`] (float32, as ORT);
/// * the **first** minimum wins (`np.argmin`; if every window is ∞, the first window); the
///   range is its edges (edges[z−i], edges[z+i+1]) clipped to `[min, max]`.
///
/// Evaluating every window literally costs one ln per bin of the window. Instead every window
/// is scored with a closed form of its exact divergence from prefix sums (O(1) per window
/// after one pass per chunk width, see `AffineContext::fast_kl`), and only the windows whose
/// float32 divergence may be (or tie) the least are scored as ORT does
/// ([`AffineContext::recheck_cut`]), so the choice, ties included, is the literal search's.
///
/// ORT quirks kept: q's last len mod nq bins stay 0 (every window but the full one has such
/// bins), so windows whose remainder lies in an empty tail score well; one-sided data uses
/// half the histogram (its bins on the other side of 0 stay empty). Where ORT fails we return
/// `[min, max]` with 0 candidates: nq/2 > z (over 12 bits at 2048 bins; ORT's `np.zeros` of
/// a negative size).
pub fn affine(hist: &Histogram, min: f64, max: f64, bits: u8) -> Search {
    let nbins = hist.bins();
    let nq = 1usize << (clamp_bits(bits) - 1);
    let bins = NumpyBins::new(hist.lo as f32, hist.hi as f32, nbins);
    let edges = bins.edges();
    let clip = |(l, r): (usize, usize)| {
        let (lo, hi) = (f64::from(edges[l]), f64::from(edges[r]));
        (
            if lo < min { min } else { lo },
            if hi > max { max } else { hi },
        )
    };
    let windows = affine_windows(nbins, nq);
    let Some(&first) = windows.first() else {
        let (lo, hi) = clip((0, nbins));
        return Search {
            lo,
            hi,
            candidates: 0,
        };
    };
    let candidates = windows.len();
    let h = &hist.counts;
    let mut best = (f32::INFINITY, first);
    if count_sum(h) > 0 {
        let ctx = AffineContext::new(h, nq);
        // Fast pass in parallel chunks; the choice below does not depend on the threads.
        let fast = ctx.fast_pass(&windows);
        let m = fast.iter().copied().fold(f64::INFINITY, f64::min);
        let within = if m < f64::INFINITY {
            ctx.recheck_cut(m) - m
        } else {
            0.0
        };
        let mut p = vec![0.0f32; nbins];
        let mut q = vec![0.0f32; nbins];
        for k in near_minimum(&fast, within) {
            let (l, r) = windows[k];
            let kl = ort_window_kl(
                &h[l..r],
                ctx.mass[l],
                ctx.total - ctx.mass[r],
                nq,
                &mut p,
                &mut q,
            );
            // Strict `<` in window order keeps the first minimum (ORT's `np.argmin`).
            if kl < best.0 {
                best = (kl, (l, r));
            }
        }
    }
    let (lo, hi) = clip(best.1);
    Search { lo, hi, candidates }
}

/// The candidate windows [l, r) of [`affine`] in ORT's order (each at least nq bins).
pub(super) fn affine_windows(nbins: usize, nq: usize) -> Vec<(usize, usize)> {
    let z = nbins / 2;
    (nq / 2..=z)
        .map(|i| (z - i, (z + i + 1).min(nbins)))
        .collect()
}

/// `x as f64`, bit for bit, by the signed conversion where it is exact (x < 2^63: one
/// instruction on x86-64, where the unsigned one takes a branchy sequence).
#[inline]
pub(super) fn u64_f64(x: u64) -> f64 {
    match i64::try_from(x) {
        Ok(i) => i as f64,
        Err(_) => x as f64,
    }
}

/// `x as f64` for a bin count or index (at most isize::MAX, so the signed conversion is the
/// same value): see [`u64_f64`].
#[inline]
pub(super) fn usize_f64(x: usize) -> f64 {
    x as i64 as f64
}

/// A q chunk's value v = ⌊m/norm⌋ (ORT's int64 q), 0 where its p bins are all 0.
#[inline]
pub(super) fn chunk_value(m: u64, norm: usize) -> f64 {
    if norm != 0 {
        (u64_f64(m) / usize_f64(norm)).trunc()
    } else {
        0.0
    }
}

/// The p side of an affine window ([`AffineContext::window_p`]): its length, chunk width,
/// the outlier counts below and above it, whether they make an empty end bin nonzero, its
/// zero bins and p's smoothing step e1p.
#[derive(Clone, Copy)]
pub(super) struct WindowP {
    pub(super) len: usize,
    pub(super) w: usize,
    pub(super) below: u64,
    pub(super) above: u64,
    pub(super) first_extra: usize,
    pub(super) last_extra: usize,
    pub(super) zp: usize,
    pub(super) e1p: f64,
}

/// Largest Taylor remainder (on the KL scale) the fast pass accepts on each side (p and q);
/// windows whose bound is larger use one logarithm per bin (p) or chunk (q) there instead.
pub(super) const TAYLOR_MAX: f64 = 1e-11;

/// What the fast pass reads of one chunk of an affine window: its value v (0 where its p bins
/// are all 0), ln v and 1/v (0 where v = 0), its p mass and nonzero p bins as f64, and
/// eps·(zero p bins), i.e. the operands of S_c = p mass − e1p·nonzero + eps·zeros.
#[derive(Clone, Copy)]
pub(super) struct ChunkVals {
    pub(super) v: f64,
    pub(super) ln_v: f64,
    pub(super) inv_v: f64,
    pub(super) pm: f64,
    pub(super) norm: f64,
    pub(super) eps_zeros: f64,
}

impl ChunkVals {
    #[inline]
    pub(super) fn new(m: u64, norm: usize, pm: u64, w: usize) -> ChunkVals {
        let v = chunk_value(m, norm);
        let (ln_v, inv_v) = if v == 0.0 {
            (0.0, 0.0)
        } else {
            (v.ln(), 1.0 / v)
        };
        ChunkVals {
            v,
            ln_v,
            inv_v,
            pm: u64_f64(pm),
            norm: usize_f64(norm),
            eps_zeros: ORT_EPS * usize_f64(w - norm),
        }
    }
}

/// The middle chunks (no outliers, no remainder) of affine windows of one chunk width w, as
/// prefix sums along each chain of chunks [s, s+w), [s+w, s+2w), … from `base`: entry e
/// (at e − base) sums the chunks of e's chain that start at or after `base` and end at or
/// before e, so the middle chunks [l+w, l+(nq−1)·w) of a window with l + w ≥ base cost one
/// difference per sum instead of nq − 2 chunk visits. Each chunk's S_c = b − e1p·n
/// (b = p mass + eps·zeros, n = nonzero bins) is linear in the window's e1p, so the sums are
/// kept separately for b and n; per v > 0 chunk the b and n sums weight 1, ln v, 1/v, 1/v²,
/// 1/v³ (`sums`: b·those in 0..5, n·those in 5..10, v in 10); `zeros` counts v = 0 chunks.
pub(super) struct ChunkChain {
    pub(super) base: usize,
    pub(super) sums: Vec<[f64; 11]>,
    pub(super) zeros: Vec<usize>,
}

impl ChunkChain {
    /// The chain's entries base..=top (top < mass.len()).
    pub(super) fn new(mass: &[u64], nz: &[usize], w: usize, base: usize, top: usize) -> ChunkChain {
        let n = top + 1 - base.min(top + 1);
        // Pushed rather than zero-filled and overwritten: the fill cost as much as the sums.
        let mut sums = Vec::with_capacity(n);
        let mut zeros = Vec::with_capacity(n);
        for _ in 0..w.min(n) {
            sums.push([0.0f64; 11]);
            zeros.push(0usize);
        }
        for k in w..n {
            let (e, s) = (base + k, base + k - w);
            let (m, norm) = (mass[e] - mass[s], nz[e] - nz[s]);
            let cv = ChunkVals::new(m, norm, m, w);
            let (mut acc, mut z) = (sums[k - w], zeros[k - w]);
            if cv.v == 0.0 {
                z += 1;
            } else {
                let b = cv.pm + cv.eps_zeros;
                let inv2 = cv.inv_v * cv.inv_v;
                let weights = [1.0, cv.ln_v, cv.inv_v, inv2, inv2 * cv.inv_v];
                for (k, &x) in weights.iter().enumerate() {
                    acc[k] += b * x;
                    acc[5 + k] += cv.norm * x;
                }
                acc[10] += cv.v;
            }
            sums.push(acc);
            zeros.push(z);
        }
        ChunkChain { base, sums, zeros }
    }
}

/// acc += t, elementwise (the fast pass's chunk sums).
#[inline]
pub(super) fn add_terms(acc: &mut [f64; 6], t: [f64; 6]) {
    for (a, x) in acc.iter_mut().zip(t) {
        *a += x;
    }
}

/// Prefix sums over the counts h for [`AffineContext::fast_kl`] (entry k covers bins j < k;
/// the sums of functions of h run over h > 0 only).
pub(super) struct AffineContext<'a> {
    pub(super) h: &'a [u64],
    pub(super) mass: Vec<u64>,
    pub(super) nonzero: Vec<usize>,
    /// Σ h·ln h.
    pub(super) hlnh: Vec<f64>,
    /// Σ ln h.
    pub(super) lnh: Vec<f64>,
    /// Σ 1/h.
    pub(super) inv: Vec<f64>,
    /// Σ 1/h².
    pub(super) inv2: Vec<f64>,
    pub(super) total: u64,
    pub(super) nq: usize,
    /// [`ChunkChain`] by chunk width − 1, built on first use (any thread; the same values).
    pub(super) chains: Vec<OnceLock<ChunkChain>>,
    /// By chunk width − 1, the entries its chain covers: from the least l + w to the greatest
    /// l + (nq−1)·w of the [`affine_windows`] of that width (other windows visit their chunks).
    spans: Vec<(usize, usize)>,
    /// [`Self::tolerance`] and [`Self::f32_error`] of the histogram.
    tol: f64,
    f32_err: (f64, f64),
}

impl<'a> AffineContext<'a> {
    pub(super) fn new(h: &'a [u64], nq: usize) -> Self {
        let n = h.len() + 1;
        let mut ctx = AffineContext {
            h,
            mass: Vec::with_capacity(n),
            nonzero: Vec::with_capacity(n),
            hlnh: Vec::with_capacity(n),
            lnh: Vec::with_capacity(n),
            inv: Vec::with_capacity(n),
            inv2: Vec::with_capacity(n),
            total: 0,
            nq,
            chains: (0..h.len() / nq).map(|_| OnceLock::new()).collect(),
            spans: vec![(usize::MAX, 0); h.len() / nq],
            tol: 0.0,
            f32_err: Self::f32_error(h.len()),
        };
        let (mut m, mut z) = (0u64, 0usize);
        let (mut s1, mut s2, mut s3, mut s4) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let push = |ctx: &mut Self, m, z, s1, s2, s3, s4| {
            ctx.mass.push(m);
            ctx.nonzero.push(z);
            ctx.hlnh.push(s1);
            ctx.lnh.push(s2);
            ctx.inv.push(s3);
            ctx.inv2.push(s4);
        };
        push(&mut ctx, m, z, s1, s2, s3, s4);
        for &c in h {
            m = m.saturating_add(c);
            if c > 0 {
                let c = c as f64;
                let ln = c.ln();
                z += 1;
                s1 += c * ln;
                s2 += ln;
                s3 += 1.0 / c;
                s4 += 1.0 / (c * c);
            }
            push(&mut ctx, m, z, s1, s2, s3, s4);
        }
        ctx.total = m;
        ctx.tol = Self::fast_tolerance(h, m);
        for (l, r) in affine_windows(h.len(), nq) {
            let w = (r - l) / nq;
            let span = &mut ctx.spans[w - 1];
            *span = (span.0.min(l + w), span.1.max(l + (nq - 1) * w));
        }
        ctx
    }

    /// The divergence [`ort_window_kl`] computes in float32, of window [l, r), in exact
    /// arithmetic and closed form: the same ∞ cases, a value within [`Self::tolerance`]/2 of
    /// the exact one otherwise (NaN if the counts saturate u64). With p', q' the
    /// smoothed vectors, P = Σp' = T (smoothing keeps sums: nonzeros lose what zeros gain) and
    /// Q = Σq' = w·Σ_c v_c (chunk c's value v_c on its w bins, remainder bins 0):
    ///
    /// KL = (Σ p'·ln p' − Σ p'·ln q')/T − ln T + ln Q.
    ///
    /// q' is constant on each chunk, so Σ p'·ln q' needs per chunk only its p' mass
    /// S_c = Σp − e1p·nz_c + eps·(w − nz_c) (q' = v_c − e1q, or eps where v_c = 0 and on the
    /// remainder); ln(v_c − e1q) by Taylor about ln v_c, the middle chunks' sums from
    /// [`ChunkChain`] prefix differences. Σ p'·ln p' = zp·eps·ln eps + Σ_{p>0} (p − e)·ln(p − e),
    /// e = eps1 of p: the end bins (with the outliers) directly, the interior from prefix sums by Taylor,
    /// (p−e)·ln(p−e) = p·ln p − e·(ln p + 1) + e²/(2p) + e³/(6p²) + R, where the k-th term of
    /// R is e^k/(k(k−1)p^(k−1)) > 0, so 0 ≤ R ≤ e⁴/(12·p²·(1−e)) for p ≥ 1 (integer counts).
    pub(super) fn fast_kl(&self, l: usize, r: usize) -> f64 {
        let (h, mass, nz, nq) = (self.h, &self.mass, &self.nonzero, self.nq);
        let wp = match self.window_p(l, r) {
            Ok(wp) => wp,
            Err(kl) => return kl,
        };
        let WindowP {
            len,
            w,
            below,
            above,
            zp,
            e1p,
            ..
        } = wp;
        // q: per chunk its value v (0 where its p bins are all 0), its p' mass S_c, and the
        // sums that give Σ_{v>0} S_c·ln(v − e1q) by Taylor in x = e1q/v once e1q is known:
        // ln(v − e1q) = ln v − x − x²/2 − x³/3 − R, 0 ≤ R ≤ x⁴/(4(1−x)).
        // acc = [Σ S_c, Σ S_c·ln v, Σ S_c/v, Σ S_c/v², Σ S_c/v³, Σ v] over chunks with v > 0,
        // in chunk order: first, middle, last (nq ≥ 4).
        let mut zq = len - nq * w;
        let mut acc = [0.0f64; 6];
        // The number of empty (v = 0) chunks added: 0 or 1.
        let add = |acc: &mut [f64; 6], cv: ChunkVals| {
            if cv.v == 0.0 {
                return 1;
            }
            let sc = cv.pm - e1p * cv.norm + cv.eps_zeros;
            let t1 = sc * cv.inv_v;
            let t2 = t1 * cv.inv_v;
            let t = [sc, sc * cv.ln_v, t1, t2, t2 * cv.inv_v, cv.v];
            add_terms(acc, t);
            0
        };
        let end_chunk = |c: usize| {
            let (m, norm, pm) = self.chunk_sums(&wp, l, r, c);
            ChunkVals::new(m, norm, pm, w)
        };
        zq += w * add(&mut acc, end_chunk(0));
        // Middle chunks (no outliers, no remainder, end < r) depend only on (start, width):
        // their sums by prefix differences along the width's chunk chains, where cancelling
        // S_c = b − e1p·n keeps its relative accuracy (e1p ≤ 1/2 and b ≥ n, so the difference
        // is at least half of b); rare windows with a larger e1p visit the chunks one by one.
        let lo = l + w;
        let hi = l + (nq - 1) * w;
        let (base, top) = self.spans[w - 1];
        if e1p <= 0.5 && base <= lo && hi <= top {
            let chain = self.chains[w - 1].get_or_init(|| ChunkChain::new(mass, nz, w, base, top));
            let (hi, lo) = (hi - chain.base, lo - chain.base);
            let (x, y) = (&chain.sums[hi], &chain.sums[lo]);
            let d = |k: usize| x[k] - y[k];
            add_terms(
                &mut acc,
                [
                    d(0) - e1p * d(5),
                    d(1) - e1p * d(6),
                    d(2) - e1p * d(7),
                    d(3) - e1p * d(8),
                    d(4) - e1p * d(9),
                    d(10),
                ],
            );
            zq += (chain.zeros[hi] - chain.zeros[lo]) * w;
        } else {
            for s in (lo..hi).step_by(w) {
                let (m, norm) = (mass[s + w] - mass[s], nz[s + w] - nz[s]);
                zq += w * add(&mut acc, ChunkVals::new(m, norm, m, w));
            }
        }
        zq += w * add(&mut acc, end_chunk(nq - 1));
        let [s_pos, a0, a1, a2, a3, vsum] = acc;
        let nzq = len - zq;
        if nzq == 0 {
            return f64::INFINITY;
        }
        let e1q = ORT_EPS * zq as f64 / nzq as f64;
        if e1q >= 1.0 {
            return f64::INFINITY;
        }
        let total_f = self.total as f64;
        let ln_eps = ORT_EPS.ln();
        // Σ p'·ln q' (x ≤ e1q as v ≥ 1, and Σ S_c ≤ T bounds the weighted remainder).
        let mut pq = if e1q.powi(4) / (4.0 * (1.0 - e1q)) <= TAYLOR_MAX {
            a0 - e1q * a1 - e1q * e1q / 2.0 * a2 - e1q * e1q * e1q / 3.0 * a3
        } else {
            // Many empty chunks: one ln per chunk instead.
            let mut acc = 0.0f64;
            for c in 0..nq {
                let (m, norm, pm) = self.chunk_sums(&wp, l, r, c);
                let cv = ChunkVals::new(m, norm, pm, w);
                if cv.v != 0.0 {
                    let sc = cv.pm - e1p * cv.norm + cv.eps_zeros;
                    acc += sc * (cv.v - e1q).ln();
                }
            }
            acc
        };
        pq += ln_eps * (total_f - s_pos);
        // Σ p'·ln p'.
        let xlnx = |p: u64| {
            let x = p as f64 - e1p;
            x * x.ln()
        };
        let mut pp = ORT_EPS * ln_eps * zp as f64;
        let p_first = h[l].saturating_add(below);
        let p_last = h[r - 1].saturating_add(above);
        if p_first > 0 {
            pp += xlnx(p_first);
        }
        if p_last > 0 {
            pp += xlnx(p_last);
        }
        let (a, b) = (l + 1, r - 1);
        let e = e1p;
        let inv2 = self.inv2[b] - self.inv2[a];
        if e.powi(4) / (12.0 * (1.0 - e)) * inv2 / total_f <= TAYLOR_MAX {
            pp += (self.hlnh[b] - self.hlnh[a])
                - e * ((self.lnh[b] - self.lnh[a]) + (nz[b] - nz[a]) as f64)
                + e * e / 2.0 * (self.inv[b] - self.inv[a])
                + e * e * e / 6.0 * inv2;
        } else {
            pp += h[a..b]
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| xlnx(c))
                .sum::<f64>();
        }
        (pp - pq) / total_f - total_f.ln() + (w as f64 * vsum).ln()
    }

    /// [`Self::fast_kl`] of every window, except ∞ for windows skipped because their
    /// [`Self::kl_floor`] exceeds [`Self::recheck_cut`] of a fast value already found by more
    /// than tol: their fast value would exceed that cut of the fast minimum (the floor errs by
    /// far less than tol/2 below the exact divergence, the fast value by < tol/2 above or
    /// below), so they lie outside the re-check window and skipping them leaves the choice
    /// unchanged. Chunks and windows run from the widest down: the whole histogram clips
    /// nothing and is often near the minimum, and narrow windows clip the tails their floor
    /// charges for.
    pub(super) fn fast_pass(&self, windows: &[(usize, usize)]) -> Vec<f64> {
        // The least fast value found so far, shared by the chunks.
        let found = Found::new(0.0);
        if let Some(&(l, r)) = windows.last() {
            found.lower(self.fast_kl(l, r));
        }
        let mut per_chunk: Vec<Vec<f64>> = windows
            .par_chunks(CHUNK)
            .rev()
            .map(|chunk| {
                let mut out = vec![f64::INFINITY; chunk.len()];
                for (k, &(l, r)) in chunk.iter().enumerate().rev() {
                    let give_up = self.recheck_cut(found.limit()) + self.tol;
                    // NaN never prunes (the comparison is false).
                    if self.kl_floor(l, r) > give_up {
                        continue;
                    }
                    let f = self.fast_kl(l, r);
                    found.lower(f);
                    out[k] = f;
                }
                out
            })
            .collect();
        per_chunk.reverse();
        per_chunk.concat()
    }

    /// The p side of window [l, r) that [`Self::fast_kl`] and [`Self::kl_floor`] share, with
    /// the same expressions as [`smooth32`], so the give-up cases match exactly: Err(NaN) where
    /// the prefix sums saturate (left to the exact re-check), Err(∞) where p is all zero or
    /// its smoothing gives up.
    pub(super) fn window_p(&self, l: usize, r: usize) -> Result<WindowP, f64> {
        let (h, mass, nz, nq) = (self.h, &self.mass, &self.nonzero, self.nq);
        if self.total == u64::MAX {
            return Err(f64::NAN);
        }
        let len = r - l;
        let below = mass[l];
        let above = self.total - mass[r];
        // Outliers make an empty end bin nonzero in p.
        let first_extra = usize::from(h[l] == 0 && below > 0);
        let last_extra = usize::from(h[r - 1] == 0 && above > 0);
        let nzp = nz[r] - nz[l] + first_extra + last_extra;
        let zp = len - nzp;
        if nzp == 0 {
            return Err(f64::INFINITY);
        }
        let e1p = ORT_EPS * zp as f64 / nzp as f64;
        if e1p >= 1.0 {
            return Err(f64::INFINITY);
        }
        Ok(WindowP {
            len,
            w: len / nq,
            below,
            above,
            first_extra,
            last_extra,
            zp,
            e1p,
        })
    }

    /// Chunk c of window [l, r): its q mass m (the last chunk takes the remainder bins' mass),
    /// its nonzero p bins (with an end bin the outliers make nonzero) and its p mass (with the
    /// outliers).
    pub(super) fn chunk_sums(
        &self,
        wp: &WindowP,
        l: usize,
        r: usize,
        c: usize,
    ) -> (u64, usize, u64) {
        let (mass, nz) = (&self.mass, &self.nonzero);
        let s = l + c * wp.w;
        let e = s + wp.w;
        let m = mass[if c == self.nq - 1 { r } else { e }] - mass[s];
        let mut norm = nz[e] - nz[s];
        let mut pm = mass[e] - mass[s];
        if c == 0 {
            norm += wp.first_extra;
            pm += wp.below;
        }
        if e == r {
            norm += wp.last_extra;
            pm += wp.above;
        }
        (m, norm, pm)
    }

    /// A lower bound on the divergence of window [l, r) in O(1): the cost of folding the
    /// outliers into the end bins while q's end chunks hold only the window's own mass.
    ///
    /// Merging bins into groups never raises a KL (log-sum inequality), so KL(p'‖q') ≥ the
    /// two-outcome KL d(a‖b) = a·ln(a/b) + (1−a)·ln((1−a)/(1−b)) of a group G of end bins vs
    /// the rest, a = Σ_G p'/T, b = Σ_G q'/Q (p', q' > 0 once smoothed, which every window
    /// with a finite divergence is; elsewhere the fast value is ∞ and skipping changes
    /// nothing). a is exact from the end bins and e1p. b is bounded above, and d(a‖·) falls
    /// on (0, a]: q' ≤ max(v, eps) for a bin of a chunk with value v (q' = v − e1q or eps;
    /// remainder bins have v = 0), and Q = w·Σ_c v_c ≥ w·(v_first + v_last) + (M_mid −
    /// (nq−2)(w−1)) as a middle chunk's v = ⌊m/norm⌋ ≥ ⌊m/w⌋ ≥ (m − w + 1)/w (norm ≤ w,
    /// m = 0 where norm = 0). G is {l}, {r−1} or both, whichever bounds highest.
    /// Rounding: Q's bound is shrunk and b's grown by 1e-12 (covering u64→f64 and the
    /// division), and the few logarithms err by ~1e-14 on the KL scale, far below tol/2.
    pub(super) fn kl_floor(&self, l: usize, r: usize) -> f64 {
        let (h, mass, nq) = (self.h, &self.mass, self.nq);
        let wp = match self.window_p(l, r) {
            Ok(wp) => wp,
            Err(kl) => return kl,
        };
        let WindowP {
            len,
            w,
            below,
            above,
            e1p,
            ..
        } = wp;
        let smoothed = |p: u64| {
            if p > 0 { p as f64 - e1p } else { ORT_EPS }
        };
        let total_f = self.total as f64;
        let p_first = smoothed(h[l].saturating_add(below));
        let p_last = smoothed(h[r - 1].saturating_add(above));
        let last_start = l + (nq - 1) * w;
        let value = |c: usize| {
            let (m, norm, _) = self.chunk_sums(&wp, l, r, c);
            chunk_value(m, norm)
        };
        let (v_first, v_last) = (value(0), value(nq - 1));
        let q_first = v_first.max(ORT_EPS);
        // Bin r−1 is a remainder bin (q = 0) unless the chunks fill the window.
        let q_last = if len.is_multiple_of(nq) { v_last } else { 0.0 }.max(ORT_EPS);
        let mid = (mass[last_start] - mass[l + w]) as f64;
        let spread = ((nq - 2) * (w - 1)) as f64;
        let q_lo = (w as f64 * (v_first + v_last) + (mid - spread).max(0.0)) * (1.0 - 1e-12);
        if q_lo <= 0.0 {
            return 0.0;
        }
        let d = |pg: f64, qg: f64| {
            let a = pg / total_f;
            let b = qg / q_lo * (1.0 + 1e-12);
            if b >= a || a > 1.0 {
                return 0.0;
            }
            let rest = if a < 1.0 {
                (1.0 - a) * ((1.0 - a) / (1.0 - b)).ln()
            } else {
                0.0
            };
            a * (a / b).ln() + rest
        };
        d(p_first, q_first)
            .max(d(p_last, q_last))
            .max(d(p_first + p_last, q_first + q_last))
    }

    /// An upper bound on 2·(|fast_kl − exact| + |literal f64 − exact|) for every window (the
    /// tests compare the fast form with a literal f64 evaluation). Both forms add terms whose
    /// magnitudes sum (on the KL scale, i.e. after /T) to at most L = ln T + |ln eps| + 1:
    /// p'/T, S_c/T sum to 1 and every |ln| of a p' or q' is below ln T or |ln eps|. The fast
    /// form's prefix differences and chunk sums cover at most N bins each, each term within a
    /// few ulps: (4N + 64)·ε·L with room; the middle chunks' sums are differences of
    /// [`ChunkChain`] prefixes over ≤ N chunks, kept apart for b and n (each ≤ the S_c sums as
    /// e1p ≤ 1/2), another 4N·ε·L; plus its two Taylor remainders ≤ TAYLOR_MAX each. The
    /// literal form: smoothing, numpy's pairwise sums (≤ 16 + log₂N sequential steps),
    /// divisions and ln, each a few ulps on terms of total magnitude ≤ 2L: (log₂N + 64)·ε·4L.
    /// For 2048 bins and T ≤ 2^64 the total is ~1e-10; the 1e-9 floor leaves 10× margin,
    /// larger histograms scale the bound. A loose bound costs only re-checks.
    fn fast_tolerance(h: &[u64], total: u64) -> f64 {
        let nb = h.len() as f64;
        let big_l = (total as f64).ln().max(0.0) + ORT_EPS.ln().abs() + 1.0;
        let fast = (8.0 * nb + 64.0) * f64::EPSILON * big_l + 2.0 * TAYLOR_MAX;
        let exact = (nb.log2() + 64.0) * f64::EPSILON * 4.0 * big_l;
        (2.0 * (fast + exact)).max(1e-9)
    }

    /// See [`Self::fast_tolerance`].
    #[cfg(test)]
    pub(super) fn tolerance(&self) -> f64 {
        self.tol
    }

    /// (a, b) with |F − E| ≤ a·E + b for every window of n bins: F the float32 divergence of
    /// [`ort_window_kl`], E the exact one (≥ 0), u = 2⁻²⁴. First order in u, the counts and
    /// smoothing step to f32 and the subtraction err ≤ 3u relative, each numpy pairwise sum
    /// of n terms ≤ g·u relative to Σ|terms| (g = 26 + ⌈log₂ n⌉ roundings at most),
    /// normalising ≤ u, the ratio p/q ≤ u, ln ≤ u relative, the product ≤ u. Writing π, κ for
    /// the exact normalised p', q' and ℓ = ln(π/κ): F − E = Σ π·ℓ·(e + λ + μ + σ) + Σ π·δ, with
    /// |e| ≤ (g + 7)u (own rounding plus the common error of p's sum), λ, μ ≤ u, σ ≤ g·u
    /// (the final sum), and δ, the error of ln(p/q) from the inputs, ≤ (2g + 15)u. As
    /// Σ π·|ℓ| = E + 2·Σ_{ℓ<0} π·ln(κ/π) ≤ E + 2·Σ(κ − π) ≤ E + 2 and Σ π = 1:
    /// |F − E| ≤ (2g + 10)u·E + (6g + 35)u, doubled here for the second-order terms and room
    /// (measured on the reference dumps: under 8 % of the undoubled bound).
    pub(super) fn f32_error(n: usize) -> (f64, f64) {
        let u = f64::from(f32::EPSILON) / 2.0;
        let g = 26.0 + (n.max(2) as f64).log2().ceil();
        (2.0 * (2.0 * g + 10.0) * u, 2.0 * (6.0 * g + 35.0) * u)
    }

    /// The largest fast value a window may have and still hold the float32 search's choice,
    /// given the least fast value m. With a, b of [`Self::f32_error`] and E_m ≤ m + tol/2 the
    /// exact divergence of m's window, the least float32 value is at most E_m(1 + a) + b; a
    /// window with a fast value above the cut has E > ((m + tol/2)(1 + a) + 2b)/(1 − a), so a
    /// float32 value F ≥ E(1 − a) − b strictly above that, and is neither the first minimum
    /// nor tied with it.
    pub(super) fn recheck_cut(&self, m: f64) -> f64 {
        let (a, b) = self.f32_err;
        ((m + self.tol / 2.0) * (1.0 + a) + 2.0 * b) / (1.0 - a) + self.tol / 2.0
    }
}
