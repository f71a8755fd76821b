//! The UI tests: the shared helpers (a plain `App`, the analysed samples, rendering, the
//! screen as text) and the snapshots of every view on the bundled samples; keys, the
//! panels, the FP8 view, the convergence chart, compare and names in `tests/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;

use super::app::{App, Command, Input, Sort};
use super::layout::{self, Focus, View};
use super::{jobs, views};
use crate::analysis::{LayerAnalysis, Options, Progress};
use crate::calib::Scheme;
use crate::histogram::{Histogram, PackedHistogram};
use crate::report::Format;
use crate::source::{BatchLayout, LayerSpec, Limits, LoadError, discover};

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

/// The samples, discovered and analysed once per test binary.
fn sample_app() -> App {
    static DONE: OnceLock<App> = OnceLock::new();
    let app = DONE.get_or_init(|| analysed_samples(Options::default()));
    clone_app(app)
}

/// The bundled samples analysed to the end with `opts`.
fn analysed_samples(opts: Options) -> App {
    let dir = crate::samples::extract().unwrap();
    let found = discover(&[dir], BatchLayout::Auto, &Limits::default());
    let mut app = App::new(found.layers, found.errors, opts);
    let cmd = app.start();
    jobs::run_to_end(&mut app, cmd);
    app
}

fn clone_app(a: &App) -> App {
    let mut b = App::new(Vec::new(), Vec::new(), a.opts.clone());
    b.slots = a.slots.clone();
    b.names = a.names.clone();
    b.selected = a.selected;
    b.generation = a.generation;
    b.progress = a.progress;
    b
}

fn render(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    app.size = Rect::new(0, 0, w, h);
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| views::draw(f, app)).unwrap();
    t
}

/// Snapshots with machine-specific paths (the temp folder) redacted.
fn snap(name: &str, app: &mut App, w: u16, h: u16) {
    let t = render(app, w, h);
    let tmp = std::env::temp_dir().display().to_string();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&tmp), "[TMP]");
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend()));
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn select_by_name(app: &mut App, name: &str) {
    let i = app
        .slots
        .iter()
        .position(|s| s.name.contains(name))
        .unwrap();
    app.selected = Some(i);
    app.method = None;
}

/// A hand-built layer with a profile-free result (for key tests that need no data).
fn fake_layer(name: &str, sqnr: f64, warnings: usize) -> LayerAnalysis {
    let mut l = LayerAnalysis::from_error(&LoadError::new(name, "x"));
    l.error = None;
    l.name = name.into();
    l.sensitivity_sqnr_db = Some(sqnr);
    l.warnings = (0..warnings)
        .map(|_| {
            crate::analysis::warnings::Warning::new(
                crate::analysis::warnings::WarningKind::Clipping,
                1.0,
                "w",
            )
        })
        .collect();
    l
}

fn fake_app() -> App {
    let specs: Vec<LayerSpec> = ["b_layer", "a_layer", "c_layer"]
        .iter()
        .map(|n| LayerSpec {
            name: n.to_string(),
            parts: Vec::new(),
        })
        .collect();
    let mut app = App::new(specs, Vec::new(), Options::default());
    let _ = app.start();
    let g = app.generation;
    app.on_layer(g, 0, fake_layer("b_layer", 30.0, 0));
    app.on_layer(g, 1, fake_layer("a_layer", 10.0, 1));
    app.on_layer(g, 2, fake_layer("c_layer", 50.0, 3));
    app.on_job_done(g);
    app
}

/// The text of row `y` of the screen between columns `x0..x1`.
fn row_text(t: &Terminal<TestBackend>, y: u16, x0: u16, x1: u16) -> String {
    let buf = t.backend().buffer();
    (x0..x1).map(|x| buf[(x, y)].symbol()).collect()
}

/// `text` shows the layer name as the lists shorten it: a word of it whose pieces between
/// `…` are parts of `name`, in order, with at least 4 chars of it.
fn shows_name(text: &str, name: &str) -> bool {
    text.split_whitespace().any(|word| {
        let mut rest = name;
        let mut shown = 0;
        for piece in word.split('…').filter(|p| !p.is_empty()) {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
            shown += piece.chars().count();
        }
        shown >= 4
    })
}

