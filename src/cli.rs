//! Command-line definitions (clap) and their one conversion into validated library values.
//! Defaults come from the library's own `Default`s, so `--help` shows what the library uses.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use calibscope::analysis::compare::{CompareOptions, FailOn};
use calibscope::analysis::formats::parse_formats;
use calibscope::analysis::options::{GranularityOptions, parse_granularities};
use calibscope::analysis::warnings::{Thresholds, WarningKind};
use calibscope::analysis::{FormatKind, Granularity, Options};
use calibscope::calib::Scheme;
use calibscope::report::export::NameMap;
use calibscope::source::{BatchLayout, Limits};

/// The command line asked for something the tool cannot do: one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn defaults() -> Options {
    Options::default()
}

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
    Report(Box<ReportArgs>),
    /// Compare two runs layer by layer: the float reference against a quantized, float16 or
    /// other-runtime run, and find the first layer where it breaks.
    Compare(CompareArgs),
    /// Combine the saved parts of a sharded run (`report … --shard K/N --save PART`) into one
    /// analysis, as one process would have made it.
    Merge(MergeArgs),
}

/// `calibscope merge PART... [--save ALL] [--format FMT]`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The saved parts, one per shard (in any order).
    #[arg(value_name = "PART", required = true)]
    pub parts: Vec<PathBuf>,
    /// Write the merged analysis here (a saved analysis, like --save of report).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Print the merged analysis in this format (default: text, or nothing with --save).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// No progress messages.
    #[arg(long, short)]
    pub quiet: bool,
}

fn compare_defaults() -> CompareOptions {
    CompareOptions::default()
}

/// `calibscope compare REF TEST`: the compare view in a terminal, else the report.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The reference run: a .npy file, an .npz archive or a folder (batch folders too).
    #[arg(value_name = "REF")]
    pub reference: PathBuf,
    /// The run to check, laid out like REF: layers are matched by name.
    #[arg(value_name = "TEST")]
    pub test: PathBuf,
    /// Absolute tolerance of the allclose check: |t − r| > atol + rtol·|r| fails.
    #[arg(long, default_value_t = compare_defaults().atol)]
    pub atol: f64,
    /// Relative tolerance of the allclose check (relative to the reference).
    #[arg(long, default_value_t = compare_defaults().rtol)]
    pub rtol: f64,
    /// A pair below this SQNR (dB) is degraded.
    #[arg(long, default_value_t = compare_defaults().sqnr_floor_db, allow_negative_numbers = true)]
    pub sqnr_floor: f64,
    /// Exit with status 3 when a pair has one of these kinds, comma-separated (e.g.
    /// `degraded,nan_mismatch,allclose`; README "compare" lists them), or `warnings` for any.
    #[arg(long, value_name = "KINDS")]
    pub fail_on: Option<String>,
    /// Print the report in this format (default: the compare view in a terminal, else text).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub not_for_compare: NotForCompare,
}

/// The analysis's global options, which mean nothing to `compare`: hidden from its help and
/// refused when given (see [`refused_in_compare`]). Declared here with their global types so
/// clap's propagation of the global values fits.
#[derive(Args, Debug)]
pub struct NotForCompare {
    #[arg(long, hide = true)]
    bits: Option<u8>,
    #[arg(long, hide = true, value_enum)]
    scheme: Option<SchemeArg>,
    #[arg(long, hide = true, value_delimiter = ',')]
    percentile: Option<Vec<f64>>,
    #[arg(long, hide = true)]
    ema_constant: Option<f64>,
    #[arg(long, hide = true, value_parser = parse_axis)]
    batch_axis: Option<Axis>,
    #[arg(long, hide = true)]
    folds: Option<usize>,
    #[arg(long, hide = true)]
    validate: bool,
}

/// A usage error if the command line gave `compare` one of the analysis's options (their
/// defaults reach it too, by clap's propagation of global options: only the command line
/// counts).
pub fn refused_in_compare(matches: &clap::ArgMatches) -> Result<(), UsageError> {
    if let Some(sub) = matches.subcommand_matches("compare") {
        for (id, flag) in &ANALYSIS_OPTIONS[..9] {
            if given_in(matches, sub, id) {
                return Err(UsageError(format!(
                    "{flag} is an analysis option; compare does not use it"
                )));
            }
        }
    }
    if let Some(sub) = matches.subcommand_matches("merge") {
        for (id, flag) in ANALYSIS_OPTIONS.iter().chain(&[("layout", "--layout")]) {
            if given_in(matches, sub, id) {
                return Err(UsageError(format!(
                    "{flag} is an analysis option; merge combines parts as they were analysed \
                     (open the merged file with it to re-run)"
                )));
            }
        }
    }
    Ok(())
}

