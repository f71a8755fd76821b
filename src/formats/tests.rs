#![allow(clippy::unwrap_used)]

use super::*;

const ALL: [FpFormat; 3] = [E4M3, E5M2, E2M1];

/// `tests/fixtures/formats/elements.json`: what ml_dtypes 0.7.0 makes of every code and of
/// the inputs around every rounding midpoint (`scripts/fp_formats_fixtures.py`).
fn fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/formats/elements.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex_f32(s: &str) -> Vec<f32> {
    (0..s.len() / 8)
        .map(|i| f32::from_bits(u32::from_str_radix(&s[8 * i..8 * i + 8], 16).unwrap()))
        .collect()
}

fn hex_u8(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Same value, NaN equal to NaN (ml_dtypes' NaN codes decode to some NaN).
fn same(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn every_code_decodes_as_ml_dtypes_does() {
    let f = fixture();
    for fmt in ALL {
        let want = hex_f32(f["formats"][fmt.name]["decode"].as_str().unwrap());
        assert_eq!(want.len(), fmt.codes(), "{}", fmt.name);
        for (code, &w) in want.iter().enumerate() {
            let got = fmt.decode(code as u8);
            assert!(same(got, w), "{} code {code:#04x}: {got} vs {w}", fmt.name);
        }
    }
    let want = hex_f32(f["e8m0fnu"]["decode"].as_str().unwrap());
    for (code, &w) in want.iter().enumerate() {
        assert!(same(e8m0::decode(code as u8), w), "e8m0 code {code}");
    }
}

#[test]
fn every_code_round_trips() {
    for fmt in ALL {
        for code in 0..fmt.codes() {
            let code = code as u8;
            let v = fmt.decode(code);
            if v.is_nan() {
                assert!(
                    fmt.decode(fmt.encode(v)).is_nan(),
                    "{} {code:#04x}",
                    fmt.name
                );
                continue;
            }
            assert_eq!(fmt.encode(v), code, "{} {code:#04x} ({v})", fmt.name);
            if v.is_finite() {
                assert_eq!(fmt.encode_saturating(v), code, "{} {code:#04x}", fmt.name);
                // On the grid already: rounding keeps it, bit for bit (−0 too).
                assert_eq!(fmt.round(v).to_bits(), v.to_bits());
                assert_eq!(fmt.quantize(v).to_bits(), v.to_bits());
            }
        }
    }
    for code in 0..=254u8 {
        let v = e8m0::decode(code);
        let k = e8m0::floor_log2(v).unwrap();
        assert_eq!(e8m0::code_of_exp(k), code);
        assert_eq!(e8m0::ceil_log2(v), Some(k));
    }
}

#[test]
fn casts_around_every_midpoint_match_ml_dtypes() {
    let f = fixture();
    for fmt in ALL {
        let case = &f["formats"][fmt.name];
        let inputs = hex_f32(case["inputs"].as_str().unwrap());
        let cast = hex_u8(case["cast"].as_str().unwrap());
        let clamped = hex_u8(case["clamped"].as_str().unwrap());
        assert!(inputs.len() > 4 * (fmt.codes() / 2 - 2), "{}", fmt.name);
        assert_eq!((inputs.len(), inputs.len()), (cast.len(), clamped.len()));
        for ((&x, &c), &k) in inputs.iter().zip(&cast).zip(&clamped) {
            let got = fmt.encode(x);
            // A NaN code may differ in its payload: compare values then.
            assert!(
                got == c || same(fmt.decode(got), fmt.decode(c)),
                "{} cast {x:e} ({:#010x}): {got:#04x} vs ml_dtypes {c:#04x}",
                fmt.name,
                x.to_bits()
            );
            assert_eq!(
                fmt.encode_saturating(x),
                k,
                "{} clamped {x:e} ({:#010x})",
                fmt.name,
                x.to_bits()
            );
            // The value path agrees with the code path.
            assert_eq!(fmt.quantize(x).to_bits(), fmt.decode(k).to_bits());
        }
    }
}

#[test]
fn the_clamped_path_never_makes_nan_from_a_number() {
    for fmt in ALL {
        // Every f32 exponent, several mantissas, both signs, and the infinities.
        for e in 0..255u32 {
            for m in [0, 1, 0x40_0000, 0x7f_ffff, 0x12_3457] {
                for s in [0, 1u32 << 31] {
                    let x = f32::from_bits(s | e << 23 | m);
                    let q = fmt.quantize(x);
                    assert!(!q.is_nan() && q.abs() <= fmt.max(), "{} {x:e}", fmt.name);
                    assert!(!fmt.decode(fmt.encode_saturating(x)).is_nan());
                }
            }
        }
        assert_eq!(fmt.quantize(f32::INFINITY), fmt.max());
        assert_eq!(fmt.quantize(f32::NEG_INFINITY), -fmt.max());
        assert!(fmt.quantize(f32::NAN).is_nan());
    }
}

#[test]
fn maxima_thresholds_and_ties_are_the_formats() {
    assert_eq!((E4M3.max(), E5M2.max(), E2M1.max()), (448.0, 57344.0, 6.0));
    assert_eq!(E4M3.min_subnormal(), 2f32.powi(-9));
    assert_eq!(E5M2.min_subnormal(), 2f32.powi(-16));
    assert_eq!(E2M1.min_subnormal(), 0.5);
    // 464 is the tie between 448 (even mantissa) and the NaN slot: it stays 448.
    assert_eq!(E4M3.overflow_threshold(), 464f32.next_up());
    assert_eq!(E5M2.overflow_threshold(), 61440.0);
    assert_eq!(E2M1.overflow_threshold(), 7.0);
    assert!(E4M3.decode(E4M3.encode(464.0)) == 448.0);
    assert!(E4M3.decode(E4M3.encode(464f32.next_up())).is_nan());
    assert_eq!(E5M2.decode(E5M2.encode(61440.0)), f32::INFINITY);
    assert_eq!(E2M1.decode(E2M1.encode(100.0)), 6.0);
    // Ties to even: E2M1 0.25 → 0, 0.75 → 1, 1.25 → 1, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4.
    for (x, want) in [
        (0.25, 0.0),
        (0.75, 1.0),
        (1.25, 1.0),
        (1.75, 2.0),
        (2.5, 2.0),
        (3.5, 4.0),
        (5.0, 4.0),
    ] {
        assert_eq!(E2M1.quantize(x), want, "{x}");
        assert_eq!(E2M1.quantize(-x), -want, "{x}");
    }
    // E4M3 subnormal ties: 2^-10 (half the smallest) → 0, 3·2^-10 → 2^-8.
    assert_eq!(E4M3.quantize(2f32.powi(-10)), 0.0);
    assert_eq!(E4M3.quantize(3.0 * 2f32.powi(-10)), 2f32.powi(-8));
    assert!(E4M3.quantize(-1e-30).is_sign_negative());
    assert_eq!(e8m0::floor_log2(f32::from_bits(1)), Some(-149));
    assert_eq!(e8m0::ceil_log2(3.0), Some(2));
    assert_eq!(e8m0::floor_log2(0.0), None);
    assert_eq!(e8m0::code_of_exp(-200), 0);
    assert_eq!(e8m0::code_of_exp(200), 254);
}

/// Every f32 whose exponent is in the formats' range, one in 2^12 mantissas (with the
/// extremes), against rounding in f64 by the definition: the nearest grid value, ties to the
/// even mantissa.
#[test]
fn rounding_matches_the_definition_over_the_range() {
    for fmt in ALL {
        let grid: Vec<f64> = (0..fmt.codes() / 2)
            .map(|c| f64::from(fmt.decode(c as u8)))
            .filter(|v| v.is_finite())
            .collect();
        let lo = (127 + fmt.min_normal_exp() - fmt.man_bits as i32 - 2) as u32;
        let hi = (127 + (fmt.max().log2() as i32) + 1) as u32;
        for e in lo..=hi {
            for m in (0..1u32 << 23).step_by(1 << 12).chain([0x7f_ffff, 1]) {
                let x = f32::from_bits(e << 23 | m);
                let xd = f64::from(x);
                let at = grid.partition_point(|&g| g < xd);
                let want = if at == grid.len() {
                    f64::from(fmt.max())
                } else if at == 0 || grid[at] == xd {
                    grid[at]
                } else {
                    let (a, b) = (grid[at - 1], grid[at]);
                    let (da, db) = (xd - a, b - xd);
                    if da < db {
                        a
                    } else if db < da {
                        b
                    } else if fmt.encode(a as f32) % 2 == 0 {
                        a
                    } else {
                        b
                    }
                };
                assert_eq!(f64::from(fmt.quantize(x)), want, "{} {x:e}", fmt.name);
            }
        }
    }
}
