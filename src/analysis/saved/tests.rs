#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use super::*;
use crate::analysis::analyze;
use crate::source::Location;

/// The analysis as `--format json` prints it (the report module sits above this one).
fn json(a: &Analysis) -> String {
    serde_json::to_string_pretty(a).unwrap()
}

fn write_npy(dir: &Path, name: &str, shape: &[u64], values: &[f32]) -> PathBuf {
    let path = dir.join(format!("{name}.npy"));
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(&path, buf).unwrap();
    path
}

/// A small analysis of two layers (one with NaN and inf) with profiles, saved.
fn small_saved(dir: &Path) -> Saved {
    let values: Vec<f32> = (0..96).map(|i| ((i * 37) % 23) as f32 - 9.5).collect();
    let mut odd = values.clone();
    odd[3] = f32::NAN;
    odd[7] = f32::INFINITY;
    let specs: Vec<LayerSpec> = [("a", &values), ("b", &odd)]
        .iter()
        .map(|(name, v)| LayerSpec {
            name: name.to_string(),
            parts: vec![Location::Npy(write_npy(dir, name, &[4, 24], v))],
        })
        .collect();
    let errors = vec![LoadError::new(dir.join("gone.npy").display(), "not found")];
    let a = analyze(&specs, &errors, &Options::default(), &Progress::default());
    assert!(a.layers[..2].iter().all(|l| l.profile.is_some()));
    let part = shard::part(&specs, &errors, 0, 1);
    let specs = (part.specs.into_iter().map(Some))
        .chain(errors.iter().map(|_| None))
        .collect();
    Saved::new(
        a,
        specs,
        part.positions,
        vec![dir.to_path_buf()],
        part.shard,
    )
}

#[test]
fn a_saved_analysis_reads_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = small_saved(dir.path());
    // Values the JSON cannot tell apart or shows as strings must come back with every bit.
    let odd = [
        f64::from_bits(0x7ff8_0000_dead_beef), // NaN with a payload
        -0.0,
        f64::NEG_INFINITY,
        5e-324,    // the smallest subnormal
        0.1,       // not exact in f32
        1.0 / 3.0, // nor this
        65504.0,   // exact in f16
        f64::MAX,
    ];
    let l = &mut s.analysis.layers[0];
    l.sensitivity_sqnr_db = Some(odd[0]);
    for (m, v) in l.methods.iter_mut().zip(odd.iter().cycle()) {
        m.metrics.mse = *v;
        m.metrics.sqnr_db = *v;
        m.range = [*v, -*v];
    }
    let bytes = encode(&s).unwrap();
    let back = decode(&bytes).unwrap();
    // The same bytes again: every field, the profiles included, survived exactly.
    assert_eq!(encode(&back).unwrap(), bytes);
    let l2 = &back.analysis.layers[0];
    assert_eq!(l2.sensitivity_sqnr_db.unwrap().to_bits(), odd[0].to_bits());
    for (m, v) in l2.methods.iter().zip(odd.iter().cycle()) {
        assert_eq!(m.metrics.mse.to_bits(), v.to_bits());
        assert_eq!(m.metrics.sqnr_db.to_bits(), v.to_bits());
        assert_eq!(m.range[1].to_bits(), (-*v).to_bits());
    }
    assert_eq!(
        json(&back.analysis),
        json(&s.analysis),
        "the JSON of the read-back analysis differs"
    );
    let (p, q) = (
        s.layers[1].profile.as_ref().unwrap(),
        back.layers[1].profile.as_ref().unwrap(),
    );
    assert_eq!(p.hist, q.hist);
    assert_eq!(p.moments, q.moments);
    assert_eq!(back.layers[2].spec, None);
    assert_eq!(back.inputs, vec![dir.path().to_path_buf()]);
}

#[cfg(unix)]
#[test]
fn paths_that_are_not_utf8_come_back_as_the_same_path() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let mut s = small_saved(dir.path());
    let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9/x.npy"));
    s.layers[0].spec.as_mut().unwrap().parts = vec![Location::Npy(odd.clone())];
    s.inputs = vec![odd.clone()];
    let back = decode(&encode(&s).unwrap()).unwrap();
    assert_eq!(
        back.layers[0].spec.as_ref().unwrap().parts,
        vec![Location::Npy(odd.clone())]
    );
    assert_eq!(back.inputs, vec![odd]);
}

