//! Turning the user's paths into layers: files, archives, folders, batch-folder layouts.
//!
//! Inputs keep the order they were given in; the layers found under one input are sorted in
//! natural order (`layer2` before `layer10`). Folder walks follow symlinks but never enter a
//! directory twice (so symlink loops end), and stop after [`Limits::max_files`] files.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::npy::io_message;
use super::npz::{member_layer_name, member_location, member_names};
use super::safetensors::{display_name, tensor_location, tensor_names};
use super::{LayerSpec, Limits, LoadError, Location};

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
///
/// A folder is a batch-folder layout (`Auto`) when it has at least two sub-folders, no loose
/// `.npy`/`.npz`/`.safetensors` files, and every sub-folder yields the same non-empty set of layer names; the
/// sub-folders are then batches, in natural order. Only the given folder itself is checked.
pub fn discover(paths: &[PathBuf], layout: BatchLayout, limits: &Limits) -> Discovery {
    let mut d = Discovery::default();
    for path in paths {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                d.errors
                    .push(LoadError::new(path.display(), io_message(&e)));
                continue;
            }
        };
        if meta.is_dir() {
            discover_dir(path, layout, limits, &mut d);
        } else if !meta.is_file() {
            d.errors.push(LoadError::new(
                path.display(),
                "not a regular file or folder",
            ));
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut items = Vec::new();
            match kind(&name) {
                Some(Kind::Npy) => items.push((stem, Location::Npy(path.clone()))),
                Some(Kind::Npz) => npz_items(path, &stem, &mut items, &mut d.errors),
                Some(Kind::Safetensors) => {
                    safetensors_items(path, &stem, limits, &mut items, &mut d.errors)
                }
                None => d.errors.push(LoadError::new(
                    path.display(),
                    "not a .npy, .npz or .safetensors file",
                )),
            }
            push_single(&mut d.layers, items);
        }
    }
    d
}

/// Compares names in natural order: digit runs by value (`x2 < x10`), `/`-separated parts one
/// by one. Ties fall back to plain string order so the order is total and stable.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let mut pa = a.split('/');
    let mut pb = b.split('/');
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match natural_cmp_part(x, y) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
}

fn natural_cmp_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            let sj = j;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let x = trim_zeros(&a[si..i]);
            let y = trim_zeros(&b[sj..j]);
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Npy,
    Npz,
    Safetensors,
}

impl Kind {
    /// The file name's extension, with its dot (ASCII, matched case-insensitively).
    fn extension(self) -> &'static str {
        match self {
            Kind::Npy => ".npy",
            Kind::Npz => ".npz",
            Kind::Safetensors => ".safetensors",
        }
    }
}

/// The kind of file by its extension; none for a name that is only the extension.
fn kind(file_name: &str) -> Option<Kind> {
    let lower = file_name.to_ascii_lowercase();
    [Kind::Npy, Kind::Npz, Kind::Safetensors]
        .into_iter()
        .find(|k| lower.len() > k.extension().len() && lower.ends_with(k.extension()))
}

/// `(layer name, location)` pairs, before grouping.
type Items = Vec<(String, Location)>;

/// One item per `.npy` member of an archive, named `prefix/member`; other members are errors.
fn npz_items(archive: &Path, prefix: &str, items: &mut Items, errors: &mut Vec<LoadError>) {
    match member_names(archive) {
        Ok(names) => {
            for member in names {
                match member_layer_name(&member) {
                    Some(stem) => items.push((
                        format!("{prefix}/{stem}"),
                        member_location(archive, &member),
                    )),
                    None => errors.push(LoadError::new(
                        member_location(archive, &member),
                        "not a .npy member; skipped",
                    )),
                }
            }
        }
        Err(m) => errors.push(LoadError::new(archive.display(), m)),
    }
}

/// One item per tensor of a `.safetensors` file, named `prefix/tensor`.
fn safetensors_items(
    file: &Path,
    prefix: &str,
    limits: &Limits,
    items: &mut Items,
    errors: &mut Vec<LoadError>,
) {
    match tensor_names(file, limits) {
        Ok(names) => items.extend(names.into_iter().map(|tensor| {
            let name = format!("{prefix}/{}", display_name(&tensor));
            (name, tensor_location(file, &tensor))
        })),
        Err(m) => errors.push(LoadError::new(file.display(), m)),
    }
}

/// Adds one single-part layer per item, in natural order.
fn push_single(layers: &mut Vec<LayerSpec>, mut items: Items) {
    items.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    layers.extend(items.into_iter().map(|(name, loc)| LayerSpec {
        name,
        parts: vec![loc],
    }));
}

struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
}

/// A folder walk: remembers the directories entered and counts the files seen.
struct Walker<'a> {
    root: &'a Path,
    visited: HashSet<PathBuf>,
    files: usize,
    limits: &'a Limits,
    stopped: bool,
    errors: &'a mut Vec<LoadError>,
}

