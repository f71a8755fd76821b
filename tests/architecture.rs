//! The module layering the README's module map describes, checked on the source tree: each
//! module imports only modules below it, the numeric core uses no terminal or CLI crate, and
//! inside the UI the state never imports the drawing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Top-level modules of the library, lowest first. A module may use those at its own rank or
/// below.
const RANKS: &[(&str, u8)] = &[
    ("simd", 0),
    ("source", 0),
    ("histogram", 1),
    ("formats", 1),
    ("calib", 2),
    ("analysis", 3),
    ("report", 4),
    ("samples", 5),
    ("tui", 6),
];

const FRONT_END_CRATES: &[&str] = &["ratatui", "crossterm", "clap", "indicatif"];

fn rank(module: &str) -> Option<u8> {
    RANKS.iter().find(|(m, _)| *m == module).map(|&(_, r)| r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with line comments removed (doc links may name any module).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules a file names as `crate::m` or inside `use crate::{m, ...}`.
fn crate_refs(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

fn module_of(src_dir: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src_dir).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn modules_only_look_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    let mut checked = 0;
    for f in &files {
        let m = module_of(&src, f);
        let Some(own) = rank(&m) else {
            // lib.rs, main.rs, cli.rs: the crate root and the binary sit above everything.
            continue;
        };
        checked += 1;
        let text = code(f);
        for r in crate_refs(&text) {
            match rank(&r) {
                Some(other) if other > own => bad.push(format!(
                    "{} ({m}) uses crate::{r}, a module above it",
                    f.display()
                )),
                _ => {}
            }
        }
        if own < rank("report").unwrap_or(0) {
            for c in FRONT_END_CRATES {
                if text.contains(&format!("{c}::")) {
                    bad.push(format!(
                        "{} ({m}) uses the front-end crate {c}",
                        f.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} files checked: is the tree where we think?"
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_ui_state_never_imports_its_drawing() {
    let tui = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tui");
    // Every file of the state (app.rs and all of app/) and the modules it uses.
    let mut names: Vec<String> = [
        "app.rs",
        "layout.rs",
        "keys.rs",
        "names.rs",
        "details.rs",
        "event.rs",
        "jobs.rs",
    ]
    .map(String::from)
    .to_vec();
    for e in std::fs::read_dir(tui.join("app")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        names.push(format!("app/{name}"));
    }
    assert!(names.len() > 8, "{names:?}");
    for name in &names {
        let text = code(&tui.join(name));
        for view in ["views", "widgets"] {
            assert!(
                !text.contains(&format!("super::{view}"))
                    && !text.contains(&format!("tui::{view}")),
                "src/tui/{name} imports the drawing ({view})"
            );
        }
    }
}

/// The checker itself finds what it must (so the tests above cannot pass by finding nothing).
#[test]
fn the_checker_sees_imports_in_every_form() {
    let refs = crate_refs(
        "use crate::calib::Scheme;\nuse crate::{analysis, report::fmt};\nlet x = crate::tui::run;",
    );
    assert_eq!(refs, ["calib", "analysis", "report", "tui"]);
    assert!(crate_refs("// use crate::tui").len() == 1 && code_is_stripped());
}

fn code_is_stripped() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.rs");
    std::fs::write(&p, "let a = 1; // crate::tui\n").unwrap();
    crate_refs(&code(&p)).is_empty()
}
