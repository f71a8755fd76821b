//! calibscope: how each quantization calibration method would clip and distort activation dumps.
//!
//! The library is the numeric core and knows nothing of terminals: [`source`] finds and reads
//! dumps, [`analysis`] runs the streaming passes and produces the one result type
//! [`analysis::Analysis`], [`calib`] holds the calibrators, [`report`] and [`tui`] are views.
//!
//! ```no_run
//! use calibscope::analysis::{analyze, Options, Progress};
//! use calibscope::source::{discover, BatchLayout, Limits};
//!
//! let found = discover(&["data".into()], BatchLayout::Auto, &Limits::default());
//! let result = analyze(&found.layers, &found.errors, &Options::default(), &Progress::default());
//! for layer in &result.layers {
//!     println!("{}: best {:?}", layer.name, layer.recommended);
//! }
//! ```

pub mod analysis;
pub mod calib;
pub mod formats;
pub mod histogram;
pub mod report;
pub mod samples;
pub mod simd;
pub mod source;
pub mod tui;
