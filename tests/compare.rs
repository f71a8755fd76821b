//! `calibscope compare`: the numbers on hand-made pairs with known answers (closed forms), the
//! pairing of layers, bad inputs, and the binary's output shapes and exit statuses.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use calibscope::analysis::Progress;
use calibscope::analysis::compare::{
    CompareOptions, CompareWarningKind, Comparison, Pair, compare, pair_up,
};
use common::{calibscope, npy_with_dict, write, write_zip};
use serde_json::Value;

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

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A float32 `.npy` in either memory order (`vals` in file order).
fn f32_npy(shape: &[usize], fortran: bool, vals: &[f32]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': {}, 'shape': {}, }}",
        if fortran { "True" } else { "False" },
        shape_text(shape)
    );
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_with_dict(&dict, &data)
}

fn f16_npy(shape: &[usize], vals: &[f32]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f2', 'fortran_order': False, 'shape': {}, }}",
        shape_text(shape)
    );
    let data: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    npy_with_dict(&dict, &data)
}

fn put(dir: &Path, name: &str, shape: &[usize], vals: &[f32]) -> PathBuf {
    write(dir, name, &f32_npy(shape, false, vals)).unwrap()
}

fn run(reference: &Path, test: &Path, opts: &CompareOptions) -> Comparison {
    let pairing = pair_up(reference, test, opts);
    compare(&pairing, opts, &Progress::default())
}

/// Compares two arrays written as `r.npy` and `t.npy`.
fn pair_of(shape: &[usize], r: &[f32], t: &[f32], opts: &CompareOptions) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let a = put(dir.path(), "r.npy", shape, r);
    let b = put(dir.path(), "t.npy", shape, t);
    let c = run(&a, &b, opts);
    assert_eq!(c.pairs.len(), 1, "{:?}", c.pairs);
    let p = c.pairs.into_iter().next().unwrap();
    assert!(p.error.is_none(), "{:?}", p.error);
    p
}

fn small_chunks() -> CompareOptions {
    CompareOptions {
        chunk_elems: 1 << 14,
        ..CompareOptions::default()
    }
}

// ------------------------------------------------------------------------ closed forms

#[test]
fn reference_plus_uniform_noise_has_the_sqnr_of_its_variance() {
    let n = 1 << 20;
    let a = 0.05f64;
    let mut rng = Rng(1);
    let r: Vec<f32> = (0..n)
        .map(|i| (2.0 * (0.001 * i as f64 + 0.3).sin()) as f32)
        .collect();
    let t: Vec<f32> = r
        .iter()
        .map(|&x| (f64::from(x) + a * (2.0 * rng.next() - 1.0)) as f32)
        .collect();
    let p = pair_of(&[1024, 1024], &r, &t, &small_chunks());
    let m = p.metrics.unwrap();
    let var = a * a / 3.0;
    let signal: f64 = r.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let want_db = 10.0 * (signal / (n as f64 * var)).log10();
    // Σe²/(nσ²) has relative sd √(0.8/n) = 8.7e-4 for uniform noise: 0.004 dB; allow 5 sd.
    assert!(
        (m.sqnr_db - want_db).abs() < 0.02,
        "SQNR {} vs {want_db}",
        m.sqnr_db
    );
    assert_eq!(m.count, n as u64);
    assert!((m.mse / var - 1.0).abs() < 0.005, "mse {}", m.mse);
    // |e| ~ U(0, a): mean a/2 (relative sd 5.6e-4), 99th percentile 0.99a, max just below a.
    assert!((m.mean_abs_error / (a / 2.0) - 1.0).abs() < 0.003);
    assert!(
        (m.p99_abs_error / (0.99 * a) - 1.0).abs() < 0.006,
        "{}",
        m.p99_abs_error
    );
    assert!(m.max_abs_error <= a * (1.0 + 1e-6) && m.max_abs_error > 0.999 * a);
    // allclose: P(|e| > atol + rtol·|r|) = 1 − tol/a per position; the count is their sum,
    // within 6 binomial sd.
    let (mut mean, mut var_count) = (0.0, 0.0);
    for &x in &r {
        let q = (1.0 - (1e-5 + 1e-3 * f64::from(x).abs()) / a).max(0.0);
        mean += q;
        var_count += q * (1.0 - q);
    }
    let got = m.allclose_failures as f64;
    assert!(
        (got - mean).abs() < 6.0 * var_count.sqrt(),
        "{got} vs {mean}"
    );
    assert_eq!((m.nan_mismatch, m.inf_mismatch), (0, 0));
    assert!(m.cosine > 0.999 && m.cosine < 1.0);
}

