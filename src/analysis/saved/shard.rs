//! Runs split across processes or machines: `--shard K/N` analyses a deterministic 1/N of the
//! layers and saves it; [`merge`] puts the parts back together as one run.
//!
//! Every part records which shard it is, how many layers the whole run has, a hash of the
//! whole run's layer list, and each layer's place in that list: so merging needs nothing but
//! the parts, refuses parts of different runs or settings, and lays the layers out exactly as
//! one process would have.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analysis::model::{Analysis, JSON_VERSION};
use crate::source::{LayerSpec, LoadError, Location};

use super::{Saved, SavedLayer};

/// Which part of a run a saved analysis is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// K of `--shard K/N` (0 when not sharded).
    pub index: usize,
    /// N (1 when not sharded).
    pub count: usize,
    /// Layers of the whole run, failed inputs included.
    pub total: usize,
    /// [`list_hash`] of the whole run's layer list.
    pub layers_hash: u64,
}

/// The part of a run one process analyses: its layers, the failed inputs it reports (shard 0
/// reports them all), each one's place in the whole run, and the [`Shard`] to record.
#[derive(Debug)]
pub struct Part {
    pub specs: Vec<LayerSpec>,
    pub errors: Vec<LoadError>,
    pub positions: Vec<usize>,
    pub shard: Shard,
}

/// `K/N` with 0 ≤ K < N.
pub fn parse(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--shard {s}: expected K/N with 0 ≤ K < N, e.g. 0/16");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: usize = k.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || k >= n {
        return Err(format!(
            "--shard {s}: K must be below N (shards are numbered 0 to N−1)"
        ));
    }
    Ok((k, n))
}

/// Shard `k` of `n` of the layers `specs` and failed inputs `errors` (all of them for
/// `0/1`, an unsharded run).
pub fn part(specs: &[LayerSpec], errors: &[LoadError], k: usize, n: usize) -> Part {
    let mine = select(specs, k, n);
    let reported: &[LoadError] = if k == 0 { errors } else { &[] };
    let positions = (mine.iter().copied())
        .chain((0..reported.len()).map(|i| specs.len() + i))
        .collect();
    Part {
        specs: mine.iter().map(|&i| specs[i].clone()).collect(),
        errors: reported.to_vec(),
        positions,
        shard: Shard {
            index: k,
            count: n,
            total: specs.len() + errors.len(),
            layers_hash: list_hash(specs, errors),
        },
    }
}

