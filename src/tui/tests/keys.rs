//! Key handling on a plain `App`: moving, sorting, filtering, focus, re-runs, quitting,
//! export, the mouse, and every key on an empty app.

use super::*;

#[test]
fn moving_and_sorting() {
    let mut app = fake_app();
    assert_eq!(app.selected, Some(0));
    app.handle_key(ch('j'));
    assert_eq!(app.selected, Some(1));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Down)); // clamps at the end
    assert_eq!(app.selected, Some(2));
    app.handle_key(ch('k'));
    assert_eq!(app.selected, Some(1));
    app.handle_key(ch('S'));
    assert_eq!(app.sort, Sort::Sensitivity);
    assert_eq!(app.visible(), vec![1, 0, 2]);
    app.handle_key(ch('S'));
    assert_eq!(app.sort, Sort::Warnings);
    assert_eq!(app.visible(), vec![2, 1, 0]);
    app.handle_key(ch('S'));
    assert_eq!(app.sort, Sort::Name);
}

#[test]
fn filter_typing_and_escape() {
    let mut app = fake_app();
    app.handle_key(ch('/'));
    assert!(matches!(app.input, Some(Input::Filter(_))));
    for c in "c_l".chars() {
        app.handle_key(ch(c));
    }
    // Live: the list filters while typing, and the selection follows.
    assert_eq!(app.visible(), vec![2]);
    assert_eq!(app.selected, Some(2));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.filter, "c_l");
    assert!(app.input.is_none());
    // q typed into the filter does not quit.
    app.handle_key(ch('/'));
    app.handle_key(ch('q'));
    assert!(app.running);
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.filter, "c_l");
    // Esc clears the filter, a second Esc quits.
    assert!(app.handle_key(key(KeyCode::Esc)).is_none());
    assert!(app.filter.is_empty());
    assert!(matches!(
        app.handle_key(key(KeyCode::Esc)),
        Some(Command::Quit)
    ));
}

#[test]
fn focus_cycles_and_toggles() {
    let mut app = fake_app();
    assert_eq!(app.focus, Focus::Layers);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Methods);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Details);
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.focus, Focus::Methods);
    app.handle_key(key(KeyCode::BackTab));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.focus, Focus::Methods);
    app.handle_key(ch('l'));
    app.handle_key(ch('z'));
    assert!(app.log_scale && app.zoom);
    app.handle_key(ch('o'));
    assert_eq!(app.view, View::Overview);
    app.handle_key(ch('j'));
    // Enter on the overview opens the row's layer (most sensitive first: a_layer, then b).
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Main);
    assert_eq!(app.selected, Some(0));
    app.handle_key(ch('?'));
    assert!(app.help);
    app.handle_key(ch('x'));
    assert!(!app.help);
}

#[test]
fn scheme_bits_and_percentiles_rerun_with_profiles() {
    let mut app = fake_app();
    let g = app.generation;
    let Some(Command::Analyze {
        generation, opts, ..
    }) = app.handle_key(ch('s'))
    else {
        panic!("s must re-run");
    };
    assert_eq!(generation, g + 1);
    assert_eq!(opts.scheme, Scheme::Affine);
    assert!(app.slots.iter().all(|s| s.stale));
    // Results of the old generation are dropped.
    app.on_layer(g, 0, fake_layer("old", 1.0, 0));
    assert_eq!(app.slots[0].result.as_ref().unwrap().name, "b_layer");
    for _ in 0..20 {
        app.handle_key(ch('+'));
    }
    assert_eq!(app.opts.bits, 16);
    assert!(app.handle_key(ch('+')).is_none());
    for _ in 0..20 {
        app.handle_key(ch('-'));
    }
    assert_eq!(app.opts.bits, 2);
    app.handle_key(ch('p'));
    assert_eq!(
        app.input,
        Some(Input::Percentiles("99.9,99.99,99.999".into()))
    );
    for _ in 0..20 {
        app.handle_key(key(KeyCode::Backspace));
    }
    for c in "99.5, 99.95x".chars() {
        app.handle_key(ch(c));
    }
    let cmd = app.handle_key(key(KeyCode::Enter));
    assert!(matches!(cmd, Some(Command::Analyze { .. })));
    assert_eq!(app.opts.percentiles, vec![99.5, 99.95]);
    // A bad list keeps the prompt open and says why.
    app.handle_key(ch('p'));
    app.handle_key(ch(','));
    for _ in 0..30 {
        app.handle_key(key(KeyCode::Backspace));
    }
    app.handle_key(ch('0'));
    assert!(app.handle_key(key(KeyCode::Enter)).is_none());
    assert!(app.message.is_some());
    assert!(matches!(app.input, Some(Input::Percentiles(_))));
}

