//! Saved analyses and sharded runs through the real binary: `--save`, reopening, re-runs,
//! `--shard K/N` and `merge`, and the errors of each.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn calibscope() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("calibscope"))
}

fn data() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/data")
}

/// stdout of a run that must succeed.
fn ok(args: &[&str]) -> String {
    let out = calibscope().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (exit status, stderr) of a run that must fail.
fn fails(args: &[&str]) -> (i32, String) {
    let out = calibscope().args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_saved_analysis_reopens_as_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.calibscope");
    let plain = ok(&["report", data(), "--format", "json", "-q"]);
    let saving = ok(&[
        "report",
        data(),
        "--format",
        "json",
        "-q",
        "--save",
        s(&file),
    ]);
    assert_eq!(saving, plain, "--save changed the report");
    let reopened = ok(&["report", s(&file), "--format", "json"]);
    assert_eq!(reopened, plain);
    // The bare command prints the same text report when stdout is not a terminal.
    assert_eq!(ok(&[s(&file)]), ok(&["report", data()]));
    // Saving a reopened analysis writes the same analysis again.
    let again = dir.path().join("again.calibscope");
    ok(&["report", s(&file), "-q", "--save", s(&again)]);
    assert_eq!(ok(&["report", s(&again), "--format", "json"]), plain);
}

#[test]
fn options_given_over_a_saved_analysis_rerun_it_as_a_fresh_run_would() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.calibscope");
    ok(&["report", data(), "-q", "--save", s(&file)]);
    for opts in [
        &["--bits", "4"][..],
        &["--scheme", "affine", "--percentile", "99,99.5"],
        &["--batch-axis", "none"],
        &["--granularities", "all", "--sqnr-floor", "30"],
    ] {
        let fresh = ok(&[&["report", data(), "--format", "json"][..], opts].concat());
        let rerun = ok(&[&["report", s(&file), "--format", "json"][..], opts].concat());
        assert_eq!(rerun, fresh, "{opts:?}");
    }
    // Re-saved with new options, the file keeps them: opened again, it needs no re-run.
    let four = dir.path().join("four.calibscope");
    ok(&["report", s(&file), "--bits", "4", "-q", "--save", s(&four)]);
    assert_eq!(
        ok(&["report", s(&four), "--format", "json"]),
        ok(&["report", data(), "--format", "json", "--bits", "4"])
    );
}

