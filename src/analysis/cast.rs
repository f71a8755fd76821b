//! float16 / bfloat16 cast audit: what `astype(float16)` / ml_dtypes `bfloat16` would do to the
//! values (IEEE round to nearest even, via the `half` crate).

use half::f16;
use serde::Serialize;

/// The two casts we audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// Buffers reused across chunks by the cast audit.
#[derive(Debug, Default)]
pub struct CastScratch {
    halves: Vec<f16>,
    out: Vec<f32>,
}

/// f32 → bfloat16 → f32, round to nearest even, as `half::bf16::from_f32` does for non-NaN
/// values (NaN is never measured): integer ops only, so the loop vectorises.
#[inline]
pub fn bf16_round_trip(x: f32) -> f32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

/// Cast counts and error sums of one chunk; merged in chunk order.
#[derive(Clone, Debug, Default, PartialEq)]
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

impl CastAccum {
    /// Audits one chunk. `scratch` is reused between calls to avoid allocating per chunk.
    pub fn of_chunk(cast: CastType, values: &[f32], scratch: &mut CastScratch) -> CastAccum {
        let out = &mut scratch.out;
        out.clear();
        out.resize(values.len(), 0.0);
        match cast {
            CastType::Float16 => {
                use half::slice::HalfFloatSliceExt;
                // The slice conversions use F16C when the CPU has it.
                let halves = &mut scratch.halves;
                halves.clear();
                halves.resize(values.len(), f16::ZERO);
                halves.convert_from_f32_slice(values);
                halves.convert_to_f32_slice(out);
            }
            CastType::Bfloat16 => {
                for (y, &x) in out.iter_mut().zip(values) {
                    *y = bf16_round_trip(x);
                }
            }
        }
        let mut a = CastAccum::default();
        a.add_pairs(cast.smallest_normal(), values, out);
        a
    }

    fn add_pairs(&mut self, tiny: f32, xs: &[f32], ys: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.add_pairs_avx2(tiny, xs, ys) };
            return;
        }
        self.add_pairs_lanes(tiny, xs, ys);
    }

    /// The same code compiled for AVX2 (wider registers, same lane arithmetic: same result).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn add_pairs_avx2(&mut self, tiny: f32, xs: &[f32], ys: &[f32]) {
        self.add_pairs_lanes(tiny, xs, ys);
    }

    /// Branch-free accumulation over (input, cast) pairs, in lanes so it vectorises.
    #[inline(always)]
    fn add_pairs_lanes(&mut self, tiny: f32, xs: &[f32], ys: &[f32]) {
        const L: usize = 4;
        let mut c = [[0.0f64; L]; 5]; // nan_inf_input, overflow, underflow, subnormal, n
        let mut err = [0.0f64; L];
        let mut sig = [0.0f64; L];
        let mut mx = [0.0f64; L];
        let mut mr = [0.0f64; L];
        let one = |b: bool| if b { 1.0 } else { 0.0 };
        let mut step = |k: usize, x: f32, y: f32| {
            let fin_in = x.abs() < f32::INFINITY;
            let fin_out = y.abs() < f32::INFINITY;
            let valid = fin_in && fin_out;
            c[0][k] += one(!fin_in);
            c[1][k] += one(fin_in && !fin_out);
            c[2][k] += one(valid && x != 0.0 && y == 0.0);
            c[3][k] += one(valid && y != 0.0 && y.abs() < tiny);
            c[4][k] += one(valid);
            let (xd, yd) = if valid {
                (f64::from(x), f64::from(y))
            } else {
                (0.0, 0.0)
            };
            let e = (xd - yd).abs();
            err[k] += e * e;
            sig[k] += xd * xd;
            mx[k] = if e > mx[k] { e } else { mx[k] };
            let r = if xd != 0.0 { e / xd.abs() } else { 0.0 };
            mr[k] = if r > mr[k] { r } else { mr[k] };
        };
        let n = xs.len().min(ys.len());
        let (xs, ys) = (&xs[..n], &ys[..n]);
        let full = n / L * L;
        for (xc, yc) in xs[..full].chunks_exact(L).zip(ys[..full].chunks_exact(L)) {
            for k in 0..L {
                step(k, xc[k], yc[k]);
            }
        }
        for (&x, &y) in xs[full..].iter().zip(&ys[full..]) {
            step(0, x, y);
        }
        for k in 0..L {
            self.nan_inf_input += c[0][k] as u64;
            self.overflow += c[1][k] as u64;
            self.underflow += c[2][k] as u64;
            self.subnormal += c[3][k] as u64;
            self.n += c[4][k] as u64;
            self.err_sq += err[k];
            self.sig_sq += sig[k];
            self.max_abs_error = self.max_abs_error.max(mx[k]);
            self.max_rel_error = self.max_rel_error.max(mr[k]);
        }
    }

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
#[derive(Clone, Debug, PartialEq, Serialize)]
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
        CastAccum::of_chunk(cast, v, &mut CastScratch::default()).finish(cast)
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

    #[test]
    fn exact_values_give_infinite_sqnr() {
        let a = audit(CastType::Float16, &[1.0, -2.0, 0.5, f32::NAN]);
        assert_eq!(a.sqnr_db, f64::INFINITY);
        assert_eq!(a.nan_inf_input, 1);
    }
}
