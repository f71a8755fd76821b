//! The `.safetensors` reader: discovery, header checks, every tensor decoded in chunks; and,
//! wherever the format's reference reader (the `safetensors` crate) accepts the file, the same
//! tensors with the same shapes and values.
#![no_main]

use std::sync::atomic::AtomicBool;

use ::safetensors::{Dtype, SafeTensors};
use calibscope::source::{Location, OpenArray, safetensors::parse_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = calibscope_fuzz::scratch("safetensors");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let limits = calibscope_fuzz::limits();
    calibscope_fuzz::discover_and_read(&path, &limits);

    let Ok(reference) = SafeTensors::deserialize(data) else {
        return;
    };
    let header_len = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    if header_len > limits.max_header_bytes as u64 {
        return;
    }
    let ours = parse_header(data, &limits).expect("a file the reference reads has a valid header");
    for (name, view) in reference.tensors() {
        let entry = ours.iter().find(|(n, _)| *n == name);
        let (_, info) = entry.expect("every tensor the reference lists is listed");
        let expected = decode(view.dtype(), view.data());
        let info = match (info, &expected) {
            (Ok(info), Some(_)) => info,
            // The reference keeps the last of a repeated name; we refuse the name.
            (Err(e), _) if e == "the header names this tensor twice" => continue,
            (Err(e), None) if e.starts_with("dtype '") => continue,
            (other, _) => panic!("{name}: {other:?} where the reference reads {:?}", view.dtype()),
        };
        assert_eq!(info.shape, view.shape(), "{name}");
        let location = Location::SafetensorsTensor {
            file: path.clone(),
            tensor: name.clone(),
        };
        let array = OpenArray::open(&location, &limits).expect("a valid tensor opens");
        let chunks = array
            .map_chunks(5, &AtomicBool::new(false), |_, v| v.to_vec())
            .expect("a valid tensor reads");
        let values: Vec<f32> = chunks.into_iter().flatten().collect();
        let expected = expected.unwrap_or_default();
        // Decoded exactly where decoding is plain (F8 has its own exhaustive test).
        if !expected.is_empty() {
            assert_eq!(values.len(), expected.len(), "{name}");
            for (a, b) in values.iter().zip(&expected) {
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{name}");
            }
        }
    }
});

/// The reference's bytes as f32 where that is a one-line decode; empty for the F8 types; `None`
/// for dtypes we do not read.
fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Option<Vec<f32>> {
        Some(
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().unwrap_or([0; N])))
                .collect(),
        )
    }
    match dtype {
        Dtype::F32 => each(bytes, f32::from_le_bytes),
        Dtype::F64 => each(bytes, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => each(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => each(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
        Dtype::I8 => each(bytes, |b| i8::from_le_bytes(b) as f32),
        Dtype::U8 => each(bytes, |b: [u8; 1]| f32::from(b[0])),
        Dtype::BOOL => each(bytes, |b: [u8; 1]| if b[0] != 0 { 1.0 } else { 0.0 }),
        Dtype::I16 => each(bytes, |b| i16::from_le_bytes(b) as f32),
        Dtype::U16 => each(bytes, |b| u16::from_le_bytes(b) as f32),
        Dtype::I32 => each(bytes, |b| i32::from_le_bytes(b) as f32),
        Dtype::U32 => each(bytes, |b| u32::from_le_bytes(b) as f32),
        Dtype::I64 => each(bytes, |b| i64::from_le_bytes(b) as f32),
        Dtype::U64 => each(bytes, |b| u64::from_le_bytes(b) as f32),
        Dtype::F8_E4M3 | Dtype::F8_E5M2 => Some(Vec::new()),
        _ => None,
    }
}