impl Walker<'_> {
    /// Marks `dir` as entered; false if it was already (a symlink loop or a second link).
    fn enter(&mut self, dir: &Path) -> bool {
        match fs::canonicalize(dir) {
            Ok(c) => self.visited.insert(c),
            Err(e) => {
                self.errors
                    .push(LoadError::new(dir.display(), io_message(&e)));
                false
            }
        }
    }

    /// The files and folders in `dir`, in natural order; unreadable entries become errors.
    fn entries(&mut self, dir: &Path) -> Vec<Entry> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.errors
                    .push(LoadError::new(dir.display(), io_message(&e)));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.errors
                        .push(LoadError::new(dir.display(), io_message(&e)));
                    continue;
                }
            };
            let path = entry.path();
            // Follows symlinks; a dangling one is an unreadable entry.
            match fs::metadata(&path) {
                Ok(m) if m.is_dir() || m.is_file() => out.push(Entry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    path,
                    is_dir: m.is_dir(),
                }),
                Ok(_) => {} // sockets, fifos, devices: never opened
                Err(e) => self
                    .errors
                    .push(LoadError::new(path.display(), io_message(&e))),
            }
        }
        out.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        out
    }

    fn walk(&mut self, dir: &Path, prefix: &str, items: &mut Items) {
        if self.stopped || !self.enter(dir) {
            return;
        }
        for e in self.entries(dir) {
            if self.stopped {
                return;
            }
            let rel = join(prefix, &e.name);
            if e.is_dir {
                self.walk(&e.path, &rel, items);
            } else {
                self.file(&e, &rel, items);
            }
        }
    }

    fn file(&mut self, e: &Entry, rel: &str, items: &mut Items) {
        self.files += 1;
        if self.files > self.limits.max_files {
            self.stopped = true;
            self.errors.push(LoadError::new(
                self.root.display(),
                format!(
                    "stopped after {} files (raise the limit with --max-files); \
                     the rest of the folder was not scanned",
                    self.limits.max_files
                ),
            ));
            return;
        }
        let Some(k) = kind(&e.name) else {
            return;
        };
        // `rel` ends with the ASCII extension, so this cut is on a char boundary.
        let stem = rel
            .get(..rel.len().saturating_sub(k.extension().len()))
            .unwrap_or(rel);
        match k {
            Kind::Npy => items.push((stem.to_string(), Location::Npy(e.path.clone()))),
            Kind::Npz => npz_items(&e.path, stem, items, self.errors),
            Kind::Safetensors => safetensors_items(&e.path, stem, self.limits, items, self.errors),
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn discover_dir(root: &Path, layout: BatchLayout, limits: &Limits, d: &mut Discovery) {
    let mut w = Walker {
        root,
        visited: HashSet::new(),
        files: 0,
        limits,
        stopped: false,
        errors: &mut d.errors,
    };
    if layout == BatchLayout::Files {
        let mut items = Vec::new();
        w.walk(root, "", &mut items);
        push_single(&mut d.layers, items);
        return;
    }
    if !w.enter(root) {
        return;
    }
    // Walk the root's loose files and each sub-folder separately, then decide.
    let mut loose = Vec::new();
    let mut batches: Vec<(String, Items)> = Vec::new();
    for e in w.entries(root) {
        if w.stopped {
            break;
        }
        if e.is_dir {
            let mut items = Vec::new();
            w.walk(&e.path, "", &mut items);
            batches.push((e.name, items));
        } else {
            w.file(&e, &e.name, &mut loose);
        }
    }
    let is_batches = match layout {
        BatchLayout::Batches => true,
        _ => batches.len() >= 2 && loose.is_empty() && same_names(&batches),
    };
    if !is_batches {
        for (dir, items) in batches {
            loose.extend(items.into_iter().map(|(n, l)| (join(&dir, &n), l)));
        }
        push_single(&mut d.layers, loose);
        return;
    }
    // Group by layer name; batches are already in natural order.
    let mut groups: Vec<LayerSpec> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (_, items) in batches {
        for (name, loc) in items {
            match index.get(&name) {
                Some(&i) => groups[i].parts.push(loc),
                None => {
                    index.insert(name.clone(), groups.len());
                    groups.push(LayerSpec {
                        name,
                        parts: vec![loc],
                    });
                }
            }
        }
    }
    for (name, loc) in loose {
        groups.push(LayerSpec {
            name,
            parts: vec![loc],
        });
    }
    groups.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    d.layers.extend(groups);
}

/// Whether every batch yields the same non-empty set of layer names.
fn same_names(batches: &[(String, Items)]) -> bool {
    fn set(items: &Items) -> HashSet<&str> {
        items.iter().map(|(n, _)| n.as_str()).collect()
    }
    let Some((_, first)) = batches.first() else {
        return false;
    };
    let first = set(first);
    !first.is_empty() && batches.iter().all(|(_, items)| set(items) == first)
}
