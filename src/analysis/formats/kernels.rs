//! The per-value kernel of the format rows: an AVX2 version and its portable twin, the same
//! float32 operations lane by lane, so both give the same bits. Value i of a call goes to
//! lane i mod 8 of every sum; the error and Σx̂² sums are float32 over at most 16 values per
//! lane (e = x − x̂ is exact in float32 for every value the clamp leaves alone: x̂ is within a
//! factor 2 of x, or 0), then float64; the lanes are added in lane order.

use crate::formats::FpFormat;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

use super::super::metrics::ErrorAccum;

const L: usize = 8;

/// Error sums of one format row over some values, lane by lane.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct FpLanes {
    err: [f64; L],
    rec: [f64; L],
    mx: [f32; L],
    below: [u64; L],
    above: [u64; L],
}

/// A finite f32, or 0 for NaN and ±Inf (which every row leaves out; 0 adds nothing).
#[inline(always)]
fn finite(v: f32) -> f32 {
    if v.abs() < f32::INFINITY { v } else { 0.0 }
}

impl FpLanes {
    /// Adds these sums to `acc` (count and Σx² are set once per layer).
    pub(super) fn absorb(&self, acc: &mut ErrorAccum) {
        let (mut err, mut rec) = (0.0, 0.0);
        for k in 0..L {
            err += self.err[k];
            rec += self.rec[k];
            acc.max_abs_error = acc.max_abs_error.max(f64::from(self.mx[k]));
            acc.below += self.below[k];
            acc.above += self.above[k];
        }
        acc.err_sq += err;
        acc.rec_sq += rec;
    }

    /// Values clipped so far.
    pub(super) fn clipped(&self) -> u64 {
        self.below.iter().chain(&self.above).sum()
    }

    /// Values kept exact (x̂ = x).
    pub(super) fn exact(&mut self, xs: &[f32]) {
        for (i, &v) in xs.iter().enumerate() {
            let x = f64::from(v);
            self.rec[i % L] += x * x;
        }
    }

    /// Values that dequantize to 0.
    pub(super) fn zero(&mut self, xs: &[f32]) {
        for (i, &v) in xs.iter().enumerate() {
            let x = f64::from(v);
            self.err[i % L] += x * x;
            self.mx[i % L] = self.mx[i % L].max(v.abs());
        }
    }
}

/// The constants of one grid: y = x·inv (or x/d), x̂ = fp(clamp(y))·s.
#[derive(Clone, Copy, Debug)]
pub(super) struct Grid {
    inv: f32,
    s: f32,
    /// The element max M.
    max: f32,
    /// |y| at or past this rounds beyond M (the clamp changes the code).
    over: f32,
    /// The f32 exponent field of the smallest normal (subnormals share its quantum).
    emin: u32,
    /// Added to an exponent field: the field of the rounding constant 2^(q + 23).
    shift: u32,
}

impl Grid {
    pub(super) fn new(fmt: &FpFormat, inv: f32, s: f32) -> Grid {
        Grid {
            inv,
            s,
            max: fmt.max(),
            over: fmt.overflow_threshold(),
            emin: ((127 + fmt.min_normal_exp()) as u32) << 23,
            shift: (23 - fmt.man_bits) << 23,
        }
    }
}

/// Iterations of 8 values whose float32 sums are kept before they are added to the float64
/// lanes: each lane's float32 partial sum holds at most 16 terms.
const FLUSH: usize = 16;

/// One value through the grid, as the AVX2 kernel computes each lane: clamp |y| to M, round
/// it by adding and subtracting c = 2^(q + 23) (q the exponent of its quantum; |y| < c, so
/// the sum rounds to a multiple of 2^q, ties to even), x̂ = r·s with the sign of y.
/// Returns (e, |x̂|, |y|).
#[inline(always)]
fn lane<const DIV: bool>(x: f32, g: &Grid) -> (f32, f32, f32) {
    let y = if DIV { x / g.inv } else { x * g.inv };
    let ya = f32::from_bits(y.to_bits() & 0x7fff_ffff);
    let a = if ya < g.max { ya } else { g.max };
    let ef = a.to_bits() & 0x7f80_0000;
    let ef = if ef > g.emin { ef } else { g.emin };
    let c = f32::from_bits(ef + g.shift);
    let r = (a + c) - c;
    let xa = r * g.s;
    let xh = f32::from_bits(xa.to_bits() | (y.to_bits() ^ ya.to_bits()));
    (x - xh, xa, ya)
}

/// The values of a group the clamp changed (|y| at or past the overflow threshold), below and
/// above, into their lanes: run only for a group whose largest |y| reached the threshold.
#[inline(always)]
fn count_clips<const DIV: bool>(l: &mut FpLanes, group: &[[f32; L]], g: &Grid) {
    for c in group {
        for (k, &x) in c.iter().enumerate() {
            let y = if DIV { x / g.inv } else { x * g.inv };
            l.below[k] += u64::from(y <= -g.over);
            l.above[k] += u64::from(y >= g.over);
        }
    }
}

