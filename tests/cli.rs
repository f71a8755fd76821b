//! The real binary on `data/` and on broken inputs: output shapes, exit statuses, exports.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use assert_cmd::Command;
use assert_cmd::assert::OutputAssertExt;
use predicates::prelude::*;
use serde_json::Value;

fn calibscope() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("calibscope"))
}

/// The binary as a plain process, for a stdout `assert_cmd` cannot hand it (a device, a pipe).
fn calibscope_process() -> std::process::Command {
    std::process::Command::new(assert_cmd::cargo::cargo_bin!("calibscope"))
}

fn data() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

fn json_report(args: &[&str]) -> (Value, i32) {
    let out = calibscope()
        .arg("report")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v, out.status.code().unwrap())
}

#[test]
fn json_report_on_samples_has_the_documented_shape() {
    let (v, code) = json_report(&[data().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(v["version"], 1);
    let layers = v["layers"].as_array().unwrap();
    // 10 .npy files and an .npz with 6 members.
    assert_eq!(layers.len(), 16);
    for l in layers {
        for key in [
            "name", "source", "shape", "dtype", "stats", "casts", "warnings", "methods",
        ] {
            assert!(!l[key].is_null(), "{} lacks {key}", l["name"]);
        }
        assert!(l["error"].is_null());
        let s = &l["stats"];
        for key in [
            "count",
            "finite",
            "nan",
            "pos_inf",
            "neg_inf",
            "min",
            "max",
            "absmax",
            "mean",
            "std",
            "kurtosis",
            "zero_fraction",
            "percentiles",
        ] {
            assert!(s.get(key).is_some(), "stats lacks {key}");
        }
        let casts: Vec<&str> = l["casts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["dtype"].as_str().unwrap())
            .collect();
        assert_eq!(casts, ["float16", "bfloat16"]);
        let methods: Vec<&str> = l["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap())
            .collect();
        assert_eq!(
            methods,
            [
                "minmax",
                "ema",
                "entropy",
                "mse",
                "percentile",
                "percentile",
                "percentile"
            ]
        );
        let m = &l["methods"][2];
        for key in [
            "scheme",
            "bits",
            "range",
            "scale",
            "zero_point",
            "candidates",
            "metrics",
        ] {
            assert!(m.get(key).is_some(), "method lacks {key}");
        }
        assert!(l["recommended"].is_string());
    }
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "01_conv1_relu");
    assert!(names.contains(&"09_small_mlp/fc1_relu"));
}

#[test]
fn warnings_fire_on_the_samples_that_should_raise_them() {
    let (v, _) = json_report(&[data().to_str().unwrap()]);
    let kinds = |name: &str| -> Vec<String> {
        let l = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap();
        l["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(kinds("05_mlp_fp16_overflow").contains(&"fp16_overflow".into()));
    assert!(kinds("05_mlp_fp16_overflow").contains(&"fp16_sum_squares_overflow".into()));
    assert!(kinds("06_tiny_grads_fp16_underflow").contains(&"fp16_underflow".into()));
    assert!(kinds("07_with_nan").contains(&"nan_inf".into()));
    assert!(kinds("01_conv1_relu").contains(&"one_sided".into()));
    assert!(kinds("03_attn_scores_heavy_tail").contains(&"heavy_outliers".into()));
    assert!(!kinds("02_block_gelu").contains(&"fp16_overflow".into()));
    // The fp16 overflow count is exactly the 5 planted values (65519 rounds down to 65504).
    let l = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "05_mlp_fp16_overflow")
        .unwrap();
    assert_eq!(l["casts"][0]["overflow"], 5);
}

#[test]
fn a_broken_file_fails_alone_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.npy"), b"\x93NUMPY\x01\x00garbage").unwrap();
    std::fs::copy(
        data().join("02_block_gelu.npy"),
        dir.path().join("good.npy"),
    )
    .unwrap();
    let (v, code) = json_report(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let bad = layers.iter().find(|l| l["name"] == "broken").unwrap();
    assert!(
        bad["error"].as_str().unwrap().contains("broken.npy"),
        "{}",
        bad["error"]
    );
    let good = layers.iter().find(|l| l["name"] == "good").unwrap();
    assert!(good["error"].is_null());
    assert_eq!(good["methods"].as_array().unwrap().len(), 7);
    // The error is also on stderr, one line naming the file.
    calibscope()
        .args(["report", "-q", dir.path().to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("broken.npy"));
}

#[test]
fn missing_path_is_reported_and_usage_errors_exit_2() {
    calibscope()
        .args(["report", "/no/such/file.npy"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/no/such/file.npy"));
    calibscope()
        .args(["report", "--bits", "1"])
        .assert()
        .code(2);
    calibscope()
        .args(["report", "--format", "yaml"])
        .assert()
        .code(2);
}

/// Every usage error the library's rules or ours catch: exit 2, one line naming the value,
/// before any analysis runs (the export target of the last case is never created).
#[test]
fn each_usage_error_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["--bits", "1"], "bit width 1 is outside 2..=16"),
        (&["--bits", "17"], "bit width 17 is outside 2..=16"),
        (&["--percentile", "0"], "percentile 0 is outside (0, 100]"),
        (
            &["--percentile", "99,101"],
            "percentile 101 is outside (0, 100]",
        ),
        (
            &["--percentile", "99.9,99.9"],
            "percentile 99.9 is listed twice",
        ),
        (
            &["--ema-constant", "0"],
            "moving-average constant 0 is outside (0, 1]",
        ),
        (
            &["--ema-constant", "1.5"],
            "moving-average constant 1.5 is outside (0, 1]",
        ),
        (
            &["--fail-on", "nan_inf,bogus"],
            "unknown warning kind `bogus` for --fail-on",
        ),
        (
            &["--export", "xml", out],
            "unknown export kind `xml` (expected trt-cache, ort or json)",
        ),
    ];
    for (args, msg) in cases {
        let a = calibscope()
            .arg("report")
            .arg(data())
            .args(args)
            .assert()
            .code(2)
            .stdout("");
        let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("Error: ") && err.contains(msg),
            "{args:?}: {err}"
        );
    }
    assert!(!dir.path().join("out.json").exists());
    // The bare command (UI or text report) follows the same rules.
    calibscope()
        .arg(data())
        .args(["--bits", "20"])
        .assert()
        .code(2)
        .stderr("Error: bit width 20 is outside 2..=16\n");
}

#[test]
fn fail_on_gates_on_warning_kinds() {
    let gelu = data().join("02_block_gelu.npy");
    let overflow = data().join("05_mlp_fp16_overflow.npy");
    calibscope()
        .args(["report", "-q", "--fail-on", "fp16_overflow"])
        .arg(&gelu)
        .assert()
        .code(0);
    calibscope()
        .args(["report", "-q", "--fail-on", "fp16_overflow,nan_inf"])
        .arg(&overflow)
        .assert()
        .code(3);
    calibscope()
        .args(["report", "-q", "--fail-on", "no_such_kind"])
        .arg(&gelu)
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown warning kind"));
}

#[test]
fn text_report_fits_100_columns_and_marks_the_recommendation() {
    let out = calibscope().args(["report"]).arg(data()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100 || line.contains("! ") || line.contains("source"),
            "too wide: {line}"
        );
    }
    assert!(text.contains("* recommended:"));
    assert!(text.contains("sensitivity (best SQNR"));
}

#[test]
fn csv_has_one_row_per_layer_and_method() {
    let out = calibscope()
        .args(["report", "--format", "csv"])
        .arg(data())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let cols = header.split(',').count();
    let rows: Vec<&str> = lines.collect();
    // 7 method rows per layer, then its granularity rows (tests/granularity.rs checks those)
    // and its format rows (tests/formats.rs).
    let methods = rows
        .iter()
        .filter(|r| !r.contains(",granularity:") && !r.contains(",format:"))
        .count();
    assert_eq!(methods, 16 * 7);
    for r in &rows {
        // No field in these samples needs quoting, so a plain split is exact.
        assert_eq!(r.split(',').count(), cols, "{r}");
    }
}

#[test]
fn markdown_has_tables() {
    let out = calibscope()
        .args(["report", "--format", "markdown"])
        .arg(data().join("02_block_gelu.npy"))
        .output()
        .unwrap();
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("| method | range |"));
    assert!(md.contains("## Sensitivity"));
}

#[test]
fn trt_cache_export_writes_scale_bits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("calib.cache");
    calibscope()
        .args([
            "report",
            "-q",
            "--method",
            "minmax",
            "--export",
            "trt-cache",
        ])
        .arg(&cache)
        .arg(data().join("02_block_gelu.npy"))
        .assert()
        .success();
    let text = std::fs::read_to_string(&cache).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "TRT-8600-EntropyCalibration2");
    let (name, hex) = lines.next().unwrap().split_once(": ").unwrap();
    assert_eq!(name, "02_block_gelu");
    let scale = f32::from_bits(u32::from_str_radix(hex, 16).unwrap());
    // min-max scale = max|x| / 127; the sample's max is 5.124 (its min is -0.17).
    let (v, _) = json_report(&[data().join("02_block_gelu.npy").to_str().unwrap()]);
    let absmax = v["layers"][0]["stats"]["absmax"].as_f64().unwrap();
    assert_eq!(scale, (absmax / 127.0) as f32);
}

