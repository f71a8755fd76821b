//! Helpers shared by the integration tests: hand-built `.npy` bytes and zips, and the binary.
#![allow(dead_code, clippy::unwrap_used)]

use assert_cmd::Command;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use calibscope::source::{LayerSpec, Location};

pub type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A version 1.0 `.npy` with the given header dict text, padded like numpy does.
pub fn npy_with_dict(dict: &str, data: &[u8]) -> Vec<u8> {
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

/// A little-endian float32 `.npy` file in C or Fortran order (`values` in file order).
pub fn write_f32_npy(path: &Path, shape: &[usize], fortran: bool, values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let f = if fortran { "True" } else { "False" };
    let dict = format!("{{'descr': '<f4', 'fortran_order': {f}, 'shape': {shape}, }}");
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, npy_with_dict(&dict, &data)).unwrap();
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> R<PathBuf> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, bytes)?;
    Ok(path)
}

pub fn write_zip(path: &Path, members: &[(&str, &[u8], bool)]) -> R {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::fs::File::create(path)?);
    for (name, bytes, deflate) in members {
        let method = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        w.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )?;
        w.write_all(bytes)?;
    }
    w.finish()?;
    Ok(())
}

pub fn member(archive: &Path, name: &str) -> Location {
    Location::NpzMember {
        archive: archive.to_path_buf(),
        member: name.to_string(),
    }
}

pub fn names(layers: &[LayerSpec]) -> Vec<&str> {
    layers.iter().map(|l| l.name.as_str()).collect()
}

/// Rewrites a single-member zip's declared uncompressed size in both headers.
pub fn patch_declared_size(zip: &mut [u8], size: u32) {
    let find = |zip: &[u8], sig: &[u8]| zip.windows(4).position(|w| w == sig);
    if let Some(local) = find(zip, b"PK\x03\x04") {
        zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    }
    if let Some(central) = find(zip, b"PK\x01\x02") {
        zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    }
}

/// The calibscope binary under test.
pub fn calibscope() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("calibscope"))
}

/// `calibscope report --format json -q ARGS`: (report, exit code, stderr lines).
pub fn json_report(args: &[&str]) -> (Value, i32, Vec<String>) {
    let out = calibscope()
        .arg("report")
        .args(args)
        .args(["--format", "json", "-q"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    (v, out.status.code().unwrap(), stderr)
}
