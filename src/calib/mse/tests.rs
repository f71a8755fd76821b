#![allow(clippy::unwrap_used)]

use super::affine::*;
use super::symmetric::*;
use super::*;
use crate::calib::test_support::{FastVsExact, Rng, gaussian_counts, hist, maybe_far_outlier};

#[test]
fn fake_quant_is_modelopts() {
    // amax 127: scale 1, so x̂ = round-half-even(x) clamped to ±127 (narrow range).
    assert_eq!(modelopt_fake_quant(2.5, 127.0, 127.0), 2.0);
    assert_eq!(modelopt_fake_quant(3.5, 127.0, 127.0), 4.0);
    assert_eq!(modelopt_fake_quant(-0.5, 127.0, 127.0), 0.0);
    assert_eq!(modelopt_fake_quant(500.0, 127.0, 127.0), 127.0);
    assert_eq!(modelopt_fake_quant(-500.0, 127.0, 127.0), -127.0);
    // amax ≤ 2^-24: everything quantizes to 0.
    assert_eq!(modelopt_fake_quant(1e-9, 1e-8, 127.0), 0.0);
    assert_eq!(modelopt_fake_quant(1e-9, 0.0, 127.0), 0.0);
    // 4 bits: 7 levels per side.
    assert_eq!(modelopt_fake_quant(0.95, 1.0, 7.0), 1.0);
    assert!((modelopt_fake_quant(0.5, 1.0, 7.0) - 4.0 / 7.0).abs() < 1e-15);
}

/// The symmetric search as it was: one candidate at a time, plain loop.
fn symmetric_plain(abs_hist: &Histogram, bits: u8) -> Search {
    let nbins = abs_hist.bins();
    let max_bound = ((1u64 << (u32::from(bits.clamp(2, 16)) - 1)) - 1) as f64;
    let pts = weighted_centres(abs_hist);
    let start = START_BIN.min(nbins.saturating_sub(1));
    let mut best = f64::INFINITY;
    let mut best_a = abs_hist.hi.abs();
    for i in start..nbins {
        let a = abs_hist.centre(i).abs();
        let err: f64 = pts
            .iter()
            .map(|&(c, w)| {
                let d = modelopt_fake_quant(c, a, max_bound) - c;
                w * d * d
            })
            .sum();
        if err < best || i == start {
            best = err;
            best_a = a;
        }
    }
    Search {
        lo: -best_a,
        hi: best_a,
        candidates: nbins - start,
    }
}

#[test]
fn lanes_match_the_plain_loop_bit_for_bit() {
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut next = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let mut outlier: Vec<u64> = (0..2048).map(|k| if k < 300 { 3333 } else { 0 }).collect();
    outlier[2047] = 1;
    let mut cases = vec![
        gaussian_counts(0.0, 6.0, 2048, 1e9, true),
        hist(0.0, 1.0, vec![1000; 2048]),
        hist(0.0, 1.0, outlier),
        // Negative centres (not an |x| histogram) and a tiny range (amax ≤ 2^-24 lanes).
        gaussian_counts(-3.0, 5.0, 777, 1e6, false),
        hist(0.0, 2e-7, vec![5; 1000]),
    ];
    for len in [1usize, 2, 129, 130, 135, 136, 137, 600] {
        let counts = (0..len)
            .map(|_| if next(3) == 0 { 0 } else { next(1 << 20) })
            .collect();
        cases.push(hist(0.0, 1.0 + next(100) as f64, counts));
    }
    for h in &cases {
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(h).into_iter().unzip();
        for bits in [2u8, 4, 8, 16] {
            assert_eq!(symmetric(h, bits), symmetric_plain(h, bits), "bits {bits}");
            let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
            // Lanes of scattered candidates (not only consecutive ones), both builds.
            let mut amax = [0.0; LANES];
            for a in &mut amax {
                *a = h.centre(next(h.bins() as u64) as usize).abs().max(1e-3);
            }
            let want = amax.map(|a| symmetric_sse(&cs, &ws, a, max_bound).to_bits());
            let got = sse_lanes(&cs, &ws, &amax, max_bound).map(f64::to_bits);
            assert_eq!(got, want, "bits {bits}");
            #[cfg(target_arch = "x86_64")]
            if let Some(cpu) = crate::simd::avx2() {
                let got = sse_lanes_avx2(cpu, &cs, &ws, &amax, max_bound);
                assert_eq!(got.map(f64::to_bits), want, "bits {bits}, AVX2");
            }
        }
    }
}

