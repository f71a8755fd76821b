//! Headless views of an [`Analysis`]: text, JSON, CSV and Markdown on stdout, and exports;
//! [`compare`] does the same for a [`crate::analysis::compare::Comparison`].
//! None of them computes a number; they only arrange the analysis.

pub mod compare;
pub mod csv;
pub mod export;
pub mod fmt;
pub mod markdown;
pub mod text;
pub mod write;

use std::collections::BTreeMap;

use crate::analysis::warnings::WarningKind;
use crate::analysis::{Analysis, LayerAnalysis};

/// Output formats of `calibscope report`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
    Csv,
    Markdown,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Markdown => "md",
        }
    }
}

/// Renders the whole analysis in one format.
pub fn render(analysis: &Analysis, format: Format) -> String {
    match format {
        Format::Text => text::render(analysis),
        Format::Json => json(analysis),
        Format::Csv => csv::render(analysis),
        Format::Markdown => markdown::render(analysis),
    }
}

/// The documented JSON shape (README "JSON output"); non-finite numbers are strings.
pub fn json(analysis: &Analysis) -> String {
    pretty_json(analysis)
}

/// Pretty JSON with a final newline. Serializing plain data into a String cannot fail; fall
/// back to an error object anyway.
pub(crate) fn pretty_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n"))
}

/// Analysed layers from most to least sensitive (lowest best SQNR first).
pub fn ranking(a: &Analysis) -> Vec<&LayerAnalysis> {
    let mut v: Vec<&LayerAnalysis> = a
        .layers
        .iter()
        .filter(|l| l.sensitivity_sqnr_db.is_some_and(|s| !s.is_nan()))
        .collect();
    v.sort_by(|x, y| {
        let (a, b) = (
            x.sensitivity_sqnr_db.unwrap_or(f64::NAN),
            y.sensitivity_sqnr_db.unwrap_or(f64::NAN),
        );
        a.total_cmp(&b).then_with(|| x.name.cmp(&y.name))
    });
    v
}

/// How many layers raised each warning kind.
pub fn warning_counts(a: &Analysis) -> BTreeMap<WarningKind, usize> {
    let mut m = BTreeMap::new();
    for l in &a.layers {
        let mut kinds: Vec<WarningKind> = l.warnings.iter().map(|w| w.kind).collect();
        kinds.dedup();
        kinds.sort();
        kinds.dedup();
        for k in kinds {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

/// Layers that could not be analysed.
pub fn failed_layers(a: &Analysis) -> Vec<&LayerAnalysis> {
    a.layers.iter().filter(|l| l.error.is_some()).collect()
}
