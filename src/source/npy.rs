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

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use half::slice::HalfFloatSliceExt;
use npyz::{Endianness, TypeChar, TypeStr};
use py_literal::Value;
use rayon::prelude::*;

use super::{ArrayInfo, DType, Limits, LoadError, Location, npz, safetensors};

mod lockstep;

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

/// Parses and checks the header of a complete `.npy` file held in memory (`bytes` is the whole
/// file). The same checks as [`OpenArray::open`] apply, with `bytes.len()` as the file size.
/// Returns the array description and the count of trailing bytes after the data.
pub fn parse_header(bytes: &[u8], limits: &Limits) -> Result<(ArrayInfo, u64), String> {
    let header = read_header(&mut &bytes[..], bytes.len() as u64, limits)?;
    Ok((header.info, header.trailing))
}

/// Reads and checks a `.npy` header from `r`, whose total length is `total` bytes.
///
/// Lengths are checked against `limits` and `total` before the header buffer is allocated.
pub(crate) fn read_header<R: Read>(
    r: &mut R,
    total: u64,
    limits: &Limits,
) -> Result<Header, String> {
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            "file changed while reading: the header ended early".to_string()
        } else {
            format!("read error: {}", io_message(&e))
        }
    };
    let mut prefix = [0u8; 12];
    let have = total.min(10) as usize;
    r.read_exact(&mut prefix[..have]).map_err(eof)?;
    let m = have.min(MAGIC.len());
    if prefix[..m] != MAGIC[..m] || have == 0 {
        return Err("not a .npy file (bad magic bytes)".into());
    }
    if have < 10 {
        return Err(format!("too short to be a .npy file ({total} bytes)"));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (header_len, prefix_len) = match (major, minor) {
        (1, 0) => (u64::from(u16::from_le_bytes([prefix[8], prefix[9]])), 10u64),
        (2, 0) | (3, 0) => {
            if total < 12 {
                return Err(format!("too short to be a .npy file ({total} bytes)"));
            }
            r.read_exact(&mut prefix[10..12]).map_err(eof)?;
            let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            (u64::from(len), 12u64)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    if header_len > limits.max_header_bytes as u64 {
        return Err(format!(
            "header length {header_len} bytes exceeds the limit of {} bytes \
             (raise it with --max-header-bytes)",
            limits.max_header_bytes
        ));
    }
    let data_offset = prefix_len + header_len;
    if data_offset > total {
        return Err(format!(
            "header length {header_len} runs past the end of the file ({total} bytes)"
        ));
    }
    let mut bytes = vec![0u8; header_len as usize];
    r.read_exact(&mut bytes).map_err(eof)?;
    let text = if major == 3 {
        String::from_utf8(bytes).map_err(|_| "header is not valid UTF-8".to_string())?
    } else {
        // Versions 1 and 2 are latin-1.
        bytes.iter().map(|&b| char::from(b)).collect()
    };
    let info = parse_header_dict(&text)?;
    let data_bytes = info
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(info.dtype.size()))
        .map(|b| b as u64)
        .ok_or_else(|| {
            format!(
                "shape {} overflows: too many elements",
                fmt_shape(&info.shape)
            )
        })?;
    let available = total - data_offset;
    if data_bytes > available {
        return Err(format!(
            "truncated: header says {data_bytes} bytes of data, file has {available}"
        ));
    }
    Ok(Header {
        info,
        data_offset,
        data_bytes,
        trailing: available - data_bytes,
    })
}

fn fmt_shape<D: std::fmt::Display>(shape: &[D]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Parses the header dict: exactly the keys `descr`, `fortran_order` and `shape`.
///
/// The literal is parsed by py_literal (the parser npyz uses) once [`check_literal`] has bounded
/// its nesting; the dict is checked here rather than by npyz's `NpyHeader`, which ignores unknown
/// keys, keeps the last of a repeated key, accepts a list as the shape, and multiplies the shape
/// out unchecked (a panic in debug builds, a wrapped count in release ones).
fn parse_header_dict(text: &str) -> Result<ArrayInfo, String> {
    let text = check_literal(text)?;
    let value: Value = text.parse().map_err(|e| malformed(&syntax_error(&e)))?;
    let Value::Dict(items) = value else {
        return Err("header is not a dict".into());
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in items {
        let Value::String(key) = key else {
            return Err("header dict has a key that is not a string".into());
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err(format!("header has unexpected key '{key}'")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("header has key '{key}' twice"));
        }
    }
    let missing = |k: &str| format!("header is missing key '{k}'");
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;

    let (dtype, big_endian, descr) = match descr {
        Value::String(s) => parse_descr(&s)?,
        Value::List(_) => return Err("structured dtype (a list of fields) is not supported".into()),
        _ => return Err("descr is not a dtype string".into()),
    };
    let Value::Boolean(fortran_order) = fortran else {
        return Err("fortran_order is not True or False".into());
    };
    let Value::Tuple(dims) = shape else {
        return Err("shape is not a tuple".into());
    };
    let mut shape = Vec::with_capacity(dims.len());
    for d in &dims {
        let Value::Integer(n) = d else {
            return Err("shape is not a tuple of non-negative integers".into());
        };
        if n.cmp(&Default::default()).is_lt() {
            return Err("shape is not a tuple of non-negative integers".into());
        }
        match usize::try_from(n) {
            Ok(n) => shape.push(n),
            Err(_) => {
                let shown: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Value::Integer(n) => n.to_string(),
                        _ => "?".into(),
                    })
                    .collect();
                return Err(format!(
                    "shape {} overflows: too many elements",
                    fmt_shape(&shown)
                ));
            }
        }
    }
    Ok(ArrayInfo {
        dtype,
        big_endian,
        shape,
        fortran_order,
        descr,
    })
}

fn malformed(what: &str) -> String {
    format!("header dict is malformed: {what}")
}

/// py_literal's error in one line: its syntax errors are pest's multi-line report, of which the
/// position is kept.
fn syntax_error(e: &py_literal::ParseError) -> String {
    match e {
        py_literal::ParseError::Syntax(report) => {
            let at = report
                .split_once("--> ")
                .and_then(|(_, r)| r.split_once(['\n', ' ']))
                .and_then(|(at, _)| at.split_once(':'));
            match at {
                Some(("1", column)) => format!("not a Python literal at column {column}"),
                Some((line, column)) => {
                    format!("not a Python literal at line {line}, column {column}")
                }
                None => "not a Python literal".into(),
            }
        }
        other => other.to_string(),
    }
}

/// Nesting allowed in a header literal; a dict or set counts twice. A numpy header nests 3 deep
/// (a dict, then its shape tuple), a structured dtype 4 (a list of field tuples).
///
/// The bound is on time as well as stack: py_literal's grammar parses the last item of a list or
/// tuple twice and retries a failed dict as a set, so each level can double (a dict triple) the
/// work: 20 nested lists took 8 s to parse, 14 nested braces 33 s.
const MAX_DEPTH: usize = 4;

/// Checks the header text before py_literal parses it: a dict, brackets balanced and nested at
/// most [`MAX_DEPTH`] deep, strings closed on their line. Returns the text trimmed and without
/// Python 2 long suffixes (`(2L, 3L)`, written by numpy under Python 2), which numpy's own reader
/// drops the same way.
///
/// Strings are delimited as py_literal delimits them (a backslash escapes the next character; its
/// `\N{...}` escape, which may span quotes, is refused), so no bracket it parses is missed here.
fn check_literal(text: &str) -> Result<Cow<'_, str>, String> {
    let text = text.trim_matches([' ', '\t', '\n', '\r', '\x0c']);
    if !text.starts_with('{') {
        return Err("header is not a dict".into());
    }
    let weight = |c: char| if c == '{' { 2 } else { 1 };
    let mut open: Vec<char> = Vec::new();
    let mut depth = 0;
    let mut long_suffixes = Vec::new();
    let mut after_digit = false;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'N')) => return Err(malformed("unsupported \\N escape")),
                        Some(_) => {}
                        None => return Err(malformed("unterminated string")),
                    },
                    Some((_, q)) if q == c => break,
                    Some((_, '\n' | '\r')) | None => {
                        return Err(malformed("unterminated string"));
                    }
                    Some(_) => {}
                }
            },
            '(' | '[' | '{' => {
                depth += weight(c);
                if depth > MAX_DEPTH {
                    return Err(malformed("nested too deeply"));
                }
                open.push(c);
            }
            ')' | ']' | '}' => {
                match open.pop() {
                    Some(o) if closer(o) == c => depth -= weight(o),
                    _ => return Err(malformed(&format!("unexpected '{c}'"))),
                }
                if open.is_empty() && i + 1 < text.len() {
                    return Err(malformed("unexpected text after the dict"));
                }
            }
            'L' | 'l' if after_digit => long_suffixes.push(i),
            _ => {}
        }
        after_digit = c.is_ascii_digit();
    }
    if let Some(&o) = open.last() {
        return Err(malformed(&format!("expected ',' or '{}'", closer(o))));
    }
    if long_suffixes.is_empty() {
        return Ok(Cow::Borrowed(text));
    }
    let mut kept = String::with_capacity(text.len());
    let mut from = 0;
    for i in long_suffixes {
        kept.push_str(&text[from..i]);
        from = i + 1;
    }
    kept.push_str(&text[from..]);
    Ok(Cow::Owned(kept))
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// Maps a numpy dtype string (`<f4`, `|V2`, ...) to a [`DType`], its byte order, and the dtype
/// string as numpy writes it (quoted). npyz's [`TypeStr`] parses it; here the kinds we refuse are
/// named in the message whether or not npyz accepts their spelling.
///
/// numpy has no bfloat16: `ml_dtypes.bfloat16` arrays are saved as 2-byte void (`<V2`/`|V2`),
/// so 2-byte void is read as bfloat16. Void has no byte order in numpy: `|V2` is taken in the
/// machine's order, and `<V2`/`>V2` as written.
fn parse_descr(s: &str) -> Result<(DType, bool, String), String> {
    let (ordered, rest) = match s.strip_prefix(['<', '>', '|', '=']) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut chars = rest.chars();
    let kind = chars.next();
    let size = chars.as_str();
    let unsupported = |what: &str| format!("{what} dtype '{s}' is not supported");
    match kind {
        Some('O') => {
            return Err(format!(
                "object dtype '{s}' (pickled Python objects) is not supported; pickles are never loaded"
            ));
        }
        Some('c') => return Err(unsupported("complex")),
        Some('U' | 'S' | 'a') => return Err(unsupported("string")),
        Some('M') => return Err(unsupported("datetime")),
        Some('m') => return Err(unsupported("timedelta")),
        _ => {}
    }
    let float_size = kind == Some('f') && ordered && size.bytes().all(|b| b.is_ascii_digit());
    let ts: TypeStr = s.parse().map_err(|_| {
        if float_size {
            unsupported("float")
        } else {
            format!("unknown dtype '{s}'")
        }
    })?;
    let dtype = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 2) => DType::F16,
        (TypeChar::Float, 4) => DType::F32,
        (TypeChar::Float, 8) => DType::F64,
        (TypeChar::Float, _) => return Err(unsupported("float")),
        (TypeChar::Int, 1) => DType::I8,
        (TypeChar::Int, 2) => DType::I16,
        (TypeChar::Int, 4) => DType::I32,
        (TypeChar::Int, 8) => DType::I64,
        (TypeChar::Uint, 1) => DType::U8,
        (TypeChar::Uint, 2) => DType::U16,
        (TypeChar::Uint, 4) => DType::U32,
        (TypeChar::Uint, 8) => DType::U64,
        (TypeChar::Bool, 1) => DType::Bool,
        (TypeChar::RawData, 2) => DType::BF16,
        (TypeChar::RawData, _) => {
            return Err(format!(
                "void dtype '{s}' is not supported (only 2-byte void, read as bfloat16)"
            ));
        }
        _ => return Err(format!("unknown dtype '{s}'")),
    };
    let big_endian = dtype.size() > 1
        && match ts.endianness() {
            Endianness::Big => true,
            Endianness::Little => false,
            Endianness::Irrelevant => cfg!(target_endian = "big"),
        };
    Ok((dtype, big_endian, npyz::DType::Plain(ts).descr()))
}