/// A histogram's range: mostly [0, a] over 7 decades, sometimes amax ≤ 2^-24 for the lower
/// candidates (x̂ = 0 there), sometimes a negative centre (not an |x| histogram).
fn random_range(rng: &mut Rng) -> (f64, f64) {
    match rng.below(8) {
        0 => (0.0, 2e-7 * (1 + rng.below(20)) as f64),
        1 => (-(rng.below(5) as f64) - 0.5, 1.0 + rng.below(9) as f64),
        _ => (
            0.0,
            10f64.powi(rng.below(7) as i32 - 3) * (1 + rng.below(9)) as f64,
        ),
    }
}

/// Random |x|-histogram counts of one of several shapes: spikes, sparse, Gaussian-like,
/// heavy tail, tiny counts, huge counts near 2^60, all equal; sometimes a far outlier.
fn random_counts(rng: &mut Rng, len: usize) -> Vec<u64> {
    let shape = rng.below(7);
    let scale = 10f64.powi(rng.below(13) as i32);
    let spread = 1.0 + rng.below(len as u64 + 1) as f64;
    let mut c: Vec<u64> = (0..len)
        .map(|k| {
            let x = k as f64 / spread;
            match shape {
                0 => {
                    if rng.below(50) == 0 {
                        1 + rng.below(1 + scale as u64)
                    } else {
                        rng.below(3)
                    }
                }
                1 => {
                    if rng.below(30) == 0 {
                        1 + rng.below(1000)
                    } else {
                        0
                    }
                }
                2 => (scale * (-0.5 * x * x).exp()) as u64 + rng.below(3),
                3 => (scale / (1.0 + x * x)) as u64,
                4 => rng.below(3),
                5 => (1u64 << 60) - rng.below(1 << 40),
                _ => 7,
            }
        })
        .collect();
    maybe_far_outlier(rng, &mut c);
    c
}

#[test]
fn fast_search_picks_the_exact_searchs_range() {
    let mut rng = Rng(0x3a5e_f00d_5eed_0003);
    let mut gap = FastVsExact::default();
    let (mut fast_searches, mut widest) = (0usize, 0usize);
    for case in 0..300 {
        let len = match case % 10 {
            0..=2 => 2048,
            3 => 100,
            4 => 129,
            5 => 130,
            _ => 1 + rng.below(900) as usize,
        };
        // Mostly the bits where the fast path applies; all of 2..=16 appear.
        let bits = if case % 3 == 0 {
            2 + rng.below(15) as u8
        } else {
            2 + rng.below(8) as u8
        };
        let (lo, hi) = random_range(&mut rng);
        let h = hist(lo, hi, random_counts(&mut rng, len));
        let got = symmetric(&h, bits);
        let want = symmetric_plain(&h, bits);
        assert_eq!(
            got, want,
            "case {case}: len {len}, bits {bits}, [{lo}, {hi}]"
        );
        // The window's premise: every candidate's fast error is well within tol/2.
        let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
        let start = START_BIN.min(len.saturating_sub(1));
        let amax: Vec<f64> = (start..len).map(|i| h.centre(i).abs()).collect();
        let Some((fast, tol)) = fast_scores_pruned(&h, (&cs, &ws), &amax, max_bound, false) else {
            continue;
        };
        fast_searches += 1;
        widest = widest.max(crate::calib::near_minimum(&fast, tol).count());
        for (&f, &a) in fast.iter().zip(&amax) {
            let e = symmetric_sse(&cs, &ws, a, max_bound);
            gap.add_within(f, e, tol, format_args!("case {case}, amax {a}"));
        }
    }
    eprintln!(
        "{fast_searches} fast searches, widest re-check window {widest}, \
         max |fast − exact| / tol = {:e}",
        gap.worst_ratio
    );
    gap.report("candidates");
    assert!(fast_searches > 100, "{fast_searches}");
}

