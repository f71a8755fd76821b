//! NVIDIA Model Optimizer's `_compute_amax_mse` (its `fake_tensor_quant` call fixed).

use rayon::prelude::*;

use super::*;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

/// First candidate bin of Model Optimizer's search (`start_bin=128`).
pub(super) const START_BIN: usize = 128;
/// Model Optimizer's `_tensor_quant` treats amax ≤ 2^-24 as zero (everything quantizes to 0).
pub(super) const MODELOPT_ZERO_AMAX: f64 = 1.0 / (1u64 << 24) as f64;

/// Model Optimizer's `fake_tensor_quant(x, amax, num_bits=b, unsigned=False,
/// narrow_range=True)` on CPU (`_tensor_quant` then `/ scale`): scale = (2^(b−1)−1)/amax,
/// q = clamp(round_half_even(x·scale), −max_bound, max_bound), x̂ = q/scale; amax ≤ 2^-24 gives 0.
/// (`torch.round` rounds half to even.) In float64 where modelopt uses float32.
#[inline]
pub(super) fn modelopt_fake_quant(x: f64, amax: f64, max_bound: f64) -> f64 {
    // NaN amax also lands here.
    if amax.is_nan() || amax <= MODELOPT_ZERO_AMAX {
        return 0.0;
    }
    let scale = max_bound / amax;
    crate::calib::scheme::rint_clamped(x * scale, -max_bound, max_bound) / scale
}

/// Σ w·(x̂_a(c) − c)² over the centres in order: the plain loop, used where a lane would
/// have amax ≤ 2^-24 (and by the tests as the reference for [`sse_lanes`]).
pub(super) fn symmetric_sse(cs: &[f64], ws: &[f64], amax: f64, max_bound: f64) -> f64 {
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
pub(super) fn sse_lanes(
    cs: &[f64],
    ws: &[f64],
    amax: &[f64; LANES],
    max_bound: f64,
) -> [f64; LANES] {
    let scale = amax.map(|a| max_bound / a);
    let top = scale.map(|s| max_bound / s);
    let smin = scale.iter().copied().fold(f64::INFINITY, f64::min);
    let split = cs.partition_point(|&c| c * smin < max_bound);
    let mut acc = [0.0f64; LANES];
    for (&c, &w) in cs[..split].iter().zip(&ws[..split]) {
        for l in 0..LANES {
            let r = crate::calib::scheme::rint_clamped(c * scale[l], -max_bound, max_bound);
            let d = r / scale[l] - c;
            acc[l] += w * d * d;
        }
    }
    add_clipped(&mut acc, &cs[split..], &ws[split..], &top);
    acc
}

/// [`sse_lanes`] compiled for AVX2 (same operations per lane: the same sums).
#[cfg(target_arch = "x86_64")]
pub(super) fn sse_lanes_avx2(
    _: Avx2,
    cs: &[f64],
    ws: &[f64],
    amax: &[f64; LANES],
    max_bound: f64,
) -> [f64; LANES] {
    #[target_feature(enable = "avx2")]
    fn run(cs: &[f64], ws: &[f64], amax: &[f64; LANES], max_bound: f64) -> [f64; LANES] {
        sse_lanes(cs, ws, amax, max_bound)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(cs, ws, amax, max_bound) }
}

/// The errors of the candidates `amax`, each exactly as [`symmetric_sse`] computes it.
pub(super) fn symmetric_errors(cs: &[f64], ws: &[f64], amax: &[f64], max_bound: f64) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    let cpu = simd::avx2();
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
        let e = match cpu {
            Some(cpu) => sse_lanes_avx2(cpu, cs, ws, &lanes, max_bound),
            None => sse_lanes(cs, ws, &lanes, max_bound),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let e = sse_lanes(cs, ws, &lanes, max_bound);
        errs.extend_from_slice(&e[..block.len()]);
    }
    errs
}

/// Nonzero bins per level from which the symmetric search scores per level: a level (a guess,
/// two quantizations to check it, two loads) costs about as much as 8 bins of the exact
/// 8-lane scoring. Many bits on few bins (e.g. 16 bits on 2048 bins) have more levels than
/// bins: exact scoring there.
pub(super) const FAST_LEVELS_PER_BIN: usize = 8;