/// The file with its body replaced by `body` (the length field set to match).
fn with_body(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of `s` as a CBOR value tree, changed by `edit`, encoded again.
fn edited(s: &Saved, edit: impl FnOnce(&mut ciborium::Value)) -> Vec<u8> {
    let mut v = ciborium::Value::serialized(s).unwrap();
    edit(&mut v);
    let mut body = Vec::new();
    ciborium::into_writer(&v, &mut body).unwrap();
    with_body(&body)
}

fn field<'a>(v: &'a mut ciborium::Value, key: &str) -> &'a mut ciborium::Value {
    let ciborium::Value::Map(m) = v else {
        panic!("not a map")
    };
    &mut m
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(key))
        .unwrap()
        .1
}

fn item(v: &mut ciborium::Value, i: usize) -> &mut ciborium::Value {
    let ciborium::Value::Array(a) = v else {
        panic!("not an array")
    };
    &mut a[i]
}

#[test]
fn broken_files_get_one_line_each_saying_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_saved(dir.path());
    let good = encode(&s).unwrap();
    let body_len = good.len() - HEADER_LEN;
    let mut newer = good.clone();
    newer[12..16].copy_from_slice(&2u32.to_le_bytes());
    let mut older = good.clone();
    older[12..16].copy_from_slice(&0u32.to_le_bytes());
    let mut longer = good.clone();
    longer.extend_from_slice(b"xyz");
    let mut garbage = vec![0u8; 4000];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in &mut garbage {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // A map claiming 2^64 − 1 entries, a text string and an array claiming more than any disk
    // holds: errors, never an allocation of what they claim; nesting past the limit, in a
    // field that is skipped (unknown fields are, so a newer file's additions read).
    let huge_map = [&[0xbbu8][..], &[0xff; 8]].concat();
    let huge_text = [&[0xa1u8, 0x64][..], b"tool", &[0x7b], &[0xff; 8], b"abc"].concat();
    let huge_array = [&[0xa1u8, 0x66][..], b"inputs", &[0x9b], &[0xff; 8], &[0x40]].concat();
    let deep = [vec![0xa1u8, 0x63], b"zzz".to_vec(), vec![0x81; 100_000]].concat();
    let bad_bits = edited(&s, |v| {
        *field(field(field(v, "analysis"), "settings"), "bits") = 99.into();
    });
    let bad_bins = edited(&s, |v| {
        let hist = field(field(item(field(v, "layers"), 0), "profile"), "hist");
        *field(hist, "bins") = (1u64 << 60).into();
    });
    let missing = edited(&s, |v| {
        let ciborium::Value::Map(m) = v else { panic!() };
        m.retain(|(k, _)| k.as_text() != Some("layers"));
    });
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "empty",
            Vec::new(),
            "not a saved calibscope analysis (its first bytes are not the saved-analysis header)"
                .into(),
        ),
        (
            "an .npy file",
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}".to_vec(),
            "not a saved calibscope analysis (its first bytes are not the saved-analysis header)"
                .into(),
        ),
        (
            "magic only",
            MAGIC.to_vec(),
            "truncated: 12 bytes, shorter than the 24-byte header".into(),
        ),
        (
            "newer version",
            newer,
            "saved by a newer calibscope (saved-analysis format 2; this one reads format 1): \
             open it with the calibscope that saved it, or analyse the dumps again"
                .into(),
        ),
        (
            "older version",
            older,
            "saved by an older calibscope (saved-analysis format 0; this one reads format 1): \
             open it with the calibscope that saved it, or analyse the dumps again"
                .into(),
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            format!(
                "truncated: the header announces {body_len} bytes of analysis, {} are there",
                good.len() / 2 - HEADER_LEN
            ),
        ),
        (
            "bytes after",
            longer,
            "3 unexpected bytes after the end of the saved analysis".into(),
        ),
        (
            "garbage",
            with_body(&garbage),
            "corrupt: invalid type: simple, expected map".into(),
        ),
        (
            "huge map",
            with_body(&huge_map),
            "corrupt: its contents end early".into(),
        ),
        (
            "huge text",
            with_body(&huge_text),
            "corrupt: its contents end early".into(),
        ),
        (
            "huge array",
            with_body(&huge_array),
            "corrupt: its contents end early".into(),
        ),
        (
            "deep nesting",
            with_body(&deep),
            "corrupt: nested too deeply".into(),
        ),
        (
            "bad settings",
            bad_bits,
            "corrupt: its settings are invalid: bit width 99 is outside 2..=16".into(),
        ),
        (
            "bad histogram",
            bad_bins,
            "corrupt: layer a: its histogram of x has 1152921504606846976 bins, not 65536".into(),
        ),
        (
            "missing field",
            missing,
            "corrupt: missing field `layers`".into(),
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(what, bytes, want)| {
            let got = decode(bytes).err();
            (got.as_deref() != Some(want.as_str())).then(|| format!("{what}: {got:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_truncation_and_many_corruptions_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = encode(&small_saved(dir.path())).unwrap();
    for len in (0..good.len()).step_by(7) {
        assert!(decode(&good[..len]).is_err(), "cut at {len}");
    }
    // Bytes flipped inside the body, with the header intact: the decoder must answer every
    // time (an error, or an analysis that passed the checks), never panic.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bytes = good.clone();
        let at = HEADER_LEN + (x as usize % (good.len() - HEADER_LEN));
        bytes[at] ^= (x >> 32) as u8 | 1;
        let _ = decode(&bytes);
    }
}

#[test]
fn reading_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.calibscope");
    std::fs::write(&path, b"hello").unwrap();
    assert!(is_saved(&path));
    let e = read(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: not a saved calibscope analysis (its first bytes are not the saved-analysis \
             header)",
            path.display()
        )
    );
    let e = read(&dir.path().join("none.calibscope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("none.calibscope: no such file or directory"),
        "{e}"
    );
    let s = small_saved(dir.path());
    let other = dir.path().join("analysis.bin");
    std::fs::write(&other, encode(&s).unwrap()).unwrap();
    assert!(is_saved(&other), "found by its header whatever its name");
    assert!(!is_saved(&dir.path().join("a.npy")));
}

#[test]
fn a_rerun_from_profiles_without_the_values_keeps_the_ranges_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_saved(dir.path());
    let opts = Options {
        bits: 4,
        ..Options::default()
    };
    let fresh = rerun(&s, &opts, &Progress::default());
    assert!(fresh.layers[..2].iter().all(|l| l.error.is_none()));
    std::fs::remove_file(dir.path().join("a.npy")).unwrap();
    let gone = rerun(&s, &opts, &Progress::default());
    let (f, g) = (&fresh.layers[0], &gone.layers[0]);
    let e = g.error.as_deref().unwrap();
    assert!(
        e.starts_with(&format!(
            "{}: no such file",
            dir.path().join("a.npy").display()
        )),
        "{e}"
    );
    assert!(e.ends_with("their error metrics need the values"), "{e}");
    assert_eq!(f.methods.len(), g.methods.len());
    for (a, b) in f.methods.iter().zip(&g.methods) {
        assert_eq!(
            (a.range, a.scale, a.zero_point),
            (b.range, b.scale, b.zero_point)
        );
        assert!(b.metrics.sqnr_db.is_nan() && b.metrics.mse.is_nan());
    }
    assert_eq!(g.recommended, None);
    // The other layer still has its file: measured as before.
    assert_eq!(
        serde_json::to_string(&fresh.layers[1]).unwrap(),
        serde_json::to_string(&gone.layers[1]).unwrap()
    );
    // A failed input stays as it was saved.
    assert_eq!(gone.layers[2].error, s.analysis.layers[2].error);
}