#[test]
fn ranges_json_export_and_refusal_to_overwrite_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    std::fs::copy(data().join("02_block_gelu.npy"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    calibscope()
        .args(["report", "-q", "--export", "json"])
        .arg(&input)
        .arg(&input)
        .assert()
        .failure()
        .stderr(format!(
            "Error: refusing to replace {}: it is one of the inputs\n",
            input.display()
        ));
    assert_eq!(std::fs::read(&input).unwrap(), before, "input untouched");
    let out = dir.path().join("ranges.json");
    calibscope()
        .args([
            "report", "-q", "--scheme", "affine", "--method", "entropy", "--export", "json",
        ])
        .arg(&out)
        .arg(&input)
        .assert()
        .success();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = &v["x"];
    assert_eq!(r["method"], "entropy");
    assert!(r["min"].as_f64().unwrap() < 0.0 && r["max"].as_f64().unwrap() > 0.0);
    assert!(r["zero_point"].as_i64().unwrap() > 0);
}

#[test]
fn bare_command_without_a_terminal_prints_the_text_report() {
    calibscope()
        .arg(data().join("02_block_gelu.npy"))
        .assert()
        .success()
        .stdout(predicate::str::contains("== 02_block_gelu =="));
}

#[test]
fn no_path_uses_the_bundled_samples() {
    let (v, code) = json_report(&[]);
    assert_eq!(code, 0);
    assert_eq!(v["layers"].as_array().unwrap().len(), 16);
}

/// One small layer: enough to produce every output, quick to analyse.
fn gelu() -> std::path::PathBuf {
    data().join("02_block_gelu.npy")
}

#[cfg(target_os = "linux")]
#[test]
fn a_report_that_cannot_be_written_is_an_error() {
    let full = || {
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let runs: [&[&str]; 3] = [&["report"], &["report", "--format", "json"], &[]];
    for args in runs {
        calibscope_process()
            .args(args)
            .arg(gelu())
            .stdout(full())
            .assert()
            .code(1)
            .stderr("Error: cannot write the report to standard output: No space left on device\n");
    }
}

#[test]
fn a_reader_that_went_away_is_not_an_error() {
    // The read end is closed before the binary starts, so its first write fails with EPIPE,
    // as under `| head` once head has exited.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ranges.json");
    calibscope_process()
        .args(["report", "--format", "json", "--export", "json"])
        .arg(&out)
        .arg(gelu())
        .stdout(writer)
        .assert()
        .success()
        .stderr("");
    // The rest of the command still ran.
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("02_block_gelu")
    );
}

/// Runs `--export json target` on one sample; the time limit guards against a write that
/// blocks on a FIFO.
fn export_to(target: &Path) -> assert_cmd::assert::Assert {
    calibscope()
        .args(["report", "-q", "--export", "json"])
        .arg(target)
        .arg(gelu())
        .timeout(std::time::Duration::from_secs(120))
        .assert()
}

#[cfg(unix)]
#[test]
fn export_refuses_to_replace_what_is_not_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let mut targets = vec![(fifo.clone(), "a FIFO"), (folder.clone(), "a folder")];
    if cfg!(target_os = "linux") {
        targets.push(("/dev/full".into(), "a character device"));
    }
    for (target, kind) in &targets {
        export_to(target).code(1).stderr(format!(
            "Error: refusing to replace {}: it is {kind}, not a regular file\n",
            target.display()
        ));
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::metadata(&folder).unwrap().is_dir());
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    if cfg!(target_os = "linux") {
        let full = std::fs::symlink_metadata("/dev/full").unwrap();
        assert!(full.file_type().is_char_device());
    }
    // Nothing else appeared next to them (no temp file left behind).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[cfg(unix)]
#[test]
fn export_through_a_link_replaces_the_file_it_points_to() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let real = shared.join("ranges.json");
    std::fs::write(&real, "old").unwrap();
    let link = dir.path().join("ranges.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    export_to(&link).success();
    assert_eq!(std::fs::read_link(&link).unwrap(), real, "still a link");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&real).unwrap()).unwrap();
    assert!(v["02_block_gelu"]["scale"].as_f64().unwrap() > 0.0);
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1);

    // A link to a folder or to nothing is refused and left as it was.
    let to_folder = dir.path().join("to_folder");
    std::os::unix::fs::symlink(&shared, &to_folder).unwrap();
    export_to(&to_folder).code(1).stderr(format!(
        "Error: refusing to replace {}: it is a symbolic link to a folder, not a regular file\n",
        to_folder.display()
    ));
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
    export_to(&dangling).code(1).stderr(format!(
        "Error: refusing to replace {}: it is a symbolic link to nothing, not a regular file\n",
        dangling.display()
    ));
    assert!(!dir.path().join("missing").exists());
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1);
}