/// The options that shape the numbers (clap id, flag), those `compare` refuses first.
const ANALYSIS_OPTIONS: [(&str, &str); 15] = [
    ("bits", "--bits"),
    ("scheme", "--scheme"),
    ("percentile", "--percentile"),
    ("ema_constant", "--ema-constant"),
    ("batch_axis", "--batch-axis"),
    ("folds", "--folds"),
    ("validate", "--validate"),
    ("formats", "--formats"),
    ("binned", "--binned"),
    ("sqnr_floor", "--sqnr-floor"),
    ("granularities", "--granularities"),
    ("channel_axis", "--channel-axis"),
    ("block_sizes", "--block-sizes"),
    ("outlier_ratio", "--outlier-ratio"),
    ("outlier_threshold", "--outlier-threshold"),
];

fn given_in(top: &clap::ArgMatches, sub: &clap::ArgMatches, id: &str) -> bool {
    [top, sub].iter().any(|m| {
        m.try_get_raw(id).is_ok_and(|v| v.is_some())
            && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    })
}

/// The analysis options given on the command line (clap ids), at the top or in the
/// subcommand: over a saved analysis only these replace its settings.
pub fn given_options(matches: &clap::ArgMatches) -> Vec<&'static str> {
    let sub = matches.subcommand().map_or(matches, |(_, m)| m);
    ANALYSIS_OPTIONS
        .iter()
        .chain(&[("layout", "--layout")])
        .map(|(id, _)| *id)
        .filter(|id| given_in(matches, sub, id))
        .collect()
}

impl CompareArgs {
    /// The one conversion into the library's options (`shared`: the global --layout and
    /// limits), validated by the library's rules.
    pub fn options(&self, shared: &AnalysisArgs) -> Result<CompareOptions, UsageError> {
        let opts = CompareOptions {
            atol: self.atol,
            rtol: self.rtol,
            sqnr_floor_db: self.sqnr_floor,
            limits: Limits {
                max_header_bytes: shared.max_header_bytes,
                max_inflate_ratio: shared.max_inflate_ratio,
                max_files: shared.max_files,
            },
            layout: shared.layout(),
            ..compare_defaults()
        };
        opts.validate().map_err(|e| UsageError(e.to_string()))?;
        Ok(opts)
    }

    /// `--fail-on`, checked before anything is read.
    pub fn fail_on(&self) -> Result<Vec<FailOn>, UsageError> {
        match self.fail_on.as_deref() {
            None => Ok(Vec::new()),
            Some(s) => FailOn::parse_list(s).map_err(|e| UsageError(e.to_string())),
        }
    }
}

