//! The analysis of a layer: streaming passes over its values and the one result type,
//! [`Analysis`], that every front end (report formats, exports, TUI) only views.
//!
//! Passes, each a parallel fold over chunks of a few MiB (no pass holds a whole tensor):
//! 1. profile: moments, NaN/Inf, casts, per-batch extremes, row sums of squares, per-channel
//!    absmax;
//! 2. histograms of x over `[min, max]` and of |x| over `[0, max|x|]` (65536 bins; the 2048-bin
//!    histograms the searches use are exact sums of 32 fine bins), and for the affine entropy
//!    ONNX Runtime's own (x over ±max|x|, 2048 numpy bins);
//! 3. metrics: every method's quantizer evaluated on each chunk while it is hot, and the
//!    per-token, per-channel and per-block quantizers ([`granularity`]).
//!
//! The calibrators ([`crate::calib`]) only see the merged profile, never raw values.
//!
//! - [`options`]: what changes what is computed, and its validation;
//! - [`model`]: the result types and their JSON form;
//! - [`profile`]: the facts of passes 1–2 a re-run keeps;
//! - [`passes`]: the three passes over a layer's chunks;
//! - [`pipeline`]: one layer from its files (or kept profile) to its result, with events;
//! - [`stats`], [`cast`], [`metrics`]: the per-value accumulators;
//! - [`formats`]: FP8, MXFP8/MXFP4 and NVFP4 rows;
//! - [`binned`]: per-tensor quantizers measured from pass 2's per-bin sums, revisiting only the
//!   bins a boundary cuts;
//! - [`granularity`]: per-token, per-channel and per-block scales and the outlier channels;
//! - [`validation`]: held-out validation over folds of batches, convergence over batch
//!   prefixes, and the recommendation by held-out SQNR;
//! - [`warnings`]: the warning kinds and the checks that raise them;
//! - [`saved`]: saved analyses (`--save`), reopened without the dumps, and sharded runs merged;
//! - [`compare`]: two runs compared layer by layer (`calibscope compare`).

pub mod binned;
pub mod cast;
pub mod compare;
pub mod formats;
pub mod granularity;
pub mod metrics;
pub mod model;
pub mod options;
pub mod passes;
pub mod pipeline;
pub mod profile;
pub mod saved;
pub mod stats;
pub mod validation;
pub mod warnings;

pub use crate::calib::MethodKind;
pub use formats::{FormatKind, FormatResult};
pub use granularity::Granularity;
pub use model::{
    Analysis, ChannelSummary, GranularityResult, JSON_VERSION, LayerAnalysis, MethodResult,
    Settings, ser_num,
};
pub use options::{
    FINE_BINS, GranularityOptions, MAX_BATCHES, OptionError, Options, Progress, SEARCH_BINS,
};
pub use passes::{measure, profile_layer};
pub use pipeline::{LayerEvent, LayerJob, analyze, analyze_layer, open_layer, run_layers};
pub use profile::{KeptProfile, Profile};
