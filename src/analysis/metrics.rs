//! Exact quantize-dequantize error of a range, over the real values (not the histogram).
//!
//! The values of a block are prepared once ([`Prepared`]: finite values widened to f64, their
//! count and Σx²), then every quantizer runs over the prepared block while it is in L1.
//! Per value and quantizer: t = x/s (computed as x·(1/s) wherever that provably rounds the
//! same, see `lanes_avx2`), r = rint(t), the clip counts, e = x − r·s, and the sums Σe² and
//! Σr², from which Σx̂² = s²·Σr² (Σr² is exact in f64) and the cosine's
//! Σx·x̂ = (Σx² + Σx̂² − Σe²)/2.

use serde::{Deserialize, Serialize};

use crate::calib::QParams;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

/// Error sums of one quantizer over one chunk; merged in chunk order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorAccum {
    pub n: u64,
    pub err_sq: f64,
    pub sig_sq: f64,
    pub rec_sq: f64,
    pub max_abs_error: f64,
    pub below: u64,
    pub above: u64,
}

/// Adding then subtracting 1.5·2^52 rounds an f64 of magnitude < 2^51 to an integer, half to
/// even, in the default rounding mode: `rint` without the libm call (portable path).
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// Independent accumulators per quantizer: two AVX registers of 4, so that the fused
/// multiply-add chains overlap. The portable path keeps the same lanes, so sums are identical.
const LANES: usize = 8;

/// Values per prepared block: 16 KiB of f64, so it stays in L1 while every quantizer reads it.
pub const BLOCK: usize = 2048;

/// A block of values widened once for every quantizer: non-finite values become 0 (which every
/// grid represents exactly, so they add nothing to any sum), the length is padded with zeros
/// to a multiple of [`LANES`].
#[derive(Debug, Default)]
pub struct Prepared {
    x: Vec<f64>,
    /// Finite values in the block.
    pub n: u64,
    /// Σx² over them.
    pub sig_sq: f64,
}

impl Prepared {
    /// The widened block: finite values as f64, the rest 0, zero-padded to whole lanes.
    pub fn values(&self) -> &[f64] {
        &self.x
    }

    /// Fills the block from `values` (at most [`BLOCK`] is typical, any length works).
    pub fn fill(&mut self, values: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            self.fill_avx2(cpu, values);
            return;
        }
        self.fill_lanes(values);
    }

    /// [`Self::fill_lanes`] in AVX registers (same lanes, same sums: x² is exact, so the fused
    /// multiply-add rounds as the plain addition does).
    #[cfg(target_arch = "x86_64")]
    fn fill_avx2(&mut self, _: Avx2, values: &[f32]) {
        #[target_feature(enable = "avx2,fma")]
        fn run(p: &mut Prepared, values: &[f32]) {
            use std::arch::x86_64::*;
            let len = values.len().div_ceil(LANES) * LANES;
            p.x.resize(len, 0.0);
            let (src, _) = values.as_chunks::<LANES>();
            let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
            let inf = _mm256_set1_ps(f32::INFINITY);
            let (mut sig0, mut sig1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            let mut n = _mm256_setzero_si256();
            for (dst, src) in p.x.as_chunks_mut::<LANES>().0.iter_mut().zip(src) {
                let v = simd::load_f32x8(src);
                let fin = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs), inf);
                n = _mm256_sub_epi32(n, _mm256_castps_si256(fin));
                let v = _mm256_and_ps(v, fin);
                let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
                simd::store_f64x8(dst, lo, hi);
                sig0 = _mm256_fmadd_pd(lo, lo, sig0);
                sig1 = _mm256_fmadd_pd(hi, hi, sig1);
            }
            let mut sig = [0.0f64; LANES];
            let mut counts = [0u32; LANES];
            simd::store_f64x8(&mut sig, sig0, sig1);
            simd::store_u32x8(&mut counts, n);
            let n = counts.iter().map(|&c| u64::from(c)).sum();
            p.finish_scalar(values, src.len() * LANES, sig, n);
        }
        // SAFETY: the token proves the CPU has AVX2 and FMA.
        unsafe { run(self, values) }
    }

    /// The portable path: every value through [`Self::finish_scalar`].
    fn fill_lanes(&mut self, values: &[f32]) {
        self.finish_scalar(values, 0, [0.0; LANES], 0);
    }

    /// Widens `values[from..]` one at a time (value i into lane i mod 8 of Σx²), zero-pads the
    /// block to whole lanes and sets the count and Σx²: the portable path, and the AVX path's
    /// tail (`from` a multiple of 8, with the lanes and count so far).
    fn finish_scalar(&mut self, values: &[f32], from: usize, mut sig: [f64; LANES], mut n: u64) {
        // Keeps the capacity; only a shorter last block shrinks it, and growth writes zeros.
        self.x.resize(values.len().div_ceil(LANES) * LANES, 0.0);
        self.x[from..].fill(0.0);
        for (i, (d, &v)) in self.x.iter_mut().zip(values).enumerate().skip(from) {
            let fin = v.abs() < f32::INFINITY;
            let x = if fin { f64::from(v) } else { 0.0 };
            *d = x;
            // x² of a widened f32 is exact in f64, so only the additions round.
            sig[i % LANES] += x * x;
            n += u64::from(fin);
        }
        self.n = n;
        self.sig_sq = sig.iter().sum();
    }
}

