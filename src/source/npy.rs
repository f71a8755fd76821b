//! `.npy` files: header parsing, validation against the file size, chunked decoding to f32.
//!
//! The header's Python literal is parsed by py_literal and its dtype string by npyz, neither of
//! which evaluates code or unpickles objects. What they leave unguarded is checked here first:
//! lengths against the limits and the real size of the file before any buffer is allocated, the
//! literal's nesting before it is parsed, the shape's element count before anything is sized
//! from it.
//!
//! Data is read with positional reads (`read_exact_at`), never mmap: a file that shrinks while
//! mapped kills the process with SIGBUS, while a short read is just an error.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use half::slice::HalfFloatSliceExt;
use npyz::{Endianness, TypeChar, TypeStr};
use rayon::prelude::*;

use super::{ArrayInfo, DType, Limits, LoadError, Location, npz, safetensors};

mod header;
mod lockstep;

pub use header::parse_header;
pub(crate) use header::read_header;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// An array whose header has been read and checked; its data is read on demand in chunks.
pub struct OpenArray {
    pub info: ArrayInfo,
    pub location: Location,
    /// Bytes after the data that the header does not account for (reported as a warning).
    pub trailing_bytes: u64,
    source: DataSource,
    overflows: AtomicU64,
}

/// Where the data bytes come from.
#[derive(Debug)]
pub(crate) enum DataSource {
    /// Raw bytes at an absolute offset of a file: a `.npy` file, a stored `.npz` member or a
    /// `.safetensors` tensor.
    Positional { path: PathBuf, offset: u64 },
    /// A deflated `.npz` member: only readable as a stream, from its start.
    Deflated(npz::DeflatedMember),
    /// Values already decoded and kept in memory ([`OpenArray::into_resident`]).
    Resident(Resident),
}

/// A resident array's values. When the array is dropped the buffer goes to this thread's read
/// scratch if that holds less, so the next array read here reuses it instead of zero-filling a
/// new one (a fill per small layer cost a quarter of its read).
#[derive(Debug)]
pub(crate) struct Resident(Vec<f32>);

impl Drop for Resident {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        // Not during thread teardown or while the scratch is borrowed: then it is just freed.
        let _ = SCRATCH.try_with(|cell| {
            if let Ok(mut s) = cell.try_borrow_mut()
                && s.out.capacity() < v.capacity()
            {
                s.out = v;
            }
        });
    }
}

/// A parsed and size-checked header.
#[derive(Debug)]
pub(crate) struct Header {
    pub info: ArrayInfo,
    /// Offset of the data from the start of the `.npy` bytes.
    pub data_offset: u64,
    pub data_bytes: u64,
    pub trailing: u64,
}

impl OpenArray {
    /// Opens `.npy` files and `.npz` members, reading only the header.
    pub fn open(location: &Location, limits: &Limits) -> Result<OpenArray, LoadError> {
        let err = |m: String| LoadError::new(location, m);
        let (header, source) = match location {
            Location::Npy(path) => {
                let file = File::open(path).map_err(|e| err(io_message(&e)))?;
                let meta = file.metadata().map_err(|e| err(io_message(&e)))?;
                if !meta.is_file() {
                    return Err(err("not a regular file".into()));
                }
                let header =
                    read_header(&mut (&file).take(meta.len()), meta.len(), limits).map_err(err)?;
                let offset = header.data_offset;
                let source = DataSource::Positional {
                    path: path.clone(),
                    offset,
                };
                (header, source)
            }
            Location::NpzMember { archive, member } => {
                npz::open_member(archive, member, limits).map_err(err)?
            }
            Location::SafetensorsTensor { file, tensor } => {
                safetensors::open_tensor(file, tensor, limits).map_err(err)?
            }
        };
        Ok(OpenArray {
            info: header.info,
            location: location.clone(),
            trailing_bytes: header.trailing,
            source,
            overflows: AtomicU64::new(0),
        })
    }