fn click(app: &mut App, column: u16, row: u16) {
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    });
}

// ---------------------------------------------------------------- rendering

#[test]
fn nothing_panics_on_odd_data_and_sizes() {
    let mut app = fake_app();
    // A profile with a degenerate histogram: zero counts, NaN stats.
    let dir = crate::samples::extract().unwrap();
    let found = discover(&[dir], BatchLayout::Auto, &Limits::default());
    let mut real = analyze_one(&found.layers[0]);
    if let Some(p) = real.profile.take() {
        let mut p = Arc::unwrap_or_clone(p);
        p.hist = PackedHistogram::pack(&Histogram::new(0.0, 0.0, 65536));
        real.profile = Some(Arc::new(p));
    }
    for m in &mut real.methods {
        m.range = [f64::NAN, f64::INFINITY];
        m.metrics.sqnr_db = f64::NAN;
    }
    if let Some(s) = &mut real.stats {
        s.min = f64::NAN;
        s.mean = f64::INFINITY;
    }
    let g = app.generation;
    app.on_layer(g, 0, real);
    for zoom in [false, true] {
        app.zoom = zoom;
        app.log_scale = zoom;
        for (w, h) in [
            (0, 0),
            (1, 1),
            (59, 15),
            (60, 16),
            (61, 17),
            (80, 24),
            (200, 60),
        ] {
            render(&mut app, w, h);
            app.help = !app.help;
            render(&mut app, w, h);
            app.view = View::Overview;
            render(&mut app, w, h);
            app.view = View::Main;
        }
    }
}

fn analyze_one(spec: &LayerSpec) -> LayerAnalysis {
    crate::analysis::analyze_layer(spec, &Options::default(), &Progress::default())
}

#[test]
fn samples_analyse_without_errors() {
    let app = sample_app();
    assert!(app.slots.len() >= 11);
    for s in &app.slots {
        let r = s.result.as_ref().expect("analysed");
        assert!(r.error.is_none(), "{}: {:?}", s.name, r.error);
    }
}

#[test]
fn snapshot_main() {
    let mut app = sample_app();
    select_by_name(&mut app, "03_attn_scores");
    snap("main", &mut app, 80, 24);
    snap("main", &mut app, 160, 48);
}

#[test]
fn snapshot_main_zoom_log_fp16() {
    let mut app = sample_app();
    select_by_name(&mut app, "05_mlp_fp16");
    snap("main_fp16", &mut app, 160, 48);
    select_by_name(&mut app, "03_attn_scores");
    app.zoom = true;
    app.log_scale = true;
    app.focus = Focus::Methods;
    app.handle_key(ch('j'));
    snap("main_zoom_log", &mut app, 80, 24);
    snap("main_zoom_log", &mut app, 160, 48);
}

#[test]
fn snapshot_overview() {
    let mut app = sample_app();
    app.view = View::Overview;
    snap("overview", &mut app, 80, 24);
    snap("overview", &mut app, 160, 48);
}

#[test]
fn snapshot_channels() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    app.handle_key(ch('c'));
    assert_eq!(app.view, View::Channels);
    snap("channels", &mut app, 80, 24);
    snap("channels", &mut app, 160, 48);
    // Zoomed around the cursor (channel 300, the largest): one channel per column.
    app.size = Rect::new(0, 0, 160, 48);
    app.handle_key(ch('z'));
    assert_eq!(app.channel_zoom, 1);
    snap("channels_zoom", &mut app, 160, 48);
    // Fewer channels (64) than columns: one column each.
    app.handle_key(key(KeyCode::Esc));
    select_by_name(&mut app, "fc2_tanh");
    app.handle_key(ch('c'));
    snap("channels_mlp", &mut app, 80, 24);
}