/// The per-lane sums of one quantizer over a prepared block.
#[derive(Default)]
struct Lanes {
    err: [f64; LANES],
    rr: [f64; LANES],
    mx: [f64; LANES],
    below: [u64; LANES],
    above: [u64; LANES],
    /// Some t was too close to a half step for x·(1/s) to be trusted (AVX fast path only).
    near_tie: bool,
}

impl ErrorAccum {
    /// Evaluates `q` on the finite values of a chunk.
    pub fn of_chunk(q: &QParams, values: &[f32]) -> ErrorAccum {
        let mut a = ErrorAccum::default();
        a.add(q, values);
        a
    }

    /// Adds the finite values of `values`.
    pub fn add(&mut self, q: &QParams, values: &[f32]) {
        let mut p = Prepared::default();
        for block in values.chunks(BLOCK) {
            p.fill(block);
            self.add_prepared(q, &p);
        }
    }

    /// Adds a prepared block. Uses AVX2 and FMA when the CPU has them: the same lane arithmetic
    /// in wider registers, so the result is bit-identical either way (a unit test checks it).
    pub fn add_prepared(&mut self, q: &QParams, p: &Prepared) {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            self.absorb(q, p, &lanes_avx2(cpu, q, &p.x));
            return;
        }
        self.absorb(q, p, &lanes_portable(q, &p.x));
    }

    /// Folds the lanes in lane order (both paths share it).
    fn absorb(&mut self, q: &QParams, p: &Prepared, l: &Lanes) {
        let (mut err, mut rr) = (0.0, 0.0);
        for k in 0..LANES {
            err += l.err[k];
            rr += l.rr[k];
            self.max_abs_error = self.max_abs_error.max(l.mx[k]);
            self.below += l.below[k];
            self.above += l.above[k];
        }
        self.n += p.n;
        self.sig_sq += p.sig_sq;
        self.err_sq += err;
        self.rec_sq += q.scale * q.scale * rr;
    }
}

/// Integer bounds in the zero-point-free space: r = q − z ∈ [qlo, qhi].
fn bounds(q: &QParams) -> (f64, f64) {
    let z = q.zero_point as f64;
    (q.qmin as f64 - z, q.qmax as f64 - z)
}

/// The reference arithmetic, one lane per value position mod [`LANES`]: t = x/s, as ONNX
/// Runtime's QuantizeLinear and numpy compute it.
fn lanes_portable(q: &QParams, xs: &[f64]) -> Lanes {
    let (qlo, qhi) = bounds(q);
    let s = q.scale;
    let mut l = Lanes::default();
    for c in xs.chunks_exact(LANES) {
        for (k, &x) in c.iter().enumerate() {
            // Clamped one step beyond the bounds first so the rounding trick stays exact; that
            // changes neither the clamped integer nor which values clip.
            let t = (x / s).clamp(qlo - 1.0, qhi + 1.0);
            let r = (t + ROUND_MAGIC) - ROUND_MAGIC;
            l.below[k] += u64::from(r < qlo);
            l.above[k] += u64::from(r > qhi);
            let r = r.clamp(qlo, qhi);
            let e = x - r * s;
            l.err[k] = e.mul_add(e, l.err[k]);
            l.rr[k] = r.mul_add(r, l.rr[k]);
            l.mx[k] = l.mx[k].max(e.abs());
        }
    }
    l
}

