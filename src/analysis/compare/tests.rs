//! The accumulators on hand-made values: bins, the percentile against an exact sort, the
//! multi-index, the display re-binning, the order-dependent fields.
#![allow(clippy::unwrap_used)]

use super::accum::{self, ERROR_BINS, Hists, Sums, VALUE_BINS};
use super::model::{Comparison, Pair, PairMetrics};
use super::options::{CompareOptions, FailOn};
use crate::analysis::compare::CompareWarningKind;

/// A deterministic stream of uniform numbers in [0, 1) (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run(r: &[f32], t: &[f32]) -> (Sums, Hists) {
    let mut h = Hists::default();
    let s = accum::chunk(0, r, t, (1e-5, 1e-3), true, &mut h);
    (s, h)
}

/// The definitions one position at a time: what the blocked kernel must reproduce.
fn oracle(first: usize, r: &[f32], t: &[f32], atol: f64, rtol: f64) -> Sums {
    let mut s = Sums::default();
    for (i, (&a, &b)) in r.iter().zip(t).enumerate() {
        if a.is_finite() && b.is_finite() {
            let (rd, td) = (f64::from(a), f64::from(b));
            let e = td - rd;
            s.count += 1;
            s.rr += rd * rd;
            s.tt += td * td;
            s.rt += rd * td;
            s.ee += e * e;
            s.abs_e += e.abs();
            if e.abs() > s.max_abs {
                s.max_abs = e.abs();
                s.worst = Some(first + i);
            }
            if a != 0.0 {
                s.max_rel = s.max_rel.max(e.abs() / rd.abs());
            }
            s.allclose += u64::from(e.abs() > atol + rtol * rd.abs());
            s.zero_e += u64::from(e == 0.0);
        } else if a.is_nan() != b.is_nan() {
            s.nan_mismatch += 1;
        } else if !a.is_nan() && a != b {
            s.inf_mismatch += 1;
        }
    }
    s
}

#[test]
fn the_blocked_kernel_matches_the_definitions() {
    let mut rng = Rng(21);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
    for (n, first) in [(1usize, 0usize), (255, 7), (256, 0), (257, 1000), (5000, 3)] {
        let mut r: Vec<f32> = (0..n).map(|_| (rng.next() * 6.0 - 3.0) as f32).collect();
        let mut t: Vec<f32> = r
            .iter()
            .map(|&x| x + (rng.next() as f32 - 0.5) * 0.1)
            .collect();
        for v in r.iter_mut().chain(t.iter_mut()) {
            if rng.next() < 0.03 {
                *v = specials[(rng.next() * 5.0) as usize];
            }
        }
        // Equal errors: the worst is the first of them.
        if n > 10 {
            r[3] = 1.0;
            t[3] = 9.0;
            r[9] = -2.0;
            t[9] = 6.0;
        }
        let mut h = Hists::default();
        let got = accum::chunk(first, &r, &t, (1e-5, 1e-3), false, &mut h);
        let want = oracle(first, &r, &t, 1e-5, 1e-3);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1e-300);
        assert_eq!(
            (
                got.count,
                got.allclose,
                got.zero_e,
                got.nan_mismatch,
                got.inf_mismatch
            ),
            (
                want.count,
                want.allclose,
                want.zero_e,
                want.nan_mismatch,
                want.inf_mismatch
            ),
            "n {n}"
        );
        assert_eq!(
            (got.max_abs, got.worst),
            (want.max_abs, want.worst),
            "n {n}"
        );
        assert_eq!(got.max_rel, want.max_rel);
        for (a, b) in [
            (got.rr, want.rr),
            (got.tt, want.tt),
            (got.rt, want.rt),
            (got.ee, want.ee),
            (got.abs_e, want.abs_e),
        ] {
            assert!(close(a, b), "n {n}: {a} vs {b}");
        }
        assert_eq!(h.e.iter().sum::<u64>(), want.count);
        // Display histograms off: r and t are not counted.
        assert_eq!(h.r.iter().sum::<u64>(), 0);
    }
}