/// What the fast scoring of every symmetric candidate reads: the histogram's bin geometry
/// (centre(j) = lo + width·(j + ½), as [`Histogram::centre`] computes it), the dense range
/// [j0, j1) from the first to past the last nonzero bin, and prefix sums over the bins of
/// w, w·c and w·c·c (`p0[j]` etc. = sums over bins < j; empty bins add exact zeros).
pub(super) struct SymContext {
    pub(super) lo: f64,
    pub(super) width: f64,
    pub(super) j0: usize,
    pub(super) j1: usize,
    pub(super) max_bound: f64,
    pub(super) p0: Vec<f64>,
    pub(super) p1: Vec<f64>,
    pub(super) p2: Vec<f64>,
    /// (p0[j], p1[j]) side by side: one load per boundary in the AVX2 loop.
    pub(super) p01: Vec<[f64; 2]>,
    /// Σw, Σw·|c|, Σw·c² (for the tolerance).
    pub(super) totals: [f64; 3],
}

/// [`SymContext::plan`]: one candidate's scale and levels.
#[derive(Clone, Copy)]
pub(super) struct LevelPlan {
    pub(super) scale: f64,
    pub(super) inv: f64,
    pub(super) k_lo: f64,
    pub(super) levels: usize,
    pub(super) per_bin: f64,
    pub(super) offset: f64,
    pub(super) first: f64,
    pub(super) last: f64,
}

/// Per-worker buffer of [`SymContext::sse_fast`]: the group boundaries.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) bounds: Vec<f64>,
}