#[test]
fn export_refuses_a_file_read_from_an_input_folder() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    std::fs::copy(gelu(), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    // The folder is the input; the file is found in it, and named by another path.
    let other_name = dir.path().join(".").join("x.npy");
    calibscope()
        .args(["report", "-q", "--export", "json"])
        .arg(&other_name)
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(format!(
            "Error: refusing to replace {}: it is one of the inputs\n",
            other_name.display()
        ));
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn export_into_a_missing_folder_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let target = missing.join("ranges.json");
    export_to(&target).code(1).stderr(format!(
        "Error: cannot write {}: the folder {} does not exist\n",
        target.display(),
        missing.display()
    ));
    assert!(!missing.exists());
}

/// `--export ort` is what ONNX Runtime's own writer (`save_tensors_data`) makes of the same
/// ranges, value for value (fixture by scripts/ort_cache_fixture.py, which also checked that
/// ONNX Runtime's `load_tensors_data` reads our file back), with the name map applied.
#[test]
fn ort_export_matches_onnx_runtimes_own_writer() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ort");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("minmax_data.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cache.json");
    calibscope()
        .args(["report", "-q", "--method", "minmax", "--name-map"])
        .arg(fixtures.join("name_map.tsv"))
        .arg(data())
        .arg("--export")
        .arg("ort")
        .arg(&out)
        .assert()
        .success();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(got, want);
    assert!(got["data"]["/conv1/Relu_output_0"].is_object());
    assert!(got["data"].get("01_conv1_relu").is_none());
}