/// The AVX2 fast score against its portable twin, directly: wherever its checks all pass it
/// gives [`SymContext::sse_fast`]'s value bit for bit, and where one fails (c·scale exactly
/// at some k + ½) it declines, leaving the candidate to `sse_fast`. Random histograms of every
/// shape and size, 2 to 16 bits, candidates at centres and edges; and one made of ties.
#[cfg(target_arch = "x86_64")]
#[test]
fn sse_fast_avx2_is_the_portable_fast_score_bit_for_bit() {
    let Some(cpu) = crate::simd::avx2() else {
        // No AVX2 on this CPU: nothing to compare.
        return;
    };
    let mut rng = Rng(0xa5a5_f00d_0bad_0007);
    let mut s = Scratch::default();
    let (mut same, mut declined) = (0usize, 0usize);
    for case in 0..400 {
        let len = match case % 8 {
            0 => 2048,
            1 => 1 + rng.below(4) as usize,
            2 => 129 + rng.below(8) as usize,
            _ => 1 + rng.below(1200) as usize,
        };
        let bits = 2 + rng.below(15) as u8;
        let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
        let (lo, hi) = random_range(&mut rng);
        let h = hist(lo, hi, random_counts(&mut rng, len));
        let Some(ctx) = SymContext::new(&h, max_bound) else {
            continue;
        };
        for _ in 0..24 {
            let i = rng.below(len as u64 + 1) as usize;
            let a = if rng.below(2) == 0 {
                h.centre(i)
            } else {
                h.edge(i)
            };
            let a = a.abs();
            if a <= MODELOPT_ZERO_AMAX {
                continue;
            }
            let want = ctx.sse_fast(a, &mut s);
            match ctx.sse_fast_avx2(cpu, a) {
                Some(got) => {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "case {case}: len {len}, bits {bits}, [{lo}, {hi}], amax {a}"
                    );
                    same += 1;
                }
                None => declined += 1,
            }
        }
    }
    // Centres j + ½ and scale 1: every boundary check meets c·scale = k + ½ exactly.
    let ctx = SymContext::new(&hist(0.0, 64.0, vec![1; 64]), 127.0).expect("nonempty");
    assert_eq!(ctx.sse_fast_avx2(cpu, 127.0), None);
    // x̂ = round-half-even(c) for c = j + ½: an error of ¼ in each of the 64 bins.
    assert_eq!(ctx.sse_fast(127.0, &mut s), 16.0);
    eprintln!("{same} candidates scored alike, {declined} declined");
    assert!(
        same > 5000 && declined > 0,
        "{same} alike, {declined} declined"
    );
}

