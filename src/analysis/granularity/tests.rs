#![allow(clippy::unwrap_used)]

use super::kernels::*;
use super::*;

/// numpy's arithmetic, one value at a time with a division.
fn naive(xs: &[f32], s: f64, qmax: f64) -> (f64, f64, f64) {
    let (mut err, mut rec, mut mx) = (0.0, 0.0, 0.0f64);
    for &v in xs.iter().filter(|v| v.is_finite()) {
        let x = f64::from(v);
        let xh = (x / s).round_ties_even().clamp(-qmax, qmax) * s;
        err += (x - xh) * (x - xh);
        rec += xh * xh;
        mx = mx.max((x - xh).abs());
    }
    (err, rec, mx)
}

#[test]
fn uniform_groups_match_the_division_even_at_ties() {
    // s = 49/16 is exact but 1/s is not; every value is an exact half step, so x·(1/s)
    // would round some the wrong way: the near-tie check must redo them with the division.
    let s = 3.0625;
    let xs: Vec<f32> = (-127..127).map(|k| (2 * k + 1) as f32 * 1.53125).collect();
    let mut acc = ErrorAccum::default();
    exactly!(127.0, &mut acc, l, slow => unsafe {
        uniform::<Portable, true>(&mut l, slow, &xs, s, 1.0 / s, 127.0)
    });
    let (err, rec, mx) = naive(&xs, s, 127.0);
    assert_eq!(acc.err_sq, err);
    assert!((acc.rec_sq - rec).abs() <= 1e-12 * rec);
    assert_eq!(acc.max_abs_error, mx);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx_kernels_are_bit_identical_to_the_portable_lanes() {
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    {
        return;
    }
    let xs: Vec<f32> = (0..1037)
        .map(|i| ((i as f32 * 0.6123).sin() * 40.0).powi(3) / 100.0)
        .chain([f32::NAN, f32::INFINITY, -0.0, -f32::INFINITY, 7.0])
        .collect();
    let a = absmax(&xs);
    let (s, inv) = scale(a, 127.0);
    let each_s: Vec<f64> = (0..xs.len()).map(|i| s * (1.0 + (i % 5) as f64)).collect();
    let each_i: Vec<f64> = each_s.iter().map(|s| 1.0 / s).collect();
    for len in [0, 1, 7, 8, 9, 16, 1037, xs.len()] {
        let x = &xs[..len];
        // SAFETY: AVX2 and FMA are present, checked above.
        unsafe {
            assert_eq!(Avx2::absmax(x), Portable::absmax(x), "len {len}");
            // A grid narrower than the values (s/4) makes the fast mode ask for a redo and
            // the slow mode clip: both modes are compared on both grids.
            for (s, inv) in [(s, inv), (s / 4.0, 4.0 * inv)] {
                let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
                Portable::uniform::<false, true>(&mut p, x, s, inv, 127.0);
                Avx2::uniform::<false, true>(&mut v, x, s, inv, 127.0);
                assert_eq!(p, v, "fast len {len}");
                let (mut p2, mut v2) = (GroupLanes::default(), GroupLanes::default());
                Portable::uniform::<true, true>(&mut p2, x, s, inv, 127.0);
                Avx2::uniform::<true, true>(&mut v2, x, s, inv, 127.0);
                assert_eq!(p2, v2, "slow len {len}");
                let clips = x
                    .iter()
                    .filter(|v| {
                        v.is_finite() && (f64::from(**v) / s).round_ties_even().abs() > 127.0
                    })
                    .count() as u64;
                let counted: u64 = p2.below.iter().chain(&p2.above).sum();
                assert_eq!(counted, clips, "len {len}");
                if p.needs_redo(127.0) {
                    assert!(clips > 0 || p.tie.iter().any(|&t| t > NEAR_HALF));
                } else {
                    // No redo: the fast sums are the slow (division) sums.
                    assert_eq!(clips, 0);
                    assert_eq!((p.err, p.rec, p.mx), (p2.err, p2.rec, p2.mx));
                }
            }
            // Unchecked (a group's own absmax scale): the same lanes, no |rint(t)| kept.
            let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
            Portable::uniform::<false, false>(&mut p, x, s, inv, 127.0);
            Avx2::uniform::<false, false>(&mut v, x, s, inv, 127.0);
            assert_eq!(p, v, "unchecked len {len}");
            assert_eq!(p.rmax, [0.0; ML]);
            let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
            Portable::each::<false>(&mut p, x, &each_s, &each_i, 127.0);
            Avx2::each::<false>(&mut v, x, &each_s, &each_i, 127.0);
            assert_eq!(p, v, "each len {len}");
            let (mut p, mut v) = (GroupLanes::default(), GroupLanes::default());
            Portable::each::<true>(&mut p, x, &each_s, &each_i, 127.0);
            Avx2::each::<true>(&mut v, x, &each_s, &each_i, 127.0);
            assert_eq!(p, v, "each slow len {len}");
        }
    }
}

#[test]
fn absmax_and_counts_skip_non_finite_values() {
    let mut v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.5).collect();
    v[3] = f32::NAN;
    v[30] = f32::NEG_INFINITY;
    assert_eq!(absmax(&v), 9.0);
    // |x| ≥ 6: i ≤ 6 or i ≥ 30 (14 values) less the NaN at 3 and the -inf at 30.
    assert_eq!(absmax_count(&v, 6.0), (9.0, 12));
    assert_eq!(absmax(&[f32::NAN, f32::INFINITY]), 0.0);
}

