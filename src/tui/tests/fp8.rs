//! The main view's number format switch (`x`): FP8 markers and method table, cycling, layers
//! without rows, `--formats none`; and the help overlay scrolling at 80×24.

use super::*;
use crate::analysis::{FormatKind, FormatResult};
use crate::report::fmt::db_short;
use crate::tui::keys::KEYS;
use crate::tui::widgets::histogram::column_of;

/// The screen rows of the method table's data rows (below its header), as drawn.
fn method_lines(app: &App, t: &Terminal<TestBackend>) -> Vec<String> {
    let a = layout::main_areas(app.size, app.method_count());
    (a.method_rows.y..a.method_rows.bottom())
        .map(|y| row_text(t, y, a.methods.x, a.methods.right()))
        .collect()
}

/// The title line of the method table.
fn methods_title(app: &App, t: &Terminal<TestBackend>) -> String {
    let a = layout::main_areas(app.size, app.method_count());
    row_text(t, a.methods.y, a.methods.x, a.methods.right())
}

fn e4m3_rows(app: &App) -> Vec<FormatResult> {
    app.selected_layer()
        .unwrap()
        .formats
        .iter()
        .filter(|f| {
            f.format == FormatKind::Fp8E4m3
                && f.amax.is_some()
                && f.label().starts_with("fp8_e4m3 ")
                && !f.label().ends_with(" token")
        })
        .cloned()
        .collect()
}

/// `p99.9` for `percentile` rows, else the method name.
fn short(f: &FormatResult) -> String {
    match f.percentile {
        Some(p) => format!("p{p}"),
        None => f.method.clone().unwrap(),
    }
}

#[test]
fn x_shows_the_e4m3_rows_in_the_method_table_and_cycles_back_to_int() {
    let mut app = sample_app();
    select_by_name(&mut app, "03_attn_scores");
    let want = e4m3_rows(&app);
    // Every calibrator's amax, the FP8 search among them.
    assert!(want.len() >= 8, "{want:?}");
    assert!(want.iter().any(|f| f.method.as_deref() == Some("mse_fp8")));
    let t = render(&mut app, 160, 48);
    assert!(methods_title(&app, &t).contains("methods symmetric 8-bit"));
    assert!(app.handle_key(ch('x')).is_none(), "no re-run");
    assert_eq!(app.number_format, Some(FormatKind::Fp8E4m3));
    for (w, h) in [(160, 48), (80, 24)] {
        let t = render(&mut app, w, h);
        let title = methods_title(&app, &t);
        assert!(title.contains("methods · fp8_e4m3"), "{w}×{h}: {title}");
        // The histogram says which clip points it shows.
        let hist = layout::main_areas(app.size, app.method_count()).hist;
        let top = row_text(&t, hist.y, hist.x, hist.right());
        assert!(top.contains("fp8_e4m3 · linear · full"), "{top}");
        // One row per E4M3 per-tensor row, in order, each with its SQNR as the panel writes it.
        let lines = method_lines(&app, &t);
        assert!(lines.len() >= want.len(), "{w}×{h}: all rows fit");
        for (f, line) in want.iter().zip(&lines) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert!(
                cells.iter().any(|c| c.trim_start_matches('★') == short(f)),
                "{w}×{h}: {line:?} is not {}",
                f.label()
            );
            let sq = db_short(f.metrics.sqnr_db);
            assert!(cells.contains(&sq.as_str()), "{w}×{h}: {line:?} lacks {sq}");
        }
        // The star on the best SQNR (the export's recommended row), on one row only.
        let best = want
            .iter()
            .map(|f| f.metrics.sqnr_db)
            .fold(f64::NEG_INFINITY, f64::max);
        let starred: Vec<&String> = lines.iter().filter(|l| l.contains('★')).collect();
        assert_eq!(starred.len(), 1, "{lines:?}");
        assert!(starred[0].contains(&format!(" {} ", db_short(best))));
        // Held-out columns are the int view's only; the wide table counts unclamped NaNs.
        let text = screen_text(&t);
        assert!(!text.contains("h-o dB"));
        if w >= 160 {
            assert!(text.contains("unclamped NaN"), "{text}");
        }
    }
    // The default analysis measures E4M3 only: x goes back to int.
    app.handle_key(ch('x'));
    assert_eq!(app.number_format, None);
    let t = render(&mut app, 160, 48);
    assert!(methods_title(&app, &t).contains("methods symmetric 8-bit"));
    assert!(!screen_text(&t).contains("fp8_e4m3 · linear"));
}

