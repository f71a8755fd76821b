//! Turning the user's paths into layers: files, archives, folders, batch-folder layouts.
//! (Stub: the loader work replaces this.)

use std::path::PathBuf;

use super::{LayerSpec, Limits, LoadError};

/// How a folder of sub-folders is interpreted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchLayout {
    /// Batch folders when every sub-folder holds the same file names (see README).
    #[default]
    Auto,
    /// Every file is its own layer.
    Files,
    /// Sub-folders are calibration batches; same file name = same layer.
    Batches,
}

/// The layers found, in natural order, and the inputs that could not be used.
#[derive(Debug, Default)]
pub struct Discovery {
    pub layers: Vec<LayerSpec>,
    pub errors: Vec<LoadError>,
}

/// Finds the layers in `paths`.
pub fn discover(paths: &[PathBuf], _layout: BatchLayout, _limits: &Limits) -> Discovery {
    let mut d = Discovery::default();
    for p in paths {
        d.errors.push(LoadError::new(p.display(), "loader not built yet"));
    }
    d
}
