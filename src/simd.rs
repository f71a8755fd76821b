//! The one place that knows what the CPU can do: its features, detected once, as a token
//! ([`Avx2`]) that only the detection can make, and the unaligned loads and stores the AVX2
//! kernels need, made safe by taking arrays of exactly the register's size.
//!
//! A kernel is a `#[target_feature(enable = "avx2")]` fn (with `fma`, `f16c` where it uses
//! them) reached only through a safe fn of its module that takes an [`Avx2`]: the token is
//! the proof its one `unsafe` call rests on. Inside a kernel, calls to other such fns and the
//! intrinsics that touch no memory are safe; memory goes through the helpers here. Every
//! kernel has a portable twin with the same lane arithmetic, and a test comparing the two bit
//! for bit.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Proof that this CPU has AVX2, FMA and F16C (CPUs with AVX2 have the other two, but each is
/// checked: a virtual machine may hide one): the only way to get one is [`avx2`], and a kernel
/// needs one to be called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2 {
    _proof: (),
}

/// The AVX2 token if this CPU has the features it stands for; detected on the first call.
#[inline]
pub fn avx2() -> Option<Avx2> {
    static CPU: OnceLock<Option<Avx2>> = OnceLock::new();
    *CPU.get_or_init(detect)
}

fn detect() -> Option<Avx2> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        return Some(Avx2 { _proof: () });
    }
    None
}

/// Eight f32 (unaligned).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn load_f32x8(a: &[f32; 8]) -> __m256 {
    // SAFETY: `a` is 8 readable f32, all the load reads; it needs no alignment.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

/// Four f32 (unaligned; SSE, which every x86-64 CPU has).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn load_f32x4(a: &[f32; 4]) -> __m128 {
    // SAFETY: `a` is 4 readable f32, all the load reads; it needs no alignment.
    unsafe { _mm_loadu_ps(a.as_ptr()) }
}

/// Four f64 (unaligned).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn load_f64x4(a: &[f64; 4]) -> __m256d {
    // SAFETY: `a` is 4 readable f64, all the load reads; it needs no alignment.
    unsafe { _mm256_loadu_pd(a.as_ptr()) }
}

/// Eight f64 as two registers: elements 0–3 and 4–7.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn load_f64x8(a: &[f64; 8]) -> (__m256d, __m256d) {
    let p = a.as_ptr();
    // SAFETY: `a` is 8 readable f64: elements 0–3 and 4–7 are the two loads' 4 each; they
    // need no alignment.
    unsafe { (_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4))) }
}

/// Stores eight f32 (unaligned).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn store_f32x8(a: &mut [f32; 8], v: __m256) {
    // SAFETY: `a` is 8 writable f32, all the store writes; it needs no alignment.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
}

/// Stores four f32 (unaligned; SSE).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn store_f32x4(a: &mut [f32; 4], v: __m128) {
    // SAFETY: `a` is 4 writable f32, all the store writes; it needs no alignment.
    unsafe { _mm_storeu_ps(a.as_mut_ptr(), v) }
}

/// Stores four f64 (unaligned).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn store_f64x4(a: &mut [f64; 4], v: __m256d) {
    // SAFETY: `a` is 4 writable f64, all the store writes; it needs no alignment.
    unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) }
}

/// Stores two registers as eight f64: `lo` to elements 0–3, `hi` to 4–7.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn store_f64x8(a: &mut [f64; 8], lo: __m256d, hi: __m256d) {
    let p = a.as_mut_ptr();
    // SAFETY: `a` is 8 writable f64: elements 0–3 and 4–7 are the two stores' 4 each; they
    // need no alignment.
    unsafe {
        _mm256_storeu_pd(p, lo);
        _mm256_storeu_pd(p.add(4), hi);
    }
}

/// Stores the eight 32-bit lanes of an integer register.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn store_u32x8(a: &mut [u32; 8], v: __m256i) {
    // SAFETY: `a` is 32 writable bytes, all the store writes; it needs no alignment.
    unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) }
}

/// Stores the four 64-bit lanes of an integer register.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn store_u64x4(a: &mut [u64; 4], v: __m256i) {
    // SAFETY: `a` is 32 writable bytes, all the store writes; it needs no alignment.
    unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) }
}

/// Stores the four 32-bit lanes of an SSE integer register.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn store_u32x4(a: &mut [u32; 4], v: __m128i) {
    // SAFETY: `a` is 16 writable bytes, all the store writes; it needs no alignment.
    unsafe { _mm_storeu_si128(a.as_mut_ptr().cast(), v) }
}

/// Inputs that the kernels' tests run both paths on: lengths around every lane and block
/// width, and values of every kind a dump can hold.
#[cfg(test)]
pub(crate) mod testing {
    /// Lengths not multiples of 8 (and some that are), from empty to past a few blocks.
    pub const LENGTHS: [usize; 17] = [
        0, 1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 31, 33, 100, 1001, 4099,
    ];

