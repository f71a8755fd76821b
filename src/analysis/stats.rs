//! Summary statistics of the finite values, mergeable across chunks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::simd::{self, Avx2};

use super::cast::F16_OVERFLOW;

/// Moments and extremes of one chunk (or of several merged). Merged in chunk order so the
/// result does not depend on the thread count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    fn body_avx2(&mut self, _: Avx2, body: &[f32]) {
        #[target_feature(enable = "avx2")]
        fn run(p: &mut Pass1, body: &[f32]) {
            use std::arch::x86_64::*;
            // Counts per block stay far below 2^31 per lane.
            const BLOCK: usize = 1 << 24;
            let mut sum = simd::load_f64x4(&p.sum);
            let mut lo = simd::load_f32x4(&p.lo);
            let mut hi = simd::load_f32x4(&p.hi);
            let abs = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
            let inf = _mm_set1_ps(f32::INFINITY);
            let abs8 = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
            let inf8 = _mm256_set1_ps(f32::INFINITY);
            let zero8 = _mm256_setzero_ps();
            let (eights, four) = body.as_chunks::<8>();
            for block in eights.chunks(BLOCK / 8) {
                let z = _mm256_setzero_si256();
                let (mut c0, mut c1, mut c2, mut c3) = (z, z, z, z);
                for v8 in block {
                    let v8 = simd::load_f32x8(v8);
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
                for (acc, c) in p.c.iter_mut().zip([c0, c1, c2, c3]) {
                    let mut a = [0u32; 8];
                    simd::store_u32x8(&mut a, c);
                    for (k, t) in acc.iter_mut().enumerate() {
                        *t += f64::from(a[k]) + f64::from(a[k + 4]);
                    }
                }
            }
            simd::store_f64x4(&mut p.sum, sum);
            simd::store_f32x4(&mut p.lo, lo);
            simd::store_f32x4(&mut p.hi, hi);
            // A last group of four (the body is a multiple of 4, not always of 8).
            for ch in four.chunks_exact(4) {
                for (k, &v) in ch.iter().enumerate() {
                    p.step(k, v);
                }
            }
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, body) }
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
        self.over[k] += if sq >= F16_OVERFLOW { 1.0 } else { 0.0 };
    }

    /// `step` over groups of four with AVX: the same operations per lane, so the same sums.
    #[cfg(target_arch = "x86_64")]
    fn body_avx2(&mut self, _: Avx2, body: &[f32], mean: f64) {
        #[target_feature(enable = "avx2")]
        fn run(p: &mut Pass2, body: &[f32], mean: f64) {
            use std::arch::x86_64::*;
            let [m2, m3, m4, sq] = &mut p.s;
            let (mut m2v, mut m3v, mut m4v, mut sqv) = (
                simd::load_f64x4(m2),
                simd::load_f64x4(m3),
                simd::load_f64x4(m4),
                simd::load_f64x4(sq),
            );
            let mut over = simd::load_f64x4(&p.over);
            let abs = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
            let inf = _mm_set1_ps(f32::INFINITY);
            let vmean = _mm256_set1_pd(mean);
            let limit = _mm256_set1_pd(F16_OVERFLOW);
            let one = _mm256_set1_pd(1.0);
            for v in body.as_chunks::<4>().0 {
                let v = simd::load_f32x4(v);
                let fin32 = _mm_cmplt_ps(_mm_and_ps(v, abs), inf);
                let fin = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_castps_si128(fin32)));
                let x = _mm256_blendv_pd(vmean, _mm256_cvtps_pd(_mm_and_ps(v, fin32)), fin);
                let d = _mm256_sub_pd(x, vmean);
                let d2 = _mm256_mul_pd(d, d);
                m2v = _mm256_add_pd(m2v, d2);
                m3v = _mm256_add_pd(m3v, _mm256_mul_pd(d2, d));
                m4v = _mm256_add_pd(m4v, _mm256_mul_pd(d2, d2));
                let s = _mm256_and_pd(_mm256_mul_pd(x, x), fin);
                sqv = _mm256_add_pd(sqv, s);
                over = _mm256_add_pd(
                    over,
                    _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(s, limit), one),
                );
            }
            simd::store_f64x4(m2, m2v);
            simd::store_f64x4(m3, m3v);
            simd::store_f64x4(m4, m4v);
            simd::store_f64x4(sq, sqv);
            simd::store_f64x4(&mut p.over, over);
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, body, mean) }
    }
}