    /// Decodes the data, in file order, into f32 chunks of at most `chunk_elems` elements and
    /// calls `f(first_element_index, values)` on each; chunks may be processed in parallel.
    /// Results come back in chunk order. Returns an error naming the file if the data cannot be
    /// read (e.g. the file shrank) or if `cancel` was set.
    ///
    /// A zero-size array has no chunks (`f` is never called). `chunk_elems == 0` counts as 1.
    pub fn map_chunks<T, F>(
        &self,
        chunk_elems: usize,
        cancel: &AtomicBool,
        f: F,
    ) -> Result<Vec<T>, LoadError>
    where
        T: Send,
        F: Fn(usize, &[f32]) -> T + Sync + Send,
    {
        if !matches!(self.source, DataSource::Resident(_)) {
            // Counted afresh by each read of the data (a resident array was read once).
            self.overflows.store(0, Ordering::Relaxed);
        }
        let len = self.info.len();
        if len == 0 {
            return Ok(Vec::new());
        }
        let chunk = chunk_elems.clamp(1, len);
        let n_chunks = len.div_ceil(chunk);
        let size = self.info.dtype.size() as u64;
        let err = |m: String| LoadError::new(&self.location, m);
        let cancelled = || LoadError::new(&self.location, "cancelled");
        let elems = |i: usize| chunk.min(len - i * chunk);

        match &self.source {
            DataSource::Positional { path, offset } => {
                let file = File::open(path).map_err(|e| err(io_message(&e)))?;
                (0..n_chunks)
                    .into_par_iter()
                    .map(|i| {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(cancelled());
                        }
                        let first = i * chunk;
                        let at = offset + first as u64 * size;
                        with_scratch(|scratch| {
                            let values = self.decode(scratch, elems(i), |buf| {
                                read_at(&file, path, buf, at).map_err(err)
                            })?;
                            Ok(f(first, values))
                        })
                    })
                    .collect()
            }
            DataSource::Resident(Resident(values)) => values
                .par_chunks(chunk)
                .enumerate()
                .map(|(i, c)| {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(cancelled());
                    }
                    Ok(f(i * chunk, c))
                })
                .collect(),
            DataSource::Deflated(member) => {
                // Inflating is sequential; decoding and `f` run in parallel on a batch of
                // chunks, so memory stays at a few chunks per worker thread.
                member.with_stream(|stream| {
                    let batch = rayon::current_num_threads().max(1);
                    let mut raw: Vec<Vec<u8>> = Vec::new();
                    let mut results = Vec::with_capacity(n_chunks);
                    let mut next = 0;
                    while next < n_chunks {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(cancelled());
                        }
                        let end = (next + batch).min(n_chunks);
                        raw.resize_with(end - next, Vec::new);
                        for (j, buf) in raw.iter_mut().enumerate() {
                            buf.resize(elems(next + j) * size as usize, 0);
                            stream.read_data(buf).map_err(err)?;
                        }
                        let part: Result<Vec<T>, LoadError> = raw
                            .par_iter()
                            .enumerate()
                            .map(|(j, bytes)| {
                                let i = next + j;
                                with_scratch(|scratch| {
                                    let values = self.decode(scratch, elems(i), |buf| {
                                        buf.copy_from_slice(bytes);
                                        Ok(())
                                    })?;
                                    Ok(f(i * chunk, values))
                                })
                            })
                            .collect();
                        results.extend(part?);
                        next = end;
                    }
                    Ok(results)
                })
            }
        }
    }

    /// Reads and decodes the whole array once and keeps the values, so that later passes read
    /// memory instead of the file. Only for small arrays: the caller bounds the size.
    pub fn into_resident(self, cancel: &AtomicBool) -> Result<OpenArray, LoadError> {
        let n = self.info.len();
        let values = match &self.source {
            DataSource::Positional { path, offset } => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(LoadError::new(&self.location, "cancelled"));
                }
                let err = |m: String| LoadError::new(&self.location, m);
                let file = File::open(path).map_err(|e| err(io_message(&e)))?;
                with_scratch(|s| {
                    self.decode(s, n, |buf| read_at(&file, path, buf, *offset).map_err(err))?;
                    // The decoded buffer itself is kept: copying it out cost as much as the
                    // read. Not when it is much larger than the array (its capacity would stay
                    // allocated with it); the thread's next chunk regrows it.
                    Ok::<_, LoadError>(if s.out.capacity() > 2 * n {
                        s.out[..n].to_vec()
                    } else {
                        std::mem::take(&mut s.out)
                    })
                })?
            }
            // One chunk of the whole length: a single piece (none if empty).
            _ => self
                .map_chunks(n, cancel, |_, v| v.to_vec())?
                .pop()
                .unwrap_or_default(),
        };
        let overflows = self.f64_overflows();
        Ok(OpenArray {
            source: DataSource::Resident(Resident(values)),
            overflows: AtomicU64::new(overflows),
            ..self
        })
    }

    /// Finite float64 values that overflowed float32 during the last `map_chunks` pass.
    pub fn f64_overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// Fills the raw bytes of `n` elements with `fill`, then converts them to f32.
    fn decode<'s>(
        &self,
        s: &'s mut Scratch,
        n: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), LoadError>,
    ) -> Result<&'s [f32], LoadError> {
        let dtype = self.info.dtype;
        // Byte swapping is needed when the file's order is not the machine's.
        let swap = self.info.big_endian != cfg!(target_endian = "big");
        s.out.resize(n, 0.0);
        let out = &mut s.out[..n];
        match dtype {
            DType::F32 => {
                // Fast path: read straight into the output buffer, swap only if needed.
                fill(bytemuck::cast_slice_mut(out))?;
                if swap {
                    for v in out.iter_mut() {
                        *v = f32::from_bits(v.to_bits().swap_bytes());
                    }
                }
            }
            DType::F16 | DType::BF16 => {
                s.raw16.resize(n, 0);
                let raw = &mut s.raw16[..n];
                fill(bytemuck::cast_slice_mut(raw))?;
                if swap {
                    for v in raw.iter_mut() {
                        *v = v.swap_bytes();
                    }
                }
                if dtype == DType::F16 {
                    let halves: &[half::f16] = bytemuck::cast_slice(raw);
                    halves.convert_to_f32_slice(out);
                } else {
                    for (o, &b) in out.iter_mut().zip(raw.iter()) {
                        *o = half::bf16::from_bits(b).to_f32();
                    }
                }
            }
            _ => {
                s.raw.resize(n * dtype.size(), 0);
                let raw = &mut s.raw[..n * dtype.size()];
                fill(raw)?;
                let be = self.info.big_endian;
                let overflows = convert(dtype, be, raw, out);
                if overflows > 0 {
                    self.overflows.fetch_add(overflows, Ordering::Relaxed);
                }
            }
        }
        Ok(&s.out[..n])
    }
}

