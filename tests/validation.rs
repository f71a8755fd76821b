//! Held-out validation and convergence against numpy (`tests/fixtures/validation/`, rebuilt by
//! `scripts/validation_reference.py` from trimmed copies of the shared reference dumps):
//! symmetric int8, K = 2, batch i → fold i mod 2.
//!
//! Tolerances: min-max and the moving average have the references' ranges exactly, so their
//! held-out SQNR agrees to 1e-9 dB and their clipped fraction exactly. Percentiles are read
//! off the upper edge of a 65536-bin |x| histogram (README "Methods"): each range lies at most
//! one fine bin above numpy's order statistic, and its held-out SQNR within 0.02 dB.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use calibscope::analysis::validation::{HeldOutMethod, Verdict};
use calibscope::analysis::{LayerAnalysis, Options, Progress, analyze_layer};
use calibscope::source::{LayerSpec, Location};
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/validation")
        .join(name)
}

fn analyse(name: &str) -> LayerAnalysis {
    let spec = LayerSpec {
        name: name.into(),
        parts: vec![Location::Npy(fixture(&format!("{name}.npy")))],
    };
    let opts = Options {
        validate: true,
        keep_profiles: false,
        ..Options::default()
    };
    let l = analyze_layer(&spec, &opts, &Progress::default());
    assert!(l.error.is_none(), "{:?}", l.error);
    l
}

/// A float32 value written as a double (serde_json's parser may be one ulp off in f64, never
/// by enough to move the nearest f32).
fn f32_num(v: &Value) -> f64 {
    f64::from(num(v) as f32)
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        v => v.as_f64().unwrap(),
    }
}

#[test]
fn heldout_and_convergence_match_numpy() {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let cases = expected.as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (name, want) in cases {
        let l = analyse(name);
        let absmax = l.stats.as_ref().unwrap().absmax;
        let bin = absmax / 65536.0;
        let v = l.validation.as_ref().unwrap();
        assert_eq!(v.folds, 2);
        assert_eq!(v.batches as u64, want["batches"].as_u64().unwrap());
        let mut seen = 0;
        for (label, w) in want["heldout"].as_object().unwrap() {
            let h: &HeldOutMethod = v.methods.iter().find(|m| m.label() == *label).unwrap();
            let exact = !label.starts_with("percentile");
            let what = format!("{name} {label}");
            for (r, wr) in h
                .ranges_by_fold
                .iter()
                .zip(w["ranges_by_fold"].as_array().unwrap())
            {
                let a = f32_num(&wr[1]);
                if exact {
                    assert_eq!(r[1], a, "{what}");
                } else {
                    assert!(
                        r[1] >= a && r[1] <= a + bin * (1.0 + 1e-9),
                        "{what}: {} vs {a}",
                        r[1]
                    );
                }
                assert_eq!(r[0], -r[1], "{what}");
            }
            let (got, exp) = (h.heldout.sqnr_db, num(&w["sqnr_db"]));
            let tol = if exact { 1e-9 } else { 0.02 };
            assert!((got - exp).abs() <= tol, "{what}: {got} vs {exp}");
            let (gc, ec) = (h.heldout.clipped_fraction, num(&w["clipped_fraction"]));
            if exact {
                assert_eq!(gc, ec, "{what}");
            } else {
                // A range a bin wider clips no more than numpy's, and at most the few values
                // in that bin fewer.
                assert!(gc <= ec && ec - gc < 1e-3, "{what}: {gc} vs {ec}");
            }
            seen += 1;
        }
        assert_eq!(seen, 5);
        let c = l.convergence.as_ref().unwrap();
        let counts: Vec<usize> = want["batch_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(c.batch_counts, counts, "{name}");
        for (label, w) in want["convergence"].as_object().unwrap() {
            let m = c.methods.iter().find(|m| m.label() == *label).unwrap();
            let what = format!("{name} {label} convergence");
            for (r, wa) in m.ranges.iter().zip(w["amax"].as_array().unwrap()) {
                let a = f32_num(wa);
                if label == "minmax" {
                    assert_eq!(r[1], a, "{what}");
                } else {
                    assert!(
                        r[1] >= a && r[1] <= a + bin * (1.0 + 1e-9),
                        "{what}: {} vs {a}",
                        r[1]
                    );
                }
            }
            if label == "minmax" {
                let (got, exp) = (m.half_range_sqnr_loss_db, num(&w["loss"]));
                assert!((got - exp).abs() < 1e-9, "{what}: {got} vs {exp}");
            }
        }
        // The drifting dump's min-max from its first 8 batches loses 3.2 dB on all 16.
        if name == "drift" {
            let m = c.methods.iter().find(|m| m.label() == "minmax").unwrap();
            assert!(m.half_range_sqnr_loss_db > 3.0);
        }
        if c.verdict == Verdict::Growing {
            let rec = l.recommended.as_deref().unwrap();
            assert!(c.detail.starts_with(rec), "{}", c.detail);
        }
    }
}
