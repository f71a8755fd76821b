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

impl Moments {
    /// Two passes over the chunk (mean first) so the central sums stay accurate. Each pass
    /// keeps four independent lanes of sums, branch-free, so it vectorises.
    pub fn of_chunk(values: &[f32]) -> Moments {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { Self::of_chunk_avx2(values) };
        }
        Self::of_chunk_lanes(values)
    }

    /// The same code compiled for AVX2 (wider registers, same lane arithmetic: same result).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn of_chunk_avx2(values: &[f32]) -> Moments {
        Self::of_chunk_lanes(values)
    }

    #[inline(always)]
    fn of_chunk_lanes(values: &[f32]) -> Moments {
        const L: usize = 4;
        let mut m = Moments {
            count: values.len() as u64,
            ..Moments::default()
        };
        let one = |b: bool| if b { 1.0f64 } else { 0.0 };
        let full = values.len() / L * L;
        let (body, rest) = values.split_at(full);
        // Pass 1: counts, extremes, sum. Non-finite values count separately and add nothing.
        let mut c = [[0.0f64; L]; 4]; // finite, zeros, nan, +inf
        let mut sum = [0.0f64; L];
        let mut lo = [f32::INFINITY; L];
        let mut hi = [f32::NEG_INFINITY; L];
        let mut first = |k: usize, v: f32| {
            let fin = v.abs() < f32::INFINITY;
            c[0][k] += one(fin);
            c[1][k] += one(v == 0.0);
            c[2][k] += one(v.is_nan());
            c[3][k] += one(v == f32::INFINITY);
            sum[k] += if fin { f64::from(v) } else { 0.0 };
            let w = if fin { v } else { lo[k] };
            lo[k] = if w < lo[k] { w } else { lo[k] };
            let w = if fin { v } else { hi[k] };
            hi[k] = if w > hi[k] { w } else { hi[k] };
        };
        for ch in body.chunks_exact(L) {
            for (k, &v) in ch.iter().enumerate() {
                first(k, v);
            }
        }
        for &v in rest {
            first(0, v);
        }
        let total: f64 = sum.iter().sum();
        for k in 0..L {
            m.n += c[0][k] as u64;
            m.zeros += c[1][k] as u64;
            m.nan += c[2][k] as u64;
            m.pos_inf += c[3][k] as u64;
            m.min = m.min.min(lo[k]);
            m.max = m.max.max(hi[k]);
        }
        m.neg_inf = m.count - m.n - m.nan - m.pos_inf;
        if m.n == 0 {
            return m;
        }
        m.mean = total / m.n as f64;
        // Pass 2: central moments about the chunk mean.
        let mean = m.mean;
        let mut s = [[0.0f64; L]; 4]; // m2, m3, m4, Σx²
        let mut over = [0.0f64; L];
        let mut second = |k: usize, v: f32| {
            let fin = v.abs() < f32::INFINITY;
            let x = if fin { f64::from(v) } else { mean };
            let d = x - mean;
            let d2 = d * d;
            s[0][k] += d2;
            s[1][k] += d2 * d;
            s[2][k] += d2 * d2;
            let sq = if fin { x * x } else { 0.0 };
            s[3][k] += sq;
            over[k] += one(sq >= 65520.0);
        };
        for ch in body.chunks_exact(L) {
            for (k, &v) in ch.iter().enumerate() {
                second(k, v);
            }
        }
        for &v in rest {
            second(0, v);
        }
        for k in 0..L {
            m.m2 += s[0][k];
            m.m3 += s[1][k];
            m.m4 += s[2][k];
            m.sum_sq += s[3][k];
            m.square_overflow += over[k] as u64;
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