/// The rows (y) of the histogram's plot and its area, as `draw_hist` lays them out.
fn plot_rows(app: &App) -> (std::ops::Range<u16>, Rect) {
    let hist = layout::main_areas(app.size, app.method_count()).hist;
    let inner = Rect {
        y: hist.y + 1,
        height: hist.height - 1,
        ..hist
    };
    let legend = u16::from(inner.height >= 9);
    (inner.y..inner.bottom() - 1 - legend, inner)
}

/// README's marker letters: M minmax, A ema, H entropy, S mse, F mse_fp8, 1 2 3 percentiles.
fn letters<'a>(methods: impl IntoIterator<Item = (&'a str, Option<f64>)>) -> Vec<char> {
    let mut k = 0;
    methods
        .into_iter()
        .map(|(m, p)| match (m, p) {
            ("minmax", _) => 'M',
            ("ema", _) => 'A',
            ("entropy", _) => 'H',
            ("mse", _) => 'S',
            ("mse_fp8", _) => 'F',
            (_, Some(_)) => {
                k += 1;
                char::from_digit(k, 10).unwrap()
            }
            _ => panic!("{m}"),
        })
        .collect()
}

/// The clip points the histogram should mark: the int methods' range ends, or the FP8 rows'
/// ±amax.
fn clip_points(app: &App) -> Vec<(char, f64)> {
    let layer = app.selected_layer().unwrap();
    match app.number_format {
        None => {
            let tags = letters(
                layer
                    .methods
                    .iter()
                    .map(|m| (m.method.name(), m.percentile)),
            );
            layer
                .methods
                .iter()
                .zip(tags)
                .flat_map(|(m, t)| [(t, m.range[0]), (t, m.range[1])])
                .collect()
        }
        Some(_) => {
            let rows = app.fp8_rows();
            let tags = letters(
                rows.iter()
                    .map(|f| (f.method.as_deref().unwrap(), f.percentile)),
            );
            rows.iter()
                .zip(tags)
                .flat_map(|(f, t)| {
                    let a = f.amax.unwrap();
                    [(t, -a), (t, a)]
                })
                .collect()
        }
    }
}

/// Checks the drawn tags against `clip_points`: each in-view point's tag in its column, each
/// point past the view in the top row at that edge, and no tag anywhere else. Returns the
/// in-view (tag, column) pairs.
fn check_markers(app: &mut App, w: u16, h: u16) -> Vec<(char, usize)> {
    let t = render(app, w, h);
    let (rows, plot) = plot_rows(app);
    let hist = &app.selected_layer().unwrap().profile.as_ref().unwrap().hist;
    let (lo, hi, cols) = (hist.lo, hist.hi, usize::from(plot.width));
    let points = clip_points(app);
    let cell = |x: usize, y: u16| -> char {
        t.backend().buffer()[(plot.x + x as u16, y)]
            .symbol()
            .chars()
            .next()
            .unwrap_or(' ')
    };
    let tags_at = |c: usize| -> String { rows.clone().map(|y| cell(c, y)).collect() };
    let mut in_view = Vec::new();
    for &(tag, x) in &points {
        match column_of(x, lo, hi, cols) {
            Some(c) => {
                assert!(tags_at(c).contains(tag), "{tag} ({x}) not in column {c}");
                in_view.push((tag, c));
            }
            None => {
                let top: String = (0..cols).map(|c| cell(c, rows.start)).collect();
                let edge: String = if x < lo {
                    top.chars().take(10).collect()
                } else {
                    top.chars().rev().take(10).collect()
                };
                assert!(edge.contains(tag), "{tag} ({x}) not at the edge: {top:?}");
            }
        }
    }
    // Every tag drawn is one of those.
    let known: String = points.iter().map(|p| p.0).collect();
    for c in 0..cols {
        for (r, ch) in tags_at(c).chars().enumerate() {
            if !ch.is_ascii_alphanumeric() {
                continue;
            }
            let at_edge = r == 0 && (c < 10 || c + 10 >= cols);
            assert!(
                in_view.contains(&(ch, c)) || (at_edge && known.contains(ch)),
                "stray {ch} at column {c}"
            );
        }
    }
    // The selected row's clip points: the bold line under their tags.
    let sel = app.method_index().unwrap();
    let (tag, _) = points[2 * sel];
    let (_, c) = *in_view.iter().find(|p| p.0 == tag).unwrap();
    assert!(
        tags_at(c).contains('┃'),
        "{tag} is selected: {:?}",
        tags_at(c)
    );
    in_view
}

