//! Custom widgets (the rest of the screen uses ratatui's own).

pub mod histogram;
