//! MSE calibration (`calibration-reference.md`, Methods §4): the range whose quantize-dequantize
//! of the histogram's bin centres has the least count-weighted squared error.
//!
//! * [`symmetric`]: NVIDIA Model Optimizer's `_compute_amax_mse` with its `fake_tensor_quant`
//!   call fixed (reference README §5 item 8; the `modelopt.hist.mse_argfix` results).
//! * [`affine`]: our own coarse-to-fine search over pairs of bin edges.

use rayon::prelude::*;

use super::{Found, QParams, Scheme, Search};
use crate::histogram::Histogram;

/// First candidate bin of Model Optimizer's search (`start_bin=128`).
const START_BIN: usize = 128;
/// Model Optimizer's `_tensor_quant` treats amax ≤ 2^-24 as zero (everything quantizes to 0).
const MODELOPT_ZERO_AMAX: f64 = 1.0 / (1u64 << 24) as f64;

/// (centre, count) of the nonzero bins: empty bins add nothing to any error.
fn weighted_centres(h: &Histogram) -> Vec<(f64, f64)> {
    h.counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(i, &c)| (h.centre(i), c as f64))
        .collect()
}

/// Model Optimizer's `fake_tensor_quant(x, amax, num_bits=b, unsigned=False,
/// narrow_range=True)` on CPU (`_tensor_quant` then `/ scale`): scale = (2^(b−1)−1)/amax,
/// q = clamp(round_half_even(x·scale), −max_bound, max_bound), x̂ = q/scale; amax ≤ 2^-24 gives 0.
/// (`torch.round` rounds half to even.) In float64 where modelopt uses float32.
#[inline]
fn modelopt_fake_quant(x: f64, amax: f64, max_bound: f64) -> f64 {
    // NaN amax also lands here.
    if amax.is_nan() || amax <= MODELOPT_ZERO_AMAX {
        return 0.0;
    }
    let scale = max_bound / amax;
    super::scheme::rint_clamped(x * scale, -max_bound, max_bound) / scale
}

/// Candidates the symmetric search scores together, one per lane.
const LANES: usize = 8;

/// Σ w·(x̂_a(c) − c)² over the centres in order: the plain loop, used where a lane would
/// have amax ≤ 2^-24 (and by the tests as the reference for [`sse_lanes`]).
fn symmetric_sse(cs: &[f64], ws: &[f64], amax: f64, max_bound: f64) -> f64 {
    cs.iter()
        .zip(ws)
        .map(|(&c, &w)| {
            let d = modelopt_fake_quant(c, amax, max_bound) - c;
            w * d * d
        })
        .sum()
}

/// [`symmetric_sse`] of `LANES` candidates, all with amax > 2^-24, bit for bit: each lane
/// does the same operations on the same centres in the same order, so the only change is
/// that the lanes are independent (they vectorise, and the additions no longer wait on each
/// other). A centre with c·scale ≥ max_bound quantizes to max_bound/scale, with no division
/// per centre: past the first centre where that holds for the smallest scale, it holds in
/// every lane (centres are sorted; c·scale is monotone in both).
#[inline(always)]
fn sse_lanes(cs: &[f64], ws: &[f64], amax: &[f64; LANES], max_bound: f64) -> [f64; LANES] {
    let scale = amax.map(|a| max_bound / a);
    let top = scale.map(|s| max_bound / s);
    let smin = scale.iter().copied().fold(f64::INFINITY, f64::min);
    let split = cs.partition_point(|&c| c * smin < max_bound);
    let mut acc = [0.0f64; LANES];
    for (&c, &w) in cs[..split].iter().zip(&ws[..split]) {
        for l in 0..LANES {
            let r = super::scheme::rint_clamped(c * scale[l], -max_bound, max_bound);
            let d = r / scale[l] - c;
            acc[l] += w * d * d;
        }
    }
    add_clipped(&mut acc, &cs[split..], &ws[split..], &top);
    acc
}

/// Adds w·(end − c)² per lane: centres every lane's quantizer maps to its `end` (clipped).
#[inline(always)]
fn add_clipped(acc: &mut [f64; LANES], cs: &[f64], ws: &[f64], end: &[f64; LANES]) {
    for (&c, &w) in cs.iter().zip(ws) {
        for l in 0..LANES {
            let d = end[l] - c;
            acc[l] += w * d * d;
        }
    }
}

/// [`sse_lanes`] compiled for AVX2 (same operations per lane: the same sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sse_lanes_avx2(cs: &[f64], ws: &[f64], amax: &[f64; LANES], max_bound: f64) -> [f64; LANES] {
    sse_lanes(cs, ws, amax, max_bound)
}

/// The errors of the candidates `amax`, each exactly as [`symmetric_sse`] computes it.
fn symmetric_errors(cs: &[f64], ws: &[f64], amax: &[f64], max_bound: f64) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    let mut errs = Vec::with_capacity(amax.len() + LANES);
    for block in amax.chunks(LANES) {
        if block.iter().any(|&a| a.is_nan() || a <= MODELOPT_ZERO_AMAX) {
            // x̂ = 0 in that lane: rare (tiny ranges), so the plain loop.
            errs.extend(block.iter().map(|&a| symmetric_sse(cs, ws, a, max_bound)));
            continue;
        }
        // The last block is padded with its last candidate; the extra lanes are dropped.
        let mut lanes = [block[block.len() - 1]; LANES];
        lanes[..block.len()].copy_from_slice(block);
        #[cfg(target_arch = "x86_64")]
        let e = if avx2 {
            // SAFETY: the CPU supports AVX2, checked above.
            unsafe { sse_lanes_avx2(cs, ws, &lanes, max_bound) }
        } else {
            sse_lanes(cs, ws, &lanes, max_bound)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let e = sse_lanes(cs, ws, &lanes, max_bound);
        errs.extend_from_slice(&e[..block.len()]);
    }
    errs
}

/// Nonzero bins per level from which the symmetric search scores per level: measured, a
/// level (a guess, two quantizations to check it, two loads) costs about as much as 8 bins
/// of the exact 8-lane scoring (2048 dense bins at 8 bits, 16 per level: ~2× faster; the
/// 4096-value layers of a small model, ~1100 bins: about even). Many bits on few bins (e.g.
/// 16 bits on 2048 bins) have more levels than bins: exact scoring there.
const FAST_LEVELS_PER_BIN: usize = 8;

/// What the fast scoring of every symmetric candidate reads: the histogram's bin geometry
/// (centre(j) = lo + width·(j + ½), as [`Histogram::centre`] computes it), the dense range
/// [j0, j1) from the first to past the last nonzero bin, and prefix sums over the bins of
/// w, w·c and w·c·c (`p0[j]` etc. = sums over bins < j; empty bins add exact zeros).
struct SymContext {
    lo: f64,
    width: f64,
    j0: usize,
    j1: usize,
    max_bound: f64,
    p0: Vec<f64>,
    p1: Vec<f64>,
    p2: Vec<f64>,
    /// (p0[j], p1[j]) side by side: one load per boundary in the AVX2 loop.
    p01: Vec<[f64; 2]>,
    /// Σw, Σw·|c|, Σw·c² (for the tolerance).
    totals: [f64; 3],
}

/// [`SymContext::plan`]: one candidate's scale and levels.
#[derive(Clone, Copy)]
struct LevelPlan {
    scale: f64,
    inv: f64,
    k_lo: f64,
    levels: usize,
    per_bin: f64,
    offset: f64,
    first: f64,
    last: f64,
}

/// Per-worker buffer of [`SymContext::sse_fast`]: the group boundaries.
#[derive(Default)]
struct Scratch {
    bounds: Vec<f64>,
}

impl SymContext {
    /// None for an empty histogram (every error is exactly 0: nothing to speed up).
    fn new(h: &Histogram, max_bound: f64) -> Option<SymContext> {
        let j0 = h.counts.iter().position(|&c| c > 0)?;
        let j1 = h.counts.iter().rposition(|&c| c > 0)? + 1;
        let (p0, p1, p2, totals) = prefix_sums(
            h.counts
                .iter()
                .enumerate()
                .map(|(j, &count)| (h.centre(j), count as f64)),
        );
        Some(SymContext {
            p01: p0.iter().zip(&p1).map(|(&a, &b)| [a, b]).collect(),
            lo: h.lo,
            width: h.width(),
            j0,
            j1,
            max_bound,
            p0,
            p1,
            p2,
            totals,
        })
    }

    /// [`Histogram::centre`] of bin `j` (given as a float), the same expression bit for bit.
    #[inline(always)]
    fn centre(&self, j: f64) -> f64 {
        self.lo + self.width * (j + 0.5)
    }