/// Skipping candidates by their tail floor leaves the re-check window exactly as scoring
/// every candidate does: each keeps its fast error bit for bit, or is ∞ with a fast error
/// beyond the window. Logs how many are skipped.
#[test]
fn pruned_fast_pass_keeps_the_recheck_window() {
    let mut rng = Rng(0x0b5e_55ed_1ce5_0004);
    let (mut searches, mut cands, mut skipped, mut rechecked) = (0usize, 0, 0, 0);
    // Typical shapes alone (Gaussian-like, heavy tail; 8 bits, 2048 bins).
    let (mut typical, mut typical_skipped) = (0usize, 0usize);
    for case in 0..400 {
        let len = match case % 4 {
            0 | 1 => 2048,
            2 => 129 + rng.below(1900) as usize,
            _ => 1 + rng.below(900) as usize,
        };
        let bits = if case % 4 == 0 {
            8
        } else {
            2 + rng.below(8) as u8
        };
        let (lo, hi) = random_range(&mut rng);
        let h = hist(lo, hi, random_counts(&mut rng, len));
        let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
        let start = START_BIN.min(len.saturating_sub(1));
        let amax: Vec<f64> = (start..len).map(|i| h.centre(i).abs()).collect();
        let Some((all, tol)) = fast_scores_pruned(&h, (&cs, &ws), &amax, max_bound, false) else {
            continue;
        };
        let (pruned, tol2) = fast_scores(&h, (&cs, &ws), &amax, max_bound).unwrap();
        assert_eq!(tol.to_bits(), tol2.to_bits());
        let m = all.iter().copied().fold(f64::INFINITY, f64::min);
        let mut here = 0;
        for (k, (&a, &p)) in all.iter().zip(&pruned).enumerate() {
            if a.to_bits() != p.to_bits() {
                assert!(
                    p == f64::INFINITY && a > m + tol,
                    "case {case}: len {len}, bits {bits}, k {k}: {a} vs {p}, min {m}, tol {tol}"
                );
                here += 1;
            }
        }
        let want: Vec<usize> = crate::calib::near_minimum(&all, tol).collect();
        let got: Vec<usize> = crate::calib::near_minimum(&pruned, tol).collect();
        assert_eq!(got, want, "case {case}: len {len}, bits {bits}");
        searches += 1;
        cands += all.len();
        skipped += here;
        rechecked += want.len();
    }
    // A Gaussian and a heavy tail, the shapes of real activations.
    for (k, h) in [
        gaussian_counts(0.0, 6.0, 2048, 1e9, true),
        gaussian_counts(0.0, 8.0, 2048, 1e6, true),
        hist(
            0.0,
            20.0,
            (0..2048)
                .map(|j| (1e6 / (1.0 + (j as f64 / 40.0).powi(2))) as u64)
                .collect(),
        ),
    ]
    .iter()
    .enumerate()
    {
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(h).into_iter().unzip();
        let amax: Vec<f64> = (START_BIN..2048).map(|i| h.centre(i)).collect();
        let (pruned, _) = fast_scores(h, (&cs, &ws), &amax, 127.0).expect("fast path");
        let n = pruned.iter().filter(|f| **f == f64::INFINITY).count();
        eprintln!("typical shape {k}: {n} of {} skipped", amax.len());
        typical += amax.len();
        typical_skipped += n;
    }
    eprintln!(
        "{searches} fast searches, {cands} candidates: {skipped} skipped by the tail floor, \
         {rechecked} re-checked exactly; typical shapes: {typical_skipped} of {typical} skipped"
    );
    assert!(searches > 100, "{searches}");
    assert!(skipped > cands / 10, "{skipped} of {cands}");
    assert!(
        typical_skipped > typical / 3,
        "{typical_skipped} of {typical}"
    );
}

/// The exact scoring (where the fast one does not apply) with candidates skipped by their
/// tail floor: every other error is the same bit for bit, a skipped one is above the least
/// (so never the first least), and the search picks what scoring every candidate picks.
/// Logs how many are skipped.
#[test]
fn pruned_exact_pass_keeps_the_choice() {
    let mut rng = Rng(0x5eed_e8ac_7000_0006);
    let (mut searches, mut cands, mut skipped) = (0usize, 0usize, 0usize);
    for case in 0..300 {
        let len = match case % 3 {
            0 => 2048,
            _ => 1 + rng.below(1200) as usize,
        };
        // Many bits on few bins: where the exact scoring runs.
        let bits = 6 + rng.below(11) as u8;
        let (lo, hi) = random_range(&mut rng);
        let h = hist(lo, hi, random_counts(&mut rng, len));
        let what = format!("case {case}: len {len}, bits {bits}, [{lo}, {hi}]");
        assert_eq!(symmetric(&h, bits), symmetric_plain(&h, bits), "{what}");
        let max_bound = ((1u64 << (bits - 1)) - 1) as f64;
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
        let start = START_BIN.min(len.saturating_sub(1));
        let amax: Vec<f64> = (start..len).map(|i| h.centre(i).abs()).collect();
        let Some((ctx, tol, _)) = sym_bounds(&h, &amax, max_bound) else {
            continue;
        };
        let all = exact_scores((&cs, &ws), &amax, max_bound, None);
        let pruned = exact_scores((&cs, &ws), &amax, max_bound, Some((&ctx, tol)));
        let m = all.iter().copied().fold(f64::INFINITY, f64::min);
        for (k, (&a, &p)) in all.iter().zip(&pruned).enumerate() {
            if a.to_bits() != p.to_bits() {
                assert!(
                    p == f64::INFINITY && a > m,
                    "{what}, k {k}: {a} vs {p}, least {m}"
                );
                skipped += 1;
            }
        }
        searches += 1;
        cands += all.len();
    }
    eprintln!("{searches} exact searches, {cands} candidates: {skipped} skipped");
    assert!(searches > 100, "{searches}");
    assert!(skipped > cands / 10, "{skipped} of {cands}");
}

