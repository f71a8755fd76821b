//! TensorRT "EntropyCalibration2" as NVIDIA Model Optimizer writes it (`_compute_amax_entropy`).

use rayon::prelude::*;

use super::*;

/// What every candidate of the symmetric search reads: counts with h[0] = h[1], their prefix
/// sums (mass[k] = Σ h[0..k), nonzero[k] = #{j < k : h[j] > 0},
/// hlnh[k] = Σ_{j<k, h[j]>0} h[j]·ln h[j]), total, and n = 2^shift levels.
pub(super) struct KlContext {
    pub(super) h: Vec<u64>,
    pub(super) mass: Vec<u64>,
    pub(super) nonzero: Vec<usize>,
    pub(super) hlnh: Vec<f64>,
    pub(super) total: u64,
    pub(super) n: usize,
    pub(super) shift: u32,
}

impl KlContext {
    /// `h` must have a nonzero total; `bits` as [`clamp_bits`] returns them.
    pub(super) fn new(h: Vec<u64>, bits: u32) -> KlContext {
        let nbins = h.len();
        let mut mass = Vec::with_capacity(nbins + 1);
        let mut nonzero = Vec::with_capacity(nbins + 1);
        let mut hlnh = Vec::with_capacity(nbins + 1);
        let (mut m, mut z, mut s) = (0u64, 0usize, 0.0f64);
        mass.push(0);
        nonzero.push(0);
        hlnh.push(0.0);
        for &c in &h {
            m = m.saturating_add(c);
            z += usize::from(c > 0);
            if c > 0 {
                let c = c as f64;
                s += c * c.ln();
            }
            mass.push(m);
            nonzero.push(z);
            hlnh.push(s);
        }
        KlContext {
            total: m,
            h,
            mass,
            nonzero,
            hlnh,
            n: 1 << (bits - 1),
            shift: bits - 1,
        }
    }

    /// KL(P‖Q) of candidate i as scipy computes it; `q`, `terms` hold at least i values.
    pub(super) fn kl(&self, i: usize, q: &mut [f64], terms: &mut [f64]) -> f64 {
        let (h, mass, nonzero, n) = (&self.h, &self.mass, &self.nonzero, self.n);
        let tail = self.total - mass[i];
        if mass[i] == 0 || (h[i - 1] == 0 && tail > 0) {
            // Q is empty, or P[i-1] > 0 = Q[i-1]: infinite divergence.
            return f64::INFINITY;
        }
        // Q: walk the groups; group g spans [ceil(g·i/n), ceil((g+1)·i/n)).
        let mut k = 0;
        while k < i {
            let g = k * n / i;
            let end = ((g + 1) * i).div_ceil(n).min(i);
            let cnt = nonzero[end] - nonzero[k];
            if cnt == 0 {
                q[k..end].fill(0.0);
            } else {
                // modelopt accumulates integer counts in float64: exact below 2^53.
                let v = (mass[end] - mass[k]) as f64 / cnt as f64;
                for (qj, &hj) in q[k..end].iter_mut().zip(&h[k..end]) {
                    *qj = if hj > 0 { v } else { 0.0 };
                }
            }
            k = end;
        }
        let total_f = self.total as f64;
        let q_sum = pairwise_sum(&q[..i]);
        for j in 0..i - 1 {
            terms[j] = rel_entr(h[j] as f64 / total_f, q[j] / q_sum);
        }
        let p_last = h[i - 1].saturating_add(tail);
        terms[i - 1] = rel_entr(p_last as f64 / total_f, q[i - 1] / q_sum);
        pairwise_sum(&terms[..i])
    }

    /// The same divergence as [`Self::kl`] in closed form, with the same ∞ cases but rounded
    /// differently (within [`Self::fast_tolerance`]). With T = total, Q = mass[i],
    /// tail = T − Q, p_last = h[i−1] + tail, group g's mass M_g and nonzero count c_g, and
    /// q_last = M/c of the group holding bin i−1: P = h/T except P[i−1] = p_last/T, and
    /// Q = (M_g/c_g)/Q on the nonzero bins (Σ_g M_g = Q), so
    ///
    /// KL = (hlnh[i] − Σ_{c_g>0} M_g·ln(M_g/c_g))/T + [`Self::kl_floor`]
    ///
    /// (P sums to 1, so its factors 1/T and Q give ln(Q/T); Σ_{j∈g, h_j>0} h_j = M_g, and bin
    /// i−1 carries the extra `tail` at q_last). The first part is Σ_g W_g/T with
    /// W_g = Σ_{j∈g} h_j·ln h_j − M_g·ln(M_g/c_g) ≥ 0 (log-sum inequality), so the floor is a
    /// lower bound. One logarithm per group instead of one per bin, and none per group when
    /// i ≤ n (every group is then at most one bin, W_g = 0).
    pub(super) fn kl_fast(&self, i: usize, group: impl FnMut(usize, usize) -> f64) -> f64 {
        let floor = self.kl_floor(i);
        if floor.is_infinite() {
            return floor;
        }
        self.kl_above_floor(i, floor, f64::INFINITY, group)
    }

