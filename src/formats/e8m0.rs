//! E8M0 (`ml_dtypes.float8_e8m0fnu`): the MX formats' shared block scale, a bare power of two
//! 2^(code − 127) for codes 0..=254 (no sign, no zero), 255 being NaN.

use super::pow2;

/// The NaN code.
pub const NAN: u8 = 0xff;
/// The bias: code c stands for 2^(c − 127).
pub const BIAS: i32 = 127;
/// The exponents a code can hold.
pub const MIN_EXP: i32 = -127;
pub const MAX_EXP: i32 = 127;

/// The value of a code.
pub fn decode(code: u8) -> f32 {
    if code == NAN {
        f32::NAN
    } else {
        pow2(i32::from(code) - BIAS)
    }
}

/// The code of 2^k, with k clamped to what E8M0 holds ([`MIN_EXP`]..=[`MAX_EXP`]).
pub fn code_of_exp(k: i32) -> u8 {
    (k.clamp(MIN_EXP, MAX_EXP) + BIAS) as u8
}

/// ⌊log2 x⌋ of a finite x > 0, exactly (subnormals included); `None` otherwise.
pub fn floor_log2(x: f32) -> Option<i32> {
    if !(x > 0.0 && x.is_finite()) {
        return None;
    }
    let bits = x.to_bits();
    let e = (bits >> 23) as i32;
    Some(if e == 0 {
        // Subnormal: 2^-149 times the mantissa's integer.
        -149 + (31 - (bits & 0x7f_ffff).leading_zeros() as i32)
    } else {
        e - 127
    })
}

/// ⌈log2 x⌉ of a finite x > 0, exactly; `None` otherwise.
pub fn ceil_log2(x: f32) -> Option<i32> {
    let f = floor_log2(x)?;
    Some(if pow2(f) == x { f } else { f + 1 })
}
