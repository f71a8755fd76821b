//! The per-value kernels of the granularity rows: the channel fold of pass 1 and the group
//! quantizers of pass 3, each AVX2 version beside its portable twin.

use super::*;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn fold_avx2(acc: &mut FoldAcc, map: ChannelMap, t: f32, first: usize, values: &[f32]) {
    fold_lanes(acc, map, t, first, values)
}

/// |x| of a finite value, 0 for NaN and ±Inf (which every grid leaves out).
#[inline(always)]
pub(super) fn finite_abs(v: f32) -> f32 {
    let a = v.abs();
    if a < f32::INFINITY { a } else { 0.0 }
}

#[inline(always)]
pub(super) fn fold_lanes(acc: &mut FoldAcc, map: ChannelMap, t: f32, first: usize, values: &[f32]) {
    let mut above = 0u64;
    // Plain loops, not closures: a closure is compiled without the caller's target features.
    if map.stride == 1 {
        for (ch, xs) in Runs::contiguous(map, first, values) {
            let mut n = 0u32;
            for (m, &v) in acc.absmax[ch..ch + xs.len()].iter_mut().zip(xs) {
                let a = finite_abs(v);
                *m = if a > *m { a } else { *m };
                n += u32::from(a >= t);
            }
            above += u64::from(n);
        }
    } else {
        for (ch, xs) in Runs::strided(map, first, values) {
            let (m, n) = absmax_count(xs, t);
            acc.absmax[ch] = acc.absmax[ch].max(m);
            above += n;
        }
    }
    acc.above += above;
}

/// The runs of a chunk that share a channel layout: with stride 1, (first channel, values)
/// for each run of consecutive channels (the chunk cut at every multiple of the channel
/// count); otherwise (channel, values) for each run of `stride` values of one channel.
pub(super) struct Runs<'a> {
    pub(super) map: ChannelMap,
    pub(super) first: usize,
    pub(super) values: &'a [f32],
    pub(super) at: usize,
    pub(super) contiguous: bool,
}

impl<'a> Runs<'a> {
    pub(super) fn contiguous(map: ChannelMap, first: usize, values: &'a [f32]) -> Self {
        Runs {
            map,
            first,
            values,
            at: 0,
            contiguous: true,
        }
    }

    pub(super) fn strided(map: ChannelMap, first: usize, values: &'a [f32]) -> Self {
        Runs {
            contiguous: false,
            ..Runs::contiguous(map, first, values)
        }
    }
}

impl<'a> Iterator for Runs<'a> {
    type Item = (usize, &'a [f32]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (i, m) = (self.at, self.map);
        if i >= self.values.len() {
            return None;
        }
        let (ch, end) = if self.contiguous {
            let ch = m.channel(self.first + i);
            (ch, i + (m.count - ch).min(self.values.len() - i))
        } else {
            let g = (m.offset + self.first + i) / m.stride;
            let end = (g + 1) * m.stride - m.offset - self.first;
            (g % m.count, end.min(self.values.len()))
        };
        self.at = end;
        Some((ch, &self.values[i..end]))
    }
}

/// The largest finite |x| of `xs` (0 if none), in 8 lanes so it vectorises.
#[inline(always)]
pub(super) fn absmax(xs: &[f32]) -> f32 {
    const L: usize = 8;
    let mut m = [0.0f32; L];
    let mut c = xs.chunks_exact(L);
    for v in &mut c {
        for k in 0..L {
            let a = finite_abs(v[k]);
            m[k] = if a > m[k] { a } else { m[k] };
        }
    }
    for (k, &v) in c.remainder().iter().enumerate() {
        let a = finite_abs(v);
        m[k] = if a > m[k] { a } else { m[k] };
    }
    m.iter().fold(0.0, |a, &b| if b > a { b } else { a })
}

/// [`absmax`] and the number of finite |x| ≥ `t`.
#[inline(always)]
pub(super) fn absmax_count(xs: &[f32], t: f32) -> (f32, u64) {
    const L: usize = 8;
    let mut m = [0.0f32; L];
    let mut n = [0u32; L];
    let mut c = xs.chunks_exact(L);
    let mut total = 0u64;
    for v in &mut c {
        for k in 0..L {
            let a = finite_abs(v[k]);
            m[k] = if a > m[k] { a } else { m[k] };
            n[k] += u32::from(a >= t);
        }
    }
    for (k, &v) in c.remainder().iter().enumerate() {
        let a = finite_abs(v);
        m[k] = if a > m[k] { a } else { m[k] };
        total += u64::from(a >= t);
    }
    total += n.iter().map(|&c| u64::from(c)).sum::<u64>();
    (m.iter().fold(0.0, |a, &b| if b > a { b } else { a }), total)
}

