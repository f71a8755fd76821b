//! calibscope: how each quantization calibration method would clip and distort activation dumps.

pub mod source;