/// The cache names one ORT method: the exported one where ORT has it, MinMax otherwise.
#[test]
fn ort_export_names_the_method_ort_has() {
    let dir = tempfile::tempdir().unwrap();
    for (method, want) in [
        ("entropy", "CalibrationMethod.Entropy"),
        ("percentile 99.99", "CalibrationMethod.Percentile"),
        ("mse", "CalibrationMethod.MinMax"),
        ("ema", "CalibrationMethod.MinMax"),
    ] {
        let out = dir.path().join("c.json");
        calibscope()
            .args(["report", "-q", "--method", method])
            .arg(gelu())
            .arg("--export")
            .arg("ort")
            .arg(&out)
            .assert()
            .success();
        let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(got["calibration_method"]["value"], want, "{method}");
    }
}

#[test]
fn trt_cache_takes_the_header_and_the_name_map() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("names.csv");
    std::fs::write(&map, "02_block_gelu,/block/gelu_output\n").unwrap();
    let out = dir.path().join("calib.cache");
    calibscope()
        .args([
            "report",
            "-q",
            "--trt-header",
            "TRT-100300-EntropyCalibration2",
        ])
        .arg("--name-map")
        .arg(&map)
        .arg(gelu())
        .arg("--export")
        .arg("trt-cache")
        .arg(&out)
        .assert()
        .success();
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "TRT-100300-EntropyCalibration2");
    assert!(lines[1].starts_with("/block/gelu_output: "), "{text}");
    assert_eq!(lines.len(), 2);
    // A bad name map is a usage error naming the file, before any analysis.
    std::fs::write(&map, "a b c\n").unwrap();
    calibscope()
        .args(["report", "-q", "--name-map"])
        .arg(&map)
        .arg(gelu())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "names.csv: line 1: expected two columns",
        ));
}
