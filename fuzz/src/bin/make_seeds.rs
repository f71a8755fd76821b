//! Writes the seed corpora: `make_seeds <repo root> <out dir>` creates `<out>/npy`,
//! `<out>/npz` and `<out>/safetensors`. Seeds are small copies of the real dumps (`data/`, a few reference fixtures:
//! same header, shape cut to a few elements) plus hand-made broken files.

use std::io::Write;
use std::path::PathBuf;

use calibscope::source::{Limits, parse_header};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn npy_with_dict(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    npy_with_dict(
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"),
        data,
    )
}

/// The same header with the shape cut to (rows, cols) or (n,), and the first data bytes.
fn shrink(bytes: &[u8]) -> Option<Vec<u8>> {
    let (info, _) = parse_header(bytes, &Limits::default()).ok()?;
    let size = info.dtype.size();
    let (shape, n) = if info.shape.len() >= 2 {
        ("(3, 5)".to_string(), 15)
    } else {
        ("(16,)".to_string(), 16)
    };
    let data_start = bytes.len() - info.len() * size;
    let data = bytes.get(data_start..data_start + n * size)?;
    let f = if info.fortran_order { "True" } else { "False" };
    Some(npy_with_dict(
        &format!(
            "{{'descr': {}, 'fortran_order': {f}, 'shape': {shape}, }}",
            info.descr
        ),
        data,
    ))
}

fn zip(members: &[(&str, &[u8], bool)]) -> R<Vec<u8>> {
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, deflate) in members {
        let method = if *deflate {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        w.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )?;
        w.write_all(bytes)?;
    }
    Ok(w.finish()?.into_inner())
}

/// A `.safetensors` file: the header JSON (padded with spaces to 8 bytes, as the format's writer
/// does) and the data area.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Good and broken `.safetensors` files: every dtype, several tensors, metadata, and each
/// problem the reader checks for.
fn safetensors_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (dtype, size) in [
        ("F64", 8),
        ("F32", 4),
        ("F16", 2),
        ("BF16", 2),
        ("F8_E4M3", 1),
        ("F8_E5M2", 1),
        ("I8", 1),
        ("I16", 2),
        ("I32", 4),
        ("I64", 8),
        ("U8", 1),
        ("U16", 2),
        ("U32", 4),
        ("U64", 8),
        ("BOOL", 1),
        ("C64", 8),
    ] {
        let n = 6 * size;
        let header = format!(r#"{{"t":{{"dtype":"{dtype}","shape":[2,3],"data_offsets":[0,{n}]}}}}"#);
        let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        out.push((format!("dtype_{dtype}"), safetensors(&header, &data)));
    }
    let three = r#"{"__metadata__":{"format":"pt"},"model.layers.0.mlp":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"model.layers.1.mlp":{"dtype":"F16","shape":[4],"data_offsets":[16,24]},"scalar":{"dtype":"F32","shape":[],"data_offsets":[24,28]},"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[28,28]}}"#;
    let data: Vec<u8> = (0..28u8).map(|i| i.wrapping_mul(29)).collect();
    out.push(("several".into(), safetensors(three, &data)));
    for (name, header, data_len) in [
        ("empty_header", "{}", 0),
        ("not_json", "{\"a\": ", 4),
        ("not_object", "[1, 2]", 0),
        (
            "duplicate",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
        ),
        (
            "duplicate_key",
            r#"{"a":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#,
            4,
        ),
        (
            "overlap",
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            24,
        ),
        (
            "out_of_bounds",
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            12,
        ),
        (
            "size_mismatch",
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            16,
        ),
        (
            "overflow",
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}}"#,
            16,
        ),
        (
            "unknown_dtype",
            r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#,
            4,
        ),
        (
            "gap_and_trailing",
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}"#,
            9,
        ),
        (
            "not_an_entry",
            r#"{"a":5,"b":{"dtype":"U8","shape":[1]},"c":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]},"d":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}}"#,
            1,
        ),
    ] {
        out.push((name.to_string(), safetensors(header, &vec![0x3c; data_len])));
    }
    let mut past_end = safetensors(r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, &[1]);
    past_end[..8].copy_from_slice(&1000u64.to_le_bytes());
    out.push(("header_past_end".into(), past_end));
    out.push(("too_short".into(), b"\x05\x00\x00".to_vec()));
    out
}