/// The UI's `p` edit follows the command line's rule (one validator), with its message.
#[test]
fn percentile_edits_follow_the_one_rule() {
    let mut app = App::new(Vec::new(), Vec::new(), Options::default());
    for (typed, want) in [
        ("100,100", Some("percentile 100 is listed twice")),
        ("0", Some("percentile 0 is outside (0, 100]")),
        ("101", Some("percentile 101 is outside (0, 100]")),
        ("99.5, 99.95", None),
    ] {
        app.message = None;
        app.handle_key(ch('p'));
        while matches!(&app.input, Some(Input::Percentiles(s)) if !s.is_empty()) {
            app.handle_key(key(KeyCode::Backspace));
        }
        for c in typed.chars() {
            app.handle_key(ch(c));
        }
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.message.as_deref(), want, "{typed}");
        if want.is_none() {
            assert_eq!(app.opts.percentiles, [99.5, 99.95]);
        } else {
            app.handle_key(key(KeyCode::Esc));
        }
    }
}

#[test]
fn quit_keys() {
    for k in [
        ch('q'),
        key(KeyCode::Esc),
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    ] {
        let mut app = fake_app();
        assert!(matches!(app.handle_key(k), Some(Command::Quit)));
        assert!(!app.running);
    }
    // Ctrl-C quits even while typing.
    let mut app = fake_app();
    app.handle_key(ch('/'));
    assert!(matches!(
        app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Command::Quit)
    ));
}

#[test]
fn export_key_asks_for_a_format() {
    let mut app = fake_app();
    assert!(app.handle_key(ch('e')).is_none());
    assert_eq!(app.input, Some(Input::Export));
    assert!(matches!(
        app.handle_key(ch('j')),
        Some(Command::Export(Format::Json))
    ));
    app.handle_key(ch('e'));
    assert!(app.handle_key(key(KeyCode::Esc)).is_none());
    assert!(app.input.is_none());
}

