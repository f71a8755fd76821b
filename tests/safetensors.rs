//! `.safetensors` input (issue 16): decoding of every dtype against values from independent
//! writers (safetensors' own torch writer, ml_dtypes for the 256 codes of each float8), layer
//! names, batch folders, the same analysis as the same array in a `.npy`; then broken files,
//! each with the exact error it must produce, and the real binary over a folder of good and
//! broken files. Fixtures: `scripts/safetensors_fixtures.py`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use calibscope::source::{BatchLayout, DType, Limits, LoadError, Location, OpenArray, discover};
use serde_json::Value;
use tempfile::TempDir;

mod common;
use common::*;

// ---------------------------------------------------------------- helpers

/// A `.safetensors` file from its header JSON (padded with spaces to 8 bytes, as the format's
/// writer does) and data area.
fn st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A valid file of `(name, dtype, shape, bytes)` tensors laid out one after the other.
fn st_tensors(tensors: &[(&str, &str, &[usize], &[u8])]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{begin},{}]}}"#,
            data.len()
        ));
    }
    st(&format!("{{{}}}", entries.join(",")), &data)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tensor(file: &Path, name: &str) -> Location {
    Location::SafetensorsTensor {
        file: file.to_path_buf(),
        tensor: name.to_string(),
    }
}

fn open(location: &Location) -> Result<OpenArray, LoadError> {
    OpenArray::open(location, &Limits::default())
}

/// All values, checking that chunks arrive in order and cover the array exactly.
fn values(a: &OpenArray, chunk: usize) -> R<Vec<f32>> {
    Ok(read(a, chunk)?)
}

fn read(a: &OpenArray, chunk: usize) -> Result<Vec<f32>, LoadError> {
    let chunks = a.map_chunks(chunk, &AtomicBool::new(false), |first, v| {
        (first, v.to_vec())
    })?;
    let mut out = Vec::new();
    for (first, v) in chunks {
        assert_eq!(first, out.len());
        out.extend(v);
    }
    assert_eq!(out.len(), a.info.len());
    Ok(out)
}

/// Float32 bit patterns in hex, as the fixtures give them.
fn hex_bits(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| u32::from_str_radix(h.as_str().unwrap(), 16).unwrap())
        .collect()
}