#[test]
fn an_identical_run_has_infinite_sqnr_and_no_error() {
    let mut r: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).cos() * 3.0).collect();
    r[5] = f32::NAN;
    r[6] = f32::INFINITY;
    r[7] = f32::NEG_INFINITY;
    let p = pair_of(&[3, 1000], &r, &r, &small_chunks());
    let m = p.metrics.as_ref().unwrap();
    assert_eq!(m.sqnr_db, f64::INFINITY);
    assert_eq!(m.count, 2997);
    for v in [
        m.mse,
        m.max_abs_error,
        m.max_rel_error,
        m.mean_abs_error,
        m.p99_abs_error,
    ] {
        assert_eq!(v, 0.0);
    }
    assert_eq!(m.cosine, 1.0);
    assert_eq!(
        (m.allclose_failures, m.nan_mismatch, m.inf_mismatch),
        (0, 0, 0)
    );
    // Every error is 0: the worst is the first position where both are finite.
    assert_eq!(m.worst.as_deref(), Some(&[0usize, 0][..]));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["metrics"]["sqnr_db"], "inf");
}

#[test]
fn a_negated_run_has_cosine_minus_one() {
    let r: Vec<f32> = (1..=4096).map(|i| (i as f32).sqrt().sin() + 0.25).collect();
    let t: Vec<f32> = r.iter().map(|x| -x).collect();
    let m = pair_of(&[4096], &r, &t, &small_chunks()).metrics.unwrap();
    assert!((m.cosine + 1.0).abs() < 1e-12, "{}", m.cosine);
    // Σr²/Σ(−2r)² = 1/4.
    assert!((m.sqnr_db - 10.0 * 0.25f64.log10()).abs() < 1e-9);
    // |t − r| = 2|r|: the relative error is 2 everywhere.
    assert!((m.max_rel_error - 2.0).abs() < 1e-12);
}

#[test]
fn planted_nan_and_inf_mismatches_are_counted_exactly() {
    let n = 1000;
    let r0: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 3.0).collect();
    let (mut r, mut t) = (r0.clone(), r0.clone());
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    // NaN on one side only: 3 + 2; NaN on both: 4 (no mismatch).
    for i in [1, 100, 999] {
        r[i] = nan;
    }
    for i in [2, 500] {
        t[i] = nan;
    }
    for i in [3, 4, 5, 6] {
        r[i] = nan;
        t[i] = nan;
    }
    // ±inf: equal on both (2, no mismatch), opposite signs (1), one side only (3).
    for i in [10, 11] {
        r[i] = inf;
        t[i] = inf;
    }
    r[12] = inf;
    t[12] = -inf;
    t[13] = inf;
    r[14] = -inf;
    t[15] = -inf;
    // NaN against inf: a NaN mismatch, not also an inf one.
    r[16] = nan;
    t[16] = inf;
    let m = pair_of(&[n], &r, &t, &small_chunks()).metrics.unwrap();
    assert_eq!(m.nan_mismatch, 3 + 2 + 1);
    assert_eq!(m.inf_mismatch, 1 + 3);
    assert_eq!(m.count, (n - 3 - 2 - 4 - 2 - 4 - 1) as u64);
    assert_eq!(m.sqnr_db, f64::INFINITY);
}

