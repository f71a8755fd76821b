//! Headless views of an [`Analysis`]: text, JSON, CSV and Markdown on stdout, and exports.

use crate::analysis::Analysis;

/// Output formats of `calibscope report`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
    Csv,
    Markdown,
}

/// Renders the whole analysis in one format.
pub fn render(analysis: &Analysis, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(analysis).unwrap_or_default(),
        _ => format!("{} layers\n", analysis.layers.len()),
    }
}