impl SymContext {
    /// None for an empty histogram (every error is exactly 0: nothing to speed up).
    pub(super) fn new(h: &Histogram, max_bound: f64) -> Option<SymContext> {
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
    pub(super) fn centre(&self, j: f64) -> f64 {
        self.lo + self.width * (j + 0.5)
    }

    /// The level candidate `scale` quantizes centre(j) to: [`modelopt_fake_quant`]'s rounding.
    #[inline(always)]
    pub(super) fn level(&self, j: f64, scale: f64) -> f64 {
        let m = self.max_bound;
        crate::calib::scheme::rint_clamped(self.centre(j) * scale, -m, m)
    }

    /// The lowest and highest level of the nonzero bins for candidate `amax` (> 2^-24).
    pub(super) fn level_range(&self, amax: f64) -> (f64, f64) {
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
    pub(super) fn sse_fast(&self, amax: f64, s: &mut Scratch) -> f64 {
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
            let b = crate::calib::scheme::rint_clamped(t - 0.5, first - 1.0, last - 1.0) + 1.0;
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
        // do not wait on each other (the bound allows any order), and the last levels (fewer
        // than four) in one more, added last: the order of [`Self::sse_fast_avx2`], so the two
        // agree bit for bit. Plain loops, as iterator adapters would be compiled outside the
        // AVX2 caller.
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
        let (mut t0, mut t1) = (0.0, 0.0);
        for &e in chunks.remainder() {
            let i = (e as usize).min(top);
            t0 += (2.0 * (k_lo + f64::from(g as i32)) + 1.0) * p0[i];
            t1 += p1[i];
            g += 1;
        }
        self.by_parts(
            &plan,
            ((a0[0] + a0[1]) + (a0[2] + a0[3])) + t0,
            ((a1[0] + a1[1]) + (a1[2] + a1[3])) + t1,
        )
    }

    /// What both forms of the per-level sum need of candidate `amax`: its scale and x̂ step
    /// inv, the levels spanned by the dense bins [j0, j1) (the first one, k_lo, and how many
    /// boundaries), and the arithmetic that guesses a boundary bin from k + ½.
    #[inline(always)]
    pub(super) fn plan(&self, amax: f64) -> LevelPlan {
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
    pub(super) fn by_parts(&self, plan: &LevelPlan, b0: f64, b1: f64) -> f64 {
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
    pub(super) fn tolerance(&self, amax_max: f64, levels: usize) -> f64 {
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
    pub(super) fn tail_floor(&self, amax: f64) -> f64 {
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
    pub(super) fn score(
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
    pub(super) fn score_plain(
        &self,
        cw: (&[f64], &[f64]),
        amax: &[f64],
        found: &Found,
    ) -> Vec<f64> {
        let mut s = Scratch::default();
        self.score(cw, amax, found, |a| self.sse_fast(a, &mut s))
    }

    /// [`Self::score`] with AVX2: [`Self::sse_fast_avx2`] where its checks all pass, else
    /// [`Self::sse_fast`] (a tie at some k + ½, or a guess off by one: rare).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn score_avx2(
        &self,
        cpu: Avx2,
        cw: (&[f64], &[f64]),
        amax: &[f64],
        found: &Found,
    ) -> Vec<f64> {
        #[target_feature(enable = "avx2")]
        fn run(
            ctx: &SymContext,
            cpu: Avx2,
            cw: (&[f64], &[f64]),
            amax: &[f64],
            found: &Found,
        ) -> Vec<f64> {
            let mut s = Scratch::default();
            ctx.score(cw, amax, found, |a| match ctx.sse_fast_avx2(cpu, a) {
                Some(e) => e,
                None => ctx.sse_fast(a, &mut s),
            })
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, cpu, cw, amax, found) }
    }

    /// [`Self::sse_fast`] four levels at a time in AVX2 registers, with the same guesses and
    /// the same checks (the centres by the same expression, no fused multiply-add), and the
    /// by-parts sums in four lanes; None if any check fails. Needs fewer than 2^31 bins (i32
    /// indices).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn sse_fast_avx2(&self, _: Avx2, amax: f64) -> Option<f64> {
        #[target_feature(enable = "avx2")]
        fn run(ctx: &SymContext, amax: f64) -> Option<f64> {
            use std::arch::x86_64::*;
            let plan = ctx.plan(amax);
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
            let p0 = &ctx.p0[..];
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
                        v(ctx.lo),
                        _mm256_mul_pd(v(ctx.width), _mm256_add_pd(j, half_v)),
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
                let mut idx = [0u32; 4];
                simd::store_u32x4(&mut idx, _mm256_cvttpd_epi32(b));
                // b ∈ [j0 + 1, j1 − 1] (clamped above): in bounds; the index checks stay cheap.
                let q = idx.map(|i| ctx.p01[i as usize]);
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
            simd::store_f64x4(&mut l0, a0);
            simd::store_f64x4(&mut l1, a1);
            let (mut t0, mut t1) = (0.0, 0.0);
            for g in full..levels {
                let half = k_lo + g as f64 + 0.5;
                let b = ((half * per_bin - offset).floor() + 1.0)
                    .max(first)
                    .min(last);
                if !(ctx.centre(b - 1.0) * scale < half && ctx.centre(b) * scale > half) {
                    return None;
                }
                t0 += (2.0 * (k_lo + g as f64) + 1.0) * p0[b as usize];
                t1 += ctx.p1[b as usize];
            }
            Some(ctx.by_parts(
                &plan,
                ((l0[0] + l0[1]) + (l0[2] + l0[3])) + t0,
                ((l1[0] + l1[1]) + (l1[2] + l1[3])) + t1,
            ))
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, amax) }
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
    let max_bound = Scheme::Symmetric.qmax(bits) as f64;
    let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(abs_hist).into_iter().unzip();
    let start = START_BIN.min(nbins.saturating_sub(1));
    // abs: an |x| histogram's centres are ≥ 0; this keeps lo ≤ hi on any other input.
    let amax: Vec<f64> = (start..nbins).map(|i| abs_hist.centre(i).abs()).collect();
    let (errs, order) = match fast_scores(abs_hist, (&cs, &ws), &amax, max_bound) {
        Some((fast, tol)) => {
            let window: Vec<usize> = crate::calib::near_minimum(&fast, tol).collect();
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
pub(super) fn sym_bounds(
    h: &Histogram,
    amax: &[f64],
    max_bound: f64,
) -> Option<(SymContext, f64, usize)> {
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
pub(super) fn exact_scores(
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
/// tol. They lie outside the re-check window ([`crate::calib::near_minimum`]) either way, and the
/// minimum is one that was scored, so the window, hence the choice, is the same as without
/// skipping, whatever order the threads find values in.
pub(super) fn fast_scores(
    h: &Histogram,
    cw: (&[f64], &[f64]),
    amax: &[f64],
    max_bound: f64,
) -> Option<(Vec<f64>, f64)> {
    fast_scores_pruned(h, cw, amax, max_bound, true)
}

/// [`fast_scores`], skipping candidates by their lower bound only if `prune` (the tests
/// compare both).
pub(super) fn fast_scores_pruned(
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
    // The AVX2 form indexes bins by i32.
    #[cfg(target_arch = "x86_64")]
    let cpu = simd::avx2().filter(|_| ctx.p0.len() < i32::MAX as usize);
    let found = Found::new(if prune { 2.0 * tol } else { f64::INFINITY });
    let run = |chunk: &[f64]| {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = cpu {
            return ctx.score_avx2(cpu, (cs, ws), chunk, &found);
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
