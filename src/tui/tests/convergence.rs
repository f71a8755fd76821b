//! The convergence chart (`v`): keys, a hand-made batched layer whose ranges are known, the
//! layers without a convergence, odd data and sizes, and the pure chart geometry.

use ratatui::style::Color;

use super::*;
use crate::analysis::validation::{Convergence, ConvergenceMethod, Verdict};
use crate::calib::MethodKind;
use crate::source::Location;
use crate::tui::views::convergence::{plot, tick_labels};

/// Base values (k − 30)/50 for k = 37·j mod 101: every step of 1/50 in [−0.6, 1.4], so
/// max|x| = 1.4 (as float32) and min x = −0.6.
fn base() -> Vec<f32> {
    (0..4096)
        .map(|j| ((j * 37 % 101) as f32 - 30.0) / 50.0)
        .collect()
}

/// Eight batches, batch b = base · 2^b, as one `[8, 4096]` float32 `.npy`, analysed with
/// `--validate` (and `scheme`): min-max over the first n batches is batch n−1's, so its high
/// end is 1.4 · 2^(n−1), its affine low end −0.6 · 2^(n−1).
fn doubling_app(scheme: Scheme) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doubling.npy");
    let mut buf = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[8, 4096])
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        for b in 0..8 {
            let k = (1u32 << b) as f32;
            w.extend(base().iter().map(|&v| v * k)).unwrap();
        }
        w.finish().unwrap();
    }
    std::fs::write(&path, buf).unwrap();
    let spec = LayerSpec {
        name: "doubling".into(),
        parts: vec![Location::Npy(path)],
    };
    let opts = Options {
        validate: true,
        scheme,
        ..Options::default()
    };
    let mut app = App::new(vec![spec], Vec::new(), opts);
    let cmd = app.start();
    jobs::run_to_end(&mut app, cmd);
    (app, dir)
}

/// The method table's row of `label` (its tag, then the label, ★ if recommended).
fn table_row<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .map(|w| w.trim_start_matches('★'))
                == Some(label)
        })
        .unwrap_or_else(|| panic!("no row of {label:?}:\n{text}"))
}

/// The foreground colour of the first cell of `needle` on the screen.
fn fg_of(t: &Terminal<TestBackend>, needle: &str) -> Color {
    let buf = t.backend().buffer();
    for y in 0..buf.area.height {
        let row = row_text(t, y, 0, buf.area.width);
        if let Some(i) = row.find(needle) {
            let x = row[..i].chars().count() as u16;
            return buf[(x, y)].fg;
        }
    }
    panic!("{needle:?} not on screen");
}

#[test]
fn v_opens_the_chart_and_esc_or_v_leaves_it() {
    let mut app = sample_app();
    select_by_name(&mut app, "04_layernorm");
    app.handle_key(ch('v'));
    assert_eq!(app.view, View::Convergence);
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Main);
    app.handle_key(ch('v'));
    app.handle_key(ch('v'));
    assert_eq!(app.view, View::Main);
    // From the chart: the formats, the channels and the overview; back with v from those.
    for (k, view) in [
        ('f', View::Formats),
        ('c', View::Channels),
        ('o', View::Overview),
    ] {
        app.view = View::Convergence;
        app.handle_key(ch(k));
        assert_eq!(app.view, view);
    }
    app.view = View::Formats;
    app.handle_key(ch('v'));
    assert_eq!(app.view, View::Convergence);
    // ↑/↓ move the method cursor the main view's table shares; the layer stays.
    let sel = app.selected;
    app.handle_key(ch('g'));
    assert_eq!(app.method_index(), Some(0));
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.method_index(), Some(1));
    app.handle_key(ch('G'));
    let n = app.selected_layer().unwrap().methods.len();
    assert_eq!(app.method_index(), Some(n - 1));
    assert_eq!(app.selected, sel);
    // From the overview, v opens the highlighted layer's chart.
    app.view = View::Overview;
    app.overview_scroll = 0;
    app.handle_key(ch('v'));
    assert_eq!(app.view, View::Convergence);
    assert_eq!(app.selected, Some(app.by_sensitivity()[0]));
    // The status line says how to get there and back.
    app.view = View::Main;
    let text = screen_text(&render(&mut app, 200, 30));
    assert!(text.contains("v convergence"), "{text}");
    app.view = View::Convergence;
    let text = screen_text(&render(&mut app, 200, 30));
    assert!(
        text.contains("↑↓ method") && text.contains("v/Esc back"),
        "{text}"
    );
}