#[test]
fn the_fp8_markers_sit_at_plus_minus_amax() {
    let mut app = sample_app();
    select_by_name(&mut app, "03_attn_scores");
    let (w, h) = (160, 48);
    let int = check_markers(&mut app, w, h);
    app.handle_key(ch('x'));
    let fp8 = check_markers(&mut app, w, h);
    // The FP8 search has markers of its own, in the legend too.
    assert!(fp8.iter().any(|p| p.0 == 'F') && !int.iter().any(|p| p.0 == 'F'));
    assert!(screen_text(&render(&mut app, w, h)).contains("F mse_fp8"));
    // Under the affine scheme the int ranges are asymmetric and the FP8 rows keep ±amax of
    // the symmetric calibration: the markers move.
    let cmd = app.handle_key(ch('s'));
    jobs::run_to_end(&mut app, cmd);
    assert_eq!(app.opts.scheme, Scheme::Affine);
    let fp8 = check_markers(&mut app, w, h);
    app.handle_key(ch('x'));
    assert_eq!(app.number_format, None);
    let int = check_markers(&mut app, w, h);
    let moved = int.iter().filter(|p| !fp8.contains(p)).count();
    assert!(moved >= 2, "int {int:?} vs fp8 {fp8:?}");
}

#[test]
fn the_fp8_table_selects_by_keys_and_clicks_and_follows_the_calibrator() {
    let mut app = sample_app();
    select_by_name(&mut app, "03_attn_scores");
    app.focus = Focus::Methods;
    // Int row p99.9 (the fifth); in the FP8 view the same calibrator is the sixth row.
    app.method = Some(4);
    app.handle_key(ch('x'));
    assert_eq!(app.method_index(), Some(5));
    assert_eq!(app.fp8_rows()[5].percentile, Some(99.9));
    app.handle_key(ch('x'));
    assert_eq!(app.method_index(), Some(4));
    app.handle_key(ch('x'));
    // Moving covers every FP8 row.
    app.handle_key(ch('G'));
    let n = app.fp8_rows().len();
    assert_eq!(app.method_index(), Some(n - 1));
    // The highlighted row is the selected one, on screen; clicks select the row under them.
    for (w, h) in [(80, 24), (160, 48)] {
        let t = render(&mut app, w, h);
        let a = layout::main_areas(app.size, app.method_count());
        let lines = method_lines(&app, &t);
        for (k, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let y = a.method_rows.y + k as u16;
            click(&mut app, a.method_rows.x + 3, y);
            let i = app.method_index().unwrap();
            let f = app.fp8_rows()[i].clone();
            assert!(
                line.split_whitespace()
                    .any(|c| c.trim_start_matches('★') == short(&f)),
                "{w}×{h}: clicked {line:?}, selected {}",
                f.label()
            );
            let t = render(&mut app, w, h);
            assert_eq!(
                t.backend().buffer()[(a.method_rows.x + 3, y)].bg,
                ratatui::style::Color::Blue,
                "{w}×{h}: the clicked row is highlighted"
            );
        }
    }
}

