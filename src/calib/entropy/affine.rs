//! ONNX Runtime's window search (`HistogramCollector.get_entropy_threshold`), adapted.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::*;

/// ONNX Runtime's `smooth_distribution` (in float64, ORT uses float32): zeros become eps,
/// nonzero entries lose eps·#zeros/#nonzeros. `false` where ORT gives up (all zero → its −1,
/// scored ∞) or would fail its assertion (eps1 ≥ 1, only for windows > 10⁴ mostly-empty bins).
pub(super) fn smooth(v: &mut [f64]) -> bool {
    let zeros = v.iter().filter(|&&x| x == 0.0).count();
    let nonzeros = v.len() - zeros;
    if nonzeros == 0 {
        return false;
    }
    let eps1 = ORT_EPS * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return false;
    }
    for x in v.iter_mut() {
        *x = if *x == 0.0 { ORT_EPS } else { *x - eps1 };
    }
    true
}

/// ORT's divergence of one window `slice` (bins [l, r)) with `below`/`above` counts outside it.
/// `p` and `q` are scratch buffers of at least `slice.len()`.
pub(super) fn ort_window_kl(
    slice: &[u64],
    below: u64,
    above: u64,
    nq: usize,
    p: &mut [f64],
    q: &mut [f64],
) -> f64 {
    let len = slice.len();
    let (p, q) = (&mut p[..len], &mut q[..len]);
    // Reference p: the window, outliers added to its first and last bins.
    for (pj, &c) in p.iter_mut().zip(slice) {
        *pj = c as f64;
    }
    p[0] += below as f64;
    p[len - 1] += above as f64;
    // Candidate q: the window without outliers in nq chunks of len/nq bins (the remainder's
    // mass goes to the last chunk, its bins stay 0); each chunk's mass / #(nonzero p bins in
    // it) fills every bin of the chunk, truncated to an integer as ORT's int64 array does.
    let merged = len / nq;
    q.fill(0.0);
    for idx in 0..nq {
        let (s, e) = (idx * merged, idx * merged + merged);
        let mut m = count_sum(&slice[s..e]);
        if idx == nq - 1 {
            m = m.saturating_add(count_sum(&slice[nq * merged..]));
        }
        let norm = p[s..e].iter().filter(|&&x| x != 0.0).count();
        if norm != 0 {
            q[s..e].fill((m as f64 / norm as f64).trunc());
        }
    }
    if !smooth(p) || !smooth(q) {
        return f64::INFINITY;
    }
    let (ps, qs) = (pairwise_sum(p), pairwise_sum(q));
    // Reuse p for the terms: each p[j] is read before it is overwritten.
    for (pj, &qj) in p.iter_mut().zip(q.iter()) {
        *pj = rel_entr(*pj / ps, qj / qs);
    }
    pairwise_sum(p)
}

