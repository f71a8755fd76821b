//! Shared by the fuzz targets: write the input to a per-process scratch file and run the loader
//! on it the way the binary does (open, then decode every chunk).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use calibscope::source::{BatchLayout, Limits, Location, OpenArray, discover};

/// A scratch file in tmpfs when there is one; one per process and extension.
pub fn scratch(ext: &str) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("calibscope-fuzz-{}.{ext}", std::process::id()))
}

/// Small limits so a fuzz input can reach every limit check.
pub fn limits() -> Limits {
    Limits {
        max_header_bytes: 4096,
        max_inflate_ratio: 1024,
        max_files: 100,
    }
}

/// Opens `location` and decodes all of it in small chunks; errors are fine, panics are not.
pub fn read_all(location: &Location, limits: &Limits) {
    let Ok(a) = OpenArray::open(location, limits) else {
        return;
    };
    let len = a.info.len();
    let chunks = a.map_chunks(7, &AtomicBool::new(false), |first, v| (first, v.len()));
    if let Ok(chunks) = chunks {
        // The chunks must cover the array exactly, in order.
        let mut next = 0;
        for (first, n) in chunks {
            assert_eq!(first, next, "chunk out of order");
            assert!(n > 0 && n <= 7, "chunk of {n} elements");
            next += n;
        }
        assert_eq!(next, len, "chunks do not cover the array");
        let _ = a.f64_overflows();
    }
}

/// Runs discovery on `path` and reads every layer found.
pub fn discover_and_read(path: &std::path::Path, limits: &Limits) {
    let found = discover(&[path.to_path_buf()], BatchLayout::Auto, limits);
    for e in &found.errors {
        assert!(!e.message.is_empty());
    }
    for layer in &found.layers {
        for part in &layer.parts {
            read_all(part, limits);
        }
    }
}
