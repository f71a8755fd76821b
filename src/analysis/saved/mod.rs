//! Saved analyses: `calibscope report … --save FILE` writes one, `calibscope FILE` and
//! `calibscope report FILE` open it without the dumps.
//!
//! A saved file is a 24-byte header, then the body:
//!
//! | bytes | what |
//! |---|---|
//! | 0..12 | the magic `\x89calibscope\n` (the high first byte marks it binary, as PNG's does) |
//! | 12..16 | the format version, u32 little-endian ([`FORMAT_VERSION`]) |
//! | 16..24 | the body's length in bytes, u64 little-endian |
//! | 24.. | the body: a [`Saved`] in CBOR (RFC 8949) |
//!
//! Why CBOR (the `ciborium` crate): it is self-describing, so the result types' own serde
//! derives are the format (a field a later version adds needs only its derives, see
//! [`FORMAT_VERSION`]; a field the JSON skips when empty still reads back) and any CBOR tool
//! can inspect a file (after the header); it writes
//! each float in the shortest width that keeps every bit (NaN payloads and −0 included), and
//! integers in 1–9 bytes. Formats that lay structs out by position (postcard, bincode) cannot
//! read back a field skipped when empty, which the JSON shape needs. The histograms, the bulk
//! of a file, are already packed ([`PackedHistogram`](crate::histogram::PackedHistogram)).
//!
//! Reading is hostile input: the header is checked first (magic, version, the body's length
//! against the file's), and nothing is allocated from a length the file claims: ciborium reads
//! strings and byte strings in 4 KiB pieces, serde preallocates at most 1 MiB for a sequence
//! whatever its claimed length, and nesting is limited to 256 levels. What decodes is then
//! checked for what the code after it relies on (the `check` module). Every failure is one line
//! naming the file.

mod check;
pub mod shard;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::source::npy::io_message;
use crate::source::{LayerSpec, LoadError};

use super::model::{Analysis, JSON_VERSION, LayerAnalysis, Settings};
use super::options::{GranularityOptions, Options, Progress};
use super::pipeline::{LayerEvent, LayerJob, run_layers};
use super::profile::KeptProfile;
use super::warnings::Thresholds;

pub use shard::{Shard, merge};

/// The first bytes of every saved analysis.
pub const MAGIC: &[u8; 12] = b"\x89calibscope\n";
/// The version of the body's shape. A field added to the result types with its derives reads
/// back from older files when it is an `Option` (missing reads as `None`) or carries
/// `#[serde(default)]`; an older calibscope skips fields it does not know. Any other change (a
/// required field added, a field removed, renamed or changing meaning) bumps this, and files
/// of the other version get a clear error instead of a misreading.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, version (4 bytes) and body length (8 bytes).
pub const HEADER_LEN: usize = MAGIC.len() + 4 + 8;
/// The file name ending that marks a saved analysis even when its header is broken.
pub const EXTENSION: &str = "calibscope";

/// Everything a saved analysis holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Saved {
    /// The calibscope version that wrote it (`merge` refuses to mix versions).
    pub tool: String,
    /// The paths the analysis was run on, as given.
    #[serde(with = "paths")]
    pub inputs: Vec<PathBuf>,
    /// The analysis as every output shows it (its layers' profiles travel in `layers`).
    pub analysis: Analysis,
    /// One per analysis layer, in the same order.
    pub layers: Vec<SavedLayer>,
    /// Which part of a sharded run this is (0/1 when not sharded).
    pub shard: Shard,
}

/// What a re-run needs of one layer besides its result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedLayer {
    /// Its place among all the layers of the (unsharded) run.
    pub position: usize,
    /// Where its values are; `None` for an input that failed before a layer formed.
    pub spec: Option<LayerSpec>,
    /// Passes 1–2 (the histograms), for re-runs without reading the values again.
    pub profile: Option<Arc<KeptProfile>>,
}

/// Paths as bytes (see [`crate::source::path_bytes`]).
mod paths {
    use std::path::PathBuf;

    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    use crate::source::path_bytes;