fn main() -> R {
    let args: Vec<String> = std::env::args().collect();
    let (root, out) = match args.as_slice() {
        [_, root, out] => (PathBuf::from(root), PathBuf::from(out)),
        _ => return Err("usage: make_seeds <repo root> <out dir>".into()),
    };
    let npy_dir = out.join("npy");
    let npz_dir = out.join("npz");
    std::fs::create_dir_all(&npy_dir)?;
    std::fs::create_dir_all(&npz_dir)?;
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();

    let mut sources: Vec<PathBuf> = Vec::new();
    for dir in ["data", "tests/fixtures/reference"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "npy") {
                sources.push(p);
            }
        }
    }
    sources.sort();
    for p in &sources {
        let bytes = std::fs::read(p)?;
        if let Some(small) = shrink(&bytes) {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            seeds.push((format!("real_{}", stem.unwrap_or_default()), small));
        }
    }

    // Every dtype, both orders, Fortran order, versions 2 and 3, scalars and empty arrays.
    for descr in [
        "<f2", ">f2", "<f4", ">f4", "<f8", ">f8", "|i1", "|u1", "<i2", ">u2", "<i4", ">u4", "<i8",
        ">u8", "|b1", "|?", "<V2", "|V2",
    ] {
        let name = descr.replace(['<', '>', '|'], "_");
        seeds.push((format!("dtype{name}"), npy(descr, "(2, 3)", &[0x3c; 48])));
    }
    seeds.push((
        "fortran".into(),
        npy_with_dict(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &[0; 16],
        ),
    ));
    seeds.push(("scalar".into(), npy("<f4", "()", &1f32.to_le_bytes())));
    seeds.push(("empty".into(), npy("<f4", "(0, 4)", &[])));
    let mut v2 = npy("<f4", "(2,)", &[0; 8]);
    v2[6] = 2;
    v2.splice(8..10, [0x36, 0, 0, 0]);
    seeds.push(("version2".into(), v2));
    let mut v3 = npy("<f4", "(2,)", &[0; 8]);
    v3[6] = 3;
    v3.splice(8..10, [0x36, 0, 0, 0]);
    seeds.push(("version3".into(), v3));

    // Broken files (issue 6's list).
    seeds.push(("bad_magic".into(), b"\x93NUMPX\x01\x00\x10\x00{}".to_vec()));
    let mut ver = npy("<f4", "(1,)", &[0; 4]);
    ver[6] = 9;
    seeds.push(("bad_version".into(), ver));
    let mut long = npy("<f4", "(1,)", &[0; 4]);
    long[8] = 0xff;
    long[9] = 0xff;
    seeds.push(("header_past_end".into(), long));
    seeds.push(("not_a_dict".into(), npy_with_dict("[1, 2]", &[])));
    seeds.push((
        "missing_key".into(),
        npy_with_dict("{'descr': '<f4', 'shape': (1,)}", &[0; 4]),
    ));
    seeds.push((
        "extra_key".into(),
        npy_with_dict(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            &[0; 4],
        ),
    ));
    seeds.push((
        "overflow".into(),
        npy("<f4", "(4294967296, 4294967296, 4)", &[]),
    ));
    seeds.push((
        "terabyte".into(),
        npy("<f4", "(1000000, 1000000)", &[0; 16]),
    ));
    seeds.push(("truncated".into(), npy("<f4", "(10,)", &[0; 12])));
    seeds.push(("trailing".into(), npy("<f4", "(1,)", &[0; 9])));
    seeds.push(("object".into(), npy("|O", "(1,)", b"\x80\x04K\x01.")));
    seeds.push(("unknown_dtype".into(), npy("<q9", "(1,)", &[0; 4])));
    seeds.push((
        "structured".into(),
        npy_with_dict(
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        ),
    ));
    // Python literal corners, for py_literal and the nesting check in front of it.
    for (name, dict) in [
        (
            "py2_long",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }",
        ),
        (
            "double_quotes",
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
        ),
        (
            "escapes",
            "{'descr': '\\x3cf\\64', 'fortran_order': False, 'shape': (2,), }",
        ),
        (
            "number_expr",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1+1, 0x1, 1_0-9), }",
        ),
        (
            "set_bytes_floats",
            "{'descr': {b'<f4', 1.5e3, 2j}, 'fortran_order': False, 'shape': (2,), }",
        ),
        (
            "too_deep",
            "{'descr': [('a', '<f4', (2,))], 'fortran_order': False, 'shape': (2,), }",
        ),
    ] {
        seeds.push((format!("literal_{name}"), npy_with_dict(dict, &[0; 8])));
    }

    for (name, bytes) in &seeds {
        std::fs::write(npy_dir.join(name), bytes)?;
    }

    // Archives: stored and deflated members, mixed, a non-.npy member, broken members.
    let good: Vec<&(String, Vec<u8>)> = seeds
        .iter()
        .filter(|(n, _)| n.starts_with("real_"))
        .collect();
    let mut archives: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, pair) in good.chunks(2).enumerate() {
        let members: Vec<(String, &[u8], bool)> = pair
            .iter()
            .enumerate()
            .map(|(j, (n, b))| (format!("{n}.npy"), b.as_slice(), (i + j) % 2 == 0))
            .collect();
        let refs: Vec<(&str, &[u8], bool)> = members
            .iter()
            .map(|(n, b, d)| (n.as_str(), *b, *d))
            .collect();
        archives.push((format!("archive{i}"), zip(&refs)?));
    }
    let f = npy("<f4", "(4,)", &[0x40; 16]);
    archives.push((
        "mixed".into(),
        zip(&[
            ("a.npy", &f, false),
            ("b.npy", &f, true),
            ("notes.txt", b"hello", false),
            ("dir/c.npy", &f, true),
        ])?,
    ));
    archives.push((
        "bomb".into(),
        zip(&[(
            "zeros.npy",
            &npy("|u1", "(200000,)", &vec![0; 200_000]),
            true,
        )])?,
    ));
    let broken: Vec<&(String, Vec<u8>)> = seeds
        .iter()
        .filter(|(n, _)| !n.starts_with("real_") && !n.starts_with("dtype"))
        .collect();
    for (n, b) in broken {
        archives.push((
            format!("member_{n}"),
            zip(&[(&format!("{n}.npy"), b, true)])?,
        ));
    }
    archives.push(("not_a_zip".into(), b"PK\x03\x04 this is not a zip".to_vec()));
    for (name, bytes) in &archives {
        std::fs::write(npz_dir.join(name), bytes)?;
    }
    let st_dir = out.join("safetensors");
    std::fs::create_dir_all(&st_dir)?;
    let st = safetensors_seeds();
    for (name, bytes) in &st {
        std::fs::write(st_dir.join(name), bytes)?;
    }
    println!(
        "{} npy seeds in {}, {} npz seeds in {}, {} safetensors seeds in {}",
        seeds.len(),
        npy_dir.display(),
        archives.len(),
        npz_dir.display(),
        st.len(),
        st_dir.display()
    );
    Ok(())
}
