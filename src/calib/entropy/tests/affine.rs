//! The affine (ONNX Runtime) entropy search against a literal port of ONNX Runtime's
//! `get_entropy_threshold`, its fast search against the exact one, and closed forms.

use super::*;

/// A line-by-line port of ONNX Runtime's `HistogramCollector.get_entropy_threshold`
/// (onnxruntime 1.32, quantization/calibrate.py) with its `smooth_distribution` and `entropy`,
/// in numpy's types: int64 counts and q, float32 smoothing, normalising, `rel_entr` and sums
/// (numpy's pairwise order), `np.log` on float32 as the f64 log rounded, the float32
/// divergences kept in a float64 array and `np.argmin` (first NaN, else first minimum), then
/// the thresholds clipped to [min, max]. `hist`/`edges` as `np.histogram` returns them.
fn ort_port(hist: &[u64], edges: &[f32], min_value: f32, max_value: f32, nq: usize) -> (f32, f32) {
    let hist: Vec<i64> = hist.iter().map(|&c| c as i64).collect();
    let num_bins = hist.len();
    let zero_bin_index = num_bins / 2;
    let num_half_quantized_bin = nq / 2;
    let mut kl_divergence = vec![0.0f64; zero_bin_index - num_half_quantized_bin + 1];
    let mut thresholds = vec![(0.0f32, 0.0f32); kl_divergence.len()];
    for i in num_half_quantized_bin..zero_bin_index + 1 {
        let start_index = zero_bin_index - i;
        let end_index = (zero_bin_index + i + 1).min(num_bins);
        thresholds[i - num_half_quantized_bin] = (edges[start_index], edges[end_index]);
        let sliced_distribution = hist[start_index..end_index].to_vec();
        let mut p = sliced_distribution.clone();
        let left_outliers_count: i64 = hist[..start_index].iter().sum();
        let right_outliers_count: i64 = hist[end_index..].iter().sum();
        p[0] += left_outliers_count;
        let last = p.len() - 1;
        p[last] += right_outliers_count;
        let nonzeros: Vec<i64> = p.iter().map(|&x| i64::from(x != 0)).collect();
        let mut quantized_bins = vec![0i64; nq];
        let num_merged_bins = sliced_distribution.len() / nq;
        for (index, qb) in quantized_bins.iter_mut().enumerate() {
            let start = index * num_merged_bins;
            let end = start + num_merged_bins;
            *qb = sliced_distribution[start..end].iter().sum();
        }
        quantized_bins[nq - 1] += sliced_distribution[nq * num_merged_bins..]
            .iter()
            .sum::<i64>();
        let mut q = vec![0i64; p.len()];
        for (index, &qb) in quantized_bins.iter().enumerate() {
            let start = index * num_merged_bins;
            let end = start + num_merged_bins;
            let norm: i64 = nonzeros[start..end].iter().sum();
            if norm != 0 {
                // int64 / int64 is float64; assigning it to the int64 array truncates.
                q[start..end].fill((qb as f64 / norm as f64) as i64);
            }
        }
        let div = match (smooth_distribution(&p), smooth_distribution(&q)) {
            (Some(p), Some(q)) => ort_entropy(p, q),
            _ => f32::INFINITY,
        };
        kl_divergence[i - num_half_quantized_bin] = f64::from(div);
    }
    let min_kl_divergence_idx = kl_divergence
        .iter()
        .position(|d| d.is_nan())
        .unwrap_or_else(|| {
            let mut b = 0;
            for (k, d) in kl_divergence.iter().enumerate() {
                if *d < kl_divergence[b] {
                    b = k;
                }
            }
            b
        });
    let mut optimal_threshold = thresholds[min_kl_divergence_idx];
    if optimal_threshold.0 < min_value {
        optimal_threshold.0 = min_value;
    }
    if optimal_threshold.1 > max_value {
        optimal_threshold.1 = max_value;
    }
    optimal_threshold
}