/// Per-worker buffers, reused across chunks.
#[derive(Default)]
struct Scratch {
    out: Vec<f32>,
    raw16: Vec<u16>,
    raw: Vec<u8>,
}

thread_local! {
    /// One scratch per worker thread for its whole life: growing a buffer zero-fills it, which
    /// per pass of a small layer cost as much as reading it.
    static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
}

/// Runs `f` with this thread's scratch, or a fresh one if it is in use (a worker that steals
/// another chunk's job while inside `f`).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Converts the types without a dedicated fast path; returns the f64 → f32 overflow count.
fn convert(dtype: DType, be: bool, raw: &[u8], out: &mut [f32]) -> u64 {
    macro_rules! ints {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            let it = out.iter_mut().zip(raw.chunks_exact(N));
            if be {
                for (o, c) in it {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    *o = <$t>::from_be_bytes(a) as f32;
                }
            } else {
                for (o, c) in it {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    *o = <$t>::from_le_bytes(a) as f32;
                }
            }
            0
        }};
    }
    match dtype {
        DType::I8 => ints!(i8),
        DType::U8 => ints!(u8),
        DType::I16 => ints!(i16),
        DType::U16 => ints!(u16),
        DType::I32 => ints!(i32),
        DType::U32 => ints!(u32),
        DType::I64 => ints!(i64),
        DType::U64 => ints!(u64),
        DType::Bool => {
            for (o, &b) in out.iter_mut().zip(raw) {
                *o = if b != 0 { 1.0 } else { 0.0 };
            }
            0
        }
        DType::F8E4M3 | DType::F8E5M2 => {
            let table = if dtype == DType::F8E4M3 {
                &F8_E4M3
            } else {
                &F8_E5M2
            };
            for (o, &b) in out.iter_mut().zip(raw) {
                *o = table[usize::from(b)];
            }
            0
        }
        DType::F64 => {
            let mut overflows = 0u64;
            for (o, c) in out.iter_mut().zip(raw.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                let v = if be {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                };
                let x = v as f32;
                overflows += u64::from(x.is_infinite() && v.is_finite());
                *o = x;
            }
            overflows
        }
        // Handled by the fast paths in `decode`.
        DType::F32 | DType::F16 | DType::BF16 => 0,
    }
}

