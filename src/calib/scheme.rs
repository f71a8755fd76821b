//! Integer quantization schemes: scale, zero point and quantize-dequantize
//! (definitions in the README's "Methods" section, after `calibration-reference.md`).

use serde::Serialize;

/// How the real range maps onto integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Signed narrow range `[-(2^(b-1)-1), 2^(b-1)-1]`, zero point 0 (TensorRT, ORT int8).
    #[default]
    Symmetric,
    /// Unsigned `[0, 2^b-1]`, range widened to contain 0 (ORT uint8, PyTorch quint8).
    Affine,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Symmetric => "symmetric",
            Scheme::Affine => "affine",
        }
    }
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
        let bits = u32::from(bits.clamp(2, 16));
        match scheme {
            Scheme::Symmetric => {
                let qmax = (1i64 << (bits - 1)) - 1;
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
                let qmax = (1i64 << bits) - 1;
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
        let q = self
            .quantize_unclamped(x)
            .clamp(self.qmin as f64, self.qmax as f64);
        (q - self.zero_point as f64) * self.scale
    }
}