#[test]
fn a_long_fp8_table_scrolls_and_clicks_land_on_the_rows_drawn() {
    // Six percentiles: 11 FP8 rows, more than the table holds at 80×24.
    let mut app = analysed_samples(Options {
        percentiles: vec![90.0, 99.0, 99.5, 99.9, 99.99, 99.999],
        ..Options::default()
    });
    select_by_name(&mut app, "04_layernorm");
    app.focus = Focus::Methods;
    app.handle_key(ch('x'));
    let n = app.fp8_rows().len();
    assert_eq!(n, 11);
    let (w, h) = (80, 24);
    app.size = Rect::new(0, 0, w, h);
    let a = layout::main_areas(app.size, app.method_count());
    assert!(usize::from(a.method_rows.height) < n);
    let rows = app.fp8_rows().iter().map(|f| short(f)).collect::<Vec<_>>();
    // Walking down, the selected row is always drawn highlighted.
    for i in 0..n {
        app.method = Some(i);
        let t = render(&mut app, w, h);
        let lines = method_lines(&app, &t);
        let k = lines
            .iter()
            .position(|l| {
                l.split_whitespace()
                    .any(|c| c.trim_start_matches('★') == rows[i])
            })
            .unwrap_or_else(|| panic!("row {i} {} not drawn: {lines:?}", rows[i]));
        let y = a.method_rows.y + k as u16;
        assert_eq!(
            t.backend().buffer()[(a.method_rows.x + 3, y)].bg,
            ratatui::style::Color::Blue
        );
        // A click on the top drawn row selects what is drawn there.
        let top = lines[0].clone();
        click(&mut app, a.method_rows.x + 3, a.method_rows.y);
        let j = app.method_index().unwrap();
        assert!(
            top.split_whitespace()
                .any(|c| c.trim_start_matches('★') == rows[j])
        );
    }
}

#[test]
fn the_mode_stays_across_layers_and_a_layer_without_rows_says_so() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    let sel = app.selected.unwrap();
    app.slots[sel].result.as_mut().unwrap().formats.clear();
    select_by_name(&mut app, "03_attn_scores");
    app.handle_key(ch('x'));
    assert_eq!(app.number_format, Some(FormatKind::Fp8E4m3));
    // Layers change with the mode kept: 04 has no rows left.
    app.focus = Focus::Layers;
    while app.selected != Some(sel) {
        app.handle_key(ch('j'));
    }
    assert_eq!(app.number_format, Some(FormatKind::Fp8E4m3));
    assert_eq!(app.method_count(), 0);
    assert_eq!(app.method_index(), None);
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(
        words_of(&text).contains("this layer has no per-tensor fp8_e4m3 rows"),
        "{text}"
    );
    // Keys and clicks on the empty table, odd sizes, zoom and log: no panic.
    app.focus = Focus::Methods;
    for k in "jkGgzl".chars() {
        app.handle_key(ch(k));
    }
    let a = layout::main_areas(Rect::new(0, 0, 80, 24), 0);
    click(&mut app, a.method_rows.x + 2, a.method_rows.y);
    for (w, h) in [(60, 16), (80, 24), (200, 60), (10, 3)] {
        render(&mut app, w, h);
    }
    // Rows with NaN metrics and amax 0 draw too.
    app.handle_key(ch('j'));
    let l = app.slots[app.selected.unwrap()].result.as_mut().unwrap();
    for f in &mut l.formats {
        f.metrics.sqnr_db = f64::NAN;
        f.amax = Some(0.0);
    }
    for (w, h) in [(60, 16), (80, 24), (200, 60)] {
        render(&mut app, w, h);
    }
}

#[test]
fn formats_none_says_there_is_no_fp8_view() {
    let mut app = analysed_samples(Options {
        formats: Vec::new(),
        ..Options::default()
    });
    app.handle_key(ch('x'));
    assert_eq!(app.number_format, None);
    let msg = app.message.clone().unwrap();
    assert!(msg.contains("--formats none"), "{msg}");
    let t = render(&mut app, 80, 24);
    let status = row_text(&t, 23, 0, 80);
    assert!(status.contains("no FP8 rows"), "{status}");
    // The next key clears the message; the int view is untouched.
    app.handle_key(ch('j'));
    assert!(app.message.is_none());
}