#[test]
fn a_file_that_changed_since_is_not_measured_against_old_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_saved(dir.path());
    write_npy(dir.path(), "a", &[2, 24], &[1.0; 48]);
    let opts = Options {
        bits: 4,
        ..Options::default()
    };
    let a = rerun(&s, &opts, &Progress::default());
    let e = a.layers[0].error.as_deref().unwrap();
    assert!(e.contains("changed since its histograms were made"), "{e}");
}

#[test]
fn shard_specs_parse_with_k_below_n() {
    assert_eq!(shard::parse("0/1"), Ok((0, 1)));
    assert_eq!(shard::parse("15/16"), Ok((15, 16)));
    assert_eq!(
        shard::parse("3/3"),
        Err("--shard 3/3: K must be below N (shards are numbered 0 to N−1)".into())
    );
    assert_eq!(
        shard::parse("0/0"),
        Err("--shard 0/0: K must be below N (shards are numbered 0 to N−1)".into())
    );
    for bad in ["1", "a/b", "-1/2", "1/2/3", ""] {
        assert_eq!(
            shard::parse(bad),
            Err(format!(
                "--shard {bad}: expected K/N with 0 ≤ K < N, e.g. 0/16"
            )),
            "{bad}"
        );
    }
}

fn sized_specs(dir: &Path, sizes: &[usize]) -> Vec<LayerSpec> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = dir.join(format!("l{i}.npy"));
            std::fs::write(&p, vec![0u8; n]).unwrap();
            LayerSpec {
                name: format!("l{i}"),
                parts: vec![Location::Npy(p)],
            }
        })
        .collect()
}

