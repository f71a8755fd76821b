//! Loader tests: `.npy` headers and decoding, `.npz` members, discovery. Fixtures are written
//! by hand (for broken files and `V2`) or with npyz's writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use npyz::WriterBuilder;

use calibscope::source::{
    ArrayInfo, BatchLayout, DType, Limits, LoadError, Location, OpenArray, discover,
};
use tempfile::TempDir;

mod common;
use common::*;

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    let f = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}")
}

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    npy_with_dict(&dict(descr, false, shape), data)
}

fn open(path: &Path) -> Result<OpenArray, LoadError> {
    OpenArray::open(&Location::Npy(path.to_path_buf()), &Limits::default())
}

fn open_err(dir: &Path, bytes: &[u8]) -> R<String> {
    let path = write(dir, "broken.npy", bytes)?;
    match open(&path) {
        Ok(a) => Err(format!("expected an error, got {:?}", a.info).into()),
        Err(e) => {
            assert_eq!(e.path, path.display().to_string());
            Ok(e.message)
        }
    }
}

/// All values, checking that chunks arrive in order and cover the array exactly.
fn read_all(a: &OpenArray, chunk: usize) -> R<Vec<f32>> {
    let chunks = a.map_chunks(chunk, &AtomicBool::new(false), |first, v| {
        (first, v.to_vec())
    })?;
    let mut out = Vec::new();
    for (first, v) in chunks {
        assert_eq!(first, out.len());
        assert!(!v.is_empty() && v.len() <= chunk.max(1));
        out.extend(v);
    }
    assert_eq!(out.len(), a.info.len());
    Ok(out)
}

fn values_of(bytes: &[u8], chunk: usize) -> R<Vec<f32>> {
    let dir = TempDir::new()?;
    let path = write(dir.path(), "a.npy", bytes)?;
    read_all(&open(&path)?, chunk)
}

// ---------------------------------------------------------------- .npy decoding

#[test]
fn every_dtype_both_byte_orders() -> R {
    let ints = [-3i64, 0, 1, 2, 100];
    macro_rules! case {
        ($t:ty, $code:expr, $vals:expr) => {{
            let vals: Vec<$t> = $vals;
            let expect: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
            for (order, be) in [("<", false), (">", true)] {
                let data: Vec<u8> = vals
                    .iter()
                    .flat_map(|v| if be { v.to_be_bytes() } else { v.to_le_bytes() })
                    .collect();
                let descr = format!("{order}{}", $code);
                let bytes = npy(&descr, &format!("({},)", vals.len()), &data);
                assert_eq!(values_of(&bytes, 3)?, expect, "{descr}");
            }
        }};
    }
    case!(i8, "i1", ints.iter().map(|&v| v as i8).collect());
    case!(u8, "u1", vec![0, 1, 200, 255]);
    case!(i16, "i2", ints.iter().map(|&v| v as i16 * 300).collect());
    case!(u16, "u2", vec![0, 1, 65535, 258]);
    case!(i32, "i4", ints.iter().map(|&v| v as i32 * 70000).collect());
    case!(u32, "u4", vec![0, 1, 4_000_000_000, 258]);
    case!(i64, "i8", ints.iter().map(|&v| v * 1_000_000_007).collect());
    case!(u64, "u8", vec![0, 1, u64::MAX, 258]);
    case!(f32, "f4", vec![-1.5, 0.0, 3.25e10, f32::MIN_POSITIVE, -0.0]);
    case!(f64, "f8", vec![-1.5, 0.0, 3.25e10, 1e-3]);

    // f16, written by npyz's writer in both byte orders.
    let halves: Vec<half::f16> = [-2.0f32, 0.5, 65504.0, 1e-3]
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    for descr in ["<f2", ">f2"] {
        let mut buf = Vec::new();
        let mut w = npyz::WriteOptions::new()
            .dtype(npyz::DType::Plain(descr.parse()?))
            .shape(&[4])
            .writer(&mut buf)
            .begin_nd()?;
        w.extend(halves.iter().copied())?;
        w.finish()?;
        let expect: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        assert_eq!(values_of(&buf, 3)?, expect, "{descr}");
    }

    // bool: any non-zero byte is true.
    let bytes = npy("|b1", "(4,)", &[0, 1, 0, 7]);
    assert_eq!(values_of(&bytes, 7)?, vec![0.0, 1.0, 0.0, 1.0]);
    Ok(())
}

