//! calibscope: how each quantization calibration method would clip and distort activation dumps.

pub mod analysis;
pub mod calib;
pub mod source;