#[test]
fn shards_are_dealt_largest_first_to_the_lightest() {
    let dir = tempfile::tempdir().unwrap();
    // By hand: 100 → s0; 90 → s1; 50 → s1 (90 < 100); 40 → s0 (100 < 140); 30 → s0 (tie
    // at 140: the lower shard); 10 → s1 (140 < 170).
    let specs = sized_specs(dir.path(), &[100, 90, 50, 40, 30, 10]);
    assert_eq!(shard::select(&specs, 0, 2), vec![0, 3, 4]);
    assert_eq!(shard::select(&specs, 1, 2), vec![1, 2, 5]);
    // Equal sizes go round in list order.
    let even = sized_specs(dir.path(), &[8; 7]);
    assert_eq!(shard::select(&even, 0, 3), vec![0, 3, 6]);
    assert_eq!(shard::select(&even, 2, 3), vec![2, 5]);
    // Every N splits the list into disjoint parts that cover it.
    for n in 1..=9 {
        let mut all: Vec<usize> = (0..n).flat_map(|k| shard::select(&specs, k, n)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..specs.len()).collect::<Vec<_>>(), "N = {n}");
    }
}

#[test]
fn an_archive_is_weighed_by_its_members_share() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("z.npz");
    std::fs::write(&archive, vec![0u8; 300]).unwrap();
    let mut specs = sized_specs(dir.path(), &[120]);
    for m in ["a", "b", "c"] {
        specs.push(LayerSpec {
            name: format!("z/{m}"),
            parts: vec![Location::NpzMember {
                archive: archive.clone(),
                member: format!("{m}.npy"),
            }],
        });
    }
    // Members weigh 100 each: 120 → s0, then 100 → s1, 100 → s1 (100 < 120), 100 → s0.
    assert_eq!(shard::select(&specs, 0, 2), vec![0, 3]);
    assert_eq!(shard::select(&specs, 1, 2), vec![1, 2]);
}

fn parts_of(dir: &Path, n: usize, opts: &Options) -> Vec<(String, Saved)> {
    let values: Vec<f32> = (0..48).map(|i| i as f32 - 20.0).collect();
    let specs: Vec<LayerSpec> = (0..5)
        .map(|i| {
            let v: Vec<f32> = values.iter().map(|x| x * (i + 1) as f32).collect();
            let name = format!("layer{i}");
            LayerSpec {
                parts: vec![Location::Npy(write_npy(dir, &name, &[2, 24], &v))],
                name,
            }
        })
        .collect();
    (0..n)
        .map(|k| {
            let part = shard::part(&specs, &[], k, n);
            let a = analyze(&part.specs, &part.errors, opts, &Progress::default());
            let specs = part.specs.into_iter().map(Some).collect();
            let s = Saved::new(a, specs, part.positions, vec![], part.shard);
            (format!("part{k}"), s)
        })
        .collect()
}