#[test]
fn the_chart_shows_the_verdict_each_method_and_its_loss() {
    let (mut app, _dir) = doubling_app(Scheme::Symmetric);
    app.handle_key(ch('v'));
    let layer = app.selected_layer().unwrap().clone();
    let json = serde_json::to_value(&layer).unwrap();
    let conv = &json["convergence"];
    assert_eq!(conv["batch_counts"], serde_json::json!([1, 2, 4, 8]));
    // Every method calibrated on the first 4 batches (max|x| ≤ 11.2) clips the last four
    // (up to 179.2) hard: whichever is recommended grows.
    assert_eq!(conv["verdict"], "growing");
    let t = render(&mut app, 160, 48);
    let text = screen_text(&t);
    let detail = conv["detail"].as_str().unwrap();
    assert!(
        words_of(&text).contains(&format!("growing · {}", words_of(detail))),
        "{text}"
    );
    assert_eq!(fg_of(&t, "growing"), Color::Red);
    assert!(text.contains("range vs batches (log₂)"), "{text}");
    for m in conv["methods"].as_array().unwrap() {
        let label = match m["percentile"].as_f64() {
            Some(p) => format!("p{p}"),
            None => m["method"].as_str().unwrap().to_string(),
        };
        let loss = m["half_range_sqnr_loss_db"].as_f64().unwrap();
        let shown = format!("{loss:.2}");
        let row = table_row(&text, &label);
        assert!(
            format!(" {} ", words_of(row)).contains(&format!(" {shown} ")),
            "{label}: loss {shown} not in {row:?}"
        );
    }
    // Min-max's ranges at 1, H = 4 and B = 8 batches: batch 0's, batch 3's, batch 7's absmax.
    let hi = |n: u32| crate::report::fmt::num_short(f64::from(1.4f32 * (1u32 << (n - 1)) as f32));
    let row = words_of(table_row(&text, "minmax"));
    let want = format!(
        "-{} {} -{} {} -{} {}",
        hi(1),
        hi(1),
        hi(4),
        hi(4),
        hi(8),
        hi(8)
    );
    assert!(row.contains(&want), "{want:?} not in {row:?}");
    assert!(
        words_of(&text).contains("lo@1 hi@1 lo@4 hi@4 lo@8 hi@8 loss dB 95% interval at B"),
        "{text}"
    );
    // Its loss ≥ 0.5 dB is red.
    let minmax = &conv["methods"][0];
    assert_eq!(minmax["method"], "minmax");
    let loss = minmax["half_range_sqnr_loss_db"].as_f64().unwrap();
    assert!(loss >= 0.5, "{loss}");
    let buf = t.backend().buffer();
    let minmax_row = table_row(&text, "minmax");
    let y = (0..buf.area.height)
        .find(|&y| row_text(&t, y, 0, 160) == minmax_row)
        .unwrap();
    let row = row_text(&t, y, 0, 160);
    let at = row.find(&format!(" {loss:.2} ")).unwrap() + 1;
    assert_eq!(buf[(row[..at].chars().count() as u16, y)].fg, Color::Red);
    // The x axis: H under 4, the real counts as tick labels.
    let areas = layout::convergence_areas(app.size, layer.methods.len());
    let axis = row_text(&t, areas.axis.y, 0, 160);
    assert!(axis.contains('H') && axis.contains('└'), "{axis}");
    let ticks = row_text(&t, areas.ticks.y, 0, 160);
    assert_eq!(words_of(&ticks), "1 2 4 8", "{ticks}");
    // 8 ends at the right edge; 4, on a log axis, two thirds of the way from 1, under H.
    assert!(ticks.trim_end().len() == 160, "{ticks:?}");
    let col = |s: &str, c: char| s.chars().position(|x| x == c).unwrap();
    assert_eq!(col(&ticks, '4'), col(&axis, 'H'));
    let (one, eight) = (col(&ticks, '1'), col(&ticks, '8'));
    let four = col(&ticks, '4') as f64;
    let two_thirds = one as f64 + (eight - one) as f64 * 2.0 / 3.0;
    assert!((four - two_thirds).abs() <= 1.0, "{ticks}");
    // Every size draws without panicking (below 60×16 the too-small notice).
    for (w, h) in [(80, 24), (160, 48), (20, 5), (60, 16), (0, 0)] {
        render(&mut app, w, h);
    }
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(text.contains("growing"), "{text}");
    assert!(text.contains("minmax"), "{text}");
}