/// Affine entropy calibration on the signed histogram over `[min, max]` (ONNX Runtime's window
/// search, adapted).
///
/// ORT histograms x over `[-T, T]` (T = max|x|) with the zero bin z = N/2 and tries the windows
/// of bins `[z−i, z+i+1)` for i = nq/2..=N/2 (one bin wider on the + side). Our histogram is
/// over `[min, max]`, so the natural adaptation is:
/// * z = the bin that holds 0 (bin 0 if min ≥ 0, bin N−1 if max ≤ 0);
/// * window i = bins `[max(z−i, 0), min(z+i+1, N))`: symmetric in value about the zero bin
///   (±i bins, as ORT) until it meets an end of the histogram, then growing on the other side
///   only; i = nq/2 ..= max(z, N−1−z), the last being the first window that is the whole
///   histogram (later ones would repeat it). nq = 2^b (256 for 8 bits; ORT's default is 128).
/// * Windows with fewer than nq bins are skipped (not counted): ORT's merge gives them
///   len/nq = 0 bins per chunk, an all-zero q and KL = ∞. They occur only at a histogram end,
///   e.g. for one-sided data (min ≥ 0) the windows start at nq bins. This makes one-sided
///   data use the whole histogram, where ORT's [−T, T] histogram wastes half its bins
///   (reference README §5 item 2).
/// * Per window, exactly ORT: p = window with the outlier counts added to its first and last
///   bins; q = window in nq chunks of ⌊len/nq⌋ bins (remainder mass into the last chunk, the
///   remainder bins themselves stay 0), each chunk's mass / #(nonzero p bins in the chunk)
///   written into every bin of the chunk and truncated to an integer (ORT's int64 q);
///   both smoothed with eps = 1e-4 (`smooth_distribution`, on raw counts); KL(p‖q) as scipy.
/// * The **first** minimum wins (ORT's `argmin`); the range is (edge(l), edge(r)), clipped to
///   `[min, max]` (a no-op here since windows never leave the histogram). lo ≤ 0 ≤ hi is not
///   enforced: for min > 0 the range is `[min, …]` and the affine scheme widens it to 0.
///
/// Evaluating every window literally costs one ln per bin of the window. Instead every window
/// is scored with a closed form from prefix sums (O(1) per window after one pass per chunk
/// width, see `AffineContext::fast_kl`), and only the windows within a rounding bound of its minimum are
/// re-scored exactly as above, so the choice, ties included, is the literal search's.
///
/// Inherited quirk: q's last len mod nq bins stay 0 (up to nq−1 = 255 bins here, against
/// ORT's default ≤ 127 of 2048), so windows just short of a multiple of nq whose remainder
/// lies in an empty tail score well and the chosen hi can sit well past the data's bulk.
///
/// Differences from ORT beyond the adaptation: float64 throughout (ORT smooths and sums in
/// float32), so near-ties may break differently. A histogram with fewer than nq bins, or with
/// no counts, returns `[min, max]` with 0 candidates (ORT raises or degenerates to min-max).
pub fn affine(signed_hist: &Histogram, bits: u8) -> Search {
    let nbins = signed_hist.bins();
    let nq = 1usize << clamp_bits(bits);
    let full = Search {
        lo: signed_hist.lo,
        hi: signed_hist.hi,
        candidates: 0,
    };
    let h = &signed_hist.counts;
    if count_sum(h) == 0 || nbins < nq {
        return full;
    }
    let windows = affine_windows(signed_hist, nq);
    let candidates = windows.len();
    if candidates == 0 {
        return full;
    }
    let ctx = AffineContext::new(h, nq);
    // Fast pass in parallel chunks; the choice below does not depend on the threads.
    let fast = ctx.fast_pass(&windows);
    // All windows ∞ (fast is ∞ exactly where exact is): the exact rule keeps its initial value.
    let mut best = (f64::INFINITY, (0, nbins));
    let mut p = vec![0.0f64; nbins];
    let mut q = vec![0.0f64; nbins];
    for k in near_minimum(&fast, ctx.tolerance()) {
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
    let best_window = best.1;
    let lo = signed_hist.edge(best_window.0).max(signed_hist.lo);
    let hi = signed_hist.edge(best_window.1).min(signed_hist.hi);
    Search { lo, hi, candidates }
}

/// The candidate windows [l, r) of [`affine`] in ORT's order: at least nq bins each.
pub(super) fn affine_windows(signed_hist: &Histogram, nq: usize) -> Vec<(usize, usize)> {
    let nbins = signed_hist.bins();
    let z = signed_hist.bin_of(0.0);
    (nq / 2..=z.max(nbins - 1 - z))
        .map(|i| (z.saturating_sub(i), (z + i + 1).min(nbins)))
        .filter(|&(l, r)| r - l >= nq)
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
/// prefix sums along each chain of chunks [s, s+w), [s+w, s+2w), …: entry e sums the chunks
/// of e's chain that end at or before e, so the middle chunks [l+w, l+(nq−1)·w) of a window
/// cost one difference per sum instead of nq − 2 chunk visits. Each chunk's S_c = b − e1p·n
/// (b = p mass + eps·zeros, n = nonzero bins) is linear in the window's e1p, so the sums are
/// kept separately for b and n; per v > 0 chunk the b and n sums weight 1, ln v, 1/v, 1/v²,
/// 1/v³ (`sums[e]`: b·those in 0..5, n·those in 5..10, v in 10); `zeros` counts v = 0 chunks.
pub(super) struct ChunkChain {
    pub(super) sums: Vec<[f64; 11]>,
    pub(super) zeros: Vec<usize>,
}

impl ChunkChain {
    pub(super) fn new(mass: &[u64], nz: &[usize], w: usize) -> ChunkChain {
        let n = mass.len();
        // Pushed rather than zero-filled and overwritten: the fill cost as much as the sums.
        let mut sums = Vec::with_capacity(n);
        let mut zeros = Vec::with_capacity(n);
        for _ in 0..w.min(n) {
            sums.push([0.0f64; 11]);
            zeros.push(0usize);
        }
        for e in w..n {
            let s = e - w;
            let (m, norm) = (mass[e] - mass[s], nz[e] - nz[s]);
            let cv = ChunkVals::new(m, norm, m, w);
            let (mut acc, mut z) = (sums[s], zeros[s]);
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
        ChunkChain { sums, zeros }
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
        ctx
    }

    /// [`ort_window_kl`] of window [l, r) in closed form: the same ∞ cases, a value within
    /// [`Self::tolerance`]/2 of it otherwise (NaN if the counts saturate u64). With p', q' the
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
        if e1p <= 0.5 {
            let chain = self.chains[w - 1].get_or_init(|| ChunkChain::new(mass, nz, w));
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
    /// [`Self::kl_floor`] exceeds a fast value already found by more than 2·tol: their fast
    /// value would exceed it (so the fast minimum) by more than tol (the floor errs by far less
    /// than tol/2 below the exact divergence, the fast value by < tol/2 above or below), so
    /// they lie outside the re-check window and skipping them leaves the choice unchanged.
    /// Chunks and windows run from the widest down: the whole histogram clips nothing and is
    /// often near the minimum, and narrow windows clip the tails their floor charges for.
    pub(super) fn fast_pass(&self, windows: &[(usize, usize)]) -> Vec<f64> {
        let margin = 2.0 * self.tolerance();
        // The least fast value found so far, shared by the chunks.
        let found = Found::new(margin);
        if let Some(&(l, r)) = windows.last() {
            found.lower(self.fast_kl(l, r));
        }
        let mut per_chunk: Vec<Vec<f64>> = windows
            .par_chunks(CHUNK)
            .rev()
            .map(|chunk| {
                let mut out = vec![f64::INFINITY; chunk.len()];
                for (k, &(l, r)) in chunk.iter().enumerate().rev() {
                    let give_up = found.limit();
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
    /// the same expressions as `smooth`, so the give-up cases match exactly: Err(NaN) where
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

    /// An upper bound on 2·(|fast_kl − exact| + |ort_window_kl − exact|) for every window, so
    /// that a window whose fast value is more than this above the fast minimum cannot be (or
    /// tie) the exact minimum. Both forms add terms whose magnitudes sum (on the KL scale, i.e.
    /// after /T) to at most L = ln T + |ln eps| + 1: p'/T, S_c/T sum to 1 and every |ln| of a
    /// p' or q' is below ln T or |ln eps|. The fast form's prefix differences and chunk sums
    /// cover at most N bins each, each term within a few ulps: (4N + 64)·ε·L with room; the
    /// middle chunks' sums are differences of [`ChunkChain`] prefixes over ≤ N chunks, kept
    /// apart for b and n (each ≤ the S_c sums as e1p ≤ 1/2), another 4N·ε·L; plus
    /// its two Taylor remainders ≤ TAYLOR_MAX each. The exact form: smoothing, numpy's pairwise sums
    /// (≤ 16 + log₂N sequential steps), divisions and ln, each a few ulps on terms of total
    /// magnitude ≤ 2L: (log₂N + 64)·ε·4L. For 2048 bins and T ≤ 2^64 the total is ~1e-10;
    /// the 1e-9 floor leaves 10× margin, larger histograms scale the bound. A loose bound
    /// costs only exact re-checks.
    pub(super) fn tolerance(&self) -> f64 {
        let nb = self.h.len() as f64;
        let big_l = (self.total as f64).ln().max(0.0) + ORT_EPS.ln().abs() + 1.0;
        let fast = (8.0 * nb + 64.0) * f64::EPSILON * big_l + 2.0 * TAYLOR_MAX;
        let exact = (nb.log2() + 64.0) * f64::EPSILON * 4.0 * big_l;
        (2.0 * (fast + exact)).max(1e-9)
    }
}
