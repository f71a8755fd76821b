//! Command-line definitions (clap). `main.rs` turns these into library calls.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "calibscope",
    version,
    about = "See how each quantization calibration method would clip and distort your activation dumps",
    long_about = "Point calibscope at .npy/.npz activation dumps (files, archives or folders). \
With a terminal it opens an interactive view; `calibscope report` prints the same analysis. \
With no path it opens the bundled sample dumps.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the analysis to stdout (text, JSON, CSV or Markdown) and optionally export ranges.
    Report(ReportArgs),
}

/// The bare command: the terminal UI (or the text report when stdout is not a terminal).
#[derive(Args, Debug)]
pub struct RunArgs {
    /// .npy files, .npz archives or folders of them (default: the bundled samples).
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// .npy files, .npz archives or folders of them (default: the bundled samples).
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Exit with status 3 when a warning is raised: `warnings` for any, or a comma-separated
    /// list of kinds (e.g. `fp16_overflow,nan_inf`).
    #[arg(long, value_name = "KINDS")]
    pub fail_on: Option<String>,
    /// Also write the chosen ranges: `trt-cache FILE` (TensorRT calibration cache) or
    /// `json FILE` ({layer: {min, max, scale, zero_point}}).
    #[arg(long, num_args = 2, value_names = ["KIND", "FILE"])]
    pub export: Option<Vec<String>>,
    /// Method whose ranges are exported: recommended, minmax, ema, entropy, mse, percentile,
    /// or a label such as "percentile 99.99".
    #[arg(long, default_value = "recommended")]
    pub method: String,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

#[derive(Args, Debug, Clone)]
pub struct AnalysisArgs {
    /// Integer bit width (2..=16).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(2..=16), global = true)]
    pub bits: u8,
    /// Quantization scheme.
    #[arg(long, value_enum, default_value_t = SchemeArg::Symmetric, global = true)]
    pub scheme: SchemeArg,
    /// Percentiles for the percentile method, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "99.9,99.99,99.999",
        global = true
    )]
    pub percentile: Vec<f64>,
    /// Averaging constant of the moving-average min-max.
    #[arg(long, default_value_t = 0.01, global = true)]
    pub ema_constant: f64,
    /// Axis that splits a tensor into calibration batches, or `none`.
    #[arg(long, default_value = "0", value_parser = parse_axis, global = true)]
    pub batch_axis: Axis,
    /// How folders of sub-folders are read (see README "Batch layouts").
    #[arg(long, value_enum, default_value_t = LayoutArg::Auto, global = true)]
    pub layout: LayoutArg,
    /// Best SQNR below this (dB) flags a sensitive layer.
    #[arg(long, default_value_t = 20.0, global = true)]
    pub sqnr_floor: f64,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Largest .npy header accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, global = true)]
    pub max_header_bytes: usize,
    /// Largest inflate ratio accepted for a compressed .npz member.
    #[arg(long, default_value_t = 1024, global = true)]
    pub max_inflate_ratio: u64,
    /// Most files a folder walk visits.
    #[arg(long, default_value_t = 100_000, global = true)]
    pub max_files: usize,
}

/// `--batch-axis N` or `none`.
#[derive(Clone, Copy, Debug)]
pub struct Axis(pub Option<usize>);

fn parse_axis(s: &str) -> Result<Axis, String> {
    if s.eq_ignore_ascii_case("none") {
        Ok(Axis(None))
    } else {
        s.parse()
            .map(|n| Axis(Some(n)))
            .map_err(|_| format!("expected an axis number or `none`, got `{s}`"))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Csv,
    Markdown,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchemeArg {
    Symmetric,
    Affine,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LayoutArg {
    /// Batch folders when every sub-folder holds the same file names.
    Auto,
    /// Every file is its own layer.
    Files,
    /// Sub-folders are calibration batches; the same file name is the same layer.
    Batches,
}
