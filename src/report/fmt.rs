//! Number formatting shared by the human-readable views: the text and Markdown reports use the
//! plain forms, the terminal UI the `_short` ones (narrow table cells, one-glyph symbols).

/// Four significant digits, exponent form for very large or small magnitudes, `inf`/`nan` as
/// words. Keeps tables narrow and values comparable at a glance.
pub fn num(v: f64) -> String {
    significant(v, 3)
}

/// [`num`] with three significant digits in exponent form, so `-1.23e-5` fits 8 columns.
pub fn num_short(v: f64) -> String {
    significant(v, 2)
}

/// Four significant digits in fixed form (trailing zeros dropped) within [1e-3, 1e5), else
/// exponent form with `exp_decimals` decimals.
fn significant(v: f64, exp_decimals: usize) -> String {
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
        return format!("{v:.exp_decimals$e}");
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

/// [`db`] with `—` for NaN and `∞` for an exact match (one glyph in a narrow cell).
pub fn db_short(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞".into() } else { "-∞".into() }
    } else {
        db(v)
    }
}

/// A share as a percentage with two decimals.
pub fn pct(share: f64) -> String {
    format!("{:.2}", 100.0 * share)
}

/// [`pct`] that tells nothing (`0`) from too little to show (`<.01`); `—` for NaN.
pub fn pct_short(share: f64) -> String {
    if share.is_nan() {
        "—".into()
    } else if share == 0.0 {
        "0".into()
    } else if share < 0.0001 {
        "<.01".into()
    } else {
        pct(share)
    }
}

/// A count with one decimal of k, M or G from 10 000 on: `9999`, `12.3k`, `9999.9k`, `12.3M`.
pub fn count_short(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        10_000_000..10_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
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

    #[test]
    fn short_forms_for_narrow_cells() {
        // Fixed form: the same four significant digits as `num`.
        assert_eq!(num_short(1.23456), "1.235");
        assert_eq!(num_short(-260.0), "-260");
        assert_eq!(num_short(0.034696), "0.0347");
        // Exponent form: three significant digits.
        assert_eq!(num_short(123456.0), "1.23e5");
        assert_eq!(num_short(-1.23456e-5), "-1.23e-5");
        assert_eq!(num_short(9.6875e-4), "9.69e-4");
        assert_eq!(num_short(f64::NEG_INFINITY), "-inf");
        assert_eq!(num_short(f64::NAN), "nan");
        assert_eq!(db_short(39.97), "40.0");
        assert_eq!(db_short(f64::INFINITY), "∞");
        assert_eq!(db_short(f64::NEG_INFINITY), "-∞");
        assert_eq!(db_short(f64::NAN), "—");
        assert_eq!(db(f64::NAN), "nan");
        assert_eq!(pct_short(0.0), "0");
        assert_eq!(pct_short(0.00005), "<.01");
        assert_eq!(pct_short(0.0001), "0.01");
        assert_eq!(pct_short(0.0123), "1.23");
        assert_eq!(pct_short(f64::NAN), "—");
        assert_eq!(count_short(0), "0");
        assert_eq!(count_short(9_999), "9999");
        assert_eq!(count_short(10_000), "10.0k");
        assert_eq!(count_short(12_345_678), "12.3M");
        assert_eq!(count_short(9_999_949), "9999.9k");
        assert_eq!(count_short(4_500_000_000), "4500.0M");
        assert_eq!(count_short(12_300_000_000), "12.3G");
        assert_eq!(count_short(u64::MAX), "18446744073.7G");
    }
}