    /// [`Self::kl_fast`] given its floor (finite), or ∞ once floor + the W_g/T of the groups
    /// summed so far (also a lower bound, as W_g ≥ 0) exceeds `give_up`: checked every 32
    /// groups, so a candidate well above the minimum stops early and the remaining groups'
    /// logarithms are never taken.
    pub(super) fn kl_above_floor(
        &self,
        i: usize,
        floor: f64,
        give_up: f64,
        mut group: impl FnMut(usize, usize) -> f64,
    ) -> f64 {
        let n = self.n;
        if i <= n {
            return floor;
        }
        // Every group is nonempty (width ≥ 1) and ends at ceil((g+1)·i/n); n = 2^shift.
        // Four accumulators: a single one makes the loop wait on each addition's latency.
        let (mut acc, mut k) = ([0.0f64; 4], 0usize);
        for g in 1..=n {
            let end = (g * i + n - 1) >> self.shift;
            acc[g & 3] += group(k, end);
            k = end;
            if g % 32 == 0 && g < n {
                let part = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                if (self.hlnh[end] - part) / self.total as f64 + floor > give_up {
                    return f64::INFINITY;
                }
            }
        }
        let groups = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        (self.hlnh[i] - groups) / self.total as f64 + floor
    }

    /// The part of [`Self::kl_fast`] that needs no group terms, ∞ where it is ∞:
    /// (p_last·ln p_last − h[i−1]·ln h[i−1] − tail·ln q_last)/T + ln(Q/T), the cost of
    /// clipping the tail into bin i−1. A lower bound on the divergence (see `kl_fast`) at a
    /// few logarithms instead of n group terms.
    pub(super) fn kl_floor(&self, i: usize) -> f64 {
        let (h, mass, nonzero, n) = (&self.h, &self.mass, &self.nonzero, self.n);
        let tail = self.total - mass[i];
        if mass[i] == 0 || (h[i - 1] == 0 && tail > 0) {
            return f64::INFINITY;
        }
        let total_f = self.total as f64;
        let mut num = 0.0;
        if tail > 0 {
            // h[i−1] > 0 (else ∞ above), so the last group has a nonzero bin.
            let hl = h[i - 1] as f64;
            let p_last = h[i - 1].saturating_add(tail) as f64;
            let last_start = if i <= n {
                i - 1
            } else {
                ((n - 1) * i + n - 1) >> self.shift
            };
            let m = (mass[i] - mass[last_start]) as f64;
            let q_last = m / (nonzero[i] - nonzero[last_start]) as f64;
            num = p_last * p_last.ln() - hl * hl.ln() - tail as f64 * q_last.ln();
        }
        num / total_f + (mass[i] as f64 / total_f).ln()
    }

    /// M·ln(M/c) of the group of bins [k, end) with mass M and c nonzero bins (0 if c = 0).
    pub(super) fn group_term(&self, k: usize, end: usize) -> f64 {
        let cnt = self.nonzero[end] - self.nonzero[k];
        if cnt == 0 {
            return 0.0;
        }
        let m = (self.mass[end] - self.mass[k]) as f64;
        m * (m / cnt as f64).ln()
    }

    /// An upper bound on 2·(|kl_fast − exact| + |kl − exact|) for any candidate, so that a
    /// candidate whose fast value is more than this above the fast minimum cannot be (or tie)
    /// the exact minimum. Every sum in `kl_fast` adds at most 2N nonnegative terms (N bins and
    /// at most N groups) bounded by T·ln T in all, each term within a few ulps, so its error is
    /// below (2N + 8)·ε·ln T (ε = 2^-52, generous for sequential sums; [`Self::kl_floor`]
    /// adds a few of the same terms, so it errs by less); scipy's pairwise form
    /// is far tighter ((log₂N + 8)·ε·2 ln T: |p·ln(p/q)| sums to ≤ 2 ln T as p, q ≥ 1/T). For
    /// 2048 bins and T ≤ 2^64 the total is < 1e-10; the 1e-9 floor leaves 10× margin there,
    /// and larger histograms scale the bound. The window costs only exact re-checks, so a
    /// loose bound is cheap.
    pub(super) fn fast_tolerance(&self) -> f64 {
        let nb = self.h.len() as f64;
        let ln_t = (self.total as f64).ln().max(1.0);
        let fast = (2.0 * nb + 8.0) * f64::EPSILON * ln_t;
        let exact = (nb.log2() + 8.0) * f64::EPSILON * 2.0 * ln_t;
        (2.0 * (fast + exact)).max(1e-9)
    }