/// The scale of a group with this absmax and its reciprocal: absmax/qmax, or 1 for an all-zero
/// group (which any scale quantizes exactly).
#[inline(always)]
pub(super) fn scale(absmax: f32, qmax: f64) -> (f64, f64) {
    let s = if absmax > 0.0 {
        f64::from(absmax) / qmax
    } else {
        1.0
    };
    (s, 1.0 / s)
}

/// Lanes of the floating sums of pass 3: value i of a call goes to lane i mod 8 (two AVX
/// registers of 4, so the fused multiply-add chains overlap).
pub(super) const GL: usize = 8;
/// Lanes of the order-free parts (maxima, counts): one AVX register.
pub(super) const ML: usize = 4;

/// |t − rint(t)| above this may round differently as x·(1/s) than as x/s: redo with the
/// division (the bound of `metrics::lanes_avx2`).
pub(super) const NEAR_HALF: f64 = 0.5 - 1.0 / (1u64 << 30) as f64;

/// Error sums of one quantizer over some groups, lane by lane.
///
/// Two modes. Fast: t = x·(1/s), no clamp, and the largest |t − rint(t)| and |rint(t)| kept,
/// so [`Self::needs_redo`] can tell when a t came near a half step or the grid would clip.
/// Slow: t = x/s, clamped, clips counted. When the fast mode needs no redo, every rint(t) is
/// the division's and inside the grid, so its sums are the slow mode's bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct GroupLanes {
    pub(super) err: [f64; GL],
    pub(super) rec: [f64; GL],
    pub(super) mx: [f64; ML],
    pub(super) tie: [f64; ML],
    pub(super) rmax: [f64; ML],
    pub(super) below: [u64; ML],
    pub(super) above: [u64; ML],
}

impl GroupLanes {
    pub(super) fn needs_redo(&self, qmax: f64) -> bool {
        self.tie.iter().any(|&t| t > NEAR_HALF) || self.rmax.iter().any(|&r| r > qmax)
    }

    /// Adds these sums to `acc` (its count and Σx² are set once per layer, see
    /// [`Plan::finish`]).
    pub(super) fn absorb(&self, acc: &mut ErrorAccum) {
        let (mut err, mut rec) = (0.0, 0.0);
        for k in 0..GL {
            err += self.err[k];
            rec += self.rec[k];
        }
        for k in 0..ML {
            acc.max_abs_error = acc.max_abs_error.max(self.mx[k]);
            acc.below += self.below[k];
            acc.above += self.above[k];
        }
        acc.err_sq += err;
        acc.rec_sq += rec;
    }

    /// One value x (finite, widened) on the grid of scale s into lane k (`inv` = 1/s).
    /// `CHECK`: keep |rint(t)| for [`Self::needs_redo`] (not needed when s comes from these
    /// very values' absmax: then |x·(1/s)| ≤ qmax·(1 + 2^-51) rounds inside the grid).
    #[inline(always)]
    pub(super) fn step<const SLOW: bool, const CHECK: bool>(
        &mut self,
        k: usize,
        x: f64,
        s: f64,
        inv: f64,
        qmax: f64,
    ) {
        let m = k % ML;
        let r = if SLOW {
            let r = (x / s).round_ties_even();
            self.below[m] += u64::from(r < -qmax);
            self.above[m] += u64::from(r > qmax);
            r.clamp(-qmax, qmax)
        } else {
            let t = x * inv;
            let r = t.round_ties_even();
            self.tie[m] = self.tie[m].max((t - r).abs());
            if CHECK {
                self.rmax[m] = self.rmax[m].max(r.abs());
            }
            r
        };
        // x̂ = r·s rounded, as a framework dequantizes (not fused).
        let xh = r * s;
        let e = x - xh;
        self.err[k] = e.mul_add(e, self.err[k]);
        self.rec[k] = xh.mul_add(xh, self.rec[k]);
        self.mx[m] = self.mx[m].max(e.abs());
    }

    /// Values kept exact (x̂ = x): they add x² to Σx̂² and nothing to the error.
    #[inline(always)]
    pub(super) fn exact(&mut self, xs: &[f32]) {
        for (i, &v) in xs.iter().enumerate() {
            let x = widen(v);
            self.rec[i % GL] = x.mul_add(x, self.rec[i % GL]);
        }
    }
}

/// A finite f32 widened to f64; NaN and ±Inf become 0 (every grid holds 0 exactly, so they add
/// nothing to any sum).
#[inline(always)]
pub(super) fn widen(v: f32) -> f64 {
    if v.abs() < f32::INFINITY {
        f64::from(v)
    } else {
        0.0
    }
}

/// The per-value kernels of pass 3: [`Portable`], and [`Avx2`] which computes the same lanes
/// in AVX registers (the same operations in the same order, so the same bits).
pub(super) trait Kernel {
    /// The largest finite |x| of `xs` (0 if none).
    ///
    /// # Safety
    /// The CPU has the kernel's target features.
    unsafe fn absmax(xs: &[f32]) -> f32;

