//! Per-token, per-channel and per-block rows and the channel summary: hand-made tensors with
//! known answers, and numpy's numbers on the reference dumps
//! (`tests/fixtures/granularity_reference.json`, made by `scripts/granularity_reference.py`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use calibscope::analysis::warnings::WarningKind;
use calibscope::analysis::{
    Granularity, GranularityResult, LayerAnalysis, MethodKind, Options, Progress, analyze_layer,
};
use calibscope::calib::Scheme;
use calibscope::source::{LayerSpec, Location};
use serde_json::Value;

mod common;
use common::write_f32_npy as write_npy;

fn spec_of(paths: Vec<PathBuf>) -> LayerSpec {
    LayerSpec {
        name: "t".into(),
        parts: paths.into_iter().map(Location::Npy).collect(),
    }
}

fn run(spec: &LayerSpec, opts: &Options) -> LayerAnalysis {
    let l = analyze_layer(spec, opts, &Progress::default());
    assert!(l.error.is_none(), "{:?}", l.error);
    l
}

/// Analyses `values` (C order unless `fortran`) of `shape` with `opts`.
fn analyse(shape: &[usize], fortran: bool, values: &[f32], opts: &Options) -> LayerAnalysis {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npy");
    write_npy(&path, shape, fortran, values);
    run(&spec_of(vec![path]), opts)
}

/// Every row (blocks are opt-in by default).
fn every() -> Options {
    let mut o = Options::default();
    o.granularity.rows = Granularity::ALL.to_vec();
    o
}

fn with_axis(axis: i64) -> Options {
    let mut o = every();
    o.granularity.channel_axis = axis;
    o
}

fn row(l: &LayerAnalysis, g: Granularity, block: Option<usize>) -> &GranularityResult {
    l.granularities
        .iter()
        .find(|r| r.granularity == g && r.block_size == block)
        .unwrap_or_else(|| panic!("no {g:?} {block:?} row in {:?}", l.granularities))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

/// 10·log10 of a ratio of sums.
fn db(signal: f64, noise: f64) -> f64 {
    10.0 * (signal / noise).log10()
}

/// A dense uniform grid over [−1, 1] (n points, both ends included), shuffled by a fixed
/// stride so that columns cut from it differ.
fn grid(n: usize, shift: usize) -> Vec<f64> {
    (0..n)
        .map(|i| -1.0 + 2.0 * ((i * 7919 + shift) % n) as f64 / (n - 1) as f64)
        .collect()
}

#[test]
fn one_channel_fifty_times_the_rest() {
    // 4096 tokens × 8 channels; every channel a dense uniform grid over [−a, a] with a = 1,
    // except channel 3 with a = 50.
    let (rows, c, big) = (4096usize, 8usize, 3usize);
    let cols: Vec<Vec<f64>> = (0..c).map(|j| grid(rows, j * 101)).collect();
    let amp = |j: usize| if j == big { 50.0 } else { 1.0 };
    let v: Vec<f32> = (0..rows * c)
        .map(|i| (amp(i % c) * cols[i % c][i / c]) as f32)
        .collect();
    let l = analyse(&[rows, c], false, &v, &every());
    // Per channel each channel's noise is its own step²/12: SQNR 10·log10(4·127²) = 48.16 dB
    // whatever the amplitudes (the uniform-quantizer closed form, as in metrics.rs).
    let ideal = db(4.0 * 127.0f64.powi(2), 1.0);
    let ch = row(&l, Granularity::Channel, None);
    assert!(
        (ch.metrics.sqnr_db - ideal).abs() < 0.05,
        "{}",
        ch.metrics.sqnr_db
    );
    assert_eq!(ch.groups, 8);
    // Kept in float: channel 3 exact, the others on the step 1/127: signal
    // N·(7 + 2500)/3, noise 7·N·(1/127)²/12.
    let s = l.channels.as_ref().unwrap();
    assert_eq!(s.axis, 1);
    assert_eq!(s.count, 8);
    assert_eq!(s.absmax_median, 1.0);
    assert_eq!(s.outliers, vec![big]);
    assert_eq!(s.top[0].channel, big);
    assert_eq!(s.top[0].absmax, 50.0);
    assert_eq!(s.top[0].ratio, 50.0);
    assert_eq!(s.top.len(), 8);
    let f = s.outliers_in_float.as_ref().unwrap();
    assert_eq!(f.channels, 1);
    let want = db(4.0 * 127.0f64.powi(2) * (7.0 + 2500.0), 7.0);
    assert!(
        (f.metrics.sqnr_db - want).abs() < 0.05,
        "{} vs {want}",
        f.metrics.sqnr_db
    );
    // |x| ≥ 6 only in channel 3: the grid points with |u| ≥ 6/50 (u = −1 + 2k/(N−1)).
    let above = (0..rows)
        .filter(|&k| ((50.0 * (-1.0 + 2.0 * k as f64 / (rows - 1) as f64)) as f32).abs() >= 6.0)
        .count() as u64;
    assert_eq!(s.above_threshold.values, above);
    assert_eq!(s.above_threshold.channels, 1);
    // Per tensor the grid step is 50/127 for all: worse than either.
    let t = row(&l, Granularity::Tensor, None);
    assert!(t.metrics.sqnr_db < f.metrics.sqnr_db - 10.0);
    let w = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::OutlierChannels)
        .unwrap();
    assert_eq!(w.value, 50.0);
    assert!(
        w.message
            .starts_with("channel 3 holds values up to 50× the median channel (axis 1)"),
        "{}",
        w.message
    );
    assert!(w.message.contains(&format!(
        "SQNR {:.1} dB → {:.1} dB with it kept in float; per-token {:.1} dB",
        t.metrics.sqnr_db,
        f.metrics.sqnr_db,
        row(&l, Granularity::Token, None).metrics.sqnr_db
    )));
}

