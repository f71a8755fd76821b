//! Hostile and broken inputs (issue 6): every case is a file written by the test itself, with
//! the exact error it must produce; then the real binary over a folder of one good file and many
//! broken ones (the good one is still reported, exit 1, one stderr line per broken file).
//!
//! Crash inputs found by the fuzz targets (fuzz/, scripts/fuzz) are kept at the end.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use calibscope::source::{
    BatchLayout, Limits, LoadError, Location, OpenArray, discover, parse_header,
};
use tempfile::TempDir;

mod common;
use common::*;

// ---------------------------------------------------------------- helpers

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    npy_with_dict(
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"),
        data,
    )
}

fn open(location: &Location) -> Result<OpenArray, LoadError> {
    OpenArray::open(location, &Limits::default())
}

/// Opens and decodes everything; the first error, if any.
fn load(location: &Location) -> Result<usize, LoadError> {
    let a = open(location)?;
    let n = a.map_chunks(1000, &AtomicBool::new(false), |_, v| v.len())?;
    Ok(n.into_iter().sum())
}

/// The error message for `bytes` written as a `.npy`; checks the error names the file.
fn npy_error(bytes: &[u8]) -> R<String> {
    let dir = TempDir::new()?;
    let path = write(dir.path(), "broken.npy", bytes)?;
    let e = load(&Location::Npy(path.clone()))
        .err()
        .ok_or("expected an error")?;
    assert_eq!(e.path, path.display().to_string());
    assert_eq!(e.to_string(), format!("{}: {}", path.display(), e.message));
    Ok(e.message)
}

/// Offset and length of the first member's compressed data in a zip.
fn member_data(zip: &[u8]) -> (usize, usize) {
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes([zip[i], zip[i + 1], zip[i + 2], zip[i + 3]]);
    let start = 30 + u16_at(26) + u16_at(28);
    (start, u32_at(18) as usize)
}

// ---------------------------------------------------------------- .npy headers

#[test]
fn wrong_magic() -> R {
    assert_eq!(
        npy_error(b"PK\x03\x04 a zip, not a .npy")?,
        "not a .npy file (bad magic bytes)"
    );
    assert_eq!(
        npy_error(b"\x93NUMPX\x01\x00\x10\x00{}")?,
        "not a .npy file (bad magic bytes)"
    );
    assert_eq!(npy_error(b"")?, "not a .npy file (bad magic bytes)");
    assert_eq!(
        npy_error(b"\x93NUMPY\x01")?,
        "too short to be a .npy file (7 bytes)"
    );
    Ok(())
}

#[test]
fn unsupported_version() -> R {
    for (major, minor) in [(0u8, 0u8), (1, 1), (4, 0), (255, 255)] {
        let mut b = f32_npy(&[1.0]);
        b[6] = major;
        b[7] = minor;
        assert_eq!(
            npy_error(&b)?,
            format!("unsupported .npy format version {major}.{minor}")
        );
    }
    Ok(())
}

#[test]
fn header_length_past_the_end() -> R {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&60000u16.to_le_bytes());
    b.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }");
    assert_eq!(
        npy_error(&b)?,
        "header length 60000 runs past the end of the file (67 bytes)"
    );
    // Version 2 has a 4-byte length: past the header limit before past the end.
    let mut b = b"\x93NUMPY\x02\x00".to_vec();
    b.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
    assert_eq!(
        npy_error(&b)?,
        "header length 2147483647 bytes exceeds the limit of 1048576 bytes \
         (raise it with --max-header-bytes)"
    );
    // A version 2 header cut inside its length field.
    assert_eq!(
        npy_error(b"\x93NUMPY\x02\x00\x10\x00\x00")?,
        "too short to be a .npy file (11 bytes)"
    );
    Ok(())
}

#[test]
fn header_not_a_dict() -> R {
    for text in [
        "[1, 2]",
        "__import__('os').system('true')",
        "",
        "'descr'",
        "(1, 2)",
    ] {
        assert_eq!(
            npy_error(&npy_with_dict(text, &[]))?,
            "header is not a dict",
            "{text:?}"
        );
    }
    assert_eq!(
        npy_error(&npy_with_dict("{'descr': '<f4', 'shape': (1,)", &[]))?,
        "header dict is malformed: expected ',' or '}'"
    );
    assert_eq!(
        npy_error(&npy_with_dict("{'descr': '<f4'} extra", &[]))?,
        "header dict is malformed: unexpected text after the dict"
    );
    // Nesting is bounded (no stack overflow on a header of brackets).
    let deep = format!("{{'descr': {}1{}}}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(
        npy_error(&npy_with_dict(&deep, &[]))?,
        "header dict is malformed: nested too deeply"
    );
    Ok(())
}

