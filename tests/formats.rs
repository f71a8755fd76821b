//! The format rows (README "Formats"): closed forms through the whole pipeline, and ml_dtypes'
//! numbers on the reference dumps (`tests/fixtures/formats/rows.json`, made by
//! `scripts/fp_formats_fixtures.py`).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use calibscope::analysis::formats::{FormatGranularity, ScaleRule, tensor_row};
use calibscope::analysis::metrics::Metrics;
use calibscope::analysis::warnings::WarningKind;
use calibscope::analysis::{FormatKind, LayerAnalysis, Options, Progress, analyze_layer};
use calibscope::formats::{E2M1, E4M3, E5M2, FpFormat};
use calibscope::source::{LayerSpec, Location};
use serde_json::Value;

mod common;

/// A little-endian float32 C-order `.npy` file.
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    common::write_f32_npy(path, shape, false, values);
}

fn all_formats() -> Options {
    Options {
        formats: FormatKind::ALL.to_vec(),
        ..Options::default()
    }
}

fn run_path(path: &Path, opts: &Options) -> LayerAnalysis {
    let spec = LayerSpec {
        name: "t".into(),
        parts: vec![Location::Npy(path.to_path_buf())],
    };
    let l = analyze_layer(&spec, opts, &Progress::default());
    assert!(l.error.is_none(), "{:?}", l.error);
    l
}

fn analyse(shape: &[usize], values: &[f32], opts: &Options) -> LayerAnalysis {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npy");
    write_npy(&path, shape, values);
    run_path(&path, opts)
}

/// Every finite value of `fmt` (both signs), times `scale`.
fn grid(fmt: &FpFormat, scale: f32) -> Vec<f32> {
    (0..fmt.codes())
        .map(|c| fmt.decode(c as u8))
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .collect()
}

#[test]
fn a_tensor_on_the_fp8_grid_is_exact_at_min_max() {
    // E4M3 values times 2^-5: amax = 448·2^-5, so a/M = 2^-5 exactly and every value is on
    // the grid; 32 columns (the grid has 254 finite values: padded with zeros).
    for (fmt, kind) in [(E4M3, FormatKind::Fp8E4m3), (E5M2, FormatKind::Fp8E5m2)] {
        let mut v = grid(&fmt, 1.0 / 32.0);
        v.resize(v.len().div_ceil(32) * 32, 0.0);
        let l = analyse(&[v.len() / 32, 32], &v, &all_formats());
        let minmax = l
            .formats
            .iter()
            .find(|r| r.format == kind && r.method.as_deref() == Some("minmax"))
            .unwrap();
        assert_eq!(minmax.amax, Some(f64::from(fmt.max()) / 32.0));
        assert_eq!(minmax.metrics.sqnr_db, f64::INFINITY, "{}", fmt.name);
        assert_eq!(minmax.metrics.max_abs_error, 0.0);
        assert_eq!(minmax.metrics.clipped(), 0.0);
        assert_eq!(minmax.unclamped_nonfinite, Some(0));
    }
}

#[test]
fn mx_ocp_clips_a_block_max_of_500_times_a_power_of_two_and_rceil_does_not() {
    // Two rows of 64: four blocks of 32, each with one value 500·2^k and 31 small ones that
    // both rules hold (multiples of 2^(k+1) within the grid).
    let mut v = Vec::new();
    for (b, k) in [-6i32, 0, 3, 10].into_iter().enumerate() {
        let p = 2f32.powi(k);
        for i in 0..32 {
            v.push(if i == b {
                500.0 * p
            } else {
                (i % 5) as f32 * 2.0 * p
            });
        }
    }
    let l = analyse(&[2, 64], &v, &all_formats());
    let row = |kind, rule| {
        l.formats
            .iter()
            .find(|r| r.format == kind && r.scale_rule == Some(rule))
            .unwrap()
    };
    for kind in [FormatKind::Mxfp8, FormatKind::Mxfp4] {
        let ocp = row(kind, ScaleRule::Ocp);
        let rceil = row(kind, ScaleRule::Rceil);
        assert_eq!(ocp.granularity, FormatGranularity::Block);
        assert_eq!(ocp.block_size, Some(32));
        // One value per block clips: 4 of 128.
        assert_eq!(ocp.metrics.clipped_above, 4.0 / 128.0, "{kind:?}");
        assert_eq!(rceil.metrics.clipped(), 0.0, "{kind:?}");
    }
    // MXFP8 OCP: 500·2^k becomes 448·2^k, error 52·2^10 at the largest; the rest are exact.
    assert_eq!(
        row(FormatKind::Mxfp8, ScaleRule::Ocp).metrics.max_abs_error,
        52.0 * 1024.0
    );
    let w: Vec<WarningKind> = l.warnings.iter().map(|w| w.kind).collect();
    assert!(w.contains(&WarningKind::MxScaleClipping), "{w:?}");
    let msg = &l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::MxScaleClipping)
        .unwrap()
        .message;
    assert!(msg.contains("in 100.00% of blocks (4 of 4)"), "{msg}");
}

