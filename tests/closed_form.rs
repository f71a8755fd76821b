//! Closed-form and property checks of the whole pipeline on hand-made tensors with known answers.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use calibscope::analysis::{LayerAnalysis, MethodKind, Options, Progress, analyze_layer};
use calibscope::calib::{QParams, Scheme};
use calibscope::source::{BatchLayout, LayerSpec, Limits, Location, discover};
use npyz::WriterBuilder;
use proptest::prelude::*;

fn write_npy(path: &Path, shape: &[u64], values: &[f32]) {
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        w.extend(values.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    std::fs::write(path, buf).unwrap();
}

fn layer(dir: &Path, name: &str, shape: &[u64], values: &[f32], opts: &Options) -> LayerAnalysis {
    let path: PathBuf = dir.join(format!("{name}.npy"));
    write_npy(&path, shape, values);
    let spec = LayerSpec {
        name: name.into(),
        parts: vec![Location::Npy(path)],
    };
    let l = analyze_layer(&spec, opts, &Progress::default());
    assert!(l.error.is_none(), "{:?}", l.error);
    l
}

fn get(l: &LayerAnalysis, kind: MethodKind) -> &calibscope::analysis::MethodResult {
    l.methods.iter().find(|m| m.method == kind).unwrap()
}

#[test]
fn uniform_min_max_noise_is_step_squared_over_twelve() {
    let dir = tempfile::tempdir().unwrap();
    let a = 2.5f64;
    let n = 1 << 20;
    let v: Vec<f32> = (0..n)
        .map(|i| (-a + 2.0 * a * (i as f64 + 0.5) / n as f64) as f32)
        .collect();
    for bits in [4u8, 8, 12] {
        let opts = Options {
            bits,
            ..Options::default()
        };
        let l = layer(dir.path(), "u", &[64, n as u64 / 64], &v, &opts);
        let m = get(&l, MethodKind::Minmax);
        let s = m.scale;
        assert!(
            (m.metrics.mse / (s * s / 12.0) - 1.0).abs() < 0.01,
            "bits {bits}"
        );
        // Full-scale uniform: SQNR = 10·log10(4·L²) with L = 2^(b−1)−1 levels per side, i.e.
        // 6.02·b + 1.76 − 4.77 dB (crest factor √3) + 3.01 − 20·log10(2^(b−1)/L).
        let levels = f64::from((1u32 << (bits - 1)) - 1);
        let expected = 10.0 * (4.0 * levels * levels).log10();
        assert!(
            (m.metrics.sqnr_db - expected).abs() < 0.05,
            "bits {bits}: {} vs {expected}",
            m.metrics.sqnr_db
        );
        assert_eq!(m.metrics.clipped_below + m.metrics.clipped_above, 0.0);
    }
}

#[test]
fn a_constant_tensor_quantizes_exactly_under_closed_form_methods() {
    let dir = tempfile::tempdir().unwrap();
    let l = layer(
        dir.path(),
        "c",
        &[16, 256],
        &[0.75; 4096],
        &Options::default(),
    );
    for kind in [
        MethodKind::Minmax,
        MethodKind::Ema,
        MethodKind::Entropy,
        MethodKind::Percentile,
    ] {
        let m = get(&l, kind);
        assert_eq!(m.range, [-0.75, 0.75], "{kind:?}");
        assert_eq!(m.metrics.mse, 0.0, "{kind:?}");
        assert!(m.metrics.sqnr_db.is_infinite());
    }
    let s = l.stats.unwrap();
    assert_eq!((s.std, s.min, s.max), (0.0, 0.75, 0.75));
}

#[test]
fn an_all_zero_tensor_warns_of_a_zero_range() {
    let dir = tempfile::tempdir().unwrap();
    let l = layer(dir.path(), "z", &[4, 8], &[0.0; 32], &Options::default());
    assert!(l.warnings.iter().any(|w| w.kind.name() == "zero_range"));
    for m in &l.methods {
        assert_eq!(m.scale, 1.0);
        assert_eq!(m.metrics.mse, 0.0);
        assert_eq!(m.metrics.cosine, 1.0);
    }
}

#[test]
fn percentile_100_equals_min_max_and_one_batch_ema_equals_min_max() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vec<f32> = (0..10_000)
        .map(|i| ((i * 7919) % 10_007) as f32 / 1000.0 - 3.0)
        .collect();
    for scheme in [Scheme::Symmetric, Scheme::Affine] {
        let opts = Options {
            scheme,
            percentiles: vec![100.0],
            batch_axis: None,
            ..Options::default()
        };
        let l = layer(dir.path(), "p", &[100, 100], &v, &opts);
        let mm = get(&l, MethodKind::Minmax).range;
        assert_eq!(get(&l, MethodKind::Percentile).range, mm, "{scheme:?}");
        assert_eq!(get(&l, MethodKind::Ema).range, mm, "{scheme:?}");
    }
}