#[test]
fn allclose_failures_on_a_hand_made_pair() {
    // tol = 1e-5 + 1e-3·|r|.
    let r = [0.0f32, 0.0, 1.0, 1.0, 100.0, -100.0, 1e-6, 5.0];
    let t = [
        2e-5f32, // |e| 2e-5 > 1e-5: fails
        5e-6,    // passes
        1.0005,  // 5e-4 < 1.001e-3: passes
        1.002,   // 2e-3 > 1.001e-3: fails
        100.2,   // 0.2 > 0.10001: fails
        -100.05, // passes
        0.0,     // 1e-6 < 1.1e-5: passes
        5.0,     // passes
    ];
    let m = pair_of(&[8], &r, &t, &CompareOptions::default())
        .metrics
        .unwrap();
    assert_eq!(m.allclose_failures, 3);
    // With no tolerance every nonzero error fails.
    let exact = CompareOptions {
        atol: 0.0,
        rtol: 0.0,
        ..CompareOptions::default()
    };
    let m = pair_of(&[8], &r, &t, &exact).metrics.unwrap();
    assert_eq!(m.allclose_failures, 7);
    // The worst error, 0.2 at position 4; the largest relative error, 1 at position 6 (or
    // the 2e-5 over r = 0, which has no relative error).
    assert_eq!(m.worst.as_deref(), Some(&[4usize][..]));
    assert!((m.max_rel_error - 1.0).abs() < 1e-9);
}

#[test]
fn the_worst_position_is_a_multi_index_in_the_files_memory_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = vec![0.5f32; 24];
    let mut t = r.clone();
    t[17] = 2.0; // file position 17 of a (2, 3, 4) array
    t[3] = 1.0;
    for (fortran, want) in [(false, [1usize, 1, 1]), (true, [1, 2, 2])] {
        let sub = dir.path().join(if fortran { "f" } else { "c" });
        let a = write(&sub, "r.npy", &f32_npy(&[2, 3, 4], fortran, &r)).unwrap();
        let b = write(&sub, "t.npy", &f32_npy(&[2, 3, 4], fortran, &t)).unwrap();
        let c = run(&a, &b, &CompareOptions::default());
        let m = c.pairs[0].metrics.as_ref().unwrap();
        assert_eq!(m.worst.as_deref(), Some(&want[..]), "fortran {fortran}");
        assert_eq!(m.max_abs_error, 1.5);
    }
    // Different memory orders do not line up: an error naming both files.
    let a = dir.path().join("c/r.npy");
    let b = dir.path().join("f/t.npy");
    let c = run(&a, &b, &CompareOptions::default());
    let e = c.pairs[0].error.as_deref().unwrap();
    assert!(
        e.contains("memory orders differ") && e.contains("f/t.npy"),
        "{e}"
    );
}

#[test]
fn the_numbers_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(11);
    let r: Vec<f32> = (0..200_000)
        .map(|_| (rng.next() * 8.0 - 4.0) as f32)
        .collect();
    let t: Vec<f32> = r
        .iter()
        .map(|&x| x + (rng.next() as f32 - 0.5) * 0.01)
        .collect();
    let a = put(dir.path(), "r.npy", &[200_000], &r);
    let b = put(dir.path(), "t.npy", &[200_000], &t);
    let with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run(&a, &b, &small_chunks()))
    };
    let one = with(1);
    let three = with(3);
    assert_eq!(one.pairs[0].metrics, three.pairs[0].metrics);
    assert!(one.pairs[0].metrics.is_some());
}

// --------------------------------------------------------------- across pairs

/// The elementwise "layer" of the propagation fixture.
fn layer(x: f32) -> f32 {
    (1.3 * x).tanh() + 0.2 * x
}

/// A five-layer chain run in float32 and again with its inputs rounded: float16 everywhere
/// (harmless, ~80 dB), and the ternary grid {−max, 0, max} at the input of `layer3` (where the
/// error enters: ~13 dB, inherited downstream).
fn propagation_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let names = ["layer1", "layer2", "layer3", "layer10", "layer11"];
    let mut rng = Rng(5);
    let x: Vec<f32> = (0..8192).map(|_| (rng.next() * 4.0 - 2.0) as f32).collect();
    let (mut r, mut t) = (x.clone(), x);
    for name in names {
        let absmax = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let q = |v: f32| -> f32 {
            if name == "layer3" {
                (v / absmax).round().clamp(-1.0, 1.0) * absmax
            } else {
                half::f16::from_f32(v).to_f32()
            }
        };
        r = r.iter().map(|&v| layer(v)).collect();
        t = t.iter().map(|&v| layer(q(v))).collect();
        put(&dir.join("ref"), &format!("{name}.npy"), &[64, 128], &r);
        put(&dir.join("test"), &format!("{name}.npy"), &[64, 128], &t);
    }
    (dir.join("ref"), dir.join("test"))
}