    /// The level candidate `scale` quantizes centre(j) to: [`modelopt_fake_quant`]'s rounding.
    #[inline(always)]
    fn level(&self, j: f64, scale: f64) -> f64 {
        let m = self.max_bound;
        super::scheme::rint_clamped(self.centre(j) * scale, -m, m)
    }

    /// The lowest and highest level of the nonzero bins for candidate `amax` (> 2^-24).
    fn level_range(&self, amax: f64) -> (f64, f64) {
        let scale = self.max_bound / amax;
        let k_lo = self.level(self.j0 as f64, scale);
        (k_lo, self.level((self.j1 - 1) as f64, scale))
    }

    /// [`symmetric_sse`] of candidate `amax` (> 2^-24, finite), summed per level instead of
    /// per bin, within [`Self::tolerance`] of it. The bins quantized to level k are a
    /// contiguous run (c·scale and the rounding are monotone), found with the exact code's own
    /// c·scale and rounding, so each run holds exactly the bins the exact sum maps to level k.
    /// With x̂ = k/scale and the run's sums S0, S1, S2, the run adds Σw·(x̂ − c)² =
    /// S2 − 2x̂·S1 + x̂²·S0; the S2 parts telescope to one difference. Only the rounding
    /// differs from the exact sum, and x̂, taken as k·(amax/max_bound) to save a division
    /// per level (within 4ε of k/scale; in the tolerance).
    #[inline(always)]
    fn sse_fast(&self, amax: f64, s: &mut Scratch) -> f64 {
        let plan = self.plan(amax);
        let LevelPlan {
            scale,
            k_lo,
            levels,
            per_bin,
            offset,
            first,
            last,
            ..
        } = plan;
        // bounds[g]: the first bin whose level exceeds k = k_lo + g, for g < levels; it lies
        // in [j0 + 1, j1 − 1] (level(j0) ≤ k < level(j1 − 1)). Guessed from the real-valued
        // threshold c·scale = k + ½, then checked: c·scale strictly below k + ½ at the bin
        // before and strictly above at the bin, which implies level ≤ k and > k under the
        // exact rounding (with the pre-clamp to ±(max_bound + 1) too, as −max_bound ≤ k
        // < max_bound). No branch, so the loop vectorises; a failed check (a tie at k + ½,
        // or an off guess) is redone below with the rounding itself.
        s.bounds.resize(levels, 0.0);
        let mut all_ok = true;
        for (g, e) in s.bounds.iter_mut().enumerate() {
            // g < 2^16 levels: exact through i32.
            let half = k_lo + f64::from(g as i32) + 0.5;
            // floor(t) + 1 for the real threshold index t, as rint(t − ½) + 1 (a ceil would be a
            // libm call without SSE4.1; an integer t, where this may be off by one, is caught
            // by the check), clamped to [j0 + 1, j1 − 1].
            let t = half * per_bin - offset;
            let b = super::scheme::rint_clamped(t - 0.5, first - 1.0, last - 1.0) + 1.0;
            all_ok &= (self.centre(b - 1.0) * scale < half) & (self.centre(b) * scale > half);
            *e = b;
        }
        if !all_ok {
            for (g, e) in s.bounds.iter_mut().enumerate() {
                let k = k_lo + g as f64;
                if self.level(*e - 1.0, scale) <= k && self.level(*e, scale) > k {
                    continue;
                }
                // The first bin in [j0 + 1, j1 − 1] above level k.
                let (mut a, mut b) = (self.j0 + 1, self.j1 - 1);
                while a < b {
                    let mid = a + (b - a) / 2;
                    if self.level(mid as f64, scale) > k {
                        b = mid;
                    } else {
                        a = mid + 1;
                    }
                }
                *e = a as f64;
            }
        }
        // Group g (level k_g = k_lo + g) spans [B(g − 1), B(g)) with B(g) = bounds[g],
        // B(−1) = j0, B(levels) = j1. With S(g) the group's sums and x̂ = k·inv, the error
        // S2 − 2x̂·S1 + x̂²·S0 summed over groups is, by parts (k_{g+1} − k_g = 1),
        //   (p2[j1] − p2[j0]) − 2·inv·Σ1 + inv²·Σ0, where
        //   Σ1 = Σ k_g·S1(g)  = k_hi·p1[j1] − k_lo·p1[j0] − Σ_{g<levels} p1[B(g)],
        //   Σ0 = Σ k_g²·S0(g) = k_hi²·p0[j1] − k_lo²·p0[j0] − Σ_{g<levels} (2k_g + 1)·p0[B(g)]:
        // two loads and two multiply-adds per level. Four accumulators each, so the additions
        // do not wait on each other (the bound allows any order); plain loops, as iterator
        // adapters would be compiled outside the AVX2 caller.
        let (p0, p1) = (&self.p0[..], &self.p1[..]);
        let top = p0.len() - 1;
        let (mut a0, mut a1) = ([0.0f64; 4], [0.0f64; 4]);
        let mut chunks = s.bounds.chunks_exact(4);
        let mut g = 0;
        for c in &mut chunks {
            for l in 0..4 {
                // min: no bounds check, so this may vectorise (the boundaries are ≤ j1 − 1).
                let i = (c[l] as usize).min(top);
                let odd = 2.0 * (k_lo + f64::from((g + l) as i32)) + 1.0;
                a0[l] += odd * p0[i];
                a1[l] += p1[i];
            }
            g += 4;
        }
        for &e in chunks.remainder() {
            let i = (e as usize).min(top);
            a0[0] += (2.0 * (k_lo + f64::from(g as i32)) + 1.0) * p0[i];
            a1[0] += p1[i];
            g += 1;
        }
        self.by_parts(
            &plan,
            (a0[0] + a0[1]) + (a0[2] + a0[3]),
            (a1[0] + a1[1]) + (a1[2] + a1[3]),
        )
    }

    /// What both forms of the per-level sum need of candidate `amax`: its scale and x̂ step
    /// inv, the levels spanned by the dense bins [j0, j1) (the first one, k_lo, and how many
    /// boundaries), and the arithmetic that guesses a boundary bin from k + ½.
    #[inline(always)]
    fn plan(&self, amax: f64) -> LevelPlan {
        let scale = self.max_bound / amax;
        let (j0, j1) = (self.j0 as f64, self.j1 as f64);
        let k_lo = self.level(j0, scale);
        LevelPlan {
            scale,
            inv: amax / self.max_bound,
            k_lo,
            levels: (self.level(j1 - 1.0, scale) - k_lo) as usize,
            per_bin: 1.0 / (scale * self.width),
            offset: self.lo / self.width + 0.5,
            first: j0 + 1.0,
            last: j1 - 1.0,
        }
    }

    /// The error from the boundary sums b0 = Σ_g (2k_g + 1)·p0[B(g)] and b1 = Σ_g p1[B(g)]
    /// (see [`Self::sse_fast`]).
    #[inline(always)]
    fn by_parts(&self, plan: &LevelPlan, b0: f64, b1: f64) -> f64 {
        let (p0, p1, j0, j1) = (&self.p0, &self.p1, self.j0, self.j1);
        let (k_lo, inv) = (plan.k_lo, plan.inv);
        let k_hi = k_lo + plan.levels as f64;
        let sum0 = (k_hi * k_hi * p0[j1] - k_lo * k_lo * p0[j0]) - b0;
        let sum1 = (k_hi * p1[j1] - k_lo * p1[j0]) - b1;
        (self.p2[j1] - self.p2[j0]) + inv * (inv * sum0 - 2.0 * sum1)
    }