#[test]
fn largest_are_in_order_with_ties_by_index() {
    let v = [1.0, 5.0, 3.0, 5.0, 0.0, 9.0, 3.0];
    assert_eq!(largest(&v, 4), vec![5, 1, 3, 2]);
    assert_eq!(largest(&v, 10), vec![5, 1, 3, 2, 6, 0, 4]);
    assert_eq!(largest(&v, 0), Vec::<usize>::new());
}

#[test]
fn median_is_numpys() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(median(&[0.0, 0.0, 5.0]), 0.0);
}

#[test]
fn channel_maps_follow_c_fortran_and_batch_files() {
    let info = |shape: Vec<usize>, fortran_order| ArrayInfo {
        dtype: crate::source::DType::F32,
        big_endian: false,
        shape,
        fortran_order,
        descr: "<f4".into(),
    };
    let opts = |axis| {
        let mut o = Options::default();
        o.granularity.channel_axis = axis;
        o
    };
    let nchw = info(vec![2, 3, 4, 5], false);
    let l = ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(1))
        .unwrap()
        .unwrap();
    assert_eq!((l.axis, l.count), (1, 3));
    assert_eq!(
        l.maps[0],
        ChannelMap {
            stride: 20,
            count: 3,
            offset: 0
        }
    );
    assert!(l.rows.is_err());
    // Element [n, c, h, w] is at flat index ((n·3 + c)·4 + h)·5 + w.
    assert_eq!(l.maps[0].channel(((3 + 2) * 4 + 1) * 5 + 4), 2);
    let last = ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(-1))
        .unwrap()
        .unwrap();
    assert_eq!((last.axis, last.count, last.maps[0].stride), (3, 5, 1));
    assert_eq!(last.rows, Ok(()));
    // Chunks of 7 values would cut rows of 5.
    let cut = ChannelLayout::resolve(&[(&nchw, 7)], &opts(-1))
        .unwrap()
        .unwrap();
    assert!(cut.rows.is_err());
    // Fortran order: axis 0 is innermost.
    let f = info(vec![4, 6], true);
    let l = ChannelLayout::resolve(&[(&f, 1 << 20)], &opts(0))
        .unwrap()
        .unwrap();
    assert_eq!((l.count, l.maps[0].stride), (4, 1));
    let l = ChannelLayout::resolve(&[(&f, 1 << 20)], &opts(-1))
        .unwrap()
        .unwrap();
    assert_eq!((l.count, l.maps[0].stride), (6, 4));
    // Batch files: axis 0 is the file.
    let p = info(vec![3, 2], false);
    let two = [(&p, 1 << 20), (&p, 1 << 20)];
    let l = ChannelLayout::resolve(&two, &opts(0)).unwrap().unwrap();
    assert_eq!((l.count, l.maps[1].channel(5)), (2, 1));
    let l = ChannelLayout::resolve(&two, &opts(-1)).unwrap().unwrap();
    assert_eq!((l.axis, l.count, l.maps[1].stride), (2, 2, 1));
    // No channel axis, or a wrong one.
    let v = info(vec![10], false);
    assert_eq!(
        ChannelLayout::resolve(&[(&v, 1 << 20)], &opts(-1)),
        Ok(None)
    );
    assert!(ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(4)).is_err());
    assert!(ChannelLayout::resolve(&[(&nchw, 1 << 20)], &opts(-5)).is_err());
}