    /// Every value of `xs` on one grid of scale `s` (`inv` = 1/s) into `l`.
    ///
    /// # Safety
    /// The CPU has the kernel's target features.
    unsafe fn uniform<const SLOW: bool, const CHECK: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: f64,
        inv: f64,
        qmax: f64,
    );

    /// Value j of `xs` on the grid of scale `s[j]` (`inv[j]` = 1/s[j]) into `l`.
    ///
    /// # Safety
    /// The CPU has the kernel's target features.
    unsafe fn each<const SLOW: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: &[f64],
        inv: &[f64],
        qmax: f64,
    );
}

pub(super) struct Portable;

impl Kernel for Portable {
    unsafe fn absmax(xs: &[f32]) -> f32 {
        absmax(xs)
    }

    #[inline(always)]
    unsafe fn uniform<const SLOW: bool, const CHECK: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: f64,
        inv: f64,
        qmax: f64,
    ) {
        for (i, &v) in xs.iter().enumerate() {
            l.step::<SLOW, CHECK>(i % GL, widen(v), s, inv, qmax);
        }
    }

    #[inline(always)]
    unsafe fn each<const SLOW: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: &[f64],
        inv: &[f64],
        qmax: f64,
    ) {
        for (i, ((&v, &s), &inv)) in xs.iter().zip(s).zip(inv).enumerate() {
            l.step::<SLOW, true>(i % GL, widen(v), s, inv, qmax);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Kernel for Avx2 {
    #[inline(always)]
    unsafe fn absmax(xs: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { absmax_avx2(xs) }
    }

    #[inline(always)]
    unsafe fn uniform<const SLOW: bool, const CHECK: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: f64,
        inv: f64,
        qmax: f64,
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { lanes_avx2::<SLOW, CHECK, false>(l, xs, (s, inv), (&[], &[]), qmax) }
    }

    #[inline(always)]
    unsafe fn each<const SLOW: bool>(
        l: &mut GroupLanes,
        xs: &[f32],
        s: &[f64],
        inv: &[f64],
        qmax: f64,
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { lanes_avx2::<SLOW, true, true>(l, xs, (0.0, 0.0), (s, inv), qmax) }
    }
}

/// [`absmax`] in one AVX register of 8 (the maximum does not depend on order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn absmax_avx2(xs: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut m = _mm256_setzero_ps();
    let mut c = xs.chunks_exact(8);
    for v in &mut c {
        // SAFETY: `v` holds exactly 8 f32; the load is unaligned.
        let a = _mm256_and_ps(unsafe { _mm256_loadu_ps(v.as_ptr()) }, abs);
        let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(a, inf);
        m = _mm256_max_ps(m, _mm256_and_ps(a, fin));
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    lanes
        .into_iter()
        .fold(absmax(c.remainder()), |a, b| if b > a { b } else { a })
}

/// [`GroupLanes::step`] over `xs` in AVX registers: values 8k..8k+3 and 8k+4..8k+7 are two
/// registers of 4 lanes (lanes 0–3 and 4–7 of the floating sums); the tail goes through the
/// portable step at its lanes. `EACH`: the scales come per value from `each`; otherwise `one`
/// is the one scale and its reciprocal.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn lanes_avx2<const SLOW: bool, const CHECK: bool, const EACH: bool>(
    l: &mut GroupLanes,
    xs: &[f32],
    one: (f64, f64),
    each: (&[f64], &[f64]),
    qmax: f64,
) {
    use std::arch::x86_64::*;
    const RINT: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let n = if EACH {
        xs.len().min(each.0.len()).min(each.1.len())
    } else {
        xs.len()
    };
    let whole = n / GL * GL;
    let abs_ps = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let abs = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
    let (vqlo, vqhi) = (_mm256_set1_pd(-qmax), _mm256_set1_pd(qmax));
    let (s1, inv1) = (_mm256_set1_pd(one.0), _mm256_set1_pd(one.1));
    // SAFETY (all loads and stores below): each array holds the 4 or 8 elements addressed;
    // `xs`, `each.0` and `each.1` hold at least `whole` elements; all are unaligned.
    macro_rules! ld {
        ($p:expr, $i:expr) => {
            unsafe { _mm256_loadu_pd($p.as_ptr().add($i)) }
        };
    }
    let (mut err0, mut err1) = (ld!(l.err, 0), ld!(l.err, 4));
    let (mut rec0, mut rec1) = (ld!(l.rec, 0), ld!(l.rec, 4));
    let (mut mx, mut tie, mut rmax) = (ld!(l.mx, 0), ld!(l.tie, 0), ld!(l.rmax, 0));
    let (mut below, mut above) = unsafe {
        (
            _mm256_loadu_si256(l.below.as_ptr().cast()),
            _mm256_loadu_si256(l.above.as_ptr().cast()),
        )
    };
    let mut i = 0;
    while i < whole {
        let v = unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) };
        let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs_ps), inf);
        let v = _mm256_and_ps(v, fin);
        let x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let x1 = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        let (s0, s1_, i0, i1) = if EACH {
            (
                ld!(each.0, i),
                ld!(each.0, i + 4),
                ld!(each.1, i),
                ld!(each.1, i + 4),
            )
        } else {
            (s1, s1, inv1, inv1)
        };
        let mut xh = [x0, x1];
        for (h, (x, (s, inv))) in xh.iter_mut().zip([(x0, (s0, i0)), (x1, (s1_, i1))]) {
            let r = if SLOW {
                let r = _mm256_round_pd::<RINT>(_mm256_div_pd(x, s));
                // A true compare is all ones (−1 as an integer): subtracting it counts one.
                below = _mm256_sub_epi64(
                    below,
                    _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LT_OQ>(r, vqlo)),
                );
                above = _mm256_sub_epi64(
                    above,
                    _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_GT_OQ>(r, vqhi)),
                );
                _mm256_min_pd(_mm256_max_pd(r, vqlo), vqhi)
            } else {
                let t = _mm256_mul_pd(x, inv);
                let r = _mm256_round_pd::<RINT>(t);
                tie = _mm256_max_pd(tie, _mm256_and_pd(_mm256_sub_pd(t, r), abs));
                if CHECK {
                    rmax = _mm256_max_pd(rmax, _mm256_and_pd(r, abs));
                }
                r
            };
            *h = _mm256_mul_pd(r, s);
        }
        let e0 = _mm256_sub_pd(x0, xh[0]);
        let e1 = _mm256_sub_pd(x1, xh[1]);
        err0 = _mm256_fmadd_pd(e0, e0, err0);
        err1 = _mm256_fmadd_pd(e1, e1, err1);
        rec0 = _mm256_fmadd_pd(xh[0], xh[0], rec0);
        rec1 = _mm256_fmadd_pd(xh[1], xh[1], rec1);
        mx = _mm256_max_pd(mx, _mm256_and_pd(e0, abs));
        mx = _mm256_max_pd(mx, _mm256_and_pd(e1, abs));
        i += GL;
    }
    unsafe {
        _mm256_storeu_pd(l.err.as_mut_ptr(), err0);
        _mm256_storeu_pd(l.err.as_mut_ptr().add(4), err1);
        _mm256_storeu_pd(l.rec.as_mut_ptr(), rec0);
        _mm256_storeu_pd(l.rec.as_mut_ptr().add(4), rec1);
        _mm256_storeu_pd(l.mx.as_mut_ptr(), mx);
        _mm256_storeu_pd(l.tie.as_mut_ptr(), tie);
        _mm256_storeu_pd(l.rmax.as_mut_ptr(), rmax);
        _mm256_storeu_si256(l.below.as_mut_ptr().cast(), below);
        _mm256_storeu_si256(l.above.as_mut_ptr().cast(), above);
    }
    for (j, &v) in xs.iter().enumerate().take(n).skip(whole) {
        let (s, inv) = if EACH { (each.0[j], each.1[j]) } else { one };
        l.step::<SLOW, CHECK>(j % GL, widen(v), s, inv, qmax);
    }
}