    /// Model Optimizer's choice among candidates `start..=N`: the last i with the least
    /// exact KL. Scores the candidates with [`Self::fast_pass`], then re-scores with
    /// [`Self::kl`] only those within [`Self::fast_tolerance`] of the fast minimum: any other
    /// candidate's exact KL is strictly above the exact minimum, so the exact rule over the
    /// window picks the same i as over all candidates.
    pub(super) fn search(&self, start: usize) -> usize {
        let nbins = self.h.len();
        let fast = self.fast_pass(start);
        let mut q = vec![0.0f64; nbins];
        let mut terms = vec![0.0f64; nbins];
        // All ∞ (fast is ∞ exactly where exact is): every i ties and the last one, N, wins.
        let mut best = (f64::INFINITY, nbins);
        for k in near_minimum(&fast, self.fast_tolerance()) {
            let i = start + k;
            let kl = self.kl(i, &mut q, &mut terms);
            // NaN cannot arise (Q is never empty here); were it to, it would count as ∞.
            let kl = if kl.is_nan() { f64::INFINITY } else { kl };
            // `<=` keeps the last of equal minima (modelopt reverses before `argmin`).
            if kl <= best.0 {
                best = (kl, i);
            }
        }
        best.1
    }

    /// [`Self::kl_fast`] of candidates `start..=N`, except ∞ for candidates skipped because a
    /// lower bound ([`Self::kl_floor`], or it plus the first groups' W_g/T) exceeds a fast
    /// value already found by more than twice the tolerance tol: their fast value would
    /// exceed it (so the fast minimum) by more than tol (bound and fast value each err by
    /// < tol/2), so they lie outside the re-check window and skipping them leaves the window,
    /// hence the choice, unchanged. Most candidates below the chosen one clip so much tail
    /// mass that their floor alone rules them out.
    pub(super) fn fast_pass(&self, start: usize) -> Vec<f64> {
        let nbins = self.h.len();
        let n = self.n;
        let margin = 2.0 * self.fast_tolerance();
        // Pieces of at most PIECE candidates; with the memo, also not straddling i = w·n + 1,
        // so that all groups of a piece's candidates i > n are w0 or w0 + 1 bins wide.
        let mut pieces = Vec::new();
        let mut a = start;
        while a <= nbins {
            let mut b = (a + PIECE).min(nbins + 1);
            if n >= MEMO_MIN_LEVELS {
                b = b.min((a / n + 1) * n + 1);
            }
            pieces.push((a, b));
            a = b;
        }
        // The least fast value found so far, shared by the pieces.
        let found = Found::new(margin);
        // The full range first: it has no tail, so it is finite and often near the minimum.
        found.lower(self.kl_fast(nbins, |k, end| self.group_term(k, end)));
        // Pieces and candidates from the top down: the large candidates are the ones whose
        // floor says little, and the small ones are pruned by what they find.
        let mut per_piece: Vec<Vec<f64>> = pieces
            .par_iter()
            .rev()
            .map(|&(a, b)| {
                // Only where the piece scores more groups than the memo has slots (not for
                // very large histograms).
                let use_memo = n >= MEMO_MIN_LEVELS && b > n + 1 && (b - a) * n >= 2 * b;
                let mut memo: Option<GroupMemo> = None;
                let mut out = vec![f64::INFINITY; b - a];
                for i in (a..b).rev() {
                    let floor = self.kl_floor(i);
                    let give_up = found.limit();
                    // NaN never prunes (the comparison is false) and is kept for the re-check.
                    if floor > give_up {
                        continue;
                    }
                    let f = if floor.is_infinite() {
                        floor
                    } else if !use_memo {
                        self.kl_above_floor(i, floor, give_up, |k, end| self.group_term(k, end))
                    } else {
                        let memo = memo.get_or_insert_with(|| GroupMemo {
                            w0: a / n,
                            len: b,
                            terms: vec![f64::NAN; 2 * b],
                        });
                        self.kl_above_floor(i, floor, give_up, |k, end| memo.get(self, k, end))
                    };
                    found.lower(f);
                    out[i - a] = f;
                }
                out
            })
            .collect();
        per_piece.reverse();
        per_piece.concat()
    }
}

