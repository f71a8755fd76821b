//! Held-out validation and convergence against closed forms and hand-made batches.

#![allow(clippy::unwrap_used)]

use npyz::WriterBuilder;

use super::*;
use crate::analysis::model::MethodResult;
use crate::analysis::options::Progress;
use crate::analysis::pipeline::analyze_layer;
use crate::calib::test_support::Rng;
use crate::source::{LayerSpec, Location};

fn opts() -> Options {
    Options {
        validate: true,
        keep_profiles: false,
        ..Options::default()
    }
}

/// Writes `batches` (equal lengths) as one `[B, N]` float32 array and analyses it.
fn analyse(batches: &[Vec<f32>], opts: &Options) -> LayerAnalysis {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.npy");
    let n = batches[0].len() as u64;
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[batches.len() as u64, n])
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    for b in batches {
        w.extend(b.iter().copied()).unwrap();
    }
    w.finish().unwrap();
    std::fs::write(&path, buf).unwrap();
    let spec = LayerSpec {
        name: "layer".into(),
        parts: vec![Location::Npy(path)],
    };
    let l = analyze_layer(&spec, opts, &Progress::default());
    assert!(l.error.is_none(), "{:?}", l.error);
    l
}

/// Standard normal values (Box–Muller on the tests' xorshift).
fn gaussian(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut u = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (a, b) = (u().max(1e-300), u());
            ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
        })
        .collect()
}

/// Σe² of symmetric int8 with amax `a`, written out as numpy computes it.
fn err_sq(values: &[f32], a: f64) -> f64 {
    let s = a / 127.0;
    values
        .iter()
        .map(|&v| {
            let x = f64::from(v);
            let r = (x / s).round_ties_even().clamp(-127.0, 127.0);
            let e = x - r * s;
            e * e
        })
        .sum()
}

fn sig_sq(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

fn absmax(values: &[f32]) -> f64 {
    values
        .iter()
        .fold(0.0f64, |a, &v| a.max(f64::from(v.abs())))
}

fn method<'a>(l: &'a LayerAnalysis, label: &str) -> &'a MethodResult {
    l.methods.iter().find(|m| m.label() == label).unwrap()
}

fn conv<'a>(l: &'a LayerAnalysis, label: &str) -> &'a ConvergenceMethod {
    let c = l.convergence.as_ref().unwrap();
    c.methods.iter().find(|m| m.label() == label).unwrap()
}

#[test]
fn layout_places_batches_in_folds_and_segments() {
    let l = Layout::new(16, 2).unwrap();
    assert_eq!(l.checkpoints, [1, 2, 4, 8, 16]);
    assert_eq!(l.checkpoints[l.half().unwrap()], 8);
    assert!(l.validated());
    assert_eq!(l.cells(), 10);
    // batch → (segment, fold): 0 → (0, 0), 1 → (1, 1), 2..4 → 2, 4..8 → 3, 8..16 → 4.
    let cells: Vec<usize> = (0..16).map(|b| l.cell(b)).collect();
    assert_eq!(cells, [0, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9]);
    let l = Layout::new(17, 2).unwrap();
    assert_eq!(l.checkpoints, [1, 2, 4, 8, 16, 17]);
    assert_eq!(l.checkpoints[l.half().unwrap()], 8);
    assert_eq!(l.cell(16), 5 * 2);
    // Fewer than 2·K batches: convergence only, every batch in one fold.
    let l = Layout::new(5, 3).unwrap();
    assert!(!l.validated());
    assert_eq!((l.folds, l.asked, l.cells()), (1, 3, 4));
    let l = Layout::new(3, 2).unwrap();
    assert_eq!(l.checkpoints, [1, 2, 3]);
    assert_eq!(l.checkpoints[l.half().unwrap()], 1);
    assert!(Layout::new(1, 2).is_none());
}

