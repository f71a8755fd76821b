#![allow(clippy::unwrap_used)]

use super::*;
use crate::calib::Scheme;

/// The relative bound the module states between the two paths.
const BOUND: f64 = 1e-12;

/// A small deterministic generator (xorshift64*): uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() * n as f64) as usize
    }
}

/// The data sets of the property test: several distributions and the corner cases of the
/// bins (values on the grid of s = 0.25, exact half steps of it, all equal, ±0, subnormals,
/// non-finite values, a discrete float16-like set).
fn data(kind: usize, len: usize, rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len)
        .map(|_| match kind {
            0 => rng.normal() as f32,
            1 => (rng.next() * 7.0 - 2.0) as f32,
            2 => {
                let x = rng.normal();
                (if rng.below(500) == 0 { x * 30.0 } else { x }) as f32
            }
            3 => (rng.below(255) as f32 - 127.0) * 0.25,
            4 => (rng.below(254) as f32 - 127.0 + 0.5) * 0.25,
            5 => 3.7,
            6 => {
                let r = rng.below(4);
                [0.0, -0.0, (rng.normal() * 1e-3) as f32, 1.0][r]
            }
            7 => {
                // Subnormals, the smallest normals and a few ordinary values.
                let r = rng.below(10);
                if r < 6 {
                    f32::from_bits(rng.below(1 << 24) as u32)
                        * if r.is_multiple_of(2) { 1.0 } else { -1.0 }
                } else if r < 9 {
                    (rng.normal() * 1e-37) as f32
                } else {
                    rng.normal() as f32
                }
            }
            8 => {
                let x = rng.normal() as f32;
                match rng.below(50) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => x,
                }
            }
            9 => {
                let u = rng.next() - 0.5;
                (u * u * u * 1e4) as f32
            }
            // float16-like: 11 significant bits, so many values repeat.
            _ => {
                let x = rng.normal() as f32;
                f32::from_bits(x.to_bits() & !0x1FFF)
            }
        })
        .collect();
    if kind == 3 {
        // The grid's ends, so min-max is exactly ±31.75 and s = 0.25.
        v[0] = -31.75;
        v[1] = 31.75;
    }
    v
}

/// The finite extremes of `v`.
fn range(v: &[f32]) -> (f64, f64) {
    v.iter()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(f64::from(x)), b.max(f64::from(x)))
        })
}

/// Pass 2 as the analysis makes it (two workers' sums merged), its grid over the data's
/// range (`coarse`: over 256 times it, so the data fills 256 bins, many values to a bin, or
/// over the middle half, so both end bins gather values beyond the grid).
fn bins_of(v: &[f32], chunk: usize, grid: u8) -> Bins {
    let (lo, hi) = range(v);
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
    let g = match grid {
        0 => Grid::over(lo, hi),
        1 => Grid::over(lo, lo + (hi - lo) * 256.0),
        _ => Grid::over(mid - half / 2.0, mid + half / 2.0),
    }
    .unwrap();
    let mut sums = [BinSums::new(g), BinSums::new(g)];
    for (i, c) in v.chunks(chunk).enumerate() {
        sums[i % 2].add(c);
    }
    let [a, b] = sums;
    merge(vec![a, b]).unwrap()
}

/// The per-value path over chunks of `chunk`, merged in chunk order (as pass 3 does).
fn exact(v: &[f32], q: &QParams, chunk: usize) -> ErrorAccum {
    let mut total = ErrorAccum::default();
    for c in v.chunks(chunk) {
        total.merge(&ErrorAccum::of_chunk(q, c));
    }
    total
}

/// The engine over chunks of `chunk`.
fn binned(e: &Engine<QParams>, v: &[f32], chunk: usize) -> Vec<ErrorAccum> {
    let mut p = Prepared::default();
    let sums: Vec<ChunkSums> = v
        .chunks(chunk)
        .map(|c| {
            let mut s = e.chunk_sums();
            for block in c.chunks(crate::analysis::metrics::BLOCK) {
                p.fill(block);
                e.block(&p, &mut s);
            }
            s
        })
        .collect();
    e.finish(&sums)
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b { 0.0 } else { (a - b).abs() / b.abs() }
}