/// ORT's `smooth_distribution(p, eps=0.0001)` (quant_utils.py) in numpy's float32.
fn smooth_distribution(p: &[i64]) -> Option<Vec<f32>> {
    let eps = 0.0001f64;
    let is_zeros: Vec<f32> = p.iter().map(|&x| f32::from(u8::from(x == 0))).collect();
    let is_nonzeros: Vec<f32> = p.iter().map(|&x| f32::from(u8::from(x != 0))).collect();
    let n_zeros: f32 = pairwise_sum(&is_zeros);
    let n_nonzeros = p.len() as f32 - n_zeros;
    if n_nonzeros == 0.0 {
        return None;
    }
    let eps1 = eps * f64::from(n_zeros) / f64::from(n_nonzeros);
    assert!(eps1 < 1.0);
    let mut hist: Vec<f32> = p.iter().map(|&x| x as f32).collect();
    for (h, (z, nz)) in hist.iter_mut().zip(is_zeros.iter().zip(&is_nonzeros)) {
        *h += eps as f32 * z + (-eps1) as f32 * nz;
    }
    assert!(hist.iter().all(|&h| h > 0.0));
    Some(hist)
}

/// ORT's `entropy(pk, qk)` (calibrate.py: scipy's, simplified) in numpy's float32.
fn ort_entropy(pk: Vec<f32>, qk: Vec<f32>) -> f32 {
    let ps = pairwise_sum(&pk);
    let pk: Vec<f32> = pk.iter().map(|&x| 1.0 * x / ps).collect();
    let qs = pairwise_sum(&qk);
    let qk: Vec<f32> = qk.iter().map(|&x| 1.0 * x / qs).collect();
    let vec: Vec<f32> = pk
        .iter()
        .zip(&qk)
        .map(|(&p, &q)| {
            let mut res = p * (f64::from(p / q).ln() as f32);
            if p == 0.0 && q >= 0.0 {
                res = 0.0;
            }
            if !(p > 0.0 && q > 0.0) {
                res = f32::INFINITY;
            }
            res
        })
        .collect();
    pairwise_sum(&vec)
}

/// An ORT entropy histogram: `counts` over [−T, T] for a random float32 T, and a random data
/// range [min, max] of float32 values inside it (its ends sometimes ±T, sometimes 0,
/// sometimes between edges).
fn ort_hist(rng: &mut Rng, counts: Vec<u64>) -> (Histogram, f64, f64) {
    let t = (1 + rng.below(1000)) as f32 / [1.0, 7.0, 300.0][rng.below(3) as usize];
    let h = NumpyBins::new(-t, t, counts.len()).histogram(counts);
    let end = |r: &mut Rng| match r.below(3) {
        0 => t,
        1 => t * (r.below(1000) as f32 + 0.37) / 1000.0,
        _ => 0.0,
    };
    let (a, b) = (end(rng), end(rng));
    (h, f64::from(-a), f64::from(b))
}

/// The affine search's (lo, hi) on an ORT entropy histogram as [`ort_port`] computes it, or
/// None where ORT has no window (it raises).
fn ort_port_range(h: &Histogram, min: f64, max: f64, bits: u8) -> Option<(f64, f64)> {
    let nq = 1usize << (clamp_bits(bits) - 1);
    if nq / 2 > h.bins() / 2 {
        return None;
    }
    let bins = NumpyBins::new(h.lo as f32, h.hi as f32, h.bins());
    let (lo, hi) = ort_port(&h.counts, bins.edges(), min as f32, max as f32, nq);
    Some((f64::from(lo), f64::from(hi)))
}

/// Asserts that the affine search picks what the literal port of ORT picks (or, where ORT has
/// no window, that it scored none and kept [min, max]); false in that case.
fn picks_ort_s_window(
    h: &Histogram,
    min: f64,
    max: f64,
    bits: u8,
    what: std::fmt::Arguments,
) -> bool {
    let got = affine(h, min, max, bits);
    let Some(want) = ort_port_range(h, min, max, bits) else {
        assert_eq!((got.lo, got.hi, got.candidates), (min, max, 0), "{what}");
        return false;
    };
    assert_eq!((got.lo, got.hi), want, "{what}, bits {bits}");
    assert_eq!(
        got.candidates,
        h.bins() / 2 - (1 << (clamp_bits(bits) - 1)) / 2 + 1
    );
    true
}