#[test]
fn identical_batches_hold_out_as_in_sample_and_lose_nothing() {
    let mut rng = Rng(7);
    let one = gaussian(&mut rng, 4096);
    // 8 batches, K = 2: each training set is 4 copies, the half prefix 4, so every histogram
    // is the whole one halved exactly and every calibrator picks the same range.
    let batches = vec![one; 8];
    let l = analyse(&batches, &opts());
    let v = l.validation.as_ref().unwrap();
    assert_eq!((v.folds, v.batches), (2, 8));
    for h in &v.methods {
        let m = method(&l, &h.label());
        for r in &h.ranges_by_fold {
            assert_eq!(*r, m.range, "{}", h.label());
        }
        let d = (h.heldout.sqnr_db - m.metrics.sqnr_db).abs();
        assert!(
            d < 1e-9,
            "{}: {} vs {}",
            h.label(),
            h.heldout.sqnr_db,
            m.metrics.sqnr_db
        );
        let clipped = m.metrics.clipped_below + m.metrics.clipped_above;
        assert!((h.heldout.clipped_fraction - clipped).abs() < 1e-15);
    }
    let c = l.convergence.as_ref().unwrap();
    assert_eq!(c.batch_counts, [1, 2, 4, 8]);
    for m in &c.methods {
        assert_eq!(m.half_range_sqnr_loss_db, 0.0, "{}", m.label());
        let first = m.ranges[0];
        assert!(m.ranges.iter().all(|r| *r == first), "{}", m.label());
    }
    assert_eq!(c.verdict, Verdict::Stable);
    assert!(
        l.warnings
            .iter()
            .all(|w| w.kind != WarningKind::CalibrationUnstable
                && w.kind != WarningKind::OverfitRange)
    );
    assert_eq!(l.recommended_by, Some(RecommendedBy::Heldout));
}

#[test]
fn doubling_scale_grows_with_the_exact_minmax_loss() {
    let mut rng = Rng(11);
    let base = gaussian(&mut rng, 4096);
    let batches: Vec<Vec<f32>> = (0..8)
        .map(|b| base.iter().map(|&v| v * (1u32 << b) as f32).collect())
        .collect();
    let all: Vec<f32> = batches.concat();
    let l = analyse(&batches, &opts());
    let c = l.convergence.as_ref().unwrap();
    // Min-max from the first n batches: batch n−1's absmax.
    let m = conv(&l, "minmax");
    for (r, &n) in m.ranges.iter().zip(&c.batch_counts) {
        assert_eq!(r[1], absmax(&batches[n - 1]), "n = {n}");
    }
    // The loss, recomputed: SQNR with amax of all 8 minus SQNR with amax of the first 4.
    let full = absmax(&all);
    let half = absmax(&batches[3]);
    let want = 10.0 * (err_sq(&all, half) / err_sq(&all, full)).log10();
    assert!(want > 10.0, "{want}");
    let got = m.half_range_sqnr_loss_db;
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    assert_eq!(c.verdict, Verdict::Growing);
    let rec = l.recommended.clone().unwrap();
    let loss = conv(&l, &rec).half_range_sqnr_loss_db;
    assert!(loss >= convergence::STABLE_LOSS_DB);
    assert!(
        c.detail.starts_with(&format!(
            "{rec} calibrated on the first 4 of 8 batches loses"
        )),
        "{}",
        c.detail
    );
    assert!(
        c.detail.ends_with("more data would move it again"),
        "{}",
        c.detail
    );
    let w = l
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::CalibrationUnstable)
        .unwrap();
    assert_eq!(w.value, loss);
    assert!(
        w.message.ends_with("calibrate on more data"),
        "{}",
        w.message
    );
}

/// On a layer whose scale grows 8× over its batches, the first batches span a few of the layer's
/// histogram bins, where the entropy and MSE searches' first candidates lie beyond them: every
/// method's range from the first n batches stays within those batches' extremes, as it would
/// calibrated on them alone, and the entropy range from one batch is inside its data.
#[test]
fn prefix_ranges_stay_within_the_prefix_extremes() {
    let mut rng = Rng(12);
    let base = gaussian(&mut rng, 4096);
    let batches: Vec<Vec<f32>> = (0..16)
        .map(|b| base.iter().map(|&v| v * 1.15f32.powi(b)).collect())
        .collect();
    for scheme in [Scheme::Symmetric, Scheme::Affine] {
        let l = analyse(&batches, &Options { scheme, ..opts() });
        let c = l.convergence.as_ref().unwrap();
        for m in &c.methods {
            for (r, &n) in m.ranges.iter().zip(&c.batch_counts) {
                let seen = batches[..n].concat();
                let (lo, hi) = seen
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(f64::from(v)), b.max(f64::from(v)))
                    });
                let (lo, hi) = match scheme {
                    Scheme::Symmetric => (-lo.abs().max(hi.abs()), lo.abs().max(hi.abs())),
                    Scheme::Affine => (lo, hi),
                };
                assert!(
                    r[0] >= lo && r[1] <= hi,
                    "{scheme:?} {} from {n} batches: {r:?} beyond [{lo}, {hi}]",
                    m.label()
                );
            }
        }
        let entropy = conv(&l, "entropy");
        assert!(entropy.ranges[0][1] < absmax(&batches[0]) * 1.0001);
    }
}