#[test]
fn channel_keys_move_zoom_and_leave() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    app.size = Rect::new(0, 0, 160, 48);
    // `c` opens on the largest channel (300 of 512: channels 37, 211, 300, 466 are outliers).
    app.handle_key(ch('c'));
    assert_eq!(
        (app.view, app.channel_cursor, app.channel_zoom),
        (View::Channels, 300, 0)
    );
    // 512 channels over 160 columns: 3 channels per column at full view.
    app.handle_key(key(KeyCode::Right));
    assert_eq!(app.channel_cursor, 303);
    app.handle_key(key(KeyCode::Left));
    app.handle_key(key(KeyCode::Left));
    assert_eq!(app.channel_cursor, 297);
    // Zoom ×4: 128 channels in view, one per column: the cursor moves one channel.
    app.handle_key(ch('z'));
    assert_eq!(app.channel_zoom, 1);
    let (first, span) = layout::channel_window(512, app.channel_cursor, 1, 160);
    assert_eq!(span, 160);
    assert!(first <= 297 && 297 < first + span);
    app.handle_key(ch('j'));
    assert_eq!(app.channel_cursor, 298);
    // Already one channel per column: the next `z` zooms back out.
    app.handle_key(ch('z'));
    assert_eq!(app.channel_zoom, 0);
    app.handle_key(ch('G'));
    assert_eq!(app.channel_cursor, 511);
    // A click on the chart moves the cursor to the channels under it.
    let chart = layout::channel_areas(app.size).chart;
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: chart.x,
        row: chart.y,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(app.channel_cursor, 0);
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Main);
    app.handle_key(ch('c'));
    app.handle_key(ch('c'));
    assert_eq!(app.view, View::Main);
    // From the overview, `c` opens the highlighted layer's channels.
    app.view = View::Overview;
    app.handle_key(ch('c'));
    assert_eq!(app.view, View::Channels);
}

#[test]
fn snapshot_help() {
    let mut app = sample_app();
    app.help = true;
    snap("help", &mut app, 80, 24);
    snap("help", &mut app, 160, 48);
}

/// The whole screen as text, row by row.
fn screen_text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| row_text(t, y, 0, buf.area.width))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_help_badges_follow_the_sqnr_floor() {
    let mut app = sample_app();
    app.help = true;
    let text = screen_text(&render(&mut app, 160, 48));
    assert!(text.contains(" <20   <30   ≥30 "), "{text}");
    app.opts.thresholds.sqnr_floor_db = 17.5;
    let text = screen_text(&render(&mut app, 160, 48));
    assert!(text.contains(" <17.5   <27.5   ≥27.5 "), "{text}");
}

#[test]
fn the_overview_has_a_column_for_every_layers_methods() {
    let mut app = sample_app();
    // The second layer was run with 99.5 in place of 99.9 (a re-run under way looks so).
    let l = app.slots[1].result.as_mut().unwrap();
    let p = l
        .methods
        .iter_mut()
        .find(|m| m.percentile == Some(99.9))
        .unwrap();
    p.percentile = Some(99.5);
    app.view = View::Overview;
    let t = render(&mut app, 160, 48);
    let head = row_text(&t, layout::overview_areas(app.size).table.y, 0, 160);
    let cols: Vec<&str> = head.split_whitespace().collect();
    let at = |c: &str| cols.iter().position(|x| *x == c);
    let found: Vec<Option<usize>> = ["mse", "p99.5", "p99.9", "p99.99", "p99.999"]
        .iter()
        .map(|c| at(c))
        .collect();
    assert!(found.iter().all(Option::is_some), "{head}");
    assert!(found.windows(2).all(|w| w[0] < w[1]), "{head}");
}