#[test]
fn info_reports_dtype_order_and_descr() -> R {
    let dir = TempDir::new()?;
    let p = write(dir.path(), "a.npy", &npy(">i2", "(2, 3)", &[0; 12]))?;
    let a = open(&p)?;
    assert_eq!(
        a.info,
        ArrayInfo {
            dtype: DType::I16,
            big_endian: true,
            shape: vec![2, 3],
            fortran_order: false,
            descr: "'>i2'".into(),
        }
    );
    assert_eq!(a.trailing_bytes, 0);
    let p = write(dir.path(), "b.npy", &npy("|u1", "(2,)", &[1, 2]))?;
    assert!(!open(&p)?.info.big_endian);
    Ok(())
}

#[test]
fn bfloat16_from_void2() -> R {
    let vals = [1.0f32, -2.5, 3.0e38, 0.0078125];
    let bits: Vec<u16> = vals
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect();
    let expect: Vec<f32> = bits
        .iter()
        .map(|&b| half::bf16::from_bits(b).to_f32())
        .collect();
    for (descr, be) in [("<V2", false), ("|V2", false), (">V2", true)] {
        let data: Vec<u8> = bits
            .iter()
            .flat_map(|b| if be { b.to_be_bytes() } else { b.to_le_bytes() })
            .collect();
        let bytes = npy(descr, "(4,)", &data);
        let dir = TempDir::new()?;
        let a = open(&write(dir.path(), "a.npy", &bytes)?)?;
        assert_eq!(a.info.dtype, DType::BF16);
        assert_eq!(read_all(&a, 3)?, expect, "{descr}");
    }
    Ok(())
}