#[test]
fn symmetric_counts_every_candidate() {
    for (bins, want) in [(2048, 1920), (300, 172), (129, 1), (100, 1), (1, 1)] {
        let s = symmetric(&hist(0.0, 1.0, vec![3; bins]), 8);
        assert_eq!(s.candidates, want, "{bins} bins");
    }
}

#[test]
fn symmetric_uniform_picks_just_below_the_max() {
    // Uniform density on [0, 1]: clipping at a costs (1−a)³/3, rounding a·Δ²/12 with
    // Δ = a/127, so d/da = 0 at 1 − a = a/254, a* = 254/255 = 0.99608 (bin 2039.98).
    // The histogram sees only bin centres, so allow a few bins.
    let h = hist(0.0, 1.0, vec![1000; 2048]);
    let s = symmetric(&h, 8);
    assert!((s.hi - 254.0 / 255.0).abs() < 4.0 * h.width(), "{s:?}");
}

#[test]
fn symmetric_clips_a_single_far_outlier() {
    // 10⁶ values in [0, 0.15) and one at 1.0: at a = 1 the bulk's rounding error is about
    // 10⁶·(1/127)²/12 ≈ 5.2, clipping the outlier to ~0.15 costs 0.85² ≈ 0.72.
    let mut counts: Vec<u64> = (0..2048).map(|k| if k < 300 { 3333 } else { 0 }).collect();
    counts[2047] = 1;
    let h = hist(0.0, 1.0, counts);
    let s = symmetric(&h, 8);
    assert!(s.hi < h.edge(400), "{s:?}");
    assert!(s.hi > h.edge(250), "{s:?}");
}