/// The exact divergence of ORT's window [l, r) (`ort_window_kl`'s, in f64 throughout with
/// numpy's summation order): what the fast form approximates.
fn exact_kl(slice: &[u64], below: u64, above: u64, nq: usize) -> f64 {
    let len = slice.len();
    let mut p: Vec<f64> = slice.iter().map(|&c| c as f64).collect();
    p[0] += below as f64;
    p[len - 1] += above as f64;
    let merged = len / nq;
    let mut q = vec![0.0f64; len];
    for idx in 0..nq {
        let (s, e) = (idx * merged, idx * merged + merged);
        let mut m = count_sum(&slice[s..e]);
        if idx == nq - 1 {
            m = m.saturating_add(count_sum(&slice[nq * merged..]));
        }
        let norm = p[s..e].iter().filter(|&&x| x != 0.0).count();
        if norm != 0 {
            q[s..e].fill((m as f64 / norm as f64).trunc());
        }
    }
    let smooth = |v: &mut [f64]| {
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        let nonzeros = v.len() - zeros;
        let eps1 = ORT_EPS * zeros as f64 / nonzeros.max(1) as f64;
        if nonzeros == 0 || eps1 >= 1.0 {
            return false;
        }
        for x in v.iter_mut() {
            *x = if *x == 0.0 { ORT_EPS } else { *x - eps1 };
        }
        true
    };
    if !smooth(&mut p) || !smooth(&mut q) {
        return f64::INFINITY;
    }
    let (ps, qs) = (pairwise_sum(&p), pairwise_sum(&q));
    let terms: Vec<f64> = p
        .iter()
        .zip(&q)
        .map(|(&pj, &qj)| rel_entr(pj / ps, qj / qs))
        .collect();
    pairwise_sum(&terms)
}

/// A window, its fast divergence and its exact one.
type Scored = ((usize, usize), f64, f64);

/// The fast pass's tolerance, and every window of the affine search on `h` scored both ways.
fn fast_and_exact(h: &Histogram, nq: usize) -> (f64, Vec<Scored>) {
    let ctx = AffineContext::new(&h.counts, nq);
    let scores = affine_windows(h.bins(), nq)
        .into_iter()
        .map(|(l, r)| ((l, r), ctx.fast_kl(l, r), window_exact_kl(&ctx, (l, r))))
        .collect();
    (ctx.tolerance(), scores)
}

/// [`exact_kl`] of window `[l, r)` of the context's histogram.
fn window_exact_kl(ctx: &AffineContext, (l, r): (usize, usize)) -> f64 {
    exact_kl(&ctx.h[l..r], ctx.mass[l], ctx.total - ctx.mass[r], ctx.nq)
}

#[test]
fn affine_matches_a_literal_port_of_onnx_runtime() {
    let mut rng = Rng(0x0a7e_0e17_5eed_0001);
    let mut shapes: Vec<Vec<u64>> = Vec::new();
    // A bell around the zero bin with noise and holes.
    shapes.push(
        (0..2048)
            .map(|k| {
                let d = (k as f64 - 1024.0) / 150.0;
                let base = 50_000.0 * (-d * d / 2.0).exp();
                (base as u64 + rng.below(40)) * u64::from(rng.below(5) != 0)
            })
            .collect(),
    );
    shapes.extend(ties_and_spikes(&mut rng));
    // ReLU-like: nothing below the zero bin, a spike on it, a decay, an outlier at the end.
    let mut relu: Vec<u64> = (0..2048)
        .map(|k| {
            if k < 1024 {
                0
            } else {
                (20_000.0 * (-((k - 1024) as f64) / 60.0).exp()) as u64
            }
        })
        .collect();
    relu[1024] = 1_000_000;
    relu[2047] = 3;
    shapes.push(relu);
    shapes.push(gaussian_counts(-4.5, 4.5, 2048, 1e6, false).counts);
    // Everything in the zero bin (an all-zero tensor), and all-equal counts.
    let mut zeros = vec![0; 2048];
    zeros[1024] = 4096;
    shapes.push(zeros);
    shapes.push(vec![7; 200]);
    // No counts at all: every window is ∞ and ORT's argmin keeps the first.
    shapes.push(vec![0; 300]);
    for (s, counts) in shapes.into_iter().enumerate() {
        let (h, min, max) = ort_hist(&mut rng, counts);
        for bits in [8u8, 7, 4, 2, 12, 13] {
            picks_ort_s_window(&h, min, max, bits, format_args!("shape {s}"));
        }
    }
    // Random shapes, sizes and bit widths.
    let mut compared = 0;
    for case in 0..200 {
        let len = if case % 10 == 0 {
            2048
        } else {
            1 + rng.below(900) as usize
        };
        let bits = 2 + rng.below(10) as u8;
        let mut counts = random_counts(&mut rng, len);
        if rng.below(4) == 0 {
            counts =
                gaussian_counts(-4.0, 4.0, len, 10f64.powi(2 + rng.below(6) as i32), false).counts;
        }
        let (h, min, max) = ort_hist(&mut rng, counts);
        compared += usize::from(picks_ort_s_window(
            &h,
            min,
            max,
            bits,
            format_args!("case {case}: len {len}"),
        ));
    }
    assert!(compared > 150, "{compared}");
}