#[test]
fn fortran_order_is_decoded_in_file_order() -> R {
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .dtype(npyz::DType::Plain(">f4".parse()?))
        .shape(&[2, 3])
        .order(npyz::Order::Fortran)
        .writer(&mut buf)
        .begin_nd()?;
    w.extend([1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    w.finish()?;
    let dir = TempDir::new()?;
    let a = open(&write(dir.path(), "f.npy", &buf)?)?;
    assert!(a.info.fortran_order);
    assert!(a.info.big_endian);
    assert_eq!(a.info.shape, vec![2, 3]);
    assert_eq!(read_all(&a, 4)?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    Ok(())
}

#[test]
fn scalar_and_zero_size_arrays() -> R {
    let dir = TempDir::new()?;
    let p = write(
        dir.path(),
        "s.npy",
        &npy("<f8", "()", &2.5f64.to_le_bytes()),
    )?;
    let a = open(&p)?;
    assert_eq!(a.info.shape, Vec::<usize>::new());
    assert_eq!(a.info.len(), 1);
    assert_eq!(read_all(&a, 7)?, vec![2.5]);

    let p = write(dir.path(), "z.npy", &npy("<f4", "(0, 5)", &[]))?;
    let a = open(&p)?;
    assert!(a.info.is_empty());
    let calls = a.map_chunks(7, &AtomicBool::new(false), |_, v| v.len())?;
    assert!(calls.is_empty());
    // A zero in the shape makes the count zero even with huge other dimensions.
    let p = write(
        dir.path(),
        "z2.npy",
        &npy("<f4", "(0, 4611686018427387904)", &[]),
    )?;
    assert!(open(&p)?.info.is_empty());
    Ok(())
}

#[test]
fn chunking_gives_same_values_in_order() -> R {
    let vals: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 100.0).collect();
    let le: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let be: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let as_f64: Vec<u8> = vals
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();
    for (descr, data) in [("<f4", &le), (">f4", &be), ("<f8", &as_f64)] {
        let bytes = npy(descr, "(1000,)", data);
        for chunk in [0, 1, 7, 999, 1000, 5000] {
            assert_eq!(values_of(&bytes, chunk)?, vals, "{descr} chunk {chunk}");
        }
    }
    Ok(())
}

#[test]
fn f64_overflow_count() -> R {
    let vals = [1e300f64, -1e300, f64::INFINITY, f64::NAN, 1.0, 3.5e38];
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let dir = TempDir::new()?;
    let a = open(&write(dir.path(), "o.npy", &npy(">f8", "(6,)", &data))?)?;
    let got = read_all(&a, 2)?;
    assert_eq!(a.f64_overflows(), 3);
    assert_eq!(got[0], f32::INFINITY);
    assert_eq!(got[1], f32::NEG_INFINITY);
    assert!(got[3].is_nan());
    // Counted per pass, not accumulated.
    read_all(&a, 4)?;
    assert_eq!(a.f64_overflows(), 3);
    Ok(())
}

#[test]
fn header_versions_2_and_3_and_trailing_bytes() -> R {
    let header = dict("<i4", false, "(2,)");
    for version in [2u8, 3] {
        let mut bytes = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[5, 0, 0, 0, 6, 0, 0, 0, 9, 9, 9]);
        let dir = TempDir::new()?;
        let a = open(&write(dir.path(), "v.npy", &bytes)?)?;
        assert_eq!(a.trailing_bytes, 3);
        assert_eq!(read_all(&a, 1)?, vec![5.0, 6.0]);
    }
    // Python 2 long suffix and double quotes.
    let bytes = npy_with_dict(
        "{\"descr\": \"<u1\", \"fortran_order\": False, \"shape\": (2L, 1L)}",
        &[3, 4],
    );
    assert_eq!(values_of(&bytes, 10)?, vec![3.0, 4.0]);
    Ok(())
}

#[test]
fn broken_headers_have_exact_messages() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    let ok = |descr: &str| npy(descr, "(1,)", &[0; 8]);

    assert_eq!(
        open_err(d, b"PK\x03\x04 not npy at all")?,
        "not a .npy file (bad magic bytes)"
    );
    assert_eq!(open_err(d, b"")?, "not a .npy file (bad magic bytes)");
    assert_eq!(
        open_err(d, b"\x93NUM")?,
        "too short to be a .npy file (4 bytes)"
    );

    let mut v4 = ok("<f4");
    v4[6] = 4;
    assert_eq!(open_err(d, &v4)?, "unsupported .npy format version 4.0");

    let mut past = b"\x93NUMPY\x01\x00".to_vec();
    past.extend_from_slice(&1000u16.to_le_bytes());
    past.extend_from_slice(b"{'descr': '<f4'");
    assert_eq!(
        open_err(d, &past)?,
        "header length 1000 runs past the end of the file (25 bytes)"
    );
    let mut huge = b"\x93NUMPY\x02\x00".to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        open_err(d, &huge)?,
        "header length 4294967295 bytes exceeds the limit of 1048576 bytes \
         (raise it with --max-header-bytes)"
    );

    let not_dict = npy_with_dict("[1, 2, 3]", &[]);
    assert_eq!(open_err(d, &not_dict)?, "header is not a dict");
    let garbage = npy_with_dict("import os", &[]);
    assert_eq!(open_err(d, &garbage)?, "header is not a dict");
    let unclosed = npy_with_dict("{'descr': '<f4', ", &[]);
    assert!(open_err(d, &unclosed)?.starts_with("header dict is malformed"));

    let missing = npy_with_dict("{'descr': '<f4', 'fortran_order': False}", &[]);
    assert_eq!(open_err(d, &missing)?, "header is missing key 'shape'");
    let extra = npy_with_dict(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
        &[0; 4],
    );
    assert_eq!(open_err(d, &extra)?, "header has unexpected key 'x'");
    let not_tuple = npy_with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': 1}", &[]);
    assert_eq!(open_err(d, &not_tuple)?, "shape is not a tuple");
    // `(1)` is 1 in Python, but py_literal has no parenthesised expressions.
    let grouped = npy_with_dict(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1)}",
        &[],
    );
    assert_eq!(
        open_err(d, &grouped)?,
        "header dict is malformed: not a Python literal at column 53"
    );
    let negative = npy("<f4", "(-1,)", &[]);
    assert_eq!(
        open_err(d, &negative)?,
        "shape is not a tuple of non-negative integers"
    );

    assert_eq!(
        open_err(d, &ok("|O"))?,
        "object dtype '|O' (pickled Python objects) is not supported; pickles are never loaded"
    );
    assert_eq!(
        open_err(d, &ok("<c8"))?,
        "complex dtype '<c8' is not supported"
    );
    assert_eq!(
        open_err(d, &ok("<c16"))?,
        "complex dtype '<c16' is not supported"
    );
    assert_eq!(
        open_err(d, &ok("<U5"))?,
        "string dtype '<U5' is not supported"
    );
    assert_eq!(
        open_err(d, &ok("|S3"))?,
        "string dtype '|S3' is not supported"
    );
    assert_eq!(
        open_err(d, &ok("<M8[ns]"))?,
        "datetime dtype '<M8[ns]' is not supported"
    );
    assert_eq!(
        open_err(d, &ok("<f16"))?,
        "float dtype '<f16' is not supported"
    );
    assert_eq!(open_err(d, &ok("<q9"))?, "unknown dtype '<q9'");
    assert_eq!(
        open_err(d, &ok("|V4"))?,
        "void dtype '|V4' is not supported (only 2-byte void, read as bfloat16)"
    );
    let structured = npy_with_dict(
        "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,)}",
        &[0; 8],
    );
    assert_eq!(
        open_err(d, &structured)?,
        "structured dtype (a list of fields) is not supported"
    );

    let truncated = npy("<f4", "(10,)", &[0; 12]);
    assert_eq!(
        open_err(d, &truncated)?,
        "truncated: header says 40 bytes of data, file has 12"
    );
    let terabyte = npy("<f4", "(1099511627776,)", &[0; 16]);
    assert_eq!(
        open_err(d, &terabyte)?,
        "truncated: header says 4398046511104 bytes of data, file has 16"
    );
    let overflow = npy("<f8", "(4294967296, 4294967296)", &[]);
    assert_eq!(
        open_err(d, &overflow)?,
        "shape (4294967296, 4294967296) overflows: too many elements"
    );
    let bytes_overflow = npy("<f8", "(3074457345618258603,)", &[]);
    assert_eq!(
        open_err(d, &bytes_overflow)?,
        "shape (3074457345618258603,) overflows: too many elements"
    );
    let too_big = npy("<f8", "(99999999999999999999999,)", &[]);
    assert_eq!(
        open_err(d, &too_big)?,
        "shape (99999999999999999999999,) overflows: too many elements"
    );
    Ok(())
}