/// `exactly!(qmax, acc, l, slow => body)` runs `body` on fresh lanes `l` with `slow` false,
/// again with `slow` true if the fast mode needs a redo (a t near a half step, or a value
/// outside the grid), and adds the lanes to `acc`. A macro, not a closure: a closure would be
/// compiled without the caller's target features.
macro_rules! exactly {
    ($qmax:expr, $acc:expr, $l:ident, $slow:ident => $body:expr) => {{
        let mut $l = GroupLanes::default();
        {
            let $slow = false;
            $body;
        }
        if $l.needs_redo($qmax) {
            $l = GroupLanes::default();
            let $slow = true;
            $body;
        }
        $l.absorb($acc);
    }};
}

/// `K::uniform` with the mode chosen at run time.
///
/// # Safety
/// The CPU has `K`'s target features.
#[inline(always)]
pub(super) unsafe fn uniform<K: Kernel, const CHECK: bool>(
    l: &mut GroupLanes,
    slow: bool,
    xs: &[f32],
    s: f64,
    inv: f64,
    qmax: f64,
) {
    // SAFETY: the caller's guarantee.
    unsafe {
        if slow {
            K::uniform::<true, CHECK>(l, xs, s, inv, qmax)
        } else {
            K::uniform::<false, CHECK>(l, xs, s, inv, qmax)
        }
    }
}
