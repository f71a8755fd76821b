//! Finding and reading activation dumps: `.npy` files, `.npz` archives, `.safetensors` files and
//! folders of them.
//!
//! Everything here reads; nothing writes. Every header is checked against the file's real size
//! before anything is allocated, and every failure is a [`LoadError`] that names the file.

pub mod discover;
pub mod npy;
pub mod npz;
pub mod safetensors;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use discover::{BatchLayout, Discovery, discover};
pub use npy::{OpenArray, parse_header};

/// Element types we can read. Everything is analysed as f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Bool,
    /// float8 with 4 exponent bits, no infinities (`float8_e4m3fn`; safetensors `F8_E4M3`).
    #[serde(rename = "float8_e4m3fn")]
    F8E4M3,
    /// float8 with 5 exponent bits, IEEE-like (`float8_e5m2`; safetensors `F8_E5M2`).
    #[serde(rename = "float8_e5m2")]
    F8E5M2,
}

impl DType {
    /// numpy's name for the type (`float32`, `bfloat16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a file's header says about one array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    pub dtype: DType,
    /// Byte order of the data in the file (false for single-byte types).
    pub big_endian: bool,
    pub shape: Vec<usize>,
    pub fortran_order: bool,
    /// The dtype string as the file spells it: quoted for `.npy` as numpy writes it (`'<f4'`,
    /// `'|V2'`, ...), bare for `.safetensors` (`F32`, `BF16`, ...).
    pub descr: String,
}

impl ArrayInfo {
    /// Element count (the header's shape product, already checked not to overflow).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one array's bytes live.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Location {
    Npy(#[serde(with = "path_bytes")] PathBuf),
    NpzMember {
        #[serde(with = "path_bytes")]
        archive: PathBuf,
        member: String,
    },
    /// One tensor of a `.safetensors` file.
    SafetensorsTensor {
        #[serde(with = "path_bytes")]
        file: PathBuf,
        tensor: String,
    },
}

/// Paths in a saved analysis: their bytes on Unix, so a name that is not UTF-8 still comes
/// back as the same path (serde's own `PathBuf` refuses those); elsewhere their text.
pub mod path_bytes {
    use std::path::{Path, PathBuf};

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            s.serialize_bytes(p.as_os_str().as_bytes())
        }
        #[cfg(not(unix))]
        {
            s.serialize_bytes(p.to_string_lossy().as_bytes())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let bytes = serde_bytes_buf(d)?;
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
        }
        #[cfg(not(unix))]
        {
            Ok(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
        }
    }

    /// A byte string (serde reads `Vec<u8>` as a sequence unless asked for bytes).
    fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path as bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Location {
    /// The file the bytes are read from (the archive of a member, the file of a tensor).
    pub fn file(&self) -> &std::path::Path {
        match self {
            Location::Npy(p) => p,
            Location::NpzMember { archive, .. } => archive,
            Location::SafetensorsTensor { file, .. } => file,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Npy(p) => write!(f, "{}", p.display()),
            Location::NpzMember { archive, member } => {
                write!(f, "{}/{}", archive.display(), member)
            }
            Location::SafetensorsTensor { file, tensor } => {
                write!(
                    f,
                    "{}/{}",
                    file.display(),
                    safetensors::display_name(tensor)
                )
            }
        }
    }
}

/// One layer: a single array, or (batch-folder layout) one array per calibration batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Display name: file stem, `archive/member`, or the file name shared across batch folders.
    pub name: String,
    /// The arrays, in batch order. Never empty.
    pub parts: Vec<Location>,
}

impl LayerSpec {
    /// A human-readable description of where the data comes from.
    pub fn source(&self) -> String {
        match self.parts.as_slice() {
            [one] => one.to_string(),
            [first, ..] => format!("{} (+{} more batch files)", first, self.parts.len() - 1),
            [] => String::new(),
        }
    }
}

/// Limits that keep hostile files from costing unbounded memory or time.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `.npy` or `.safetensors` header we accept, in bytes.
    pub max_header_bytes: usize,
    /// Largest inflated/stored ratio we accept for a compressed `.npz` member.
    pub max_inflate_ratio: u64,
    /// Largest number of files a folder walk will visit.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 1 << 20,
            max_inflate_ratio: 1024,
            max_files: 100_000,
        }
    }
}

/// A failure to find or read one input. Displays as `<file>: <what is wrong>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

impl LoadError {
    pub fn new(path: impl fmt::Display, message: impl Into<String>) -> Self {
        LoadError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}
