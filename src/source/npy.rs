//! `.npy` files: header parsing, validation against the file size, chunked decoding to f32.
//! (Stub: the loader work replaces this.)

use std::sync::atomic::AtomicBool;

use super::{ArrayInfo, Limits, LoadError, Location};

/// An array whose header has been read and checked; its data is read on demand in chunks.
pub struct OpenArray {
    pub info: ArrayInfo,
    pub location: Location,
    /// Bytes after the data that the header does not account for (reported as a warning).
    pub trailing_bytes: u64,
}

impl OpenArray {
    /// Opens `.npy` files and `.npz` members, reading only the header.
    pub fn open(location: &Location, _limits: &Limits) -> Result<OpenArray, LoadError> {
        Err(LoadError::new(location, "loader not built yet"))
    }

    /// Decodes the data, in file order, into f32 chunks of at most `chunk_elems` elements and
    /// calls `f(first_element_index, values)` on each; chunks may be processed in parallel.
    /// Results come back in chunk order. Returns an error naming the file if the data cannot be
    /// read (e.g. the file shrank) or if `cancel` was set.
    pub fn map_chunks<T, F>(
        &self,
        _chunk_elems: usize,
        _cancel: &AtomicBool,
        _f: F,
    ) -> Result<Vec<T>, LoadError>
    where
        T: Send,
        F: Fn(usize, &[f32]) -> T + Sync + Send,
    {
        Err(LoadError::new(&self.location, "loader not built yet"))
    }

    /// Finite float64 values that overflowed float32 during the last `map_chunks` pass.
    pub fn f64_overflows(&self) -> u64 {
        0
    }
}