#[test]
fn affine_ranges_draw_both_ends_and_rerun_in_place() {
    let (mut app, _dir) = doubling_app(Scheme::Symmetric);
    app.handle_key(ch('v'));
    // `s` re-runs with the affine scheme from the kept profiles; the chart stays open.
    let cmd = app.handle_key(ch('s'));
    jobs::run_to_end(&mut app, cmd);
    assert_eq!(app.view, View::Convergence);
    let conv = app.selected_layer().unwrap().convergence.clone().unwrap();
    let m = &conv.methods[0];
    assert_eq!(m.method, MethodKind::Minmax);
    let want: Vec<[f64; 2]> = [1u32, 2, 4, 8]
        .iter()
        .map(|&n| {
            let k = (1u32 << (n - 1)) as f32;
            [f64::from(-0.6f32 * k), f64::from(1.4f32 * k)]
        })
        .collect();
    assert_eq!(m.ranges, want);
    let p = plot(&conv).unwrap();
    assert!(p.both_ends);
    assert_eq!(p.methods[0].lo.len(), 4);
    let text = screen_text(&render(&mut app, 160, 48));
    assert!(
        text.contains("low and high ends vs batches (log₂)"),
        "{text}"
    );
}

#[test]
fn layers_without_a_convergence_say_why() {
    // Validation off (the default): the chart asks for --validate.
    let mut app = sample_app();
    app.handle_key(ch('v'));
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(
        text.contains("run with --validate: convergence needs the batches (≥ 4)"),
        "{text}"
    );
    // Validation on, a layer of one batch: its note.
    let (mut app, _dir) = doubling_app(Scheme::Symmetric);
    let note =
        "one batch: no held-out validation or convergence (give a batch axis or batch folders)";
    let l = app.slots[0].result.as_mut().unwrap();
    l.convergence = None;
    l.notes.push(note.into());
    app.handle_key(ch('v'));
    let text = screen_text(&render(&mut app, 160, 48));
    assert!(text.contains(note), "{text}");
    // An errored layer, and no layer at all.
    app.slots[0].result.as_mut().unwrap().error = Some("gone".into());
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(text.contains("this layer could not be read"), "{text}");
    let mut empty = App::new(Vec::new(), Vec::new(), Options::default());
    empty.handle_key(ch('v'));
    assert_eq!(empty.view, View::Convergence);
    let text = screen_text(&render(&mut empty, 80, 24));
    assert!(text.contains("no layer selected"), "{text}");
}

/// A convergence as the analysis makes it, with hand-picked numbers.
fn hand_made(counts: &[usize], methods: Vec<ConvergenceMethod>) -> Convergence {
    Convergence {
        batch_counts: counts.to_vec(),
        methods,
        verdict: Verdict::Stable,
        detail: "hand-made".into(),
    }
}

fn method(
    method: MethodKind,
    percentile: Option<f64>,
    ranges: &[[f64; 2]],
    interval_95: Option<[[f64; 2]; 2]>,
) -> ConvergenceMethod {
    ConvergenceMethod {
        method,
        percentile,
        ranges: ranges.to_vec(),
        half_range_sqnr_loss_db: 0.0,
        interval_95,
    }
}