/// [`lanes_portable`] in AVX registers, bit for bit: [`lanes_div_avx2`] with the fast
/// multiplication, redone with the division if a value lay near a half step.
#[cfg(target_arch = "x86_64")]
fn lanes_avx2(cpu: Avx2, q: &QParams, xs: &[f64]) -> Lanes {
    let lanes = lanes_div_avx2::<false>(cpu, q, xs);
    if lanes.near_tie {
        return lanes_div_avx2::<true>(cpu, q, xs);
    }
    lanes
}

/// [`lanes_portable`] in AVX registers: lanes 0–3 and 4–7 are two registers per floating sum
/// (same order, so the same sums); the max and the counts do not depend on order, so they
/// use one register each. `vroundpd` needs no pre-clamp.
///
/// With `DIV = false`, t = x·(1/s): the division's throughput bounded the whole pass. x·(1/s)
/// is within 2^-35 of x/s for |t| ≤ 2^16 + 1 (and beyond that both clip alike), so it rounds to
/// the same integer unless t lies near a half step; any |t − rint(t)| above 0.5 − 2^-30 (a wide
/// margin; exact ties are common in float16 or integer data) sets `near_tie`, and the caller
/// redoes the block with `DIV = true`, so the result always equals the portable path's.
#[cfg(target_arch = "x86_64")]
fn lanes_div_avx2<const DIV: bool>(_: Avx2, q: &QParams, xs: &[f64]) -> Lanes {
    #[target_feature(enable = "avx2,fma")]
    fn run<const DIV: bool>(q: &QParams, xs: &[f64]) -> Lanes {
        use std::arch::x86_64::*;
        const RINT: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let near_half = _mm256_set1_pd(0.5 - 1.0 / (1u64 << 30) as f64);
        let mut tie = _mm256_setzero_pd();
        let (qlo, qhi) = bounds(q);
        let s = _mm256_set1_pd(q.scale);
        let inv = _mm256_set1_pd(1.0 / q.scale);
        let (vqlo, vqhi) = (_mm256_set1_pd(qlo), _mm256_set1_pd(qhi));
        let abs = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
        let z = _mm256_setzero_pd();
        let (mut err0, mut err1, mut rr0, mut rr1, mut mx) = (z, z, z, z, z);
        let (mut below, mut above) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for c in xs.as_chunks::<LANES>().0 {
            let (x0, x1) = simd::load_f64x8(c);
            let (t0, t1) = if DIV {
                (_mm256_div_pd(x0, s), _mm256_div_pd(x1, s))
            } else {
                (_mm256_mul_pd(x0, inv), _mm256_mul_pd(x1, inv))
            };
            let r0 = _mm256_round_pd::<RINT>(t0);
            let r1 = _mm256_round_pd::<RINT>(t1);
            if !DIV {
                let d0 = _mm256_and_pd(_mm256_sub_pd(t0, r0), abs);
                let d1 = _mm256_and_pd(_mm256_sub_pd(t1, r1), abs);
                // The largest |t − rint(t)| of the block, compared once at the end.
                tie = _mm256_max_pd(tie, _mm256_max_pd(d0, d1));
            }
            // A true compare is all ones (−1 as an integer): subtracting it counts one.
            below = _mm256_sub_epi64(
                below,
                _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LT_OQ>(r0, vqlo)),
            );
            below = _mm256_sub_epi64(
                below,
                _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LT_OQ>(r1, vqlo)),
            );
            above = _mm256_sub_epi64(
                above,
                _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_GT_OQ>(r0, vqhi)),
            );
            above = _mm256_sub_epi64(
                above,
                _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_GT_OQ>(r1, vqhi)),
            );
            let r0 = _mm256_min_pd(_mm256_max_pd(r0, vqlo), vqhi);
            let r1 = _mm256_min_pd(_mm256_max_pd(r1, vqlo), vqhi);
            // x̂ = r·s rounded, as a framework dequantizes (not fused: a constant tensor that
            // the grid holds must give error 0, though s itself is inexact).
            let e0 = _mm256_sub_pd(x0, _mm256_mul_pd(r0, s));
            let e1 = _mm256_sub_pd(x1, _mm256_mul_pd(r1, s));
            err0 = _mm256_fmadd_pd(e0, e0, err0);
            err1 = _mm256_fmadd_pd(e1, e1, err1);
            rr0 = _mm256_fmadd_pd(r0, r0, rr0);
            rr1 = _mm256_fmadd_pd(r1, r1, rr1);
            mx = _mm256_max_pd(mx, _mm256_and_pd(e0, abs));
            mx = _mm256_max_pd(mx, _mm256_and_pd(e1, abs));
        }
        let mut l = Lanes {
            near_tie: _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(tie, near_half)) != 0,
            ..Lanes::default()
        };
        simd::store_f64x8(&mut l.err, err0, err1);
        simd::store_f64x8(&mut l.rr, rr0, rr1);
        // One register each for the max and the counts: lanes 4–7 stay 0.
        let (mut m, mut b, mut a) = ([0.0f64; 4], [0u64; 4], [0u64; 4]);
        simd::store_f64x4(&mut m, mx);
        simd::store_u64x4(&mut b, below);
        simd::store_u64x4(&mut a, above);
        l.mx[..4].copy_from_slice(&m);
        l.below[..4].copy_from_slice(&b);
        l.above[..4].copy_from_slice(&a);
        l
    }
    // SAFETY: the token proves the CPU has AVX2 and FMA.
    unsafe { run::<DIV>(q, xs) }
}