#[test]
fn export_writes_atomically() {
    let app = fake_app();
    let dir = tempfile::tempdir().unwrap();
    let path = crate::tui::export(&app, Format::Json, dir.path()).unwrap();
    assert_eq!(path, dir.path().join("calibscope-report.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("a_layer"));
    // No temp file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn export_refuses_to_replace_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("calibscope-report.json");
    let csv = dir.path().join("calibscope-report.csv");
    std::fs::write(&json, b"a layer's dump").unwrap();
    std::fs::write(&csv, b"a dump that failed to load").unwrap();
    // One loaded layer read from the JSON name, one failed layer from the CSV name.
    let spec = LayerSpec {
        name: "a_layer".into(),
        parts: vec![crate::source::Location::Npy(json.clone())],
    };
    let app = App::new(
        vec![spec],
        vec![LoadError::new(csv.display(), "bad header")],
        Options::default(),
    );
    for (format, input) in [(Format::Json, &json), (Format::Csv, &csv)] {
        let e = crate::tui::export(&app, format, dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to replace {}: it is one of the inputs",
                input.display()
            )
        );
    }
    assert_eq!(std::fs::read(&json).unwrap(), b"a layer's dump");
    assert_eq!(std::fs::read(&csv).unwrap(), b"a dump that failed to load");
    // Another format's file is not an input (the report so far holds the failed layer).
    let md = crate::tui::export(&app, Format::Markdown, dir.path()).unwrap();
    assert!(std::fs::read_to_string(md).unwrap().contains("bad header"));
}

#[test]
fn mouse_selects_and_scrolls() {
    let mut app = fake_app();
    app.size = Rect::new(0, 0, 100, 30);
    let a = layout::main_areas(app.size, app.method_count());
    let click = |x, y| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: x,
        row: y,
        modifiers: KeyModifiers::NONE,
    };
    app.handle_mouse(click(a.layers_rows.x + 2, a.layers_rows.y + 2));
    assert_eq!(app.selected, Some(2));
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        column: a.layers_rows.x + 2,
        row: a.layers_rows.y,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(app.selected, Some(1));
    app.handle_mouse(click(a.methods.x + 3, a.methods.y + 1));
    assert_eq!(app.focus, Focus::Methods);
    // Clicks outside every panel do nothing.
    app.handle_mouse(click(0, 0));
    assert_eq!(app.focus, Focus::Methods);
}

#[test]
fn clicks_land_on_the_rows_drawn_there() {
    let mut app = sample_app();
    // 100×16 scrolls the layer list and the overview; the others show every row.
    for (w, h) in [(100, 16), (80, 24), (160, 48)] {
        let rows = layout::main_areas(Rect::new(0, 0, w, h), app.method_count()).layers_rows;
        for y in (rows.y..rows.bottom()).rev().chain(rows.y..rows.bottom()) {
            app.view = View::Main;
            let t = render(&mut app, w, h);
            let text = row_text(&t, y, rows.x, rows.right());
            let before = app.selected;
            click(&mut app, rows.x + 1, y);
            if text.trim().is_empty() {
                assert_eq!(app.selected, before, "{w}×{h}: a click below the list");
                continue;
            }
            let name = &app.selected_slot().unwrap().name;
            assert!(
                shows_name(&text, name),
                "{w}×{h} row {y}: {text:?} vs {name}"
            );
        }
        let rows = layout::overview_areas(Rect::new(0, 0, w, h)).rows;
        for y in (rows.y..rows.bottom()).rev().chain(rows.y..rows.bottom()) {
            app.view = View::Overview;
            let t = render(&mut app, w, h);
            let text = row_text(&t, y, rows.x, rows.right());
            let before = app.overview_scroll;
            click(&mut app, rows.x + 1, y);
            if text.trim().is_empty() {
                assert_eq!(app.view, View::Overview);
                assert_eq!(
                    app.overview_scroll, before,
                    "{w}×{h}: a click below the table"
                );
                continue;
            }
            // A click on the cursor's row opens that layer; elsewhere it moves the cursor.
            let slot = if app.view == View::Main {
                app.selected.unwrap()
            } else {
                app.by_sensitivity()[app.overview_scroll]
            };
            let name = &app.slots[slot].name;
            assert!(
                shows_name(&text, name),
                "{w}×{h} overview row {y}: {text:?} vs {name}"
            );
        }
    }
}

#[test]
fn empty_app_handles_every_key() {
    let mut app = App::new(Vec::new(), Vec::new(), Options::default());
    assert!(app.start().is_none());
    for k in "jkJKlzsSo+-?xgG".chars() {
        let _ = app.handle_key(ch(k));
        let _ = app.handle_key(ch('x'));
    }
    for k in [KeyCode::Tab, KeyCode::Enter, KeyCode::Down, KeyCode::End] {
        app.handle_key(key(k));
    }
    for (w, h) in [(0, 0), (1, 1), (80, 24), (160, 48)] {
        render(&mut app, w, h);
    }
}
