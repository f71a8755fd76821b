//! float16 / bfloat16 cast audit: what `astype(float16)` / ml_dtypes `bfloat16` would do to the
//! values (IEEE round to nearest even, via the `half` crate).

use half::f16;
use serde::{Deserialize, Serialize};

#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

/// Largest finite float16.
pub const F16_MAX: f64 = 65504.0;
/// The magnitude from which float16 rounds to ±inf (halfway between 65504 and the next step).
pub const F16_OVERFLOW: f64 = 65520.0;

/// The two casts we audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CastType {
    Float16,
    Bfloat16,
}

impl CastType {
    pub const ALL: [CastType; 2] = [CastType::Float16, CastType::Bfloat16];

    pub fn name(self) -> &'static str {
        match self {
            CastType::Float16 => "float16",
            CastType::Bfloat16 => "bfloat16",
        }
    }

    /// Smallest positive normal value of the format.
    pub fn smallest_normal(self) -> f32 {
        match self {
            CastType::Float16 => 6.103_515_6e-5,
            CastType::Bfloat16 => f32::MIN_POSITIVE,
        }
    }
}

/// f32 → bfloat16 → f32, round to nearest even, as `half::bf16::from_f32` does for non-NaN
/// values (NaN is never measured): integer ops only, so the loop vectorises.
#[inline]
pub fn bf16_round_trip(x: f32) -> f32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

/// f32 → float16 → f32, IEEE round to nearest even (F16C's `vcvtps2ph` computes the same).
#[inline]
pub fn f16_round_trip(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Lanes of the floating sums: element i of a chunk goes to lane i mod 8 on both paths.
const LANES: usize = 8;
/// Values per block between folds of the 32-bit counters of the AVX path.
const BLOCK: usize = 1 << 16;

/// One cast's per-lane sums over a chunk. Counts and maxima do not depend on order; the
/// floating sums are kept per lane so the AVX and portable paths add in the same order.
#[derive(Clone, Debug, Default)]
struct Lanes {
    finite_in: u64,
    overflow: u64,
    underflow: u64,
    subnormal: u64,
    n: u64,
    err: [f64; LANES],
    sig: [f64; LANES],
    /// |x − y| is exact in f32: y is x rounded to a coarser grid that x's own grid contains.
    max_abs: f32,
    max_rel: f64,
}

impl Lanes {
    /// One value at lane `k` (the portable path and the AVX path's tail).
    #[inline(always)]
    fn step(&mut self, k: usize, tiny: f32, x: f32, y: f32) {
        let fin_in = x.abs() < f32::INFINITY;
        let fin_out = y.abs() < f32::INFINITY;
        let valid = fin_in && fin_out;
        self.finite_in += u64::from(fin_in);
        self.overflow += u64::from(fin_in && !fin_out);
        self.underflow += u64::from(valid && x != 0.0 && y == 0.0);
        self.subnormal += u64::from(valid && y != 0.0 && y.abs() < tiny);
        self.n += u64::from(valid);
        let (x, y) = if valid { (x, y) } else { (0.0, 0.0) };
        let e = (x - y).abs();
        let (ed, xd) = (f64::from(e), f64::from(x));
        // Both squares are exact in f64, so this equals the AVX path's fused multiply-add.
        self.err[k] += ed * ed;
        self.sig[k] += xd * xd;
        self.max_abs = self.max_abs.max(e);
        if xd != 0.0 {
            self.max_rel = self.max_rel.max(ed / xd.abs());
        }
    }

    fn into_accum(self, values: usize) -> CastAccum {
        let mut a = CastAccum {
            overflow: self.overflow,
            underflow: self.underflow,
            subnormal: self.subnormal,
            nan_inf_input: values as u64 - self.finite_in,
            n: self.n,
            max_abs_error: f64::from(self.max_abs),
            max_rel_error: self.max_rel,
            ..CastAccum::default()
        };
        for k in 0..LANES {
            a.err_sq += self.err[k];
            a.sig_sq += self.sig[k];
        }
        a
    }
}

/// Cast counts and error sums of one chunk; merged in chunk order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CastAccum {
    pub overflow: u64,
    pub underflow: u64,
    pub subnormal: u64,
    pub nan_inf_input: u64,
    /// Over values finite both before and after the cast (overflows are counted, not summed).
    pub n: u64,
    pub err_sq: f64,
    pub sig_sq: f64,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
}