#[test]
fn per_token_scales_give_each_row_the_uniform_quantizer_noise() {
    // Row r is a dense uniform grid over [−A_r, A_r] with A_r from 0.01 to 1000: per token
    // each row's noise is (A_r/127)²/12, so the SQNR is 48.16 dB overall; per tensor the
    // small rows are lost under the step of the largest.
    let (rows, c) = (16usize, 8192usize);
    let amp = |r: usize| 0.01 * 10f64.powf(5.0 * r as f64 / (rows - 1) as f64);
    let v: Vec<f32> = (0..rows)
        .flat_map(|r| grid(c, r).into_iter().map(move |u| (amp(r) * u) as f32))
        .collect();
    let l = analyse(&[rows, c], false, &v, &every());
    let tok = row(&l, Granularity::Token, None);
    assert_eq!(tok.groups, 16);
    let ideal = db(4.0 * 127.0f64.powi(2), 1.0);
    assert!(
        (tok.metrics.sqnr_db - ideal).abs() < 0.05,
        "{}",
        tok.metrics.sqnr_db
    );
    // The MSE in closed form: mean over rows of (A_r/127)²/12.
    let mse: f64 = (0..rows)
        .map(|r| (amp(r) / 127.0).powi(2) / 12.0)
        .sum::<f64>()
        / rows as f64;
    assert!(
        close(tok.metrics.mse, mse, 0.01),
        "{} vs {mse}",
        tok.metrics.mse
    );
    // A block of 8192 or more is the whole token: the same groups, the same sums.
    let mut o = every();
    o.granularity.block_sizes = vec![8192, 10_000];
    let l2 = analyse(&[rows, c], false, &v, &o);
    assert_eq!(
        row(&l2, Granularity::Block, Some(8192)).metrics,
        tok.metrics
    );
    assert_eq!(
        row(&l2, Granularity::Block, Some(10_000)).metrics,
        tok.metrics
    );
    // One scale for all rows loses the small ones.
    assert!(row(&l, Granularity::Tensor, None).metrics.sqnr_db < tok.metrics.sqnr_db - 6.0);
}