    struct One<'a>(&'a PathBuf);

    impl serde::Serialize for One<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            path_bytes::serialize(self.0, s)
        }
    }

    struct Owned(PathBuf);

    impl<'de> serde::Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            path_bytes::deserialize(d).map(Owned)
        }
    }

    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for p in v {
            seq.serialize_element(&One(p))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<PathBuf>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of paths")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<PathBuf>, A::Error> {
                let mut out = Vec::new();
                while let Some(Owned(p)) = a.next_element()? {
                    out.push(p);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

impl Saved {
    /// The saved form of `analysis`, made from `specs` (one per layer in order, `None` for
    /// the failed inputs after them) with `inputs` the paths given. Takes the profiles out of
    /// the layers.
    pub fn new(
        mut analysis: Analysis,
        specs: Vec<Option<LayerSpec>>,
        positions: Vec<usize>,
        inputs: Vec<PathBuf>,
        shard: Shard,
    ) -> Saved {
        let layers = analysis
            .layers
            .iter_mut()
            .zip(specs)
            .zip(positions)
            .map(|((l, spec), position)| SavedLayer {
                position,
                spec,
                profile: l.profile.take(),
            })
            .collect();
        Saved {
            tool: env!("CARGO_PKG_VERSION").to_string(),
            inputs,
            analysis,
            layers,
            shard,
        }
    }

    /// The analysis with each layer's profile attached again (for the UI's histograms).
    pub fn into_analysis(self) -> Analysis {
        let mut a = self.analysis;
        for (l, s) in a.layers.iter_mut().zip(self.layers) {
            l.profile = s.profile;
        }
        a
    }

    /// Each layer's spec and result (with its profile), for the UI.
    pub fn into_slots(self) -> Vec<(Option<LayerSpec>, LayerAnalysis)> {
        let specs: Vec<Option<LayerSpec>> = self.layers.iter().map(|l| l.spec.clone()).collect();
        specs.into_iter().zip(self.into_analysis().layers).collect()
    }

    /// The options the analysis was made with; what they do not record (limits, chunking,
    /// the warning thresholds other than the SQNR floor) comes from `base`.
    pub fn options(&self, base: &Options) -> Options {
        let s = &self.analysis.settings;
        Options {
            bits: s.bits,
            scheme: s.scheme,
            percentiles: s.percentiles.clone(),
            ema_constant: s.ema_constant,
            batch_axis: s.batch_axis,
            validate: s.validate,
            folds: s.folds,
            formats: s.formats.clone(),
            thresholds: Thresholds {
                sqnr_floor_db: s.sqnr_floor_db,
                ..base.thresholds.clone()
            },
            granularity: Box::new(GranularityOptions {
                rows: s.granularities.clone(),
                channel_axis: s.channel_axis,
                block_sizes: s.block_sizes.clone(),
                outlier_ratio: s.outlier_ratio,
                outlier_threshold: s.outlier_threshold,
            }),
            ..base.clone()
        }
    }

    /// Every file the analysis read (for the writer's never-overwrite-an-input rule).
    pub fn input_files(&self) -> Vec<&Path> {
        let parts = self
            .layers
            .iter()
            .filter_map(|l| l.spec.as_ref())
            .flat_map(|s| &s.parts)
            .map(crate::source::Location::file);
        self.inputs
            .iter()
            .map(PathBuf::as_path)
            .chain(parts)
            .collect()
    }
}

/// Whether `opts` asks for numbers other than the saved ones (a re-run is then needed).
pub fn needs_rerun(saved: &Saved, opts: &Options) -> bool {
    Settings::of(opts) != saved.analysis.settings
}

/// Whether the saved profiles still describe the layers under `opts`: passes 1–2 depend on
/// the batch axis (per-batch extremes), the channel axis and the outlier threshold (per-channel
/// facts), and validation on the per-fold histograms of the same folds. Otherwise a re-run
/// reads the values again.
pub fn profiles_fit(saved: &Settings, opts: &Options) -> bool {
    saved.batch_axis == opts.batch_axis
        && saved.channel_axis == opts.granularity.channel_axis
        && saved.outlier_threshold == opts.granularity.outlier_threshold
        && (!opts.validate || (saved.validate && saved.folds == opts.folds))
}

/// Runs the saved layers again with `opts`: from their profiles when those fit (only
/// calibration and the metrics pass run, which reads the values; a layer whose values are gone
/// keeps its ranges and says so), else from their files. Failed inputs stay as they were.
pub fn rerun(saved: &Saved, opts: &Options, progress: &Progress) -> Analysis {
    let fit = profiles_fit(&saved.analysis.settings, opts);
    let mut slots: Vec<Option<usize>> = Vec::with_capacity(saved.layers.len());
    let mut jobs = Vec::new();
    for l in &saved.layers {
        match &l.spec {
            Some(spec) => {
                slots.push(Some(jobs.len()));
                jobs.push(LayerJob {
                    spec: spec.clone(),
                    kept: if fit { l.profile.clone() } else { None },
                });
            }
            None => slots.push(None),
        }
    }
    let done: Mutex<Vec<Option<LayerAnalysis>>> = Mutex::new(vec![None; jobs.len()]);
    run_layers(jobs, opts, progress, &|ev| {
        if let LayerEvent::Done { index, layer } = ev
            && let Ok(mut d) = done.lock()
            && let Some(slot) = d.get_mut(index)
        {
            *slot = Some(*layer);
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    let layers = slots
        .iter()
        .zip(&saved.analysis.layers)
        .map(|(slot, old)| match slot {
            Some(i) => done[*i].take().unwrap_or_else(|| LayerAnalysis {
                error: Some(format!("{}: not analysed (cancelled)", old.name)),
                ..old.clone()
            }),
            None => old.clone(),
        })
        .collect();
    Analysis {
        version: JSON_VERSION,
        settings: Settings::of(opts),
        layers,
    }
}

/// The file's bytes: header, then the body. (Writing into memory fails only on a bug.)
pub fn encode(saved: &Saved) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    ciborium::into_writer(saved, &mut body)
        .map_err(|e| format!("cannot encode the saved analysis (a bug: please report it): {e}"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Whether `path` should be opened as a saved analysis: it starts with [`MAGIC`] or is named
/// `*.calibscope` (so a broken one gets the saved-analysis errors, not "not a .npy file").
pub fn is_saved(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == EXTENSION) {
        return true;
    }
    use std::io::Read;
    let mut head = [0u8; MAGIC.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == MAGIC)
}

/// Reads and checks a saved analysis.
pub fn read(path: &Path) -> Result<Saved, LoadError> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| LoadError::new(&name, io_message(&e)))?;
    if !meta.is_file() {
        return Err(LoadError::new(&name, "not a regular file"));
    }
    let bytes = std::fs::read(path).map_err(|e| LoadError::new(&name, io_message(&e)))?;
    decode(&bytes).map_err(|m| LoadError::new(&name, m))
}

/// Decodes a saved analysis from its bytes; the error is the message without the file name.
pub fn decode(bytes: &[u8]) -> Result<Saved, String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(
            "not a saved calibscope analysis (its first bytes are not the \
                    saved-analysis header)"
                .into(),
        );
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    let (version, len) = header[MAGIC.len()..].split_at(4);
    let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if version != FORMAT_VERSION {
        let who = if version > FORMAT_VERSION {
            "a newer"
        } else {
            "an older"
        };
        return Err(format!(
            "saved by {who} calibscope (saved-analysis format {version}; this one reads format \
             {FORMAT_VERSION}): open it with the calibscope that saved it, or analyse the dumps \
             again"
        ));
    }
    let mut claimed = [0u8; 8];
    claimed.copy_from_slice(len);
    let claimed = u64::from_le_bytes(claimed);
    let body = &bytes[HEADER_LEN..];
    let have = body.len() as u64;
    if have < claimed {
        return Err(format!(
            "truncated: the header announces {claimed} bytes of analysis, {have} are there"
        ));
    }
    if have > claimed {
        return Err(format!(
            "{} unexpected bytes after the end of the saved analysis",
            have - claimed
        ));
    }
    let mut rest = body;
    let saved: Saved = ciborium::from_reader(&mut rest).map_err(|e| {
        let at = |offset: usize| offset + HEADER_LEN;
        match e {
            ciborium::de::Error::Io(_) => "corrupt: its contents end early".to_string(),
            ciborium::de::Error::Syntax(o) => format!("corrupt: not valid CBOR at byte {}", at(o)),
            ciborium::de::Error::Semantic(Some(o), m) => {
                format!("corrupt: {m} (at byte {})", at(o))
            }
            ciborium::de::Error::Semantic(None, m) => format!("corrupt: {m}"),
            ciborium::de::Error::RecursionLimitExceeded => "corrupt: nested too deeply".into(),
        }
    })?;
    if !rest.is_empty() {
        return Err(format!(
            "corrupt: {} bytes after the end of the analysis's contents",
            rest.len()
        ));
    }
    check::saved(&saved).map_err(|m| format!("corrupt: {m}"))?;
    Ok(saved)
}
