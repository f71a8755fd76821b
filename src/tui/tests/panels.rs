//! The held-out columns of the method table (`--validate`) and the formats panel (`f`).

use super::*;

/// With `--validate`, the method table shows the held-out SQNR and clip% beside the in-sample
/// figures, and the star follows the held-out rule.
#[test]
fn method_table_shows_heldout_columns_with_validation() {
    let mut app = analysed_samples(Options {
        validate: true,
        ..Options::default()
    });
    for (w, h) in [(160, 45), (90, 40)] {
        let text = screen_text(&render(&mut app, w, h));
        assert!(text.contains("h-o dB"), "{w}x{h}");
        assert!(text.contains("★ best held-out SQNR"), "{w}x{h}");
    }
    let mut plain = sample_app();
    let text = screen_text(&render(&mut plain, 160, 45));
    assert!(!text.contains("h-o dB"));
}

/// A re-run from kept profiles (their per-fold cells packed) validates as a fresh read does.
#[test]
fn validated_rerun_from_kept_profiles_matches_a_fresh_analysis() {
    let mut app = analysed_samples(Options {
        validate: true,
        ..Options::default()
    });
    let cmd = app.handle_key(ch('s'));
    jobs::run_to_end(&mut app, cmd);
    assert_eq!(app.opts.scheme, Scheme::Affine);
    let mut validated = 0;
    for s in &app.slots {
        let Some(spec) = &s.spec else { continue };
        let fresh = crate::analysis::analyze_layer(spec, &app.opts, &Progress::default());
        let json = |l: &LayerAnalysis| serde_json::to_string(l).unwrap();
        let kept = s.result.as_ref().unwrap();
        validated += usize::from(kept.validation.is_some());
        assert_eq!(json(kept), json(&fresh), "{}", s.name);
    }
    assert!(validated > 10, "{validated}");
}

#[test]
fn format_key_opens_the_panel_and_esc_leaves_it() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    app.handle_key(ch('f'));
    assert_eq!(app.view, View::Formats);
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Main);
    // `f` again goes back; `c` from the panel opens the channels, `f` from there the panel.
    app.handle_key(ch('f'));
    app.handle_key(ch('f'));
    assert_eq!(app.view, View::Main);
    app.handle_key(ch('f'));
    app.handle_key(ch('c'));
    assert_eq!(app.view, View::Channels);
    app.handle_key(ch('f'));
    assert_eq!(app.view, View::Formats);
    // From the overview, `f` opens the highlighted layer's formats.
    app.view = View::Overview;
    app.overview_scroll = 0;
    app.handle_key(ch('f'));
    assert_eq!(app.view, View::Formats);
    let first = app.by_sensitivity()[0];
    assert_eq!(app.selected, Some(first));
}

#[test]
fn the_formats_panel_lists_every_row_with_its_sqnr() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    app.handle_key(ch('f'));
    let layer = app.selected_layer().unwrap().clone();
    // The default options measure E4M3 rows (every calibrator's amax, the FP8 MSE search).
    assert!(
        layer
            .formats
            .iter()
            .any(|f| f.label() == "fp8_e4m3 entropy")
    );
    let t = render(&mut app, 160, 48);
    let text = screen_text(&t);
    assert!(text.contains("formats"), "{text}");
    for f in &layer.formats {
        let sq = crate::report::fmt::db_short(f.metrics.sqnr_db);
        let label = f.label();
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{label} ")) && l.contains(&format!(" {sq} "))),
            "no line with {label:?} and SQNR {sq}:\n{text}"
        );
    }
    // Each SQNR cell in the method table's colour for its value.
    let floor = app.opts.thresholds.sqnr_floor_db;
    let buf = t.backend().buffer();
    let f0 = &layer.formats[0];
    let sq = crate::report::fmt::db_short(f0.metrics.sqnr_db);
    let y = (0..buf.area.height)
        .find(|&y| row_text(&t, y, 0, buf.area.width).contains(&f0.label()))
        .unwrap();
    let line = row_text(&t, y, 0, buf.area.width);
    let x = line.find(&format!(" {sq} ")).unwrap() + 1;
    let x = line[..x].chars().count() as u16;
    assert_eq!(buf[(x, y)].fg, views::sqnr_color(f0.metrics.sqnr_db, floor));
    // Small terminals: no panic, and the panel or the too-small notice.
    render(&mut app, 80, 24);
    render(&mut app, 60, 16);
    render(&mut app, 40, 10);
    snap("formats", &mut app, 80, 24);
}

#[test]
fn a_layer_without_format_rows_says_so() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    let sel = app.selected.unwrap();
    app.slots[sel].result.as_mut().unwrap().formats.clear();
    app.handle_key(ch('f'));
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(text.contains("no format rows: --formats none"), "{text}");
}

#[test]
fn the_overview_shows_best_fp8_and_4bit_when_wide() {
    use crate::analysis::FormatKind;
    let mut app = sample_app();
    app.view = View::Overview;
    let top = app.by_sensitivity()[0];
    let layer = app.slots[top].result.as_mut().unwrap();
    let best_fp8 = layer
        .formats
        .iter()
        .filter(|f| f.label().starts_with("fp8_"))
        .map(|f| f.metrics.sqnr_db)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(best_fp8.is_finite());
    // A hand-made MXFP4 row with a known SQNR fills the 4-bit column of the top layer.
    let mut row = layer.formats[0].clone();
    row.format = FormatKind::Mxfp4;
    row.metrics.sqnr_db = 12.345;
    layer.formats.push(row);
    let t = render(&mut app, 160, 48);
    let text = screen_text(&t);
    let header = text.lines().find(|l| l.starts_with("layer ")).unwrap();
    assert!(
        header.contains(" fp8 ") && header.contains("4-bit"),
        "{header}"
    );
    // The top layer's row (highlighted, first) ends with its best FP8 then 12.3.
    let first_row = text
        .lines()
        .skip_while(|l| !l.starts_with("layer "))
        .nth(1)
        .unwrap();
    let want = format!("{} 12.3", crate::report::fmt::db_short(best_fp8));
    assert!(
        words_of(first_row).contains(&want),
        "want {want:?} in {first_row:?}"
    );
    // At 80 columns there is no room: neither column shows.
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(!text.contains("4-bit"), "{text}");
}
