//! The compare view: the pairs in layer order with their SQNR badges, a sparkline of SQNR over
//! layer order (where it falls is where the model breaks), and for the selected pair the
//! reference's and the test's histograms on one x axis, the histogram of t − r and the metrics.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Paragraph, Sparkline, SparklineBar, Wrap};

use super::main::draw_axis;
use super::status::{draw_status, progress_line};
use super::{list_title, panel, sqnr_color};
use crate::analysis::compare::{Pair, PairHistograms};
use crate::histogram::PackedHistogram;
use crate::report::fmt::{db, db_short, num_short, shape};
use crate::tui::app::{App, CompareState};
use crate::tui::layout::{self, CompareAreas};
use crate::tui::widgets::histogram::{HistogramPlot, Marker};

pub(super) fn draw(frame: &mut Frame, app: &App, size: Rect) {
    let Some(c) = &app.compare else { return };
    let a = layout::compare_areas(size);
    draw_header(frame, app, c, a.header);
    draw_pairs(frame, app, c, &a);
    draw_spark(frame, c, a.spark);
    let pair = c.selected_pair();
    let hists = pair.and_then(|p| p.histograms.as_deref());
    draw_values(frame, app, pair, hists, a.values);
    draw_error(frame, app, hists, a.error);
    draw_metrics(frame, app, c, pair, a.metrics);
    draw_status(frame, app, a.status);
}

fn draw_header(frame: &mut Frame, app: &App, c: &CompareState, area: Rect) {
    let s = &c.result.settings;
    let n = c.result.pairs.len();
    let mut spans = vec![
        " calibscope compare ".black().on_cyan().bold(),
        Span::raw(format!(
            " {n} pair{} · floor {} dB · atol {} rtol {}",
            if n == 1 { "" } else { "s" },
            s.sqnr_floor_db,
            s.atol,
            s.rtol
        )),
    ];
    let unmatched = c.result.reference_only.len() + c.result.test_only.len();
    if unmatched > 0 {
        spans.push(Span::styled(
            format!(" · {unmatched} unmatched"),
            Style::new().fg(Color::Yellow),
        ));
    }
    let right = progress_line(app, usize::from(area.width / 2));
    let rw = (right.width() as u16).min(area.width);
    let [l, r] = Layout::horizontal([Constraint::Min(0), Constraint::Length(rw)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), l);
    frame.render_widget(Paragraph::new(right), r);
}

fn draw_pairs(frame: &mut Frame, app: &App, c: &CompareState, a: &CompareAreas) {
    let title = list_title(
        "pairs",
        c.result.pairs.len(),
        &app.names.prefix,
        "layer order",
        a.pairs.width.saturating_sub(1),
    );
    frame.render_widget(panel(title, true, Borders::TOP | Borders::RIGHT), a.pairs);
    let rows = a.pairs_rows;
    if rows.height == 0 || rows.width == 0 {
        return;
    }
    if c.result.pairs.is_empty() {
        frame.render_widget(
            Paragraph::new("no layer name is in both runs")
                .fg(Color::DarkGray)
                .wrap(Wrap { trim: true }),
            rows,
        );
        return;
    }
    let h = usize::from(rows.height);
    let n = c.result.pairs.len();
    let first = layout::scroll_start(c.selected, h, n);
    let w = usize::from(rows.width);
    let first_degraded = c.first_degraded();
    for (i, p) in c.result.pairs.iter().enumerate().skip(first).take(h) {
        let done = c.done.get(i).copied().unwrap_or(true);
        let line = pair_row(
            p,
            |name_w| app.names.short(i, name_w),
            w,
            c.result.settings.sqnr_floor_db,
            first_degraded == Some(i),
            !done && app.progress.running,
        );
        let mut para = Paragraph::new(line);
        if i == c.selected {
            para = para.style(Style::new().bg(Color::Blue).fg(Color::White).bold());
        }
        let y = rows.y + (i - first) as u16;
        frame.render_widget(para, Rect::new(rows.x, y, rows.width, 1));
    }
}

