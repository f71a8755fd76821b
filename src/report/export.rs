//! Exports of the chosen ranges: a TensorRT calibration cache and plain JSON ranges.
//! Files are written by [`super::write::write_atomic`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::analysis::{Analysis, LayerAnalysis, MethodResult};
use crate::calib::Scheme;

/// Header of the calibration cache (TensorRT 8.6 EntropyCalibration2 format).
pub const TRT_HEADER: &str = "TRT-8600-EntropyCalibration2";

/// Which method's range to export: the recommended one, or a method by label/name.
pub fn pick<'a>(layer: &'a LayerAnalysis, method: &str) -> Option<&'a MethodResult> {
    if method == "recommended" {
        return layer.recommended_method();
    }
    layer
        .methods
        .iter()
        .find(|m| m.label() == method)
        .or_else(|| layer.methods.iter().find(|m| m.method.name() == method))
}

/// `TRT-8600-EntropyCalibration2` then `name: <f32 scale bits as 8 hex digits>` per layer
/// (big-endian bit pattern, as TensorRT writes it); symmetric int8 scale = amax/127.
pub fn trt_cache(a: &Analysis, method: &str) -> Result<String, String> {
    if a.settings.scheme != Scheme::Symmetric || a.settings.bits != 8 {
        return Err(
            "a TensorRT cache holds symmetric int8 scales: use --scheme symmetric --bits 8".into(),
        );
    }
    let mut out = format!("{TRT_HEADER}\n");
    for l in a.layers.iter().filter(|l| l.error.is_none()) {
        let m = pick(l, method).ok_or_else(|| format!("{}: no method named {method}", l.name))?;
        let _ = writeln!(out, "{}: {:08x}", l.name, (m.scale as f32).to_bits());
    }
    Ok(out)
}

#[derive(Serialize)]
struct Range {
    method: String,
    min: f64,
    max: f64,
    scale: f64,
    zero_point: i64,
}

/// `{layer: {"method", "min", "max", "scale", "zero_point"}}`.
pub fn ranges_json(a: &Analysis, method: &str) -> Result<String, String> {
    let mut map = BTreeMap::new();
    for l in a.layers.iter().filter(|l| l.error.is_none()) {
        let m = pick(l, method).ok_or_else(|| format!("{}: no method named {method}", l.name))?;
        map.insert(
            l.name.clone(),
            Range {
                method: m.label(),
                min: m.range[0],
                max: m.range[1],
                scale: m.scale,
                zero_point: m.zero_point,
            },
        );
    }
    serde_json::to_string_pretty(&map)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}
