//! The analysis of a layer: streaming passes over its values and the one result type.

pub mod histogram;