fn pair_row(
    p: &Pair,
    name: impl FnOnce(usize) -> String,
    w: usize,
    floor: f64,
    first: bool,
    pending: bool,
) -> Line<'static> {
    let (mark, mark_style) = if pending {
        ("…".to_string(), Style::new().fg(Color::DarkGray))
    } else if p.error.is_some() {
        ("✖".to_string(), Style::new().fg(Color::Red))
    } else if first {
        ("▶".to_string(), Style::new().fg(Color::Red).bold())
    } else if !p.warnings.is_empty() {
        (
            format!("⚠{}", p.warnings.len().min(9)),
            Style::new().fg(Color::Yellow),
        )
    } else {
        (String::new(), Style::new())
    };
    let (badge, badge_style) = match (&p.metrics, &p.error) {
        (_, Some(_)) => ("error".to_string(), Style::new().fg(Color::Red)),
        (None, None) => ("  ·  ".to_string(), Style::new().fg(Color::DarkGray)),
        (Some(m), None) => (
            format!("{:>5}", db_short(m.sqnr_db)),
            Style::new()
                .fg(Color::Black)
                .bg(sqnr_color(m.sqnr_db, floor)),
        ),
    };
    let show_drop = w >= 30;
    let drop_w = if show_drop { 7 } else { 0 };
    let name_w = w.saturating_sub(3 + 1 + 5 + drop_w);
    let mut spans = vec![
        Span::styled(format!("{mark:<3}"), mark_style),
        Span::raw(format!("{:<name_w$} ", name(name_w))),
        Span::styled(badge, badge_style),
    ];
    if show_drop {
        let (text, style) = match p.sqnr_drop_db {
            Some(d) if d.is_finite() => (
                format!("{d:>+6.1}"),
                if d >= DROP_MARK_DB {
                    Style::new().fg(Color::Red).bold()
                } else {
                    Style::new().fg(Color::DarkGray)
                },
            ),
            Some(d) => (
                format!("{:>6}", db_short(d)),
                Style::new().fg(Color::DarkGray),
            ),
            None => (format!("{:>6}", ""), Style::new()),
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(text, style));
    }
    Line::from(spans)
}

/// A drop of SQNR this large (dB) is drawn red: the error enters here.
const DROP_MARK_DB: f64 = 6.0;