/// The continuous MSE of int8 narrow symmetric quantization of N(0,1) clipped at a:
/// clipping 2[(1+a²)Q(a) − aφ(a)] plus rounding (a/127)²/12 · P(|x| < a).
fn gaussian_mse(a: f64) -> f64 {
    let phi = (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let q = 0.5 * statrs::function::erf::erfc(a / std::f64::consts::SQRT_2);
    let delta = a / 127.0;
    2.0 * ((1.0 + a * a) * q - a * phi) + delta * delta / 12.0 * (1.0 - 2.0 * q)
}

#[test]
fn symmetric_gaussian_is_near_the_analytic_optimum() {
    // Minimise the continuous error by a fine scan (an independent computation), then
    // check the histogram search is close: the objective is flat near its minimum, and
    // the search sees bin centres, not a density.
    let mut a_star = 2.0;
    let mut e_star = f64::INFINITY;
    for k in 0..30_000 {
        let a = 2.0 + k as f64 * 1e-4;
        let e = gaussian_mse(a);
        if e < e_star {
            (a_star, e_star) = (a, e);
        }
    }
    let h = gaussian_counts(0.0, 6.0, 2048, 1e9, true);
    let s = symmetric(&h, 8);
    eprintln!(
        "gaussian: analytic a* = {a_star:.4}, histogram MSE amax = {:.4}",
        s.hi
    );
    assert!((3.5..4.3).contains(&a_star), "analytic {a_star}");
    assert!((s.hi - a_star).abs() < 0.15, "{s:?} vs {a_star}");
    // The histogram's choice is near-optimal for the continuous error too.
    assert!(gaussian_mse(s.hi) < 1.02 * e_star);
}

#[test]
fn degenerate_histograms_are_finite() {
    let cases = [
        hist(0.0, 1.0, vec![0; 2048]),
        hist(0.0, 1.0, vec![5]),
        hist(0.0, 1.0, vec![]),
        hist(-1.0, 1.0, vec![0, 7, 0]),
        hist(2.0, 3.0, vec![1; 2048]),
        hist(-3.0, -2.0, vec![1; 2048]),
        Histogram::new(0.0, 0.0, 2048),
        Histogram::new(-1e-30, 1e-30, 2048),
    ];
    for h in &cases {
        for bits in [2u8, 8, 16] {
            for s in [affine(h, bits), symmetric(h, bits)] {
                assert!(
                    s.lo.is_finite() && s.hi.is_finite() && s.lo <= s.hi,
                    "{s:?}"
                );
            }
        }
    }
}

#[test]
fn affine_sse_equals_a_plain_qdq_loop() {
    let h = gaussian_counts(-3.0, 5.0, 512, 1e6, false);
    let pts = weighted_centres(&h);
    for i in (0..=192).step_by(7) {
        for j in (150..=512).step_by(11) {
            for bits in [8u8, 3] {
                let (lo, hi) = (h.edge(i), h.edge(j));
                let qp = QParams::new(Scheme::Affine, bits, lo, hi);
                let mut plain = 0.0;
                for &(c, w) in &pts {
                    let d = qp.qdq(c) - c;
                    plain += w * d * d;
                }
                assert_eq!(affine_sse(&pts, bits, lo, hi).to_bits(), plain.to_bits());
            }
        }
    }
}

#[test]
fn affine_lanes_match_the_one_range_loop_bit_for_bit() {
    let mut s = 0x0dd_ba11_cafe_f00du64;
    let mut next = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let cases = [
        gaussian_counts(-3.0, 5.0, 512, 1e6, false),
        gaussian_counts(0.0, 5.0, 300, 1e6, true),
        hist(-2.0, -1.0, vec![7; 100]),
        hist(-1e-9, 1e-9, vec![3; 64]),
        hist(
            -1.0,
            1.0,
            (0..999).map(|k| (k * 7919 % 13) as u64).collect(),
        ),
    ];
    for h in &cases {
        let pts = weighted_centres(h);
        let (cs, ws): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
        let nb = h.bins() as u64;
        for bits in [2u8, 4, 8, 16] {
            for _ in 0..20 {
                // Ranges of every kind: nested, disjoint, empty (lo = hi), reversed.
                let ranges: [(f64, f64); LANES] = std::array::from_fn(|_| {
                    (h.edge(next(nb + 1) as usize), h.edge(next(nb + 1) as usize))
                });
                let qps = ranges.map(|(lo, hi)| QParams::new(Scheme::Affine, bits, lo, hi));
                let want = ranges.map(|(lo, hi)| affine_sse(&pts, bits, lo, hi).to_bits());
                let got = affine_sse_lanes(&cs, &ws, &qps).map(f64::to_bits);
                assert_eq!(got, want, "bits {bits}: {ranges:?}");
                #[cfg(target_arch = "x86_64")]
                if let Some(cpu) = crate::simd::avx2() {
                    let got = affine_sse_lanes_avx2(cpu, &cs, &ws, &qps);
                    assert_eq!(got.map(f64::to_bits), want, "bits {bits}, AVX2");
                }
            }
        }
    }
}

/// Exhaustive affine search over all pairs: the reference for the coarse-to-fine one.
fn exhaustive_affine(h: &Histogram, bits: u8) -> (f64, f64, f64) {
    let pts = weighted_centres(h);
    let z = ((0.0 - h.lo) * (h.bins() as f64 / (h.hi - h.lo))).clamp(0.0, (h.bins() - 1) as f64)
        as usize;
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for i in 0..=z {
        for j in z..=h.bins() {
            let e = affine_sse(&pts, bits, h.edge(i), h.edge(j));
            if e < best.0 {
                best = (e, h.edge(i), h.edge(j));
            }
        }
    }
    best
}

#[test]
fn affine_matches_exhaustive_search_on_smooth_histograms() {
    // 256-bin histograms (exhaustive is ~16k pairs): a skewed bulk with a long right tail
    // and an outlier, and a Gaussian. On such unimodal error surfaces the coarse-to-fine
    // search must find the exhaustive minimum.
    let mut skew: Vec<u64> = (0..256)
        .map(|k| {
            let x = (k as f64 - 60.0) / 20.0;
            (1e5 * (-0.5 * x * x).exp() + 1e4 * (-(k as f64) / 40.0).exp()) as u64
        })
        .collect();
    skew[255] += 2;
    let cases = [
        hist(-1.0, 3.0, skew),
        gaussian_counts(-5.0, 4.0, 256, 1e7, false),
    ];
    for h in &cases {
        for bits in [8u8, 4] {
            let s = affine(h, bits);
            let (e_best, lo, hi) = exhaustive_affine(h, bits);
            let pts = weighted_centres(h);
            let e = affine_sse(&pts, bits, s.lo, s.hi);
            assert!(e <= e_best * (1.0 + 1e-12), "{s:?} vs ({lo}, {hi})");
        }
    }
}

#[test]
fn affine_2048_bins_is_a_local_minimum() {
    // Full-size check of the coarse-to-fine search: no pair within ±12 bins of its
    // answer scores lower (625 pairs, cheap next to the 2.1M of an exhaustive search).
    for (lo, hi) in [(-5.0, 5.0), (-2.0, 6.0)] {
        let h = gaussian_counts(lo, hi, 2048, 1e9, false);
        let s = affine(&h, 8);
        let pts = weighted_centres(&h);
        let e = affine_sse(&pts, 8, s.lo, s.hi);
        let i = ((s.lo - h.lo) / h.width()).round() as usize;
        let j = ((s.hi - h.lo) / h.width()).round() as usize;
        let z = ((0.0 - h.lo) / h.width()) as usize;
        for ii in i.saturating_sub(12)..=(i + 12).min(z) {
            for jj in (j.saturating_sub(12)).max(z)..=(j + 12).min(2048) {
                let e2 = affine_sse(&pts, 8, h.edge(ii), h.edge(jj));
                assert!(e2 >= e, "({ii}, {jj}) beats {s:?}: {e2} < {e}");
            }
        }
    }
}

#[test]
fn affine_clips_a_far_outlier_and_counts_pairs() {
    let mut h = gaussian_counts(-4.0, 20.0, 2048, 1e7, false);
    h.counts[2047] += 1;
    let s = affine(&h, 8);
    assert!(s.hi < 8.0 && s.hi > 2.5, "{s:?}");
    assert!(s.lo < -2.5, "{s:?}");
    // Zero is in bin 341: level 1 scores i ∈ {0, 64, …, 320, 341} (7) × j ∈ {341, 405, …,
    // 2013, 2048} (28); levels 2 and 3 add at most 17² − 1 pairs each.
    let coarse = 7 * 28;
    assert!(
        s.candidates > coarse && s.candidates <= coarse + 2 * 288,
        "{s:?}"
    );
}

/// A random signed histogram: [`random_counts`] over a range straddling 0, one-sided
/// either way, or below 2^-24 wide (degenerate quantizers).
fn random_signed(rng: &mut Rng, len: usize) -> Histogram {
    let end = |rng: &mut Rng| (1 + rng.below(9)) as f64;
    let (lo, hi) = match rng.below(6) {
        0 => (0.5 * end(rng), 10.0 * end(rng)),
        1 => (-end(rng), 0.0),
        2 => (-1e-9 * end(rng), 1e-9 * end(rng)),
        _ => (
            -end(rng) + 0.5,
            10f64.powi(rng.below(5) as i32 - 2) * end(rng),
        ),
    };
    hist(lo, hi, random_counts(rng, len))
}

/// Skipping pairs by their clip floor keeps every other pair's error bit for bit, and a
/// skipped pair's error is above the least error known (so it is never the first least);
/// the search picks the same range. The floor is below every pair's computed error (the
/// premise). Logs how many pairs are skipped.
#[test]
fn pruned_affine_search_keeps_every_choice() {
    let mut rng = Rng(0x0aff_1e55_c1a9_0005);
    let (mut total, mut skipped, mut positive) = (0usize, 0usize, 0usize);
    for case in 0..200 {
        let len = match case % 4 {
            0 => 2048,
            1 => 256 + rng.below(1800) as usize,
            _ => 1 + rng.below(600) as usize,
        };
        let bits = 2 + rng.below(15) as u8;
        let h = random_signed(&mut rng, len);
        let what = format!("case {case}: len {len}, bits {bits}, [{}, {}]", h.lo, h.hi);
        assert_eq!(
            affine_pruned(&h, bits, true),
            affine_pruned(&h, bits, false),
            "{what}"
        );
        let (cs, ws): (Vec<f64>, Vec<f64>) = weighted_centres(&h).into_iter().unzip();
        if cs.is_empty() {
            continue;
        }
        let floor = ClipFloor::new(&cs, &ws);
        // A grid of pairs as a level scores them, at most 17 × 17.
        let (z, nb) = (h.bin_of(0.0), h.bins());
        let stride = 1 + len / 16;
        let pairs: Vec<(usize, usize)> = grid(0, z, stride)
            .flat_map(|i| grid(z, nb, stride).map(move |j| (i, j)))
            .collect();
        let all = pair_errors((&cs, &ws), bits, &h, &pairs, f64::INFINITY, None);
        // Known before: nothing, or some pair's error (a previous level's best).
        let known = match rng.below(3) {
            0 => f64::INFINITY,
            _ => all[rng.below(all.len() as u64) as usize],
        };
        let pruned = pair_errors((&cs, &ws), bits, &h, &pairs, known, Some(&floor));
        let m = all.iter().copied().fold(known, f64::min);
        for (k, ((&a, &p), &(i, j))) in all.iter().zip(&pruned).zip(&pairs).enumerate() {
            if a.to_bits() != p.to_bits() {
                assert!(
                    p == f64::INFINITY && a > m,
                    "{what}, pair {k}: {a} vs {p}, least {m}"
                );
                skipped += 1;
            }
            let qp = QParams::new(Scheme::Affine, bits, h.edge(i), h.edge(j));
            let f = floor.floor(&cs, &qp);
            assert!(
                f.partial_cmp(&a) != Some(std::cmp::Ordering::Greater),
                "{what}, ({i}, {j}): floor {f} > error {a}"
            );
            positive += usize::from(f > 0.0);
        }
        total += pairs.len();
    }
    eprintln!("{total} pairs: {positive} with a positive floor, {skipped} skipped");
    assert!(skipped > total / 10, "{skipped} of {total}");
}

#[test]
fn affine_one_sided_only_moves_hi() {
    // min ≥ 0: zero bin 0, so lo is always edge(0) and the scheme widens it to 0.
    let h = gaussian_counts(0.0, 5.0, 2048, 1e7, true);
    let s = affine(&h, 8);
    assert_eq!(s.lo, 0.0);
    assert!(s.hi > 3.0 && s.hi < 5.0, "{s:?}");
    // j ∈ {0, 64, …, 2048}: 33 pairs; then stride 8 over ±64 and stride 1 over ±8 around
    // the best, 17 each, of which 3 were already scored.
    assert_eq!(s.candidates, 33 + 14 + 14, "{s:?}");
}