#[test]
fn blocks_on_their_own_power_of_two_grids_are_exact_and_a_zero_block_adds_nothing() {
    // Tokens of 96 = three blocks of 32: block 0 holds multiples of 1/4 up to 127/4, block 1
    // is all zeros, block 2 multiples of 128 up to 127·128. Each block's scale is its absmax/127,
    // a power of two, so every value is on its block's grid: the block-32 row is exact.
    let (rows, c) = (64usize, 96usize);
    let mut v = vec![0.0f32; rows * c];
    for r in 0..rows {
        for j in 0..32 {
            let k = if j == 0 {
                127
            } else {
                ((r * 31 + j * 17) % 255) as i32 - 127
            };
            v[r * c + j] = k as f32 / 4.0;
            let k2 = if j == 5 {
                -127
            } else {
                ((r * 13 + j * 29) % 255) as i32 - 127
            };
            v[r * c + 64 + j] = k2 as f32 * 128.0;
        }
    }
    let mut o = every();
    o.granularity.block_sizes = vec![32, 40, 128];
    let l = analyse(&[rows, c], false, &v, &o);
    let b32 = row(&l, Granularity::Block, Some(32));
    assert_eq!(b32.groups, 64 * 3);
    assert_eq!(b32.metrics.mse, 0.0);
    assert_eq!(b32.metrics.max_abs_error, 0.0);
    assert_eq!(b32.metrics.sqnr_db, f64::INFINITY);
    assert_eq!(b32.metrics.cosine, 1.0);
    // Blocks of 40 (40, 40 and a last one of 16) mix the grids: not exact.
    let b40 = row(&l, Granularity::Block, Some(40));
    assert_eq!(b40.groups, 64 * 3);
    assert!(b40.metrics.mse > 0.0);
    // One block of 128 per token is the token.
    assert_eq!(
        row(&l, Granularity::Block, Some(128)).metrics,
        row(&l, Granularity::Token, None).metrics
    );
    // Per token the step is 128: block 2 stays exact and block 0's values (below 32) round to
    // 0, so the error is exactly their Σx².
    let lost: f64 = (0..rows)
        .flat_map(|r| v[r * c..r * c + 32].iter())
        .map(|&x| f64::from(x).powi(2))
        .sum();
    let tok = row(&l, Granularity::Token, None);
    assert!(close(tok.metrics.mse, lost / (rows * c) as f64, 1e-12));
}

/// (N, C, H, W) = (3, 4, 5, 6): channel c's values are k·2^c with |k| ≤ 127, 127 reached, so
/// each channel lies on its own grid (scale 2^c): per channel is exact, per tensor is not.
fn nchw() -> (Vec<usize>, Vec<f32>) {
    let shape = vec![3, 4, 5, 6];
    let v = (0..360usize)
        .map(|i| {
            let c = i / 30 % 4;
            let k = if i % 30 == 7 {
                127
            } else {
                ((i * 37) % 255) as i32 - 127
            };
            k as f32 * (1u32 << c) as f32
        })
        .collect();
    (shape, v)
}

#[test]
fn nchw_with_channel_axis_one_measures_channels_by_stride() {
    let (shape, v) = nchw();
    let l = analyse(&shape, false, &v, &with_axis(1));
    let s = l.channels.as_ref().unwrap();
    assert_eq!((s.axis, s.count), (1, 4));
    let top: Vec<(usize, f64)> = s.top.iter().map(|t| (t.channel, t.absmax)).collect();
    assert_eq!(top, vec![(3, 1016.0), (2, 508.0), (1, 254.0), (0, 127.0)]);
    assert_eq!(s.absmax_median, (254.0 + 508.0) / 2.0);
    assert!(s.outliers.is_empty());
    let ch = row(&l, Granularity::Channel, None);
    assert_eq!((ch.groups, ch.metrics.mse), (4, 0.0));
    assert!(row(&l, Granularity::Tensor, None).metrics.mse > 0.0);
    // A token is not contiguous in NCHW order: no token or block rows, and a note says why.
    let kinds: Vec<Granularity> = l.granularities.iter().map(|r| r.granularity).collect();
    assert_eq!(kinds, vec![Granularity::Tensor, Granularity::Channel]);
    assert!(
        l.notes
            .iter()
            .any(|n| n.contains("not the innermost one in file order")),
        "{:?}",
        l.notes
    );
    // The same tensor as NHWC with the last axis: the same channels, and now tokens too.
    let mut nhwc = vec![0.0f32; 360];
    for (i, &x) in v.iter().enumerate() {
        let (n, c, hw) = (i / 120, i / 30 % 4, i % 30);
        nhwc[(n * 30 + hw) * 4 + c] = x;
    }
    let l2 = analyse(&[3, 5, 6, 4], false, &nhwc, &every());
    let s2 = l2.channels.as_ref().unwrap();
    assert_eq!(
        (&s2.top, s2.absmax_median, s2.count),
        (&s.top, s.absmax_median, 4)
    );
    assert_eq!(row(&l2, Granularity::Channel, None).metrics.mse, 0.0);
    assert_eq!(row(&l2, Granularity::Token, None).groups, 90);
    // Fortran order: the channel axis of a (C, rows) array is innermost in the file.
    let t: Vec<f32> = nhwc.clone();
    let lf = analyse(&[4, 90], true, &t, &with_axis(0));
    let sf = lf.channels.as_ref().unwrap();
    assert_eq!(sf.top, s.top);
    let tok = row(&lf, Granularity::Token, None);
    let tok2 = row(&l2, Granularity::Token, None);
    assert_eq!(tok.groups, 90);
    assert!(close(tok.metrics.mse, tok2.metrics.mse, 1e-12));
}