/// The bare command: the terminal UI (or the text report when stdout is not a terminal).
#[derive(Args, Debug)]
pub struct RunArgs {
    /// .npy files, .npz archives or folders of them (default: the bundled samples), or one
    /// saved analysis (see --save of report).
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// .npy files, .npz archives or folders of them (default: the bundled samples), or one
    /// saved analysis (see --save of report).
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
    /// Also write the chosen ranges: `trt-cache FILE` (TensorRT calibration cache), `ort FILE`
    /// (ONNX Runtime calibration cache) or `json FILE` ({layer: {min, max, scale, zero_point}}).
    #[arg(long, num_args = 2, value_names = ["KIND", "FILE"])]
    pub export: Option<Vec<String>>,
    /// Method whose ranges are exported: recommended, minmax, ema, entropy, mse, percentile,
    /// or a label such as "percentile 99.99".
    #[arg(long, default_value = "recommended")]
    pub method: String,
    /// First line of an exported TensorRT cache (TensorRT refuses another version's header).
    #[arg(long, default_value = calibscope::report::export::TRT_HEADER)]
    pub trt_header: String,
    /// Two columns a line, dump name and tensor name in the model graph: exported ranges are
    /// named by the second.
    #[arg(long, value_name = "FILE")]
    pub name_map: Option<PathBuf>,
    /// Also write the analysis to FILE (with its histograms): `calibscope FILE` and
    /// `calibscope report FILE` open it again without the dumps.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Analyse only shard K of N (0 ≤ K < N): a deterministic 1/N of the layers, balanced by
    /// bytes; save each part with --save and combine them with `calibscope merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

#[derive(Args, Debug, Clone)]
pub struct AnalysisArgs {
    /// Integer bit width.
    #[arg(long, default_value_t = defaults().bits, global = true)]
    pub bits: u8,
    /// Quantization scheme.
    #[arg(long, value_enum, default_value_t = SchemeArg::of(defaults().scheme), global = true)]
    pub scheme: SchemeArg,
    /// Percentiles for the percentile method, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = defaults().percentiles,
        global = true
    )]
    pub percentile: Vec<f64>,
    /// Averaging constant of the moving-average min-max.
    #[arg(long, default_value_t = defaults().ema_constant, global = true)]
    pub ema_constant: f64,
    /// Axis that splits a tensor into calibration batches, or `none`.
    #[arg(long, default_value_t = Axis(defaults().batch_axis), value_parser = parse_axis, global = true)]
    pub batch_axis: Axis,
    /// How folders of sub-folders are read (see README "Batch layouts").
    #[arg(long, value_enum, default_value_t = LayoutArg::Auto, global = true)]
    pub layout: LayoutArg,
    /// Best SQNR below this (dB) flags a sensitive layer.
    #[arg(long, default_value_t = Thresholds::default().sqnr_floor_db, global = true)]
    pub sqnr_floor: f64,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Largest .npy or .safetensors header accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_header_bytes, global = true)]
    pub max_header_bytes: usize,
    /// Largest inflate ratio accepted for a compressed .npz member.
    #[arg(long, default_value_t = Limits::default().max_inflate_ratio, global = true)]
    pub max_inflate_ratio: u64,
    /// Most files a folder walk visits.
    #[arg(long, default_value_t = Limits::default().max_files, global = true)]
    pub max_files: usize,
    /// Granularity rows: `all` or some of tensor, token, channel, block (comma-separated).
    #[arg(long, value_name = "LIST", default_value_t = Rows(defaults().granularity.rows), global = true)]
    pub granularities: Rows,
    /// The channel axis (negative counts from the end; NCHW conv dumps use 1).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          default_value_t = defaults().granularity.channel_axis, global = true)]
    pub channel_axis: i64,
    /// Block sizes G of the block rows, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          default_values_t = defaults().granularity.block_sizes, global = true)]
    pub block_sizes: Vec<usize>,
    /// A channel whose absmax is at least this multiple of the median channel's is an outlier.
    #[arg(long, value_name = "R", default_value_t = defaults().granularity.outlier_ratio, global = true)]
    pub outlier_ratio: f64,
    /// |x| at or above this is counted as an outlier value (LLM.int8's criterion).
    #[arg(long, value_name = "T", default_value_t = defaults().granularity.outlier_threshold, global = true)]
    pub outlier_threshold: f64,
    /// Validate each method on held-out batches and show its convergence over batches (README
    /// "Held-out validation"); the recommendation then follows held-out SQNR.
    #[arg(long, global = true)]
    pub validate: bool,
    /// Folds of the held-out validation: batch i is in fold i mod K (needs 2·K batches).
    #[arg(long, value_name = "K", default_value_t = defaults().folds, global = true)]
    pub folds: usize,
    /// Deployed formats measured beside the int methods: `all`, `none` or some of fp8_e4m3,
    /// fp8_e5m2, mxfp8, mxfp4, nvfp4 (comma-separated).
    #[arg(long, value_name = "LIST", default_value_t = Formats(defaults().formats), global = true)]
    pub formats: Formats,
    /// Measure per-tensor quantizers from per-bin sums where they can (same results within
    /// 1e-12; fewer instructions, not always less time).
    #[arg(long, global = true)]
    pub binned: bool,
}

impl AnalysisArgs {
    /// The one conversion into the library's options, validated by the library's rules.
    pub fn options(&self) -> Result<Options, UsageError> {
        let opts = Options {
            bits: self.bits,
            scheme: match self.scheme {
                SchemeArg::Symmetric => Scheme::Symmetric,
                SchemeArg::Affine => Scheme::Affine,
            },
            percentiles: self.percentile.clone(),
            ema_constant: self.ema_constant,
            batch_axis: self.batch_axis.0,
            thresholds: Thresholds {
                sqnr_floor_db: self.sqnr_floor,
                ..Thresholds::default()
            },
            limits: Limits {
                max_header_bytes: self.max_header_bytes,
                max_inflate_ratio: self.max_inflate_ratio,
                max_files: self.max_files,
            },
            granularity: Box::new(GranularityOptions {
                rows: self.granularities.0.clone(),
                channel_axis: self.channel_axis,
                block_sizes: self.block_sizes.clone(),
                outlier_ratio: self.outlier_ratio,
                outlier_threshold: self.outlier_threshold,
            }),
            validate: self.validate,
            folds: self.folds,
            formats: self.formats.0.clone(),
            binned: self.binned,
            ..defaults()
        };
        opts.validate().map_err(|e| UsageError(e.to_string()))?;
        Ok(opts)
    }