#[test]
fn literal_is_checked_before_it_is_parsed() -> R {
    // Each of these levels made py_literal's grammar redo the work of the levels inside it (a
    // list's last item is parsed twice, a failed dict is retried as a set): 20 nested lists took
    // 8 s, 14 nested braces 33 s. The depth check refuses them before parsing.
    for (open, close) in [("[", "]"), ("{", "}"), ("(1, ", ")")] {
        let dict = format!(
            "{{'descr': {}1{}, 'fortran_order': False, 'shape': (1,)}}",
            open.repeat(20),
            close.repeat(20)
        );
        assert_eq!(
            npy_error(&npy_with_dict(&dict, &[]))?,
            "header dict is malformed: nested too deeply",
            "{open}"
        );
    }
    let cases = [
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,]}",
            "unexpected ']'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}}",
            "unexpected text after the dict",
        ),
        (
            "{'descr': '<f4\n', 'fortran_order': False, 'shape': (1,)}",
            "unterminated string",
        ),
        // py_literal's `\N{...}` escape runs to the next '}', across quotes.
        (
            "{'descr': '\\N{'}', 'fortran_order': False, 'shape': (1,)}",
            "unsupported \\N escape",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}",
            "not a Python literal at column 54",
        ),
    ];
    for (dict, message) in cases {
        assert_eq!(
            npy_error(&npy_with_dict(dict, &[0; 4]))?,
            format!("header dict is malformed: {message}"),
            "{dict}"
        );
    }
    // A zero dimension makes the element count 0 whatever the others are (npyz's own header
    // reader multiplies them all out, and overflows).
    let dir = TempDir::new()?;
    let p = write(
        dir.path(),
        "z.npy",
        &npy("<f4", "(0, 4294967296, 4294967296)", &[]),
    )?;
    assert_eq!(load(&Location::Npy(p))?, 0);
    Ok(())
}

#[test]
fn missing_extra_and_repeated_keys() -> R {
    let cases = [
        (
            "{'fortran_order': False, 'shape': (1,)}",
            "header is missing key 'descr'",
        ),
        (
            "{'descr': '<f4', 'shape': (1,)}",
            "header is missing key 'fortran_order'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False}",
            "header is missing key 'shape'",
        ),
        ("{}", "header is missing key 'descr'"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'evil': 'x'}",
            "header has unexpected key 'evil'",
        ),
        (
            "{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}",
            "header has key 'descr' twice",
        ),
        (
            "{1: '<f4', 'fortran_order': False, 'shape': (1,)}",
            "header dict has a key that is not a string",
        ),
        (
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "fortran_order is not True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
            "shape is not a tuple",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 'a')}",
            "shape is not a tuple of non-negative integers",
        ),
    ];
    for (dict, message) in cases {
        assert_eq!(npy_error(&npy_with_dict(dict, &[0; 4]))?, message, "{dict}");
    }
    Ok(())
}

#[test]
fn element_count_overflow() -> R {
    let cases = [
        ("(4294967296, 4294967296, 2)", "<f4"),
        ("(18446744073709551615, 2)", "|u1"),
        ("(2305843009213693952,)", "<f8"),
        ("(184467440737095516160,)", "|u1"),
    ];
    for (shape, descr) in cases {
        assert_eq!(
            npy_error(&npy(descr, shape, &[]))?,
            format!("shape {shape} overflows: too many elements")
        );
    }
    Ok(())
}

#[test]
fn terabyte_claim_in_a_small_file_allocates_nothing() -> R {
    // 2^40 float32 = 4 TiB, claimed by a 144-byte file. Sizing anything from the header would
    // abort the test process (no such allocation succeeds), so reaching the asserts is the check.
    assert_eq!(
        npy_error(&npy("<f4", "(1048576, 1048576)", &[0; 16]))?,
        "truncated: header says 4398046511104 bytes of data, file has 16"
    );
    // The same through the in-memory parser, and as an .npz member (checked against the
    // member's size, not the archive's).
    let b = npy("<f8", "(1099511627776,)", &[0; 8]);
    assert_eq!(
        parse_header(&b, &Limits::default()).err().as_deref(),
        Some("truncated: header says 8796093022208 bytes of data, file has 8")
    );
    let dir = TempDir::new()?;
    let arch = dir.path().join("t.npz");
    write_zip(&arch, &[("big.npy", &b, true), ("big2.npy", &b, false)])?;
    for m in ["big.npy", "big2.npy"] {
        let e = load(&member(&arch, m)).err().ok_or("no error")?;
        assert_eq!(
            e.message,
            "truncated: header says 8796093022208 bytes of data, file has 8"
        );
    }
    Ok(())
}