/// Collapsed whitespace, so wrapped text compares with the original.
fn words_of(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_warning_can_be_read_at_80x24() {
    let mut app = sample_app();
    select_by_name(&mut app, "03_attn_scores");
    let layer = app.selected_layer().unwrap().clone();
    assert!(layer.warnings.len() >= 5);
    app.focus = Focus::Details;
    let (w, h) = (80, 24);
    let area = layout::main_areas(Rect::new(0, 0, w, h), app.method_count()).details_text;
    let rows = |app: &mut App| -> Vec<String> {
        let t = render(app, w, h);
        (area.y..area.bottom())
            .map(|y| row_text(&t, y, area.x, area.right()))
            .collect()
    };
    // The text seen while scrolling down one row at a time.
    let mut seen = rows(&mut app);
    let mut last = app.details_scroll;
    loop {
        app.handle_key(ch('j'));
        if app.details_scroll == last {
            break;
        }
        assert_eq!(app.details_scroll, last + 1);
        last = app.details_scroll;
        seen.push(rows(&mut app).last().unwrap().clone());
    }
    let text = words_of(&seen.join(" "));
    for warn in &layer.warnings {
        let want = words_of(&format!(
            "⚠ {} ({}) {}",
            warn.kind.name(),
            crate::report::fmt::num_short(warn.value),
            warn.message
        ));
        assert!(text.contains(&want), "not readable: {want}\nin {text}");
    }
    assert!(
        text.contains("kurt"),
        "the statistics line is the last: {text}"
    );
    // The end is the end: G stays there and one ↑ moves at once.
    app.handle_key(ch('G'));
    assert_eq!(app.details_scroll, last);
    app.handle_key(ch('k'));
    assert_eq!(app.details_scroll, last - 1);
    // The wheel over the panel scrolls it too.
    app.handle_key(ch('g'));
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        column: area.x + 2,
        row: area.y + 1,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(app.details_scroll, 1);
}

#[test]
fn snapshot_too_small() {
    let mut app = sample_app();
    snap("too_small", &mut app, 59, 15);
    snap("too_small", &mut app, 30, 5);
}

#[test]
fn snapshot_errored_layer() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken_layer.npy");
    std::fs::write(&bad, b"\x93NUMPY\x01\x00garbage").unwrap();
    let found = discover(&[bad], BatchLayout::Auto, &Limits::default());
    let mut app = App::new(found.layers, found.errors, Options::default());
    let cmd = app.start();
    jobs::run_to_end(&mut app, cmd);
    assert!(app.slots.iter().all(|s| s.errored()));
    let tmp = dir.path().display().to_string();
    for (w, h) in [(80, 24), (160, 48)] {
        let t = render(&mut app, w, h);
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(&tmp), "[DIR]");
        settings.set_snapshot_path("snapshots");
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(format!("errored_{w}x{h}"), t.backend()));
    }
}

#[test]
fn snapshot_while_analysing() {
    // Before any result: the first frame a user sees.
    let dir = crate::samples::extract().unwrap();
    let found = discover(&[dir], BatchLayout::Auto, &Limits::default());
    let mut app = App::new(found.layers, found.errors, Options::default());
    let _ = app.start();
    app.set_progress(0, 0, 0);
    snap("first_frame", &mut app, 80, 24);
    // Passes 1–2 of the first layer done: its histogram shows before the methods.
    let spec = app.slots[0].spec.clone().unwrap();
    let p =
        crate::analysis::profile_layer(&spec, &Options::default(), &Progress::default()).unwrap();
    let g = app.generation;
    app.on_profile(g, 0, Arc::new(p.pack()));
    app.set_progress(1 << 20, 1 << 22, 0);
    snap("profiled", &mut app, 80, 24);
    // A re-run now reuses that profile instead of reading the file again.
    let Some(Command::Analyze { work, .. }) = app.handle_key(ch('s')) else {
        panic!("s must re-run");
    };
    assert!(work[0].profile.is_some());
    assert!(work[1].profile.is_none());
}

#[test]
fn a_rerun_from_kept_profiles_equals_a_fresh_analysis() {
    // The kept profiles are packed; unpacked for a re-run they must give every number a fresh
    // read of the file gives with the new options.
    let mut app = sample_app();
    assert!(
        app.slots
            .iter()
            .all(|s| s.profile.is_some() || s.spec.is_none())
    );
    let cmd = app.handle_key(ch('s'));
    let cmd = match cmd {
        Some(Command::Analyze { work, .. }) => {
            assert!(work.iter().all(|w| w.profile.is_some()));
            app.handle_key(ch('-'))
        }
        _ => panic!("s must re-run"),
    };
    jobs::run_to_end(&mut app, cmd);
    assert_eq!((app.opts.scheme, app.opts.bits), (Scheme::Affine, 7));
    for s in &app.slots {
        let Some(spec) = &s.spec else { continue };
        let fresh = crate::analysis::analyze_layer(spec, &app.opts, &Progress::default());
        let json = |l: &LayerAnalysis| serde_json::to_string(l).unwrap();
        assert_eq!(json(s.result.as_ref().unwrap()), json(&fresh), "{}", s.name);
    }
}

mod compare;
mod convergence;
mod fp8;
mod keys;
pub(super) mod names;
mod panels;
