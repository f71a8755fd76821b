#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn format_lists_parse_in_table_order() {
    use FormatKind::*;
    assert_eq!(parse_formats("all"), Ok(FormatKind::ALL.to_vec()));
    assert_eq!(parse_formats(" none "), Ok(vec![]));
    assert_eq!(parse_formats("nvfp4, FP8_E4M3,"), Ok(vec![Fp8E4m3, Nvfp4]));
    assert_eq!(
        parse_formats("mxfp4,mxfp4").map_err(|e| e.to_string()),
        Err("format mxfp4 is listed twice".into())
    );
    assert_eq!(
        parse_formats("fp8").map_err(|e| e.to_string()),
        Err(
            "unknown format `fp8` (expected all, none or some of: fp8_e4m3, fp8_e5m2, mxfp8, mxfp4, nvfp4)"
                .into()
        )
    );
    let o = Options {
        formats: vec![Mxfp8, Mxfp8],
        ..Options::default()
    };
    assert_eq!(
        o.validate().map_err(|e| e.to_string()),
        Err("format mxfp8 is listed twice".into())
    );
}

/// A block whose max is 500·2^k: OCP's X = 2^(8 + k − 8) puts it at 500 > 448 (E4M3) and
/// 2^(6 + k) at 7.8 ≥ 7 (E2M1): clipped; RCEIL's X = 2^(k + 1) (500/448 → 2^1) and 2^(k + 7)
/// (500/6 = 83.3 → 2^7) keep it inside.
#[test]
fn mx_scale_rules_on_a_block_max_of_500_times_a_power_of_two() {
    for k in [-20, -3, 0, 5, 30] {
        let amax = 500.0 * crate::formats::pow2(k);
        assert_eq!(mx_scale_exp(amax, &E4M3, ScaleRule::Ocp), Some(k));
        assert_eq!(mx_scale_exp(amax, &E4M3, ScaleRule::Rceil), Some(k + 1));
        assert_eq!(mx_scale_exp(amax, &E2M1, ScaleRule::Ocp), Some(k + 6));
        assert_eq!(mx_scale_exp(amax, &E2M1, ScaleRule::Rceil), Some(k + 7));
        assert!(E4M3.cast_overflows(amax * crate::formats::pow2(-k)));
        assert!(!E4M3.cast_overflows(amax * crate::formats::pow2(-k - 1)));
        assert!(E2M1.cast_overflows(amax * crate::formats::pow2(-k - 6)));
        assert!(!E2M1.cast_overflows(amax * crate::formats::pow2(-k - 7)));
    }
    // An exact power of two over M: RCEIL takes it as is.
    assert_eq!(mx_scale_exp(448.0 * 4.0, &E4M3, ScaleRule::Rceil), Some(2));
    assert_eq!(mx_scale_exp(0.0, &E4M3, ScaleRule::Ocp), None);
    // Clamped to what E8M0 holds.
    assert_eq!(mx_scale_exp(1e-44, &E2M1, ScaleRule::Ocp), Some(-127));
    assert_eq!(mx_scale_exp(3e38, &E2M1, ScaleRule::Rceil), Some(126));
}

#[test]
fn unclamped_casts_count_what_would_be_nan_and_clips_are_the_same_values() {
    // amax 448: y = x. 464 is the tie that stays 448; 464.00003 and beyond become NaN.
    let v = [464.0, 464f32.next_up(), 500.0, -1000.0, 100.0];
    let (m, n) = tensor_row(&v, &E4M3, 448.0);
    assert_eq!(n, 3);
    assert_eq!((m.clipped_below, m.clipped_above), (0.2, 0.4));
    // E5M2 at amax max|x| holds them all; at 448 (y = 128·x) the two largest overflow to inf.
    let (m, n) = tensor_row(&v, &E5M2, 1000.0);
    assert_eq!((n, m.clipped()), (0, 0.0));
    let (m, n) = tensor_row(&v, &E5M2, 448.0);
    assert_eq!((n, m.clipped_below, m.clipped_above), (2, 0.2, 0.2));
    let (m, n) = tensor_row(&v, &E5M2, 2000.0);
    assert_eq!((n, m.clipped()), (0, 0.0));
    // amax 0: exact, never an infinite scale.
    let (m, n) = tensor_row(&[0.0; 9], &E4M3, 0.0);
    assert_eq!((n, m.mse, m.cosine), (0, 0.0, 1.0));
}

#[test]
fn labels_and_csv_names() {
    let m = tensor_row(&[1.0], &E4M3, 1.0).0;
    let row = |granularity, method, percentile, scale_rule| FormatResult {
        format: FormatKind::Fp8E4m3,
        granularity,
        block_size: None,
        method,
        percentile,
        scale_rule,
        amax: None,
        metrics: m,
        unclamped_nonfinite: None,
    };
    let p = row(
        FormatGranularity::Tensor,
        Some("percentile".to_string()),
        Some(99.9),
        None,
    );
    assert_eq!(p.label(), "fp8_e4m3 percentile 99.9");
    assert_eq!(p.csv_method(), "format:fp8_e4m3:percentile 99.9");
    let t = row(FormatGranularity::Token, None, None, None);
    assert_eq!(t.csv_method(), "format:fp8_e4m3:token");
    let mut b = row(FormatGranularity::Block, None, None, Some(ScaleRule::Rceil));
    b.format = FormatKind::Mxfp4;
    assert_eq!(b.label(), "mxfp4 rceil");
    b.format = FormatKind::Nvfp4;
    b.scale_rule = None;
    assert_eq!(b.csv_method(), "format:nvfp4");
}