#[test]
fn batch_files_add_a_leading_axis() {
    let dir = tempfile::tempdir().unwrap();
    let (shape, v) = nchw();
    // Three files of (4, 5, 6) = one (3, 4, 5, 6) layer.
    let paths: Vec<PathBuf> = (0..3)
        .map(|n| {
            let p = dir.path().join(format!("b{n}.npy"));
            write_npy(&p, &shape[1..], false, &v[n * 120..(n + 1) * 120]);
            p
        })
        .collect();
    let one = dir.path().join("one.npy");
    write_npy(&one, &shape, false, &v);
    for axis in [1, -1, 0] {
        let a = run(&spec_of(paths.clone()), &with_axis(axis));
        let b = run(&spec_of(vec![one.clone()]), &with_axis(axis));
        let (sa, sb) = (a.channels.as_ref().unwrap(), b.channels.as_ref().unwrap());
        assert_eq!(
            (sa.axis, sa.count, &sa.top),
            (sb.axis, sb.count, &sb.top),
            "axis {axis}"
        );
        assert_eq!(a.granularities.len(), b.granularities.len(), "axis {axis}");
        for (x, y) in a.granularities.iter().zip(&b.granularities) {
            assert_eq!(
                (x.granularity, x.block_size, x.groups),
                (y.granularity, y.block_size, y.groups)
            );
            assert!(
                close(x.metrics.mse, y.metrics.mse, 1e-12),
                "axis {axis} {x:?} {y:?}"
            );
        }
    }
}

#[test]
fn blocks_are_opt_in() {
    let v: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.37).sin()).collect();
    let l = analyse(&[64, 64], false, &v, &Options::default());
    let kinds: Vec<Granularity> = l.granularities.iter().map(|r| r.granularity).collect();
    assert_eq!(
        kinds,
        vec![
            Granularity::Tensor,
            Granularity::Token,
            Granularity::Channel
        ]
    );
}

#[test]
fn layers_without_a_channel_axis_have_only_the_tensor_row() {
    let v: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let l = analyse(&[1000], false, &v, &every());
    assert!(l.channels.is_none());
    assert_eq!(l.granularities.len(), 1);
    assert_eq!(l.granularities[0].granularity, Granularity::Tensor);
    assert_eq!(l.granularities[0].groups, 1);
    // An axis beyond the shape: the same, with a note.
    let l = analyse(&[10, 100], false, &v, &with_axis(2));
    assert!(l.channels.is_none());
    assert_eq!(l.granularities.len(), 1);
    assert!(
        l.notes
            .iter()
            .any(|n| n.contains("channel axis 2 does not exist")),
        "{:?}",
        l.notes
    );
}

#[test]
fn the_tensor_row_is_the_symmetric_minmax_method_bit_for_bit() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let found = calibscope::source::discover(
        &[data],
        calibscope::source::BatchLayout::Auto,
        &Default::default(),
    );
    assert!(found.layers.len() >= 10);
    let affine = Options {
        scheme: Scheme::Affine,
        ..every()
    };
    for spec in &found.layers {
        let l = run(spec, &every());
        let minmax = l
            .methods
            .iter()
            .find(|m| m.method == MethodKind::Minmax)
            .unwrap();
        let t = row(&l, Granularity::Tensor, None);
        assert_eq!(t.metrics, minmax.metrics, "{}", spec.name);
        // Under the affine scheme the tensor row stays symmetric min-max.
        let a = run(spec, &affine);
        assert_eq!(
            row(&a, Granularity::Tensor, None).metrics,
            t.metrics,
            "{}",
            spec.name
        );
    }
}