#[test]
fn header_limit_and_missing_file() -> R {
    let dir = TempDir::new()?;
    let p = write(dir.path(), "a.npy", &npy("<f4", "(1,)", &[0; 4]))?;
    let limits = Limits {
        max_header_bytes: 16,
        ..Limits::default()
    };
    let e = OpenArray::open(&Location::Npy(p), &limits)
        .err()
        .ok_or("no error")?;
    assert_eq!(
        e.message,
        "header length 118 bytes exceeds the limit of 16 bytes (raise it with --max-header-bytes)"
    );

    let e = open(&dir.path().join("nope.npy")).err().ok_or("no error")?;
    assert_eq!(e.message, "no such file or directory");
    Ok(())
}

#[test]
fn shrinking_file_and_cancel_are_errors() -> R {
    let dir = TempDir::new()?;
    let data = vec![0u8; 4000];
    let p = write(dir.path(), "a.npy", &npy("<f4", "(1000,)", &data))?;
    let a = open(&p)?;
    let cancel = AtomicBool::new(true);
    let e = a
        .map_chunks(100, &cancel, |_, _| ())
        .err()
        .ok_or("no error")?;
    assert_eq!(e.to_string(), format!("{}: cancelled", p.display()));

    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)?
        .set_len(500)?;
    let e = a
        .map_chunks(100, &AtomicBool::new(false), |_, _| ())
        .err()
        .ok_or("no error")?;
    assert_eq!(e.path, p.display().to_string());
    assert!(
        e.message
            .starts_with(&format!("file changed while reading: {}", p.display())),
        "{}",
        e.message
    );
    Ok(())
}

