//! `.safetensors` files: each tensor is one layer named `file/tensor`.
//!
//! The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object of
//! `name: {"dtype", "shape", "data_offsets": [begin, end]}` and an optional `__metadata__`,
//! ignored here), then the data area; offsets count from its start; data is little-endian and
//! in C order.
//!
//! The header is parsed here with serde_json, not with the `safetensors` crate: the crate checks
//! a header only together with the whole file in memory (`SafeTensors::read_metadata` takes the
//! file's bytes; we read no more than the header before checking it), its `Metadata`
//! deserializer keeps the last of a repeated tensor name, and one bad tensor fails the whole
//! file with an error that does not say what is wrong with it. Here a problem with one tensor's
//! entry (its dtype, shape or offsets) is an error on that tensor's layer only; the file's other
//! tensors are still read. Gaps between tensors, which the format forbids but which change no
//! tensor's values, are ignored; bytes after the last tensor are reported as trailing bytes.
//!
//! Data is read by the `.npy` reader's positional chunked decoding (no mmap).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::npy::{DataSource, Header, io_message};
use super::{ArrayInfo, DType, Limits, Location};

/// The dtypes we read, as the format spells them.
const SUPPORTED: &str =
    "F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL";

/// One tensor's checked entry.
#[derive(Clone, Debug)]
struct Tensor {
    dtype: DType,
    /// The dtype as the header spells it.
    descr: String,
    shape: Vec<usize>,
    /// Data bytes, relative to the start of the data area.
    begin: u64,
    end: u64,
    /// Bytes after the data that no tensor accounts for, counted on the tensor that ends last.
    trailing: u64,
}

/// A checked header: the tensors in header order, each valid or with what is wrong with it.
#[derive(Debug)]
pub(crate) struct FileHeader {
    tensors: Vec<(String, Result<Tensor, String>)>,
    /// Absolute offset of the data area.
    data_start: u64,
}

/// The tensor names of a file, in header order.
pub(crate) fn tensor_names(path: &Path, limits: &Limits) -> Result<Vec<String>, String> {
    let header = load_header(path, limits)?;
    if header.tensors.is_empty() {
        return Err("the header lists no tensors".into());
    }
    Ok(header.tensors.iter().map(|(n, _)| n.clone()).collect())
}

/// Opens one tensor: its description, where its data is, and the file's trailing bytes if this
/// tensor ends last.
pub(crate) fn open_tensor(
    path: &Path,
    tensor: &str,
    limits: &Limits,
) -> Result<(Header, DataSource), String> {
    let header = load_header(path, limits)?;
    let t = match header.tensors.iter().find(|(n, _)| n == tensor) {
        Some((_, Ok(t))) => t,
        Some((_, Err(e))) => return Err(e.clone()),
        None => return Err("no such tensor in the file".into()),
    };
    let offset = header.data_start + t.begin;
    let header = Header {
        info: ArrayInfo {
            dtype: t.dtype,
            big_endian: false,
            shape: t.shape.clone(),
            fortran_order: false,
            descr: t.descr.clone(),
        },
        data_offset: offset,
        data_bytes: t.end - t.begin,
        trailing: t.trailing,
    };
    let source = DataSource::Positional {
        path: path.to_path_buf(),
        offset,
    };
    Ok((header, source))
}

/// A tensor name as shown: control characters escaped, so that a layer name and an error stay
/// on one line.
pub(crate) fn display_name(tensor: &str) -> impl fmt::Display + '_ {
    struct Shown<'a>(&'a str);
    impl fmt::Display for Shown<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for c in self.0.chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            Ok(())
        }
    }
    Shown(tensor)
}

// ---------------------------------------------------------------- header cache

/// What identifies a file's contents well enough to reuse its parsed header: opening each of a
/// file's tensors would otherwise parse the whole header again (quadratic in the tensor count).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
    max_header_bytes: usize,
}

/// Recently parsed headers, the oldest dropped first once their header bytes pass the budget.
#[derive(Default)]
struct Cache {
    map: HashMap<Key, (Arc<FileHeader>, usize)>,
    order: VecDeque<Key>,
    bytes: usize,
}