#[test]
fn truncated_data() -> R {
    let full = f32_npy(&[1.0; 100]);
    for cut in [1, 4, 399] {
        assert_eq!(
            npy_error(&full[..full.len() - cut])?,
            format!(
                "truncated: header says 400 bytes of data, file has {}",
                400 - cut
            )
        );
    }
    // Cut inside the header text.
    assert_eq!(
        npy_error(&full[..40])?,
        "header length 118 runs past the end of the file (40 bytes)"
    );
    Ok(())
}

#[test]
fn object_dtype_and_pickles_are_refused() -> R {
    // A pickle that would run `os.system("touch PWNED")` if it were ever unpickled.
    let pickle = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0btouch PWNED\x94\x85\x94R\x94.";
    for descr in ["|O", "<O", "O", "|O8"] {
        assert_eq!(
            npy_error(&npy(descr, "(1,)", pickle))?,
            format!(
                "object dtype '{descr}' (pickled Python objects) is not supported; \
                 pickles are never loaded"
            )
        );
    }
    // A bare pickle file named .npy.
    assert_eq!(npy_error(pickle)?, "not a .npy file (bad magic bytes)");
    Ok(())
}

#[test]
fn unknown_and_unsupported_dtype_strings() -> R {
    let cases = [
        ("<q9", "unknown dtype '<q9'"),
        ("", "unknown dtype ''"),
        ("<", "unknown dtype '<'"),
        ("<f", "float dtype '<f' is not supported"),
        ("<f3", "float dtype '<f3' is not supported"),
        ("<i3", "unknown dtype '<i3'"),
        (
            "<i99999999999999999999999",
            "unknown dtype '<i99999999999999999999999'",
        ),
        ("<f4 ", "unknown dtype '<f4 '"),
        ("float32", "unknown dtype 'float32'"),
        ("<c8", "complex dtype '<c8' is not supported"),
        ("<U8", "string dtype '<U8' is not supported"),
        ("|S1", "string dtype '|S1' is not supported"),
        ("<M8[s]", "datetime dtype '<M8[s]' is not supported"),
        ("<m8[s]", "timedelta dtype '<m8[s]' is not supported"),
        (
            "|V8",
            "void dtype '|V8' is not supported (only 2-byte void, read as bfloat16)",
        ),
        // Version 1 headers are latin-1: the UTF-8 bytes of 'é' read as two characters.
        ("\u{e9}4", "unknown dtype '\u{c3}\u{a9}4'"),
    ];
    for (descr, message) in cases {
        assert_eq!(
            npy_error(&npy(descr, "(1,)", &[0; 8]))?,
            message,
            "{descr:?}"
        );
    }
    assert_eq!(
        npy_error(&npy_with_dict(
            "{'descr': None, 'fortran_order': False, 'shape': (1,)}",
            &[0; 8]
        ))?,
        "descr is not a dtype string"
    );
    Ok(())
}

#[test]
fn header_limit_names_the_flag() -> R {
    let dir = TempDir::new()?;
    let p = write(dir.path(), "a.npy", &f32_npy(&[1.0]))?;
    let e = OpenArray::open(
        &Location::Npy(p),
        &Limits {
            max_header_bytes: 100,
            ..Limits::default()
        },
    )
    .err()
    .ok_or("no error")?;
    assert_eq!(
        e.message,
        "header length 118 bytes exceeds the limit of 100 bytes (raise it with --max-header-bytes)"
    );
    Ok(())
}

// ---------------------------------------------------------------- analysed, not errors