// ---------------------------------------------------------------- .npz

#[test]
fn npz_stored_and_deflated_members() -> R {
    let dir = TempDir::new()?;
    let vals: Vec<f32> = (0..500).map(|i| i as f32 * 0.5 - 7.0).collect();
    let bytes = f32_npy(&vals);
    let mut with_trailing = f32_npy(&[1.0, 2.0]);
    with_trailing.extend_from_slice(b"xyz");
    let arch = dir.path().join("acts.npz");
    write_zip(
        &arch,
        &[
            ("layer10.npy", &bytes, false),
            ("layer2.npy", &bytes, true),
            ("notes.txt", b"hello", false),
            ("t.npy", &with_trailing, true),
        ],
    )?;
    for name in ["layer10.npy", "layer2.npy"] {
        let a = OpenArray::open(&member(&arch, name), &Limits::default())?;
        assert_eq!(a.location.to_string(), format!("{}/{name}", arch.display()));
        for chunk in [7, 64, 10_000] {
            assert_eq!(read_all(&a, chunk)?, vals, "{name} chunk {chunk}");
        }
    }
    let t = OpenArray::open(&member(&arch, "t.npy"), &Limits::default())?;
    assert_eq!(t.trailing_bytes, 3);
    assert_eq!(read_all(&t, 1)?, vec![1.0, 2.0]);

    let e = OpenArray::open(&member(&arch, "missing.npy"), &Limits::default())
        .err()
        .ok_or("no error")?;
    assert_eq!(
        e.to_string(),
        format!(
            "{}/missing.npy: no such member in the archive",
            arch.display()
        )
    );

    let d = discover(
        std::slice::from_ref(&arch),
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert_eq!(names(&d.layers), ["acts/layer2", "acts/layer10", "acts/t"]);
    assert_eq!(d.layers[0].parts, vec![member(&arch, "layer2.npy")]);
    let errors: Vec<String> = d.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [format!(
            "{}/notes.txt: not a .npy member; skipped",
            arch.display()
        )]
    );
    Ok(())
}