#[test]
fn log_bins_are_in_value_order_and_contain_their_values() {
    for bins in [VALUE_BINS, ERROR_BINS] {
        let vals = [
            -3.4e38f32, -1e5, -1.0, -1e-3, -1e-40, -0.0, 0.0, 1e-40, 1e-3, 0.999, 1.0, 2.5, 3.4e38,
        ];
        let idx: Vec<usize> = vals.iter().map(|&v| bins.index(v)).collect();
        assert!(idx.windows(2).all(|w| w[0] <= w[1]), "{idx:?}");
        for &v in &vals {
            let (lo, hi) = bins.bounds(bins.index(v));
            let v = f64::from(v);
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
        }
        assert!(idx.iter().all(|&i| i < bins.count()));
        // Beyond the f32 range (an error of two huge values) lands in the end bins.
        assert_eq!(bins.index(f32::INFINITY), bins.index(f32::MAX));
        assert_eq!(bins.index(f32::NEG_INFINITY), bins.index(f32::MIN));
    }
    // 2^-7 relative width for the error bins.
    let (lo, hi) = ERROR_BINS.bounds(ERROR_BINS.index(1.0));
    assert_eq!((lo, hi), (1.0, 1.0 + 1.0 / 128.0));
}

/// The nearest-rank percentile by sorting, the definition the histogram approximates.
fn exact_p99(abs: &mut [f64]) -> f64 {
    abs.sort_by(f64::total_cmp);
    let k = (99 * abs.len()).div_ceil(100);
    abs[k - 1]
}

#[test]
fn p99_is_within_half_a_percent_of_the_exact_nearest_rank() {
    let mut rng = Rng(7);
    for (n, decades) in [
        (1, 1.0),
        (7, 3.0),
        (99, 2.0),
        (100, 2.0),
        (101, 5.0),
        (12_345, 8.0),
    ] {
        let r: Vec<f32> = (0..n).map(|_| (rng.next() * 4.0 - 2.0) as f32).collect();
        // Errors log-uniform over `decades` decades, random sign.
        let t: Vec<f32> = r
            .iter()
            .map(|&x| {
                let mag = 10f64.powf(-6.0 + decades * rng.next());
                let sign = if rng.next() < 0.5 { -1.0 } else { 1.0 };
                (f64::from(x) + sign * mag) as f32
            })
            .collect();
        let mut abs: Vec<f64> = r
            .iter()
            .zip(&t)
            .map(|(&a, &b)| (f64::from(b) - f64::from(a)).abs())
            .collect();
        let (s, h) = run(&r, &t);
        let want = exact_p99(&mut abs);
        let got = accum::p99_abs(&h.e, &s);
        assert!(
            (got - want).abs() <= 0.004 * want,
            "n={n}: p99 {got} vs exact {want}"
        );
        assert!(got <= s.max_abs);
    }
}

#[test]
fn p99_of_mostly_equal_values_is_exactly_zero() {
    let r = vec![1.0f32; 1000];
    let mut t = r.clone();
    for v in t.iter_mut().take(10) {
        *v = 2.0;
    }
    let (s, h) = run(&r, &t);
    // 990 zeros: rank 990 is a zero; one more error makes rank 990 an error of 1.
    assert_eq!(accum::p99_abs(&h.e, &s), 0.0);
    t[10] = 2.0;
    let (s, h) = run(&r, &t);
    let p = accum::p99_abs(&h.e, &s);
    assert!((p - 1.0).abs() <= 0.004, "{p}");
}

#[test]
fn unravel_follows_the_memory_order() {
    // Flat 17 of (2, 3, 4): C order 17 = 1·12 + 1·4 + 1; Fortran 17 = 1 + 2·2 + 2·6.
    assert_eq!(accum::unravel(17, &[2, 3, 4], false), [1, 1, 1]);
    assert_eq!(accum::unravel(17, &[2, 3, 4], true), [1, 2, 2]);
    assert_eq!(accum::unravel(0, &[], false), Vec::<usize>::new());
    assert_eq!(accum::unravel(5, &[6], true), [5]);
}

#[test]
fn worst_and_ties_keep_the_first_position_across_chunks() {
    let r = [0.0f32; 8];
    let t = [0.0f32, 3.0, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0];
    let mut h = Hists::default();
    let mut s = accum::chunk(0, &r[..4], &t[..4], (0.0, 0.0), true, &mut h);
    s.merge(&accum::chunk(4, &r[4..], &t[4..], (0.0, 0.0), true, &mut h));
    assert_eq!((s.max_abs, s.worst), (3.0, Some(1)));
    // Within a chunk too: equal (zero) errors put the worst at the first position.
    let (s0, _) = run(&[0.0; 3], &[0.0; 3]);
    assert_eq!(s0.worst, Some(0));
}