#[test]
fn affine_fast_search_picks_ort_s_window() {
    let mut rng = Rng(0xaff1_9e5e_a4c4_0002);
    let mut gap = FastVsExact::default();
    for case in 0..300 {
        let bits = 4 + rng.below(6) as u8;
        let nq = 1usize << (bits - 1);
        let len = [nq, nq + 1, 300, 700, 1024, 2048][rng.below(6) as usize].max(nq);
        let mut counts = random_counts(&mut rng, len);
        if rng.below(4) == 0 {
            // Spiky: a few huge spikes on top.
            for _ in 0..1 + rng.below(4) {
                let k = rng.below(len as u64) as usize;
                counts[k] += 1 + rng.below(1 << 40);
            }
        }
        let (h, min, max) = ort_hist(&mut rng, counts);
        if !picks_ort_s_window(&h, min, max, bits, format_args!("case {case}: len {len}")) {
            continue;
        }
        // The re-check's premise: fast and exact agree well within tolerance / 2.
        let (tol, scores) = fast_and_exact(&h, nq);
        for ((l, r), f, e) in scores {
            gap.add(f, e, format_args!("case {case}, [{l}, {r})"));
        }
        gap.check(tol, format_args!("case {case}"));
    }
    gap.report("windows");
}

/// Sparse histograms (a few to a few hundred values over 2048 bins, long empty tails, as
/// small layers give) at bits 2–12: the fast form (chunk chains) stays within tolerance / 2
/// of the exact divergence on every window, and the search picks ORT's window.
#[test]
fn affine_sparse_histograms_fast_matches_exact() {
    let mut rng = Rng(0xaff1_9e5e_a4c4_0005);
    let mut gap = FastVsExact::default();
    for case in 0..60 {
        let bits = 2 + rng.below(11) as u8;
        let nq = 1usize << (bits - 1);
        let len = 2048;
        let mut counts = vec![0u64; len];
        let values = 1 + rng.below(400);
        // A narrow bulk somewhere, or values spread anywhere.
        let centre = rng.below(len as u64) as f64;
        let width = 1.0 + rng.below(300) as f64;
        for _ in 0..values {
            let k = if rng.below(2) == 0 {
                let u = (rng.below(1 << 20) as f64 + 0.5) / (1u64 << 20) as f64;
                let x = centre + width * (u / (1.0 - u)).ln();
                x.clamp(0.0, (len - 1) as f64) as usize
            } else {
                rng.below(len as u64) as usize
            };
            counts[k] += 1 + rng.below(3);
        }
        let (h, min, max) = ort_hist(&mut rng, counts);
        if !picks_ort_s_window(&h, min, max, bits, format_args!("case {case}")) {
            continue;
        }
        let (tol, scores) = fast_and_exact(&h, nq);
        for ((l, r), f, e) in scores {
            gap.add_within(
                f,
                e,
                tol,
                format_args!("case {case}, bits {bits}, [{l}, {r})"),
            );
        }
    }
    gap.report("sparse windows");
}

/// Windows so wide and empty that p's smoothing step e1p exceeds 1/2 take the chunk by
/// chunk path instead of the chains: still within tolerance / 2 of the exact divergence.
#[test]
fn affine_wide_empty_windows_fast_matches_exact() {
    let mut rng = Rng(0xaff1_9e5e_a4c4_0006);
    let mut gap = FastVsExact::default();
    let mut chunkwise = 0usize;
    for case in 0..4 {
        let nq = 1usize << (1 + case);
        let len = 12_000;
        let mut counts = vec![0u64; len];
        for _ in 0..2 + rng.below(3) {
            counts[rng.below(len as u64) as usize] += 1 + rng.below(1000);
        }
        let h = hist(-1.0, 1.0, counts);
        let ctx = AffineContext::new(&h.counts, nq);
        let tol = ctx.tolerance();
        for (l, r) in affine_windows(len, nq).into_iter().step_by(7) {
            if ctx.window_p(l, r).is_ok_and(|wp| wp.e1p > 0.5) {
                chunkwise += 1;
            }
            let f = ctx.fast_kl(l, r);
            let e = window_exact_kl(&ctx, (l, r));
            gap.add_within(f, e, tol, format_args!("case {case}, [{l}, {r})"));
        }
    }
    eprintln!(
        "{} finite windows ({chunkwise} chunk by chunk), worst {:e}",
        gap.finite, gap.worst
    );
    assert!(chunkwise > 100 && gap.finite > 100);
}