/// Header bytes the cache keeps (the parsed form is a small multiple of them).
const CACHE_BYTES: usize = 64 << 20;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn cache_get(key: &Key) -> Option<Arc<FileHeader>> {
    let guard = CACHE.lock().ok()?;
    guard.as_ref()?.map.get(key).map(|(h, _)| h.clone())
}

fn cache_put(key: Key, header: Arc<FileHeader>, weight: usize) {
    let Ok(mut guard) = CACHE.lock() else {
        return;
    };
    let cache = guard.get_or_insert_with(Cache::default);
    if let MapEntry::Vacant(v) = cache.map.entry(key.clone()) {
        v.insert((header, weight));
        cache.order.push_back(key);
        cache.bytes += weight;
    }
    while cache.bytes > CACHE_BYTES && cache.order.len() > 1 {
        if let Some(old) = cache.order.pop_front()
            && let Some((_, w)) = cache.map.remove(&old)
        {
            cache.bytes -= w;
        }
    }
}

/// The checked header of `path`, parsed once per version of the file.
fn load_header(path: &Path, limits: &Limits) -> Result<Arc<FileHeader>, String> {
    let file = File::open(path).map_err(|e| io_message(&e))?;
    let meta = file.metadata().map_err(|e| io_message(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let key = Key {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
        max_header_bytes: limits.max_header_bytes,
    };
    if let Some(h) = cache_get(&key) {
        return Ok(h);
    }
    let header = Arc::new(read_header(
        &mut (&file).take(meta.len()),
        meta.len(),
        limits,
    )?);
    let weight = (header.data_start as usize).saturating_add(64 * header.tensors.len());
    cache_put(key, header.clone(), weight);
    Ok(header)
}

// ---------------------------------------------------------------- parsing

/// A tensor's name and its description, or what is wrong with its header entry.
pub type TensorEntry = (String, Result<ArrayInfo, String>);

/// Parses and checks the header of a complete `.safetensors` file held in memory (`bytes` is
/// the whole file), as opening it does. Returns each tensor's name and its description or what
/// is wrong with it; an error is about the whole file.
pub fn parse_header(bytes: &[u8], limits: &Limits) -> Result<Vec<TensorEntry>, String> {
    let header = read_header(&mut &bytes[..], bytes.len() as u64, limits)?;
    Ok(header
        .tensors
        .into_iter()
        .map(|(name, t)| {
            let info = t.map(|t| ArrayInfo {
                dtype: t.dtype,
                big_endian: false,
                shape: t.shape,
                fortran_order: false,
                descr: t.descr,
            });
            (name, info)
        })
        .collect())
}

/// Reads and checks a header from `r`, whose total length is `total` bytes. The header length
/// is checked against the limit and `total` before its buffer is allocated.
fn read_header<R: Read>(r: &mut R, total: u64, limits: &Limits) -> Result<FileHeader, String> {
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            "file changed while reading: the header ended early".to_string()
        } else {
            format!("read error: {}", io_message(&e))
        }
    };
    if total < 8 {
        return Err(format!(
            "too short to be a .safetensors file ({total} bytes)"
        ));
    }
    let mut prefix = [0u8; 8];
    r.read_exact(&mut prefix).map_err(eof)?;
    let n = u64::from_le_bytes(prefix);
    if n > limits.max_header_bytes as u64 {
        return Err(format!(
            "header length {n} bytes exceeds the limit of {} bytes \
             (raise it with --max-header-bytes)",
            limits.max_header_bytes
        ));
    }
    if n > total - 8 {
        return Err(format!(
            "header length {n} runs past the end of the file ({total} bytes)"
        ));
    }
    let mut bytes = vec![0u8; n as usize];
    r.read_exact(&mut bytes).map_err(eof)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "header is not valid UTF-8".to_string())?;
    // JSON whitespace may come first, as the format's own reader accepts.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err("header is not a JSON object".into());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = de
        .deserialize_map(TopVisitor)
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| format!("header is not valid JSON: {e}"))?;
    let data_len = total - 8 - n;
    Ok(FileHeader {
        tensors: check_entries(entries, data_len),
        data_start: 8 + n,
    })
}