#[test]
fn chunks_of_whole_tokens_give_the_same_rows_and_cut_tokens_give_a_note() {
    let (rows, c) = (300usize, 24usize);
    let v: Vec<f32> = (0..rows * c)
        .map(|i| ((i as f32 * 0.61).sin() * (1.0 + (i % c) as f32)).powi(3))
        .collect();
    let base = analyse(&[rows, c], false, &v, &every());
    let small = Options {
        chunk_elems: 240, // 10 tokens
        ..every()
    };
    let l = analyse(&[rows, c], false, &v, &small);
    assert_eq!(l.granularities.len(), base.granularities.len());
    for (x, y) in l.granularities.iter().zip(&base.granularities) {
        assert_eq!(x.groups, y.groups);
        assert!(close(x.metrics.mse, y.metrics.mse, 1e-12), "{x:?} {y:?}");
        assert_eq!(x.metrics.max_abs_error, y.metrics.max_abs_error);
    }
    // The same values in Fortran order with channel axis 0 (300 channels, innermost in the
    // file): chunks of 250 values cut its 300-value tokens.
    let mut f = vec![0.0f32; rows * c];
    for r in 0..rows {
        for j in 0..c {
            f[j * rows + r] = v[r * c + j];
        }
    }
    let cut = Options {
        chunk_elems: 250,
        ..with_axis(0)
    };
    let l = analyse(&[rows, c], true, &f, &cut);
    assert_eq!(l.channels.as_ref().unwrap().count, 300);
    let kinds: Vec<Granularity> = l.granularities.iter().map(|r| r.granularity).collect();
    assert_eq!(kinds, vec![Granularity::Tensor, Granularity::Channel]);
    assert!(
        l.notes.iter().any(|n| n.contains("do not fit whole")),
        "{:?}",
        l.notes
    );
    // Its channel row (one scale per token of the C-order view) is the C-order token row.
    let tok = row(&base, Granularity::Token, None);
    let ch = row(&l, Granularity::Channel, None);
    assert!(close(ch.metrics.mse, tok.metrics.mse, 1e-12));
}

#[test]
fn a_million_channels() {
    // C = 2^20 fits a chunk: every row measured. One more channel does not: token and block
    // rows are not available, per channel still is.
    for c in [1usize << 20, (1 << 20) + 1] {
        let mut v: Vec<f32> = (0..2 * c)
            .map(|i| ((i % 1000) as f32 - 500.0) / 500.0)
            .collect();
        v[c + 777] = 300.0;
        let l = analyse(&[2, c], false, &v, &every());
        let s = l.channels.as_ref().unwrap();
        assert_eq!(s.count, c);
        assert_eq!(s.outliers, vec![777]);
        assert_eq!(s.top[0].absmax, 300.0);
        assert!(
            l.granularities
                .iter()
                .any(|r| r.granularity == Granularity::Channel)
        );
        let tokens = l
            .granularities
            .iter()
            .any(|r| r.granularity == Granularity::Token);
        assert_eq!(tokens, c == 1 << 20, "C = {c}");
    }
}

#[test]
fn the_granularities_option_selects_rows_and_low_sqnr_names_what_would_do() {
    // One channel of 256 ×100 at 4 bits: per tensor the other channels round to 0 and the
    // best method stays under the 20 dB floor; per channel (22.9 dB) passes.
    let (rows, c) = (512usize, 256usize);
    let v: Vec<f32> = (0..rows * c)
        .map(|i| {
            let u = grid(rows, i % c)[i / c];
            (if i % c == 5 { 100.0 * u } else { u }) as f32
        })
        .collect();
    let o = Options { bits: 4, ..every() };
    let l = analyse(&[rows, c], false, &v, &o);
    let ch = row(&l, Granularity::Channel, None).metrics.sqnr_db;
    assert!(ch > 20.0, "{ch}");
    let low = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::LowSqnr)
        .unwrap();
    assert!(
        low.message.contains(&format!(
            "keep this layer in higher precision, or use finer scales: per channel {ch:.1} dB"
        )),
        "{}",
        low.message
    );
    let mut only = o.clone();
    only.granularity.rows = vec![Granularity::Token];
    let l = analyse(&[rows, c], false, &v, &only);
    let kinds: Vec<Granularity> = l.granularities.iter().map(|r| r.granularity).collect();
    assert_eq!(kinds, vec![Granularity::Token]);
    let low = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::LowSqnr)
        .unwrap();
    assert!(
        low.message
            .contains("; finer scales do not reach 20 dB either (best: per token, "),
        "{}",
        low.message
    );
    // The outlier channel is still named, and kept in float it passes.
    assert!(
        l.warnings
            .iter()
            .any(|w| w.kind == WarningKind::OutlierChannels)
    );
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        Value::String(s) if s == "nan" => f64::NAN,
        v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