fn same_bits(got: &[f32], want: &[u32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, &w)) in got.iter().zip(want).enumerate() {
        let w = f32::from_bits(w);
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: {g:e} ({:08x}) where the reference has {w:e} ({:08x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/safetensors")
        .join(name)
}

/// The error opening (or, if it opens, reading) `tensor` of a file with `bytes`; checks that
/// it names the file and the tensor.
fn tensor_error(bytes: &[u8], name: &str) -> R<String> {
    let dir = TempDir::new()?;
    let path = write(dir.path(), "broken.safetensors", bytes)?;
    let loc = tensor(&path, name);
    let e = match open(&loc) {
        Err(e) => e,
        Ok(a) => read(&a, 1000).err().ok_or("expected an error")?,
    };
    assert_eq!(e.path, format!("{}/{name}", path.display()));
    Ok(e.message)
}

/// The error discovery gives for a file with `bytes`, naming the file.
fn file_error(bytes: &[u8]) -> R<String> {
    file_error_with(bytes, &Limits::default())
}

fn file_error_with(bytes: &[u8], limits: &Limits) -> R<String> {
    let dir = TempDir::new()?;
    let path = write(dir.path(), "broken.safetensors", bytes)?;
    let d = discover(std::slice::from_ref(&path), BatchLayout::Auto, limits);
    assert!(d.layers.is_empty(), "{:?}", d.layers);
    let [e] = d.errors.as_slice() else {
        return Err(format!("expected one error, got {:?}", d.errors).into());
    };
    assert_eq!(e.path, path.display().to_string());
    Ok(e.message.clone())
}

// ---------------------------------------------------------------- decoding

#[test]
fn file_written_by_the_safetensors_library_reads_as_torch_converts_it() -> R {
    let path = fixture("torch.safetensors");
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(fixture("torch.json"))?)?;
    let expect = expect.as_object().unwrap();
    let d = discover(
        std::slice::from_ref(&path),
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.layers.len(), expect.len());
    for (name, want) in expect {
        let layer = d
            .layers
            .iter()
            .find(|l| l.name == format!("torch/{name}"))
            .ok_or(format!("no layer torch/{name}"))?;
        assert_eq!(layer.parts, vec![tensor(&path, name)]);
        let a = open(&layer.parts[0])?;
        assert_eq!(a.info.descr, want["dtype"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = serde_json::from_value(want["shape"].clone())?;
        assert_eq!(a.info.shape, shape, "{name}");
        assert!(!a.info.big_endian && !a.info.fortran_order);
        assert_eq!(a.trailing_bytes, 0);
        for chunk in [1, 5, 1 << 20] {
            same_bits(&values(&a, chunk)?, &hex_bits(&want["values"]), name);
        }
    }
    // float64 values beyond float32 are counted, as for .npy.
    let f64s = open(&tensor(&path, "f64"))?;
    values(&f64s, 7)?;
    assert!(f64s.f64_overflows() > 0);
    Ok(())
}

#[test]
fn dtype_names_and_sizes() -> R {
    let dir = TempDir::new()?;
    let cases: [(&str, DType, &str, usize); 15] = [
        ("F64", DType::F64, "float64", 8),
        ("F32", DType::F32, "float32", 4),
        ("F16", DType::F16, "float16", 2),
        ("BF16", DType::BF16, "bfloat16", 2),
        ("F8_E4M3", DType::F8E4M3, "float8_e4m3fn", 1),
        ("F8_E5M2", DType::F8E5M2, "float8_e5m2", 1),
        ("I8", DType::I8, "int8", 1),
        ("I16", DType::I16, "int16", 2),
        ("I32", DType::I32, "int32", 4),
        ("I64", DType::I64, "int64", 8),
        ("U8", DType::U8, "uint8", 1),
        ("U16", DType::U16, "uint16", 2),
        ("U32", DType::U32, "uint32", 4),
        ("U64", DType::U64, "uint64", 8),
        ("BOOL", DType::Bool, "bool", 1),
    ];
    for (code, dtype, name, size) in cases {
        let bytes = vec![0u8; 3 * size];
        let path = write(
            dir.path(),
            &format!("{code}.safetensors"),
            &st_tensors(&[("t", code, &[3], &bytes)]),
        )?;
        let a = open(&tensor(&path, "t"))?;
        assert_eq!(a.info.dtype, dtype);
        assert_eq!((dtype.name(), dtype.size()), (name, size));
        assert_eq!(values(&a, 2)?, vec![0.0; 3], "{code}");
    }
    // Integer extremes round to the nearest float32, BOOL is 0 or 1 whatever the byte.
    let path = write(
        dir.path(),
        "ints.safetensors",
        &st_tensors(&[
            ("u64", "U64", &[1], &u64::MAX.to_le_bytes()),
            ("u32", "U32", &[1], &16777217u32.to_le_bytes()),
            ("b", "BOOL", &[3], &[0, 1, 2]),
        ]),
    )?;
    assert_eq!(values(&open(&tensor(&path, "u64"))?, 4)?, [1.8446744e19]);
    assert_eq!(values(&open(&tensor(&path, "u32"))?, 4)?, [16777216.0]);
    assert_eq!(values(&open(&tensor(&path, "b"))?, 4)?, [0.0, 1.0, 1.0]);
    Ok(())
}

#[test]
fn every_float8_code_matches_ml_dtypes() -> R {
    let table: Value = serde_json::from_str(&std::fs::read_to_string(fixture("float8.json"))?)?;
    assert_eq!(table["ml_dtypes"], "0.7.0");
    let codes: Vec<u8> = (0..=255).collect();
    let dir = TempDir::new()?;
    let path = write(
        dir.path(),
        "f8.safetensors",
        &st_tensors(&[
            ("e4m3", "F8_E4M3", &[256], &codes),
            ("e5m2", "F8_E5M2", &[16, 16], &codes),
        ]),
    )?;
    let e4m3 = values(&open(&tensor(&path, "e4m3"))?, 100)?;
    same_bits(&e4m3, &hex_bits(&table["float8_e4m3fn"]), "float8_e4m3fn");
    let e5m2 = values(&open(&tensor(&path, "e5m2"))?, 100)?;
    same_bits(&e5m2, &hex_bits(&table["float8_e5m2"]), "float8_e5m2");
    // Landmarks of the two formats, independently of the fixture.
    assert_eq!(
        (e4m3[0x7e], e4m3[0x01], e4m3[0xb8]),
        (448.0, 2f32.powi(-9), -1.0)
    );
    assert!(e4m3[0x7f].is_nan() && e4m3[0xff].is_nan() && e4m3[0x78] == 256.0);
    assert_eq!((e5m2[0x7b], e5m2[0x01]), (57344.0, 2f32.powi(-16)));
    assert_eq!((e5m2[0x7c], e5m2[0xfc]), (f32::INFINITY, f32::NEG_INFINITY));
    assert!(e5m2[0x7d].is_nan() && e5m2[0xff].is_nan());
    Ok(())
}

// ---------------------------------------------------------------- names and layouts

#[test]
fn tensors_are_layers_named_file_slash_tensor_in_natural_order() -> R {
    let dir = TempDir::new()?;
    let one = f32_bytes(&[1.0]);
    let bytes = st(
        r#"{"__metadata__":{"format":"pt"},
               "model.layers.10.mlp":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
               "model.layers.2.mlp":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},
               "line\nbreak":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
        &[one.clone(), one.clone(), one].concat(),
    );
    let path = write(dir.path(), "run/acts.SafeTensors", &bytes)?;
    // Given as a file, and inside a folder.
    for input in [path.clone(), dir.path().to_path_buf()] {
        let d = discover(&[input], BatchLayout::Auto, &Limits::default());
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let prefix = if d.layers[0].name.starts_with("run/") {
            "run/"
        } else {
            ""
        };
        assert_eq!(
            names(&d.layers),
            [
                format!("{prefix}acts/line\\nbreak"),
                format!("{prefix}acts/model.layers.2.mlp"),
                format!("{prefix}acts/model.layers.10.mlp"),
            ]
        );
        assert_eq!(d.layers[0].parts, vec![tensor(&path, "line\nbreak")]);
    }
    // The source names the file and the tensor, on one line.
    assert_eq!(
        tensor(&path, "line\nbreak").to_string(),
        format!("{}/line\\nbreak", path.display())
    );
    // A file named only `.safetensors` is no input, as `.npy` is none.
    write(dir.path(), "x/.safetensors", &bytes)?;
    let d = discover(
        &[dir.path().join("x")],
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert!(d.layers.is_empty() && d.errors.is_empty());
    let e = discover(
        &[dir.path().join("x/.safetensors")],
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert_eq!(e.errors[0].message, "not a .npy, .npz or .safetensors file");
    Ok(())
}

#[test]
fn batch_folders_of_safetensors_files() -> R {
    let dir = TempDir::new()?;
    let run = dir.path().join("run");
    for (b, scale) in [(0, 1.0f32), (1, 2.0), (2, -3.0)] {
        let a: Vec<f32> = (0..6).map(|i| scale * i as f32).collect();
        let bytes = st_tensors(&[
            ("model.layers.0.mlp", "F32", &[2, 3], &f32_bytes(&a)),
            (
                "model.layers.1.mlp",
                "F16",
                &[1],
                &half::f16::from_f32(scale).to_le_bytes(),
            ),
        ]);
        write(&run, &format!("batch_{b:03}/acts.safetensors"), &bytes)?;
    }
    let d = discover(
        std::slice::from_ref(&run),
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(
        names(&d.layers),
        ["acts/model.layers.0.mlp", "acts/model.layers.1.mlp"]
    );
    let parts: Vec<Location> = (0..3)
        .map(|b| {
            tensor(
                &run.join(format!("batch_{b:03}/acts.safetensors")),
                "model.layers.0.mlp",
            )
        })
        .collect();
    assert_eq!(d.layers[0].parts, parts);

    // The report sees every batch: 18 values from -15 to 10.
    let (v, code, stderr) = json_report(&[run.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr:?}");
    let l = &v["layers"][0];
    assert_eq!(l["name"], "acts/model.layers.0.mlp");
    assert_eq!(l["dtype"], "float32");
    assert_eq!(l["stats"]["count"], 18);
    assert_eq!(
        (l["stats"]["min"].as_f64(), l["stats"]["max"].as_f64()),
        (Some(-15.0), Some(10.0))
    );
    assert_eq!(v["layers"][1]["stats"]["count"], 3);
    assert_eq!(v["layers"][1]["dtype"], "float16");
    Ok(())
}

/// The same array as a `.npy` and as a tensor gives the same analysis, batch axis included.
#[test]
fn analysed_exactly_like_the_same_npy() -> R {
    let dir = TempDir::new()?;
    let vals: Vec<f32> = (0..4 * 6 * 8)
        .map(|i| ((i * 7919) % 201) as f32 / 10.0 - 10.0 + if i % 37 == 0 { 40.0 } else { 0.0 })
        .collect();
    let data = f32_bytes(&vals);
    write(
        dir.path(),
        "npy/t.npy",
        &npy_with_dict(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 6, 8), }",
            &data,
        ),
    )?;
    write(
        dir.path(),
        "st/t.safetensors",
        &st_tensors(&[("x", "F32", &[4, 6, 8], &data)]),
    )?;
    for extra in [
        &[][..],
        &["--batch-axis", "1"],
        &["--batch-axis", "none"],
        &["--channel-axis", "1"],
    ] {
        let report = |p: &str| {
            let mut args = vec![dir.path().join(p).to_str().unwrap().to_string()];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            json_report(&args)
        };
        let (a, ca, _) = report("npy");
        let (b, cb, _) = report("st");
        assert_eq!((ca, cb), (0, 0));
        let (mut a, mut b) = (a["layers"][0].clone(), b["layers"][0].clone());
        for l in [&mut a, &mut b] {
            let o = l.as_object_mut().unwrap();
            o.remove("name");
            o.remove("source");
        }
        assert_eq!(a, b, "{extra:?}");
    }
    Ok(())
}

#[test]
fn trailing_bytes_are_a_warning_and_gaps_are_ignored() -> R {
    let dir = TempDir::new()?;
    // a at [0, 8), a 4-byte gap, b at [12, 16), then 3 bytes no tensor accounts for.
    let bytes = st(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
            "b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#,
        &[
            f32_bytes(&[1.0, 2.0]),
            vec![9; 4],
            f32_bytes(&[3.0]),
            vec![9; 3],
        ]
        .concat(),
    );
    let path = write(dir.path(), "t.safetensors", &bytes)?;
    let a = open(&tensor(&path, "a"))?;
    let b = open(&tensor(&path, "b"))?;
    assert_eq!(values(&a, 1)?, [1.0, 2.0]);
    assert_eq!(values(&b, 1)?, [3.0]);
    assert_eq!((a.trailing_bytes, b.trailing_bytes), (0, 3));
    let (v, _, _) = json_report(&[path.to_str().unwrap()]);
    let warned: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["kind"] == "trailing_bytes")
        })
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(warned, ["t/b"]);
    Ok(())
}

#[test]
fn file_that_shrinks_or_changes_while_read() -> R {
    let dir = TempDir::new()?;
    let vals: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let bytes = st_tensors(&[("a", "F32", &[1000], &f32_bytes(&vals))]);
    let path = write(dir.path(), "t.safetensors", &bytes)?;
    let a = open(&tensor(&path, "a"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(bytes.len() as u64 - 100)?;
    let e = read(&a, 64).unwrap_err();
    assert!(
        e.message.starts_with(&format!(
            "file changed while reading: {} ended before byte",
            path.display()
        )),
        "{e}"
    );
    assert_eq!(e.path, format!("{}/a", path.display()));
    // Opened again, the shorter file's header is read afresh: the tensor now runs past the end.
    assert_eq!(
        open(&tensor(&path, "a")).err().map(|e| e.message),
        Some(format!(
            "data_offsets [0, 4000] run past the end of the data ({} bytes after the header)",
            4000 - 100
        ))
    );
    Ok(())
}

// ---------------------------------------------------------------- broken files

#[test]
fn header_length_checks() -> R {
    assert_eq!(
        file_error(b"")?,
        "too short to be a .safetensors file (0 bytes)"
    );
    assert_eq!(
        file_error(b"\x05\x00\x00")?,
        "too short to be a .safetensors file (3 bytes)"
    );
    let mut past_end = 1000u64.to_le_bytes().to_vec();
    past_end.extend_from_slice(b"{}");
    assert_eq!(
        file_error(&past_end)?,
        "header length 1000 runs past the end of the file (10 bytes)"
    );
    // A claim past the limit is refused before anything is allocated, however large.
    for n in [(1u64 << 20) + 1, 1 << 40, u64::MAX] {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert_eq!(
            file_error(&b)?,
            format!(
                "header length {n} bytes exceeds the limit of 1048576 bytes \
                 (raise it with --max-header-bytes)"
            )
        );
    }
    // The limit applies to .safetensors headers as to .npy ones.
    let small = Limits {
        max_header_bytes: 16,
        ..Limits::default()
    };
    let good = st_tensors(&[("a", "U8", &[1], &[1])]);
    let n = good.len() - 9;
    assert_eq!(
        file_error_with(&good, &small)?,
        format!(
            "header length {n} bytes exceeds the limit of 16 bytes (raise it with --max-header-bytes)"
        )
    );
    Ok(())
}

#[test]
fn header_that_is_not_a_json_object() -> R {
    let cases: [(&[u8], &str); 9] = [
        (
            b"{\"a\": ",
            "header is not valid JSON: EOF while parsing a value at line 1 column 6",
        ),
        (b"[1, 2]", "header is not a JSON object"),
        (b" \n[{}]", "header is not a JSON object"),
        (b"\t\r\n {} ", "the header lists no tensors"),
        (
            b"{} {}",
            "header is not valid JSON: trailing characters at line 1 column 4",
        ),
        (
            b"{a: 1}",
            "header is not valid JSON: key must be a string at line 1 column 2",
        ),
        (b"{\"a\": \xff}", "header is not valid UTF-8"),
        (b"{}", "the header lists no tensors"),
        (
            b"{\"__metadata__\": {\"a\": \"b\"}}",
            "the header lists no tensors",
        ),
    ];
    for (header, message) in cases {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        assert_eq!(
            file_error(&b)?,
            message,
            "{}",
            String::from_utf8_lossy(header)
        );
    }
    // Nesting deeper than serde_json's limit is an error, not a stack overflow; skipped under
    // an ignored key, it costs nothing.
    let nest = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep = format!(r#"{{"a":{{"shape":{}}}}}"#, nest(100_000));
    assert_eq!(
        file_error(&st(&deep, &[]))?,
        "header is not valid JSON: recursion limit exceeded at line 1 column 140"
    );
    let ignored = format!(r#"{{"a":{{"x":{}}}}}"#, nest(100_000));
    assert_eq!(
        tensor_error(&st(&ignored, &[]), "a")?,
        "header entry is missing 'dtype'"
    );
    Ok(())
}

#[test]
fn bad_entries_fail_only_their_own_tensor() -> R {
    let entry = |name: &str, body: &str| format!(r#""{name}":{body}"#);
    let good = entry(
        "good",
        r#"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
    );
    let cases = [
        (
            r#"5"#,
            "header entry is not an object with dtype, shape and data_offsets",
        ),
        (
            r#"[1, {"a": 2}]"#,
            "header entry is not an object with dtype, shape and data_offsets",
        ),
        (
            r#"{"shape":[1],"data_offsets":[0,4]}"#,
            "header entry is missing 'dtype'",
        ),
        (
            r#"{"dtype":"F32","data_offsets":[0,4]}"#,
            "header entry is missing 'shape'",
        ),
        (
            r#"{"dtype":"F32","shape":[1]}"#,
            "header entry is missing 'data_offsets'",
        ),
        (
            r#"{"dtype":"F32","shape":[1],"dtype":"I32","data_offsets":[0,4]}"#,
            "header entry has 'dtype' twice",
        ),
        (
            r#"{"dtype":4,"shape":[1],"data_offsets":[0,4]}"#,
            "dtype is not a string",
        ),
        (
            r#"{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}"#,
            "unknown dtype 'Q9' (supported: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)",
        ),
        (
            r#"{"dtype":"C64","shape":[1],"data_offsets":[0,8]}"#,
            "dtype 'C64' is not supported (supported: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)",
        ),
        (
            r#"{"dtype":"F8_E8M0","shape":[1],"data_offsets":[0,1]}"#,
            "dtype 'F8_E8M0' is not supported (supported: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)",
        ),
        (
            r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#,
            "shape is not a list of non-negative integers",
        ),
        (
            r#"{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}"#,
            "shape is not a list of non-negative integers",
        ),
        (
            r#"{"dtype":"F32","shape":1,"data_offsets":[0,4]}"#,
            "shape is not a list of non-negative integers",
        ),
        (
            r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#,
            "data_offsets is not a pair of non-negative integers",
        ),
        (
            r#"{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551616,4]}"#,
            "data_offsets is not a pair of non-negative integers",
        ),
        (
            r#"{"dtype":"F32","shape":[1],"data_offsets":[12,8]}"#,
            "data_offsets [12, 8] end before they begin",
        ),
        (
            r#"{"dtype":"F32","shape":[2,2],"data_offsets":[8,20]}"#,
            "data_offsets [8, 20] hold 12 bytes but shape [2, 2] of F32 needs 16",
        ),
        (
            r#"{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[8,24]}"#,
            "shape [4294967296, 4294967296, 4] overflows: too many elements",
        ),
        // A terabyte claim in a small file: refused before anything is allocated.
        (
            r#"{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[8,4000000000008]}"#,
            "data_offsets [8, 4000000000008] run past the end of the data (24 bytes after the header)",
        ),
        (
            r#"{"dtype":"F32","shape":[5],"data_offsets":[8,28]}"#,
            "data_offsets [8, 28] run past the end of the data (24 bytes after the header)",
        ),
    ];
    for (body, message) in cases {
        let bytes = st(&format!("{{{good},{}}}", entry("bad", body)), &[0; 24]);
        assert_eq!(tensor_error(&bytes, "bad")?, message, "{body}");
        // The good tensor of the same file still reads.
        let dir = TempDir::new()?;
        let path = write(dir.path(), "f.safetensors", &bytes)?;
        assert_eq!(values(&open(&tensor(&path, "good"))?, 3)?, [0.0, 0.0]);
    }
    // A long unknown dtype is cut in the message.
    let long = format!(
        r#"{{"dtype":"{}","shape":[1],"data_offsets":[0,4]}}"#,
        "X".repeat(5000)
    );
    assert_eq!(
        tensor_error(&st(&format!("{{{}}}", entry("bad", &long)), &[0; 4]), "bad")?,
        format!(
            "unknown dtype '{}…' (supported: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)",
            "X".repeat(40)
        )
    );
    // Unknown keys in an entry are ignored, as by the format's own reader.
    let extra = st(
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"note":[1,{"x":2}]}}"#,
        &[7],
    );
    let dir = TempDir::new()?;
    let path = write(dir.path(), "extra.safetensors", &extra)?;
    assert_eq!(values(&open(&tensor(&path, "a"))?, 1)?, [7.0]);
    Ok(())
}

#[test]
fn repeated_names_and_overlapping_data() -> R {
    // serde_json alone would keep the second "a" silently.
    let bytes = st(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
            "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},
            "a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
        &f32_bytes(&[1.0, 2.0, 3.0]),
    );
    assert_eq!(
        tensor_error(&bytes, "a")?,
        "the header names this tensor twice"
    );
    let dir = TempDir::new()?;
    let path = write(dir.path(), "dup.safetensors", &bytes)?;
    let d = discover(
        std::slice::from_ref(&path),
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert_eq!(names(&d.layers), ["dup/a", "dup/b"]);
    assert_eq!(values(&open(&tensor(&path, "b"))?, 1)?, [2.0]);

    // Every tensor that shares bytes with another is refused, naming the other; a zero-size
    // tensor shares none, and c, after the overlaps, still reads.
    let bytes = st(
        r#"{"big":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},
            "inner":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},
            "tail":{"dtype":"U8","shape":[4],"data_offsets":[8,12]},
            "none":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},
            "c":{"dtype":"U8","shape":[2],"data_offsets":[12,14]}}"#,
        &[1; 14],
    );
    assert_eq!(
        tensor_error(&bytes, "big")?,
        "data_offsets [0, 10] overlap those of tensor 'inner' [3, 5]"
    );
    assert_eq!(
        tensor_error(&bytes, "inner")?,
        "data_offsets [3, 5] overlap those of tensor 'big' [0, 10]"
    );
    assert_eq!(
        tensor_error(&bytes, "tail")?,
        "data_offsets [8, 12] overlap those of tensor 'big' [0, 10]"
    );
    let path = write(dir.path(), "overlap.safetensors", &bytes)?;
    assert_eq!(
        values(&open(&tensor(&path, "none"))?, 1)?,
        Vec::<f32>::new()
    );
    assert_eq!(values(&open(&tensor(&path, "c"))?, 1)?, [1.0, 1.0]);
    assert_eq!(
        tensor_error(&bytes, "missing")?,
        "no such tensor in the file"
    );
    Ok(())
}

#[test]
fn report_covers_good_tensors_and_names_each_broken_one() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    write(
        d,
        "00_good.npy",
        &npy_with_dict(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            &f32_bytes(&[1.0, -2.0]),
        ),
    )?;
    let mut past_end = 5000u64.to_le_bytes().to_vec();
    past_end.extend_from_slice(b"{}");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("01_past_end.safetensors", past_end),
        ("02_not_json.safetensors", st("{\"a\"", &[])),
        (
            "03_mixed.safetensors",
            st(
                r#"{"ok":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                    "dup":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},
                    "dup":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},
                    "c64":{"dtype":"C64","shape":[1],"data_offsets":[12,20]}}"#,
                &f32_bytes(&[3.0, 4.0, 5.0, 6.0, 7.0]),
            ),
        ),
    ];
    for (name, bytes) in &files {
        write(d, name, bytes)?;
    }
    let (v, code, stderr) = json_report(&[d.to_str().unwrap()]);
    assert_eq!(code, 1);
    let mixed = d.join("03_mixed.safetensors");
    let expected = [
        format!(
            "error: {}: header length 5000 runs past the end of the file (10 bytes)",
            d.join("01_past_end.safetensors").display()
        ),
        format!(
            "error: {}: header is not valid JSON: EOF while parsing an object at line 1 column 8",
            d.join("02_not_json.safetensors").display()
        ),
        format!(
            "error: {}/dup: the header names this tensor twice",
            mixed.display()
        ),
        format!(
            "error: {}/c64: dtype 'C64' is not supported (supported: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)",
            mixed.display()
        ),
    ];
    for line in &expected {
        assert!(stderr.contains(line), "missing {line:?} in {stderr:#?}");
    }
    assert_eq!(stderr.len(), expected.len(), "{stderr:#?}");
    let layers = v["layers"].as_array().unwrap();
    let by_name = |n: &str| layers.iter().find(|l| l["name"] == n).unwrap();
    assert_eq!(by_name("00_good")["stats"]["count"], 2);
    let ok = by_name("03_mixed/ok");
    assert!(ok["error"].is_null());
    assert_eq!(ok["stats"]["max"], 4.0);
    assert_eq!(ok["source"], format!("{}/ok", mixed.display()));
    assert_eq!(
        by_name("03_mixed/dup")["error"],
        format!(
            "{}/dup: the header names this tensor twice",
            mixed.display()
        )
    );
    Ok(())
}