#[test]
fn the_layer_where_the_error_enters_is_first_degraded_and_drops_most() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = propagation_fixture(dir.path());
    let c = run(&a, &b, &CompareOptions::default());
    let names: Vec<&str> = c.pairs.iter().map(|p| p.name.as_str()).collect();
    // Natural order: layer10 after layer3.
    assert_eq!(names, ["layer1", "layer2", "layer3", "layer10", "layer11"]);
    assert_eq!(c.first_degraded.as_deref(), Some("layer3"));
    let sqnr: Vec<f64> = c.pairs.iter().map(|p| p.sqnr_db().unwrap()).collect();
    assert!(sqnr[0] > 50.0 && sqnr[1] > 50.0, "{sqnr:?}");
    assert!(sqnr[2..].iter().all(|&s| s < 16.0), "{sqnr:?}");
    let drops: Vec<f64> = c.pairs[1..]
        .iter()
        .map(|p| p.sqnr_drop_db.unwrap())
        .collect();
    let biggest = drops
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .unwrap()
        .0;
    assert_eq!(c.pairs[1 + biggest].name, "layer3", "{drops:?}");
    assert!(c.pairs[0].sqnr_drop_db.is_none());
    assert!(
        c.pairs[2]
            .warnings
            .iter()
            .any(|w| w.kind == CompareWarningKind::Degraded)
    );
}

// --------------------------------------------------------------- pairing and layouts

#[test]
fn archives_pair_by_member_name_and_stream_in_lockstep() {
    let dir = tempfile::tempdir().unwrap();
    let r: Vec<f32> = (0..50_000).map(|i| (i as f32 * 0.013).sin()).collect();
    let t: Vec<f32> = r.iter().map(|v| v + 0.001).collect();
    let ra = f32_npy(&[50_000], false, &r);
    let ta = f32_npy(&[50_000], false, &t);
    let small = f32_npy(&[3], false, &[1.0, 2.0, 3.0]);
    // The reference stored, the test deflated (streamed), and both deflated.
    let refz = dir.path().join("ref.npz");
    let testz = dir.path().join("int8.npz");
    let bothz = dir.path().join("both.npz");
    write_zip(&refz, &[("a.npy", &ra, false), ("b.npy", &small, false)]).unwrap();
    write_zip(&testz, &[("a.npy", &ta, true), ("c.npy", &small, true)]).unwrap();
    write_zip(&bothz, &[("a.npy", &ra, true)]).unwrap();
    let plain = pair_of(&[50_000], &r, &t, &small_chunks()).metrics.unwrap();
    let c = run(&refz, &testz, &small_chunks());
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(c.pairs[0].name, "a");
    assert_eq!(c.reference_only, ["b"]);
    assert_eq!(c.test_only, ["c"]);
    assert_eq!(c.pairs[0].metrics.as_ref().unwrap(), &plain);
    let c = run(&bothz, &testz, &small_chunks());
    assert_eq!(c.pairs[0].metrics.as_ref().unwrap(), &plain);
    // Swapped sides: the same errors, measured against the other run.
    let c = run(&testz, &bothz, &small_chunks());
    let m = c.pairs[0].metrics.as_ref().unwrap();
    assert_eq!(
        (m.count, m.max_abs_error),
        (plain.count, plain.max_abs_error)
    );
}

#[test]
fn two_npy_files_pair_whatever_their_names_and_dtypes_may_differ() {
    let dir = tempfile::tempdir().unwrap();
    let r: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin() * 10.0).collect();
    let a = put(dir.path(), "fp32_run.npy", &[1000], &r);
    let b = write(dir.path(), "fp16_run.npy", &f16_npy(&[1000], &r)).unwrap();
    let c = run(&a, &b, &CompareOptions::default());
    let p = &c.pairs[0];
    assert_eq!(p.name, "fp32_run");
    assert_eq!(
        (p.reference_dtype.as_str(), p.test_dtype.as_str()),
        ("float32", "float16")
    );
    // float16 keeps 11 bits: relative error ≤ 2^-11, so SQNR ≥ 20·log10(2^11) ≈ 66 dB.
    let m = p.metrics.as_ref().unwrap();
    assert!(m.sqnr_db > 66.0 && m.sqnr_db < 90.0, "{}", m.sqnr_db);
    assert!(m.max_rel_error <= 2f64.powi(-11) * 1.0001);
}

