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

fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calibscope"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The drifting dump through every report format: held-out columns beside the in-sample ones,
/// the verdict, the warning, and the JSON keys of README "Held-out validation".
#[test]
fn reports_show_heldout_figures_and_the_verdict() {
    let drift = fixture("drift.npy");
    let drift = drift.to_str().unwrap();
    let (code, text, _) = run(&["report", drift, "--validate", "-q"]);
    assert_eq!(code, 0);
    assert!(text.contains("held-out h-o clip%"), "{text}");
    assert!(
        text.contains(
            "  convergence: growing: minmax calibrated on the first 8 of 16 batches loses 3.2 dB"
        ),
        "{text}"
    );
    assert!(
        text.contains("! calibration_unstable: minmax from the first 8 of 16 batches loses 3.2 dB"),
        "{text}"
    );
    assert!(text.contains("95% CI: percentile 99.9 |x| in ["), "{text}");
    let (_, md, _) = run(&["report", drift, "--validate", "-q", "--format", "markdown"]);
    assert!(
        md.contains("| held-out SQNR dB | held-out clipped % |"),
        "{md}"
    );
    assert!(
        md.contains("- convergence: **growing**: minmax calibrated"),
        "{md}"
    );
    let (_, csv, _) = run(&["report", drift, "--validate", "-q", "--format", "csv"]);
    let (_, plain_csv, _) = run(&["report", drift, "-q", "--format", "csv"]);
    assert_eq!(csv.lines().next(), plain_csv.lines().next());
    assert_eq!(csv.lines().filter(|l| l.contains(",heldout:")).count(), 7);
    assert!(csv.contains(",heldout:minmax,,symmetric,8,,,,,,"), "{csv}");
    let (_, json, _) = run(&["report", drift, "--validate", "-q", "--format", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["settings"]["validate"], true);
    assert_eq!(v["settings"]["folds"], 2);
    let l = &v["layers"][0];
    assert_eq!(l["recommended_by"], "heldout");
    assert_eq!(l["validation"]["recommended"], l["recommended"]);
    let keys = |o: &Value| -> Vec<String> { o.as_object().unwrap().keys().cloned().collect() };
    let mut k = keys(&l["validation"]);
    k.sort();
    assert_eq!(k, ["batches", "folds", "methods", "recommended", "rule"]);
    let m = &l["validation"]["methods"][0];
    let mut k = keys(m);
    k.sort();
    assert_eq!(k, ["heldout", "method", "ranges_by_fold"]);
    let mut k = keys(&m["heldout"]);
    k.sort();
    assert_eq!(k, ["clipped_fraction", "sqnr_db"]);
    assert_eq!(
        l["convergence"]["batch_counts"],
        serde_json::json!([1, 2, 4, 8, 16])
    );
    assert_eq!(l["convergence"]["verdict"], "growing");
    let mut k = keys(&l["convergence"]["methods"][4]);
    k.sort();
    assert_eq!(
        k,
        [
            "half_range_sqnr_loss_db",
            "interval_95",
            "method",
            "percentile",
            "ranges"
        ]
    );
    // Without --validate: both null, the in-sample rule.
    let (_, json, _) = run(&["report", drift, "-q", "--format", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let l = &v["layers"][0];
    assert!(l["validation"].is_null() && l["convergence"].is_null());
    assert_eq!(l["recommended_by"], "in_sample");
}

#[test]
fn folds_are_checked_before_any_file_is_read() {
    let (code, _, err) = run(&["report", "no-such-file.npy", "--validate", "--folds", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("1 folds is outside 2..=64"), "{err}");
    let drift = fixture("drift.npy");
    let drift = drift.to_str().unwrap();
    let (code, _, err) = run(&["compare", drift, drift, "--validate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--validate is an analysis option; compare does not use it"),
        "{err}"
    );
}