/// Every float8_e4m3fn value by its byte: 4 exponent bits, 3 mantissa bits, no infinities.
const F8_E4M3: [f32; 256] = f8_values(4, false);
/// Every float8_e5m2 value by its byte: 5 exponent bits, 2 mantissa bits, IEEE infinities.
const F8_E5M2: [f32; 256] = f8_values(5, true);

/// The 256 values of an 8-bit float with `e` exponent bits (bias 2^(e-1) - 1) and 7 - e mantissa
/// bits, as float32 bit patterns (all exact). `ieee`: the top exponent holds ±inf (mantissa 0)
/// and NaN; otherwise (the `fn` types) only the all-ones pattern is NaN and the top exponent
/// holds finite values.
const fn f8_values(e: u32, ieee: bool) -> [f32; 256] {
    let m_bits = 7 - e;
    let bias = (1 << (e - 1)) - 1;
    let top = (1 << e) - 1;
    let all_ones = (1 << m_bits) - 1;
    let mut out = [0f32; 256];
    let mut code = 0u32;
    while code < 256 {
        let sign = (code >> 7) << 31;
        let exp = (code >> m_bits) & top;
        let man = code & all_ones;
        let bits = if exp == top && ieee {
            if man == 0 { 0x7f80_0000 } else { 0x7fc0_0000 }
        } else if exp == top && man == all_ones {
            0x7fc0_0000
        } else if exp == 0 && man == 0 {
            0
        } else if exp == 0 {
            // man × 2^(1 - bias - m_bits): normalised at man's highest bit h.
            let h = 31 - man.leading_zeros();
            ((h + 128 - bias - m_bits) << 23) | ((man - (1 << h)) << (23 - h))
        } else {
            ((exp + 127 - bias) << 23) | (man << (23 - m_bits))
        };
        out[code as usize] = f32::from_bits(sign | bits);
        code += 1;
    }
    out
}

/// Fills `buf` from `file` at `at`; a short read means the file changed after its header was
/// checked.
fn read_at(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<(), String> {
    file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            format!(
                "file changed while reading: {} ended before byte {}",
                path.display(),
                at + buf.len() as u64
            )
        } else {
            format!("read error in {}: {}", path.display(), io_message(&e))
        }
    })
}

/// An io error as a short lowercase message (`no such file or directory`).
pub(crate) fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            // Strip the " (os error N)" suffix of OS errors.
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}