#[test]
fn trailing_garbage_zero_size_and_scalars_are_analysed() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    let mut trailing = f32_npy(&[1.0, -2.0, 3.0]);
    trailing.extend_from_slice(b"garbage!!");
    write(d, "a_trailing.npy", &trailing)?;
    write(d, "b_empty.npy", &npy("<f4", "(0, 8)", &[]))?;
    write(d, "c_empty1d.npy", &npy("<f2", "(0,)", &[]))?;
    write(d, "d_scalar.npy", &npy("<f8", "()", &2.5f64.to_le_bytes()))?;
    write(d, "e_zero_scalar.npy", &npy("|u1", "()", &[0]))?;

    let (v, code, stderr) = json_report(&[d.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr:?}");
    assert!(stderr.is_empty(), "{stderr:?}");
    let layers = v["layers"].as_array().unwrap();
    let by_name = |n: &str| layers.iter().find(|l| l["name"] == n).unwrap();
    assert_eq!(layers.len(), 5);
    for l in layers {
        assert!(l["error"].is_null(), "{}", l["name"]);
        // Empty arrays have no range to calibrate: no methods, and a note saying so.
        let empty = l["stats"]["finite"] == 0;
        let methods = if empty { 0 } else { 7 };
        assert_eq!(
            l["methods"].as_array().unwrap().len(),
            methods,
            "{}",
            l["name"]
        );
        if empty {
            assert!(l["recommended"].is_null());
            assert!(
                l["notes"].to_string().contains("no finite values"),
                "{}",
                l["notes"]
            );
        }
    }

    let t = by_name("a_trailing");
    let kinds: Vec<&str> = t["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"trailing_bytes"), "{kinds:?}");
    assert_eq!(t["stats"]["count"], 3);

    // Zero-size arrays: counted as empty, undefined statistics are null (never NaN in JSON,
    // which serde_json could not even write), nothing divides by zero into an error.
    for name in ["b_empty", "c_empty1d"] {
        let l = by_name(name);
        assert_eq!(l["stats"]["count"], 0);
        assert_eq!(l["stats"]["finite"], 0);
        assert!(l["stats"]["min"].is_null());
        assert!(l["stats"]["mean"].is_null());
        assert_eq!(l["stats"]["zero_fraction"], 0.0);
    }
    assert_eq!(by_name("b_empty")["shape"], serde_json::json!([0, 8]));

    // 0-d scalars: one value.
    let s = by_name("d_scalar");
    assert_eq!(s["shape"], serde_json::json!([]));
    assert_eq!(s["stats"]["count"], 1);
    assert_eq!(s["stats"]["min"], 2.5);
    assert_eq!(s["stats"]["max"], 2.5);
    assert_eq!(s["stats"]["std"], 0.0);
    let z = by_name("e_zero_scalar");
    assert_eq!(z["stats"]["count"], 1);
    assert_eq!(z["stats"]["zero_fraction"], 1.0);

    // The other formats render them too.
    for format in ["text", "csv", "markdown"] {
        calibscope()
            .args(["report", d.to_str().unwrap(), "-q", "--format", format])
            .assert()
            .code(0);
    }
    Ok(())
}

// ---------------------------------------------------------------- .npz

#[test]
fn npz_not_a_zip() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    for (name, bytes) in [
        ("text.npz", b"hello, not a zip".as_slice()),
        ("empty.npz", b"".as_slice()),
        ("npy.npz", f32_npy(&[1.0]).as_slice()),
    ] {
        let p = write(d, name, bytes)?;
        let found = discover(
            std::slice::from_ref(&p),
            BatchLayout::Auto,
            &Limits::default(),
        );
        assert!(found.layers.is_empty());
        assert_eq!(found.errors.len(), 1);
        assert_eq!(found.errors[0].path, p.display().to_string());
        assert_eq!(
            found.errors[0].message,
            "not a valid .npz (zip) archive: invalid Zip archive: Could not find EOCD"
        );
    }
    Ok(())
}

#[test]
fn npz_corrupt_deflated_member() -> R {
    let dir = TempDir::new()?;
    let vals: Vec<f32> = (0..5000).map(|i| (i as f32).sin()).collect();
    let arch = dir.path().join("c.npz");
    write_zip(&arch, &[("m.npy", &f32_npy(&vals), true)])?;
    let good = std::fs::read(&arch)?;
    let (start, len) = member_data(&good);
    // Flip bytes at several places of the deflate stream: each must give an error naming the
    // member, never a panic or wrong values. Which error depends on what the damaged stream
    // decodes to: invalid deflate data or a checksum mismatch ("corrupt member: ..."), or a
    // stream that now inflates past the declared size.
    let declared = f32_npy(&vals).len();
    for at in [len / 4, len / 2, len - 8] {
        let mut bad = good.clone();
        for b in &mut bad[start + at..start + at + 4] {
            *b ^= 0x5a;
        }
        std::fs::write(&arch, &bad)?;
        let e = load(&member(&arch, "m.npy")).err().ok_or("no error")?;
        assert_eq!(e.path, format!("{}/m.npy", arch.display()));
        assert!(
            e.message.starts_with("corrupt member: ")
                || e.message == format!("inflates to more than its declared {declared} bytes"),
            "{}",
            e.message
        );
    }
    // The header itself damaged: its first bytes are at the start of the stream.
    let mut bad = good.clone();
    for b in &mut bad[start..start + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&arch, &bad)?;
    let e = load(&member(&arch, "m.npy")).err().ok_or("no error")?;
    assert_eq!(e.message, "corrupt member: corrupt deflate stream");
    Ok(())
}