    /// Twice an upper bound on |sse_fast − symmetric_sse| over candidates up to `amax_max`
    /// spanning at most `levels` levels, so that a candidate whose fast error is more than this
    /// above the fast minimum has an exact error strictly above the exact minimum.
    ///
    /// With ε = 2^-52 (twice the unit roundoff: generous), n bins, T0 = Σw, T1 = Σw·|c|,
    /// T2 = Σw·c², X ≥ |x̂| (≤ amax·(1 + 4ε)), inv = amax/max_bound (|k|·inv ≤ X, and
    /// levels·inv ≤ 2X + inv) and B = T2 + 2X·T1 + X²·T0:
    /// * prefix sums: each of the nonnegative-term sums is within (n + 2)·ε·T of its value;
    ///   those errors enter with coefficients 1 (p2, twice), 2·inv·(1 per boundary, |k| at the
    ///   ends) and inv²·(2|k| + 1 per boundary, k² at the ends), which total ≤ 2, ~8X and
    ///   ~6X²: ≤ (n + 2)·ε·(2T2 + 8X·T1 + 6X²·T0) ≤ (n + 2)·ε·8B;
    /// * the by-parts sums add levels + 2 terms whose magnitudes total ≤ 2X·T1 (Σ1·2inv)
    ///   and ≤ 4X²·T0 (Σ0·inv²), each term and the final combination off by a few roundings:
    ///   ≤ (levels + 8)·ε·8B;
    /// * the exact code's x̂ = fl(k/scale) is within 4ε·X of k·inv, which moves each group's
    ///   error by ≤ 4ε·X·2Σw·|x̂ − c| + O(ε²): ≤ 8ε·X·(X·T0 + T1) ≤ 8ε·B in all;
    /// * the exact sum adds nnz ≤ n terms w·(x̂ − c)² ≤ 2w·(x̂² + c²): ≤ (n + 3)·ε·2·2B.
    ///
    /// Plus an absolute term for underflow (each operation off by at most 2^-1074, scaled by at
    /// most T0·(1 + X²)), far below any nonzero error of a real histogram. Re-checks are cheap,
    /// so the bound is doubled once more for slack.
    fn tolerance(&self, amax_max: f64, levels: usize) -> f64 {
        let [t0, t1, t2] = self.totals;
        let n = self.p0.len() as f64;
        let x = amax_max * (1.0 + 4.0 * f64::EPSILON);
        let b = t2 + 2.0 * x * t1 + x * x * t0;
        let (eps, levels) = (f64::EPSILON, levels as f64);
        let bound = (n + 2.0) * eps * 8.0 * b
            + (levels + 8.0) * eps * 8.0 * b
            + 8.0 * eps * b
            + (n + 3.0) * eps * 4.0 * b
            + 16.0 * (n + levels) * f64::MIN_POSITIVE * (1.0 + t0) * (1.0 + x * x);
        2.0 * 2.0 * bound
    }

    /// Σ w·(x̂ − c)² over the bins candidate `amax` (> 2^-24, finite) quantizes to its top
    /// level max_bound (the clipped tail and the bins rounding up to the end): some of the
    /// nonnegative terms of its error, from prefix sums in O(1), so a lower bound on it. Below
    /// the optimum it is most of the error. The bins are found with the exact code's own
    /// c·scale and rounding ([`Self::level`]), so they are exactly those it maps to
    /// max_bound; with x̂ = max_bound·inv as in [`Self::sse_fast`]. Its rounding error is
    /// below that of one fast sum (two prefix-sum differences and a few operations, plus the
    /// same ≤ 4ε·X gap in x̂), well within [`Self::tolerance`]/4.
    #[inline(always)]
    fn tail_floor(&self, amax: f64) -> f64 {
        let m = self.max_bound;
        let scale = m / amax;
        let (j0, j1) = (self.j0, self.j1);
        // Guess the first bin with c·scale ≥ m − ½ from the real-valued threshold, then fix
        // it with the rounding itself (levels are monotone in the bin): usually no step.
        let t = ((m - 0.5) / scale - self.lo) / self.width - 0.5;
        // `as` saturates (NaN → 0): a bad guess only costs steps.
        let mut j = (t.max(0.0) as usize).clamp(j0, j1);
        while j < j1 && self.level(j as f64, scale) < m {
            j += 1;
        }
        while j > j0 && self.level((j - 1) as f64, scale) >= m {
            j -= 1;
        }
        let x = m * (amax / m);
        let (s0, s1, s2) = (
            self.p0[j1] - self.p0[j],
            self.p1[j1] - self.p1[j],
            self.p2[j1] - self.p2[j],
        );
        s2 - x * (2.0 * s1 - x * s0)
    }

    /// Fast errors of `amax` (exact ones where x̂ = 0: amax ≤ 2^-24 or NaN, rare), scored from
    /// the last down, except ∞ where [`Found::skips`] rules a candidate out by its
    /// [`Self::tail_floor`]. `fast` scores one candidate (> 2^-24).
    #[inline(always)]
    fn score(
        &self,
        (cs, ws): (&[f64], &[f64]),
        amax: &[f64],
        found: &Found,
        mut fast: impl FnMut(f64) -> f64,
    ) -> Vec<f64> {
        let mut out = vec![f64::INFINITY; amax.len()];
        for (k, &a) in amax.iter().enumerate().rev() {
            let f = if a > MODELOPT_ZERO_AMAX {
                if found.skips(self.tail_floor(a)) {
                    continue;
                }
                fast(a)
            } else {
                symmetric_sse(cs, ws, a, self.max_bound)
            };
            found.lower(f);
            out[k] = f;
        }
        out
    }

    /// [`Self::score`] with [`Self::sse_fast`].
    fn score_plain(&self, cw: (&[f64], &[f64]), amax: &[f64], found: &Found) -> Vec<f64> {
        let mut s = Scratch::default();
        self.score(cw, amax, found, |a| self.sse_fast(a, &mut s))
    }

    /// [`Self::score`] with AVX2: [`Self::sse_fast_avx2`] where its checks all pass, else
    /// [`Self::sse_fast`] (a tie at some k + ½, or a guess off by one: rare).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn score_avx2(&self, cw: (&[f64], &[f64]), amax: &[f64], found: &Found) -> Vec<f64> {
        let mut s = Scratch::default();
        // The closure inherits AVX2, so the call needs no `unsafe`.
        self.score(cw, amax, found, |a| match self.sse_fast_avx2(a) {
            Some(e) => e,
            None => self.sse_fast(a, &mut s),
        })
    }

    /// [`Self::sse_fast`] four levels at a time in AVX2 registers, with the same guesses and
    /// the same checks (the centres by the same expression, no fused multiply-add), and the
    /// by-parts sums in four lanes; None if any check fails. Needs fewer than 2^31 bins (i32
    /// indices).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn sse_fast_avx2(&self, amax: f64) -> Option<f64> {
        use std::arch::x86_64::*;
        let plan = self.plan(amax);
        let LevelPlan {
            scale,
            k_lo,
            levels,
            per_bin,
            offset,
            first,
            last,
            ..
        } = plan;
        let p0 = &self.p0[..];
        let v = _mm256_set1_pd;
        let (one, half_v) = (v(1.0), v(0.5));
        let mut k = _mm256_add_pd(v(k_lo), _mm256_set_pd(3.0, 2.0, 1.0, 0.0));
        let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut ok = 0b1111;
        let full = levels / 4 * 4;
        let mut g = 0;
        while g < full {
            let half = _mm256_add_pd(k, half_v);
            let t = _mm256_sub_pd(_mm256_mul_pd(half, v(per_bin)), v(offset));
            let b = _mm256_add_pd(_mm256_floor_pd(t), one);
            // maxpd returns its second operand for a NaN: `first`, a valid index.
            let b = _mm256_min_pd(_mm256_max_pd(b, v(first)), v(last));
            let centre = |j| {
                _mm256_add_pd(
                    v(self.lo),
                    _mm256_mul_pd(v(self.width), _mm256_add_pd(j, half_v)),
                )
            };
            let below = _mm256_mul_pd(centre(_mm256_sub_pd(b, one)), v(scale));
            let above = _mm256_mul_pd(centre(b), v(scale));
            let pass = _mm256_and_pd(
                _mm256_cmp_pd::<_CMP_LT_OQ>(below, half),
                _mm256_cmp_pd::<_CMP_GT_OQ>(above, half),
            );
            ok &= _mm256_movemask_pd(pass);
            // b ∈ [j0 + 1, j1 − 1] ⊂ [0, p0.len()): the gathers stay inside the slices.
            // Scalar loads, not gathers (microcoded and slower on some x86 cores): the pair
            // (p0, p1) of each boundary is one 16-byte load.
            let mut idx = [0i32; 4];
            // SAFETY: `idx` holds 4 i32; unaligned store.
            unsafe { _mm_storeu_si128(idx.as_mut_ptr().cast(), _mm256_cvttpd_epi32(b)) };
            // b ∈ [j0 + 1, j1 − 1] (clamped above): in bounds; the index checks stay cheap.
            let q = idx.map(|i| self.p01[i as usize]);
            let g0 = _mm256_set_pd(q[3][0], q[2][0], q[1][0], q[0][0]);
            let g1 = _mm256_set_pd(q[3][1], q[2][1], q[1][1], q[0][1]);
            let odd = _mm256_add_pd(_mm256_add_pd(k, k), one);
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(odd, g0));
            a1 = _mm256_add_pd(a1, g1);
            k = _mm256_add_pd(k, v(4.0));
            g += 4;
        }
        if ok != 0b1111 {
            return None;
        }
        let (mut l0, mut l1) = ([0.0f64; 4], [0.0f64; 4]);
        // SAFETY: 4 f64 fit the arrays; unaligned stores.
        unsafe {
            _mm256_storeu_pd(l0.as_mut_ptr(), a0);
            _mm256_storeu_pd(l1.as_mut_ptr(), a1);
        }
        let (mut t0, mut t1) = (0.0, 0.0);
        for g in full..levels {
            let half = k_lo + g as f64 + 0.5;
            let b = ((half * per_bin - offset).floor() + 1.0)
                .max(first)
                .min(last);
            if !(self.centre(b - 1.0) * scale < half && self.centre(b) * scale > half) {
                return None;
            }
            t0 += (2.0 * (k_lo + g as f64) + 1.0) * p0[b as usize];
            t1 += self.p1[b as usize];
        }
        Some(self.by_parts(
            &plan,
            ((l0[0] + l0[1]) + (l0[2] + l0[3])) + t0,
            ((l1[0] + l1[1]) + (l1[2] + l1[3])) + t1,
        ))
    }
}

