//! Summary statistics of the finite values, mergeable across chunks.

use std::collections::BTreeMap;

use serde::Serialize;

/// Moments and extremes of one chunk (or of several merged). Merged in chunk order so the
/// result does not depend on the thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub zeros: u64,
    pub n: u64,
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    /// Central moment sums Σ(x-mean)^k for k = 2, 3, 4.
    pub m2: f64,
    pub m3: f64,
    pub m4: f64,
    /// Σx² (for SQNR and the RMS).
    pub sum_sq: f64,
    /// |x| with x² ≥ 65520 (x² overflows float16).
    pub square_overflow: u64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            zeros: 0,
            n: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            m3: 0.0,
            m4: 0.0,
            sum_sq: 0.0,
            square_overflow: 0,
        }
    }
}

/// Lanes of pass 1 of [`Moments::of_chunk`]: counts (finite, zeros, NaN, +Inf), sum, extremes.
struct Pass1 {
    c: [[f64; 4]; 4],
    sum: [f64; 4],
    lo: [f32; 4],
    hi: [f32; 4],
}

impl Pass1 {
    fn new() -> Self {
        Pass1 {
            c: [[0.0; 4]; 4],
            sum: [0.0; 4],
            lo: [f32::INFINITY; 4],
            hi: [f32::NEG_INFINITY; 4],
        }
    }

    /// One value into lane k; non-finite values count separately and add nothing.
    #[inline(always)]
    fn step(&mut self, k: usize, v: f32) {
        let one = |b: bool| if b { 1.0f64 } else { 0.0 };
        let fin = v.abs() < f32::INFINITY;
        self.c[0][k] += one(fin);
        self.c[1][k] += one(v == 0.0);
        self.c[2][k] += one(v.is_nan());
        self.c[3][k] += one(v == f32::INFINITY);
        self.sum[k] += if fin { f64::from(v) } else { 0.0 };
        let w = if fin { v } else { self.lo[k] };
        self.lo[k] = if w < self.lo[k] { w } else { self.lo[k] };
        let w = if fin { v } else { self.hi[k] };
        self.hi[k] = if w > self.hi[k] { w } else { self.hi[k] };
    }

    /// `step` over groups of four with AVX: the same operations per lane, so the same sums.
    /// Eight values per iteration: the four counts are compares subtracted from 32-bit integer
    /// lanes (a true compare is −1), where one f64 lane per count cost three operations per
    /// value; the sum, min and max take the two halves in order, exactly as two groups of four.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn body_avx2(&mut self, body: &[f32]) {
        use std::arch::x86_64::*;
        // Counts per block stay far below 2^31 per lane.
        const BLOCK: usize = 1 << 24;
        let ld = |a: &[f64; 4]| unsafe { _mm256_loadu_pd(a.as_ptr()) };
        let st = |a: &mut [f64; 4], v: __m256d| unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
        let mut sum = ld(&self.sum);
        // SAFETY (all loads/stores here): the arrays and chunks hold exactly 4 (or 8) elements.
        let mut lo = unsafe { _mm_loadu_ps(self.lo.as_ptr()) };
        let mut hi = unsafe { _mm_loadu_ps(self.hi.as_ptr()) };
        let abs = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
        let inf = _mm_set1_ps(f32::INFINITY);
        let abs8 = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let inf8 = _mm256_set1_ps(f32::INFINITY);
        let zero8 = _mm256_setzero_ps();
        let eights = body.len() / 8 * 8;
        for block in body[..eights].chunks(BLOCK) {
            let z = _mm256_setzero_si256();
            let (mut c0, mut c1, mut c2, mut c3) = (z, z, z, z);
            for ch in block.chunks_exact(8) {
                let v8 = unsafe { _mm256_loadu_ps(ch.as_ptr()) };
                let fin8 = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v8, abs8), inf8);
                let count = |c: __m256i, m: __m256| _mm256_sub_epi32(c, _mm256_castps_si256(m));
                c0 = count(c0, fin8);
                c1 = count(c1, _mm256_cmp_ps::<_CMP_EQ_OQ>(v8, zero8));
                c2 = count(c2, _mm256_cmp_ps::<_CMP_UNORD_Q>(v8, v8));
                c3 = count(c3, _mm256_cmp_ps::<_CMP_EQ_OQ>(v8, inf8));
                for v in [_mm256_castps256_ps128(v8), _mm256_extractf128_ps::<1>(v8)] {
                    let fin = _mm_cmplt_ps(_mm_and_ps(v, abs), inf);
                    sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm_and_ps(v, fin)));
                    lo = _mm_min_ps(_mm_blendv_ps(lo, v, fin), lo);
                    hi = _mm_max_ps(_mm_blendv_ps(hi, v, fin), hi);
                }
            }
            // Lanes j and j + 4 both hold positions ≡ j (mod 4): lane j of the 4-lane sums.
            for (acc, c) in self.c.iter_mut().zip([c0, c1, c2, c3]) {
                let mut a = [0i32; 8];
                unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), c) };
                for (k, t) in acc.iter_mut().enumerate() {
                    *t += f64::from(a[k]) + f64::from(a[k + 4]);
                }
            }
        }
        st(&mut self.sum, sum);
        unsafe { _mm_storeu_ps(self.lo.as_mut_ptr(), lo) };
        unsafe { _mm_storeu_ps(self.hi.as_mut_ptr(), hi) };
        // A last group of four (the body is a multiple of 4, not always of 8).
        for ch in body[eights..].chunks_exact(4) {
            for (k, &v) in ch.iter().enumerate() {
                self.step(k, v);
            }
        }
    }
}

