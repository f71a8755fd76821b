//! Exact quantize-dequantize error of a range, over the real values (not the histogram).

use serde::Serialize;

use crate::calib::QParams;

/// Error sums of one quantizer over one chunk; merged in chunk order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorAccum {
    pub n: u64,
    pub err_sq: f64,
    pub sig_sq: f64,
    pub rec_sq: f64,
    pub dot: f64,
    pub max_abs_error: f64,
    pub below: u64,
    pub above: u64,
}

/// Adding then subtracting 1.5·2^52 rounds an f64 of magnitude < 2^51 to an integer, half to
/// even, in the default rounding mode: `rint` without the libm call, and it vectorises.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// Independent accumulators per lane so the compiler can keep the sums in SIMD registers.
const LANES: usize = 4;

impl ErrorAccum {
    /// Evaluates `q` on the finite values of a chunk.
    pub fn of_chunk(q: &QParams, values: &[f32]) -> ErrorAccum {
        let mut a = ErrorAccum::default();
        a.add(q, values);
        a
    }

    /// Adds the finite values of `values`. Uses AVX2 when the CPU has it: the same lane
    /// arithmetic in wider registers, so the result is bit-identical either way.
    pub fn add(&mut self, q: &QParams, values: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.add_avx2(q, values) };
            return;
        }
        self.add_lanes(q, values);
    }

    /// The lane arithmetic of [`Self::add_lanes`] written with AVX intrinsics (LLVM's own
    /// vectorisation of it spilled and branched): same operations in the same lane order, so the
    /// sums are bit-identical to the portable version (a unit test checks this).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn add_avx2(&mut self, q: &QParams, values: &[f32]) {
        use std::arch::x86_64::*;
        let z = q.zero_point as f64;
        let (qlo, qhi) = (q.qmin as f64 - z, q.qmax as f64 - z);
        let s = _mm256_set1_pd(q.scale);
        let (vqlo, vqhi) = (_mm256_set1_pd(qlo), _mm256_set1_pd(qhi));
        let (vtlo, vthi) = (_mm256_set1_pd(qlo - 1.0), _mm256_set1_pd(qhi + 1.0));
        let magic = _mm256_set1_pd(ROUND_MAGIC);
        let one = _mm256_set1_pd(1.0);
        let abs_pd = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
        let abs_ps = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
        let inf = _mm_set1_ps(f32::INFINITY);
        let zero = _mm256_setzero_pd();
        let (mut err, mut sig, mut rec, mut dot) = (zero, zero, zero, zero);
        let (mut mx, mut below, mut above) = (zero, zero, zero);
        let mut step = |v: __m128| {
            let fin = _mm_cmplt_ps(_mm_and_ps(v, abs_ps), inf);
            let x = _mm256_cvtps_pd(_mm_and_ps(v, fin));
            let t = _mm256_div_pd(x, s);
            let t = _mm256_min_pd(_mm256_max_pd(t, vtlo), vthi);
            let r = _mm256_sub_pd(_mm256_add_pd(t, magic), magic);
            below = _mm256_add_pd(
                below,
                _mm256_and_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(r, vqlo), one),
            );
            above = _mm256_add_pd(
                above,
                _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(r, vqhi), one),
            );
            let r = _mm256_min_pd(_mm256_max_pd(r, vqlo), vqhi);
            let xr = _mm256_mul_pd(r, s);
            let e = _mm256_sub_pd(x, xr);
            err = _mm256_add_pd(err, _mm256_mul_pd(e, e));
            sig = _mm256_add_pd(sig, _mm256_mul_pd(x, x));
            rec = _mm256_add_pd(rec, _mm256_mul_pd(xr, xr));
            dot = _mm256_add_pd(dot, _mm256_mul_pd(x, xr));
            mx = _mm256_max_pd(_mm256_and_pd(e, abs_pd), mx);
        };
        let mut chunks = values.chunks_exact(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 4 f32; the load is unaligned.
            step(unsafe { _mm_loadu_ps(c.as_ptr()) });
        }
        let rest = chunks.remainder();
        let mut tail = [0.0f32; LANES];
        tail[..rest.len()].copy_from_slice(rest);
        // SAFETY: `tail` holds exactly 4 f32.
        step(unsafe { _mm_loadu_ps(tail.as_ptr()) });
        let lanes = |v: __m256d| {
            let mut a = [0.0f64; LANES];
            // SAFETY: `a` holds exactly 4 f64; the store is unaligned.
            unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
            a
        };
        let (err, sig, rec, dot) = (lanes(err), lanes(sig), lanes(rec), lanes(dot));
        let (mx, below, above) = (lanes(mx), lanes(below), lanes(above));
        self.n += values.iter().filter(|v| v.is_finite()).count() as u64;
        self.absorb([err, sig, rec, dot, mx, below, above]);
    }

    /// Branch-free so it vectorises: a non-finite value is replaced by 0, which every grid
    /// represents exactly (it adds nothing to any sum).
    #[inline(always)]
    fn add_lanes(&mut self, q: &QParams, values: &[f32]) {
        let s = q.scale;
        let z = q.zero_point as f64;
        // Integer bounds in the zero-point-free space: q − z ∈ [qlo, qhi].
        let (qlo, qhi) = (q.qmin as f64 - z, q.qmax as f64 - z);
        // Clamping x/s one step beyond the bounds first keeps the rounding trick in range
        // without changing which values clip.
        let (tlo, thi) = (qlo - 1.0, qhi + 1.0);
        let mut err = [0.0f64; LANES];
        let mut sig = [0.0f64; LANES];
        let mut rec = [0.0f64; LANES];
        let mut dot = [0.0f64; LANES];
        let mut mx = [0.0f64; LANES];
        // Counted in f64 (exact below 2^53) so the compares stay in SIMD registers.
        let mut below = [0.0f64; LANES];
        let mut above = [0.0f64; LANES];
        let mut lanes = [0.0f32; LANES];
        let mut chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        let mut tail = [0.0f32; LANES];
        tail[..rest.len()].copy_from_slice(rest);
        // Straight-line code over fixed-size arrays: LLVM's SLP vectoriser packs the lanes.
        for c in (&mut chunks).chain(std::iter::once(&tail[..])) {
            lanes.copy_from_slice(c);
            for k in 0..LANES {
                let v = lanes[k];
                let x = if v.abs() < f32::INFINITY {
                    f64::from(v)
                } else {
                    0.0
                };
                let t = x / s;
                let t = if t < tlo { tlo } else { t };
                let t = if t > thi { thi } else { t };
                let r = (t + ROUND_MAGIC) - ROUND_MAGIC;
                below[k] += if r < qlo { 1.0 } else { 0.0 };
                above[k] += if r > qhi { 1.0 } else { 0.0 };
                let r = if r < qlo { qlo } else { r };
                let r = if r > qhi { qhi } else { r };
                let xr = r * s;
                let e = x - xr;
                err[k] += e * e;
                sig[k] += x * x;
                rec[k] += xr * xr;
                dot[k] += x * xr;
                let ae = e.abs();
                mx[k] = if ae > mx[k] { ae } else { mx[k] };
            }
        }
        self.n += values.iter().filter(|v| v.is_finite()).count() as u64;
        self.absorb([err, sig, rec, dot, mx, below, above]);
    }

    /// Folds the lanes in lane order (both paths share it, so their sums stay identical):
    /// [err², x², x̂², x·x̂, max |e|, below, above].
    #[inline(always)]
    fn absorb(&mut self, lanes: [[f64; LANES]; 7]) {
        let [err, sig, rec, dot, mx, below, above] = lanes;
        for k in 0..LANES {
            self.err_sq += err[k];
            self.sig_sq += sig[k];
            self.rec_sq += rec[k];
            self.dot += dot[k];
            self.max_abs_error = self.max_abs_error.max(mx[k]);
            self.below += below[k] as u64;
            self.above += above[k] as u64;
        }
    }

    pub fn merge(&mut self, o: &ErrorAccum) {
        self.n += o.n;
        self.err_sq += o.err_sq;
        self.sig_sq += o.sig_sq;
        self.rec_sq += o.rec_sq;
        self.dot += o.dot;
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
            self.dot / (self.sig_sq.sqrt() * self.rec_sq.sqrt())
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
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
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
                portable.add_lanes(&q, &v[..len]);
                let dispatched = ErrorAccum::of_chunk(&q, &v[..len]);
                assert_eq!(portable, dispatched, "{scheme:?} len {len}");
            }
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
