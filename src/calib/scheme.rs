//! Integer quantization schemes: scale, zero point and quantize-dequantize
//! (definitions in the README's "Methods" section, after `calibration-reference.md`).

use serde::{Deserialize, Serialize};

/// How the real range maps onto integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Signed narrow range `[-(2^(b-1)-1), 2^(b-1)-1]`, zero point 0 (TensorRT, ORT int8).
    #[default]
    Symmetric,
    /// Unsigned `[0, 2^b-1]`, range widened to contain 0 (ORT uint8, PyTorch quint8).
    Affine,
}

/// Bit widths the integer grids support.
pub const MIN_BITS: u8 = 2;
pub const MAX_BITS: u8 = 16;

/// `bits` brought into [`MIN_BITS`]`..=`[`MAX_BITS`] (options are validated; this keeps the
/// arithmetic safe for any caller).
pub fn clamp_bits(bits: u8) -> u32 {
    u32::from(bits.clamp(MIN_BITS, MAX_BITS))
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Symmetric => "symmetric",
            Scheme::Affine => "affine",
        }
    }

    /// The largest integer of the grid: 2^(b−1) − 1 (symmetric, narrow) or 2^b − 1 (affine).
    pub fn qmax(self, bits: u8) -> i64 {
        let bits = clamp_bits(bits);
        match self {
            Scheme::Symmetric => (1i64 << (bits - 1)) - 1,
            Scheme::Affine => (1i64 << bits) - 1,
        }
    }
}

/// Rounds `t` half to even and clamps it to `[lo, hi]` (integers), as `clamp(rint(t), lo, hi)`
/// but without the libm call: t is first clamped one beyond the bounds, then rounded by adding
/// and subtracting 1.5·2^52 (exact for |t| < 2^51 in the default rounding mode).
#[inline(always)]
pub fn rint_clamped(t: f64, lo: f64, hi: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let t = if t < lo - 1.0 { lo - 1.0 } else { t };
    let t = if t > hi + 1.0 { hi + 1.0 } else { t };
    let r = (t + MAGIC) - MAGIC;
    let r = if r < lo { lo } else { r };
    if r > hi { hi } else { r }
}

/// Below this the range is treated as zero (a constant or all-zero tensor).
pub const ZERO_RANGE: f64 = 5.960_464_477_539_063e-8; // 2^-24

/// Quantization parameters for one range.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QParams {
    pub scale: f64,
    pub zero_point: i64,
    pub qmin: i64,
    pub qmax: i64,
    /// The range actually representable: `[(qmin - z)·s, (qmax - z)·s]`.
    pub lo: f64,
    pub hi: f64,
    /// True when the range was (near) zero and `scale` fell back to 1.
    pub degenerate: bool,
}

impl QParams {
    /// Parameters for the range `[lo, hi]` (for symmetric, `amax = max(|lo|, |hi|)`).
    pub fn new(scheme: Scheme, bits: u8, lo: f64, hi: f64) -> QParams {
        let qmax = scheme.qmax(bits);
        match scheme {
            Scheme::Symmetric => {
                let amax = lo.abs().max(hi.abs());
                // NaN ranges count as degenerate too.
                let degenerate = amax.is_nan() || amax < ZERO_RANGE;
                let scale = if degenerate { 1.0 } else { amax / qmax as f64 };
                QParams {
                    scale,
                    zero_point: 0,
                    qmin: -qmax,
                    qmax,
                    lo: -qmax as f64 * scale,
                    hi: qmax as f64 * scale,
                    degenerate,
                }
            }
            Scheme::Affine => {
                let lo0 = lo.min(0.0);
                let hi0 = hi.max(0.0);
                let degenerate = (hi0 - lo0).is_nan() || hi0 - lo0 < ZERO_RANGE;
                let scale = if degenerate {
                    1.0
                } else {
                    (hi0 - lo0) / qmax as f64
                };
                let zero_point = ((-lo0 / scale).round_ties_even() as i64).clamp(0, qmax);
                QParams {
                    scale,
                    zero_point,
                    qmin: 0,
                    qmax,
                    lo: -(zero_point as f64) * scale,
                    hi: (qmax - zero_point) as f64 * scale,
                    degenerate,
                }
            }
        }
    }

    /// `rint(x/s) + z` before the clamp to `[qmin, qmax]`.
    #[inline]
    pub fn quantize_unclamped(&self, x: f64) -> f64 {
        (x / self.scale).round_ties_even() + self.zero_point as f64
    }

    /// Quantize then dequantize one value: `(clamp(rint(x/s) + z, qmin, qmax) - z)·s`.
    #[inline]
    pub fn qdq(&self, x: f64) -> f64 {
        let z = self.zero_point as f64;
        rint_clamped(x / self.scale, self.qmin as f64 - z, self.qmax as f64 - z) * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rint_clamped_is_clamp_of_round_half_even() {
        let mut t = -300.0f64;
        while t < 300.0 {
            for v in [t, t + 0.5, -t - 0.5, t * 1e-9, t * 1e12] {
                let expected = v.round_ties_even().clamp(-127.0, 127.0);
                assert_eq!(rint_clamped(v, -127.0, 127.0), expected, "{v}");
            }
            t += 0.25;
        }
        assert_eq!(rint_clamped(f64::MAX, 0.0, 255.0), 255.0);
        assert_eq!(rint_clamped(f64::MIN, 0.0, 255.0), 0.0);
    }
}