/// The float32 divergence ORT computes stays within half the bound the re-check assumes
/// (`AffineContext::f32_error`, which doubles the first-order bound) of the exact one, on
/// every window of varied histograms. Logs the largest share of the undoubled bound used.
#[test]
fn affine_float32_divergence_is_within_its_bound() {
    let mut rng = Rng(0xaff1_9e5e_a4c4_0007);
    let (mut n, mut worst) = (0usize, 0.0f64);
    for case in 0..60 {
        let bits = 2 + rng.below(10) as u8;
        let nq = 1usize << (bits - 1);
        let len = [nq.max(64), 300, 1024, 2048][rng.below(4) as usize].max(nq);
        let mut counts = random_counts(&mut rng, len);
        if rng.below(2) == 0 {
            counts =
                gaussian_counts(-4.0, 4.0, len, 10f64.powi(1 + rng.below(8) as i32), false).counts;
        }
        if count_sum(&counts) == 0 {
            continue;
        }
        let ctx = AffineContext::new(&counts, nq);
        let (a, b) = AffineContext::f32_error(len);
        let (mut p, mut q) = (vec![0.0f32; len], vec![0.0f32; len]);
        for (l, r) in affine_windows(len, nq).into_iter().step_by(2) {
            let (below, above) = (ctx.mass[l], ctx.total - ctx.mass[r]);
            let f = ort_window_kl(&counts[l..r], below, above, nq, &mut p, &mut q);
            let e = exact_kl(&counts[l..r], below, above, nq);
            assert_eq!(f.is_finite(), e.is_finite(), "case {case}: [{l}, {r})");
            if e.is_finite() {
                let share = (f64::from(f) - e).abs() / ((a * e + b) / 2.0);
                assert!(share < 1.0, "case {case}: [{l}, {r}): {f} vs {e}");
                worst = worst.max(share);
                n += 1;
            }
        }
    }
    eprintln!("{n} finite windows, worst |F − E| = {worst:.3} of the first-order bound");
    assert!(n > 5000);
}

/// The affine fast pass's pruning leaves the re-check window exactly as scoring every
/// window does: each window keeps its fast value bit for bit or was skipped (∞) with a
/// fast value beyond the window. Logs how many windows are skipped and re-checked.
#[test]
fn affine_pruned_fast_pass_keeps_the_recheck_window() {
    let mut rng = Rng(0xaff1_9e5e_a4c4_0004);
    let mut tally = PruneCheck::default();
    for case in 0..500 {
        // Our histograms have 2048 bins (`SEARCH_BINS`): affine has windows up to 12 bits.
        let bits = 2 + rng.below(11) as u8;
        let nq = 1usize << (bits - 1);
        let len = if case % 3 == 0 {
            2048
        } else {
            nq + rng.below(700) as usize
        };
        let mut counts = random_counts(&mut rng, len);
        if rng.below(4) == 0 {
            for _ in 0..1 + rng.below(4) {
                let k = rng.below(len as u64) as usize;
                counts[k] += 1 + rng.below(1 << 40);
            }
        }
        if rng.below(3) == 0 {
            // A gaussian bulk with tails, as activations look.
            let g = gaussian_counts(-4.0, 4.0, len, 10f64.powi(2 + rng.below(6) as i32), false);
            counts = g.counts;
        }
        if count_sum(&counts) == 0 {
            continue;
        }
        let windows = affine_windows(len, nq);
        if windows.is_empty() {
            continue;
        }
        let ctx = AffineContext::new(&counts, nq);
        let all: Vec<f64> = windows.iter().map(|&(l, r)| ctx.fast_kl(l, r)).collect();
        let m = all.iter().copied().fold(f64::INFINITY, f64::min);
        let within = ctx.recheck_cut(m) - m;
        let pruned = ctx.fast_pass(&windows);
        tally.check(&all, &pruned, within, &|k| {
            format!(
                "case {case}: len {len}, bits {bits}, window {:?}",
                windows[k]
            )
        });
    }
    tally.report("windows");
}