/// Symmetric MSE calibration on the |x| histogram over `[0, max|x|]`: returns `[-a, a]`.
///
/// Model Optimizer's `_compute_amax_mse` with the call fixed to
/// `fake_tensor_quant(centers, amax, None, num_bits, unsigned)`, i.e. `narrow_range=True` (the
/// default of `FakeTensorQuantFunction.forward`): candidates a = centre(i) for
/// i = 128..N−1, stride 1 (from min(128, N−1) if N ≤ 128); error(a) = Σ_k h[k]·(x̂_a(c[k]) −
/// c[k])² with x̂ as [`modelopt_fake_quant`]; the **first** argmin wins.
///
/// modelopt takes the mean over bins and we the plain sum (the same argmin; the reference
/// page's division by Σh is another constant). We compute in float64 where modelopt uses
/// float32 centres and errors, so a near-tie may resolve one bin differently.
/// `candidates` = N − start (1920 for 2048 bins).
///
/// Speed: where the bins are many per level (8 or 9 bits on 2048 busy bins), every candidate is
/// scored per level ([`SymContext::sse_fast`], O(levels) instead of O(bins)), then the
/// candidates within [`SymContext::tolerance`] of the fast minimum are re-scored exactly
/// ([`symmetric_errors`]) and the first exact argmin among them is the answer (candidates a
/// cheap lower bound already places outside that window are skipped: [`fast_scores`]): any other
/// candidate's exact error is strictly above the exact minimum, so the choice is the one
/// the exhaustive exact search makes. Otherwise (more levels than bins to gain from, or an
/// empty histogram) every candidate is scored exactly, 8 at a time, one per SIMD lane
/// ([`sse_lanes`]), each lane summing in bin order exactly as a plain loop, except those
/// their tail floor already rules out ([`exact_scores`]). Either way chunks
/// of candidates run in parallel and the argmin is taken in order afterwards, so threads
/// change nothing.
pub fn symmetric(abs_hist: &Histogram, bits: u8) -> Search {
    let nbins = abs_hist.bins();
    let max_bound = ((1u64 << (u32::from(bits.clamp(2, 16)) - 1)) - 1) as f64;
    let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(abs_hist).into_iter().unzip();
    let start = START_BIN.min(nbins.saturating_sub(1));
    // abs: an |x| histogram's centres are ≥ 0; this keeps lo ≤ hi on any other input.
    let amax: Vec<f64> = (start..nbins).map(|i| abs_hist.centre(i).abs()).collect();
    let (errs, order) = match fast_scores(abs_hist, (&cs, &ws), &amax, max_bound) {
        Some((fast, tol)) => {
            let window: Vec<usize> = super::near_minimum(&fast, tol).collect();
            let wa: Vec<f64> = window.iter().map(|&k| amax[k]).collect();
            (symmetric_errors(&cs, &ws, &wa, max_bound), window)
        }
        None => {
            let bounds = sym_bounds(abs_hist, &amax, max_bound);
            let floor = bounds.as_ref().map(|(ctx, tol, _)| (ctx, *tol));
            let errs = exact_scores((&cs, &ws), &amax, max_bound, floor);
            (errs, (0..amax.len()).collect())
        }
    };
    let mut best = f64::INFINITY;
    let mut best_a = abs_hist.hi.abs();
    for (n, (&err, &k)) in errs.iter().zip(&order).enumerate() {
        // Strict `<`: the first argmin (`np.argmin`). The first candidate always sets it
        // (errors are finite), even for an empty histogram (all errors 0).
        if err < best || n == 0 {
            best = err;
            best_a = amax[k];
        }
    }
    Search {
        lo: -best_a,
        hi: best_a,
        candidates: nbins - start,
    }
}

/// The context of the symmetric search's bounds, the re-check tolerance
/// ([`SymContext::tolerance`]) and the most levels a candidate spans, or None where the bound
/// would not hold: an empty histogram, non-finite candidates, none above 2^-24, or sums so
/// large that the bound (or an exact error) could overflow.
fn sym_bounds(h: &Histogram, amax: &[f64], max_bound: f64) -> Option<(SymContext, f64, usize)> {
    let ctx = SymContext::new(h, max_bound)?;
    // NaN fails `>` (x̂ = 0 there, scored exactly).
    let ok = |a: f64| a > MODELOPT_ZERO_AMAX;
    if amax.iter().any(|a| a.is_infinite()) {
        return None;
    }
    let fast_ones = || amax.iter().copied().filter(|&a| ok(a));
    let lo_a = fast_ones().fold(f64::INFINITY, f64::min);
    let hi_a = fast_ones().fold(0.0f64, f64::max);
    if lo_a == f64::INFINITY {
        return None;
    }
    // A centre's level is monotone in the scale (either way, by its sign), so the smallest
    // and largest candidates bound every candidate's lowest and highest level.
    let (lo1, hi1) = ctx.level_range(lo_a);
    let (lo2, hi2) = ctx.level_range(hi_a);
    let levels = (hi1.max(hi2) - lo1.min(lo2)) as usize + 1;
    let tol = ctx.tolerance(hi_a, levels);
    if !(tol.is_finite() && ctx.totals.iter().all(|t| *t < 1e300) && hi_a * hi_a < 1e300) {
        return None;
    }
    Some((ctx, tol, levels))
}

/// The exact error ([`symmetric_errors`]) of every candidate, except ∞ where `floor` (the
/// context and tolerance of [`sym_bounds`]) rules one out: its [`SymContext::tail_floor`]
/// exceeds an exact error already found by more than tol. The floor and every exact error are
/// within tol/4 of the same real error sums (the tolerance is 4× the bound on both roundings),
/// so its exact error exceeds that one by more than tol/2: it is not the least, nor, ties
/// included, the first least, whatever order the threads find values in. Pieces run from the
/// top down, each from its top, as [`fast_scores`] does; the lanes hold the next candidates
/// not skipped, and a lane's sum does not depend on its neighbours.
fn exact_scores(
    (cs, ws): (&[f64], &[f64]),
    amax: &[f64],
    max_bound: f64,
    floor: Option<(&SymContext, f64)>,
) -> Vec<f64> {
    let found = Found::new(floor.map_or(f64::INFINITY, |(_, tol)| tol));
    let run = |chunk: &[f64]| {
        let mut out = vec![f64::INFINITY; chunk.len()];
        let (mut lanes, mut slot, mut n) = ([0.0f64; LANES], [0usize; LANES], 0);
        let flush = |lanes: &[f64], slot: &[usize], out: &mut [f64]| {
            let e = symmetric_errors(cs, ws, lanes, max_bound);
            for (&k, &e) in slot.iter().zip(&e) {
                out[k] = e;
                found.lower(e);
            }
        };
        for (k, &a) in chunk.iter().enumerate().rev() {
            // tail_floor needs amax > 2^-24 (NaN fails; the floor's NaN never skips).
            if let Some((ctx, _)) = floor
                && a > MODELOPT_ZERO_AMAX
                && found.skips(ctx.tail_floor(a))
            {
                continue;
            }
            (lanes[n], slot[n]) = (a, k);
            n += 1;
            if n == LANES {
                flush(&lanes, &slot, &mut out);
                n = 0;
            }
        }
        flush(&lanes[..n], &slot[..n], &mut out);
        out
    };
    let mut pieces: Vec<Vec<f64>> = amax.par_chunks(8 * LANES).rev().map(run).collect();
    pieces.reverse();
    pieces.concat()
}