#[test]
fn compare_pairs_two_safetensors_files_by_tensor_name() -> R {
    let dir = TempDir::new()?;
    let r: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let t: Vec<f32> = r.iter().map(|x| x + 0.001).collect();
    let file = |v: &[f32]| {
        st_tensors(&[
            ("model.layers.0.mlp", "F32", &[8, 8], &f32_bytes(v)),
            ("only.here", "U8", &[1], &[1]),
        ])
    };
    let reference = write(dir.path(), "ref.safetensors", &file(&r))?;
    let test_bytes = st_tensors(&[("model.layers.0.mlp", "F32", &[8, 8], &f32_bytes(&t))]);
    let test = write(dir.path(), "int8.safetensors", &test_bytes)?;
    let out = calibscope()
        .args([
            "compare",
            reference.to_str().unwrap(),
            test.to_str().unwrap(),
        ])
        .args(["--format", "json", "-q"])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["pairs"].as_array().map(Vec::len), Some(1), "{v}");
    let pair = &v["pairs"][0];
    assert_eq!(pair["name"], "model.layers.0.mlp");
    assert_eq!(pair["metrics"]["count"], 64);
    let max_abs = pair["metrics"]["max_abs_error"].as_f64().unwrap();
    assert!((max_abs - 0.001).abs() < 1e-6, "{max_abs}");
    assert_eq!(v["reference_only"], serde_json::json!(["only.here"]));
    Ok(())
}