/// Lanes of pass 2: Σd², Σd³, Σd⁴ about the chunk mean, Σx², and the x² ≥ 65520 count.
struct Pass2 {
    s: [[f64; 4]; 4],
    over: [f64; 4],
}

impl Pass2 {
    #[inline(always)]
    fn step(&mut self, k: usize, v: f32, mean: f64) {
        let fin = v.abs() < f32::INFINITY;
        let x = if fin { f64::from(v) } else { mean };
        let d = x - mean;
        let d2 = d * d;
        self.s[0][k] += d2;
        self.s[1][k] += d2 * d;
        self.s[2][k] += d2 * d2;
        let sq = if fin { x * x } else { 0.0 };
        self.s[3][k] += sq;
        self.over[k] += if sq >= 65520.0 { 1.0 } else { 0.0 };
    }

    /// `step` over groups of four with AVX: the same operations per lane, so the same sums.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn body_avx2(&mut self, body: &[f32], mean: f64) {
        use std::arch::x86_64::*;
        let ld = |a: &[f64; 4]| unsafe { _mm256_loadu_pd(a.as_ptr()) };
        let st = |a: &mut [f64; 4], v: __m256d| unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
        // SAFETY (all loads/stores here): the arrays and chunks hold exactly 4 elements.
        let (mut m2, mut m3, mut m4, mut sq) = (
            ld(&self.s[0]),
            ld(&self.s[1]),
            ld(&self.s[2]),
            ld(&self.s[3]),
        );
        let mut over = ld(&self.over);
        let abs = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
        let inf = _mm_set1_ps(f32::INFINITY);
        let vmean = _mm256_set1_pd(mean);
        let limit = _mm256_set1_pd(65520.0);
        let one = _mm256_set1_pd(1.0);
        for ch in body.chunks_exact(4) {
            let v = unsafe { _mm_loadu_ps(ch.as_ptr()) };
            let fin32 = _mm_cmplt_ps(_mm_and_ps(v, abs), inf);
            let fin = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_castps_si128(fin32)));
            let x = _mm256_blendv_pd(vmean, _mm256_cvtps_pd(_mm_and_ps(v, fin32)), fin);
            let d = _mm256_sub_pd(x, vmean);
            let d2 = _mm256_mul_pd(d, d);
            m2 = _mm256_add_pd(m2, d2);
            m3 = _mm256_add_pd(m3, _mm256_mul_pd(d2, d));
            m4 = _mm256_add_pd(m4, _mm256_mul_pd(d2, d2));
            let s = _mm256_and_pd(_mm256_mul_pd(x, x), fin);
            sq = _mm256_add_pd(sq, s);
            over = _mm256_add_pd(
                over,
                _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(s, limit), one),
            );
        }
        st(&mut self.s[0], m2);
        st(&mut self.s[1], m3);
        st(&mut self.s[2], m4);
        st(&mut self.s[3], sq);
        st(&mut self.over, over);
    }
}