#[test]
fn npz_member_that_is_not_npy() -> R {
    let dir = TempDir::new()?;
    let arch = dir.path().join("m.npz");
    let good = f32_npy(&[1.0, 2.0]);
    write_zip(
        &arch,
        &[
            ("good.npy", &good, false),
            ("readme.txt", b"text", true),
            ("fake.npy", b"this is text", true),
        ],
    )?;
    let found = discover(
        std::slice::from_ref(&arch),
        BatchLayout::Auto,
        &Limits::default(),
    );
    assert_eq!(names(&found.layers), ["m/fake", "m/good"]);
    assert_eq!(found.errors.len(), 1);
    assert_eq!(
        found.errors[0].to_string(),
        format!("{}/readme.txt: not a .npy member; skipped", arch.display())
    );
    assert_eq!(load(&member(&arch, "good.npy"))?, 2);
    let e = load(&member(&arch, "fake.npy")).err().ok_or("no error")?;
    assert_eq!(
        e.to_string(),
        format!(
            "{}/fake.npy: not a .npy file (bad magic bytes)",
            arch.display()
        )
    );
    let e = load(&member(&arch, "missing.npy"))
        .err()
        .ok_or("no error")?;
    assert_eq!(e.message, "no such member in the archive");
    Ok(())
}

#[test]
fn npz_zip_bombs() -> R {
    let dir = TempDir::new()?;
    // 1 MiB of zeros deflates about 1000:1.
    let zeros = npy("|u1", "(1048576,)", &vec![0u8; 1 << 20]);
    let arch = dir.path().join("bomb.npz");
    write_zip(&arch, &[("zeros.npy", &zeros, true)])?;
    let honest = std::fs::read(&arch)?;
    let (_, compressed) = member_data(&honest);
    let declared = zeros.len();

    // Honest sizes: fine at the default ratio, refused with a lower one.
    assert_eq!(load(&member(&arch, "zeros.npy"))?, 1 << 20);
    let e = OpenArray::open(
        &member(&arch, "zeros.npy"),
        &Limits {
            max_inflate_ratio: 100,
            ..Limits::default()
        },
    )
    .err()
    .ok_or("no error")?;
    assert_eq!(
        e.message,
        format!(
            "declares {declared} bytes from {compressed} compressed bytes, more than the \
             inflate ratio limit of 100x; refusing a possible zip bomb \
             (raise the limit with --max-inflate-ratio)"
        )
    );

    // Declares 4 GB from a ~1 KiB stream: refused before inflating anything.
    let mut huge = honest.clone();
    patch_declared_size(&mut huge, 4_000_000_000);
    std::fs::write(&arch, &huge)?;
    let e = load(&member(&arch, "zeros.npy")).err().ok_or("no error")?;
    assert_eq!(
        e.message,
        format!(
            "declares 4000000000 bytes from {compressed} compressed bytes, more than the \
             inflate ratio limit of 1024x; refusing a possible zip bomb \
             (raise the limit with --max-inflate-ratio)"
        )
    );

    // Lies the other way: declares a small size (a 16-element array) but inflates to 1 MiB.
    // Reading stops one byte past the declared size.
    let small = npy("|u1", "(16,)", &[]);
    // The header in the stream agrees with the declared size, so the open passes; the stream
    // goes on with 1 MiB of zeros.
    let mut payload = small.clone();
    payload.extend_from_slice(&vec![0u8; 1 << 20]);
    write_zip(&arch, &[("zeros.npy", &payload, true)])?;
    let mut liar = std::fs::read(&arch)?;
    patch_declared_size(&mut liar, (small.len() + 16) as u32);
    std::fs::write(&arch, &liar)?;
    let e = load(&member(&arch, "zeros.npy")).err().ok_or("no error")?;
    assert_eq!(
        e.message,
        format!(
            "inflates to more than its declared {} bytes",
            small.len() + 16
        )
    );
    // And one that declares more than it holds: the data ends early.
    write_zip(
        &arch,
        &[("zeros.npy", &npy("|u1", "(64,)", &[0; 64]), true)],
    )?;
    let mut short = std::fs::read(&arch)?;
    patch_declared_size(&mut short, (small.len() + 64 + 1000) as u32);
    std::fs::write(&arch, &short)?;
    let e = load(&member(&arch, "zeros.npy")).err().ok_or("no error")?;
    assert!(e.message.starts_with("corrupt member: "), "{}", e.message);
    Ok(())
}