/// Candidates per parallel work item of the symmetric search's fast pass (with the memo, at
/// most one block i ∈ (w·n, (w+1)·n]: 128 candidates at 8 bits).
pub(super) const PIECE: usize = 128;

/// Levels from which the symmetric search memoises group terms. Its pieces must then end at
/// multiples of n, which would make them tiny for few levels, where the n group terms per
/// candidate are cheap anyway.
pub(super) const MEMO_MIN_LEVELS: usize = 128;

/// `KlContext::group_term` by (width − w0, start) for the candidates of one piece of the
/// symmetric search, computed on first use (NaN: not yet; a term is never NaN). Different
/// candidates' groups often share a (start, width) pair: for 2048 bins at 8 bits the 246k
/// group terms have 33k distinct values, so this saves ~7× in logarithms.
pub(super) struct GroupMemo {
    pub(super) w0: usize,
    pub(super) len: usize,
    pub(super) terms: Vec<f64>,
}

impl GroupMemo {
    pub(super) fn get(&mut self, ctx: &KlContext, k: usize, end: usize) -> f64 {
        let slot = &mut self.terms[(end - k - self.w0) * self.len + k];
        if slot.is_nan() {
            *slot = ctx.group_term(k, end);
        }
        *slot
    }
}

/// Symmetric entropy calibration on the |x| histogram over `[0, max|x|]`: returns `[-a, a]`.
///
/// Model Optimizer's `_compute_amax_entropy` (TensorRT EntropyCalibration2), with h the counts
/// and N their number:
/// 1. h[0] ← h[1] (the zero spike of ReLU outputs would otherwise dominate);
/// 2. n = 2^(b−1) levels (128 for int8);
/// 3. for each i = 128..=N, stride 1 (from min(128, N) if N < 128):
///    * P = h[0..i) with the tail mass Σh[i..] added to P[i−1];
///    * Q: bin k < i belongs to group ⌊k·n/i⌋ — exactly what modelopt's
///      `np.digitize(range(i), np.linspace(0, i, n+1)) - 1` computes, as `linspace` is exact
///      here (n is a power of two) — and each group's mass is spread evenly over its nonzero
///      bins (zero bins of h stay 0 in Q);
///    * KL(P‖Q) as `scipy.stats.entropy`: both divided by their sums, Σ p·ln(p/q) over p > 0
///      (∞ if some p > 0 has q = 0), summed in numpy's pairwise order so equal divergences
///      compare equal exactly as in numpy;
/// 4. the **last** i among equal minima wins; a = edge(i), the upper edge of bin i−1.
///
/// Evaluating step 3 literally costs i logarithms per candidate (~2M for 2048 bins). Instead
/// every candidate is scored with a closed form from prefix sums (≤ n logarithms each, see
/// `KlContext::kl_fast`), and only the candidates within a rounding bound of its minimum
/// are re-scored exactly as above, so the choice, ties included, is the literal search's.
/// The fast pass runs in parallel; the choice does not depend on the threads.
///
/// `candidates` = number of i evaluated (N − start + 1; 1921 for 2048 bins).
///
/// Deviation: when h[0..i) is all zero (all data lies in the tail), Q sums to 0 and scipy
/// returns NaN, which numpy's `argmin` then *prefers*: modelopt picks the largest such i, so
/// data clustered away from 0 is all clipped to its own lower end (a constant tensor gets the
/// upper edge of bin N−2 instead of its value). We score such a candidate ∞ (Q represents
/// none of the data), following the reference page's "p > 0 where q = 0 gives ∞".
/// An empty histogram (or one whose only mass is bin 0, which step 1 erases) returns
/// `[-hi, hi]` with 0 candidates, which is also what modelopt's all-NaN search returns.
pub fn symmetric(abs_hist: &Histogram, bits: u8) -> Search {
    let nbins = abs_hist.bins();
    let mut h = abs_hist.counts.clone();
    if nbins >= 2 {
        h[0] = h[1];
    }
    let total = count_sum(&h);
    if total == 0 || nbins == 0 {
        return Search {
            lo: -abs_hist.hi.abs(),
            hi: abs_hist.hi.abs(),
            candidates: 0,
        };
    }
    let start = START_BIN.min(nbins).max(1);
    let best = KlContext::new(h, clamp_bits(bits)).search(start);
    // abs: an |x| histogram's edges are ≥ 0; this keeps lo ≤ hi on any other input.
    let a = abs_hist.edge(best).abs();
    Search {
        lo: -a,
        hi: a,
        candidates: nbins + 1 - start,
    }
}