#[test]
fn the_plot_has_a_log2_x_axis_and_padded_y_bounds() {
    let c = hand_made(
        &[1, 2, 4, 8, 12],
        vec![
            method(
                MethodKind::Minmax,
                None,
                &[
                    [-1.0, 1.0],
                    [-2.0, 2.0],
                    [-2.0, 2.0],
                    [-3.0, 3.0],
                    [-4.0, 4.0],
                ],
                None,
            ),
            // A NaN high end is left out, not drawn as 0.
            method(
                MethodKind::Percentile,
                Some(99.9),
                &[
                    [-1.5, 1.5],
                    [f64::NAN, f64::NAN],
                    [-2.5, 2.5],
                    [-3.0, 3.0],
                    [-3.5, 3.5],
                ],
                Some([[-4.2, -3.4], [3.4, 4.2]]),
            ),
        ],
    );
    let p = plot(&c).unwrap();
    let l12 = 12f64.log2();
    assert_eq!(p.x_bounds, [0.0, l12]);
    assert_eq!(p.ticks, [(0.0, 1), (1.0, 2), (2.0, 4), (3.0, 8), (l12, 12)]);
    // Symmetric ranges: the high ends only, 1 to 4.2, padded by 5% of 3.2.
    assert!(!p.both_ends);
    let [y0, y1] = p.y_bounds;
    assert!(
        (y0 - 0.84).abs() < 1e-12 && (y1 - 4.36).abs() < 1e-12,
        "{y0} {y1}"
    );
    assert_eq!(
        p.methods[0].hi,
        [(0.0, 1.0), (1.0, 2.0), (2.0, 2.0), (3.0, 3.0), (l12, 4.0)]
    );
    assert!(p.methods[0].lo.is_empty() && p.methods[0].intervals.is_empty());
    assert_eq!(
        p.methods[1].hi,
        [(0.0, 1.5), (2.0, 2.5), (3.0, 3.0), (l12, 3.5)]
    );
    assert_eq!(p.methods[1].intervals, [[(l12, 3.4), (l12, 4.2)]]);
    // H = the largest count ≤ 12/2: 4, at x = 2.
    assert_eq!(p.half, Some(2.0));
    // Ticks at 40 columns: every count under its point (braille: 2·40 − 1 dots).
    assert_eq!(
        tick_labels(&p, 40),
        [
            (0, "1".to_string()),
            (11, "2".into()),
            (22, "4".into()),
            (33, "8".into()),
            (38, "12".into())
        ]
    );
    // At 8 columns 8 and 12 would touch: 12 (the last) stays, 8 goes.
    assert_eq!(
        tick_labels(&p, 8),
        [
            (0, "1".to_string()),
            (2, "2".into()),
            (4, "4".into()),
            (6, "12".into())
        ]
    );
    assert!(tick_labels(&p, 0).is_empty());
}