/// Counts, clip counts, Σx² and the largest error identical; Σe² and Σx̂² within [`BOUND`];
/// the metrics within it too.
fn assert_close(got: &ErrorAccum, want: &ErrorAccum, what: &str) {
    assert_eq!(
        (got.n, got.below, got.above),
        (want.n, want.below, want.above),
        "{what}"
    );
    assert_eq!(
        (got.sig_sq.to_bits(), got.max_abs_error.to_bits()),
        (want.sig_sq.to_bits(), want.max_abs_error.to_bits()),
        "{what}: Σx² {} vs {}, max {} vs {}",
        got.sig_sq,
        want.sig_sq,
        got.max_abs_error,
        want.max_abs_error
    );
    assert!(
        rel(got.err_sq, want.err_sq) <= BOUND,
        "{what}: Σe² {} vs {}",
        got.err_sq,
        want.err_sq
    );
    assert!(
        rel(got.rec_sq, want.rec_sq) <= BOUND,
        "{what}: Σx̂² {} vs {}",
        got.rec_sq,
        want.rec_sq
    );
    let (a, b) = (got.finish(), want.finish());
    assert!(rel(a.mse, b.mse) <= BOUND, "{what}: mse");
    assert!(
        a.sqnr_db == b.sqnr_db || (a.sqnr_db - b.sqnr_db).abs() <= 1e-10,
        "{what}: SQNR {} vs {}",
        a.sqnr_db,
        b.sqnr_db
    );
    assert!((a.cosine - b.cosine).abs() <= BOUND, "{what}: cosine");
}

#[test]
fn keys_order_floats_and_step_by_one_spacing() {
    let v = [
        f32::MIN,
        -3.5,
        -1.0,
        -f32::MIN_POSITIVE,
        -1e-45,
        -0.0,
        0.0,
        1e-45,
        f32::MIN_POSITIVE,
        1.0,
        f32::MAX,
    ];
    for w in v.windows(2) {
        assert!(key(w[0]) < key(w[1]), "{w:?}");
    }
    for x in v {
        assert_eq!(unkey(key(x)).to_bits(), x.to_bits());
    }
    // One key up is one spacing up, on both sides of 0 and across the subnormal boundary.
    for x in [-1.5f32, 1.5, -1e-40, 1e-40, f32::MIN_POSITIVE] {
        let next = unkey(key(x) + 1);
        let u = 2f64.powi(spacing_exp(x));
        assert_eq!(f64::from(next) - f64::from(x), u, "{x}");
    }
    assert_eq!(spacing_exp(1.0), -23);
    assert_eq!(spacing_exp(1e-40), -149);
    assert_eq!(spacing_exp(f32::MIN_POSITIVE), -149);
}

#[test]
fn bin_error_is_the_direct_sum_even_when_the_grid_point_is_inside_the_bin() {
    // Values c + k·u for k = 0..=10, and x̂ on each of them, between two, and far away.
    let c = 1.25f32;
    let u = 2f64.powi(spacing_exp(c));
    let ks: Vec<u64> = (0..=10).collect();
    let vals: Vec<f64> = ks.iter().map(|&k| f64::from(c) + k as f64 * u).collect();
    let l = Linear {
        c: f64::from(c),
        u,
        s1: ks.iter().sum(),
        s2: ks.iter().map(|k| k * k).sum(),
        kmax: 10,
    };
    for xhat in [
        vals[5],
        vals[0],
        vals[10],
        vals[3] + u / 2.0,
        1.0,
        2.0,
        -7.0,
    ] {
        let direct: f64 = vals.iter().map(|x| (x - xhat) * (x - xhat)).sum();
        let got = bin_error(11, &l, xhat);
        assert!(rel(got, direct) <= 1e-15, "x̂ {xhat}: {got} vs {direct}");
    }
    // On the middle value the closed form is exact: Σ(k − 5)² = 110 spacings squared.
    assert_eq!(bin_error(11, &l, vals[5]), 110.0 * u * u);
    // A spike of 2^20 values a third of a spacing from x̂ and one value 1000 spacings below:
    // the parts n·D² and 2·D·u·Σk are about 10^5 times the result, so evaluated as they are
    // they would lose ~2^-36 of it; shifted they lose nothing visible.
    let n = (1u64 << 20) + 1;
    let spike = Linear {
        c: f64::from(c),
        u,
        s1: 1000 * (n - 1),
        s2: 1_000_000 * (n - 1),
        kmax: 1000,
    };
    let top = f64::from(c) + 1000.0 * u;
    let xhat = top + u / 3.0;
    let (d1, d0) = (xhat - top, xhat - f64::from(c));
    let want = (n - 1) as f64 * d1 * d1 + d0 * d0;
    let got = bin_error(n, &spike, xhat);
    assert!(rel(got, want) <= 1e-15, "{got} vs {want}");
    // A bin of one repeated value on the grid: exactly 0.
    let one = Linear {
        c: 0.5,
        u: 2f64.powi(-24),
        s1: 0,
        s2: 0,
        kmax: 0,
    };
    assert_eq!(bin_error(1 << 30, &one, 0.5), 0.0);
}