/// The floor is below the exact divergence of every window (it is what lets the fast pass
/// skip windows).
#[test]
fn affine_floor_is_below_the_exact_divergence() {
    let mut rng = Rng(0xaff1_9e5e_a4c4_0005);
    let (mut n, mut positive) = (0usize, 0usize);
    for case in 0..200 {
        let bits = 2 + rng.below(8) as u8;
        let nq = 1usize << (bits - 1);
        let len = nq + rng.below(600) as usize;
        let mut counts = random_counts(&mut rng, len);
        if rng.below(2) == 0 {
            counts =
                gaussian_counts(-4.0, 4.0, len, 10f64.powi(2 + rng.below(6) as i32), false).counts;
        }
        if count_sum(&counts) == 0 {
            continue;
        }
        let ctx = AffineContext::new(&counts, nq);
        for (l, r) in affine_windows(len, nq) {
            let fl = ctx.kl_floor(l, r);
            let e = window_exact_kl(&ctx, (l, r));
            if fl.is_finite() && e.is_finite() {
                assert!(fl <= e + 1e-10, "case {case}: [{l}, {r}): floor {fl} > {e}");
                n += 1;
                positive += usize::from(fl > 0.0);
            } else if fl == f64::INFINITY {
                assert_eq!(e, f64::INFINITY, "case {case}: [{l}, {r})");
            }
        }
    }
    eprintln!("{n} finite windows, {positive} with a positive floor");
    assert!(positive > n / 10);
}

#[test]
fn affine_candidate_windows() {
    // 2048 bins: i = nq/2 ..= 1024 with nq = 2^(bits−1).
    let h = NumpyBins::new(-1.0, 1.0, 2048).histogram((0..2048).map(|k| 1 + k % 7).collect());
    for (bits, want) in [
        (8, 961),
        (7, 993),
        (2, 1024),
        (11, 513),
        (12, 1),
        (13, 0),
        (16, 0),
    ] {
        assert_eq!(affine(&h, -1.0, 1.0, bits).candidates, want, "bits {bits}");
    }
    // 300 bins: z = 150; 8 bits, i = 64..=150.
    let h = NumpyBins::new(-1.0, 1.0, 300).histogram(vec![3; 300]);
    assert_eq!(affine(&h, -1.0, 1.0, 8).candidates, 87);
}

#[test]
fn affine_windows_are_ort_s() {
    // [z − i, min(z + i + 1, N)) for i = nq/2 ..= z, z = N/2: one bin wider on the + side,
    // and the last window the whole histogram.
    let w = affine_windows(2048, 128);
    assert_eq!((w[0], w[1]), ((960, 1089), (959, 1090)));
    assert_eq!(w[w.len() - 2..], [(1, 2048), (0, 2048)]);
    assert_eq!(affine_windows(9, 4), [(2, 7), (1, 8), (0, 9)]);
    assert!(affine_windows(100, 128).is_empty());
}

#[test]
fn affine_uniform_keeps_the_full_range() {
    // Uniform counts: the whole histogram merges 16 equal bins per chunk, so q = p and the
    // divergence is 0, while every narrower window puts clipped mass in its end bins. The
    // range is then the histogram's, clipped to the data's.
    let h = NumpyBins::new(-3.0, 3.0, 2048).histogram(vec![100; 2048]);
    let s = affine(&h, -3.0, 3.0, 8);
    assert_eq!((s.lo, s.hi), (-3.0, 3.0));
    let s = affine(&h, -1.0, 2.5, 8);
    assert_eq!((s.lo, s.hi), (-1.0, 2.5));
}

#[test]
fn affine_clips_a_far_outlier() {
    // x ∈ [−4.2, 20]: N(0,1) counts (zero beyond ~5σ) and one value at 20, on ORT's
    // histogram over ±20. The windows grow symmetrically about 0; the chosen one stops far
    // short of the outlier, and its left edge (−hi within a bin) is clipped to the minimum.
    let mut h = gaussian_counts(-20.0, 20.0, 2048, 1e7, false);
    h.counts[2047] += 1;
    let h = NumpyBins::new(-20.0, 20.0, 2048).histogram(h.counts);
    let s = affine(&h, -4.2, 20.0, 8);
    assert!(s.hi > 4.2 && s.hi < 10.0, "{s:?}");
    assert_eq!(s.lo, -4.2, "{s:?}");
}

