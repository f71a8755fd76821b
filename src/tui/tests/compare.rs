//! The compare view: keys, pairs arriving, clicks, odd sizes, export and snapshots.

use super::*;

/// The compare sample (`examples/compare`), compared once per test binary.
fn compare_app() -> App {
    use crate::analysis::compare::{CompareOptions, pair_up};
    static DONE: OnceLock<(
        crate::analysis::compare::Pairing,
        Vec<crate::analysis::compare::Pair>,
    )> = OnceLock::new();
    let (pairing, pairs) = DONE.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare");
        let opts = CompareOptions::default();
        let pairing = pair_up(&root.join("ref"), &root.join("int8"), &opts);
        let mut app = App::compare(pairing.clone(), opts);
        let cmd = app.start();
        assert!(matches!(cmd, Some(Command::Compare { .. })));
        jobs::run_to_end(&mut app, cmd);
        (pairing, app.compare.unwrap().result.pairs)
    });
    let mut app = App::compare(
        pairing.clone(),
        crate::analysis::compare::CompareOptions::default(),
    );
    let _ = app.start();
    let g = app.generation;
    for (i, p) in pairs.iter().enumerate() {
        app.on_pair(g, i, p.clone());
    }
    app.on_job_done(g);
    app
}

fn compare_selected(app: &App) -> &str {
    let c = app.compare.as_ref().unwrap();
    &c.result.pairs[c.selected].name
}

#[test]
fn compare_keys_move_jump_and_quit() {
    let mut app = compare_app();
    assert_eq!(app.view, View::Compare);
    assert_eq!(compare_selected(&app), "01_fc1_pre");
    app.handle_key(ch('d'));
    assert_eq!(compare_selected(&app), "03_fc2_pre");
    app.handle_key(ch('j'));
    assert_eq!(compare_selected(&app), "04_fc2_tanh");
    app.handle_key(ch('G'));
    assert_eq!(compare_selected(&app), "05_logits");
    app.handle_key(ch('g'));
    assert_eq!(compare_selected(&app), "01_fc1_pre");
    app.handle_key(ch('l'));
    assert!(app.log_scale);
    // The analysis keys say they do not apply and change nothing.
    for c in ['s', '+', 'p', 'o', '/', 'S', 'z'] {
        assert!(app.handle_key(ch(c)).is_none());
        assert_eq!(app.message.as_deref(), Some("not in the compare view"));
        assert_eq!(app.view, View::Compare);
        assert!(app.input.is_none());
    }
    app.handle_key(ch('e'));
    assert_eq!(app.input, Some(Input::Export));
    assert!(matches!(
        app.handle_key(ch('j')),
        Some(Command::Export(Format::Json))
    ));
    assert!(matches!(
        app.handle_key(key(KeyCode::Esc)),
        Some(Command::Quit)
    ));
    assert!(!app.running);
}

#[test]
fn compare_pairs_fill_in_and_derive_as_they_come() {
    let full = compare_app();
    let pairs = full.compare.unwrap().result.pairs;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare");
    let opts = crate::analysis::compare::CompareOptions::default();
    let pairing = crate::analysis::compare::pair_up(&root.join("ref"), &root.join("int8"), &opts);
    let mut app = App::compare(pairing, opts);
    let _ = app.start();
    assert!(app.progress.running);
    let g = app.generation;
    // An old generation's pair is dropped.
    app.on_pair(g + 1, 2, pairs[2].clone());
    assert!(
        app.compare.as_ref().unwrap().result.pairs[2]
            .metrics
            .is_none()
    );
    app.on_pair(g, 2, pairs[2].clone());
    let c = app.compare.as_ref().unwrap();
    assert_eq!(c.result.first_degraded.as_deref(), Some("03_fc2_pre"));
    // No earlier pair has finished: no drop yet.
    assert_eq!(c.result.pairs[2].sqnr_drop_db, None);
    for i in [0, 1] {
        app.on_pair(g, i, pairs[i].clone());
    }
    let c = app.compare.as_ref().unwrap();
    assert!(c.result.pairs[2].sqnr_drop_db.unwrap() > 30.0);
    assert_eq!(c.done, [true, true, true, false, false]);
}

#[test]
fn compare_clicks_select_the_row_drawn_there() {
    let mut app = compare_app();
    let t = render(&mut app, 100, 30);
    let rows = layout::compare_areas(app.size).pairs_rows;
    for row in 0..5u16 {
        let y = rows.y + row;
        app.handle_mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: rows.x + 4,
            row: y,
            modifiers: KeyModifiers::NONE,
        });
        let name = compare_selected(&app).to_string();
        assert!(
            row_text(&t, y, rows.x, rows.x + rows.width).contains(&name),
            "row {row}: {name}"
        );
    }
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        column: rows.x,
        row: rows.y,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(compare_selected(&app), "04_fc2_tanh");
}

#[test]
fn compare_view_survives_odd_sizes_and_states() {
    let mut app = compare_app();
    for (w, h) in [(60, 16), (61, 17), (80, 24), (200, 60), (300, 20)] {
        for sel in 0..5 {
            app.compare.as_mut().unwrap().selected = sel;
            render(&mut app, w, h);
        }
    }
    // Pending pairs and a failed one draw too.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare");
    let opts = crate::analysis::compare::CompareOptions::default();
    let pairing =
        crate::analysis::compare::pair_up(&root.join("ref"), &root.join("missing"), &opts);
    let mut app = App::compare(pairing, opts);
    assert!(app.start().is_none());
    let t = render(&mut app, 80, 24);
    let screen: String = t
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(screen.contains("missing: no"), "{screen}");
}

#[test]
fn compare_export_writes_the_compare_report() {
    let app = compare_app();
    let dir = tempfile::tempdir().unwrap();
    let path = crate::tui::export(&app, Format::Json, dir.path()).unwrap();
    assert!(path.ends_with("calibscope-compare.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["mode"], "compare");
    assert_eq!(v["first_degraded"], "03_fc2_pre");
}

#[test]
fn snapshot_compare() {
    let mut app = compare_app();
    app.handle_key(ch('d'));
    snap("compare", &mut app, 80, 24);
    snap("compare", &mut app, 160, 48);
}