// ---------------------------------------------------------------- folders

#[test]
fn folder_with_symlink_loops() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    write(d, "a/x.npy", &f32_npy(&[1.0]))?;
    write(d, "b/y.npy", &f32_npy(&[1.0]))?;
    std::os::unix::fs::symlink(d, d.join("a/up"))?;
    std::os::unix::fs::symlink(d.join("b"), d.join("a/side"))?;
    std::os::unix::fs::symlink(d.join("a"), d.join("b/back"))?;
    // A self-referencing symlink (ELOOP) named like a dump.
    std::os::unix::fs::symlink(d.join("self.npy"), d.join("self.npy"))?;
    let found = discover(&[d.to_path_buf()], BatchLayout::Files, &Limits::default());
    // Every directory is entered once: `b` was already reached through `a/side`.
    assert_eq!(names(&found.layers), ["a/side/y", "a/x"]);
    assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
    assert_eq!(
        found.errors[0].to_string(),
        format!(
            "{}: too many levels of symbolic links",
            d.join("self.npy").display()
        )
    );
    Ok(())
}

#[test]
fn folder_with_unreadable_entries() -> R {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new()?;
    let d = dir.path();
    write(d, "ok.npy", &f32_npy(&[1.0]))?;
    let file = write(d, "locked.npy", &f32_npy(&[1.0]))?;
    write(d, "locked_dir/inner.npy", &f32_npy(&[1.0]))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000))?;
    std::fs::set_permissions(d.join("locked_dir"), std::fs::Permissions::from_mode(0o000))?;
    // Root (as in CI and on the dev machines) reads through mode 000: nothing to test there.
    let root_reads = std::fs::read(&file).is_ok();
    let found = discover(&[d.to_path_buf()], BatchLayout::Files, &Limits::default());
    let opened = found
        .layers
        .iter()
        .map(|l| load(&l.parts[0]))
        .collect::<Vec<_>>();
    std::fs::set_permissions(d.join("locked_dir"), std::fs::Permissions::from_mode(0o755))?;
    if root_reads {
        assert_eq!(names(&found.layers), ["locked", "locked_dir/inner", "ok"]);
        return Ok(());
    }
    assert_eq!(names(&found.layers), ["locked", "ok"]);
    assert_eq!(
        found.errors[0].to_string(),
        format!("{}: permission denied", d.join("locked_dir").display())
    );
    let e = opened[0].as_ref().err().ok_or("no error")?;
    assert_eq!(
        e.to_string(),
        format!("{}: permission denied", file.display())
    );
    assert!(opened[1].is_ok());
    Ok(())
}

#[test]
fn folder_with_non_utf8_names() -> R {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new()?;
    let d = dir.path();
    let odd = d.join(std::ffi::OsStr::from_bytes(b"l\xe4yer\xff.npy"));
    std::fs::write(&odd, f32_npy(&[1.0, 2.0]))?;
    let sub = d.join(std::ffi::OsStr::from_bytes(b"d\x80ir"));
    std::fs::create_dir(&sub)?;
    std::fs::write(sub.join("x.npy"), npy("<f4", "(9,)", &[]))?;
    let found = discover(&[d.to_path_buf()], BatchLayout::Files, &Limits::default());
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert_eq!(
        names(&found.layers),
        ["d\u{FFFD}ir/x", "l\u{FFFD}yer\u{FFFD}"]
    );
    // The real (non-UTF-8) path is kept, so the file opens.
    assert_eq!(found.layers[1].parts[0], Location::Npy(odd));
    assert_eq!(load(&found.layers[1].parts[0])?, 2);
    // A broken file with such a name is reported with a lossy but recognisable name.
    let e = load(&found.layers[0].parts[0]).err().ok_or("no error")?;
    assert!(e.path.contains("d\u{FFFD}ir"), "{}", e.path);
    assert_eq!(
        e.message,
        "truncated: header says 36 bytes of data, file has 0"
    );
    Ok(())
}