/// Audits one chunk for both casts, in [`CastType::ALL`] order. No buffers: each value is
/// cast, compared and dropped in registers. Uses AVX2/FMA/F16C when the CPU has them, with the
/// same results as the portable path (a unit test checks it).
pub fn audit_chunk(values: &[f32]) -> [CastAccum; 2] {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return audit_avx2(cpu, values);
    }
    audit_portable(values)
}

fn audit_portable(values: &[f32]) -> [CastAccum; 2] {
    finish_scalar(Default::default(), values, 0)
}

/// Steps `values[from..]` one at a time (value i in lane i mod 8), then folds both casts'
/// lanes: the whole portable path, and the AVX path's tail.
fn finish_scalar(mut l: [Lanes; 2], values: &[f32], from: usize) -> [CastAccum; 2] {
    let (t16, tb16) = (
        CastType::Float16.smallest_normal(),
        CastType::Bfloat16.smallest_normal(),
    );
    for (i, &x) in values.iter().enumerate().skip(from) {
        l[0].step(i % LANES, t16, x, f16_round_trip(x));
        l[1].step(i % LANES, tb16, x, bf16_round_trip(x));
    }
    let [a, b] = l;
    [a.into_accum(values.len()), b.into_accum(values.len())]
}

/// [`audit_portable`] 8 values at a time with AVX2, FMA and F16C, the tail one at a time.
#[cfg(target_arch = "x86_64")]
fn audit_avx2(_: Avx2, values: &[f32]) -> [CastAccum; 2] {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn run(values: &[f32]) -> [CastAccum; 2] {
        let mut l: [Lanes; 2] = Default::default();
        let (eights, rest) = values.as_chunks::<LANES>();
        // One cast at a time over an L1/L2-sized block keeps each loop's sums in registers.
        for block in eights.chunks(BLOCK / LANES) {
            cast_block_avx2::<false>(block, &mut l[0]);
            cast_block_avx2::<true>(block, &mut l[1]);
        }
        finish_scalar(l, values, values.len() - rest.len())
    }
    // SAFETY: the token proves the CPU has AVX2, FMA and F16C.
    unsafe { run(values) }
}