#[test]
fn batch_folders_compare_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = vec![1.0f32; 6];
    let mut t = r.clone();
    t[4] = 3.0; // batch b1, position (1, 1) of (2, 3)
    for (side, vals0, vals1) in [("ref", &r, &r), ("test", &r, &t)] {
        put(&dir.path().join(side).join("b0"), "x.npy", &[2, 3], vals0);
        put(&dir.path().join(side).join("b1"), "x.npy", &[2, 3], vals1);
        put(
            &dir.path().join(side).join("b0"),
            "y.npy",
            &[2],
            &[1.0, 2.0],
        );
        put(
            &dir.path().join(side).join("b1"),
            "y.npy",
            &[2],
            &[1.0, 2.0],
        );
    }
    let c = run(
        &dir.path().join("ref"),
        &dir.path().join("test"),
        &CompareOptions::default(),
    );
    let x = c.pairs.iter().find(|p| p.name == "x").unwrap();
    assert_eq!(x.shape, [2, 2, 3]);
    let m = x.metrics.as_ref().unwrap();
    assert_eq!(m.worst.as_deref(), Some(&[1usize, 1, 1][..]));
    assert_eq!(m.count, 12);
    assert!(x.test.contains("+1 more batch files"), "{}", x.test);
}

// --------------------------------------------------------------- bad inputs

#[test]
fn each_bad_pair_fails_alone_and_the_others_are_compared() {
    let dir = tempfile::tempdir().unwrap();
    let (rd, td) = (dir.path().join("ref"), dir.path().join("test"));
    let v: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
    for name in ["a", "b", "c", "d", "e"] {
        put(&rd, &format!("{name}.npy"), &[8, 8], &v);
    }
    put(&td, "a.npy", &[8, 8], &v);
    put(&td, "b.npy", &[4, 16], &v); // same count, other shape
    let full = f32_npy(&[8, 8], false, &v);
    write(&td, "c.npy", &full[..full.len() - 10]).unwrap(); // truncated
    put(&td, "d.npy", &[8, 8], &[f32::NAN; 64]); // NaN-filled
    put(&td, "f.npy", &[8, 8], &v); // test only; e is reference only
    let c = run(&rd, &td, &CompareOptions::default());
    let names: Vec<&str> = c.pairs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(c.reference_only, ["e"]);
    assert_eq!(c.test_only, ["f"]);
    let a = &c.pairs[0];
    assert!(a.error.is_none() && a.metrics.as_ref().unwrap().sqnr_db == f64::INFINITY);
    let b = c.pairs[1].error.as_deref().unwrap();
    assert!(
        b.contains("shapes differ") && b.contains("(8, 8)") && b.contains("(4, 16)"),
        "{b}"
    );
    let e = c.pairs[2].error.as_deref().unwrap();
    assert!(e.contains("test/c.npy"), "{e}");
    assert!(c.pairs[1].metrics.is_none() && c.pairs[2].metrics.is_none());
    let d = &c.pairs[3];
    let m = d.metrics.as_ref().unwrap();
    assert_eq!((m.count, m.nan_mismatch), (0, 64));
    assert!(m.sqnr_db.is_nan() && m.worst.is_none());
    let kinds: Vec<CompareWarningKind> = d.warnings.iter().map(|w| w.kind).collect();
    assert_eq!(
        kinds,
        [
            CompareWarningKind::NanMismatch,
            CompareWarningKind::NoFiniteValues
        ]
    );
    assert_eq!(c.first_degraded.as_deref(), Some("d"));
    assert_eq!(c.failed().count(), 2);
}

#[test]
fn unreadable_inputs_become_failed_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let c = run(
        &dir.path().join("missing"),
        dir.path(),
        &CompareOptions::default(),
    );
    assert_eq!(c.pairs.len(), 1);
    let e = c.pairs[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("reference: ") && e.contains("no such file or directory"),
        "{e}"
    );
}

// --------------------------------------------------------------- the binary