#[test]
fn nvfp4_on_exact_e2m1_values_is_exact() {
    // amax_tensor = 2688 so s_g = 1 exactly; blocks of 16 whose amax is 6·s_b for E4M3 values
    // s_b (448, 1, 0.5, 2.5): d = s_b, and every value is an E2M1 value times s_b.
    let e2m1 = grid(&E2M1, 1.0);
    assert_eq!(e2m1.len(), 16);
    let mut v = Vec::new();
    for sb in [448.0f32, 1.0, 0.5, 2.5] {
        v.extend(e2m1.iter().map(|q| q * sb));
    }
    let l = analyse(&[4, 16], &v, &all_formats());
    let nv = l
        .formats
        .iter()
        .find(|r| r.format == FormatKind::Nvfp4)
        .unwrap();
    assert_eq!(nv.block_size, Some(16));
    assert_eq!(nv.metrics.sqnr_db, f64::INFINITY);
    assert_eq!(nv.metrics.clipped(), 0.0);
}

#[test]
fn an_all_zero_layer_is_exact_with_a_warning_and_no_infinite_scale() {
    let l = analyse(&[4, 32], &[0.0; 128], &all_formats());
    assert!(!l.formats.is_empty());
    for r in &l.formats {
        assert_eq!(r.metrics.mse, 0.0, "{}", r.label());
        assert_eq!(r.metrics.clipped(), 0.0);
    }
    let w = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::Fp8ZeroAmax)
        .unwrap();
    assert!(w.message.contains("fp8_e4m3 minmax"), "{}", w.message);
}

#[test]
fn rows_need_a_contiguous_channel_axis_and_say_so() {
    let v: Vec<f32> = (0..256).map(|i| (i as f32 * 0.1).sin()).collect();
    // 1-D: per-tensor rows only, and a note.
    let l = analyse(&[256], &v, &all_formats());
    assert!(
        l.formats
            .iter()
            .all(|r| r.granularity == FormatGranularity::Tensor)
    );
    assert!(
        l.notes
            .iter()
            .any(|n| n.contains("block format rows not available")),
        "{:?}",
        l.notes
    );
    // `none`: no rows.
    let l = analyse(
        &[8, 32],
        &v,
        &Options {
            formats: vec![],
            ..Options::default()
        },
    );
    assert!(l.formats.is_empty());
    // The default: E4M3 per tensor (7 calibrators + mse_fp8) and per token; a 1-D tensor then
    // has no note (it has no tokens to speak of).
    let l = analyse(&[8, 32], &v, &Options::default());
    assert_eq!(l.formats.len(), 9);
    assert_eq!(l.formats[4].method.as_deref(), Some("mse_fp8"));
    assert_eq!(l.formats[8].granularity, FormatGranularity::Token);
    let l = analyse(&[256], &v, &Options::default());
    assert_eq!(l.formats.len(), 8);
    assert!(
        l.notes.iter().all(|n| !n.contains("format rows")),
        "{:?}",
        l.notes
    );
}