/// The fast error of every candidate and the re-check tolerance, or None where the exact
/// scoring of every candidate is cheaper or the bound would not hold: an empty histogram,
/// more levels than [`FAST_LEVELS_PER_BIN`] allows, non-finite candidates, or sums so large
/// that the bound (or an exact error) could overflow.
///
/// Candidates whose [`SymContext::tail_floor`] exceeds a fast error already found by more
/// than 2·tol get ∞ instead: the floor and every fast error are within tol/4 of the same real
/// error sums ([`SymContext::tolerance`] is 4× the bound on |fast − real|, which covers the
/// floor's rounding too), so their fast error would exceed the fast minimum by more than
/// tol. They lie outside the re-check window ([`super::near_minimum`]) either way, and the
/// minimum is one that was scored, so the window, hence the choice, is the same as without
/// skipping, whatever order the threads find values in.
fn fast_scores(
    h: &Histogram,
    cw: (&[f64], &[f64]),
    amax: &[f64],
    max_bound: f64,
) -> Option<(Vec<f64>, f64)> {
    fast_scores_pruned(h, cw, amax, max_bound, true)
}

/// [`fast_scores`], skipping candidates by their lower bound only if `prune` (the tests
/// compare both).
fn fast_scores_pruned(
    h: &Histogram,
    (cs, ws): (&[f64], &[f64]),
    amax: &[f64],
    max_bound: f64,
    prune: bool,
) -> Option<(Vec<f64>, f64)> {
    let (ctx, tol, levels) = sym_bounds(h, amax, max_bound)?;
    if levels * FAST_LEVELS_PER_BIN > cs.len() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2") && ctx.p0.len() < i32::MAX as usize;
    let found = Found::new(if prune { 2.0 * tol } else { f64::INFINITY });
    let run = |chunk: &[f64]| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU supports AVX2, checked above.
            return unsafe { ctx.score_avx2((cs, ws), chunk, &found) };
        }
        ctx.score_plain((cs, ws), chunk, &found)
    };
    // The full range first (it clips nothing, so it is often near the minimum), so that every
    // piece starts with a finite value to prune by; then pieces from the top down, each from
    // its top: the large candidates are the ones whose floor says little, and the small ones,
    // which clip much, are pruned by what they find.
    if prune {
        run(&amax[amax.len() - 1..]);
    }
    let mut pieces: Vec<Vec<f64>> = amax.par_chunks(8 * LANES).rev().map(run).collect();
    pieces.reverse();
    Some((pieces.concat(), tol))
}

/// Σ h·(qdq(c) − c)² for the affine range [lo, hi], with the scheme's own zero point, one
/// range at a time: the reference for `affine_sse_lanes`. `pts` is sorted by centre (bins
/// are). Centres at or beyond the representable ends map to exactly `qp.lo` / `qp.hi` (q
/// clamps to qmin/qmax, and (q − z)·s is the expression `QParams` uses for its ends), so only
/// the centres between them need the division and rounding. One accumulator in bin order:
/// the same sum as a plain loop over `qdq`.
#[cfg(test)]
fn affine_sse(pts: &[(f64, f64)], bits: u8, lo: f64, hi: f64) -> f64 {
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
fn grid(lo: usize, hi: usize, stride: usize) -> impl Iterator<Item = usize> {
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
fn affine_sse_lanes(cs: &[f64], ws: &[f64], qps: &[QParams; LANES]) -> [f64; LANES] {
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
            let d = super::scheme::rint_clamped(c / scale[l], tlo[l], thi[l]) * scale[l] - c;
            acc[l] += w * d * d;
        }
    }
    add_clipped(&mut acc, &cs[b..], &ws[b..], &hi);
    acc
}

/// [`affine_sse_lanes`] compiled for AVX2 (same operations per lane: the same sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn affine_sse_lanes_avx2(cs: &[f64], ws: &[f64], qps: &[QParams; LANES]) -> [f64; LANES] {
    affine_sse_lanes(cs, ws, qps)
}

/// Prefix sums of w, w·c and w·c² over (centre, weight) pairs (entry k: over the first k),
/// and the totals of w, w·|c| and w·c²: what both searches' bounds and fast scores read.
type PrefixSums = (Vec<f64>, Vec<f64>, Vec<f64>, [f64; 3]);

fn prefix_sums(pairs: impl ExactSizeIterator<Item = (f64, f64)>) -> PrefixSums {
    let n = pairs.len() + 1;
    let (mut p0, mut p1, mut p2) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut s0, mut s1, mut s2, mut a1) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (c, w) in pairs {
        p0.push(s0);
        p1.push(s1);
        p2.push(s2);
        s0 += w;
        s1 += w * c;
        s2 += w * c * c;
        a1 += w * c.abs();
    }
    p0.push(s0);
    p1.push(s1);
    p2.push(s2);
    (p0, p1, p2, [s0, a1, s2])
}

/// Prefix sums of w, w·c and w·c² over the nonzero bins' centres (in order), for the lower
/// bound [`ClipFloor::floor`] on an affine range's error, and the totals of w, w·|c| and w·c²
/// for its margin.
struct ClipFloor {
    p0: Vec<f64>,
    p1: Vec<f64>,
    p2: Vec<f64>,
    totals: [f64; 3],
}