fn sample() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare");
    (root.join("ref"), root.join("int8"))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn json_on_the_sample_has_the_documented_shape() {
    let (a, b) = sample();
    let out = calibscope()
        .args(["compare", "--format", "json"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        keys(&v),
        sorted(&[
            "version",
            "mode",
            "settings",
            "pairs",
            "reference_only",
            "test_only",
            "first_degraded"
        ])
    );
    assert_eq!(v["version"], 1);
    assert_eq!(v["mode"], "compare");
    assert_eq!(
        keys(&v["settings"]),
        sorted(&["atol", "rtol", "sqnr_floor_db"])
    );
    assert_eq!(v["settings"]["atol"], 1e-5);
    assert_eq!(v["settings"]["sqnr_floor_db"], 20.0);
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 5);
    for p in pairs {
        assert_eq!(
            keys(p),
            sorted(&[
                "name",
                "reference",
                "test",
                "shape",
                "reference_dtype",
                "test_dtype",
                "metrics",
                "sqnr_drop_db",
                "warnings",
                "error"
            ])
        );
        assert_eq!(
            keys(&p["metrics"]),
            sorted(&[
                "count",
                "sqnr_db",
                "cosine",
                "mse",
                "max_abs_error",
                "max_rel_error",
                "mean_abs_error",
                "p99_abs_error",
                "allclose_failures",
                "nan_mismatch",
                "inf_mismatch",
                "worst"
            ])
        );
        assert!(p["error"].is_null());
    }
    assert_eq!(v["first_degraded"], "03_fc2_pre");
    assert_eq!(v["reference_only"], serde_json::json!([]));
}

#[test]
fn the_text_report_names_the_first_degraded_layer() {
    let (a, b) = sample();
    // Not a terminal and no --format: the text report.
    let out = calibscope()
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("first degraded: 03_fc2_pre"), "{text}");
    for format in ["csv", "markdown"] {
        let out = calibscope()
            .args(["compare", "--format", format])
            .arg(&a)
            .arg(&b)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(
            String::from_utf8(out.stdout)
                .unwrap()
                .contains("03_fc2_pre")
        );
    }
}

#[test]
fn fail_on_gates_with_exit_3_and_rejects_unknown_kinds_with_2() {
    let (a, b) = sample();
    calibscope()
        .args(["compare", "--fail-on", "degraded"])
        .arg(&a)
        .arg(&b)
        .assert()
        .code(3);
    calibscope()
        .args(["compare", "--fail-on", "nan_mismatch,inf_mismatch"])
        .arg(&a)
        .arg(&b)
        .assert()
        .code(0);
    // The floor low enough: nothing is degraded.
    calibscope()
        .args(["compare", "--fail-on", "degraded", "--sqnr-floor", "-50"])
        .arg(&a)
        .arg(&b)
        .assert()
        .code(0);
    let out = calibscope()
        .args(["compare", "--fail-on", "degradd"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unknown kind `degradd` for --fail-on"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    calibscope()
        .args(["compare", "--atol", "-1"])
        .arg(&a)
        .arg(&b)
        .assert()
        .code(2);
}

#[test]
fn a_failed_pair_exits_1_after_the_others_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let v = [1.0f32, 2.0, 3.0, 4.0];
    put(&dir.path().join("r"), "a.npy", &[4], &v);
    put(&dir.path().join("r"), "b.npy", &[4], &v);
    put(&dir.path().join("t"), "a.npy", &[4], &v);
    put(&dir.path().join("t"), "b.npy", &[2, 2], &v);
    let out = calibscope()
        .args(["compare", "--format", "json"])
        .arg(dir.path().join("r"))
        .arg(dir.path().join("t"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pairs"][0]["metrics"]["sqnr_db"], "inf");
    assert!(
        v["pairs"][1]["error"]
            .as_str()
            .unwrap()
            .contains("shapes differ")
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("shapes differ"), "{err}");
}

#[test]
fn nothing_in_common_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    put(&dir.path().join("r"), "a.npy", &[1], &[1.0]);
    put(&dir.path().join("t"), "b.npy", &[1], &[1.0]);
    let out = calibscope()
        .arg("compare")
        .arg(dir.path().join("r"))
        .arg(dir.path().join("t"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no layer name is in both"), "{err}");
}