    /// The options over a saved analysis: its own (`saved`), with those given on the command
    /// line (`given`, clap ids) in their place, validated by the library's rules.
    pub fn options_over(&self, saved: Options, given: &[&str]) -> Result<Options, UsageError> {
        if given.contains(&"layout") {
            return Err(UsageError(
                "--layout applies when reading dumps; a saved analysis keeps its layers".into(),
            ));
        }
        let mine = self.options()?;
        let g = |id: &str| given.contains(&id);
        let mut o = Options {
            limits: mine.limits.clone(),
            ..saved
        };
        if g("bits") {
            o.bits = mine.bits;
        }
        if g("scheme") {
            o.scheme = mine.scheme;
        }
        if g("percentile") {
            o.percentiles = mine.percentiles.clone();
        }
        if g("ema_constant") {
            o.ema_constant = mine.ema_constant;
        }
        if g("batch_axis") {
            o.batch_axis = mine.batch_axis;
        }
        if g("sqnr_floor") {
            o.thresholds.sqnr_floor_db = mine.thresholds.sqnr_floor_db;
        }
        let (og, mg) = (&mut o.granularity, &mine.granularity);
        if g("granularities") {
            og.rows = mg.rows.clone();
        }
        if g("channel_axis") {
            og.channel_axis = mg.channel_axis;
        }
        if g("block_sizes") {
            og.block_sizes = mg.block_sizes.clone();
        }
        if g("outlier_ratio") {
            og.outlier_ratio = mg.outlier_ratio;
        }
        if g("outlier_threshold") {
            og.outlier_threshold = mg.outlier_threshold;
        }
        o.validate().map_err(|e| UsageError(e.to_string()))?;
        Ok(o)
    }

    pub fn layout(&self) -> BatchLayout {
        match self.layout {
            LayoutArg::Auto => BatchLayout::Auto,
            LayoutArg::Files => BatchLayout::Files,
            LayoutArg::Batches => BatchLayout::Batches,
        }
    }
}

/// What `--export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    TrtCache,
    Ort,
    Json,
}

impl ReportArgs {
    /// `--fail-on`: `None` no gate; `Some(empty)` any warning; otherwise the listed kinds.
    pub fn fail_on(&self) -> Result<Option<Vec<WarningKind>>, UsageError> {
        let Some(s) = self.fail_on.as_deref() else {
            return Ok(None);
        };
        if s == "warnings" || s == "any" {
            return Ok(Some(Vec::new()));
        }
        s.split(',')
            .map(|k| {
                WarningKind::from_name(k.trim()).ok_or_else(|| {
                    let all: Vec<&str> = WarningKind::ALL.iter().map(|k| k.name()).collect();
                    UsageError(format!(
                        "unknown warning kind `{k}` for --fail-on (expected `warnings` or some of: {})",
                        all.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `--export KIND FILE`, checked before any analysis runs.
    pub fn export(&self) -> Result<Option<(ExportKind, PathBuf)>, UsageError> {
        let Some(ex) = &self.export else {
            return Ok(None);
        };
        let [kind, file] = ex.as_slice() else {
            return Err(UsageError("--export takes KIND FILE".into()));
        };
        let kind = match kind.as_str() {
            "trt-cache" => ExportKind::TrtCache,
            "ort" => ExportKind::Ort,
            "json" => ExportKind::Json,
            other => {
                return Err(UsageError(format!(
                    "unknown export kind `{other}` (expected trt-cache, ort or json)"
                )));
            }
        };
        Ok(Some((kind, PathBuf::from(file))))
    }

    /// `--shard K/N`, checked before anything is read.
    pub fn shard(&self) -> Result<Option<(usize, usize)>, UsageError> {
        self.shard
            .as_deref()
            .map(|s| calibscope::analysis::saved::shard::parse(s).map_err(UsageError))
            .transpose()
    }

    /// `--name-map FILE`, read and checked before any analysis runs.
    pub fn name_map(&self) -> Result<NameMap, UsageError> {
        let Some(path) = &self.name_map else {
            return Ok(NameMap::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--name-map {}: {e}", path.display())))?;
        NameMap::parse(&text).map_err(|e| UsageError(format!("--name-map {}: {e}", path.display())))
    }
}

/// `--granularities all` or `tensor,token,...` (checked when parsed).
#[derive(Clone, Debug)]
pub struct Rows(pub Vec<Granularity>);

impl fmt::Display for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Granularity::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.0.iter().map(|g| g.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for Rows {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_granularities(s).map(Rows).map_err(|e| e.to_string())
    }
}

/// `--formats all`, `none` or `fp8_e4m3,...` (checked when parsed).
#[derive(Clone, Debug)]
pub struct Formats(pub Vec<FormatKind>);

impl fmt::Display for Formats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        if self.0 == FormatKind::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.0.iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for Formats {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_formats(s).map(Formats).map_err(|e| e.to_string())
    }
}

/// `--batch-axis N` or `none`.
#[derive(Clone, Copy, Debug)]
pub struct Axis(pub Option<usize>);

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("none"),
        }
    }
}

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

impl SchemeArg {
    fn of(s: Scheme) -> SchemeArg {
        match s {
            Scheme::Symmetric => SchemeArg::Symmetric,
            Scheme::Affine => SchemeArg::Affine,
        }
    }
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