/// The sparkline's bar for each column: the lowest SQNR of the pairs the column covers
/// (pairs spread over the width, or several per column when there are more than columns).
fn draw_spark(frame: &mut Frame, c: &CompareState, area: Rect) {
    let floor = c.result.settings.sqnr_floor_db;
    let title = Line::from(vec![
        Span::raw(" SQNR by layer "),
        Span::styled(
            format!("(dB, red below {floor}) "),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let n = c.result.pairs.len();
    if inner.height < 2 || inner.width == 0 || n == 0 {
        return;
    }
    let [bars, axis] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let sqnr: Vec<Option<f64>> = c
        .result
        .pairs
        .iter()
        .map(|p| p.sqnr_db().filter(|v| !v.is_nan()))
        .collect();
    // The top of the scale: the highest finite SQNR (an exact match draws full height).
    let top = sqnr
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(floor + 10.0, f64::max)
        .max(1.0);
    let cols = usize::from(bars.width);
    let span = |col: usize| -> (usize, usize) {
        let a = col * n / cols;
        let b = ((col + 1) * n / cols).max(a + 1).min(n);
        (a, b)
    };
    let data: Vec<SparklineBar> = (0..cols)
        .map(|col| {
            let (a, b) = span(col);
            let low = sqnr[a..b].iter().flatten().copied().reduce(f64::min);
            match low {
                Some(v) => {
                    let h = (v.clamp(0.0, top) / top * 1000.0).round() as u64;
                    SparklineBar::from(h.max(1)).style(Some(Style::new().fg(sqnr_color(v, floor))))
                }
                None => SparklineBar::from(None),
            }
        })
        .collect();
    frame.render_widget(
        Sparkline::default()
            .data(data)
            .max(1000)
            .absent_value_symbol("·")
            .absent_value_style(Style::new().fg(Color::DarkGray)),
        bars,
    );
    // Under the bars: the selected pair (▲) and the first degraded one (◆).
    let mut marks: Vec<Span> = Vec::with_capacity(cols);
    let first = c.first_degraded();
    for col in 0..cols {
        let (a, b) = span(col);
        let here = |i: Option<usize>| i.is_some_and(|i| (a..b).contains(&i));
        marks.push(if here(Some(c.selected)) {
            Span::styled("▲", Style::new().fg(Color::Yellow).bold())
        } else if here(first) {
            Span::styled("◆", Style::new().fg(Color::Red))
        } else {
            Span::styled("─", Style::new().fg(Color::DarkGray))
        });
    }
    frame.render_widget(Paragraph::new(Line::from(marks)), axis);
}

fn empty_title(text: &str) -> Line<'static> {
    Line::from(Span::raw(format!(" {text} ")))
}

/// A histogram with a range: a pair's display histogram of some finite values.
fn drawable(h: &PackedHistogram) -> bool {
    h.lo.is_finite() && h.hi.is_finite() && h.nonzero().next().is_some()
}

/// The reference above, the test below, over the same x range.
fn draw_values(
    frame: &mut Frame,
    app: &App,
    pair: Option<&Pair>,
    hists: Option<&PairHistograms>,
    area: Rect,
) {
    let title = match pair {
        Some(p) if !p.reference_dtype.is_empty() => Line::from(vec![
            Span::styled(" reference ", Style::new().fg(Color::LightBlue).bold()),
            Span::styled("/", Style::new().fg(Color::DarkGray)),
            Span::styled(" test ", Style::new().fg(Color::LightMagenta).bold()),
            Span::styled(
                format!(
                    "{} {} / {} ",
                    shape(&p.shape),
                    p.reference_dtype,
                    p.test_dtype
                ),
                Style::new().fg(Color::DarkGray),
            ),
        ]),
        _ => empty_title("reference / test"),
    };
    let block = panel(title, false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(h) = hists else {
        placeholder(frame, pair, inner);
        return;
    };
    let shown: Vec<&PackedHistogram> = [&h.reference, &h.test]
        .into_iter()
        .filter(|x| drawable(x))
        .collect();
    if inner.height < 3 || shown.is_empty() {
        return;
    }
    let lo = shown.iter().map(|x| x.lo).fold(f64::INFINITY, f64::min);
    let hi = shown.iter().map(|x| x.hi).fold(f64::NEG_INFINITY, f64::max);
    let plots_h = inner.height - 1;
    let top_h = plots_h.div_ceil(2);
    let [top, bottom, axis] = Layout::vertical([
        Constraint::Length(top_h),
        Constraint::Length(plots_h - top_h),
        Constraint::Length(1),
    ])
    .areas(inner);
    for (hist, rect, label, color) in [
        (&h.reference, top, "ref", Color::LightBlue),
        (&h.test, bottom, "test", Color::LightMagenta),
    ] {
        if drawable(hist) {
            frame.render_widget(
                HistogramPlot {
                    hist,
                    lo,
                    hi,
                    log: app.log_scale,
                    markers: &[],
                    keep: None,
                },
                rect,
            );
        }
        if rect.height > 0 {
            frame.render_widget(
                Paragraph::new(Span::styled(label, Style::new().fg(color).bold())),
                Rect::new(rect.x, rect.y, 4.min(rect.width), 1),
            );
        }
    }
    draw_axis(frame, axis, lo, hi);
}

fn draw_error(frame: &mut Frame, app: &App, hists: Option<&PairHistograms>, area: Rect) {
    let scale = if app.log_scale { "log" } else { "linear" };
    let title = Line::from(vec![
        Span::styled(" error t − r ", Style::new().bold()),
        Span::styled(
            format!("({scale} counts) "),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(e) = hists.map(|h| &h.error).filter(|e| drawable(e)) else {
        return;
    };
    if inner.height < 2 {
        return;
    }
    let [plot, axis] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let zero = [Marker {
        x: 0.0,
        color: Color::Cyan,
        tag: '0',
        selected: false,
    }];
    let markers: &[Marker] = if e.lo < 0.0 && e.hi > 0.0 { &zero } else { &[] };
    frame.render_widget(
        HistogramPlot {
            hist: e,
            lo: e.lo,
            hi: e.hi,
            log: app.log_scale,
            markers,
            keep: None,
        },
        plot,
    );
    draw_axis(frame, axis, e.lo, e.hi);
}

/// What a panel shows for a pair with nothing to draw.
fn placeholder(frame: &mut Frame, pair: Option<&Pair>, area: Rect) {
    let text = match pair {
        None => "",
        Some(p) if p.error.is_some() => "not compared (see the error below)",
        Some(_) => "comparing…",
    };
    frame.render_widget(Paragraph::new(text).fg(Color::DarkGray), area);
}

fn draw_metrics(frame: &mut Frame, app: &App, c: &CompareState, pair: Option<&Pair>, area: Rect) {
    let title = match pair {
        Some(_) => Line::from(Span::styled(
            format!(
                " {} ",
                app.names
                    .full(c.selected, usize::from(area.width).saturating_sub(4))
            ),
            Style::new().add_modifier(Modifier::BOLD).fg(Color::White),
        )),
        None => empty_title("metrics"),
    };
    let block = panel(title, false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(p) = pair else { return };
    let dim = Style::new().fg(Color::DarkGray);
    let mut lines: Vec<Line> = Vec::new();
    if let Some(m) = &p.metrics {
        let floor = c.result.settings.sqnr_floor_db;
        let drop = match p.sqnr_drop_db {
            Some(d) if d.is_finite() => format!("{d:+.1} dB"),
            Some(d) => db_short(d),
            None => "—".into(),
        };
        lines.push(Line::from(vec![
            Span::styled("SQNR ", dim),
            Span::styled(
                format!("{} dB", db(m.sqnr_db)),
                Style::new().fg(sqnr_color(m.sqnr_db, floor)).bold(),
            ),
            Span::styled("  drop ", dim),
            Span::raw(drop),
            Span::styled("  cosine ", dim),
            Span::raw(format!("{:.6}", m.cosine)),
        ]));
        let worst = m
            .worst
            .as_ref()
            .map(|w| {
                let s: Vec<String> = w.iter().map(|i| i.to_string()).collect();
                format!(" at [{}]", s.join(", "))
            })
            .unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled("max|t−r| ", dim),
            Span::raw(format!("{}{worst}", num_short(m.max_abs_error))),
            Span::styled("  p99 ", dim),
            Span::raw(num_short(m.p99_abs_error)),
            Span::styled("  mean ", dim),
            Span::raw(num_short(m.mean_abs_error)),
        ]));
        lines.push(Line::from(vec![
            Span::styled("MSE ", dim),
            Span::raw(num_short(m.mse)),
            Span::styled("  max rel ", dim),
            Span::raw(num_short(m.max_rel_error)),
            Span::styled("  compared ", dim),
            Span::raw(m.count.to_string()),
        ]));
        let bad = |n: u64| {
            if n > 0 {
                Style::new().fg(Color::Red).bold()
            } else {
                Style::new()
            }
        };
        lines.push(Line::from(vec![
            Span::styled("allclose ✗ ", dim),
            Span::raw(m.allclose_failures.to_string()),
            Span::styled("  NaN≠ ", dim),
            Span::styled(m.nan_mismatch.to_string(), bad(m.nan_mismatch)),
            Span::styled("  inf≠ ", dim),
            Span::styled(m.inf_mismatch.to_string(), bad(m.inf_mismatch)),
        ]));
    }
    for w in &p.warnings {
        lines.push(Line::from(vec![
            Span::styled("⚠ ", Style::new().fg(Color::Yellow)),
            Span::raw(w.message.clone()),
        ]));
    }
    if let Some(e) = &p.error {
        lines.push(Line::from(vec![
            Span::styled("✖ ", Style::new().fg(Color::Red)),
            Span::raw(e.clone()),
        ]));
    }
    if p.metrics.is_none() && p.error.is_none() {
        lines.push(Line::from(Span::styled(
            "comparing…",
            Style::new().fg(Color::Cyan),
        )));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}