#[test]
fn the_plot_handles_affine_single_equal_and_missing_ranges() {
    // One range not centred on 0 (affine): both ends of every method, the low end's interval
    // too.
    let c = hand_made(
        &[1, 2],
        vec![
            method(
                MethodKind::Percentile,
                Some(99.0),
                &[[-1.0, 2.0], [-1.0, 3.0]],
                Some([[-1.5, -0.5], [2.5, 3.5]]),
            ),
            method(MethodKind::Minmax, None, &[[-0.5, 0.5], [-1.0, 1.0]], None),
        ],
    );
    let p = plot(&c).unwrap();
    assert!(p.both_ends);
    assert_eq!(p.methods[0].lo, [(0.0, -1.0), (1.0, -1.0)]);
    assert_eq!(
        p.methods[0].intervals,
        [[(1.0, -1.5), (1.0, -0.5)], [(1.0, 2.5), (1.0, 3.5)]]
    );
    assert_eq!(p.methods[1].lo, [(0.0, -0.5), (1.0, -1.0)]);
    assert_eq!(p.y_bounds, [-1.75, 3.75]);
    // One batch count, equal values: one doubling of x, ±5% of the value in y.
    let c = hand_made(
        &[1],
        vec![method(MethodKind::Minmax, None, &[[-2.0, 2.0]], None)],
    );
    let p = plot(&c).unwrap();
    assert_eq!(
        (p.x_bounds, p.y_bounds, p.half),
        ([0.0, 1.0], [1.9, 2.1], None)
    );
    // All zero: ±1.
    let c = hand_made(
        &[1, 2],
        vec![method(MethodKind::Mse, None, &[[0.0, 0.0]; 2], None)],
    );
    assert_eq!(plot(&c).unwrap().y_bounds, [-1.0, 1.0]);
    // Nothing finite, or nothing at all: no plot.
    let c = hand_made(
        &[1, 2],
        vec![method(
            MethodKind::Ema,
            None,
            &[[f64::NAN, f64::INFINITY]; 2],
            None,
        )],
    );
    assert!(plot(&c).is_none());
    assert!(plot(&hand_made(&[], Vec::new())).is_none());
    // Ends as far apart as floats go: finite bounds.
    let c = hand_made(
        &[1, 2],
        vec![method(
            MethodKind::Minmax,
            None,
            &[[-f64::MAX, f64::MAX], [-1.0, 1.0]],
            None,
        )],
    );
    let p = plot(&c).unwrap();
    assert!(p.y_bounds.iter().all(|y| y.is_finite()), "{:?}", p.y_bounds);
}

#[test]
fn odd_convergences_and_areas_draw_without_panicking() {
    let (mut app, _dir) = doubling_app(Scheme::Symmetric);
    app.handle_key(ch('v'));
    let real = app.slots[0]
        .result
        .as_ref()
        .unwrap()
        .convergence
        .clone()
        .unwrap();
    let mut odd = vec![
        hand_made(&[], Vec::new()),
        hand_made(
            &[1],
            vec![method(MethodKind::Minmax, None, &[[-2.0, 2.0]], None)],
        ),
        hand_made(
            &[0, 1, 2],
            vec![method(
                MethodKind::Percentile,
                Some(99.9),
                &[
                    [f64::NAN, f64::INFINITY],
                    [-f64::MAX, f64::MAX],
                    [-1.0, 1.0],
                ],
                Some([[f64::NAN, 1.0], [f64::NEG_INFINITY, f64::MAX]]),
            )],
        ),
        // More ranges than counts, and a method the layer does not have.
        hand_made(
            &[1, 2],
            vec![method(
                MethodKind::Percentile,
                Some(12.5),
                &[[-1.0, 1.0]; 5],
                None,
            )],
        ),
    ];
    let mut losses = real.clone();
    for (m, v) in losses
        .methods
        .iter_mut()
        .zip([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -3.0])
    {
        m.half_range_sqnr_loss_db = v;
    }
    losses.verdict = Verdict::TooFewBatches;
    odd.push(losses);
    for c in odd {
        app.slots[0].result.as_mut().unwrap().convergence = Some(c);
        for (w, h) in [(80, 24), (160, 48), (60, 16), (61, 17), (20, 5), (1, 1)] {
            render(&mut app, w, h);
        }
        // The body alone in areas of every odd size, zero-sized ones too.
        for (w, h) in [(0, 0), (1, 1), (2, 9), (9, 2), (3, 3), (40, 1)] {
            let mut t = Terminal::new(TestBackend::new(40, 12)).unwrap();
            let r = Rect::new(0, 0, w, h);
            let areas = layout::ConvergenceAreas {
                header: r,
                title: r,
                verdict: r,
                chart: r,
                axis: r,
                ticks: r,
                table: r,
                status: r,
            };
            t.draw(|f| views::convergence::draw_body(f, &app, &areas))
                .unwrap();
        }
    }
    // The too-few-batches verdict in yellow.
    let mut c = real;
    c.verdict = Verdict::TooFewBatches;
    app.slots[0].result.as_mut().unwrap().convergence = Some(c);
    let t = render(&mut app, 160, 48);
    assert_eq!(fg_of(&t, "too_few_batches"), Color::Yellow);
}