/// A copy of `data/` in `dir`, so it can be taken away.
fn copy_data(dir: &Path) -> PathBuf {
    let to = dir.join("dumps");
    std::fs::create_dir(&to).unwrap();
    for e in std::fs::read_dir(data()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

#[test]
fn without_the_dumps_it_opens_and_recalibrates_but_cannot_measure() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = copy_data(dir.path());
    let file = dir.path().join("run.calibscope");
    let saved_json = ok(&[
        "report",
        s(&dumps),
        "--format",
        "json",
        "-q",
        "--save",
        s(&file),
    ]);
    let fresh4 = ok(&["report", s(&dumps), "--format", "json", "--bits", "4"]);
    std::fs::remove_dir_all(&dumps).unwrap();

    assert_eq!(ok(&["report", s(&file), "--format", "json"]), saved_json);
    let out = calibscope()
        .args(["report", s(&file), "--format", "json", "--bits", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let first = stderr.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "error: {}: no such file or directory: the ranges come from the kept histograms; \
             their error metrics need the values",
            dumps.join("01_conv1_relu.npy").display()
        )
    );
    assert_eq!(stderr.lines().count(), 16);
    // The ranges are those a fresh 4-bit run chose; the metrics are unknown.
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value = serde_json::from_str(&fresh4).unwrap();
    for (g, w) in got["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["layers"].as_array().unwrap())
    {
        assert_eq!(g["stats"], w["stats"]);
        let (gm, wm) = (
            g["methods"].as_array().unwrap(),
            w["methods"].as_array().unwrap(),
        );
        assert_eq!(gm.len(), wm.len());
        for (a, b) in gm.iter().zip(wm) {
            for key in ["method", "range", "scale", "zero_point", "bits"] {
                assert_eq!(a[key], b[key], "{} {key}", g["name"]);
            }
            assert_eq!(a["metrics"]["sqnr_db"], "nan");
        }
    }
}

#[test]
fn broken_saved_files_are_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.calibscope");
    ok(&["report", data(), "-q", "--save", s(&file)]);
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.calibscope");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let mut newer = bytes.clone();
    newer[12] = 9;
    let newer_file = dir.path().join("newer.bin");
    std::fs::write(&newer_file, &newer).unwrap();
    let junk = dir.path().join("junk.calibscope");
    std::fs::write(&junk, b"PK\x03\x04 not ours").unwrap();
    let cases = [
        (
            &cut,
            format!(
                "truncated: the header announces {} bytes of analysis, {} are there",
                bytes.len() - 24,
                bytes.len() - 124
            ),
        ),
        (
            &newer_file,
            "saved by a newer calibscope (saved-analysis format 9; this one reads format 1): \
             open it with the calibscope that saved it, or analyse the dumps again"
                .into(),
        ),
        (
            &junk,
            "not a saved calibscope analysis (its first bytes are not the saved-analysis header)"
                .into(),
        ),
    ];
    for (path, msg) in cases {
        for cmd in [&["report", s(path)][..], &[s(path)], &["merge", s(path)]] {
            let (code, stderr) = fails(cmd);
            assert_eq!(code, 1, "{cmd:?}");
            assert_eq!(
                stderr,
                format!("Error: {}: {msg}\n", path.display()),
                "{cmd:?}"
            );
        }
    }
}

#[test]
fn shards_merged_equal_one_process_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = ok(&["report", data(), "--format", "json"]);
    for n in [1, 3, 7] {
        let parts: Vec<PathBuf> = (0..n)
            .map(|k| {
                let p = dir.path().join(format!("n{n}-part{k}.calibscope"));
                let shard = format!("{k}/{n}");
                ok(&["report", data(), "-q", "--shard", &shard, "--save", s(&p)]);
                p
            })
            .collect();
        // Any order of the parts.
        let names: Vec<&str> = parts.iter().rev().map(|p| s(p)).collect();
        let merged = ok(&[&["merge"][..], &names, &["--format", "json"]].concat());
        assert_eq!(merged, whole, "N = {n}");
        let all = dir.path().join(format!("n{n}-all.calibscope"));
        assert_eq!(
            ok(&[&["merge"][..], &names, &["--save", s(&all)]].concat()),
            ""
        );
        assert_eq!(
            ok(&["report", s(&all), "--format", "json"]),
            whole,
            "N = {n}"
        );
    }
    // Every layer is in exactly one of the 7 parts.
    let mut names = Vec::new();
    for k in 0..7 {
        let p = dir.path().join(format!("n7-part{k}.calibscope"));
        let v: serde_json::Value =
            serde_json::from_str(&ok(&["report", s(&p), "--format", "json"])).unwrap();
        for l in v["layers"].as_array().unwrap() {
            names.push(l["name"].as_str().unwrap().to_string());
        }
    }
    names.sort();
    let v: serde_json::Value = serde_json::from_str(&whole).unwrap();
    let mut want: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn merge_refuses_parts_that_do_not_make_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let part = |k: usize, extra: &[&str]| {
        let p = dir
            .path()
            .join(format!("p{k}{}.calibscope", extra.join("")));
        let shard = format!("{k}/3");
        let args = [
            &["report", data(), "-q", "--shard", &shard, "--save", s(&p)][..],
            extra,
        ];
        ok(&args.concat());
        p
    };
    let (p0, p1, p2) = (part(0, &[]), part(1, &[]), part(2, &[]));
    let p2_bits4 = part(2, &["--bits", "4"]);
    let (code, err) = fails(&["merge", s(&p0), s(&p2)]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: missing shard 1 of 3: 2 of 3 parts given\n")
    );
    let (code, err) = fails(&["merge", s(&p0), s(&p1), s(&p2_bits4)]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "Error: {} and {} were analysed with different settings (bits 4 ≠ 8): merge parts \
             of one run\n",
            p2_bits4.display(),
            p0.display()
        )
    );
    let (code, err) = fails(&["merge", s(&p0), s(&p1), s(&p1), s(&p2)]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "Error: shard 1/3 is given twice: {} and {}\n",
            p1.display(),
            p1.display()
        )
    );
    // Parts of another input set.
    let other = dir.path().join("other.calibscope");
    let npy = format!("{}/01_conv1_relu.npy", data());
    ok(&["report", &npy, "-q", "--shard", "1/3", "--save", s(&other)]);
    let (code, err) = fails(&["merge", s(&p0), s(&other), s(&p2)]);
    assert_eq!(code, 1);
    assert!(err.contains("come from different inputs"), "{err}");
    // merge does not analyse: the analysis options are refused.
    let (code, err) = fails(&["merge", s(&p0), "--bits", "4"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("Error: --bits is an analysis option; merge"),
        "{err}"
    );
}