#[test]
fn with_every_format_x_cycles_e4m3_e5m2_int() {
    let mut app = analysed_samples(Options {
        formats: FormatKind::ALL.to_vec(),
        ..Options::default()
    });
    select_by_name(&mut app, "03_attn_scores");
    let mut seen = Vec::new();
    for _ in 0..3 {
        app.handle_key(ch('x'));
        let t = render(&mut app, 160, 48);
        seen.push((app.number_format, methods_title(&app, &t)));
    }
    assert_eq!(seen[0].0, Some(FormatKind::Fp8E4m3));
    assert_eq!(seen[1].0, Some(FormatKind::Fp8E5m2));
    assert_eq!(seen[2].0, None);
    assert!(seen[1].1.contains("methods · fp8_e5m2"), "{}", seen[1].1);
    // E5M2's rows, not E4M3's: its SQNRs and its ±inf column.
    app.handle_key(ch('x'));
    app.handle_key(ch('x'));
    let t = render(&mut app, 160, 48);
    assert!(screen_text(&t).contains("unclamped ±inf"));
    let lines = method_lines(&app, &t);
    let e5: Vec<&FormatResult> = app.fp8_rows();
    assert!(e5.iter().all(|f| f.format == FormatKind::Fp8E5m2));
    for (f, line) in e5.iter().zip(&lines) {
        assert!(
            line.split_whitespace()
                .any(|c| c == db_short(f.metrics.sqnr_db)),
            "{line:?}"
        );
    }
    // Away from the main view, x still switches and says where it shows.
    app.view = View::Overview;
    app.handle_key(ch('x'));
    assert_eq!(app.number_format, None);
    assert!(app.message.as_deref().unwrap().contains("main view"));
}

#[test]
fn the_help_scrolls_to_every_key_and_the_badges_at_80x24() {
    let mut app = sample_app();
    let (w, h) = (80, 24);
    app.size = Rect::new(0, 0, w, h);
    app.handle_key(ch('?'));
    assert!(app.help);
    let selected = app.selected;
    let mut text = Vec::new();
    let mut screens = Vec::new();
    let mut last = usize::MAX;
    while app.help_scroll != last {
        last = app.help_scroll;
        let t = render(&mut app, w, h);
        let s = screen_text(&t);
        text.extend(s.lines().map(str::to_string));
        screens.push(s);
        app.handle_key(ch('j'));
    }
    assert!(screens.len() > 1, "80×24 does not hold the whole help");
    assert!(screens[0].contains("more ↓"));
    assert!(screens.last().unwrap().contains("↑ more"));
    // Scrolling moved nothing behind the help.
    assert!(app.help);
    assert_eq!(app.selected, selected);
    let all = text.join("\n");
    for e in KEYS {
        let line = format!("{}  {}", e.keys, e.help);
        assert!(
            text.iter().any(|l| l.contains(&line)),
            "not readable in full: {line:?}\n{all}"
        );
    }
    assert!(all.contains("badges   best SQNR in dB:  <20   <30   ≥30   ⚠n warnings  ✖ error"));
    assert!(all.contains("F mse_fp8"));
    assert!(all.contains("1 2 3 percentiles"));
    // Any other key closes it; it opens at the top again.
    app.handle_key(ch('l'));
    assert!(!app.help && !app.log_scale);
    app.handle_key(ch('?'));
    assert_eq!(app.help_scroll, 0);
    // At 160×48 it fits: no scrolling, no indicator.
    let t = render(&mut app, 160, 48);
    app.size = Rect::new(0, 0, 160, 48);
    app.handle_key(ch('j'));
    assert_eq!(app.help_scroll, 0);
    assert!(!screen_text(&t).contains("more ↓"));
}

#[test]
fn snapshot_main_fp8() {
    let mut app = sample_app();
    select_by_name(&mut app, "03_attn_scores");
    app.handle_key(ch('x'));
    snap("main_fp8", &mut app, 80, 24);
    snap("main_fp8", &mut app, 160, 48);
}