#[test]
fn npz_errors() -> R {
    let dir = TempDir::new()?;
    let bad = write(dir.path(), "bad.npz", b"this is not a zip archive at all")?;
    let d = discover(
        std::slice::from_ref(&bad),
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert!(d.layers.is_empty());
    assert_eq!(d.errors.len(), 1);
    assert_eq!(d.errors[0].path, bad.display().to_string());
    assert!(
        d.errors[0]
            .message
            .starts_with("not a valid .npz (zip) archive"),
        "{}",
        d.errors[0]
    );
    let e = OpenArray::open(&member(&bad, "a.npy"), &Limits::default())
        .err()
        .ok_or("no error")?;
    assert!(e.message.starts_with("not a valid .npz (zip) archive"));

    // Zip bomb guard: highly compressible member against a low ratio limit.
    let zeros = npy("<f4", "(100000,)", &vec![0u8; 400_000]);
    let broken = npy("<f4", "(10,)", &[0; 8]);
    let arch = dir.path().join("z.npz");
    write_zip(
        &arch,
        &[("zeros.npy", &zeros, true), ("broken.npy", &broken, true)],
    )?;
    let strict = Limits {
        max_inflate_ratio: 10,
        ..Limits::default()
    };
    let e = OpenArray::open(&member(&arch, "zeros.npy"), &strict)
        .err()
        .ok_or("no error")?;
    assert!(e.message.contains("refusing a possible zip bomb"), "{e}");
    let a = OpenArray::open(&member(&arch, "zeros.npy"), &Limits::default())?;
    let sums = a.map_chunks(30_000, &AtomicBool::new(false), |_, v| v.len())?;
    assert_eq!(sums, vec![30_000, 30_000, 30_000, 10_000]);

    let e = OpenArray::open(&member(&arch, "broken.npy"), &Limits::default())
        .err()
        .ok_or("no error")?;
    assert_eq!(
        e.to_string(),
        format!(
            "{}/broken.npy: truncated: header says 40 bytes of data, file has 8",
            arch.display()
        )
    );
    Ok(())
}

// ---------------------------------------------------------------- discovery

fn touch(dir: &Path, rel: &str) -> R<PathBuf> {
    write(dir, rel, &f32_npy(&[1.0]))
}

#[test]
fn natural_order_and_nested_names() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    for rel in [
        "layer10.npy",
        "layer2.npy",
        "layer1.npy",
        "block10/conv1.npy",
        "block2/conv10.npy",
        "block2/conv9.npy",
        "readme.txt",
        "block2/notes.md",
    ] {
        touch(d, rel)?;
    }
    let found = discover(&[d.to_path_buf()], BatchLayout::Auto, &Limits::default());
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert_eq!(
        names(&found.layers),
        [
            "block2/conv9",
            "block2/conv10",
            "block10/conv1",
            "layer1",
            "layer2",
            "layer10"
        ]
    );
    assert_eq!(
        found.layers[0].parts,
        vec![Location::Npy(d.join("block2/conv9.npy"))]
    );

    // Explicit inputs keep their order; an explicit file is named by its stem.
    let found = discover(
        &[
            d.join("layer10.npy"),
            d.join("layer2.npy"),
            d.join("readme.txt"),
            d.join("gone.npy"),
        ],
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert_eq!(names(&found.layers), ["layer10", "layer2"]);
    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            format!(
                "{}: not a .npy, .npz or .safetensors file",
                d.join("readme.txt").display()
            ),
            format!(
                "{}: no such file or directory",
                d.join("gone.npy").display()
            ),
        ]
    );
    Ok(())
}

#[test]
fn batch_folder_layout() -> R {
    let dir = TempDir::new()?;
    let run = dir.path().join("run");
    for b in ["batch_10", "batch_2", "batch_1"] {
        for f in ["conv1.npy", "conv2.npy", "sub/fc.npy"] {
            touch(&run, &format!("{b}/{f}"))?;
        }
        touch(&run, &format!("{b}/log.txt"))?;
    }
    let limits = Limits::default();
    let found = discover(std::slice::from_ref(&run), BatchLayout::Auto, &limits);
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert_eq!(names(&found.layers), ["conv1", "conv2", "sub/fc"]);
    let parts: Vec<Location> = ["batch_1", "batch_2", "batch_10"]
        .iter()
        .map(|b| Location::Npy(run.join(b).join("conv1.npy")))
        .collect();
    assert_eq!(found.layers[0].parts, parts);
    assert!(found.layers[0].source().ends_with("(+2 more batch files)"));

    let files = discover(std::slice::from_ref(&run), BatchLayout::Files, &limits);
    assert_eq!(files.layers.len(), 9);
    assert_eq!(
        names(&files.layers)[..3],
        ["batch_1/conv1", "batch_1/conv2", "batch_1/sub/fc"]
    );
    assert!(files.layers.iter().all(|l| l.parts.len() == 1));

    // One batch lacks a file: Auto no longer groups, Batches still does.
    std::fs::remove_file(run.join("batch_2/conv2.npy"))?;
    let auto = discover(std::slice::from_ref(&run), BatchLayout::Auto, &limits);
    assert_eq!(auto.layers.len(), 8);
    assert_eq!(auto.layers[0].name, "batch_1/conv1");
    let forced = discover(std::slice::from_ref(&run), BatchLayout::Batches, &limits);
    assert_eq!(names(&forced.layers), ["conv1", "conv2", "sub/fc"]);
    assert_eq!(forced.layers[1].parts.len(), 2);

    // A loose data file beside the sub-folders disables the detection.
    touch(&run, "batch_2/conv2.npy")?;
    touch(&run, "extra.npy")?;
    let auto = discover(&[run], BatchLayout::Auto, &limits);
    assert_eq!(auto.layers.len(), 10);
    Ok(())
}