#[test]
fn display_histograms_keep_every_finite_value() {
    let mut rng = Rng(3);
    let r: Vec<f32> = (0..5000)
        .map(|_| (rng.next() * 10.0 - 3.0) as f32)
        .collect();
    let mut t: Vec<f32> = r.iter().map(|&x| x * 1.01 + 0.001).collect();
    t[17] = f32::NAN;
    let (s, h) = run(&r, &t);
    let hs = accum::histograms(&h, &s);
    let total = |p: &crate::histogram::PackedHistogram| p.nonzero().map(|(_, c)| c).sum::<u64>();
    assert_eq!(total(&hs.reference), 5000);
    assert_eq!(total(&hs.test), 4999);
    assert_eq!(total(&hs.error), 4999);
    assert_eq!(hs.reference.bins(), accum::DISPLAY_BINS);
    assert_eq!(f64::from(s.r_range.0), hs.reference.lo);
    // Values in [-3, 7): the first tenth of the display bins holds about a tenth of them.
    let first: u64 = hs
        .reference
        .nonzero()
        .take_while(|&(b, _)| b < 205)
        .map(|(_, c)| c)
        .sum();
    assert!((400..600).contains(&first), "{first}");
}

fn pair(name: &str, sqnr: f64, nan: u64) -> Pair {
    let mut p = Pair::new(name, String::new(), String::new());
    p.metrics = Some(PairMetrics {
        count: 1,
        sqnr_db: sqnr,
        cosine: 1.0,
        mse: 0.0,
        max_abs_error: 0.0,
        max_rel_error: 0.0,
        mean_abs_error: 0.0,
        p99_abs_error: 0.0,
        allclose_failures: 0,
        nan_mismatch: nan,
        inf_mismatch: 0,
        worst: None,
    });
    p
}

#[test]
fn drops_and_first_degraded_follow_the_order() {
    let mut c = Comparison::new(&CompareOptions::default());
    let mut failed = Pair::new("x", String::new(), String::new());
    failed.error = Some("bad".into());
    c.pairs = vec![
        pair("a", f64::INFINITY, 0),
        pair("b", f64::INFINITY, 0),
        pair("c", 40.0, 0),
        failed,
        pair("d", 12.0, 0),
        pair("e", f64::NAN, 3),
        pair("f", 11.0, 0),
    ];
    c.derive();
    let drops: Vec<Option<f64>> = c.pairs.iter().map(|p| p.sqnr_drop_db).collect();
    assert_eq!(
        drops,
        [
            None,
            Some(0.0),
            Some(f64::INFINITY),
            None,
            Some(28.0),
            None,
            Some(1.0)
        ]
    );
    assert_eq!(c.first_degraded.as_deref(), Some("d"));
    // A NaN mismatch degrades a pair whatever its SQNR.
    c.pairs[4] = pair("d", 50.0, 0);
    c.pairs[2] = pair("c", 45.0, 1);
    c.derive();
    assert_eq!(c.first_degraded.as_deref(), Some("c"));
}

#[test]
fn options_reject_bad_values_with_one_line() {
    assert_eq!(CompareOptions::default().validate(), Ok(()));
    let bad = |f: &dyn Fn(&mut CompareOptions)| {
        let mut o = CompareOptions::default();
        f(&mut o);
        o.validate().unwrap_err().to_string()
    };
    assert_eq!(
        bad(&|o| o.atol = -1.0),
        "--atol -1 is not a finite number ≥ 0"
    );
    assert_eq!(
        bad(&|o| o.rtol = f64::NAN),
        "--rtol NaN is not a finite number ≥ 0"
    );
    assert_eq!(
        bad(&|o| o.sqnr_floor_db = f64::INFINITY),
        "SQNR floor inf is not a finite number of dB"
    );
}

#[test]
fn fail_on_names_parse_and_unknown_ones_list_the_choices() {
    assert_eq!(
        FailOn::parse_list("degraded, nan_mismatch,allclose").unwrap(),
        [
            FailOn::Warning(CompareWarningKind::Degraded),
            FailOn::Warning(CompareWarningKind::NanMismatch),
            FailOn::Allclose
        ]
    );
    assert_eq!(
        FailOn::parse_list("warnings").unwrap(),
        [FailOn::AnyWarning]
    );
    let e = FailOn::parse_list("degraded,bogus")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("unknown kind `bogus` for --fail-on"), "{e}");
    assert!(e.contains("inf_mismatch") && e.contains("allclose"), "{e}");
}