#[test]
fn affine_gaussian_is_roughly_symmetric_and_in_a_plausible_band() {
    // N(0,1) over ±6: ORT's windows are symmetric about 0 up to one bin, 128 levels over the
    // window (as modelopt's 128 per side, twice as coarse): between the 99.9th (3.29σ)
    // percentile and the histogram's end.
    let h = gaussian_counts(-6.0, 6.0, 2048, 1e9, false);
    let h = NumpyBins::new(-6.0, 6.0, 2048).histogram(h.counts);
    let s = affine(&h, -6.0, 6.0, 8);
    let sym = symmetric(&gaussian_counts(0.0, 6.0, 1024, 1e9, true), 8);
    eprintln!("gaussian affine entropy = {s:?}; symmetric amax {}", sym.hi);
    assert!((s.hi + s.lo).abs() <= 1.01 * h.width(), "{s:?}");
    assert!(s.hi > 3.29 && s.hi <= 6.0, "{s:?}");
}

#[test]
fn affine_degenerate_histograms_are_finite() {
    // ORT entropy histograms (±T, numpy's bins) of odd data: a zero range (numpy widens it to
    // ±0.5), subnormal and float32-overflowing T (numpy refuses those: f64 edges here), counts
    // only at an end or only in the zero bin, none at all, a single bin.
    let ends = |first: u64, last: u64| {
        let mut c = vec![0; 2048];
        c[0] = first;
        c[2047] = last;
        c
    };
    let mut zero_bin = vec![0; 2048];
    zero_bin[1024] = 77;
    let cases = [
        (
            NumpyBins::new(0.0, 0.0, 2048).histogram(zero_bin.clone()),
            0.0,
            0.0,
        ),
        (
            NumpyBins::new(-1e-44, 1e-44, 2048).histogram(ends(3, 4)),
            -1e-44,
            1e-44,
        ),
        (
            NumpyBins::new(-f32::MAX, f32::MAX, 2048).histogram(ends(1, 1)),
            -f64::from(f32::MAX),
            f64::from(f32::MAX),
        ),
        (
            NumpyBins::new(-3.0, 3.0, 2048).histogram(ends(0, 9)),
            3.0,
            3.0,
        ),
        (
            NumpyBins::new(-3.0, 3.0, 2048).histogram(ends(9, 0)),
            -3.0,
            -3.0,
        ),
        (
            NumpyBins::new(-3.0, 3.0, 2048).histogram(ends(9, 5)),
            -3.0,
            3.0,
        ),
        (
            NumpyBins::new(-1.0, 1.0, 2048).histogram(zero_bin),
            0.0,
            0.0,
        ),
        (
            NumpyBins::new(-1.0, 1.0, 2048).histogram(vec![0; 2048]),
            0.0,
            0.0,
        ),
        (NumpyBins::new(-1.0, 1.0, 1).histogram(vec![5]), -1.0, 1.0),
        (
            NumpyBins::new(-1.0, 1.0, 2).histogram(vec![5, 1]),
            -1.0,
            1.0,
        ),
    ];
    for (h, min, max) in &cases {
        for bits in [2u8, 8, 16] {
            let s = affine(h, *min, *max, bits);
            assert!(s.lo.is_finite() && s.hi.is_finite(), "{s:?}");
            assert!(s.lo >= *min && s.hi <= *max && s.lo <= s.hi, "{s:?}");
        }
    }
    // No window (more levels than bins): [min, max] with 0 candidates.
    let s = affine(&hist(-1.0, 1.0, vec![1; 100]), -0.5, 1.0, 8);
    assert_eq!((s.lo, s.hi, s.candidates), (-0.5, 1.0, 0));
    // No counts: every window is ∞ and, as ORT's argmin, the first is kept: bins
    // [960, 1089) of ±1 at 8 bits.
    let s = affine(&hist(-1.0, 1.0, vec![0; 2048]), -1.0, 1.0, 8);
    assert_eq!((s.lo, s.hi), (-0.0625, 0.0634765625));
}