/// Whether the AVX2 bodies may run (checked once per chunk; the check is a cached load).
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Moments {
    /// Two passes over the chunk (mean first) so the central sums stay accurate. Each pass
    /// keeps four independent lanes of sums, branch-free; with AVX2 the lanes are one register
    /// (same operations per lane, so the same result either way).
    pub fn of_chunk(values: &[f32]) -> Moments {
        Self::of_chunk_with(values, avx2())
    }

    fn of_chunk_with(values: &[f32], simd: bool) -> Moments {
        const L: usize = 4;
        let mut m = Moments {
            count: values.len() as u64,
            ..Moments::default()
        };
        let full = values.len() / L * L;
        let (body, rest) = values.split_at(full);
        let mut p1 = Pass1::new();
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when the CPU has AVX2.
            unsafe { p1.body_avx2(body) };
        }
        if !simd || cfg!(not(target_arch = "x86_64")) {
            for ch in body.chunks_exact(L) {
                for (k, &v) in ch.iter().enumerate() {
                    p1.step(k, v);
                }
            }
        }
        for &v in rest {
            p1.step(0, v);
        }
        let total: f64 = p1.sum.iter().sum();
        for k in 0..L {
            m.n += p1.c[0][k] as u64;
            m.zeros += p1.c[1][k] as u64;
            m.nan += p1.c[2][k] as u64;
            m.pos_inf += p1.c[3][k] as u64;
            m.min = m.min.min(p1.lo[k]);
            m.max = m.max.max(p1.hi[k]);
        }
        m.neg_inf = m.count - m.n - m.nan - m.pos_inf;
        if m.n == 0 {
            return m;
        }
        m.mean = total / m.n as f64;
        let mut p2 = Pass2 {
            s: [[0.0; 4]; 4],
            over: [0.0; 4],
        };
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when the CPU has AVX2.
            unsafe { p2.body_avx2(body, m.mean) };
        }
        if !simd || cfg!(not(target_arch = "x86_64")) {
            for ch in body.chunks_exact(L) {
                for (k, &v) in ch.iter().enumerate() {
                    p2.step(k, v, m.mean);
                }
            }
        }
        for &v in rest {
            p2.step(0, v, m.mean);
        }
        for k in 0..L {
            m.m2 += p2.s[0][k];
            m.m3 += p2.s[1][k];
            m.m4 += p2.s[2][k];
            m.sum_sq += p2.s[3][k];
            m.square_overflow += p2.over[k] as u64;
        }
        m
    }

    /// Pébay's pairwise update of the central moments.
    pub fn merge(&mut self, o: &Moments) {
        self.count += o.count;
        self.nan += o.nan;
        self.pos_inf += o.pos_inf;
        self.neg_inf += o.neg_inf;
        self.zeros += o.zeros;
        self.square_overflow += o.square_overflow;
        self.sum_sq += o.sum_sq;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            self.n = o.n;
            self.mean = o.mean;
            self.m2 = o.m2;
            self.m3 = o.m3;
            self.m4 = o.m4;
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let d = o.mean - self.mean;
        let d2 = d * d;
        let m2 = self.m2 + o.m2 + d2 * na * nb / n;
        let m3 = self.m3
            + o.m3
            + d * d2 * na * nb * (na - nb) / (n * n)
            + 3.0 * d * (na * o.m2 - nb * self.m2) / n;
        let m4 = self.m4
            + o.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
            + 6.0 * d2 * (na * na * o.m2 + nb * nb * self.m2) / (n * n)
            + 4.0 * d * (na * o.m3 - nb * self.m3) / n;
        self.n += o.n;
        self.mean += d * nb / n;
        self.m2 = m2;
        self.m3 = m3;
        self.m4 = m4;
    }

    /// Population standard deviation (numpy's default, ddof = 0).
    pub fn std(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            (self.m2 / self.n as f64).sqrt()
        }
    }

    /// Pearson kurtosis (3 for a Gaussian; not the excess).
    pub fn kurtosis(&self) -> f64 {
        if self.n == 0 || self.m2 == 0.0 {
            f64::NAN
        } else {
            self.n as f64 * self.m4 / (self.m2 * self.m2)
        }
    }
}