#[test]
fn fp8_warnings_name_the_clipping_calibrator_and_the_nan_count() {
    // A Gaussian-ish bulk with a few far outliers: the int8 recommendation clips them; under
    // E4M3 that clipping costs SQNR, and an unclamped cast would make them NaN. Both warnings
    // are judged at the recommended method's amax (the one an export deploys).
    let mut v: Vec<f32> = (0..65536)
        .map(|i| ((i as f32 * 0.7).sin() + (i as f32 * 1.3).cos()) * 0.5)
        .collect();
    for i in 0..4 {
        v[i * 5000] = 40.0 + i as f32;
    }
    let e4m3 = Options {
        formats: vec![FormatKind::Fp8E4m3],
        ..Options::default()
    };
    let l = analyse(&[512, 128], &v, &e4m3);
    let m = l.recommended_method().unwrap();
    let rec = l
        .formats
        .iter()
        .find(|r| r.method.as_deref() == Some(m.method.name()) && r.percentile == m.percentile)
        .unwrap();
    let full = l
        .formats
        .iter()
        .find(|r| r.method.as_deref() == Some("minmax"))
        .unwrap();
    // The data makes the recommended range clip the outliers.
    assert!(
        rec.metrics.clipped() > 0.0,
        "{}",
        l.recommended.as_deref().unwrap()
    );
    let cost = full.metrics.sqnr_db - rec.metrics.sqnr_db;
    let clip = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::Fp8Clipping);
    assert!(cost >= 1.0, "cost {cost}");
    assert!(clip.is_some());
    if let Some(w) = clip {
        assert_eq!(w.value, cost);
        assert!(w.message.contains("recommended"), "{}", w.message);
    }
    let nan = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::Fp8UnclampedNan)
        .unwrap();
    // At most the 4 outliers lie past 464 after scaling.
    assert_eq!(nan.value, rec.unclamped_nonfinite.unwrap() as f64);
    assert!(nan.value >= 1.0 && nan.value <= 4.0, "{}", nan.value);
    assert!(nan.message.contains("clamp to ±448"), "{}", nan.message);
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

/// Our metrics against the fixture's sums (n finite values), within `rel`.
fn metrics_match(ctx: &str, got: &Metrics, want: &Value, n: f64) {
    let (err, sig, rec, dot) = (
        num(&want["err_sq"]),
        num(&want["sig_sq"]),
        num(&want["rec_sq"]),
        num(&want["dot"]),
    );
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-4 * b.abs().max(a.abs());
    let sqnr = if err == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / err).log10()
    };
    let cosine = dot / (sig.sqrt() * rec.sqrt());
    for (key, g, w) in [
        ("mse", got.mse, err / n),
        ("sqnr_db", got.sqnr_db, sqnr),
        ("cosine", got.cosine, cosine),
        (
            "max_abs_error",
            got.max_abs_error,
            num(&want["max_abs_error"]),
        ),
        (
            "clipped_below",
            got.clipped_below,
            num(&want["clipped_below"]) / n,
        ),
        (
            "clipped_above",
            got.clipped_above,
            num(&want["clipped_above"]) / n,
        ),
    ] {
        assert!(close(g, w), "{ctx} {key}: {g} vs ml_dtypes {w}");
    }
}

#[test]
fn rows_match_ml_dtypes_on_the_reference_dumps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("formats/rows.json")).unwrap())
            .unwrap();
    let cases = doc["cases"].as_object().unwrap();
    assert!(cases.len() >= 5);
    let mut checked = 0;
    for (name, case) in cases {
        let path = root.join(format!("reference/{name}.npy"));
        let l = run_path(&path, &all_formats());
        let n = l.stats.as_ref().unwrap().finite as f64;
        let absmax = num(&case["absmax"]);
        // The values as the analysis reads them, for the rows at other amaxes.
        let values = read_f32(&path);
        for want in case["rows"].as_array().unwrap() {
            let format = want["format"].as_str().unwrap();
            let kind = FormatKind::from_name(format).unwrap();
            let gran = want["granularity"].as_str().unwrap();
            let rule = want["scale_rule"].as_str();
            let ctx = format!("{name} {format} {gran} {rule:?} {:?}", want["amax"]);
            if gran == "tensor" {
                let amax = num(&want["amax"]) as f32;
                let (m, nonfinite) = tensor_row(&values, &kind.element(), amax);
                metrics_match(&ctx, &m, &want["metrics"], n);
                checked += 1;
                assert_eq!(
                    nonfinite,
                    want["unclamped_nonfinite"].as_u64().unwrap(),
                    "{ctx}"
                );
                if f64::from(amax) == absmax {
                    // The pipeline's min-max row is this one.
                    let row = l
                        .formats
                        .iter()
                        .find(|r| r.format == kind && r.method.as_deref() == Some("minmax"))
                        .unwrap();
                    metrics_match(&ctx, &row.metrics, &want["metrics"], n);
                    assert_eq!(row.unclamped_nonfinite, Some(nonfinite));
                }
                continue;
            }
            let row = l
                .formats
                .iter()
                .find(|r| {
                    r.format == kind
                        && serde_json::to_value(r.granularity).unwrap() == gran
                        && r.scale_rule.map(|s| s.name()) == rule
                })
                .unwrap_or_else(|| panic!("{ctx}: no row"));
            metrics_match(&ctx, &row.metrics, &want["metrics"], n);
            checked += 1;
        }
    }
    // Per case: 4 amaxes and a token row per FP8 format, MX (2 formats × 2 rules), NVFP4.
    assert_eq!(checked, 15 * cases.len());
}

