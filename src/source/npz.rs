//! `.npz` archives: each member is one layer named `archive/member`.
//!
//! `np.savez` stores members uncompressed: their bytes sit contiguously in the archive, so they
//! are read with positional reads like plain `.npy` files (and in parallel). `np.savez_compressed`
//! deflates them: those can only be streamed from the start, once per pass, with bounded memory.
//! Declared sizes are never trusted: a deflated member whose declared size is too large for its
//! compressed size is refused (zip bomb), and one that inflates past its declared size is an
//! error.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::npy::{DataSource, Header, io_message, read_header};
use super::{Limits, LoadError, Location};

/// The member names of an archive, in archive order (directories left out).
pub(crate) fn member_names(archive: &Path) -> Result<Vec<String>, String> {
    let zip = open_archive(archive)?;
    let mut names = Vec::with_capacity(zip.len());
    for name in zip.file_names() {
        let name = name.map_err(|e| format!("corrupt archive: {e}"))?;
        if !name.ends_with('/') {
            names.push(name.into_owned());
        }
    }
    Ok(names)
}

/// The layer name of a member: `foo.npy` → `foo` (`None` if it is not a `.npy` member).
pub(crate) fn member_layer_name(member: &str) -> Option<&str> {
    member.strip_suffix(".npy").filter(|s| !s.is_empty())
}

fn open_archive(archive: &Path) -> Result<ZipArchive<File>, String> {
    let file = File::open(archive).map_err(|e| io_message(&e))?;
    if !file.metadata().map_err(|e| io_message(&e))?.is_file() {
        return Err("not a regular file".into());
    }
    ZipArchive::new(file).map_err(|e| match e {
        ZipError::Io(e) => format!("read error: {}", io_message(&e)),
        e => format!("not a valid .npz (zip) archive: {e}"),
    })
}

fn member_error(e: ZipError) -> String {
    match e {
        ZipError::FileNotFound => "no such member in the archive".into(),
        e => format!("corrupt member: {e}"),
    }
}

/// Read failures inside a member's header come from the archive's data, not from the disk:
/// a bad deflate stream or a member shorter than it declares.
fn member_read_error(m: String) -> String {
    if let Some(rest) = m.strip_prefix("read error: ") {
        format!("corrupt member: {rest}")
    } else if m.starts_with("file changed while reading: the header ended early") {
        "corrupt member: its data ends inside the .npy header".into()
    } else {
        m
    }
}

/// Reads a member's header; the data is then read through the returned source.
pub(crate) fn open_member(
    archive: &Path,
    member: &str,
    limits: &Limits,
) -> Result<(Header, DataSource), String> {
    let archive_len = std::fs::metadata(archive)
        .map_err(|e| io_message(&e))?
        .len();
    let mut zip = open_archive(archive)?;
    let mut zf = zip.by_name(member).map_err(member_error)?;
    if zf.encrypted() {
        return Err("encrypted members are not supported".into());
    }
    if zf.is_dir() {
        return Err("is a directory, not a .npy member".into());
    }
    let size = zf.size();
    let compressed = zf.compressed_size();
    match zf.compression() {
        CompressionMethod::Stored => {
            if size != compressed {
                return Err(format!(
                    "corrupt member: stored with {compressed} bytes but declares {size}"
                ));
            }
            let start = zf
                .data_start()
                .ok_or_else(|| "corrupt member: data offset unknown".to_string())?;
            if start.checked_add(size).is_none_or(|end| end > archive_len) {
                return Err("corrupt member: its data runs past the end of the archive".into());
            }
            let header = read_header(&mut zf, size, limits).map_err(member_read_error)?;
            let offset = start + header.data_offset;
            let source = DataSource::Positional {
                path: archive.to_path_buf(),
                offset,
            };
            Ok((header, source))
        }
        CompressionMethod::Deflated => {
            let ratio = limits.max_inflate_ratio;
            if size > compressed.max(1).saturating_mul(ratio) {
                return Err(format!(
                    "declares {size} bytes from {compressed} compressed bytes, more than the \
                     inflate ratio limit of {ratio}x; refusing a possible zip bomb \
                     (raise the limit with --max-inflate-ratio)"
                ));
            }
            let header = read_header(&mut zf, size, limits).map_err(member_read_error)?;
            let source = DataSource::Deflated(DeflatedMember {
                location: Location::NpzMember {
                    archive: archive.to_path_buf(),
                    member: member.to_string(),
                },
                declared_size: size,
                data_offset: header.data_offset,
                data_bytes: header.data_bytes,
            });
            Ok((header, source))
        }
        m => Err(format!(
            "unsupported compression method {m:?} (only stored and deflate)"
        )),
    }
}

/// A deflated member, re-opened and streamed from the start on every pass.
#[derive(Debug)]
pub(crate) struct DeflatedMember {
    location: Location,
    declared_size: u64,
    data_offset: u64,
    data_bytes: u64,
}

/// The data bytes of a deflated member, in order.
pub(crate) struct DataStream<'r> {
    reader: &'r mut dyn Read,
    remaining: u64,
}

impl DataStream<'_> {
    /// Fills `buf` with the next data bytes.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<(), String> {
        if buf.len() as u64 > self.remaining {
            return Err("internal error: read past the end of the data".into());
        }
        self.reader.read_exact(buf).map_err(stream_error)?;
        self.remaining -= buf.len() as u64;
        Ok(())
    }
}

fn stream_error(e: io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "corrupt member: its data ends before the size the header says".into()
    } else {
        format!("corrupt member: {e}")
    }
}

impl DeflatedMember {
    /// Opens the member, skips its header and runs `body` on the data stream; afterwards checks
    /// that the stream ends exactly at the declared size (and so its checksum gets verified).
    pub(crate) fn with_stream<T>(
        &self,
        body: impl FnOnce(&mut DataStream<'_>) -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        let err = |m: String| LoadError::new(&self.location, m);
        let Location::NpzMember { archive, member } = &self.location else {
            return Err(err("internal error: not an archive member".into()));
        };
        let mut zip = open_archive(archive).map_err(err)?;
        let mut zf = zip.by_name(member).map_err(|e| err(member_error(e)))?;
        if zf.compression() != CompressionMethod::Deflated || zf.size() != self.declared_size {
            return Err(err(format!(
                "file changed while reading: {} was replaced",
                archive.display()
            )));
        }
        skip(&mut zf, self.data_offset).map_err(err)?;
        let mut stream = DataStream {
            reader: &mut zf,
            remaining: self.data_bytes,
        };
        let out = body(&mut stream)?;
        // Drain what the header does not account for, then expect the end.
        let rest = stream.remaining + (self.declared_size - self.data_offset - self.data_bytes);
        skip(&mut zf, rest).map_err(err)?;
        let mut probe = [0u8; 1];
        let too_long = || {
            err(format!(
                "inflates to more than its declared {} bytes",
                self.declared_size
            ))
        };
        match zf.read(&mut probe) {
            Ok(0) => Ok(out),
            Ok(_) => Err(too_long()),
            // zip enforces the declared size itself; keep our wording for that case.
            Err(e) if e.to_string().contains("larger than its declared") => Err(too_long()),
            Err(e) => Err(err(stream_error(e))),
        }
    }
}

/// Reads and discards exactly `n` bytes.
fn skip(r: &mut dyn Read, n: u64) -> Result<(), String> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(stream_error)?;
    if copied < n {
        return Err(stream_error(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Used by discovery: the `archive` path as given.
pub(crate) fn member_location(archive: &Path, member: &str) -> Location {
    Location::NpzMember {
        archive: PathBuf::from(archive),
        member: member.to_string(),
    }
}
