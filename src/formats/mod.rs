//! Number formats as grids: the small floating-point element formats of FP8 (E4M3fn, E5M2) and
//! FP4 (E2M1fn) and the power-of-two E8M0 scales of the MX formats, as exact bit operations on
//! float32 (README "Formats"). Each conversion rounds to nearest, ties to even, with the
//! format's subnormals, as `ml_dtypes` does (`tests/fixtures/formats/`, made by
//! `scripts/fp_formats_fixtures.py`, holds what ml_dtypes makes of every code and of the inputs
//! at and around every rounding midpoint).
//!
//! Two paths, with the overflow behaviour explicit:
//! - [`FpFormat::quantize`]: the clamped path (`fp(clamp(y, −max, max))`), which never turns a
//!   number (finite or infinite) into NaN;
//! - [`FpFormat::encode`]: the plain cast, whose overflow is the format's ([`Overflow`]): NaN
//!   for E4M3fn (it has no infinity), ±inf for E5M2, saturation for E2M1fn.

pub mod e8m0;
#[cfg(test)]
mod tests;

/// What a plain cast does with a value that rounds past the largest finite one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// NaN (E4M3fn: no infinity; the all-ones code is NaN).
    Nan,
    /// ±inf (E5M2, IEEE-like).
    Inf,
    /// ±max (E2M1fn: every code is finite).
    Saturate,
}

/// A small floating-point element format: sign, `exp_bits` exponent bits with bias `bias`,
/// `man_bits` mantissa bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpFormat {
    pub name: &'static str,
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    pub overflow: Overflow,
}

/// FP8 E4M3 in its `fn` variant (OCP, `ml_dtypes.float8_e4m3fn`): max 448, no infinity.
pub const E4M3: FpFormat = FpFormat {
    name: "e4m3fn",
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    overflow: Overflow::Nan,
};

/// FP8 E5M2 (`ml_dtypes.float8_e5m2`): max 57344, ±inf and NaNs as IEEE.
pub const E5M2: FpFormat = FpFormat {
    name: "e5m2",
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    overflow: Overflow::Inf,
};

/// FP4 E2M1 (`ml_dtypes.float4_e2m1fn`): 0, 0.5, 1, 1.5, 2, 3, 4, 6, no infinity or NaN.
pub const E2M1: FpFormat = FpFormat {
    name: "e2m1fn",
    exp_bits: 2,
    man_bits: 1,
    bias: 1,
    overflow: Overflow::Saturate,
};

/// The f32 exponent field is clamped to this before building the rounding constant, so the
/// constant stays finite (see [`FpFormat::round`]).
const TOP_EXP_FIELD: i32 = 150;

impl FpFormat {
    /// Number of codes (2^(1 + exp_bits + man_bits)).
    pub const fn codes(&self) -> usize {
        1 << (1 + self.exp_bits + self.man_bits)
    }