/// A header entry as written, before its values are checked.
enum RawEntry {
    Fields {
        dtype: Option<Value>,
        shape: Option<Value>,
        offsets: Option<Value>,
        repeated: Option<String>,
    },
    NotObject,
    /// A second entry with the same name.
    Repeated,
}

/// The top-level object: entries in order, `__metadata__` skipped, repeated names marked.
struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Vec<(String, RawEntry)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, RawEntry)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let entry = map.next_value_seed(EntrySeed)?;
            match index.entry(name) {
                MapEntry::Occupied(o) => entries[*o.get()].1 = RawEntry::Repeated,
                MapEntry::Vacant(v) => {
                    entries.push((v.key().clone(), entry));
                    v.insert(entries.len() - 1);
                }
            }
        }
        Ok(entries)
    }
}

/// One entry: any JSON value, never an error (a malformed entry fails only its tensor).
struct EntrySeed;

impl<'de> de::DeserializeSeed<'de> for EntrySeed {
    type Value = RawEntry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawEntry, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let (mut dtype, mut shape, mut offsets, mut repeated) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "dtype" => &mut dtype,
                "shape" => &mut shape,
                "data_offsets" => &mut offsets,
                // Other keys are ignored, as the format's own reader ignores them.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value::<Value>()?).is_some() {
                repeated.get_or_insert(key);
            }
        }
        Ok(RawEntry::Fields {
            dtype,
            shape,
            offsets,
            repeated,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEntry, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawEntry::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawEntry, E> {
        Ok(RawEntry::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawEntry, E> {
        Ok(RawEntry::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawEntry, E> {
        Ok(RawEntry::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawEntry, E> {
        Ok(RawEntry::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawEntry, E> {
        Ok(RawEntry::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawEntry, E> {
        Ok(RawEntry::NotObject)
    }
}

/// Checks each entry on its own, then the valid ones against each other: overlapping data is an
/// error on every tensor involved, and the bytes after the last tensor go to the one ending last.
fn check_entries(
    entries: Vec<(String, RawEntry)>,
    data_len: u64,
) -> Vec<(String, Result<Tensor, String>)> {
    let ends: Vec<Option<u64>> = entries
        .iter()
        .map(|(_, raw)| match raw {
            RawEntry::Fields {
                offsets: Some(v), ..
            } => match non_negative_ints(v).as_deref() {
                Some(&[b, e]) if b <= e && e <= data_len => Some(e),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut out: Vec<(String, Result<Tensor, String>)> = entries
        .into_iter()
        .map(|(name, raw)| {
            let t = check_entry(raw, data_len);
            (name, t)
        })
        .collect();

    // Non-empty ranges sorted by start: one overlaps another exactly when it starts before the
    // furthest end so far, or the next one starts before it ends.
    let mut ranges: Vec<(u64, u64, usize)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, (_, t))| t.as_ref().ok().map(|t| (t.begin, t.end, i)))
        .filter(|&(b, e, _)| b < e)
        .collect();
    ranges.sort_unstable();
    let mut overlaps: Vec<(usize, usize)> = Vec::new();
    let mut furthest: Option<(u64, usize)> = None;
    for (k, &(begin, end, i)) in ranges.iter().enumerate() {
        if let Some((far_end, j)) = furthest
            && begin < far_end
        {
            overlaps.push((i, j));
        } else if let Some(&(next_begin, _, j)) = ranges.get(k + 1)
            && next_begin < end
        {
            overlaps.push((i, j));
        }
        if furthest.is_none_or(|(far_end, _)| end > far_end) {
            furthest = Some((end, i));
        }
    }
    let mut errors = Vec::with_capacity(overlaps.len());
    for (i, j) in overlaps {
        if let (Ok(a), Ok(b)) = (&out[i].1, &out[j].1) {
            errors.push((
                i,
                format!(
                    "data_offsets [{}, {}] overlap those of tensor '{}' [{}, {}]",
                    a.begin,
                    a.end,
                    display_name(&shorten(&out[j].0)),
                    b.begin,
                    b.end
                ),
            ));
        }
    }
    for (i, e) in errors {
        out[i].1 = Err(e);
    }

    // Trailing bytes: after the furthest end of any entry with usable offsets (a tensor refused
    // for its dtype still accounts for its bytes).
    let covered = ends.into_iter().flatten().max().unwrap_or(0);
    let last = out
        .iter_mut()
        .filter_map(|(_, t)| t.as_mut().ok())
        .find(|t| t.end == covered);
    if let Some(t) = last {
        t.trailing = data_len - covered;
    }
    out
}

fn check_entry(raw: RawEntry, data_len: u64) -> Result<Tensor, String> {
    let (dtype, shape, offsets) = match raw {
        RawEntry::Repeated => return Err("the header names this tensor twice".into()),
        RawEntry::NotObject => {
            return Err("header entry is not an object with dtype, shape and data_offsets".into());
        }
        RawEntry::Fields {
            repeated: Some(key),
            ..
        } => return Err(format!("header entry has '{key}' twice")),
        RawEntry::Fields {
            dtype,
            shape,
            offsets,
            repeated: None,
        } => (dtype, shape, offsets),
    };
    let missing = |k: &str| format!("header entry is missing '{k}'");
    let dtype = dtype.ok_or_else(|| missing("dtype"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;
    let offsets = offsets.ok_or_else(|| missing("data_offsets"))?;

    let Value::String(descr) = dtype else {
        return Err("dtype is not a string".into());
    };
    let dtype = parse_dtype(&descr)?;
    let shape: Vec<usize> = non_negative_ints(&shape)
        .and_then(|v| v.into_iter().map(|d| usize::try_from(d).ok()).collect())
        .ok_or("shape is not a list of non-negative integers")?;
    let (begin, end) = match non_negative_ints(&offsets).as_deref() {
        Some(&[b, e]) => (b, e),
        _ => return Err("data_offsets is not a pair of non-negative integers".into()),
    };
    if end < begin {
        return Err(format!(
            "data_offsets [{begin}, {end}] end before they begin"
        ));
    }
    let bytes = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| format!("shape {} overflows: too many elements", fmt_list(&shape)))?;
    if end - begin != bytes {
        return Err(format!(
            "data_offsets [{begin}, {end}] hold {} bytes but shape {} of {descr} needs {bytes}",
            end - begin,
            fmt_list(&shape)
        ));
    }
    if end > data_len {
        return Err(format!(
            "data_offsets [{begin}, {end}] run past the end of the data ({data_len} bytes \
             after the header)"
        ));
    }
    Ok(Tensor {
        dtype,
        descr,
        shape,
        begin,
        end,
        trailing: 0,
    })
}

/// The values of a JSON array of non-negative integers.
fn non_negative_ints(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Array(items) => items.iter().map(Value::as_u64).collect(),
        _ => None,
    }
}

fn fmt_list(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    Ok(match s {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F8_E4M3" => DType::F8E4M3,
        "F8_E5M2" => DType::F8E5M2,
        "I8" => DType::I8,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        "U8" => DType::U8,
        "U16" => DType::U16,
        "U32" => DType::U32,
        "U64" => DType::U64,
        "BOOL" => DType::Bool,
        "F4" | "F6_E2M3" | "F6_E3M2" | "F8_E8M0" | "F8_E4M3FNUZ" | "F8_E5M2FNUZ" | "C64" => {
            return Err(format!(
                "dtype '{s}' is not supported (supported: {SUPPORTED})"
            ));
        }
        _ => {
            return Err(format!(
                "unknown dtype '{}' (supported: {SUPPORTED})",
                display_name(&shorten(s))
            ));
        }
    })
}

/// At most 40 characters of `s`, with `…` when cut (a hostile dtype string can be a megabyte).
fn shorten(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

/// Used by discovery: a tensor of `file`.
pub(crate) fn tensor_location(file: &Path, tensor: &str) -> Location {
    Location::SafetensorsTensor {
        file: PathBuf::from(file),
        tensor: tensor.to_string(),
    }
}