#[test]
fn symlink_loops_terminate_and_limits_stop_walks() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    touch(d, "a/x.npy")?;
    touch(d, "b.npy")?;
    std::os::unix::fs::symlink(d, d.join("a/loop"))?;
    std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling.npy"))?;
    let found = discover(&[d.to_path_buf()], BatchLayout::Files, &Limits::default());
    assert_eq!(names(&found.layers), ["a/x", "b"]);
    assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
    assert_eq!(
        found.errors[0].path,
        d.join("dangling.npy").display().to_string()
    );

    for i in 0..5 {
        touch(d, &format!("many/f{i}.npy"))?;
    }
    let limits = Limits {
        max_files: 3,
        ..Limits::default()
    };
    let found = discover(&[d.join("many")], BatchLayout::Auto, &limits);
    assert_eq!(names(&found.layers), ["f0", "f1", "f2"]);
    assert_eq!(
        found.errors[0].message,
        "stopped after 3 files (raise the limit with --max-files); the rest of the folder was not scanned"
    );
    Ok(())
}

#[test]
fn non_utf8_names_and_npz_in_folders() -> R {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new()?;
    let d = dir.path();
    let odd = d.join(std::ffi::OsStr::from_bytes(b"caf\xff.npy"));
    std::fs::write(&odd, f32_npy(&[1.0]))?;
    // Short and non-ASCII names of other files are ignored without fuss.
    for other in ["x", "é", "日本.md", ".npy", "ab.np"] {
        std::fs::write(d.join(other), b"")?;
    }
    std::fs::create_dir_all(d.join("sub"))?;
    write_zip(
        &d.join("sub/pack.npz"),
        &[("arr_0.npy", &f32_npy(&[2.0]), false)],
    )?;
    let found = discover(&[d.to_path_buf()], BatchLayout::Auto, &Limits::default());
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert_eq!(names(&found.layers), ["caf\u{FFFD}", "sub/pack/arr_0"]);
    assert_eq!(found.layers[0].parts, vec![Location::Npy(odd)]);
    let a = OpenArray::open(&found.layers[1].parts[0], &Limits::default())?;
    assert_eq!(read_all(&a, 1)?, vec![2.0]);
    Ok(())
}

#[test]
fn deflated_member_longer_than_declared_is_an_error() -> R {
    let dir = TempDir::new()?;
    let vals: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let mut bytes = f32_npy(&vals);
    let real = bytes.len();
    bytes.extend_from_slice(&[7u8; 40]);
    let arch = dir.path().join("lie.npz");
    write_zip(&arch, &[("m.npy", &bytes, true)])?;
    let mut zip = std::fs::read(&arch)?;
    patch_declared_size(&mut zip, real as u32);
    std::fs::write(&arch, &zip)?;
    let a = OpenArray::open(&member(&arch, "m.npy"), &Limits::default())?;
    assert_eq!(a.trailing_bytes, 0);
    let e = a
        .map_chunks(7, &AtomicBool::new(false), |_, _| ())
        .err()
        .ok_or("no error")?;
    assert_eq!(e.path, format!("{}/m.npy", arch.display()));
    assert_eq!(
        e.message,
        format!("inflates to more than its declared {real} bytes")
    );
    Ok(())
}