impl ErrorAccum {
    pub fn merge(&mut self, o: &ErrorAccum) {
        self.n += o.n;
        self.err_sq += o.err_sq;
        self.sig_sq += o.sig_sq;
        self.rec_sq += o.rec_sq;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.below += o.below;
        self.above += o.above;
    }

    pub fn finish(&self) -> Metrics {
        let n = self.n.max(1) as f64;
        let cosine = if self.sig_sq == 0.0 && self.rec_sq == 0.0 {
            1.0
        } else if self.sig_sq == 0.0 || self.rec_sq == 0.0 {
            0.0
        } else {
            // Σx·x̂ = (Σx² + Σx̂² − Σe²)/2: the small Σe² is subtracted from two large positive
            // sums, so nothing cancels (and no fourth sum is needed per value).
            let dot = 0.5 * (self.sig_sq + self.rec_sq - self.err_sq);
            dot / (self.sig_sq.sqrt() * self.rec_sq.sqrt())
        };
        Metrics {
            mse: self.err_sq / n,
            sqnr_db: crate::analysis::cast::sqnr_db(self.sig_sq, self.err_sq),
            max_abs_error: self.max_abs_error,
            cosine,
            clipped_below: self.below as f64 / n,
            clipped_above: self.above as f64 / n,
        }
    }
}

/// The error of one method's range on the layer's real values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub mse: f64,
    /// `10·log10(Σx² / Σ(x−x̂)²)`; written as `"inf"` in JSON when the error is 0.
    #[serde(serialize_with = "crate::analysis::ser_num")]
    pub sqnr_db: f64,
    pub max_abs_error: f64,
    /// Cosine similarity of x and x̂ (1 when both are zero).
    pub cosine: f64,
    /// Share of finite values whose integer was clamped up to qmin (below the grid by more
    /// than half a step).
    pub clipped_below: f64,
    /// Share clamped down to qmax.
    pub clipped_above: f64,
}

impl Metrics {
    /// Metrics that could not be measured (the values were not there): every one NaN.
    pub const UNMEASURED: Metrics = Metrics {
        mse: f64::NAN,
        sqnr_db: f64::NAN,
        max_abs_error: f64::NAN,
        cosine: f64::NAN,
        clipped_below: f64::NAN,
        clipped_above: f64::NAN,
    };