#[test]
fn three_batches_are_too_few() {
    let mut rng = Rng(3);
    let batches: Vec<Vec<f32>> = (0..3).map(|_| gaussian(&mut rng, 1000)).collect();
    let l = analyse(&batches, &opts());
    assert!(l.validation.is_none());
    assert_eq!(l.recommended_by, Some(RecommendedBy::InSample));
    assert!(
        l.notes
            .iter()
            .any(|n| n == "3 batches: held-out validation needs at least 2·K = 4 (--folds 2)"),
        "{:?}",
        l.notes
    );
    let c = l.convergence.as_ref().unwrap();
    assert_eq!(c.batch_counts, [1, 2, 3]);
    assert_eq!(c.verdict, Verdict::TooFewBatches);
    assert_eq!(
        c.detail,
        "3 batches: the convergence verdict needs at least 4"
    );
    // One batch: nothing to validate or converge.
    let l = analyse(&batches[..1], &opts());
    assert!(l.validation.is_none() && l.convergence.is_none());
}

#[test]
fn stationary_gaussian_batches_are_stable() {
    for seed in 1..=5 {
        let mut rng = Rng(seed * 7919);
        let batches: Vec<Vec<f32>> = (0..16).map(|_| gaussian(&mut rng, 4096)).collect();
        let l = analyse(&batches, &opts());
        let c = l.convergence.as_ref().unwrap();
        assert_eq!(c.verdict, Verdict::Stable, "seed {seed}: {}", c.detail);
        assert!(
            l.warnings
                .iter()
                .all(|w| w.kind != WarningKind::CalibrationUnstable),
            "seed {seed}"
        );
    }
}

/// Batches shorter than a metrics block (2048 values): the blocks hold several folds, measured
/// piece by piece (1000 values: 2–3 pieces a block) or fold by fold with the others masked
/// (300 values: 7–8 pieces). Min-max held out, recomputed.
#[test]
fn small_batches_are_held_out_value_by_value() {
    for (len, k) in [(300, 2), (300, 3), (1000, 2), (1000, 3)] {
        let mut rng = Rng(5);
        let batches: Vec<Vec<f32>> = (0..24)
            .map(|b| {
                let s = 1.0 + (b % 5) as f32 * 0.7;
                gaussian(&mut rng, len).iter().map(|v| v * s).collect()
            })
            .collect();
        let o = Options { folds: k, ..opts() };
        let l = analyse(&batches, &o);
        let v = l.validation.as_ref().unwrap();
        let h = v
            .methods
            .iter()
            .find(|m| m.method == MethodKind::Minmax)
            .unwrap();
        let (mut err, mut sig) = (0.0, 0.0);
        for fold in 0..k {
            let train: Vec<f32> = (0..24)
                .filter(|b| b % k != fold)
                .flat_map(|b| batches[b].clone())
                .collect();
            let held: Vec<f32> = (0..24)
                .filter(|b| b % k == fold)
                .flat_map(|b| batches[b].clone())
                .collect();
            let a = absmax(&train);
            assert_eq!(h.ranges_by_fold[fold], [-a, a]);
            err += err_sq(&held, a);
            sig += sig_sq(&held);
        }
        let want = 10.0 * (sig / err).log10();
        assert!(
            (h.heldout.sqnr_db - want).abs() < 1e-9,
            "K = {k}, {len} values a batch: {} vs {want}",
            h.heldout.sqnr_db
        );
    }
}

/// The in-sample part of the analysis does not change when validation runs (its histograms
/// are the sum of the cells').
#[test]
fn validation_leaves_the_in_sample_figures_alone() {
    let mut rng = Rng(9);
    let batches: Vec<Vec<f32>> = (0..6)
        .map(|b| gaussian(&mut rng, 2000 + b))
        .map(|v| v[..2000].to_vec())
        .collect();
    let on = analyse(&batches, &opts());
    let off = analyse(
        &batches,
        &Options {
            validate: false,
            ..opts()
        },
    );
    assert_eq!(on.methods, off.methods);
    assert_eq!(on.stats, off.stats);
    assert_eq!(on.granularities, off.granularities);
    assert!(off.validation.is_none() && off.convergence.is_none());
    assert_eq!(off.recommended_by, Some(RecommendedBy::InSample));
}