#[test]
fn folder_with_thousands_of_files() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    let bytes = f32_npy(&[1.0]);
    for i in 0..3000 {
        std::fs::write(d.join(format!("layer{i}.npy")), &bytes)?;
    }
    std::fs::write(d.join("notes.txt"), b"x")?;
    let found = discover(&[d.to_path_buf()], BatchLayout::Auto, &Limits::default());
    assert!(found.errors.is_empty());
    let expected: Vec<String> = (0..3000).map(|i| format!("layer{i}")).collect();
    assert_eq!(names(&found.layers), expected);

    // Past the file limit the walk stops with an error naming the folder.
    let found = discover(
        &[d.to_path_buf()],
        BatchLayout::Auto,
        &Limits {
            max_files: 1000,
            ..Limits::default()
        },
    );
    assert_eq!(found.layers.len(), 1000);
    assert_eq!(found.layers[999].name, "layer999");
    assert_eq!(
        found.errors[0].to_string(),
        format!(
            "{}: stopped after 1000 files (raise the limit with --max-files); \
             the rest of the folder was not scanned",
            d.display()
        )
    );
    Ok(())
}

// ---------------------------------------------------------------- files changing underneath

#[test]
fn file_that_shrinks_while_being_read() -> R {
    let dir = TempDir::new()?;
    let vals = vec![0.5f32; 1 << 20];
    let path = write(dir.path(), "s.npy", &f32_npy(&vals))?;
    let a = open(&Location::Npy(path.clone()))?;
    // The first chunk processed truncates the file (from the worker thread, while others are
    // reading): later positional reads come up short.
    let cut = AtomicUsize::new(0);
    let e = a
        .map_chunks(1024, &AtomicBool::new(false), |_, _| {
            if cut.fetch_add(1, Ordering::SeqCst) == 0 {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(1000).unwrap();
            }
        })
        .err()
        .ok_or("no error")?;
    assert_eq!(e.path, path.display().to_string());
    assert!(
        e.message.starts_with(&format!(
            "file changed while reading: {} ended before byte",
            path.display()
        )),
        "{}",
        e.message
    );
    // Truncated to nothing between open and read.
    std::fs::write(&path, f32_npy(&vals))?;
    let a = open(&Location::Npy(path.clone()))?;
    std::fs::write(&path, b"")?;
    let e = a
        .map_chunks(1 << 16, &AtomicBool::new(false), |_, v| v.len())
        .err()
        .ok_or("no error")?;
    assert!(e.message.starts_with("file changed while reading"), "{e}");
    // Deleted between open and read.
    std::fs::write(&path, f32_npy(&vals))?;
    let a = open(&Location::Npy(path.clone()))?;
    std::fs::remove_file(&path)?;
    let e = a
        .map_chunks(1 << 16, &AtomicBool::new(false), |_, v| v.len())
        .err()
        .ok_or("no error")?;
    assert_eq!(e.message, "no such file or directory");
    Ok(())
}