/// [`Lanes::step`] on 8 values at a time (at most 2^28 values, so the 32-bit counters cannot
/// wrap). The max relative error is found without dividing: the best
/// (e, |x|) per lane is kept and e·|x|' > e'·|x| compared exactly (f32 products are exact in
/// f64); its one division at the end equals the max of the divisions the portable path makes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn cast_block_avx2<const BF16: bool>(xs: &[[f32; LANES]], l: &mut Lanes) {
    use std::arch::x86_64::*;
    let tiny = if BF16 {
        CastType::Bfloat16.smallest_normal()
    } else {
        CastType::Float16.smallest_normal()
    };
    let abs_ps = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let vtiny = _mm256_set1_ps(tiny);
    let zero = _mm256_setzero_ps();
    let zi = _mm256_setzero_si256();
    let (mut fin, mut over, mut under, mut sub, mut n) = (zi, zi, zi, zi, zi);
    let (mut err0, mut err1) = simd::load_f64x8(&l.err);
    let (mut sig0, mut sig1) = simd::load_f64x8(&l.sig);
    let mut mx = _mm256_set1_ps(l.max_abs);
    let (mut be0, mut be1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let (mut bx0, mut bx1) = (_mm256_set1_pd(1.0), _mm256_set1_pd(1.0));
    let mask = |m: __m256| _mm256_castps_si256(m);
    for x in xs {
        let x = simd::load_f32x8(x);
        let y = if BF16 {
            let b = _mm256_castps_si256(x);
            let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
            let r = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
            _mm256_castsi256_ps(_mm256_and_si256(
                r,
                _mm256_set1_epi32(0xFFFF_0000_u32 as i32),
            ))
        } else {
            _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
        };
        let fin_in = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(x, abs_ps), inf);
        let ay = _mm256_and_ps(y, abs_ps);
        let fin_out = _mm256_cmp_ps::<_CMP_LT_OQ>(ay, inf);
        let valid = _mm256_and_ps(fin_in, fin_out);
        let y0 = _mm256_cmp_ps::<_CMP_EQ_OQ>(y, zero);
        let x0 = _mm256_cmp_ps::<_CMP_EQ_OQ>(x, zero);
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(ay, vtiny);
        // A true compare is all ones (−1 as an integer): subtracting it counts one.
        fin = _mm256_sub_epi32(fin, mask(fin_in));
        over = _mm256_sub_epi32(over, mask(_mm256_andnot_ps(fin_out, fin_in)));
        under = _mm256_sub_epi32(under, mask(_mm256_and_ps(valid, _mm256_andnot_ps(x0, y0))));
        sub = _mm256_sub_epi32(sub, mask(_mm256_and_ps(valid, _mm256_andnot_ps(y0, small))));
        n = _mm256_sub_epi32(n, mask(valid));
        let xv = _mm256_and_ps(x, valid);
        let e = _mm256_and_ps(_mm256_sub_ps(xv, _mm256_and_ps(y, valid)), abs_ps);
        mx = _mm256_max_ps(mx, e);
        let ax = _mm256_and_ps(xv, abs_ps);
        let (e0, e1) = (
            _mm256_cvtps_pd(_mm256_castps256_ps128(e)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)),
        );
        let (a0, a1) = (
            _mm256_cvtps_pd(_mm256_castps256_ps128(ax)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(ax)),
        );
        err0 = _mm256_fmadd_pd(e0, e0, err0);
        err1 = _mm256_fmadd_pd(e1, e1, err1);
        sig0 = _mm256_fmadd_pd(a0, a0, sig0);
        sig1 = _mm256_fmadd_pd(a1, a1, sig1);
        let m0 = _mm256_cmp_pd::<_CMP_GT_OQ>(_mm256_mul_pd(e0, bx0), _mm256_mul_pd(be0, a0));
        let m1 = _mm256_cmp_pd::<_CMP_GT_OQ>(_mm256_mul_pd(e1, bx1), _mm256_mul_pd(be1, a1));
        be0 = _mm256_blendv_pd(be0, e0, m0);
        bx0 = _mm256_blendv_pd(bx0, a0, m0);
        be1 = _mm256_blendv_pd(be1, e1, m1);
        bx1 = _mm256_blendv_pd(bx1, a1, m1);
    }
    let sum = |v: __m256i| {
        let mut a = [0u32; LANES];
        simd::store_u32x8(&mut a, v);
        a.iter().map(|&c| u64::from(c)).sum::<u64>()
    };
    l.finite_in += sum(fin);
    l.overflow += sum(over);
    l.underflow += sum(under);
    l.subnormal += sum(sub);
    l.n += sum(n);
    let mut m = [0.0f32; LANES];
    let (mut e, mut x) = ([0.0f64; LANES], [0.0f64; LANES]);
    simd::store_f64x8(&mut l.err, err0, err1);
    simd::store_f64x8(&mut l.sig, sig0, sig1);
    simd::store_f32x8(&mut m, mx);
    simd::store_f64x8(&mut e, be0, be1);
    simd::store_f64x8(&mut x, bx0, bx1);
    l.max_abs = m.iter().fold(l.max_abs, |a, &b| a.max(b));
    for k in 0..LANES {
        l.max_rel = l.max_rel.max(e[k] / x[k]);
    }
}

impl CastAccum {
    pub fn merge(&mut self, o: &CastAccum) {
        self.overflow += o.overflow;
        self.underflow += o.underflow;
        self.subnormal += o.subnormal;
        self.nan_inf_input += o.nan_inf_input;
        self.n += o.n;
        self.err_sq += o.err_sq;
        self.sig_sq += o.sig_sq;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.max_rel_error = self.max_rel_error.max(o.max_rel_error);
    }

    pub fn finish(&self, cast: CastType) -> CastAudit {
        CastAudit {
            dtype: cast,
            overflow: self.overflow,
            underflow: self.underflow,
            subnormal: self.subnormal,
            nan_inf_input: self.nan_inf_input,
            mse: if self.n == 0 {
                0.0
            } else {
                self.err_sq / self.n as f64
            },
            sqnr_db: sqnr_db(self.sig_sq, self.err_sq),
            max_abs_error: self.max_abs_error,
            max_rel_error: self.max_rel_error,
        }
    }
}

/// `10·log10(signal / noise)`; +∞ when the noise is 0 (and the signal is not).
pub fn sqnr_db(signal_sq: f64, noise_sq: f64) -> f64 {
    if noise_sq == 0.0 {
        if signal_sq == 0.0 {
            f64::NAN
        } else {
            f64::INFINITY
        }
    } else {
        10.0 * (signal_sq / noise_sq).log10()
    }
}