fn same(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan()) || close(a, b, rel)
}

fn metrics_match(ctx: &str, got: &calibscope::analysis::metrics::Metrics, want: &Value) {
    for (key, g, rel) in [
        ("mse", got.mse, 1e-12),
        ("sqnr_db", got.sqnr_db, 1e-12),
        ("cosine", got.cosine, 1e-12),
        ("max_abs_error", got.max_abs_error, 1e-15),
    ] {
        let w = num(&want[key]);
        assert!(same(g, w, rel), "{ctx} {key}: {g} vs numpy {w}");
    }
    assert_eq!(got.clipped(), 0.0, "{ctx}");
}

#[test]
fn rows_and_channels_match_numpy_on_the_reference_dumps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("granularity_reference.json")).unwrap(),
    )
    .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let axis = case["channel_axis"].as_i64().unwrap();
        let ctx = format!("{name} axis {axis}");
        let mut o = with_axis(axis);
        o.bits = case["bits"].as_u64().unwrap() as u8;
        o.granularity.block_sizes = case["block_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as usize)
            .collect();
        o.granularity.outlier_ratio = num(&case["outlier_ratio"]);
        o.granularity.outlier_threshold = num(&case["outlier_threshold"]);
        let path = root.join(format!("reference/{name}.npy"));
        let l = run(&spec_of(vec![path]), &o);
        let want_rows = case["rows"].as_array().unwrap();
        // Token and block rows need tokens whole in a chunk: not in file order for a strided
        // channel axis (NCHW with axis 1, Fortran order with the last axis).
        let strided = matches!(
            (name, axis),
            ("relu_nchw" | "softmax_attention", 1) | ("fortran_order", -1)
        );
        let expected: Vec<&Value> = want_rows
            .iter()
            .filter(|r| !strided || matches!(r["granularity"].as_str(), Some("tensor" | "channel")))
            .collect();
        assert_eq!(
            l.granularities.len(),
            expected.len(),
            "{ctx}: {:?}",
            l.granularities
        );
        for (got, want) in l.granularities.iter().zip(expected) {
            let rctx = format!("{ctx} {}", got.label());
            assert_eq!(
                got.granularity.name(),
                want["granularity"].as_str().unwrap(),
                "{rctx}"
            );
            assert_eq!(
                got.block_size,
                want["block_size"].as_u64().map(|b| b as usize),
                "{rctx}"
            );
            assert_eq!(got.groups, want["groups"].as_u64().unwrap(), "{rctx}");
            assert_eq!(got.bits, o.bits);
            metrics_match(&rctx, &got.metrics, &want["metrics"]);
        }
        let want = &case["channels"];
        let Some(s) = &l.channels else {
            assert!(want.is_null(), "{ctx}");
            continue;
        };
        assert_eq!(s.axis as u64, want["axis"].as_u64().unwrap(), "{ctx}");
        assert_eq!(s.count as u64, want["count"].as_u64().unwrap(), "{ctx}");
        // JSON numbers parse to within an ulp: "exact" below means that.
        assert!(
            close(s.absmax_median, num(&want["absmax_median"]), 1e-15),
            "{ctx}"
        );
        let top: Vec<(u64, f64, f64)> = want["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["channel"].as_u64().unwrap(),
                    num(&t["absmax"]),
                    num(&t["ratio"]),
                )
            })
            .collect();
        assert_eq!(s.top.len(), top.len(), "{ctx}");
        for (g, (c, a, r)) in s.top.iter().zip(top) {
            assert_eq!(g.channel as u64, c, "{ctx}");
            assert!(
                close(g.absmax, a, 1e-15),
                "{ctx}: absmax {} vs {a}",
                g.absmax
            );
            assert!(same(g.ratio, r, 1e-15), "{ctx}: ratio {} vs {r}", g.ratio);
        }
        let outliers: Vec<usize> = want["outliers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(s.outliers, outliers, "{ctx}");
        let at = &want["above_threshold"];
        assert_eq!(s.above_threshold.threshold, num(&at["threshold"]));
        assert_eq!(
            s.above_threshold.values,
            at["values"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            s.above_threshold.channels as u64,
            at["channels"].as_u64().unwrap(),
            "{ctx}"
        );
        match (&s.outliers_in_float, &want["outliers_in_float"]) {
            (None, Value::Null) => {}
            (Some(f), w) => {
                assert_eq!(f.channels as u64, w["channels"].as_u64().unwrap(), "{ctx}");
                metrics_match(&format!("{ctx} in float"), &f.metrics, &w["metrics"]);
            }
            (g, w) => panic!("{ctx}: outliers in float {g:?} vs numpy {w}"),
        }
    }
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn report(args: &[&str]) -> String {
    let out = Command::cargo_bin("calibscope")
        .unwrap()
        .args(["report", "-q"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_command_line_selects_rows_and_echoes_its_settings() {
    let sample = data().join("04_layernorm_outlier_channels.npy");
    let sample = sample.to_str().unwrap();
    let v: Value = serde_json::from_str(&report(&[sample, "--format", "json"])).unwrap();
    let s = &v["settings"];
    assert_eq!(
        s["granularities"],
        serde_json::json!(["tensor", "token", "channel"])
    );
    assert_eq!(s["channel_axis"], -1);
    assert_eq!(s["block_sizes"], serde_json::json!([32, 128]));
    assert_eq!(
        (s["outlier_ratio"].as_f64(), s["outlier_threshold"].as_f64()),
        (Some(8.0), Some(6.0))
    );
    let l = &v["layers"][0];
    assert_eq!(
        l["channels"]["outliers"],
        serde_json::json!([37, 211, 300, 466])
    );
    assert_eq!(l["channels"]["above_threshold"]["channels"], 4);
    let args = [
        sample,
        "--format",
        "json",
        "--granularities",
        "all",
        "--block-sizes",
        "16,64",
        "--outlier-ratio",
        "30",
        "--outlier-threshold",
        "70",
    ];
    let v: Value = serde_json::from_str(&report(&args)).unwrap();
    let rows: Vec<String> = v["layers"][0]["granularities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["granularity"].as_str().unwrap(), r["block_size"]))
        .collect();
    assert_eq!(
        rows,
        [
            "tensor null",
            "token null",
            "channel null",
            "block 16",
            "block 64"
        ]
    );
    // Only channel 300 (84.8) is 30× the median (2.72); 37 (73.6) and 300 reach |x| ≥ 70.
    let c = &v["layers"][0]["channels"];
    assert_eq!(c["outliers"], serde_json::json!([300]));
    assert_eq!(c["above_threshold"]["channels"], 2);
    // CSV: one row per granularity beside the methods, and the kept-in-float row.
    let csv = report(&[sample, "--format", "csv", "--granularities", "token,block"]);
    let methods: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|r| r.split(',').nth(4).unwrap())
        .filter(|m| !m.starts_with("format:"))
        .collect();
    assert_eq!(
        methods[7..],
        [
            "granularity:token",
            "granularity:block:32",
            "granularity:block:128",
            "granularity:outliers_in_float"
        ]
    );
    // NCHW with the channel axis 1: per-channel rows, no token rows, a note.
    let conv = data().join("01_conv1_relu.npy");
    let text = report(&[conv.to_str().unwrap(), "--channel-axis", "1"]);
    assert!(text.contains("channels axis 1, 32 channels"), "{text}");
    let v: Value = serde_json::from_str(&report(&[
        conv.to_str().unwrap(),
        "--channel-axis",
        "1",
        "--format",
        "json",
    ]))
    .unwrap();
    let l = &v["layers"][0];
    assert_eq!(l["granularities"].as_array().unwrap().len(), 2);
    let notes = l["notes"].as_array().unwrap();
    let why = "not the innermost one in file order";
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains(why)),
        "{notes:?}"
    );
}

#[test]
fn bad_granularity_options_exit_2_with_one_line() {
    let cases: [(&[&str], &str); 5] = [
        (&["--granularities", "rows"], "unknown granularity `rows`"),
        (
            &["--block-sizes", "0"],
            "block size 0 is outside 1..=1048576",
        ),
        (&["--block-sizes", "32,32"], "block size 32 is listed twice"),
        (
            &["--outlier-ratio", "0.5"],
            "outlier ratio 0.5 is not a finite number ≥ 1",
        ),
        (
            &["--outlier-threshold", "0"],
            "outlier threshold 0 is not a finite number > 0",
        ),
    ];
    for (args, msg) in cases {
        let a = Command::cargo_bin("calibscope")
            .unwrap()
            .arg("report")
            .arg(data())
            .args(args)
            .assert()
            .code(2)
            .stdout("");
        let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}