/// Every value of `xs` (finite: the caller zeroes NaN and ±Inf) on grid `g` into `l`, value i
/// into lane i mod 8; the last values padded with zeros (which add nothing).
pub(super) fn run(l: &mut FpLanes, xs: &[f32], g: &Grid, div: bool) {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return match div {
            true => run_avx2::<true>(cpu, l, xs, g),
            false => run_avx2::<false>(cpu, l, xs, g),
        };
    }
    match div {
        true => run_lanes::<true>(l, xs, g),
        false => run_lanes::<false>(l, xs, g),
    }
}

/// The portable kernel: [`lane`] per value, float32 sums with a fused multiply-add (as the
/// AVX2 kernel's `vfmadd`), flushed to float64 after each group of [`FLUSH`] iterations; the
/// clips of a group counted only when its largest |y| reached the threshold.
pub(super) fn run_lanes<const DIV: bool>(l: &mut FpLanes, xs: &[f32], g: &Grid) {
    let (eights, rest) = xs.as_chunks::<L>();
    let mut tail = [0.0f32; L];
    tail[..rest.len()].copy_from_slice(rest);
    let tail = (!rest.is_empty()).then_some(tail);
    for group in eights
        .chunks(FLUSH)
        .chain(tail.as_ref().map(std::slice::from_ref))
    {
        let mut err = [0.0f32; L];
        let mut rec = [0.0f32; L];
        let mut top = [0.0f32; L];
        for c in group {
            for k in 0..L {
                let (e, xa, ya) = lane::<DIV>(c[k], g);
                err[k] = e.mul_add(e, err[k]);
                rec[k] = xa.mul_add(xa, rec[k]);
                let ea = e.abs();
                l.mx[k] = if l.mx[k] > ea { l.mx[k] } else { ea };
                top[k] = if top[k] > ya { top[k] } else { ya };
            }
        }
        for k in 0..L {
            l.err[k] += f64::from(err[k]);
            l.rec[k] += f64::from(rec[k]);
        }
        if top.iter().any(|&t| t >= g.over) {
            count_clips::<DIV>(l, group, g);
        }
    }
}

/// [`run_lanes`] in one AVX register of 8 lanes, the same operations in the same order.
#[cfg(target_arch = "x86_64")]
fn run_avx2<const DIV: bool>(_: Avx2, l: &mut FpLanes, xs: &[f32], g: &Grid) {
    #[target_feature(enable = "avx2,fma")]
    fn go<const DIV: bool>(l: &mut FpLanes, eights: &[[f32; L]], g: &Grid) {
        use std::arch::x86_64::*;
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let expo = _mm256_set1_epi32(0x7f80_0000);
        let (inv, s, max) = (
            _mm256_set1_ps(g.inv),
            _mm256_set1_ps(g.s),
            _mm256_set1_ps(g.max),
        );
        let (emin, shift) = (
            _mm256_set1_epi32(g.emin as i32),
            _mm256_set1_epi32(g.shift as i32),
        );
        let mut mx = simd::load_f32x8(&l.mx);
        let (e0, e1) = simd::load_f64x8(&l.err);
        let (r0, r1) = simd::load_f64x8(&l.rec);
        let (mut err64, mut rec64) = ([e0, e1], [r0, r1]);
        let mut start = 0;
        while start < eights.len() {
            let group = &eights[start..(start + FLUSH).min(eights.len())];
            start += group.len();
            let (mut err, mut rec) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut top = _mm256_setzero_ps();
            for c in group {
                let x = simd::load_f32x8(c);
                let y = if DIV {
                    _mm256_div_ps(x, inv)
                } else {
                    _mm256_mul_ps(x, inv)
                };
                let ya = _mm256_and_ps(y, abs);
                let a = _mm256_min_ps(ya, max);
                let ef = _mm256_and_si256(_mm256_castps_si256(a), expo);
                let ef = _mm256_max_epi32(ef, emin);
                let c = _mm256_castsi256_ps(_mm256_add_epi32(ef, shift));
                let r = _mm256_sub_ps(_mm256_add_ps(a, c), c);
                let xa = _mm256_mul_ps(r, s);
                let xh = _mm256_or_ps(xa, _mm256_xor_ps(y, ya));
                let e = _mm256_sub_ps(x, xh);
                err = _mm256_fmadd_ps(e, e, err);
                rec = _mm256_fmadd_ps(xa, xa, rec);
                mx = _mm256_max_ps(mx, _mm256_and_ps(e, abs));
                top = _mm256_max_ps(top, ya);
            }
            err64[0] = _mm256_add_pd(err64[0], _mm256_cvtps_pd(_mm256_castps256_ps128(err)));
            err64[1] = _mm256_add_pd(err64[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(err)));
            rec64[0] = _mm256_add_pd(rec64[0], _mm256_cvtps_pd(_mm256_castps256_ps128(rec)));
            rec64[1] = _mm256_add_pd(rec64[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(rec)));
            let hit = _mm256_cmp_ps::<_CMP_GE_OQ>(top, _mm256_set1_ps(g.over));
            if _mm256_movemask_ps(hit) != 0 {
                count_clips::<DIV>(l, group, g);
            }
        }
        simd::store_f32x8(&mut l.mx, mx);
        simd::store_f64x8(&mut l.err, err64[0], err64[1]);
        simd::store_f64x8(&mut l.rec, rec64[0], rec64[1]);
    }
    // The zero-padded tail is a last group of its own, made outside the AVX2 code.
    let (eights, rest) = xs.as_chunks::<L>();
    // SAFETY: the token proves the CPU has AVX2 and FMA.
    unsafe { go::<DIV>(l, eights, g) };
    if !rest.is_empty() {
        let mut tail = [0.0f32; L];
        tail[..rest.len()].copy_from_slice(rest);
        // SAFETY: as above.
        unsafe { go::<DIV>(l, &[tail], g) };
    }
}