#[test]
fn affine_grids_contain_zero_even_for_positive_data() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vec<f32> = (0..20_000)
        .map(|i| 1.0 + (i % 997) as f32 / 100.0)
        .collect();
    let opts = Options {
        scheme: Scheme::Affine,
        ..Options::default()
    };
    let l = layer(dir.path(), "pos", &[20, 1000], &v, &opts);
    for m in &l.methods {
        let q = QParams::new(Scheme::Affine, 8, m.range[0], m.range[1]);
        assert!(
            q.lo <= 0.0 && q.hi >= 0.0,
            "{}: [{}, {}]",
            m.label(),
            q.lo,
            q.hi
        );
        assert_eq!(q.qdq(0.0), 0.0, "{}: zero must be exact", m.label());
        assert_eq!(m.zero_point, 0);
    }
}

#[test]
fn ema_over_batch_folders_follows_the_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    // Batch k holds values in [-(k+1), 2(k+1)]: m_max = 2 + 0.01·Σ(2(k+1) − m_max).
    let mut expect = (-1.0f32, 2.0f32);
    for k in 0..5u32 {
        let b = dir.path().join(format!("batch_{k:03}"));
        std::fs::create_dir(&b).unwrap();
        let s = (k + 1) as f32;
        write_npy(&b.join("conv.npy"), &[3], &[-s, 0.5, 2.0 * s]);
        if k > 0 {
            expect.0 += 0.01 * (-s - expect.0);
            expect.1 += 0.01 * (2.0 * s - expect.1);
        }
    }
    let found = discover(
        &[dir.path().to_path_buf()],
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert_eq!(found.layers.len(), 1, "{:?}", found.layers);
    assert_eq!(found.layers[0].parts.len(), 5);
    let opts = Options {
        scheme: Scheme::Affine,
        ..Options::default()
    };
    let l = analyze_layer(&found.layers[0], &opts, &Progress::default());
    let r = get(&l, MethodKind::Ema).range;
    assert_eq!(r, [f64::from(expect.0), f64::from(expect.1)]);
    assert_eq!(get(&l, MethodKind::Minmax).range, [-5.0, 10.0]);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vec<f32> = (0..300_000)
        .map(|i| ((i as f32 * 0.618).sin() * 3.0).powi(3))
        .collect();
    let opts = Options {
        chunk_elems: 4096,
        ..Options::default()
    };
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let l = layer(dir.path(), "t", &[300, 1000], &v, &opts);
            serde_json::to_string(&l).unwrap()
        })
    };
    assert_eq!(run(1), run(2));
}

proptest! {
    /// Inside the grid, quantize-dequantize is off by at most half a step.
    #[test]
    fn qdq_error_is_at_most_half_a_step_inside_the_range(
        lo in -1e4f64..0.0,
        width in 1e-3f64..2e4,
        bits in 2u8..=16,
        affine in any::<bool>(),
        t in 0.0f64..=1.0,
    ) {
        let scheme = if affine { Scheme::Affine } else { Scheme::Symmetric };
        let q = QParams::new(scheme, bits, lo, lo + width);
        let x = q.lo + t * (q.hi - q.lo);
        let err = (x - q.qdq(x)).abs();
        prop_assert!(err <= q.scale / 2.0 * (1.0 + 1e-9), "err {} step {}", err, q.scale);
        prop_assert!(q.lo <= lo.min(0.0) + q.scale && q.hi >= (lo + width).max(0.0) - q.scale);
    }

    /// Every method's range holds the values it does not clip: unclipped values err by ≤ s/2.
    #[test]
    fn pipeline_metrics_are_consistent(values in prop::collection::vec(-100f32..100.0, 64..512), affine in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let n = values.len() as u64;
        let opts = Options { scheme: if affine { Scheme::Affine } else { Scheme::Symmetric }, ..Options::default() };
        let l = layer(dir.path(), "r", &[n], &values, &opts);
        for m in &l.methods {
            let clipped = m.metrics.clipped_below + m.metrics.clipped_above;
            if clipped == 0.0 {
                prop_assert!(m.metrics.max_abs_error <= m.scale / 2.0 * (1.0 + 1e-9), "{}", m.label());
            }
            prop_assert!(m.metrics.cosine <= 1.0 + 1e-12);
            prop_assert!(m.metrics.mse >= 0.0);
        }
    }
}
