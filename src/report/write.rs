//! The one way calibscope writes a file: atomically, never over an input, never over
//! something that is not a regular file, and never failing silently.
//!
//! Rules for a target path:
//! - missing: created (its folder must exist);
//! - a regular file: replaced atomically, keeping its permissions: the bytes go to a temp file
//!   in the same folder, are synced, and the temp file is renamed over the target, so a reader
//!   sees the old file or the new one, never half of one;
//! - a symbolic link to a regular file: the file it points to is replaced as above, so the link
//!   stays a link and whoever else reads through it sees the new contents;
//! - anything else (folder, device, FIFO, socket, a link to one of them, a dangling link):
//!   refused, since a rename would replace the node itself (`/dev/full` becoming a file);
//! - the same file as one of the inputs (by any path, link or hard link): refused.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::source::{LayerSpec, Location};

/// Why a write was refused or failed. The message names the path and reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("refusing to replace {}: it is {kind}, not a regular file", .path.display())]
    NotAFile { path: PathBuf, kind: String },
    #[error("refusing to replace {}: it is one of the inputs", .path.display())]
    Input { path: PathBuf },
    #[error("cannot write {}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
}

/// Writes `bytes` to `path` by the rules of the module docs; `inputs` are the files the
/// analysis read (folders among them are harmless: a folder target is refused anyway).
pub fn write_atomic(path: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<(), WriteError> {
    let io_err = |e: io::Error| WriteError::Io {
        path: path.to_path_buf(),
        reason: describe(&e),
    };
    let target = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return replace(path, bytes, None).map_err(|e| missing_folder(path, e));
        }
        Err(e) => return Err(io_err(e)),
        Ok(m) if m.is_symlink() => match fs::metadata(path) {
            Ok(t) if t.is_file() => t,
            Ok(t) => {
                return Err(WriteError::NotAFile {
                    path: path.to_path_buf(),
                    kind: format!("a symbolic link to {}", kind(&t)),
                });
            }
            Err(_) => {
                return Err(WriteError::NotAFile {
                    path: path.to_path_buf(),
                    kind: "a symbolic link to nothing".into(),
                });
            }
        },
        Ok(m) if !m.is_file() => {
            return Err(WriteError::NotAFile {
                path: path.to_path_buf(),
                kind: kind(&m).into(),
            });
        }
        Ok(m) => m,
    };
    if inputs
        .iter()
        .any(|i| fs::metadata(i).is_ok_and(|m| same_file(&m, &target, i, path)))
    {
        return Err(WriteError::Input {
            path: path.to_path_buf(),
        });
    }
    // Through a link, the rename must land on the file it points to, in that file's folder.
    let real = fs::canonicalize(path).map_err(io_err)?;
    replace(&real, bytes, Some(&target)).map_err(io_err)
}

/// The files a set of layers reads (an archive once per member: duplicates are harmless).
pub fn input_files<'a>(
    specs: impl IntoIterator<Item = &'a LayerSpec>,
) -> impl Iterator<Item = &'a Path> {
    specs.into_iter().flat_map(|s| &s.parts).map(Location::file)
}

/// An io error as a person reads it: the OS message without its "(os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match (s.rfind(" (os error "), s.ends_with(')')) {
        (Some(i), true) => s[..i].to_string(),
        _ => s,
    }
}