    fn sign_bit(&self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    /// The largest finite exponent field: all ones for the `fn` formats (whose all-ones
    /// exponent holds numbers), one less for the IEEE-like ones.
    fn max_exp_field(&self) -> i32 {
        let ones = (1 << self.exp_bits) - 1;
        match self.overflow {
            Overflow::Inf => ones - 1,
            Overflow::Nan | Overflow::Saturate => ones,
        }
    }

    /// The largest finite value: 448 (E4M3fn), 57344 (E5M2), 6 (E2M1fn).
    pub fn max(&self) -> f32 {
        let m = (1u32 << self.man_bits) - 1;
        // E4M3fn gives its all-ones mantissa to NaN.
        let top_man = if self.overflow == Overflow::Nan {
            m - 1
        } else {
            m
        };
        let frac = 1.0 + top_man as f32 / (1u32 << self.man_bits) as f32;
        frac * pow2(self.max_exp_field() - self.bias)
    }

    /// The exponent of the smallest normal value (1 − bias).
    pub fn min_normal_exp(&self) -> i32 {
        1 - self.bias
    }

    /// The spacing of the subnormals, 2^(1 − bias − man_bits): the smallest positive value.
    pub fn min_subnormal(&self) -> f32 {
        pow2(self.min_normal_exp() - self.man_bits as i32)
    }

    /// `y` rounded to nearest (ties to even) onto this format's grid extended without bound
    /// above the largest exponent: exact while |y| < 2^40, and above that some value ≥ 2^40
    /// (beyond every format's max), so `|round(y)| > max` tells exactly whether a cast
    /// overflows. The sign of `y` is kept (−0 for small negatives, as ml_dtypes); ±inf and
    /// NaN pass through.
    ///
    /// Adding and subtracting c = 1.5·2^(q+23), q the exponent of y's quantum, rounds |y| to a
    /// multiple of 2^q, ties to even, in the default rounding mode: no branches, so it
    /// vectorises.
    #[inline(always)]
    pub fn round(&self, y: f32) -> f32 {
        let a = y.abs();
        let e = (a.to_bits() >> 23) as i32;
        let emin = 127 + self.min_normal_exp();
        let e = if e < emin { emin } else { e };
        let e = if e > TOP_EXP_FIELD { TOP_EXP_FIELD } else { e };
        let q = e - self.man_bits as i32;
        let c = f32::from_bits((((q + 23) as u32) << 23) | (1 << 22));
        ((a + c) - c).copysign(y)
    }

    /// The clamped path, `fp(clamp(y, −max, max))` as a value: never NaN for a number (±inf
    /// give ±max); NaN stays NaN. Rounding is monotone, so clamping after it is the same.
    #[inline(always)]
    pub fn quantize(&self, y: f32) -> f32 {
        let m = self.max();
        let r = self.round(y);
        if r > m {
            m
        } else if r < -m {
            -m
        } else {
            r
        }
    }

    /// Whether a plain cast of `y` overflows: |y| rounds past the largest finite value.
    #[inline(always)]
    pub fn cast_overflows(&self, y: f32) -> bool {
        self.round(y).abs() > self.max()
    }

    /// The smallest |y| (an f32) whose cast overflows: 464.00003 for E4M3fn (464 itself is a
    /// tie that rounds to even, 448), 61440 for E5M2, 7 for E2M1fn (which then saturates).
    pub fn overflow_threshold(&self) -> f32 {
        // The midpoint between max and the next step up on the unbounded grid.
        let m = self.max();
        let step = pow2((m.to_bits() >> 23) as i32 - 127 - self.man_bits as i32);
        let mid = m + step / 2.0;
        if self.cast_overflows(mid) {
            mid
        } else {
            mid.next_up()
        }
    }

    /// The per-tensor scales of a calibrated amax `a` in float32: (M/a, a/M), M = [`Self::max`],
    /// so that y = x·(M/a) is quantized and x̂ = q·(a/M). `None` for a ≤ 0 or NaN (the caller
    /// treats the layer as exact: never an infinite scale). For a so small that M/a overflows
    /// float32 (a < 2^-118 or so), M/a is taken as the largest float32.
    pub fn tensor_scales(&self, amax: f32) -> Option<(f32, f32)> {
        if amax.is_nan() || amax <= 0.0 {
            return None;
        }
        let m = self.max();
        let inv = m / amax;
        let inv = if inv.is_finite() { inv } else { f32::MAX };
        Some((inv, amax / m))
    }

    /// One value of the per-tensor (or per-token) path: x̂ = quantize(x·inv)·s in float32.
    #[inline(always)]
    pub fn qdq(&self, x: f32, inv: f32, s: f32) -> f32 {
        self.quantize(x * inv) * s
    }

    /// The code of a value already on the grid (|r| ≤ max), with the sign of `r`.
    fn code_of(&self, r: f32) -> u8 {
        let sign = if r.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        let a = r.abs();
        let mag = if a < pow2(self.min_normal_exp()) {
            (a / self.min_subnormal()) as u8
        } else {
            let bits = a.to_bits();
            let e = (bits >> 23) as i32 - 127 + self.bias;
            let m = (bits >> (23 - self.man_bits)) & ((1 << self.man_bits) - 1);
            ((e as u32) << self.man_bits | m) as u8
        };
        sign | mag
    }

    /// The NaN code (the all-ones magnitude for E4M3fn, exponent all ones and the top
    /// mantissa bit for E5M2, as ml_dtypes writes them); `None` for a format without NaN.
    pub fn nan_code(&self) -> Option<u8> {
        match self.overflow {
            Overflow::Nan => Some(self.sign_bit() - 1),
            Overflow::Inf => Some(((1u8 << self.exp_bits) - 1) << self.man_bits | 0b10),
            Overflow::Saturate => None,
        }
    }

    /// The plain cast of `x` (ml_dtypes `astype`): round to nearest even; a value that
    /// rounds past the max becomes the format's overflow ([`Overflow`]); NaN becomes NaN
    /// (E2M1fn has none: its +0, with the sign of `x`).
    pub fn encode(&self, x: f32) -> u8 {
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        if x.is_nan() {
            return self.nan_code().map_or(sign, |c| c | sign);
        }
        let r = self.round(x);
        if r.abs() > self.max() {
            return match self.overflow {
                Overflow::Nan => (self.sign_bit() - 1) | sign,
                Overflow::Inf => ((1u8 << self.exp_bits) - 1) << self.man_bits | sign,
                Overflow::Saturate => self.code_of(self.max()) | sign,
            };
        }
        self.code_of(r)
    }

    /// The clamped cast: `encode(clamp(x, −max, max))`; never the NaN code for a number.
    pub fn encode_saturating(&self, x: f32) -> u8 {
        if x.is_nan() {
            return self.encode(x);
        }
        self.code_of(self.quantize(x))
    }

    /// The value of a code (the bits above the format's width are ignored).
    pub fn decode(&self, code: u8) -> f32 {
        let code = code & (self.codes() - 1) as u8;
        let neg = code & self.sign_bit() != 0;
        let e = i32::from(code >> self.man_bits) & ((1 << self.exp_bits) - 1);
        let m = u32::from(code) & ((1 << self.man_bits) - 1);
        let ones_e = (1 << self.exp_bits) - 1;
        let ones_m = (1 << self.man_bits) - 1;
        let v = match self.overflow {
            Overflow::Nan if e == ones_e && m == ones_m => f32::NAN,
            Overflow::Inf if e == ones_e && m == 0 => f32::INFINITY,
            Overflow::Inf if e == ones_e => f32::NAN,
            _ if e == 0 => m as f32 * self.min_subnormal(),
            _ => (1.0 + m as f32 / (1u32 << self.man_bits) as f32) * pow2(e - self.bias),
        };
        if neg { -v } else { v }
    }
}

/// 2^k as an f32, exact for k in −149..=127 (subnormals included); 0 below, inf above.
pub fn pow2(k: i32) -> f32 {
    if k > 127 {
        f32::INFINITY
    } else if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else if k >= -149 {
        f32::from_bits(1 << (k + 149))
    } else {
        0.0
    }
}
