//! The per-value kernels of the format rows, each compiled twice: portable, and for AVX2
//! from the very same code (`#[target_feature]` on a wrapper), so both give the same bits.
//! Value i of a call goes to lane i mod 8 of every sum; the lanes are added in lane order.

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
    mx: [f64; L],
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
            acc.max_abs_error = acc.max_abs_error.max(self.mx[k]);
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
            let x = f64::from(finite(v));
            self.rec[i % L] += x * x;
        }
    }

    /// Values that dequantize to 0.
    pub(super) fn zero(&mut self, xs: &[f32]) {
        for (i, &v) in xs.iter().enumerate() {
            let x = f64::from(finite(v));
            self.err[i % L] += x * x;
            self.mx[i % L] = self.mx[i % L].max(x.abs());
        }
    }

    /// One value into lane k: y (the scaled value), x̂ = quantize(y)·s, clips counted where
    /// the rounding lands past the max (the clamp changed the code).
    #[inline(always)]
    fn step(&mut self, k: usize, x: f32, y: f32, s: f32, fmt: &FpFormat, m: f32) {
        let r = fmt.round(y);
        self.below[k] += u64::from(r < -m);
        self.above[k] += u64::from(r > m);
        let q = if r > m {
            m
        } else if r < -m {
            -m
        } else {
            r
        };
        let xh = q * s;
        let e = f64::from(x) - f64::from(xh);
        self.err[k] += e * e;
        self.rec[k] += f64::from(xh) * f64::from(xh);
        self.mx[k] = if e.abs() > self.mx[k] {
            e.abs()
        } else {
            self.mx[k]
        };
    }
}

/// Every value on one grid: y = x·inv, x̂ = fp(clamp(y))·s (per tensor, per token, an MX
/// block with inv = 1/X, s = X).
pub(super) fn tensor(l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, inv: f32, s: f32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return tensor_avx2(cpu, l, xs, fmt, inv, s);
    }
    tensor_lanes(l, xs, fmt, inv, s)
}

#[cfg(target_arch = "x86_64")]
fn tensor_avx2(_: Avx2, l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, inv: f32, s: f32) {
    #[target_feature(enable = "avx2")]
    fn run(l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, inv: f32, s: f32) {
        tensor_lanes(l, xs, fmt, inv, s)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(l, xs, fmt, inv, s) }
}

#[inline(always)]
pub(super) fn tensor_lanes(l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, inv: f32, s: f32) {
    let m = fmt.max();
    let (eights, rest) = xs.as_chunks::<L>();
    for c in eights {
        for (k, &v) in c.iter().enumerate() {
            let x = finite(v);
            l.step(k, x, x * inv, s, fmt, m);
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        let x = finite(v);
        l.step(k, x, x * inv, s, fmt, m);
    }
}

/// Every value on one grid by division: y = x/d, x̂ = fp(clamp(y))·d (NVFP4, d = s_b·s_g).
pub(super) fn divided(l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, d: f32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = simd::avx2() {
        return divided_avx2(cpu, l, xs, fmt, d);
    }
    divided_lanes(l, xs, fmt, d)
}

#[cfg(target_arch = "x86_64")]
fn divided_avx2(_: Avx2, l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, d: f32) {
    #[target_feature(enable = "avx2")]
    fn run(l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, d: f32) {
        divided_lanes(l, xs, fmt, d)
    }
    // SAFETY: the token proves the CPU has AVX2.
    unsafe { run(l, xs, fmt, d) }
}

#[inline(always)]
pub(super) fn divided_lanes(l: &mut FpLanes, xs: &[f32], fmt: &FpFormat, d: f32) {
    let m = fmt.max();
    let (eights, rest) = xs.as_chunks::<L>();
    for c in eights {
        for (k, &v) in c.iter().enumerate() {
            let x = finite(v);
            l.step(k, x, x / d, d, fmt, m);
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        let x = finite(v);
        l.step(k, x, x / d, d, fmt, m);
    }
}

/// The largest finite |x| (0 if none), in 8 lanes so it vectorises.
#[inline(always)]
pub(super) fn absmax(xs: &[f32]) -> f32 {
    let mut m = [0.0f32; L];
    let (eights, rest) = xs.as_chunks::<L>();
    for c in eights {
        for k in 0..L {
            let a = finite(c[k]).abs();
            m[k] = if a > m[k] { a } else { m[k] };
        }
    }
    for &v in rest {
        let a = finite(v).abs();
        m[0] = if a > m[0] { a } else { m[0] };
    }
    m.iter().fold(0.0, |a, &b| if b > a { b } else { a })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::formats::{E2M1, E4M3, E5M2};

    /// The AVX2 builds against the portable ones, bit for bit, on values with NaN, ±Inf,
    /// zeros of both signs, subnormals and values far past every max.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_match_the_portable_lanes() {
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
            for fmt in [E4M3, E5M2, E2M1] {
                for (inv, s) in [(1.0, 1.0), (448.0 / 3.0, 3.0 / 448.0), (1e-3, 1e3)] {
                    let (mut a, mut b) = (FpLanes::default(), FpLanes::default());
                    tensor_avx2(cpu, &mut a, &v, &fmt, inv, s);
                    tensor_lanes(&mut b, &v, &fmt, inv, s);
                    assert_eq!(a, b, "len {len} {}", fmt.name);
                    let (mut a, mut b) = (FpLanes::default(), FpLanes::default());
                    divided_avx2(cpu, &mut a, &v, &fmt, s);
                    divided_lanes(&mut b, &v, &fmt, s);
                    assert_eq!(a, b, "len {len} {}", fmt.name);
                }
            }
        }
    }

    #[test]
    fn lanes_follow_the_definition_value_by_value() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let (inv, s) = E4M3.tensor_scales(3.0).unwrap();
        let mut l = FpLanes::default();
        tensor_lanes(&mut l, &v, &E4M3, inv, s);
        let mut acc = ErrorAccum::default();
        l.absorb(&mut acc);
        let want: f64 = v
            .iter()
            .map(|&x| (f64::from(x) - f64::from(E4M3.quantize(x * inv) * s)).powi(2))
            .sum();
        assert!(
            (acc.err_sq - want).abs() <= 1e-12 * want,
            "{} vs {want}",
            acc.err_sq
        );
        // |x| up to 6.66 with amax 3: the values past 3·464/448 clip.
        let clipped = v.iter().filter(|&&x| E4M3.cast_overflows(x * inv)).count() as u64;
        assert!(clipped > 0);
        assert_eq!(acc.below + acc.above, clipped);
        assert_eq!(absmax(&v), 18.0 * 0.37);
    }
}