    /// Values that are hard on a kernel: NaN, ±Inf, ±0, subnormals (and the smallest normal),
    /// f32::MAX and other large magnitudes, the float16 overflow boundary (65519 / 65520) and
    /// its underflow tie (2^-25), exact halves and integers.
    pub const SPECIAL: [f32; 24] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1e-40,
        -3e-39,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        3.0e38,
        -1e30,
        1e20,
        65504.0,
        65519.0,
        65520.0,
        -65520.0,
        2.980_232_2e-8,
        0.5,
        -2.5,
        127.0,
        255.97,
    ];

    /// `len` values: a smooth signal over many decades with [`SPECIAL`] values scattered in
    /// (which ones, and where, depends on `seed`), so every lane position meets them.
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if s.is_multiple_of(5) {
                    SPECIAL[(s >> 8) as usize % SPECIAL.len()]
                } else {
                    let t = (i as f32 * 0.6123).sin();
                    t * 10f32.powi((s >> 16) as i32 % 25 - 12)
                }
            })
            .collect()
    }

    /// f32 bit patterns of a slice, for comparisons where NaN must equal NaN.
    pub fn bits32(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// f64 bit patterns of a slice.
    pub fn bits64(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_std_and_is_stable() {
        #[cfg(target_arch = "x86_64")]
        let want = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        #[cfg(not(target_arch = "x86_64"))]
        let want = false;
        assert_eq!(avx2().is_some(), want);
        assert_eq!(avx2(), avx2());
    }

    /// Every load and store moves exactly its array, element i to lane i (checked against the
    /// lane order of `_mm*_set_*`, which lists lanes from the top).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn loads_and_stores_move_each_element_to_its_lane() {
        let Some(cpu) = avx2() else {
            // No AVX2 on this CPU: the 256-bit helpers cannot run.
            return;
        };
        round_trips(cpu);
    }

    #[cfg(target_arch = "x86_64")]
    fn round_trips(_: Avx2) {
        // SAFETY: the token proves the CPU has AVX (and more).
        unsafe { round_trips_avx() }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn round_trips_avx() {
        let f8 = [1.0f32, -2.0, 3.5, f32::NAN, -0.0, 1e-40, f32::INFINITY, 8.0];
        let v = load_f32x8(&f8);
        let mut o = [0.0f32; 8];
        store_f32x8(&mut o, v);
        assert_eq!(testing::bits32(&o), testing::bits32(&f8));
        let want = _mm256_set_ps(8.0, f32::INFINITY, 1e-40, -0.0, f32::NAN, 3.5, -2.0, 1.0);
        let mut w = [0.0f32; 8];
        store_f32x8(&mut w, want);
        assert_eq!(testing::bits32(&w), testing::bits32(&f8));

        let f4 = [1.0f32, -0.0, f32::NAN, 4.0];
        let mut o = [0.0f32; 4];
        store_f32x4(&mut o, load_f32x4(&f4));
        assert_eq!(testing::bits32(&o), testing::bits32(&f4));
        let mut w = [0.0f32; 4];
        store_f32x4(&mut w, _mm_set_ps(4.0, f32::NAN, -0.0, 1.0));
        assert_eq!(testing::bits32(&w), testing::bits32(&f4));

        let d8 = [1.0f64, -2.0, 3.0, f64::NAN, -0.0, 5e-324, 7.0, f64::MAX];
        let (lo, hi) = load_f64x8(&d8);
        let mut o = [0.0f64; 8];
        store_f64x8(&mut o, lo, hi);
        assert_eq!(testing::bits64(&o), testing::bits64(&d8));
        let mut w = [0.0f64; 4];
        store_f64x4(&mut w, _mm256_set_pd(f64::NAN, 3.0, -2.0, 1.0));
        assert_eq!(testing::bits64(&w), testing::bits64(&d8[..4]));
        let d4 = [f64::MIN_POSITIVE, -0.0, f64::INFINITY, 4.0];
        let mut o4 = [0.0f64; 4];
        store_f64x4(&mut o4, load_f64x4(&d4));
        assert_eq!(testing::bits64(&o4), testing::bits64(&d4));

        let mut u8s = [0u32; 8];
        store_u32x8(&mut u8s, _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, -1));
        assert_eq!(u8s, [u32::MAX, 1, 2, 3, 4, 5, 6, 7]);
        let mut u4 = [0u64; 4];
        store_u64x4(&mut u4, _mm256_set_epi64x(3, 2, 1, -1));
        assert_eq!(u4, [u64::MAX, 1, 2, 3]);
        let mut s4 = [0u32; 4];
        store_u32x4(&mut s4, _mm_set_epi32(3, 2, 1, -1));
        assert_eq!(s4, [u32::MAX, 1, 2, 3]);
    }
}
