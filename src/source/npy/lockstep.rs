//! Two arrays of the same length read in lockstep: chunk i of both is decoded side by side, so
//! a comparison sees matching elements without holding either array in memory.

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::super::npz::DataStream;
use super::{DataSource, OpenArray, Resident, Scratch, io_message, read_at, with_scratch};
use crate::source::LoadError;

thread_local! {
    /// The second array's buffers (the first uses the reader's own scratch), kept per worker
    /// thread for the same reason as that one: growing a buffer zero-fills it.
    static SCRATCH_B: RefCell<Scratch> = Default::default();
}

/// Where one side's chunks come from during a lockstep read.
enum Side<'a> {
    File {
        file: File,
        path: &'a Path,
        offset: u64,
    },
    Memory(&'a [f32]),
    /// A deflated member: its raw bytes are read ahead in order, a batch of chunks at a time.
    Stream,
}

/// The shared geometry of the chunks.
#[derive(Clone, Copy)]
struct Chunks {
    len: usize,
    chunk: usize,
    count: usize,
}

impl Chunks {
    fn elems(&self, i: usize) -> usize {
        self.chunk.min(self.len - i * self.chunk)
    }
}

impl OpenArray {
    /// Reads this array and `other` (the same element count) chunk by chunk in lockstep and
    /// calls `f(first_element_index, these_values, other_values)` on each pair of chunks, in
    /// parallel; results come back in chunk order. Both arrays are decoded to f32 as by
    /// [`OpenArray::map_chunks`]; an error names the file it comes from.
    pub fn zip_chunks<T, F>(
        &self,
        other: &OpenArray,
        chunk_elems: usize,
        cancel: &AtomicBool,
        f: F,
    ) -> Result<Vec<T>, LoadError>
    where
        T: Send,
        F: Fn(usize, &[f32], &[f32]) -> T + Sync + Send,
    {
        let len = self.info.len();
        if other.info.len() != len {
            return Err(LoadError::new(
                &other.location,
                format!(
                    "has {} elements where {} has {len}",
                    other.info.len(),
                    self.location
                ),
            ));
        }
        for a in [self, other] {
            if !matches!(a.source, DataSource::Resident(_)) {
                a.overflows.store(0, Ordering::Relaxed);
            }
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let chunk = chunk_elems.clamp(1, len);
        let g = Chunks {
            len,
            chunk,
            count: len.div_ceil(chunk),
        };
        let a = self.side()?;
        let b = other.side()?;
        let run = |sa: Option<&mut DataStream<'_>>, sb: Option<&mut DataStream<'_>>| {
            self.zip_batches(other, (&a, &b), (sa, sb), g, cancel, &f)
        };
        match (&self.source, &other.source) {
            (DataSource::Deflated(ma), DataSource::Deflated(mb)) => {
                ma.with_stream(|sa| mb.with_stream(|sb| run(Some(sa), Some(sb))))
            }
            (DataSource::Deflated(ma), _) => ma.with_stream(|sa| run(Some(sa), None)),
            (_, DataSource::Deflated(mb)) => mb.with_stream(|sb| run(None, Some(sb))),
            _ => run(None, None),
        }
    }

    fn side(&self) -> Result<Side<'_>, LoadError> {
        Ok(match &self.source {
            DataSource::Positional { path, offset } => Side::File {
                file: File::open(path)
                    .map_err(|e| LoadError::new(&self.location, io_message(&e)))?,
                path,
                offset: *offset,
            },
            DataSource::Resident(Resident(v)) => Side::Memory(v),
            DataSource::Deflated(_) => Side::Stream,
        })
    }

    /// Without a stream every chunk pair is one parallel task; with one (or two) the streams
    /// are read ahead a batch of chunks at a time, so memory stays a few chunks per thread.
    #[allow(clippy::too_many_arguments)]
    fn zip_batches<T, F>(
        &self,
        other: &OpenArray,
        sides: (&Side<'_>, &Side<'_>),
        mut streams: (Option<&mut DataStream<'_>>, Option<&mut DataStream<'_>>),
        g: Chunks,
        cancel: &AtomicBool,
        f: &F,
    ) -> Result<Vec<T>, LoadError>
    where
        T: Send,
        F: Fn(usize, &[f32], &[f32]) -> T + Sync + Send,
    {
        let cancelled = || LoadError::new(&self.location, "cancelled");
        let one = |i: usize, raw_a: Option<&[u8]>, raw_b: Option<&[u8]>| {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let first = i * g.chunk;
            let n = g.elems(i);
            with_scratch(|sa| {
                with_scratch_b(|sb| {
                    let va = self.chunk_values(sides.0, sa, first, n, raw_a)?;
                    let vb = other.chunk_values(sides.1, sb, first, n, raw_b)?;
                    Ok(f(first, va, vb))
                })
            })
        };
        if streams.0.is_none() && streams.1.is_none() {
            return (0..g.count)
                .into_par_iter()
                .map(|i| one(i, None, None))
                .collect();
        }
        let batch = rayon::current_num_threads().max(1);
        let mut raw: (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        let mut results = Vec::with_capacity(g.count);
        let mut next = 0;
        while next < g.count {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let end = (next + batch).min(g.count);
            if let Some(stream) = streams.0.as_deref_mut() {
                self.read_ahead(stream, &mut raw.0, next..end, g)?;
            }
            if let Some(stream) = streams.1.as_deref_mut() {
                other.read_ahead(stream, &mut raw.1, next..end, g)?;
            }
            let part: Result<Vec<T>, LoadError> = (next..end)
                .into_par_iter()
                .map(|i| {
                    let j = i - next;
                    one(
                        i,
                        raw.0.get(j).map(Vec::as_slice),
                        raw.1.get(j).map(Vec::as_slice),
                    )
                })
                .collect();
            results.extend(part?);
            next = end;
        }
        Ok(results)
    }

    /// The raw bytes of chunks `range`, in order, from this array's stream.
    fn read_ahead(
        &self,
        stream: &mut DataStream<'_>,
        bufs: &mut Vec<Vec<u8>>,
        range: std::ops::Range<usize>,
        g: Chunks,
    ) -> Result<(), LoadError> {
        bufs.resize_with(range.len(), Vec::new);
        for (buf, i) in bufs.iter_mut().zip(range) {
            buf.resize(g.elems(i) * self.info.dtype.size(), 0);
            stream
                .read_data(buf)
                .map_err(|m| LoadError::new(&self.location, m))?;
        }
        Ok(())
    }

    /// The f32 values of elements `first..first + n` from `side` (`raw`: a streamed side's bytes).
    fn chunk_values<'x>(
        &'x self,
        side: &'x Side<'_>,
        s: &'x mut Scratch,
        first: usize,
        n: usize,
        raw: Option<&[u8]>,
    ) -> Result<&'x [f32], LoadError> {
        let err = |m: String| LoadError::new(&self.location, m);
        match side {
            Side::Memory(v) => v
                .get(first..first + n)
                .ok_or_else(|| err("internal error: chunk past the end".into())),
            Side::File { file, path, offset } => {
                let at = offset + first as u64 * self.info.dtype.size() as u64;
                self.decode(s, n, |buf| read_at(file, path, buf, at).map_err(err))
            }
            Side::Stream => self.decode(s, n, |buf| match raw {
                Some(r) if r.len() == buf.len() => {
                    buf.copy_from_slice(r);
                    Ok(())
                }
                _ => Err(err("internal error: streamed chunk missing".into())),
            }),
        }
    }
}

/// Runs `f` with this thread's second scratch, or a fresh one if it is in use.
fn with_scratch_b<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH_B.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}