/// The statistics section of a layer's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub count: u64,
    pub finite: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub min: f64,
    pub max: f64,
    pub absmax: f64,
    pub mean: f64,
    pub std: f64,
    /// Pearson kurtosis: 3 for a Gaussian, 6 for a Laplace; high means heavy tails.
    pub kurtosis: f64,
    pub zero_fraction: f64,
    pub percentiles: Percentiles,
}

/// Nearest-rank percentiles read off 65536-bin histograms (see `resolution`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    /// How exact the values are: each is the upper edge of the histogram bin that holds the
    /// nearest-rank value, so it lies at most this far above it.
    pub resolution_x: f64,
    pub resolution_abs: f64,
    /// `"p0.1"`, `"p1"`, ... of x (the keys sort in numeric order for these percentiles).
    pub x: BTreeMap<String, f64>,
    /// The same of |x|.
    pub abs: BTreeMap<String, f64>,
}

/// The percentiles reported for every layer.
pub const STAT_PERCENTILES: [f64; 6] = [0.1, 1.0, 50.0, 99.0, 99.9, 99.99];

/// Formats a percentile key without trailing zeros: 99.99 -> "p99.99", 1.0 -> "p1".
pub fn percentile_key(p: f64) -> String {
    format!("p{p}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn direct(values: &[f32]) -> (f64, f64, f64) {
        let xs: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let m2 = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let m4 = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
        (mean, m2.sqrt(), m4 / (m2 * m2))
    }

    #[test]
    fn merged_chunks_match_one_pass() {
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 3.0).powi(3))
            .collect();
        let mut merged = Moments::default();
        for c in values.chunks(37) {
            merged.merge(&Moments::of_chunk(c));
        }
        let (mean, std, kurt) = direct(&values);
        assert!((merged.mean - mean).abs() < 1e-9 * mean.abs().max(1.0));
        assert!((merged.std() - std).abs() < 1e-9 * std);
        assert!((merged.kurtosis() - kurt).abs() < 1e-9 * kurt);
        assert_eq!(merged.n, 1000);
    }

    #[test]
    fn simd_and_portable_lanes_agree_exactly() {
        let v: Vec<f32> = (0..4099)
            .map(|i| ((i as f32 * 0.37).cos() * 300.0).powi(3) / 1e4)
            .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 256.0])
            .collect();
        // Lengths with and without a last group of four after the groups of eight; reversed,
        // the special values come first.
        let r: Vec<f32> = v.iter().rev().copied().collect();
        for v in [&v, &r] {
            for len in [0, 1, 4, 7, 8, 12, 13, 4101, v.len()] {
                let portable = Moments::of_chunk_with(&v[..len], false);
                assert_eq!(portable, Moments::of_chunk(&v[..len]), "len {len}");
            }
        }
    }

    #[test]
    fn counts_non_finite_separately() {
        let m = Moments::of_chunk(&[1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -3.0]);
        assert_eq!((m.nan, m.pos_inf, m.neg_inf, m.zeros, m.n), (1, 1, 1, 1, 3));
        assert_eq!((m.min, m.max), (-3.0, 1.0));
        assert!((m.mean - (-2.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn square_overflow_threshold_is_fp16_rounding_boundary() {
        // 255.96 squared is 65515.5, which rounds to 65504 in float16; 255.97^2 = 65520.6 -> inf.
        let m = Moments::of_chunk(&[255.96, -255.97, 300.0]);
        assert_eq!(m.square_overflow, 2);
    }
}
