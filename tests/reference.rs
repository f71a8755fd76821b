//! calibscope against the numbers ONNX Runtime 1.32, PyTorch 2.15, Model Optimizer 0.47, numpy
//! 2.4 and ml_dtypes 0.6 computed on the same dumps (`tests/fixtures/reference/`, trimmed from
//! the shared reference set by `scripts/trim_reference.py`; its README lists the fields).
//!
//! Tolerances (issue #3): min-max exact; EMA 1e-6 relative to torch; entropy, MSE and percentile
//! within two bins of Model Optimizer's histogram (its bins grow from the first batch's range,
//! ours are fixed), or, where the ranges differ by more, an SQNR no worse than the reference's;
//! error metrics within 1e-4 relative of numpy on the same range; the affine entropy (issue #19)
//! is ONNX Runtime's own calibrator (`ort_entropy.json`). Run with `--nocapture` to see the
//! agreement tables.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use calibscope::analysis::metrics::Metrics;
use calibscope::analysis::{LayerAnalysis, Options, Progress, analyze_layer, measure};
use calibscope::calib::{Chosen, MethodKind, QParams, Scheme, Search};
use calibscope::source::{LayerSpec, Location};
use serde_json::Value;

const CASES: &[&str] = &[
    "gaussian",
    "laplace",
    "relu_nchw",
    "gelu",
    "silu",
    "softmax_attention",
    "layernorm_outliers",
    "spike",
    "drift",
    "fp16_overflow",
    "fp16_underflow_tiny",
    "float16",
    "float64",
    "int8",
    "bigendian_f4",
    "fortran_order",
    "vector_1d",
    "constant",
    "zeros",
    "nan_inf",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn spec(name: &str) -> LayerSpec {
    LayerSpec {
        name: name.into(),
        parts: vec![Location::Npy(dir().join(format!("{name}.npy")))],
    }
}

fn analyze(name: &str, scheme: Scheme) -> LayerAnalysis {
    let opts = Options {
        scheme,
        ..Options::default()
    };
    let l = analyze_layer(&spec(name), &opts, &Progress::default());
    assert!(l.error.is_none(), "{name}: {:?}", l.error);
    l
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn method(
    l: &LayerAnalysis,
    kind: MethodKind,
    p: Option<f64>,
) -> &calibscope::analysis::MethodResult {
    l.methods
        .iter()
        .find(|m| m.method == kind && m.percentile == p)
        .unwrap()
}

/// Our exact metrics of an arbitrary range on a reference dump.
fn metrics_of(name: &str, scheme: Scheme, lo: f64, hi: f64) -> Metrics {
    let q = QParams::new(scheme, 8, lo, hi);
    let chosen = [Chosen {
        method: MethodKind::Minmax,
        percentile: None,
        search: Search {
            lo,
            hi,
            candidates: 1,
        },
        q,
    }];
    let acc = measure(
        &spec(name),
        &chosen,
        &Options::default(),
        &Progress::default(),
    )
    .unwrap();
    acc[0].finish()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn input_statistics_match_numpy() {
    for name in CASES {
        let e = expected(name);
        let inp = &e["input"];
        let l = analyze(name, Scheme::Symmetric);
        let s = l.stats.as_ref().unwrap();
        assert_eq!(s.count, inp["size"].as_u64().unwrap(), "{name} count");
        assert_eq!(s.finite, inp["n_finite"].as_u64().unwrap(), "{name} finite");
        assert_eq!(s.nan, inp["n_nan"].as_u64().unwrap(), "{name} nan");
        assert_eq!(s.pos_inf, inp["n_posinf"].as_u64().unwrap(), "{name} +inf");
        assert_eq!(s.neg_inf, inp["n_neginf"].as_u64().unwrap(), "{name} -inf");
        let zeros = (s.zero_fraction * s.finite as f64).round() as u64;
        assert_eq!(zeros, inp["n_zero"].as_u64().unwrap(), "{name} zeros");
        // The fixture holds float32 values as shortest reprs: compare as float32.
        assert_eq!(s.min as f32, f(&inp["min"]) as f32, "{name} min");
        assert_eq!(s.max as f32, f(&inp["max"]) as f32, "{name} max");
        let std = f(&inp["std"]);
        assert!(
            (s.mean - f(&inp["mean"])).abs() <= 1e-9 * std.max(1e-30) + 1e-12,
            "{name} mean {} vs {}",
            s.mean,
            f(&inp["mean"])
        );
        assert!(close(s.std, std, 1e-9), "{name} std {} vs {std}", s.std);
        let shape: Vec<usize> = inp["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(l.shape, shape, "{name} shape");
    }
}

#[test]
fn casts_match_numpy_and_ml_dtypes() {
    for name in CASES {
        let e = expected(name);
        let l = analyze(name, Scheme::Symmetric);
        for c in &l.casts {
            let r = &e["casts"][c.dtype.name()];
            let ctx = format!("{name} {}", c.dtype.name());
            assert_eq!(
                c.overflow,
                r["n_overflow_to_inf"].as_u64().unwrap(),
                "{ctx} overflow"
            );
            assert_eq!(
                c.underflow,
                r["n_underflow_to_zero"].as_u64().unwrap(),
                "{ctx} underflow"
            );
            assert_eq!(
                c.subnormal,
                r["n_became_subnormal"].as_u64().unwrap(),
                "{ctx} subnormal"
            );
            let nan_inf = r["n_input_nan"].as_u64().unwrap() + r["n_input_inf"].as_u64().unwrap();
            assert_eq!(c.nan_inf_input, nan_inf, "{ctx} nan/inf input");
            assert!(
                close(c.mse, f(&r["mse"]), 1e-9),
                "{ctx} mse {} vs {}",
                c.mse,
                r["mse"]
            );
            assert!(
                close(c.max_abs_error, f(&r["max_abs_err"]), 1e-12),
                "{ctx} max abs"
            );
            // null: no nonzero input (all zeros); we report 0 there.
            let rel = r["max_rel_err_nonzero"].as_f64().unwrap_or(0.0);
            assert!(close(c.max_rel_error, rel, 1e-9), "{ctx} max rel");
            match r["sqnr_db"].as_f64() {
                Some(db) => assert!(
                    (c.sqnr_db - db).abs() < 1e-9,
                    "{ctx} sqnr {} vs {db}",
                    c.sqnr_db
                ),
                // null: inf (exact cast) or undefined (all zeros: 0/0).
                None => assert!(!c.sqnr_db.is_finite(), "{ctx} sqnr should be non-finite"),
            }
        }
    }
}

#[test]
fn minmax_is_exact() {
    for name in CASES {
        let e = expected(name);
        let sym = analyze(name, Scheme::Symmetric);
        let m = method(&sym, MethodKind::Minmax, None);
        // modelopt asserts on NaN/Inf (its result is an error there); we skip them.
        if let Some(amax) = e["minmax"]["modelopt.max"]["amax"].as_f64() {
            assert_eq!(m.range, [-amax, amax], "{name} symmetric minmax");
        }
        let aff = analyze(name, Scheme::Affine);
        let m = method(&aff, MethodKind::Minmax, None);
        let t = &e["minmax"]["torch.minmax.quint8_affine"];
        if let (Some(lo), Some(hi)) = (t["lo"].as_f64(), t["hi"].as_f64()) {
            // torch stores float32; the fixture holds its shortest repr.
            assert_eq!(
                m.range.map(|v| v as f32),
                [lo as f32, hi as f32],
                "{name} affine minmax vs torch"
            );
            // torch computes its qparams in float32: agree to float32 precision.
            // Deliberate difference: for a zero range torch floors the scale at float32 eps,
            // we use 1 (calibration-reference.md, "Schemes") and warn.
            if hi - lo >= 2f64.powi(-24) {
                assert!(
                    close(m.scale, f(&t["scale"]), 1e-6),
                    "{name} scale {} vs {}",
                    m.scale,
                    t["scale"]
                );
            }
            assert_eq!(
                m.zero_point,
                t["zero_point"].as_i64().unwrap(),
                "{name} zero point"
            );
        }
    }
}

#[test]
fn ema_matches_torch_moving_average_observer() {
    for name in CASES {
        let e = expected(name);
        let t = &e["ema"]["torch.ma_minmax.qint8_sym"];
        let (Some(lo), Some(hi)) = (t["lo"].as_f64(), t["hi"].as_f64()) else {
            continue; // torch propagates NaN/Inf; we skip non-finite values (nan_inf.finite_only)
        };
        let aff = analyze(name, Scheme::Affine);
        let m = method(&aff, MethodKind::Ema, None);
        assert!(
            close(m.range[0], lo, 1e-6) && close(m.range[1], hi, 1e-6),
            "{name}: {:?} vs [{lo}, {hi}]",
            m.range
        );
        let sym = analyze(name, Scheme::Symmetric);
        let m = method(&sym, MethodKind::Ema, None);
        let a = lo.abs().max(hi.abs());
        assert!(close(m.range[1], a, 1e-6), "{name} symmetric EMA");
    }
}

#[test]
fn ema_on_nan_inf_matches_the_finite_only_reference() {
    let e = expected("nan_inf.finite_only");
    let t = &e["ema"]["torch.ma_minmax.qint8_sym"];
    let aff = analyze("nan_inf", Scheme::Affine);
    let m = method(&aff, MethodKind::Ema, None);
    assert!(
        close(m.range[0], f(&t["lo"]), 1e-6) && close(m.range[1], f(&t["hi"]), 1e-6),
        "{:?} vs {t}",
        m.range
    );
}

/// numpy's qdq metrics on the reference ranges: our metrics pass on the same range must agree.
#[test]
fn metrics_match_numpy_on_the_same_ranges() {
    let mut checked = 0;
    for name in CASES {
        let e = expected(name);
        for group in ["minmax", "ema", "entropy", "mse", "percentile"] {
            let Some(results) = e[group].as_object() else {
                continue;
            };
            for (rname, r) in results {
                let sym = &r["qdq"]["int8_sym"];
                if sym["mse"].is_f64() && r["amax"].is_f64() && f(&r["amax"]) > 0.0 {
                    let a = f(&r["amax"]);
                    compare(
                        name,
                        rname,
                        &metrics_of(name, Scheme::Symmetric, -a, a),
                        sym,
                    );
                    checked += 1;
                }
                let aff = &r["qdq"]["uint8_affine_zero_included"];
                if aff["mse"].is_f64() && r["lo"].is_f64() && r["hi"].is_f64() {
                    let (lo, hi) = (f(&r["lo"]), f(&r["hi"]));
                    compare(name, rname, &metrics_of(name, Scheme::Affine, lo, hi), aff);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} reference metrics compared");
    eprintln!("compared {checked} reference metric sets");
}

fn compare(name: &str, rname: &str, m: &Metrics, r: &Value) {
    let ctx = format!("{name} {rname}");
    assert!(
        close(m.mse, f(&r["mse"]), 1e-4),
        "{ctx} mse {} vs {}",
        m.mse,
        r["mse"]
    );
    assert!(
        close(m.max_abs_error, f(&r["max_abs_err"]), 1e-4),
        "{ctx} max abs {} vs {}",
        m.max_abs_error,
        r["max_abs_err"]
    );
    if let Some(db) = r["sqnr_db"].as_f64() {
        assert!(
            close(m.sqnr_db, db, 1e-4),
            "{ctx} sqnr {} vs {db}",
            m.sqnr_db
        );
    }
    let frac = m.clipped_below + m.clipped_above;
    assert!(
        (frac - f(&r["frac_clipped"])).abs() < 1e-12,
        "{ctx} clipped {frac} vs {}",
        r["frac_clipped"]
    );
}

struct Row {
    case: &'static str,
    method: String,
    ours: f64,
    theirs: f64,
    bins: f64,
    sqnr_ours: f64,
    sqnr_theirs: f64,
}

/// Entropy, MSE (the argument-fixed call) and percentile against Model Optimizer.
#[test]
fn histogram_searches_agree_with_model_optimizer() {
    let mut rows = Vec::new();
    for &name in CASES {
        let e = expected(name);
        let l = analyze(name, Scheme::Symmetric);
        let absmax = l.stats.as_ref().unwrap().absmax;
        let ours_width = absmax / 2048.0;
        let mut check = |label: String, kind, p, r: &Value| {
            let Some(theirs) = r["amax"].as_f64() else {
                return;
            };
            let m = method(&l, kind, p);
            let their_width = f(&r["hist_hi_edge"]) / f(&r["hist_bins"]);
            let width = ours_width.max(their_width);
            let bins = if width > 0.0 {
                (m.range[1] - theirs).abs() / width
            } else {
                0.0
            };
            let sqnr_theirs = r["qdq"]["int8_sym"]["sqnr_db"].as_f64().unwrap_or(f64::NAN);
            rows.push(Row {
                case: name,
                method: label,
                ours: m.range[1],
                theirs,
                bins,
                sqnr_ours: m.metrics.sqnr_db,
                sqnr_theirs,
            });
        };
        check(
            "entropy".into(),
            MethodKind::Entropy,
            None,
            &e["entropy"]["modelopt.hist.entropy"],
        );
        check(
            "mse".into(),
            MethodKind::Mse,
            None,
            &e["mse"]["modelopt.hist.mse_argfix"],
        );
        for p in [99.9, 99.99, 99.999] {
            check(
                format!("percentile {p}"),
                MethodKind::Percentile,
                Some(p),
                &e["percentile"][format!("modelopt.hist.percentile.p{p}")],
            );
        }
    }
    eprintln!(
        "{:<20} {:<18} {:>12} {:>12} {:>7} {:>9} {:>9}",
        "case", "method", "ours", "modelopt", "bins", "SQNR us", "SQNR ref"
    );
    let mut worst: Vec<(String, f64)> = Vec::new();
    for r in &rows {
        eprintln!(
            "{:<20} {:<18} {:>12.6} {:>12.6} {:>7.2} {:>9.3} {:>9.3}",
            r.case, r.method, r.ours, r.theirs, r.bins, r.sqnr_ours, r.sqnr_theirs
        );
        let method = r.method.split(' ').next().unwrap_or("").to_string();
        match worst.iter_mut().find(|(m, _)| *m == method) {
            Some((_, w)) => *w = w.max(r.bins),
            None => worst.push((method, r.bins)),
        }
    }
    eprintln!("max deviation in bins: {worst:?}");
    // Beyond two bins with a worse SQNR is allowed only for entropy where the same search on our
    // histogram (entropy_on_fixed_bins.json, checked exactly below) gives our value: then the
    // difference is Model Optimizer's grown histogram, not the algorithm.
    let port = expected("entropy_on_fixed_bins");
    let failures: Vec<&Row> = rows
        .iter()
        .filter(|r| r.bins > 2.0 && (r.sqnr_ours < r.sqnr_theirs - 0.05 || r.sqnr_ours.is_nan()))
        .filter(|r| {
            let binning = r.method == "entropy"
                && port[r.case]["amax"]
                    .as_f64()
                    .is_some_and(|a| close(a, r.ours, 1e-6));
            if binning {
                eprintln!(
                    "binning difference (same search on our bins agrees): {} {}",
                    r.case, r.method
                );
            }
            !binning
        })
        .collect();
    for r in &failures {
        eprintln!(
            "DISAGREES: {} {}: ours {} vs {} ({:.1} bins, SQNR {:.3} vs {:.3})",
            r.case, r.method, r.ours, r.theirs, r.bins, r.sqnr_ours, r.sqnr_theirs
        );
    }
    assert!(rows.len() >= 90, "only {} comparisons", rows.len());
    assert!(
        failures.is_empty(),
        "{} comparisons outside two bins with a worse SQNR",
        failures.len()
    );
}

/// Model Optimizer's `_compute_amax_entropy`, ported to numpy (`scripts/entropy_port.py`) and
/// run on our fixed 2048-bin histogram: the search itself must agree exactly.
#[test]
fn entropy_search_matches_modelopt_on_the_same_histogram() {
    let port = expected("entropy_on_fixed_bins");
    let mut n = 0;
    for (name, r) in port.as_object().unwrap() {
        let case = CASES.iter().find(|c| *c == name).unwrap();
        let l = analyze(case, Scheme::Symmetric);
        let m = method(&l, MethodKind::Entropy, None);
        let amax = f(&r["amax"]);
        if *case == "constant" {
            // Deliberate difference: with all mass in the top bin the KL ties and the
            // last-argmin rule picks edges[2047], clipping every value (0.74963 for a constant
            // 0.75). We keep the whole range, so a constant tensor quantizes exactly.
            assert_eq!(
                m.range[1],
                l.stats.as_ref().unwrap().absmax,
                "constant keeps its value"
            );
            assert!(amax < m.range[1]);
            continue;
        }
        assert!(
            close(m.range[1], amax, 1e-6),
            "{name}: ours {} vs port {amax}",
            m.range[1]
        );
        assert_eq!(
            m.candidates as u64,
            r["candidates"].as_u64().unwrap(),
            "{name} candidates"
        );
        n += 1;
    }
    assert!(n >= 18, "only {n} cases");
}

/// ONNX Runtime's own entropy calibrator (`HistogramCollector`, method "entropy", 2048 bins,
/// 64 and 128 quantized bins) on every dump (`ort_entropy.json`, from
/// `scripts/ort_entropy_fixtures.py`): `--scheme affine` at 7 and 8 bits counts ORT's histogram
/// bin for bin and lands within one ORT bin width (2·max|x|/2048) of its range; run with
/// `--nocapture` for the table. No dump is an exception. The ranges are in fact ORT's own
/// float32 values: the search reproduces ORT's float32 arithmetic but for numpy's float32 log,
/// whose last-ulp differences move no choice here (a near-tie they did move would show as a
/// whole bin).
#[test]
fn affine_entropy_matches_onnx_runtime() {
    let ort = expected("ort_entropy");
    let cases = ort["cases"].as_object().unwrap();
    assert_eq!(cases.len(), CASES.len());
    eprintln!(
        "{:<20} {:>4} {:>13} {:>13} {:>13} {:>13} {:>6} {:>6}",
        "case", "bits", "lo", "ORT lo", "hi", "ORT hi", "Δlo", "Δhi"
    );
    let (mut exact, mut worst) = (0, 0.0f64);
    for (name, c) in cases {
        let case = CASES.iter().find(|k| *k == name).unwrap();
        let width = (f(&c["hist_hi_edge"]) - f(&c["hist_lo_edge"])) / 2048.0;
        for bits in [7u8, 8] {
            let opts = Options {
                scheme: Scheme::Affine,
                bits,
                ..Options::default()
            };
            let l = analyze_layer(&spec(case), &opts, &Progress::default());
            assert!(l.error.is_none(), "{name}: {:?}", l.error);
            if bits == 8 {
                let h = l.profile.as_ref().unwrap().entropy_hist.as_ref().unwrap();
                let h = h.unpack();
                assert_eq!(h.lo, f(&c["hist_lo_edge"]), "{name} histogram range");
                assert_eq!(h.hi, f(&c["hist_hi_edge"]), "{name} histogram range");
                let sums = &c["hist"];
                let sum = |w: &dyn Fn(u128, u128) -> u128| -> u128 {
                    h.counts
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| w(i as u128, u128::from(n)))
                        .sum()
                };
                let want = |k: &str| u128::from(sums[k].as_u64().unwrap());
                assert_eq!(h.bins() as u128, want("bins"), "{name}");
                assert_eq!(sum(&|_, n| n), want("total"), "{name} total");
                assert_eq!(sum(&|_, n| u128::from(n > 0)), want("nonzero"), "{name}");
                assert_eq!(sum(&|i, n| i * n), want("sum_i"), "{name} Σ i·c");
                assert_eq!(sum(&|i, n| i * i * n), want("sum_i2"), "{name} Σ i²·c");
                assert_eq!(sum(&|_, n| n * n), want("sum_c2"), "{name} Σ c²");
            }
            let r = &c[format!("q{}", 1u32 << (bits - 1))];
            let m = method(&l, MethodKind::Entropy, None);
            let (lo, hi) = (f(&r["lo"]), f(&r["hi"]));
            let (dlo, dhi) = (
                (m.range[0] - lo).abs() / width,
                (m.range[1] - hi).abs() / width,
            );
            // Both are float32 values; serde_json may read the fixture's repr 1 f64 ulp off.
            let same = m.range.map(|v| v as f32) == [lo as f32, hi as f32];
            eprintln!(
                "{name:<20} {bits:>4} {:>13.6} {lo:>13.6} {:>13.6} {hi:>13.6} {dlo:>6.2} {dhi:>6.2} {}",
                m.range[0],
                m.range[1],
                if same { "=" } else { "" }
            );
            assert_eq!(
                m.candidates as u64,
                r["candidates"].as_u64().unwrap(),
                "{name} bits {bits} candidates"
            );
            assert!(
                dlo <= 1.0 && dhi <= 1.0,
                "{name} bits {bits}: {:?} vs ORT [{lo}, {hi}] ({dlo:.1}, {dhi:.1} bins)",
                m.range
            );
            exact += usize::from(same);
            worst = worst.max(dlo).max(dhi);
        }
    }
    eprintln!(
        "{exact} of {} ranges identical to ORT's; worst {worst:.2} bins",
        2 * cases.len()
    );
    assert_eq!(exact, 2 * cases.len(), "ranges not ORT's float32 values");
}