    pub fn clipped(&self) -> f64 {
        self.clipped_below + self.clipped_above
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::calib::Scheme;

    #[test]
    fn uniform_data_min_max_mse_is_step_squared_over_12() {
        // Dense uniform grid over [-a, a]: rounding error is uniform on [-s/2, s/2].
        let a = 3.0f64;
        let n = 1_000_001;
        let v: Vec<f32> = (0..n)
            .map(|i| (-a + 2.0 * a * i as f64 / (n - 1) as f64) as f32)
            .collect();
        let q = QParams::new(Scheme::Symmetric, 8, -a, a);
        let m = ErrorAccum::of_chunk(&q, &v).finish();
        let expected = q.scale * q.scale / 12.0;
        assert!(
            (m.mse / expected - 1.0).abs() < 0.01,
            "{} vs {}",
            m.mse,
            expected
        );
        // Σx²/n = a²/3 and noise s²/12 with s = a/127 give SQNR = 10·log10(4·127²) = 48.16 dB:
        // 6.02·8 + 1.76 − 4.77 (crest factor √3) + 3.01, less 20·log10(128/127) for the narrow range.
        let ideal = 10.0 * (4.0 * 127.0f64.powi(2)).log10();
        assert!(
            (m.sqnr_db - ideal).abs() < 0.05,
            "{} vs {}",
            m.sqnr_db,
            ideal
        );
        assert_eq!(m.clipped(), 0.0);
        assert!(m.max_abs_error <= q.scale / 2.0 + 1e-7);
    }

    #[test]
    fn simd_path_is_bit_identical_to_the_portable_lanes() {
        let v: Vec<f32> = (0..10_007)
            .map(|i| ((i as f32 * 0.6123).sin() * 40.0).powi(3) / 100.0)
            .chain([f32::NAN, f32::INFINITY, -0.0, 1e30])
            .collect();
        for (scheme, lo, hi) in [
            (Scheme::Symmetric, -50.0, 50.0),
            (Scheme::Affine, -3.0, 700.0),
        ] {
            let q = QParams::new(scheme, 8, lo, hi);
            for len in [0, 1, 3, 4, 5, 10_011] {
                let mut portable = ErrorAccum::default();
                let mut p = Prepared::default();
                for block in v[..len].chunks(BLOCK) {
                    p.fill(block);
                    let lanes = lanes_portable(&q, &p.x);
                    portable.absorb(&q, &p, &lanes);
                }
                let dispatched = ErrorAccum::of_chunk(&q, &v[..len]);
                assert_eq!(portable, dispatched, "{scheme:?} len {len}");
            }
        }
    }

    /// The plain definition, one value at a time with a division: x̂ = qdq(x), clip = the clamp
    /// changed rint(x/s) + z.
    fn naive(q: &QParams, v: &[f32]) -> (u64, u64, u64, f64, f64, f64, f64) {
        let (mut n, mut below, mut above) = (0, 0, 0);
        let (mut err, mut sig, mut rec, mut mx) = (0.0, 0.0, 0.0, 0.0f64);
        for &x in v.iter().filter(|x| x.is_finite()) {
            let x = f64::from(x);
            let u = q.quantize_unclamped(x);
            below += u64::from(u < q.qmin as f64);
            above += u64::from(u > q.qmax as f64);
            let xr = q.qdq(x);
            n += 1;
            err += (x - xr) * (x - xr);
            sig += x * x;
            rec += xr * xr;
            mx = mx.max((x - xr).abs());
        }
        (n, below, above, err, sig, rec, mx)
    }

    #[test]
    fn matches_the_plain_definition_on_random_tensors() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..200 {
            let len = 1 + (next() * 5000.0) as usize;
            let spread = 10f64.powf(next() * 8.0 - 4.0);
            let shift = (next() - 0.3) * spread;
            let v: Vec<f32> = (0..len)
                .map(|_| {
                    let u = next() - 0.5;
                    (shift + spread * u * u * u * 8.0) as f32
                })
                .collect();
            let bits = 2 + (next() * 15.0) as u8;
            let scheme = if case % 2 == 0 {
                Scheme::Symmetric
            } else {
                Scheme::Affine
            };
            // A range from inside the data to beyond it, so some cases clip and some do not.
            let lo = shift - spread * next() * 1.5;
            let hi = shift + spread * next() * 1.5;
            let q = QParams::new(scheme, bits, lo, hi);
            let got = ErrorAccum::of_chunk(&q, &v);
            let (n, below, above, err, sig, rec, mx) = naive(&q, &v);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-300);
            let ctx = format!("case {case}: {scheme:?} {bits} bits [{lo}, {hi}]");
            assert_eq!((got.n, got.below, got.above), (n, below, above), "{ctx}");
            assert!(close(got.err_sq, err), "{ctx}: {} vs {err}", got.err_sq);
            assert!(close(got.sig_sq, sig), "{ctx}");
            assert!(close(got.rec_sq, rec), "{ctx}: {} vs {rec}", got.rec_sq);
            assert!(close(got.max_abs_error, mx), "{ctx}");
        }
    }

    #[test]
    fn ties_round_half_to_even_as_a_division_does() {
        // s = 49/16 is exact but 1/s is not; every value is an exact half step, and x·(1/s)
        // lands a hair off the tie (and rounds the wrong way) for about half of them.
        let q = QParams::new(Scheme::Symmetric, 8, -388.9375, 388.9375);
        assert_eq!(q.scale, 3.0625);
        let v: Vec<f32> = (-127..127).map(|k| (2 * k + 1) as f32 * 1.53125).collect();
        let got = ErrorAccum::of_chunk(&q, &v);
        let (n, below, above, err, sig, rec, mx) = naive(&q, &v);
        assert_eq!((got.n, got.below, got.above), (n, below, above));
        assert_eq!(got.err_sq, err);
        assert_eq!(got.max_abs_error, mx);
        assert_eq!(got.sig_sq, sig);
        assert!((got.rec_sq - rec).abs() <= 1e-12 * rec);
        // Half to even: 0.5 → 0, 1.5 → 2, 2.5 → 2, so Σx̂² has a closed form.
        let even: f64 = (-127..127)
            .map(|k| {
                let t = f64::from(2 * k + 1) / 2.0;
                (t.round_ties_even() * 3.0625).powi(2)
            })
            .sum();
        assert!((got.rec_sq - even).abs() <= 1e-12 * even);
        let mut p = Prepared::default();
        p.fill(&v);
        let mut portable = ErrorAccum::default();
        portable.absorb(&q, &p, &lanes_portable(&q, &p.x));
        assert_eq!(portable, got);
    }

    #[test]
    fn prepared_fill_paths_agree() {
        let v: Vec<f32> = (0..5_003)
            .map(|i| (i as f32 * 0.37).cos() * 1e3)
            .chain([f32::NAN, -f32::INFINITY, 3.0])
            .collect();
        for len in [0, 1, 8, 9, 2048, v.len()] {
            let (mut a, mut b) = (Prepared::default(), Prepared::default());
            a.fill(&v[..len]);
            b.fill_lanes(&v[..len]);
            assert_eq!(
                (a.n, a.sig_sq.to_bits(), &a.x),
                (b.n, b.sig_sq.to_bits(), &b.x)
            );
            // Finite values widened, the rest 0, padded to whole lanes.
            let want: Vec<f64> = v[..len]
                .iter()
                .map(|&x| if x.is_finite() { f64::from(x) } else { 0.0 })
                .chain(std::iter::repeat(0.0))
                .take(len.div_ceil(LANES) * LANES)
                .collect();
            assert_eq!(b.x, want);
            assert_eq!(
                b.n,
                v[..len].iter().filter(|x| x.is_finite()).count() as u64
            );
        }
    }

    /// The AVX2 kernels against their portable twins, directly.
    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::super::*;
        use crate::calib::Scheme;
        use crate::simd::{self, testing};

        /// What [`ErrorAccum::absorb`] reads: the floating sums lane by lane (as bit patterns),
        /// the max and the counts over all lanes (they do not depend on order, and the AVX2
        /// kernel keeps them in fewer lanes).
        fn bits(l: &Lanes) -> ([u64; LANES], [u64; LANES], u64, u64, u64) {
            (
                l.err.map(f64::to_bits),
                l.rr.map(f64::to_bits),
                l.mx.iter().fold(0.0f64, |a, &b| a.max(b)).to_bits(),
                l.below.iter().sum(),
                l.above.iter().sum(),
            )
        }

        /// Quantizers of every kind: both schemes, 2 to 16 bits, a range far inside the data
        /// and one far outside, a subnormal scale, and s = 49/16 whose exact half steps
        /// x·(1/s) misrounds.
        fn quantizers() -> Vec<QParams> {
            let mut qs = vec![QParams::new(Scheme::Symmetric, 8, -388.9375, 388.9375)];
            for (lo, hi) in [(-50.0, 50.0), (-3.0, 700.0), (-1e-3, 2e-3), (-1e30, 1e30)] {
                for bits in [2, 4, 8, 16] {
                    qs.push(QParams::new(Scheme::Symmetric, bits, lo, hi));
                    qs.push(QParams::new(Scheme::Affine, bits, lo, hi));
                }
            }
            qs.push(QParams::new(Scheme::Symmetric, 8, -1e-300, 1e-300));
            qs
        }

        #[test]
        fn fill_matches_the_portable_lanes() {
            let Some(cpu) = simd::avx2() else {
                // No AVX2 on this CPU: nothing to compare.
                return;
            };
            for (seed, &len) in testing::LENGTHS.iter().enumerate() {
                let v = testing::values(len, seed as u64);
                let (mut a, mut b) = (Prepared::default(), Prepared::default());
                // A longer block first, so a shorter one must clear what it left.
                a.fill_avx2(cpu, &testing::values(len + 21, 99));
                a.fill_avx2(cpu, &v);
                b.fill_lanes(&v);
                assert_eq!(
                    (a.n, a.sig_sq.to_bits(), testing::bits64(&a.x)),
                    (b.n, b.sig_sq.to_bits(), testing::bits64(&b.x)),
                    "len {len}"
                );
            }
        }

        #[test]
        fn error_lanes_match_the_portable_lanes() {
            let Some(cpu) = simd::avx2() else {
                // No AVX2 on this CPU: nothing to compare.
                return;
            };
            let mut blocks: Vec<Vec<f32>> = testing::LENGTHS
                .iter()
                .enumerate()
                .map(|(seed, &len)| testing::values(len, seed as u64))
                .collect();
            // Every exact half step of s = 49/16: ties for the division to break.
            blocks.push((-127..127).map(|k| (2 * k + 1) as f32 * 1.53125).collect());
            let mut ties = 0;
            for v in &blocks {
                let mut p = Prepared::default();
                p.fill_lanes(v);
                for q in quantizers() {
                    let want = bits(&lanes_portable(&q, &p.x));
                    let what = format!("len {} {q:?}", v.len());
                    assert_eq!(bits(&lanes_avx2(cpu, &q, &p.x)), want, "{what}");
                    // The division is exact on its own; the multiplication wherever it says
                    // no value lay near a half step.
                    let div = lanes_div_avx2::<true>(cpu, &q, &p.x);
                    assert_eq!(bits(&div), want, "{what}, dividing");
                    let mul = lanes_div_avx2::<false>(cpu, &q, &p.x);
                    if mul.near_tie {
                        ties += 1;
                    } else {
                        assert_eq!(bits(&mul), want, "{what}, multiplying");
                    }
                }
            }
            assert!(ties > 0, "no block took the division");
        }
    }

    #[test]
    fn clipping_is_counted_per_side() {
        let q = QParams::new(Scheme::Symmetric, 8, -1.0, 1.0);
        let m = ErrorAccum::of_chunk(&q, &[-2.0, -0.5, 0.0, 0.5, 3.0, f32::NAN]).finish();
        assert_eq!(m.clipped_below, 0.2);
        assert_eq!(m.clipped_above, 0.2);
        assert_eq!(m.max_abs_error, 2.0);
    }

    #[test]
    fn all_zero_tensor_has_cosine_one() {
        let q = QParams::new(Scheme::Affine, 8, 0.0, 0.0);
        let m = ErrorAccum::of_chunk(&q, &[0.0; 10]).finish();
        assert_eq!(m.cosine, 1.0);
        assert!(m.sqnr_db.is_nan());
        assert_eq!(m.mse, 0.0);
    }
}