#[test]
fn npz_replaced_while_being_read() -> R {
    let dir = TempDir::new()?;
    let arch = dir.path().join("r.npz");
    let vals = vec![1.5f32; 1000];
    write_zip(&arch, &[("m.npy", &f32_npy(&vals), true)])?;
    let a = open(&member(&arch, "m.npy"))?;
    // Replaced by a different archive between the header and the data pass.
    write_zip(&arch, &[("m.npy", &f32_npy(&vals[..10]), true)])?;
    let e = a
        .map_chunks(100, &AtomicBool::new(false), |_, v| v.len())
        .err()
        .ok_or("no error")?;
    assert_eq!(
        e.to_string(),
        format!(
            "{}/m.npy: file changed while reading: {} was replaced",
            arch.display(),
            arch.display()
        )
    );
    // Stored member, archive truncated.
    write_zip(&arch, &[("m.npy", &f32_npy(&vals), false)])?;
    let a = open(&member(&arch, "m.npy"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&arch)?
        .set_len(500)?;
    let e = a
        .map_chunks(100, &AtomicBool::new(false), |_, v| v.len())
        .err()
        .ok_or("no error")?;
    assert_eq!(e.path, format!("{}/m.npy", arch.display()));
    assert!(e.message.starts_with("file changed while reading"), "{e}");
    Ok(())
}

// ---------------------------------------------------------------- the binary

#[test]
fn report_covers_good_files_and_names_each_broken_one() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    write(d, "00_good.npy", &f32_npy(&[1.0, -2.0, 0.5, 3.0]))?;
    let mut version = f32_npy(&[1.0]);
    version[6] = 7;
    let mut past_end = b"\x93NUMPY\x01\x00".to_vec();
    past_end.extend_from_slice(&5000u16.to_le_bytes());
    let broken: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "01_magic.npy",
            b"GIF89a".to_vec(),
            "not a .npy file (bad magic bytes)",
        ),
        (
            "02_version.npy",
            version,
            "unsupported .npy format version 7.0",
        ),
        (
            "03_past_end.npy",
            past_end,
            "header length 5000 runs past the end of the file (10 bytes)",
        ),
        (
            "04_not_dict.npy",
            npy_with_dict("[]", &[]),
            "header is not a dict",
        ),
        (
            "05_missing.npy",
            npy_with_dict("{'descr': '<f4'}", &[]),
            "header is missing key 'fortran_order'",
        ),
        (
            "06_overflow.npy",
            npy("<f4", "(4294967296, 4294967296)", &[]),
            "shape (4294967296, 4294967296) overflows: too many elements",
        ),
        (
            "07_terabyte.npy",
            npy("<f4", "(1000000, 1000000)", &[0; 8]),
            "truncated: header says 4000000000000 bytes of data, file has 8",
        ),
        (
            "08_truncated.npy",
            npy("<f4", "(10,)", &[0; 39]),
            "truncated: header says 40 bytes of data, file has 39",
        ),
        (
            "09_object.npy",
            npy("|O", "(1,)", b"\x80\x04."),
            "object dtype '|O' (pickled Python objects) is not supported; pickles are never loaded",
        ),
        (
            "10_dtype.npy",
            npy("<x4", "(1,)", &[0; 4]),
            "unknown dtype '<x4'",
        ),
        (
            "11_notzip.npz",
            b"not a zip".to_vec(),
            "not a valid .npz (zip) archive: invalid Zip archive: Could not find EOCD",
        ),
    ];
    for (name, bytes, _) in &broken {
        write(d, name, bytes)?;
    }
    let (v, code, stderr) = json_report(&[d.to_str().unwrap()]);
    assert_eq!(code, 1);
    let layers = v["layers"].as_array().unwrap();
    let good = layers.iter().find(|l| l["name"] == "00_good").unwrap();
    assert!(good["error"].is_null());
    assert_eq!(good["stats"]["count"], 4);
    assert_eq!(good["stats"]["max"], 3.0);
    assert!(!good["recommended"].is_null());
    assert_eq!(stderr.len(), broken.len(), "{stderr:#?}");
    for (name, _, message) in &broken {
        let line = format!("error: {}: {message}", d.join(name).display());
        assert!(stderr.contains(&line), "missing {line:?} in {stderr:#?}");
    }
    // The text report says the same and still analyses the good file.
    let out = calibscope()
        .args(["report", d.to_str().unwrap(), "-q"])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("== 00_good =="), "{text}");
    Ok(())
}

#[test]
fn cli_limit_flags_are_applied() -> R {
    let dir = TempDir::new()?;
    let d = dir.path();
    write(d, "a.npy", &f32_npy(&[1.0]))?;
    let zeros = npy("|u1", "(65536,)", &vec![0u8; 65536]);
    write_zip(&d.join("z.npz"), &[("zeros.npy", &zeros, true)])?;
    let (_, code, stderr) = json_report(&[
        d.to_str().unwrap(),
        "--max-header-bytes",
        "64",
        "--max-inflate-ratio",
        "10",
    ]);
    assert_eq!(code, 1);
    assert_eq!(stderr.len(), 2, "{stderr:?}");
    assert!(
        stderr[0].ends_with("exceeds the limit of 64 bytes (raise it with --max-header-bytes)"),
        "{stderr:?}"
    );
    assert!(
        stderr[1]
            .ends_with("refusing a possible zip bomb (raise the limit with --max-inflate-ratio)"),
        "{stderr:?}"
    );
    let (_, code, stderr) = json_report(&[d.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr:?}");
    Ok(())
}

fn f32_npy(vals: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy("<f4", &format!("({},)", vals.len()), &data)
}