/// The cast section of a layer's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CastAudit {
    pub dtype: CastType,
    /// Finite inputs that became ±inf.
    pub overflow: u64,
    /// Nonzero finite inputs that became 0.
    pub underflow: u64,
    /// Nonzero results below the smallest normal (precision lost).
    pub subnormal: u64,
    /// NaN/±Inf already in the input.
    pub nan_inf_input: u64,
    pub mse: f64,
    #[serde(serialize_with = "crate::analysis::ser_num")]
    pub sqnr_db: f64,
    pub max_abs_error: f64,
    /// Over nonzero finite inputs.
    pub max_rel_error: f64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use half::bf16;

    fn audit(cast: CastType, v: &[f32]) -> CastAudit {
        let [to_f16, to_bf16] = audit_chunk(v);
        match cast {
            CastType::Float16 => to_f16,
            CastType::Bfloat16 => to_bf16,
        }
        .finish(cast)
    }

    #[test]
    fn float16_limits() {
        // 65504 is the largest finite; 65519 rounds down to it; 65520 rounds to inf.
        let a = audit(CastType::Float16, &[65504.0, 65519.0, 65520.0, -1e6]);
        assert_eq!(a.overflow, 2);
        assert_eq!(a.max_abs_error, 15.0);
        // 2^-25 is the tie between 0 and the smallest subnormal 2^-24: ties to even -> 0.
        let tie = 2f32.powi(-25);
        let a = audit(CastType::Float16, &[tie, tie * 1.01, 1e-5, 1e-12]);
        assert_eq!(a.underflow, 2, "2^-25 and 1e-12 flush to zero");
        assert_eq!(a.subnormal, 2, "2^-25·1.01 -> 2^-24 and 1e-5 are subnormal");
    }

    #[test]
    fn bfloat16_rounding_error_bounded_by_unit_roundoff() {
        let v: Vec<f32> = (1..2000).map(|i| i as f32 * 0.731).collect();
        let a = audit(CastType::Bfloat16, &v);
        assert_eq!(a.overflow, 0);
        assert!(a.max_rel_error <= 2f64.powi(-8) + 1e-12);
        assert!(a.max_rel_error > 2f64.powi(-10));
    }

    #[test]
    fn bf16_round_trip_matches_half_on_finite_values() {
        let mut x = 1.0e-40f32;
        while x < 3.0e38 {
            for v in [x, -x, x * 1.000_03, f32::from_bits(x.to_bits() | 0x8000)] {
                assert_eq!(
                    bf16_round_trip(v).to_bits(),
                    bf16::from_f32(v).to_f32().to_bits(),
                    "{v:e}"
                );
            }
            x *= 1.37;
        }
        assert_eq!(bf16_round_trip(f32::MAX), f32::INFINITY);
        assert_eq!(bf16_round_trip(f32::INFINITY), f32::INFINITY);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_path_matches_the_portable_path() {
        use crate::simd::testing;
        let Some(cpu) = simd::avx2() else {
            // No AVX2 on this CPU: nothing to compare.
            return;
        };
        let bits = |a: &[CastAccum; 2]| {
            a.clone().map(|c| {
                let f = [c.err_sq, c.sig_sq, c.max_abs_error, c.max_rel_error];
                let n = [c.overflow, c.underflow, c.subnormal, c.nan_inf_input, c.n];
                (n, f.map(f64::to_bits))
            })
        };
        let check = |v: &[f32], what: &str| {
            assert_eq!(
                bits(&audit_avx2(cpu, v)),
                bits(&audit_portable(v)),
                "{what}"
            );
        };
        // Long enough to cross blocks, over 18 decades, then special values.
        let mut v: Vec<f32> = (0..200_003)
            .map(|i| {
                let t = i as f32 * 0.6123;
                t.sin() * 10f32.powi(i % 17 - 9) * if i % 5 == 0 { 1e4 } else { 1.0 }
            })
            .collect();
        v.extend(testing::SPECIAL);
        for len in [0, 1, 7, 8, 9, 100, BLOCK + 9, v.len()] {
            for start in [0, 3] {
                check(&v[start.min(len)..len], &format!("len {len} from {start}"));
            }
        }
        for (seed, &len) in testing::LENGTHS.iter().enumerate() {
            let v = testing::values(len, seed as u64);
            check(&v, &format!("len {len}"));
            // The values just beside each one (beside the rounding boundaries, too).
            let nudged: Vec<f32> = v.iter().map(|x| f32::from_bits(x.to_bits() ^ 1)).collect();
            check(&nudged, &format!("len {len}, nudged"));
        }
    }

    #[test]
    fn exact_values_give_infinite_sqnr() {
        let a = audit(CastType::Float16, &[1.0, -2.0, 0.5, f32::NAN]);
        assert_eq!(a.sqnr_db, f64::INFINITY);
        assert_eq!(a.nan_inf_input, 1);
    }
}
