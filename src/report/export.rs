//! Exports of the chosen ranges: a TensorRT calibration cache, ONNX Runtime's calibration cache
//! and plain JSON ranges, each under the layer names a [`NameMap`] gives. Files are written by
//! [`super::write::write_atomic`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::analysis::{Analysis, LayerAnalysis, MethodResult};
use crate::calib::{MethodKind, Scheme};

/// Default first line of a TensorRT calibration cache (TensorRT 8.6, EntropyCalibration2):
/// TensorRT refuses a cache whose header names another version, hence `--trt-header`.
pub const TRT_HEADER: &str = "TRT-8600-EntropyCalibration2";

/// Dump names → tensor names in the model graph, for when file names are not the graph's.
/// Layers not listed keep their own name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameMap(BTreeMap<String, String>);

impl NameMap {
    /// Two columns a line, `dump_name tensor_name` (separated by a tab, a comma or spaces);
    /// blank lines and lines starting with `#` are skipped. A name mapped twice is an error.
    pub fn parse(text: &str) -> Result<NameMap, String> {
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut cols = line.split(['\t', ',', ' ']).filter(|c| !c.is_empty());
            let (Some(from), Some(to), None) = (cols.next(), cols.next(), cols.next()) else {
                return Err(format!(
                    "line {}: expected two columns (dump name, tensor name), got {line:?}",
                    i + 1
                ));
            };
            if map.insert(from.to_string(), to.to_string()).is_some() {
                return Err(format!("line {}: {from} is mapped twice", i + 1));
            }
        }
        Ok(NameMap(map))
    }

    /// The exported name of layer `name`.
    pub fn name<'a>(&'a self, name: &'a str) -> &'a str {
        self.0.get(name).map_or(name, String::as_str)
    }
}

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

/// Each analysed layer's exported method, in layer order.
fn picked<'a>(
    a: &'a Analysis,
    method: &str,
) -> Result<Vec<(&'a LayerAnalysis, &'a MethodResult)>, String> {
    a.layers
        .iter()
        .filter(|l| l.error.is_none())
        .map(|l| {
            pick(l, method)
                .map(|m| (l, m))
                .ok_or_else(|| format!("{}: no method named {method}", l.name))
        })
        .collect()
}

/// `header` (e.g. [`TRT_HEADER`]) then `name: <f32 scale bits as 8 hex digits>` per layer
/// (big-endian bit pattern, as TensorRT writes it); symmetric int8 scale = amax/127.
pub fn trt_cache(
    a: &Analysis,
    method: &str,
    header: &str,
    names: &NameMap,
) -> Result<String, String> {
    if a.settings.scheme != Scheme::Symmetric || a.settings.bits != 8 {
        return Err(
            "a TensorRT cache holds symmetric int8 scales: use --scheme symmetric --bits 8".into(),
        );
    }
    if header.contains('\n') {
        return Err("the TensorRT cache header must be one line".into());
    }
    let mut out = format!("{header}\n");
    for (l, m) in picked(a, method)? {
        let _ = writeln!(
            out,
            "{}: {:08x}",
            names.name(&l.name),
            (m.scale as f32).to_bits()
        );
    }
    Ok(out)
}

/// ONNX Runtime's calibration method for ours, where it has one.
fn ort_method(m: MethodKind) -> Option<&'static str> {
    match m {
        MethodKind::Minmax => Some("MinMax"),
        MethodKind::Entropy => Some("Entropy"),
        MethodKind::Percentile => Some("Percentile"),
        MethodKind::Ema | MethodKind::Mse => None,
    }
}

/// ONNX Runtime's calibration cache, as its `save_tensors_data` writes it and
/// `load_tensors_data` / `quantize_static(calibration_cache_path=…)` read it: per tensor the
/// exported range as float32 `lowest` / `highest`. The cache names one calibration method: the
/// exported one when every layer's is the same method ORT has (MinMax, Entropy, Percentile),
/// MinMax otherwise.
pub fn ort_cache(a: &Analysis, method: &str, names: &NameMap) -> Result<String, String> {
    let picked = picked(a, method)?;
    let f32_array = |v: f64| serde_json::json!({"CLS": "numpy.array", "data": f64::from(v as f32), "dtype": "float32"});
    let mut data = serde_json::Map::new();
    for (l, m) in &picked {
        data.insert(
            names.name(&l.name).to_string(),
            serde_json::json!({
                "CLS": "TensorData",
                "lowest": f32_array(m.range[0]),
                "highest": f32_array(m.range[1]),
            }),
        );
    }
    let kinds: Vec<MethodKind> = picked.iter().map(|(_, m)| m.method).collect();
    let same = kinds.first().filter(|k| kinds.iter().all(|x| x == *k));
    let name = same.and_then(|k| ort_method(*k)).unwrap_or("MinMax");
    let cache = serde_json::json!({
        "CLS": "TensorsData",
        "data": data,
        "calibration_method": {"CLS": "CalibrationMethod", "value": format!("CalibrationMethod.{name}")},
        "smooth_quant": false,
    });
    serde_json::to_string(&cache)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct Range {
    method: String,
    min: f64,
    max: f64,
    scale: f64,
    zero_point: i64,
    /// The FP8 E4M3 per-tensor scale, when its rows were measured (`--formats`).
    #[serde(skip_serializing_if = "Option::is_none")]
    fp8: Option<Fp8Scale>,
}

/// A layer's FP8 E4M3 per-tensor scale: `scale` = amax/448 in float32, which is what serving
/// engines load as `input_scale` (x ≈ fp8 · input_scale).
#[derive(Serialize)]
struct Fp8Scale {
    format: &'static str,
    method: String,
    amax: f64,
    scale: f64,
    input_scale: f32,
}

/// The E4M3 per-tensor row to export: with `recommended` the best SQNR (ties: the smaller
/// amax), otherwise the row of the exported method's label.
fn fp8_scale(l: &LayerAnalysis, method: &str) -> Option<Fp8Scale> {
    use crate::analysis::formats::{FormatKind, recommended_fp8};
    let rows = l.fp8_tensor_rows(FormatKind::Fp8E4m3);
    let label = |r: &crate::analysis::FormatResult| {
        let full = r.label();
        full.split_once(' ')
            .map(|(_, m)| m.to_string())
            .unwrap_or(full)
    };
    let row = if method == "recommended" {
        rows.get(recommended_fp8(&rows)?)
    } else {
        rows.iter()
            .find(|r| label(r) == method || r.method.as_deref() == Some(method))
    }?;
    let (amax, scale) = (row.amax?, row.scale()?);
    Some(Fp8Scale {
        format: row.format.name(),
        method: label(row),
        amax,
        scale,
        input_scale: scale as f32,
    })
}

/// `{layer: {"method", "min", "max", "scale", "zero_point"}}`, plus `"fp8": {"format",
/// "method", "amax", "scale", "input_scale"}` where the FP8 E4M3 rows were measured.
pub fn ranges_json(a: &Analysis, method: &str, names: &NameMap) -> Result<String, String> {
    let mut map = BTreeMap::new();
    for (l, m) in picked(a, method)? {
        map.insert(
            names.name(&l.name).to_string(),
            Range {
                method: m.label(),
                min: m.range[0],
                max: m.range[1],
                scale: m.scale,
                zero_point: m.zero_point,
                fp8: fp8_scale(l, method),
            },
        );
    }
    serde_json::to_string_pretty(&map)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}