// ---------------------------------------------------------------- fuzzing

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Opens and, if that works, reads the bytes; only panics count as failures.
    fn try_everything(bytes: &[u8]) -> R {
        let dir = TempDir::new()?;
        let path = write(dir.path(), "f.npy", bytes)?;
        if let Ok(a) = open(&path) {
            let _ = a.map_chunks(3, &AtomicBool::new(false), |_, v| v.len());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_header_text_never_panics(text in "[\\{\\}\\(\\)\\[\\]',: 0-9a-zA-Z<>|_\"\\\\-]{0,80}") {
            let bytes = npy_with_dict(&text, &[0; 16]);
            prop_assert!(try_everything(&bytes).is_ok());
        }

        #[test]
        fn mutated_files_never_panic(
            descr in prop::sample::select(vec!["<f4", ">f8", "<f2", "|V2", ">i2", "|b1", "<u8"]),
            flips in prop::collection::vec((0usize..200, any::<u8>()), 0..6),
            cut in 0usize..200,
        ) {
            let mut bytes = npy(descr, "(3, 5)", &[1u8; 120]);
            for (at, v) in flips {
                let n = bytes.len();
                bytes[at % n] = v;
            }
            bytes.truncate(cut.max(bytes.len().saturating_sub(cut)));
            prop_assert!(try_everything(&bytes).is_ok());
        }
    }
}

fn f32_npy(vals: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy("<f4", &format!("({},)", vals.len()), &data)
}

#[test]
fn a_resident_array_serves_the_same_chunks_without_the_file() -> R {
    // float64 with one value beyond float32's range: the overflow count survives residency.
    let vals = [1.5f64, -2.25, 1e300, 0.0, 7.0, -1e-3, 3.0];
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dir = TempDir::new()?;
    let path = write(dir.path(), "a.npy", &npy("<f8", "(7,)", &data))?;
    let streamed = open(&path)?;
    let want = read_all(&streamed, 3)?;
    let resident = open(&path)?.into_resident(&AtomicBool::new(false))?;
    // The file is gone: every later pass reads memory.
    std::fs::remove_file(&path)?;
    for chunk in [1, 3, 7, 100] {
        assert_eq!(read_all(&resident, chunk)?, want, "chunk {chunk}");
        assert_eq!(resident.f64_overflows(), 1);
    }
    assert_eq!(want[2], f32::INFINITY);
    Ok(())
}

#[test]
fn recycled_buffers_never_leak_into_the_next_array() -> R {
    // Each array is made resident, checked, and dropped, which hands its buffer to the next
    // read on this thread: a longer one, a shorter one, a float16 one, an empty one.
    let dir = TempDir::new()?;
    let f16: Vec<u8> = [1.0f32, -2.0, 0.5]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let cases: Vec<(Vec<u8>, Vec<f32>)> = vec![
        (f32_npy(&[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0]),
        (
            f32_npy(&(0..50).map(|i| i as f32).collect::<Vec<_>>()),
            (0..50).map(|i| i as f32).collect(),
        ),
        (f32_npy(&[-7.0, 8.0]), vec![-7.0, 8.0]),
        (npy("<f2", "(3,)", &f16), vec![1.0, -2.0, 0.5]),
        (f32_npy(&[]), vec![]),
        (f32_npy(&[9.0; 40]), vec![9.0; 40]),
    ];
    for (k, (bytes, want)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("{k}.npy"), bytes)?;
        let a = open(&path)?.into_resident(&AtomicBool::new(false))?;
        assert_eq!(read_all(&a, 1000)?, *want, "case {k}");
        drop(a);
    }
    Ok(())
}