#[test]
fn usage_errors_come_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.calibscope");
    ok(&["report", data(), "-q", "--save", s(&file)]);
    for (args, want) in [
        (
            vec!["report", data(), "--shard", "3/3"],
            "Error: --shard 3/3: K must be below N (shards are numbered 0 to N−1)\n".to_string(),
        ),
        (
            vec!["report", data(), "--shard", "x"],
            "Error: --shard x: expected K/N with 0 ≤ K < N, e.g. 0/16\n".into(),
        ),
        (
            vec!["report", s(&file), "--shard", "0/2"],
            format!(
                "Error: --shard splits the dumps of a run; {} is already analysed\n",
                file.display()
            ),
        ),
        (
            vec!["report", s(&file), data()],
            format!(
                "Error: {} is a saved analysis: open it on its own (merge joins the parts of a \
                 sharded run)\n",
                file.display()
            ),
        ),
        (
            vec!["report", s(&file), "--layout", "files"],
            "Error: --layout applies when reading dumps; a saved analysis keeps its layers\n"
                .into(),
        ),
        (
            vec!["report", s(&file), "--bits", "1"],
            "Error: bit width 1 is outside 2..=16\n".into(),
        ),
    ] {
        let (code, err) = fails(&args);
        assert_eq!((code, err.as_str()), (2, want.as_str()), "{args:?}");
    }
}

#[test]
fn save_never_replaces_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = copy_data(dir.path());
    let target = dumps.join("02_block_gelu.npy");
    let before = std::fs::read(&target).unwrap();
    let (code, err) = fails(&["report", s(&dumps), "-q", "--save", s(&target)]);
    assert_eq!(code, 1);
    assert!(err.contains("02_block_gelu.npy"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), before);
    // Nor does merge overwrite one of its parts.
    let p = dir.path().join("p.calibscope");
    ok(&["report", s(&dumps), "-q", "--save", s(&p)]);
    let before = std::fs::read(&p).unwrap();
    let (code, _) = fails(&["merge", s(&p), "--save", s(&p)]);
    assert_eq!(code, 1);
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn the_ui_opens_a_saved_analysis_with_every_layer_and_no_job() {
    use calibscope::analysis::saved;
    use calibscope::analysis::{Options, Progress};
    use calibscope::tui::app::{App, Command};

    let dir = tempfile::tempdir().unwrap();
    let dumps = copy_data(dir.path());
    let file = dir.path().join("run.calibscope");
    ok(&["report", s(&dumps), "-q", "--save", s(&file)]);
    std::fs::remove_dir_all(&dumps).unwrap();
    let loaded = saved::read(&file).unwrap();
    let opts = loaded.options(&Options::default());
    let mut app = App::from_saved(loaded.clone().into_slots(), opts.clone(), false, true);
    assert!(
        app.start().is_none(),
        "nothing to run: every result is there"
    );
    assert_eq!(app.slots.len(), 16);
    assert!(
        app.slots
            .iter()
            .all(|s| s.result.is_some() && s.profile.is_some())
    );

    // Other options: a re-run from the profiles, which never reads the (gone) dumps for them.
    let four = Options { bits: 4, ..opts };
    let mut app = App::from_saved(loaded.clone().into_slots(), four.clone(), true, true);
    let Some(Command::Analyze { work, .. }) = app.start() else {
        panic!("no re-run")
    };
    assert_eq!(work.len(), 16);
    assert!(work.iter().all(|w| w.profile.is_some()));
    let rerun = saved::rerun(&loaded, &four, &Progress::default());
    assert!(
        rerun
            .layers
            .iter()
            .all(|l| l.methods.iter().all(|m| m.bits == 4))
    );
}