/// `xs` with NaN and ±Inf set to 0 (which every row leaves out: 0 adds nothing), into `out`.
pub(super) fn finite_into(xs: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.extend(xs.iter().map(|&v| finite(v)));
}

/// The largest |x| (0 if none) of finite values, in 8 lanes so it vectorises.
#[inline(always)]
pub(super) fn absmax(xs: &[f32]) -> f32 {
    let mut m = [0.0f32; L];
    let (eights, rest) = xs.as_chunks::<L>();
    for c in eights {
        for k in 0..L {
            let a = c[k].abs();
            m[k] = if a > m[k] { a } else { m[k] };
        }
    }
    for &v in rest {
        let a = v.abs();
        m[0] = if a > m[0] { a } else { m[0] };
    }
    m.iter().fold(0.0, |a, &b| if b > a { b } else { a })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::formats::{E2M1, E4M3, E5M2};

    /// The AVX2 kernel against the portable one, bit for bit, on values with zeros of both
    /// signs, subnormals and values far past every max, at every tail length.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_the_portable_lanes() {
        use crate::simd::testing;
        let Some(cpu) = simd::avx2() else {
            // No AVX2 on this CPU: nothing to compare.
            return;
        };
        for (seed, &len) in testing::LENGTHS.iter().enumerate() {
            let mut v = testing::values(len, seed as u64);
            for (i, x) in v.iter_mut().enumerate().step_by(13) {
                *x *= [1e-40, 1e6, -0.0, 3e38][i % 4];
            }
            let mut v2 = Vec::new();
            finite_into(&v, &mut v2);
            for fmt in [E4M3, E5M2, E2M1] {
                for (inv, s) in [(1.0, 1.0), (448.0 / 3.0, 3.0 / 448.0), (1e-3, 1e3)] {
                    let g = Grid::new(&fmt, inv, s);
                    for div in [false, true] {
                        let (mut a, mut b) = (FpLanes::default(), FpLanes::default());
                        if div {
                            run_avx2::<true>(cpu, &mut a, &v2, &g);
                            run_lanes::<true>(&mut b, &v2, &g);
                        } else {
                            run_avx2::<false>(cpu, &mut a, &v2, &g);
                            run_lanes::<false>(&mut b, &v2, &g);
                        }
                        assert_eq!(a, b, "len {len} {} div {div}", fmt.name);
                    }
                }
            }
        }
    }

    #[test]
    fn lanes_follow_the_definition_value_by_value() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        for fmt in [E4M3, E5M2, E2M1] {
            let (inv, s) = fmt.tensor_scales(3.0).unwrap();
            for (i, &x) in v.iter().enumerate() {
                let g = Grid::new(&fmt, inv, s);
                let (e, xa, ya) = lane::<false>(x, &g);
                let want = fmt.quantize(x * inv) * s;
                assert_eq!((x - e).to_bits(), want.to_bits(), "{} {i}", fmt.name);
                assert_eq!((xa, ya), (want.abs(), (x * inv).abs()));
                assert_eq!(ya >= g.over, fmt.cast_overflows(x * inv));
            }
        }
        let g = Grid::new(&E4M3, 448.0 / 3.0, 3.0 / 448.0);
        let mut l = FpLanes::default();
        run_lanes::<false>(&mut l, &v, &g);
        let mut acc = ErrorAccum::default();
        l.absorb(&mut acc);
        let want: f64 = v
            .iter()
            .map(|&x| (f64::from(x) - f64::from(E4M3.quantize(x * g.inv) * g.s)).powi(2))
            .sum();
        assert!(
            (acc.err_sq - want).abs() <= 1e-6 * want,
            "{} vs {want}",
            acc.err_sq
        );
        // |x| up to 6.66 with amax 3: the values past 3·464/448 clip.
        let clipped = v
            .iter()
            .filter(|&&x| E4M3.cast_overflows(x * g.inv))
            .count() as u64;
        assert!(clipped > 0);
        assert_eq!(acc.below + acc.above, clipped);
        assert_eq!(absmax(&v), 18.0 * 0.37);
    }
}