fn held(method: MethodKind, sqnr: f64, ranges: &[[f64; 2]]) -> HeldOutMethod {
    HeldOutMethod {
        method,
        percentile: (method == MethodKind::Percentile).then_some(99.9),
        heldout: HeldOut {
            sqnr_db: sqnr,
            clipped_fraction: 0.0,
            metrics: ErrorAccum::default().finish(),
        },
        ranges_by_fold: ranges.to_vec(),
    }
}

#[test]
fn the_heldout_rule_breaks_ties_by_variation_then_simplicity() {
    use MethodKind::*;
    let steady = [[-1.0, 1.0], [-1.0, 1.0]];
    let moving = [[-1.0, 1.0], [-1.5, 1.5]];
    // A clear winner.
    let m = [held(Minmax, 30.0, &steady), held(Mse, 30.2, &moving)];
    assert_eq!(choose(&m), Some((1, Rule::BestHeldoutSqnr)));
    // Within 0.1 dB: the steadier range.
    let m = [held(Mse, 30.05, &moving), held(Entropy, 30.0, &steady)];
    assert_eq!(choose(&m), Some((1, Rule::LeastRangeVariation)));
    // Tied on both: minmax < ema < percentile < entropy < mse.
    let m = [
        held(Mse, 30.0, &steady),
        held(Entropy, 30.0, &steady),
        held(Percentile, 30.0, &steady),
        held(Ema, 29.95, &steady),
        held(Minmax, 20.0, &steady),
    ];
    assert_eq!(choose(&m), Some((3, Rule::SimplerMethod)));
    // A variation within 1/1000 of the range is a tie.
    let near = [[-1.0, 1.0], [-1.0, 1.0005]];
    let m = [held(Percentile, 30.0, &steady), held(Minmax, 30.0, &near)];
    assert_eq!(choose(&m), Some((1, Rule::SimplerMethod)));
    // Exact quantizers tie only with each other; NaN never wins.
    let m = [
        held(Mse, f64::NAN, &steady),
        held(Entropy, f64::INFINITY, &moving),
        held(Minmax, 1e300, &steady),
    ];
    assert_eq!(choose(&m), Some((1, Rule::BestHeldoutSqnr)));
    assert_eq!(choose(&[held(Mse, f64::NAN, &steady)]), None);
}

/// Ranks [l, u] against sums of the binomial pmf written out (n small enough for f64).
#[test]
fn percentile_rank_intervals_cover_95_percent() {
    for (q, n) in [(0.5, 100u64), (0.9, 20), (0.95, 200), (0.98, 150)] {
        let pmf: Vec<f64> = {
            let mut v = vec![(1.0_f64 - q).powi(n as i32)];
            for k in 0..n {
                let next = v[k as usize] * (n - k) as f64 / (k + 1) as f64 * q / (1.0 - q);
                v.push(next);
            }
            v
        };
        let cdf: Vec<f64> = pmf
            .iter()
            .scan(0.0, |s, p| {
                *s += p;
                Some(*s)
            })
            .collect();
        let first = |p: f64| cdf.iter().position(|&c| c >= p - 1e-12).unwrap() as u64;
        let want = (first(0.025).max(1), (first(0.975) + 1).min(n));
        assert_eq!(convergence::rank_interval(q, n), want, "q {q} n {n}");
        // Coverage of X_(l) ≤ ξ_q ≤ X_(u): P(l ≤ K ≤ u − 1).
        let (l, u) = want;
        let cover: f64 = pmf[l as usize..u as usize].iter().sum();
        if u < n {
            assert!(cover >= 0.95 - 1e-9, "q {q} n {n}: {cover}");
        }
    }
    // The textbook median interval of 100 values: X_(40) to X_(61).
    assert_eq!(convergence::rank_interval(0.5, 100), (40, 61));
    assert_eq!(convergence::rank_interval(1.0, 10), (10, 10));
}