/// A reference dump's values as float32 (little-endian `<f4` or `<f2`, C order), NaN kept.
fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let data = &bytes[10 + hlen..];
    if header.contains("'<f2'") {
        data.chunks_exact(2)
            .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    } else {
        assert!(header.contains("'<f4'"), "{header}");
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

fn half_to_f32(h: u16) -> f32 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1f);
    let m = f32::from(h & 0x3ff);
    s * match e {
        0 => m * 2f32.powi(-24),
        31 if m == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (1.0 + m / 1024.0) * 2f32.powi(e - 15),
    }
}

fn calibscope() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("calibscope").unwrap()
}

fn sample(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

#[test]
fn the_formats_flag_is_validated_echoed_and_shown_in_every_report() {
    calibscope()
        .args(["report", "-q", "--formats", "fp8,nvfp4"])
        .arg(sample("02_block_gelu.npy"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "unknown format `fp8` (expected all, none or some of: fp8_e4m3, fp8_e5m2, mxfp8, mxfp4, nvfp4)",
        ));
    let out = calibscope()
        .args([
            "report",
            "-q",
            "--format",
            "json",
            "--formats",
            "nvfp4,fp8_e4m3",
        ])
        .arg(sample("02_block_gelu.npy"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["settings"]["formats"],
        serde_json::json!(["fp8_e4m3", "nvfp4"])
    );
    let rows = v["layers"][0]["formats"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    // The keys in the documented order (as written, not as a parsed map sorts them).
    let raw = String::from_utf8(out.stdout).unwrap();
    let first = &raw[raw.rfind("\"formats\": [").unwrap()..];
    let at: Vec<usize> = [
        "format",
        "granularity",
        "block_size",
        "method",
        "percentile",
        "scale_rule",
        "amax",
        "metrics",
        "unclamped_nonfinite",
    ]
    .iter()
    .map(|k| first.find(&format!("\"{k}\":")).unwrap())
    .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    let text = calibscope()
        .args(["report", "-q", "--formats", "all"])
        .arg(sample("02_block_gelu.npy"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("fp8_e4m3 mse_fp8"), "{text}");
    assert!(text.contains("  * 8-bit: best "), "{text}");
    assert!(text.contains("  * 4-bit: best "), "{text}");
    let csv = calibscope()
        .args(["report", "-q", "--format", "csv", "--formats", "all"])
        .arg(sample("02_block_gelu.npy"))
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    // Header unchanged; 7 methods, 3 granularity rows, 23 format rows.
    assert!(csv.starts_with("layer,source,shape,dtype,method,percentile,scheme,bits,lo,hi,"));
    assert_eq!(csv.lines().filter(|l| l.contains(",format:")).count(), 23);
    assert!(csv.contains(",format:mxfp4:rceil,"), "{csv}");
    let md = calibscope()
        .args(["report", "-q", "--format", "markdown", "--formats", "mxfp8"])
        .arg(sample("02_block_gelu.npy"))
        .output()
        .unwrap();
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(md.contains("| mxfp8 ocp |"), "{md}");
}

#[test]
fn the_json_export_carries_the_fp8_input_scale() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ranges.json");
    calibscope()
        .args([
            "report",
            "-q",
            "--formats",
            "fp8_e4m3",
            "--method",
            "minmax",
        ])
        .args(["--export", "json"])
        .arg(&out)
        .arg(sample("02_block_gelu.npy"))
        .assert()
        .success();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let f = &v["02_block_gelu"]["fp8"];
    assert_eq!(f["format"], "fp8_e4m3");
    assert_eq!(f["method"], "minmax");
    let amax = f["amax"].as_f64().unwrap();
    assert_eq!(amax, v["02_block_gelu"]["max"].as_f64().unwrap());
    // input_scale = amax/448 as float32.
    assert_eq!(
        f["input_scale"].as_f64().unwrap() as f32,
        amax as f32 / 448.0
    );
    let scale = f64::from(amax as f32 / 448.0);
    assert!((f["scale"].as_f64().unwrap() - scale).abs() <= 1e-15 * scale);
    // Without the FP8 rows there is no fp8 key.
    calibscope()
        .args(["report", "-q", "--formats", "none", "--export", "json"])
        .arg(&out)
        .arg(sample("02_block_gelu.npy"))
        .assert()
        .success();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(v["02_block_gelu"].get("fp8").is_none());
}