// ---------------------------------------------------------------- found by fuzzing

/// safetensors_read: the format's reader accepts JSON whitespace before the header's `{`; we
/// refused it as "not a JSON object".
#[test]
fn fuzz_leading_whitespace_before_the_header_object() -> R {
    let bytes = b"\x08\x00\x00\x00\x00\x00\x00\x00  {  }  ";
    assert_eq!(file_error(bytes)?, "the header lists no tensors");
    let good = st(
        "\n {\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
        &[9],
    );
    let dir = TempDir::new()?;
    let path = write(dir.path(), "ws.safetensors", &good)?;
    assert_eq!(values(&open(&tensor(&path, "a"))?, 1)?, [9.0]);
    Ok(())
}

#[test]
fn a_saved_analysis_of_safetensors_reopens_and_reruns() -> R {
    let dir = TempDir::new()?;
    let run = dir.path().join("run");
    for b in 0..2 {
        let a: Vec<f32> = (0..48)
            .map(|i| ((i * 13 + b * 7) % 17) as f32 - 8.0)
            .collect();
        write(
            &run,
            &format!("batch_{b:03}/acts.safetensors"),
            &st_tensors(&[
                ("model.layers.0.mlp", "F32", &[4, 12], &f32_bytes(&a)),
                (
                    "model.layers.1.mlp",
                    "F8_E4M3",
                    &[4],
                    &[0x38, 0x40, 0xb8, 0x7e],
                ),
            ]),
        )?;
    }
    let saved = dir.path().join("run.calibscope");
    let (plain, code, _) = json_report(&[run.to_str().unwrap()]);
    assert_eq!(code, 0);
    json_report(&[run.to_str().unwrap(), "--save", saved.to_str().unwrap()]);
    let (reopened, code, _) = json_report(&[saved.to_str().unwrap()]);
    assert_eq!((code, &reopened), (0, &plain));
    // A re-run with other bits reads the tensors again through the saved locations.
    let (rerun, code, stderr) = json_report(&[saved.to_str().unwrap(), "--bits", "4"]);
    let (fresh, _, _) = json_report(&[run.to_str().unwrap(), "--bits", "4"]);
    assert_eq!((code, &rerun), (0, &fresh), "{stderr:?}");
    assert_eq!(plain["layers"][1]["dtype"], "float8_e4m3fn");
    Ok(())
}