/// Writes a temp file next to `path`, syncs it, gives it `old`'s permissions and renames it
/// over `path`; the temp file is removed on any failure.
fn replace(path: &Path, bytes: &[u8], old: Option<&Metadata>) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = folder(path);
    let (mut file, tmp) = temp_file(dir, &name.to_string_lossy())?;
    let written = (|| {
        file.write_all(bytes)?;
        if let Some(old) = old {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // The rename is durable once the folder is synced; some filesystems cannot sync a folder,
    // and the new file is in place either way, so a failure here is not an error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `path`'s folder (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A new hidden temp file in `dir`; never opens an existing one (a leftover of a crashed run or
/// a planted link), the pid and a counter keep concurrent writers apart.
fn temp_file(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut tries = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match File::options().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A new file whose folder is missing gets that said plainly.
fn missing_folder(path: &Path, e: io::Error) -> WriteError {
    let reason = match e.kind() {
        io::ErrorKind::NotFound => {
            format!("the folder {} does not exist", folder(path).display())
        }
        _ => describe(&e),
    };
    WriteError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Same file on disk: device and inode on Unix (catches links and hard links), canonical
/// paths elsewhere.
#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata, _: &Path, _: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &Metadata, _: &Metadata, a: &Path, b: &Path) -> bool {
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_a_new_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        write_atomic(&out, b"hello", &[]).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello");
        assert_eq!(names(dir.path()), ["out.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn replaces_a_regular_file_and_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        fs::write(&out, b"old contents, longer than the new").unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::metadata(&out).unwrap();
        write_atomic(&out, b"new", &[]).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
        let after = fs::metadata(&out).unwrap();
        assert_eq!(after.permissions().mode() & 0o777, 0o640);
        // A rename, not a rewrite in place: a reader holding the old file keeps the old bytes.
        use std::os::unix::fs::MetadataExt;
        assert_ne!(after.ino(), before.ino());
        assert_eq!(names(dir.path()), ["out.json"]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nope").join("out.json");
        let e = write_atomic(&out, b"x", &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot write {}: the folder {} does not exist",
                out.display(),
                dir.path().join("nope").display()
            )
        );
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_folder_target_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x", &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "refusing to replace {}: it is a folder, not a regular file",
                sub.display()
            )
        );
        assert!(sub.is_dir());
        assert_eq!(names(dir.path()), ["sub"]);
    }

    #[test]
    fn an_input_is_refused_by_any_path() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.npy");
        fs::write(&input, b"input").unwrap();
        // The same file spelled differently, and through a hard link.
        let dotted = dir.path().join(".").join("a.npy");
        let hard = dir.path().join("hard.npy");
        fs::hard_link(&input, &hard).unwrap();
        for target in [&input, &dotted, &hard] {
            let e = write_atomic(target, b"x", &[&input]).unwrap_err();
            assert!(matches!(e, WriteError::Input { .. }), "{target:?}: {e}");
        }
        // The input named through a link is caught too.
        #[cfg(unix)]
        {
            let link = dir.path().join("link.npy");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            let e = write_atomic(&input, b"x", &[&link]).unwrap_err();
            assert!(matches!(e, WriteError::Input { .. }));
            let e = write_atomic(&link, b"x", &[&input]).unwrap_err();
            assert!(matches!(e, WriteError::Input { .. }));
        }
        assert_eq!(fs::read(&input).unwrap(), b"input");
        // Another file is fine.
        write_atomic(&dir.path().join("b.json"), b"y", &[&input]).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_file_replaces_the_file_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("calib.cache");
        fs::write(&real, b"old").unwrap();
        let link = dir.path().join("calib.cache");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new", &[]).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), real);
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // The temp file went next to the real file and is gone.
        assert_eq!(names(&real_dir), ["calib.cache"]);
        assert_eq!(names(dir.path()), ["calib.cache", "real"]);
    }

    #[cfg(unix)]
    #[test]
    fn links_to_non_files_and_dangling_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let to_dir = dir.path().join("to_dir");
        std::os::unix::fs::symlink(dir.path(), &to_dir).unwrap();
        let e = write_atomic(&to_dir, b"x", &[]).unwrap_err().to_string();
        assert!(
            e.ends_with("it is a symbolic link to a folder, not a regular file"),
            "{e}"
        );
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
        let e = write_atomic(&dangling, b"x", &[]).unwrap_err().to_string();
        assert!(
            e.ends_with("it is a symbolic link to nothing, not a regular file"),
            "{e}"
        );
        assert!(!dir.path().join("missing").exists());
        assert!(fs::symlink_metadata(&to_dir).unwrap().is_symlink());
    }

    #[test]
    fn a_failed_rename_removes_the_temp_file() {
        // A non-empty folder cannot be renamed over; `write_atomic` refuses it before this
        // point, so call the inner step to see its cleanup.
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("keep"), b"k").unwrap();
        assert!(replace(&sub, b"x", None).is_err());
        assert_eq!(names(dir.path()), ["sub"]);
        assert_eq!(names(&sub), ["keep"]);
    }

    #[cfg(unix)]
    #[test]
    fn describe_drops_the_os_error_number() {
        let e = io::Error::from_raw_os_error(28);
        assert!(e.to_string().ends_with("(os error 28)"));
        assert_eq!(describe(&e), "No space left on device");
        assert_eq!(describe(&io::Error::other("plain")), "plain");
    }

    #[test]
    fn input_files_lists_npy_files_and_archives() {
        let spec = LayerSpec {
            name: "x".into(),
            parts: vec![
                Location::Npy("a.npy".into()),
                Location::NpzMember {
                    archive: "b.npz".into(),
                    member: "m.npy".into(),
                },
            ],
        };
        let files: Vec<&Path> = input_files([&spec]).collect();
        assert_eq!(files, [Path::new("a.npy"), Path::new("b.npz")]);
    }
}
