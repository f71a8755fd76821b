//! Number formatting shared by the human-readable views.

/// Four significant digits, exponent form for very large or small magnitudes, `inf`/`nan` as
/// words. Keeps tables narrow and values comparable at a glance.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.3e}");
    }
    let digits = 3 - a.log10().floor() as i32;
    let s = format!("{v:.*}", digits.max(0) as usize);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A dB value with one decimal, `inf` when exact.
pub fn db(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        num(v)
    }
}

/// A share as a percentage with two decimals.
pub fn pct(share: f64) -> String {
    format!("{:.2}", 100.0 * share)
}

/// `[a, b, c]` shape as `a×b×c` (`scalar` for 0-d).
pub fn shape(s: &[usize]) -> String {
    if s.is_empty() {
        "scalar".into()
    } else {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_compactly() {
        assert_eq!(num(1.23456), "1.235");
        assert_eq!(num(-260.0), "-260");
        assert_eq!(num(0.034696), "0.0347");
        assert_eq!(num(1e-6), "1.000e-6");
        assert_eq!(num(123456.0), "1.235e5");
        assert_eq!(num(f64::INFINITY), "inf");
        assert_eq!(db(39.97), "40.0");
        assert_eq!(pct(0.0123), "1.23");
        assert_eq!(shape(&[8, 64, 8, 8]), "8×64×8×8");
        assert_eq!(shape(&[]), "scalar");
    }
}