/// Every data set, both schemes, bits 2..=16, ranges inside, at and beyond the data, coarse
/// and fine bins: the engine (every quantizer kept, however many values it revisits) against
/// the per-value path.
#[test]
fn matches_the_per_value_path_on_random_tensors() {
    let mut rng = Rng(0x5eed_0018);
    let mut cases = 0;
    let mut cut = 0;
    for kind in 0..11 {
        for round in 0..4 {
            let len = [20_000, 3_001, 9_000, 40_000][round];
            let chunk = [4096, 1000, 2048 * 3, 1 << 20][round];
            let v = data(kind, len, &mut rng);
            let (lo, hi) = range(&v);
            let mut qs = Vec::new();
            for _ in 0..6 {
                let scheme = if rng.below(2) == 0 {
                    Scheme::Symmetric
                } else {
                    Scheme::Affine
                };
                let bits = 2 + rng.below(15) as u8;
                let (a, b) = match rng.below(3) {
                    0 => (lo, hi),
                    1 => (lo * rng.next(), hi * rng.next()),
                    _ => (lo * (1.0 + rng.next()), hi * (1.0 + rng.next())),
                };
                qs.push(QParams::new(scheme, bits, a, b));
            }
            // The grid of s = 0.25 (kinds 3 and 4 lie on it or on its half steps).
            qs.push(QParams::new(Scheme::Symmetric, 8, -31.75, 31.75));
            qs.push(QParams::new(Scheme::Affine, 8, lo, hi));
            for grid in 0..3 {
                let bins = bins_of(&v, chunk, grid);
                let e = Engine::plan(&bins, &qs, 1.0).unwrap();
                assert_eq!(e.which(), (0..qs.len()).collect::<Vec<_>>());
                cut += e.cut_bins();
                for (q, got) in qs.iter().zip(binned(&e, &v, chunk)) {
                    let what = format!("kind {kind} round {round} grid {grid} {q:?}");
                    assert_close(&got, &exact(&v, q, chunk), &what);
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 500 && cut > 1000, "{cases} cases, {cut} cut bins");
}

/// Where a quantizer would revisit too many values it is left to the per-value path; where
/// none is kept there is no engine.
#[test]
fn quantizers_that_revisit_too_much_are_left_out() {
    let mut rng = Rng(7);
    let v = data(0, 50_000, &mut rng);
    let (lo, hi) = range(&v);
    let bins = bins_of(&v, 8192, 0);
    // 16 bits over 65536 bins: nearly every bin is cut; 4 bits: few are.
    let fine = QParams::new(Scheme::Symmetric, 16, lo, hi);
    let coarse = QParams::new(Scheme::Symmetric, 4, lo, hi);
    let e = Engine::plan(&bins, &[fine, coarse], MAX_REVISITED_SHARE).unwrap();
    assert_eq!(e.which(), [1]);
    assert!(Engine::plan(&bins, &[fine], MAX_REVISITED_SHARE).is_none());
    let got = binned(&e, &v, 8192);
    assert_close(&got[0], &exact(&v, &coarse, 8192), "coarse");
}

/// The AVX2 scan against the portable one, on every data set (same revisited values, same
/// sums, bit for bit).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_scan_matches_the_portable_scan() {
    let Some(cpu) = simd::avx2() else {
        // No AVX2 on this CPU: nothing to compare.
        return;
    };
    let mut rng = Rng(99);
    let mut revisited = 0;
    for kind in 0..11 {
        let v = data(kind, 5_003, &mut rng);
        let (lo, hi) = range(&v);
        let qs: Vec<QParams> = (2..=9)
            .map(|b| QParams::new(Scheme::Symmetric, b, lo, hi))
            .collect();
        let bins = bins_of(&v, 5_003, 1);
        let e = Engine::plan(&bins, &qs, 1.0).unwrap();
        let mut p = Prepared::default();
        let (mut a, mut b) = (e.chunk_sums(), e.chunk_sums());
        for block in v.chunks(crate::analysis::metrics::BLOCK) {
            p.fill(block);
            e.scan_avx2(cpu, p.values(), &mut a);
            e.scan_portable(p.values(), &mut b);
            e.end_block(&mut a);
            e.end_block(&mut b);
        }
        assert_eq!(a, b, "kind {kind}");
        revisited += usize::from(a.parts.iter().any(|p| p.rec > 0.0));
    }
    // Most data sets revisit some values (not the constant one, nor the grid data).
    assert!(revisited >= 8, "{revisited}");
}

/// Pass 2's AVX2 sums against the one-value-at-a-time ones.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_sums_match_the_portable_sums() {
    let Some(cpu) = simd::avx2() else {
        // No AVX2 on this CPU: nothing to compare.
        return;
    };
    let mut rng = Rng(5);
    for kind in 0..11 {
        let v = data(kind, 4_000, &mut rng);
        let (lo, hi) = range(&v);
        // A grid over the middle of the data: both ends gather values.
        let g = Grid::over(lo / 2.0, hi / 2.0).unwrap();
        let (mut a, mut b) = (BinSums::new(g), BinSums::new(g));
        let rest = a.add_avx2(cpu, &v);
        a.add_portable(rest);
        b.add_portable(&v);
        assert_eq!(a.cells, b.cells, "kind {kind}");
    }
}

/// Through the analysis: a layer large enough for the bins, reported with and without
/// `exact`: the same counts and largest errors, the other metrics within the bound.
#[test]
fn the_analysis_gives_the_exact_paths_numbers() {
    use crate::analysis::{Options, Progress, analyze};
    use crate::source::{LayerSpec, Location};
    use npyz::WriterBuilder;
    let mut rng = Rng(18);
    // More finite values than `MIN_VALUES`, so pass 2 keeps the bins.
    let (rows, cols) = (40usize, 1usize << 16);
    let mut v: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
    // Four outlier columns ×30, as in the profile's file.
    for c in [5, 900, 31_000, 65_000] {
        for r in 0..rows {
            v[r * cols + c] *= 30.0;
        }
    }
    v[17] = f32::NAN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    w.extend(v.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(&path, buf).unwrap();
    let spec = LayerSpec {
        name: "x".into(),
        parts: vec![Location::Npy(path)],
    };
    for scheme in [Scheme::Symmetric, Scheme::Affine] {
        let fast = Options {
            scheme,
            keep_profiles: false,
            binned: true,
            ..Options::default()
        };
        let slow = Options {
            binned: false,
            ..fast.clone()
        };
        let profile = |o| crate::analysis::profile_layer(&spec, o, &Progress::default());
        assert!(profile(&fast).unwrap().bins.is_some());
        assert!(profile(&slow).unwrap().bins.is_none());
        let a = analyze(
            std::slice::from_ref(&spec),
            &[],
            &fast,
            &Progress::default(),
        );
        let b = analyze(
            std::slice::from_ref(&spec),
            &[],
            &slow,
            &Progress::default(),
        );
        let (a, b) = (&a.layers[0], &b.layers[0]);
        assert!(a.error.is_none() && !a.methods.is_empty());
        let rows_of = |l: &crate::analysis::LayerAnalysis| {
            l.methods
                .iter()
                .map(|m| (m.label(), m.metrics))
                .chain(
                    l.granularities
                        .iter()
                        .map(|g| (g.granularity.name().to_string(), g.metrics)),
                )
                .collect::<Vec<_>>()
        };
        for ((na, ma), (nb, mb)) in rows_of(a).into_iter().zip(rows_of(b)) {
            assert_eq!(na, nb);
            let what = format!("{scheme:?} {na}");
            assert_eq!(
                (ma.max_abs_error, ma.clipped_below, ma.clipped_above),
                (mb.max_abs_error, mb.clipped_below, mb.clipped_above),
                "{what}"
            );
            assert!(rel(ma.mse, mb.mse) <= BOUND, "{what}");
            assert!((ma.sqnr_db - mb.sqnr_db).abs() <= 1e-10, "{what}");
            assert!((ma.cosine - mb.cosine).abs() <= BOUND, "{what}");
        }
        assert_eq!(a.recommended, b.recommended);
    }
}