impl ClipFloor {
    fn new(cs: &[f64], ws: &[f64]) -> ClipFloor {
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
    fn floor(&self, cs: &[f64], qp: &QParams) -> f64 {
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
const PAIR_PIECE: usize = 4 * LANES;

/// The first pair (in order) with the least error, starting from `init`: scored `LANES` pairs
/// at a time (consecutive pairs have close ranges, so the lanes' union stays narrow) in
/// parallel, reduced in order with a strict `<`, so the result does not depend on the threads.
///
/// With `floor`, a pair whose [`ClipFloor::floor`] exceeds the least error found so far
/// (`init`'s or a scored pair's) is skipped (∞): its own error exceeds that value, so it is
/// neither the least nor, ties included, the first least, whatever order the threads find
/// values in. The lanes hold the next pairs not skipped; each lane's sum does not depend on
/// its neighbours, so the errors are those of scoring every pair.
fn best_pair(
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
fn pair_errors(
    (cs, ws): (&[f64], &[f64]),
    bits: u8,
    h: &Histogram,
    pairs: &[(usize, usize)],
    known: f64,
    floor: Option<&ClipFloor>,
) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    let found = Found::new(0.0);
    found.lower(known);
    let score = |qps: &[QParams; LANES]| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU supports AVX2, checked above.
            return unsafe { affine_sse_lanes_avx2(cs, ws, qps) };
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
fn affine_pruned(signed_hist: &Histogram, bits: u8, prune: bool) -> Search {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::calib::test_support::{FastVsExact, Rng, gaussian_counts, hist, maybe_far_outlier};

    #[test]
    fn fake_quant_is_modelopts() {
        // amax 127: scale 1, so x̂ = round-half-even(x) clamped to ±127 (narrow range).
        assert_eq!(modelopt_fake_quant(2.5, 127.0, 127.0), 2.0);
        assert_eq!(modelopt_fake_quant(3.5, 127.0, 127.0), 4.0);
        assert_eq!(modelopt_fake_quant(-0.5, 127.0, 127.0), 0.0);
        assert_eq!(modelopt_fake_quant(500.0, 127.0, 127.0), 127.0);
        assert_eq!(modelopt_fake_quant(-500.0, 127.0, 127.0), -127.0);
        // amax ≤ 2^-24: everything quantizes to 0.
        assert_eq!(modelopt_fake_quant(1e-9, 1e-8, 127.0), 0.0);
        assert_eq!(modelopt_fake_quant(1e-9, 0.0, 127.0), 0.0);
        // 4 bits: 7 levels per side.
        assert_eq!(modelopt_fake_quant(0.95, 1.0, 7.0), 1.0);
        assert!((modelopt_fake_quant(0.5, 1.0, 7.0) - 4.0 / 7.0).abs() < 1e-15);
    }

    /// The symmetric search as it was: one candidate at a time, plain loop.
    fn symmetric_plain(abs_hist: &Histogram, bits: u8) -> Search {
        let nbins = abs_hist.bins();
        let max_bound = ((1u64 << (u32::from(bits.clamp(2, 16)) - 1)) - 1) as f64;
        let pts = weighted_centres(abs_hist);
        let start = START_BIN.min(nbins.saturating_sub(1));
        let mut best = f64::INFINITY;
        let mut best_a = abs_hist.hi.abs();
        for i in start..nbins {
            let a = abs_hist.centre(i).abs();
            let err: f64 = pts
                .iter()
                .map(|&(c, w)| {
                    let d = modelopt_fake_quant(c, a, max_bound) - c;
                    w * d * d
                })
                .sum();
            if err < best || i == start {
                best = err;
                best_a = a;
            }
        }
        Search {
            lo: -best_a,
            hi: best_a,
            candidates: nbins - start,
        }
    }

    #[test]
    fn lanes_match_the_plain_loop_bit_for_bit() {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut next = move |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let mut outlier: Vec<u64> = (0..2048).map(|k| if k < 300 { 3333 } else { 0 }).collect();
        outlier[2047] = 1;
        let mut cases = vec![
            gaussian_counts(0.0, 6.0, 2048, 1e9, true),
            hist(0.0, 1.0, vec![1000; 2048]),
            hist(0.0, 1.0, outlier),
            // Negative centres (not an |x| histogram) and a tiny range (amax ≤ 2^-24 lanes).
            gaussian_counts(-3.0, 5.0, 777, 1e6, false),
            hist(0.0, 2e-7, vec![5; 1000]),
        ];
        for len in [1usize, 2, 129, 130, 135, 136, 137, 600] {
            let counts = (0..len)
                .map(|_| if next(3) == 0 { 0 } else { next(1 << 20) })
                .collect();
            cases.push(hist(0.0, 1.0 + next(100) as f64, counts));
        }
        for h in &cases {
            let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(h).into_iter().unzip();
            for bits in [2u8, 4, 8, 16] {
                assert_eq!(symmetric(h, bits), symmetric_plain(h, bits), "bits {bits}");
                let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
                // Lanes of scattered candidates (not only consecutive ones), both builds.
                let mut amax = [0.0; LANES];
                for a in &mut amax {
                    *a = h.centre(next(h.bins() as u64) as usize).abs().max(1e-3);
                }
                let want = amax.map(|a| symmetric_sse(&cs, &ws, a, max_bound).to_bits());
                let got = sse_lanes(&cs, &ws, &amax, max_bound).map(f64::to_bits);
                assert_eq!(got, want, "bits {bits}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    let got = unsafe { sse_lanes_avx2(&cs, &ws, &amax, max_bound) };
                    assert_eq!(got.map(f64::to_bits), want, "bits {bits}, AVX2");
                }
            }
        }
    }

    /// A histogram's range: mostly [0, a] over 7 decades, sometimes amax ≤ 2^-24 for the lower
    /// candidates (x̂ = 0 there), sometimes a negative centre (not an |x| histogram).
    fn random_range(rng: &mut Rng) -> (f64, f64) {
        match rng.below(8) {
            0 => (0.0, 2e-7 * (1 + rng.below(20)) as f64),
            1 => (-(rng.below(5) as f64) - 0.5, 1.0 + rng.below(9) as f64),
            _ => (
                0.0,
                10f64.powi(rng.below(7) as i32 - 3) * (1 + rng.below(9)) as f64,
            ),
        }
    }

    /// Random |x|-histogram counts of one of several shapes: spikes, sparse, Gaussian-like,
    /// heavy tail, tiny counts, huge counts near 2^60, all equal; sometimes a far outlier.
    fn random_counts(rng: &mut Rng, len: usize) -> Vec<u64> {
        let shape = rng.below(7);
        let scale = 10f64.powi(rng.below(13) as i32);
        let spread = 1.0 + rng.below(len as u64 + 1) as f64;
        let mut c: Vec<u64> = (0..len)
            .map(|k| {
                let x = k as f64 / spread;
                match shape {
                    0 => {
                        if rng.below(50) == 0 {
                            1 + rng.below(1 + scale as u64)
                        } else {
                            rng.below(3)
                        }
                    }
                    1 => {
                        if rng.below(30) == 0 {
                            1 + rng.below(1000)
                        } else {
                            0
                        }
                    }
                    2 => (scale * (-0.5 * x * x).exp()) as u64 + rng.below(3),
                    3 => (scale / (1.0 + x * x)) as u64,
                    4 => rng.below(3),
                    5 => (1u64 << 60) - rng.below(1 << 40),
                    _ => 7,
                }
            })
            .collect();
        maybe_far_outlier(rng, &mut c);
        c
    }

    #[test]
    fn fast_search_picks_the_exact_searchs_range() {
        let mut rng = Rng(0x3a5e_f00d_5eed_0003);
        let mut gap = FastVsExact::default();
        let (mut fast_searches, mut widest) = (0usize, 0usize);
        for case in 0..300 {
            let len = match case % 10 {
                0..=2 => 2048,
                3 => 100,
                4 => 129,
                5 => 130,
                _ => 1 + rng.below(900) as usize,
            };
            // Mostly the bits where the fast path applies; all of 2..=16 appear.
            let bits = if case % 3 == 0 {
                2 + rng.below(15) as u8
            } else {
                2 + rng.below(8) as u8
            };
            let (lo, hi) = random_range(&mut rng);
            let h = hist(lo, hi, random_counts(&mut rng, len));
            let got = symmetric(&h, bits);
            let want = symmetric_plain(&h, bits);
            assert_eq!(
                got, want,
                "case {case}: len {len}, bits {bits}, [{lo}, {hi}]"
            );
            // The window's premise: every candidate's fast error is well within tol/2.
            let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
            let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
            let start = START_BIN.min(len.saturating_sub(1));
            let amax: Vec<f64> = (start..len).map(|i| h.centre(i).abs()).collect();
            let Some((fast, tol)) = fast_scores_pruned(&h, (&cs, &ws), &amax, max_bound, false)
            else {
                continue;
            };
            fast_searches += 1;
            widest = widest.max(crate::calib::near_minimum(&fast, tol).count());
            for (&f, &a) in fast.iter().zip(&amax) {
                let e = symmetric_sse(&cs, &ws, a, max_bound);
                gap.add_within(f, e, tol, format_args!("case {case}, amax {a}"));
            }
        }
        eprintln!(
            "{fast_searches} fast searches, widest re-check window {widest}, \
             max |fast − exact| / tol = {:e}",
            gap.worst_ratio
        );
        gap.report("candidates");
        assert!(fast_searches > 100, "{fast_searches}");
    }

    /// Skipping candidates by their tail floor leaves the re-check window exactly as scoring
    /// every candidate does: each keeps its fast error bit for bit, or is ∞ with a fast error
    /// beyond the window. Logs how many are skipped.
    #[test]
    fn pruned_fast_pass_keeps_the_recheck_window() {
        let mut rng = Rng(0x0b5e_55ed_1ce5_0004);
        let (mut searches, mut cands, mut skipped, mut rechecked) = (0usize, 0, 0, 0);
        // Typical shapes alone (Gaussian-like, heavy tail; 8 bits, 2048 bins).
        let (mut typical, mut typical_skipped) = (0usize, 0usize);
        for case in 0..400 {
            let len = match case % 4 {
                0 | 1 => 2048,
                2 => 129 + rng.below(1900) as usize,
                _ => 1 + rng.below(900) as usize,
            };
            let bits = if case % 4 == 0 {
                8
            } else {
                2 + rng.below(8) as u8
            };
            let (lo, hi) = random_range(&mut rng);
            let h = hist(lo, hi, random_counts(&mut rng, len));
            let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
            let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
            let start = START_BIN.min(len.saturating_sub(1));
            let amax: Vec<f64> = (start..len).map(|i| h.centre(i).abs()).collect();
            let Some((all, tol)) = fast_scores_pruned(&h, (&cs, &ws), &amax, max_bound, false)
            else {
                continue;
            };
            let (pruned, tol2) = fast_scores(&h, (&cs, &ws), &amax, max_bound).unwrap();
            assert_eq!(tol.to_bits(), tol2.to_bits());
            let m = all.iter().copied().fold(f64::INFINITY, f64::min);
            let mut here = 0;
            for (k, (&a, &p)) in all.iter().zip(&pruned).enumerate() {
                if a.to_bits() != p.to_bits() {
                    assert!(
                        p == f64::INFINITY && a > m + tol,
                        "case {case}: len {len}, bits {bits}, k {k}: {a} vs {p}, min {m}, tol {tol}"
                    );
                    here += 1;
                }
            }
            let want: Vec<usize> = crate::calib::near_minimum(&all, tol).collect();
            let got: Vec<usize> = crate::calib::near_minimum(&pruned, tol).collect();
            assert_eq!(got, want, "case {case}: len {len}, bits {bits}");
            searches += 1;
            cands += all.len();
            skipped += here;
            rechecked += want.len();
        }
        // A Gaussian and a heavy tail, the shapes of real activations.
        for (k, h) in [
            gaussian_counts(0.0, 6.0, 2048, 1e9, true),
            gaussian_counts(0.0, 8.0, 2048, 1e6, true),
            hist(
                0.0,
                20.0,
                (0..2048)
                    .map(|j| (1e6 / (1.0 + (j as f64 / 40.0).powi(2))) as u64)
                    .collect(),
            ),
        ]
        .iter()
        .enumerate()
        {
            let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(h).into_iter().unzip();
            let amax: Vec<f64> = (START_BIN..2048).map(|i| h.centre(i)).collect();
            let (pruned, _) = fast_scores(h, (&cs, &ws), &amax, 127.0).expect("fast path");
            let n = pruned.iter().filter(|f| **f == f64::INFINITY).count();
            eprintln!("typical shape {k}: {n} of {} skipped", amax.len());
            typical += amax.len();
            typical_skipped += n;
        }
        eprintln!(
            "{searches} fast searches, {cands} candidates: {skipped} skipped by the tail floor, \
             {rechecked} re-checked exactly; typical shapes: {typical_skipped} of {typical} skipped"
        );
        assert!(searches > 100, "{searches}");
        assert!(skipped > cands / 10, "{skipped} of {cands}");
        assert!(
            typical_skipped > typical / 3,
            "{typical_skipped} of {typical}"
        );
    }

    /// The exact scoring (where the fast one does not apply) with candidates skipped by their
    /// tail floor: every other error is the same bit for bit, a skipped one is above the least
    /// (so never the first least), and the search picks what scoring every candidate picks.
    /// Logs how many are skipped.
    #[test]
    fn pruned_exact_pass_keeps_the_choice() {
        let mut rng = Rng(0x5eed_e8ac_7000_0006);
        let (mut searches, mut cands, mut skipped) = (0usize, 0usize, 0usize);
        for case in 0..300 {
            let len = match case % 3 {
                0 => 2048,
                _ => 1 + rng.below(1200) as usize,
            };
            // Many bits on few bins: where the exact scoring runs.
            let bits = 6 + rng.below(11) as u8;
            let (lo, hi) = random_range(&mut rng);
            let h = hist(lo, hi, random_counts(&mut rng, len));
            let what = format!("case {case}: len {len}, bits {bits}, [{lo}, {hi}]");
            assert_eq!(symmetric(&h, bits), symmetric_plain(&h, bits), "{what}");
            let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
            let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
            let start = START_BIN.min(len.saturating_sub(1));
            let amax: Vec<f64> = (start..len).map(|i| h.centre(i).abs()).collect();
            let Some((ctx, tol, _)) = sym_bounds(&h, &amax, max_bound) else {
                continue;
            };
            let all = exact_scores((&cs, &ws), &amax, max_bound, None);
            let pruned = exact_scores((&cs, &ws), &amax, max_bound, Some((&ctx, tol)));
            let m = all.iter().copied().fold(f64::INFINITY, f64::min);
            for (k, (&a, &p)) in all.iter().zip(&pruned).enumerate() {
                if a.to_bits() != p.to_bits() {
                    assert!(
                        p == f64::INFINITY && a > m,
                        "{what}, k {k}: {a} vs {p}, least {m}"
                    );
                    skipped += 1;
                }
            }
            searches += 1;
            cands += all.len();
        }
        eprintln!("{searches} exact searches, {cands} candidates: {skipped} skipped");
        assert!(searches > 100, "{searches}");
        assert!(skipped > cands / 10, "{skipped} of {cands}");
    }

    #[test]
    fn symmetric_counts_every_candidate() {
        for (bins, want) in [(2048, 1920), (300, 172), (129, 1), (100, 1), (1, 1)] {
            let s = symmetric(&hist(0.0, 1.0, vec![3; bins]), 8);
            assert_eq!(s.candidates, want, "{bins} bins");
        }
    }

    #[test]
    fn symmetric_uniform_picks_just_below_the_max() {
        // Uniform density on [0, 1]: clipping at a costs (1−a)³/3, rounding a·Δ²/12 with
        // Δ = a/127, so d/da = 0 at 1 − a = a/254, a* = 254/255 = 0.99608 (bin 2039.98).
        // The histogram sees only bin centres, so allow a few bins.
        let h = hist(0.0, 1.0, vec![1000; 2048]);
        let s = symmetric(&h, 8);
        assert!((s.hi - 254.0 / 255.0).abs() < 4.0 * h.width(), "{s:?}");
    }

    #[test]
    fn symmetric_clips_a_single_far_outlier() {
        // 10⁶ values in [0, 0.15) and one at 1.0: at a = 1 the bulk's rounding error is about
        // 10⁶·(1/127)²/12 ≈ 5.2, clipping the outlier to ~0.15 costs 0.85² ≈ 0.72.
        let mut counts: Vec<u64> = (0..2048).map(|k| if k < 300 { 3333 } else { 0 }).collect();
        counts[2047] = 1;
        let h = hist(0.0, 1.0, counts);
        let s = symmetric(&h, 8);
        assert!(s.hi < h.edge(400), "{s:?}");
        assert!(s.hi > h.edge(250), "{s:?}");
    }

    /// The continuous MSE of int8 narrow symmetric quantization of N(0,1) clipped at a:
    /// clipping 2[(1+a²)Q(a) − aφ(a)] plus rounding (a/127)²/12 · P(|x| < a).
    fn gaussian_mse(a: f64) -> f64 {
        let phi = (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let q = 0.5 * statrs::function::erf::erfc(a / std::f64::consts::SQRT_2);
        let delta = a / 127.0;
        2.0 * ((1.0 + a * a) * q - a * phi) + delta * delta / 12.0 * (1.0 - 2.0 * q)
    }

    #[test]
    fn symmetric_gaussian_is_near_the_analytic_optimum() {
        // Minimise the continuous error by a fine scan (an independent computation), then
        // check the histogram search is close: the objective is flat near its minimum, and
        // the search sees bin centres, not a density.
        let mut a_star = 2.0;
        let mut e_star = f64::INFINITY;
        for k in 0..30_000 {
            let a = 2.0 + k as f64 * 1e-4;
            let e = gaussian_mse(a);
            if e < e_star {
                (a_star, e_star) = (a, e);
            }
        }
        let h = gaussian_counts(0.0, 6.0, 2048, 1e9, true);
        let s = symmetric(&h, 8);
        eprintln!(
            "gaussian: analytic a* = {a_star:.4}, histogram MSE amax = {:.4}",
            s.hi
        );
        assert!((3.5..4.3).contains(&a_star), "analytic {a_star}");
        assert!((s.hi - a_star).abs() < 0.15, "{s:?} vs {a_star}");
        // The histogram's choice is near-optimal for the continuous error too.
        assert!(gaussian_mse(s.hi) < 1.02 * e_star);
    }

    #[test]
    fn degenerate_histograms_are_finite() {
        let cases = [
            hist(0.0, 1.0, vec![0; 2048]),
            hist(0.0, 1.0, vec![5]),
            hist(0.0, 1.0, vec![]),
            hist(-1.0, 1.0, vec![0, 7, 0]),
            hist(2.0, 3.0, vec![1; 2048]),
            hist(-3.0, -2.0, vec![1; 2048]),
            Histogram::new(0.0, 0.0, 2048),
            Histogram::new(-1e-30, 1e-30, 2048),
        ];
        for h in &cases {
            for bits in [2u8, 8, 16] {
                for s in [affine(h, bits), symmetric(h, bits)] {
                    assert!(
                        s.lo.is_finite() && s.hi.is_finite() && s.lo <= s.hi,
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn affine_sse_equals_a_plain_qdq_loop() {
        let h = gaussian_counts(-3.0, 5.0, 512, 1e6, false);
        let pts = weighted_centres(&h);
        for i in (0..=192).step_by(7) {
            for j in (150..=512).step_by(11) {
                for bits in [8u8, 3] {
                    let (lo, hi) = (h.edge(i), h.edge(j));
                    let qp = QParams::new(Scheme::Affine, bits, lo, hi);
                    let mut plain = 0.0;
                    for &(c, w) in &pts {
                        let d = qp.qdq(c) - c;
                        plain += w * d * d;
                    }
                    assert_eq!(affine_sse(&pts, bits, lo, hi).to_bits(), plain.to_bits());
                }
            }
        }
    }

    #[test]
    fn affine_lanes_match_the_one_range_loop_bit_for_bit() {
        let mut s = 0x0dd_ba11_cafe_f00du64;
        let mut next = move |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let cases = [
            gaussian_counts(-3.0, 5.0, 512, 1e6, false),
            gaussian_counts(0.0, 5.0, 300, 1e6, true),
            hist(-2.0, -1.0, vec![7; 100]),
            hist(-1e-9, 1e-9, vec![3; 64]),
            hist(
                -1.0,
                1.0,
                (0..999).map(|k| (k * 7919 % 13) as u64).collect(),
            ),
        ];
        for h in &cases {
            let pts = weighted_centres(h);
            let (cs, ws): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
            let nb = h.bins() as u64;
            for bits in [2u8, 4, 8, 16] {
                for _ in 0..20 {
                    // Ranges of every kind: nested, disjoint, empty (lo = hi), reversed.
                    let ranges: [(f64, f64); LANES] = std::array::from_fn(|_| {
                        (h.edge(next(nb + 1) as usize), h.edge(next(nb + 1) as usize))
                    });
                    let qps = ranges.map(|(lo, hi)| QParams::new(Scheme::Affine, bits, lo, hi));
                    let want = ranges.map(|(lo, hi)| affine_sse(&pts, bits, lo, hi).to_bits());
                    let got = affine_sse_lanes(&cs, &ws, &qps).map(f64::to_bits);
                    assert_eq!(got, want, "bits {bits}: {ranges:?}");
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU supports AVX2, checked just above.
                        let got = unsafe { affine_sse_lanes_avx2(&cs, &ws, &qps) };
                        assert_eq!(got.map(f64::to_bits), want, "bits {bits}, AVX2");
                    }
                }
            }
        }
    }

    /// Exhaustive affine search over all pairs: the reference for the coarse-to-fine one.
    fn exhaustive_affine(h: &Histogram, bits: u8) -> (f64, f64, f64) {
        let pts = weighted_centres(h);
        let z = ((0.0 - h.lo) * (h.bins() as f64 / (h.hi - h.lo))).clamp(0.0, (h.bins() - 1) as f64)
            as usize;
        let mut best = (f64::INFINITY, 0.0, 0.0);
        for i in 0..=z {
            for j in z..=h.bins() {
                let e = affine_sse(&pts, bits, h.edge(i), h.edge(j));
                if e < best.0 {
                    best = (e, h.edge(i), h.edge(j));
                }
            }
        }
        best
    }

    #[test]
    fn affine_matches_exhaustive_search_on_smooth_histograms() {
        // 256-bin histograms (exhaustive is ~16k pairs): a skewed bulk with a long right tail
        // and an outlier, and a Gaussian. On such unimodal error surfaces the coarse-to-fine
        // search must find the exhaustive minimum.
        let mut skew: Vec<u64> = (0..256)
            .map(|k| {
                let x = (k as f64 - 60.0) / 20.0;
                (1e5 * (-0.5 * x * x).exp() + 1e4 * (-(k as f64) / 40.0).exp()) as u64
            })
            .collect();
        skew[255] += 2;
        let cases = [
            hist(-1.0, 3.0, skew),
            gaussian_counts(-5.0, 4.0, 256, 1e7, false),
        ];
        for h in &cases {
            for bits in [8u8, 4] {
                let s = affine(h, bits);
                let (e_best, lo, hi) = exhaustive_affine(h, bits);
                let pts = weighted_centres(h);
                let e = affine_sse(&pts, bits, s.lo, s.hi);
                assert!(e <= e_best * (1.0 + 1e-12), "{s:?} vs ({lo}, {hi})");
            }
        }
    }

    #[test]
    fn affine_2048_bins_is_a_local_minimum() {
        // Full-size check of the coarse-to-fine search: no pair within ±12 bins of its
        // answer scores lower (625 pairs, cheap next to the 2.1M of an exhaustive search).
        for (lo, hi) in [(-5.0, 5.0), (-2.0, 6.0)] {
            let h = gaussian_counts(lo, hi, 2048, 1e9, false);
            let s = affine(&h, 8);
            let pts = weighted_centres(&h);
            let e = affine_sse(&pts, 8, s.lo, s.hi);
            let i = ((s.lo - h.lo) / h.width()).round() as usize;
            let j = ((s.hi - h.lo) / h.width()).round() as usize;
            let z = ((0.0 - h.lo) / h.width()) as usize;
            for ii in i.saturating_sub(12)..=(i + 12).min(z) {
                for jj in (j.saturating_sub(12)).max(z)..=(j + 12).min(2048) {
                    let e2 = affine_sse(&pts, 8, h.edge(ii), h.edge(jj));
                    assert!(e2 >= e, "({ii}, {jj}) beats {s:?}: {e2} < {e}");
                }
            }
        }
    }

    #[test]
    fn affine_clips_a_far_outlier_and_counts_pairs() {
        let mut h = gaussian_counts(-4.0, 20.0, 2048, 1e7, false);
        h.counts[2047] += 1;
        let s = affine(&h, 8);
        assert!(s.hi < 8.0 && s.hi > 2.5, "{s:?}");
        assert!(s.lo < -2.5, "{s:?}");
        // Zero is in bin 341: level 1 scores i ∈ {0, 64, …, 320, 341} (7) × j ∈ {341, 405, …,
        // 2013, 2048} (28); levels 2 and 3 add at most 17² − 1 pairs each.
        let coarse = 7 * 28;
        assert!(
            s.candidates > coarse && s.candidates <= coarse + 2 * 288,
            "{s:?}"
        );
    }

    /// A random signed histogram: [`random_counts`] over a range straddling 0, one-sided
    /// either way, or below 2^-24 wide (degenerate quantizers).
    fn random_signed(rng: &mut Rng, len: usize) -> Histogram {
        let end = |rng: &mut Rng| (1 + rng.below(9)) as f64;
        let (lo, hi) = match rng.below(6) {
            0 => (0.5 * end(rng), 10.0 * end(rng)),
            1 => (-end(rng), 0.0),
            2 => (-1e-9 * end(rng), 1e-9 * end(rng)),
            _ => (
                -end(rng) + 0.5,
                10f64.powi(rng.below(5) as i32 - 2) * end(rng),
            ),
        };
        hist(lo, hi, random_counts(rng, len))
    }

    /// Skipping pairs by their clip floor keeps every other pair's error bit for bit, and a
    /// skipped pair's error is above the least error known (so it is never the first least);
    /// the search picks the same range. The floor is below every pair's computed error (the
    /// premise). Logs how many pairs are skipped.
    #[test]
    fn pruned_affine_search_keeps_every_choice() {
        let mut rng = Rng(0x0aff_1e55_c1a9_0005);
        let (mut total, mut skipped, mut positive) = (0usize, 0usize, 0usize);
        for case in 0..200 {
            let len = match case % 4 {
                0 => 2048,
                1 => 256 + rng.below(1800) as usize,
                _ => 1 + rng.below(600) as usize,
            };
            let bits = 2 + rng.below(15) as u8;
            let h = random_signed(&mut rng, len);
            let what = format!("case {case}: len {len}, bits {bits}, [{}, {}]", h.lo, h.hi);
            assert_eq!(
                affine_pruned(&h, bits, true),
                affine_pruned(&h, bits, false),
                "{what}"
            );
            let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
            if cs.is_empty() {
                continue;
            }
            let floor = ClipFloor::new(&cs, &ws);
            // A grid of pairs as a level scores them, at most 17 × 17.
            let (z, nb) = (h.bin_of(0.0), h.bins());
            let stride = 1 + len / 16;
            let pairs: Vec<(usize, usize)> = grid(0, z, stride)
                .flat_map(|i| grid(z, nb, stride).map(move |j| (i, j)))
                .collect();
            let all = pair_errors((&cs, &ws), bits, &h, &pairs, f64::INFINITY, None);
            // Known before: nothing, or some pair's error (a previous level's best).
            let known = match rng.below(3) {
                0 => f64::INFINITY,
                _ => all[rng.below(all.len() as u64) as usize],
            };
            let pruned = pair_errors((&cs, &ws), bits, &h, &pairs, known, Some(&floor));
            let m = all.iter().copied().fold(known, f64::min);
            for (k, ((&a, &p), &(i, j))) in all.iter().zip(&pruned).zip(&pairs).enumerate() {
                if a.to_bits() != p.to_bits() {
                    assert!(
                        p == f64::INFINITY && a > m,
                        "{what}, pair {k}: {a} vs {p}, least {m}"
                    );
                    skipped += 1;
                }
                let qp = QParams::new(Scheme::Affine, bits, h.edge(i), h.edge(j));
                let f = floor.floor(&cs, &qp);
                assert!(
                    f.partial_cmp(&a) != Some(std::cmp::Ordering::Greater),
                    "{what}, ({i}, {j}): floor {f} > error {a}"
                );
                positive += usize::from(f > 0.0);
            }
            total += pairs.len();
        }
        eprintln!("{total} pairs: {positive} with a positive floor, {skipped} skipped");
        assert!(skipped > total / 10, "{skipped} of {total}");
    }

    #[test]
    fn affine_one_sided_only_moves_hi() {
        // min ≥ 0: zero bin 0, so lo is always edge(0) and the scheme widens it to 0.
        let h = gaussian_counts(0.0, 5.0, 2048, 1e7, true);
        let s = affine(&h, 8);
        assert_eq!(s.lo, 0.0);
        assert!(s.hi > 3.0 && s.hi < 5.0, "{s:?}");
        // j ∈ {0, 64, …, 2048}: 33 pairs; then stride 8 over ±64 and stride 1 over ±8 around
        // the best, 17 each, of which 3 were already scored.
        assert_eq!(s.candidates, 33 + 14 + 14, "{s:?}");
    }
}