#[test]
fn merged_parts_equal_one_run_and_bad_sets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default();
    let whole = parts_of(dir.path(), 1, &opts).remove(0).1;
    for n in [2, 3, 5, 7] {
        let merged = merge(parts_of(dir.path(), n, &opts)).unwrap();
        assert_eq!(json(&merged.analysis), json(&whole.analysis), "N = {n}");
        assert_eq!(merged.shard, whole.shard);
    }
    let err = |parts: Vec<(String, Saved)>| merge(parts).err().unwrap();
    let three = parts_of(dir.path(), 3, &opts);
    let mut missing = three.clone();
    missing.remove(1);
    assert_eq!(err(missing), "missing shard 1 of 3: 2 of 3 parts given");
    let mut twice = three.clone();
    twice.push(("again".into(), three[2].1.clone()));
    assert_eq!(err(twice), "shard 2/3 is given twice: part2 and again");
    let mut other_n = three.clone();
    other_n[1].1.shard.count = 4;
    assert_eq!(
        err(other_n),
        "part1 is shard 1/4, part0 is shard 0/3: merge parts of one run"
    );
    let mut other_bits = three.clone();
    let four = Options {
        bits: 4,
        ..Options::default()
    };
    other_bits[2] = parts_of(dir.path(), 3, &four).remove(2);
    assert_eq!(
        err(other_bits),
        "part2 and part0 were analysed with different settings (bits 4 ≠ 8): merge parts of \
         one run"
    );
    let mut other_inputs = three.clone();
    other_inputs[1].1.shard.layers_hash ^= 1;
    assert_eq!(
        err(other_inputs),
        "part1 and part0 come from different inputs (their runs' layer lists differ): merge \
         parts of one run"
    );
    let mut overlap = three.clone();
    let (l, a) = (
        overlap[0].1.layers[0].clone(),
        overlap[0].1.analysis.layers[0].clone(),
    );
    overlap[1].1.layers.insert(0, l);
    overlap[1].1.analysis.layers.insert(0, a);
    let name = &three[0].1.analysis.layers[0].name;
    assert_eq!(
        err(overlap),
        format!("layer {name} is in both part0 and part1")
    );
    let mut older = three;
    older[0].1.tool = "0.0.1".into();
    assert_eq!(
        err(older),
        format!(
            "part1 was saved by calibscope {}, part0 by calibscope 0.0.1: merge parts made by \
             one version",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// A validated analysis saved and read back keeps every held-out metric (the JSON shows two of
/// them; the CSV and a reopened analysis need all), bit for bit.
#[test]
fn held_out_metrics_survive_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..8 * 64)
        .map(|i| ((i * 37) % 23) as f32 * (1.0 + (i / 64) as f32 * 0.1) - 9.5)
        .collect();
    let spec = LayerSpec {
        name: "a".into(),
        parts: vec![Location::Npy(write_npy(dir.path(), "a", &[8, 64], &values))],
    };
    let opts = Options {
        validate: true,
        ..Options::default()
    };
    let a = analyze(
        std::slice::from_ref(&spec),
        &[],
        &opts,
        &Progress::default(),
    );
    let heldout = |a: &Analysis| -> Vec<crate::analysis::validation::HeldOut> {
        let v = a.layers[0].validation.as_ref().unwrap();
        v.methods.iter().map(|m| m.heldout.clone()).collect()
    };
    let before = heldout(&a);
    assert!(before.iter().all(|h| h.metrics.mse.is_finite()));
    let part = shard::part(std::slice::from_ref(&spec), &[], 0, 1);
    let saved = Saved::new(
        a,
        part.specs.into_iter().map(Some).collect(),
        part.positions,
        vec![dir.path().to_path_buf()],
        part.shard,
    );
    let back = decode(&encode(&saved).unwrap()).unwrap().into_analysis();
    let after = heldout(&back);
    let bits = |h: &[crate::analysis::validation::HeldOut]| -> Vec<[u64; 4]> {
        h.iter()
            .map(|h| {
                let m = &h.metrics;
                [m.mse, m.max_abs_error, m.cosine, m.clipped_below].map(f64::to_bits)
            })
            .collect()
    };
    assert_eq!(bits(&before), bits(&after));
    // The JSON keeps exactly the two keys.
    let j = serde_json::to_value(&back.layers[0].validation).unwrap();
    let keys: Vec<&String> = j["methods"][0]["heldout"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["clipped_fraction", "sqnr_db"]);
}
