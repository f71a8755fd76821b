//! float16 / bfloat16 cast audit: what `astype(float16)` / ml_dtypes `bfloat16` would do to the
//! values (IEEE round to nearest even, via the `half` crate).

use half::{bf16, f16};
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

    #[inline]
    fn round_trip(self, v: f32) -> f32 {
        match self {
            CastType::Float16 => f16::from_f32(v).to_f32(),
            CastType::Bfloat16 => bf16::from_f32(v).to_f32(),
        }
    }
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
    pub fn of_chunk(cast: CastType, values: &[f32], scratch: &mut Vec<f32>) -> CastAccum {
        scratch.clear();
        match cast {
            CastType::Float16 => {
                use half::slice::HalfFloatSliceExt;
                // The slice conversion uses F16C when the CPU has it.
                let mut halves = vec![f16::ZERO; values.len()];
                halves.convert_from_f32_slice(values);
                scratch.resize(values.len(), 0.0);
                halves.convert_to_f32_slice(scratch);
            }
            CastType::Bfloat16 => scratch.extend(values.iter().map(|&v| cast.round_trip(v))),
        }
        let tiny = cast.smallest_normal();
        let mut a = CastAccum::default();
        for (&x, &y) in values.iter().zip(scratch.iter()) {
            if !x.is_finite() {
                a.nan_inf_input += 1;
                continue;
            }
            if !y.is_finite() {
                a.overflow += 1;
                continue;
            }
            a.underflow += u64::from(x != 0.0 && y == 0.0);
            a.subnormal += u64::from(y != 0.0 && y.abs() < tiny);
            let (xd, yd) = (f64::from(x), f64::from(y));
            let e = (xd - yd).abs();
            a.n += 1;
            a.err_sq += e * e;
            a.sig_sq += xd * xd;
            a.max_abs_error = a.max_abs_error.max(e);
            if x != 0.0 {
                a.max_rel_error = a.max_rel_error.max(e / xd.abs());
            }
        }
        a
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

    fn audit(cast: CastType, v: &[f32]) -> CastAudit {
        CastAccum::of_chunk(cast, v, &mut Vec::new()).finish(cast)
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
    fn exact_values_give_infinite_sqnr() {
        let a = audit(CastType::Float16, &[1.0, -2.0, 0.5, f32::NAN]);
        assert_eq!(a.sqnr_db, f64::INFINITY);
        assert_eq!(a.nan_inf_input, 1);
    }
}