impl Moments {
    /// Two passes over the chunk (mean first) so the central sums stay accurate. Each pass
    /// keeps four independent lanes of sums, branch-free; with AVX2 the lanes are one register
    /// (same operations per lane, so the same result either way).
    pub fn of_chunk(values: &[f32]) -> Moments {
        Self::of_chunk_with(values, simd::avx2())
    }

    /// [`Self::of_chunk`] with the AVX2 bodies if given the token, else the portable ones.
    fn of_chunk_with(values: &[f32], cpu: Option<Avx2>) -> Moments {
        const L: usize = 4;
        let mut m = Moments {
            count: values.len() as u64,
            ..Moments::default()
        };
        let full = values.len() / L * L;
        let (body, rest) = values.split_at(full);
        let mut p1 = Pass1::new();
        match cpu {
            #[cfg(target_arch = "x86_64")]
            Some(cpu) => p1.body_avx2(cpu, body),
            _ => {
                for ch in body.chunks_exact(L) {
                    for (k, &v) in ch.iter().enumerate() {
                        p1.step(k, v);
                    }
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
        match cpu {
            #[cfg(target_arch = "x86_64")]
            Some(cpu) => p2.body_avx2(cpu, body, m.mean),
            _ => {
                for ch in body.chunks_exact(L) {
                    for (k, &v) in ch.iter().enumerate() {
                        p2.step(k, v, m.mean);
                    }
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    use crate::simd::testing;

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

    /// Every field, floats as bit patterns (so NaN = NaN and −0 ≠ +0).
    fn bits(m: &Moments) -> [u64; 14] {
        [
            m.count,
            m.nan,
            m.pos_inf,
            m.neg_inf,
            m.zeros,
            m.n,
            u64::from(m.min.to_bits()),
            u64::from(m.max.to_bits()),
            m.mean.to_bits(),
            m.m2.to_bits(),
            m.m3.to_bits(),
            m.m4.to_bits(),
            m.sum_sq.to_bits(),
            m.square_overflow,
        ]
    }

    #[test]
    fn avx2_and_portable_lanes_agree_exactly() {
        let Some(cpu) = crate::simd::avx2() else {
            // No AVX2 on this CPU: nothing to compare.
            return;
        };
        let smooth: Vec<f32> = (0..4099)
            .map(|i| ((i as f32 * 0.37).cos() * 300.0).powi(3) / 1e4)
            .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 256.0])
            .collect();
        // Lengths with and without a last group of four after the groups of eight; reversed,
        // the special values come first.
        let reversed: Vec<f32> = smooth.iter().rev().copied().collect();
        let mut cases = vec![smooth, reversed];
        // Large magnitudes (sums that overflow to ∞, moments that become NaN), subnormals.
        for (seed, &len) in testing::LENGTHS.iter().enumerate() {
            cases.push(testing::values(len, seed as u64));
            cases.push(
                testing::values(len, seed as u64)
                    .iter()
                    .map(|v| v * 1e-30)
                    .collect(),
            );
        }
        // Zeros of both signs in every arrangement: min and max are a zero of some sign.
        for pattern in 0u32..1 << 12 {
            cases.push(
                (0..12)
                    .map(|i| if pattern >> i & 1 == 1 { -0.0 } else { 0.0 })
                    .collect(),
            );
        }
        for v in &cases {
            for len in [0, 1, 4, 7, 8, 12, 13, 4101, v.len()] {
                let v = &v[..len.min(v.len())];
                let portable = Moments::of_chunk_with(v, None);
                let fast = Moments::of_chunk_with(v, Some(cpu));
                assert_eq!(bits(&fast), bits(&portable), "len {}", v.len());
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