/// Indices into `specs` (in order) of the layers shard `k` of `n` analyses: layers are dealt
/// largest first (by the bytes of their files) to the shard with the fewest bytes so far
/// (ties: the lower shard), equal sizes in list order. File sizes and names are all it
/// depends on, so every machine given the same inputs deals the same shards.
pub fn select(specs: &[LayerSpec], k: usize, n: usize) -> Vec<usize> {
    if n <= 1 {
        return (0..specs.len()).collect();
    }
    let w = weights(specs);
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| w[b].cmp(&w[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; n];
    let mut mine = Vec::new();
    for i in order {
        let lightest = (0..n).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[lightest] = load[lightest].saturating_add(w[i]);
        if lightest == k {
            mine.push(i);
        }
    }
    mine.sort_unstable();
    mine
}

/// Bytes each layer reads: its files' sizes; an archive's (or a `.safetensors` file's) size is
/// shared evenly by the members the layers use (reading the archive's directory for each
/// member's size would open every archive). A file that cannot be read weighs 0 (its layer
/// fails wherever it goes).
fn weights(specs: &[LayerSpec]) -> Vec<u64> {
    let mut members: HashMap<&Path, u64> = HashMap::new();
    for loc in specs.iter().flat_map(|s| &s.parts) {
        if !matches!(loc, Location::Npy(_)) {
            *members.entry(loc.file()).or_default() += 1;
        }
    }
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let archive_sizes: HashMap<&Path, u64> = members.keys().map(|&a| (a, size(a))).collect();
    specs
        .iter()
        .map(|s| {
            s.parts
                .iter()
                .map(|loc| match loc {
                    Location::Npy(p) => size(p),
                    _ => {
                        let file = loc.file();
                        archive_sizes.get(file).copied().unwrap_or(0)
                            / members.get(file).copied().unwrap_or(1).max(1)
                    }
                })
                .fold(0u64, u64::saturating_add)
        })
        .collect()
}

/// FNV-1a (64-bit) over the layer list: each layer's name and files, then each failed
/// input's path. A fixed, documented hash, so it is the same on every machine and release.
pub fn list_hash(specs: &[LayerSpec], errors: &[LoadError]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain([0xffu8].iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for s in specs {
        eat(s.name.as_bytes());
        for p in &s.parts {
            eat(p.to_string().as_bytes());
        }
    }
    for e in errors {
        eat(e.path.as_bytes());
    }
    h
}

/// Puts the parts of one sharded run (each with the file it came from) back together, in the
/// order one process would have listed the layers. Refuses parts of different calibscope
/// versions, settings or runs, a shard given twice, a layer in two parts, and missing shards.
pub fn merge(parts: Vec<(String, Saved)>) -> Result<Saved, String> {
    let Some((first_name, first)) = parts.first() else {
        return Err("nothing to merge: give the saved parts".into());
    };
    let n = first.shard.count;
    let mut by_index: BTreeMap<usize, &str> = BTreeMap::new();
    for (name, p) in &parts {
        if p.tool != first.tool {
            return Err(format!(
                "{name} was saved by calibscope {}, {first_name} by calibscope {}: merge parts \
                 made by one version",
                p.tool, first.tool
            ));
        }
        if p.analysis.settings != first.analysis.settings {
            return Err(format!(
                "{name} and {first_name} were analysed with different settings ({}): merge \
                 parts of one run",
                settings_diff(&p.analysis, &first.analysis)
            ));
        }
        if p.shard.count != n {
            return Err(format!(
                "{name} is shard {}/{}, {first_name} is shard {}/{n}: merge parts of one run",
                p.shard.index, p.shard.count, first.shard.index
            ));
        }
        if (p.shard.total, p.shard.layers_hash) != (first.shard.total, first.shard.layers_hash) {
            return Err(format!(
                "{name} and {first_name} come from different inputs (their runs' layer lists \
                 differ): merge parts of one run"
            ));
        }
        if let Some(other) = by_index.insert(p.shard.index, name) {
            return Err(format!(
                "shard {}/{n} is given twice: {other} and {name}",
                p.shard.index
            ));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|k| !by_index.contains_key(k))
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(format!(
            "missing shard{s} {} of {n}: {} of {n} parts given",
            missing.join(", "),
            parts.len()
        ));
    }
    let total = first.shard.total;
    let mut slots: Vec<Option<(usize, usize)>> = vec![None; total];
    for (pi, (name, p)) in parts.iter().enumerate() {
        for (li, l) in p.layers.iter().enumerate() {
            let Some(slot) = slots.get_mut(l.position) else {
                return Err(format!("{name}: a layer's position is past the run's end"));
            };
            if let Some((other, _)) = *slot {
                return Err(format!(
                    "layer {} is in both {} and {name}",
                    p.analysis.layers[li].name, parts[other].0
                ));
            }
            *slot = Some((pi, li));
        }
    }
    let have = slots.iter().filter(|s| s.is_some()).count();
    if have != total {
        return Err(format!("the parts hold {have} of the run's {total} layers"));
    }
    let tool = first.tool.clone();
    let inputs = first.inputs.clone();
    let settings = first.analysis.settings.clone();
    let shard = Shard {
        index: 0,
        count: 1,
        ..first.shard
    };
    let mut parts: Vec<Saved> = parts.into_iter().map(|(_, p)| p).collect();
    let mut layers = Vec::with_capacity(total);
    let mut saved_layers = Vec::with_capacity(total);
    for (position, (pi, li)) in slots.into_iter().flatten().enumerate() {
        let p = &mut parts[pi];
        let placeholder = SavedLayer {
            position,
            spec: None,
            profile: None,
        };
        let mut l = std::mem::replace(&mut p.layers[li], placeholder);
        l.position = position;
        saved_layers.push(l);
        layers.push(p.analysis.layers[li].clone());
    }
    Ok(Saved {
        tool,
        inputs,
        analysis: Analysis {
            version: JSON_VERSION,
            settings,
            layers,
        },
        layers: saved_layers,
        shard,
    })
}

/// The settings' names whose values differ, as `bits 8 ≠ 4`.
fn settings_diff(a: &Analysis, b: &Analysis) -> String {
    let (Ok(serde_json::Value::Object(x)), Ok(serde_json::Value::Object(y))) = (
        serde_json::to_value(&a.settings),
        serde_json::to_value(&b.settings),
    ) else {
        return "unknown".into();
    };
    let diffs: Vec<String> = x
        .iter()
        .filter(|(k, v)| y.get(*k) != Some(*v))
        .map(|(k, v)| {
            let w = y.get(k).map_or("none".to_string(), |w| w.to_string());
            format!("{k} {v} ≠ {w}")
        })
        .collect();
    if diffs.is_empty() {
        "in bits the JSON does not show".into()
    } else {
        diffs.join(", ")
    }
}