/// One far value in one batch: in sample, MSE fits it best; held out, the ranges calibrated
/// with it stretch for nothing on the other fold and those without it clip it, so the
/// in-sample winner loses more than the tie margin and the recommendation follows the
/// held-out rule.
#[test]
fn the_in_sample_winner_can_lose_held_out() {
    let mut rng = Rng(21);
    let mut batches: Vec<Vec<f32>> = (0..8).map(|_| gaussian(&mut rng, 4096)).collect();
    batches[0][17] = 60.0;
    let l = analyse(&batches, &opts());
    let v = l.validation.as_ref().unwrap();
    let in_sample_best = l
        .methods
        .iter()
        .max_by(|a, b| a.metrics.sqnr_db.total_cmp(&b.metrics.sqnr_db))
        .unwrap()
        .label();
    let rec = l.recommended.clone().unwrap();
    assert_eq!(v.recommended, rec);
    assert_eq!(l.recommended_by, Some(RecommendedBy::Heldout));
    assert_ne!(rec, in_sample_best);
    let held_of = |label: &str| {
        v.methods
            .iter()
            .find(|m| m.label() == label)
            .unwrap()
            .heldout
            .sqnr_db
    };
    let best_held = v
        .methods
        .iter()
        .map(|m| m.heldout.sqnr_db)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(held_of(&rec) >= best_held - TIE_DB);
    assert!(
        held_of(&in_sample_best) < best_held - TIE_DB,
        "{in_sample_best}"
    );
}

/// Folds with nothing to calibrate on, and a layer of zeros: no panic, no made-up figures.
#[test]
fn empty_training_folds_and_zero_layers() {
    let mut rng = Rng(13);
    let batches: Vec<Vec<f32>> = (0..8)
        .map(|b| {
            if b % 2 == 1 {
                vec![f32::NAN; 500]
            } else {
                gaussian(&mut rng, 500)
            }
        })
        .collect();
    let l = analyse(&batches, &opts());
    assert!(l.validation.is_none());
    assert_eq!(l.recommended_by, Some(RecommendedBy::InSample));
    assert!(l.notes.iter().any(|n| {
        n == "no held-out validation: the batches outside fold 0 hold no finite value"
    }));
    assert!(l.convergence.is_some());
    let l = analyse(&vec![vec![0.0; 100]; 8], &opts());
    let c = l.convergence.as_ref().unwrap();
    assert_eq!(c.verdict, Verdict::Stable);
    assert!(c.methods.iter().all(|m| m.half_range_sqnr_loss_db == 0.0));
}

/// A `.npy` of float32 `[rows, cols]` in Fortran order (file order walks axis 0 fastest).
fn fortran_npy(rows: &[Vec<f32>]) -> Vec<u8> {
    let (r, c) = (rows.len(), rows[0].len());
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': True, 'shape': ({r}, {c}), }}");
    // Magic (6) + version (2) + length (2) + dict + newline, padded to 64 bytes.
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    for j in 0..c {
        for row in rows {
            out.extend(row[j].to_le_bytes());
        }
    }
    out
}

/// Fortran order puts every value of a block in another batch than its neighbour: the cells,
/// the fold ranges and the held-out figures are those of the same array in C order.
#[test]
fn fortran_order_validates_as_c_order() {
    let mut rng = Rng(17);
    let batches: Vec<Vec<f32>> = (0..12)
        .map(|b| {
            let s = 1.0 + (b % 4) as f32;
            gaussian(&mut rng, 700).iter().map(|v| v * s).collect()
        })
        .collect();
    let c = analyse(&batches, &opts());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.npy");
    std::fs::write(&path, fortran_npy(&batches)).unwrap();
    let spec = LayerSpec {
        name: "f".into(),
        parts: vec![Location::Npy(path)],
    };
    let f = analyze_layer(&spec, &opts(), &Progress::default());
    assert!(f.error.is_none(), "{:?}", f.error);
    let (vc, vf) = (c.validation.unwrap(), f.validation.unwrap());
    assert_eq!(vc.recommended, vf.recommended);
    for (a, b) in vc.methods.iter().zip(&vf.methods) {
        assert_eq!(a.ranges_by_fold, b.ranges_by_fold, "{}", a.label());
        let d = (a.heldout.sqnr_db - b.heldout.sqnr_db).abs();
        assert!(d < 1e-9, "{}: {d}", a.label());
        assert_eq!(a.heldout.clipped_fraction, b.heldout.clipped_fraction);
    }
    let (cc, cf) = (c.convergence.unwrap(), f.convergence.unwrap());
    assert_eq!(cc.verdict, cf.verdict);
    for (a, b) in cc.methods.iter().zip(&cf.methods) {
        assert_eq!(a.ranges, b.ranges, "{}", a.label());
        let d = (a.half_range_sqnr_loss_db - b.half_range_sqnr_loss_db).abs();
        assert!(d < 1e-9, "{}: {d}", a.label());
    }
}
